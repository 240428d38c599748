//! Versioned migrations. Each entry runs once, in order, inside a transaction;

//! `PRAGMA user_version` records how far a database has come. Append only.

pub const MIGRATIONS: &[&str] = &[
    // 1: devices, enrollment tokens, users, alerts and their entities, sequence gaps, audit.
    r#"
    CREATE TABLE devices (
        id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        signing_key BLOB NOT NULL,
        cert_sha256 BLOB NOT NULL UNIQUE,
        enrolled_at_ms INTEGER NOT NULL,
        revoked_at_ms INTEGER,
        last_seen_ms INTEGER,
        agent_version TEXT NOT NULL DEFAULT '',
        os TEXT NOT NULL DEFAULT '',
        kernel TEXT NOT NULL DEFAULT '',
        addresses TEXT NOT NULL DEFAULT '[]',
        logged_on_users TEXT NOT NULL DEFAULT '[]',
        isolation TEXT NOT NULL DEFAULT 'none',
        outbox_depth INTEGER NOT NULL DEFAULT 0,
        rule_pack_version INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        dropped_total INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE enroll_tokens (
        id INTEGER PRIMARY KEY,
        secret_sha256 BLOB NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        max_uses INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        token_sha256 BLOB NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE alerts (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        device_id TEXT NOT NULL REFERENCES devices(id),
        seq INTEGER NOT NULL,
        observed_at_ms INTEGER NOT NULL,
        last_observed_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        rule_title TEXT NOT NULL,
        rule_author TEXT NOT NULL,
        severity INTEGER NOT NULL,
        techniques TEXT NOT NULL,
        tactics TEXT NOT NULL,
        count INTEGER NOT NULL,
        entities TEXT NOT NULL,
        matched TEXT NOT NULL,
        signed_payload BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE INDEX alerts_by_device ON alerts(device_id, rowid);
    CREATE INDEX alerts_by_time ON alerts(observed_at_ms);
    CREATE INDEX alerts_by_rule ON alerts(rule_id);
    CREATE TABLE alert_entities (
        alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
        kind TEXT NOT NULL,
        value TEXT NOT NULL
    );
    CREATE INDEX alert_entities_by_value ON alert_entities(kind, value);
    CREATE INDEX alert_entities_by_alert ON alert_entities(alert_rowid);
    CREATE TABLE sequence_gaps (
        device_id TEXT NOT NULL REFERENCES devices(id),
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        reason TEXT NOT NULL,
        recorded_at_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, first_seq)
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    "#,
    // 2: signed rule packs pushed to agents.
    r#"
    CREATE TABLE rule_packs (
        version INTEGER PRIMARY KEY,
        created_at_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        rule_count INTEGER NOT NULL,
        signed BLOB NOT NULL
    );
    "#,
    // 3: response actions and their approval workflow, per-device command sequence
    // numbers, and a hash chain over the audit log (entries written from now on).
    r#"
    CREATE TABLE actions (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        requested_at_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        approvals TEXT NOT NULL DEFAULT '[]',
        decided_by TEXT,
        decided_at_ms INTEGER,
        decision_comment TEXT,
        seq INTEGER,
        issued_at_ms INTEGER,
        expires_at_ms INTEGER NOT NULL,
        signed_command BLOB,
        outcome TEXT,
        outcome_reason TEXT,
        detail TEXT,
        finished_at_ms INTEGER,
        attachment BLOB,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX actions_by_device_seq ON actions(device_id, seq) WHERE seq IS NOT NULL;
    CREATE INDEX actions_by_device ON actions(device_id, requested_at_ms);
    CREATE INDEX actions_by_status ON actions(status, expires_at_ms);
    CREATE TABLE command_seqs (
        device_id TEXT PRIMARY KEY REFERENCES devices(id),
        last_seq INTEGER NOT NULL
    );
    ALTER TABLE audit_log ADD COLUMN hash BLOB;
    "#,
    // 4: who cancelled an action, when, and why.
    r#"
    ALTER TABLE actions ADD COLUMN cancelled_by TEXT;
    ALTER TABLE actions ADD COLUMN cancelled_at_ms INTEGER;
    ALTER TABLE actions ADD COLUMN cancel_comment TEXT;
    "#,
    // 5: an action proposed to undo another (a release for an isolation, a restore for a quarantine).
    r#"
    ALTER TABLE actions ADD COLUMN undo_of TEXT REFERENCES actions(id);
    "#,
    // 6: alerts raised by the collector itself (no agent signature, seq 0, outside
    // the device's sequence tracking), and which silence of an isolated device
    // already raised one (the last_seen_ms it went silent at).
    r#"
    ALTER TABLE alerts ADD COLUMN source TEXT NOT NULL DEFAULT 'agent';
    ALTER TABLE devices ADD COLUMN silence_alerted_seen_ms INTEGER;
    "#,
    // 7: alerts from the identity and mailbox feeds belong to no device: the alerts
    // table is rebuilt with a nullable device_id (SQLite cannot relax NOT NULL in
    // place). Rows keep their rowids, so alert_entities stays valid.
    r#"
    CREATE TABLE alerts_v7 (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        device_id TEXT REFERENCES devices(id),
        seq INTEGER NOT NULL,
        observed_at_ms INTEGER NOT NULL,
        last_observed_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        rule_title TEXT NOT NULL,
        rule_author TEXT NOT NULL,
        severity INTEGER NOT NULL,
        techniques TEXT NOT NULL,
        tactics TEXT NOT NULL,
        count INTEGER NOT NULL,
        entities TEXT NOT NULL,
        matched TEXT NOT NULL,
        signed_payload BLOB NOT NULL,
        signature BLOB NOT NULL,
        source TEXT NOT NULL DEFAULT 'agent'
    );
    INSERT INTO alerts_v7 SELECT rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms,
        rule_id, rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload,
        signature, source FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_v7 RENAME TO alerts;
    CREATE INDEX alerts_by_device ON alerts(device_id, rowid);
    CREATE INDEX alerts_by_time ON alerts(observed_at_ms);
    CREATE INDEX alerts_by_rule ON alerts(rule_id);
    CREATE INDEX alerts_by_source ON alerts(source, rowid);
    "#,
    // 8: normalized identity (sign-in) and mailbox (email) feed records. `record_key`
    // is the record's natural id (Entra Id, Okta uuid, NetworkMessageId + recipient
    // + attachment / URL / click, or a SHA-256 of the record), so a re-import stores
    // nothing twice. Detections query these by user, IP and message within windows.
    r#"
    CREATE TABLE sign_ins (
        rowid INTEGER PRIMARY KEY,
        record_key TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        user TEXT NOT NULL,
        ip TEXT,
        location TEXT,
        latitude REAL,
        longitude REAL,
        app TEXT,
        client TEXT,
        outcome TEXT NOT NULL,
        result TEXT NOT NULL,
        result_detail TEXT,
        risk_level TEXT,
        risk_state TEXT,
        conditional_access TEXT,
        mfa TEXT,
        device TEXT,
        raw TEXT NOT NULL,
        imported_at_ms INTEGER NOT NULL
    );
    CREATE INDEX sign_ins_by_user ON sign_ins(user, outcome, time_ms);
    CREATE INDEX sign_ins_by_ip ON sign_ins(ip, outcome, time_ms);
    CREATE TABLE mail_events (
        rowid INTEGER PRIMARY KEY,
        record_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        network_message_id TEXT,
        sender TEXT,
        recipient TEXT,
        subject TEXT,
        threat_types TEXT,
        detection_methods TEXT,
        delivery_action TEXT,
        delivery_location TEXT,
        file_name TEXT,
        sha256 TEXT,
        url TEXT,
        action TEXT,
        ip TEXT,
        raw TEXT NOT NULL,
        imported_at_ms INTEGER NOT NULL
    );
    CREATE INDEX mail_events_by_message ON mail_events(network_message_id, kind);
    CREATE INDEX mail_events_by_recipient ON mail_events(recipient, time_ms);
    "#,
    // 9: the incident a response action belongs to (optional; no foreign key, so
    // actions can name incidents whatever stores them).
    r#"
    ALTER TABLE actions ADD COLUMN incident_id TEXT;
    CREATE INDEX actions_by_incident ON actions(incident_id) WHERE incident_id IS NOT NULL;
    "#,
    // 10: automation rules: how far they have read the alerts table (rowid
    // watermark), and which rule proposed which action for which alert, so each
    // rule proposes at most once per alert.
    r#"
    CREATE TABLE automation_watermarks (
        stream TEXT PRIMARY KEY,
        last_rowid INTEGER NOT NULL
    );
    CREATE TABLE automation_proposals (
        rule TEXT NOT NULL,
        alert_id TEXT NOT NULL,
        action_id TEXT,
        outcome TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, alert_id)
    );
    "#,
    // 11 (incidents): correlated incidents. `incident_alerts` says which incident each
    // alert is in and why; `incident_entities` holds each incident's correlation keys
    // (filters, detail, and the index rebuilt after a restart); activity and comments;
    // `correlation_keys` the distinct devices a key was seen on (prevalence);
    // `correlation_state` the tail watermark (alert rowid), the next incident number and
    // the newest alert time correlated.
    r#"
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        title TEXT NOT NULL,
        title_manual INTEGER NOT NULL DEFAULT 0,
        severity INTEGER NOT NULL,
        severity_manual INTEGER NOT NULL DEFAULT 0,
        alert_severity INTEGER NOT NULL,
        status TEXT NOT NULL,
        redirected_to TEXT,
        assignee TEXT,
        classification TEXT,
        determination TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        sources TEXT NOT NULL,
        tactics TEXT NOT NULL,
        first_title TEXT NOT NULL,
        several_titles INTEGER NOT NULL,
        first_activity_ms INTEGER NOT NULL,
        last_activity_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        alert_count INTEGER NOT NULL,
        device_count INTEGER NOT NULL,
        user_count INTEGER NOT NULL,
        mailbox_count INTEGER NOT NULL
    );
    CREATE INDEX incidents_by_last ON incidents(last_activity_ms, id);
    CREATE INDEX incidents_by_severity ON incidents(severity, last_activity_ms, id);
    CREATE INDEX incidents_by_status ON incidents(status, last_activity_ms);
    CREATE TABLE incident_alerts (
        alert_rowid INTEGER PRIMARY KEY REFERENCES alerts(rowid),
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        reason TEXT NOT NULL,
        linked_by TEXT NOT NULL,
        linked_at_ms INTEGER NOT NULL
    );
    CREATE INDEX incident_alerts_by_incident ON incident_alerts(incident_id);
    CREATE TABLE incident_entities (
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        label TEXT NOT NULL,
        via TEXT,
        first_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        last_alert TEXT NOT NULL,
        PRIMARY KEY (incident_id, key)
    ) WITHOUT ROWID;
    CREATE INDEX incident_entities_by_key ON incident_entities(key, incident_id);
    CREATE TABLE incident_activity (
        id INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX incident_activity_by_incident ON incident_activity(incident_id, id);
    CREATE TABLE incident_comments (
        id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents(id),
        at_ms INTEGER NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX incident_comments_by_incident ON incident_comments(incident_id, at_ms);
    CREATE TABLE correlation_keys (
        key TEXT PRIMARY KEY,
        devices TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE correlation_state (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 12: command-key rollovers, each signed by the key it replaces; every agent
    // session starts with all of them, oldest first.
    r#"
    CREATE TABLE key_rollovers (
        serial INTEGER PRIMARY KEY,
        new_key BLOB NOT NULL,
        retire_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        signed BLOB NOT NULL
    );
    "#,
    // 13: a counter that every change of a device's hostname or addresses bumps
    // (triggers, so no write path can forget it): correlation reloads its device
    // table when it moves.
    r#"
    CREATE TABLE device_inventory_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n INTEGER NOT NULL
    );
    INSERT INTO device_inventory_version (id, n) VALUES (1, 0);
    CREATE TRIGGER devices_inserted AFTER INSERT ON devices
        BEGIN UPDATE device_inventory_version SET n = n + 1; END;
    CREATE TRIGGER devices_deleted AFTER DELETE ON devices
        BEGIN UPDATE device_inventory_version SET n = n + 1; END;
    CREATE TRIGGER devices_renamed AFTER UPDATE OF hostname, addresses ON devices
        WHEN OLD.hostname IS NOT NEW.hostname OR OLD.addresses IS NOT NEW.addresses
        BEGIN UPDATE device_inventory_version SET n = n + 1; END;
    "#,
    // 14 (time discipline, device proximity, continuations): the time each alert was
    // correlated at and why it is not its observed time (a device clock ahead of the
    // collector's); a device key's activity runs in an incident (JSON [[first, last]],
    // NULL for other keys); the incident a new one continues after the older reached
    // its maximum span.
    r#"
    ALTER TABLE incident_alerts ADD COLUMN at_ms INTEGER;
    ALTER TABLE incident_alerts ADD COLUMN clock_note TEXT;
    ALTER TABLE incident_entities ADD COLUMN runs TEXT;
    ALTER TABLE incidents ADD COLUMN continues_from TEXT;
    "#,
    // 15 (console): a device's alerts in time order, for the device page's pages and
    // time ranges (rowid, part of every index, breaks ties for the cursor); the entity
    // index by alert covers kind and value (it replaces the one on alert_rowid alone).
    r#"
    CREATE INDEX alerts_by_device_time ON alerts(device_id, observed_at_ms);
    -- An incident's entities are read from this index alone (no row lookup per entity).
    CREATE INDEX alert_entities_by_alert_kind_value ON alert_entities(alert_rowid, kind, value);
    DROP INDEX alert_entities_by_alert;
    "#,
    // 16 (fold): repeats folded at ingest (store/fold). `fold_hash` is 16 bytes of
    // SHA-256 over device, rule id and fold key (NULL for alerts that never fold:
    // feeds, rows stored before this migration); `folds` how many alerts were folded
    // into the row. `alert_folds` keeps each folded alert's id (a re-delivery is a
    // duplicate), sequence number, times, count and signed payload as evidence. No
    // index on the hash: the writer looks keys up in memory (an index on random
    // hashes halved ingest), the column refills that map at start.
    r#"
    ALTER TABLE alerts ADD COLUMN fold_hash BLOB;
    ALTER TABLE alerts ADD COLUMN folds INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE alert_folds (
        alert_id TEXT PRIMARY KEY,
        into_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
        seq INTEGER NOT NULL,
        observed_at_ms INTEGER NOT NULL,
        last_observed_at_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        signed_payload BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    CREATE INDEX alert_folds_by_row ON alert_folds(into_rowid);
    "#,
    // 17: merges repoint incidents that were redirected to the merged one
    // (`UPDATE incidents ... WHERE redirected_to = ?`); without an index each merge
    // scanned the whole table. Partial: most incidents are never redirected.
    r#"
    CREATE INDEX incidents_by_redirect ON incidents(redirected_to) WHERE redirected_to IS NOT NULL;
    "#,
    // 18 (correlation write path): `incident_entities` without the columns its key
    // already holds (`kind` and `value` are the key's two parts) and with `label`
    // only where it is not the value; without the foreign key to `incidents`, which
    // looked the incident up for every key written (the engine writes an incident's
    // keys in the transaction that writes the incident; merges delete them). Each
    // correlation step upserts every key it touched: a row half as long is half the
    // pages to split, log and checkpoint. And no index on incidents by status: only
    // the engine's load used it (open incidents active since a time), which the index
    // by last activity serves as well, while every step moved an entry in it for each
    // incident an alert joined.
    r#"
    DROP INDEX incidents_by_status;
    CREATE TABLE incident_entities_new (
        incident_id TEXT NOT NULL,
        key TEXT NOT NULL,
        label TEXT,
        via TEXT,
        first_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        last_alert TEXT NOT NULL,
        runs TEXT,
        PRIMARY KEY (incident_id, key)
    ) WITHOUT ROWID;
    INSERT INTO incident_entities_new (incident_id, key, label, via, first_ms, last_ms, last_alert, runs)
        SELECT incident_id, key, NULLIF(label, value), via, first_ms, last_ms, last_alert, runs
        FROM incident_entities;
    DROP TABLE incident_entities;
    ALTER TABLE incident_entities_new RENAME TO incident_entities;
    CREATE INDEX incident_entities_by_key ON incident_entities(key, incident_id);
    "#,
    // 19: how an incident holds a key (engine `KeyRow`): bit 1, weakly (only alerts
    // that joined on the device alone brought it: it ties no more than the device);
    // bit 2, named by a device's alert (an address the device itself talked to).
    r#"
    ALTER TABLE incident_entities ADD COLUMN flags INTEGER NOT NULL DEFAULT 0;
    "#,
    // 20: each device's clock minus the collector's at its last heartbeat.
    r#"
    ALTER TABLE devices ADD COLUMN clock_skew_ms INTEGER;
    "#,
    // 21 (durability): outbox epochs and acknowledged drop reports. A device's alerts
    // are numbered per outbox epoch (a reset or rolled-back outbox starts a new one),
    // so gaps are keyed by epoch; every drop report an agent sends is kept once (by
    // its epoch and report id) with the range it names; and the agent's storage state
    // (disk full) from its health message.
    r#"
    ALTER TABLE devices ADD COLUMN outbox_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN storage_error TEXT;
    CREATE TABLE sequence_gaps_by_epoch (
        device_id TEXT NOT NULL REFERENCES devices(id),
        epoch INTEGER NOT NULL DEFAULT 0,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        reason TEXT NOT NULL,
        recorded_at_ms INTEGER NOT NULL,
        PRIMARY KEY (device_id, epoch, first_seq)
    );
    INSERT INTO sequence_gaps_by_epoch (device_id, epoch, first_seq, last_seq, reason, recorded_at_ms)
        SELECT device_id, 0, first_seq, last_seq, reason, recorded_at_ms FROM sequence_gaps;
    DROP TABLE sequence_gaps;
    ALTER TABLE sequence_gaps_by_epoch RENAME TO sequence_gaps;
    CREATE TABLE drop_reports (
        id INTEGER PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices(id),
        epoch INTEGER NOT NULL DEFAULT 0,
        report_id INTEGER,
        seqs_epoch INTEGER NOT NULL DEFAULT 0,
        dropped INTEGER NOT NULL,
        first_seq INTEGER,
        last_seq INTEGER,
        reason TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX drop_reports_once ON drop_reports(device_id, epoch, report_id) WHERE report_id IS NOT NULL;
    CREATE INDEX drop_reports_by_device ON drop_reports(device_id, id);
    "#,
    // 22 (correlation write path): the tables a correlation step writes for every
    // alert name their incident by its number (`incidents.seq`, unique, never
    // changes) instead of its 26-character text id: a link, each key an incident
    // holds and each activity entry had that text in a B-tree key (twice for keys),
    // a link also looked its incident up by it (foreign key). The text id stays the
    // incident's public id; readers join `incidents` on `seq`. Links keep their
    // foreign key to `alerts` (an integer lookup of a row just written).
    r#"
    CREATE TABLE incident_alerts_new (
        alert_rowid INTEGER PRIMARY KEY REFERENCES alerts(rowid),
        incident INTEGER NOT NULL,
        reason TEXT NOT NULL,
        linked_by TEXT NOT NULL,
        linked_at_ms INTEGER NOT NULL,
        at_ms INTEGER,
        clock_note TEXT
    );
    INSERT INTO incident_alerts_new (alert_rowid, incident, reason, linked_by, linked_at_ms, at_ms, clock_note)
        SELECT ia.alert_rowid, i.seq, ia.reason, ia.linked_by, ia.linked_at_ms, ia.at_ms, ia.clock_note
        FROM incident_alerts ia JOIN incidents i ON i.id = ia.incident_id;
    DROP TABLE incident_alerts;
    ALTER TABLE incident_alerts_new RENAME TO incident_alerts;
    CREATE INDEX incident_alerts_by_incident ON incident_alerts(incident);
    CREATE TABLE incident_entities_new (
        incident INTEGER NOT NULL,
        key TEXT NOT NULL,
        label TEXT,
        via TEXT,
        first_ms INTEGER NOT NULL,
        last_ms INTEGER NOT NULL,
        last_alert TEXT NOT NULL,
        runs TEXT,
        flags INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (incident, key)
    ) WITHOUT ROWID;
    INSERT INTO incident_entities_new (incident, key, label, via, first_ms, last_ms, last_alert, runs, flags)
        SELECT i.seq, e.key, e.label, e.via, e.first_ms, e.last_ms, e.last_alert, e.runs, e.flags
        FROM incident_entities e JOIN incidents i ON i.id = e.incident_id;
    DROP TABLE incident_entities;
    ALTER TABLE incident_entities_new RENAME TO incident_entities;
    CREATE INDEX incident_entities_by_key ON incident_entities(key, incident);
    CREATE TABLE incident_activity_new (
        id INTEGER PRIMARY KEY,
        incident INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    INSERT INTO incident_activity_new (id, incident, at_ms, actor, kind, detail)
        SELECT a.id, i.seq, a.at_ms, a.actor, a.kind, a.detail
        FROM incident_activity a JOIN incidents i ON i.id = a.incident_id;
    DROP TABLE incident_activity;
    ALTER TABLE incident_activity_new RENAME TO incident_activity;
    CREATE INDEX incident_activity_by_incident ON incident_activity(incident);
    "#,
    // 23 (write path): two B-trees fewer to write. An alert's entity rows are keyed
    // by (alert, kind, value) in a table without rowids: the covering index that
    // readers used becomes the table, and a row is one insert instead of three
    // (an entity named twice in one alert is kept once). Incidents are keyed by
    // their number (`seq`, now the rowid): a new incident is one index insert
    // fewer, and the `incident = (SELECT seq … WHERE id = ?)` lookups of every
    // incident table read the id index alone.
    r#"
    CREATE TABLE alert_entities_new (
        alert_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (alert_rowid, kind, value)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO alert_entities_new (alert_rowid, kind, value)
        SELECT alert_rowid, kind, value FROM alert_entities;
    DROP TABLE alert_entities;
    ALTER TABLE alert_entities_new RENAME TO alert_entities;
    CREATE INDEX alert_entities_by_value ON alert_entities(kind, value);
    CREATE TABLE incidents_new (
        id TEXT NOT NULL UNIQUE,
        seq INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        title_manual INTEGER NOT NULL DEFAULT 0,
        severity INTEGER NOT NULL,
        severity_manual INTEGER NOT NULL DEFAULT 0,
        alert_severity INTEGER NOT NULL,
        status TEXT NOT NULL,
        redirected_to TEXT,
        assignee TEXT,
        classification TEXT,
        determination TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        sources TEXT NOT NULL,
        tactics TEXT NOT NULL,
        first_title TEXT NOT NULL,
        several_titles INTEGER NOT NULL,
        first_activity_ms INTEGER NOT NULL,
        last_activity_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        alert_count INTEGER NOT NULL,
        device_count INTEGER NOT NULL,
        user_count INTEGER NOT NULL,
        mailbox_count INTEGER NOT NULL,
        continues_from TEXT
    );
    INSERT INTO incidents_new (id, seq, title, title_manual, severity, severity_manual, alert_severity, status,
        redirected_to, assignee, classification, determination, tags, sources, tactics, first_title, several_titles,
        first_activity_ms, last_activity_ms, created_at_ms, updated_at_ms, alert_count, device_count, user_count,
        mailbox_count, continues_from)
        SELECT id, seq, title, title_manual, severity, severity_manual, alert_severity, status,
        redirected_to, assignee, classification, determination, tags, sources, tactics, first_title, several_titles,
        first_activity_ms, last_activity_ms, created_at_ms, updated_at_ms, alert_count, device_count, user_count,
        mailbox_count, continues_from FROM incidents;
    DROP TABLE incidents;
    ALTER TABLE incidents_new RENAME TO incidents;
    CREATE INDEX incidents_by_last ON incidents(last_activity_ms, id);
    CREATE INDEX incidents_by_severity ON incidents(severity, last_activity_ms, id);
    CREATE INDEX incidents_by_redirect ON incidents(redirected_to) WHERE redirected_to IS NOT NULL;
    "#,
    // 24 (sensors): what each sensor of a device sees, as its agent last reported it
    // (protocol 1.5), JSON; and when.
    r#"
    ALTER TABLE devices ADD COLUMN sensors TEXT;
    ALTER TABLE devices ADD COLUMN sensors_at_ms INTEGER;
    "#,
    // 25 (ingest write path): three indexes of `alerts` that no query reads. The
    // alert list walks rowids newest first (its filters are checked on the way, or
    // `alerts_by_device` serves a device's list), the device and incident pages use
    // `alerts_by_device_time`, and nothing looks alerts up by rule, source or time
    // alone: each alert stored wrote three B-trees for nothing.
    r#"
    DROP INDEX IF EXISTS alerts_by_time;
    DROP INDEX IF EXISTS alerts_by_rule;
    DROP INDEX IF EXISTS alerts_by_source;
    "#,
    // 26 (ingest write path): alert entity rows are found by value only for
    // processes (an incident's process tree samples the alerts of one process);
    // users, addresses, files, mailboxes and domains of every alert went into
    // that index for nothing.
    r#"
    DROP INDEX IF EXISTS alert_entities_by_value;
    CREATE INDEX alert_entities_by_value ON alert_entities(kind, value) WHERE kind IN ('lineage', 'process');
    "#,
    // 27 (correlation write path): the alert that opened an incident is kept on the
    // incident's row, and the activity log's "created" entry is read from it instead
    // of being written as a row of its own (two B-tree inserts for each incident
    // correlation opens). Incidents opened before keep their written entry.
    r#"
    ALTER TABLE incidents ADD COLUMN opened_by TEXT;
    "#,
    // 28 (rule context): one row per rule version, what an analyst reads beside an
    // alert of that rule (store/rules). Lists are JSON arrays; never updated.
    r#"
    CREATE TABLE rule_contexts (
        rule_id TEXT NOT NULL,
        content_sha256 TEXT NOT NULL,
        origin TEXT NOT NULL,
        pack_version INTEGER,
        file TEXT NOT NULL,
        title TEXT NOT NULL,
        level TEXT NOT NULL,
        description TEXT NOT NULL,
        refs TEXT NOT NULL,
        false_positives TEXT NOT NULL,
        author TEXT NOT NULL,
        license TEXT NOT NULL,
        source_url TEXT,
        techniques TEXT NOT NULL,
        tactics TEXT NOT NULL,
        notes TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        PRIMARY KEY (rule_id, content_sha256)
    ) WITHOUT ROWID;
    "#,
    // 29 (hunting): each analyst's saved hunts, by name (store/hunt). `window_ms` is
    // the time range relative to when the hunt is run (NULL: all time).
    r#"
    CREATE TABLE saved_hunts (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        query TEXT NOT NULL,
        window_ms INTEGER,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL,
        UNIQUE (owner, name)
    );
    "#,
    // 30 (feeds: directory and audit events): Entra audit logs and risky users, Okta
    // admin events, M365 mailbox operations, Defender CloudAppEvents and
    // IdentityDirectoryEvents (model::feed::AuditEvent), judged by alerts_audit.
    r#"
    CREATE TABLE audit_events (
        rowid INTEGER PRIMARY KEY,
        record_key TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        kind TEXT NOT NULL,
        time_ms INTEGER NOT NULL,
        operation TEXT NOT NULL,
        actor TEXT,
        target_user TEXT,
        app_id TEXT,
        app_name TEXT,
        mailbox TEXT,
        ip TEXT,
        detail TEXT,
        items INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        risk_level TEXT,
        publisher_verified INTEGER,
        raw TEXT NOT NULL,
        imported_at_ms INTEGER NOT NULL
    );
    CREATE INDEX audit_events_by_app ON audit_events(kind, app_id, time_ms);
    CREATE INDEX audit_events_by_app_name ON audit_events(kind, lower(app_name), time_ms);
    CREATE INDEX audit_events_by_actor ON audit_events(kind, actor, time_ms);
    CREATE INDEX audit_events_by_target ON audit_events(kind, target_user, time_ms);
    "#,
    // 31 (endpoint feed): the key of every event the endpoint feed took (EventRecordID
    // + channel + computer, or a SHA-256 of the record), so a re-import stores nothing
    // twice; and the hosts its events name, devices that run no Ward agent (never
    // rows of `devices`: no key, no session, no commands).
    r#"
    CREATE TABLE endpoint_events (
        record_key TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        time_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE endpoint_hosts (
        host TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        product TEXT NOT NULL,
        first_seen_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        events INTEGER NOT NULL,
        alerts INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 32 (ingest write path): an alert's id is stored as its 16 bytes (big-endian:
    // byte order is time order, as the text's was) instead of its 26-character text,
    // in the row and its unique index, and in `alert_folds` (a folded alert's id, the
    // table's key). Ids that are not an `Id128` as it prints stay text
    // (store/sqlite/alert_id; `ward_alert_key` is that conversion, registered on the
    // connection). Both tables are rebuilt to declare the column BLOB; rows keep
    // their rowids, so entities, links and folds stay valid.
    r#"
    CREATE TABLE alerts_v32 (
        rowid INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE,
        device_id TEXT REFERENCES devices(id),
        seq INTEGER NOT NULL,
        observed_at_ms INTEGER NOT NULL,
        last_observed_at_ms INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        rule_title TEXT NOT NULL,
        rule_author TEXT NOT NULL,
        severity INTEGER NOT NULL,
        techniques TEXT NOT NULL,
        tactics TEXT NOT NULL,
        count INTEGER NOT NULL,
        entities TEXT NOT NULL,
        matched TEXT NOT NULL,
        signed_payload BLOB NOT NULL,
        signature BLOB NOT NULL,
        source TEXT NOT NULL DEFAULT 'agent',
        fold_hash BLOB,
        folds INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO alerts_v32 (rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
        rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload, signature,
        source, fold_hash, folds)
        SELECT rowid, ward_alert_key(id), device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms, rule_id,
        rule_title, rule_author, severity, techniques, tactics, count, entities, matched, signed_payload, signature,
        source, fold_hash, folds FROM alerts ORDER BY rowid;
    DROP TABLE alerts;
    ALTER TABLE alerts_v32 RENAME TO alerts;
    CREATE INDEX alerts_by_device ON alerts(device_id, rowid);
    CREATE INDEX alerts_by_device_time ON alerts(device_id, observed_at_ms);
    CREATE TABLE alert_folds_v32 (
        alert_id BLOB PRIMARY KEY,
        into_rowid INTEGER NOT NULL REFERENCES alerts(rowid),
        seq INTEGER NOT NULL,
        observed_at_ms INTEGER NOT NULL,
        last_observed_at_ms INTEGER NOT NULL,
        count INTEGER NOT NULL,
        received_at_ms INTEGER NOT NULL,
        signed_payload BLOB NOT NULL,
        signature BLOB NOT NULL
    );
    INSERT INTO alert_folds_v32 (alert_id, into_rowid, seq, observed_at_ms, last_observed_at_ms, count, received_at_ms,
        signed_payload, signature)
        SELECT ward_alert_key(alert_id), into_rowid, seq, observed_at_ms, last_observed_at_ms, count, received_at_ms,
        signed_payload, signature FROM alert_folds ORDER BY rowid;
    DROP TABLE alert_folds;
    ALTER TABLE alert_folds_v32 RENAME TO alert_folds;
    CREATE INDEX alert_folds_by_row ON alert_folds(into_rowid);
    "#,
];

#[cfg(test)]
mod tests {
    use crate::store::prelude::*;
    use rusqlite::Connection;

    use super::MIGRATIONS;
    use crate::store::Store;

    /// SQLite's plan for `sql` with `params`, one line per step, on a fresh store.
    fn plan(sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).unwrap();
        store
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(params, |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A merge repoints the incidents redirected to the merged one through an index,
    /// not by scanning every incident.
    #[test]
    fn merges_find_redirected_incidents_by_index() {
        let plan = plan(
            "UPDATE incidents SET redirected_to = ?2 WHERE redirected_to = ?1",
            ["a", "b"],
        );
        assert!(plan.iter().any(|p| p.contains("incidents_by_redirect")), "{plan:?}");
    }

    /// A device's alert list reads the device's index, newest first, and nothing
    /// writes the indexes migration 25 dropped.
    #[test]
    fn a_devices_alert_list_reads_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).unwrap();
        let filter = crate::store::AlertFilter {
            device_id: Some("d1".into()),
            min_severity: None,
            rule_id: None,
            since_ms: None,
            until_ms: None,
            before_rowid: Some(10),
            limit: 50,
        };
        let (sql, values) = crate::store::sqlite::SqliteStore::alert_list_query(&filter);
        let plan = plan(&sql, rusqlite::params_from_iter(values));
        assert!(plan.iter().any(|p| p.contains("alerts_by_device ")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        let indexes: Vec<String> = store
            .conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'alerts'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for dropped in ["alerts_by_time", "alerts_by_rule", "alerts_by_source"] {
            assert!(!indexes.iter().any(|i| i == dropped), "{indexes:?}");
        }
    }

    /// The process tree's sample query finds a process's alerts through the partial
    /// entity index (migration 26), which holds only process and lineage rows.
    #[test]
    fn a_process_is_found_through_the_partial_entity_index() {
        let plan = plan(
            crate::store::sqlite::incident_view::PROCESS_SAMPLE_SQL,
            rusqlite::params!["p", "i", "d", 5],
        );
        assert!(plan.iter().any(|p| p.contains("alert_entities_by_value")), "{plan:?}");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("ward.db")).unwrap();
        let rows: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'alert_entities_by_value' AND sql LIKE '%WHERE kind IN%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1);
    }

    /// A database at `path` migrated up to, not including, the first migration whose
    /// SQL contains `marker`: that migration's number and the open connection.
    fn migrated_before(path: &std::path::Path, marker: &str) -> (usize, Connection) {
        let at = MIGRATIONS.iter().position(|m| m.contains(marker)).unwrap();
        let conn = Connection::open(path).unwrap();
        for sql in &MIGRATIONS[..at] {
            conn.execute_batch(sql).unwrap();
        }
        (at, conn)
    }

    /// Incident keys saved before their table lost its `kind` and `value` columns
    /// load as they were saved: kind from the key, the label only where it differs.
    #[test]
    fn slimmed_incident_keys_load_as_saved() {
        use crate::model::correlation::KeyKind;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        {
            let (slim, conn) = migrated_before(&path, "incident_entities_new");
            conn.execute_batch(&format!(
                "PRAGMA user_version = {slim};
                 INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics,
                     first_title, several_titles, first_activity_ms, last_activity_ms, created_at_ms,
                     updated_at_ms, alert_count, device_count, user_count, mailbox_count)
                     VALUES ('i1', 1, 'T', 3, 3, 'active', '[\"collector\"]', '[]', 'T', 0, 10, 20, 30, 30, 2, 1, 1, 0);
                 INSERT INTO incident_entities (incident_id, key, kind, value, label, via, first_ms, last_ms,
                     last_alert, runs) VALUES
                     ('i1', 'device:d1', 'device', 'd1', 'laptop', NULL, 10, 20, 'a2', '[[10,20]]'),
                     ('i1', 'device:host/old', 'device', 'host/old', 'host/old', NULL, 10, 10, 'a1', NULL),
                     ('i1', 'user:alice', 'user', 'alice', 'alice', 'found on d1', 10, 20, 'a2', NULL);"
            ))
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let inc = store.load_incident("i1").unwrap().unwrap();
        let mut keys: Vec<_> = inc
            .keys
            .iter()
            .map(|k| {
                (
                    k.key.to_string(),
                    k.kind,
                    k.label.as_deref().map(str::to_string),
                    k.via.as_deref().map(str::to_string),
                    k.runs.clone(),
                )
            })
            .collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            keys,
            vec![
                (
                    "device:d1".into(),
                    KeyKind::Device,
                    Some("laptop".into()),
                    None,
                    vec![(10, 20)]
                ),
                ("device:host/old".into(), KeyKind::Device, None, None, vec![(10, 10)]),
                (
                    "user:alice".into(),
                    KeyKind::User,
                    None,
                    Some("found on d1".into()),
                    vec![]
                ),
            ]
        );
        assert_eq!(store.incident_device_ids("i1").unwrap(), vec!["d1".to_string()]);
        let kind_columns: i64 = store
            .conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('incident_entities') WHERE name IN ('kind', 'value')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(kind_columns, 0);
    }

    /// A database made before the incident tables named incidents by number keeps
    /// every link, key and activity entry (activity ids too: automation tails them),
    /// and the store reads them by the incident's text id as before.
    #[test]
    fn incidents_named_by_number_keep_links_keys_and_activity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        {
            let (by_number, conn) = migrated_before(&path, "incident_alerts_new");
            conn.execute_batch(&format!(
                "PRAGMA user_version = {by_number};
                 INSERT INTO devices (id, hostname, signing_key, cert_sha256, enrolled_at_ms)
                     VALUES ('d1', 'laptop', x'00', x'01', 1);
                 INSERT INTO alerts (rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms,
                     rule_id, rule_title, rule_author, severity, techniques, tactics, count, entities, matched,
                     signed_payload, signature, source)
                     VALUES (7, 'a1', 'd1', 1, 10, 10, 11, 'r', 'R', 'me', 3, '[]', '[\"TA0002\"]', 1, '[]', '{{}}',
                             x'02', x'03', 'agent'),
                            (8, 'a2', 'd1', 2, 20, 20, 21, 'r', 'R', 'me', 3, '[]', '[]', 1, '[]', '{{}}',
                             x'02', x'03', 'agent');
                 INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics,
                     first_title, several_titles, first_activity_ms, last_activity_ms, created_at_ms,
                     updated_at_ms, alert_count, device_count, user_count, mailbox_count)
                     VALUES ('i-old', 4, 'T', 3, 3, 'redirected', '[\"agent\"]', '[]', 'T', 0, 10, 10, 30, 30, 1, 1,
                             0, 0),
                            ('i-new', 9, 'T', 3, 3, 'active', '[\"agent\"]', '[\"TA0002\"]', 'T', 0, 10, 20, 30, 30,
                             2, 1, 1, 0);
                 UPDATE incidents SET redirected_to = 'i-new' WHERE id = 'i-old';
                 INSERT INTO incident_alerts (alert_rowid, incident_id, reason, linked_by, linked_at_ms, at_ms,
                     clock_note)
                     VALUES (7, 'i-new', 'first alert', 'correlation', 40, 10, NULL),
                            (8, 'i-new', 'same user alice', 'correlation', 41, 20, 'clock ahead');
                 INSERT INTO incident_entities (incident_id, key, label, via, first_ms, last_ms, last_alert, runs,
                     flags)
                     VALUES ('i-new', 'device:d1', 'laptop', NULL, 10, 20, 'a2', '[[10,20]]', 2),
                            ('i-new', 'user:alice', NULL, 'found on d1', 10, 20, 'a2', NULL, 1);
                 INSERT INTO incident_activity (id, incident_id, at_ms, actor, kind, detail)
                     VALUES (5, 'i-old', 40, 'correlation', 'created', 'opened by alert a0'),
                            (6, 'i-new', 40, 'correlation', 'created', 'opened by alert a1'),
                            (7, 'i-new', 50, 'correlation', 'merged', 'incident i-old merged into this one');
                 INSERT INTO incident_comments (id, incident_id, at_ms, author, text)
                     VALUES ('c1', 'i-new', 60, 'ana', 'look');"
            ))
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.incident_alerts_of("a2").unwrap(),
            ("i-new".to_string(), "same user alice".to_string())
        );
        let alerts: Vec<i64> = store
            .incident_stored_alerts("i-new")
            .unwrap()
            .iter()
            .map(|a| a.rowid)
            .collect();
        assert_eq!(alerts, vec![7, 8]);
        let inc = store.load_incident("i-new").unwrap().unwrap();
        let mut keys: Vec<_> = inc
            .keys
            .iter()
            .map(|k| (k.key.to_string(), k.weakly_held, k.on_device, k.runs.clone()))
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                ("device:d1".to_string(), false, true, vec![(10, 20)]),
                ("user:alice".to_string(), true, false, vec![]),
            ]
        );
        assert_eq!(store.incident_device_ids("i-new").unwrap(), vec!["d1".to_string()]);
        let holding: Vec<String> = store
            .incidents_holding(&["user:alice".to_string()], 0, 100)
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(holding, vec!["i-new".to_string()]);
        let activity: Vec<(String, String)> = store
            .incident_activity("i-new")
            .unwrap()
            .into_iter()
            .map(|a| (a.kind, a.detail))
            .collect();
        assert_eq!(
            activity,
            vec![
                ("created".to_string(), "opened by alert a1".to_string()),
                ("merged".to_string(), "incident i-old merged into this one".to_string())
            ]
        );
        assert_eq!(store.incident_activity("i-old").unwrap().len(), 1);
        let ids: Vec<i64> = store
            .conn
            .prepare("SELECT id FROM incident_activity ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, vec![5, 6, 7]);
        assert_eq!(store.incident_comments("i-new").unwrap()[0].text, "look");
        let listed: Vec<String> = store
            .list_incidents(&crate::store::IncidentFilter {
                text: None,
                user_keys: vec!["user:alice".into()],
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(listed, vec!["i-new".to_string()]);
        // No text incident id is left in the tables a correlation step writes.
        let text_ids: i64 = store
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM pragma_table_info('incident_alerts') WHERE name = 'incident_id')
                      + (SELECT COUNT(*) FROM pragma_table_info('incident_entities') WHERE name = 'incident_id')
                      + (SELECT COUNT(*) FROM pragma_table_info('incident_activity') WHERE name = 'incident_id')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(text_ids, 0);
    }

    /// A database made before alert ids were stored as 16 bytes keeps every alert,
    /// fold, entity and link: ids that are an `Id128` as it prints become their
    /// bytes, others stay text, and the store finds and prints each by its text as
    /// before (a text that is no stored id finds nothing).
    #[test]
    fn alert_ids_become_sixteen_bytes_and_read_as_before() {
        use ward_protocol::Id128;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let kept = Id128::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0001).to_string();
        let folded = Id128::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0002).to_string();
        let feed = Id128::from_u128(0x0190_0000_0000_0000_0000_0000_0000_0003).to_string();
        {
            let (binary, conn) = migrated_before(&path, "alerts_v32");
            conn.execute_batch(&format!(
                "PRAGMA user_version = {binary};
                 INSERT INTO devices (id, hostname, signing_key, cert_sha256, enrolled_at_ms)
                     VALUES ('d1', 'laptop', x'00', x'01', 1);
                 INSERT INTO alerts (rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms,
                     rule_id, rule_title, rule_author, severity, techniques, tactics, count, entities, matched,
                     signed_payload, signature, source, fold_hash, folds)
                     VALUES (7, '{kept}', 'd1', 1, 10, 20, 11, 'r', 'R', 'me', 3, '[]', '[]', 2, '[]', '{{}}',
                             x'02', x'03', 'agent', x'0102030405060708090a0b0c0d0e0f10', 1),
                            (8, 'made-by-hand', 'd1', 2, 30, 30, 31, 'r', 'R', 'me', 3, '[]', '[]', 1, '[]', '{{}}',
                             x'02', x'03', 'agent', NULL, 0),
                            (9, '{feed}', NULL, 0, 40, 40, 41, 'f', 'F', 'feed', 2, '[]', '[]', 1, '[]', '{{}}',
                             x'', x'', 'identity', NULL, 0);
                 INSERT INTO alert_entities (alert_rowid, kind, value) VALUES (7, 'user', 'alice');
                 INSERT INTO alert_folds (alert_id, into_rowid, seq, observed_at_ms, last_observed_at_ms, count,
                     received_at_ms, signed_payload, signature)
                     VALUES ('{folded}', 7, 3, 20, 20, 1, 21, x'04', x'05');
                 INSERT INTO incidents (id, seq, title, severity, alert_severity, status, sources, tactics,
                     first_title, several_titles, first_activity_ms, last_activity_ms, created_at_ms,
                     updated_at_ms, alert_count, device_count, user_count, mailbox_count, opened_by)
                     VALUES ('i1', 1, 'T', 3, 3, 'active', '[\"agent\"]', '[]', 'T', 0, 10, 20, 30, 30, 1, 1, 1, 0,
                             '{kept}');
                 INSERT INTO incident_alerts (alert_rowid, incident, reason, linked_by, linked_at_ms)
                     VALUES (7, 1, 'first alert', 'correlation', 40);"
            ))
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let stored: Vec<(i64, String, i64)> = store
            .conn
            .prepare("SELECT rowid, typeof(id), length(id) FROM alerts ORDER BY rowid")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            stored,
            vec![(7, "blob".into(), 16), (8, "text".into(), 12), (9, "blob".into(), 16)]
        );
        let (fold_type, declared): (String, String) = store
            .conn
            .query_row(
                "SELECT (SELECT typeof(alert_id) FROM alert_folds),
                        (SELECT type FROM pragma_table_info('alerts') WHERE name = 'id')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((fold_type.as_str(), declared.as_str()), ("blob", "BLOB"));
        for (id, rowid) in [(&kept, 7), (&folded, 7), (&"made-by-hand".to_string(), 8), (&feed, 9)] {
            let alert = store.get_alert(id).unwrap().unwrap();
            assert_eq!(alert.rowid, rowid, "{id}");
        }
        let alert = store.get_alert(&kept).unwrap().unwrap();
        assert_eq!(
            (alert.id.as_str(), alert.count, alert.folded_alerts),
            (kept.as_str(), 2, 1)
        );
        for missing in [
            kept.to_lowercase(),
            "not an id".to_string(),
            String::new(),
            "Z".repeat(26),
        ] {
            assert!(store.get_alert(&missing).unwrap().is_none(), "{missing}");
        }
        assert_eq!(
            store.incident_alerts_of(&kept).unwrap(),
            ("i1".to_string(), "first alert".to_string())
        );
        let listed: Vec<String> = store
            .list_alerts(&crate::store::AlertFilter {
                device_id: None,
                min_severity: None,
                rule_id: None,
                since_ms: None,
                until_ms: None,
                before_rowid: None,
                limit: 10,
            })
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(listed, vec![feed.clone(), "made-by-hand".to_string(), kept.clone()]);
        let (entities, dangling): (i64, i64) = store
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM alert_entities WHERE alert_rowid = 7),
                        (SELECT COUNT(*) FROM pragma_foreign_key_check)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((entities, dangling), (1, 0));
        let indexes: Vec<String> = store
            .conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('alerts', 'alert_folds')
                 AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            indexes,
            vec!["alert_folds_by_row", "alerts_by_device", "alerts_by_device_time"]
        );
    }

    /// The engine's load finds open incidents through the index by last activity
    /// (there is no index by status: every correlation step would move its entries).
    #[test]
    fn open_incidents_are_found_by_last_activity() {
        let plan = plan(crate::store::sqlite::incidents::OPEN_INCIDENTS, [0]);
        assert!(plan.iter().any(|p| p.contains("incidents_by_last")), "{plan:?}");
    }

    /// A database made before migration 7 keeps its alerts, their rowids and
    /// their entities when the alerts table is rebuilt.
    #[test]
    fn rebuilding_alerts_keeps_rows_and_entities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 6;
                 INSERT INTO devices (id, hostname, signing_key, cert_sha256, enrolled_at_ms)
                     VALUES ('d1', 'laptop', x'00', x'01', 1);
                 INSERT INTO alerts (rowid, id, device_id, seq, observed_at_ms, last_observed_at_ms, received_at_ms,
                     rule_id, rule_title, rule_author, severity, techniques, tactics, count, entities, matched,
                     signed_payload, signature)
                     VALUES (7, 'a1', 'd1', 1, 10, 10, 11, 'r', 'R', 'me', 3, '[]', '[]', 1, '[]', '{}', x'02', x'03');
                 INSERT INTO alert_entities (alert_rowid, kind, value) VALUES (7, 'device', 'laptop');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let alert = store.get_alert("a1").unwrap().unwrap();
        assert_eq!((alert.rowid, alert.device_id.as_deref()), (7, Some("d1")));
        let (kind, fk): (String, i64) = store
            .conn
            .query_row(
                "SELECT kind, (SELECT COUNT(*) FROM pragma_foreign_key_check) FROM alert_entities WHERE alert_rowid = 7",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((kind.as_str(), fk), ("device", 0));
    }
}

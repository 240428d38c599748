// The incident page: summary with the whole incident's totals, the attack story
// (graph of the current page of alerts with a play control, and those alerts as a
// timeline), tabs (alerts paged by time, assets and evidence of the whole incident,
// the process tree, activity), editing and comments. Re-fetched every 3 s (the page
// being looked at); the graph is redrawn only when the page's alerts change.

import {
  session, api, can, $, $$, esc, time, shortTime, ago, sev, pills, poll, toast, KILL_CHAIN, entityLabel, proposeAction,
  techniqueLabels, tacticLabels,
} from "./util.js";
import { drawGraph } from "./graph.js";
import { renderActions, resultWords } from "./views.js";
import { linkEntity, entityPage } from "./entity.js";

const SEVERITY_ORDER = ["critical", "high", "medium", "low", "informational"];
const CLASSIFICATIONS = ["", "true_positive", "informational_expected_activity", "false_positive"];
const TABS = [["alerts", "Alerts"], ["assets", "Assets"], ["evidence", "Evidence and response"], ["tree", "Process tree"], ["activity", "Activity log"]];
/** Alerts in one page of the alert list and the graph. */
const PAGE = 200;
/** A whole play of the story graph takes this long at any size. */
const PLAY_MS = 4000;
const num = (n) => Number(n || 0).toLocaleString("en-US");

/** "×40, last seen 10:02:11" for an alert that stands for several detections. */
export function folded(a) {
  return a.count > 1 ? `<span class="fold" title="${esc(a.count)} detections folded into this alert">×${esc(num(a.count))}, last seen ${esc(time(a.last_observed_at_ms))}</span>` : "";
}

function summary(inc, scope, totals) {
  const on = new Set(inc.tactics.map((t) => t.id));
  const known = new Set(KILL_CHAIN.map(([id]) => id));
  const other = inc.tactics.filter((t) => !known.has(t.id));
  const count = (k, label) => (scope[k] ? `<span><span class="k">${label}</span>${esc(num(scope[k]))}</span>` : "");
  return `<h2 id="incident-title">${sev(inc.severity)} ${esc(inc.title)} <span class="muted small mono">${esc(inc.id)}</span></h2>
    <div class="summary"><span class="st-${esc(inc.status)}" id="incident-status">${esc(inc.status.replace("_", " "))}</span>
      <span><span class="k">assignee</span>${esc(inc.assignee || "unassigned")}</span>
      <span><span class="k">classification</span>${esc((inc.classification || "none").replaceAll("_", " "))}${inc.determination ? " · " + esc(inc.determination) : ""}</span>
      <span><span class="k">tags</span>${pills(inc.tags) || "—"}</span><span><span class="k">sources</span>${pills(inc.sources)}</span>
      <span><span class="k">first</span>${esc(time(inc.first_activity_ms))}</span><span><span class="k">last</span>${esc(time(inc.last_activity_ms))}</span></div>
    <div class="killchain">${KILL_CHAIN.map(([id, name]) => `<span class="${on.has(id) ? "on" : ""}" title="${id}">${esc(name)}</span>`).join("")}</div>
    ${other.length ? `<div>${pills(other.map((t) => t.name))}</div>` : ""}
    <div class="summary" id="incident-totals"><span><span class="k">alerts</span>${esc(num(totals.alerts))}</span>
      ${totals.events > totals.alerts ? `<span><span class="k">detections</span>${esc(num(totals.events))}</span>` : ""}
      ${SEVERITY_ORDER.filter((k) => totals.by_severity[k]).map((k) => `<span>${sev(k)} ${esc(num(totals.by_severity[k]))}</span>`).join("")}
      ${count("devices", "devices")}${count("users", "users")}${count("mailboxes", "mailboxes")}
      ${count("processes", "processes")}${count("files", "files")}${count("ips", "IPs")}${count("domains", "domains")}${count("urls", "URLs")}</div>`;
}

function entityText(e) {
  const v = e.value;
  switch (v.kind) {
    case "file": return v.path + (v.sha256 ? " sha256:" + v.sha256.slice(0, 12) + "…" : "");
    case "process": return v.exe + " pid " + v.pid + (v.cmdline ? " · " + v.cmdline : "");
    default: return entityLabel(v);
  }
}

/** Device (id, hostname) an entity's action would target: the first device of its alerts. */
function deviceOf(detail, e) {
  if (e.kind === "device") {
    const d = detail.devices.find((d) => d.hostname.toLowerCase() === String(e.value.hostname).toLowerCase());
    if (d) return d;
  }
  const dev = (e.device_ids || [])[0];
  return dev ? detail.devices.find((d) => d.id === dev) || { id: dev, hostname: dev } : null;
}

/** An entity list: "page" (the entities of the page's alerts, in the graph) or "whole" (the incident's). */
const listOf = (detail, list) => (list === "page" ? detail.page_entities : detail.entities);

/** The actions an entity offers: [label, action JSON, description]. */
function entityActions(e) {
  const v = e.value;
  switch (v.kind) {
    case "device": return [["Isolate", { kind: "isolate", allow: [] }, "isolate the device from the network"],
      ["Collect package", { kind: "collect_package" }, "collect an investigation package"]];
    case "file": return v.sha256 ? [["Quarantine", { kind: "quarantine_file", path: v.path, sha256: v.sha256 }, "quarantine " + v.path]] : [];
    case "process": return [["Kill", { kind: "kill_process", pid: v.pid, start_time_ms: v.start_time_ms, exe: v.exe, tree: false }, "kill " + v.exe + " (pid " + v.pid + ")"]];
    default: return [];
  }
}

function entityButtons(detail, i, list = "whole") {
  if (!can("analyst")) return "";
  const e = listOf(detail, list)[i];
  const dev = e && deviceOf(detail, e);
  if (!dev) return "";
  return entityActions(e).map(([label], k) => `<button class="propose" data-list="${list}" data-entity="${i}" data-k="${k}">${esc(label)}…</button>`).join(" ");
}

/** A graph entity: what the page shows of it, and the whole incident's count when listed. */
function entityPanel(detail, i) {
  const e = detail.page_entities[i];
  if (!e) return "";
  const whole = detail.entities.find((w) => w.kind === e.kind && w.key === e.key) || e;
  return `<div class="panel" id="entity-panel"><h3>${esc(e.kind)}: ${esc(entityLabel(e.value))}</h3>
    <div class="kv"><div>Value</div><div class="mono">${esc(entityText(e))}</div><div>Verdict</div><div>${esc(whole.verdict)}</div>
    <div>Remediation</div><div>${esc(whole.remediation || "none")}</div><div>Roles</div><div>${pills(whole.roles)}</div>
    <div>Alerts</div><div>${esc(num(e.alert_ids.length))} on this page${whole !== e ? ` · ${esc(num(whole.alert_count))} in the incident` : ""}</div>
    <div>Seen</div><div>${esc(time(whole.first_seen_ms))} – ${esc(time(whole.last_seen_ms))}</div>
    ${entityPage(e.value) ? `<div>Page</div><div><a id="entity-panel-page" href="${esc(entityPage(e.value))}">everything about this ${esc(e.kind)}</a></div>` : ""}</div>
    <div class="form-row">${entityButtons(detail, i, "page")}</div></div>`;
}

/** The alerts grouped with the one shown in the graph: their count, time span and links. */
function groupNote(group) {
  if (!group || group.length < 2) return "";
  const first = group[0].observed_at_ms;
  const last = group[group.length - 1].observed_at_ms;
  return `<p id="group-note">One of ${esc(num(group.length))} alerts of this rule on the same entity in the graph, ${esc(time(first))} – ${esc(shortTime(last))}:
    ${group.slice(0, 12).map((g) => `<a href="#/alert/${esc(g.id)}">${esc(shortTime(g.observed_at_ms))}</a>`).join(", ")}${group.length > 12 ? ` and ${esc(num(group.length - 12))} more (alerts tab)` : ""}.</p>`;
}

function alertPanel(detail, id, group) {
  const link = detail.alerts.find((l) => l.alert.id === id);
  if (!link) return "";
  const a = link.alert;
  return `<div class="panel"><h3>${sev(a.severity)} <a href="#/alert/${esc(a.id)}">${esc(a.rule.title)}</a></h3><div class="kv">
    <div>Observed</div><div>${esc(time(a.observed_at_ms))} ${folded(a)}</div><div>Rule</div><div>${esc(a.rule.id)} <span class="muted">by ${esc(a.rule.author)}</span></div>
    <div>ATT&amp;CK</div><div>${pills(tacticLabels(a.rule))}${pills(techniqueLabels(a.rule))}</div><div>Source</div><div>${esc(a.source)}</div>
    <div>Linked</div><div>${esc(link.reason)} <span class="muted">(${esc(link.linked_by)})</span></div>
    <div>Entities</div><div>${a.entities.map((e) => linkEntity(e, esc(e.kind + " " + entityLabel(e)))).join("<br>")}</div></div>
    ${groupNote(group)}${can("analyst") ? moveForm(a.id) : ""}</div>`;
}

/** Moving an alert out: to another incident by id, or (id left empty) to a new one. */
function moveForm(alertId) {
  return `<form class="move-alert" data-alert="${esc(alertId)}"><h3>Move this alert</h3>
    <div class="form-row"><label>To incident</label><input type="text" name="to" size="28" placeholder="empty: a new incident"></div>
    <div class="form-row"><label>Reason</label><input type="text" name="reason" size="28"></div>
    <div class="form-row"><button class="primary">Move</button></div></form>`;
}

/** Merging other incidents into this one (the older survives either way). */
function mergeForm() {
  return `<form id="incident-merge"><h3>Merge</h3>
    <div class="form-row"><label>Incidents</label><input type="text" name="from" size="34" placeholder="ids to merge into this one, comma separated"></div>
    <div class="form-row"><button class="primary">Merge into this one</button></div></form>`;
}

/** "showing 1–200 of 100,000" for the page in view (`first` is its offset in the range). */
function pageText(detail, first) {
  const p = detail.alerts_page;
  if (!p.total) return "no alerts in this range";
  const from = first + 1;
  const to = first + detail.alerts.length;
  return `showing ${num(from)}–${num(to)} of ${num(p.total)}${p.total !== detail.totals.alerts ? ` in this range (${num(detail.totals.alerts)} in the incident)` : ""}, ${p.order} first`;
}

const toLocalInput = (ms) => (ms == null ? "" : new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 16));

/** The pager: order, time range, newer/older pages. */
function pager(detail) {
  const p = detail.alerts_page;
  const view = detail.view;
  return `<form id="alerts-pager" class="form-row pager"><span id="alerts-showing" class="muted">${esc(pageText(detail, view.first))}</span>
    <select name="order">${["newest", "oldest"].map((o) => `<option value="${o}"${p.order === o ? " selected" : ""}>${o} first</option>`).join("")}</select>
    <label>from</label><input type="datetime-local" name="since" value="${esc(toLocalInput(view.since_ms))}">
    <label>to</label><input type="datetime-local" name="until" value="${esc(toLocalInput(view.until_ms))}">
    <button type="submit">Apply</button>
    <button type="button" id="alerts-prev"${view.stack.length ? "" : " disabled"}>◀ Previous ${esc(PAGE)}</button>
    <button type="button" id="alerts-next"${p.next_cursor ? "" : " disabled"}>Next ${esc(PAGE)} ▶</button></form>`;
}

function alertsTab(detail) {
  const devices = new Map(detail.devices.map((d) => [d.id, d.hostname]));
  return `${pager(detail)}<table id="incident-alerts"><thead><tr><th>Observed</th><th>Severity</th><th>Rule</th><th>Source</th><th>Device</th><th>Entities</th><th>Why linked</th></tr></thead><tbody>
    ${detail.alerts.map(({ alert: a, reason, linked_by }) => `<tr data-alert="${esc(a.id)}"><td>${esc(time(a.observed_at_ms))}<div class="small">${folded(a)}</div></td><td>${sev(a.severity)}</td>
      <td><a href="#/alert/${esc(a.id)}">${esc(a.rule.title)}</a><div class="muted small">${esc(tacticLabels(a.rule).join(", "))}${a.rule.techniques?.length ? " · " : ""}${esc(techniqueLabels(a.rule).join(", "))}</div></td>
      <td>${esc(a.source)}</td><td>${esc(a.device_id ? devices.get(a.device_id) || a.device_id : "—")}</td>
      <td class="small">${a.entities.slice(0, 4).map((e) => linkEntity(e, esc(e.kind + " " + entityLabel(e)))).join("<br>")}${a.entities.length > 4 ? " …" : ""}</td>
      <td>${esc(reason)} <span class="muted small">${esc(linked_by)}</span></td></tr>`).join("")}</tbody></table>`;
}

/** "showing 100 of 4,512 files" when the incident has more of a kind than are listed. */
function shownOf(detail, kind, label) {
  const total = (detail.entity_totals || {})[kind] || 0;
  const shown = detail.entities.filter((e) => e.kind === kind).length;
  return total > shown ? `<p class="muted small">The ${esc(num(shown))} most alerted of ${esc(num(total))} ${esc(label)}.</p>` : "";
}

function assetsTab(detail) {
  const of = (kind) => detail.entities.map((e, i) => [e, i]).filter(([e]) => e.kind === kind);
  const isolate = (d) => {
    if (!can("analyst")) return "";
    const i = detail.entities.findIndex((e) => e.kind === "device" && e.value.hostname === d.hostname);
    return i >= 0 ? entityButtons(detail, i) : `<button class="propose-device" data-device="${esc(d.id)}">Isolate…</button>`;
  };
  return `<h3>Devices</h3><table id="incident-devices"><thead><tr><th>Host</th><th>Online</th><th>Isolation</th><th>Last seen</th><th></th></tr></thead><tbody>
    ${detail.devices.map((d) => `<tr><td><a href="#/device/${esc(d.id)}">${esc(d.hostname)}</a></td><td>${d.online ? `<span class="ok">online</span>` : "offline"}</td>
      <td>${esc(d.isolation)}</td><td>${esc(ago(d.last_seen_ms))}</td><td>${isolate(d)}</td></tr>`).join("")}</tbody></table>
    ${devicePager(detail)}
    <h3>Users</h3>${shownOf(detail, "user", "users")}${of("user").map(([e]) => `<div>${linkEntity(e.value, esc(entityLabel(e.value)))} <span class="muted">${esc(num(e.alert_count))} alerts · ${esc(e.verdict)}</span></div>`).join("") || `<p class="muted">None.</p>`}
    <h3>Mailboxes</h3>${shownOf(detail, "mailbox", "mailboxes")}${of("mailbox").map(([e]) => `<div class="asset-mailbox">${linkEntity(e.value, esc(entityLabel(e.value)))} <span class="muted">${esc(e.roles.join(", "))} · ${esc(num(e.alert_count))} alerts · ${esc(e.verdict)}</span></div>`).join("") || `<p class="muted">None.</p>`}`;
}

/** Devices listed a page at a time (the API gives 200 from an offset, first seen first). */
const DEVICE_PAGE = 200;

/** "Devices 201–400 of 1,000" and buttons to page through them, when they are more than a page. */
function devicePager(detail) {
  const at = detail.device_offset || 0;
  const n = detail.devices_total || 0;
  if (n <= detail.devices.length && at === 0) return "";
  // Until the whole incident's evidence is in, the list holds the alert page's devices.
  if (detail.evidence !== "whole") return `<p class="muted small">${esc(num(detail.devices.length))} of ${esc(num(n))} devices listed; reading the rest…</p>`;
  return `<div class="form-row" id="device-pager"><span id="devices-showing">Devices ${esc(num(Math.min(at + 1, n)))}–${esc(num(at + detail.devices.length))} of ${esc(num(n))}, first seen first</span>
    <button type="button" class="dev-page" data-offset="${Math.max(0, at - DEVICE_PAGE)}"${at > 0 ? "" : " disabled"}>◀ Previous ${DEVICE_PAGE}</button>
    <button type="button" class="dev-page dev-next" data-offset="${at + DEVICE_PAGE}"${at + detail.devices.length < n ? "" : " disabled"}>Next ${DEVICE_PAGE} ▶</button></div>`;
}

/** Entities of one kind listed a page at a time (the API gives 100 of a kind). */
const EVIDENCE_PAGE = 100;

/** Per kind with more entities than one page: which are shown, and buttons to page through them. */
function evidencePagers(detail) {
  const offsets = detail.entity_offsets || {};
  return Object.entries(detail.entity_totals || {}).filter(([k, n]) => n > EVIDENCE_PAGE || offsets[k]).map(([k, n]) => {
    const at = offsets[k] || 0;
    const shown = detail.entities.filter((e) => e.kind === k).length;
    return `<div class="form-row ev-pager" data-kind="${esc(k)}"><span class="ev-showing">${esc(k)}: ${esc(num(at + 1))}–${esc(num(at + shown))} of ${esc(num(n))}, most alerted first</span>
      <button type="button" class="ev-page" data-kind="${esc(k)}" data-offset="${Math.max(0, at - EVIDENCE_PAGE)}"${at > 0 ? "" : " disabled"}>◀ Previous ${EVIDENCE_PAGE}</button>
      <button type="button" class="ev-page ev-next" data-kind="${esc(k)}" data-offset="${at + EVIDENCE_PAGE}"${at + shown < n ? "" : " disabled"}>Next ${EVIDENCE_PAGE} ▶</button></div>`;
  }).join("");
}

function evidenceTab(detail) {
  if (detail.evidence === "deferred") {
    return `<p class="muted">Reading the evidence of all ${esc(num(detail.totals.alerts))} alerts…</p><h3>Actions</h3><div id="incident-actions"></div>`;
  }
  return `<h3>Entities</h3><p class="muted small">Over all ${esc(num(detail.totals.alerts))} alerts of the incident.</p>${evidencePagers(detail)}<table id="incident-entities"><thead><tr><th>Kind</th><th>Value</th><th>Verdict</th><th>Remediation</th><th>Alerts</th><th></th></tr></thead><tbody>
    ${detail.entities.map((e, i) => `<tr data-entity="${i}"><td>${esc(e.kind)}</td><td class="mono small">${linkEntity(e.value, esc(entityText(e)))}</td>
      <td>${esc(e.verdict)}</td><td>${esc(e.remediation)}</td><td>${esc(num(e.alert_count))}</td><td>${entityButtons(detail, i)}</td></tr>`).join("")}</tbody></table>
    <h3>Actions</h3><div id="incident-actions"></div>`;
}

/** One process of the tree and its children, as nested lists. */
function treeNode(n) {
  const fold = n.folded.count ? `<div class="muted small" title="${esc(n.folded.exes.join(" › "))}">… ${esc(n.folded.count)} more</div>` : "";
  const who = [n.user, n.login_user && n.login_user !== n.user ? `login ${n.login_user}` : ""].filter(Boolean).join(", ");
  const alerts = n.alert_count ? `<div class="small">${n.alerts.map((a) => `${sev(a.severity)} ${esc(a.title)}`).join(" · ")}${n.alert_count > n.alerts.length ? ` <span class="muted">and ${esc(num(n.alert_count - n.alerts.length))} more</span>` : ""}</div>` : "";
  return `<li>${fold}<div class="proc${n.alert_count ? " alerted" : ""}"><span class="mono">${esc(n.exe.split("/").pop() || n.exe)}</span>
    <span class="muted small">pid ${esc(n.pid)} · ${esc(shortTime(n.start_time_ms))}${who ? " · " + esc(who) : ""}</span>
    <div class="mono small muted">${esc(n.cmdline)}</div>${alerts}</div>
    ${n.children.length || n.children_not_shown ? `<ul>${n.children.map(treeNode).join("")}${n.children_not_shown ? `<li class="muted small">${esc(n.children_not_shown)} more not shown</li>` : ""}</ul>` : ""}</li>`;
}

function treeTab(tree) {
  if (!tree) return `<p class="muted">Loading…</p>`;
  if (!tree.trees.length) return `<p class="muted">No alert of this incident names a process.</p>`;
  const notes = [];
  if (tree.alerted_processes > tree.alerted_processes_shown) notes.push(`the first ${num(tree.alerted_processes_shown)} of ${num(tree.alerted_processes)} alerted processes`);
  if (tree.truncated) notes.push(`${num(tree.nodes_shown)} of ${num(tree.nodes)} processes drawn`);
  return `<p class="muted small">Processes of all alerts, merged by pid and start time; quiet ancestors folded; alerted processes marked.${notes.length ? " Showing " + esc(notes.join("; ")) + "." : ""}</p>
    <ul class="ptree" id="process-tree">${tree.trees.map(treeNode).join("")}</ul>`;
}

/** Ids in an activity entry, in words: a comment's text, an alert by its rule's
 *  title and an incident by its title (the API names those the log refers to, the
 *  page's alerts name themselves), each linked to its page; this incident as such. */
function activityWords(detail, text) {
  const comments = new Map((detail.comments || []).map((c) => [c.id, c]));
  const alerts = new Map((detail.alerts || []).map((l) => [l.alert.id, l.alert.rule.title]));
  const names = detail.activity_names || {};
  return esc(text).replace(/\b(?:(comment|alert|incident) )?([0-7][0-9A-HJKMNP-TV-Z]{25})\b/g, (whole, what, id) => {
    if (what === "comment") return comments.has(id) ? `comment “${esc(comments.get(id).text)}”` : whole;
    if (id === detail.incident.id) return "this incident";
    const n = names[id];
    const alert = alerts.get(id) || (n?.kind === "alert" ? n.title : null);
    if (alert) return `alert <a href="#/alert/${esc(id)}">${esc(alert)}</a>`;
    if (n?.kind === "incident") return `incident <a href="#/incident/${esc(id)}">${esc(n.title)}</a>`;
    if (what === "alert") return `alert <a href="#/alert/${esc(id)}">${esc(id.slice(0, 10))}…</a>`;
    return `${what ? "incident " : ""}<a href="#/incident/${esc(id)}">${esc(id.slice(0, 10))}…</a>`;
  });
}

/** What was done and by whom: the incident's own log with its response actions. */
function activityTab(detail) {
  const rows = detail.activity.map((a) => ({ at: a.at_ms, who: a.actor, what: esc(a.kind.replaceAll("_", " ")), detail: activityWords(detail, a.detail) }));
  // Each response action as it went: proposed, decided, carried out (by the device's agent).
  for (const x of detail.actions || []) {
    const on = `on <a href="#/device/${esc(x.device_id)}">${esc(x.device_hostname)}</a>`;
    // The summary names the device by its hostname; the link is added unless it already does.
    const named = x.summary.includes(` on ${x.device_hostname}`) ? esc(x.summary).replace(` on ${esc(x.device_hostname)}`, () => ` ${on}`) : `${esc(x.summary)} ${on}`;
    rows.push({ at: x.requested_at_ms, who: x.requested_by, what: "action proposed", detail: `${named}: ${esc(x.reason)}` });
    if (x.decided_at_ms) {
      const rejected = x.status === "rejected";
      rows.push({ at: x.decided_at_ms, who: x.decided_by || "", what: rejected ? "action rejected" : "action approved",
        detail: `${esc(x.summary)}${x.decision_comment ? ` — “${esc(x.decision_comment)}”` : ""}` });
    }
    if (x.result) {
      rows.push({ at: x.result.finished_at_ms || x.updated_at_ms, who: `agent on ${x.device_hostname}`, what: `action ${esc(x.result.outcome.replaceAll("_", " "))}`,
        detail: `<span class="result-words">${resultWords(x)}</span>` });
    } else if (x.status === "cancelled") {
      rows.push({ at: x.updated_at_ms, who: x.cancelled_by || "", what: "action cancelled", detail: esc(x.summary) });
    }
  }
  rows.sort((a, b) => a.at - b.at);
  return `<table id="activity-log"><thead><tr><th>When</th><th>Who</th><th>What</th><th>Detail</th></tr></thead><tbody>
    ${rows.map((r) => `<tr><td>${esc(time(r.at))}</td><td>${esc(r.who)}</td><td>${r.what}</td><td>${r.detail}</td></tr>`).join("")
    || `<tr><td colspan="4" class="muted">Nothing yet.</td></tr>`}</tbody></table>`;
}

function editForm(inc) {
  if (!can("analyst")) return `<p class="hint">Viewers cannot change incidents.</p>`;
  const opt = (vals, cur) => vals.map((v) => `<option value="${esc(v)}"${(cur || "") === v ? " selected" : ""}>${esc(v ? v.replaceAll("_", " ") : "—")}</option>`).join("");
  return `<form id="incident-edit">
    <div class="form-row"><label>Title</label><input type="text" name="title" size="34" value="${esc(inc.title)}"></div>
    <div class="form-row"><label>Status</label><select name="status">${opt(["active", "in_progress", "resolved"], inc.status)}</select></div>
    <div class="form-row"><label>Severity</label><select name="severity">${opt(["informational", "low", "medium", "high", "critical"], inc.severity)}</select></div>
    <div class="form-row"><label>Assignee</label><input type="text" name="assignee" value="${esc(inc.assignee || "")}"><button type="button" id="assign-me">Me</button></div>
    <div class="form-row"><label>Classification</label><select name="classification">${opt(CLASSIFICATIONS, inc.classification)}</select></div>
    <div class="form-row"><label>Determination</label><input type="text" name="determination" value="${esc(inc.determination || "")}"></div>
    <div class="form-row"><label>Tags</label><input type="text" name="tags" value="${esc(inc.tags.join(", "))}" placeholder="comma separated"></div>
    <div class="form-row"><button class="primary" id="incident-save">Save</button></div></form>`;
}

function changes(form, inc) {
  const f = new FormData(form);
  const out = {};
  const str = (k) => String(f.get(k) || "").trim();
  if (str("title") && str("title") !== inc.title) out.title = str("title");
  if (str("status") !== inc.status) out.status = str("status");
  if (str("severity") !== inc.severity) out.severity = str("severity");
  if (str("assignee") !== (inc.assignee || "")) out.assignee = str("assignee") || null;
  if (str("classification") !== (inc.classification || "")) out.classification = str("classification") || null;
  if (str("determination") !== (inc.determination || "")) out.determination = str("determination") || null;
  const tags = str("tags").split(",").map((t) => t.trim()).filter(Boolean);
  if (tags.join(",") !== inc.tags.join(",")) out.tags = tags;
  return out;
}

function comments(detail) {
  return `<div id="comments">${detail.comments.map((c) => `<div class="comment"><b>${esc(c.author)}</b> <span class="muted small">${esc(time(c.at_ms))}</span><div>${esc(c.text)}</div></div>`).join("")
    || `<p class="muted">No comments.</p>`}</div>
    ${can("analyst") ? `<form id="comment-form"><textarea id="comment-text" rows="2" cols="34" placeholder="Add a comment"></textarea><div><button class="primary">Comment</button></div></form>` : ""}`;
}

export async function incidentView(root, args, q, current) {
  const started = performance.now();
  const id = args[0];
  // The page of alerts asked for: order, time range, its cursor, the cursors of the
  // pages before it (for "previous") and its offset in the range. What is drawn is
  // the page an answer was asked for (`detail.view`): a click moves `view` on before
  // its answer arrives, and the poll's answer for the page left must not be drawn
  // under the new page's heading.
  const firstView = () => ({ order: "newest", since_ms: null, until_ms: null, cursor: null, stack: [], first: 0 });
  const view = firstView();
  const pageQuery = () => {
    const p = new URLSearchParams({ limit: String(PAGE), order: view.order });
    if (view.since_ms != null) p.set("since_ms", String(view.since_ms));
    if (view.until_ms != null) p.set("until_ms", String(view.until_ms));
    if (view.cursor) p.set("cursor", view.cursor);
    return p.toString();
  };
  // The page comes first (evidence deferred); the whole incident's entities follow
  // from `/evidence`, again only when the incident's totals change.
  let evidence = null;
  let evidenceFor = "";
  // Kinds paged past their first 100 in the evidence tab: kind → { offset, entities }.
  const kindPages = new Map();
  // Where the assets tab's device list starts (the evidence answer is asked from there).
  let deviceOffset = 0;
  const withEvidence = (d) => {
    if (!evidence) return d;
    const kinds = [...new Set(evidence.entities.map((e) => e.kind))];
    const entities = kinds.flatMap((k) => (kindPages.has(k) ? kindPages.get(k).entities : evidence.entities.filter((e) => e.kind === k)));
    Object.assign(d, { evidence: "whole", entities, entity_totals: evidence.entity_totals, scope: evidence.scope,
      devices: evidence.devices, devices_total: evidence.devices_total, device_offset: evidence.device_offset || 0,
      entity_offsets: Object.fromEntries([...kindPages].map(([k, p]) => [k, p.offset])) });
    return d;
  };
  // Answers are numbered: one for a page since left, or older than one already
  // taken, is dropped (null).
  let loadsStarted = 0;
  let loadTaken = 0;
  const load = async () => {
    const n = ++loadsStarted;
    const asked = JSON.stringify(view);
    const d = await api(`/api/v1/incidents/${encodeURIComponent(id)}?evidence=deferred&${pageQuery()}`);
    if (n < loadTaken || asked !== JSON.stringify(view)) return null;
    loadTaken = n;
    d.view = JSON.parse(asked);
    return withEvidence(d);
  };
  /** A change's answer (triage, merge): the first page, newest first, over any load still on the wire. */
  const adopt = (d) => {
    loadTaken = ++loadsStarted;
    Object.assign(view, firstView());
    d.view = firstView();
    return d;
  };
  let detail = await load();
  if (!detail) return;
  const fetched = performance.now();
  if (!current()) return;
  let tab = q.get("tab") || "alerts";
  let tree = null;
  let selected = null;
  root.innerHTML = `<section class="card" id="incident-summary"></section>
    <div class="grid2"><section class="card"><h3>Attack story</h3>
      <div class="graph-controls"><button id="play">▶ Play</button><input id="play-step" type="range" min="0" value="0" aria-label="Story step">
        <span id="play-label" class="muted small"></span><button id="graph-all">Show all</button>
        <button id="zoom-out" aria-label="Zoom out" title="Zoom out (−)">−</button><button id="zoom-in" aria-label="Zoom in" title="Zoom in (+)">+</button>
        <button id="zoom-reset" title="Fit the graph (0)">Reset view</button></div>
      <div class="muted small" id="graph-note"></div><div class="graph-wrap" id="graph-box"></div></section>
      <section class="card"><div id="side"></div><h3>Timeline</h3><div class="timeline" id="incident-timeline"></div></section></div>
    <div class="grid2"><section class="card"><div class="tabs">${TABS.map(([k, l]) => `<button data-tab="${k}">${esc(l)}</button>`).join("")}</div><div id="tab"></div></section>
      <section class="card"><h3>Triage</h3><div id="edit"></div><h3>Comments</h3><div id="comment-box"></div></section></div>`;

  let graph = null;
  let alertSig = "";
  const side = () => {
    $("#side", root).innerHTML = selected == null ? `<p class="hint">Select an entity in the graph to see its alerts and act on it.</p>`
      : selected.kind === "entity" ? entityPanel(detail, selected.i) : alertPanel(detail, selected.id, graph?.groupOf(selected.id));
    const hl = selected?.kind === "entity" ? new Set(detail.page_entities[selected.i]?.alert_ids || [])
      : new Set(selected ? selected.ids || [selected.id] : []);
    for (const el of $$("#incident-timeline .item", root)) el.classList.toggle("hl", hl.has(el.dataset.alert));
  };
  const drawStory = () => {
    const sig = detail.alerts.map((l) => l.alert.id).join() + "|" + detail.page_entities.length;
    if (sig === alertSig) return;
    alertSig = sig;
    const alerts = detail.alerts.map((l) => l.alert);
    $("#incident-timeline", root).innerHTML = alerts.map((a) => `<div class="item" data-alert="${esc(a.id)}"><span title="${esc(time(a.observed_at_ms))}">${esc(shortTime(a.observed_at_ms))}</span>
      <span>${sev(a.severity)}</span><span>${esc(a.rule.title)}</span></div>`).join("");
    const p = detail.alerts_page;
    $("#graph-note", root).textContent = p.total > detail.alerts.length
      ? `The graph shows this page of alerts (${pageText(detail, detail.view.first)}); page through them in the alerts tab.` : "";
    graph = drawGraph($("#graph-box", root), { alerts: detail.alerts, entities: detail.page_entities }, {
      onSelectEntity: (i) => { selected = i == null ? null : { kind: "entity", i }; side(); },
      onSelectAlert: (aid, ids) => { selected = { kind: "alert", id: aid, ids }; side(); },
    });
    const range = $("#play-step", root);
    range.max = String(graph.steps);
    range.value = String(graph.steps);
    $("#play-label", root).textContent = `${graph.steps} / ${graph.steps}`;
  };
  const drawTab = () => {
    $$(".tabs button", root).forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
    const box = $("#tab", root);
    box.innerHTML = tab === "assets" ? assetsTab(detail) : tab === "evidence" ? evidenceTab(detail)
      : tab === "activity" ? activityTab(detail) : tab === "tree" ? treeTab(tree) : alertsTab(detail);
    if (tab === "tree" && !tree) {
      api(`/api/v1/incidents/${encodeURIComponent(id)}/process_tree`).then((t) => {
        tree = t;
        if (current() && tab === "tree") drawTab();
      }).catch((e) => { if (tab === "tree") box.innerHTML = `<p class="error">${esc(e.message)}</p>`; });
    }
    if (tab === "evidence") renderActions($("#incident-actions", root), detail.actions, refresh);
  };
  const phases = {};
  const timed = (name, f) => { const t = performance.now(); f(); phases[name] = (phases[name] || 0) + performance.now() - t; };
  const drawAll = () => {
    timed("summary", () => { $("#incident-summary", root).innerHTML = summary(detail.incident, detail.scope, detail.totals)
      + (detail.incident.status === "redirected" && detail.incident.redirected_to
        ? `<p>Merged into <a href="#/incident/${esc(detail.incident.redirected_to)}">${esc(detail.incident.redirected_to)}</a>.</p>` : ""); });
    timed("story", drawStory);
    // Not under the hands of someone typing in the side panel (moving an alert).
    timed("side", () => { if (!$("#side", root).querySelector("form")?.contains(document.activeElement)) side(); });
    timed("tab", drawTab);
    const editing = root.contains(document.activeElement) && document.activeElement.closest("#edit, #comment-box");
    if (!editing) {
      const open = ["active", "in_progress"].includes(detail.incident.status);
      $("#edit", root).innerHTML = editForm(detail.incident) + (can("analyst") && open ? mergeForm() : "");
      $("#comment-box", root).innerHTML = comments(detail);
    }
  };
  const signature = (d) => JSON.stringify([d.incident, d.totals, d.actions, d.comments, d.activity, d.entities.length,
    d.alerts_page, d.alerts.map((l) => l.alert.id + l.alert.count)]);
  async function refresh() {
    const fresh = await load();
    if (!fresh || !current()) return;
    const before = signature(detail);
    detail = fresh;
    if (before !== signature(detail)) { tree = null; drawAll(); }
    // Awaited: the poll gives a keyboard user's focus back after this redraw too.
    await loadEvidence();
  }
  async function loadEvidence() {
    const key = JSON.stringify([detail.totals, detail.incident.updated_at_ms, detail.actions.map((a) => a.status)]);
    if (key === evidenceFor) return;
    evidenceFor = key;
    try {
      evidence = await api(`/api/v1/incidents/${encodeURIComponent(id)}/evidence${deviceOffset ? `?device_offset=${deviceOffset}` : ""}`);
    } catch (e) { evidenceFor = ""; throw e; }
    if (!current()) return;
    withEvidence(detail);
    drawAll();
    document.body.dataset.evidenceLoaded = id;
  }
  /** Shows another page of alerts (the graph, timeline and list follow it). */
  async function turn(change) {
    change();
    try {
      const page = await load();
      if (!page || !current()) return;
      detail = page;
      selected = null;
      drawAll();
    } catch (e) { toast(e.message, true); }
  }

  // Proposals from entities (graph panel, evidence and assets tabs).
  root.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.propose, button.propose-device");
    if (!b) return;
    let device;
    let action;
    let what;
    if (b.classList.contains("propose-device")) {
      device = detail.devices.find((d) => d.id === b.dataset.device);
      [action, what] = [{ kind: "isolate", allow: [] }, "isolate the device from the network"];
    } else {
      const e = listOf(detail, b.dataset.list)[Number(b.dataset.entity)];
      device = deviceOf(detail, e);
      [, action, what] = entityActions(e)[Number(b.dataset.k)];
    }
    if (!device) return;
    proposeAction({ deviceId: device.id, deviceName: device.hostname, action, incidentId: id, what }).then((v) => v && refresh());
  });
  $("#tab", root).addEventListener("click", async (ev) => {
    const devices = ev.target.closest("button.dev-page");
    if (devices) {
      const offset = Number(devices.dataset.offset);
      try {
        const r = await api(`/api/v1/incidents/${encodeURIComponent(id)}/evidence?device_offset=${offset}`);
        if (!current() || !evidence) return;
        deviceOffset = offset;
        Object.assign(evidence, { devices: r.devices, devices_total: r.devices_total, device_offset: r.device_offset });
        withEvidence(detail);
        drawTab();
        $(`#device-pager button.dev-page${offset > 0 ? ".dev-next" : ""}`, root)?.focus();
      } catch (e) { toast(e.message, true); }
      return;
    }
    const more = ev.target.closest("button.ev-page");
    if (more) {
      const { kind } = more.dataset;
      const offset = Number(more.dataset.offset);
      try {
        if (offset === 0) kindPages.delete(kind);
        else {
          const r = await api(`/api/v1/incidents/${encodeURIComponent(id)}/evidence?kind=${encodeURIComponent(kind)}&offset=${offset}`);
          if (!current()) return;
          kindPages.set(kind, { offset, entities: r.entities });
        }
        withEvidence(detail);
        drawTab();
        $(`.ev-pager[data-kind="${CSS.escape(kind)}"] button.ev-page${offset > 0 ? ".ev-next" : ""}`, root)?.focus();
      } catch (e) { toast(e.message, true); }
      return;
    }
    // From the page on screen, not from one asked for and not yet drawn.
    const shown = detail.view;
    if (ev.target.id === "alerts-next" && detail.alerts_page.next_cursor) {
      turn(() => Object.assign(view, shown, { stack: [...shown.stack, shown.cursor], first: shown.first + detail.alerts.length, cursor: detail.alerts_page.next_cursor }));
    } else if (ev.target.id === "alerts-prev" && shown.stack.length) {
      turn(() => Object.assign(view, shown, { stack: shown.stack.slice(0, -1), cursor: shown.stack.at(-1), first: Math.max(0, shown.first - PAGE) }));
    }
  });
  $("#tab", root).addEventListener("submit", (ev) => {
    if (ev.target.id !== "alerts-pager") return;
    ev.preventDefault();
    const f = new FormData(ev.target);
    const at = (k) => { const v = String(f.get(k) || ""); return v ? new Date(v).getTime() : null; };
    turn(() => {
      Object.assign(view, { order: String(f.get("order")) === "oldest" ? "oldest" : "newest", since_ms: at("since"), until_ms: at("until"), cursor: null, stack: [], first: 0 });
    });
  });
  $(".tabs", root).addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-tab]");
    if (!b) return;
    tab = b.dataset.tab;
    history.replaceState(null, "", `#/incident/${encodeURIComponent(id)}?tab=${tab}`);
    drawTab();
  });
  $("#edit", root).addEventListener("click", (ev) => {
    if (ev.target.id === "assign-me") $("#incident-edit [name=assignee]", root).value = session.me.name;
  });
  $("#edit", root).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (ev.target.id === "incident-merge") {
      const from = String(new FormData(ev.target).get("from") || "").split(",").map((t) => t.trim()).filter(Boolean);
      if (!from.length) { toast("Name the incidents to merge", true); return; }
      try {
        detail = adopt(await api(`/api/v1/incidents/${encodeURIComponent(id)}/merge`, { method: "POST", body: { from } }));
        document.activeElement?.blur();
        drawAll();
        toast(`Merged ${from.length} incident${from.length > 1 ? "s" : ""}`);
      } catch (e) { toast(e.message, true); }
      return;
    }
    const body = changes(ev.target, detail.incident);
    if (!Object.keys(body).length) { toast("Nothing changed"); return; }
    try {
      detail = adopt(await api(`/api/v1/incidents/${encodeURIComponent(id)}`, { method: "PATCH", body }));
      document.activeElement?.blur();
      drawAll();
      toast("Saved");
    } catch (e) { toast(e.message, true); }
  });
  $("#side", root).addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.move-alert");
    if (!form) return;
    ev.preventDefault();
    const f = new FormData(form);
    const to = String(f.get("to") || "").trim() || null;
    const reason = String(f.get("reason") || "").trim();
    try {
      const moved = await api(`/api/v1/incidents/${encodeURIComponent(id)}/alerts/${encodeURIComponent(form.dataset.alert)}/move`,
        { method: "POST", body: { to, reason } });
      selected = null;
      await refresh();
      side();
      toast(`Moved to ${moved.incident.id}`);
    } catch (e) { toast(e.message, true); }
  });
  $("#comment-box", root).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("#comment-text", root).value.trim();
    if (!text) return;
    try {
      await api(`/api/v1/incidents/${encodeURIComponent(id)}/comments`, { method: "POST", body: { text } });
      document.activeElement?.blur();
      $("#comment-text", root).value = "";
      await refresh();
      $("#comment-box", root).innerHTML = comments(detail);
    } catch (e) { toast(e.message, true); }
  });

  // Play: reveal the story's nodes in time order in PLAY_MS whatever their number
  // (several steps a frame when there are many).
  let player = null;
  const show = (k) => { graph.step(k); $("#play-step", root).value = String(k); $("#play-label", root).textContent = `${k} / ${graph.steps}`; };
  const stop = () => { clearInterval(player); player = null; $("#play", root).textContent = "▶ Play"; };
  $("#play", root).addEventListener("click", () => {
    if (player) { stop(); return; }
    const from = Number($("#play-step", root).value) >= graph.steps ? 0 : Number($("#play-step", root).value);
    $("#play", root).textContent = "❚❚ Pause";
    const began = performance.now();
    const span = PLAY_MS * (graph.steps - from) / Math.max(graph.steps, 1);
    show(from);
    player = setInterval(() => {
      if (!current()) { clearInterval(player); return; }
      const k = Math.min(graph.steps, from + Math.ceil((graph.steps - from) * (performance.now() - began) / Math.max(span, 1)));
      show(k);
      if (k >= graph.steps) {
        stop();
        if (window.wardPerf) window.wardPerf.playMs = performance.now() - began;
      }
    }, Math.max(40, Math.min(400, span / Math.max(graph.steps - from, 1))));
  });
  $("#zoom-in", root).addEventListener("click", () => graph.zoom(1.25));
  $("#zoom-out", root).addEventListener("click", () => graph.zoom(0.8));
  $("#zoom-reset", root).addEventListener("click", () => graph.reset());
  $("#play-step", root).addEventListener("input", (ev) => { if (player) stop(); show(Number(ev.target.value)); });
  $("#graph-all", root).addEventListener("click", () => { if (player) stop(); show(graph.steps); });

  drawAll();
  // Reported for the browser test: from navigation to the graph on screen.
  const built = performance.now();
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const drawn = performance.now();
  phases.layoutAndPaint = drawn - built;
  window.wardPerf = { incident: id, alerts: detail.alerts.length, totalAlerts: detail.totals.alerts, entities: detail.page_entities.length,
    phases, fetchMs: fetched - started, renderMs: drawn - fetched, totalMs: drawn - started };
  document.body.dataset.incidentRendered = id;
  loadEvidence().then(() => { window.wardPerf.evidenceMs = performance.now() - started; }).catch((e) => toast(e.message, true));
  poll(refresh, 3000);
}

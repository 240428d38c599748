// The alert page (#/alert/<id>): what fired and why it matters (the rule's
// description, references, false positives, level, author, license and source, as
// the collector keeps them per rule version), ATT&CK with names, the incident it is
// in and why, its entities and matched fields, the process ancestry the agent sent,
// where the process ran (terminal, login, container), what was folded into it, and its signed record checked again by the collector.

import { api, can, $, esc, time, sev, pills, toast, entityLabel, techniqueLabels, tacticLabels, webUrl } from "./util.js";
import { linkEntity } from "./entity.js";

const link = (u, text) => (webUrl(u) ? `<a href="${esc(webUrl(u))}" rel="noopener noreferrer" target="_blank">${esc(text ?? u)}</a>` : esc(text ?? u));

function ruleCard(a) {
  const rc = a.rule_context;
  const c = rc.context;
  const note = rc.note ? `<p class="hint" id="alert-rule-note">${esc(rc.note)}</p>` : "";
  if (!c) {
    return `<h3>Rule</h3>${note}<div class="kv"><div>Title</div><div>${esc(a.rule.title)}</div><div>Id</div><div class="mono">${esc(a.rule.id)}</div>
      <div>Level</div><div>${sev(a.severity)}</div><div>Author</div><div>${esc(a.rule.author || "not stated")}</div></div>`;
  }
  const list = (xs, f) => (xs.length ? `<ul>${xs.map((x) => `<li>${f(x)}</li>`).join("")}</ul>` : `<span class="muted">none given</span>`);
  const origin = c.origin === "pushed" ? `pushed in rule pack ${esc(c.pack_version)}` : c.origin === "sigmahq" ? "SigmaHQ (shipped)" : "Ward built-in";
  return `<h3>Rule</h3>${note}<p id="alert-description">${esc(c.description) || `<span class="muted">No description.</span>`}</p>
    <div class="kv"><div>Level</div><div id="alert-level">${sev(c.level)}</div>
    <div>Id</div><div class="mono">${esc(c.rule_id)}</div>
    <div>Author</div><div id="alert-author">${esc(c.author || "not stated")}</div>
    <div>License</div><div id="alert-license">${esc(c.license)}</div>
    <div>Source</div><div id="alert-source">${origin} · <span class="mono">${esc(c.file)}</span>${c.source_url ? ` · ${link(c.source_url, "view the rule")}` : ""}</div>
    <div>References</div><div id="alert-references">${list(c.references, (r) => link(r))}</div>
    <div>False positives</div><div id="alert-false-positives">${list(c.false_positives, esc)}</div>
    ${c.notes.length ? `<div>Limits</div><div class="warn">${c.notes.map(esc).join("; ")}</div>` : ""}</div>`;
}

function attackCard(a) {
  const rule = a.rule_context.context ? { attack: a.rule_context.context.attack } : a.rule;
  return `<h3>ATT&amp;CK</h3><div id="alert-attack">${pills(tacticLabels(rule))}</div><div id="alert-techniques">${pills(techniqueLabels(rule)) || `<span class="muted">none</span>`}</div>`;
}

function incidentCard(a) {
  if (!a.incidents.length) return `<h3>Incident</h3><p class="muted">Not in an incident (yet).</p>`;
  return `<h3>Incident</h3>${a.incidents.map((i) => `<div id="alert-incident">${sev(i.severity)} <a href="#/incident/${esc(i.redirected_to || i.id)}">${esc(i.title)}</a>
    <span class="muted small">${esc(i.status.replace("_", " "))}</span>
    <div class="kv"><div>Why linked</div><div>${esc(i.reason)}</div><div>Linked by</div><div>${esc(i.linked_by)} · ${esc(time(i.linked_at_ms))}</div></div></div>`).join("")}
    ${can("analyst") && a.incidents.length ? moveForm(a.incidents[0]) : ""}`;
}

/** Moving the alert out of its incident: to another by id, or (left empty) to a new one. */
function moveForm(i) {
  return `<form id="alert-move" data-incident="${esc(i.redirected_to || i.id)}"><div class="form-row"><label for="alert-move-to">Move to</label>
    <input type="text" id="alert-move-to" name="to" size="26" placeholder="incident id; empty: a new incident"></div>
    <div class="form-row"><label for="alert-move-reason">Reason</label><input type="text" id="alert-move-reason" name="reason" size="26">
    <button class="primary">Move</button></div></form>`;
}

function entityDetail(e) {
  switch (e.kind) {
    case "process": return `${e.exe} pid ${e.pid} ppid ${e.ppid}${e.cmdline ? " · " + e.cmdline : ""}`;
    case "file": return e.path + (e.sha256 ? " sha256:" + e.sha256 : "");
    case "lineage": return `${(e.process || {}).exe} pid ${(e.process || {}).pid}, ${(e.ancestors || []).length} ancestors`;
    case "process_context": return contextLine(e);
    default: return entityLabel(e);
  }
}

function entitiesCard(a) {
  const matched = Object.entries(a.matched || {});
  return `<h3>Entities</h3><div class="kvw" id="alert-entities">${a.entities.map((e) => `<div>${esc(e.role || e.kind)}</div><div class="mono small">${linkEntity(e, esc(entityDetail(e)))}</div>`).join("")}</div>
    <h3>Matched fields</h3>${matched.length ? `<div class="kvw" id="alert-matched">${matched.map(([k, v]) => `<div class="mono">${esc(k)}</div><div class="mono small">${esc(v)}</div>`).join("")}</div>` : `<p class="muted">None recorded.</p>`}`;
}

function node(n, alerted) {
  const who = [n.user, n.login_user && n.login_user !== n.user ? `login ${n.login_user}` : ""].filter(Boolean).join(", ");
  return `<div class="proc${alerted ? " alerted" : ""}"><span class="mono">${esc(String(n.exe || "?").split("/").pop() || n.exe)}</span>
    <span class="muted small">pid ${esc(n.pid)}${n.ppid != null ? " · ppid " + esc(n.ppid) : ""}${n.start_time_ms ? " · " + esc(time(n.start_time_ms)) : ""}${who ? " · " + esc(who) : ""}</span>
    <div class="mono small muted">${esc(n.cmdline || "")}</div></div>`;
}

/** Where a process ran and for whom, in one line (the entities list). */
function contextLine(e) {
  return [e.cwd && `cwd ${e.cwd}`, e.tty && `tty ${e.tty}`, e.login_user && `login ${e.login_user}`,
    e.session_id != null && `session ${e.session_id}`, e.container_id && `container ${e.container_id.slice(0, 12)}`]
    .filter(Boolean).join(" · ") || `pid ${e.pid}`;
}

/** The alerted process's context (protocol 1.6 agents): working directory, terminal,
 * login and session, cgroup and container, namespaces. */
function contextCard(a) {
  const c = (a.entities || []).find((e) => e.kind === "process_context");
  if (!c) return "";
  const row = (k, v, id) => `<div>${k}</div><div class="mono small" id="alert-context-${id}">${v}</div>`;
  const none = (v, what) => (v != null && v !== "" ? esc(v) : `<span class="muted">${what}</span>`);
  const ns = c.host_namespaces == null ? "" : c.host_namespaces ? " (the host's)" : " <b>(not the host's)</b>";
  return `<section class="card"><h3>Where it ran</h3><div class="kv" id="alert-context">
    ${row("Working directory", none(c.cwd, "unknown"), "cwd")}
    ${row("Terminal", none(c.tty, "none"), "tty")}
    ${row("Login user", c.login_user != null ? `${esc(c.login_user)} <span class="muted">uid ${esc(c.login_uid)}</span>` : `<span class="muted">none (not started by a login)</span>`, "login")}
    ${row("Session", none(c.session_id, "none"), "session")}
    ${row("Container", none(c.container_id, "none"), "container")}
    ${row("Cgroup", none(c.cgroup, "unknown"), "cgroup")}
    ${row("Namespaces", `mnt ${none(c.mnt_ns, "?")} · pid ${none(c.pid_ns, "?")}${ns}`, "ns")}</div></section>`;
}

function ancestryCard(a) {
  const t = a.ancestry;
  if (!t) return `<h3>Process ancestry</h3><p class="muted">This alert names no process.</p>`;
  // Ancestors come parent first: draw from the oldest down to the alerted process.
  const chain = [...(t.ancestors || [])].reverse();
  let html = `<li>${node(t.process, true)}</li>`;
  for (let i = 0; i < chain.length; i++) html = `<li>${node(chain[chain.length - 1 - i], false)}<ul>${html}</ul></li>`;
  const top = t.rooted ? "" : `<p class="hint">${esc(t.note || "The chain is cut here: older ancestors had exited or were beyond the agent's limit.")}</p>`;
  return `<h3>Process ancestry</h3>${top}<ul class="ptree" id="alert-ancestry">${html}</ul>`;
}

function foldCard(a) {
  const f = a.fold;
  if (f.count <= 1 && !f.folded_alerts) return "";
  return `<section class="card"><h3>Folded repeats</h3><p id="alert-fold">${esc(f.count.toLocaleString("en-US"))} detections from ${esc(time(f.first_observed_at_ms))} to ${esc(time(f.last_observed_at_ms))}${f.folded_alerts ? `; ${esc(f.folded_alerts)} later alert${f.folded_alerts > 1 ? "s" : ""} folded in` : ""}.</p>
    ${f.records.length ? `<table><thead><tr><th>Alert</th><th>Seq</th><th>Observed</th><th>Count</th><th>Received</th></tr></thead><tbody>${f.records.map((r) => `<tr><td class="mono small">${esc(r.alert_id)}</td><td>${esc(r.seq)}</td>
      <td>${esc(time(r.observed_at_ms))}</td><td>${esc(r.count)}</td><td>${esc(time(r.received_at_ms))}</td></tr>`).join("")}</tbody></table>
      ${f.records_total > f.records.length ? `<p class="muted small">${esc(f.records.length)} of ${esc(f.records_total)} listed.</p>` : ""}` : ""}</section>`;
}

function rawCard(a) {
  const r = a.raw;
  const cls = r.signature === "verified" ? "ok" : r.signature === "unsigned" ? "muted" : "error";
  return `<section class="card"><h3>Signed record</h3><p><b class="${cls}" id="alert-signature">${esc(r.signature)}</b> <span class="muted">${esc(r.note || "")}</span></p>
    ${r.payload_bytes != null ? `<div class="kv"><div>Payload</div><div>${esc(r.payload_bytes)} bytes · sha256 <span class="mono small">${esc(r.payload_sha256)}</span></div></div>` : ""}
    ${r.decoded ? `<details><summary>The alert as signed (credentials in URLs redacted)</summary><pre class="mono small raw" id="alert-raw">${esc(JSON.stringify(r.decoded, null, 1))}</pre></details>`
      : r.decoded_omitted ? `<p class="muted">Not shown: ${esc(r.decoded_omitted)}.</p>` : ""}</section>`;
}

export async function alertView(root, args, _q, current) {
  const id = args[0];
  const a = await api(`/api/v1/alerts/${encodeURIComponent(id)}`);
  if (!current()) return;
  const device = a.device_id ? `<a href="#/device/${esc(a.device_id)}">${esc(a.device_hostname || a.device_id)}</a>` : "—";
  root.innerHTML = `<section class="card"><h2 id="alert-title">${sev(a.severity)} ${esc(a.rule.title)} <span class="muted small mono">${esc(a.id)}</span></h2>
    ${a.folded_into ? `<p class="hint">Alert ${esc(a.requested_id)} was folded into this one.</p>` : ""}
    <div class="summary"><span><span class="k">device</span>${device}</span><span><span class="k">observed</span>${esc(time(a.observed_at_ms))}</span>
      ${a.count > 1 ? `<span><span class="k">last</span>${esc(time(a.last_observed_at_ms))}</span><span><span class="k">detections</span>${esc(a.count)}</span>` : ""}
      <span><span class="k">received</span>${esc(time(a.received_at_ms))}</span><span><span class="k">source</span>${esc(a.source)}</span></div></section>
    <div class="grid2"><section class="card" id="alert-rule">${ruleCard(a)}</section>
      <section class="card">${incidentCard(a)}${attackCard(a)}</section></div>
    <div class="grid2"><section class="card">${ancestryCard(a)}</section><section class="card">${entitiesCard(a)}</section></div>
    ${contextCard(a)}${foldCard(a)}${rawCard(a)}`;
  $("#alert-move", root)?.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const body = { to: String(f.get("to") || "").trim() || null, reason: String(f.get("reason") || "").trim() };
    try {
      const moved = await api(`/api/v1/incidents/${encodeURIComponent(ev.target.dataset.incident)}/alerts/${encodeURIComponent(a.id)}/move`, { method: "POST", body });
      toast(`Moved to ${moved.incident.id}`);
      if (current()) await alertView(root, args, _q, current);
    } catch (e) { toast(e.message, true); }
  });
  document.body.dataset.alertRendered = id;
  $("#alert-title", root)?.scrollIntoView?.({ block: "nearest" });
}

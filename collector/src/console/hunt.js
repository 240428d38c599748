// The hunting page (#/hunt?source=alerts&q=...&range=24h): one query over the
// stored alerts, sign-ins or mail records, a results table paged newest first,
// CSV export of up to 10,000 rows, and the analyst's saved hunts (kept by the
// collector per user). The query and its range are in the URL, so a hunt is also
// a bookmark. The collector parses and checks the query; its refusals are shown
// as they come.

import { session, api, $, $$, esc, time, sev, go, toast } from "./util.js";
import { entityHref } from "./entity.js";

const SOURCES = [["alerts", "Alerts"], ["sign_ins", "Sign-ins"], ["mail", "Mail"], ["directory", "Directory and audit"]];
/** Fields a query may name, per source (the collector's list: model/hunt.rs). */
const FIELDS = {
  alerts: ["id", "host", "device", "severity", "rule", "rule_id", "author", "source", "count", "technique", "tactic",
    "user", "ip", "domain", "mailbox", "url", "file", "entities", "matched"],
  sign_ins: ["user", "ip", "location", "app", "client", "outcome", "result", "result_detail", "risk_level",
    "risk_state", "conditional_access", "mfa", "device", "provider"],
  mail: ["kind", "sender", "recipient", "subject", "threat_types", "detection_methods", "delivery_action",
    "delivery_location", "file_name", "sha256", "url", "action", "ip", "network_message_id"],
  directory: ["kind", "operation", "actor", "target_user", "app_name", "app_id", "mailbox", "ip", "detail", "items", "provider"],
};
const RANGES = [["1h", "Last hour", 3600e3], ["24h", "Last 24 hours", 86400e3], ["7d", "Last 7 days", 7 * 86400e3],
  ["30d", "Last 30 days", 30 * 86400e3], ["all", "All time", null], ["custom", "Custom range", null]];
const PAGE = 100;
/** Answers drawn since the console loaded (in `data-hunted`: tests wait for a new one). */
let drawn = 0;

/** The query of the URL, with defaults. */
function fromUrl(q) {
  const source = SOURCES.some(([s]) => s === q.get("source")) ? q.get("source") : "alerts";
  const range = RANGES.some(([r]) => r === q.get("range")) ? q.get("range") : "24h";
  return { source, q: q.get("q") || "", range, since: q.get("since") || "", until: q.get("until") || "" };
}

/** since_ms and until_ms of a query, now for relative ranges. */
function bounds(h) {
  if (h.range === "custom") {
    const ms = (v) => (v ? new Date(v).getTime() : NaN);
    return { since_ms: Number.isFinite(ms(h.since)) ? ms(h.since) : null, until_ms: Number.isFinite(ms(h.until)) ? ms(h.until) : null };
  }
  const r = RANGES.find(([k]) => k === h.range);
  return { since_ms: r && r[2] ? Date.now() - r[2] : null, until_ms: null };
}

function params(h, extra = {}) {
  const p = new URLSearchParams({ source: h.source, q: h.q });
  const b = bounds(h);
  if (b.since_ms != null) p.set("since_ms", String(Math.floor(b.since_ms)));
  if (b.until_ms != null) p.set("until_ms", String(Math.floor(b.until_ms)));
  for (const [k, v] of Object.entries(extra)) if (v != null && v !== "") p.set(k, String(v));
  return p.toString();
}

/** Entities that have a page of their own, linked; the rest as text. */
function entitiesHtml(text) {
  return String(text).split(" ").map((t) => {
    const m = /^(user|ip|file|mailbox)=(.+)$/.exec(t);
    return m ? `<a href="${esc(entityHref(m[1], m[2]))}">${esc(t)}</a>` : esc(t);
  }).join(" ");
}

/** ATT&CK technique names of the results on screen (`attack` of the answer). */
let attackNames = {};

function cellHtml(column, v, source) {
  if (v == null || v === "") return `<span class="muted">—</span>`;
  if (column === "techniques") return String(v).split(",").map((t) => esc(attackNames[t] ? `${t} ${attackNames[t]}` : t)).join(", ");
  if (column === "entities") return entitiesHtml(v);
  if (source === "sign_ins" && (column === "user" || column === "ip")) return `<a href="${esc(entityHref(column, v))}">${esc(v)}</a>`;
  if (source === "mail" && (column === "sender" || column === "recipient") && String(v).includes("@")) return `<a href="${esc(entityHref("mailbox", v))}">${esc(v)}</a>`;
  if (column === "time") return `<span title="${esc(new Date(v).toISOString())}">${esc(time(v))}</span>`;
  if (column === "severity") return sev(v);
  if (column === "id") return `<a href="#/alert/${esc(v)}">${esc(v)}</a>`;
  return esc(v);
}

function form(h) {
  return `<section class="card"><h2>Hunting</h2>
    <form id="hunt-form" class="hunt-form">
      <div class="filters">
        <label>Source <select id="hunt-source">${SOURCES.map(([s, label]) => `<option value="${s}"${s === h.source ? " selected" : ""}>${label}</option>`).join("")}</select></label>
        <label>Time <select id="hunt-range">${RANGES.map(([r, label]) => `<option value="${r}"${r === h.range ? " selected" : ""}>${label}</option>`).join("")}</select></label>
        <span id="hunt-custom" class="filters"${h.range === "custom" ? "" : " hidden"}>
          <label>From <input type="datetime-local" id="hunt-since" value="${esc(h.since)}"></label>
          <label>To <input type="datetime-local" id="hunt-until" value="${esc(h.until)}"></label></span>
      </div>
      <div class="form-row"><label for="hunt-q">Query</label>
        <input type="text" id="hunt-q" class="hunt-q" maxlength="1024" autocomplete="off" spellcheck="false" value="${esc(h.q)}"
          placeholder="rule ~ ssh and user = root">
        <button class="primary" id="hunt-run">Run</button></div>
      <p class="hint" id="hunt-help">Conditions <code>field op value</code> joined by <code>and</code>: <code>=</code> <code>!=</code>,
        <code>~</code> contains, <code>!~</code>, and <code>&gt;= &gt; &lt;= &lt;</code> on severity and count; quote values with spaces
        (<code>subject ~ "invoice due"</code>). Fields: <span id="hunt-fields" class="mono">${esc(FIELDS[h.source].join(", "))}</span>.</p>
      <p id="hunt-error" class="error" role="alert"></p>
    </form></section>
    <section class="card"><h3>Saved hunts</h3>
      <div class="form-row"><label for="hunt-name">Save this hunt as</label><input type="text" id="hunt-name" maxlength="100">
        <button id="hunt-save">Save</button><span class="hint">Relative ranges are saved as such; a custom range is saved as all time.</span></div>
      <table id="hunt-saved"><thead><tr><th>Name</th><th>Source</th><th>Query</th><th>Time</th><th><span class="sr-only">Delete</span></th></tr></thead>
      <tbody></tbody></table></section>
    <section class="card"><h3>Results <span id="hunt-count" class="muted small"></span></h3>
      <div class="form-row pager"><span id="hunt-showing" class="muted"></span>
        <button id="hunt-newer" disabled>◀ Newer</button><button id="hunt-older" disabled>Older ▶</button>
        <button id="hunt-export" disabled>Export CSV</button><a id="hunt-download" hidden></a></div>
      <div class="table-wrap"><table id="hunt-results"><thead></thead><tbody></tbody></table></div></section>`;
}

/** A saved hunt's time range as this page's range (a window that is no preset: custom, from now). */
function rangeOf(windowMs) {
  if (windowMs == null) return { range: "all" };
  const preset = RANGES.find(([, , ms]) => ms === windowMs);
  if (preset) return { range: preset[0] };
  const local = (ms) => new Date(ms - new Date().getTimezoneOffset() * 60e3).toISOString().slice(0, 16);
  return { range: "custom", since: local(Date.now() - windowMs) };
}

export async function huntView(root, _args, q, current) {
  const h = fromUrl(q);
  root.innerHTML = form(h);
  // The page in view: its cursor, the cursors of the newer pages, its offset;
  // `asked` numbers the requests so that only the newest answer is drawn.
  const view = { cursor: null, stack: [], first: 0, asked: 0, page: null };
  const read = () => ({
    source: $("#hunt-source", root).value,
    q: $("#hunt-q", root).value.trim(),
    range: $("#hunt-range", root).value,
    since: $("#hunt-since", root).value,
    until: $("#hunt-until", root).value,
  });
  const error = (msg) => { $("#hunt-error", root).textContent = msg || ""; };

  const draw = (page) => {
    const cols = page.columns;
    attackNames = page.attack || {};
    $("#hunt-results thead", root).innerHTML = `<tr>${cols.map((c) => `<th scope="col">${esc(c.replace(/_/g, " "))}</th>`).join("")}</tr>`;
    $("#hunt-results tbody", root).innerHTML = page.rows.map((r) => `<tr>${cols.map((c, i) => `<td class="c-${esc(c)}">${cellHtml(c, r[i], h.source)}</td>`).join("")}</tr>`).join("")
      || `<tr><td colspan="${cols.length}" class="muted">Nothing matches.</td></tr>`;
    const total = page.total.toLocaleString("en-US") + (page.total_capped ? "+" : "");
    $("#hunt-count", root).textContent = `(${total} matching)`;
    $("#hunt-showing", root).textContent = page.rows.length
      ? `showing ${(view.first + 1).toLocaleString("en-US")}–${(view.first + page.rows.length).toLocaleString("en-US")} of ${total}, newest first`
      : "no rows";
    $("#hunt-newer", root).disabled = view.stack.length === 0;
    $("#hunt-older", root).disabled = !page.next_cursor;
    $("#hunt-export", root).disabled = page.total === 0;
    root.dataset.hunted = String(++drawn);
  };

  const run = async () => {
    const mine = ++view.asked;
    error("");
    $("#hunt-showing", root).textContent = "running…";
    try {
      const page = await api("/api/v1/hunt?" + params(h, { limit: PAGE, cursor: view.cursor }));
      // A newer request (a page turn, another run) or another view wins.
      if (mine !== view.asked || !current()) return;
      view.page = page;
      draw(page);
    } catch (e) {
      if (mine !== view.asked || !current()) return;
      error(e.message);
      $("#hunt-showing", root).textContent = "";
      $("#hunt-results thead", root).innerHTML = "";
      $("#hunt-results tbody", root).innerHTML = "";
      $("#hunt-count", root).textContent = "";
      $("#hunt-older", root).disabled = true;
      $("#hunt-newer", root).disabled = true;
      $("#hunt-export", root).disabled = true;
      root.dataset.hunted = String(++drawn);
    }
  };

  const drawSaved = async () => {
    let list;
    try {
      list = (await api("/api/v1/hunt/saved")).saved;
    } catch (e) {
      if (current()) error(e.message);
      return;
    }
    if (!current()) return;
    const windowText = (w) => (w == null ? "all time" : (RANGES.find(([, , ms]) => ms === w) || [null, `last ${Math.round(w / 60e3)} min`])[1]);
    $("#hunt-saved tbody", root).innerHTML = list.map((s) => `<tr data-id="${esc(s.id)}">
      <td><button class="link run-saved" data-name="${esc(s.name)}">${esc(s.name)}</button></td><td>${esc(s.source)}</td>
      <td class="mono hunt-cell">${esc(s.query) || `<span class="muted">everything</span>`}</td><td>${esc(windowText(s.window_ms))}</td>
      <td><button class="delete-saved" aria-label="delete ${esc(s.name)}">Delete</button></td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">None yet.</td></tr>`;
    for (const b of $$(".run-saved", root)) {
      b.addEventListener("click", () => {
        const s = list.find((x) => x.name === b.dataset.name);
        if (s) go("hunt", { source: s.source, q: s.query, ...rangeOf(s.window_ms) });
      });
    }
    for (const b of $$(".delete-saved", root)) {
      b.addEventListener("click", async () => {
        const id = b.closest("tr").dataset.id;
        try {
          await api(`/api/v1/hunt/saved/${encodeURIComponent(id)}`, { method: "DELETE" });
          toast("Saved hunt deleted");
        } catch (e) {
          toast(e.message, true);
        }
        drawSaved();
      });
    }
  };

  $("#hunt-form", root).addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = read();
    const before = location.hash;
    go("hunt", next);
    // The same hunt again: the hash did not change, so run it here.
    if (location.hash === before) {
      view.cursor = null; view.stack = []; view.first = 0;
      run();
    }
  });
  $("#hunt-range", root).addEventListener("change", () => { $("#hunt-custom", root).hidden = $("#hunt-range", root).value !== "custom"; });
  $("#hunt-source", root).addEventListener("change", () => { $("#hunt-fields", root).textContent = FIELDS[$("#hunt-source", root).value].join(", "); });
  $("#hunt-older", root).addEventListener("click", () => {
    if (!view.page?.next_cursor) return;
    view.stack.push(view.cursor);
    view.first += view.page.rows.length;
    view.cursor = view.page.next_cursor;
    run();
  });
  $("#hunt-newer", root).addEventListener("click", () => {
    if (!view.stack.length) return;
    view.cursor = view.stack.pop();
    view.first = Math.max(0, view.first - PAGE);
    run();
  });
  $("#hunt-export", root).addEventListener("click", async () => {
    error("");
    const r = await fetch("/api/v1/hunt?" + params(h, { format: "csv" }), { headers: { Authorization: "Bearer " + session.token } });
    if (!r.ok) {
      const data = await r.json().catch(() => ({}));
      error(data.error || r.statusText);
      return;
    }
    const blob = await r.blob();
    const a = $("#hunt-download", root);
    if (a.href) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(blob);
    a.download = `ward-hunt-${h.source}.csv`;
    a.click();
    toast("Exported " + a.download);
  });
  $("#hunt-save", root).addEventListener("click", async (ev) => {
    ev.preventDefault();
    const name = $("#hunt-name", root).value.trim();
    if (!name) { error("Name the hunt to save it."); return; }
    const cur = read();
    const r = RANGES.find(([k]) => k === cur.range);
    try {
      await api("/api/v1/hunt/saved", { method: "POST", body: { name, source: cur.source, query: cur.q, window_ms: r && r[2] ? r[2] : null } });
      toast(`Saved "${name}"`);
      $("#hunt-name", root).value = "";
      error("");
    } catch (e) {
      error(e.message);
    }
    drawSaved();
  });
  await Promise.all([run(), drawSaved()]);
}

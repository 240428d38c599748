// The incident queue, the action centre and the device pages.

import {
  session, api, can, $, $$, esc, time, ago, sev, pills, poll, go, toast, SEVERITIES, proposeAction, shortTime,
  techniqueLabels, tacticLabels,
} from "./util.js";

const STATUSES = ["active", "in_progress", "resolved", "redirected"];
const SOURCES = ["agent", "collector", "identity", "mailbox"];
const TEXT_FILTERS = ["q", "assignee", "tag", "device", "user", "tactic"];
const CLASSIFICATIONS = ["true_positive", "informational_expected_activity", "false_positive"];
/** Query keys the queue passes to the API unchanged. */
const API_FILTERS = ["status", "severity", "source", "sort", "since_ms", "until_ms", "limit", ...TEXT_FILTERS];

function unavailable(e) {
  return e.status === 404 && /route/.test(e.message);
}

// ---- incident queue ----

/** Keyboard cursor of the queue, kept across refreshes by incident id; the
 * incidents ticked for a bulk change, kept across refreshes too. */
const queue = { cursorId: null, ids: [], seen: new Set(), selected: new Set() };

const words = (s) => (s || "").replace(/_/g, " ");

function queueRows(incidents, fresh, selectable) {
  return incidents.map((i) => `<tr class="row${fresh.has(i.id) ? " new" : ""}${i.id === queue.cursorId ? " cursor" : ""}" data-id="${esc(i.id)}">
    ${selectable ? `<td><input type="checkbox" class="pick" aria-label="select ${esc(i.title)}"${queue.selected.has(i.id) ? " checked" : ""}></td>` : ""}
    <td>${sev(i.severity)}</td>
    <td><a href="#/incident/${esc(i.id)}">${esc(i.title)}</a></td>
    <td class="st-${esc(i.status)}">${esc(words(i.status))}</td>
    <td class="classification">${esc(words(i.classification) || "—")}</td>
    <td>${esc(i.assignee || "—")}</td>
    <td class="alert-count">${esc(i.alert_count)}</td>
    <td>${pills(i.sources)}</td>
    <td>${esc(i.device_count)}</td><td>${esc(i.user_count)}</td>
    <td>${(i.tactics || []).map((t) => `<span class="pill" title="${esc(t.id)}">${esc(t.name)}</span>`).join("")}</td>
    <td title="${esc(time(i.first_activity_ms))}">${esc(ago(i.first_activity_ms))}</td>
    <td title="${esc(time(i.last_activity_ms))}">${esc(ago(i.last_activity_ms))}</td></tr>`).join("");
}

/** The bar that changes every ticked incident at once (analysts). */
function bulkBar() {
  return `<div id="bulk" class="filters" hidden><strong id="bulk-count"></strong>
    <label>Assign to <input type="text" id="bulk-assignee"></label><button id="bulk-assign">Assign</button>
    <label>Status <select id="bulk-status">${["active", "in_progress", "resolved"].map((s) => `<option value="${s}">${words(s)}</option>`).join("")}</select></label>
    <button id="bulk-set-status">Set status</button>
    <label>Classification <select id="bulk-classification">${CLASSIFICATIONS.map((c) => `<option value="${c}">${words(c)}</option>`).join("")}</select></label>
    <button id="bulk-classify">Classify</button>
    <label>Tag <input type="text" id="bulk-tag"></label><button id="bulk-add-tag">Add tag</button>
    <button id="bulk-merge" title="into the first ticked incident">Merge</button>
    <button id="bulk-clear">Clear</button></div>`;
}

function filterBar(q) {
  const status = (q.get("status") || "active,in_progress").split(",");
  const text = (name, label) =>
    `<label>${label}<input type="text" data-filter="${name}" value="${esc(q.get(name) || "")}"></label>`;
  return `<div class="filters">
    ${STATUSES.map((s) => `<label><input type="checkbox" data-status="${s}"${status.includes(s) ? " checked" : ""}>${s.replace("_", " ")}</label>`).join("")}
    <label>Severity ≥ <select data-filter="severity"><option value="">any</option>${SEVERITIES.map((s) =>
      `<option${q.get("severity") === s ? " selected" : ""}>${s}</option>`).join("")}</select></label>
    <label>Source <select data-filter="source"><option value="">any</option>${SOURCES.map((s) =>
      `<option${q.get("source") === s ? " selected" : ""}>${s}</option>`).join("")}</select></label>
    ${text("q", "Search")}${text("assignee", "Assignee")}${text("tag", "Tag")}${text("device", "Device")}${text("user", "User")}${text("tactic", "Tactic")}
    <label>Sort <select data-filter="sort">${["last_activity", "severity"].map((s) =>
      `<option${(q.get("sort") || "last_activity") === s ? " selected" : ""} value="${s}">${s.replace("_", " ")}</option>`).join("")}</select></label>
    <span class="hint">j/k to move, x to tick, Enter to open</span></div>`;
}

function readFilters(root, q) {
  const out = {};
  for (const k of API_FILTERS) if (q.get(k)) out[k] = q.get(k);
  out.status = $$("[data-status]", root).filter((c) => c.checked).map((c) => c.dataset.status).join(",");
  for (const el of $$("[data-filter]", root)) out[el.dataset.filter] = el.value.trim();
  return out;
}

function apiQuery(q) {
  const p = new URLSearchParams();
  for (const k of API_FILTERS) if (q.get(k)) p.set(k, q.get(k));
  if (!q.get("status")) p.set("status", "active,in_progress");
  return p.toString();
}

function moveCursor(root, delta) {
  const rows = $$("tbody tr.row", root);
  if (!rows.length) return;
  let i = rows.findIndex((r) => r.dataset.id === queue.cursorId);
  i = Math.max(0, Math.min(rows.length - 1, i < 0 ? 0 : i + delta));
  rows.forEach((r) => r.classList.remove("cursor"));
  rows[i].classList.add("cursor");
  rows[i].scrollIntoView({ block: "nearest" });
  queue.cursorId = rows[i].dataset.id;
}

let queueKeys = null;

export async function queueView(root, _args, q, current) {
  const query = apiQuery(q);
  let data;
  try {
    data = await api("/api/v1/incidents?" + query);
  } catch (e) {
    if (!unavailable(e)) throw e;
    root.innerHTML = `<section class="card"><h2>Incidents</h2><p>This collector has no incidents API.</p></section>`;
    return;
  }
  if (!current()) return;
  let incidents = data.incidents;
  let next = data.next_cursor;
  queue.seen = new Set(incidents.map((i) => i.id));
  const selectable = can("analyst");
  root.innerHTML = `<section class="card"><h2>Incidents <span id="queue-count" class="muted small"></span></h2>${filterBar(q)}
    ${selectable ? bulkBar() : ""}</section>
    <section class="card"><table id="queue"><thead><tr>${selectable ? `<th><input type="checkbox" id="pick-all" aria-label="select all shown"></th>` : ""}
    <th>Severity</th><th>Title</th><th>Status</th><th>Classification</th><th>Assignee</th><th>Alerts</th>
    <th>Sources</th><th>Devices</th><th>Users</th><th>Tactics</th><th>First activity</th><th>Last activity</th></tr></thead><tbody></tbody></table>
    <p><button id="queue-more" hidden>More</button></p></section>`;
  const draw = (fresh = new Set()) => {
    const shown = new Set(incidents.map((i) => i.id));
    for (const id of [...queue.selected]) if (!shown.has(id)) queue.selected.delete(id);
    $("#queue tbody", root).innerHTML = queueRows(incidents, fresh, selectable)
      || `<tr><td colspan="13" class="muted">No incidents match.</td></tr>`;
    $("#queue-count", root).textContent = incidents.length + (next ? "+" : "") + " shown";
    $("#queue-more", root).hidden = !next;
    if (selectable) {
      $("#bulk", root).hidden = queue.selected.size === 0;
      $("#bulk-count", root).textContent = queue.selected.size + " selected";
    }
  };
  const toggle = (id, on) => {
    if (on) queue.selected.add(id); else queue.selected.delete(id);
    draw();
  };
  draw();
  $("#queue tbody", root).addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr.row");
    if (!tr) return;
    if (ev.target.classList.contains("pick")) toggle(tr.dataset.id, ev.target.checked);
    else if (ev.target.tagName !== "A") go("incident/" + tr.dataset.id);
  });
  if (selectable) {
    $("#pick-all", root).addEventListener("change", (ev) => {
      for (const i of incidents) if (ev.target.checked) queue.selected.add(i.id); else queue.selected.delete(i.id);
      draw();
    });
    // One PATCH per ticked incident (the API's own checks and activity log for
    // each); a merge goes into the first ticked one.
    const each = async (what, patchOf) => {
      const ids = incidents.filter((i) => queue.selected.has(i.id));
      let failed = 0;
      for (const i of ids) {
        try {
          await api(`/api/v1/incidents/${encodeURIComponent(i.id)}`, { method: "PATCH", body: patchOf(i) });
        } catch (e) {
          failed += 1;
          toast(`${i.title}: ${e.message}`, true);
        }
      }
      if (!failed) toast(`${what}: ${ids.length} incident${ids.length === 1 ? "" : "s"}`);
      queue.selected.clear();
      queueView(root, _args, q, current);
    };
    $("#bulk-assign", root).addEventListener("click", () => {
      const who = $("#bulk-assignee", root).value.trim();
      each(who ? `assigned to ${who}` : "unassigned", () => ({ assignee: who || null }));
    });
    $("#bulk-set-status", root).addEventListener("click", () => {
      const status = $("#bulk-status", root).value;
      each(`status ${words(status)}`, () => ({ status }));
    });
    $("#bulk-classify", root).addEventListener("click", () => {
      const classification = $("#bulk-classification", root).value;
      each(`classified ${words(classification)}`, () => ({ classification }));
    });
    $("#bulk-add-tag", root).addEventListener("click", () => {
      const tag = $("#bulk-tag", root).value.trim();
      if (tag) each(`tagged ${tag}`, (i) => ({ tags: [...new Set([...(i.tags || []), tag])] }));
    });
    $("#bulk-merge", root).addEventListener("click", async () => {
      // In the order they were ticked: the first is kept.
      const ids = [...queue.selected];
      if (ids.length < 2) { toast("Tick at least two incidents to merge", true); return; }
      try {
        await api(`/api/v1/incidents/${encodeURIComponent(ids[0])}/merge`, { method: "POST", body: { from: ids.slice(1) } });
        toast(`${ids.length - 1} merged into ${ids[0]}`);
      } catch (e) {
        toast(e.message, true);
      }
      queue.selected.clear();
      queueView(root, _args, q, current);
    });
    $("#bulk-clear", root).addEventListener("click", () => { queue.selected.clear(); draw(); });
  }
  for (const el of $$("[data-status], select[data-filter]", root)) el.addEventListener("change", () => go("incidents", readFilters(root, q)));
  for (const el of $$("input[data-filter]", root)) {
    el.addEventListener("keydown", (ev) => { if (ev.key === "Enter") go("incidents", readFilters(root, q)); });
    el.addEventListener("change", () => go("incidents", readFilters(root, q)));
  }
  $("#queue-more", root).addEventListener("click", async () => {
    const page = await api("/api/v1/incidents?" + query + "&cursor=" + encodeURIComponent(next));
    incidents = incidents.concat(page.incidents);
    next = page.next_cursor;
    draw();
  });
  if (queueKeys) document.removeEventListener("keydown", queueKeys);
  queueKeys = (ev) => {
    if (!current() || !$("#queue", root) || ev.target.closest("input, select, textarea")) return;
    if (ev.key === "j" || ev.key === "ArrowDown") { moveCursor(root, 1); ev.preventDefault(); }
    else if (ev.key === "k" || ev.key === "ArrowUp") { moveCursor(root, -1); ev.preventDefault(); }
    else if (ev.key === "Enter" && queue.cursorId) go("incident/" + queue.cursorId);
    else if (ev.key === "x" && queue.cursorId && selectable) toggle(queue.cursorId, !queue.selected.has(queue.cursorId));
  };
  document.addEventListener("keydown", queueKeys);
  // New and changed incidents appear without a reload; new ones flash.
  poll(async () => {
    const fresh = await api("/api/v1/incidents?" + query);
    if (!current()) return;
    const added = new Set(fresh.incidents.filter((i) => !queue.seen.has(i.id)).map((i) => i.id));
    fresh.incidents.forEach((i) => queue.seen.add(i.id));
    const byId = new Map(fresh.incidents.map((i) => [i.id, i]));
    const rest = incidents.slice(fresh.incidents.length).filter((i) => !byId.has(i.id));
    incidents = fresh.incidents.concat(rest);
    if (!rest.length) next = fresh.next_cursor;
    draw(added);
  }, 3000);
}

// ---- action centre ----

const IN_FLIGHT = ["approved", "dispatched", "acked"];
const UNDOABLE = ["isolate", "quarantine_file"];
/** Comments typed into pending cards, kept across refreshes. */
const drafts = new Map();
/** Actions whose approval is confirmed first: they cut a device off or destroy. */
const CONFIRMED = ["isolate", "delete_file", "kill_process"];

/** The approvals an action already has, as names and times. */
function approvalsSoFar(a) {
  const list = Array.isArray(a.approvals) ? a.approvals : [];
  return list.map((x) => `${esc(x.by || x.approver || "")} ${x.at_ms ? esc(ago(x.at_ms)) : ""}`.trim());
}

/**
 * Restates what approving `a` does before it is done: the device, what it will be
 * told, why, the incident that led to it (linked, by title), who asked and who
 * approved so far. Resolves true when the approver confirms.
 */
async function confirmApproval(a) {
  let incident = null;
  if (a.incident_id) {
    try {
      incident = (await api(`/api/v1/incidents/${encodeURIComponent(a.incident_id)}`)).incident;
    } catch (_) { incident = null; }
  }
  let panel = $("#confirm-approval");
  if (!panel) {
    panel = document.createElement("div");
    panel.id = "confirm-approval";
    panel.className = "card propose-panel";
    panel.setAttribute("role", "dialog");
    panel.setAttribute("aria-modal", "true");
    document.body.appendChild(panel);
  }
  const approvals = approvalsSoFar(a);
  const incidentLine = a.incident_id
    ? `<a id="confirm-incident" href="#/incident/${esc(a.incident_id)}">${esc(incident ? incident.title : a.incident_id)}</a>
       ${incident ? `<span class="muted small">${esc(incident.severity)} · ${esc(incident.status)} · ${esc(incident.alert_count)} alerts</span>` : ""}`
    : `<span class="muted">not tied to an incident</span>`;
  panel.hidden = false;
  panel.innerHTML = `<h3>Approve: ${esc(a.summary)}?</h3>
    <div class="kv"><div>Device</div><div><a href="#/device/${esc(a.device_id)}">${esc(a.device_hostname)}</a>
      <span class="muted mono">${esc(a.device_id)}</span></div>
    <div>It will be told</div><div><pre class="mono">${esc(JSON.stringify(a.action, null, 1))}</pre></div>
    <div>Why</div><div>${esc(a.reason || "—")}</div>
    <div>Incident</div><div>${incidentLine}</div>
    <div>Requested by</div><div>${esc(a.requested_by)} ${esc(ago(a.requested_at_ms))}</div>
    <div>Approved so far</div><div id="confirm-approvals">${approvals.length ? approvals.join(", ") : "nobody yet"}</div></div>
    <div class="form-row"><button class="danger confirm">Approve ${esc(a.kind.replace("_", " "))} of ${esc(a.device_hostname)}</button>
      <button class="back">Back</button></div>`;
  $(".back", panel).focus();
  return new Promise((resolve) => {
    const close = (yes) => { panel.hidden = true; resolve(yes); };
    $(".confirm", panel).onclick = () => close(true);
    $(".back", panel).onclick = () => close(false);
    panel.onkeydown = (ev) => { if (ev.key === "Escape") close(false); };
  });
}

function actionCard(a) {
  const approved = approvalsSoFar(a);
  const mayDecide = can("approver") && a.requested_by !== session.me.name;
  const mayCancel = a.requested_by === session.me.name || can("approver");
  return `<div class="action-card" data-action="${esc(a.id)}">
    <div class="summary"><b>${esc(a.summary)}</b><span><span class="k">on</span><a href="#/device/${esc(a.device_id)}">${esc(a.device_hostname)}</a>
      <span class="muted mono small">${esc(a.device_id)}</span></span>
      <span><span class="k">requested by</span>${esc(a.requested_by)} ${esc(ago(a.requested_at_ms))}</span>
      <span><span class="k">expires</span>${esc(time(a.expires_at_ms))}</span></div>
    <div><span class="k muted">Reason:</span> ${esc(a.reason)}${a.incident_id ? ` <a href="#/incident/${esc(a.incident_id)}">(incident)</a>` : ""}</div>
    ${approved.length ? `<div><span class="k muted">Approved so far:</span> ${approved.join(", ")}</div>` : ""}
    <div class="muted small">Exactly what the device will be told to do:</div>
    <pre class="mono">${esc(JSON.stringify(a.action, null, 1))}</pre>
    ${mayDecide ? `<div class="form-row"><input type="text" size="50" class="decision-comment" placeholder="comment (required to reject)"
      value="${esc(drafts.get(a.id) || "")}"><button class="primary approve">Approve</button><button class="danger reject">Reject</button>
      ${mayCancel ? `<button class="cancel">Cancel request</button>` : ""}</div>`
    : `<div class="hint">${a.requested_by === session.me.name ? "Your request: another approver must decide." : "Approvers decide."}
      ${mayCancel ? `<button class="cancel">Cancel request</button>` : ""}</div>`}</div>`;
}

const plural = (n, one, many = one + "s") => `${Number(n).toLocaleString("en-US")} ${n === 1 ? one : many}`;

/**
 * What an action's result says happened, in words (HTML): the agent reports a
 * quarantine, restore, delete or kill as a JSON record, a package and an isolation
 * as a sentence. A detail that is not the expected record is shown as it came.
 */
export function resultWords(a) {
  const r = a.result;
  if (!r) return "";
  if (r.outcome !== "succeeded") return esc(r.reason || r.detail || r.outcome);
  let d = null;
  try { d = JSON.parse(r.detail); } catch { d = null; }
  const links = (n) => (n > 0 ? `; ${esc(plural(n, "other hard link"))} to the same content still on disk` : "");
  if (d && typeof d === "object") {
    switch (a.kind) {
      case "quarantine_file":
        if (d.id && d.original_path) return `file <span class="mono">${esc(d.original_path)}</span> moved to quarantine id <span class="mono">${esc(d.id)}</span> (${esc(plural(d.size, "byte"))})${links(d.other_links)}`;
        break;
      case "restore_file":
        if (d.original_path) return `file restored from quarantine id <span class="mono">${esc(d.id)}</span> to <span class="mono">${esc(d.original_path)}</span>`;
        break;
      case "delete_file":
        if (d.path) return `file <span class="mono">${esc(d.path)}</span> deleted (${esc(plural(d.size, "byte"))})${links(d.other_links)}`;
        break;
      case "kill_process":
        if (Array.isArray(d.killed)) {
          const names = d.killed.map((k) => `${esc(String(k.exe || "?").split("/").pop())} (pid ${esc(k.pid)})${k.exited ? " had already exited" : ""}`);
          const what = a.action?.tree ? "process tree killed" : "process killed";
          const skipped = (d.skipped || []).length ? `; ${esc(plural(d.skipped.length, "process", "processes"))} skipped: ${d.skipped.map((k) => `pid ${esc(k.pid)} (${esc(k.reason)})`).join(", ")}` : "";
          return `${what}: ${names.join(", ") || "none"}${skipped}`;
        }
        break;
      default:
        break;
    }
  }
  if (a.kind === "collect_package") return `${esc(r.detail || "package")}: ready to download${a.package_bytes ? "" : " (not kept)"}`;
  return esc(r.detail);
}

function resultCell(a) {
  if (a.result) return `<span class="${a.result.outcome === "succeeded" ? "ok" : "error"}">${esc(a.result.outcome)}</span> <span class="result-words">${resultWords(a)}</span>`;
  if (a.status === "rejected") return `rejected by ${esc(a.decided_by)}: ${esc(a.decision_comment)}`;
  if (a.status === "cancelled") return `cancelled by ${esc(a.cancelled_by)}`;
  return "";
}

function historyRows(actions) {
  return actions.map((a) => `<tr data-action="${esc(a.id)}"><td title="${esc(time(a.updated_at_ms))}">${esc(ago(a.updated_at_ms))}</td>
    <td>${esc(a.summary)}${a.undo_of ? ` <span class="pill">undo</span>` : ""}</td>
    <td><a href="#/device/${esc(a.device_id)}">${esc(a.device_hostname)}</a></td>
    <td>${esc(a.requested_by)}</td><td>${esc(a.decided_by || "")}</td>
    <td class="action-status">${esc(a.status.replace("_", " "))}</td><td>${resultCell(a)}</td>
    <td>${can("analyst") && a.status === "succeeded" && UNDOABLE.includes(a.kind) ? `<button class="undo">Undo</button>` : ""}
      ${a.package_bytes && can("approver") ? `<button class="package">Package (${esc(a.package_bytes)} B)</button>` : ""}</td></tr>`).join("");
}

/** Renders action rows (pending cards, in-flight and history tables) into `root`. */
export function renderActions(root, actions, onChange) {
  const pending = actions.filter((a) => a.status === "pending_approval");
  const flight = actions.filter((a) => IN_FLIGHT.includes(a.status));
  const done = actions.filter((a) => a.status !== "pending_approval" && !IN_FLIGHT.includes(a.status));
  const head = `<thead><tr><th>Updated</th><th>Action</th><th>Device</th><th>Requested by</th><th>Decided by</th><th>Status</th><th>Result</th><th></th></tr></thead>`;
  root.innerHTML = `<section class="card"><h3>Waiting for approval (${pending.length})</h3>
      <div id="pending">${pending.map(actionCard).join("") || `<p class="muted">Nothing waits for approval.</p>`}</div></section>
    <section class="card"><h3>In flight (${flight.length})</h3><table>${head}<tbody>${historyRows(flight)}</tbody></table></section>
    <section class="card"><h3>History</h3><table>${head}<tbody id="action-history">${historyRows(done)}</tbody></table></section>`;
  const decide = async (id, verb, card) => {
    const comment = $(".decision-comment", card)?.value.trim() || "";
    try {
      const v = await api(`/api/v1/actions/${id}/${verb}`, { method: "POST", body: { comment } });
      drafts.delete(id);
      toast(`${v.summary}: ${v.status.replace("_", " ")}`);
      onChange();
    } catch (e) { toast(e.message, true); }
  };
  for (const card of $$("[data-action]", root)) {
    const id = card.dataset.action;
    $(".decision-comment", card)?.addEventListener("input", (ev) => drafts.set(id, ev.target.value));
    $(".approve", card)?.addEventListener("click", async () => {
      const a = actions.find((x) => x.id === id);
      if (a && CONFIRMED.includes(a.kind) && !(await confirmApproval(a))) return;
      decide(id, "approve", card);
    });
    $(".reject", card)?.addEventListener("click", () => decide(id, "reject", card));
    $(".cancel", card)?.addEventListener("click", () => decide(id, "cancel", card));
    $(".undo", card)?.addEventListener("click", async () => {
      try {
        const v = await api(`/api/v1/actions/${id}/undo`, { method: "POST", body: {} });
        toast("Proposed " + v.summary + ": waiting for approval");
        onChange();
      } catch (e) { toast(e.message, true); }
    });
    $(".package", card)?.addEventListener("click", () => downloadPackage(id));
  }
}

async function downloadPackage(id) {
  const r = await fetch(`/api/v1/actions/${id}/package`, { headers: { Authorization: "Bearer " + session.token } });
  if (!r.ok) { toast("package: " + r.statusText, true); return; }
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `ward-package-${id}.bin`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function actionsView(root, _args, _q, current) {
  root.innerHTML = `<div id="action-centre"></div>`;
  const box = $("#action-centre", root);
  let signature = "";
  const refresh = async () => {
    const { actions } = await api("/api/v1/actions?limit=200");
    if (!current()) return;
    const sig = actions.map((a) => a.id + a.status + a.updated_at_ms).join();
    // Redraw only when something changed, so a comment being typed is not disturbed.
    if (sig === signature) return;
    const focused = document.activeElement?.closest?.("[data-action]")?.dataset.action;
    signature = sig;
    renderActions(box, actions, refresh);
    if (focused) $(`[data-action="${focused}"] .decision-comment`, box)?.focus();
  };
  await refresh();
  poll(refresh, 2000);
}

// ---- devices ----

function deviceState(d) {
  return d.revoked_at_ms ? "revoked" : d.online ? `<span class="ok">online</span>` : `<span class="muted">offline</span>`;
}

async function openIncidents(device) {
  try {
    const r = await api(`/api/v1/incidents?status=active,in_progress&limit=500&device=${encodeURIComponent(device)}`);
    return r.incidents;
  } catch (e) {
    if (unavailable(e)) return null;
    throw e;
  }
}

// A device's clock against the collector's: "—" before a heartbeat, flagged beyond
// the 2 min agents allow for commands (they refuse them then).
function clockSkew(d) {
  if (d.clock_skew_ms == null) return "—";
  const s = Math.abs(d.clock_skew_ms) / 1000;
  const text = s < 1 ? "in step" : `${s < 120 ? s.toFixed(1) + " s" : Math.round(s / 60) + " min"} ${d.clock_skew_ms > 0 ? "ahead" : "behind"}`;
  return s * 1000 > 120000 ? `<b class="error" title="beyond the 2 min agents allow: commands will be refused">${esc(text)}</b>` : esc(text);
}

// What each sensor of a device sees, as its agent last said: a sensor that is blind
// or degraded says why, so a quiet device is never taken for a clean one.
function sensorsCard(d) {
  if (!d.sensors || !d.sensors.length) return `<p class="muted">The agent has not reported its sensors (older than protocol 1.5, or never connected).</p>`;
  const cls = { ready: "ok", degraded: "warn", blind: "error", starting: "muted", off: "muted" };
  return `<table id="dev-sensors"><thead><tr><th>Sensor</th><th>State</th><th>Source</th><th>Why</th><th>Lost</th><th>Since</th></tr></thead><tbody>
    ${d.sensors.map((s) => `<tr data-sensor="${esc(s.name)}"><td>${esc(s.name)}</td><td><b class="${cls[s.readiness] || ""}">${esc(s.readiness)}</b></td>
      <td class="small">${esc(s.source || "—")}</td><td class="small">${esc(s.detail || "")}</td><td>${esc(s.lost || 0)}</td>
      <td title="${esc(time(s.since_ms))}">${esc(ago(s.since_ms))}</td></tr>`).join("")}</tbody></table>
    <div class="muted small">reported ${esc(ago(d.sensors_at_ms))}</div>`;
}

export async function devicesView(root, _args, _q, current) {
  const draw = async () => {
    const { devices } = await api("/api/v1/devices");
    const counts = await Promise.all(devices.slice(0, 50).map((d) => openIncidents(d.id)));
    if (!current()) return;
    root.innerHTML = `<section class="card"><h2>Devices (${devices.length})</h2><table id="devices"><thead><tr><th>Host</th><th>Status</th>
      <th>Isolation</th><th>Last seen</th><th>Clock</th><th>Agent</th><th>OS</th><th>Open incidents</th><th>Missing alerts</th></tr></thead><tbody>
      ${devices.map((d, i) => `<tr class="row" data-id="${esc(d.id)}"><td><a href="#/device/${esc(d.id)}">${esc(d.hostname)}</a>
        <div class="muted small mono">${esc(d.id)}</div></td><td>${deviceState(d)}</td>
        <td>${d.isolation === "none" ? "—" : `<b class="error">${esc(d.isolation)}</b>`}</td>
        <td title="${esc(time(d.last_seen_ms))}">${esc(ago(d.last_seen_ms))}</td><td class="dev-clock">${clockSkew(d)}</td><td>${esc(d.agent_version)}</td><td>${esc(d.os)}</td>
        <td>${counts[i] == null ? "—" : esc(counts[i].length)}</td><td>${esc(d.missing_alerts)}</td></tr>`).join("")}
      </tbody></table></section>`;
    $("#devices tbody", root).addEventListener("click", (ev) => {
      const tr = ev.target.closest("tr.row");
      if (tr && ev.target.tagName !== "A") go("device/" + tr.dataset.id);
    });
  };
  await draw();
  poll(draw, 5000);
}

/** Alerts on a time axis (one dot per alert, coloured by severity) above the list. */
export function alertTimeline(alerts) {
  if (!alerts.length) return `<p class="muted">No alerts.</p>`;
  const t0 = alerts[0].observed_at_ms;
  const t1 = Math.max(alerts[alerts.length - 1].observed_at_ms, t0 + 1);
  const W = 1000;
  const dots = alerts.map((a) => `<circle cx="${(10 + ((a.observed_at_ms - t0) / (t1 - t0)) * (W - 20)).toFixed(1)}" cy="20" r="5"
    class="sevdot sevdot-${esc(a.severity)}"><title>${esc(time(a.observed_at_ms) + " " + a.rule.title)}</title></circle>`).join("");
  return `<svg class="strip" viewBox="0 0 ${W} 40" preserveAspectRatio="none"><line class="axis" x1="0" y1="20" x2="${W}" y2="20"></line>${dots}</svg>
    <div class="muted small strip-range"><span>${esc(time(t0))}</span><span>${esc(time(t1))}</span></div>
    <div class="timeline">${alerts.map((a) => `<div class="item" data-alert="${esc(a.id)}"><span title="${esc(time(a.observed_at_ms))}">${esc(shortTime(a.observed_at_ms))}</span>
      <span>${sev(a.severity)}</span><span><a href="#/alert/${esc(a.id)}">${esc(a.rule.title)}</a> ${a.count > 1 ? `<span class="fold">×${esc(a.count)}, last seen ${esc(time(a.last_observed_at_ms))}</span>` : ""}
      <span class="muted small">${esc(tacticLabels(a.rule).join(", "))}${a.rule.techniques?.length ? " · " + esc(techniqueLabels(a.rule).join(", ")) : ""}</span></span></div>`).join("")}</div>`;
}

/** Alerts a device page shows at a time (newest first, paged). */
const DEVICE_PAGE = 200;

export async function deviceView(root, args, _q, current) {
  const id = args[0];
  // The page of alerts in view: its cursor, those of the newer pages, its offset.
  const view = { cursor: null, stack: [], first: 0 };
  const draw = async () => {
    const [d, page, incidents, { actions }] = await Promise.all([
      api(`/api/v1/devices/${encodeURIComponent(id)}`),
      api(`/api/v1/devices/${encodeURIComponent(id)}/alerts?limit=${DEVICE_PAGE}${view.cursor ? "&cursor=" + encodeURIComponent(view.cursor) : ""}`),
      openIncidents(id),
      api(`/api/v1/actions?device=${encodeURIComponent(id)}&limit=50`),
    ]);
    if (!current()) return;
    const alerts = page.alerts.slice().sort((a, b) => a.observed_at_ms - b.observed_at_ms);
    const total = page.totals.alerts;
    const showing = page.total ? `showing ${(view.first + 1).toLocaleString("en-US")}–${(view.first + page.alerts.length).toLocaleString("en-US")} of ${total.toLocaleString("en-US")}, newest first` : "no alerts";
    root.innerHTML = `<section class="card"><h2>${esc(d.hostname)} <span class="muted small mono">${esc(d.id)}</span></h2>
      <div class="summary"><span><span class="k">status</span>${deviceState(d)}</span>
      <span><span class="k">isolation</span><span id="dev-isolation">${esc(d.isolation)}</span></span><span><span class="k">last seen</span>${esc(time(d.last_seen_ms))}</span>
      <span><span class="k">clock</span><span id="dev-clock">${clockSkew(d)}</span></span>
      <span><span class="k">agent</span>${esc(d.agent_version)}</span><span><span class="k">OS</span>${esc(d.os)} ${esc(d.kernel)}</span>
      <span><span class="k">addresses</span>${pills(d.addresses)}</span><span><span class="k">users</span>${pills(d.logged_on_users)}</span></div>
      ${can("analyst") ? `<div class="form-row"><button id="dev-isolate">Isolate…</button><button id="dev-release">Release…</button>
        <button id="dev-package">Collect package…</button></div>` : ""}</section>
      <div class="grid2"><section class="card"><h3>Alerts (${esc(total.toLocaleString("en-US"))})</h3>
        <div class="form-row pager"><span class="muted" id="device-alerts-showing">${esc(showing)}</span>
        <button id="dev-newer"${view.stack.length ? "" : " disabled"}>◀ Newer</button><button id="dev-older"${page.next_cursor ? "" : " disabled"}>Older ▶</button></div>
        ${alertTimeline(alerts)}</section>
      <section class="card"><h3>Sensors</h3>${sensorsCard(d)}<h3>Open incidents</h3>${incidents == null ? `<p class="muted">No incidents API.</p>`
        : incidents.map((i) => `<div>${sev(i.severity)} <a href="#/incident/${esc(i.id)}">${esc(i.title)}</a></div>`).join("") || `<p class="muted">None.</p>`}
      <h3>Actions</h3>${actions.map((a) => `<div>${esc(shortTime(a.updated_at_ms))} ${esc(a.summary)}: <b>${esc(a.status.replace("_", " "))}</b></div>`).join("") || `<p class="muted">None.</p>`}
      </section></div>`;
    const propose = (action, what) => proposeAction({ deviceId: d.id, deviceName: d.hostname, action, what }).then((v) => v && draw());
    $("#dev-isolate", root)?.addEventListener("click", () => propose({ kind: "isolate", allow: [] }, "isolate the device from the network"));
    $("#dev-release", root)?.addEventListener("click", () => propose({ kind: "release" }, "release the device from isolation"));
    $("#dev-package", root)?.addEventListener("click", () => propose({ kind: "collect_package" }, "collect an investigation package"));
    $("#dev-older", root)?.addEventListener("click", () => {
      view.stack.push(view.cursor);
      view.first += page.alerts.length;
      view.cursor = page.next_cursor;
      draw();
    });
    $("#dev-newer", root)?.addEventListener("click", () => {
      view.cursor = view.stack.pop() ?? null;
      view.first = Math.max(0, view.first - DEVICE_PAGE);
      draw();
    });
  };
  await draw();
  poll(async () => { if (!$("#propose") || $("#propose").hidden) await draw(); }, 5000);
}

// ---- health: the export sinks ----

/** An age in milliseconds as text ("—" when nothing waits). */
function age(ms) {
  if (!ms) return "—";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

const SINK_STATES = {
  idle: ["ok", "Idle: nothing waiting"],
  delivering: ["ok", "Delivering"],
  retrying: ["error", "Retrying: the receiver fails"],
  stopped: ["error", "Stopped: the sink could not start"],
};

/** Each export sink with its state, queue and last error (admins; docs/export.md). */
export async function healthView(root, _args, _q, current) {
  const draw = async () => {
    const { sinks } = await api("/api/v1/export/sinks");
    if (!current()) return;
    const rows = sinks.map((s) => {
      const [cls, label] = SINK_STATES[s.state] || ["warn", s.state];
      const lost = s.dropped + s.refused;
      return `<tr class="sink" data-sink="${esc(s.name)}" data-state="${esc(s.state)}"><td><b>${esc(s.name)}</b></td>
        <td>${esc(s.kind)} <span class="muted small">${esc(s.format)}</span></td>
        <td class="sink-state ${cls}" title="${esc(label)}">${esc(s.state)}${s.failures_in_row ? ` <span class="small">(${esc(s.failures_in_row)} in a row)</span>` : ""}</td>
        <td class="sink-queued">${esc(s.queued)}</td><td class="sink-oldest">${esc(age(s.oldest_unsent_age_ms))}</td>
        <td class="sink-sent">${esc(s.sent)}</td><td class="sink-failed">${esc(s.failed)}</td>
        <td class="sink-lost ${lost ? "error" : ""}" title="dropped (spool full) ${esc(s.dropped)}, refused by the receiver ${esc(s.refused)}">${esc(lost)}</td>
        <td title="${esc(time(s.last_sent_ms))}">${esc(ago(s.last_sent_ms))}</td>
        <td class="sink-error">${s.last_error ? `<span class="error">${esc(s.last_error)}</span> <span class="muted small" title="${esc(time(s.last_error_ms))}">${esc(ago(s.last_error_ms))}</span>` : "—"}</td></tr>`;
    }).join("");
    root.innerHTML = `<section class="card"><h2>Export sinks (${sinks.length})</h2>
      ${sinks.length ? `<table id="sinks"><thead><tr><th>Sink</th><th>Kind</th><th>State</th><th>Queued</th><th>Oldest unsent</th>
        <th>Sent</th><th>Failed attempts</th><th>Lost</th><th>Last delivery</th><th>Last error</th></tr></thead><tbody>${rows}</tbody></table>`
        : `<p class="muted" id="no-sinks">No sinks are configured (<code>[[export]]</code> in collector.toml; see docs/export.md).</p>`}
      <p class="muted small">Counts since the collector started; queued records are kept on disk and delivered in order when the receiver is back.</p></section>`;
  };
  await draw();
  poll(draw, 3000);
}

// Shared helpers: the API client, the signed-in user, escaping and formatting.
// Every value put into HTML goes through esc(); the CSP forbids inline script.

export const session = { token: sessionStorage.getItem("ward-token"), me: null };

const RANKS = { viewer: 0, analyst: 1, approver: 2, admin: 3 };
/** Whether the signed-in user holds at least `role`. The API checks again. */
export const can = (role) => session.me !== null && RANKS[session.me.role] >= RANKS[role];

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export const esc = (s) =>
  String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

/** Calls the API with the tab's token; resolves to the JSON body or throws ApiError. */
export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: "Bearer " + session.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new ApiError(r.status, data.error || r.statusText);
  return data;
}

export const time = (ms) => (ms ? new Date(ms).toLocaleString() : "never");
export const shortTime = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "");
export function ago(ms) {
  if (!ms) return "never";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
}

export const SEVERITIES = ["informational", "low", "medium", "high", "critical"];
export const sev = (s) => `<span class="sev sev-${esc(s)}">${esc(s)}</span>`;
export const pills = (xs) => (xs || []).map((x) => `<span class="pill">${esc(x)}</span>`).join("");

/** ATT&CK enterprise tactics in kill-chain order. */
export const KILL_CHAIN = [
  ["TA0043", "Reconnaissance"], ["TA0042", "Resource Development"], ["TA0001", "Initial Access"],
  ["TA0002", "Execution"], ["TA0003", "Persistence"], ["TA0004", "Privilege Escalation"],
  ["TA0005", "Defense Evasion"], ["TA0006", "Credential Access"], ["TA0007", "Discovery"],
  ["TA0008", "Lateral Movement"], ["TA0009", "Collection"], ["TA0011", "Command and Control"],
  ["TA0010", "Exfiltration"], ["TA0040", "Impact"],
];

/** A short human label of an entity (as the API shows entities). */
export function entityLabel(e) {
  switch (e.kind) {
    case "device": return e.hostname;
    case "user": return e.name;
    case "mailbox": return e.address;
    case "file": return e.path;
    case "process": return (e.exe || "?").split("/").pop() + " (" + e.pid + ")";
    case "lineage": return ((e.process || {}).exe || "?").split("/").pop() + " (" + (e.process || {}).pid + ")";
    case "process_context": return e.container_id ? "container " + e.container_id.slice(0, 12) : [e.tty, e.cwd].filter(Boolean).join(" ") || "pid " + e.pid;
    case "ip": return e.addr;
    case "domain": return e.name;
    case "url": return e.url;
    default: return e.kind;
  }
}

let toastTimer = null;
export function toast(message, isError = false) {
  const t = $("#toast");
  t.textContent = message;
  t.className = "toast" + (isError ? " error" : "");
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

// Polls of the current view; the router stops them on every navigation.
const timers = [];
export function poll(fn, ms) { timers.push(setInterval(() => fn().catch(() => {}), ms)); }
export function stopPolls() {
  while (timers.length) clearInterval(timers.pop());
  focused = null;
}

// A poll that redraws under a keyboard user must not throw their focus back to the
// top of the page: the element focused last in the view is remembered by its place
// (child indexes from #view), and when a redraw removed it, focus goes to what now
// stands in the same place.
let focused = null;
const placeOf = (root, el) => {
  const path = [];
  for (let e = el; e && e !== root; e = e.parentElement) path.push(Array.prototype.indexOf.call(e.parentElement.children, e));
  return path.reverse();
};
document.addEventListener("focusin", (ev) => {
  const view = $("#view");
  focused = view && view.contains(ev.target) ? { el: ev.target, path: placeOf(view, ev.target) } : null;
});
function restoreFocus() {
  const view = $("#view");
  const now = document.activeElement;
  if (!focused || !view || focused.el.isConnected || (now && now !== document.body)) return;
  let e = view;
  for (const i of focused.path) e = e ? e.children[i] : null;
  if (e && typeof e.focus === "function") e.focus({ preventScroll: true });
}
// Every redraw gives focus back, whatever caused it (a poll, evidence arriving after
// the first draw, a page turn): the observer runs before the browser handles the next
// key, so a keyboard user never lands at the top of the page in between.
new MutationObserver(restoreFocus).observe($("#view"), { childList: true, subtree: true });

/** Parses "#/path?a=1&b=2" into { path: ["path"], query: URLSearchParams }. */
export function parseHash() {
  const h = location.hash.replace(/^#\/?/, "");
  const [p, q = ""] = h.split("?");
  return { path: p.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q) };
}

/** Navigates to `path` with the non-empty entries of `query` (an object). */
export function go(path, query = {}) {
  // Commas stay readable in bookmarks (status=active,in_progress).
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v != null)).toString().replace(/%2C/g, ",");
  location.hash = "#/" + path + (q ? "?" + q : "");
}

/**
 * Shows the propose panel for one action: what will happen on which device, a
 * reason, and a button that sends the proposal. Resolves when it is sent or closed.
 */
export function proposeAction({ deviceId, deviceName, action, incidentId, what }) {
  let panel = $("#propose");
  if (!panel) {
    panel = document.createElement("div");
    panel.id = "propose";
    panel.className = "card propose-panel";
    document.body.appendChild(panel);
  }
  panel.hidden = false;
  panel.innerHTML = `<h3>Propose: ${esc(what)}</h3>
    <div class="kv"><div>Device</div><div>${esc(deviceName)} <span class="muted mono">${esc(deviceId)}</span></div>
    <div>Action</div><div><pre class="mono">${esc(JSON.stringify(action, null, 1))}</pre></div></div>
    <div class="form-row"><label for="propose-reason">Reason</label><input id="propose-reason" type="text" size="50"
      value="${esc(incidentId ? "incident " + incidentId : "")}"></div>
    <p class="hint">An approver other than you must approve it before it is signed and sent.</p>
    <div class="form-row"><button id="propose-submit" class="primary">Propose</button><button id="propose-close">Close</button>
    <span id="propose-status"></span></div>`;
  $("#propose-reason").focus();
  return new Promise((resolve) => {
    $("#propose-close").onclick = () => { panel.hidden = true; resolve(null); };
    $("#propose-submit").onclick = async () => {
      const body = { device_id: deviceId, action, reason: $("#propose-reason").value.trim() };
      if (incidentId) body.incident_id = incidentId;
      try {
        let view;
        try {
          view = await api("/api/v1/actions", { method: "POST", body });
        } catch (e) {
          // A collector without incident links refuses the field: propose without it.
          if (!(e.status === 400 && /incident_id/.test(e.message))) throw e;
          delete body.incident_id;
          view = await api("/api/v1/actions", { method: "POST", body });
        }
        panel.hidden = true;
        toast("Proposed " + view.kind + " on " + view.device_hostname + ": waiting for approval");
        resolve(view);
      } catch (e) {
        $("#propose-status").innerHTML = `<span class="error">${esc(e.message)}</span>`;
      }
    };
  });
}

/** ATT&CK technique labels of a rule: "T1059.004 Unix Shell" (bare id when the API names none). */
export function techniqueLabels(rule) {
  const named = rule?.attack?.techniques;
  if (Array.isArray(named)) return named.map((t) => (t.name ? `${t.id} ${t.name}` : t.id));
  return rule?.techniques || [];
}

/** ATT&CK tactic labels of a rule: "Execution" (the id when the API names none). */
export function tacticLabels(rule) {
  const named = rule?.attack?.tactics;
  if (Array.isArray(named)) return named.map((t) => t.name || t.id);
  return rule?.tactics || [];
}

/** `u` when it is an http(s) URL safe to put in an href, else null (the API drops others too). */
export function webUrl(u) {
  return typeof u === "string" && /^https?:\/\/[^\s"'<>`]+$/i.test(u) ? u : null;
}

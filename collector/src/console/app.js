// Entry point: sign-in, the navigation bar, and hash routing. The hash holds the
// view and its filters (#/incidents?status=active&sort=severity), so every view
// can be bookmarked and the back button works.

import { session, api, $, $$, esc, parseHash, stopPolls, can, toast } from "./util.js";
import { queueView, devicesView, deviceView, actionsView, healthView } from "./views.js";
import { incidentView } from "./incident.js";
import { alertView } from "./alert.js";
import { huntView } from "./hunt.js";
import { entityView } from "./entity.js";

const ROUTES = {
  incidents: queueView,
  incident: incidentView,
  actions: actionsView,
  devices: devicesView,
  device: deviceView,
  alert: alertView,
  hunt: huntView,
  entity: entityView,
  health: healthView,
};

let rendering = 0;

async function route() {
  if (!session.me) return;
  stopPolls();
  const propose = $("#propose");
  if (propose) propose.hidden = true;
  const { path, query } = parseHash();
  const name = path[0] || "incidents";
  const view = ROUTES[name] || queueView;
  $$("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name || a.dataset.nav + "s" === name));
  pendingBadge().catch(() => {});
  const mine = ++rendering;
  const root = $("#view");
  try {
    await view(root, path.slice(1), query, () => mine === rendering);
  } catch (e) {
    if (mine === rendering) root.innerHTML = `<section class="card"><p class="error">${esc(e.message)}</p></section>`;
  }
}

async function pendingBadge() {
  if (!can("approver")) return;
  const { actions } = await api("/api/v1/actions?status=pending_approval&limit=100");
  const mine = actions.filter((a) => a.requested_by !== session.me.name).length;
  const b = $("#pending-count");
  b.hidden = mine === 0;
  b.textContent = String(mine);
}

/** Admins: how many export sinks are retrying or stopped, on the Health link. */
async function sinksBadge() {
  if (!can("admin")) return;
  const { sinks } = await api("/api/v1/export/sinks");
  const failing = sinks.filter((s) => s.state === "retrying" || s.state === "stopped").length;
  const b = $("#sinks-failing");
  b.hidden = failing === 0;
  b.textContent = String(failing);
}

async function start() {
  try {
    session.me = await api("/api/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem("ward-token");
    session.token = null;
    $("#signin").hidden = false;
    $("#signin-error").textContent = e.status === 401 ? "That token is not known." : e.message;
    return;
  }
  $("#who").textContent = session.me.name + " · " + session.me.role;
  document.body.dataset.role = session.me.role;
  // Hunting reads raw feed records: analysts and up (the API checks again).
  $("#nav [data-nav=hunt]").hidden = !can("analyst");
  // Sink health names receivers and their errors: admins (the API checks again).
  $("#nav [data-nav=health]").hidden = !can("admin");
  $("#signin").hidden = true;
  $("#nav").hidden = false;
  $("#view").hidden = false;
  $("#signout").hidden = false;
  window.addEventListener("hashchange", route);
  if (!location.hash) location.hash = "#/incidents";
  else route();
  pendingBadge().catch(() => {});
  sinksBadge().catch(() => {});
  setInterval(() => {
    pendingBadge().catch(() => {});
    sinksBadge().catch(() => {});
  }, 5000);
}

$("#signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  session.token = $("#token").value.trim();
  if (!session.token) return;
  sessionStorage.setItem("ward-token", session.token);
  $("#token").value = "";
  start().catch((e) => toast(e.message, true));
});
$("#signout").addEventListener("click", () => {
  sessionStorage.removeItem("ward-token");
  location.hash = "";
  location.reload();
});

if (session.token) start().catch((e) => toast(e.message, true));
else $("#signin").hidden = false;

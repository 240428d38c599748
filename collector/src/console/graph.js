// The attack-story graph: alerts on a time axis along the top, entities in one
// lane per kind below, each placed under the alerts that name it. The layout is
// deterministic (same incident, same picture). Drawn as one SVG string with few
// elements (all edges are one path). It draws one page of alerts (the caller's) and
// at most MAX_PER_LANE entities a lane (the most alerted), saying how many more.
// Repeats are grouped: alerts of one rule on the same entity (the one of theirs
// most alerted on the page: a device, a user, a dropped file) are one node with a
// count, so a noisy rule is one node, not a bar of overlapping circles. The picture
// is laid out at natural size and shown through a zoom and pan transform (wheel,
// drag, the +/−/reset buttons, and +, −, arrows and 0 on the keyboard), fitted to
// the box at first. Node count is bounded by the page (200) plus the lanes' caps.

import { esc, entityLabel, shortTime } from "./util.js";

const LANES = ["device", "user", "mailbox", "process", "lineage", "file", "ip", "domain", "url"];
const LANE_NAMES = { device: "devices", user: "users", mailbox: "mailboxes", process: "processes", lineage: "process trees",
  file: "files", ip: "IPs", domain: "domains", url: "URLs" };
/** Entities drawn in one lane at most (the most alerted of the page). */
const MAX_PER_LANE = 60;
const TOP = 44;
const LANE_H = 44;
const LEFT = 80;
const MIN_GAP = 16;
/** Room for one alert node on the time axis at least (a count label fits). */
const MIN_SLOT = 24;
/** Lanes with more entities than this show labels on hover only. */
const MAX_LABELLED = 12;
/** Zoom limits, and the smallest scale the first view fits to. */
const MIN_SCALE = 0.1;
const MAX_SCALE = 6;
const MIN_FIT = 0.25;
/** One arrow key pans this many screen pixels; one zoom step is this factor. */
const PAN_STEP = 60;
const ZOOM_STEP = 1.25;

function clip(s, n) { return s.length > n ? "…" + s.slice(s.length - n + 1) : s; }

function pathOf(edges) {
  let d = "";
  for (const e of edges) d += `M${e.x1} ${e.y1}L${e.x2} ${e.y2}`;
  return d;
}

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/**
 * Groups the page's alerts: one group per rule and anchor entity, the anchor being
 * the alert's entity that most alerts of the page name (ties: lane order, then
 * key). Groups come in the time order of their first alert.
 */
export function groupAlerts(alerts, entities) {
  const ofAlert = new Map();
  entities.forEach((e, i) => {
    for (const id of e.alert_ids) {
      if (!ofAlert.has(id)) ofAlert.set(id, []);
      ofAlert.get(id).push(i);
    }
  });
  const rank = (i) => {
    const l = LANES.indexOf(entities[i].kind);
    return l < 0 ? LANES.length : l;
  };
  const better = (i, j) => {
    const d = entities[i].alert_ids.length - entities[j].alert_ids.length;
    if (d) return d > 0;
    if (rank(i) !== rank(j)) return rank(i) < rank(j);
    return String(entities[i].key) < String(entities[j].key);
  };
  const groups = new Map();
  for (const a of alerts) {
    let anchor = -1;
    for (const i of ofAlert.get(a.id) || []) if (anchor < 0 || better(i, anchor)) anchor = i;
    // An alert naming no entity of the page stands alone.
    const key = anchor < 0 ? "alert|" + a.id : a.rule.id + "|" + anchor;
    let g = groups.get(key);
    if (!g) {
      g = { key, anchor, alerts: [], severity: a.severity, rule: a.rule };
      groups.set(key, g);
    }
    g.alerts.push(a);
  }
  return [...groups.values()];
}

/**
 * Draws the graph into `box`. Returns a controller: `step(n)` shows the first n
 * events in time order (`steps` is their count), `selectEntity(i)` highlights an
 * entity's alerts, `selectAlert(id)` an alert's group and its entities; `zoom(f)`,
 * `pan(dx, dy)` and `reset()` move the view. `onSelectAlert(id, ids)` gets the
 * alert chosen and the ids of its group.
 */
export function drawGraph(box, detail, { onSelectEntity, onSelectAlert }) {
  const alerts = detail.alerts.map((l) => l.alert).sort((a, b) => a.observed_at_ms - b.observed_at_ms || (a.id < b.id ? -1 : 1));
  const groups = groupAlerts(alerts, detail.entities);
  const boxW = box.clientWidth || 900;
  const dx = Math.max(MIN_SLOT, Math.min(160, (boxW - LEFT - 60) / Math.max(groups.length, 1)));
  const groupOf = new Map();
  groups.forEach((g, k) => {
    g.x = LEFT + dx * (k + 0.5);
    g.r = 6 + Math.min(4, Math.log2(g.alerts.length));
    for (const a of g.alerts) groupOf.set(a.id, k);
  });
  const lanes = LANES.filter((k) => detail.entities.some((e) => e.kind === k));
  // The most alerted entities of each lane; the others are counted, not drawn.
  const hidden = new Map();
  const kept = new Set();
  for (const k of lanes) {
    const mine = detail.entities.map((e, i) => [e, i]).filter(([e]) => e.kind === k)
      .sort(([a], [b]) => b.alert_ids.length - a.alert_ids.length);
    mine.slice(0, MAX_PER_LANE).forEach(([, i]) => kept.add(i));
    if (mine.length > MAX_PER_LANE) hidden.set(k, mine.length - MAX_PER_LANE);
  }
  const ents = [];
  detail.entities.forEach((e, i) => {
    if (!kept.has(i)) return;
    // The groups it links to, once each.
    const gs = [...new Set(e.alert_ids.map((id) => groupOf.get(id)).filter((g) => g !== undefined))];
    ents.push({ e, i, gs, lane: lanes.indexOf(e.kind), x: gs.length ? gs.reduce((s, g) => s + groups[g].x, 0) / gs.length : LEFT, y: 0 });
  });
  const entByIndex = new Map(ents.map((n) => [n.i, n]));
  // Spread entities of one lane so none overlaps, keeping their order on the time axis.
  const perLane = lanes.map(() => []);
  for (const n of ents) perLane[n.lane].push(n);
  const labelled = perLane.map((row) => row.length <= MAX_LABELLED);
  perLane.forEach((row, l) => {
    row.sort((a, b) => a.x - b.x);
    let last = -Infinity;
    let gap = MIN_GAP;
    for (const n of row) {
      n.x = Math.round(Math.max(n.x, last + gap));
      last = n.x;
      n.y = TOP + 50 + l * LANE_H;
      // A labelled entity keeps room for its label (about 6 px a character).
      gap = labelled[l] ? Math.max(MIN_GAP, 18 + 6 * Math.min(22, entityLabel(n.e.value).length)) : MIN_GAP;
    }
  });
  const maxX = Math.max(Math.ceil(LEFT + 30 + dx * groups.length), ...ents.map((n) => n.x + 130));
  const height = TOP + 50 + lanes.length * LANE_H;

  // Play order: every group and entity by its first time (an entity right after its first alert).
  const order = [];
  groups.forEach((g, k) => order.push({ t: g.alerts[0].observed_at_ms, id: "g" + k, rank: 0 }));
  for (const n of ents) order.push({ t: n.e.first_seen_ms, id: "e" + n.i, rank: 1 });
  order.sort((p, q) => p.t - q.t || p.rank - q.rank);
  const stepOf = new Map(order.map((o, i) => [o.id, i + 1]));

  const edges = [];
  for (const n of ents) {
    const s = stepOf.get("e" + n.i);
    for (const k of n.gs) {
      const g = groups[k];
      edges.push({ x1: g.x.toFixed(1), y1: TOP + g.r - 6, x2: n.x, y2: n.y - 8, step: Math.max(s, stepOf.get("g" + k)), e: n.i, g: k });
    }
  }

  const parts = [`<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="100%" height="${height}" tabindex="0" role="group"
    aria-label="Attack story graph: plus and minus zoom, arrow keys pan, 0 resets the view"><g class="viewport">`,
    `<line class="axis" x1="${LEFT}" y1="${TOP}" x2="${maxX}" y2="${TOP}"></line>`];
  if (alerts.length) {
    parts.push(`<text class="lane" x="${LEFT}" y="12">${esc(shortTime(alerts[0].observed_at_ms))}</text>`,
      `<text class="lane" x="${maxX - 90}" y="12">${esc(shortTime(alerts[alerts.length - 1].observed_at_ms))}</text>`);
  }
  parts.push(`<path class="edges" d="${pathOf(edges)}"></path><path class="edges-hl" d=""></path>`);
  groups.forEach((g, k) => {
    const a = g.alerts[0];
    const n = g.alerts.length;
    const on = g.anchor >= 0 ? entityLabel(detail.entities[g.anchor].value) : "";
    const label = `alert: ${a.rule.title}, ${a.severity}` + (n > 1 ? `, ${n} alerts on ${on}` : "");
    const step = stepOf.get("g" + k);
    parts.push(`<circle class="node alert sevdot-${esc(a.severity)}${n > 1 ? " group" : ""}" tabindex="0" role="button" aria-label="${esc(label)}" data-step="${step}" data-group="${k}" data-count="${n}" data-alert="${esc(a.id)}" cx="${g.x.toFixed(1)}" cy="${TOP}" r="${g.r.toFixed(1)}"></circle>`);
    if (n > 1) parts.push(`<text class="gcount" data-step="${step}" data-group="${k}" x="${g.x.toFixed(1)}" y="${(TOP - g.r - 4).toFixed(1)}">×${esc(n)}</text>`);
  });
  for (const n of ents) {
    const label = entityLabel(n.e.value);
    const step = stepOf.get("e" + n.i);
    parts.push(`<rect class="node entity" tabindex="0" role="button" aria-label="${esc(`${n.e.kind}: ${label}`)}" data-step="${step}" data-entity="${n.i}" data-kind="${esc(n.e.kind)}" data-label="${esc(label)}" x="${n.x - 6}" y="${n.y - 8}" width="12" height="12" rx="2"></rect>`);
    if (labelled[n.lane]) parts.push(`<text class="elabel" data-step="${step}" x="${n.x + 9}" y="${n.y + 2}">${esc(clip(label, 22))}</text>`);
  }
  // Lane names stay at the left edge whatever the pan; their rows follow the zoom.
  parts.push(`</g><g class="lanes"><rect class="lanes-bg" x="0" y="0" width="${LEFT - 8}" height="${height}"></rect>`);
  const laneRows = [["alerts", TOP + 4]];
  lanes.forEach((k, l) => {
    laneRows.push([LANE_NAMES[k] || k, TOP + 54 + l * LANE_H]);
    if (hidden.has(k)) laneRows.push([`+${hidden.get(k)} more`, TOP + 66 + l * LANE_H]);
  });
  for (const [t, y] of laneRows) parts.push(`<text class="lane" x="4" y="${y}" data-y="${y}">${esc(t)}</text>`);
  parts.push("</g></svg><div class=\"graph-tip\" hidden></div>");
  box.innerHTML = parts.join("");
  const svg = box.firstChild;
  const tip = box.lastChild;
  const viewport = svg.querySelector("g.viewport");
  const laneTexts = Array.from(svg.querySelectorAll("g.lanes text"));
  const edgePath = svg.querySelector("path.edges");
  const hlPath = svg.querySelector("path.edges-hl");
  const stepped = Array.from(svg.querySelectorAll("[data-step]"));
  let shown = order.length;

  // The view: screen = translate + scale × natural. First fitted to the box's width.
  const view = { s: 1, x: 0, y: 0 };
  const apply = () => {
    viewport.setAttribute("transform", `translate(${view.x.toFixed(1)} ${view.y.toFixed(1)}) scale(${view.s.toFixed(4)})`);
    for (const t of laneTexts) t.setAttribute("y", (view.y + Number(t.dataset.y) * view.s).toFixed(1));
    svg.dataset.zoom = view.s.toFixed(4);
    tip.hidden = true;
  };
  // Fitting keeps the time axis starting right of the lane names and makes the box
  // as tall as the fitted picture.
  const fit = () => {
    const w = svg.clientWidth || boxW;
    view.s = clamp(Math.min(1, (w - LEFT - 8) / (maxX - LEFT)), MIN_FIT, 1);
    view.x = LEFT * (1 - view.s);
    view.y = 0;
    svg.setAttribute("height", String(Math.ceil(Math.max(160, height * view.s + 12))));
    apply();
  };
  /** Zooms by `f` keeping the screen point (cx, cy) still (the centre by default). */
  const zoomAt = (f, cx, cy) => {
    const s = clamp(view.s * f, MIN_SCALE, MAX_SCALE);
    const px = cx ?? (svg.clientWidth || boxW) / 2;
    const py = cy ?? (svg.clientHeight || height) / 2;
    view.x = px - (px - view.x) * (s / view.s);
    view.y = py - (py - view.y) * (s / view.s);
    view.s = s;
    apply();
  };
  const panBy = (x, y) => { view.x += x; view.y += y; apply(); };

  const ctl = {
    steps: order.length,
    groups: groups.length,
    step(k) {
      shown = k;
      for (const el of stepped) el.classList.toggle("hidden", Number(el.dataset.step) > k);
      edgePath.setAttribute("d", pathOf(edges.filter((e) => e.step <= k)));
      hlPath.setAttribute("d", "");
    },
    clear() {
      for (const el of svg.querySelectorAll(".hl, .dim, .sel")) el.classList.remove("hl", "dim", "sel");
      hlPath.setAttribute("d", "");
    },
    /** Highlights entity `i` and its alerts, dims the rest. */
    selectEntity(i) {
      ctl.clear();
      const n = entByIndex.get(i);
      if (!n) return;
      const mine = new Set(n.gs.map(String));
      for (const c of svg.querySelectorAll("circle.alert")) c.classList.add(mine.has(c.dataset.group) ? "hl" : "dim");
      for (const r of svg.querySelectorAll("rect.entity")) if (r.dataset.entity !== String(i)) r.classList.add("dim");
      edgePath.classList.add("dim");
      hlPath.setAttribute("d", pathOf(edges.filter((e) => e.e === i && e.step <= shown)));
      svg.querySelector(`rect.entity[data-entity="${i}"]`)?.classList.add("sel");
    },
    /** Highlights the group of alert `id` and its entities; returns the group's alert ids. */
    selectAlert(id) {
      ctl.clear();
      const k = groupOf.get(id);
      if (k === undefined) return [];
      const linked = new Set(ents.filter((n) => n.gs.includes(k)).map((n) => String(n.i)));
      for (const r of svg.querySelectorAll("rect.entity")) r.classList.add(linked.has(r.dataset.entity) ? "hl" : "dim");
      for (const c of svg.querySelectorAll("circle.alert")) c.classList.add(c.dataset.group === String(k) ? "hl" : "dim");
      edgePath.classList.add("dim");
      hlPath.setAttribute("d", pathOf(edges.filter((e) => e.g === k && e.step <= shown)));
      return groups[k].alerts.map((a) => a.id);
    },
    /** The alerts of alert `id`'s group (itself alone when not grouped). */
    groupOf(id) {
      const k = groupOf.get(id);
      return k === undefined ? [] : groups[k].alerts;
    },
    zoom(f) { zoomAt(f); },
    pan(x, y) { panBy(x, y); },
    reset: fit,
  };
  const choose = (el) => {
    if (!el) { ctl.clear(); onSelectEntity(null); return; }
    if (el.dataset.entity !== undefined) { ctl.selectEntity(Number(el.dataset.entity)); onSelectEntity(Number(el.dataset.entity)); }
    else onSelectAlert(el.dataset.alert, ctl.selectAlert(el.dataset.alert));
  };
  // A click that ended a drag is not a selection.
  let dragged = false;
  svg.addEventListener("click", (ev) => { if (!dragged) choose(ev.target.closest(".node")); });
  svg.addEventListener("keydown", (ev) => {
    const el = ev.target.closest(".node");
    // Nodes are buttons for the keyboard too (Tab to one, Enter or Space to select).
    if (el && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); choose(el); return; }
    const move = { ArrowLeft: [PAN_STEP, 0], ArrowRight: [-PAN_STEP, 0], ArrowUp: [0, PAN_STEP], ArrowDown: [0, -PAN_STEP] }[ev.key];
    if (move) panBy(...move);
    else if (ev.key === "+" || ev.key === "=") zoomAt(ZOOM_STEP);
    else if (ev.key === "-" || ev.key === "_") zoomAt(1 / ZOOM_STEP);
    else if (ev.key === "0") fit();
    else return;
    ev.preventDefault();
  });
  svg.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const r = svg.getBoundingClientRect();
    zoomAt(ev.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP, ev.clientX - r.left, ev.clientY - r.top);
  }, { passive: false });
  // Drag anywhere (a node too) to pan; a press without movement stays a click.
  let drag = null;
  svg.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    drag = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, id: ev.pointerId };
    dragged = false;
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag || ev.pointerId !== drag.id) return;
    const mx = ev.clientX - drag.x;
    const my = ev.clientY - drag.y;
    if (!dragged && Math.abs(mx) + Math.abs(my) < 4) return;
    if (!dragged) { dragged = true; svg.setPointerCapture(ev.pointerId); svg.classList.add("panning"); }
    view.x = drag.vx + mx;
    view.y = drag.vy + my;
    apply();
  });
  const endDrag = () => { drag = null; svg.classList.remove("panning"); };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  // One tooltip for every node, instead of a <title> element per node.
  svg.addEventListener("mouseover", (ev) => {
    const el = ev.target.closest(".node");
    if (!el || drag) { tip.hidden = true; return; }
    let text = "";
    if (el.dataset.group !== undefined) {
      const g = groups[Number(el.dataset.group)];
      const a = g.alerts[0];
      const last = g.alerts[g.alerts.length - 1];
      text = `${a.rule.title} · ${a.severity} · ` + (g.alerts.length > 1
        ? `${g.alerts.length} alerts on ${entityLabel(detail.entities[g.anchor].value)}, ${new Date(a.observed_at_ms).toLocaleString()} – ${new Date(last.observed_at_ms).toLocaleTimeString()}`
        : new Date(a.observed_at_ms).toLocaleString());
    } else {
      const e = entByIndex.get(Number(el.dataset.entity))?.e;
      if (e) text = `${e.kind}: ${entityLabel(e.value)} · ${e.verdict} · ${e.alert_ids.length} alerts`;
    }
    if (!text) { tip.hidden = true; return; }
    tip.textContent = text;
    const r = el.getBoundingClientRect();
    const b = box.getBoundingClientRect();
    tip.style.left = Math.max(0, r.right - b.left + 4) + "px";
    tip.style.top = r.bottom - b.top + 4 + "px";
    tip.hidden = false;
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
  fit();
  return ctl;
}

// The attack-story graph: alerts on a time axis along the top, entities in one
// lane per kind below, each placed under the alerts that name it. The layout is
// deterministic (same incident, same picture). Drawn as one SVG string with few
// elements (all edges are one path). It draws one page of alerts (the caller's) and
// at most MAX_PER_LANE entities a lane (the most alerted), saying how many more, so
// even an incident of 100,000 alerts gives a picture of bounded size.

import { esc, entityLabel, shortTime } from "./util.js";

const LANES = ["device", "user", "mailbox", "process", "lineage", "file", "ip", "domain", "url"];
const LANE_NAMES = { device: "devices", user: "users", mailbox: "mailboxes", process: "processes", lineage: "process trees",
  file: "files", ip: "IPs", domain: "domains", url: "URLs" };
/** Entities drawn in one lane at most (the most alerted of the page). */
const MAX_PER_LANE = 60;
const TOP = 40;
const LANE_H = 44;
const LEFT = 80;
const MIN_GAP = 16;
/** Lanes with more entities than this show labels on hover only. */
const MAX_LABELLED = 40;

function clip(s, n) { return s.length > n ? "…" + s.slice(s.length - n + 1) : s; }

function pathOf(edges) {
  let d = "";
  for (const e of edges) d += `M${e.x1} ${e.y1}L${e.x2} ${e.y2}`;
  return d;
}

/**
 * Draws the graph into `box`. Returns a controller: `step(n)` shows the first n
 * events in time order (`steps` is their count), `selectEntity(i)` highlights an
 * entity's alerts, `selectAlert(id)` an alert's entities.
 */
export function drawGraph(box, detail, { onSelectEntity, onSelectAlert }) {
  const alerts = detail.alerts.map((l) => l.alert).sort((a, b) => a.observed_at_ms - b.observed_at_ms);
  const width = Math.max(box.clientWidth || 900, 900);
  const dx = Math.max(4, Math.min(160, (width - LEFT - 60) / Math.max(alerts.length, 1)));
  const ax = new Map(alerts.map((a, i) => [a.id, LEFT + dx * (i + 0.5)]));
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
    const xs = e.alert_ids.map((id) => ax.get(id)).filter((x) => x !== undefined);
    ents.push({ e, i, lane: lanes.indexOf(e.kind), x: xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : LEFT, y: 0 });
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
  const maxX = Math.max(Math.ceil(LEFT + 30 + dx * alerts.length), ...ents.map((n) => n.x + 130));
  const height = TOP + 50 + lanes.length * LANE_H;

  // Play order: every alert and entity by its first time (an entity right after its first alert).
  const order = [];
  for (const a of alerts) order.push({ t: a.observed_at_ms, id: "a" + a.id, rank: 0 });
  for (const n of ents) order.push({ t: n.e.first_seen_ms, id: "e" + n.i, rank: 1 });
  order.sort((p, q) => p.t - q.t || p.rank - q.rank);
  const stepOf = new Map(order.map((o, i) => [o.id, i + 1]));

  const edges = [];
  for (const n of ents) {
    const s = stepOf.get("e" + n.i);
    for (const id of n.e.alert_ids) {
      const x = ax.get(id);
      if (x !== undefined) edges.push({ x1: x.toFixed(1), y1: TOP, x2: n.x, y2: n.y - 8, step: Math.max(s, stepOf.get("a" + id)), e: n.i, a: id });
    }
  }

  const parts = [`<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="${maxX}" height="${height}">`,
    `<line class="axis" x1="${LEFT}" y1="${TOP}" x2="${maxX}" y2="${TOP}"></line><text class="lane" x="4" y="${TOP + 4}">alerts</text>`];
  lanes.forEach((k, l) => {
    parts.push(`<text class="lane" x="4" y="${TOP + 54 + l * LANE_H}">${esc(LANE_NAMES[k] || k)}</text>`);
    if (hidden.has(k)) parts.push(`<text class="lane" x="4" y="${TOP + 66 + l * LANE_H}">+${esc(hidden.get(k))} more</text>`);
  });
  if (alerts.length) {
    parts.push(`<text class="lane" x="${LEFT}" y="14">${esc(shortTime(alerts[0].observed_at_ms))}</text>`,
      `<text class="lane" x="${maxX - 90}" y="14">${esc(shortTime(alerts[alerts.length - 1].observed_at_ms))}</text>`);
  }
  parts.push(`<path class="edges" d="${pathOf(edges)}"></path><path class="edges-hl" d=""></path>`);
  for (const a of alerts) {
    parts.push(`<circle class="node alert sevdot-${esc(a.severity)}" tabindex="0" role="button" aria-label="${esc(`alert: ${a.rule.title}, ${a.severity}`)}" data-step="${stepOf.get("a" + a.id)}" data-alert="${esc(a.id)}" cx="${ax.get(a.id).toFixed(1)}" cy="${TOP}" r="6"></circle>`);
  }
  for (const n of ents) {
    const label = entityLabel(n.e.value);
    const step = stepOf.get("e" + n.i);
    parts.push(`<rect class="node entity" tabindex="0" role="button" aria-label="${esc(`${n.e.kind}: ${label}`)}" data-step="${step}" data-entity="${n.i}" data-kind="${esc(n.e.kind)}" data-label="${esc(label)}" x="${n.x - 6}" y="${n.y - 8}" width="12" height="12" rx="2"></rect>`);
    if (labelled[n.lane]) parts.push(`<text class="elabel" data-step="${step}" x="${n.x + 9}" y="${n.y + 2}">${esc(clip(label, 22))}</text>`);
  }
  parts.push("</svg><div class=\"graph-tip\" hidden></div>");
  box.innerHTML = parts.join("");
  const svg = box.firstChild;
  const tip = box.lastChild;
  const edgePath = svg.querySelector("path.edges");
  const hlPath = svg.querySelector("path.edges-hl");
  const stepped = Array.from(svg.querySelectorAll("[data-step]"));
  const alertById = new Map(alerts.map((a) => [a.id, a]));
  let shown = order.length;

  const ctl = {
    steps: order.length,
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
      const mine = new Set(n.e.alert_ids);
      for (const c of svg.querySelectorAll("circle.alert")) c.classList.add(mine.has(c.dataset.alert) ? "hl" : "dim");
      for (const r of svg.querySelectorAll("rect.entity")) if (r.dataset.entity !== String(i)) r.classList.add("dim");
      edgePath.classList.add("dim");
      hlPath.setAttribute("d", pathOf(edges.filter((e) => e.e === i && e.step <= shown)));
      svg.querySelector(`rect.entity[data-entity="${i}"]`)?.classList.add("sel");
    },
    selectAlert(id) {
      ctl.clear();
      const linked = new Set(ents.filter((n) => n.e.alert_ids.includes(id)).map((n) => String(n.i)));
      for (const r of svg.querySelectorAll("rect.entity")) r.classList.add(linked.has(r.dataset.entity) ? "hl" : "dim");
      for (const c of svg.querySelectorAll("circle.alert")) c.classList.add(c.dataset.alert === id ? "hl" : "dim");
      edgePath.classList.add("dim");
      hlPath.setAttribute("d", pathOf(edges.filter((e) => e.a === id && e.step <= shown)));
    },
  };
  const choose = (el) => {
    if (!el) { ctl.clear(); onSelectEntity(null); return; }
    if (el.dataset.entity !== undefined) { ctl.selectEntity(Number(el.dataset.entity)); onSelectEntity(Number(el.dataset.entity)); }
    else { ctl.selectAlert(el.dataset.alert); onSelectAlert(el.dataset.alert); }
  };
  svg.addEventListener("click", (ev) => choose(ev.target.closest(".node")));
  // Nodes are buttons for the keyboard too (Tab to one, Enter or Space to select).
  svg.addEventListener("keydown", (ev) => {
    const el = ev.target.closest(".node");
    if (el && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); choose(el); }
  });
  // One tooltip for every node, instead of a <title> element per node.
  svg.addEventListener("mouseover", (ev) => {
    const el = ev.target.closest(".node");
    if (!el) { tip.hidden = true; return; }
    const a = el.dataset.alert && alertById.get(el.dataset.alert);
    const e = el.dataset.entity !== undefined && entByIndex.get(Number(el.dataset.entity))?.e;
    if (!a && !e) { tip.hidden = true; return; }
    tip.textContent = a ? `${a.rule.title} · ${a.severity} · ${new Date(a.observed_at_ms).toLocaleString()}`
      : `${e.kind}: ${entityLabel(e.value)} · ${e.verdict} · ${e.alert_ids.length} alerts`;
    tip.style.left = Math.max(0, Number(el.getAttribute("cx") || el.getAttribute("x")) - box.scrollLeft + 12) + "px";
    tip.style.top = Number(el.getAttribute("cy") || el.getAttribute("y")) + 14 + "px";
    tip.hidden = false;
  });
  svg.addEventListener("mouseleave", () => { tip.hidden = true; });
  return ctl;
}

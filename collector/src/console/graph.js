// The attack-story graph: alerts on a time axis along the top, entities in one
// lane per kind below, each placed under the alerts that name it. The layout is
// deterministic (same incident, same picture), drawn as one SVG string.

import { esc, entityLabel, shortTime } from "./util.js";

const LANES = ["device", "user", "mailbox", "process", "file", "ip", "domain", "url"];
const TOP = 40;
const LANE_H = 44;
const LEFT = 80;
const MIN_GAP = 16;

function clip(s, n) { return s.length > n ? "…" + s.slice(s.length - n + 1) : s; }

/**
 * Draws the graph into `box`. Returns a controller: `step(n)` shows the first n
 * events in time order, `steps` their count, `select(key)` highlights an entity's alerts.
 */
export function drawGraph(box, detail, { onSelectEntity, onSelectAlert }) {
  const alerts = detail.alerts.map((l) => l.alert).sort((a, b) => a.observed_at_ms - b.observed_at_ms);
  const width = Math.max(box.clientWidth || 900, 900);
  const dx = Math.max(6, Math.min(48, (width - LEFT - 30) / Math.max(alerts.length, 1)));
  const svgW = Math.ceil(LEFT + 30 + dx * alerts.length);
  const ax = new Map(alerts.map((a, i) => [a.id, LEFT + dx * (i + 0.5)]));
  const lanes = LANES.filter((k) => detail.entities.some((e) => e.kind === k));
  const ents = detail.entities.map((e, i) => {
    const xs = e.alert_ids.map((id) => ax.get(id)).filter((x) => x !== undefined);
    return { e, i, lane: lanes.indexOf(e.kind), x: xs.length ? xs.reduce((s, x) => s + x, 0) / xs.length : LEFT, y: 0 };
  });
  // Spread entities of one lane so none overlaps, keeping their order on the time axis.
  for (let l = 0; l < lanes.length; l++) {
    const row = ents.filter((n) => n.lane === l).sort((a, b) => a.x - b.x);
    let last = -Infinity;
    for (const n of row) { n.x = Math.max(n.x, last + MIN_GAP); last = n.x; n.y = TOP + 50 + l * LANE_H; }
  }
  const labelled = new Set(lanes.map((_, l) => l).filter((l) => ents.filter((n) => n.lane === l).length <= 40));
  const maxX = Math.max(svgW, ...ents.map((n) => n.x + 120));
  const height = TOP + 50 + lanes.length * LANE_H;

  // Play order: every alert and entity by its first time (an entity right after its first alert).
  const order = [];
  for (const a of alerts) order.push({ t: a.observed_at_ms, id: "a" + a.id, rank: 0 });
  for (const n of ents) order.push({ t: n.e.first_seen_ms, id: "e" + n.i, rank: 1 });
  order.sort((p, q) => p.t - q.t || p.rank - q.rank);
  const stepOf = new Map(order.map((o, i) => [o.id, i + 1]));

  const parts = [`<svg id="graph" xmlns="http://www.w3.org/2000/svg" width="${maxX}" height="${height}">`];
  parts.push(`<line class="axis" x1="${LEFT}" y1="${TOP}" x2="${maxX}" y2="${TOP}"></line><text class="lane" x="4" y="${TOP + 4}">alerts</text>`);
  lanes.forEach((k, l) => parts.push(`<text class="lane" x="4" y="${TOP + 54 + l * LANE_H}">${esc(k)}s</text>`));
  if (alerts.length) {
    parts.push(`<text class="lane" x="${LEFT}" y="14">${esc(shortTime(alerts[0].observed_at_ms))}</text>`);
    parts.push(`<text class="lane" x="${maxX - 90}" y="14">${esc(shortTime(alerts[alerts.length - 1].observed_at_ms))}</text>`);
  }
  for (const n of ents) {
    const s = stepOf.get("e" + n.i);
    for (const id of n.e.alert_ids) {
      const x = ax.get(id);
      if (x === undefined) continue;
      const step = Math.max(s, stepOf.get("a" + id));
      parts.push(`<line class="edge" data-step="${step}" data-e="${n.i}" data-a="${esc(id)}" x1="${x.toFixed(1)}" y1="${TOP}" x2="${n.x.toFixed(1)}" y2="${n.y - 8}"></line>`);
    }
  }
  for (const a of alerts) {
    parts.push(`<g class="node alert" data-step="${stepOf.get("a" + a.id)}" data-alert="${esc(a.id)}"><circle cx="${ax.get(a.id).toFixed(1)}" cy="${TOP}" r="6" class="sevdot-${esc(a.severity)}"></circle><title>${esc(a.rule.title + " · " + new Date(a.observed_at_ms).toLocaleString())}</title></g>`);
  }
  for (const n of ents) {
    const label = entityLabel(n.e.value);
    parts.push(`<g class="node entity" data-step="${stepOf.get("e" + n.i)}" data-entity="${n.i}"><rect x="${(n.x - 6).toFixed(1)}" y="${n.y - 8}" width="12" height="12" rx="2"></rect>`
      + (labelled.has(n.lane) ? `<text x="${(n.x + 9).toFixed(1)}" y="${n.y + 2}">${esc(clip(label, 22))}</text>` : "")
      + `<title>${esc(n.e.kind + ": " + label + " · " + n.e.verdict)}</title></g>`);
  }
  parts.push("</svg>");
  box.innerHTML = parts.join("");
  const svg = box.firstChild;
  const stepped = Array.from(svg.querySelectorAll("[data-step]"));

  const ctl = {
    steps: order.length,
    step(k) { for (const el of stepped) el.classList.toggle("hidden", Number(el.dataset.step) > k); },
    clear() { for (const el of svg.querySelectorAll(".hl, .dim, .sel")) el.classList.remove("hl", "dim", "sel"); },
    /** Highlights entity `i` and its alerts, dims the rest. */
    selectEntity(i) {
      ctl.clear();
      const n = ents[i];
      if (!n) return;
      const mine = new Set(n.e.alert_ids);
      for (const g of svg.querySelectorAll("g.alert")) g.classList.add(mine.has(g.dataset.alert) ? "hl" : "dim");
      for (const g of svg.querySelectorAll("g.entity")) if (g.dataset.entity !== String(i)) g.classList.add("dim");
      for (const l of svg.querySelectorAll("line.edge")) if (l.dataset.e !== String(i)) l.classList.add("dim");
      svg.querySelector(`g.entity[data-entity="${i}"]`)?.classList.add("sel");
    },
    selectAlert(id) {
      ctl.clear();
      for (const l of svg.querySelectorAll("line.edge")) if (l.dataset.a !== id) l.classList.add("dim");
      const linked = new Set(ents.filter((n) => n.e.alert_ids.includes(id)).map((n) => String(n.i)));
      for (const g of svg.querySelectorAll("g.entity")) g.classList.add(linked.has(g.dataset.entity) ? "hl" : "dim");
      for (const g of svg.querySelectorAll("g.alert")) g.classList.add(g.dataset.alert === id ? "hl" : "dim");
    },
  };
  svg.addEventListener("click", (ev) => {
    const g = ev.target.closest("g.node");
    if (!g) { ctl.clear(); onSelectEntity(null); return; }
    if (g.dataset.entity !== undefined) { ctl.selectEntity(Number(g.dataset.entity)); onSelectEntity(Number(g.dataset.entity)); }
    else { ctl.selectAlert(g.dataset.alert); onSelectAlert(g.dataset.alert); }
  });
  return ctl;
}

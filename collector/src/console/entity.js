// Entity pages (#/entity/user?value=alice, #/entity/ip?value=…, #/entity/file?value=<sha256 or path>):
// the incidents that hold the entity, its newest alerts and the devices they came
// from, the sign-in and mail records that name it, and for a file every copy (a
// device and path, or a mail attachment) with its own remediation status. Opened
// from the entities in hunting results; analysts and up (the API checks again).

import { api, esc, time, sev } from "./util.js";

const KINDS = { user: "User", ip: "IP address", file: "File" };
const REMEDIATION = { none: "not remediated", pending: "pending approval", in_progress: "in progress", remediated: "remediated", failed: "failed", not_applicable: "no Ward action (mailbox)" };

/** The link to an entity's page. */
export const entityHref = (kind, value) => `#/entity/${encodeURIComponent(kind)}?value=${encodeURIComponent(value)}`;

function table(id, page, cell) {
  if (!page) return "";
  if (page.stopped) return `<p class="warn">Stopped: it ${esc(page.stopped)}.</p>`;
  if (!page.rows.length) return `<p class="muted">None.</p>`;
  const more = page.total > page.rows.length ? `<p class="hint">The newest ${page.rows.length} of ${esc(page.total.toLocaleString("en-US"))}${page.total_capped ? "+" : ""}.</p>` : "";
  return `<div class="table-wrap"><table id="${id}"><thead><tr>${page.columns.map((c) => `<th scope="col">${esc(c.replace(/_/g, " "))}</th>`).join("")}</tr></thead>
    <tbody>${page.rows.map((r) => `<tr>${page.columns.map((c, i) => `<td class="hunt-cell">${cell(c, r[i])}</td>`).join("")}</tr>`).join("")}</tbody></table></div>${more}`;
}

function cell(c, v) {
  if (v == null || v === "") return `<span class="muted">—</span>`;
  if (c === "time") return esc(time(v));
  if (c === "severity") return sev(v);
  if (c === "id") return `<a href="#/alert/${esc(v)}">${esc(v)}</a>`;
  return esc(v);
}

function copiesCard(d) {
  if (!d.copies) return "";
  const rows = d.copies.map((c) => c.where === "device"
    ? `<tr class="copy"><td>on <a href="#/device/${esc(c.device_id)}">${esc(c.hostname || c.device_id)}</a></td><td class="mono hunt-cell">${esc(c.path)}</td>
        <td>${esc(time(c.first_seen_ms))} – ${esc(time(c.last_seen_ms))}</td><td>${esc(c.alert_count)}</td>
        <td class="remediation rem-${esc(c.remediation)}">${esc(REMEDIATION[c.remediation] || c.remediation)}</td></tr>`
    : `<tr class="copy"><td>mail to ${esc(c.recipient)}</td><td class="hunt-cell">${esc(c.file_name || "")} <span class="muted">in “${esc(c.subject || "")}” from ${esc(c.sender || "?")}</span></td>
        <td>${esc(time(c.last_seen_ms))}</td><td>—</td><td class="remediation rem-${esc(c.remediation)}">${esc(REMEDIATION[c.remediation] || c.remediation)}</td></tr>`).join("");
  return `<section class="card"><h3>Copies (${esc(d.copies.length)})</h3>
    ${d.copies_stopped ? `<p class="warn">The search for copies stopped: it ${esc(d.copies_stopped)}; the list may be short.</p>` : ""}
    <p class="hint">Each copy is its own evidence: quarantining one leaves the others as they are.</p>
    ${rows ? `<div class="table-wrap"><table id="entity-copies"><thead><tr><th scope="col">Where</th><th scope="col">Path or attachment</th><th scope="col">Seen</th><th scope="col">Alerts</th><th scope="col">Remediation</th></tr></thead>
    <tbody>${rows}</tbody></table></div>` : `<p class="muted">No copy seen in alerts.</p>`}</section>`;
}

export async function entityView(root, args, q, current) {
  const kind = args[0];
  const value = q.get("value") || "";
  const d = await api(`/api/v1/entities/${encodeURIComponent(kind)}?value=${encodeURIComponent(value)}`);
  if (!current()) return;
  root.innerHTML = `<section class="card"><h2>${esc(KINDS[kind] || kind)} <span class="mono" id="entity-value">${esc(d.value)}</span></h2>
      <div class="summary"><span><span class="k">incidents</span>${esc(d.incidents.length)}</span>
      <span><span class="k">alerts</span>${esc(d.alerts && d.alerts.total != null ? d.alerts.total.toLocaleString("en-US") : "—")}</span>
      <span><span class="k">devices</span>${esc(d.devices.length)}</span>
      <a href="#/hunt?source=alerts&range=all&q=${encodeURIComponent(kind === "file" && !/^[0-9a-f]{64}$/.test(d.value) ? `entities ~ "${d.value}"` : `${kind} = "${d.value}"`)}">Hunt its alerts</a></div></section>
    ${copiesCard(d)}
    <section class="card"><h3>Incidents</h3>${d.incidents.map((i) => `<div class="entity-incident">${sev(i.severity)} <a href="#/incident/${esc(i.id)}">${esc(i.title)}</a>
      <span class="muted small">${esc(i.status.replace("_", " "))} · ${esc(time(i.last_activity_ms))}</span></div>`).join("") || `<p class="muted">None.</p>`}
      <h3>Devices</h3>${d.devices.map((x) => `<span class="pill">${esc(x.hostname)} · ${esc(x.alerts)} alerts</span>`).join("") || `<p class="muted">None among its newest alerts.</p>`}</section>
    <section class="card"><h3>Alerts</h3>${table("entity-alerts", d.alerts, cell)}</section>
    ${d.sign_ins ? `<section class="card"><h3>Sign-ins</h3>${table("entity-sign-ins", d.sign_ins, cell)}</section>` : ""}
    ${d.mail ? `<section class="card"><h3>Mail</h3>${table("entity-mail", d.mail, cell)}</section>` : ""}`;
}

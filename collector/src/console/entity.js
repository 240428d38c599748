// Entity pages (#/entity/user?value=alice, #/entity/ip?value=…, #/entity/file?value=<sha256 or path>,
// #/entity/mailbox?value=<address>): the incidents that hold the entity, its newest
// alerts and the devices they came from, the sign-in and mail records that name it,
// for a file every copy (a device and path, or a mail attachment) with its own
// remediation status, and for a mailbox the messages it received with their
// verdicts, its URL clicks, inbox-rule changes and what was done after delivery.
// Opened from entities wherever they are shown (hunting results, the incident's
// evidence and assets, the alert page); analysts and up (the API checks again).

import { api, can, esc, time, sev } from "./util.js";

const KINDS = { user: "User", ip: "IP address", file: "File", mailbox: "Mailbox" };
const REMEDIATION = { none: "not remediated", pending: "pending approval", in_progress: "in progress", remediated: "remediated", failed: "failed", not_applicable: "no Ward action (mailbox)" };

/** The link to an entity's page. */
export const entityHref = (kind, value) => `#/entity/${encodeURIComponent(kind)}?value=${encodeURIComponent(value)}`;

/** The page of an entity as the API shows entities ({kind, name|addr|path|sha256|address}), or null when it has none. */
export function entityPage(e) {
  if (!e) return null;
  switch (e.kind) {
    case "user": return e.name ? entityHref("user", e.name) : null;
    case "ip": return e.addr ? entityHref("ip", e.addr) : null;
    case "mailbox": return e.address ? entityHref("mailbox", e.address) : null;
    case "file": return e.sha256 ? entityHref("file", e.sha256) : String(e.path || "").startsWith("/") ? entityHref("file", e.path) : null;
    default: return null;
  }
}

/** `html` linked to the entity's page when it has one. */
export const linkEntity = (e, html) => {
  // Entity pages are for analysts and up (the API refuses viewers).
  const href = can("analyst") ? entityPage(e) : null;
  return href ? `<a class="entity-link" href="${esc(href)}">${html}</a>` : html;
};

/** A mail address linked to its mailbox page. */
export const mailboxLink = (v) => (typeof v === "string" && v.includes("@") ? `<a href="${esc(entityHref("mailbox", v))}">${esc(v)}</a>` : esc(v));

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
  if (c === "sender" || c === "recipient" || c === "changed_by") return mailboxLink(v);
  if (c === "verdict") return `<span class="warn">${esc(v)}</span>`;
  // The message's every record (attachments, URLs, clicks), in hunting.
  if (c === "message_id") return `<a href="#/hunt?source=mail&range=all&q=${encodeURIComponent(`network_message_id = "${v}"`)}">${esc(v)}</a>`;
  return esc(v);
}

/** A mailbox's own mail records, one card a list. */
function mailboxCards(d) {
  if (d.kind !== "mailbox") return "";
  const card = (id, title, hint, page) => `<section class="card"><h3>${esc(title)}</h3>${hint ? `<p class="hint">${esc(hint)}</p>` : ""}${table(id, page, cell)}</section>`;
  return card("mailbox-messages", "Messages received", "With the mail filter's verdict and where each was delivered.", d.messages)
    + card("mailbox-clicks", "URL clicks", "", d.clicks)
    + card("mailbox-rules", "Inbox rules and forwarding", "Changes from the Exchange audit log: a rule that forwards mail out or hides it is a common sign of a taken-over mailbox.", d.inbox_rules)
    + card("mailbox-after", "After delivery", "Messages moved or removed after delivery (ZAP, an administrator).", d.after_delivery);
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
    ${copiesCard(d)}${mailboxCards(d)}
    <section class="card"><h3>Incidents</h3>${d.incidents.map((i) => `<div class="entity-incident">${sev(i.severity)} <a href="#/incident/${esc(i.id)}">${esc(i.title)}</a>
      <span class="muted small">${esc(i.status.replace("_", " "))} · ${esc(time(i.last_activity_ms))}</span></div>`).join("") || `<p class="muted">None.</p>`}
      <h3>Devices</h3>${d.devices.map((x) => `<span class="pill">${esc(x.hostname)} · ${esc(x.alerts)} alerts</span>`).join("") || `<p class="muted">None among its newest alerts.</p>`}</section>
    <section class="card"><h3>Alerts</h3>${table("entity-alerts", d.alerts, cell)}</section>
    ${d.sign_ins ? `<section class="card"><h3>Sign-ins</h3>${table("entity-sign-ins", d.sign_ins, cell)}</section>` : ""}
    ${d.mail ? `<section class="card"><h3>Mail</h3>${table("entity-mail", d.mail, cell)}</section>` : ""}
    ${d.directory ? `<section class="card"><h3>Directory and audit events${kind === "user" ? " by this user" : ""}</h3>${table("entity-directory", d.directory, cell)}</section>` : ""}
    ${d.directory_about ? `<section class="card"><h3>Directory and audit events about this user</h3>${table("entity-directory-about", d.directory_about, cell)}</section>` : ""}`;
}

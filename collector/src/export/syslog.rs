//! Syslog messages: RFC 5424 with Ward's JSON as the message, or ArcSight CEF
//! (version 0) carried in an RFC 5424 message; octet-counting framing for TCP and
//! TLS (RFC 5425, RFC 6587). Pure.
//!
//! CEF escaping follows the CEF specification (Micro Focus "Implementing ArcSight
//! CEF" 25): in the header a backslash and a pipe are escaped with a backslash;
//! in the extension a backslash and an equals sign are escaped, and a line feed
//! and a carriage return are written as `\n` and `\r`. A header holds no line
//! breaks: they become spaces.

use std::fmt::Write as _;

use serde_json::Value;
use ward_protocol::Severity;

use super::format::{PRODUCT_VERSION, ward_json};
use super::record::Record;

/// The structured-data id of Ward's parameters. 32473 is the private enterprise
/// number RFC 5612 reserves for documentation and examples: Ward has none of its own.
pub const SD_ID: &str = "ward@32473";

/// Syslog severity for a record's severity (RFC 5424 table 2).
fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Informational => 6,
    }
}

/// CEF severity, 0-10.
fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Informational => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Escapes an SD-PARAM value (RFC 5424 6.3.3: `"`, `\` and `]`).
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A header field (HOSTNAME, APP-NAME...): printable US-ASCII without spaces,
/// at most `max` characters, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() { "-".into() } else { f }
}

fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

/// The message's time: an alert's observation, an incident's latest change.
fn event_ms(r: &Record) -> i64 {
    match r {
        Record::Alert(a) => a.alert.observed_at_ms,
        Record::Incident(i) => i.at_ms(),
    }
}

/// An RFC 5424 message (no framing): `<PRI>1 TIMESTAMP HOSTNAME ward - MSGID [SD] MSG`.
fn rfc5424(r: &Record, facility: u8, hostname: &str, msg: &str) -> String {
    let pri = u16::from(facility.min(23)) * 8 + u16::from(syslog_severity(r.severity()));
    let (msgid, kind) = match r {
        Record::Alert(_) => ("alert", "alert"),
        Record::Incident(_) => ("incident", "incident"),
    };
    let mut sd = format!(
        "[{SD_ID} id=\"{}\" kind=\"{kind}\" severity=\"{}\"",
        sd_escape(r.id()),
        r.severity().as_str()
    );
    match r {
        Record::Alert(a) => {
            let _ = write!(
                sd,
                " rule=\"{}\" source=\"{}\"",
                sd_escape(&a.alert.rule.id),
                sd_escape(&a.alert.source)
            );
        }
        Record::Incident(i) => {
            let _ = write!(
                sd,
                " incident=\"{}\" status=\"{}\"",
                sd_escape(&i.incident.id),
                sd_escape(&i.incident.status)
            );
        }
    }
    sd.push(']');
    format!(
        "<{pri}>1 {} {} ward - {msgid} {sd} {msg}",
        timestamp(event_ms(r)),
        header_field(hostname, 255)
    )
}

/// RFC 5424 with Ward's JSON (one line) as the message.
pub fn rfc5424_json(r: &Record, facility: u8, hostname: &str) -> String {
    rfc5424(r, facility, hostname, &ward_json(r).to_string())
}

/// RFC 5424 carrying a CEF event as its message.
pub fn rfc5424_cef(r: &Record, facility: u8, hostname: &str) -> String {
    rfc5424(r, facility, hostname, &cef(r, hostname))
}

/// Escapes a CEF header field: `\` and `|`; line breaks become spaces.
pub fn cef_header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a CEF extension value: `\`, `=`, and line breaks as `\n`, `\r`.
pub fn cef_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn strings(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

/// A CEF:0 event: `CEF:0|Ward|Ward EDR|version|signature|name|severity|extension`.
pub fn cef(r: &Record, hostname: &str) -> String {
    let mut ext: Vec<(&str, String)> = Vec::new();
    let (signature, name) = match r {
        Record::Alert(a) => {
            ext.push(("rt", a.alert.observed_at_ms.to_string()));
            ext.push(("externalId", a.alert.id.clone()));
            ext.push(("cnt", a.alert.count.to_string()));
            ext.push(("cat", a.alert.source.clone()));
            ext.push(("msg", a.alert.rule.title.clone()));
            if let Some(d) = &a.alert.device_id {
                ext.push(("deviceExternalId", d.clone()));
            }
            if let Some(h) = &a.hostname {
                ext.push(("dvchost", h.clone()));
            }
            ext.push(("cs1Label", "techniques".into()));
            ext.push(("cs1", strings(&a.alert.rule.techniques)));
            ext.push(("cs2Label", "tactics".into()));
            ext.push(("cs2", strings(&a.alert.rule.tactics)));
            ext.push(("cs3Label", "recordId".into()));
            ext.push(("cs3", a.id.clone()));
            ext.push(("cs4Label", "matched".into()));
            ext.push(("cs4", a.alert.matched.to_string()));
            (a.alert.rule.id.clone(), a.alert.rule.title.clone())
        }
        Record::Incident(i) => {
            let kinds: Vec<&str> = i.changes.iter().map(|c| c.kind.as_str()).collect();
            ext.push(("rt", i.at_ms().to_string()));
            ext.push(("externalId", i.incident.id.clone()));
            ext.push(("cat", "incident".into()));
            ext.push(("msg", i.incident.title.clone()));
            ext.push(("outcome", i.incident.status.clone()));
            ext.push(("cnt", i.incident.alert_count.to_string()));
            ext.push(("cs1Label", "changes".into()));
            ext.push(("cs1", kinds.join(",")));
            ext.push(("cs2Label", "sources".into()));
            ext.push(("cs2", i.incident.sources.join(",")));
            ext.push(("cs3Label", "recordId".into()));
            ext.push(("cs3", i.id.clone()));
            if let Some(a) = &i.incident.assignee {
                ext.push(("suser", a.clone()));
            }
            (
                format!("incident:{}", kinds.last().copied().unwrap_or("change")),
                i.incident.title.clone(),
            )
        }
    };
    ext.push(("dvc", hostname.to_string()));
    let ext: Vec<String> = ext.into_iter().map(|(k, v)| format!("{k}={}", cef_value(&v))).collect();
    format!(
        "CEF:0|Ward|Ward EDR|{}|{}|{}|{}|{}",
        cef_header(PRODUCT_VERSION),
        cef_header(&signature),
        cef_header(&name),
        cef_severity(r.severity()),
        ext.join(" ")
    )
}

/// Octet-counting framing (RFC 5425 4.3): `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// Largest message sent in one UDP datagram (RFC 5426 3.2: IPv4's limit less
/// headers); longer ones are cut there, at a character boundary.
pub const UDP_MAX: usize = 65_507;

/// A message for one datagram.
pub fn udp_datagram(msg: &[u8]) -> &[u8] {
    if msg.len() <= UDP_MAX {
        return msg;
    }
    let mut end = UDP_MAX;
    while end > 0 && (msg[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &msg[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::export::record::AlertRecord;
    use crate::export::record::tests::alert;

    fn record() -> Record {
        Record::Alert(AlertRecord {
            id: "alert-01ALERT0001".into(),
            alert: alert(1, "high", "agent"),
            hostname: Some("host-1".into()),
        })
    }

    #[test]
    fn cef_escapes_header_and_extension_as_the_spec_says() {
        let check = |input: &str, header: &str, value: &str| {
            assert_eq!(cef_header(input), header, "header of {input:?}");
            assert_eq!(cef_value(input), value, "value of {input:?}");
        };
        check("plain", "plain", "plain");
        check("a|b", "a\\|b", "a|b");
        check("a\\b", "a\\\\b", "a\\\\b");
        check("a=b", "a=b", "a\\=b");
        check("l1\nl2\r", "l1 l2 ", "l1\\nl2\\r");
        check("x\\|=y", "x\\\\\\|=y", "x\\\\|\\=y");
    }

    #[test]
    fn a_cef_alert_names_its_rule_and_escapes_its_title() {
        let cef = cef(&record(), "collector-1");
        assert!(
            cef.starts_with(&format!(
                "CEF:0|Ward|Ward EDR|{PRODUCT_VERSION}|rule-1|Reverse shell \\| via \\\\bash=tcp|8|rt=1700000000001 "
            )),
            "{cef}"
        );
        assert!(cef.contains(" msg=Reverse shell | via \\\\bash\\=tcp "), "{cef}");
        assert!(cef.contains(" dvchost=host-1 "), "{cef}");
        assert!(cef.contains("cs4=") && !cef.contains('\n'), "{cef}");
    }

    #[test]
    fn rfc5424_header_and_structured_data() {
        let m = rfc5424_json(&record(), 13, "collector 1");
        // facility 13 (log audit) * 8 + severity 3 (error) for a high alert.
        assert!(
            m.starts_with(
                "<107>1 2023-11-14T22:13:20.001Z collector1 ward - alert [ward@32473 id=\"alert-01ALERT0001\" kind=\"alert\" severity=\"high\" rule=\"rule-1\" source=\"agent\"] {"
            ),
            "{m}"
        );
        let json: Value = serde_json::from_str(&m[m.find("] {").unwrap() + 2..]).unwrap();
        assert_eq!(json["alert"]["id"], "01ALERT0001");
        assert_eq!(sd_escape("a\"b]c\\"), "a\\\"b\\]c\\\\");
    }

    #[test]
    fn octet_counting_counts_bytes_not_characters() {
        let mut out = Vec::new();
        octet_counted("é".as_bytes(), &mut out);
        octet_counted(b"ab", &mut out);
        assert_eq!(out, b"2 \xc3\xa92 ab");
    }

    #[test]
    fn a_datagram_is_cut_at_a_character_boundary() {
        let long = "é".repeat(UDP_MAX);
        let d = udp_datagram(long.as_bytes());
        assert!(d.len() <= UDP_MAX && std::str::from_utf8(d).is_ok());
        assert_eq!(udp_datagram(b"short"), b"short");
    }
}

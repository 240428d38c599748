//! Reading fields the way exports spell them: names compared without case
//! (`UserPrincipalName` in a table, `userPrincipalName` in a diagnostic record),
//! Log Analytics' `_dynamic` / `_string` column suffixes, JSON held in string cells
//! (CSV exports), and the timestamp formats of each export.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDateTime};
use serde_json::Value;

/// The value at a dotted path (`status.errorCode`), names compared without case;
/// a string holding a JSON object or array is read as JSON on the way down.
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<Cow<'a, Value>> {
    let mut cur: Cow<'a, Value> = Cow::Borrowed(root);
    for segment in path.split('.') {
        cur = match cur {
            Cow::Borrowed(v) => child(v, segment)?,
            Cow::Owned(v) => Cow::Owned(child(&v, segment)?.into_owned()),
        };
    }
    Some(cur)
}

fn child<'a>(v: &'a Value, name: &str) -> Option<Cow<'a, Value>> {
    let v = as_json(v)?;
    match v {
        Cow::Borrowed(Value::Object(map)) => [name.to_string(), format!("{name}_dynamic"), format!("{name}_string")]
            .iter()
            .find_map(|n| {
                map.iter()
                    .find(|(k, v)| k.eq_ignore_ascii_case(n) && !is_empty(v))
                    .map(|(_, v)| v)
            })
            .map(Cow::Borrowed),
        Cow::Owned(Value::Object(map)) => map
            .into_iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(name) && !is_empty(v))
            .map(|(_, v)| Cow::Owned(v)),
        _ => None,
    }
}

/// The value itself, or the JSON a string holds when it looks like an object or array.
pub fn as_json(v: &Value) -> Option<Cow<'_, Value>> {
    match v {
        Value::String(s) => {
            let t = s.trim_start();
            if t.starts_with('{') || t.starts_with('[') {
                serde_json::from_str(t).ok().map(Cow::Owned)
            } else {
                Some(Cow::Borrowed(v))
            }
        }
        other => Some(Cow::Borrowed(other)),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// The first of `paths` that holds a scalar, as trimmed text.
pub fn text(root: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        let v = lookup(root, p)?;
        scalar(&v)
    })
}

/// A scalar as text: strings trimmed, numbers and booleans printed; objects and arrays are not scalars.
pub fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A number at one of `paths` (JSON number or numeric text).
pub fn number(root: &Value, paths: &[&str]) -> Option<f64> {
    paths
        .iter()
        .find_map(|p| match lookup(root, p)?.as_ref() {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        })
        .filter(|n: &f64| n.is_finite())
}

/// The elements of an array at `path` (also when a CSV cell holds it as JSON text);
/// a scalar there is a list of one.
pub fn list(root: &Value, path: &str) -> Vec<Value> {
    let Some(v) = lookup(root, path) else {
        return Vec::new();
    };
    match as_json(&v).map(Cow::into_owned) {
        Some(Value::Array(items)) => items,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// A compact JSON rendering of an object or array at one of `paths` (its text for a scalar).
pub fn compact(root: &Value, paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        let v = lookup(root, p)?;
        match v.as_ref() {
            Value::Object(m) if m.is_empty() => None,
            Value::Array(a) if a.is_empty() => None,
            Value::Object(_) | Value::Array(_) => Some(v.to_string()),
            other => scalar(other),
        }
    })
}

/// Unix milliseconds from the timestamp formats the exports use: RFC 3339
/// (`2025-01-15T14:23:10.1234567Z`), the same without a zone or with a space
/// (`2024-05-02 18:46:21.121000000`, Panther / Okta as UTC), and Log Analytics'
/// CSV export (`4/28/2021, 2:08:45.221 PM`, UTC).
pub fn parse_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let ms = if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.timestamp_millis()
    } else {
        const NAIVE: [&str; 6] = [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%m/%d/%Y, %I:%M:%S%.f %p",
            "%m/%d/%Y %I:%M:%S%.f %p",
            "%m/%d/%Y %H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f UTC",
        ];
        NAIVE
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())?
            .and_utc()
            .timestamp_millis()
    };
    u64::try_from(ms).ok()
}

/// The first of `paths` that holds a timestamp in a known format.
pub fn time(root: &Value, paths: &[&str]) -> Option<u64> {
    paths.iter().find_map(|p| parse_time(&text(root, &[p])?))
}

/// Lowercase hex SHA-256 of the record's canonical JSON (object keys sorted),
/// the dedup key of a record that carries no id of its own.
pub fn record_hash(v: &Value) -> String {
    hex::encode(crate::util::sha256(canonical(v).as_bytes()))
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
            pairs.sort_by_key(|(k, _)| *k);
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String((*k).clone()), canonical(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// An email address or UPN without angle brackets, lowercased; None when empty.
pub fn address(s: Option<String>) -> Option<String> {
    s.map(|a| a.trim().trim_matches(|c| c == '<' || c == '>').to_ascii_lowercase())
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_ignore_case_suffixes_and_read_json_cells() {
        let row = json!({
            "LocationDetails_dynamic": "{\"city\":\"Tel Aviv\",\"geoCoordinates\":{\"latitude\":32.1}}",
            "Status_string": "",
            "Status_dynamic": {"errorCode": 50126},
            "UserPrincipalName": "Adele@Example.com",
        });
        assert_eq!(text(&row, &["userPrincipalName"]).unwrap(), "Adele@Example.com");
        assert_eq!(text(&row, &["locationDetails.city"]).unwrap(), "Tel Aviv");
        assert_eq!(number(&row, &["locationdetails.geoCoordinates.latitude"]), Some(32.1));
        assert_eq!(text(&row, &["status.errorCode"]).unwrap(), "50126");
        assert_eq!(
            text(&row, &["missing", "UserPrincipalName"]).unwrap(),
            "Adele@Example.com"
        );
        assert!(lookup(&row, "status.nothing").is_none());
    }

    #[test]
    fn timestamps_of_every_export_parse_as_utc() {
        let t = 1_619_618_925_221; // 2021-04-28T14:08:45.221Z
        assert_eq!(parse_time("2021-04-28T14:08:45.2213421+00:00"), Some(t));
        assert_eq!(parse_time("2021-04-28T14:08:45.221Z"), Some(t));
        assert_eq!(parse_time("2021-04-28 14:08:45.221000000"), Some(t));
        assert_eq!(parse_time("2021-04-28T14:08:45.221"), Some(t));
        assert_eq!(parse_time("4/28/2021, 2:08:45.221 PM"), Some(t));
        assert_eq!(parse_time("4/28/2021, 2:08:45 AM"), Some(t - 12 * 3_600_000 - 221));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("1960-01-01T00:00:00Z"), None);
    }

    #[test]
    fn record_hash_ignores_key_order() {
        assert_eq!(
            record_hash(&json!({"a": 1, "b": [1, {"c": 2, "d": 3}]})),
            record_hash(&json!({"b": [1, {"d": 3, "c": 2}], "a": 1}))
        );
        assert_ne!(record_hash(&json!({"a": 1})), record_hash(&json!({"a": 2})));
    }
}

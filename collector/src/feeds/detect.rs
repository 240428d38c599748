//! Recognising a file's container by its shape, without a flag: a JSON array of
//! records, an object with `records[]` (Azure diagnostic settings, Defender
//! streaming API) or `value[]` (Graph API pages), a single JSON object, NDJSON
//! (one object per line), or CSV with a header row. Each record comes out as a
//! JSON value (a CSV row as an object of strings) with its position in the file.

use serde_json::{Map, Value};

use super::Skipped;

/// Where a record is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line where the record starts (NDJSON, CSV); None inside a JSON document.
    pub line: Option<u64>,
    /// Position among the file's records, from 1.
    pub record: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    JsonArray,
    Records,
    JsonObject,
    Ndjson,
    Csv,
}

impl Container {
    pub fn as_str(self) -> &'static str {
        match self {
            Container::JsonArray => "json",
            Container::Records => "records",
            Container::JsonObject => "json",
            Container::Ndjson => "ndjson",
            Container::Csv => "csv",
        }
    }
}

#[derive(Debug)]
pub struct RawRecord {
    pub pos: Position,
    pub value: Value,
}

#[derive(Debug)]
pub struct Split {
    pub container: Container,
    pub records: Vec<RawRecord>,
    pub skipped: Vec<Skipped>,
}

/// Splits a file into records. Err only when the file as a whole cannot be read
/// (empty, not UTF-8, broken JSON document, CSV without a header).
pub fn split(bytes: &[u8], max_record_bytes: usize) -> Result<Split, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let trimmed = text.trim_start();
    match trimmed.chars().next() {
        None => Err("the file is empty".into()),
        Some('[') => {
            let doc: Value = serde_json::from_str(trimmed).map_err(|e| format!("not a JSON array: {e}"))?;
            Ok(from_array(Container::JsonArray, doc))
        }
        Some('{') => match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Object(mut obj)) => {
                for list in ["records", "value"] {
                    if let Some(Value::Array(_)) = obj.get(list) {
                        let items = obj.remove(list).unwrap_or(Value::Null);
                        return Ok(from_array(Container::Records, items));
                    }
                }
                Ok(from_array(
                    Container::JsonObject,
                    Value::Array(vec![Value::Object(obj)]),
                ))
            }
            // Several objects: one per line.
            _ => Ok(ndjson(text, max_record_bytes)),
        },
        Some(_) => csv_rows(bytes, max_record_bytes),
    }
}

fn from_array(container: Container, doc: Value) -> Split {
    let mut out = Split {
        container,
        records: Vec::new(),
        skipped: Vec::new(),
    };
    let Value::Array(items) = doc else { return out };
    for (i, value) in items.into_iter().enumerate() {
        let pos = Position {
            line: None,
            record: i as u64 + 1,
        };
        if value.is_object() {
            out.records.push(RawRecord { pos, value });
        } else {
            out.skipped.push(Skipped {
                line: None,
                record: pos.record,
                reason: "not a JSON object".into(),
            });
        }
    }
    out
}

fn ndjson(text: &str, max_record_bytes: usize) -> Split {
    let mut out = Split {
        container: Container::Ndjson,
        records: Vec::new(),
        skipped: Vec::new(),
    };
    let mut record = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        record += 1;
        let pos = Position {
            line: Some(i as u64 + 1),
            record,
        };
        let skip = |reason: String| Skipped {
            line: pos.line,
            record,
            reason,
        };
        if line.len() > max_record_bytes {
            out.skipped.push(skip(format!(
                "record of {} bytes is over the {max_record_bytes}-byte limit",
                line.len()
            )));
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value @ Value::Object(_)) => out.records.push(RawRecord { pos, value }),
            Ok(_) => out.skipped.push(skip("not a JSON object".into())),
            Err(e) => out.skipped.push(skip(format!("not JSON: {e}"))),
        }
    }
    out
}

fn csv_rows(bytes: &[u8], max_record_bytes: usize) -> Result<Split, String> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("not CSV: {e}"))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if headers.len() < 2 || headers.iter().all(String::is_empty) {
        return Err("not a supported shape: neither JSON nor CSV with a header row".into());
    }
    let mut out = Split {
        container: Container::Csv,
        records: Vec::new(),
        skipped: Vec::new(),
    };
    let mut row = csv::StringRecord::new();
    let mut record = 0;
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                record += 1;
                let pos = Position {
                    line: Some(row.position().map_or(line, |p| p.line())),
                    record,
                };
                let size = row.as_byte_record().as_slice().len();
                if size > max_record_bytes {
                    out.skipped.push(Skipped {
                        line: pos.line,
                        record,
                        reason: format!("record of {size} bytes is over the {max_record_bytes}-byte limit"),
                    });
                    continue;
                }
                if row.len() != headers.len() {
                    out.skipped.push(Skipped {
                        line: pos.line,
                        record,
                        reason: format!("{} cells where the header has {}", row.len(), headers.len()),
                    });
                    continue;
                }
                let mut obj = Map::new();
                for (name, cell) in headers.iter().zip(row.iter()) {
                    if !cell.trim().is_empty() {
                        obj.insert(name.clone(), Value::String(cell.to_string()));
                    }
                }
                out.records.push(RawRecord {
                    pos,
                    value: Value::Object(obj),
                });
            }
            Err(e) => {
                record += 1;
                out.skipped.push(Skipped {
                    line: Some(e.position().map_or(line, |p| p.line())),
                    record,
                    reason: format!("unreadable CSV record: {e}"),
                });
                // A record that is not UTF-8 is skipped; a broken quote leaves nothing to resync on.
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_recognised_without_a_flag() {
        let s = split(b"[{\"a\":1}, 3]", 100).unwrap();
        assert_eq!(
            (s.container, s.records.len(), s.skipped.len()),
            (Container::JsonArray, 1, 1)
        );
        let s = split(b"{\"records\":[{\"a\":1},{\"a\":2}]}", 100).unwrap();
        assert_eq!((s.container, s.records.len()), (Container::Records, 2));
        let s = split(b"{\"a\":1}", 100).unwrap();
        assert_eq!((s.container, s.records.len()), (Container::JsonObject, 1));
        let s = split(b"\xEF\xBB\xBF{\"a\":1}\n\n{\"a\":\n{\"a\":3}\n", 100).unwrap();
        assert_eq!((s.container, s.records.len()), (Container::Ndjson, 2));
        assert_eq!(s.skipped[0].line, Some(3));
        assert_eq!(
            s.records[1].pos,
            Position {
                line: Some(4),
                record: 3
            }
        );
        let s = split(b"A,B\n1,\"{\"\"x\"\":\n2}\"\n3,4\n5\n", 100).unwrap();
        assert_eq!((s.container, s.records.len()), (Container::Csv, 2));
        assert_eq!(s.records[0].value["B"], "{\"x\":\n2}");
        assert_eq!(
            s.records[1].pos,
            Position {
                line: Some(4),
                record: 2
            }
        );
        assert_eq!(s.skipped[0].line, Some(5));
    }

    #[test]
    fn unreadable_files_and_oversized_records_are_refused() {
        assert!(split(b"", 100).is_err());
        assert!(split(b"   \n", 100).is_err());
        assert!(split(b"[{\"a\":", 100).is_err());
        assert!(split(b"\xff\xfe", 100).is_err());
        assert!(split(b"just text\n", 100).is_err());
        let long = format!("{{\"a\":\"{}\"}}\n{{\"a\":1}}\n", "x".repeat(200));
        let s = split(long.as_bytes(), 100).unwrap();
        assert_eq!((s.records.len(), s.skipped.len()), (1, 1));
        assert!(s.skipped[0].reason.contains("limit"));
    }
}

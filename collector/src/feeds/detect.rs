//! Recognising a file's container by its shape, without a flag: a JSON array of
//! records, an object with `records[]` (Azure diagnostic settings, Defender
//! streaming API) or `value[]` (Graph API pages), a single JSON object, NDJSON
//! (one object per line), or CSV with a header row. Each record comes out as a
//! JSON value (a CSV row as an object of strings) with its position in the file:
//! its line and its number. `max_record_bytes` bounds each NDJSON line, CSV row and
//! element of a JSON array.

use serde_json::{Map, Value};

use super::stream::{self, Position, Sink, Top, oversize};

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

/// Splits a file into records, handing each to `sink` in file order (so a file
/// of millions of bad lines costs a counter, not a list). Err only when the file
/// as a whole cannot be read (empty, not UTF-8, a JSON document broken before its
/// first record, no CSV header).
pub fn split(bytes: &[u8], max_record_bytes: usize, sink: &mut Sink<'_>) -> Result<Container, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let trimmed = text.trim_start();
    match trimmed.chars().next() {
        None => Err("the file is empty".into()),
        Some(first @ ('[' | '{')) => {
            if is_ndjson(trimmed) {
                ndjson(text, max_record_bytes, sink);
                return Ok(Container::Ndjson);
            }
            let container = if first == '[' {
                Container::JsonArray
            } else {
                Container::Records
            };
            let skipped = text.len() - trimmed.len();
            let line = 1 + text.bytes().take(skipped).filter(|&b| b == b'\n').count() as u64;
            json_document(trimmed, line, container, max_record_bytes, sink)
        }
        Some(_) => csv_rows(bytes, max_record_bytes, sink).map(|()| Container::Csv),
    }
}

/// A JSON document starting on `line`: its records streamed, or itself one record.
/// A break in its structure keeps the records before it and is reported as one more.
fn json_document(
    text: &str,
    line: u64,
    container: Container,
    max_record_bytes: usize,
    sink: &mut Sink<'_>,
) -> Result<Container, String> {
    let mut counter = 0;
    let at = |line: u64, counter: u64| Position {
        line: Some(line),
        record: counter + 1,
    };
    match stream::read(text.as_bytes(), line, max_record_bytes, sink, &mut counter) {
        Ok(read) => {
            let container = match read.top {
                Top::Streamed => container,
                Top::Object(obj) => {
                    sink(at(line, counter), Ok(Value::Object(obj)));
                    counter += 1;
                    Container::JsonObject
                }
                Top::TooLarge(size) => {
                    sink(at(line, counter), Err(oversize(size, max_record_bytes)));
                    counter += 1;
                    Container::JsonObject
                }
            };
            if let Some(trailing) = read.trailing {
                sink(
                    at(trailing, counter),
                    Err("text after the end of the JSON document".into()),
                );
            }
            Ok(container)
        }
        Err(e) if counter > 0 => {
            sink(at(e.line, counter), Err(format!("the JSON document breaks off: {e}")));
            Ok(container)
        }
        Err(e) => Err(format!("not a JSON document: {e}")),
    }
}

/// One JSON value per line: the first line holds a whole value and more follows.
fn is_ndjson(trimmed: &str) -> bool {
    let first = trimmed.lines().next().unwrap_or("");
    serde_json::from_str::<serde::de::IgnoredAny>(first).is_ok() && !trimmed[first.len()..].trim().is_empty()
}

/// Line by line; a line may be one record or a `records[]` batch (Event Hubs capture).
fn ndjson(text: &str, max_record_bytes: usize, sink: &mut Sink<'_>) {
    let mut counter = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = Some(i as u64 + 1);
        let here = |counter: u64| Position {
            line: at,
            record: counter,
        };
        if line.len() > max_record_bytes {
            counter += 1;
            sink(here(counter), Err(oversize(line.len(), max_record_bytes)));
            continue;
        }
        match stream::read(line.as_bytes(), i as u64 + 1, max_record_bytes, sink, &mut counter) {
            Ok(read) => {
                if let Top::Object(obj) = read.top {
                    counter += 1;
                    sink(here(counter), Ok(Value::Object(obj)));
                }
                if read.trailing.is_some() {
                    counter += 1;
                    sink(here(counter), Err("text after the JSON value on this line".into()));
                }
            }
            Err(e) => {
                counter += 1;
                sink(here(counter), Err(format!("not a JSON object: {e}")));
            }
        }
    }
}

fn csv_rows(bytes: &[u8], max_record_bytes: usize, sink: &mut Sink<'_>) -> Result<(), String> {
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
    let mut row = csv::StringRecord::new();
    let mut record = 0;
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                record += 1;
                let pos = Position {
                    line: Some(row.position().map_or(line, |p| p.line())),
                    record,
                };
                let size = row.as_byte_record().as_slice().len();
                if size > max_record_bytes {
                    sink(pos, Err(oversize(size, max_record_bytes)));
                } else if row.len() != headers.len() {
                    sink(
                        pos,
                        Err(format!("{} cells where the header has {}", row.len(), headers.len())),
                    );
                } else {
                    let obj: Map<String, Value> = headers
                        .iter()
                        .zip(row.iter())
                        .filter(|(_, cell)| !cell.trim().is_empty())
                        .map(|(name, cell)| (name.clone(), Value::String(cell.to_string())))
                        .collect();
                    sink(pos, Ok(Value::Object(obj)));
                }
            }
            Err(e) => {
                record += 1;
                let pos = Position {
                    line: Some(e.position().map_or(line, |p| p.line())),
                    record,
                };
                let utf8 = matches!(e.kind(), csv::ErrorKind::Utf8 { .. });
                sink(pos, Err(format!("unreadable CSV record: {e}")));
                // A record that is not UTF-8 is skipped; after a broken quote there is nothing to resync on.
                if !utf8 {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The container, the records read (position, value) and the positions skipped.
    type Seen = (Container, Vec<(Position, Value)>, Vec<(Position, String)>);

    fn run(bytes: &[u8], max: usize) -> Result<Seen, String> {
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        let container = split(bytes, max, &mut |pos, r| match r {
            Ok(v) => ok.push((pos, v)),
            Err(e) => bad.push((pos, e)),
        })?;
        Ok((container, ok, bad))
    }

    #[test]
    fn shapes_are_recognised_without_a_flag() {
        let (c, ok, bad) = run(b"[{\"a\":1}, 3]", 100).unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::JsonArray, 1, 1));
        let (c, ok, _) = run(b"{\"records\":[{\"a\":1},{\"a\":2}]}", 100).unwrap();
        assert_eq!((c, ok.len()), (Container::Records, 2));
        let (c, ok, _) = run(b"{\"a\":1}", 100).unwrap();
        assert_eq!((c, ok.len()), (Container::JsonObject, 1));
        // One object is one record: over the per-record limit it is skipped like
        // an oversized array element, not parsed whole.
        let big = format!("{{\"a\":1,\"b\":\"{}\",\"c\":2}}", "x".repeat(200));
        let (c, ok, bad) = run(big.as_bytes(), 100).unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::JsonObject, 0, 1));
        assert!(bad[0].1.contains("over the 100-byte limit"), "{bad:?}");
        // A wrapper with large other members still streams its records.
        let wrapped = format!("{{\"note\":\"{}\",\"value\":[{{\"a\":1}}]}}", "x".repeat(200));
        let (c, ok, bad) = run(wrapped.as_bytes(), 100).unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::Records, 1, 0));
        let (c, ok, bad) = run(b"\xEF\xBB\xBF{\"a\":1}\n\n{\"a\":\n{\"a\":3}\n", 100).unwrap();
        assert_eq!((c, ok.len()), (Container::Ndjson, 2));
        assert_eq!(bad[0].0.line, Some(3));
        assert_eq!(
            ok[1].0,
            Position {
                line: Some(4),
                record: 3
            }
        );
        let (c, ok, bad) = run(b"A,B\n1,\"{\"\"x\"\":\n2}\"\n3,4\n5\n", 100).unwrap();
        assert_eq!((c, ok.len()), (Container::Csv, 2));
        assert_eq!(ok[0].1["B"], "{\"x\":\n2}");
        assert_eq!(
            ok[1].0,
            Position {
                line: Some(4),
                record: 2
            }
        );
        assert_eq!(bad[0].0.line, Some(5));
    }

    #[test]
    fn large_documents_are_streamed_and_a_break_keeps_what_came_before() {
        let (c, ok, bad) = run(b"{\"records\": [{\"a\":1}, {\"a\":2}, {\"a\":", 100).unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::Records, 2, 1));
        assert_eq!(
            bad[0].0,
            Position {
                line: Some(1),
                record: 3
            }
        );
        assert!(bad[0].1.contains("breaks off"), "{}", bad[0].1);
        // A record that merely has a `value` field is one record.
        let (c, ok, _) = run(b"{\"value\": \"x\", \"b\": {\"c\": 1}}", 100).unwrap();
        assert_eq!((c, ok[0].1["b"]["c"].as_i64()), (Container::JsonObject, Some(1)));
        // Event Hubs capture: one records[] batch per line.
        let (c, ok, bad) = run(
            b"{\"records\":[{\"a\":1},{\"a\":2}]}\n{\"records\":[{\"a\":3}]}\n[1]\n",
            100,
        )
        .unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::Ndjson, 3, 1));
        assert_eq!(
            ok[2].0,
            Position {
                line: Some(2),
                record: 3
            }
        );
        assert_eq!(
            bad[0].0,
            Position {
                line: Some(3),
                record: 4
            }
        );
        let (_, ok, bad) = run(b"[{\"a\":1}] trailing", 100).unwrap();
        assert_eq!(
            (ok.len(), bad[0].1.as_str()),
            (1, "text after the end of the JSON document")
        );
    }

    #[test]
    fn a_bad_element_of_a_json_document_is_skipped_alone_with_its_line() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(3 << 20));
        // Leading blank lines count; the document starts on line 3.
        let text = format!("\n\n{{\"records\": [\n{deep},\n{{\"a\":1}},\n{big},\n{{\"a\":2}}\n]}}\n");
        let (c, ok, bad) = run(text.as_bytes(), 1 << 20).unwrap();
        assert_eq!((c, ok.len(), bad.len()), (Container::Records, 2, 2));
        let at = |line, record| Position {
            line: Some(line),
            record,
        };
        let read: Vec<Position> = ok.iter().map(|(p, _)| *p).collect();
        let skipped: Vec<Position> = bad.iter().map(|(p, _)| *p).collect();
        assert_eq!((read, skipped), (vec![at(5, 2), at(7, 4)], vec![at(4, 1), at(6, 3)]));
        assert!(bad[0].1.contains("recursion limit"), "{}", bad[0].1);
        assert!(bad[1].1.contains("over the 1048576-byte limit"), "{}", bad[1].1);
        // One object is one record, on the line it starts.
        let (_, ok, bad) = run(b"\n{\"a\": [1,\n2]}\nx", 100).unwrap();
        assert_eq!((ok[0].0, bad[0].0), (at(2, 1), at(4, 2)));
    }

    #[test]
    fn unreadable_files_and_oversized_records_are_refused() {
        for bad in [&b""[..], b"   \n", b"[{\"a\":", b"\xff\xfe", b"just text\n"] {
            assert!(run(bad, 100).is_err(), "{bad:?}");
        }
        let long = format!("{{\"a\":\"{}\"}}\n{{\"a\":1}}\n", "x".repeat(200));
        let (_, ok, bad) = run(long.as_bytes(), 100).unwrap();
        assert_eq!((ok.len(), bad.len()), (1, 1));
        assert!(bad[0].1.contains("limit"));
    }
}

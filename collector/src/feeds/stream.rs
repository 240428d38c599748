//! JSON documents read one record at a time: the elements of a top-level array, or
//! of the `records` / `value` array of a top-level object, are handed on one by one,
//! so a large export is never held as one tree. Anything else in the top-level object
//! is kept, for a file that is one record (a Proofpoint TAP batch, say).
//!
//! A byte scanner finds where each element starts and ends (strings with their
//! escapes, `{}` / `[]` depth, newlines for the line) without reading it; serde_json
//! then parses that element alone. So an element that does not parse, is nested
//! deeper than serde_json allows or is over `max_record_bytes` (never parsed) is
//! skipped alone, with the line it starts on, and the next one is read. Only a break
//! in the document's own structure (a string or bracket never closed, text between
//! elements) stops the read; the records before it have been handed on.

use std::fmt;

use serde_json::{Map, Value};
use thiserror::Error;

/// Where a record is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line of the file where the record starts, from 1 (always known; Option as in
    /// `Skipped`, whose API field it fills).
    pub line: Option<u64>,
    /// Position among the file's records, from 1.
    pub record: u64,
}

/// One record of the file in order: its JSON value, or why it could not be read.
pub type Sink<'a> = dyn FnMut(Position, Result<Value, String>) + 'a;

/// Why a record over `feeds.max_record_bytes` is skipped, whatever its container.
pub(super) fn oversize(size: usize, max_record_bytes: usize) -> String {
    format!("record of {size} bytes is over the {max_record_bytes}-byte limit")
}

/// What the top-level value turned out to be.
#[derive(Debug)]
pub enum Top {
    /// An array (or an object's `records` / `value` array) whose elements went to the sink.
    Streamed,
    /// An object without such an array: one record.
    Object(Map<String, Value>),
    /// An object without such an array, over `max_record_bytes` (its size): one
    /// record, skipped; its members past the limit were scanned, never parsed.
    TooLarge(usize),
}

/// A document read to its end.
#[derive(Debug)]
pub struct Read {
    pub top: Top,
    /// Line where text after the top-level value starts, if any follows it.
    pub trailing: Option<u64>,
}

/// Where and why the structure of a JSON document breaks.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{what} at line {line}")]
pub struct Broken {
    /// Line of the file where the document stops being readable.
    pub line: u64,
    pub what: Break,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Break {
    #[error("a string is not closed")]
    UnclosedString,
    #[error("an object or array is not closed")]
    Unclosed,
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: &'static str, found: Found },
    /// A key or value of the top-level object that serde_json refuses.
    #[error("unreadable {what}: {reason}")]
    Unreadable { what: &'static str, reason: String },
}

/// The byte found where something else was expected; None at the end of the text.
#[derive(Debug, PartialEq, Eq)]
pub struct Found(Option<u8>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("the end of the text"),
            Some(b) if b.is_ascii_graphic() => write!(f, "'{}'", char::from(b)),
            Some(b) => write!(f, "byte 0x{b:02x}"),
        }
    }
}

/// Reads the JSON value that `text` starts with (on `line` of the file), handing
/// array elements to `sink` as records. `counter` numbers the records of the file:
/// it goes up by one for each element handed on, also when a break stops the read.
pub fn read(
    text: &[u8],
    line: u64,
    max_record_bytes: usize,
    sink: &mut Sink<'_>,
    counter: &mut u64,
) -> Result<Read, Broken> {
    let mut cur = Cursor { text, pos: 0, line };
    let mut out = Records {
        sink,
        counter,
        max_record_bytes,
    };
    cur.skip_ws();
    let top = match cur.peek() {
        Some(b'[') => {
            cur.elements(&mut out)?;
            Top::Streamed
        }
        Some(b'{') => cur.object(&mut out)?,
        _ => return Err(cur.unexpected("a JSON array or object")),
    };
    cur.skip_ws();
    let trailing = cur.peek().is_some().then_some(cur.line);
    Ok(Read { top, trailing })
}

/// Where the elements go.
struct Records<'s, 'a> {
    sink: &'s mut Sink<'a>,
    counter: &'s mut u64,
    max_record_bytes: usize,
}

impl Records<'_, '_> {
    fn hand(&mut self, bytes: &[u8], line: u64) {
        *self.counter += 1;
        let pos = Position {
            line: Some(line),
            record: *self.counter,
        };
        (self.sink)(pos, record(bytes, line, self.max_record_bytes));
    }
}

/// One element's bytes as a record, or why not; too large ones are not parsed at all.
fn record(bytes: &[u8], line: u64, max_record_bytes: usize) -> Result<Value, String> {
    if bytes.len() > max_record_bytes {
        return Err(oversize(bytes.len(), max_record_bytes));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => {
            let (msg, at) = located(&e, line);
            Err(format!("unreadable JSON record: {msg} at line {at}"))
        }
    }
}

/// serde_json's message for a part of the file parsed alone, and the file's line it
/// points at (its line counted from the part's start; its column would mislead).
fn located(e: &serde_json::Error, first_line: u64) -> (String, u64) {
    let msg = e.to_string();
    let own = format!(" at line {} column {}", e.line(), e.column());
    match msg.strip_suffix(&own) {
        Some(bare) if e.line() > 0 => (bare.to_string(), first_line.saturating_add(e.line() as u64 - 1)),
        _ => (msg, first_line),
    }
}

/// A value's bytes in the text and the line it starts on.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    line: u64,
}

/// Position in the text, with the line it is on.
struct Cursor<'t> {
    text: &'t [u8],
    pos: usize,
    line: u64,
}

impl<'t> Cursor<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    fn unexpected(&self, expected: &'static str) -> Broken {
        Broken {
            line: self.line,
            what: Break::Unexpected {
                expected,
                found: Found(self.peek()),
            },
        }
    }

    fn bytes(&self, span: Span) -> &'t [u8] {
        self.text.get(span.start..span.end).unwrap_or_default()
    }

    /// Moves past one value without reading it (nor checking more than its extent).
    fn skip_value(&mut self) -> Result<Span, Broken> {
        let (start, line) = (self.pos, self.line);
        match self.peek() {
            Some(b'{' | b'[') => self.skip_nested(line)?,
            Some(b'"') => self.skip_string(line)?,
            Some(b) if is_scalar(b) => {
                while self.peek().is_some_and(is_scalar) {
                    self.bump();
                }
            }
            _ => return Err(self.unexpected("a value")),
        }
        Ok(Span {
            start,
            end: self.pos,
            line,
        })
    }

    /// From an opening quote past its closing one.
    fn skip_string(&mut self, line: u64) -> Result<(), Broken> {
        self.bump();
        let mut escaped = false;
        loop {
            match self.bump() {
                None => {
                    return Err(Broken {
                        line,
                        what: Break::UnclosedString,
                    });
                }
                Some(b'\\') if !escaped => escaped = true,
                Some(b'"') if !escaped => return Ok(()),
                Some(_) => escaped = false,
            }
        }
    }

    /// From an opening bracket past the one that brings the depth back to zero. Only
    /// the depth is counted (no stack of kinds): `{]` balances here and is left to
    /// serde_json to refuse, for that element only.
    fn skip_nested(&mut self, line: u64) -> Result<(), Broken> {
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => {
                    return Err(Broken {
                        line,
                        what: Break::Unclosed,
                    });
                }
                Some(b'"') => {
                    self.skip_string(self.line)?;
                    continue;
                }
                Some(b'{' | b'[') => depth += 1,
                Some(b'}' | b']') => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.bump();
                        return Ok(());
                    }
                }
                Some(_) => {}
            }
            self.bump();
        }
    }

    /// An array whose elements are records, from its `[` past its `]`.
    fn elements(&mut self, out: &mut Records<'_, '_>) -> Result<(), Broken> {
        self.bump();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.bump();
            return Ok(());
        }
        loop {
            let span = self.skip_value()?;
            out.hand(self.bytes(span), span.line);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                    self.skip_ws();
                }
                Some(b']') => {
                    self.bump();
                    return Ok(());
                }
                _ => return Err(self.unexpected("',' or ']' after a record")),
            }
        }
    }

    /// The top-level object, from its `{` past its `}`: its first `records` / `value`
    /// array is streamed, the other members are kept in case the object is one record.
    fn object(&mut self, out: &mut Records<'_, '_>) -> Result<Top, Broken> {
        let start = self.pos;
        self.bump();
        self.skip_ws();
        let mut rest = Map::new();
        let mut streamed = false;
        // A member that does not parse matters only if the object is a record.
        let mut unreadable = None;
        if self.peek() == Some(b'}') {
            self.bump();
            return Ok(Top::Object(rest));
        }
        loop {
            let key = self.key()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.unexpected("':' after a key"));
            }
            self.bump();
            self.skip_ws();
            if !streamed && (key == "records" || key == "value") && self.peek() == Some(b'[') {
                self.elements(out)?;
                streamed = true;
            } else {
                let span = self.skip_value()?;
                // Once the object is past the record limit, it can only be a
                // wrapper (records or value still to come): stop building it.
                let too_large = self.pos - start > out.max_record_bytes;
                if too_large {
                    rest = Map::new();
                }
                if !streamed && unreadable.is_none() && !too_large {
                    match parse(self.bytes(span), span.line, "value") {
                        Ok(v) => {
                            rest.insert(key, v);
                        }
                        Err(e) => unreadable = Some(e),
                    }
                }
            }
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.bump();
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.bump();
                    break;
                }
                _ => return Err(self.unexpected("',' or '}' after a member")),
            }
        }
        let size = self.pos - start;
        match (streamed, unreadable) {
            (true, _) => Ok(Top::Streamed),
            (false, _) if size > out.max_record_bytes => Ok(Top::TooLarge(size)),
            (false, Some(e)) => Err(e),
            (false, None) => Ok(Top::Object(rest)),
        }
    }

    /// A member's key, unescaped.
    fn key(&mut self) -> Result<String, Broken> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected("a key string"));
        }
        let span = self.skip_value()?;
        parse(self.bytes(span), span.line, "key")
    }
}

/// Bytes a number, `true`, `false` or `null` is made of (a wrong word is read as one
/// value and refused by serde_json).
fn is_scalar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], line: u64, what: &'static str) -> Result<T, Broken> {
    serde_json::from_slice(bytes).map_err(|e| {
        let (reason, line) = located(&e, line);
        Broken {
            line,
            what: Break::Unreadable { what, reason },
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Records (line, value or reason) handed on, and what `read` returned.
    type Seen = (Vec<(u64, Result<Value, String>)>, Result<Read, Broken>);

    fn run(text: &str, max: usize) -> Seen {
        let mut seen = Vec::new();
        let mut counter = 0;
        let read = read(
            text.as_bytes(),
            1,
            max,
            &mut |pos, r| {
                assert_eq!(pos.record, seen.len() as u64 + 1);
                seen.push((pos.line.unwrap(), r));
            },
            &mut counter,
        );
        assert_eq!(counter, seen.len() as u64);
        (seen, read)
    }

    fn lines(seen: &[(u64, Result<Value, String>)]) -> Vec<(u64, bool)> {
        seen.iter().map(|(l, r)| (*l, r.is_ok())).collect()
    }

    fn deep(n: usize) -> String {
        format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn elements_of_a_pretty_printed_document_carry_their_line() {
        let text = "{\n  \"next\": null,\n  \"records\": [\n    {\"a\": 1},\n    3,\n    {\n      \"b\": [\n        1\n      ]\n    },\n    \"x\"\n  ]\n}\n";
        let (seen, read) = run(text, 100);
        assert_eq!(lines(&seen), [(4, true), (5, false), (6, true), (11, false)]);
        assert_eq!(seen[1].1, Err("not a JSON object".into()));
        assert!(matches!(
            read,
            Ok(Read {
                top: Top::Streamed,
                trailing: None
            })
        ));
    }

    #[test]
    fn a_too_deep_element_is_skipped_alone_at_the_start_or_in_the_middle() {
        let text = format!(
            "{{\"records\":[\n{},\n{{\"a\":1}},\n{},\n{{\"a\":2}}]}}",
            deep(5000),
            deep(200)
        );
        let (seen, read) = run(&text, 1 << 20);
        assert_eq!(lines(&seen), [(2, false), (3, true), (4, false), (5, true)]);
        let reason = seen[0].1.as_ref().unwrap_err();
        assert!(reason.contains("recursion limit exceeded at line 2"), "{reason}");
        assert!(read.is_ok());
    }

    #[test]
    fn an_oversize_element_is_skipped_unparsed_and_the_next_ones_read() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(300));
        let (seen, read) = run(&format!("[{{\"a\":1}},\n{big},\n{{\"a\":2}}]"), 100);
        assert_eq!(lines(&seen), [(1, true), (2, false), (3, true)]);
        assert_eq!(
            seen[1].1,
            Err(format!("record of {} bytes is over the 100-byte limit", big.len()))
        );
        // Too large and broken inside: still one skip, as too large.
        let (seen, _) = run(&format!("[{{\"a\":\"{}\" x}}, {{\"a\":2}}]", "y".repeat(200)), 100);
        assert!(seen[0].1.as_ref().unwrap_err().contains("limit"));
        assert_eq!(lines(&seen), [(1, false), (1, true)]);
        assert!(read.is_ok());
    }

    #[test]
    fn a_syntax_error_that_still_balances_skips_that_element_only() {
        let text = "[{\"a\":1},\n{\"a\": tru, \"b\": [1,}],\n{\"a\":\n\n{]},\n{\"a\":2}]";
        let (seen, read) = run(text, 100);
        assert_eq!(lines(&seen), [(1, true), (2, false), (3, false), (6, true)]);
        let reason = seen[2].1.as_ref().unwrap_err();
        assert!(reason.starts_with("unreadable JSON record:"), "{reason}");
        assert!(reason.ends_with("at line 5"), "{reason}");
        assert!(read.is_ok());
    }

    #[test]
    fn a_broken_document_keeps_what_was_read() {
        let cases = [
            (
                "[{\"a\":1},\n{\"a\":2} {\"a\":3}]",
                2,
                2,
                "expected ',' or ']' after a record, found '{'",
            ),
            ("[{\"a\":1},\n{\"a\":\"open}]", 1, 2, "a string is not closed"),
            ("[{\"a\":1},\n\n{\"a\":[1]", 1, 3, "an object or array is not closed"),
            ("[{\"a\":1},\n,{\"a\":1}]", 1, 2, "expected a value, found ','"),
            (
                "{\"records\":[{\"a\":1}]\n\"x\":1}",
                1,
                2,
                "expected ',' or '}' after a member, found '\"'",
            ),
        ];
        for (text, kept, line, what) in cases {
            let (seen, read) = run(text, 100);
            assert_eq!(seen.iter().filter(|(_, r)| r.is_ok()).count(), kept, "{text}");
            let Err(broken) = read else { panic!("{text} reads") };
            assert_eq!((broken.line, broken.what.to_string().as_str()), (line, what), "{text}");
        }
    }

    #[test]
    fn strings_may_hold_brackets_and_escaped_quotes() {
        let text = r#"[{"a":"]}[{,"},{"b":"\"]\\"},{"c":"\\\"{"}, {"d":"line\nnext"}]"#;
        let (seen, read) = run(text, 100);
        let values: Vec<Value> = seen.into_iter().map(|(_, r)| r.unwrap()).collect();
        assert_eq!(values[0]["a"], "]}[{,");
        assert_eq!(values[1]["b"], "\"]\\");
        assert_eq!(values[2]["c"], "\\\"{");
        assert_eq!(values[3]["d"], "line\nnext");
        assert!(read.is_ok());
    }

    #[test]
    fn an_object_without_records_is_one_record_with_all_its_members() {
        // A Proofpoint TAP batch: arrays under other keys stay in the record.
        let text = "{\"queryEndTime\": \"x\", \"messagesDelivered\": [{\"a\":1}], \"value\": {\"v\": 2}}";
        let (seen, read) = run(text, 100);
        assert!(seen.is_empty());
        let Ok(Read {
            top: Top::Object(obj),
            trailing: None,
        }) = read
        else {
            panic!("not one object")
        };
        assert_eq!((obj.len(), &obj["value"]["v"]), (3, &Value::from(2)));
        // A member serde_json refuses makes a record unreadable, not a records[] envelope.
        let (_, read) = run(&format!("{{\"x\": {}}}", deep(200)), 10_000);
        assert!(read.unwrap_err().to_string().contains("recursion limit"));
        // Over the record limit, it is one record too large, never parsed.
        let (_, read) = run(&format!("{{\"x\": {}}}", deep(200)), 100);
        assert!(matches!(read.unwrap().top, Top::TooLarge(414)));
        let (seen, read) = run(&format!("{{\"x\": {}, \"records\": [{{}}]}}", deep(200)), 100);
        assert_eq!((seen.len(), read.is_ok()), (1, true));
        let (_, read) = run("{\"a\":1}\n  x", 100);
        assert_eq!(read.unwrap().trailing, Some(2));
    }
}

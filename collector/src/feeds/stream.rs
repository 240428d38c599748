//! JSON documents read one record at a time: the elements of a top-level array, or
//! of the `records` / `value` array of a top-level object, are handed on as each is
//! parsed, so a large export is never held as one tree. Anything else in the
//! top-level object is kept, for a file that is one record.

use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::detect::{Position, Sink};

/// What the top-level value turned out to be.
pub enum Top {
    /// An array (or an object's `records` / `value` array) whose elements went to the sink.
    Streamed,
    /// An object without such an array: one record.
    Object(Map<String, Value>),
}

/// Reads the first JSON value of `text` (found at `line` of the file, if known),
/// streaming array elements to `sink`. `counter` numbers the records of the file:
/// it goes up by one for each element handed on, also when an error stops the read.
/// Returns what was read and whether only whitespace follows it.
pub fn read(
    text: &str,
    line: Option<u64>,
    sink: &mut Sink<'_>,
    counter: &mut u64,
) -> Result<(Top, bool), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let top = TopSeed {
        sink,
        handed: counter,
        line,
    }
    .deserialize(&mut de)?;
    let alone = de.end().is_ok();
    Ok((top, alone))
}

struct TopSeed<'s, 'a> {
    sink: &'s mut Sink<'a>,
    handed: &'s mut u64,
    line: Option<u64>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = Top;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_, '_> {
    type Value = Top;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array or object")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top, A::Error> {
        elements(seq, self.sink, self.handed, self.line)?;
        Ok(Top::Streamed)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top, A::Error> {
        let mut rest = Map::new();
        let mut streamed = false;
        while let Some(key) = map.next_key::<String>()? {
            if !streamed && (key == "records" || key == "value") {
                let list = ListOrValue {
                    sink: &mut *self.sink,
                    handed: &mut *self.handed,
                    line: self.line,
                };
                match map.next_value_seed(list)? {
                    None => streamed = true,
                    Some(v) => {
                        rest.insert(key, v);
                    }
                }
            } else {
                let v: Value = map.next_value()?;
                rest.insert(key, v);
            }
        }
        Ok(if streamed { Top::Streamed } else { Top::Object(rest) })
    }
}

/// Hands each element of a sequence on, in order.
fn elements<'de, A: SeqAccess<'de>>(
    mut seq: A,
    sink: &mut Sink<'_>,
    handed: &mut u64,
    line: Option<u64>,
) -> Result<(), A::Error> {
    while let Some(value) = seq.next_element::<Value>()? {
        *handed += 1;
        let pos = Position { line, record: *handed };
        if value.is_object() {
            sink(pos, Ok(value));
        } else {
            sink(pos, Err("not a JSON object".into()));
        }
    }
    Ok(())
}

/// The value of a `records` / `value` key: streamed when it is an array (None),
/// kept otherwise (a record that merely has such a field).
struct ListOrValue<'s, 'a> {
    sink: &'s mut Sink<'a>,
    handed: &'s mut u64,
    line: Option<u64>,
}

impl<'de> DeserializeSeed<'de> for ListOrValue<'_, '_> {
    type Value = Option<Value>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListOrValue<'_, '_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        elements(seq, self.sink, self.handed, self.line)?;
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Some)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::String(v.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }
}

//! How the alert tables store an alert's id (`alerts.id`, `alert_folds.alert_id`):
//! an id that is an [`Id128`] as it prints (26 Crockford base32 characters, upper
//! case) as its 16 bytes, big-endian, so byte order is time order as the text's
//! was; any other text (ids made by hand: tests, rows written by other tools) as
//! itself. Every text maps to exactly one stored value and back, so equality and
//! uniqueness are what they were with text. Only `store/sqlite` converts: the
//! store traits take and return the text (public only for tools and tests that
//! read the database file with SQL of their own). Not for device, incident or
//! action ids.

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, Row};
use ward_protocol::Id128;

/// The characters an [`Id128`] prints with (it also parses lower case and the
/// letters I, L, O, U as aliases: such a text is not the id's printed form).
const PRINTED: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Marks a byte that is not in [`PRINTED`] in [`DIGIT`].
const NOT_PRINTED: u8 = 0xff;

/// Each byte's value as a digit of [`PRINTED`] (one lookup per character: the
/// writer converts every alert's id).
const DIGIT: [u8; 256] = {
    let mut t = [NOT_PRINTED; 256];
    let mut i = 0;
    while i < PRINTED.len() {
        t[PRINTED[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// An alert id as a statement's parameter, in its stored form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKey<'a> {
    Bytes([u8; 16]),
    Text(&'a str),
}

impl<'a> AlertKey<'a> {
    /// The stored form of `id`: its 16 bytes when `id` is an [`Id128`] as it
    /// prints, else the text itself (a text that is no id finds nothing).
    pub fn of(id: &'a str) -> AlertKey<'a> {
        let b = id.as_bytes();
        // 26 characters of 5 bits: the first carries the top 3 (`0`-`7`).
        if b.len() != 26 || b[0] > b'7' {
            return AlertKey::Text(id);
        }
        let mut v: u128 = 0;
        for &c in b {
            let d = DIGIT[usize::from(c)];
            if d == NOT_PRINTED {
                return AlertKey::Text(id);
            }
            v = (v << 5) | u128::from(d);
        }
        AlertKey::Bytes(v.to_be_bytes())
    }
}

impl From<Id128> for AlertKey<'static> {
    fn from(id: Id128) -> Self {
        AlertKey::Bytes(id.0)
    }
}

impl ToSql for AlertKey<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            AlertKey::Bytes(b) => ValueRef::Blob(b),
            AlertKey::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// The text of a stored alert id (read a column with `r.get::<_, AlertIdText>(i)?.0`
/// or [`alert_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertIdText(pub String);

impl FromSql for AlertIdText {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value {
            ValueRef::Blob(b) => {
                let bytes = <[u8; 16]>::try_from(b).map_err(|_| FromSqlError::InvalidBlobSize {
                    expected_size: 16,
                    blob_size: b.len(),
                })?;
                Ok(AlertIdText(Id128(bytes).to_string()))
            }
            ValueRef::Text(_) => String::column_result(value).map(AlertIdText),
            _ => Err(FromSqlError::InvalidType),
        }
    }
}

/// Column `i` of `r`, a stored alert id, as its text.
pub fn alert_id(r: &Row<'_>, i: usize) -> rusqlite::Result<String> {
    Ok(r.get::<_, AlertIdText>(i)?.0)
}

/// Registers on `conn` the SQL functions for statements that need the text inside
/// SQL: `ward_alert_id(stored)`, the text of a stored id (hunting filters and
/// prints ids as text); `ward_alert_key(text)`, the stored form of a text id (the
/// migration that converted the tables). NULL gives NULL.
pub(crate) fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("ward_alert_id", 1, flags, |ctx: &mut Context<'_>| {
        let v = ctx.get_raw(0);
        if matches!(v, ValueRef::Null) {
            return Ok(Value::Null);
        }
        AlertIdText::column_result(v)
            .map(|t| Value::Text(t.0))
            .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
    })?;
    conn.create_scalar_function("ward_alert_key", 1, flags, |ctx: &mut Context<'_>| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => match std::str::from_utf8(t).map(AlertKey::of) {
                Ok(AlertKey::Bytes(b)) => Value::Blob(b.to_vec()),
                _ => Value::Text(String::from_utf8_lossy(t).into_owned()),
            },
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Integer(n),
            ValueRef::Real(r) => Value::Real(r),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        register(&c).unwrap();
        c
    }

    fn stored(c: &Connection, id: &str) -> Value {
        c.query_row("SELECT ?1", [AlertKey::of(id)], |r| r.get(0)).unwrap()
    }

    /// Generated ids are stored as their 16 bytes and read back as the same text,
    /// through the column reader and through the SQL functions.
    #[test]
    fn ids_round_trip_through_sixteen_bytes() {
        let c = conn();
        let rng = SystemRandom::new();
        let mut ids: Vec<String> = vec![Id128::from_u128(0).to_string(), Id128::from_u128(u128::MAX).to_string()];
        for n in 0..200u64 {
            ids.push(
                Id128::generate(1_700_000_000_000 + n * 7_919, &rng)
                    .unwrap()
                    .to_string(),
            );
        }
        for id in &ids {
            let Value::Blob(b) = stored(&c, id) else {
                panic!("{id} not stored as bytes")
            };
            assert_eq!(b, id.parse::<Id128>().unwrap().0.to_vec());
            let back: AlertIdText = c.query_row("SELECT ?1", [AlertKey::of(id)], |r| r.get(0)).unwrap();
            assert_eq!(&back.0, id);
            let (text, key): (String, Vec<u8>) = c
                .query_row(
                    "SELECT ward_alert_id(?1), ward_alert_key(?2)",
                    [&AlertKey::of(id) as &dyn ToSql, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((&text, key), (id, b));
        }
    }

    /// The stored form is `Id128`'s own: what it parses from the text it prints,
    /// for every value of each character position and random ids.
    #[test]
    fn the_stored_form_is_what_id128_parses() {
        let rng = SystemRandom::new();
        let mut ids: Vec<Id128> = (0..1000u64)
            .map(|n| Id128::generate(n * 1_234_567_891, &rng).unwrap())
            .collect();
        ids.extend((0..128).map(|bit| Id128::from_u128(1u128 << bit)));
        ids.extend((0..128).map(|bit| Id128::from_u128(u128::MAX >> bit)));
        for id in ids {
            let text = id.to_string();
            assert_eq!(
                AlertKey::of(&text),
                AlertKey::Bytes(text.parse::<Id128>().unwrap().0),
                "{text}"
            );
            assert_eq!(AlertKey::of(&text), AlertKey::from(id), "{text}");
        }
    }

    /// Stored ids sort as their texts do (time order first), in SQL as in Rust.
    #[test]
    fn stored_ids_sort_as_their_texts() {
        let c = conn();
        c.execute_batch("CREATE TABLE t (id BLOB NOT NULL UNIQUE)").unwrap();
        let rng = SystemRandom::new();
        let mut ids: Vec<String> = (0..300u64)
            .map(|n| {
                Id128::generate(1_700_000_000_000 + (n * 104_729) % 5_000, &rng)
                    .unwrap()
                    .to_string()
            })
            .collect();
        for id in &ids {
            c.execute("INSERT INTO t (id) VALUES (?1)", [AlertKey::of(id)]).unwrap();
        }
        ids.sort();
        let sorted: Vec<String> = c
            .prepare("SELECT id FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| alert_id(r, 0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(sorted, ids);
        // An exact lookup by text finds its row through the unique index.
        let found: i64 = c
            .query_row("SELECT COUNT(*) FROM t WHERE id = ?1", [AlertKey::of(&ids[17])], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(found, 1);
    }

    /// Texts that are not an id as it prints (made by hand, lower case, aliases,
    /// wrong length, out of range, not ASCII) stay text: found as themselves, never
    /// equal to a stored id, and no panic.
    #[test]
    fn other_texts_stay_text() {
        let c = conn();
        let id = Id128::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef).to_string();
        let lower = id.to_lowercase();
        let aliased = id.replace('0', "O");
        let too_big = format!("8{}", &id[1..]);
        for text in [
            "a1",
            "feed-1",
            "",
            lower.as_str(),
            aliased.as_str(),
            too_big.as_str(),
            &id[..25],
            "é",
        ] {
            assert_eq!(AlertKey::of(text), AlertKey::Text(text), "{text}");
            assert_eq!(stored(&c, text), Value::Text(text.to_string()));
            let back: String = c
                .query_row("SELECT ward_alert_id(?1)", [AlertKey::of(text)], |r| r.get(0))
                .unwrap();
            assert_eq!(back, text);
            let same: bool = c
                .query_row("SELECT ?1 = ?2", [AlertKey::of(text), AlertKey::of(&id)], |r| r.get(0))
                .unwrap();
            assert!(!same, "{text}");
        }
        // A blob of another size is an error, not a panic.
        let bad: rusqlite::Result<AlertIdText> = c.query_row("SELECT x'0102'", [], |r| r.get(0));
        assert!(bad.is_err());
        assert!(
            c.query_row("SELECT ward_alert_id(x'0102')", [], |r| r.get::<_, String>(0))
                .is_err()
        );
        let null: Option<String> = c.query_row("SELECT ward_alert_id(NULL)", [], |r| r.get(0)).unwrap();
        assert_eq!(null, None);
    }
}

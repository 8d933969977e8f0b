//! JSON that can be read only one way.
//!
//! `serde_json` keeps the last of two members with the same name; other
//! parsers keep the first, or fail. A configuration or an issuer answer with
//! a duplicate member therefore means different things to different readers,
//! so both are refused here: [`parse_strict`] reads a `Value` like
//! `serde_json::from_slice` does, but fails on a repeated member at any depth
//! and says where it is.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a text is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON at all (syntax, encoding, trailing data). The message is
    /// serde_json's, without its line and column.
    Syntax(String),
    /// A member name repeats inside one object. `path` names it, e.g.
    /// `issuers.main.issuer` or `rules[2].path` (the empty string is the top).
    Duplicate { path: String },
}

impl fmt::Display for StrictError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StrictError::Syntax(message) => f.write_str(message),
            StrictError::Duplicate { path } => write!(f, "duplicate member `{path}`"),
        }
    }
}

/// Parses `bytes` as one JSON value whose objects never repeat a member name.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node { duplicate: &duplicate }.deserialize(&mut deserializer).and_then(|value| {
        deserializer.end()?;
        Ok(value)
    });
    match (parsed, duplicate.into_inner()) {
        (_, Some(segments)) => Err(StrictError::Duplicate { path: join_path(segments) }),
        (Ok(value), None) => Ok(value),
        (Err(err), None) => Err(StrictError::Syntax(strip_position(&err.to_string()))),
    }
}

/// serde_json appends " at line L column C"; callers name a field instead.
pub fn strip_position(message: &str) -> String {
    message.rsplit_once(" at line ").map_or(message, |(problem, _)| problem).to_string()
}

enum Segment {
    Member(String),
    Index(usize),
}

/// Segments are collected innermost first while the error unwinds.
fn join_path(mut segments: Vec<Segment>) -> String {
    segments.reverse();
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Member(name) if path.is_empty() => path.push_str(&name),
            Segment::Member(name) => {
                path.push('.');
                path.push_str(&name);
            }
            Segment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// One value; on a duplicate it records where, innermost segment first.
#[derive(Clone, Copy)]
struct Node<'a> {
    duplicate: &'a RefCell<Option<Vec<Segment>>>,
}

impl Node<'_> {
    /// Adds the enclosing segment to a duplicate's path as the error passes up.
    fn note<E>(&self, segment: impl FnOnce() -> Segment, result: Result<Value, E>) -> Result<Value, E> {
        if result.is_err() {
            if let Some(segments) = self.duplicate.borrow_mut().as_mut() {
                segments.push(segment());
            }
        }
        result
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let index = items.len();
            match seq.next_element_seed(self) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Value::Array(items)),
                Err(err) => return self.note(|| Segment::Index(index), Err(err)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                *self.duplicate.borrow_mut() = Some(vec![Segment::Member(name)]);
                return Err(de::Error::custom("duplicate member"));
            }
            let value = map.next_value_seed(self);
            let value = self.note(|| Segment::Member(name.clone()), value)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_strict_reads_what_serde_json_reads() {
        let text = br#"{"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}, "d": 18446744073709551615}"#;
        assert_eq!(parse_strict(text), Ok(serde_json::from_slice::<Value>(text).unwrap()));
        assert_eq!(parse_strict(b" [] "), Ok(json!([])));
    }

    #[test]
    fn parse_strict_duplicate_member_names_its_path() {
        let cases: [(&[u8], &str); 5] = [
            (br#"{"a": 1, "a": 2}"#, "a"),
            (br#"{"active": true, "sub": "x", "active": false}"#, "active"),
            (br#"{"issuers": {"main": {"issuer": "x", "issuer": "y"}}}"#, "issuers.main.issuer"),
            (br#"{"rules": [{}, {"path": "/a", "path": "/b"}]}"#, "rules[1].path"),
            (br#"[[{"k": 1, "k": 1}]]"#, "[0][0].k"),
        ];
        for (text, path) in cases {
            assert_eq!(parse_strict(text), Err(StrictError::Duplicate { path: path.into() }), "{path}");
        }
    }

    #[test]
    fn parse_strict_same_name_in_different_objects_is_fine() {
        assert!(parse_strict(br#"{"a": {"x": 1}, "b": {"x": 1}, "x": [{"x": 1}, {"x": 2}]}"#).is_ok());
    }

    #[test]
    fn parse_strict_refuses_what_is_not_one_json_value() {
        for text in [&b""[..], b"{", b"{} {}", b"{\"a\": 1,}", b"\xef\xbb\xbf{}", b"{\"a\": \"\\ud800\"}", b"nul"] {
            assert!(matches!(parse_strict(text), Err(StrictError::Syntax(_))), "{:?}", String::from_utf8_lossy(text));
        }
        let Err(StrictError::Syntax(message)) = parse_strict(b"{\n\n x") else { panic!() };
        assert!(!message.contains("line"), "{message}");
    }
}

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

/// The path (`issuers.main.introspection`, `rules[2].access`; empty for the
/// top) of what stands at `line` and `column` of a JSON text, as serde_json
/// reports the place of an error: the member name, value or closing bracket
/// there, or the last one before it. The text must be valid JSON.
pub fn path_at(text: &[u8], line: usize, column: usize) -> String {
    let line_start = if line <= 1 {
        0
    } else {
        let mut newlines = text.iter().enumerate().filter(|(_, &b)| b == b'\n');
        newlines.nth(line - 2).map_or(text.len(), |(at, _)| at + 1)
    };
    let target = line_start.saturating_add(column.saturating_sub(1));
    // The slot each open container gives its current child: a member's name
    // (none before the first name is read) or an element's index.
    let mut frames: Vec<Option<Segment>> = Vec::new();
    let slots = |frames: &[Option<Segment>]| -> Vec<Segment> {
        frames
            .iter()
            .flatten()
            .map(|segment| match segment {
                Segment::Member(name) => Segment::Member(name.clone()),
                Segment::Index(i) => Segment::Index(*i),
            })
            .collect()
    };
    let mut best = Vec::new();
    let mut expecting_name = false;
    let mut at = 0;
    while at < text.len() && at <= target {
        let byte = text[at];
        match byte {
            b'{' | b'[' => {
                best = slots(&frames);
                frames.push(if byte == b'[' { Some(Segment::Index(0)) } else { None });
                expecting_name = byte == b'{';
            }
            b'}' | b']' => {
                frames.pop();
                best = slots(&frames);
                expecting_name = false;
            }
            b',' => match frames.last_mut() {
                Some(Some(Segment::Index(i))) => *i += 1,
                Some(slot) => {
                    *slot = None;
                    expecting_name = true;
                }
                None => {}
            },
            b'"' => {
                let end = string_end(text, at);
                if expecting_name {
                    let name = serde_json::from_slice::<String>(text.get(at..=end).unwrap_or_default());
                    if let Some(slot) = frames.last_mut() {
                        *slot = Some(Segment::Member(name.unwrap_or_default()));
                    }
                    expecting_name = false;
                }
                best = slots(&frames);
                at = end;
            }
            b':' | b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => {
                best = slots(&frames);
                while at + 1 < text.len() && !b",]}: \t\n\r".contains(&text[at + 1]) {
                    at += 1;
                }
            }
        }
        at += 1;
    }
    join_outer_first(best)
}

/// The index of the quote that closes the string opening at `start`.
fn string_end(text: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while at < text.len() {
        match text[at] {
            b'\\' => at += 2,
            b'"' => return at,
            _ => at += 1,
        }
    }
    text.len()
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
    join_outer_first(segments)
}

fn join_outer_first(segments: Vec<Segment>) -> String {
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
    fn path_at_names_what_stands_at_a_place() {
        let text = b"{\"a\": {\"b\": [1, {\"c\": \"x\\\"}\"}],\n \"d\": true}, \"e\": 2}";
        let at = |needle: &str| {
            let offset = text.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap();
            let line = 1 + text[..offset].iter().filter(|&&b| b == b'\n').count();
            let line_start = text[..offset].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            path_at(text, line, offset - line_start + 1)
        };
        assert_eq!(at("{\"a"), "");
        assert_eq!(at("\"a\""), "a");
        assert_eq!(at("1,"), "a.b[0]");
        assert_eq!(at("\"c\""), "a.b[1].c");
        assert_eq!(at("\"x"), "a.b[1].c");
        assert_eq!(at("}],"), "a.b[1]");
        assert_eq!(at("],"), "a.b");
        assert_eq!(at("true"), "a.d");
        assert_eq!(at("}, \"e"), "a");
        assert_eq!(at("2}"), "e");
        assert_eq!(path_at(text, 9, 9), "");
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

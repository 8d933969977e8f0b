//! The request path as the servers after the filter will read it.
//!
//! Envoy's router and the framework behind it each read `:path` their own
//! way: Tomcat and Spring drop path parameters (`/admin;x` is `/admin` to
//! them), WHATWG URL parsers keep empty segments and read `//x/...` as a
//! host, Express matches the raw, still-encoded path and ignores case,
//! Starlette and Flask decode it first, and some resolve `..` while others
//! route `/admin/../public` to the admin handler. A filter that settles on
//! one of these readings admits requests under a rule the server does not
//! apply. So the filter takes no reading on trust:
//!
//! * what some servers resolve and others do not is refused (400):
//!   dot-segments (`.` and `..` in any spelling: `%2e`, `.%2E`, with
//!   parameters `..;x`) and a path that begins with `//`; so are escapes
//!   servers decode differently or not at all (an encoded `/`, `\` or NUL, a
//!   double encoding, escapes that are not UTF-8) and bytes no path carries
//!   raw (controls, space, non-ASCII, `\`, `#`);
//! * what servers merely spell differently is read every way
//!   ([`PathReadings`]): path parameters kept or dropped, empty segments kept
//!   or merged, escapes decoded (all, as Starlette, Flask and Tomcat route;
//!   unreserved ones, as RFC 3986 normalization does) or not (as Express and
//!   WHATWG URL parsers route); `rules` also compares letters with and without
//!   case. A request is admitted only
//!   under the rule every reading picks; readings that pick different rules
//!   are refused (400).
//!
//! Envoy's `normalize_path` and `merge_slashes` (on in the shipped configs)
//! resolve dot-segments, decode unreserved escapes and merge slashes before
//! the filter sees the path, and forward that path, so behind them there is
//! less to refuse; Envoy leaves `;` and case alone. The filter never rewrites
//! the path it forwards.

use std::fmt;

/// Why a path is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`/...`): empty, `*`, or an absolute URI.
    NotOriginForm,
    /// Longer than [`MAX_PATH_LEN`].
    TooLong,
    /// A byte no request path may carry raw: controls, space, non-ASCII, `\`, `#`.
    ForbiddenByte,
    /// `%` not followed by two hex digits.
    InvalidEscape,
    /// An escape that parsers disagree on: encoded `/`, `\` or NUL, or a
    /// double encoding (`%252e`) that a second decode would turn into another path.
    AmbiguousEscape,
    /// Escapes that decode to bytes that are not UTF-8, such as the overlong
    /// `%c0%af` that some decoders read as `/`.
    NotUtf8,
    /// A `.` or `..` segment, in any spelling: some servers resolve it, others
    /// route on it as it is.
    DotSegment,
    /// The path begins with `//`, which URL parsers read as a host.
    LeadingDoubleSlash,
    /// Its readings (with or without path parameters, empty segments, escapes
    /// or case; the method upper-cased, `HEAD` as `GET`) fall under different rules.
    ReadDifferently,
    /// `:path` or `:method` came twice.
    Repeated,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "path does not start with /",
            PathError::TooLong => "path is too long",
            PathError::ForbiddenByte => "path carries a forbidden character",
            PathError::InvalidEscape => "path has an invalid percent escape",
            PathError::AmbiguousEscape => "path has an encoded slash, backslash or NUL, or a double encoding",
            PathError::NotUtf8 => "path escapes do not decode to UTF-8",
            PathError::DotSegment => "path has a . or .. segment",
            PathError::LeadingDoubleSlash => "path starts with //",
            PathError::ReadDifferently => {
                "request falls under different rules depending on how a server reads it (path parameters, \
                 empty segments, escapes, letter case, the method upper-cased or HEAD as GET)"
            }
            PathError::Repeated => "path or method is given twice",
        })
    }
}

/// Longest `:path` considered; Envoy's own header limits are far below this.
pub const MAX_PATH_LEN: usize = 16 * 1024;

/// The spellings of one request path, each as some server reads it (see the
/// module documentation): the query dropped, escapes as sent (hex digits in
/// upper case), unreserved ones decoded, or all decoded, at most twelve
/// distinct spellings, the first with parameters, empty segments and escapes
/// as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathReadings {
    spellings: Vec<String>,
    has_upper: bool,
}

impl PathReadings {
    pub fn spellings(&self) -> &[String] {
        &self.spellings
    }

    /// Whether a spelling has upper-case letters, which a server that ignores
    /// case reads as another path.
    pub fn has_upper(&self) -> bool {
        self.has_upper
    }
}

/// How a segment is read: as sent (escapes' hex digits in upper case), with
/// its unreserved escapes decoded (as RFC 3986 normalization, Envoy's
/// `normalize_path` and HAProxy do), or with every escape decoded (as
/// Starlette, Flask and Tomcat route); each whole, and with its path
/// parameters dropped (cut at the first `;` as sent, before decoding, as
/// Tomcat does; `None` when it has no `;`).
struct Segment {
    whole: [String; 3],
    without_params: Option<[String; 3]>,
}

impl Segment {
    fn read(piece: &[u8]) -> Result<Segment, PathError> {
        let (unreserved, all) = decode_segment(piece)?;
        if is_dot_segment(&all) {
            return Err(PathError::DotSegment);
        }
        let without_params = match piece.iter().position(|&b| b == b';') {
            Some(at) => {
                let base = piece.get(..at).unwrap_or_default();
                // A prefix of an accepted segment cut at a `;` (never inside an escape) is accepted too.
                let (base_unreserved, base_all) = decode_segment(base)?;
                Some([upper_hex(base), base_unreserved, base_all])
            }
            None => None,
        };
        Ok(Segment { whole: [upper_hex(piece), unreserved, all], without_params })
    }

    /// The segment as a reading that drops path parameters takes it.
    fn without_params(&self) -> &[String; 3] {
        self.without_params.as_ref().unwrap_or(&self.whole)
    }

    fn has_escapes(&self) -> bool {
        self.whole[0] != self.whole[2]
    }
}

/// Reads a request's `:path` every way a server may (see the module documentation).
pub fn read_path(raw: &[u8]) -> Result<PathReadings, PathError> {
    let path = match raw.iter().position(|&b| b == b'?') {
        Some(query) => raw.get(..query).unwrap_or_default(),
        None => raw,
    };
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(PathError::NotOriginForm);
    };
    let segments = rest.split(|&b| b == b'/').map(Segment::read).collect::<Result<Vec<_>, _>>()?;
    if rest.starts_with(b"/") {
        return Err(PathError::LeadingDoubleSlash);
    }
    let with_params = segments.iter().any(|s| s.without_params.is_some());
    let decodings = if segments.iter().any(Segment::has_escapes) { 3 } else { 1 };
    let mut spellings: Vec<String> = Vec::new();
    for drop_params in [false, true].into_iter().take(1 + usize::from(with_params)) {
        for decoding in 0..decodings {
            let parts: Vec<&str> = segments
                .iter()
                .filter_map(|s| if drop_params { s.without_params() } else { &s.whole }.get(decoding))
                .map(String::as_str)
                .collect();
            for spelling in [join(&parts, false), join(&parts, true)] {
                if !spellings.contains(&spelling) {
                    spellings.push(spelling);
                }
            }
        }
    }
    let has_upper = spellings.iter().any(|s| s.bytes().any(|b| b.is_ascii_uppercase()));
    Ok(PathReadings { spellings, has_upper })
}

/// `/` and the segments; with `merge`, empty segments dropped as Tomcat and
/// Envoy's `merge_slashes` do, a trailing `/` kept.
fn join(parts: &[&str], merge: bool) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        if merge && part.is_empty() && i != last {
            continue;
        }
        out.push('/');
        out.push_str(part);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// `.` or `..`, also with parameters (`..;x`, `.%3Bx`) as Tomcat reads them.
fn is_dot_segment(decoded: &str) -> bool {
    matches!(decoded.split(';').next(), Some("." | ".."))
}

/// The segment as sent, with escapes' hex digits in upper case.
fn upper_hex(piece: &[u8]) -> String {
    let mut out = String::with_capacity(piece.len());
    let mut hex_left = 0u8;
    for &byte in piece {
        // `decode_segment` accepted the segment: every byte is ASCII here.
        out.push(char::from(if hex_left > 0 { byte.to_ascii_uppercase() } else { byte }));
        hex_left = if byte == b'%' { 2 } else { hex_left.saturating_sub(1) };
    }
    out
}

/// The segment with its unreserved escapes decoded (the others kept, hex
/// digits in upper case), and with every escape decoded; refuses what must
/// not be guessed at.
fn decode_segment(piece: &[u8]) -> Result<(String, String), PathError> {
    let mut unreserved = String::with_capacity(piece.len());
    let mut all = Vec::with_capacity(piece.len());
    let mut bytes = piece.iter();
    while let Some(&byte) = bytes.next() {
        if byte == b'%' {
            let (Some(&high), Some(&low)) = (bytes.next(), bytes.next()) else {
                return Err(PathError::InvalidEscape);
            };
            let (Some(h), Some(l)) = (hex_value(high), hex_value(low)) else {
                return Err(PathError::InvalidEscape);
            };
            let decoded = h << 4 | l;
            if matches!(decoded, b'/' | b'\\' | 0) {
                return Err(PathError::AmbiguousEscape);
            }
            if is_unreserved(decoded) {
                unreserved.push(char::from(decoded));
            } else {
                unreserved.push('%');
                unreserved.push(char::from(high.to_ascii_uppercase()));
                unreserved.push(char::from(low.to_ascii_uppercase()));
            }
            all.push(decoded);
        } else if byte <= b' ' || byte >= 0x7f || byte == b'\\' || byte == b'#' {
            return Err(PathError::ForbiddenByte);
        } else {
            unreserved.push(char::from(byte));
            all.push(byte);
        }
    }
    // A `%` in the decoded bytes came from `%25`: followed by two hex digits
    // (`%2541`, and `%25%41a`, which becomes `%Aa`), a second decode gives another byte.
    let double_encoded =
        all.windows(3).any(|w| matches!(w, [b'%', a, b] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit()));
    if double_encoded {
        return Err(PathError::AmbiguousEscape);
    }
    let all = String::from_utf8(all).map_err(|_| PathError::NotUtf8)?;
    Ok((unreserved, all))
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spellings(path: &str) -> Result<Vec<String>, PathError> {
        read_path(path.as_bytes()).map(|readings| readings.spellings)
    }

    fn one(path: &str) -> Result<String, PathError> {
        match spellings(path)?.as_slice() {
            [only] => Ok(only.clone()),
            more => panic!("{path} has {} readings: {more:?}", more.len()),
        }
    }

    #[test]
    fn plain_paths_have_one_reading_as_sent() {
        for path in ["/", "/api", "/api/private", "/api/private/", "/a-b_c~d.e/f:g@h!$&'()*+,=", "/API/X"] {
            assert_eq!(one(path).as_deref(), Ok(path), "{path}");
        }
    }

    #[test]
    fn query_is_dropped() {
        assert_eq!(one("/public?x=/../api/private").as_deref(), Ok("/public"));
        assert_eq!(one("/api/private?").as_deref(), Ok("/api/private"));
        assert_eq!(one("/?a").as_deref(), Ok("/"));
    }

    /// Some servers resolve them, others route on them as sent: never one reading.
    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for path in [
            "/public/../api/private",
            "/api/./private",
            "/api/private/.",
            "/api/private/..",
            "/..",
            "/.",
            "/public/%2e%2e/api/private",
            "/public/%2E%2E/api/private",
            "/public/.%2e/api/private",
            "/api/%2e/private",
            "/public/..;/api/private",
            "/public/.;x/api",
            "/public/..%3b/api/private",
            "/public/%2e%2e%3B/api/private",
            "/public/.%3Bx/api",
            "/public/%2e%2e;/api/private",
            "/api/private//..",
        ] {
            assert_eq!(spellings(path), Err(PathError::DotSegment), "{path}");
        }
        // Not dot-segments: more dots, or dots within a name.
        for path in ["/api/..../private", "/api/.../private", "/api/x..;y", "/.well-known/x", "/a.b/..c"] {
            assert!(spellings(path).is_ok(), "{path}");
        }
    }

    #[test]
    fn a_path_starting_with_two_slashes_is_refused() {
        for path in ["//api/private", "///x", "//", "//evil.example/admin"] {
            assert_eq!(spellings(path), Err(PathError::LeadingDoubleSlash), "{path}");
        }
    }

    #[test]
    fn empty_segments_are_read_kept_and_merged() {
        assert_eq!(spellings("/api//private"), Ok(vec!["/api//private".into(), "/api/private".into()]));
        assert_eq!(spellings("/api/private//"), Ok(vec!["/api/private//".into(), "/api/private/".into()]));
        assert_eq!(spellings("/a///b"), Ok(vec!["/a///b".into(), "/a/b".into()]));
    }

    #[test]
    fn path_parameters_are_read_kept_and_dropped() {
        assert_eq!(spellings("/admin;x"), Ok(vec!["/admin;x".into(), "/admin".into()]));
        assert_eq!(spellings("/api/private;v=1/x"), Ok(vec!["/api/private;v=1/x".into(), "/api/private/x".into()]));
        // A segment made only of a parameter: Tomcat drops it, then merges the slashes.
        assert_eq!(
            spellings("/public/;/admin"),
            Ok(vec!["/public/;/admin".into(), "/public//admin".into(), "/public/admin".into()])
        );
        assert_eq!(spellings("/;jsessionid=1"), Ok(vec!["/;jsessionid=1".into(), "/".into()]));
        // An encoded ';' is no parameter to any of them; decoded, it is a ';' in the name.
        assert_eq!(spellings("/admin%3Bx"), Ok(vec!["/admin%3Bx".into(), "/admin;x".into()]));
    }

    #[test]
    fn unreserved_escapes_are_read_encoded_and_decoded() {
        assert_eq!(spellings("/%61pi/private"), Ok(vec!["/%61pi/private".into(), "/api/private".into()]));
        assert_eq!(spellings("/api/x%7ey"), Ok(vec!["/api/x%7Ey".into(), "/api/x~y".into()]));
        // Every combination, each spelling once.
        assert_eq!(spellings("/%61//b;x").map(|s| s.len()), Ok(8));
    }

    /// Starlette, Flask and Tomcat decode every escape before routing (`/users/%40me`
    /// is their `/users/@me`); Express and WHATWG URL parsers decode none.
    #[test]
    fn every_escape_is_read_encoded_and_decoded() {
        for (path, encoded, decoded) in [
            ("/users/%40me", "/users/%40me", "/users/@me"),
            ("/v1/things%3abatch", "/v1/things%3Abatch", "/v1/things:batch"),
            ("/api/a%3fb", "/api/a%3Fb", "/api/a?b"),
            ("/api/%c3%a9", "/api/%C3%A9", "/api/\u{e9}"),
            ("/x%20y", "/x%20y", "/x y"),
            ("/api/%25", "/api/%25", "/api/%"),
            ("/api/100%25x", "/api/100%25x", "/api/100%x"),
        ] {
            assert_eq!(spellings(path), Ok(vec![encoded.into(), decoded.into()]), "{path}");
        }
        // Unreserved escapes decoded alone, too: a third reading when both kinds are there.
        assert_eq!(
            spellings("/%61pi/health%3acheck"),
            Ok(vec!["/%61pi/health%3Acheck".into(), "/api/health%3Acheck".into(), "/api/health:check".into()])
        );
        // A double encoding only when a second decode would change the path.
        assert_eq!(spellings("/x%25%41"), Ok(vec!["/x%25%41".into(), "/x%25A".into(), "/x%A".into()]));
    }

    /// Tomcat drops parameters at a `;` as sent, then decodes: an encoded `;` cuts nothing.
    #[test]
    fn parameters_are_cut_before_decoding() {
        let read = spellings("/admin%3Bv=1/x;jsessionid=1").unwrap();
        assert!(read.contains(&"/admin;v=1/x".to_string()), "{read:?}");
        assert!(!read.iter().any(|s| s.starts_with("/admin/")), "{read:?}");
    }

    #[test]
    fn upper_case_letters_are_noted() {
        assert!(read_path(b"/API/x").unwrap().has_upper());
        assert!(read_path(b"/%41pi").unwrap().has_upper());
        assert!(!read_path(b"/api/x").unwrap().has_upper());
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, err) in [
            ("", PathError::NotOriginForm),
            ("*", PathError::NotOriginForm),
            ("api/private", PathError::NotOriginForm),
            ("http://host/api/private", PathError::NotOriginForm),
            ("?/api", PathError::NotOriginForm),
            ("/public%2f..%2fapi/private", PathError::AmbiguousEscape),
            ("/public%2F..%2Fapi/private", PathError::AmbiguousEscape),
            ("/public%5c..%5capi/private", PathError::AmbiguousEscape),
            ("/api/private%00", PathError::AmbiguousEscape),
            ("/public/%252e%252e/api/private", PathError::AmbiguousEscape),
            ("/public/..%252fapi/private", PathError::AmbiguousEscape),
            ("/%25%41a", PathError::AmbiguousEscape),
            ("/public/%25%32%65%25%32%65/admin", PathError::AmbiguousEscape),
            ("/public/..%c0%afapi/private", PathError::NotUtf8),
            ("/api/%ff", PathError::NotUtf8),
            ("/public\\..\\api/private", PathError::ForbiddenByte),
            ("/public#/../api/private", PathError::ForbiddenByte),
            ("/api/pri vate", PathError::ForbiddenByte),
            ("/api/private\t", PathError::ForbiddenByte),
            ("/api/caf\u{e9}", PathError::ForbiddenByte),
            ("/api/\x7f", PathError::ForbiddenByte),
            ("/api/%", PathError::InvalidEscape),
            ("/api/%2", PathError::InvalidEscape),
            ("/api/%zz", PathError::InvalidEscape),
            ("/api/%+1", PathError::InvalidEscape),
        ] {
            assert_eq!(spellings(raw), Err(err), "{raw:?}");
        }
        assert_eq!(read_path(b"/api/\xff"), Err(PathError::ForbiddenByte));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(spellings(&long), Err(PathError::TooLong));
    }
}

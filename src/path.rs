//! The canonical form of a request path, the only form rules are matched on.
//!
//! Envoy's own normalization (`normalize_path`, `merge_slashes`, rejecting
//! escaped slashes) is on in the shipped configs, but a filter must not depend
//! on the listener it is put behind: Istio and hand-written configs often leave
//! it off, and a path the filter reads one way and the upstream another is how
//! authorization filters get bypassed. So the filter canonicalizes again, and
//! where a spelling could mean two things to two parsers it refuses the request
//! instead of guessing. The path forwarded upstream is never rewritten.
//!
//! Canonical form (RFC 3986 section 6.2.2): query dropped; percent-encoded
//! unreserved characters decoded, other escapes kept with upper-case hex;
//! repeated slashes merged; `.` and `..` segments resolved (never above `/`).

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
    /// A dot-segment with parameters (`..;x`), which some servers resolve as `..`.
    DotSegmentParameter,
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
            PathError::DotSegmentParameter => "path has a dot-segment with parameters",
            PathError::Repeated => "path or method is given twice",
        })
    }
}

/// Longest `:path` considered; Envoy's own header limits are far below this.
pub const MAX_PATH_LEN: usize = 16 * 1024;

/// The canonical form of a request's `:path` (see the module documentation).
pub fn canonical_path(raw: &[u8]) -> Result<String, PathError> {
    let path = match raw.iter().position(|&b| b == b'?') {
        Some(query) => raw.get(..query).unwrap_or_default(),
        None => raw,
    };
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let mut segments: Vec<String> = Vec::new();
    // The first split piece is the empty string before the leading '/'.
    let mut pieces = path.split(|&b| b == b'/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(piece) = pieces.next() {
        let segment = decode_segment(piece)?;
        let is_last = pieces.peek().is_none();
        match segment.as_str() {
            // Empty (from `//` or a trailing `/`) and `.` segments vanish;
            // at the end they leave a trailing slash, as RFC 3986 does.
            "" | "." => trailing_slash = is_last,
            ".." => {
                segments.pop();
                trailing_slash = is_last;
            }
            _ => {
                if is_dot_segment_with_parameters(&segment) {
                    return Err(PathError::DotSegmentParameter);
                }
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    if !decodes_to_utf8(path) {
        return Err(PathError::NotUtf8);
    }
    let mut canonical = String::with_capacity(path.len());
    for segment in &segments {
        canonical.push('/');
        canonical.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        canonical.push('/');
    }
    Ok(canonical)
}

/// Decodes what RFC 3986 says may be decoded (unreserved characters) and
/// refuses what must not be guessed at.
fn decode_segment(piece: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(piece.len());
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
            let double_encoded = decoded == b'%'
                && matches!(bytes.as_slice(), [a, b, ..] if a.is_ascii_hexdigit() && b.is_ascii_hexdigit());
            if matches!(decoded, b'/' | b'\\' | 0) || double_encoded {
                return Err(PathError::AmbiguousEscape);
            }
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                out.push('%');
                push_hex_digit(&mut out, h);
                push_hex_digit(&mut out, l);
            }
        } else if byte <= b' ' || byte >= 0x7f || byte == b'\\' || byte == b'#' {
            return Err(PathError::ForbiddenByte);
        } else {
            out.push(char::from(byte));
        }
    }
    // Checked on the output, so that `%25%41a` (which becomes `%25Aa`) counts too.
    if is_double_encoded(&out) {
        return Err(PathError::AmbiguousEscape);
    }
    Ok(out)
}

/// `%25` followed by two hex digits: decoding once more gives another byte.
fn is_double_encoded(segment: &str) -> bool {
    segment.match_indices("%25").any(|(at, _)| {
        matches!(segment.as_bytes().get(at + 3..at + 5), Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit())
    })
}

/// `.;x`, `..;x`, and the same with `;` encoded: Tomcat and others read these as
/// `.` and `..`, so the upstream would resolve a path the filter did not.
fn is_dot_segment_with_parameters(segment: &str) -> bool {
    let params = segment.find(';').into_iter().chain(segment.find("%3B"));
    params.min().is_some_and(|at| matches!(segment.get(..at), Some("." | "..")))
}

/// Whether the path, with every escape decoded, is UTF-8. Called after
/// `decode_segment` has accepted every escape.
fn decodes_to_utf8(path: &[u8]) -> bool {
    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.iter();
    while let Some(&byte) = bytes.next() {
        let value = if byte == b'%' {
            match (bytes.next().and_then(|&b| hex_value(b)), bytes.next().and_then(|&b| hex_value(b))) {
                (Some(h), Some(l)) => h << 4 | l,
                _ => return false,
            }
        } else {
            byte
        };
        decoded.push(value);
    }
    std::str::from_utf8(&decoded).is_ok()
}

fn push_hex_digit(out: &mut String, nibble: u8) {
    if let Some(digit) = char::from_digit(u32::from(nibble), 16) {
        out.push(digit.to_ascii_uppercase());
    }
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

    fn canon(path: &str) -> Result<String, PathError> {
        canonical_path(path.as_bytes())
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for path in ["/", "/api", "/api/private", "/api/private/", "/a-b_c~d.e/f:g@h!$&'()*+,;=", "/x%20y"] {
            assert_eq!(canon(path).as_deref(), Ok(path), "{path}");
        }
    }

    #[test]
    fn query_is_dropped() {
        assert_eq!(canon("/public?x=/../api/private").as_deref(), Ok("/public"));
        assert_eq!(canon("/api/private?").as_deref(), Ok("/api/private"));
        assert_eq!(canon("/?a").as_deref(), Ok("/"));
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        for (raw, canonical) in [
            ("/public/../api/private", "/api/private"),
            ("/api/public/../private", "/api/private"),
            ("/api/./private", "/api/private"),
            ("//api//private", "/api/private"),
            ("/../../api/private", "/api/private"),
            ("/api/private/.", "/api/private/"),
            ("/api/private/..", "/api/"),
            ("/api/private/x/..", "/api/private/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/api/..../private", "/api/..../private"),
            ("/api/.../private", "/api/.../private"),
        ] {
            assert_eq!(canon(raw).as_deref(), Ok(canonical), "{raw}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_dot_segments() {
        for (raw, canonical) in [
            ("/%61pi/private", "/api/private"),
            ("/api/%70%72%69%76%61%74%65", "/api/private"),
            ("/public/%2e%2e/api/private", "/api/private"),
            ("/public/%2E%2E/api/private", "/api/private"),
            ("/public/.%2e/api/private", "/api/private"),
            ("/api/%2e/private", "/api/private"),
            ("/api/x%7ey", "/api/x~y"),
        ] {
            assert_eq!(canon(raw).as_deref(), Ok(canonical), "{raw}");
        }
    }

    #[test]
    fn reserved_escapes_stay_encoded_in_upper_case() {
        assert_eq!(canon("/api/a%3fb").as_deref(), Ok("/api/a%3Fb"));
        assert_eq!(canon("/api/%c3%a9").as_deref(), Ok("/api/%C3%A9"));
        assert_eq!(canon("/api/%25").as_deref(), Ok("/api/%25"));
        assert_eq!(canon("/api/100%25x").as_deref(), Ok("/api/100%25x"));
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
            ("/public/..;/api/private", PathError::DotSegmentParameter),
            ("/public/.;x/api", PathError::DotSegmentParameter),
            ("/public/..%3b/api/private", PathError::DotSegmentParameter),
            ("/public/%2e%2e;/api/private", PathError::DotSegmentParameter),
        ] {
            assert_eq!(canon(raw), Err(err), "{raw:?}");
        }
        assert_eq!(canonical_path(b"/api/\xff"), Err(PathError::ForbiddenByte));
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(canon(&long), Err(PathError::TooLong));
    }

    #[test]
    fn parameters_on_ordinary_segments_are_kept() {
        assert_eq!(canon("/api/private;v=1").as_deref(), Ok("/api/private;v=1"));
        assert_eq!(canon("/api/x..;y").as_deref(), Ok("/api/x..;y"));
    }
}

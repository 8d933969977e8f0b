//! The request as the filter reads it: every header in one host call (the
//! proxy-wasm ABI's serialized header map), parsed here without trusting its
//! lengths, and the four headers the decision needs picked out of it.
//!
//! One read instead of one per header saves host calls on every request, and
//! shows what single reads hide: a header the decision reads that appears
//! twice is refused (it could be read two ways), and an underscore spelling
//! of a forwarded header (`x_auth_subject`, which CGI-style upstreams read as
//! `x-auth-subject`) can be removed even where Envoy lets such names through.

/// The parts of a request the decision reads, as the host gave them.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub authority: &'a [u8],
    pub path: &'a [u8],
    pub authorization: Option<&'a [u8]>,
    /// The names of the virtual host and route Envoy's router picked, when the
    /// rules ask for them (read from Envoy's `xds.*` properties by the glue).
    pub virtual_host: Option<&'a [u8]>,
    pub route: Option<&'a [u8]>,
    /// Whether `Origin` and `Access-Control-Request-Method` are present: with
    /// `OPTIONS` and no body, a browser's CORS preflight.
    pub origin: bool,
    pub cors_request_method: bool,
    /// The headers end the request: no body follows.
    pub end_of_stream: bool,
    /// The first of these headers that appears more than once, if any.
    pub repeated: Option<Repeated>,
    /// Every header name, as sent (lower case, as Envoy keeps them).
    pub names: Vec<&'a [u8]>,
}

/// A header the decision reads, found twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    Method,
    Authority,
    Path,
    Authorization,
}

impl<'a> Request<'a> {
    /// Picks the decision's headers out of the header pairs.
    pub fn from_pairs(pairs: &[(&'a [u8], &'a [u8])]) -> Request<'a> {
        let mut request = Request { names: Vec::with_capacity(pairs.len()), ..Request::default() };
        let mut seen = [false; 4];
        for &(name, value) in pairs {
            request.names.push(name);
            let (at, which) = match name {
                b"origin" => {
                    request.origin = true;
                    continue;
                }
                b"access-control-request-method" => {
                    request.cors_request_method = true;
                    continue;
                }
                b":method" => (0, Repeated::Method),
                b":authority" => (1, Repeated::Authority),
                b":path" => (2, Repeated::Path),
                b"authorization" => (3, Repeated::Authorization),
                _ => continue,
            };
            if let Some(flag) = seen.get_mut(at) {
                if *flag {
                    request.repeated.get_or_insert(which);
                }
                *flag = true;
            }
            match which {
                Repeated::Method => request.method = value,
                Repeated::Authority => request.authority = value,
                Repeated::Path => request.path = value,
                Repeated::Authorization => request.authorization = Some(value),
            }
        }
        request
    }
}

/// Parses the proxy-wasm ABI's serialized header map: a little-endian u32
/// count, then a u32 name length and a u32 value length per pair, then each
/// name and value followed by a NUL. `None` if the block is malformed.
pub fn header_pairs(block: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if block.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let bytes: [u8; 4] = block.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    };
    let count = word(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > block.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    // Each string ends with a NUL that must be there.
    let mut string = |len: usize| -> Option<&[u8]> {
        let end = data.checked_add(len)?;
        let text = block.get(data..end)?;
        (block.get(end) == Some(&0)).then_some(())?;
        data = end.checked_add(1)?;
        Some(text)
    };
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (name_len, value_len) = (word(sizes)?, word(sizes + 4)?);
        let name = string(name_len)?;
        let value = string(value_len)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// The request's header names that are an underscore spelling of one of
/// `forwarded` (`x_auth_subject` for `x-auth-subject`): CGI-style upstreams
/// read both as one variable.
pub fn underscore_spellings<'a>(names: &[&'a [u8]], forwarded: &[String]) -> Vec<&'a [u8]> {
    names
        .iter()
        .filter(|name| name.contains(&b'_'))
        .filter(|name| {
            forwarded.iter().any(|header| {
                header.len() == name.len()
                    && header
                        .bytes()
                        .zip(name.iter())
                        .all(|(h, n)| h == n.to_ascii_lowercase() || (h == b'-' && *n == b'_'))
            })
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes pairs as the host does.
    fn block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        out
    }

    #[test]
    fn header_pairs_reads_the_abi_block() {
        let raw = block(&[(":method", "GET"), (":path", "/x"), ("x-empty", "")]);
        let pairs = header_pairs(&raw).unwrap();
        assert_eq!(pairs, [(&b":method"[..], &b"GET"[..]), (b":path", b"/x"), (b"x-empty", b"")]);
        assert_eq!(header_pairs(&[]), Some(vec![]));
    }

    #[test]
    fn header_pairs_refuses_every_truncation_and_lying_length() {
        let raw = block(&[(":method", "GET"), ("authorization", "Bearer t")]);
        for len in 1..raw.len() {
            assert_eq!(header_pairs(&raw[..len]), None, "truncated to {len}");
        }
        let mut huge_count = raw.clone();
        huge_count[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(header_pairs(&huge_count), None);
        let mut long_name = raw;
        long_name[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(header_pairs(&long_name), None);
    }

    #[test]
    fn from_pairs_picks_the_decisions_headers() {
        let raw = block(&[
            (":authority", "api.example.com"),
            (":path", "/x?y"),
            (":method", "POST"),
            ("authorization", "Bearer t"),
            ("x_auth_roles", "admin"),
        ]);
        let pairs = header_pairs(&raw).unwrap();
        let request = Request::from_pairs(&pairs);
        assert_eq!(
            (request.method, request.authority, request.path, request.authorization),
            (&b"POST"[..], &b"api.example.com"[..], &b"/x?y"[..], Some(&b"Bearer t"[..]))
        );
        assert_eq!(request.repeated, None);
        assert_eq!(request.names.len(), 5);
    }

    #[test]
    fn from_pairs_notes_a_repeated_header() {
        for (name, repeated) in [
            ("authorization", Repeated::Authorization),
            (":authority", Repeated::Authority),
            (":path", Repeated::Path),
            (":method", Repeated::Method),
        ] {
            let raw =
                block(&[(":method", "GET"), (":authority", "a"), (":path", "/"), ("authorization", "x"), (name, "y")]);
            let pairs = header_pairs(&raw).unwrap();
            assert_eq!(Request::from_pairs(&pairs).repeated, Some(repeated), "{name}");
        }
    }

    #[test]
    fn underscore_spellings_of_forwarded_headers_are_found() {
        let forwarded = vec!["x-auth-subject".to_string(), "x-auth-org".to_string()];
        let names: Vec<&[u8]> =
            vec![b"x_auth_subject", b"x-auth-org", b"x_auth-org", b"x_other", b"X_AUTH_ORG", b"x_auth_orgs"];
        assert_eq!(underscore_spellings(&names, &forwarded), [&b"x_auth_subject"[..], b"x_auth-org", b"X_AUTH_ORG"]);
    }
}

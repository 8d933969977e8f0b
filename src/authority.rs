//! The canonical form of a request's `:authority`, the only form host rules
//! are matched on.
//!
//! Hosts are as hostile as paths: `API.example.com.`, `api.example.com:443`
//! and `api.example.com` name one host, while `user@api.example.com`,
//! `0x7f.1` or `127.1` mean different things to different parsers (browsers'
//! URL parsers read the last two as 127.0.0.1). So the filter canonicalizes
//! what has one meaning and refuses, with 400, what could be read two ways.
//!
//! Canonical form: host in lower case without a trailing dot; IPv4 only as
//! four decimal parts without leading zeros; IPv6 in brackets, compressed as
//! RFC 5952 writes it; the port, when given, as a number.

use std::fmt;
use std::net::Ipv6Addr;

/// Why an authority is refused (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// No `:authority` at all.
    Empty,
    /// `user@host`: the part before `@` is read as the host by some parsers.
    Userinfo,
    /// A byte no host may carry: space, control, non-ASCII, `%`, `,`, `/`...
    ForbiddenByte,
    /// A port that is empty, zero, over 65535 or has leading zeros.
    BadPort,
    /// An empty or over-long label, or a name over 253 characters.
    BadName,
    /// A host ending in a number that is not a plain dotted-quad IPv4
    /// (`127.1`, `0x7f.0.0.1`, `010.0.0.1`, `2130706433`).
    AmbiguousNumber,
    /// An IP literal that is not a plain IPv6 address in brackets (zone ids,
    /// IPvFuture, or IPv6 without brackets).
    BadIpLiteral,
    /// `:authority` came twice.
    Repeated,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostError::Empty => "host is missing",
            HostError::Userinfo => "host has user information",
            HostError::ForbiddenByte => "host carries a forbidden character",
            HostError::BadPort => "host has an invalid port",
            HostError::BadName => "host name is malformed",
            HostError::AmbiguousNumber => "host is a number that is not a plain IPv4 address",
            HostError::BadIpLiteral => "host is an invalid IP literal",
            HostError::Repeated => "host is given twice",
        })
    }
}

/// A canonical authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lower case, no trailing dot; `[…]` for IPv6.
    pub host: String,
    pub port: Option<u16>,
}

/// Longest host name (RFC 1035) and label.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// The canonical form of a request's `:authority` (see the module documentation).
pub fn canonical_authority(raw: &[u8]) -> Result<Authority, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    if !raw.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')) {
        return Err(HostError::ForbiddenByte);
    }
    // Only the allowed ASCII bytes remain, so this is a str.
    let text = std::str::from_utf8(raw).map_err(|_| HostError::ForbiddenByte)?;
    let (host, port) = split_port(text)?;
    let port = port.map(parse_port).transpose()?;
    let host = match host.strip_prefix('[') {
        Some(literal) => ipv6_literal(literal)?,
        None => host_name(host)?,
    };
    Ok(Authority { host, port })
}

/// `host[:port]`, with IPv6 literals in brackets.
fn split_port(text: &str) -> Result<(&str, Option<&str>), HostError> {
    if text.starts_with('[') {
        let end = text.find(']').ok_or(HostError::BadIpLiteral)?;
        let (host, rest) = text.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => rest.strip_prefix(':').map(|port| (host, Some(port))).ok_or(HostError::BadIpLiteral),
        };
    }
    if text.contains(['[', ']']) {
        return Err(HostError::BadIpLiteral);
    }
    match text.split_once(':') {
        None => Ok((text, None)),
        // Two colons outside brackets: a bare IPv6 address, or garbage.
        Some((_, port)) if port.contains(':') => Err(HostError::BadIpLiteral),
        Some((host, port)) => Ok((host, Some(port))),
    }
}

fn parse_port(port: &str) -> Result<u16, HostError> {
    let digits_only = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || port.starts_with('0') {
        return Err(HostError::BadPort);
    }
    port.parse::<u16>().map_err(|_| HostError::BadPort)
}

/// `[…]` without its `[`: a plain IPv6 address, written back compressed.
fn ipv6_literal(literal: &str) -> Result<String, HostError> {
    let address = literal.strip_suffix(']').ok_or(HostError::BadIpLiteral)?;
    let parsed: Ipv6Addr = address.parse().map_err(|_| HostError::BadIpLiteral)?;
    Ok(format!("[{parsed}]"))
}

fn host_name(host: &str) -> Result<String, HostError> {
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(HostError::BadName);
    }
    if name.split('.').any(|label| label.is_empty() || label.len() > MAX_LABEL_LEN) {
        return Err(HostError::BadName);
    }
    if ends_in_number(&name) && !is_dotted_quad(&name) {
        return Err(HostError::AmbiguousNumber);
    }
    Ok(name)
}

/// The WHATWG URL rule: a host whose last label is a number (decimal, or
/// `0x` hex) is parsed as IPv4, in any of several notations.
fn ends_in_number(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    let hex = last.strip_prefix("0x").map(|rest| rest.bytes().all(|b| b.is_ascii_hexdigit()));
    hex.unwrap_or_else(|| last.bytes().all(|b| b.is_ascii_digit()))
}

/// Exactly `a.b.c.d`, each 0-255 in decimal without leading zeros.
fn is_dotted_quad(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|part| {
            (1..=3).contains(&part.len())
                && part.bytes().all(|b| b.is_ascii_digit())
                && !(part.len() > 1 && part.starts_with('0'))
                && part.parse::<u8>().is_ok()
        })
}

/// A rule's `host`: an exact host or `*.` and a domain (any subdomain of it,
/// at any depth, not the domain itself), with an optional port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    name: NamePattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Exact(String),
    /// The domain with a leading dot: `.example.com`.
    SubdomainOf(String),
}

impl HostPattern {
    /// Parses a rule's host; compared case-insensitively, so any case is accepted.
    pub fn parse(text: &str) -> Result<HostPattern, HostError> {
        match text.strip_prefix("*.") {
            Some(domain) => {
                let Authority { host, port } = canonical_authority(domain.as_bytes())?;
                if host.starts_with('[') || is_dotted_quad(&host) {
                    return Err(HostError::BadName);
                }
                Ok(HostPattern { name: NamePattern::SubdomainOf(format!(".{host}")), port })
            }
            None => {
                let Authority { host, port } = canonical_authority(text.as_bytes())?;
                Ok(HostPattern { name: NamePattern::Exact(host), port })
            }
        }
    }

    /// Whether a canonical authority matches. A pattern without a port matches
    /// any port (or none); one with a port only that port, written out.
    pub fn matches(&self, authority: &Authority) -> bool {
        let port_ok = self.port.is_none() || self.port == authority.port;
        port_ok
            && match &self.name {
                NamePattern::Exact(host) => *host == authority.host,
                NamePattern::SubdomainOf(suffix) => {
                    authority.host.len() > suffix.len() && authority.host.ends_with(suffix.as_str())
                }
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> Result<(String, Option<u16>), HostError> {
        canonical_authority(raw.as_bytes()).map(|a| (a.host, a.port))
    }

    #[test]
    fn canonical_authority_folds_case_trailing_dot_and_port() {
        assert_eq!(canonical("API.Example.COM"), Ok(("api.example.com".into(), None)));
        assert_eq!(canonical("api.example.com."), Ok(("api.example.com".into(), None)));
        assert_eq!(canonical("api.example.com.:8443"), Ok(("api.example.com".into(), Some(8443))));
        assert_eq!(canonical("localhost:10000"), Ok(("localhost".into(), Some(10000))));
        assert_eq!(canonical("svc_a.internal"), Ok(("svc_a.internal".into(), None)));
        assert_eq!(canonical("127.0.0.1:80"), Ok(("127.0.0.1".into(), Some(80))));
        assert_eq!(canonical("0.0.0.0"), Ok(("0.0.0.0".into(), None)));
    }

    #[test]
    fn canonical_authority_compresses_ipv6() {
        assert_eq!(canonical("[::1]"), Ok(("[::1]".into(), None)));
        assert_eq!(canonical("[0:0:0:0:0:0:0:1]:8080"), Ok(("[::1]".into(), Some(8080))));
        assert_eq!(canonical("[2001:DB8::0:1]"), Ok(("[2001:db8::1]".into(), None)));
        assert_eq!(canonical("[::ffff:127.0.0.1]"), Ok(("[::ffff:127.0.0.1]".into(), None)));
    }

    #[test]
    fn canonical_authority_refuses_ambiguous_and_malformed_hosts() {
        let cases = [
            ("", HostError::Empty),
            ("user@api.example.com", HostError::Userinfo),
            ("api.example.com@evil.example", HostError::Userinfo),
            ("@api.example.com", HostError::Userinfo),
            ("api.example.com ", HostError::ForbiddenByte),
            ("api.example.com,other.example", HostError::ForbiddenByte),
            ("api%2eexample.com", HostError::ForbiddenByte),
            ("api.example.com/x", HostError::ForbiddenByte),
            ("api.ex\u{e4}mple.com", HostError::ForbiddenByte),
            ("api.example.com\t", HostError::ForbiddenByte),
            ("*.example.com", HostError::ForbiddenByte),
            ("api.example.com:", HostError::BadPort),
            ("api.example.com:0", HostError::BadPort),
            ("api.example.com:080", HostError::BadPort),
            ("api.example.com:65536", HostError::BadPort),
            ("api.example.com:123456", HostError::BadPort),
            ("api.example.com:http", HostError::BadPort),
            ("api.example.com:80:80", HostError::BadIpLiteral),
            ("api..example.com", HostError::BadName),
            (".api.example.com", HostError::BadName),
            ("api.example.com..", HostError::BadName),
            (".", HostError::BadName),
            (":80", HostError::BadName),
            ("127.1", HostError::AmbiguousNumber),
            ("0x7f.0.0.1", HostError::AmbiguousNumber),
            ("0x7f000001", HostError::AmbiguousNumber),
            ("2130706433", HostError::AmbiguousNumber),
            ("010.0.0.1", HostError::AmbiguousNumber),
            ("127.0.0.01", HostError::AmbiguousNumber),
            ("256.0.0.1", HostError::AmbiguousNumber),
            ("1.2.3.4.5", HostError::AmbiguousNumber),
            ("example.123", HostError::AmbiguousNumber),
            ("example.0x", HostError::AmbiguousNumber),
            ("::1", HostError::BadIpLiteral),
            ("[::1", HostError::BadIpLiteral),
            ("[::1]x", HostError::BadIpLiteral),
            ("[::1]]", HostError::BadIpLiteral),
            ("[v1.fe]", HostError::BadIpLiteral),
            ("[127.0.0.1]", HostError::BadIpLiteral),
            ("a[::1]", HostError::BadIpLiteral),
        ];
        for (raw, error) in cases {
            assert_eq!(canonical(raw), Err(error), "{raw:?}");
        }
        assert_eq!(canonical_authority(b"api\xff.example.com"), Err(HostError::ForbiddenByte));
        assert_eq!(canonical(&format!("{}.com", "a".repeat(64))), Err(HostError::BadName));
        assert_eq!(canonical(&["a"; 128].join(".")), Err(HostError::BadName));
    }

    #[test]
    fn host_pattern_exact_ignores_port_unless_named() {
        let any_port = HostPattern::parse("API.example.com").unwrap();
        let only_8443 = HostPattern::parse("api.example.com:8443").unwrap();
        let at = |raw: &str| canonical_authority(raw.as_bytes()).unwrap();
        assert!(any_port.matches(&at("api.example.com")));
        assert!(any_port.matches(&at("api.example.com.:9999")));
        assert!(!any_port.matches(&at("other.example.com")));
        assert!(!any_port.matches(&at("api.example.com.evil")));
        assert!(only_8443.matches(&at("api.example.com:8443")));
        assert!(!only_8443.matches(&at("api.example.com")));
        assert!(!only_8443.matches(&at("api.example.com:443")));
    }

    #[test]
    fn host_pattern_wildcard_matches_subdomains_only() {
        let pattern = HostPattern::parse("*.Example.com").unwrap();
        let at = |raw: &str| canonical_authority(raw.as_bytes()).unwrap();
        assert!(pattern.matches(&at("a.example.com")));
        assert!(pattern.matches(&at("a.b.example.com:80")));
        assert!(!pattern.matches(&at("example.com")));
        assert!(!pattern.matches(&at("aexample.com")));
        assert!(!pattern.matches(&at("example.com.evil")));
    }

    #[test]
    fn host_pattern_refuses_what_could_never_match() {
        for bad in ["", "*", "*.", "*.*.example.com", "a.*.example.com", "*.[::1]", "*.127.0.0.1", "user@host", "127.1"]
        {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}

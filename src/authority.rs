//! A request's `:authority` as Envoy's router reads it, the only form host
//! rules are matched on.
//!
//! The router picks a virtual host by comparing the host, in lower case,
//! with the domains as written: after the connection manager's
//! `strip_trailing_host_dot` and `strip_any_host_port` (which strip one dot
//! and one port, once), `orders.example.com.` or `[0:0::1]` are other hosts
//! to it than `orders.example.com` or `[::1]`. A filter that folds them onto
//! one host admits a request under one API's rules that the router serves
//! from another virtual host. So the filter folds only what the router
//! folds (letter case) and refuses, with 400, what the router and DNS or
//! URL parsers read differently: a trailing dot left over, IP addresses not
//! in their one canonical form, user information (`user@host`), numbers
//! that URL parsers read as IPv4 (`127.1`, `0x7f.0.0.1`).
//!
//! A port left in the host is counted by Envoy's router by default and
//! ignored with `ignore_port_in_host_matching` (and by Istio's `host:*`
//! domains): rules read a request both ways ([`PortReading`]) and refuse it
//! when the two pick different rules (see `rules`).

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
    /// An IPv6 address not written as RFC 5952 writes it (`[0:0::1]` for
    /// `[::1]`): the router compares it as written.
    IpNotCanonical,
    /// A trailing dot Envoy did not strip: DNS reads `a.example.` as
    /// `a.example`, the router as another host.
    TrailingDot,
    /// A port whose counting or ignoring decides which rule applies.
    PortDecides,
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
            HostError::IpNotCanonical => "host is an IPv6 address not in its canonical form",
            HostError::TrailingDot => "host ends in a dot",
            HostError::PortDecides => "host has a port, and whether it is counted decides which rule applies",
            HostError::Repeated => "host is given twice",
        })
    }
}

/// A canonical authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lower case, no trailing dot; `[…]` for IPv6, compressed as RFC 5952 does.
    pub host: String,
    pub port: Option<u16>,
}

/// Whether a host's port counts when it is matched, as Envoy's router counts
/// it by default, or is ignored, as with `ignore_port_in_host_matching`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortReading {
    Counted,
    Ignored,
}

/// Longest host name (RFC 1035) and label.
const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A request's `:authority` as the router reads it, or why it is refused
/// (see the module documentation).
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

/// `[…]` without its `[`: a plain IPv6 address, already as RFC 5952 writes it
/// (in any letter case).
fn ipv6_literal(literal: &str) -> Result<String, HostError> {
    let address = literal.strip_suffix(']').ok_or(HostError::BadIpLiteral)?;
    let parsed: Ipv6Addr = address.parse().map_err(|_| HostError::BadIpLiteral)?;
    let canonical = parsed.to_string();
    if !canonical.eq_ignore_ascii_case(address) {
        return Err(HostError::IpNotCanonical);
    }
    Ok(format!("[{canonical}]"))
}

fn host_name(host: &str) -> Result<String, HostError> {
    if host.len() > 1 && host.ends_with('.') {
        return Err(HostError::TrailingDot);
    }
    let name = host.to_ascii_lowercase();
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

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            NamePattern::Exact(host) => f.write_str(host)?,
            NamePattern::SubdomainOf(suffix) => write!(f, "*{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
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
    /// The one host name this pattern matches, if it is not a `*.` pattern.
    pub fn exact_name(&self) -> Option<&str> {
        match &self.name {
            NamePattern::Exact(name) => Some(name),
            NamePattern::SubdomainOf(_) => None,
        }
    }

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

    /// Whether a canonical authority matches. A pattern with a port matches
    /// that port, written out; without one, a host without a port. With the
    /// port ignored, the name alone decides.
    pub fn matches(&self, authority: &Authority, reading: PortReading) -> bool {
        let port_ok = reading == PortReading::Ignored || self.port == authority.port;
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
    fn canonical_authority_folds_case_and_reads_the_port() {
        assert_eq!(canonical("API.Example.COM"), Ok(("api.example.com".into(), None)));
        assert_eq!(canonical("api.example.com:8443"), Ok(("api.example.com".into(), Some(8443))));
        assert_eq!(canonical("localhost:10000"), Ok(("localhost".into(), Some(10000))));
        assert_eq!(canonical("svc_a.internal"), Ok(("svc_a.internal".into(), None)));
        assert_eq!(canonical("127.0.0.1:80"), Ok(("127.0.0.1".into(), Some(80))));
        assert_eq!(canonical("0.0.0.0"), Ok(("0.0.0.0".into(), None)));
    }

    /// The router compares what is left after Envoy's strip options as written.
    #[test]
    fn what_the_router_reads_as_another_host_is_refused() {
        for raw in ["api.example.com.", "api.example.com.:8443", "API.example.COM.", "a."] {
            assert_eq!(canonical(raw), Err(HostError::TrailingDot), "{raw:?}");
        }
        for raw in ["[0:0:0:0:0:0:0:1]", "[0:0::1]:8080", "[2001:db8::0:1]", "[2001:0db8::1]", "[::FFFF:7f00:1]"] {
            assert_eq!(canonical(raw), Err(HostError::IpNotCanonical), "{raw:?}");
        }
    }

    #[test]
    fn canonical_ipv6_is_taken_in_any_case() {
        assert_eq!(canonical("[::1]"), Ok(("[::1]".into(), None)));
        assert_eq!(canonical("[::1]:8080"), Ok(("[::1]".into(), Some(8080))));
        assert_eq!(canonical("[2001:DB8::1]"), Ok(("[2001:db8::1]".into(), None)));
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
            ("api.example.com..", HostError::TrailingDot),
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
    fn host_pattern_port_counts_as_written_or_not_at_all() {
        let no_port = HostPattern::parse("API.example.com").unwrap();
        let only_8443 = HostPattern::parse("api.example.com:8443").unwrap();
        let at = |raw: &str| canonical_authority(raw.as_bytes()).unwrap();
        let counted = |pattern: &HostPattern, raw: &str| pattern.matches(&at(raw), PortReading::Counted);
        let ignored = |pattern: &HostPattern, raw: &str| pattern.matches(&at(raw), PortReading::Ignored);
        assert!(counted(&no_port, "api.example.com"));
        assert!(!counted(&no_port, "api.example.com:9999"));
        assert!(ignored(&no_port, "api.example.com:9999"));
        assert!(!counted(&no_port, "other.example.com") && !ignored(&no_port, "other.example.com:1"));
        assert!(!ignored(&no_port, "api.example.com.evil"));
        assert!(counted(&only_8443, "api.example.com:8443") && ignored(&only_8443, "api.example.com:8443"));
        assert!(!counted(&only_8443, "api.example.com"));
        assert!(!counted(&only_8443, "api.example.com:443"));
        assert!(ignored(&only_8443, "api.example.com:443"));
    }

    #[test]
    fn host_pattern_displays_as_written_canonically() {
        for (written, shown) in [("API.example.com", "api.example.com"), ("*.Example.com:8443", "*.example.com:8443")] {
            assert_eq!(HostPattern::parse(written).unwrap().to_string(), shown);
        }
    }

    #[test]
    fn host_pattern_wildcard_matches_subdomains_only() {
        let pattern = HostPattern::parse("*.Example.com").unwrap();
        let at = |raw: &str| canonical_authority(raw.as_bytes()).unwrap();
        assert!(pattern.matches(&at("a.example.com"), PortReading::Counted));
        assert!(pattern.matches(&at("a.b.example.com:80"), PortReading::Ignored));
        assert!(!pattern.matches(&at("example.com"), PortReading::Counted));
        assert!(!pattern.matches(&at("aexample.com"), PortReading::Counted));
        assert!(!pattern.matches(&at("example.com.evil"), PortReading::Counted));
    }

    #[test]
    fn host_pattern_refuses_what_could_never_match() {
        for bad in [
            "",
            "*",
            "*.",
            "*.*.example.com",
            "a.*.example.com",
            "*.[::1]",
            "*.127.0.0.1",
            "user@host",
            "127.1",
            "api.example.com.",
            "*.example.com.",
            "[0::1]",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}

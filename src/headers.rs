//! The headers an API forwards upstream: which names may carry identity, and
//! the checks on an API's `identity_headers` and `claim_headers`.

use std::collections::BTreeMap;

use crate::config::RawIdentityHeaders;
use crate::policy::IdentityHeaders;

/// The most claim headers one API may forward.
pub const MAX_CLAIM_HEADERS: usize = 32;

/// A problem with one member of an API's headers: the member (relative to
/// the API, e.g. `claim_headers.x-org`) and what is wrong.
pub type HeaderError = (String, String);

/// Headers that must not carry identity: credentials, routing, hop-by-hop
/// and content headers, and Envoy's own.
const RESERVED_HEADERS: [&str; 12] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "content-type",
    "content-encoding",
];
const RESERVED_PREFIXES: [&str; 2] = ["x-envoy-", "x-forwarded-"];

pub fn is_forwardable_header(name: &str) -> bool {
    // No '_': the shipped Envoy config refuses underscore headers, and
    // CGI-style upstreams read `x_a` and `x-a` as the same variable.
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !RESERVED_HEADERS.contains(&name)
        && !RESERVED_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

const HEADER_RULE: &str = "must be a lower-case header name (a-z, 0-9, '-') that is not a credential, hop-by-hop, \
                           content, x-envoy-* or x-forwarded-* header";

pub(crate) fn identity_headers(raw: &RawIdentityHeaders) -> Result<IdentityHeaders, HeaderError> {
    let RawIdentityHeaders { subject, client_id, roles, issuer } = raw;
    let headers = IdentityHeaders {
        subject: subject.clone(),
        client_id: client_id.clone(),
        roles: roles.clone(),
        issuer: issuer.clone(),
    };
    let named = [
        ("subject", Some(subject)),
        ("client_id", Some(client_id)),
        ("roles", Some(roles)),
        ("issuer", issuer.as_ref()),
    ];
    for (field, name) in named.iter().filter_map(|(field, name)| Some((field, (*name)?))) {
        if !is_forwardable_header(name) {
            return Err((format!("identity_headers.{field}"), HEADER_RULE.into()));
        }
    }
    let names = headers.names();
    if names.iter().enumerate().any(|(i, name)| names.iter().skip(i + 1).any(|other| other == name)) {
        return Err(("identity_headers".into(), "the header names must differ".into()));
    }
    Ok(headers)
}

pub(crate) fn claim_headers(
    claims: &BTreeMap<String, String>,
    identity: &IdentityHeaders,
) -> Result<Vec<(String, String)>, HeaderError> {
    if claims.len() > MAX_CLAIM_HEADERS {
        return Err(("claim_headers".into(), format!("may map at most {MAX_CLAIM_HEADERS} headers")));
    }
    let mut headers = Vec::with_capacity(claims.len());
    for (header, claim) in claims {
        let field = format!("claim_headers.{header}");
        if !is_forwardable_header(header) {
            return Err((field, HEADER_RULE.into()));
        }
        if identity.names().contains(&header.as_str()) {
            return Err((field, "is already one of identity_headers".into()));
        }
        if claim.is_empty() || claim.bytes().any(|b| b.is_ascii_control()) {
            return Err((field, "must name a claim of the introspection answer".into()));
        }
        headers.push((header.clone(), claim.clone()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwardable_headers_are_plain_lower_case_names() {
        for good in ["x-auth-subject", "x-org", "x1"] {
            assert!(is_forwardable_header(good), "{good}");
        }
        for bad in ["", "X-Org", "x_org", "x org", "authorization", "cookie", "host", "x-envoy-org", "x-forwarded-user"]
        {
            assert!(!is_forwardable_header(bad), "{bad}");
        }
    }
}

//! Every counter the filter keeps, in one list. They appear in Envoy's
//! `/stats` as `wasmcustom.oauth_introspection.<name>`, summed over workers.

use crate::response::Denial;

/// A counter of the whole filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Allowed,
    DeniedMissingToken,
    DeniedMalformedToken,
    DeniedInvalidToken,
    DeniedInsufficientRole,
    DeniedBadPath,
    DeniedBadHost,
    DeniedNoRule,
    DeniedIssuerUnavailable,
    DeniedOverloaded,
    /// Valid and invalid verdicts found in the cache.
    CacheHits,
    CacheMisses,
    /// Introspection calls made, to every issuer.
    Calls,
    /// Requests that waited for another request's call instead of making one.
    Coalesced,
    /// Calls that brought no usable answer, at every issuer.
    IssuerErrors,
    /// Client assertions signed, for every issuer.
    Signatures,
    /// JWTs whose signature was checked locally (cache misses of issuers in
    /// the local JWT mode).
    JwtVerifications,
    /// Microseconds spent in those verifications (signature and claims):
    /// divided by `JwtVerifications`, the mean cost of one inside the VM.
    JwtVerificationMicros,
    /// Fetches of an issuer's keys (JWKS), and those that brought none.
    JwksFetches,
    JwksErrors,
    /// Denials a dry-run rule or API let through, by reason.
    WouldDenyMissingToken,
    WouldDenyMalformedToken,
    WouldDenyInvalidToken,
    WouldDenyInsufficientRole,
    WouldDenyIssuerUnavailable,
    WouldDenyOverloaded,
    /// Requests admitted on a recent valid verdict while the issuer failed.
    StaleAdmitted,
    /// RFC 9728 metadata documents (and their preflights) answered.
    MetadataServed,
    /// CORS preflights let through without a token.
    CorsPreflights,
}

/// Every counter with its name, in the order they are defined.
pub const COUNTERS: [(Counter, &str); 29] = [
    (Counter::Allowed, "allowed"),
    (Counter::DeniedMissingToken, "denied.missing_token"),
    (Counter::DeniedMalformedToken, "denied.malformed_token"),
    (Counter::DeniedInvalidToken, "denied.invalid_token"),
    (Counter::DeniedInsufficientRole, "denied.insufficient_role"),
    (Counter::DeniedBadPath, "denied.bad_path"),
    (Counter::DeniedBadHost, "denied.bad_host"),
    (Counter::DeniedNoRule, "denied.no_rule"),
    (Counter::DeniedIssuerUnavailable, "denied.issuer_unavailable"),
    (Counter::DeniedOverloaded, "denied.overloaded"),
    (Counter::CacheHits, "cache.hits"),
    (Counter::CacheMisses, "cache.misses"),
    (Counter::Calls, "introspection.calls"),
    (Counter::Coalesced, "introspection.coalesced"),
    (Counter::IssuerErrors, "introspection.issuer_errors"),
    (Counter::Signatures, "assertion.signatures"),
    (Counter::JwtVerifications, "jwt.verifications"),
    (Counter::JwtVerificationMicros, "jwt.verification_us"),
    (Counter::JwksFetches, "jwks.fetches"),
    (Counter::JwksErrors, "jwks.errors"),
    (Counter::WouldDenyMissingToken, "would_deny.missing_token"),
    (Counter::WouldDenyMalformedToken, "would_deny.malformed_token"),
    (Counter::WouldDenyInvalidToken, "would_deny.invalid_token"),
    (Counter::WouldDenyInsufficientRole, "would_deny.insufficient_role"),
    (Counter::WouldDenyIssuerUnavailable, "would_deny.issuer_unavailable"),
    (Counter::WouldDenyOverloaded, "would_deny.overloaded"),
    (Counter::StaleAdmitted, "stale_if_error.admitted"),
    (Counter::MetadataServed, "resource_metadata.served"),
    (Counter::CorsPreflights, "cors_preflight.passed"),
];

/// A counter of one issuer: `issuer.<name>.<counter>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerCounter {
    Calls,
    Errors,
    /// The probe after a configuration loaded (see `probe`): the issuer took
    /// the filter's credentials, refused them, or gave no answer about them.
    CredentialsAccepted,
    CredentialsRejected,
    CredentialsUnchecked,
    /// Fetches of its keys, and those that brought none (local JWT mode).
    JwksFetches,
    JwksErrors,
}

pub const ISSUER_COUNTERS: [(IssuerCounter, &str); 7] = [
    (IssuerCounter::Calls, "calls"),
    (IssuerCounter::Errors, "errors"),
    (IssuerCounter::CredentialsAccepted, "credentials_accepted"),
    (IssuerCounter::CredentialsRejected, "credentials_rejected"),
    (IssuerCounter::CredentialsUnchecked, "credentials_unchecked"),
    (IssuerCounter::JwksFetches, "jwks_fetches"),
    (IssuerCounter::JwksErrors, "jwks_errors"),
];

/// The full name of a counter as defined with the host.
pub fn name(counter: &str) -> String {
    format!("oauth_introspection.{counter}")
}

/// The full name of an issuer's counter.
pub fn issuer_name(issuer: &str, counter: &str) -> String {
    format!("oauth_introspection.issuer.{issuer}.{counter}")
}

impl Denial {
    pub fn counter(&self) -> Counter {
        match self {
            Denial::MissingToken => Counter::DeniedMissingToken,
            Denial::MalformedToken => Counter::DeniedMalformedToken,
            Denial::InvalidToken(_) => Counter::DeniedInvalidToken,
            Denial::InsufficientRole(_) => Counter::DeniedInsufficientRole,
            Denial::BadPath(_) => Counter::DeniedBadPath,
            Denial::BadHost(_) => Counter::DeniedBadHost,
            Denial::NoRule => Counter::DeniedNoRule,
            Denial::IssuerUnavailable => Counter::DeniedIssuerUnavailable,
            Denial::Overloaded => Counter::DeniedOverloaded,
        }
    }

    /// The counter of this denial when a dry run lets it through; `None` for
    /// the denials no rule's dry run covers (they come before any rule applies).
    pub fn would_deny_counter(&self) -> Option<Counter> {
        Some(match self {
            Denial::MissingToken => Counter::WouldDenyMissingToken,
            Denial::MalformedToken => Counter::WouldDenyMalformedToken,
            Denial::InvalidToken(_) => Counter::WouldDenyInvalidToken,
            Denial::InsufficientRole(_) => Counter::WouldDenyInsufficientRole,
            Denial::IssuerUnavailable => Counter::WouldDenyIssuerUnavailable,
            Denial::Overloaded => Counter::WouldDenyOverloaded,
            Denial::BadPath(_) | Denial::BadHost(_) | Denial::NoRule => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_has_the_counter_named_by_its_reason() {
        use crate::authority::HostError;
        use crate::claims::Rejection;
        use crate::path::PathError;
        for denial in [
            Denial::MissingToken,
            Denial::MalformedToken,
            Denial::InvalidToken(Rejection::Inactive),
            Denial::InsufficientRole(vec![]),
            Denial::BadPath(PathError::TooLong),
            Denial::BadHost(HostError::Empty),
            Denial::NoRule,
            Denial::IssuerUnavailable,
            Denial::Overloaded,
        ] {
            let (_, name) = COUNTERS.iter().find(|(c, _)| *c == denial.counter()).unwrap();
            assert_eq!(*name, format!("denied.{}", denial.reason()));
        }
    }

    #[test]
    fn counter_names_are_distinct() {
        for (i, (a, x)) in COUNTERS.iter().enumerate() {
            for (b, y) in COUNTERS.iter().skip(i + 1) {
                assert!(a != b && x != y, "{x} / {y}");
            }
        }
    }
}

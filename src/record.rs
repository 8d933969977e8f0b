//! What the filter leaves of each request's outcome where Envoy's access log
//! and later filters can read it: filter state `wasm.oauth_introspection.<field>`
//! (a proxy-wasm property), e.g. `%FILTER_STATE(wasm.oauth_introspection.decision:PLAIN)%`.
//! Never a token, an assertion or a secret: who, for which API, and why.

/// A field of the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `allow`, `deny`, `would_deny` (a dry run let a denial through) or
    /// `answer` (the filter answered itself: RFC 9728 metadata).
    Decision,
    /// Why: `public`, `valid_token`, `stale_verdict` or `cors_preflight` for an
    /// allow, the denial's reason (`missing_token`, `invalid_token`…, as in the
    /// `denied.*` counters) for a deny or a would-deny, `resource_metadata` for
    /// an answer.
    Reason,
    /// The API whose rule the request fell under.
    Api,
    /// The issuer (its configured name) whose verdict admitted the token.
    Issuer,
    /// The token's `sub` and `client_id`, as the issuer gave them.
    Subject,
    ClientId,
}

impl Field {
    /// The property the field is written to (Envoy's filter state adds `wasm.`).
    pub fn property(self) -> &'static str {
        match self {
            Field::Decision => "oauth_introspection.decision",
            Field::Reason => "oauth_introspection.reason",
            Field::Api => "oauth_introspection.api",
            Field::Issuer => "oauth_introspection.issuer",
            Field::Subject => "oauth_introspection.subject",
            Field::ClientId => "oauth_introspection.client_id",
        }
    }
}

/// An allowed request's reason when its route is public.
pub const PUBLIC: &str = "public";
/// An allowed request's reason when a token was checked.
pub const VALID_TOKEN: &str = "valid_token";
/// An allowed request's reason when the issuer failed and a recent valid
/// verdict admitted it (stale-if-error).
pub const STALE_VERDICT: &str = "stale_verdict";
/// An allowed CORS preflight's reason.
pub const CORS_PREFLIGHT: &str = "cors_preflight";
/// The reason of a metadata request the filter answered.
pub const RESOURCE_METADATA: &str = "resource_metadata";

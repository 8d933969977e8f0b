//! The compiled configuration: what the request path reads. Built once when
//! the plugin loads (see `load`), with every issuer and API
//! name resolved to an index, every header name checked and every path and
//! host canonical; nothing is parsed again per request.

use std::time::Duration;

use crate::cache::CacheSettings;
use crate::claims::Extraction;
use crate::client_auth::ClientAuth;
pub use crate::ids::{ApiId, IssuerId};
use crate::keyring::KeySchedule;
use crate::metadata::ResourceMetadata;
use crate::rules::Rules;
use crate::token::TokenHash;

pub struct Policy {
    pub issuers: Vec<Issuer>,
    pub apis: Vec<Api>,
    pub rules: Rules,
    /// Every header name any API forwards. None of them reaches an upstream
    /// from a client: each is replaced or removed on every request.
    pub forwarded_headers: Vec<String>,
    pub cache: CacheSettings,
    /// Largest introspection answer read.
    pub max_response_bytes: usize,
}

impl Policy {
    pub fn issuer(&self, id: IssuerId) -> Option<&Issuer> {
        self.issuers.get(id.0)
    }

    pub fn api(&self, id: ApiId) -> Option<&Api> {
        self.apis.get(id.0)
    }
}

/// An issuer: where its introspection endpoint is, how the filter proves
/// itself there, and what is kept of its answers.
pub struct Issuer {
    pub name: String,
    pub endpoint: Endpoint,
    pub client_auth: ClientAuth,
    /// `extraction.issuer` is the issuer URL, exactly as `iss` carries it.
    pub extraction: Extraction,
    /// What this issuer's cached verdicts depend on (see `compile::fingerprint`):
    /// a verdict written under another fingerprint is ignored.
    pub fingerprint: u64,
    /// Name, URL and fingerprint, NUL-separated: what [`Issuer::token_hash`]
    /// hashes with the token.
    pub key_scope: String,
    /// Set when its JWTs are verified locally (`jwt.mode` `local`).
    pub jwt: Option<LocalJwt>,
}

/// Where an issuer publishes its keys, fetched through its introspection
/// cluster, and when they are fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalJwt {
    pub jwks_path: String,
    pub schedule: KeySchedule,
}

impl Issuer {
    pub fn url(&self) -> &str {
        &self.extraction.issuer
    }

    /// The cache and in-flight key of `token` at this issuer: its name, URL
    /// and fingerprint are part of it, so two issuers never share a verdict
    /// or a call, not even two entries for one ZITADEL instance with
    /// different credentials, nor one issuer under two configurations.
    pub fn token_hash(&self, token: &str) -> TokenHash {
        TokenHash::of(&self.key_scope, token)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    /// Introspection calls in flight per Envoy, past which requests get 503.
    pub max_in_flight: u32,
}

/// One protected API: whose tokens it takes and what it forwards upstream.
pub struct Api {
    pub name: String,
    /// A token is for this API only if its `aud` names one of these.
    pub audiences: Vec<String>,
    /// The issuers it trusts, in the order an opaque token is tried.
    pub issuers: Vec<TrustedIssuer>,
    pub identity_headers: IdentityHeaders,
    /// Configured header names this API does not set: removed from its requests.
    pub foreign_headers: Vec<String>,
    /// Its RFC 9728 metadata, when it names its `resource`.
    pub metadata: Option<ResourceMetadata>,
    /// How long after its end a valid verdict may still admit while its issuer
    /// fails (stale-if-error); 0: never.
    pub stale_if_error_ms: u64,
    /// CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// pass without a token.
    pub cors_preflight: bool,
}

impl Api {
    pub fn trusted(&self, issuer: IssuerId) -> Option<&TrustedIssuer> {
        self.issuers.iter().find(|trusted| trusted.id == issuer)
    }
}

/// An issuer as one API reads its verdicts: which of the issuer's role
/// claims and forwarded claims (see [`Extraction`]) are this API's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    pub id: IssuerId,
    /// Indices into `Extraction::role_claims`.
    pub role_claims: Vec<usize>,
    /// Header names, each with its index into `Extraction::header_claims`.
    pub claim_headers: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub subject: String,
    pub client_id: String,
    pub roles: String,
    /// For the URL of the issuer that vouched, when named.
    pub issuer: Option<String>,
}

impl IdentityHeaders {
    pub fn names(&self) -> Vec<&str> {
        let mut names = vec![self.subject.as_str(), self.client_id.as_str(), self.roles.as_str()];
        names.extend(self.issuer.as_deref());
        names
    }
}

//! The plugin configuration: JSON in Envoy's `plugin_config.configuration`.
//! This module is its shape, read strictly: an unknown member or a repeated
//! member fails, and every error names the field. It knows nothing of what
//! the shape becomes: `compile` turns it into the policy the request path
//! reads, checking every value, and `load` does both.
//!
//! Two forms are accepted. The full one names `issuers` and `apis`, and each
//! rule names the `api` it protects. The shorthand of earlier versions (one
//! `issuer`, its `introspection` and `client_auth`, one set of `audiences`)
//! is read as one issuer and one API, both named `default`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::json::{parse_strict, path_at, strip_position, StrictError};

/// A configuration error: which field, and what is wrong with it.
/// Never carries secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: `{}`: {}", self.field, self.problem)
    }
}

/// Reads environment variables; the real one is `std::env::var`, which
/// inside Envoy sees what `vm_config.environment_variables` passes in.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Fields whose values must never be repeated in an error.
const SECRET_FIELDS: [&str; 4] = ["client_secret", "client_secret_env", "key", "key_env"];

/// The field name used when the error is about the configuration as a whole.
pub const WHOLE: &str = "(configuration)";

/// Reads the plugin configuration's JSON into its shape. serde_json reads
/// the text (not the parsed value) so that its errors say where they are,
/// which `path_at` turns into the field's name.
pub(crate) fn read(json: &[u8]) -> Result<RawConfig, ConfigError> {
    parse_strict(json).map_err(|err| match err {
        StrictError::Syntax(problem) => ConfigError::new(WHOLE, problem),
        StrictError::Duplicate { path } => {
            ConfigError::new(if path.is_empty() { WHOLE.to_string() } else { path }, "appears twice; give it once")
        }
    })?;
    serde_json::from_slice(json).map_err(|err| {
        let path = path_at(json, err.line(), err.column());
        let problem = strip_position(&err.to_string());
        // For a missing member the place is its object's end: append the member.
        let missing = problem.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            ("", Some(member)) => member.to_string(),
            // An unknown member named "" has the empty path too.
            ("", None) => WHOLE.to_string(),
            (_, Some(member)) => format!("{path}.{member}"),
            (_, None) => path,
        };
        // serde quotes a wrongly typed value ("invalid type: integer `123`"); not a secret's.
        let secret = SECRET_FIELDS.iter().any(|name| field == *name || field.ends_with(&format!(".{name}")));
        let problem = if secret {
            "has the wrong type (the value is not shown: the field holds a secret)".into()
        } else {
            problem
        };
        ConfigError::new(field, problem)
    })
}

// ---- the JSON shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    // The one-issuer, one-API shorthand.
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub introspection: Option<RawEndpoint>,
    #[serde(default)]
    pub client_auth: Option<RawClientAuth>,
    #[serde(default)]
    pub jwt: Option<RawJwt>,
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub role_claims: Option<Vec<String>>,
    #[serde(default)]
    pub identity_headers: Option<RawIdentityHeaders>,
    #[serde(default)]
    pub claim_headers: Option<BTreeMap<String, String>>,
    // RFC 9728, stale-if-error, dry-run, CORS preflights (see `RawApiOptions`).
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    pub resource_documentation: Option<String>,
    #[serde(default)]
    pub stale_if_error_seconds: Option<u64>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub cors_preflight: Option<RawCorsPreflight>,
    // Several issuers and APIs.
    #[serde(default)]
    pub issuers: Option<BTreeMap<String, RawIssuer>>,
    #[serde(default)]
    pub apis: Option<BTreeMap<String, RawApi>>,
    // Both forms.
    pub rules: Vec<RawRule>,
    #[serde(default)]
    pub unmatched: Option<RawAccess>,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    pub issuer: String,
    pub introspection: RawEndpoint,
    pub client_auth: RawClientAuth,
    /// How the issuer's JWT access tokens are checked (default: introspected).
    #[serde(default)]
    pub jwt: Option<RawJwt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    #[serde(default)]
    pub mode: RawJwtMode,
    /// The rest apply to the local mode only, and are refused with the other.
    #[serde(default)]
    pub jwks_path: Option<String>,
    #[serde(default)]
    pub jwks_refresh_seconds: Option<u64>,
    #[serde(default)]
    pub jwks_min_refresh_seconds: Option<u64>,
    #[serde(default)]
    pub jwks_max_stale_seconds: Option<u64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawJwtMode {
    /// Asked of the issuer, as opaque tokens are.
    #[default]
    Introspect,
    /// Verified against the issuer's published keys.
    Local,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    /// Default: the project id.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    #[serde(default)]
    pub project_id: Option<String>,
    #[serde(default)]
    pub role_claims: Option<Vec<String>>,
    pub issuers: Vec<String>,
    #[serde(default)]
    pub identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub claim_headers: BTreeMap<String, String>,
    // RFC 9728, stale-if-error, dry-run, CORS preflights (see `RawApiOptions`).
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_name: Option<String>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    #[serde(default)]
    pub resource_documentation: Option<String>,
    #[serde(default)]
    pub stale_if_error_seconds: Option<u64>,
    #[serde(default)]
    pub dry_run: Option<bool>,
    #[serde(default)]
    pub cors_preflight: Option<RawCorsPreflight>,
}

/// What an API may add to its token checks, as given in `apis.NAME` or, in
/// the one-issuer form, at the top level. (Not a flattened struct: serde
/// cannot refuse unknown fields beside a flattened one.)
#[derive(Default)]
pub(crate) struct RawApiOptions {
    /// RFC 9728: the API's canonical URL, which makes the filter publish its
    /// protected-resource metadata and point its challenges at it.
    pub resource: Option<String>,
    pub resource_name: Option<String>,
    pub scopes_supported: Option<Vec<String>>,
    pub resource_documentation: Option<String>,
    /// How long after its end a valid verdict may still admit while the issuer fails.
    pub stale_if_error_seconds: Option<u64>,
    /// Count and log what would be denied, and let it through.
    pub dry_run: Option<bool>,
    /// `allow`: CORS preflights pass without a token.
    pub cors_preflight: Option<RawCorsPreflight>,
}

/// Moves an API's options out of a raw struct that has them as fields.
macro_rules! take_api_options {
    ($raw:expr) => {
        RawApiOptions {
            resource: $raw.resource.take(),
            resource_name: $raw.resource_name.take(),
            scopes_supported: $raw.scopes_supported.take(),
            resource_documentation: $raw.resource_documentation.take(),
            stale_if_error_seconds: $raw.stale_if_error_seconds.take(),
            dry_run: $raw.dry_run.take(),
            cors_preflight: $raw.cors_preflight.take(),
        }
    };
}
pub(crate) use take_api_options;

impl RawApiOptions {
    /// The fields given, by name (the one-issuer form's must not sit beside `apis`).
    pub(crate) fn given(&self) -> Vec<&'static str> {
        let fields = [
            ("resource", self.resource.is_some()),
            ("resource_name", self.resource_name.is_some()),
            ("scopes_supported", self.scopes_supported.is_some()),
            ("resource_documentation", self.resource_documentation.is_some()),
            ("stale_if_error_seconds", self.stale_if_error_seconds.is_some()),
            ("dry_run", self.dry_run.is_some()),
            ("cors_preflight", self.cors_preflight.is_some()),
        ];
        fields.into_iter().filter(|(_, given)| *given).map(|(name, _)| name).collect()
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawCorsPreflight {
    Allow,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    pub cluster: String,
    #[serde(default)]
    pub authority: Option<String>,
    #[serde(default = "default_introspection_path")]
    pub path: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientAuth {
    pub method: String,
    /// The ZITADEL application key file: the JSON object, or its text.
    #[serde(default)]
    pub key: Option<Value>,
    /// Name of an environment variable holding the key file's text.
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_assertion_lifetime")]
    pub assertion_lifetime_seconds: u64,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    #[serde(default = "default_slots")]
    pub slots: u32,
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// Default: 10 s, or `max_ttl_seconds` when that is shorter.
    #[serde(default)]
    pub negative_ttl_seconds: Option<u64>,
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: usize,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            slots: default_slots(),
            max_ttl_seconds: default_max_ttl(),
            negative_ttl_seconds: None,
            max_entry_bytes: default_max_entry_bytes(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityHeaders {
    #[serde(default = "default_subject_header")]
    pub subject: String,
    #[serde(default = "default_client_id_header")]
    pub client_id: String,
    #[serde(default = "default_roles_header")]
    pub roles: String,
    /// The URL of the issuer that vouched; not sent unless named.
    #[serde(default)]
    pub issuer: Option<String>,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        RawIdentityHeaders {
            subject: default_subject_header(),
            client_id: default_client_id_header(),
            roles: default_roles_header(),
            issuer: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    pub access: RawAccess,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub api: Option<String>,
    /// Envoy's name for the virtual host its router picked.
    #[serde(default)]
    pub virtual_host: Option<String>,
    /// Envoy's name for the route its router picked.
    #[serde(default)]
    pub route: Option<String>,
    /// Count and log what this rule would deny, and let it through.
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RawAccess {
    Public,
    Authenticated,
    Roles,
    Deny,
}

fn default_introspection_path() -> String {
    "/oauth/v2/introspect".into()
}
fn default_max_in_flight() -> u32 {
    64
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_assertion_lifetime() -> u64 {
    600
}
fn default_slots() -> u32 {
    8192
}
fn default_max_ttl() -> u64 {
    300
}
fn default_max_entry_bytes() -> usize {
    1024
}
fn default_subject_header() -> String {
    "x-auth-subject".into()
}
fn default_client_id_header() -> String {
    "x-auth-client-id".into()
}
fn default_roles_header() -> String {
    "x-auth-roles".into()
}
fn default_clock_skew() -> u64 {
    10
}
fn default_max_response_bytes() -> usize {
    65536
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

//! The plugin configuration: JSON in Envoy's `plugin_config.configuration`,
//! validated completely when the plugin loads. Every error names the field.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cache::CacheSettings;
use crate::client_auth::{AssertionSigner, ClientAuth};
use crate::introspection::Expectations;
use crate::path::canonical_path;
use crate::rules::{is_role_name, Access, PathPattern, Rule, Rules};

/// A configuration error: which field, and what is wrong with it.
/// Never carries secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { field: field.into(), problem: problem.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin configuration: `{}`: {}", self.field, self.problem)
    }
}

/// The validated configuration.
pub struct Config {
    pub introspection: Endpoint,
    pub expectations: Expectations,
    pub client_auth: ClientAuth,
    pub cache: CacheSettings,
    pub identity_headers: IdentityHeaders,
    pub rules: Rules,
    pub max_response_bytes: usize,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub subject: String,
    pub client_id: String,
    pub roles: String,
}

impl IdentityHeaders {
    pub fn names(&self) -> [&str; 3] {
        [&self.subject, &self.client_id, &self.roles]
    }
}

// ---- the JSON shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    issuer: String,
    introspection: RawEndpoint,
    audiences: Vec<String>,
    client_auth: RawClientAuth,
    #[serde(default)]
    project_id: Option<String>,
    #[serde(default)]
    role_claims: Option<Vec<String>>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    identity_headers: RawIdentityHeaders,
    rules: Vec<RawRule>,
    #[serde(default)]
    unmatched: Option<RawAccess>,
    #[serde(default = "default_clock_skew")]
    clock_skew_seconds: u64,
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    cluster: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default = "default_introspection_path")]
    path: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    method: String,
    /// The ZITADEL application key file: the JSON object, or its text.
    #[serde(default)]
    key: Option<Value>,
    /// Name of an environment variable holding the key file's text.
    #[serde(default)]
    key_env: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default = "default_assertion_lifetime")]
    assertion_lifetime_seconds: u64,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_env: Option<String>,
}

/// ZITADEL's application key file, as downloaded from the console.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ApplicationKeyFile {
    #[serde(rename = "type")]
    kind: String,
    key_id: String,
    key: String,
    client_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default = "default_slots")]
    slots: u32,
    #[serde(default = "default_max_ttl")]
    max_ttl_seconds: u64,
    /// Default: 10 s, or `max_ttl_seconds` when that is shorter.
    #[serde(default)]
    negative_ttl_seconds: Option<u64>,
    #[serde(default = "default_max_entry_bytes")]
    max_entry_bytes: usize,
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
struct RawIdentityHeaders {
    #[serde(default = "default_subject_header")]
    subject: String,
    #[serde(default = "default_client_id_header")]
    client_id: String,
    #[serde(default = "default_roles_header")]
    roles: String,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        RawIdentityHeaders {
            subject: default_subject_header(),
            client_id: default_client_id_header(),
            roles: default_roles_header(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    methods: Option<Vec<String>>,
    access: RawAccess,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawAccess {
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

const DEFAULT_NEGATIVE_TTL_SECS: u64 = 10;

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

/// Reads environment variables; the real one is `std::env::var`, which
/// inside Envoy sees what `vm_config.environment_variables` passes in.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses and validates the plugin configuration.
pub fn parse(json: &[u8], env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let problem = strip_position(&err.into_inner().to_string());
        // For a missing member the path names its parent: append the member.
        let missing = problem.strip_prefix("missing field `").and_then(|rest| rest.split('`').next());
        let field = match (path.as_str(), missing) {
            (".", Some(member)) => member.to_string(),
            // An unknown member named "" has the empty path.
            (".", None) | ("", None) => "(configuration)".to_string(),
            (_, Some(member)) => format!("{path}.{member}"),
            (_, None) => path,
        };
        ConfigError::new(field, problem)
    })?;
    validate(raw, env)
}

/// serde_json appends " at line L column C"; the field path says more.
fn strip_position(message: &str) -> String {
    message.rsplit_once(" at line ").map_or(message, |(problem, _)| problem).to_string()
}

fn validate(raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    // Kept verbatim: OpenID Connect compares `iss` exactly, trailing slash included.
    let issuer = raw.issuer;
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) || issuer.len() < "http://x".len() {
        return Err(ConfigError::new("issuer", "must be the issuer's URL, e.g. https://my-org.zitadel.cloud"));
    }
    let introspection = validate_endpoint(raw.introspection, &issuer)?;

    if raw.audiences.is_empty() {
        return Err(ConfigError::new(
            "audiences",
            "must list at least one audience (the project id or the API's client id)",
        ));
    }
    if let Some(i) = raw.audiences.iter().position(|a| a.trim().is_empty()) {
        return Err(ConfigError::new(format!("audiences[{i}]"), "must not be empty"));
    }
    if let Some(project_id) = &raw.project_id {
        if project_id.is_empty() || !project_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(ConfigError::new("project_id", "must be a ZITADEL project id (letters, digits, '-' or '_')"));
        }
    }
    let role_claims = match raw.role_claims {
        Some(claims) => {
            if let Some(i) = claims.iter().position(String::is_empty) {
                return Err(ConfigError::new(format!("role_claims[{i}]"), "must not be empty"));
            }
            claims
        }
        None => {
            let mut claims = vec!["urn:zitadel:iam:org:project:roles".to_string()];
            if let Some(project_id) = &raw.project_id {
                claims.push(format!("urn:zitadel:iam:org:project:{project_id}:roles"));
            }
            claims
        }
    };
    if raw.clock_skew_seconds > 300 {
        return Err(ConfigError::new("clock_skew_seconds", "must be at most 300"));
    }
    if !(1024..=16 * 1024 * 1024).contains(&raw.max_response_bytes) {
        return Err(ConfigError::new("max_response_bytes", "must be between 1024 and 16777216"));
    }

    let client_auth = validate_client_auth(raw.client_auth, &issuer, env)?;
    let expectations =
        Expectations { issuer, audiences: raw.audiences, role_claims, clock_skew_secs: raw.clock_skew_seconds };
    let cache = validate_cache(&raw.cache, &expectations)?;
    let identity_headers = validate_identity_headers(raw.identity_headers)?;
    let rules = validate_rules(raw.rules, raw.unmatched)?;

    Ok(Config {
        expectations,
        introspection,
        client_auth,
        cache,
        identity_headers,
        rules,
        max_response_bytes: raw.max_response_bytes,
    })
}

fn validate_endpoint(raw: RawEndpoint, issuer: &str) -> Result<Endpoint, ConfigError> {
    if raw.cluster.trim().is_empty() {
        return Err(ConfigError::new("introspection.cluster", "must name the Envoy cluster that reaches the issuer"));
    }
    let authority = match raw.authority {
        Some(authority) => authority,
        None => {
            issuer.split_once("://").map(|(_, rest)| rest).unwrap_or(issuer).split('/').next().unwrap_or("").to_string()
        }
    };
    if authority.is_empty() || authority.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/') {
        return Err(ConfigError::new("introspection.authority", "must be a host name with an optional port"));
    }
    if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(ConfigError::new("introspection.path", "must be an absolute path such as /oauth/v2/introspect"));
    }
    if !(1..=60_000).contains(&raw.timeout_ms) {
        return Err(ConfigError::new("introspection.timeout_ms", "must be between 1 and 60000"));
    }
    if !(1..=1024).contains(&raw.max_in_flight) {
        return Err(ConfigError::new("introspection.max_in_flight", "must be between 1 and 1024"));
    }
    Ok(Endpoint {
        cluster: raw.cluster,
        authority,
        path: raw.path,
        timeout: Duration::from_millis(raw.timeout_ms),
        max_in_flight: raw.max_in_flight,
    })
}

fn validate_client_auth(raw: RawClientAuth, issuer: &str, env: EnvLookup<'_>) -> Result<ClientAuth, ConfigError> {
    let unexpected = |present: bool, field: &str, method: &str| {
        if present {
            Err(ConfigError::new(format!("client_auth.{field}"), format!("does not apply to method {method}")))
        } else {
            Ok(())
        }
    };
    match raw.method.as_str() {
        "private_key_jwt" => {
            unexpected(raw.client_id.is_some(), "client_id", "private_key_jwt (the key file names the client)")?;
            unexpected(raw.client_secret.is_some(), "client_secret", "private_key_jwt")?;
            unexpected(raw.client_secret_env.is_some(), "client_secret_env", "private_key_jwt")?;
            let (key_field, key_text) = match (raw.key, raw.key_env) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new("client_auth.key", "give either key or key_env, not both"))
                }
                (None, None) => {
                    return Err(ConfigError::new(
                        "client_auth.key",
                        "private_key_jwt needs key (the ZITADEL key file) or key_env",
                    ))
                }
                (Some(Value::String(text)), None) => ("client_auth.key".to_string(), text),
                (Some(object @ Value::Object(_)), None) => ("client_auth.key".to_string(), object.to_string()),
                (Some(_), None) => {
                    return Err(ConfigError::new("client_auth.key", "must be the key file's JSON object or its text"))
                }
                (None, Some(name)) => {
                    let text = from_env(env, "client_auth.key_env", &name)?;
                    (format!("client_auth.key_env ({name})"), text)
                }
            };
            let key_file: ApplicationKeyFile = serde_json::from_str(&key_text).map_err(|_| {
                ConfigError::new(
                    key_field.clone(),
                    "is not a ZITADEL key file: expected JSON with type, keyId, key and clientId",
                )
            })?;
            if key_file.kind != "application" {
                return Err(ConfigError::new(
                    format!("{key_field}.type"),
                    format!(
                        "is {:?}; use an API application key (type \"application\"), not a service user key",
                        key_file.kind
                    ),
                ));
            }
            if key_file.key.is_empty() {
                return Err(ConfigError::new(format!("{key_field}.key"), "must not be empty"));
            }
            if key_file.key_id.is_empty() {
                return Err(ConfigError::new(format!("{key_field}.keyId"), "must not be empty"));
            }
            if key_file.client_id.is_empty() {
                return Err(ConfigError::new(format!("{key_field}.clientId"), "must not be empty"));
            }
            if !(120..=3600).contains(&raw.assertion_lifetime_seconds) {
                return Err(ConfigError::new("client_auth.assertion_lifetime_seconds", "must be between 120 and 3600"));
            }
            let audience = raw.audience.unwrap_or_else(|| issuer.to_string());
            if audience.is_empty() {
                return Err(ConfigError::new("client_auth.audience", "must not be empty"));
            }
            let signer = AssertionSigner::new(
                &key_file.key,
                &key_file.key_id,
                key_file.client_id,
                audience,
                raw.assertion_lifetime_seconds,
            )
            .map_err(|_| {
                ConfigError::new(format!("{key_field}.key"), "is not an RSA private key in PEM (PKCS#1 or PKCS#8)")
            })?;
            Ok(ClientAuth::PrivateKeyJwt(Box::new(signer)))
        }
        "client_secret_basic" => {
            unexpected(raw.key.is_some(), "key", "client_secret_basic")?;
            unexpected(raw.key_env.is_some(), "key_env", "client_secret_basic")?;
            unexpected(raw.audience.is_some(), "audience", "client_secret_basic")?;
            let client_id = raw.client_id.filter(|id| !id.is_empty()).ok_or_else(|| {
                ConfigError::new("client_auth.client_id", "client_secret_basic needs the API application's client id")
            })?;
            let secret = match (raw.client_secret, raw.client_secret_env) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "client_auth.client_secret",
                        "give either client_secret or client_secret_env, not both",
                    ))
                }
                (Some(secret), None) => secret,
                (None, Some(name)) => from_env(env, "client_auth.client_secret_env", &name)?,
                (None, None) => {
                    return Err(ConfigError::new(
                        "client_auth.client_secret",
                        "client_secret_basic needs client_secret or client_secret_env",
                    ))
                }
            };
            if secret.is_empty() {
                return Err(ConfigError::new("client_auth.client_secret", "must not be empty"));
            }
            Ok(ClientAuth::client_secret_basic(&client_id, &secret))
        }
        other => Err(ConfigError::new(
            "client_auth.method",
            format!("{other:?} is not supported; use \"private_key_jwt\" or \"client_secret_basic\""),
        )),
    }
}

/// Reads a secret from the VM's environment. The name is checked before it is
/// echoed in an error: people do paste the secret itself into `*_env` fields.
fn from_env(env: EnvLookup<'_>, field: &str, name: &str) -> Result<String, ConfigError> {
    let is_name = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !is_name {
        return Err(ConfigError::new(field, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"));
    }
    env(name).ok_or_else(|| {
        ConfigError::new(
            field,
            format!("environment variable {name} is not set in the VM (list it in vm_config.environment_variables.host_env_keys)"),
        )
    })
}

fn validate_cache(raw: &RawCache, expected: &Expectations) -> Result<CacheSettings, ConfigError> {
    if !(1..=1_048_576).contains(&raw.slots) {
        return Err(ConfigError::new("cache.slots", "must be between 1 and 1048576"));
    }
    if !(1..=86_400).contains(&raw.max_ttl_seconds) {
        return Err(ConfigError::new("cache.max_ttl_seconds", "must be between 1 and 86400"));
    }
    let negative_ttl_seconds = raw.negative_ttl_seconds.unwrap_or(DEFAULT_NEGATIVE_TTL_SECS.min(raw.max_ttl_seconds));
    if negative_ttl_seconds > 300 || negative_ttl_seconds > raw.max_ttl_seconds {
        return Err(ConfigError::new(
            "cache.negative_ttl_seconds",
            "must be between 0 and 300, and not above max_ttl_seconds",
        ));
    }
    if !(256..=65_536).contains(&raw.max_entry_bytes) {
        return Err(ConfigError::new("cache.max_entry_bytes", "must be between 256 and 65536"));
    }
    Ok(CacheSettings {
        slots: raw.slots,
        max_ttl_secs: raw.max_ttl_seconds,
        negative_ttl_secs: negative_ttl_seconds,
        max_entry_bytes: raw.max_entry_bytes,
        fingerprint: fingerprint(expected, raw.max_ttl_seconds, negative_ttl_seconds),
    })
}

/// What a cached verdict depends on: change any of it and old entries stop
/// counting. Shared data outlives a reconfiguration, so a shorter
/// `max_ttl_seconds` must not leave entries written under the longer one.
fn fingerprint(expected: &Expectations, max_ttl_secs: u64, negative_ttl_secs: u64) -> u64 {
    let ttl = format!("{max_ttl_secs}/{negative_ttl_secs}");
    let parts = std::iter::once(expected.issuer.as_str())
        .chain(std::iter::once("\0audiences"))
        .chain(expected.audiences.iter().map(String::as_str))
        .chain(std::iter::once("\0roles"))
        .chain(expected.role_claims.iter().map(String::as_str))
        .chain(std::iter::once("\0ttl"))
        .chain(std::iter::once(ttl.as_str()));
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let [a, b, c, d, e, f, g, h, ..] = digest;
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

/// Headers that must not be used as identity headers: credentials, routing,
/// hop-by-hop and content headers, and Envoy's own.
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

fn validate_identity_headers(raw: RawIdentityHeaders) -> Result<IdentityHeaders, ConfigError> {
    let headers = IdentityHeaders { subject: raw.subject, client_id: raw.client_id, roles: raw.roles };
    for (field, name) in [("subject", &headers.subject), ("client_id", &headers.client_id), ("roles", &headers.roles)] {
        // No '_': the shipped Envoy config refuses underscore headers, and
        // CGI-style upstreams read `x_a` and `x-a` as the same variable.
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !RESERVED_HEADERS.contains(&name.as_str())
            && !RESERVED_PREFIXES.iter().any(|prefix| name.starts_with(prefix));
        if !valid {
            return Err(ConfigError::new(
                format!("identity_headers.{field}"),
                "must be a lower-case header name (a-z, 0-9, '-') that is not a credential, hop-by-hop, content, \
                 x-envoy-* or x-forwarded-* header",
            ));
        }
    }
    let [subject, client_id, roles] = headers.names();
    if subject == client_id || subject == roles || client_id == roles {
        return Err(ConfigError::new("identity_headers", "the three header names must differ"));
    }
    Ok(headers)
}

fn validate_rules(raw: Vec<RawRule>, unmatched: Option<RawAccess>) -> Result<Rules, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("rules", "must list at least one rule"));
    }
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("rules[{i}].{name}");
        let path = match (rule.path, rule.prefix) {
            (Some(path), None) => PathPattern::Exact(check_rule_path(path, &field("path"))?),
            (None, Some(prefix)) => PathPattern::Prefix(check_rule_path(prefix, &field("prefix"))?),
            _ => return Err(ConfigError::new(field("path"), "give exactly one of path (exact match) or prefix")),
        };
        let methods = match rule.methods {
            None => None,
            Some(methods) if methods.is_empty() => {
                return Err(ConfigError::new(
                    field("methods"),
                    "must not be empty (leave it out to match every method)",
                ))
            }
            Some(methods) => {
                if methods.iter().any(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic())) {
                    return Err(ConfigError::new(field("methods"), "must be HTTP method names such as GET"));
                }
                Some(methods.into_iter().map(|m| m.to_ascii_uppercase()).collect())
            }
        };
        let access = match (rule.access, rule.roles) {
            (RawAccess::Roles, Some(roles)) if !roles.is_empty() && roles.iter().all(|r| is_role_name(r)) => {
                Access::AnyRole(roles)
            }
            (RawAccess::Roles, _) => return Err(ConfigError::new(
                field("roles"),
                "access \"roles\" needs a non-empty list of role names (printable ASCII without spaces, ',', '\"' or '\\')",
            )),
            (_, Some(_)) => return Err(ConfigError::new(field("roles"), "only applies to access \"roles\"")),
            (RawAccess::Public, None) => Access::Public,
            (RawAccess::Authenticated, None) => Access::Authenticated,
            (RawAccess::Deny, None) => {
                return Err(ConfigError::new(field("access"), "must be \"public\", \"authenticated\" or \"roles\""))
            }
        };
        rules.push(Rule { path, methods, access });
    }
    let unmatched = match unmatched.unwrap_or(RawAccess::Deny) {
        RawAccess::Deny => None,
        RawAccess::Public => Some(Access::Public),
        RawAccess::Authenticated => Some(Access::Authenticated),
        RawAccess::Roles => {
            return Err(ConfigError::new("unmatched", "must be \"deny\", \"authenticated\" or \"public\""));
        }
    };
    Ok(Rules { rules, unmatched })
}

/// Rules are matched against canonical request paths, so a rule path that is
/// not canonical itself (`/a//b`, `/a/../b`, `/%61`) could never match.
fn check_rule_path(path: String, field: &str) -> Result<String, ConfigError> {
    if path.contains('?') || canonical_path(path.as_bytes()).as_deref() != Ok(path.as_str()) {
        return Err(ConfigError::new(
            field,
            "must be a canonical absolute path: starting with '/', no query, no '//', '.' or '..' segments, \
             no percent-encoded unreserved characters",
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::tests::test_key_pem;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn key_file() -> Value {
        json!({
            "type": "application",
            "keyId": "1234",
            "key": test_key_pem(),
            "appId": "5678",
            "clientId": "300000000000000002@demo"
        })
    }

    fn valid() -> Value {
        json!({
            "issuer": "http://127.0.0.1:9000",
            "introspection": {"cluster": "issuer"},
            "audiences": ["300000000000000001"],
            "project_id": "300000000000000001",
            "client_auth": {"method": "private_key_jwt", "key": key_file()},
            "rules": [
                {"path": "/public", "access": "public"},
                {"prefix": "/api/public", "access": "public"},
                {"path": "/api/private-scoped", "access": "roles", "roles": ["read:messages"]},
                {"prefix": "/", "methods": ["get"], "access": "authenticated"}
            ]
        })
    }

    fn parse_value(value: &Value) -> Result<Config, ConfigError> {
        parse(value.to_string().as_bytes(), &no_env)
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse_value(&valid()).unwrap();
        assert_eq!(config.expectations.issuer, "http://127.0.0.1:9000");
        assert_eq!(
            config.introspection,
            Endpoint {
                cluster: "issuer".into(),
                authority: "127.0.0.1:9000".into(),
                path: "/oauth/v2/introspect".into(),
                timeout: Duration::from_millis(3000),
                max_in_flight: 64,
            }
        );
        assert_eq!(
            config.expectations.role_claims,
            ["urn:zitadel:iam:org:project:roles", "urn:zitadel:iam:org:project:300000000000000001:roles"]
        );
        assert_eq!(config.cache.slots, 8192);
        assert_eq!(config.cache.max_ttl_secs, 300);
        assert_eq!(config.cache.negative_ttl_secs, 10);
        assert_eq!(config.identity_headers.names(), ["x-auth-subject", "x-auth-client-id", "x-auth-roles"]);
        assert_eq!(config.rules.unmatched, None);
        assert_eq!(config.rules.rules[3].methods, Some(vec!["GET".to_string()]));
        assert_eq!(config.rules.rules[2].access, Access::AnyRole(vec!["read:messages".into()]));
        assert!(matches!(config.client_auth, ClientAuth::PrivateKeyJwt(_)));
    }

    #[test]
    fn key_may_be_given_as_text_or_from_the_environment() {
        let mut as_text = valid();
        as_text["client_auth"]["key"] = Value::String(key_file().to_string());
        assert!(parse_value(&as_text).is_ok());

        let mut from_env = valid();
        from_env["client_auth"] = json!({"method": "private_key_jwt", "key_env": "API_KEY_JSON"});
        let env = |name: &str| (name == "API_KEY_JSON").then(|| key_file().to_string());
        assert!(parse(from_env.to_string().as_bytes(), &env).is_ok());
    }

    #[test]
    fn client_secret_basic_is_accepted() {
        let mut config = valid();
        config["client_auth"] =
            json!({"method": "client_secret_basic", "client_id": "api@demo", "client_secret_env": "SECRET"});
        let env = |name: &str| (name == "SECRET").then(|| "s3cret".to_string());
        let parsed = parse(config.to_string().as_bytes(), &env).unwrap();
        assert!(matches!(parsed.client_auth, ClientAuth::ClientSecretBasic { .. }));
    }

    #[test]
    fn fingerprint_follows_what_verdicts_depend_on() {
        let a = parse_value(&valid()).unwrap().cache.fingerprint;
        let mut other = valid();
        other["audiences"] = json!(["someone-else"]);
        assert_ne!(a, parse_value(&other).unwrap().cache.fingerprint);
        let mut same = valid();
        same["cache"] = json!({"slots": 16});
        assert_eq!(a, parse_value(&same).unwrap().cache.fingerprint);
        let mut shorter = valid();
        shorter["cache"] = json!({"max_ttl_seconds": 10});
        assert_ne!(a, parse_value(&shorter).unwrap().cache.fingerprint);
    }

    /// Each broken config must fail with an error naming the field.
    #[test]
    fn invalid_configs_name_the_field() {
        type Breakage = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Breakage)> = vec![
            ("(configuration)", Box::new(|c| *c = json!([]))),
            (
                "issuer",
                Box::new(|c| {
                    c.as_object_mut().unwrap().remove("issuer");
                }),
            ),
            ("issuer", Box::new(|c| c["issuer"] = json!("issuer.example"))),
            ("issuer", Box::new(|c| c["issuer"] = json!(42))),
            ("isuer", Box::new(|c| c["isuer"] = json!("typo"))),
            ("introspection.cluster", Box::new(|c| c["introspection"] = json!({}))),
            ("introspection.cluster", Box::new(|c| c["introspection"]["cluster"] = json!(""))),
            ("introspection.timeout_ms", Box::new(|c| c["introspection"]["timeout_ms"] = json!(0))),
            ("introspection.timeout_ms", Box::new(|c| c["introspection"]["timeout_ms"] = json!("5s"))),
            ("introspection.path", Box::new(|c| c["introspection"]["path"] = json!("oauth/v2/introspect"))),
            ("introspection.authority", Box::new(|c| c["introspection"]["authority"] = json!("a b"))),
            ("audiences", Box::new(|c| c["audiences"] = json!([]))),
            ("audiences[1]", Box::new(|c| c["audiences"] = json!(["a", ""]))),
            ("project_id", Box::new(|c| c["project_id"] = json!("a:b"))),
            ("role_claims[0]", Box::new(|c| c["role_claims"] = json!([""]))),
            ("client_auth.method", Box::new(|c| c["client_auth"]["method"] = json!("tls_client_auth"))),
            (
                "client_auth.key",
                Box::new(|c| {
                    c["client_auth"].as_object_mut().unwrap().remove("key");
                }),
            ),
            ("client_auth.key", Box::new(|c| c["client_auth"]["key"] = json!("{not json"))),
            ("client_auth.key.type", Box::new(|c| c["client_auth"]["key"]["type"] = json!("serviceaccount"))),
            (
                "client_auth.key.key",
                Box::new(|c| {
                    c["client_auth"]["key"]["key"] =
                        json!("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----")
                }),
            ),
            ("client_auth.key.keyId", Box::new(|c| c["client_auth"]["key"]["keyId"] = json!(""))),
            (
                "client_auth.key_env",
                Box::new(|c| c["client_auth"] = json!({"method": "private_key_jwt", "key_env": "MISSING"})),
            ),
            (
                "client_auth.key_env",
                Box::new(|c| {
                    c["client_auth"] = json!({"method": "private_key_jwt", "key_env": "-----BEGIN PRIVATE KEY-----"})
                }),
            ),
            ("client_auth.client_secret", Box::new(|c| c["client_auth"]["client_secret"] = json!("s"))),
            (
                "client_auth.assertion_lifetime_seconds",
                Box::new(|c| c["client_auth"]["assertion_lifetime_seconds"] = json!(7200)),
            ),
            (
                "client_auth.client_id",
                Box::new(|c| c["client_auth"] = json!({"method": "client_secret_basic", "client_secret": "s"})),
            ),
            (
                "client_auth.client_secret",
                Box::new(|c| c["client_auth"] = json!({"method": "client_secret_basic", "client_id": "a"})),
            ),
            ("cache.slots", Box::new(|c| c["cache"] = json!({"slots": 0}))),
            ("cache.max_ttl_seconds", Box::new(|c| c["cache"] = json!({"max_ttl_seconds": 0}))),
            ("cache.max_entry_bytes", Box::new(|c| c["cache"] = json!({"max_entry_bytes": 10}))),
            ("cache.negative_ttl_seconds", Box::new(|c| c["cache"] = json!({"negative_ttl_seconds": 301}))),
            (
                "cache.negative_ttl_seconds",
                Box::new(|c| c["cache"] = json!({"max_ttl_seconds": 5, "negative_ttl_seconds": 6})),
            ),
            ("introspection.max_in_flight", Box::new(|c| c["introspection"]["max_in_flight"] = json!(0))),
            ("introspection.max_in_flight", Box::new(|c| c["introspection"]["max_in_flight"] = json!(5000))),
            ("cache.size", Box::new(|c| c["cache"] = json!({"size": 10}))),
            ("identity_headers.subject", Box::new(|c| c["identity_headers"] = json!({"subject": "X-User"}))),
            ("identity_headers.roles", Box::new(|c| c["identity_headers"] = json!({"roles": "authorization"}))),
            ("identity_headers.roles", Box::new(|c| c["identity_headers"] = json!({"roles": "x_auth_roles"}))),
            (
                "identity_headers.client_id",
                Box::new(|c| c["identity_headers"] = json!({"client_id": "x-envoy-client"})),
            ),
            ("identity_headers", Box::new(|c| c["identity_headers"] = json!({"roles": "x-auth-subject"}))),
            ("rules", Box::new(|c| c["rules"] = json!([]))),
            ("rules[0].path", Box::new(|c| c["rules"][0] = json!({"access": "public"}))),
            ("rules[0].path", Box::new(|c| c["rules"][0] = json!({"path": "/a", "prefix": "/b", "access": "public"}))),
            ("rules[0].path", Box::new(|c| c["rules"][0]["path"] = json!("public"))),
            ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/a?b"))),
            ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api//public"))),
            ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api/../public"))),
            ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/%61pi"))),
            ("rules[0].path", Box::new(|c| c["rules"][0]["path"] = json!("/pub lic"))),
            ("rules[2].roles", Box::new(|c| c["rules"][2]["roles"] = json!([]))),
            ("rules[2].roles", Box::new(|c| c["rules"][2]["roles"] = json!(["read messages"]))),
            ("rules[2].roles", Box::new(|c| c["rules"][2]["roles"] = json!(["a\"b"]))),
            ("rules[2].roles", Box::new(|c| c["rules"][2]["roles"] = json!(["a,b"]))),
            ("rules[0].roles", Box::new(|c| c["rules"][0]["roles"] = json!(["x"]))),
            ("rules[0].access", Box::new(|c| c["rules"][0]["access"] = json!("deny"))),
            ("rules[0].access", Box::new(|c| c["rules"][0]["access"] = json!("everyone"))),
            ("rules[3].methods", Box::new(|c| c["rules"][3]["methods"] = json!([]))),
            ("rules[3].methods", Box::new(|c| c["rules"][3]["methods"] = json!(["GET /"]))),
            ("unmatched", Box::new(|c| c["unmatched"] = json!("roles"))),
            ("clock_skew_seconds", Box::new(|c| c["clock_skew_seconds"] = json!(3600))),
            ("max_response_bytes", Box::new(|c| c["max_response_bytes"] = json!(1))),
        ];
        for (field, break_it) in cases {
            let mut config = valid();
            break_it(&mut config);
            match parse_value(&config) {
                Ok(_) => panic!("config with broken `{field}` was accepted"),
                Err(err) => {
                    assert_eq!(err.field, field, "{err}");
                    let message = err.to_string();
                    assert!(message.contains(&format!("`{field}`")), "{message}");
                    assert!(!message.contains("PRIVATE KEY"), "{message}");
                }
            }
        }
    }

    #[test]
    fn not_json_at_all_is_reported() {
        let err = parse(b"issuer: x", &no_env).err().unwrap();
        assert_eq!(err.field, "(configuration)");
    }
}

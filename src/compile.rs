//! From the configuration's JSON shape (`config`) to the [`Policy`] the
//! request path reads: the shorthand expanded, every issuer and API name
//! resolved to an index, every value checked. Errors name the field as the
//! user wrote it: `introspection.timeout_ms` in the shorthand,
//! `issuers.main.introspection.timeout_ms` in the full form.

use std::collections::BTreeMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::authority::HostPattern;
use crate::cache::CacheSettings;
use crate::claims::Extraction;
use crate::client_auth::ClientAuth;
use crate::config::{
    take_api_options, ConfigError, EnvLookup, RawAccess, RawApi, RawApiOptions, RawCache, RawConfig, RawCorsPreflight,
    RawIssuer, RawJwtMode, RawRule,
};
use crate::headers;
use crate::keyring::KeySchedule;
use crate::metadata::{MetadataFields, ResourceMetadata};
use crate::path::read_path;
use crate::policy::{Api, ApiId, Endpoint, IdentityHeaders, Issuer, IssuerId, LocalJwt, Policy, TrustedIssuer};
use crate::rules::{is_role_name, Access, PathPattern, Query, Rule, Rules, Target};

/// Where ZITADEL publishes its signing keys.
pub const DEFAULT_JWKS_PATH: &str = "/oauth/v2/keys";

/// The name the shorthand gives its one issuer and its one API.
pub const DEFAULT_NAME: &str = "default";

const NEGATIVE_TTL_SECS: u64 = 10;

/// An issuer or API with its name and the prefix of its fields in errors.
struct Named<T> {
    name: String,
    field: String,
    raw: T,
}

impl<T> Named<T> {
    fn error(&self, member: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::new(format!("{}{member}", self.field), problem)
    }
}

/// An API before its issuers' extractions are known.
struct ApiDraft {
    name: String,
    audiences: Vec<String>,
    role_claims: Vec<String>,
    /// Roles come from ZITADEL's generic claim (neither `project_id` nor `role_claims`).
    generic_roles: bool,
    issuers: Vec<IssuerId>,
    identity_headers: IdentityHeaders,
    claim_headers: Vec<(String, String)>,
    metadata: Option<ResourceMetadata>,
    stale_if_error_ms: u64,
    dry_run: bool,
    cors_preflight: bool,
}

pub(crate) fn compile(mut raw: RawConfig, env: EnvLookup<'_>) -> Result<Policy, ConfigError> {
    if raw.clock_skew_seconds > 300 {
        return Err(ConfigError::new("clock_skew_seconds", "must be at most 300"));
    }
    if !(1024..=16 * 1024 * 1024).contains(&raw.max_response_bytes) {
        return Err(ConfigError::new("max_response_bytes", "must be between 1024 and 16777216"));
    }
    let cache = cache_settings(&raw.cache)?;
    let (raw_issuers, raw_apis, shorthand) = expand(&mut raw)?;

    // Several issuers may share a URL: one ZITADEL instance, introspected with
    // the API app of each project (ZITADEL answers active only to a client
    // whose project is in the token's aud).
    let mut issuer_ids = BTreeMap::new();
    let mut drafts: Vec<(String, String, Endpoint, ClientAuth, Option<LocalJwt>)> = Vec::new();
    for issuer in raw_issuers {
        let url = issuer_url(&issuer)?;
        let endpoint = endpoint(&issuer, &url)?;
        let jwt = local_jwt(&issuer, &endpoint)?;
        let field = format!("{}client_auth", issuer.field);
        let client_auth = ClientAuth::from_config(issuer.raw.client_auth, &field, &url, env)?;
        issuer_ids.insert(issuer.name.clone(), IssuerId(drafts.len()));
        drafts.push((issuer.name, url, endpoint, client_auth, jwt));
    }

    let mut api_ids = BTreeMap::new();
    let mut apis = Vec::new();
    let issuer_urls: Vec<&str> = drafts.iter().map(|(_, url, ..)| url.as_str()).collect();
    for api in raw_apis {
        let draft = api_draft(api, &issuer_ids, &issuer_urls)?;
        api_ids.insert(draft.name.clone(), ApiId(apis.len()));
        apis.push(draft);
    }

    let mut issuers = Vec::with_capacity(drafts.len());
    for (index, (name, url, endpoint, client_auth, jwt)) in drafts.into_iter().enumerate() {
        let trusting: Vec<&ApiDraft> = apis.iter().filter(|api| api.issuers.contains(&IssuerId(index))).collect();
        let extraction = Extraction {
            issuer: url,
            audiences: union(trusting.iter().flat_map(|api| &api.audiences)),
            role_claims: union(trusting.iter().flat_map(|api| &api.role_claims)),
            header_claims: union(trusting.iter().flat_map(|api| api.claim_headers.iter().map(|(_, claim)| claim))),
            clock_skew_secs: raw.clock_skew_seconds,
        };
        let jwks_path = jwt.as_ref().map(|local| local.jwks_path.as_str());
        let fingerprint = fingerprint(&extraction, &endpoint, client_auth.client_id(), &cache, jwks_path);
        // The fingerprint too: two plugins that share a namespace (same plugin name
        // on one VM id) with different issuer setups never wait on each other's calls.
        let key_scope = format!("{name}\0{}\0{fingerprint:016x}", extraction.issuer);
        issuers.push(Issuer { name, endpoint, client_auth, extraction, fingerprint, key_scope, jwt });
    }

    let forwarded_headers = union(&apis.iter().flat_map(ApiDraft::header_names).collect::<Vec<_>>());
    // With several APIs, ZITADEL's generic role claim is no API's own (see `check_role_source`).
    let generic_roles: Vec<&str> = if shorthand {
        Vec::new()
    } else {
        apis.iter().filter(|api| api.generic_roles).map(|api| api.name.as_str()).collect()
    };
    let default_api = shorthand.then_some(ApiId(0));
    let dry_run: Vec<bool> = apis.iter().map(|api| api.dry_run).collect();
    let raw_rules = std::mem::take(&mut raw.rules);
    let rules = compile_rules(raw_rules, raw.unmatched, &api_ids, default_api, &generic_roles, &dry_run)?;
    for (at, api) in apis.iter().enumerate() {
        check_resource_is_protected(api, ApiId(at), &rules, shorthand)?;
        // Two documents at one place: a request could not tell which API it asks about.
        let same_place = |other: &ApiDraft| match (&api.metadata, &other.metadata) {
            (Some(a), Some(b)) => a.authority.host == b.authority.host && a.path == b.path,
            _ => false,
        };
        if let Some(other) = apis.iter().take(at).find(|other| same_place(other)) {
            return Err(ConfigError::new(
                format!("apis.{}.resource", api.name),
                format!("its metadata would be served where apis.{}'s is: give each API its own path", other.name),
            ));
        }
    }
    let apis = apis.into_iter().map(|draft| finish_api(draft, &issuers, &forwarded_headers)).collect();
    Ok(Policy { issuers, apis, rules, forwarded_headers, cache, max_response_bytes: raw.max_response_bytes })
}

impl ApiDraft {
    fn header_names(&self) -> Vec<String> {
        let identity = self.identity_headers.names().into_iter().map(str::to_owned);
        identity.chain(self.claim_headers.iter().map(|(header, _)| header.clone())).collect()
    }
}

/// The full form's issuers and APIs, or the shorthand's one of each; takes
/// them out of `raw`. True for the shorthand.
type Expanded = (Vec<Named<RawIssuer>>, Vec<Named<RawApi>>, bool);

fn expand(raw: &mut RawConfig) -> Result<Expanded, ConfigError> {
    if raw.issuers.is_none() && raw.apis.is_none() {
        let missing = |field: &str| {
            ConfigError::new(
                field,
                "is missing (the one-issuer form needs issuer, introspection, client_auth, and audiences or \
                 project_id; or give issuers and apis)",
            )
        };
        let issuer = RawIssuer {
            issuer: raw.issuer.take().ok_or_else(|| missing("issuer"))?,
            introspection: raw.introspection.take().ok_or_else(|| missing("introspection"))?,
            client_auth: raw.client_auth.take().ok_or_else(|| missing("client_auth"))?,
            jwt: raw.jwt.take(),
        };
        let api = RawApi {
            audiences: raw.audiences.take(),
            project_id: raw.project_id.take(),
            role_claims: raw.role_claims.take(),
            issuers: vec![DEFAULT_NAME.into()],
            identity_headers: raw.identity_headers.take().unwrap_or_default(),
            claim_headers: raw.claim_headers.take().unwrap_or_default(),
            resource: raw.resource.take(),
            resource_name: raw.resource_name.take(),
            scopes_supported: raw.scopes_supported.take(),
            resource_documentation: raw.resource_documentation.take(),
            stale_if_error_seconds: raw.stale_if_error_seconds.take(),
            dry_run: raw.dry_run.take(),
            cors_preflight: raw.cors_preflight.take(),
        };
        let issuer = Named { name: DEFAULT_NAME.into(), field: String::new(), raw: issuer };
        let api = Named { name: DEFAULT_NAME.into(), field: String::new(), raw: api };
        return Ok((vec![issuer], vec![api], true));
    }
    let shorthand_fields = [
        ("issuer", raw.issuer.is_some()),
        ("introspection", raw.introspection.is_some()),
        ("client_auth", raw.client_auth.is_some()),
        ("jwt", raw.jwt.is_some()),
        ("audiences", raw.audiences.is_some()),
        ("project_id", raw.project_id.is_some()),
        ("role_claims", raw.role_claims.is_some()),
        ("identity_headers", raw.identity_headers.is_some()),
        ("claim_headers", raw.claim_headers.is_some()),
    ];
    let api_options = take_api_options!(raw).given();
    let present = shorthand_fields.iter().filter(|(_, present)| *present).map(|(field, _)| *field);
    if let Some(field) = present.chain(api_options).next() {
        return Err(ConfigError::new(
            field,
            "belongs to the one-issuer form; with issuers and apis, give it inside an issuer or an API",
        ));
    }
    match (raw.issuers.take(), raw.apis.take()) {
        (Some(issuers), Some(apis)) => Ok((named_all("issuers", issuers)?, named_all("apis", apis)?, false)),
        (None, _) => Err(ConfigError::new("issuers", "is missing: a configuration with apis needs issuers")),
        (_, None) => Err(ConfigError::new("apis", "is missing: a configuration with issuers needs apis")),
    }
}

fn named_all<T>(section: &str, entries: BTreeMap<String, T>) -> Result<Vec<Named<T>>, ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::new(section, "must name at least one entry"));
    }
    entries
        .into_iter()
        .map(|(name, raw)| {
            let valid = (1..=64).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid {
                return Err(ConfigError::new(
                    format!("{section}.{name}"),
                    "names must be 1 to 64 characters: a-z, 0-9, '-' or '_'",
                ));
            }
            let field = format!("{section}.{name}.");
            Ok(Named { name, field, raw })
        })
        .collect()
}

fn issuer_url(issuer: &Named<RawIssuer>) -> Result<String, ConfigError> {
    // Kept verbatim: OpenID Connect compares `iss` exactly, trailing slash included.
    let url = issuer.raw.issuer.clone();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok
        || url.len() < "http://x".len()
        || url.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(issuer.error("issuer", "must be the issuer's URL, e.g. https://my-org.zitadel.cloud"));
    }
    Ok(url)
}

fn endpoint(issuer: &Named<RawIssuer>, url: &str) -> Result<Endpoint, ConfigError> {
    let raw = &issuer.raw.introspection;
    if raw.cluster.trim().is_empty() {
        return Err(issuer.error("introspection.cluster", "must name the Envoy cluster that reaches the issuer"));
    }
    let authority = match &raw.authority {
        Some(authority) => authority.clone(),
        None => url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or("").to_string(),
    };
    if authority.is_empty() || authority.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/') {
        return Err(issuer.error("introspection.authority", "must be a host name with an optional port"));
    }
    if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(issuer.error("introspection.path", "must be an absolute path such as /oauth/v2/introspect"));
    }
    if !(1..=60_000).contains(&raw.timeout_ms) {
        return Err(issuer.error("introspection.timeout_ms", "must be between 1 and 60000"));
    }
    if !(1..=1024).contains(&raw.max_in_flight) {
        return Err(issuer.error("introspection.max_in_flight", "must be between 1 and 1024"));
    }
    Ok(Endpoint {
        cluster: raw.cluster.clone(),
        authority,
        path: raw.path.clone(),
        timeout: Duration::from_millis(raw.timeout_ms),
        max_in_flight: raw.max_in_flight,
    })
}

/// The `jwt` of an issuer: `None` for the introspect mode (the default).
fn local_jwt(issuer: &Named<RawIssuer>, endpoint: &Endpoint) -> Result<Option<LocalJwt>, ConfigError> {
    let Some(raw) = &issuer.raw.jwt else { return Ok(None) };
    let local_only = [
        ("jwks_path", raw.jwks_path.is_some()),
        ("jwks_refresh_seconds", raw.jwks_refresh_seconds.is_some()),
        ("jwks_min_refresh_seconds", raw.jwks_min_refresh_seconds.is_some()),
        ("jwks_max_stale_seconds", raw.jwks_max_stale_seconds.is_some()),
    ];
    if raw.mode == RawJwtMode::Introspect {
        if let Some((member, _)) = local_only.iter().find(|(_, given)| *given) {
            return Err(issuer.error(&format!("jwt.{member}"), "applies only with jwt.mode \"local\""));
        }
        return Ok(None);
    }
    let jwks_path = raw.jwks_path.clone().unwrap_or_else(|| DEFAULT_JWKS_PATH.into());
    if !jwks_path.starts_with('/') || jwks_path.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(issuer.error("jwt.jwks_path", "must be an absolute path such as /oauth/v2/keys"));
    }
    let refresh = raw.jwks_refresh_seconds.unwrap_or(300);
    if !(1..=86_400).contains(&refresh) {
        return Err(issuer.error("jwt.jwks_refresh_seconds", "must be between 1 and 86400"));
    }
    let min_refresh = raw.jwks_min_refresh_seconds.unwrap_or(refresh.min(10));
    if !(1..=refresh).contains(&min_refresh) {
        return Err(issuer.error("jwt.jwks_min_refresh_seconds", "must be between 1 and jwt.jwks_refresh_seconds"));
    }
    let max_stale = raw.jwks_max_stale_seconds.unwrap_or(3600);
    if max_stale > 604_800 {
        return Err(issuer.error("jwt.jwks_max_stale_seconds", "must be at most 604800 (7 days)"));
    }
    let timeout_ms = u64::try_from(endpoint.timeout.as_millis()).unwrap_or(u64::MAX);
    let schedule = KeySchedule {
        refresh_ms: refresh * 1000,
        min_refresh_ms: min_refresh * 1000,
        max_stale_ms: max_stale * 1000,
        stale_fetch_ms: timeout_ms.saturating_add(1000),
    };
    Ok(Some(LocalJwt { jwks_path, schedule }))
}

fn api_draft(
    mut api: Named<RawApi>,
    issuer_ids: &BTreeMap<String, IssuerId>,
    issuer_urls: &[&str],
) -> Result<ApiDraft, ConfigError> {
    let options = take_api_options!(api.raw);
    let raw = &api.raw;
    if let Some(project_id) = &raw.project_id {
        if project_id.is_empty() || !project_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(api.error("project_id", "must be a ZITADEL project id (letters, digits, '-' or '_')"));
        }
    }
    // ZITADEL puts the project id into `aud` when the token is asked for with the
    // project's aud scope: it is the audience an API of that project takes by default.
    let audiences = match (&raw.audiences, &raw.project_id) {
        (Some(audiences), _) => audiences.clone(),
        (None, Some(project_id)) => vec![project_id.clone()],
        (None, None) => {
            return Err(api.error(
                "audiences",
                "is missing: give the audiences (the project id or the API's client id), or project_id, to which \
                 they default",
            ))
        }
    };
    if audiences.is_empty() {
        return Err(api.error("audiences", "must list at least one audience (the project id or the API's client id)"));
    }
    if let Some(i) = audiences.iter().position(|a| a.trim().is_empty()) {
        return Err(api.error(&format!("audiences[{i}]"), "must not be empty"));
    }
    let role_claims = match (&raw.role_claims, &raw.project_id) {
        (Some(claims), _) => {
            if let Some(i) = claims.iter().position(String::is_empty) {
                return Err(api.error(&format!("role_claims[{i}]"), "must not be empty"));
            }
            union(claims)
        }
        // The project's own claim only: ZITADEL's `urn:zitadel:iam:org:project:roles`
        // holds the roles of "the current project", which another project's token
        // may also name in its aud.
        (None, Some(project_id)) => vec![format!("urn:zitadel:iam:org:project:{project_id}:roles")],
        (None, None) => vec!["urn:zitadel:iam:org:project:roles".to_string()],
    };
    if raw.issuers.is_empty() {
        return Err(api.error("issuers", "must list at least one issuer the API trusts"));
    }
    let mut issuers = Vec::new();
    for (i, name) in raw.issuers.iter().enumerate() {
        let Some(&id) = issuer_ids.get(name) else {
            let known: Vec<&str> = issuer_ids.keys().map(String::as_str).collect();
            return Err(api.error(
                &format!("issuers[{i}]"),
                format!("no issuer is named {name:?} (known: {})", known.join(", ")),
            ));
        };
        if issuers.contains(&id) {
            return Err(api.error(&format!("issuers[{i}]"), format!("names {name:?} twice")));
        }
        issuers.push(id);
    }
    let identity_headers =
        headers::identity_headers(&raw.identity_headers).map_err(|(member, problem)| api.error(&member, problem))?;
    let claim_headers = headers::claim_headers(&raw.claim_headers, &identity_headers)
        .map_err(|(member, problem)| api.error(&member, problem))?;
    let trusted_urls = issuers.iter().filter_map(|id| issuer_urls.get(id.0).copied()).collect();
    let metadata = resource_metadata(&options, trusted_urls).map_err(|(member, problem)| api.error(member, problem))?;
    let mut audiences = audiences;
    // RFC 8707: a token asked for with the API's resource URL may carry it as its audience.
    if let Some(metadata) = &metadata {
        audiences = union(audiences.iter().chain([&metadata.resource]));
    }
    let stale_if_error_secs = options.stale_if_error_seconds.unwrap_or(0);
    if stale_if_error_secs > 86_400 {
        return Err(api.error("stale_if_error_seconds", "must be between 0 (off) and 86400"));
    }
    Ok(ApiDraft {
        generic_roles: raw.role_claims.is_none() && raw.project_id.is_none(),
        name: api.name,
        audiences,
        role_claims,
        issuers,
        identity_headers,
        claim_headers,
        metadata,
        stale_if_error_ms: stale_if_error_secs * 1000,
        dry_run: options.dry_run.unwrap_or(false),
        cors_preflight: options.cors_preflight == Some(RawCorsPreflight::Allow),
    })
}

/// An API's RFC 9728 metadata, when it names its `resource`; the other
/// metadata fields without a `resource` are refused (they would do nothing).
fn resource_metadata(
    options: &RawApiOptions,
    issuers: Vec<&str>,
) -> Result<Option<ResourceMetadata>, (&'static str, String)> {
    let Some(resource) = &options.resource else {
        let orphan = [
            ("resource_name", options.resource_name.is_some()),
            ("scopes_supported", options.scopes_supported.is_some()),
            ("resource_documentation", options.resource_documentation.is_some()),
        ];
        return match orphan.iter().find(|(_, given)| *given) {
            Some((field, _)) => Err((field, "applies only with resource (the API's URL)".to_string())),
            None => Ok(None),
        };
    };
    let fields = MetadataFields {
        resource,
        resource_name: options.resource_name.as_deref(),
        scopes_supported: options.scopes_supported.as_deref(),
        resource_documentation: options.resource_documentation.as_deref(),
        issuers,
    };
    ResourceMetadata::compile(&fields).map(Some)
}

/// An API's `resource` must be a URL its own rules protect: the metadata would
/// otherwise advertise a resource the filter does not guard. Rules bound to
/// Envoy's route names cannot be followed here, and are trusted.
fn check_resource_is_protected(api: &ApiDraft, id: ApiId, rules: &Rules, shorthand: bool) -> Result<(), ConfigError> {
    let Some(metadata) = &api.metadata else { return Ok(()) };
    if rules.binds_to_routes() {
        return Ok(());
    }
    let Ok(path) = read_path(metadata.resource_path.as_bytes()) else { return Ok(()) };
    let protected = ["POST", "GET"].iter().any(|method| {
        let query = Query { authority: &metadata.authority, method, path: &path, virtual_host: None, route: None };
        matches!(rules.target_for(&query), Ok(Some(Target::Api { api, .. })) if *api == id)
    });
    if protected {
        return Ok(());
    }
    let field = if shorthand { "resource".to_string() } else { format!("apis.{}.resource", api.name) };
    Err(ConfigError::new(field, format!("{} is not sent to this API by any rule", metadata.resource)))
}

/// An API with, for each issuer it trusts, where its claims sit in that
/// issuer's extraction.
fn finish_api(draft: ApiDraft, issuers: &[Issuer], forwarded: &[String]) -> Api {
    let position = |list: &[String], wanted: &str| list.iter().position(|claim| claim == wanted);
    let trusted = draft
        .issuers
        .iter()
        .map(|&id| {
            let (role_claims, header_claims) = issuers.get(id.0).map_or((&[][..], &[][..]), |issuer| {
                (&issuer.extraction.role_claims, &issuer.extraction.header_claims)
            });
            TrustedIssuer {
                id,
                role_claims: draft.role_claims.iter().filter_map(|claim| position(role_claims, claim)).collect(),
                claim_headers: draft
                    .claim_headers
                    .iter()
                    .filter_map(|(header, claim)| position(header_claims, claim).map(|at| (header.clone(), at)))
                    .collect(),
            }
        })
        .collect();
    let own = draft.header_names();
    Api {
        name: draft.name,
        audiences: draft.audiences,
        issuers: trusted,
        foreign_headers: forwarded.iter().filter(|name| !own.contains(name)).cloned().collect(),
        identity_headers: draft.identity_headers,
        metadata: draft.metadata,
        stale_if_error_ms: draft.stale_if_error_ms,
        cors_preflight: draft.cors_preflight,
    }
}

fn compile_rules(
    raw: Vec<RawRule>,
    unmatched: Option<RawAccess>,
    apis: &BTreeMap<String, ApiId>,
    default_api: Option<ApiId>,
    generic_roles: &[&str],
    api_dry_run: &[bool],
) -> Result<Rules, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::new("rules", "must list at least one rule"));
    }
    let mut rules = Vec::with_capacity(raw.len());
    for (i, rule) in raw.into_iter().enumerate() {
        let field = |name: &str| format!("rules[{i}].{name}");
        let host = match &rule.host {
            None => None,
            Some(host) => Some(HostPattern::parse(host).map_err(|err| {
                ConfigError::new(
                    field("host"),
                    format!("must be a host name, an IPv4 address, [IPv6] or *.domain, with an optional port ({err})"),
                )
            })?),
        };
        let virtual_host = route_name(rule.virtual_host, &field("virtual_host"))?;
        let route = route_name(rule.route, &field("route"))?;
        let path = match (rule.path, rule.prefix) {
            (Some(path), None) => PathPattern::Exact(check_rule_path(path, &field("path"))?),
            (None, Some(prefix)) => PathPattern::Prefix(check_rule_path(prefix, &field("prefix"))?),
            (None, None) if virtual_host.is_some() || route.is_some() => PathPattern::Any,
            _ => {
                return Err(ConfigError::new(
                    field("path"),
                    "give exactly one of path (exact match) or prefix (or neither, with virtual_host or route)",
                ))
            }
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
                Some(Access::AnyRole(roles))
            }
            (RawAccess::Roles, _) => return Err(ConfigError::new(
                field("roles"),
                "access \"roles\" needs a non-empty list of role names (printable ASCII without spaces, ',', '\"' or '\\')",
            )),
            (_, Some(_)) => return Err(ConfigError::new(field("roles"), "only applies to access \"roles\"")),
            (RawAccess::Public, None) => None,
            (RawAccess::Authenticated, None) => Some(Access::Authenticated),
            (RawAccess::Deny, None) => {
                return Err(ConfigError::new(field("access"), "must be \"public\", \"authenticated\" or \"roles\""))
            }
        };
        if let (Some(Access::AnyRole(_)), Some(name)) = (&access, &rule.api) {
            check_role_source(name, generic_roles, &field("roles"))?;
        }
        let api = match (&rule.api, default_api) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    field("api"),
                    "names an API, but the configuration has no apis (the one-issuer form protects one API)",
                ))
            }
            (Some(name), None) => Some(*apis.get(name).ok_or_else(|| {
                let known: Vec<&str> = apis.keys().map(String::as_str).collect();
                ConfigError::new(field("api"), format!("no API is named {name:?} (known: {})", known.join(", ")))
            })?),
            (None, default) => default,
        };
        let target = match (access, api) {
            (None, _) if rule.dry_run.is_some() => {
                return Err(ConfigError::new(field("dry_run"), "applies only to a rule that needs a token"))
            }
            (None, _) => Target::Public,
            (Some(access), Some(api)) => {
                let dry_run = rule.dry_run.unwrap_or(false) || api_dry_run.get(api.0).copied().unwrap_or(false);
                Target::Api { api, access, dry_run }
            }
            (Some(_), None) => {
                return Err(ConfigError::new(field("api"), "must name the API this rule protects (one of apis)"))
            }
        };
        rules.push(Rule { host, path, methods, virtual_host, route, target });
    }
    let unmatched =
        match (unmatched.unwrap_or(RawAccess::Deny), default_api) {
            (RawAccess::Deny, _) => None,
            (RawAccess::Public, _) => Some(Target::Public),
            (RawAccess::Authenticated, Some(api)) => {
                let dry_run = api_dry_run.get(api.0).copied().unwrap_or(false);
                Some(Target::Api { api, access: Access::Authenticated, dry_run })
            }
            (RawAccess::Authenticated, None) => return Err(ConfigError::new(
                "unmatched",
                "must be \"deny\" or \"public\" when the configuration has apis; protect the rest with a last rule \
                 such as {\"prefix\": \"/\", \"api\": \"…\", \"access\": \"authenticated\"}",
            )),
            (RawAccess::Roles, _) => {
                return Err(ConfigError::new("unmatched", "must be \"deny\", \"authenticated\" or \"public\""));
            }
        };
    Ok(Rules::new(rules, unmatched))
}

/// A rule's `virtual_host` or `route`: an Envoy name, compared exactly.
fn route_name(name: Option<String>, field: &str) -> Result<Option<String>, ConfigError> {
    match name {
        Some(name) if name.is_empty() || name.bytes().any(|b| b.is_ascii_control()) => {
            Err(ConfigError::new(field, "must be the name Envoy's route configuration gives it"))
        }
        name => Ok(name),
    }
}

/// ZITADEL fills `urn:zitadel:iam:org:project:roles` with the roles of the
/// project a token was asked for: read by an API of another project, a token
/// of that project would bring its own roles. So with several APIs, a roles
/// rule needs an API that reads its project's own claim (`project_id`) or
/// names its claims (`role_claims`).
fn check_role_source(api: &str, generic_roles: &[&str], field: &str) -> Result<(), ConfigError> {
    if generic_roles.contains(&api) {
        return Err(ConfigError::new(
            field,
            format!(
                "API {api:?} has neither project_id nor role_claims, so its roles would come from ZITADEL's generic \
                 claim urn:zitadel:iam:org:project:roles, where another project's token brings that project's roles; \
                 give the API its project_id (or role_claims)"
            ),
        ));
    }
    Ok(())
}

/// Rules are matched against the readings of request paths (see `path`), so a
/// rule path must be one of them: a path read one way only, without `//`, `.`
/// or `..` segments, path parameters or percent escapes (written decoded, as
/// the frameworks that decode route it).
fn check_rule_path(path: String, field: &str) -> Result<String, ConfigError> {
    let read_once = read_path(path.as_bytes()).is_ok_and(|readings| readings.spellings() == [path.as_str()]);
    if path.contains(['?', ';']) || !read_once {
        return Err(ConfigError::new(
            field,
            "must be a canonical absolute path: starting with '/', no query, no ';' parameters, no '//', '.' or \
             '..' segments, no percent escapes (write the path decoded, in ASCII)",
        ));
    }
    Ok(path)
}

fn cache_settings(raw: &RawCache) -> Result<CacheSettings, ConfigError> {
    if !(1..=1_048_576).contains(&raw.slots) {
        return Err(ConfigError::new("cache.slots", "must be between 1 and 1048576"));
    }
    if !(1..=86_400).contains(&raw.max_ttl_seconds) {
        return Err(ConfigError::new("cache.max_ttl_seconds", "must be between 1 and 86400"));
    }
    let negative_ttl_seconds = raw.negative_ttl_seconds.unwrap_or(NEGATIVE_TTL_SECS.min(raw.max_ttl_seconds));
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
    })
}

/// Each value once, in first-seen order.
fn union<'a>(values: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in values {
        if !out.contains(value) {
            out.push(value.clone());
        }
    }
    out
}

/// What an issuer's cached verdicts depend on: change any of it and old
/// entries stop counting. Shared data outlives a reconfiguration, so a
/// verdict kept under one extraction (its audiences, the claims at each
/// index), one endpoint, one client or one TTL must not be read under
/// another. A new key or secret for the same client keeps the verdicts.
pub fn fingerprint(
    extraction: &Extraction,
    endpoint: &Endpoint,
    client_id: &str,
    cache: &CacheSettings,
    jwks_path: Option<&str>,
) -> u64 {
    let numbers = format!("{}/{}/{}", cache.max_ttl_secs, cache.negative_ttl_secs, extraction.clock_skew_secs);
    let mut hasher = Sha256::new();
    let mut part = |text: &str| {
        hasher.update(text.as_bytes());
        hasher.update([0u8]);
    };
    part(&extraction.issuer);
    for text in [&endpoint.cluster, &endpoint.authority, &endpoint.path, client_id] {
        part(text);
    }
    for (label, list) in [
        ("\u{1}audiences", &extraction.audiences),
        ("\u{1}roles", &extraction.role_claims),
        ("\u{1}claims", &extraction.header_claims),
    ] {
        part(label);
        list.iter().for_each(|item| part(item));
    }
    part("\u{1}numbers");
    part(&numbers);
    // A verdict on a JWT verified locally is not one the issuer gave: switching
    // back to introspection must not keep them, nor moving to other keys.
    if let Some(path) = jwks_path {
        part("\u{1}jwt-local");
        part(path);
    }
    let digest: [u8; 32] = hasher.finalize().into();
    let [a, b, c, d, e, f, g, h, ..] = digest;
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

//! What happens to a request, as plain functions of the request, the
//! compiled policy and the issuers' verdicts. Nothing here touches the host:
//! the engine (`engine`) finds the verdicts (in the cache, from a call under
//! way, or by calling the issuer) and carries the decision out.
//!
//! [`start`] reads the request: host, path, rule, token, and which issuers
//! may be asked about it. A [`Check`] then takes one verdict per issuer, in
//! order, until one admits the request: a valid verdict whose audience is the
//! API's and whose roles meet the route (checked on every request, cached
//! verdict or not). When none admits, the denial says the most that is known:
//! an issuer that could not answer (503) before a valid token's wrong
//! audience or missing role (401, 403) before the issuers' refusals (401).

use crate::authority::{canonical_authority, Authority, HostError};
use crate::claims::{Identity, Rejection, Verdict};
use crate::metadata::{MetadataMethod, WELL_KNOWN};
use crate::path::{read_path, PathError};
use crate::policy::{ApiId, IssuerId, Policy};
use crate::request::Repeated;
pub use crate::request::Request;
use crate::response::Denial;
use crate::rules::{Access, Disagreement, Query, Target};
use crate::token::{bearer_token, token_shape, TokenError, TokenShape};

/// What to do with a request before any verdict.
#[derive(Debug)]
pub enum Start {
    /// Refused before any rule applied (a malformed request, no rule).
    Deny(Denial),
    /// Refused under the rule of an API (no token, or one that cannot be its).
    Refuse { protected: Protected, denial: Denial },
    /// Forward it, without any of the forwarded headers a client may have sent.
    Public,
    /// A CORS preflight of an API that lets them pass without a token:
    /// forwarded like a public request.
    Preflight { api: ApiId },
    /// A request for an API's RFC 9728 metadata, which the filter answers.
    Metadata { api: ApiId, method: MetadataMethod },
    /// Find out whether its token is valid for the rule's API.
    Check(Check),
}

/// The API a request falls under, and whether its rule only counts denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protected {
    pub api: ApiId,
    /// Dry run: a denial is counted and logged, and the request passes.
    pub dry_run: bool,
}

/// Reads a request (see the module documentation).
pub fn start(policy: &Policy, request: &Request<'_>) -> Start {
    match request.repeated {
        None => {}
        Some(Repeated::Authority) => return Start::Deny(Denial::BadHost(HostError::Repeated)),
        Some(Repeated::Path | Repeated::Method) => return Start::Deny(Denial::BadPath(PathError::Repeated)),
        // As when Envoy joins two into one: not exactly one bearer token.
        Some(Repeated::Authorization) => return Start::Deny(Denial::MalformedToken),
    }
    let authority = match canonical_authority(request.authority) {
        Ok(authority) => authority,
        Err(err) => return Start::Deny(Denial::BadHost(err)),
    };
    let path = match read_path(request.path) {
        Ok(path) => path,
        Err(err) => return Start::Deny(Denial::BadPath(err)),
    };
    if let Some(start) = metadata_request(policy, &authority, request) {
        return start;
    }
    // A method, virtual host or route name that is not UTF-8 matches no rule that names one.
    let query = Query {
        authority: &authority,
        method: std::str::from_utf8(request.method).unwrap_or_default(),
        path: &path,
        virtual_host: request.virtual_host.and_then(|name| std::str::from_utf8(name).ok()),
        route: request.route.and_then(|name| std::str::from_utf8(name).ok()),
    };
    let (protected, access) = match policy.rules.target_for(&query) {
        Err(Disagreement::Port) => return Start::Deny(Denial::BadHost(HostError::PortDecides)),
        Err(Disagreement::Path) => return Start::Deny(Denial::BadPath(PathError::ReadDifferently)),
        Ok(None) => return Start::Deny(Denial::NoRule),
        Ok(Some(Target::Public)) => return Start::Public,
        Ok(Some(Target::Api { api, access, dry_run })) => (Protected { api: *api, dry_run: *dry_run }, access),
    };
    let api_id = protected.api;
    let Some(api) = policy.api(api_id) else {
        return Start::Deny(Denial::IssuerUnavailable);
    };
    // A browser's preflight carries no credentials and no body: the API may let it through.
    let preflight = query.method == "OPTIONS" && request.origin && request.cors_request_method && request.end_of_stream;
    if api.cors_preflight && preflight {
        return Start::Preflight { api: api_id };
    }
    let refuse = |denial| Start::Refuse { protected, denial };
    let header = match request.authorization.map(std::str::from_utf8) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return refuse(Denial::MalformedToken),
    };
    let token = match bearer_token(header) {
        Ok(token) => token,
        Err(TokenError::Missing) => return refuse(Denial::MissingToken),
        Err(TokenError::Malformed) => return refuse(Denial::MalformedToken),
    };
    let shape = token_shape(token);
    let jwt = matches!(shape, TokenShape::Jwt { .. });
    let candidates = match shape {
        TokenShape::Opaque => api.issuers.iter().map(|trusted| trusted.id).collect(),
        // Only the trusted issuers at the URL it names (several, when one
        // instance is introspected with the credentials of several projects).
        TokenShape::Jwt { issuer } => {
            let named: Vec<IssuerId> = api
                .issuers
                .iter()
                .map(|trusted| trusted.id)
                .filter(|&id| policy.issuer(id).is_some_and(|i| i.url() == issuer))
                .collect();
            if named.is_empty() {
                return refuse(Denial::InvalidToken(Rejection::UntrustedIssuer));
            }
            named
        }
        TokenShape::JwtWithoutIssuer => return refuse(Denial::InvalidToken(Rejection::NoIssuer)),
    };
    Start::Check(Check {
        protected,
        access: access.clone(),
        token: token.to_owned(),
        jwt,
        candidates,
        next: 0,
        failure: None,
        refusal: None,
        rejection: None,
    })
}

/// Why an issuer gave no verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The call failed or its answer was unusable.
    Unavailable,
    /// The issuer is down: refused the connection, timed out, or answered 5xx.
    /// Like `Unavailable`, except that an API may then admit on a recent
    /// valid verdict (stale-if-error).
    Outage,
    /// `max_in_flight` calls to the issuer were under way already.
    Overloaded,
}

/// A request for an API's metadata (see `metadata`): the well-known path
/// with the resource's path, on the resource's host; or the bare well-known
/// path, for the API on that host whose resource has no path, or else the one
/// API with metadata there.
fn metadata_request(policy: &Policy, authority: &Authority, request: &Request<'_>) -> Option<Start> {
    let path = request.path.split(|&b| b == b'?').next().unwrap_or_default();
    if !path.starts_with(WELL_KNOWN.as_bytes()) {
        return None;
    }
    let on_host = || {
        let apis = policy.apis.iter().enumerate();
        apis.filter_map(|(at, api)| Some((ApiId(at), api.metadata.as_ref()?))).filter(|(_, m)| m.serves_host(authority))
    };
    let exact = on_host().find(|(_, metadata)| metadata.path.as_bytes() == path);
    let api = match exact {
        Some((api, _)) => api,
        None if path == WELL_KNOWN.as_bytes() => {
            let mut candidates = on_host();
            match (candidates.next(), candidates.next()) {
                (Some((api, _)), None) => api,
                _ => return None,
            }
        }
        None => return None,
    };
    let method = match request.method {
        b"GET" => MetadataMethod::Get,
        b"HEAD" => MetadataMethod::Head,
        b"OPTIONS" => MetadataMethod::Options,
        _ => MetadataMethod::Other,
    };
    Some(Start::Metadata { api, method })
}

/// A token being checked for one API, one issuer at a time.
#[derive(Debug)]
pub struct Check {
    protected: Protected,
    access: Access,
    token: String,
    /// The token is a JWT naming its issuer (which may verify it locally).
    jwt: bool,
    /// The issuers to ask, in order: those at the URL a JWT names, or all the API's.
    candidates: Vec<IssuerId>,
    next: usize,
    failure: Option<Failure>,
    /// Why a valid verdict did not admit: wrong audience or missing role.
    refusal: Option<Denial>,
    rejection: Option<Rejection>,
}

/// What a check needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'p> {
    /// A verdict from this issuer.
    Ask(IssuerId),
    Done(Decision<'p>),
}

/// The end of a request's check.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision<'p> {
    Admit(Admission<'p>),
    Deny(Denial),
}

/// The headers an admitted request goes upstream with.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission<'p> {
    /// The API's identity and claim headers: each replaces whatever the
    /// client sent, and `None` (nothing to forward) removes it.
    pub set: Vec<(&'p str, Option<String>)>,
    /// Headers other APIs forward: removed.
    pub remove: &'p [String],
    /// The issuer (its configured name) whose verdict admitted the token.
    pub issuer: &'p str,
    /// The token's `sub` and `client_id`, for the access log.
    pub subject: String,
    pub client_id: String,
    /// Admitted on a recent verdict while the issuer was down (stale-if-error).
    pub stale: bool,
}

impl Check {
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn api(&self) -> ApiId {
        self.protected.api
    }

    /// The API and whether its rule only counts denials.
    pub fn protected(&self) -> Protected {
        self.protected
    }

    /// Whether the token is a JWT that names its issuer.
    pub fn is_jwt(&self) -> bool {
        self.jwt
    }

    /// The issuer [`Check::step`] asks now, if any is left.
    pub fn current(&self) -> Option<IssuerId> {
        self.candidates.get(self.next).copied()
    }

    /// The issuers after the one [`Check::step`] asks.
    pub fn later(&self) -> &[IssuerId] {
        self.candidates.get(self.next.saturating_add(1)..).unwrap_or_default()
    }

    /// The admission a valid verdict of one of the [`Check::later`] issuers,
    /// found in the cache, gives, if it admits: any trusted issuer's verdict
    /// that admits suffices, so the earlier ones need not be asked again.
    pub fn admitted_by<'p>(&self, policy: &'p Policy, issuer: IssuerId, identity: &Identity) -> Option<Admission<'p>> {
        match admit(policy, self.protected.api, issuer, identity, &self.access) {
            Decision::Admit(admission) => Some(admission),
            Decision::Deny(_) => None,
        }
    }

    /// The issuer to ask now, or how the check ends when none is left.
    pub fn step(&self) -> Step<'static> {
        if let Some(&issuer) = self.candidates.get(self.next) {
            return Step::Ask(issuer);
        }
        Step::Done(Decision::Deny(match (self.failure, &self.refusal) {
            // Some issuer could not answer: it might have admitted the token.
            (Some(Failure::Unavailable | Failure::Outage), _) => Denial::IssuerUnavailable,
            (Some(Failure::Overloaded), _) => Denial::Overloaded,
            (None, Some(refusal)) => refusal.clone(),
            (None, None) => Denial::InvalidToken(self.rejection.unwrap_or(Rejection::Inactive)),
        }))
    }

    /// Takes the current issuer's verdict, or its failure. A verdict that
    /// admits decides; anything else moves on to the next issuer (see
    /// [`Check::step`] for how a check ends without one).
    pub fn record<'p>(&mut self, policy: &'p Policy, outcome: Result<&Verdict, Failure>) -> Option<Decision<'p>> {
        let issuer = self.candidates.get(self.next).copied();
        self.next = self.next.saturating_add(1);
        match (outcome, issuer) {
            (Ok(Verdict::Valid(identity)), Some(issuer)) => {
                match admit(policy, self.protected.api, issuer, identity, &self.access) {
                    Decision::Admit(admission) => return Some(Decision::Admit(admission)),
                    Decision::Deny(refusal) => {
                        self.refusal.get_or_insert(refusal);
                    }
                }
            }
            // "Inactive" is what every issuer says of a token it did not mint;
            // anything more specific is the better answer.
            (Ok(Verdict::Invalid(rejection)), _) => {
                if self.rejection.is_none_or(|kept| kept == Rejection::Inactive) {
                    self.rejection = Some(*rejection);
                }
            }
            (Err(failure), _) => {
                self.failure.get_or_insert(failure);
            }
            (Ok(Verdict::Valid(_)), None) => {
                self.failure.get_or_insert(Failure::Unavailable);
            }
        }
        None
    }
}

/// An API's own checks on a verdict its trusted `issuer` gave: audiences and
/// the route's roles, then the headers to forward. Runs on every request.
pub fn admit<'p>(
    policy: &'p Policy,
    api: ApiId,
    issuer: IssuerId,
    identity: &Identity,
    access: &Access,
) -> Decision<'p> {
    let Some((api, trusted)) = policy.api(api).and_then(|api| Some((api, api.trusted(issuer)?))) else {
        return Decision::Deny(Denial::InvalidToken(Rejection::UntrustedIssuer));
    };
    if !identity.audiences.iter().any(|aud| api.audiences.contains(aud)) {
        return Decision::Deny(Denial::InvalidToken(Rejection::WrongAudience));
    }
    let mut roles: Vec<&String> = Vec::new();
    for role in trusted.role_claims.iter().filter_map(|&at| identity.roles.get(at)).flatten() {
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    if let Access::AnyRole(required) = access {
        if !required.iter().any(|r| roles.contains(&r)) {
            return Decision::Deny(Denial::InsufficientRole(required.clone()));
        }
    }
    let joined = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
    let headers = &api.identity_headers;
    let some = |value: &str| Some(value.to_owned()).filter(|v| !v.is_empty());
    let mut set = vec![
        (headers.subject.as_str(), some(&identity.subject)),
        (headers.client_id.as_str(), some(&identity.client_id)),
        (headers.roles.as_str(), some(&joined)),
    ];
    if let (Some(header), Some(issuer)) = (&headers.issuer, policy.issuer(trusted.id)) {
        set.push((header.as_str(), Some(issuer.url().to_owned())));
    }
    for (header, at) in &trusted.claim_headers {
        set.push((header.as_str(), identity.claims.get(*at).cloned().flatten()));
    }
    let issuer = policy.issuer(trusted.id).map_or("", |issuer| issuer.name.as_str());
    let (subject, client_id) = (identity.subject.clone(), identity.client_id.clone());
    Decision::Admit(Admission { set, remove: &api.foreign_headers, issuer, subject, client_id, stale: false })
}

#[cfg(test)]
#[path = "decision_tests.rs"]
pub(crate) mod tests;

//! The decision on its own: requests and verdicts in, denials and headers out.
//! `gateway()` is shared with the engine's tests.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::json;

use super::*;
use crate::authority::HostError;
use crate::load::load;
use crate::metadata::MetadataMethod;
use crate::path::PathError;

pub(crate) const MAIN: &str = "https://main.example";
pub(crate) const PARTNER: &str = "https://partner.example";
pub(crate) const ORG_CLAIM: &str = "urn:zitadel:iam:user:resourceowner:id";

/// One gateway, three services: `orders` (project 100) and `billing` (200) of
/// the main instance, `partners` (300), which trusts the partner's instance
/// first and the main one second.
pub(crate) fn gateway() -> Policy {
    load(gateway_config().to_string().as_bytes(), &|_| None).expect("the gateway configuration compiles")
}

/// The gateway with the main instance's JWTs verified locally.
pub(crate) fn local_gateway() -> Policy {
    let mut config = gateway_config();
    config["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_min_refresh_seconds": 10});
    load(config.to_string().as_bytes(), &|_| None).expect("the gateway configuration compiles")
}

fn gateway_config() -> serde_json::Value {
    let basic = |id: &str| json!({"method": "client_secret_basic", "client_id": id, "client_secret": "s3cret"});
    json!({
        "issuers": {
            "main": {"issuer": MAIN, "introspection": {"cluster": "main", "max_in_flight": 2}, "client_auth": basic("api@main")},
            "partner": {"issuer": PARTNER, "introspection": {"cluster": "partner"}, "client_auth": basic("api@partner")}
        },
        "apis": {
            "orders": {"audiences": ["100"], "project_id": "100", "issuers": ["main"],
                       "claim_headers": {"x-auth-org": ORG_CLAIM}},
            "billing": {"audiences": ["200"], "project_id": "200", "issuers": ["main"]},
            "partners": {"audiences": ["300"], "project_id": "300", "issuers": ["partner", "main"]}
        },
        "rules": [
            {"host": "orders.example.com", "prefix": "/", "api": "orders", "access": "authenticated"},
            {"host": "billing.example.com", "path": "/health", "access": "public"},
            {"host": "billing.example.com", "prefix": "/", "api": "billing", "access": "roles", "roles": ["billing:read"]},
            {"host": "*.partners.example.com", "prefix": "/", "api": "partners", "access": "authenticated"}
        ],
        "cache": {"slots": 64}
    })
}

pub(crate) const ORDERS: ApiId = ApiId(1);
pub(crate) const BILLING: ApiId = ApiId(0);
pub(crate) const MAIN_ID: IssuerId = IssuerId(0);
pub(crate) const PARTNER_ID: IssuerId = IssuerId(1);

/// A JWT-shaped token naming `iss` (its signature is not checked by the filter).
pub(crate) fn jwt(iss: &str) -> String {
    let part = |value: serde_json::Value| Base64UrlUnpadded::encode_string(value.to_string().as_bytes());
    format!("{}.{}.c2ln", part(json!({"alg": "RS256"})), part(json!({"iss": iss, "sub": "u"})))
}

/// What an issuer's verdict keeps of a token for `aud` with `roles` in
/// project `project`'s claim, as `policy`'s issuer `issuer` extracts it.
pub(crate) fn identity(policy: &Policy, issuer: IssuerId, aud: &str, project: &str, roles: &[&str]) -> Identity {
    let extraction = &policy.issuers[issuer.0].extraction;
    let claim = format!("urn:zitadel:iam:org:project:{project}:roles");
    Identity {
        subject: "user-1".into(),
        client_id: "client-1".into(),
        audiences: extraction.audiences.iter().filter(|a| *a == aud).cloned().collect(),
        roles: extraction
            .role_claims
            .iter()
            .map(|c| if *c == claim { roles.iter().map(|r| r.to_string()).collect() } else { vec![] })
            .collect(),
        claims: extraction.header_claims.iter().map(|c| (c == ORG_CLAIM).then(|| "org-9".to_string())).collect(),
        expires_at: Some(2_000_000_000),
    }
}

fn request<'a>(host: &'a str, path: &'a str, authorization: Option<&'a str>) -> Request<'a> {
    Request {
        method: b"GET",
        authority: host.as_bytes(),
        path: path.as_bytes(),
        authorization: authorization.map(str::as_bytes),
        ..Request::default()
    }
}

fn start_with(policy: &Policy, host: &str, path: &str, token: &str) -> Start {
    let header = format!("Bearer {token}");
    start(policy, &request(host, path, Some(&header)))
}

fn check(policy: &Policy, host: &str, token: &str) -> Check {
    match start_with(policy, host, "/x", token) {
        Start::Check(check) => check,
        other => panic!("no check: {other:?}"),
    }
}

/// Records one verdict and returns how the check ends (a single-issuer check ends there).
fn decide<'p>(check: &mut Check, policy: &'p Policy, verdict: &Verdict) -> Decision<'p> {
    match check.record(policy, Ok(verdict)) {
        Some(decision) => decision,
        None => match check.step() {
            Step::Done(decision) => decision,
            Step::Ask(issuer) => panic!("still asking {issuer:?}"),
        },
    }
}

fn denial(start: Start) -> Denial {
    match start {
        Start::Deny(denial) | Start::Refuse { denial, .. } => denial,
        other => panic!("not denied: {other:?}"),
    }
}

#[test]
fn start_refuses_bad_hosts_and_paths_first() {
    let policy = gateway();
    assert_eq!(
        denial(start(&policy, &request("orders.example.com@evil", "/x", None))),
        Denial::BadHost(HostError::Userinfo)
    );
    assert_eq!(denial(start(&policy, &request("", "/x", None))), Denial::BadHost(HostError::Empty));
    assert_eq!(
        denial(start(&policy, &request("orders.example.com", "/a%2fb", None))),
        Denial::BadPath(PathError::AmbiguousEscape)
    );
}

/// What the router and the framework read differently is refused, never guessed.
#[test]
fn start_refuses_what_readers_read_differently() {
    let policy = gateway();
    let refused = |host: &str, path: &str| denial(start(&policy, &request(host, path, None)));
    assert_eq!(refused("billing.example.com", "/x/../health"), Denial::BadPath(PathError::DotSegment));
    assert_eq!(refused("billing.example.com", "//health"), Denial::BadPath(PathError::LeadingDoubleSlash));
    // `/health;x`: `/health` (public) to Tomcat, billing's own route to Express.
    assert_eq!(refused("billing.example.com", "/health;x"), Denial::BadPath(PathError::ReadDifferently));
    assert_eq!(refused("billing.example.com", "/HEALTH"), Denial::BadPath(PathError::ReadDifferently));
    // A port Envoy left: counted, no host rule; ignored, orders'.
    assert_eq!(refused("orders.example.com:8080", "/x"), Denial::BadHost(HostError::PortDecides));
    assert_eq!(refused("[0:0::1]", "/x"), Denial::BadHost(HostError::IpNotCanonical));
}

/// Rules bound to Envoy's virtual host read its name from the request.
#[test]
fn start_reads_the_virtual_host_envoy_picked() {
    let mut config = gateway_config();
    config["rules"] = json!([
        {"virtual_host": "orders", "api": "orders", "access": "authenticated"},
        {"virtual_host": "public", "access": "public"}
    ]);
    let policy = load(config.to_string().as_bytes(), &|_| None).unwrap();
    let routed = |virtual_host: Option<&'static str>| {
        let request =
            Request { virtual_host: virtual_host.map(str::as_bytes), ..request("anything.example", "/x;y", None) };
        start(&policy, &request)
    };
    assert_eq!(denial(routed(Some("orders"))), Denial::MissingToken);
    assert!(matches!(routed(Some("public")), Start::Public));
    assert_eq!(denial(routed(None)), Denial::NoRule);
    assert_eq!(denial(routed(Some("Orders"))), Denial::NoRule);
}

#[test]
fn start_matches_host_then_path() {
    let policy = gateway();
    assert!(matches!(start(&policy, &request("BILLING.example.com", "/health", None)), Start::Public));
    // A dot Envoy did not strip: another host to its router.
    assert_eq!(
        denial(start(&policy, &request("billing.example.com.", "/health", None))),
        Denial::BadHost(HostError::TrailingDot)
    );
    assert_eq!(denial(start(&policy, &request("billing.example.com", "/other", None))), Denial::MissingToken);
    // Refused under billing's rule: the access log names the API.
    assert!(matches!(
        start(&policy, &request("billing.example.com", "/other", None)),
        Start::Refuse { protected: Protected { api: BILLING, dry_run: false }, .. }
    ));
    assert_eq!(denial(start(&policy, &request("shipping.example.com", "/health", None))), Denial::NoRule);
    assert_eq!(denial(start(&policy, &request("partners.example.com", "/x", None))), Denial::NoRule);
    assert_eq!(
        denial(start(&policy, &request("eu.partners.example.com", "/x", Some("Basic x")))),
        Denial::MalformedToken
    );
    let not_utf8 = Request { authorization: Some(b"Bearer \xff"), ..request("orders.example.com", "/x", None) };
    assert_eq!(denial(start(&policy, &not_utf8)), Denial::MalformedToken);
}

#[test]
fn opaque_token_is_tried_at_the_apis_issuers_in_order() {
    let policy = gateway();
    let check = check(&policy, "eu.partners.example.com", "opaque-token");
    assert_eq!(check.step(), Step::Ask(PARTNER_ID));
    assert_eq!(check.later(), [MAIN_ID]);
    assert_eq!(check.token(), "opaque-token");
}

#[test]
fn jwt_is_asked_only_at_the_trusted_issuer_it_names() {
    let policy = gateway();
    let at_partners = check(&policy, "eu.partners.example.com", &jwt(MAIN));
    assert_eq!(at_partners.step(), Step::Ask(MAIN_ID));
    assert!(at_partners.later().is_empty());
    // Orders trusts only main: the partner's JWT is refused without a call.
    let untrusted = start_with(&policy, "orders.example.com", "/x", &jwt(PARTNER));
    assert_eq!(denial(untrusted), Denial::InvalidToken(Rejection::UntrustedIssuer));
    let unknown = start_with(&policy, "orders.example.com", "/x", &jwt("https://evil.example"));
    assert_eq!(denial(unknown), Denial::InvalidToken(Rejection::UntrustedIssuer));
    // An issuer URL is compared exactly: no trailing slash, no case folding.
    let slash = start_with(&policy, "orders.example.com", "/x", &jwt("https://main.example/"));
    assert_eq!(denial(slash), Denial::InvalidToken(Rejection::UntrustedIssuer));
}

#[test]
fn jwt_naming_a_shared_url_is_asked_at_each_trusted_issuer_there() {
    let mut config_policy = gateway();
    // The partners API's second issuer is main; make the partner's URL main's too.
    config_policy.issuers[1].extraction.issuer = MAIN.into();
    let check = check(&config_policy, "eu.partners.example.com", &jwt(MAIN));
    assert_eq!(check.step(), Step::Ask(PARTNER_ID));
    assert_eq!(check.later(), [MAIN_ID]);
}

#[test]
fn jwt_without_issuer_is_refused_without_a_call() {
    let policy = gateway();
    let part = |value: serde_json::Value| Base64UrlUnpadded::encode_string(value.to_string().as_bytes());
    let token = format!("{}.{}.c2ln", part(json!({"alg": "RS256"})), part(json!({"sub": "u"})));
    assert_eq!(
        denial(start_with(&policy, "orders.example.com", "/x", &token)),
        Denial::InvalidToken(Rejection::NoIssuer)
    );
}

#[test]
fn valid_verdict_admits_with_the_apis_headers() {
    let policy = gateway();
    let mut check = check(&policy, "orders.example.com", "t");
    let verdict = Verdict::Valid(identity(&policy, MAIN_ID, "100", "100", &["orders:write"]));
    let Some(Decision::Admit(admission)) = check.record(&policy, Ok(&verdict)) else { panic!("not admitted") };
    assert_eq!(
        admission.set,
        [
            ("x-auth-subject", Some("user-1".to_string())),
            ("x-auth-client-id", Some("client-1".to_string())),
            ("x-auth-roles", Some("orders:write".to_string())),
            ("x-auth-org", Some("org-9".to_string())),
        ]
    );
    assert!(admission.remove.is_empty());
}

#[test]
fn token_for_one_api_is_refused_at_another() {
    let policy = gateway();
    let billing_token = Verdict::Valid(identity(&policy, MAIN_ID, "200", "200", &["billing:read"]));
    let mut at_orders = check(&policy, "orders.example.com", "t");
    assert_eq!(
        decide(&mut at_orders, &policy, &billing_token),
        Decision::Deny(Denial::InvalidToken(Rejection::WrongAudience))
    );
}

/// Roles count only from the API's own project claim: a token that names
/// billing's project but holds `billing:read` in the orders project is refused.
#[test]
fn roles_are_read_from_the_apis_own_claims() {
    let policy = gateway();
    let mut check = check(&policy, "billing.example.com", "t");
    let other_project_roles = Verdict::Valid(identity(&policy, MAIN_ID, "200", "100", &["billing:read"]));
    assert_eq!(
        decide(&mut check, &policy, &other_project_roles),
        Decision::Deny(Denial::InsufficientRole(vec!["billing:read".into()]))
    );
    let mut check = check_at_billing(&policy);
    let own = Verdict::Valid(identity(&policy, MAIN_ID, "200", "200", &["billing:read", "billing:read"]));
    let Some(Decision::Admit(admission)) = check.record(&policy, Ok(&own)) else { panic!("not admitted") };
    assert!(admission.set.contains(&("x-auth-roles", Some("billing:read".into()))));
    // Billing forwards no org: the header another API forwards is removed.
    assert_eq!(admission.remove, ["x-auth-org"]);
}

fn check_at_billing(policy: &Policy) -> Check {
    check(policy, "billing.example.com", "t")
}

#[test]
fn empty_identity_values_remove_their_headers() {
    let policy = gateway();
    let mut check = check(&policy, "orders.example.com", "t");
    let mut bare = identity(&policy, MAIN_ID, "100", "100", &[]);
    bare.subject.clear();
    bare.claims = vec![None];
    let Some(Decision::Admit(admission)) = check.record(&policy, Ok(&Verdict::Valid(bare))) else { panic!() };
    assert_eq!(admission.set[0], ("x-auth-subject", None));
    assert_eq!(admission.set[2], ("x-auth-roles", None));
    assert_eq!(admission.set[3], ("x-auth-org", None));
}

#[test]
fn check_moves_on_after_an_invalid_verdict_or_a_failure() {
    let policy = gateway();
    let inactive = Verdict::Invalid(Rejection::Inactive);
    let valid = Verdict::Valid(identity(&policy, MAIN_ID, "300", "300", &[]));

    let mut second_wins = check(&policy, "eu.partners.example.com", "t");
    assert_eq!(second_wins.record(&policy, Ok(&inactive)), None);
    assert_eq!(second_wins.step(), Step::Ask(MAIN_ID));
    assert!(matches!(second_wins.record(&policy, Ok(&valid)), Some(Decision::Admit(_))));

    let mut none = check(&policy, "eu.partners.example.com", "t");
    assert_eq!(none.record(&policy, Ok(&inactive)), None);
    assert_eq!(none.record(&policy, Ok(&inactive)), None);
    assert_eq!(none.step(), Step::Done(Decision::Deny(Denial::InvalidToken(Rejection::Inactive))));

    let mut specific = check(&policy, "eu.partners.example.com", "t");
    specific.record(&policy, Ok(&Verdict::Invalid(Rejection::Expired)));
    specific.record(&policy, Ok(&inactive));
    assert_eq!(specific.step(), Step::Done(Decision::Deny(Denial::InvalidToken(Rejection::Expired))));

    // One issuer could not answer and the other said no: nothing is known.
    let mut unknown = check(&policy, "eu.partners.example.com", "t");
    unknown.record(&policy, Err(Failure::Unavailable));
    unknown.record(&policy, Ok(&inactive));
    assert_eq!(unknown.step(), Step::Done(Decision::Deny(Denial::IssuerUnavailable)));

    // ... but a valid verdict from a trusted issuer still decides.
    let mut despite = check(&policy, "eu.partners.example.com", "t");
    despite.record(&policy, Err(Failure::Overloaded));
    assert!(matches!(despite.record(&policy, Ok(&valid)), Some(Decision::Admit(_))));

    // A valid token for another API at the first issuer: the second is still asked,
    // and when it says no, the wrong audience is the answer.
    let other_api = Verdict::Valid(identity(&policy, PARTNER_ID, "100", "100", &[]));
    let mut refused = check(&policy, "eu.partners.example.com", "t");
    assert_eq!(refused.record(&policy, Ok(&other_api)), None);
    assert_eq!(refused.step(), Step::Ask(MAIN_ID));
    refused.record(&policy, Ok(&inactive));
    assert_eq!(refused.step(), Step::Done(Decision::Deny(Denial::InvalidToken(Rejection::WrongAudience))));

    let mut overloaded = check(&policy, "orders.example.com", "t");
    overloaded.record(&policy, Err(Failure::Overloaded));
    assert_eq!(overloaded.step(), Step::Done(Decision::Deny(Denial::Overloaded)));
}

#[test]
fn admit_with_an_issuer_the_api_does_not_trust_is_refused() {
    let policy = gateway();
    let verdict = identity(&policy, PARTNER_ID, "300", "300", &[]);
    assert_eq!(
        admit(&policy, ORDERS, PARTNER_ID, &verdict, &Access::Authenticated),
        Decision::Deny(Denial::InvalidToken(Rejection::UntrustedIssuer))
    );
    let _ = BILLING;
}

#[test]
fn any_one_required_role_suffices() {
    let policy = gateway();
    for (held, admitted) in [(&["billing:read"][..], true), (&["billing:write"][..], false), (&[][..], false)] {
        let mut check = check_at_billing(&policy);
        let verdict = Verdict::Valid(identity(&policy, MAIN_ID, "200", "200", held));
        assert_eq!(matches!(decide(&mut check, &policy, &verdict), Decision::Admit(_)), admitted, "{held:?}");
    }
}

/// With several issuers, the same `sub` may name two people: the issuer header tells them apart.
#[test]
fn the_issuer_header_names_the_issuer_that_vouched() {
    let mut policy = gateway();
    policy.apis[2].identity_headers.issuer = Some("x-auth-issuer".into());
    let mut check = check(&policy, "eu.partners.example.com", "t");
    check.record(&policy, Ok(&Verdict::Invalid(Rejection::Inactive)));
    let verdict = Verdict::Valid(identity(&policy, MAIN_ID, "300", "300", &[]));
    let Some(Decision::Admit(admission)) = check.record(&policy, Ok(&verdict)) else { panic!("not admitted") };
    assert!(admission.set.contains(&("x-auth-issuer", Some(MAIN.to_string()))), "{:?}", admission.set);
}

#[test]
fn a_header_the_decision_reads_given_twice_is_refused() {
    use crate::request::Repeated;
    let policy = gateway();
    let twice =
        |repeated| Request { repeated: Some(repeated), ..request("orders.example.com", "/x", Some("Bearer t")) };
    assert_eq!(denial(start(&policy, &twice(Repeated::Authority))), Denial::BadHost(HostError::Repeated));
    assert_eq!(denial(start(&policy, &twice(Repeated::Path))), Denial::BadPath(PathError::Repeated));
    assert_eq!(denial(start(&policy, &twice(Repeated::Authorization))), Denial::MalformedToken);
}

// ---- RFC 9728 metadata, CORS preflights, dry runs ----

pub(crate) const MCP_RESOURCE: &str = "https://mcp.example.com/mcp";

/// The gateway plus an MCP server at mcp.example.com/mcp (project 400) that
/// publishes its metadata and lets CORS preflights through, and a dry-run API.
pub(crate) fn mcp_gateway() -> Policy {
    let mut config = gateway_config();
    config["apis"]["mcp"] = json!({
        "project_id": "400", "issuers": ["main"], "resource": MCP_RESOURCE, "resource_name": "Orders MCP",
        "scopes_supported": ["urn:zitadel:iam:org:project:id:400:aud"], "cors_preflight": "allow",
        "stale_if_error_seconds": 60
    });
    config["apis"]["trial"] = json!({"project_id": "500", "issuers": ["main"], "dry_run": true});
    let rules = config["rules"].as_array_mut().unwrap();
    rules.insert(
        0,
        json!({"host": "mcp.example.com", "prefix": "/mcp/admin", "api": "mcp", "access": "roles",
                           "roles": ["admin"]}),
    );
    rules.insert(1, json!({"host": "mcp.example.com", "prefix": "/mcp", "api": "mcp", "access": "authenticated"}));
    rules.insert(1, json!({"host": "trial.example.com", "prefix": "/", "api": "trial", "access": "authenticated"}));
    rules.insert(
        2,
        json!({"host": "orders.example.com", "prefix": "/beta", "api": "orders", "access": "roles",
                           "roles": ["beta"], "dry_run": true}),
    );
    load(config.to_string().as_bytes(), &|_| None).expect("the MCP gateway configuration compiles")
}

fn metadata_api(start: Start) -> Option<(ApiId, MetadataMethod)> {
    match start {
        Start::Metadata { api, method } => Some((api, method)),
        _ => None,
    }
}

#[test]
fn metadata_is_answered_at_the_resources_own_well_known_path_and_host() {
    let policy = mcp_gateway();
    let mcp = ApiId(policy.apis.iter().position(|api| api.name == "mcp").unwrap());
    let well_known = "/.well-known/oauth-protected-resource/mcp";
    for host in ["mcp.example.com", "MCP.example.com", "mcp.example.com:443"] {
        assert_eq!(metadata_api(start(&policy, &request(host, well_known, None))), Some((mcp, MetadataMethod::Get)));
    }
    // The bare path too: the one API with metadata on that host.
    let bare = start(&policy, &request("mcp.example.com", "/.well-known/oauth-protected-resource", None));
    assert_eq!(metadata_api(bare), Some((mcp, MetadataMethod::Get)));
    // Not on another host, another port, or another resource path: rules decide.
    for (host, path) in [
        ("orders.example.com", well_known),
        ("mcp.example.com:8443", well_known),
        ("mcp.example.com", "/.well-known/oauth-protected-resource/other"),
        ("mcp.example.com", "/.well-known/oauth-protected-resource/mcp/x"),
    ] {
        assert_eq!(metadata_api(start(&policy, &request(host, path, None))), None, "{host}{path}");
    }
    let options = Request { method: b"OPTIONS", ..request("mcp.example.com", well_known, None) };
    assert_eq!(metadata_api(start(&policy, &options)), Some((mcp, MetadataMethod::Options)));
    let post = Request { method: b"POST", ..request("mcp.example.com", well_known, None) };
    assert_eq!(metadata_api(start(&policy, &post)), Some((mcp, MetadataMethod::Other)));
    // The resource URL is one of the API's audiences (RFC 8707), beside the project id.
    assert_eq!(policy.api(mcp).unwrap().audiences, vec!["400".to_string(), MCP_RESOURCE.to_string()]);
}

#[test]
fn a_cors_preflight_passes_only_where_the_api_allows_it() {
    let policy = mcp_gateway();
    let preflight = |host: &'static str, origin: bool, method: bool| Request {
        method: b"OPTIONS",
        origin,
        cors_request_method: method,
        end_of_stream: true,
        ..request(host, "/mcp", None)
    };
    assert!(matches!(start(&policy, &preflight("mcp.example.com", true, true)), Start::Preflight { .. }));
    // With a body it is no preflight.
    let with_body = Request { end_of_stream: false, ..preflight("mcp.example.com", true, true) };
    assert_eq!(denial(start(&policy, &with_body)), Denial::MissingToken);
    // Not a preflight without both headers, nor where the API does not allow them.
    assert_eq!(denial(start(&policy, &preflight("mcp.example.com", true, false))), Denial::MissingToken);
    assert_eq!(denial(start(&policy, &preflight("mcp.example.com", false, true))), Denial::MissingToken);
    let orders = Request {
        method: b"OPTIONS",
        origin: true,
        cors_request_method: true,
        end_of_stream: true,
        ..request("orders.example.com", "/x", None)
    };
    assert_eq!(denial(start(&policy, &orders)), Denial::MissingToken);
}

#[test]
fn dry_run_comes_from_the_rule_or_its_api() {
    let policy = mcp_gateway();
    let dry = |host, path| match start(&policy, &request(host, path, None)) {
        Start::Refuse { protected, .. } => protected.dry_run,
        other => panic!("not refused: {other:?}"),
    };
    assert!(dry("trial.example.com", "/x"), "the API's dry_run");
    assert!(dry("orders.example.com", "/beta/x"), "the rule's dry_run");
    assert!(!dry("orders.example.com", "/x"));
    let token = "Bearer t";
    let check = |host: &str, path: &str| match start(&policy, &request(host, path, Some(token))) {
        Start::Check(check) => check.protected().dry_run,
        other => panic!("no check: {other:?}"),
    };
    assert!(check("orders.example.com", "/beta"));
    assert!(!check("mcp.example.com", "/mcp"));
}

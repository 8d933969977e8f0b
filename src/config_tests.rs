//! The configuration parser's table-driven tests: each broken configuration
//! fails with an error naming its field; each valid one compiles as documented.

use std::time::Duration;

use super::*;
use crate::client_auth::tests::test_key_pem;
use crate::client_auth::ClientAuth;
use crate::load::load;
use crate::policy::{ApiId, Endpoint, IssuerId, Policy};
use crate::rules::{Access, PathPattern, Target};
use serde_json::{json, Value};

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

/// The one-issuer shorthand, as configurations before `issuers` and `apis` were written.
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

fn basic(client_id: &str) -> Value {
    json!({"method": "client_secret_basic", "client_id": client_id, "client_secret": "s3cret"})
}

/// One gateway, three services: two projects of the main instance, one of a partner's.
fn gateway() -> Value {
    json!({
        "issuers": {
            "main": {"issuer": "https://main.example", "introspection": {"cluster": "main"}, "client_auth": basic("api@main")},
            "partner": {"issuer": "https://partner.example", "introspection": {"cluster": "partner", "timeout_ms": 500},
                        "client_auth": basic("api@partner")}
        },
        "apis": {
            "orders": {"audiences": ["100"], "project_id": "100", "issuers": ["main"],
                       "claim_headers": {"x-auth-org": "urn:zitadel:iam:user:resourceowner:id"}},
            "billing": {"audiences": ["200"], "project_id": "200", "issuers": ["main"]},
            "partners": {"audiences": ["300"], "project_id": "300", "issuers": ["partner", "main"],
                         "identity_headers": {"subject": "x-partner-user"}}
        },
        "rules": [
            {"host": "orders.example.com", "prefix": "/", "api": "orders", "access": "authenticated"},
            {"host": "billing.example.com", "path": "/health", "access": "public"},
            {"host": "billing.example.com", "prefix": "/", "api": "billing", "access": "roles", "roles": ["billing:read"]},
            {"host": "*.partners.example.com", "prefix": "/", "api": "partners", "access": "authenticated"}
        ]
    })
}

fn load_value(value: &Value) -> Result<Policy, ConfigError> {
    load(value.to_string().as_bytes(), &no_env)
}

#[test]
fn shorthand_is_one_issuer_and_one_api_with_documented_defaults() {
    let policy = load_value(&valid()).unwrap();
    let [issuer] = &policy.issuers[..] else { panic!("one issuer") };
    assert_eq!((issuer.name.as_str(), issuer.url()), ("default", "http://127.0.0.1:9000"));
    assert_eq!(
        issuer.endpoint,
        Endpoint {
            cluster: "issuer".into(),
            authority: "127.0.0.1:9000".into(),
            path: "/oauth/v2/introspect".into(),
            timeout: Duration::from_millis(3000),
            max_in_flight: 64,
        }
    );
    // With project_id, only that project's claim: the generic one holds "the current project's" roles.
    assert_eq!(issuer.extraction.role_claims, ["urn:zitadel:iam:org:project:300000000000000001:roles"]);
    assert!(matches!(issuer.client_auth, ClientAuth::PrivateKeyJwt(_)));
    let [api] = &policy.apis[..] else { panic!("one API") };
    assert_eq!(api.name, "default");
    assert_eq!(api.audiences, ["300000000000000001"]);
    assert_eq!(api.identity_headers.names(), ["x-auth-subject", "x-auth-client-id", "x-auth-roles"]);
    assert_eq!(policy.forwarded_headers, ["x-auth-subject", "x-auth-client-id", "x-auth-roles"]);
    assert!(api.foreign_headers.is_empty());
    assert_eq!(policy.cache.slots, 8192);
    assert_eq!(policy.cache.max_ttl_secs, 300);
    assert_eq!(policy.cache.negative_ttl_secs, 10);
    assert_eq!(policy.rules.unmatched(), None);
    assert_eq!(policy.rules.rules()[3].methods, Some(vec!["GET".to_string()]));
    assert_eq!(
        policy.rules.rules()[2].target,
        Target::Api { api: ApiId(0), access: Access::AnyRole(vec!["read:messages".into()]), dry_run: false }
    );
    assert_eq!(policy.rules.rules()[0].target, Target::Public);
}

#[test]
fn shorthand_without_project_id_reads_the_generic_role_claim() {
    let mut config = valid();
    config.as_object_mut().unwrap().remove("project_id");
    let policy = load_value(&config).unwrap();
    assert_eq!(policy.issuers[0].extraction.role_claims, ["urn:zitadel:iam:org:project:roles"]);
}

#[test]
fn shorthand_unmatched_authenticated_protects_the_one_api() {
    let mut config = valid();
    config["unmatched"] = json!("authenticated");
    let policy = load_value(&config).unwrap();
    assert_eq!(
        policy.rules.unmatched(),
        Some(&Target::Api { api: ApiId(0), access: Access::Authenticated, dry_run: false })
    );
}

#[test]
fn full_form_resolves_every_name() {
    let policy = load_value(&gateway()).unwrap();
    let issuers: Vec<&str> = policy.issuers.iter().map(|i| i.name.as_str()).collect();
    let apis: Vec<&str> = policy.apis.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(issuers, ["main", "partner"]);
    assert_eq!(apis, ["billing", "orders", "partners"]);
    // The partners API tries the partner's issuer first, as written.
    let partners = &policy.apis[2];
    let order: Vec<IssuerId> = partners.issuers.iter().map(|t| t.id).collect();
    assert_eq!(order, [IssuerId(1), IssuerId(0)]);
    assert_eq!(policy.issuers[1].endpoint.timeout, Duration::from_millis(500));
    assert_eq!(policy.issuers[1].endpoint.authority, "partner.example");
    // Each issuer keeps what the APIs that trust it check.
    let main = &policy.issuers[0].extraction;
    assert_eq!(main.audiences, ["200", "100", "300"]);
    assert_eq!(
        main.role_claims,
        [
            "urn:zitadel:iam:org:project:200:roles",
            "urn:zitadel:iam:org:project:100:roles",
            "urn:zitadel:iam:org:project:300:roles"
        ]
    );
    assert_eq!(main.header_claims, ["urn:zitadel:iam:user:resourceowner:id"]);
    let partner = &policy.issuers[1].extraction;
    assert_eq!(partner.audiences, ["300"]);
    assert!(partner.header_claims.is_empty());
    // Role claims are read at their index in each issuer's extraction.
    assert_eq!(partners.issuers[0].role_claims, [0]);
    assert_eq!(partners.issuers[1].role_claims, [2]);
    assert_eq!(policy.apis[1].issuers[0].claim_headers, [("x-auth-org".to_string(), 0)]);
    // Every configured header is forwarded by its API and removed by the others.
    assert_eq!(
        policy.forwarded_headers,
        ["x-auth-subject", "x-auth-client-id", "x-auth-roles", "x-auth-org", "x-partner-user"]
    );
    assert_eq!(policy.apis[0].foreign_headers, ["x-auth-org", "x-partner-user"]);
    assert_eq!(policy.apis[2].foreign_headers, ["x-auth-subject", "x-auth-org"]);
    assert_eq!(policy.rules.rules()[1].target, Target::Public);
    assert_eq!(
        policy.rules.rules()[3].target,
        Target::Api { api: ApiId(2), access: Access::Authenticated, dry_run: false }
    );
}

/// One ZITADEL instance, introspected with each project's own API app.
#[test]
fn issuers_may_share_a_url() {
    let mut config = gateway();
    config["issuers"]["partner"]["issuer"] = json!("https://main.example");
    let policy = load_value(&config).unwrap();
    assert_eq!(policy.issuers[0].url(), policy.issuers[1].url());
    assert_ne!(policy.issuers[0].token_hash("t"), policy.issuers[1].token_hash("t"));
    assert_ne!(policy.issuers[0].fingerprint, policy.issuers[1].fingerprint);
}

#[test]
fn fingerprint_follows_what_an_issuers_verdicts_keep() {
    let fingerprints = |config: &Value| -> Vec<u64> {
        load_value(config).unwrap().issuers.iter().map(|issuer| issuer.fingerprint).collect()
    };
    let base = fingerprints(&gateway());
    assert_ne!(base[0], base[1]);
    let mut audiences = gateway();
    audiences["apis"]["billing"]["audiences"] = json!(["201"]);
    let changed = fingerprints(&audiences);
    // Only main's fingerprint changes: the partner's issuer does not serve billing.
    assert!(changed[0] != base[0] && changed[1] == base[1]);
    let mut claims = gateway();
    claims["apis"]["orders"]["claim_headers"] = json!({"x-auth-org": "urn:zitadel:iam:user:resourceowner:name"});
    assert_ne!(fingerprints(&claims)[0], base[0]);
    let mut slots = gateway();
    slots["cache"] = json!({"slots": 16});
    assert_eq!(fingerprints(&slots), base);
    let mut shorter = gateway();
    shorter["cache"] = json!({"max_ttl_seconds": 10});
    assert!(fingerprints(&shorter).iter().zip(&base).all(|(a, b)| a != b));
    let mut headers = gateway();
    headers["apis"]["partners"]["identity_headers"] = json!({});
    assert_eq!(fingerprints(&headers), base);
    // Another client may get other answers (ZITADEL checks that the client's
    // project is in the token's aud); a new secret for the same client may not.
    let mut client = gateway();
    client["issuers"]["main"]["client_auth"]["client_id"] = json!("other@main");
    assert_ne!(fingerprints(&client)[0], base[0]);
    let mut secret = gateway();
    secret["issuers"]["main"]["client_auth"]["client_secret"] = json!("rotated");
    assert_eq!(fingerprints(&secret), base);
    let mut cluster = gateway();
    cluster["issuers"]["main"]["introspection"]["cluster"] = json!("elsewhere");
    assert_ne!(fingerprints(&cluster)[0], base[0]);
}

#[test]
fn key_may_be_given_as_text_or_from_the_environment() {
    let mut as_text = valid();
    as_text["client_auth"]["key"] = Value::String(key_file().to_string());
    assert!(load_value(&as_text).is_ok());

    let mut from_env = valid();
    from_env["client_auth"] = json!({"method": "private_key_jwt", "key_env": "API_KEY_JSON"});
    let env = |name: &str| (name == "API_KEY_JSON").then(|| key_file().to_string());
    assert!(load(from_env.to_string().as_bytes(), &env).is_ok());
}

#[test]
fn client_secret_basic_is_accepted() {
    let mut config = valid();
    config["client_auth"] =
        json!({"method": "client_secret_basic", "client_id": "api@demo", "client_secret_env": "SECRET"});
    let env = |name: &str| (name == "SECRET").then(|| "s3cret".to_string());
    let parsed = load(config.to_string().as_bytes(), &env).unwrap();
    assert!(matches!(parsed.issuers[0].client_auth, ClientAuth::ClientSecretBasic { .. }));
}

/// Each broken config must fail with an error naming the field.
#[test]
fn invalid_shorthand_configs_name_the_field() {
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
        ("identity_headers.client_id", Box::new(|c| c["identity_headers"] = json!({"client_id": "x-envoy-client"}))),
        ("identity_headers", Box::new(|c| c["identity_headers"] = json!({"roles": "x-auth-subject"}))),
        ("rules", Box::new(|c| c["rules"] = json!([]))),
        ("rules[0].path", Box::new(|c| c["rules"][0] = json!({"access": "public"}))),
        ("rules[0].path", Box::new(|c| c["rules"][0] = json!({"path": "/a", "prefix": "/b", "access": "public"}))),
        ("rules[0].path", Box::new(|c| c["rules"][0]["path"] = json!("public"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/a?b"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api//public"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api/../public"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/%61pi"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/users/%40me"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/caf%C3%A9"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api;v=1"))),
        ("rules[1].prefix", Box::new(|c| c["rules"][1]["prefix"] = json!("/api/./x"))),
        ("rules[0].virtual_host", Box::new(|c| c["rules"][0]["virtual_host"] = json!(""))),
        ("rules[0].route", Box::new(|c| c["rules"][0]["route"] = json!("admin\n"))),
        ("rules[0].route", Box::new(|c| c["rules"][0]["route"] = json!(7))),
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
        match load_value(&config) {
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

/// Each broken full-form configuration fails naming the field.
#[test]
fn invalid_gateway_configs_name_the_field() {
    type Breakage = Box<dyn Fn(&mut Value)>;
    let remove = |c: &mut Value, pointer: &str, member: &str| {
        c.pointer_mut(pointer).unwrap().as_object_mut().unwrap().remove(member);
    };
    let cases: Vec<(&str, Breakage)> = vec![
        ("rules[0].api", Box::new(|c| c["rules"][0]["api"] = json!("shipping"))),
        ("rules[0].api", Box::new(move |c| remove(c, "/rules/0", "api"))),
        ("rules[2].api", Box::new(|c| c["rules"][2]["api"] = json!(null))),
        ("apis.orders.issuers[0]", Box::new(|c| c["apis"]["orders"]["issuers"] = json!(["mian"]))),
        ("apis.orders.issuers", Box::new(|c| c["apis"]["orders"]["issuers"] = json!([]))),
        ("apis.orders.issuers", Box::new(move |c| remove(c, "/apis/orders", "issuers"))),
        ("apis.partners.issuers[1]", Box::new(|c| c["apis"]["partners"]["issuers"] = json!(["main", "main"]))),
        ("apis.orders.audiences", Box::new(|c| c["apis"]["orders"]["audiences"] = json!([]))),
        (
            "apis.orders.audiences",
            Box::new(move |c| {
                remove(c, "/apis/orders", "audiences");
                remove(c, "/apis/orders", "project_id");
            }),
        ),
        (
            "rules[2].roles",
            Box::new(move |c| {
                remove(c, "/apis/billing", "project_id");
            }),
        ),
        ("apis.orders.audiences[0]", Box::new(|c| c["apis"]["orders"]["audiences"] = json!([" "]))),
        ("apis.orders.project_id", Box::new(|c| c["apis"]["orders"]["project_id"] = json!("1 2"))),
        ("apis.orders.role_claims[1]", Box::new(|c| c["apis"]["orders"]["role_claims"] = json!(["a", ""]))),
        (
            "apis.orders.identity_headers.subject",
            Box::new(|c| c["apis"]["orders"]["identity_headers"] = json!({"subject": "Authorization"})),
        ),
        (
            "apis.orders.claim_headers.x-auth-subject",
            Box::new(|c| c["apis"]["orders"]["claim_headers"] = json!({"x-auth-subject": "sub"})),
        ),
        (
            "apis.orders.claim_headers.x_org",
            Box::new(|c| c["apis"]["orders"]["claim_headers"] = json!({"x_org": "org"})),
        ),
        (
            "apis.orders.claim_headers.cookie",
            Box::new(|c| c["apis"]["orders"]["claim_headers"] = json!({"cookie": "org"})),
        ),
        ("apis.orders.claim_headers.x-org", Box::new(|c| c["apis"]["orders"]["claim_headers"] = json!({"x-org": ""}))),
        ("apis.orders.claim_headers.x-org", Box::new(|c| c["apis"]["orders"]["claim_headers"] = json!({"x-org": 7}))),
        (
            "apis.orders.claim_headers",
            Box::new(|c| {
                c["apis"]["orders"]["claim_headers"] =
                    Value::Object((0..33).map(|i| (format!("x-c{i}"), json!("c"))).collect())
            }),
        ),
        ("apis.orders.scopes", Box::new(|c| c["apis"]["orders"]["scopes"] = json!(["x"]))),
        ("apis.Orders", Box::new(|c| c["apis"]["Orders"] = json!({"audiences": ["1"], "issuers": ["main"]}))),
        ("issuers.main.issuer", Box::new(|c| c["issuers"]["main"]["issuer"] = json!("main.example"))),
        ("issuers.main.introspection.cluster", Box::new(|c| c["issuers"]["main"]["introspection"] = json!({}))),
        (
            "issuers.main.introspection.timeout_ms",
            Box::new(|c| c["issuers"]["main"]["introspection"]["timeout_ms"] = json!(0)),
        ),
        (
            "issuers.main.client_auth.client_secret",
            Box::new(|c| {
                c["issuers"]["main"]["client_auth"] = json!({"method": "client_secret_basic", "client_id": "a"})
            }),
        ),
        (
            "issuers.main.client_auth.key_env",
            Box::new(|c| {
                c["issuers"]["main"]["client_auth"] = json!({"method": "private_key_jwt", "key_env": "MISSING"})
            }),
        ),
        ("issuers.main.client_auth", Box::new(move |c| remove(c, "/issuers/main", "client_auth"))),
        ("issuers.a b", Box::new(|c| c["issuers"]["a b"] = c["issuers"]["main"].clone())),
        ("issuers", Box::new(|c| c["issuers"] = json!({}))),
        ("apis", Box::new(|c| c["apis"] = json!({}))),
        ("apis", Box::new(move |c| remove(c, "", "apis"))),
        ("issuers", Box::new(move |c| remove(c, "", "issuers"))),
        ("issuer", Box::new(|c| c["issuer"] = json!("https://main.example"))),
        ("audiences", Box::new(|c| c["audiences"] = json!(["100"]))),
        ("claim_headers", Box::new(|c| c["claim_headers"] = json!({"x-org": "org"}))),
        ("unmatched", Box::new(|c| c["unmatched"] = json!("authenticated"))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!("user@orders.example.com"))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!("127.1"))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!("orders.*.com"))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!(""))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!(["a.example"]))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!("orders.example.com."))),
        ("rules[0].host", Box::new(|c| c["rules"][0]["host"] = json!("[0:0::1]"))),
        ("jwt", Box::new(|c| c["jwt"] = json!({"mode": "local"}))),
        ("resource", Box::new(|c| c["resource"] = json!("https://orders.example.com/"))),
        ("dry_run", Box::new(|c| c["dry_run"] = json!(true))),
        ("apis.orders.resource", Box::new(|c| c["apis"]["orders"]["resource"] = json!("orders.example.com"))),
        (
            "apis.orders.resource",
            Box::new(|c| c["apis"]["orders"]["resource"] = json!("https://orders.example.com/a?b")),
        ),
        (
            "apis.orders.resource",
            Box::new(|c| c["apis"]["orders"]["resource"] = json!("https://elsewhere.example.com/orders")),
        ),
        ("apis.orders.resource_name", Box::new(|c| c["apis"]["orders"]["resource_name"] = json!("Orders"))),
        (
            "apis.orders.scopes_supported",
            Box::new(|c| {
                c["apis"]["orders"]["resource"] = json!("https://orders.example.com/");
                c["apis"]["orders"]["scopes_supported"] = json!(["a b"])
            }),
        ),
        (
            "apis.orders.stale_if_error_seconds",
            Box::new(|c| c["apis"]["orders"]["stale_if_error_seconds"] = json!(86401)),
        ),
        ("apis.orders.cors_preflight", Box::new(|c| c["apis"]["orders"]["cors_preflight"] = json!("maybe"))),
        ("apis.orders.dry_run", Box::new(|c| c["apis"]["orders"]["dry_run"] = json!("yes"))),
        ("rules[1].dry_run", Box::new(|c| c["rules"][1]["dry_run"] = json!(true))),
        (
            "apis.partners.resource",
            Box::new(|c| {
                c["apis"]["orders"]["resource"] = json!("https://a.partners.example.com/");
                c["apis"]["partners"]["resource"] = json!("https://a.partners.example.com:8443/");
                c["rules"][0]["host"] = json!("a.partners.example.com");
            }),
        ),
        ("issuers.main.jwt.mode", Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "jwks"}))),
        ("issuers.main.jwt.mode", Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": true}))),
        ("issuers.main.jwt.jwks_uri", Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"jwks_uri": "/k"}))),
        ("issuers.main.jwt.jwks_path", Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"jwks_path": "/k"}))),
        (
            "issuers.main.jwt.jwks_refresh_seconds",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "introspect", "jwks_refresh_seconds": 60})),
        ),
        (
            "issuers.main.jwt.jwks_path",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_path": "oauth/v2/keys"})),
        ),
        (
            "issuers.main.jwt.jwks_refresh_seconds",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_refresh_seconds": 0})),
        ),
        (
            "issuers.main.jwt.jwks_refresh_seconds",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_refresh_seconds": -5})),
        ),
        (
            "issuers.main.jwt.jwks_min_refresh_seconds",
            Box::new(|c| {
                c["issuers"]["main"]["jwt"] =
                    json!({"mode": "local", "jwks_refresh_seconds": 30, "jwks_min_refresh_seconds": 31})
            }),
        ),
        (
            "issuers.main.jwt.jwks_min_refresh_seconds",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_min_refresh_seconds": 0})),
        ),
        (
            "issuers.main.jwt.jwks_max_stale_seconds",
            Box::new(|c| c["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_max_stale_seconds": 604801})),
        ),
    ];
    for (field, break_it) in cases {
        let mut config = gateway();
        break_it(&mut config);
        match load_value(&config) {
            Ok(_) => panic!("config with broken `{field}` was accepted"),
            Err(err) => {
                assert_eq!(err.field, field, "{err}");
                assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
                assert!(!err.to_string().contains("s3cret"), "{err}");
            }
        }
    }
}

#[test]
fn audiences_default_to_the_project_id() {
    let mut config = gateway();
    config["apis"]["orders"].as_object_mut().unwrap().remove("audiences");
    assert_eq!(load_value(&config).unwrap().apis[1].audiences, ["100"]);
    let mut shorthand = valid();
    shorthand.as_object_mut().unwrap().remove("audiences");
    assert_eq!(load_value(&shorthand).unwrap().apis[0].audiences, ["300000000000000001"]);
    shorthand.as_object_mut().unwrap().remove("project_id");
    assert_eq!(load_value(&shorthand).err().map(|e| e.field), Some("audiences".into()));
}

/// With several APIs, the generic claim holds another project's roles for its tokens.
#[test]
fn a_roles_rule_needs_an_api_that_reads_its_own_projects_roles() {
    let mut config = gateway();
    config["apis"]["billing"].as_object_mut().unwrap().remove("project_id");
    let err = load_value(&config).err().unwrap();
    assert_eq!(err.field, "rules[2].roles");
    assert!(err.problem.contains("\"billing\"") && err.problem.contains("project_id"), "{err}");
    // role_claims named by the API are its own choice.
    config["apis"]["billing"]["role_claims"] = json!(["urn:zitadel:iam:org:project:200:roles"]);
    assert!(load_value(&config).is_ok());
    // The one-issuer form protects one API: its generic claim is its own.
    let mut shorthand = valid();
    shorthand.as_object_mut().unwrap().remove("project_id");
    assert!(load_value(&shorthand).is_ok());
}

#[test]
fn rules_may_name_envoys_virtual_host_and_route_instead_of_a_path() {
    let mut config = gateway();
    config["rules"][0] = json!({"virtual_host": "orders", "route": "health", "access": "public"});
    config["rules"][1] =
        json!({"virtual_host": "orders", "prefix": "/admin", "api": "orders", "access": "authenticated"});
    let policy = load_value(&config).unwrap();
    let rules = policy.rules.rules();
    assert_eq!((rules[0].virtual_host.as_deref(), rules[0].route.as_deref()), (Some("orders"), Some("health")));
    assert_eq!(rules[0].path, PathPattern::Any);
    assert_eq!(rules[1].path, PathPattern::Prefix("/admin".into()));
    assert!(policy.rules.binds_to_routes());
    assert!(!load_value(&gateway()).unwrap().rules.binds_to_routes());
}

#[test]
fn shorthand_rules_may_not_name_an_api() {
    let mut config = valid();
    config["rules"][0]["api"] = json!("default");
    assert_eq!(load_value(&config).err().map(|e| e.field), Some("rules[0].api".into()));
}

#[test]
fn repeated_members_are_refused_naming_the_path() {
    let cases = [
        (r#"{"issuer": "a", "issuer": "b"}"#, "issuer"),
        (r#"{"issuers": {"main": {}, "main": {}}}"#, "issuers.main"),
        (r#"{"rules": [{"path": "/a", "path": "/b"}]}"#, "rules[0].path"),
        (r#"{"client_auth": {"key": {"key": "a", "key": "b"}}}"#, "client_auth.key.key"),
    ];
    for (text, field) in cases {
        let err = load(text.as_bytes(), &no_env).err().unwrap();
        assert_eq!(err.field, field, "{err}");
        assert!(err.problem.contains("twice"), "{err}");
    }
}

/// A key file whose members repeat could hand two readers two keys.
#[test]
fn key_file_from_the_environment_is_read_strictly() {
    let mut config = valid();
    config["client_auth"] = json!({"method": "private_key_jwt", "key_env": "KEY"});
    let doubled = key_file().to_string().replacen('{', "{\"keyId\": \"other\", ", 1);
    let env = |name: &str| (name == "KEY").then(|| doubled.clone());
    let err = load(config.to_string().as_bytes(), &env).err().unwrap();
    assert_eq!(err.field, "client_auth.key_env (KEY)");
}

#[test]
fn not_json_at_all_is_reported() {
    let err = load(b"issuer: x", &no_env).err().unwrap();
    assert_eq!(err.field, "(configuration)");
}

/// A secret put where it does not belong is not repeated in the error (and so not in Envoy's log).
#[test]
fn errors_never_repeat_a_secret() {
    let mut numeric = valid();
    numeric["client_auth"] = json!({"method": "client_secret_basic", "client_id": "a", "client_secret": 987654321});
    let err = load_value(&numeric).err().unwrap();
    assert_eq!(err.field, "client_auth.client_secret");
    assert!(!err.to_string().contains("987654321"), "{err}");

    let mut pasted = valid();
    pasted["client_auth"] =
        json!({"method": "client_secret_basic", "client_id": "a", "client_secret_env": "Zx8kPq2sLm9TvWn4"});
    let err = load_value(&pasted).err().unwrap();
    assert_eq!(err.field, "client_auth.client_secret_env");
    assert!(!err.to_string().contains("Zx8kPq2sLm9TvWn4"), "{err}");

    let mut named = valid();
    named["client_auth"] =
        json!({"method": "client_secret_basic", "client_id": "a", "client_secret_env": "API_SECRET"});
    assert!(load_value(&named).err().unwrap().to_string().contains("API_SECRET is not set"));
}

#[test]
fn local_jwt_mode_compiles_with_defaults_and_one_second_values() {
    let mut config = gateway();
    config["issuers"]["main"]["jwt"] = json!({"mode": "local"});
    let policy = load_value(&config).unwrap();
    let local = policy.issuers[0].jwt.as_ref().expect("local mode");
    assert_eq!(local.jwks_path, "/oauth/v2/keys");
    assert_eq!(
        (local.schedule.refresh_ms, local.schedule.min_refresh_ms, local.schedule.max_stale_ms),
        (300_000, 10_000, 3_600_000)
    );
    assert!(policy.issuers[1].jwt.is_none(), "introspect is the default");
    config["issuers"]["main"]["jwt"] = json!({
        "mode": "local", "jwks_path": "/keys", "jwks_refresh_seconds": 1, "jwks_min_refresh_seconds": 1,
        "jwks_max_stale_seconds": 0
    });
    let policy = load_value(&config).unwrap();
    let local = policy.issuers[0].jwt.as_ref().unwrap();
    assert_eq!(
        (local.jwks_path.as_str(), local.schedule.refresh_ms, local.schedule.min_refresh_ms),
        ("/keys", 1000, 1000)
    );
    // A short refresh lowers the default minimum with it.
    config["issuers"]["main"]["jwt"] = json!({"mode": "local", "jwks_refresh_seconds": 4});
    assert_eq!(load_value(&config).unwrap().issuers[0].jwt.as_ref().unwrap().schedule.min_refresh_ms, 4000);
    // The mode is part of what cached verdicts depend on.
    let introspected = load_value(&gateway()).unwrap().issuers[0].fingerprint;
    assert_ne!(policy.issuers[0].fingerprint, introspected);
}

#[test]
fn api_options_compile_in_both_forms() {
    let mut config = valid();
    config["resource"] = json!("http://127.0.0.1:10000/api/private-scoped");
    config["scopes_supported"] = json!(["openid", "urn:zitadel:iam:org:project:id:300000000000000001:aud"]);
    config["stale_if_error_seconds"] = json!(120);
    config["cors_preflight"] = json!("allow");
    config["dry_run"] = json!(true);
    let policy = load_value(&config).unwrap();
    let api = &policy.apis[0];
    let metadata = api.metadata.as_ref().expect("metadata");
    assert_eq!(metadata.url, "http://127.0.0.1:10000/.well-known/oauth-protected-resource/api/private-scoped");
    assert_eq!((api.stale_if_error_ms, api.cors_preflight), (120_000, true));
    assert!(api.audiences.contains(&"http://127.0.0.1:10000/api/private-scoped".to_string()));
    let dry = policy.rules.rules().iter().filter(|rule| matches!(rule.target, Target::Api { dry_run: true, .. }));
    assert_eq!(dry.count(), 2, "every protected rule of the API");

    let mut config = gateway();
    config["apis"]["orders"]["resource"] = json!("https://orders.example.com/");
    config["rules"][0]["dry_run"] = json!(true);
    let policy = load_value(&config).unwrap();
    assert_eq!(
        policy
            .apis
            .iter()
            .find(|api| api.name == "orders")
            .and_then(|api| api.metadata.as_ref())
            .map(|m| m.url.as_str()),
        Some("https://orders.example.com/.well-known/oauth-protected-resource")
    );
    assert!(matches!(policy.rules.rules()[0].target, Target::Api { dry_run: true, .. }));
    assert!(matches!(policy.rules.rules()[2].target, Target::Api { dry_run: false, .. }));
    assert!(policy.apis.iter().all(|api| api.stale_if_error_ms == 0 && !api.cors_preflight), "off by default");
}

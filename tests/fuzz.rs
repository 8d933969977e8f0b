//! Property-based fuzzing of every parser that sees request, response or
//! configuration data (key sets and JWTs included): nothing may panic, and
//! each has invariants to keep.
//!
//! `cargo test` runs a short pass (FUZZ_CASES, default 2,000 per property).
//! The long run, a million cases each: `scripts/fuzz.sh` (README, Security).

use base64ct::{Base64UrlUnpadded, Encoding};
use oauth_introspection_filter::authority::{canonical_authority, HostPattern, PortReading};
use oauth_introspection_filter::cache::{decode_entry, encode_entry, CacheEntry};
use oauth_introspection_filter::claims::{claim_header_value, Extraction, Identity, Rejection, Verdict};
use oauth_introspection_filter::introspection::{evaluate, IssuerResponse};
use oauth_introspection_filter::json::{parse_strict, path_at, StrictError};
use oauth_introspection_filter::jwks::KeySet;
use oauth_introspection_filter::jwt::{read_header, verify};
use oauth_introspection_filter::load::load;
use oauth_introspection_filter::path::read_path;
use oauth_introspection_filter::request::{header_pairs, Request};
use oauth_introspection_filter::token::{bearer_token, token_shape, TokenHash, TokenShape, MAX_TOKEN_LEN};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::{json, Value};

fn cases() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        prop::sample::select(vec!["true", "active", "/", "read:messages", "300000000000000001", ""])
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_:.]{0,10}", inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn base_config() -> Value {
    json!({
        "issuer": "https://issuer.example",
        "introspection": {"cluster": "issuer", "path": "/oauth/v2/introspect", "timeout_ms": 1000},
        "audiences": ["300000000000000001"],
        "project_id": "300000000000000001",
        "client_auth": {"method": "client_secret_basic", "client_id": "api", "client_secret": "s3cret"},
        "cache": {"slots": 16, "max_ttl_seconds": 60},
        "rules": [
            {"path": "/public", "access": "public"},
            {"prefix": "/api/", "methods": ["GET"], "access": "roles", "roles": ["read:messages"]}
        ],
        "unmatched": "deny"
    })
}

const CONFIG_POINTERS: &[&str] = &[
    "",
    "/issuer",
    "/introspection",
    "/introspection/cluster",
    "/introspection/path",
    "/introspection/timeout_ms",
    "/audiences",
    "/audiences/0",
    "/project_id",
    "/client_auth",
    "/client_auth/method",
    "/client_auth/client_id",
    "/client_auth/client_secret",
    "/cache",
    "/cache/slots",
    "/cache/max_ttl_seconds",
    "/rules",
    "/rules/0",
    "/rules/0/path",
    "/rules/1/prefix",
    "/rules/1/methods",
    "/rules/1/access",
    "/rules/1/roles",
    "/unmatched",
];

/// The full form: two issuers, two APIs, host rules.
fn gateway_config() -> Value {
    let basic = json!({"method": "client_secret_basic", "client_id": "api", "client_secret": "s3cret"});
    json!({
        "issuers": {
            "main": {"issuer": "https://main.example", "introspection": {"cluster": "main"}, "client_auth": basic},
            "partner": {"issuer": "https://partner.example", "introspection": {"cluster": "partner"}, "client_auth": basic}
        },
        "apis": {
            "orders": {"audiences": ["100"], "project_id": "100", "issuers": ["main"],
                       "claim_headers": {"x-auth-org": "urn:zitadel:iam:user:resourceowner:id"}},
            "partners": {"audiences": ["300"], "issuers": ["partner", "main"]}
        },
        "rules": [
            {"host": "orders.example.com", "prefix": "/", "api": "orders", "access": "authenticated"},
            {"host": "*.partners.example.com", "prefix": "/", "api": "partners", "access": "roles", "roles": ["a"]}
        ]
    })
}

const GATEWAY_POINTERS: &[&str] = &[
    "",
    "/issuers",
    "/issuers/main",
    "/issuers/main/issuer",
    "/issuers/partner/introspection",
    "/issuers/partner/client_auth",
    "/apis",
    "/apis/orders",
    "/apis/orders/issuers",
    "/apis/orders/issuers/0",
    "/apis/orders/claim_headers",
    "/apis/orders/claim_headers/x-auth-org",
    "/apis/partners/audiences",
    "/apis/partners/identity_headers",
    "/rules/0",
    "/rules/0/host",
    "/rules/0/api",
    "/rules/1/host",
    "/unmatched",
];

fn expectations() -> Extraction {
    Extraction {
        issuer: "https://issuer.example".into(),
        audiences: vec!["300000000000000001".into()],
        role_claims: vec!["urn:zitadel:iam:org:project:roles".into()],
        header_claims: vec!["username".into(), "urn:zitadel:iam:user:resourceowner:id".into()],
        clock_skew_secs: 10,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Host-like strings built from the pieces host confusion is made of.
fn authority_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "a",
        "API",
        "example",
        "com",
        ".",
        "..",
        ":",
        ":80",
        ":0",
        ":080",
        "@",
        "[",
        "]",
        "::1",
        "0x7f",
        "127",
        "1",
        "0",
        "256",
        "-",
        "_",
        "%2e",
        " ",
        "*",
        ",",
        "\u{e9}",
        "xn--bcher-kva",
    ]);
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// JSON texts with members that repeat now and then.
fn json_text() -> impl Strategy<Value = Vec<u8>> {
    let member = (prop::sample::select(vec!["a", "b", "active", "aud"]), json_value())
        .prop_map(|(name, value)| format!("{}:{}", Value::from(name), value));
    prop::collection::vec(member, 0..5).prop_map(|members| format!("{{{}}}", members.join(",")).into_bytes())
}

/// Path-like strings built from the pieces bypass attempts are made of.
fn path_like() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "//", ".", "..", "a", "api", "public", "%2e", "%2E", "%2f", "%5c", "%00", "%25", "%", "%zz", "%c0%af",
        ";", "?", "#", "\\", "%3b", "~", "%41", "\u{e9}", " ", "\t",
    ]);
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn config_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(err) = load(&bytes, &no_env) {
            prop_assert!(!err.field.is_empty());
        }
    }

    #[test]
    fn config_parser_names_a_field_for_any_mutation(
        pointer in prop::sample::select(CONFIG_POINTERS),
        value in json_value(),
    ) {
        check_mutation(base_config(), pointer, value)?;
    }

    #[test]
    fn gateway_config_parser_names_a_field_for_any_mutation(
        pointer in prop::sample::select(GATEWAY_POINTERS),
        value in json_value(),
    ) {
        check_mutation(gateway_config(), pointer, value)?;
    }

    #[test]
    fn strict_json_agrees_with_serde_json_or_names_a_duplicate(bytes in json_text()) {
        match (parse_strict(&bytes), serde_json::from_slice::<Value>(&bytes)) {
            (Ok(strict), Ok(loose)) => prop_assert_eq!(strict, loose),
            (Err(StrictError::Syntax(_)), Err(_)) => {}
            // serde_json keeps the last duplicate; the strict parser refuses.
            (Err(StrictError::Duplicate { .. }), Ok(_)) => {}
            (strict, loose) => prop_assert!(false, "strict {:?} vs serde_json {:?}", strict, loose.is_ok()),
        }
    }

    #[test]
    fn canonical_authority_is_canonical(raw in authority_like()) {
        if let Ok(authority) = canonical_authority(raw.as_bytes()) {
            let again = match authority.port {
                Some(port) => format!("{}:{port}", authority.host),
                None => authority.host.clone(),
            };
            prop_assert_eq!(canonical_authority(again.as_bytes()), Ok(authority.clone()));
            prop_assert!(!authority.host.contains(['@', ' ', '%', ',']) && !authority.host.ends_with('.'));
            prop_assert_eq!(authority.host.to_ascii_lowercase(), authority.host.clone());
            // A pattern of the canonical host matches it.
            prop_assert!(HostPattern::parse(&again).is_ok_and(|p| p.matches(&authority, PortReading::Counted)));
        }
    }

    #[test]
    fn canonical_authority_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = canonical_authority(&bytes);
        let _ = HostPattern::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_shape_survives_any_token(parts in prop::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5)) {
        let token = parts.join(".");
        if let TokenShape::Jwt { issuer } = token_shape(&token) {
            prop_assert!(!issuer.is_empty());
        }
    }

    #[test]
    fn claim_header_value_is_a_clean_header(value in json_value()) {
        if let Some(text) = claim_header_value(&value) {
            prop_assert!(!text.is_empty() && text.len() <= 4096);
            prop_assert!(!text.chars().any(char::is_control));
            prop_assert_eq!(text.trim(), text.as_str());
        }
    }

    #[test]
    fn introspection_parser_survives_any_body(
        status in prop::option::of(any::<u16>()),
        json_content_type in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
        now in any::<u64>(),
    ) {
        let content_type = json_content_type.then_some("application/json");
        let response = IssuerResponse { status, content_type, body: &body };
        let _ = evaluate(response, &expectations(), now);
    }

    #[test]
    fn introspection_parser_is_valid_only_for_an_active_answer(
        members in prop::collection::vec(
            (prop::sample::select(vec!["active", "exp", "nbf", "iat", "aud", "iss", "sub", "client_id", "scope",
                                       "username", "urn:zitadel:iam:org:project:roles", "token_type"]),
             json_value()),
            0..10),
        now in 0u64..4_000_000_000,
    ) {
        let now_ms = now * 1000;
        let object: serde_json::Map<String, Value> =
            members.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let body = serde_json::to_vec(&Value::Object(object.clone())).unwrap_or_default();
        let response = IssuerResponse { status: Some(200), content_type: Some("application/json"), body: &body };
        if let Ok(Verdict::Valid(identity)) = evaluate(response, &expectations(), now_ms) {
            prop_assert_eq!(object.get("active"), Some(&Value::Bool(true)));
            if let Some(exp) = identity.expires_at {
                prop_assert!(exp > now);
            }
            prop_assert!(identity.audiences.iter().all(|aud| aud == "300000000000000001"));
            prop_assert_eq!(identity.roles.len(), 1);
            prop_assert_eq!(identity.claims.len(), 2);
        }
    }

    #[test]
    fn bearer_parser_accepts_only_b64tokens(header in ".{0,64}", prefix in prop::sample::select(vec!["", "Bearer ", "bearer  ", "BEARER "])) {
        let header = format!("{prefix}{header}");
        if let Ok(token) = bearer_token(Some(&header)) {
            prop_assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
            prop_assert!(header.ends_with(token));
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
        }
    }

    #[test]
    fn bearer_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let header = format!("Bearer {}", String::from_utf8_lossy(&bytes));
        let _ = bearer_token(Some(&header));
    }

    #[test]
    fn path_readings_are_clean(path in path_like()) {
        check_readings(path.as_bytes())?;
    }

    #[test]
    fn path_reader_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut path = b"/".to_vec();
        path.extend_from_slice(&bytes);
        check_readings(&path)?;
        check_readings(&bytes)?;
    }

    #[test]
    fn header_block_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Some(pairs) = header_pairs(&bytes) {
            let request = Request::from_pairs(&pairs);
            prop_assert_eq!(request.names.len(), pairs.len());
        }
    }

    #[test]
    fn header_block_parser_reads_what_the_host_writes(
        pairs in prop::collection::vec(("[a-z:_-]{1,12}", prop::collection::vec(any::<u8>(), 0..20)), 0..8),
    ) {
        let mut block = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in &pairs {
            block.extend_from_slice(&(name.len() as u32).to_le_bytes());
            block.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in &pairs {
            block.extend_from_slice(name.as_bytes());
            block.push(0);
            block.extend_from_slice(value);
            block.push(0);
        }
        let parsed = header_pairs(&block).unwrap_or_default();
        prop_assert_eq!(parsed.len(), pairs.len());
        for ((name, value), (want_name, want_value)) in parsed.iter().zip(&pairs) {
            prop_assert_eq!(*name, want_name.as_bytes());
            prop_assert_eq!(*value, want_value.as_slice());
        }
    }

    #[test]
    fn key_set_parser_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = KeySet::parse(&bytes);
    }

    /// Any JSON, and JWK-like members in any combination: no panic, and
    /// never a usable key from a document that holds no RSA modulus.
    #[test]
    fn key_set_parser_takes_only_rsa_keys_with_a_kid(
        keys in prop::collection::vec(prop::collection::vec((
            prop::sample::select(vec!["kty", "kid", "alg", "use", "key_ops", "n", "e", "crv", "x", "d"]),
            prop_oneof![
                json_value(),
                prop::sample::select(vec!["RSA", "EC", "RS256", "sig", "AQAB", "k1", "P-256"]).prop_map(Value::from),
            ],
        ), 0..6), 0..4),
    ) {
        let keys: Vec<Value> =
            keys.into_iter().map(|members| Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())).collect();
        if let Ok(set) = KeySet::parse(json!({"keys": keys}).to_string().as_bytes()) {
            // A modulus of 2048+ bits cannot come from these short strings.
            prop_assert!(set.is_empty());
        }
    }

    #[test]
    fn jwt_header_reader_takes_only_rs256_with_a_kid(header in json_value(), payload in json_value(), signature in "[A-Za-z0-9_-]{0,40}") {
        let part = |value: &Value| Base64UrlUnpadded::encode_string(value.to_string().as_bytes());
        let token = format!("{}.{}.{signature}", part(&header), part(&payload));
        if let Ok(read) = read_header(&token) {
            prop_assert_eq!(header.get("alg"), Some(&json!("RS256")));
            prop_assert_eq!(header.get("kid"), Some(&json!(read.kid)));
            prop_assert!(header.get("crit").is_none());
        }
    }

    #[test]
    fn jwt_reader_survives_any_token(parts in prop::collection::vec("[A-Za-z0-9_=.-]{0,60}", 0..5)) {
        let token = parts.join(".");
        if let Ok(header) = read_header(&token) {
            let set = KeySet::parse(br#"{"keys": []}"#).unwrap();
            prop_assert!(set.get(&header.kid).is_none());
        }
        // No key verifies a random signature: any verdict must be a refusal.
        let key = jwt_simple::algorithms::RS256PublicKey::from_components(&[0xc5; 256], &[1, 0, 1]).unwrap();
        if let Ok(header) = read_header(&token) {
            let verdict = verify(&token, &header, &key, &expectations(), 1_800_000_000_000);
            prop_assert!(matches!(verdict, Verdict::Invalid(_)));
        }
    }

    /// Where serde_json places an error, `path_at` names some path, never panics.
    #[test]
    fn path_finder_survives_any_place(value in json_value(), line in 0usize..6, column in 0usize..80) {
        let text = serde_json::to_string_pretty(&value).unwrap();
        let _ = path_at(text.as_bytes(), line, column);
    }

    #[test]
    fn cache_decoder_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        let _ = decode_entry(&bytes);
    }

    #[test]
    fn cache_decoder_round_trips_and_survives_corruption(
        subject in ".{0,40}",
        client_id in ".{0,20}",
        audiences in prop::collection::vec(".{0,12}", 0..3),
        roles in prop::collection::vec(prop::collection::vec("[a-z:]{1,12}", 0..5), 0..3),
        claims in prop::collection::vec(prop::option::of(".{0,12}"), 0..3),
        expires_at in prop::option::of(1u64..u64::MAX),
        rejection in prop::option::of(prop::sample::select(vec![
            Rejection::Inactive, Rejection::Expired, Rejection::NotYetValid, Rejection::WrongIssuer,
            Rejection::NotBearerAccessToken, Rejection::SenderConstrained,
        ])),
        valid_until_ms in any::<u64>(),
        fingerprint in any::<u64>(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let entry = CacheEntry {
            fingerprint,
            token: TokenHash::of("https://issuer.example", &client_id),
            valid_until_ms,
            verdict: match rejection {
                Some(rejection) => Verdict::Invalid(rejection),
                None => Verdict::Valid(Identity { subject, client_id, audiences, roles, claims, expires_at }),
            },
        };
        let bytes = encode_entry(&entry).unwrap_or_default();
        prop_assert_eq!(decode_entry(&bytes), Some(entry));
        let _ = decode_entry(bytes.get(..cut.index(bytes.len())).unwrap_or_default());
        let mut flipped = bytes.clone();
        if let Some(byte) = flipped.get_mut(flip.index(bytes.len())) {
            *byte ^= 1 << bit;
        }
        let _ = decode_entry(&flipped);
    }
}

/// `config` with the member at `pointer` replaced by `value` either loads or
/// fails naming a field, and never with the client secret in its message.
fn check_mutation(mut config: Value, pointer: &str, value: Value) -> Result<(), TestCaseError> {
    if let Some(slot) = config.pointer_mut(pointer) {
        *slot = value;
    }
    let text = serde_json::to_vec(&config).unwrap_or_default();
    if let Err(err) = load(&text, &no_env) {
        prop_assert!(!err.field.is_empty());
        prop_assert!(!err.to_string().contains("s3cret"), "{}", err);
    }
    Ok(())
}

/// Every reading of a path starts with `/`, has no `.` or `..` segment and
/// nothing a path may not carry; there are one to eight; the first, the path as
/// sent, is read again as itself.
fn check_readings(raw: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(readings) = read_path(raw) {
        let spellings = readings.spellings();
        prop_assert!((1..=8).contains(&spellings.len()));
        for spelling in spellings {
            prop_assert!(spelling.starts_with('/'));
            for segment in spelling.split('/').skip(1) {
                prop_assert!(!matches!(segment, "." | ".."), "{:?} -> {:?}", String::from_utf8_lossy(raw), spelling);
            }
            prop_assert!(!spelling.contains(['?', '#', '\\']));
        }
        let first = &spellings[0];
        prop_assert_eq!(read_path(first.as_bytes()).map(|again| again.spellings()[0].clone()), Ok(first.clone()));
    }
    Ok(())
}

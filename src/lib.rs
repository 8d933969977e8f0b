//! An Envoy proxy-wasm HTTP filter that protects APIs with OAuth 2.0 token
//! introspection (RFC 7662), built for ZITADEL and any RFC 7662 issuer.
//!
//! The request path, in reading order: `load` reads the JSON (`config`) and
//! compiles it (`compile`) into the `policy`; per request, `decision` reads the request (`authority`,
//! `path`, `rules`, `token`) and checks verdicts against the API; `engine`
//! finds those verdicts in the `cache`, in a call under way (`coalesce`) or
//! from the issuer (`introspection`, `client_auth`), and answers (`response`).
//! Everything but `filter`, the proxy-wasm glue, is plain Rust behind the
//! `host::Host` trait and runs in host tests.

pub mod authority;
pub mod cache;
pub mod claims;
pub mod client_auth;
pub mod coalesce;
pub mod compile;
pub mod config;
pub mod decision;
pub mod engine;
pub mod filter;
pub mod headers;
pub mod host;
pub mod ids;
pub mod introspection;
pub mod json;
pub mod jwks;
pub mod jwt;
pub mod keyring;
pub mod load;
pub mod metadata;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod probe;
pub mod record;
pub mod request;
pub mod response;
pub mod rules;
pub mod token;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::FilterRoot::default())
    });
}}

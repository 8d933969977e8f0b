//! An Envoy proxy-wasm HTTP filter that protects an API with OAuth 2.0
//! token introspection (RFC 7662), built for ZITADEL and any RFC 7662 issuer.
//!
//! Every decision lives in plain Rust modules that host tests cover;
//! `filter` is the thin layer that talks to the proxy-wasm host.

pub mod authority;
pub mod cache;
pub mod client_auth;
pub mod coalesce;
pub mod config;
pub mod filter;
pub mod introspection;
pub mod json;
pub mod path;
pub mod response;
pub mod rules;
pub mod token;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(filter::FilterRoot::default())
    });
}}

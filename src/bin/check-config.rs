//! Checks a plugin configuration the way the filter does when it loads, without Envoy, and with
//! `--probe` checks the filter's credentials at each issuer:
//!
//!     target/release/check-config [--probe] [--url URL] [--ca-file PEM] FILE
//!
//! FILE (`-`: standard input) is the configuration in JSON or YAML, a manifest holding an Istio
//! `WasmPlugin` (its `spec.pluginConfig`) or an Envoy Gateway `EnvoyExtensionPolicy` (each of its
//! `spec.wasm[].config`), every one of a multi-document file, or an Envoy configuration (static
//! or ECDS: every Wasm plugin's `configuration`).
//! Environment variables the configuration names (`key_env`, `client_secret_env`) are read from
//! this process's environment, as the filter reads them from Envoy's. Prints what the
//! configuration compiles to (issuers, APIs, each rule), or the error the load would fail with.
//!
//! `--probe` signs an assertion with the configured key (or sends the client secret) and
//! introspects a random token at each issuer (its URL's scheme, `introspection.authority` and
//! `introspection.path`; `--url` replaces scheme and authority, `--ca-file` trusts a private
//! CA): "credentials accepted" when the issuer answers about the token, else its exact error.
//!
//! Exit status: 0 when the configuration loads (and every probe's credentials were accepted),
//! 1 when not, 2 for a usage or reading error. Built by scripts/setup.sh (feature `cli`).

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oauth_introspection_filter::introspection::IssuerResponse;
use oauth_introspection_filter::load::load;
use oauth_introspection_filter::policy::{Issuer, Policy};
use oauth_introspection_filter::probe::{self, Outcome};
use oauth_introspection_filter::rules::{Access, PathPattern, Rule, Target};
use serde_json::Value;

const USAGE: &str = "usage: check-config [--probe] [--url URL] [--ca-file PEM] FILE
  FILE           the plugin configuration (JSON or YAML), manifests with an Istio WasmPlugin (its
                 spec.pluginConfig) or an Envoy Gateway EnvoyExtensionPolicy (its wasm configs), or an
                 Envoy configuration (its Wasm plugins' configuration); - reads standard input
  --probe        introspect a random token at each issuer with the configured credentials
  --url URL      scheme and authority to probe at, instead of the issuer's (e.g. a port-forward)
  --ca-file PEM  trust this CA too when probing over HTTPS";

struct Options {
    file: String,
    probe: bool,
    url: Option<String>,
    ca_file: Option<String>,
}

fn main() -> ExitCode {
    let options = match options(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("check-config: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let configurations = match read(&options.file) {
        Ok(configurations) => configurations,
        Err(problem) => {
            eprintln!("check-config: {problem}");
            return ExitCode::from(2);
        }
    };
    let mut ok = true;
    for (name, json) in configurations {
        if let Some(name) = &name {
            println!("== {name}");
        }
        match load(&json, &|variable| std::env::var(variable).ok()) {
            Ok(policy) => {
                describe(&policy);
                if options.probe {
                    ok &= probe_all(&policy, &options);
                }
            }
            Err(err) => {
                eprintln!("{err}");
                ok = false;
            }
        }
    }
    if ok {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn options(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options { file: String::new(), probe: false, url: None, ca_file: None };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--probe" => options.probe = true,
            "--url" => options.url = Some(args.next().ok_or("--url needs a value")?),
            "--ca-file" => options.ca_file = Some(args.next().ok_or("--ca-file needs a value")?),
            "-h" | "--help" => return Err("help".into()),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ if !options.file.is_empty() => return Err("give one FILE".into()),
            _ => options.file = arg,
        }
    }
    if options.file.is_empty() {
        return Err("give a FILE".into());
    }
    Ok(options)
}

/// A configuration as JSON, named when it came from a WasmPlugin.
type Found = (Option<String>, Vec<u8>);

/// The configurations in the file, as JSON: the file itself when it is JSON (read as the
/// filter reads it, duplicate members refused), else each YAML document that is a plugin
/// configuration, a WasmPlugin (named by its metadata.name) or an Envoy configuration (each
/// Wasm plugin's configuration text, named by the plugin's name).
fn read(path: &str) -> Result<Vec<Found>, String> {
    let mut text = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut text).map(|_| ())
    } else {
        std::fs::read(path).map(|bytes| text = bytes)
    };
    read.map_err(|err| format!("cannot read {path}: {err}"))?;
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(vec![(None, text)]);
    }
    let text = String::from_utf8(text).map_err(|_| format!("{path} is neither JSON nor YAML (not UTF-8)"))?;
    let mut found = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).map_err(|err| format!("{path}: {err}"))?;
        match value.get("kind").and_then(Value::as_str) {
            Some("WasmPlugin") => {
                let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(unnamed)");
                let config =
                    value.pointer("/spec/pluginConfig").ok_or(format!("WasmPlugin {name} has no spec.pluginConfig"))?;
                found.push((Some(format!("WasmPlugin {name}")), config.to_string().into_bytes()));
            }
            Some("EnvoyExtensionPolicy") => {
                let policy = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("(unnamed)");
                for wasm in value.pointer("/spec/wasm").and_then(Value::as_array).into_iter().flatten() {
                    let name = wasm.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
                    let config =
                        wasm.get("config").ok_or(format!("EnvoyExtensionPolicy {policy}: {name} has no config"))?;
                    found.push((
                        Some(format!("EnvoyExtensionPolicy {policy} wasm {name}")),
                        config.to_string().into_bytes(),
                    ));
                }
            }
            Some(_) => {}
            None if value.get("static_resources").is_some() || value.get("resources").is_some() => {
                envoy_plugins(&value, &mut found);
            }
            None if value.is_object() => found.push((None, value.to_string().into_bytes())),
            None => {}
        }
    }
    if found.is_empty() {
        return Err(format!(
            "{path} holds no plugin configuration, WasmPlugin, EnvoyExtensionPolicy or Envoy Wasm plugin"
        ));
    }
    Ok(found)
}

/// Every Wasm plugin configuration (an object with `vm_config` and `configuration.value`) in an
/// Envoy configuration, static or an ECDS response.
fn envoy_plugins(value: &Value, found: &mut Vec<Found>) {
    match value {
        Value::Object(object) => {
            let text = object.get("configuration").and_then(|c| c.get("value")).and_then(Value::as_str);
            if let (Some(_), Some(text)) = (object.get("vm_config"), text) {
                let name = object.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
                found.push((Some(format!("Envoy Wasm plugin {name}")), text.as_bytes().to_vec()));
            }
            object.values().for_each(|v| envoy_plugins(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| envoy_plugins(v, found)),
        _ => {}
    }
}

fn describe(policy: &Policy) {
    for issuer in &policy.issuers {
        let endpoint = &issuer.endpoint;
        println!(
            "issuer {}: {} via cluster {} ({}{}), client {} ({})",
            issuer.name,
            issuer.url(),
            endpoint.cluster,
            endpoint.authority,
            endpoint.path,
            issuer.client_auth.client_id(),
            issuer.client_auth.method()
        );
        if let Some(local) = &issuer.jwt {
            let schedule = &local.schedule;
            println!(
                "issuer {}: JWTs verified locally with the keys at {}{} (refreshed every {} s, at most every {} s; \
                 kept {} s past a failed refresh); other tokens introspected",
                issuer.name,
                endpoint.authority,
                local.jwks_path,
                schedule.refresh_ms / 1000,
                schedule.min_refresh_ms / 1000,
                schedule.max_stale_ms / 1000
            );
        }
    }
    for api in &policy.apis {
        let issuers: Vec<&str> =
            api.issuers.iter().filter_map(|trusted| policy.issuer(trusted.id)).map(|i| i.name.as_str()).collect();
        let mut headers = api.identity_headers.names();
        for (name, _) in api.issuers.iter().flat_map(|trusted| &trusted.claim_headers) {
            if !headers.contains(&name.as_str()) {
                headers.push(name);
            }
        }
        println!(
            "api {}: audiences {}; issuers {}; forwards {}",
            api.name,
            api.audiences.join(", "),
            issuers.join(", "),
            headers.join(", ")
        );
        if let Some(metadata) = &api.metadata {
            println!("api {}: resource {}, its metadata served at {}", api.name, metadata.resource, metadata.url);
        }
        if api.stale_if_error_ms > 0 {
            let seconds = api.stale_if_error_ms / 1000;
            println!("api {}: while an issuer is down, admits on a verdict ended up to {seconds} s ago", api.name);
        }
        if api.cors_preflight {
            println!("api {}: CORS preflights pass without a token", api.name);
        }
    }
    for (i, rule) in policy.rules.rules().iter().enumerate() {
        println!("rule {}: {} -> {}", i + 1, matcher(rule), target(policy, Some(&rule.target)));
    }
    println!("unmatched -> {}", target(policy, policy.rules.unmatched()));
}

fn matcher(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &rule.virtual_host {
        parts.push(format!("virtual host {name}"));
    }
    if let Some(name) = &rule.route {
        parts.push(format!("route {name}"));
    }
    parts.push(rule.host.as_ref().map_or("any host".into(), |host| format!("host {host}")));
    parts.push(match &rule.path {
        PathPattern::Any => "any path".into(),
        PathPattern::Exact(path) => format!("path {path}"),
        PathPattern::Prefix(prefix) => format!("prefix {prefix}"),
    });
    parts.push(rule.methods.as_ref().map_or("any method".into(), |methods| methods.join("|")));
    parts.join(", ")
}

fn target(policy: &Policy, target: Option<&Target>) -> String {
    match target {
        None => "deny".into(),
        Some(Target::Public) => "public".into(),
        Some(Target::Api { api, access, dry_run }) => {
            let name = policy.api(*api).map_or("?", |api| api.name.as_str());
            let dry_run = if *dry_run { " (dry run: denials counted and logged, not enforced)" } else { "" };
            match access {
                Access::Authenticated => format!("api {name}, any valid token{dry_run}"),
                Access::AnyRole(roles) => format!("api {name}, a role of {}{dry_run}", roles.join(", ")),
            }
        }
    }
}

fn probe_all(policy: &Policy, options: &Options) -> bool {
    let agent = match agent(options.ca_file.as_deref()) {
        Ok(agent) => agent,
        Err(problem) => {
            eprintln!("check-config: {problem}");
            return false;
        }
    };
    let mut ok = true;
    for issuer in &policy.issuers {
        let outcome = probe_one(&agent, policy, issuer, options.url.as_deref());
        println!("probe issuer {}: {outcome}", issuer.name);
        ok &= outcome == Outcome::Accepted;
    }
    ok
}

fn agent(ca_file: Option<&str>) -> Result<ureq::Agent, String> {
    let mut config =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|err| format!("cannot read {path}: {err}"))?;
        let certificates = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => Some(certificate),
                _ => None,
            })
            .collect::<Vec<_>>();
        if certificates.is_empty() {
            return Err(format!("{path} holds no certificate"));
        }
        let roots = ureq::tls::RootCerts::new_with_certs(&certificates);
        config = config.tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build());
    }
    Ok(config.build().into())
}

fn probe_one(agent: &ureq::Agent, policy: &Policy, issuer: &Issuer, url: Option<&str>) -> Outcome {
    let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
        return Outcome::Failed("the clock is unusable".into());
    };
    let request = match probe::request(issuer, since_epoch.as_secs()) {
        Ok(request) => request,
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let origin = match url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let scheme = issuer.url().split("://").next().unwrap_or("https");
            format!("{scheme}://{}", issuer.endpoint.authority)
        }
    };
    let target = format!("{origin}{}", issuer.endpoint.path);
    let mut call = agent.post(&target);
    for (name, value) in request.headers.iter().filter(|(name, _)| !name.starts_with(':')) {
        call = call.header(*name, value);
    }
    let mut response = match call.send(request.body.as_str()) {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(format!("could not reach {target}: {err}")),
    };
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let limit = u64::try_from(policy.max_response_bytes).unwrap_or(u64::MAX);
    let body = match response.body_mut().with_config().limit(limit).read_to_vec() {
        Ok(body) => body,
        Err(err) => return Outcome::Failed(format!("reading the answer of {target}: {err}")),
    };
    let now_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
    probe::outcome(
        issuer,
        IssuerResponse { status: Some(status), content_type: content_type.as_deref(), body: &body },
        now_ms,
    )
}

//! Checks a plugin configuration the way the filter does when it loads, without Envoy:
//!
//!     cargo run --bin check-config -- FILE      (JSON; `-` reads standard input)
//!
//! Environment variables the configuration names (`key_env`, `client_secret_env`) are read
//! from this process's environment, as the filter reads them from Envoy's. Prints what the
//! configuration compiles to, or the error the load would fail with (exit status 1).

use std::io::Read;
use std::process::ExitCode;

use oauth_introspection_filter::load::load;

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: check-config FILE   (a plugin configuration in JSON; - for standard input)");
        return ExitCode::from(2);
    };
    let mut text = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut text).map(|_| ())
    } else {
        std::fs::read(&path).map(|bytes| text = bytes)
    };
    if let Err(err) = read {
        eprintln!("check-config: cannot read {path}: {err}");
        return ExitCode::from(2);
    }
    match load(&text, &|name| std::env::var(name).ok()) {
        Ok(policy) => {
            for issuer in &policy.issuers {
                println!(
                    "issuer {}: {} via cluster {} ({}), client {}",
                    issuer.name,
                    issuer.url(),
                    issuer.endpoint.cluster,
                    issuer.endpoint.path,
                    issuer.client_auth.client_id()
                );
            }
            for api in &policy.apis {
                let issuers: Vec<&str> = api
                    .issuers
                    .iter()
                    .filter_map(|trusted| policy.issuer(trusted.id).map(|issuer| issuer.name.as_str()))
                    .collect();
                println!("api {}: audiences {:?}, issuers {:?}", api.name, api.audiences, issuers);
            }
            println!("{} rules; forwarded headers {:?}", policy.rules.rules().len(), policy.forwarded_headers);
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

//! The one way in to a configuration: its JSON read into its shape
//! (`config`), then compiled into the policy the request path reads
//! (`compile`). Neither of those two knows of the other's caller.

use crate::config::{self, ConfigError, EnvLookup};
use crate::policy::Policy;

/// Reads, checks and compiles a plugin configuration. `env` reads the
/// environment variables it names (`key_env`, `client_secret_env`).
pub fn load(json: &[u8], env: EnvLookup<'_>) -> Result<Policy, ConfigError> {
    crate::compile::compile(config::read(json)?, env)
}

//! The indices that name an issuer and an API in the compiled policy: kept
//! apart so that the modules the policy is built from (rules, say) can name
//! them without depending on the policy itself.

/// An issuer's place in `Policy::issuers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerId(pub usize);

/// An API's place in `Policy::apis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiId(pub usize);

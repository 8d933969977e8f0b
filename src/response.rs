//! The local replies the filter sends instead of forwarding a request:
//! RFC 6750 challenges with short JSON bodies.

use serde_json::json;

use crate::authority::HostError;
use crate::claims::Rejection;
use crate::metadata::{MetadataMethod, ResourceMetadata};
use crate::path::PathError;

/// Why a request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No `Authorization` header on a protected route.
    MissingToken,
    /// An `Authorization` header without a well-formed bearer token.
    MalformedToken,
    /// The issuer's verdict: the token is not valid for this API.
    InvalidToken(Rejection),
    /// Valid token, but none of the roles the route requires.
    InsufficientRole(Vec<String>),
    /// The path is malformed or ambiguous; refused before any rule is consulted.
    BadPath(PathError),
    /// The host (`:authority`) is malformed or ambiguous; refused likewise.
    BadHost(HostError),
    /// No rule matches the request and unmatched requests are denied.
    NoRule,
    /// The token's validity could not be established (issuer down, slow,
    /// erroring, or the filter's own credentials rejected).
    IssuerUnavailable,
    /// `introspection.max_in_flight` calls are under way; no more are started.
    Overloaded,
}

/// A ready local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Denial {
    /// The metric suffix, also used in debug logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::MissingToken => "missing_token",
            Denial::MalformedToken => "malformed_token",
            Denial::InvalidToken(_) => "invalid_token",
            Denial::InsufficientRole(_) => "insufficient_role",
            Denial::BadPath(_) => "bad_path",
            Denial::BadHost(_) => "bad_host",
            Denial::NoRule => "no_rule",
            Denial::IssuerUnavailable => "issuer_unavailable",
            Denial::Overloaded => "overloaded",
        }
    }

    pub fn reply(&self) -> Reply {
        match self {
            // The body is what ZITADEL's Go guide answers: a JSON string.
            Denial::MissingToken => reply(401, Some("Bearer".to_string()), "\"auth header missing\"".to_string()),
            Denial::MalformedToken => invalid_token("malformed bearer token"),
            Denial::InvalidToken(rejection) => invalid_token(rejection.description()),
            Denial::InsufficientRole(roles) => {
                // Role names are validated at load time to be RFC 6750 scope tokens,
                // so they need no escaping inside the quoted string.
                let scope = roles.join(" ");
                reply(
                    403,
                    Some(format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")),
                    json!({
                        "error": "insufficient_scope",
                        "error_description": "the token lacks a role this route requires",
                        "scope": scope,
                    })
                    .to_string(),
                )
            }
            Denial::BadPath(err) => invalid_request(&err.to_string()),
            Denial::BadHost(err) => invalid_request(&err.to_string()),
            Denial::NoRule => reply(
                403,
                None,
                json!({"error": "access_denied", "error_description": "no rule allows this request"}).to_string(),
            ),
            Denial::Overloaded => reply(
                503,
                None,
                json!({
                    "error": "temporarily_unavailable",
                    "error_description": "too many token checks under way, try again later",
                })
                .to_string(),
            ),
            Denial::IssuerUnavailable => reply(
                503,
                None,
                json!({
                    "error": "temporarily_unavailable",
                    "error_description": "the token could not be verified, try again later",
                })
                .to_string(),
            ),
        }
    }
}

impl Reply {
    /// Points the challenge of a 401 or 403 at the API's RFC 9728 metadata
    /// (`resource_metadata`, RFC 9728 section 5.1); other replies are unchanged.
    /// The URL comes from the configuration (checked to need no escaping).
    pub fn with_resource_metadata(mut self, url: &str) -> Reply {
        if let Some((_, challenge)) = self.headers.iter_mut().find(|(name, _)| *name == "www-authenticate") {
            let separator = if challenge == "Bearer" { " " } else { ", " };
            challenge.push_str(&format!("{separator}resource_metadata=\"{url}\""));
        }
        self
    }
}

/// The answer to a request for an API's RFC 9728 metadata: the document to
/// `GET` (headers only to `HEAD`), a CORS preflight's answer to `OPTIONS`,
/// 405 otherwise. Public, so readable from any origin.
pub fn metadata_reply(metadata: &ResourceMetadata, method: MetadataMethod) -> Reply {
    let cors = ("access-control-allow-origin", "*".to_string());
    let allow = "GET, HEAD, OPTIONS".to_string();
    match method {
        MetadataMethod::Get | MetadataMethod::Head => Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/json".to_string()),
                ("cache-control", "max-age=300".to_string()),
                cors,
            ],
            body: if method == MetadataMethod::Get { metadata.document.clone() } else { String::new() },
        },
        MetadataMethod::Options => Reply {
            status: 204,
            headers: vec![
                cors,
                ("access-control-allow-methods", allow),
                ("access-control-allow-headers", "*".to_string()),
                ("access-control-max-age", "86400".to_string()),
            ],
            body: String::new(),
        },
        MetadataMethod::Other => {
            let mut reply = reply(
                405,
                None,
                json!({"error": "invalid_request", "error_description": "the metadata answers GET, HEAD and OPTIONS"})
                    .to_string(),
            );
            reply.headers.push(("allow", allow));
            reply
        }
    }
}

fn invalid_request(description: &str) -> Reply {
    reply(400, None, json!({"error": "invalid_request", "error_description": description}).to_string())
}

fn invalid_token(description: &str) -> Reply {
    reply(
        401,
        Some(format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")),
        json!({"error": "invalid_token", "error_description": description}).to_string(),
    )
}

fn reply(status: u32, challenge: Option<String>, body: String) -> Reply {
    let mut headers = vec![("content-type", "application/json".to_string()), ("cache-control", "no-store".to_string())];
    if let Some(challenge) = challenge {
        headers.push(("www-authenticate", challenge));
    }
    Reply { status, headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn missing_token_matches_zitadels_go_guide() {
        let reply = Denial::MissingToken.reply();
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body, "\"auth header missing\"");
        assert_eq!(header(&reply, "content-type"), Some("application/json"));
        assert_eq!(header(&reply, "www-authenticate"), Some("Bearer"));
    }

    #[test]
    fn invalid_token_is_an_rfc6750_challenge() {
        let reply = Denial::InvalidToken(Rejection::Inactive).reply();
        assert_eq!(reply.status, 401);
        assert_eq!(
            header(&reply, "www-authenticate"),
            Some("Bearer error=\"invalid_token\", error_description=\"token is not active\"")
        );
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }

    #[test]
    fn missing_role_is_403_insufficient_scope() {
        let reply = Denial::InsufficientRole(vec!["read:messages".into(), "admin".into()]).reply();
        assert_eq!(reply.status, 403);
        assert_eq!(
            header(&reply, "www-authenticate"),
            Some("Bearer error=\"insufficient_scope\", scope=\"read:messages admin\"")
        );
    }

    #[test]
    fn issuer_trouble_is_503_and_no_rule_is_403() {
        let reply = Denial::IssuerUnavailable.reply();
        assert_eq!(reply.status, 503);
        assert_eq!(header(&reply, "www-authenticate"), None);
        assert!(reply.body.contains("temporarily_unavailable"));
        assert_eq!(Denial::NoRule.reply().status, 403);
    }

    #[test]
    fn bad_path_is_400_invalid_request() {
        let reply = Denial::BadPath(PathError::AmbiguousEscape).reply();
        assert_eq!(reply.status, 400);
        assert_eq!(header(&reply, "www-authenticate"), None);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_description"], "path has an encoded slash, backslash or NUL, or a double encoding");
    }

    #[test]
    fn challenges_point_at_the_metadata() {
        let url = "https://api.example.com/.well-known/oauth-protected-resource/mcp";
        let missing = Denial::MissingToken.reply().with_resource_metadata(url);
        assert_eq!(header(&missing, "www-authenticate"), Some(format!("Bearer resource_metadata=\"{url}\"").as_str()));
        let invalid = Denial::InvalidToken(Rejection::Inactive).reply().with_resource_metadata(url);
        assert_eq!(
            header(&invalid, "www-authenticate"),
            Some(
                format!("Bearer error=\"invalid_token\", error_description=\"token is not active\", resource_metadata=\"{url}\"")
                    .as_str()
            )
        );
        let role = Denial::InsufficientRole(vec!["tools:call".into()]).reply().with_resource_metadata(url);
        assert_eq!(
            header(&role, "www-authenticate"),
            Some(
                format!("Bearer error=\"insufficient_scope\", scope=\"tools:call\", resource_metadata=\"{url}\"")
                    .as_str()
            )
        );
        let unavailable = Denial::IssuerUnavailable.reply().with_resource_metadata(url);
        assert_eq!(unavailable, Denial::IssuerUnavailable.reply());
    }

    #[test]
    fn bad_host_is_400_invalid_request() {
        let reply = Denial::BadHost(HostError::Userinfo).reply();
        assert_eq!(reply.status, 400);
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["error_description"], "host has user information");
    }
}

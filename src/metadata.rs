//! OAuth 2.0 Protected Resource Metadata (RFC 9728) for an API that names
//! its `resource`: the document the filter serves at
//! `/.well-known/oauth-protected-resource` + the resource's path, and the
//! `resource_metadata` parameter of its challenges, so that a client (an MCP
//! client, say) finds the API's issuers by itself.
//!
//! Everything is built from the configuration when it loads, never from a
//! request: a metadata URL taken from the Host header would let anyone who
//! can reach the filter under another name send clients to their own
//! metadata, and so to their own authorization server.

use serde_json::{json, Map, Value};

use crate::authority::{canonical_authority, Authority};
use crate::path::read_path;
use crate::rules::is_role_name;

/// The well-known path prefix (RFC 9728 section 3).
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// How a request for the metadata asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMethod {
    Get,
    Head,
    /// `OPTIONS`: a browser's CORS preflight.
    Options,
    /// Any other method: 405.
    Other,
}

/// An API's metadata, ready to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceMetadata {
    /// The API's canonical URL, as configured: the document's `resource`.
    pub resource: String,
    /// Where the document is: for `WWW-Authenticate: Bearer resource_metadata="…"`.
    pub url: String,
    /// The resource's host (canonical) and port, as written.
    pub authority: Authority,
    /// The port, the scheme's default when none is written.
    pub port: u16,
    /// The resource's path, `/` when it has none.
    pub resource_path: String,
    /// The path the document is served at: the well-known prefix, then the
    /// resource's path unless it is `/`.
    pub path: String,
    /// The JSON document.
    pub document: String,
}

/// What an API's configuration says about its metadata.
pub struct MetadataFields<'a> {
    pub resource: &'a str,
    pub resource_name: Option<&'a str>,
    pub scopes_supported: Option<&'a [String]>,
    pub resource_documentation: Option<&'a str>,
    /// The URLs of the issuers the API trusts, in order: `authorization_servers`.
    pub issuers: Vec<&'a str>,
}

/// A field (relative to the API) and what is wrong with it.
pub type FieldError = (&'static str, String);

impl ResourceMetadata {
    pub fn compile(fields: &MetadataFields<'_>) -> Result<ResourceMetadata, FieldError> {
        let (scheme, authority_text, resource_path) =
            split_url(fields.resource).ok_or(("resource", URL_PROBLEM.to_string()))?;
        let authority = canonical_authority(authority_text.as_bytes())
            .map_err(|err| ("resource", format!("has an unusable host: {err}")))?;
        let port = authority.port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        read_path(resource_path.as_bytes())
            .map_err(|err| ("resource", format!("has a path servers could read two ways: {err}")))?;
        if let Some(doc) = fields.resource_documentation {
            split_url(doc).ok_or(("resource_documentation", URL_PROBLEM.to_string()))?;
        }
        if let Some(name) = fields.resource_name {
            if name.trim().is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
                return Err(("resource_name", "must be 1 to 256 characters, no control characters".into()));
            }
        }
        if let Some(scopes) = fields.scopes_supported {
            if let Some(i) = scopes.iter().position(|scope| !is_role_name(scope)) {
                return Err(("scopes_supported", format!("[{i}] is not a scope token (printable ASCII, no space)")));
            }
        }
        let path = match resource_path {
            "/" => WELL_KNOWN.to_string(),
            _ => format!("{WELL_KNOWN}{resource_path}"),
        };
        let url = format!("{scheme}://{authority_text}{path}");
        let mut issuers: Vec<&str> = Vec::new();
        for issuer in &fields.issuers {
            if !issuers.contains(issuer) {
                issuers.push(issuer);
            }
        }
        let mut document = Map::new();
        document.insert("resource".into(), json!(fields.resource));
        document.insert("authorization_servers".into(), json!(issuers));
        document.insert("bearer_methods_supported".into(), json!(["header"]));
        if let Some(scopes) = fields.scopes_supported {
            document.insert("scopes_supported".into(), json!(scopes));
        }
        if let Some(name) = fields.resource_name {
            document.insert("resource_name".into(), json!(name));
        }
        if let Some(doc) = fields.resource_documentation {
            document.insert("resource_documentation".into(), json!(doc));
        }
        Ok(ResourceMetadata {
            resource: fields.resource.to_string(),
            url,
            authority,
            port,
            resource_path: resource_path.to_string(),
            path,
            document: Value::Object(document).to_string(),
        })
    }

    /// Whether a request for `host` is one for this resource's host: the same
    /// name, and the same port or none (Envoy may have stripped it).
    pub fn serves_host(&self, host: &Authority) -> bool {
        host.host == self.authority.host && host.port.is_none_or(|port| port == self.port)
    }
}

const URL_PROBLEM: &str = "must be an absolute http:// or https:// URL without user information, query or fragment, \
                           e.g. https://api.example.com/mcp";

/// `scheme`, authority and path (`/` when none) of an absolute URL that can be
/// written in a quoted header parameter: no query, fragment, user
/// information, quote, backslash, space or control character.
fn split_url(url: &str) -> Option<(&str, &str, &str)> {
    let clean = url.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'?' | b'#' | b'@'));
    let (scheme, rest) = url.split_once("://")?;
    if !clean || !matches!(scheme, "http" | "https") {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(resource: &str) -> MetadataFields<'_> {
        MetadataFields {
            resource,
            resource_name: Some("Orders MCP"),
            scopes_supported: None,
            resource_documentation: None,
            issuers: vec!["https://my-org.zitadel.cloud", "https://my-org.zitadel.cloud"],
        }
    }

    #[test]
    fn the_document_names_the_resource_and_its_issuers() {
        let scopes = vec!["openid".to_string(), "urn:zitadel:iam:org:project:id:123:aud".to_string()];
        let metadata = ResourceMetadata::compile(&MetadataFields {
            scopes_supported: Some(&scopes),
            resource_documentation: Some("https://docs.example.com/mcp"),
            ..fields("https://API.example.com/mcp")
        })
        .unwrap();
        assert_eq!(metadata.url, "https://API.example.com/.well-known/oauth-protected-resource/mcp");
        assert_eq!(metadata.path, "/.well-known/oauth-protected-resource/mcp");
        assert_eq!(metadata.authority, Authority { host: "api.example.com".into(), port: None });
        assert_eq!(metadata.port, 443);
        let document: Value = serde_json::from_str(&metadata.document).unwrap();
        assert_eq!(
            document,
            json!({
                "resource": "https://API.example.com/mcp",
                "authorization_servers": ["https://my-org.zitadel.cloud"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["openid", "urn:zitadel:iam:org:project:id:123:aud"],
                "resource_name": "Orders MCP",
                "resource_documentation": "https://docs.example.com/mcp",
            })
        );
    }

    #[test]
    fn a_resource_without_a_path_is_served_at_the_well_known_path_itself() {
        let metadata = ResourceMetadata::compile(&fields("http://127.0.0.1:8080")).unwrap();
        assert_eq!(metadata.path, WELL_KNOWN);
        assert_eq!(metadata.url, "http://127.0.0.1:8080/.well-known/oauth-protected-resource");
        assert_eq!(metadata.resource_path, "/");
        assert!(metadata.serves_host(&Authority { host: "127.0.0.1".into(), port: Some(8080) }));
        assert!(metadata.serves_host(&Authority { host: "127.0.0.1".into(), port: None }));
        assert!(!metadata.serves_host(&Authority { host: "127.0.0.1".into(), port: Some(80) }));
        assert!(!metadata.serves_host(&Authority { host: "localhost".into(), port: Some(8080) }));
    }

    #[test]
    fn what_cannot_be_a_resource_url_is_refused() {
        for bad in [
            "api.example.com/mcp",
            "ftp://api.example.com/mcp",
            "https:///mcp",
            "https://api.example.com/mcp?x=1",
            "https://api.example.com/mcp#top",
            "https://user@api.example.com/mcp",
            "https://api.example.com/m\"cp",
            "https://api.example.com/m cp",
            "https://api.example.com/a/../mcp",
            "https://api.example.com//mcp",
            "https://api..example.com/mcp",
        ] {
            assert_eq!(
                ResourceMetadata::compile(&fields(bad)).err().map(|(field, _)| field),
                Some("resource"),
                "{bad}"
            );
        }
        let scopes = vec!["two words".to_string()];
        let err = ResourceMetadata::compile(&MetadataFields {
            scopes_supported: Some(&scopes),
            ..fields("https://a.example")
        });
        assert_eq!(err.err().map(|(field, _)| field), Some("scopes_supported"));
        let err = ResourceMetadata::compile(&MetadataFields { resource_name: Some(""), ..fields("https://a.example") });
        assert_eq!(err.err().map(|(field, _)| field), Some("resource_name"));
    }
}

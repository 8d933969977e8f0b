//! Route rules: an ordered list; the first rule whose host, method and path
//! match decides what a request needs, and which API's policy applies.

use crate::authority::{Authority, HostPattern};
use crate::policy::ApiId;

/// What a matched rule asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No token needed.
    Public,
    /// A token valid for this API (its issuers, audiences), meeting `access`.
    Api { api: ApiId, access: Access },
}

/// What a protected route requires beyond a token valid for its API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Any valid token.
    Authenticated,
    /// A valid token holding at least one of these roles.
    AnyRole(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The path equals this string, or this string and a trailing `/`
    /// (most frameworks route `/x/` to `/x`, so both need the same rule).
    Exact(String),
    /// The path starts with this string at a segment boundary: `/api` matches
    /// `/api` and `/api/x` but not `/apix`; a prefix ending in `/` matches
    /// everything below it.
    Prefix(String),
}

impl PathPattern {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(exact) => path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path) == exact,
            PathPattern::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                None => false,
                Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None` matches every host.
    pub host: Option<HostPattern>,
    pub path: PathPattern,
    /// Upper-case method names; `None` matches every method.
    pub methods: Option<Vec<String>>,
    pub target: Target,
}

impl Rule {
    fn matches(&self, authority: &Authority, method: &str, path: &str) -> bool {
        // Methods are case-sensitive (RFC 9110 section 9.1): `get` is not `GET`.
        let method_ok = match &self.methods {
            None => true,
            Some(methods) => methods.iter().any(|m| m == method),
        };
        let host_ok = self.host.as_ref().is_none_or(|host| host.matches(authority));
        method_ok && host_ok && self.path.matches(path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    /// What a request no rule matches needs; `None` denies it.
    pub unmatched: Option<Target>,
}

impl Rules {
    /// What a request needs, or `None` when it must be denied outright.
    /// `authority` and `path` are canonical (see `authority` and `path`).
    pub fn target_for(&self, authority: &Authority, method: &str, path: &str) -> Option<&Target> {
        self.rules
            .iter()
            .find(|rule| rule.matches(authority, method, path))
            .map(|rule| &rule.target)
            .or(self.unmatched.as_ref())
    }
}

/// A role name the filter accepts, in rules and from the issuer: an RFC 6750
/// scope token (printable ASCII without space, `"` or `\`) without `,`, so it
/// is safe unquoted in the `WWW-Authenticate` challenge and unambiguous in the
/// comma-joined roles header.
pub fn is_role_name(role: &str) -> bool {
    !role.is_empty() && role.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::canonical_authority;

    const API: ApiId = ApiId(0);
    const OTHER: ApiId = ApiId(1);

    fn rule(path: PathPattern, target: Target) -> Rule {
        Rule { host: None, path, methods: None, target }
    }

    fn api(access: Access) -> Target {
        Target::Api { api: API, access }
    }

    fn scoped() -> Target {
        api(Access::AnyRole(vec!["read:messages".into()]))
    }

    fn demo_rules() -> Rules {
        Rules {
            rules: vec![
                rule(PathPattern::Exact("/public".into()), Target::Public),
                rule(PathPattern::Prefix("/api/public".into()), Target::Public),
                rule(PathPattern::Exact("/api/private-scoped".into()), scoped()),
                Rule {
                    host: None,
                    path: PathPattern::Prefix("/api/".into()),
                    methods: Some(vec!["GET".into(), "POST".into()]),
                    target: api(Access::Authenticated),
                },
            ],
            unmatched: None,
        }
    }

    fn target<'a>(rules: &'a Rules, method: &str, path: &str) -> Option<&'a Target> {
        rules.target_for(&canonical_authority(b"api.example.com").unwrap(), method, path)
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = demo_rules();
        assert_eq!(target(&rules, "GET", "/public"), Some(&Target::Public));
        assert_eq!(target(&rules, "GET", "/api/public"), Some(&Target::Public));
        assert_eq!(target(&rules, "GET", "/api/public/x"), Some(&Target::Public));
        assert_eq!(target(&rules, "GET", "/api/private-scoped"), Some(&scoped()));
        assert_eq!(target(&rules, "GET", "/api/private"), Some(&api(Access::Authenticated)));
    }

    #[test]
    fn exact_and_prefix_respect_boundaries() {
        let rules = demo_rules();
        assert_eq!(target(&rules, "GET", "/public/x"), None);
        assert_eq!(target(&rules, "GET", "/publicx"), None);
        // `/api/publicity` is not under the public prefix: it falls to `/api/`.
        assert_eq!(target(&rules, "GET", "/api/publicity"), Some(&api(Access::Authenticated)));
        // An exact rule does not cover a longer path: `/api/private-scoped/x`
        // falls through to the authenticated `/api/` rule.
        assert_eq!(target(&rules, "GET", "/api/private-scoped/x"), Some(&api(Access::Authenticated)));
        assert_eq!(target(&rules, "GET", "/api"), None);
    }

    #[test]
    fn exact_rules_cover_a_trailing_slash() {
        let rules = demo_rules();
        assert_eq!(target(&rules, "GET", "/public/"), Some(&Target::Public));
        assert_eq!(target(&rules, "GET", "/api/private-scoped/"), Some(&scoped()));
        assert_eq!(target(&rules, "GET", "/"), None);
    }

    #[test]
    fn methods_restrict_a_rule() {
        let rules = demo_rules();
        assert_eq!(target(&rules, "GET", "/api/x"), Some(&api(Access::Authenticated)));
        assert_eq!(target(&rules, "get", "/api/x"), None);
        assert_eq!(target(&rules, "DELETE", "/api/x"), None);
    }

    #[test]
    fn hosts_pick_the_rule_and_its_api() {
        let on = |host: &str| Some(HostPattern::parse(host).unwrap());
        let rules = Rules {
            rules: vec![
                Rule {
                    host: on("orders.example.com"),
                    ..rule(PathPattern::Prefix("/".into()), api(Access::Authenticated))
                },
                Rule {
                    host: on("*.billing.example.com"),
                    ..rule(PathPattern::Prefix("/".into()), Target::Api { api: OTHER, access: Access::Authenticated })
                },
                rule(PathPattern::Exact("/health".into()), Target::Public),
            ],
            unmatched: None,
        };
        let at = |host: &str, path: &str| rules.target_for(&canonical_authority(host.as_bytes()).unwrap(), "GET", path);
        assert_eq!(at("Orders.Example.com.:8080", "/health"), Some(&api(Access::Authenticated)));
        assert_eq!(
            at("eu.billing.example.com", "/x"),
            Some(&Target::Api { api: OTHER, access: Access::Authenticated })
        );
        assert_eq!(at("billing.example.com", "/health"), Some(&Target::Public));
        assert_eq!(at("billing.example.com", "/x"), None);
        assert_eq!(at("orders.example.com.evil", "/x"), None);
    }

    #[test]
    fn unmatched_uses_the_configured_default() {
        let mut rules = demo_rules();
        rules.unmatched = Some(api(Access::Authenticated));
        assert_eq!(target(&rules, "GET", "/elsewhere"), Some(&api(Access::Authenticated)));
    }

    #[test]
    fn role_names_are_scope_tokens_without_commas() {
        for good in ["read:messages", "admin", "a.b-c_d/e~f!", "x=1"] {
            assert!(is_role_name(good), "{good}");
        }
        for bad in ["", "read messages", "a,b", "q\"", "back\\slash", "tab\t", "caf\u{e9}"] {
            assert!(!is_role_name(bad), "{bad}");
        }
    }
}

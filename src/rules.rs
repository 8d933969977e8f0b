//! Route rules: an ordered list; the first rule whose path (and method, if
//! given) matches decides what a request needs.

/// What a matched route requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any token the issuer vouches for (active, unexpired, right audience).
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
    pub path: PathPattern,
    /// Upper-case method names; `None` matches every method.
    pub methods: Option<Vec<String>>,
    pub access: Access,
}

impl Rule {
    fn matches(&self, method: &str, path: &str) -> bool {
        // Methods are case-sensitive (RFC 9110 section 9.1): `get` is not `GET`.
        let method_ok = match &self.methods {
            None => true,
            Some(methods) => methods.iter().any(|m| m == method),
        };
        method_ok && self.path.matches(path)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    /// What a request no rule matches needs; `None` denies it.
    pub unmatched: Option<Access>,
}

impl Rules {
    /// The access a request needs, or `None` when it must be denied outright.
    /// `path` is the canonical path (see `path::canonical_path`).
    pub fn access_for(&self, method: &str, path: &str) -> Option<&Access> {
        self.rules.iter().find(|rule| rule.matches(method, path)).map(|rule| &rule.access).or(self.unmatched.as_ref())
    }
}

/// A role name the filter accepts, in rules and from the issuer: an RFC 6750
/// scope token (printable ASCII without space, `"` or `\`) without `,`, so it
/// is safe unquoted in the `WWW-Authenticate` challenge and unambiguous in the
/// comma-joined roles header.
pub fn is_role_name(role: &str) -> bool {
    !role.is_empty() && role.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x5b | 0x5d..=0x7e))
}

impl Access {
    /// The roles a token lacks for this route, if any: `Ok` when `roles`
    /// satisfies the route. Called on every request, cached verdict or not.
    pub fn check_roles(&self, roles: &[String]) -> Result<(), &[String]> {
        match self {
            Access::Public | Access::Authenticated => Ok(()),
            Access::AnyRole(required) => {
                if required.iter().any(|r| roles.contains(r)) {
                    Ok(())
                } else {
                    Err(required)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: PathPattern, access: Access) -> Rule {
        Rule { path, methods: None, access }
    }

    fn demo_rules() -> Rules {
        Rules {
            rules: vec![
                rule(PathPattern::Exact("/public".into()), Access::Public),
                rule(PathPattern::Prefix("/api/public".into()), Access::Public),
                rule(PathPattern::Exact("/api/private-scoped".into()), Access::AnyRole(vec!["read:messages".into()])),
                Rule {
                    path: PathPattern::Prefix("/api/".into()),
                    methods: Some(vec!["GET".into(), "POST".into()]),
                    access: Access::Authenticated,
                },
            ],
            unmatched: None,
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let rules = demo_rules();
        assert_eq!(rules.access_for("GET", "/public"), Some(&Access::Public));
        assert_eq!(rules.access_for("GET", "/api/public"), Some(&Access::Public));
        assert_eq!(rules.access_for("GET", "/api/public/x"), Some(&Access::Public));
        assert_eq!(
            rules.access_for("GET", "/api/private-scoped"),
            Some(&Access::AnyRole(vec!["read:messages".into()]))
        );
        assert_eq!(rules.access_for("GET", "/api/private"), Some(&Access::Authenticated));
    }

    #[test]
    fn exact_and_prefix_respect_boundaries() {
        let rules = demo_rules();
        assert_eq!(rules.access_for("GET", "/public/x"), None);
        assert_eq!(rules.access_for("GET", "/publicx"), None);
        // `/api/publicity` is not under the public prefix: it falls to `/api/`.
        assert_eq!(rules.access_for("GET", "/api/publicity"), Some(&Access::Authenticated));
        // An exact rule does not cover a longer path: `/api/private-scoped/x`
        // falls through to the authenticated `/api/` rule.
        assert_eq!(rules.access_for("GET", "/api/private-scoped/x"), Some(&Access::Authenticated));
        assert_eq!(rules.access_for("GET", "/api"), None);
    }

    #[test]
    fn exact_rules_cover_a_trailing_slash() {
        let rules = demo_rules();
        assert_eq!(rules.access_for("GET", "/public/"), Some(&Access::Public));
        assert_eq!(
            rules.access_for("GET", "/api/private-scoped/"),
            Some(&Access::AnyRole(vec!["read:messages".into()]))
        );
        assert_eq!(rules.access_for("GET", "/"), None);
    }

    #[test]
    fn methods_restrict_a_rule() {
        let rules = demo_rules();
        assert_eq!(rules.access_for("GET", "/api/x"), Some(&Access::Authenticated));
        assert_eq!(rules.access_for("get", "/api/x"), None);
        assert_eq!(rules.access_for("DELETE", "/api/x"), None);
    }

    #[test]
    fn unmatched_uses_the_configured_default() {
        let mut rules = demo_rules();
        rules.unmatched = Some(Access::Authenticated);
        assert_eq!(rules.access_for("GET", "/elsewhere"), Some(&Access::Authenticated));
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

    #[test]
    fn roles_are_checked() {
        let scoped = Access::AnyRole(vec!["read:messages".into(), "admin".into()]);
        assert!(scoped.check_roles(&["admin".into()]).is_ok());
        assert!(scoped.check_roles(&["read:messages".into()]).is_ok());
        assert_eq!(scoped.check_roles(&["write".into()]).unwrap_err().len(), 2);
        assert!(scoped.check_roles(&[]).is_err());
        assert!(Access::Authenticated.check_roles(&[]).is_ok());
    }
}

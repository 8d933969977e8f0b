//! Route rules: an ordered list; the first rule whose host, method, path and
//! (optionally) Envoy virtual host and route match decides what a request
//! needs, and which API's policy applies.
//!
//! A request is looked up under every reading the servers after the filter
//! may give it (see `path` and `authority`): a host's port counted or
//! ignored, each spelling of the path, letters with and without case, the
//! method as sent and upper-cased, `HEAD` as itself and as the `GET` most
//! frameworks serve it with. It gets a target
//! only when every reading picks the same one.

use std::collections::HashMap;

use crate::authority::{Authority, HostPattern, PortReading};
use crate::ids::ApiId;
use crate::path::PathReadings;

/// What a matched rule asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No token needed.
    Public,
    /// A token valid for this API (its issuers, audiences), meeting `access`.
    /// With `dry_run`, a denial is counted and logged, and the request passes.
    Api { api: ApiId, access: Access, dry_run: bool },
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
    /// Every path.
    Any,
    /// The path equals this string, or this string and a trailing `/`
    /// (most frameworks route `/x/` to `/x`, so both need the same rule).
    Exact(String),
    /// The path starts with this string at a segment boundary: `/api` matches
    /// `/api` and `/api/x` but not `/apix`; a prefix ending in `/` matches
    /// everything below it.
    Prefix(String),
}

/// Whether letters are compared with their case, or as a server that ignores it would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Sensitive,
    Ignored,
}

impl PathPattern {
    fn matches(&self, path: &str, case: Case) -> bool {
        let same = |a: &str, b: &str| match case {
            Case::Sensitive => a == b,
            Case::Ignored => a.eq_ignore_ascii_case(b),
        };
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(exact) => same(path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path), exact),
            PathPattern::Prefix(prefix) => match path.get(..prefix.len()) {
                Some(head) if same(head, prefix) => {
                    let rest = path.get(prefix.len()..).unwrap_or_default();
                    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                }
                _ => false,
            },
        }
    }

    fn has_upper(&self) -> bool {
        match self {
            PathPattern::Any => false,
            PathPattern::Exact(path) | PathPattern::Prefix(path) => path.bytes().any(|b| b.is_ascii_uppercase()),
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
    /// The name of the Envoy virtual host that must have been picked; `None`: any.
    pub virtual_host: Option<String>,
    /// The name of the Envoy route that must have been picked; `None`: any.
    pub route: Option<String>,
    pub target: Target,
}

/// The request as rules read it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Canonical (see `authority`).
    pub authority: &'a Authority,
    pub method: &'a str,
    pub path: &'a PathReadings,
    /// The names of the virtual host and route Envoy's router picked, if known.
    pub virtual_host: Option<&'a str>,
    pub route: Option<&'a str>,
}

/// One way of reading the request.
#[derive(Debug, Clone, Copy)]
struct Reading<'a> {
    port: PortReading,
    method: &'a str,
    path: &'a str,
    case: Case,
}

impl Rule {
    fn matches(&self, query: &Query<'_>, reading: &Reading<'_>) -> bool {
        // Methods are case-sensitive (RFC 9110 section 9.1): `get` is not `GET`;
        // `target_for` also reads it upper-cased, as Werkzeug does.
        let method_ok = self.methods.as_ref().is_none_or(|methods| methods.iter().any(|m| m == reading.method));
        let host_ok = self.host.as_ref().is_none_or(|host| host.matches(query.authority, reading.port));
        let named = |wanted: &Option<String>, picked: Option<&str>| wanted.as_deref().is_none_or(|w| Some(w) == picked);
        method_ok
            && host_ok
            && named(&self.virtual_host, query.virtual_host)
            && named(&self.route, query.route)
            && self.path.matches(reading.path, reading.case)
    }
}

/// Why a request has no one target: its readings pick different rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disagreement {
    /// Counting the host's port or ignoring it, as Envoy may, picks another rule.
    Port,
    /// Another reading of the path (or of its case, or of the method) picks another rule.
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Which rules a request's host can match (see [`HostIndex`]).
    index: HostIndex,
    /// What a request no rule matches needs; `None` denies it.
    unmatched: Option<Target>,
    /// Whether a rule's path has upper-case letters (then every request is
    /// also read ignoring case).
    upper_case_paths: bool,
    /// Whether a rule names a virtual host or route.
    binds_to_routes: bool,
}

impl Rules {
    pub fn new(rules: Vec<Rule>, unmatched: Option<Target>) -> Self {
        let upper_case_paths = rules.iter().any(|rule| rule.path.has_upper());
        let binds_to_routes = rules.iter().any(|rule| rule.virtual_host.is_some() || rule.route.is_some());
        let index = HostIndex::new(&rules);
        Rules { rules, index, unmatched, upper_case_paths, binds_to_routes }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn unmatched(&self) -> Option<&Target> {
        self.unmatched.as_ref()
    }

    /// Whether a rule names a virtual host or route, so that the request's
    /// must be read from Envoy.
    pub fn binds_to_routes(&self) -> bool {
        self.binds_to_routes
    }

    /// What a request needs: `Ok(None)` when it must be denied outright, an
    /// error when its readings disagree.
    pub fn target_for(&self, query: &Query<'_>) -> Result<Option<&Target>, Disagreement> {
        let ports: &[PortReading] = match query.authority.port {
            Some(_) => &[PortReading::Counted, PortReading::Ignored],
            None => &[PortReading::Counted],
        };
        let cases: &[Case] = if query.path.has_upper() || self.upper_case_paths {
            &[Case::Sensitive, Case::Ignored]
        } else {
            &[Case::Sensitive]
        };
        // Werkzeug (Flask) upper-cases the method before routing: `get` is its `GET`.
        let upper = query.method.bytes().any(|b| b.is_ascii_lowercase()).then(|| query.method.to_ascii_uppercase());
        let canonical = upper.as_deref().unwrap_or(query.method);
        // Express, Flask, Starlette, Spring... serve HEAD with the GET handler.
        let methods = [Some(query.method), upper.as_deref(), (canonical == "HEAD").then_some("GET")];
        let mut agreed: Option<(Option<&Target>, Reading<'_>)> = None;
        for &port in ports {
            for method in methods.into_iter().flatten() {
                for path in query.path.spellings() {
                    for &case in cases {
                        let reading = Reading { port, method, path, case };
                        let target = self.lookup(query, &reading);
                        match &agreed {
                            None => agreed = Some((target, reading)),
                            Some((first, _)) if *first == target => {}
                            Some((_, first)) => {
                                let only_port = method == first.method && path == first.path && case == first.case;
                                return Err(if only_port { Disagreement::Port } else { Disagreement::Path });
                            }
                        }
                    }
                }
            }
        }
        // No reading at all cannot happen (a path has at least one spelling); it denies.
        Ok(agreed.and_then(|(target, _)| target))
    }

    /// The first rule that matches a reading, among those its host can match.
    fn lookup(&self, query: &Query<'_>, reading: &Reading<'_>) -> Option<&Target> {
        let candidates = self.index.candidates(&query.authority.host);
        let first = candidates.iter().filter_map(|&at| self.rules.get(at as usize)).find(|r| r.matches(query, reading));
        first.map(|rule| &rule.target).or(self.unmatched.as_ref())
    }
}

/// The rules a request's host can match, in their order, computed once when
/// the configuration loads: those of each exact host name merged with the
/// rules for any host and the `*.` rules, and for every other host those two
/// alone. A request then checks the rules of its own host and not every
/// rule: the cost stays flat from a handful of rules to a thousand over a
/// hundred hosts. (Host names are kept lower case, as requests' are read.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct HostIndex {
    by_host: HashMap<String, Vec<u32>>,
    others: Vec<u32>,
}

impl HostIndex {
    fn new(rules: &[Rule]) -> Self {
        let exact = |rule: &Rule| rule.host.as_ref().and_then(HostPattern::exact_name).map(str::to_owned);
        let numbered = || rules.iter().enumerate().filter_map(|(at, rule)| Some((u32::try_from(at).ok()?, rule)));
        let others: Vec<u32> = numbered().filter(|(_, rule)| exact(rule).is_none()).map(|(at, _)| at).collect();
        let mut by_host: HashMap<String, Vec<u32>> = HashMap::new();
        for (at, rule) in numbered() {
            if let Some(name) = exact(rule) {
                by_host.entry(name).or_insert_with(|| others.clone()).push(at);
            }
        }
        for list in by_host.values_mut() {
            list.sort_unstable();
        }
        HostIndex { by_host, others }
    }

    fn candidates(&self, host: &str) -> &[u32] {
        self.by_host.get(host).unwrap_or(&self.others)
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
    use crate::path::read_path;

    const API: ApiId = ApiId(0);
    const OTHER: ApiId = ApiId(1);

    fn rule(path: PathPattern, target: Target) -> Rule {
        Rule { host: None, path, methods: None, virtual_host: None, route: None, target }
    }

    fn api(access: Access) -> Target {
        Target::Api { api: API, access, dry_run: false }
    }

    fn scoped() -> Target {
        api(Access::AnyRole(vec!["read:messages".into()]))
    }

    fn demo_rules() -> Rules {
        Rules::new(
            vec![
                rule(PathPattern::Exact("/public".into()), Target::Public),
                rule(PathPattern::Prefix("/api/public".into()), Target::Public),
                rule(PathPattern::Exact("/api/private-scoped".into()), scoped()),
                Rule {
                    methods: Some(vec!["GET".into(), "POST".into()]),
                    ..rule(PathPattern::Prefix("/api/".into()), api(Access::Authenticated))
                },
            ],
            None,
        )
    }

    /// What a request needs, on `host`: `Err` when its readings disagree.
    fn at<'a>(rules: &'a Rules, host: &str, method: &str, path: &str) -> Result<Option<&'a Target>, Disagreement> {
        let authority = canonical_authority(host.as_bytes()).unwrap();
        let path = read_path(path.as_bytes()).unwrap();
        let query = Query { authority: &authority, method, path: &path, virtual_host: None, route: None };
        rules.target_for(&query)
    }

    /// A role rule for `GET` under `/admin`, and everything else public.
    fn get_only_admin_rules() -> Rules {
        Rules::new(
            vec![
                Rule { methods: Some(vec!["GET".into()]), ..rule(PathPattern::Prefix("/admin".into()), scoped()) },
                rule(PathPattern::Prefix("/".into()), Target::Public),
            ],
            None,
        )
    }

    fn target<'a>(rules: &'a Rules, method: &str, path: &str) -> Option<&'a Target> {
        at(rules, "api.example.com", method, path).unwrap()
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
        assert_eq!(target(&rules, "DELETE", "/api/x"), None);
    }

    /// Werkzeug upper-cases the method before routing: `get` is read as sent and as `GET`.
    #[test]
    fn a_lower_case_method_is_also_read_upper_case() {
        let rules = get_only_admin_rules();
        assert_eq!(at(&rules, "a.example", "get", "/admin"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "Get", "/admin"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "head", "/admin"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "get", "/x"), Ok(Some(&Target::Public)));
        assert_eq!(at(&demo_rules(), "a.example", "get", "/api/x"), Err(Disagreement::Path));
        assert_eq!(at(&demo_rules(), "a.example", "delete", "/api/x"), Ok(None));
    }

    /// Frameworks serve HEAD with the GET handler: HEAD is read both ways.
    #[test]
    fn head_is_also_read_as_get() {
        let rules = get_only_admin_rules();
        assert_eq!(at(&rules, "a.example", "HEAD", "/admin"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "HEAD", "/x"), Ok(Some(&Target::Public)));
        // The demo's GET and POST rule: HEAD is no rule's, its GET reading the API's.
        assert_eq!(at(&demo_rules(), "a.example", "HEAD", "/api/x"), Err(Disagreement::Path));
    }

    /// `/admin;x` is `/admin` to Tomcat and Spring, another path to Express.
    #[test]
    fn path_parameters_that_change_the_rule_are_refused() {
        let rules = Rules::new(
            vec![
                rule(PathPattern::Exact("/admin".into()), scoped()),
                rule(PathPattern::Prefix("/".into()), api(Access::Authenticated)),
            ],
            None,
        );
        assert_eq!(at(&rules, "a.example", "GET", "/admin;x"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "GET", "/other;jsessionid=1"), Ok(Some(&api(Access::Authenticated))));
        // Under a prefix both readings keep, parameters are harmless.
        assert_eq!(target(&demo_rules(), "GET", "/api/x;v=1/y"), Some(&api(Access::Authenticated)));
    }

    #[test]
    fn empty_segments_and_escapes_that_change_the_rule_are_refused() {
        let rules = demo_rules();
        assert_eq!(at(&rules, "a.example", "GET", "/api//private-scoped"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "GET", "/api/private-scope%64"), Err(Disagreement::Path));
        assert_eq!(target(&rules, "GET", "/api/x//y"), Some(&api(Access::Authenticated)));
        assert_eq!(target(&rules, "GET", "/api/x%79"), Some(&api(Access::Authenticated)));
        // Reserved characters too: Starlette, Flask and Tomcat route `/users/%40me` as `/users/@me`.
        let rules = Rules::new(
            vec![
                rule(PathPattern::Exact("/users/@me".into()), scoped()),
                rule(PathPattern::Exact("/v1/things:batch".into()), scoped()),
                rule(PathPattern::Prefix("/".into()), Target::Public),
            ],
            None,
        );
        for path in ["/users/%40me", "/users/%40Me", "/v1/things%3Abatch", "/v1/things%3abatch"] {
            assert_eq!(at(&rules, "a.example", "GET", path), Err(Disagreement::Path), "{path}");
        }
        assert_eq!(at(&rules, "a.example", "GET", "/users/@me"), Ok(Some(&scoped())));
        assert_eq!(at(&rules, "a.example", "GET", "/users/%40you"), Ok(Some(&Target::Public)));
        assert_eq!(at(&rules, "a.example", "GET", "/files/caf%C3%A9"), Ok(Some(&Target::Public)));
        // As sent and fully decoded, this is public twice over; with only `%61` decoded (RFC 3986
        // normalization in front of Express), it is `/api/health%3Acheck`, under `/api`.
        let rules = Rules::new(
            vec![
                rule(PathPattern::Exact("/api/health:check".into()), Target::Public),
                rule(PathPattern::Prefix("/api".into()), api(Access::Authenticated)),
            ],
            Some(Target::Public),
        );
        assert_eq!(at(&rules, "a.example", "GET", "/%61pi/health%3Acheck"), Err(Disagreement::Path));
        assert_eq!(at(&rules, "a.example", "GET", "/api/health:check"), Ok(Some(&Target::Public)));
    }

    /// Express ignores case by default: `/API/PRIVATE-SCOPED` is its scoped route.
    #[test]
    fn case_that_changes_the_rule_is_refused() {
        let rules = Rules::new(
            vec![
                rule(PathPattern::Prefix("/admin".into()), scoped()),
                rule(PathPattern::Prefix("/".into()), Target::Public),
            ],
            None,
        );
        for path in ["/ADMIN", "/Admin/x", "/aDmIn"] {
            assert_eq!(at(&rules, "a.example", "GET", path), Err(Disagreement::Path), "{path}");
        }
        assert_eq!(at(&rules, "a.example", "GET", "/Public/X"), Ok(Some(&Target::Public)));
        // An upper-case rule path is compared both ways too.
        let upper = Rules::new(vec![rule(PathPattern::Exact("/Admin".into()), scoped())], Some(Target::Public));
        assert_eq!(at(&upper, "a.example", "GET", "/admin"), Err(Disagreement::Path));
        assert_eq!(at(&upper, "a.example", "GET", "/Admin"), Ok(Some(&scoped())));
    }

    #[test]
    fn hosts_pick_the_rule_and_its_api() {
        let on = |host: &str| Some(HostPattern::parse(host).unwrap());
        let rules = Rules::new(
            vec![
                Rule {
                    host: on("orders.example.com"),
                    ..rule(PathPattern::Prefix("/".into()), api(Access::Authenticated))
                },
                Rule {
                    host: on("*.billing.example.com"),
                    ..rule(
                        PathPattern::Prefix("/".into()),
                        Target::Api { api: OTHER, access: Access::Authenticated, dry_run: false },
                    )
                },
                rule(PathPattern::Exact("/health".into()), Target::Public),
            ],
            None,
        );
        let on_host = |host: &str, path: &str| at(&rules, host, "GET", path);
        assert_eq!(on_host("Orders.Example.com", "/health"), Ok(Some(&api(Access::Authenticated))));
        assert_eq!(
            on_host("eu.billing.example.com", "/x"),
            Ok(Some(&Target::Api { api: OTHER, access: Access::Authenticated, dry_run: false }))
        );
        assert_eq!(on_host("billing.example.com", "/health"), Ok(Some(&Target::Public)));
        assert_eq!(on_host("billing.example.com", "/x"), Ok(None));
        assert_eq!(on_host("orders.example.com.evil", "/x"), Ok(None));
        // A port Envoy left in the host: counted, no rule; ignored, orders'. Refused.
        assert_eq!(on_host("orders.example.com:8080", "/x"), Err(Disagreement::Port));
        // Where both readings agree, the port does not matter.
        assert_eq!(on_host("other.example.com:8080", "/health"), Ok(Some(&Target::Public)));
    }

    #[test]
    fn rules_can_name_envoys_virtual_host_and_route() {
        let rules = Rules::new(
            vec![
                Rule {
                    virtual_host: Some("orders".into()),
                    route: Some("admin".into()),
                    ..rule(PathPattern::Any, scoped())
                },
                Rule { virtual_host: Some("orders".into()), ..rule(PathPattern::Any, api(Access::Authenticated)) },
            ],
            Some(Target::Public),
        );
        assert!(rules.binds_to_routes());
        assert!(!demo_rules().binds_to_routes());
        let authority = canonical_authority(b"orders.example.com:9999").unwrap();
        let named = |path: &str, virtual_host: Option<&str>, route: Option<&str>| {
            let path = read_path(path.as_bytes()).unwrap();
            rules
                .target_for(&Query { authority: &authority, method: "GET", path: &path, virtual_host, route })
                .map(|t| t.cloned())
        };
        // No spelling of host or path can part the filter from the router: they are not read.
        assert_eq!(named("/ADMIN;x//y", Some("orders"), Some("admin")), Ok(Some(scoped())));
        assert_eq!(named("/x", Some("orders"), Some("other")), Ok(Some(api(Access::Authenticated))));
        assert_eq!(named("/x", Some("public"), Some("admin")), Ok(Some(Target::Public)));
        assert_eq!(named("/x", None, None), Ok(Some(Target::Public)));
    }

    #[test]
    fn unmatched_uses_the_configured_default() {
        let rules = Rules::new(demo_rules().rules, Some(api(Access::Authenticated)));
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

    /// The index picks the rule the ordered list picks, for random rules and requests.
    #[test]
    fn the_host_index_picks_what_the_ordered_list_picks() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let hosts =
            [Some("a.example.com"), Some("b.example.com"), Some("*.example.com"), Some("a.example.com:8080"), None];
        let paths = [
            PathPattern::Any,
            PathPattern::Prefix("/".into()),
            PathPattern::Prefix("/api".into()),
            PathPattern::Exact("/api/x".into()),
            PathPattern::Prefix("/API".into()),
        ];
        let targets = [Target::Public, api(Access::Authenticated), scoped()];
        let requests =
            ["a.example.com", "b.example.com", "c.example.com", "x.a.example.com", "a.example.com:8080", "other.org"];
        for _ in 0..300 {
            let count = 1 + next(12);
            let list: Vec<Rule> = (0..count)
                .map(|_| Rule {
                    host: hosts[next(hosts.len())].map(|h| HostPattern::parse(h).unwrap()),
                    path: paths[next(paths.len())].clone(),
                    methods: [None, Some(vec!["GET".to_string()])][next(2)].clone(),
                    virtual_host: None,
                    route: None,
                    target: targets[next(targets.len())].clone(),
                })
                .collect();
            let indexed = Rules::new(list, [None, Some(Target::Public)][next(2)].clone());
            let linear = Rules {
                index: HostIndex { by_host: HashMap::new(), others: (0..count as u32).collect() },
                ..indexed.clone()
            };
            for host in requests {
                for method in ["GET", "POST", "HEAD"] {
                    for path in ["/", "/api", "/api/x", "/API/x", "/b"] {
                        assert_eq!(
                            at(&indexed, host, method, path),
                            at(&linear, host, method, path),
                            "{host} {method} {path}"
                        );
                    }
                }
            }
        }
    }
}

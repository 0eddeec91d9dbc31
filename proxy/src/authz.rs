//! Authorisation of inbound connections and requests by intentions.
//!
//! The peer's service name comes from its verified SPIFFE ID; the rules come
//! from the current [`crate::ProxyConfig`]. The highest-precedence rule whose
//! source is the peer's service or `*` decides; with no match the config's
//! default decides. On an HTTP listener each request is decided: a rule
//! with L7 permissions lets the first permission whose match fits the
//! request decide, and the default decides when none fits.

use hyper::Request;

use crate::config::IntentionRule;
use crate::matching::RequestMatcher;
use crate::ProxyError;

/// The intentions of one config version, sorted once so that a decision is
/// the first match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Authorizer {
    rules: Vec<Rule>,
    default_allow: bool,
}

/// An intention with its permissions compiled.
#[derive(Clone, Debug)]
struct Rule {
    intention: IntentionRule,
    permissions: Vec<(bool, RequestMatcher)>,
}

/// Why a source was let in or kept out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Whether the connection may proceed.
    pub(crate) allow: bool,
    /// The rule's source (`web`, `*`) or `None` when the default decided.
    pub(crate) rule: Option<String>,
}

impl Authorizer {
    /// Sorts `rules` by precedence, highest first. At equal precedence an
    /// exact source beats `*`, and deny beats allow: the narrower and safer
    /// rule wins a tie.
    /// Refused when a permission's match does not compile (the error
    /// names `Intentions[i].Permissions[j].Http`).
    pub(crate) fn new(rules: &[IntentionRule], default_allow: bool) -> Result<Self, ProxyError> {
        let mut rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let permissions = rule
                    .permissions
                    .iter()
                    .enumerate()
                    .map(|(j, p)| {
                        let field = format!("Intentions[{i}].Permissions[{j}].Http");
                        Ok((p.allow, RequestMatcher::compile(&p.http, &field)?))
                    })
                    .collect::<Result<_, ProxyError>>()?;
                Ok(Rule {
                    intention: rule.clone(),
                    permissions,
                })
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        rules.sort_by_key(|rule| {
            let rule = &rule.intention;
            (
                std::cmp::Reverse(rule.precedence),
                rule.source == "*",
                rule.allow,
            )
        });
        Ok(Self {
            rules,
            default_allow,
        })
    }

    fn rule_for(&self, source: &str) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|rule| rule.intention.source == source || rule.intention.source == "*")
    }

    fn by_default(&self) -> Decision {
        Decision {
            allow: self.default_allow,
            rule: None,
        }
    }

    /// Whether `source` (a service name) may connect.
    pub(crate) fn decide(&self, source: &str) -> Decision {
        match self.rule_for(source) {
            Some(rule) => Decision {
                allow: rule.intention.allow,
                rule: Some(rule.intention.source.clone()),
            },
            None => self.by_default(),
        }
    }

    /// Whether `req` from `source` may pass: the matching rule's first
    /// fitting permission, or without permissions its allow or deny; the
    /// default when no rule matches or no permission fits.
    pub(crate) fn decide_request<B>(&self, source: &str, req: &Request<B>) -> Decision {
        let Some(rule) = self.rule_for(source) else {
            return self.by_default();
        };
        if rule.permissions.is_empty() {
            return self.decide(source);
        }
        match rule.permissions.iter().find(|(_, m)| m.matches(req)) {
            Some((allow, _)) => Decision {
                allow: *allow,
                rule: Some(rule.intention.source.clone()),
            },
            None => self.by_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer(rules: &[IntentionRule], default_allow: bool) -> Authorizer {
        Authorizer::new(rules, default_allow).unwrap()
    }

    fn rule(source: &str, allow: bool, precedence: i32) -> IntentionRule {
        IntentionRule {
            source: source.into(),
            allow,
            precedence,
            permissions: Vec::new(),
        }
    }

    #[test]
    fn default_decides_when_nothing_matches() {
        let authz = authorizer(&[rule("db", false, 9)], true);
        assert_eq!(
            authz.decide("web"),
            Decision {
                allow: true,
                rule: None
            }
        );
        let authz = authorizer(&[rule("db", true, 9)], false);
        assert!(!authz.decide("web").allow);
    }

    #[test]
    fn highest_precedence_match_wins() {
        let authz = authorizer(&[rule("*", false, 8), rule("web", true, 9)], true);
        assert!(authz.decide("web").allow);
        assert!(!authz.decide("api").allow);
        assert_eq!(authz.decide("api").rule.as_deref(), Some("*"));

        let authz = authorizer(&[rule("web", true, 1), rule("*", false, 5)], true);
        assert!(!authz.decide("web").allow);
    }

    #[test]
    fn ties_go_to_the_exact_source_then_to_deny() {
        let authz = authorizer(&[rule("*", false, 5), rule("web", true, 5)], false);
        let decision = authz.decide("web");
        assert!(decision.allow);
        assert_eq!(decision.rule.as_deref(), Some("web"));

        let authz = authorizer(&[rule("web", true, 5), rule("web", false, 5)], true);
        assert!(!authz.decide("web").allow);
    }
}

#[cfg(test)]
mod l7_tests {
    use super::*;
    use crate::chain::{HttpMatch, Permission};

    fn permission(allow: bool, prefix: &str) -> Permission {
        Permission {
            allow,
            http: HttpMatch {
                path_prefix: Some(prefix.into()),
                ..HttpMatch::default()
            },
        }
    }

    fn get(path: &str) -> Request<()> {
        Request::builder().uri(path).body(()).unwrap()
    }

    #[test]
    fn the_first_fitting_permission_decides_then_the_default() {
        let rule = IntentionRule {
            source: "web".into(),
            allow: false,
            precedence: 9,
            permissions: vec![permission(false, "/admin"), permission(true, "/")],
        };
        let authz = Authorizer::new(std::slice::from_ref(&rule), false).unwrap();
        assert!(authz.decide_request("web", &get("/api")).allow);
        assert!(!authz.decide_request("web", &get("/admin/x")).allow);
        assert!(!authz.decide_request("api", &get("/api")).allow);

        let rule = IntentionRule {
            permissions: vec![permission(true, "/public")],
            ..rule
        };
        let authz = Authorizer::new(std::slice::from_ref(&rule), false).unwrap();
        assert!(!authz.decide_request("web", &get("/private")).allow);
        let authz = Authorizer::new(std::slice::from_ref(&rule), true).unwrap();
        assert!(authz.decide_request("web", &get("/private")).allow);
    }

    #[test]
    fn a_bad_permission_names_its_field() {
        let rule = IntentionRule {
            source: "web".into(),
            allow: true,
            precedence: 1,
            permissions: vec![Permission {
                allow: true,
                http: HttpMatch {
                    path_regex: Some("[".into()),
                    ..HttpMatch::default()
                },
            }],
        };
        match Authorizer::new(&[rule], true) {
            Err(ProxyError::InvalidConfig { field, .. }) => {
                assert_eq!(field, "Intentions[0].Permissions[0].Http.PathRegex")
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Authorisation of inbound connections by intentions.
//!
//! The peer's service name comes from its verified SPIFFE ID; the rules come
//! from the current [`crate::ProxyConfig`]. The highest-precedence rule whose
//! source is the peer's service or `*` decides; with no match the config's
//! default decides.

use crate::config::IntentionRule;

/// The intentions of one config version, sorted once so that a decision is
/// the first match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Authorizer {
    rules: Vec<IntentionRule>,
    default_allow: bool,
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
    pub(crate) fn new(rules: &[IntentionRule], default_allow: bool) -> Self {
        let mut rules = rules.to_vec();
        rules.sort_by_key(|rule| {
            (
                std::cmp::Reverse(rule.precedence),
                rule.source == "*",
                rule.allow,
            )
        });
        Self {
            rules,
            default_allow,
        }
    }

    /// Whether `source` (a service name) may connect.
    pub(crate) fn decide(&self, source: &str) -> Decision {
        match self
            .rules
            .iter()
            .find(|rule| rule.source == source || rule.source == "*")
        {
            Some(rule) => Decision {
                allow: rule.allow,
                rule: Some(rule.source.clone()),
            },
            None => Decision {
                allow: self.default_allow,
                rule: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let authz = Authorizer::new(&[rule("db", false, 9)], true);
        assert_eq!(
            authz.decide("web"),
            Decision {
                allow: true,
                rule: None
            }
        );
        let authz = Authorizer::new(&[rule("db", true, 9)], false);
        assert!(!authz.decide("web").allow);
    }

    #[test]
    fn highest_precedence_match_wins() {
        let authz = Authorizer::new(&[rule("*", false, 8), rule("web", true, 9)], true);
        assert!(authz.decide("web").allow);
        assert!(!authz.decide("api").allow);
        assert_eq!(authz.decide("api").rule.as_deref(), Some("*"));

        let authz = Authorizer::new(&[rule("web", true, 1), rule("*", false, 5)], true);
        assert!(!authz.decide("web").allow);
    }

    #[test]
    fn ties_go_to_the_exact_source_then_to_deny() {
        let authz = Authorizer::new(&[rule("*", false, 5), rule("web", true, 5)], false);
        let decision = authz.decide("web");
        assert!(decision.allow);
        assert_eq!(decision.rule.as_deref(), Some("web"));

        let authz = Authorizer::new(&[rule("web", true, 5), rule("web", false, 5)], true);
        assert!(!authz.decide("web").allow);
    }
}

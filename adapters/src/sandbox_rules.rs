//! What every provider sandbox shares: fault rules matched by recipient prefix, each
//! applying to a number of requests or to all, and the defaults of their configs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// A fault for requests to recipients starting with `to_prefix`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule<F> {
    pub to_prefix: String,
    pub fault: F,
    /// Apply to this many matching requests, then let them through; unset means always.
    #[serde(default)]
    pub times: Option<u32>,
}

/// Rules in order, each counting how often it matched.
pub struct RuleSet<F> {
    rules: Vec<Rule<F>>,
    hits: Vec<AtomicU32>,
}

impl<F> RuleSet<F> {
    pub fn new(rules: Vec<Rule<F>>) -> Self {
        let hits = rules.iter().map(|_| AtomicU32::new(0)).collect();
        RuleSet { rules, hits }
    }

    /// The fault of every rule matching `to`, whether or not it has applications left, for
    /// what a rule says of requests other than sends; counts nothing.
    pub fn all_for<'a>(&'a self, to: &'a str) -> impl Iterator<Item = &'a F> + 'a {
        self.rules.iter().filter(move |r| to.starts_with(&r.to_prefix)).map(|r| &r.fault)
    }

    /// The first rule matching `to` that has applications left.
    pub fn fault_for(&self, to: &str) -> Option<&F> {
        self.rules.iter().zip(&self.hits).find_map(|(rule, hits)| {
            if !to.starts_with(&rule.to_prefix) {
                return None;
            }
            let n = hits.fetch_add(1, Ordering::Relaxed);
            rule.times.is_none_or(|t| n < t).then_some(&rule.fault)
        })
    }
}

pub fn loopback_any() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn default_callback_delay_ms() -> u64 {
    50
}

#[cfg(test)]
mod tests {
    use super::{Rule, RuleSet};

    fn rule(to_prefix: &str, fault: &'static str, times: Option<u32>) -> Rule<&'static str> {
        Rule { to_prefix: to_prefix.into(), fault, times }
    }

    /// A rule applies to as many matching requests as `times` says, then the next matching
    /// rule does; `all_for` tells every matching rule's fault without counting.
    #[test]
    fn a_rule_applies_its_number_of_times_then_gives_way() {
        let rules = RuleSet::new(vec![rule("+1555", "429", Some(2)), rule("+1555", "500", None)]);
        assert_eq!(rules.all_for("+15550001").collect::<Vec<_>>(), [&"429", &"500"]);
        let faults: Vec<_> = (0..4).map(|_| rules.fault_for("+15550001").copied()).collect();
        assert_eq!(faults, [Some("429"), Some("429"), Some("500"), Some("500")]);
        assert_eq!(rules.fault_for("+14150001"), None, "another prefix");
        assert_eq!(rules.all_for("+14150001").count(), 0);
    }
}

//! The filtered stream's rules, and the changes that make X's the wanted ones.

use serde::{Deserialize, Serialize};

/// One filtered-stream rule, as `--rules-file` lists them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rule {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// A rule as X stores it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExistingRule {
    pub id: String,
    pub value: String,
    #[serde(default)]
    pub tag: Option<String>,
}

/// What a rules sync changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesPlan {
    pub add: Vec<Rule>,
    pub delete: Vec<ExistingRule>,
}

/// The changes that make X's rules the wanted ones: add what is missing; delete
/// what is not wanted (unless `keep_others`) and any rule whose value is wanted
/// with another tag (X refuses a second rule with the same value).
pub fn plan_rules(existing: &[ExistingRule], wanted: &[Rule], keep_others: bool) -> RulesPlan {
    let mut plan = RulesPlan::default();
    for rule in existing {
        match wanted.iter().find(|w| w.value == rule.value) {
            Some(w) if w.tag == rule.tag => {}
            Some(_) => plan.delete.push(rule.clone()),
            None if keep_others => {}
            None => plan.delete.push(rule.clone()),
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for rule in wanted {
        let present = existing.iter().any(|e| e.value == rule.value && e.tag == rule.tag);
        if !present && seen.insert(&rule.value) {
            plan.add.push(rule.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: &str, tag: Option<&str>) -> Rule {
        Rule { value: value.into(), tag: tag.map(Into::into) }
    }

    fn existing(id: &str, value: &str, tag: Option<&str>) -> ExistingRule {
        ExistingRule { id: id.into(), value: value.into(), tag: tag.map(Into::into) }
    }

    #[test]
    fn rules_sync_adds_the_missing_deletes_the_unwanted_and_retags() {
        let have = [existing("1", "lang:en", None), existing("2", "#rust", Some("old")), existing("3", "cats", None)];
        let want = [rule("lang:en", None), rule("#rust", Some("new")), rule("dogs has:media", None)];
        let plan = plan_rules(&have, &want, false);
        assert_eq!(plan.add, vec![rule("#rust", Some("new")), rule("dogs has:media", None)]);
        assert_eq!(plan.delete, vec![have[1].clone(), have[2].clone()]);
        let plan = plan_rules(&have, &want, true);
        assert_eq!(plan.delete, vec![have[1].clone()], "--keep-rules keeps others but still retags");
        let now = [
            existing("1", "lang:en", None),
            existing("4", "#rust", Some("new")),
            existing("5", "dogs has:media", None),
        ];
        assert_eq!(plan_rules(&now, &want, false), RulesPlan::default(), "in sync: nothing to send");
    }
}

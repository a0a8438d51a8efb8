//! Shard sync decisions, pure: which leases to create for the shards a stream
//! lists, and which finished parents' leases to clean up.

use std::collections::{HashMap, HashSet};

use crate::model::{Checkpoint, Lease};
use crate::retrieval::Shard;

/// The leases to create for `shards` (ListShards, or a shard end's
/// `ChildShards`), given the leases that exist.
///
/// - A shard whose parent is known starts at TRIM_HORIZON (after its parents);
///   others at `initial`.
/// - A shard without a lease but with a descendant that has one is finished and
///   cleaned up: it gets no lease again, or it would be read a second time.
pub fn leases_to_create(shards: &[Shard], leases: &[Lease], initial: Checkpoint) -> Vec<Lease> {
    let existing: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
    let known: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).chain(existing.iter().copied()).collect();
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    let parent_links = shards
        .iter()
        .flat_map(|s| s.parents.iter().map(move |p| (p.as_str(), s.id.as_str())))
        .chain(leases.iter().flat_map(|l| l.parents.iter().map(move |p| (p.as_str(), l.key.as_str()))));
    for (parent, child) in parent_links {
        children.entry(parent).or_default().push(child);
    }
    let has_leased_descendant = |id: &str| {
        let mut stack = vec![id];
        let mut seen = HashSet::new();
        while let Some(node) = stack.pop() {
            for &child in children.get(node).into_iter().flatten() {
                if existing.contains(child) {
                    return true;
                }
                if seen.insert(child) {
                    stack.push(child);
                }
            }
        }
        false
    };
    shards
        .iter()
        .filter(|s| !existing.contains(s.id.as_str()) && !has_leased_descendant(&s.id))
        .map(|s| {
            let has_known_parent = s.parents.iter().any(|p| known.contains(p.as_str()));
            let checkpoint = if has_known_parent { Checkpoint::TrimHorizon } else { initial.clone() };
            Lease::new(s.id.clone(), checkpoint, s.parents.clone())
        })
        .collect()
}

/// Leases of shards that are finished (`SHARD_END`) and whose every child has a
/// lease that has started (taken, or past its start): nothing needs them any more.
pub fn finished_parents(leases: &[Lease]) -> Vec<&Lease> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut children: HashMap<&str, Vec<&Lease>> = HashMap::new();
    for lease in leases {
        for parent in &lease.parents {
            children.entry(parent.as_str()).or_default().push(lease);
        }
    }
    let started =
        |l: &Lease| l.owner.is_some() || matches!(l.checkpoint, Checkpoint::Sequence { .. } | Checkpoint::ShardEnd);
    leases
        .iter()
        .filter(|l| l.checkpoint.is_shard_end())
        .filter(|l| {
            let kids = children.get(l.key.as_str()).map(Vec::as_slice).unwrap_or_default();
            !kids.is_empty()
                && l.children.iter().all(|c| by_key.contains_key(c.as_str()))
                && kids.iter().all(|k| started(k))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SequenceNumber;

    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard { id: id.into(), parents: parents.iter().map(|p| p.to_string()).collect(), ..Default::default() }
    }

    fn lease(id: &str, parents: &[&str], checkpoint: Checkpoint) -> Lease {
        Lease::new(id, checkpoint, parents.iter().map(|p| p.to_string()).collect())
    }

    fn keys(leases: &[Lease]) -> Vec<(&str, String)> {
        leases.iter().map(|l| (l.key.as_str(), l.checkpoint.to_string())).collect()
    }

    #[test]
    fn a_new_stream_gets_a_lease_per_shard_children_after_parents() {
        // 0 split into 2 and 3; 3 and 1 merged into 4.
        let shards =
            [shard("0", &[]), shard("1", &[]), shard("2", &["0"]), shard("3", &["0"]), shard("4", &["3", "1"])];
        let created = leases_to_create(&shards, &[], Checkpoint::Latest);
        assert_eq!(
            keys(&created),
            vec![
                ("0", "LATEST".into()),
                ("1", "LATEST".into()),
                ("2", "TRIM_HORIZON".into()),
                ("3", "TRIM_HORIZON".into()),
                ("4", "TRIM_HORIZON".into())
            ]
        );
        assert_eq!(created[4].parents, vec!["3", "1"]);
    }

    #[test]
    fn cleaned_up_ancestors_are_never_created_again() {
        let shards =
            [shard("0", &[]), shard("1", &[]), shard("2", &["0"]), shard("3", &["0"]), shard("4", &["3", "1"])];
        // 0, 3 and 1 are finished and cleaned up; 2 and 4 have leases.
        let leases = [lease("2", &["0"], Checkpoint::TrimHorizon), lease("4", &["3", "1"], Checkpoint::TrimHorizon)];
        assert!(leases_to_create(&shards, &leases, Checkpoint::TrimHorizon).is_empty());
        // A new child of 2 is created, at TRIM_HORIZON.
        let more = [shards.to_vec(), vec![shard("5", &["2"])]].concat();
        assert_eq!(keys(&leases_to_create(&more, &leases, Checkpoint::Latest)), vec![("5", "TRIM_HORIZON".into())]);
    }

    #[test]
    fn parents_are_cleaned_up_once_every_child_started() {
        let seq = Checkpoint::at(SequenceNumber::parse("5").unwrap());
        let mut parent = lease("0", &[], Checkpoint::ShardEnd);
        parent.children = vec!["2".into(), "3".into()];
        let mut child_a = lease("2", &["0"], Checkpoint::TrimHorizon);
        let child_b = lease("3", &["0"], seq.clone());
        // One child has not started: keep the parent.
        assert!(finished_parents(&[parent.clone(), child_a.clone(), child_b.clone()]).is_empty());
        child_a.owner = Some("w".into());
        assert_eq!(finished_parents(&[parent.clone(), child_a.clone(), child_b.clone()]), vec![&parent]);
        // A child named at shard end but without a lease yet: keep the parent.
        assert!(finished_parents(&[parent.clone(), child_a.clone()]).is_empty());
        // Not finished: keep.
        let open = lease("0", &[], seq);
        assert!(finished_parents(&[open, child_a, child_b]).is_empty());
    }
}

//! `stream-worker checkpoints rewind`: move shards' checkpoints while the fleet
//! runs, without hand-editing the lease table.
//!
//! Each lease is rewritten with [`LeaseStore::rewind`]: conditional on the
//! counter read, clearing the owner and moving the counter, so that its owner
//! finds the lease lost at its next renewal and stops without checkpointing,
//! and any worker takes it again from the new position. A shard moved back
//! makes its descendants start again from their trim horizon, and is written
//! before them (parents first), so that no child is taken while its parent
//! still looks finished. Leases of finished parents that were cleaned up are
//! created again when the new position needs them read.
//!
//! `at-timestamp` is resolved per shard into a position the KCL schema holds:
//! the last record that arrived before the time (reading resumes after it),
//! `TRIM_HORIZON` when none did, `SHARD_END` for a closed shard read entirely
//! before the time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::engine::coordinator::InitialPosition;
use crate::leases::{Cas, LeaseStore};
use crate::model::{Checkpoint, Lease, SequenceNumber};
use crate::retrieval::{Shard, StartAt, StreamClient};
use crate::retry::Backoff;

/// What happens to one shard's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub shard_id: String,
    /// The stored checkpoint; `None`: no lease.
    pub before: Option<String>,
    pub after: String,
    /// The owner that will find the lease lost.
    pub owner: Option<String>,
    pub parents: Vec<String>,
    /// `rewrite`, `create` or `keep`.
    pub action: &'static str,
    pub why: &'static str,
    #[serde(skip)]
    target: Checkpoint,
}

/// The moves for `selected` shards (all when empty), given each selected
/// shard's resolved position. Pure; parents come before their children.
pub fn decide(
    shards: &[Shard],
    leases: &[Lease],
    selected: &HashSet<String>,
    resolved: &HashMap<String, Checkpoint>,
) -> Vec<Move> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut parents: HashMap<String, Vec<String>> = HashMap::new();
    for s in shards {
        parents.insert(s.id.clone(), s.parents.clone());
    }
    for l in leases {
        parents.entry(l.key.clone()).or_insert_with(|| l.parents.clone());
    }
    let mut moves: Vec<Move> = Vec::new();
    let mut moved_back: HashSet<String> = HashSet::new();
    for id in parents_first(&parents) {
        let lease = by_key.get(id.as_str()).copied();
        let shard_parents = parents[&id].clone();
        let after_parent = shard_parents.iter().any(|p| moved_back.contains(p));
        let (target, why) = if after_parent {
            (Checkpoint::TrimHorizon, "a parent moved back: read again from the start, after it")
        } else if selected.is_empty() || selected.contains(&id) {
            match resolved.get(&id) {
                Some(target) => (target.clone(), "as asked"),
                None => continue,
            }
        } else {
            continue;
        };
        let (action, why) = match lease {
            Some(l) if l.checkpoint == target && l.owner.is_none() => ("keep", "already there"),
            Some(l) if l.checkpoint.is_shard_end() && matches!(target, Checkpoint::Latest) => {
                ("keep", "finished: nothing after its end")
            }
            Some(_) => ("rewrite", why),
            None if target.is_shard_end() || matches!(target, Checkpoint::Latest) => continue,
            None => ("create", why),
        };
        let final_checkpoint =
            if action == "keep" { lease.map(|l| l.checkpoint.clone()) } else { Some(target.clone()) };
        if action != "keep" && final_checkpoint.as_ref().is_some_and(|c| !c.is_shard_end()) {
            moved_back.insert(id.clone());
        }
        moves.push(Move {
            shard_id: id.clone(),
            before: lease.map(|l| l.checkpoint.to_string()),
            after: final_checkpoint.map(|c| c.to_string()).unwrap_or_default(),
            owner: lease.and_then(|l| l.owner.clone()),
            parents: shard_parents,
            action,
            why,
            target,
        });
    }
    moves
}

/// Shard ids with every parent before its children (ties by id).
fn parents_first(parents: &HashMap<String, Vec<String>>) -> Vec<String> {
    let mut ids: Vec<&String> = parents.keys().collect();
    ids.sort();
    let mut order = Vec::with_capacity(ids.len());
    let mut done: HashSet<&str> = HashSet::new();
    fn visit<'a>(
        id: &'a str,
        parents: &'a HashMap<String, Vec<String>>,
        done: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !done.insert(id) {
            return;
        }
        for p in parents.get(id).into_iter().flatten() {
            if parents.contains_key(p) {
                visit(p, parents, done, order);
            }
        }
        order.push(id.to_owned());
    }
    for id in ids {
        visit(id, parents, &mut done, &mut order);
    }
    order
}

/// Reads `shard_id` from its trim horizon up to the first record that arrived
/// at or after `at`, and returns the position to resume from.
pub async fn resolve_timestamp(
    stream: &dyn StreamClient,
    shard_id: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<Checkpoint> {
    const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last_before: Option<String> = None;
    let resume = |last: Option<String>| match last.as_deref().and_then(SequenceNumber::parse) {
        Some(seq) => Checkpoint::at(seq),
        None => Checkpoint::TrimHorizon,
    };
    let mut iterator = None;
    let mut attempt = 0;
    loop {
        let it = match iterator.take() {
            Some(it) => it,
            None => {
                let start = match &last_before {
                    Some(seq) => StartAt::AfterSequence(seq.clone()),
                    None => StartAt::TrimHorizon,
                };
                match stream.shard_iterator(shard_id, &start).await {
                    Ok(it) => it,
                    Err(e) if attempt < 10 => {
                        tracing::warn!(shard_id, error = %e, "GetShardIterator failed; retrying");
                        RETRY.sleep(attempt).await;
                        attempt += 1;
                        continue;
                    }
                    Err(e) => anyhow::bail!("shard {shard_id}: GetShardIterator: {e}"),
                }
            }
        };
        let called = tokio::time::Instant::now();
        let batch = match stream.get_records(&it, 10_000).await {
            Ok(batch) => batch,
            Err(e) if attempt < 10 => {
                // Throttled or expired: a new iterator from the last record seen.
                tracing::warn!(shard_id, error = %e, "GetRecords failed; retrying");
                RETRY.sleep(attempt).await;
                attempt += 1;
                continue;
            }
            Err(e) => anyhow::bail!("shard {shard_id}: GetRecords: {e}"),
        };
        attempt = 0;
        for r in &batch.records {
            if r.arrival >= at {
                return Ok(resume(last_before));
            }
            last_before = Some(r.sequence_number.clone());
        }
        match batch.next_iterator {
            None => return Ok(Checkpoint::ShardEnd),
            Some(_) if batch.records.is_empty() && batch.millis_behind_latest == Some(0) => {
                return Ok(resume(last_before))
            }
            Some(next) => iterator = Some(next),
        }
        // Kinesis allows 5 GetRecords calls per second per shard, shared with the fleet.
        tokio::time::sleep_until(called + Duration::from_millis(200)).await;
    }
}

/// Reads the leases and the shards and decides each shard's move.
pub async fn plan(
    store: &dyn LeaseStore,
    stream: &dyn StreamClient,
    to: &InitialPosition,
    only: &[String],
) -> anyhow::Result<Vec<Move>> {
    let leases = store.list().await?;
    let shards = stream.list_shards().await.map_err(|e| anyhow::anyhow!("ListShards: {}", e.message))?;
    let known: HashSet<&str> =
        shards.iter().map(|s| s.id.as_str()).chain(leases.iter().map(|l| l.key.as_str())).collect();
    if let Some(unknown) = only.iter().find(|id| !known.contains(id.as_str())) {
        anyhow::bail!("shard {unknown} is neither in the stream nor in the lease table (see `stream-worker status`)");
    }
    let selected: HashSet<String> = only.iter().cloned().collect();
    let in_stream: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut resolved = HashMap::new();
    for id in known.iter().filter(|id| selected.is_empty() || selected.contains(**id)) {
        let target = match to {
            InitialPosition::TrimHorizon => Checkpoint::TrimHorizon,
            InitialPosition::Latest => Checkpoint::Latest,
            // A shard past the stream's retention has nothing left to read.
            InitialPosition::AtTimestamp(_) if !in_stream.contains(id) => Checkpoint::ShardEnd,
            InitialPosition::AtTimestamp(at) => resolve_timestamp(stream, id, *at).await?,
        };
        resolved.insert((*id).to_owned(), target);
    }
    Ok(decide(&shards, &leases, &selected, &resolved))
}

/// Carries out the moves in order (parents first); returns how many leases it
/// wrote. A lease that changed since it was read (a renewal, a checkpoint) is
/// read again and rewritten; one created meanwhile (shard sync) is rewound.
pub async fn apply(store: &dyn LeaseStore, moves: &[Move]) -> anyhow::Result<usize> {
    let read =
        |leases: Vec<Lease>| -> HashMap<String, Lease> { leases.into_iter().map(|l| (l.key.clone(), l)).collect() };
    // One scan, and another only when a write finds its lease changed.
    let mut current = read(store.list().await?);
    let mut written = 0;
    for m in moves.iter().filter(|m| m.action != "keep") {
        let mut tries = 0;
        loop {
            tries += 1;
            if tries > 20 {
                anyhow::bail!("shard {}: the lease kept changing under 20 rewrites; try again", m.shard_id);
            }
            let done = match current.get(&m.shard_id) {
                Some(lease) => {
                    let done = matches!(store.rewind(lease, &m.target).await?, Cas::Done(_));
                    if let (true, Some(owner), Some(incarnation)) = (done, &lease.owner, &lease.owner_incarnation) {
                        // A protocol 2 owner renews nothing: it hears of the rewind
                        // in its next beat's answer and stops at once.
                        store.ask(owner, incarnation, &m.shard_id).await?;
                    }
                    done
                }
                None => {
                    let lease = Lease::new(m.shard_id.clone(), m.target.clone(), m.parents.clone());
                    matches!(store.create(&lease).await?, Cas::Done(()))
                }
            };
            if done {
                tracing::info!(shard_id = %m.shard_id, before = m.before.as_deref().unwrap_or("-"), after = %m.after,
                    owner = m.owner.as_deref().unwrap_or("-"), "lease rewound");
                written += 1;
                break;
            }
            current = read(store.list().await?);
        }
    }
    Ok(written)
}

pub fn render_text(moves: &[Move]) -> String {
    let mut out =
        format!("{:<24} {:<8} {:<58} {:<58} {:<24} {}\n", "SHARD", "ACTION", "BEFORE", "AFTER", "OWNER", "WHY");
    for m in moves {
        out.push_str(&format!(
            "{:<24} {:<8} {:<58} {:<58} {:<24} {}\n",
            m.shard_id,
            m.action,
            m.before.as_deref().unwrap_or("(no lease)"),
            m.after,
            m.owner.as_deref().unwrap_or("-"),
            m.why
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard { id: id.into(), parents: parents.iter().map(|p| p.to_string()).collect(), ..Default::default() }
    }

    fn lease(id: &str, checkpoint: Checkpoint, owner: Option<&str>, parents: &[&str]) -> Lease {
        let mut l = Lease::new(id, checkpoint, parents.iter().map(|p| p.to_string()).collect());
        l.owner = owner.map(Into::into);
        l
    }

    fn seq(n: &str) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(n).unwrap())
    }

    fn all(ids: &[&str], c: Checkpoint) -> HashMap<String, Checkpoint> {
        ids.iter().map(|id| (id.to_string(), c.clone())).collect()
    }

    #[test]
    fn a_parent_moved_back_is_written_first_and_restarts_its_children() {
        // p split into c1, c2; c1 merged with c2 into g. p's lease was cleaned up.
        let shards = [shard("p", &[]), shard("c1", &["p"]), shard("c2", &["p"]), shard("g", &["c1", "c2"])];
        let leases = [
            lease("c1", Checkpoint::ShardEnd, None, &["p"]),
            lease("c2", Checkpoint::ShardEnd, None, &["p"]),
            lease("g", seq("500"), Some("w1"), &["c1", "c2"]),
        ];
        // Only p asked for, at a position in its middle.
        let resolved = HashMap::from([("p".to_owned(), seq("7"))]);
        let moves = decide(&shards, &leases, &HashSet::from(["p".to_owned()]), &resolved);
        let summary: Vec<(&str, &str, String)> =
            moves.iter().map(|m| (m.shard_id.as_str(), m.action, m.after.clone())).collect();
        assert_eq!(
            summary,
            [
                ("p", "create", "7".to_owned()),
                ("c1", "rewrite", "TRIM_HORIZON".to_owned()),
                ("c2", "rewrite", "TRIM_HORIZON".to_owned()),
                ("g", "rewrite", "TRIM_HORIZON".to_owned()),
            ]
        );
        assert_eq!(moves[3].owner.as_deref(), Some("w1"));
    }

    #[test]
    fn a_parent_that_stays_finished_leaves_its_children_to_their_own_position() {
        let shards = [shard("p", &[]), shard("c", &["p"])];
        let leases = [lease("p", Checkpoint::ShardEnd, None, &[]), lease("c", seq("900"), Some("w"), &["p"])];
        let resolved = HashMap::from([("p".to_owned(), Checkpoint::ShardEnd), ("c".to_owned(), seq("800"))]);
        let moves = decide(&shards, &leases, &HashSet::new(), &resolved);
        let summary: Vec<(&str, &str)> = moves.iter().map(|m| (m.shard_id.as_str(), m.action)).collect();
        assert_eq!(summary, [("p", "keep"), ("c", "rewrite")]);
        assert_eq!(moves[1].after, "800");
    }

    #[test]
    fn latest_keeps_finished_shards_and_creates_nothing() {
        let shards = [shard("p", &[]), shard("c", &["p"]), shard("new", &[])];
        let leases = [lease("p", Checkpoint::ShardEnd, None, &[]), lease("c", seq("9"), Some("w"), &["p"])];
        let moves = decide(&shards, &leases, &HashSet::new(), &all(&["p", "c", "new"], Checkpoint::Latest));
        let summary: Vec<(&str, &str, String)> =
            moves.iter().map(|m| (m.shard_id.as_str(), m.action, m.after.clone())).collect();
        assert_eq!(summary, [("p", "keep", "SHARD_END".to_owned()), ("c", "rewrite", "LATEST".to_owned())]);
    }

    #[test]
    fn trim_horizon_reads_everything_again_parents_first() {
        let shards = [shard("a", &[]), shard("b", &["a"])];
        let leases = [lease("b", seq("3"), Some("w"), &["a"])];
        let moves = decide(&shards, &leases, &HashSet::new(), &all(&["a", "b"], Checkpoint::TrimHorizon));
        let summary: Vec<(&str, &str)> = moves.iter().map(|m| (m.shard_id.as_str(), m.action)).collect();
        assert_eq!(summary, [("a", "create"), ("b", "rewrite")]);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_rewrites_a_lease_that_moved_since_it_was_read() {
        use crate::leases::memory::MemoryLeaseStore;
        let store = MemoryLeaseStore::new();
        assert_eq!(store.create(&lease("s", seq("10"), None, &[])).await.unwrap(), Cas::Done(()));
        let read = store.list().await.unwrap();
        let moves = decide(&[shard("s", &[])], &read, &HashSet::new(), &all(&["s"], Checkpoint::TrimHorizon));
        // The owner takes and checkpoints after the plan was made.
        let taken = store.take(&read[0], "w").await.unwrap().done().unwrap();
        let moved = store.checkpoint(&taken, &seq("20"), &[], 1).await.unwrap().done().unwrap();
        assert_eq!(apply(&store, &moves).await.unwrap(), 1);
        let now = store.list().await.unwrap().remove(0);
        assert_eq!((now.checkpoint, now.owner, now.counter), (Checkpoint::TrimHorizon, None, moved.counter + 1));
        assert_eq!(store.renew(&moved).await.unwrap(), Cas::Lost, "the owner finds the lease lost");
    }
}

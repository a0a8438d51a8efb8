//! `stream-worker status`: one row per shard — owner, checkpoint, parents,
//! state, and how far behind when it can be measured — and one per worker
//! process, from the heartbeat table.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::engine::taker::{state_of, Observations};
use crate::model::{Checkpoint, Heartbeat, Lease};
use crate::retrieval::{StartAt, StreamClient};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardStatus {
    pub shard_id: String,
    /// `owned`, `pending-handoff`, `expired` (only with an observation window),
    /// `unowned`, `waiting-for-parents`, `finished`, or `no-lease`.
    pub state: &'static str,
    pub owner: Option<String>,
    pub handoff_to: Option<String>,
    pub checkpoint: Option<String>,
    pub lease_counter: Option<u64>,
    pub parents: Vec<String>,
    /// MillisBehindLatest at the checkpoint, when it could be read.
    pub behind_ms: Option<i64>,
    /// Records checkpointed on the shard so far (`recordsProcessed`).
    pub records_processed: Option<u64>,
    /// Records checkpointed per second since the previous view (`--watch`).
    pub records_per_second: Option<f64>,
}

/// Builds the report from the lease rows (one snapshot, or the last of two taken
/// `observed` apart) and the stream's shards.
pub async fn report(
    leases: &[Lease],
    shard_ids: &[String],
    seen: Option<(&Observations, Instant, Duration)>,
    stream: &dyn StreamClient,
) -> Vec<ShardStatus> {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut rows: Vec<ShardStatus> = leases
        .iter()
        .map(|l| ShardStatus {
            shard_id: l.key.clone(),
            state: state_of(l, &by_key, seen),
            owner: l.owner.clone(),
            handoff_to: l.handoff_to.clone(),
            checkpoint: Some(l.checkpoint.to_string()),
            lease_counter: Some(l.counter),
            parents: l.parents.clone(),
            behind_ms: None,
            records_processed: Some(l.records_processed),
            records_per_second: None,
        })
        .collect();
    rows.extend(shard_ids.iter().filter(|id| !by_key.contains_key(id.as_str())).map(|id| ShardStatus {
        shard_id: id.clone(),
        state: "no-lease",
        owner: None,
        handoff_to: None,
        checkpoint: None,
        lease_counter: None,
        parents: Vec::new(),
        behind_ms: None,
        records_processed: None,
        records_per_second: None,
    }));
    rows.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    let lags = futures::future::join_all(rows.iter().map(|row| async {
        let start = match by_key.get(row.shard_id.as_str()).map(|l| &l.checkpoint) {
            Some(Checkpoint::Sequence { number, .. }) => StartAt::AfterSequence(number.to_string()),
            Some(Checkpoint::TrimHorizon) => StartAt::TrimHorizon,
            _ => return None,
        };
        let iterator = stream.shard_iterator(&row.shard_id, &start).await.ok()?;
        stream.get_records(&iterator, 1).await.ok()?.millis_behind_latest
    }))
    .await;
    for (row, lag) in rows.iter_mut().zip(lags) {
        row.behind_ms = lag;
    }
    rows
}

/// The workers that hold a lease of an unfinished shard (and, when watched,
/// renew it): the fleet that shares the tables' write limits.
pub fn live_workers(rows: &[ShardStatus]) -> usize {
    let owners: std::collections::HashSet<&str> =
        rows.iter().filter(|r| !matches!(r.state, "finished" | "expired")).filter_map(|r| r.owner.as_deref()).collect();
    owners.len()
}

/// Fills in each shard's records/s: the growth of its `recordsProcessed` since
/// `before` (the previous view's counts), `elapsed` ago. A shard whose count
/// went down (its lease was deleted and created again) shows none.
pub fn add_rates(rows: &mut [ShardStatus], before: &HashMap<String, u64>, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return;
    }
    for row in rows {
        row.records_per_second = match (row.records_processed, before.get(&row.shard_id)) {
            (Some(now), Some(&then)) if now >= then => Some((now - then) as f64 / secs),
            _ => None,
        };
    }
}

/// Each shard's `recordsProcessed`, for the next view's [`add_rates`].
pub fn counts(rows: &[ShardStatus]) -> HashMap<String, u64> {
    rows.iter().filter_map(|r| Some((r.shard_id.clone(), r.records_processed?))).collect()
}

/// The workers seen owning leases of unfinished shards, with how many each holds.
pub fn render_workers(rows: &[ShardStatus]) -> String {
    let mut held: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.state != "finished") {
        if let Some(owner) = r.owner.as_deref() {
            *held.entry(owner).or_default() += 1;
        }
    }
    let list: Vec<String> = held.iter().map(|(w, n)| format!("{w} ({n})")).collect();
    let unowned = rows.iter().filter(|r| matches!(r.state, "unowned" | "no-lease")).count();
    format!(
        "\nworkers seen: {}{}{}; shards without an owner: {unowned}\n",
        held.len(),
        if list.is_empty() { "" } else { ": " },
        list.join(", ")
    )
}

/// One worker process, as its heartbeat row shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub incarnation: String,
    /// Beats written so far.
    pub beat: u64,
    /// Leases held at the last beat.
    pub leases: u32,
    pub protocol: u32,
    /// The last beat's time, by the worker's clock.
    pub last_beat: String,
    /// Milliseconds from the last beat to now, by this machine's clock (a guide:
    /// the clocks of two machines differ).
    pub last_beat_ago_ms: Option<i64>,
    /// The worker that marked this incarnation dead, if any.
    pub dead_by: Option<String>,
}

/// The heartbeat rows as `status` shows them, by worker id and incarnation.
pub fn heartbeats(rows: &[Heartbeat], now: chrono::DateTime<chrono::Utc>) -> Vec<WorkerStatus> {
    let mut out: Vec<WorkerStatus> = rows
        .iter()
        .map(|h| WorkerStatus {
            worker_id: h.worker_id.clone(),
            incarnation: h.incarnation.clone(),
            beat: h.beat,
            leases: h.leases,
            protocol: h.protocol,
            last_beat: h.sent_at.clone(),
            last_beat_ago_ms: chrono::DateTime::parse_from_rfc3339(&h.sent_at)
                .ok()
                .map(|at| (now - at.with_timezone(&chrono::Utc)).num_milliseconds()),
            dead_by: h.dead_by.clone(),
        })
        .collect();
    out.sort_by(|a, b| (&a.worker_id, &a.incarnation).cmp(&(&b.worker_id, &b.incarnation)));
    out
}

/// The workers' table: one row per process that beats, or beat, in the fleet.
pub fn render_heartbeats(workers: &[WorkerStatus]) -> String {
    if workers.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<28} {:<17} {:>6} {:>8} {:>10}  {}\n",
        "WORKER", "INCARNATION", "LEASES", "BEATS", "LAST BEAT", "STATE"
    );
    for w in workers {
        let ago = w.last_beat_ago_ms.map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        let state = match &w.dead_by {
            Some(by) => format!("marked dead by {by}"),
            None => "beating".to_owned(),
        };
        out.push_str(&format!(
            "{:<28} {:<17} {:>6} {:>8} {:>10}  {}\n",
            w.worker_id, w.incarnation, w.leases, w.beat, ago, state
        ));
    }
    out
}

/// One table's own write limit, as the fleet shares it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WriteLimit {
    pub table: String,
    /// Provisioned write capacity, or an on-demand maximum; `None`: on demand.
    pub limit: Option<u32>,
    /// Each live worker's ceiling: the limit shared by the live workers
    /// (before any `--max-write-rate`).
    pub per_worker: Option<u32>,
}

impl WriteLimit {
    pub fn new(table: &str, limit: Option<u32>, workers: usize) -> Self {
        let per_worker = crate::processor::rate::ceiling(None, limit, workers).map(std::num::NonZeroU32::get);
        Self { table: table.to_owned(), limit, per_worker }
    }
}

pub fn render_write_limits(limits: &[WriteLimit], workers: usize) -> String {
    let mut out = format!("\nwrite limits, shared by {workers} live worker(s):\n");
    for l in limits {
        match (l.limit, l.per_worker) {
            (Some(limit), Some(each)) => out.push_str(&format!(
                "  {:<28} {limit} write units/s → ceiling {each}/s per worker (lower with --max-write-rate)\n",
                l.table
            )),
            _ => out.push_str(&format!(
                "  {:<28} no table limit (on demand): each worker adapts to throttling under --max-write-rate\n",
                l.table
            )),
        }
    }
    out
}

/// The table of shards; `rates`: with the RECORDS/S column (`--watch`, where
/// views follow one another).
pub fn render_text(rows: &[ShardStatus], rates: bool) -> String {
    let rate_column = |rate: &str| if rates { format!(" {rate:>9}") } else { String::new() };
    let mut out = format!(
        "{:<24} {:<20} {:<28} {:<14} {:>10}{}  {}\n",
        "SHARD",
        "STATE",
        "OWNER",
        "CHECKPOINT",
        "BEHIND",
        rate_column("RECORDS/S"),
        "PARENTS"
    );
    for r in rows {
        let checkpoint = r.checkpoint.as_deref().unwrap_or("-");
        // Sequence numbers are long; their tail is what tells them apart.
        let checkpoint = if checkpoint.len() > 14 {
            format!("…{}", &checkpoint[checkpoint.len() - 13..])
        } else {
            checkpoint.to_owned()
        };
        let owner = match (&r.owner, &r.handoff_to) {
            (Some(o), Some(to)) => format!("{o} → {to}"),
            (Some(o), None) => o.clone(),
            (None, _) => "-".into(),
        };
        let behind = r.behind_ms.map(|ms| format!("{ms}ms")).unwrap_or_else(|| "-".into());
        let parents = if r.parents.is_empty() { "-".to_owned() } else { r.parents.join(",") };
        let rate = r.records_per_second.map(|r| format!("{r:.1}")).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<24} {:<20} {:<28} {:<14} {:>10}{}  {}\n",
            r.shard_id,
            r.state,
            owner,
            checkpoint,
            behind,
            rate_column(&rate),
            parents
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn states() {
        let mut parent = Lease::new("p", Checkpoint::TrimHorizon, vec![]);
        parent.owner = Some("w".into());
        let child = Lease::new("c", Checkpoint::TrimHorizon, vec!["p".into()]);
        let mut marked = Lease::new("m", Checkpoint::Latest, vec![]);
        marked.owner = Some("w".into());
        marked.handoff_to = Some("v".into());
        let leases = vec![parent.clone(), child.clone(), marked.clone()];
        let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        assert_eq!(state_of(&parent, &by_key, None), "owned");
        assert_eq!(state_of(&child, &by_key, None), "waiting-for-parents");
        assert_eq!(state_of(&marked, &by_key, None), "pending-handoff");
        let mut seen = Observations::default();
        let t0 = Instant::now();
        seen.observe(&leases, t0);
        let failover = Duration::from_secs(10);
        assert_eq!(state_of(&parent, &by_key, Some((&seen, t0 + failover, failover))), "expired");
        let ended = Lease::new("e", Checkpoint::ShardEnd, vec![]);
        assert_eq!(state_of(&ended, &by_key, None), "finished");
        let row = ShardStatus {
            shard_id: "shardId-000000000001".into(),
            state: "owned",
            owner: Some("w".into()),
            handoff_to: Some("v".into()),
            checkpoint: Some("49590338271490256608559692538361571095921575989136588898".into()),
            lease_counter: Some(3),
            parents: vec![],
            behind_ms: Some(250),
            records_processed: Some(40),
            records_per_second: Some(12.5),
        };
        let text = render_text(std::slice::from_ref(&row), true);
        assert!(
            text.contains("shardId-000000000001")
                && text.contains("w → v")
                && text.contains("…5989136588898")
                && text.contains("250ms")
                && text.contains("RECORDS/S")
                && text.contains("12.5"),
            "{text}"
        );
        let once = render_text(&[row], false);
        assert!(!once.contains("RECORDS/S") && !once.contains("12.5") && once.contains("250ms  -"), "{once}");
    }

    #[test]
    fn the_write_limit_is_shared_by_the_live_owners() {
        let row = |id: &str, state: &'static str, owner: Option<&str>| ShardStatus {
            shard_id: id.into(),
            state,
            owner: owner.map(Into::into),
            handoff_to: None,
            checkpoint: None,
            lease_counter: None,
            parents: vec![],
            behind_ms: None,
            records_processed: None,
            records_per_second: None,
        };
        let rows = [
            row("a", "owned", Some("w1")),
            row("b", "owned", Some("w1")),
            row("c", "pending-handoff", Some("w2")),
            row("d", "expired", Some("dead")),
            row("e", "finished", Some("w3")),
            row("f", "unowned", None),
        ];
        let workers = live_workers(&rows);
        assert_eq!(workers, 2);
        let limits = [WriteLimit::new("Tweets", Some(600), workers), WriteLimit::new("Dead", None, workers)];
        assert_eq!(limits[0].per_worker, Some(300));
        assert_eq!(limits[1].per_worker, None);
        let text = render_write_limits(&limits, workers);
        assert!(text.contains("2 live worker") && text.contains("600 write units/s → ceiling 300/s"), "{text}");
        assert!(text.contains("Dead") && text.contains("on demand"), "{text}");
    }

    #[test]
    fn workers_show_their_last_beat_and_who_marked_them_dead() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T13:00:10Z").unwrap().with_timezone(&chrono::Utc);
        let alive = Heartbeat::new("w1", "00000000000000b2").next(3, "2026-12-06T13:00:08.500Z");
        let mut dead = Heartbeat::new("w1", "00000000000000a1").next(2, "2026-12-06T12:59:00Z");
        dead.dead_by = Some("w2".into());
        let garbled = Heartbeat::new("w0", "0c").next(0, "yesterday");
        let rows = heartbeats(&[alive, dead, garbled], now);
        let ids: Vec<(&str, &str)> = rows.iter().map(|w| (w.worker_id.as_str(), w.incarnation.as_str())).collect();
        assert_eq!(ids, [("w0", "0c"), ("w1", "00000000000000a1"), ("w1", "00000000000000b2")]);
        assert_eq!(rows.iter().map(|w| w.last_beat_ago_ms).collect::<Vec<_>>(), [None, Some(70_000), Some(1_500)]);
        let text = render_heartbeats(&rows);
        assert!(
            text.contains("WORKER") && text.contains("1.5s ago  beating") && text.contains("marked dead by w2"),
            "{text}"
        );
        assert_eq!(render_heartbeats(&[]), "");
    }

    #[test]
    fn records_per_second_is_the_growth_of_the_count_between_views() {
        let row = |id: &str, owner: Option<&str>, count: Option<u64>| ShardStatus {
            shard_id: id.into(),
            state: if owner.is_some() { "owned" } else { "unowned" },
            owner: owner.map(Into::into),
            handoff_to: None,
            checkpoint: None,
            lease_counter: None,
            parents: vec![],
            behind_ms: None,
            records_processed: count,
            records_per_second: None,
        };
        let before = counts(&[row("a", None, Some(100)), row("b", None, Some(50)), row("c", None, None)]);
        let mut now = [row("a", Some("w1"), Some(300)), row("b", Some("w1"), Some(10)), row("c", None, Some(5))];
        add_rates(&mut now, &before, Duration::from_secs(4));
        let rates: Vec<Option<f64>> = now.iter().map(|r| r.records_per_second).collect();
        assert_eq!(rates, [Some(50.0), None, None], "b was recreated; c had no count before");
        let workers = render_workers(&now);
        assert!(workers.contains("workers seen: 1: w1 (2)") && workers.contains("without an owner: 1"), "{workers}");
    }
}

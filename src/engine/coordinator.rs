//! The worker: keeps leases (renewals, take rounds, shard sync) and runs one
//! consumer per held lease.
//!
//! One loop owns all lease state; consumers only checkpoint through their
//! [`HeldLease`]. Timers: renew every `failover / 3`; a take round every
//! [`taker::round_interval`] (half a second per worker seen, from 1 s up to the
//! failover time: a small fleet together reads the table about twice a second,
//! whatever its size), with steals at most every `failover / 2`; a larger fleet
//! watches the table in segments ([`taker::watch_segment`]) and takes full
//! rounds every three failover times; shard sync every `shard_sync_interval`
//! and at each shard end. Take rounds and watches read eventually consistent
//! snapshots of the table.
//!
//! Steals are graceful: the taker marks the lease (`handoffTo`), the owner sees
//! the mark at its next renewal, finishes its batch, checkpoints and releases.
//! The taker watches that one lease (a GetItem every second, not a scan) and
//! takes it as soon as it is released. If the owner has not released after one
//! failover time, the taker takes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::budget::ByteBudget;
use super::held::HeldLease;
use super::sync;
use super::taker::{self, quick_take_interval, Observations, TakerConfig};
use super::RecordProcessor;
use crate::engine::consumer::{Consumer, ConsumerConfig, Exit};
use crate::health::Health;
use crate::leases::{Cas, LeaseStore, Segment, StoreError};
use crate::metrics as m;
use crate::model::HashRange;
use crate::model::{Checkpoint, Lease};
use crate::retrieval::polling::PollingConfig;
use crate::retrieval::{ClosedShards, Retrieval, Shard, StreamClient};

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    TrimHorizon,
    Latest,
    AtTimestamp(DateTime<Utc>),
}

impl InitialPosition {
    pub fn checkpoint(self) -> Checkpoint {
        match self {
            Self::TrimHorizon => Checkpoint::TrimHorizon,
            Self::Latest => Checkpoint::Latest,
            Self::AtTimestamp(_) => Checkpoint::AtTimestamp,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub worker_id: String,
    pub failover: Duration,
    pub max_leases: usize,
    pub max_leases_to_steal: usize,
    pub shard_sync_interval: Duration,
    pub initial_position: InitialPosition,
    /// Time allowed for the graceful stop: finish batches, checkpoint, release.
    pub shutdown_timeout: Duration,
    pub consumer: ConsumerConfig,
    /// Seeds the worker's random choices (take-round jitter, which leases to take
    /// or steal), so that a simulation replays; `None`: from the OS.
    pub rng_seed: Option<u64>,
}

impl WorkerConfig {
    /// `stream-worker run`'s defaults, for a worker named `worker_id` (unique
    /// in the fleet: a process that restarts takes a new one).
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            failover: Duration::from_secs(10),
            max_leases: usize::MAX,
            max_leases_to_steal: 2,
            shard_sync_interval: Duration::from_secs(60),
            initial_position: InitialPosition::TrimHorizon,
            shutdown_timeout: Duration::from_secs(5),
            consumer: ConsumerConfig {
                retrieval: Retrieval::Polling(PollingConfig::default()),
                initial_timestamp: None,
                budget: Some(ByteBudget::new(DEFAULT_IN_FLIGHT_BYTES)),
                checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            },
            rng_seed: None,
        }
    }
}

/// `--checkpoint-interval`'s default: a crash reads again at most 5 s of each
/// shard (as a Kafka consumer commits every 5 s), for at most one checkpoint
/// write per shard per 5 s.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// `--max-in-flight-bytes`' default: 128 MiB.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 128 << 20;

/// The states of `stream_worker_shards`, all reported (zero included).
const SHARD_STATES: &[&str] = &["owned", "pending-handoff", "expired", "unowned", "waiting-for-parents", "finished"];

/// How often the tables' own write limits are read again (DescribeTable): a
/// provisioned table's capacity changes by hand or by auto scaling, in minutes.
const WRITE_LIMITS_INTERVAL: Duration = Duration::from_secs(60);

pub struct Worker {
    pub config: WorkerConfig,
    /// Readiness: the worker reports when the lease table answers, and shutdown.
    pub health: Arc<Health>,
    pub stream: Arc<dyn StreamClient>,
    pub store: Arc<dyn LeaseStore>,
    pub processor: Arc<dyn RecordProcessor>,
}

struct State {
    held: BTreeMap<String, Arc<HeldLease>>,
    consumers: JoinSet<Exit>,
    /// Which shard each consumer task runs, to know whose lease a panic leaves.
    tasks: HashMap<tokio::task::Id, String>,
    seen: Observations,
    /// Handoffs this worker asked for, and when.
    asked: BTreeMap<String, Instant>,
    rng: StdRng,
    /// Each shard's hash key range, as the last shard sync saw it.
    ranges: HashMap<String, HashRange>,
    /// The shards the last shard sync saw closed.
    closed: Arc<ClosedShards>,
    /// Workers seen at the last take round, this one included.
    workers: usize,
    /// When a lease seen standing still at the last take round would expire.
    next_expiry: Option<Instant>,
    /// Whether the last take round found leases to take or to ask for, or left
    /// this worker more than a lease short of its share: the fleet is not
    /// settled, so the next round comes after the quick interval.
    unsettled: bool,
    /// The segment of the table this worker watches for expiries between take
    /// rounds (a large fleet: [`taker::watch_segment`]).
    segment: Option<Segment>,
    /// The rows the last take round read: shard sync scans the table only when
    /// a shard has no lease among them.
    known: Vec<Lease>,
    /// Leases a segment watch found free or expired (and ready) and asked a take
    /// round for: one round per lease while it stays so, not one per watch.
    flagged: HashSet<String>,
}

/// What a segment watch found.
#[derive(Debug, Default)]
struct Watch {
    /// A lease of the segment is free or expired, and ready: a take round is due
    /// now (once per lease while it stays so).
    take_now: bool,
    /// When a lease seen standing still would expire: the moment to read the
    /// segment again, for a live owner's renewal may simply not have come yet.
    next_expiry: Option<Instant>,
}

impl Worker {
    /// A worker on `stream` and `store`, handing records to `processor`; its
    /// readiness ([`Health`]) judged over one and a half failover times.
    pub fn new(
        config: WorkerConfig,
        stream: Arc<dyn StreamClient>,
        store: Arc<dyn LeaseStore>,
        processor: Arc<dyn RecordProcessor>,
    ) -> Self {
        let health = Arc::new(Health::new((config.failover * 3 / 2).max(Duration::from_secs(3))));
        Self { config, health, stream, store, processor }
    }

    /// Runs until `shutdown` is cancelled, then stops gracefully within the
    /// shutdown timeout: consumers finish their batch and checkpoint, every lease
    /// is released.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StoreError> {
        let cfg = &self.config;
        self.store.ensure_table().await?;
        let renew_every = cfg.failover / 3;
        let quick_take_every = quick_take_interval(cfg.failover);
        let mut state = State {
            held: BTreeMap::new(),
            consumers: JoinSet::new(),
            tasks: HashMap::new(),
            seen: Observations::default(),
            asked: BTreeMap::new(),
            rng: match cfg.rng_seed {
                Some(seed) => StdRng::seed_from_u64(seed),
                None => StdRng::from_entropy(),
            },
            ranges: HashMap::new(),
            closed: Arc::default(),
            workers: 1,
            next_expiry: None,
            unsettled: false,
            segment: None,
            known: Vec::new(),
            flagged: HashSet::new(),
        };
        let consumers_stop = CancellationToken::new();
        // The gauge exists from the start, before a take round succeeds.
        metrics::gauge!(m::LEASES_HELD).set(0.0);
        tracing::info!(worker_id = %cfg.worker_id, failover = ?cfg.failover, "worker started");

        let mut next_renew = Instant::now() + renew_every;
        let mut next_take = Instant::now();
        let mut next_steal = Instant::now();
        let mut next_watch = Instant::now() + quick_take_every;
        let mut next_segment_watch = Instant::now();
        let mut next_sync = Instant::now();
        let mut next_write_limits = Instant::now();
        loop {
            // In a fixed order, renewals first (keeping leases matters most): with
            // several branches ready at once the choice must not be random, or a
            // simulation under paused time could not replay.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until(next_renew) => {
                    self.renew_all(&mut state).await;
                    next_renew += renew_every;
                }
                _ = sleep_until(next_write_limits) => {
                    let refresh = async { self.processor.upkeep().await; Ok::<_, anyhow::Error>(()) };
                    if self.bounded(refresh).await.is_err() {
                        tracing::warn!("the processor's upkeep did not finish in time");
                    }
                    next_write_limits = Instant::now() + WRITE_LIMITS_INTERVAL;
                }
                _ = sleep_until(next_sync) => {
                    match self.bounded(self.sync_shards(&mut state.ranges, &state.closed, &state.known)).await {
                        Err(e) => {
                            tracing::warn!(error = %e, "shard sync failed; retrying at the next take round");
                            next_sync = Instant::now() + cfg.failover / 2;
                        }
                        Ok(created) => {
                            // ±20 %: replicas started together do not sync (and list
                            // shards) together for ever.
                            next_sync = Instant::now() + cfg.shard_sync_interval.mul_f64(state.rng.gen_range(0.8..=1.2));
                            if created > 0 {
                                next_take = Instant::now();
                                next_steal = Instant::now();
                            }
                        }
                    }
                }
                _ = sleep_until(next_take) => {
                    let steal = Instant::now() >= next_steal;
                    if steal {
                        next_steal = Instant::now() + taker::take_interval(cfg.failover, &mut state.rng);
                    }
                    if let Err(e) = self.bounded(self.take_round(&mut state, &consumers_stop, steal)).await {
                        tracing::warn!(error = %e, "take round failed");
                    }
                    next_take = Instant::now() + if state.unsettled {
                        quick_take_every
                    } else {
                        taker::round_interval(cfg.failover, state.workers, state.segment.is_some(), &mut state.rng)
                    };
                    if let Some(expiry) = state.next_expiry {
                        next_take = next_take.min(expiry);
                    }
                }
                _ = sleep_until(next_segment_watch), if state.segment.is_some() => {
                    next_segment_watch = Instant::now() + taker::watch_interval(cfg.failover, &mut state.rng);
                    match self.bounded(self.watch_segment(&mut state)).await {
                        Ok(watch) => {
                            if watch.take_now {
                                next_take = Instant::now();
                            }
                            if let Some(expiry) = watch.next_expiry {
                                next_segment_watch = next_segment_watch.min(expiry);
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "reading the watched segment failed"),
                    }
                }
                _ = sleep_until(next_watch), if !state.asked.is_empty() => {
                    if let Err(e) = self.bounded(self.watch_handoffs(&mut state, &consumers_stop)).await {
                        tracing::debug!(error = %e, "reading a requested handoff's lease failed");
                    }
                    next_watch = Instant::now() + quick_take_every;
                }
                Some(joined) = state.consumers.join_next_with_id() => {
                    if self.on_consumer_exit(&mut state, joined).await {
                        next_take = Instant::now();
                        next_steal = Instant::now();
                        next_sync = Instant::now();
                    }
                }
            }
        }

        self.health.shutting_down();
        tracing::info!(worker_id = %cfg.worker_id, leases = state.held.len(), "shutting down: finishing in-flight batches");
        consumers_stop.cancel();
        // Keep the last tenth of the budget for releasing the leases.
        let deadline = Instant::now() + cfg.shutdown_timeout - cfg.shutdown_timeout / 10;
        loop {
            tokio::select! {
                joined = state.consumers.join_next_with_id() => match joined {
                    Some(joined) => { self.on_consumer_exit(&mut state, joined).await; }
                    None => break,
                },
                _ = sleep_until(next_renew) => {
                    self.renew_all(&mut state).await;
                    next_renew += renew_every;
                }
                _ = sleep_until(deadline) => {
                    tracing::warn!(remaining = state.consumers.len(), "shutdown timeout: abandoning unfinished batches (they will be re-read)");
                    state.consumers.abort_all();
                    break;
                }
            }
        }
        let this = &self;
        join_all(std::mem::take(&mut state.held).into_values().map(|held| async move { this.release(&held).await }))
            .await;
        metrics::gauge!(m::LEASES_HELD).set(0.0);
        tracing::info!(worker_id = %cfg.worker_id, "worker stopped");
        Ok(())
    }

    /// Releases a lease this worker holds (owner cleared) so the next owner starts
    /// at once; counts it, and the handoff it completes, when the release applies.
    async fn release(&self, held: &HeldLease) {
        let handoff = held.handoff_requested();
        match held.release().await {
            Ok(Cas::Done(())) => {
                metrics::counter!(m::LEASES_RELEASED).increment(1);
                if handoff {
                    metrics::counter!(m::LEASE_HANDOFFS, "side" => "released").increment(1);
                }
                tracing::info!(shard_id = held.key(), worker_id = %self.config.worker_id, handoff, "lease released");
            }
            Ok(Cas::Lost) => {}
            Err(e) => tracing::warn!(shard_id = held.key(), error = %e, "release failed; the lease will expire"),
        }
    }

    /// Runs a step of the loop for at most a third of the failover time: a stalled
    /// lease table must not keep the loop from renewing, or from noticing that
    /// consumers stopped.
    async fn bounded<T, E: Into<anyhow::Error>>(
        &self,
        step: impl std::future::Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout(self.config.failover / 3, step).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(anyhow::anyhow!("no answer from the lease table within {:?}", self.config.failover / 3)),
        }
    }

    /// Creates a lease for every shard that has none. Shards whose parents are
    /// known start at TRIM_HORIZON (after their parents); the others at the
    /// configured initial position.
    /// Returns how many leases it created.
    async fn sync_shards(
        &self,
        ranges: &mut HashMap<String, HashRange>,
        closed: &ClosedShards,
        known: &[Lease],
    ) -> Result<usize, anyhow::Error> {
        let shards = self.stream.list_shards().await.map_err(|e| anyhow::anyhow!("ListShards: {}", e.message))?;
        closed.set(&shards);
        *ranges = shards.iter().filter_map(|s| Some((s.id.clone(), s.hash_range?))).collect();
        // The last take round's rows show every shard's lease most of the time:
        // then there is nothing to create and no need for a consistent scan.
        if !known.is_empty()
            && sync::leases_to_create(&shards, known, self.config.initial_position.checkpoint()).is_empty()
        {
            return Ok(0);
        }
        let leases = self.list().await?;
        let created = self.create_leases(&shards, &leases).await?;
        if created > 0 {
            tracing::info!(created, shards = shards.len(), "shard sync created leases");
        }
        Ok(created)
    }

    async fn create_leases(&self, shards: &[Shard], leases: &[Lease]) -> Result<usize, StoreError> {
        let mut created = 0;
        for lease in sync::leases_to_create(shards, leases, self.config.initial_position.checkpoint()) {
            if let Cas::Done(()) = self.store.create(&lease).await? {
                created += 1;
            }
        }
        Ok(created)
    }

    /// Deletes the leases of finished parents whose children all started.
    async fn clean_up(&self, leases: &[Lease]) -> Result<(), StoreError> {
        for parent in sync::finished_parents(leases) {
            if let Cas::Done(()) = self.store.delete(parent).await? {
                tracing::info!(shard_id = %parent.key, children = ?parent.children, "finished parent's lease deleted");
            }
        }
        Ok(())
    }

    /// Takes free leases; with `steal`, also asks overloaded workers for leases
    /// and takes over handoffs that timed out.
    async fn take_round(
        &self,
        state: &mut State,
        consumers_stop: &CancellationToken,
        steal: bool,
    ) -> Result<(), StoreError> {
        let cfg = &self.config;
        let leases = self.store.snapshot(Segment::WHOLE).await?;
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "round").increment(1);
        self.health.store_ok();
        let now = Instant::now();
        state.seen.observe(&leases, now);
        state.next_expiry = state.seen.next_expiry(&leases, &cfg.worker_id, now, cfg.failover);
        let by_state = {
            let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
            let mut counts: HashMap<&str, usize> = SHARD_STATES.iter().map(|s| (*s, 0)).collect();
            for lease in &leases {
                *counts.entry(taker::state_of(lease, &by_key, Some((&state.seen, now, cfg.failover)))).or_default() +=
                    1;
            }
            counts
        };
        for (name, count) in by_state {
            metrics::gauge!(m::SHARDS, "state" => name).set(count as f64);
        }
        let held: HashSet<String> = state.held.keys().cloned().collect();
        let taker_cfg = TakerConfig {
            failover: cfg.failover,
            max_leases: cfg.max_leases,
            max_leases_to_steal: cfg.max_leases_to_steal,
        };
        let plan = taker::plan(&cfg.worker_id, &held, &leases, &state.seen, now, &taker_cfg, &mut state.rng);
        metrics::gauge!(m::WORKERS_SEEN).set(plan.workers as f64);
        state.workers = plan.workers;
        // Taking, asking, or more than a lease short of its share (waiting to
        // steal): not settled, back after the quick interval.
        state.unsettled =
            !plan.take.is_empty() || !plan.steal.is_empty() || state.held.len() + state.asked.len() + 1 < plan.target;
        tracing::debug!(worker_id = %cfg.worker_id, workers = plan.workers, target = plan.target,
            take = plan.take.len(), steal = plan.steal.len(), next_expiry = ?state.next_expiry.map(|t| t - now), "take round");
        let live = taker::live_workers(&cfg.worker_id, &leases, &state.seen, now, cfg.failover);
        self.processor.fleet_size_changed(live.len());
        let segment = taker::watch_segment(&cfg.worker_id, &live, cfg.failover);
        if segment != state.segment {
            tracing::debug!(worker_id = %cfg.worker_id, ?segment, workers = live.len(), "expiry watch segment");
            state.segment = segment;
            state.flagged.clear();
        }
        if segment.is_some() {
            // Segment watches see expiries coming; a full round for each would
            // cost what they save.
            state.next_expiry = None;
        }
        drop(live);
        let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        // Handoffs asked for: done (released, taken, or cleared) or timed out.
        let me = cfg.worker_id.as_str();
        let mut overdue = Vec::new();
        let mut released = Vec::new();
        state.asked.retain(|key, asked_at| match by_key.get(key.as_str()) {
            Some(l) if l.handoff_to.as_deref() == Some(me) && l.owner.as_deref().is_some_and(|o| o != me) => {
                if now.duration_since(*asked_at) >= cfg.failover {
                    overdue.push(key.clone());
                    false
                } else {
                    true
                }
            }
            // Released for this worker: it is reserved for it, whatever its share
            // says now (others may claim it only after a failover time).
            Some(l) if l.handoff_to.as_deref() == Some(me) && l.owner.is_none() => {
                if !plan.take.contains(key) {
                    released.push(key.clone());
                }
                false
            }
            _ => false,
        });
        let mut wanted: Vec<(&Lease, bool)> =
            plan.take.iter().chain(&released).map(|k| (by_key[k.as_str()], false)).collect();
        if steal {
            self.clean_up(&leases).await?;
            wanted.extend(overdue.iter().map(|k| (by_key[k.as_str()], true)));
            for key in &plan.steal {
                let lease = by_key[key.as_str()];
                if let Cas::Done(_) = self.store.request_handoff(lease, me).await? {
                    metrics::counter!(m::LEASE_HANDOFFS, "side" => "requested").increment(1);
                    tracing::info!(shard_id = %key, worker_id = %me, owner = lease.owner.as_deref().unwrap_or("-"),
                        "asked for a handoff");
                    state.asked.insert(key.clone(), now);
                }
            }
        }
        let result = self.take_leases(state, consumers_stop, wanted).await;
        state.known = leases;
        result
    }

    /// Every lease row, strongly consistent: what shard sync creates leases from.
    async fn list(&self) -> Result<Vec<Lease>, StoreError> {
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "sync").increment(1);
        self.store.list().await
    }

    /// Reads this worker's segment of the table (an eventually consistent
    /// parallel-scan segment) and records what it sees, so that an orphaned lease
    /// of the segment is seen expire within about a second of its failover time
    /// without a full scan.
    async fn watch_segment(&self, state: &mut State) -> Result<Watch, StoreError> {
        let Some(segment) = state.segment else { return Ok(Watch::default()) };
        let cfg = &self.config;
        let part = self.store.snapshot(segment).await?;
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "watch").increment(1);
        self.health.store_ok();
        let now = Instant::now();
        state.seen.observe_part(&part, now);
        let next_expiry = state.seen.next_expiry(&part, &cfg.worker_id, now, cfg.failover);
        // Parents as last seen: in this segment now, or at the last take round.
        let mut by_key: HashMap<&str, &Lease> = state.known.iter().map(|l| (l.key.as_str(), l)).collect();
        by_key.extend(part.iter().map(|l| (l.key.as_str(), l)));
        let me = cfg.worker_id.as_str();
        let free: HashSet<&str> = part
            .iter()
            .filter(|l| {
                !state.held.contains_key(&l.key)
                    && l.handoff_to.as_deref().is_none_or(|to| to == me)
                    && state.seen.is_expired(l, now, cfg.failover)
                    && taker::is_ready(l, &by_key)
            })
            .map(|l| l.key.as_str())
            .collect();
        let in_part: HashSet<&str> = part.iter().map(|l| l.key.as_str()).collect();
        state.flagged.retain(|k| !in_part.contains(k.as_str()) || free.contains(k.as_str()));
        let mut take_now = false;
        for key in free {
            take_now |= state.flagged.insert(key.to_owned());
        }
        Ok(Watch { take_now, next_expiry })
    }

    /// Reads each lease this worker asked to be handed (one GetItem each) and
    /// takes the ones their owners released: a handoff completes within about a
    /// second of the release, with no scan.
    async fn watch_handoffs(&self, state: &mut State, consumers_stop: &CancellationToken) -> Result<(), StoreError> {
        let me = self.config.worker_id.as_str();
        let mut released = Vec::new();
        for key in state.asked.keys().cloned().collect::<Vec<_>>() {
            match self.store.get(&key).await? {
                Some(lease) if lease.handoff_to.as_deref() == Some(me) && lease.owner.is_none() => {
                    state.asked.remove(&key);
                    released.push(lease);
                }
                Some(lease) if lease.handoff_to.as_deref() == Some(me) && !lease.is_owned_by(me) => {}
                // Taken, cleared, or gone: nothing to watch.
                _ => {
                    state.asked.remove(&key);
                }
            }
        }
        self.take_leases(state, consumers_stop, released.iter().map(|l| (l, false)).collect()).await
    }

    /// Takes `wanted` (a lease as last read, and whether it is taken over from a
    /// live owner) and starts a consumer for each lease won.
    async fn take_leases(
        &self,
        state: &mut State,
        consumers_stop: &CancellationToken,
        wanted: Vec<(&Lease, bool)>,
    ) -> Result<(), StoreError> {
        let cfg = &self.config;
        for (lease, stolen) in wanted {
            let key = &lease.key;
            if stolen {
                tracing::warn!(shard_id = %key, owner = lease.owner.as_deref().unwrap_or("-"),
                    "handoff not done within the failover time; taking the lease over");
            }
            let sent = Instant::now();
            match self.store.take(lease, &cfg.worker_id).await? {
                Cas::Done(taken) => {
                    let previous = lease.owner.as_deref().unwrap_or("<none>");
                    if stolen {
                        metrics::counter!(m::LEASES_STOLEN).increment(1);
                    } else {
                        metrics::counter!(m::LEASES_TAKEN).increment(1);
                    }
                    tracing::info!(shard_id = %key, worker_id = %cfg.worker_id, previous_owner = previous,
                        lease_counter = taken.counter, checkpoint = %taken.checkpoint, stolen, "lease taken");
                    metrics::gauge!(m::CHECKPOINT_AGE_SECONDS, "shard_id" => key.clone()).set(0.0);
                    let stop = consumers_stop.child_token();
                    let held = Arc::new(HeldLease::new(taken, sent, self.store.clone(), cfg.failover, stop));
                    self.start_consumer(state, held);
                }
                Cas::Lost => {
                    tracing::debug!(shard_id = %key, "another worker took the lease first")
                }
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
        Ok(())
    }

    fn start_consumer(&self, state: &mut State, held: Arc<HeldLease>) {
        let key = held.key().to_owned();
        state.held.insert(key.clone(), held.clone());
        let consumer = Consumer {
            hash_range: state.ranges.get(&key).copied(),
            held,
            stream: self.stream.clone(),
            closed: state.closed.clone(),
            processor: self.processor.clone(),
            config: self.config.consumer.clone(),
        };
        let task = state.consumers.spawn(consumer.run());
        state.tasks.insert(task.id(), key);
    }

    async fn renew_all(&self, state: &mut State) {
        let renewals = state.held.values().map(|held| async move { (held.clone(), held.renew().await) });
        for (held, result) in join_all(renewals).await {
            match result {
                Ok(true) => {
                    self.health.store_ok();
                    metrics::counter!(m::LEASE_RENEWALS).increment(1);
                    metrics::gauge!(m::CHECKPOINT_AGE_SECONDS, "shard_id" => held.key().to_owned())
                        .set(held.since_checkpoint().as_secs_f64());
                }
                Ok(false) => {
                    metrics::counter!(m::LEASES_LOST).increment(1);
                    tracing::warn!(shard_id = held.key(), worker_id = %self.config.worker_id, "lease lost");
                    state.held.remove(held.key());
                }
                Err(e) => {
                    metrics::counter!(m::LEASE_RENEWAL_FAILURES).increment(1);
                    tracing::warn!(shard_id = held.key(), error = %e, "lease renewal failed");
                    if held.is_lost() || Instant::now() >= held.fence() {
                        // The zombie fence: stop before anyone else may take it.
                        held.mark_lost();
                        metrics::counter!(m::LEASES_LOST).increment(1);
                        tracing::warn!(shard_id = held.key(), "lease not renewed in time; stopped processing");
                        state.held.remove(held.key());
                    }
                }
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
    }

    /// Handles a finished consumer; returns whether a take round is due now.
    async fn on_consumer_exit(
        &self,
        state: &mut State,
        joined: Result<(tokio::task::Id, Exit), tokio::task::JoinError>,
    ) -> bool {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(key) = state.tasks.remove(&id) else {
            return false;
        };
        let exit = match joined {
            Ok((_, exit)) => exit,
            Err(e) if e.is_cancelled() => return false,
            Err(e) => {
                tracing::error!(shard_id = %key, error = %e, "shard consumer panicked; releasing its lease");
                if let Some(held) = state.held.remove(&key) {
                    self.release(&held).await;
                }
                return true;
            }
        };
        match exit {
            Exit::ShardEnd { children } => {
                // Known before the next shard sync: a child's consumer counts
                // the user records outside its range from its first batch.
                state.ranges.extend(children.iter().filter_map(|c| Some((c.id.clone(), c.hash_range?))));
                if !children.is_empty() {
                    let leases = self.list().await.unwrap_or_default();
                    if let Err(e) = self.create_leases(&children, &leases).await {
                        tracing::warn!(shard_id = %key, error = %e, "creating child leases failed; shard sync will");
                    }
                }
                if let Some(held) = state.held.remove(&key) {
                    self.release(&held).await;
                }
                metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
                true
            }
            Exit::LeaseLost => {
                if state.held.remove(&key).is_some() {
                    metrics::counter!(m::LEASES_LOST).increment(1);
                    tracing::warn!(shard_id = %key, worker_id = %self.config.worker_id, "lease lost; consumer stopped");
                }
                metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
                false
            }
            Exit::Stopped => {
                // Worker shutdown or a handoff: the batch is checkpointed; release now
                // so that the next owner starts at once.
                if let Some(held) = state.held.remove(&key) {
                    self.release(&held).await;
                }
                metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Take rounds, release on shutdown and failover, on the twins under paused time.

    use super::*;
    use crate::leases::memory::MemoryLeaseStore;
    use crate::processor::sink::MemoryTable;
    use crate::processor::Processor;
    use crate::retrieval::memory::MemoryStream;
    use crate::retrieval::polling::PollingConfig;
    use crate::retrieval::Retrieval;

    const FAILOVER: Duration = Duration::from_secs(10);

    struct Fleet {
        stream: Arc<MemoryStream>,
        store: Arc<MemoryLeaseStore>,
        tweets: Arc<MemoryTable>,
        next_id: std::sync::atomic::AtomicUsize,
    }

    impl Fleet {
        fn new(shards: usize) -> Self {
            Self {
                stream: Arc::new(MemoryStream::new(shards)),
                store: Arc::new(MemoryLeaseStore::new()),
                tweets: Arc::new(MemoryTable::new("tweets", &["Id"])),
                next_id: 0.into(),
            }
        }

        fn put(&self, n: usize) {
            for _ in 0..n {
                let i = self.next_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.stream.put(&format!("k{i}"), format!(r#"{{"id_str":"{i}","text":"t"}}"#).as_bytes());
            }
        }

        fn start(&self, id: &str) -> (tokio::task::JoinHandle<Result<(), StoreError>>, CancellationToken) {
            self.start_with(id, FAILOVER)
        }

        fn start_with(
            &self,
            id: &str,
            failover: Duration,
        ) -> (tokio::task::JoinHandle<Result<(), StoreError>>, CancellationToken) {
            let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
            let mut config = WorkerConfig::new(id);
            config.failover = failover;
            config.consumer.retrieval =
                Retrieval::Polling(PollingConfig { max_records: 100, ..PollingConfig::default() });
            config.consumer.budget = None;
            let worker = Worker {
                config,
                health: Arc::new(Health::new(Duration::from_secs(3))),
                stream: self.stream.clone(),
                store: self.store.clone(),
                processor: Arc::new(Processor::new(self.tweets.clone(), dead, None, Duration::from_secs(86_400))),
            };
            let stop = CancellationToken::new();
            (tokio::spawn(worker.run(stop.clone())), stop)
        }

        /// Leases held per owner (`-` for none).
        async fn owners(&self) -> HashMap<String, usize> {
            let mut owners = HashMap::new();
            for lease in self.store.list().await.unwrap() {
                *owners.entry(lease.owner.unwrap_or_else(|| "-".into())).or_default() += 1;
            }
            owners
        }

        /// Waits in paused time until `done`; returns how long it took.
        async fn until(&self, what: &str, done: impl Fn(&HashMap<String, usize>, usize) -> bool) -> Duration {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(300) {
                if done(&self.owners().await, self.tweets.len()) {
                    return start.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("{what}: not after 300 s; owners {:?}, {} rows", self.owners().await, self.tweets.len());
        }
    }

    fn holds(owners: &HashMap<String, usize>, who: &str, n: usize) -> bool {
        owners.get(who).copied().unwrap_or(0) == n
    }

    #[tokio::test(start_paused = true)]
    async fn two_workers_share_the_shards_and_a_stopping_one_hands_them_over_at_once() {
        let fleet = Fleet::new(4);
        fleet.put(40);
        let (a, stop_a) = fleet.start("a");
        let (b, stop_b) = fleet.start("b");
        let took = fleet.until("a fair share each", |o, rows| holds(o, "a", 2) && holds(o, "b", 2) && rows == 40).await;
        assert!(took <= Duration::from_secs(30), "converged in {took:?}");

        stop_b.cancel();
        b.await.unwrap().unwrap();
        let took = fleet.until("a holds every lease", |o, _| holds(o, "a", 4)).await;
        assert!(
            took <= Duration::from_secs(3),
            "a released lease is taken within 3 s (the fleet reads the table about twice a second), not {took:?}"
        );
        fleet.put(20);
        fleet.until("the new records written", |_, rows| rows == 60).await;

        stop_a.cancel();
        a.await.unwrap().unwrap();
        assert!(holds(&fleet.owners().await, "-", 4), "every lease released: {:?}", fleet.owners().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crashed_workers_leases_are_taken_after_the_failover_time_and_not_before() {
        let fleet = Fleet::new(4);
        fleet.put(40);
        let (a, stop_a) = fleet.start("a");
        let (b, _) = fleet.start("b");
        fleet.until("a fair share each", |o, rows| holds(o, "a", 2) && holds(o, "b", 2) && rows == 40).await;

        b.abort(); // a crash: nothing released
        let took = fleet.until("a holds every lease", |o, _| holds(o, "a", 4)).await;
        assert!(took >= FAILOVER - Duration::from_secs(1), "taken before the lease expired: {took:?}");
        assert!(took <= FAILOVER + Duration::from_secs(5), "failover took {took:?}");
        fleet.put(20);
        fleet.until("the new records written", |_, rows| rows == 60).await;
        stop_a.cancel();
        a.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_watching_segments_takes_a_crashed_workers_leases_soon_after_the_failover_time() {
        // Four workers at a 2 s failover time: more workers than seconds, so they
        // watch two segments and take full rounds only every 6 s on average.
        let failover = Duration::from_secs(2);
        let fleet = Fleet::new(8);
        fleet.put(80);
        let workers: Vec<_> = ["a", "b", "c", "d"].iter().map(|id| fleet.start_with(id, failover)).collect();
        fleet.until("two each", |o, rows| ["a", "b", "c", "d"].iter().all(|w| holds(o, w, 2)) && rows == 80).await;
        tokio::time::sleep(failover * 5).await; // settled: past the quick rounds
        let before = fleet.store.usage();
        workers[1].0.abort(); // a crash: nothing released
        let took = fleet.until("b's leases taken", |o, _| holds(o, "b", 0) && !o.contains_key("-")).await;
        let after = fleet.store.usage();
        assert!(took >= failover - Duration::from_millis(700), "taken before the lease expired: {took:?}");
        assert!(took <= failover + Duration::from_secs(2), "seen expire {took:?} after the crash");
        assert!(after.segment_scans > before.segment_scans, "no segment watched");
        fleet.put(40);
        fleet.until("the new records written", |_, rows| rows == 120).await;
        for (i, (task, stop)) in workers.into_iter().enumerate() {
            stop.cancel();
            if i != 1 {
                task.await.unwrap().unwrap();
            }
        }
    }
}

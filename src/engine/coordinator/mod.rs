//! The worker: keeps leases (heartbeats, take rounds, shard sync; renewals
//! under protocol 1) and runs one consumer per held lease.
//!
//! One loop owns all lease state; consumers only checkpoint through their
//! [`HeldLease`].
//!
//! **Protocol 2** (a new fleet's, or after `fleet upgrade`): the worker beats
//! every [`WorkerConfig::beat_interval`]; each answered beat moves the fence of
//! every lease it holds, and the answer carries the leases others asked for
//! (handoffs, rewinds). It reads the fleet's heartbeats every
//! [`WorkerConfig::fleet_read_interval`]: a worker whose beat stood still for
//! the failover time is marked dead (conditional on that very beat) and its
//! leases taken at once; a worker that left starts a take round. Lease rows are
//! written only at takes, checkpoints and releases; take rounds come when the
//! fleet changes, while unsettled, and otherwise every ten failover times.
//!
//! **Protocol 1** (a fleet with older releases, or rolled back): as well,
//! renew every `renewal_failover / 3`; a take round every
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
//! takes it as soon as it is released. If the owner has not released after the
//! renewal failover time, the taker takes it over, unless the owner beats
//! (protocol 2): then it stops waiting, and the owner hands it over when it can.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::held::HeldLease;
use super::taker::{self, quick_take_interval, Observations};
use super::RecordProcessor;
use crate::engine::consumer::Exit;
use crate::fence::Fence;
use crate::health::Health;
use crate::leases::{LeaseStore, Segment, StoreError};
use crate::metrics as m;
use crate::model::HashRange;
use crate::model::{Heartbeat, Lease};
use crate::retrieval::{ClosedShards, StreamClient};

mod config;
mod heartbeat;
use heartbeat::{Answer, Beats};
mod renew;
mod shard_sync;
mod supervise;
mod take;

pub use config::{
    InitialPosition, WorkerConfig, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_FAILOVER, DEFAULT_IN_FLIGHT_BYTES,
};

/// How often the tables' own write limits are read again (DescribeTable): a
/// provisioned table's capacity changes by hand or by auto scaling, in minutes.
const WRITE_LIMITS_INTERVAL: Duration = Duration::from_secs(60);

/// A KCL-style worker: keeps leases in the lease store (renewals, take rounds,
/// shard sync) and runs one consumer per held lease, handing records to
/// `processor`. Build it with [`Worker::new`] and start it with [`Worker::run`];
/// see the module docs for its timers.
pub struct Worker {
    /// The worker's settings.
    pub config: WorkerConfig,
    /// Readiness: the worker reports when the lease table answers, and shutdown.
    pub health: Arc<Health>,
    /// The stream whose shards are consumed
    /// ([`KinesisStream`](crate::retrieval::kinesis::KinesisStream) in production).
    pub stream: Arc<dyn StreamClient>,
    /// The lease table shared by the fleet
    /// ([`DynamoLeaseStore`](crate::leases::dynamodb::DynamoLeaseStore) in production).
    pub store: Arc<dyn LeaseStore>,
    /// The application's processor; every shard's consumer hands it records.
    pub processor: Arc<dyn RecordProcessor>,
}

struct State {
    held: BTreeMap<String, Arc<HeldLease>>,
    /// This process's heartbeat row, as last stored; its `asks` are the ones
    /// being handled, removed from the row by the next beat.
    heartbeat: Heartbeat,
    /// The protocol the worker runs: [`Heartbeat::RENEWALS`] or [`Heartbeat::HEARTBEATS`].
    protocol: u32,
    /// The beats, sent by a task of their own; they keep this incarnation's
    /// fence, which bounds every held lease's.
    beats: Arc<Beats>,
    /// The beats' answers, for what they carry (asks, a mark of death).
    answers: tokio::sync::mpsc::UnboundedReceiver<Answer>,
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
    /// Whether the last take round found the fleet balanced ([`taker::Plan::balanced`]).
    balanced: bool,
    /// Beats seen stand still for the failover time at the last look.
    deaths: HashSet<(String, u64)>,
    /// Leases a segment watch found free or expired (and ready) and asked a take
    /// round for: one round per lease while it stays so, not one per watch.
    flagged: HashSet<String>,
}

impl State {
    /// The moment the loop must be free to let its leases go: the worker's
    /// fence while it holds any.
    fn fence(&self) -> Option<Fence> {
        (!self.held.is_empty()).then(|| self.beats.fence())
    }
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
        let protocol = self.fleet_protocol().await?;
        let renew_every = cfg.renewal_failover / 3;
        let quick_take_every = quick_take_interval(cfg.failover);
        let mut rng = match cfg.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let incarnation = heartbeat::incarnation(&mut rng);
        let row = Heartbeat { protocol, ..Heartbeat::new(cfg.worker_id.clone(), incarnation.clone()) };
        // The first beat goes at once; no lease is taken before one is answered.
        let (beats, answers, beating) =
            Beats::spawn(self.store.clone(), row.clone(), cfg.failover, cfg.beat_interval());
        let mut beating = tokio_util::task::AbortOnDropHandle::new(beating);
        let mut state = State {
            held: BTreeMap::new(),
            heartbeat: row,
            protocol,
            beats,
            answers,
            consumers: JoinSet::new(),
            tasks: HashMap::new(),
            seen: Observations::new(&cfg.worker_id, &incarnation, cfg.failover),
            asked: BTreeMap::new(),
            rng,
            ranges: HashMap::new(),
            closed: Arc::default(),
            workers: 1,
            next_expiry: None,
            unsettled: false,
            segment: None,
            known: Vec::new(),
            flagged: HashSet::new(),
            deaths: HashSet::new(),
            balanced: false,
        };
        let consumers_stop = CancellationToken::new();
        // The gauge exists from the start, before a take round succeeds.
        metrics::gauge!(m::LEASES_HELD).set(0.0);
        tracing::info!(
            worker_id = %cfg.worker_id,
            incarnation = %state.heartbeat.incarnation,
            protocol,
            failover = ?cfg.failover,
            "worker started"
        );
        metrics::gauge!(m::PROTOCOL).set(f64::from(protocol));

        let mut next_renew = Instant::now() + renew_every;
        if let Some(answer) = state.answers.recv().await {
            self.on_beat(&mut state, answer);
        }
        // The first take round a fleet read interval after the first beat, just
        // after a fleet read: workers started within about a second see each
        // other's beats and each takes its share, instead of the first taking
        // everything.
        let gathered = Instant::now() + cfg.fleet_read_interval();
        let mut next_take = gathered;
        let mut next_steal = Instant::now();
        let mut next_watch = Instant::now() + quick_take_every;
        let mut next_segment_watch = Instant::now();
        let mut next_sync = Instant::now();
        let mut next_write_limits = Instant::now();
        let mut next_fleet_read = next_take;
        let mut next_expiry_check = Instant::now() + cfg.failover;
        loop {
            state.beats.holding(state.held.len());
            let fence = state.beats.fence().at();
            // In a fixed order, beats' answers first (keeping leases matters
            // most): with several branches ready at once the choice must not be
            // random, or a simulation under paused time could not replay.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(answer) = state.answers.recv() => self.on_beat(&mut state, answer),
                _ = sleep_until(fence), if !state.held.is_empty() => {
                    if self.fenced(&mut state) {
                        next_take = Instant::now();
                    }
                }
                _ = sleep_until(next_renew), if state.protocol == Heartbeat::RENEWALS => {
                    self.renew_all(&mut state).await;
                    next_renew = Instant::now() + renew_every;
                }
                _ = sleep_until(next_fleet_read) => {
                    next_fleet_read = Instant::now() + cfg.fleet_read_interval();
                    metrics::counter!(m::HEARTBEAT_READS).increment(1);
                    match self.bounded(state.fence(), self.store.fleet()).await {
                        Ok(fleet) => {
                            self.health.store_ok();
                            let now = Instant::now();
                            let change = state.seen.observe_fleet(&fleet, now, cfg.renewal_failover / 2);
                            let wanted = fleet.protocol.unwrap_or(Heartbeat::RENEWALS);
                            if wanted != state.protocol && wanted <= Heartbeat::SPEAKS {
                                self.switch_protocol(&mut state, wanted).await;
                                next_renew = Instant::now() + renew_every;
                            }
                            // A worker left (its row removed, or marked dead), or fewer
                            // beat than the last take round saw hold leases: there
                            // are leases to take.
                            let beating = fleet.workers.iter().filter(|w| w.dead_by.is_none()).count();
                            if change.left || beating < state.workers {
                                next_take = now;
                            }
                            // A worker holds two leases more than this one (the
                            // beats tell how many each holds): a take round, to
                            // take or steal, rather than at the settled pace.
                            let most = fleet.workers.iter().filter(|w| w.dead_by.is_none()).map(|w| w.leases as usize).max();
                            if most.is_some_and(|most| most >= state.held.len() + 2) {
                                next_take = next_take.min(now + quick_take_every);
                            }
                            next_expiry_check = state.seen.next_beat_expiry(now).unwrap_or(now + cfg.failover);
                            if self.new_deaths(&mut state, now) {
                                next_take = now;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "reading the fleet's heartbeats failed"),
                    }
                }
                _ = sleep_until(next_write_limits) => {
                    let refresh = async { self.processor.upkeep().await; Ok::<_, anyhow::Error>(()) };
                    if self.bounded(state.fence(), refresh).await.is_err() {
                        tracing::warn!("the processor's upkeep did not finish in time");
                    }
                    next_write_limits = Instant::now() + WRITE_LIMITS_INTERVAL;
                }
                _ = sleep_until(next_sync) => {
                    match self.bounded(state.fence(), self.sync_shards(&mut state.ranges, &state.closed, &state.known)).await {
                        Err(e) => {
                            tracing::warn!(error = %e, "shard sync failed; retrying at the next take round");
                            next_sync = Instant::now() + cfg.failover / 2;
                        }
                        Ok(created) => {
                            // ±20 %: replicas started together do not sync (and list
                            // shards) together for ever.
                            next_sync = Instant::now() + cfg.shard_sync_interval.mul_f64(state.rng.gen_range(0.8..=1.2));
                            if created > 0 {
                                next_take = Instant::now().max(gathered);
                                next_steal = Instant::now();
                            }
                        }
                    }
                }
                _ = sleep_until(next_expiry_check) => {
                    // A beat seen standing still would have expired by now: its
                    // leases are due, unless the next read sees it move first.
                    let now = Instant::now();
                    if self.new_deaths(&mut state, now) {
                        next_take = now;
                    }
                    next_expiry_check = state.seen.next_beat_expiry(now).unwrap_or(now + cfg.failover);
                }
                _ = sleep_until(next_take) => {
                    let steal = Instant::now() >= next_steal;
                    if steal {
                        next_steal = Instant::now() + taker::take_interval(cfg.failover, &mut state.rng);
                    }
                    if let Err(e) = self.bounded(state.fence(), self.take_round(&mut state, &consumers_stop, steal)).await {
                        tracing::warn!(error = %e, "take round failed");
                    }
                    next_take = Instant::now() + if state.unsettled {
                        quick_take_every
                    } else if state.protocol >= Heartbeat::HEARTBEATS && state.balanced {
                        // The heartbeats tell of deaths and departures; rounds
                        // only find new shards and balance: every ten failover
                        // times, or a second per worker in a larger fleet.
                        let base = (cfg.failover * 10).max(Duration::from_secs(1) * state.workers.min(3600) as u32);
                        base.mul_f64(state.rng.gen_range(0.5..=1.5))
                    } else if state.protocol >= Heartbeat::HEARTBEATS {
                        taker::round_interval(cfg.failover, state.workers, false, &mut state.rng)
                    } else {
                        taker::round_interval(cfg.renewal_failover, state.workers, state.segment.is_some(), &mut state.rng)
                    };
                    if let Some(expiry) = state.next_expiry {
                        next_take = next_take.min(expiry);
                    }
                }
                _ = sleep_until(next_segment_watch), if state.segment.is_some() && state.protocol == Heartbeat::RENEWALS => {
                    next_segment_watch = Instant::now() + taker::watch_interval(cfg.failover, &mut state.rng);
                    match self.bounded(state.fence(), self.watch_segment(&mut state)).await {
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
                    if let Err(e) = self.bounded(state.fence(), self.watch_handoffs(&mut state, &consumers_stop)).await {
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
                _ = sleep_until(next_renew), if state.protocol == Heartbeat::RENEWALS => {
                    self.renew_all(&mut state).await;
                    next_renew += renew_every;
                }
                Some(answer) = state.answers.recv() => self.on_beat(&mut state, answer),
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
        // No beat of this process may land after its row is removed.
        beating.abort();
        let _ = (&mut beating).await;
        self.remove_heartbeat(&state).await;
        tracing::info!(worker_id = %cfg.worker_id, "worker stopped");
        Ok(())
    }

    /// Whether a worker's beat has stood still for the failover time that had
    /// not by the last look: once per beat, so that a mark that loses (the
    /// beat had moved, unseen) does not bring a round at every look.
    fn new_deaths(&self, state: &mut State, now: Instant) -> bool {
        let expired = state.seen.expired_beats(now);
        let fresh = expired.iter().any(|beat| !state.deaths.contains(beat));
        state.deaths = expired.into_iter().collect();
        fresh
    }

    /// Runs a step of the loop for at most a third of the (renewal) failover
    /// time, and never past `fence` (the worker's, while it holds leases): a
    /// stalled lease table must not keep the loop from renewing, from letting
    /// its leases go when the fence passes, or from noticing that consumers
    /// stopped.
    async fn bounded<T, E: Into<anyhow::Error>>(
        &self,
        fence: Option<Fence>,
        step: impl std::future::Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T> {
        // Beats do not wait on the loop (a task of their own sends them, and
        // moves the fence), so a slow table may take a third of the renewal
        // failover time here.
        let bound = self.config.renewal_failover.max(self.config.failover) / 3;
        let bound_at = Instant::now() + bound;
        let mut step = std::pin::pin!(step);
        loop {
            let until = fence.as_ref().map_or(bound_at, |fence| fence.at().min(bound_at));
            match tokio::time::timeout_at(until, &mut step).await {
                Ok(result) => return result.map_err(Into::into),
                // A beat answered meanwhile moved the fence on: go on waiting.
                Err(_) if Instant::now() < bound_at && fence.as_ref().is_some_and(|fence| !fence.passed()) => {}
                Err(_) => {
                    return Err(anyhow::anyhow!("no answer from the lease table within {bound:?} or before the fence"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Take rounds, release on shutdown and failover, on the twins under paused time.

    use super::*;
    use crate::leases::memory::MemoryLeaseStore;
    use crate::leases::Cas;
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
            let mut config = WorkerConfig::new(id);
            config.failover = failover;
            config.renewal_failover = failover;
            self.start_config(config)
        }

        fn start_config(
            &self,
            mut config: WorkerConfig,
        ) -> (tokio::task::JoinHandle<Result<(), StoreError>>, CancellationToken) {
            let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
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
            took <= FAILOVER / 3 + Duration::from_millis(500),
            "a released lease is taken at the next read of the heartbeats (every third of the failover time), not {took:?}"
        );
        fleet.put(20);
        fleet.until("the new records written", |_, rows| rows == 60).await;

        stop_a.cancel();
        a.await.unwrap().unwrap();
        assert!(holds(&fleet.owners().await, "-", 4), "every lease released: {:?}", fleet.owners().await);
    }

    #[tokio::test(start_paused = true)]
    async fn each_process_beats_as_a_new_incarnation_and_removes_its_row_when_it_stops() {
        let fleet = Fleet::new(2);
        let (a, stop_a) = fleet.start("a");
        fleet.until("a holds both leases", |o, _| holds(o, "a", 2)).await;
        let first = fleet.store.heartbeats().await.unwrap();
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!((first[0].worker_id.as_str(), first[0].protocol), ("a", Heartbeat::HEARTBEATS));
        assert!(fleet
            .store
            .list()
            .await
            .unwrap()
            .iter()
            .all(|l| l.owner_incarnation == Some(first[0].incarnation.clone())));
        // One beat every three sevenths of the failover time, with the leases held.
        tokio::time::sleep(FAILOVER).await;
        let later = fleet.store.heartbeats().await.unwrap();
        assert_eq!((later[0].incarnation.as_str(), later[0].leases), (first[0].incarnation.as_str(), 2));
        assert!((2..=3).contains(&(later[0].beat - first[0].beat)), "{first:?} then {later:?}");
        let renewals = fleet.store.usage().writes;

        // Marked dead (as a taker would): the next beat is refused, and the
        // worker lets its leases go and goes on as a new incarnation, which
        // takes them again.
        assert_eq!(fleet.store.mark_dead(&later[0], "b").await.unwrap(), Cas::Done(()));
        tokio::time::sleep(FAILOVER * 3 / 7 + Duration::from_millis(1)).await;
        let rows = fleet.store.heartbeats().await.unwrap();
        let fresh: Vec<_> = rows.iter().filter(|h| h.dead_by.is_none()).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(fresh.len(), 1, "{rows:?}");
        assert_ne!(fresh[0].incarnation, first[0].incarnation);
        fleet
            .until("the new incarnation holds both leases", |_, _| {
                fleet.store.rows().iter().all(|l| l.owner_incarnation.as_deref() == Some(&fresh[0].incarnation))
            })
            .await;
        assert!(renewals > 0);

        // A restart with the same worker id is another incarnation too.
        stop_a.cancel();
        a.await.unwrap().unwrap();
        assert!(fleet.store.heartbeats().await.unwrap().iter().all(|h| h.dead_by.is_some()), "its row removed");
        let (a, stop_a) = fleet.start("a");
        fleet.until("a holds both leases again", |o, _| holds(o, "a", 2)).await;
        let rows = fleet.store.heartbeats().await.unwrap();
        let incarnations: HashSet<&str> = rows.iter().map(|h| h.incarnation.as_str()).collect();
        assert_eq!(incarnations.len(), 2, "{rows:?}");
        assert!(!incarnations.contains(fresh[0].incarnation.as_str()));
        stop_a.cancel();
        a.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn reads_frozen_for_three_failover_times_take_no_lease_from_a_live_worker() {
        frozen_reads_move_no_lease(Heartbeat::RENEWALS).await;
        frozen_reads_move_no_lease(Heartbeat::HEARTBEATS).await;
    }

    async fn frozen_reads_move_no_lease(protocol: u32) {
        use crate::leases::memory::ReadLag;
        let fleet = Fleet::new(4);
        fleet.store.set_protocol(None, protocol).await.unwrap().done().unwrap();
        fleet.put(40);
        let (a, stop_a) = fleet.start("a");
        let (b, stop_b) = fleet.start("b");
        fleet.until("a fair share each", |o, rows| holds(o, "a", 2) && holds(o, "b", 2) && rows == 40).await;
        let owners = |rows: Vec<Lease>| rows.into_iter().map(|l| (l.key, l.owner)).collect::<Vec<_>>();
        let settled = owners(fleet.store.list().await.unwrap());
        let before = fleet.store.usage();

        // Every take round, watch and heartbeat read now reads a replica that
        // stopped: each worker sees the other's counters (protocol 1) or beat
        // (protocol 2) stand still, judges its leases expired, and tries to take
        // them on counters long gone, or to mark it dead on a beat long gone.
        fleet.store.set_read_lag(Some(ReadLag::FrozenAt(Instant::now())), 3);
        let start = Instant::now();
        while start.elapsed() < FAILOVER * 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(owners(fleet.store.list().await.unwrap()), settled, "a lease moved at {:?}", start.elapsed());
        }
        let during = fleet.store.usage();
        assert!(
            during.lost_writes >= before.lost_writes + 4,
            "protocol {protocol}: the workers tried to take on stale counters or mark on stale beats: {during:?}"
        );
        fleet.put(20);
        fleet.store.set_read_lag(None, 0);
        fleet.until("the new records written by the same owners", |_, rows| rows == 60).await;
        assert_eq!(owners(fleet.store.list().await.unwrap()), settled);
        stop_a.cancel();
        stop_b.cancel();
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_at_timestamp_start_reads_from_that_time_with_no_other_setting() {
        let fleet = Fleet::new(2);
        fleet.put(10);
        let at = chrono::Utc::now() + chrono::Duration::microseconds(1);
        while chrono::Utc::now() <= at {}
        fleet.put(6);
        let mut config = WorkerConfig::new("a");
        config.initial_position = InitialPosition::AtTimestamp(at);
        let (a, stop) = fleet.start_config(config);
        fleet.until("the records put after the timestamp", |o, rows| holds(o, "a", 2) && rows == 6).await;
        fleet.put(4);
        fleet.until("and the ones after them", |_, rows| rows == 10).await;
        stop.cancel();
        a.await.unwrap().unwrap();
        let written: Vec<usize> = (0..20).filter(|i| fleet.tweets.get(&[&i.to_string()]).is_some()).collect();
        assert_eq!(written, (10..20).collect::<Vec<_>>(), "none of the 10 put before the timestamp");
    }

    #[tokio::test(start_paused = true)]
    async fn beats_go_out_on_time_while_the_loop_waits_on_slow_reads() {
        // Every read answers 3 s late (a brownout of reads): fleet reads and take
        // rounds hold the loop for 3 s at a time. The beats, every 1.5 s at the
        // default failover time, must not wait for them, or the heartbeat stands
        // still past the fence and every lease is let go.
        let fleet = Fleet::new(4);
        fleet.put(40);
        let (a, stop_a) = fleet.start_config(WorkerConfig::new("a"));
        fleet.until("a holds every lease", |o, rows| holds(o, "a", 4) && rows == 40).await;
        fleet.store.set_read_delay(Duration::from_secs(3));
        let beat = || fleet.store.heartbeat_rows().iter().map(|h| h.beat).max().unwrap();
        let interval = WorkerConfig::new("a").beat_interval();
        let (mut last, mut moved, start) = (beat(), Instant::now(), Instant::now());
        let mut beats = 0;
        while start.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if beat() != last {
                (last, moved, beats) = (beat(), Instant::now(), beats + 1);
            }
            let still = moved.elapsed();
            assert!(
                still <= interval + Duration::from_millis(100),
                "no beat for {still:?} (a beat every {interval:?})"
            );
        }
        assert!(beats >= 12, "{beats} beats in 20 s");
        fleet.store.set_read_delay(Duration::ZERO);
        fleet.put(20);
        fleet.until("the new records written", |o, rows| holds(o, "a", 4) && rows == 60).await;
        stop_a.cancel();
        a.await.unwrap().unwrap();
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
        fleet.store.set_protocol(None, Heartbeat::RENEWALS).await.unwrap().done().unwrap();
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

//! The worker's heartbeat: one small row per process, written every
//! [`WorkerConfig::beat_interval`](super::WorkerConfig::beat_interval) whatever
//! the number of leases held, and removed at a graceful stop; and the fleet's
//! protocol, which the worker follows as `fleet upgrade` and `fleet rollback`
//! set it.
//!
//! Under protocol 2 ([`Heartbeat::HEARTBEATS`]) the beat keeps every lease the
//! worker holds: each answered beat moves the worker's fence, which bounds
//! every lease's. Under protocol 1 ([`Heartbeat::RENEWALS`]) leases are also
//! renewed one by one, as earlier releases and the Java KCL judge them.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::{State, Worker};
use crate::engine::held::fence_after;
use crate::fence::Fence;
use crate::leases::{Cas, LeaseStore, Segment, StoreError};
use crate::metrics as m;
use crate::model::Heartbeat;

/// A beat's answer: when it was sent, as what, and what the table said.
pub(super) type Answer = (Instant, Heartbeat, Result<Cas<Heartbeat>, StoreError>);

/// The worker's beats, sent by a task of their own every beat interval whatever
/// the worker's loop is doing (a take round or a shard sync on a slow table
/// can take seconds; a beat that waited for it would let others judge the
/// worker dead). Each answered beat moves the incarnation's fence at once;
/// the loop then takes the answer ([`Worker::on_beat`]) for what it carries.
pub(super) struct Beats {
    store: Arc<dyn LeaseStore>,
    failover: Duration,
    interval: Duration,
    /// The row the next beat is conditional on: this incarnation's, as last stored.
    row: Mutex<Heartbeat>,
    /// The leases held, as the next beat reports.
    leases: AtomicU32,
    /// This incarnation's fence: its last answered beat's send plus the
    /// failover time, less a tenth. Every held lease's fence is bounded by it.
    fence: Mutex<Fence>,
    /// Beat now (a new incarnation, a protocol switch).
    now: Notify,
}

impl Beats {
    /// Beats for `row`, every `interval`; answers go to the returned receiver.
    /// The task ends when the receiver is dropped, or when it is aborted.
    pub(super) fn spawn(
        store: Arc<dyn LeaseStore>,
        row: Heartbeat,
        failover: Duration,
        interval: Duration,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Answer>, tokio::task::JoinHandle<()>) {
        let beats = Arc::new(Self {
            store,
            failover,
            interval,
            row: Mutex::new(row),
            leases: AtomicU32::new(0),
            fence: Mutex::new(Fence::new(Instant::now())),
            now: Notify::new(),
        });
        let (answers, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(beats.clone().pump(answers));
        (beats, receiver, task)
    }

    /// The current incarnation's fence.
    pub(super) fn fence(&self) -> Fence {
        self.fence.lock().unwrap().clone()
    }

    /// The row as last stored.
    pub(super) fn row(&self) -> Heartbeat {
        self.row.lock().unwrap().clone()
    }

    /// Reports `leases` held from the next beat on.
    pub(super) fn holding(&self, leases: usize) {
        self.leases.store(u32::try_from(leases).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Beats from now on as `row` (a new incarnation), with a new fence that has
    /// passed; the first beat goes at once.
    pub(super) fn start(&self, row: Heartbeat) {
        *self.row.lock().unwrap() = row;
        *self.fence.lock().unwrap() = Fence::new(Instant::now());
        self.now.notify_one();
    }

    /// Beats at once under `protocol`.
    pub(super) fn speak(&self, protocol: u32) {
        self.row.lock().unwrap().protocol = protocol;
        self.now.notify_one();
    }

    async fn pump(self: Arc<Self>, answers: mpsc::UnboundedSender<Answer>) {
        let mut in_flight: JoinSet<Answer> = JoinSet::new();
        let mut next = Instant::now();
        loop {
            tokio::select! {
                biased;
                Some(Ok(answer)) = in_flight.join_next() => {
                    if self.apply(&answer) {
                        // Failed: try again soon, while the fence still stands.
                        next = next.min(Instant::now() + self.interval / 4);
                    }
                    if answers.send(answer).is_err() {
                        return;
                    }
                }
                _ = sleep_until(next) => {
                    self.send(&mut in_flight);
                    next = Instant::now() + self.interval;
                }
                _ = self.now.notified() => {
                    self.send(&mut in_flight);
                    next = Instant::now() + self.interval;
                }
            }
        }
    }

    /// Sends one beat, with the leases held and the asks handled since the last,
    /// without waiting for its answer: each answer moves the fence from the
    /// moment its beat was sent. A beat still unanswered when the fence passes
    /// is given up.
    fn send(&self, in_flight: &mut JoinSet<Answer>) {
        if in_flight.len() >= 3 {
            return; // three unanswered already: the table is cut off or stalled
        }
        let heartbeat = self.row();
        let leases = self.leases.load(Ordering::Relaxed);
        let store = self.store.clone();
        let give_up = (Instant::now() + self.failover).max(self.fence().at());
        in_flight.spawn(async move {
            let sent = Instant::now();
            let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let result = match tokio::time::timeout_at(give_up, store.beat(&heartbeat, leases, &sent_at)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError("no answer before the fence".into())),
            };
            (sent, heartbeat, result)
        });
    }

    /// Moves the fence for an answered beat of the current incarnation, and keeps
    /// the row it stored. Whether the beat failed.
    fn apply(&self, (sent, heartbeat, result): &Answer) -> bool {
        let mut row = self.row.lock().unwrap();
        if heartbeat.incarnation != row.incarnation {
            return false;
        }
        match result {
            Ok(Cas::Done(stored)) => {
                let fence = self.fence.lock().unwrap();
                let after = fence_after(*sent, self.failover);
                if after > fence.at() {
                    fence.set(after);
                }
                if stored.beat >= row.beat {
                    *row = Heartbeat { protocol: row.protocol, ..stored.clone() };
                }
                false
            }
            Ok(Cas::Lost) => false,
            Err(_) => true,
        }
    }
}

/// A new incarnation for this process: 64 random bits, in hex.
pub(super) fn incarnation(rng: &mut impl Rng) -> String {
    format!("{:016x}", rng.gen::<u64>())
}

impl Worker {
    /// The protocol the fleet runs. A fleet that never set one runs protocol 2
    /// if no lease has an owner (a new table, or a fleet stopped), and protocol 1
    /// otherwise (older releases may be running); the first worker records it.
    pub(super) async fn fleet_protocol(&self) -> Result<u32, StoreError> {
        let fleet = self.store.fleet().await?;
        let protocol = match fleet.protocol {
            Some(protocol) => protocol,
            None => {
                let owned = self.store.snapshot(Segment::WHOLE).await?.iter().any(|l| l.owner.is_some());
                let protocol = if owned { Heartbeat::RENEWALS } else { Heartbeat::HEARTBEATS };
                match self.store.set_protocol(None, protocol).await? {
                    Cas::Done(()) => {
                        tracing::info!(protocol, owned, "set the fleet's protocol");
                        protocol
                    }
                    Cas::Lost => self.store.fleet().await?.protocol.unwrap_or(protocol),
                }
            }
        };
        if protocol > Heartbeat::SPEAKS {
            return Err(StoreError(format!(
                "the fleet runs coordination protocol {protocol}; this build runs up to {}: \
                 upgrade this worker, or run `stream-worker fleet rollback` with the newer build",
                Heartbeat::SPEAKS
            )));
        }
        Ok(protocol)
    }

    /// Follows the fleet to `protocol`. To 2: renewals stop, and the heartbeat
    /// alone keeps the leases. To 1: every lease is renewed at once, and a lease
    /// not renewed is let go, before the next beat tells others to judge this
    /// worker's leases by their counters.
    pub(super) async fn switch_protocol(&self, state: &mut State, protocol: u32) {
        tracing::info!(worker_id = %self.config.worker_id, from = state.protocol, to = protocol, "the fleet switched protocols");
        state.protocol = protocol;
        state.heartbeat.protocol = protocol;
        metrics::gauge!(m::PROTOCOL).set(f64::from(protocol));
        let renewed = protocol == Heartbeat::RENEWALS;
        for held in state.held.values() {
            held.set_renewed(renewed);
        }
        if renewed {
            let renewals = state.held.values().map(|held| async move { (held.clone(), held.renew().await) });
            for (held, result) in futures::future::join_all(renewals).await {
                if !matches!(result, Ok(true)) {
                    tracing::warn!(shard_id = held.key(), "lease not renewed when switching to protocol 1; let go");
                    held.fenced();
                    state.held.remove(held.key());
                }
            }
            metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
        }
        state.beats.speak(protocol);
    }

    /// Takes a beat's answer, after [`Beats`] moved the fence: hands over the
    /// leases others asked for; if another worker marked this incarnation dead,
    /// lets every lease go and beats at once as a new incarnation. Answers for
    /// an incarnation already left behind are ignored.
    pub(super) fn on_beat(&self, state: &mut State, (_, heartbeat, result): Answer) {
        if heartbeat.incarnation != state.heartbeat.incarnation {
            return;
        }
        match result {
            Ok(Cas::Done(stored)) => {
                self.health.store_ok();
                metrics::counter!(m::HEARTBEATS).increment(1);
                for key in &stored.asks {
                    if let Some(held) = state.held.get(key) {
                        held.hand_off();
                    }
                }
                if stored.beat >= state.heartbeat.beat {
                    state.heartbeat = stored;
                }
            }
            Ok(Cas::Lost) => {
                metrics::counter!(m::HEARTBEAT_FAILURES, "reason" => "marked-dead").increment(1);
                let next = incarnation(&mut state.rng);
                tracing::warn!(
                    worker_id = %self.config.worker_id,
                    incarnation = %state.heartbeat.incarnation,
                    next_incarnation = %next,
                    leases = state.held.len(),
                    "another worker marked this incarnation dead; letting its leases go and beating as a new one"
                );
                self.let_go(state);
                state.heartbeat = Heartbeat {
                    protocol: state.protocol,
                    ..Heartbeat::new(self.config.worker_id.clone(), next.clone())
                };
                state.seen.set_incarnation(&next);
                // The old fence stays passed for whatever still holds it.
                state.beats.start(state.heartbeat.clone());
            }
            Err(e) => {
                metrics::counter!(m::HEARTBEAT_FAILURES, "reason" => "error").increment(1);
                tracing::warn!(worker_id = %self.config.worker_id, error = %e, "heartbeat failed");
            }
        }
    }

    /// The fence passed with leases held (no beat answered in time): every
    /// lease is let go at once, whatever its consumer is doing. The worker
    /// takes them back, as the same incarnation, once a beat is answered again
    /// and nobody marked it dead meanwhile.
    /// Whether it did.
    pub(super) fn fenced(&self, state: &mut State) -> bool {
        if state.held.is_empty() || !state.beats.fence().passed() {
            return false;
        }
        tracing::warn!(worker_id = %self.config.worker_id, leases = state.held.len(),
            "no heartbeat answered in time: the fence passed; letting every lease go");
        self.let_go(state);
        true
    }

    /// Lets every held lease go unreleased (the fence passed, or another worker
    /// marked this incarnation dead): consumers stop, nothing more is written.
    fn let_go(&self, state: &mut State) {
        let held = std::mem::take(&mut state.held);
        state.beats.holding(0);
        metrics::counter!(m::LEASES_LOST).increment(held.len() as u64);
        for held in held.into_values() {
            held.fenced();
        }
        metrics::gauge!(m::LEASES_HELD).set(0.0);
    }

    /// A graceful stop's last write, after every lease is released: the row goes,
    /// so that nobody watches a process that is gone.
    pub(super) async fn remove_heartbeat(&self, state: &State) {
        let row = state.beats.row();
        if let Err(e) = self.bounded(None, self.store.remove_heartbeat(&row)).await {
            tracing::warn!(worker_id = %self.config.worker_id, error = %e, "could not remove the heartbeat; it stops beating");
        }
    }
}

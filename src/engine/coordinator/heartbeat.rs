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

use rand::Rng;
use tokio::time::Instant;

use super::{State, Worker};
use crate::engine::held::fence_after;
use crate::fence::Fence;
use crate::leases::{Cas, Segment, StoreError};
use crate::metrics as m;
use crate::model::Heartbeat;

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
    }

    /// Sends one beat, with the number of leases held and the asks handled
    /// since the last, without waiting for its answer ([`on_beat`](Self::on_beat)
    /// takes it): beats go out every beat interval even while the table is slow
    /// to answer, and each answer moves the fence from the moment its beat was
    /// sent. A beat still unanswered when the fence passes is given up.
    pub(super) fn send_beat(&self, state: &mut State) {
        if state.beats.len() >= 3 {
            return; // three unanswered already: the table is cut off or stalled
        }
        let leases = u32::try_from(state.held.len()).unwrap_or(u32::MAX);
        let heartbeat = Heartbeat { protocol: state.protocol, ..state.heartbeat.clone() };
        let store = self.store.clone();
        let give_up = (Instant::now() + self.config.failover).max(state.beat_fence.at());
        state.beats.spawn(async move {
            let sent = Instant::now();
            let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let result = match tokio::time::timeout_at(give_up, store.beat(&heartbeat, leases, &sent_at)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError("no answer before the fence".into())),
            };
            (sent, heartbeat, result)
        });
    }

    /// Takes a beat's answer: moves the fence and hands over the leases others
    /// asked for; if another worker marked this incarnation dead, lets every
    /// lease go and sends the first beat of a new incarnation at once. Answers
    /// for an incarnation already left behind are ignored. Whether the beat
    /// failed (the next is due soon).
    pub(super) fn on_beat(
        &self,
        state: &mut State,
        (sent, heartbeat, result): (Instant, Heartbeat, Result<Cas<Heartbeat>, StoreError>),
    ) -> bool {
        if heartbeat.incarnation != state.heartbeat.incarnation {
            return false;
        }
        match result {
            Ok(Cas::Done(stored)) => {
                self.health.store_ok();
                metrics::counter!(m::HEARTBEATS).increment(1);
                let fence = fence_after(sent, self.config.failover);
                if fence > state.beat_fence.at() {
                    state.beat_fence.set(fence);
                }
                for key in &stored.asks {
                    if let Some(held) = state.held.get(key) {
                        held.hand_off();
                    }
                }
                if stored.beat >= state.heartbeat.beat {
                    state.heartbeat = stored;
                }
                false
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
                // The old fence stays passed for whatever still holds it.
                state.beat_fence = Fence::new(Instant::now());
                state.heartbeat = Heartbeat::new(self.config.worker_id.clone(), next.clone());
                state.seen.set_incarnation(&next);
                self.send_beat(state);
                false
            }
            Err(e) => {
                metrics::counter!(m::HEARTBEAT_FAILURES, "reason" => "error").increment(1);
                tracing::warn!(worker_id = %self.config.worker_id, error = %e, "heartbeat failed");
                true
            }
        }
    }

    /// The fence passed with leases held (no beat answered in time): every
    /// lease is let go at once, whatever its consumer is doing. The worker
    /// takes them back, as the same incarnation, once a beat is answered again
    /// and nobody marked it dead meanwhile.
    pub(super) fn fenced(&self, state: &mut State) {
        if state.held.is_empty() || !state.beat_fence.passed() {
            return;
        }
        tracing::warn!(worker_id = %self.config.worker_id, leases = state.held.len(),
            "no heartbeat answered in time: the fence passed; letting every lease go");
        self.let_go(state);
    }

    /// Lets every held lease go unreleased (the fence passed, or another worker
    /// marked this incarnation dead): consumers stop, nothing more is written.
    fn let_go(&self, state: &mut State) {
        let held = std::mem::take(&mut state.held);
        metrics::counter!(m::LEASES_LOST).increment(held.len() as u64);
        for held in held.into_values() {
            held.fenced();
        }
        metrics::gauge!(m::LEASES_HELD).set(0.0);
    }

    /// A graceful stop's last write, after every lease is released: the row goes,
    /// so that nobody watches a process that is gone.
    pub(super) async fn remove_heartbeat(&self, state: &State) {
        if let Err(e) = self.bounded(None, self.store.remove_heartbeat(&state.heartbeat)).await {
            tracing::warn!(worker_id = %self.config.worker_id, error = %e, "could not remove the heartbeat; it stops beating");
        }
    }
}

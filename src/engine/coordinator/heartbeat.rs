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

    /// Writes one beat, with the number of leases held and the asks handled
    /// since the last; moves the fence; hands over the leases others asked for.
    /// If another worker marked this incarnation dead, lets every lease go and
    /// writes the first beat of a new incarnation at once.
    pub(super) async fn beat(&self, state: &mut State) {
        let leases = u32::try_from(state.held.len()).unwrap_or(u32::MAX);
        for _ in 0..2 {
            let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let heartbeat = Heartbeat { protocol: state.protocol, ..state.heartbeat.clone() };
            let sent = Instant::now();
            match self.bounded(self.store.beat(&heartbeat, leases, &sent_at)).await {
                Ok(Cas::Done(stored)) => {
                    self.health.store_ok();
                    metrics::counter!(m::HEARTBEATS).increment(1);
                    state.beat_fence.set(fence_after(sent, self.config.failover));
                    for key in &stored.asks {
                        if let Some(held) = state.held.get(key) {
                            held.hand_off();
                        }
                    }
                    state.heartbeat = stored;
                    return;
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
                    for (_, held) in std::mem::take(&mut state.held) {
                        held.fenced();
                    }
                    metrics::gauge!(m::LEASES_HELD).set(0.0);
                    // The old fence stays passed for whatever still holds it.
                    state.beat_fence = Fence::new(Instant::now());
                    state.heartbeat = Heartbeat::new(self.config.worker_id.clone(), next.clone());
                    state.seen.set_incarnation(&next);
                }
                Err(e) => {
                    metrics::counter!(m::HEARTBEAT_FAILURES, "reason" => "error").increment(1);
                    tracing::warn!(worker_id = %self.config.worker_id, error = %e, "heartbeat failed");
                    return;
                }
            }
        }
    }

    /// A graceful stop's last write, after every lease is released: the row goes,
    /// so that nobody watches a process that is gone.
    pub(super) async fn remove_heartbeat(&self, state: &State) {
        if let Err(e) = self.bounded(self.store.remove_heartbeat(&state.heartbeat)).await {
            tracing::warn!(worker_id = %self.config.worker_id, error = %e, "could not remove the heartbeat; it stops beating");
        }
    }
}

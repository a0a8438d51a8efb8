//! The worker's heartbeat: one small row per process, written every heartbeat
//! period whatever the number of leases held, and removed at a graceful stop.
//!
//! Under protocol 1 ([`Heartbeat::PROTOCOL`]) leases are still renewed one by
//! one, as every earlier release and the Java KCL judge them; the heartbeat
//! tells `status` (and, once the fleet moves on, every worker) which processes
//! are alive, their incarnation and how many leases each holds.

use rand::Rng;

use super::{State, Worker};
use crate::leases::Cas;
use crate::metrics as m;
use crate::model::Heartbeat;

/// A new incarnation for this process: 64 random bits, in hex.
pub(super) fn incarnation(rng: &mut impl Rng) -> String {
    format!("{:016x}", rng.gen::<u64>())
}

impl Worker {
    /// Writes one beat, with the number of leases held; if another worker marked
    /// this incarnation dead, writes the first beat of a new one at once.
    pub(super) async fn beat(&self, state: &mut State) {
        let leases = u32::try_from(state.held.len()).unwrap_or(u32::MAX);
        for _ in 0..2 {
            let sent_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            match self.bounded(self.store.beat(&state.heartbeat, leases, &sent_at)).await {
                Ok(Cas::Done(stored)) => {
                    metrics::counter!(m::HEARTBEATS).increment(1);
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
                        "another worker marked this incarnation dead; beating as a new one"
                    );
                    state.heartbeat = Heartbeat::new(self.config.worker_id.clone(), next);
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

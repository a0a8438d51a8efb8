//! Keeping leases: renewing every held lease (and the zombie fence when
//! renewals fail), and releasing one so the next owner starts at once.

use futures::future::join_all;
use tokio::time::Instant;

use super::{State, Worker};
use crate::engine::held::HeldLease;
use crate::leases::Cas;
use crate::metrics as m;

impl Worker {
    pub(super) async fn renew_all(&self, state: &mut State) {
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
                        held.fenced();
                        metrics::counter!(m::LEASES_LOST).increment(1);
                        tracing::warn!(shard_id = held.key(), "lease not renewed in time; stopped processing");
                        state.held.remove(held.key());
                    }
                }
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
    }

    /// Releases a lease this worker holds (owner cleared) so the next owner starts
    /// at once; counts it, and the handoff it completes, when the release applies.
    pub(super) async fn release(&self, held: &HeldLease) {
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
}

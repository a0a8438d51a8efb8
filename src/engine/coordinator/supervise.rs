//! Supervising consumers: starting one per held lease, and handling each one
//! that exits (shard end, lease lost, stopped, panicked).

use std::sync::Arc;

use super::{InitialPosition, State, Worker};
use crate::engine::consumer::{Consumer, Exit};
use crate::engine::held::HeldLease;
use crate::metrics as m;

impl Worker {
    pub(super) fn start_consumer(&self, state: &mut State, held: Arc<HeldLease>) {
        let key = held.key().to_owned();
        state.held.insert(key.clone(), held.clone());
        let consumer = Consumer {
            hash_range: state.ranges.get(&key).copied(),
            held,
            stream: self.stream.clone(),
            closed: state.closed.clone(),
            processor: self.processor.clone(),
            config: self.config.consumer.clone(),
            initial_timestamp: match self.config.initial_position {
                InitialPosition::AtTimestamp(t) => Some(t),
                _ => None,
            },
        };
        let task = state.consumers.spawn(consumer.run());
        state.tasks.insert(task.id(), key);
    }

    /// Handles a finished consumer; returns whether a take round is due now.
    pub(super) async fn on_consumer_exit(
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
                // Only the lease this consumer ran: the worker may hold it again.
                if state.held.get(&key).is_some_and(|held| held.is_lost()) && state.held.remove(&key).is_some() {
                    metrics::counter!(m::LEASES_LOST).increment(1);
                    tracing::warn!(shard_id = %key, worker_id = %self.config.worker_id, "lease lost; consumer stopped");
                }
                metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
                // A fenced lease of this worker's is taken back once it beats again.
                true
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

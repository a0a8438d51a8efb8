//! The engine's one seam to what records are for.
//!
//! # Delivery contract
//!
//! - **One call at a time per shard, in order.** The engine hands a shard's
//!   records in slices of at most [`RecordProcessor::slice_len`], each after the
//!   previous call returned. Calls for different shards run concurrently.
//! - **At least once.** What a call reports durable is checkpointed by the
//!   engine (a processor never checkpoints, and cannot forget to). A crash, a
//!   lost lease or a handoff re-delivers what came after the last checkpoint,
//!   to this worker or another: make the effect idempotent (the tweet pipeline
//!   keys rows by tweet id, dead letters by shard and sequence number).
//! - **Overlap when a lease moves.** A worker that loses a lease (fenced,
//!   stolen, rewound) stops at once; for a short while its last call may still
//!   be running when the new owner starts from the checkpoint, so both may
//!   handle the same records.
//! - **Cancel-safe.** A call is dropped mid-way when the lease is lost: nothing
//!   it did is checkpointed, and the records are delivered again.

use async_trait::async_trait;
use tokio::time::Instant;

use crate::model::{Checkpoint, Record};

/// How far a slice is durable when [`RecordProcessor::process`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// Every record of the slice.
    All,
    /// The records before this index, and no further: the engine checkpoints
    /// the last of them and hands the rest again (after a pause).
    Before(usize),
}

/// What a worker (or the Lambda adapter) calls with each shard's records.
///
/// Implementations are shared by every shard of a process: `&self`, with
/// interior state where one is needed (a rate shared by all shards, say).
#[async_trait]
pub trait RecordProcessor: Send + Sync {
    /// Handles one slice of one shard's records and returns how far it is
    /// durable. `deadline`: return by then with what is durable so far (the
    /// Lambda's remaining time); `None`: return only once all of it is, or be
    /// dropped (the worker's, see the [module](self) for the contract).
    async fn process(&self, shard_id: &str, records: &[Record], deadline: Option<Instant>) -> Durable;

    /// The most records to hand in one call. A stop (shutdown, handoff) waits
    /// for the call in flight, so a slice should take about a second; the
    /// engine reads up to its `--max-records` and slices them.
    fn slice_len(&self) -> usize {
        usize::MAX
    }

    /// A shard's consumer started from `from` (its checkpoint).
    fn shard_started(&self, _shard_id: &str, _from: &Checkpoint) {}

    /// A shard is read to its end and `SHARD_END` is checkpointed.
    fn shard_ended(&self, _shard_id: &str) {}

    /// The lease is gone (fenced, stolen, rewound): nothing more of the shard
    /// will be checkpointed by this worker. Drop what is buffered for it.
    fn lease_lost(&self, _shard_id: &str) {}

    /// The number of live workers in the fleet changed (this one included):
    /// for a processor that shares a fleet-wide budget, such as a write rate.
    fn fleet_size_changed(&self, _workers: usize) {}

    /// Called about once a minute, from the worker's loop, within a bounded
    /// time: re-read limits, flush, report.
    async fn upkeep(&self) {}
}

//! The worker's configuration: [`WorkerConfig`] and its defaults, and where a
//! shard without a checkpoint starts ([`InitialPosition`]).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::engine::budget::ByteBudget;
use crate::engine::consumer::ConsumerConfig;
use crate::model::Checkpoint;
use crate::retrieval::polling::PollingConfig;
use crate::retrieval::Retrieval;

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

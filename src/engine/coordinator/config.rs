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
    /// `TRIM_HORIZON`: the oldest record the stream still retains.
    TrimHorizon,
    /// `LATEST`: only records put after the consumer starts reading.
    Latest,
    /// `AT_TIMESTAMP`: records that arrived at or after this time. The lease
    /// stores the position's kind; the worker hands the time to its consumers.
    AtTimestamp(DateTime<Utc>),
}

impl InitialPosition {
    /// The checkpoint a new lease starts with: [`Checkpoint::TrimHorizon`],
    /// [`Checkpoint::Latest`] or [`Checkpoint::AtTimestamp`] (without the time).
    pub fn checkpoint(self) -> Checkpoint {
        match self {
            Self::TrimHorizon => Checkpoint::TrimHorizon,
            Self::Latest => Checkpoint::Latest,
            Self::AtTimestamp(_) => Checkpoint::AtTimestamp,
        }
    }
}

/// A worker's settings. Start from [`WorkerConfig::new`] (`stream-worker run`'s
/// defaults) and change only the fields you need.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name in the lease table (`leaseOwner`). It must be unique in
    /// the fleet; a restarted process should take a new one.
    pub worker_id: String,
    /// The failover time (`--failover-time`, default 10 s): a lease whose counter
    /// this worker has not seen move for this long is expired and may be taken. The
    /// worker renews its leases every third of it, and stops touching a shard a
    /// tenth of it before its lease may be seen expired (the fence).
    pub failover: Duration,
    /// Most leases this worker holds (`--max-leases`); default `usize::MAX`, no
    /// limit.
    pub max_leases: usize,
    /// Most leases asked from a more loaded worker per take round
    /// (`--max-leases-to-steal`, default 2). A steal is a graceful handoff.
    pub max_leases_to_steal: usize,
    /// How often the shard list is read again to create leases for new shards
    /// (`--shard-sync-interval`, default 60 s). A shard end also creates the
    /// children's leases at once.
    pub shard_sync_interval: Duration,
    /// Where a newly found shard without a checkpoint starts (default
    /// [`InitialPosition::TrimHorizon`]). A shard whose parent is known starts at
    /// the trim horizon regardless, after its parents.
    pub initial_position: InitialPosition,
    /// Time allowed for the graceful stop: finish batches, checkpoint, release.
    pub shutdown_timeout: Duration,
    /// How each shard's consumer reads and checkpoints.
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

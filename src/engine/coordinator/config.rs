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
    /// The failover time (`--failover-time`, default 3.5 s): under protocol 2, a
    /// worker whose heartbeat this worker has not seen move for this long is
    /// dead, and its leases may be taken. The worker beats every
    /// [`beat_interval`](Self::beat_interval) and stops touching its shards a
    /// tenth of it after its last answered beat's send plus this time, before
    /// anyone may judge it dead (the fence).
    pub failover: Duration,
    /// The failover time of protocol 1 (`--renewal-failover-time`, default 10 s,
    /// as in earlier releases and the Java KCL): a lease judged by its counter
    /// (an owner that renews) is expired once this worker has not seen the
    /// counter move for this long. Under protocol 1 the worker renews every
    /// third of it. Set it to the older fleet's failover time while one runs.
    pub renewal_failover: Duration,
    /// Most leases this worker holds (`--max-leases`); default `usize::MAX`, no
    /// limit.
    pub max_leases: usize,
    /// Most leases asked of any one more loaded worker per take round
    /// (`--max-leases-to-steal`, default 2); several workers may be asked in a
    /// round, each down to the fair share. A steal is a graceful handoff.
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
            failover: DEFAULT_FAILOVER,
            renewal_failover: Duration::from_secs(10),
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

impl WorkerConfig {
    /// How often the worker beats: three sevenths of the failover time (1.5 s at
    /// the default 3.5 s), so that one lost beat, answered again within the
    /// tenth of the failover time kept as the fence's margin, does not stop it.
    pub fn beat_interval(&self) -> Duration {
        self.failover * 3 / 7
    }

    /// How often the worker reads the fleet's heartbeats: a third of the failover
    /// time, so that a dead worker's shards are taken within four thirds of it
    /// (4.7 s at the default) of its last beat.
    pub fn fleet_read_interval(&self) -> Duration {
        self.failover / 3
    }
}

/// `--failover-time`'s default: a killed worker's shards are processed again
/// within about 4.7 s (see [`WorkerConfig::fleet_read_interval`]).
pub const DEFAULT_FAILOVER: Duration = Duration::from_millis(3500);

/// `--checkpoint-interval`'s default: a crash reads again at most 10 s of each
/// shard, for at most one checkpoint write per shard per 10 s (at 5 records/s a
/// shard, 20 write units per 1,000 records).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// `--max-in-flight-bytes`' default: 128 MiB.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 128 << 20;

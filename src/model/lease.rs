use super::Checkpoint;

/// One shard's lease row, with the Java KCL 2.x attribute names in its store.
///
/// `counter` is the lease's version: every mutation is conditional on it and bumps
/// it, and other workers judge liveness by watching it move on their own clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// `leaseKey`: the shard id.
    pub key: String,
    /// `leaseOwner`: the worker id holding it; `None` once released.
    pub owner: Option<String>,
    /// `ownerIncarnation` (not in the KCL schema): the owner's incarnation when
    /// this worker took it, so that the owner's heartbeat row (`owner#incarnation`)
    /// keeps it under protocol 2. Removed by release and rewind; a take by an
    /// older release leaves it as it was, so it counts only where the row it
    /// names belongs to the owner.
    pub owner_incarnation: Option<String>,
    /// `leaseCounter`.
    pub counter: u64,
    /// `checkpoint` and `checkpointSubSequenceNumber`.
    pub checkpoint: Checkpoint,
    /// `ownerSwitchesSinceCheckpoint`: how often the lease changed hands without
    /// progress; a growing value points at a shard that makes workers fail.
    pub owner_switches: u64,
    /// `parentShardId`: shards that must reach `SHARD_END` before this one starts.
    pub parents: Vec<String>,
    /// `childShardIds`: recorded at shard end.
    pub children: Vec<String>,
    /// `handoffTo`: a worker that asked to take this lease over. The owner finishes
    /// its batch, checkpoints and releases; until the taker takes it, or for one
    /// failover time after the release, no other worker takes it.
    pub handoff_to: Option<String>,
    /// `recordsProcessed` (not in the KCL schema): records checkpointed on this
    /// shard so far, by every owner; its growth is the shard's records/s.
    pub records_processed: u64,
}

impl Lease {
    /// A fresh, unowned lease for a shard discovered by shard sync.
    pub fn new(key: impl Into<String>, checkpoint: Checkpoint, parents: Vec<String>) -> Self {
        Self {
            key: key.into(),
            owner: None,
            owner_incarnation: None,
            counter: 0,
            checkpoint,
            owner_switches: 0,
            parents,
            children: Vec::new(),
            handoff_to: None,
            records_processed: 0,
        }
    }

    /// Whether `worker_id` is the lease's owner (`leaseOwner`).
    pub fn is_owned_by(&self, worker_id: &str) -> bool {
        self.owner.as_deref() == Some(worker_id)
    }
}

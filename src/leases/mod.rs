//! Leases: who processes which shard, and how far it got.
//!
//! [`LeaseStore`] is the narrow edge over the lease table and, beside it, the
//! fleet's heartbeat table; [`dynamodb`] is the real one and [`memory`] its
//! in-memory twin. What uses them (renewals, take rounds,
//! the zombie fence) is the [engine](crate::engine).

pub mod dynamodb;
pub mod memory;

use async_trait::async_trait;

use crate::model::{Checkpoint, Fleet, Heartbeat, Lease};

/// The result of a conditional write: done, with the lease as now stored, or lost
/// because the row changed underneath (another worker took it, or it moved on).
/// Losing is a value, never an error, and never a reason to retry the same write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Cas<T> {
    /// The write was applied; holds the row as now stored (or `()` for writes that
    /// return none).
    Done(T),
    /// The row no longer matched (another worker took it, or its counter moved on);
    /// nothing was changed.
    Lost,
}

impl<T> Cas<T> {
    /// The stored value if the write was applied; `None` if it was lost.
    pub fn done(self) -> Option<T> {
        match self {
            Cas::Done(t) => Some(t),
            Cas::Lost => None,
        }
    }
}

/// A lease-store failure that is not a lost race: the store is unreachable,
/// throttling, or misconfigured. Callers retry later; they never assume success.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// The lease table, and the fleet's heartbeat table beside it.
///
/// Contract, for every implementation (checked by the conformance suite in
/// `tests/e2e/conformance.rs` against both):
/// - `create` inserts only if no row has the key.
/// - `take`, `renew`, `release`, `checkpoint`, `request_handoff` and `delete` apply
///   only if the stored `leaseCounter` equals the given lease's counter (and, for
///   all but `take` and `delete`, the stored owner equals the given lease's owner); otherwise
///   they return [`Cas::Lost`] and change nothing, unless the stored row already is
///   exactly what the mutation would store: then it returns [`Cas::Done`] with that
///   row. A retry of a write that was applied but whose answer was lost (an attempt
///   timeout, a dropped connection: the SDK retries both) thus finds its own write,
///   instead of reporting a lease lost that the table says it holds.
/// - Every applied mutation but `delete` and `request_handoff` stores
///   `counter + 1` and returns the row. `take` clears `handoff_to`; `release`
///   keeps it, so the worker that asked gets the lease first.
/// - `take` stores the taker's incarnation (`ownerIncarnation`) when given and
///   removes it otherwise; `release` and `rewind` remove it.
/// - Heartbeats: `beat` applies unless the incarnation's row is marked dead
///   (then [`Cas::Lost`], and it stays marked), or, for a heartbeat past its
///   first beat, the row is gone (removed at a graceful stop: a beat still on
///   its way must not bring it back); the first beat creates the row,
///   every beat adds one to `beat`, and removes the asks the given heartbeat
///   lists (handled). `mark_dead` applies only while the stored `beat` equals
///   the given one, or, for beat 0, while no row exists (a dead marker is put):
///   a beat the marker has not seen (a stale read) makes it [`Cas::Lost`]. A
///   row already marked dead is [`Cas::Done`]: the incarnation is dead either way.
///   `ask` adds a lease key to a live row's asks and does nothing to a missing
///   or dead row. `set_protocol` applies only if the stored protocol is `from`
///   (`None`: no protocol row yet).
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Creates the lease table and the heartbeat table if they do not exist and
    /// waits until they are usable.
    async fn ensure_table(&self) -> Result<(), StoreError>;
    /// Every lease row: a strongly consistent scan.
    async fn list(&self) -> Result<Vec<Lease>, StoreError>;
    /// The lease rows of one segment of the table as an eventually consistent
    /// scan sees them, for half the read units of [`list`](Self::list): what take
    /// rounds ([`Segment::WHOLE`]) and expiry watches (one segment of a parallel
    /// scan) read. The segments of a given total partition the table, and a row
    /// stays in its segment. A stale row is safe there: every take is conditional
    /// on the counter it saw, and a counter seen late only delays an expiry.
    async fn snapshot(&self, segment: Segment) -> Result<Vec<Lease>, StoreError>;
    /// One lease row (an eventually consistent GetItem), or `None`: how a worker
    /// watches the lease it asked to be handed, without scanning the table.
    async fn get(&self, key: &str) -> Result<Option<Lease>, StoreError>;
    /// Inserts `lease` as a new row; [`Cas::Lost`] if a row with its key exists
    /// (another worker created it first).
    async fn create(&self, lease: &Lease) -> Result<Cas<()>, StoreError>;
    /// Sets the owner to `owner` with no incarnation; counts an owner switch when
    /// it changes hands.
    async fn take(&self, lease: &Lease, owner: &str) -> Result<Cas<Lease>, StoreError> {
        self.take_as(lease, owner, None).await
    }
    /// Sets the owner to `owner`, in `incarnation` when given
    /// (`ownerIncarnation`); counts an owner switch when it changes hands.
    async fn take_as(&self, lease: &Lease, owner: &str, incarnation: Option<&str>) -> Result<Cas<Lease>, StoreError>;
    /// Bumps the counter if the counter and owner still match: the owner's proof
    /// to the other workers that it is alive. The worker renews every third of a
    /// failover time.
    async fn renew(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError>;
    /// Clears the owner so that any worker may take the lease at once.
    async fn release(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError>;
    /// Stores `checkpoint` (and the child shards, when given at shard end), adds
    /// `records` (processed since the last checkpoint) to `recordsProcessed` and
    /// resets `ownerSwitchesSinceCheckpoint`.
    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        children: &[String],
        records: u64,
    ) -> Result<Cas<Lease>, StoreError>;
    /// An operator's rewind (`stream-worker checkpoints rewind`): stores
    /// `checkpoint` whoever owns the lease, clears the owner and any handoff,
    /// and bumps the counter, so that the owner finds the lease lost at its
    /// next renewal or checkpoint and any worker takes it from `checkpoint`.
    async fn rewind(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Cas<Lease>, StoreError>;
    /// Deletes the row if its counter still matches (the owner is not checked).
    /// Shard sync uses it to remove the leases of finished parent shards.
    async fn delete(&self, lease: &Lease) -> Result<Cas<()>, StoreError>;
    /// Marks the lease for handoff to `to`, if the counter and owner still match.
    /// The one mutation that does not bump the counter: the owner's next renewal
    /// must succeed, and tell it to hand over.
    async fn request_handoff(&self, lease: &Lease, to: &str) -> Result<Cas<Lease>, StoreError>;
    /// Writes one more beat of `heartbeat`'s incarnation (its `protocol` and
    /// `speaks`), with `leases` held, sent at `sent_at` (the writer's wall clock,
    /// RFC 3339), and removes `heartbeat.asks` (handled since the last beat): the
    /// row as now stored, with the asks still open, or [`Cas::Lost`] if another
    /// worker marked the incarnation dead.
    async fn beat(&self, heartbeat: &Heartbeat, leases: u32, sent_at: &str) -> Result<Cas<Heartbeat>, StoreError>;
    /// The fleet: the protocol row and every heartbeat row, as one eventually
    /// consistent read (a Query) sees them.
    async fn fleet(&self) -> Result<Fleet, StoreError>;
    /// Every heartbeat row of the fleet, as one eventually consistent read sees
    /// them.
    async fn heartbeats(&self) -> Result<Vec<Heartbeat>, StoreError> {
        Ok(self.fleet().await?.workers)
    }
    /// Marks `heartbeat`'s incarnation dead (by the worker `by`) if its stored
    /// beat is still `heartbeat.beat` (for beat 0: if it has no row): what a
    /// worker that watched the beat stand still for the failover time writes
    /// before it takes that worker's leases.
    async fn mark_dead(&self, heartbeat: &Heartbeat, by: &str) -> Result<Cas<()>, StoreError>;
    /// Asks the incarnation `worker_id#incarnation` to let go of the lease `key`
    /// (a handoff request, a rewind); it learns of it in its next beat's answer.
    async fn ask(&self, worker_id: &str, incarnation: &str, key: &str) -> Result<(), StoreError>;
    /// Sets the fleet's protocol to `to` if it is `from` now (`None`: unset).
    async fn set_protocol(&self, from: Option<u32>, to: u32) -> Result<Cas<()>, StoreError>;
    /// Deletes the incarnation's row: a graceful stop's last write, after every
    /// lease is released.
    async fn remove_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), StoreError>;
}

/// One segment of a parallel scan: `index` of `total` (`0 <= index < total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Which segment, from 0 to `total - 1`.
    pub index: u32,
    /// How many segments the table is split into; 1 is the whole table.
    pub total: u32,
}

impl Segment {
    /// The whole table.
    pub const WHOLE: Segment = Segment { index: 0, total: 1 };
}

/// The lease as it would be stored after a successful conditional mutation; shared
/// by the implementations so that they agree on what each mutation changes.
pub(crate) mod apply {
    use super::*;

    pub fn take(lease: &Lease, owner: &str, incarnation: Option<&str>) -> Lease {
        let mut next = lease.clone();
        if !lease.is_owned_by(owner) {
            next.owner_switches += 1;
        }
        next.owner = Some(owner.to_owned());
        next.owner_incarnation = incarnation.map(str::to_owned);
        next.counter += 1;
        next.handoff_to = None;
        next
    }

    pub fn request_handoff(lease: &Lease, to: &str) -> Lease {
        Lease { handoff_to: Some(to.to_owned()), ..lease.clone() }
    }

    pub fn renew(lease: &Lease) -> Lease {
        Lease { counter: lease.counter + 1, ..lease.clone() }
    }

    pub fn release(lease: &Lease) -> Lease {
        Lease { owner: None, owner_incarnation: None, counter: lease.counter + 1, ..lease.clone() }
    }

    pub fn checkpoint(lease: &Lease, checkpoint: &Checkpoint, children: &[String], records: u64) -> Lease {
        let mut next = lease.clone();
        next.checkpoint = checkpoint.clone();
        next.owner_switches = 0;
        next.counter += 1;
        next.records_processed += records;
        if !children.is_empty() {
            next.children = children.to_vec();
        }
        next
    }

    pub fn rewind(lease: &Lease, checkpoint: &Checkpoint) -> Lease {
        Lease {
            owner: None,
            owner_incarnation: None,
            handoff_to: None,
            counter: lease.counter + 1,
            checkpoint: checkpoint.clone(),
            owner_switches: 0,
            ..lease.clone()
        }
    }
}

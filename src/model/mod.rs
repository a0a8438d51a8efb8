//! Pure values of the domain: records, sequence numbers, checkpoints, leases and
//! workers' heartbeats.
//!
//! Nothing here does I/O; the lease store and the stream client translate these
//! to and from AWS shapes.

mod checkpoint;
mod heartbeat;
mod lease;
mod record;

pub use checkpoint::{Checkpoint, CheckpointBackwards, SequenceNumber};
pub use heartbeat::{Fleet, Heartbeat};
pub use lease::Lease;
pub use record::{iso8601, truncate, HashRange, Record};

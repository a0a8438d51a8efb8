//! Pure values of the domain: sequence numbers, checkpoints and leases.
//!
//! Nothing here does I/O; the lease store and the stream client translate these
//! to and from AWS shapes.

mod checkpoint;
mod lease;

pub use checkpoint::{Checkpoint, CheckpointBackwards, SequenceNumber};
pub use lease::Lease;

//! The engine: a KCL-style worker that knows nothing of what records are for.
//!
//! [`coordinator`] runs a worker: it renews what it holds, takes what is
//! expired or due (the pure functions of [`taker`]), syncs the shard list
//! ([`sync`]) and runs a [`consumer`] per held lease ([`held`], with its zombie
//! fence) within a memory [`budget`]. Records go to the application through
//! one seam, [`RecordProcessor`]; the engine owns the checkpoints.

pub mod budget;
pub mod consumer;
pub mod coordinator;
pub mod held;
pub mod processor;
pub mod sync;
pub mod taker;

pub use processor::{Durable, RecordProcessor};

//! The per-shard consumer: read, process, checkpoint, until the shard ends, the
//! lease is lost, or the worker shuts down.

pub mod budget;
pub mod consumer;

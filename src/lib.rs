//! stream-worker: a real-time tweet pipeline on Kinesis and DynamoDB, and the
//! KCL-style engine it runs on.
//!
//! A producer puts tweets into a Kinesis stream; a fleet of `stream-worker run`
//! replicas or a Lambda function reads the stream and writes each tweet to a
//! DynamoDB table through one shared processing core. Replicas share the shards
//! through leases in a DynamoDB table with the Java KCL's schema.
//!
//! # The engine for your own application
//!
//! Implement [`engine::RecordProcessor`]; an [`engine::coordinator::Worker`]
//! gives it leases, checkpoints, failover, resharding and fan-out. The engine
//! checkpoints what the processor says is durable; the delivery contract is in
//! the trait's docs. A fuller example: `examples/archive.rs`.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//!
//! use stream_worker::engine::coordinator::{Worker, WorkerConfig};
//! use stream_worker::engine::{Durable, RecordProcessor};
//! use stream_worker::leases::{dynamodb::DynamoLeaseStore, LeaseStore as _};
//! use stream_worker::model::Record;
//! use stream_worker::retrieval::kinesis::KinesisStream;
//!
//! /// Counts the records it is handed.
//! #[derive(Default)]
//! struct Count(AtomicUsize);
//!
//! #[async_trait::async_trait]
//! impl RecordProcessor for Count {
//!     async fn process(&self, _shard: &str, records: &[Record], _deadline: Option<tokio::time::Instant>) -> Durable {
//!         self.0.fetch_add(records.len(), Ordering::Relaxed);
//!         Durable::All // the engine checkpoints the slice
//!     }
//! }
//!
//! # async fn run() -> anyhow::Result<()> {
//! let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//! let store = DynamoLeaseStore::new(aws_sdk_dynamodb::Client::new(&aws), "my-app-leases");
//! store.ensure_table().await?;
//! let worker = Worker::new(
//!     WorkerConfig::new("worker-1"), // `stream-worker run`'s defaults
//!     Arc::new(KinesisStream::new(aws_sdk_kinesis::Client::new(&aws), "my-stream")),
//!     Arc::new(store),
//!     Arc::new(Count::default()),
//! );
//! // Cancel the token to stop: the slices in flight finish, are checkpointed, leases released.
//! worker.run(tokio_util::sync::CancellationToken::new()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! Modules sit in layers; a module imports only from its own layer or those
//! below, and no import closes a circle ([`LAYERS`]; a test reads every path
//! into the crate and fails on one that points up).
//!
//! | layer | modules | what |
//! |---|---|---|
//! | 6 CLI | [`config`], [`app`], [`cli`] | flags and their env twins; per-command handlers that wire the layers below; the binaries' bodies |
//! | 5 operations | [`status`], [`dead_letters`], [`rewind`], [`protocol`], [`lambda`] | operator commands; the Lambda adapter |
//! | 4 applications | [`processor`], [`producer`] | the tweet pipeline (the engine's first [`engine::RecordProcessor`]); sources → PutRecords |
//! | 3 engine | [`engine`] | worker loop, take / renew / supervise, per-shard consumer, memory budget; knows no tweet |
//! | 2 edges | [`leases`], [`retrieval`], [`telemetry`] | the lease store and the stream client as narrow traits with memory twins; logs and the HTTP endpoints |
//! | 1 plumbing | [`aws`], [`fence`], [`kpl`], [`retry`], [`metrics`], [`health`], [`shutdown`], [`http`] | the SDK's config and errors, the write fence, the KPL format, backoff, metric names, plain local HTTP |
//! | 0 model | [`model`] | pure values: records, positions, checkpoints, leases |
//!
//! `src/main.rs` and `src/bin/lambda.rs` are the entry points above them all:
//! each chooses the allocator and calls its body in [`cli`].
//!
//! # Features
//!
//! The default features build both binaries. A crate that only runs the engine
//! depends on `stream-worker = { default-features = false }`: the engine, its
//! edges and the tweet processor, without clap, axum, the producer, Secrets
//! Manager, the Lambda runtime or jemalloc.
//!
//! | feature | what it adds |
//! |---|---|
//! | `cli` | the `stream-worker` binary's modules: [`config`], [`app`], [`cli`] (the binaries' bodies), the operator commands, [`telemetry`] (logs, `/metrics`, `/readyz`) |
//! | `producer` | [`producer`]: file, synthetic and X API sources → PutRecords |
//! | `lambda` | [`lambda`], the Lambda adapter, and the `stream-worker-lambda` function |
//! | `jemalloc` | jemalloc as the binaries' allocator |
//!
//! Every public item of the library's modules has a doc comment (`missing_docs`
//! is a warning there, and CI denies warnings).

/// Each module's layer (see the table above): an import may point to the
/// same layer or a lower one, never up.
pub const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("aws", 1),
    ("fence", 1),
    ("kpl", 1),
    ("retry", 1),
    ("metrics", 1),
    ("health", 1),
    ("shutdown", 1),
    ("http", 1),
    ("leases", 2),
    ("retrieval", 2),
    ("telemetry", 2),
    ("engine", 3),
    ("processor", 4),
    ("producer", 4),
    ("status", 5),
    ("dead_letters", 5),
    ("rewind", 5),
    ("protocol", 5),
    ("lambda", 5),
    ("config", 6),
    ("app", 6),
    ("cli", 6),
];

#[cfg(feature = "cli")]
pub mod app;
#[warn(missing_docs)]
pub mod aws;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
#[cfg(feature = "cli")]
pub mod dead_letters;
#[warn(missing_docs)]
pub mod engine;
#[warn(missing_docs)]
pub mod fence;
#[warn(missing_docs)]
pub mod health;
#[warn(missing_docs)]
pub mod http;
#[warn(missing_docs)]
pub mod kpl;
#[cfg(feature = "lambda")]
#[warn(missing_docs)]
pub mod lambda;
#[warn(missing_docs)]
pub mod leases;
#[warn(missing_docs)]
pub mod metrics;
#[warn(missing_docs)]
pub mod model;
#[warn(missing_docs)]
pub mod processor;
#[cfg(feature = "producer")]
pub mod producer;
#[cfg(feature = "cli")]
pub mod protocol;
#[warn(missing_docs)]
pub mod retrieval;
#[warn(missing_docs)]
pub mod retry;
#[cfg(feature = "cli")]
pub mod rewind;
#[warn(missing_docs)]
pub mod shutdown;
#[cfg(feature = "cli")]
pub mod status;
#[cfg(feature = "cli")]
pub mod telemetry;

#[cfg(test)]
mod layers;

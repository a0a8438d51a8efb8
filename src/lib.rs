//! stream-worker: a real-time tweet pipeline on Kinesis and DynamoDB.
//!
//! A producer puts tweets into a Kinesis stream; a fleet of `stream-worker run`
//! replicas or a Lambda function reads the stream and writes each tweet to a
//! DynamoDB table through one shared processing core. Replicas share the shards
//! through leases in a DynamoDB table with the Java KCL's schema.
//!
//! # Layout
//!
//! - [`model`]: pure values — sequence numbers, checkpoints, leases.
//! - [`leases`]: the lease store (DynamoDB and in-memory), the pure taker, the
//!   held lease with its zombie fence, and the coordinator that runs a worker.
//! - [`retrieval`]: the stream client (Kinesis GetRecords polling).
//! - [`lifecycle`]: the per-shard consumer: read, process, checkpoint.
//! - [`processor`]: the shared core — decode tweets, write items under the rate
//!   limit, dead-letter what can never be written.
//! - [`lambda`]: the Lambda path — a Kinesis event → the core → the first
//!   record not written, for the event source mapping to retry from
//!   (`src/bin/lambda.rs` is the function's binary).
//! - [`producer`]: synthetic, file and X API sources → batched PutRecords.
//! - [`kpl`]: the KPL's aggregated record format, read and written.
//! - [`status`]: the `status` report; [`dead_letters`]: list, replay and purge
//!   dead letters; [`rewind`]: move checkpoints back under a running fleet.
//! - [`aws`], [`config`], [`telemetry`], [`health`], [`shutdown`], [`metrics`],
//!   [`retry`]: the edges and plumbing; [`app`] wires them for the CLI.

pub mod app;
pub mod aws;
pub mod config;
pub mod dead_letters;
pub mod health;
pub mod kpl;
pub mod lambda;
pub mod leases;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod processor;
pub mod producer;
pub mod retrieval;
pub mod retry;
pub mod rewind;
pub mod shutdown;
pub mod status;
pub mod telemetry;

//! `stream-worker checkpoints`: moving checkpoints (`rewind`).

use clap::{Args, Subcommand};

use super::{parse_initial_position, LogArgs, DEFAULT_LEASE_TABLE};
use crate::engine::coordinator::InitialPosition;

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Move shards' checkpoints to a new position while the fleet runs. Each
    /// lease is rewritten conditionally, with its owner cleared and its counter
    /// moved: the owner finds the lease lost at its next renewal and stops
    /// without checkpointing, and a worker takes it again from the new position.
    /// Children of a shard moved back wait until it is read again to its end.
    /// Shows the plan and asks first on a terminal; --yes otherwise
    Rewind(RewindArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RewindArgs {
    /// Kinesis stream of the fleet
    #[arg(long, env = "STREAM_WORKER_STREAM")]
    pub stream: String,

    /// Lease table of the fleet
    #[arg(long, env = "STREAM_WORKER_LEASE_TABLE", default_value = DEFAULT_LEASE_TABLE)]
    pub lease_table: String,

    /// The new position: trim-horizon (everything retained), latest (only
    /// records put from now on), or at-timestamp:<RFC 3339> (records that arrived
    /// at or after it; resolved per shard by reading it from its trim horizon).
    /// The AWS spelling works too: TRIM_HORIZON, LATEST, AT_TIMESTAMP:<RFC 3339>
    #[arg(long, value_parser = parse_initial_position)]
    pub to: InitialPosition,

    /// Only these shards (repeat the flag), and the children of any moved back [default: every shard]
    #[arg(long = "shard", value_name = "SHARD_ID")]
    pub shards: Vec<String>,

    /// Print each shard's before → after and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Rewind without asking (needed when standard input is not a terminal)
    #[arg(long)]
    pub yes: bool,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

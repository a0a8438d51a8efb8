//! `stream-worker consumer`: the registered stream consumer that fan-out reads
//! through, and its name (`--consumer-name`, shared with `run`).

use clap::{Args, Subcommand};

use super::{LogArgs, DEFAULT_LEASE_TABLE};

#[derive(Debug, Subcommand)]
pub enum ConsumerCommand {
    /// Deregister the stream consumer (workers never do). Fan-out workers still
    /// running lose their subscriptions and register it again. Asks first on a
    /// terminal; --yes otherwise
    Deregister(ConsumerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerArgs {
    /// Kinesis stream the consumer is registered on
    #[arg(long, env = "STREAM_WORKER_STREAM")]
    pub stream: String,

    #[command(flatten)]
    pub name: ConsumerNameArgs,

    /// Say whether the consumer is registered and would be deregistered; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Deregister without asking (needed when standard input is not a terminal)
    #[arg(long)]
    pub yes: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

/// The stream consumer's name: `--consumer-name`, or the lease table's.
#[derive(Debug, Clone, Args)]
pub struct ConsumerNameArgs {
    /// Name of the registered stream consumer fan-out reads through [default: the lease table's name]
    #[arg(long, env = "STREAM_WORKER_CONSUMER_NAME")]
    pub consumer_name: Option<String>,

    /// DynamoDB table of shard leases and checkpoints (KCL schema); `run` creates it if
    /// absent. Replicas of one application share it; another application needs its own
    #[arg(long, env = "STREAM_WORKER_LEASE_TABLE", default_value = DEFAULT_LEASE_TABLE)]
    pub lease_table: String,
}

impl ConsumerNameArgs {
    pub fn consumer_name(&self) -> &str {
        self.consumer_name.as_deref().unwrap_or(&self.lease_table)
    }
}

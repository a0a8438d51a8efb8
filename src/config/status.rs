//! `stream-worker status` (the shards' leases, once or watched) and
//! `stream-worker healthcheck` (a running worker's readiness).

use std::time::Duration;

use clap::Args;

use super::{parse_duration, LogArgs, DEFAULT_DEAD_LETTER_TABLE, DEFAULT_LEASE_TABLE, DEFAULT_TWEETS_TABLE};

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// URL to GET; exit 0 when it answers 200. /healthz tells that the process
    /// answers, /readyz that it can work
    #[arg(long, env = "STREAM_WORKER_HEALTHCHECK_URL", default_value = "http://127.0.0.1:9464/readyz")]
    pub url: String,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Kinesis stream whose shards to show
    #[arg(long, env = "STREAM_WORKER_STREAM")]
    pub stream: String,

    /// Lease table of the application
    #[arg(long, env = "STREAM_WORKER_LEASE_TABLE", default_value = DEFAULT_LEASE_TABLE)]
    pub lease_table: String,

    /// Tweets table whose write limit the fleet shares
    #[arg(long, env = "STREAM_WORKER_TWEETS_TABLE", default_value = DEFAULT_TWEETS_TABLE)]
    pub tweets_table: String,

    /// Dead-letter table whose write limit the fleet shares
    #[arg(long, env = "STREAM_WORKER_DEAD_LETTER_TABLE", default_value = DEFAULT_DEAD_LETTER_TABLE)]
    pub dead_letter_table: String,

    /// Print JSON (`{"shards": [...], "live_workers": N, "write_limits": [...]}`) instead of tables
    #[arg(long)]
    pub json: bool,

    /// Watch the lease table this long and report leases whose counter did not
    /// move as `expired` (use the fleet's --failover-time); 0 = one snapshot
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub observe: Duration,

    /// Show the table again every INTERVAL (default 2s) until Ctrl-C, with each
    /// shard's records/s and the workers seen: redrawn in place on a terminal,
    /// one block per view otherwise (one JSON object per line with --json).
    /// Leases not renewed within --failover-time show as `expired`
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = parse_duration)]
    pub watch: Option<Duration>,

    /// The fleet's failover time, to judge expiry with --observe or --watch:
    /// a worker whose heartbeat stood still this long is dead (protocol 2)
    #[arg(long, env = "STREAM_WORKER_FAILOVER_TIME", default_value = "3500ms", value_parser = parse_duration)]
    pub failover_time: Duration,

    /// The fleet's protocol 1 failover time: a lease judged by its counter
    /// (protocol 1, older releases) that stood still this long is expired
    #[arg(long, env = "STREAM_WORKER_RENEWAL_FAILOVER_TIME", default_value = "10s", value_parser = parse_duration)]
    pub renewal_failover_time: Duration,

    #[command(flatten)]
    pub log: LogArgs,
}

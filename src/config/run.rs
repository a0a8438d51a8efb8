//! `stream-worker run`: the worker's flags, and how it reads its shards.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{
    parse_bytes, parse_duration, parse_initial_position, parse_metrics_addr, ConsumerNameArgs, LogArgs, MetricsAddr,
    ProcessorArgs,
};
use crate::engine::coordinator::InitialPosition;

/// How `run` reads its shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RetrievalMode {
    /// GetRecords: shares each shard's 2 MB/s and 5 calls/s with every other polling consumer
    Polling,
    /// SubscribeToShard (enhanced fan-out): 2 MB/s per shard of its own, pushed (~70 ms on AWS); billed per
    /// consumer-shard hour and per GB
    #[value(alias = "fan_out")]
    FanOut,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kinesis stream to consume
    #[arg(long, env = "STREAM_WORKER_STREAM")]
    pub stream: String,

    #[command(flatten)]
    pub processor: ProcessorArgs,

    #[command(flatten)]
    pub consumer: ConsumerNameArgs,

    /// How shards are read: polling (GetRecords) or fan-out (SubscribeToShard through the
    /// registered stream consumer --consumer-name, registered if absent)
    #[arg(long, env = "STREAM_WORKER_RETRIEVAL", value_enum, ignore_case = true, default_value_t = RetrievalMode::Polling)]
    pub retrieval: RetrievalMode,

    /// Fan-out: replace each subscription after this long (AWS ends them after 5 minutes)
    /// [default: when the service ends it]
    #[arg(long, env = "STREAM_WORKER_FAN_OUT_SUBSCRIPTION_LIFETIME", value_parser = parse_duration)]
    pub fan_out_subscription_lifetime: Option<Duration>,

    /// This replica's name in the lease table [default: HOSTNAME-PID-RANDOM]
    #[arg(long, env = "STREAM_WORKER_WORKER_ID")]
    pub worker_id: Option<String>,

    /// Where a shard without a checkpoint starts: trim-horizon (everything retained),
    /// latest (only new records), or at-timestamp:<RFC 3339>; or in the AWS spelling,
    /// TRIM_HORIZON, LATEST, AT_TIMESTAMP:<RFC 3339>
    #[arg(long, env = "STREAM_WORKER_INITIAL_POSITION", default_value = "trim-horizon", value_parser = parse_initial_position)]
    pub initial_position: InitialPosition,

    /// A replica whose heartbeat stands still this long is dead, and others take
    /// its shards (protocol 2). It beats every 3/7 of this time and stops
    /// writing before others may judge it dead
    #[arg(long, env = "STREAM_WORKER_FAILOVER_TIME", default_value = "3500ms", value_parser = parse_duration)]
    pub failover_time: Duration,

    /// Under protocol 1 (a fleet with releases before protocol 2, or rolled
    /// back): a lease not renewed for this long is taken over. Keep it equal to
    /// the older replicas' --failover-time
    #[arg(long, env = "STREAM_WORKER_RENEWAL_FAILOVER_TIME", default_value = "10s", value_parser = parse_duration)]
    pub renewal_failover_time: Duration,

    /// At most one checkpoint per shard this often (always at shutdown, handoff and a
    /// shard's end): a crash reads again at most this long of each shard's records,
    /// harmlessly (rows are keyed by tweet id). 0s: after every written slice
    #[arg(long, env = "STREAM_WORKER_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// Most leases asked of any one more loaded replica per take round (several may
    /// be asked in a round, each down to the fair share)
    #[arg(long, env = "STREAM_WORKER_MAX_LEASES_TO_STEAL", default_value_t = 2)]
    pub max_leases_to_steal: usize,

    /// Most leases this replica holds [default: unlimited]
    #[arg(long, env = "STREAM_WORKER_MAX_LEASES")]
    pub max_leases: Option<usize>,

    /// How often the shard list is re-read to find new shards (also done at each shard end)
    #[arg(long, env = "STREAM_WORKER_SHARD_SYNC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub shard_sync_interval: Duration,

    /// Records per GetRecords call (1-10000)
    #[arg(long, env = "STREAM_WORKER_MAX_RECORDS", default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=10000))]
    pub max_records: i32,

    /// Memory budget: bytes of records read and not yet written, all shards
    /// together (e.g. 64MiB, 1GB). A shard waits to read while the budget is
    /// used; 0 = no budget
    #[arg(long, env = "STREAM_WORKER_MAX_IN_FLIGHT_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub max_in_flight_bytes: u64,

    /// Least time between GetRecords calls on a shard; Kinesis allows 5 per second (>= 200ms)
    #[arg(long, env = "STREAM_WORKER_POLL_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Wait after a GetRecords call that returned nothing
    #[arg(long, env = "STREAM_WORKER_IDLE_POLL_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub idle_poll_interval: Duration,

    /// Time allowed on SIGTERM/Ctrl-C to finish in-flight batches, checkpoint and release leases
    #[arg(long, env = "STREAM_WORKER_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Address of the HTTP endpoints: GET /metrics (Prometheus), /healthz, /readyz.
    /// Port 0 takes any free port (logged at start-up); `none` serves no endpoints.
    /// Replicas on one host need one port each
    #[arg(long, env = "STREAM_WORKER_METRICS_ADDR", default_value = "0.0.0.0:9464", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

impl RunArgs {
    /// Checks what clap cannot; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval < Duration::from_millis(200) {
            return Err(
                "--poll-interval must be at least 200ms (Kinesis allows 5 GetRecords calls per second per shard)"
                    .into(),
            );
        }
        if self.failover_time < Duration::from_millis(300) {
            return Err("--failover-time must be at least 300ms".into());
        }
        if self.renewal_failover_time < Duration::from_millis(300) {
            return Err("--renewal-failover-time must be at least 300ms".into());
        }
        if self.shutdown_timeout < Duration::from_millis(100) {
            return Err("--shutdown-timeout must be at least 100ms".into());
        }
        if self.max_leases == Some(0) {
            return Err("--max-leases must be at least 1".into());
        }
        Ok(())
    }

    pub fn worker_id(&self) -> String {
        self.worker_id.clone().unwrap_or_else(|| {
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
        })
    }
}

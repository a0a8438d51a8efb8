//! Command-line configuration: every flag of `run` and `produce` has a
//! `STREAM_WORKER_*` environment twin (the other commands have twins for the
//! stream and table names); defaults are the constants below and are shown by
//! `--help`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::coordinator::InitialPosition;
use crate::telemetry::LogFormat;

pub const DEFAULT_TWEETS_TABLE: &str = "tweets";
pub const DEFAULT_LEASE_TABLE: &str = "stream-worker-leases";
pub const DEFAULT_DEAD_LETTER_TABLE: &str = "stream-worker-dead-letters";

/// `stream-worker --version`: the package's version and the commit it was
/// built from (`build.rs`: git, or `STREAM_WORKER_COMMIT` where the build has
/// no `.git`, as the image's).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("STREAM_WORKER_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "stream-worker",
    version = VERSION,
    about = "Real-time tweet pipeline on Kinesis and DynamoDB: a KCL-style consumer fleet and its producer",
    long_about = "Real-time tweet pipeline on Kinesis and DynamoDB.\n\n\
        `run` consumes a stream with any number of replicas sharing its shards through leases in DynamoDB; \
        `produce` puts tweets into the stream.\n\n\
        AWS region, credentials and endpoints come from the standard AWS chain: AWS_REGION, AWS_PROFILE, \
        AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, instance and task roles, AWS_ENDPOINT_URL, \
        AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_DYNAMODB.\n\n\
        The settings of `run` and `produce`, and the names of streams and tables everywhere, can also be \
        set through the environment variable shown in their help ([env: …]); the options of one-off \
        commands (`status --watch`, `dead-letters --reason`, `checkpoints rewind --to`, …) are flags only.\n\n\
        Values are spelled in any case, with - or _ alike: trim-horizon is TRIM_HORIZON (the AWS \
        spelling), fan-out is FAN_OUT. Durations take a unit: 500ms, 10s, 5m, 1h."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consume a stream: take shard leases, write tweets to DynamoDB, checkpoint
    Run(RunArgs),
    /// Put tweets into a stream: from the X API (filtered or sample stream), a file, or synthetic
    Produce(ProduceArgs),
    /// Show each shard's lease: owner, checkpoint, parents, state, how far behind
    Status(StatusArgs),
    /// Ask a running worker whether it is ready (for images without a shell or curl)
    Healthcheck(HealthcheckArgs),
    /// List dead letters, replay them through the current processing core, or purge them
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Move checkpoints back (or to the end), safely while the fleet runs
    #[command(subcommand)]
    Checkpoints(CheckpointsCommand),
    /// Manage the registered stream consumer that `run --retrieval fan-out` reads through
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Print a shell completion script, e.g. `stream-worker completions bash > /etc/bash_completion.d/stream-worker`
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum, ignore_case = true)]
    pub shell: clap_complete::Shell,
}

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

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Show the dead letters that match (one JSON object per line with --json)
    List(DeadLettersList),
    /// Run each matching dead letter's stored bytes through the current
    /// processing core: a record that now becomes a tweet is written and its
    /// dead letter deleted; one that still fails keeps its dead letter, with the
    /// new reason and ReplayCount one higher. Safe to run twice at once
    Replay(DeadLettersReplay),
    /// Delete the matching dead letters (asks first on a terminal; --yes otherwise)
    Purge(DeadLettersPurge),
}

#[derive(Debug, Clone, Args)]
pub struct DeadLetterFilterArgs {
    /// Only dead letters with this reason: not-json, not-a-tweet, invalid-field, too-large or
    /// rejected-by-sink (stored and counted as not_json, …)
    #[arg(long, value_parser = parse_reason)]
    pub reason: Option<String>,

    /// Only these shards' dead letters (repeat the flag), e.g. shardId-000000000001 [default: every shard]
    #[arg(long = "shard", value_name = "SHARD_ID")]
    pub shards: Vec<String>,

    /// Only dead letters written at or after this time: RFC 3339 (2026-01-31T12:00:00Z)
    /// or a duration ago (30m, 2h, 7days)
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,

    /// At most this many dead letters
    #[arg(long)]
    pub limit: Option<usize>,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub log: LogArgs,
}

impl DeadLetterFilterArgs {
    pub fn filter(&self) -> crate::dead_letters::Filter {
        crate::dead_letters::Filter {
            reason: self.reason.clone(),
            shards: self.shards.clone(),
            since: self.since,
            limit: self.limit,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DeadLettersList {
    /// DynamoDB table of dead letters
    #[arg(long, env = "STREAM_WORKER_DEAD_LETTER_TABLE", default_value = DEFAULT_DEAD_LETTER_TABLE)]
    pub dead_letter_table: String,

    #[command(flatten)]
    pub filter: DeadLetterFilterArgs,
}

#[derive(Debug, Clone, Args)]
pub struct DeadLettersReplay {
    #[command(flatten)]
    pub processor: ProcessorArgs,

    #[command(flatten)]
    pub filter: DeadLetterFilterArgs,

    /// Say what would happen (which dead letters decode into tweets now) without writing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DeadLettersPurge {
    /// DynamoDB table of dead letters
    #[arg(long, env = "STREAM_WORKER_DEAD_LETTER_TABLE", default_value = DEFAULT_DEAD_LETTER_TABLE)]
    pub dead_letter_table: String,

    #[command(flatten)]
    pub filter: DeadLetterFilterArgs,

    /// Delete without asking (needed when standard input is not a terminal)
    #[arg(long)]
    pub yes: bool,
}

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

    /// The fleet's failover time, to judge expiry with --observe or --watch
    #[arg(long, env = "STREAM_WORKER_FAILOVER_TIME", default_value = "10s", value_parser = parse_duration)]
    pub failover_time: Duration,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format; the level filter comes from RUST_LOG (default: info)
    #[arg(long, env = "STREAM_WORKER_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The processing core's settings, shared by `stream-worker run` (flags and env)
/// and the Lambda function (env only, the same names).
#[derive(Debug, Clone, Args)]
pub struct ProcessorArgs {
    /// DynamoDB table the tweets are written to (key `Id`)
    #[arg(long, env = "STREAM_WORKER_TWEETS_TABLE", default_value = DEFAULT_TWEETS_TABLE)]
    pub tweets_table: String,

    /// DynamoDB table of records that can never be written as tweets (key `ShardId` + `SequenceNumber`)
    #[arg(long, env = "STREAM_WORKER_DEAD_LETTER_TABLE", default_value = DEFAULT_DEAD_LETTER_TABLE)]
    pub dead_letter_table: String,

    /// Hard ceiling on the write rate to each table, in write capacity units (1 KB
    /// of item) per second, for this process, all shards together; 0 = none. The
    /// rate adapts below it: unlimited until DynamoDB throttles, cut to 70 % of
    /// what was sent at each throttle, raised again while writes go through
    #[arg(long, env = "STREAM_WORKER_MAX_WRITE_RATE", default_value_t = 0)]
    pub max_write_rate: u32,

    /// Days a tweet is kept before DynamoDB's TTL deletes it (sets `ExpirationTime`)
    #[arg(long, env = "STREAM_WORKER_TTL_DAYS", default_value_t = 7)]
    pub ttl_days: u32,
}

impl ProcessorArgs {
    /// The ceiling, if any.
    pub fn max_write_rate(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.max_write_rate)
    }

    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.ttl_days) * 86_400)
    }

    /// The tweet pipeline on these DynamoDB tables.
    pub fn build(&self, dynamodb: aws_sdk_dynamodb::Client) -> crate::processor::Processor {
        use crate::processor::sink::DynamoTable;
        crate::processor::Processor::new(
            std::sync::Arc::new(DynamoTable::new(dynamodb.clone(), &self.tweets_table)),
            std::sync::Arc::new(DynamoTable::new(dynamodb, &self.dead_letter_table)),
            self.max_write_rate(),
            self.ttl(),
        )
    }
}

/// The Lambda function's configuration: the environment alone (no flags), with
/// the names and defaults of `stream-worker run`'s twins.
#[derive(Debug, Clone, Parser)]
#[command(name = "stream-worker-lambda")]
pub struct LambdaArgs {
    #[command(flatten)]
    pub processor: ProcessorArgs,
}

impl LambdaArgs {
    /// Reads the `STREAM_WORKER_*` variables; the error names the variable.
    pub fn from_env() -> Result<Self, String> {
        Self::try_parse_from(["stream-worker-lambda"]).map_err(|e| {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            format!("invalid environment: {first}")
        })
    }
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

    /// A lease not renewed for this long is taken over by another replica
    #[arg(long, env = "STREAM_WORKER_FAILOVER_TIME", default_value = "10s", value_parser = parse_duration)]
    pub failover_time: Duration,

    /// At most one checkpoint per shard this often (always at shutdown, handoff and a
    /// shard's end): a crash reads again at most this long of each shard's records,
    /// harmlessly (rows are keyed by tweet id). 0s: after every written slice
    #[arg(long, env = "STREAM_WORKER_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub checkpoint_interval: Duration,

    /// Most leases stolen from a more loaded replica per take round
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Synthetic,
    File(PathBuf),
    /// The X API v2 filtered stream.
    XApi,
    /// The X API v2 sampled stream.
    XApiSample,
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((kind, path)) if spelling(kind) == "file" && !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            _ => match spelling(s).as_str() {
                "synthetic" => Ok(Self::Synthetic),
                "x-api" => Ok(Self::XApi),
                "x-api-sample" => Ok(Self::XApiSample),
                _ => Err(format!("unknown source {s:?}: expected synthetic, file:PATH, x-api or x-api-sample")),
            },
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProduceArgs {
    /// Kinesis stream to put tweets into
    #[arg(long, env = "STREAM_WORKER_STREAM")]
    pub stream: String,

    /// Where tweets come from: synthetic; file:PATH (JSON lines, one tweet per line, replayed in order);
    /// x-api (the X API v2 filtered stream, with --rule/--rules-file); x-api-sample (the sampled stream).
    /// The X API sources read the bearer token from X_BEARER_TOKEN or --bearer-token-secret
    #[arg(long, env = "STREAM_WORKER_SOURCE", default_value = "synthetic")]
    pub source: Source,

    /// A filtered-stream rule (repeatable), e.g. --rule 'lang:en #rustlang'. With --rules-file,
    /// the rules of both are wanted. The variable gives one rule
    #[arg(long = "rule", value_name = "VALUE", env = "STREAM_WORKER_RULE")]
    pub rules: Vec<String>,

    /// Filtered-stream rules as JSON: [{"value": "lang:en #rustlang", "tag": "rust"}, …]
    #[arg(long, env = "STREAM_WORKER_RULES_FILE")]
    pub rules_file: Option<PathBuf>,

    /// Leave the stream's other rules alone (default: delete rules not given). Without any
    /// --rule or --rules-file the rules are never changed
    #[arg(long, env = "STREAM_WORKER_KEEP_RULES")]
    pub keep_rules: bool,

    /// Base URL of the X API
    #[arg(long, env = "STREAM_WORKER_X_API_URL", default_value = "https://api.x.com")]
    pub x_api_url: String,

    /// AWS Secrets Manager secret (ARN or name) holding the X API bearer token, instead of the
    /// X_BEARER_TOKEN variable: the secret string is the token, or JSON with a "bearer_token" key
    #[arg(long, env = "STREAM_WORKER_BEARER_TOKEN_SECRET")]
    pub bearer_token_secret: Option<String>,

    /// Reconnect after this long with neither data nor a keep-alive from the X stream
    /// (X sends a keep-alive every 20 s)
    #[arg(long, env = "STREAM_WORKER_X_API_STALL_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub x_api_stall_timeout: Duration,

    /// Stop after this many records [default: 1000 for synthetic when --duration is not given; a file's length]
    #[arg(long, env = "STREAM_WORKER_COUNT")]
    pub count: Option<u64>,

    /// Records per second [default: as fast as PutRecords accepts]
    #[arg(long, env = "STREAM_WORKER_RATE")]
    pub rate: Option<NonZeroU32>,

    /// Stop after this long (e.g. 90s, 10m, 2h)
    #[arg(long, env = "STREAM_WORKER_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Seed of the synthetic generator: the same seed gives the same tweets
    #[arg(long, env = "STREAM_WORKER_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Share of synthetic records that are deliberately malformed (0.0-1.0)
    #[arg(long, env = "STREAM_WORKER_MALFORMED_RATIO", default_value_t = 0.0)]
    pub malformed_ratio: f64,

    /// Spread records over N partition keys (key-0 … key-N-1, round robin) instead of keying each by its tweet id
    #[arg(long, env = "STREAM_WORKER_PARTITION_KEYS")]
    pub partition_keys: Option<NonZeroU32>,

    /// Pack tweets into KPL aggregated records (the Kinesis Producer Library's format), one per
    /// shard they are predicted to land on: far fewer PutRecords entries and bytes. Consumers must
    /// de-aggregate (stream-worker run and the Lambda do; so does the Java KCL)
    #[arg(long, env = "STREAM_WORKER_AGGREGATE")]
    pub aggregate: bool,

    /// With --aggregate: the largest aggregate, in bytes (Kinesis' limit is 1 MiB with the key)
    #[arg(long, env = "STREAM_WORKER_AGGREGATE_MAX_BYTES", default_value_t = 51_200,
          value_parser = clap::value_parser!(u32).range(1024..=1_048_320))]
    pub aggregate_max_bytes: u32,

    /// Append a line per record Kinesis accepted: tweet id, partition key, shard, sequence number, kind,
    /// acceptance time in Unix milliseconds and, for a tweet put in an aggregate, its sub-sequence
    /// number (tab-separated)
    #[arg(long, env = "STREAM_WORKER_PUT_LOG")]
    pub put_log: Option<PathBuf>,

    /// On SIGTERM or Ctrl-C: stop reading, then put what was received for at most this long
    /// (its own variable: `run`'s STREAM_WORKER_SHUTDOWN_TIMEOUT has another default)
    #[arg(long, env = "STREAM_WORKER_PRODUCER_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Address of the HTTP endpoints: GET /metrics (Prometheus), /healthz, /readyz (ready = the
    /// source is connected and Kinesis accepts). Port 0 takes any free port; `none` serves none
    /// (its own variable: `run`'s STREAM_WORKER_METRICS_ADDR serves by default)
    #[arg(long, env = "STREAM_WORKER_PRODUCER_METRICS_ADDR", default_value = "none", value_parser = parse_metrics_addr)]
    pub metrics_addr: MetricsAddr,

    #[command(flatten)]
    pub log: LogArgs,
}

impl ProduceArgs {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.malformed_ratio) {
            return Err("--malformed-ratio must be between 0.0 and 1.0".into());
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err("--duration must be positive".into());
        }
        // A blank rule is none (the stack sets the variable empty when it has no rule).
        let rules = self.rules.iter().any(|r| !r.trim().is_empty());
        if (rules || self.rules_file.is_some()) && self.source != Source::XApi {
            return Err("--rule and --rules-file apply to --source x-api (the filtered stream) only".into());
        }
        if self.x_api_stall_timeout.is_zero() {
            return Err("--x-api-stall-timeout must be positive".into());
        }
        Ok(())
    }
}

/// Where the HTTP endpoints listen, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddr {
    At(SocketAddr),
    None,
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::At(addr) => addr.fmt(f),
            Self::None => f.write_str("none"),
        }
    }
}

pub fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if s == "none" {
        return Ok(MetricsAddr::None);
    }
    s.parse()
        .map(MetricsAddr::At)
        .map_err(|e| format!("{e}: expected IP:PORT (e.g. 0.0.0.0:9464; port 0 for any free port) or none"))
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|e| format!("{e} (e.g. 128MiB, 1GB, 65536)"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 2m)"))
}

/// An RFC 3339 time, or a duration before now.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?}: expected an RFC 3339 time (2026-01-31T12:00:00Z) or a duration ago (30m, 2h)"))?;
    chrono::Duration::from_std(ago).map(|ago| Utc::now() - ago).map_err(|e| e.to_string())
}

/// A value as the CLI compares it: any case, `-` and `_` alike, so that the
/// AWS spelling (`TRIM_HORIZON`) and the CLI's (`trim-horizon`) are one.
pub fn spelling(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('_', "-")
}

/// A starting position: `trim-horizon`, `latest` or `at-timestamp:<RFC 3339>`,
/// in either spelling (see [`spelling`]).
pub fn parse_initial_position(s: &str) -> Result<InitialPosition, String> {
    let (keyword, time) = match s.split_once(':') {
        Some((keyword, time)) => (keyword, Some(time)),
        None => (s, None),
    };
    match (spelling(keyword).as_str(), time) {
        ("trim-horizon", None) => Ok(InitialPosition::TrimHorizon),
        ("latest", None) => Ok(InitialPosition::Latest),
        ("at-timestamp", Some(t)) => DateTime::parse_from_rfc3339(t.trim())
            .map(|t| InitialPosition::AtTimestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("at-timestamp needs an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}")),
        ("at-timestamp", None) => Err("at-timestamp needs a time: at-timestamp:2026-01-31T12:00:00Z".into()),
        _ => Err(format!(
            "{s:?}: expected trim-horizon, latest or at-timestamp:<RFC 3339> \
             (or TRIM_HORIZON, LATEST, AT_TIMESTAMP:<RFC 3339>)"
        )),
    }
}

/// A dead letter's reason in either spelling; the label it is stored under.
pub fn parse_reason(s: &str) -> Result<String, String> {
    use crate::processor::Reason;
    let wanted = spelling(s);
    Reason::ALL.iter().map(|r| r.label()).find(|label| spelling(label) == wanted).map(str::to_owned).ok_or_else(|| {
        let all: Vec<String> = Reason::ALL.iter().map(|r| spelling(r.label())).collect();
        format!("{s:?}: expected one of {}", all.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let cli = Cli::try_parse_from(["stream-worker", "run", "--stream", "s"]).unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        assert_eq!(run.processor.tweets_table, "tweets");
        assert_eq!(run.consumer.lease_table, "stream-worker-leases");
        assert_eq!(run.processor.dead_letter_table, "stream-worker-dead-letters");
        assert_eq!(run.initial_position, InitialPosition::TrimHorizon);
        assert_eq!(run.failover_time, Duration::from_secs(10));
        assert_eq!(run.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(run.processor.max_write_rate(), None, "no ceiling: the rate adapts to throttling");
        assert_eq!(run.processor.ttl_days, 7);
        assert!(run.validate().is_ok());
        let id = run.worker_id();
        assert!(id.contains(&format!("-{}-", std::process::id())), "{id}");
    }

    #[test]
    fn initial_positions_parse() {
        assert_eq!(parse_initial_position("latest"), Ok(InitialPosition::Latest));
        let InitialPosition::AtTimestamp(t) = parse_initial_position("at-timestamp:2026-01-31T12:00:00Z").unwrap()
        else {
            panic!()
        };
        assert_eq!(t.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        assert!(parse_initial_position("at-timestamp:yesterday").unwrap_err().contains("RFC 3339"));
        assert!(parse_initial_position("earliest").is_err());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let cli = Cli::try_parse_from(["stream-worker", "run", "--stream", "s", "--poll-interval", "100ms"]).unwrap();
        let Command::Run(run) = cli.command else { panic!() };
        assert!(run.validate().unwrap_err().contains("--poll-interval"));
        assert!(Cli::try_parse_from(["stream-worker", "run", "--stream", "s", "--failover-time", "ten"]).is_err());
        assert_eq!("file:/tmp/x.jsonl".parse::<Source>(), Ok(Source::File("/tmp/x.jsonl".into())));
        assert!("kafka".parse::<Source>().is_err());
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("stream-worker").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn positions_and_values_take_the_aws_spelling_too() {
        let t = "2026-01-31T12:00:00Z";
        for (cli, aws) in [
            ("trim-horizon".to_owned(), "TRIM_HORIZON".to_owned()),
            ("latest".into(), "LATEST".into()),
            (format!("at-timestamp:{t}"), format!("AT_TIMESTAMP:{t}")),
        ] {
            let expected = parse_initial_position(&cli).unwrap();
            assert_eq!(parse_initial_position(&aws), Ok(expected), "{aws}");
            let Command::Run(run) = parse(&["run", "--stream", "s", "--initial-position", &aws]) else { panic!() };
            assert_eq!(run.initial_position, expected);
            let rewind = parse(&["checkpoints", "rewind", "--stream", "s", "--to", &aws]);
            let Command::Checkpoints(CheckpointsCommand::Rewind(rewind)) = rewind else { panic!() };
            assert_eq!(rewind.to, expected);
        }
        assert!(parse_initial_position("AT_TIMESTAMP").unwrap_err().contains("needs a time"));
        assert!(parse_initial_position("trim-horizon:2026-01-31T12:00:00Z").is_err());

        for fan_out in ["fan-out", "FAN_OUT", "fan_out", "Fan-Out"] {
            let Command::Run(run) = parse(&["run", "--stream", "s", "--retrieval", fan_out]) else { panic!() };
            assert_eq!(run.retrieval, RetrievalMode::FanOut, "{fan_out}");
        }
        let Command::Run(run) = parse(&["run", "--stream", "s", "--log-format", "JSON"]) else { panic!() };
        assert_eq!(run.log.log_format, LogFormat::Json);
        assert_eq!("X_API_SAMPLE".parse::<Source>(), Ok(Source::XApiSample));
        assert_eq!("FILE:/tmp/A.jsonl".parse::<Source>(), Ok(Source::File("/tmp/A.jsonl".into())), "paths kept");
        for reason in ["not-a-tweet", "NOT_A_TWEET", "not_a_tweet"] {
            assert_eq!(parse_reason(reason).as_deref(), Ok("not_a_tweet"), "stored as the metric's label");
        }
        assert!(parse_reason("bad").unwrap_err().contains("not-json, not-a-tweet"));
    }

    #[test]
    fn one_flag_one_shape() {
        // --shard repeats wherever it is taken.
        let list = parse(&["dead-letters", "list", "--shard", "a", "--shard", "b"]);
        let Command::DeadLetters(DeadLettersCommand::List(list)) = list else { panic!() };
        assert_eq!(list.filter.filter().shards, ["a", "b"]);
        let rewind =
            parse(&["checkpoints", "rewind", "--stream", "s", "--to", "latest", "--shard", "a", "--shard", "b"]);
        let Command::Checkpoints(CheckpointsCommand::Rewind(rewind)) = rewind else { panic!() };
        assert_eq!(rewind.shards, ["a", "b"]);
        // Durations are durations.
        let Command::Produce(produce) = parse(&["produce", "--stream", "s", "--duration", "90s"]) else { panic!() };
        assert_eq!(produce.duration, Some(Duration::from_secs(90)));
        assert!(Cli::try_parse_from(["stream-worker", "produce", "--stream", "s", "--duration", "5"]).is_err());
        let Command::Produce(produce) = parse(&["produce", "--stream", "s", "--duration", "0s"]) else { panic!() };
        assert!(produce.validate().unwrap_err().contains("--duration"));
        // What changes shared state has --yes; deregister has --dry-run as rewind has.
        let deregister = parse(&["consumer", "deregister", "--stream", "s", "--dry-run", "--yes"]);
        let Command::Consumer(ConsumerCommand::Deregister(deregister)) = deregister else { panic!() };
        assert!(deregister.dry_run && deregister.yes);
    }

    #[test]
    fn the_engine_defaults_are_run_s() {
        use crate::engine::coordinator::{WorkerConfig, DEFAULT_IN_FLIGHT_BYTES};
        let Command::Run(run) = parse(&["run", "--stream", "s"]) else { panic!() };
        let engine = WorkerConfig::new("w");
        assert_eq!(
            (engine.failover, engine.max_leases_to_steal, engine.shard_sync_interval, engine.shutdown_timeout),
            (run.failover_time, run.max_leases_to_steal, run.shard_sync_interval, run.shutdown_timeout)
        );
        assert_eq!(engine.initial_position, run.initial_position);
        assert_eq!(engine.consumer.checkpoint_interval, run.checkpoint_interval);
        assert_eq!((engine.max_leases, run.max_leases), (usize::MAX, None));
        assert_eq!(DEFAULT_IN_FLIGHT_BYTES, run.max_in_flight_bytes);
        let crate::retrieval::Retrieval::Polling(p) = engine.consumer.retrieval else { panic!() };
        assert_eq!(
            (p.max_records, p.poll_interval, p.idle_poll_interval),
            (run.max_records, run.poll_interval, run.idle_poll_interval)
        );
    }

    #[test]
    fn one_variable_one_default() {
        // Every variable that two commands read has one default in both.
        let mut defaults: std::collections::BTreeMap<String, (String, Option<String>)> = Default::default();
        fn walk(
            cmd: &clap::Command,
            path: &str,
            defaults: &mut std::collections::BTreeMap<String, (String, Option<String>)>,
        ) {
            for arg in cmd.get_arguments() {
                let Some(env) = arg.get_env() else { continue };
                let env = env.to_string_lossy().into_owned();
                let default = arg.get_default_values().first().map(|v| v.to_string_lossy().into_owned());
                if let Some((other, seen)) = defaults.get(&env) {
                    assert_eq!(seen, &default, "{env}: `{other}` and `{path}` default differently");
                } else {
                    defaults.insert(env, (path.to_owned(), default));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), defaults);
            }
        }
        walk(&Cli::command(), "stream-worker", &mut defaults);
        assert!(defaults.contains_key("STREAM_WORKER_PRODUCER_SHUTDOWN_TIMEOUT"));
        assert!(defaults.len() > 40, "the walk saw the variables: {}", defaults.len());
    }

    #[test]
    fn the_version_names_the_commit() {
        let version = Cli::command().render_version();
        assert!(version.starts_with(&format!("stream-worker {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
        assert!(!env!("STREAM_WORKER_COMMIT").is_empty());
    }
}

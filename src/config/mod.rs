//! Command-line configuration: every flag of `run` and `produce` has a
//! `STREAM_WORKER_*` environment twin (the other commands have twins for the
//! stream and table names); defaults are the constants below and are shown by
//! `--help`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::engine::coordinator::InitialPosition;
use crate::telemetry::LogFormat;

mod checkpoints;
mod consumer;
mod dead_letters;
mod fleet;
mod produce;
mod run;
mod status;

pub use checkpoints::{CheckpointsCommand, RewindArgs};
pub use consumer::{ConsumerArgs, ConsumerCommand, ConsumerNameArgs};
pub use dead_letters::{
    DeadLetterFilterArgs, DeadLettersCommand, DeadLettersList, DeadLettersPurge, DeadLettersReplay,
};
pub use fleet::{FleetArgs, FleetCommand};
pub use produce::{ProduceArgs, Source};
pub use run::{RetrievalMode, RunArgs};
pub use status::{HealthcheckArgs, StatusArgs};

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
    /// Switch a running fleet's coordination protocol: upgrade to heartbeats, or roll back
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Print a shell completion script, e.g. `stream-worker completions bash > /etc/bash_completion.d/stream-worker`
    Completions(CompletionsArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum, ignore_case = true)]
    pub shell: clap_complete::Shell,
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
        assert_eq!(run.failover_time, Duration::from_millis(3500));
        assert_eq!(run.renewal_failover_time, Duration::from_secs(10));
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
        assert_eq!(engine.renewal_failover, run.renewal_failover_time);
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

//! `stream-worker produce`: the producer's flags and where its tweets come from.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, parse_metrics_addr, spelling, LogArgs, MetricsAddr};

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

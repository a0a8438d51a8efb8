//! `stream-worker dead-letters`: list, replay and purge, and the filter they share.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use super::{parse_reason, parse_since, LogArgs, ProcessorArgs, DEFAULT_DEAD_LETTER_TABLE};

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

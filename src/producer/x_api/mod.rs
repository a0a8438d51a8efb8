//! The X API v2 streams: the filtered stream (`GET /2/tweets/search/stream`,
//! with its rules) and the sampled stream (`GET /2/tweets/sample/stream`).
//!
//! X's connection rules, as its docs give them: one long-lived response of
//! newline-delimited JSON; blank lines are keep-alives (about every 20 s); a
//! line may arrive over several chunks; 20 s with neither data nor a
//! keep-alive is a stall, so reconnect. Reconnect linearly after network
//! errors (250 ms more each attempt, up to 16 s), exponentially after HTTP
//! errors (5 s, doubling, up to 320 s), and after a `429` wait for the time in
//! `x-rate-limit-reset`. `401` and `403` are fatal.
//!
//! The bearer token is kept in [`BearerToken`], whose `Debug` prints no secret,
//! and sent as a header marked sensitive, so it reaches no log line.
//!
//! # Layout
//!
//! `token.rs` the secret; `rules.rs` the filtered stream's rules
//! and their sync plan; `lines.rs` the line protocol; `reconnect.rs` X's
//! reconnect schedule; `transport.rs` the HTTP client ([`XApi`]) and how it
//! classifies answers; `feed.rs` the loop that reads, reconnects and hands
//! tweets over.

use std::time::Duration;

mod feed;
mod lines;
mod reconnect;
mod rules;
mod token;
mod transport;

pub use feed::{feed, Body, Connect, ConnectError, Limits};
pub use lines::{classify_line, Line, LineSplitter};
pub use reconnect::{reconnect_counts, register_metrics, reset_wait, Backoff, Reconnect};
pub use rules::{plan_rules, ExistingRule, Rule, RulesPlan};
pub use token::BearerToken;
pub use transport::{Endpoint, XApi, STREAM_QUERY};

/// No data and no keep-alive for this long: the connection stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Once what arrived is handled, the stream gathers this long before it is read
/// again. X sends each tweet as a chunk of its own: read as it came, every
/// tweet cost a wake-up, an `epoll_wait` and a `recv`, most of the producer's
/// CPU at 1,000 tweets/s (28.2 µs a tweet; 11.8 µs read every 50 ms; 10.9 µs
/// with the connection driven by the reader, see `Streaming`; 9.1 µs with the
/// id found by a lazy lookup, see [`classify_line`]; 7.2 µs read every 100 ms).
/// What waited through a pause counts as received when the pause began, so it
/// is due to be put at the pause's end: the pace is the put linger
/// ([`super::LINGER`]), and one wake-up reads a pause's tweets and puts them. A
/// shorter pace read a batch in several wake-ups and sent it no sooner.
pub const READ_PACE: Duration = super::LINGER;

/// The `kind` of a tweet line put as it came.
pub const KIND_X_API: &str = "x-api";

//! [`ShardReader`] by polling GetRecords: every polling consumer of a stream
//! shares each shard's 5 calls/s and 2 MB/s.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Read, ShardReader, StartAt, StreamClient};
use crate::aws::ErrorClass;
use crate::metrics as m;
use crate::retry::Backoff;

/// How a polling reader calls GetRecords (`--max-records`, `--poll-interval`,
/// `--idle-poll-interval`). [`Default`] is `stream-worker run`'s defaults.
#[derive(Debug, Clone)]
pub struct PollingConfig {
    /// Records per GetRecords call.
    pub max_records: i32,
    /// Least time between two GetRecords calls on one shard (Kinesis allows 5/s).
    pub poll_interval: Duration,
    /// Wait after a call that returned nothing.
    pub idle_poll_interval: Duration,
}

impl Default for PollingConfig {
    /// `stream-worker run`'s defaults.
    fn default() -> Self {
        Self {
            max_records: 1000,
            poll_interval: Duration::from_millis(200),
            idle_poll_interval: Duration::from_millis(500),
        }
    }
}

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// The polling [`ShardReader`]: GetRecords on a shard iterator, at most one call
/// per `poll_interval`. It gets a new iterator from the last processed position
/// when the old one expires, and backs off on throttling and errors.
pub struct PollingReader {
    stream: Arc<dyn StreamClient>,
    shard_id: String,
    /// Where a new iterator starts.
    position: StartAt,
    iterator: Option<String>,
    next_call: Instant,
    attempt: u32,
    config: PollingConfig,
}

impl PollingReader {
    /// A reader of `shard_id` on `stream` from `start`. Nothing is called until the
    /// first [`ShardReader::ready`] or [`ShardReader::read`].
    pub fn new(stream: Arc<dyn StreamClient>, shard_id: &str, start: StartAt, config: PollingConfig) -> Self {
        Self {
            stream,
            shard_id: shard_id.to_owned(),
            position: start,
            iterator: None,
            next_call: Instant::now(),
            attempt: 0,
            config,
        }
    }

    fn back_off(&mut self) {
        self.next_call = Instant::now() + BACKOFF.delay(self.attempt, &mut rand::thread_rng());
        self.attempt = self.attempt.saturating_add(1);
    }
}

#[async_trait]
impl ShardReader for PollingReader {
    async fn ready(&mut self) {
        loop {
            tokio::time::sleep_until(self.next_call).await;
            if self.iterator.is_some() {
                return;
            }
            match self.stream.shard_iterator(&self.shard_id, &self.position).await {
                Ok(it) => return self.iterator = Some(it),
                // Past retention or gone with its stream: `read` says the shard ended.
                Err(e) if e.class == ErrorClass::NotFound => return,
                Err(e) => {
                    let shard_id = &self.shard_id;
                    tracing::warn!(shard_id, error = %e.message, attempt = self.attempt, "GetShardIterator failed, retrying");
                    self.back_off();
                }
            }
        }
    }

    async fn read(&mut self) -> Read {
        loop {
            self.ready().await;
            let Some(it) = self.iterator.take() else {
                tracing::warn!(shard_id = %self.shard_id, "shard not found; treating it as ended");
                return Read { end: Some(Vec::new()), ..Read::default() };
            };
            let called = Instant::now();
            self.next_call = called + self.config.poll_interval;
            metrics::counter!(m::GET_RECORDS_CALLS).increment(1);
            let result = self.stream.get_records(&it, self.config.max_records).await;
            metrics::histogram!(m::GET_RECORDS_SECONDS).record(called.elapsed().as_secs_f64());
            let batch = match result {
                Ok(batch) => batch,
                Err(e) => {
                    let (shard_id, attempt) = (&self.shard_id, self.attempt);
                    match e.class {
                        ErrorClass::ExpiredIterator => {
                            tracing::info!(shard_id, "shard iterator expired; resuming from the last checkpoint");
                        }
                        ErrorClass::Throttled => {
                            metrics::counter!(m::GET_RECORDS_THROTTLES).increment(1);
                            tracing::warn!(shard_id, attempt, "GetRecords throttled, backing off");
                            self.iterator = Some(it);
                        }
                        _ => {
                            metrics::counter!(m::GET_RECORDS_ERRORS).increment(1);
                            tracing::warn!(shard_id, attempt, error = %e.message, "GetRecords failed, retrying");
                        }
                    }
                    self.back_off();
                    continue;
                }
            };
            self.attempt = 0;
            if batch.records.is_empty() {
                self.next_call = called + self.config.idle_poll_interval.max(self.config.poll_interval);
            }
            let end = match batch.next_iterator {
                Some(next) => {
                    self.iterator = Some(next);
                    None
                }
                None => Some(batch.child_shards),
            };
            return Read { records: batch.records, millis_behind_latest: batch.millis_behind_latest, end };
        }
    }

    fn processed(&mut self, at: StartAt) {
        self.position = at;
    }
}

//! The producer: tweets from a source, batched into PutRecords (≤ 500 records and
//! ≤ 5 MiB per call, partition key = tweet id), failed entries retried with
//! backoff until Kinesis accepts them.

pub mod synthetic;

use std::io::{BufRead, BufReader, Write};
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use aws_sdk_kinesis::Client;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{classify, describe};
use crate::processor::limiter::WriteLimiter;
use crate::retry::Backoff;

pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// A partly filled batch is sent after this long, so a slow source sees low latency.
const LINGER: Duration = Duration::from_millis(100);
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// One record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The tweet id (the partition key unless `--partition-keys` is given); for a
    /// record that is not a tweet, a made-up unique name.
    pub id: String,
    pub data: Vec<u8>,
    /// What it is (`v1`, `v2`, `malformed:…`, `file`), for the put log.
    pub kind: &'static str,
}

/// Lines of a JSON-lines file; the partition key is the tweet id when the line
/// decodes as a tweet, else the line number.
pub fn file_source(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Outgoing>>> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let path = path.display().to_string();
    Ok(BufReader::new(file).lines().enumerate().filter_map(move |(n, line)| match line {
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => {
            let key = crate::processor::tweet::decode(line.as_bytes())
                .map(|t| t.id.into_owned())
                .unwrap_or_else(|_| format!("line-{}", n + 1));
            Some(Ok(Outgoing { id: key, data: line.into_bytes(), kind: "file" }))
        }
        Err(e) => Some(Err(anyhow::anyhow!("reading {path} line {}: {e}", n + 1))),
    }))
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    pub records: u64,
    pub bytes: u64,
    pub calls: u64,
    pub retried_entries: u64,
}

pub struct Producer {
    pub client: Client,
    pub stream: String,
    pub rate: Option<NonZeroU32>,
    /// Spread records over this many partition keys (`key-0` …) instead of
    /// keying each by its tweet id.
    pub partition_keys: Option<NonZeroU32>,
    pub put_log: Option<std::fs::File>,
}

/// A record with its partition key, as it is put.
struct Keyed {
    record: Outgoing,
    partition_key: String,
}

impl Keyed {
    fn size(&self) -> usize {
        self.record.data.len() + self.partition_key.len()
    }
}

impl Producer {
    /// Puts records from `source` until it ends, `count` records are put,
    /// `deadline` passes or `stop` is cancelled.
    pub async fn run(
        &mut self,
        source: impl Iterator<Item = anyhow::Result<Outgoing>>,
        count: Option<u64>,
        deadline: Option<Instant>,
        stop: CancellationToken,
    ) -> anyhow::Result<Summary> {
        let limiter = self.rate.map(WriteLimiter::new);
        let mut summary = Summary::default();
        let mut batch: Vec<Keyed> = Vec::with_capacity(MAX_RECORDS_PER_CALL);
        let mut batch_bytes = 0;
        let mut batch_started = Instant::now();
        for (taken, next) in (0u64..).zip(source) {
            if count.is_some_and(|c| taken >= c) || deadline.is_some_and(|d| Instant::now() >= d) || stop.is_cancelled()
            {
                break;
            }
            let record = next?;
            if let Some(limiter) = &limiter {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = limiter.acquire(1) => {}
                }
            }
            let partition_key = match self.partition_keys {
                Some(n) => format!("key-{}", taken % u64::from(n.get())),
                None => record.id.clone(),
            };
            let record = Keyed { record, partition_key };
            if batch.len() == MAX_RECORDS_PER_CALL || batch_bytes + record.size() > MAX_BYTES_PER_CALL {
                self.put(std::mem::take(&mut batch), &mut summary).await?;
                batch_bytes = 0;
            }
            if batch.is_empty() {
                batch_started = Instant::now();
            }
            batch_bytes += record.size();
            batch.push(record);
            if batch_started.elapsed() >= LINGER {
                self.put(std::mem::take(&mut batch), &mut summary).await?;
                batch_bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.put(batch, &mut summary).await?;
        }
        Ok(summary)
    }

    /// Puts one batch, retrying failed entries (and retryable call errors) until
    /// every record is accepted.
    async fn put(&mut self, mut pending: Vec<Keyed>, summary: &mut Summary) -> anyhow::Result<()> {
        let mut attempt = 0;
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|r| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&r.partition_key)
                        .data(Blob::new(r.record.data.clone()))
                        .build()
                        .expect("partition key and data are set")
                })
                .collect();
            summary.calls += 1;
            let result = self.client.put_records().stream_name(&self.stream).set_records(Some(entries)).send().await;
            let out = match result {
                Ok(out) => out,
                Err(err) => {
                    let class = classify(&err);
                    if !class.is_retryable() {
                        anyhow::bail!("PutRecords to stream '{}' failed: {}", self.stream, describe(&err));
                    }
                    tracing::warn!(stream = %self.stream, ?class, attempt, "PutRecords failed, retrying");
                    BACKOFF.sleep(attempt).await;
                    attempt += 1;
                    continue;
                }
            };
            let mut failed = Vec::new();
            let accepted_ms = chrono::Utc::now().timestamp_millis();
            for (record, entry) in pending.into_iter().zip(out.records) {
                match (entry.error_code(), entry.shard_id(), entry.sequence_number()) {
                    (None, Some(shard), Some(seq)) => {
                        summary.records += 1;
                        summary.bytes += record.record.data.len() as u64;
                        if let Some(log) = &mut self.put_log {
                            let Keyed { record, partition_key } = &record;
                            writeln!(
                                log,
                                "{}\t{partition_key}\t{shard}\t{seq}\t{}\t{accepted_ms}",
                                record.id, record.kind
                            )?;
                        }
                    }
                    (code, _, _) => {
                        tracing::debug!(code = code.unwrap_or("?"), "entry not accepted, retrying");
                        failed.push(record);
                    }
                }
            }
            if !failed.is_empty() {
                summary.retried_entries += failed.len() as u64;
                BACKOFF.sleep(attempt).await;
                attempt += 1;
            }
            pending = failed;
        }
        Ok(())
    }
}

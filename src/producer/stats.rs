//! The producer's counters and its summary: shared by the sources, the put
//! loop and the progress reports, so apart from all three.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use super::batch::{Keyed, Put};
use super::x_api::{self, Reconnect};
use crate::metrics as m;

/// What the producer did: the final summary and the metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records the source handed over (tweets read from the X stream).
    pub received: u64,
    /// Records (tweets) Kinesis accepted.
    pub put: u64,
    /// Kinesis records they were put in: fewer with `--aggregate`.
    pub records: u64,
    /// Bytes of those Kinesis records' data.
    pub bytes: u64,
    pub calls: u64,
    /// Entries put again after Kinesis refused them (or their call failed).
    pub retried: u64,
    /// Received and never accepted: only when stopped before the buffer drained.
    pub failed: u64,
    pub reconnects: BTreeMap<Reconnect, u64>,
    /// Error objects in the stream that were not disconnects.
    pub stream_errors: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {}, put {} ({} Kinesis records, {} bytes, {} PutRecords calls), retried {}, failed {}",
            self.received, self.put, self.records, self.bytes, self.calls, self.retried, self.failed
        )?;
        if !self.reconnects.is_empty() || self.stream_errors > 0 {
            write!(f, "; reconnects: {}", x_api::reconnect_counts(&self.reconnects))?;
            write!(f, "; stream errors {}", self.stream_errors)?;
        }
        Ok(())
    }
}

/// Counters shared by the source, the put loop and the progress reports.
#[derive(Debug, Default)]
pub struct Stats {
    /// The per-record series, registered once (a lookup per record was a
    /// measurable share of the producer's CPU per tweet).
    handles: std::sync::OnceLock<Handles>,
    received: AtomicU64,
    put: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    pub(super) calls: AtomicU64,
    retried: AtomicU64,
    stream_errors: AtomicU64,
    connected: AtomicBool,
    reconnects: Mutex<BTreeMap<Reconnect, u64>>,
    last_received: Mutex<Option<Instant>>,
}

/// The handles of the series [`Stats`] moves per record.
#[derive(Debug)]
struct Handles {
    received: metrics::Counter,
    put: metrics::Counter,
    put_latency: metrics::Histogram,
}

impl Stats {
    /// Registered at first use, which comes after the metrics recorder is
    /// installed (`main` installs it before any command runs).
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles {
            received: metrics::counter!(m::PRODUCER_RECEIVED),
            put: metrics::counter!(m::PRODUCER_PUT),
            put_latency: metrics::histogram!(m::PRODUCER_PUT_LATENCY_SECONDS),
        })
    }

    /// A record received from the source at `at`.
    pub fn received(&self, at: Instant) {
        self.received.fetch_add(1, Ordering::Relaxed);
        *self.last_received.lock().unwrap() = Some(at);
        self.handles().received.increment(1);
    }

    /// The Kinesis records of one call accepted (tweets, or aggregates of
    /// tweets), at `now`.
    pub(super) fn accepted<'a>(&self, puts: impl IntoIterator<Item = &'a Put>, now: Instant) {
        let handles = self.handles();
        let (mut records, mut bytes, mut tweets) = (0, 0, 0);
        for put in puts {
            records += 1;
            bytes += put.data().len() as u64;
            let latency =
                |r: &Keyed| handles.put_latency.record(now.saturating_duration_since(r.received).as_secs_f64());
            match put {
                Put::Plain(r) => {
                    latency(r);
                    tweets += 1;
                }
                Put::Aggregate(a) => {
                    a.members.iter().for_each(latency);
                    tweets += a.members.len() as u64;
                }
            }
        }
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.put.fetch_add(tweets, Ordering::Relaxed);
        handles.put.increment(tweets);
    }

    pub(super) fn retried(&self, n: usize) {
        self.retried.fetch_add(n as u64, Ordering::Relaxed);
        metrics::counter!(m::PRODUCER_RETRIED).increment(n as u64);
    }

    pub fn stream_error(&self) {
        self.stream_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::PRODUCER_STREAM_ERRORS).increment(1);
    }

    pub fn reconnect(&self, reason: Reconnect) {
        *self.reconnects.lock().unwrap().entry(reason).or_default() += 1;
        metrics::counter!(m::PRODUCER_RECONNECTS, "reason" => reason.label()).increment(1);
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::gauge!(m::PRODUCER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn received_count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn last_received(&self) -> Option<Instant> {
        *self.last_received.lock().unwrap()
    }

    pub fn summary(&self) -> Summary {
        let received = self.received.load(Ordering::Relaxed);
        let put = self.put.load(Ordering::Relaxed);
        Summary {
            received,
            put,
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: received.saturating_sub(put),
            reconnects: self.reconnects.lock().unwrap().clone(),
            stream_errors: self.stream_errors.load(Ordering::Relaxed),
        }
    }
}

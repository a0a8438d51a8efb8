//! The producer: tweets from a source (synthetic, a file, the X API) through a
//! bounded buffer into batched PutRecords (≤ 500 records and ≤ 5 MiB per call,
//! ≤ 1 MiB per record, partition key = tweet id), failed entries retried with
//! backoff until Kinesis accepts them.
//!
//! The source and the put loop are two tasks joined by a bounded channel: when
//! Kinesis slows down or is away, the buffer fills and the source waits (the X
//! stream is then not read), so nothing received is dropped. On stop, the source
//! ends and the put loop drains the buffer, within a timeout.

pub mod aggregate;
pub mod batch;
pub mod sink;
pub mod synthetic;
pub mod x_api;

mod put;
mod source;
mod stats;

use std::time::Duration;

use tokio::time::Instant;

use crate::retry::Backoff;

pub use put::Producer;
pub use source::{feed_iter, file_source, Handoff};
pub use stats::{Stats, Summary};

/// A partly filled batch is sent this long after its first record was
/// received (or could have been: see [`x_api::READ_PACE`]), so a slow source
/// sees low latency.
pub const LINGER: Duration = Duration::from_millis(100);
/// Records received and not yet put, at most: past it the source waits.
pub const BUFFER_RECORDS: usize = 10_000;
/// A PutRecords attempt unanswered by then is abandoned and sent again, as the
/// KPL's `RequestTimeout` (6 s). Longer than the other calls' 3 s
/// ([`crate::aws::ATTEMPT_TIMEOUT`]): a call carries up to 5 MiB, and Kinesis
/// may have stored a call it did not answer in time, so each early give-up
/// puts every record of it twice.
pub const PUT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
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

/// A record and when the source received it (for the put latency).
pub type Received = (Outgoing, Instant);

/// What the tests of several of the files here share.
#[cfg(test)]
mod test_support {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Producer, Stats};
    use crate::health::Health;
    use crate::retrieval::memory::MemoryStream;

    pub(super) fn producer(stream: Arc<MemoryStream>, stats: Arc<Stats>) -> Producer {
        Producer {
            sink: stream,
            rate: None,
            partition_keys: None,
            put_log: None,
            aggregate: None,
            stats,
            health: Arc::new(Health::new(Duration::from_secs(30))),
            shutdown_timeout: Duration::from_secs(20),
        }
    }
}

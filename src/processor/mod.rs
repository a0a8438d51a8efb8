//! The processing core, shared by the worker and the Lambda: records in, tweets
//! written to the tweets table, everything else dead-lettered with its reason.
//!
//! [`Processor::process`] returns only once every record of the batch is durably
//! written to one table or the other, so the caller may then checkpoint. It never
//! fails: transient errors are retried, permanent ones dead-letter the record.

pub mod limiter;
pub mod rate;
pub mod sink;
pub mod tweet;

mod item;
mod reason;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::engine::{Durable, RecordProcessor};
use crate::metrics as m;
use crate::model::Record;
use item::item_for;
use rate::AdaptiveRate;
use sink::{write_all, BatchWriter, Item, NotWritten};
use tokio::time::Instant;
use tweet::decode;

pub use item::{dead_letter_item, dead_letter_key, tweet_item, Stamp, MAX_DEAD_LETTER_DATA_BYTES, MAX_ITEM_BYTES};
pub use reason::{register_metrics, Reason};

/// What a batch came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    /// Records in the batch.
    pub records: usize,
    /// Tweets written to the tweets table.
    pub tweets_written: usize,
    /// Records that could not become rows and were sent to the dead-letter table
    /// (counted whether the table took them or not).
    pub dead_lettered: usize,
}

impl std::ops::AddAssign for BatchSummary {
    fn add_assign(&mut self, other: Self) {
        self.records += other.records;
        self.tweets_written += other.tweets_written;
        self.dead_lettered += other.dead_lettered;
    }
}

/// What a batch came to under a deadline.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The batch's counts.
    pub summary: BatchSummary,
    /// The index of the first record not durably written; every record before
    /// it is in the tweets or the dead-letter table.
    pub first_unwritten: Option<usize>,
}

/// What [`Processor::write_tweets`] came to.
struct TweetsWritten {
    tweets_written: usize,
    /// Records that can never be rows, with why: to dead-letter.
    failed: Vec<(usize, Reason, String)>,
    first_unwritten: Option<usize>,
}

/// The tweet pipeline's processing core, shared by the worker and the Lambda:
/// decodes each record, writes tweets to the tweets table and dead-letters the
/// rest with their [`Reason`]. Each table's writes go through its own
/// [`AdaptiveRate`].
///
/// Build it with [`Processor::new`]; it implements
/// [`RecordProcessor`], so a
/// [`Worker`](crate::engine::coordinator::Worker) can run it.
pub struct Processor {
    tweets: Arc<dyn BatchWriter>,
    dead_letters: Arc<dyn BatchWriter>,
    /// One adaptive rate per table, shared by every shard of the process.
    tweets_rate: AdaptiveRate,
    dead_letters_rate: AdaptiveRate,
    ttl: Duration,
    /// Batches being written at the moment (one per shard at most).
    writing: AtomicUsize,
}

/// Counts a batch as being written for as long as it lives (a batch whose
/// lease is lost is dropped mid-write).
struct Writing<'a>(&'a AtomicUsize);

impl<'a> Writing<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Processor {
    /// `max_write_rate`: each table's ceiling in write capacity units per
    /// second; `None` for no ceiling but DynamoDB's own throttling.
    pub fn new(
        tweets: Arc<dyn BatchWriter>,
        dead_letters: Arc<dyn BatchWriter>,
        max_write_rate: Option<NonZeroU32>,
        ttl: Duration,
    ) -> Self {
        let tweets_rate = AdaptiveRate::new(tweets.table(), max_write_rate);
        let dead_letters_rate = AdaptiveRate::new(dead_letters.table(), max_write_rate);
        Self { tweets, dead_letters, tweets_rate, dead_letters_rate, ttl, writing: AtomicUsize::new(0) }
    }

    /// Reads each table's own write limit again (DescribeTable) and shares it
    /// among the fleet (see [`rate`]). A table that cannot be described keeps
    /// the limit last read.
    pub async fn refresh_write_limits(&self) {
        for (table, rate) in [(&self.tweets, &self.tweets_rate), (&self.dead_letters, &self.dead_letters_rate)] {
            match table.write_limit().await {
                Ok(limit) => rate.set_capacity(limit),
                Err(e) => {
                    tracing::warn!(table = table.table(), error = %e, "DescribeTable failed; keeping the last write limit")
                }
            }
        }
    }

    /// The live workers of the fleet (this one included) sharing the tables.
    pub fn set_fleet_size(&self, workers: usize) {
        self.tweets_rate.set_workers(workers);
        self.dead_letters_rate.set_workers(workers);
    }

    /// How many records a caller that may be asked to stop should hand to
    /// [`process`](Self::process) at a time: about a second's worth of its
    /// share of the tweets table's write rate (shared with the batches being
    /// written at the moment), 25 to 500. So a stop waits about a second
    /// however many shards write at once.
    pub fn slice_len(&self) -> usize {
        let sharing = self.writing.load(Ordering::Relaxed) + 1;
        self.tweets_rate.rate().map_or(500, |r| r as usize / sharing).clamp(25, 500)
    }

    /// Writes a batch of one shard's records. Returns once each record is in the
    /// tweets table or the dead-letter table. The worker's entry: it never gives up.
    pub async fn process_batch(&self, shard_id: &str, records: &[Record]) -> BatchSummary {
        self.process_until(shard_id, records, None).await.summary
    }

    /// Writes a batch of one shard's records, giving up on transient failures at
    /// `deadline` (the Lambda's entry). `first_unwritten` is the index of the
    /// first record not durably written (in the tweets or the dead-letter table):
    /// every record before it is; `None` when all are. Without a deadline it is
    /// always `None`.
    pub async fn process_until(&self, shard_id: &str, records: &[Record], deadline: Option<Instant>) -> Outcome {
        let _writing = Writing::new(&self.writing);
        let now = Utc::now();
        let written = self.write_tweets(shard_id, records, now, deadline).await;
        let mut first_unwritten = written.first_unwritten;
        let dead = written.failed;
        let dead_lettered = dead.len();
        if !dead.is_empty() {
            let late = self.dead_letter(shard_id, records, dead, now, deadline).await;
            first_unwritten = first_unwritten.into_iter().chain(late).min();
        }
        metrics::counter!(m::RECORDS_PROCESSED).increment(records.len() as u64);
        metrics::counter!(m::TWEETS_WRITTEN).increment(written.tweets_written as u64);
        Outcome {
            summary: BatchSummary { records: records.len(), tweets_written: written.tweets_written, dead_lettered },
            first_unwritten,
        }
    }

    /// Replays records of one shard (dead letters, `stream-worker dead-letters
    /// replay`) through the core without dead-lettering them again: for each,
    /// `Ok` once it is a row, or why it still cannot be one.
    pub async fn replay(&self, shard_id: &str, records: &[Record]) -> Vec<Result<(), (Reason, String)>> {
        let written = self.write_tweets(shard_id, records, Utc::now(), None).await;
        metrics::counter!(m::TWEETS_WRITTEN).increment(written.tweets_written as u64);
        let mut results: Vec<Result<(), (Reason, String)>> = vec![Ok(()); records.len()];
        for (index, reason, why) in written.failed {
            results[index] = Err((reason, why));
        }
        results
    }

    /// What [`replay`](Self::replay) would say of a record without writing it:
    /// whether it decodes into a tweet that fits in an item. A table may still
    /// refuse it.
    pub fn check(&self, shard_id: &str, record: &Record) -> Result<(), (Reason, String)> {
        item_for(shard_id, record, &Stamp::new(Utc::now(), self.ttl)).map(|_| ())
    }

    /// Decodes the records and writes their tweets; returns what could not be
    /// written (to dead-letter) and, under a deadline, the first record not
    /// written in time.
    async fn write_tweets(
        &self,
        shard_id: &str,
        records: &[Record],
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> TweetsWritten {
        let stamp = Stamp::new(now, self.ttl);
        let mut tweets: Vec<(usize, Item)> = Vec::with_capacity(records.len());
        let mut dead: Vec<(usize, Reason, String)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            match item_for(shard_id, record, &stamp) {
                Ok(item) => tweets.push((index, item)),
                Err((reason, why)) => dead.push((index, reason, why)),
            }
        }
        // A batch may carry one tweet twice (a producer retry); DynamoDB refuses a
        // BatchWriteItem with a key twice, and the later record is the one to keep.
        // `written_by[i]` is the item that stands for record i.
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(tweets.len());
        let mut unique: Vec<(usize, Item)> = Vec::with_capacity(tweets.len());
        let mut written_by: Vec<(usize, usize)> = Vec::with_capacity(tweets.len());
        for (index, item) in tweets {
            let id = item["Id"].as_s().expect("Id is a string").clone();
            match seen.get(&id) {
                Some(&slot) => {
                    written_by.push((index, slot));
                    unique[slot] = (index, item);
                }
                None => {
                    seen.insert(id, unique.len());
                    written_by.push((index, unique.len()));
                    unique.push((index, item));
                }
            }
        }
        let (indexes, items): (Vec<usize>, Vec<Item>) = unique.into_iter().unzip();
        let rebuild = |position: usize| {
            let record = &records[indexes[position]];
            let tweet = decode(&record.data).expect("decoded once already");
            tweet_item(&tweet, shard_id, record, &stamp)
        };
        let mut out_of_time = vec![false; indexes.len()];
        let mut rejected = 0;
        for (position, why) in write_all(self.tweets.as_ref(), &self.tweets_rate, items, &rebuild, deadline).await {
            match why {
                NotWritten::Rejected(why) => {
                    rejected += 1;
                    dead.push((indexes[position], Reason::RejectedBySink, why));
                }
                NotWritten::OutOfTime => out_of_time[position] = true,
            }
        }
        let tweets_written = indexes.len() - rejected - out_of_time.iter().filter(|&&o| o).count();
        let first_unwritten =
            written_by.iter().filter(|(_, position)| out_of_time[*position]).map(|(index, _)| *index).min();
        TweetsWritten { tweets_written, failed: dead, first_unwritten }
    }

    async fn dead_letter(
        &self,
        shard_id: &str,
        records: &[Record],
        dead: Vec<(usize, Reason, String)>,
        now: DateTime<Utc>,
        deadline: Option<Instant>,
    ) -> Option<usize> {
        let build = |position: usize| {
            let (index, reason, why) = &dead[position];
            dead_letter_item(shard_id, &records[*index], *reason, why, now)
        };
        for (index, reason, why) in &dead {
            let record = &records[*index];
            tracing::warn!(
                shard_id,
                sequence_number = %record.sequence_number,
                reason = reason.label(),
                error = %why,
                "dead-lettering record"
            );
            metrics::counter!(m::DEAD_LETTERED, "reason" => reason.label()).increment(1);
        }
        let items = (0..dead.len()).map(build).collect();
        let mut first_unwritten = None;
        for (position, not_written) in
            write_all(self.dead_letters.as_ref(), &self.dead_letters_rate, items, &build, deadline).await
        {
            let (index, reason, _) = &dead[position];
            let why = match not_written {
                NotWritten::OutOfTime => {
                    first_unwritten = Some(first_unwritten.map_or(*index, |first: usize| first.min(*index)));
                    continue;
                }
                NotWritten::Rejected(why) => why,
            };
            // Last resort: the record cannot be stored anywhere; keep it in the log.
            let record = &records[*index];
            tracing::error!(
                shard_id,
                sequence_number = %record.sequence_number,
                reason = reason.label(),
                error = %why,
                data_base64 = %base64::engine::general_purpose::STANDARD.encode(&record.data),
                "dead-letter table refused the record"
            );
            metrics::counter!(m::DEAD_LETTER_FAILURES).increment(1);
        }
        first_unwritten
    }
}

/// The tweet pipeline as the engine sees it: a slice is durable once each
/// record is a row or a dead letter; the write rate is shared by the fleet.
#[async_trait::async_trait]
impl RecordProcessor for Processor {
    async fn process(&self, shard_id: &str, records: &[Record], deadline: Option<Instant>) -> Durable {
        let outcome = self.process_until(shard_id, records, deadline).await;
        let BatchSummary { records, tweets_written, dead_lettered } = outcome.summary;
        tracing::debug!(shard_id, records, tweets_written, dead_lettered, "processed");
        match outcome.first_unwritten {
            None => Durable::All,
            Some(index) => Durable::Before(index),
        }
    }

    fn slice_len(&self) -> usize {
        Processor::slice_len(self)
    }

    fn fleet_size_changed(&self, workers: usize) {
        self.set_fleet_size(workers);
    }

    async fn upkeep(&self) {
        self.refresh_write_limits().await;
    }
}

#[cfg(test)]
mod tests {
    use super::sink::MemoryTable;
    use super::*;
    use std::num::NonZeroU32;

    fn record(seq: u64, data: &[u8]) -> Record {
        Record {
            sequence_number: format!("{seq:056}"),
            partition_key: format!("pk-{seq}"),
            data: data.to_vec(),
            arrival: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().with_timezone(&Utc),
            sub_sequence: None,
        }
    }

    fn processor(rate: u32) -> (Processor, Arc<MemoryTable>, Arc<MemoryTable>) {
        let tweets = Arc::new(MemoryTable::new("tweets", &["Id"]));
        let dead = Arc::new(MemoryTable::new("dead", &["ShardId", "SequenceNumber"]));
        let p = Processor::new(tweets.clone(), dead.clone(), NonZeroU32::new(rate), Duration::from_secs(7 * 86_400));
        (p, tweets, dead)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slice_is_a_second_of_the_rate_shared_with_the_batches_being_written() {
        let (p, tweets, _) = processor(300);
        let p = Arc::new(p);
        assert_eq!(p.slice_len(), 300, "alone: a second of the whole rate");
        let batch = |shard: u64| -> Vec<Record> {
            (0..600).map(|i| record(i, format!(r#"{{"id_str":"{shard}-{i}","text":"t"}}"#).as_bytes())).collect()
        };
        let writers: Vec<_> = (1..=2)
            .map(|shard| {
                let (p, records) = (p.clone(), batch(shard));
                tokio::spawn(async move { p.process_batch(&format!("shardId-{shard}"), &records).await })
            })
            .collect();
        // Two batches of 600 at 300 units/s: still being written a second later.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.slice_len(), 100, "a third of the rate beside two batches being written");
        let [dropped, written] = <[_; 2]>::try_from(writers).unwrap();
        dropped.abort();
        tokio::task::yield_now().await;
        assert_eq!(p.slice_len(), 150, "a batch dropped mid-write no longer counts");
        assert_eq!(written.await.unwrap().tweets_written, 600);
        assert!(tweets.len() < 1200);
        assert_eq!(p.slice_len(), 300, "alone again");
        assert_eq!(processor(10).0.slice_len(), 25, "never under 25 records");
    }

    #[tokio::test(start_paused = true)]
    async fn good_records_become_rows_and_bad_ones_dead_letters() {
        let (p, tweets, dead) = processor(1000);
        let big = format!(r#"{{"id_str":"3","text":"{}"}}"#, "y".repeat(500 * 1024));
        let records = vec![
            record(1, br##"{"id_str":"1","text":"hi #a","created_at":"Wed Oct 10 20:19:24 +0000 2018","user":{"name":"N","screen_name":"n"},"entities":{"hashtags":[{"text":"a"}]},"lang":"en"}"##),
            record(2, b"not json at all"),
            record(3, big.as_bytes()),
            record(4, br#"{"data":{"id":"4","text":"v2, no date"}}"#),
            record(5, br#"{"limit":{"track":12}}"#),
        ];
        let summary = p.process_batch("shardId-000000000001", &records).await;
        assert_eq!(summary, BatchSummary { records: 5, tweets_written: 2, dead_lettered: 3 });

        let row = tweets.get(&["1"]).unwrap();
        assert_eq!(row["Username"].as_s().unwrap(), "N");
        assert_eq!(row["ScreenName"].as_s().unwrap(), "n");
        assert_eq!(row["Timestamp"].as_s().unwrap(), "2018-10-10T20:19:24.000Z");
        assert_eq!(row["Message"].as_s().unwrap(), "hi #a");
        assert_eq!(row["Lang"].as_s().unwrap(), "en");
        assert_eq!(row["Hashtags"].as_ss().unwrap(), &vec!["a".to_owned()]);
        assert_eq!(row["ShardId"].as_s().unwrap(), "shardId-000000000001");
        assert_eq!(row["SequenceNumber"].as_s().unwrap(), &records[0].sequence_number);
        let ttl: i64 = row["ExpirationTime"].as_n().unwrap().parse().unwrap();
        let expected = (Utc::now() + chrono::Duration::days(7)).timestamp();
        assert!((ttl - expected).abs() <= 5, "{ttl} vs {expected}");
        // No created_at: the record's arrival time stands in.
        assert_eq!(tweets.get(&["4"]).unwrap()["Timestamp"].as_s().unwrap(), "2026-01-02T03:04:05.678Z");

        let reason = |seq: u64| {
            let item = dead.get(&["shardId-000000000001", &format!("{seq:056}")]).unwrap();
            (item["Reason"].as_s().unwrap().clone(), item)
        };
        assert_eq!(reason(2).0, "not_json");
        assert_eq!(reason(2).1["Data"].as_b().unwrap().as_ref(), b"not json at all");
        assert_eq!(reason(2).1["ArrivalTime"].as_s().unwrap(), "2026-01-02T03:04:05.678Z");
        assert!(reason(2).1["Error"].as_s().unwrap().starts_with("not JSON"));
        assert_eq!(reason(3).0, "too_large");
        assert_eq!(reason(3).1["Data"].as_b().unwrap().as_ref().len(), MAX_DEAD_LETTER_DATA_BYTES);
        assert_eq!(reason(3).1["DataBytes"].as_n().unwrap(), &big.len().to_string());
        assert_eq!(reason(5).0, "not_a_tweet");
    }

    #[tokio::test(start_paused = true)]
    async fn a_tweet_twice_in_a_batch_is_written_once_from_the_later_record() {
        let (p, tweets, _) = processor(1000);
        let records =
            vec![record(1, br#"{"id_str":"9","text":"first"}"#), record(2, br#"{"id_str":"9","text":"second"}"#)];
        let summary = p.process_batch("s", &records).await;
        assert_eq!(summary.tweets_written, 1);
        assert_eq!(tweets.get(&["9"]).unwrap()["Message"].as_s().unwrap(), "second");
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_the_table_refuses_is_dead_lettered_and_does_not_block_the_batch() {
        let (p, tweets, dead) = processor(1000);
        tweets.reject(|item| item["Id"].as_s().unwrap() == "13");
        let records: Vec<_> =
            (0..40).map(|i| record(i, format!(r#"{{"id_str":"{i}","text":"t"}}"#).as_bytes())).collect();
        let summary = p.process_batch("s", &records).await;
        assert_eq!(summary, BatchSummary { records: 40, tweets_written: 39, dead_lettered: 1 });
        assert_eq!(tweets.len(), 39);
        let item = dead.get(&["s", &format!("{:056}", 13)]).unwrap();
        assert_eq!(item["Reason"].as_s().unwrap(), "rejected_by_sink");
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_slows_but_loses_nothing() {
        let (p, tweets, _) = processor(50);
        tweets.throttle_next(4);
        let records: Vec<_> =
            (0..200).map(|i| record(i, format!(r#"{{"id_str":"{i}","text":"t"}}"#).as_bytes())).collect();
        let start = tokio::time::Instant::now();
        let summary = p.process_batch("s", &records).await;
        assert_eq!(summary.tweets_written, 200);
        assert_eq!(tweets.len(), 200);
        // 200 items at 50/s with a one-second burst: at least 3 s.
        assert!(start.elapsed() >= Duration::from_secs(3), "{:?}", start.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn under_a_deadline_a_record_is_unwritten_when_the_item_standing_for_it_is() {
        // Chunks of one item (rate 1/s); tweet 9 appears twice and its item is
        // throttled to the deadline: its first record is the first unwritten one.
        let (p, tweets, dead) = processor(1);
        tweets.throttle_matching(|item| item["Id"].as_s().unwrap() == "9");
        let records = vec![
            record(0, b"garbage"),
            record(1, br#"{"id_str":"8","text":"eight"}"#),
            record(2, br#"{"id_str":"9","text":"first"}"#),
            record(3, br#"{"id_str":"9","text":"second"}"#),
        ];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let outcome = p.process_until("s", &records, Some(deadline)).await;
        assert_eq!(outcome.first_unwritten, Some(2));
        assert!(tokio::time::Instant::now() <= deadline);
        assert!(tweets.get(&["8"]).is_some());
        assert_eq!(dead.len(), 1, "the garbage record is dead-lettered");

        // The dead-letter table out of time makes its record the first unwritten.
        let (p, _, dead) = processor(1000);
        dead.throttle_next(usize::MAX);
        let outcome = p.process_until("s", &records, Some(tokio::time::Instant::now() + Duration::from_secs(3))).await;
        assert_eq!(outcome.first_unwritten, Some(0));
        assert_eq!(outcome.summary.tweets_written, 2);

        // Without a deadline nothing is given up.
        let (p, _, _) = processor(1000);
        assert_eq!(p.process_until("s", &records, None).await.first_unwritten, None);
    }
}

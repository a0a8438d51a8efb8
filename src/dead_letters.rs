//! `stream-worker dead-letters list|replay|purge`: the dead-letter table as an
//! operator sees it, and the way back from it once the cause is fixed.
//!
//! A replay runs each dead letter's stored bytes through the current processing
//! core. One that now becomes a row has its dead letter deleted; one that still
//! fails keeps it, with the new reason and `ReplayCount` one higher. Both writes
//! are conditional on what was read, so two replays running at once never both
//! count one dead letter. A dead letter whose bytes were cut when stored
//! (`DataBytes` over the bytes kept) is not replayable, and is never half-written.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::Serialize;

use crate::aws::{classify, describe, ErrorClass};
use crate::model::{iso8601, truncate, Record};
use crate::processor::Processor;

type Item = HashMap<String, AttributeValue>;

/// The attribute a replay that still fails adds one to.
pub const REPLAY_COUNT: &str = "ReplayCount";

/// One dead letter, as `Processor` stored it (docs/design.md, "Tables").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub shard_id: String,
    /// The table's sort key: the sequence number, and for a user record of a
    /// KPL aggregate `:` and its sub-sequence number (see
    /// [`dead_letter_key`](crate::processor::dead_letter_key)).
    pub sequence_number: String,
    pub partition_key: String,
    /// The stored bytes, base64 in JSON.
    #[serde(serialize_with = "base64_bytes")]
    pub data: Vec<u8>,
    /// The record's size when it arrived; more than `data.len()` when cut.
    pub data_bytes: u64,
    pub reason: String,
    pub error: String,
    pub arrival: Option<DateTime<Utc>>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
    pub replay_count: u64,
}

fn base64_bytes<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
}

impl DeadLetter {
    /// Reads an item; `None` when it has no key or no data.
    pub fn from_item(item: &Item) -> Option<Self> {
        let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let n = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let time =
            |name: &str| s(name).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        let data = item.get("Data").and_then(|v| v.as_b().ok())?.as_ref().to_vec();
        Some(Self {
            shard_id: s("ShardId")?,
            sequence_number: s("SequenceNumber")?,
            partition_key: s("PartitionKey").unwrap_or_default(),
            data_bytes: n("DataBytes").unwrap_or(data.len() as u64),
            data,
            reason: s("Reason").unwrap_or_default(),
            error: s("Error").unwrap_or_default(),
            arrival: time("ArrivalTime"),
            dead_lettered_at: time("DeadLetteredAt"),
            replay_count: n(REPLAY_COUNT).unwrap_or(0),
        })
    }

    /// Whether the stored bytes are the whole record.
    pub fn is_replayable(&self) -> bool {
        self.data_bytes <= self.data.len() as u64
    }

    /// The record as it came from the stream (or out of its aggregate).
    pub fn record(&self) -> Record {
        let (sequence_number, sub_sequence) = match self.sequence_number.split_once(':') {
            Some((seq, sub)) => (seq.to_owned(), sub.parse().ok()),
            None => (self.sequence_number.clone(), None),
        };
        Record {
            sequence_number,
            partition_key: self.partition_key.clone(),
            data: self.data.clone(),
            arrival: self.arrival.or(self.dead_lettered_at).unwrap_or_else(Utc::now),
            sub_sequence,
        }
    }

    fn key(&self) -> Item {
        HashMap::from([
            ("ShardId".to_owned(), AttributeValue::S(self.shard_id.clone())),
            ("SequenceNumber".to_owned(), AttributeValue::S(self.sequence_number.clone())),
        ])
    }
}

/// Which dead letters a command applies to.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub reason: Option<String>,
    /// Only these shards; every shard when empty.
    pub shards: Vec<String>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<usize>,
}

impl Filter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == d.reason)
            && (self.shards.is_empty() || self.shards.contains(&d.shard_id))
            && self.since.is_none_or(|since| d.dead_lettered_at.is_some_and(|t| t >= since))
    }
}

/// The dead-letter table.
pub struct DeadLetterTable {
    client: Client,
    table: String,
}

/// What a conditional delete or update of a dead letter came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Done,
    /// Another replay or purge changed or deleted it first.
    ByAnother,
}

impl DeadLetterTable {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The matching dead letters, in key order per page, at most `filter.limit`.
    /// `--shard` reads only those shards' partitions (a Query each); otherwise a Scan.
    pub async fn matching(&self, filter: &Filter) -> anyhow::Result<Vec<DeadLetter>> {
        let mut found = Vec::new();
        if filter.shards.is_empty() {
            self.read(None, filter, &mut found).await?;
        }
        for shard in &filter.shards {
            if self.read(Some(shard), filter, &mut found).await? {
                break;
            }
        }
        Ok(found)
    }

    /// Adds the matching dead letters of one shard, or of all, to `found`;
    /// whether `filter.limit` is reached.
    async fn read(&self, shard: Option<&str>, filter: &Filter, found: &mut Vec<DeadLetter>) -> anyhow::Result<bool> {
        let mut start: Option<Item> = None;
        loop {
            let (items, last) = match shard {
                Some(shard) => {
                    let out = self
                        .client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("ShardId = :shard")
                        .expression_attribute_values(":shard", AttributeValue::S(shard.to_owned()))
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| anyhow::anyhow!("dead-letter table '{}': Query: {}", self.table, describe(&e)))?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
                None => {
                    let out = self
                        .client
                        .scan()
                        .table_name(&self.table)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .map_err(|e| anyhow::anyhow!("dead-letter table '{}': Scan: {}", self.table, describe(&e)))?;
                    (out.items.unwrap_or_default(), out.last_evaluated_key)
                }
            };
            for item in &items {
                match DeadLetter::from_item(item) {
                    Some(d) if filter.matches(&d) => found.push(d),
                    Some(_) => {}
                    None => tracing::warn!(table = %self.table, "skipping an item that is not a dead letter"),
                }
                if filter.limit.is_some_and(|limit| found.len() >= limit) {
                    return Ok(true);
                }
            }
            match last {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(false),
            }
        }
    }

    /// Deletes the dead letter if it is still there.
    pub async fn delete(&self, d: &DeadLetter) -> anyhow::Result<Changed> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(d.key()))
            .condition_expression("attribute_exists(SequenceNumber)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Changed::Done),
            Err(e) if classify(&e) == ErrorClass::ConditionFailed => Ok(Changed::ByAnother),
            Err(e) => Err(anyhow::anyhow!("dead-letter table '{}': DeleteItem: {}", self.table, describe(&e))),
        }
    }

    /// Records a replay that failed again: the new reason and error, and
    /// `ReplayCount` one higher, if nobody counted a replay since `d` was read.
    pub async fn count_failed_replay(&self, d: &DeadLetter, reason: &str, error: &str) -> anyhow::Result<Changed> {
        let mut values = HashMap::from([
            (":next".to_owned(), AttributeValue::N((d.replay_count + 1).to_string())),
            (":reason".to_owned(), AttributeValue::S(reason.to_owned())),
            (":error".to_owned(), AttributeValue::S(truncate(error, 1024))),
            (":now".to_owned(), AttributeValue::S(iso8601(Utc::now()))),
        ]);
        let condition = if d.replay_count == 0 {
            format!("attribute_exists(SequenceNumber) AND attribute_not_exists({REPLAY_COUNT})")
        } else {
            values.insert(":seen".to_owned(), AttributeValue::N(d.replay_count.to_string()));
            format!("{REPLAY_COUNT} = :seen")
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(d.key()))
            .update_expression(format!(
                "SET {REPLAY_COUNT} = :next, Reason = :reason, #error = :error, LastReplayedAt = :now"
            ))
            .expression_attribute_names("#error", "Error")
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Changed::Done),
            Err(e) if classify(&e) == ErrorClass::ConditionFailed => Ok(Changed::ByAnother),
            Err(e) => Err(anyhow::anyhow!("dead-letter table '{}': UpdateItem: {}", self.table, describe(&e))),
        }
    }
}

/// What a replay came to; with `dry_run`, what it would come to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub dry_run: bool,
    /// Written as rows; their dead letters deleted.
    pub replayed: u64,
    /// Still not a row; kept with the new reason and replay count.
    pub still_failing: u64,
    /// Stored cut (over the stored size limit): never replayed.
    pub not_replayable: u64,
    /// Replayed or counted by another replay running at the same time.
    pub counted_by_another: u64,
    /// Why the ones still failing fail, by reason.
    pub still_failing_by_reason: BTreeMap<String, u64>,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would replay" } else { "replayed" };
        write!(
            f,
            "{verb} {} (now rows), still failing {}, not replayable {} (stored cut), counted by another replay {}",
            self.replayed, self.still_failing, self.not_replayable, self.counted_by_another
        )?;
        for (reason, n) in &self.still_failing_by_reason {
            write!(f, "\n  still failing: {reason}: {n}")?;
        }
        Ok(())
    }
}

/// A progress line on a terminal (indicatif draws nothing otherwise).
pub fn progress(total: usize, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Dead letters replayed per `Processor::replay` call.
const REPLAY_BATCH: usize = 100;
/// Deletes and updates of dead letters in flight at once.
const CONCURRENCY: usize = 16;

/// Replays `letters` through `processor` (see the module's documentation).
pub async fn replay(
    table: &DeadLetterTable,
    processor: &Processor,
    letters: Vec<DeadLetter>,
    dry_run: bool,
) -> anyhow::Result<ReplaySummary> {
    let mut summary = ReplaySummary { dry_run, ..Default::default() };
    let bar = progress(letters.len(), if dry_run { "checking" } else { "replaying" });
    let (replayable, cut): (Vec<DeadLetter>, Vec<DeadLetter>) = letters.into_iter().partition(|d| d.is_replayable());
    for d in &cut {
        tracing::warn!(shard_id = %d.shard_id, sequence_number = %d.sequence_number, data_bytes = d.data_bytes,
            kept = d.data.len(), "not replayable: the dead letter keeps only the start of the record");
    }
    summary.not_replayable = cut.len() as u64;
    bar.inc(cut.len() as u64);
    let mut by_shard: BTreeMap<&str, Vec<&DeadLetter>> = BTreeMap::new();
    for d in &replayable {
        by_shard.entry(d.shard_id.as_str()).or_default().push(d);
    }
    for (shard, letters) in by_shard {
        for batch in letters.chunks(REPLAY_BATCH) {
            let records: Vec<Record> = batch.iter().map(|d| d.record()).collect();
            let results = if dry_run {
                records.iter().map(|r| processor.check(shard, r)).collect()
            } else {
                processor.replay(shard, &records).await
            };
            let changes = futures::stream::iter(batch.iter().zip(results))
                .map(|(d, result)| async move {
                    let change = match (&result, dry_run) {
                        (_, true) => Changed::Done,
                        (Ok(()), false) => table.delete(d).await?,
                        (Err((reason, why)), false) => table.count_failed_replay(d, reason.label(), why).await?,
                    };
                    anyhow::Ok((result, change))
                })
                .buffered(CONCURRENCY)
                .collect::<Vec<_>>()
                .await;
            for change in changes {
                match change? {
                    (_, Changed::ByAnother) => summary.counted_by_another += 1,
                    (Ok(()), Changed::Done) => summary.replayed += 1,
                    (Err((reason, _)), Changed::Done) => {
                        summary.still_failing += 1;
                        *summary.still_failing_by_reason.entry(reason.label().to_owned()).or_default() += 1;
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Deletes `letters`; returns how many this call deleted.
pub async fn purge(table: &DeadLetterTable, letters: &[DeadLetter]) -> anyhow::Result<(u64, u64)> {
    let bar = progress(letters.len(), "purging");
    let results = futures::stream::iter(letters)
        .map(|d| async {
            let changed = table.delete(d).await;
            bar.inc(1);
            changed
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    let (mut deleted, mut gone) = (0, 0);
    for r in results {
        match r? {
            Changed::Done => deleted += 1,
            Changed::ByAnother => gone += 1,
        }
    }
    Ok((deleted, gone))
}

/// The `list` table.
pub fn render_text(letters: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<16} {:>7} {:>8}  {:<24} {}\n",
        "SHARD", "SEQUENCE", "REASON", "REPLAYS", "BYTES", "DEAD-LETTERED AT", "ERROR"
    );
    for d in letters {
        let seq = &d.sequence_number;
        let seq = if seq.len() > 16 { format!("…{}", &seq[seq.len() - 15..]) } else { seq.clone() };
        let at = d.dead_lettered_at.map(iso8601).unwrap_or_else(|| "-".into());
        let bytes = if d.is_replayable() { d.data_bytes.to_string() } else { format!("{}!", d.data_bytes) };
        let error: String = d.error.chars().take(80).collect();
        out.push_str(&format!(
            "{:<24} {:<16} {:<16} {:>7} {:>8}  {:<24} {}\n",
            d.shard_id, seq, d.reason, d.replay_count, bytes, at, error
        ));
    }
    out.push_str(&format!("{} dead letter(s); BYTES with ! were stored cut and cannot be replayed\n", letters.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::{dead_letter_item, Reason, MAX_DEAD_LETTER_DATA_BYTES};

    fn record(seq: &str, data: &[u8]) -> Record {
        Record {
            sequence_number: seq.into(),
            partition_key: "pk".into(),
            data: data.to_vec(),
            arrival: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z").unwrap().with_timezone(&Utc),
            sub_sequence: None,
        }
    }

    #[test]
    fn a_dead_letter_reads_back_as_the_record_it_was() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T04:00:00Z").unwrap().with_timezone(&Utc);
        let r = record("49590338271490256608559692538361571095921575989136588898", b"not json");
        let d = DeadLetter::from_item(&dead_letter_item("shardId-1", &r, Reason::NotJson, "not JSON: x", now)).unwrap();
        assert_eq!((d.shard_id.as_str(), d.reason.as_str(), d.replay_count), ("shardId-1", "not_json", 0));
        assert!(d.is_replayable());
        let back = d.record();
        assert_eq!((back.sequence_number, back.data, back.arrival), (r.sequence_number, r.data, r.arrival));
        assert_eq!(d.dead_lettered_at, Some(now));

        // A user record of an aggregate: keyed apart from its siblings, read back whole.
        let mut user = record("7", b"bad");
        user.sub_sequence = Some(3);
        let d = DeadLetter::from_item(&dead_letter_item("s", &user, Reason::NotJson, "x", now)).unwrap();
        assert_eq!(d.sequence_number, "7:3");
        let back = d.record();
        assert_eq!((back.sequence_number.as_str(), back.sub_sequence), ("7", Some(3)));

        let big = record("2", &vec![b'x'; MAX_DEAD_LETTER_DATA_BYTES + 10]);
        let d = DeadLetter::from_item(&dead_letter_item("s", &big, Reason::TooLarge, "big", now)).unwrap();
        assert!(!d.is_replayable(), "cut when stored: {} of {}", d.data.len(), d.data_bytes);
        assert!(render_text(&[d]).contains(&format!("{}!", MAX_DEAD_LETTER_DATA_BYTES + 10)));
    }

    #[test]
    fn filters_combine() {
        let now = Utc::now();
        let item = dead_letter_item("s1", &record("1", b"x"), Reason::NotJson, "e", now);
        let d = DeadLetter::from_item(&item).unwrap();
        assert!(Filter::default().matches(&d));
        assert!(Filter { reason: Some("not_json".into()), shards: vec!["s1".into()], ..Default::default() }.matches(&d));
        assert!(!Filter { reason: Some("too_large".into()), ..Default::default() }.matches(&d));
        assert!(!Filter { shards: vec!["s2".into()], ..Default::default() }.matches(&d));
        let later = now + chrono::Duration::seconds(1);
        assert!(!Filter { since: Some(later), ..Default::default() }.matches(&d));
        assert!(Filter { since: Some(now - chrono::Duration::seconds(1)), ..Default::default() }.matches(&d));
    }
}

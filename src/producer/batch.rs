//! PutRecords batches, within the API's limits: at most 500 records and 5 MiB
//! per call, at most 1 MiB per record (data and partition key both count).

use super::Outgoing;

pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
pub const MAX_BYTES_PER_RECORD: usize = 1024 * 1024;

/// A record with its partition key, as it is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyed {
    pub record: Outgoing,
    pub partition_key: String,
    /// When the source handed it over (for the put latency).
    pub received: tokio::time::Instant,
}

impl Keyed {
    /// What the record counts against the per-record and per-call limits.
    pub fn size(&self) -> usize {
        self.record.data.len() + self.partition_key.len()
    }
}

/// One KPL aggregate of tweets, as it is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// Its first tweet's.
    pub partition_key: String,
    /// Its first tweet's hash key, so that it lands on their shard.
    pub explicit_hash_key: u128,
    pub data: Vec<u8>,
    /// The tweets in it, in sub-sequence order (their bytes are in `data`).
    pub members: Vec<Keyed>,
    /// The shard it was packed for, when known.
    pub shard: Option<String>,
}

/// One Kinesis record of a PutRecords call: a tweet, or an aggregate of tweets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    Plain(Keyed),
    Aggregate(Aggregate),
}

impl Put {
    pub fn partition_key(&self) -> &str {
        match self {
            Self::Plain(k) => &k.partition_key,
            Self::Aggregate(a) => &a.partition_key,
        }
    }

    pub fn explicit_hash_key(&self) -> Option<u128> {
        match self {
            Self::Plain(_) => None,
            Self::Aggregate(a) => Some(a.explicit_hash_key),
        }
    }

    pub fn data(&self) -> &[u8] {
        match self {
            Self::Plain(k) => &k.record.data,
            Self::Aggregate(a) => &a.data,
        }
    }

    /// What it counts against the per-record and per-call limits.
    pub fn size(&self) -> usize {
        self.data().len() + self.partition_key().len()
    }

    /// Tweets (records received) it carries.
    pub fn tweets(&self) -> usize {
        match self {
            Self::Plain(_) => 1,
            Self::Aggregate(a) => a.members.len(),
        }
    }
}

/// Why a record can never be put.
pub fn oversized(record: &Keyed) -> Option<String> {
    (record.size() > MAX_BYTES_PER_RECORD).then(|| {
        format!(
            "{} bytes with its partition key, over Kinesis' limit of {MAX_BYTES_PER_RECORD} bytes a record",
            record.size()
        )
    })
}

#[derive(Debug, Default)]
pub struct Batch {
    records: Vec<Put>,
    bytes: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether `record` can join this call without breaking a limit.
    pub fn fits(&self, record: &Put) -> bool {
        self.records.len() < MAX_RECORDS_PER_CALL && self.bytes + record.size() <= MAX_BYTES_PER_CALL
    }

    /// Whether no further record can join.
    pub fn is_full(&self) -> bool {
        self.records.len() == MAX_RECORDS_PER_CALL || self.bytes == MAX_BYTES_PER_CALL
    }

    /// Adds a record that [`fits`](Self::fits).
    pub fn push(&mut self, record: Put) {
        debug_assert!(self.fits(&record));
        self.bytes += record.size();
        self.records.push(record);
    }

    pub fn take(&mut self) -> Vec<Put> {
        self.bytes = 0;
        std::mem::take(&mut self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(bytes: usize, key: &str) -> Put {
        Put::Plain(plain(bytes, key))
    }

    fn plain(bytes: usize, key: &str) -> Keyed {
        Keyed {
            record: Outgoing { id: key.into(), data: vec![b'x'; bytes], kind: "file" },
            partition_key: key.into(),
            received: tokio::time::Instant::now(),
        }
    }

    #[test]
    fn five_hundred_records_fill_a_call_and_the_next_waits() {
        let mut batch = Batch::default();
        for i in 0..MAX_RECORDS_PER_CALL {
            let r = keyed(10, &format!("k{i:03}"));
            assert!(batch.fits(&r), "record {i}");
            batch.push(r);
        }
        assert!(batch.is_full());
        assert!(!batch.fits(&keyed(1, "k")));
        assert_eq!(batch.take().len(), MAX_RECORDS_PER_CALL);
        assert!(batch.is_empty() && batch.fits(&keyed(1, "k")));
    }

    #[test]
    fn five_mebibytes_to_the_byte_counting_partition_keys() {
        let mut batch = Batch::default();
        // Five records of exactly 1 MiB each (data plus a 4-byte key): 5 MiB exactly.
        for i in 0..5 {
            let r = keyed(MAX_BYTES_PER_RECORD - 4, &format!("k{i:03}"));
            let Put::Plain(k) = &r else { unreachable!() };
            assert_eq!(oversized(k), None);
            assert!(batch.fits(&r));
            batch.push(r);
        }
        assert!(batch.is_full());
        assert!(!batch.fits(&keyed(0, "k")), "a key alone is a byte too many");
        let mut batch = Batch::default();
        batch.push(keyed(MAX_BYTES_PER_CALL - 10, "a"));
        assert!(batch.fits(&keyed(8, "b")), "9 bytes leave the call at 5 MiB - 0");
        assert!(!batch.fits(&keyed(9, "b")), "10 bytes would be one over");
    }

    #[test]
    fn a_record_over_one_mebibyte_with_its_key_is_refused() {
        assert_eq!(oversized(&plain(MAX_BYTES_PER_RECORD - 2, "ab")), None);
        let why = oversized(&plain(MAX_BYTES_PER_RECORD - 1, "ab")).unwrap();
        assert!(why.contains("1048577 bytes"), "{why}");
    }
}

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
    records: Vec<Keyed>,
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
    pub fn fits(&self, record: &Keyed) -> bool {
        self.records.len() < MAX_RECORDS_PER_CALL && self.bytes + record.size() <= MAX_BYTES_PER_CALL
    }

    /// Whether no further record can join.
    pub fn is_full(&self) -> bool {
        self.records.len() == MAX_RECORDS_PER_CALL || self.bytes == MAX_BYTES_PER_CALL
    }

    /// Adds a record that [`fits`](Self::fits).
    pub fn push(&mut self, record: Keyed) {
        debug_assert!(self.fits(&record));
        self.bytes += record.size();
        self.records.push(record);
    }

    pub fn take(&mut self) -> Vec<Keyed> {
        self.bytes = 0;
        std::mem::take(&mut self.records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(bytes: usize, key: &str) -> Keyed {
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
            assert_eq!(oversized(&r), None);
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
        assert_eq!(oversized(&keyed(MAX_BYTES_PER_RECORD - 2, "ab")), None);
        let why = oversized(&keyed(MAX_BYTES_PER_RECORD - 1, "ab")).unwrap();
        assert!(why.contains("1048577 bytes"), "{why}");
    }
}

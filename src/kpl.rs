//! The Kinesis Producer Library's aggregated record format: many user records
//! in one Kinesis record.
//!
//! An aggregate is the magic `F3 89 9A C2`, a protobuf `AggregatedRecord` and
//! the MD5 of that protobuf. Each user record names its partition key (and,
//! optionally, an explicit hash key) by index into the aggregate's tables; its
//! position in the aggregate is its sub-sequence number. [`deaggregate`] reads
//! one, [`Aggregator`] writes one. Pure: no I/O.
//!
//! There is no maintained Rust crate for this format; the messages are the
//! KPL's `messages.proto`, declared with prost's derive (no build script).

use md5::{Digest, Md5};

use crate::model::{HashRange, Record};
use prost::Message;

/// The four bytes an aggregated record's data starts with (`F3 89 9A C2`), as
/// the KPL writes them.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_BYTES: usize = 16;
/// Kinesis' limit on a partition key, in bytes (256 Unicode characters of which
/// the KPL only ever writes ASCII; counted in bytes here, the stricter reading).
pub const MAX_PARTITION_KEY_BYTES: usize = 256;

/// `messages.proto` of the KPL (proto2).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AggregatedRecord {
        #[prost(string, repeated, tag = "1")]
        pub partition_key_table: Vec<String>,
        #[prost(string, repeated, tag = "2")]
        pub explicit_hash_key_table: Vec<String>,
        #[prost(message, repeated, tag = "3")]
        pub records: Vec<Record>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(uint64, required, tag = "1")]
        pub partition_key_index: u64,
        #[prost(uint64, optional, tag = "2")]
        pub explicit_hash_key_index: Option<u64>,
        #[prost(bytes = "vec", required, tag = "3")]
        pub data: Vec<u8>,
        #[prost(message, repeated, tag = "4")]
        pub tags: Vec<Tag>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tag {
        #[prost(string, required, tag = "1")]
        pub key: String,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }
}

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The user record's partition key, from the aggregate's partition key table.
    pub partition_key: String,
    /// The explicit hash key, when the producer set one; it overrides the partition
    /// key's MD5 for routing (see [`UserRecord::hash_key`]).
    pub explicit_hash_key: Option<u128>,
    /// The user record's payload.
    pub data: Vec<u8>,
}

impl UserRecord {
    /// The hash key Kinesis routes this record by: the explicit one, or the MD5
    /// of the partition key as a 128-bit number.
    pub fn hash_key(&self) -> u128 {
        self.explicit_hash_key.unwrap_or_else(|| hash_key(&self.partition_key))
    }
}

/// The hash key Kinesis derives from a partition key: its MD5 as a 128-bit number.
pub fn hash_key(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Why a record that starts with the magic is not a readable aggregate. Such a
/// record is processed as a plain record (as the KCL does), and counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The data is shorter than the magic plus an MD5 (20 bytes); holds its length
    /// in bytes.
    #[error("{0} bytes: too short for the magic and an MD5")]
    TooShort(usize),
    /// The trailing MD5 is not the digest of the protobuf before it.
    #[error("the MD5 does not match the protobuf")]
    Digest,
    /// The bytes between the magic and the MD5 are not an `AggregatedRecord`;
    /// holds the decoder's message.
    #[error("the protobuf does not decode: {0}")]
    Protobuf(String),
    /// The aggregate decodes but holds no user record.
    #[error("it holds no user record")]
    Empty,
    /// A user record names a partition key or explicit hash key index past the
    /// end of its table.
    #[error("user record {record} names {table} index {index}, past the table's {len} entries")]
    Index {
        /// The user record's position in the aggregate, from 0 (its sub-sequence
        /// number).
        record: usize,
        /// Which table: `"partition key"` or `"explicit hash key"`.
        table: &'static str,
        /// The index the user record names.
        index: u64,
        /// The number of entries in that table.
        len: usize,
    },
    /// The partition key table's entry at this index is empty or longer than
    /// [`MAX_PARTITION_KEY_BYTES`].
    #[error("partition key {0} is empty or over {MAX_PARTITION_KEY_BYTES} bytes")]
    PartitionKey(usize),
    /// An entry of the explicit hash key table is not a decimal number below
    /// 2^128; holds the entry, cut to 64 characters.
    #[error("explicit hash key {0:?} is not a number below 2^128")]
    ExplicitHashKey(String),
}

/// Whether `data` claims to be an aggregate (starts with the magic).
pub fn is_aggregate(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The user records of an aggregate, in sub-sequence order; `None` when `data`
/// is not an aggregate at all (no magic), `Some(Err)` when it claims to be one
/// and is not readable.
pub fn deaggregate(data: &[u8]) -> Option<Result<Vec<UserRecord>, Invalid>> {
    is_aggregate(data).then(|| read(data))
}

fn read(data: &[u8]) -> Result<Vec<UserRecord>, Invalid> {
    if data.len() < MAGIC.len() + DIGEST_BYTES {
        return Err(Invalid::TooShort(data.len()));
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_BYTES);
    if Md5::digest(body).as_slice() != digest {
        return Err(Invalid::Digest);
    }
    let aggregate = proto::AggregatedRecord::decode(body).map_err(|e| Invalid::Protobuf(e.to_string()))?;
    if aggregate.records.is_empty() {
        return Err(Invalid::Empty);
    }
    for (i, key) in aggregate.partition_key_table.iter().enumerate() {
        if key.is_empty() || key.len() > MAX_PARTITION_KEY_BYTES {
            return Err(Invalid::PartitionKey(i));
        }
    }
    let hash_keys = aggregate
        .explicit_hash_key_table
        .iter()
        .map(|k| k.parse::<u128>().map_err(|_| Invalid::ExplicitHashKey(crate::model::truncate(k, 64))))
        .collect::<Result<Vec<u128>, Invalid>>()?;
    let lookup = |record: usize, table: &'static str, index: u64, len: usize| {
        usize::try_from(index).ok().filter(|&i| i < len).ok_or(Invalid::Index { record, table, index, len })
    };
    let keys = &aggregate.partition_key_table;
    aggregate
        .records
        .into_iter()
        .enumerate()
        .map(|(n, r)| {
            let key = lookup(n, "partition key", r.partition_key_index, keys.len())?;
            let explicit_hash_key = match r.explicit_hash_key_index {
                Some(index) => Some(hash_keys[lookup(n, "explicit hash key", index, hash_keys.len())?]),
                None => None,
            };
            Ok(UserRecord { partition_key: keys[key].clone(), explicit_hash_key, data: r.data })
        })
        .collect()
}

/// Builds one aggregate, knowing its encoded size as records are added.
#[derive(Debug, Default)]
pub struct Aggregator {
    message: proto::AggregatedRecord,
    key_index: std::collections::HashMap<String, u64>,
    /// The protobuf's encoded length so far.
    body_bytes: usize,
}

impl Aggregator {
    /// Whether no user record has been added yet.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// The number of user records added so far.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// The aggregate's size as a Kinesis record's data, were it finished now.
    pub fn size(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        MAGIC.len() + self.body_bytes + DIGEST_BYTES
    }

    /// The size [`size`](Self::size) would have with this record added.
    pub fn size_with(&self, partition_key: &str, data: &[u8]) -> usize {
        MAGIC.len() + self.body_bytes + self.added_bytes(partition_key, data) + DIGEST_BYTES
    }

    fn added_bytes(&self, partition_key: &str, data: &[u8]) -> usize {
        use prost::encoding::{encoded_len_varint, key_len, uint64};
        // A length-delimited field: its key, its length, its bytes.
        let field = |tag: u32, len: usize| key_len(tag) + encoded_len_varint(len as u64) + len;
        let (index, new_key) = match self.key_index.get(partition_key) {
            Some(&i) => (i, 0),
            None => (self.message.partition_key_table.len() as u64, field(1, partition_key.len())),
        };
        // The record: its key index (field 1) and data (field 3), as field 3 of the aggregate.
        new_key + field(3, uint64::encoded_len(1, &index) + field(3, data.len()))
    }

    /// Adds a user record; its sub-sequence number is the count before it.
    pub fn add(&mut self, partition_key: &str, data: &[u8]) -> u64 {
        self.body_bytes += self.added_bytes(partition_key, data);
        let index = match self.key_index.get(partition_key) {
            Some(&i) => i,
            None => {
                let i = self.message.partition_key_table.len() as u64;
                self.message.partition_key_table.push(partition_key.to_owned());
                self.key_index.insert(partition_key.to_owned(), i);
                i
            }
        };
        self.message.records.push(proto::Record {
            partition_key_index: index,
            explicit_hash_key_index: None,
            data: data.to_vec(),
            tags: Vec::new(),
        });
        self.message.records.len() as u64 - 1
    }

    /// The aggregate's bytes; the aggregator is empty again.
    pub fn finish(&mut self) -> Vec<u8> {
        let message = std::mem::take(&mut self.message);
        self.key_index.clear();
        self.body_bytes = 0;
        let body = message.encode_to_vec();
        let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_BYTES);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }
}

/// What [`deaggregate_records`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deaggregated {
    /// Kinesis records that were KPL aggregates, replaced by their user records.
    pub aggregates: usize,
    /// Records with the KPL magic that did not read as an aggregate; kept as
    /// plain records (the KCL does the same).
    pub invalid: usize,
    /// User records whose hash key is outside the shard's range (after a
    /// reshard, a producer's stale prediction); processed all the same.
    pub outside_range: usize,
}

/// Replaces each KPL aggregate among `records` by its user records, in order,
/// each with its sub-sequence number and partition key. A record that claims
/// to be an aggregate and is not readable stays a plain record, logged and
/// counted. With the shard's hash key `range`, user records outside it are
/// counted: the KCL drops them, but tweets are keyed by id, so writing one
/// that another shard's consumer also writes changes nothing, and dropping it
/// could lose it.
pub fn deaggregate_records(records: &mut Vec<Record>, shard_id: &str, range: Option<HashRange>) -> Deaggregated {
    let mut found = Deaggregated::default();
    if !records.iter().any(|r| is_aggregate(&r.data)) {
        return found;
    }
    let mut out = Vec::with_capacity(records.len());
    for record in records.drain(..) {
        match deaggregate(&record.data) {
            None => out.push(record),
            Some(Err(why)) => {
                found.invalid += 1;
                tracing::warn!(shard_id, sequence_number = %record.sequence_number, error = %why,
                    "a record with the KPL magic is not a readable aggregate; processing it as a plain record");
                out.push(record);
            }
            Some(Ok(users)) => {
                found.aggregates += 1;
                for (sub, user) in users.into_iter().enumerate() {
                    if range.is_some_and(|(low, high)| !(low..=high).contains(&user.hash_key())) {
                        found.outside_range += 1;
                    }
                    out.push(Record {
                        sequence_number: record.sequence_number.clone(),
                        partition_key: user.partition_key,
                        data: user.data,
                        arrival: record.arrival,
                        sub_sequence: Some(sub as u64),
                    });
                }
            }
        }
    }
    *records = out;
    metrics::counter!(crate::metrics::AGGREGATES).increment(found.aggregates as u64);
    metrics::counter!(crate::metrics::INVALID_AGGREGATES).increment(found.invalid as u64);
    metrics::counter!(crate::metrics::RECORDS_OUTSIDE_SHARD).increment(found.outside_range as u64);
    if found.outside_range > 0 {
        tracing::info!(shard_id, records = found.outside_range,
            "user records outside the shard's hash key range (a producer routed them before a reshard); processing them");
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
        let mut a = Aggregator::default();
        for (i, (key, data)) in records.iter().enumerate() {
            assert_eq!(a.size_with(key, data), {
                let mut probe = Aggregator::default();
                for (k, d) in &records[..=i] {
                    probe.add(k, d);
                }
                probe.finish().len()
            });
            assert_eq!(a.add(key, data), i as u64);
        }
        let size = a.size();
        let bytes = a.finish();
        assert_eq!(bytes.len(), size, "the size known in advance is the size written");
        assert!(a.is_empty() && a.size() == 0);
        bytes
    }

    #[test]
    fn round_trip_keeps_order_keys_and_data() {
        let records: Vec<(&str, &[u8])> =
            vec![("a", b"one"), ("b", b""), ("a", b"three"), ("k".repeat(256).leak(), &[0xff; 300])];
        let bytes = aggregate(&records);
        assert!(bytes.starts_with(&MAGIC));
        let back = deaggregate(&bytes).unwrap().unwrap();
        assert_eq!(back.len(), 4);
        for ((key, data), r) in records.iter().zip(&back) {
            assert_eq!((r.partition_key.as_str(), r.data.as_slice(), r.explicit_hash_key), (*key, *data, None));
        }
        assert_eq!(back[0].hash_key(), hash_key("a"));
    }

    #[test]
    fn plain_records_are_not_aggregates() {
        assert_eq!(deaggregate(br#"{"id_str":"1"}"#), None);
        assert_eq!(deaggregate(b""), None);
        assert_eq!(deaggregate(&MAGIC[..3]), None);
    }

    /// An aggregate made by the awslabs Python library (`aws-kinesis-agg`
    /// 1.2.3): `pk1`/hello, `pk2` with explicit hash key 123/world, `pk1`/again.
    #[test]
    fn reads_the_python_librarys_aggregate_with_an_explicit_hash_key() {
        const MADE_BY_AWS_KINESIS_AGG: &str = "f3899ac20a03706b310a03706b3212033132331a0908001a0568656c6c6f1a0b0801\
            10001a05776f726c641a0908001a05616761696e24561b127132ff51089ee4f5eb5776d7";
        let bytes: Vec<u8> = (0..MADE_BY_AWS_KINESIS_AGG.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&MADE_BY_AWS_KINESIS_AGG[i..i + 2], 16).unwrap())
            .collect();
        let back = deaggregate(&bytes).unwrap().unwrap();
        let user = |key: &str, ehk: Option<u128>, data: &[u8]| UserRecord {
            partition_key: key.into(),
            explicit_hash_key: ehk,
            data: data.to_vec(),
        };
        assert_eq!(back, [user("pk1", None, b"hello"), user("pk2", Some(123), b"world"), user("pk1", None, b"again")]);
        assert_eq!(back[1].hash_key(), 123);
        // Ours, for the same records without the explicit key, is as compact.
        assert_eq!(aggregate(&[("pk1", b"hello"), ("pk2", b"world"), ("pk1", b"again")]).len(), bytes.len() - 7);
    }

    #[test]
    fn corrupt_aggregates_say_why() {
        let good = aggregate(&[("a", b"x"), ("b", b"y")]);
        let fix_digest = |mut bytes: Vec<u8>| {
            let end = bytes.len() - DIGEST_BYTES;
            let digest = Md5::digest(&bytes[MAGIC.len()..end]);
            bytes[end..].copy_from_slice(&digest);
            bytes
        };
        let with_body = |message: &proto::AggregatedRecord| {
            let body = message.encode_to_vec();
            [&MAGIC[..], &body, &Md5::digest(&body)].concat()
        };
        let record = |pk: u64, ehk: Option<u64>| proto::Record {
            partition_key_index: pk,
            explicit_hash_key_index: ehk,
            data: b"d".to_vec(),
            tags: vec![],
        };
        let table = |keys: &[&str], ehks: &[&str], records: Vec<proto::Record>| proto::AggregatedRecord {
            partition_key_table: keys.iter().map(|k| k.to_string()).collect(),
            explicit_hash_key_table: ehks.iter().map(|k| k.to_string()).collect(),
            records,
        };
        let mut flipped = good.clone();
        flipped[6] ^= 1;
        type Expect = fn(&Invalid) -> bool;
        let cases: Vec<(Vec<u8>, Expect)> = vec![
            (MAGIC.to_vec(), |e| matches!(e, Invalid::TooShort(4))),
            (good[..good.len() - 1].to_vec(), |e| matches!(e, Invalid::Digest)),
            (flipped, |e| matches!(e, Invalid::Digest)),
            (fix_digest([&MAGIC[..], &[0x1a, 0xff, 0xff, 0xff, 0x0f], &[0; 16]].concat()), |e| {
                matches!(e, Invalid::Protobuf(_))
            }),
            (with_body(&table(&["a"], &[], vec![])), |e| matches!(e, Invalid::Empty)),
            (with_body(&table(&["a"], &[], vec![record(1, None)])), |e| {
                matches!(e, Invalid::Index { table: "partition key", index: 1, .. })
            }),
            (with_body(&table(&["a"], &["5"], vec![record(0, Some(u64::MAX))])), |e| {
                matches!(e, Invalid::Index { table: "explicit hash key", .. })
            }),
            (with_body(&table(&["a"], &["340282366920938463463374607431768211456"], vec![record(0, None)])), |e| {
                matches!(e, Invalid::ExplicitHashKey(_))
            }),
            (with_body(&table(&[""], &[], vec![record(0, None)])), |e| matches!(e, Invalid::PartitionKey(0))),
        ];
        for (bytes, expected) in cases {
            let err = deaggregate(&bytes).unwrap().unwrap_err();
            assert!(expected(&err), "{err}");
        }
    }

    /// Random damage to aggregates (truncation, flipped and inserted bytes,
    /// with and without a recomputed MD5, absurd lengths and counts): never a
    /// panic, always user records or a reason.
    #[test]
    fn fuzzed_corrupt_input_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let base: Vec<Vec<u8>> = vec![
            aggregate(&[("a", b"x")]),
            aggregate(&[("a", b"one"), ("bb", b"two"), ("a", &[7; 200])]),
            aggregate(&(0..50).map(|i| (["k1", "k2", "k3"][i % 3], &b"0123456789"[..i % 10])).collect::<Vec<_>>()),
        ];
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..20_000 {
            let mut bytes = base[round % base.len()].clone();
            match rng.gen_range(0..5) {
                0 => bytes.truncate(rng.gen_range(MAGIC.len()..bytes.len())),
                1 => {
                    for _ in 0..rng.gen_range(1..4) {
                        let i = rng.gen_range(MAGIC.len()..bytes.len());
                        bytes[i] = rng.gen();
                    }
                }
                2 => {
                    let i = rng.gen_range(4..bytes.len());
                    bytes.insert(i, rng.gen());
                }
                3 => {
                    // A varint claiming a huge length or count, inside the body.
                    let i = rng.gen_range(4..bytes.len() - DIGEST_BYTES);
                    bytes.splice(i..i, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
                }
                _ => bytes.extend((0..rng.gen_range(1..64)).map(|_| rng.gen::<u8>())),
            }
            if rng.gen_bool(0.7) && bytes.len() >= MAGIC.len() + DIGEST_BYTES {
                // Damage the protobuf itself, past the digest check.
                let end = bytes.len() - DIGEST_BYTES;
                let digest = Md5::digest(&bytes[MAGIC.len()..end]);
                bytes[end..].copy_from_slice(&digest);
            }
            match deaggregate(&bytes) {
                Some(Ok(records)) => {
                    decoded += 1;
                    assert!(!records.is_empty());
                    assert!(records.iter().all(|r| !r.partition_key.is_empty()));
                }
                Some(Err(_)) => refused += 1,
                None => unreachable!("the magic is never damaged"),
            }
        }
        assert!(decoded > 100 && refused > 10_000, "both outcomes exercised: {decoded} decoded, {refused} refused");
    }

    #[test]
    fn deaggregation_counts_invalid_aggregates_and_user_records_outside_the_shard() {
        let mut a = Aggregator::default();
        for key in ["a", "b", "c", "d"] {
            a.add(key, key.as_bytes());
        }
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&[0; 30]);
        let record = |seq: u64, data: &[u8]| Record {
            sequence_number: seq.to_string(),
            partition_key: "k".into(),
            data: data.to_vec(),
            arrival: chrono::Utc::now(),
            sub_sequence: None,
        };
        let mut records = vec![record(1, b"plain"), record(2, &a.finish()), record(3, &bad)];
        // A range holding the hash keys of "a" and "b" only.
        let (ha, hb) = (hash_key("a"), hash_key("b"));
        let found = deaggregate_records(&mut records, "s", Some((ha.min(hb), ha.max(hb))));
        let outside = ["c", "d"].iter().filter(|k| !(ha.min(hb)..=ha.max(hb)).contains(&hash_key(k))).count();
        assert_eq!(found, Deaggregated { aggregates: 1, invalid: 1, outside_range: outside });
        let shown: Vec<(u64, Option<u64>, &[u8])> = records
            .iter()
            .map(|r| (r.sequence_number.parse().unwrap(), r.sub_sequence, &r.data[..r.data.len().min(5)]))
            .collect();
        assert_eq!(
            shown,
            [
                (1, None, &b"plain"[..]),
                (2, Some(0), b"a"),
                (2, Some(1), b"b"),
                (2, Some(2), b"c"),
                (2, Some(3), b"d"),
                (3, None, &bad[..5]),
            ]
        );
        assert_eq!(records[3].partition_key, "c");
    }
}

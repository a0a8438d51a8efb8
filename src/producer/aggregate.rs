//! `produce --aggregate`: tweets packed into KPL aggregates, one open aggregate
//! per shard the tweets are predicted to land on.
//!
//! A tweet's shard is predicted from the open shards' hash key ranges
//! (ListShards) and the MD5 of its partition key, as Kinesis routes it. Each
//! aggregate is put with an explicit hash key (its first tweet's), so that it
//! lands on the shard its tweets belong to, and the consumer of that shard
//! reads them all. When Kinesis answers with another shard (the stream was
//! resharded), the map is read again; the tweets already put there are read by
//! that shard's consumer (and counted there as outside its range).

use std::collections::BTreeMap;

use super::batch::{Aggregate, Keyed, Put};
use crate::kpl::{hash_key, Aggregator};
use crate::model::HashRange;
use crate::retrieval::Shard;

/// The KPL's own default is much larger (1 MiB less overhead); 50 KiB keeps an
/// aggregate's tweets close in time and a retry small.
pub const DEFAULT_MAX_BYTES: usize = 50 * 1024;

/// The open shards' hash key ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardMap {
    ranges: Vec<(HashRange, String)>,
}

impl ShardMap {
    /// From ListShards' shards: the open ones (without a hash range, skipped).
    pub fn new(shards: &[Shard]) -> Self {
        let mut ranges: Vec<(HashRange, String)> =
            shards.iter().filter(|s| !s.closed).filter_map(|s| Some((s.hash_range?, s.id.clone()))).collect();
        ranges.sort();
        Self { ranges }
    }

    pub fn shard_of(&self, hash: u128) -> Option<&str> {
        let i = self.ranges.partition_point(|((start, _), _)| *start <= hash);
        let ((start, end), id) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= hash && hash <= *end).then_some(id.as_str())
    }
}

#[derive(Default)]
struct Open {
    aggregator: Aggregator,
    members: Vec<Keyed>,
    hash: u128,
}

/// Packs records into one aggregate per predicted shard.
pub struct Packer {
    max_bytes: usize,
    map: ShardMap,
    /// By predicted shard (`None` while the map is unknown or has a gap).
    open: BTreeMap<Option<String>, Open>,
    /// Records held in open aggregates.
    held: usize,
}

impl Packer {
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, map: ShardMap::default(), open: BTreeMap::new(), held: 0 }
    }

    pub fn set_map(&mut self, map: ShardMap) {
        self.map = map;
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Adds a record to its shard's aggregate. Returns what is ready to put:
    /// the aggregate it closed to make room, or the record itself when it is
    /// too large to share an aggregate.
    pub fn add(&mut self, mut record: Keyed) -> Option<Put> {
        if Aggregator::default().size_with(&record.partition_key, &record.record.data) > self.max_bytes {
            return Some(Put::Plain(record));
        }
        let hash = hash_key(&record.partition_key);
        let shard = self.map.shard_of(hash).map(str::to_owned);
        let open = self.open.entry(shard.clone()).or_default();
        let mut closed = None;
        if open.aggregator.size_with(&record.partition_key, &record.record.data) > self.max_bytes {
            let aggregate = close(shard, open);
            self.held -= aggregate.members.len();
            closed = Some(Put::Aggregate(aggregate));
        }
        if open.aggregator.is_empty() {
            open.hash = hash;
        }
        open.aggregator.add(&record.partition_key, &record.record.data);
        // The bytes are in the aggregate; the record stays for its put log line.
        record.record.data = Vec::new();
        open.members.push(record);
        self.held += 1;
        closed
    }

    /// Closes every open aggregate.
    pub fn drain(&mut self) -> Vec<Put> {
        self.held = 0;
        std::mem::take(&mut self.open)
            .into_iter()
            .filter(|(_, open)| !open.aggregator.is_empty())
            .map(|(shard, mut open)| Put::Aggregate(close(shard, &mut open)))
            .collect()
    }
}

fn close(shard: Option<String>, open: &mut Open) -> Aggregate {
    let members = std::mem::take(&mut open.members);
    Aggregate {
        partition_key: members[0].partition_key.clone(),
        explicit_hash_key: open.hash,
        data: open.aggregator.finish(),
        members,
        shard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::Outgoing;

    fn keyed(id: &str, bytes: usize) -> Keyed {
        Keyed {
            record: Outgoing { id: id.into(), data: vec![b'x'; bytes], kind: "v2" },
            partition_key: id.into(),
            received: tokio::time::Instant::now(),
        }
    }

    fn two_shards() -> ShardMap {
        let half = u128::MAX / 2;
        ShardMap::new(&[
            Shard { id: "high".into(), hash_range: Some((half + 1, u128::MAX)), ..Default::default() },
            Shard { id: "low".into(), hash_range: Some((0, half)), ..Default::default() },
            Shard { id: "unknown".into(), ..Default::default() },
        ])
    }

    #[test]
    fn the_map_finds_the_shard_holding_a_hash() {
        let map = two_shards();
        assert_eq!(map.shard_of(0), Some("low"));
        assert_eq!(map.shard_of(u128::MAX / 2), Some("low"));
        assert_eq!(map.shard_of(u128::MAX / 2 + 1), Some("high"));
        assert_eq!(map.shard_of(u128::MAX), Some("high"));
        let gap = ShardMap::new(&[Shard { id: "a".into(), hash_range: Some((10, 20)), ..Default::default() }]);
        assert_eq!((gap.shard_of(9), gap.shard_of(21), gap.shard_of(15)), (None, None, Some("a")));
    }

    #[test]
    fn records_are_packed_per_predicted_shard_within_the_size_limit() {
        let map = two_shards();
        let mut packer = Packer::new(2048);
        packer.set_map(map.clone());
        let mut closed = Vec::new();
        for i in 0..200 {
            closed.extend(packer.add(keyed(&i.to_string(), 100)));
        }
        closed.extend(packer.drain());
        assert!(packer.is_empty());
        let mut seen = 0;
        for put in &closed {
            let Put::Aggregate(a) = put else { panic!("all share aggregates") };
            assert!(a.data.len() <= 2048, "{} bytes", a.data.len());
            let shard = a.shard.as_deref().unwrap();
            assert_eq!(map.shard_of(a.explicit_hash_key), Some(shard), "the aggregate lands where it was packed for");
            let users = crate::kpl::deaggregate(&a.data).unwrap().unwrap();
            assert_eq!(users.len(), a.members.len());
            for (user, member) in users.iter().zip(&a.members) {
                assert_eq!(user.partition_key, member.partition_key);
                assert_eq!(map.shard_of(user.hash_key()), Some(shard), "every tweet belongs to the aggregate's shard");
            }
            seen += users.len();
        }
        assert_eq!(seen, 200);
        // Closed only when full: all but the last of each shard hold more than
        // 2048 bytes less one record.
        let full = closed.iter().filter(|p| p.data().len() > 2048 - 110).count();
        assert!(full >= closed.len() - 2, "{full} of {} aggregates full", closed.len());
    }

    #[test]
    fn a_record_too_large_to_share_is_put_plain() {
        let mut packer = Packer::new(1024);
        packer.set_map(two_shards());
        assert!(packer.add(keyed("1", 10)).is_none());
        let Some(Put::Plain(big)) = packer.add(keyed("big", 2000)) else { panic!("put as it is") };
        assert_eq!(big.record.data.len(), 2000);
        assert_eq!(packer.drain().len(), 1);
    }
}

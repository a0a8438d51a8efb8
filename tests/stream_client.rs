//! One conformance suite for every `StreamClient`: the in-memory twin and
//! Kinesis (the emulator) must agree on what the consumer relies on: order,
//! positions, the end of a closed shard and its children, and resharding.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use stream_worker::retrieval::kinesis::KinesisStream;
use stream_worker::retrieval::memory::MemoryStream;
use stream_worker::retrieval::{RecordBatch, StartAt, StreamClient};

/// What the suite does to a stream besides reading it.
#[async_trait]
trait Writable: Send + Sync {
    fn client(&self) -> &dyn StreamClient;
    /// Puts a record; returns its shard and sequence number.
    async fn put(&self, partition_key: &str, data: &str) -> (String, String);
    /// Splits a shard in the middle of its range; returns the children.
    async fn split(&self, shard: &str) -> (String, String);
}

#[async_trait]
impl Writable for MemoryStream {
    fn client(&self) -> &dyn StreamClient {
        self
    }
    async fn put(&self, partition_key: &str, data: &str) -> (String, String) {
        MemoryStream::put(self, partition_key, data.as_bytes())
    }
    async fn split(&self, shard: &str) -> (String, String) {
        MemoryStream::split(self, shard, None).unwrap()
    }
}

struct Emulator {
    client: aws_sdk_kinesis::Client,
    name: String,
    stream: KinesisStream,
}

#[async_trait]
impl Writable for Emulator {
    fn client(&self) -> &dyn StreamClient {
        &self.stream
    }
    async fn put(&self, partition_key: &str, data: &str) -> (String, String) {
        let out = self
            .client
            .put_record()
            .stream_name(&self.name)
            .partition_key(partition_key)
            .data(Blob::new(data))
            .send()
            .await
            .unwrap();
        (out.shard_id, out.sequence_number)
    }
    async fn split(&self, shard: &str) -> (String, String) {
        let described = self.client.list_shards().stream_name(&self.name).send().await.unwrap();
        let range = described.shards().iter().find(|s| s.shard_id() == shard).unwrap().hash_key_range().unwrap();
        let (start, end): (u128, u128) =
            (range.starting_hash_key().parse().unwrap(), range.ending_hash_key().parse().unwrap());
        let before: Vec<String> = described.shards().iter().map(|s| s.shard_id().to_owned()).collect();
        self.client
            .split_shard()
            .stream_name(&self.name)
            .shard_to_split(shard)
            .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
            .send()
            .await
            .unwrap();
        let children = common::eventually(std::time::Duration::from_secs(30), "the split's children", || async {
            let out = self.client.list_shards().stream_name(&self.name).send().await.ok()?;
            let summary = self.client.describe_stream_summary().stream_name(&self.name).send().await.ok()?;
            let active = summary.stream_description_summary()?.stream_status().as_str() == "ACTIVE";
            let new: Vec<String> =
                out.shards().iter().map(|s| s.shard_id().to_owned()).filter(|id| !before.contains(id)).collect();
            (active && new.len() == 2).then_some(new)
        })
        .await;
        (children[0].clone(), children[1].clone())
    }
}

async fn read_all(client: &dyn StreamClient, shard: &str, start: StartAt) -> (Vec<String>, RecordBatch) {
    let mut it = client.shard_iterator(shard, &start).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let batch = client.get_records(&it, 2).await.unwrap();
        seen.extend(batch.records.iter().map(|r| String::from_utf8(r.data.clone()).unwrap()));
        match &batch.next_iterator {
            Some(next) if !(batch.records.is_empty() && batch.millis_behind_latest == Some(0)) => it = next.clone(),
            _ => return (seen, batch),
        }
    }
}

async fn suite(stream: Arc<dyn Writable>) {
    let client = stream.client();
    let shards = client.list_shards().await.unwrap();
    assert_eq!(shards.len(), 2);
    assert!(shards.iter().all(|s| s.parents.is_empty()));

    // Records of one partition key land on one shard, in order.
    let mut puts = Vec::new();
    for i in 0..5 {
        puts.push(stream.put("key-a", &format!("a{i}")).await);
    }
    let shard = puts[0].0.clone();
    assert!(puts.iter().all(|(s, _)| *s == shard));
    let (seen, last) = read_all(client, &shard, StartAt::TrimHorizon).await;
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(last.millis_behind_latest, Some(0));
    assert!(last.next_iterator.is_some(), "an open shard never ends");

    // AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP.
    let (seen, _) = read_all(client, &shard, StartAt::AfterSequence(puts[2].1.clone())).await;
    assert_eq!(seen, ["a3", "a4"]);
    let latest = client.shard_iterator(&shard, &StartAt::Latest).await.unwrap();
    assert!(client.get_records(&latest, 10).await.unwrap().records.is_empty());
    let marker = chrono::Utc::now() + chrono::Duration::milliseconds(20);
    while chrono::Utc::now() < marker + chrono::Duration::milliseconds(5) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stream.put("key-a", "a5").await;
    let after_latest = client.get_records(&latest, 10).await.unwrap();
    assert_eq!(after_latest.records.len(), 1, "LATEST sees what comes after it");
    let (seen, _) = read_all(client, &shard, StartAt::AtTimestamp(marker)).await;
    assert_eq!(seen, ["a5"]);

    // A split: the parent ends (no next iterator) after its last record, names
    // its children, and new records of the key go to a child.
    let (left, right) = stream.split(&shard).await;
    let listed = client.list_shards().await.unwrap();
    for child in [&left, &right] {
        let c = listed.iter().find(|s| s.id == **child).expect("children listed");
        assert_eq!(c.parents, vec![shard.clone()]);
    }
    let (child, _) = stream.put("key-a", "a6").await;
    assert!(child == left || child == right, "{child} is not a child of {shard}");
    let (seen, end) = read_all(client, &shard, StartAt::TrimHorizon).await;
    assert_eq!(seen, ["a0", "a1", "a2", "a3", "a4", "a5"]);
    assert!(end.next_iterator.is_none(), "a closed shard ends");
    // Some implementations never send ChildShards (see DESIGN.md); when sent, they are the split's.
    if !end.child_shards.is_empty() {
        let mut ids: Vec<String> = end.child_shards.iter().map(|c| c.id.clone()).collect();
        ids.sort();
        assert_eq!(ids, [left.clone(), right.clone()]);
    }
    let (seen, _) = read_all(client, &child, StartAt::TrimHorizon).await;
    assert_eq!(seen, ["a6"]);

    // An unknown shard is NotFound.
    let err = client.shard_iterator("shardId-000000000099", &StartAt::TrimHorizon).await.unwrap_err();
    assert_eq!(err.class, stream_worker::aws::ErrorClass::NotFound, "{err}");
}

#[tokio::test]
async fn memory_stream_conforms() {
    suite(Arc::new(MemoryStream::new(2))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kinesis_stream_conforms() {
    let setup = common::Setup::new("stream-conformance", 2);
    let client = common::kinesis().await;
    let stream = KinesisStream::new(client.clone(), &setup.stream);
    suite(Arc::new(Emulator { client, name: setup.stream.clone(), stream })).await;
}

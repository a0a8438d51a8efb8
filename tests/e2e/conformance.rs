//! The conformance suites: each twin and the real service (on its emulator)
//! must agree on every rule of the contract the worker relies on.
//!
//! - `LeaseStore`: the in-memory store and the DynamoDB store.
//! - `StreamClient`: the in-memory stream and Kinesis: order, positions, the end
//!   of a closed shard and its children, resharding.

use crate::common;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use std::sync::Arc;
use stream_worker::leases::dynamodb::DynamoLeaseStore;
use stream_worker::leases::memory::MemoryLeaseStore;
use stream_worker::leases::{Cas, LeaseStore, Segment};
use stream_worker::model::{Checkpoint, Heartbeat, Lease, SequenceNumber};
use stream_worker::retrieval::kinesis::KinesisStream;
use stream_worker::retrieval::memory::MemoryStream;
use stream_worker::retrieval::{RecordBatch, StartAt, StreamClient};

// ---- LeaseStore ----

fn seq(n: &str) -> Checkpoint {
    Checkpoint::at(SequenceNumber::parse(n).unwrap())
}

async fn get(store: &dyn LeaseStore, key: &str) -> Option<Lease> {
    store.list().await.unwrap().into_iter().find(|l| l.key == key)
}

async fn lease_store_suite(store: Arc<dyn LeaseStore>) {
    let store = store.as_ref();
    store.ensure_table().await.unwrap();
    store.ensure_table().await.unwrap(); // idempotent
    assert!(store.list().await.unwrap().is_empty());

    // create: only once per key.
    let fresh = Lease::new("shard-a", Checkpoint::TrimHorizon, vec!["parent-1".into(), "parent-2".into()]);
    assert_eq!(store.create(&fresh).await.unwrap(), Cas::Done(()));
    assert_eq!(store.create(&fresh).await.unwrap(), Cas::Lost);
    let stored = get(store, "shard-a").await.unwrap();
    assert_eq!(stored, fresh);

    // take: conditional on the counter, counts an owner switch, returns the row.
    let taken = store.take(&stored, "w1").await.unwrap().done().unwrap();
    assert_eq!((taken.owner.as_deref(), taken.counter, taken.owner_switches), (Some("w1"), 1, 1));
    assert_eq!(get(store, "shard-a").await.unwrap(), taken);
    assert_eq!(store.take(&stored, "w2").await.unwrap(), Cas::Lost, "a stale counter loses");

    // renew: counter and owner must match.
    let renewed = store.renew(&taken).await.unwrap().done().unwrap();
    assert_eq!((renewed.counter, renewed.owner.as_deref()), (2, Some("w1")));
    // The same write again finds the table already holding its outcome: Done, as
    // for an SDK retry of an attempt that was applied but whose answer was lost.
    assert_eq!(store.renew(&taken).await.unwrap(), Cas::Done(renewed.clone()), "an applied write is found");
    assert_eq!(get(store, "shard-a").await.unwrap(), renewed, "and not applied twice");
    let impostor = Lease { owner: Some("w2".into()), ..renewed.clone() };
    assert_eq!(store.renew(&impostor).await.unwrap(), Cas::Lost, "another owner loses");
    assert_eq!(store.checkpoint(&impostor, &seq("1"), &[], 5).await.unwrap(), Cas::Lost);
    assert_eq!(store.release(&impostor).await.unwrap(), Cas::Lost);

    // checkpoint: stores the position, adds the records, resets owner switches,
    // bumps the counter.
    let checkpointed = store.checkpoint(&renewed, &seq("49590338271490256608559692538361"), &[], 7).await.unwrap();
    let checkpointed = checkpointed.done().unwrap();
    assert_eq!(checkpointed.checkpoint, seq("49590338271490256608559692538361"));
    assert_eq!((checkpointed.counter, checkpointed.owner_switches, checkpointed.records_processed), (3, 0, 7));
    assert_eq!(get(store, "shard-a").await.unwrap(), checkpointed);
    assert_eq!(store.renew(&taken).await.unwrap(), Cas::Lost, "a stale counter loses");
    assert_eq!(store.renew(&renewed).await.unwrap(), Cas::Lost, "a stale counter loses");

    // take by the same owner does not count a switch; by another does.
    let again = store.take(&checkpointed, "w1").await.unwrap().done().unwrap();
    assert_eq!((again.counter, again.owner_switches), (4, 0));
    let stolen = store.take(&again, "w2").await.unwrap().done().unwrap();
    assert_eq!((stolen.owner.as_deref(), stolen.owner_switches), (Some("w2"), 1));
    assert_eq!(store.renew(&again).await.unwrap(), Cas::Lost, "the old owner's renewal loses");

    // request_handoff: owner-conditional, keeps the counter, so the owner's next
    // renewal succeeds and carries the request; release keeps it; take clears it.
    assert_eq!(store.request_handoff(&again, "w3").await.unwrap(), Cas::Lost, "not the owner any more");
    let marked = store.request_handoff(&stolen, "w3").await.unwrap().done().unwrap();
    assert_eq!((marked.handoff_to.as_deref(), marked.counter), (Some("w3"), stolen.counter));
    let renewed_marked = store.renew(&stolen).await.unwrap().done().unwrap();
    assert_eq!(renewed_marked.handoff_to.as_deref(), Some("w3"));
    let released_marked = store.release(&renewed_marked).await.unwrap().done().unwrap();
    assert_eq!((released_marked.owner.clone(), released_marked.handoff_to.as_deref()), (None, Some("w3")));
    assert_eq!(get(store, "shard-a").await.unwrap(), released_marked);
    let handed = store.take(&released_marked, "w2").await.unwrap().done().unwrap();
    assert_eq!((handed.owner.as_deref(), handed.handoff_to.clone()), (Some("w2"), None));
    assert_eq!(get(store, "shard-a").await.unwrap(), handed);
    let stolen = handed;

    // shard end with children.
    let children = vec!["child-1".to_owned(), "child-2".to_owned()];
    let ended = store.checkpoint(&stolen, &Checkpoint::ShardEnd, &children, 3).await.unwrap().done().unwrap();
    assert_eq!((ended.checkpoint.clone(), ended.children.clone()), (Checkpoint::ShardEnd, children));
    assert_eq!(ended.records_processed, 10, "records add up across owners");
    assert_eq!(get(store, "shard-a").await.unwrap(), ended);

    // release: clears the owner; a released lease can be taken by anyone.
    let released = store.release(&ended).await.unwrap().done().unwrap();
    assert_eq!((released.owner.clone(), released.counter), (None, ended.counter + 1));
    assert_eq!(get(store, "shard-a").await.unwrap(), released);
    let retaken = store.take(&released, "w3").await.unwrap().done().unwrap();
    assert_eq!(retaken.owner.as_deref(), Some("w3"));
    assert_eq!(store.release(&ended).await.unwrap(), Cas::Lost);
    assert_eq!(store.take(&released, "w2").await.unwrap(), Cas::Lost, "another taker's outcome is not ours");

    // delete: conditional on the counter.
    assert_eq!(store.delete(&released).await.unwrap(), Cas::Lost);
    assert_eq!(store.delete(&retaken).await.unwrap(), Cas::Done(()));
    assert!(get(store, "shard-a").await.is_none());
    assert_eq!(store.renew(&retaken).await.unwrap(), Cas::Lost, "a deleted lease cannot be renewed");

    // rewind: conditional on the counter alone (an operator is no owner); moves
    // the checkpoint back, clears owner and handoff, so the owner's next write loses.
    let owned = store.take(&Lease::new("shard-r", seq("900"), vec![]), "w1").await.unwrap();
    assert_eq!(owned, Cas::Lost, "no such row yet");
    assert_eq!(store.create(&Lease::new("shard-r", seq("900"), vec![])).await.unwrap(), Cas::Done(()));
    let owned = store.take(&get(store, "shard-r").await.unwrap(), "w1").await.unwrap().done().unwrap();
    let marked = store.request_handoff(&owned, "w2").await.unwrap().done().unwrap();
    let rewound = store.rewind(&marked, &Checkpoint::TrimHorizon).await.unwrap().done().unwrap();
    assert_eq!(
        (rewound.owner.clone(), rewound.handoff_to.clone(), rewound.counter, rewound.checkpoint.clone()),
        (None, None, marked.counter + 1, Checkpoint::TrimHorizon)
    );
    assert_eq!(get(store, "shard-r").await.unwrap(), rewound);
    assert_eq!(store.renew(&marked).await.unwrap(), Cas::Lost, "the owner finds the lease lost");
    assert_eq!(store.checkpoint(&marked, &seq("901"), &[], 1).await.unwrap(), Cas::Lost);
    assert_eq!(store.rewind(&marked, &Checkpoint::Latest).await.unwrap(), Cas::Lost, "a stale counter loses");
    assert_eq!(store.delete(&rewound).await.unwrap(), Cas::Done(()));

    // list sees every row.
    for i in 0..30 {
        let lease = Lease::new(format!("shard-{i:03}"), Checkpoint::Latest, vec![]);
        assert_eq!(store.create(&lease).await.unwrap(), Cas::Done(()));
    }
    let mut keys: Vec<String> = store.list().await.unwrap().into_iter().map(|l| l.key).collect();
    keys.sort();
    assert_eq!(keys.len(), 30);
    assert_eq!(keys[29], "shard-029");
    // snapshot (eventually consistent) and get see the same rows.
    let mut snapshot = store.snapshot(Segment::WHOLE).await.unwrap();
    snapshot.sort_by(|a, b| a.key.cmp(&b.key));
    let mut listed = store.list().await.unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(snapshot, listed);
    // The segments of a parallel scan partition the table, and each holds a row
    // every time (what an expiry watch relies on).
    for total in [2, 3, 7] {
        let read = |index| async move {
            let mut part = store.snapshot(Segment { index, total }).await.unwrap();
            part.sort_by(|a, b| a.key.cmp(&b.key));
            part
        };
        let mut parts: Vec<Vec<Lease>> = Vec::new();
        for index in 0..total {
            parts.push(read(index).await);
        }
        let mut union: Vec<Lease> = parts.iter().flatten().cloned().collect();
        union.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(union, listed, "the {total} segments together are the table, each row once");
        assert!(parts.iter().filter(|p| !p.is_empty()).count() >= 2, "30 rows in one of {total} segments");
        for index in 0..total {
            assert_eq!(read(index).await, parts[index as usize], "segment {index} of {total} read twice");
        }
    }
    assert_eq!(store.get("shard-007").await.unwrap().as_ref(), listed.iter().find(|l| l.key == "shard-007"));
    assert_eq!(store.get("no-such-shard").await.unwrap(), None);

    // Only one of many concurrent takers of the same lease wins.
    let contested = get(store, "shard-000").await.unwrap();
    let attempts = (0..8).map(|i| {
        let contested = contested.clone();
        async move { store.take(&contested, &format!("racer-{i}")).await.unwrap() }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Cas::Done(_))).count(), 1, "{results:?}");

    // ownerIncarnation: written by a take that gives one, removed by one that
    // does not, by a release and by a rewind; a checkpoint keeps it.
    let row = store.list().await.unwrap().into_iter().find(|l| l.key == "shard-000").unwrap();
    let kept = store.take_as(&row, "w1", Some("00ab")).await.unwrap().done().unwrap();
    assert_eq!(kept.owner_incarnation.as_deref(), Some("00ab"));
    assert_eq!(get(store, "shard-000").await.unwrap(), kept);
    let kept = store.checkpoint(&kept, &seq("700"), &[], 1).await.unwrap().done().unwrap();
    assert_eq!(get(store, "shard-000").await.unwrap().owner_incarnation.as_deref(), Some("00ab"));
    let released = store.release(&kept).await.unwrap().done().unwrap();
    assert_eq!((released.owner.as_deref(), released.owner_incarnation.as_deref()), (None, None));
    assert_eq!(get(store, "shard-000").await.unwrap(), released);
    let kept = store.take_as(&released, "w2", Some("00cd")).await.unwrap().done().unwrap();
    let plain = store.take(&kept, "w3").await.unwrap().done().unwrap();
    assert_eq!(plain.owner_incarnation, None);
    let kept = store.take_as(&plain, "w2", Some("00ef")).await.unwrap().done().unwrap();
    let rewound = store.rewind(&kept, &seq("1")).await.unwrap().done().unwrap();
    assert_eq!(get(store, "shard-000").await.unwrap(), rewound);
    assert_eq!(rewound.owner_incarnation, None);

    heartbeat_suite(store).await;
}

async fn heartbeat_suite(store: &dyn LeaseStore) {
    assert!(store.heartbeats().await.unwrap().is_empty());
    // The first beat creates the row; every beat adds one and stores what it says.
    let w1 = Heartbeat::new("w1", "0001");
    let first = store.beat(&w1, 3, "2026-12-06T13:00:00Z").await.unwrap().done().unwrap();
    assert_eq!(first, w1.next(3, "2026-12-06T13:00:00Z"));
    let second = store.beat(&first, 4, "2026-12-06T13:00:02Z").await.unwrap().done().unwrap();
    assert_eq!((second.beat, second.leases, second.sent_at.as_str()), (2, 4, "2026-12-06T13:00:02Z"));
    // The count is the row's, not the caller's: a retry of an applied beat counts again.
    assert_eq!(store.beat(&first, 4, "2026-12-06T13:00:02Z").await.unwrap().done().unwrap().beat, 3);
    let now = store.beat(&second, 4, "2026-12-06T13:00:04Z").await.unwrap().done().unwrap();
    assert_eq!(now.beat, 4);

    // A reused worker id is another incarnation: a row of its own.
    let w1_again = store.beat(&Heartbeat::new("w1", "0002"), 0, "2026-12-06T13:00:05Z").await.unwrap().done().unwrap();
    assert_eq!(w1_again.beat, 1);
    let mut rows = store.heartbeats().await.unwrap();
    rows.sort_by_key(|h| h.key());
    assert_eq!(rows, vec![now.clone(), w1_again.clone()]);

    // speaks and protocol are stored as beaten.
    assert_eq!((now.protocol, now.speaks), (Heartbeat::RENEWALS, Heartbeat::SPEAKS));

    // ask: the owner's next beat answers with the asks; the beat after, which
    // lists them as handled, removes them and keeps any newer one.
    store.ask("w1", "0001", "shard-7").await.unwrap();
    store.ask("w1", "0001", "shard-7").await.unwrap(); // once in the set
    store.ask("w1", "0001", "shard-8").await.unwrap();
    let answered = store.beat(&now, 4, "2026-12-06T13:00:04Z").await.unwrap().done().unwrap();
    let mut asks = answered.asks.clone();
    asks.sort();
    assert_eq!(asks, vec!["shard-7", "shard-8"]);
    let handled = Heartbeat { asks: vec!["shard-7".into()], ..answered.clone() };
    store.ask("w1", "0001", "shard-9").await.unwrap();
    let mut after = store.beat(&handled, 4, "2026-12-06T13:00:05Z").await.unwrap().done().unwrap();
    after.asks.sort();
    assert_eq!(after.asks, vec!["shard-8", "shard-9"]);
    let now = store.beat(&after, 4, "2026-12-06T13:00:06Z").await.unwrap().done().unwrap();
    assert!(now.asks.is_empty(), "{now:?}");
    // An ask to a row that does not exist creates none.
    store.ask("w9", "0009", "shard-7").await.unwrap();
    assert!(store.heartbeats().await.unwrap().iter().all(|h| h.worker_id != "w9"));

    // mark_dead: only on the beat the marker saw stand still.
    assert_eq!(store.mark_dead(&second, "w2").await.unwrap(), Cas::Lost, "a beat it did not see keeps it alive");
    assert_eq!(store.mark_dead(&now, "w2").await.unwrap(), Cas::Done(()));
    assert_eq!(store.mark_dead(&now, "w3").await.unwrap(), Cas::Done(()), "dead either way");
    // A marked incarnation takes no more beats, no asks, and stays marked.
    assert_eq!(store.beat(&now, 4, "2026-12-06T13:00:06Z").await.unwrap(), Cas::Lost);
    store.ask("w1", "0001", "shard-7").await.unwrap();
    let marked = store.heartbeats().await.unwrap().into_iter().find(|h| h.key() == now.key()).unwrap();
    assert_eq!((marked.beat, marked.dead_by.as_deref(), marked.asks.len()), (now.beat, Some("w2"), 0));

    // An incarnation never seen (beat 0): a dead marker where no row exists,
    // which refuses its first beat; never over a row that exists.
    let unseen = Heartbeat::new("w4", "0004");
    assert_eq!(store.mark_dead(&Heartbeat::new("w1", "0002"), "w2").await.unwrap(), Cas::Lost, "it beats");
    assert_eq!(store.mark_dead(&unseen, "w2").await.unwrap(), Cas::Done(()));
    assert_eq!(store.beat(&unseen, 0, "2026-12-06T13:00:07Z").await.unwrap(), Cas::Lost);
    let marker = store.heartbeats().await.unwrap().into_iter().find(|h| h.key() == unseen.key()).unwrap();
    assert_eq!((marker.beat, marker.dead_by.as_deref()), (0, Some("w2")));

    // A graceful stop removes its row; the others stay.
    store.remove_heartbeat(&w1_again).await.unwrap();
    store.remove_heartbeat(&w1_again).await.unwrap(); // already gone: no error
    store.remove_heartbeat(&unseen).await.unwrap();
    assert_eq!(store.heartbeats().await.unwrap(), vec![marked.clone()]);
    // A beat still on its way after the removal does not bring the row back.
    assert_eq!(store.beat(&w1_again, 0, "2026-12-06T13:00:08Z").await.unwrap(), Cas::Lost);
    assert_eq!(store.heartbeats().await.unwrap(), vec![marked]);

    // The fleet's protocol: unset, then set only from what it is.
    assert_eq!(store.fleet().await.unwrap().protocol, None);
    assert_eq!(store.set_protocol(Some(1), 2).await.unwrap(), Cas::Lost);
    assert_eq!(store.set_protocol(None, 1).await.unwrap(), Cas::Done(()));
    assert_eq!(store.set_protocol(None, 2).await.unwrap(), Cas::Lost, "set already");
    assert_eq!(store.set_protocol(Some(1), 2).await.unwrap(), Cas::Done(()));
    let fleet = store.fleet().await.unwrap();
    assert_eq!((fleet.protocol, fleet.workers.len()), (Some(2), 1), "the protocol row is no worker");
}

#[tokio::test]
async fn memory_store_conforms() {
    lease_store_suite(Arc::new(MemoryLeaseStore::new())).await;
}

#[tokio::test]
async fn dynamodb_store_conforms() {
    common::emulators();
    let table = format!("lease-conformance-{}", std::process::id());
    lease_store_suite(Arc::new(DynamoLeaseStore::new(common::dynamodb().await, table))).await;
}

// ---- StreamClient ----

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

async fn stream_suite(stream: Arc<dyn Writable>) {
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

    // AFTER_SEQUENCE_NUMBER, AT_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP.
    let (seen, _) = read_all(client, &shard, StartAt::AfterSequence(puts[2].1.clone())).await;
    assert_eq!(seen, ["a3", "a4"]);
    let (seen, _) = read_all(client, &shard, StartAt::AtSequence(puts[2].1.clone())).await;
    assert_eq!(seen, ["a2", "a3", "a4"]);
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
    // Some implementations never send ChildShards (see docs/design.md); when sent, they are the split's.
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
    stream_suite(Arc::new(MemoryStream::new(2))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kinesis_stream_conforms() {
    let setup = common::Setup::new("stream-conformance", 2);
    let client = common::kinesis().await;
    let stream = KinesisStream::new(client.clone(), &setup.stream);
    stream_suite(Arc::new(Emulator { client, name: setup.stream.clone(), stream })).await;
}

//! One conformance suite for every `LeaseStore`: the in-memory twin and the
//! DynamoDB store on the emulator must agree on every rule of the trait's contract.

mod common;

use std::sync::Arc;

use stream_worker::leases::dynamodb::DynamoLeaseStore;
use stream_worker::leases::memory::MemoryLeaseStore;
use stream_worker::leases::{Cas, LeaseStore};
use stream_worker::model::{Checkpoint, Lease, SequenceNumber};

fn seq(n: &str) -> Checkpoint {
    Checkpoint::Sequence(SequenceNumber::parse(n).unwrap())
}

async fn get(store: &dyn LeaseStore, key: &str) -> Option<Lease> {
    store.list().await.unwrap().into_iter().find(|l| l.key == key)
}

async fn suite(store: Arc<dyn LeaseStore>) {
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
    assert_eq!(store.renew(&taken).await.unwrap(), Cas::Lost, "a stale counter loses");
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
    assert_eq!(store.release(&ended).await.unwrap(), Cas::Lost);
    let retaken = store.take(&released, "w3").await.unwrap().done().unwrap();
    assert_eq!(retaken.owner.as_deref(), Some("w3"));

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

    // Only one of many concurrent takers of the same lease wins.
    let contested = get(store, "shard-000").await.unwrap();
    let attempts = (0..8).map(|i| {
        let contested = contested.clone();
        async move { store.take(&contested, &format!("racer-{i}")).await.unwrap() }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| matches!(r, Cas::Done(_))).count(), 1, "{results:?}");
}

#[tokio::test]
async fn memory_store_conforms() {
    suite(Arc::new(MemoryLeaseStore::new())).await;
}

#[tokio::test]
async fn dynamodb_store_conforms() {
    common::emulators();
    let table = format!("lease-conformance-{}", std::process::id());
    suite(Arc::new(DynamoLeaseStore::new(common::dynamodb().await, table))).await;
}

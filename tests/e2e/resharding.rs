//! Resharding under load: a split, a merge and an UpdateShardCount while two
//! workers run. Every
//! record is written, and for each partition key the rows of a child shard are
//! written after all the rows of its parents.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_kinesis::types::StreamStatus;
use common::*;

async fn kinesis() -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
}

async fn wait_active(client: &aws_sdk_kinesis::Client, stream: &str) {
    eventually(Duration::from_secs(30), "the stream ACTIVE", || async {
        let out = client.describe_stream_summary().stream_name(stream).send().await.unwrap();
        (out.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active).then_some(())
    })
    .await;
}

crate::both_retrievals!(a_split_a_merge_and_a_rescale_under_load_lose_nothing_and_keep_per_key_order);

async fn a_split_a_merge_and_a_rescale_under_load_lose_nothing_and_keep_per_key_order(mode: Retrieval) {
    let setup = Setup::new("reshard", 2).reading(mode);
    let client = kinesis().await;
    let producer =
        setup.start_producer(&["--rate", "150", "--count", "6000", "--seed", "31", "--partition-keys", "40"]);
    let _a = setup.worker("a", &["--shard-sync-interval", "5s"]);
    let _b = setup.worker("b", &["--shard-sync-interval", "5s"]);
    eventually(Duration::from_secs(60), "500 rows", || async { (setup.row_count().await >= 500).then_some(()) }).await;

    // Split shard 0 at the middle of its hash range.
    let shards = client.list_shards().stream_name(&setup.stream).send().await.unwrap();
    let zero = &shards.shards()[0];
    let range = zero.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (range.starting_hash_key().parse().unwrap(), range.ending_hash_key().parse().unwrap());
    client
        .split_shard()
        .stream_name(&setup.stream)
        .shard_to_split(zero.shard_id())
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_active(&client, &setup.stream).await;
    eventually(Duration::from_secs(60), "1,500 rows", || async { (setup.row_count().await >= 1500).then_some(()) })
        .await;

    // Merge the upper child of 0 with its neighbour, shard 1.
    let shards = client.list_shards().stream_name(&setup.stream).send().await.unwrap();
    let upper_child = shards
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id() == Some(zero.shard_id()))
        .max_by_key(|s| s.hash_key_range().unwrap().starting_hash_key().parse::<u128>().unwrap())
        .unwrap()
        .shard_id()
        .to_owned();
    let one = shards.shards()[1].shard_id().to_owned();
    client
        .merge_shards()
        .stream_name(&setup.stream)
        .shard_to_merge(&upper_child)
        .adjacent_shard_to_merge(&one)
        .send()
        .await
        .unwrap();
    wait_active(&client, &setup.stream).await;
    eventually(Duration::from_secs(60), "2,500 rows", || async { (setup.row_count().await >= 2500).then_some(()) })
        .await;

    // And a uniform rescale, 2 open shards to 3: every open shard closes.
    client
        .update_shard_count()
        .stream_name(&setup.stream)
        .target_shard_count(3)
        .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_active(&client, &setup.stream).await;

    let puts = producer.finish();
    let rows = setup.rows_of(&puts).await;

    // Per partition key: the child's rows are processed after all of its parents' rows.
    let key_of: HashMap<&str, &str> = puts.0.iter().map(|p| (p.key.as_str(), p.partition_key.as_str())).collect();
    let mut times: HashMap<(&str, &str), Vec<&str>> = HashMap::new(); // (shard, key) -> ProcessedAt
    for (id, row) in &rows {
        let shard = row["ShardId"].as_s().unwrap().as_str();
        times.entry((shard, key_of[id.as_str()])).or_default().push(row["ProcessedAt"].as_s().unwrap());
    }
    let lineage = client.list_shards().stream_name(&setup.stream).send().await.unwrap();
    let mut checked = 0;
    for child in lineage.shards() {
        let parents: Vec<&str> = child.parent_shard_id().into_iter().chain(child.adjacent_parent_shard_id()).collect();
        for parent in parents {
            for ((shard, key), child_times) in times.iter().filter(|((s, _), _)| *s == child.shard_id()) {
                let Some(parent_times) = times.get(&(parent, *key)) else { continue };
                let last_parent = parent_times.iter().max().unwrap();
                let first_child = child_times.iter().min().unwrap();
                assert!(
                    last_parent <= first_child,
                    "key {key}: {parent} row at {last_parent} after {shard} row at {first_child}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} (parent, child, key) triples had rows on both sides");

    // The finished parents' leases are cleaned up once their children started:
    // only the open shards keep a lease.
    let open: HashSet<String> = lineage
        .shards()
        .iter()
        .filter(|s| s.sequence_number_range().is_some_and(|r| r.ending_sequence_number().is_none()))
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(open.len(), 3, "{open:?}");
    eventually(Duration::from_secs(40), "only the open shards' leases left", || async {
        let leases: HashSet<String> = setup.leases().await.into_keys().collect();
        (leases == open).then_some(())
    })
    .await;
}

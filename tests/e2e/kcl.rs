//! A lease table written by a Java KCL 2.x application is adopted: the fleet
//! resumes from its checkpoints, sentinels included. And `status` reports it.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use common::*;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A row as KCL 2.x writes it, with attributes this crate does not use.
fn kcl_row(shard: &str, owner: &str, counter: u64, checkpoint: &str) -> HashMap<String, AttributeValue> {
    kcl_row_at(shard, owner, counter, checkpoint, 0)
}

/// A row whose checkpoint is user record `sub` of the KPL aggregate `checkpoint`.
fn kcl_row_at(shard: &str, owner: &str, counter: u64, checkpoint: &str, sub: u64) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("leaseKey".into(), s(shard)),
        ("leaseOwner".into(), s(owner)),
        ("leaseCounter".into(), n(counter)),
        ("checkpoint".into(), s(checkpoint)),
        ("checkpointSubSequenceNumber".into(), n(sub)),
        ("ownerSwitchesSinceCheckpoint".into(), n(2)),
        ("startingHashKey".into(), s("0")),
        ("endingHashKey".into(), s("85070591730234615865843651857942052863")),
    ])
}

async fn create_lease_table(setup: &Setup) {
    dynamodb()
        .await
        .create_table()
        .table_name(&setup.lease_table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("leaseKey").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kcl_checkpoint_inside_a_kpl_aggregate_is_adopted_exactly() {
    let setup = Setup::new("kcl-sub", 1);
    let puts = setup.produce(&["--count", "600", "--seed", "43", "--aggregate"]);
    let mut aggregates: Vec<&String> = puts.0.iter().map(|p| &p.sequence).collect();
    aggregates.dedup();
    assert!(aggregates.len() >= 3, "{} aggregates", aggregates.len());
    // A KCL application processed the first aggregate and user records 0..=10 of the second.
    let (at, sub) = (aggregates[1].clone(), 10);
    create_lease_table(&setup).await;
    let row = kcl_row_at("shardId-000000000000", "ip-10-0-0-1.ec2.internal:8f1e", 77, &at, sub);
    dynamodb().await.put_item().table_name(&setup.lease_table).set_item(Some(row)).send().await.unwrap();

    let _worker = setup.worker("rust-worker", &["--failover-time", "2s"]);
    let done = |p: &Put| seq_cmp(&p.sequence, &at).is_lt() || (p.sequence == at && p.sub.unwrap() <= sub);
    let expected: HashSet<String> = puts.0.iter().filter(|p| !done(p)).map(|p| p.key.clone()).collect();
    let last = puts.0.last().unwrap();
    eventually(Duration::from_secs(60), "the shard checkpointed at its last user record", || async {
        let leases = setup.leases().await;
        let lease = &leases["shardId-000000000000"];
        let sub: u64 = lease["checkpointSubSequenceNumber"].as_n().unwrap().parse().unwrap();
        (lease["checkpoint"].as_s().unwrap() == &last.sequence && Some(sub) == last.sub).then_some(())
    })
    .await;
    let rows: HashSet<String> = setup.tweets().await.into_keys().collect();
    assert_eq!(rows, expected, "exactly the user records after the KCL's checkpoint");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kcl_lease_table_is_adopted_with_its_checkpoints() {
    let setup = Setup::new("kcl", 4);
    let first = setup.produce(&["--count", "400", "--seed", "41"]);
    let on =
        |shard: u32| -> Vec<&Put> { first.0.iter().filter(|p| p.shard == format!("shardId-{shard:012}")).collect() };
    let shard0 = on(0);
    assert!(shard0.len() > 60);

    let client = dynamodb().await;
    create_lease_table(&setup).await;
    let fixture = [
        kcl_row("shardId-000000000000", "ip-10-0-0-1.ec2.internal:8f1e", 1534, &shard0[49].sequence),
        kcl_row("shardId-000000000001", "ip-10-0-0-2.ec2.internal:03aa", 12, "TRIM_HORIZON"),
        kcl_row("shardId-000000000002", "ip-10-0-0-1.ec2.internal:8f1e", 7, "LATEST"),
        kcl_row("shardId-000000000003", "ip-10-0-0-2.ec2.internal:03aa", 99, "SHARD_END"),
    ];
    for row in fixture {
        client.put_item().table_name(&setup.lease_table).set_item(Some(row)).send().await.unwrap();
    }

    // The KCL workers are gone: their leases expire after the failover time.
    let worker = setup.worker("rust-worker", &["--failover-time", "2s"]);
    // Once shard 2 is ours and read from its LATEST iterator (the gauge is set
    // by the first GetRecords), more records arrive.
    eventually(Duration::from_secs(30), "shard 2 taken, renewed and read", || async {
        let leases = setup.leases().await;
        let l = &leases["shardId-000000000002"];
        let ours = l.get("leaseOwner").and_then(|o| o.as_s().ok()).map(String::as_str) == Some("rust-worker");
        let counter: u64 = l["leaseCounter"].as_n().unwrap().parse().unwrap();
        let read = worker.metric_with("stream_worker_behind_latest_seconds", "shard_id=\"shardId-000000000002\"");
        (ours && counter >= 9 && read.is_some()).then_some(())
    })
    .await;
    let second = setup.produce(&["--count", "100", "--seed", "42"]);

    let mut expected: HashSet<String> = shard0[50..].iter().map(|p| p.key.clone()).collect();
    expected.extend(on(1).iter().map(|p| p.key.clone()));
    expected.extend(
        second
            .0
            .iter()
            .filter(|p| {
                p.shard == "shardId-000000000002"
                    || p.shard == "shardId-000000000000"
                    || p.shard == "shardId-000000000001"
            })
            .map(|p| p.key.clone()),
    );
    // Done when every shard but the finished one is checkpointed at its last record.
    let all = PutLog([first.0.clone(), second.0.clone()].concat());
    let last = all.last_per_shard();
    eventually(Duration::from_secs(60), "shards 0-2 checkpointed at their last record", || async {
        let leases = setup.lease_states().await;
        (0..3).map(|i| format!("shardId-{i:012}")).all(|shard| leases[&shard].1 == last[&shard]).then_some(())
    })
    .await;
    let rows: HashSet<String> = setup.tweets().await.into_keys().collect();
    assert_eq!(rows.len(), expected.len());
    assert_eq!(
        rows, expected,
        "resumed after the KCL checkpoint, from TRIM_HORIZON, from LATEST, and not the finished shard"
    );
    let leases = setup.leases().await;
    assert_eq!(leases["shardId-000000000003"]["checkpoint"].as_s().unwrap(), "SHARD_END");
    assert_eq!(leases["shardId-000000000003"]["leaseCounter"].as_n().unwrap(), "99", "a finished shard is left alone");

    // `status` shows the same, as JSON for machines.
    let out = Command::new(BIN)
        .args(["status", "--stream", &setup.stream, "--lease-table", &setup.lease_table, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = status["shards"].as_array().unwrap();
    assert_eq!(status["live_workers"], 1, "{status}");
    assert_eq!(report.len(), 4);
    for row in &report[..3] {
        assert_eq!(row["state"], "owned", "{row}");
        assert_eq!(row["owner"], "rust-worker");
        assert_eq!(row["behind_ms"], 0, "{row}");
    }
    assert_eq!(report[3]["state"], "finished");
    assert_eq!(report[0]["checkpoint"].as_str().unwrap(), last["shardId-000000000000"]);
    let text = Command::new(BIN)
        .args(["status", "--stream", &setup.stream, "--lease-table", &setup.lease_table])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("SHARD") && text.contains("rust-worker") && text.contains("finished"), "{text}");
}

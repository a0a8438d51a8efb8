//! KPL aggregation end to end on the emulators: aggregates made by the awslabs
//! Python library (`deploy/local/kpl.py`) are read by the worker and by the
//! Lambda as exactly the expected rows; `produce --aggregate`'s aggregates are
//! read by that library as exactly the tweets put; a worker killed inside an
//! aggregate resumes inside it; a split during aggregated load loses nothing.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aws_sdk_kinesis::types::StreamStatus;
use common::*;
use stream_worker::producer::synthetic::Synthetic;

const DRAIN: Duration = Duration::from_secs(180);

/// `n` synthetic tweets (seed `seed`) as JSON lines, and `garbage` lines that
/// are not tweets, spread among them.
fn tweets_file(setup: &Setup, seed: u64, n: usize, garbage: usize) -> (PathBuf, Vec<String>) {
    let mut lines: Vec<String> =
        Synthetic::new(seed, 0.0).take(n).map(|o| String::from_utf8(o.data).unwrap()).collect();
    for g in 0..garbage {
        lines.insert((g + 1) * n / (garbage + 1), format!("not a tweet {g}"));
    }
    let path = setup.dir.join(format!("tweets-{seed}.jsonl"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, lines)
}

fn kpl(args: &[&str]) -> String {
    let out = Command::new(python()).arg(repo().join("deploy/local/kpl.py")).args(args).output().unwrap();
    assert!(out.status.success(), "kpl.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Puts the file as aggregates of the Python library; returns its put log.
fn kpl_put(setup: &Setup, file: &std::path::Path, per_aggregate: usize) -> PutLog {
    static PUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PUTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let log = setup.dir.join(format!("kpl-put-{n}.log"));
    kpl(&[
        "put",
        "--stream",
        &setup.stream,
        "--file",
        file.to_str().unwrap(),
        "--per-aggregate",
        &per_aggregate.to_string(),
        "--put-log",
        log.to_str().unwrap(),
    ]);
    PutLog::read(&log)
}

/// Each shard's hash key range.
async fn ranges(stream: &str) -> HashMap<String, (u128, u128)> {
    let out = kinesis().await.list_shards().stream_name(stream).send().await.unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (s.shard_id().to_owned(), (r.starting_hash_key().parse().unwrap(), r.ending_hash_key().parse().unwrap()))
        })
        .collect()
}

/// User records put on a shard whose range does not hold their hash key.
async fn outside_their_shard(setup: &Setup, puts: &PutLog) -> usize {
    let ranges = ranges(&setup.stream).await;
    puts.0
        .iter()
        .filter(|p| p.sub.is_some())
        .filter(|p| {
            let (low, high) = ranges[&p.shard];
            !(low..=high).contains(&stream_worker::kpl::hash_key(&p.partition_key))
        })
        .count()
}

/// The dead-letter keys the user records that are not tweets must get.
fn dead_letter_keys(puts: &PutLog) -> HashSet<(String, String)> {
    puts.malformed().iter().map(|p| (p.shard.clone(), format!("{}:{}", p.sequence, p.sub.unwrap()))).collect()
}

async fn dead_letters_are(setup: &Setup, expected: &HashSet<(String, String)>) {
    let dead = eventually(DRAIN, "every dead letter", || async {
        let dead = setup.dead_letters().await;
        (dead.len() >= expected.len()).then_some(dead)
    })
    .await;
    assert_eq!(&dead.keys().cloned().collect::<HashSet<_>>(), expected, "one dead letter per bad user record");
    for item in dead.values() {
        assert_eq!(item["Reason"].as_s().unwrap(), "not_json");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_of_the_python_library_are_exactly_the_expected_rows_in_the_worker_and_the_lambda() {
    let worker_side = Setup::new("kpl-worker", 4);
    let lambda_side = Setup::new("kpl-lambda", 4);
    let (file, _) = tweets_file(&worker_side, 51, 800, 4);
    let puts = kpl_put(&worker_side, &file, 60);
    let lambda_puts = kpl_put(&lambda_side, &file, 60);
    assert!(puts.0.len() == 804 && puts.0.iter().all(|p| p.sub.is_some()));
    assert_eq!(puts.0.iter().map(|p| &p.sequence).collect::<HashSet<_>>().len(), 14, "14 aggregates");

    let worker = worker_side.worker("w", &[]);
    let _esm = lambda_side.lambda("esm", &["--batch-size", "5"], &[]);
    for (setup, puts) in [(&worker_side, &puts), (&lambda_side, &lambda_puts)] {
        let rows = setup.rows_of(puts).await;
        for p in puts.0.iter().filter(|p| p.is_tweet()) {
            let row = &rows[&p.key];
            assert_eq!(row["SequenceNumber"].as_s().unwrap(), &p.sequence);
            assert_eq!(row["SubSequenceNumber"].as_n().unwrap(), &p.sub.unwrap().to_string());
        }
        dead_letters_are(setup, &dead_letter_keys(puts)).await;
    }
    // The library packs tweets of every shard together: most are outside the
    // shard their aggregate landed on. They are processed (above) and counted.
    let outside = outside_their_shard(&worker_side, &puts).await;
    assert!(outside > 400, "{outside}");
    let counted = eventually(Duration::from_secs(30), "the count of records outside their shard", || async {
        worker.metric("stream_worker_records_outside_shard_total").filter(|&n| n >= outside as f64)
    })
    .await;
    assert!(counted >= outside as f64);
    assert!(worker.metric("stream_worker_aggregates_total").is_some_and(|n| n >= 14.0));
    assert_eq!(worker.metric("stream_worker_invalid_aggregates_total"), Some(0.0));
    worker.signal("TERM");
}

#[tokio::test(flavor = "multi_thread")]
async fn produce_aggregate_is_read_by_the_python_library_as_exactly_the_tweets_put() {
    let setup = Setup::new("kpl-produce", 4);
    let (file, lines) = tweets_file(&setup, 52, 2000, 0);
    let puts = setup.produce(&["--source", &format!("file:{}", file.display()), "--aggregate"]);
    assert_eq!(puts.0.len(), 2000);
    assert!(puts.0.iter().all(|p| p.sub.is_some()), "every tweet put in an aggregate");
    let aggregates: HashSet<&String> = puts.0.iter().map(|p| &p.sequence).collect();
    assert!(aggregates.len() < 100, "{} aggregates for 2,000 tweets", aggregates.len());
    assert_eq!(outside_their_shard(&setup, &puts).await, 0, "each aggregate lands on its tweets' shard");

    let read: Vec<serde_json::Value> =
        kpl(&["read", "--stream", &setup.stream]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut data: Vec<&str> = read.iter().map(|r| r["data"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = lines.iter().map(String::as_str).collect();
    data.sort_unstable();
    want.sort_unstable();
    assert_eq!(data, want, "the library reads back exactly the tweets put");
    let positions: HashMap<&str, (&str, &str, u64)> = read
        .iter()
        .map(|r| {
            let position = (r["shard"].as_str().unwrap(), r["sequence"].as_str().unwrap(), r["sub"].as_u64().unwrap());
            (r["partition_key"].as_str().unwrap(), position)
        })
        .collect();
    for p in &puts.0 {
        let expected = (p.shard.as_str(), p.sequence.as_str(), p.sub.unwrap());
        assert_eq!(positions[p.partition_key.as_str()], expected, "the put log's shard, sequence and sub-sequence");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_inside_an_aggregate_is_resumed_inside_it() {
    let setup = Setup::new("kpl-kill", 4);
    let mut puts = setup.produce(&["--count", "200", "--seed", "61"]);
    puts.0.extend(setup.produce(&["--count", "1600", "--seed", "62", "--aggregate"]).0);
    puts.0.extend(setup.produce(&["--count", "200", "--seed", "63"]).0);
    let last_sub: HashMap<String, u64> = puts.0.iter().fold(HashMap::new(), |mut last, p| {
        if let Some(sub) = p.sub {
            let e = last.entry(p.sequence.clone()).or_default();
            *e = (*e).max(sub);
        }
        last
    });
    // Slowly (50 writes/s, a slice of 50 user records at a time), so that
    // checkpoints fall inside aggregates.
    let mut first = setup.worker("first", &["--max-write-rate", "50"]);
    let inside = |leases: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
        let seq = leases["checkpoint"].as_s().unwrap();
        let sub: u64 = leases["checkpointSubSequenceNumber"].as_n().unwrap().parse().unwrap();
        last_sub.get(seq).is_some_and(|&last| sub < last).then(|| (seq.clone(), sub))
    };
    eventually(DRAIN, "a checkpoint inside an aggregate", || async {
        setup.leases().await.values().any(|l| inside(l).is_some()).then_some(())
    })
    .await;
    first.kill9();
    let at_kill: HashMap<String, (String, u64)> =
        setup.settled_leases().await.into_iter().filter_map(|(shard, l)| Some((shard, inside(&l)?))).collect();
    assert!(!at_kill.is_empty(), "killed with a checkpoint inside an aggregate");

    let mut second = setup.worker("second", &["--failover-time", "2s", "--log-format", "json"]);
    let rows = setup.rows_of(&puts).await;
    assert_eq!(rows.len(), 1800 + 200);
    second.signal("TERM");
    second.wait_exit(Duration::from_secs(20));
    // The second worker read each such shard from the aggregate and skipped the
    // user records at or below the checkpoint, by its log.
    let log: Vec<serde_json::Value> = second.log_text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for (shard, (seq, sub)) in &at_kill {
        let of_shard = |message: &str| {
            log.iter()
                .find(|l| l["message"] == message && l["shard_id"] == shard.as_str())
                .unwrap_or_else(|| panic!("no {message:?} for {shard}"))
        };
        assert_eq!(of_shard("shard consumer started")["from"], format!("AtSequence({seq:?})"));
        let resumed = of_shard("read again from the checkpointed record: skipping what the checkpoint covers");
        // A checkpoint shows its sub-sequence number when it is not 0.
        let shown = if *sub == 0 { seq.clone() } else { format!("{seq}:{sub}") };
        assert_eq!(resumed["checkpoint"], shown);
        assert_eq!(resumed["skipped"], sub + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_split_during_aggregated_load_loses_nothing_and_counts_records_outside_their_shard() {
    let setup = Setup::new("kpl-split", 2);
    let client = kinesis().await;
    let (file, _) = tweets_file(&setup, 71, 300, 0);
    let mut puts = kpl_put(&setup, &file, 50);
    let producer = setup.start_producer(&["--rate", "200", "--count", "3000", "--seed", "72", "--aggregate"]);
    let worker = setup.worker("w", &["--shard-sync-interval", "5s"]);
    eventually(DRAIN, "1,000 rows", || async { (setup.row_count().await >= 1000).then_some(()) }).await;
    let before_split = ranges(&setup.stream).await;
    let zero = "shardId-000000000000";
    let (lo, hi) = before_split[zero];
    client
        .split_shard()
        .stream_name(&setup.stream)
        .shard_to_split(zero)
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "the stream ACTIVE", || async {
        let out = client.describe_stream_summary().stream_name(&setup.stream).send().await.unwrap();
        (out.stream_description_summary().unwrap().stream_status() == &StreamStatus::Active).then_some(())
    })
    .await;
    puts.0.extend(producer.finish().0);
    let after = kpl_put(&setup, &file, 50);
    let outside = outside_their_shard(&setup, &puts).await + outside_their_shard(&setup, &after).await;
    puts.0.extend(after.0);
    let rows = setup.rows_of(&puts).await;
    assert_eq!(rows.len(), 3300);
    assert!(puts.0.iter().any(|p| p.shard != zero && !before_split.contains_key(&p.shard)), "tweets on the children");
    let counted = eventually(Duration::from_secs(30), "the count of records outside their shard", || async {
        let counted = worker.metric("stream_worker_records_outside_shard_total")?;
        (counted >= outside as f64).then_some(counted)
    })
    .await;
    assert!(outside > 0 && counted >= outside as f64, "{counted} counted, {outside} put outside their shard");
    worker.signal("TERM");
}

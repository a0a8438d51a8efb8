//! `stream-worker run` end to end: the real binary on the local emulators.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::*;

const DRAIN: Duration = Duration::from_secs(120);

/// Every tweet put is a row, with the attributes docs/design.md lists under "Tables".
fn assert_rows_match_puts(rows: &std::collections::HashMap<String, Item>, puts: &PutLog) {
    let ids: HashSet<String> = rows.keys().cloned().collect();
    assert_eq!(ids, puts.tweet_ids(), "the rows are exactly the tweets put");
    for put in puts.0.iter().filter(|p| p.is_tweet()) {
        let row = &rows[&put.key];
        assert_eq!(row["ShardId"].as_s().unwrap(), &put.shard);
        assert_eq!(row["SequenceNumber"].as_s().unwrap(), &put.sequence);
        for attr in ["Username", "ScreenName", "Message", "Lang"] {
            assert!(row.contains_key(attr), "{attr} missing in {row:?}");
        }
        let ts = row["Timestamp"].as_s().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'), "{ts}");
        let ttl: i64 = row["ExpirationTime"].as_n().unwrap().parse().unwrap();
        let week = chrono::Utc::now().timestamp() + 7 * 86_400;
        assert!((ttl - week).abs() < 600, "ExpirationTime {ttl}");
    }
}

crate::both_retrievals!(
    drains_2000_tweets_over_4_shards,
    a_restart_after_kill_9_resumes_from_checkpoints,
    sigterm_under_load_exits_0_in_time_with_checkpoints_past_the_last_write,
);

async fn drains_2000_tweets_over_4_shards(mode: Retrieval) {
    let setup = Setup::new("drain", 4).reading(mode);
    let puts = setup.produce(&["--count", "2000", "--seed", "11"]);
    assert_eq!(puts.0.len(), 2000);
    assert_eq!(puts.0.iter().map(|p| &p.shard).collect::<HashSet<_>>().len(), 4);
    let mut worker = setup.worker("w1", &[]);
    let rows = setup.rows_of(&puts).await;
    assert_rows_match_puts(&rows, &puts);
    // A long v1.1 tweet is stored with its full text, not the truncated one.
    assert!(rows.values().any(|r| r["Message"].as_s().unwrap().chars().count() > 1000));
    worker.signal("TERM");
    let (status, _) = worker.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", worker.log_text());
}

async fn a_restart_after_kill_9_resumes_from_checkpoints(mode: Retrieval) {
    let setup = Setup::new("kill9", 4).reading(mode);
    let puts = setup.produce(&["--count", "2000", "--seed", "12"]);
    // Slow writes and small batches, so that the kill lands half-way with
    // several batches checkpointed.
    let slow = ["--max-write-rate", "100", "--max-records", "50", "--failover-time", "2s"];
    let mut first = setup.worker("first", &slow);
    // Every shard checkpointed, not only 800 rows: under load one shard's first
    // batch can come late.
    eventually(DRAIN, "800 rows and a checkpoint on every shard", || async {
        let checkpointed =
            setup.lease_states().await.values().filter(|(_, c)| c.bytes().all(|d| d.is_ascii_digit())).count();
        (checkpointed == 4 && setup.row_count().await >= 800).then_some(())
    })
    .await;
    first.kill9();
    let rows_at_kill = setup.row_count().await;
    assert!(rows_at_kill < 2000, "the first worker finished before the kill");
    let at_kill: HashMap<String, String> =
        setup.settled_leases().await.into_iter().map(|(k, l)| (k, l["checkpoint"].as_s().unwrap().clone())).collect();
    assert!(
        at_kill.values().all(|c| c.chars().all(|d| d.is_ascii_digit())),
        "a shard without a checkpoint: {at_kill:?}"
    );

    let mut second = setup.worker("second", &["--failover-time", "2s", "--log-format", "json"]);
    let rows = setup.rows_of(&puts).await;
    assert_rows_match_puts(&rows, &puts);
    let read = eventually(Duration::from_secs(10), "the second worker's metrics", || async {
        second.metric("stream_worker_records_read_total")
    })
    .await;
    assert!(read >= (2000 - rows_at_kill) as f64, "read {read}, but {} rows were missing", 2000 - rows_at_kill);
    // A shard read to its end before the kill is taken over too, maybe after the rows are in.
    eventually(DRAIN, "the second worker holding every lease", || async {
        setup.lease_states().await.values().all(|(owner, _)| owner.as_deref() == Some("second")).then_some(())
    })
    .await;
    second.signal("TERM");
    second.wait_exit(Duration::from_secs(10));
    // Resumed from checkpoints, not from TRIM_HORIZON: the second worker read
    // each shard from the checkpointed record (AT_SEQUENCE_NUMBER, as the KCL:
    // the record is skipped, or the rest of it if it is a KPL aggregate). (Its read
    // count is no proof: on a loaded emulator it may lose and retake its own
    // leases, and re-read from its own checkpoints.)
    let mut first_start: HashMap<String, String> = HashMap::new();
    for line in second.log_text().lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if line["message"] == "shard consumer started" {
            let shard = line["shard_id"].as_str().unwrap().to_owned();
            first_start.entry(shard).or_insert_with(|| line["from"].as_str().unwrap().to_owned());
        }
    }
    let expected: HashMap<String, String> =
        at_kill.into_iter().map(|(shard, c)| (shard, format!("AtSequence({c:?})"))).collect();
    assert_eq!(first_start, expected, "where the second worker started reading each shard");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_records_are_dead_lettered_and_no_shard_stalls() {
    let setup = Setup::new("malformed", 4);
    let puts = setup.produce(&["--count", "2000", "--seed", "13", "--malformed-ratio", "0.05"]);
    let malformed = puts.malformed();
    assert!(malformed.len() > 50, "{} malformed", malformed.len());
    let _worker = setup.worker("w", &[]);
    let last = puts.last_per_shard();
    // No shard stalls: every shard's checkpoint reaches its last record.
    eventually(DRAIN, "every shard checkpointed at its last record", || async {
        let leases = setup.leases().await;
        let done = last.iter().all(|(shard, seq)| {
            leases.get(shard).and_then(|l| l.get("checkpoint")).and_then(|c| c.as_s().ok()) == Some(seq)
        });
        done.then_some(())
    })
    .await;
    let rows = setup.tweets().await;
    assert_rows_match_puts(&rows, &puts);
    let dead = setup.dead_letters().await;
    assert_eq!(dead.len(), malformed.len());
    for put in malformed {
        let item =
            dead.get(&(put.shard.clone(), put.sequence.clone())).unwrap_or_else(|| panic!("{put:?} not dead-lettered"));
        let reason = item["Reason"].as_s().unwrap();
        assert_eq!(format!("malformed:{reason}"), put.kind, "{item:?}");
        assert!(!item["Error"].as_s().unwrap().is_empty());
        assert!(!item["Data"].as_b().unwrap().as_ref().is_empty());
        assert_eq!(item["PartitionKey"].as_s().unwrap(), &put.partition_key);
        assert!(item.contains_key("ArrivalTime"));
    }
}

async fn sigterm_under_load_exits_0_in_time_with_checkpoints_past_the_last_write(mode: Retrieval) {
    let setup = Setup::new("sigterm", 4).reading(mode);
    setup.produce(&["--count", "2000", "--seed", "14"]);
    let mut worker = setup.worker("w", &["--max-write-rate", "300", "--max-records", "100"]);
    eventually(DRAIN, "300 rows", || async { (setup.row_count().await >= 300).then_some(()) }).await;
    worker.signal("TERM");
    let (status, took) = worker.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", worker.log_text());
    assert!(took <= Duration::from_secs(5), "took {took:?} (shutdown timeout 5 s)");
    let rows = setup.tweets().await;
    assert!(rows.len() < 2000, "the worker had finished before SIGTERM");
    let leases = setup.leases().await;
    for (shard, lease) in &leases {
        assert!(!lease.contains_key("leaseOwner"), "{shard} not released: {lease:?}");
        let checkpoint = lease["checkpoint"].as_s().unwrap();
        let last_written = rows
            .values()
            .filter(|r| r["ShardId"].as_s().unwrap() == shard)
            .map(|r| r["SequenceNumber"].as_s().unwrap().clone())
            .max_by(|a, b| seq_cmp(a, b));
        if let Some(last_written) = last_written {
            assert_ne!(
                seq_cmp(checkpoint, &last_written),
                std::cmp::Ordering::Less,
                "{shard}: {checkpoint} < {last_written}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_on_one_host_need_a_port_each_and_port_0_takes_a_free_one() {
    let setup = Setup::new("one-host", 2);
    let puts = setup.produce(&["--count", "200", "--seed", "43"]);

    // A second worker on a port in use fails at once, naming it and the way out.
    let mut first = setup.worker("first", &[]);
    eventually(Duration::from_secs(20), "the first worker serving", || async {
        first.metric("stream_worker_records_read_total").map(|_| ())
    })
    .await;
    let taken = format!("127.0.0.1:{}", first.metrics_port);
    let mut second = setup.worker_at("second", &taken);
    let (status, _) = second.wait_exit(Duration::from_secs(20));
    let log = second.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(&format!("cannot serve metrics on {taken}")), "{log}");
    assert!(log.contains("--metrics-addr") && log.contains("port 0"), "{log}");
    assert!(!log.contains('\x1b'), "colour codes in a log file: {log}");

    // On port 0 each takes a free port and logs it; both are scraped.
    let mut replicas = vec![setup.worker_at("any-1", "127.0.0.1:0"), setup.worker_at("any-2", "127.0.0.1:0")];
    for w in &mut replicas {
        let port = eventually(Duration::from_secs(20), "the port logged", || async { w.logged_metrics_port() }).await;
        w.metrics_port = port;
    }
    assert_ne!(replicas[0].metrics_port, replicas[1].metrics_port);
    first.signal("TERM");
    first.wait_exit(Duration::from_secs(15));
    setup.rows_of(&puts).await;
    for w in &mut replicas {
        // A replica under load may still be in its start-up checks.
        let name = format!("{} scraped", w.name);
        eventually(Duration::from_secs(20), &name, || async { w.metric("stream_worker_leases_held") }).await;
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(15)).0.success());
    }

    // `none`: no endpoints; the worker runs and stops as any other.
    let mut quiet = setup.worker_at("quiet", "none");
    eventually(Duration::from_secs(20), "the worker started", || async {
        quiet.log_text().contains("starting").then_some(())
    })
    .await;
    quiet.signal("TERM");
    assert!(quiet.wait_exit(Duration::from_secs(15)).0.success(), "{}", quiet.log_text());
    assert!(!quiet.log_text().contains("serving /metrics"), "{}", quiet.log_text());
}

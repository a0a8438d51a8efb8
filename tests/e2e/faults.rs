//! Each fault the network and the services produce, under load, on a real
//! worker: `deploy/local/faults.py` in front of both emulators injects it, and
//! every tweet put must still be a row, exactly, and the worker must stop
//! cleanly. The proxies' counters prove each fault really happened.

use crate::common;

use std::time::Duration;

use common::*;

type Stats = serde_json::Value;

/// Drains 1,500 tweets on 4 shards through a DynamoDB proxy and a Kinesis
/// proxy with the given faults.py options, keeps the worker running until
/// `happened` holds of the proxies' stats (the faults are drawn per call, and a
/// quick drain makes few calls), and returns the stats.
async fn drain_through(
    test: &str,
    dynamodb: &[&str],
    kinesis: &[&str],
    happened: fn(&Stats, &Stats) -> bool,
) -> (Stats, Stats) {
    let setup = Setup::new(test, 4);
    let puts = setup.produce(&["--count", "1500", "--seed", "43", "--malformed-ratio", "0.02"]);
    let seed = ["--seed", "7"];
    let ddb = Faults::start(&std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap(), &[dynamodb, &seed].concat());
    let kin = Faults::start(&std::env::var("AWS_ENDPOINT_URL_KINESIS").unwrap(), &[kinesis, &seed].concat());
    let (ddb_url, kin_url) = (ddb.url(), kin.url());
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", ddb_url.as_str()), ("AWS_ENDPOINT_URL_KINESIS", kin_url.as_str())];
    let mut worker = setup.worker_with_env("w", &[], &env);
    setup.rows_of(&puts).await;
    // The malformed records are dead letters, each once.
    let malformed = puts.malformed().len();
    eventually(Duration::from_secs(60), "every malformed record dead-lettered", || async {
        (setup.dead_letters().await.len() == malformed).then_some(())
    })
    .await;
    eventually(Duration::from_secs(60), "the faults injected", || async {
        happened(&ddb.stats(), &kin.stats()).then_some(())
    })
    .await;
    worker.signal("TERM");
    let (status, _) = worker.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}; log:\n{}", worker.log_text());
    let log = worker.log_text();
    assert!(!log.contains("panicked"), "{log}");
    (ddb.stats(), kin.stats())
}

fn injected(stats: &serde_json::Value, fault: &str) -> u64 {
    stats["faults"][fault].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_internal_errors() {
    let (ddb, _) = drain_through("f-500", &["--error-rate", "0.2"], &[], |ddb, _| injected(ddb, "error") >= 10).await;
    assert!(injected(&ddb, "error") >= 10, "{}", ddb["faults"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_answers_slower_than_the_call_timeout() {
    // The worker abandons an attempt after 3 s and retries it.
    let (ddb, _) = drain_through("f-slow", &["--slow-rate", "0.05", "--slow-ms", "4000"], &[], |ddb, _| {
        injected(ddb, "slow") >= 3
    })
    .await;
    assert!(injected(&ddb, "slow") >= 3, "{}", ddb["faults"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_connections_reset_before_and_during_the_answer() {
    let (ddb, _) = drain_through("f-reset", &["--reset-rate", "0.1", "--reset-midway-rate", "0.05"], &[], |ddb, _| {
        injected(ddb, "reset") >= 5 && injected(ddb, "reset_midway") >= 2
    })
    .await;
    assert!(injected(&ddb, "reset") >= 5 && injected(&ddb, "reset_midway") >= 2, "{}", ddb["faults"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kinesis_throttling_and_expired_iterators() {
    let args = ["--kinesis-throttle-rate", "0.3", "--expired-iterator-rate", "0.1"];
    let (_, kin) = drain_through("f-kthrottle", &[], &args, |_, kin| {
        injected(kin, "kinesis_throttle") >= 5 && injected(kin, "expired_iterator") >= 2
    })
    .await;
    assert!(injected(&kin, "kinesis_throttle") >= 5 && injected(&kin, "expired_iterator") >= 2, "{}", kin["faults"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kinesis_internal_errors_and_resets() {
    let args = ["--error-rate", "0.1", "--reset-rate", "0.05", "--reset-midway-rate", "0.05"];
    let (_, kin) =
        drain_through("f-kerrors", &[], &args, |_, kin| injected(kin, "error") >= 3 && injected(kin, "reset") >= 1)
            .await;
    assert!(injected(&kin, "error") >= 3 && injected(&kin, "reset") >= 1, "{}", kin["faults"]);
}

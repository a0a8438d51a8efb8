//! Enhanced fan-out on the Kinesis emulator: over TLS and HTTP/2 as in
//! production, subscriptions that end, and the stream consumer's life.
//! (Drain, kill -9, SIGTERM, resharding, balancing, failover and the switch
//! from polling run in both modes in `worker.rs`, `resharding.rs`, `fleet.rs`.)

use crate::common;

use std::time::Duration;

use common::proxy::Proxy;
use common::*;

const DRAIN: Duration = Duration::from_secs(120);

/// A variable `deploy/local/emulators.sh` prints, or a panic that says so.
fn local(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: start the emulators with `eval \"$(deploy/local/emulators.sh start)\"` (or run deploy/local/test.sh)")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_worker_drains_a_stream_over_tls_with_http2() {
    let setup = Setup::new("tls", 4).reading(Retrieval::FanOut);
    let puts = setup.produce(&["--count", "1000", "--seed", "61"]);
    // Through a relay that counts TCP connections, by name (the certificate's).
    let tls = local("STREAM_WORKER_LOCAL_KINESIS_TLS_URL");
    let upstream = tls.trim_start_matches("https://localhost:");
    let relay = Proxy::start(format!("127.0.0.1:{upstream}")).await;
    let endpoint = format!("https://localhost:{}", relay.port);
    let env =
        [("AWS_ENDPOINT_URL_KINESIS", endpoint.as_str()), ("AWS_CA_BUNDLE", &local("STREAM_WORKER_LOCAL_CA_BUNDLE"))];
    let mut worker = setup.worker_with_env("w", &[], &env);
    setup.rows_of(&puts).await;
    let subscriptions = worker.metric("stream_worker_fan_out_subscriptions_total").unwrap();
    assert!(subscriptions >= 4.0, "{subscriptions}");
    // Four subscriptions stay open at once, each a response that never ends: over
    // HTTP/1.1 each needs a connection of its own. Fewer connections than
    // subscriptions is HTTP/2 multiplexing them.
    let connections = relay.connections();
    eprintln!("{subscriptions} subscriptions over {connections} TCP connection(s)");
    assert!(connections < 4, "{connections} TCP connections for 4 live subscriptions: not HTTP/2");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).0.success(), "{}", worker.log_text());

    // A CA bundle that does not hold the emulator's CA: refused, and said so.
    let mut wrong = setup.worker_with_env("wrong", &[], &[("AWS_ENDPOINT_URL_KINESIS", endpoint.as_str())]);
    let (status, _) = wrong.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{}", wrong.log_text());
    assert!(
        wrong.log_text().contains("TLS certificate is not trusted") && wrong.log_text().contains("AWS_CA_BUNDLE"),
        "{}",
        wrong.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_that_end_resume_with_no_gap_and_no_duplicate() {
    let setup = Setup::new("lifetime", 2).reading(Retrieval::FanOut);
    let mut worker = setup.worker("w", &["--fan-out-subscription-lifetime", "1s"]);
    // Both shards subscribed before the first record, so that subscriptions (1 s
    // each, then a retry while Kinesis still holds the old one) end while records
    // keep coming: 3,000 at 200/s, at least 15 s.
    eventually(Duration::from_secs(60), "both shards subscribed", || async {
        worker.metric("stream_worker_fan_out_subscriptions_total").filter(|n| *n >= 2.0)
    })
    .await;
    let lifetime_ends = || worker.metric_with("stream_worker_fan_out_resubscriptions_total", "reason=\"lifetime\"");
    let before = lifetime_ends().unwrap_or(0.0);
    let producer = setup.start_producer(&["--rate", "200", "--count", "3000", "--seed", "62"]);
    let puts = producer.finish();
    let ended = lifetime_ends().unwrap_or(0.0) - before;
    eprintln!("{ended} subscriptions replaced while the producer ran");
    setup.rows_of(&puts).await;
    let read = eventually(Duration::from_secs(10), "every record read", || async {
        worker.metric("stream_worker_records_read_total").filter(|n| *n >= 3000.0)
    })
    .await;
    assert_eq!(read, 3000.0, "each record read once: no duplicate across resubscriptions");
    assert!(ended >= 4.0, "{ended} subscriptions replaced while 2 shards were written for 15 s");
    let ages = worker.metric("stream_worker_fan_out_event_age_seconds_count").unwrap();
    assert!(ages >= 3000.0, "{ages}");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).0.success(), "{}", worker.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_another_subscriber_holds_is_read_once_it_lets_go() {
    let setup = Setup::new("in-use", 2).reading(Retrieval::FanOut);
    let puts = setup.produce(&["--count", "400", "--seed", "64"]);
    // Another process subscribes to shard 0 through the same consumer first.
    let kinesis = kinesis().await;
    let summary = kinesis.describe_stream_summary().stream_name(&setup.stream).send().await.unwrap();
    let stream_arn = summary.stream_description_summary().unwrap().stream_arn().to_owned();
    let registered = kinesis.register_stream_consumer().stream_arn(&stream_arn).consumer_name(&setup.lease_table);
    let consumer_arn = registered.send().await.unwrap().consumer().unwrap().consumer_arn().to_owned();
    eventually(Duration::from_secs(30), "the consumer ACTIVE", || async {
        let out = kinesis.describe_stream_consumer().consumer_arn(&consumer_arn).send().await.unwrap();
        (out.consumer_description().unwrap().consumer_status().as_str() == "ACTIVE").then_some(())
    })
    .await;
    let shards = kinesis.list_shards().stream_name(&setup.stream).send().await.unwrap();
    let held = shards.shards()[0].shard_id().to_owned();
    let position = aws_sdk_kinesis::types::StartingPosition::builder()
        .r#type(aws_sdk_kinesis::types::ShardIteratorType::Latest)
        .build()
        .unwrap();
    let other = kinesis
        .subscribe_to_shard()
        .consumer_arn(&consumer_arn)
        .shard_id(&held)
        .starting_position(position)
        .send()
        .await
        .unwrap();
    let mut worker = setup.worker("w", &[]);
    eventually(Duration::from_secs(60), "the worker refused on the held shard", || async {
        worker.metric_with("stream_worker_fan_out_subscribe_failures_total", "reason=\"in-use\"").filter(|n| *n >= 1.0)
    })
    .await;
    let held_rows = |rows: &std::collections::HashMap<String, Item>| {
        rows.values().filter(|r| r["ShardId"].as_s().unwrap() == &held).count()
    };
    assert_eq!(held_rows(&setup.tweets().await), 0, "read while another subscription held the shard");
    drop(other);
    let rows = setup.rows_of(&puts).await;
    assert!(held_rows(&rows) > 0);
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).0.success(), "{}", worker.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_consumer_is_registered_once_and_deregistered_only_on_request() {
    let setup = Setup::new("consumer", 1).reading(Retrieval::FanOut);
    let kinesis = kinesis().await;
    let arn = kinesis.describe_stream_summary().stream_name(&setup.stream).send().await.unwrap();
    let arn = arn.stream_description_summary().unwrap().stream_arn().to_owned();
    let consumers = || async {
        let out = kinesis.list_stream_consumers().stream_arn(&arn).send().await.unwrap();
        out.consumers().iter().map(|c| c.consumer_name().to_owned()).collect::<Vec<_>>()
    };
    // Two workers started together both register: one wins, neither fails.
    let mut a = setup.worker("a", &[]);
    let mut b = setup.worker("b", &[]);
    let puts = setup.produce(&["--count", "100", "--seed", "63"]);
    setup.rows_of(&puts).await;
    assert_eq!(consumers().await, std::slice::from_ref(&setup.lease_table), "named after the lease table");
    for w in [&mut a, &mut b] {
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(15)).0.success(), "{}", w.log_text());
    }
    assert_eq!(consumers().await.len(), 1, "workers never deregister");

    let deregister = |extra: &[&str]| {
        let args = ["consumer", "deregister", "--stream", &setup.stream, "--lease-table", &setup.lease_table];
        setup.cli(&[&args[..], extra].concat())
    };
    let dry = deregister(&["--dry-run"]);
    assert!(dry.status.success() && String::from_utf8_lossy(&dry.stdout).contains("would deregister"), "{dry:?}");
    let refused = deregister(&[]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pass --yes to confirm"), "{refused:?}");
    assert_eq!(consumers().await.len(), 1, "neither a dry run nor a refusal deregisters");
    let out = deregister(&["--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deregistered"), "{out:?}");
    eventually(DRAIN, "the consumer gone", || async { consumers().await.is_empty().then_some(()) }).await;
    let again = deregister(&["--yes"]);
    assert!(again.status.success() && String::from_utf8_lossy(&again.stdout).contains("nothing to do"), "{again:?}");
}

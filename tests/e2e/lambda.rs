//! The Lambda path on the emulators: the handler on real Kinesis event JSON,
//! the built `stream-worker-lambda` driven over the Runtime API by the local
//! event source mapping (`deploy/local/esm.py`), out-of-time invocations while
//! DynamoDB is cut off, parity with the worker, and the switch between paths.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use common::proxy::Proxy;
use common::*;
use stream_worker::config::ProcessorArgs;
use stream_worker::lambda::KinesisEvent;
use stream_worker::processor::Processor;

const DRAIN: Duration = Duration::from_secs(180);

/// A Kinesis event as the event source mapping sends it: one shard's records.
fn event(shard: &str, records: &[(u64, &[u8])]) -> KinesisEvent {
    let records: Vec<_> = records
        .iter()
        .map(|(seq, data)| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": format!("pk-{seq}"),
                    "sequenceNumber": format!("{seq:056}"),
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "approximateArrivalTimestamp": 1_767_323_045.5
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard}:{seq:056}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/stream-worker-lambda",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/tweets"
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

async fn processor(setup: &Setup, dynamodb_endpoint: Option<&str>) -> Processor {
    let config = stream_worker::aws::load_config().await;
    let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&config);
    if let Some(endpoint) = dynamodb_endpoint {
        dynamodb = dynamodb.endpoint_url(endpoint);
    }
    let args = ProcessorArgs {
        tweets_table: setup.tweets_table.clone(),
        dead_letter_table: setup.dead_letter_table.clone(),
        max_write_rate: 0,
        ttl_days: 7,
    };
    args.build(aws_sdk_dynamodb::Client::from_conf(dynamodb.build()))
}

fn failures(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response.batch_item_failures.iter().map(|f| f.item_identifier.clone().unwrap_or_default()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handler_on_real_event_json_writes_rows_and_dead_letters_and_reports_nothing() {
    let setup = Setup::new("lambda-handler", 1);
    let p = processor(&setup, None).await;
    let long = "x".repeat(300);
    let v1 = format!(
        r#"{{"id_str":"101","text":"short…","truncated":true,"extended_tweet":{{"full_text":"{long} #rust"}},
        "created_at":"Wed Oct 10 20:19:24 +0000 2018","user":{{"name":"Ada","screen_name":"ada"}},"lang":"en",
        "entities":{{"hashtags":[]}}}}"#
    );
    let v2 = r##"{"data":{"id":"102","text":"v2 #x","author_id":"7","created_at":"2026-01-02T03:04:05.000Z","lang":"fr",
        "entities":{"hashtags":[{"tag":"x"}]}},"includes":{"users":[{"id":"7","name":"Bob","username":"bob"}]}}"##;
    let one_mib = format!(r#"{{"id_str":"104","text":"{}"}}"#, "y".repeat(1024 * 1024 - 40));
    let records: Vec<(u64, &[u8])> = vec![
        (1, v1.as_bytes()),
        (2, v2.as_bytes()),
        (3, b"{not json"),
        (4, one_mib.as_bytes()),
        (5, br#"{"id_str":"103","text":"first"}"#),
        (6, br#"{"limit":{"track":3}}"#),
        (7, br#"{"id_str":"103","text":"second"}"#),
    ];
    let shard = "shardId-000000000007";
    let response =
        stream_worker::lambda::handle(&p, event(shard, &records), SystemTime::now() + Duration::from_secs(30)).await;
    assert_eq!(failures(&response), Vec::<String>::new(), "dead-lettered records are never reported");

    let rows = setup.tweets().await;
    assert_eq!(rows.keys().cloned().collect::<HashSet<_>>(), HashSet::from(["101", "102", "103"].map(String::from)));
    let r101 = &rows["101"];
    assert_eq!(r101["Message"].as_s().unwrap(), &format!("{long} #rust"), "the full text of a truncated v1.1 tweet");
    assert_eq!(r101["Username"].as_s().unwrap(), "Ada");
    assert_eq!(r101["ScreenName"].as_s().unwrap(), "ada");
    assert_eq!(r101["Timestamp"].as_s().unwrap(), "2018-10-10T20:19:24.000Z");
    assert_eq!(r101["ShardId"].as_s().unwrap(), shard);
    assert_eq!(r101["SequenceNumber"].as_s().unwrap(), &format!("{:056}", 1));
    let r102 = &rows["102"];
    assert_eq!(r102["Username"].as_s().unwrap(), "Bob");
    assert_eq!(r102["ScreenName"].as_s().unwrap(), "bob");
    assert_eq!(r102["Lang"].as_s().unwrap(), "fr");
    assert_eq!(r102["Hashtags"].as_ss().unwrap(), &vec!["x".to_owned()]);
    assert_eq!(rows["103"]["Message"].as_s().unwrap(), "second", "the later record of a duplicate id wins");

    let dead = setup.dead_letters().await;
    let reason = |seq: u64| dead[&(shard.to_owned(), format!("{seq:056}"))]["Reason"].as_s().unwrap().clone();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert_eq!(reason(3), "not_json");
    assert_eq!(reason(4), "too_large");
    assert_eq!(reason(6), "not_a_tweet");
    let big = &dead[&(shard.to_owned(), format!("{:056}", 4))];
    assert_eq!(big["DataBytes"].as_n().unwrap(), &one_mib.len().to_string());
    assert_eq!(big["ArrivalTime"].as_s().unwrap(), "2026-01-02T03:04:05.500Z");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_dynamodb_cut_off_the_first_record_is_reported_before_the_deadline_and_the_retry_succeeds() {
    let setup = Setup::new("lambda-cut", 1);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let p = processor(&setup, Some(&format!("http://127.0.0.1:{}", proxy.port))).await;
    let records: Vec<(u64, &[u8])> =
        vec![(1, br#"{"id_str":"1","text":"a"}"#), (2, b"garbage"), (3, br#"{"id_str":"3","text":"c"}"#)];

    proxy.cut();
    let started = std::time::Instant::now();
    let deadline = SystemTime::now() + Duration::from_secs(4);
    let response = stream_worker::lambda::handle(&p, event("shardId-1", &records), deadline).await;
    assert!(SystemTime::now() < deadline, "answered after the deadline ({:?})", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(3), "gave up early: {:?}", started.elapsed());
    assert_eq!(failures(&response), vec![format!("{:056}", 1)]);

    proxy.restore();
    let response =
        stream_worker::lambda::handle(&p, event("shardId-1", &records), SystemTime::now() + Duration::from_secs(30))
            .await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(setup.row_count().await, 2);
    assert_eq!(setup.dead_letters().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_function_drains_a_stream_through_the_runtime_api() {
    let setup = Setup::new("lambda-drain", 4);
    let puts = setup.produce(&["--count", "1000", "--seed", "21", "--malformed-ratio", "0.05"]);
    let malformed = puts.malformed();
    assert!(malformed.len() > 20, "{} malformed", malformed.len());
    let mut esm = setup.lambda("esm", &["--batch-size", "100"], &[]);
    setup.rows_of(&puts).await;
    let dead = all_dead_letters(&setup, malformed.len()).await;
    let expected: HashSet<(String, String)> = malformed.iter().map(|p| (p.shard.clone(), p.sequence.clone())).collect();
    assert_eq!(dead.keys().cloned().collect::<HashSet<_>>(), expected);
    // Every shard's batches were all answered in full: nothing reported, no
    // failed invocation, though 5 % of the records could never be tweets.
    let last = puts.last_per_shard();
    eventually(Duration::from_secs(30), "the mapping done with every shard's last record", || async {
        (esm.done() == last).then_some(())
    })
    .await;
    assert_eq!(esm.count("failed_invocations"), 0, "{}", esm.log_text());
    assert_eq!(esm.count("partial_failures"), 0, "{}", esm.log_text());
    let logs = esm.function_log_text();
    assert!(logs.contains(r#""requestId":"#), "JSON logs carry the request id:\n{logs}");
    assert!(logs.contains(r#""_aws":{"#) && logs.contains("stream_worker_records_written_total"), "EMF metrics");
    esm.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_time_invocations_name_the_first_unwritten_record_and_the_mapping_retries_it() {
    let setup = Setup::new("lambda-retry", 2);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let mut esm = setup.lambda("esm", &["--timeout", "3"], &[("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)]);
    eventually(DRAIN, "the function's cold start", || async {
        esm.function_log_text().contains("cold start done").then_some(())
    })
    .await;
    proxy.cut();
    let puts = setup.produce(&["--count", "400", "--seed", "22", "--malformed-ratio", "0.05"]);
    eventually(DRAIN, "two invocations out of time", || async { (esm.count("partial_failures") >= 2).then_some(()) })
        .await;
    assert!(setup.tweets().await.is_empty(), "DynamoDB is cut off");
    proxy.restore();
    setup.rows_of(&puts).await;
    all_dead_letters(&setup, puts.malformed().len()).await;
    // Each invocation answered before its deadline, naming where to retry.
    assert_eq!(esm.count("failed_invocations"), 0, "{}", esm.log_text());
    let logs = esm.function_log_text();
    assert!(logs.contains("out of time: reporting the first record not written"), "{logs}");
    esm.stop();
}

/// Tweets-table attributes that differ by design between two writes of one
/// record: when it was processed, and the TTL counted from then.
const PROVENANCE: [&str; 2] = ["ProcessedAt", "ExpirationTime"];

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_and_the_lambda_write_identical_items() {
    let worker_side = Setup::new("parity-worker", 2);
    let mut lambda_side = Setup::new("parity-lambda", 1);
    lambda_side.stream = worker_side.stream.clone();
    let puts = worker_side.produce(&["--count", "400", "--seed", "23", "--malformed-ratio", "0.05"]);
    let mut worker = worker_side.worker("w", &[]);
    let mut esm = lambda_side.lambda("esm", &[], &[]);
    let by_worker = worker_side.rows_of(&puts).await;
    let by_lambda = lambda_side.rows_of(&puts).await;
    for (id, row) in &by_worker {
        let other = &by_lambda[id];
        let keys: HashSet<&String> = row.keys().chain(other.keys()).collect();
        for key in keys {
            if PROVENANCE.contains(&key.as_str()) {
                continue;
            }
            assert_eq!(row.get(key), other.get(key), "tweet {id}, attribute {key}");
        }
        let ttl = |r: &Item| r["ExpirationTime"].as_n().unwrap().parse::<i64>().unwrap();
        assert!((ttl(row) - ttl(other)).abs() < 600, "TTLs of tweet {id} far apart");
    }
    let malformed = puts.malformed().len();
    let (a, b) = (all_dead_letters(&worker_side, malformed).await, all_dead_letters(&lambda_side, malformed).await);
    for (key, item) in &a {
        for (attr, value) in item {
            if attr != "DeadLetteredAt" {
                assert_eq!(Some(value), b[key].get(attr), "dead letter {key:?}, attribute {attr}");
            }
        }
    }
    worker.signal("TERM");
    worker.wait_exit(Duration::from_secs(15));
    esm.stop();
}

async fn all_dead_letters(setup: &Setup, n: usize) -> HashMap<(String, String), Item> {
    eventually(DRAIN, "every malformed record dead-lettered", || async {
        let dead = setup.dead_letters().await;
        (dead.len() == n).then_some(dead)
    })
    .await
}

/// RFC 3339, whole seconds, `Z`.
fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_paths_under_load_loses_nothing() {
    let setup = Setup::new("switch", 2);
    let margin = chrono::Duration::seconds(10);
    let producer = setup.start_producer(&["--rate", "100", "--duration", "1m", "--seed", "24"]);

    // The Lambda path runs first.
    let mut lambda = setup.lambda("esm-1", &[], &[]);
    eventually(DRAIN, "300 rows by the Lambda path", || async { (setup.row_count().await >= 300).then_some(()) }).await;

    // Cutover to the fleet: it starts a margin before now; the Lambda path stops
    // once the fleet has caught up.
    let cutover = chrono::Utc::now();
    let position = format!("at-timestamp:{}", rfc3339(cutover - margin));
    let mut worker = setup.worker("w", &["--initial-position", &position]);
    eventually(DRAIN, "the fleet caught up", || async {
        let held = worker.metric("stream_worker_leases_held")?;
        let behind = worker.metric("stream_worker_behind_latest_seconds")?;
        (held == 2.0 && behind < 2.0).then_some(())
    })
    .await;
    lambda.stop();
    // Records that arrive while the fleet alone runs, however long the phases
    // before took (the first producer stops after a minute).
    let during = setup.start_producer(&["--rate", "100", "--count", "600", "--seed", "25"]);
    let rows_at_switch = setup.row_count().await;
    eventually(DRAIN, "rows by the fleet alone", || async {
        (setup.row_count().await >= rows_at_switch + 300).then_some(())
    })
    .await;

    // And back: the Lambda path starts a margin before now; the fleet stops once
    // the mapping has caught up on every shard.
    let cutover = chrono::Utc::now();
    let timestamp = rfc3339(cutover - margin);
    let mut lambda = setup.lambda(
        "esm-2",
        &["--starting-position", "AT_TIMESTAMP", "--starting-position-timestamp", &timestamp],
        &[],
    );
    eventually(DRAIN, "the mapping caught up", || async {
        let status = lambda.status()?;
        let shards = status["shards"].as_object()?;
        let caught_up = shards.len() == 2
            && shards.values().all(|s| s["done_sequence"].is_string() && s["millis_behind_latest"].as_u64() == Some(0));
        caught_up.then_some(())
    })
    .await;
    worker.signal("TERM");
    let (status, _) = worker.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{}", worker.log_text());

    let mut puts = producer.finish();
    puts.0.extend(during.finish().0);
    let rows = setup.rows_of(&puts).await;
    // Each row is its record's, whichever path wrote it last.
    let by_id: HashMap<&str, &Put> = puts.0.iter().map(|p| (p.key.as_str(), p)).collect();
    for (id, row) in &rows {
        assert_eq!(row["ShardId"].as_s().unwrap(), &by_id[id.as_str()].shard, "tweet {id}");
        assert_eq!(row["SequenceNumber"].as_s().unwrap(), &by_id[id.as_str()].sequence, "tweet {id}");
    }
    lambda.stop();
}

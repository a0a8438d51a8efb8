//! The operator's commands, on the emulators: replaying dead letters once the
//! cause is fixed, rewinding checkpoints under a running fleet, and watching
//! the leases live.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::Read as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
use common::*;

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_after_a_fix_writes_what_now_can_be_written_and_counts_the_rest_once() {
    let setup = Setup::new("dl-replay", 2);
    // The cause: the worker was pointed at a tweets table created with the wrong
    // key type (Id a number), so DynamoDB refused every tweet.
    let wrong = format!("{}-wrong", setup.tweets_table);
    dynamodb()
        .await
        .create_table()
        .table_name(&wrong)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder().attribute_name("Id").attribute_type(ScalarAttributeType::N).build().unwrap(),
        )
        .key_schema(KeySchemaElement::builder().attribute_name("Id").key_type(KeyType::Hash).build().unwrap())
        .send()
        .await
        .unwrap();
    let puts = setup.produce(&["--count", "240", "--seed", "5", "--malformed-ratio", "0.2"]);
    // A 300 KB tweet: its dead letter keeps only the first 256 KiB.
    let big_file = setup.dir.join("big.jsonl");
    std::fs::write(&big_file, format!("{{\"id_str\":\"big-1\",\"text\":\"{}\"}}\n", "x".repeat(300 * 1024))).unwrap();
    let big = setup.produce(&["--source", &format!("file:{}", big_file.display())]);
    let big = (big.0[0].shard.clone(), big.0[0].sequence.clone());
    let misconfigured = Setup { tweets_table: wrong, ..setup.clone() };
    let mut worker = misconfigured.worker("w", &[]);
    let letters = eventually(Duration::from_secs(120), "every record dead-lettered", || async {
        let letters = setup.dead_letters().await;
        (letters.len() == puts.0.len() + 1).then_some(letters)
    })
    .await;
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(30)).0.success(), "{}", worker.log_text());
    let malformed: HashSet<(String, String)> =
        puts.malformed().iter().map(|p| (p.shard.clone(), p.sequence.clone())).collect();
    let tweets = puts.0.len() - malformed.len();
    assert!(tweets > 150 && malformed.len() > 20, "{tweets} tweets, {} malformed", malformed.len());
    let refused = letters.values().filter(|l| l["Reason"].as_s().unwrap() == "rejected_by_sink").count();
    assert_eq!(refused, tweets + 1, "every tweet was refused by the wrong table");

    let tables = ["--tweets-table", &setup.tweets_table, "--dead-letter-table", &setup.dead_letter_table];
    let replay = [&["dead-letters", "replay", "--json"][..], &tables[..]].concat();

    // A dry run says what would happen, and changes nothing.
    let dry = json_of(&setup.cli(&[&replay[..], &["--dry-run"]].concat()));
    assert_eq!(
        (dry["replayed"].as_u64(), dry["still_failing"].as_u64()),
        (Some(tweets as u64), Some(malformed.len() as u64))
    );
    assert!(setup.tweets().await.is_empty());
    assert_eq!(setup.dead_letters().await.len(), puts.0.len() + 1);

    // The fix: the right table. Two replays at once.
    let spawn = || Command::new(BIN).args(&replay).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let (a, b) = (json_of(&a.wait_with_output().unwrap()), json_of(&b.wait_with_output().unwrap()));
    eprintln!("two replays at once: {a} / {b}");
    let sum = |key: &str| a[key].as_u64().unwrap() + b[key].as_u64().unwrap();
    let rows = setup.rows_of(&puts).await;
    assert_eq!(rows.len(), puts.tweet_ids().len());
    assert_eq!(sum("replayed"), tweets as u64, "each replayed dead letter counted once: {a} {b}");
    assert_eq!((a["not_replayable"].as_u64(), b["not_replayable"].as_u64()), (Some(1), Some(1)), "the cut one");
    let mut left = setup.dead_letters().await;
    let cut = left.remove(&big).expect("the cut dead letter stays");
    assert!(!cut.contains_key("ReplayCount") && !setup.tweets().await.contains_key("big-1"), "never half-written");
    assert_eq!(left.keys().cloned().collect::<HashSet<_>>(), malformed, "exactly the malformed ones remain");
    let counts: u64 = left.values().map(|l| l["ReplayCount"].as_n().unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(counts, sum("still_failing"), "each failed replay counted once: {a} {b}");
    assert!(left.values().all(|l| l["Reason"].as_s().unwrap() != "rejected_by_sink"));

    // list filters; purge asks, then deletes exactly what matches.
    let not_json = left.values().filter(|l| l["Reason"].as_s().unwrap() == "not_json").count();
    assert!(not_json > 0);
    let listed = setup.cli(&[
        "dead-letters",
        "list",
        "--json",
        "--reason",
        "not_json",
        "--dead-letter-table",
        &setup.dead_letter_table,
    ]);
    assert!(listed.status.success());
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), not_json);
    let purge = ["dead-letters", "purge", "--reason", "not_json", "--dead-letter-table", &setup.dead_letter_table];
    let refused = setup.cli(&purge);
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    assert_eq!(setup.dead_letters().await.len(), malformed.len() + 1);
    let purged = json_of(&setup.cli(&[&purge[..], &["--yes", "--json"]].concat()));
    assert_eq!(purged["purged"].as_u64(), Some(not_json as u64));
    assert_eq!(setup.dead_letters().await.len(), malformed.len() + 1 - not_json);
}

fn processed_at(rows: &HashMap<String, Item>) -> HashMap<String, String> {
    rows.iter().map(|(id, row)| (id.clone(), row["ProcessedAt"].as_s().unwrap().clone())).collect()
}

async fn checkpoints_at(setup: &Setup, last: &HashMap<String, String>) {
    eventually(Duration::from_secs(60), "checkpoints at the stream's end", || async {
        let states = setup.lease_states().await;
        last.iter().all(|(shard, seq)| states.get(shard).is_some_and(|(_, c)| c == seq)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rewind_to_a_timestamp_under_a_running_fleet_reads_again_exactly_what_came_after_it() {
    let setup = Setup::new("rewind", 2);
    let first = setup.produce(&["--count", "150", "--seed", "11"]);
    let mut workers = [setup.worker("a", &[]), setup.worker("b", &[])];
    setup.rows_of(&first).await;
    let at = chrono::Utc::now();
    // The second load arrives strictly after `at` (arrival times are in ms).
    while chrono::Utc::now() < at + chrono::Duration::milliseconds(20) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = setup.produce(&["--count", "150", "--seed", "12"]);
    assert!(first.0.iter().all(|p| p.accepted_ms <= at.timestamp_millis()));
    assert!(second.0.iter().all(|p| p.accepted_ms > at.timestamp_millis()));
    let both = PutLog(first.0.iter().chain(&second.0).cloned().collect());
    assert!(first.tweet_ids().is_disjoint(&second.tweet_ids()));
    let before = processed_at(&setup.rows_of(&both).await);
    checkpoints_at(&setup, &both.last_per_shard()).await;

    // The AWS spelling of the position; without a terminal to ask on, --yes.
    let to = format!("AT_TIMESTAMP:{}", at.to_rfc3339());
    let rewind = |extra: &[&str]| {
        let args = ["checkpoints", "rewind", "--json", "--stream", &setup.stream, "--lease-table", &setup.lease_table];
        setup.cli(&[&args[..], &["--to", &to], extra].concat())
    };
    let refused = rewind(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("pass --yes to confirm"), "{stderr}");
    checkpoints_at(&setup, &both.last_per_shard()).await;
    let plan = json_of(&rewind(&["--yes"]));
    assert_eq!(plan["applied"].as_u64(), Some(2), "{plan}");
    for shard in plan["shards"].as_array().unwrap() {
        let last_of_first = first.last_per_shard();
        let id = shard["shard_id"].as_str().unwrap();
        assert_eq!(shard["after"].as_str(), last_of_first.get(id).map(String::as_str), "{plan}");
    }

    // Every record after the timestamp is written again; none before it.
    let second_ids = second.tweet_ids();
    eventually(Duration::from_secs(120), "the second load's rows rewritten", || async {
        let now = processed_at(&setup.tweets().await);
        second_ids.iter().all(|id| now[id] > before[id]).then_some(())
    })
    .await;
    checkpoints_at(&setup, &both.last_per_shard()).await;
    let after = processed_at(&setup.tweets().await);
    for id in first.tweet_ids() {
        assert_eq!(after[&id], before[&id], "tweet {id} came before the timestamp and was read again");
    }
    for w in &mut workers {
        assert!(w.child.try_wait().unwrap().is_none(), "worker {} exited:\n{}", w.name, w.log_text());
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(30)).0.success(), "{}", w.log_text());
        assert!(!w.log_text().contains("panicked"));
    }
}

/// Collects a child's standard output on a thread.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn status_watch_redraws_on_a_terminal_and_prints_plain_blocks_otherwise() {
    let setup = Setup::new("watch", 2);
    let puts = setup.produce(&["--count", "60", "--seed", "3"]);
    let mut worker = setup.worker("a", &[]);
    setup.rows_of(&puts).await;
    let args = ["status", "--watch", "300ms", "--stream", &setup.stream, "--lease-table", &setup.lease_table];

    // Not a terminal: one plain block per view, no escape codes.
    let mut plain = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = collect(&mut plain);
    let text = eventually(Duration::from_secs(30), "three plain views", || async {
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        (text.matches("--- stream").count() >= 3).then_some(text)
    })
    .await;
    assert!(!text.contains('\x1b'), "{text}");
    let third = text.split("--- stream").nth(3).unwrap();
    assert!(third.contains("RECORDS/S") && third.contains("workers seen: 1: a (2)"), "{third}");
    // The worker's heartbeat: one process, beating; its lease count as of its
    // last beat (one every third of the failover time) reaches the two it holds.
    let beating = |view: &str| -> Vec<String> {
        view.lines().filter(|l| l.starts_with("a ") && l.ends_with("beating")).map(str::to_owned).collect()
    };
    assert_eq!(beating(third).len(), 1, "{third}");
    eventually(Duration::from_secs(30), "a heartbeat with both leases", || async {
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        let last = text.rsplit("--- stream").next().unwrap_or_default().to_owned();
        beating(&last).first().is_some_and(|l| l.split_whitespace().nth(2) == Some("2")).then_some(())
    })
    .await;
    // From the second view on, each owned shard has a rate (idle: 0.0).
    let rates: Vec<f64> = third
        .lines()
        .filter(|l| l.starts_with("shardId-"))
        .map(|l| l.split_whitespace().nth(5).unwrap().parse().unwrap_or_else(|_| panic!("{l}")))
        .collect();
    assert_eq!(rates.len(), 2, "{third}");
    plain.kill().unwrap();

    // A terminal (script(1) gives the command a pseudo-terminal): redrawn in place.
    let command = args.iter().fold(BIN.to_owned(), |c, a| format!("{c} '{a}'"));
    let mut tty = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux");
    let out = collect(&mut tty);
    let text = eventually(Duration::from_secs(30), "three redraws", || async {
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        (text.matches("\x1b[H\x1b[2J").count() >= 3).then_some(text)
    })
    .await;
    tty.kill().unwrap();
    assert!(!text.contains("--- stream"), "{text}");
    assert!(text.contains("workers seen: 1: a (2)"), "{text}");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(30)).0.success());
    // A graceful stop removes the worker's heartbeat row.
    let once = Command::new(BIN).args(&args[..1]).args(&args[3..]).arg("--json").output().unwrap();
    assert!(once.status.success(), "{}", String::from_utf8_lossy(&once.stderr));
    let json: serde_json::Value = serde_json::from_slice(&once.stdout).unwrap();
    assert_eq!(json["workers"], serde_json::json!([]), "{json}");
}

//! The producer on the X API: `deploy/local/x_api_standin.py` serves the X API
//! v2 stream the way X does (chunked, keep-alives, split lines, disconnects,
//! stalls, 429, 503, error objects, 401), `stream-worker produce --source x-api`
//! puts it into the Kinesis emulator, and a worker writes it to DynamoDB.
//! The reconnect schedule itself is checked under paused time in
//! `src/producer/mod.rs`; here the waits are real but short.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use stream_worker::retrieval::kinesis::KinesisStream;
use stream_worker::retrieval::{StartAt, StreamClient};

/// Recognisable, so that a leak anywhere is found by a plain search.
const TOKEN: &str = "XTOKEN-d0-n0t-l3ak-7f3a9c";

struct StandIn {
    child: Child,
    url: String,
    sent_log: PathBuf,
    requests_log: PathBuf,
}

impl StandIn {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let sent_log = dir.join("sent.jsonl");
        let requests_log = dir.join("requests.jsonl");
        let mut child = Command::new("python3")
            .arg(repo().join("deploy/local/x_api_standin.py"))
            .args(["--token", TOKEN, "--sent-log"])
            .arg(&sent_log)
            .arg("--requests-log")
            .arg(&requests_log)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start deploy/local/x_api_standin.py");
        let mut url = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut url).unwrap();
        Self { child, url: url.trim().to_owned(), sent_log, requests_log }
    }

    /// The tweets it wrote in full, in order.
    fn sent(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.sent_log)
    }

    fn requests(&self) -> Vec<serde_json::Value> {
        read_jsonl(&self.requests_log)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn produce(setup: &Setup, standin: &StandIn, args: &[&str], env: &[(&str, &str)]) -> (Output, PutLog) {
    let log = setup.dir.join(format!("put-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = Command::new(BIN)
        .args(["produce", "--stream", &setup.stream, "--source", "x-api", "--x-api-url", &standin.url, "--put-log"])
        .arg(&log)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run stream-worker produce");
    let puts = if log.exists() { PutLog::read(&log) } else { PutLog::default() };
    (out, puts)
}

/// Every record in the stream, read from the emulator: the partition keys.
async fn stream_keys(stream: &str) -> Vec<String> {
    let client = KinesisStream::new(kinesis().await, stream);
    let mut keys = Vec::new();
    for shard in client.list_shards().await.unwrap() {
        let mut it = Some(client.shard_iterator(&shard.id, &StartAt::TrimHorizon).await.unwrap());
        while let Some(i) = it.take() {
            let batch = client.get_records(&i, 10_000).await.unwrap();
            if batch.records.is_empty() {
                break;
            }
            keys.extend(batch.records.into_iter().map(|r| r.partition_key));
            it = batch.next_iterator;
        }
    }
    keys
}

fn assert_no_token(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "the bearer token leaked into {what}");
    assert!(!text.contains(&TOKEN[7..20]), "part of the bearer token leaked into {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tweet_the_x_stream_sends_through_every_kind_of_disconnect_is_put_once_and_becomes_a_row() {
    let setup = Setup::new("x-api", 2);
    // The token comes from Secrets Manager (moto serves it beside DynamoDB).
    let secrets_endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let config =
        aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(&secrets_endpoint).load().await;
    let secret = aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name(format!("x-token-{}", setup.stream))
        .secret_string(serde_json::json!({ "bearer_token": TOKEN }).to_string())
        .send()
        .await
        .unwrap();
    let scenario = setup.dir.join("scenario.json");
    std::fs::write(
        &scenario,
        serde_json::json!([
            {"status": 200, "steps": [
                {"tweets": 3, "split": true}, {"keepalive": 2}, {"together": 4}, {"tweets": 2}, {"partial": true}
            ]},
            {"status": 503},
            {"status": 429, "reset_in": 1},
            {"status": 200, "steps": [{"tweets": 3}, {"error": "operational-disconnect"}]},
            {"status": 200, "steps": [{"together": 5}, {"keepalive": 1}, {"stall": true}]},
            {"status": 200, "steps": [{"tweets": 4, "split": true}, {"reset": true}]},
            {"status": 200, "steps": [{"tweets": 2}]}
        ])
        .to_string(),
    )
    .unwrap();
    let standin = StandIn::start(&setup.dir, &["--scenario", scenario.to_str().unwrap(), "--then", "unauthorized"]);
    let (out, puts) = produce(
        &setup,
        &standin,
        &["--bearer-token-secret", secret.arn().unwrap(), "--x-api-stall-timeout", "2s"],
        &[("RUST_LOG", "trace"), ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &secrets_endpoint)],
    );
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "the final 401 is fatal\n{stderr}");
    assert!(stderr.contains("401 Unauthorized") && stderr.contains("check X_BEARER_TOKEN"), "{stderr}");
    assert_no_token("the trace-level log and the error", &stderr);
    assert_no_token("the summary", &stdout);
    assert!(
        stdout.contains(
            "reconnects: network=1, stall=1, closed=2, operational_disconnect=1, http_error=1, rate_limited=1"
        ),
        "{stdout}"
    );

    let sent = standin.sent();
    let sent_ids: Vec<String> = sent.iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sent_ids.len(), 3 + 4 + 2 + 3 + 5 + 4 + 2);
    let put_ids: Vec<String> = puts.0.iter().map(|p| p.key.clone()).collect();
    let mut sorted = put_ids.clone();
    sorted.sort();
    let mut expected = sent_ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "the put log holds every tweet sent, once");
    let mut in_stream = stream_keys(&setup.stream).await;
    in_stream.sort();
    assert_eq!(in_stream, expected, "the stream holds every tweet sent, once");
    assert!(stdout.contains(&format!("received {0}, put {0} ", sent.len())), "{stdout}");

    // The rest of the pipeline: a worker makes each a row with the fields the
    // stream carried.
    let _worker = setup.worker("w1", &[]);
    let rows = setup.rows_of(&puts).await;
    for s in &sent {
        let tweet = &s["tweet"];
        let row = &rows[s["id"].as_str().unwrap()];
        let user = &tweet["includes"]["users"][0];
        assert_eq!(row["Username"].as_s().unwrap(), user["name"].as_str().unwrap());
        assert_eq!(row["ScreenName"].as_s().unwrap(), user["username"].as_str().unwrap());
        assert_eq!(row["Message"].as_s().unwrap(), tweet["data"]["text"].as_str().unwrap());
        assert_eq!(row["Lang"].as_s().unwrap(), tweet["data"]["lang"].as_str().unwrap());
        let tag = tweet["data"]["entities"]["hashtags"][0]["tag"].as_str().unwrap();
        assert_eq!(row["Hashtags"].as_ss().unwrap(), &vec![tag.to_owned()]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_sync_sends_exactly_the_needed_changes_and_nothing_when_in_sync() {
    let setup = Setup::new("x-rules", 1);
    let scenario = setup.dir.join("scenario.json");
    let two = serde_json::json!({"status": 200, "steps": [{"tweets": 2}, {"stall": true}]});
    std::fs::write(&scenario, serde_json::json!([two, two]).to_string()).unwrap();
    let existing =
        r##"[{"value": "cats has:images"}, {"value": "#rustlang", "tag": "old"}, {"value": "lang:en from:rustlang"}]"##;
    let standin = StandIn::start(&setup.dir, &["--scenario", scenario.to_str().unwrap(), "--rules", existing]);
    let rules_file = setup.dir.join("rules.json");
    std::fs::write(&rules_file, r##"[{"value": "#rustlang", "tag": "rust"}, {"value": "lang:en from:rustlang"}]"##)
        .unwrap();
    let args = ["--rule", "lang:ja #rust", "--rules-file", rules_file.to_str().unwrap(), "--count", "2"];
    let env = [("X_BEARER_TOKEN", TOKEN)];
    let (out, _) = produce(&setup, &standin, &args, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let posts: Vec<serde_json::Value> =
        standin.requests().into_iter().filter(|r| r["method"] == "POST").map(|r| r["body"].clone()).collect();
    assert_eq!(
        posts,
        [
            serde_json::json!({"delete": {"ids": ["1", "2"]}}),
            serde_json::json!({"add": [{"value": "lang:ja #rust"}, {"value": "#rustlang", "tag": "rust"}]}),
        ],
        "delete the unwanted and the retagged, add the missing; keep the one in sync"
    );
    let before = standin.requests().len();
    let (out, _) = produce(&setup, &standin, &args, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let second: Vec<_> =
        standin.requests()[before..].iter().map(|r| r["method"].as_str().unwrap().to_owned()).collect();
    assert_eq!(second, ["GET", "GET"], "in sync: the rules are read, nothing is posted, the stream is opened");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_puts_everything_received_and_exits_zero() {
    let setup = Setup::new("x-sigterm", 2);
    let standin = StandIn::start(&setup.dir, &["--rate", "300"]);
    let port = free_port();
    let log = setup.dir.join("put.log");
    let stderr_log = setup.dir.join("produce.log");
    let mut child = Command::new(BIN)
        .args(["produce", "--stream", &setup.stream, "--source", "x-api-sample", "--x-api-url", &standin.url])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}"), "--put-log"])
        .arg(&log)
        .env("X_BEARER_TOKEN", TOKEN)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(60), "500 tweets put", || async {
        (log.exists() && PutLog::read(&log).0.len() >= 500).then_some(())
    })
    .await;
    let ready = http_status(port, "/readyz").unwrap();
    assert_eq!(ready.0, 200, "connected and putting: {}", ready.1);
    let metrics = http_get(port, "/metrics").unwrap();
    assert!(metrics.contains("stream_worker_producer_put_total"), "{metrics}");
    assert!(metrics.contains("stream_worker_producer_reconnects_total{reason=\"stall\"} 0"), "{metrics}");
    assert_no_token("the metrics", &metrics);

    let status = Command::new("kill").args(["-s", "TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(25), "produce did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let stderr = std::fs::read_to_string(&stderr_log).unwrap();
    assert!(out.success(), "exit 0 after SIGTERM: {out:?}\n{stderr}");
    assert_no_token("the debug-level log", &stderr);
    // received R, put R, …, failed 0
    let received: u64 = stdout.split("received ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
    assert!(stdout.contains(&format!("received {received}, put {received} ")), "{stdout}");
    assert!(stdout.contains("failed 0"), "{stdout}");
    let puts = PutLog::read(&log);
    let put_ids: HashSet<String> = puts.0.iter().map(|p| p.key.clone()).collect();
    assert_eq!((puts.0.len() as u64, put_ids.len() as u64), (received, received), "each received tweet put once");
    let sent: HashSet<String> = standin.sent().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert!(put_ids.is_subset(&sent));
    let in_stream: HashMap<String, usize> =
        stream_keys(&setup.stream).await.into_iter().fold(HashMap::new(), |mut m, k| {
            *m.entry(k).or_default() += 1;
            m
        });
    assert_eq!(in_stream.keys().cloned().collect::<HashSet<_>>(), put_ids);
    assert!(in_stream.values().all(|n| *n == 1));

    let help = Command::new(BIN).args(["produce", "--help"]).env("X_BEARER_TOKEN", TOKEN).output().unwrap();
    assert_no_token("--help", &String::from_utf8_lossy(&help.stdout));
}

/// An error answer as load balancers send it: whole, `connection: close`, the
/// socket closed right after. `framing` is how the body is delimited.
fn closing_answer(status: &str, extra: &str, framing: &str, body: &str) -> Vec<u8> {
    let head = format!("HTTP/1.1 {status}\r\n{extra}connection: close\r\ncontent-type: application/json\r\n");
    let rest = match framing {
        "until-close" => format!("\r\n{body}"),
        "length" => format!("content-length: {}\r\n\r\n{body}", body.len()),
        "chunked" => format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len()),
        _ => "content-length: 0\r\n\r\n".to_owned(),
    };
    (head + &rest).into_bytes()
}

/// A raw-socket stand-in for X: one connection per answer, each answered
/// whole and closed at once (the request's head is read first, and logged
/// with when its connection came).
fn closing_standin(
    answers: Vec<Box<dyn FnOnce() -> Vec<u8> + Send>>,
) -> (String, std::thread::JoinHandle<Vec<(std::time::Instant, String)>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in answers {
            let (mut socket, _) = listener.accept().unwrap();
            let at = std::time::Instant::now();
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
            seen.push((at, line));
            socket.write_all(&answer()).unwrap();
        }
        seen
    });
    (url, served)
}

/// X's rules kept when a server closes right after its error answer: a `429`
/// waits until `x-rate-limit-reset` (plus a second for clock skew), a `503`
/// backs off 5 s then 10 s, a `401` stops with its message, for the rules
/// requests and the stream alike. (Read as "the server closed the connection
/// before answering", each was a network error, retried after 250 ms.)
#[tokio::test(flavor = "multi_thread")]
async fn error_answers_closed_at_once_are_waited_out_as_x_asks() {
    let setup = Setup::new("x-closing", 1);
    let unix = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let detail = r#"{"title":"Service Unavailable","detail":"try later"}"#;
    let answers: Vec<Box<dyn FnOnce() -> Vec<u8> + Send>> = vec![
        Box::new(move || closing_answer("503 Service Unavailable", "", "length", detail)),
        Box::new(|| closing_answer("200 OK", "", "length", r#"{"meta":{"result_count":0}}"#)),
        Box::new(move || {
            closing_answer("429 Too Many Requests", &format!("x-rate-limit-reset: {}\r\n", unix() + 2), "chunked", "{}")
        }),
        // The sync starts over after a wait: the rules are listed again.
        Box::new(|| closing_answer("200 OK", "", "until-close", r#"{"meta":{"result_count":0}}"#)),
        Box::new(|| closing_answer("201 Created", "", "length", r##"{"data":[{"id":"9","value":"#rust"}]}"##)),
        Box::new(move || {
            closing_answer("429 Too Many Requests", &format!("x-rate-limit-reset: {}\r\n", unix() + 3), "", "")
        }),
        Box::new(move || closing_answer("503 Service Unavailable", "", "until-close", detail)),
        Box::new(move || closing_answer("503 Service Unavailable", "", "chunked", detail)),
        Box::new(|| closing_answer("401 Unauthorized", "", "length", r#"{"title":"Unauthorized"}"#)),
    ];
    let (url, served) = closing_standin(answers);
    let out = Command::new(BIN)
        .args(["produce", "--stream", &setup.stream, "--source", "x-api", "--x-api-url", &url, "--rule", "#rust"])
        .env("X_BEARER_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run stream-worker produce");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "the final 401 is fatal\n{stderr}");
    assert!(stderr.contains("401 Unauthorized") && stderr.contains("check X_BEARER_TOKEN"), "{stderr}");
    assert!(!stderr.contains("closed the connection before answering"), "every answer was read: {stderr}");
    assert!(stdout.contains("reconnects: http_error=2, rate_limited=1"), "{stdout}");
    assert_no_token("the log and the error", &stderr);

    let seen = served.join().unwrap();
    let requests: Vec<&str> = seen.iter().map(|(_, line)| line.split('?').next().unwrap()).collect();
    let (rules, stream) = ("/2/tweets/search/stream/rules HTTP/1.1", "GET /2/tweets/search/stream");
    assert_eq!(
        requests,
        [
            format!("GET {rules}"),
            format!("GET {rules}"),
            format!("POST {rules}"),
            format!("GET {rules}"),
            format!("POST {rules}"),
            stream.into(),
            stream.into(),
            stream.into(),
            stream.into()
        ]
    );
    let gap = |i: usize| seen[i].0 - seen[i - 1].0;
    let secs = Duration::from_secs;
    // Lower bounds are X's rules; upper ones only say the wait was that one,
    // with room for a loaded machine.
    for (i, least, what) in [
        (1, secs(5), "the rules listing's 503: 5 s"),
        (3, secs(2), "the rules post's 429: until its reset, 2-3 s"),
        (6, secs(3), "the stream's 429: until its reset, 3-4 s"),
        (7, secs(5), "the stream's first 503: 5 s"),
        (8, secs(10), "the stream's second 503: 10 s"),
    ] {
        assert!(gap(i) >= least && gap(i) < least + secs(3), "{what}, waited {:?}", gap(i));
    }
}

//! Observability: the exposition passes promtool and covers every metric the
//! dashboard and the alert rules query; the alert rules pass their unit tests; a real Prometheus scrapes two workers;
//! /readyz follows DynamoDB while /healthz stays up; logs are structured and
//! never show credentials.

use crate::common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::Proxy;
use common::*;

fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool not found ({e}): install Debian's prometheus package; deploy/local/test.sh does it for you"
            )
        });
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Metric names in PromQL text: `stream_worker_*` and `process_*`, histogram
/// series suffixes folded into their metric.
fn metric_names(promql: &str) -> BTreeSet<String> {
    promql
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("stream_worker_") || t.starts_with("process_"))
        .map(|t| t.strip_suffix("_bucket").unwrap_or(t).to_owned())
        .collect()
}

fn dashboard_and_alert_metrics() -> BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("dashboards/stream-worker.json")).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            names.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    names.extend(metric_names(&dashboard["templating"].to_string()));
    let rules = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).unwrap();
    for line in rules.lines().filter(|l| l.trim_start().starts_with("expr:")) {
        names.extend(metric_names(line));
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exposition_passes_promtool_and_has_every_metric_the_dashboard_and_alerts_use() {
    let setup = Setup::new("exposition", 2);
    let puts = setup.produce(&["--count", "300", "--seed", "61", "--malformed-ratio", "0.05"]);
    let worker = setup.worker("w", &[]);
    let ids = puts.tweet_ids();
    eventually(Duration::from_secs(60), "every tweet written", || async {
        (setup.row_count().await >= ids.len()).then_some(())
    })
    .await;
    let exposition = http_get(worker.metrics_port, "/metrics").unwrap();

    let check = promtool(&["check", "metrics"], Some(&exposition));
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    let wanted = dashboard_and_alert_metrics();
    assert!(wanted.len() >= 20, "{wanted:?}");
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(missing.is_empty(), "queried by the dashboard or the alerts but not exported: {missing:?}");

    let rules = promtool(&["check", "rules", repo().join("dashboards/alerts.yml").to_str().unwrap()], None);
    assert!(rules.status.success(), "promtool check rules:\n{}", String::from_utf8_lossy(&rules.stdout));
}

#[test]
fn each_alert_fires_when_it_should_and_not_on_a_healthy_fleet() {
    // dashboards/alerts.test.yml: promtool's unit tests of the rules, one series
    // that should fire each alert and one that should not.
    let dashboards = repo().join("dashboards");
    let tests = dashboards.join("alerts.test.yml");
    let run = promtool(&["test", "rules", tests.to_str().unwrap()], None);
    let out = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(run.status.success(), "promtool test rules:\n{}", out(&run));

    // The tests can fail: with the lag threshold at 10 minutes instead of one,
    // the lagging shard no longer fires.
    let dir = test_dir(&format!("alerts-{}", std::process::id()));
    let rules = std::fs::read_to_string(dashboards.join("alerts.yml")).unwrap();
    let wrong =
        rules.replace("stream_worker_behind_latest_seconds) > 60", "stream_worker_behind_latest_seconds) > 600");
    assert_ne!(wrong, rules, "the lag rule's threshold moved; update this test");
    std::fs::write(dir.join("alerts.yml"), wrong).unwrap();
    std::fs::copy(&tests, dir.join("alerts.test.yml")).unwrap();
    let run = promtool(&["test", "rules", dir.join("alerts.test.yml").to_str().unwrap()], None);
    assert!(!run.status.success(), "a wrong rule passed:\n{}", out(&run));
    assert!(out(&run).contains("StreamWorkerShardLagging"), "{}", out(&run));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_two_workers() {
    let setup = Setup::new("prometheus", 2);
    let a = setup.worker("a", &[]);
    let b = setup.worker("b", &[]);
    setup.produce(&["--count", "200", "--seed", "62"]);
    let port = free_port();
    let config = setup.dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stream-worker\n    static_configs:\n      - targets: ['127.0.0.1:{}', '127.0.0.1:{}']\n",
            a.metrics_port, b.metrics_port
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", setup.dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(setup.dir.join("prometheus.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "prometheus not found ({e}): install Debian's prometheus package; deploy/local/test.sh does it for you"
            )
        });
    let instances = eventually(Duration::from_secs(60), "samples from both workers", || async {
        let body = http_get(port, "/api/v1/query?query=stream_worker_records_written_total").ok()?;
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        let instances: BTreeSet<String> = answer["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|r| r["metric"]["instance"].as_str().map(str::to_owned))
            .collect();
        (instances.len() == 2).then_some(instances)
    })
    .await;
    prometheus.kill().unwrap();
    prometheus.wait().unwrap();
    let expected: BTreeSet<String> =
        [a.metrics_port, b.metrics_port].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(instances, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_dynamodb_and_healthz_stays_up() {
    let setup = Setup::new("readyz", 1);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let worker = setup.worker_with_env("w", &[], &[("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)]);
    let port = worker.metrics_port;
    let healthcheck = |path: &str| {
        Command::new(BIN).args(["healthcheck", "--url", &format!("http://127.0.0.1:{port}{path}")]).output().unwrap()
    };
    eventually(Duration::from_secs(30), "ready", || async {
        (http_status(port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
    assert!(healthcheck("/readyz").status.success());

    proxy.cut();
    let (_, why) = eventually(Duration::from_secs(15), "not ready while DynamoDB is unreachable", || async {
        let (status, body) = http_status(port, "/readyz").ok()?;
        (status == 503).then_some((status, body))
    })
    .await;
    assert!(why.contains("lease table has not answered"), "{why}");
    assert_eq!(http_status(port, "/healthz").unwrap().0, 200, "the process is alive");
    let failed = healthcheck("/readyz");
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("503"), "{}", String::from_utf8_lossy(&failed.stderr));
    assert!(healthcheck("/healthz").status.success());

    proxy.restore();
    eventually(Duration::from_secs(30), "ready again", || async {
        (http_status(port, "/readyz").ok()?.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_structured_and_never_show_credentials() {
    let setup = Setup::new("logs", 2);
    let secret = "wJalrXUtnFEMI-not-a-real-key-7f3c9e";
    let token = "FwoGZXIvYXdzEXAMPLE-session-token-41b2";
    let mut worker = setup.worker_with_env(
        "logger",
        &["--log-format", "json"],
        &[("AWS_SECRET_ACCESS_KEY", secret), ("AWS_SESSION_TOKEN", token), ("RUST_LOG", "debug")],
    );
    let puts = setup.produce(&["--count", "100", "--seed", "63", "--malformed-ratio", "0.05"]);
    let ids = puts.tweet_ids();
    eventually(Duration::from_secs(60), "every tweet written", || async {
        (setup.row_count().await >= ids.len()).then_some(())
    })
    .await;
    worker.signal("TERM");
    let (status, _) = worker.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    let log = worker.log_text();
    assert!(!log.contains(secret) && !log.contains(token), "a credential was logged");
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let with = |message: &'static str| lines.iter().filter(move |l| l["message"] == message);
    let taken = with("lease taken").next().expect("a 'lease taken' line");
    assert_eq!(taken["level"], "INFO");
    assert_eq!(taken["worker_id"], "logger");
    assert!(taken["shard_id"].as_str().unwrap().starts_with("shardId-"));
    assert!(taken["lease_counter"].as_u64().is_some(), "{taken}");
    let dead = with("dead-lettering record").next().expect("a dead-letter line");
    assert_eq!(dead["level"], "WARN");
    assert!(dead["reason"].is_string() && dead["sequence_number"].is_string(), "{dead}");
    assert_eq!(with("lease released").count(), 2, "both leases released at shutdown");
}

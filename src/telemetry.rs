//! Logs (tracing, text or JSON, filtered by RUST_LOG) and the HTTP endpoints:
//! `/metrics` (Prometheus, with process metrics), `/healthz` (the process and its
//! runtime answer) and `/readyz` (see [`Health`]).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tracing_subscriber::EnvFilter;

use crate::health::Health;

/// Without RUST_LOG: `info`, but for the SDK's region lookup on the instance
/// metadata service, which warns off EC2 (three long lines) before the missing
/// region is reported, with a hint, as an error of its own.
const DEFAULT_FILTER: &str = "info,aws_config::imds::region=error";

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colour only on a terminal (and not with NO_COLOR): a log file or a log
    // collector gets plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// The Lambda's logs: JSON lines with the invocation's span fields
/// (`requestId`), level filter from RUST_LOG (default info).
pub fn init_lambda_logs() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .init();
}

/// Latency buckets, in seconds, for every `_seconds` histogram.
const BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Clone)]
struct Endpoints {
    prometheus: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
    health: Arc<Health>,
}

/// Which process serves the endpoints: it decides which counters start at zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    Worker,
    Producer,
}

/// Installs the metrics recorder and serves the endpoints on `addr`. Fails at
/// once, with a hint, if the address cannot be bound.
pub async fn serve(addr: SocketAddr, health: Arc<Health>, serves: Serves) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot serve metrics on {addr}: {e}\n  hint: replicas on one host need a port each: \
             --metrics-addr 0.0.0.0:9465 (or STREAM_WORKER_METRICS_ADDR), port 0 for any free port, \
             or --metrics-addr none to serve no endpoints"
        )
    })?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving /metrics, /healthz and /readyz");
    let prometheus = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        // Per-shard gauges of shards this worker no longer holds disappear.
        .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(60)))
        .install_recorder()?;
    crate::metrics::describe();
    match serves {
        Serves::Worker => crate::metrics::register_counters(),
        Serves::Producer => crate::metrics::register_producer_counters(),
    }
    let process = Arc::new(metrics_process::Collector::default());
    process.describe();
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Endpoints { prometheus, process, health });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

async fn metrics(State(e): State<Endpoints>) -> String {
    e.process.collect();
    e.prometheus.render()
}

async fn readyz(State(e): State<Endpoints>) -> (StatusCode, String) {
    match e.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

/// `stream-worker healthcheck`: GET `url`; Ok (its body) if it answers 2xx.
pub async fn healthcheck(url: &str) -> anyhow::Result<String> {
    let (status, body) = crate::http::get(url, Duration::from_secs(5)).await.map_err(anyhow::Error::msg)?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(anyhow::anyhow!("{url} answered {status}: {}", body.trim()))
    }
}

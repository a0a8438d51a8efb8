//! Logs (tracing, text or JSON, filtered by RUST_LOG) and the Prometheus exporter.

use std::net::SocketAddr;

use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Serves `GET /metrics` on `addr` and registers every metric's description.
pub fn init_metrics(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new().with_http_listener(addr).install().map_err(|e| {
        anyhow::anyhow!("cannot serve metrics on {addr}: {e}\n  hint: pick a free address with --metrics-addr")
    })?;
    crate::metrics::describe();
    Ok(())
}

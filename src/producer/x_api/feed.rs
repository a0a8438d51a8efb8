//! The loop that reads the stream, reconnects as X asks and hands each tweet over.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::{classify_line, Backoff, Line, LineSplitter, Reconnect, READ_PACE};
use crate::producer::Handoff;

/// Why a connection attempt did not give a stream.
#[derive(Debug)]
pub enum ConnectError {
    Retry {
        reason: Reconnect,
        detail: String,
        reset_in: Option<Duration>,
    },
    /// Reconnecting cannot help (`401`, `403`, a bad request).
    Fatal(String),
}

/// The body of an open stream: chunks as they arrive.
pub type Body = BoxStream<'static, Result<Bytes, String>>;

/// Opens the stream. [`XApi`](super::XApi) over HTTP; scripted in tests.
#[async_trait]
pub trait Connect: Send + Sync {
    async fn connect(&self) -> Result<Body, ConnectError>;
}

/// Limits on what the source hands over.
pub struct Limits {
    pub count: Option<u64>,
    pub deadline: Option<tokio::time::Instant>,
    pub stall_timeout: Duration,
}

/// Reads the stream, reconnecting as X asks, and hands each line that is not a
/// keep-alive or an error object to `tx` until a limit is reached, `stop` is
/// cancelled or X refuses for good. A line is handed over in full or not at
/// all; `tx` applies backpressure (the stream is not read while it is full).
pub async fn feed(
    connector: &dyn Connect,
    handoff: Handoff,
    limits: Limits,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let stats = handoff.stats();
    let mut backoff = Backoff::default();
    let mut unexpected = 0u64;
    let deadline = async {
        match limits.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // Made once: a future per chunk (a timer, a waiter on the token) was a
    // measurable share of the CPU per tweet.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let stall = tokio::time::sleep(limits.stall_timeout);
    tokio::pin!(stall);
    let pace = tokio::time::sleep(READ_PACE);
    tokio::pin!(pace);
    loop {
        let connected = tokio::select! {
            _ = &mut stopped => return Ok(()),
            _ = &mut deadline => return Ok(()),
            c = connector.connect() => c,
        };
        let (reason, detail, reset_in) = match connected {
            Err(ConnectError::Fatal(detail)) => return Err(anyhow::anyhow!(detail)),
            Err(ConnectError::Retry { reason, detail, reset_in }) => (reason, detail, reset_in),
            Ok(mut body) => {
                stats.set_connected(true);
                tracing::info!("connected to the X API stream");
                let mut lines = LineSplitter::default();
                // The stall timer is re-armed only when it fires, from the last
                // data seen, rather than once per chunk.
                let mut last_data = tokio::time::Instant::now();
                stall.as_mut().reset(last_data + limits.stall_timeout);
                // A chunk taken while gathering, not yet handled; and when
                // reading last paused (what is read next may have waited since).
                let mut ready = None;
                let mut paused = None;
                let (reason, detail) = 'read: loop {
                    let chunk = if let Some(chunk) = ready.take() {
                        chunk
                    } else {
                        tokio::select! {
                            biased;
                            c = body.next() => c,
                            _ = &mut stall => {
                                if last_data.elapsed() < limits.stall_timeout {
                                    stall.as_mut().reset(last_data + limits.stall_timeout);
                                    continue;
                                }
                                break 'read (
                                    Reconnect::Stall,
                                    format!("no data and no keep-alive for {:?}", limits.stall_timeout),
                                );
                            }
                            _ = &mut stopped => return Ok(()),
                            _ = &mut deadline => return Ok(()),
                        }
                    };
                    let chunk = match chunk {
                        None => break 'read (Reconnect::Closed, "the server ended the stream".to_owned()),
                        Some(Err(e)) => break 'read (Reconnect::Network, e),
                        Some(Ok(chunk)) => chunk,
                    };
                    last_data = tokio::time::Instant::now();
                    // Waiting at a pause's end: it may have come as the pause began.
                    let since = paused.unwrap_or(last_data);
                    for line in lines.push(&chunk) {
                        backoff.connected();
                        let bytes = line.len();
                        let record = match classify_line(line, || {
                            unexpected += 1;
                            format!("x-api-unexpected-{unexpected}")
                        }) {
                            Line::KeepAlive => continue,
                            Line::Tweet(record) => record,
                            Line::Unexpected(record) => {
                                tracing::warn!(bytes, "a stream line is not a tweet; put as it came");
                                record
                            }
                            Line::Disconnect(errors) => break 'read (Reconnect::OperationalDisconnect, errors),
                            Line::Error(errors) => {
                                tracing::warn!(%errors, "the X API sent an error object");
                                stats.stream_error();
                                continue;
                            }
                        };
                        // Handed over even while stopping: it was received.
                        handoff.send_since(record, last_data, since).await?;
                        if limits.count.is_some_and(|c| stats.received_count() >= c) {
                            return Ok(());
                        }
                    }
                    // Take what the connection has read already; once the socket
                    // is drained, let the stream gather.
                    ready = body.next().now_or_never();
                    if ready.is_none() {
                        let now = tokio::time::Instant::now();
                        paused = Some(now);
                        pace.as_mut().reset(now + READ_PACE);
                        tokio::select! {
                            biased;
                            _ = &mut stopped => return Ok(()),
                            _ = &mut deadline => return Ok(()),
                            _ = &mut pace => {}
                        }
                        // Nothing came in the pause: what comes next is read as it comes.
                        ready = body.next().now_or_never();
                        if ready.is_none() {
                            paused = None;
                        }
                    }
                };
                stats.set_connected(false);
                if lines.pending() > 0 {
                    tracing::debug!(bytes = lines.pending(), "an incomplete line was cut off by the reconnect");
                }
                (reason, detail, None)
            }
        };
        let delay = backoff.next(reason, reset_in);
        stats.reconnect(reason);
        tracing::warn!(reason = reason.label(), %detail, delay_ms = delay.as_millis() as u64, "reconnecting to the X API");
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            _ = &mut deadline => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

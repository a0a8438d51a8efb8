//! X's reconnect schedule: linear after network errors, exponential after
//! HTTP errors, until the reset after a `429`.

use std::collections::BTreeMap;
use std::time::Duration;

const NETWORK_STEP: Duration = Duration::from_millis(250);
const NETWORK_CAP: Duration = Duration::from_secs(16);
const HTTP_BASE: Duration = Duration::from_secs(5);
const HTTP_CAP: Duration = Duration::from_secs(320);
/// A `429` without a usable `x-rate-limit-reset`: X's documented start, doubling.
const RATE_LIMIT_BASE: Duration = Duration::from_secs(60);
const RATE_LIMIT_CAP: Duration = Duration::from_secs(15 * 60);

/// Why the producer reconnects; the label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reconnect {
    /// Connecting or reading failed at the TCP/TLS level.
    Network,
    /// No data and no keep-alive within the stall timeout.
    Stall,
    /// The server ended the response.
    Closed,
    /// An `operational-disconnect` error object.
    OperationalDisconnect,
    /// A retryable HTTP status (5xx and the like).
    HttpError,
    /// `429 Too Many Requests`.
    RateLimited,
}

impl Reconnect {
    pub const ALL: [Self; 6] =
        [Self::Network, Self::Stall, Self::Closed, Self::OperationalDisconnect, Self::HttpError, Self::RateLimited];

    pub fn label(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Stall => "stall",
            Self::Closed => "closed",
            Self::OperationalDisconnect => "operational_disconnect",
            Self::HttpError => "http_error",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Registers the reconnect counter of every reason at zero.
pub fn register_metrics() {
    for reason in Reconnect::ALL {
        metrics::counter!(crate::metrics::PRODUCER_RECONNECTS, "reason" => reason.label()).absolute(0);
    }
}

/// X's reconnect schedule. Attempts count up per kind until a connection
/// delivers a line again.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    network: u32,
    http: u32,
    rate_limited: u32,
}

impl Backoff {
    /// The wait before the next connection attempt. `reset_in` is what a `429`'s
    /// `x-rate-limit-reset` leaves to wait.
    pub fn next(&mut self, reason: Reconnect, reset_in: Option<Duration>) -> Duration {
        match reason {
            Reconnect::Network | Reconnect::Stall | Reconnect::Closed | Reconnect::OperationalDisconnect => {
                self.network += 1;
                NETWORK_STEP.saturating_mul(self.network).min(NETWORK_CAP)
            }
            Reconnect::HttpError => {
                self.http += 1;
                exponential(HTTP_BASE, self.http, HTTP_CAP)
            }
            Reconnect::RateLimited => {
                self.rate_limited += 1;
                reset_in.unwrap_or_else(|| exponential(RATE_LIMIT_BASE, self.rate_limited, RATE_LIMIT_CAP))
            }
        }
    }

    /// A connection delivered data or a keep-alive: start the schedule over.
    pub fn connected(&mut self) {
        *self = Self::default();
    }
}

fn exponential(base: Duration, attempt: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX)).min(cap)
}

/// The wait a `429` asks for: until `x-rate-limit-reset` (Unix seconds), plus a
/// second for clock skew; `None` when the header is absent or unreadable.
pub fn reset_wait(header: Option<&str>, now_unix: u64) -> Option<Duration> {
    let reset: u64 = header?.trim().parse().ok()?;
    Some(Duration::from_secs(reset.saturating_sub(now_unix) + 1).min(RATE_LIMIT_CAP))
}

/// Reconnects by reason, for the summary.
pub fn reconnect_counts(counts: &BTreeMap<Reconnect, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts.iter().map(|(r, n)| format!("{}={n}", r.label())).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_follow_x_documented_schedule() {
        let mut b = Backoff::default();
        let network: Vec<_> = (0..70).map(|_| b.next(Reconnect::Network, None).as_millis()).collect();
        assert_eq!(&network[..4], &[250, 500, 750, 1000]);
        assert_eq!(network[63], 16_000);
        assert_eq!(network[69], 16_000);
        let mut b = Backoff::default();
        let http: Vec<_> = (0..9).map(|_| b.next(Reconnect::HttpError, None).as_secs()).collect();
        assert_eq!(http, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
        assert_eq!(b.next(Reconnect::Stall, None), Duration::from_millis(250), "kinds count separately");
        b.connected();
        assert_eq!(b.next(Reconnect::HttpError, None), Duration::from_secs(5), "data starts the schedule over");
        let mut b = Backoff::default();
        assert_eq!(b.next(Reconnect::RateLimited, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(b.next(Reconnect::RateLimited, None), Duration::from_secs(120));
    }

    #[test]
    fn a_429_waits_until_its_reset_time() {
        assert_eq!(reset_wait(Some("1000"), 990), Some(Duration::from_secs(11)));
        assert_eq!(reset_wait(Some("1000"), 1005), Some(Duration::from_secs(1)), "already past: a second");
        assert_eq!(reset_wait(Some("soon"), 990), None);
        assert_eq!(reset_wait(None, 990), None);
        assert_eq!(reset_wait(Some("99999999"), 0), Some(RATE_LIMIT_CAP));
    }
}

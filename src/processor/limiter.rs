//! The process-wide write rate limit: one governor limiter shared by every shard.
//!
//! It runs on a clock read from `tokio::time`, so tests measure it under paused
//! time instead of waiting.

use std::num::NonZeroU32;
use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A `tokio::time::Instant` as governor's clock reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(tokio::time::Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;
    fn add(self, rhs: Nanos) -> Self {
        Self(self.0 + Duration::from(rhs))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(Duration::from(duration)).unwrap_or(self.0))
    }
}

/// governor's clock on `tokio::time`: [`TokioInstant`]s of
/// `tokio::time::Instant::now()`, so that paused test time drives the limiter.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(tokio::time::Instant::now())
    }
}

/// Items per second for every writer of the process together.
#[derive(Debug)]
pub struct WriteLimiter {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>,
    burst: NonZeroU32,
}

impl WriteLimiter {
    /// `per_second` items per second, with a burst of one second's worth.
    pub fn new(per_second: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second);
        Self { limiter: RateLimiter::direct_with_clock(quota, TokioClock), burst: per_second }
    }

    /// Uses up the burst: the limiter then starts at its rate, with nothing saved
    /// up (for a limiter that replaces another one).
    pub fn drained(self) -> Self {
        let _ = self.limiter.check_n(self.burst);
        self
    }

    /// The most items one call to [`acquire`](Self::acquire) may ask for.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Waits until `items` (clamped to the burst) may be written; returns how long it waited.
    pub async fn acquire(&self, items: u32) -> Duration {
        let start = tokio::time::Instant::now();
        while let Err(wait) = self.try_acquire(items) {
            tokio::time::sleep(wait).await;
        }
        start.elapsed()
    }

    /// Takes `items` (clamped to the burst) if they may be written now;
    /// otherwise says how long until they may.
    pub fn try_acquire(&self, items: u32) -> Result<(), Duration> {
        let Some(n) = NonZeroU32::new(items.min(self.burst.get())) else {
            return Ok(());
        };
        match self.limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(TokioClock.now())),
            Err(_) => unreachable!("items are clamped to the burst"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_across_callers() {
        let limiter = std::sync::Arc::new(WriteLimiter::new(NonZeroU32::new(100).unwrap()));
        let start = tokio::time::Instant::now();
        // 4 callers x 10 chunks x 25 items = 1,000 items at 100/s: the first
        // second's burst is free, the other 900 items take 9 s.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        limiter.acquire(25).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(8_990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(9_100), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_above_the_burst_are_clamped() {
        let limiter = WriteLimiter::new(NonZeroU32::new(10).unwrap());
        assert_eq!(limiter.burst(), 10);
        assert_eq!(limiter.acquire(25).await, Duration::ZERO);
        let waited = limiter.acquire(5).await;
        assert!(waited >= Duration::from_millis(490) && waited <= Duration::from_millis(510), "{waited:?}");
    }
}

//! Exponential backoff with full jitter.
//!
//! The delay before retry `attempt` (0-based) is uniform in
//! `[0, min(cap, base * 2^attempt)]`: retries spread out instead of arriving in
//! waves. Sleeps go through `tokio::time`, so tests drive them with paused time.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter (see the module docs): the delay before
/// retry `attempt` is uniform in `[0, min(cap, base * 2^attempt)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay ceiling of the first retry (attempt 0); it doubles with each
    /// attempt.
    pub base: Duration,
    /// The largest delay ceiling, whatever the attempt.
    pub cap: Duration,
}

impl Backoff {
    /// A backoff that starts at `base` and doubles per attempt up to `cap`; a
    /// `const fn`, so a caller can keep it in a `const`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The upper bound of the delay before retry `attempt`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        Duration::from_nanos(rng.gen_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64))
    }

    /// Sleeps (on `tokio::time`) for a [`delay`](Self::delay) before retry
    /// `attempt`, drawn with the thread's random number generator.
    pub async fn sleep(&self, attempt: u32) {
        let delay = self.delay(attempt, &mut rand::thread_rng());
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        assert_eq!(b.ceiling(0), Duration::from_millis(50));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(6), Duration::from_millis(3200));
        assert_eq!(b.ceiling(7), Duration::from_secs(5));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn delays_stay_within_bounds_and_are_spread() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let delays: Vec<_> = (0..200).map(|_| b.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= b.ceiling(attempt)));
            // Full jitter: both the lower and the upper half of the range are used.
            let half = b.ceiling(attempt) / 2;
            assert!(delays.iter().any(|d| *d < half) && delays.iter().any(|d| *d > half), "attempt {attempt}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_waits_at_most_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        b.sleep(3).await;
        assert!(start.elapsed() <= Duration::from_millis(800));
    }
}

//! The adaptive write rate of one table: as fast as DynamoDB takes, slower when
//! it throttles.
//!
//! The rate is counted in write capacity units (an item's size rounded up to
//! 1 KB), which is what a table's capacity and its throttling are counted in.
//! Until the table first pushes back there is no limit (as in the AWS SDKs'
//! adaptive retry mode) but the optional ceiling (`--max-write-rate`). A
//! throttling signal (a throttled call, `UnprocessedItems`) cuts the rate to
//! [`DECREASE`] of what was being sent, at most once per [`STEP`], and only
//! for a call sent after the last cut: calls already in flight report the
//! same overload again (TCP's one cut per window). Each [`STEP`] without a
//! signal raises it by a tenth (at least [`MIN_RAISE`] units/s), up to the
//! ceiling. `governor` is the mechanism: its quota is fixed, so a change swaps
//! in a new limiter, drained so that no burst is granted by the change.
//!
//! The ceiling is the lower of two: `--max-write-rate`, and this process's
//! share of the table's own limit (a provisioned table's write capacity, or an
//! on-demand table's maximum) among the live workers of the fleet, so that a
//! fleet sharing a provisioned table starts under its capacity instead of
//! finding it by throttling, and survivors of a lost worker take up its share.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::limiter::WriteLimiter;
use crate::metrics as m;

/// The share of the sending rate kept after a throttling signal (the AWS SDKs'
/// and CUBIC's beta).
pub const DECREASE: f64 = 0.7;
/// How often the rate may change.
pub const STEP: Duration = Duration::from_secs(1);
/// The least raise per step, in units per second.
pub const MIN_RAISE: u32 = 10;
/// The rate never goes below this many units per second.
pub const FLOOR: u32 = 5;

/// This process's ceiling: the lower of the configured one and an even share of
/// the table's capacity among `workers` (never below [`FLOOR`]).
pub fn ceiling(configured: Option<NonZeroU32>, capacity: Option<u32>, workers: usize) -> Option<NonZeroU32> {
    let share = capacity.and_then(|c| NonZeroU32::new((c / workers.max(1) as u32).max(FLOOR)));
    match (configured, share) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The adaptive write rate of one table, in write capacity units per second,
/// shared by every shard of the process (see the module docs). A writer calls
/// [`AdaptiveRate::acquire`] before each write and reports the outcome with
/// [`AdaptiveRate::succeeded`] or [`AdaptiveRate::throttled`]. Its limit and
/// ceiling are exported as the `WRITE_RATE_LIMIT` and `WRITE_RATE_CEILING`
/// gauges, labelled with the table.
pub struct AdaptiveRate {
    table: String,
    /// `--max-write-rate`.
    configured: Option<NonZeroU32>,
    /// Both set at every acquire too, so that the exporter never drops them as idle.
    gauge: metrics::Gauge,
    ceiling_gauge: metrics::Gauge,
    cuts: metrics::Counter,
    limiter: RwLock<Option<Arc<WriteLimiter>>>,
    /// The callers that must wait, in order: only the first sleeps on the limiter.
    queue: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The limiter's rate; `None` while nothing limits but the ceiling.
    rate: Option<u32>,
    /// The table's own write limit, and the live workers sharing it.
    capacity: Option<u32>,
    workers: usize,
    ceiling: Option<NonZeroU32>,
    last_change: Instant,
    /// The last cut, and the last throttling signal (cut or not).
    last_cut: Option<Instant>,
    last_signal: Option<Instant>,
    /// Units acquired since `window_start`, and the rate of the last window.
    window_start: Instant,
    window_units: u64,
    sent_rate: f64,
}

impl AdaptiveRate {
    /// Starts at the ceiling, or unlimited without one.
    pub fn new(table: &str, ceiling: Option<NonZeroU32>) -> Self {
        let now = Instant::now();
        let rate = Self {
            table: table.to_owned(),
            configured: ceiling,
            gauge: metrics::gauge!(m::WRITE_RATE_LIMIT, "table" => table.to_owned()),
            ceiling_gauge: metrics::gauge!(m::WRITE_RATE_CEILING, "table" => table.to_owned()),
            cuts: metrics::counter!(m::WRITE_RATE_CUTS, "table" => table.to_owned()),
            limiter: RwLock::new(None),
            queue: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                rate: None,
                capacity: None,
                workers: 1,
                ceiling,
                last_change: now,
                last_cut: None,
                last_signal: None,
                window_start: now,
                window_units: 0,
                sent_rate: 0.0,
            }),
        };
        let limiter = ceiling.map(|c| Arc::new(WriteLimiter::new(c)));
        *rate.limiter.write().unwrap() = limiter;
        rate.state.lock().unwrap().rate = ceiling.map(NonZeroU32::get);
        rate.gauge.set(f64::from(ceiling.map_or(0, NonZeroU32::get)));
        rate.ceiling_gauge.set(f64::from(ceiling.map_or(0, NonZeroU32::get)));
        rate
    }

    /// The ceiling in units per second; `None` when there is none.
    pub fn ceiling(&self) -> Option<u32> {
        self.state.lock().unwrap().ceiling.map(NonZeroU32::get)
    }

    /// The table's own write limit changed (read from DescribeTable).
    pub fn set_capacity(&self, capacity: Option<u32>) {
        self.update_ceiling(|state| state.capacity = capacity);
    }

    /// The number of live workers sharing the table changed.
    pub fn set_workers(&self, workers: usize) {
        self.update_ceiling(|state| state.workers = workers.max(1));
    }

    /// A lower ceiling applies at once; a higher one is reached by the raises
    /// of quiet steps, so that a fleet's survivors take up a lost worker's
    /// share without a burst.
    fn update_ceiling(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state);
        let ceiling = ceiling(self.configured, state.capacity, state.workers);
        // Set at each call (every take round), so that an idle worker shows it too.
        self.ceiling_gauge.set(f64::from(ceiling.map_or(0, NonZeroU32::get)));
        if ceiling == state.ceiling {
            return;
        }
        tracing::info!(table = %self.table, capacity = ?state.capacity, workers = state.workers,
            ceiling = ceiling.map_or(0, NonZeroU32::get), "write rate ceiling changed");
        state.ceiling = ceiling;
        if let Some(c) = ceiling {
            if state.rate.is_none_or(|r| r > c.get()) {
                self.set(&mut state, Some(c.get()));
            }
        }
    }

    /// The current limit in units per second; `None` when there is none.
    pub fn rate(&self) -> Option<u32> {
        self.state.lock().unwrap().rate
    }

    /// A second's worth of the current rate: callers keep their calls under it
    /// (a bigger one is paid for in several waits).
    pub fn burst(&self) -> u32 {
        self.limiter.read().unwrap().as_ref().map_or(u32::MAX, |l| l.burst())
    }

    /// Waits until `units` may be written; returns how long it waited.
    pub async fn acquire(&self, units: u32) -> Duration {
        {
            let mut state = self.state.lock().unwrap();
            let now = Instant::now();
            let elapsed = now.duration_since(state.window_start);
            if elapsed >= STEP {
                state.sent_rate = state.window_units as f64 / elapsed.as_secs_f64();
                state.window_start = now;
                state.window_units = 0;
            }
            state.window_units += u64::from(units);
            self.gauge.set(f64::from(state.rate.unwrap_or(0)));
            self.ceiling_gauge.set(f64::from(state.ceiling.map_or(0, NonZeroU32::get)));
        }
        // The limiter is read again after each wait: a change replaces it, and
        // a caller left waiting on the old one would go on at the old rate. A
        // call worth more than a second's burst pays for it in bursts.
        //
        // A caller that must wait first queues for its turn (tokio's mutex is
        // fair): every shard's writers sleeping on the limiter at once would all
        // wake at the same instant, one to be served and the others to sleep
        // again, which costs a capped worker more CPU per record than an
        // uncapped one.
        let start = Instant::now();
        let mut remaining = units;
        let mut turn = None;
        loop {
            let Some(limiter) = self.limiter.read().unwrap().clone() else { return start.elapsed() };
            let take = remaining.min(limiter.burst());
            match limiter.try_acquire(take) {
                Ok(()) if take == remaining => return start.elapsed(),
                Ok(()) => remaining -= take,
                Err(_) if turn.is_none() => turn = Some(self.queue.lock().await),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// DynamoDB pushed back on a call sent at `sent_at`: cut the rate, once per
    /// step and only for calls sent since the last cut.
    pub fn throttled(&self, sent_at: Instant) {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        state.last_signal = Some(now);
        if state.last_cut.is_some_and(|cut| sent_at < cut || now.duration_since(cut) < STEP) {
            return;
        }
        state.last_cut = Some(now);
        // What was being sent: the last window's rate (or this window's so far,
        // if it is the first), never more than the limit.
        let so_far = now.duration_since(state.window_start).as_secs_f64();
        let current = if so_far > 0.0 { state.window_units as f64 / so_far.max(0.1) } else { 0.0 };
        let sent = state.sent_rate.max(current);
        let sending = match state.rate {
            Some(rate) if sent > 0.0 => sent.min(f64::from(rate)),
            Some(rate) => f64::from(rate),
            None => sent,
        };
        let cut = ((sending * DECREASE).round() as u32).max(FLOOR);
        let cut = state.ceiling.map_or(cut, |c| cut.min(c.get()));
        self.cuts.increment(1);
        tracing::info!(table = %self.table, from = sending as u64, to = cut, "throttled: write rate cut");
        self.set(&mut state, Some(cut));
    }

    /// A call went through whole: raise the rate, once per step, and only after
    /// a step without any throttling signal.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap();
        let Some(rate) = state.rate else { return };
        let now = Instant::now();
        let quiet = |since: Option<Instant>| since.is_none_or(|t| now.duration_since(t) >= STEP);
        if !quiet(Some(state.last_change)) || !quiet(state.last_signal) {
            return;
        }
        let raised = rate.saturating_add((rate / 10).max(MIN_RAISE));
        let next = Some(state.ceiling.map_or(raised, |ceiling| raised.min(ceiling.get())));
        if next != state.rate {
            self.set(&mut state, next);
        } else {
            state.last_change = Instant::now();
        }
    }

    fn set(&self, state: &mut State, rate: Option<u32>) {
        state.rate = rate;
        state.last_change = Instant::now();
        // A fresh limiter would grant a second's burst at every change: it
        // starts drained, so that the rate holds across changes.
        let limiter = rate.and_then(NonZeroU32::new).map(|r| Arc::new(WriteLimiter::new(r).drained()));
        *self.limiter.write().unwrap() = limiter;
        self.gauge.set(f64::from(rate.unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Duration {
        STEP + Duration::from_millis(1)
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_ceiling_nothing_limits_until_the_table_pushes_back() {
        let rate = AdaptiveRate::new("t", None);
        assert_eq!(rate.rate(), None);
        assert_eq!(rate.burst(), u32::MAX);
        let start = Instant::now();
        for _ in 0..100 {
            rate.acquire(25).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_signal_cuts_to_seven_tenths_of_what_was_sent_once_per_step() {
        let rate = AdaptiveRate::new("t", None);
        // 2,000 units over two seconds: 1,000 units/s sent.
        for _ in 0..20 {
            rate.acquire(100).await;
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        rate.acquire(0).await;
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(700));
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(700), "one cut per step");
        tokio::time::advance(step()).await;
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(490));
        for _ in 0..100 {
            tokio::time::advance(step()).await;
            rate.throttled(Instant::now());
        }
        assert_eq!(rate.rate(), Some(FLOOR));
    }

    #[tokio::test(start_paused = true)]
    async fn successes_do_not_outrun_throttling() {
        let rate = AdaptiveRate::new("t", NonZeroU32::new(1000));
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(700));
        // A success and a signal every step: up a tenth, down three tenths.
        for _ in 0..3 {
            tokio::time::advance(step()).await;
            rate.succeeded();
            rate.succeeded();
            rate.throttled(Instant::now());
            rate.throttled(Instant::now());
        }
        assert_eq!(rate.rate(), Some(319), "700 → 770 → 539 → 592 → 414 → 455 → 319");
        // A signal within the cooldown cuts nothing but still holds raises back.
        tokio::time::advance(Duration::from_millis(500)).await;
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(319));
        tokio::time::advance(Duration::from_millis(600)).await;
        rate.succeeded();
        assert_eq!(rate.rate(), Some(319));
        tokio::time::advance(Duration::from_millis(500)).await;
        rate.succeeded();
        assert_eq!(rate.rate(), Some(350));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_sent_before_the_last_cut_does_not_cut_again() {
        let rate = AdaptiveRate::new("t", NonZeroU32::new(1000));
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(700));
        tokio::time::advance(step() * 3).await;
        rate.throttled(before);
        assert_eq!(rate.rate(), Some(700), "in flight during the cut: the same overload");
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(490));
    }

    #[tokio::test(start_paused = true)]
    async fn success_raises_by_a_tenth_per_step_up_to_the_ceiling() {
        let rate = AdaptiveRate::new("t", NonZeroU32::new(1000));
        assert_eq!(rate.rate(), Some(1000));
        tokio::time::advance(step()).await;
        rate.throttled(Instant::now());
        assert_eq!(rate.rate(), Some(700));
        rate.succeeded();
        assert_eq!(rate.rate(), Some(700), "not within the step of the cut");
        tokio::time::advance(step()).await;
        rate.succeeded();
        assert_eq!(rate.rate(), Some(770));
        rate.succeeded();
        assert_eq!(rate.rate(), Some(770), "once per step");
        for _ in 0..10 {
            tokio::time::advance(step()).await;
            rate.succeeded();
        }
        assert_eq!(rate.rate(), Some(1000), "never above the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn the_limit_holds_the_rate_and_keeps_rising_while_writes_go_through() {
        let rate = AdaptiveRate::new("t", None);
        rate.acquire(50).await;
        tokio::time::advance(step()).await;
        rate.throttled(Instant::now());
        let limit = rate.rate().unwrap();
        assert_eq!(limit, FLOOR.max((50.0 / step().as_secs_f64() * DECREASE).round() as u32));
        assert_eq!(rate.burst(), limit);
        // The limit is a real limit, with no burst saved up by the change: ten
        // seconds' worth take ten seconds.
        let start = Instant::now();
        for _ in 0..10 {
            rate.acquire(limit).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(9_990) && took <= Duration::from_millis(10_010), "{took:?}");
        for _ in 0..30 {
            tokio::time::advance(step()).await;
            rate.acquire(1).await;
            rate.succeeded();
        }
        assert!(rate.rate().unwrap() > 10 * limit, "{:?}", rate.rate());
    }

    #[test]
    fn the_ceiling_is_the_lower_of_the_flag_and_the_share_of_the_capacity() {
        let n = NonZeroU32::new;
        assert_eq!(ceiling(None, None, 3), None, "on demand, no flag: nothing but throttling");
        assert_eq!(ceiling(n(500), None, 3), n(500));
        assert_eq!(ceiling(None, Some(600), 3), n(200));
        assert_eq!(ceiling(n(150), Some(600), 3), n(150));
        assert_eq!(ceiling(None, Some(600), 0), n(600), "no workers seen yet: this one");
        assert_eq!(ceiling(None, Some(10), 100), n(FLOOR), "never below the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_shares_the_capacity_and_survivors_rise_to_their_new_share() {
        let rate = AdaptiveRate::new("t", None);
        rate.set_capacity(Some(600));
        assert_eq!((rate.rate(), rate.ceiling()), (Some(600), Some(600)), "alone: the whole table");
        rate.set_workers(3);
        assert_eq!((rate.rate(), rate.ceiling()), (Some(200), Some(200)), "a lower ceiling applies at once");
        // A worker dies: the share rises, and the rate follows a tenth per quiet step.
        rate.set_workers(2);
        assert_eq!((rate.rate(), rate.ceiling()), (Some(200), Some(300)));
        let mut seen = vec![];
        for _ in 0..6 {
            tokio::time::advance(step()).await;
            rate.succeeded();
            seen.push(rate.rate().unwrap());
        }
        assert_eq!(seen, [220, 242, 266, 292, 300, 300]);
        // A throttle still cuts below the share.
        rate.acquire(300).await;
        rate.throttled(Instant::now());
        assert!(rate.rate().unwrap() < 300);
        // The table becomes on demand: nothing but throttling limits from there.
        rate.set_capacity(None);
        assert_eq!(rate.ceiling(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_applies_to_callers_already_waiting_and_big_calls_pay_in_full() {
        // Eight callers of 25 units each; the rate drops from 100 to 10 while
        // they wait. Each must then pay at 10 units/s, not at the old rate, and
        // not only the 10 units of one burst.
        let rate = std::sync::Arc::new(AdaptiveRate::new("t", NonZeroU32::new(100)));
        rate.acquire(100).await;
        let granted = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (rate, granted) = (rate.clone(), granted.clone());
                tokio::spawn(async move {
                    loop {
                        rate.acquire(25).await;
                        granted.fetch_add(25, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        tokio::time::advance(Duration::from_millis(10)).await;
        rate.set_capacity(Some(10));
        let at_change = granted.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = granted.load(std::sync::atomic::Ordering::SeqCst) - at_change;
        for c in callers {
            c.abort();
        }
        assert!(after <= 10 * 10 + 25, "{after} units granted in 10 s at 10 units/s");
        assert!(after >= 10 * 10 - 25, "{after} units granted in 10 s at 10 units/s");
    }

    #[tokio::test(start_paused = true)]
    async fn callers_that_wait_are_served_in_the_order_they_came() {
        // At 100 units/s with the burst spent: a call of 50 units waits 0.5 s, one
        // of 25 that comes after it 0.25 s more. Each waiter sleeping on its own
        // would serve the smaller one first, and a big call could starve behind
        // a stream of small ones.
        let rate = std::sync::Arc::new(AdaptiveRate::new("t", NonZeroU32::new(100)));
        rate.acquire(100).await;
        let start = Instant::now();
        let (done, mut order) = tokio::sync::mpsc::unbounded_channel();
        for (name, units) in [("big", 50), ("small", 25)] {
            let (rate, done) = (rate.clone(), done.clone());
            tokio::spawn(async move {
                rate.acquire(units).await;
                done.send((name, start.elapsed())).unwrap();
            });
            tokio::task::yield_now().await;
        }
        let (first, at) = order.recv().await.unwrap();
        assert_eq!(first, "big");
        assert!(at >= Duration::from_millis(490) && at <= Duration::from_millis(510), "{at:?}");
        let (second, at) = order.recv().await.unwrap();
        assert_eq!(second, "small");
        assert!(at >= Duration::from_millis(740) && at <= Duration::from_millis(760), "{at:?}");
    }
}

//! [`ShardReader`] by enhanced fan-out: one SubscribeToShard subscription at a
//! time per shard, for the stream consumer the worker registered.
//!
//! Events are taken one at a time, when the consumer asks for the next read, so
//! that the transport's flow control (HTTP/2 windows) holds the service back
//! while a batch is written. A subscription is replaced when the service ends
//! it (after five minutes on AWS), when it is idle for too long, or on an
//! error; the next one continues after the last event's continuation sequence
//! number, so nothing is skipped. The subscription goes with the reader: the
//! moment the lease is lost, the consumer drops both.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::time::Instant;

use super::{ClosedShards, Read, ShardReader, StartAt, StreamClient, Subscriber, Subscription};
use crate::aws::ErrorClass;
use crate::metrics as m;
use crate::retry::Backoff;

/// When a fan-out reader replaces its subscription, and when it checks a closed
/// shard's end. [`Default`]: a 30 s idle timeout, no lifetime of its own, a 5 s
/// closed-shard check.
#[derive(Debug, Clone)]
pub struct FanOutConfig {
    /// A subscription that delivers no event for this long is replaced (AWS
    /// sends one at least every 5 s).
    pub idle_timeout: Duration,
    /// Replace each subscription after this long, before the service ends it
    /// (AWS: after 5 minutes); `None`: when the service ends it.
    pub subscription_lifetime: Option<Duration>,
    /// How long a subscription to a shard that ListShards reports closed may
    /// deliver no record before one GetRecords call checks for its end.
    pub closed_idle_check: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30),
            subscription_lifetime: None,
            closed_idle_check: Duration::from_secs(5),
        }
    }
}

/// SubscribeToShard refused (another subscription is live, throttled) or failed.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// The enhanced fan-out [`ShardReader`]: one SubscribeToShard subscription at a
/// time, replaced when it ends, idles or fails (see the module docs).
pub struct FanOutReader {
    subscriber: Arc<dyn Subscriber>,
    stream: Arc<dyn StreamClient>,
    closed: Arc<ClosedShards>,
    shard_id: String,
    /// Where the next subscription starts: the start, then after the last
    /// event's continuation.
    position: StartAt,
    subscription: Option<(Box<dyn Subscription>, Instant)>,
    attempt: u32,
    /// Since when the subscription has delivered no record.
    idle_since: Instant,
    /// The next read, received by `ready`.
    pending: Option<Read>,
    config: FanOutConfig,
}

impl FanOutReader {
    /// A reader of `shard_id` from `start`, through `subscriber`. `stream` and
    /// `closed` serve only the GetRecords check at the end of a closed shard whose
    /// subscription never says so. Nothing is called until the first read.
    pub fn new(
        subscriber: Arc<dyn Subscriber>,
        stream: Arc<dyn StreamClient>,
        closed: Arc<ClosedShards>,
        shard_id: &str,
        start: StartAt,
        config: FanOutConfig,
    ) -> Self {
        Self {
            subscriber,
            stream,
            closed,
            shard_id: shard_id.to_owned(),
            position: start,
            subscription: None,
            attempt: 0,
            idle_since: Instant::now(),
            pending: None,
            config,
        }
    }

    fn resubscribe(&mut self, reason: &'static str) {
        self.subscription = None;
        metrics::counter!(m::FAN_OUT_RESUBSCRIPTIONS, "reason" => reason).increment(1);
        tracing::debug!(shard_id = %self.shard_id, reason, from = ?self.position, "resubscribing");
    }

    async fn back_off(&mut self) {
        let delay = BACKOFF.delay(self.attempt, &mut rand::thread_rng());
        tokio::time::sleep(delay).await;
        self.attempt = self.attempt.saturating_add(1);
    }

    /// One GetRecords call from the subscription's position: the end of a
    /// closed shard whose subscription never says so, with any record the
    /// subscription had not delivered. `None`: not at the end.
    async fn confirm_end(&mut self) -> Option<Read> {
        let shard_id = &self.shard_id;
        let it = self.stream.shard_iterator(shard_id, &self.position).await.ok()?;
        metrics::counter!(m::GET_RECORDS_CALLS).increment(1);
        let batch = self.stream.get_records(&it, 10_000).await.ok()?;
        if batch.next_iterator.is_some() {
            return None;
        }
        tracing::info!(shard_id, records = batch.records.len(), "closed shard's end confirmed with GetRecords");
        Some(Read {
            records: batch.records,
            millis_behind_latest: batch.millis_behind_latest,
            end: Some(batch.child_shards),
        })
    }
}

#[async_trait]
impl ShardReader for FanOutReader {
    /// Waits for the next event here, before the consumer reserves memory for
    /// it: a shard idle between events holds none of the budget.
    async fn ready(&mut self) {
        if self.pending.is_none() {
            self.pending = Some(self.next_read().await);
        }
    }

    async fn read(&mut self) -> Read {
        self.ready().await;
        self.pending.take().expect("ready() leaves a read")
    }

    /// A subscription continues from its events' continuation, which the
    /// consumer has processed before it reads again.
    fn processed(&mut self, _at: StartAt) {}
}

impl FanOutReader {
    async fn next_read(&mut self) -> Read {
        loop {
            let Some((subscription, started)) = self.subscription.as_mut() else {
                match self.subscriber.subscribe(&self.shard_id, &self.position).await {
                    Ok(subscription) => {
                        metrics::counter!(m::FAN_OUT_SUBSCRIPTIONS).increment(1);
                        self.subscription = Some((subscription, Instant::now()));
                    }
                    Err(e) if e.class == ErrorClass::NotFound => {
                        tracing::warn!(shard_id = %self.shard_id, error = %e.message, "shard not found; treating it as ended");
                        return Read { end: Some(Vec::new()), ..Read::default() };
                    }
                    Err(e) => {
                        let reason = match e.class {
                            ErrorClass::InUse => "in-use",
                            ErrorClass::Throttled => "throttled",
                            _ => "error",
                        };
                        metrics::counter!(m::FAN_OUT_SUBSCRIBE_FAILURES, "reason" => reason).increment(1);
                        tracing::warn!(shard_id = %self.shard_id, reason, attempt = self.attempt, error = %e.message,
                            "SubscribeToShard refused, retrying");
                        self.back_off().await;
                    }
                }
                continue;
            };
            let lifetime_end = self.config.subscription_lifetime.map(|lifetime| *started + lifetime);
            let ended = async move {
                match lifetime_end {
                    Some(end) => tokio::time::sleep_until(end).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = tokio::time::timeout(self.config.idle_timeout, subscription.next_event()) => Some(next),
                _ = ended => None,
            };
            let Some(next) = next else {
                self.resubscribe("lifetime");
                continue;
            };
            let event = match next {
                Err(_) => {
                    tracing::warn!(shard_id = %self.shard_id, idle = ?self.config.idle_timeout,
                        "subscription delivered no event; resubscribing");
                    self.resubscribe("idle");
                    continue;
                }
                Ok(Ok(None)) => {
                    self.resubscribe("ended");
                    continue;
                }
                // Kinesis refuses a second subscription in the stream itself: the
                // previous owner's may outlive its lease for a moment.
                Ok(Err(e)) if e.class == ErrorClass::InUse => {
                    metrics::counter!(m::FAN_OUT_SUBSCRIBE_FAILURES, "reason" => "in-use").increment(1);
                    tracing::info!(shard_id = %self.shard_id, attempt = self.attempt, error = %e.message,
                        "another subscription to the shard is live; retrying");
                    self.subscription = None;
                    self.back_off().await;
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(shard_id = %self.shard_id, attempt = self.attempt, error = %e.message,
                        "subscription failed; resubscribing");
                    self.resubscribe(if e.class == ErrorClass::NotFound { "not-found" } else { "error" });
                    self.back_off().await;
                    continue;
                }
                Ok(Ok(Some(event))) => event,
            };
            self.attempt = 0;
            if !event.records.is_empty() {
                let (now, ages) = (Utc::now(), metrics::histogram!(m::FAN_OUT_EVENT_AGE_SECONDS));
                for record in &event.records {
                    ages.record((now - record.arrival).num_milliseconds().max(0) as f64 / 1000.0);
                }
            }
            let Some(continuation) = event.continuation.filter(|c| !c.is_empty()) else {
                self.subscription = None;
                return Read {
                    records: event.records,
                    millis_behind_latest: event.millis_behind_latest,
                    end: Some(event.child_shards),
                };
            };
            self.position = StartAt::AfterSequence(continuation);
            if !event.records.is_empty() {
                self.idle_since = Instant::now();
            } else if self.idle_since.elapsed() >= self.config.closed_idle_check && self.closed.contains(&self.shard_id)
            {
                self.idle_since = Instant::now();
                if let Some(end) = self.confirm_end().await {
                    self.subscription = None;
                    return end;
                }
            }
            return Read { records: event.records, millis_behind_latest: event.millis_behind_latest, end: None };
        }
    }
}

#[cfg(test)]
mod tests {
    //! The reader on the stream twin's subscriptions, under paused time.

    use super::*;
    use crate::retrieval::memory::{MemoryStream, MemorySubscriber};
    use crate::retrieval::{ShardEvent, StreamError};

    const SHARD: &str = "shardId-000000000000";

    fn reader(stream: &Arc<MemoryStream>, subscriber: Arc<dyn Subscriber>, closed: Arc<ClosedShards>) -> FanOutReader {
        FanOutReader::new(subscriber, stream.clone(), closed, SHARD, StartAt::TrimHorizon, FanOutConfig::default())
    }

    fn put(stream: &MemoryStream, ids: std::ops::Range<usize>) {
        for i in ids {
            stream.put(&format!("k{i}"), format!("{i}").as_bytes());
        }
    }

    /// Reads until `n` records came; returns their payloads.
    async fn read_n(reader: &mut FanOutReader, n: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        while seen.len() < n {
            let read = reader.read().await;
            assert!(read.end.is_none(), "the shard is open");
            seen.extend(read.records.iter().map(|r| std::str::from_utf8(&r.data).unwrap().parse::<usize>().unwrap()));
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn subscriptions_that_end_are_continued_with_no_gap_and_no_duplicate() {
        let stream = Arc::new(MemoryStream::new(1));
        let mut subscriber = MemorySubscriber::new(stream.clone());
        subscriber.lifetime = Duration::from_secs(3);
        let subscriber = Arc::new(subscriber);
        let mut reader = reader(&stream, subscriber.clone(), Arc::default());
        let writer = {
            let stream = stream.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    put(&stream, i * 5..i * 5 + 5);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        let seen = read_n(&mut reader, 200).await;
        writer.await.unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every record once, in order");
        assert!(subscriber.subscriptions() >= 6, "20 s of 3 s subscriptions: {}", subscriber.subscriptions());
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_another_subscription_holds_is_retried_until_it_is_free() {
        let stream = Arc::new(MemoryStream::new(1));
        put(&stream, 0..10);
        let subscriber = Arc::new(MemorySubscriber::new(stream.clone()));
        let other = subscriber.subscribe(SHARD, &StartAt::TrimHorizon).await.unwrap();
        let mut reader = reader(&stream, subscriber.clone(), Arc::default());
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            drop(other);
        });
        let started = Instant::now();
        assert_eq!(read_n(&mut reader, 10).await, (0..10).collect::<Vec<_>>());
        assert!(started.elapsed() >= Duration::from_secs(20), "read while the other subscription was live");
        assert!(started.elapsed() < Duration::from_secs(32), "backed off for more than the 10 s cap after the release");
        release.await.unwrap();
    }

    /// Subscriptions that never end a closed shard, as the Kinesis emulator's.
    struct Endless(MemorySubscriber);
    struct EndlessSubscription(Box<dyn Subscription>, Option<String>);

    #[async_trait]
    impl Subscriber for Endless {
        async fn subscribe(&self, shard_id: &str, start: &StartAt) -> Result<Box<dyn Subscription>, StreamError> {
            let start_seq = match start {
                StartAt::AfterSequence(s) => Some(s.clone()),
                _ => None,
            };
            Ok(Box::new(EndlessSubscription(self.0.subscribe(shard_id, start).await?, start_seq)))
        }
    }

    #[async_trait]
    impl Subscription for EndlessSubscription {
        async fn next_event(&mut self) -> Result<Option<ShardEvent>, StreamError> {
            let Some(mut event) = self.0.next_event().await? else { return Ok(None) };
            if let Some(last) = event.records.last() {
                self.1 = Some(last.sequence_number.clone());
            }
            event.continuation = event.continuation.or_else(|| self.1.clone());
            event.child_shards.clear();
            Ok(Some(event))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_whose_subscription_never_ends_is_ended_by_one_get_records() {
        let stream = Arc::new(MemoryStream::new(1));
        put(&stream, 0..10);
        let (left, right) = stream.split(SHARD, None).unwrap();
        let subscriber = Arc::new(Endless(MemorySubscriber::new(stream.clone())));
        let closed = Arc::new(ClosedShards::default());
        let mut reader = reader(&stream, subscriber, closed.clone());
        assert_eq!(read_n(&mut reader, 10).await.len(), 10);
        // Not known closed: the reader waits on its subscription.
        let quiet = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let read = reader.read().await;
                if read.end.is_some() || !read.records.is_empty() {
                    return read;
                }
            }
        })
        .await;
        assert!(quiet.is_err(), "ended without ListShards' word: {quiet:?}");
        let calls = stream.calls().get_records;
        closed.set(&stream.list_shards().await.unwrap());
        let started = Instant::now();
        let end = loop {
            let read = reader.read().await;
            assert!(read.records.is_empty());
            if let Some(end) = read.end {
                break end;
            }
        };
        assert!(started.elapsed() <= Duration::from_secs(7), "{:?}", started.elapsed());
        let mut children: Vec<String> = end.into_iter().map(|c| c.id).collect();
        children.sort();
        assert_eq!(children, [left, right]);
        // The twin's subscriptions read through GetRecords too: one more call
        // per event, and the one check.
        assert!(stream.calls().get_records - calls <= 9, "{}", stream.calls().get_records - calls);
    }

    /// Subscriptions that never send an event.
    struct Silent;
    struct SilentSubscription;

    #[async_trait]
    impl Subscriber for Silent {
        async fn subscribe(&self, _: &str, _: &StartAt) -> Result<Box<dyn Subscription>, StreamError> {
            Ok(Box::new(SilentSubscription))
        }
    }

    #[async_trait]
    impl Subscription for SilentSubscription {
        async fn next_event(&mut self) -> Result<Option<ShardEvent>, StreamError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscription_silent_for_the_idle_timeout_is_replaced() {
        let stream = Arc::new(MemoryStream::new(1));
        let mut reader = reader(&stream, Arc::new(Silent), Arc::default());
        let resubscriptions = tokio::time::timeout(Duration::from_secs(95), reader.read()).await;
        assert!(resubscriptions.is_err(), "nothing to read");
        let started = reader.subscription.as_ref().expect("a subscription is live").1;
        assert_eq!(started.elapsed(), Duration::from_secs(5), "replaced at 30, 60 and 90 s");
    }
}

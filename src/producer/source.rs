//! The sources' end of the buffer: a file replayed, iterators fed, and the
//! `Handoff` every source (the X stream too) puts its records through. Apart
//! from the put loop, which only opens the buffer and hands this end over.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Outgoing, Received, Stats};
use crate::processor::limiter::WriteLimiter;

/// Lines of a JSON-lines file; the partition key is the tweet id when the line
/// decodes as a tweet, else the line number.
pub fn file_source(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<Outgoing>>> {
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot open {}: {e}\n  hint: --source file:PATH replays a file of tweets, one JSON object per line \
             (X API v2 stream lines or v1.1 tweets; see docs/producer.md)",
            path.display()
        )
    })?;
    let path = path.display().to_string();
    Ok(BufReader::new(file).lines().enumerate().filter_map(move |(n, line)| match line {
        Ok(line) if line.trim().is_empty() => None,
        Ok(line) => {
            let key = crate::processor::tweet::decode(line.as_bytes())
                .map(|t| t.id.into_owned())
                .unwrap_or_else(|_| format!("line-{}", n + 1));
            Some(Ok(Outgoing { id: key, data: line.into_bytes(), kind: "file" }))
        }
        Err(e) => Some(Err(anyhow::anyhow!("reading {path} line {}: {e}", n + 1))),
    }))
}

/// The source's end of the buffer: counts each record received, holds it to
/// `--rate`, and hands it to the put loop, waiting while the buffer is full.
pub struct Handoff {
    pub(super) tx: mpsc::Sender<Received>,
    pub(super) limiter: Option<WriteLimiter>,
    pub(super) stats: Arc<Stats>,
}

impl Handoff {
    pub async fn send(&self, record: Outgoing) -> anyhow::Result<()> {
        let now = Instant::now();
        self.send_since(record, now, now).await
    }

    /// As [`send`](Self::send), for a record read at `read` (the time its
    /// chunk came: one clock read per chunk, not per record) that may have
    /// waited unread since `since` (the source paused reading then): its
    /// linger counts from there.
    pub async fn send_since(&self, record: Outgoing, read: Instant, since: Instant) -> anyhow::Result<()> {
        self.stats.received(read);
        let since = match &self.limiter {
            Some(limiter) => {
                // Held back to `--rate`: its linger starts once it is let go.
                limiter.acquire(1).await;
                Instant::now()
            }
            None => since,
        };
        self.tx.send((record, since)).await.map_err(|_| anyhow::anyhow!("the producer's put loop ended"))
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Hands records from an iterator (synthetic, file) to the put loop until it
/// ends, `count` records are taken, `deadline` passes or `stop` is cancelled.
pub async fn feed_iter(
    source: impl Iterator<Item = anyhow::Result<Outgoing>>,
    handoff: Handoff,
    count: Option<u64>,
    deadline: Option<Instant>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    for (taken, next) in (0u64..).zip(source) {
        if count.is_some_and(|c| taken >= c) || deadline.is_some_and(|d| Instant::now() >= d) || stop.is_cancelled() {
            break;
        }
        handoff.send(next?).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::producer::test_support::producer;
    use crate::producer::x_api::{self, Body, Connect, ConnectError, Limits, Reconnect};
    use crate::producer::LINGER;
    use crate::retrieval::memory::MemoryStream;

    fn ids(stream: &MemoryStream) -> Vec<String> {
        let mut ids: Vec<String> = stream.records().into_iter().map(|(key, _)| key).collect();
        ids.sort_by_key(|id| id.parse::<u64>().unwrap_or(u64::MAX));
        ids
    }

    enum Step {
        Chunk(String),
        Wait(Duration),
        Stall,
        Fail,
    }

    enum Conn {
        Open(Vec<Step>),
        Status(u16),
        RateLimited(Duration),
        Unreachable,
    }

    /// The X API, scripted: one entry per connection attempt.
    struct Script {
        conns: Mutex<VecDeque<Conn>>,
        attempts: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl Connect for Script {
        async fn connect(&self) -> Result<Body, ConnectError> {
            self.attempts.lock().unwrap().push(Instant::now());
            let retry = |reason, reset_in| Err(ConnectError::Retry { reason, detail: "scripted".into(), reset_in });
            match self.conns.lock().unwrap().pop_front().expect("the script covers every attempt") {
                Conn::Status(401) => Err(ConnectError::Fatal("the bearer token was refused (401 Unauthorized)".into())),
                Conn::Status(_) => retry(Reconnect::HttpError, None),
                Conn::RateLimited(wait) => retry(Reconnect::RateLimited, Some(wait)),
                Conn::Unreachable => retry(Reconnect::Network, None),
                Conn::Open(steps) => Ok(futures::stream::unfold(steps.into_iter(), |mut steps| async move {
                    loop {
                        match steps.next()? {
                            Step::Chunk(c) => return Some((Ok(Bytes::from(c)), steps)),
                            Step::Wait(d) => tokio::time::sleep(d).await,
                            Step::Stall => std::future::pending::<()>().await,
                            Step::Fail => return Some((Err("connection reset by peer".to_owned()), steps)),
                        }
                    }
                })
                .boxed()),
            }
        }
    }

    fn tweet(id: u64) -> String {
        format!(
            r#"{{"data":{{"id":"{id}","text":"tweet {id} #rust","author_id":"7","lang":"en"}},"includes":{{"users":[{{"id":"7","name":"Ferris","username":"ferris"}}]}},"matching_rules":[{{"id":"1","tag":"rust"}}]}}"#
        ) + "\r\n"
    }

    #[tokio::test(start_paused = true)]
    async fn the_x_stream_reconnects_on_schedule_and_every_tweet_is_put_once() {
        use Step::*;
        let t1 = tweet(1);
        let (t1a, t1b) = t1.split_at(30);
        let disconnect = r#"{"errors":[{"title":"operational-disconnect","disconnect_type":"UpstreamOperationalDisconnect","type":"https://api.twitter.com/2/problems/operational-disconnect"}]}"#;
        let script = Script {
            conns: Mutex::new(VecDeque::from([
                // Split lines, a keep-alive, two tweets in a chunk, then a cut-off line and the end.
                Conn::Open(vec![
                    Chunk(t1a.into()),
                    Chunk(t1b.into()),
                    Chunk("\r\n".into()),
                    Chunk(tweet(2) + &tweet(3)),
                    Wait(Duration::from_secs(5)),
                    Chunk(r#"{"data":{"id":"99""#.into()),
                ]),
                Conn::Status(503),
                Conn::RateLimited(Duration::from_secs(7)),
                Conn::Open(vec![Chunk(tweet(4)), Chunk(format!("{disconnect}\r\n"))]),
                Conn::Open(vec![Chunk(tweet(5)), Wait(Duration::from_secs(19)), Chunk("\r\n".into()), Stall]),
                Conn::Unreachable,
                Conn::Open(vec![Chunk(tweet(6) + &tweet(7)), Fail]),
                Conn::Status(401),
            ])),
            attempts: Mutex::new(Vec::new()),
        };
        let stream = Arc::new(MemoryStream::new(2));
        let stats = Arc::new(Stats::default());
        let limits = Limits { count: None, deadline: None, stall_timeout: x_api::STALL_TIMEOUT };
        let (summary, result) = producer(stream.clone(), stats.clone())
            .run(|tx, stop| async { x_api::feed(&script, tx, limits, stop).await }, CancellationToken::new())
            .await;
        assert!(result.unwrap_err().to_string().contains("401"), "a 401 is fatal");
        let attempts = script.attempts.lock().unwrap().clone();
        let gaps: Vec<u128> = attempts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
        assert_eq!(
            gaps,
            [
                5_000 + 250,           // closed by the server after 5 s: the first network step
                5_000,                 // 503: the first HTTP step
                7_000,                 // 429: until x-rate-limit-reset
                250,                   // operational disconnect, after data (the schedule started over)
                19_000 + 20_000 + 250, // a keep-alive at 19 s, then 20 s of nothing: a stall
                500,                   // unreachable: the second network step in a row
                250,                   // reset mid-stream, after data
            ]
        );
        assert_eq!(ids(&stream), ["1", "2", "3", "4", "5", "6", "7"]);
        assert_eq!((summary.received, summary.put, summary.failed), (7, 7, 0));
        let reconnects: Vec<_> = summary.reconnects.iter().map(|(r, n)| (r.label(), *n)).collect();
        assert_eq!(
            reconnects,
            [
                ("network", 2),
                ("stall", 1),
                ("closed", 1),
                ("operational_disconnect", 1),
                ("http_error", 1),
                ("rate_limited", 1)
            ]
        );
    }

    /// A stream whose tweets arrive at set times after it opens; records when
    /// each is taken by the reader.
    struct Timed {
        arrivals: Vec<(Duration, u64)>,
        taken: Arc<Mutex<Vec<Duration>>>,
    }

    #[async_trait]
    impl Connect for Timed {
        async fn connect(&self) -> Result<Body, ConnectError> {
            let (opened, taken) = (Instant::now(), self.taken.clone());
            Ok(futures::stream::unfold(self.arrivals.clone().into_iter(), move |mut arrivals| {
                let taken = taken.clone();
                async move {
                    let Some((at, id)) = arrivals.next() else { return std::future::pending().await };
                    tokio::time::sleep_until(opened + at).await;
                    taken.lock().unwrap().push(opened.elapsed());
                    Some((Ok(Bytes::from(tweet(id))), arrivals))
                }
            })
            .boxed())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_x_stream_is_read_in_gathers_and_every_tweet_is_sent_within_the_linger_of_its_arrival() {
        let ms = Duration::from_millis;
        // Tweets 1 and 2 are put together at 100 ms; tweet 3 arrives in the
        // next pause; then a burst.
        let arrivals =
            vec![(ms(0), 1), (ms(80), 2), (ms(105), 3), (ms(305), 4), (ms(315), 5), (ms(325), 6), (ms(335), 7)];
        let taken = Arc::new(Mutex::new(Vec::new()));
        let script = Timed { arrivals: arrivals.clone(), taken: taken.clone() };
        let stream = Arc::new(MemoryStream::new(2));
        let stats = Arc::new(Stats::default());
        let stop = CancellationToken::new();
        let start = Instant::now();
        let run = tokio::spawn({
            let (p, stop) = (producer(stream.clone(), stats.clone()), stop.clone());
            let limits = Limits { count: None, deadline: None, stall_timeout: x_api::STALL_TIMEOUT };
            async move { p.run(|tx, stop| async move { x_api::feed(&script, tx, limits, stop).await }, stop).await }
        });
        let mut put_at = BTreeMap::new();
        while put_at.len() < arrivals.len() {
            for (id, _) in stream.records() {
                put_at.entry(id).or_insert_with(|| start.elapsed());
            }
            tokio::time::sleep(ms(1)).await;
        }
        stop.cancel();
        run.await.unwrap().1.unwrap();
        // A tweet is read as it comes; then reading pauses READ_PACE (the
        // linger): tweet 2 is read at 100, tweet 3 at 200; nothing came in the
        // pause to 300, so tweet 4 is read as it comes, the rest of the burst
        // at once at 405.
        assert_eq!(x_api::READ_PACE, LINGER);
        let read = [0, 100, 200, 305, 405, 405, 405].map(ms);
        assert_eq!(*taken.lock().unwrap(), read);
        // What a pause gathered is put as it is read: what is read after a
        // pause lingers from when the pause began (tweet 3 would otherwise be
        // put at 300 ms, 195 ms after it arrived). So none waits longer than
        // the linger after it arrived.
        let put = [100, 100, 200, 405, 405, 405, 405].map(ms);
        for ((arrived, id), due) in arrivals.into_iter().zip(put) {
            let at = put_at[&id.to_string()];
            assert!(at >= due && at <= due + ms(1), "tweet {id} was put at {at:?}, not at {due:?}");
            let waited = at - arrived;
            assert!(waited <= LINGER + ms(1), "tweet {id} arrived at {arrived:?} and was put {waited:?} later");
        }
    }
}

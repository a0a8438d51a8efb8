//! In-memory [`LeaseStore`], for unit tests of the coordinator and the taker,
//! and the fleet simulation: it prices every call as DynamoDB would (see
//! [`Usage`]), and its eventually consistent reads can lag behind its writes as
//! DynamoDB's may (see [`ReadLag`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use async_trait::async_trait;

use super::{apply, Cas, LeaseStore, Segment, StoreError};
use crate::model::{Checkpoint, Fleet, Heartbeat, Lease};

/// An in-memory [`LeaseStore`] with the same conditional-write contract as
/// [`DynamoLeaseStore`](super::dynamodb::DynamoLeaseStore), for tests and the
/// fleet simulation. It counts what each call would cost on DynamoDB
/// ([`MemoryLeaseStore::usage`]); [`MemoryLeaseStore::peek`] and
/// [`MemoryLeaseStore::rows`] read the rows without a charge.
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    rows: Mutex<BTreeMap<String, Lease>>,
    /// The heartbeat table's rows, by [`Heartbeat::key`].
    heartbeats: Mutex<BTreeMap<String, Heartbeat>>,
    /// The fleet's protocol row.
    protocol: Mutex<Option<u32>>,
    /// While reads lag: the heartbeat table after each write, oldest first.
    beats_history: Mutex<Vec<(Instant, BTreeMap<String, Heartbeat>)>>,
    /// How eventually consistent reads lag, and the draws of [`ReadLag::UpTo`].
    lag: Mutex<Option<(ReadLag, StdRng)>>,
    /// Every take of a lease that another worker owned, in order: for checkers.
    takeovers: Mutex<Vec<Takeover>>,
    /// When each heartbeat row was last beaten, by [`Heartbeat::key`].
    beaten: Mutex<HashMap<String, Instant>>,
    /// Every heartbeat row marked dead, in order: for checkers.
    marks: Mutex<Vec<Mark>>,
    /// How long every read (scan, GetItem, the fleet's Query) takes to answer.
    read_delay: Mutex<Duration>,
    /// While reads lag: each row's versions, oldest first, with when each was
    /// written (`None`: deleted).
    history: Mutex<HashMap<String, Versions>>,
    usage: Mutex<Usage>,
}

/// What the calls so far would have cost on DynamoDB: a read, one read unit per
/// 4 KB of items read (a Scan's items together, rounded up once), half a unit if
/// eventually consistent; a write, conditional or not and whether its condition
/// held or not, one write unit per KB of the larger of the item before and after
/// (at least one).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Read capacity units: one per 4 KB of items read, half that when eventually
    /// consistent.
    pub read_units: f64,
    /// Write capacity units: one per KB of the larger of the item before and after
    /// each write, at least one.
    pub write_units: f64,
    /// Scans, consistent or not, of the whole table or of a segment.
    pub scans: u64,
    /// Of those, strongly consistent.
    pub consistent_scans: u64,
    /// Of those, of one segment of a parallel scan.
    pub segment_scans: u64,
    /// GetItems.
    pub gets: u64,
    /// Queries of the heartbeat table.
    pub queries: u64,
    /// Writes of every kind, applied or not (conditional writes whose condition
    /// failed included).
    pub writes: u64,
    /// Of those, conditional writes whose condition failed (a lost race, or a
    /// write made on a stale read).
    pub lost_writes: u64,
}

/// A take of a lease that another worker owned: the row as it stood before,
/// and the taker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// The lease row just before the take.
    pub before: Lease,
    /// The worker that took it.
    pub by: String,
    /// When.
    pub at: Instant,
    /// When the owner's heartbeat was last written, if the owner beats (and
    /// did not remove its row on leaving).
    pub owner_beat: Option<Instant>,
}

/// A heartbeat row marked dead (the first mark of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The row's worker.
    pub worker_id: String,
    /// The row's incarnation.
    pub incarnation: String,
    /// The worker that marked it.
    pub by: String,
    /// When.
    pub at: Instant,
    /// When the row was last beaten, if it ever was.
    pub last_beat: Option<Instant>,
}

/// A row's versions, oldest first, each with when it was written (`None`:
/// deleted).
type Versions = Vec<(Instant, Option<Lease>)>;

/// How the store's eventually consistent reads ([`LeaseStore::snapshot`],
/// [`LeaseStore::get`], [`LeaseStore::fleet`]) lag behind its writes. Strongly consistent reads
/// ([`LeaseStore::list`]) and conditional writes always see the latest rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLag {
    /// Each read sees the table as it was a random time between zero and this
    /// long ago (drawn per read): views that lag, and may go back and forth.
    UpTo(Duration),
    /// Every read sees the table as it was at this instant: a replica that
    /// stopped taking writes.
    FrozenAt(Instant),
}

impl ReadLag {
    /// The oldest instant a read made at `now` may see.
    fn oldest_view(self, now: Instant) -> Instant {
        match self {
            ReadLag::UpTo(max) => now.checked_sub(max).unwrap_or(now),
            ReadLag::FrozenAt(at) => at,
        }
    }
}

/// The segment of `total` a key's row is in: a stable hash of the key (FNV-1a),
/// as DynamoDB places a row by a hash of its partition key.
fn segment_of(key: &str, total: u32) -> u32 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % u64::from(total.max(1))) as u32
}

/// A lease row's size as DynamoDB counts it (names and values).
fn row_bytes(lease: &Lease) -> usize {
    crate::aws::item_size(&super::dynamodb::to_item(lease))
}

/// A heartbeat row's size as DynamoDB counts it, in a fleet named like a lease
/// table of 16 characters.
fn heartbeat_bytes(heartbeat: &Heartbeat) -> usize {
    crate::aws::item_size(&super::dynamodb::heartbeats::to_item("tweets-ab-leases", heartbeat, 0))
}

impl MemoryLeaseStore {
    /// An empty store: no rows, no usage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes eventually consistent reads lag as `lag` says from now on (`None`:
    /// they see the latest rows again); `seed` draws [`ReadLag::UpTo`]'s lags.
    /// Rows as they stand now are the oldest version a lagging read can see.
    pub fn set_read_lag(&self, lag: Option<ReadLag>, seed: u64) {
        let mut history = self.history.lock().unwrap();
        history.clear();
        if lag.is_some() {
            let now = Instant::now();
            for (key, row) in self.rows.lock().unwrap().iter() {
                history.insert(key.clone(), vec![(now, Some(row.clone()))]);
            }
        }
        let mut beats = self.beats_history.lock().unwrap();
        beats.clear();
        if lag.is_some() {
            beats.push((Instant::now(), self.heartbeats.lock().unwrap().clone()));
        }
        *self.lag.lock().unwrap() = lag.map(|lag| (lag, StdRng::seed_from_u64(seed)));
    }

    /// Records the heartbeat table as it now stands, for lagging reads.
    fn record_beats(&self) {
        let Some(lag) = self.lag.lock().unwrap().as_ref().map(|(lag, _)| *lag) else { return };
        let now = Instant::now();
        let rows = self.heartbeats.lock().unwrap().clone();
        let mut history = self.beats_history.lock().unwrap();
        history.push((now, rows));
        let oldest_view = lag.oldest_view(now);
        let visible = history.iter().rposition(|(at, _)| *at <= oldest_view).unwrap_or(0);
        history.drain(..visible);
    }

    /// The instant an eventually consistent read made now sees, while reads lag.
    fn view(&self) -> Option<Instant> {
        match self.lag.lock().unwrap().as_mut() {
            None => None,
            Some((ReadLag::UpTo(max), rng)) => {
                let lag = rng.gen_range(Duration::ZERO..=*max);
                Some(Instant::now().checked_sub(lag).unwrap_or_else(Instant::now))
            }
            Some((ReadLag::FrozenAt(at), _)) => Some(*at),
        }
    }

    /// Records a row's new version (`None`: deleted) for lagging reads.
    fn record(&self, key: &str, row: Option<Lease>) {
        let Some(lag) = self.lag.lock().unwrap().as_ref().map(|(lag, _)| *lag) else { return };
        let now = Instant::now();
        let mut history = self.history.lock().unwrap();
        let versions = history.entry(key.to_owned()).or_default();
        versions.push((now, row));
        // Keep the newest version a read can still pick, and the ones after it.
        let oldest_view = lag.oldest_view(now);
        let visible = versions.iter().rposition(|(at, _)| *at <= oldest_view).unwrap_or(0);
        versions.drain(..visible);
    }

    /// The rows an eventually consistent read sees now: the latest, or, while
    /// reads lag, each row as it was at the view's instant.
    fn visible_rows(&self) -> Vec<Lease> {
        let Some(view) = self.view() else { return self.rows() };
        let history = self.history.lock().unwrap();
        let mut rows: Vec<Lease> = history
            .values()
            .filter_map(|versions| versions.iter().rev().find(|(at, _)| *at <= view).and_then(|(_, row)| row.clone()))
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
    }

    /// One row, read without a charge (for tests that watch the table).
    pub fn peek(&self, key: &str) -> Option<Lease> {
        self.rows.lock().unwrap().get(key).cloned()
    }

    /// Every row, read without a charge (for checkers that watch the table).
    pub fn rows(&self) -> Vec<Lease> {
        self.rows.lock().unwrap().values().cloned().collect()
    }

    /// Makes every read (scans, GetItem, the fleet's heartbeats) answer `delay`
    /// late from now on; writes answer at once.
    pub fn set_read_delay(&self, delay: Duration) {
        *self.read_delay.lock().unwrap() = delay;
    }

    async fn read_delay(&self) {
        let delay = *self.read_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The heartbeat rows, read without a charge (for tests that watch them).
    pub fn heartbeat_rows(&self) -> Vec<Heartbeat> {
        self.heartbeats.lock().unwrap().values().cloned().collect()
    }

    /// The heartbeat rows marked dead since the last call, in order.
    pub fn drain_marks(&self) -> Vec<Mark> {
        std::mem::take(&mut *self.marks.lock().unwrap())
    }

    /// The takes of leases another worker owned since the last call, in order.
    pub fn drain_takeovers(&self) -> Vec<Takeover> {
        std::mem::take(&mut *self.takeovers.lock().unwrap())
    }

    /// What the calls so far would have cost on DynamoDB.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap()
    }

    /// The rows of `segment`, charged as a Scan at `unit` read units per 4 KB.
    fn scan(&self, unit: f64, segment: Segment) -> Vec<Lease> {
        let mut rows = if unit < 1.0 { self.visible_rows() } else { self.rows() };
        rows.retain(|l| segment_of(&l.key, segment.total) == segment.index);
        let bytes: usize = rows.iter().map(row_bytes).sum();
        let mut usage = self.usage.lock().unwrap();
        usage.scans += 1;
        usage.consistent_scans += u64::from(unit == 1.0);
        usage.segment_scans += u64::from(segment.total > 1);
        usage.read_units += unit * bytes.div_ceil(4096).max(1) as f64;
        rows
    }

    fn charge_write(&self, bytes: usize) {
        let mut usage = self.usage.lock().unwrap();
        usage.writes += 1;
        usage.write_units += bytes.div_ceil(1024).max(1) as f64;
    }

    /// Applies `next(stored)` if the stored row matches `lease`'s counter (and
    /// owner, when `check_owner`); finds it applied if the row is `next(lease)`.
    fn cas(&self, lease: &Lease, check_owner: bool, next: impl Fn(&Lease) -> Lease) -> Cas<Lease> {
        let mut rows = self.rows.lock().unwrap();
        let before = rows.get(&lease.key).map_or(0, row_bytes);
        let result = match rows.get_mut(&lease.key) {
            Some(row) if row.counter == lease.counter && (!check_owner || row.owner == lease.owner) => {
                *row = next(row);
                Cas::Done(row.clone())
            }
            Some(row) if *row == next(lease) => Cas::Done(row.clone()),
            _ => Cas::Lost,
        };
        let after = rows.get(&lease.key).map_or(0, row_bytes);
        let stored = rows.get(&lease.key).cloned();
        drop(rows);
        if matches!(result, Cas::Done(_)) {
            self.record(&lease.key, stored);
        } else {
            self.usage.lock().unwrap().lost_writes += 1;
        }
        self.charge_write(before.max(after));
        result
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn ensure_table(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Lease>, StoreError> {
        self.read_delay().await;
        Ok(self.scan(1.0, Segment::WHOLE))
    }

    async fn snapshot(&self, segment: Segment) -> Result<Vec<Lease>, StoreError> {
        self.read_delay().await;
        Ok(self.scan(0.5, segment))
    }

    async fn get(&self, key: &str) -> Result<Option<Lease>, StoreError> {
        self.read_delay().await;
        let row = if self.lag.lock().unwrap().is_some() {
            self.visible_rows().into_iter().find(|l| l.key == key)
        } else {
            self.rows.lock().unwrap().get(key).cloned()
        };
        let mut usage = self.usage.lock().unwrap();
        usage.gets += 1;
        usage.read_units += 0.5 * row.as_ref().map_or(0, row_bytes).div_ceil(4096).max(1) as f64;
        Ok(row)
    }

    async fn create(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
        self.charge_write(row_bytes(lease));
        let mut rows = self.rows.lock().unwrap();
        if rows.contains_key(&lease.key) {
            return Ok(Cas::Lost);
        }
        rows.insert(lease.key.clone(), lease.clone());
        drop(rows);
        self.record(&lease.key, Some(lease.clone()));
        Ok(Cas::Done(()))
    }

    async fn take_as(&self, lease: &Lease, owner: &str, incarnation: Option<&str>) -> Result<Cas<Lease>, StoreError> {
        let before = self.peek(&lease.key);
        let result = self.cas(lease, false, |row| apply::take(row, owner, incarnation));
        if let (Cas::Done(_), Some(before)) = (&result, before) {
            if before.owner.as_deref().is_some_and(|o| o != owner) {
                let owner_beat = before.owner_incarnation.as_ref().and_then(|incarnation| {
                    let key = format!("{}#{incarnation}", before.owner.as_deref().unwrap_or_default());
                    self.beaten.lock().unwrap().get(&key).copied()
                });
                self.takeovers.lock().unwrap().push(Takeover {
                    before,
                    by: owner.to_owned(),
                    at: Instant::now(),
                    owner_beat,
                });
            }
        }
        Ok(result)
    }

    async fn renew(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, apply::renew))
    }

    async fn release(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, apply::release))
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        checkpoint: &Checkpoint,
        children: &[String],
        records: u64,
    ) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, |row| apply::checkpoint(row, checkpoint, children, records)))
    }

    async fn rewind(&self, lease: &Lease, checkpoint: &Checkpoint) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, false, |row| apply::rewind(row, checkpoint)))
    }

    async fn request_handoff(&self, lease: &Lease, to: &str) -> Result<Cas<Lease>, StoreError> {
        Ok(self.cas(lease, true, |row| apply::request_handoff(row, to)))
    }

    async fn beat(&self, heartbeat: &Heartbeat, leases: u32, sent_at: &str) -> Result<Cas<Heartbeat>, StoreError> {
        let mut rows = self.heartbeats.lock().unwrap();
        let key = heartbeat.key();
        let before = rows.get(&key).map_or(0, heartbeat_bytes);
        let result = match rows.get(&key) {
            Some(row) if row.dead_by.is_some() => Cas::Lost,
            None if heartbeat.beat > 0 => Cas::Lost,
            stored => {
                let beat = stored.map_or(0, |row| row.beat);
                let mut asks = stored.map(|row| row.asks.clone()).unwrap_or_default();
                asks.retain(|k| !heartbeat.asks.contains(k));
                let next = Heartbeat { beat, dead_by: None, asks, ..heartbeat.clone() }.next(leases, sent_at);
                rows.insert(key.clone(), next.clone());
                self.beaten.lock().unwrap().insert(key.clone(), Instant::now());
                Cas::Done(next)
            }
        };
        let after = rows.get(&key).map_or(0, heartbeat_bytes);
        drop(rows);
        self.record_beats();
        self.charge_write(before.max(after));
        Ok(result)
    }

    async fn fleet(&self) -> Result<Fleet, StoreError> {
        self.read_delay().await;
        let workers: Vec<Heartbeat> = match self.view() {
            None => self.heartbeats.lock().unwrap().values().cloned().collect(),
            Some(view) => {
                let history = self.beats_history.lock().unwrap();
                let seen = history.iter().rev().find(|(at, _)| *at <= view).or(history.first());
                seen.map(|(_, rows)| rows.values().cloned().collect()).unwrap_or_default()
            }
        };
        let bytes: usize = workers.iter().map(heartbeat_bytes).sum::<usize>() + 64;
        let mut usage = self.usage.lock().unwrap();
        usage.queries += 1;
        usage.read_units += 0.5 * bytes.div_ceil(4096).max(1) as f64;
        Ok(Fleet { protocol: *self.protocol.lock().unwrap(), workers })
    }

    async fn mark_dead(&self, heartbeat: &Heartbeat, by: &str) -> Result<Cas<()>, StoreError> {
        let mut rows = self.heartbeats.lock().unwrap();
        let key = heartbeat.key();
        let (before, result) = match rows.get_mut(&key) {
            Some(row) if row.dead_by.is_some() => (heartbeat_bytes(row), Cas::Done(())),
            Some(row) if row.beat == heartbeat.beat => {
                let before = heartbeat_bytes(row);
                row.dead_by = Some(by.to_owned());
                self.marks.lock().unwrap().push(Mark {
                    worker_id: row.worker_id.clone(),
                    incarnation: row.incarnation.clone(),
                    by: by.to_owned(),
                    at: Instant::now(),
                    last_beat: self.beaten.lock().unwrap().get(&key).copied(),
                });
                (before.max(heartbeat_bytes(row)), Cas::Done(()))
            }
            Some(row) => (heartbeat_bytes(row), Cas::Lost),
            None if heartbeat.beat == 0 => {
                let marker = Heartbeat { dead_by: Some(by.to_owned()), asks: Vec::new(), ..heartbeat.clone() };
                let bytes = heartbeat_bytes(&marker);
                rows.insert(key, marker);
                (bytes, Cas::Done(()))
            }
            None => (0, Cas::Lost),
        };
        drop(rows);
        self.record_beats();
        self.charge_write(before);
        if result == Cas::Lost {
            self.usage.lock().unwrap().lost_writes += 1;
        }
        Ok(result)
    }

    async fn ask(&self, worker_id: &str, incarnation: &str, key: &str) -> Result<(), StoreError> {
        let mut rows = self.heartbeats.lock().unwrap();
        let bytes = match rows.get_mut(&format!("{worker_id}#{incarnation}")) {
            Some(row) if row.dead_by.is_none() => {
                if !row.asks.iter().any(|k| k == key) {
                    row.asks.push(key.to_owned());
                }
                heartbeat_bytes(row)
            }
            row => row.map_or(0, |row| heartbeat_bytes(row)),
        };
        drop(rows);
        self.record_beats();
        self.charge_write(bytes);
        Ok(())
    }

    async fn set_protocol(&self, from: Option<u32>, to: u32) -> Result<Cas<()>, StoreError> {
        self.charge_write(64);
        let mut protocol = self.protocol.lock().unwrap();
        if *protocol == from {
            *protocol = Some(to);
            Ok(Cas::Done(()))
        } else {
            Ok(Cas::Lost)
        }
    }

    async fn remove_heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), StoreError> {
        let removed = self.heartbeats.lock().unwrap().remove(&heartbeat.key());
        self.beaten.lock().unwrap().remove(&heartbeat.key());
        self.record_beats();
        self.charge_write(removed.as_ref().map_or(0, heartbeat_bytes));
        Ok(())
    }

    async fn delete(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
        self.charge_write(row_bytes(lease));
        let mut rows = self.rows.lock().unwrap();
        match rows.get(&lease.key) {
            Some(row) if row.counter == lease.counter => {
                rows.remove(&lease.key);
                drop(rows);
                self.record(&lease.key, None);
                Ok(Cas::Done(()))
            }
            _ => Ok(Cas::Lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lagging_reads_see_older_rows_and_strong_reads_and_writes_the_latest() {
        let store = MemoryLeaseStore::new();
        let lease = Lease::new("s", Checkpoint::TrimHorizon, vec![]);
        store.create(&lease).await.unwrap().done().unwrap();
        let before = store.list().await.unwrap().remove(0);
        store.set_read_lag(Some(ReadLag::FrozenAt(Instant::now())), 1);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let taken = store.take(&before, "w").await.unwrap().done().unwrap();
        store.create(&Lease::new("t", Checkpoint::TrimHorizon, vec![])).await.unwrap().done().unwrap();
        // Frozen: the old row, and no row created since.
        assert_eq!(store.snapshot(Segment::WHOLE).await.unwrap(), vec![before.clone()]);
        assert_eq!(store.get("s").await.unwrap(), Some(before.clone()));
        assert_eq!(store.get("t").await.unwrap(), None);
        // Strong reads and conditional writes see the latest.
        assert_eq!(store.list().await.unwrap()[0], taken);
        assert_eq!(store.take(&before, "v").await.unwrap(), Cas::Lost, "a take on a stale read loses");

        // Up to 4 s behind: a row written each second is seen between 4 s old and new.
        store.set_read_lag(Some(ReadLag::UpTo(Duration::from_secs(4))), 7);
        let mut row = store.list().await.unwrap().remove(0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            row = store.renew(&row).await.unwrap().done().unwrap();
            let counter = store.get("s").await.unwrap().unwrap().counter;
            assert!(counter + 4 >= row.counter && counter <= row.counter, "{counter} vs {}", row.counter);
            seen.insert(row.counter - counter);
        }
        assert!(seen.len() >= 4, "lags drawn: {seen:?}");
        store.set_read_lag(None, 0);
        assert_eq!(store.get("s").await.unwrap(), Some(row));
    }
}

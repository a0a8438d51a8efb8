//! A lease this worker holds, shared by the renewer and the shard's consumer.
//!
//! All writes to the row go through here, one at a time (an async mutex), so the
//! renewer and the checkpointer never race each other on `leaseCounter`.
//!
//! The zombie fence: a renewal or checkpoint sent at `t` proves the lease ours
//! until, at the earliest, `t + failover_time` on any other worker's clock (they
//! judge expiry from when they *saw* the counter move, which is after `t`). The
//! fence is set a margin before that; past it, the holder stops and never writes:
//! the lease's writes and its consumer's run [`within`] the fence, so that not
//! even an SDK retry is sent past it ([`crate::fence`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::fence::{within, Fence};
use crate::leases::{Cas, LeaseStore, StoreError};
use crate::model::{Checkpoint, Lease};

/// A lease this worker holds, shared by the worker's renewer and the shard's
/// [`Consumer`](crate::engine::consumer::Consumer).
///
/// Every write to the lease row (renewal, checkpoint, release) goes through it
/// one at a time, so they never race on `leaseCounter`. It keeps the zombie
/// fence (see the module docs): past [`HeldLease::fence`] the lease counts as
/// lost and nothing more is written.
pub struct HeldLease {
    key: String,
    state: AsyncMutex<Lease>,
    fence: Fence,
    /// Cancelled once the lease is lost, fenced or released: the consumer's stop.
    lost: CancellationToken,
    /// Cancelled for a graceful stop (finish the batch, checkpoint): the worker
    /// shuts down, or another worker asked for the lease (`handoffTo`).
    stop: CancellationToken,
    handoff_requested: AtomicBool,
    /// When the last checkpoint was written (or the lease taken).
    checkpointed_at: Mutex<Instant>,
    store: Arc<dyn LeaseStore>,
    failover: Duration,
    /// Protocol 1: the lease's own writes (renewals, checkpoints) move its fence.
    /// Under protocol 2 only the worker's heartbeat does (the bound).
    renewed: AtomicBool,
}

/// A moment far enough ahead to stand for "never" (a fence kept by its bound).
fn far() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

impl HeldLease {
    /// `lease` as returned by the take, which was sent at `sent`; `stop` is the
    /// graceful stop (a child of the worker's shutdown).
    pub fn new(
        lease: Lease,
        sent: Instant,
        store: Arc<dyn LeaseStore>,
        failover: Duration,
        stop: CancellationToken,
    ) -> Self {
        Self {
            stop,
            handoff_requested: AtomicBool::new(false),
            checkpointed_at: Mutex::new(sent),
            key: lease.key.clone(),
            state: AsyncMutex::new(lease),
            fence: Fence::new(fence_after(sent, failover)),
            lost: CancellationToken::new(),
            store,
            failover,
            renewed: AtomicBool::new(true),
        }
    }

    /// A lease of a worker that beats: its fence is also `worker_fence` (the
    /// heartbeat's), and, with `renewed` (protocol 1), the lease's own writes
    /// move a fence of its own, a `failover` after each; without (protocol 2),
    /// the heartbeat alone keeps it.
    pub fn kept(
        lease: Lease,
        sent: Instant,
        store: Arc<dyn LeaseStore>,
        failover: Duration,
        stop: CancellationToken,
        worker_fence: &Fence,
        renewed: bool,
    ) -> Self {
        let own = if renewed { fence_after(sent, failover) } else { far() };
        Self {
            fence: Fence::under(worker_fence, own),
            renewed: AtomicBool::new(renewed),
            ..Self::new(lease, sent, store, failover, stop)
        }
    }

    /// Switches between protocol 1 (`renewed`: renewals and checkpoints move the
    /// lease's own fence; call [`renew`](Self::renew) at once) and protocol 2
    /// (the worker's heartbeat fence alone).
    pub fn set_renewed(&self, renewed: bool) {
        self.renewed.store(renewed, Ordering::Relaxed);
        self.fence.set(far());
    }

    /// The lease key: the shard id, e.g. `shardId-000000000003`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// When this worker must stop touching the shard unless renewed before.
    pub fn fence(&self) -> Instant {
        self.fence.at()
    }

    /// The fence as the writes made for this lease run [`within`] it.
    pub fn write_fence(&self) -> &Fence {
        &self.fence
    }

    /// The graceful stop: worker shutdown or a handoff request.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Time since the last checkpoint (or the take).
    pub fn since_checkpoint(&self) -> Duration {
        self.checkpointed_at.lock().unwrap().elapsed()
    }

    /// Whether another worker asked for this lease.
    pub fn handoff_requested(&self) -> bool {
        self.handoff_requested.load(Ordering::Relaxed)
    }

    /// A write that has not answered within a third of the failover time is
    /// abandoned: the lease must be renewable again before its fence.
    async fn bounded<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.failover / 3, within(&self.fence, write)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError(format!("lease '{}': no answer within {:?}", self.key, self.failover / 3))),
        }
    }

    /// Keeps the row a write returned; moves the fence; notices handoff requests.
    fn stored(&self, lease: &mut Lease, next: Lease, sent: Instant) {
        if let Some(to) = &next.handoff_to {
            if !self.handoff_requested.swap(true, Ordering::Relaxed) {
                tracing::info!(shard_id = %self.key, to = %to, "handoff requested; finishing the batch");
            }
            self.stop.cancel();
        }
        *lease = next;
        if self.renewed.load(Ordering::Relaxed) {
            self.fence.set(fence_after(sent, self.failover));
        }
    }

    /// Another worker asked for the lease (or an operator rewound it): finish the
    /// batch, checkpoint and release, as for a `handoffTo` seen in the row.
    pub fn hand_off(&self) {
        if !self.handoff_requested.swap(true, Ordering::Relaxed) {
            tracing::info!(shard_id = %self.key, "asked to let the lease go; finishing the batch");
        }
        self.stop.cancel();
    }

    /// Whether the lease has been marked lost: taken over, found past its fence,
    /// or released. Its consumer then stops without checkpointing.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Marks the lease lost because its fence passed (counted as a fence trip
    /// unless it was lost already): its consumer stops without checkpointing.
    pub fn fenced(&self) {
        self.trip();
    }

    /// Resolves once the lease is lost or its fence has passed.
    pub async fn gone(&self) {
        loop {
            let fence = self.fence();
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tokio::time::sleep_until(fence) => {
                    if Instant::now() >= self.fence() {
                        self.trip();
                        return;
                    }
                }
            }
        }
    }

    /// A copy of the lease row as this worker knows it: what its take, or its
    /// last renewal or checkpoint, returned (counter, checkpoint, owner, ...).
    pub async fn snapshot(&self) -> Lease {
        self.state.lock().await.clone()
    }

    fn usable(&self) -> bool {
        if Instant::now() >= self.fence() {
            self.trip();
        }
        !self.lost.is_cancelled()
    }

    /// The fence passed with the lease still held: it counts as lost, and the
    /// trip is counted once.
    fn trip(&self) {
        if !self.lost.is_cancelled() {
            self.lost.cancel();
            metrics::counter!(crate::metrics::FENCE_TRIPS, "what" => "lease").increment(1);
            tracing::warn!(shard_id = %self.key, "the lease's fence passed before a renewal was answered; stopped");
        }
    }

    /// Renews the lease. `Ok(false)`: it is lost (taken over, or fenced).
    /// A renewal still unanswered at the fence (or still waiting behind a
    /// checkpoint) is given up there: it could no longer save the lease, and the
    /// worker must count the lease lost when its consumer stops, not a write
    /// timeout later.
    pub async fn renew(&self) -> Result<bool, StoreError> {
        let fence = self.fence();
        tokio::time::timeout_at(fence, self.renew_before_fence())
            .await
            .unwrap_or_else(|_| Err(StoreError(format!("lease '{}': not renewed before its fence", self.key))))
    }

    async fn renew_before_fence(&self) -> Result<bool, StoreError> {
        let mut lease = self.state.lock().await;
        if !self.usable() {
            return Ok(false);
        }
        let sent = Instant::now();
        match self.bounded(self.store.renew(&lease)).await? {
            Cas::Done(next) => {
                self.stored(&mut lease, next, sent);
                Ok(true)
            }
            Cas::Lost => {
                self.lost.cancel();
                Ok(false)
            }
        }
    }

    /// Stores a checkpoint, only while the lease is held and not fenced. A
    /// checkpoint behind the stored one is refused (logged, nothing written).
    pub async fn checkpoint(
        &self,
        checkpoint: Checkpoint,
        children: &[String],
        records: u64,
    ) -> Result<Cas<()>, StoreError> {
        let mut lease = self.state.lock().await;
        if !self.usable() {
            return Ok(Cas::Lost);
        }
        if let Err(e) = lease.checkpoint.advance(checkpoint.clone()) {
            tracing::error!(shard_id = %self.key, error = %e, "refusing to move a checkpoint backwards");
            return Ok(Cas::Done(()));
        }
        let sent = Instant::now();
        match self.bounded(self.store.checkpoint(&lease, &checkpoint, children, records)).await? {
            Cas::Done(next) => {
                self.stored(&mut lease, next, sent);
                *self.checkpointed_at.lock().unwrap() = Instant::now();
                Ok(Cas::Done(()))
            }
            Cas::Lost => {
                self.lost.cancel();
                Ok(Cas::Lost)
            }
        }
    }

    /// Gives the lease up (owner cleared) so another worker can take it at once.
    pub async fn release(&self) -> Result<Cas<()>, StoreError> {
        let lease = self.state.lock().await;
        let already_gone = !self.usable();
        self.lost.cancel();
        if already_gone {
            return Ok(Cas::Lost);
        }
        Ok(match self.bounded(self.store.release(&lease)).await? {
            Cas::Done(_) => Cas::Done(()),
            Cas::Lost => Cas::Lost,
        })
    }
}

/// The fence for a write sent at `sent`: a tenth of the failover time before the
/// earliest moment another worker may see the lease expired.
pub fn fence_after(sent: Instant, failover: Duration) -> Instant {
    sent + failover - failover / 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::memory::MemoryLeaseStore;
    use crate::model::{Heartbeat, SequenceNumber};

    const FAILOVER: Duration = Duration::from_secs(10);

    async fn held(store: &Arc<MemoryLeaseStore>) -> HeldLease {
        store.create(&Lease::new("s-1", Checkpoint::TrimHorizon, vec![])).await.unwrap().done().unwrap();
        let lease = store.list().await.unwrap().remove(0);
        let sent = Instant::now();
        let taken = store.take(&lease, "me").await.unwrap().done().unwrap();
        HeldLease::new(taken, sent, store.clone(), FAILOVER, CancellationToken::new())
    }

    fn seq(n: &str) -> Checkpoint {
        Checkpoint::at(SequenceNumber::parse(n).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_move_the_fence() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        let start = Instant::now();
        assert_eq!(h.fence(), start + Duration::from_secs(9));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(h.renew().await.unwrap());
        assert_eq!(h.fence(), start + Duration::from_secs(12));
        assert_eq!(store.list().await.unwrap()[0].counter, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_lost_mid_batch_cannot_be_checkpointed() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        // Another worker takes the lease while our batch is in flight.
        let row = store.list().await.unwrap().remove(0);
        store.take(&row, "thief").await.unwrap().done().unwrap();
        assert_eq!(h.checkpoint(seq("100"), &[], 1).await.unwrap(), Cas::Lost);
        assert!(h.is_lost());
        let row = store.list().await.unwrap().remove(0);
        assert_eq!((row.owner.as_deref(), row.checkpoint), (Some("thief"), Checkpoint::TrimHorizon));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_fence_nothing_is_written_even_if_the_row_is_unchanged() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(h.checkpoint(seq("5"), &[], 1).await.unwrap(), Cas::Lost);
        assert!(!h.renew().await.unwrap());
        let row = store.list().await.unwrap().remove(0);
        assert_eq!((row.counter, row.checkpoint), (1, Checkpoint::TrimHorizon));
    }

    #[tokio::test(start_paused = true)]
    async fn gone_resolves_at_the_fence_unless_renewed() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = Arc::new(held(&store).await);
        let start = Instant::now();
        let watcher = tokio::spawn({
            let h = h.clone();
            async move {
                h.gone().await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(h.renew().await.unwrap()); // fence moves to 14 s
        let gone_at = watcher.await.unwrap();
        assert_eq!(gone_at - start, Duration::from_secs(14));
        assert!(h.is_lost());
    }

    /// A store whose writes stop answering, as when the network to DynamoDB is cut.
    struct Stalling {
        inner: Arc<MemoryLeaseStore>,
        stalled: std::sync::atomic::AtomicBool,
    }

    impl Stalling {
        async fn gate(&self) {
            if self.stalled.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        }
    }

    #[async_trait::async_trait]
    impl LeaseStore for Stalling {
        async fn ensure_table(&self) -> Result<(), StoreError> {
            self.inner.ensure_table().await
        }
        async fn list(&self) -> Result<Vec<Lease>, StoreError> {
            self.gate().await;
            self.inner.list().await
        }
        async fn snapshot(&self, segment: crate::leases::Segment) -> Result<Vec<Lease>, StoreError> {
            self.gate().await;
            self.inner.snapshot(segment).await
        }
        async fn get(&self, key: &str) -> Result<Option<Lease>, StoreError> {
            self.gate().await;
            self.inner.get(key).await
        }
        async fn create(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
            self.inner.create(lease).await
        }
        async fn take_as(&self, lease: &Lease, owner: &str, inc: Option<&str>) -> Result<Cas<Lease>, StoreError> {
            self.inner.take_as(lease, owner, inc).await
        }
        async fn renew(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
            self.gate().await;
            self.inner.renew(lease).await
        }
        async fn release(&self, lease: &Lease) -> Result<Cas<Lease>, StoreError> {
            self.gate().await;
            self.inner.release(lease).await
        }
        async fn checkpoint(&self, l: &Lease, c: &Checkpoint, ch: &[String], r: u64) -> Result<Cas<Lease>, StoreError> {
            self.gate().await;
            self.inner.checkpoint(l, c, ch, r).await
        }
        async fn rewind(&self, l: &Lease, c: &Checkpoint) -> Result<Cas<Lease>, StoreError> {
            self.inner.rewind(l, c).await
        }
        async fn delete(&self, lease: &Lease) -> Result<Cas<()>, StoreError> {
            self.inner.delete(lease).await
        }
        async fn request_handoff(&self, lease: &Lease, to: &str) -> Result<Cas<Lease>, StoreError> {
            self.inner.request_handoff(lease, to).await
        }
        async fn beat(&self, hb: &Heartbeat, leases: u32, sent_at: &str) -> Result<Cas<Heartbeat>, StoreError> {
            self.gate().await;
            self.inner.beat(hb, leases, sent_at).await
        }
        async fn fleet(&self) -> Result<crate::model::Fleet, StoreError> {
            self.gate().await;
            self.inner.fleet().await
        }
        async fn ask(&self, worker_id: &str, incarnation: &str, key: &str) -> Result<(), StoreError> {
            self.inner.ask(worker_id, incarnation, key).await
        }
        async fn set_protocol(&self, from: Option<u32>, to: u32) -> Result<Cas<()>, StoreError> {
            self.inner.set_protocol(from, to).await
        }
        async fn mark_dead(&self, hb: &Heartbeat, by: &str) -> Result<Cas<()>, StoreError> {
            self.inner.mark_dead(hb, by).await
        }
        async fn remove_heartbeat(&self, hb: &Heartbeat) -> Result<(), StoreError> {
            self.inner.remove_heartbeat(hb).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_cut_off_from_the_store_stops_before_anyone_may_take_over() {
        let memory = Arc::new(MemoryLeaseStore::new());
        let h = held(&memory).await;
        let store = Arc::new(Stalling { inner: memory.clone(), stalled: false.into() });
        let h = HeldLease::new(h.snapshot().await, Instant::now(), store.clone(), FAILOVER, CancellationToken::new());
        let start = Instant::now();
        store.stalled.store(true, Ordering::Relaxed);
        // Renewals no longer answer: each is abandoned after a third of the failover time.
        for _ in 0..2 {
            assert!(h.renew().await.is_err());
        }
        // (tokio's timer rounds each timeout up to a whole millisecond)
        let two_thirds = start.elapsed();
        assert!(
            two_thirds >= FAILOVER * 2 / 3 && two_thirds <= FAILOVER * 2 / 3 + Duration::from_millis(3),
            "{two_thirds:?}"
        );
        // The third could no longer save the lease: it is given up at the fence
        // (9 s), not when its write times out (10 s).
        assert!(h.renew().await.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        h.gone().await;
        // Stopped at the fence, 9 s, before another worker may see it expired (10 s).
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        // Even once the store answers again, the zombie writes nothing.
        store.stalled.store(false, Ordering::Relaxed);
        let before = memory.list().await.unwrap().remove(0);
        assert_eq!(h.checkpoint(seq("99"), &[], 1).await.unwrap(), Cas::Lost);
        assert!(!h.renew().await.unwrap());
        assert_eq!(memory.list().await.unwrap().remove(0), before);
    }

    #[tokio::test(start_paused = true)]
    async fn checkpoints_never_go_backwards() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        assert_eq!(h.checkpoint(seq("200"), &[], 1).await.unwrap(), Cas::Done(()));
        assert_eq!(h.checkpoint(seq("100"), &[], 1).await.unwrap(), Cas::Done(()));
        assert_eq!(store.list().await.unwrap()[0].checkpoint, seq("200"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_handoff_request_is_seen_at_the_next_renewal_and_stops_gracefully() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        let row = store.list().await.unwrap().remove(0);
        store.request_handoff(&row, "taker").await.unwrap().done().unwrap();
        assert!(!h.stop_token().is_cancelled());
        assert!(h.renew().await.unwrap(), "the renewal still succeeds");
        assert!(h.handoff_requested() && h.stop_token().is_cancelled() && !h.is_lost());
        // The batch in flight is still checkpointed before the release.
        assert_eq!(h.checkpoint(seq("7"), &[], 1).await.unwrap(), Cas::Done(()));
        assert_eq!(h.release().await.unwrap(), Cas::Done(()));
        let row = store.list().await.unwrap().remove(0);
        assert_eq!((row.owner, row.handoff_to.as_deref(), row.checkpoint), (None, Some("taker"), seq("7")));
    }

    #[tokio::test(start_paused = true)]
    async fn release_clears_the_owner_and_stops_the_consumer() {
        let store = Arc::new(MemoryLeaseStore::new());
        let h = held(&store).await;
        assert_eq!(h.release().await.unwrap(), Cas::Done(()));
        assert!(h.is_lost());
        assert_eq!(store.list().await.unwrap()[0].owner, None);
    }
}

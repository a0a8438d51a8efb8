//! The memory budget of a worker: bytes of records read from Kinesis and not
//! yet written, for all its shards together (`--max-in-flight-bytes`).
//!
//! A shard's consumer reserves what it expects a GetRecords call to return
//! (its records limit times the average record size of its last batch) before
//! the call, waiting while other shards hold the budget; after the call it
//! settles the reservation to what the batch really holds, and releases it once
//! the batch is written. The process so holds at most the budget, plus, while a
//! batch of records bigger than the shard's last ones is settled, the
//! difference.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics as m;

/// A worker's memory budget: the bytes of records read and not yet written, for
/// all its shards together (`--max-in-flight-bytes`). A semaphore with one permit
/// per byte.
///
/// Build it with [`ByteBudget::new`] and share the `Arc` between the shards'
/// consumers (`ConsumerConfig::budget`); each takes a [`Reservation`] before
/// each read of its shard. The bytes held are reported as the
/// [`IN_FLIGHT_BYTES`](crate::metrics::IN_FLIGHT_BYTES) gauge.
#[derive(Debug)]
pub struct ByteBudget {
    semaphore: Arc<Semaphore>,
    total: u32,
}

/// Bytes held from the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    permit: Option<OwnedSemaphorePermit>,
}

impl ByteBudget {
    /// A budget of `total` bytes (at most 4 GiB, at least 1 byte).
    pub fn new(total: u64) -> Arc<Self> {
        let total = total.clamp(1, u64::from(u32::MAX)) as u32;
        let budget = Arc::new(Self { semaphore: Arc::new(Semaphore::new(total as usize)), total });
        budget.report();
        budget
    }

    /// Bytes held now.
    pub fn in_flight(&self) -> u64 {
        u64::from(self.total) - self.semaphore.available_permits() as u64
    }

    fn report(&self) {
        metrics::gauge!(m::IN_FLIGHT_BYTES).set(self.in_flight() as f64);
    }

    fn clamp(&self, bytes: u64) -> u32 {
        bytes.clamp(1, u64::from(self.total)) as u32
    }

    /// Waits until `bytes` (clamped to the budget) are free, and holds them.
    pub async fn reserve(self: &Arc<Self>, bytes: u64) -> Reservation {
        let permit = self.take(self.clamp(bytes)).await;
        self.report();
        Reservation { budget: self.clone(), permit: Some(permit) }
    }

    /// Takes `n` bytes, counting a wait when they are not free at once.
    async fn take(&self, n: u32) -> OwnedSemaphorePermit {
        match self.semaphore.clone().try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!(m::IN_FLIGHT_WAITS).increment(1);
                self.semaphore.clone().acquire_many_owned(n).await.expect("never closed")
            }
        }
    }
}

impl Reservation {
    /// Bytes this reservation holds now: at least 1, at most the budget's total.
    pub fn bytes(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// Makes the reservation `bytes` (clamped to the budget): gives back the
    /// surplus, or waits for the rest.
    pub async fn settle(&mut self, bytes: u64) {
        let budget = self.budget.clone();
        let want = budget.clamp(bytes) as usize;
        let permit = self.permit.as_mut().expect("held until dropped");
        let held = permit.num_permits();
        if want < held {
            drop(permit.split(held - want));
        } else if want > held {
            let more = budget.take((want - held) as u32).await;
            permit.merge(more);
        }
        budget.report();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.budget.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn reservations_wait_for_the_budget_and_settle_to_what_was_read() {
        let budget = ByteBudget::new(1000);
        let mut a = budget.reserve(600).await;
        let b = budget.reserve(300).await;
        assert_eq!(budget.in_flight(), 900);
        // A third waits until enough is given back.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(400).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiting.is_finished());
        // `a` read less than it expected: the surplus goes back, the third gets its share.
        a.settle(200).await;
        assert_eq!(a.bytes(), 200);
        let c = waiting.await.unwrap();
        assert_eq!(budget.in_flight(), 900);
        // Growing waits too; dropping gives back.
        drop(b);
        a.settle(500).await;
        assert_eq!((a.bytes(), budget.in_flight()), (500, 900));
        drop(c);
        drop(a);
        assert_eq!(budget.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_bigger_than_the_budget_holds_all_of_it_alone() {
        let budget = ByteBudget::new(1000);
        let mut a = budget.reserve(5000).await;
        assert_eq!(a.bytes(), 1000);
        a.settle(0).await;
        assert_eq!(a.bytes(), 1, "never zero: a reservation holds at least one byte");
    }
}

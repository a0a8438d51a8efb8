//! The write fence: a moment after which a task must issue no write.
//!
//! A worker holds a lease on the other workers' trust that it stops before they
//! may judge it dead. Its own futures stop at the fence (the consumer drops a
//! batch in flight), but an SDK call is several attempts, and a retry that a
//! backoff timer releases just after the fence would still be sent. So the
//! writes made for a lease run [`within`] its fence, and the DynamoDB client
//! the worker builds ([`crate::aws::dynamodb_client`]) fails every attempt that
//! would start past it, before anything is sent. Calls made outside a fence
//! (the Lambda path, operator commands) are not checked.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

tokio::task_local! {
    static FENCE: Fence;
}

/// A moment that may move (each renewal moves a lease's fence on, each
/// heartbeat the worker's), shared by its owner and the writes made within it.
/// A fence may be bounded by another ([`Fence::under`]): a lease's fence by its
/// worker's heartbeat fence, whichever passes first.
#[derive(Debug, Clone)]
pub struct Fence {
    own: Arc<Mutex<Instant>>,
    bound: Option<Arc<Mutex<Instant>>>,
}

impl Fence {
    /// A fence at `at`.
    pub fn new(at: Instant) -> Self {
        Self { own: Arc::new(Mutex::new(at)), bound: None }
    }

    /// A fence at `at`, that also passes when `bound` (as it moves) passes.
    pub fn under(bound: &Fence, at: Instant) -> Self {
        Self { own: Arc::new(Mutex::new(at)), bound: Some(bound.own.clone()) }
    }

    /// The moment past which no write may start.
    pub fn at(&self) -> Instant {
        let own = *self.own.lock().unwrap();
        match &self.bound {
            Some(bound) => own.min(*bound.lock().unwrap()),
            None => own,
        }
    }

    /// Moves the fence's own moment to `at` (a bound stays as it is).
    pub fn set(&self, at: Instant) {
        *self.own.lock().unwrap() = at;
    }

    /// Whether the fence has passed.
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at()
    }
}

/// Runs `write` within `fence`: every DynamoDB attempt it starts checks it.
pub async fn within<F: std::future::Future>(fence: &Fence, write: F) -> F::Output {
    FENCE.scope(fence.clone(), write).await
}

/// The fence of the running task's writes, if it runs within one.
pub fn current() -> Option<Instant> {
    FENCE.try_with(Fence::at).ok()
}

/// The fence of the running task's writes, if it runs within one and the fence
/// has passed: the moment it passed.
pub fn passed() -> Option<Instant> {
    current().filter(|at| Instant::now() >= *at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_write_sees_the_fence_it_runs_within_as_it_moves() {
        assert_eq!((current(), passed()), (None, None), "outside a fence");
        let fence = Fence::new(Instant::now() + Duration::from_secs(1));
        within(&fence, async {
            assert_eq!((current(), passed()), (Some(fence.at()), None));
            tokio::time::sleep(Duration::from_millis(999)).await;
            assert_eq!(passed(), None);
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(passed(), Some(fence.at()));
            fence.set(Instant::now() + Duration::from_secs(1));
            assert_eq!(passed(), None, "moved on by a renewal");
        })
        .await;
        assert_eq!(passed(), None, "outside again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_fence_passes_with_its_bound() {
        let start = Instant::now();
        let worker = Fence::new(start + Duration::from_secs(3));
        let lease = Fence::under(&worker, start + Duration::from_secs(9));
        assert_eq!(lease.at(), start + Duration::from_secs(3));
        worker.set(start + Duration::from_secs(20));
        assert_eq!(lease.at(), start + Duration::from_secs(9), "the earlier of the two");
        lease.set(start + Duration::from_secs(30));
        assert_eq!(lease.at(), start + Duration::from_secs(20));
    }
}

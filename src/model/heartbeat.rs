/// One worker process's row in the fleet's heartbeat table: proof that it is
/// alive, written every heartbeat period, one small item per worker whatever
/// the number of leases it holds.
///
/// A worker id may be reused (a pod's name, a restarted host); each process
/// draws a new `incarnation`, so a restarted worker is never mistaken for the
/// process it replaces. Others judge liveness by watching `beat` move on their
/// own monotonic clocks, never by comparing `sent_at` with theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The worker id (`--worker-id`), as it owns leases (`leaseOwner`).
    pub worker_id: String,
    /// Drawn by each process at start: the worker id's current life.
    pub incarnation: String,
    /// How many beats this incarnation has written; every beat adds one.
    pub beat: u64,
    /// The coordination protocol this worker runs now: 1 (leases renewed one by
    /// one, as every earlier release and the Java KCL do) or 2 (leases kept by
    /// this heartbeat). The fleet's protocol row says which to run.
    pub protocol: u32,
    /// The newest protocol this worker's build can run ([`Heartbeat::SPEAKS`]);
    /// rows of builds before protocol 2 lack it and read as 1. `fleet upgrade`
    /// refuses while any worker speaks less than 2.
    pub speaks: u32,
    /// How many leases the worker held when it wrote the beat.
    pub leases: u32,
    /// When the worker wrote the beat, by its own wall clock (RFC 3339): shown by
    /// `status`, never used to judge liveness.
    pub sent_at: String,
    /// The worker that found this incarnation's beat standing still and marked it
    /// dead; a marked row takes no more beats, so the marked worker learns it.
    pub dead_by: Option<String>,
    /// Leases other workers asked this incarnation to let go of (a handoff
    /// request, an operator's rewind): the owner learns of them in its next
    /// beat's answer, and removes them from the row with the beat after.
    pub asks: Vec<String>,
}

impl Heartbeat {
    /// Protocol 1: leases renewed by their owners and judged by their counters
    /// (the Java KCL 2.x rule, which every earlier release of this worker
    /// follows); the heartbeat beside them only reports.
    pub const RENEWALS: u32 = 1;
    /// Protocol 2: a lease is kept by its owner's heartbeat; its row is written
    /// only when it changes hands and at checkpoints.
    pub const HEARTBEATS: u32 = 2;
    /// The newest protocol this build runs.
    pub const SPEAKS: u32 = Self::HEARTBEATS;

    /// A first heartbeat (beat 0, not yet written) for `worker_id` in `incarnation`.
    pub fn new(worker_id: impl Into<String>, incarnation: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            incarnation: incarnation.into(),
            beat: 0,
            protocol: Self::RENEWALS,
            speaks: Self::SPEAKS,
            leases: 0,
            sent_at: String::new(),
            dead_by: None,
            asks: Vec::new(),
        }
    }

    /// The row's key within the fleet: `<worker id>#<incarnation>`.
    pub fn key(&self) -> String {
        format!("{}#{}", self.worker_id, self.incarnation)
    }

    /// The row as stored after one more beat with `leases` held, sent at `sent_at`.
    pub fn next(&self, leases: u32, sent_at: impl Into<String>) -> Self {
        Self { beat: self.beat + 1, leases, sent_at: sent_at.into(), ..self.clone() }
    }
}

/// The fleet as one read of the heartbeat table sees it: the protocol row and
/// every worker's row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fleet {
    /// The protocol the fleet runs, set by `fleet upgrade` and `fleet rollback`
    /// (or by the first worker on a new table); `None` before anyone set it.
    pub protocol: Option<u32>,
    /// Every worker's row, the dead included.
    pub workers: Vec<Heartbeat>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_worker_id_is_another_row() {
        let first = Heartbeat::new("worker-1", "8f3a");
        let second = Heartbeat::new("worker-1", "c01d");
        assert_ne!(first.key(), second.key());
        assert_eq!(first.key(), "worker-1#8f3a");
    }

    #[test]
    fn a_beat_counts_and_keeps_the_incarnation() {
        let hb = Heartbeat::new("w", "1").next(3, "2026-12-06T13:00:00Z").next(4, "2026-12-06T13:00:02Z");
        assert_eq!((hb.beat, hb.leases, hb.incarnation.as_str()), (2, 4, "1"));
        assert_eq!(hb.sent_at, "2026-12-06T13:00:02Z");
    }
}

//! Taking leases: take rounds (free and expired leases, steals by handoff),
//! the segment watch for expiries between rounds, and requested handoffs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{State, Watch, Worker};
use crate::engine::held::HeldLease;
use crate::engine::taker::{self, TakerConfig};
use crate::leases::{Cas, Segment, StoreError};
use crate::metrics as m;
use crate::model::{Heartbeat, Lease};

/// The states of `stream_worker_shards`, all reported (zero included).
const SHARD_STATES: &[&str] = &["owned", "pending-handoff", "expired", "unowned", "waiting-for-parents", "finished"];

impl Worker {
    /// Takes free leases; with `steal`, also asks overloaded workers for leases
    /// and takes over handoffs that timed out.
    pub(super) async fn take_round(
        &self,
        state: &mut State,
        consumers_stop: &CancellationToken,
        steal: bool,
    ) -> Result<(), StoreError> {
        let cfg = &self.config;
        if state.beats.fence().passed() {
            // No answered beat (yet, or lately): taking would be holding a lease
            // nobody can see kept.
            state.unsettled = true;
            return Ok(());
        }
        let leases = self.store.snapshot(Segment::WHOLE).await?;
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "round").increment(1);
        self.health.store_ok();
        let now = Instant::now();
        state.seen.observe(&leases, now);
        state.next_expiry = state.seen.next_expiry(&leases, &cfg.worker_id, now, cfg.renewal_failover);
        let by_state = {
            let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
            let mut counts: HashMap<&str, usize> = SHARD_STATES.iter().map(|s| (*s, 0)).collect();
            for lease in &leases {
                *counts
                    .entry(taker::state_of(lease, &by_key, Some((&state.seen, now, cfg.renewal_failover))))
                    .or_default() += 1;
            }
            counts
        };
        for (name, count) in by_state {
            metrics::gauge!(m::SHARDS, "state" => name).set(count as f64);
        }
        let held: HashSet<String> = state.held.keys().cloned().collect();
        let taker_cfg = TakerConfig {
            failover: cfg.renewal_failover,
            max_leases: cfg.max_leases,
            max_leases_to_steal: cfg.max_leases_to_steal,
        };
        let plan = taker::plan(&cfg.worker_id, &held, &leases, &state.seen, now, &taker_cfg, &mut state.rng);
        metrics::gauge!(m::WORKERS_SEEN).set(plan.workers as f64);
        state.workers = plan.workers;
        state.balanced = plan.balanced;
        // Taking, asking, or more than a lease short of its share (waiting to
        // steal): not settled, back after the quick interval.
        state.unsettled =
            !plan.take.is_empty() || !plan.steal.is_empty() || state.held.len() + state.asked.len() + 1 < plan.target;
        tracing::debug!(worker_id = %cfg.worker_id, workers = plan.workers, target = plan.target,
            take = plan.take.len(), steal = plan.steal.len(), next_expiry = ?state.next_expiry.map(|t| t - now), "take round");
        let live = taker::live_workers(&cfg.worker_id, &leases, &state.seen, now, cfg.renewal_failover);
        self.processor.fleet_size_changed(live.len());
        let segment = taker::watch_segment(&cfg.worker_id, &live, cfg.renewal_failover);
        if segment != state.segment {
            tracing::debug!(worker_id = %cfg.worker_id, ?segment, workers = live.len(), "expiry watch segment");
            state.segment = segment;
            state.flagged.clear();
        }
        if segment.is_some() {
            // Segment watches see expiries coming; a full round for each would
            // cost what they save.
            state.next_expiry = None;
        }
        drop(live);
        let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
        // Handoffs asked for: done (released, taken, or cleared) or timed out.
        let me = cfg.worker_id.as_str();
        let mut overdue = Vec::new();
        let mut released = Vec::new();
        let seen = &state.seen;
        state.asked.retain(|key, asked_at| match by_key.get(key.as_str()) {
            Some(l) if l.handoff_to.as_deref() == Some(me) && l.owner.as_deref().is_some_and(|o| o != me) => {
                // An owner that beats (protocol 2) is never taken from: marking
                // it dead would leave it writing until its fence. It hands the
                // lease over when its consumer can; this worker stops waiting.
                let beats = matches!(seen.to_mark(l), Some(heartbeat) if heartbeat.beat > 0);
                if beats
                    && !seen.is_expired(l, now, cfg.failover)
                    && now.duration_since(*asked_at) >= cfg.renewal_failover
                {
                    false
                } else if now.duration_since(*asked_at) >= cfg.renewal_failover {
                    overdue.push(key.clone());
                    false
                } else {
                    true
                }
            }
            // Released for this worker: it is reserved for it, whatever its share
            // says now (others may claim it only after a failover time).
            Some(l) if l.handoff_to.as_deref() == Some(me) && l.owner.is_none() => {
                if !plan.take.contains(key) {
                    released.push(key.clone());
                }
                false
            }
            _ => false,
        });
        let mut wanted: Vec<(&Lease, bool)> =
            plan.take.iter().chain(&released).map(|k| (by_key[k.as_str()], false)).collect();
        if steal {
            self.clean_up(&leases).await?;
            wanted.extend(overdue.iter().map(|k| (by_key[k.as_str()], true)));
            for key in &plan.steal {
                let lease = by_key[key.as_str()];
                if let Cas::Done(_) = self.store.request_handoff(lease, me).await? {
                    if let (Some(owner), Some(incarnation)) = (&lease.owner, &lease.owner_incarnation) {
                        // Protocol 2 owners renew nothing: they hear of it in their
                        // next beat's answer.
                        self.store.ask(owner, incarnation, key).await?;
                        metrics::counter!(m::LEASE_HANDOFFS, "side" => "asked").increment(1);
                    }
                    metrics::counter!(m::LEASE_HANDOFFS, "side" => "requested").increment(1);
                    tracing::info!(shard_id = %key, worker_id = %me, owner = lease.owner.as_deref().unwrap_or("-"),
                        "asked for a handoff");
                    state.asked.insert(key.clone(), now);
                }
            }
        }
        let result = self.take_leases(state, consumers_stop, wanted).await;
        state.known = leases;
        result
    }

    /// Reads this worker's segment of the table (an eventually consistent
    /// parallel-scan segment) and records what it sees, so that an orphaned lease
    /// of the segment is seen expire within about a second of its failover time
    /// without a full scan.
    pub(super) async fn watch_segment(&self, state: &mut State) -> Result<Watch, StoreError> {
        let Some(segment) = state.segment else { return Ok(Watch::default()) };
        let cfg = &self.config;
        let part = self.store.snapshot(segment).await?;
        metrics::counter!(m::LEASE_TABLE_SCANS, "kind" => "watch").increment(1);
        self.health.store_ok();
        let now = Instant::now();
        state.seen.observe_part(&part, now);
        let next_expiry = state.seen.next_expiry(&part, &cfg.worker_id, now, cfg.renewal_failover);
        // Parents as last seen: in this segment now, or at the last take round.
        let mut by_key: HashMap<&str, &Lease> = state.known.iter().map(|l| (l.key.as_str(), l)).collect();
        by_key.extend(part.iter().map(|l| (l.key.as_str(), l)));
        let me = cfg.worker_id.as_str();
        let free: HashSet<&str> = part
            .iter()
            .filter(|l| {
                !state.held.contains_key(&l.key)
                    && l.handoff_to.as_deref().is_none_or(|to| to == me)
                    && state.seen.is_expired(l, now, cfg.renewal_failover)
                    && taker::is_ready(l, &by_key)
            })
            .map(|l| l.key.as_str())
            .collect();
        let in_part: HashSet<&str> = part.iter().map(|l| l.key.as_str()).collect();
        state.flagged.retain(|k| !in_part.contains(k.as_str()) || free.contains(k.as_str()));
        let mut take_now = false;
        for key in free {
            take_now |= state.flagged.insert(key.to_owned());
        }
        Ok(Watch { take_now, next_expiry })
    }

    /// Reads each lease this worker asked to be handed (one GetItem each) and
    /// takes the ones their owners released: a handoff completes within about a
    /// second of the release, with no scan.
    pub(super) async fn watch_handoffs(
        &self,
        state: &mut State,
        consumers_stop: &CancellationToken,
    ) -> Result<(), StoreError> {
        let me = self.config.worker_id.as_str();
        let mut released = Vec::new();
        for key in state.asked.keys().cloned().collect::<Vec<_>>() {
            match self.store.get(&key).await? {
                Some(lease) if lease.handoff_to.as_deref() == Some(me) && lease.owner.is_none() => {
                    state.asked.remove(&key);
                    released.push(lease);
                }
                Some(lease) if lease.handoff_to.as_deref() == Some(me) && !lease.is_owned_by(me) => {}
                // Taken, cleared, or gone: nothing to watch.
                _ => {
                    state.asked.remove(&key);
                }
            }
        }
        self.take_leases(state, consumers_stop, released.iter().map(|l| (l, false)).collect()).await
    }

    /// Takes `wanted` (a lease as last read, and whether it is taken over from a
    /// live owner) and starts a consumer for each lease won.
    async fn take_leases(
        &self,
        state: &mut State,
        consumers_stop: &CancellationToken,
        wanted: Vec<(&Lease, bool)>,
    ) -> Result<(), StoreError> {
        let cfg = &self.config;
        for (lease, stolen) in wanted {
            let key = &lease.key;
            if stolen {
                tracing::warn!(shard_id = %key, owner = lease.owner.as_deref().unwrap_or("-"),
                    "handoff not done within the failover time; taking the lease over");
            }
            if let Some(heartbeat) = state.seen.to_mark(lease) {
                // The owner may still beat: take only once its incarnation is
                // marked dead, on the very beat this worker watched stand still.
                metrics::counter!(m::WORKERS_MARKED_DEAD).increment(1);
                match self.store.mark_dead(&heartbeat, &cfg.worker_id).await? {
                    Cas::Done(()) => {
                        state.seen.mark_dead(&heartbeat.key());
                        if heartbeat.beat > 0 {
                            tracing::warn!(worker_id = %cfg.worker_id, dead = %heartbeat.key(), beat = heartbeat.beat,
                                "marked a worker dead: its heartbeat stood still for the failover time");
                        }
                    }
                    Cas::Lost => {
                        tracing::debug!(shard_id = %key, owner = %heartbeat.key(), "the owner beats; not taking");
                        continue;
                    }
                }
            }
            let sent = Instant::now();
            let incarnation = state.heartbeat.incarnation.as_str();
            match self.store.take_as(lease, &cfg.worker_id, Some(incarnation)).await? {
                Cas::Done(taken) => {
                    let previous = lease.owner.as_deref().unwrap_or("<none>");
                    if stolen {
                        metrics::counter!(m::LEASES_STOLEN).increment(1);
                    } else {
                        metrics::counter!(m::LEASES_TAKEN).increment(1);
                    }
                    tracing::info!(shard_id = %key, worker_id = %cfg.worker_id, previous_owner = previous,
                        lease_counter = taken.counter, checkpoint = %taken.checkpoint, stolen, "lease taken");
                    metrics::gauge!(m::CHECKPOINT_AGE_SECONDS, "shard_id" => key.clone()).set(0.0);
                    let stop = consumers_stop.child_token();
                    let held = Arc::new(HeldLease::kept(
                        taken,
                        sent,
                        self.store.clone(),
                        cfg.renewal_failover,
                        stop,
                        &state.beats.fence(),
                        state.protocol == Heartbeat::RENEWALS,
                    ));
                    self.start_consumer(state, held);
                }
                Cas::Lost => {
                    tracing::debug!(shard_id = %key, "another worker took the lease first")
                }
            }
        }
        metrics::gauge!(m::LEASES_HELD).set(state.held.len() as f64);
        Ok(())
    }
}

//! What to take in a take round: pure decisions over a snapshot of the table.
//!
//! Expiry is judged on this worker's own monotonic clock, never by comparing
//! clocks of other machines. A lease is expired when it has no owner, or:
//! - (protocol 2) its owner's heartbeat row (`owner#ownerIncarnation`) is marked
//!   dead, or its beat has not moved for the heartbeat failover time since this
//!   worker first saw its current value;
//! - (protocol 1: owners that renew, older releases, the Java KCL, rows without
//!   `ownerIncarnation`) its counter has not moved for the counter failover time
//!   since this worker first saw its current value.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

use crate::model::{Fleet, Heartbeat, Lease};

/// How often a requested handoff's lease is read, and the shortest take round.
const QUICK_TAKE_INTERVAL: Duration = Duration::from_secs(1);

/// The quick interval for a failover time: handoff watches, the shortest round.
pub fn quick_take_interval(failover: Duration) -> Duration {
    QUICK_TAKE_INTERVAL.min(failover / 2)
}

/// When this worker last saw each lease's counter change, and each worker's
/// beat.
#[derive(Debug, Default)]
pub struct Observations {
    seen: HashMap<String, (u64, Instant)>,
    /// Heartbeat rows by key (`worker#incarnation`), as last read.
    beats: HashMap<String, BeatSeen>,
    /// How long a beat stands still before its leases expire (protocol 2's
    /// failover time).
    beat_failover: Duration,
    /// Until when the heartbeat rows read last may judge a lease by its counter
    /// when its owner's row is not among them: a worker whose heartbeat reads
    /// fail takes no lease of a worker that may beat.
    fresh_until: Option<Instant>,
    /// This worker's id and incarnation: its own leases are never expired to it.
    me: Option<(String, String)>,
}

/// A heartbeat row as this worker saw it, and since when its beat stands still.
#[derive(Debug, Clone)]
struct BeatSeen {
    beat: u64,
    since: Instant,
    dead: bool,
    protocol: u32,
}

/// What changed in the fleet between two heartbeat reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FleetChange {
    /// A row was removed (a graceful stop: its leases were released) or newly
    /// marked dead: there are leases to take.
    pub left: bool,
    /// A row appeared: a worker joined.
    pub joined: bool,
}

impl Observations {
    /// Observations of a worker `worker_id` in `incarnation`, that judges
    /// protocol 2 owners dead after `beat_failover` of standstill.
    pub fn new(worker_id: &str, incarnation: &str, beat_failover: Duration) -> Self {
        Self { beat_failover, me: Some((worker_id.to_owned(), incarnation.to_owned())), ..Self::default() }
    }

    /// Observations of an onlooker (`status`), that judges protocol 2 owners dead
    /// after `beat_failover` of standstill.
    pub fn watching(beat_failover: Duration) -> Self {
        Self { beat_failover, ..Self::default() }
    }

    /// This worker beats as a new incarnation from now on.
    pub fn set_incarnation(&mut self, incarnation: &str) {
        if let Some((_, inc)) = &mut self.me {
            *inc = incarnation.to_owned();
        }
    }

    /// Records the heartbeat rows read at `now` (an answer that is good until
    /// `fresh_for` later); says what changed since the last read.
    pub fn observe_fleet(&mut self, fleet: &Fleet, now: Instant, fresh_for: Duration) -> FleetChange {
        let mut change = FleetChange::default();
        let keys: HashSet<String> = fleet.workers.iter().map(Heartbeat::key).collect();
        let before = self.beats.len();
        self.beats.retain(|k, _| keys.contains(k));
        change.left |= self.beats.len() < before;
        for row in &fleet.workers {
            let dead = row.dead_by.is_some();
            match self.beats.get_mut(&row.key()) {
                Some(seen) => {
                    change.left |= dead && !seen.dead;
                    if seen.beat != row.beat {
                        seen.beat = row.beat;
                        seen.since = now;
                    }
                    seen.dead |= dead;
                    seen.protocol = row.protocol;
                }
                None => {
                    change.joined |= !dead;
                    self.beats.insert(row.key(), BeatSeen { beat: row.beat, since: now, dead, protocol: row.protocol });
                }
            }
        }
        self.fresh_until = Some(now + fresh_for);
        change
    }

    /// Records that this worker marked `key`'s incarnation dead (or found it so).
    pub fn mark_dead(&mut self, key: &str) {
        if let Some(seen) = self.beats.get_mut(key) {
            seen.dead = true;
        }
    }

    /// The heartbeat row keeping `lease`, if its owner is judged by one: the row
    /// `owner#ownerIncarnation`, when this worker saw it written by protocol 2.
    fn keeper(&self, lease: &Lease) -> Option<&BeatSeen> {
        let key = format!("{}#{}", lease.owner.as_deref()?, lease.owner_incarnation.as_deref()?);
        self.beats.get(&key).filter(|b| b.dead || b.protocol >= Heartbeat::HEARTBEATS)
    }

    /// Whether `lease` is this worker's own (this incarnation's).
    pub fn is_mine(&self, lease: &Lease) -> bool {
        matches!(&self.me, Some((id, inc))
            if lease.owner.as_deref() == Some(id.as_str()) && lease.owner_incarnation.as_deref() == Some(inc.as_str()))
    }

    /// Whether `lease` is judged by its counter (no protocol 2 heartbeat row keeps it).
    fn by_counter(&self, lease: &Lease) -> bool {
        self.keeper(lease).is_none()
    }

    /// The heartbeat to mark dead before taking `lease` (as this worker last saw
    /// it: the marking applies only if the beat has not moved since), or `None`
    /// when its take needs none: an unowned lease, a lease judged by its counter
    /// whose owner does not beat, an incarnation already dead. A lease naming an
    /// incarnation whose row this worker never saw gets a dead marker (beat 0),
    /// which applies only where no row exists.
    pub fn to_mark(&self, lease: &Lease) -> Option<Heartbeat> {
        if self.is_mine(lease) {
            return None;
        }
        let owner = lease.owner.as_deref()?;
        let incarnation = lease.owner_incarnation.as_deref()?;
        let key = format!("{owner}#{incarnation}");
        let mut heartbeat = Heartbeat::new(owner, incarnation);
        match self.beats.get(&key) {
            Some(seen) if seen.dead || seen.protocol < Heartbeat::HEARTBEATS => None,
            Some(seen) => {
                heartbeat.beat = seen.beat;
                Some(heartbeat)
            }
            None => Some(heartbeat),
        }
    }

    /// The live protocol 2 rows of other workers, with when each will have
    /// stood still for the heartbeat failover time.
    fn beat_expiries(&self) -> impl Iterator<Item = (&String, &BeatSeen, Instant)> {
        let me = self.me.as_ref().map(|(id, inc)| format!("{id}#{inc}"));
        self.beats
            .iter()
            .filter(move |(k, b)| !b.dead && b.protocol >= Heartbeat::HEARTBEATS && Some(*k) != me.as_ref())
            .map(|(k, b)| (k, b, b.since + self.beat_failover))
    }

    /// The other workers whose heartbeat row is live at `now` (not marked dead,
    /// and its beat moved within the heartbeat failover time), whatever their
    /// protocol and whether they hold leases: a worker that just started counts
    /// in the fleet's shares before it owns anything.
    pub fn beating(&self, now: Instant) -> HashSet<&str> {
        let me = self.me.as_ref().map(|(id, _)| id.as_str());
        self.beats
            .iter()
            .filter(|(_, b)| !b.dead && now.duration_since(b.since) < self.beat_failover)
            .filter_map(|(k, _)| k.rsplit_once('#').map(|(id, _)| id))
            .filter(|id| Some(*id) != me)
            .collect()
    }

    /// When the next beat of another live protocol 2 worker will have stood
    /// still for the heartbeat failover time, unless it moves before.
    pub fn next_beat_expiry(&self, now: Instant) -> Option<Instant> {
        self.beat_expiries().map(|(_, _, at)| at).filter(|at| *at > now).min()
    }

    /// The incarnations (`worker#incarnation` and the beat that stood still)
    /// whose beat has stood still for the heartbeat failover time at `now`,
    /// not yet marked dead.
    pub fn expired_beats(&self, now: Instant) -> Vec<(String, u64)> {
        self.beat_expiries().filter(|(_, _, at)| *at <= now).map(|(k, b, _)| (k.clone(), b.beat)).collect()
    }

    /// Records a snapshot taken at `now`; forgets leases no longer in the table.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        let keys: HashSet<&str> = leases.iter().map(|l| l.key.as_str()).collect();
        self.seen.retain(|k, _| keys.contains(k.as_str()));
        self.observe_part(leases, now);
    }

    /// Records part of the table (a segment) read at `now`; keeps what it knows
    /// of the rest.
    pub fn observe_part(&mut self, leases: &[Lease], now: Instant) {
        for lease in leases {
            let entry = self.seen.entry(lease.key.clone()).or_insert((lease.counter, now));
            if entry.0 != lease.counter {
                *entry = (lease.counter, now);
            }
        }
    }

    /// How long this worker has seen the lease's counter stand still.
    pub fn unchanged_for(&self, lease: &Lease, now: Instant) -> Duration {
        match self.seen.get(&lease.key) {
            Some((counter, since)) if *counter == lease.counter => now.duration_since(*since),
            _ => Duration::ZERO,
        }
    }

    /// When the first lease of another worker that stood still between this
    /// worker's last two readings will have stood still for `failover`: the
    /// moment to read the table again, to take it as soon as it expires. A live
    /// owner renews every third of a failover time, so when rounds are further
    /// apart (a large fleet) only a dead owner's leases stand still.
    pub fn next_expiry(&self, leases: &[Lease], me: &str, now: Instant, failover: Duration) -> Option<Instant> {
        leases
            .iter()
            .filter(|l| l.owner.as_deref().is_some_and(|o| o != me) && !l.checkpoint.is_shard_end())
            .filter(|l| self.by_counter(l))
            .filter_map(|l| match self.seen.get(&l.key) {
                Some((counter, since)) if *counter == l.counter && *since < now && *since + failover > now => {
                    Some(*since + failover)
                }
                _ => None,
            })
            .min()
    }

    /// Whether `lease` is expired at `now`: it has no owner; or its owner's
    /// protocol 2 heartbeat row is dead or has stood still for the heartbeat
    /// failover time; or, judged by its counter, this worker has seen the
    /// counter stand still for at least `failover`. A lease not yet seen at its
    /// current counter counts as alive, and so does a lease naming an
    /// incarnation while this worker's heartbeat reads are stale, and this
    /// worker's own.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        if lease.owner.is_none() {
            return true;
        }
        if self.is_mine(lease) {
            return false;
        }
        if let Some(keeper) = self.keeper(lease) {
            return keeper.dead || now.duration_since(keeper.since) >= self.beat_failover;
        }
        if lease.owner_incarnation.is_some() && self.fresh_until.is_some_and(|until| now > until) {
            return false;
        }
        match self.seen.get(&lease.key) {
            Some((counter, since)) if *counter == lease.counter => now.duration_since(*since) >= failover,
            // Not observed at this counter yet: it just moved, so it is alive.
            _ => false,
        }
    }
}

/// The limits of a take round: the failover time and how many leases to hold
/// and to steal (the fields of the same names in
/// [`WorkerConfig`](crate::engine::coordinator::WorkerConfig)).
#[derive(Debug, Clone, Copy)]
pub struct TakerConfig {
    /// The failover time: a lease whose counter has stood still this long is expired.
    pub failover: Duration,
    /// No more than this many leases per worker.
    pub max_leases: usize,
    /// No more than this many leases asked of one worker per take round.
    pub max_leases_to_steal: usize,
}

/// A take round's decision.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Expired or unowned leases to take.
    pub take: Vec<String>,
    /// Leases to ask the most loaded worker to hand over (a steal is graceful:
    /// the owner finishes its batch, checkpoints and releases).
    pub steal: Vec<String>,
    /// Workers holding unexpired leases or beating, this one included.
    pub workers: usize,
    /// The share this worker aims at.
    pub target: usize,
    /// There are ready leases, each kept by a live worker, and the workers'
    /// shares are within one lease of each other: nothing to do until the
    /// fleet or the shards change.
    pub balanced: bool,
}

/// Whether a lease may be processed now: not finished, and every parent finished
/// (a parent without a lease row is past retention, so done).
pub fn is_ready(lease: &Lease, by_key: &HashMap<&str, &Lease>) -> bool {
    !lease.checkpoint.is_shard_end()
        && lease.parents.iter().all(|p| by_key.get(p.as_str()).is_none_or(|parent| parent.checkpoint.is_shard_end()))
}

/// The workers that hold an unexpired lease of an unfinished shard, `me`
/// included: the fleet sharing the tables' write limits. Unlike [`Plan::workers`]
/// a handoff's target does not count until it owns a lease: a worker that asked
/// and died would otherwise count until the handoff is over.
pub fn live_workers<'a>(
    me: &'a str,
    leases: &'a [Lease],
    seen: &Observations,
    now: Instant,
    failover: Duration,
) -> std::collections::BTreeSet<&'a str> {
    leases
        .iter()
        .filter(|l| !l.checkpoint.is_shard_end() && !seen.is_expired(l, now, failover))
        .filter_map(|l| l.owner.as_deref())
        .chain([me])
        .collect()
}

/// How many workers read each segment of the table in expiry watches.
pub const WATCHERS_PER_SEGMENT: u32 = 5;

/// The segment of the lease table `me` watches for expiries between take rounds,
/// or `None` while the fleet is small enough for take rounds alone: up to a
/// failover time's worth of workers (one per second), whose rounds come every
/// `workers` seconds, so that some worker reads the table about once a second.
///
/// A larger fleet splits the table into one segment of a parallel scan per
/// [`WATCHERS_PER_SEGMENT`] live workers (at least 2), each watched by the
/// workers of one contiguous block of the sorted worker ids. Each watcher reads
/// its segment every [`watch_interval`], so each segment is read about once a
/// second and an orphaned lease is seen expire within about a second of its
/// failover time, while full take rounds (every [`round_interval`]: three
/// failover times) only balance the fleet. The fleet's reads stay flat as it
/// grows: the table once a second in segments, plus each worker's full round.
pub fn watch_segment(
    me: &str,
    live: &std::collections::BTreeSet<&str>,
    failover: Duration,
) -> Option<crate::leases::Segment> {
    let workers = live.len() as u32;
    if u128::from(workers) * 1000 <= failover.as_millis() {
        return None;
    }
    let total = (workers / WATCHERS_PER_SEGMENT).clamp(2, workers);
    let rank = live.iter().position(|w| *w == me)? as u32;
    Some(crate::leases::Segment { index: rank * total / workers, total })
}

/// The delay before a worker's next read of its segment: [`WATCHERS_PER_SEGMENT`]
/// seconds, so that a segment's watchers together read it about once a second,
/// at most half a failover time; ±50 %, at least the quick interval.
pub fn watch_interval(failover: Duration, rng: &mut impl Rng) -> Duration {
    let shortest = quick_take_interval(failover);
    let base = (Duration::from_secs(1) * WATCHERS_PER_SEGMENT).min(failover / 2).max(shortest);
    base.mul_f64(rng.gen_range(0.5..=1.5)).max(shortest)
}

/// Decides a take round for `me`, holding `held`, over the table `leases`.
pub fn plan(
    me: &str,
    held: &HashSet<String>,
    leases: &[Lease],
    seen: &Observations,
    now: Instant,
    config: &TakerConfig,
    rng: &mut impl Rng,
) -> Plan {
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let ready: Vec<&Lease> = leases.iter().filter(|l| is_ready(l, &by_key)).collect();

    // Live load per worker over the leases that can be worked on. A lease being
    // handed over counts for the worker it goes to, and can be stolen by no one.
    // Ordered, so that a seeded rng makes the same choices (simulations replay).
    let mut load: std::collections::BTreeMap<&str, Vec<&Lease>> = std::collections::BTreeMap::new();
    let mut incoming = 0;
    for lease in leases {
        let Some(owner) = lease.owner.as_deref() else { continue };
        if seen.is_expired(lease, now, config.failover) {
            continue;
        }
        let goes_to = lease.handoff_to.as_deref().unwrap_or(owner);
        if goes_to == me {
            incoming += usize::from(owner != me && is_ready(lease, &by_key));
        } else {
            let entry = load.entry(goes_to).or_default();
            if is_ready(lease, &by_key) && lease.handoff_to.is_none() && owner != me {
                entry.push(lease);
            }
        }
    }
    // Workers that beat count too, leases or not: a fleet starting together
    // shares the table out in its first rounds instead of by steals.
    for worker in seen.beating(now) {
        if worker != me {
            load.entry(worker).or_default();
        }
    }
    let workers = load.len() + 1;
    let target = ready.len().div_ceil(workers).min(config.max_leases);
    let mine = ready.iter().filter(|l| held.contains(&l.key)).count() + incoming;
    // Balanced: every ready lease kept by a live worker, and every worker's
    // share (leases coming to it included) within one of every other's.
    let mut shares: std::collections::BTreeMap<&str, usize> = load.keys().map(|w| (*w, 0)).collect();
    shares.insert(me, mine);
    let mut kept = 0;
    for lease in &ready {
        let Some(owner) = lease.owner.as_deref() else { continue };
        if seen.is_expired(lease, now, config.failover) {
            continue;
        }
        kept += 1;
        let goes_to = lease.handoff_to.as_deref().unwrap_or(owner);
        if goes_to != me {
            *shares.entry(goes_to).or_default() += 1;
        }
    }
    let (least, most) = (shares.values().min().copied(), shares.values().max().copied());
    // No ready lease yet (a table another worker is filling) is not settled.
    let balanced =
        !ready.is_empty() && kept == ready.len() && most.zip(least).is_none_or(|(most, least)| most - least <= 1);
    let mut plan = Plan { workers, target, balanced, ..Plan::default() };
    // A dead worker's leases wait for no one: a worker takes them up to twice its
    // share, so that the first survivors to see them expire take them all, and
    // balancing spreads them later. Free leases (a fleet starting, a release)
    // only up to its share, which keeps a starting fleet from converging by steals.
    let orphans =
        ready.iter().any(|l| l.owner.is_some() && !held.contains(&l.key) && seen.is_expired(l, now, config.failover));
    let room = if orphans { (2 * target).min(config.max_leases) } else { target };
    // A lease released for this worker (a handoff it asked for) is its own,
    // whatever it holds by now: others wait a failover time for it. So is a
    // lease that still names this incarnation (let go when its fence passed):
    // nobody else may take it while this worker beats, and a thief's handoff
    // request for it would wait for a consumer that is not running.
    plan.take = ready
        .iter()
        .filter(|l| !held.contains(&l.key))
        .filter(|l| (l.owner.is_none() && l.handoff_to.as_deref() == Some(me)) || seen.is_mine(l))
        .map(|l| l.key.clone())
        .collect();
    let mine = mine + plan.take.len();
    if mine >= room {
        return plan;
    }
    let needed = room - mine;

    // A lease released for another worker's handoff is reserved for it, unless
    // it has stood unowned for a whole failover time (that worker died).
    let claimable = |l: &Lease| match l.handoff_to.as_deref() {
        None => true,
        // Released for this worker: taken above.
        Some(to) if to == me => l.owner.is_some(),
        Some(_) => seen.unchanged_for(l, now) >= config.failover,
    };
    let mut expired: Vec<&Lease> = ready
        .iter()
        .copied()
        .filter(|l| !held.contains(&l.key) && seen.is_expired(l, now, config.failover) && claimable(l))
        .collect();
    if !expired.is_empty() {
        expired.sort_by(|a, b| a.key.cmp(&b.key));
        let take: Vec<&Lease> = if !orphans && expired.iter().all(|l| l.owner.is_none()) {
            // Free leases (a fleet starting, workers leaving): the workers short
            // of their share, as this view sees them, each take their own part
            // of them, in key order (the workers sorted by id), in proportion to
            // what each lacks, so that a lease changes hands once and the shares
            // come out within one of each other. A lease left free for a
            // failover time (its part's worker took none) is anyone's.
            let part = my_part(&shares, me, room, expired.len());
            let stalled = |l: &&Lease| seen.unchanged_for(l, now) >= config.failover;
            let (mut mine, mut stalled_elsewhere) = (Vec::new(), Vec::new());
            for (i, lease) in expired.iter().copied().enumerate() {
                if part.contains(&i) {
                    mine.push(lease);
                } else if stalled(&lease) {
                    stalled_elsewhere.push(lease);
                }
            }
            mine.extend(stalled_elsewhere);
            mine
        } else {
            // A dead worker's leases: the first survivors to see them take them,
            // each from its rank's part on (the workers sorted by id). Views that
            // differ overlap a little, not at random.
            let rank = load.keys().filter(|w| **w < me).count();
            let from = rank * expired.len() / workers;
            expired.rotate_left(from);
            expired
        };
        let reserved = plan.take.len();
        plan.take.extend(take.into_iter().take(needed.min(max_takes(ready.len()))).map(|l| l.key.clone()));
        if plan.take.len() > reserved {
            return plan;
        }
        // None of them is this worker's to take: it may still steal.
    }

    // Nothing free: steal from the workers above their share, each down to it,
    // at most `max_leases_to_steal` from one worker a round. The leases above
    // the share, the most loaded worker's first, are shared out among the
    // workers short of theirs (as this view sees them) in proportion to what
    // each lacks, as free leases are: two thieves do not both bring one worker
    // below its share, and many thieves empty one heavily loaded worker in a
    // round. Leases that changed hands least since their last checkpoint go
    // first (`ownerSwitchesSinceCheckpoint`), so that a lease a worker has just
    // stolen is not stolen on from it while the fleet converges; ties are
    // broken at random.
    let mut victims: Vec<(&str, &Vec<&Lease>)> =
        load.iter().filter(|(_, leases)| leases.len() > target).map(|(w, leases)| (*w, leases)).collect();
    victims.sort_by_key(|(w, leases)| (std::cmp::Reverse(leases.len()), *w));
    let above: Vec<usize> = victims.iter().map(|(_, leases)| leases.len() - target).collect();
    let part = my_part(&shares, me, target, above.iter().sum());
    let mut asks: Vec<(&Vec<&Lease>, usize)> = Vec::new();
    let mut first = 0;
    for ((_, leases), above) in victims.iter().zip(above) {
        let overlap = part.end.min(first + above).saturating_sub(part.start.max(first));
        if overlap > 0 {
            asks.push((*leases, overlap));
        }
        first += above;
    }
    if victims.is_empty() && needed > 1 {
        // Nobody above the share, and this worker short by more than one (2/2/0
        // over 4 shards): one from a most loaded worker, or it would stay idle.
        let mut owners: Vec<&Vec<&Lease>> = load.values().filter(|leases| leases.len() == target).collect();
        owners.shuffle(rng);
        asks.extend(owners.into_iter().take(1).map(|leases| (leases, 1)));
    }
    for (victim, count) in asks {
        let room = needed - plan.steal.len();
        let mut candidates = victim.clone();
        candidates.shuffle(rng);
        candidates.sort_by_key(|l| l.owner_switches);
        let count = count.min(config.max_leases_to_steal).min(room);
        plan.steal.extend(candidates.into_iter().take(count).map(|l| l.key.clone()));
    }
    plan
}

/// This worker's part of `items` things to share out (free leases, leases above
/// the share) among the workers short of `room`: in the order of their ids, in
/// proportion to what each lacks (all of it, if there is enough for everyone).
/// Workers that see the same shares get disjoint parts that cover everything.
fn my_part(
    shares: &std::collections::BTreeMap<&str, usize>,
    me: &str,
    room: usize,
    items: usize,
) -> std::ops::Range<usize> {
    let lacking = |share: &usize| room.saturating_sub(*share);
    let before: usize = shares.range(..me).map(|(_, share)| lacking(share)).sum();
    let total: usize = shares.values().map(lacking).sum();
    let mine = shares.get(me).map_or(0, lacking);
    let n = total.max(items).max(1);
    before * items / n..(before + mine) * items / n
}

/// The most free or expired leases one take round takes: a tenth of the ready
/// leases, at least 10. A worker of a fleet that starts together may not yet see
/// the others (their first beats, or their leases with an older release); without
/// a cap its first round would take every lease, and the fleet would converge
/// only by steals, `--max-leases-to-steal` a round. With it, rounds a second
/// apart (a worker that took comes back after the quick interval) let every
/// worker see the others before the table is shared out.
pub fn max_takes(ready: usize) -> usize {
    ready.div_ceil(10).max(10)
}

/// The delay before a worker's next take round, for a worker that sees `workers`
/// workers: on average half a second per worker, so that the fleet together
/// reads the table about twice a second while its read cost stays flat as the
/// fleet grows, and every worker reads it within about 3 s (each survivor of a
/// replica that left takes its share of the released leases at its next round);
/// on average at most the failover time (an expiry needs two readings of a lease
/// a failover time apart). Drawn from ±50 % of that, at least the quick interval:
/// workers that started or settled together drift apart within a few rounds, and
/// a fleet whose rounds are spread out sees a lease expire soon after it does.
///
/// A worker that watches a segment for expiries (`watching`, see
/// [`watch_segment`]) takes rounds every three failover times on average: they
/// only balance the fleet.
pub fn round_interval(failover: Duration, workers: usize, watching: bool, rng: &mut impl Rng) -> Duration {
    let shortest = quick_take_interval(failover);
    let base = if watching {
        failover * 3
    } else {
        (Duration::from_millis(500) * workers.max(1).min(u32::MAX as usize) as u32).clamp(shortest, failover)
    };
    base.mul_f64(rng.gen_range(0.5..=1.5)).max(shortest)
}

/// The shortest delay between take rounds that steal: `failover / 2`, ±20 % jitter.
pub fn take_interval(failover: Duration, rng: &mut impl Rng) -> Duration {
    (failover / 2).mul_f64(rng.gen_range(0.8..=1.2))
}

/// The state of a lease. `expired` needs `seen` to have watched the table for at
/// least `failover`; without it an owned lease is reported as `owned`.
pub fn state_of(
    lease: &Lease,
    by_key: &HashMap<&str, &Lease>,
    seen: Option<(&Observations, Instant, Duration)>,
) -> &'static str {
    if lease.checkpoint.is_shard_end() {
        return "finished";
    }
    if lease.owner.is_none() {
        return if is_ready(lease, by_key) { "unowned" } else { "waiting-for-parents" };
    }
    if let Some((seen, now, failover)) = seen {
        if seen.is_expired(lease, now, failover) {
            return "expired";
        }
    }
    if lease.handoff_to.is_some() {
        "pending-handoff"
    } else {
        "owned"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Checkpoint;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const FAILOVER: Duration = Duration::from_secs(10);
    const CONFIG: TakerConfig = TakerConfig { failover: FAILOVER, max_leases: usize::MAX, max_leases_to_steal: 2 };

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut l = Lease::new(key, Checkpoint::TrimHorizon, vec![]);
        l.owner = owner.map(str::to_owned);
        l.counter = counter;
        l
    }

    fn table(owners: &[Option<&str>]) -> Vec<Lease> {
        owners.iter().enumerate().map(|(i, o)| lease(&format!("shard-{i}"), *o, 1)).collect()
    }

    fn held_by(leases: &[Lease], me: &str) -> HashSet<String> {
        leases.iter().filter(|l| l.is_owned_by(me)).map(|l| l.key.clone()).collect()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(1)
    }

    #[tokio::test(start_paused = true)]
    async fn owned_leases_expire_only_after_failover_without_counter_moves() {
        let mut seen = Observations::default();
        let mut leases = table(&[Some("a")]);
        let t0 = Instant::now();
        seen.observe(&leases, t0);
        assert!(!seen.is_expired(&leases[0], t0 + Duration::from_millis(9_999), FAILOVER));
        assert!(seen.is_expired(&leases[0], t0 + FAILOVER, FAILOVER));
        // The owner renews at 9 s: the clock restarts from when we saw it.
        leases[0].counter = 2;
        seen.observe(&leases, t0 + Duration::from_secs(9));
        assert!(!seen.is_expired(&leases[0], t0 + Duration::from_secs(18), FAILOVER));
        assert!(seen.is_expired(&leases[0], t0 + Duration::from_secs(19), FAILOVER));
        // Unowned is expired at once.
        assert!(seen.is_expired(&lease("x", None, 1), t0, FAILOVER));
    }

    #[tokio::test(start_paused = true)]
    async fn live_workers_are_the_owners_of_unexpired_unfinished_leases() {
        let mut leases = table(&[Some("a"), Some("a"), Some("dead"), Some("me"), None, Some("b")]);
        leases[3].handoff_to = Some("asker".into());
        leases[5].checkpoint = Checkpoint::ShardEnd;
        let mut seen = Observations::default();
        let t0 = Instant::now();
        seen.observe(&leases, t0);
        assert_eq!(live_workers("me", &leases, &seen, t0, FAILOVER).len(), 3, "me, a, dead (not yet expired)");
        assert_eq!(live_workers("x", &leases, &seen, t0, FAILOVER).len(), 4);
        // a renews; dead does not.
        leases[0].counter += 1;
        leases[3].counter += 1;
        seen.observe(&leases, t0 + FAILOVER);
        assert_eq!(live_workers("me", &leases, &seen, t0 + FAILOVER, FAILOVER).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_worker_takes_everything_free() {
        let leases = table(&[None, None, None, None]);
        let mut seen = Observations::default();
        seen.observe(&leases, Instant::now());
        let p = plan("me", &HashSet::new(), &leases, &seen, Instant::now(), &CONFIG, &mut rng());
        assert_eq!(p.take.len(), 4);
        assert_eq!((p.workers, p.target), (1, 4));
        assert!(p.steal.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn takes_up_to_the_fair_share_and_respects_max_leases() {
        let leases = table(&[Some("a"), Some("a"), None, None, None, None]);
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        let p = plan("me", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target, p.take.len()), (2, 3, 3));
        let capped = TakerConfig { max_leases: 2, ..CONFIG };
        let p = plan("me", &HashSet::new(), &leases, &seen, now, &capped, &mut rng());
        assert_eq!(p.take.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_workers_leases_are_taken_after_failover() {
        let leases = table(&[Some("dead"), Some("dead"), Some("me"), Some("me")]);
        let mut seen = Observations::default();
        let t0 = Instant::now();
        seen.observe(&leases, t0);
        let held = held_by(&leases, "me");
        let early = plan("me", &held, &leases, &seen, t0 + Duration::from_secs(9), &CONFIG, &mut rng());
        assert!(early.take.is_empty() && early.steal.is_empty(), "{early:?}");
        let late = plan("me", &held, &leases, &seen, t0 + FAILOVER, &CONFIG, &mut rng());
        assert_eq!((late.workers, late.target), (1, 4));
        let mut took = late.take.clone();
        took.sort();
        assert_eq!(took, vec!["shard-0", "shard-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn steals_from_the_most_loaded_down_to_the_target_bounded_per_round() {
        // 8 shards: a has 5, b has 3, the newcomer none -> target 3.
        let owners = [Some("a"), Some("a"), Some("a"), Some("a"), Some("a"), Some("b"), Some("b"), Some("b")];
        let leases = table(&owners);
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        let p = plan("c", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target), (3, 3));
        assert_eq!(p.steal.len(), 2);
        assert!(p.steal.iter().all(|k| leases.iter().any(|l| &l.key == k && l.is_owned_by("a"))));
        let one = TakerConfig { max_leases_to_steal: 1, ..CONFIG };
        assert_eq!(plan("c", &HashSet::new(), &leases, &seen, now, &one, &mut rng()).steal.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_balanced_fleet_stays_put() {
        // 3/3/2 over 8 shards: nobody takes or steals, whoever asks.
        let owners = [Some("a"), Some("a"), Some("a"), Some("b"), Some("b"), Some("b"), Some("c"), Some("c")];
        let leases = table(&owners);
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        for me in ["a", "b", "c"] {
            let p = plan(me, &held_by(&leases, me), &leases, &seen, now, &CONFIG, &mut rng());
            assert!(p.take.is_empty() && p.steal.is_empty(), "{me}: {p:?}");
        }
        // 1/2/1 over 4 shards is also stable.
        let leases = table(&[Some("a"), Some("b"), Some("b"), Some("c")]);
        seen.observe(&leases, now);
        for me in ["a", "b", "c"] {
            let p = plan(me, &held_by(&leases, me), &leases, &seen, now, &CONFIG, &mut rng());
            assert!(p.take.is_empty() && p.steal.is_empty(), "{me}: {p:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn workers_that_beat_count_in_the_shares_before_they_own_a_lease() {
        // A fleet starting together on 8 free leases: a, b and c beat, nobody
        // owns anything yet. Each takes its share, not everything.
        let leases = table(&[None; 8]);
        let beat = |id: &str, protocol| Heartbeat { protocol, beat: 1, ..Heartbeat::new(id, format!("{id}-1")) };
        let fleet = |rows: Vec<Heartbeat>| Fleet { protocol: Some(Heartbeat::HEARTBEATS), workers: rows };
        let t0 = Instant::now();
        let mut seen = Observations::new("a", "a-1", Duration::from_secs(3));
        seen.observe(&leases, t0);
        seen.observe_fleet(&fleet(vec![beat("a", 2), beat("b", 2), beat("c", 1)]), t0, FAILOVER);
        // Its part: 3 × 3 lacking for 8 leases, a's 3 of them scaled down to 2
        // (b's part is 3, c's the last 3).
        let p = plan("a", &HashSet::new(), &leases, &seen, t0, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target, p.take.len()), (3, 3, 2), "{p:?}");
        assert!(!p.balanced);

        // A row marked dead, or whose beat stood still for the heartbeat
        // failover time, is no longer a worker to share with.
        let mut dead = beat("c", 1);
        dead.dead_by = Some("b".into());
        seen.observe_fleet(&fleet(vec![beat("a", 2), beat("b", 2), dead]), t0, FAILOVER);
        let p = plan("a", &HashSet::new(), &leases, &seen, t0, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target), (2, 4), "{p:?}");
        let later = t0 + Duration::from_secs(3);
        let p = plan("a", &HashSet::new(), &leases, &seen, later, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target), (1, 8), "b stood still: {p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_to_an_evenly_loaded_fleet_steals_one() {
        let leases = table(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        let p = plan("c", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
        assert_eq!((p.target, p.steal.len()), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn workers_left_behind_share_the_freed_leases_in_disjoint_parts() {
        // 18 workers hold 10 each (180 leases); 20 more are free (two left).
        // Each takes its own part, and together they take every free lease
        // exactly once, 1 or 2 each: 11 or 12, within one of each other.
        let workers: Vec<String> = (0..18).map(|n| format!("w{n:02}")).collect();
        let owners: Vec<Option<&str>> = (0..200).map(|i| (i < 180).then(|| workers[i / 10].as_str())).collect();
        let leases = table(&owners);
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        let mut taken: Vec<String> = Vec::new();
        for me in &workers {
            let p = plan(me, &held_by(&leases, me), &leases, &seen, now, &CONFIG, &mut rng());
            assert!((1..=2).contains(&p.take.len()) && p.steal.is_empty(), "{me}: {p:?}");
            taken.extend(p.take);
        }
        let distinct: HashSet<&String> = taken.iter().collect();
        assert_eq!((taken.len(), distinct.len()), (20, 20), "{taken:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn newcomers_steal_from_disjoint_victims_down_to_the_share() {
        // 8 workers hold 10 each; two newcomers (share 8) ask the eight, each
        // its own four, two from each: nobody is brought below the share.
        let workers: Vec<String> = (0..8).map(|n| format!("w{n}")).collect();
        let owners: Vec<Option<&str>> = (0..80).map(|i| Some(workers[i / 10].as_str())).collect();
        let leases = table(&owners);
        let now = Instant::now();
        let beat = |id: &str| Heartbeat { protocol: 2, beat: 1, ..Heartbeat::new(id, format!("{id}-1")) };
        let rows: Vec<Heartbeat> = workers.iter().map(|w| beat(w)).chain([beat("x1"), beat("x2")]).collect();
        let mut asked: HashMap<String, usize> = HashMap::new();
        for me in ["x1", "x2"] {
            let mut seen = Observations::new(me, &format!("{me}-1"), FAILOVER);
            seen.observe(&leases, now);
            seen.observe_fleet(&Fleet { protocol: Some(2), workers: rows.clone() }, now, FAILOVER);
            let p = plan(me, &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
            assert_eq!((p.target, p.steal.len()), (8, 8), "{me}: {p:?}");
            for key in &p.steal {
                let owner = leases.iter().find(|l| &l.key == key).unwrap().owner.clone().unwrap();
                *asked.entry(owner).or_default() += 1;
            }
        }
        assert_eq!(asked.len(), 8, "{asked:?}");
        assert!(asked.values().all(|n| *n == 2), "{asked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_steals_leases_that_have_not_just_changed_hands() {
        // A fleet starting: c took 6 leases and b 2, then b stole shard-0 and
        // shard-1 from c (4/4). The newcomer a asks each for one (down to the
        // share of 3) without moving either of them a second time, whatever the
        // draw.
        let mut leases =
            table(&[Some("b"), Some("b"), Some("c"), Some("c"), Some("c"), Some("c"), Some("b"), Some("b")]);
        for l in &mut leases {
            l.owner_switches = if l.key == "shard-0" || l.key == "shard-1" { 2 } else { 1 };
        }
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        let mut victims = HashSet::new();
        for seed in 0..200 {
            let p = plan("a", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut StdRng::seed_from_u64(seed));
            assert_eq!((p.target, p.steal.len()), (3, 2), "{p:?}");
            assert!(!p.steal.contains(&"shard-0".to_owned()) && !p.steal.contains(&"shard-1".to_owned()), "{p:?}");
            let owners: HashSet<_> =
                p.steal.iter().map(|k| leases.iter().find(|l| &l.key == k).unwrap().owner.clone().unwrap()).collect();
            victims.extend(owners.iter().cloned());
            assert_eq!(owners.len(), 2, "one from each: {p:?}");
        }
        assert_eq!(victims.len(), 2, "{victims:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn children_wait_for_every_parent_to_reach_shard_end() {
        let mut parent_a = lease("p-a", None, 1);
        let parent_b = lease("p-b", None, 1);
        let child = Lease::new("child", Checkpoint::TrimHorizon, vec!["p-a".into(), "p-b".into()]);
        let mut leases = vec![parent_a.clone(), parent_b.clone(), child.clone()];
        let by_key = |ls: &[Lease]| ls.iter().map(|l| (l.key.clone(), l.clone())).collect::<HashMap<_, _>>();
        let check = |ls: &[Lease]| {
            let owned = by_key(ls);
            let refs: HashMap<&str, &Lease> = owned.iter().map(|(k, v)| (k.as_str(), v)).collect();
            is_ready(&owned["child"], &refs)
        };
        assert!(!check(&leases));
        parent_a.checkpoint = Checkpoint::ShardEnd;
        leases[0] = parent_a;
        assert!(!check(&leases));
        leases[1].checkpoint = Checkpoint::ShardEnd;
        assert!(check(&leases));
        // A parent with no lease row (past retention) does not hold a child back.
        assert!(check(std::slice::from_ref(&child)));
        let mut seen = Observations::default();
        seen.observe(&leases, Instant::now());
        let p = plan("me", &HashSet::new(), &leases, &seen, Instant::now(), &CONFIG, &mut rng());
        assert_eq!(p.take, vec!["child"]);
    }

    #[tokio::test(start_paused = true)]
    async fn leases_being_handed_over_count_for_their_taker_and_are_not_stolen_twice() {
        // 8 shards; c asked a for two of its five.
        let mut leases =
            table(&[Some("a"), Some("a"), Some("a"), Some("a"), Some("a"), Some("b"), Some("b"), Some("b")]);
        leases[0].handoff_to = Some("c".into());
        leases[1].handoff_to = Some("c".into());
        let mut seen = Observations::default();
        let now = Instant::now();
        seen.observe(&leases, now);
        // c: 2 incoming of a target of 3 -> needs 1, but nobody is above target.
        let p = plan("c", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
        assert_eq!((p.workers, p.target), (3, 3));
        assert!(p.take.is_empty() && p.steal.is_empty(), "{p:?}");
        // A fourth worker steals, but never one of the leases already promised to c.
        let p = plan("d", &HashSet::new(), &leases, &seen, now, &CONFIG, &mut rng());
        assert_eq!(p.workers, 4);
        assert!(!p.steal.is_empty());
        assert!(!p.steal.contains(&"shard-0".to_owned()) && !p.steal.contains(&"shard-1".to_owned()), "{p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_released_for_a_handoff_is_reserved_for_its_taker_for_one_failover_time() {
        let mut leases = table(&[None, Some("b")]);
        leases[0].handoff_to = Some("c".into());
        let mut seen = Observations::default();
        let t0 = Instant::now();
        seen.observe(&leases, t0);
        let p = plan("a", &HashSet::new(), &leases, &seen, t0, &CONFIG, &mut rng());
        assert!(p.take.is_empty(), "{p:?}");
        let p = plan("c", &HashSet::new(), &leases, &seen, t0, &CONFIG, &mut rng());
        assert_eq!(p.take, vec!["shard-0"]);
        // c never came: after a failover time anyone may take it.
        let p = plan("a", &HashSet::new(), &leases, &seen, t0 + FAILOVER, &CONFIG, &mut rng());
        assert!(p.take.contains(&"shard-0".to_owned()), "{p:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_seen_standing_still_is_read_again_when_it_would_expire() {
        let t0 = Instant::now();
        let mut seen = Observations::default();
        let mut leases =
            vec![lease("shard-0", Some("b"), 5), lease("shard-1", Some("b"), 7), lease("shard-2", Some("a"), 1)];
        seen.observe(&leases, t0);
        assert_eq!(seen.next_expiry(&leases, "a", t0, FAILOVER), None, "one reading says nothing");
        // 8 s later shard-0 moved (alive), shard-1 stood still, shard-2 is mine.
        leases[0].counter = 6;
        let t1 = t0 + Duration::from_secs(8);
        seen.observe(&leases, t1);
        assert_eq!(seen.next_expiry(&leases, "a", t1, FAILOVER), Some(t0 + FAILOVER));
        // Once expired it is the take round's business, not a moment to wait for.
        let t2 = t0 + FAILOVER;
        leases[0].counter = 7;
        seen.observe(&leases, t2);
        assert!(seen.is_expired(&leases[1], t2, FAILOVER));
        assert_eq!(seen.next_expiry(&leases, "a", t2, FAILOVER), None);
    }

    #[test]
    fn a_small_fleet_reads_the_table_about_twice_a_second_whatever_its_size() {
        let mut rng = rng();
        // Up to ten workers (a failover time of 10 s) take rounds alone; beyond,
        // they watch segments (about one table a second) and take full rounds
        // every three failover times.
        for (workers, watching, low, high) in [
            (1, false, 1.0, 1.5),
            (3, false, 1.0, 2.25),
            (8, false, 2.0, 6.0),
            (10, false, 2.5, 7.5),
            (100, true, 15.0, 45.0),
        ] {
            let intervals: Vec<f64> =
                (0..2000).map(|_| round_interval(FAILOVER, workers, watching, &mut rng).as_secs_f64()).collect();
            assert!(intervals.iter().all(|d| (low..=high).contains(d)), "{workers} workers: {intervals:?}");
            let mean = intervals.iter().sum::<f64>() / 2000.0;
            let fleet_reads_per_second = workers as f64 / mean;
            let expected = match (watching, workers) {
                (true, _) => workers as f64 / 30.0,
                (false, 1) => 1.0, // the quick interval
                (false, _) => 2.0,
            };
            assert!(
                (0.85 * expected..=1.15 * expected).contains(&fleet_reads_per_second),
                "{workers} workers: {fleet_reads_per_second}/s"
            );
            let spread = intervals.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 2000.0;
            if workers > 1 {
                assert!(spread.sqrt() > mean / 5.0, "{workers} workers: rounds must drift apart");
            }
        }
        // A short failover time bounds rounds by itself.
        let short = Duration::from_millis(600);
        assert!((0..100).all(|_| (short / 2..=short * 3 / 2).contains(&round_interval(short, 50, false, &mut rng))));
        assert!((0..100).all(|_| (short / 2..=short * 3 / 2).contains(&round_interval(short, 1, false, &mut rng))));
    }

    #[test]
    fn a_large_fleet_splits_the_table_into_segments_each_watched_by_a_block_of_workers() {
        let names: Vec<String> = (0..100).map(|i| format!("w{i:03}")).collect();
        let fleet = |n: usize| -> std::collections::BTreeSet<&str> { names[..n].iter().map(String::as_str).collect() };
        // A failover time's worth of workers (one per second) needs no watch.
        assert_eq!(watch_segment("w000", &fleet(10), FAILOVER), None);
        assert_eq!(watch_segment("w000", &fleet(1), FAILOVER), None);
        for workers in [11, 12, 37, 100] {
            let live = fleet(workers);
            let segments: Vec<crate::leases::Segment> =
                live.iter().map(|w| watch_segment(w, &live, FAILOVER).unwrap()).collect();
            let total = segments[0].total;
            assert_eq!(total, (workers as u32 / WATCHERS_PER_SEGMENT).max(2), "{workers} workers");
            assert!(segments.iter().all(|s| s.total == total && s.index < total));
            // Contiguous blocks of sorted ids, every segment watched, evenly.
            assert!(segments.windows(2).all(|w| w[0].index <= w[1].index), "{segments:?}");
            let mut watchers = vec![0; total as usize];
            for s in &segments {
                watchers[s.index as usize] += 1;
            }
            let (min, max) = (watchers.iter().min().unwrap(), watchers.iter().max().unwrap());
            assert!(*min >= 2 && max - min <= 1, "{workers} workers: {watchers:?}");
        }
        // A short failover time: three workers already watch, in two segments.
        let live = fleet(3);
        let short = Duration::from_secs(2);
        let indexes: Vec<u32> = live.iter().map(|w| watch_segment(w, &live, short).unwrap().index).collect();
        assert_eq!(indexes, vec![0, 0, 1]);
        assert_eq!(watch_segment("stranger", &live, short), None, "not in the fleet it saw");
    }

    #[test]
    fn each_segment_is_read_about_once_a_second_by_its_watchers() {
        let mut rng = rng();
        let intervals: Vec<f64> = (0..2000).map(|_| watch_interval(FAILOVER, &mut rng).as_secs_f64()).collect();
        assert!(intervals.iter().all(|d| (2.5..=7.5).contains(d)), "{intervals:?}");
        let mean = intervals.iter().sum::<f64>() / 2000.0;
        let reads_per_second = f64::from(WATCHERS_PER_SEGMENT) / mean;
        assert!((0.85..=1.15).contains(&reads_per_second), "{reads_per_second}");
        // Never more than half a failover time apart on average, never below the quick interval.
        let short = Duration::from_secs(3);
        assert!((0..500).all(|_| (1.0..=2.25).contains(&watch_interval(short, &mut rng).as_secs_f64())));
    }

    #[test]
    fn a_segment_read_keeps_what_the_worker_knows_of_the_rest() {
        let t0 = Instant::now();
        let mut seen = Observations::default();
        let mut leases = vec![lease("a", Some("x"), 1), lease("b", Some("y"), 1)];
        seen.observe(&leases, t0);
        let t1 = t0 + FAILOVER;
        leases[0].counter = 2;
        seen.observe_part(&leases[..1], t1);
        assert!(!seen.is_expired(&leases[0], t1, FAILOVER), "a moved");
        assert!(seen.is_expired(&leases[1], t1, FAILOVER), "b, not in the segment, still seen since t0");
        seen.observe(&leases[..1], t1);
        assert!(!seen.is_expired(&leases[1], t1, FAILOVER), "a full snapshot without b forgets it");
    }

    #[test]
    fn take_rounds_are_jittered_within_bounds() {
        let mut rng = rng();
        let intervals: Vec<_> = (0..500).map(|_| take_interval(FAILOVER, &mut rng)).collect();
        assert!(intervals.iter().all(|d| *d >= Duration::from_secs(4) && *d <= Duration::from_secs(6)));
        let distinct: HashSet<_> = intervals.iter().collect();
        assert!(distinct.len() > 400);
    }
}

//! `stream-worker fleet upgrade` and `fleet rollback`: moving a running fleet
//! between coordination protocols.
//!
//! Protocol 1 renews every lease one by one and judges it by its counter, as
//! releases before protocol 2 and the Java KCL do. Protocol 2 keeps leases by
//! one heartbeat per worker. The fleet's protocol is one row of the heartbeat
//! table; every worker reads it with the fleet's heartbeats and follows it
//! within a heartbeat period. Upgrading is safe only once no worker that
//! renews by counter alone remains: [`upgrade_blockers`] says which remain.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::leases::{Cas, LeaseStore};
use crate::model::{Fleet, Heartbeat, Lease};

/// What keeps the fleet from protocol 2: workers whose build speaks only
/// protocol 1, and lease owners that write no heartbeat (releases before
/// heartbeats, the Java KCL). Empty: the fleet may upgrade.
pub fn upgrade_blockers(leases: &[Lease], fleet: &Fleet) -> Vec<String> {
    let live: Vec<&Heartbeat> = fleet.workers.iter().filter(|w| w.dead_by.is_none()).collect();
    let mut blockers: Vec<String> = live
        .iter()
        .filter(|w| w.speaks < Heartbeat::HEARTBEATS)
        .map(|w| format!("worker '{}' runs a build that speaks protocol {} only", w.worker_id, w.speaks))
        .collect();
    let beating: BTreeSet<&str> = live.iter().map(|w| w.worker_id.as_str()).collect();
    let silent: BTreeSet<&str> = leases
        .iter()
        .filter(|l| !l.checkpoint.is_shard_end())
        .filter_map(|l| l.owner.as_deref())
        .filter(|owner| !beating.contains(owner))
        .collect();
    blockers.extend(silent.into_iter().map(|owner| {
        format!("worker '{owner}' holds leases and writes no heartbeat (a release before protocol 2, or the Java KCL)")
    }));
    blockers
}

/// Sets the fleet's protocol to `to` (2: `fleet upgrade`, 1: `fleet rollback`)
/// and waits up to `wait` until every live worker's heartbeat reports it.
/// Returns the workers still on the other protocol when the wait ran out
/// (empty: all switched).
pub async fn switch(store: &dyn LeaseStore, to: u32, wait: Duration) -> anyhow::Result<Vec<String>> {
    let fleet = store.fleet().await?;
    if to == Heartbeat::HEARTBEATS {
        let blockers = upgrade_blockers(&store.list().await?, &fleet);
        if !blockers.is_empty() {
            anyhow::bail!(
                "not upgrading: {}.\nhint: replace those workers with this release, wait until `stream-worker status` \
                 shows every worker beating, then run this again",
                blockers.join("; ")
            );
        }
    }
    let current = fleet.protocol;
    if current != Some(to) {
        if let Cas::Lost = store.set_protocol(current, to).await? {
            anyhow::bail!("the fleet's protocol changed while this ran; run this again");
        }
        tracing::info!(from = ?current, to, "set the fleet's protocol");
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let behind: Vec<String> = store
            .heartbeats()
            .await?
            .into_iter()
            .filter(|w| w.dead_by.is_none() && w.protocol != to)
            .map(|w| w.key())
            .collect();
        if behind.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::memory::MemoryLeaseStore;
    use crate::model::Checkpoint;

    fn beating(id: &str, speaks: u32) -> Heartbeat {
        Heartbeat { speaks, ..Heartbeat::new(id, "01").next(0, "") }
    }

    #[test]
    fn owners_without_heartbeats_and_older_builds_block_an_upgrade() {
        let mut held = Lease::new("s-1", Checkpoint::TrimHorizon, vec![]);
        held.owner = Some("old".into());
        let mut finished = Lease::new("s-0", Checkpoint::ShardEnd, vec![]);
        finished.owner = Some("gone".into());
        let fleet = Fleet { protocol: Some(1), workers: vec![beating("new", 2), beating("v22", 1)] };
        let blockers = upgrade_blockers(&[held.clone(), finished.clone()], &fleet);
        assert_eq!(blockers.len(), 2, "{blockers:?}");
        assert!(blockers[0].contains("'v22'") && blockers[1].contains("'old'"), "{blockers:?}");
        // Once they are replaced, nothing blocks; a finished shard's old owner never does.
        held.owner = Some("new".into());
        let fleet = Fleet { protocol: Some(1), workers: vec![beating("new", 2)] };
        assert!(upgrade_blockers(&[held, finished], &fleet).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgrade_is_refused_while_blocked_and_waits_for_every_worker_otherwise() {
        let store = MemoryLeaseStore::new();
        store.set_protocol(None, 1).await.unwrap().done().unwrap();
        let mut lease = Lease::new("s-1", Checkpoint::TrimHorizon, vec![]);
        store.create(&lease).await.unwrap().done().unwrap();
        lease = store.take(&lease, "old").await.unwrap().done().unwrap();
        let error = switch(&store, 2, Duration::ZERO).await.unwrap_err().to_string();
        assert!(error.contains("'old' holds leases"), "{error}");
        assert_eq!(store.fleet().await.unwrap().protocol, Some(1), "unchanged");

        store.take(&lease, "new").await.unwrap().done().unwrap();
        let new = Heartbeat::new("new", "01");
        store.beat(&new, 1, "").await.unwrap().done().unwrap();
        let behind = switch(&store, 2, Duration::from_secs(1)).await.unwrap();
        assert_eq!(behind, vec!["new#01"], "still beating protocol 1");
        assert_eq!(store.fleet().await.unwrap().protocol, Some(2));
        store.beat(&Heartbeat { protocol: 2, ..new.clone() }, 1, "").await.unwrap().done().unwrap();
        assert!(switch(&store, 2, Duration::from_secs(1)).await.unwrap().is_empty());
        // And back.
        let behind = switch(&store, 1, Duration::ZERO).await.unwrap();
        assert_eq!((behind.len(), store.fleet().await.unwrap().protocol), (1, Some(1)));
    }
}

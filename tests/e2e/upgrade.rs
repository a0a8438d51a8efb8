//! Moving a running fleet between coordination protocols under load, with
//! older and newer workers side by side: `fleet upgrade` (refused while an
//! older worker holds leases), then `fleet rollback`, and nothing lost.
//!
//! The older workers run `STREAM_WORKER_OLD_BIN` when it is set:
//! `bench/upgrade.sh` builds c641ca1, the last release before protocol 2, and
//! runs this test with it. Without it they run this build with the fleet held
//! at protocol 1, which CI runs: the switch both ways, but not the refusal.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `stream-worker fleet <what> --lease-table …`: its exit status and output.
fn fleet(setup: &Setup, what: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["fleet", what, "--lease-table", &setup.lease_table, "--wait", "20s"])
        .output()
        .expect("run stream-worker fleet");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Stops `old` gracefully and starts `name` with `bin` in its place; waits until
/// the fleet holds every lease again.
async fn replace(setup: &Setup, old: Worker, bin: &str, name: &str, workers: usize) -> Worker {
    let mut old = old;
    old.signal("TERM");
    assert!(old.wait_exit(Duration::from_secs(15)).0.success(), "{}", old.log_text());
    let new = Worker::start_bin(bin, setup, name, &[], &[], None);
    eventually(Duration::from_secs(30), "every lease held, each worker its share", || async {
        let s = setup.lease_states().await;
        let owners: std::collections::HashSet<_> = s.values().filter_map(|(o, _)| o.clone()).collect();
        (s.values().all(|(o, _)| o.is_some()) && owners.len() == workers && owners.contains(name)).then_some(())
    })
    .await;
    new
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_and_a_rollback_under_load_lose_nothing() {
    emulators();
    let setup = Setup::new("upgrade", 4);
    let old_bin = std::env::var("STREAM_WORKER_OLD_BIN").ok();
    let older = old_bin.clone().unwrap_or_else(|| BIN.to_owned());
    if old_bin.is_none() {
        setup.set_protocol(1).await;
    }
    let producer = setup.start_producer(&["--rate", "120", "--count", "12000", "--seed", "71"]);
    let started = Instant::now();
    let a = Worker::start_bin(&older, &setup, "old-a", &[], &[], None);
    let b = Worker::start_bin(&older, &setup, "old-b", &[], &[], None);
    eventually(Duration::from_secs(30), "2/2 among the older workers", || async {
        let s = setup.lease_states().await;
        (s.len() == 4 && s.values().all(|(o, _)| o.as_deref().is_some_and(|o| o.starts_with("old-")))).then_some(())
    })
    .await;

    // One newer worker beside an older one: the fleet stays on protocol 1.
    let a = replace(&setup, a, BIN, "new-a", 2).await;
    assert_eq!(setup.fleet().await.protocol, Some(1), "a fleet with owned leases joins at protocol 1");
    if old_bin.is_some() {
        let (ok, text) = fleet(&setup, "upgrade");
        assert!(!ok && text.contains("'old-b' holds leases"), "an upgrade beside an older worker: {text}");
    }
    let b = replace(&setup, b, BIN, "new-b", 2).await;

    // Upgrade: every worker reports protocol 2, and renewals stop.
    let (ok, text) = fleet(&setup, "upgrade");
    assert!(ok, "{text}");
    let fleet_now = setup.fleet().await;
    assert_eq!(fleet_now.protocol, Some(2));
    assert!(fleet_now.workers.iter().filter(|w| w.dead_by.is_none()).all(|w| w.protocol == 2), "{fleet_now:?}");
    let renewals = || a.metric("stream_worker_lease_renewals_total").unwrap_or(0.0);
    let before = renewals();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(renewals(), before, "renewals stop under protocol 2");
    assert_eq!(a.metric("stream_worker_protocol"), Some(2.0));

    // Rollback: every worker reports protocol 1 and renews again; then the
    // older workers come back, one at a time.
    let (ok, text) = fleet(&setup, "rollback");
    assert!(ok, "{text}");
    assert_eq!(setup.fleet().await.protocol, Some(1));
    eventually(Duration::from_secs(10), "renewals again", || async { (renewals() > before).then_some(()) }).await;
    let a = replace(&setup, a, &older, "old-a2", 2).await;
    let b = replace(&setup, b, &older, "old-b2", 2).await;

    let puts = producer.finish();
    setup.rows_of(&puts).await;
    eprintln!("upgrade and rollback under load: {} records, {:?}", puts.0.len(), started.elapsed());
    drop((a, b));
}

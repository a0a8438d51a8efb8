//! The zombie fence, end to end: a worker whose DynamoDB traffic is cut (by a
//! fault-injecting TCP proxy that stalls, then delivers late, every byte) stops
//! processing within the failover time, and never overwrites the checkpoints of
//! the worker that took over — not even with its stalled requests.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_off_worker_stops_in_time_and_never_overwrites_its_successor() {
    emulators();
    let setup = Setup::new("zombie", 2);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap().trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(upstream).await;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let producer = setup.start_producer(&["--rate", "100", "--count", "3000", "--seed", "51"]);
    let flags = ["--failover-time", "3s", "--max-leases-to-steal", "0"];
    let zombie = setup.worker_with_env("zombie", &flags, &[("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)]);
    eventually(Duration::from_secs(30), "the zombie holding both leases and checkpointing", || async {
        let s = setup.lease_states().await;
        let ours = s.len() == 2
            && s.values().all(|(o, c)| o.as_deref() == Some("zombie") && c.chars().all(|c| c.is_ascii_digit()));
        ours.then_some(())
    })
    .await;
    let _successor = setup.worker("successor", &flags);

    proxy.cut();
    let cut = Instant::now();
    let stopped = eventually(Duration::from_secs(10), "the zombie to stop processing", || async {
        (zombie.metric("stream_worker_leases_held") == Some(0.0)).then(|| cut.elapsed())
    })
    .await;
    eprintln!("zombie stopped {stopped:?} after the cut (failover time 3 s)");
    // Every lease is let go at the worker's fence: 2.7 s after the last beat
    // answered was sent, so at most 2.7 s after the cut, whatever step of the
    // loop the cut stalled (each gives up at the fence). Most of a second more
    // for a loaded machine and the scrape that sees it.
    assert!(stopped <= Duration::from_millis(3500), "stopped after {stopped:?}");
    // From here on the zombie must write nothing, whatever reaches DynamoDB late.
    let checkpoints_at_stop = zombie.metric("stream_worker_checkpoints_total").unwrap();

    // Watch the lease rows: the successor takes over; keep watching while the
    // zombie's stalled requests are delivered after the network returns.
    let mut history: HashMap<String, Vec<(Option<String>, String)>> = HashMap::new();
    let mut restored_at = None;
    let watch_start = Instant::now();
    while watch_start.elapsed() < Duration::from_secs(16) {
        let states = setup.lease_states().await;
        for (shard, state) in states {
            let h = history.entry(shard).or_default();
            if h.last() != Some(&state) {
                h.push(state);
            }
        }
        let taken = history.values().all(|h| h.last().is_some_and(|(o, _)| o.as_deref() == Some("successor")));
        if taken && restored_at.is_none() && watch_start.elapsed() > Duration::from_secs(6) {
            proxy.restore();
            restored_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restored_at.is_some(), "the successor never took over: {history:?}");
    for (shard, h) in &history {
        let first_successor = h.iter().position(|(o, _)| o.as_deref() == Some("successor")).unwrap();
        for (owner, _) in &h[first_successor..] {
            assert_eq!(owner.as_deref(), Some("successor"), "{shard} went back to {owner:?}: {h:?}");
        }
        for pair in h.windows(2) {
            let (a, b) = (&pair[0].1, &pair[1].1);
            assert_ne!(seq_cmp(b, a), std::cmp::Ordering::Less, "{shard}: checkpoint moved back from {a} to {b}");
        }
    }
    assert_eq!(
        zombie.metric("stream_worker_checkpoints_total").unwrap(),
        checkpoints_at_stop,
        "the zombie wrote a checkpoint after it stopped"
    );
    assert!(zombie.metric("stream_worker_leases_lost_total").unwrap() >= 2.0);
    // Each held lease's fence tripped once (the metric an alert watches).
    let trips = zombie.metric_with("stream_worker_fence_trips_total", r#"what="lease""#).unwrap();
    assert_eq!(trips, 2.0, "fence trips");

    setup.rows_of(&producer.finish()).await;
}

/// A worker paused (SIGSTOP) for three failover times under load, then
/// resumed: its shards are taken meanwhile, it writes no tweet after they
/// were (its fence passed while it slept), it learns it was marked dead,
/// and it rejoins as a new incarnation. Nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_paused_worker_writes_nothing_after_its_shards_are_taken_and_rejoins() {
    emulators();
    let setup = Setup::new("paused", 2);
    let producer = setup.start_producer(&["--rate", "100", "--count", "4000", "--seed", "52"]);
    let paused = setup.worker("paused", &[]);
    let other = setup.worker("other", &[]);
    let incarnation_of = |item: &Item| item.get("ownerIncarnation").and_then(|v| v.as_s().ok()).cloned();
    // (60 s: a loaded emulator can trip a fence at start, and a trip delays the split.)
    let (shard, old_incarnation) = eventually(Duration::from_secs(60), "one lease each, written", || async {
        let leases = setup.leases().await;
        let owners: Vec<Option<&str>> =
            leases.values().map(|l| l.get("leaseOwner").and_then(|o| o.as_s().ok()).map(String::as_str)).collect();
        let written = paused.metric("stream_worker_records_written_total").unwrap_or(0.0) > 0.0;
        let mine = leases
            .iter()
            .find(|(_, l)| l.get("leaseOwner").and_then(|o| o.as_s().ok()).map(String::as_str) == Some("paused"));
        match (owners.contains(&Some("other")), mine, written) {
            (true, Some((k, l)), true) => Some((k.clone(), incarnation_of(l).expect("ownerIncarnation"))),
            _ => None,
        }
    })
    .await;
    let written_before = paused.metric("stream_worker_records_written_total").unwrap();
    paused.signal("STOP");
    let stopped = Instant::now();
    eventually(Duration::from_secs(20), "the paused worker's lease taken", || async {
        let leases = setup.leases().await;
        (leases[&shard].get("leaseOwner").and_then(|o| o.as_s().ok()).map(String::as_str) == Some("other"))
            .then_some(())
    })
    .await;
    let taken = stopped.elapsed();
    eprintln!("taken {taken:?} after SIGSTOP");
    tokio::time::sleep(Duration::from_millis(10_500).saturating_sub(stopped.elapsed())).await;
    paused.signal("CONT");
    let resumed = Instant::now();
    // It learns at its first beat that it was marked dead, and starts anew.
    eventually(Duration::from_secs(10), "the resumed worker to learn it was marked dead", || async {
        (paused.metric_with("stream_worker_heartbeat_failures_total", r#"reason="marked-dead""#)? >= 1.0).then_some(())
    })
    .await;
    let trips = paused.metric_with("stream_worker_fence_trips_total", r#"what="lease""#).unwrap();
    assert!(trips >= 1.0, "the held lease's fence tripped: {trips}");
    // No tweet written by it once it knows, until it holds a lease again (a
    // write sent before the pause may still have been answered after it).
    let takes = || paused.metric("stream_worker_leases_taken_total").unwrap();
    let written = || paused.metric("stream_worker_records_written_total").unwrap();
    let (takes_at_resume, written_at) = (takes(), written());
    eprintln!("{} records written before the pause, {written_at} at resume", written_before);
    while takes() == takes_at_resume && resumed.elapsed() < Duration::from_secs(10) {
        let now = written();
        if takes() == takes_at_resume {
            assert_eq!(now, written_at, "written after its lease was taken, before it rejoined");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It rejoins: a lease of its own again, as a new incarnation.
    eventually(Duration::from_secs(30), "the resumed worker to rejoin", || async {
        let leases = setup.leases().await;
        leases
            .values()
            .any(|l| {
                l.get("leaseOwner").and_then(|o| o.as_s().ok()).map(String::as_str) == Some("paused")
                    && incarnation_of(l).is_some_and(|i| i != old_incarnation)
            })
            .then_some(())
    })
    .await;
    assert!(
        setup.leases().await.values().all(|l| incarnation_of(l).as_deref() != Some(old_incarnation.as_str())),
        "no row kept by the old incarnation"
    );
    eprintln!("rejoined {:?} after SIGCONT", resumed.elapsed());
    setup.rows_of(&producer.finish()).await;
    drop(other);
}

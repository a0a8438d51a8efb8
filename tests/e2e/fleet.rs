//! Several `stream-worker run` processes sharing a stream: convergence, failover
//! after kill -9, rolling restarts, and moving a running fleet between
//! coordination protocols. Records are checked against the ids put.
//! The tests of this file run one at a time: their timings are the subject.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn counts(states: &HashMap<String, (Option<String>, String)>) -> Vec<usize> {
    let mut per: HashMap<&str, usize> = HashMap::new();
    for (owner, _) in states.values() {
        if let Some(o) = owner {
            *per.entry(o).or_default() += 1;
        }
    }
    let mut v: Vec<usize> = per.into_values().collect();
    v.sort_unstable();
    v
}

/// The checkpoints of the shards `owner` holds in `states`.
fn checkpoints_of(states: &HashMap<String, (Option<String>, String)>, owner: &str) -> HashMap<String, String> {
    states.iter().filter(|(_, (o, _))| o.as_deref() == Some(owner)).map(|(k, (_, c))| (k.clone(), c.clone())).collect()
}

/// Waits until every shard of `victims` (its checkpoint then) is processing
/// again: another owner than `victim`, and the checkpoint moved on. Returns the
/// time since `killed`.
async fn processing_again(setup: &Setup, victims: &HashMap<String, String>, victim: &str, killed: Instant) -> Duration {
    eventually(Duration::from_secs(30), "the killed worker's shards processing again", || async {
        let s = setup.lease_states().await;
        victims
            .iter()
            .all(|(k, before)| {
                let (owner, checkpoint) = &s[k];
                owner.as_deref().is_some_and(|o| o != victim) && checkpoint != before
            })
            .then(|| killed.elapsed())
    })
    .await
}

/// Waits until a survivor has written records of every shard in `victims`
/// since `killed`: its `stream_worker_records_since_checkpoint` for the shard
/// moved from what it was at the kill (`before`) and the lease is the
/// survivor's. Returns the time since `killed` (measured from each poll).
async fn written_again(
    setup: &Setup,
    survivors: &[Worker],
    victims: &[String],
    before: &HashMap<(String, String), f64>,
    killed: Instant,
) -> Duration {
    eventually(Duration::from_secs(30), "the killed worker's shards written again", || async {
        let states = setup.lease_states().await;
        victims
            .iter()
            .all(|shard| {
                survivors.iter().any(|w| {
                    let label = format!(r#"shard_id="{shard}""#);
                    let now = w.metric_with("stream_worker_records_since_checkpoint", &label);
                    let was = before.get(&(w.name.clone(), shard.clone())).copied();
                    states[shard].0.as_deref() == Some(w.name.as_str())
                        && now.is_some_and(|n| n > 0.0 && Some(n) != was)
                })
            })
            .then(|| killed.elapsed())
    })
    .await
}

/// Each survivor's records-since-checkpoint gauge for each of `shards`.
fn gauges(survivors: &[Worker], shards: &[String]) -> HashMap<(String, String), f64> {
    let mut values = HashMap::new();
    for w in survivors {
        for shard in shards {
            let label = format!(r#"shard_id="{shard}""#);
            if let Some(v) = w.metric_with("stream_worker_records_since_checkpoint", &label) {
                values.insert((w.name.clone(), shard.clone()), v);
            }
        }
    }
    values
}

crate::both_retrievals!(
    three_workers_converge_on_8_shards_without_thrashing,
    a_killed_workers_shards_are_written_again_within_5_s_polling_10_s_fan_out,
);

async fn three_workers_converge_on_8_shards_without_thrashing(mode: Retrieval) {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("converge", 8).reading(mode);
    let workers: Vec<Worker> = ["a", "b", "c"].iter().map(|w| setup.worker(w, &[])).collect();
    let started = Instant::now();
    let mut owners_seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut converged_at: Option<Instant> = None;
    // Watch for 30 s to converge, then 12 s more (two take rounds and more
    // than three renewals) to see it stay put.
    loop {
        let states = setup.lease_states().await;
        for (shard, (owner, _)) in &states {
            if let Some(owner) = owner {
                let seen = owners_seen.entry(shard.clone()).or_default();
                if seen.last() != Some(owner) {
                    seen.push(owner.clone());
                }
            }
        }
        let balanced = states.len() == 8 && counts(&states) == vec![2, 3, 3];
        match (balanced, converged_at) {
            (true, None) => converged_at = Some(Instant::now()),
            (false, Some(at)) => panic!("the fleet left 3/3/2 {:?} after converging: {states:?}", at.elapsed()),
            _ => {}
        }
        if converged_at.is_some_and(|at| at.elapsed() > Duration::from_secs(12)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30) || converged_at.is_some(),
            "no 3/3/2 within 30 s: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = converged_at.unwrap() - started;
    eprintln!("converged to 3/3/2 in {took:?}; owners per lease: {owners_seen:?}");
    for (shard, owners) in &owners_seen {
        assert!(owners.len() <= 2, "{shard} changed owner more than once: {owners:?}");
    }
    drop(workers);
}

/// kill -9 of one of three workers under load, at the defaults (failover time
/// 3.5 s): every shard it held is written again by a survivor within 5 s when
/// polling; fan-out adds SubscribeToShard's own 5 s between subscriptions to a
/// shard. Nothing is lost.
async fn a_killed_workers_shards_are_written_again_within_5_s_polling_10_s_fan_out(mode: Retrieval) {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("failover", 6).reading(mode);
    let producer = setup.start_producer(&["--rate", "150", "--count", "6000", "--seed", "21"]);
    let mut workers: Vec<Worker> = ["a", "b", "c"].iter().map(|w| setup.worker(w, &[])).collect();
    let states = eventually(Duration::from_secs(30), "2/2/2", || async {
        let s = setup.lease_states().await;
        (s.len() == 6 && counts(&s) == vec![2, 2, 2]).then_some(s)
    })
    .await;
    let mut victim = workers.remove(1);
    let victims: Vec<String> = checkpoints_of(&states, &victim.name).into_keys().collect();
    let before = gauges(&workers, &victims);
    victim.kill9();
    let killed = Instant::now();
    let took = written_again(&setup, &workers, &victims, &before, killed).await;
    eprintln!("failover ({mode:?}): {} shards written again {took:?} after kill -9", victims.len());
    let bound = match mode {
        Retrieval::Polling => Duration::from_secs(5),
        Retrieval::FanOut => Duration::from_secs(10),
    };
    assert!(took <= bound, "took {took:?}");
    let puts = producer.finish();
    setup.rows_of(&puts).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_loses_nothing_and_hands_each_shard_over_within_3_s() {
    rolling_restart(Retrieval::Polling, Retrieval::Polling).await
}

/// Switching a running fleet from polling to fan-out, one replica at a time.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_switch_from_polling_to_fan_out_loses_nothing() {
    rolling_restart(Retrieval::Polling, Retrieval::FanOut).await
}

/// Restarts each of three replicas reading `from` as one reading `to`.
async fn rolling_restart(from: Retrieval, to: Retrieval) {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("rolling", 6).reading(from);
    let restarted = setup.clone().reading(to);
    let producer = setup.start_producer(&["--rate", "150", "--count", "7500", "--seed", "22"]);
    let mut workers: Vec<Worker> = ["a", "b", "c"].iter().map(|w| setup.worker(w, &[])).collect();
    eventually(Duration::from_secs(30), "2/2/2", || async {
        let s = setup.lease_states().await;
        (s.len() == 6 && counts(&s) == vec![2, 2, 2]).then_some(())
    })
    .await;
    for round in 0..3 {
        let mut old = workers.remove(0);
        let before = setup.lease_states().await;
        let theirs: Vec<String> = before
            .iter()
            .filter(|(_, (o, _))| o.as_deref() == Some(old.name.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        old.signal("TERM");
        let (status, _) = old.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{status:?}\n{}", old.log_text());
        let released = Instant::now();
        let at_release = setup.lease_states().await;
        for k in &theirs {
            assert_ne!(at_release[k].0.as_deref(), Some(old.name.as_str()), "{k} not released");
        }
        let took = eventually(Duration::from_secs(20), "the released shards processing again", || async {
            let s = setup.lease_states().await;
            theirs
                .iter()
                .all(|k| s[k].0.as_deref().is_some_and(|o| o != old.name) && s[k].1 != at_release[k].1)
                .then(|| released.elapsed())
        })
        .await;
        eprintln!(
            "rolling restart {round}: {} shards of {} processing again {took:?} after release",
            theirs.len(),
            old.name
        );
        // A survivor takes a released lease at its next take round (within
        // 2.25 s in a fleet of three); a fan-out reader then waits for its
        // subscription's first event, which the emulator sends on a 1 s tick
        // (3.0 and 3.97 s seen beside other tests).
        // Fan-out adds SubscribeToShard's own 5 s between subscriptions to a
        // shard (the emulator refuses the new owner's while the old one's is
        // open): issue #33 allows 10 s there.
        let bound = match to {
            Retrieval::Polling => Duration::from_secs(3),
            Retrieval::FanOut => Duration::from_secs(10),
        };
        assert!(took <= bound, "took {took:?}");
        workers.push(restarted.worker(&format!("{}-{round}", old.name), &[]));
    }
    let puts = producer.finish();
    setup.rows_of(&puts).await;
}

/// A fleet with more workers than seconds in its failover time watches the lease
/// table in segments of a parallel scan between its (rarer) full take rounds:
/// on the DynamoDB emulator, each worker reads its segment, and a killed
/// worker's shards are seen expire and processed again within a few seconds of
/// the failover time, well before the next full rounds (9 s apart on average).
#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_watching_segments_fails_over_within_seconds_of_its_failover_time() {
    let _serial = SERIAL.lock().await;
    let setup = Setup::new("segments", 8);
    // Segments are protocol 1's (leases judged by their counters).
    setup.set_protocol(1).await;
    let producer = setup.start_producer(&["--rate", "100", "--count", "4000", "--seed", "23"]);
    let failover = ["--renewal-failover-time", "3s"];
    let mut workers: Vec<Worker> = ["a", "b", "c", "d"].iter().map(|w| setup.worker(w, &failover)).collect();
    let states = eventually(Duration::from_secs(30), "2/2/2/2", || async {
        let s = setup.lease_states().await;
        (s.len() == 8 && counts(&s) == vec![2, 2, 2, 2]).then_some(s)
    })
    .await;
    let watches = |w: &Worker| w.metric_with("stream_worker_lease_table_scans_total", r#"kind="watch""#).unwrap_or(0.0);
    eventually(Duration::from_secs(20), "every worker watching its segment", || async {
        workers.iter().all(|w| watches(w) >= 2.0).then_some(())
    })
    .await;
    let victim = workers.remove(1);
    let victims = checkpoints_of(&states, &victim.name);
    let (rounds_before, watches_before): (Vec<f64>, Vec<f64>) = workers
        .iter()
        .map(|w| (w.metric_with("stream_worker_lease_table_scans_total", r#"kind="round""#).unwrap_or(0.0), watches(w)))
        .unzip();
    let mut victim = victim;
    victim.kill9();
    let killed = Instant::now();
    let took = processing_again(&setup, &victims, &victim.name, killed).await;
    let rounds: Vec<f64> = workers
        .iter()
        .zip(&rounds_before)
        .map(|(w, before)| w.metric_with("stream_worker_lease_table_scans_total", r#"kind="round""#).unwrap() - before)
        .collect();
    let watched: Vec<f64> = workers.iter().zip(&watches_before).map(|(w, before)| watches(w) - before).collect();
    eprintln!(
        "segments: {} shards processing again {took:?} after kill -9; full rounds {rounds:?}, watches {watched:?}",
        victims.len()
    );
    assert!(took <= Duration::from_secs(9), "failover took {took:?} with a 3 s failover time");
    assert!(watched.iter().all(|n| *n >= 1.0), "watches during the failover: {watched:?}");
    let puts = producer.finish();
    setup.rows_of(&puts).await;
}

//! The write rate under a real table's limits: a worker behind a proxy that
//! admits a fixed number of write capacity units per second, as a provisioned
//! table does (items beyond it come back in `UnprocessedItems`; a call with
//! none admitted is throttled).

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

/// Units admitted per second by the proxy for `table`, oldest first.
fn units_per_second(stats: &serde_json::Value, table: &str) -> Vec<(u64, u64)> {
    stats["capacity"]["tables"][table]["units_per_second"]
        .as_array()
        .map(|a| a.iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap())).collect())
        .unwrap_or_default()
}

fn counter(stats: &serde_json::Value, table: &str, name: &str) -> u64 {
    stats["capacity"]["tables"][table][name].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_table_of_fixed_capacity_the_rate_settles_under_it_and_nothing_is_lost() {
    let _alone = measuring_alone().await;
    // Well below what the worker could write, so that the steady phase is bound by
    // the table, not by reading: kinesis-local serves ~1,200 units/s of records
    // here, but at 600 units/s a slower CI machine's reads left seconds of the
    // table idle (66.9 % used, with dips to 111 units/s).
    const WCU: u64 = 300;
    let setup = Setup::new("capacity", 4);
    let puts = setup.produce(&["--count", "9000", "--seed", "31"]);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let wcu = WCU.to_string();
    let faults = Faults::start(&upstream, &["--wcu", &wcu, "--table", &setup.tweets_table, "--history", "300"]);
    let endpoint = faults.url();
    let mut worker = setup.worker_with_env("w", &[], &[("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)]);

    // A measurement window: what the proxy refused after the first 10 s.
    eventually(Duration::from_secs(60), "the first rows", || async {
        (!setup.tweets().await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let early = faults.stats();
    let rows = setup.rows_of(&puts).await;
    let late = faults.stats();
    let t = &setup.tweets_table;

    // Nothing lost: rows_of checked the id set. Throttled items after 10 s:
    let refused = counter(&late, t, "items_unprocessed") - counter(&early, t, "items_unprocessed");
    let admitted = counter(&late, t, "items_admitted") - counter(&early, t, "items_admitted");
    let share = refused as f64 / (refused + admitted) as f64;
    // Utilization over the steady phase: from 10 s after the first admitted
    // second to the last full second before the drain ended.
    let seconds: Vec<(u64, u64)> = units_per_second(&late, t);
    let first = seconds.iter().find(|(_, u)| *u > 0).map(|(s, _)| *s).expect("units admitted");
    let last = seconds.iter().rev().find(|(_, u)| *u > 0).map(|(s, _)| *s).unwrap();
    let steady: Vec<u64> = seconds.iter().filter(|(s, _)| *s >= first + 10 && *s < last - 1).map(|(_, u)| *u).collect();
    assert!(steady.len() >= 5, "a steady phase of {} s: {seconds:?}", steady.len());
    let utilization = steady.iter().sum::<u64>() as f64 / (steady.len() as u64 * WCU) as f64;
    println!(
        "capacity {WCU} WCU/s: {} rows in {} s; utilization {:.1} % over {} s; throttled items after 10 s {:.1} % \
         ({refused} of {})",
        rows.len(),
        last - first + 1,
        utilization * 100.0,
        steady.len(),
        share * 100.0,
        refused + admitted
    );
    // Issue #9 aims at 85 %; this rate controller measured 85.5 % here (78 % before
    // it ignored signals from calls sent before a cut). The bound guards against
    // a regression with room for a loaded machine, not the aim.
    assert!(utilization >= 0.70, "utilization {utilization:.3}: {steady:?}");
    assert!(share <= 0.10, "{refused} of {} items refused after the first 10 s", refused + admitted);
    let cuts = worker.metric("stream_worker_write_rate_cuts_total").unwrap_or(0.0);
    assert!(cuts >= 1.0, "the rate was never cut");
    worker.signal("TERM");
    worker.wait_exit(Duration::from_secs(15));
}

/// Units admitted per second between two stats snapshots' clocks: the mean of
/// the full seconds in `[from, to)`.
fn mean_units(stats: &serde_json::Value, table: &str, from: u64, to: u64) -> f64 {
    let seconds: Vec<u64> =
        units_per_second(stats, table).into_iter().filter(|(s, _)| *s >= from && *s < to).map(|(_, u)| u).collect();
    assert!(!seconds.is_empty(), "no seconds in [{from}, {to})");
    seconds.iter().sum::<u64>() as f64 / seconds.len() as f64
}

/// The proxy's clock: it counts units by Unix second.
fn unix_second() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fleet_shares_a_provisioned_table_and_survivors_take_up_a_lost_workers_share() {
    let _alone = measuring_alone().await;
    // A provisioned table of 150 write units/s, enforced by the proxy as DynamoDB
    // would: three workers each take a third, two take half.
    const WCU: u64 = 150;
    let wcu = WCU.to_string();
    let setup = Setup::with("fleet-share", 6, &["--write-capacity", &wcu]);
    // A backlog for the whole test (~8,100 units: 54 s at 150 units/s): both
    // windows must measure the rate the workers hold to, not a stream run dry.
    let puts = setup.produce(&["--count", "7000", "--seed", "37"]);
    let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap();
    let faults = Faults::start(&upstream, &["--wcu", &wcu, "--table", &setup.tweets_table, "--history", "300"]);
    let endpoint = faults.url();
    let env = [("AWS_ENDPOINT_URL_DYNAMODB", endpoint.as_str())];
    let args = ["--failover-time", "4s"];
    let mut workers: Vec<Worker> = ["a", "b", "c"].iter().map(|w| setup.worker_with_env(w, &args, &env)).collect();
    let tweets = format!("table=\"{}\"", setup.tweets_table);
    let ceilings = |workers: &[Worker]| -> Vec<f64> {
        workers.iter().map(|w| w.metric_with("stream_worker_write_rate_ceiling", &tweets).unwrap_or(-1.0)).collect()
    };

    // Three live workers: each capped at a third before anything is throttled.
    // The share is handed over within seconds, though the rate is low (45 s: a
    // fence tripped by a slow emulator delays it): a worker asked for a lease stops after the slice it is writing, not after the
    // batch (1,000 records: 20 s at 50 units/s).
    eventually(Duration::from_secs(45), "each worker holding a lease and capped at a third", || async {
        let owners: HashSet<String> = setup.lease_states().await.into_values().filter_map(|(o, _)| o).collect();
        (owners.len() == 3 && ceilings(&workers) == vec![50.0; 3]).then_some(())
    })
    .await;
    eventually(Duration::from_secs(60), "the first rows", || async {
        (!setup.tweets().await.is_empty()).then_some(())
    })
    .await;
    // Measurement windows: whole seconds of the proxy's clock.
    // (Before they saw each other, each worker started alone at the whole
    // table's rate: the first second is over capacity.)
    let start = unix_second();
    let before = faults.stats();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let three = faults.stats();
    let fleet_rate = mean_units(&three, &setup.tweets_table, start + 1, start + 11);
    let t = &setup.tweets_table;
    let refused_of = |s: &serde_json::Value| counter(s, t, "items_unprocessed") + counter(s, t, "calls_throttled");
    let refused = refused_of(&three) - refused_of(&before);
    let admitted = counter(&three, t, "items_admitted") - counter(&before, t, "items_admitted");

    // kill -9 one: once its leases expire, the survivors' share is a half, and
    // their rate rises to it.
    workers.remove(2).kill9();
    eventually(Duration::from_secs(60), "the survivors' ceiling at half the table", || async {
        (ceilings(&workers) == vec![75.0; 2]).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "the survivors' rate at their new ceiling", || async {
        workers.iter().all(|w| w.metric_with("stream_worker_write_rate_limit", &tweets) == Some(75.0)).then_some(())
    })
    .await;
    let from = unix_second();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let two = faults.stats();
    let survivors_rate = mean_units(&two, t, from + 1, from + 7);
    let rows = setup.row_count().await;
    assert!(rows < puts.tweet_ids().len(), "the backlog ran out before the end of the survivors' window: produce more");
    println!(
        "fleet of 3 on {WCU} WCU/s: {fleet_rate:.0} units/s, {refused} items or calls refused of {admitted} admitted in 10 s; \
         2 survivors: {survivors_rate:.0} units/s"
    );
    // Two workers at a third each would write 100 units/s; at a half, 150. The
    // lower bound leaves room for a loaded machine (126 measured with a busy
    // loop on one of the two cores) and still tells the two apart.
    let seconds = units_per_second(&two, t);
    assert!(
        survivors_rate < WCU as f64 * 1.05 && survivors_rate >= WCU as f64 * 0.75,
        "survivors {survivors_rate} units/s: {seconds:?} (from {from})"
    );
    assert!(fleet_rate < WCU as f64 * 1.05 && fleet_rate >= WCU as f64 * 0.8, "{fleet_rate}");
    // Refusals: at exactly the table's capacity the proxy's bucket has no
    // headroom, so a loaded machine's scheduling jitter shows as a few refused
    // items (0-48 of ~1,330 measured in CI runs); the bound is the 10 %
    // of attempts. Without shares (an on-demand table behind the same proxy,
    // AIMD alone) 1,221 were refused of 1,248 admitted.
    assert!((refused as f64) <= admitted as f64 * 0.10, "{refused} refused: the shares should keep under capacity");
    setup.rows_of(&puts).await;
    for w in &workers {
        w.signal("TERM");
    }
    for w in &mut workers {
        w.wait_exit(Duration::from_secs(15));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn under_a_memory_budget_shards_wait_to_read_and_nothing_is_lost() {
    let _alone = measuring_alone().await;
    // 10,000 tweets on 4 shards, read 10,000 records a call. A budget of 1 MiB
    // is less than one call's expected size (10,000 x ~700 B): one shard at a
    // time holds records, the others wait to read. The accounting itself (never
    // more than the budget held) is the unit tests' (src/engine/budget.rs);
    // here: it engages on a real worker, and every tweet is still a row.
    let setup = Setup::new("budget", 4);
    let puts = setup.produce(&["--count", "10000", "--seed", "41"]);
    for (run, budget) in [("unbounded", "0"), ("bounded", "1MiB")] {
        // A lease table of its own: each run reads the stream from the start.
        let run_setup = Setup { lease_table: format!("{}-{run}", setup.lease_table), ..setup.clone() };
        let mut worker = run_setup.worker(run, &["--max-records", "10000", "--max-in-flight-bytes", budget]);
        let mut peak_gauge = 0.0f64;
        eventually(Duration::from_secs(180), "every record read and written", || {
            peak_gauge = peak_gauge.max(worker.metric("stream_worker_in_flight_bytes").unwrap_or(0.0));
            let done = worker.metric("stream_worker_records_processed_total").unwrap_or(0.0);
            async move { (done >= 10000.0).then_some(()) }
        })
        .await;
        // Every tweet a row before the stop: records read again after a lease
        // was let go (a fence passed under load) count twice in the metric.
        setup.rows_of(&puts).await;
        let waits = worker.metric("stream_worker_in_flight_waits_total").unwrap_or(0.0);
        let rss = worker.peak_rss();
        worker.signal("TERM");
        worker.wait_exit(Duration::from_secs(15));
        println!(
            "{run} (--max-in-flight-bytes {budget}): peak RSS {} MiB, held at most {peak_gauge} B, {waits} waits",
            rss >> 20
        );
        if run == "bounded" {
            assert!(peak_gauge > 0.0 && peak_gauge <= 1048576.0, "{peak_gauge}");
            assert!(waits >= 4.0, "the shards never waited for the budget ({waits})");
        } else {
            assert_eq!((peak_gauge, waits), (0.0, 0.0), "no budget, no accounting");
        }
    }
}

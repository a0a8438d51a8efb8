//! The write rate under a real table's limits: a worker behind a proxy that
//! admits a fixed number of write capacity units per second, as a provisioned
//! table does (items beyond it come back in `UnprocessedItems`; a call with
//! none admitted is throttled).

mod common;

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
    // Well below what the worker could write (the emulator serves ~1,200 units/s of
    // records), so that the steady phase is bound by the table, not by reading.
    const WCU: u64 = 600;
    let setup = Setup::new("capacity", 4);
    let puts = setup.produce(&["--count", "20000", "--seed", "31"]);
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

//! The processing core's CPU cost: decode a ~3 KB tweet and build its item.
//! Target: >= 200,000 tweets/s on one core. Run: cargo bench --bench core

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stream_worker::model::Record;
use stream_worker::processor::tweet::decode;
use stream_worker::processor::{tweet_item, Stamp};

fn record(data: &[u8]) -> Record {
    Record {
        sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
        partition_key: "1050118621198921728".into(),
        data: data.to_vec(),
        arrival: Utc::now(),
        sub_sequence: None,
    }
}

fn bench(c: &mut Criterion) {
    let stamp = Stamp::new(Utc::now(), std::time::Duration::from_secs(7 * 24 * 3600));
    let mut group = c.benchmark_group("decode+item");
    for (name, data) in
        [("v1.1", include_bytes!("fixtures/v1.json").as_slice()), ("v2", include_bytes!("fixtures/v2.json"))]
    {
        let record = record(data);
        assert!(decode(&record.data).is_ok(), "{name} fixture decodes");
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || (),
                |_| {
                    let tweet = decode(&record.data).unwrap();
                    tweet_item(&tweet, "shardId-000000000000", &record, &stamp)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

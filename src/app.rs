//! Wiring: builds the AWS clients and the worker or producer from the CLI
//! arguments, after checking that what they need exists.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{classify, root_cause, StartupError, Target};
use crate::config::{ProduceArgs, RunArgs, Source, StatusArgs};
use crate::health::Health;
use crate::leases::coordinator::{InitialPosition, Worker, WorkerConfig};
use crate::leases::dynamodb::DynamoLeaseStore;
use crate::leases::LeaseStore;
use crate::lifecycle::budget::ByteBudget;
use crate::lifecycle::consumer::ConsumerConfig;
use crate::processor::Processor;
use crate::producer::{file_source, synthetic::Synthetic, Producer};
use crate::retrieval::kinesis::KinesisStream;

fn require_region(config: &SdkConfig, service: &'static str, what: &str) -> anyhow::Result<()> {
    if config.region().is_some() {
        return Ok(());
    }
    Err(StartupError {
        what: what.to_owned(),
        target: Target::new(service, config),
        problem: "no AWS region configured".into(),
        hint: "set AWS_REGION (or a region in your AWS profile)".into(),
    }
    .into())
}

/// Checks that the stream exists and is reachable.
pub async fn check_stream(client: &aws_sdk_kinesis::Client, config: &SdkConfig, stream: &str) -> anyhow::Result<()> {
    let what = format!("kinesis stream '{stream}'");
    require_region(config, "kinesis", &what)?;
    client.describe_stream_summary().stream_name(stream).send().await.map(|_| ()).map_err(|e| {
        StartupError::from_class(what, &Target::new("kinesis", config), classify(&e), root_cause(&e)).into()
    })
}

/// Checks that a table exists and is reachable.
pub async fn check_table(client: &aws_sdk_dynamodb::Client, config: &SdkConfig, table: &str) -> anyhow::Result<()> {
    let what = format!("dynamodb table '{table}'");
    require_region(config, "dynamodb", &what)?;
    client.describe_table().table_name(table).send().await.map(|_| ()).map_err(|e| {
        StartupError::from_class(what, &Target::new("dynamodb", config), classify(&e), root_cause(&e)).into()
    })
}

/// How long the lease table may go unanswered before `/readyz` says not ready:
/// three quick take rounds, at least 3 s.
pub fn readiness_window(args: &RunArgs) -> Duration {
    (crate::leases::coordinator::quick_take_interval(args.failover_time) * 3).max(Duration::from_secs(3))
}

/// `stream-worker run`: consume until `shutdown` is cancelled.
pub async fn run(args: RunArgs, shutdown: CancellationToken, health: Arc<Health>) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    check_table(&dynamodb, &config, &args.processor.tweets_table).await?;
    check_table(&dynamodb, &config, &args.processor.dead_letter_table).await?;

    let store = Arc::new(DynamoLeaseStore::new(dynamodb.clone(), &args.lease_table));
    store.ensure_table().await.map_err(|e| StartupError {
        what: format!("dynamodb lease table '{}'", args.lease_table),
        target: Target::new("dynamodb", &config),
        problem: e.to_string(),
        hint: "the worker needs dynamodb:CreateTable (or a pre-created table with key leaseKey), \
               plus Scan, PutItem, UpdateItem and DeleteItem on it"
            .into(),
    })?;

    crate::metrics::register_table_counters(&[&args.processor.tweets_table, &args.processor.dead_letter_table]);
    let processor = Arc::new(Processor::from_args(&args.processor, dynamodb));
    let worker_id = args.worker_id();
    let initial_timestamp = match args.initial_position {
        InitialPosition::AtTimestamp(t) => Some(t),
        _ => None,
    };
    let worker = Worker {
        config: WorkerConfig {
            worker_id: worker_id.clone(),
            failover: args.failover_time,
            max_leases: args.max_leases.unwrap_or(usize::MAX),
            max_leases_to_steal: args.max_leases_to_steal,
            shard_sync_interval: args.shard_sync_interval,
            initial_position: args.initial_position,
            shutdown_timeout: args.shutdown_timeout,
            consumer: ConsumerConfig {
                max_records: args.max_records,
                poll_interval: args.poll_interval,
                idle_poll_interval: args.idle_poll_interval,
                initial_timestamp,
                budget: (args.max_in_flight_bytes > 0).then(|| ByteBudget::new(args.max_in_flight_bytes)),
            },
        },
        stream: Arc::new(KinesisStream::new(kinesis, &args.stream)),
        store,
        processor,
        health: health.clone(),
    };
    health.started();
    tracing::info!(stream = %args.stream, worker_id = %worker_id, tweets_table = %args.processor.tweets_table,
        lease_table = %args.lease_table, metrics_addr = %args.metrics_addr, "starting");
    worker.run(shutdown).await?;
    Ok(())
}

/// `stream-worker status`: print each shard's lease.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    use crate::retrieval::StreamClient as _;
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    check_table(&dynamodb, &config, &args.lease_table).await?;
    let store = DynamoLeaseStore::new(dynamodb.clone(), &args.lease_table);
    let stream = KinesisStream::new(kinesis, &args.stream);
    let mut seen = crate::leases::taker::Observations::default();
    let mut leases = store.list().await?;
    let observed = if args.observe.is_zero() {
        None
    } else {
        seen.observe(&leases, Instant::now());
        tokio::time::sleep(args.observe).await;
        leases = store.list().await?;
        seen.observe(&leases, Instant::now());
        Some((&seen, Instant::now(), args.failover_time))
    };
    let shards = stream.list_shards().await.map_err(|e| anyhow::anyhow!("ListShards: {}", e.message))?;
    let ids: Vec<String> = shards.into_iter().map(|s| s.id).collect();
    let rows = crate::status::report(&leases, &ids, observed, &stream).await;
    let workers = crate::status::live_workers(&rows);
    let mut limits = Vec::new();
    for table in [&args.tweets_table, &args.dead_letter_table] {
        use crate::processor::sink::BatchWriter as _;
        match crate::processor::sink::DynamoTable::new(dynamodb.clone(), table).write_limit().await {
            Ok(limit) => limits.push(crate::status::WriteLimit::new(table, limit, workers)),
            Err(e) => {
                eprintln!("status: no write limit for table '{table}' (set --tweets-table/--dead-letter-table): {e}")
            }
        }
    }
    if args.json {
        let out = serde_json::json!({ "shards": rows, "live_workers": workers, "write_limits": limits });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", crate::status::render_text(&rows));
        print!("{}", crate::status::render_write_limits(&limits, workers));
    }
    Ok(())
}

/// `stream-worker produce`: put tweets until the source, count or time runs out.
pub async fn produce(args: ProduceArgs, stop: CancellationToken) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    let put_log = match &args.put_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open --put-log {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let deadline = args.minutes.map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let mut producer = Producer {
        client: kinesis,
        stream: args.stream.clone(),
        rate: args.rate,
        partition_keys: args.partition_keys,
        put_log,
    };
    let started = Instant::now();
    let summary = match &args.source {
        Source::Synthetic => {
            let count = args.count.or(if deadline.is_none() { Some(1000) } else { None });
            let source = Synthetic::new(args.seed, args.malformed_ratio).map(Ok);
            producer.run(source, count, deadline, stop).await?
        }
        Source::File(path) => producer.run(file_source(path)?, args.count, deadline, stop).await?,
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "put {} records ({} bytes) into stream '{}' in {:.1} s ({:.0} records/s; {} PutRecords calls, {} entries retried)",
        summary.records,
        summary.bytes,
        args.stream,
        secs,
        summary.records as f64 / secs.max(1e-9),
        summary.calls,
        summary.retried_entries
    );
    Ok(())
}

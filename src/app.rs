//! Wiring: builds the AWS clients and the worker or producer from the CLI
//! arguments, after checking that what they need exists.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{StartupError, Target};
use crate::config::{
    ConsumerArgs, DeadLettersCommand, ProduceArgs, RetrievalMode, RewindArgs, RunArgs, Source, StatusArgs,
};
use crate::engine::budget::ByteBudget;
use crate::engine::consumer::ConsumerConfig;
use crate::engine::coordinator::{Worker, WorkerConfig};
use crate::health::Health;
use crate::leases::dynamodb::DynamoLeaseStore;
use crate::leases::LeaseStore;

use crate::producer::sink::KinesisSink;
use crate::producer::x_api::{self, BearerToken, Endpoint, Limits, Rule, XApi};
use crate::producer::{feed_iter, file_source, synthetic::Synthetic, Producer, Stats};
use crate::retrieval::fan_out::FanOutConfig;
use crate::retrieval::kinesis::{self as kinesis_api, KinesisStream};
use crate::retrieval::polling::PollingConfig;
use crate::retrieval::Retrieval;

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
    crate::aws::check(&what, Target::new("kinesis", config), || {
        client.describe_stream_summary().stream_name(stream).send()
    })
    .await
}

/// Checks that a table exists and is reachable.
pub async fn check_table(client: &aws_sdk_dynamodb::Client, config: &SdkConfig, table: &str) -> anyhow::Result<()> {
    let what = format!("dynamodb table '{table}'");
    require_region(config, "dynamodb", &what)?;
    crate::aws::check(&what, Target::new("dynamodb", config), || client.describe_table().table_name(table).send()).await
}

/// How long the lease table may go unanswered before `/readyz` says not ready:
/// one and a half failover times, at least 3 s. A worker reads the table at
/// least once a failover time (take rounds) and writes it every third of one
/// (renewals, when it holds leases).
pub fn readiness_window(args: &RunArgs) -> Duration {
    (args.failover_time * 3 / 2).max(Duration::from_secs(3))
}

/// `stream-worker run`: consume until `shutdown` is cancelled.
pub async fn run(args: RunArgs, shutdown: CancellationToken, health: Arc<Health>) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    // Writes made for a lease are checked against its fence, SDK retries included.
    let dynamodb = crate::aws::dynamodb_client(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    check_table(&dynamodb, &config, &args.processor.tweets_table).await?;
    check_table(&dynamodb, &config, &args.processor.dead_letter_table).await?;

    let lease_table = &args.consumer.lease_table;
    let store = Arc::new(DynamoLeaseStore::new(dynamodb.clone(), lease_table));
    store.ensure_table().await.map_err(|e| StartupError {
        what: format!("dynamodb lease table '{lease_table}' and heartbeat table '{}'", store.workers_table()),
        target: Target::new("dynamodb", &config),
        problem: e.to_string(),
        hint: format!(
            "the worker needs dynamodb:CreateTable (or pre-created tables: '{lease_table}' with key leaseKey, \
             '{}' with keys fleet and worker) and UpdateTimeToLive, plus DescribeTable, Scan, Query, GetItem, \
             PutItem, UpdateItem and DeleteItem on both",
            store.workers_table()
        ),
    })?;

    crate::metrics::register_table_counters(&[&args.processor.tweets_table, &args.processor.dead_letter_table]);
    let processor = Arc::new(args.processor.build(dynamodb));
    let worker_id = args.worker_id();
    let worker = Worker {
        config: WorkerConfig {
            worker_id: worker_id.clone(),
            failover: args.failover_time,
            renewal_failover: args.renewal_failover_time,
            max_leases: args.max_leases.unwrap_or(usize::MAX),
            max_leases_to_steal: args.max_leases_to_steal,
            shard_sync_interval: args.shard_sync_interval,
            initial_position: args.initial_position,
            shutdown_timeout: args.shutdown_timeout,
            consumer: ConsumerConfig {
                retrieval: retrieval(&args, &kinesis, &config).await?,
                budget: (args.max_in_flight_bytes > 0).then(|| ByteBudget::new(args.max_in_flight_bytes)),
                checkpoint_interval: args.checkpoint_interval,
            },
            rng_seed: None,
        },
        stream: Arc::new(KinesisStream::new(kinesis, &args.stream)),
        store,
        processor,
        health: health.clone(),
    };
    health.started();
    tracing::info!(stream = %args.stream, worker_id = %worker_id, tweets_table = %args.processor.tweets_table,
        lease_table = %lease_table, retrieval = worker.config.consumer.retrieval.name(), metrics_addr = %args.metrics_addr, "starting");
    worker.run(shutdown).await?;
    Ok(())
}

/// The reader of `--retrieval`; for fan-out, the stream consumer registered
/// (if absent) and ACTIVE.
async fn retrieval(args: &RunArgs, kinesis: &aws_sdk_kinesis::Client, config: &SdkConfig) -> anyhow::Result<Retrieval> {
    Ok(match args.retrieval {
        RetrievalMode::Polling => Retrieval::Polling(PollingConfig {
            max_records: args.max_records,
            poll_interval: args.poll_interval,
            idle_poll_interval: args.idle_poll_interval,
        }),
        RetrievalMode::FanOut => {
            let name = args.consumer.consumer_name();
            let what = format!("kinesis stream consumer '{name}' of stream '{}'", args.stream);
            let failed = |e: crate::retrieval::StreamError| {
                StartupError::from_class(what.clone(), &Target::new("kinesis", config), e.class, e.message)
            };
            let stream_arn = kinesis_api::stream_arn(kinesis, &args.stream).await.map_err(failed)?;
            let consumer_arn = kinesis_api::ensure_consumer(kinesis, &stream_arn, name).await.map_err(failed)?;
            tracing::info!(consumer_name = name, consumer_arn, "reading through enhanced fan-out");
            Retrieval::FanOut {
                subscriber: Arc::new(kinesis_api::KinesisSubscriber::new(kinesis.clone(), consumer_arn)),
                config: FanOutConfig {
                    subscription_lifetime: args.fan_out_subscription_lifetime,
                    ..FanOutConfig::default()
                },
            }
        }
    })
}

/// Asks `what?` on the terminal; `Ok(true)` for yes. Without a terminal to ask
/// on, refuses with an error saying to pass `--yes`.
fn confirm(what: &str) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("would {what}; pass --yes to confirm (standard input is not a terminal)");
    }
    eprint!("{what}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `stream-worker consumer deregister`.
pub async fn deregister_consumer(args: ConsumerArgs) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let client = aws_sdk_kinesis::Client::new(&config);
    check_stream(&client, &config, &args.stream).await?;
    let name = args.name.consumer_name();
    let what = format!("kinesis stream consumer '{name}' of stream '{}'", args.stream);
    let failed = |e: crate::retrieval::StreamError| {
        StartupError::from_class(what.clone(), &Target::new("kinesis", &config), e.class, e.message)
    };
    let stream_arn = kinesis_api::stream_arn(&client, &args.stream).await.map_err(failed)?;
    let Some(status) = kinesis_api::consumer_status(&client, &stream_arn, name).await.map_err(failed)? else {
        println!("stream '{}' has no consumer '{name}'; nothing to do", args.stream);
        return Ok(());
    };
    if args.dry_run {
        println!(
            "would deregister stream consumer '{name}' ({status}) of stream '{}'; dry run: nothing changed",
            args.stream
        );
        return Ok(());
    }
    let question = format!(
        "deregister stream consumer '{name}' of stream '{}' (fan-out workers lose their subscriptions)",
        args.stream
    );
    if !args.yes && !confirm(&question)? {
        println!("nothing changed");
        return Ok(());
    }
    if kinesis_api::deregister_consumer(&client, &stream_arn, name).await.map_err(failed)? {
        println!("deregistered stream consumer '{name}' of stream '{}'", args.stream);
    } else {
        println!("stream '{}' has no consumer '{name}'; nothing to do", args.stream);
    }
    Ok(())
}

/// `stream-worker status`: print each shard's lease, once or (`--watch`)
/// every interval until interrupted.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    use crate::retrieval::StreamClient as _;
    use std::io::{IsTerminal as _, Write as _};
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    check_table(&dynamodb, &config, &args.lease_table).await?;
    let store = DynamoLeaseStore::new(dynamodb.clone(), &args.lease_table);
    let stream = KinesisStream::new(kinesis, &args.stream);
    let mut limits = Vec::new();
    for table in [&args.tweets_table, &args.dead_letter_table] {
        use crate::processor::sink::BatchWriter as _;
        match crate::processor::sink::DynamoTable::new(dynamodb.clone(), table).write_limit().await {
            Ok(limit) => limits.push((table.clone(), limit)),
            Err(e) => {
                eprintln!("status: no write limit for table '{table}' (set --tweets-table/--dead-letter-table): {e}")
            }
        }
    }
    let mut seen = crate::engine::taker::Observations::watching(args.failover_time);
    let watched_since = Instant::now();
    // A fleet of releases without heartbeats has no heartbeat table.
    let fleet = || async {
        store.fleet().await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no heartbeats");
            crate::model::Fleet::default()
        })
    };
    if !args.observe.is_zero() && args.watch.is_none() {
        seen.observe(&store.list().await?, Instant::now());
        seen.observe_fleet(&fleet().await, Instant::now(), args.observe * 2);
        tokio::time::sleep(args.observe).await;
    }
    let terminal = std::io::stdout().is_terminal();
    let mut previous: Option<(std::collections::HashMap<String, u64>, Instant)> = None;
    loop {
        let leases = store.list().await?;
        let fleet = fleet().await;
        let now = Instant::now();
        seen.observe(&leases, now);
        seen.observe_fleet(&fleet, now, args.renewal_failover_time);
        // Expiry can be judged once the table was watched for a failover time.
        let watched = !args.observe.is_zero() || now.duration_since(watched_since) >= args.failover_time;
        let observed = (watched && (args.watch.is_some() || !args.observe.is_zero())).then_some((
            &seen,
            now,
            args.renewal_failover_time,
        ));
        let shards = stream.list_shards().await.map_err(|e| anyhow::anyhow!("ListShards: {}", e.message))?;
        let ids: Vec<String> = shards.into_iter().map(|s| s.id).collect();
        let mut rows = crate::status::report(&leases, &ids, observed, &stream).await;
        if let Some((counts, at)) = &previous {
            crate::status::add_rates(&mut rows, counts, now.duration_since(*at));
        }
        previous = Some((crate::status::counts(&rows), now));
        let workers = crate::status::live_workers(&rows);
        let limits: Vec<_> =
            limits.iter().map(|(table, limit)| crate::status::WriteLimit::new(table, *limit, workers)).collect();
        let heartbeats = crate::status::heartbeats(&fleet.workers, chrono::Utc::now());
        let protocol = fleet.protocol.unwrap_or(crate::model::Heartbeat::RENEWALS);
        let view = if args.json {
            let out = serde_json::json!({
                "protocol": protocol, "shards": rows, "live_workers": workers, "workers": heartbeats,
                "write_limits": limits
            });
            if args.watch.is_some() {
                format!("{}\n", serde_json::to_string(&out)?)
            } else {
                format!("{}\n", serde_json::to_string_pretty(&out)?)
            }
        } else {
            let mut text = crate::status::render_text(&rows, args.watch.is_some());
            if args.watch.is_some() {
                text.push_str(&crate::status::render_workers(&rows));
            }
            text.push_str(&crate::status::render_heartbeats(&heartbeats));
            text.push_str(&format!("\nfleet protocol: {protocol}\n"));
            text.push_str(&crate::status::render_write_limits(&limits, workers));
            text
        };
        let Some(interval) = args.watch else {
            print!("{view}");
            return Ok(());
        };
        let mut out = std::io::stdout().lock();
        let header = format!(
            "stream '{}', every {}, {} (Ctrl-C to stop)\n\n",
            args.stream,
            humantime::format_duration(interval),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        if args.json {
            out.write_all(view.as_bytes())?;
        } else if terminal {
            // Home the cursor and clear the screen: the view is redrawn in place.
            write!(out, "\x1b[H\x1b[2J{header}{view}")?;
        } else {
            writeln!(out, "--- {header}{view}")?;
        }
        out.flush()?;
        drop(out);
        tokio::time::sleep(interval).await;
    }
}

/// `stream-worker dead-letters list|replay|purge`.
pub async fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<()> {
    use crate::dead_letters::{DeadLetterTable, ReplaySummary};
    let config = crate::aws::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let (table, filter) = match &command {
        DeadLettersCommand::List(a) => (&a.dead_letter_table, &a.filter),
        DeadLettersCommand::Replay(a) => (&a.processor.dead_letter_table, &a.filter),
        DeadLettersCommand::Purge(a) => (&a.dead_letter_table, &a.filter),
    };
    crate::telemetry::init_logs(filter.log.log_format);
    check_table(&dynamodb, &config, table).await?;
    let dead = DeadLetterTable::new(dynamodb.clone(), table);
    let letters = dead.matching(&filter.filter()).await?;
    match command {
        DeadLettersCommand::List(a) => {
            if a.filter.json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                print!("{}", crate::dead_letters::render_text(&letters));
            }
        }
        DeadLettersCommand::Replay(a) => {
            check_table(&dynamodb, &config, &a.processor.tweets_table).await?;
            let processor = a.processor.build(dynamodb);
            processor.refresh_write_limits().await;
            let summary: ReplaySummary = crate::dead_letters::replay(&dead, &processor, letters, a.dry_run).await?;
            if a.filter.json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
        }
        DeadLettersCommand::Purge(a) => {
            if letters.is_empty() {
                println!("no dead letters match; nothing purged");
                return Ok(());
            }
            let what = format!("delete {} dead letter(s) from '{}'", letters.len(), dead.table());
            if !a.yes && !confirm(&what)? {
                println!("nothing purged");
                return Ok(());
            }
            let (deleted, gone) = crate::dead_letters::purge(&dead, &letters).await?;
            if a.filter.json {
                println!("{}", serde_json::json!({ "purged": deleted, "already_gone": gone }));
            } else {
                println!("purged {deleted} dead letter(s) from '{}' ({gone} already gone)", dead.table());
            }
        }
    }
    Ok(())
}

/// `stream-worker checkpoints rewind`.
/// `stream-worker fleet upgrade|rollback`: set the fleet's protocol and wait
/// until every worker follows.
pub async fn fleet(command: crate::config::FleetCommand) -> anyhow::Result<()> {
    use crate::config::FleetCommand;
    use crate::model::Heartbeat;
    let (args, to) = match command {
        FleetCommand::Upgrade(args) => (args, Heartbeat::HEARTBEATS),
        FleetCommand::Rollback(args) => (args, Heartbeat::RENEWALS),
    };
    crate::telemetry::init_logs(args.log.log_format);
    let config = crate::aws::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    check_table(&dynamodb, &config, &args.lease_table).await?;
    let store = DynamoLeaseStore::new(dynamodb, &args.lease_table);
    let behind = crate::protocol::switch(&store, to, args.wait).await?;
    if !behind.is_empty() {
        anyhow::bail!(
            "the fleet's protocol is {to}, but after {} these workers still report the other: {}\n\
             hint: they may be stuck or unable to read the heartbeat table; see their logs",
            humantime::format_duration(args.wait),
            behind.join(", ")
        );
    }
    println!("the fleet runs protocol {to}: every live worker reports it");
    if to == Heartbeat::RENEWALS {
        println!("older releases may now join or replace the workers");
    }
    Ok(())
}

pub async fn rewind(args: RewindArgs) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    check_stream(&kinesis, &config, &args.stream).await?;
    check_table(&dynamodb, &config, &args.lease_table).await?;
    let store = DynamoLeaseStore::new(dynamodb, &args.lease_table);
    let stream = KinesisStream::new(kinesis, &args.stream);
    let plan = crate::rewind::plan(&store, &stream, &args.to, &args.shards).await?;
    if !args.dry_run && !args.yes {
        eprint!("{}", crate::rewind::render_text(&plan));
        let what =
            format!("rewind the leases above in '{}' (their owners stop and the fleet reads again)", args.lease_table);
        if !confirm(&what)? {
            println!("nothing changed");
            return Ok(());
        }
    }
    let applied = if args.dry_run { None } else { Some(crate::rewind::apply(&store, &plan).await?) };
    if args.json {
        println!("{}", serde_json::json!({ "dry_run": args.dry_run, "shards": plan, "applied": applied }));
    } else {
        print!("{}", crate::rewind::render_text(&plan));
        match applied {
            None => println!("dry run: nothing changed"),
            Some(n) => {
                println!("rewound {n} lease(s); their owners stop at their next renewal and the fleet takes them again")
            }
        }
    }
    Ok(())
}

/// `stream-worker produce`: put tweets until the source, count or time runs out.
pub async fn produce(args: ProduceArgs, stop: CancellationToken, health: Arc<Health>) -> anyhow::Result<()> {
    let config = crate::aws::load_config().await;
    let timeouts = crate::aws::timeouts(crate::producer::PUT_ATTEMPT_TIMEOUT);
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&config).timeout_config(timeouts).build(),
    );
    check_stream(&kinesis, &config, &args.stream).await?;
    let put_log = match &args.put_log {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(std::io::BufWriter::new)
                .map_err(|e| anyhow::anyhow!("cannot open --put-log {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let x_api = match args.source {
        Source::XApi | Source::XApiSample => {
            let token = bearer_token(&args, &config).await?;
            let endpoint = if args.source == Source::XApi { Endpoint::Filtered } else { Endpoint::Sample };
            let api = XApi::new(&args.x_api_url, token, endpoint)?;
            let wanted = wanted_rules(&args)?;
            if !wanted.is_empty() {
                if let Some(plan) = api.sync_rules(&wanted, args.keep_rules, &stop).await? {
                    tracing::info!(added = plan.add.len(), deleted = plan.delete.len(), "stream rules in sync");
                }
            }
            Some(api)
        }
        _ => None,
    };
    let deadline = args.duration.map(|d| Instant::now() + d);
    let stats = Arc::new(Stats::default());
    stats.set_connected(x_api.is_none());
    let producer = Producer {
        sink: Arc::new(KinesisSink { client: kinesis, stream: args.stream.clone() }),
        rate: args.rate,
        partition_keys: args.partition_keys,
        put_log,
        aggregate: args.aggregate.then_some(args.aggregate_max_bytes as usize),
        stats: stats.clone(),
        health: health.clone(),
        shutdown_timeout: args.shutdown_timeout,
    };
    let progress = tokio::spawn(report_progress(stats.clone(), health));
    let started = Instant::now();
    let (summary, result) = match (&args.source, x_api) {
        (Source::Synthetic, _) => {
            let count = args.count.or(if deadline.is_none() { Some(1000) } else { None });
            let source = Synthetic::new(args.seed, args.malformed_ratio).map(Ok);
            producer.run(|tx, stop| feed_iter(source, tx, count, deadline, stop), stop).await
        }
        (Source::File(path), _) => {
            let source = file_source(path)?;
            producer.run(|tx, stop| feed_iter(source, tx, args.count, deadline, stop), stop).await
        }
        (_, Some(api)) => {
            let limits = Limits { count: args.count, deadline, stall_timeout: args.x_api_stall_timeout };
            producer.run(|tx, stop| async move { x_api::feed(&api, tx, limits, stop).await }, stop).await
        }
        (_, None) => unreachable!("the X API client is built for the X API sources"),
    };
    progress.abort();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "stream '{}': {summary} in {secs:.1} s ({:.0} records/s)",
        args.stream,
        summary.put as f64 / secs.max(1e-9)
    );
    result
}

/// The bearer token: from Secrets Manager when a secret is named, else from
/// `X_BEARER_TOKEN`. Errors never include the token.
async fn bearer_token(args: &ProduceArgs, config: &SdkConfig) -> anyhow::Result<BearerToken> {
    let Some(secret) = &args.bearer_token_secret else {
        let token = std::env::var("X_BEARER_TOKEN").map_err(|_| {
            anyhow::anyhow!(
                "the X API sources need a bearer token\n  hint: set X_BEARER_TOKEN, or name an AWS Secrets Manager \
                 secret with --bearer-token-secret (STREAM_WORKER_BEARER_TOKEN_SECRET)"
            )
        })?;
        return BearerToken::new(token).map_err(|e| anyhow::anyhow!("X_BEARER_TOKEN: {e}"));
    };
    let client = aws_sdk_secretsmanager::Client::new(config);
    let out = client.get_secret_value().secret_id(secret).send().await.map_err(|e| {
        anyhow::anyhow!("cannot read the bearer token from secret '{secret}': {}", crate::aws::describe(&e))
    })?;
    let text = out.secret_string().ok_or_else(|| {
        anyhow::anyhow!("secret '{secret}' has no SecretString (a binary secret cannot hold the token)")
    })?;
    let token = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => map
            .get("bearer_token")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("secret '{secret}' is JSON without a \"bearer_token\" string"))?,
        _ => text.to_owned(),
    };
    BearerToken::new(token).map_err(|e| anyhow::anyhow!("secret '{secret}': {e}"))
}

/// The rules of `--rule` and `--rules-file`.
fn wanted_rules(args: &ProduceArgs) -> anyhow::Result<Vec<Rule>> {
    let mut rules: Vec<Rule> =
        args.rules.iter().filter(|v| !v.trim().is_empty()).map(|v| Rule { value: v.clone(), tag: None }).collect();
    if let Some(path) = &args.rules_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read --rules-file {}: {e}", path.display()))?;
        let listed: Vec<Rule> = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "--rules-file {}: {e}\n  hint: the file is a JSON list: [{{\"value\": \"lang:en #rustlang\", \
                 \"tag\": \"rust\"}}]",
                path.display()
            )
        })?;
        rules.extend(listed);
    }
    Ok(rules)
}

/// Progress: a live line on a terminal, a structured log line every 10 s
/// otherwise; the gauges and readiness that depend on time.
async fn report_progress(stats: Arc<Stats>, health: Arc<Health>) {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal { indicatif::ProgressBar::new_spinner() } else { indicatif::ProgressBar::hidden() };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    for n in 0u64.. {
        tick.tick().await;
        let s = stats.summary();
        if let Some(at) = stats.last_received() {
            metrics::gauge!(crate::metrics::PRODUCER_LAST_TWEET_AGE_SECONDS).set(at.elapsed().as_secs_f64());
        }
        health.set_blocker((!stats.connected()).then(|| "not connected to the X API stream".to_owned()));
        if s.received == s.put {
            // Nothing waits for Kinesis: idle is healthy.
            health.store_ok();
        }
        let rate = (s.put - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-9);
        last = (Instant::now(), s.put);
        if terminal {
            bar.set_message(format!("{rate:.0} records/s; {s}"));
            bar.tick();
        } else if n % 10 == 0 && n > 0 {
            tracing::info!(
                received = s.received,
                put = s.put,
                retried = s.retried,
                buffered = s.received - s.put,
                reconnects = s.reconnects.values().sum::<u64>(),
                records_per_s = rate.round() as u64,
                "progress"
            );
        }
    }
}

//! The two programs' bodies: the `stream-worker` command's dispatch and the
//! `stream-worker-lambda` function's cold start and invocation loop.
//!
//! They live in the library, not in `src/main.rs` and `src/bin/lambda.rs`,
//! because an `async fn`'s body is compiled in the crate that polls it: polled
//! from a binary, the whole engine was compiled again for each binary. Here it
//! is compiled once, and the binaries only choose the allocator and link.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::config::{CheckpointsCommand, Cli, Command, ConsumerCommand, MetricsAddr};
use crate::health::Health;
use crate::telemetry::Serves;
use crate::{app, shutdown, telemetry};

/// `stream-worker`: parses the command line and runs the command; on an error
/// it prints it, with its hint, to stderr and exits with 1.
pub fn main() {
    let cli = Cli::parse();
    // One thread for every command. The producer's source and put loop hand
    // every record to each other, and across threads each handoff was a futex
    // wake-up and a context switch (most of its CPU per tweet, measured). The
    // worker waits on the network: its work per record is microseconds, and on a
    // second thread it paid more in wake-ups and stolen tasks than it gained.
    // One replica uses one core; scale out = add replicas.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    if let Err(e) = runtime.expect("cannot start the tokio runtime").block_on(run(cli)) {
        eprintln!("error: {e:#}");
        // At once, as before: a blocking read (the producer's stdin, a file)
        // may still be waiting, and dropping the runtime would wait for it.
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            telemetry::init_logs(args.log.log_format);
            args.validate().map_err(anyhow::Error::msg)?;
            let health = Arc::new(Health::new(app::readiness_window(&args)));
            if let MetricsAddr::At(addr) = args.metrics_addr {
                telemetry::serve(addr, health.clone(), Serves::Worker).await?;
                crate::processor::register_metrics();
            }
            let token = signals()?;
            app::run(args, token, health).await
        }
        Command::Healthcheck(args) => telemetry::healthcheck(&args.url).await.map(|body| print!("{body}")),
        Command::DeadLetters(command) => app::dead_letters(command).await,
        Command::Checkpoints(CheckpointsCommand::Rewind(args)) => {
            telemetry::init_logs(args.log.log_format);
            app::rewind(args).await
        }
        Command::Consumer(ConsumerCommand::Deregister(args)) => {
            telemetry::init_logs(args.log.log_format);
            app::deregister_consumer(args).await
        }
        Command::Fleet(command) => app::fleet(command).await,
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            clap_complete::generate(args.shell, &mut Cli::command(), "stream-worker", &mut std::io::stdout());
            Ok(())
        }
        Command::Status(args) => {
            telemetry::init_logs(args.log.log_format);
            app::status(args).await
        }
        Command::Produce(args) => {
            telemetry::init_logs(args.log.log_format);
            let health = Arc::new(Health::new(Duration::from_secs(30)).with_subject("Kinesis"));
            args.validate().map_err(anyhow::Error::msg)?;
            if let MetricsAddr::At(addr) = args.metrics_addr {
                telemetry::serve(addr, health.clone(), Serves::Producer).await?;
                crate::producer::x_api::register_metrics();
            }
            let token = signals()?;
            app::produce(args, token, health).await
        }
    }
}

/// SIGTERM and SIGINT cancel the returned token.
fn signals() -> anyhow::Result<tokio_util::sync::CancellationToken> {
    shutdown::on_signals().map_err(|e| anyhow::anyhow!("cannot install signal handlers: {e}"))
}

/// The EMF namespace of the Lambda function's metrics; the dimensions are the
/// metrics' own labels.
#[cfg(feature = "lambda")]
const NAMESPACE: &str = "StreamWorker";

/// `stream-worker-lambda`: cold start (configuration from the `STREAM_WORKER_*`
/// environment, clients, both tables checked; a failure is reported to the
/// Runtime API's `/init/error`), then one invocation at a time: Kinesis event →
/// the shared core → `batchItemFailures`, and one EMF flush.
///
/// One thread, as the worker: Lambda hands the function one batch at a time,
/// and below 1,769 MB of memory it has less than one vCPU.
#[cfg(feature = "lambda")]
pub fn lambda() -> Result<(), lambda_runtime::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(lambda_loop())
}

#[cfg(feature = "lambda")]
async fn lambda_loop() -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{service_fn, Error, LambdaEvent};

    use crate::lambda::{self, KinesisEvent};

    telemetry::init_lambda_logs();
    let metrics = metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).init()?;
    crate::metrics::describe();

    let processor = match lambda_init().await {
        Ok(processor) => Arc::new(processor),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::error!(error = %message, "cold start failed");
            if let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") {
                if let Err(why) = lambda::report_init_error(&api, "Runtime.InitError", &message).await {
                    tracing::error!(error = %why, "cannot report the init error to the Runtime API");
                }
            }
            std::process::exit(1);
        }
    };

    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| {
        let processor = processor.clone();
        async move {
            let deadline = event.context.deadline();
            let response = lambda::handle(processor.as_ref(), event.payload, deadline).await;
            metrics.set_property("requestId", event.context.request_id);
            if let Err(e) = metrics.flush(std::io::stdout().lock()) {
                tracing::warn!(error = %e, "cannot write metrics");
            }
            Ok::<_, Error>(response)
        }
    }))
    .await
}

/// Configuration, clients, and the tables checked: everything an invocation needs.
#[cfg(feature = "lambda")]
async fn lambda_init() -> anyhow::Result<crate::processor::Processor> {
    let args = crate::config::LambdaArgs::from_env().map_err(anyhow::Error::msg)?;
    let config = crate::aws::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    app::check_table(&dynamodb, &config, &args.processor.tweets_table).await?;
    app::check_table(&dynamodb, &config, &args.processor.dead_letter_table).await?;
    tracing::info!(
        tweets_table = %args.processor.tweets_table,
        dead_letter_table = %args.processor.dead_letter_table,
        "cold start done"
    );
    Ok(args.processor.build(dynamodb))
}

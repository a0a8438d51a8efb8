//! `stream-worker-lambda`: the Lambda function of the reference architecture.
//!
//! Cold start: read the `STREAM_WORKER_*` environment (the names of
//! `stream-worker run`'s env twins), build the AWS clients once, check that both
//! tables answer; a failure is reported to the Runtime API's `/init/error` with
//! the same one-line message and hint as `stream-worker run`. Each invocation:
//! Kinesis event → the shared core → `batchItemFailures` (see
//! [`stream_worker::lambda`]). Logs are JSON with the request id; metrics are
//! CloudWatch Embedded Metric Format lines on stdout, one flush per invocation,
//! with the worker's metric names.

use std::sync::Arc;

use lambda_runtime::{service_fn, Error, LambdaEvent};
use stream_worker::app;
use stream_worker::config::LambdaArgs;
use stream_worker::lambda::{self, KinesisEvent};
use stream_worker::processor::Processor;

/// jemalloc: the per-record path allocates (the SDK's types are owned maps and
/// strings), and glibc's malloc spent a fifth of the CPU on it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The EMF namespace; the dimensions are the metrics' own labels.
const NAMESPACE: &str = "StreamWorker";

/// One thread, as the worker: Lambda hands the function one batch at a time,
/// and below 1,769 MB of memory it has less than one vCPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    stream_worker::telemetry::init_lambda_logs();
    let metrics = metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).init()?;
    stream_worker::metrics::describe();

    let processor = match init().await {
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
async fn init() -> anyhow::Result<Processor> {
    let args = LambdaArgs::from_env().map_err(anyhow::Error::msg)?;
    let config = stream_worker::aws::load_config().await;
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

//! `stream-worker-lambda`: the Lambda function of the reference architecture.
//!
//! Cold start: read the `STREAM_WORKER_*` environment (the names of
//! `stream-worker run`'s env twins), build the AWS clients once, check that both
//! tables answer; a failure is reported to the Runtime API's `/init/error` with
//! the same one-line message and hint as `stream-worker run`. Each invocation:
//! Kinesis event → the shared core → `batchItemFailures` (see
//! [`stream_worker::lambda`]). Logs are JSON with the request id; metrics are
//! CloudWatch Embedded Metric Format lines on stdout, one flush per invocation,
//! with the worker's metric names. The body is [`stream_worker::cli::lambda`],
//! compiled once in the library; this file chooses the allocator.

/// jemalloc: the per-record path allocates (the SDK's types are owned maps and
/// strings), and glibc's malloc spent a fifth of the CPU on it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), lambda_runtime::Error> {
    stream_worker::cli::lambda()
}

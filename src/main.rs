//! `stream-worker`: the CLI. Only this file wires OS signals and exit codes.

use clap::Parser;

use std::sync::Arc;
use std::time::Duration;
use stream_worker::config::{CheckpointsCommand, Cli, Command, ConsumerCommand, MetricsAddr};

use stream_worker::health::Health;
use stream_worker::telemetry::Serves;
use stream_worker::{app, shutdown, telemetry};

/// jemalloc: the per-record path allocates (the SDK's types are owned maps and
/// strings), and glibc's malloc spent a fifth of the CPU on it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    // One thread for every command. The producer's source and put loop hand
    // every record to each other, and across threads each handoff was a futex
    // wake-up and a context switch (most of its CPU per tweet, measured). The
    // worker waits on the network: its work per record is microseconds, and on a
    // second thread it paid more in wake-ups and stolen tasks than it gained.
    // One replica uses one core; scale out = add replicas.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    runtime.expect("cannot start the tokio runtime").block_on(run(cli));
}

async fn run(cli: Cli) {
    let result = match cli.command {
        Command::Run(args) => {
            telemetry::init_logs(args.log.log_format);
            match args.validate() {
                Err(e) => Err(anyhow::anyhow!(e)),
                Ok(()) => {
                    let health = Arc::new(Health::new(app::readiness_window(&args)));
                    let served = match args.metrics_addr {
                        MetricsAddr::At(addr) => {
                            let served = telemetry::serve(addr, health.clone(), Serves::Worker).await;
                            stream_worker::processor::register_metrics();
                            served
                        }
                        MetricsAddr::None => Ok(()),
                    };
                    match (served, shutdown::on_signals()) {
                        (Err(e), _) => Err(e),
                        (_, Err(e)) => Err(anyhow::anyhow!("cannot install signal handlers: {e}")),
                        (Ok(()), Ok(token)) => app::run(args, token, health).await,
                    }
                }
            }
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
            let served = match (args.validate(), args.metrics_addr) {
                (Err(e), _) => Err(anyhow::anyhow!(e)),
                (Ok(()), MetricsAddr::At(addr)) => {
                    let served = telemetry::serve(addr, health.clone(), Serves::Producer).await;
                    stream_worker::producer::x_api::register_metrics();
                    served
                }
                (Ok(()), MetricsAddr::None) => Ok(()),
            };
            match (served, shutdown::on_signals()) {
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(anyhow::anyhow!("cannot install signal handlers: {e}")),
                (Ok(()), Ok(token)) => app::produce(args, token, health).await,
            }
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

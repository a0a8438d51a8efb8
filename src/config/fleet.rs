//! `stream-worker fleet`: the fleet's coordination protocol (`upgrade`, `rollback`).

use std::time::Duration;

use clap::{Args, Subcommand};

use super::{parse_duration, LogArgs, DEFAULT_LEASE_TABLE};

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Switch a running fleet to protocol 2 (leases kept by one heartbeat per
    /// worker, no renewals). Refused while any worker that holds leases writes
    /// no heartbeat (an older release, the Java KCL) or speaks protocol 1 only.
    /// Waits until every worker's heartbeat reports protocol 2
    Upgrade(FleetArgs),
    /// Switch the fleet back to protocol 1 (every lease renewed, as older
    /// releases expect), and wait until every worker reports it: then older
    /// releases may join or replace the workers
    Rollback(FleetArgs),
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Lease table of the fleet (its heartbeats are in the table of its name + "-workers")
    #[arg(long, env = "STREAM_WORKER_LEASE_TABLE", default_value = DEFAULT_LEASE_TABLE)]
    pub lease_table: String,

    /// How long to wait for every worker to report the new protocol
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wait: Duration,

    #[command(flatten)]
    pub log: LogArgs,
}

//! The end-to-end tests: the real binaries, the conformance suites and the
//! example application on the local emulators (`deploy/local/test.sh` starts
//! them; a test that cannot reach them fails and says how to start them).
//!
//! One test binary, a module per subject: the harness (`common`) is compiled
//! once and the binary linked once, where a binary per file compiled and linked
//! them eighteen times. Select a file's tests by its module:
//! `cargo nextest run --test e2e fleet::`.

#[macro_use]
mod common;

mod aggregation;
mod conformance;
mod errors;
mod example_archive;
mod fan_out;
mod faults;
mod fleet;
mod kcl;
mod lambda;
mod lambda_package;
mod observability;
mod operations;
mod pressure;
mod producer;
mod resharding;
mod upgrade;
mod worker;
mod zombie;

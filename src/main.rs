//! `stream-worker`: the CLI. Its body is [`stream_worker::cli::main`], compiled
//! once in the library; this file chooses the allocator.

/// jemalloc: the per-record path allocates (the SDK's types are owned maps and
/// strings), and glibc's malloc spent a fifth of the CPU on it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    stream_worker::cli::main()
}

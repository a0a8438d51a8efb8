//! The engine's second application, `examples/archive.rs` (built by `cargo
//! build --release --examples`, as `cargo test --release --all-targets` does):
//! it drains a stream into files rotated by size, resumes after kill -9 from
//! its checkpoints, and loses nothing.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn example() -> PathBuf {
    // target/release/deps/example_archive-… → target/release/examples/archive
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("examples/archive");
    assert!(bin.exists(), "{} is not built: cargo build --release --examples", bin.display());
    bin
}

fn start(setup: &Setup, dir: &Path, name: &str) -> Worker {
    let log = setup.dir.join(format!("{name}.log"));
    let child = Command::new(example())
        .args([&setup.stream, &setup.lease_table])
        .arg(dir)
        .arg("4096")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the archive example");
    Worker { name: name.into(), child, metrics_port: 0, log }
}

/// (shard, sequence number) of every whole line archived; how many files and lines.
fn archived(dir: &Path) -> (BTreeSet<(String, String)>, usize, usize) {
    let (mut seen, mut files, mut lines) = (BTreeSet::new(), 0, 0);
    for shard in std::fs::read_dir(dir).into_iter().flatten() {
        let shard = shard.unwrap();
        let shard_id = shard.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(shard.path()).unwrap() {
            files += 1;
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            // A line a crash cut short can only be a file's last.
            for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
                let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                seen.insert((shard_id.clone(), v["seq"].as_str().unwrap().to_owned()));
                lines += 1;
            }
        }
    }
    (seen, files, lines)
}

fn put(puts: &PutLog) -> BTreeSet<(String, String)> {
    puts.0.iter().map(|p| (p.shard.clone(), p.sequence.clone())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_archive_example_drains_resumes_after_kill_9_and_loses_nothing() {
    let setup = Setup::new("archive", 2);
    let dir = setup.dir.join("archive");
    let first = put(&setup.produce(&["--count", "400", "--seed", "31"]));
    let mut a = start(&setup, &dir, "a");
    eventually(Duration::from_secs(60), "the first load archived", || async {
        archived(&dir).0.is_superset(&first).then_some(())
    })
    .await;
    a.kill9();

    // Put while nothing runs; a new process resumes from the checkpoints once
    // the dead one's leases expire.
    let second = put(&setup.produce(&["--count", "400", "--seed", "32"]));
    let mut b = start(&setup, &dir, "b");
    let (seen, files, lines) = eventually(Duration::from_secs(90), "the second load archived", || async {
        let (seen, files, lines) = archived(&dir);
        seen.is_superset(&second).then_some((seen, files, lines))
    })
    .await;
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(30)).0.success(), "{}", b.log_text());

    let all: BTreeSet<_> = first.union(&second).cloned().collect();
    assert_eq!(seen, all, "every record put is archived, and nothing else");
    assert!(files > 4, "files rotate at 4096 bytes: {files}");
    // At least once: what came after the last checkpoint before the kill may
    // be archived twice, never the rest.
    assert!(lines >= all.len() && lines <= all.len() + first.len(), "{lines} lines for {} records", all.len());
}

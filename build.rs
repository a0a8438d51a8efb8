//! Names the commit that `stream-worker --version` reports: `STREAM_WORKER_COMMIT`
//! when it is set (the image's build context has no `.git`: the build passes
//! it in), else git's `HEAD`, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STREAM_WORKER_COMMIT");
    let given = std::env::var("STREAM_WORKER_COMMIT").ok().filter(|c| !c.trim().is_empty());
    let commit = given.or_else(git_head).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STREAM_WORKER_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `HEAD`'s short hash; asks for a rebuild when `HEAD` moves (only files that
/// exist: a missing one would rerun this script at every build).
fn git_head() -> Option<String> {
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dir = git(&["rev-parse", "--git-dir"])?;
    let mut watched = vec![format!("{dir}/HEAD"), format!("{dir}/packed-refs")];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]).map(|r| format!("{dir}/{r}")));
    for path in watched.iter().filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
    Some(head)
}

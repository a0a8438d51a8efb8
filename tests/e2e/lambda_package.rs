//! The function's zip as `deploy/build-lambda.sh` builds it: one executable
//! `bootstrap` that runs on Amazon Linux 2023 (glibc 2.34). And a cold start
//! that cannot work reports why to the Runtime API instead of hanging.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// The zip: `STREAM_WORKER_LAMBDA_ZIP`, or where build-lambda.sh puts it.
fn zip_path() -> PathBuf {
    let path = std::env::var("STREAM_WORKER_LAMBDA_ZIP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/lambda/stream-worker-lambda/bootstrap.zip"));
    assert!(
        path.exists(),
        "{} does not exist: build it with `deploy/build-lambda.sh` (deploy/local/test.sh does it for you)",
        path.display()
    );
    path
}

/// The zip's entries as (name, unix mode), and the bytes of `bootstrap`.
fn read_zip(path: &std::path::Path) -> (Vec<(String, u32)>, Vec<u8>) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile, json\n\
            z = zipfile.ZipFile(sys.argv[1])\n\
            print(json.dumps([[i.filename, i.external_attr >> 16] for i in z.infolist()]))\n\
            sys.stdout.flush()\n\
            sys.stdout.buffer.write(z.read('bootstrap'))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let newline = out.stdout.iter().position(|&b| b == b'\n').unwrap();
    let entries: Vec<(String, u32)> = serde_json::from_slice(&out.stdout[..newline]).unwrap();
    (entries, out.stdout[newline + 1..].to_vec())
}

/// Every `GLIBC_x.y[.z]` version the binary names, as numbers.
fn glibc_versions(binary: &[u8]) -> Vec<Vec<u32>> {
    let needle = b"GLIBC_";
    let mut versions = Vec::new();
    let mut i = 0;
    while let Some(at) = binary[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + at + needle.len();
        let end = start + binary[start..].iter().take_while(|b| b.is_ascii_digit() || **b == b'.').count();
        let parts: Vec<u32> =
            std::str::from_utf8(&binary[start..end]).unwrap().split('.').filter_map(|p| p.parse().ok()).collect();
        if parts.len() >= 2 {
            versions.push(parts);
        }
        i = end.max(start);
    }
    versions
}

#[test]
fn the_zip_holds_one_executable_bootstrap_for_amazon_linux_2023() {
    let (entries, bootstrap) = read_zip(&zip_path());
    assert_eq!(entries.len(), 1, "{entries:?}");
    // The zip's copy is stripped of its debug info (35 MB before), its symbols kept.
    let size = std::fs::metadata(zip_path()).unwrap().len();
    assert!(size <= 10 << 20, "the zip is {size} bytes");
    assert!(bootstrap.windows(13).any(|w| w == b"stream_worker"), "the symbols are kept");
    assert_eq!(entries[0].0, "bootstrap");
    assert_eq!(entries[0].1 & 0o170000, 0o100000, "a regular file");
    assert_eq!(entries[0].1 & 0o111, 0o111, "executable: mode {:o}", entries[0].1);
    assert_eq!(&bootstrap[..4], b"\x7fELF");
    assert_eq!(bootstrap[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([bootstrap[18], bootstrap[19]]), 62, "x86_64 (EM_X86_64)");
    let versions = glibc_versions(&bootstrap);
    assert!(!versions.is_empty(), "no GLIBC_ symbol versions: not a glibc binary?");
    let highest = versions.iter().max().unwrap();
    assert!(*highest <= vec![2, 34], "needs GLIBC_{highest:?}, Amazon Linux 2023 has 2.34");
}

#[test]
fn the_version_scan_finds_what_it_must() {
    let found = glibc_versions(b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_PRIVATE\0GLIBC_2.38\0");
    assert_eq!(found, vec![vec![2, 2, 5], vec![2, 34], vec![2, 38]]);
}

#[test]
fn a_cold_start_without_its_table_reports_an_init_error() {
    let mut setup = Setup::new("lambda-init", 1);
    setup.tweets_table = "no-such-table".into();
    let out = Command::new(python())
        .arg(repo().join("deploy/local/esm.py"))
        .args(["--stream", &setup.stream, "--log-dir", "-", "--", LAMBDA_BIN])
        .env("STREAM_WORKER_TWEETS_TABLE", &setup.tweets_table)
        .env("STREAM_WORKER_DEAD_LETTER_TABLE", &setup.dead_letter_table)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "esm.py exits 3 on an init error:\n{err}");
    assert!(err.contains("dynamodb table 'no-such-table' (region "), "{err}");
    assert!(err.contains("not found") && err.contains("hint:"), "{err}");
}

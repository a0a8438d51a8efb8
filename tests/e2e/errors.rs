//! Start-up errors: one readable line naming what and where, with a hint, and a
//! non-zero exit. And the harness's own message when the emulators are absent.

use crate::common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str], env: &[(&str, &str)], remove: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").args(args).args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in remove {
        cmd.env_remove(k);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_stream_is_named_with_region_endpoint_and_hint() {
    emulators();
    let out = run(&["--stream", "no-such-stream"], &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("kinesis stream 'no-such-stream' (region "), "{err}");
    assert!(err.contains(&format!("endpoint {}", std::env::var("AWS_ENDPOINT_URL_KINESIS").unwrap())), "{err}");
    assert!(err.contains("not found") && err.contains("hint:"), "{err}");
}

#[test]
fn a_missing_table_is_named() {
    let setup = Setup::new("missing-table", 1);
    let out = run(&["--stream", &setup.stream, "--tweets-table", "no-such-table"], &[], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dynamodb table 'no-such-table'") && err.contains("not found"), "{err}");
}

#[test]
fn an_unreachable_endpoint_says_so() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = run(&["--stream", "s"], &[("AWS_ENDPOINT_URL_KINESIS", &closed), ("AWS_REGION", "eu-west-1")], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("kinesis stream 's' (region eu-west-1, endpoint {closed}): cannot reach")), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn missing_credentials_say_so() {
    let out = run(
        &["--stream", "s"],
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
            ("AWS_CONFIG_FILE", "/nonexistent"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:9"),
        ],
        &[
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no usable AWS credentials"), "{err}");
    assert!(err.contains("AWS_PROFILE"), "{err}");
}

#[test]
fn no_region_says_so() {
    let out = run(
        &["--stream", "s"],
        &[("AWS_CONFIG_FILE", "/nonexistent"), ("AWS_EC2_METADATA_DISABLED", "true")],
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no AWS region configured") && err.contains("AWS_REGION"), "{err}");
}

#[test]
fn bad_flags_are_refused_before_any_call() {
    let out = run(&["--stream", "s", "--poll-interval", "50ms"], &[], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--poll-interval must be at least 200ms"), "{}", stderr(&out));
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--stream",
        "--tweets-table",
        "--lease-table",
        "--dead-letter-table",
        "--worker-id",
        "--initial-position",
        "--max-write-rate",
        "--log-format",
        "--shutdown-timeout",
        "[env: STREAM_WORKER_STREAM=]",
        "[default: tweets]",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn the_harness_says_how_to_start_the_emulators() {
    let unset = check_emulators(None, Some("http://127.0.0.1:1")).unwrap_err();
    assert!(unset.contains("AWS_ENDPOINT_URL_KINESIS is not set"), "{unset}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let down = check_emulators(Some(&closed), Some(&closed)).unwrap_err();
    assert!(down.contains(&format!("nothing answers at AWS_ENDPOINT_URL_KINESIS={closed}")), "{down}");
    for message in [unset, down] {
        assert!(
            message.contains("deploy/local/emulators.sh start") && message.contains("deploy/local/test.sh"),
            "{message}"
        );
    }
}

/// `--version` names the commit the binary was built from (git's HEAD here; the
/// image passes it in as STREAM_WORKER_COMMIT).
#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "{out:?}");
    let head = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).current_dir(repo()).output().unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    assert_eq!(head.len(), 12, "git rev-parse HEAD in {}", repo().display());
    assert_eq!(version, format!("stream-worker {} (commit {head})", env!("CARGO_PKG_VERSION")));
}

/// `completions` prints a script the shell accepts, completing every command.
#[test]
fn completions_for_bash_and_zsh_are_generated() {
    for shell in ["bash", "zsh"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout).into_owned();
        for command in ["run", "produce", "status", "dead-letters", "checkpoints", "consumer", "completions"] {
            assert!(script.contains(command), "{shell} completion lacks {command}");
        }
        for flag in ["--initial-position", "--failover-time", "--yes", "--dry-run"] {
            assert!(script.contains(flag), "{shell} completion lacks {flag}");
        }
        let dir = test_dir(&format!("completions-{shell}"));
        let path = dir.join(format!("stream-worker.{shell}"));
        std::fs::write(&path, &script).unwrap();
        if shell == "bash" {
            // Sourced in a real bash: the function is defined and registered.
            let check = Command::new("bash")
                .arg("-c")
                .arg(format!("source '{}' && complete -p stream-worker", path.display()))
                .output()
                .unwrap();
            let registered = String::from_utf8_lossy(&check.stdout);
            assert!(check.status.success() && registered.contains("stream-worker"), "{check:?}");
        } else {
            assert!(script.starts_with("#compdef stream-worker"), "{}", &script[..script.len().min(200)]);
        }
    }
}

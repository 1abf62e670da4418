//! The bad-input matrix: every malformed flag or YAML value is refused with an error that
//! names the input, before any connection or write. The target is an address where nothing
//! listens and the backup location does not exist, so an error about either would mean the
//! input was not checked first; no state directory may appear.

mod common;

use common::*;
use std::path::Path;

/// Runs `args`, expects failure with `needle` in stderr, and no `state` directory.
fn refused(args: &[&str], needle: &str, state: &Path) {
    let out = kb(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} was accepted");
    assert!(
        err.contains(needle),
        "{args:?}: expected an error mentioning {needle:?}, got: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(!state.exists(), "{args:?} created {}", state.display());
}

/// `command` (restore or validate-restore) with every required input, against a backup
/// location that does not exist and an address where nothing listens, ledger in `state`.
fn restore_args<'a>(command: &'a str, state: &'a str) -> Vec<&'a str> {
    vec![
        command,
        "--storage",
        "/nonexistent/kafka-backup-test-storage",
        "--backup-id",
        "bk",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--checkpoint-state",
        state,
        "--source-topics",
        "orders",
    ]
}

#[test]
fn malformed_restore_flags_are_refused_before_connecting() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let st = state.to_str().expect("p");
    let base = restore_args("restore", st);
    // One case of each kind: the whole matrix is unit-tested where it is resolved
    // (common/src/restore_options.rs); here the binary shows it refuses before it connects
    // or creates the state directory.
    let cases: &[(&[&str], &str)] = &[
        (&["--to-timestamp", "noon"], "--to-timestamp"),
        (&["--source-partitions", "0,x"], "--source-partitions"),
        (&["--partition-mapping", "0:0,0:1"], "mapped twice"),
        (
            &["--target-topics-rewrite", "s/(/x/"],
            "invalid topic rewrite",
        ),
        (&["--source-topics", "pay-(["], "invalid topic pattern"),
        (&["--checkpoint-interval", "0s"], "--checkpoint-interval"),
        (&["--workers", "1000"], "--workers"),
        (&["--max-records-per-sec", "-5"], "--max-records-per-sec"),
        (&["--max-records-per-sec", "fast"], "--max-records-per-sec"),
        (&["--consumer-group", "g1"], "--reset-consumer-offsets"),
        (&["--lease-ttl", "forever"], "--lease-ttl"),
        (&["--detach"], "--coordinator"),
        (
            &["--coordinator", "http://127.0.0.1:1"],
            "--checkpoint-state",
        ),
        (
            &["--target-topic", "x", "--target-topics-rewrite", "s/^/p-/"],
            "both given",
        ),
        (
            &["--from-timestamp", "1764255600"],
            "looks like epoch seconds",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = base.clone();
        args.extend_from_slice(extra);
        refused(&args, needle, &state);
    }
    // Required inputs missing.
    refused(
        &[
            "restore",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--storage",
            "/x",
            "--source-topics",
            "t",
            "--checkpoint-state",
            st,
        ],
        "--backup-id",
        &state,
    );
    refused(
        &[
            "restore",
            "--backup-id",
            "bk",
            "--storage",
            "/x",
            "--source-topics",
            "t",
            "--checkpoint-state",
            st,
        ],
        "--bootstrap-servers",
        &state,
    );
    refused(
        &[
            "restore",
            "--backup-id",
            "bk",
            "--storage",
            "/x",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--checkpoint-state",
            st,
        ],
        "--source-topics",
        &state,
    );
}

#[test]
fn malformed_yaml_values_are_refused_naming_the_key() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let st = state.to_str().expect("p").to_string();
    let head =
        "storage:\n  url: /nonexistent/kafka-backup-test-storage\nrestore:\n  backup_id: bk\n";
    let target = "  target:\n    bootstrap_servers: [\"127.0.0.1:1\"]\n";
    let source = "  source:\n    topics: [orders]\n";
    // One case of each kind (the matrix is unit-tested in common/src/restore_options.rs).
    let cases: Vec<(String, &str)> = vec![
        (format!("{head}{target}{source}  colour: blue\n"), "colour"),
        (
            format!("{head}{target}  source:\n    topics: [orders]\n    from_timestamp: \"not-a-date\"\n"),
            "restore.source.from_timestamp",
        ),
        (
            format!("{head}{source}  target:\n    bootstrap_servers: [\"${{KB_TEST_SURELY_UNSET_VAR}}\"]\n"),
            "KB_TEST_SURELY_UNSET_VAR",
        ),
        (format!("{head}  source: [unclosed\n"), "is invalid"),
    ];
    for (i, (yaml, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case-{i}.yaml"));
        std::fs::write(&path, yaml).expect("write");
        refused(
            &[
                "restore",
                "--config",
                path.to_str().expect("p"),
                "--checkpoint-state",
                &st,
            ],
            needle,
            &state,
        );
    }
    refused(
        &[
            "restore",
            "--config",
            "/nonexistent/restore.yaml",
            "--checkpoint-state",
            &st,
        ],
        "cannot read config file",
        &state,
    );
}

#[test]
fn malformed_backup_and_server_flags_are_refused() {
    let dir = temp_dir();
    let storage = dir.path().join("backups");
    let s = storage.to_str().expect("p");
    let backup = |extra: &[&str], needle: &str| {
        let mut args = vec![
            "backup",
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--backup-id",
            "b1",
            "--storage",
            s,
        ];
        args.extend_from_slice(extra);
        if !extra.contains(&"--topics") {
            args.extend_from_slice(&["--topics", "orders"]);
        }
        refused(&args, needle, &storage);
    };
    backup(&["--topics", "pay-(["], "invalid topic pattern");
    backup(&["--segment-max-bytes", "0"], "--segment-max-bytes");
    backup(&["--segment-max-records", "-1"], "--segment-max-records");
    backup(&["--zstd-level", "99"], "--zstd-level");
    backup(&["--index-interval-bytes", "0"], "--index-interval-bytes");
    backup(&["--index-interval-bytes", "-5"], "--index-interval-bytes");
    backup(&["--fetch-wait-max-ms", "300001"], "--fetch-wait-max-ms");
    backup(&["--fetch-wait-max-ms", "-1"], "--fetch-wait-max-ms");
    backup(
        &["--max-partition-fetch-bytes", "0"],
        "--max-partition-fetch-bytes",
    );
    backup(&["--fetch-connections", "0"], "--fetch-connections");
    backup(&["--fetch-connections", "17"], "--fetch-connections");
    backup(&["--max-buffered-bytes", "1048575"], "--max-buffered-bytes");
    backup(&["--max-buffered-bytes", "-1"], "--max-buffered-bytes");
    backup(&["--backup-id", "../escape"], "--backup-id");
    backup(&["--backup-id", ""], "--backup-id");

    let state = dir.path().join("coord-state");
    let st = state.to_str().expect("p");
    refused(
        &[
            "coordinator",
            "--listen",
            "not-an-address",
            "--state-dir",
            st,
        ],
        "--listen",
        &state,
    );
    refused(
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            st,
            "--tls-cert",
            "/nonexistent/c.pem",
        ],
        "--tls-key",
        &state,
    );
    refused(
        &[
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            st,
            "--lease-ttl",
            "0s",
        ],
        "--lease-ttl",
        &state,
    );
    let worker_state = dir.path().join("never");
    refused(
        &["worker", "--coordinator", "ftp://127.0.0.1:1"],
        "ftp://127.0.0.1:1",
        &worker_state,
    );
}

#[test]
fn validate_restore_refuses_flags_of_a_run() {
    let dir = temp_dir();
    let state = dir.path().join("state");
    let st = state.to_str().expect("p");
    for flag in ["--detach", "--new-run"] {
        let mut args = restore_args("validate-restore", st);
        args.push(flag);
        refused(&args, flag, &state);
    }
}

/// `kafka-backup list-backups | head -0`: the reader is gone before the first line is
/// written. The command stops quietly with the status of a tool ended by SIGPIPE (141), as
/// `ls | head` does; it used to panic with a backtrace hint.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let dir = temp_dir();
    let storage = dir.path().to_str().expect("utf8");
    let mut child = std::process::Command::new(bin())
        .args(["list-backups", "--storage", storage])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kafka-backup");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

//! Kafka security against a real authenticating broker: tansu with `--authentication` and
//! SCRAM users. A backup restored into it with SCRAM-SHA-512 credentials from YAML (password
//! from `${ENV}`), backed up again from it with SCRAM-SHA-256 and restored back, must round-trip
//! every record; a wrong password is refused with a clear error; and no password appears in
//! logs (at debug level), JSON output, dry-run output, errors or exported spans.
//!
//! tansu 0.6 offers SCRAM only (its SASL library is built without PLAIN), so PLAIN is checked
//! at the configuration level (unit tests in common/src/kafka.rs) and not against a broker.

mod common;

use common::otlp::start_receiver;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ALICE_PASSWORD: &str = "alice-Pw-7c1e4d9a";
const BOB_PASSWORD: &str = "bob-Pw-52f0b8e3";
const WRONG_PASSWORD: &str = "wrong-Pw-0d6a2c44";

/// A tansu broker requiring SASL, with users alice (SCRAM-SHA-512) and bob (SCRAM-SHA-256).
/// Users are created while the broker runs without authentication, then it restarts on the
/// same database with `--authentication` (tansu refuses user management from anonymous
/// clients once authentication is on).
fn start_authenticating_broker(dir: &Path) -> (Killed, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let url = format!("tcp://{addr}");
    // tansu resolves sqlite:// paths against its working directory.
    let db = "sqlite://auth.db";
    let start = |auth: bool| {
        let mut c = Command::new(tansu());
        c.arg("broker");
        if auth {
            c.arg("--authentication");
        }
        let log = std::fs::File::create(dir.join(if auth { "auth.log" } else { "setup.log" }))
            .expect("log");
        let child = c
            .current_dir(dir)
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                db,
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        wait_port(port);
        Killed(child)
    };
    let setup = start(false);
    for (user, password, mechanism) in [
        ("alice", ALICE_PASSWORD, "scram512"),
        ("bob", BOB_PASSWORD, "scram256"),
    ] {
        let out = Command::new(tansu())
            .args([
                "user",
                "create",
                "--broker",
                &url,
                "--mechanism",
                mechanism,
                user,
                password,
            ])
            .output()
            .expect("tansu user create");
        assert!(out.status.success(), "creating {user}: {}", stderr(&out));
    }
    drop(setup);
    std::thread::sleep(Duration::from_millis(300));
    (start(true), addr)
}

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config");
    path.to_str().expect("p").to_string()
}

fn restore_config(bootstrap: &str, mechanism: &str, user: &str) -> String {
    format!(
        r#"restore:
  target:
    bootstrap_servers: "{bootstrap}"
    security:
      security_protocol: SASL_PLAINTEXT
      sasl_mechanism: {mechanism}
      sasl_username: {user}
      sasl_password: "${{KB_TEST_SASL_PASSWORD}}"
"#
    )
}

/// Runs the CLI with the password in the environment, debug logs and span export on.
fn kb_with_secret(args: &[&str], password: &str, otlp: &str) -> Output {
    Command::new(bin())
        .args(args)
        .env("KB_TEST_SASL_PASSWORD", password)
        .env("RUST_LOG", "debug")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .output()
        .expect("run kafka-backup")
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_round_trip_and_no_secret_in_logs_output_or_spans() {
    if skip_without_servers() {
        return;
    }
    let dir = temp_dir();
    let (_broker, sasl) = start_authenticating_broker(dir.path());
    let (receiver, otlp) = start_receiver().await;
    let (topic, records, backup) = backed_up_topic("sasl", 2, 30, 1_740_000_000_000, 7).await;
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, o: &Output| {
        outputs.push((what.to_string(), format!("{}\n{}", stdout(o), stderr(o))));
    };

    // 1. Restore into the SASL broker as alice (SCRAM-SHA-512): dry run, then for real.
    let alice = write_config(
        dir.path(),
        "alice.yaml",
        &restore_config(&sasl, "SCRAM-SHA-512", "alice"),
    );
    let state = dir.path().join("state");
    let restore_into_sasl = |extra: &[&str], password: &str| {
        let mut args = vec![
            "restore",
            "--config",
            alice.as_str(),
            "--storage",
            backup.path().to_str().expect("p"),
            "--backup-id",
            "bk",
            "--source-topic",
            &topic,
            "--create-topics",
            "--checkpoint-state",
            state.to_str().expect("p"),
            "--format",
            "json",
        ];
        args.extend(extra);
        kb_with_secret(&args, password, &otlp)
    };
    let dry = restore_into_sasl(&["--dry-run"], ALICE_PASSWORD);
    assert!(dry.status.success(), "dry run: {}", stderr(&dry));
    keep("dry run", &dry);
    let real = restore_into_sasl(&[], ALICE_PASSWORD);
    assert!(real.status.success(), "restore: {}", stderr(&real));
    keep("restore", &real);
    let status: serde_json::Value = serde_json::from_str(&stdout(&real)).expect("json");
    assert_eq!(status["state"], "completed", "{status}");
    // The timestamp lookup reaches the SASL cluster with the same file's settings.
    let lookup = kb_with_secret(
        &[
            "offset-for-timestamp",
            "--config",
            alice.as_str(),
            "--topic",
            &topic,
            "--partition",
            "0",
            "--timestamp",
            "1740000000000",
            "--format",
            "json",
        ],
        ALICE_PASSWORD,
        &otlp,
    );
    assert!(lookup.status.success(), "lookup: {}", stderr(&lookup));
    let found: serde_json::Value = serde_json::from_str(&stdout(&lookup)).expect("json");
    assert_eq!(found["offset"], 0, "{found}");
    keep("timestamp lookup", &lookup);

    // 2. A wrong password is refused before anything is written, with a clear error.
    let wrong_state = dir.path().join("wrong-state");
    let wrong = kb_with_secret(
        &[
            "restore",
            "--config",
            alice.as_str(),
            "--storage",
            backup.path().to_str().expect("p"),
            "--backup-id",
            "bk",
            "--source-topic",
            &topic,
            "--target-topic",
            "never-created",
            "--create-topics",
            "--checkpoint-state",
            wrong_state.to_str().expect("p"),
        ],
        WRONG_PASSWORD,
        &otlp,
    );
    assert!(!wrong.status.success(), "a wrong password was accepted");
    let err = stderr(&wrong);
    assert!(
        err.contains("security settings") && err.contains(&sasl),
        "the error should name the cluster and point at the security settings: {err}"
    );
    keep("wrong password", &wrong);

    // 3. Back up from the SASL broker as bob (SCRAM-SHA-256), restore to the plain broker,
    //    and compare with the original records.
    let bob = write_config(
        dir.path(),
        "bob.yaml",
        &format!(
            r#"backup:
  bootstrap_servers: "{sasl}"
  security:
    security_protocol: SASL_PLAINTEXT
    sasl_mechanism: SCRAM-SHA-256
    sasl_username: bob
    sasl_password: "${{KB_TEST_SASL_PASSWORD}}"
"#
        ),
    );
    let second = temp_dir();
    let out = kb_with_secret(
        &[
            "backup",
            "--config",
            &bob,
            "--topics",
            &topic,
            "--backup-id",
            "from-sasl",
            "--storage",
            second.path().to_str().expect("p"),
        ],
        BOB_PASSWORD,
        &otlp,
    );
    assert!(
        out.status.success(),
        "backup over SCRAM-SHA-256: {}",
        stderr(&out)
    );
    keep("backup", &out);
    let back = unique("sasl-back");
    kb_ok(&[
        "restore",
        "--storage",
        second.path().to_str().expect("p"),
        "--backup-id",
        "from-sasl",
        "--source-topic",
        &topic,
        "--target-topic",
        &back,
        "--bootstrap-servers",
        &broker(),
        "--create-topics",
        "--checkpoint-state",
        dir.path().join("back-state").to_str().expect("p"),
    ]);
    for (p, expected) in records.iter().enumerate() {
        assert_same_records(expected, &consume_all(&broker(), &back, p as i32));
    }

    // 4. No password anywhere: outputs, debug logs and every exported span.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.snapshot();
    assert!(!spans.is_empty(), "no spans were exported");
    let span_text = format!("{spans:?}");
    for secret in [ALICE_PASSWORD, BOB_PASSWORD, WRONG_PASSWORD] {
        for (what, text) in &outputs {
            assert!(
                !text.contains(secret),
                "{what} output holds a password:\n{text}"
            );
        }
        assert!(
            !span_text.contains(secret),
            "an exported span holds a password"
        );
    }
}

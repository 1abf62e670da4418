//! A target broker that crashes (kill -9) mid-restore and comes back: the tasks fail, are
//! retried with backoff, reconcile the target tail and finish with every record exactly once.
//! The test runs its own tansu so it can kill it without disturbing other tests.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn restore_survives_a_target_broker_crash_and_restart() {
    if skip_without_servers() {
        return;
    }
    let dir = temp_dir();
    let port = free_port();
    let broker = format!("127.0.0.1:{port}");
    let tansu = start_tansu(dir.path(), port, "faults.db");
    let topic = unique("faults");
    create_topic(&broker, &topic, 2).await;
    let mut source = Vec::new();
    for p in 0..2 {
        source.push(
            produce(
                &broker,
                &topic,
                p,
                &simple_records(2000, 1_770_000_000_000, 3),
            )
            .await,
        );
    }
    let backup = backup_local(&broker, &topic, "bk");
    let target = format!("{topic}-restored");
    let state = temp_dir();
    let log = std::fs::File::create(state.path().join("restore.log")).expect("log");
    let mut restore = Command::new(bin())
        .args([
            "restore",
            "--storage",
            backup.path().to_str().expect("p"),
            "--backup-id",
            "bk",
            "--checkpoint-state",
            state.path().to_str().expect("p"),
            "--source-topic",
            &topic,
            "--target-topic",
            &target,
            "--bootstrap-servers",
            &broker,
            "--create-topics",
            "--checkpoint-interval",
            "200ms",
            "--max-records-per-sec",
            "500",
            "--lease-ttl",
            "6s",
            "--workers",
            "2",
        ])
        .env("RUST_LOG", "warn,librdkafka=error")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("restore");
    let deadline = Instant::now() + Duration::from_secs(60);
    while end_offset(&broker, &target, 0).max(0) + end_offset(&broker, &target, 1).max(0) < 800 {
        assert!(Instant::now() < deadline, "restore made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tansu); // kill -9 the broker mid-restore
    eprintln!("broker killed");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let _tansu = start_tansu(dir.path(), port, "faults.db");
    eprintln!("broker restarted");
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Ok(Some(s)) = restore.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "restore did not finish after the broker came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(state.path().join("restore.log")).unwrap_or_default();
    assert!(
        status.success(),
        "restore failed after the broker came back:\n{log}"
    );
    for (p, want) in source.iter().enumerate() {
        assert_same_records(want, &consume_all(&broker, &target, p as i32));
    }
}

//! Prometheus endpoints of a real coordinator and worker, scraped while they restore: the
//! counters move while the restore runs and end at the restored record count.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn coordinator_and_worker_counters_move_during_a_restore() {
    if skip_without_servers() {
        return;
    }
    let (topic, _, backup) = backed_up_topic("metered", 2, 600, 1_750_000_000_000, 2).await;
    let dir = temp_dir();
    let (grpc, cm, wm) = (free_port(), free_port(), free_port());
    let url = format!("http://127.0.0.1:{grpc}");
    let ledger = dir.path().join("ledger");
    let spawn = |args: Vec<String>| {
        Killed(
            Command::new(bin())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let _coord = spawn(vec![
        "coordinator".into(),
        "--listen".into(),
        format!("127.0.0.1:{grpc}"),
        "--state-dir".into(),
        ledger.to_str().expect("p").into(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{cm}"),
    ]);
    wait_port(grpc);
    wait_port(cm);
    let _worker = spawn(vec![
        "worker".into(),
        "--coordinator".into(),
        url.clone(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{wm}"),
        // One task at a time, so the second task runs on the first one's producer.
        "--max-tasks".into(),
        "1".into(),
    ]);
    wait_port(wm);
    let before = (scrape(cm), scrape(wm));
    assert_eq!(
        metric(&before.0, "kafka_backup_records_restored_total"),
        0.0
    );
    let target = format!("{topic}-restored");
    submit_detached(
        &url,
        backup.path(),
        &topic,
        &target,
        &["--max-records-per-sec", "400"],
    );
    // During the restore: leases are held and the counters grow between scrapes.
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c, w) = (scrape(cm), scrape(wm));
        let restored = metric(&c, "kafka_backup_records_restored_total");
        samples.push((
            restored,
            metric(&w, "kafka_backup_worker_records_produced_total"),
            metric(&c, "kafka_backup_active_leases"),
        ));
        if restored >= 1200.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restore did not finish: {samples:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let moving: Vec<_> = samples
        .iter()
        .filter(|s| s.0 > 0.0 && s.0 < 1200.0)
        .collect();
    assert!(
        moving.len() >= 2,
        "several scrapes saw the restore in progress: {samples:?}"
    );
    assert!(
        moving
            .windows(2)
            .any(|w| w[1].0 > w[0].0 && w[1].1 > w[0].1),
        "counters moved: {samples:?}"
    );
    assert!(
        samples.iter().any(|s| s.2 >= 1.0),
        "active leases seen: {samples:?}"
    );
    let (c, w) = (scrape(cm), scrape(wm));
    assert_eq!(
        metric(&w, "kafka_backup_worker_records_produced_total"),
        1200.0
    );
    assert!(metric(&c, "kafka_backup_leases_granted_total") >= 2.0);
    assert!(
        metric(&w, "kafka_backup_worker_segment_fetch_seconds_count") >= 24.0,
        "one fetch per segment"
    );
    // The worker counts a task as completed once the coordinator has acknowledged it, which
    // can be a moment after the ledger shows all records restored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&scrape(wm), "kafka_backup_worker_tasks_completed_total") < 2.0 {
        assert!(
            Instant::now() < deadline,
            "worker never counted 2 completed tasks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One worker, two partition tasks of one plan in turn: the second starts on the first
    // one's idle producer.
    assert_eq!(
        metric(&scrape(wm), "kafka_backup_worker_producers_reused_total"),
        1.0
    );
}

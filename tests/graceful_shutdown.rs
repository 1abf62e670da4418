//! Stopping processes the way Kubernetes does (SIGTERM, then SIGKILL after a grace period):
//! a rolling restart of every worker mid-restore hands each task back at once instead of
//! leaving it to wait out its lease, and the restore ends exact; the coordinator and worker
//! answer the standard gRPC health protocol, and the coordinator's reflection lists its API,
//! to a client that is not ours (grpcio from PyPI).

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const BASE_TS: i64 = 1_731_000_000_000;

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a pid this test spawned and has not yet waited for.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill -TERM");
}

/// Waits for a process to exit on its own within `bound`; returns how long it took.
fn exits_within(child: &mut Child, bound: Duration, what: &str) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "{what} exited with {status}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{what} still running after {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn worker(url: &str, id: &str, dir: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["worker", "--coordinator", url, "--worker-id", id];
    args.extend_from_slice(extra);
    spawn_logged(&args, &dir.join(format!("{id}.log")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_every_worker_hands_tasks_back_and_ends_exact() {
    if skip_without_servers() {
        return;
    }
    const PARTITIONS: i32 = 6;
    const RECORDS: usize = 3000;
    let mut target_broker = RestartingBroker::start();
    let tb = target_broker.addr();
    // Source and target on a broker of the test's own: 18,000 records would slow the shared one.
    let (topic, records, backup) =
        backed_up_topic_on(&tb, "rolling", PARTITIONS, RECORDS, BASE_TS, 1).await;
    let target = unique("rolling-target");
    let state = temp_dir();
    let metrics_port = free_port();
    // The default 30 s lease TTL: a task left to expire would stall the restore visibly.
    let metrics = format!("127.0.0.1:{metrics_port}");
    let (_coordinator, url, _) = spawn_coordinator(state.path(), &["--metrics-listen", &metrics]);
    wait_port(metrics_port);
    let two = ["--max-tasks", "2"];
    let mut workers: Vec<Killed> = (0..3)
        .map(|i| Killed(worker(&url, &format!("w{i}"), state.path(), &two)))
        .collect();
    // ~10 s per partition undisturbed, so every worker is stopped mid-task.
    let plan = submit_detached_to(
        &url,
        &tb,
        backup.path(),
        &topic,
        &target,
        &["--max-records-per-sec", "300"],
    );
    let started = Instant::now();
    for (i, slot) in workers.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        target_broker.keep_up();
        let st = plan_status(&url, &plan).await.expect("status");
        let held = st
            .tasks
            .iter()
            .filter(|t| t.state == "leased" && t.worker_id == format!("w{i}"))
            .count();
        sigterm(&slot.0);
        let took = exits_within(&mut slot.0, Duration::from_secs(20), "worker");
        eprintln!("w{i} held {held} task(s); SIGTERM to exit took {took:?}");
        // Its replacement, as a rollout starts it.
        *slot = Killed(worker(&url, &format!("w{i}-new"), state.path(), &two));
    }
    let deadline = started + Duration::from_secs(120);
    let done = loop {
        target_broker.keep_up();
        let st = plan_status(&url, &plan).await.expect("status");
        if st.state == "completed" {
            break st;
        }
        assert!(Instant::now() < deadline, "restore did not finish: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("restore completed in {:?}", started.elapsed());
    assert_eq!(done.records_done, PARTITIONS as u64 * RECORDS as u64);
    for p in 0..PARTITIONS {
        assert_same_records(&records[p as usize], &consume_all(&tb, &target, p));
    }
    let m = scrape(metrics_port);
    let handed_back = metric(&m, "kafka_backup_tasks_handed_back_total");
    assert!(
        handed_back >= 3.0,
        "each stopped worker handed its tasks back: {handed_back}"
    );
    assert_eq!(
        metric(&m, "kafka_backup_lease_expiries_total"),
        0.0,
        "no task waited for a lease to expire"
    );
    assert_eq!(metric(&m, "kafka_backup_task_failures_total"), 0.0);
}

fn probe(verb: &str, port: u16) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/grpc_probe.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(verb)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "grpc_probe.py {verb} failed (pip install grpcio-health-checking grpcio-reflection; scripts/test-env.sh does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn health_and_reflection_answer_a_standard_client_and_shutdown_turns_not_serving() {
    if skip_without_servers() {
        return;
    }
    let state = temp_dir();
    let (port, health_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{port}");
    let ledger = state.path().join("ledger");
    let mut coordinator = Killed(spawn_logged(
        &[
            "coordinator",
            "--listen",
            &listen,
            "--state-dir",
            ledger.to_str().expect("p"),
            "--shutdown-drain",
            "4s",
        ],
        &state.path().join("coordinator.log"),
    ));
    wait_port(port);
    let mut worker = Killed(worker(
        &format!("http://{listen}"),
        "probed",
        state.path(),
        &["--health-listen", &format!("127.0.0.1:{health_port}")],
    ));
    wait_port(health_port);
    assert_eq!(probe("health", port), "SERVING");
    assert_eq!(probe("health", health_port), "SERVING");
    let services = probe("services", port);
    for s in [
        "kafkabackup.restore.v1.RestorePlans",
        "kafkabackup.restore.v1.RestoreWorkers",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l == s),
            "{s} not listed: {services}"
        );
    }
    // SIGTERM: the coordinator drains for 4 s, answering NOT_SERVING, then exits.
    sigterm(&coordinator.0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(probe("health", port), "NOT_SERVING");
    exits_within(&mut coordinator.0, Duration::from_secs(10), "coordinator");
    assert_eq!(probe("health", port), "UNREACHABLE");
    // An idle worker whose coordinator is gone still stops promptly.
    sigterm(&worker.0);
    let took = exits_within(&mut worker.0, Duration::from_secs(5), "worker");
    eprintln!("idle worker stopped {took:?} after SIGTERM");
}

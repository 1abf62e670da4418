//! Failure tests with real processes: kill -9 of an embedded restore and rerun; a real
//! coordinator with three real workers while workers are killed at random moments and the
//! coordinator is restarted; a worker paused (SIGSTOP) past its lease that must not write
//! after takeover; status and cancel through the gRPC API from a separate client.
//! After each, the target holds every source record exactly once, in order.

mod common;

use common::*;
use kafka_backup_common::segment::Record;
use kafka_backup_proto::restore_plans_client::RestorePlansClient;
use kafka_backup_proto::{PlanRef, PlanStatus};
use std::process::Child;
use std::time::{Duration, Instant};

const BASE_TS: i64 = 1_710_000_000_000;

/// These tests start many processes and depend on timing; run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Source {
    topic: String,
    backup: tempfile::TempDir,
    records: Vec<Vec<Record>>,
}

async fn source(name: &str, partitions: i32, per_partition: usize) -> Source {
    let topic = unique(name);
    create_topic(&broker(), &topic, partitions).await;
    let mut records = Vec::new();
    for p in 0..partitions {
        let recs: Vec<Record> = (0..per_partition)
            .map(|i| {
                let value = format!("{p}-{i}-{}", "x".repeat(200));
                rec(
                    Some(format!("k{i}").as_bytes()),
                    Some(value.as_bytes()),
                    BASE_TS + i as i64,
                    &[("i", Some(i.to_string().as_bytes()))],
                )
            })
            .collect();
        records.push(produce(&broker(), &topic, p, &recs).await);
    }
    let dir = temp_dir();
    kb_ok(&[
        "backup",
        "--bootstrap-servers",
        &broker(),
        "--topics",
        &topic,
        "--backup-id",
        "bk",
        "--storage",
        dir.path().to_str().expect("p"),
        "--segment-max-records",
        "500",
        "--consumer-groups",
        "none",
    ]);
    Source {
        topic,
        backup: dir,
        records,
    }
}

fn assert_exact_on(bootstrap: &str, src: &Source, target: &str) {
    for (p, want) in src.records.iter().enumerate() {
        let got = consume_all(bootstrap, target, p as i32);
        assert_same_records(want, &got);
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on a child we own.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// A real coordinator process on a fresh loopback port, its ledger and every process log in
/// one temp dir. Short leases (6 s TTL, 2 s grace) make takeovers happen within seconds.
struct TestCoordinator {
    state: tempfile::TempDir,
    listen: String,
    url: String,
}

impl TestCoordinator {
    fn new() -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        TestCoordinator {
            state: temp_dir(),
            url: format!("http://{listen}"),
            listen,
        }
    }

    fn log(&self, name: &str) -> std::path::PathBuf {
        self.state.path().join(format!("{name}.log"))
    }

    /// Starts (or restarts) the coordinator on the same port and ledger.
    fn spawn(&self) -> Child {
        let ledger = self.state.path().join("ledger");
        spawn_logged(
            &[
                "coordinator",
                "--listen",
                &self.listen,
                "--state-dir",
                ledger.to_str().expect("utf8 path"),
                "--lease-ttl",
                "6s",
                "--lease-grace",
                "2s",
            ],
            &self.log("coordinator"),
        )
    }
}

async fn plans_client(url: &str) -> RestorePlansClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match RestorePlansClient::connect(url.to_string()).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "coordinator {url} did not come up: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Tiny deterministic PRNG (xorshift) seeded from the clock; the seed is printed.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7)
            | 1;
        eprintln!("rng seed {seed}");
        Rng(seed)
    }
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_restore_killed_mid_run_resumes_without_loss_or_duplicates() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let src = source("kill-embedded", 3, 3000).await;
    let target = unique("kill-embedded-target");
    let state = temp_dir();
    let log = state.path().join("restore.log");
    let mut target_broker = RestartingBroker::start();
    let b = target_broker.addr();
    let args = [
        "restore",
        "--storage",
        src.backup.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--checkpoint-interval",
        "100ms",
        "--source-topic",
        &src.topic,
        "--target-topic",
        &target,
        "--bootstrap-servers",
        &b,
        "--create-topics",
        "--lease-ttl",
        "6s",
        "--workers",
        "3",
    ];
    let total: usize = src.records.iter().map(Vec::len).sum();
    let mut killed_at = Vec::new();
    // Kill twice at different depths, then let it finish.
    for fraction in [0.2, 0.6] {
        let mut child = spawn_logged(&args, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let written: i64 = (0..3)
                .map(|p| target_broker.end_offset(&target, p).max(0))
                .sum();
            if written as f64 >= fraction * total as f64 {
                child.kill().expect("kill -9");
                let _ = child.wait();
                killed_at.push(written);
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "restore ended ({st}) before it could be killed at {fraction}; see {}",
                    log.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "restore made no progress; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!("killed after {killed_at:?} of {total} records were in the target");
    rerun_resumes(
        &args,
        &state.path().join("rerun.out"),
        &mut target_broker,
        Duration::from_secs(180),
    )
    .await;
    eprintln!("target broker restarts: {}", target_broker.restarts);
    assert_exact_on(&b, &src, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn distributed_restore_survives_worker_kills_and_a_coordinator_restart() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let src = source("dist", 4, 2500).await;
    let target = unique("dist-target");
    let mut target_broker = RestartingBroker::start();
    let tb = target_broker.addr();
    let coord = TestCoordinator::new();
    let url = coord.url.clone();
    let log = |name: &str| coord.log(name);
    let mut coordinator = coord.spawn();
    plans_client(&url).await;
    let mut workers: Vec<(String, Child)> = (1..=3)
        .map(|i| {
            let id = format!("w{i}");
            let child = spawn_logged(
                &["worker", "--coordinator", &url, "--worker-id", &id],
                &log(&id),
            );
            (id, child)
        })
        .collect();
    // Paced so that checkpointed progress moves in small steps: unpaced, a task restores its
    // 2,500 records between two polls and the kill thresholds are passed several at a time.
    let plan_id = submit_detached_to(
        &url,
        &tb,
        src.backup.path(),
        &src.topic,
        &target,
        &["--max-records-per-sec", "400"],
    );

    let mut rng = Rng::new();
    let total: u64 = src.records.iter().map(|r| r.len() as u64).sum();
    let mut thresholds: Vec<u64> = (0..5)
        .map(|k| total * (8 + 14 * k + rng.next(8)) / 100)
        .collect();
    thresholds.sort_unstable();
    let restart_at = total / 2;
    let (mut kills, mut restarted, mut generation) = (0, false, 0);
    let deadline = Instant::now() + Duration::from_secs(240);
    let final_state = loop {
        target_broker.keep_up();
        assert!(
            Instant::now() < deadline,
            "distributed restore did not finish; logs in {}",
            coord.state.path().display()
        );
        let Some(st) = plan_status(&url, &plan_id).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if ["completed", "failed", "cancelled"].contains(&st.state.as_str()) {
            break st;
        }
        // Checkpointed progress from the ledger (the target may already hold a little more).
        let written = st.records_done;
        if kills < thresholds.len() && written >= thresholds[kills] {
            let holders: Vec<String> = st
                .tasks
                .iter()
                .filter(|t| t.state == "leased")
                .map(|t| t.worker_id.clone())
                .collect();
            if !holders.is_empty() {
                let victim = &holders[rng.next(holders.len() as u64) as usize];
                if let Some(pos) = workers.iter().position(|(id, _)| id == victim) {
                    let (id, mut child) = workers.remove(pos);
                    child.kill().expect("kill -9 worker");
                    let _ = child.wait();
                    generation += 1;
                    let new_id = format!("{id}-r{generation}");
                    eprintln!("killed {id} at {written}/{total}; starting {new_id}");
                    let child = spawn_logged(
                        &["worker", "--coordinator", &url, "--worker-id", &new_id],
                        &log(&new_id),
                    );
                    workers.push((new_id, child));
                    kills += 1;
                }
            }
        }
        if !restarted && written >= restart_at {
            coordinator.kill().expect("kill -9 coordinator");
            let _ = coordinator.wait();
            eprintln!("coordinator killed at {written}/{total}; restarting");
            coordinator = coord.spawn();
            plans_client(&url).await;
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (_, mut w) in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert_eq!(final_state.state, "completed", "{final_state:?}");
    assert!(
        kills >= 5,
        "only {kills} worker kills happened before the restore finished"
    );
    assert!(restarted, "the coordinator was not restarted");
    assert!(
        final_state.tasks.iter().any(|t| t.epoch > 1),
        "some task was taken over"
    );
    eprintln!("target broker restarts: {}", target_broker.restarts);
    assert_exact_on(&tb, &src, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_worker_is_fenced_and_never_writes_after_takeover() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let src = source("fence", 1, 6000).await;
    let target = unique("fence-target");
    let mut target_broker = RestartingBroker::start();
    let tb = target_broker.addr();
    let coord = TestCoordinator::new();
    let url = coord.url.clone();
    let log = |name: &str| coord.log(name);
    let mut coordinator = coord.spawn();
    plans_client(&url).await;
    let mut a = spawn_logged(
        &["worker", "--coordinator", &url, "--worker-id", "paused"],
        &log("paused"),
    );
    let plan_id = submit_detached_to(
        &url,
        &tb,
        src.backup.path(),
        &src.topic,
        &target,
        &["--max-records-per-sec", "800"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while target_broker.end_offset(&target, 0) < 600 {
        assert!(Instant::now() < deadline, "worker made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&a, libc::SIGSTOP);
    let stopped_at = target_broker.end_offset(&target, 0);
    let mut b_worker = spawn_logged(
        &["worker", "--coordinator", &url, "--worker-id", "taker"],
        &log("taker"),
    );
    // Wait until the other worker holds the task under a newer epoch, then wake the first.
    loop {
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "task was never re-granted"
        );
        if let Some(st) = plan_status(&url, &plan_id).await {
            if st.tasks[0].worker_id == "taker" && st.tasks[0].epoch >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&a, libc::SIGCONT);
    let end = loop {
        target_broker.keep_up();
        if let Some(st) = plan_status(&url, &plan_id).await {
            if st.state == "completed" {
                break st;
            }
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "restore did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for c in [&mut a, &mut b_worker, &mut coordinator] {
        let _ = c.kill();
        let _ = c.wait();
    }
    eprintln!(
        "paused at target offset {stopped_at}; final epoch {}",
        end.tasks[0].epoch
    );
    eprintln!("target broker restarts: {}", target_broker.restarts);
    assert_exact_on(&tb, &src, &target);
    let paused_log = std::fs::read_to_string(log("paused")).unwrap_or_default();
    assert!(
        paused_log.contains("lease rejected")
            || paused_log.contains("fenced")
            || paused_log.contains("lease deadline passed"),
        "the paused worker did not notice it lost the lease:\n{paused_log}"
    );
}

/// One plan's status through the gRPC API.
async fn grpc_status(
    client: &mut RestorePlansClient<tonic::transport::Channel>,
    plan_id: &str,
) -> PlanStatus {
    client
        .get_plan_status(PlanRef {
            plan_id: plan_id.to_string(),
            ..Default::default()
        })
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_cancel_and_resume_through_the_grpc_api() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let src = source("cancel", 2, 3000).await;
    let target = unique("cancel-target");
    // Fenced producers stop mid-stream; see RestartingBroker.
    let mut target_broker = RestartingBroker::start();
    let tb = target_broker.addr();
    let coord = TestCoordinator::new();
    let url = coord.url.clone();
    let log = |name: &str| coord.log(name);
    let mut coordinator = coord.spawn();
    let mut client = plans_client(&url).await;
    let plan_id = submit_detached_to(
        &url,
        &tb,
        src.backup.path(),
        &src.topic,
        &target,
        &["--max-records-per-sec", "500"],
    );
    // No worker yet: the plan is pending, visible to any client.
    let st = grpc_status(&mut client, &plan_id).await;
    assert_eq!(st.state, "pending");
    assert_eq!(st.records_total, 6000);
    let listed = kb_ok(&["list-plans", "--coordinator", &url, "--format", "json"]);
    assert!(listed.contains(&plan_id));
    let mut workers: Vec<Child> = (0..2)
        .map(|i| {
            spawn_logged(
                &[
                    "worker",
                    "--coordinator",
                    &url,
                    "--worker-id",
                    &format!("c{i}"),
                ],
                &log(&format!("c{i}")),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while target_broker.end_offset(&target, 0) + target_broker.end_offset(&target, 1) < 500 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled_at = Instant::now();
    let st = client
        .cancel_plan(PlanRef {
            plan_id: plan_id.clone(),
            ..Default::default()
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(st.state, "cancelled");
    // Every worker stops within seconds (next heartbeat or checkpoint): the target stops growing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let frozen: Vec<i64> = (0..2)
        .map(|p| target_broker.end_offset(&target, p))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later: Vec<i64> = (0..2)
        .map(|p| target_broker.end_offset(&target, p))
        .collect();
    assert_eq!(frozen, later, "writes continued after cancel");
    assert!(
        frozen.iter().sum::<i64>() < 6000,
        "cancel came too late to observe"
    );
    eprintln!("cancel took effect within {:?}", cancelled_at.elapsed());
    // Each worker checkpointed what it wrote and handed its task back: the status counts
    // every record in the target, and no task waits for a lease to expire.
    let st = grpc_status(&mut client, &plan_id).await;
    assert_eq!(
        st.records_done as i64,
        frozen.iter().sum::<i64>(),
        "the status counts what was written: {st:?}"
    );
    for t in &st.tasks {
        assert!(
            t.worker_id.is_empty(),
            "task {} still leased: {t:?}",
            t.task_id
        );
    }
    // (A worker holds up to two tasks: which worker held which is not fixed.)
    let logs: String = (0..2)
        .map(|i| std::fs::read_to_string(log(&format!("c{i}"))).unwrap_or_default())
        .collect();
    assert_eq!(
        logs.matches("plan cancelled: task handed back").count(),
        2,
        "both tasks handed back:\n{logs}"
    );
    let json = kb_ok(&[
        "restore-status",
        "--coordinator",
        &url,
        "--plan-id",
        &plan_id,
        "--format",
        "json",
    ]);
    assert!(json.contains("\"cancelled\""), "{json}");
    // Resume explicitly; the plan finishes from its checkpoints with exact contents (its
    // tasks, handed back, are granted at the workers' next request).
    kb_ok(&[
        "restore-resume",
        "--coordinator",
        &url,
        "--plan-id",
        &plan_id,
    ]);
    let resumed_at = Instant::now();
    let resumed_from = frozen.iter().sum::<i64>();
    while target_broker.end_offset(&target, 0) + target_broker.end_offset(&target, 1)
        <= resumed_from
    {
        assert!(
            resumed_at.elapsed() < Duration::from_secs(20),
            "nothing written within 20 s of the resume"
        );
        target_broker.keep_up();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("writing again {:?} after the resume", resumed_at.elapsed());
    let st = loop {
        target_broker.keep_up();
        let st = grpc_status(&mut client, &plan_id).await;
        if st.state == "completed" {
            break st;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "resumed plan did not finish: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st.records_done, 6000);
    kb_err(
        &[
            "restore-cancel",
            "--coordinator",
            &url,
            "--plan-id",
            &plan_id,
        ],
        "nothing to cancel",
    );
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = coordinator.kill();
    let _ = coordinator.wait();
    assert_exact_on(&tb, &src, &target);
}

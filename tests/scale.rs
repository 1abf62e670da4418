//! Scale: a partition of 100,000 segments (a terabyte's worth of segment refs at the default
//! 16 MiB, with one tiny record each so the test stays short) restores with every record
//! exactly once, through the embedded coordinator and through a coordinator process with
//! worker processes, one of them killed mid-partition so the next resumes in the middle of
//! the segment list. And a task no worker can make progress on fails visibly, naming the
//! task and the reason, instead of being re-granted forever.

mod common;

use common::*;
use kafka_backup_common::manifest::{segment_key, Manifest, PartitionManifest, TopicManifest};
use kafka_backup_common::segment::{encode_segment, Compression, Record};
use kafka_backup_proto::restore_workers_client::RestoreWorkersClient;
use kafka_backup_proto::AcquireLeaseRequest;
use std::time::{Duration, Instant};

const SEGMENTS: usize = 100_000;
const TS: i64 = 1_720_000_000_000;

/// These tests each produce 100,000 records; one at a time keeps the machine responsive.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fresh broker for one 100,000-record restore: written to the shared brokers, that many
/// records slow tansu's SQLite engine down for every test after this one.
struct OwnBroker {
    _dir: tempfile::TempDir,
    _tansu: Killed,
    addr: String,
}

fn own_broker() -> OwnBroker {
    let dir = temp_dir();
    let port = free_port();
    let tansu = start_tansu(dir.path(), port, "scale.db");
    OwnBroker {
        _dir: dir,
        _tansu: tansu,
        addr: format!("127.0.0.1:{port}"),
    }
}

/// Writes backup `bk` of one partition of `topic` with `n` segments of one record each
/// (offsets 0..n), straight into the backup layout. Returns the records.
fn many_segment_backup(dir: &std::path::Path, topic: &str, n: usize) -> Vec<Record> {
    let mut records = Vec::with_capacity(n);
    let mut segments = Vec::with_capacity(n);
    for o in 0..n as i64 {
        let mut r = rec(
            Some(format!("k{o}").as_bytes()),
            Some(format!("v{o}").as_bytes()),
            TS + o,
            &[],
        );
        r.offset = o;
        let key = segment_key("bk", topic, 0, o);
        let bytes = encode_segment(std::slice::from_ref(&r), Compression::None, 0);
        let path = dir.join(&key);
        if o == 0 {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        }
        std::fs::write(&path, &bytes).expect("write segment");
        segments.push(segment_meta(key, std::slice::from_ref(&r), bytes.len()));
        records.push(r);
    }
    let manifest = Manifest {
        backup_id: "bk".into(),
        created_at: TS,
        source_cluster_id: None,
        source_brokers: None,
        compression: Some("none".into()),
        topics: vec![TopicManifest {
            name: topic.to_string(),
            replication_factor: None,
            configs: None,
            original_partition_count: Some(1),
            partitions: vec![PartitionManifest {
                partition_id: 0,
                segments,
                gaps: vec![],
            }],
        }],
        consumer_group_offsets: vec![],
    };
    let text = serde_json::to_vec(&manifest).expect("manifest json");
    std::fs::write(dir.join("bk/manifest.json"), text).expect("write manifest");
    records
}

/// A coordinator process with its ledger in `state` (see `spawn_coordinator`) and its URL.
fn coordinator(state: &std::path::Path, extra: &[&str]) -> (Killed, String) {
    let (child, url, _) = spawn_coordinator(state, extra);
    (child, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_of_100k_segments_restores_exactly_once_embedded() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let topic = unique("scale-embedded");
    let target = unique("scale-embedded-target");
    let dir = temp_dir();
    let records = many_segment_backup(dir.path(), &topic, SEGMENTS);
    let state = temp_dir();
    let broker = own_broker();
    let started = Instant::now();
    let out = kb_ok(&[
        "restore",
        "--storage",
        dir.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--source-topic",
        &topic,
        "--target-topic",
        &target,
        "--bootstrap-servers",
        &broker.addr,
        "--create-topics",
        "--workers",
        "1",
        "--checkpoint-interval",
        "1s",
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--format",
        "json",
    ]);
    eprintln!(
        "embedded restore of {SEGMENTS} segments took {:?}",
        started.elapsed()
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json status");
    assert_eq!(v["state"], "completed", "{out}");
    assert_eq!(v["tasks"][0]["segments_total"], SEGMENTS as u64, "{out}");
    assert_same_records(&records, &consume_all(&broker.addr, &target, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_of_100k_segments_survives_a_worker_killed_mid_list() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let topic = unique("scale-dist");
    let target = unique("scale-dist-target");
    let dir = temp_dir();
    let records = many_segment_backup(dir.path(), &topic, SEGMENTS);
    let state = temp_dir();
    let mut broker = RestartingBroker::start();
    let addr = broker.addr();
    let log = |name: &str| state.path().join(format!("{name}.log"));
    let (_coordinator, url) =
        coordinator(state.path(), &["--lease-ttl", "3s", "--lease-grace", "1s"]);
    let mut first = Killed(spawn_logged(
        &["worker", "--coordinator", &url, "--worker-id", "first"],
        &log("worker-first"),
    ));
    let plan = submit_detached_to(&url, &addr, dir.path(), &topic, &target, &[]);
    let started = Instant::now();
    // Kill the first worker when about 40% of the partition is in the target.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let written = broker.end_offset(&target, 0);
        if written >= (SEGMENTS as i64) * 2 / 5 {
            first.0.kill().expect("kill -9");
            let _ = first.0.wait();
            eprintln!("killed the first worker at {written} records");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress; see {}",
            log("worker-first").display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _second = Killed(spawn_logged(
        &["worker", "--coordinator", &url, "--worker-id", "second"],
        &log("worker-second"),
    ));
    let last = loop {
        broker.keep_up();
        if let Some(st) = plan_status(&url, &plan).await {
            if matches!(st.state.as_str(), "completed" | "failed" | "cancelled") {
                break st;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the restore did not finish; see {}",
            state.path().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "distributed restore of {SEGMENTS} segments took {:?}",
        started.elapsed()
    );
    assert_eq!(last.state, "completed", "{last:?}");
    let task = &last.tasks[0];
    assert_eq!(task.segments_total, SEGMENTS as u64);
    // Epoch 2 is the second worker's grant; a produce timeout on this loaded broker can add
    // a third (an outage retry, seen in CI), which changes nothing about what was written.
    assert!(task.epoch >= 2, "the second worker took over: {task:?}");
    assert_same_records(&records, &consume_all(&addr, &target, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_no_worker_can_run_fails_visibly_instead_of_looping() {
    if skip_without_servers() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let topic = unique("stall");
    let target = unique("stall-target");
    let dir = temp_dir();
    many_segment_backup(dir.path(), &topic, 10);
    let state = temp_dir();
    let metrics = format!("127.0.0.1:{}", free_port());
    let (_coordinator, url) = coordinator(
        state.path(),
        &[
            "--lease-ttl",
            "500ms",
            "--lease-grace",
            "200ms",
            "--max-stalled-grants",
            "3",
            "--metrics-listen",
            &metrics,
        ],
    );
    let plan = submit_detached(&url, dir.path(), &topic, &target, &[]);
    // A worker that takes the lease and is never heard of again (it crashed on it, or could
    // not decode it): exactly what the coordinator sees on the wire.
    let mut ghost = RestoreWorkersClient::connect(url.clone())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut grants = 0;
    let last = loop {
        let st = plan_status(&url, &plan).await.expect("status");
        if st.state == "failed" {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the task was never failed: {st:?}"
        );
        let lease = ghost
            .acquire_lease(AcquireLeaseRequest {
                worker_id: "ghost".into(),
                plan_id: plan.clone(),
            })
            .await
            .expect("acquire")
            .into_inner()
            .lease;
        grants += usize::from(lease.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(grants, 3, "granted exactly --max-stalled-grants times");
    let failed = &last.failed_tasks[0];
    assert!(
        failed.error.contains("no progress after 3 grants") && failed.error.contains("ghost"),
        "{failed:?}"
    );
    // The CLI following the plan names the task and exits non-zero.
    let o = kb(&[
        "restore-status",
        "--coordinator",
        &url,
        "--plan-id",
        &plan,
        "--follow",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("no progress after 3 grants"),
        "{}",
        stdout(&o)
    );
    let text = http_get(&metrics, "/metrics");
    assert!(
        text.contains("kafka_backup_tasks_stalled_total 1"),
        "{text}"
    );
}

/// A plain HTTP/1.0 GET on loopback.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

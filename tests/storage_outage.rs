//! The object store becomes unreachable mid-restore and comes back. The restore reads its
//! S3 backup (moto) through a loopback TCP proxy owned by the test; the proxy is cut for
//! longer than the store client's own retries, so tasks fail as outages, the plan's circuit
//! breaker opens and paces the retries, and when the store is back the restore finishes with
//! every record exactly once. The final status shows the breaker opened and no task used up
//! its attempts.

mod common;

use common::*;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards loopback connections to `upstream` while up; while down it accepts and drops
/// every connection (counting them) and has cut the ones in flight.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (u, r, c) = (up.clone(), refused.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    r.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
            }
        });
        Self {
            port,
            up,
            refused,
            conns,
        }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_survives_an_object_store_outage() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("s3-outage");
    create_topic(&broker(), &topic, 2).await;
    let mut source = Vec::new();
    for p in 0..2 {
        source.push(
            produce(
                &broker(),
                &topic,
                p,
                &simple_records(1500, 1_760_000_000_000, 5),
            )
            .await,
        );
    }
    let bucket = unique("outage").to_lowercase();
    create_bucket(&bucket);
    let storage = format!("s3://{bucket}/backups");
    let out = Command::new(bin())
        .args([
            "backup",
            "--bootstrap-servers",
            &broker(),
            "--topics",
            &topic,
            "--backup-id",
            "bk",
            "--storage",
            &storage,
            "--segment-max-records",
            "50",
        ])
        .envs(s3_env())
        .output()
        .expect("backup");
    assert!(out.status.success(), "backup: {}", stderr(&out));

    let moto = s3_endpoint().trim_start_matches("http://").to_string();
    let proxy = Proxy::start(moto).await;
    let target = format!("{topic}-restored");
    let state = temp_dir();
    let log_path = state.path().join("restore.log");
    let out_path = state.path().join("restore.json");
    let mut env = s3_env();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push((
        "AWS_ENDPOINT_URL",
        format!("http://127.0.0.1:{}", proxy.port),
    ));
    let mut restore = Command::new(bin())
        .args([
            "restore",
            "--storage",
            &storage,
            "--backup-id",
            "bk",
            "--checkpoint-state",
            state.path().join("ledger").to_str().expect("p"),
            "--source-topic",
            &topic,
            "--target-topic",
            &target,
            "--bootstrap-servers",
            &broker(),
            "--create-topics",
            "--checkpoint-interval",
            "200ms",
            "--max-records-per-sec",
            "300",
            "--workers",
            "2",
            "--format",
            "json",
        ])
        .envs(env)
        .env("RUST_LOG", "warn,librdkafka=error")
        .stdout(std::fs::File::create(&out_path).expect("out"))
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("restore");
    let restored =
        || end_offset(&broker(), &target, 0).max(0) + end_offset(&broker(), &target, 1).max(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while restored() < 600 {
        assert!(Instant::now() < deadline, "restore made no progress");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.down();
    let at_cut = restored();
    eprintln!("object store cut at {at_cut} records");
    // Longer than the store client's own retries (about 15 s), so tasks fail as outages.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let during = restored();
    assert!(
        during < 3000,
        "the restore finished without the object store"
    );
    let refused = proxy.refused.load(Ordering::SeqCst);
    proxy.up();
    eprintln!("object store back; {refused} connections refused while down");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Ok(Some(s)) = restore.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "restore did not finish after the object store came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "restore failed after the store came back:\n{log}"
    );
    for (p, want) in source.iter().enumerate() {
        assert_same_records(want, &consume_all(&broker(), &target, p as i32));
    }
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).expect("out")).expect("json");
    assert_eq!(st["state"], "completed");
    assert!(
        st["circuit"]["times_opened"].as_u64().unwrap_or(0) >= 1,
        "the circuit breaker never opened: {st}\n{log}"
    );
    assert_eq!(st["circuit"]["state"], "closed", "{st}");
    // Outage failures gave their attempts back: no task is anywhere near its limit of 8.
    for t in st["tasks"].as_array().expect("tasks") {
        assert!(t["attempts"].as_u64().unwrap_or(99) <= 3, "{t}");
    }
    // The breaker kept the retries few: with 2 workers asking every 200 ms for 25 s and no
    // breaker, hundreds of connections would have been refused.
    assert!(
        refused < 100,
        "{refused} connections while the store was down"
    );
}

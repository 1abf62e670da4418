//! Shared helpers for the end-to-end tests: the loopback test servers' addresses, topic
//! creation, producing and consuming with rdkafka, and running the real binary.
#![allow(dead_code)]

use kafka_backup_common::segment::{Header, Record};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header as KHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod otlp;

const HOW_TO_START: &str = "start the loopback test servers first: `scripts/test-env.sh start && eval \"$(scripts/test-env.sh env)\"`, or run everything with `bash scripts/test.sh`";

/// Whether the loopback test servers are set up. Without them a test that needs them is
/// skipped with the reason printed, so a plain `cargo test` on a fresh machine runs the unit
/// and format tests and passes. `scripts/test.sh` sets `KAFKA_BACKUP_REQUIRE_SERVERS=1`: then
/// missing servers fail the test instead of skipping it.
pub fn skip_without_servers() -> bool {
    if std::env::var("KAFKA_BACKUP_TEST_BROKER").is_ok_and(|v| !v.is_empty()) {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if std::env::var("KAFKA_BACKUP_REQUIRE_SERVERS").is_ok_and(|v| v == "1") {
        panic!("{test} needs the test servers and they are not set up: {HOW_TO_START}");
    }
    // Straight to stderr, not through eprintln!, which the test harness captures.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped {test}: it needs the loopback test servers ({HOW_TO_START})"
    );
    true
}

fn env_addr(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{var} is not set: {HOW_TO_START}"),
    }
}

/// The primary tansu broker.
pub fn broker() -> String {
    env_addr("KAFKA_BACKUP_TEST_BROKER")
}

/// A second, independent tansu broker (cross-cluster tests).
pub fn broker2() -> String {
    env_addr("KAFKA_BACKUP_TEST_BROKER2")
}

/// The moto S3 endpoint.
/// A tansu broker on the memory engine: answers DescribeGroups, but not ListOffsets correctly.
pub fn broker_mem() -> String {
    env_addr("KAFKA_BACKUP_TEST_BROKER_MEM")
}

/// The tansu binary, for tests that start a broker of their own (e.g. with authentication).
pub fn tansu() -> String {
    env_addr("KAFKA_BACKUP_TEST_TANSU")
}

pub fn s3_endpoint() -> String {
    env_addr("KAFKA_BACKUP_TEST_S3_ENDPOINT")
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{name}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

pub async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        config(bootstrap).create().expect("admin client");
    let res = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|e| panic!("create topic {topic} on {bootstrap}: {e}; {HOW_TO_START}"));
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

/// A record to produce: partition plus content (its offset field is ignored).
pub fn rec(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    ts: i64,
    headers: &[(&str, Option<&[u8]>)],
) -> Record {
    Record {
        offset: -1,
        timestamp: ts,
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers: headers
            .iter()
            .map(|(k, v)| Header {
                key: k.to_string(),
                value: v.map(<[u8]>::to_vec),
            })
            .collect(),
    }
}

/// Simple keyed records: key-i / value-i at ts base + i*step.
pub fn simple_records(n: usize, base_ts: i64, step: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            rec(
                Some(format!("key-{i}").as_bytes()),
                Some(format!("value-{i}").as_bytes()),
                base_ts + i as i64 * step,
                &[("n", Some(i.to_string().as_bytes()))],
            )
        })
        .collect()
}

/// Produces records in order to one partition and returns them with their offsets.
pub async fn produce(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    records: &[Record],
) -> Vec<Record> {
    let producer: FutureProducer = config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    let mut futures = Vec::new();
    for r in records {
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(partition)
            .timestamp(r.timestamp);
        if let Some(k) = &r.key {
            fr = fr.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            fr = fr.payload(v.as_slice());
        }
        if !r.headers.is_empty() {
            let mut h = OwnedHeaders::new();
            for x in &r.headers {
                h = h.insert(KHeader {
                    key: &x.key,
                    value: x.value.as_deref(),
                });
            }
            fr = fr.headers(h);
        }
        futures.push(
            producer
                .send_result(fr)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    let mut out = Vec::new();
    for (r, f) in records.iter().zip(futures) {
        let d = f
            .await
            .expect("delivery")
            .map_err(|(e, _)| e)
            .expect("delivered");
        let mut r = r.clone();
        r.offset = d.offset;
        out.push(r);
    }
    out
}

/// Reads a partition from the start to its high watermark.
pub fn consume_all(bootstrap: &str, topic: &str, partition: i32) -> Vec<Record> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", unique("test-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"));
    let mut out = Vec::new();
    if high <= low {
        return out;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.last().is_none_or(|r: &Record| r.offset < high - 1) {
        assert!(
            Instant::now() < deadline,
            "timed out reading {topic}/{partition} (have {} of {})",
            out.len(),
            high - low
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(Record {
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().unwrap_or(-1),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| Header {
                                key: x.key.to_string(),
                                value: x.value.map(<[u8]>::to_vec),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consume {topic}/{partition}: {e}"),
            None => {}
        }
    }
    out
}

/// High watermark of a partition.
pub fn end_offset(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = config(bootstrap).create().expect("consumer");
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map(|(_, h)| h)
        .unwrap_or(-1)
}

/// Whether a topic exists.
pub fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = config(bootstrap).create().expect("consumer");
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    md.topics()
        .iter()
        .any(|t| t.name() == topic && !t.partitions().is_empty())
}

/// Content equality ignoring offsets.
pub fn same_content(a: &Record, b: &Record) -> bool {
    a.key == b.key && a.value == b.value && a.timestamp == b.timestamp && a.headers == b.headers
}

pub fn assert_same_records(expected: &[Record], actual: &[Record]) {
    assert_eq!(expected.len(), actual.len(), "record count differs");
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        assert!(
            same_content(e, a),
            "record {i} differs:\nexpected {e:?}\nactual   {a:?}"
        );
    }
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kafka-backup"))
}

/// Runs the binary to completion.
pub fn kb(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .env_remove("KAFKA_BACKUP_STORAGE")
        .output()
        .expect("run kafka-backup");
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and asserts success.
pub fn kb_ok(args: &[&str]) -> String {
    let o = kb(args);
    assert!(
        o.status.success(),
        "kafka-backup {args:?} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs the binary and asserts failure whose stderr contains `needle`.
pub fn kb_err(args: &[&str], needle: &str) -> String {
    let o = kb(args);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "kafka-backup {args:?} unexpectedly succeeded:\n{}",
        stdout(&o)
    );
    assert!(
        err.contains(needle),
        "stderr of {args:?} lacks {needle:?}:\n{err}"
    );
    err
}

/// Backs up `topics` into a fresh local dir; returns the dir.
pub fn backup_local(bootstrap: &str, topics: &str, backup_id: &str) -> tempfile::TempDir {
    backup_local_with(
        bootstrap,
        topics,
        backup_id,
        &["--segment-max-records", "50"],
    )
}

/// `backup_local` with the segment/index flags given.
pub fn backup_local_with(
    bootstrap: &str,
    topics: &str,
    backup_id: &str,
    flags: &[&str],
) -> tempfile::TempDir {
    let dir = temp_dir();
    let out = run_backup_to(bootstrap, topics, backup_id, dir.path(), flags);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    dir
}

/// Runs `kafka-backup backup` of `topics` into `storage` with `flags`; the outcome, whatever it is.
pub fn run_backup_to(
    bootstrap: &str,
    topics: &str,
    backup_id: &str,
    storage: &std::path::Path,
    flags: &[&str],
) -> std::process::Output {
    backup_command(bootstrap, topics, backup_id, storage, flags)
        .output()
        .expect("run kafka-backup")
}

/// The `run_backup_to` command, not yet run, for a test that sets its environment.
pub fn backup_command(
    bootstrap: &str,
    topics: &str,
    backup_id: &str,
    storage: &std::path::Path,
    flags: &[&str],
) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args([
        "backup",
        "--bootstrap-servers",
        bootstrap,
        "--topics",
        topics,
        "--backup-id",
        backup_id,
        "--storage",
        storage.to_str().expect("utf8 path"),
    ])
    .args(flags)
    .env_remove("KAFKA_BACKUP_STORAGE");
    cmd
}

/// Sends one bodiless request to the moto server (it accepts unsigned ones) and returns
/// the whole response, status line first. HTTP/1.0, so the body is never chunked.
fn moto_request(method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let endpoint = s3_endpoint();
    let host = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host)
        .unwrap_or_else(|e| panic!("moto at {host}: {e}; {HOW_TO_START}"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp
}

fn is_ok(resp: &str) -> bool {
    resp.split_whitespace().nth(1) == Some("200")
}

/// Creates a bucket on the moto server.
pub fn create_bucket(bucket: &str) {
    let resp = moto_request("PUT", &format!("/{bucket}"));
    assert!(is_ok(&resp), "create bucket {bucket}: {resp}");
}

/// The (method, path) of every request moto served to `bucket` while `during` ran, from
/// moto's request recorder (which this alone turns on, so parallel tests of other buckets
/// do not matter).
pub fn s3_requests_during(bucket: &str, during: impl FnOnce()) -> Vec<(String, String)> {
    for path in [
        "/moto-api/recorder/reset-recording",
        "/moto-api/recorder/start-recording",
    ] {
        let resp = moto_request("POST", path);
        assert!(is_ok(&resp), "{path}: {resp}");
    }
    during();
    moto_request("POST", "/moto-api/recorder/stop-recording");
    let resp = moto_request("GET", "/moto-api/recorder/download-recording");
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|r| {
            let url = r["url"].as_str()?;
            let path = url.split_once("://").map_or(url, |(_, rest)| rest);
            let path = &path[path.find('/')?..];
            let path = path.split('?').next().unwrap_or(path);
            path.starts_with(&format!("/{bucket}/")).then(|| {
                (
                    r["method"].as_str().unwrap_or("").to_string(),
                    path.to_string(),
                )
            })
        })
        .collect()
}

/// Environment for the binary to reach moto.
pub fn s3_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", s3_endpoint()),
    ]
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something listens on the loopback port.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when the test ends, pass or fail.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new topic of `partitions` × `per_partition` simple records (timestamps base_ts + i*step),
/// backed up as `bk` into a fresh directory. Returns the topic, the records with their
/// offsets per partition, and the backup directory.
pub async fn backed_up_topic(
    name: &str,
    partitions: i32,
    per_partition: usize,
    base_ts: i64,
    step: i64,
) -> (String, Vec<Vec<Record>>, tempfile::TempDir) {
    backed_up_topic_on(&broker(), name, partitions, per_partition, base_ts, step).await
}

/// `backed_up_topic` on another broker than the primary test broker (a test's own, so a
/// test that writes many records does not slow the shared one down for the others).
pub async fn backed_up_topic_on(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    per_partition: usize,
    base_ts: i64,
    step: i64,
) -> (String, Vec<Vec<Record>>, tempfile::TempDir) {
    let topic = unique(name);
    create_topic(bootstrap, &topic, partitions).await;
    let mut records = Vec::new();
    for p in 0..partitions {
        let recs = simple_records(per_partition, base_ts, step);
        records.push(produce(bootstrap, &topic, p, &recs).await);
    }
    let backup = backup_local(bootstrap, &topic, "bk");
    (topic, records, backup)
}

/// Submits a restore of backup `bk` to a coordinator with --detach and returns the plan id.
pub fn submit_detached(
    url: &str,
    storage: &std::path::Path,
    topic: &str,
    target: &str,
    extra: &[&str],
) -> String {
    submit_detached_to(url, &broker(), storage, topic, target, extra)
}

/// `submit_detached` with another target cluster than the primary test broker.
pub fn submit_detached_to(
    url: &str,
    b: &str,
    storage: &std::path::Path,
    topic: &str,
    target: &str,
    extra: &[&str],
) -> String {
    let mut args = vec![
        "restore",
        "--coordinator",
        url,
        "--detach",
        "--format",
        "json",
        "--storage",
        storage.to_str().expect("utf8 path"),
        "--backup-id",
        "bk",
        "--source-topic",
        topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        b,
        "--create-topics",
    ];
    if !extra.contains(&"--checkpoint-interval") {
        args.extend_from_slice(&["--checkpoint-interval", "100ms"]);
    }
    args.extend_from_slice(extra);
    let out = kb_ok(&args);
    serde_json::from_str::<serde_json::Value>(&out).expect("json")["plan_id"]
        .as_str()
        .expect("plan id")
        .to_string()
}

/// Joins `group` on `topic` as a real subscriber with no automatic offset reset (without a
/// committed offset it would read nothing) and returns the first record it receives on each
/// of the `partitions` partitions.
pub fn first_records_of_group(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> std::collections::BTreeMap<i32, Record> {
    let consumer: BaseConsumer = config(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut first = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() < partitions as usize {
        assert!(
            Instant::now() < deadline,
            "group {group} received records on only {:?} of {partitions} partitions",
            first.keys()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                first.entry(m.partition()).or_insert_with(|| Record {
                    offset: m.offset(),
                    timestamp: m.timestamp().to_millis().unwrap_or(-1),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: vec![],
                });
            }
            Some(Err(e)) => panic!("group {group} consuming {topic}: {e}"),
            None => {}
        }
    }
    first
}

/// Starts the binary with its stderr appended to `log` (info level, librdkafka quiet).
pub fn spawn_logged(args: &[&str], log: &std::path::Path) -> std::process::Child {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .expect("spawn")
}

/// A plan's status from a coordinator, or `None` while it cannot be asked.
pub async fn plan_status(url: &str, plan: &str) -> Option<kafka_backup_proto::PlanStatus> {
    use kafka_backup_proto::restore_plans_client::RestorePlansClient;
    let mut c = RestorePlansClient::connect(url.to_string()).await.ok()?;
    c.get_plan_status(kafka_backup_proto::PlanRef {
        plan_id: plan.to_string(),
        ..Default::default()
    })
    .await
    .ok()
    .map(|r| r.into_inner())
}

/// The manifest entry of a segment built from `records` whose object is `bytes` long.
pub fn segment_meta(
    key: String,
    records: &[Record],
    bytes: usize,
) -> kafka_backup_common::manifest::SegmentMeta {
    let (first, last) = (&records[0], &records[records.len() - 1]);
    kafka_backup_common::manifest::SegmentMeta {
        key,
        start_offset: first.offset,
        end_offset: last.offset,
        start_timestamp: first.timestamp,
        end_timestamp: last.timestamp,
        record_count: records.len() as u64,
        uncompressed_size: 0,
        compressed_size: bytes as u64,
        min_timestamp: records.iter().map(|r| r.timestamp).min(),
        max_timestamp: records.iter().map(|r| r.timestamp).max(),
        frames: vec![],
    }
}

/// A tansu broker of the test's own (SQLite engine, database `db` in `dir`) on 127.0.0.1:`port`:
/// for tests that kill the broker, or that write so much that the shared brokers would slow
/// down every test after them (tansu's SQLite engine slows as its database grows).
pub fn start_tansu(dir: &std::path::Path, port: u16, db: &str) -> Killed {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("log");
    let addr = format!("tcp://127.0.0.1:{port}");
    let engine = format!("sqlite://{db}");
    let child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &addr,
            "--advertised-listener-url",
            &addr,
            "--storage-engine",
            &engine,
        ])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("tansu on PATH (scripts/test-env.sh install)");
    wait_port(port);
    Killed(child)
}

/// A target broker of the test's own that is started again if it dies. tansu 0.6 sometimes
/// panics in its produce path ("more or less than one row") after a client was killed or
/// frozen in the middle of a produce request (a broken pipe just before the panic in its
/// log), and then serves nothing. A real broker keeps serving; here the broker is restarted
/// on the same database, and the restore must still end exact through that outage. Tests
/// that kill or freeze producers use one, so the shared brokers stay healthy for the rest.
pub struct RestartingBroker {
    dir: tempfile::TempDir,
    port: u16,
    tansu: Killed,
    /// Where this run of tansu started writing its log.
    log_from: u64,
    pub restarts: usize,
}

/// Whether a tansu process whose stderr goes to `log` has panicked since byte `from`. The
/// panic can end only one of its tokio tasks (its storage actor): the process then lives on
/// and closes every connection, so its exit alone does not tell.
pub fn tansu_panicked(log: &std::path::Path, from: u64) -> bool {
    std::fs::read(log).is_ok_and(|text| {
        let from = (from as usize).min(text.len());
        String::from_utf8_lossy(&text[from..]).contains("panicked at")
    })
}

/// The current length of a log file (0 if it does not exist yet).
pub fn log_len(log: &std::path::Path) -> u64 {
    std::fs::metadata(log).map_or(0, |m| m.len())
}

impl RestartingBroker {
    pub fn start() -> Self {
        let dir = temp_dir();
        let port = free_port();
        let tansu = start_tansu(dir.path(), port, "target.db");
        Self {
            log_from: 0,
            dir,
            port,
            tansu,
            restarts: 0,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Restarts the broker if it has exited or panicked.
    pub fn keep_up(&mut self) {
        let log = self.dir.path().join("tansu.log");
        if matches!(self.tansu.0.try_wait(), Ok(Some(_))) || tansu_panicked(&log, self.log_from) {
            eprintln!("the target tansu died (its produce-path panic); restarting it");
            let _ = self.tansu.0.kill();
            let _ = self.tansu.0.wait();
            self.log_from = log_len(&log);
            self.tansu = start_tansu(self.dir.path(), self.port, "target.db");
            self.restarts += 1;
        }
    }

    /// The end offset of a partition, restarting the broker first if it died.
    pub fn end_offset(&mut self, topic: &str, partition: i32) -> i64 {
        self.keep_up();
        end_offset(&self.addr(), topic, partition)
    }
}

/// The Prometheus text of a `--metrics-listen` endpoint on 127.0.0.1:`port`.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of metric `name` (without labels) in a scrape.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// Starts `args` (a restore whose target is `broker`) with its log in `log`, kills it
/// (kill -9) once partition `partition` of `topic` holds `at_least` records, then reruns the
/// same restore to its end and checks that it resumed its plan. The broker is kept up
/// throughout (a killed producer can make tansu panic; see `RestartingBroker`). Fails if the
/// first run ends before the kill or either run stalls for two minutes.
pub async fn kill_mid_restore_and_rerun(
    args: &[&str],
    log: &std::path::Path,
    broker: &mut RestartingBroker,
    (topic, partition): (&str, i32),
    at_least: i64,
) {
    let mut child = spawn_logged(args, log);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = broker.end_offset(topic, partition).max(0);
        if written >= at_least {
            child.kill().expect("kill -9");
            let _ = child.wait();
            eprintln!("killed after {written} records were written to {topic}/{partition}");
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "restore ended ({st}) before the kill; see {}",
                log.display()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no progress; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rerun_resumes(
        args,
        &log.with_extension("rerun.out"),
        broker,
        Duration::from_secs(120),
    )
    .await;
}

/// Runs the same restore again (its stdout to `out_path`), keeping `broker` up, and checks
/// that it finished within `limit` and resumed the killed run's plan.
pub async fn rerun_resumes(
    args: &[&str],
    out_path: &std::path::Path,
    broker: &mut RestartingBroker,
    limit: Duration,
) {
    let err_path = out_path.with_extension("err");
    // The kill may have taken tansu down with it (its produce-path panic): the rerun must
    // start against a live broker, or its first metadata check fails before any restart.
    broker.keep_up();
    let mut rerun = Command::new(bin())
        .args(args)
        .stdout(std::fs::File::create(out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("rerun");
    let deadline = Instant::now() + limit;
    let status = loop {
        broker.keep_up();
        if let Some(st) = rerun.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the rerun did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = std::fs::read_to_string(out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let err_tail: String = err
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "rerun failed ({status}): {out}\nits stderr ends:\n{err_tail}"
    );
    assert!(out.contains("Resuming plan"), "{out}");
}

/// A coordinator process on a free loopback port with its ledger and log in `dir`, `extra`
/// flags added; returns it (killed when dropped), its URL and its port, once it listens.
pub fn spawn_coordinator(dir: &std::path::Path, extra: &[&str]) -> (Killed, String, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ledger = dir.join("ledger");
    let mut args = vec![
        "coordinator",
        "--listen",
        &listen,
        "--state-dir",
        ledger.to_str().expect("utf8 path"),
    ];
    args.extend_from_slice(extra);
    let child = Killed(spawn_logged(&args, &dir.join("coordinator.log")));
    wait_port(port);
    (child, format!("http://{listen}"), port)
}

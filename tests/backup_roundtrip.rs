//! Backup round trip against tansu: awkward records in, the same records (with offsets) out
//! of the segments, on the local filesystem and on S3 (moto).

mod common;

use common::*;
use kafka_backup_common::manifest::Manifest;
use kafka_backup_common::segment::{DecodedSegment, Record};
use kafka_backup_common::storage::BackupStore;
use std::collections::HashMap;

fn awkward_records() -> Vec<Record> {
    let big = vec![0xABu8; 1 << 20];
    vec![
        rec(None, Some(b"null key"), 1_700_000_005_000, &[]),
        rec(Some(b"null value"), None, 1_700_000_001_000, &[]),
        rec(Some(b"empty value"), Some(b""), 1_700_000_009_000, &[]),
        rec(
            Some(&[0, 159, 146, 150, 255]),
            Some(b"binary key"),
            1_700_000_000_500,
            &[],
        ),
        rec(Some(b"big"), Some(&big), 1_700_000_002_000, &[]),
        rec(
            Some(b"headers"),
            Some(b"v"),
            1_700_000_000_001,
            &[
                ("dup", Some(b"1")),
                ("dup", Some(b"2")),
                ("nullh", None),
                ("empty", Some(b"")),
            ],
        ),
        rec(
            Some(b"late"),
            Some(b"out of order ts"),
            1_600_000_000_000,
            &[],
        ),
    ]
}

async fn decode_all(store: &BackupStore, m: &Manifest, topic: &str, partition: i32) -> Vec<Record> {
    let p = m
        .topic(topic)
        .and_then(|t| t.partitions.iter().find(|p| p.partition_id == partition))
        .expect("partition in manifest");
    let mut out = Vec::new();
    for s in &p.segments {
        let bytes = store.get(&s.key).await.expect("segment");
        let seg = DecodedSegment::decode(&s.key, &bytes).expect("decode");
        assert_eq!(seg.header.record_count, s.record_count);
        let recs: Vec<Record> = seg
            .records()
            .map(|r| r.expect("record").to_owned_record())
            .collect();
        let min = recs.iter().map(|r| r.timestamp).min();
        let max = recs.iter().map(|r| r.timestamp).max();
        assert_eq!(
            (s.min_timestamp, s.max_timestamp),
            (min, max),
            "true min/max recorded"
        );
        out.extend(recs);
    }
    out
}

async fn produce_fixture(topic: &str) -> HashMap<i32, Vec<Record>> {
    create_topic(&broker(), topic, 2).await;
    let mut produced = HashMap::new();
    produced.insert(0, produce(&broker(), topic, 0, &awkward_records()).await);
    produced.insert(
        1,
        produce(
            &broker(),
            topic,
            1,
            &simple_records(120, 1_700_000_000_000, 3),
        )
        .await,
    );
    produced
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_local_filesystem_round_trips_every_record() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("rt-local");
    let produced = produce_fixture(&topic).await;
    let dir = backup_local(&broker(), &topic, "rt1");
    let store = BackupStore::open(dir.path().to_str().expect("path"), &HashMap::new(), false)
        .expect("store");
    let m = store.read_manifest("rt1").await.expect("manifest");
    assert_eq!(m.topic(&topic).expect("topic").partition_count(), 2);
    for (p, want) in &produced {
        let got = decode_all(&store, &m, &topic, *p).await;
        assert_eq!(&got, want, "partition {p} round trip (content and offsets)");
    }
    // Segment keys follow the published layout.
    let key = &m.topic(&topic).expect("topic").partitions[1].segments[1].key;
    assert_eq!(
        key,
        &format!("rt1/topics/{topic}/partition=1/segment-{:020}.bin.zst", 50)
    );
    let listed = kb_ok(&[
        "list-backups",
        "--storage",
        dir.path().to_str().expect("path"),
    ]);
    assert!(listed.contains("rt1"), "{listed}");
    let json = kb_ok(&[
        "describe",
        "--storage",
        dir.path().to_str().expect("path"),
        "--backup-id",
        "rt1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("describe json");
    assert_eq!(v["records"], 127);
    let manifest = kb_ok(&[
        "show-manifest",
        "--storage",
        dir.path().to_str().expect("path"),
        "--backup-id",
        "rt1",
        "--format",
        "json",
    ]);
    assert!(manifest.contains("\"segments\""));
    // A second backup with the same id is refused rather than overwriting.
    let again = kb(&[
        "backup",
        "--bootstrap-servers",
        &broker(),
        "--topics",
        &topic,
        "--backup-id",
        "rt1",
        "--storage",
        dir.path().to_str().expect("path"),
    ]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
}

/// Partitions of several topics, of uneven sizes and one of them empty, split between three
/// consumers: every partition's records come back whole and in order, each exactly once,
/// and the manifest lists every partition, the empty one too.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_split_between_several_consumers_keeps_every_partition_whole() {
    if skip_without_servers() {
        return;
    }
    let (a, b) = (unique("split-a"), unique("split-b"));
    create_topic(&broker(), &a, 3).await;
    create_topic(&broker(), &b, 2).await;
    let mut produced: Vec<(String, i32, Vec<Record>)> = Vec::new();
    for (topic, partition, n) in [(&a, 0, 400), (&a, 1, 35), (&a, 2, 170), (&b, 0, 260)] {
        let records = simple_records(n, 1_700_000_000_000 + i64::from(partition), 7);
        let sent = produce(&broker(), topic, partition, &records).await;
        produced.push((topic.clone(), partition, sent));
    }
    let dir = backup_local_with(
        &broker(),
        &format!("{a},{b}"),
        "split",
        &["--segment-max-records", "60", "--fetch-connections", "3"],
    );
    let store = BackupStore::open(dir.path().to_str().expect("path"), &HashMap::new(), false)
        .expect("store");
    let m = store.read_manifest("split").await.expect("manifest");
    assert_eq!(m.topic(&a).expect("topic a").partition_count(), 3);
    assert_eq!(m.topic(&b).expect("topic b").partition_count(), 2);
    for (topic, partition, want) in &produced {
        let got = decode_all(&store, &m, topic, *partition).await;
        assert_eq!(
            &got, want,
            "{topic}/{partition} round trip (content and offsets)"
        );
    }
    let empty = decode_all(&store, &m, &b, 1).await;
    assert!(
        empty.is_empty(),
        "the empty partition has no records: {empty:?}"
    );
    assert_eq!(m.total_records(), 400 + 35 + 170 + 260);
}

/// Eight partitions of ~600 KB each, backed up with the smallest `--max-buffered-bytes`
/// (1 MiB: 512 KiB for each of the two consumers): no partition's records are held in memory
/// whole. Its segments are closed early, each within its share's limit (plus the record that
/// crossed it), the log says so, and every record comes back once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_many_partitions_closes_segments_early_to_stay_within_its_memory_limit() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("buffered");
    let partitions = 8;
    create_topic(&broker(), &topic, partitions).await;
    let value = vec![b'v'; 1000];
    let mut produced = Vec::new();
    for p in 0..partitions {
        let records: Vec<Record> = (0..600)
            .map(|i| {
                rec(
                    Some(format!("k{p}-{i}").as_bytes()),
                    Some(&value),
                    1_700_000_000_000 + i,
                    &[("n", Some(i.to_string().as_bytes()))],
                )
            })
            .collect();
        produced.push(produce(&broker(), &topic, p, &records).await);
    }
    let dir = temp_dir();
    let out = run_backup_to(
        &broker(),
        &topic,
        "buffered",
        dir.path(),
        &["--max-buffered-bytes", "1048576"],
    );
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("segments closed before --segment-max-bytes"),
        "the log says why segments are small: {}",
        stderr(&out)
    );
    let store = BackupStore::open(dir.path().to_str().expect("path"), &HashMap::new(), false)
        .expect("store");
    let m = store.read_manifest("buffered").await.expect("manifest");
    let segments: Vec<_> = m.segments().collect();
    // With the default 16 MiB segments and no limit, each partition would be one segment;
    // each is larger than a share's limit, so each is cut at least once.
    assert!(
        segments.len() >= 2 * partitions as usize,
        "segments closed early: {}",
        segments.len()
    );
    let largest = segments
        .iter()
        .map(|s| s.uncompressed_size)
        .max()
        .expect("segments");
    assert!(
        largest <= (512 << 10) + 2048,
        "no segment above a share's limit and one record: {largest}"
    );
    for (p, want) in produced.iter().enumerate() {
        let got = decode_all(&store, &m, &topic, p as i32).await;
        assert_eq!(&got, want, "partition {p} round trip (content and offsets)");
    }
}

/// The backup's progress lines reach the operator with the default log filter, and with
/// trace export on: both hold a target directive (`librdkafka=error`), with which a
/// per-layer filter used to drop events after rdkafka's own log checks on the same thread
/// (both lines went missing with the default filter, "backup started" with export on).
#[tokio::test(flavor = "multi_thread")]
async fn backup_progress_is_logged_with_the_default_filter_and_with_trace_export() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("log-lines");
    create_topic(&broker(), &topic, 2).await;
    for p in 0..2 {
        produce(
            &broker(),
            &topic,
            p,
            &simple_records(30, 1_700_000_000_000, 5),
        )
        .await;
    }
    // Exporting to a closed loopback port: spans are dropped, logging must not be.
    for (i, otlp) in [None, Some("http://127.0.0.1:1")].into_iter().enumerate() {
        let dir = temp_dir();
        let id = format!("logs{i}");
        let mut cmd = backup_command(&broker(), &topic, &id, dir.path(), &[]);
        cmd.env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        if let Some(endpoint) = otlp {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
        }
        let out = cmd.output().expect("backup runs");
        let err = stderr(&out);
        assert!(out.status.success(), "backup failed: {err}");
        for line in ["backup started", "backup complete"] {
            assert!(
                err.contains(line),
                "export {otlp:?}: {line:?} not logged:\n{err}"
            );
        }
    }
}

/// Backs `topic` up to the moto bucket at `url` in segments of 50 records.
fn backup_to_s3(topic: &str, id: &str, url: &str, extra: &[&str]) {
    let out = std::process::Command::new(bin())
        .args([
            "backup",
            "--bootstrap-servers",
            &broker(),
            "--topics",
            topic,
            "--backup-id",
            id,
            "--storage",
            url,
            "--segment-max-records",
            "50",
        ])
        .args(extra)
        .envs(s3_env())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_to_s3_round_trips_every_record() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("rt-s3");
    let produced = produce_fixture(&topic).await;
    let bucket = unique("kb-test").to_lowercase();
    create_bucket(&bucket);
    let url = format!("s3://{bucket}/backups");
    // The default, and every segment stored uncompressed (written as parts, not one buffer).
    for (id, savings) in [("rt-s3", "12.5"), ("rt-s3-raw", "100")] {
        backup_to_s3(&topic, id, &url, &["--min-compression-savings", savings]);
    }
    for (k, v) in s3_env() {
        std::env::set_var(k, v);
    }
    let store = BackupStore::open(&url, &HashMap::new(), false).expect("s3 store");
    for id in ["rt-s3", "rt-s3-raw"] {
        let m = store.read_manifest(id).await.expect("manifest");
        for (p, want) in &produced {
            assert_eq!(
                &decode_all(&store, &m, &topic, *p).await,
                want,
                "{id} partition {p}"
            );
        }
    }
    let m = store.read_manifest("rt-s3-raw").await.expect("manifest");
    assert!(compression_codes(&store, &m, &topic, 1)
        .await
        .iter()
        .all(|c| *c == 0));
    assert_eq!(
        store.list_backups().await.expect("list"),
        vec!["rt-s3".to_string(), "rt-s3-raw".to_string()]
    );
}

/// Plans `id` from `url` in a dry run and returns its report (JSON).
fn s3_dry_run(url: &str, id: &str, topic: &str) -> serde_json::Value {
    let out = std::process::Command::new(bin())
        .args([
            "restore",
            "--storage",
            url,
            "--backup-id",
            id,
            "--source-topic",
            topic,
            "--target-topic",
            &format!("{topic}-copy"),
            "--bootstrap-servers",
            &broker(),
            "--create-topics",
            "--dry-run",
            "--format",
            "json",
        ])
        .envs(s3_env())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("dry-run json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_from_s3_trusts_the_index_by_the_manifests_entity_tag() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("rt-etag");
    produce_fixture(&topic).await;
    let bucket = unique("kb-etag").to_lowercase();
    create_bucket(&bucket);
    let url = format!("s3://{bucket}/backups");
    backup_to_s3(&topic, "bk", &url, &[]);

    // Planned from the index, which the manifest's HEAD vouches for: the manifest itself
    // is never downloaded (at a million segments it is ~300 MB).
    let mut report = serde_json::Value::Null;
    let requests = s3_requests_during(&bucket, || report = s3_dry_run(&url, "bk", &topic));
    assert_eq!(report["records"], 127);
    let manifest = format!("/{bucket}/backups/bk/manifest.json");
    let index = format!("/{bucket}/backups/bk/manifest.index");
    let asked = |method: &str, path: &str| {
        requests
            .iter()
            .any(|(m, p)| m.as_str() == method && p.as_str() == path)
    };
    assert!(asked("HEAD", &manifest), "{requests:?}");
    assert!(asked("GET", &index), "{requests:?}");
    assert!(!asked("GET", &manifest), "{requests:?}");

    // The manifest written again (another tool, a hand edit): a new entity tag, so the
    // manifest is downloaded, found different from the index and planned from.
    for (k, v) in s3_env() {
        std::env::set_var(k, v);
    }
    let store = BackupStore::open(&url, &HashMap::new(), false).expect("s3 store");
    let mut m = store.read_manifest("bk").await.expect("manifest");
    let dropped = m.topics[0].partitions[1]
        .segments
        .pop()
        .expect("a segment")
        .record_count;
    store
        .put("bk/manifest.json", serde_json::to_vec(&m).expect("json"))
        .await
        .expect("rewrite");
    let report = s3_dry_run(&url, "bk", &topic);
    assert_eq!(report["records"], 127 - dropped);
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_snapshots_committed_group_offsets() {
    if skip_without_servers() {
        return;
    }
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let topic = unique("rt-groups");
    create_topic(&broker(), &topic, 1).await;
    produce(
        &broker(),
        &topic,
        0,
        &simple_records(30, 1_700_000_000_000, 1),
    )
    .await;
    let group = unique("orders-app");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(17))
        .expect("tpl");
    consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    let dir = temp_dir();
    kb_ok(&[
        "backup",
        "--bootstrap-servers",
        &broker(),
        "--topics",
        &topic,
        "--backup-id",
        "g1",
        "--storage",
        dir.path().to_str().expect("p"),
        "--consumer-groups",
        &group,
    ]);
    let store =
        BackupStore::open(dir.path().to_str().expect("p"), &HashMap::new(), false).expect("store");
    let m = store.read_manifest("g1").await.expect("manifest");
    assert_eq!(
        m.consumer_group_offsets.len(),
        1,
        "{:?}",
        m.consumer_group_offsets
    );
    assert_eq!(m.consumer_group_offsets[0].offset, 17);
    assert_eq!(m.consumer_group_offsets[0].group, group);
}

/// A segment that cannot be written ends the backup with an error naming it, whichever
/// compression thread held it, and no manifest is written (the backup does not exist).
#[tokio::test(flavor = "multi_thread")]
async fn a_segment_that_cannot_be_written_fails_the_backup_without_a_manifest() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("rt-unwritable");
    let produced = produce_fixture(&topic).await;
    let dir = temp_dir();
    // A file where partition 1's directory must go: its segments cannot be created.
    let blocked = dir.path().join(format!("rt4/topics/{topic}"));
    std::fs::create_dir_all(&blocked).expect("mkdir");
    std::fs::write(blocked.join("partition=1"), b"not a directory").expect("write");
    let back_up = || {
        run_backup_to(
            &broker(),
            &topic,
            "rt4",
            dir.path(),
            &["--segment-max-records", "10"],
        )
    };
    let out = back_up();
    assert!(!out.status.success(), "the backup must fail");
    let err = stderr(&out);
    assert!(err.contains("partition=1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !dir.path().join("rt4/manifest.json").exists(),
        "no manifest for a failed backup"
    );
    // What it left is named as incomplete, not listed as a backup. An earlier attempt may
    // also have written segments under keys a rerun does not write again (the partition's
    // start moved with retention, other segment limits): one such is put there.
    let orphan = format!("rt4/topics/{topic}/partition=0/segment-{:020}.bin.zst", 999);
    std::fs::create_dir_all(dir.path().join(format!("rt4/topics/{topic}/partition=0")))
        .expect("mkdir");
    std::fs::write(dir.path().join(&orphan), b"an earlier attempt's segment").expect("write");
    // Written an hour ago: objects written since a rerun began are never taken for leftovers.
    std::fs::File::options()
        .write(true)
        .open(dir.path().join(&orphan))
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
        })
        .expect("set mtime");
    let storage = dir.path().to_str().expect("path");
    let o = kb(&["list-backups", "--storage", storage]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("rt4"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("without a manifest") && stderr(&o).contains("rt4"),
        "{}",
        stderr(&o)
    );
    // Rerun once the cause is gone: the segments the rerun does not write are removed once
    // its manifest is written; only the manifest's segments remain, and they restore.
    std::fs::remove_file(blocked.join("partition=1")).expect("unblock");
    let out = back_up();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = BackupStore::open(storage, &HashMap::new(), false).expect("store");
    let m = store.read_manifest("rt4").await.expect("manifest");
    let mut listed: Vec<String> = m
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.segments)
        .map(|s| s.key.clone())
        .collect();
    listed.sort();
    let mut segments = store.list_keys("rt4").await.expect("keys");
    segments.retain(|k| k.contains("/topics/"));
    assert_eq!(segments, listed, "only the manifest's segments remain");
    assert!(!segments.contains(&orphan));
    for (p, want) in &produced {
        let got = decode_all(&store, &m, &topic, *p).await;
        assert_eq!(&got, want, "partition {p} after the rerun");
    }
    assert!(kb_ok(&["list-backups", "--storage", storage]).contains("rt4"));
}

/// The compression code in the header of each of a partition's segment objects.
async fn compression_codes(
    store: &BackupStore,
    m: &Manifest,
    topic: &str,
    partition: usize,
) -> Vec<u8> {
    let mut codes = Vec::new();
    for s in &m.topic(topic).expect("topic").partitions[partition].segments {
        let bytes = store.get(&s.key).await.expect("segment");
        codes.push(bytes[5]);
    }
    codes
}

/// Values that do not compress (random bytes, as encrypted or already compressed payloads
/// are) are stored uncompressed (format compression 0), values that do are compressed, and
/// both restore record for record; `--min-compression-savings 0` compresses every segment,
/// and a saving outside 0-100 % is refused before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn incompressible_segments_are_stored_uncompressed_and_restore_exactly() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("rt-incompressible");
    create_topic(&broker(), &topic, 2).await;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<Record> = (0..150)
        .map(|i| {
            let value: Vec<u8> = (0..2000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let key = format!("k{i}");
            rec(
                Some(key.as_bytes()),
                Some(&value),
                1_700_000_000_000 + i,
                &[("h", Some(b"1"))],
            )
        })
        .collect();
    let produced = [
        produce(&broker(), &topic, 0, &random).await,
        produce(
            &broker(),
            &topic,
            1,
            &simple_records(120, 1_700_000_000_000, 3),
        )
        .await,
    ];
    let dir = temp_dir();
    let out = run_backup_to(
        &broker(),
        &topic,
        "raw",
        dir.path(),
        &["--segment-max-records", "50"],
    );
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    // The operator is told how many segments were stored uncompressed, and why.
    assert!(
        stderr(&out).contains("segments stored uncompressed"),
        "{}",
        stderr(&out)
    );
    let path = dir.path().to_str().expect("path");
    let store = BackupStore::open(path, &HashMap::new(), false).expect("store");
    let m = store.read_manifest("raw").await.expect("manifest");
    let codes = compression_codes(&store, &m, &topic, 0).await;
    assert_eq!(codes, vec![0, 0, 0], "random values stored uncompressed");
    let codes = compression_codes(&store, &m, &topic, 1).await;
    assert_eq!(codes, vec![1, 1, 1], "compressible values compressed");
    for (p, want) in produced.iter().enumerate() {
        let got = decode_all(&store, &m, &topic, p as i32).await;
        assert_eq!(&got, want, "partition {p} round trip");
    }
    let state = temp_dir();
    let target = format!("{topic}-back");
    kb_ok(&[
        "restore",
        "--storage",
        path,
        "--backup-id",
        "raw",
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--source-topics",
        &topic,
        "--target-topics",
        &target,
        "--target-cluster",
        &broker(),
        "--create-topics",
    ]);
    for (p, want) in produced.iter().enumerate() {
        assert_same_records(want, &consume_all(&broker(), &target, p as i32));
    }

    let always = backup_local_with(
        &broker(),
        &topic,
        "always",
        &[
            "--segment-max-records",
            "50",
            "--min-compression-savings",
            "0",
        ],
    );
    let store = BackupStore::open(
        always.path().to_str().expect("path"),
        &HashMap::new(),
        false,
    )
    .expect("store");
    let m = store.read_manifest("always").await.expect("manifest");
    assert_eq!(
        compression_codes(&store, &m, &topic, 0).await,
        vec![1, 1, 1]
    );
    assert_eq!(decode_all(&store, &m, &topic, 0).await, produced[0]);

    let refused = temp_dir();
    let target_dir = refused.path().join("never");
    let out = run_backup_to(
        &broker(),
        &topic,
        "bad",
        &target_dir,
        &["--min-compression-savings", "101"],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--min-compression-savings 101"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!target_dir.exists(), "nothing written for a refused backup");
}

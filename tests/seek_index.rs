//! The seek index against the real broker: `backup` writes each segment's records as several
//! zstd frames with one manifest entry per frame; a full restore still reads every segment
//! whole; a `--from-timestamp` restore reads only the frames from the first one that can hold
//! a record of the window. The proof that skipped frames are never read: damaging one of them
//! does not disturb the windowed restore, while damaging the first frame it needs fails it
//! with an error naming the segment.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const BASE_TS: i64 = 1_750_000_000_000;
const RECORDS: usize = 400;

/// Timestamps run backwards now and then (every third record is 25 ms early), as real topics do.
fn source_records() -> Vec<kafka_backup_common::segment::Record> {
    (0..RECORDS)
        .map(|i| {
            let value = format!("{i:>100}");
            rec(
                Some(format!("key-{i}").as_bytes()),
                Some(value.as_bytes()),
                BASE_TS + i as i64 * 10 - (i as i64 % 3) * 25,
                &[("n", Some(i.to_string().as_bytes()))],
            )
        })
        .collect()
}

fn restore(backup: &Path, topic: &str, target: &str, extra: &[&str]) -> std::process::Output {
    let state = temp_dir();
    let b = broker();
    let mut args = vec![
        "restore",
        "--storage",
        backup.to_str().expect("utf8"),
        "--backup-id",
        "bk",
        "--checkpoint-state",
        state.path().to_str().expect("utf8"),
        "--source-topic",
        topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        b.as_str(),
        "--create-topics",
    ];
    args.extend_from_slice(extra);
    kb(&args)
}

fn segment_file(backup: &Path, key: &str) -> PathBuf {
    backup.join(key)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_windowed_restore_reads_only_the_frames_it_needs() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("seek");
    create_topic(&broker(), &topic, 1).await;
    let source = produce(&broker(), &topic, 0, &source_records()).await;
    let dir = backup_local_with(
        &broker(),
        &topic,
        "bk",
        &[
            "--segment-max-records",
            "200",
            "--index-interval-bytes",
            "2000",
        ],
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("bk/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let segments = manifest["topics"][0]["partitions"][0]["segments"]
        .as_array()
        .expect("segments")
        .clone();
    assert_eq!(segments.len(), 2);
    for s in &segments {
        let frames = s["frames"]
            .as_array()
            .expect("every segment has a seek index");
        assert!(frames.len() >= 10, "{} frames", frames.len());
        let count: u64 = frames
            .iter()
            .map(|f| f["record_count"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(count, 200);
    }

    // 1. Every record, read whole (the multi-frame body is one zstd stream).
    let all = unique("seek-all");
    let o = restore(dir.path(), &topic, &all, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_records(&source, &consume_all(&broker(), &all, 0));

    // 2. A window starting at record 100, in the middle of the first segment.
    let from = BASE_TS + 100 * 10;
    let expected: Vec<_> = source
        .iter()
        .filter(|r| r.timestamp >= from)
        .cloned()
        .collect();
    let seg0 = &segments[0];
    let frames = seg0["frames"].as_array().expect("frames");
    let first_needed = frames
        .iter()
        .position(|f| f["max_timestamp"].as_i64().unwrap_or(i64::MAX) >= from)
        .expect("a frame holds the window start");
    assert!(
        first_needed >= 2,
        "the window must start past the first frames"
    );
    let path = segment_file(dir.path(), seg0["key"].as_str().expect("key"));
    let pristine = std::fs::read(&path).expect("segment");
    let byte_in = |frame: &serde_json::Value| {
        (frame["position"].as_u64().unwrap_or(0)
            + frame["compressed_len"].as_u64().unwrap_or(0) / 2) as usize
    };
    // Damage a frame wholly before the window: the windowed restore never reads it.
    let mut damaged = pristine.clone();
    damaged[byte_in(&frames[1])] ^= 0x55;
    std::fs::write(&path, &damaged).expect("write");
    let windowed = unique("seek-window");
    let from_s = from.to_string();
    let o = restore(
        dir.path(),
        &topic,
        &windowed,
        &["--from-timestamp", &from_s],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_records(&expected, &consume_all(&broker(), &windowed, 0));
    // ...while a full restore of the same damaged object is refused at that segment.
    let o = restore(dir.path(), &topic, &unique("seek-full-damaged"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    // 3. Damage the first frame the window needs: planning reads that frame to count the
    // window exactly, so the restore is refused before anything is written, naming the
    // segment and the failed check.
    let mut damaged = pristine.clone();
    damaged[byte_in(&frames[first_needed])] ^= 0x55;
    std::fs::write(&path, &damaged).expect("write");
    let failed = unique("seek-bad");
    let o = restore(dir.path(), &topic, &failed, &["--from-timestamp", &from_s]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("segment-00000000000000000000.bin.zst") && err.contains("seek index"),
        "{err}"
    );
    assert!(!topic_exists(&broker(), &failed), "nothing may be written");
}

#[tokio::test(flavor = "multi_thread")]
async fn on_s3_the_frames_are_read_with_ranged_gets() {
    if skip_without_servers() {
        return;
    }
    use kafka_backup_common::storage::BackupStore;
    let topic = unique("seek-s3");
    create_topic(&broker(), &topic, 1).await;
    let source = produce(&broker(), &topic, 0, &source_records()).await;
    let bucket = unique("kb-seek").to_lowercase();
    create_bucket(&bucket);
    let url = format!("s3://{bucket}/backups");
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .envs(s3_env())
            .output()
            .expect("run kafka-backup")
    };
    let b = broker();
    let o = run(&[
        "backup",
        "--bootstrap-servers",
        &b,
        "--topics",
        &topic,
        "--backup-id",
        "bk",
        "--storage",
        &url,
        "--segment-max-records",
        "400",
        "--index-interval-bytes",
        "2000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Damage a frame wholly before the window, in the object on S3.
    for (k, v) in s3_env() {
        std::env::set_var(k, v);
    }
    let store = BackupStore::open(&url, &std::collections::HashMap::new(), false).expect("s3");
    let manifest = store.read_manifest("bk").await.expect("manifest");
    let seg = &manifest.topics[0].partitions[0].segments[0];
    assert!(seg.frames.len() >= 20, "{} frames", seg.frames.len());
    let from = BASE_TS + 300 * 10;
    assert!(seg.frames[3].max_timestamp < from);
    let mut bytes = store.get(&seg.key).await.expect("segment").to_vec();
    bytes[(seg.frames[3].position + 7) as usize] ^= 0x20;
    store.put(&seg.key, bytes).await.expect("put");

    let target = unique("seek-s3-window");
    let from_s = from.to_string();
    let state = temp_dir();
    let o = run(&[
        "restore",
        "--storage",
        &url,
        "--backup-id",
        "bk",
        "--checkpoint-state",
        state.path().to_str().expect("utf8"),
        "--source-topic",
        &topic,
        "--target-topic",
        &target,
        "--bootstrap-servers",
        &b,
        "--create-topics",
        "--from-timestamp",
        &from_s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: Vec<_> = source
        .iter()
        .filter(|r| r.timestamp >= from)
        .cloned()
        .collect();
    assert_same_records(&expected, &consume_all(&broker(), &target, 0));
}

//! Damaged backups, one kind of damage at a time, against the real broker: the damaged
//! partition stops at the bad object with an error naming it, the other partition finishes,
//! the ledger's checkpoint is exactly the end of the last good segment, the target holds
//! exactly the records before it, and the exit code says the run failed. A manifest that does
//! not parse is refused before anything is written.

mod common;

use common::*;
use std::path::Path;

const PER_PARTITION: usize = 150; // three segments of 50 records per partition

fn segment_path(backup: &Path, topic: &str, partition: i32, start: i64) -> std::path::PathBuf {
    backup.join(format!(
        "bk/topics/{topic}/partition={partition}/segment-{start:020}.bin.zst"
    ))
}

fn restore_json(
    backup: &Path,
    state: &Path,
    topic: &str,
    target: &str,
) -> (Option<i32>, serde_json::Value, String) {
    let o = kb(&[
        "restore",
        "--storage",
        backup.to_str().expect("p"),
        "--backup-id",
        "bk",
        "--checkpoint-state",
        state.to_str().expect("p"),
        "--source-topic",
        topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        &broker(),
        "--create-topics",
        "--format",
        "json",
    ]);
    let v = serde_json::from_str(&stdout(&o)).unwrap_or(serde_json::Value::Null);
    (o.status.code(), v, stderr(&o))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_segment_damage_stops_only_its_partition_at_the_bad_object() {
    if skip_without_servers() {
        return;
    }
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 5] = [
        ("header record count", |b| b[10] ^= 0x01, "CRC32"),
        ("body byte", |b| b[40] ^= 0x80, "CRC32"),
        (
            "footer magic",
            |b| {
                let n = b.len();
                b[n - 1] ^= 0xff
            },
            "segment-",
        ),
        ("truncated", |b| b.truncate(b.len() / 2), "segment-"),
        ("missing object", |b| b.clear(), "not found"),
    ];
    for (what, damage, needle) in cases {
        let (topic, source, backup) =
            backed_up_topic("damage", 2, PER_PARTITION, 1_750_000_000_000, 3).await;
        let bad = segment_path(backup.path(), &topic, 0, 50);
        let mut bytes = std::fs::read(&bad).expect("segment");
        damage(&mut bytes);
        if bytes.is_empty() {
            std::fs::remove_file(&bad).expect("remove");
        } else {
            std::fs::write(&bad, &bytes).expect("write");
        }
        let state = temp_dir();
        let target = unique("damage-target");
        let (code, status, err) = restore_json(backup.path(), state.path(), &topic, &target);
        assert_eq!(code, Some(1), "{what}: the run must fail\n{status}\n{err}");
        assert_eq!(status["state"], "failed", "{what}: {status}");
        let tasks = status["tasks"].as_array().expect("tasks");
        let t0 = tasks
            .iter()
            .find(|t| t["source"] == format!("{topic}/0"))
            .expect("task 0");
        let t1 = tasks
            .iter()
            .find(|t| t["source"] == format!("{topic}/1"))
            .expect("task 1");
        let error = t0["error"].as_str().unwrap_or_default();
        assert_eq!(t0["state"], "failed", "{what}: {t0}");
        assert!(
            error.contains(&format!("segment-{:020}.bin.zst", 50)) && error.contains(needle),
            "{what}: the error must name the object and the damage: {error}"
        );
        assert_eq!(
            t0["source_next_offset"], 50,
            "{what}: checkpoint at the end of the last good segment: {t0}"
        );
        assert_eq!(t0["records_done"], 50, "{what}: {t0}");
        assert_eq!(t1["state"], "completed", "{what}: {t1}");
        assert_same_records(&source[0][..50], &consume_all(&broker(), &target, 0));
        assert_same_records(&source[1], &consume_all(&broker(), &target, 1));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_that_does_not_parse_is_refused_before_any_write() {
    if skip_without_servers() {
        return;
    }
    let (topic, _, backup) = backed_up_topic("bad-manifest", 1, 20, 1_750_000_000_000, 3).await;
    let manifest = backup.path().join("bk/manifest.json");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, &text[..text.len() / 2]).expect("truncate");
    let state = temp_dir();
    let target = unique("bad-manifest-target");
    let (code, _, err) = restore_json(backup.path(), state.path(), &topic, &target);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("manifest") && err.contains("bk"), "{err}");
    assert!(!topic_exists(&broker(), &target), "nothing may be created");
}

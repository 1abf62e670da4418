//! Exact offset mapping: a backup whose source offsets have gaps (as after compaction or a
//! deleted head), restored with a time window, and a consumer group committed mid-partition:
//! the translated target offset points at exactly the record the group would have read next.

mod common;

use common::*;
use kafka_backup_common::manifest::{
    segment_key, GroupOffset, Manifest, PartitionManifest, TopicManifest,
};
use kafka_backup_common::segment::{encode_segment, Compression, Record};
use kafka_backup_common::storage::BackupStore;
use std::collections::HashMap;

const TS: i64 = 1_730_000_000_000;

/// Writes a backup of one topic whose offsets are 100.. with every third offset missing,
/// and a group `g` committed at `committed`.
async fn gapped_backup(
    dir: &std::path::Path,
    topic: &str,
    committed: &[(&str, i64)],
) -> Vec<Record> {
    let store = BackupStore::open(dir.to_str().expect("p"), &HashMap::new(), true).expect("store");
    let records: Vec<Record> = (0..90)
        .map(|i| 100 + i)
        .filter(|o| o % 3 != 0)
        .map(|o| {
            let mut r = rec(
                Some(format!("k{o}").as_bytes()),
                Some(format!("v{o}").as_bytes()),
                TS + o,
                &[],
            );
            r.offset = o;
            r
        })
        .collect();
    let mut segments = Vec::new();
    for chunk in records.chunks(20) {
        let key = segment_key("gapped", topic, 0, chunk[0].offset);
        let bytes = encode_segment(chunk, Compression::Zstd, 3);
        segments.push(segment_meta(key.clone(), chunk, bytes.len()));
        store.put(&key, bytes).await.expect("put");
    }
    let manifest = Manifest {
        backup_id: "gapped".into(),
        created_at: TS,
        source_cluster_id: None,
        source_brokers: None,
        compression: Some("zstd".into()),
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
        consumer_group_offsets: committed
            .iter()
            .map(|(g, o)| GroupOffset {
                group: g.to_string(),
                topic: topic.to_string(),
                partition: 0,
                offset: *o,
            })
            .collect(),
    };
    store.write_manifest(&manifest).await.expect("manifest");
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_translate_exactly_across_gaps_and_a_time_window() {
    if skip_without_servers() {
        return;
    }
    let dir = temp_dir();
    let topic = unique("gapped");
    // g-mid committed 140 (a present offset), g-gap committed 141 (a missing offset, next is 142),
    // g-early committed before the window, g-done past the end.
    // Group names are unique per run: the SQLite broker cannot describe a known group, and
    // the reset below refuses groups it cannot prove inactive.
    let (g_mid, g_gap) = (format!("g-mid-{topic}"), format!("g-gap-{topic}"));
    let groups = [
        (g_mid.as_str(), 140),
        (g_gap.as_str(), 141),
        ("g-early", 101),
        ("g-done", 500),
    ];
    let source = gapped_backup(dir.path(), &topic, &groups).await;
    let target = unique("gapped-target");
    create_topic(&broker(), &target, 1).await;
    // Something already in the target: restored records do not start at offset 0.
    produce(&broker(), &target, 0, &simple_records(7, TS, 1)).await;
    let state = temp_dir();
    let report = state.path().join("offsets.json");
    let from = (TS + 120).to_string();
    let b = broker();
    // The same restore every time: rerunning it resumes the completed plan.
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--storage",
            dir.path().to_str().expect("p"),
            "--backup-id",
            "gapped",
            "--checkpoint-state",
            state.path().to_str().expect("p"),
            "--source-topic",
            &topic,
            "--target-topic",
            &target,
            "--bootstrap-servers",
            &b,
            "--from-timestamp",
            &from,
        ];
        args.extend_from_slice(extra);
        kb_ok(&args)
    };
    restore(&["--offset-report", report.to_str().expect("p")]);
    let restored: Vec<&Record> = source.iter().filter(|r| r.timestamp >= TS + 120).collect();
    let target_records = consume_all(&broker(), &target, 0);
    assert_eq!(target_records.len(), 7 + restored.len());

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    let shown: serde_json::Value = serde_json::from_str(&kb_ok(&[
        "show-offset-mapping",
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--backup-id",
        "gapped",
        "--format",
        "json",
    ]))
    .expect("json");
    assert_eq!(v, shown, "the report file and show-offset-mapping agree");
    let runs = v["partitions"][format!("{topic}/0")]["runs"]
        .as_array()
        .expect("runs")
        .clone();
    assert!(
        runs.len() > 1,
        "gaps in the source give several runs: {runs:?}"
    );

    let target_of = |group: &str| {
        v["consumer_groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["group"] == group)
            .and_then(|g| g["target_offset"].as_i64())
            .unwrap_or_else(|| panic!("no translation for {group}: {v}"))
    };
    let record_at = |offset: i64| target_records.iter().find(|r| r.offset == offset).cloned();
    let source_at = |offset: i64| {
        source
            .iter()
            .find(|r| r.offset >= offset)
            .cloned()
            .expect("source record")
    };
    for (group, committed) in [(g_mid.as_str(), 140), (g_gap.as_str(), 141)] {
        let t = target_of(group);
        let got = record_at(t).unwrap_or_else(|| panic!("{group}: no target record at {t}"));
        assert!(
            same_content(&got, &source_at(committed)),
            "{group}: target {t} holds {got:?}"
        );
    }
    // Committed before the window: the first restored record.
    assert!(same_content(
        &record_at(target_of("g-early")).expect("first"),
        restored[0]
    ));
    // Committed past everything: the end of the target partition.
    assert_eq!(
        target_of("g-done"),
        target_records.last().map_or(0, |r| r.offset + 1)
    );

    // Timestamp lookup on the target (PRD §8.3): the restored record with source offset 140
    // carries timestamp TS + 140.
    let offset_at = |ts: i64| -> serde_json::Value {
        let ts = ts.to_string();
        let out = kb_ok(&[
            "offset-for-timestamp",
            "--bootstrap-servers",
            &broker(),
            "--topic",
            &target,
            "--partition",
            "0",
            "--timestamp",
            &ts,
            "--format",
            "json",
        ]);
        serde_json::from_str(&out).expect("json")
    };
    assert_eq!(
        offset_at(TS + 140)["offset"].as_i64(),
        Some(target_of(&g_mid))
    );
    // After the last record there is none: -1, not an offset that holds an earlier record.
    let out = offset_at(TS + 1_000_000);
    assert_eq!(out["offset"].as_i64(), Some(-1), "{out}");

    // The same restore again with consent: no record is written twice, and a consumer of each
    // group on the target starts at exactly the record after its source commit.
    let end = end_offset(&broker(), &target, 0);
    let groups_arg = format!("{g_mid},{g_gap}");
    restore(&["--reset-consumer-offsets", "--consumer-group", &groups_arg]);
    assert_eq!(end_offset(&broker(), &target, 0), end);
    for (group, committed) in [(g_mid.as_str(), 140), (g_gap.as_str(), 141)] {
        let first = first_records_of_group(&broker(), group, &target, 1)[&0].clone();
        assert!(
            same_content(&first, &source_at(committed)),
            "{group} starts at {first:?}"
        );
    }
}

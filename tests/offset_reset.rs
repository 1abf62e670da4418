//! `--reset-consumer-offsets` against real brokers: a group committed mid-partition on the
//! source is backed up, restored with a time window to a new topic on a second cluster whose
//! partitions already hold records, and reset with each strategy; a consumer of that group on
//! the target then receives first exactly the record the group would have read next on the
//! source, on every partition. Consent and active-member refusals write nothing.

mod common;

use common::*;
use kafka_backup_common::groups;
use kafka_backup_common::segment::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TS: i64 = 1_740_000_000_000;
const PARTITIONS: i32 = 3;
const PER_PARTITION: usize = 40;
/// Committed (next-to-read) offsets of every test group on the source, per partition.
const COMMITTED: [i64; 3] = [17, 25, 33];

/// Commits `offsets[p]` for `group` on every partition of `topic` (a simple commit).
fn commit(bootstrap: &str, group: &str, topic: &str, offsets: &[i64]) {
    let list: Vec<groups::PartitionOffset> = offsets
        .iter()
        .enumerate()
        .map(|(p, o)| groups::PartitionOffset {
            topic: topic.to_string(),
            partition: p as i32,
            offset: *o,
        })
        .collect();
    groups::commit_offsets(bootstrap, &BTreeMap::new(), group, &list).expect("commit");
}

fn committed(bootstrap: &str, group: &str, topic: &str) -> Vec<i64> {
    let parts: Vec<(String, i32)> = (0..PARTITIONS).map(|p| (topic.to_string(), p)).collect();
    groups::committed_offsets(
        bootstrap,
        &BTreeMap::new(),
        group,
        &parts,
        Duration::from_secs(10),
    )
    .expect("committed")
    .into_iter()
    .map(|o| o.offset)
    .collect()
}

struct Source {
    topic: String,
    records: Vec<Vec<Record>>,
    backup: tempfile::TempDir,
}

/// A 3-partition topic with distinct increasing timestamps, the given groups committed at
/// COMMITTED, backed up with their offsets.
async fn source_with_groups(groups: &[&str]) -> Source {
    let topic = unique("reset-src");
    create_topic(&broker(), &topic, PARTITIONS).await;
    let mut records = Vec::new();
    for p in 0..PARTITIONS {
        let recs = simple_records(PER_PARTITION, TS + p as i64, 10);
        records.push(produce(&broker(), &topic, p, &recs).await);
    }
    for g in groups {
        commit(&broker(), g, &topic, &COMMITTED);
    }
    let backup = temp_dir();
    kb_ok(&[
        "backup",
        "--bootstrap-servers",
        &broker(),
        "--topics",
        &topic,
        "--backup-id",
        "bk",
        "--storage",
        backup.path().to_str().expect("p"),
        "--segment-max-records",
        "15",
        "--consumer-groups",
        &groups.join(","),
    ]);
    Source {
        topic,
        records,
        backup,
    }
}

/// A target topic on the second cluster whose partitions already hold 5 records each, so
/// restored offsets differ from source offsets.
async fn prefilled_target() -> String {
    let target = unique("reset-dst");
    create_topic(&broker2(), &target, PARTITIONS).await;
    for p in 0..PARTITIONS {
        produce(
            &broker2(),
            &target,
            p,
            &simple_records(5, TS - 1_000_000, 1),
        )
        .await;
    }
    target
}

fn restore_args<'a>(src: &'a Source, target: &'a str, b2: &'a str, from: &'a str) -> Vec<&'a str> {
    vec![
        "restore",
        "--storage",
        src.backup.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--source-topic",
        &src.topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        b2,
        // The window cuts each partition's head: restored source offsets start at 5.
        "--from-timestamp",
        from,
    ]
}

fn expected_first(src: &Source, p: i32) -> &Record {
    &src.records[p as usize][COMMITTED[p as usize] as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_strategy_resets_a_group_to_exactly_the_next_record() {
    if skip_without_servers() {
        return;
    }
    let strategies = ["exact", "header-based", "cluster-scan", "timestamp-based"];
    let group_of = |s: &str| format!("reset-{s}-{}", std::process::id());
    let names: Vec<String> = strategies.iter().map(|s| group_of(s)).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let src = source_with_groups(&refs).await;
    let b2 = broker2();
    let from = (TS + 50).to_string();
    for strategy in strategies {
        let group = group_of(strategy);
        let target = prefilled_target().await;
        let state = temp_dir();
        let mut args = restore_args(&src, &target, &b2, &from);
        args.extend([
            "--checkpoint-state",
            state.path().to_str().expect("p"),
            "--reset-consumer-offsets",
            "--consumer-group",
            &group,
            "--offset-strategy",
            strategy,
            "--format",
            "json",
        ]);
        if strategy == "header-based" || strategy == "cluster-scan" {
            args.push("--add-original-offset-headers");
        }
        let out: serde_json::Value = serde_json::from_str(&kb_ok(&args)).expect("json");
        assert_eq!(out["state"], "completed", "{out}");
        assert_eq!(out["consumer_offset_reset"]["written"], true, "{out}");
        assert_eq!(out["consumer_offset_reset"]["strategy"], strategy);

        let first = first_records_of_group(&b2, &group, &target, PARTITIONS);
        for p in 0..PARTITIONS {
            let want = expected_first(&src, p);
            let got = &first[&p];
            assert_eq!(
                (&got.key, &got.value, got.timestamp),
                (&want.key, &want.value, want.timestamp),
                "{strategy}: partition {p}: the group's first record on the target is not the one after its source commit"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_shows_the_offsets_and_writes_none() {
    if skip_without_servers() {
        return;
    }
    let group = format!("reset-dry-{}", std::process::id());
    let src = source_with_groups(&[&group]).await;
    let b2 = broker2();
    let from = (TS + 50).to_string();
    let target = prefilled_target().await;
    let state = temp_dir();
    let st = state.path().to_str().expect("p").to_string();
    let base: Vec<String> = restore_args(&src, &target, &b2, &from)
        .into_iter()
        .map(String::from)
        .chain(["--checkpoint-state".to_string(), st.clone()])
        .collect();
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .cloned()
            .chain(extra.iter().map(|e| e.to_string()))
            .collect()
    };
    let run_ok = |args: Vec<String>| kb_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Before the restore: the groups and their source offsets, targets not known yet.
    let dry = |extra: &[&str]| -> serde_json::Value {
        let mut a = with(&[
            "--dry-run",
            "--reset-consumer-offsets",
            "--consumer-group",
            &group,
            "--format",
            "json",
        ]);
        a.extend(extra.iter().map(|e| e.to_string()));
        serde_json::from_str(&run_ok(a)).expect("json")
    };
    let before = dry(&[]);
    let rows = before["consumer_offset_reset"]["offsets"]
        .as_array()
        .expect("rows")
        .clone();
    assert_eq!(rows.len(), PARTITIONS as usize, "{before}");
    assert!(rows.iter().all(|r| r["target_offset"] == -1), "{before}");
    assert_eq!(before["consumer_offset_reset"]["written"], false);

    // The restore itself, without consent: no group offset anywhere.
    run_ok(with(&[]));
    assert_eq!(
        committed(&b2, &group, &target),
        vec![-1; PARTITIONS as usize]
    );

    // Dry run after the restore: the exact offsets that would be written, still none written.
    let after = dry(&[]);
    for row in after["consumer_offset_reset"]["offsets"]
        .as_array()
        .expect("rows")
    {
        let p: i32 = row["target"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .and_then(|p| p.parse().ok())
            .expect("partition");
        let records = consume_all(&b2, &target, p);
        let at = records
            .iter()
            .find(|r| Some(r.offset) == row["target_offset"].as_i64())
            .unwrap_or_else(|| panic!("no target record at {row}"));
        assert!(same_content(at, expected_first(&src, p)), "{row}");
    }
    assert_eq!(
        committed(&b2, &group, &target),
        vec![-1; PARTITIONS as usize]
    );

    // Consent on the rerun: the completed restore is not written again, the offsets are.
    let end_before: Vec<i64> = (0..PARTITIONS)
        .map(|p| end_offset(&b2, &target, p))
        .collect();
    run_ok(with(&[
        "--reset-consumer-offsets",
        "--consumer-group",
        &group,
    ]));
    let end_after: Vec<i64> = (0..PARTITIONS)
        .map(|p| end_offset(&b2, &target, p))
        .collect();
    assert_eq!(end_before, end_after, "the rerun wrote records again");
    let want: Vec<i64> = after["consumer_offset_reset"]["offsets"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["target_offset"].as_i64().expect("offset"))
        .collect();
    let mut got = committed(&b2, &group, &target);
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
}

#[tokio::test(flavor = "multi_thread")]
async fn resets_without_consent_or_for_unknown_groups_are_refused_before_any_write() {
    if skip_without_servers() {
        return;
    }
    let group = format!("reset-refused-{}", std::process::id());
    let src = source_with_groups(&[&group]).await;
    let b2 = broker2();
    let from = (TS + 50).to_string();
    let target = unique("reset-refused-dst");
    let state = temp_dir();
    let st = state.path().to_str().expect("p").to_string();
    let run = |extra: &[&str], needle: &str| {
        let mut a = restore_args(&src, &target, &b2, &from);
        a.extend(["--checkpoint-state", st.as_str(), "--create-topics"]);
        a.extend(extra);
        kb_err(&a, needle);
    };
    run(
        &["--consumer-group", &group],
        "--reset-consumer-offsets was not given",
    );
    run(&["--reset-consumer-offsets"], "needs --consumer-group");
    run(
        &[
            "--reset-consumer-offsets",
            "--consumer-group",
            "never-backed-up",
        ],
        "has no committed offsets",
    );
    run(
        &[
            "--reset-consumer-offsets",
            "--consumer-group",
            &group,
            "--offset-strategy",
            "header-based",
        ],
        "--add-original-offset-headers",
    );
    run(
        &[
            "--reset-consumer-offsets",
            "--consumer-group",
            &group,
            "--offset-strategy",
            "nearest",
        ],
        "invalid --offset-strategy",
    );
    run(
        &[
            "--reset-consumer-offsets",
            "--consumer-group",
            &group,
            "--consumer-group-strategy",
            "manual",
        ],
        "never writes them",
    );
    run(
        &["--consumer-group-strategy", "manual"],
        "give --offset-report",
    );
    run(
        &["--offset-strategy", "exact"],
        "only applies to --reset-consumer-offsets",
    );
    assert!(
        !topic_exists(&b2, &target),
        "a refused restore created the target topic"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_with_active_members_is_refused_and_nothing_is_written() {
    if skip_without_servers() {
        return;
    }
    let group = format!("reset-active-{}", std::process::id());
    let src = source_with_groups(&[&group]).await;
    // The target is a broker whose group coordinator answers DescribeGroups (see
    // scripts/test-env.sh); a member of the group is consuming another topic there.
    let mem = broker_mem();
    let busy = unique("reset-busy");
    create_topic(&mem, &busy, 1).await;
    produce(&mem, &busy, 0, &simple_records(3, TS, 1)).await;
    let member: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &mem)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    member.subscribe(&[&busy]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(member.poll(Duration::from_millis(200)), Some(Ok(_))) {
        assert!(Instant::now() < deadline, "the member never got a record");
    }
    let target = unique("reset-active-dst");
    let state = temp_dir();
    let from = (TS + 50).to_string();
    let mut args = restore_args(&src, &target, &mem, &from);
    args.extend([
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--create-topics",
        "--reset-consumer-offsets",
        "--consumer-group",
        &group,
    ]);
    let err = kb_err(&args, "is active (state Stable");
    assert!(
        err.contains(&group) && err.contains("no offset was written"),
        "{err}"
    );
    assert!(
        !topic_exists(&mem, &target),
        "the refused restore created the target topic"
    );
    // Once the member has left, the same command is allowed past the check.
    drop(member);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = groups::describe(
            &mem,
            &BTreeMap::new(),
            std::slice::from_ref(&group),
            Duration::from_secs(5),
        )
        .expect("describe");
        if d[0].is_inactive() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never became empty: {d:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

//! N:1 and M:N partition mappings against the real test brokers: four source partitions
//! merged 2:1 into two target partitions and 3:1 into one, each target partition holding
//! exactly the merged sequence (records in (timestamp, source partition) order, every
//! source's own order kept — one source goes back in time); an embedded restore killed
//! (kill -9) mid-merge and rerun still writes every record once; a consumer group committed on
//! the source is reset on the target through the merge; a worker process holding merge tasks
//! is killed (kill -9) and another takes them over exactly.

mod common;

use common::*;
use kafka_backup_common::groups;
use kafka_backup_common::segment::Record;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BASE_TS: i64 = 1_730_000_000_000;
/// Committed offsets of the test group on source partitions 0..4.
const COMMITTED: [i64; 4] = [10, 25, 7, 40];

/// Partition p, record i: timestamps interleave across partitions; 0 and 1 tie on every
/// record; partition 2 jumps back in time half-way.
fn source_records(p: i32, n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let shift = [0, 0, 5, 3][p as usize];
            let ts = if p == 2 && i == n / 2 {
                BASE_TS
            } else {
                BASE_TS + i as i64 * 10 + shift
            };
            rec(
                Some(format!("k{}", i % 7).as_bytes()),
                Some(format!("p{p}-{i}").as_bytes()),
                ts,
                &[("src", Some(p.to_string().as_bytes()))],
            )
        })
        .collect()
}

/// The merged sequence, computed independently of the worker: repeatedly the head with the
/// smallest (timestamp, partition).
fn merged(sources: &[(i32, &[Record])]) -> Vec<(i32, Record)> {
    let mut pos = vec![0usize; sources.len()];
    let mut out = Vec::new();
    loop {
        let pick = sources
            .iter()
            .enumerate()
            .filter_map(|(i, (p, recs))| recs.get(pos[i]).map(|r| ((r.timestamp, *p), i)))
            .min();
        let Some((_, i)) = pick else { return out };
        out.push((sources[i].0, sources[i].1[pos[i]].clone()));
        pos[i] += 1;
    }
}

struct Source {
    topic: String,
    records: Vec<Vec<Record>>,
    backup: tempfile::TempDir,
    group: String,
}

/// A 4-partition topic on `bootstrap` with a group committed at COMMITTED, backed up.
async fn source(bootstrap: &str, name: &str, per_partition: usize) -> Source {
    let topic = unique(name);
    create_topic(bootstrap, &topic, 4).await;
    let mut records = Vec::new();
    for p in 0..4 {
        records.push(produce(bootstrap, &topic, p, &source_records(p, per_partition)).await);
    }
    let group = unique("merge-group");
    let offsets: Vec<groups::PartitionOffset> = COMMITTED
        .iter()
        .enumerate()
        .map(|(p, o)| groups::PartitionOffset {
            topic: topic.clone(),
            partition: p as i32,
            offset: *o,
        })
        .collect();
    groups::commit_offsets(bootstrap, &BTreeMap::new(), &group, &offsets).expect("commit");
    let backup = backup_local_with(
        bootstrap,
        &topic,
        "bk",
        &["--segment-max-records", "50", "--consumer-groups", &group],
    );
    Source {
        topic,
        records,
        backup,
        group,
    }
}

fn restore_args<'a>(
    src: &'a Source,
    target: &'a str,
    bootstrap: &'a str,
    state: &'a str,
) -> Vec<&'a str> {
    vec![
        "restore",
        "--storage",
        src.backup.path().to_str().expect("utf8"),
        "--backup-id",
        "bk",
        "--source-topic",
        &src.topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        bootstrap,
        "--create-topics",
        "--checkpoint-state",
        state,
    ]
}

/// The target partition holds exactly `want` (content and order).
fn assert_partition(bootstrap: &str, topic: &str, partition: i32, want: &[(i32, Record)]) {
    let got = consume_all(bootstrap, topic, partition);
    let want: Vec<Record> = want.iter().map(|(_, r)| r.clone()).collect();
    assert_same_records(&want, &got);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_to_one_merges_in_order_and_resets_a_group_through_the_merge() {
    if skip_without_servers() {
        return;
    }
    let src = source(&broker(), "merge-2to1", 60).await;
    let b2 = broker2();
    let target = unique("merge-2to1-target");
    let state = temp_dir();
    let state_path = state.path().to_str().expect("utf8").to_string();
    let mut args = restore_args(&src, &target, &b2, &state_path);
    args.extend(["--partition-mapping", "0:0,1:0,2:1,3:1"]);

    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = kb_ok(&dry);
    assert!(
        out.contains(&format!("{}/0+1 → {target}/0: 120 records", src.topic)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{}/2+3 → {target}/1", src.topic)),
        "{out}"
    );
    assert!(out.contains("merged by timestamp"), "{out}");
    assert!(
        out.contains("2 partitions"),
        "the merge fills two target partitions: {out}"
    );

    args.extend(["--reset-consumer-offsets", "--consumer-group", &src.group]);
    kb_ok(&args);
    let r = &src.records;
    let first = merged(&[(0, &r[0]), (1, &r[1])]);
    let second = merged(&[(2, &r[2]), (3, &r[3])]);
    assert_partition(&b2, &target, 0, &first);
    assert_partition(&b2, &target, 1, &second);

    // The group's offset on each target partition: the earliest place, in the merged
    // sequence, of the records its sources would have read next.
    let place = |seq: &[(i32, Record)], p: i32| {
        seq.iter()
            .position(|(sp, rec)| *sp == p && rec.offset == COMMITTED[p as usize])
            .expect("committed record restored") as i64
    };
    let want = [
        place(&first, 0).min(place(&first, 1)),
        place(&second, 2).min(place(&second, 3)),
    ];
    let parts = vec![(target.clone(), 0), (target.clone(), 1)];
    let got: Vec<i64> = groups::committed_offsets(
        &b2,
        &BTreeMap::new(),
        &src.group,
        &parts,
        Duration::from_secs(10),
    )
    .expect("committed")
    .into_iter()
    .map(|o| o.offset)
    .collect();
    assert_eq!(got, want.to_vec(), "group offsets through the merge");
}

#[tokio::test(flavor = "multi_thread")]
async fn three_to_one_survives_a_kill_mid_merge() {
    if skip_without_servers() {
        return;
    }
    // Killed producers can make tansu panic, and 2,100 records would slow the shared broker
    // for every later test: a broker of this test's own, kept up.
    let mut own = RestartingBroker::start();
    let b = own.addr();
    let src = source(&b, "merge-3to1", 300).await;
    let target = unique("merge-3to1-target");
    let state = temp_dir();
    let state_path = state.path().to_str().expect("utf8").to_string();
    let mut args = restore_args(&src, &target, &b, &state_path);
    args.extend([
        "--partition-mapping",
        "0:0,1:0,2:0,3:1",
        "--checkpoint-interval",
        "100ms",
        "--max-records-per-sec",
        "300",
    ]);
    kill_mid_restore_and_rerun(
        &args,
        &state.path().join("restore.log"),
        &mut own,
        (&target, 0),
        360,
    )
    .await;
    let r = &src.records;
    assert_partition(
        &b,
        &target,
        0,
        &merged(&[(0, &r[0]), (1, &r[1]), (2, &r[2])]),
    );
    assert_partition(&b, &target, 1, &merged(&[(3, &r[3])]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_merge_is_taken_over_exactly() {
    if skip_without_servers() {
        return;
    }
    let mut own = RestartingBroker::start();
    let b = own.addr();
    let src = source(&b, "merge-takeover", 300).await;
    let target = unique("merge-takeover-target");
    let state = temp_dir();
    let (_coordinator, url, _) =
        spawn_coordinator(state.path(), &["--lease-ttl", "4s", "--lease-grace", "1s"]);
    let worker = |id: &str| {
        spawn_logged(
            &["worker", "--coordinator", &url, "--worker-id", id],
            &state.path().join(format!("{id}.log")),
        )
    };
    let mut first = worker("first");
    let plan = submit_detached_to(
        &url,
        &b,
        src.backup.path(),
        &src.topic,
        &target,
        &[
            "--partition-mapping",
            "0:0,1:0,2:1,3:1",
            "--max-records-per-sec",
            "300",
        ],
    );
    // Kill the first worker (kill -9) once both merge tasks are well under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = plan_status(&url, &plan).await;
        let going = st.as_ref().is_some_and(|s| {
            s.tasks.len() == 2
                && s.tasks
                    .iter()
                    .all(|t| t.worker_id == "first" && t.records_done >= 150)
        });
        if going {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the merge never got going: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill().expect("kill -9");
    let _ = first.wait();
    let _second = Killed(worker("second"));
    let done = loop {
        own.keep_up();
        let st = plan_status(&url, &plan).await.expect("status");
        if st.state == "completed" {
            break st;
        }
        assert!(st.state != "failed", "{st:?}");
        assert!(
            Instant::now() < deadline + Duration::from_secs(90),
            "not finished after the takeover: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done
        .tasks
        .iter()
        .all(|t| t.worker_id.is_empty() || t.worker_id == "second"));
    let r = &src.records;
    assert_partition(&b, &target, 0, &merged(&[(0, &r[0]), (1, &r[1])]));
    assert_partition(&b, &target, 1, &merged(&[(2, &r[2]), (3, &r[3])]));
}

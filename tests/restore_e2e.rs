//! End-to-end restores through the embedded coordinator and workers against tansu: the five
//! restore use cases (disaster recovery, point in time, cloning, migration, partition
//! level), PITR boundaries, dry runs and every refused input. Each test consumes the
//! target and compares key, value, headers, timestamp and order with the source records.

mod common;

use common::*;
use kafka_backup_common::segment::Record;

const BASE_TS: i64 = 1_700_000_000_000;

struct Fixture {
    topic: String,
    backup: tempfile::TempDir,
    state: tempfile::TempDir,
    /// Source records per partition, with their source offsets.
    source: Vec<Vec<Record>>,
}

impl Fixture {
    fn storage(&self) -> &str {
        self.backup.path().to_str().expect("utf8")
    }
    fn state(&self) -> &str {
        self.state.path().to_str().expect("utf8")
    }
    /// `restore` with the common flags plus `extra`.
    fn restore_args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        self.restore_args_at(self.state(), extra)
    }
    /// `restore` of the fixture's topic into `target` on `bootstrap`, created if missing,
    /// plus `extra`.
    fn restore_into_args<'a>(
        &'a self,
        target: &'a str,
        bootstrap: &'a str,
        extra: &[&'a str],
    ) -> Vec<&'a str> {
        let mut v = vec![
            "--source-topic",
            &self.topic,
            "--target-topic",
            target,
            "--bootstrap-servers",
            bootstrap,
            "--create-topics",
        ];
        v.extend_from_slice(extra);
        self.restore_args(&v)
    }
    /// The key of the fixture's segment of `partition` starting at `offset`.
    fn segment_key(&self, partition: i32, offset: i64) -> String {
        format!(
            "bk/topics/{}/partition={partition}/segment-{offset:020}.bin.zst",
            self.topic
        )
    }
    /// Damages a segment object in place: one body byte flipped (its CRC32 no longer holds).
    fn damage(&self, key: &str) {
        let path = self.backup.path().join(key);
        let mut bytes = std::fs::read(&path).expect("segment file");
        bytes[40] ^= 0x55;
        std::fs::write(&path, bytes).expect("write");
    }
    /// Deletes a segment object.
    fn remove(&self, key: &str) {
        std::fs::remove_file(self.backup.path().join(key)).expect("remove");
    }
    /// The same with the ledger in `state`.
    fn restore_args_at<'a>(&'a self, state: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec![
            "restore",
            "--storage",
            self.storage(),
            "--backup-id",
            "bk",
            "--checkpoint-state",
            state,
            "--checkpoint-interval",
            "200ms",
        ];
        v.extend_from_slice(extra);
        v
    }
}

/// A topic with `partitions` partitions of `per_partition` records each (timestamps
/// BASE_TS + partition + 10*i), backed up with small segments.
async fn fixture(name: &str, partitions: i32, per_partition: usize) -> Fixture {
    fixture_on(&broker(), name, partitions, per_partition).await
}

/// `fixture` with its source topic on the broker at `bootstrap`.
async fn fixture_on(bootstrap: &str, name: &str, partitions: i32, per_partition: usize) -> Fixture {
    let topic = unique(name);
    create_topic(bootstrap, &topic, partitions).await;
    let mut source = Vec::new();
    for p in 0..partitions {
        let recs = simple_records(per_partition, BASE_TS + p as i64, 10);
        source.push(produce(bootstrap, &topic, p, &recs).await);
    }
    let backup = backup_local(bootstrap, &topic, "bk");
    Fixture {
        topic,
        backup,
        state: temp_dir(),
        source,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn use_case_1_same_cluster_disaster_recovery() {
    if skip_without_servers() {
        return;
    }
    // A broker of the test's own: tansu 0.6's SQLite engine has panicked once (of many CI
    // runs) serving a Fetch of a topic deleted and created again under the same name
    // ("more or less than one row" in its offset stage), and then serves nothing. On the
    // shared broker that took every later test with it; here only this scenario is run again,
    // on a fresh broker, and only when the broker's log shows that panic.
    for attempt in 1..=2 {
        let dir = temp_dir();
        let port = free_port();
        let tansu = start_tansu(dir.path(), port, "dr.db");
        let bootstrap = format!("127.0.0.1:{port}");
        let outcome = tokio::spawn(same_cluster_disaster_recovery(bootstrap)).await;
        drop(tansu);
        match outcome {
            Ok(()) => return,
            Err(e) if attempt == 1 && tansu_panicked(&dir.path().join("tansu.log"), 0) => {
                eprintln!(
                    "tansu panicked during the scenario ({e}); running it again on a fresh broker"
                );
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Use case 1 against the broker at `bootstrap`: the topic is lost and restored under its own
/// name on the same cluster.
async fn same_cluster_disaster_recovery(bootstrap: String) {
    let f = fixture_on(&bootstrap, "orders-dr", 3, 120).await;
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin");
    admin
        .delete_topics(&[&f.topic], &rdkafka::admin::AdminOptions::new())
        .await
        .expect("delete topic");
    for _ in 0..50 {
        if !topic_exists(&bootstrap, &f.topic) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = kb_ok(&f.restore_args(&[
        "--source-topic",
        &f.topic,
        "--target-topic",
        &f.topic,
        "--target-cluster",
        &bootstrap,
        "--consumer-group-strategy",
        "skip",
        "--create-topics",
    ]));
    assert!(out.contains("completed"), "{out}");
    for p in 0..3 {
        let got = consume_all(&bootstrap, &f.topic, p);
        assert_same_records(&f.source[p as usize], &got);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn use_case_2_point_in_time_restore_is_inclusive_to_the_millisecond() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("tx-pitr", 2, 150).await;
    // Partition 0 timestamps are BASE_TS + 10*i; choose boundaries exactly on records.
    let from = BASE_TS + 10 * 37; // record 37 of partition 0 is included
    let to = BASE_TS + 10 * 111 + 1; // record 111 of partition 1 (BASE_TS + 1 + 10*111) is included
    let expected = |p: usize| -> Vec<Record> {
        f.source[p]
            .iter()
            .filter(|r| r.timestamp >= from && r.timestamp <= to)
            .cloned()
            .collect()
    };
    assert_eq!(expected(0).first().map(|r| r.timestamp), Some(from));
    assert_eq!(expected(1).last().map(|r| r.timestamp), Some(to));
    let target = unique("tx-recovered");
    let from_s = from.to_string();
    let to_s = to.to_string();
    let window = [
        "--from-timestamp",
        from_s.as_str(),
        "--to-timestamp",
        to_s.as_str(),
    ];
    // Planned here with no ledger: the state dir it names does not exist and stays so.
    let no_ledger = f.state.path().join("not-yet");
    let mut dry = vec![
        "--source-topic",
        f.topic.as_str(),
        "--target-topic",
        target.as_str(),
        "--bootstrap-servers",
        broker().leak(),
        "--create-topics",
        "--dry-run",
        "--format",
        "json",
    ];
    dry.extend_from_slice(&window);
    let dry = f.restore_args_at(no_ledger.to_str().expect("utf8"), &dry);
    let report: serde_json::Value = serde_json::from_str(&kb_ok(&dry)).expect("json");
    let want_total = expected(0).len() + expected(1).len();
    assert_eq!(
        report["records"], want_total as u64,
        "dry run counts exactly what will be restored"
    );
    for t in report["tasks"].as_array().expect("tasks") {
        assert_eq!(
            t["target_start_offset"], 0,
            "a topic the restore creates starts at offset 0: {t}"
        );
    }
    assert!(!topic_exists(&broker(), &target), "dry run created nothing");
    assert!(!no_ledger.exists(), "a dry run creates no ledger");

    let mut run = vec![
        "--source-topic",
        f.topic.as_str(),
        "--target-topic",
        target.as_str(),
        "--bootstrap-servers",
        broker().leak(),
        "--create-topics",
    ];
    run.extend_from_slice(&window);
    kb_ok(&f.restore_args(&run));
    for p in 0..2 {
        assert_same_records(&expected(p), &consume_all(&broker(), &target, p as i32));
    }

    // One millisecond later on each side drops exactly the boundary records.
    let target2 = unique("tx-recovered-narrow");
    let (from2, to2) = ((from + 1).to_string(), (to - 1).to_string());
    kb_ok(&f.restore_args(&[
        "--source-topic",
        &f.topic,
        "--target-topic",
        &target2,
        "--bootstrap-servers",
        &broker(),
        "--create-topics",
        "--from-timestamp",
        &from2,
        "--to-timestamp",
        &to2,
    ]));
    let p0 = consume_all(&broker(), &target2, 0);
    let p1 = consume_all(&broker(), &target2, 1);
    assert_eq!(p0.len() + p1.len(), want_total - 2);
    assert!(p0.iter().all(|r| r.timestamp > from));
    assert!(p1.iter().all(|r| r.timestamp < to));
}

#[tokio::test(flavor = "multi_thread")]
async fn time_window_outside_the_backup_restores_nothing_and_says_so() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("pitr-empty", 1, 40).await;
    let target = unique("pitr-empty-target");
    create_topic(&broker(), &target, 1).await;
    let out = kb_ok(&f.restore_args(&[
        "--source-topic",
        &f.topic,
        "--target-topic",
        &target,
        "--bootstrap-servers",
        &broker(),
        "--from-timestamp",
        "2020-01-01T00:00:00Z",
        "--to-timestamp",
        "2020-01-02T00:00:00Z",
    ]));
    assert!(out.contains("0 records will be restored"), "{out}");
    assert_eq!(end_offset(&broker(), &target, 0), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn use_case_3_environment_cloning_with_explicit_target_names() {
    if skip_without_servers() {
        return;
    }
    let a = fixture("clone-orders", 1, 60).await;
    // A second topic in the same backup: back both up together.
    let second = unique("clone-payments");
    create_topic(&broker(), &second, 2).await;
    let mut second_src = Vec::new();
    for p in 0..2 {
        second_src.push(produce(&broker(), &second, p, &simple_records(45, BASE_TS + 5, 7)).await);
    }
    let backup = backup_local(&broker(), &format!("{},{}", a.topic, second), "bk");
    let state = temp_dir();
    let (t1, t2) = (format!("{}-clone", a.topic), format!("{second}-clone"));
    let sources = format!("{},{}", a.topic, second);
    let targets = format!("{t1},{t2}");
    kb_ok(&[
        "restore",
        "--storage",
        backup.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--checkpoint-state",
        state.path().to_str().expect("p"),
        "--source-topics",
        &sources,
        "--target-topics",
        &targets,
        "--target-cluster",
        &broker(),
        "--create-topics",
    ]);
    assert_same_records(&a.source[0], &consume_all(&broker(), &t1, 0));
    for (p, want) in second_src.iter().enumerate() {
        assert_same_records(want, &consume_all(&broker(), &t2, p as i32));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn use_case_4_cross_cluster_migration_with_regex_and_rewrite() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("migrate", 2, 80).await;
    let pattern = format!("{}.*", &f.topic[..f.topic.len() - 3]);
    let out = kb_ok(&f.restore_args(&[
        "--source-topics",
        &pattern,
        "--target-cluster",
        &broker2(),
        "--target-topics-rewrite",
        "s/^/prod-/",
        "--create-topics",
        "--consumer-group-strategy",
        "header-based",
    ]));
    assert!(out.contains("completed"), "{out}");
    let target = format!("prod-{}", f.topic);
    assert!(
        !topic_exists(&broker(), &target),
        "nothing written to the source cluster"
    );
    for p in 0..2 {
        let got = consume_all(&broker2(), &target, p);
        assert_eq!(got.len(), f.source[p as usize].len());
        for (src, dst) in f.source[p as usize].iter().zip(&got) {
            assert_eq!(
                (&src.key, &src.value, src.timestamp),
                (&dst.key, &dst.value, dst.timestamp)
            );
            // header-based: the original offset and timestamp travel as headers.
            let h = |name: &str| {
                dst.headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value.clone())
            };
            assert_eq!(
                h("x-original-offset"),
                Some(src.offset.to_string().into_bytes())
            );
            assert_eq!(
                h("x-original-timestamp"),
                Some(src.timestamp.to_string().into_bytes())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn use_case_5_partition_level_restore_with_mapping() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("hv", 3, 70).await;
    let target = unique("hv-target");
    create_topic(&broker(), &target, 3).await;
    kb_ok(&f.restore_args(&[
        "--source-topic",
        &f.topic,
        "--target-topic",
        &target,
        "--source-partitions",
        "0",
        "--partition-mapping",
        "0:2",
        "--bootstrap-servers",
        &broker(),
    ]));
    assert_same_records(&f.source[0], &consume_all(&broker(), &target, 2));
    assert_eq!(
        end_offset(&broker(), &target, 0),
        0,
        "other partitions unaffected"
    );
    assert_eq!(
        end_offset(&broker(), &target, 1),
        0,
        "other partitions unaffected"
    );

    // Without a filter every partition is restored, and rerunning the completed restore
    // does not write it again.
    let whole = unique("hv-whole");
    let b = broker();
    let args = f.restore_args(&[
        "--source-topic",
        &f.topic,
        "--target-topic",
        &whole,
        "--bootstrap-servers",
        &b,
        "--create-topics",
    ]);
    kb_ok(&args);
    kb_ok(&args);
    for p in 0..3 {
        assert_same_records(&f.source[p as usize], &consume_all(&broker(), &whole, p));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn yaml_config_with_env_expansion_drives_a_restore() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("yaml", 2, 50).await;
    let target = unique("yaml-target");
    let cfg = f.state.path().join("restore.yaml");
    std::fs::write(
        &cfg,
        format!(
            r#"storage:
  url: "{storage}"
restore:
  backup_id: bk
  source:
    topics: ["{topic}"]
    partitions: [1]
  target:
    bootstrap_servers: ["${{KB_TEST_TARGET}}"]
    topics: ["{target}"]
    create_topics: true
  restore_strategy:
    consumer_group_strategy: skip
  performance:
    max_concurrent_partitions: 2
    checkpoint_interval_secs: 1
"#,
            storage = f.storage(),
            topic = f.topic,
        ),
    )
    .expect("write config");
    let cfg_s = cfg.to_str().expect("p");
    let o = std::process::Command::new(bin())
        .args([
            "validate-restore",
            "--config",
            cfg_s,
            "--checkpoint-state",
            f.state(),
        ])
        .env("KB_TEST_TARGET", broker())
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Nothing was written"));
    let o = std::process::Command::new(bin())
        .args([
            "restore",
            "--config",
            cfg_s,
            "--checkpoint-state",
            f.state(),
        ])
        .env("KB_TEST_TARGET", broker())
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_records(&f.source[1], &consume_all(&broker(), &target, 1));
    assert_eq!(end_offset(&broker(), &target, 0), 0);
    // The same file without the variable set: refused, naming the variable.
    let o = std::process::Command::new(bin())
        .args(["restore", "--config", cfg_s])
        .env_remove("KB_TEST_TARGET")
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("KB_TEST_TARGET"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_are_refused_before_anything_is_written() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("bad", 3, 20).await;
    let target = unique("bad-target");
    create_topic(&broker(), &target, 1).await;
    let b = broker();
    let missing = unique("missing-topic");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--source-topic", "orders-[", "--target-topic", &target],
            "invalid topic pattern",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--from-timestamp",
                "2025-11-27T15:30:00Z",
                "--to-timestamp",
                "2025-11-27T15:00:00Z",
            ],
            "invalid time window",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--partition-mapping",
                "0:0,0:1",
            ],
            "mapped twice",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--partition-mapping",
                "0-1",
            ],
            "invalid partition mapping",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--source-partitions",
                "-1",
            ],
            "invalid partition",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--from-timestamp",
                "yesterday",
            ],
            "invalid timestamp",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topics-rewrite",
                "s/(/x/",
            ],
            "invalid topic rewrite",
        ),
        (
            vec!["--source-topic", "no-such-topic", "--target-topic", &target],
            "is not in backup",
        ),
        (
            vec!["--source-topic", &f.topic, "--target-topic", &missing],
            "do not exist",
        ),
        (
            // Named with the count every partition needs (0..=2), not the first one short.
            vec!["--source-topic", &f.topic, "--target-topic", &target],
            "with at least 3 partitions",
        ),
        (
            // Partition 1 keeps its number by default; 0:1 would quietly merge 0 into it.
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--partition-mapping",
                "0:1",
            ],
            "would be merged",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--from-timestamp",
                "1700000010",
            ],
            "looks like epoch seconds",
        ),
        (
            vec![
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--consumer-group-strategy",
                "bogus",
            ],
            "invalid --consumer-group-strategy",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = f.restore_args(&extra);
        args.extend_from_slice(&["--bootstrap-servers", &b]);
        kb_err(&args, needle);
        assert_eq!(
            end_offset(&broker(), &target, 0),
            0,
            "nothing written for {extra:?}"
        );
        assert!(
            !topic_exists(&broker(), &missing),
            "no topic created for {extra:?}"
        );
    }
    // Unknown backup id and unreachable cluster.
    kb_err(
        &[
            "restore",
            "--storage",
            f.storage(),
            "--backup-id",
            "nope",
            "--checkpoint-state",
            f.state(),
            "--source-topic",
            &f.topic,
            "--bootstrap-servers",
            &b,
        ],
        "not found",
    );
    kb_err(
        &[
            "restore",
            "--storage",
            f.storage(),
            "--backup-id",
            "bk",
            "--checkpoint-state",
            f.state(),
            "--source-topic",
            &f.topic,
            "--bootstrap-servers",
            "127.0.0.1:1",
            "--target-topic",
            &target,
        ],
        "unreachable",
    );
    // A first run that is refused leaves no ledger directory behind.
    let fresh = f.state.path().join("never-made");
    let fresh = fresh.to_str().expect("utf8");
    kb_err(
        &f.restore_args_at(
            fresh,
            &[
                "--source-topic",
                &f.topic,
                "--target-topic",
                &target,
                "--bootstrap-servers",
                &b,
            ],
        ),
        "partition count mismatch",
    );
    assert!(
        !std::path::Path::new(fresh).exists(),
        "a refused restore made {fresh}"
    );
    // Dry run reports a missing topic too.
    kb_err(
        &f.restore_args(&[
            "--source-topic",
            &f.topic,
            "--target-topic",
            &missing,
            "--bootstrap-servers",
            &b,
            "--dry-run",
        ]),
        "do not exist",
    );
}

/// A dry run into an existing topic reports where each target partition ends now, where
/// its restored records will begin: partitions holding 0, 3, 7 and 12 records. Asked with
/// every partition (one request for all of them) and with two (asked one by one).
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_reports_where_each_existing_target_partition_ends() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("ends", 4, 20).await;
    let target = unique("ends-target");
    create_topic(&broker(), &target, 4).await;
    let held = [0usize, 3, 7, 12];
    for (p, n) in held.iter().enumerate() {
        produce(
            &broker(),
            &target,
            p as i32,
            &simple_records(*n, BASE_TS, 1),
        )
        .await;
    }
    let state = f.state.path().join("no-ledger");
    for partitions in [None, Some("1,3")] {
        let mut args = vec![
            "--source-topic",
            f.topic.as_str(),
            "--target-topic",
            target.as_str(),
            "--bootstrap-servers",
            broker().leak(),
            "--dry-run",
            "--format",
            "json",
        ];
        if let Some(list) = partitions {
            args.extend_from_slice(&["--source-partitions", list]);
        }
        let args = f.restore_args_at(state.to_str().expect("utf8"), &args);
        let report: serde_json::Value = serde_json::from_str(&kb_ok(&args)).expect("json");
        let tasks = report["tasks"].as_array().expect("tasks");
        assert_eq!(tasks.len(), if partitions.is_some() { 2 } else { 4 });
        for t in tasks {
            let p = t["target_partition"].as_u64().expect("partition") as usize;
            assert_eq!(
                t["target_start_offset"].as_u64(),
                Some(held[p] as u64),
                "partition {p} of {partitions:?}: {t}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_segment_stops_only_its_task_and_keeps_what_was_restored() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("corrupt", 2, 120).await;
    // Damage the second segment of partition 1 (offsets 50..99): flip one body byte.
    f.damage(&f.segment_key(1, 50));
    let target = unique("corrupt-target");
    let b = broker();
    let o = kb(&f.restore_into_args(&target, &b, &[]));
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed task fails the run:\n{out}\n{}",
        stderr(&o)
    );
    assert!(
        out.contains(&format!("segment-{:020}.bin.zst", 50)),
        "the error names the object:\n{out}"
    );
    assert!(out.contains("CRC32"), "{out}");
    assert!(out.contains("--skip-corrupt-segments"), "the way on: {out}");
    // The ledger of the embedded restore tells where it stands afterwards.
    let status: serde_json::Value = serde_json::from_str(&kb_ok(&[
        "restore-status",
        "--checkpoint-state",
        f.state(),
        "--backup-id",
        "bk",
        "--format",
        "json",
    ]))
    .expect("status json");
    assert_eq!(status["state"], "failed", "{status}");
    // Partition 0 is complete; partition 1 holds exactly the records before the bad segment.
    assert_same_records(&f.source[0], &consume_all(&broker(), &target, 0));
    assert_same_records(&f.source[1][..50], &consume_all(&broker(), &target, 1));
    // The operator reruns the same restore, now skipping damaged segments (and slower): the
    // same plan resumes and retries only the failed partition, which continues after the
    // bad segment; nothing already written is written again.
    let out = kb_ok(&f.restore_into_args(
        &target,
        &b,
        &["--skip-corrupt-segments", "--max-records-per-sec", "100000"],
    ));
    assert!(out.contains("Resuming plan"), "{out}");
    assert!(out.contains("completed"), "{out}");
    assert_same_records(&f.source[0], &consume_all(&broker(), &target, 0));
    let mut expected = f.source[1][..50].to_vec();
    expected.extend_from_slice(&f.source[1][100..]);
    assert_same_records(&expected, &consume_all(&broker(), &target, 1));
}

/// `--verify-segments` reads back every segment of the plan before anything is written: an
/// intact backup is said to be so; a damaged and a missing object refuse the restore (and
/// its dry run) with nothing written, each named; with `--skip-corrupt-segments` the restore
/// goes on without them.
#[tokio::test(flavor = "multi_thread")]
async fn verify_segments_reads_the_plan_back_before_anything_is_written() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("verify", 1, 150).await;
    let target = unique("verify-target");
    let b = broker();
    let mut dry = f.restore_into_args(&target, &b, &["--verify-segments", "--dry-run"]);
    let o = kb(&dry);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Verified 3 segments of 1 partitions")
            && stderr(&o).contains("150 records")
            && stderr(&o).contains("every one reads back intact"),
        "{}",
        stderr(&o)
    );
    let (bad, gone) = (f.segment_key(0, 50), f.segment_key(0, 100));
    f.damage(&bad);
    f.remove(&gone);
    let real = f.restore_into_args(&target, &b, &["--verify-segments"]);
    for args in [&real, &dry] {
        let err = kb_err(args, "2 of 3 segments of backup bk are missing or damaged");
        assert!(err.contains(&format!("{bad} is corrupt: CRC32")), "{err}");
        assert!(err.contains(&format!("{gone} not found")), "{err}");
        assert!(err.contains("--skip-corrupt-segments"), "the way on: {err}");
        assert!(!topic_exists(&b, &target), "nothing created: {args:?}");
    }
    dry.push("--skip-corrupt-segments");
    kb_ok(&dry);
    let o = kb(&f.restore_into_args(
        &target,
        &b,
        &["--verify-segments", "--skip-corrupt-segments"],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skips these 2 segments"),
        "{}",
        stderr(&o)
    );
    assert_same_records(&f.source[0][..50], &consume_all(&broker(), &target, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_corrupt_segments_restores_the_rest_and_reports_what_was_skipped() {
    if skip_without_servers() {
        return;
    }
    let f = fixture("skip-corrupt", 1, 150).await;
    let bad = f.segment_key(0, 50);
    f.damage(&bad);
    // A second object is missing altogether.
    let gone = f.segment_key(0, 100);
    f.remove(&gone);
    let target = unique("skip-target");
    let b = broker();
    let out = kb_ok(&f.restore_into_args(
        &target,
        &b,
        &["--skip-corrupt-segments", "--format", "json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["state"], "completed");
    let skipped: Vec<String> = v["tasks"][0]["skipped_segments"]
        .as_array()
        .expect("skipped list")
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].starts_with(&bad) && skipped[0].contains("CRC32"),
        "{skipped:?}"
    );
    assert!(
        skipped[1].starts_with(&gone) && skipped[1].contains("not found"),
        "{skipped:?}"
    );
    // Everything except the two skipped segments (offsets 50..=99 and 100..=149) is restored.
    let expected: Vec<_> = f.source[0][..50].to_vec();
    assert_same_records(&expected, &consume_all(&broker(), &target, 0));
}

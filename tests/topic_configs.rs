//! Topic configurations travel with a backup and come back with `--create-topics`, and the
//! retention guard refuses a restore whose target retention would delete the restored
//! records — against the real test broker (tansu on SQLite). tansu stores the configurations
//! a topic is created with and reports them with DescribeConfigs (every one flagged as a
//! default, which is why the backup compares values with Kafka's defaults instead of trusting
//! the source flag); it reports no broker-level `log.retention.*`, so the broker-default path
//! of the guard is covered by unit tests only.

mod common;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;

const BASE_TS: i64 = 1_710_000_000_000;

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .expect("admin client")
}

async fn create_with(topic: &str, partitions: i32, configs: &[(&str, &str)]) {
    let new = configs.iter().fold(
        NewTopic::new(topic, partitions, TopicReplication::Fixed(1)),
        |t, (k, v)| t.set(k, v),
    );
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin().create_topics([&new], &opts).await.expect("create") {
        r.unwrap_or_else(|(t, e)| panic!("create {t}: {e}"));
    }
}

/// The configurations the broker reports for `topic`.
async fn described(topic: &str) -> BTreeMap<String, String> {
    let spec = ResourceSpecifier::Topic(topic);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let res = admin()
        .describe_configs([&spec], &opts)
        .await
        .expect("describe");
    let resource = res.into_iter().next().expect("one").expect("described");
    resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

fn restore<'a>(storage: &'a tempfile::TempDir, topic: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "restore",
        "--storage",
        storage.path().to_str().expect("utf8"),
        "--backup-id",
        "bk",
        "--source-topic",
        topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        Box::leak(broker().into_boxed_str()),
        "--checkpoint-state",
        Box::leak(
            temp_dir()
                .keep()
                .to_str()
                .expect("utf8")
                .to_string()
                .into_boxed_str(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn create_topics_brings_back_the_recorded_configuration() {
    if skip_without_servers() {
        return;
    }
    let topic = unique("cfg-source");
    let configs = [
        ("cleanup.policy", "compact"),
        ("retention.ms", "-1"),
        ("max.message.bytes", "2000000"),
        // Kafka's default value: not worth recording.
        ("min.insync.replicas", "1"),
    ];
    create_with(&topic, 2, &configs).await;
    let mut records = Vec::new();
    for p in 0..2 {
        records.push(produce(&broker(), &topic, p, &simple_records(40, BASE_TS, 1000)).await);
    }
    let backup = backup_local(&broker(), &topic, "bk");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(backup.path().join("bk/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let t = &manifest["topics"][0];
    assert_eq!(t["replication_factor"], 1, "{t}");
    assert_eq!(
        t["configs"],
        serde_json::json!({"cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": "2000000"}),
    );

    // The dry run says how the topic will be created; the restore creates it so.
    let target = unique("cfg-target");
    let mut args = restore(&backup, &topic, &target);
    args.extend(["--create-topics", "--topic-config", "segment.ms=3600000"]);
    let mut dry = args.clone();
    dry.push("--dry-run");
    // More replicas than the broker count is refused, in the dry run already.
    let mut too_many = dry.clone();
    too_many.extend(["--replication-factor", "3"]);
    kb_err(
        &too_many,
        "has 1 broker(s); pass --replication-factor 1 or fewer",
    );
    let out = kb_ok(&dry);
    assert!(
        out.contains("Will create topic: ")
            && out.contains("2 partitions, replication factor 1, configs: cleanup.policy=compact, max.message.bytes=2000000, retention.ms=-1, segment.ms=3600000"),
        "{out}"
    );
    kb_ok(&args);
    let got = described(&target).await;
    for (k, v) in [
        ("cleanup.policy", "compact"),
        ("retention.ms", "-1"),
        ("max.message.bytes", "2000000"),
        ("segment.ms", "3600000"),
    ] {
        assert_eq!(
            got.get(k).map(String::as_str),
            Some(v),
            "{k} on {target}: {got:?}"
        );
    }
    for (p, want) in records.iter().enumerate() {
        assert_same_records(want, &consume_all(&broker(), &target, p as i32));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_retention_is_refused_before_anything_is_written() {
    if skip_without_servers() {
        return;
    }
    // Records from March 2024 into a topic that keeps one hour.
    let (topic, records, backup) = backed_up_topic("cfg-retention", 1, 30, BASE_TS, 1000).await;
    let target = unique("cfg-retention-target");
    create_with(&target, 1, &[("retention.ms", "3600000")]).await;
    let args = restore(&backup, &topic, &target);
    let err = kb_err(&args, "retention.ms=3600000 (1 hours)");
    assert!(err.contains("--allow-retention-deletes"), "{err}");
    assert!(err.contains("kafka-configs --alter"), "{err}");
    assert_eq!(
        end_offset(&broker(), &target, 0),
        0,
        "nothing may be written"
    );

    // The dry run warns and succeeds.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let out = kb_ok(&dry);
    assert!(
        out.contains("Warning: target topic") && out.contains("retention.ms=3600000"),
        "{out}"
    );

    // A topic the restore would create with a short retention is refused too, and not created.
    let created = unique("cfg-retention-created");
    let mut args2 = restore(&backup, &topic, &created);
    args2.extend(["--create-topics", "--topic-config", "retention.ms=3600000"]);
    let err = kb_err(&args2, "--topic-config retention.ms=-1");
    assert!(err.contains(&created), "{err}");
    assert!(
        !topic_exists(&broker(), &created),
        "refused before creating the topic"
    );

    // A value Kafka refuses is refused before anything is created, by the dry run too (tansu
    // takes any value and applies nothing); a key Kafka does not know is warned about.
    for (bad, key) in [
        ("retention.ms=abc", "retention.ms"),
        ("cleanup.policy=compacted", "cleanup.policy"),
    ] {
        let mut a = restore(&backup, &topic, &created);
        a.extend(["--create-topics", "--allow-retention-deletes"]);
        a.extend(["--topic-config", bad]);
        let err = kb_err(&a, "is not valid");
        assert!(err.contains(&format!("{key} takes")), "{err}");
        a.push("--dry-run");
        kb_err(&a, "is not valid");
        assert!(!topic_exists(&broker(), &created), "{bad}: nothing created");
    }
    let mut typo = restore(&backup, &topic, &created);
    typo.extend(["--create-topics", "--allow-retention-deletes", "--dry-run"]);
    typo.extend(["--topic-config", "retention.mss=-1"]);
    let out = kb_ok(&typo);
    assert!(
        out.contains("retention.mss is not among Kafka's topic configurations"),
        "{out}"
    );

    // Consent restores it.
    let mut allowed = args.clone();
    allowed.push("--allow-retention-deletes");
    kb_ok(&allowed);
    assert_same_records(&records[0], &consume_all(&broker(), &target, 0));
}

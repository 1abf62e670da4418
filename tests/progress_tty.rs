//! `restore --progress` in a pseudo-terminal (util-linux `script`) draws the progress tree
//! and reaches 100%; the JSON status printed at the end matches the ledger.

mod common;

use common::*;
use kafka_backup_coordinator::ledger::Ledger;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn progress_tree_in_a_terminal_reaches_100_percent_and_json_matches_the_ledger() {
    if skip_without_servers() {
        return;
    }
    let (topic, _, backup) = backed_up_topic("progress", 2, 300, 1_760_000_000_000, 4).await;
    let state = temp_dir();
    let cmd = format!(
        "{} restore --storage {} --backup-id bk --source-topic {topic} --target-topic {topic}-r --bootstrap-servers {} --create-topics --checkpoint-state {} --progress --max-records-per-sec 300 --checkpoint-interval 200ms",
        bin().display(),
        backup.path().display(),
        broker(),
        state.path().display()
    );
    let o = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .output()
        .expect("util-linux script");
    let screen = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{screen}");
    for needle in [
        "Restoring backup: bk",
        "Task [1/2]",
        "Task [2/2]",
        "Progress: ",
        "Overall",
        "Throughput:",
        "ETA:",
        "Total records restored: 600 / 600",
        "100%",
    ] {
        assert!(
            screen.contains(needle),
            "the terminal shows no {needle:?}:\n{screen}"
        );
    }
    // A partial state was drawn too, not only the final picture.
    assert!(
        screen.contains("Total records restored: 0 / 600")
            || screen.contains("restored: 1")
            || screen.contains("restored: 2"),
        "{screen}"
    );

    // Without a terminal: --format json prints the final status; it matches the ledger.
    let state2 = temp_dir();
    let b = broker();
    let target2 = format!("{topic}-json");
    let json = kb_ok(&[
        "restore",
        "--storage",
        backup.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--source-topic",
        &topic,
        "--target-topic",
        &target2,
        "--bootstrap-servers",
        &b,
        "--create-topics",
        "--checkpoint-state",
        state2.path().to_str().expect("p"),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json status");
    assert_eq!(v["state"], "completed");
    let ledger = Ledger::open(state2.path()).expect("ledger");
    let plan = &ledger.plans()[0];
    assert_eq!(v["plan_id"], plan.plan_id.as_str());
    let (_, tasks) = ledger.snapshot(&plan.plan_id).expect("tasks");
    let tasks: Vec<_> = tasks.into_iter().map(|t| t.progress).collect();
    let done: u64 = tasks
        .iter()
        .map(|t| t.checkpoint.as_ref().map_or(0, |c| c.records_done))
        .sum();
    assert_eq!(v["records_done"], done);
    for (t, j) in tasks.iter().zip(v["tasks"].as_array().expect("tasks")) {
        assert_eq!(
            j["target_next_offset"],
            t.checkpoint.as_ref().map_or(-1, |c| c.target_next_offset)
        );
        assert_eq!(j["epoch"], t.epoch);
    }
}

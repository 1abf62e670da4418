//! One worker process restores several partitions at once (`worker --max-tasks`), each lease
//! fenced on its own: cancelling one plan stops that plan's task while the same worker's
//! other task goes on, and both plans end exact.

mod common;

use common::*;
use kafka_backup_proto::restore_plans_client::RestorePlansClient;
use kafka_backup_proto::PlanRef;
use std::time::{Duration, Instant};

const BASE_TS: i64 = 1_730_500_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_holds_two_leases_and_each_is_fenced_on_its_own() {
    if skip_without_servers() {
        return;
    }
    let (topic_a, recs_a, backup_a) = backed_up_topic("multi-a", 1, 3000, BASE_TS, 1).await;
    let (topic_b, recs_b, backup_b) = backed_up_topic("multi-b", 1, 3000, BASE_TS, 1).await;
    let (target_a, target_b) = (unique("multi-a-target"), unique("multi-b-target"));
    // A cancelled task's producer stops mid-stream; see RestartingBroker.
    let mut target_broker = RestartingBroker::start();
    let tb = target_broker.addr();
    let state = temp_dir();
    let (_coordinator, url, _) =
        spawn_coordinator(state.path(), &["--lease-ttl", "6s", "--lease-grace", "2s"]);
    let _worker = Killed(spawn_logged(
        &[
            "worker",
            "--coordinator",
            &url,
            "--worker-id",
            "multi",
            "--max-tasks",
            "2",
        ],
        &state.path().join("worker.log"),
    ));
    // Throttled so both tasks are still running when the test looks.
    let throttle = ["--max-records-per-sec", "400"];
    let plan_a = submit_detached_to(&url, &tb, backup_a.path(), &topic_a, &target_a, &throttle);
    let plan_b = submit_detached_to(&url, &tb, backup_b.path(), &topic_b, &target_b, &throttle);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, b) = (
            plan_status(&url, &plan_a).await,
            plan_status(&url, &plan_b).await,
        );
        let leased_by_us = |s: &Option<kafka_backup_proto::PlanStatus>| {
            s.as_ref().is_some_and(|s| {
                s.tasks
                    .iter()
                    .any(|t| t.state == "leased" && t.worker_id == "multi" && t.records_done > 0)
            })
        };
        if leased_by_us(&a) && leased_by_us(&b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker never held both leases at once: {a:?} {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Cancel plan A: its task is fenced at its next report; B's task goes on.
    let mut client = RestorePlansClient::connect(url.clone())
        .await
        .expect("connect");
    client
        .cancel_plan(PlanRef {
            plan_id: plan_a.clone(),
            ..Default::default()
        })
        .await
        .expect("cancel");
    let b_done = loop {
        target_broker.keep_up();
        let b = plan_status(&url, &plan_b).await.expect("status");
        if b.state == "completed" {
            break b;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(60),
            "plan B did not finish: {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(b_done.records_done, 3000);
    let a_now = plan_status(&url, &plan_a).await.expect("status");
    assert_eq!(a_now.state, "cancelled", "{a_now:?}");
    let partial = consume_all(&tb, &target_a, 0);
    assert!(partial.len() < 3000, "plan A was not stopped by the cancel");
    assert_same_records(&recs_a[0][..partial.len()], &partial);
    assert_same_records(&recs_b[0], &consume_all(&tb, &target_b, 0));
    // Resumed, plan A ends exact on the same worker.
    client
        .resume_plan(PlanRef {
            plan_id: plan_a.clone(),
            ..Default::default()
        })
        .await
        .expect("resume");
    loop {
        target_broker.keep_up();
        let a = plan_status(&url, &plan_a).await.expect("status");
        if a.state == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "plan A did not finish: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_same_records(&recs_a[0], &consume_all(&tb, &target_a, 0));
}

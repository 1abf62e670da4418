//! One OpenTelemetry trace across processes: a real coordinator and worker export spans over
//! OTLP/gRPC to a receiver running inside this test; the plan's trace must hold the CLI's,
//! the coordinator's and the worker's spans with correct parent links.

mod common;

use common::otlp::{attr, start_receiver};
use common::*;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn interrupt_and_wait(mut child: Child) {
    // SAFETY: kill(2) on our own child; SIGINT lets it flush its spans and exit.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_spans_cli_coordinator_and_worker() {
    if skip_without_servers() {
        return;
    }
    let (receiver, otlp) = start_receiver().await;

    let (topic, _, backup) = backed_up_topic("traced", 2, 300, 1_740_000_000_000, 3).await;
    let dir = temp_dir();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn"),
    ];
    let spawn = |args: &[&str]| -> Child {
        Command::new(bin())
            .args(args)
            .envs(env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let ledger = dir.path().join("ledger");
    let coordinator = spawn(&[
        "coordinator",
        "--listen",
        &listen,
        "--state-dir",
        ledger.to_str().expect("p"),
    ]);
    wait_port(port);
    let worker = spawn(&[
        "worker",
        "--coordinator",
        &url,
        "--worker-id",
        "traced-worker",
    ]);
    let target = format!("{topic}-restored");
    let b = broker();
    let out = Command::new(bin())
        .args([
            "restore",
            "--coordinator",
            &url,
            "--storage",
            backup.path().to_str().expect("p"),
            "--backup-id",
            "bk",
            "--source-topic",
            &topic,
            "--target-topic",
            &target,
            "--bootstrap-servers",
            &b,
            "--create-topics",
            "--checkpoint-interval",
            "100ms",
            "--max-records-per-sec",
            "600",
        ])
        .envs(env)
        .output()
        .expect("restore");
    assert!(out.status.success(), "{}", stderr(&out));
    interrupt_and_wait(worker);
    interrupt_and_wait(coordinator);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let spans = receiver
        .spans
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let named = |name: &'static str| spans.iter().filter(move |(_, s)| s.name == name);
    let (plan_service, plan) = named("plan").next().cloned().unwrap_or_else(|| {
        panic!(
            "no plan span among {:?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        )
    });
    assert_eq!(plan_service, "kafka-backup-coordinator");
    assert_eq!(attr(&plan, "backup_id").as_deref(), Some("bk"));
    let trace = plan.trace_id.clone();
    let in_trace: Vec<&(String, Span)> =
        spans.iter().filter(|(_, s)| s.trace_id == trace).collect();
    // The CLI's submit span is the plan's parent.
    let submit = named("restore.submit")
        .find(|(_, s)| s.trace_id == trace)
        .expect("CLI span in the trace");
    assert_eq!(plan.parent_span_id, submit.1.span_id);
    // Worker task spans are children of the plan, with their attributes.
    let tasks: Vec<_> = in_trace.iter().filter(|(_, s)| s.name == "task").collect();
    assert_eq!(
        tasks.len(),
        2,
        "one task span per partition in the plan's trace"
    );
    for (service, t) in &tasks {
        assert_eq!(service, "kafka-backup-worker");
        assert_eq!(
            t.parent_span_id, plan.span_id,
            "task is a child of the plan"
        );
        assert_eq!(attr(t, "worker_id").as_deref(), Some("traced-worker"));
        assert_eq!(attr(t, "backup_id").as_deref(), Some("bk"));
        assert!(attr(t, "epoch").is_some());
    }
    // Segments under tasks, produce batches under segments.
    let task_ids: Vec<&Vec<u8>> = tasks.iter().map(|(_, t)| &t.span_id).collect();
    let segments: Vec<_> = in_trace
        .iter()
        .filter(|(_, s)| s.name == "segment")
        .collect();
    assert!(!segments.is_empty());
    assert!(segments
        .iter()
        .all(|(_, s)| task_ids.contains(&&s.parent_span_id)));
    let batches: Vec<_> = in_trace
        .iter()
        .filter(|(_, s)| s.name == "produce_batch")
        .collect();
    assert!(!batches.is_empty(), "produce batch spans exported");
    let segment_ids: Vec<&Vec<u8>> = segments.iter().map(|(_, s)| &s.span_id).collect();
    assert!(batches
        .iter()
        .all(|(_, s)| segment_ids.contains(&&s.parent_span_id)));
    // Back on the coordinator: checkpoints stored as children of the worker's batch spans.
    let batch_ids: Vec<&Vec<u8>> = batches.iter().map(|(_, s)| &s.span_id).collect();
    let stored: Vec<_> = in_trace
        .iter()
        .filter(|(svc, s)| s.name == "checkpoint.store" && svc == "kafka-backup-coordinator")
        .collect();
    assert!(
        stored
            .iter()
            .any(|(_, s)| batch_ids.contains(&&s.parent_span_id)),
        "coordinator spans join the worker's trace"
    );
    assert!(in_trace
        .iter()
        .any(|(_, s)| s.name == "lease.grant" && s.parent_span_id == plan.span_id));
}

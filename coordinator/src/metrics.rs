//! Coordinator metrics, served in Prometheus text format by `--metrics-listen`.

use crate::ledger::Ledger;
use kafka_backup_common::metrics::{Counter, Exposition};
use std::sync::LazyLock;

#[derive(Default)]
pub struct CoordinatorMetrics {
    pub plans_submitted: Counter,
    pub leases_granted: Counter,
    pub lease_expiries: Counter,
    pub fenced_reports: Counter,
    pub checkpoints: Counter,
    pub records_restored: Counter,
    pub bytes_restored: Counter,
    pub task_failures: Counter,
    pub circuit_opened: Counter,
    pub tasks_stalled: Counter,
    pub tasks_handed_back: Counter,
}

pub static METRICS: LazyLock<CoordinatorMetrics> = LazyLock::new(CoordinatorMetrics::default);

/// Renders the counters plus gauges read from the ledger's schedules (no task is decoded).
pub fn render(ledger: &Ledger, now_ms: i64) -> String {
    let m = &*METRICS;
    let gauges = ledger.lease_gauges(now_ms, 0);
    let (active, pending) = (gauges.live, gauges.waiting);
    let mut e = Exposition::default();
    e.counter(
        "kafka_backup_plans_submitted_total",
        "Restore plans accepted.",
        m.plans_submitted.get(),
    )
    .counter(
        "kafka_backup_leases_granted_total",
        "Task leases granted (every grant has a new epoch).",
        m.leases_granted.get(),
    )
    .counter(
        "kafka_backup_lease_expiries_total",
        "Leases that expired and were re-granted to another worker.",
        m.lease_expiries.get(),
    )
    .counter(
        "kafka_backup_fenced_reports_total",
        "Worker reports rejected for a stale epoch, expired lease or cancelled plan.",
        m.fenced_reports.get(),
    )
    .counter(
        "kafka_backup_checkpoints_total",
        "Checkpoints stored in the ledger.",
        m.checkpoints.get(),
    )
    .counter(
        "kafka_backup_records_restored_total",
        "Records acknowledged by the target, from checkpoints.",
        m.records_restored.get(),
    )
    .counter(
        "kafka_backup_bytes_restored_total",
        "Backup bytes restored, from checkpoints.",
        m.bytes_restored.get(),
    )
    .counter(
        "kafka_backup_task_failures_total",
        "Task failures reported by workers.",
        m.task_failures.get(),
    )
    .counter(
        "kafka_backup_tasks_handed_back_total",
        "Tasks handed back by a worker shutting down (re-granted at once, not after the lease TTL).",
        m.tasks_handed_back.get(),
    )
    .counter(
        "kafka_backup_tasks_stalled_total",
        "Tasks failed because they were granted repeatedly without progress, or their lease could not be delivered.",
        m.tasks_stalled.get(),
    )
    .counter(
        "kafka_backup_circuit_opened_total",
        "Times a plan's circuit breaker opened on target/object-store outages.",
        m.circuit_opened.get(),
    )
    .counter(
        "kafka_backup_ledger_changes_flushed_total",
        "Ledger changes made durable; divided by the flush count, the group-commit batch size.",
        ledger.flush_stats().1,
    )
    .histogram(
        "kafka_backup_ledger_flush_seconds",
        "Duration of each ledger flush (one flush serves every change waiting).",
        ledger.flush_stats().0,
    )
    .gauge(
        "kafka_backup_active_leases",
        "Tasks currently held under a live lease.",
        active as f64,
    )
    .gauge(
        "kafka_backup_pending_tasks",
        "Tasks waiting for a worker (including expired leases).",
        pending as f64,
    );
    e.finish()
}

//! Worker metrics, served in Prometheus text format by `--metrics-listen`.

use kafka_backup_common::metrics::{Counter, Exposition, Gauge, Histogram};
use std::sync::LazyLock;

#[derive(Default)]
pub struct WorkerMetrics {
    pub records_produced: Counter,
    pub bytes_produced: Counter,
    pub produce_errors: Counter,
    pub produce_queue_full_retries: Counter,
    pub tasks_started: Counter,
    pub tasks_completed: Counter,
    pub tasks_failed: Counter,
    pub tasks_fenced: Counter,
    /// Tasks handed back to the coordinator on shutdown or on the plan's cancel.
    pub tasks_handed_back: Counter,
    /// Tasks that started on the previous task's idle producer instead of a new one.
    pub producers_reused: Counter,
    /// Records produced with a rewritten schema ID (key or value).
    pub schema_ids_rewritten: Counter,
    /// Keys/values produced unchanged although their schema ID had no target
    /// (`--schema-id-missing pass`).
    pub schema_ids_passed: Counter,
    pub active_tasks: Gauge,
    /// Bytes per second over the last checkpoint interval.
    pub throughput_bytes_per_sec: Gauge,
    pub segment_fetch_seconds: Histogram,
}

pub static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(WorkerMetrics::default);

pub fn render() -> String {
    let m = &*METRICS;
    let mut e = Exposition::default();
    e.counter(
        "kafka_backup_worker_records_produced_total",
        "Records acknowledged by the target broker.",
        m.records_produced.get(),
    )
    .counter(
        "kafka_backup_worker_bytes_produced_total",
        "Backup bytes of acknowledged records.",
        m.bytes_produced.get(),
    )
    .counter(
        "kafka_backup_worker_produce_errors_total",
        "Records the producer failed to deliver.",
        m.produce_errors.get(),
    )
    .counter(
        "kafka_backup_worker_produce_retries_total",
        "Sends retried because the producer queue was full.",
        m.produce_queue_full_retries.get(),
    )
    .counter(
        "kafka_backup_worker_tasks_started_total",
        "Leases taken.",
        m.tasks_started.get(),
    )
    .counter(
        "kafka_backup_worker_tasks_handed_back_total",
        "Tasks checkpointed and handed back to the coordinator because the worker was shutting down.",
        m.tasks_handed_back.get(),
    )
    .counter(
        "kafka_backup_worker_tasks_completed_total",
        "Tasks completed.",
        m.tasks_completed.get(),
    )
    .counter(
        "kafka_backup_worker_tasks_failed_total",
        "Tasks given up with an error.",
        m.tasks_failed.get(),
    )
    .counter(
        "kafka_backup_worker_tasks_fenced_total",
        "Tasks stopped because the lease was superseded, expired or cancelled.",
        m.tasks_fenced.get(),
    )
    .counter(
        "kafka_backup_worker_schema_ids_rewritten_total",
        "Records produced with their schema ID rewritten for the target registry.",
        m.schema_ids_rewritten.get(),
    )
    .counter(
        "kafka_backup_worker_schema_ids_passed_total",
        "Keys or values produced unchanged although their schema ID has no target (--schema-id-missing pass).",
        m.schema_ids_passed.get(),
    )
    .counter(
        "kafka_backup_worker_producers_reused_total",
        "Tasks that started on an idle producer kept from the previous task of the plan.",
        m.producers_reused.get(),
    )
    .gauge(
        "kafka_backup_worker_active_tasks",
        "Tasks running now.",
        m.active_tasks.get() as f64,
    )
    .gauge(
        "kafka_backup_worker_throughput_bytes_per_second",
        "Restore throughput over the last checkpoint interval.",
        m.throughput_bytes_per_sec.get() as f64,
    )
    .histogram(
        "kafka_backup_worker_segment_fetch_seconds",
        "Time to read one segment object, or one seek-index frame, from storage (decoding is streamed with producing).",
        &m.segment_fetch_seconds,
    );
    e.finish()
}

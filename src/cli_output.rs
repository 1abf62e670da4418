//! Human and JSON renderings of plan reports and statuses.

use kafka_backup_common::timestamp::format_ms;
use kafka_backup_proto::{PlanReport, PlanStatus, TaskStatus};
use serde_json::{json, Value};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn report_json(r: &PlanReport) -> Value {
    json!({
        "backup_id": r.backup_id,
        "segments": r.segments,
        "records": r.records,
        "bytes": r.bytes,
        "min_timestamp": r.min_timestamp_ms,
        "max_timestamp": r.max_timestamp_ms,
        "topics_to_create": r.topics_to_create,
        "topic_creations": r.topic_creations.iter().map(|c| json!({
            "topic": c.topic,
            "partitions": c.partitions,
            "replication_factor": (c.replication_factor > 0).then_some(c.replication_factor),
            "configs": c.configs,
        })).collect::<Vec<_>>(),
        "warnings": r.warnings,
        "tasks_omitted": r.tasks_omitted,
        "schema_ids": r.schema_ids.iter().map(|p| json!({
            "source_id": p.source_id,
            "target_id": (p.target_id >= 0).then_some(p.target_id),
            "origin": p.origin,
        })).collect::<Vec<_>>(),
        "tasks": r.tasks.iter().map(|t| json!({
            "source_topic": t.source_topic,
            "source_partition": t.source_partition,
            "target_topic": t.target_topic,
            "target_partition": t.target_partition,
            "segments": t.segments,
            "records": t.records,
            "bytes": t.bytes,
            "first_offset": t.first_offset,
            "last_offset": t.last_offset,
            "target_start_offset": t.target_start_offset,
            "merged_source_partitions": t.merged_source_partitions,
        })).collect::<Vec<_>>(),
    })
}

/// The time window the operator asked for, so a report shows what the flags were read as
/// (e.g. a time zone taken as UTC) beside the time range of the records it selected.
pub struct Window {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

pub fn print_report(r: &PlanReport, window: &Window, dry_run: bool) {
    outln!(
        "{} backup: {}",
        if dry_run {
            "Dry run of restore from"
        } else {
            "Restoring"
        },
        r.backup_id
    );
    outln!("├─ Segments selected: {}", r.segments);
    outln!("├─ Total records: {}", r.records);
    if window.from_ms.is_some() || window.to_ms.is_some() {
        let bound = |b: Option<i64>, open: &str| b.map_or(open.to_string(), format_ms);
        outln!(
            "├─ Requested window: {} to {} (inclusive)",
            bound(window.from_ms, "the beginning"),
            bound(window.to_ms, "the end")
        );
    }
    match (r.min_timestamp_ms, r.max_timestamp_ms) {
        (Some(a), Some(b)) => outln!("├─ Time range: {} to {}", format_ms(a), format_ms(b)),
        _ => outln!("├─ Time range: (no records)"),
    }
    for t in &r.topics_to_create {
        match r.topic_creations.iter().find(|c| &c.topic == t) {
            Some(c) => {
                let rf = if c.replication_factor > 0 {
                    c.replication_factor.to_string()
                } else {
                    "broker default".to_string()
                };
                let mut configs: Vec<String> =
                    c.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                configs.sort();
                let configs = if configs.is_empty() {
                    "broker defaults".to_string()
                } else {
                    configs.join(", ")
                };
                outln!(
                    "├─ Will create topic: {t} ({} partitions, replication factor {rf}, configs: {configs})",
                    c.partitions
                );
            }
            None => outln!("├─ Will create topic: {t}"),
        }
    }
    for t in &r.tasks {
        let offsets = if t.records == 0 {
            "nothing to restore".into()
        } else if !t.merged_source_partitions.is_empty() {
            "merged by timestamp (ties: partition, then offset), each partition in its order"
                .to_string()
        } else {
            format!("source offsets {}..={}", t.first_offset, t.last_offset)
        };
        outln!(
            "├─ {} → {}/{}: {} records in {} segments, {}, target starts at offset {}",
            source_label(
                &t.source_topic,
                t.source_partition,
                &t.merged_source_partitions
            ),
            t.target_topic,
            t.target_partition,
            t.records,
            t.segments,
            offsets,
            t.target_start_offset
        );
    }
    if r.tasks_omitted > 0 {
        outln!(
            "├─ … and {} more partitions (counted in the totals above)",
            r.tasks_omitted
        );
    }
    for p in &r.schema_ids {
        if p.target_id >= 0 {
            outln!(
                "├─ Schema ID {} → {} ({})",
                p.source_id,
                p.target_id,
                p.origin
            );
        } else {
            outln!(
                "├─ Schema ID {} ({}) → registered in the target registry when first met",
                p.source_id,
                p.origin
            );
        }
    }
    for w in &r.warnings {
        outln!("├─ Warning: {w}");
    }
    outln!(
        "└─ {}",
        if dry_run {
            "Nothing was written."
        } else {
            "Plan accepted."
        }
    );
}

/// "topic/p", or "topic/p+q+r" for partitions merged into one target partition.
pub fn source_label(topic: &str, partition: i32, merged: &[i32]) -> String {
    if merged.is_empty() {
        return format!("{topic}/{partition}");
    }
    let parts: Vec<String> = merged.iter().map(i32::to_string).collect();
    format!("{topic}/{}", parts.join("+"))
}

fn task_json(t: &TaskStatus) -> Value {
    json!({
        "task_id": t.task_id,
        "source": source_label(&t.source_topic, t.source_partition, &t.merged_source_partitions),
        "target": format!("{}/{}", t.target_topic, t.target_partition),
        "state": t.state,
        "worker_id": t.worker_id,
        "epoch": t.epoch,
        "attempts": t.attempts,
        "records_total": t.records_total,
        "records_done": t.records_done,
        "bytes_total": t.bytes_total,
        "bytes_done": t.bytes_done,
        "segments_total": t.segments_total,
        "source_next_offset": t.source_next_offset,
        "target_next_offset": t.target_next_offset,
        "error": t.error,
        "skipped_segments": t.skipped_segments,
        "skipped_count": t.skipped_count,
    })
}

pub fn status_json(s: &PlanStatus) -> Value {
    let counts = s.task_counts.unwrap_or_default();
    json!({
        "plan_id": s.plan_id,
        "backup_id": s.backup_id,
        "state": s.state,
        "created_at": s.created_at_ms,
        "records_total": s.records_total,
        "records_done": s.records_done,
        "bytes_total": s.bytes_total,
        "bytes_done": s.bytes_done,
        "circuit": {
            "state": s.circuit,
            "retry_at": s.circuit_retry_at_ms,
            "error": s.circuit_error,
            "times_opened": s.circuit_opened,
        },
        "tasks_total": s.tasks_total,
        "task_counts": {
            "pending": counts.pending,
            "leased": counts.leased,
            "completed": counts.completed,
            "failed": counts.failed,
            "cancelled": counts.cancelled,
        },
        "task_offset": s.task_offset,
        "tasks": s.tasks.iter().map(task_json).collect::<Vec<_>>(),
        "failed_tasks": s.failed_tasks.iter().map(task_json).collect::<Vec<_>>(),
    })
}

fn pct(done: u64, total: u64) -> u64 {
    (done * 100).checked_div(total).map_or(100, |p| p.min(100))
}

pub fn print_status(s: &PlanStatus) {
    outln!("Plan {} (backup {}): {}", s.plan_id, s.backup_id, s.state);
    if !s.circuit.is_empty() && s.circuit != "closed" {
        outln!(
            "├─ CIRCUIT {}: target or object store unreachable, grants paused — {}",
            s.circuit.to_uppercase(),
            s.circuit_error
        );
    }
    for t in &s.tasks {
        let err = if t.error.is_empty() {
            String::new()
        } else {
            format!(" — {}", t.error)
        };
        outln!(
            "├─ {} → {}/{}: {} {}% ({} / {} records){}",
            source_label(
                &t.source_topic,
                t.source_partition,
                &t.merged_source_partitions
            ),
            t.target_topic,
            t.target_partition,
            t.state,
            pct(t.records_done, t.records_total),
            t.records_done,
            t.records_total,
            err
        );
    }
    let listed = |id: u32| s.tasks.iter().any(|t| t.task_id == id);
    for t in s.failed_tasks.iter().filter(|t| !listed(t.task_id)) {
        outln!(
            "├─ {}/{} → {}/{}: failed — {}",
            t.source_topic,
            t.source_partition,
            t.target_topic,
            t.target_partition,
            t.error
        );
    }
    let hidden = (s.tasks_total as usize).saturating_sub(s.tasks.len());
    if hidden > 0 {
        let c = s.task_counts.unwrap_or_default();
        outln!(
            "├─ {} of {} partitions listed; all: {} completed, {} leased, {} pending, {} failed, {} cancelled",
            s.tasks.len(),
            s.tasks_total,
            c.completed,
            c.leased,
            c.pending,
            c.failed,
            c.cancelled
        );
    }
    for t in &s.tasks {
        for sk in &t.skipped_segments {
            outln!("├─ SKIPPED {}/{}: {sk}", t.source_topic, t.source_partition);
        }
        let more = (t.skipped_count as usize).saturating_sub(t.skipped_segments.len());
        if more > 0 {
            outln!(
                "├─ SKIPPED {}/{}: … and {more} more",
                t.source_topic,
                t.source_partition
            );
        }
    }
    outln!(
        "└─ Overall: {}% ({} / {} records, {} / {} bytes)",
        pct(s.records_done, s.records_total),
        s.records_done,
        s.records_total,
        s.bytes_done,
        s.bytes_total
    );
}

/// One progress line for non-interactive output.
pub fn progress_line(s: &PlanStatus, elapsed_secs: f64) -> String {
    let mbps = s.bytes_done as f64 / 1e6 / elapsed_secs.max(0.001);
    let circuit = if s.circuit.is_empty() || s.circuit == "closed" {
        String::new()
    } else {
        format!(" [circuit {}]", s.circuit)
    };
    format!(
        "[{:>6.1}s] {}{circuit} {}% records {}/{} bytes {}/{} ({:.1} MB/s)",
        elapsed_secs,
        s.state,
        pct(s.records_done, s.records_total),
        s.records_done,
        s.records_total,
        s.bytes_done,
        s.bytes_total,
        mbps
    )
}

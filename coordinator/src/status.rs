//! Turns ledger records into the `PlanStatus` the API reports. A plan's state is derived
//! from its tasks and cancel flag rather than stored, so it can never disagree with them.

use crate::ledger::{PlanRecord, TaskRecord, TaskState};
use kafka_backup_proto::{PlanStatus, TaskStatus};

pub const TERMINAL_STATES: [&str; 3] = ["completed", "failed", "cancelled"];

pub fn plan_state(plan: &PlanRecord, tasks: &[TaskRecord]) -> &'static str {
    let active = tasks
        .iter()
        .any(|t| matches!(t.state, TaskState::Pending | TaskState::Leased));
    if plan.cancelled && active {
        "cancelled"
    } else if active {
        if tasks.iter().any(|t| t.started_at_ms > 0) {
            "running"
        } else {
            "pending"
        }
    } else if tasks.iter().any(|t| t.state == TaskState::Failed) {
        "failed"
    } else {
        "completed"
    }
}

fn task_state(plan: &PlanRecord, t: &TaskRecord) -> &'static str {
    match t.state {
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        _ if plan.cancelled => "cancelled",
        TaskState::Pending => "pending",
        TaskState::Leased => "leased",
    }
}

pub fn plan_status(plan: &PlanRecord, tasks: &[TaskRecord]) -> PlanStatus {
    let mut st = PlanStatus {
        plan_id: plan.plan_id.clone(),
        backup_id: plan.backup_id.clone(),
        state: plan_state(plan, tasks).to_string(),
        created_at_ms: plan.created_at_ms,
        updated_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    for t in tasks {
        let cp = t.checkpoint.clone().unwrap_or_default();
        // A completed task whose window held fewer records than the manifest estimate is done.
        let (records_done, bytes_done) = if t.state == TaskState::Completed {
            (cp.records_done, t.bytes_total.max(cp.bytes_done))
        } else {
            (cp.records_done, cp.bytes_done)
        };
        let records_total = if t.state == TaskState::Completed {
            records_done
        } else {
            t.records_total.max(records_done)
        };
        st.records_total += records_total;
        st.records_done += records_done;
        st.bytes_total += t.bytes_total;
        st.bytes_done += bytes_done.min(t.bytes_total);
        st.tasks.push(TaskStatus {
            task_id: t.task_id,
            source_topic: t.source_topic.clone(),
            source_partition: t.source_partition,
            target_topic: t.target_topic.clone(),
            target_partition: t.target_partition,
            state: task_state(plan, t).to_string(),
            worker_id: t
                .lease
                .as_ref()
                .map(|l| l.worker_id.clone())
                .unwrap_or_default(),
            epoch: t.epoch,
            records_total,
            records_done,
            bytes_total: t.bytes_total,
            bytes_done: bytes_done.min(t.bytes_total),
            source_next_offset: t.checkpoint.as_ref().map_or(-1, |c| c.source_next_offset),
            target_next_offset: t.checkpoint.as_ref().map_or(-1, |c| c.target_next_offset),
            error: t.error.clone(),
            attempts: t.attempts,
            started_at_ms: t.started_at_ms,
            skipped_segments: t.skipped_segments.clone(),
        });
    }
    st
}

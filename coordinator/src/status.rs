//! Turns ledger records into the `PlanStatus` the API reports. A plan's state is derived
//! from its tasks and cancel flag rather than stored, so it can never disagree with them.
//! Totals and counts cover every task; the task list is one page of them (plus every failed
//! task, up to a limit), so a status of a plan with tens of thousands of partitions stays a
//! small message.

use crate::ledger::{plan_state, PlanRecord, TaskState, TaskStatusState, TaskView};
use kafka_backup_proto::{PlanStatus, TaskCounts, TaskStatus};

/// Tasks listed per status page unless the caller asks for another size.
pub const DEFAULT_TASK_PAGE: u32 = 1_000;
/// The largest page a caller may ask for.
pub const MAX_TASK_PAGE: u32 = 10_000;
/// Failed tasks listed in every status, whatever the page.
pub const MAX_FAILED_LISTED: usize = 100;
/// Skipped-segment notes listed per task.
pub const MAX_SKIPPED_LISTED: usize = 100;

/// Which tasks a status lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPage {
    pub offset: u32,
    pub limit: u32,
}

impl TaskPage {
    /// The page a request asks for (0 = the default size; capped).
    pub fn requested(offset: u32, limit: u32) -> Self {
        let limit = match limit {
            0 => DEFAULT_TASK_PAGE,
            n => n.min(MAX_TASK_PAGE),
        };
        Self { offset, limit }
    }

    /// Totals and counts only.
    pub fn none() -> Self {
        Self {
            offset: 0,
            limit: 0,
        }
    }

    fn contains(&self, i: usize) -> bool {
        i >= self.offset as usize && i < self.offset as usize + self.limit as usize
    }
}

/// Record and byte figures of a task as the status shows them.
struct Figures {
    records_total: u64,
    records_done: u64,
    bytes_total: u64,
    bytes_done: u64,
}

fn figures(t: &TaskView) -> Figures {
    let cp = t.progress.checkpoint.clone().unwrap_or_default();
    let completed = t.progress.state == TaskState::Completed;
    // A completed task whose window held fewer records than planned is done all the same.
    let bytes_done = if completed {
        t.meta.bytes_total.max(cp.bytes_done)
    } else {
        cp.bytes_done
    };
    Figures {
        records_total: if completed {
            cp.records_done
        } else {
            t.meta.records_total.max(cp.records_done)
        },
        records_done: cp.records_done,
        bytes_total: t.meta.bytes_total,
        bytes_done: bytes_done.min(t.meta.bytes_total),
    }
}

fn task_status(plan: &PlanRecord, t: &TaskView, skipped: Vec<String>) -> TaskStatus {
    let f = figures(t);
    let p = &t.progress;
    TaskStatus {
        task_id: t.meta.task_id,
        source_topic: t.meta.source_topic.clone(),
        source_partition: t.meta.source_partition,
        target_topic: t.meta.target_topic.clone(),
        target_partition: t.meta.target_partition,
        state: TaskStatusState::of(p.state, plan.cancelled)
            .as_str()
            .to_string(),
        worker_id: p
            .lease
            .as_ref()
            .map(|l| l.worker_id.clone())
            .unwrap_or_default(),
        epoch: p.epoch,
        records_total: f.records_total,
        records_done: f.records_done,
        bytes_total: f.bytes_total,
        bytes_done: f.bytes_done,
        source_next_offset: p.checkpoint.as_ref().map_or(-1, |c| c.source_next_offset),
        target_next_offset: p.checkpoint.as_ref().map_or(-1, |c| c.target_next_offset),
        error: p.error.clone(),
        attempts: p.attempts,
        started_at_ms: p.started_at_ms,
        skipped_segments: skipped,
        skipped_count: p.skipped,
        segments_total: t.meta.segment_count,
        merged_source_partitions: t.meta.merge_sources.iter().map(|m| m.partition).collect(),
    }
}

/// The status of `plan` with the tasks of `page` listed. `skipped` reads a task's first
/// skipped-segment notes (they live in their own ledger tree).
pub fn plan_status(
    plan: &PlanRecord,
    tasks: &[TaskView],
    page: TaskPage,
    skipped: impl Fn(&TaskView) -> Vec<String>,
) -> PlanStatus {
    let state = plan_state(plan.cancelled, tasks.iter().map(|t| &t.progress));
    let mut st = PlanStatus {
        plan_id: plan.plan_id.clone(),
        backup_id: plan.backup_id.clone(),
        state: state.as_str().to_string(),
        created_at_ms: plan.created_at_ms,
        updated_at_ms: chrono::Utc::now().timestamp_millis(),
        tasks_total: tasks.len() as u32,
        task_offset: page.offset,
        ..Default::default()
    };
    let mut counts = TaskCounts::default();
    for (i, t) in tasks.iter().enumerate() {
        let f = figures(t);
        st.records_total += f.records_total;
        st.records_done += f.records_done;
        st.bytes_total += f.bytes_total;
        st.bytes_done += f.bytes_done;
        let shown = TaskStatusState::of(t.progress.state, plan.cancelled);
        match shown {
            TaskStatusState::Pending => counts.pending += 1,
            TaskStatusState::Leased => counts.leased += 1,
            TaskStatusState::Completed => counts.completed += 1,
            TaskStatusState::Failed => counts.failed += 1,
            TaskStatusState::Cancelled => counts.cancelled += 1,
        }
        let listed = page.contains(i);
        let failed = shown == TaskStatusState::Failed && st.failed_tasks.len() < MAX_FAILED_LISTED;
        if !listed && !failed {
            continue;
        }
        let notes = if t.progress.skipped > 0 {
            skipped(t)
        } else {
            Vec::new()
        };
        let status = task_status(plan, t, notes);
        if failed {
            st.failed_tasks.push(status.clone());
        }
        if listed {
            st.tasks.push(status);
        }
    }
    st.task_counts = Some(counts);
    st
}

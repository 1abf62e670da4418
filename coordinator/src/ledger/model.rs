//! What the ledger stores, split by how often it changes. A plan's segment lists can hold
//! millions of entries, so they are written once with the plan (`SegmentEntry`, one sled key
//! each) and never rewritten; everything a lease, heartbeat or checkpoint changes lives in a
//! small per-task record (`TaskProgress`), so those operations cost the same for a task of
//! ten segments or a million.

use serde::{Deserialize, Serialize};

/// A plan as submitted: immutable except for its cancel flag.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanRecord {
    pub plan_id: String,
    pub backup_id: String,
    pub fingerprint: String,
    pub created_at_ms: i64,
    pub cancelled: bool,
    pub task_count: u32,
    /// The encoded `RestoreSpec`.
    pub spec: Vec<u8>,
    /// W3C traceparent of the span that accepted the plan.
    #[serde(default)]
    pub trace_parent: String,
}

/// Where a plan stands, derived from its tasks and cancel flag (never stored, so it cannot
/// disagree with them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl PlanState {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanState::Pending => "pending",
            PlanState::Running => "running",
            PlanState::Completed => "completed",
            PlanState::Failed => "failed",
            PlanState::Cancelled => "cancelled",
        }
    }

    /// The state a status message names (the API carries states as text).
    pub fn parse(s: &str) -> Option<Self> {
        [
            PlanState::Pending,
            PlanState::Running,
            PlanState::Completed,
            PlanState::Failed,
            PlanState::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    /// A terminal plan has nothing left to grant.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PlanState::Completed | PlanState::Failed | PlanState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Leased,
    Completed,
    Failed,
}

impl TaskState {
    pub fn is_active(self) -> bool {
        matches!(self, TaskState::Pending | TaskState::Leased)
    }
}

/// How a task's state reads in the API, where a cancelled plan's unfinished tasks show as
/// cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatusState {
    Pending,
    Leased,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatusState {
    pub fn of(state: TaskState, plan_cancelled: bool) -> Self {
        match state {
            TaskState::Completed => TaskStatusState::Completed,
            TaskState::Failed => TaskStatusState::Failed,
            _ if plan_cancelled => TaskStatusState::Cancelled,
            TaskState::Pending => TaskStatusState::Pending,
            TaskState::Leased => TaskStatusState::Leased,
        }
    }

    /// The state a task status names.
    pub fn parse(s: &str) -> Option<Self> {
        [
            TaskStatusState::Pending,
            TaskStatusState::Leased,
            TaskStatusState::Completed,
            TaskStatusState::Failed,
            TaskStatusState::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatusState::Pending => "pending",
            TaskStatusState::Leased => "leased",
            TaskStatusState::Completed => "completed",
            TaskStatusState::Failed => "failed",
            TaskStatusState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub worker_id: String,
    pub epoch: u64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// For a merge task, the sum of `source_next_offsets` (it only grows, like an offset).
    pub source_next_offset: i64,
    pub target_next_offset: i64,
    pub records_done: u64,
    pub bytes_done: u64,
    /// A merge task's next offset per source, in `TaskMeta.merge_sources` order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_next_offsets: Vec<i64>,
}

/// The immutable part of a task, written with the plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskMeta {
    pub task_id: u32,
    pub source_topic: String,
    pub source_partition: i32,
    pub target_topic: String,
    pub target_partition: i32,
    /// Entries in the task's segment list (see `SegmentEntry`).
    pub segment_count: u64,
    /// Where the task's list starts among its plan's entries (see `segment_store.rs`).
    #[serde(default)]
    pub segments_base: u64,
    /// First source offset of the first segment (where a task without a checkpoint starts).
    pub first_offset: i64,
    pub records_total: u64,
    pub bytes_total: u64,
    /// A merge task's source partitions and their ranges of its segment list; empty for 1:1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merge_sources: Vec<MergeSourceMeta>,
}

/// One source partition of a merge task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MergeSourceMeta {
    pub partition: i32,
    /// Its range of the task's segment list.
    pub segment_start: u64,
    pub segment_count: u64,
    /// First offset of its first segment.
    pub first_offset: i64,
}

/// The mutable part of a task: everything a grant, heartbeat, checkpoint or failure touches.
/// Small and of fixed size apart from the error text.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskProgress {
    pub state: TaskState,
    /// Last epoch granted; the next grant uses epoch + 1.
    pub epoch: u64,
    pub lease: Option<Lease>,
    pub checkpoint: Option<Checkpoint>,
    /// Grants so far, minus those that ended in an outage.
    pub attempts: u32,
    /// Grants since the task last made progress (records acknowledged or source offset
    /// advanced), minus outages; too many in a row fail the task instead of looping.
    #[serde(default)]
    pub stalled_grants: u32,
    pub error: String,
    /// Not re-granted before this time (backoff after a retryable failure).
    pub not_before_ms: i64,
    pub started_at_ms: i64,
    /// Segments skipped as missing or corrupt (their reasons are in their own tree).
    #[serde(default)]
    pub skipped: u32,
    /// The last offset run stored, so a contiguous next one extends it in place.
    #[serde(default)]
    pub last_run: Option<OffsetRunRecord>,
}

impl TaskProgress {
    pub fn new() -> Self {
        Self {
            state: TaskState::Pending,
            epoch: 0,
            lease: None,
            checkpoint: None,
            attempts: 0,
            stalled_grants: 0,
            error: String::new(),
            not_before_ms: 0,
            started_at_ms: 0,
            skipped: 0,
            last_run: None,
        }
    }
}

impl Default for TaskProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// One segment of a task's list, in source-offset order.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentEntry {
    pub key: String,
    pub start_offset: i64,
    pub end_offset: i64,
    pub record_count: u64,
    pub compressed_size: u64,
    /// The seek index, for segments a time window cuts (see `manifest_index.rs`).
    pub frames: Vec<kafka_backup_common::manifest::SegmentFrame>,
}

impl From<kafka_backup_common::manifest_index::SegmentSpan> for SegmentEntry {
    fn from(s: kafka_backup_common::manifest_index::SegmentSpan) -> Self {
        Self {
            key: s.object_key().into_owned(),
            start_offset: s.start_offset,
            end_offset: s.end_offset,
            record_count: s.record_count,
            compressed_size: s.compressed_size,
            frames: s.frames.into(),
        }
    }
}

/// A run of consecutive source offsets mapped one to one onto target offsets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffsetRunRecord {
    pub source_start: i64,
    pub target_start: i64,
    pub length: u64,
    /// Which merge source the run belongs to (0 for a 1:1 task).
    #[serde(default)]
    pub source_index: u32,
}

/// Offsets of one merge source are stored under keys `source_index << 48 | offset`, so each
/// source's runs are contiguous and ordered (source offsets stay below 2^48).
pub const RUN_KEY_SOURCE_SHIFT: u32 = 48;

impl OffsetRunRecord {
    /// Whether `next` continues this run with no gap on either side.
    pub fn continued_by(&self, next: &OffsetRunRecord) -> bool {
        let len = self.length as i64;
        self.source_index == next.source_index
            && self.source_start + len == next.source_start
            && self.target_start + len == next.target_start
    }

    /// The key position of source offset `offset` of merge source `source_index`; `None`
    /// for an offset the key cannot hold.
    pub fn key_position(source_index: u32, offset: i64) -> Option<u64> {
        let offset = u64::try_from(offset).ok()?;
        (offset < 1 << RUN_KEY_SOURCE_SHIFT)
            .then_some((u64::from(source_index) << RUN_KEY_SOURCE_SHIFT) | offset)
    }
}

/// Who claims to hold a task's lease: every worker report names all four.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub plan_id: &'a str,
    pub task_id: u32,
    pub worker_id: &'a str,
    pub epoch: u64,
}

/// Why a holder gives a task up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The task's data or settings are wrong (corrupt segment, refused record): fail now.
    Fatal,
    /// Worth another attempt after a backoff, up to the attempt limit.
    Retryable,
    /// The target cluster or object store was unreachable: retried without using up an
    /// attempt, paced by the plan's circuit breaker.
    Outage,
    /// The holder is shutting down and handed the task back after its last checkpoint with
    /// nothing in flight: re-granted at once, without using up an attempt.
    HandedBack,
}

/// Whether a checkpoint also ends the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    InProgress,
    Done,
}

/// A task's immutable part and a copy of its mutable part, as read for status and leases.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub meta: std::sync::Arc<TaskMeta>,
    pub progress: TaskProgress,
}

//! The restore ledger: the coordinator's only source of truth, kept in sled so that a
//! restore survives a coordinator restart. It is a state machine over plans and their tasks:
//! grant, renew, checkpoint, fail, complete, expire, fence, cancel, resume. Every operation
//! takes the time as an argument, so its rules are unit-tested with any clock (`tests.rs`).
//!
//! Shape, for restores of millions of segments with hundreds of workers:
//! - A task's segment list is written once, with the plan, into flat files beside sled
//!   (`segment_store.rs`), and is only ever read a page at a time (`segments_page`). A heartbeat, checkpoint, grant or
//!   failure reads and writes the task's small progress record (and appends offset runs and
//!   skipped-segment notes under their own keys), so its cost does not depend on how many
//!   segments the task has.
//! - Plans, task metadata and progress are also held in memory (they are small); sled is
//!   written through on every change. Reads (status, metrics) never decode sled records, and
//!   a grant finds a runnable task through an ordered index (`schedule.rs`), not by scanning.
//! - A change is applied under one lock (microseconds) and acknowledged only after a flush
//!   that includes it; one flush serves every change waiting (`group_commit.rs`). Callers run
//!   the change off the async threads and then await `durable`.
//! - The ledger returns outcomes (what was granted, how many records a checkpoint added, which
//!   tasks were failed for making no progress); metrics are counted by the caller from those,
//!   never inside the ledger.

mod codec;
mod durable_flush;
mod group_commit;
mod leases;
mod lists;
mod migrate;
pub mod model;
mod plans;
#[cfg(test)]
mod power_loss_tests;
mod schedule;
mod segment_store;
#[cfg(test)]
mod tests;

pub use group_commit::Seq;
pub use model::*;

use codec::{from_json, split_task_key};
use durable_flush::DurableFlush;
use group_commit::GroupCommit;
use schedule::Schedule;
use segment_store::SegmentStore;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("cannot open restore ledger at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("restore ledger I/O failed: {0}")]
    Io(String),
    #[error("restore ledger record {key} is unreadable: {reason}")]
    Decode { key: String, reason: String },
    #[error("plan {0:?} is not in the ledger; `kafka-backup list-plans` shows the plans")]
    UnknownPlan(String),
    #[error("task {task} of plan {plan} does not exist")]
    UnknownTask { plan: String, task: u32 },
    #[error("stale lease on task {task} of plan {plan}: {reason}")]
    Fenced {
        plan: String,
        task: u32,
        reason: String,
    },
    /// A heartbeat of a cancelled plan's lease: the holder is still the holder (its final
    /// checkpoint and hand-back are taken), but the lease is not renewed.
    #[error("task {task} of plan {plan}: the plan was cancelled; stop and hand the task back")]
    PlanCancelled { plan: String, task: u32 },
}

impl From<sled::Error> for LedgerError {
    fn from(e: sled::Error) -> Self {
        LedgerError::Io(e.to_string())
    }
}

impl From<TransactionError<LedgerError>> for LedgerError {
    fn from(e: TransactionError<LedgerError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

/// The outcome of a change, and the flush sequence to wait for (`Ledger::durable`) before
/// telling anyone about it.
#[must_use = "a change must be awaited with Ledger::durable before it is acknowledged"]
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub seq: Seq,
}

/// Lease timing and the no-progress limit a grant applies.
#[derive(Debug, Clone, Copy)]
pub struct GrantPolicy {
    pub ttl_ms: u64,
    /// Wait after expiry before a re-grant (covers the old holder's last in-flight writes).
    pub grace_ms: u64,
    /// Grants in a row without progress after which the task fails instead.
    pub max_stalled_grants: u32,
}

/// A lease just granted.
#[derive(Debug, Clone)]
pub struct Grant {
    pub plan: PlanRecord,
    pub task: TaskView,
    /// The previous holder's lease had expired (it crashed, stalled or was cut off).
    pub expired_regrant: bool,
}

/// A task failed because it was granted too often without progress.
#[derive(Debug, Clone, PartialEq)]
pub struct StalledTask {
    pub plan_id: String,
    pub task_id: u32,
    pub error: String,
}

#[derive(Debug, Clone, Default)]
pub struct GrantOutcome {
    pub granted: Option<Grant>,
    pub stalled: Vec<StalledTask>,
    /// When something becomes grantable next, if anything is waiting.
    pub next_due_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointOutcome {
    pub records_added: u64,
    pub bytes_added: u64,
    /// Records were acknowledged or the source offset moved on.
    pub progressed: bool,
    pub completed: bool,
    /// The plan was cancelled: the holder is told to stop (see `PlanCancelled`).
    pub plan_cancelled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Back to pending; granted again from this time.
    Retrying { not_before_ms: i64 },
    /// The task is failed for good (until the plan is resumed).
    Failed,
}

/// A task of a plan being created, with its segment list.
pub struct NewTask {
    pub meta: TaskMeta,
    pub segments: Vec<kafka_backup_common::manifest_index::SegmentSpan>,
}

/// Counts for metrics, across plans that are not cancelled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseGauges {
    pub live: usize,
    pub waiting: usize,
    pub expired: usize,
}

struct TaskSlot {
    meta: Arc<TaskMeta>,
    progress: TaskProgress,
}

struct PlanEntry {
    record: PlanRecord,
    tasks: Vec<TaskSlot>,
    schedule: Schedule,
}

impl PlanEntry {
    fn slot(&self, plan_id: &str, task_id: u32) -> Result<&TaskSlot, LedgerError> {
        self.tasks
            .get(task_id as usize)
            .ok_or_else(|| LedgerError::UnknownTask {
                plan: plan_id.to_string(),
                task: task_id,
            })
    }

    fn state(&self) -> PlanState {
        plan_state(
            self.record.cancelled,
            self.tasks.iter().map(|t| &t.progress),
        )
    }
}

/// A plan's state from its cancel flag and its tasks' progress.
pub fn plan_state<'a>(
    cancelled: bool,
    tasks: impl Iterator<Item = &'a TaskProgress> + Clone,
) -> PlanState {
    let active = tasks.clone().any(|t| t.state.is_active());
    if cancelled && active {
        PlanState::Cancelled
    } else if active {
        if tasks.clone().any(|t| t.started_at_ms > 0) {
            PlanState::Running
        } else {
            PlanState::Pending
        }
    } else if tasks.clone().any(|t| t.state == TaskState::Failed) {
        PlanState::Failed
    } else {
        PlanState::Completed
    }
}

/// sled's page cache. The ledger's hot data (plans, tasks, progress) is in memory anyway, and
/// segment lists are in their own files.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Ledger {
    db: sled::Db,
    plans_tree: sled::Tree,
    fingerprints: sled::Tree,
    task_meta: sled::Tree,
    task_state: sled::Tree,
    /// Segment lists, in flat files beside sled (see `segment_store.rs`).
    segments: SegmentStore,
    runs: sled::Tree,
    skipped: sled::Tree,
    /// Plans whose segment lists are being written (removed in the plan's own transaction),
    /// so the files of a plan a crash cut short are removed at the next open.
    incomplete: sled::Tree,
    mem: Mutex<HashMap<String, PlanEntry>>,
    commits: GroupCommit,
}

type TxResult<T> = Result<T, ConflictableTransactionError<LedgerError>>;

fn abort<T>(e: LedgerError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn fenced(plan: &str, task: u32, reason: String) -> LedgerError {
    LedgerError::Fenced {
        plan: plan.to_string(),
        task,
        reason,
    }
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`. sled locks the directory, so two coordinators
    /// can never share one ledger.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        // Created here, not by the caller: which directories this creates is what
        // `DurableFlush::new` syncs, so that their names survive a crash.
        let existed = durable_flush::existing_ancestor(dir);
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
            path: dir.display().to_string(),
            reason: format!(
                "cannot create the directory ({e}); give a directory this process can create and write (--state-dir of the coordinator, --checkpoint-state of a restore)"
            ),
        })?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            // Every change is flushed by the group commit; a timer adds nothing.
            .flush_every_ms(None);
        // sled 0.34 reports a held lock as an `Other` I/O error naming it, not `WouldBlock`.
        let locked = |e: &sled::Error| {
            matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock"))
        };
        // sled releases its directory lock when the last handle of a closed database drops,
        // which can happen on one of its own threads a moment after `drop`: a ledger reopened
        // in the same process (tests, a restore followed by a local offset-mapping read) waits
        // for that (seen to take over a second while sled's shared I/O pool is busy with other
        // databases) rather than failing. Another process's lock fails after 5 s.
        let mut waited = 0;
        let db = loop {
            match config.open() {
                Err(e) if locked(&e) && waited < 100 => {
                    waited += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other,
            }
        }
        .map_err(|e| LedgerError::Open {
            path: dir.display().to_string(),
            reason: if locked(&e) {
                "it is in use by another kafka-backup process (stop it or use another --state-dir)"
                    .into()
            } else {
                e.to_string()
            },
        })?;
        Self::from_db(db, dir, &existed)
    }

    /// Flushes reach stable storage (see `durable_flush.rs`), and the directories from
    /// `existed` (there before opening) down to `dir` are synced once.
    fn from_db(db: sled::Db, dir: &Path, existed: &Path) -> Result<Self, LedgerError> {
        let segments = SegmentStore::open(dir.join("segment-lists"))?;
        migrate::from_v1(&db, &segments)?;
        let flusher =
            DurableFlush::new(db.clone(), dir, existed).map_err(|reason| LedgerError::Open {
                path: dir.display().to_string(),
                reason,
            })?;
        let ledger = Self {
            plans_tree: db.open_tree("plans")?,
            fingerprints: db.open_tree("fingerprints")?,
            task_meta: db.open_tree("task_meta")?,
            task_state: db.open_tree("task_state")?,
            segments,
            runs: db.open_tree("runs")?,
            skipped: db.open_tree("skipped")?,
            incomplete: db.open_tree("incomplete_plans")?,
            commits: GroupCommit::start(flusher),
            db,
            mem: Mutex::new(HashMap::new()),
        };
        ledger.remove_incomplete_plans()?;
        ledger.load()?;
        Ok(ledger)
    }

    fn remove_incomplete_plans(&self) -> Result<(), LedgerError> {
        for kv in self.incomplete.iter() {
            let (plan, _) = kv?;
            let plan = String::from_utf8_lossy(&plan).into_owned();
            tracing::warn!(%plan, "removing the segment lists of a plan whose creation was cut short");
            self.segments.remove(&plan);
            self.incomplete.remove(plan.as_bytes())?;
        }
        Ok(())
    }

    /// Reads plans, task metadata and progress into memory and builds the schedules.
    fn load(&self) -> Result<(), LedgerError> {
        let mut mem = self.lock();
        for kv in self.plans_tree.iter() {
            let (k, v) = kv?;
            let record: PlanRecord = from_json(&k, &v)?;
            mem.insert(
                record.plan_id.clone(),
                PlanEntry {
                    record,
                    tasks: Vec::new(),
                    schedule: Schedule::default(),
                },
            );
        }
        for kv in self.task_meta.iter() {
            let (k, v) = kv?;
            let meta: TaskMeta = from_json(&k, &v)?;
            let Some((plan, task)) = split_task_key(&k) else {
                continue;
            };
            let Some(entry) = mem.get_mut(&plan) else {
                continue;
            };
            if task as usize != entry.tasks.len() || meta.task_id != task {
                return Err(LedgerError::Decode {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: format!("task ids of plan {plan} are not contiguous"),
                });
            }
            let raw = self
                .task_state
                .get(&k)?
                .ok_or_else(|| LedgerError::Decode {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "the task has no progress record".into(),
                })?;
            let progress: TaskProgress = from_json(&k, &raw)?;
            entry.schedule.insert(task, &progress);
            entry.tasks.push(TaskSlot {
                meta: Arc::new(meta),
                progress,
            });
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PlanEntry>> {
        self.mem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the change numbered `seq` is on disk.
    pub async fn durable(&self, seq: Seq) -> Result<(), LedgerError> {
        self.commits.durable(seq).await.map_err(LedgerError::Io)
    }

    /// How long the group commit's flushes take, and how many changes they covered (for the
    /// metrics endpoint).
    pub fn flush_stats(&self) -> (&kafka_backup_common::metrics::Histogram, u64) {
        (self.commits.flush_seconds(), self.commits.changes_flushed())
    }

    /// Writes everything to disk now, for a clean shutdown. Acknowledged changes are durable
    /// already (group commit); this also covers what nobody waited for, through one more
    /// durable flush of the group commit.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let seq = self.commits.changed();
        self.durable_blocking(seq)
    }

    /// Held while applying a batch of changes, so that sled's log write and the batch take
    /// turns instead of alternating change by change (see `group_commit.rs`).
    pub fn applying(&self) -> MutexGuard<'_, ()> {
        self.commits.applying()
    }

    /// Blocking form of `durable`, for callers outside the async runtime.
    pub fn durable_blocking(&self, seq: Seq) -> Result<(), LedgerError> {
        self.commits.durable_blocking(seq).map_err(LedgerError::Io)
    }

    fn nothing<T>(value: T) -> Committed<T> {
        Committed { value, seq: Seq(0) }
    }

    fn changed<T>(&self, value: T) -> Committed<T> {
        Committed {
            value,
            seq: self.commits.changed(),
        }
    }
}

/// Why a task that keeps being granted without progress is failed.
fn stalled_error(p: &TaskProgress, expired: bool) -> String {
    let how = match (&p.lease, expired) {
        (Some(l), true) => format!(
            "its last holder {} stopped renewing the lease (the worker died, was cut off from the coordinator, or could not read the lease; see its log)",
            l.worker_id
        ),
        _ => "each attempt ended without progress".to_string(),
    };
    let last = if p.error.is_empty() {
        String::new()
    } else {
        format!("; last error: {}", p.error)
    };
    format!(
        "no progress after {} grants in a row: {how}{last}. The task was failed instead of being re-granted forever; fix the cause and run restore-resume",
        p.stalled_grants
    )
}

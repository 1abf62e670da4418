//! The restore ledger: the coordinator's only source of truth, kept in sled so that a
//! restore survives a coordinator restart. It is a state machine over plans and their tasks:
//! grant, renew, checkpoint, fail, complete, expire, fence, cancel, resume. Every operation
//! takes the time as an argument, so its rules are unit-tested with any clock (`tests.rs`).
//!
//! Shape, for restores of millions of segments with hundreds of workers:
//! - A task's segment list is written once, with the plan, one sled key per segment, and is
//!   only ever read a page at a time (`segments_page`). A heartbeat, checkpoint, grant or
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
mod group_commit;
mod migrate;
pub mod model;
mod schedule;
#[cfg(test)]
mod tests;

pub use group_commit::Seq;
pub use model::*;

use codec::{
    decode_run, decode_segment, encode_run, encode_segment, from_json, plan_prefix,
    segment_end_offset, split_task_key, task_item_key, task_key, to_json,
};
use group_commit::GroupCommit;
use schedule::Schedule;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
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

/// Segments written per sled batch when a plan is created.
const SEGMENT_BATCH: usize = 10_000;

/// sled's page cache. The ledger's hot data (plans, tasks, progress) is in memory anyway; the
/// cache only has to hold the pages of segment lists being paged through.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Ledger {
    db: sled::Db,
    plans_tree: sled::Tree,
    fingerprints: sled::Tree,
    task_meta: sled::Tree,
    task_state: sled::Tree,
    segments: sled::Tree,
    runs: sled::Tree,
    skipped: sled::Tree,
    /// Plans whose segment lists are being written (removed in the plan's own transaction),
    /// so the entries of a plan a crash cut short are removed at the next open.
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            // Every change is flushed by the group commit; a timer adds nothing.
            .flush_every_ms(None)
            .open()
            .map_err(|e| LedgerError::Open {
                path: dir.display().to_string(),
                reason: match e {
                    sled::Error::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                        "it is in use by another kafka-backup process (stop it or use another --state-dir)".into()
                    }
                    other => other.to_string(),
                },
            })?;
        Self::from_db(db)
    }

    /// A throw-away ledger for a dry run, in `dir`, which the caller removes.
    pub fn scratch(dir: &Path) -> Result<Self, LedgerError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .flush_every_ms(None)
            .open()?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self, LedgerError> {
        migrate::from_v1(&db)?;
        let ledger = Self {
            plans_tree: db.open_tree("plans")?,
            fingerprints: db.open_tree("fingerprints")?,
            task_meta: db.open_tree("task_meta")?,
            task_state: db.open_tree("task_state")?,
            segments: db.open_tree("segments")?,
            runs: db.open_tree("runs")?,
            skipped: db.open_tree("skipped")?,
            incomplete: db.open_tree("incomplete_plans")?,
            commits: GroupCommit::start(db.clone()),
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
            for k in self.segments.scan_prefix(plan_prefix(&plan)).keys() {
                self.segments.remove(k?)?;
            }
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

    // ----------------------------------------------------------------------------------
    // Plans
    // ----------------------------------------------------------------------------------

    /// The plan most recently created for a fingerprint.
    pub fn plan_for_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<PlanRecord>, LedgerError> {
        match self.fingerprints.get(fingerprint)? {
            Some(id) => self.plan(&String::from_utf8_lossy(&id)).map(Some),
            None => Ok(None),
        }
    }

    /// Records a new plan: first every task's segment list (in batches, outside any
    /// transaction, as it may be millions of entries), then the plan, its tasks and its
    /// fingerprint in one transaction, which is what makes the plan exist.
    pub fn create_plan(
        &self,
        plan: PlanRecord,
        tasks: Vec<NewTask>,
    ) -> Result<Committed<()>, LedgerError> {
        let plan_id = plan.plan_id.clone();
        self.incomplete.insert(plan_id.as_bytes(), &[])?;
        let mut metas = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.into_iter().enumerate() {
            if task.meta.task_id as usize != i {
                return Err(LedgerError::UnknownTask {
                    plan: plan_id,
                    task: task.meta.task_id,
                });
            }
            let mut batch = sled::Batch::default();
            for (n, s) in task.segments.into_iter().enumerate() {
                let entry = SegmentEntry::from(s);
                batch.insert(
                    task_item_key(&plan_id, task.meta.task_id, n as u64),
                    encode_segment(&entry),
                );
                if (n + 1) % SEGMENT_BATCH == 0 {
                    self.segments.apply_batch(std::mem::take(&mut batch))?;
                }
            }
            self.segments.apply_batch(batch)?;
            metas.push(task.meta);
        }
        let progress = TaskProgress::new();
        let encoded_progress = to_json(&progress);
        (
            &self.plans_tree,
            &self.fingerprints,
            &self.task_meta,
            &self.task_state,
            &self.incomplete,
        )
            .transaction(|(p, f, m, s, inc)| {
                p.insert(plan.plan_id.as_bytes(), to_json(&plan))?;
                f.insert(plan.fingerprint.as_bytes(), plan.plan_id.as_bytes())?;
                for meta in &metas {
                    let k = task_key(&plan.plan_id, meta.task_id);
                    m.insert(k.as_slice(), to_json(meta))?;
                    s.insert(k, encoded_progress.as_slice())?;
                }
                inc.remove(plan.plan_id.as_bytes())?;
                Ok(())
            })?;
        let mut schedule = Schedule::default();
        let tasks: Vec<TaskSlot> = metas
            .into_iter()
            .map(|meta| {
                schedule.insert(meta.task_id, &progress);
                TaskSlot {
                    meta: Arc::new(meta),
                    progress: progress.clone(),
                }
            })
            .collect();
        self.lock().insert(
            plan_id,
            PlanEntry {
                record: plan,
                tasks,
                schedule,
            },
        );
        Ok(self.changed(()))
    }

    pub fn plan(&self, plan_id: &str) -> Result<PlanRecord, LedgerError> {
        self.lock()
            .get(plan_id)
            .map(|e| e.record.clone())
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))
    }

    /// Every plan, oldest first.
    pub fn plans(&self) -> Vec<PlanRecord> {
        let mut plans: Vec<PlanRecord> = self.lock().values().map(|e| e.record.clone()).collect();
        plans.sort_by(|a, b| (a.created_at_ms, &a.plan_id).cmp(&(b.created_at_ms, &b.plan_id)));
        plans
    }

    /// A plan and a copy of all its tasks (status, offset mapping).
    pub fn snapshot(&self, plan_id: &str) -> Result<(PlanRecord, Vec<TaskView>), LedgerError> {
        let mem = self.lock();
        let e = mem
            .get(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let tasks = e
            .tasks
            .iter()
            .map(|t| TaskView {
                meta: t.meta.clone(),
                progress: t.progress.clone(),
            })
            .collect();
        Ok((e.record.clone(), tasks))
    }

    /// Plans that are not cancelled, oldest first: the ones grants draw from.
    pub fn grantable_plans(&self) -> Vec<String> {
        let mem = self.lock();
        let mut plans: Vec<(&i64, &String)> = mem
            .values()
            .filter(|e| !e.record.cancelled && !e.schedule.is_empty())
            .map(|e| (&e.record.created_at_ms, &e.record.plan_id))
            .collect();
        plans.sort();
        plans.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Whether a plan has nothing left to grant (every task completed or failed, or it was
    /// cancelled), read from its schedule without looking at its tasks.
    pub fn plan_is_terminal(&self, plan_id: &str) -> Result<bool, LedgerError> {
        self.lock()
            .get(plan_id)
            .map(|e| e.record.cancelled || e.schedule.is_empty())
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))
    }

    pub fn plan_state(&self, plan_id: &str) -> Result<PlanState, LedgerError> {
        self.lock()
            .get(plan_id)
            .map(PlanEntry::state)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))
    }

    pub fn task(&self, plan_id: &str, task_id: u32) -> Result<TaskView, LedgerError> {
        let mem = self.lock();
        let e = mem
            .get(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let t = e.slot(plan_id, task_id)?;
        Ok(TaskView {
            meta: t.meta.clone(),
            progress: t.progress.clone(),
        })
    }

    /// Sets the cancel flag: workers drop the plan's tasks at their next report.
    pub fn cancel(&self, plan_id: &str) -> Result<Committed<()>, LedgerError> {
        let mut mem = self.lock();
        let e = mem
            .get_mut(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let mut record = e.record.clone();
        record.cancelled = true;
        self.plans_tree
            .insert(plan_id.as_bytes(), to_json(&record))?;
        e.record = record;
        Ok(self.changed(()))
    }

    /// Clears the cancel flag and re-queues failed tasks with fresh attempts.
    pub fn resume(&self, plan_id: &str) -> Result<Committed<()>, LedgerError> {
        let mut mem = self.lock();
        let e = mem
            .get_mut(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let mut record = e.record.clone();
        record.cancelled = false;
        let mut requeued = Vec::new();
        for t in e
            .tasks
            .iter()
            .filter(|t| t.progress.state == TaskState::Failed)
        {
            let mut p = t.progress.clone();
            p.state = TaskState::Pending;
            p.attempts = 0;
            p.stalled_grants = 0;
            p.not_before_ms = 0;
            p.error.clear();
            requeued.push((t.meta.task_id, p));
        }
        (&self.plans_tree, &self.task_state).transaction(|(pt, st)| {
            pt.insert(plan_id.as_bytes(), to_json(&record))?;
            for (id, p) in &requeued {
                st.insert(task_key(plan_id, *id), to_json(p))?;
            }
            Ok(())
        })?;
        e.record = record;
        for (id, p) in requeued {
            let slot = &mut e.tasks[id as usize];
            e.schedule.update(id, &slot.progress, &p);
            slot.progress = p;
        }
        Ok(self.changed(()))
    }

    // ----------------------------------------------------------------------------------
    // Leases
    // ----------------------------------------------------------------------------------

    /// Grants a lease on the next runnable task of the given plans, in order: a pending task
    /// whose backoff has passed, or a leased one whose lease expired more than `grace_ms`
    /// ago. The epoch increases on every grant. A task already granted
    /// `max_stalled_grants` times in a row without progress is failed instead, with a reason
    /// that names what happened, so a task no worker can run ends visibly rather than being
    /// re-granted forever.
    pub fn grant(
        &self,
        plan_ids: &[String],
        worker_id: &str,
        now_ms: i64,
        policy: GrantPolicy,
    ) -> Result<Committed<GrantOutcome>, LedgerError> {
        let mut mem = self.lock();
        let mut out = GrantOutcome::default();
        for plan_id in plan_ids {
            let e = mem
                .get_mut(plan_id)
                .ok_or_else(|| LedgerError::UnknownPlan(plan_id.clone()))?;
            if e.record.cancelled {
                continue;
            }
            while let Some(c) = e.schedule.next(now_ms, policy.grace_ms) {
                let old = e.tasks[c.task_id as usize].progress.clone();
                let mut new = old.clone();
                if old.stalled_grants >= policy.max_stalled_grants.max(1) {
                    new.state = TaskState::Failed;
                    new.lease = None;
                    new.error = stalled_error(&old, c.expired);
                    self.task_state
                        .insert(task_key(plan_id, c.task_id), to_json(&new))?;
                    out.stalled.push(StalledTask {
                        plan_id: plan_id.clone(),
                        task_id: c.task_id,
                        error: new.error.clone(),
                    });
                    e.schedule.update(c.task_id, &old, &new);
                    e.tasks[c.task_id as usize].progress = new;
                    continue;
                }
                new.epoch += 1;
                new.state = TaskState::Leased;
                new.attempts += 1;
                new.stalled_grants += 1;
                if new.started_at_ms == 0 {
                    new.started_at_ms = now_ms;
                }
                new.lease = Some(Lease {
                    worker_id: worker_id.to_string(),
                    epoch: new.epoch,
                    expires_at_ms: now_ms.saturating_add(policy.ttl_ms as i64),
                });
                self.task_state
                    .insert(task_key(plan_id, c.task_id), to_json(&new))?;
                e.schedule.update(c.task_id, &old, &new);
                let slot = &mut e.tasks[c.task_id as usize];
                slot.progress = new.clone();
                out.granted = Some(Grant {
                    plan: e.record.clone(),
                    task: TaskView {
                        meta: slot.meta.clone(),
                        progress: new,
                    },
                    expired_regrant: c.expired,
                });
                return Ok(self.changed(out));
            }
            if let Some(due) = e.schedule.next_due(policy.grace_ms) {
                out.next_due_ms = Some(out.next_due_ms.map_or(due, |d: i64| d.min(due)));
            }
        }
        if out.stalled.is_empty() {
            Ok(Self::nothing(out))
        } else {
            Ok(self.changed(out))
        }
    }

    /// Checks that `holder` holds the task's current lease (and, with `unexpired_at`, that
    /// it has not expired), and returns the plan entry for a change.
    fn holder_entry<'m>(
        mem: &'m mut HashMap<String, PlanEntry>,
        holder: Holder<'_>,
        unexpired_at: Option<i64>,
    ) -> Result<&'m mut PlanEntry, LedgerError> {
        let Holder {
            plan_id,
            task_id,
            worker_id,
            epoch,
        } = holder;
        let e = mem
            .get_mut(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let t = e.slot(plan_id, task_id)?;
        if e.record.cancelled {
            return Err(fenced(plan_id, task_id, "the plan was cancelled".into()));
        }
        let Some(lease) = &t.progress.lease else {
            return Err(fenced(plan_id, task_id, "the task holds no lease".into()));
        };
        if t.progress.state != TaskState::Leased
            || lease.epoch != epoch
            || lease.worker_id != worker_id
        {
            return Err(fenced(
                plan_id,
                task_id,
                format!(
                    "lease epoch {epoch} of {worker_id} was superseded by epoch {} of {}",
                    lease.epoch, lease.worker_id
                ),
            ));
        }
        if unexpired_at.is_some_and(|now| lease.expires_at_ms < now) {
            return Err(fenced(plan_id, task_id, "the lease expired".into()));
        }
        Ok(e)
    }

    /// Renews a live lease.
    pub fn renew(
        &self,
        holder: Holder<'_>,
        now_ms: i64,
        ttl_ms: u64,
    ) -> Result<Committed<()>, LedgerError> {
        let mut mem = self.lock();
        let e = Self::holder_entry(&mut mem, holder, Some(now_ms))?;
        let id = holder.task_id;
        let old = e.tasks[id as usize].progress.clone();
        let mut new = old.clone();
        if let Some(l) = new.lease.as_mut() {
            l.expires_at_ms = now_ms.saturating_add(ttl_ms as i64);
        }
        self.task_state
            .insert(task_key(holder.plan_id, id), to_json(&new))?;
        e.schedule.update(id, &old, &new);
        e.tasks[id as usize].progress = new;
        Ok(self.changed(()))
    }

    /// Checks the holder's lease without changing anything (segment pages).
    pub fn check_holder(&self, holder: Holder<'_>) -> Result<Arc<TaskMeta>, LedgerError> {
        let mut mem = self.lock();
        let e = Self::holder_entry(&mut mem, holder, None)?;
        Ok(e.tasks[holder.task_id as usize].meta.clone())
    }

    /// Stores an acknowledged checkpoint, appends its offset runs and skipped-segment notes,
    /// and with `Completion::Done` ends the task. Refused (fenced) if it goes backwards.
    pub fn checkpoint(
        &self,
        holder: Holder<'_>,
        cp: &Checkpoint,
        runs: &[OffsetRunRecord],
        skipped: &[String],
        completion: Completion,
    ) -> Result<Committed<CheckpointOutcome>, LedgerError> {
        let (plan_id, id) = (holder.plan_id, holder.task_id);
        let mut mem = self.lock();
        let e = Self::holder_entry(&mut mem, holder, None)?;
        let old = e.tasks[id as usize].progress.clone();
        let prev = old.checkpoint.clone();
        if let Some(prev) = &prev {
            if cp.source_next_offset < prev.source_next_offset {
                return Err(fenced(
                    plan_id,
                    id,
                    format!(
                        "checkpoint goes backwards ({} < {})",
                        cp.source_next_offset, prev.source_next_offset
                    ),
                ));
            }
        }
        let prev = prev.unwrap_or_default();
        let records_added = cp.records_done.saturating_sub(prev.records_done);
        let progressed = records_added > 0
            || old.checkpoint.is_none()
            || cp.source_next_offset > prev.source_next_offset
            || completion == Completion::Done;
        let mut new = old.clone();
        new.checkpoint = Some(cp.clone());
        if progressed {
            new.stalled_grants = 0;
        }
        // Offset runs: a run that continues the last stored one extends it in place.
        let mut run_writes: Vec<OffsetRunRecord> = Vec::with_capacity(runs.len());
        for r in runs.iter().filter(|r| r.length > 0) {
            match run_writes.last().copied().or(new.last_run) {
                Some(l) if l.continued_by(r) => {
                    let extended = OffsetRunRecord {
                        length: l.length + r.length,
                        ..l
                    };
                    match run_writes.last_mut() {
                        Some(w) => *w = extended,
                        None => run_writes.push(extended),
                    }
                }
                _ => run_writes.push(*r),
            }
        }
        new.last_run = run_writes.last().copied().or(new.last_run);
        let first_skip = new.skipped;
        new.skipped = new.skipped.saturating_add(skipped.len() as u32);
        if completion == Completion::Done {
            new.state = TaskState::Completed;
            new.lease = None;
        }
        let key = task_key(plan_id, id);
        (&self.task_state, &self.runs, &self.skipped).transaction(|(st, rt, sk)| {
            st.insert(key.as_slice(), to_json(&new))?;
            for r in &run_writes {
                let source = u64::try_from(r.source_start).or_else(|_| {
                    abort(fenced(
                        plan_id,
                        id,
                        format!("negative source offset {} in a run", r.source_start),
                    ))
                })?;
                rt.insert(task_item_key(plan_id, id, source), &encode_run(r))?;
            }
            for (i, s) in skipped.iter().enumerate() {
                let n = u64::from(first_skip) + i as u64;
                sk.insert(task_item_key(plan_id, id, n), s.as_bytes())?;
            }
            Ok(())
        })?;
        e.schedule.update(id, &old, &new);
        e.tasks[id as usize].progress = new;
        Ok(self.changed(CheckpointOutcome {
            records_added,
            bytes_added: cp.bytes_done.saturating_sub(prev.bytes_done),
            progressed,
            completed: completion == Completion::Done,
        }))
    }

    /// The holder gives a task up. Retryable failures go back to pending after a backoff
    /// until `max_attempts`; fatal ones fail the task. An outage gives the attempt (and the
    /// no-progress count) back: the plan's circuit breaker paces those retries, and an outage
    /// must not fail a task whose data is fine.
    pub fn fail(
        &self,
        holder: Holder<'_>,
        error: &str,
        kind: FailureKind,
        now_ms: i64,
        max_attempts: u32,
    ) -> Result<Committed<FailOutcome>, LedgerError> {
        let id = holder.task_id;
        let mut mem = self.lock();
        let e = Self::holder_entry(&mut mem, holder, None)?;
        let old = e.tasks[id as usize].progress.clone();
        let mut new = old.clone();
        new.lease = None;
        new.error = error.to_string();
        let outcome = match kind {
            FailureKind::Outage => {
                new.attempts = new.attempts.saturating_sub(1);
                new.stalled_grants = new.stalled_grants.saturating_sub(1);
                FailOutcome::Retrying {
                    not_before_ms: now_ms + 500,
                }
            }
            FailureKind::Retryable if new.attempts < max_attempts => FailOutcome::Retrying {
                not_before_ms: now_ms + 1000 * (1i64 << new.attempts.min(5)),
            },
            _ => FailOutcome::Failed,
        };
        match outcome {
            FailOutcome::Retrying { not_before_ms } => {
                new.state = TaskState::Pending;
                new.not_before_ms = not_before_ms;
            }
            FailOutcome::Failed => new.state = TaskState::Failed,
        }
        self.task_state
            .insert(task_key(holder.plan_id, id), to_json(&new))?;
        e.schedule.update(id, &old, &new);
        e.tasks[id as usize].progress = new;
        Ok(self.changed(outcome))
    }

    /// Lease counts across plans that are not cancelled.
    pub fn lease_gauges(&self, now_ms: i64, grace_ms: u64) -> LeaseGauges {
        let mem = self.lock();
        let mut g = LeaseGauges::default();
        for e in mem.values().filter(|e| !e.record.cancelled) {
            g.live += e.schedule.live(now_ms);
            g.waiting += e.schedule.waiting(now_ms);
            g.expired += e.schedule.expired(now_ms, grace_ms);
        }
        g
    }

    // ----------------------------------------------------------------------------------
    // Segment lists, offset runs and skipped segments: read a page at a time
    // ----------------------------------------------------------------------------------

    /// Up to `limit` segments of a task from index `from` on.
    pub fn segments_page(
        &self,
        plan_id: &str,
        task_id: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>, LedgerError> {
        let start = task_item_key(plan_id, task_id, from);
        let prefix = task_key(plan_id, task_id);
        self.segments
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode_segment(&k, &v)
            })
            .collect()
    }

    /// The index of the first segment of a task that can hold `offset` or anything after it
    /// (its end offset is at or past it), by binary search over the stored list: the resume
    /// point of a task with a million segments costs ~20 reads.
    pub fn segment_index_for(
        &self,
        plan_id: &str,
        task_id: u32,
        segment_count: u64,
        offset: i64,
    ) -> Result<u64, LedgerError> {
        let (mut lo, mut hi) = (0u64, segment_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let k = task_item_key(plan_id, task_id, mid);
            let v = self.segments.get(&k)?.ok_or_else(|| LedgerError::Decode {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: format!("segment {mid} of {segment_count} is missing"),
            })?;
            if segment_end_offset(&k, &v)? >= offset {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// All offset runs of a task, ordered by source offset.
    pub fn offset_runs(
        &self,
        plan_id: &str,
        task_id: u32,
    ) -> Result<Vec<OffsetRunRecord>, LedgerError> {
        self.offset_runs_page(plan_id, task_id, i64::MIN, usize::MAX)
    }

    /// Up to `limit` offset runs of a task whose source start is at or after `from`.
    pub fn offset_runs_page(
        &self,
        plan_id: &str,
        task_id: u32,
        from: i64,
        limit: usize,
    ) -> Result<Vec<OffsetRunRecord>, LedgerError> {
        let start = task_item_key(plan_id, task_id, u64::try_from(from).unwrap_or(0));
        let prefix = task_key(plan_id, task_id);
        self.runs
            .range(start..)
            .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode_run(&k, &v)
            })
            .collect()
    }

    /// The last offset run of a task starting at or before `offset` and the first starting
    /// after it: all that translating one committed offset needs (see `offsets.rs`).
    pub fn runs_around(
        &self,
        plan_id: &str,
        task_id: u32,
        offset: i64,
    ) -> Result<(Option<OffsetRunRecord>, Option<OffsetRunRecord>), LedgerError> {
        let prefix = task_key(plan_id, task_id);
        let decode = |kv: Option<sled::Result<(sled::IVec, sled::IVec)>>| match kv.transpose()? {
            Some((k, v)) if k.starts_with(&prefix) => decode_run(&k, &v).map(Some),
            _ => Ok(None),
        };
        let Ok(at) = u64::try_from(offset) else {
            return Ok((None, decode(self.runs.scan_prefix(&prefix).next())?));
        };
        let before = decode(
            self.runs
                .range(prefix.clone()..=task_item_key(plan_id, task_id, at))
                .next_back(),
        )?;
        let after = match at.checked_add(1) {
            Some(next) => decode(
                self.runs
                    .range(task_item_key(plan_id, task_id, next)..)
                    .next(),
            )?,
            None => None,
        };
        Ok((before, after))
    }

    /// The first `limit` notes on segments a task skipped.
    pub fn skipped_segments(
        &self,
        plan_id: &str,
        task_id: u32,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        self.skipped
            .scan_prefix(task_key(plan_id, task_id))
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                Ok(String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }

    /// On-disk size of the ledger (bench and diagnostics).
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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

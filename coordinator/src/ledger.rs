//! The restore ledger: the coordinator's only source of truth, kept in sled so that a
//! restore survives a coordinator restart. It holds plans (spec, cancel flag), tasks (state,
//! lease with epoch and expiry, last acknowledged checkpoint) and the exact offset runs
//! reported by workers.
//!
//! Every change is one sled transaction over the trees it touches and is flushed before the
//! caller answers, so an acknowledged checkpoint or grant is durable. Read-modify-write
//! sequences are serialised by one mutex: contention is a handful of workers reporting every
//! few seconds, far below what sled does per second.

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::path::Path;
use std::sync::Mutex;
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

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Leased,
    Completed,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub worker_id: String,
    pub epoch: u64,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub source_next_offset: i64,
    pub target_next_offset: i64,
    pub records_done: u64,
    pub bytes_done: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentEntry {
    pub key: String,
    pub start_offset: i64,
    pub end_offset: i64,
    pub record_count: u64,
    pub compressed_size: u64,
    /// The seek index, kept for a task's first segment only (where a time window starts):
    /// task records are rewritten on every checkpoint and must stay small.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<kafka_backup_common::manifest::SegmentFrame>,
}

impl SegmentEntry {
    /// A planned task's segments as the ledger keeps them (seek index on the first only).
    pub fn for_task(segments: &[kafka_backup_common::manifest::SegmentMeta]) -> Vec<Self> {
        segments
            .iter()
            .enumerate()
            .map(|(n, s)| SegmentEntry {
                key: s.key.clone(),
                start_offset: s.start_offset,
                end_offset: s.end_offset,
                record_count: s.record_count,
                compressed_size: s.compressed_size,
                frames: if n == 0 { s.frames.clone() } else { Vec::new() },
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    pub task_id: u32,
    pub source_topic: String,
    pub source_partition: i32,
    pub target_topic: String,
    pub target_partition: i32,
    pub segments: Vec<SegmentEntry>,
    pub records_total: u64,
    pub bytes_total: u64,
    pub state: TaskState,
    /// Last epoch granted; the next grant uses epoch + 1.
    pub epoch: u64,
    pub lease: Option<Lease>,
    pub checkpoint: Option<Checkpoint>,
    pub attempts: u32,
    pub error: String,
    /// Not re-granted before this time (backoff after a retryable failure).
    pub not_before_ms: i64,
    pub started_at_ms: i64,
    /// Segments skipped as missing or corrupt, with the reason (skip_corrupt_segments).
    #[serde(default)]
    pub skipped_segments: Vec<String>,
}

/// A run of consecutive source offsets mapped one to one onto target offsets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct OffsetRunRecord {
    pub source_start: i64,
    pub target_start: i64,
    pub length: u64,
}

/// Who claims to hold a task's lease: every worker report names all four.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub plan_id: &'a str,
    pub task_id: u32,
    pub worker_id: &'a str,
    pub epoch: u64,
}

pub struct Ledger {
    db: sled::Db,
    plans: sled::Tree,
    tasks: sled::Tree,
    runs: sled::Tree,
    fingerprints: sled::Tree,
    lock: Mutex<()>,
}

fn task_key(plan: &str, task: u32) -> Vec<u8> {
    let mut k = plan.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&task.to_be_bytes());
    k
}

fn plan_prefix(plan: &str) -> Vec<u8> {
    let mut k = plan.as_bytes().to_vec();
    k.push(0);
    k
}

fn run_key(plan: &str, task: u32, source_start: i64) -> Vec<u8> {
    let mut k = task_key(plan, task);
    // Offsets are >= 0, so big-endian bytes sort numerically.
    k.extend_from_slice(&source_start.to_be_bytes());
    k
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs with string keys cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn dec<T: for<'a> Deserialize<'a>>(key: &[u8], v: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(v).map_err(|e| LedgerError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

type TxResult<T> = Result<T, ConflictableTransactionError<LedgerError>>;

fn abort<T>(e: LedgerError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`. sled locks the directory, so two coordinators
    /// can never share one ledger.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        let db = sled::open(dir).map_err(|e| LedgerError::Open {
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

    /// A throw-away ledger for a dry run, in `dir`, which the caller removes. Nothing in it
    /// needs to reach the disk, so it has no periodic flusher.
    pub fn scratch(dir: &Path) -> Result<Self, LedgerError> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        Self::from_db(db)
    }

    fn from_db(db: sled::Db) -> Result<Self, LedgerError> {
        Ok(Self {
            plans: db.open_tree("plans")?,
            tasks: db.open_tree("tasks")?,
            runs: db.open_tree("offset_runs")?,
            fingerprints: db.open_tree("fingerprints")?,
            db,
            lock: Mutex::new(()),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&self) -> Result<(), LedgerError> {
        self.db.flush()?;
        Ok(())
    }

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

    /// Records a new plan and its tasks in one transaction.
    pub fn create_plan(&self, plan: &PlanRecord, tasks: &[TaskRecord]) -> Result<(), LedgerError> {
        let _g = self.guard();
        (&self.plans, &self.tasks, &self.fingerprints).transaction(|(p, t, f)| {
            p.insert(plan.plan_id.as_bytes(), enc(plan))?;
            f.insert(plan.fingerprint.as_bytes(), plan.plan_id.as_bytes())?;
            for task in tasks {
                t.insert(task_key(&plan.plan_id, task.task_id), enc(task))?;
            }
            Ok(())
        })?;
        self.flush()
    }

    pub fn plan(&self, plan_id: &str) -> Result<PlanRecord, LedgerError> {
        let v = self
            .plans
            .get(plan_id)?
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        dec(plan_id.as_bytes(), &v)
    }

    pub fn plans(&self) -> Result<Vec<PlanRecord>, LedgerError> {
        self.plans
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                dec(&k, &v)
            })
            .collect()
    }

    pub fn tasks(&self, plan_id: &str) -> Result<Vec<TaskRecord>, LedgerError> {
        self.tasks
            .scan_prefix(plan_prefix(plan_id))
            .map(|kv| {
                let (k, v) = kv?;
                dec(&k, &v)
            })
            .collect()
    }

    pub fn offset_runs(
        &self,
        plan_id: &str,
        task_id: u32,
    ) -> Result<Vec<OffsetRunRecord>, LedgerError> {
        self.runs
            .scan_prefix(task_key(plan_id, task_id))
            .map(|kv| {
                let (k, v) = kv?;
                dec(&k, &v)
            })
            .collect()
    }

    /// Sets or clears the cancel flag; resuming also re-queues failed tasks.
    pub fn set_cancelled(&self, plan_id: &str, cancelled: bool) -> Result<(), LedgerError> {
        let _g = self.guard();
        let mut plan = self.plan(plan_id)?;
        plan.cancelled = cancelled;
        let tasks = if cancelled {
            vec![]
        } else {
            self.tasks(plan_id)?
        };
        (&self.plans, &self.tasks).transaction(|(p, t)| {
            p.insert(plan_id.as_bytes(), enc(&plan))?;
            for task in &tasks {
                if task.state == TaskState::Failed {
                    let mut task = task.clone();
                    task.state = TaskState::Pending;
                    task.attempts = 0;
                    task.error.clear();
                    t.insert(task_key(plan_id, task.task_id), enc(&task))?;
                }
            }
            Ok(())
        })?;
        self.flush()
    }

    /// Grants a lease on the first runnable task of the given plans: pending, or leased with
    /// a lease that expired more than `grace_ms` ago. The epoch increases on every grant.
    pub fn grant(
        &self,
        plan_ids: &[String],
        worker_id: &str,
        now_ms: i64,
        ttl_ms: u64,
        grace_ms: u64,
    ) -> Result<Option<(PlanRecord, TaskRecord)>, LedgerError> {
        let _g = self.guard();
        for plan_id in plan_ids {
            let plan = self.plan(plan_id)?;
            if plan.cancelled {
                continue;
            }
            for mut task in self.tasks(plan_id)? {
                let runnable = match (&task.state, &task.lease) {
                    (TaskState::Pending, _) => task.not_before_ms <= now_ms,
                    (TaskState::Leased, Some(l)) => l.expires_at_ms + grace_ms as i64 <= now_ms,
                    (TaskState::Leased, None) => true,
                    _ => false,
                };
                if !runnable {
                    continue;
                }
                if task.state == TaskState::Leased {
                    tracing::warn!(plan = %plan_id, task = task.task_id, "lease expired; re-granting");
                    crate::metrics::METRICS.lease_expiries.inc();
                }
                crate::metrics::METRICS.leases_granted.inc();
                task.epoch += 1;
                task.state = TaskState::Leased;
                task.attempts += 1;
                if task.started_at_ms == 0 {
                    task.started_at_ms = now_ms;
                }
                task.lease = Some(Lease {
                    worker_id: worker_id.to_string(),
                    epoch: task.epoch,
                    expires_at_ms: now_ms + ttl_ms as i64,
                });
                self.tasks
                    .insert(task_key(plan_id, task.task_id), enc(&task))?;
                self.flush()?;
                return Ok(Some((plan, task)));
            }
        }
        Ok(None)
    }

    /// Applies `change` to a task only if (worker, epoch) holds its current lease and the
    /// plan is not cancelled; otherwise the caller is fenced.
    fn with_lease<T>(
        &self,
        holder: Holder<'_>,
        require_unexpired_at: Option<i64>,
        change: impl Fn(&mut TaskRecord, &sled::transaction::TransactionalTree) -> TxResult<T>,
    ) -> Result<T, LedgerError> {
        let Holder {
            plan_id,
            task_id,
            worker_id,
            epoch,
        } = holder;
        let _g = self.guard();
        let plan = self.plan(plan_id)?;
        let key = task_key(plan_id, task_id);
        let fenced = |reason: String| LedgerError::Fenced {
            plan: plan_id.to_string(),
            task: task_id,
            reason,
        };
        let out = (&self.tasks, &self.runs).transaction(|(t, r)| {
            let Some(raw) = t.get(&key)? else {
                return abort(LedgerError::UnknownTask {
                    plan: plan_id.to_string(),
                    task: task_id,
                });
            };
            let mut task: TaskRecord =
                dec(&key, &raw).map_err(ConflictableTransactionError::Abort)?;
            if plan.cancelled {
                return abort(fenced("the plan was cancelled".into()));
            }
            let Some(lease) = task.lease.clone() else {
                return abort(fenced("the task holds no lease".into()));
            };
            if task.state != TaskState::Leased
                || lease.epoch != epoch
                || lease.worker_id != worker_id
            {
                return abort(fenced(format!(
                    "lease epoch {epoch} of {worker_id} was superseded by epoch {} of {}",
                    lease.epoch, lease.worker_id
                )));
            }
            if let Some(now) = require_unexpired_at {
                if lease.expires_at_ms < now {
                    return abort(fenced("the lease expired".into()));
                }
            }
            let v = change(&mut task, r)?;
            t.insert(key.as_slice(), enc(&task))?;
            Ok(v)
        })?;
        self.flush()?;
        Ok(out)
    }

    /// Renews a live lease.
    pub fn renew(&self, holder: Holder<'_>, now_ms: i64, ttl_ms: u64) -> Result<(), LedgerError> {
        self.with_lease(holder, Some(now_ms), |task, _| {
            if let Some(l) = task.lease.as_mut() {
                l.expires_at_ms = now_ms + ttl_ms as i64;
            }
            Ok(())
        })
    }

    /// Stores an acknowledged checkpoint and its offset runs; `complete` also ends the task.
    /// Returns how many records this checkpoint newly acknowledges.
    pub fn checkpoint(
        &self,
        holder: Holder<'_>,
        cp: &Checkpoint,
        runs: &[OffsetRunRecord],
        skipped: &[String],
        complete: bool,
    ) -> Result<u64, LedgerError> {
        let (plan_id, task_id) = (holder.plan_id, holder.task_id);
        self.with_lease(holder, None, |task, r| {
            if let Some(prev) = &task.checkpoint {
                if cp.source_next_offset < prev.source_next_offset {
                    return abort(LedgerError::Fenced {
                        plan: plan_id.to_string(),
                        task: task_id,
                        reason: format!(
                            "checkpoint goes backwards ({} < {})",
                            cp.source_next_offset, prev.source_next_offset
                        ),
                    });
                }
            }
            let prev = task.checkpoint.clone().unwrap_or_default();
            let m = &crate::metrics::METRICS;
            m.checkpoints.inc();
            m.records_restored
                .add(cp.records_done.saturating_sub(prev.records_done));
            m.bytes_restored
                .add(cp.bytes_done.saturating_sub(prev.bytes_done));
            task.checkpoint = Some(cp.clone());
            task.skipped_segments.extend(skipped.iter().cloned());
            for run in runs {
                r.insert(run_key(plan_id, task_id, run.source_start), enc(run))?;
            }
            if complete {
                task.state = TaskState::Completed;
                task.lease = None;
            }
            Ok(cp.records_done.saturating_sub(prev.records_done))
        })
    }

    /// The holder gives a task up. Retryable failures go back to pending after a backoff
    /// until `max_attempts`; others fail the task. An `outage` (target or object store
    /// unreachable) gives the attempt back: the plan's circuit breaker paces those retries,
    /// and an outage must not fail a task whose data is fine.
    pub fn fail(
        &self,
        holder: Holder<'_>,
        error: &str,
        retryable: bool,
        outage: bool,
        now_ms: i64,
        max_attempts: u32,
    ) -> Result<(), LedgerError> {
        self.with_lease(holder, None, |task, _| {
            task.lease = None;
            task.error = error.to_string();
            if retryable && outage {
                task.state = TaskState::Pending;
                task.attempts = task.attempts.saturating_sub(1);
                task.not_before_ms = now_ms + 500;
            } else if retryable && task.attempts < max_attempts {
                task.state = TaskState::Pending;
                task.not_before_ms = now_ms + 1000 * (1i64 << task.attempts.min(5));
            } else {
                task.state = TaskState::Failed;
            }
            Ok(())
        })
    }

    /// Number of leases that are past expiry + grace (for status and metrics).
    pub fn expired_leases(&self, now_ms: i64, grace_ms: u64) -> Result<usize, LedgerError> {
        let mut n = 0;
        for kv in self.tasks.iter() {
            let (k, v) = kv?;
            let t: TaskRecord = dec(&k, &v)?;
            if let (TaskState::Leased, Some(l)) = (&t.state, &t.lease) {
                if l.expires_at_ms + (grace_ms as i64) < now_ms {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

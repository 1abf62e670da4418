//! Leases: grant, renew, checkpoint, fail. Each checks the holder against the task's current
//! lease (fencing), changes only the task's small progress record (plus appended offset runs
//! and skipped-segment notes) and keeps the grant schedule in step.

use super::codec::{encode_run, task_item_key, task_key, to_json};
use super::model::*;
use super::{
    abort, fenced, stalled_error, CheckpointOutcome, Committed, FailOutcome, Grant, GrantOutcome,
    GrantPolicy, LeaseGauges, Ledger, LedgerError, PlanEntry, StalledTask,
};
use sled::Transactional;
use std::collections::HashMap;
use std::sync::Arc;

impl Ledger {
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
    /// it has not expired), and returns the plan entry for a change. A cancelled plan's
    /// holder is still its holder: its checkpoints, completion and hand-back are taken (a
    /// cancel counts every record written, and leaves nothing to wait out on resume); only
    /// its renewal is refused (`renew`), which is how it learns to stop.
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
        // A cancelled plan's lease is not renewed: its holder stops. Its final checkpoint and
        // hand-back are still taken (see `holder_entry`), so nothing waits for it to expire.
        if e.record.cancelled {
            return Err(LedgerError::PlanCancelled {
                plan: holder.plan_id.to_string(),
                task: id,
            });
        }
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
        if let Some(why) = merge_positions_refused(&e.tasks[id as usize].meta, prev.as_ref(), cp) {
            return Err(fenced(plan_id, id, why));
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
                let source = OffsetRunRecord::key_position(r.source_index, r.source_start)
                    .map_or_else(
                        || {
                            abort(fenced(
                                plan_id,
                                id,
                                format!(
                                    "source offset {} of a run is out of range",
                                    r.source_start
                                ),
                            ))
                        },
                        Ok,
                    )?;
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
            plan_cancelled: e.record.cancelled,
        }))
    }

    /// The holder gives a task up. Retryable failures go back to pending after a backoff
    /// until `max_attempts`; fatal ones fail the task. An outage gives the attempt (and the
    /// no-progress count) back: the plan's circuit breaker paces those retries, and an outage
    /// must not fail a task whose data is fine. A task handed back by a holder that shuts
    /// down is at once grantable again, as if never granted.
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
            FailureKind::HandedBack => {
                new.attempts = new.attempts.saturating_sub(1);
                new.stalled_grants = new.stalled_grants.saturating_sub(1);
                new.error = String::new();
                FailOutcome::Retrying {
                    not_before_ms: now_ms,
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
}

/// Why a merge task's checkpoint is refused: one next offset per source, none going back
/// (the sum the ledger compares for every task would hide one source going back while
/// another moves on). `None` when it is acceptable or the task is 1:1.
fn merge_positions_refused(
    meta: &TaskMeta,
    prev: Option<&Checkpoint>,
    cp: &Checkpoint,
) -> Option<String> {
    if meta.merge_sources.is_empty() {
        return (!cp.source_next_offsets.is_empty())
            .then(|| "per-source offsets for a task that merges nothing".to_string());
    }
    if cp.source_next_offsets.len() != meta.merge_sources.len() {
        return Some(format!(
            "{} per-source offsets for a merge of {} partitions",
            cp.source_next_offsets.len(),
            meta.merge_sources.len()
        ));
    }
    let before = prev
        .map(|p| p.source_next_offsets.as_slice())
        .unwrap_or_default();
    before
        .iter()
        .zip(&cp.source_next_offsets)
        .position(|(b, n)| n < b)
        .map(|i| {
            format!(
                "merge source {i} goes backwards ({} < {})",
                cp.source_next_offsets[i], before[i]
            )
        })
}

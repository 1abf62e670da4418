//! Plans: creating one with its segment lists, reading plans and tasks, cancel and resume.

use super::codec::{task_key, to_json};
use super::model::*;
use super::schedule::Schedule;
use super::{Committed, Ledger, LedgerError, NewTask, PlanEntry, TaskSlot};
use sled::Transactional;
use std::sync::Arc;

impl Ledger {
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

    /// Records a new plan: first every task's segment list (written to the plan's list files
    /// and synced, as they may hold millions of entries), then the plan, its tasks and its
    /// fingerprint in one transaction, which is what makes the plan exist.
    pub fn create_plan(
        &self,
        plan: PlanRecord,
        tasks: Vec<NewTask>,
    ) -> Result<Committed<()>, LedgerError> {
        let plan_id = plan.plan_id.clone();
        self.incomplete.insert(plan_id.as_bytes(), &[])?;
        let mut writer = self.segments.create(&plan_id)?;
        let mut metas = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.into_iter().enumerate() {
            if task.meta.task_id as usize != i {
                return Err(LedgerError::UnknownTask {
                    plan: plan_id,
                    task: task.meta.task_id,
                });
            }
            let mut meta = task.meta;
            meta.segment_count = task.segments.len() as u64;
            meta.segments_base = writer.append(task.segments)?;
            metas.push(meta);
        }
        writer.finish()?;
        self.segments.sync_dir()?;
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

    /// Sets the cancel flag: no more grants or renewals; holders stop, checkpoint and hand
    /// their tasks back (see `renew`).
    pub fn cancel(&self, plan_id: &str) -> Result<Committed<()>, LedgerError> {
        self.update_record(plan_id, |r| r.cancelled = true)
    }

    /// Replaces a plan's stored spec (a resubmission's run settings; the plan service keeps
    /// what the plan writes unchanged).
    pub fn update_spec(&self, plan_id: &str, spec: Vec<u8>) -> Result<Committed<()>, LedgerError> {
        self.update_record(plan_id, |r| r.spec = spec)
    }

    /// Changes a plan's record, in the ledger and in memory.
    fn update_record(
        &self,
        plan_id: &str,
        change: impl FnOnce(&mut PlanRecord),
    ) -> Result<Committed<()>, LedgerError> {
        let mut mem = self.lock();
        let e = mem
            .get_mut(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let mut record = e.record.clone();
        change(&mut record);
        self.plans_tree
            .insert(plan_id.as_bytes(), to_json(&record))?;
        e.record = record;
        Ok(self.changed(()))
    }

    /// Clears the cancel flag and re-queues failed tasks with fresh attempts.
    pub fn resume(&self, plan_id: &str) -> Result<Committed<()>, LedgerError> {
        let reopened = self.reopen(plan_id, true)?;
        Ok(Committed {
            value: (),
            seq: reopened.seq,
        })
    }

    /// Re-queues failed tasks with fresh attempts and leaves the cancel flag as it is: a
    /// resubmitted restore retries what failed (a segment repaired, or now skipped), but an
    /// operator's cancel is only undone by an explicit resume. Returns how many.
    pub fn retry_failed(&self, plan_id: &str) -> Result<Committed<usize>, LedgerError> {
        self.reopen(plan_id, false)
    }

    fn reopen(&self, plan_id: &str, uncancel: bool) -> Result<Committed<usize>, LedgerError> {
        let mut mem = self.lock();
        let e = mem
            .get_mut(plan_id)
            .ok_or_else(|| LedgerError::UnknownPlan(plan_id.to_string()))?;
        let mut record = e.record.clone();
        if uncancel {
            record.cancelled = false;
        }
        let failed = e
            .tasks
            .iter()
            .any(|t| t.progress.state == TaskState::Failed);
        // A resubmission of a plan with nothing failed (the usual rerun) writes nothing.
        if !failed && record.cancelled == e.record.cancelled {
            return Ok(self.changed(0));
        }
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
        let count = requeued.len();
        for (id, p) in requeued {
            let slot = &mut e.tasks[id as usize];
            e.schedule.update(id, &slot.progress, &p);
            slot.progress = p;
        }
        Ok(self.changed(count))
    }
}

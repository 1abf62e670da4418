//! Which tasks of a plan can be granted next, kept as two ordered sets so that a grant finds
//! one in O(log n) instead of reading every task: pending tasks by the time they may run
//! (then task id, so a fresh plan is granted in task order), and leased tasks by when their
//! lease expires (a lease past expiry + grace is re-granted). Completed and failed tasks are
//! in neither. It is derived from the tasks' progress records, rebuilt when the ledger opens
//! and updated with every change, under the ledger's lock.

use super::model::{TaskProgress, TaskState};
use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct Schedule {
    pending: BTreeSet<(i64, u32)>,
    leased: BTreeSet<(i64, u32)>,
}

/// Where a task sits in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Pending(i64),
    Leased(i64),
    None,
}

fn slot(p: &TaskProgress) -> Slot {
    match (p.state, &p.lease) {
        (TaskState::Pending, _) => Slot::Pending(p.not_before_ms),
        (TaskState::Leased, Some(l)) => Slot::Leased(l.expires_at_ms),
        // A leased task without a lease record is runnable at once.
        (TaskState::Leased, None) => Slot::Pending(i64::MIN),
        _ => Slot::None,
    }
}

/// A task the schedule offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub task_id: u32,
    /// Its previous lease expired (a re-grant, not a first or retried grant).
    pub expired: bool,
}

impl Schedule {
    pub fn insert(&mut self, task_id: u32, p: &TaskProgress) {
        match slot(p) {
            Slot::Pending(t) => {
                self.pending.insert((t, task_id));
            }
            Slot::Leased(t) => {
                self.leased.insert((t, task_id));
            }
            Slot::None => {}
        }
    }

    pub fn remove(&mut self, task_id: u32, p: &TaskProgress) {
        match slot(p) {
            Slot::Pending(t) => {
                self.pending.remove(&(t, task_id));
            }
            Slot::Leased(t) => {
                self.leased.remove(&(t, task_id));
            }
            Slot::None => {}
        }
    }

    /// Moves a task from where `old` put it to where `new` puts it.
    pub fn update(&mut self, task_id: u32, old: &TaskProgress, new: &TaskProgress) {
        if slot(old) != slot(new) {
            self.remove(task_id, old);
            self.insert(task_id, new);
        }
    }

    /// The next grantable task at `now`, if any: a pending one whose backoff has passed, else
    /// a leased one whose lease expired more than `grace_ms` ago.
    pub fn next(&self, now_ms: i64, grace_ms: u64) -> Option<Candidate> {
        if let Some(&(t, id)) = self.pending.first() {
            if t <= now_ms {
                return Some(Candidate {
                    task_id: id,
                    expired: false,
                });
            }
        }
        let &(t, id) = self.leased.first()?;
        (t.saturating_add(grace_ms as i64) <= now_ms).then_some(Candidate {
            task_id: id,
            expired: true,
        })
    }

    /// When the earliest task becomes grantable (for the retry hint), if any is waiting.
    pub fn next_due(&self, grace_ms: u64) -> Option<i64> {
        let p = self.pending.first().map(|&(t, _)| t);
        let l = self
            .leased
            .first()
            .map(|&(t, _)| t.saturating_add(grace_ms as i64));
        match (p, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// No task is pending or leased: the plan has nothing left to run.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.leased.is_empty()
    }

    /// Leases expired by more than `grace_ms` at `now` (status and metrics).
    pub fn expired(&self, now_ms: i64, grace_ms: u64) -> usize {
        self.leased
            .range(..(now_ms.saturating_sub(grace_ms as i64), 0))
            .count()
    }

    /// Live leases at `now`.
    pub fn live(&self, now_ms: i64) -> usize {
        self.leased.range((now_ms, 0)..).count()
    }

    /// Tasks waiting for a worker, counting leases past expiry.
    pub fn waiting(&self, now_ms: i64) -> usize {
        self.pending.len() + self.leased.range(..(now_ms, 0)).count()
    }
}

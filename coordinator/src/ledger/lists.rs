//! The per-task lists that grow with a partition (segment entries, offset runs, skipped
//! segment notes), read a page at a time and never whole in a hot path.

use super::codec::{decode_run, task_item_key, task_key};
use super::model::*;
use super::{Ledger, LedgerError};

/// Up to `limit` items of one task from item number `from` on, decoded.
fn scan_task_items<T>(
    tree: &sled::Tree,
    plan_id: &str,
    task_id: u32,
    from: u64,
    limit: usize,
    decode: fn(&[u8], &[u8]) -> Result<T, LedgerError>,
) -> Result<Vec<T>, LedgerError> {
    let prefix = task_key(plan_id, task_id);
    tree.range(task_item_key(plan_id, task_id, from)..)
        .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
        .take(limit)
        .map(|kv| {
            let (k, v) = kv?;
            decode(&k, &v)
        })
        .collect()
}

impl Ledger {
    /// The task's place in its plan's segment lists: (first entry, entry count).
    fn segment_range(&self, plan_id: &str, task_id: u32) -> Result<(u64, u64), LedgerError> {
        let t = self.task(plan_id, task_id)?;
        Ok((t.meta.segments_base, t.meta.segment_count))
    }

    /// Up to `limit` segments of a task from index `from` on.
    pub fn segments_page(
        &self,
        plan_id: &str,
        task_id: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<SegmentEntry>, LedgerError> {
        let (base, count) = self.segment_range(plan_id, task_id)?;
        let n = count.saturating_sub(from).min(limit as u64);
        self.segments.page(plan_id, base + from.min(count), n)
    }

    /// The index of the first segment of a task that can hold `offset` or anything after it
    /// (its end offset is at or past it), by binary search over the plan's segment index:
    /// the resume point of a task with a million segments costs ~20 small reads.
    pub fn segment_index_for(
        &self,
        plan_id: &str,
        task_id: u32,
        offset: i64,
    ) -> Result<u64, LedgerError> {
        let (base, count) = self.segment_range(plan_id, task_id)?;
        let (mut lo, mut hi) = (0u64, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.segments.end_offset(plan_id, base + mid)? >= offset {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    /// All offset runs of a task, ordered by merge source, then source offset.
    pub fn offset_runs(
        &self,
        plan_id: &str,
        task_id: u32,
    ) -> Result<Vec<OffsetRunRecord>, LedgerError> {
        scan_task_items(&self.runs, plan_id, task_id, 0, usize::MAX, decode_run)
    }

    /// Up to `limit` offset runs of merge source `source` (0 for a 1:1 task) of a task whose
    /// source start is at or after `from`.
    pub fn offset_runs_page(
        &self,
        plan_id: &str,
        task_id: u32,
        source: u32,
        from: i64,
        limit: usize,
    ) -> Result<Vec<OffsetRunRecord>, LedgerError> {
        let from = OffsetRunRecord::key_position(source, from.max(0)).unwrap_or(u64::MAX);
        let mut runs = scan_task_items(&self.runs, plan_id, task_id, from, limit, decode_run)?;
        runs.retain(|r| r.source_index == source);
        Ok(runs)
    }

    /// The last offset run of a task starting at or before `offset` and the first starting
    /// after it: all that translating one committed offset needs (see `offsets.rs`).
    /// Of merge source `source` (0 for a 1:1 task).
    pub fn runs_around(
        &self,
        plan_id: &str,
        task_id: u32,
        source: u32,
        offset: i64,
    ) -> Result<(Option<OffsetRunRecord>, Option<OffsetRunRecord>), LedgerError> {
        let prefix = task_key(plan_id, task_id);
        let decode = |kv: Option<sled::Result<(sled::IVec, sled::IVec)>>| match kv.transpose()? {
            Some((k, v)) if k.starts_with(&prefix) => {
                decode_run(&k, &v).map(|r| (r.source_index == source).then_some(r))
            }
            _ => Ok(None),
        };
        let first = OffsetRunRecord::key_position(source, 0).unwrap_or(u64::MAX);
        let Some(at) = OffsetRunRecord::key_position(source, offset) else {
            if offset < 0 {
                let after = self
                    .runs
                    .range(task_item_key(plan_id, task_id, first)..)
                    .next();
                return Ok((None, decode(after)?));
            }
            return Ok((None, None));
        };
        let before = decode(
            self.runs
                .range(task_item_key(plan_id, task_id, first)..=task_item_key(plan_id, task_id, at))
                .next_back(),
        )?;
        let after = decode(
            self.runs
                .range(task_item_key(plan_id, task_id, at + 1)..)
                .next(),
        )?;
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

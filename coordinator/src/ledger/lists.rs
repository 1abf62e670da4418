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
        let from = u64::try_from(from).unwrap_or(0);
        scan_task_items(&self.runs, plan_id, task_id, from, limit, decode_run)
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

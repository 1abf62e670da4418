//! Exact consumer-offset translation from the offset runs workers reported. Because every
//! run comes from the broker's own delivery reports, the translation is exact even where the
//! source has gaps (compaction, deleted heads, transaction markers) or the restore skipped a
//! time range — unlike header or timestamp searches on the target.

use crate::ledger::OffsetRunRecord;

/// Target offset for committed source offset `committed`: the target offset of the first
/// restored record at or after it. `before` is the last run starting at or before
/// `committed`, `after` the first run starting after it (the ledger reads just those two);
/// `end_if_done` is where the restore ended, when the task has completed. `None` when the
/// answer depends on records not restored yet.
pub fn translate(
    committed: i64,
    before: Option<&OffsetRunRecord>,
    after: Option<&OffsetRunRecord>,
    end_if_done: Option<i64>,
) -> Option<i64> {
    if let Some(run) = before {
        if committed < run.source_start + run.length as i64 {
            return Some(run.target_start + (committed - run.source_start).max(0));
        }
    }
    if let Some(run) = after {
        return Some(run.target_start);
    }
    // Every restored record is before `committed`: the group has read all of them.
    end_if_done
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runs around `c`, as the ledger would pick them.
    fn around(
        runs: &[OffsetRunRecord],
        c: i64,
    ) -> (Option<&OffsetRunRecord>, Option<&OffsetRunRecord>) {
        (
            runs.iter().rev().find(|r| r.source_start <= c),
            runs.iter().find(|r| r.source_start > c),
        )
    }

    #[test]
    fn gaps_and_bounds() {
        // Source offsets 0,1,2 then 10,11 then 20 landed at target 100..=105.
        let runs = [
            OffsetRunRecord {
                source_start: 0,
                target_start: 100,
                length: 3,
                source_index: 0,
            },
            OffsetRunRecord {
                source_start: 10,
                target_start: 103,
                length: 2,
                source_index: 0,
            },
            OffsetRunRecord {
                source_start: 20,
                target_start: 105,
                length: 1,
                source_index: 0,
            },
        ];
        let done = Some(106);
        let t = |c: i64, end: Option<i64>| {
            let (b, a) = around(&runs, c);
            translate(c, b, a, end)
        };
        assert_eq!(t(0, done), Some(100));
        assert_eq!(t(-1, done), Some(100), "before the first run");
        assert_eq!(t(2, done), Some(102));
        assert_eq!(t(3, done), Some(103), "inside a gap: next restored record");
        assert_eq!(t(11, done), Some(104));
        assert_eq!(t(15, done), Some(105));
        assert_eq!(t(21, done), Some(106), "past the end: end of restore");
        assert_eq!(t(50, None), None, "not known before the task completes");
    }
}

//! Exact consumer-offset translation from the offset runs workers reported. Because every
//! run comes from the broker's own delivery reports, the translation is exact even where the
//! source has gaps (compaction, deleted heads, transaction markers) or the restore skipped a
//! time range — unlike header or timestamp searches on the target.

use crate::ledger::{OffsetRunRecord, TaskRecord, TaskState};

/// Target offset for committed source offset `committed`, given the task's runs (sorted by
/// source offset). `None` when the answer depends on records not restored yet.
pub fn translate(committed: i64, runs: &[OffsetRunRecord], task: &TaskRecord) -> Option<i64> {
    for run in runs {
        let end = run.source_start + run.length as i64;
        if committed <= run.source_start {
            return Some(run.target_start);
        }
        if committed < end {
            return Some(run.target_start + (committed - run.source_start));
        }
    }
    // Every restored record is before `committed`: the group has read all of them.
    match (&task.state, &task.checkpoint) {
        (TaskState::Completed, Some(cp)) => Some(cp.target_next_offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Checkpoint;

    fn task(done: bool) -> TaskRecord {
        TaskRecord {
            task_id: 0,
            source_topic: "t".into(),
            source_partition: 0,
            target_topic: "t2".into(),
            target_partition: 0,
            segments: vec![],
            records_total: 0,
            bytes_total: 0,
            state: if done {
                TaskState::Completed
            } else {
                TaskState::Leased
            },
            epoch: 1,
            lease: None,
            checkpoint: Some(Checkpoint {
                source_next_offset: 21,
                target_next_offset: 106,
                records_done: 6,
                bytes_done: 0,
            }),
            attempts: 1,
            error: String::new(),
            not_before_ms: 0,
            started_at_ms: 0,
            skipped_segments: vec![],
        }
    }

    #[test]
    fn gaps_and_bounds() {
        // Source offsets 0,1,2 then 10,11 then 20 landed at target 100..=105.
        let runs = [
            OffsetRunRecord {
                source_start: 0,
                target_start: 100,
                length: 3,
            },
            OffsetRunRecord {
                source_start: 10,
                target_start: 103,
                length: 2,
            },
            OffsetRunRecord {
                source_start: 20,
                target_start: 105,
                length: 1,
            },
        ];
        let t = task(true);
        assert_eq!(translate(0, &runs, &t), Some(100));
        assert_eq!(translate(2, &runs, &t), Some(102));
        assert_eq!(
            translate(3, &runs, &t),
            Some(103),
            "inside a gap: next restored record"
        );
        assert_eq!(translate(11, &runs, &t), Some(104));
        assert_eq!(translate(15, &runs, &t), Some(105));
        assert_eq!(
            translate(21, &runs, &t),
            Some(106),
            "past the end: end of restore"
        );
        assert_eq!(translate(50, &runs, &task(false)), None);
    }
}

//! The plan report: exactly how many records each task will restore and which source
//! offsets, as shown by dry runs and recorded as task totals. Segments entirely inside the
//! time window are counted from the manifest; only segments cut by the window are read, so
//! the report matches the restore without scanning a whole backup.

use crate::planner::PlannedTask;
use kafka_backup_common::frames;
use kafka_backup_common::segment::DecodedSegment;
use kafka_backup_common::storage::BackupStore;
use kafka_backup_proto::TaskReport;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Storage(#[from] kafka_backup_common::storage::StorageError),
    #[error(transparent)]
    Segment(#[from] kafka_backup_common::segment::SegmentError),
}

/// Counts records/bytes/offsets one task will produce.
pub async fn task_report(
    store: &BackupStore,
    task: &PlannedTask,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(TaskReport, Option<(i64, i64)>), ReportError> {
    let mut r = TaskReport {
        source_topic: task.source_topic.clone(),
        source_partition: task.source_partition,
        target_topic: task.target_topic.clone(),
        target_partition: task.target_partition,
        first_offset: -1,
        last_offset: -1,
        target_start_offset: -1,
        ..Default::default()
    };
    let mut ts_range: Option<(i64, i64)> = None;
    let mut widen = |min: i64, max: i64| {
        ts_range = Some(match ts_range {
            None => (min, max),
            Some((a, b)) => (a.min(min), b.max(max)),
        });
    };
    for seg in &task.segments {
        let mut counted = 0u64;
        if seg.inside(from, to) {
            counted = seg.record_count;
            if counted > 0 {
                if r.first_offset < 0 {
                    r.first_offset = seg.start_offset;
                }
                r.last_offset = seg.end_offset;
            }
            if let Some((min, max)) = seg.bounds {
                widen(min, max);
            }
        } else if let Some(frames) = frames::usable(&seg.frames) {
            // Frames wholly inside or outside the window are counted from the seek index;
            // only the frames the window cuts are read.
            let key = seg.object_key();
            for f in frames {
                if frames::outside(f, from, to) {
                    continue;
                }
                if frames::inside(f, from, to) {
                    counted += f.record_count;
                    if r.first_offset < 0 {
                        r.first_offset = f.first_offset;
                    }
                    r.last_offset = f.last_offset;
                    widen(f.min_timestamp, f.max_timestamp);
                    continue;
                }
                let range = f.position..f.position + f.compressed_len;
                let bytes = store.get_range(&key, range).await?;
                let decoded = frames::decode_frame(&key, &bytes.bytes, f)?;
                counted += count_in_window(&decoded, from, to, &mut r, &mut widen)?;
            }
        } else {
            let key = seg.object_key();
            let bytes = store.get(&key).await?;
            let decoded = DecodedSegment::decode(&key, &bytes)?;
            counted += count_in_window(&decoded, from, to, &mut r, &mut widen)?;
        }
        if counted > 0 {
            r.segments += 1;
            r.records += counted;
            // Bytes are the compressed object sizes: what the restore reads.
            r.bytes += seg.compressed_size;
        }
    }
    if !task.merged.is_empty() {
        // Offsets of several partitions do not make one range.
        r.merged_source_partitions = task.merged.iter().map(|m| m.partition).collect();
        r.first_offset = -1;
        r.last_offset = -1;
    }
    Ok((r, ts_range))
}

/// Counts the records of a decoded segment or frame inside the inclusive window, moving the
/// report's first/last offsets and the timestamp range along.
fn count_in_window(
    decoded: &DecodedSegment,
    from: Option<i64>,
    to: Option<i64>,
    r: &mut TaskReport,
    widen: &mut impl FnMut(i64, i64),
) -> Result<u64, ReportError> {
    let mut counted = 0;
    for rec in decoded.records() {
        let rec = rec?;
        if from.is_some_and(|f| rec.timestamp < f) || to.is_some_and(|t| rec.timestamp > t) {
            continue;
        }
        counted += 1;
        if r.first_offset < 0 {
            r.first_offset = rec.offset;
        }
        r.last_offset = rec.offset;
        widen(rec.timestamp, rec.timestamp);
    }
    Ok(counted)
}

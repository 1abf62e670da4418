//! Upgrades a ledger written by the first format, where each task was one JSON record holding
//! its whole segment list and progress, and offset runs were JSON. A coordinator upgraded in
//! the middle of a restore picks the plan up where it was: every task's progress, checkpoint,
//! epoch and offset runs carry over.

use super::codec::{encode_run, task_item_key, to_json};
use super::model::{Checkpoint, Lease, OffsetRunRecord, TaskMeta, TaskProgress, TaskState};
use super::segment_store::{PlanWriter, SegmentStore};
use super::LedgerError;
use kafka_backup_common::manifest::SegmentFrame;
use kafka_backup_common::manifest_index::SegmentSpan;
use serde::Deserialize;

#[derive(Deserialize)]
struct V1Segment {
    key: String,
    start_offset: i64,
    end_offset: i64,
    record_count: u64,
    compressed_size: u64,
    #[serde(default)]
    frames: Vec<SegmentFrame>,
}

#[derive(Deserialize)]
struct V1Task {
    task_id: u32,
    source_topic: String,
    source_partition: i32,
    target_topic: String,
    target_partition: i32,
    segments: Vec<V1Segment>,
    records_total: u64,
    bytes_total: u64,
    state: TaskState,
    epoch: u64,
    lease: Option<Lease>,
    checkpoint: Option<Checkpoint>,
    attempts: u32,
    error: String,
    not_before_ms: i64,
    started_at_ms: i64,
    #[serde(default)]
    skipped_segments: Vec<String>,
}

fn bad(key: &[u8], e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: format!("{e} (while upgrading the ledger format)"),
    }
}

/// Moves first-format tasks and runs into the current trees and segment list files, then
/// drops the old trees.
pub fn from_v1(db: &sled::Db, store: &SegmentStore) -> Result<(), LedgerError> {
    let names = db.tree_names();
    let has = |n: &str| names.iter().any(|t| t.as_ref() == n.as_bytes());
    if !has("tasks") {
        return Ok(());
    }
    let old_tasks = db.open_tree("tasks")?;
    if old_tasks.is_empty() {
        db.drop_tree("tasks")?;
        return Ok(());
    }
    tracing::info!(
        tasks = old_tasks.len(),
        "upgrading the restore ledger format"
    );
    let old_runs = db.open_tree("offset_runs")?;
    let (meta_t, state_t) = (db.open_tree("task_meta")?, db.open_tree("task_state")?);
    let runs_t = db.open_tree("runs")?;
    let skipped_t = db.open_tree("skipped")?;
    // Tasks come in key order, so a plan's tasks are together: one list writer per plan.
    let mut writer: Option<(String, PlanWriter)> = None;
    for kv in old_tasks.iter() {
        let (k, v) = kv?;
        let t: V1Task = serde_json::from_slice(&v).map_err(|e| bad(&k, e))?;
        let zero = k
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| bad(&k, "no plan id"))?;
        let plan = String::from_utf8_lossy(&k[..zero]).into_owned();
        let mut last_run = None;
        for rkv in old_runs.scan_prefix(&k) {
            let (rk, rv) = rkv?;
            let r: OffsetRunRecord = serde_json::from_slice(&rv).map_err(|e| bad(&rk, e))?;
            let source = u64::try_from(r.source_start).map_err(|e| bad(&rk, e))?;
            runs_t.insert(task_item_key(&plan, t.task_id, source), &encode_run(&r))?;
            last_run = Some(r);
        }
        if writer.as_ref().is_none_or(|(p, _)| *p != plan) {
            if let Some((_, w)) = writer.take() {
                w.finish()?;
            }
            writer = Some((plan.clone(), store.create(&plan)?));
        }
        let segment_count = t.segments.len() as u64;
        let first_offset = t.segments.first().map_or(0, |s| s.start_offset);
        let spans = t
            .segments
            .into_iter()
            .map(|s| SegmentSpan {
                key: s.key.into(),
                start_offset: s.start_offset,
                end_offset: s.end_offset,
                record_count: s.record_count,
                compressed_size: s.compressed_size,
                bounds: None,
                frames: s.frames.into(),
            })
            .collect();
        let segments_base = match writer.as_mut() {
            Some((_, w)) => w.append(spans)?,
            None => 0,
        };
        for (n, note) in t.skipped_segments.iter().enumerate() {
            skipped_t.insert(task_item_key(&plan, t.task_id, n as u64), note.as_bytes())?;
        }
        let meta = TaskMeta {
            task_id: t.task_id,
            source_topic: t.source_topic,
            source_partition: t.source_partition,
            target_topic: t.target_topic,
            target_partition: t.target_partition,
            segment_count,
            segments_base,
            first_offset,
            records_total: t.records_total,
            bytes_total: t.bytes_total,
            merge_sources: Vec::new(),
        };
        let progress = TaskProgress {
            state: t.state,
            epoch: t.epoch,
            lease: t.lease,
            checkpoint: t.checkpoint,
            attempts: t.attempts,
            stalled_grants: 0,
            error: t.error,
            not_before_ms: t.not_before_ms,
            started_at_ms: t.started_at_ms,
            skipped: t.skipped_segments.len() as u32,
            last_run,
        };
        meta_t.insert(&k, to_json(&meta))?;
        state_t.insert(&k, to_json(&progress))?;
    }
    if let Some((_, w)) = writer {
        w.finish()?;
    }
    store.sync_dir()?;
    db.flush()?;
    db.drop_tree("offset_runs")?;
    db.drop_tree("tasks")?;
    db.flush()?;
    Ok(())
}

//! Segments an earlier, unfinished backup left under the same backup id.
//!
//! A backup writes its manifest last, so one that stops (a crash, a full disk, Ctrl-C)
//! leaves segment objects with no manifest: restores ignore them, but they take space and no
//! command listed them. Rerunning the backup with the same id writes over the keys it writes
//! again; segments whose keys it does not (the partition's start moved with retention, the
//! segment limits changed) would stay forever. Once the new manifest is written, every
//! segment object under the id that it does not name, and that was written before this run
//! began, is one of those, and is removed.

use crate::manifest::Manifest;
use crate::storage::{BackupStore, StorageError};
use chrono::{DateTime, Duration, Utc};
use std::collections::HashSet;

/// Objects written this close to the run's start (by the store's clock against this host's)
/// are left alone: a clock a little behind must not make another run's fresh segments look
/// like leftovers.
const CLOCK_ALLOWANCE_SECS: i64 = 5;

/// Removes the segment objects under `manifest`'s backup id that it does not name and that
/// were written before `run_started`; returns how many. Only keys under
/// `{backup_id}/topics/` are candidates: the manifest, its index and anything else an
/// operator put there are left alone. Two backups with one id at the same time are not
/// supported (they write the same keys); the time bound keeps the other run's segments
/// written since this one began.
pub async fn remove_unlisted_segments(
    store: &BackupStore,
    manifest: &Manifest,
    run_started: DateTime<Utc>,
) -> Result<usize, StorageError> {
    let listed: HashSet<&str> = manifest
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.segments)
        .map(|s| s.key.as_str())
        .collect();
    let segments_under = format!("{}/topics/", manifest.backup_id);
    let before = run_started - Duration::seconds(CLOCK_ALLOWANCE_SECS);
    let mut removed = 0;
    for (key, written) in store.list_objects(&manifest.backup_id).await? {
        if key.starts_with(&segments_under) && !listed.contains(key.as_str()) && written < before {
            store.delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

//! Segments an earlier, unfinished backup left under the same backup id.
//!
//! A backup writes its manifest last, so one that stops (a crash, a full disk, Ctrl-C)
//! leaves segment objects with no manifest: restores ignore them, but they take space and no
//! command listed them. Rerunning the backup with the same id writes over the keys it writes
//! again; segments whose keys it does not (the partition's start moved with retention, the
//! segment limits changed) would stay forever. Once the new manifest is written, every
//! segment object under the id that it does not name is one of those, and is removed.

use crate::manifest::Manifest;
use crate::storage::{BackupStore, StorageError};
use std::collections::HashSet;

/// Removes the segment objects under `manifest`'s backup id that it does not name; returns
/// how many. Only keys under `{backup_id}/topics/` are candidates: the manifest, its index
/// and anything else an operator put there are left alone.
pub async fn remove_unlisted_segments(
    store: &BackupStore,
    manifest: &Manifest,
) -> Result<usize, StorageError> {
    let listed: HashSet<&str> = manifest
        .topics
        .iter()
        .flat_map(|t| &t.partitions)
        .flat_map(|p| &p.segments)
        .map(|s| s.key.as_str())
        .collect();
    let segments_under = format!("{}/topics/", manifest.backup_id);
    let mut removed = 0;
    for key in store.list_keys(&manifest.backup_id).await? {
        if key.starts_with(&segments_under) && !listed.contains(key.as_str()) {
            store.delete(&key).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

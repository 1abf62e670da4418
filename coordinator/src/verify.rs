//! Reading back every segment a restore would read, before anything is written.
//!
//! A restore checks each object as it reads it, so a damaged or missing segment stops its
//! task only when the restore reaches it, with every earlier record of that partition already
//! written. A disaster-recovery drill, or a restore that must be all or nothing, wants to
//! know first: `--verify-segments` reads the plan's objects the way a worker does (the CRC32
//! of the whole object, every zstd frame decompressed, every record walked and counted
//! against the segment's header) and names those that would fail, writing nothing.

use crate::planner::{plan, PlanError};
use futures::stream::{self, StreamExt};
use kafka_backup_common::manifest_index::Sieve;
use kafka_backup_common::pieces::Pieces;
use kafka_backup_common::segment::SegmentError;
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::RestoreSpec;
use std::collections::BTreeSet;

/// Objects read at once: enough to keep a remote store's round trips overlapped, few enough
/// that memory stays at a few segments.
const READS_IN_FLIGHT: usize = 4;

/// Why verification could not judge the backup (as opposed to what it found damaged).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The store could not be opened or read (not damage to a segment: nothing is judged).
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A local segment file was written to while it was read: not damage, and nothing to
    /// judge until the writer stops.
    #[error(transparent)]
    Unstable(SegmentError),
    #[error("segment verification stopped: {0}")]
    Internal(String),
}

/// A segment the restore could not read, and why.
#[derive(Debug, Clone)]
pub struct BadSegment {
    /// The object's key in the store.
    pub key: String,
    /// The read's error, which names the key and what was wrong.
    pub reason: String,
}

/// What verification found.
#[derive(Debug, Default)]
pub struct Verified {
    /// Segment objects read (intact or not).
    pub segments: u64,
    /// Bytes of the intact objects read.
    pub bytes: u64,
    /// Records in the intact objects.
    pub records: u64,
    /// Source partitions the plan reads.
    pub partitions: usize,
    /// Missing or damaged objects, in key order.
    pub bad: Vec<BadSegment>,
}

/// How far verification has come, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct VerifyProgress {
    /// Objects read so far.
    pub done: u64,
    /// Objects the plan reads.
    pub total: u64,
    /// Bytes of the intact objects read so far.
    pub bytes: u64,
}

enum Outcome {
    Intact { bytes: u64, records: u64 },
    Bad(BadSegment),
}

/// Plans `spec` as a restore would and reads every segment of the plan (whole objects, also
/// for segments a time window cuts). Missing and damaged objects are collected; a store that
/// cannot be read at all ends verification with its error.
pub async fn verify_segments(
    spec: &RestoreSpec,
    mut on_progress: impl FnMut(VerifyProgress),
) -> Result<Verified, VerifyError> {
    let store = crate::spec_store(spec)?;
    let manifest = store
        .read_manifest_index(
            &spec.backup_id,
            Sieve::window(spec.from_timestamp_ms, spec.to_timestamp_ms),
        )
        .await?;
    let tasks = plan(manifest, spec)?;
    let mut partitions = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for t in &tasks {
        partitions.insert((t.source_topic.clone(), t.source_partition));
        for m in &t.merged {
            partitions.insert((t.source_topic.clone(), m.partition));
        }
        keys.extend(t.segments.iter().map(|s| s.object_key().into_owned()));
    }
    let total = keys.len() as u64;
    let mut verified = Verified {
        partitions: partitions.len(),
        ..Verified::default()
    };
    let mut reads = stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move { read_back(&store, key).await }
        })
        .buffer_unordered(READS_IN_FLIGHT);
    while let Some(outcome) = reads.next().await {
        verified.segments += 1;
        match outcome? {
            Outcome::Intact { bytes, records } => {
                verified.bytes += bytes;
                verified.records += records;
            }
            Outcome::Bad(bad) => verified.bad.push(bad),
        }
        on_progress(VerifyProgress {
            done: verified.segments,
            total,
            bytes: verified.bytes,
        });
    }
    verified.bad.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(verified)
}

/// Reads one object and walks all of its records.
async fn read_back(store: &BackupStore, key: String) -> Result<Outcome, VerifyError> {
    let object = match store.get_checked(&key).await {
        Ok(o) => o,
        Err(e @ StorageError::SegmentNotFound { .. }) => {
            return Ok(Outcome::Bad(BadSegment {
                key,
                reason: e.to_string(),
            }))
        }
        Err(e) => return Err(e.into()),
    };
    let bytes = object.bytes.len() as u64;
    let walked = tokio::task::spawn_blocking(move || {
        let walk = || -> Result<u64, SegmentError> {
            let mut records = 0u64;
            for piece in Pieces::of_checked(&key, object)? {
                // Each record parsed as a worker parses it before producing it.
                for record in piece?.records() {
                    record?;
                    records += 1;
                }
            }
            Ok(records)
        };
        (walk(), key)
    })
    .await
    .map_err(|e| VerifyError::Internal(e.to_string()))?;
    Ok(match walked {
        (Ok(records), _) => Outcome::Intact { bytes, records },
        (Err(e @ SegmentError::ChangedWhileRead { .. }), _) => {
            return Err(VerifyError::Unstable(e))
        }
        (Err(e), key) => Outcome::Bad(BadSegment {
            key,
            reason: e.to_string(),
        }),
    })
}

//! Fetch and decode stage: reads a task's segments from the object store in order, one
//! ahead of the produce stage (bounded memory: at most two decoded segments in flight), and
//! decodes them off the async threads. Segments wholly before the resume point are skipped
//! without being fetched.

use kafka_backup_common::segment::{DecodedSegment, RecordRef, SegmentError};
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::SegmentRef;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("segment decoder thread failed: {0}")]
    Decoder(String),
}

impl SourceError {
    /// A missing or damaged object (as opposed to a storage outage): what
    /// `--skip-corrupt-segments` may skip.
    pub fn is_bad_object(&self) -> bool {
        matches!(
            self,
            SourceError::Segment(_) | SourceError::Storage(StorageError::SegmentNotFound { .. })
        )
    }

    /// Missing or corrupt objects will not heal by retrying; I/O errors may.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Storage(StorageError::Io { .. }) | SourceError::Decoder(_)
        )
    }
}

/// Fetches and decodes one segment.
pub async fn fetch_segment(
    store: &BackupStore,
    seg: &SegmentRef,
) -> Result<DecodedSegment, SourceError> {
    let started = std::time::Instant::now();
    let bytes = store.get(&seg.key).await?;
    let key = seg.key.clone();
    let decoded = tokio::task::spawn_blocking(move || DecodedSegment::decode(&key, &bytes))
        .await
        .map_err(|e| SourceError::Decoder(e.to_string()))?
        .map_err(SourceError::from);
    crate::metrics::METRICS
        .segment_fetch_seconds
        .observe(started.elapsed().as_secs_f64());
    decoded
}

/// Starts the prefetching stage for the segments that may hold offsets >= `from_offset`.
pub fn prefetch(
    store: BackupStore,
    segments: Vec<SegmentRef>,
    from_offset: i64,
    continue_after_error: bool,
) -> mpsc::Receiver<(String, Result<DecodedSegment, SourceError>)> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for seg in segments.into_iter().filter(|s| s.end_offset >= from_offset) {
            let res = fetch_segment(&store, &seg).await;
            let stop = res.is_err() && !continue_after_error;
            if tx.send((seg.key.clone(), res)).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// The record filter of a task: resume point and inclusive time window.
#[derive(Debug, Clone, Copy)]
pub struct RecordFilter {
    pub from_offset: i64,
    pub from_ts: Option<i64>,
    pub to_ts: Option<i64>,
}

impl RecordFilter {
    pub fn keeps(&self, r: &RecordRef<'_>) -> bool {
        r.offset >= self.from_offset
            && self.from_ts.is_none_or(|f| r.timestamp >= f)
            && self.to_ts.is_none_or(|t| r.timestamp <= t)
    }
}

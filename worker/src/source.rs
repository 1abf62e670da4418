//! Fetch and decode stage: reads a task's segments from the object store in order, one
//! ahead of the produce stage (bounded memory: at most two decoded segments in flight), and
//! decodes them off the async threads. Segments wholly before the resume point are skipped
//! without being fetched.

use crate::pages::{PageError, SegmentPages};
use kafka_backup_common::frames::{decode_frame, frames_needed};
use kafka_backup_common::manifest::SegmentFrame;
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
    #[error(transparent)]
    SegmentList(#[from] PageError),
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

    /// Missing or corrupt objects will not heal by retrying; I/O errors and a coordinator
    /// that could not be asked for the segment list may.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Storage(StorageError::Io { .. })
                | SourceError::Decoder(_)
                | SourceError::SegmentList(PageError::Unavailable(_))
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

/// Starts the prefetching stage for the segments that may hold records `filter` keeps,
/// reading the task's segment list page by page as it goes. A segment whose seek index shows
/// that its first frames hold none of them is read from the first frame that may, and handed
/// on one decoded frame at a time. A failure to read the segment list ends the stage with
/// that error.
pub fn prefetch(
    store: BackupStore,
    mut segments: SegmentPages,
    filter: RecordFilter,
    continue_after_error: bool,
) -> mpsc::Receiver<(String, Result<DecodedSegment, SourceError>)> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let seg = match segments.next().await {
                Ok(Some(seg)) => seg,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send((String::new(), Err(e.into()))).await;
                    return;
                }
            };
            if seg.end_offset < filter.from_offset {
                continue;
            }
            let index: Vec<SegmentFrame> = seg.frames.iter().map(index_frame).collect();
            if let Some(needed) = frames_needed(&index, filter.from_offset, filter.from_ts) {
                match send_frames(&store, &seg.key, needed, &tx, continue_after_error).await {
                    FramesSent::Done => continue,
                    FramesSent::Stop => return,
                    // The ranged read failed: read the whole object, which names the damage
                    // (or the outage) precisely.
                    FramesSent::Unread => {}
                }
            }
            let res = fetch_segment(&store, &seg).await;
            let stop = res.is_err() && !continue_after_error;
            if tx.send((seg.key.clone(), res)).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

enum FramesSent {
    Done,
    Stop,
    Unread,
}

/// Reads `frames` one ranged read each and sends them decoded, so the first record is ready
/// after one frame and the next frame is read while this one is produced. Only a failure
/// before anything was sent may fall back to reading the whole object; after that, falling
/// back would send records twice, so the error goes to the task instead.
async fn send_frames(
    store: &BackupStore,
    key: &str,
    frames: &[SegmentFrame],
    tx: &mpsc::Sender<(String, Result<DecodedSegment, SourceError>)>,
    continue_after_error: bool,
) -> FramesSent {
    tracing::debug!(%key, frames = frames.len(), "reading from the seek index");
    for (n, frame) in frames.iter().copied().enumerate() {
        let started = std::time::Instant::now();
        let range = frame.position..frame.position + frame.compressed_len;
        let res = match store.get_range(key, range).await {
            Ok(bytes) if bytes.len() as u64 == frame.compressed_len => {
                let owned_key = key.to_string();
                tokio::task::spawn_blocking(move || decode_frame(&owned_key, &bytes, &frame))
                    .await
                    .map_err(|e| SourceError::Decoder(e.to_string()))
                    .and_then(|r| r.map_err(SourceError::from))
            }
            _ if n == 0 => return FramesSent::Unread,
            Ok(_) => Err(SourceError::Segment(SegmentError::Truncated {
                key: key.to_string(),
                detail: format!(
                    "the zstd frame at byte {} is cut short (the seek index says {} bytes)",
                    frame.position, frame.compressed_len
                ),
            })),
            Err(e) => Err(SourceError::Storage(e)),
        };
        crate::metrics::METRICS
            .segment_fetch_seconds
            .observe(started.elapsed().as_secs_f64());
        let failed = res.is_err();
        if tx.send((key.to_string(), res)).await.is_err() || (failed && !continue_after_error) {
            return FramesSent::Stop;
        }
        if failed {
            // Skipped as a damaged segment: the rest of it is not read either.
            return FramesSent::Done;
        }
    }
    FramesSent::Done
}

fn index_frame(f: &kafka_backup_proto::SegmentFrame) -> SegmentFrame {
    SegmentFrame {
        position: f.position,
        compressed_len: f.compressed_len,
        first_offset: f.first_offset,
        last_offset: f.last_offset,
        record_count: f.record_count,
        min_timestamp: f.min_timestamp,
        max_timestamp: f.max_timestamp,
        crc32: f.crc32,
    }
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

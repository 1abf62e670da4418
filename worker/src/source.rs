//! Fetch and decode stage: reads a task's segments from the object store in order, one
//! ahead of the produce stage (bounded memory: at most two decoded segments in flight), and
//! decodes them off the async threads. Segments wholly before the resume point are skipped
//! without being fetched.

use crate::pages::{PageError, SegmentPages};
use kafka_backup_common::frames::frames_needed;
use kafka_backup_common::manifest::SegmentFrame;
use kafka_backup_common::pieces::Pieces;
use kafka_backup_common::read_crc::CheckedObject;
use kafka_backup_common::segment::{DecodedSegment, RecordRef, SegmentError};
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::SegmentRef;
use tokio::sync::{mpsc, Semaphore, SemaphorePermit};

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
        match self {
            SourceError::Segment(SegmentError::ChangedWhileRead { .. }) => false,
            SourceError::Segment(_) => true,
            SourceError::Storage(StorageError::SegmentNotFound { .. }) => true,
            _ => false,
        }
    }

    /// Missing or corrupt objects will not heal by retrying; I/O errors and a coordinator
    /// that could not be asked for the segment list may.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            SourceError::Storage(StorageError::Io { .. })
                | SourceError::Segment(SegmentError::ChangedWhileRead { .. })
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
    let bytes = store.get(&seg.key).await;
    crate::metrics::METRICS
        .segment_fetch_seconds
        .observe(started.elapsed().as_secs_f64());
    let bytes = bytes?;
    let key = seg.key.clone();
    tokio::task::spawn_blocking(move || DecodedSegment::decode(&key, &bytes))
        .await
        .map_err(|e| SourceError::Decoder(e.to_string()))?
        .map_err(SourceError::from)
}

/// Starts the prefetching stage for the segments that may hold records `filter` keeps,
/// reading the task's segment list page by page as it goes. Each object is decoded as a run
/// of pieces of about a megabyte of records (see `pieces.rs`), so the first record of a
/// segment is ready after one piece whatever the segment's size or frame layout, and the next
/// piece is decoded while this one is produced. A segment whose seek index shows that its
/// first frames hold none of the records is read from the first frame that may. A failure to
/// read the segment list ends the stage with that error.
///
/// The next whole object is read (and its CRC computed) while this one is decoded and
/// produced: reading an object only once the last one was handed over left the producer idle
/// for a whole read per segment, a round trip and more on object storage. Objects read ahead
/// of their turn share one budget per worker process ([`READ_AHEAD_BYTES`]); when it is
/// spent, the next object is read when its turn comes, as before.
pub fn prefetch(
    store: BackupStore,
    mut segments: SegmentPages,
    filter: RecordFilter,
    continue_after_error: bool,
) -> mpsc::Receiver<(String, Result<DecodedSegment, SourceError>)> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut upcoming = next_read(&store, &mut segments, &filter, false).await;
        loop {
            let read = match upcoming {
                Ok(Some(read)) => read,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send((String::new(), Err(e.into()))).await;
                    return;
                }
            };
            upcoming = next_read(&store, &mut segments, &filter, true).await;
            let sent = match read {
                Planned::Frames { key, frames } => {
                    match send_frames(&store, &key, &frames, &tx, continue_after_error).await {
                        // The ranged read failed: read the whole object, which names the
                        // damage (or the outage) precisely.
                        Sent::Unread => {
                            let object = read_whole(store.clone(), key.clone()).await;
                            send_segment(&key, object, &tx, continue_after_error).await
                        }
                        sent => sent,
                    }
                }
                Planned::Whole { key, read } => {
                    let object = match read {
                        Some((read, _held_until_read)) => read
                            .await
                            .unwrap_or_else(|e| Err(SourceError::Decoder(e.to_string()))),
                        None => read_whole(store.clone(), key.clone()).await,
                    };
                    send_segment(&key, object, &tx, continue_after_error).await
                }
            };
            if let Sent::Stop = sent {
                return;
            }
        }
    });
    rx
}

/// How the next segment will be read.
enum Planned {
    /// From these seek-index frames, one ranged read each when their turn comes.
    Frames {
        key: String,
        frames: Vec<SegmentFrame>,
    },
    /// Whole: by a read already under way (with its share of the read-ahead budget), or
    /// read when its turn comes.
    Whole {
        key: String,
        read: Option<(ReadUnderWay, Option<SemaphorePermit<'static>>)>,
    },
}

type ReadUnderWay = tokio::task::JoinHandle<Result<CheckedObject, SourceError>>;

/// Compressed bytes a worker process may hold in objects read ahead of their turn, over all
/// its tasks: two of the segments `backup` writes (16 MiB of records each, less once
/// compressed). Peak memory stays within the PRD's bound at 4 concurrent partitions with
/// the objects being decoded, their pieces and this.
pub const READ_AHEAD_BYTES: usize = 32 << 20;
static READ_AHEAD: Semaphore = Semaphore::const_new(READ_AHEAD_BYTES);

/// A share of the read-ahead budget for an object of `compressed_size` bytes (0: the
/// manifest does not say, so the whole budget), or None when it is spent.
fn read_ahead_share(compressed_size: u64) -> Option<SemaphorePermit<'static>> {
    let wanted = match usize::try_from(compressed_size) {
        Ok(0) => READ_AHEAD_BYTES,
        Ok(n) if n <= READ_AHEAD_BYTES => n,
        _ => return None,
    };
    READ_AHEAD
        .try_acquire_many(u32::try_from(wanted).ok()?)
        .ok()
}

/// The next segment that may hold records `filter` keeps, with its whole-object read started
/// (segments wholly before the resume point are skipped without being read). `ahead`: the
/// read comes before its turn, so it needs a share of the read-ahead budget.
async fn next_read(
    store: &BackupStore,
    segments: &mut SegmentPages,
    filter: &RecordFilter,
    ahead: bool,
) -> Result<Option<Planned>, PageError> {
    loop {
        let Some(seg) = segments.next().await? else {
            return Ok(None);
        };
        if seg.end_offset < filter.from_offset {
            continue;
        }
        let index: Vec<SegmentFrame> = seg.frames.iter().map(index_frame).collect();
        if let Some(needed) = frames_needed(&index, filter.from_offset, filter.from_ts) {
            return Ok(Some(Planned::Frames {
                key: seg.key,
                frames: needed.to_vec(),
            }));
        }
        let read = match ahead.then(|| read_ahead_share(seg.compressed_size)) {
            // Ahead of its turn and the budget is spent: read it when its turn comes.
            Some(None) => None,
            share => {
                let read = tokio::spawn(read_whole(store.clone(), seg.key.clone()));
                Some((read, share.flatten()))
            }
        };
        return Ok(Some(Planned::Whole { key: seg.key, read }));
    }
}

/// Reads one whole object and its CRC.
async fn read_whole(store: BackupStore, key: String) -> Result<CheckedObject, SourceError> {
    let started = std::time::Instant::now();
    let object = store.get_checked(&key).await;
    crate::metrics::METRICS
        .segment_fetch_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(object?)
}

type PieceSender = mpsc::Sender<(String, Result<DecodedSegment, SourceError>)>;

enum Sent {
    /// Everything sent.
    Done,
    /// An error was sent and the rest of the object is skipped (`--skip-corrupt-segments`).
    Skipped,
    /// The task is gone, or an error ended it.
    Stop,
    /// Nothing was read: read the whole object instead.
    Unread,
}

/// Decodes one whole object that was read and sends its pieces.
async fn send_segment(
    key: &str,
    object: Result<CheckedObject, SourceError>,
    tx: &PieceSender,
    continue_after_error: bool,
) -> Sent {
    let res = match object {
        Ok(object) => {
            let (key, tx) = (key.to_string(), tx.clone());
            tokio::task::spawn_blocking(move || {
                send_pieces(
                    &key,
                    Pieces::of_checked(&key, object),
                    &tx,
                    continue_after_error,
                )
            })
            .await
            .map_err(|e| SourceError::Decoder(e.to_string()))
        }
        Err(e) => Err(e),
    };
    match res {
        Ok(sent) => sent,
        Err(e) => send_error(key, e, tx, continue_after_error).await,
    }
}

/// On a decoding thread: sends every piece, or the first error (after which the rest of the
/// object is not read: it is either skipped as damaged or the end of the task).
fn send_pieces(
    key: &str,
    pieces: Result<Pieces, SegmentError>,
    tx: &PieceSender,
    continue_after_error: bool,
) -> Sent {
    let pieces = match pieces {
        Ok(p) => p,
        Err(e) => return send_error_blocking(key, e.into(), tx, continue_after_error),
    };
    for piece in pieces {
        match piece {
            Ok(piece) => {
                if tx.blocking_send((key.to_string(), Ok(piece))).is_err() {
                    return Sent::Stop;
                }
            }
            Err(e) => return send_error_blocking(key, e.into(), tx, continue_after_error),
        }
    }
    Sent::Done
}

fn send_error_blocking(
    key: &str,
    e: SourceError,
    tx: &PieceSender,
    continue_after_error: bool,
) -> Sent {
    if tx.blocking_send((key.to_string(), Err(e))).is_err() || !continue_after_error {
        return Sent::Stop;
    }
    Sent::Skipped
}

async fn send_error(
    key: &str,
    e: SourceError,
    tx: &PieceSender,
    continue_after_error: bool,
) -> Sent {
    if tx.send((key.to_string(), Err(e))).await.is_err() || !continue_after_error {
        return Sent::Stop;
    }
    Sent::Skipped
}

/// Reads `frames` one ranged read each and sends their pieces, so the first record is ready
/// after one piece and the next frame is read while this one is produced. Only a failure
/// before anything was sent may fall back to reading the whole object; after that, falling
/// back would send records twice, so the error goes to the task instead.
async fn send_frames(
    store: &BackupStore,
    key: &str,
    frames: &[SegmentFrame],
    tx: &PieceSender,
    continue_after_error: bool,
) -> Sent {
    tracing::debug!(%key, frames = frames.len(), "reading from the seek index");
    for (n, frame) in frames.iter().copied().enumerate() {
        let started = std::time::Instant::now();
        let range = frame.position..frame.position + frame.compressed_len;
        let res = store.get_range(key, range).await;
        crate::metrics::METRICS
            .segment_fetch_seconds
            .observe(started.elapsed().as_secs_f64());
        let sent = match res {
            Ok(read) if read.bytes.len() as u64 == frame.compressed_len => {
                let (owned_key, tx) = (key.to_string(), tx.clone());
                tokio::task::spawn_blocking(move || {
                    let pieces = Pieces::of_frame(&owned_key, read, &frame);
                    send_pieces(&owned_key, pieces, &tx, continue_after_error)
                })
                .await
                .unwrap_or(Sent::Stop)
            }
            _ if n == 0 => return Sent::Unread,
            Ok(_) => {
                let e = SourceError::Segment(SegmentError::Truncated {
                    key: key.to_string(),
                    detail: format!(
                        "the zstd frame at byte {} is cut short (the seek index says {} bytes)",
                        frame.position, frame.compressed_len
                    ),
                });
                send_error(key, e, tx, continue_after_error).await
            }
            Err(e) => send_error(key, SourceError::Storage(e), tx, continue_after_error).await,
        };
        match sent {
            Sent::Done => {}
            // Skipped as a damaged segment: the rest of it is not read either.
            Sent::Skipped => return Sent::Done,
            other => return other,
        }
    }
    Sent::Done
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_while_read_is_retried_and_never_skipped_as_damage() {
        let changed = SourceError::Segment(SegmentError::ChangedWhileRead { key: "k".into() });
        assert!(changed.retryable());
        // --skip-corrupt-segments must not drop a segment's records because someone touched it.
        assert!(!changed.is_bad_object());
        let damaged = SourceError::Segment(SegmentError::Corrupt {
            key: "k".into(),
            detail: "x".into(),
        });
        assert!(damaged.is_bad_object() && !damaged.retryable());
    }
}

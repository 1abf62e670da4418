//! The backup's compress-and-upload stage, on a thread of its own.
//!
//! The backup's consume loop used to compress each full segment and wait for its upload
//! before polling again; zstd took over half of the backup's CPU time (`perf`, 2 cores), and
//! nothing was fetched from the consumer's queue meanwhile. Segments now go through a short
//! queue to this thread, so compression and upload of one segment overlap the reading of the
//! next. One thread: compression of one segment at a time already keeps up with reading on a
//! broker that is not on the same cores, and a second would compete with the consumer.

use crate::backup::BackupError;
use crate::frames::{build_indexed_segment, FrameCuts};
use crate::manifest::SegmentMeta;
use crate::segment::SegmentHeader;
use crate::storage::BackupStore;
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::runtime::Handle;

/// Segments waiting for the thread; the consume loop waits when this many are queued, which
/// bounds the backup's memory to a few segments.
const QUEUED_SEGMENTS: usize = 2;

/// One full segment's records and everything its manifest entry needs but the sizes.
pub struct SegmentJob {
    pub topic: String,
    pub partition: i32,
    pub key: String,
    pub region: Vec<u8>,
    pub cuts: FrameCuts,
    pub header: SegmentHeader,
    /// The manifest entry; `compressed_size` and `frames` are filled in here.
    pub meta: SegmentMeta,
}

/// Manifest entries of the uploaded segments, per partition, in upload order.
pub type Uploaded = HashMap<(String, i32), Vec<SegmentMeta>>;

pub struct SegmentUploader {
    tx: Option<SyncSender<SegmentJob>>,
    /// Regions of uploaded segments, cleared, for the next segments: a fresh region grew
    /// by doubling to the segment size every time (copies and page faults).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    thread: Option<JoinHandle<Result<Uploaded, BackupError>>>,
}

impl SegmentUploader {
    pub fn start(handle: Handle, store: BackupStore, zstd_level: i32) -> Self {
        let (tx, rx) = sync_channel::<SegmentJob>(QUEUED_SEGMENTS);
        let spare = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::clone(&spare);
        let thread = std::thread::Builder::new()
            .name("segment-upload".into())
            .spawn(move || {
                let mut done = Uploaded::new();
                for job in rx {
                    let (bytes, frames) =
                        build_indexed_segment(&job.region, job.header, zstd_level, &job.cuts)
                            .map_err(BackupError::Compress)?;
                    let mut meta = job.meta;
                    meta.compressed_size = bytes.len() as u64;
                    meta.frames = frames;
                    handle.block_on(store.put(&job.key, bytes))?;
                    let mut region = job.region;
                    region.clear();
                    if let Ok(mut spare) = returned.lock() {
                        if spare.len() < QUEUED_SEGMENTS + 1 {
                            spare.push(region);
                        }
                    }
                    tracing::debug!(key = %job.key, records = meta.record_count, "segment written");
                    done.entry((job.topic, job.partition))
                        .or_default()
                        .push(meta);
                }
                Ok(done)
            });
        match thread {
            Ok(t) => Self {
                tx: Some(tx),
                spare,
                thread: Some(t),
            },
            // No thread: `send` reports it as the backup's error.
            Err(_) => Self {
                tx: None,
                spare,
                thread: None,
            },
        }
    }

    /// An empty region for the next segment: an uploaded one's, or a new one.
    pub fn region(&self, capacity: usize) -> Vec<u8> {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Queues a segment; waits while the queue is full. An error is the upload thread's
    /// (a failed upload ends it, and the backup with it).
    pub fn send(&mut self, job: SegmentJob) -> Result<(), BackupError> {
        if self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok()) {
            return Ok(());
        }
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| BackupError::Internal("segment upload thread ended".into())))
    }

    /// Waits for every queued segment to be uploaded; their manifest entries.
    pub fn finish(mut self) -> Result<Uploaded, BackupError> {
        self.join()
    }

    fn join(&mut self) -> Result<Uploaded, BackupError> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(BackupError::Internal(
                    "segment upload thread panicked".into(),
                ))
            }),
            None => Err(BackupError::Internal(
                "the segment upload thread could not be started or already ended".into(),
            )),
        }
    }
}

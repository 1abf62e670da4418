//! The backup's compress-and-upload stage, on threads of its own.
//!
//! The backup's consume loop used to compress each full segment and wait for its upload
//! before polling again; zstd took over half of the backup's CPU time (`perf`, 2 cores), and
//! nothing was fetched from the consumer's queue meanwhile. Segments now go through a short
//! queue to these threads, so compression and upload overlap the reading of the next
//! segments. One thread per core (up to [`MAX_THREADS`]): compression is most of a backup's
//! CPU, and segments of different partitions, or successive ones of one partition, are
//! independent objects.

use crate::backup::BackupError;
use crate::frames::{FrameCuts, SegmentBuilder};
use crate::manifest::SegmentMeta;
use crate::segment::{uncompressed_segment_ends, Compression, SegmentHeader};
use crate::storage::BackupStore;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::runtime::Handle;

/// Segments waiting for a thread; the consume loop waits when this many are queued, which
/// bounds the backup's memory to a few segments per thread.
const QUEUED_SEGMENTS: usize = 2;

/// Compression threads at most, whatever the core count: each holds a segment's records
/// and its compressed object (up to ~2 × `--segment-max-bytes`), and beyond a few threads
/// the single consumer that feeds them is the limit.
pub const MAX_THREADS: usize = 4;

/// How segments are compressed.
#[derive(Debug, Clone, Copy)]
pub struct Compressing {
    pub zstd_level: i32,
    /// Segments whose sample saves less than this percent are stored uncompressed
    /// (`compress_probe`); 0 compresses every segment.
    pub min_savings_percent: f64,
}

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

/// Manifest entries of the uploaded segments, per partition (in no particular order).
pub type Uploaded = HashMap<(String, i32), Vec<SegmentMeta>>;

/// What the upload threads did, once all of them are done.
pub struct Finished {
    pub segments: Uploaded,
    /// Segments stored uncompressed because their sample did not compress enough: the
    /// manifest does not say, and an operator wants to know why a backup is this large.
    pub stored_uncompressed: usize,
}

pub struct SegmentUploader {
    tx: Option<SyncSender<SegmentJob>>,
    /// Regions of uploaded segments, cleared, for the next segments: a fresh region grew
    /// by doubling to the segment size every time (copies and page faults).
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Set by a thread whose compression or upload failed, so the consume loop stops.
    failed: Arc<AtomicBool>,
    stored_uncompressed: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Result<Uploaded, BackupError>>>,
}

/// A reading thread's way into the upload queue (see [`SegmentUploader::sender`]).
pub struct SegmentSender {
    tx: SyncSender<SegmentJob>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    failed: Arc<AtomicBool>,
}

impl SegmentSender {
    /// An uploaded segment's region, emptied, if one is spare: its pages are in memory
    /// already, and it has a whole segment's room.
    pub fn spare_region(&self) -> Option<Vec<u8>> {
        self.spare.lock().ok().and_then(|mut s| s.pop())
    }

    /// Queues a segment; waits while the queue is full. Fails once an upload thread has
    /// failed; [`SegmentUploader::finish`] then says why.
    pub fn send(&self, job: SegmentJob) -> Result<(), BackupError> {
        if !self.failed.load(Ordering::SeqCst) && self.tx.send(job).is_ok() {
            return Ok(());
        }
        Err(BackupError::Internal(
            "the segment upload threads ended before every segment was queued".into(),
        ))
    }
}

/// What every upload thread shares. Only the threads hold it: when the last of them ends,
/// the queue's receiver goes with it and a consume loop waiting to send wakes with an error
/// (the uploader keeps its own handles on the spare regions and the failure flag).
struct Shared {
    handle: Handle,
    store: BackupStore,
    jobs: Mutex<Receiver<SegmentJob>>,
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    spare_limit: usize,
    failed: Arc<AtomicBool>,
    stored_uncompressed: Arc<AtomicUsize>,
}

impl SegmentUploader {
    /// Starts `threads` (at least one) compress-and-upload threads.
    pub fn start(
        handle: Handle,
        store: BackupStore,
        settings: Compressing,
        threads: usize,
    ) -> Self {
        let threads = threads.clamp(1, MAX_THREADS);
        let (tx, rx) = sync_channel::<SegmentJob>(QUEUED_SEGMENTS);
        let spare = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicBool::new(false));
        let stored_uncompressed = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            handle,
            store,
            jobs: Mutex::new(rx),
            spare: Arc::clone(&spare),
            spare_limit: QUEUED_SEGMENTS + threads,
            failed: Arc::clone(&failed),
            stored_uncompressed: Arc::clone(&stored_uncompressed),
        });
        let mut started = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("segment-upload-{i}"))
                .spawn(move || {
                    let result = upload_segments(&shared, settings);
                    if result.is_err() {
                        shared.failed.store(true, Ordering::SeqCst);
                    }
                    result
                });
            // A thread that cannot be started leaves the others; with none, `send` reports it.
            if let Ok(t) = spawned {
                started.push(t);
            }
        }
        Self {
            tx: (!started.is_empty()).then_some(tx),
            spare,
            failed,
            stored_uncompressed,
            threads: started,
        }
    }

    /// A handle for one reading thread to queue segments with: each of the backup's
    /// consumers reads its share of the partitions on a thread of its own, and all of them
    /// feed these upload threads.
    pub fn sender(&self) -> Result<SegmentSender, BackupError> {
        let tx = self.tx.clone().ok_or_else(|| {
            BackupError::Internal("the segment upload threads could not be started".into())
        })?;
        Ok(SegmentSender {
            tx,
            spare: Arc::clone(&self.spare),
            failed: Arc::clone(&self.failed),
        })
    }

    /// Waits for every queued segment to be uploaded; their manifest entries. Every
    /// [`SegmentSender`] must be gone first (the threads run until the queue closes); the
    /// error is the upload's own when a thread failed, which is why a reader whose `send`
    /// failed leaves the telling to this.
    pub fn finish(mut self) -> Result<Finished, BackupError> {
        let segments = self.join()?;
        Ok(Finished {
            segments,
            stored_uncompressed: self.stored_uncompressed.load(Ordering::SeqCst),
        })
    }

    /// Closes the queue and waits for every thread; the first error, or all entries.
    fn join(&mut self) -> Result<Uploaded, BackupError> {
        self.tx = None;
        if self.threads.is_empty() {
            return Err(BackupError::Internal(
                "the segment upload threads could not be started or already ended".into(),
            ));
        }
        let mut all = Uploaded::new();
        let mut first_error = None;
        for t in self.threads.drain(..) {
            let result = t.join().unwrap_or_else(|_| {
                Err(BackupError::Internal(
                    "a segment upload thread panicked".into(),
                ))
            });
            match result {
                Ok(done) => {
                    for (partition, mut metas) in done {
                        all.entry(partition).or_default().append(&mut metas);
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(all), Err)
    }
}

/// One thread's loop: takes segments off the queue until it closes, or until any thread
/// failed (the backup is over then).
fn upload_segments(shared: &Shared, settings: Compressing) -> Result<Uploaded, BackupError> {
    let mut builder = SegmentBuilder::new(settings.zstd_level)
        .map_err(BackupError::Compress)?
        .with_min_savings(settings.min_savings_percent);
    let mut done = Uploaded::new();
    loop {
        if shared.failed.load(Ordering::SeqCst) {
            return Ok(done);
        }
        let job = match shared.jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return Err(BackupError::Internal("segment queue poisoned".into())),
        };
        let Ok(job) = job else {
            return Ok(done);
        };
        let compress = job.header.compression != Compression::None as u8
            && builder
                .worth_compressing(&job.region)
                .map_err(BackupError::Compress)?;
        let mut meta = job.meta;
        let region = if compress {
            let (bytes, frames) = builder
                .build(&job.region, job.header, &job.cuts)
                .map_err(BackupError::Compress)?;
            meta.compressed_size = bytes.len() as u64;
            meta.frames = frames;
            shared.handle.block_on(shared.store.put(&job.key, bytes))?;
            Some(job.region)
        } else {
            let (head, foot) = uncompressed_segment_ends(job.header, &job.region);
            meta.compressed_size = (head.len() + job.region.len() + foot.len()) as u64;
            let body = Bytes::from(job.region);
            let parts = [Bytes::from(head), body.clone(), Bytes::from(foot)];
            shared
                .handle
                .block_on(shared.store.put_parts(&job.key, parts))?;
            shared.stored_uncompressed.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(key = %job.key, "segment stored uncompressed: its sample did not compress enough");
            // The store has let go of its parts once the write is done: the region is
            // this thread's alone again, for the next segment.
            body.try_into_mut().ok().map(Vec::from)
        };
        if let Some(mut region) = region {
            region.clear();
            if let Ok(mut spare) = shared.spare.lock() {
                if spare.len() < shared.spare_limit {
                    spare.push(region);
                }
            }
        }
        tracing::debug!(key = %job.key, records = meta.record_count, "segment written");
        done.entry((job.topic, job.partition))
            .or_default()
            .push(meta);
    }
}

//! Reading the backed-up partitions to their snapshot points, into segments.
//!
//! A single librdkafka consumer has one fetch in flight per broker: the broker's work on a
//! fetch, the transfer and the client's parsing of the answer follow one another, and
//! neither side's CPU is busy while the other works. With the partitions split between
//! several consumers (`--fetch-connections`), each with its own connection and its own
//! reading thread, those steps overlap: two plain consumers of two partitions each read a
//! 196 MB topic from tansu in 0.47–0.50 s where one consumer of all four took 0.74–0.81 s
//! (bench/HISTORY.md). Every share feeds the same compress-and-upload threads.

use crate::backup::{
    kafka_error, snapshot_consumer, BackupError, BackupRequest, META_TIMEOUT, STALL_LIMIT,
};
use crate::frames::FrameCuts;
use crate::kafka::offsets_at;
use crate::manifest::{segment_key, SegmentMeta};
use crate::segment::{encode_record, Compression, SegmentHeader};
use crate::segment_upload::{SegmentJob, SegmentSender, SegmentUploader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Each topic's partition writers of one share, in partition order. Looked up by the
/// `&str` of a message's topic: a key of owned strings needed a `String` allocated per
/// message.
pub(crate) type Writers = HashMap<String, Vec<PartitionWriter>>;

pub(crate) fn writer_mut<'w>(
    writers: &'w mut Writers,
    topic: &str,
    partition: i32,
) -> Option<&'w mut PartitionWriter> {
    let share = writers.get_mut(topic)?;
    let i = share
        .binary_search_by_key(&partition, |w| w.partition)
        .ok()?;
    share.get_mut(i)
}

/// Fixes every partition's snapshot point: its high watermark now, and the low watermark
/// it is read from. Empty partitions are done at once. Both watermarks of every partition
/// are asked for at once, per bound (`kafka::offsets_at`), not partition by partition: the
/// snapshot points are also closer in time.
pub(crate) fn snapshot_points(
    consumer: &BaseConsumer,
    req: &BackupRequest,
    topics: &BTreeMap<String, i32>,
) -> Result<Vec<PartitionWriter>, BackupError> {
    let partitions: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(move |p| (topic.clone(), p)))
        .collect();
    let what = "a watermark request";
    let asked = |bound| offsets_at(consumer, &partitions, bound, META_TIMEOUT);
    let lows = asked(Offset::Beginning).map_err(kafka_error(req, what))?;
    let highs = asked(Offset::End).map_err(kafka_error(req, what))?;
    partitions
        .iter()
        .zip(lows.into_iter().zip(highs))
        .map(|((topic, p), (low, high))| {
            let both = low.and_then(|low| Ok((low, high?)));
            let watermarks = both.map_err(kafka_error(req, &format!("{what} for {topic}/{p}")))?;
            Ok(PartitionWriter::new(req, topic, *p, watermarks))
        })
        .collect()
}

/// Splits the partitions into at most `shares` groups of about equal offset ranges (the
/// largest range first, each onto the least loaded share), one per consumer. Partitions
/// with nothing to read go with the first share; a share that would read nothing is left
/// out.
fn split_into_shares(points: Vec<PartitionWriter>, shares: usize) -> Vec<Vec<PartitionWriter>> {
    let shares = shares.max(1);
    let (empty, mut to_read): (Vec<_>, Vec<_>) = points.into_iter().partition(|w| w.done);
    to_read.sort_by_key(|w| std::cmp::Reverse(w.high - w.low));
    let mut split: Vec<(i64, Vec<PartitionWriter>)> =
        (0..shares).map(|_| (0, Vec::new())).collect();
    for w in to_read {
        if let Some(least) = split.iter_mut().min_by_key(|(load, _)| *load) {
            least.0 += w.high - w.low;
            least.1.push(w);
        }
    }
    let mut out: Vec<Vec<PartitionWriter>> = split
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
        .collect();
    match out.first_mut() {
        Some(first) => first.extend(empty),
        None => out.push(empty),
    }
    out
}

/// One share's writers, by topic in partition order, and its consumer's assignment.
fn share_writers(
    req: &BackupRequest,
    share: Vec<PartitionWriter>,
) -> Result<(Writers, TopicPartitionList), BackupError> {
    let mut tpl = TopicPartitionList::new();
    let mut writers = Writers::new();
    for w in share {
        if !w.done {
            tpl.add_partition_offset(&w.topic, w.partition, Offset::Offset(w.low))
                .map_err(kafka_error(req, "the partition assignment"))?;
        }
        writers.entry(w.topic.clone()).or_default().push(w);
    }
    for share in writers.values_mut() {
        share.sort_by_key(|w| w.partition);
    }
    Ok((writers, tpl))
}

/// Reads every partition to its snapshot point on up to `req.fetch.connections`
/// consumers (`first` is one of them), each share on a thread of its own; returns every
/// partition's writer, by topic in partition order, and the consumers (closing them waits
/// for the group coordinator; the caller closes them in the background).
pub(crate) fn read_partitions(
    first: BaseConsumer,
    points: Vec<PartitionWriter>,
    req: &BackupRequest,
    uploader: &SegmentUploader,
) -> (Result<Writers, BackupError>, Vec<BaseConsumer>) {
    let shares = split_into_shares(points, req.fetch.connections as usize);
    let mut consumers = vec![first];
    let mut readers = Vec::with_capacity(shares.len());
    for (i, share) in shares.into_iter().enumerate() {
        if i >= consumers.len() {
            match snapshot_consumer(req) {
                Ok(c) => consumers.push(c),
                Err(e) => return (Err(e), consumers),
            }
        }
        let assigned = share_writers(req, share).and_then(|(writers, tpl)| {
            consumers[i]
                .assign(&tpl)
                .map_err(kafka_error(req, "the partition assignment"))?;
            Ok(writers)
        });
        match assigned.and_then(|w| Ok((w, uploader.sender()?))) {
            Ok(reader) => readers.push(reader),
            Err(e) => return (Err(e), consumers),
        }
    }
    let stop = AtomicBool::new(false);
    // Each share holds its part of the records the backup may buffer.
    let limit = req.max_buffered_bytes / readers.len().max(1) as u64;
    let cut_early = AtomicUsize::new(0);
    let results: Vec<Result<Writers, BackupError>> = std::thread::scope(|s| {
        let read = |consumer: &BaseConsumer, (mut writers, sender): (Writers, SegmentSender)| {
            let mut buffered = Buffered::new(limit, &cut_early);
            let read = read_to_snapshot(consumer, &sender, req, &mut writers, &mut buffered, &stop);
            if read.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            read.map(|()| writers)
        };
        let mut readers = readers.into_iter();
        let mine = readers.next();
        let others: Vec<_> = readers
            .zip(&consumers[1..])
            .enumerate()
            .map(|(i, (reader, consumer))| {
                std::thread::Builder::new()
                    .name(format!("backup-read-{}", i + 1))
                    .spawn_scoped(s, move || read(consumer, reader))
            })
            .collect();
        // A share without its thread fails the backup: the others need not read on.
        if others.iter().any(Result::is_err) {
            stop.store(true, Ordering::Relaxed);
        }
        let mut results = vec![mine.map_or_else(|| Ok(Writers::new()), |r| read(&consumers[0], r))];
        for t in others {
            results.push(match t {
                Ok(t) => t.join().unwrap_or_else(|_| {
                    Err(BackupError::Internal(
                        "a backup reading thread panicked".into(),
                    ))
                }),
                Err(e) => Err(BackupError::Internal(format!(
                    "a backup reading thread could not be started: {e}"
                ))),
            });
        }
        results
    });
    let cut_early = cut_early.into_inner();
    if cut_early > 0 {
        tracing::info!(
            segments = cut_early,
            max_buffered_bytes = req.max_buffered_bytes,
            "segments closed before --segment-max-bytes: the partitions' unfinished segments \
             together reached --max-buffered-bytes (raise it for larger segments)"
        );
    }
    let mut all = Writers::new();
    for result in results {
        match result {
            Ok(writers) => {
                for (topic, mut ws) in writers {
                    all.entry(topic).or_default().append(&mut ws);
                }
            }
            Err(e) => return (Err(e), consumers),
        }
    }
    for ws in all.values_mut() {
        ws.sort_by_key(|w| w.partition);
    }
    (Ok(all), consumers)
}

/// The memory one share's partition writers hold in segments not yet full, against its
/// part of `--max-buffered-bytes`. Every partition fills a segment of its own, and a segment
/// is written when it is full: with partitions read side by side, a backup held a segment
/// per partition at once (1,000 partitions of 16 MiB segments: 16 GB). Past the limit the
/// fullest segment is closed early, as the last one of a partition is: a segment smaller
/// than `--segment-max-bytes` is an ordinary segment to a restore.
struct Buffered<'a> {
    held: u64,
    limit: u64,
    /// Segments closed early by every share, for the backup's log.
    cut_early: &'a AtomicUsize,
}

impl<'a> Buffered<'a> {
    fn new(limit: u64, cut_early: &'a AtomicUsize) -> Self {
        Self {
            held: 0,
            limit,
            cut_early,
        }
    }

    /// Runs `change` on `w`, counting what it makes `w` hold.
    fn track<T>(
        &mut self,
        w: &mut PartitionWriter,
        change: impl FnOnce(&mut PartitionWriter) -> T,
    ) -> T {
        let before = w.held();
        let out = change(w);
        self.held = (self.held + w.held()).saturating_sub(before);
        out
    }

    /// Counts again what `writers` hold (after flushes made elsewhere).
    fn recount(&mut self, writers: &Writers) {
        self.held = writers.values().flatten().map(PartitionWriter::held).sum();
    }

    /// Closes the fullest segments until no more than the limit is held.
    fn keep_within(
        &mut self,
        writers: &mut Writers,
        uploader: &SegmentSender,
    ) -> Result<(), BackupError> {
        while self.held > self.limit {
            let Some(fullest) = writers
                .values_mut()
                .flatten()
                .max_by_key(|w| w.held())
                .filter(|w| w.held() > 0)
            else {
                return Ok(());
            };
            let records = fullest.count;
            self.track(fullest, |w| w.flush(uploader, NextRegion::Empty))?;
            if records > 0 {
                self.cut_early.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// What a writer fills after handing a segment on.
#[derive(Clone, Copy, PartialEq)]
enum NextRegion {
    /// An uploaded segment's region if one is spare: for a writer that has just filled a
    /// whole segment and is likely to fill another.
    Spare,
    /// A new, empty one: for a partition read to its end, or a segment closed early (its
    /// partition is slow to fill; a spare region's pages would sit idle with it).
    Empty,
}

/// Messages between two readings of the clock while records flow.
const CLOCK_EVERY: u32 = 256;

/// Reads every partition up to its snapshot point, writing segments as they fill; fails
/// when nothing moves for `STALL_LIMIT`.
fn read_to_snapshot(
    consumer: &BaseConsumer,
    uploader: &SegmentSender,
    req: &BackupRequest,
    writers: &mut Writers,
    buffered: &mut Buffered<'_>,
    stop: &AtomicBool,
) -> Result<(), BackupError> {
    let mut last_progress = Instant::now();
    let mut last_position_check = Instant::now();
    // Clocks are read every CLOCK_EVERY messages, not per message (`perf`: reading the
    // clock per message was 4 % of a backup's consume thread).
    let (mut since_clock, mut progressed) = (0u32, false);
    // Partitions not yet read to their snapshot point (not recounted per message: a
    // backup of thousands of partitions would walk them all for every record).
    let mut pending = writers.values().flatten().filter(|w| !w.done).count();
    while pending > 0 {
        let polled = consumer.poll(Duration::from_millis(100));
        since_clock += 1;
        let got_something = polled.is_some();
        match polled {
            Some(Ok(msg)) => {
                progressed = true;
                let Some(w) = writer_mut(writers, msg.topic(), msg.partition()) else {
                    continue;
                };
                if w.done || msg.offset() >= w.high {
                    pending -= usize::from(w.finish());
                    continue;
                }
                buffered.track(w, |w| {
                    w.push(
                        msg.offset(),
                        msg.timestamp().to_millis().unwrap_or(-1),
                        msg.key(),
                        msg.payload(),
                        MessageHeaders::of(msg.headers()),
                    );
                });
                if msg.offset() >= w.high - 1 {
                    pending -= usize::from(w.finish());
                }
                if w.done {
                    buffered.track(w, |w| w.flush(uploader, NextRegion::Empty))?;
                } else if w.full(req) {
                    buffered.track(w, |w| w.flush(uploader, NextRegion::Spare))?;
                }
                buffered.keep_within(writers, uploader)?;
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error during backup; retrying"),
        }
        if got_something && since_clock < CLOCK_EVERY {
            continue;
        }
        since_clock = 0;
        // Another share's reading failed: the backup is over, its error says why.
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if std::mem::take(&mut progressed) {
            last_progress = Instant::now();
        }
        // Partitions whose tail is control records or aborted data never deliver offset
        // high-1; the consumer position tells when they are past the snapshot point.
        if last_position_check.elapsed() > Duration::from_millis(500) {
            last_position_check = Instant::now();
            let finished = finish_passed_partitions(consumer, uploader, writers)?;
            if finished > 0 {
                pending -= finished;
                last_progress = Instant::now();
                buffered.recount(writers);
            }
        }
        if last_progress.elapsed() > STALL_LIMIT {
            return Err(BackupError::Stalled {
                secs: STALL_LIMIT.as_secs(),
                pending: writers
                    .values()
                    .flatten()
                    .filter(|w| !w.done)
                    .map(|w| format!("{}/{}", w.topic, w.partition))
                    .collect(),
            });
        }
    }
    for w in writers.values_mut().flatten() {
        w.flush(uploader, NextRegion::Empty)?;
    }
    Ok(())
}

/// Marks done (and flushes) the partitions the consumer has read past their snapshot point;
/// returns how many were.
fn finish_passed_partitions(
    consumer: &BaseConsumer,
    uploader: &SegmentSender,
    writers: &mut Writers,
) -> Result<usize, BackupError> {
    let Ok(pos) = consumer.position() else {
        return Ok(0);
    };
    let mut finished = 0;
    for e in pos.elements() {
        if let (Offset::Offset(o), Some(w)) =
            (e.offset(), writer_mut(writers, e.topic(), e.partition()))
        {
            if o >= w.high && w.finish() {
                w.flush(uploader, NextRegion::Empty)?;
                finished += 1;
            }
        }
    }
    Ok(finished)
}

/// A message's headers as the segment encoder takes them, read in place: collecting them
/// into a `Vec` first allocated and freed one per message.
struct MessageHeaders<'m> {
    headers: Option<&'m BorrowedHeaders>,
    next: usize,
    count: usize,
}

impl<'m> MessageHeaders<'m> {
    fn of(headers: Option<&'m BorrowedHeaders>) -> Self {
        Self {
            headers,
            next: 0,
            count: headers.map_or(0, Headers::count),
        }
    }
}

impl<'m> Iterator for MessageHeaders<'m> {
    type Item = (&'m str, Option<&'m [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        let header = self.headers?.try_get(self.next)?;
        self.next += 1;
        Some((header.key, header.value))
    }
}

/// Accumulates one partition's records into segments.
pub(crate) struct PartitionWriter {
    backup_id: String,
    frame_bytes: u64,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    high: i64,
    done: bool,
    /// The low watermark when the snapshot point was fixed: where reading starts.
    low: i64,
    region: Vec<u8>,
    /// Whether `region` came from the spare ones (see [`PartitionWriter::held`]).
    spare: bool,
    cuts: FrameCuts,
    count: u64,
    start_offset: i64,
    end_offset: i64,
    first_ts: i64,
    last_ts: i64,
    min_ts: i64,
    max_ts: i64,
    pub(crate) segments: Vec<SegmentMeta>,
}

impl PartitionWriter {
    fn new(req: &BackupRequest, topic: &str, partition: i32, (low, high): (i64, i64)) -> Self {
        let region_capacity = (req.segment_max_bytes as usize).min(1 << 20);
        Self {
            backup_id: req.backup_id.clone(),
            frame_bytes: req.frame_bytes,
            topic: topic.to_string(),
            partition,
            high,
            done: high <= low,
            low,
            region: Vec::with_capacity(region_capacity),
            spare: false,
            cuts: FrameCuts::new(req.frame_bytes),
            count: 0,
            start_offset: 0,
            end_offset: 0,
            first_ts: 0,
            last_ts: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            segments: vec![],
        }
    }

    fn push(
        &mut self,
        offset: i64,
        ts: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: MessageHeaders<'_>,
    ) {
        if self.count == 0 {
            self.start_offset = offset;
            self.first_ts = ts;
        }
        self.count += 1;
        self.end_offset = offset;
        self.last_ts = ts;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.cuts.record(self.region.len(), offset, ts);
        encode_record(&mut self.region, offset, ts, key, value, headers);
    }

    /// Marks the partition read to its snapshot point; whether it was not before.
    fn finish(&mut self) -> bool {
        !std::mem::replace(&mut self.done, true)
    }

    fn full(&self, req: &BackupRequest) -> bool {
        self.region.len() as u64 >= req.segment_max_bytes || self.count >= req.segment_max_records
    }

    /// The memory this writer's region holds: the records written to it, or, for a spare
    /// region, its whole room (its pages stay in memory from the segment it held before).
    fn held(&self) -> u64 {
        if self.spare {
            self.region.capacity().max(self.region.len()) as u64
        } else {
            self.region.len() as u64
        }
    }

    /// Hands the segment filled so far to the upload thread and starts the next in `next`.
    /// With no records, only lets go of a spare region that `next` does not want.
    fn flush(&mut self, uploader: &SegmentSender, next: NextRegion) -> Result<(), BackupError> {
        if self.count == 0 {
            if self.spare && next == NextRegion::Empty {
                self.region = Vec::new();
                self.spare = false;
            }
            return Ok(());
        }
        let (region, spare) = match next {
            NextRegion::Spare => uploader
                .spare_region()
                .map_or_else(|| (Vec::new(), false), |r| (r, true)),
            NextRegion::Empty => (Vec::new(), false),
        };
        let header = SegmentHeader {
            compression: Compression::Zstd as u8,
            record_count: self.count,
            start_offset: self.start_offset,
            end_offset: self.end_offset,
        };
        let key = segment_key(
            &self.backup_id,
            &self.topic,
            self.partition,
            self.start_offset,
        );
        let region = std::mem::replace(&mut self.region, region);
        self.spare = spare;
        let meta = SegmentMeta {
            key: key.clone(),
            start_offset: self.start_offset,
            end_offset: self.end_offset,
            start_timestamp: self.first_ts,
            end_timestamp: self.last_ts,
            record_count: self.count,
            uncompressed_size: region.len() as u64,
            compressed_size: 0,
            min_timestamp: Some(self.min_ts),
            max_timestamp: Some(self.max_ts),
            frames: Vec::new(),
        };
        let cuts = std::mem::replace(&mut self.cuts, FrameCuts::new(self.frame_bytes));
        uploader.send(SegmentJob {
            topic: self.topic.clone(),
            partition: self.partition,
            key,
            region,
            cuts,
            header,
            meta,
        })?;
        self.count = 0;
        self.min_ts = i64::MAX;
        self.max_ts = i64::MIN;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::FetchSettings;

    fn request() -> BackupRequest {
        BackupRequest {
            backup_id: "b".into(),
            bootstrap_servers: "127.0.0.1:9".into(),
            kafka_properties: BTreeMap::new(),
            topics: vec!["t".into()],
            consumer_groups: vec![],
            segment_max_bytes: 1 << 20,
            segment_max_records: 1000,
            zstd_level: 3,
            min_compression_savings: 12.5,
            frame_bytes: 1 << 20,
            max_buffered_bytes: crate::backup::DEFAULT_MAX_BUFFERED_BYTES,
            fetch: FetchSettings::default(),
        }
    }

    fn shares_of(ranges: &[(&str, i32, i64, i64)], shares: usize) -> Vec<Vec<(String, i32)>> {
        let req = request();
        let points = ranges
            .iter()
            .map(|(t, p, low, high)| PartitionWriter::new(&req, t, *p, (*low, *high)))
            .collect();
        split_into_shares(points, shares)
            .into_iter()
            .map(|s| s.into_iter().map(|w| (w.topic, w.partition)).collect())
            .collect()
    }

    #[test]
    fn partitions_are_shared_out_by_offset_range_largest_first() {
        let ranges = [
            ("a", 0, 0, 1000),
            ("a", 1, 0, 100),
            ("a", 2, 500, 1100),
            ("b", 0, 0, 500),
            ("b", 1, 7, 7),
        ];
        let shares = shares_of(&ranges, 2);
        // Ranges 1000, 600, 500, 100: 1000 | 600, then 500 onto the 600 (1100), then 100
        // onto the 1000; the empty b/1 goes with the first share.
        assert_eq!(
            shares,
            vec![
                vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 1)],
                vec![("a".into(), 2), ("b".into(), 0)],
            ]
        );
        let all: usize = shares.iter().map(Vec::len).sum();
        assert_eq!(all, ranges.len(), "every partition in exactly one share");
    }

    #[test]
    fn no_share_reads_nothing_and_empty_partitions_still_get_one() {
        // More consumers than partitions: one share per partition to read.
        assert_eq!(shares_of(&[("a", 0, 0, 5), ("a", 1, 0, 9)], 16).len(), 2);
        // Nothing to read at all: one share holding the empty partitions, so the manifest
        // still lists them.
        assert_eq!(
            shares_of(&[("a", 0, 3, 3), ("a", 1, 0, 0)], 4),
            vec![vec![("a".into(), 0), ("a".into(), 1)]]
        );
        // A share count of 0 is taken as 1.
        assert_eq!(shares_of(&[("a", 0, 0, 5), ("a", 1, 0, 9)], 0).len(), 1);
    }

    #[test]
    fn writers_are_found_by_partition_id_within_a_share() {
        let req = request();
        let mut writers = Writers::new();
        writers.insert(
            "t".into(),
            vec![
                PartitionWriter::new(&req, "t", 1, (0, 5)),
                PartitionWriter::new(&req, "t", 4, (0, 5)),
            ],
        );
        assert_eq!(
            writer_mut(&mut writers, "t", 4).map(|w| w.partition),
            Some(4)
        );
        assert!(writer_mut(&mut writers, "t", 0).is_none());
        assert!(writer_mut(&mut writers, "t", -1).is_none());
        assert!(writer_mut(&mut writers, "u", 1).is_none());
    }
}

//! The `backup` command: a snapshot of the matched topics up to the high watermark seen at
//! start. Records are read `read_committed` (librdkafka drops control records and aborted
//! data), cut into segments by size and count, and uploaded as they fill. Committed offsets
//! of consumer groups are snapshotted so a restore can translate them. The manifest is
//! written last: a backup that crashed half-way has no manifest and never looks complete.

use crate::filters::{FilterError, TopicPattern};
use crate::frames::FrameCuts;
use crate::kafka::{client_config, drop_in_background};
use crate::manifest::{
    manifest_key, segment_key, GroupOffset, Manifest, PartitionManifest, SegmentMeta, TopicManifest,
};
use crate::segment::{encode_record, Compression, SegmentHeader};
use crate::segment_upload::{Compressing, SegmentJob, SegmentUploader};
use crate::storage::{BackupStore, StorageError};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::runtime::Handle;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("invalid --backup-id {0:?}: use letters, digits, '.', '_' and '-' only, not starting with '.'")]
    BadBackupId(String),
    #[error("cluster {bootstrap} unreachable or refused {what}: {source}; check --bootstrap-servers and the security settings")]
    Kafka {
        bootstrap: String,
        what: String,
        #[source]
        source: Box<KafkaError>,
    },
    #[error("no topic in cluster {bootstrap} matches {patterns:?}; topics there: {available:?}")]
    NoTopics {
        bootstrap: String,
        patterns: Vec<String>,
        available: Vec<String>,
    },
    #[error("invalid fetch setting: {0}; leave it out for the default")]
    BadFetchSetting(String),
    #[error("invalid --min-compression-savings {0}: give a percent from 0 (compress every segment) to 100 (store every segment uncompressed)")]
    BadCompressionSavings(f64),
    #[error("zstd compression failed: {0}")]
    Compress(std::io::Error),
    #[error("backup thread ended abnormally: {0}")]
    Internal(String),
    #[error("backup stalled: no record arrived for {secs}s while partitions {pending:?} were below their high watermark; check broker health and retry")]
    Stalled { secs: u64, pending: Vec<String> },
}

/// What to back up and how to cut segments.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub backup_id: String,
    pub bootstrap_servers: String,
    pub kafka_properties: BTreeMap<String, String>,
    pub topics: Vec<String>,
    /// Groups whose offsets to snapshot; empty = every group the cluster lists.
    pub consumer_groups: Vec<String>,
    pub segment_max_bytes: u64,
    pub segment_max_records: u64,
    pub zstd_level: i32,
    /// Percent of a segment compression must save for the segment to be stored compressed
    /// (`compress_probe`); 0 compresses every segment.
    pub min_compression_savings: f64,
    /// Uncompressed bytes per zstd frame / seek-index entry (see `frames.rs`).
    pub frame_bytes: u64,
    pub fetch: FetchSettings,
}

/// How long the broker may hold a fetch for more data, by default. librdkafka's own default
/// (500 ms) let a broker that waits out `fetch.wait.max.ms` before answering (tansu does)
/// halve a backup's speed; a backup reads a fixed snapshot, so there is always data to
/// answer with until the very end, and a short wait costs nothing there.
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 10;
/// Bytes one fetch may return per partition, by default: several segments' worth of
/// batches per round trip instead of librdkafka's 1 MiB.
pub const DEFAULT_MAX_PARTITION_FETCH_BYTES: u32 = 8 << 20;

/// The consumer's fetch settings: they depend on the source cluster's brokers, so they are
/// configuration (`backup.fetch`, `--fetch-wait-max-ms`, `--max-partition-fetch-bytes`)
/// with defaults measured against the bench's broker (README, Benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    pub wait_max_ms: u32,
    pub max_partition_bytes: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            wait_max_ms: DEFAULT_FETCH_WAIT_MAX_MS,
            max_partition_bytes: DEFAULT_MAX_PARTITION_FETCH_BYTES,
        }
    }
}

const META_TIMEOUT: Duration = Duration::from_secs(10);
const STALL_LIMIT: Duration = Duration::from_secs(60);

impl BackupRequest {
    /// Checks the request without touching the cluster or the store, so a typo never leaves
    /// a half-created backup location behind. Returns the parsed topic patterns.
    pub fn validate(&self) -> Result<Vec<TopicPattern>, BackupError> {
        let id = &self.backup_id;
        let id_ok = !id.is_empty()
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            return Err(BackupError::BadBackupId(id.clone()));
        }
        if self.fetch.wait_max_ms > 300_000 {
            return Err(BackupError::BadFetchSetting(format!(
                "--fetch-wait-max-ms {} is above librdkafka's limit of 300000",
                self.fetch.wait_max_ms
            )));
        }
        if !(0.0..=100.0).contains(&self.min_compression_savings) {
            return Err(BackupError::BadCompressionSavings(
                self.min_compression_savings,
            ));
        }
        if !(1..=1_000_000_000).contains(&self.fetch.max_partition_bytes) {
            return Err(BackupError::BadFetchSetting(format!(
                "--max-partition-fetch-bytes {} is outside 1..=1000000000",
                self.fetch.max_partition_bytes
            )));
        }
        Ok(self
            .topics
            .iter()
            .map(|t| TopicPattern::parse(t))
            .collect::<Result<Vec<_>, _>>()?)
    }
}

/// Runs a snapshot backup and returns the manifest it wrote.
pub async fn run_backup(store: &BackupStore, req: &BackupRequest) -> Result<Manifest, BackupError> {
    let patterns = req.validate()?;
    if store.exists(&manifest_key(&req.backup_id)).await? {
        return Err(StorageError::BackupExists {
            backup_id: req.backup_id.clone(),
            location: store.location().to_string(),
        }
        .into());
    }
    let store = store.clone();
    let req = req.clone();
    let handle = Handle::current();
    tokio::task::spawn_blocking(move || backup_blocking(&handle, &store, &req, &patterns))
        .await
        .unwrap_or_else(|e| Err(BackupError::Internal(e.to_string())))
}

/// A Kafka error of this backup, naming the cluster and what was being done.
fn kafka_error(req: &BackupRequest, what: &str) -> impl Fn(KafkaError) -> BackupError {
    let bootstrap = req.bootstrap_servers.clone();
    let what = what.to_string();
    move |source| BackupError::Kafka {
        bootstrap: bootstrap.clone(),
        what: what.clone(),
        source: Box::new(source),
    }
}

/// The backup, in named steps: select the topics, fix the snapshot point of every partition,
/// read each partition up to it into segments, then write the manifest last.
fn backup_blocking(
    handle: &Handle,
    store: &BackupStore,
    req: &BackupRequest,
    patterns: &[TopicPattern],
) -> Result<Manifest, BackupError> {
    let consumer = snapshot_consumer(req)?;
    let (topics, replication) = select_topics(&consumer, req, patterns)?;
    let mut writers = assign_to_snapshot(&consumer, req, &topics)?;
    let side_reads = SideReads::start(handle, req, &topics, replication);
    tracing::info!(
        partitions = writers.values().map(Vec::len).sum::<usize>(),
        "backup started"
    );
    // One compression thread per core: 2 threads took a 196 MB backup from ~1.85 s to ~1.35 s
    // on 2 cores shared with the broker (level 3; README, Benchmarks).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let compressing = Compressing {
        zstd_level: req.zstd_level,
        min_savings_percent: req.min_compression_savings,
    };
    let mut uploader = SegmentUploader::start(handle.clone(), store.clone(), compressing, cores);
    read_to_snapshot(&consumer, &mut uploader, req, &mut writers)?;
    // Closing a consumer that has a group waits ~100 ms for its coordinator; nothing after
    // this point needs it, so it closes beside the last uploads and the manifest write.
    drop_in_background(consumer);
    let finished = uploader.finish()?;
    let written: usize = finished.segments.values().map(Vec::len).sum();
    if finished.stored_uncompressed > 0 {
        tracing::info!(
            segments = finished.stored_uncompressed,
            of = written,
            min_compression_savings = req.min_compression_savings,
            "segments stored uncompressed: compressing their samples saved less than --min-compression-savings percent"
        );
    }
    for ((topic, partition), mut segments) in finished.segments {
        if let Some(w) = writer_mut(&mut writers, &topic, partition) {
            segments.sort_by_key(|s| s.start_offset);
            w.segments = segments;
        }
    }
    let (settings, group_offsets) = side_reads.join()?;
    let manifest = build_manifest(req, &topics, &settings, writers, group_offsets);
    handle.block_on(store.write_manifest(&manifest))?;
    tracing::info!(records = manifest.total_records(), "backup complete");
    Ok(manifest)
}

/// What the manifest records besides the records: the topics' settings and the groups'
/// committed offsets. They are read on a thread of their own while the records are read
/// (each needs clients and round trips of its own: ~0.1-0.2 s before and after the records
/// in a 1 s backup), once the snapshot point is fixed, so a group's committed offset lies
/// within the backed-up range (read after a long backup, commits made meanwhile could point
/// past it).
enum SideReads {
    Reading(std::thread::JoinHandle<SideReadings>),
    /// No thread could be started: read before the records, as before.
    Read(SideReadings),
}

type SideReadings = (BTreeMap<String, TopicSettings>, Vec<GroupOffset>);
type SideInputs = (
    Handle,
    BackupRequest,
    BTreeMap<String, i32>,
    BTreeMap<String, i32>,
);

impl SideReads {
    fn start(
        handle: &Handle,
        req: &BackupRequest,
        topics: &BTreeMap<String, i32>,
        replication: BTreeMap<String, i32>,
    ) -> Self {
        fn read((handle, req, topics, replication): SideInputs) -> SideReadings {
            let started = Instant::now();
            let settings = topic_settings(&handle, &req, &topics, replication);
            let settings_ms = started.elapsed().as_secs_f64() * 1e3;
            let groups = snapshot_group_offsets(&req, &topics);
            tracing::debug!(
                settings_ms,
                groups_ms = started.elapsed().as_secs_f64() * 1e3 - settings_ms,
                "topic settings and group offsets read"
            );
            (settings, groups)
        }
        let inputs: SideInputs = (handle.clone(), req.clone(), topics.clone(), replication);
        let thread_inputs = inputs.clone();
        std::thread::Builder::new()
            .name("backup-side-reads".into())
            .spawn(move || read(thread_inputs))
            .map_or_else(|_| Self::Read(read(inputs)), Self::Reading)
    }

    fn join(self) -> Result<SideReadings, BackupError> {
        match self {
            Self::Read(readings) => Ok(readings),
            Self::Reading(thread) => thread.join().map_err(|_| {
                BackupError::Internal("reading topic settings and group offsets failed".into())
            }),
        }
    }
}

fn snapshot_consumer(req: &BackupRequest) -> Result<BaseConsumer, BackupError> {
    client_config(&req.bootstrap_servers, &req.kafka_properties)
        .set("group.id", format!("kafka-backup-{}", req.backup_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        // End of a partition is detected from the snapshot high watermark and the consumer
        // position, not from EOF events (which librdkafka also logs as global errors).
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", "1")
        .set("fetch.wait.max.ms", req.fetch.wait_max_ms.to_string())
        .set(
            "max.partition.fetch.bytes",
            req.fetch.max_partition_bytes.to_string(),
        )
        .create()
        .map_err(kafka_error(req, "the consumer configuration"))
}

/// What a topic's manifest records besides its data: replication factor and the
/// configurations that differ from Kafka's defaults (`None` when the broker did not say).
#[derive(Debug, Default)]
struct TopicSettings {
    replication_factor: Option<i32>,
    configs: Option<BTreeMap<String, String>>,
}

/// The selected topics' settings. A broker that cannot describe configurations leaves them
/// unrecorded (a warning), not the backup failed: the records are what must be kept.
fn topic_settings(
    handle: &Handle,
    req: &BackupRequest,
    topics: &BTreeMap<String, i32>,
    replication: BTreeMap<String, i32>,
) -> BTreeMap<String, TopicSettings> {
    let names: Vec<String> = topics.keys().cloned().collect();
    let configs = client_config(&req.bootstrap_servers, &req.kafka_properties)
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(|e| e.to_string())
        .and_then(|admin| {
            handle
                .block_on(crate::topic_configs::describe_topics(&admin, &names, META_TIMEOUT))
                .map_err(|e| e.to_string())
        })
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "topic configurations could not be read; the backup does not record them");
            BTreeMap::new()
        });
    names
        .into_iter()
        .map(|t| {
            let settings = TopicSettings {
                replication_factor: replication.get(&t).copied(),
                configs: configs.get(&t).cloned(),
            };
            (t, settings)
        })
        .collect()
}

/// Topic → partition count, and topic → replication factor.
type SelectedTopics = (BTreeMap<String, i32>, BTreeMap<String, i32>);

/// The cluster's topics the patterns select (internal topics only when named exactly),
/// with their partition counts and replication factors; refused when there are none.
fn select_topics(
    consumer: &BaseConsumer,
    req: &BackupRequest,
    patterns: &[TopicPattern],
) -> Result<SelectedTopics, BackupError> {
    let metadata = consumer
        .fetch_metadata(None, META_TIMEOUT)
        .map_err(kafka_error(req, "a metadata request"))?;
    let mut topics: BTreeMap<String, i32> = BTreeMap::new();
    let mut replication: BTreeMap<String, i32> = BTreeMap::new();
    for t in metadata.topics() {
        let internal = t.name().starts_with("__");
        let selected = patterns
            .iter()
            .any(|p| p.matches(t.name()) && (!internal || p.raw == t.name()));
        if selected {
            topics.insert(t.name().to_string(), t.partitions().len() as i32);
            if let Some(p) = t.partitions().first().filter(|p| !p.replicas().is_empty()) {
                replication.insert(t.name().to_string(), p.replicas().len() as i32);
            }
        }
    }
    if topics.is_empty() {
        return Err(BackupError::NoTopics {
            bootstrap: req.bootstrap_servers.clone(),
            patterns: req.topics.clone(),
            available: metadata
                .topics()
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
        });
    }
    Ok((topics, replication))
}

/// Each topic's partition writers, indexed by partition id. Looked up by the `&str` of a
/// message's topic: a key of owned strings needed a `String` allocated per message.
type Writers = HashMap<String, Vec<PartitionWriter>>;

fn writer_mut<'w>(
    writers: &'w mut Writers,
    topic: &str,
    partition: i32,
) -> Option<&'w mut PartitionWriter> {
    writers
        .get_mut(topic)?
        .get_mut(usize::try_from(partition).ok()?)
}

/// Fixes every partition's snapshot point (its high watermark now) and assigns the consumer
/// from the low watermark; empty partitions are done at once.
fn assign_to_snapshot(
    consumer: &BaseConsumer,
    req: &BackupRequest,
    topics: &BTreeMap<String, i32>,
) -> Result<Writers, BackupError> {
    let mut tpl = TopicPartitionList::new();
    let mut writers = Writers::new();
    for (topic, count) in topics {
        for p in 0..*count {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, META_TIMEOUT)
                .map_err(kafka_error(req, "a watermark request"))?;
            let mut w = PartitionWriter::new(req, topic, p, high);
            if high > low {
                tpl.add_partition_offset(topic, p, Offset::Offset(low))
                    .map_err(kafka_error(req, "the partition assignment"))?;
            } else {
                w.done = true;
            }
            writers.entry(topic.clone()).or_default().push(w);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(kafka_error(req, "the partition assignment"))?;
    Ok(writers)
}

/// Messages between two readings of the clock while records flow.
const CLOCK_EVERY: u32 = 256;

/// Reads every partition up to its snapshot point, writing segments as they fill; fails
/// when nothing moves for `STALL_LIMIT`.
fn read_to_snapshot(
    consumer: &BaseConsumer,
    uploader: &mut SegmentUploader,
    req: &BackupRequest,
    writers: &mut Writers,
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
                w.push(
                    msg.offset(),
                    msg.timestamp().to_millis().unwrap_or(-1),
                    msg.key(),
                    msg.payload(),
                    MessageHeaders::of(msg.headers()),
                );
                if msg.offset() >= w.high - 1 {
                    pending -= usize::from(w.finish());
                }
                if w.full(req) || w.done {
                    w.flush(uploader)?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error during backup; retrying"),
        }
        if got_something && since_clock < CLOCK_EVERY {
            continue;
        }
        since_clock = 0;
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
        w.flush(uploader)?;
    }
    Ok(())
}

/// Marks done (and flushes) the partitions the consumer has read past their snapshot point;
/// returns how many were.
fn finish_passed_partitions(
    consumer: &BaseConsumer,
    uploader: &mut SegmentUploader,
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
                w.flush(uploader)?;
                finished += 1;
            }
        }
    }
    Ok(finished)
}

fn build_manifest(
    req: &BackupRequest,
    topics: &BTreeMap<String, i32>,
    settings: &BTreeMap<String, TopicSettings>,
    mut writers: Writers,
    group_offsets: Vec<GroupOffset>,
) -> Manifest {
    let mut topic_manifests = Vec::new();
    for (topic, count) in topics {
        let partitions = writers
            .remove(topic)
            .unwrap_or_default()
            .into_iter()
            .map(|w| PartitionManifest {
                partition_id: w.partition,
                segments: w.segments,
                gaps: vec![],
            })
            .collect();
        let own = settings.get(topic);
        topic_manifests.push(TopicManifest {
            name: topic.clone(),
            original_partition_count: Some(*count),
            replication_factor: own.and_then(|s| s.replication_factor),
            configs: own.and_then(|s| s.configs.clone()),
            partitions,
        });
    }
    Manifest {
        backup_id: req.backup_id.clone(),
        created_at: chrono::Utc::now().timestamp_millis(),
        source_cluster_id: None,
        source_brokers: Some(serde_json::Value::Array(
            crate::filters::split_list(&req.bootstrap_servers)
                .into_iter()
                .map(serde_json::Value::String)
                .collect(),
        )),
        compression: Some("zstd".into()),
        topics: topic_manifests,
        consumer_group_offsets: group_offsets,
    }
}

/// Committed offsets of consumer groups on the backed-up topics. A group that cannot be read
/// is logged and skipped: group offsets are advisory, the records are the backup.
fn snapshot_group_offsets(req: &BackupRequest, topics: &BTreeMap<String, i32>) -> Vec<GroupOffset> {
    let mut groups = req.consumer_groups.clone();
    if groups.is_empty() {
        let lister: Result<BaseConsumer, _> =
            client_config(&req.bootstrap_servers, &req.kafka_properties).create();
        match lister.and_then(|c| c.fetch_group_list(None, META_TIMEOUT)) {
            Ok(list) => groups = list.groups().iter().map(|g| g.name().to_string()).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list consumer groups; no group offsets saved (name them with --consumer-groups)")
            }
        }
    }
    let own = format!("kafka-backup-{}", req.backup_id);
    let mut out = Vec::new();
    for group in groups.into_iter().filter(|g| *g != own) {
        let mut tpl = TopicPartitionList::new();
        for (t, n) in topics {
            for p in 0..*n {
                tpl.add_partition(t, p);
            }
        }
        let consumer: Result<BaseConsumer, _> =
            client_config(&req.bootstrap_servers, &req.kafka_properties)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create();
        match consumer.and_then(|c| c.committed_offsets(tpl, META_TIMEOUT)) {
            Ok(committed) => {
                for e in committed.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        out.push(GroupOffset {
                            group: group.clone(),
                            topic: e.topic().to_string(),
                            partition: e.partition(),
                            offset: o,
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(%group, error = %e, "cannot read committed offsets of group"),
        }
    }
    out
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
struct PartitionWriter {
    backup_id: String,
    frame_bytes: u64,
    region_capacity: usize,
    topic: String,
    partition: i32,
    high: i64,
    done: bool,
    region: Vec<u8>,
    cuts: FrameCuts,
    count: u64,
    start_offset: i64,
    end_offset: i64,
    first_ts: i64,
    last_ts: i64,
    min_ts: i64,
    max_ts: i64,
    segments: Vec<SegmentMeta>,
}

impl PartitionWriter {
    fn new(req: &BackupRequest, topic: &str, partition: i32, high: i64) -> Self {
        let region_capacity = (req.segment_max_bytes as usize).min(1 << 20);
        Self {
            backup_id: req.backup_id.clone(),
            frame_bytes: req.frame_bytes,
            region_capacity,
            topic: topic.to_string(),
            partition,
            high,
            done: false,
            region: Vec::with_capacity(region_capacity),
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

    /// Hands the segment filled so far to the upload thread and starts the next.
    fn flush(&mut self, uploader: &mut SegmentUploader) -> Result<(), BackupError> {
        if self.count == 0 {
            return Ok(());
        }
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
        let region = std::mem::replace(&mut self.region, uploader.region(self.region_capacity));
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

//! The `backup` command: a snapshot of the matched topics up to the high watermark seen at
//! start. Records are read `read_committed` (librdkafka drops control records and aborted
//! data), cut into segments by size and count, and uploaded as they fill. Committed offsets
//! of consumer groups are snapshotted so a restore can translate them. The manifest is
//! written last: a backup that crashed half-way has no manifest and never looks complete.

use crate::backup_read::{read_partitions, snapshot_points, writer_mut, Writers};
use crate::filters::{FilterError, TopicPattern};
use crate::kafka::{client_config, drop_in_background};
use crate::manifest::{manifest_key, GroupOffset, Manifest, PartitionManifest, TopicManifest};
use crate::segment_upload::{Compressing, SegmentUploader};
use crate::storage::{BackupStore, StorageError};
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
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
    #[error("invalid --max-buffered-bytes {0}: give at least {min} (1 MiB); below that segments would be cut after a few records", min = MIN_BUFFERED_BYTES)]
    BadBufferedBytes(u64),
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
    /// Most bytes of records held in segments not yet full, over all partitions; the
    /// fullest is closed early when more would be (see `backup_read::Buffered`).
    pub max_buffered_bytes: u64,
    pub fetch: FetchSettings,
}

/// Bytes of records held in segments being filled, by default: room for 8 whole segments
/// of the default `--segment-max-bytes`, so a backup of a few partitions cuts full-sized
/// segments, while one of hundreds no longer holds all of them in memory at once.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 128 << 20;
/// The smallest `--max-buffered-bytes` taken.
pub const MIN_BUFFERED_BYTES: u64 = 1 << 20;

/// How long the broker may hold a fetch for more data, by default. librdkafka's own default
/// (500 ms) let a broker that waits out `fetch.wait.max.ms` before answering (tansu does)
/// halve a backup's speed; a backup reads a fixed snapshot, so there is always data to
/// answer with until the very end, and a short wait costs nothing there.
pub const DEFAULT_FETCH_WAIT_MAX_MS: u32 = 10;
/// Bytes one fetch may return per partition, by default: several segments' worth of
/// batches per round trip instead of librdkafka's 1 MiB.
pub const DEFAULT_MAX_PARTITION_FETCH_BYTES: u32 = 8 << 20;
/// Consumers (connections to each broker) the partitions are split between, by default;
/// see `backup_read.rs` for why more than one, and bench/HISTORY.md for the measurement.
pub const DEFAULT_FETCH_CONNECTIONS: u32 = 2;
/// Most consumers one backup splits its partitions between: each has its own connections,
/// thread and prefetch queue.
pub const MAX_FETCH_CONNECTIONS: u32 = 16;
/// librdkafka's default prefetch queue of one consumer (`queued.max.messages.kbytes`),
/// shared out between a backup's consumers so that more of them do not hold more memory.
const PREFETCH_KBYTES: u32 = 65_536;

/// The consumer's fetch settings: they depend on the source cluster's brokers, so they are
/// configuration (`backup.fetch`, `--fetch-wait-max-ms`, `--max-partition-fetch-bytes`,
/// `--fetch-connections`) with defaults measured against the bench's broker
/// (bench/HISTORY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    pub wait_max_ms: u32,
    pub max_partition_bytes: u32,
    /// Consumers the partitions are split between (at most one per partition is used).
    pub connections: u32,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            wait_max_ms: DEFAULT_FETCH_WAIT_MAX_MS,
            max_partition_bytes: DEFAULT_MAX_PARTITION_FETCH_BYTES,
            connections: DEFAULT_FETCH_CONNECTIONS,
        }
    }
}

pub(crate) const META_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(60);

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
        if self.max_buffered_bytes < MIN_BUFFERED_BYTES {
            return Err(BackupError::BadBufferedBytes(self.max_buffered_bytes));
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
        if !(1..=MAX_FETCH_CONNECTIONS).contains(&self.fetch.connections) {
            return Err(BackupError::BadFetchSetting(format!(
                "--fetch-connections {} is outside 1..={MAX_FETCH_CONNECTIONS}",
                self.fetch.connections
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
    // Objects but no manifest: an earlier backup with this id stopped before it finished.
    let started = chrono::Utc::now();
    let leftovers = store.has_objects(&req.backup_id).await?;
    if leftovers {
        tracing::info!(
            backup_id = %req.backup_id,
            "objects of an earlier, unfinished backup with this id are here: they are written over, and those not written again are removed once the manifest is written"
        );
    }
    let manifest = {
        let (store, req) = (store.clone(), req.clone());
        let handle = Handle::current();
        tokio::task::spawn_blocking(move || backup_blocking(&handle, &store, &req, &patterns))
            .await
            .unwrap_or_else(|e| Err(BackupError::Internal(e.to_string())))?
    };
    // The backup is complete once its manifest is written: a failed clean-up (a store that
    // refuses deletes) is said, not made the backup's failure.
    if leftovers {
        match crate::leftovers::remove_unlisted_segments(store, &manifest, started).await {
            Ok(removed) => tracing::info!(
                segments = removed,
                "removed the earlier attempt's segments that this backup did not write again"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "the backup is complete, but the earlier attempt's segments it did not write again could not be removed; they take space and no restore reads them"
            ),
        }
    }
    Ok(manifest)
}

/// A Kafka error of this backup, naming the cluster and what was being done.
pub(crate) fn kafka_error(req: &BackupRequest, what: &str) -> impl Fn(KafkaError) -> BackupError {
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
    let points = snapshot_points(&consumer, req, &topics)?;
    let side_reads = SideReads::start(handle, req, &topics, replication);
    tracing::info!(partitions = points.len(), "backup started");
    // One compression thread per core: 2 threads took a 196 MB backup from ~1.85 s to ~1.35 s
    // on 2 cores shared with the broker (level 3; bench/HISTORY.md).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let compressing = Compressing {
        zstd_level: req.zstd_level,
        min_savings_percent: req.min_compression_savings,
    };
    let uploader = SegmentUploader::start(handle.clone(), store.clone(), compressing, cores);
    let (read, consumers) = read_partitions(consumer, points, req, &uploader);
    tracing::debug!("records read to the snapshot point");
    // Closing a consumer that has a group waits ~100 ms for its coordinator; nothing after
    // this point needs them, so they close beside the last uploads and the manifest write.
    drop_in_background(consumers);
    // A failed upload is the cause of a reader's failed send: its error comes first.
    let finished = uploader.finish()?;
    let mut writers = read?;
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

pub(crate) fn snapshot_consumer(req: &BackupRequest) -> Result<BaseConsumer, BackupError> {
    let mut config = client_config(&req.bootstrap_servers, &req.kafka_properties);
    config
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
        );
    // The backup's consumers share one consumer's prefetch memory (unless the client
    // properties set it).
    if !req
        .kafka_properties
        .contains_key("queued.max.messages.kbytes")
    {
        let kbytes = PREFETCH_KBYTES / req.fetch.connections.max(1);
        config.set("queued.max.messages.kbytes", kbytes.to_string());
    }
    config
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

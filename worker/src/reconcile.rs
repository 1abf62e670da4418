//! Takeover reconciliation, the second half of the exactly-once argument (see `task.rs`).
//!
//! A checkpoint says: source records before `source_next` are in the target, and the target
//! partition held nothing of ours at or after `target_next` when it was taken. A previous
//! holder may have written more after its last checkpoint before it died or was fenced. The
//! new holder reads the target partition from `target_next` to its current end and walks it
//! alongside the source records that follow the checkpoint: a target record equal to the next
//! expected source record (key, value, timestamp, headers as this tool writes them) is one
//! the old holder already produced; anything else was written by someone else and is skipped.
//! Production then resumes right after the last source record found.

use crate::merge::MergeStream;
use crate::pages::SegmentPages;
use crate::produce::{Acked, PartitionProducer};
use crate::schema_remap::{RemapError, SchemaIdRemapper};
use crate::source::{fetch_segment, RecordFilter, SourceError};
use kafka_backup_common::kafka::client_config;
use kafka_backup_common::segment::{DecodedSegment, RecordRef};
use kafka_backup_common::storage::BackupStore;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot read target {topic}/{partition} to reconcile after takeover: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("reading target {topic}/{partition} stalled at offset {at} below its end {end}")]
    Stalled {
        topic: String,
        partition: i32,
        at: i64,
        end: i64,
    },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    SchemaId(#[from] RemapError),
}

/// Where a task's target partition is, and how to read it.
pub struct TargetPartition<'a> {
    pub bootstrap: &'a str,
    pub properties: &'a BTreeMap<String, String>,
    pub topic: &'a str,
    pub partition: i32,
    /// The task's producer: its connections answer the end-offset query, which a fresh
    /// client would spend a connect and a metadata round trip on.
    pub client: &'a FutureProducer,
}

impl TargetPartition<'_> {
    fn err(&self) -> impl Fn(KafkaError) -> ReconcileError + '_ {
        |source| ReconcileError::Kafka {
            topic: self.topic.to_string(),
            partition: self.partition,
            source,
        }
    }

    fn consumer(&self) -> Result<StreamConsumer, ReconcileError> {
        client_config(self.bootstrap, self.properties)
            .set("group.id", "kafka-backup-reconcile")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .map_err(self.err())
    }

    /// Current end offset (high watermark).
    pub async fn end_offset(&self) -> Result<i64, ReconcileError> {
        let producer = self.client.clone();
        let (topic, p) = (self.topic.to_string(), self.partition);
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
        })
        .await
        .map_err(|_| self.err()(KafkaError::Canceled))?
        .map(|(_, high)| high)
        .map_err(self.err())
    }
}

/// A task's source records: where they are stored and which of them it restores.
pub struct TaskSource<'a> {
    pub store: &'a BackupStore,
    pub segments: SegmentPages,
    pub filter: RecordFilter,
    /// Missing or corrupt segments were skipped by the producing pass (skip_corrupt_segments).
    pub skip_bad: bool,
}

/// What a takeover expects to find in the target after the checkpoint.
pub enum Expected<'a> {
    /// A 1:1 task's source partition.
    Partition(Box<TaskSource<'a>>),
    /// A merge task's merged sequence, opened at the checkpoint's positions.
    Merge(MergeStream),
}

enum Cursor<'a> {
    Partition(Box<SourceCursor<'a>>),
    Merge(MergeStream),
}

impl Cursor<'_> {
    /// The next expected record with its merge source index (0 for a 1:1 task), schema IDs
    /// rewritten as the producing pass rewrote them.
    async fn next(
        &mut self,
        remap: Option<&mut SchemaIdRemapper>,
    ) -> Result<Option<(u32, ExpectedRecord)>, ReconcileError> {
        let (index, mut exp) = match self {
            Cursor::Partition(c) => match c.next_source().await? {
                Some(e) => (0, e),
                None => return Ok(None),
            },
            Cursor::Merge(m) => match m.next().await? {
                Some(r) => (r.index, ExpectedRecord::from(&r.as_ref())),
                None => return Ok(None),
            },
        };
        if let Some(remap) = remap {
            let probe = RecordRef {
                offset: exp.offset,
                timestamp: exp.timestamp,
                key: exp.key.as_deref(),
                value: exp.value.as_deref(),
                headers: Vec::new(),
                encoded_len: 0,
            };
            let rewritten = remap.rewrite(&probe).await?;
            if let Some(k) = rewritten.key {
                exp.key = Some(k);
            }
            if let Some(v) = rewritten.value {
                exp.value = Some(v);
            }
        }
        Ok(Some((index, exp)))
    }
}

/// Source records after a checkpoint, in order, across segments.
struct SourceCursor<'a> {
    store: &'a BackupStore,
    segments: SegmentPages,
    current: Option<(DecodedSegment, usize)>,
    filter: RecordFilter,
    skip_bad: bool,
}

impl SourceCursor<'_> {
    /// Next kept record as (offset, fingerprint pieces) — owned, since it outlives a segment.
    async fn next_source(&mut self) -> Result<Option<ExpectedRecord>, SourceError> {
        loop {
            if let Some((seg, pos)) = &mut self.current {
                let mut it = seg.records_from(*pos);
                while let Some(rec) = it.next() {
                    let rec = rec?;
                    if self.filter.keeps(&rec) {
                        *pos = it.position();
                        return Ok(Some(ExpectedRecord::from(&rec)));
                    }
                }
                self.current = None;
            }
            let Some(seg) = self.segments.next().await? else {
                return Ok(None);
            };
            if seg.end_offset < self.filter.from_offset {
                continue;
            }
            match fetch_segment(self.store, &seg).await {
                Ok(decoded) => self.current = Some((decoded, 0)),
                // The producing pass skipped this object too (skip_corrupt_segments).
                Err(e) if self.skip_bad && e.is_bad_object() => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

struct ExpectedRecord {
    offset: i64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    bytes: u64,
}

impl From<&RecordRef<'_>> for ExpectedRecord {
    fn from(r: &RecordRef<'_>) -> Self {
        Self {
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.map(<[u8]>::to_vec)))
                .collect(),
            bytes: r.encoded_len as u64,
        }
    }
}

fn same(
    expected: &ExpectedRecord,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    add_headers: bool,
) -> bool {
    if msg.key() != expected.key.as_deref()
        || msg.payload() != expected.value.as_deref()
        || (expected.timestamp >= 0 && msg.timestamp().to_millis() != Some(expected.timestamp))
    {
        return false;
    }
    let produced: Vec<(String, Option<Vec<u8>>)> = msg
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    let probe = RecordRef {
        offset: expected.offset,
        timestamp: expected.timestamp,
        key: None,
        value: None,
        headers: expected
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect(),
        encoded_len: 0,
    };
    let want: Vec<(String, Option<Vec<u8>>)> = PartitionProducer::headers_for(&probe, add_headers)
        .map(|h| {
            h.iter()
                .map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    produced == want
}

/// Reconciles the target tail after `acked` (the checkpoint) and returns the advanced state.
pub async fn reconcile(
    target: &TargetPartition<'_>,
    source: Expected<'_>,
    add_headers: bool,
    mut remap: Option<&mut SchemaIdRemapper>,
    mut acked: Acked,
) -> Result<Acked, ReconcileError> {
    let end = target.end_offset().await?;
    if end <= acked.target_next {
        return Ok(acked);
    }
    tracing::info!(
        topic = target.topic,
        partition = target.partition,
        from = acked.target_next,
        end,
        "reconciling target tail after takeover"
    );
    let consumer = target.consumer()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(
        target.topic,
        target.partition,
        Offset::Offset(acked.target_next),
    )
    .map_err(target.err())?;
    consumer.assign(&tpl).map_err(target.err())?;
    let mut cursor = match source {
        Expected::Partition(source) => Cursor::Partition(Box::new(SourceCursor {
            store: source.store,
            segments: source.segments,
            current: None,
            filter: RecordFilter {
                from_offset: acked.source_next,
                ..source.filter
            },
            skip_bad: source.skip_bad,
        })),
        Expected::Merge(stream) => Cursor::Merge(stream),
    };
    let mut expected = cursor.next(remap.as_deref_mut()).await?;
    let mut at = acked.target_next;
    let mut matched = 0u64;
    while at < end {
        let msg = match tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Err(target.err()(e)),
            Err(_) => {
                return Err(ReconcileError::Stalled {
                    topic: target.topic.to_string(),
                    partition: target.partition,
                    at,
                    end,
                })
            }
        };
        at = msg.offset() + 1;
        if let Some(exp) = &expected {
            if same(&exp.1, &msg, add_headers) {
                acked.record_from(exp.0, exp.1.offset, msg.offset(), exp.1.bytes);
                matched += 1;
                expected = cursor.next(remap.as_deref_mut()).await?;
                continue;
            }
        }
        tracing::warn!(
            offset = msg.offset(),
            "target record not written by this restore; skipping it"
        );
    }
    // Nothing of ours lies between the last match and `end`.
    acked.target_next = acked.target_next.max(end);
    tracing::info!(
        matched,
        source_next = acked.source_next,
        "reconciliation done"
    );
    Ok(acked)
}

//! The merged sequence of a merge task (N:1 and M:N partition mappings): several source
//! partitions into one target partition, as one deterministic order. At each step the next
//! record is taken from the source whose next record has the smallest (timestamp, source
//! partition); a source's records are never reordered among themselves, so each source's own
//! order (and so the order of every key) is kept even where its timestamps go backwards.
//!
//! Deterministic is what exactly-once needs: the sequence from any set of per-source
//! positions is always the same, so a takeover rebuilds from the checkpoint's positions the
//! very records its predecessor was producing and reconciles the target tail against them as
//! for a 1:1 task (`reconcile.rs`).

use crate::pages::SegmentPages;
use crate::source::{prefetch, RecordFilter, SourceError};
use kafka_backup_common::segment::{DecodedSegment, Record, RecordRef};
use kafka_backup_common::storage::BackupStore;
use tokio::sync::mpsc;

/// One record of the merged sequence, owned (it outlives the segment it came from while the
/// other sources catch up).
#[derive(Debug, Clone)]
pub struct MergedRecord {
    /// The source's index among the task's merge sources.
    pub index: u32,
    pub partition: i32,
    pub record: Record,
    pub encoded_len: usize,
}

impl MergedRecord {
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            offset: self.record.offset,
            timestamp: self.record.timestamp,
            key: self.record.key.as_deref(),
            value: self.record.value.as_deref(),
            headers: self
                .record
                .headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_deref()))
                .collect(),
            encoded_len: self.encoded_len,
        }
    }

    /// The merge order: timestamp, then source partition (offsets break no tie: one source
    /// offers one record at a time).
    fn order_key(&self) -> (i64, i32) {
        (self.record.timestamp, self.partition)
    }
}

/// Where one merge source reads from.
pub struct SourceSpec {
    pub partition: i32,
    pub segments: SegmentPages,
    /// The source's resume point and the task's time window.
    pub filter: RecordFilter,
}

type Segments = mpsc::Receiver<(String, Result<DecodedSegment, SourceError>)>;

/// One source's records in order, one ahead.
struct SourceStream {
    index: u32,
    partition: i32,
    segments: Segments,
    current: Option<(DecodedSegment, usize)>,
    filter: RecordFilter,
    head: Option<MergedRecord>,
    done: bool,
}

impl SourceStream {
    /// Makes `head` the source's next kept record (or marks the source done).
    async fn fill(&mut self, skip_bad: bool, skipped: &mut Vec<String>) -> Result<(), SourceError> {
        while self.head.is_none() && !self.done {
            if let Some((seg, pos)) = &mut self.current {
                let mut it = seg.records_from(*pos);
                while let Some(rec) = it.next() {
                    let rec = rec?;
                    if self.filter.keeps(&rec) {
                        *pos = it.position();
                        self.head = Some(MergedRecord {
                            index: self.index,
                            partition: self.partition,
                            record: rec.to_owned_record(),
                            encoded_len: rec.encoded_len,
                        });
                        return Ok(());
                    }
                }
                self.current = None;
            }
            match self.segments.recv().await {
                None => self.done = true,
                Some((_, Ok(seg))) => self.current = Some((seg, 0)),
                Some((key, Err(e))) if skip_bad && e.is_bad_object() => {
                    tracing::error!(%key, error = %e, "skipping a missing or corrupt segment (--skip-corrupt-segments)");
                    skipped.push(format!("{key}: {e}"));
                }
                Some((_, Err(e))) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The merged sequence of a task's sources from given positions.
pub struct MergeStream {
    sources: Vec<SourceStream>,
    skip_bad: bool,
    /// Segments skipped (skip_corrupt_segments) since the caller last took them.
    skipped: Vec<String>,
}

impl MergeStream {
    /// Starts reading every source (each one segment ahead, like a 1:1 task).
    pub fn open(store: &BackupStore, sources: Vec<SourceSpec>, skip_bad: bool) -> Self {
        let sources = sources
            .into_iter()
            .enumerate()
            .map(|(i, s)| SourceStream {
                index: i as u32,
                partition: s.partition,
                segments: prefetch(store.clone(), s.segments, s.filter, skip_bad),
                current: None,
                filter: s.filter,
                head: None,
                done: false,
            })
            .collect();
        Self {
            sources,
            skip_bad,
            skipped: Vec::new(),
        }
    }

    /// The next record of the merged sequence; `None` when every source is exhausted.
    pub async fn next(&mut self) -> Result<Option<MergedRecord>, SourceError> {
        for s in &mut self.sources {
            s.fill(self.skip_bad, &mut self.skipped).await?;
        }
        let pick = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.head.as_ref().map(|h| (h.order_key(), i)))
            .min()
            .map(|(_, i)| i);
        Ok(pick.and_then(|i| self.sources[i].head.take()))
    }

    /// Segments skipped since the last call.
    pub fn take_skipped(&mut self) -> Vec<String> {
        std::mem::take(&mut self.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_backup_common::segment::{encode_segment, Compression, Header};

    /// A local store holding one segment per source, read through fixed segment lists.
    async fn sources(
        dir: &std::path::Path,
        parts: &[(i32, Vec<(i64, i64)>)],
        from: &[i64],
    ) -> (BackupStore, Vec<SourceSpec>) {
        let store = BackupStore::open(dir.to_str().expect("utf8"), &Default::default(), true)
            .expect("store");
        let mut specs = Vec::new();
        for ((partition, recs), from) in parts.iter().zip(from) {
            let records: Vec<Record> = recs
                .iter()
                .map(|(offset, ts)| Record {
                    offset: *offset,
                    timestamp: *ts,
                    key: Some(format!("{partition}-{offset}").into_bytes()),
                    value: None,
                    headers: vec![Header {
                        key: "p".into(),
                        value: Some(vec![*partition as u8]),
                    }],
                })
                .collect();
            let key = format!("b/topics/t/partition={partition}/segment-0.bin.zst");
            store
                .put(&key, encode_segment(&records, Compression::Zstd, 1))
                .await
                .expect("put");
            let seg = kafka_backup_proto::SegmentRef {
                key,
                start_offset: recs[0].0,
                end_offset: recs[recs.len() - 1].0,
                record_count: recs.len() as u64,
                ..Default::default()
            };
            specs.push(SourceSpec {
                partition: *partition,
                segments: SegmentPages::fixed(vec![seg]),
                filter: RecordFilter {
                    from_offset: *from,
                    from_ts: None,
                    to_ts: None,
                },
            });
        }
        (store, specs)
    }

    async fn drain(m: &mut MergeStream) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        while let Some(r) = m.next().await.expect("next") {
            out.push((r.partition, r.record.offset));
        }
        out
    }

    #[tokio::test]
    async fn merges_by_timestamp_then_partition_keeping_each_order() {
        let dir = tempfile::tempdir().expect("tmp");
        // Partition 1 goes back in time at offset 11: its order wins over the timestamps.
        let parts = vec![
            (0, vec![(0, 10), (1, 20), (2, 30)]),
            (1, vec![(10, 20), (11, 5), (12, 25)]),
        ];
        let (store, specs) = sources(dir.path(), &parts, &[0, 10]).await;
        let mut m = MergeStream::open(&store, specs, false);
        assert_eq!(
            drain(&mut m).await,
            vec![(0, 0), (0, 1), (1, 10), (1, 11), (1, 12), (0, 2)],
            "ts 10 < 20 = 20 (partition 0 first) ..."
        );
        // From positions (2, 11): the same continuation as the full run from there.
        let dir2 = tempfile::tempdir().expect("tmp");
        let (store, specs) = sources(dir2.path(), &parts, &[2, 11]).await;
        let mut m = MergeStream::open(&store, specs, false);
        assert_eq!(drain(&mut m).await, vec![(1, 11), (1, 12), (0, 2)]);
    }
}

//! A backup's index file (`{backup_id}/manifest.index`): what a restore plans with, in a
//! compact binary form next to `manifest.json`.
//!
//! Parsing the manifest was most of a dry run (10,000 segments: 3 MB of JSON, ~8 ms of CPU
//! on two threads), and at a million segments it is ~300 MB. The index file holds the same
//! facts as columns of deltas (`proto/manifest_index.proto`), a few bytes a segment, and
//! decodes at memory speed. It is derived data and never the authority:
//! - it records the length and CRC32 of the manifest it was made from, and a reader uses it
//!   only when the manifest it is about to trust has exactly those (a manifest rewritten by
//!   another tool, or by hand, is read as JSON);
//! - on an object store it also records the manifest's entity tag, which the store changes
//!   whenever the object is written again: a reader that is told the same tag and length by
//!   a HEAD request uses the index without downloading the manifest to checksum it (at a
//!   million segments that is ~300 MB). A local manifest is always checksummed: reading it
//!   from the page cache is cheap, and a file's modification time is no content version;
//! - its own bytes carry a CRC32, so a damaged index file is noticed and ignored;
//! - any inconsistency while decoding (columns of different lengths, offsets that overflow)
//!   makes the reader fall back to the manifest, never to a guess.
//!
//! Foreign backups have no index file and are read as JSON, as before.

use crate::manifest::{
    bounds_inside, bounds_may_overlap, segment_key, segment_key_prefix, GroupOffset, Manifest,
    SegmentFrame,
};
use crate::manifest_index::{
    ManifestIndex, PartitionIndex, SegmentKey, SegmentSpan, Sieve, TopicIndex,
};
use kafka_backup_proto::manifest_index::{
    GroupOffsetRow, ManifestIndexFile, ManifestIndexHead, PartitionIndexColumns, TopicIndexColumns,
};
use prost::Message;
use std::sync::Arc;

/// The first bytes of an index file; then the CRC32 (LE) of the rest, then the message.
const MAGIC: &[u8; 4] = b"KBMI";
const HEADER_LEN: usize = 8;
/// The version this build writes and reads.
const VERSION: u32 = 1;

/// The index file's key in a backup.
pub fn index_key(backup_id: &str) -> String {
    format!("{backup_id}/manifest.index")
}

/// Why an index file was not used (the manifest is read instead; these are never shown as
/// failures).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IndexFileError {
    #[error("not an index file (bad magic or too short)")]
    NotIndex,
    #[error("the index file's checksum does not match its contents")]
    Damaged,
    #[error("index file version {0} is not known to this build")]
    Version(u32),
    #[error("the index file is not a valid message: {0}")]
    Decode(String),
    #[error("the index file was made from another manifest.json")]
    OtherManifest,
    #[error("the index file is inconsistent: {0}")]
    Inconsistent(&'static str),
}

/// A stored manifest as its object store reports it: what an index file can be matched
/// against without reading the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestVersion {
    pub len: u64,
    /// Never empty (a store that reports no tag gives no version).
    pub etag: String,
}

/// A manifest's index file, built once: a backup on an object store writes it twice, before
/// its manifest (so that an index exists whenever the manifest does) and after, with the
/// entity tag the store gave the manifest. At a million segments building the columns and
/// the manifest's CRC32 is a few hundred ms, so only the tag changes between the two.
pub struct IndexFile(ManifestIndexFile);

impl IndexFile {
    /// The index of `manifest`, whose JSON text is `json`.
    pub fn of(manifest: &Manifest, json: &[u8]) -> Self {
        IndexFile(ManifestIndexFile {
            version: VERSION,
            manifest_len: json.len() as u64,
            manifest_crc32: crc32fast::hash(json),
            manifest_etag: String::new(),
            backup_id: manifest.backup_id.clone(),
            created_at: manifest.created_at,
            topics: manifest
                .topics
                .iter()
                .map(|t| TopicIndexColumns {
                    name: t.name.clone(),
                    original_partition_count: t.original_partition_count,
                    replication_factor: t.replication_factor,
                    has_configs: t.configs.is_some(),
                    configs: t.configs.clone().unwrap_or_default(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| partition_columns(&manifest.backup_id, &t.name, p))
                        .collect(),
                })
                .collect(),
            consumer_group_offsets: manifest
                .consumer_group_offsets
                .iter()
                .map(|g| GroupOffsetRow {
                    group: g.group.clone(),
                    topic: g.topic.clone(),
                    partition: g.partition,
                    offset: g.offset,
                })
                .collect(),
        })
    }

    /// The file's bytes; `stored` is the manifest's version once written to an object store
    /// (`None` before it is written, or for a local one). A version of another length is not
    /// this manifest's and is not recorded.
    pub fn bytes(&mut self, stored: Option<&ManifestVersion>) -> Vec<u8> {
        let len = self.0.manifest_len;
        self.0.manifest_etag = stored
            .filter(|v| v.len == len)
            .map(|v| v.etag.clone())
            .unwrap_or_default();
        let body = self.0.encode_to_vec();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }
}

fn partition_columns(
    backup_id: &str,
    topic: &str,
    p: &crate::manifest::PartitionManifest,
) -> PartitionIndexColumns {
    let n = p.segments.len();
    let mut c = PartitionIndexColumns {
        partition_id: p.partition_id,
        start_offset_gap: Vec::with_capacity(n),
        offset_span: Vec::with_capacity(n),
        record_count: Vec::with_capacity(n),
        compressed_size: Vec::with_capacity(n),
        frame_count: Vec::with_capacity(n),
        ..Default::default()
    };
    let (mut next_offset, mut last_min) = (0i64, 0i64);
    for (i, s) in p.segments.iter().enumerate() {
        c.start_offset_gap
            .push(s.start_offset.wrapping_sub(next_offset));
        c.offset_span
            .push(s.end_offset.wrapping_sub(s.start_offset));
        next_offset = s.end_offset.wrapping_add(1);
        c.record_count.push(s.record_count);
        c.compressed_size.push(s.compressed_size);
        match s.timestamp_bounds() {
            Some((min, max)) => {
                c.min_timestamp_delta.push(min.wrapping_sub(last_min));
                c.timestamp_span.push(max.wrapping_sub(min));
                last_min = min;
            }
            None => c.unbounded.push(i as u32),
        }
        if s.key != segment_key(backup_id, topic, p.partition_id, s.start_offset) {
            c.custom_key_index.push(i as u32);
            c.custom_key.push(s.key.clone());
        }
        c.frame_count.push(s.frames.len() as u32);
        for f in &s.frames {
            c.frame_position.push(f.position);
            c.frame_compressed_len.push(f.compressed_len);
            c.frame_first_offset.push(f.first_offset);
            c.frame_last_offset.push(f.last_offset);
            c.frame_record_count.push(f.record_count);
            c.frame_min_timestamp.push(f.min_timestamp);
            c.frame_max_timestamp.push(f.max_timestamp);
            c.frame_crc32.push(f.crc32);
        }
    }
    c
}

/// An index file's contents, not yet checked against the manifest it claims to be made
/// from: `for_manifest` and `for_stored_manifest` are the only ways to its index.
pub struct UncheckedIndex {
    made_from: (u64, u32),
    made_from_etag: String,
    index: ManifestIndex,
}

impl UncheckedIndex {
    /// The index, if the manifest at hand has `fingerprint` (its length and CRC32), the one
    /// this index was made from.
    pub fn for_manifest(self, fingerprint: (u64, u32)) -> Result<ManifestIndex, IndexFileError> {
        if fingerprint != self.made_from {
            return Err(IndexFileError::OtherManifest);
        }
        Ok(self.index)
    }

    /// The index, if the manifest's object store reports `stored`, the length and entity
    /// tag recorded when this index was written.
    pub fn for_stored_manifest(
        self,
        stored: &ManifestVersion,
    ) -> Result<ManifestIndex, IndexFileError> {
        if self.made_from_etag.is_empty()
            || self.made_from_etag != stored.etag
            || self.made_from.0 != stored.len
        {
            return Err(IndexFileError::OtherManifest);
        }
        Ok(self.index)
    }
}

/// The manifest version an index file recorded, read without decoding (or checksumming) its
/// columns: enough to decide whether the manifest must be read to check the index. `None`
/// for anything that is not an index file with a recorded version.
pub fn recorded_version(bytes: &[u8]) -> Option<ManifestVersion> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    let head = ManifestIndexHead::decode(&bytes[HEADER_LEN..]).ok()?;
    (!head.manifest_etag.is_empty()).then_some(ManifestVersion {
        len: head.manifest_len,
        etag: head.manifest_etag,
    })
}

/// Checks an index file's header and its own checksum, and decodes what `read_index` would
/// read with `sieve` from the manifest it was made from. Decoding needs no manifest, so a
/// caller can read the manifest's fingerprint at the same time.
pub fn decode(bytes: &[u8], sieve: &Sieve) -> Result<UncheckedIndex, IndexFileError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(IndexFileError::NotIndex);
    }
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[HEADER_LEN..];
    if crc32fast::hash(body) != crc {
        return Err(IndexFileError::Damaged);
    }
    let file =
        ManifestIndexFile::decode(body).map_err(|e| IndexFileError::Decode(e.to_string()))?;
    if file.version != VERSION {
        return Err(IndexFileError::Version(file.version));
    }
    Ok(UncheckedIndex {
        made_from: (file.manifest_len, file.manifest_crc32),
        made_from_etag: file.manifest_etag.clone(),
        index: index_of(file, sieve)?,
    })
}

fn index_of(f: ManifestIndexFile, sieve: &Sieve) -> Result<ManifestIndex, IndexFileError> {
    let mut topics = Vec::with_capacity(f.topics.len());
    for t in f.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            partitions.push(PartitionIndex {
                partition_id: p.partition_id,
                segments: if sieve.skip_segments {
                    Vec::new()
                } else {
                    segments(&f.backup_id, &t.name, p, sieve)?
                },
            });
        }
        topics.push(TopicIndex {
            original_partition_count: t.original_partition_count,
            replication_factor: t.replication_factor,
            configs: t.has_configs.then_some(t.configs),
            name: t.name,
            partitions,
        });
    }
    Ok(ManifestIndex {
        backup_id: f.backup_id,
        created_at: f.created_at,
        topics,
        consumer_group_offsets: f
            .consumer_group_offsets
            .into_iter()
            .map(|g| GroupOffset {
                group: g.group,
                topic: g.topic,
                partition: g.partition,
                offset: g.offset,
            })
            .collect(),
    })
}

/// One partition's segments, as `manifest_index::read_segment` keeps them under `sieve`.
fn segments(
    backup_id: &str,
    topic: &str,
    c: PartitionIndexColumns,
    sieve: &Sieve,
) -> Result<Vec<SegmentSpan>, IndexFileError> {
    let n = c.start_offset_gap.len();
    if [
        c.offset_span.len(),
        c.record_count.len(),
        c.compressed_size.len(),
        c.frame_count.len(),
    ]
    .iter()
    .any(|&l| l != n)
        || c.min_timestamp_delta.len() != c.timestamp_span.len()
        || c.min_timestamp_delta.len() + c.unbounded.len() != n
        || c.custom_key_index.len() != c.custom_key.len()
    {
        return Err(IndexFileError::Inconsistent(
            "segment columns differ in length",
        ));
    }
    let frames_total: u64 = c.frame_count.iter().map(|&k| u64::from(k)).sum();
    let frame_columns = [
        c.frame_position.len(),
        c.frame_compressed_len.len(),
        c.frame_first_offset.len(),
        c.frame_last_offset.len(),
        c.frame_record_count.len(),
        c.frame_min_timestamp.len(),
        c.frame_max_timestamp.len(),
        c.frame_crc32.len(),
    ];
    if frame_columns.iter().any(|&l| l as u64 != frames_total) {
        return Err(IndexFileError::Inconsistent(
            "frame columns differ in length",
        ));
    }
    let windowed = sieve.from.is_some() || sieve.to.is_some();
    let mut custom = c.custom_key_index.iter().zip(c.custom_key).peekable();
    let mut unbounded = c.unbounded.iter().peekable();
    let mut bounded = c.min_timestamp_delta.iter().zip(&c.timestamp_span);
    let (mut next_offset, mut last_min, mut frame_at) = (0i64, 0i64, 0usize);
    let mut out = Vec::with_capacity(if windowed { 0 } else { n });
    let prefix: Arc<str> = segment_key_prefix(backup_id, topic, c.partition_id).into();
    for i in 0..n {
        let start = next_offset
            .checked_add(c.start_offset_gap[i])
            .ok_or(IndexFileError::Inconsistent("offset out of range"))?;
        let end = start
            .checked_add(c.offset_span[i])
            .ok_or(IndexFileError::Inconsistent("offset out of range"))?;
        next_offset = end.wrapping_add(1);
        let bounds = if unbounded.peek().is_some_and(|&&u| u as usize == i) {
            unbounded.next();
            None
        } else {
            let (delta, span) = bounded
                .next()
                .ok_or(IndexFileError::Inconsistent("timestamp columns too short"))?;
            let min = last_min.wrapping_add(*delta);
            last_min = min;
            Some((min, min.wrapping_add(*span)))
        };
        let key = match custom.peek() {
            Some((&at, _)) if at as usize == i => custom.next().map(|(_, k)| SegmentKey::from(k)),
            _ => None,
        };
        let count = c.frame_count[i] as usize;
        let frames_at = frame_at..frame_at + count;
        frame_at += count;
        if !bounds_may_overlap(bounds, sieve.from, sieve.to) {
            continue;
        }
        // As in the JSON reader: the seek index only for segments a window cuts.
        let cut = windowed && count > 0 && !bounds_inside(bounds, sieve.from, sieve.to);
        let frames = if cut {
            frames_at
                .map(|j| SegmentFrame {
                    position: c.frame_position[j],
                    compressed_len: c.frame_compressed_len[j],
                    first_offset: c.frame_first_offset[j],
                    last_offset: c.frame_last_offset[j],
                    record_count: c.frame_record_count[j],
                    min_timestamp: c.frame_min_timestamp[j],
                    max_timestamp: c.frame_max_timestamp[j],
                    crc32: c.frame_crc32[j],
                })
                .collect()
        } else {
            Box::default()
        };
        out.push(SegmentSpan {
            key: key.unwrap_or_else(|| SegmentKey::Standard(prefix.clone())),
            start_offset: start,
            end_offset: end,
            record_count: c.record_count[i],
            compressed_size: c.compressed_size[i],
            bounds,
            frames,
        });
    }
    if custom.next().is_some() || unbounded.next().is_some() {
        return Err(IndexFileError::Inconsistent("segment indexes out of order"));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{PartitionManifest, SegmentMeta, TopicManifest};
    use crate::manifest_index::read_index;

    fn seg(
        backup: &str,
        topic: &str,
        p: i32,
        start: i64,
        n: i64,
        bounds: Option<(i64, i64)>,
    ) -> SegmentMeta {
        let frames = if n > 4 {
            vec![
                SegmentFrame {
                    position: 32,
                    compressed_len: 100,
                    first_offset: start,
                    last_offset: start + 1,
                    record_count: 2,
                    min_timestamp: bounds.map_or(0, |b| b.0),
                    max_timestamp: bounds.map_or(0, |b| b.0 + 5),
                    crc32: 7,
                },
                SegmentFrame {
                    position: 132,
                    compressed_len: 90,
                    first_offset: start + 2,
                    last_offset: start + n - 1,
                    record_count: (n - 2) as u64,
                    min_timestamp: bounds.map_or(0, |b| b.0 + 3),
                    max_timestamp: bounds.map_or(0, |b| b.1),
                    crc32: 9,
                },
            ]
        } else {
            Vec::new()
        };
        SegmentMeta {
            key: segment_key(backup, topic, p, start),
            start_offset: start,
            end_offset: start + n - 1,
            start_timestamp: 1_000 + start,
            end_timestamp: 1_000 + start + n,
            record_count: n as u64,
            uncompressed_size: 10 * n as u64,
            compressed_size: 5 * n as u64,
            min_timestamp: bounds.map(|b| b.0),
            max_timestamp: bounds.map(|b| b.1),
            frames,
        }
    }

    /// A manifest with every case the index file encodes: standard and custom keys,
    /// segments with, without and with half of their timestamp bounds, seek indexes,
    /// configs (set, empty), an empty topic and group offsets.
    pub(crate) fn sample() -> Manifest {
        let mut odd = seg("b", "t", 1, 30, 3, None);
        odd.key = "elsewhere/segment-30.bin.zst".into();
        let mut half = seg("b", "t", 1, 40, 6, Some((5_000, 5_100)));
        half.max_timestamp = None;
        Manifest {
            backup_id: "b".into(),
            created_at: 1_700_000_000_000,
            source_cluster_id: None,
            source_brokers: None,
            compression: Some("zstd".into()),
            topics: vec![
                TopicManifest {
                    name: "t".into(),
                    original_partition_count: Some(2),
                    replication_factor: Some(3),
                    configs: Some([("cleanup.policy".to_string(), "delete".to_string())].into()),
                    partitions: vec![
                        PartitionManifest {
                            partition_id: 0,
                            segments: vec![
                                seg("b", "t", 0, 0, 10, Some((1_000, 1_900))),
                                seg("b", "t", 0, 10, 10, Some((900, 2_500))),
                                seg("b", "t", 0, 25, 3, Some((2_400, 2_600))),
                            ],
                            gaps: Vec::new(),
                        },
                        PartitionManifest {
                            partition_id: 1,
                            segments: vec![odd, half, seg("b", "t", 1, 46, 8, Some((-5, 3)))],
                            gaps: Vec::new(),
                        },
                    ],
                },
                TopicManifest {
                    name: "empty".into(),
                    original_partition_count: None,
                    replication_factor: None,
                    configs: Some(Default::default()),
                    partitions: Vec::new(),
                },
            ],
            consumer_group_offsets: vec![GroupOffset {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                offset: 12,
            }],
        }
    }

    fn fingerprint(json: &[u8]) -> (u64, u32) {
        (json.len() as u64, crc32fast::hash(json))
    }

    #[test]
    fn reads_what_the_manifest_reader_reads_under_every_sieve() {
        let m = sample();
        let json = serde_json::to_vec(&m).unwrap();
        let bytes = IndexFile::of(&m, &json).bytes(None);
        let sieves = [
            Sieve::window(None, None),
            Sieve::no_segments(),
            Sieve::window(Some(1_950), None),
            Sieve::window(None, Some(950)),
            Sieve::window(Some(1_000), Some(2_450)),
            Sieve::window(Some(0), Some(2)),
            Sieve::window(Some(5_050), Some(5_050)),
        ];
        for sieve in sieves {
            let want = read_index(json.as_slice(), &sieve).unwrap();
            let got = decode(&bytes, &sieve)
                .unwrap()
                .for_manifest(fingerprint(&json))
                .unwrap();
            assert_eq!(got, want, "sieve {sieve:?}");
        }
    }

    #[test]
    fn another_manifest_or_damage_is_refused() {
        let m = sample();
        let json = serde_json::to_vec(&m).unwrap();
        let bytes = IndexFile::of(&m, &json).bytes(None);
        let mut edited = json.clone();
        edited.push(b' ');
        let sieve = Sieve::window(None, None);
        assert_eq!(
            decode(&bytes, &sieve)
                .unwrap()
                .for_manifest(fingerprint(&edited))
                .err(),
            Some(IndexFileError::OtherManifest)
        );
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(
            decode(&damaged, &sieve).err().map(|e| e.to_string()),
            Some(IndexFileError::Damaged.to_string())
        );
        for not_index in [json.as_slice(), b"KB"] {
            assert_eq!(
                decode(not_index, &sieve).err().map(|e| e.to_string()),
                Some(IndexFileError::NotIndex.to_string())
            );
        }
    }

    #[test]
    fn inconsistent_columns_are_refused_not_guessed() {
        let m = sample();
        let json = serde_json::to_vec(&m).unwrap();
        let bytes = IndexFile::of(&m, &json).bytes(None);
        let mut file = ManifestIndexFile::decode(&bytes[HEADER_LEN..]).unwrap();
        file.topics[0].partitions[0].record_count.pop();
        let body = file.encode_to_vec();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        let err = decode(&bytes, &Sieve::window(None, None)).err();
        assert!(
            matches!(err, Some(IndexFileError::Inconsistent(_))),
            "{err:?}"
        );
    }
}

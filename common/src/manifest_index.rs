//! The part of a manifest that a restore plans with, read as a stream.
//!
//! A partition of about a terabyte holds a million segments, and its manifest is ~300 MB of
//! JSON. Parsing that into `Manifest` holds the text and a full tree of it at once (well over
//! a gigabyte). Planning needs much less: per segment its key, offsets, counts and true
//! timestamp bounds, and a seek index only for the segments a time window cuts. This module
//! reads the manifest through a pull parser, keeps exactly that in a compact form
//! (`SegmentSpan`), and drops segments the window excludes before they are ever stored, so
//! memory grows with what the plan keeps, not with the size of the text.
//!
//! Field names and defaults follow `manifest.rs` (the serde model); unknown fields are
//! skipped, as there.

use crate::json_pull::{JsonPull, PullError};
use crate::manifest::{
    bounds_inside, bounds_may_overlap, segment_key_at, GroupOffset, SegmentFrame,
};
use crate::manifest_split::Helper;
use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

/// How a segment's object key is kept. A backup names almost every segment by the standard
/// key of its backup, topic, partition and start offset (`manifest::segment_key`); the
/// index file keeps only the partition's shared prefix for those, and the key is spelled
/// out when it is read (`SegmentSpan::object_key`). A dry run of 10,000 segments reads none,
/// and building them all took ~1-2 ms of it on 2 cores (10,000 allocations on fresh pages).
#[derive(Debug, Clone)]
pub enum SegmentKey {
    /// `segment_key_at(prefix, start_offset)`: the prefix, shared by the partition's spans.
    Standard(Arc<str>),
    /// The key exactly as the manifest names it.
    Named(Box<str>),
}

impl From<&str> for SegmentKey {
    fn from(key: &str) -> Self {
        SegmentKey::Named(key.into())
    }
}

impl From<String> for SegmentKey {
    fn from(key: String) -> Self {
        SegmentKey::Named(key.into_boxed_str())
    }
}

/// What a plan needs of one segment. Equal spans name the same object, however their keys
/// are kept.
#[derive(Debug, Clone)]
pub struct SegmentSpan {
    /// Read through `object_key`.
    pub key: SegmentKey,
    pub start_offset: i64,
    /// Inclusive.
    pub end_offset: i64,
    pub record_count: u64,
    pub compressed_size: u64,
    /// True (min, max) record timestamps when the backup recorded them.
    pub bounds: Option<(i64, i64)>,
    /// The seek index, kept only for segments a time window cuts (the only ones a restore
    /// reads part of).
    pub frames: Box<[SegmentFrame]>,
}

impl PartialEq for SegmentSpan {
    fn eq(&self, other: &Self) -> bool {
        self.object_key() == other.object_key()
            && self.start_offset == other.start_offset
            && self.end_offset == other.end_offset
            && self.record_count == other.record_count
            && self.compressed_size == other.compressed_size
            && self.bounds == other.bounds
            && self.frames == other.frames
    }
}

impl SegmentSpan {
    /// The segment's object key in the backup.
    pub fn object_key(&self) -> Cow<'_, str> {
        match &self.key {
            SegmentKey::Named(key) => Cow::Borrowed(key),
            SegmentKey::Standard(prefix) => Cow::Owned(segment_key_at(prefix, self.start_offset)),
        }
    }

    pub fn may_overlap(&self, from: Option<i64>, to: Option<i64>) -> bool {
        bounds_may_overlap(self.bounds, from, to)
    }

    pub fn inside(&self, from: Option<i64>, to: Option<i64>) -> bool {
        bounds_inside(self.bounds, from, to)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionIndex {
    pub partition_id: i32,
    pub segments: Vec<SegmentSpan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicIndex {
    pub name: String,
    pub original_partition_count: Option<i32>,
    pub replication_factor: Option<i32>,
    /// The source topic's non-default configurations (`None`: not recorded).
    pub configs: Option<std::collections::BTreeMap<String, String>>,
    pub partitions: Vec<PartitionIndex>,
}

impl TopicIndex {
    /// Partition count of the source topic: recorded, or inferred from the partitions seen.
    pub fn partition_count(&self) -> i32 {
        crate::manifest::partition_count(
            self.original_partition_count,
            self.partitions.iter().map(|p| p.partition_id),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ManifestIndex {
    pub backup_id: String,
    pub created_at: i64,
    pub topics: Vec<TopicIndex>,
    pub consumer_group_offsets: Vec<GroupOffset>,
}

impl ManifestIndex {
    pub fn topic(&self, name: &str) -> Option<&TopicIndex> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// Which segments to keep while reading.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sieve {
    /// Inclusive time window: segments that cannot hold a record of it are dropped.
    pub from: Option<i64>,
    pub to: Option<i64>,
    /// False: read topics, partitions and group offsets only (segments are skipped unread).
    pub skip_segments: bool,
}

impl Sieve {
    pub fn window(from: Option<i64>, to: Option<i64>) -> Self {
        Self {
            from,
            to,
            skip_segments: false,
        }
    }

    /// Topics, partitions and consumer-group offsets only.
    pub fn no_segments() -> Self {
        Self {
            skip_segments: true,
            ..Self::default()
        }
    }
}

/// Reads a manifest from `src`, keeping what `sieve` asks for.
pub fn read_index<R: Read>(src: R, sieve: &Sieve) -> Result<ManifestIndex, PullError> {
    read_index_helped(src, sieve, None)
}

/// What reading one manifest carries from partition to partition.
struct Reading<'h> {
    /// Collects a partition's segments (see `read_partition`).
    scratch: Vec<SegmentSpan>,
    /// Segment lists of later parts of the text that another thread parsed.
    helper: Option<&'h mut Helper>,
}

/// `read_index`, taking the segment lists `helper` parsed wherever it parsed them from the
/// very element this reader is at.
pub(crate) fn read_index_helped<R: Read>(
    src: R,
    sieve: &Sieve,
    helper: Option<&mut Helper>,
) -> Result<ManifestIndex, PullError> {
    let mut p = JsonPull::new(src);
    let mut out = ManifestIndex::default();
    let mut reading = Reading {
        scratch: Vec::new(),
        helper,
    };
    let (mut have_id, mut have_created) = (false, false);
    p.begin_object()?;
    while let Some(k) = p.next_key()? {
        match k.as_str() {
            "backup_id" => {
                out.backup_id = p.string()?;
                have_id = true;
            }
            "created_at" => {
                out.created_at = p.i64()?;
                have_created = true;
            }
            "topics" if !p.null()? => {
                p.begin_array()?;
                while p.next_element()? {
                    out.topics.push(read_topic(&mut p, sieve, &mut reading)?);
                }
            }
            "topics" => {}
            "consumer_group_offsets" if !p.null()? => {
                let raw = p.raw_value()?;
                out.consumer_group_offsets =
                    serde_json::from_slice(&raw).map_err(|e| PullError::Syntax {
                        at: 0,
                        what: format!("consumer_group_offsets: {e}"),
                    })?;
            }
            "consumer_group_offsets" => {}
            _ => p.skip_value()?,
        }
    }
    p.end()?;
    if !have_id {
        return missing("backup_id", "the manifest");
    }
    if !have_created {
        return missing("created_at", "the manifest");
    }
    Ok(out)
}

fn missing<T>(field: &str, place: &str) -> Result<T, PullError> {
    Err(PullError::Syntax {
        at: 0,
        what: format!("missing field `{field}` in {place}"),
    })
}

fn opt_i32<R: Read>(p: &mut JsonPull<R>) -> Result<Option<i32>, PullError> {
    if p.null()? {
        return Ok(None);
    }
    let v = p.i64()?;
    match i32::try_from(v) {
        Ok(v) => Ok(Some(v)),
        Err(_) => Err(PullError::Syntax {
            at: 0,
            what: format!("{v} does not fit a partition number or count"),
        }),
    }
}

fn read_topic<R: Read>(
    p: &mut JsonPull<R>,
    sieve: &Sieve,
    reading: &mut Reading<'_>,
) -> Result<TopicIndex, PullError> {
    let mut name = None;
    let mut topic = TopicIndex {
        name: String::new(),
        original_partition_count: None,
        replication_factor: None,
        configs: None,
        partitions: Vec::new(),
    };
    p.begin_object()?;
    while let Some(k) = p.next_key()? {
        match k.as_str() {
            "name" => name = Some(p.string()?),
            "original_partition_count" => topic.original_partition_count = opt_i32(p)?,
            "replication_factor" => topic.replication_factor = opt_i32(p)?,
            "configs" if !p.null()? => {
                let mut configs = std::collections::BTreeMap::new();
                p.begin_object()?;
                while let Some(key) = p.next_key()? {
                    configs.insert(key, p.string()?);
                }
                topic.configs = Some(configs);
            }
            "configs" => {}
            "partitions" if !p.null()? => {
                p.begin_array()?;
                while p.next_element()? {
                    topic.partitions.push(read_partition(p, sieve, reading)?);
                }
            }
            "partitions" => {}
            _ => p.skip_value()?,
        }
    }
    match name {
        Some(n) => topic.name = n,
        None => return missing("name", "a topic"),
    }
    Ok(topic)
}

/// Above this size a partition's segment list is handed over instead of copied out of the
/// scratch list (see `read_partition`).
const COPY_OUT_MAX_BYTES: usize = 1 << 20;

/// `scratch` collects a partition's segments and is reused for the next partition: growing a
/// new list per partition (doubling, then shrinking to fit) touched fresh pages for every
/// step, and page faults were the largest cost of a dry run's manifest read after parsing.
fn read_partition<R: Read>(
    p: &mut JsonPull<R>,
    sieve: &Sieve,
    reading: &mut Reading<'_>,
) -> Result<PartitionIndex, PullError> {
    let mut id = None;
    let scratch = &mut reading.scratch;
    scratch.clear();
    let mut frames = Vec::new();
    p.begin_object()?;
    while let Some(k) = p.next_key()? {
        match k.as_str() {
            "partition_id" => id = opt_i32(p)?,
            "segments" if sieve.skip_segments => p.skip_value()?,
            "segments" if !p.null()? => {
                p.begin_array()?;
                while p.next_element()? {
                    let parsed = match reading.helper.as_deref_mut() {
                        Some(helper) => helper.run_at(p.offset()),
                        None => None,
                    };
                    if let Some(mut run) = parsed {
                        // The rest of this list, parsed by the helper from this very element.
                        p.leave_array_at(run.end)?;
                        if scratch.is_empty() {
                            std::mem::swap(scratch, &mut run.segments);
                        } else {
                            scratch.append(&mut run.segments);
                        }
                        break;
                    }
                    if let Some(s) = read_segment(p, sieve, &mut frames)? {
                        scratch.push(s);
                    }
                }
            }
            "segments" => {}
            _ => p.skip_value()?,
        }
    }
    let Some(partition_id) = id else {
        return missing("partition_id", "a partition");
    };
    let segments = if std::mem::size_of_val(scratch.as_slice()) > COPY_OUT_MAX_BYTES {
        // A partition of many segments keeps the list it grew, shrunk in place: a copy would
        // hold two of them at once (a million segments: ~90 MB more at the peak).
        let mut own = std::mem::take(scratch);
        own.shrink_to_fit();
        own
    } else {
        // Exactly as long as needed, in one allocation; `scratch` keeps its pages.
        let mut copy = Vec::with_capacity(scratch.len());
        copy.append(scratch);
        copy
    };
    Ok(PartitionIndex {
        partition_id,
        segments,
    })
}

/// The fields of a segment this reader knows, in the order `read_segment` matches them.
const SEGMENT_FIELDS: [&str; 11] = [
    "key",
    "start_offset",
    "end_offset",
    "start_timestamp",
    "end_timestamp",
    "record_count",
    "uncompressed_size",
    "compressed_size",
    "min_timestamp",
    "max_timestamp",
    "frames",
];

/// One segment, or `None` when the window excludes it. `frames` is scratch space reused
/// across segments.
pub(crate) fn read_segment<R: Read>(
    p: &mut JsonPull<R>,
    sieve: &Sieve,
    frames: &mut Vec<SegmentFrame>,
) -> Result<Option<SegmentSpan>, PullError> {
    let (mut key, mut start, mut end, mut count) = (None, None, None, None);
    let (mut start_ts, mut end_ts) = (false, false);
    let (mut min, mut max) = (None, None);
    let mut compressed = 0;
    let mut frames_read = false;
    frames.clear();
    let windowed = sieve.from.is_some() || sieve.to.is_some();
    p.begin_object()?;
    while let Some(k) = p.next_key_of(&SEGMENT_FIELDS)? {
        match k {
            Some(0) => key = Some(p.string()?),
            Some(1) => start = Some(p.i64()?),
            Some(2) => end = Some(p.i64()?),
            Some(3) => {
                p.i64()?;
                start_ts = true;
            }
            Some(4) => {
                p.i64()?;
                end_ts = true;
            }
            Some(5) => count = Some(p.u64()?),
            Some(6) => {
                p.u64()?;
            }
            Some(7) => compressed = p.u64()?,
            Some(8) => min = if p.null()? { None } else { Some(p.i64()?) },
            Some(9) => max = if p.null()? { None } else { Some(p.i64()?) },
            // Without a window no part of a segment is ever skipped: its index is not needed.
            Some(10) if windowed && !p.null()? => {
                p.begin_array()?;
                while p.next_element()? {
                    frames.push(read_frame(p)?);
                }
                frames_read = true;
            }
            Some(10) if windowed => {}
            _ => p.skip_value()?,
        }
    }
    let place = "a segment";
    let Some(key) = key else {
        return missing("key", place);
    };
    let (Some(start_offset), Some(end_offset), Some(record_count)) = (start, end, count) else {
        let field = if start.is_none() {
            "start_offset"
        } else if end.is_none() {
            "end_offset"
        } else {
            "record_count"
        };
        return missing(field, &format!("segment {key}"));
    };
    if !start_ts {
        return missing("start_timestamp", &format!("segment {key}"));
    }
    if !end_ts {
        return missing("end_timestamp", &format!("segment {key}"));
    }
    let bounds = min.zip(max);
    if !bounds_may_overlap(bounds, sieve.from, sieve.to) {
        return Ok(None);
    }
    let cut = frames_read && !bounds_inside(bounds, sieve.from, sieve.to);
    Ok(Some(SegmentSpan {
        key: key.into(),
        start_offset,
        end_offset,
        record_count,
        compressed_size: compressed,
        bounds,
        frames: if cut {
            frames.as_slice().into()
        } else {
            Box::default()
        },
    }))
}

fn read_frame<R: Read>(p: &mut JsonPull<R>) -> Result<SegmentFrame, PullError> {
    let mut f = [None::<i64>; 8];
    const NAMES: [&str; 8] = [
        "position",
        "compressed_len",
        "first_offset",
        "last_offset",
        "record_count",
        "min_timestamp",
        "max_timestamp",
        "crc32",
    ];
    p.begin_object()?;
    while let Some(k) = p.next_key_of(&NAMES)? {
        match k {
            Some(i @ (0 | 1 | 4)) => f[i] = Some(p.u64()? as i64),
            Some(7) => {
                let v = p.u64()?;
                f[7] = Some(
                    u32::try_from(v)
                        .map(i64::from)
                        .map_err(|_| PullError::Syntax {
                            at: 0,
                            what: format!("crc32 {v} does not fit 32 bits"),
                        })?,
                );
            }
            Some(i) => f[i] = Some(p.i64()?),
            None => p.skip_value()?,
        }
    }
    if let Some(i) = f.iter().position(Option::is_none) {
        return missing(NAMES[i], "a seek-index frame");
    }
    let v = |i: usize| f[i].unwrap_or_default();
    Ok(SegmentFrame {
        position: v(0) as u64,
        compressed_len: v(1) as u64,
        first_offset: v(2),
        last_offset: v(3),
        record_count: v(4) as u64,
        min_timestamp: v(5),
        max_timestamp: v(6),
        crc32: v(7) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, PartitionManifest, SegmentMeta, TopicManifest};

    fn frame(first: i64, ts: i64) -> SegmentFrame {
        SegmentFrame {
            position: 32 + first as u64 * 10,
            compressed_len: 10,
            first_offset: first,
            last_offset: first + 4,
            record_count: 5,
            min_timestamp: ts,
            max_timestamp: ts + 4,
            crc32: u32::MAX,
        }
    }

    fn seg(start: i64, ts: Option<i64>) -> SegmentMeta {
        SegmentMeta {
            key: format!("b/topics/t\"q/partition=0/segment-{start:020}.bin.zst"),
            start_offset: start,
            end_offset: start + 9,
            start_timestamp: 5,
            end_timestamp: 6,
            record_count: 10,
            uncompressed_size: u64::MAX,
            compressed_size: 77,
            min_timestamp: ts,
            max_timestamp: ts.map(|t| t + 9),
            frames: vec![
                frame(start, ts.unwrap_or(0)),
                frame(start + 5, ts.unwrap_or(0) + 5),
            ],
        }
    }

    fn manifest() -> Manifest {
        Manifest {
            backup_id: "b".into(),
            created_at: 42,
            source_cluster_id: Some("c".into()),
            source_brokers: Some(serde_json::json!(["x:1", {"odd": [1, 2]}])),
            compression: None,
            topics: vec![TopicManifest {
                replication_factor: None,
                configs: None,
                name: "t\"q".into(),
                original_partition_count: Some(3),
                partitions: vec![
                    PartitionManifest {
                        partition_id: 0,
                        segments: vec![seg(0, Some(100)), seg(10, Some(110)), seg(20, None)],
                        gaps: vec![],
                    },
                    PartitionManifest {
                        partition_id: 2,
                        segments: vec![],
                        gaps: vec![],
                    },
                ],
            }],
            consumer_group_offsets: vec![GroupOffset {
                group: "g".into(),
                topic: "t\"q".into(),
                partition: 0,
                offset: 7,
            }],
        }
    }

    fn read(text: &[u8], sieve: Sieve) -> ManifestIndex {
        read_index(text, &sieve).expect("reads")
    }

    #[test]
    fn keeps_what_a_plan_needs_in_any_layout() {
        let m = manifest();
        for text in [
            serde_json::to_vec(&m).unwrap(),
            serde_json::to_vec_pretty(&m).unwrap(),
        ] {
            let idx = read(&text, Sieve::default());
            assert_eq!(idx.backup_id, "b");
            assert_eq!(idx.created_at, 42);
            assert_eq!(idx.consumer_group_offsets, m.consumer_group_offsets);
            let t = idx.topic("t\"q").unwrap();
            assert_eq!(t.partition_count(), 3);
            let segs = &t.partitions[0].segments;
            assert_eq!(segs.len(), 3);
            assert_eq!(
                segs[0].object_key(),
                m.topics[0].partitions[0].segments[0].key
            );
            assert_eq!(segs[0].bounds, Some((100, 109)));
            assert_eq!(segs[2].bounds, None);
            assert!(
                segs.iter().all(|s| s.frames.is_empty()),
                "no window: no index"
            );
            assert_eq!(segs[1].compressed_size, 77);
        }
    }

    #[test]
    fn each_partition_gets_its_own_segments_whether_its_list_is_copied_or_handed_over() {
        // Partitions above and below COPY_OUT_MAX_BYTES, in both orders, so the scratch list
        // is copied out of, handed over, and grown again from empty.
        let big = COPY_OUT_MAX_BYTES / std::mem::size_of::<SegmentSpan>() + 10;
        let sizes = [3, big, 2, big + 1, 0, 5];
        let mut m = manifest();
        m.topics[0].partitions = sizes
            .iter()
            .enumerate()
            .map(|(p, &n)| PartitionManifest {
                partition_id: p as i32,
                segments: (0..n as i64)
                    .map(|i| seg(i * 10 + p as i64, None))
                    .collect(),
                gaps: vec![],
            })
            .collect();
        let idx = read(&serde_json::to_vec(&m).unwrap(), Sieve::default());
        let parts = &idx.topic("t\"q").unwrap().partitions;
        assert_eq!(parts.len(), sizes.len());
        for ((p, &n), part) in sizes.iter().enumerate().zip(parts) {
            assert_eq!(part.partition_id, p as i32);
            assert_eq!(part.segments.len(), n, "partition {p}");
            for (i, s) in part.segments.iter().enumerate() {
                assert_eq!(s.start_offset, i as i64 * 10 + p as i64, "partition {p}");
            }
        }
    }

    #[test]
    fn a_window_drops_segments_and_keeps_the_index_of_cut_ones() {
        let text = serde_json::to_vec(&manifest()).unwrap();
        let idx = read(&text, Sieve::window(Some(112), Some(200)));
        let segs = &idx.topics[0].partitions[0].segments;
        // 0..=9 (ts 100..109) is outside; 10..=19 (110..119) is cut; 20.. has no bounds.
        assert_eq!(
            segs.iter().map(|s| s.start_offset).collect::<Vec<_>>(),
            vec![10, 20]
        );
        assert_eq!(segs[0].frames.len(), 2);
        assert_eq!(segs[0].frames[1], frame(15, 115));
        assert_eq!(segs[1].frames.len(), 2, "unknown bounds may be cut");
        let idx = read(&text, Sieve::window(Some(0), Some(1000)));
        assert!(idx.topics[0].partitions[0].segments[0].frames.is_empty());
    }

    #[test]
    fn fields_in_another_order_unknown_fields_and_nulls() {
        let text =
            br#"{"topics":[{"partitions":[{"segments":[{"frames":[{"crc32":1,"max_timestamp":9,
          "min_timestamp":1,"record_count":2,"last_offset":1,"first_offset":0,"compressed_len":5,
          "position":32,"extra":{"a":[]}}],"max_timestamp":9,"min_timestamp":1,"record_count":2,
          "end_timestamp":1,"start_timestamp":1,"end_offset":1,"start_offset":0,"key":"k",
          "new_field":[1,2,{"x":"}"}]}],"partition_id":4,"gaps":[{"start_offset":1}]}],
          "original_partition_count":null,"name":"t"}],"created_at":1,"backup_id":"b",
          "source_brokers":"a:1","consumer_group_offsets":null}"#;
        let idx = read(text, Sieve::window(Some(5), None));
        let s = &idx.topics[0].partitions[0].segments[0];
        assert_eq!(idx.topics[0].partitions[0].partition_id, 4);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.frames[0].crc32, 1);
        assert_eq!(idx.topics[0].partition_count(), 5);
    }

    #[test]
    fn segments_can_be_skipped_unread() {
        let text = serde_json::to_vec(&manifest()).unwrap();
        let idx = read(&text, Sieve::no_segments());
        assert!(idx.topics[0].partitions[0].segments.is_empty());
        assert_eq!(idx.consumer_group_offsets.len(), 1);
    }

    #[test]
    fn what_serde_refuses_is_refused() {
        let good = serde_json::to_string(&manifest()).unwrap();
        for (from, to) in [
            ("\"record_count\":10", "\"record_count\":-1"),
            ("\"record_count\":10", "\"record_count\":1.5"),
            ("\"key\":", "\"kee\":"),
            ("\"backup_id\":", "\"backup\":"),
            ("\"partition_id\":0", "\"partition_id\":\"0\""),
            ("\"crc32\":4294967295", "\"crc32\":4294967296"),
        ] {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            assert!(
                serde_json::from_str::<Manifest>(&bad).is_err(),
                "serde accepts {to}"
            );
            assert!(
                read_index(bad.as_bytes(), &Sieve::window(Some(0), Some(1))).is_err(),
                "{to} was accepted"
            );
        }
    }
}

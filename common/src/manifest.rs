//! `manifest.json`: the index of one backup. Field names follow OSO kafka-backup v1 so either
//! tool reads the other's backups; unknown fields are ignored on read. Our extensions
//! (true min/max timestamps per segment, group offset snapshot) are optional fields, absent
//! in foreign backups, and code must treat their absence conservatively.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub backup_id: String,
    /// Creation time, epoch milliseconds.
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_cluster_id: Option<String>,
    /// Kept as raw JSON: OSO writes a list, other writers a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_brokers: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default)]
    pub topics: Vec<TopicManifest>,
    /// Extension: committed consumer-group offsets at backup time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumer_group_offsets: Vec<GroupOffset>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicManifest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_partition_count: Option<i32>,
    /// Extension: the source topic's replication factor at backup time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<i32>,
    /// Extension: the source topic's configurations that differ from Kafka's defaults
    /// (`topic_configs.rs` says which), so `--create-topics` brings a compacted topic back
    /// compacted and a long retention back long. Absent when the broker did not answer
    /// DescribeConfigs, and in foreign backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configs: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub partitions: Vec<PartitionManifest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionManifest {
    pub partition_id: i32,
    #[serde(default)]
    pub segments: Vec<SegmentMeta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<OffsetGap>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentMeta {
    pub key: String,
    pub start_offset: i64,
    /// Inclusive.
    pub end_offset: i64,
    /// Timestamp of the first record (not the minimum: timestamps are not monotonic).
    pub start_timestamp: i64,
    /// Timestamp of the last record.
    pub end_timestamp: i64,
    pub record_count: u64,
    #[serde(default)]
    pub uncompressed_size: u64,
    #[serde(default)]
    pub compressed_size: u64,
    /// Extension: smallest record timestamp in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_timestamp: Option<i64>,
    /// Extension: largest record timestamp in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<i64>,
    /// Extension: the sparse seek index. Present when the record region was compressed as
    /// several zstd frames (still one valid zstd stream, so readers that ignore this field
    /// decode the whole body as before); lets a restore that starts mid-segment read and
    /// decompress only the frames from its start point on. See `frames.rs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<SegmentFrame>,
}

/// One zstd frame of a segment's record region: where its bytes are in the object, which
/// records it holds and the CRC32 of its compressed bytes (a ranged read cannot check the
/// object's footer CRC, so every frame carries its own).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentFrame {
    /// Byte offset of the frame in the segment object.
    pub position: u64,
    pub compressed_len: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub record_count: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub crc32: u32,
}

impl SegmentMeta {
    /// True min/max timestamps when our backup recorded them; `None` for foreign backups,
    /// whose first/last timestamps say nothing about the records in between.
    pub fn timestamp_bounds(&self) -> Option<(i64, i64)> {
        Some((self.min_timestamp?, self.max_timestamp?))
    }

    /// Whether the segment may hold a record in the inclusive window. Unknown bounds are
    /// assumed to overlap (correctness over speed).
    pub fn may_overlap(&self, from: Option<i64>, to: Option<i64>) -> bool {
        bounds_may_overlap(self.timestamp_bounds(), from, to)
    }

    /// Whether every record of the segment is inside the inclusive window.
    pub fn inside(&self, from: Option<i64>, to: Option<i64>) -> bool {
        bounds_inside(self.timestamp_bounds(), from, to)
    }
}

/// Whether records with timestamps in `bounds` (true min/max; `None` = unknown) may fall in
/// the inclusive window. Unknown bounds are assumed to overlap (correctness over speed).
pub fn bounds_may_overlap(bounds: Option<(i64, i64)>, from: Option<i64>, to: Option<i64>) -> bool {
    match bounds {
        None => true,
        Some((min, max)) => min <= to.unwrap_or(i64::MAX) && max >= from.unwrap_or(i64::MIN),
    }
}

/// Whether every record with timestamps in `bounds` is inside the inclusive window; with
/// unknown bounds, only when there is no window at all.
pub fn bounds_inside(bounds: Option<(i64, i64)>, from: Option<i64>, to: Option<i64>) -> bool {
    match bounds {
        None => from.is_none() && to.is_none(),
        Some((min, max)) => min >= from.unwrap_or(i64::MIN) && max <= to.unwrap_or(i64::MAX),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OffsetGap {
    pub start_offset: i64,
    pub end_offset: i64,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub detected_at: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupOffset {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The committed offset: the next record the group would read.
    pub offset: i64,
}

impl Manifest {
    pub fn topic(&self, name: &str) -> Option<&TopicManifest> {
        self.topics.iter().find(|t| t.name == name)
    }

    pub fn total_records(&self) -> u64 {
        // Saturating: a hostile or damaged manifest must not overflow (found by reading the
        // fuzz target's accessors, see fuzz/fuzz_targets/manifest_parse.rs).
        self.segments()
            .fold(0u64, |acc, s| acc.saturating_add(s.record_count))
    }

    pub fn segments(&self) -> impl Iterator<Item = &SegmentMeta> {
        self.topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .flat_map(|p| p.segments.iter())
    }
}

impl TopicManifest {
    /// Partition count of the source topic: recorded, or inferred from the partitions seen.
    pub fn partition_count(&self) -> i32 {
        partition_count(
            self.original_partition_count,
            self.partitions.iter().map(|p| p.partition_id),
        )
    }
}

/// A topic's partition count: the recorded one, or one more than the highest partition seen
/// when that is more (foreign backups may not record it).
pub fn partition_count(recorded: Option<i32>, ids: impl Iterator<Item = i32>) -> i32 {
    let seen = ids.map(|p| p.saturating_add(1)).max().unwrap_or(0);
    recorded.unwrap_or(0).max(seen)
}

/// The object key of a segment, relative to the storage prefix.
pub fn segment_key(backup_id: &str, topic: &str, partition: i32, start_offset: i64) -> String {
    segment_key_at(
        &segment_key_prefix(backup_id, topic, partition),
        start_offset,
    )
}

/// What the keys of a partition's segments share: everything before the start offset.
pub fn segment_key_prefix(backup_id: &str, topic: &str, partition: i32) -> String {
    format!("{backup_id}/topics/{topic}/partition={partition}/segment-")
}

/// The key of the segment at `start_offset` under a `segment_key_prefix`. Planning a
/// million segments builds a million keys, so only the offset's significant digits are
/// computed; the rest of the 20 stay zeros.
pub fn segment_key_at(prefix: &str, start_offset: i64) -> String {
    if start_offset < 0 {
        // Not a key a backup writes; formatted the slow way to stay exactly equal.
        return format!("{prefix}{start_offset:020}.bin.zst");
    }
    let mut digits = [b'0'; 20];
    let (mut v, mut at) = (start_offset as u64, digits.len());
    while v > 0 && at > 0 {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    let mut key = String::with_capacity(prefix.len() + digits.len() + ".bin.zst".len());
    key.push_str(prefix);
    key.extend(digits.iter().map(|&d| char::from(d)));
    key.push_str(".bin.zst");
    key
}

pub fn manifest_key(backup_id: &str) -> String {
    format!("{backup_id}/manifest.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_keys_are_built_exactly() {
        let prefix = segment_key_prefix("bk", "orders.v1", 12);
        for offset in [0, 7, 1_234_567_890, i64::MAX, -1] {
            assert_eq!(
                segment_key("bk", "orders.v1", 12, offset),
                format!("bk/topics/orders.v1/partition=12/segment-{offset:020}.bin.zst")
            );
            assert_eq!(
                segment_key_at(&prefix, offset),
                segment_key("bk", "orders.v1", 12, offset)
            );
        }
    }

    #[test]
    fn hostile_counts_do_not_overflow() {
        let text = r#"{"backup_id":"x","created_at":0,"topics":[{"name":"t","partitions":[
            {"partition_id":2147483647,"segments":[
              {"key":"a","start_offset":0,"end_offset":1,"start_timestamp":0,"end_timestamp":0,"record_count":18446744073709551615},
              {"key":"b","start_offset":2,"end_offset":3,"start_timestamp":0,"end_timestamp":0,"record_count":18446744073709551615}]}]}]}"#;
        let m: Manifest = serde_json::from_str(text).expect("parses");
        assert_eq!(m.total_records(), u64::MAX);
        assert_eq!(m.topics[0].partition_count(), i32::MAX);
    }
}

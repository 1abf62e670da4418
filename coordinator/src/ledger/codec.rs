//! Keys and value encodings of the ledger's sled trees.
//!
//! Keys are `plan_id 0x00 task_id(u32 BE) [suffix BE]`, so one task's entries are contiguous
//! and ordered (segments by index, offset runs by source offset, skipped segments by
//! sequence). Small records that change are JSON (readable in a debugger, and their schema
//! can gain optional fields); the two bulky kinds, segment entries and offset runs, are a
//! fixed little-endian layout, as they are written by the million.

use super::model::{OffsetRunRecord, SegmentEntry};
use super::LedgerError;
use kafka_backup_common::manifest::SegmentFrame;
use serde::{Deserialize, Serialize};

pub fn plan_prefix(plan: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(plan.len() + 1);
    k.extend_from_slice(plan.as_bytes());
    k.push(0);
    k
}

pub fn task_key(plan: &str, task: u32) -> Vec<u8> {
    let mut k = plan_prefix(plan);
    k.extend_from_slice(&task.to_be_bytes());
    k
}

/// A key under a task ordered by `n` (index, sequence or non-negative offset).
pub fn task_item_key(plan: &str, task: u32, n: u64) -> Vec<u8> {
    let mut k = task_key(plan, task);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// The plan and task a task key belongs to.
pub fn split_task_key(key: &[u8]) -> Option<(String, u32)> {
    let zero = key.iter().position(|b| *b == 0)?;
    let plan = std::str::from_utf8(&key[..zero]).ok()?.to_string();
    let task = key.get(zero + 1..zero + 5)?;
    Some((plan, u32::from_be_bytes(task.try_into().ok()?)))
}

pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs with string keys always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn from_json<T: for<'a> Deserialize<'a>>(key: &[u8], v: &[u8]) -> Result<T, LedgerError> {
    serde_json::from_slice(v).map_err(|e| decode_error(key, e.to_string()))
}

fn decode_error(key: &[u8], reason: String) -> LedgerError {
    LedgerError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

pub fn encode_run(r: &OffsetRunRecord) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&r.source_start.to_le_bytes());
    b[8..16].copy_from_slice(&r.target_start.to_le_bytes());
    b[16..].copy_from_slice(&r.length.to_le_bytes());
    b
}

pub fn decode_run(key: &[u8], v: &[u8]) -> Result<OffsetRunRecord, LedgerError> {
    let position = key
        .len()
        .checked_sub(8)
        .and_then(|at| key.get(at..))
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes);
    let mut r = Reader { key, v, at: 0 };
    Ok(OffsetRunRecord {
        source_start: r.i64()?,
        target_start: r.i64()?,
        length: r.u64()?,
        source_index: (position >> super::model::RUN_KEY_SOURCE_SHIFT) as u32,
    })
}

const FRAME_BYTES: usize = 60;

pub fn encode_segment(s: &SegmentEntry) -> Vec<u8> {
    let mut b = Vec::with_capacity(36 + s.frames.len() * FRAME_BYTES + s.key.len());
    b.extend_from_slice(&s.start_offset.to_le_bytes());
    b.extend_from_slice(&s.end_offset.to_le_bytes());
    b.extend_from_slice(&s.record_count.to_le_bytes());
    b.extend_from_slice(&s.compressed_size.to_le_bytes());
    b.extend_from_slice(&(s.frames.len() as u32).to_le_bytes());
    for f in &s.frames {
        b.extend_from_slice(&f.position.to_le_bytes());
        b.extend_from_slice(&f.compressed_len.to_le_bytes());
        b.extend_from_slice(&f.first_offset.to_le_bytes());
        b.extend_from_slice(&f.last_offset.to_le_bytes());
        b.extend_from_slice(&f.record_count.to_le_bytes());
        b.extend_from_slice(&f.min_timestamp.to_le_bytes());
        b.extend_from_slice(&f.max_timestamp.to_le_bytes());
        b.extend_from_slice(&f.crc32.to_le_bytes());
    }
    b.extend_from_slice(s.key.as_bytes());
    b
}

pub fn decode_segment(key: &[u8], v: &[u8]) -> Result<SegmentEntry, LedgerError> {
    let mut r = Reader { key, v, at: 0 };
    let start_offset = r.i64()?;
    let end_offset = r.i64()?;
    let record_count = r.u64()?;
    let compressed_size = r.u64()?;
    let n = r.u32()? as usize;
    if n.saturating_mul(FRAME_BYTES) > v.len() {
        return Err(decode_error(
            key,
            format!("{n} frames do not fit the entry"),
        ));
    }
    let mut frames = Vec::with_capacity(n);
    for _ in 0..n {
        frames.push(SegmentFrame {
            position: r.u64()?,
            compressed_len: r.u64()?,
            first_offset: r.i64()?,
            last_offset: r.i64()?,
            record_count: r.u64()?,
            min_timestamp: r.i64()?,
            max_timestamp: r.i64()?,
            crc32: r.u32()?,
        });
    }
    let key_text = std::str::from_utf8(&v[r.at..])
        .map_err(|_| decode_error(key, "the object key is not UTF-8".into()))?;
    Ok(SegmentEntry {
        key: key_text.to_string(),
        start_offset,
        end_offset,
        record_count,
        compressed_size,
        frames,
    })
}

struct Reader<'a> {
    key: &'a [u8],
    v: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], LedgerError> {
        let bytes = self
            .v
            .get(self.at..self.at + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
            .ok_or_else(|| decode_error(self.key, format!("truncated at byte {}", self.at)))?;
        self.at += N;
        Ok(bytes)
    }

    fn i64(&mut self) -> Result<i64, LedgerError> {
        self.take::<8>().map(i64::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, LedgerError> {
        self.take::<8>().map(u64::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, LedgerError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_entries_round_trip_and_truncation_is_an_error() {
        let s = SegmentEntry {
            key: "b/topics/t/partition=0/segment-00000000000000000007.bin.zst".into(),
            start_offset: 7,
            end_offset: 99,
            record_count: 93,
            compressed_size: 12345,
            frames: vec![SegmentFrame {
                position: 32,
                compressed_len: 100,
                first_offset: 7,
                last_offset: 50,
                record_count: 44,
                min_timestamp: -5,
                max_timestamp: i64::MAX,
                crc32: 0xdead_beef,
            }],
        };
        let v = encode_segment(&s);
        assert_eq!(decode_segment(b"k", &v).unwrap(), s);
        assert!(decode_segment(b"k", &v[..30]).is_err());
        let run = OffsetRunRecord {
            source_start: 5,
            target_start: 9,
            length: 3,
            source_index: 0,
        };
        assert_eq!(decode_run(b"k", &encode_run(&run)).unwrap(), run);
        assert!(decode_run(b"k", &[1, 2]).is_err());
    }

    #[test]
    fn task_keys_split_and_sort() {
        let k = task_item_key("plan-1", 3, 10);
        assert_eq!(split_task_key(&k), Some(("plan-1".into(), 3)));
        assert!(task_item_key("p", 1, 2) < task_item_key("p", 1, 10));
        assert!(task_item_key("p", 1, u64::MAX) < task_item_key("p", 2, 0));
    }
}

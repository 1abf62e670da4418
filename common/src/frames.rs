//! The seek index: a segment's record region compressed as several zstd frames, with one
//! manifest entry per frame (`SegmentMeta::frames`).
//!
//! Concatenated zstd frames are one valid zstd stream, so the object is byte-for-byte the
//! documented format and any reader that ignores the index decodes the whole body as before.
//! A restore that starts mid-segment (a `--from-timestamp` window, or a resume point) reads
//! only the frames from the first one that can hold a record it keeps, one ranged read per
//! frame, and decompresses them one at a time, so its first record arrives after one frame instead
//! of a whole segment. A ranged read cannot check the object's footer CRC, so each index
//! entry carries the CRC32 of its frame's compressed bytes, and the records of each frame are
//! checked against the offsets and count the index names.

use crate::manifest::SegmentFrame;
use crate::segment::{assemble_segment, build_segment, DecodedSegment, SegmentError};
use crate::segment::{SegmentHeader, HEADER_LEN};

/// Uncompressed record bytes per frame unless the backup is told otherwise: small enough
/// that decompressing one frame takes a few milliseconds, large enough that the index adds
/// about 150 bytes of manifest per 4 MiB of records.
pub const DEFAULT_FRAME_BYTES: u64 = 4 << 20;

/// Records where a writer may cut its region into frames, and what each frame holds.
#[derive(Debug, Clone)]
pub struct FrameCuts {
    target: usize,
    spans: Vec<Span>,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    first_offset: i64,
    last_offset: i64,
    count: u64,
    min_ts: i64,
    max_ts: i64,
}

impl FrameCuts {
    /// `target_bytes`: uncompressed bytes after which the next record starts a new frame.
    pub fn new(target_bytes: u64) -> Self {
        Self {
            target: usize::try_from(target_bytes.max(1)).unwrap_or(usize::MAX),
            spans: Vec::new(),
        }
    }

    /// Call for every record before it is appended, with the region's length at that moment.
    pub fn record(&mut self, region_len: usize, offset: i64, timestamp: i64) {
        let new_frame = self
            .spans
            .last()
            .is_none_or(|s| region_len.saturating_sub(s.start) >= self.target);
        if new_frame {
            self.spans.push(Span {
                start: region_len,
                first_offset: offset,
                last_offset: offset,
                count: 0,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
            });
        }
        if let Some(s) = self.spans.last_mut() {
            s.last_offset = offset;
            s.count += 1;
            s.min_ts = s.min_ts.min(timestamp);
            s.max_ts = s.max_ts.max(timestamp);
        }
    }

    /// Forgets the cuts of the segment just written.
    pub fn clear(&mut self) {
        self.spans.clear();
    }
}

/// Builds a segment whose zstd body is one frame per cut, and its index. With a single frame
/// or no compression there is nothing to skip, so the plain segment and an empty index are
/// returned.
pub fn build_indexed_segment(
    region: &[u8],
    header: SegmentHeader,
    zstd_level: i32,
    cuts: &FrameCuts,
) -> std::io::Result<(Vec<u8>, Vec<SegmentFrame>)> {
    if header.compression == 0 || cuts.spans.len() < 2 {
        return build_segment(region, header, zstd_level).map(|b| (b, Vec::new()));
    }
    let mut body = Vec::new();
    let mut frames = Vec::with_capacity(cuts.spans.len());
    for (i, span) in cuts.spans.iter().enumerate() {
        let end = cuts
            .spans
            .get(i + 1)
            .map_or(region.len(), |next| next.start);
        let compressed = zstd::bulk::compress(&region[span.start..end], zstd_level)?;
        frames.push(SegmentFrame {
            position: (HEADER_LEN + body.len()) as u64,
            compressed_len: compressed.len() as u64,
            first_offset: span.first_offset,
            last_offset: span.last_offset,
            record_count: span.count,
            min_timestamp: span.min_ts,
            max_timestamp: span.max_ts,
            crc32: crc32fast::hash(&compressed),
        });
        body.extend_from_slice(&compressed);
    }
    Ok((assemble_segment(header, &body), frames))
}

/// The frames a reader must read when it keeps only offsets >= `from_offset` and, with a
/// window, timestamps >= `from_ts`: every frame from the first one that can hold such a
/// record (frames before it hold none, whatever the order of timestamps). `None` means read
/// the whole object: there is no index, the first frame is needed anyway, or the index does
/// not describe one contiguous run of frames after the header (never trusted then).
pub fn frames_needed(
    frames: &[SegmentFrame],
    from_offset: i64,
    from_ts: Option<i64>,
) -> Option<&[SegmentFrame]> {
    let frames = usable(frames)?;
    let first = frames
        .iter()
        .position(|f| f.last_offset >= from_offset && from_ts.is_none_or(|t| f.max_timestamp >= t))
        .unwrap_or(frames.len());
    (first > 0).then(|| &frames[first..])
}

/// The index when there is one that describes a contiguous run of frames right after the
/// header, with offsets increasing from frame to frame; `None` (read the whole object)
/// otherwise, so a damaged or hostile manifest can never make a reader skip records.
pub fn usable(frames: &[SegmentFrame]) -> Option<&[SegmentFrame]> {
    (!frames.is_empty() && is_contiguous(frames)).then_some(frames)
}

fn is_contiguous(frames: &[SegmentFrame]) -> bool {
    frames
        .first()
        .is_some_and(|f| f.position == HEADER_LEN as u64)
        && frames.windows(2).all(|w| {
            w[0].position.checked_add(w[0].compressed_len) == Some(w[1].position)
                && w[0].last_offset < w[1].first_offset
        })
        && frames.iter().all(|f| {
            f.first_offset <= f.last_offset
                && f.record_count > 0
                && f.position.checked_add(f.compressed_len).is_some()
        })
}

/// Whether every record of the frame lies inside the inclusive window.
pub fn inside(f: &SegmentFrame, from: Option<i64>, to: Option<i64>) -> bool {
    from.is_none_or(|t| f.min_timestamp >= t) && to.is_none_or(|t| f.max_timestamp <= t)
}

/// Whether no record of the frame lies inside the inclusive window.
pub fn outside(f: &SegmentFrame, from: Option<i64>, to: Option<i64>) -> bool {
    from.is_some_and(|t| f.max_timestamp < t) || to.is_some_and(|t| f.min_timestamp > t)
}

/// Checks a frame's compressed bytes against the CRC32 its index entry carries (a ranged
/// read cannot check the object's footer CRC).
pub fn check_frame_crc(key: &str, bytes: &[u8], frame: &SegmentFrame) -> Result<(), SegmentError> {
    let found = crc32fast::hash(bytes);
    if found != frame.crc32 {
        return Err(SegmentError::Corrupt {
            key: key.to_string(),
            detail: format!(
                "the zstd frame at byte {} has CRC32 {found:#010x}, the manifest's seek index says {:#010x}; the object was damaged in storage or transit",
                frame.position, frame.crc32
            ),
        });
    }
    Ok(())
}

/// The segment header a frame's records must match: the index entry's count and offsets.
pub fn frame_header(frame: &SegmentFrame) -> SegmentHeader {
    SegmentHeader {
        compression: 1,
        record_count: frame.record_count,
        start_offset: frame.first_offset,
        end_offset: frame.last_offset,
    }
}

/// Decodes one frame from its exact compressed bytes: checks the index CRC, decompresses,
/// and checks that the records are the ones the index names.
pub fn decode_frame(
    key: &str,
    bytes: &[u8],
    frame: &SegmentFrame,
) -> Result<DecodedSegment, SegmentError> {
    check_frame_crc(key, bytes, frame)?;
    let region = crate::decompress::zstd_region(bytes).map_err(|e| SegmentError::Corrupt {
        key: key.to_string(),
        detail: format!(
            "the zstd frame at byte {} does not decompress: {e}",
            frame.position
        ),
    })?;
    DecodedSegment::from_region(key, frame_header(frame), region)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::encode_record;

    /// 300 records of ~100 bytes cut every 2,000 bytes, timestamps jittering backwards.
    fn indexed() -> (Vec<u8>, Vec<SegmentFrame>, Vec<(i64, i64)>) {
        let mut region = Vec::new();
        let mut cuts = FrameCuts::new(2_000);
        let mut records = Vec::new();
        for i in 0..300i64 {
            let offset = 1_000 + i * 2;
            let ts = 50_000 + i * 10 - (i % 3) * 25;
            cuts.record(region.len(), offset, ts);
            let value = vec![b'v'; 80];
            encode_record(
                &mut region,
                offset,
                ts,
                Some(b"key"),
                Some(&value),
                std::iter::empty(),
            );
            records.push((offset, ts));
        }
        let header = SegmentHeader {
            compression: 1,
            record_count: 300,
            start_offset: 1_000,
            end_offset: 1_598,
        };
        let (bytes, frames) = build_indexed_segment(&region, header, 3, &cuts).unwrap();
        (bytes, frames, records)
    }

    #[test]
    fn a_multi_frame_segment_is_one_valid_segment_for_readers_without_the_index() {
        let (bytes, frames, records) = indexed();
        assert!(frames.len() > 10, "{} frames", frames.len());
        let whole = DecodedSegment::decode("k", &bytes).unwrap();
        let got: Vec<(i64, i64)> = whole
            .records()
            .map(|r| r.map(|r| (r.offset, r.timestamp)).unwrap())
            .collect();
        assert_eq!(got, records);
        assert_eq!(frames.iter().map(|f| f.record_count).sum::<u64>(), 300);
    }

    #[test]
    fn frames_from_the_needed_one_decode_to_exactly_the_remaining_records() {
        let (bytes, frames, records) = indexed();
        let from_ts = 50_000 + 150 * 10;
        let needed = frames_needed(&frames, 0, Some(from_ts)).unwrap();
        assert!(needed.len() < frames.len() && !needed.is_empty());
        let mut got = Vec::new();
        for f in needed {
            let range = f.position as usize..(f.position + f.compressed_len) as usize;
            let seg = decode_frame("k", &bytes[range], f).unwrap();
            got.extend(seg.records().map(|r| r.unwrap().offset));
        }
        // Every record the window keeps is in the frames read.
        let kept: Vec<i64> = records
            .iter()
            .filter(|(_, ts)| *ts >= from_ts)
            .map(|(o, _)| *o)
            .collect();
        assert!(kept.iter().all(|o| got.contains(o)));
        assert_eq!(got.last(), records.last().map(|r| &r.0));
        // Skipping by offset alone (a resume point) works the same way.
        let by_offset = frames_needed(&frames, 1_400, None).unwrap();
        assert!(by_offset[0].first_offset <= 1_400 && by_offset[0].last_offset >= 1_400);
        // Nothing to skip: read the whole object.
        assert!(frames_needed(&frames, 0, None).is_none());
        assert!(frames_needed(&frames, 0, Some(0)).is_none());
    }

    #[test]
    fn a_damaged_frame_or_a_hostile_index_is_never_trusted() {
        let (mut bytes, frames, _) = indexed();
        let f = frames[3];
        bytes[f.position as usize + 5] ^= 0x40;
        let range = f.position as usize..(f.position + f.compressed_len) as usize;
        let err = decode_frame("seg-key", &bytes[range], &f)
            .unwrap_err()
            .to_string();
        assert!(err.contains("seg-key") && err.contains("CRC32"), "{err}");
        // An index whose entries overlap, or that says more records than the frame holds.
        let mut gapped = frames.clone();
        gapped[2].position += 1;
        assert!(frames_needed(&gapped, 0, Some(i64::MAX)).is_none());
        let mut huge = frames.clone();
        let last = huge.len() - 1;
        huge[last].compressed_len = u64::MAX;
        assert!(frames_needed(&huge, 0, Some(i64::MAX)).is_none());
        let mut lying = frames[5];
        lying.record_count += 1;
        let (bytes, _, _) = indexed();
        let range = lying.position as usize..(lying.position + lying.compressed_len) as usize;
        let err = decode_frame("k", &bytes[range], &lying)
            .unwrap_err()
            .to_string();
        assert!(err.contains("records"), "{err}");
    }
}

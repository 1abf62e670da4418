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
use crate::segment::{build_segment, push_footer, push_footer_with_crc, push_header};
use crate::segment::{DecodedSegment, SegmentError};
use crate::segment::{SegmentHeader, FOOTER_LEN, HEADER_LEN};

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
}

/// Builds a segment whose zstd body is one frame per cut, and its index. With a single frame
/// or no compression there is nothing to skip, so the plain segment and an empty index are
/// returned. For many segments, keep one [`SegmentBuilder`] instead.
pub fn build_indexed_segment(
    region: &[u8],
    header: SegmentHeader,
    zstd_level: i32,
    cuts: &FrameCuts,
) -> std::io::Result<(Vec<u8>, Vec<SegmentFrame>)> {
    SegmentBuilder::new(zstd_level)?.build(region, header, cuts)
}

/// Writes segment objects with one zstd context for all of them. A context per call
/// allocated and initialised zstd's tables for every frame, and a body assembled apart from
/// its object was copied once more; the backup writes every byte it reads through here.
pub struct SegmentBuilder {
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    /// One frame's compressed bytes, before they are appended to the object.
    frame: Vec<u8>,
    /// See [`SegmentBuilder::with_min_savings`]; 0 compresses every segment unsampled.
    min_savings_percent: f64,
    /// The slices of a segment whose compression is tried first.
    sample: Vec<u8>,
}

impl SegmentBuilder {
    /// Fails only when zstd refuses the level or cannot allocate its context.
    pub fn new(zstd_level: i32) -> std::io::Result<Self> {
        Ok(Self {
            level: zstd_level,
            compressor: zstd::bulk::Compressor::new(zstd_level)?,
            frame: Vec::new(),
            min_savings_percent: 0.0,
            sample: Vec::new(),
        })
    }

    /// Segments whose sample saves less than this percent of its size are better stored
    /// uncompressed (`compress_probe`): [`SegmentBuilder::worth_compressing`] says which.
    pub fn with_min_savings(mut self, percent: f64) -> Self {
        self.min_savings_percent = percent;
        self
    }

    /// Whether `region` saves enough when compressed, judged from a sample of it compressed
    /// at this builder's level. Always true when no minimum saving is set.
    pub fn worth_compressing(&mut self, region: &[u8]) -> std::io::Result<bool> {
        if self.min_savings_percent <= 0.0 {
            return Ok(true);
        }
        crate::compress_probe::sample_into(region, &mut self.sample);
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(self.sample.len()));
        let compressed = self
            .compressor
            .compress_to_buffer(&self.sample, &mut self.frame)?;
        Ok(crate::compress_probe::saves_enough(
            self.sample.len(),
            compressed,
            self.min_savings_percent,
        ))
    }

    /// The segment object for `region` (records encoded as the format says) and its frame
    /// index: one frame per cut, or no index when there is a single frame.
    pub fn build(
        &mut self,
        region: &[u8],
        header: SegmentHeader,
        cuts: &FrameCuts,
    ) -> std::io::Result<(Vec<u8>, Vec<SegmentFrame>)> {
        if header.compression == 0 {
            return build_segment(region, header, self.level).map(|b| (b, Vec::new()));
        }
        // Room for an incompressible body: only the pages written are ever touched, and a
        // smaller guess grew (copied) the object once for data that does not compress.
        let mut out = Vec::with_capacity(HEADER_LEN + region.len() + FOOTER_LEN);
        push_header(&mut out, header);
        if cuts.spans.len() < 2 {
            self.append_frame(region, &mut out)?;
            push_footer(&mut out);
            return Ok((out, Vec::new()));
        }
        // Each frame's bytes are hashed once: for its index entry, and combined into the
        // object's CRC (hashing the object again was 5 % of a backup's CPU).
        let mut object_crc = crc32fast::Hasher::new();
        object_crc.update(&out);
        let mut frames = Vec::with_capacity(cuts.spans.len());
        for (i, span) in cuts.spans.iter().enumerate() {
            let end = cuts
                .spans
                .get(i + 1)
                .map_or(region.len(), |next| next.start);
            let position = out.len() as u64;
            self.append_frame(&region[span.start..end], &mut out)?;
            let mut frame_crc = crc32fast::Hasher::new();
            frame_crc.update(&self.frame);
            object_crc.combine(&frame_crc);
            frames.push(SegmentFrame {
                position,
                compressed_len: self.frame.len() as u64,
                first_offset: span.first_offset,
                last_offset: span.last_offset,
                record_count: span.count,
                min_timestamp: span.min_ts,
                max_timestamp: span.max_ts,
                crc32: frame_crc.finalize(),
            });
        }
        push_footer_with_crc(&mut out, object_crc.finalize());
        Ok((out, frames))
    }

    /// Compresses `data` as one frame into `self.frame` and appends it to `out`.
    fn append_frame(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        self.frame.clear();
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(data.len()));
        self.compressor.compress_to_buffer(data, &mut self.frame)?;
        out.extend_from_slice(&self.frame);
        Ok(())
    }
}

/// The frames a reader must read when it keeps only offsets >= `from_offset` and, with a
/// window, timestamps >= `from_ts`: every frame from the first one that can hold such a
/// record (frames before it hold none, whatever the order of timestamps). `None` means read
/// the whole object: there is no index, nothing in the object is skipped, or the index does
/// not describe one contiguous run of frames after the header (never trusted then).
///
/// A window that starts inside the first frame is read frame by frame too: its first record
/// is then handed on after one frame (~4 MB) is read and checked, not after the whole object
/// (~20 MB) is, which is what a seek's latency is made of.
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
    let skips_in_first = frames.get(first).is_some_and(|f| {
        f.first_offset < from_offset || from_ts.is_some_and(|t| f.min_timestamp < t)
    });
    (first > 0 || skips_in_first).then(|| &frames[first..])
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

    /// Bytes of a xorshift sequence: what encrypted or already compressed values look like.
    fn random_bytes(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn only_segments_that_shrink_enough_are_worth_compressing() {
        let mut builder = SegmentBuilder::new(3).expect("zstd").with_min_savings(12.5);
        let random = random_bytes(1 << 20);
        assert!(!builder.worth_compressing(&random).expect("probe"));
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{{\"order\":{i},\"state\":\"paid\"}}").into_bytes())
            .collect();
        assert!(builder.worth_compressing(&text).expect("probe"));
        // Half compressible, half not: the slices see both halves, and it is compressed.
        let mut half = text[..1 << 19].to_vec();
        half.extend_from_slice(&random[..1 << 19]);
        assert!(builder.worth_compressing(&half).expect("probe"));
        assert!(!builder.worth_compressing(&[]).expect("probe"));
        // Without a minimum saving every segment is compressed, unsampled.
        let mut always = SegmentBuilder::new(3).expect("zstd");
        assert!(always.worth_compressing(&random).expect("probe"));
    }

    /// 300 records of ~100 bytes cut every 2,000 bytes, timestamps jittering backwards.
    fn indexed_input() -> (Vec<u8>, FrameCuts, SegmentHeader) {
        let mut region = Vec::new();
        let mut cuts = FrameCuts::new(2_000);
        for i in 0..300i64 {
            let (offset, ts) = indexed_record(i);
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
        }
        let header = SegmentHeader {
            compression: 1,
            record_count: 300,
            start_offset: 1_000,
            end_offset: 1_598,
        };
        (region, cuts, header)
    }

    /// Offset and timestamp of the i-th record of `indexed_input` (timestamps not monotonic).
    fn indexed_record(i: i64) -> (i64, i64) {
        (1_000 + i * 2, 50_000 + i * 10 - (i % 3) * 25)
    }

    fn indexed() -> (Vec<u8>, Vec<SegmentFrame>, Vec<(i64, i64)>) {
        let (region, cuts, header) = indexed_input();
        let (bytes, frames) = build_indexed_segment(&region, header, 3, &cuts).unwrap();
        (bytes, frames, (0..300).map(indexed_record).collect())
    }

    #[test]
    fn one_builder_for_many_segments_writes_what_fresh_ones_write() {
        let (indexed_bytes, indexed_frames, _) = indexed();
        let mut one_frame = Vec::new();
        let mut cuts = FrameCuts::new(u64::MAX);
        for i in 0..50i64 {
            cuts.record(one_frame.len(), i, i);
            encode_record(&mut one_frame, i, i, None, Some(b"v"), std::iter::empty());
        }
        let header = SegmentHeader {
            compression: 1,
            record_count: 50,
            start_offset: 0,
            end_offset: 49,
        };
        let fresh_single = build_indexed_segment(&one_frame, header, 3, &cuts).unwrap();
        // Reused in any order, the builder's context and scratch buffer leave no trace.
        let mut builder = SegmentBuilder::new(3).unwrap();
        for _ in 0..2 {
            let single = builder.build(&one_frame, header, &cuts).unwrap();
            assert_eq!(single, fresh_single);
            assert!(single.1.is_empty(), "one frame needs no index");
            let (region, cuts_300, header_300) = indexed_input();
            let (bytes, frames) = builder.build(&region, header_300, &cuts_300).unwrap();
            assert_eq!((&bytes, &frames), (&indexed_bytes, &indexed_frames));
        }
        // The object's CRC (combined from the frames' CRCs) is the CRC of its bytes.
        let whole = DecodedSegment::decode("k", &indexed_bytes).unwrap();
        assert_eq!(whole.records().count(), 300);
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
        assert!(frames_needed(
            &frames,
            frames[0].first_offset,
            Some(frames[0].min_timestamp)
        )
        .is_none());
        // Records to skip in the first frame: every frame, read one by one.
        let inside_first = frames_needed(&frames, frames[0].first_offset + 1, None).unwrap();
        assert_eq!(inside_first.len(), frames.len());
        let by_ts = frames_needed(&frames, 0, Some(frames[0].min_timestamp + 1)).unwrap();
        assert_eq!(by_ts.len(), frames.len());
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

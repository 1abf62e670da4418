//! Decoding a segment (or one seek-index frame) as a run of small pieces, each a
//! [`DecodedSegment`] of whole records, instead of one region of the whole segment.
//!
//! Why: a restore used to decompress a whole segment (16 MiB of records by default, 27 MiB
//! in single-frame backups other tools write) before producing its first record, and the
//! decoded region went through memory twice more (verified, then produced), far out of the
//! CPU caches. Pieces of [`PIECE_BYTES`] are decompressed by zstd's streaming decoder into
//! reused buffers, checked and produced while they are still in cache, and the first record
//! is ready after one piece whatever the segment's size or frame layout — the way `zstd -d`
//! streams into a reused buffer.
//!
//! What is checked, and when: the object's CRC32 (or a frame's index CRC) covers every
//! compressed byte and is checked before the first piece; each piece's record boundaries and
//! increasing offsets are walked before it is handed out (across pieces too, the first being
//! the header's); the fields inside a record are checked as it is iterated, in the one pass
//! that produces it; the header's record count and last offset can only be compared once the
//! last piece is decoded. So a body that disagrees with itself or its header while its CRC is
//! right (a writer's bug, not damage in storage) ends the stream with an error at that point,
//! after the records before it.

use crate::decompress::{
    recycle, recycle_context, take_buffer_with, take_context, DecompressError,
};
use crate::local_range::RangeBytes;
use crate::manifest::SegmentFrame;
use crate::read_crc::CheckedObject;
use crate::segment::{verify_envelope_with_crc, DecodedSegment, SegmentError, SegmentHeader};
use crate::segment::{FOOTER_LEN, HEADER_LEN};
use bytes::Bytes;
use zstd::zstd_safe::{DCtx, InBuffer, OutBuffer, WriteBuf};

/// Uncompressed bytes per piece: small enough to stay in a core's L2 cache between being
/// decompressed and produced, large enough that per-piece costs (a channel send, a span)
/// are noise. A record larger than this makes a piece of its own.
pub const PIECE_BYTES: usize = 1 << 20;

/// Largest zstd frame decompressed in one call as one piece (see `Pieces::whole_frame`):
/// the frames `backup` writes (4 MiB of records and the rest of the record that crosses
/// that mark) fit; larger frames, or frames that do not record their size, are streamed in
/// pieces of [`PIECE_BYTES`].
const ONE_CALL_FRAME_BYTES: usize = 5 << 20;

/// Larger records are refused as damage rather than buffered (Kafka's own limit on a
/// message is an i32, and brokers' are far below).
const MAX_RECORD_BYTES: usize = 1 << 30;

/// The pieces of one segment object or frame, in order.
pub struct Pieces {
    key: String,
    header: SegmentHeader,
    bytes: Bytes,
    /// End of the compressed (or stored) body in `bytes`.
    body_end: usize,
    /// Position in the body up to which input has been consumed.
    in_pos: usize,
    dctx: Option<DCtx<'static>>,
    /// Decoded bytes after the last whole record of the previous piece.
    carry: Vec<u8>,
    /// Whether the last zstd call ended a frame (so the end of input is a clean end).
    frame_ended: bool,
    records: u64,
    last_offset: Option<i64>,
    finished: bool,
    /// The file a mapped object came from, looked at before each piece is handed on.
    mapped_from: Option<std::sync::Arc<crate::read_crc::MappedFrom>>,
}

impl Pieces {
    /// A whole segment object: the envelope (magic, version, CRC) is checked here, before
    /// any piece.
    pub fn of_segment(key: &str, bytes: Bytes) -> Result<Self, SegmentError> {
        Self::of_checked_bytes(key, bytes, None)
    }

    /// A whole segment object whose CRC was computed as it was read (see `read_crc.rs`).
    pub fn of_checked(key: &str, object: CheckedObject) -> Result<Self, SegmentError> {
        let mut pieces = Self::of_checked_bytes(key, object.bytes, Some(object.crc_before_footer))?;
        pieces.mapped_from = object.mapped_from;
        Ok(pieces)
    }

    fn of_checked_bytes(key: &str, bytes: Bytes, crc: Option<u32>) -> Result<Self, SegmentError> {
        let header = verify_envelope_with_crc(key, &bytes, crc)?;
        let dctx = match header.compression {
            0 => None,
            1 => Some(take_context()),
            code => {
                return Err(SegmentError::UnsupportedCompression {
                    key: key.to_string(),
                    code,
                })
            }
        };
        let body_end = bytes.len() - FOOTER_LEN;
        Ok(Self::new(key, header, bytes, HEADER_LEN, body_end, dctx))
    }

    /// One seek-index frame read on its own: its CRC is checked against the index here, and
    /// its records must be the ones the index names.
    pub fn of_frame(
        key: &str,
        read: RangeBytes,
        frame: &SegmentFrame,
    ) -> Result<Self, SegmentError> {
        crate::frames::check_frame_crc(key, &read.bytes, frame)?;
        let header = crate::frames::frame_header(frame);
        let end = read.bytes.len();
        let mut pieces = Self::new(key, header, read.bytes, 0, end, Some(take_context()));
        pieces.mapped_from = read.mapped_from;
        Ok(pieces)
    }

    fn new(
        key: &str,
        header: SegmentHeader,
        bytes: Bytes,
        body_start: usize,
        body_end: usize,
        dctx: Option<DCtx<'static>>,
    ) -> Self {
        Self {
            key: key.to_string(),
            header,
            bytes,
            body_end,
            in_pos: body_start,
            dctx,
            carry: Vec::new(),
            frame_ended: true,
            records: 0,
            last_offset: None,
            finished: false,
            mapped_from: None,
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    fn corrupt(&self, detail: String) -> SegmentError {
        SegmentError::Corrupt {
            key: self.key.clone(),
            detail,
        }
    }

    fn input_done(&self) -> bool {
        self.in_pos >= self.body_end
    }

    /// Every input byte consumed and every decoded byte handed out.
    fn exhausted(&self) -> bool {
        self.input_done() && self.frame_ended
    }

    /// Appends decoded bytes to `buf`, at most up to `limit` bytes in all.
    fn fill(&mut self, buf: &mut Vec<u8>, limit: usize) -> Result<(), SegmentError> {
        let Some(dctx) = self.dctx.as_mut() else {
            let n = (limit - buf.len()).min(self.body_end - self.in_pos);
            buf.extend_from_slice(&self.bytes[self.in_pos..self.in_pos + n]);
            self.in_pos += n;
            return Ok(());
        };
        buf.reserve(limit - buf.len());
        let start = buf.len();
        let mut input = InBuffer {
            src: &self.bytes[self.in_pos..self.body_end],
            pos: 0,
        };
        let mut window = Limited { vec: buf, limit };
        let mut output = OutBuffer::around_pos(&mut window, start);
        let hint = dctx
            .decompress_stream(&mut output, &mut input)
            .map_err(DecompressError::from_code);
        let written = output.pos() - start;
        let consumed = input.pos;
        self.in_pos += consumed;
        let hint = hint.map_err(|e| self.corrupt(format!("zstd body does not decompress: {e}")))?;
        self.frame_ended = hint == 0;
        if written == 0 && consumed == 0 && !self.frame_ended {
            return Err(SegmentError::Truncated {
                key: self.key.clone(),
                detail: "the zstd body ends inside a frame".into(),
            });
        }
        Ok(())
    }

    /// Decompresses the whole zstd frame that starts at the input position into `buf` in one
    /// call, when a piece begins at a frame boundary and the frame records a content size of
    /// at most [`ONE_CALL_FRAME_BYTES`]. One call writes straight into `buf`; the streaming
    /// decoder writes each block into its own window first and copies it out (a tenth of
    /// decoding time in `perf`). Returns whether it did.
    fn whole_frame(&mut self, buf: &mut Vec<u8>) -> Result<bool, SegmentError> {
        let Some(dctx) = self.dctx.as_mut() else {
            return Ok(false);
        };
        if !buf.is_empty() || !self.frame_ended || self.in_pos >= self.body_end {
            return Ok(false);
        }
        let input = &self.bytes[self.in_pos..self.body_end];
        let size = match zstd::zstd_safe::get_frame_content_size(input) {
            Ok(Some(size)) if size <= ONE_CALL_FRAME_BYTES as u64 => size as usize,
            _ => return Ok(false),
        };
        let frame_len = match zstd::zstd_safe::find_frame_compressed_size(input) {
            Ok(len) if len > 0 && len <= input.len() => len,
            _ => return Ok(false),
        };
        buf.reserve(size);
        match dctx.decompress(buf, &input[..frame_len]) {
            Ok(written) if written == size => {
                self.in_pos += frame_len;
                Ok(true)
            }
            Ok(written) => Err(self.corrupt(format!(
                "a zstd frame declares {size} bytes but holds {written}"
            ))),
            Err(code) => Err(self.corrupt(format!(
                "zstd body does not decompress: {}",
                DecompressError::from_code(code)
            ))),
        }
    }

    fn next_piece(&mut self) -> Result<Option<DecodedSegment>, SegmentError> {
        let mut buf = take_buffer_with(PIECE_BYTES);
        buf.extend_from_slice(&self.carry);
        self.carry.clear();
        let mut limit = PIECE_BYTES.max(buf.len());
        match self.whole_frame(&mut buf) {
            Ok(true) => limit = buf.len(),
            Ok(false) => {}
            Err(e) => {
                recycle(buf);
                return Err(e);
            }
        }
        let walk = loop {
            while buf.len() < limit && !self.exhausted() {
                if let Err(e) = self.fill(&mut buf, limit) {
                    recycle(buf);
                    return Err(e);
                }
            }
            let walk = whole_records(&buf);
            if self.exhausted() || walk.count > 0 || walk.short {
                break walk;
            }
            // One record larger than the piece: read on until it is whole.
            let needed = record_len(&buf).unwrap_or(limit * 2);
            if needed > MAX_RECORD_BYTES {
                recycle(buf);
                return Err(self.corrupt(format!(
                    "a record claims {needed} bytes, more than any Kafka record ({MAX_RECORD_BYTES})"
                )));
            }
            limit = needed.max(limit * 2).min(MAX_RECORD_BYTES);
        };
        if buf.is_empty() {
            recycle(buf);
            return Ok(None);
        }
        let problem = if walk.short {
            Some(format!(
                "record at byte {} is too short for its fixed fields",
                walk.len
            ))
        } else if let Some((prev, next)) = walk.backwards {
            Some(format!("record offsets go backwards ({prev} then {next})"))
        } else if self.exhausted() && walk.len < buf.len() {
            Some(format!(
                "the last record is truncated: {} bytes after the last whole record",
                buf.len() - walk.len
            ))
        } else {
            match (self.last_offset, walk.first) {
                (None, Some(first)) if first != self.header.start_offset => Some(format!(
                    "the header says the first record is offset {}, the body starts at {first}",
                    self.header.start_offset
                )),
                (Some(prev), Some(first)) if first <= prev => {
                    Some(format!("record offsets go backwards ({prev} then {first})"))
                }
                _ => None,
            }
        };
        if let Some(detail) = problem {
            recycle(buf);
            return Err(self.corrupt(detail));
        }
        let (Some(first), Some(last)) = (walk.first, walk.last) else {
            recycle(buf);
            return Ok(None);
        };
        self.carry.extend_from_slice(&buf[walk.len..]);
        buf.truncate(walk.len);
        let piece_header = SegmentHeader {
            compression: self.header.compression,
            record_count: walk.count,
            start_offset: first,
            end_offset: last,
        };
        self.records += walk.count;
        self.last_offset = Some(last);
        Ok(Some(DecodedSegment::from_walked_region(
            &self.key,
            piece_header,
            buf,
        )))
    }

    /// The checks only the end of the body allows: every record the header names was there.
    fn finish(&self) -> Result<(), SegmentError> {
        if self.records != self.header.record_count {
            return Err(self.corrupt(format!(
                "header says {} records, body holds {}",
                self.header.record_count, self.records
            )));
        }
        if self.records > 0 && self.last_offset != Some(self.header.end_offset) {
            return Err(self.corrupt(format!(
                "header says the last record is offset {}, the body ends at {:?}",
                self.header.end_offset, self.last_offset
            )));
        }
        Ok(())
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        if let Some(dctx) = self.dctx.take() {
            recycle_context(dctx);
        }
        if let Ok(object) = std::mem::take(&mut self.bytes).try_into_mut() {
            recycle(object.into());
        }
    }
}

impl Iterator for Pieces {
    type Item = Result<DecodedSegment, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let next = self.next_piece();
        // Whatever the piece (or its error) is, it came from bytes the CRC no longer vouches
        // for if a mapped file changed since: that is what is reported, not damage.
        if self.mapped_from.as_ref().is_some_and(|f| !f.unchanged()) {
            self.finished = true;
            return Some(Err(SegmentError::ChangedWhileRead {
                key: self.key.clone(),
            }));
        }
        match next {
            Ok(Some(piece)) => Some(Ok(piece)),
            Ok(None) => {
                self.finished = true;
                self.finish().err().map(Err)
            }
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// The whole records at the start of a piece's buffer, walked by their length prefixes.
struct Walk {
    /// Bytes of whole records.
    len: usize,
    count: u64,
    first: Option<i64>,
    last: Option<i64>,
    /// Offsets that did not increase: (previous, next).
    backwards: Option<(i64, i64)>,
    /// A record too short to hold its fixed fields.
    short: bool,
}

/// Walks the whole records at the start of `buf` (length prefix, then timestamp and offset
/// at fixed places), noting offsets that go backwards.
fn whole_records(buf: &[u8]) -> Walk {
    let mut w = Walk {
        len: 0,
        count: 0,
        first: None,
        last: None,
        backwards: None,
        short: false,
    };
    while let Some(len) = record_len(&buf[w.len..]) {
        let end = w.len + len;
        if end > buf.len() {
            break;
        }
        // Length (4), timestamp (8), offset (8): a record is never shorter than that.
        let Some(o) = buf.get(w.len + 12..w.len + 20).filter(|_| len >= 20) else {
            w.short = true;
            break;
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(o);
        let offset = i64::from_le_bytes(b);
        if let Some(prev) = w.last.filter(|&p| offset <= p) {
            w.backwards.get_or_insert((prev, offset));
        }
        w.first.get_or_insert(offset);
        w.last = Some(offset);
        w.len = end;
        w.count += 1;
    }
    w
}

/// The encoded length (with its 4-byte prefix) of the record at the start of `buf`.
fn record_len(buf: &[u8]) -> Option<usize> {
    let b = buf.get(..4)?;
    let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    Some(4 + n)
}

/// A `Vec` whose writable capacity is capped, so one zstd call decodes at most a piece.
struct Limited<'a> {
    vec: &'a mut Vec<u8>,
    limit: usize,
}

// Safety: every method describes the same allocation as the inner `Vec`: `capacity()` never
// exceeds its capacity, and `filled_until` is only called by zstd with a length it has
// written up to (within that capacity).
unsafe impl WriteBuf for Limited<'_> {
    fn as_slice(&self) -> &[u8] {
        self.vec.as_slice()
    }
    fn capacity(&self) -> usize {
        self.vec.capacity().min(self.limit)
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.vec.as_mut_ptr()
    }
    unsafe fn filled_until(&mut self, n: usize) {
        // Safety: see the impl.
        unsafe { self.vec.set_len(n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{build_indexed_segment, FrameCuts};
    use crate::segment::{assemble_segment, encode_record};

    fn region(n: i64, value_len: usize) -> Vec<u8> {
        let mut region = Vec::new();
        for o in 0..n {
            let value: Vec<u8> = (0..value_len).map(|i| (i as i64 * 7 + o) as u8).collect();
            encode_record(
                &mut region,
                100 + o,
                1000 + o,
                Some(b"k"),
                Some(&value),
                [("h", Some(&b"v"[..]))].into_iter(),
            );
        }
        region
    }

    fn header(n: i64) -> SegmentHeader {
        SegmentHeader {
            compression: 1,
            record_count: n as u64,
            start_offset: 100,
            end_offset: 100 + n - 1,
        }
    }

    fn streamed(region: &[u8], h: SegmentHeader) -> Bytes {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, region).unwrap();
        Bytes::from(assemble_segment(h, &enc.finish().unwrap()))
    }

    fn offsets(pieces: Pieces) -> Result<Vec<i64>, SegmentError> {
        let mut out = Vec::new();
        for p in pieces {
            for r in p?.records() {
                out.push(r?.offset);
            }
        }
        Ok(out)
    }

    #[test]
    fn a_large_single_frame_arrives_in_pieces_with_every_record() {
        let n = 3000;
        let bytes = streamed(&region(n, 1000), header(n));
        let mut pieces = Pieces::of_segment("k", bytes.clone()).unwrap();
        let first = pieces.next().unwrap().unwrap();
        assert!(first.uncompressed_len() <= PIECE_BYTES);
        assert!(
            pieces.in_pos < bytes.len() / 2,
            "read ahead of the first piece"
        );
        let all = offsets(Pieces::of_segment("k", bytes).unwrap()).unwrap();
        assert_eq!(all, (100..100 + n).collect::<Vec<_>>());
    }

    #[test]
    fn indexed_segments_and_records_larger_than_a_piece() {
        let n = 40;
        let region = region(n, 100_000);
        let mut cuts = FrameCuts::new(1_000_000);
        let mut pos = 0;
        for o in 0..n {
            cuts.record(pos, 100 + o, 1000 + o);
            pos += record_len(&region[pos..]).unwrap();
        }
        let (bytes, frames) = build_indexed_segment(&region, header(n), 3, &cuts).unwrap();
        assert!(frames.len() > 1);
        let all = offsets(Pieces::of_segment("k", Bytes::from(bytes.clone())).unwrap()).unwrap();
        assert_eq!(all, (100..100 + n).collect::<Vec<_>>());
        let f = frames[1];
        let frame_bytes = Bytes::copy_from_slice(
            &bytes[f.position as usize..(f.position + f.compressed_len) as usize],
        );
        let got = offsets(Pieces::of_frame("k", frame_bytes.into(), &f).unwrap()).unwrap();
        assert_eq!(got, (f.first_offset..=f.last_offset).collect::<Vec<_>>());
    }

    #[test]
    fn a_header_that_disagrees_with_a_well_formed_body_is_an_error() {
        let n = 2000;
        let body = region(n, 1000);
        for h in [
            SegmentHeader {
                record_count: n as u64 + 1,
                ..header(n)
            },
            SegmentHeader {
                end_offset: 100 + n,
                ..header(n)
            },
            SegmentHeader {
                start_offset: 99,
                ..header(n)
            },
        ] {
            assert!(
                offsets(Pieces::of_segment("k", streamed(&body, h)).unwrap()).is_err(),
                "{h:?}"
            );
        }
        let plain = Bytes::from(assemble_segment(
            SegmentHeader {
                compression: 0,
                ..header(n)
            },
            &body,
        ));
        assert_eq!(
            offsets(Pieces::of_segment("k", plain).unwrap())
                .unwrap()
                .len(),
            n as usize
        );
    }

    #[test]
    fn damage_and_truncation_are_errors_not_panics() {
        let n = 500;
        let body = region(n, 3000);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &body).unwrap();
        let compressed = enc.finish().unwrap();
        // A valid CRC over a cut or altered body (as a buggy writer would leave it).
        for cut in [compressed.len() / 3, compressed.len() - 1] {
            let bytes = Bytes::from(assemble_segment(header(n), &compressed[..cut]));
            assert!(
                offsets(Pieces::of_segment("k", bytes).unwrap()).is_err(),
                "cut {cut}"
            );
        }
        let mut flipped = compressed.clone();
        flipped[compressed.len() / 2] ^= 0x55;
        let bytes = Bytes::from(assemble_segment(header(n), &flipped));
        assert!(offsets(Pieces::of_segment("k", bytes).unwrap()).is_err());
        // Plain damage is caught by the CRC before any piece.
        let mut bytes = streamed(&body, header(n)).to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        assert!(Pieces::of_segment("k", Bytes::from(bytes)).is_err());
    }
    #[test]
    fn frames_that_record_their_size_and_end_inside_records_decode_whole() {
        // Frames cut at arbitrary bytes, as another writer may cut them: each is decompressed
        // in one call, and the record that crosses a frame's end is carried to the next piece.
        let n = 3000;
        let body = region(n, 1000);
        let mut compressed = Vec::new();
        for chunk in body.chunks(700_001) {
            compressed.extend(zstd::bulk::compress(chunk, 3).unwrap());
        }
        let bytes = Bytes::from(assemble_segment(header(n), &compressed));
        let all = offsets(Pieces::of_segment("k", bytes).unwrap()).unwrap();
        assert_eq!(all, (100..100 + n).collect::<Vec<_>>());
    }

    #[test]
    fn a_mapped_segment_file_changed_in_place_mid_read_is_not_handed_on() {
        use std::os::unix::fs::FileExt;
        // Streamed, so it decodes as several pieces of PIECE_BYTES.
        let n = 3000;
        let bytes = streamed(&region(n, 1000), header(n));
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("seg");
        std::fs::write(&path, &bytes).expect("write");
        let object = crate::read_crc::read_file_checked(&path).expect("read");
        if object.mapped_from.is_none() {
            eprintln!("not mapped here (file system or kernel): nothing to test");
            return;
        }
        let mut pieces = Pieces::of_checked("k", object).expect("envelope");
        assert!(pieces.next().expect("first piece").is_ok());
        // Another process rewrites a byte in place, same length, after the CRC was computed
        // (past a clock tick, for kernels with coarse timestamps).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.write_all_at(&[!bytes[bytes.len() / 2]], (bytes.len() / 2) as u64)
            .expect("overwrite");
        match pieces.next() {
            Some(Err(SegmentError::ChangedWhileRead { key })) => assert_eq!(key, "k"),
            other => panic!(
                "expected ChangedWhileRead, got {:?}",
                other.map(|p| p.map(|_| ()))
            ),
        }
        assert!(pieces.next().is_none(), "nothing after the error");
        // Read again, the file is whole and consistent with itself... and fails its CRC,
        // since its body changed: the retry names the damage.
        let again = crate::read_crc::read_file_checked(&path).expect("read");
        assert!(matches!(
            Pieces::of_checked("k", again),
            Err(SegmentError::BadChecksum { .. })
        ));
    }

    #[test]
    fn a_crc_computed_while_reading_is_the_one_checked() {
        let n = 50;
        let bytes = streamed(&region(n, 100), header(n));
        let right = crc32fast::hash(&bytes[..bytes.len() - FOOTER_LEN]);
        let object = |crc_before_footer| CheckedObject {
            bytes: bytes.clone(),
            crc_before_footer,
            mapped_from: None,
        };
        assert_eq!(
            offsets(Pieces::of_checked("k", object(right)).unwrap())
                .unwrap()
                .len(),
            n as usize
        );
        assert!(matches!(
            Pieces::of_checked("k", object(right ^ 1)),
            Err(SegmentError::BadChecksum { .. })
        ));
    }
}

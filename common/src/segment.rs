//! The segment file: one object holding a run of consecutive records of one partition.
//!
//! Layout (all little-endian), compatible with OSO kafka-backup v1:
//! a 32-byte header (`KBAK`, version 1, compression, 2 reserved bytes, record_count u64,
//! start_offset i64, end_offset i64), the record region (compressed as a whole unless
//! compression is 0), and an 8-byte footer (CRC32 of everything before it, then `BKAE`).
//!
//! Decoding verifies magic, version, CRC, record count and offsets before a single record is
//! handed out, so a restore never produces data from a damaged object. Records are borrowed
//! from the decompressed buffer ([`RecordRef`]) so the hot path copies nothing.

use thiserror::Error;

pub const HEADER_MAGIC: &[u8; 4] = b"KBAK";
pub const FOOTER_MAGIC: &[u8; 4] = b"BKAE";
pub const FORMAT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 32;
pub const FOOTER_LEN: usize = 8;

/// Compression of the record region, as stored in header byte 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None = 0,
    Zstd = 1,
    Lz4 = 2,
}

/// Why a segment could not be decoded. Every variant names the object key so an operator can
/// find the damaged object.
#[derive(Debug, Error)]
pub enum SegmentError {
    #[error("segment {key} is truncated: {detail}; the object is incomplete, re-run the backup or restore a time window that excludes it")]
    Truncated { key: String, detail: String },
    #[error("segment {key} has wrong {which} magic {found:?} (expected {expected:?}); it is not a kafka-backup segment or it is damaged")]
    BadMagic {
        key: String,
        which: &'static str,
        found: String,
        expected: String,
    },
    #[error("segment {key} has unsupported format version {version} (this build reads version 1); upgrade kafka-backup")]
    BadVersion { key: String, version: u8 },
    #[error("segment {key} uses compression code {code}, which this build does not read (supported: 0 none, 1 zstd)")]
    UnsupportedCompression { key: String, code: u8 },
    #[error("segment {key} is corrupt: CRC32 {found:#010x} does not match stored {stored:#010x}; the object was damaged in storage or transit")]
    BadChecksum {
        key: String,
        stored: u32,
        found: u32,
    },
    #[error("segment {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("segment file {key} was changed in place by another process while it was being read; the read is retried, but a backup directory must not be written to during a restore")]
    ChangedWhileRead { key: String },
}

/// One record header; a `None` value is a null header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// An owned record, as written by the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// A record borrowed from a decoded segment buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// Size of the encoded record, used for byte accounting.
    pub encoded_len: usize,
}

impl RecordRef<'_> {
    pub fn to_owned_record(&self) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: (*k).to_string(),
                    value: v.map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
}

/// The fixed header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub compression: u8,
    pub record_count: u64,
    pub start_offset: i64,
    pub end_offset: i64,
}

/// Appends one record in the segment record layout to `out`.
pub fn encode_record<'h>(
    out: &mut Vec<u8>,
    offset: i64,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
) {
    let len_pos = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    put_nullable_i32(out, key);
    put_nullable_i32(out, value);
    // The count written is the count of headers encoded, whatever the iterator's length
    // promised (a message's headers are read in place; see `backup::MessageHeaders`).
    let count_pos = out.len();
    out.extend_from_slice(&0u16.to_le_bytes());
    let mut count = 0u16;
    for (k, v) in headers {
        out.extend_from_slice(&(k.len() as u16).to_le_bytes());
        out.extend_from_slice(k.as_bytes());
        put_nullable_i32(out, v);
        count = count.wrapping_add(1);
    }
    out[count_pos..count_pos + 2].copy_from_slice(&count.to_le_bytes());
    let total = (out.len() - len_pos - 4) as u32;
    out[len_pos..len_pos + 4].copy_from_slice(&total.to_le_bytes());
}

fn put_nullable_i32(out: &mut Vec<u8>, data: Option<&[u8]>) {
    match data {
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
        Some(d) => {
            out.extend_from_slice(&(d.len() as i32).to_le_bytes());
            out.extend_from_slice(d);
        }
    }
}

/// Builds a complete segment object from an already encoded record region.
pub fn build_segment(
    record_region: &[u8],
    header: SegmentHeader,
    zstd_level: i32,
) -> std::io::Result<Vec<u8>> {
    if header.compression == Compression::None as u8 {
        let (head, foot) = uncompressed_segment_ends(header, record_region);
        return Ok([head.as_slice(), record_region, &foot].concat());
    }
    let body = zstd::bulk::compress(record_region, zstd_level)?;
    Ok(assemble_segment(header, &body))
}

/// Wraps an already compressed body in the segment header and CRC footer.
pub fn assemble_segment(header: SegmentHeader, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + FOOTER_LEN);
    push_header(&mut out, header);
    out.extend_from_slice(body);
    push_footer(&mut out);
    out
}

/// The two ends of a segment stored uncompressed: its header (compression 0) and its footer,
/// whose CRC covers the header and `region`. The region itself goes into the object as it
/// is, between them: it is nearly all of the object, and copying it cost as much as
/// writing it.
pub fn uncompressed_segment_ends(header: SegmentHeader, region: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(HEADER_LEN);
    push_header(
        &mut head,
        SegmentHeader {
            compression: Compression::None as u8,
            ..header
        },
    );
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(region);
    let mut foot = Vec::with_capacity(FOOTER_LEN);
    push_footer_with_crc(&mut foot, crc.finalize());
    (head, foot)
}

/// Starts a segment object in `out` (expected empty): its 32-byte header.
pub(crate) fn push_header(out: &mut Vec<u8>, header: SegmentHeader) {
    out.extend_from_slice(HEADER_MAGIC);
    out.push(FORMAT_VERSION);
    out.push(header.compression);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&header.record_count.to_le_bytes());
    out.extend_from_slice(&header.start_offset.to_le_bytes());
    out.extend_from_slice(&header.end_offset.to_le_bytes());
}

/// Ends a segment object whose header and body are in `out`: the CRC of both, and the magic.
pub(crate) fn push_footer(out: &mut Vec<u8>) {
    let crc = crc32fast::hash(out);
    push_footer_with_crc(out, crc);
}

/// Ends a segment object with the CRC of everything before the footer, already computed.
pub(crate) fn push_footer_with_crc(out: &mut Vec<u8>, crc: u32) {
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(FOOTER_MAGIC);
}

/// Encodes owned records into a complete segment (used by the backup and by tests).
pub fn encode_segment(records: &[Record], compression: Compression, zstd_level: i32) -> Vec<u8> {
    let mut region = Vec::new();
    for r in records {
        encode_record(
            &mut region,
            r.offset,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers
                .iter()
                .map(|h| (h.key.as_str(), h.value.as_deref())),
        );
    }
    let header = SegmentHeader {
        compression: compression as u8,
        record_count: records.len() as u64,
        start_offset: records.first().map_or(0, |r| r.offset),
        end_offset: records.last().map_or(-1, |r| r.offset),
    };
    // zstd::bulk::compress only fails on invalid levels; fall back to an uncompressed body.
    build_segment(&region, header, zstd_level).unwrap_or_else(|_| {
        build_segment(
            &region,
            SegmentHeader {
                compression: 0,
                ..header
            },
            0,
        )
        .unwrap_or_default()
    })
}

/// A verified, decompressed segment whose records can be iterated without copying.
#[derive(Debug)]
pub struct DecodedSegment {
    pub key: String,
    pub header: SegmentHeader,
    region: Vec<u8>,
}

impl DecodedSegment {
    /// Verifies the whole object and decompresses its record region.
    pub fn decode(key: &str, bytes: &[u8]) -> Result<Self, SegmentError> {
        let header = verify_envelope(key, bytes)?;
        let body = &bytes[HEADER_LEN..bytes.len() - FOOTER_LEN];
        let region = match header.compression {
            0 => body.to_vec(),
            1 => crate::decompress::zstd_region(body).map_err(|e| SegmentError::Corrupt {
                key: key.to_string(),
                detail: format!("zstd body does not decompress: {e}"),
            })?,
            code => {
                return Err(SegmentError::UnsupportedCompression {
                    key: key.to_string(),
                    code,
                })
            }
        };
        Self::from_region(key, header, region)
    }

    /// A decompressed region whose records must be exactly the ones `header` names (count,
    /// first and last offset, increasing offsets); used for whole segments and single frames.
    pub fn from_region(
        key: &str,
        header: SegmentHeader,
        region: Vec<u8>,
    ) -> Result<Self, SegmentError> {
        let seg = DecodedSegment {
            key: key.to_string(),
            header,
            region,
        };
        seg.verify_records()?;
        Ok(seg)
    }

    /// Walks every record once without building it (no allocation per record), checking
    /// structure, offset order, count and the header's first and last offset.
    /// A region whose record boundaries, count and increasing offsets the caller has
    /// already walked (`pieces.rs`): the fields inside each record are checked as it is
    /// iterated (a damaged record is an error from the iterator), not in a pass of their own.
    pub fn from_walked_region(key: &str, header: SegmentHeader, region: Vec<u8>) -> Self {
        DecodedSegment {
            key: key.to_string(),
            header,
            region,
        }
    }

    fn verify_records(&self) -> Result<(), SegmentError> {
        let mut count = 0u64;
        let (mut first, mut last): (Option<i64>, Option<i64>) = (None, None);
        let mut pos = 0;
        while pos < self.region.len() {
            let (fields, next) =
                parse_fields(&self.region, pos, |_, _| {}).map_err(|d| self.corrupt(d))?;
            if let Some(prev) = last {
                if fields.offset <= prev {
                    return Err(self.corrupt(format!(
                        "record offsets go backwards ({prev} then {})",
                        fields.offset
                    )));
                }
            }
            first.get_or_insert(fields.offset);
            last = Some(fields.offset);
            count += 1;
            pos = next;
        }
        if count != self.header.record_count {
            return Err(self.corrupt(format!(
                "header says {} records, body holds {count}",
                self.header.record_count
            )));
        }
        if count > 0
            && (first != Some(self.header.start_offset) || last != Some(self.header.end_offset))
        {
            return Err(self.corrupt(format!(
                "header offsets {}..={} do not match records {:?}..={:?}",
                self.header.start_offset, self.header.end_offset, first, last
            )));
        }
        Ok(())
    }

    fn corrupt(&self, detail: String) -> SegmentError {
        SegmentError::Corrupt {
            key: self.key.clone(),
            detail,
        }
    }

    /// Iterates the records in offset order.
    pub fn records(&self) -> RecordIter<'_> {
        self.records_from(0)
    }

    /// Iterates from a byte position previously returned by [`RecordIter::position`].
    pub fn records_from(&self, pos: usize) -> RecordIter<'_> {
        RecordIter {
            key: &self.key,
            buf: &self.region,
            pos,
        }
    }

    pub fn uncompressed_len(&self) -> usize {
        self.region.len()
    }
}

impl Drop for DecodedSegment {
    fn drop(&mut self) {
        crate::decompress::recycle(std::mem::take(&mut self.region));
    }
}

/// Checks magic, version, footer and CRC; returns the parsed header.
pub fn verify_envelope(key: &str, bytes: &[u8]) -> Result<SegmentHeader, SegmentError> {
    verify_envelope_with_crc(key, bytes, None)
}

/// `verify_envelope` for an object whose CRC was computed as it was read (`read_crc.rs`):
/// `crc_before_footer` is the CRC32 of every byte before its footer; `None` computes it here.
pub fn verify_envelope_with_crc(
    key: &str,
    bytes: &[u8],
    crc_before_footer: Option<u32>,
) -> Result<SegmentHeader, SegmentError> {
    if bytes.len() < HEADER_LEN + FOOTER_LEN {
        return Err(SegmentError::Truncated {
            key: key.to_string(),
            detail: format!(
                "{} bytes, smaller than header and footer ({} bytes)",
                bytes.len(),
                HEADER_LEN + FOOTER_LEN
            ),
        });
    }
    if &bytes[0..4] != HEADER_MAGIC {
        return Err(SegmentError::BadMagic {
            key: key.to_string(),
            which: "header",
            found: String::from_utf8_lossy(&bytes[0..4]).into_owned(),
            expected: "KBAK".into(),
        });
    }
    let footer = &bytes[bytes.len() - FOOTER_LEN..];
    if &footer[4..8] != FOOTER_MAGIC {
        return Err(SegmentError::Truncated {
            key: key.to_string(),
            detail: format!(
                "footer magic is {:?}, expected \"BKAE\" (object cut short or damaged at its end)",
                String::from_utf8_lossy(&footer[4..8])
            ),
        });
    }
    let stored = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    let found =
        crc_before_footer.unwrap_or_else(|| crc32fast::hash(&bytes[..bytes.len() - FOOTER_LEN]));
    if stored != found {
        return Err(SegmentError::BadChecksum {
            key: key.to_string(),
            stored,
            found,
        });
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(SegmentError::BadVersion {
            key: key.to_string(),
            version: bytes[4],
        });
    }
    Ok(SegmentHeader {
        compression: bytes[5],
        record_count: read_u64(&bytes[8..16]),
        start_offset: read_u64(&bytes[16..24]) as i64,
        end_offset: read_u64(&bytes[24..32]) as i64,
    })
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Iterator over the records of a decompressed region; yields an error (once) on damage.
pub struct RecordIter<'a> {
    key: &'a str,
    buf: &'a [u8],
    pos: usize,
}

impl RecordIter<'_> {
    /// Byte position of the next record, to resume iteration later.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, SegmentError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let result = parse_record(self.buf, self.pos);
        match result {
            Ok((rec, next)) => {
                self.pos = next;
                Some(Ok(rec))
            }
            Err(detail) => {
                self.pos = self.buf.len();
                Some(Err(SegmentError::Corrupt {
                    key: self.key.to_string(),
                    detail,
                }))
            }
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.end - self.pos < n {
            return Err(format!(
                "record at byte {} is truncated while reading {what}",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn i64(&mut self, what: &str) -> Result<i64, String> {
        let b = self.take(8, what)?;
        Ok(read_u64(b) as i64)
    }
    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn nullable(&mut self, what: &str) -> Result<Option<&'a [u8]>, String> {
        match self.i32(what)? {
            -1 => Ok(None),
            n if n < -1 => Err(format!("negative length {n} for {what}")),
            n => self.take(n as usize, what).map(Some),
        }
    }
}

/// The fixed fields of one record.
struct Fields<'a> {
    offset: i64,
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    header_count: u16,
    encoded_len: usize,
}

fn parse_record(buf: &[u8], start: usize) -> Result<(RecordRef<'_>, usize), String> {
    let mut headers = Vec::new();
    let (f, end) = parse_fields(buf, start, |k, v| headers.push((k, v)))?;
    debug_assert_eq!(headers.len(), usize::from(f.header_count));
    Ok((
        RecordRef {
            offset: f.offset,
            timestamp: f.timestamp,
            key: f.key,
            value: f.value,
            headers,
            encoded_len: f.encoded_len,
        },
        end,
    ))
}

/// Parses and checks one record, handing each header to `on_header`; returns the record's
/// fields and the position of the next record.
fn parse_fields<'a>(
    buf: &'a [u8],
    start: usize,
    mut on_header: impl FnMut(&'a str, Option<&'a [u8]>),
) -> Result<(Fields<'a>, usize), String> {
    if buf.len() - start < 4 {
        return Err(format!("record at byte {start} is truncated in its length"));
    }
    let total =
        u32::from_le_bytes([buf[start], buf[start + 1], buf[start + 2], buf[start + 3]]) as usize;
    let end = start + 4 + total;
    if end > buf.len() {
        return Err(format!(
            "record at byte {start} claims {total} bytes, only {} remain",
            buf.len() - start - 4
        ));
    }
    let mut c = Cursor {
        buf,
        pos: start + 4,
        end,
    };
    let timestamp = c.i64("timestamp")?;
    let offset = c.i64("offset")?;
    let key = c.nullable("key")?;
    let value = c.nullable("value")?;
    let header_count = c.u16("header count")?;
    for _ in 0..header_count {
        let klen = c.u16("header key length")? as usize;
        let kbytes = c.take(klen, "header key")?;
        let k = std::str::from_utf8(kbytes)
            .map_err(|_| format!("header key of record at offset {offset} is not UTF-8"))?;
        let v = c.nullable("header value")?;
        on_header(k, v);
    }
    if c.pos != end {
        return Err(format!(
            "record at offset {offset} has {} unexplained trailing bytes",
            end - c.pos
        ));
    }
    Ok((
        Fields {
            offset,
            timestamp,
            key,
            value,
            header_count,
            encoded_len: 4 + total,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                offset: 5,
                timestamp: 1000,
                key: None,
                value: Some(b"v".to_vec()),
                headers: vec![],
            },
            Record {
                offset: 7,
                timestamp: 999,
                key: Some(vec![0, 1, 2]),
                value: None,
                headers: vec![
                    Header {
                        key: "h".into(),
                        value: None,
                    },
                    Header {
                        key: "h".into(),
                        value: Some(vec![]),
                    },
                ],
            },
        ]
    }

    #[test]
    fn round_trip_zstd_and_plain() {
        for c in [Compression::None, Compression::Zstd] {
            let bytes = encode_segment(&sample(), c, 3);
            let seg = DecodedSegment::decode("k", &bytes).expect("decodes");
            let got: Vec<Record> = seg
                .records()
                .map(|r| r.expect("record").to_owned_record())
                .collect();
            assert_eq!(got, sample());
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode_segment(&sample(), Compression::Zstd, 3);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(DecodedSegment::decode("k", &b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let bytes = encode_segment(&sample(), Compression::Zstd, 3);
        for n in 0..bytes.len() {
            assert!(DecodedSegment::decode("k", &bytes[..n]).is_err(), "len {n}");
        }
    }
}

//! The segment format as published (the README's backup format), checked against bytes built by hand here —
//! not by our writer — plus the corruption cases every reader must refuse.

use kafka_backup_common::segment::{
    encode_segment, Compression, DecodedSegment, Record, SegmentError,
};

/// One record, laid out field by field from the format description.
fn record_bytes(
    ts: i64,
    offset: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&ts.to_le_bytes());
    body.extend_from_slice(&offset.to_le_bytes());
    for field in [key, value] {
        match field {
            None => body.extend_from_slice(&(-1i32).to_le_bytes()),
            Some(b) => {
                body.extend_from_slice(&(b.len() as i32).to_le_bytes());
                body.extend_from_slice(b);
            }
        }
    }
    body.extend_from_slice(&(headers.len() as u16).to_le_bytes());
    for (k, v) in headers {
        body.extend_from_slice(&(k.len() as u16).to_le_bytes());
        body.extend_from_slice(k.as_bytes());
        match v {
            None => body.extend_from_slice(&(-1i32).to_le_bytes()),
            Some(b) => {
                body.extend_from_slice(&(b.len() as i32).to_le_bytes());
                body.extend_from_slice(b);
            }
        }
    }
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

fn hand_built_segment(compression: u8) -> Vec<u8> {
    let mut region = record_bytes(
        1_700_000_000_123,
        42,
        Some(b"k1"),
        Some(b"v1"),
        &[("h", Some(b"x")), ("h", None)],
    );
    region.extend(record_bytes(1_700_000_000_001, 44, None, None, &[]));
    region.extend(record_bytes(-1, 45, Some(&[0, 255]), Some(b""), &[]));
    let body = if compression == 1 {
        zstd::encode_all(region.as_slice(), 3).expect("zstd")
    } else {
        region
    };
    let mut seg = Vec::new();
    seg.extend_from_slice(b"KBAK");
    seg.push(1);
    seg.push(compression);
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(&3u64.to_le_bytes());
    seg.extend_from_slice(&42i64.to_le_bytes());
    seg.extend_from_slice(&45i64.to_le_bytes());
    seg.extend_from_slice(&body);
    let crc = crc32fast::hash(&seg);
    seg.extend_from_slice(&crc.to_le_bytes());
    seg.extend_from_slice(b"BKAE");
    seg
}

#[test]
fn decodes_a_segment_built_from_the_format_description() {
    for compression in [0u8, 1] {
        let bytes = hand_built_segment(compression);
        let seg = DecodedSegment::decode("hand/segment", &bytes).expect("decodes");
        assert_eq!(seg.header.record_count, 3);
        let recs: Vec<Record> = seg
            .records()
            .map(|r| r.expect("record").to_owned_record())
            .collect();
        assert_eq!(recs[0].offset, 42);
        assert_eq!(recs[0].timestamp, 1_700_000_000_123);
        assert_eq!(recs[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(recs[0].headers.len(), 2);
        assert_eq!(recs[0].headers[1].value, None);
        assert_eq!(recs[1].offset, 44);
        assert_eq!((recs[1].key.clone(), recs[1].value.clone()), (None, None));
        assert_eq!(recs[2].value.as_deref(), Some(&b""[..]));
        assert_eq!(recs[2].key.as_deref(), Some(&[0u8, 255][..]));
    }
}

#[test]
fn our_writer_produces_the_hand_built_bytes() {
    let recs: Vec<Record> = DecodedSegment::decode("s", &hand_built_segment(0))
        .expect("decodes")
        .records()
        .map(|r| r.expect("record").to_owned_record())
        .collect();
    assert_eq!(
        encode_segment(&recs, Compression::None, 0),
        hand_built_segment(0)
    );
}

fn expect_err(bytes: &[u8], what: &str) -> String {
    let err = DecodedSegment::decode(
        "b1/topics/t/partition=0/segment-00000000000000000042.bin.zst",
        bytes,
    )
    .expect_err(what);
    let msg = err.to_string();
    assert!(
        msg.contains("segment-00000000000000000042.bin.zst"),
        "{what}: error does not name the object: {msg}"
    );
    msg
}

#[test]
fn corruption_is_refused_with_the_object_named() {
    let good = hand_built_segment(1);
    let mut header = good.clone();
    header[10] ^= 1;
    assert!(expect_err(&header, "header flip").contains("CRC32"));
    let mut body = good.clone();
    body[40] ^= 0x80;
    assert!(expect_err(&body, "body flip").contains("CRC32"));
    let mut footer = good.clone();
    let n = footer.len();
    footer[n - 6] ^= 1;
    assert!(expect_err(&footer, "footer flip").contains("CRC32"));
    assert!(expect_err(&good[..good.len() - 3], "truncated").contains("truncated"));
    assert!(expect_err(&good[..20], "very truncated").contains("truncated"));
    let mut magic = good.clone();
    magic[0..4].copy_from_slice(b"NOPE");
    assert!(matches!(
        DecodedSegment::decode("k", &magic),
        Err(SegmentError::BadMagic { .. })
    ));
    expect_err(&magic, "wrong magic");
}

#[test]
fn record_count_mismatch_is_refused_even_with_a_valid_crc() {
    let mut seg = hand_built_segment(0);
    seg[8] = 4; // record_count 3 → 4
    let n = seg.len();
    let crc = crc32fast::hash(&seg[..n - 8]);
    seg[n - 8..n - 4].copy_from_slice(&crc.to_le_bytes());
    assert!(expect_err(&seg, "count").contains("records"));
}

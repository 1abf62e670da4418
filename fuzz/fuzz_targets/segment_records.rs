//! The record parser behind a valid envelope: the first 9 input bytes choose the header
//! (record count, compression), the rest is the record region, wrapped with a correct CRC so
//! the fuzzer reaches record parsing instead of stopping at the checksum.
#![no_main]
use kafka_backup_common::segment::{build_segment, DecodedSegment, SegmentHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (head, region) = data.split_at(9);
    let mut count = [0u8; 8];
    count.copy_from_slice(&head[..8]);
    let header = SegmentHeader {
        compression: head[8] % 2,
        record_count: u64::from_le_bytes(count) % 4096,
        start_offset: 0,
        end_offset: 4095,
    };
    let Ok(bytes) = build_segment(region, header, 1) else {
        return;
    };
    if let Ok(seg) = DecodedSegment::decode("fuzz/segment", &bytes) {
        for r in seg.records() {
            if r.is_err() {
                break;
            }
        }
    }
});

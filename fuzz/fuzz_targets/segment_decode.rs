//! Any bytes given to the segment reader: it must return records or an error naming the
//! object, never panic, loop or allocate without bound.
#![no_main]
use kafka_backup_common::segment::{verify_envelope, DecodedSegment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_envelope("fuzz/segment", data);
    if let Ok(seg) = DecodedSegment::decode("fuzz/segment", data) {
        let mut it = seg.records();
        for r in it.by_ref() {
            if r.is_err() {
                break;
            }
        }
        let _ = it.position();
        let _ = seg.uncompressed_len();
    }
});

//! Any bytes as a backup manifest: parse errors are fine, panics are not; a manifest that
//! parses must also survive the accessors the planner uses.
#![no_main]
use kafka_backup_common::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let _ = m.total_records();
        for t in &m.topics {
            let _ = m.topic(&t.name).map(|t| t.partition_count());
        }
        for s in m.segments() {
            let _ = s.timestamp_bounds();
            let _ = s.may_overlap(Some(0), Some(i64::MAX));
            let _ = s.inside(Some(i64::MIN), None);
        }
    }
});

//! Any bytes as a backup manifest: parse errors are fine, panics are not; a manifest that
//! parses must also survive the accessors the planner uses, and the streaming reader
//! (`manifest_index.rs`, what restores plan with) must read every manifest serde reads, to
//! the same topics, partitions and segments.
#![no_main]
use kafka_backup_common::manifest::Manifest;
use kafka_backup_common::manifest_index::{read_index, Sieve};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let streamed = read_index(data, &Sieve::default());
    let _ = read_index(data, &Sieve::window(Some(0), Some(1_000)));
    let _ = read_index(data, &Sieve::no_segments());
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
        let idx = streamed.expect("serde reads this manifest, so the streaming reader must");
        assert_eq!(idx.backup_id, m.backup_id);
        assert_eq!(idx.topics.len(), m.topics.len());
        for (a, b) in idx.topics.iter().zip(&m.topics) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.partitions.len(), b.partitions.len());
            for (p, q) in a.partitions.iter().zip(&b.partitions) {
                assert_eq!(p.segments.len(), q.segments.len());
            }
        }
    }
});

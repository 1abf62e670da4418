//! Any text as a YAML config (with ${VAR} expansion) and as the restore filter inputs:
//! every malformed input is an error value, never a panic.
#![no_main]
use kafka_backup_common::{config, filters, timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::parse("fuzz.yaml", text, &|v: &str| {
        (v.len() % 2 == 0).then(|| format!("value-of-{v}"))
    });
    let _ = filters::TopicPattern::parse(text);
    let _ = filters::PartitionMapping::parse(text);
    if let Ok(r) = filters::TopicRewrite::parse(text) {
        let _ = r.apply("orders-eu-1");
    }
    let _ = filters::parse_partition_list("fuzz", text);
    let _ = timestamp::parse_timestamp_ms("fuzz", text);
});

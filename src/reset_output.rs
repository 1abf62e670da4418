//! How a consumer-offset reset is shown: a table, or JSON beside the restore's status.

use kafka_backup_common::restore_options::ResetStrategy;
use kafka_backup_coordinator::offset_reset::GroupReset;
use serde_json::{json, Value};

pub fn resets_json(strategy: ResetStrategy, written: bool, resets: &[GroupReset]) -> Value {
    json!({
        "strategy": strategy.name(),
        "written": written,
        "offsets": resets.iter().map(|r| json!({
            "group": r.group,
            "source": r.source,
            "source_offset": r.source_offset,
            "target": format!("{}/{}", r.target_topic, r.target_partition),
            "target_offset": r.target_offset,
        })).collect::<Vec<_>>(),
    })
}

pub fn print_resets(strategy: ResetStrategy, written: bool, resets: &[GroupReset]) {
    outln!(
        "\nConsumer offsets ({} strategy): {}",
        strategy.name(),
        if written {
            "written"
        } else {
            "dry run, nothing written"
        }
    );
    outln!(
        "{:<24} {:<32} {:>12} {:<32} {:>12}",
        "GROUP",
        "SOURCE",
        "COMMITTED",
        "TARGET",
        "NEW OFFSET"
    );
    for r in resets {
        let target = format!("{}/{}", r.target_topic, r.target_partition);
        let new = if r.target_offset < 0 {
            "after restore".to_string()
        } else {
            r.target_offset.to_string()
        };
        outln!(
            "{:<24} {:<32} {:>12} {:<32} {:>12}",
            r.group,
            r.source,
            r.source_offset,
            target,
            new
        );
    }
}

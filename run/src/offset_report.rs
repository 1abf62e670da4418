//! The offset report: a restore's exact source→target offset runs per partition and the
//! backup's committed consumer-group offsets translated with them, as JSON. It is what
//! `--offset-report FILE` writes when a restore ends and what `show-offset-mapping --format
//! json` prints, so an operator (or the manual consumer-group strategy) can apply it.

use crate::RunError;
use kafka_backup_proto::OffsetMapping;
use serde_json::{json, Map, Value};
use std::path::Path;

pub fn to_json(m: &OffsetMapping) -> Value {
    let mut partitions = Map::new();
    for p in &m.partitions {
        partitions.insert(
            format!("{}/{}", p.source_topic, p.source_partition),
            json!({
                "target": format!("{}/{}", p.target_topic, p.target_partition),
                "state": p.state,
                "target_next_offset": p.target_next_offset,
                "runs_truncated": p.runs_truncated,
                "runs": p.runs.iter().map(|r| json!({
                    "source_start": r.source_start,
                    "target_start": r.target_start,
                    "length": r.length,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    json!({
        "plan_id": m.plan_id,
        "backup_id": m.backup_id,
        "partitions": partitions,
        "consumer_groups": m.groups.iter().map(|g| json!({
            "group": g.group,
            "source": format!("{}/{}", g.source_topic, g.source_partition),
            "source_offset": g.source_offset,
            "target": format!("{}/{}", g.target_topic, g.target_partition),
            "target_offset": g.target_offset,
            "note": g.note,
        })).collect::<Vec<_>>(),
    })
}

pub fn write(m: &OffsetMapping, path: &Path) -> Result<(), RunError> {
    let io = |e: std::io::Error| RunError::Io {
        what: format!("cannot write offset report {}", path.display()),
        source: e,
    };
    let text = serde_json::to_string_pretty(&to_json(m)).map_err(|e| io(e.into()))?;
    std::fs::write(path, text).map_err(io)
}

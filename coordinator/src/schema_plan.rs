//! What a plan's schema ID remapping will do, checked at submission: the remap's choices are
//! valid, both registries answer (with the credentials given) before anything is written, and
//! the report lists the IDs that will be rewritten.

use kafka_backup_common::schema_ids::validate;
use kafka_backup_common::schema_registry::{RegistryClient, RegistrySide};
use kafka_backup_proto::{SchemaIdPlan, SchemaIdRemap};
use std::collections::BTreeMap;
use tonic::Status;

/// Schemas of the source registry listed in a report at most.
const MAX_LISTED: usize = 1_000;

/// The report's schema ID pairs; refuses a remap that cannot work.
pub async fn plan_schema_ids(remap: Option<&SchemaIdRemap>) -> Result<Vec<SchemaIdPlan>, Status> {
    let Some(remap) = remap else {
        return Ok(Vec::new());
    };
    validate(remap).map_err(Status::invalid_argument)?;
    let mut pairs: BTreeMap<i32, SchemaIdPlan> = remap
        .mapping
        .iter()
        .map(|(s, t)| {
            (
                *s,
                SchemaIdPlan {
                    source_id: *s,
                    target_id: *t,
                    origin: "mapping".to_string(),
                },
            )
        })
        .collect();
    if let (Some(src), Some(dst)) = (&remap.source_registry, &remap.target_registry) {
        let source = RegistryClient::new(src, RegistrySide::Source);
        let target = RegistryClient::new(dst, RegistrySide::Target);
        let refuse = |e: kafka_backup_common::schema_registry::RegistryError| {
            Status::failed_precondition(e.to_string())
        };
        target.check().await.map_err(refuse)?;
        for sv in source.list(MAX_LISTED).await.map_err(refuse)? {
            let entry = pairs.entry(sv.id).or_insert_with(|| SchemaIdPlan {
                source_id: sv.id,
                target_id: -1,
                origin: String::new(),
            });
            if entry.origin != "mapping" {
                if !entry.origin.is_empty() {
                    entry.origin.push_str(", ");
                }
                entry
                    .origin
                    .push_str(&format!("{} v{}", sv.subject, sv.version));
            }
        }
    }
    Ok(pairs.into_values().collect())
}

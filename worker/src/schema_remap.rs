//! Rewrites the schema IDs of one task's records (`TaskLease.schema_ids`): explicit pairs
//! first, then, in registry mode, the source schema copied to the target registry (once per
//! ID per task). The producing pass and takeover reconciliation both go through here, so
//! what reconciliation expects to find in the target is exactly what was produced.

use kafka_backup_common::schema_ids::{framed_id, with_id, MissingSchemaId, SchemaIdScope};
use kafka_backup_common::schema_registry::{RegistryError, SchemaCopier};
use kafka_backup_common::segment::RecordRef;
use kafka_backup_proto::SchemaIdRemap;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    #[error("schema ID {id} in the {part} of source offset {offset} has no target ID{why}; add it to --schema-id-mapping, or pass such records unchanged with --schema-id-missing pass")]
    Missing {
        id: u32,
        part: &'static str,
        offset: i64,
        why: String,
    },
    #[error("schema ID {id} in the {part} of source offset {offset}: {source}")]
    Registry {
        id: u32,
        part: &'static str,
        offset: i64,
        #[source]
        source: RegistryError,
    },
}

impl RemapError {
    /// The registry could not be reached: the task may succeed later.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Registry { source, .. } if source.is_outage())
    }
}

/// A record's key and value as they are to be produced (`None`: unchanged).
#[derive(Default)]
pub struct Rewritten {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

impl Rewritten {
    /// `rec` with the rewritten parts in place of its own.
    pub fn apply<'a>(&'a self, rec: &RecordRef<'a>) -> RecordRef<'a> {
        RecordRef {
            key: self.key.as_deref().or(rec.key),
            value: self.value.as_deref().or(rec.value),
            headers: rec.headers.clone(),
            ..*rec
        }
    }

    pub fn is_unchanged(&self) -> bool {
        self.key.is_none() && self.value.is_none()
    }
}

/// One task's schema ID rewriting.
pub struct SchemaIdRemapper {
    /// Source ID → target ID; `None`: known to have no target (registry says so).
    ids: HashMap<u32, Option<u32>>,
    copier: Option<SchemaCopier>,
    scope: SchemaIdScope,
    missing: MissingSchemaId,
    /// Records passed unchanged with an unmapped ID (`--schema-id-missing pass`).
    pub passed: u64,
}

impl SchemaIdRemapper {
    /// The remapper a lease asks for; `None` when it asks for none.
    pub fn for_lease(remap: Option<&SchemaIdRemap>) -> Result<Option<Self>, String> {
        let Some(r) = remap else {
            return Ok(None);
        };
        kafka_backup_common::schema_ids::validate(r)?;
        let copier = match (&r.source_registry, &r.target_registry) {
            (Some(s), Some(t)) if !s.url.is_empty() && !t.url.is_empty() => {
                Some(SchemaCopier::new(s, t))
            }
            _ => None,
        };
        Ok(Some(Self {
            ids: r
                .mapping
                .iter()
                .map(|(k, v)| (*k as u32, Some(*v as u32)))
                .collect(),
            copier,
            scope: SchemaIdScope::parse(&r.apply_to).map_err(|e| e.to_string())?,
            missing: MissingSchemaId::parse(&r.missing).map_err(|e| e.to_string())?,
            passed: 0,
        }))
    }

    /// The target ID of `id`, asking the registries the first time it is met.
    async fn target_of(
        &mut self,
        id: u32,
        part: &'static str,
        offset: i64,
    ) -> Result<Option<u32>, RemapError> {
        if let Some(known) = self.ids.get(&id) {
            return Ok(*known);
        }
        let Some(copier) = self.copier.as_mut() else {
            return Ok(None);
        };
        let resolved = match copier.copy(id as i32).await {
            Ok(t) => Some(t as u32),
            Err(RegistryError::NotFound { .. }) => None,
            Err(source) => {
                return Err(RemapError::Registry {
                    id,
                    part,
                    offset,
                    source,
                })
            }
        };
        if let Some(t) = resolved {
            tracing::info!(
                source_id = id,
                target_id = t,
                "schema copied to the target registry"
            );
        }
        self.ids.insert(id, resolved);
        Ok(resolved)
    }

    /// `bytes` with its schema ID rewritten; `None` when it stays as it is.
    async fn part(
        &mut self,
        bytes: Option<&[u8]>,
        part: &'static str,
        offset: i64,
    ) -> Result<Option<Vec<u8>>, RemapError> {
        let Some((bytes, id)) = bytes.and_then(|b| framed_id(b).map(|id| (b, id))) else {
            return Ok(None);
        };
        match self.target_of(id, part, offset).await? {
            Some(t) if t == id => Ok(None),
            Some(t) => Ok(Some(with_id(bytes, t))),
            None => match self.missing {
                MissingSchemaId::Pass => {
                    self.passed += 1;
                    crate::metrics::METRICS.schema_ids_passed.inc();
                    Ok(None)
                }
                MissingSchemaId::Fail => Err(RemapError::Missing {
                    id,
                    part,
                    offset,
                    why: if self.copier.is_some() {
                        " (not in the source registry)".to_string()
                    } else {
                        String::new()
                    },
                }),
            },
        }
    }

    /// The key and value `rec` is to be produced with.
    pub async fn rewrite(&mut self, rec: &RecordRef<'_>) -> Result<Rewritten, RemapError> {
        let mut out = Rewritten::default();
        if self.scope.keys() {
            out.key = self.part(rec.key, "key", rec.offset).await?;
        }
        if self.scope.values() {
            out.value = self.part(rec.value, "value", rec.offset).await?;
        }
        if !out.is_unchanged() {
            crate::metrics::METRICS.schema_ids_rewritten.inc();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remapper(scope: &str, missing: &str) -> SchemaIdRemapper {
        let remap = SchemaIdRemap {
            mapping: [(1, 101), (2, 102)].into_iter().collect(),
            apply_to: scope.into(),
            missing: missing.into(),
            ..Default::default()
        };
        SchemaIdRemapper::for_lease(Some(&remap))
            .expect("valid")
            .expect("some")
    }

    fn rec<'a>(key: Option<&'a [u8]>, value: Option<&'a [u8]>) -> RecordRef<'a> {
        RecordRef {
            offset: 42,
            timestamp: 1,
            key,
            value,
            headers: vec![],
            encoded_len: 10,
        }
    }

    #[tokio::test]
    async fn rewrites_only_the_id_bytes_of_the_chosen_parts() {
        let key: &[u8] = &[0, 0, 0, 0, 1, 7];
        let value: &[u8] = &[0, 0, 0, 0, 2, 2, 4, 6];
        let mut both = remapper("both", "fail");
        let out = both
            .rewrite(&rec(Some(key), Some(value)))
            .await
            .expect("ok");
        assert_eq!(out.key.as_deref(), Some(&[0, 0, 0, 0, 101, 7][..]));
        assert_eq!(out.value.as_deref(), Some(&[0, 0, 0, 0, 102, 2, 4, 6][..]));
        let mut values = remapper("value", "fail");
        let out = values
            .rewrite(&rec(Some(key), Some(value)))
            .await
            .expect("ok");
        assert!(out.key.is_none(), "keys are left alone");
        assert!(out.value.is_some());
        let plain = values
            .rewrite(&rec(None, Some(b"{\"a\":1}")))
            .await
            .expect("ok");
        assert!(plain.is_unchanged(), "records not in the wire format pass");
    }

    #[tokio::test]
    async fn unmapped_ids_fail_or_pass() {
        let value: &[u8] = &[0, 0, 0, 0, 9, 1];
        let e = remapper("both", "fail")
            .rewrite(&rec(None, Some(value)))
            .await
            .err()
            .expect("fails")
            .to_string();
        assert!(
            e.contains("schema ID 9") && e.contains("source offset 42"),
            "{e}"
        );
        let mut pass = remapper("both", "pass");
        assert!(pass
            .rewrite(&rec(None, Some(value)))
            .await
            .expect("ok")
            .is_unchanged());
        assert_eq!(pass.passed, 1);
    }
}

//! Schema IDs in the Confluent wire format: a record key or value framed as magic byte 0, a
//! 4-byte big-endian schema ID, then the serialized payload (for Protobuf, a message-index
//! list comes first in the payload). Environment cloning must rewrite those IDs, because the
//! target environment's registry numbers its schemas differently; the payload itself is never
//! touched, so a record either keeps its exact bytes or differs in those four only.

use kafka_backup_proto::SchemaIdRemap;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SchemaIdError {
    #[error("cannot read schema ID mapping {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("schema ID mapping {path} is invalid: {reason}; write a map of source ID to target ID, e.g. {{\"1\": 101, \"2\": 102}} (JSON) or `1: 101` lines (YAML)")]
    Parse { path: String, reason: String },
    #[error("invalid {what} {value:?}: use {allowed}")]
    Choice {
        what: &'static str,
        value: String,
        allowed: &'static str,
    },
}

/// Which parts of a record carry schema IDs to rewrite (`--schema-id-apply-to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaIdScope {
    Key,
    Value,
    Both,
}

impl SchemaIdScope {
    /// Empty means the default, both.
    pub fn parse(s: &str) -> Result<Self, SchemaIdError> {
        Ok(match s {
            "key" => Self::Key,
            "value" => Self::Value,
            "" | "both" => Self::Both,
            other => {
                return Err(SchemaIdError::Choice {
                    what: "--schema-id-apply-to",
                    value: other.to_string(),
                    allowed: "key, value or both",
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Value => "value",
            Self::Both => "both",
        }
    }

    pub fn keys(self) -> bool {
        matches!(self, Self::Key | Self::Both)
    }

    pub fn values(self) -> bool {
        matches!(self, Self::Value | Self::Both)
    }
}

/// What happens to a record whose schema ID has no target (`--schema-id-missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingSchemaId {
    /// The task fails, naming the ID and the record's source offset (the default): a record
    /// that keeps a source ID would be read with the wrong schema in the target environment.
    Fail,
    /// The record is produced unchanged and counted.
    Pass,
}

impl MissingSchemaId {
    /// Empty means the default, fail.
    pub fn parse(s: &str) -> Result<Self, SchemaIdError> {
        Ok(match s {
            "" | "fail" => Self::Fail,
            "pass" => Self::Pass,
            other => {
                return Err(SchemaIdError::Choice {
                    what: "--schema-id-missing",
                    value: other.to_string(),
                    allowed: "fail (default) or pass",
                })
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Pass => "pass",
        }
    }
}

/// The schema ID a key or value is framed with, if it is in the wire format.
pub fn framed_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// A copy of a framed key or value with its schema ID replaced; every other byte is kept.
pub fn with_id(bytes: &[u8], id: u32) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.len() >= 5 {
        out[1..5].copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// Schema IDs are non-negative 32-bit integers in every registry implementation.
fn check_id(path: &str, raw: &str) -> Result<i32, SchemaIdError> {
    raw.trim()
        .parse::<i32>()
        .ok()
        .filter(|id| *id >= 0)
        .ok_or_else(|| SchemaIdError::Parse {
            path: path.to_string(),
            reason: format!("{raw:?} is not a schema ID (a non-negative 32-bit integer)"),
        })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Number(i64),
    Text(String),
}

impl IdValue {
    fn text(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s.clone(),
        }
    }
}

/// Parses a mapping file's text: a JSON object or YAML map of source ID to target ID (keys
/// may be quoted). Two source IDs mapping to one target ID are allowed (the same schema
/// registered twice in the source); an empty map is refused, since it maps nothing.
pub fn parse_mapping(path: &str, text: &str) -> Result<BTreeMap<i32, i32>, SchemaIdError> {
    let raw: BTreeMap<String, IdValue> =
        serde_yaml::from_str(text).map_err(|e| SchemaIdError::Parse {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    if raw.is_empty() {
        return Err(SchemaIdError::Parse {
            path: path.to_string(),
            reason: "it maps no IDs".to_string(),
        });
    }
    raw.iter()
        .map(|(k, v)| Ok((check_id(path, k)?, check_id(path, &v.text())?)))
        .collect()
}

/// Reads and parses a mapping file (`--schema-id-mapping`).
pub fn load_mapping(path: &Path) -> Result<BTreeMap<i32, i32>, SchemaIdError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SchemaIdError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    parse_mapping(&shown, &text)
}

/// Checks the choices of a remap received over the API (a client other than the CLI may
/// have filled them in), so a bad value is refused at submission, not in a worker.
pub fn validate(remap: &SchemaIdRemap) -> Result<(), String> {
    SchemaIdScope::parse(&remap.apply_to).map_err(|e| e.to_string())?;
    MissingSchemaId::parse(&remap.missing).map_err(|e| e.to_string())?;
    let src = remap
        .source_registry
        .as_ref()
        .is_some_and(|r| !r.url.is_empty());
    let dst = remap
        .target_registry
        .as_ref()
        .is_some_and(|r| !r.url.is_empty());
    if src != dst {
        return Err("schema ID remapping through registries needs both --source-schema-registry and --target-schema-registry".to_string());
    }
    if !src && remap.mapping.is_empty() {
        return Err("schema ID remapping needs --schema-id-mapping FILE or --source-schema-registry and --target-schema-registry".to_string());
    }
    if let Some((k, v)) = remap.mapping.iter().find(|(k, v)| **k < 0 || **v < 0) {
        return Err(format!(
            "schema ID mapping {k} -> {v} is invalid: IDs are non-negative"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(framed_id(&[0, 0, 0, 0, 7, b'x']), Some(7));
        assert_eq!(framed_id(&[0, 0, 0, 1, 0]), Some(256));
        assert_eq!(framed_id(&[0, 0, 0, 7]), None, "too short for an ID");
        assert_eq!(framed_id(b"{\"plain\":1}"), None);
        let out = with_id(&[0, 0, 0, 0, 1, 9, 8, 7], 0x0102_0304);
        assert_eq!(out, vec![0, 1, 2, 3, 4, 9, 8, 7]);
    }

    #[test]
    fn mapping_files() {
        let json = parse_mapping("m.json", r#"{"1": 101, "2": "102"}"#).expect("json");
        assert_eq!(json, BTreeMap::from([(1, 101), (2, 102)]));
        let yaml = parse_mapping("m.yaml", "1: 101\n2: 102\n").expect("yaml");
        assert_eq!(yaml, json);
        for bad in [
            "",
            "{}",
            "[1, 2]",
            "x: 1",
            "1: -4",
            "1: 99999999999",
            "1: [2]",
        ] {
            let e = parse_mapping("m.yaml", bad).expect_err(bad).to_string();
            assert!(e.contains("m.yaml"), "{bad}: {e}");
        }
    }

    #[test]
    fn choices() {
        assert_eq!(SchemaIdScope::parse("").ok(), Some(SchemaIdScope::Both));
        assert!(SchemaIdScope::parse("headers")
            .expect_err("bad")
            .to_string()
            .contains("key, value or both"));
        assert_eq!(
            MissingSchemaId::parse("pass").ok(),
            Some(MissingSchemaId::Pass)
        );
        assert!(MissingSchemaId::parse("skip").is_err());
        let mut r = SchemaIdRemap::default();
        assert!(validate(&r).is_err(), "nothing to map");
        r.mapping.insert(1, 2);
        assert!(validate(&r).is_ok());
        r.source_registry = Some(kafka_backup_proto::SchemaRegistryEndpoint {
            url: "http://127.0.0.1:1".into(),
            ..Default::default()
        });
        assert!(validate(&r).expect_err("one registry").contains("both"));
    }
}

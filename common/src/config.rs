//! YAML configuration files for `backup` and `restore` (examples/ has one of each). `${VAR}` references in
//! string values are expanded from the environment after parsing (so comments may mention
//! them) and a missing variable is an error naming it. Unknown keys are errors: a key that
//! parses but does nothing is how a restore silently does the wrong thing.

use crate::kafka::SecurityConfig;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path} is invalid: {reason}")]
    Parse { path: String, reason: String },
    #[error("config file {path} refers to environment variable ${{{var}}} at {at}, which is not set; export it or remove the reference")]
    MissingEnv {
        path: String,
        var: String,
        at: String,
    },
}

/// The whole file: any of the sections may be present.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub storage: Option<StorageSection>,
    #[serde(default)]
    pub backup: Option<BackupSection>,
    #[serde(default)]
    pub restore: Option<RestoreSection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub url: Option<String>,
    #[serde(default)]
    pub options: HashMap<String, String>,
}

/// A list given either as YAML list or as one comma-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringList {
    One(String),
    Many(Vec<String>),
}

impl StringList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => crate::filters::split_list(s),
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSection {
    pub backup_id: Option<String>,
    pub bootstrap_servers: Option<StringList>,
    #[serde(default)]
    pub security: SecurityConfig,
    pub topics: Option<StringList>,
    pub consumer_groups: Option<StringList>,
    pub segment_max_bytes: Option<u64>,
    pub segment_max_records: Option<u64>,
    pub zstd_level: Option<i32>,
    pub min_compression_savings: Option<f64>,
    pub index_interval_bytes: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    #[serde(default)]
    pub fetch: BackupFetch,
}

/// `backup.fetch`: how the backup's consumer fetches (see `backup::FetchSettings`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFetch {
    pub wait_max_ms: Option<u32>,
    pub max_partition_bytes: Option<u32>,
    pub connections: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSection {
    pub backup_id: Option<String>,
    #[serde(default)]
    pub source: RestoreSource,
    #[serde(default)]
    pub target: RestoreTarget,
    #[serde(default)]
    pub restore_strategy: RestoreStrategy,
    #[serde(default)]
    pub performance: RestorePerformance,
    pub checkpoint_state: Option<String>,
    pub offset_report: Option<String>,
    pub schema_id_mapping: Option<SchemaIdMappingSection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSource {
    pub topics: Option<StringList>,
    pub partitions: Option<Vec<i64>>,
    /// Strings (RFC 3339 or epoch ms) or integers (epoch ms).
    pub from_timestamp: Option<serde_yaml::Value>,
    pub to_timestamp: Option<serde_yaml::Value>,
    /// The source environment's schema registry (schema ID remapping).
    pub schema_registry: Option<SchemaRegistrySection>,
}

/// A schema registry endpoint: `url`, and basic-auth credentials under `security`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySection {
    pub url: Option<String>,
    #[serde(default)]
    pub security: RegistrySecurity,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySecurity {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// `restore.schema_id_mapping`: explicit pairs (a file or inline) and the remap's choices.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaIdMappingSection {
    pub file: Option<String>,
    /// Inline source ID → target ID pairs.
    pub ids: Option<BTreeMap<i64, i64>>,
    /// key | value | both
    pub apply_to: Option<String>,
    /// fail | pass
    pub missing: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MappingConfig {
    All(String),
    PerTopic(BTreeMap<String, String>),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTarget {
    pub bootstrap_servers: Option<StringList>,
    #[serde(default)]
    pub security: SecurityConfig,
    pub topics: Option<StringList>,
    pub topics_rewrite: Option<String>,
    pub partition_mapping: Option<MappingConfig>,
    pub create_topics: Option<bool>,
    /// Configurations of created topics, over the backup's (`--topic-config`).
    pub topic_configs: Option<BTreeMap<String, serde_yaml::Value>>,
    /// Replication factor of created topics (`--replication-factor`).
    pub replication_factor: Option<i32>,
    /// The target environment's schema registry (schema ID remapping).
    pub schema_registry: Option<SchemaRegistrySection>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreStrategy {
    pub consumer_group_strategy: Option<String>,
    pub dry_run: Option<bool>,
    pub reset_consumer_offsets: Option<bool>,
    pub reset_strategy: Option<String>,
    pub consumer_groups: Option<StringList>,
    pub add_original_offset_headers: Option<bool>,
    pub allow_retention_deletes: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestorePerformance {
    pub max_concurrent_partitions: Option<u32>,
    pub produce_batch_size_bytes: Option<u64>,
    pub checkpoint_interval_secs: Option<u64>,
    pub max_records_per_sec: Option<u32>,
}

/// Reads, expands and parses a config file.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    parse(&shown, &text, &|v| std::env::var(v).ok())
}

/// Parses config text; `env` resolves `${VAR}` references.
pub fn parse(
    path: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConfigFile, ConfigError> {
    let parse_err = |reason: String| ConfigError::Parse {
        path: path.to_string(),
        reason,
    };
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
    if value.is_null() {
        return Ok(ConfigFile::default());
    }
    expand(&mut value, "", path, env)?;
    // Deserialising from text (not from the Value) makes serde_yaml name the key path of a
    // wrongly typed value, e.g. "restore.source.partitions[0]: invalid type".
    let expanded = serde_yaml::to_string(&value).map_err(|e| parse_err(e.to_string()))?;
    let file: ConfigFile =
        serde_yaml::from_str(&expanded).map_err(|e| parse_err(strip_location(e.to_string())))?;
    let sections = [
        ("backup.security", file.backup.as_ref().map(|b| &b.security)),
        (
            "restore.target.security",
            file.restore.as_ref().map(|r| &r.target.security),
        ),
    ];
    for (at, security) in sections {
        if let Some(Err((key, reason))) = security.map(|s| s.check()) {
            return Err(parse_err(format!("{at}.{key} {reason}")));
        }
    }
    Ok(file)
}

/// Line and column refer to the expanded text, not the operator's file: drop them.
fn strip_location(msg: String) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    }
}

fn expand(
    v: &mut serde_yaml::Value,
    at: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    use serde_yaml::Value;
    match v {
        Value::String(s) => *s = expand_str(s, at, path, env)?,
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand(item, &format!("{at}[{i}]"), path, env)?;
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let child = if at.is_empty() {
                    key.to_string()
                } else {
                    format!("{at}.{key}")
                };
                expand(item, &child, path, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand_str(
    s: &str,
    at: &str,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let var = &after[..end];
        let val = env(var).ok_or_else(|| ConfigError::MissingEnv {
            path: path.to_string(),
            var: var.to_string(),
            at: at.to_string(),
        })?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRD_EXAMPLE: &str = r#"
restore:
  backup_id: "backup-2025-11-27-prod"
  source:
    topics: ["orders", "payments", "inventory-.*"]
    partitions: [0, 1]
    from_timestamp: "2025-11-27T10:00:00Z"
    to_timestamp: "2025-11-27T11:00:00Z"
  target:
    bootstrap_servers: ["target-broker-1:9092", "target-broker-2:9092"]
    security:
      sasl_mechanism: "plain"
      sasl_username: "restore-user"
      sasl_password: "${KAFKA_RESTORE_PASSWORD}"
      security_protocol: "SASL_SSL"
    topics: ["orders-restored", "payments-restored", "inventory-.*-restored"]
    partition_mapping:
      orders: "0:0,1:2,2:4"
  restore_strategy:
    consumer_group_strategy: "header-based"
    dry_run: false
    reset_consumer_offsets: false
    reset_strategy: "header-based"
  performance:
    max_concurrent_partitions: 4
    produce_batch_size_bytes: 52428800
    checkpoint_interval_secs: 60
"#;

    #[test]
    fn prd_example_parses_and_expands() {
        let env = |v: &str| (v == "KAFKA_RESTORE_PASSWORD").then(|| "s3cret".to_string());
        let cfg = parse("x.yaml", PRD_EXAMPLE, &env).unwrap();
        let r = cfg.restore.unwrap();
        assert_eq!(r.target.security.sasl_password.as_deref(), Some("s3cret"));
        assert!(matches!(
            r.target.partition_mapping,
            Some(MappingConfig::PerTopic(_))
        ));
    }

    #[test]
    fn missing_env_and_unknown_key_are_errors() {
        let err = parse("x.yaml", PRD_EXAMPLE, &|_| None).unwrap_err();
        assert!(err.to_string().contains("KAFKA_RESTORE_PASSWORD"), "{err}");
        let err = parse("x.yaml", "restore:\n  backup_idd: x\n", &|_| None).unwrap_err();
        assert!(err.to_string().contains("backup_idd"), "{err}");
    }

    #[test]
    fn backup_fetch_settings_parse_and_misspellings_are_named() {
        let yaml = "backup:\n  max_buffered_bytes: 33554432\n  fetch:\n    wait_max_ms: 50\n    max_partition_bytes: 1048576\n    connections: 4\n";
        let b = parse("x.yaml", yaml, &|_| None).unwrap().backup.unwrap();
        assert_eq!(b.max_buffered_bytes, Some(32 << 20));
        assert_eq!(b.fetch.wait_max_ms, Some(50));
        assert_eq!(b.fetch.max_partition_bytes, Some(1_048_576));
        assert_eq!(b.fetch.connections, Some(4));
        let err = parse("x.yaml", "backup:\n  fetch:\n    wait_ms: 5\n", &|_| None).unwrap_err();
        assert!(err.to_string().contains("wait_ms"), "{err}");
    }
}

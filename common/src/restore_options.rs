//! A restore's options as an operator gives them — flags from any front end, the YAML file,
//! `${ENV}` inside it — resolved into the `RestoreSpec` the coordinator plans with, plus the
//! choices that stay on the submitting side (workers, ledger directory, offset report, the
//! consent to reset consumer offsets). Flags override the file. Every malformed or
//! contradictory input is refused here, naming it and the fix, before anything connects.

use crate::config::{ConfigError, ConfigFile, MappingConfig, RestoreSection, StorageSection};
use crate::filters::{
    parse_partition_list, split_list, FilterError, PartitionMapping, TopicPattern, TopicRewrite,
};
use crate::timestamp::{parse_timestamp_ms, TimestampError};
use kafka_backup_proto::RestoreSpec;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum OptionsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Timestamp(#[from] TimestampError),
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, OptionsError> {
    Err(OptionsError::Invalid(msg.into()))
}

/// How restored records relate to consumer-group offsets (`--consumer-group-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupStrategy {
    /// Offsets are not translated (the default).
    Skip,
    /// Records carry x-original-offset / x-original-timestamp headers.
    HeaderBased,
    /// Offsets are found by timestamp on the target.
    TimestampBased,
    /// Headers are written and the whole target partition may be searched.
    ClusterScan,
    /// Only the offset report is written; the operator applies it.
    Manual,
}

impl ConsumerGroupStrategy {
    /// `source` names where the value came from (the flag or the YAML key), for the error.
    pub fn parse(s: &str, source: &str) -> Result<Self, OptionsError> {
        Ok(match s {
            "skip" => Self::Skip,
            "header-based" => Self::HeaderBased,
            "timestamp-based" => Self::TimestampBased,
            "cluster-scan" => Self::ClusterScan,
            "manual" => Self::Manual,
            other => return invalid(format!("invalid {source} {other:?}: use skip, header-based, timestamp-based, cluster-scan or manual")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::HeaderBased => "header-based",
            Self::TimestampBased => "timestamp-based",
            Self::ClusterScan => "cluster-scan",
            Self::Manual => "manual",
        }
    }

    /// Whether restored records must carry the original-offset headers.
    pub fn writes_headers(self) -> bool {
        matches!(self, Self::HeaderBased | Self::ClusterScan)
    }
}

/// Where a consumer-offset reset takes the new offsets from (`--offset-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStrategy {
    /// The offset runs workers took from delivery reports (the default).
    Exact,
    HeaderBased,
    ClusterScan,
    TimestampBased,
}

impl ResetStrategy {
    pub fn parse(what: &str, s: &str) -> Result<Self, OptionsError> {
        Ok(match s {
            "exact" => Self::Exact,
            "header-based" => Self::HeaderBased,
            "cluster-scan" => Self::ClusterScan,
            "timestamp-based" => Self::TimestampBased,
            other => return invalid(format!("invalid {what} {other:?}: use exact (default), header-based, cluster-scan or timestamp-based")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::HeaderBased => "header-based",
            Self::ClusterScan => "cluster-scan",
            Self::TimestampBased => "timestamp-based",
        }
    }

    /// Whether the strategy reads the x-original-offset headers.
    pub fn needs_headers(self) -> bool {
        matches!(self, Self::HeaderBased | Self::ClusterScan)
    }

    /// The reset strategy a consumer-group strategy implies when none is given.
    fn implied_by(group: ConsumerGroupStrategy) -> Self {
        match group {
            ConsumerGroupStrategy::HeaderBased => Self::HeaderBased,
            ConsumerGroupStrategy::ClusterScan => Self::ClusterScan,
            ConsumerGroupStrategy::TimestampBased => Self::TimestampBased,
            _ => Self::Exact,
        }
    }
}

/// The operator's consent to reset consumer offsets, and what it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRequest {
    pub groups: Vec<String>,
    pub strategy: ResetStrategy,
}

/// A restore's flags as a front end collected them; unset ones fall back to the file.
#[derive(Debug, Clone, Default)]
pub struct RestoreFlags {
    pub backup_id: Option<String>,
    pub storage: Option<String>,
    /// Comma-separated lists, possibly repeated.
    pub source_topics: Vec<String>,
    pub target_topics: Vec<String>,
    pub target_topics_rewrite: Option<String>,
    pub bootstrap_servers: Option<String>,
    pub source_partitions: Option<String>,
    pub partition_mapping: Option<String>,
    pub from_timestamp: Option<String>,
    pub to_timestamp: Option<String>,
    pub dry_run: bool,
    pub checkpoint_state: Option<PathBuf>,
    pub checkpoint_interval: Option<String>,
    pub workers: Option<u32>,
    pub create_topics: bool,
    pub consumer_group_strategy: Option<String>,
    pub reset_consumer_offsets: bool,
    pub consumer_groups: Vec<String>,
    pub offset_strategy: Option<String>,
    pub add_original_offset_headers: bool,
    pub offset_report: Option<PathBuf>,
    pub detach: bool,
    pub skip_corrupt_segments: bool,
    pub max_records_per_sec: Option<u32>,
    pub schema_ids: crate::schema_id_options::SchemaIdFlags,
    /// `--topic-config KEY=VALUE`, repeatable.
    pub topic_configs: Vec<String>,
    pub replication_factor: Option<i32>,
    pub allow_retention_deletes: bool,
}

/// A restore ready to run.
#[derive(Debug, Clone)]
pub struct ResolvedRestore {
    pub spec: RestoreSpec,
    pub dry_run: bool,
    pub offset_report: Option<PathBuf>,
    /// Consent and scope of a consumer-offset reset after the restore.
    pub reset: Option<ResetRequest>,
    /// In-process workers in embedded mode.
    pub workers: u32,
    /// The ledger directory in embedded mode.
    pub state_dir: PathBuf,
}

/// Parses "500ms", "5s", "2m" or a bare number of seconds; zero is refused.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, OptionsError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let bad = || invalid(format!("invalid {what} {s:?}: use e.g. 500ms, 5s or 1m"));
    let Ok(n) = num.parse::<u64>() else {
        return bad();
    };
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return bad(),
    };
    if d.is_zero() {
        return invalid(format!("invalid {what} {s:?}: must be > 0"));
    }
    Ok(d)
}

fn yaml_timestamp(what: &str, v: &serde_yaml::Value) -> Result<i64, OptionsError> {
    match v {
        serde_yaml::Value::Number(n) => match n.as_i64() {
            // Checked as the same digits given on the command line (epoch seconds refused).
            Some(ms) if ms >= 0 => Ok(parse_timestamp_ms(what, &ms.to_string())?),
            Some(ms) => Ok(ms),
            None => invalid(format!("invalid {what} {n}: use epoch milliseconds")),
        },
        serde_yaml::Value::String(s) => Ok(parse_timestamp_ms(what, s)?),
        other => invalid(format!(
            "invalid {what} {other:?}: use RFC 3339 or epoch milliseconds"
        )),
    }
}

fn list(flags: &[String]) -> Vec<String> {
    flags.iter().flat_map(|f| split_list(f)).collect()
}

/// Resolves flags over `file` (parsed with `config::load`/`config::parse`).
pub fn resolve(f: &RestoreFlags, file: ConfigFile) -> Result<ResolvedRestore, OptionsError> {
    let r: RestoreSection = file.restore.unwrap_or_default();
    let storage: StorageSection = file.storage.unwrap_or_default();
    let Some(backup_id) = f.backup_id.clone().or(r.backup_id.clone()) else {
        return invalid("--backup-id is required");
    };
    let Some(storage_url) = f.storage.clone().or(storage.url.clone()) else {
        return invalid(
            "no backup location: give --storage, KAFKA_BACKUP_STORAGE or storage.url in --config",
        );
    };
    let (source_topics, target_topics, rewrite) = topics(f, &r)?;
    let source_partitions = source_partitions(f, &r)?;
    let (partition_mapping, topic_partition_mappings) = mappings(f, &r)?;
    let (from, to) = window(f, &r)?;
    let Some(bootstrap) = f.bootstrap_servers.clone().or_else(|| {
        r.target
            .bootstrap_servers
            .as_ref()
            .map(|b| b.to_vec().join(","))
    }) else {
        return invalid("no target cluster: give --bootstrap-servers/--target-cluster or restore.target.bootstrap_servers");
    };
    let group_strategy = match (
        f.consumer_group_strategy.as_deref(),
        r.restore_strategy.consumer_group_strategy.as_deref(),
    ) {
        (Some(s), _) => ConsumerGroupStrategy::parse(s, "--consumer-group-strategy")?,
        (None, Some(s)) => {
            ConsumerGroupStrategy::parse(s, "restore.restore_strategy.consumer_group_strategy")?
        }
        (None, None) => ConsumerGroupStrategy::Skip,
    };
    let add_headers = f.add_original_offset_headers
        || group_strategy.writes_headers()
        || r.restore_strategy
            .add_original_offset_headers
            .unwrap_or(false);
    let offset_report = f
        .offset_report
        .clone()
        .or(r.offset_report.as_ref().map(PathBuf::from));
    let reset = reset_request(f, &r, group_strategy, add_headers, offset_report.is_some())?;
    let interval = match (
        &f.checkpoint_interval,
        r.performance.checkpoint_interval_secs,
    ) {
        (Some(s), _) => parse_duration("--checkpoint-interval", s)?,
        (None, Some(secs)) if secs > 0 => Duration::from_secs(secs),
        (None, Some(_)) => {
            return invalid("restore.performance.checkpoint_interval_secs must be > 0")
        }
        (None, None) => Duration::from_secs(5),
    };
    // The error names where the value came from: the flag, or the YAML key under it.
    let (workers, workers_source) = match (f.workers, r.performance.max_concurrent_partitions) {
        (Some(n), _) => (n, "--workers"),
        (None, Some(n)) => (n, "restore.performance.max_concurrent_partitions"),
        (None, None) => (4, "--workers"),
    };
    if workers == 0 || workers > 256 {
        return invalid(format!("invalid {workers_source} {workers}: use 1 to 256"));
    }
    let spec = RestoreSpec {
        backup_id,
        storage_url,
        storage_options: storage.options.clone().into_iter().collect(),
        source_topics,
        target_topics,
        target_topics_rewrite: rewrite,
        source_partitions,
        partition_mapping,
        topic_partition_mappings,
        from_timestamp_ms: from,
        to_timestamp_ms: to,
        bootstrap_servers: bootstrap,
        kafka_properties: r.target.security.to_properties(),
        create_topics: f.create_topics || r.target.create_topics.unwrap_or(false),
        checkpoint_interval_ms: interval.as_millis() as u64,
        add_original_offset_headers: add_headers,
        consumer_group_strategy: group_strategy.as_str().to_string(),
        skip_corrupt_segments: f.skip_corrupt_segments,
        max_records_per_sec: f
            .max_records_per_sec
            .or(r.performance.max_records_per_sec)
            .unwrap_or(0),
        schema_ids: crate::schema_id_options::resolve(&f.schema_ids, &r)?,
        topic_configs: topic_configs(f, &r)?,
        replication_factor: replication_factor(f, &r)?,
        allow_retention_deletes: f.allow_retention_deletes
            || r.restore_strategy.allow_retention_deletes.unwrap_or(false),
    };
    Ok(ResolvedRestore {
        spec,
        dry_run: f.dry_run || r.restore_strategy.dry_run.unwrap_or(false),
        offset_report,
        reset,
        workers,
        state_dir: f
            .checkpoint_state
            .clone()
            .or(r.checkpoint_state.as_ref().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("kafka-backup-state")),
    })
}

/// Created topics' configurations: the file's `target.topic_configs`, then the flags.
fn topic_configs(
    f: &RestoreFlags,
    r: &RestoreSection,
) -> Result<BTreeMap<String, String>, OptionsError> {
    let mut out = BTreeMap::new();
    for (k, v) in r.target.topic_configs.iter().flatten() {
        let value = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => {
                return invalid(format!(
                    "restore.target.topic_configs.{k} is {other:?}: give a string or number"
                ))
            }
        };
        out.insert(k.clone(), value);
    }
    for flag in &f.topic_configs {
        let (k, v) = crate::topic_configs::parse_override(flag).map_err(OptionsError::Invalid)?;
        out.insert(k, v);
    }
    Ok(out)
}

/// Created topics' replication factor (0 = the backup's).
fn replication_factor(f: &RestoreFlags, r: &RestoreSection) -> Result<i32, OptionsError> {
    match f.replication_factor.or(r.target.replication_factor) {
        None => Ok(0),
        Some(n) if (1..=32).contains(&n) => Ok(n),
        Some(n) => invalid(format!(
            "invalid --replication-factor {n}: use 1 to 32 (at most the target's broker count)"
        )),
    }
}

/// Source topics (checked as patterns), target topics and the rewrite (checked).
fn topics(
    f: &RestoreFlags,
    r: &RestoreSection,
) -> Result<(Vec<String>, Vec<String>, String), OptionsError> {
    let or_file = |flags: Vec<String>, file: &Option<crate::config::StringList>| {
        if flags.is_empty() {
            file.as_ref().map(|t| t.to_vec()).unwrap_or_default()
        } else {
            flags
        }
    };
    let mut source = or_file(list(&f.source_topics), &r.source.topics);
    // `restore --backup-id ID --dry-run` (PRD §4.5) previews the whole backup; a restore
    // that writes must name what it writes.
    let dry_run = f.dry_run || r.restore_strategy.dry_run.unwrap_or(false);
    if source.is_empty() && dry_run {
        source.push(".*".to_string());
    }
    if source.is_empty() {
        return invalid("no source topics: give --source-topics (names or regexes, e.g. \"orders,payments-.*\") or restore.source.topics");
    }
    for t in &source {
        TopicPattern::parse(t)?;
    }
    // Names and a rewrite together would leave the rewrite unused (names win): refused when
    // one layer gives both; a flag of either kind overrides both keys of the file.
    let flag_targets = list(&f.target_topics);
    let flag_rewrite = f.target_topics_rewrite.clone().unwrap_or_default();
    let file_targets = r
        .target
        .topics
        .as_ref()
        .map(|t| t.to_vec())
        .unwrap_or_default();
    let file_rewrite = r.target.topics_rewrite.clone().unwrap_or_default();
    let (target, rewrite) = match (flag_targets.is_empty(), flag_rewrite.is_empty()) {
        (false, false) => {
            return invalid("--target-topics and --target-topics-rewrite were both given: the names would be used and the rewrite ignored; give one of them")
        }
        (false, true) => (flag_targets, String::new()),
        (true, false) => (Vec::new(), flag_rewrite),
        (true, true) if !file_targets.is_empty() && !file_rewrite.is_empty() => {
            return invalid("restore.target.topics and restore.target.topics_rewrite were both given: the names would be used and the rewrite ignored; keep one of them")
        }
        (true, true) => (file_targets, file_rewrite),
    };
    if !rewrite.is_empty() {
        TopicRewrite::parse(&rewrite)?;
    }
    Ok((source, target, rewrite))
}

fn source_partitions(f: &RestoreFlags, r: &RestoreSection) -> Result<Vec<i32>, OptionsError> {
    if let Some(s) = &f.source_partitions {
        return Ok(parse_partition_list("--source-partitions", s)?);
    }
    r.source
        .partitions
        .iter()
        .flatten()
        .map(|p| match i32::try_from(*p) {
            Ok(p) if p >= 0 => Ok(p),
            _ => invalid(format!(
                "invalid partition {p} in restore.source.partitions: partitions are integers >= 0"
            )),
        })
        .collect()
}

/// The mapping for every topic, or per-topic mappings from the file; both checked.
fn mappings(
    f: &RestoreFlags,
    r: &RestoreSection,
) -> Result<(String, BTreeMap<String, String>), OptionsError> {
    let (all, per_topic) = match (&f.partition_mapping, &r.target.partition_mapping) {
        (Some(m), _) => (m.clone(), BTreeMap::new()),
        (None, Some(MappingConfig::All(m))) => (m.clone(), BTreeMap::new()),
        (None, Some(MappingConfig::PerTopic(map))) => (String::new(), map.clone()),
        (None, None) => (String::new(), BTreeMap::new()),
    };
    PartitionMapping::parse(&all)?;
    for m in per_topic.values() {
        PartitionMapping::parse(m)?;
    }
    Ok((all, per_topic))
}

/// The inclusive time window, refused when its bounds are the wrong way round.
fn window(
    f: &RestoreFlags,
    r: &RestoreSection,
) -> Result<(Option<i64>, Option<i64>), OptionsError> {
    let bound = |flag: &Option<String>,
                 file: &Option<serde_yaml::Value>,
                 flag_name: &str,
                 key: &str|
     -> Result<Option<i64>, OptionsError> {
        match (flag, file) {
            (Some(s), _) => Ok(Some(parse_timestamp_ms(flag_name, s)?)),
            (None, Some(v)) => Ok(Some(yaml_timestamp(key, v)?)),
            _ => Ok(None),
        }
    };
    let from = bound(
        &f.from_timestamp,
        &r.source.from_timestamp,
        "--from-timestamp",
        "restore.source.from_timestamp",
    )?;
    let to = bound(
        &f.to_timestamp,
        &r.source.to_timestamp,
        "--to-timestamp",
        "restore.source.to_timestamp",
    )?;
    if let (Some(a), Some(b)) = (from, to) {
        if a > b {
            return invalid(format!("invalid time window: --from-timestamp ({a}) is after --to-timestamp ({b}); swap them or fix one"));
        }
    }
    Ok((from, to))
}

/// The consent rules for writing consumer-group offsets: only with explicit consent, only
/// for the groups named, never under the manual strategy (which only reports), never
/// detached (the reset runs when the restore completes), and a header strategy only when
/// the headers are written.
fn reset_request(
    f: &RestoreFlags,
    r: &RestoreSection,
    group_strategy: ConsumerGroupStrategy,
    has_headers: bool,
    has_report: bool,
) -> Result<Option<ResetRequest>, OptionsError> {
    let consent =
        f.reset_consumer_offsets || r.restore_strategy.reset_consumer_offsets == Some(true);
    let mut groups = list(&f.consumer_groups);
    if groups.is_empty() {
        groups = r
            .restore_strategy
            .consumer_groups
            .as_ref()
            .map(|g| g.to_vec())
            .unwrap_or_default();
    }
    groups.sort();
    groups.dedup();
    if group_strategy == ConsumerGroupStrategy::Manual {
        if consent {
            return invalid("--consumer-group-strategy manual only reports offsets and never writes them: drop --reset-consumer-offsets, or pick exact/header-based/cluster-scan/timestamp-based with --offset-strategy");
        }
        if !has_report {
            return invalid("--consumer-group-strategy manual writes the offset report for the operator: give --offset-report FILE (or restore.offset_report)");
        }
    }
    let strategy_text = f
        .offset_strategy
        .clone()
        .or(r.restore_strategy.reset_strategy.clone());
    if !consent {
        if !groups.is_empty() {
            return invalid(format!("--consumer-group {} names groups whose offsets would be reset, but --reset-consumer-offsets was not given: add it to consent to writing their committed offsets on the target, or drop --consumer-group. No group offset is written without consent", groups.join(",")));
        }
        if strategy_text.is_some() {
            return invalid("--offset-strategy only applies to --reset-consumer-offsets: add --reset-consumer-offsets --consumer-group G, or drop --offset-strategy");
        }
        return Ok(None);
    }
    if groups.is_empty() {
        return invalid("--reset-consumer-offsets needs --consumer-group G (repeatable): only the groups named are ever touched");
    }
    if f.detach {
        return invalid("--reset-consumer-offsets writes offsets when the restore completes, so it cannot --detach: drop --detach (rerunning the same restore later resumes it and then resets)");
    }
    let strategy = match strategy_text {
        Some(s) => ResetStrategy::parse("--offset-strategy", &s)?,
        None => ResetStrategy::implied_by(group_strategy),
    };
    if strategy.needs_headers() && !has_headers {
        return invalid(format!("--offset-strategy {} reads the x-original-offset headers, which this restore does not write: add --add-original-offset-headers (or --consumer-group-strategy header-based), or use --offset-strategy exact", strategy.name()));
    }
    Ok(Some(ResetRequest { groups, strategy }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str, env: &[(&str, &str)]) -> ConfigFile {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::parse("test.yaml", text, &|v| {
            env.iter().find(|(k, _)| k == v).map(|(_, x)| x.clone())
        })
        .expect("config parses")
    }

    fn flags() -> RestoreFlags {
        RestoreFlags {
            backup_id: Some("b1".into()),
            storage: Some("/backups".into()),
            source_topics: vec!["orders,payments".into()],
            bootstrap_servers: Some("k:9092".into()),
            ..Default::default()
        }
    }

    fn refused(f: &RestoreFlags, file: ConfigFile, needle: &str) {
        match resolve(f, file) {
            Err(e) => assert!(e.to_string().contains(needle), "{e} lacks {needle:?}"),
            Ok(r) => panic!(
                "accepted, expected a refusal naming {needle:?}: {:?}",
                r.spec
            ),
        }
    }

    #[test]
    fn flags_alone_give_the_defaults() {
        let r = resolve(&flags(), ConfigFile::default()).unwrap();
        assert_eq!(r.spec.source_topics, vec!["orders", "payments"]);
        assert_eq!(r.spec.checkpoint_interval_ms, 5_000);
        assert_eq!(r.spec.consumer_group_strategy, "skip");
        assert!(!r.spec.add_original_offset_headers);
        assert_eq!(r.workers, 4);
        assert_eq!(r.state_dir, PathBuf::from("kafka-backup-state"));
        assert!(r.reset.is_none() && !r.dry_run);
        // A dry run without topics previews every topic of the backup; a restore is refused.
        let bare = RestoreFlags {
            source_topics: Vec::new(),
            dry_run: true,
            ..flags()
        };
        assert_eq!(
            resolve(&bare, ConfigFile::default())
                .unwrap()
                .spec
                .source_topics,
            vec![".*"]
        );
        let bare = RestoreFlags {
            dry_run: false,
            ..bare
        };
        refused(&bare, ConfigFile::default(), "no source topics");
    }

    #[test]
    fn topic_settings_of_created_topics() {
        let file = yaml(
            "restore:\n  target:\n    topic_configs: { retention.ms: -1, cleanup.policy: compact }\n    replication_factor: 3\n  restore_strategy: { allow_retention_deletes: true }\n",
            &[],
        );
        let f = RestoreFlags {
            topic_configs: vec!["cleanup.policy=delete".into(), "segment.ms=60000".into()],
            ..flags()
        };
        let r = resolve(&f, file).unwrap();
        let c = &r.spec.topic_configs;
        assert_eq!(c.get("retention.ms").map(String::as_str), Some("-1"));
        assert_eq!(
            c.get("cleanup.policy").map(String::as_str),
            Some("delete"),
            "flags win"
        );
        assert_eq!(c.get("segment.ms").map(String::as_str), Some("60000"));
        assert_eq!(r.spec.replication_factor, 3);
        assert!(r.spec.allow_retention_deletes);
        let bad = RestoreFlags {
            topic_configs: vec!["retention.ms".into()],
            ..flags()
        };
        refused(&bad, ConfigFile::default(), "KEY=VALUE");
        let bad = RestoreFlags {
            replication_factor: Some(0),
            ..flags()
        };
        refused(&bad, ConfigFile::default(), "--replication-factor 0");
    }

    #[test]
    fn target_names_and_a_rewrite_are_not_given_together() {
        let both = RestoreFlags {
            target_topics: vec!["x,y".into()],
            target_topics_rewrite: Some("s/^/p-/".into()),
            ..flags()
        };
        refused(&both, ConfigFile::default(), "both given");
        // A flag of either kind overrides the file's other kind.
        let file = yaml("restore:\n  target:\n    topics: [a, b]\n", &[]);
        let rewrite = RestoreFlags {
            target_topics_rewrite: Some("s/^/p-/".into()),
            ..flags()
        };
        let r = resolve(&rewrite, file).unwrap();
        assert!(r.spec.target_topics.is_empty());
        assert_eq!(r.spec.target_topics_rewrite, "s/^/p-/");
    }

    #[test]
    fn the_file_fills_in_and_flags_override_it() {
        let file = yaml(
            r#"
storage: { url: "s3://bucket/${PREFIX}" }
restore:
  backup_id: from-file
  source: { topics: [a, b], partitions: [0, 2], from_timestamp: "2025-01-01T00:00:00Z", to_timestamp: 1735700000000 }
  target:
    bootstrap_servers: [k1:9092, k2:9092]
    topics_rewrite: "s/^/copy-/"
    partition_mapping: { a: "0:1" }
    create_topics: true
  restore_strategy: { dry_run: true, consumer_group_strategy: header-based }
  performance: { max_concurrent_partitions: 8, checkpoint_interval_secs: 2, max_records_per_sec: 100 }
  checkpoint_state: /var/ledger
"#,
            &[("PREFIX", "prod")],
        );
        let mut f = RestoreFlags {
            backup_id: Some("from-flag".into()),
            workers: Some(2),
            ..Default::default()
        };
        let r = resolve(&f, yaml_clone(&file)).unwrap();
        assert_eq!(r.spec.backup_id, "from-flag");
        assert_eq!(r.spec.storage_url, "s3://bucket/prod");
        assert_eq!(r.spec.source_topics, vec!["a", "b"]);
        assert_eq!(r.spec.source_partitions, vec![0, 2]);
        assert_eq!(r.spec.bootstrap_servers, "k1:9092,k2:9092");
        assert_eq!(r.spec.from_timestamp_ms, Some(1_735_689_600_000));
        assert_eq!(r.spec.to_timestamp_ms, Some(1_735_700_000_000));
        assert_eq!(
            r.spec.topic_partition_mappings.get("a").map(String::as_str),
            Some("0:1")
        );
        assert!(r.spec.create_topics && r.dry_run);
        assert!(
            r.spec.add_original_offset_headers,
            "header-based writes headers"
        );
        assert_eq!(r.spec.checkpoint_interval_ms, 2_000);
        assert_eq!(r.spec.max_records_per_sec, 100);
        assert_eq!(r.workers, 2);
        assert_eq!(r.state_dir, PathBuf::from("/var/ledger"));
        f.partition_mapping = Some("0:3".into());
        f.source_topics = vec!["c".into()];
        let r = resolve(&f, file).unwrap();
        assert_eq!(r.spec.partition_mapping, "0:3");
        assert!(r.spec.topic_partition_mappings.is_empty());
        assert_eq!(r.spec.source_topics, vec!["c"]);
    }

    fn yaml_clone(f: &ConfigFile) -> ConfigFile {
        // ConfigFile holds no Clone for its secrets; the sections used here are cloneable.
        ConfigFile {
            storage: f.storage.clone(),
            restore: f.restore.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn malformed_or_contradictory_inputs_are_refused_naming_them() {
        let none = ConfigFile::default;
        let with = |edit: &dyn Fn(&mut RestoreFlags)| {
            let mut f = flags();
            edit(&mut f);
            f
        };
        refused(&with(&|f| f.backup_id = None), none(), "--backup-id");
        refused(&with(&|f| f.storage = None), none(), "--storage");
        refused(
            &with(&|f| f.source_topics.clear()),
            none(),
            "--source-topics",
        );
        refused(&with(&|f| f.source_topics = vec!["(".into()]), none(), "(");
        refused(
            &with(&|f| f.bootstrap_servers = None),
            none(),
            "--bootstrap-servers",
        );
        refused(
            &with(&|f| f.source_partitions = Some("0,-1".into())),
            none(),
            "-1",
        );
        refused(
            &with(&|f| f.partition_mapping = Some("0-1".into())),
            none(),
            "0-1",
        );
        refused(
            &with(&|f| f.target_topics_rewrite = Some("s/a".into())),
            none(),
            "s/a",
        );
        refused(
            &with(&|f| {
                f.from_timestamp = Some("2025-01-02T00:00:00Z".into());
                f.to_timestamp = Some("2025-01-01T00:00:00Z".into());
            }),
            none(),
            "is after",
        );
        refused(
            &with(&|f| f.from_timestamp = Some("yesterday".into())),
            none(),
            "yesterday",
        );
        refused(
            &with(&|f| f.checkpoint_interval = Some("0s".into())),
            none(),
            "must be > 0",
        );
        refused(
            &with(&|f| f.checkpoint_interval = Some("5h".into())),
            none(),
            "5h",
        );
        refused(&with(&|f| f.workers = Some(0)), none(), "--workers 0");
        refused(&with(&|f| f.workers = Some(300)), none(), "--workers 300");
        refused(
            &with(&|f| f.consumer_group_strategy = Some("bogus".into())),
            none(),
            "--consumer-group-strategy",
        );
        let file = yaml("restore:\n  source:\n    partitions: [-3]\n", &[]);
        refused(&flags(), file, "restore.source.partitions");
        let file = yaml(
            "restore:\n  performance:\n    checkpoint_interval_secs: 0\n",
            &[],
        );
        refused(&flags(), file, "checkpoint_interval_secs");
    }

    #[test]
    fn offsets_are_reset_only_with_consent_for_named_groups() {
        let none = ConfigFile::default;
        let with = |edit: &dyn Fn(&mut RestoreFlags)| {
            let mut f = flags();
            edit(&mut f);
            f
        };
        refused(
            &with(&|f| f.consumer_groups = vec!["g".into()]),
            none(),
            "--reset-consumer-offsets was not given",
        );
        refused(
            &with(&|f| f.offset_strategy = Some("exact".into())),
            none(),
            "only applies to --reset-consumer-offsets",
        );
        refused(
            &with(&|f| f.reset_consumer_offsets = true),
            none(),
            "needs --consumer-group",
        );
        let consent = |f: &mut RestoreFlags| {
            f.reset_consumer_offsets = true;
            f.consumer_groups = vec!["b,a".into(), "a".into()];
        };
        refused(
            &with(&|f| {
                consent(f);
                f.detach = true;
            }),
            none(),
            "cannot --detach",
        );
        refused(
            &with(&|f| {
                consent(f);
                f.offset_strategy = Some("header-based".into());
            }),
            none(),
            "add --add-original-offset-headers",
        );
        refused(
            &with(&|f| {
                consent(f);
                f.consumer_group_strategy = Some("manual".into());
            }),
            none(),
            "only reports offsets",
        );
        refused(
            &with(&|f| f.consumer_group_strategy = Some("manual".into())),
            none(),
            "--offset-report",
        );
        let r = resolve(&with(&|f| consent(f)), none()).unwrap();
        assert_eq!(
            r.reset,
            Some(ResetRequest {
                groups: vec!["a".into(), "b".into()],
                strategy: ResetStrategy::Exact
            })
        );
        let r = resolve(
            &with(&|f| {
                consent(f);
                f.consumer_group_strategy = Some("cluster-scan".into());
            }),
            none(),
        )
        .unwrap();
        assert_eq!(
            r.reset.map(|x| x.strategy),
            Some(ResetStrategy::ClusterScan)
        );
        let file = yaml(
            "restore:\n  restore_strategy:\n    reset_consumer_offsets: true\n    consumer_groups: [g]\n    reset_strategy: timestamp-based\n",
            &[],
        );
        let r = resolve(&flags(), file).unwrap();
        assert_eq!(
            r.reset.map(|x| x.strategy),
            Some(ResetStrategy::TimestampBased)
        );
    }

    /// The bad-input matrix of restore flags: each refused naming the input. (The binary's
    /// tests keep one case of each kind to show it refuses before connecting or writing.)
    #[test]
    fn every_malformed_flag_is_refused_naming_it() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("from", "2025-13-45T00:00:00Z")], "--from-timestamp"),
            (&[("to", "noon")], "--to-timestamp"),
            (&[("from", "-5")], "--from-timestamp"),
            (&[("partitions", "0,x")], "--source-partitions"),
            (&[("partitions", "-3")], "--source-partitions"),
            (&[("partitions", "99999999999")], "--source-partitions"),
            (&[("mapping", "0:")], "invalid partition mapping"),
            (&[("mapping", "a:b")], "invalid partition mapping"),
            (&[("mapping", "0:-1")], "invalid partition mapping"),
            (&[("mapping", "0:1,0:2")], "invalid partition mapping"),
            (&[("mapping", "0:0,0:1")], "mapped twice"),
            (&[("rewrite", "s/a/b")], "invalid topic rewrite"),
            (&[("rewrite", "x/a/b/")], "invalid topic rewrite"),
            (&[("rewrite", "s/(/x/")], "invalid topic rewrite"),
            (&[("topics", "pay-([")], "invalid topic pattern"),
            (&[("interval", "5x")], "--checkpoint-interval"),
            (&[("interval", "0s")], "--checkpoint-interval"),
            (&[("group-strategy", "bogus")], "--consumer-group-strategy"),
            (&[("offset-strategy", "bogus")], "--offset-strategy"),
            (&[("group", "g1")], "--reset-consumer-offsets"),
            (
                &[
                    ("consent", ""),
                    ("group", "g"),
                    ("offset-strategy", "nearest"),
                ],
                "--offset-strategy",
            ),
        ];
        for (edits, needle) in cases {
            let mut f = flags();
            for (k, raw) in edits.iter() {
                let v = Some(raw.to_string());
                match *k {
                    "from" => f.from_timestamp = v,
                    "to" => f.to_timestamp = v,
                    "partitions" => f.source_partitions = v,
                    "mapping" => f.partition_mapping = v,
                    "rewrite" => f.target_topics_rewrite = v,
                    "topics" => f.source_topics = vec![raw.to_string()],
                    "interval" => f.checkpoint_interval = v,
                    "group-strategy" => f.consumer_group_strategy = v,
                    "offset-strategy" => f.offset_strategy = v,
                    "group" => f.consumer_groups = vec![raw.to_string()],
                    "consent" => f.reset_consumer_offsets = true,
                    other => panic!("unknown case key {other}"),
                }
            }
            refused(&f, ConfigFile::default(), needle);
        }
    }

    /// The same for values in the YAML file, each naming its key.
    #[test]
    fn every_malformed_yaml_value_is_refused_naming_its_key() {
        let head = "storage:\n  url: /backups\nrestore:\n  backup_id: bk\n";
        let target = "  target:\n    bootstrap_servers: [\"k:1\"]\n";
        let source = "  source:\n    topics: [orders]\n";
        let parse_refused: Vec<(String, &str)> = vec![
            (format!("{head}{target}{source}  colour: blue\n"), "colour"),
            (format!("{head}{target}{source}bogus_section: 1\n"), "bogus_section"),
            (format!("{head}{target}  source:\n    topics: [orders]\n    partitions: [zero]\n"), "partitions"),
            (format!("{head}{target}{source}  performance:\n    max_concurrent_partitions: four\n"), "max_concurrent_partitions"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"${{KB_UNSET}}\"]\n"), "KB_UNSET"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    security:\n      security_protocol: SASL_SSL\n      sasl_mechanism: SCRAM-SHA-1\n      sasl_username: u\n      sasl_password: p\n"), "restore.target.security.sasl_mechanism"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    security:\n      password: p\n"), "password"),
            (format!("{head}  source: [unclosed\n"), "is invalid"),
        ];
        for (text, needle) in &parse_refused {
            let e = crate::config::parse("t.yaml", text, &|_| None)
                .map(|_| ())
                .unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
        }
        let resolve_refused: Vec<(String, &str)> = vec![
            (format!("{head}{target}  source:\n    topics: [orders]\n    from_timestamp: \"not-a-date\"\n"), "restore.source.from_timestamp"),
            (format!("{head}{target}  source:\n    topics: [orders]\n    partitions: [0, -1]\n"), "restore.source.partitions"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    partition_mapping: \"0:0,0:1\"\n"), "mapped twice"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    partition_mapping:\n      orders: \"0:x\"\n"), "invalid partition mapping"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    topics_rewrite: \"s/(/x/\"\n"), "invalid topic rewrite"),
            (format!("{head}{target}{source}  performance:\n    checkpoint_interval_secs: 0\n"), "checkpoint_interval_secs"),
            (format!("{head}{target}{source}  performance:\n    max_concurrent_partitions: 0\n"), "invalid restore.performance.max_concurrent_partitions 0"),
            (format!("{head}{target}{source}  restore_strategy:\n    consumer_group_strategy: psychic\n"), "invalid restore.restore_strategy.consumer_group_strategy \"psychic\""),
            (format!("{head}{target}{source}  restore_strategy:\n    consumer_groups: [g]\n"), "--reset-consumer-offsets"),
            (format!("{head}{source}  target:\n    bootstrap_servers: [\"k:1\"]\n    topics: [x]\n    topics_rewrite: \"s/^/p-/\"\n"), "both given"),
            (format!("{head}{target}  source:\n    topics: [orders]\n    from_timestamp: 1700000010\n"), "looks like epoch seconds"),
        ];
        for (text, needle) in resolve_refused {
            refused(&RestoreFlags::default(), yaml(&text, &[]), needle);
        }
    }

    #[test]
    fn the_shipped_example_resolves() {
        let text = include_str!("../../examples/restore.yaml");
        let file = yaml(
            text,
            &[
                ("KAFKA_RESTORE_PASSWORD", "s3cret"),
                ("SCHEMA_REGISTRY_PASSWORD", "sr-pass"),
            ],
        );
        let r = resolve(&RestoreFlags::default(), file).expect("examples/restore.yaml");
        let remap = r.spec.schema_ids.clone().expect("schema ID remapping");
        assert_eq!(remap.mapping.get(&1), Some(&101));
        let dst = remap.target_registry.expect("target registry");
        assert_eq!(
            (dst.username.as_str(), dst.password.as_str()),
            ("restore-user", "sr-pass")
        );
        assert_eq!(r.spec.backup_id, "backup-2025-11-27-prod");
        assert_eq!(r.spec.source_partitions, vec![0, 1]);
        assert_eq!(r.spec.target_topics_rewrite, "s/$/-restored/");
        assert!(r.spec.add_original_offset_headers && r.spec.create_topics);
        assert_eq!(
            r.spec
                .kafka_properties
                .get("sasl.password")
                .map(String::as_str),
            Some("s3cret")
        );
        assert_eq!(r.offset_report, Some(PathBuf::from("./offset-report.json")));
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("x", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("x", "7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration("x", " 2m ").unwrap(),
            Duration::from_secs(120)
        );
        for bad in ["", "s", "1.5s", "-1s", "0ms", "3d"] {
            assert!(parse_duration("x", bad).is_err(), "{bad}");
        }
    }
}

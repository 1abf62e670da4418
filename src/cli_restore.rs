//! `restore` and `validate-restore`: turns flags and the YAML of PRD §10.1 into a
//! `RestoreSpec` (flags override the file), refusing malformed input before anything
//! connects, then runs it embedded or submits it to a coordinator.

use crate::cli_output::Format;
use crate::embedded;
use crate::offset_reset::{ResetRequest, ResetStrategy};
use anyhow::{bail, Context, Result};
use clap::Args;
use kafka_backup_common::config::{self, MappingConfig, RestoreSection, StorageSection};
use kafka_backup_common::filters::{
    parse_partition_list, split_list, PartitionMapping, TopicPattern, TopicRewrite,
};
use kafka_backup_common::timestamp::parse_timestamp_ms;
use kafka_backup_proto::RestoreSpec;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct RestoreArgs {
    /// YAML config (PRD §10.1); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Backup location: a path, file://, s3://bucket/prefix, gs://, az://.
    #[arg(long, env = "KAFKA_BACKUP_STORAGE")]
    pub storage: Option<String>,
    /// Source topic names or regexes, comma separated (repeatable).
    #[arg(long = "source-topics", visible_alias = "source-topic")]
    pub source_topics: Vec<String>,
    /// Target topic names, one per source topic, comma separated (repeatable).
    #[arg(long = "target-topics", visible_alias = "target-topic")]
    pub target_topics: Vec<String>,
    /// sed-style rewrite of target topic names, e.g. 's/^/prod-/'.
    #[arg(long)]
    pub target_topics_rewrite: Option<String>,
    /// Target cluster bootstrap servers.
    #[arg(long = "bootstrap-servers", visible_alias = "target-cluster")]
    pub bootstrap_servers: Option<String>,
    /// Source partitions to restore, e.g. "0,1,2".
    #[arg(long, allow_hyphen_values = true)]
    pub source_partitions: Option<String>,
    /// Partition mapping "src:dst,...", e.g. "0:0,1:2".
    #[arg(long, allow_hyphen_values = true)]
    pub partition_mapping: Option<String>,
    /// Inclusive start of the time window (RFC 3339 or epoch ms).
    #[arg(long, allow_hyphen_values = true)]
    pub from_timestamp: Option<String>,
    /// Inclusive end of the time window (RFC 3339 or epoch ms).
    #[arg(long, allow_hyphen_values = true)]
    pub to_timestamp: Option<String>,
    /// Validate and report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Directory of the restore ledger (embedded mode); rerunning with the same directory resumes.
    #[arg(long, visible_alias = "state-dir")]
    pub checkpoint_state: Option<PathBuf>,
    /// How often workers checkpoint, e.g. "5s", "500ms", "1m".
    #[arg(long)]
    pub checkpoint_interval: Option<String>,
    /// Show live progress.
    #[arg(long)]
    pub progress: bool,
    /// In-process workers in embedded mode (default: max_concurrent_partitions, else 4).
    #[arg(long, allow_hyphen_values = true)]
    pub workers: Option<u32>,
    /// Create missing target topics with the source partition count.
    #[arg(long)]
    pub create_topics: bool,
    /// Consumer offset strategy: skip (default), header-based or cluster-scan (both add
    /// x-original-offset / x-original-timestamp headers), timestamp-based, or manual (only
    /// writes --offset-report). The non-skip ones also pick the default --offset-strategy.
    #[arg(long)]
    pub consumer_group_strategy: Option<String>,
    /// Consent to write the committed offsets of the --consumer-group groups on the target
    /// once the restore completes. Without it no group offset is ever written.
    #[arg(long)]
    pub reset_consumer_offsets: bool,
    /// A consumer group whose offsets --reset-consumer-offsets translates and writes
    /// (repeatable, comma separated). Groups not named are never touched.
    #[arg(long = "consumer-group", visible_alias = "consumer-groups")]
    pub consumer_groups: Vec<String>,
    /// How reset offsets are found: exact (default; from the delivery reports), header-based,
    /// cluster-scan or timestamp-based.
    #[arg(long)]
    pub offset_strategy: Option<String>,
    /// Add x-original-offset / x-original-timestamp headers to restored records.
    #[arg(long)]
    pub add_original_offset_headers: bool,
    /// Write the offset mapping and translated consumer-group offsets (JSON) here when the
    /// restore ends.
    #[arg(long)]
    pub offset_report: Option<PathBuf>,
    /// Submit to a running coordinator instead of running embedded.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// With --coordinator: submit and return without following progress.
    #[arg(long)]
    pub detach: bool,
    /// Start a new run even if the same restore already completed.
    #[arg(long)]
    pub new_run: bool,
    /// Skip missing or corrupt segments instead of failing their partition; every skipped
    /// object is listed in the status and the offset report. Skipping loses those records.
    #[arg(long)]
    pub skip_corrupt_segments: bool,
    /// Throttle each partition task to this many records per second (0 = unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub max_records_per_sec: Option<u32>,
    #[command(flatten)]
    pub auth: crate::cli_auth::ClientAuthArgs,
    /// Lease TTL of the embedded coordinator, e.g. "10s".
    #[arg(long, hide = true)]
    pub lease_ttl: Option<String>,
}

/// Parses "500ms", "5s", "2m" or a bare number of seconds.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid {what} {s:?}: use e.g. 500ms, 5s or 1m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => bail!("invalid {what} {s:?}: use e.g. 500ms, 5s or 1m"),
    };
    if d.is_zero() {
        bail!("invalid {what} {s:?}: must be > 0");
    }
    Ok(d)
}

fn yaml_timestamp(what: &str, v: &serde_yaml::Value) -> Result<i64> {
    Ok(match v {
        serde_yaml::Value::Number(n) => n
            .as_i64()
            .with_context(|| format!("invalid {what} {n}: use epoch milliseconds"))?,
        serde_yaml::Value::String(s) => parse_timestamp_ms(what, s)?,
        other => bail!("invalid {what} {other:?}: use RFC 3339 or epoch milliseconds"),
    })
}

/// The validated spec plus run options that are not part of the plan.
pub struct Resolved {
    pub spec: RestoreSpec,
    pub offset_report: Option<PathBuf>,
    /// Consent and scope of a consumer-offset reset after the restore.
    pub reset: Option<ResetRequest>,
    pub workers: u32,
    pub state_dir: PathBuf,
}

/// Consent rules of PRD §8.4, checked before anything connects: groups are only reset with
/// --reset-consumer-offsets, only the named ones, and never under the manual strategy.
fn resolve_reset(
    a: &RestoreArgs,
    r: &RestoreSection,
    group_strategy: &str,
    has_headers: bool,
    has_report: bool,
) -> Result<Option<ResetRequest>> {
    let consent =
        a.reset_consumer_offsets || r.restore_strategy.reset_consumer_offsets == Some(true);
    let mut groups: Vec<String> = a
        .consumer_groups
        .iter()
        .flat_map(|g| split_list(g))
        .collect();
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
    if group_strategy == "manual" {
        if consent {
            bail!("--consumer-group-strategy manual only reports offsets and never writes them: drop --reset-consumer-offsets, or pick exact/header-based/cluster-scan/timestamp-based with --offset-strategy");
        }
        if !has_report {
            bail!("--consumer-group-strategy manual writes the offset report for the operator: give --offset-report FILE (or restore.offset_report)");
        }
    }
    let strategy_text = a
        .offset_strategy
        .clone()
        .or(r.restore_strategy.reset_strategy.clone());
    if !consent {
        if !groups.is_empty() {
            bail!("--consumer-group {} names groups whose offsets would be reset, but --reset-consumer-offsets was not given: add it to consent to writing their committed offsets on the target, or drop --consumer-group. No group offset is written without consent", groups.join(","));
        }
        if strategy_text.is_some() {
            bail!("--offset-strategy only applies to --reset-consumer-offsets: add --reset-consumer-offsets --consumer-group G, or drop --offset-strategy");
        }
        return Ok(None);
    }
    if groups.is_empty() {
        bail!("--reset-consumer-offsets needs --consumer-group G (repeatable): only the groups named are ever touched");
    }
    if a.detach {
        bail!("--reset-consumer-offsets writes offsets when the restore completes, so it cannot --detach: drop --detach (rerunning the same restore later resumes it and then resets)");
    }
    let strategy = match strategy_text {
        Some(s) => ResetStrategy::parse("--offset-strategy", &s)?,
        None => match group_strategy {
            "header-based" => ResetStrategy::HeaderBased,
            "cluster-scan" => ResetStrategy::ClusterScan,
            "timestamp-based" => ResetStrategy::TimestampBased,
            _ => ResetStrategy::Exact,
        },
    };
    if strategy.needs_headers() && !has_headers {
        bail!("--offset-strategy {} reads the x-original-offset headers, which this restore does not write: add --add-original-offset-headers (or --consumer-group-strategy header-based), or use --offset-strategy exact", strategy.name());
    }
    Ok(Some(ResetRequest { groups, strategy }))
}

pub fn resolve(a: &RestoreArgs) -> Result<Resolved> {
    let file = match &a.config {
        Some(p) => config::load(p)?,
        None => Default::default(),
    };
    let r: RestoreSection = file.restore.unwrap_or_default();
    let storage: StorageSection = file.storage.unwrap_or_default();
    let list = |flags: &[String]| flags.iter().flat_map(|f| split_list(f)).collect::<Vec<_>>();

    let backup_id = a
        .backup_id
        .clone()
        .or(r.backup_id.clone())
        .context("--backup-id is required")?;
    let storage_url = a.storage.clone().or(storage.url.clone()).context(
        "no backup location: give --storage, KAFKA_BACKUP_STORAGE or storage.url in --config",
    )?;
    let mut source_topics = list(&a.source_topics);
    if source_topics.is_empty() {
        source_topics = r
            .source
            .topics
            .as_ref()
            .map(|t| t.to_vec())
            .unwrap_or_default();
    }
    if source_topics.is_empty() {
        bail!("no source topics: give --source-topics (names or regexes, e.g. \"orders,payments-.*\") or restore.source.topics");
    }
    for t in &source_topics {
        TopicPattern::parse(t)?;
    }
    let mut target_topics = list(&a.target_topics);
    if target_topics.is_empty() {
        target_topics = r
            .target
            .topics
            .as_ref()
            .map(|t| t.to_vec())
            .unwrap_or_default();
    }
    let rewrite = a
        .target_topics_rewrite
        .clone()
        .or(r.target.topics_rewrite.clone())
        .unwrap_or_default();
    if !rewrite.is_empty() {
        TopicRewrite::parse(&rewrite)?;
    }
    let source_partitions = match &a.source_partitions {
        Some(s) => parse_partition_list("--source-partitions", s)?,
        None => r
            .source
            .partitions
            .iter()
            .flatten()
            .map(|p| i32::try_from(*p).ok().filter(|p| *p >= 0).with_context(|| format!("invalid partition {p} in restore.source.partitions: partitions are integers >= 0")))
            .collect::<Result<_>>()?,
    };
    let mut partition_mapping = String::new();
    let mut topic_partition_mappings = std::collections::BTreeMap::new();
    match (&a.partition_mapping, &r.target.partition_mapping) {
        (Some(m), _) => partition_mapping = m.clone(),
        (None, Some(MappingConfig::All(m))) => partition_mapping = m.clone(),
        (None, Some(MappingConfig::PerTopic(map))) => topic_partition_mappings = map.clone(),
        (None, None) => {}
    }
    PartitionMapping::parse(&partition_mapping)?;
    for m in topic_partition_mappings.values() {
        PartitionMapping::parse(m)?;
    }
    let from = match (&a.from_timestamp, &r.source.from_timestamp) {
        (Some(s), _) => Some(parse_timestamp_ms("--from-timestamp", s)?),
        (None, Some(v)) => Some(yaml_timestamp("restore.source.from_timestamp", v)?),
        _ => None,
    };
    let to = match (&a.to_timestamp, &r.source.to_timestamp) {
        (Some(s), _) => Some(parse_timestamp_ms("--to-timestamp", s)?),
        (None, Some(v)) => Some(yaml_timestamp("restore.source.to_timestamp", v)?),
        _ => None,
    };
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            bail!("invalid time window: --from-timestamp ({f}) is after --to-timestamp ({t}); swap them or fix one");
        }
    }
    let bootstrap = a
        .bootstrap_servers
        .clone()
        .or_else(|| r.target.bootstrap_servers.as_ref().map(|b| b.to_vec().join(",")))
        .context("no target cluster: give --bootstrap-servers/--target-cluster or restore.target.bootstrap_servers")?;
    let strategy = a
        .consumer_group_strategy
        .clone()
        .or(r.restore_strategy.consumer_group_strategy.clone())
        .unwrap_or_else(|| "skip".into());
    let header_based = match strategy.as_str() {
        "skip" | "timestamp-based" | "manual" => false,
        "header-based" | "cluster-scan" => true,
        other => bail!("invalid --consumer-group-strategy {other:?}: use skip, header-based, timestamp-based, cluster-scan or manual"),
    };
    let add_headers = a.add_original_offset_headers
        || header_based
        || r.restore_strategy
            .add_original_offset_headers
            .unwrap_or(false);
    let offset_report = a
        .offset_report
        .clone()
        .or(r.offset_report.as_ref().map(PathBuf::from));
    let reset = resolve_reset(a, &r, &strategy, add_headers, offset_report.is_some())?;
    let interval = match (
        &a.checkpoint_interval,
        r.performance.checkpoint_interval_secs,
    ) {
        (Some(s), _) => parse_duration("--checkpoint-interval", s)?,
        (None, Some(secs)) if secs > 0 => Duration::from_secs(secs),
        (None, Some(_)) => bail!("restore.performance.checkpoint_interval_secs must be > 0"),
        (None, None) => Duration::from_secs(5),
    };
    let workers = a
        .workers
        .or(r.performance.max_concurrent_partitions)
        .unwrap_or(4);
    if workers == 0 || workers > 256 {
        bail!("invalid --workers {workers}: use 1 to 256");
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
        create_topics: a.create_topics || r.target.create_topics.unwrap_or(false),
        checkpoint_interval_ms: interval.as_millis() as u64,
        add_original_offset_headers: add_headers,
        consumer_group_strategy: strategy,
        skip_corrupt_segments: a.skip_corrupt_segments,
        max_records_per_sec: a
            .max_records_per_sec
            .or(r.performance.max_records_per_sec)
            .unwrap_or(0),
    };
    let state_dir = a
        .checkpoint_state
        .clone()
        .or(r.checkpoint_state.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("kafka-backup-state"));
    Ok(Resolved {
        spec,
        offset_report,
        reset,
        workers,
        state_dir,
    })
}

pub async fn restore(mut a: RestoreArgs, validate_only: bool) -> Result<ExitCode> {
    if validate_only {
        a.dry_run = true;
    }
    let resolved = resolve(&a)?;
    let dry_run = a.dry_run
        || a.config
            .as_ref()
            .and_then(|p| config::load(p).ok())
            .and_then(|f| f.restore)
            .and_then(|r| r.restore_strategy.dry_run)
            .unwrap_or(false);
    let lease_ttl = a
        .lease_ttl
        .as_deref()
        .map(|s| parse_duration("--lease-ttl", s))
        .transpose()?;
    match &a.coordinator {
        Some(url) => embedded::submit_remote(url, resolved, dry_run, &a).await,
        None => embedded::run_embedded(resolved, dry_run, &a, lease_ttl).await,
    }
}

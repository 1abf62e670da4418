//! `backup`, `list-backups`, `describe` and `show-manifest`.

use crate::cli_output::{print_json, Format};
use anyhow::{bail, Context, Result};
use clap::Args;
use kafka_backup_common::backup::{run_backup, BackupRequest};
use kafka_backup_common::config;
use kafka_backup_common::filters::split_list;
use kafka_backup_common::storage::BackupStore;
use kafka_backup_common::timestamp::format_ms;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone)]
pub struct StorageArgs {
    /// Backup location: a path, file://, s3://bucket/prefix, gs://, az://.
    #[arg(long, env = "KAFKA_BACKUP_STORAGE")]
    pub storage: Option<String>,
    /// YAML config file (storage.url and storage.options are read from it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Args, Clone)]
pub struct BackupRefArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[arg(long)]
    pub backup_id: String,
}

#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Source cluster bootstrap servers.
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Topic names or regular expressions, comma separated.
    #[arg(long)]
    pub topics: Option<String>,
    /// Consumer groups whose offsets to snapshot (default: all groups the cluster lists).
    #[arg(long)]
    pub consumer_groups: Option<String>,
    /// Close a segment after this many uncompressed bytes.
    #[arg(long, allow_hyphen_values = true)]
    pub segment_max_bytes: Option<u64>,
    /// Close a segment after this many records.
    #[arg(long, allow_hyphen_values = true)]
    pub segment_max_records: Option<u64>,
    /// zstd level (1-22).
    #[arg(long, allow_hyphen_values = true)]
    pub zstd_level: Option<i32>,
    /// Store a segment uncompressed when compressing a sample of it saves less than this
    /// percent (default 12.5, as ZFS: already compressed or encrypted values cost zstd CPU
    /// for nothing); 0 compresses every segment, 100 none.
    #[arg(long, allow_hyphen_values = true)]
    pub min_compression_savings: Option<f64>,
    /// Uncompressed bytes between seek-index entries: each starts a new zstd frame, so a
    /// restore that starts mid-segment decompresses at most this much before its first record.
    #[arg(long, allow_hyphen_values = true)]
    pub index_interval_bytes: Option<u64>,
    /// Most bytes of records held in memory in segments not yet full, over all partitions
    /// (default 134217728); when reached, the fullest segment is closed early. A backup of
    /// many partitions cuts smaller segments rather than holding each partition's in memory.
    #[arg(long, allow_hyphen_values = true)]
    pub max_buffered_bytes: Option<u64>,
    /// How long the source broker may hold a fetch waiting for more data (ms; default 10).
    #[arg(long, allow_hyphen_values = true)]
    pub fetch_wait_max_ms: Option<u32>,
    /// Most bytes one fetch returns per partition (default 8388608).
    #[arg(long, allow_hyphen_values = true)]
    pub max_partition_fetch_bytes: Option<u32>,
    /// Consumers the partitions are split between, each with its own connection to every
    /// broker, so that several fetches are in flight at once (default 2; 1..=16).
    #[arg(long, allow_hyphen_values = true)]
    pub fetch_connections: Option<u32>,
}

/// Opens the store named by flag, env or config file.
pub fn open_store(args: &StorageArgs, create: bool) -> Result<BackupStore> {
    let file = match &args.config {
        Some(p) => config::load(p)?,
        None => Default::default(),
    };
    let section = file.storage.unwrap_or_default();
    let url = args.storage.clone().or(section.url).context(
        "no storage location: give --storage, KAFKA_BACKUP_STORAGE or storage.url in --config",
    )?;
    Ok(BackupStore::open(&url, &section.options, create)?)
}

pub async fn backup(a: BackupArgs) -> Result<ExitCode> {
    let file = match &a.storage.config {
        Some(p) => config::load(p)?,
        None => Default::default(),
    };
    let b = file.backup.unwrap_or_default();
    let backup_id = a
        .backup_id
        .or(b.backup_id)
        .context("--backup-id is required")?;
    let bootstrap = a
        .bootstrap_servers
        .or_else(|| b.bootstrap_servers.map(|s| s.to_vec().join(",")))
        .context("--bootstrap-servers is required")?;
    let topics = a
        .topics
        .map(|t| split_list(&t))
        .or_else(|| b.topics.map(|t| t.to_vec()))
        .unwrap_or_default();
    if topics.is_empty() {
        bail!("--topics is required: topic names or regular expressions, comma separated");
    }
    let zstd_level = a.zstd_level.or(b.zstd_level).unwrap_or(3);
    if !(1..=22).contains(&zstd_level) {
        bail!("invalid --zstd-level {zstd_level}: use 1 to 22");
    }
    let segment_max_bytes = a
        .segment_max_bytes
        .or(b.segment_max_bytes)
        .unwrap_or(16 << 20);
    let segment_max_records = a
        .segment_max_records
        .or(b.segment_max_records)
        .unwrap_or(1_000_000);
    if segment_max_bytes == 0 || segment_max_records == 0 {
        bail!("invalid --segment-max-bytes/--segment-max-records: segment limits must be > 0");
    }
    let frame_bytes = a
        .index_interval_bytes
        .or(b.index_interval_bytes)
        .unwrap_or(kafka_backup_common::frames::DEFAULT_FRAME_BYTES);
    if frame_bytes == 0 {
        bail!("invalid --index-interval-bytes 0: use a positive number of bytes (default 4194304)");
    }
    let req = BackupRequest {
        backup_id,
        bootstrap_servers: bootstrap,
        kafka_properties: b.security.to_properties(),
        topics,
        consumer_groups: a
            .consumer_groups
            .map(|g| split_list(&g))
            .or_else(|| b.consumer_groups.map(|g| g.to_vec()))
            .unwrap_or_default(),
        segment_max_bytes,
        segment_max_records,
        zstd_level,
        min_compression_savings: a
            .min_compression_savings
            .or(b.min_compression_savings)
            .unwrap_or(kafka_backup_common::compress_probe::DEFAULT_MIN_SAVINGS_PERCENT),
        frame_bytes,
        max_buffered_bytes: a
            .max_buffered_bytes
            .or(b.max_buffered_bytes)
            .unwrap_or(kafka_backup_common::backup::DEFAULT_MAX_BUFFERED_BYTES),
        fetch: kafka_backup_common::backup::FetchSettings {
            wait_max_ms: a
                .fetch_wait_max_ms
                .or(b.fetch.wait_max_ms)
                .unwrap_or(kafka_backup_common::backup::DEFAULT_FETCH_WAIT_MAX_MS),
            max_partition_bytes: a
                .max_partition_fetch_bytes
                .or(b.fetch.max_partition_bytes)
                .unwrap_or(kafka_backup_common::backup::DEFAULT_MAX_PARTITION_FETCH_BYTES),
            connections: a
                .fetch_connections
                .or(b.fetch.connections)
                .unwrap_or(kafka_backup_common::backup::DEFAULT_FETCH_CONNECTIONS),
        },
    };
    req.validate()?;
    let store = open_store(&a.storage, true)?;
    let manifest = run_backup(&store, &req).await?;
    match a.storage.format {
        Format::Json => print_json(&manifest)?,
        Format::Table => {
            let segments = manifest.segments().count();
            outln!(
                "backup {} complete: {} topics, {} segments, {} records, {} group offsets",
                manifest.backup_id,
                manifest.topics.len(),
                segments,
                manifest.total_records(),
                manifest.consumer_group_offsets.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list_backups(a: StorageArgs) -> Result<ExitCode> {
    let store = open_store(&a, false)?;
    let ids = store.list_backup_ids().await?;
    let mut rows = Vec::new();
    for id in &ids.complete {
        let m = store.read_manifest(id).await?;
        rows.push(serde_json::json!({
            "backup_id": id,
            "created_at": m.created_at,
            "topics": m.topics.len(),
            "records": m.total_records(),
        }));
    }
    match a.format {
        Format::Json => print_json(&rows)?,
        Format::Table => {
            outln!(
                "{:<40} {:<27} {:>7} {:>12}",
                "BACKUP ID",
                "CREATED",
                "TOPICS",
                "RECORDS"
            );
            for r in &rows {
                outln!(
                    "{:<40} {:<27} {:>7} {:>12}",
                    r["backup_id"].as_str().unwrap_or_default(),
                    format_ms(r["created_at"].as_i64().unwrap_or_default()),
                    r["topics"].to_string(),
                    r["records"].to_string()
                );
            }
            if rows.is_empty() {
                outln!("(no backups in {})", store.location());
            }
        }
    }
    // Not a row of the list (a restore cannot use them), but named where an operator looks.
    if !ids.incomplete.is_empty() {
        eprintln!(
            "without a manifest (a backup still running, or one that stopped before it finished; a restore cannot use them): {}. Once no backup is running with that id, rerun it (a finished rerun removes what it does not write again) or delete its prefix.",
            ids.incomplete.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn describe(a: BackupRefArgs) -> Result<ExitCode> {
    let store = open_store(&a.storage, false)?;
    let m = store.read_manifest(&a.backup_id).await?;
    let mut topics = Vec::new();
    for t in &m.topics {
        let mut parts = Vec::new();
        for p in &t.partitions {
            let records: u64 = p.segments.iter().map(|s| s.record_count).sum();
            let bytes: u64 = p.segments.iter().map(|s| s.compressed_size).sum();
            let min_ts = p.segments.iter().filter_map(|s| s.min_timestamp).min();
            let max_ts = p.segments.iter().filter_map(|s| s.max_timestamp).max();
            parts.push(serde_json::json!({
                "partition": p.partition_id,
                "segments": p.segments.len(),
                "records": records,
                "bytes": bytes,
                "first_offset": p.segments.first().map(|s| s.start_offset),
                "last_offset": p.segments.last().map(|s| s.end_offset),
                "min_timestamp": min_ts,
                "max_timestamp": max_ts,
            }));
        }
        topics.push(serde_json::json!({"topic": t.name, "partition_count": t.partition_count(), "partitions": parts}));
    }
    let groups: HashMap<&str, usize> =
        m.consumer_group_offsets
            .iter()
            .fold(HashMap::new(), |mut acc, g| {
                *acc.entry(g.group.as_str()).or_default() += 1;
                acc
            });
    let summary = serde_json::json!({
        "backup_id": m.backup_id,
        "created_at": m.created_at,
        "records": m.total_records(),
        "topics": topics,
        "consumer_groups": groups,
    });
    match a.storage.format {
        Format::Json => print_json(&summary)?,
        Format::Table => {
            outln!(
                "Backup {} (created {})",
                m.backup_id,
                format_ms(m.created_at)
            );
            outln!(
                "{:<30} {:>5} {:>8} {:>12} {:>12} {:>12}  TIME RANGE",
                "TOPIC",
                "PART",
                "SEGMENTS",
                "RECORDS",
                "FIRST OFF",
                "LAST OFF"
            );
            for t in &topics {
                for p in t["partitions"].as_array().into_iter().flatten() {
                    let range = match (p["min_timestamp"].as_i64(), p["max_timestamp"].as_i64()) {
                        (Some(a), Some(b)) => format!("{} .. {}", format_ms(a), format_ms(b)),
                        _ => "-".into(),
                    };
                    // An empty partition has no first or last offset: "-" as in TIME RANGE.
                    let cell = |k: &str| match &p[k] {
                        serde_json::Value::Null => "-".to_string(),
                        v => v.to_string(),
                    };
                    outln!(
                        "{:<30} {:>5} {:>8} {:>12} {:>12} {:>12}  {}",
                        t["topic"].as_str().unwrap_or_default(),
                        cell("partition"),
                        cell("segments"),
                        cell("records"),
                        cell("first_offset"),
                        cell("last_offset"),
                        range
                    );
                }
            }
            for (g, n) in &groups {
                outln!("consumer group {g}: {n} committed partition offsets");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show_manifest(a: BackupRefArgs) -> Result<ExitCode> {
    let store = open_store(&a.storage, false)?;
    let m = store.read_manifest(&a.backup_id).await?;
    match a.storage.format {
        Format::Json => print_json(&m)?,
        Format::Table => {
            outln!(
                "backup_id: {}\ncreated_at: {} ({})",
                m.backup_id,
                m.created_at,
                format_ms(m.created_at)
            );
            outln!(
                "{:<70} {:>12} {:>12} {:>9} {:>10}",
                "SEGMENT KEY",
                "START",
                "END",
                "RECORDS",
                "BYTES"
            );
            for s in m.segments() {
                outln!(
                    "{:<70} {:>12} {:>12} {:>9} {:>10}",
                    s.key,
                    s.start_offset,
                    s.end_offset,
                    s.record_count,
                    s.compressed_size
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

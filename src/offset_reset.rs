//! `--reset-consumer-offsets`: the only code that ever writes a consumer-group offset (PRD
//! §8.4). It runs only with explicit consent, only for the groups named with
//! `--consumer-group`, never for a group with active members (checked before the restore
//! and again right before the commit), and reads the commit back to prove it landed.
//!
//! Where the new offset comes from is the strategy:
//! - `exact` (default): the offset runs workers took from delivery reports; exact across
//!   source gaps, deleted heads and time windows.
//! - `header-based`: the first record of the restored range whose `x-original-offset`
//!   header is at or after the committed offset; exact, needs the headers.
//! - `cluster-scan`: the same search over the whole target partition, for data restored by
//!   any tool that wrote the headers.
//! - `timestamp-based`: ListOffsets by the timestamp of the source record the group would
//!   read next. Never after the exact record; records sharing that timestamp (or, with
//!   out-of-order timestamps, any record from the returned offset on) may be read again.

use anyhow::{bail, Context, Result};
use kafka_backup_common::groups::{self, GroupDescription, PartitionOffset};
use kafka_backup_common::manifest_index::{ManifestIndex as Manifest, Sieve};
use kafka_backup_common::segment::DecodedSegment;
use kafka_backup_common::storage::BackupStore;
use kafka_backup_proto::{GroupOffsetTranslation, OffsetMapping, RestoreSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a header scan of one partition may take before the reset gives up.
const SCAN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetStrategy {
    Exact,
    HeaderBased,
    ClusterScan,
    TimestampBased,
}

impl ResetStrategy {
    pub fn parse(what: &str, s: &str) -> Result<Self> {
        Ok(match s {
            "exact" => Self::Exact,
            "header-based" => Self::HeaderBased,
            "cluster-scan" => Self::ClusterScan,
            "timestamp-based" => Self::TimestampBased,
            other => bail!("invalid {what} {other:?}: use exact (default), header-based, cluster-scan or timestamp-based"),
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
}

/// The operator's consent and what it covers.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    pub groups: Vec<String>,
    pub strategy: ResetStrategy,
}

/// One partition offset of one group, planned or written.
#[derive(Debug, Clone)]
pub struct GroupReset {
    pub group: String,
    pub source: String,
    pub source_offset: i64,
    pub target_topic: String,
    pub target_partition: i32,
    /// -1 while unknown (dry run before the restore ran).
    pub target_offset: i64,
}

/// The plan's backup location and manifest, read once per reset.
pub async fn open_backup(spec: &RestoreSpec) -> Result<(BackupStore, Manifest)> {
    let options: HashMap<String, String> = spec.storage_options.clone().into_iter().collect();
    let store = BackupStore::open(&spec.storage_url, &options, false)?;
    // Streamed: memory grows with the segments kept, not with the manifest's text.
    let manifest = store
        .read_manifest_index(&spec.backup_id, Sieve::default())
        .await?;
    Ok((store, manifest))
}

/// Refuses groups that are active on the target or have nothing committed in the backup,
/// before anything is written.
pub async fn preflight(spec: &RestoreSpec, req: &ResetRequest) -> Result<()> {
    let (_, manifest) = open_backup(spec).await?;
    let patterns = spec
        .source_topics
        .iter()
        .map(|t| kafka_backup_common::filters::TopicPattern::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    for g in &req.groups {
        let has = manifest
            .consumer_group_offsets
            .iter()
            .any(|o| &o.group == g && patterns.iter().any(|p| p.matches(&o.topic)));
        if !has {
            let mut known: Vec<&str> = manifest
                .consumer_group_offsets
                .iter()
                .map(|o| o.group.as_str())
                .collect();
            known.dedup();
            bail!(
                "consumer group {g:?} has no committed offsets for the restored topics in backup {}; groups with offsets in it: {}. Back up with --consumer-groups {g}, or drop --consumer-group {g}",
                spec.backup_id,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            );
        }
    }
    refuse_active(spec, &req.groups).await
}

async fn refuse_active(spec: &RestoreSpec, groups: &[String]) -> Result<()> {
    let (bootstrap, props, names) = (
        spec.bootstrap_servers.clone(),
        spec.kafka_properties.clone(),
        groups.to_vec(),
    );
    let described: Vec<GroupDescription> =
        tokio::task::spawn_blocking(move || groups::describe(&bootstrap, &props, &names, TIMEOUT))
            .await??;
    for d in described {
        if !d.is_inactive() {
            bail!(
                "consumer group {:?} on {} is active (state {}, {} member(s) listed): its consumers would overwrite or race the reset. Stop them, wait until the group is Empty, then rerun; no offset was written",
                d.group,
                spec.bootstrap_servers,
                d.state,
                d.members
            );
        }
    }
    Ok(())
}

/// The offsets each named group gets, from a finished restore's mapping. `target_offset`
/// is -1 where the mapping does not know it yet.
pub async fn compute(
    spec: &RestoreSpec,
    mapping: &OffsetMapping,
    req: &ResetRequest,
) -> Result<Vec<GroupReset>> {
    // Only the timestamp strategy reads the backup (the source record's timestamp).
    let backup = match req.strategy {
        ResetStrategy::TimestampBased => Some(open_backup(spec).await?),
        _ => None,
    };
    let mut out = Vec::new();
    for g in mapping
        .groups
        .iter()
        .filter(|g| req.groups.contains(&g.group))
    {
        let restored = mapping
            .partitions
            .iter()
            .find(|p| p.source_topic == g.source_topic && p.source_partition == g.source_partition);
        let target_offset = match (req.strategy, restored) {
            (ResetStrategy::Exact, _) => g.target_offset,
            (_, None) => -1,
            (ResetStrategy::HeaderBased, Some(p)) => {
                let start = p.runs.iter().map(|r| r.target_start).min();
                let end = p
                    .runs
                    .iter()
                    .map(|r| r.target_start + r.length as i64)
                    .max();
                match (start, end) {
                    (Some(s), Some(e)) => {
                        scan_headers(
                            spec,
                            &g.target_topic,
                            g.target_partition,
                            Some((s, e)),
                            g.source_offset,
                        )
                        .await?
                    }
                    _ => p.target_next_offset,
                }
            }
            (ResetStrategy::ClusterScan, Some(_)) => {
                scan_headers(
                    spec,
                    &g.target_topic,
                    g.target_partition,
                    None,
                    g.source_offset,
                )
                .await?
            }
            (ResetStrategy::TimestampBased, Some(_)) => match &backup {
                Some((store, manifest)) => by_timestamp(spec, store, manifest, g).await?,
                None => -1,
            },
        };
        out.push(GroupReset {
            group: g.group.clone(),
            source: format!("{}/{}", g.source_topic, g.source_partition),
            source_offset: g.source_offset,
            target_topic: g.target_topic.clone(),
            target_partition: g.target_partition,
            target_offset,
        });
    }
    Ok(out)
}

fn consumer(spec: &RestoreSpec) -> Result<BaseConsumer> {
    Ok(
        kafka_backup_common::kafka::client_config(&spec.bootstrap_servers, &spec.kafka_properties)
            .set("group.id", "kafka-backup-offset-reset")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()?,
    )
}

/// First offset in `range` (whole partition when `None`) whose x-original-offset header is
/// at or after `committed`; the end of the range when none is.
async fn scan_headers(
    spec: &RestoreSpec,
    topic: &str,
    partition: i32,
    range: Option<(i64, i64)>,
    committed: i64,
) -> Result<i64> {
    let c = consumer(spec)?;
    let (topic, label) = (topic.to_string(), format!("{topic}/{partition}"));
    tokio::task::spawn_blocking(move || -> Result<i64> {
        let (start, end) = match range {
            Some(r) => r,
            None => c
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .with_context(|| format!("cannot read the watermarks of {label}"))?,
        };
        if start >= end {
            return Ok(end);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(start))?;
        c.assign(&tpl)?;
        let began = Instant::now();
        while began.elapsed() < SCAN_LIMIT {
            let Some(msg) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let msg = msg.with_context(|| format!("reading {label} for x-original-offset headers failed"))?;
            if msg.offset() >= end {
                return Ok(end);
            }
            let original = msg.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "x-original-offset")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| v.parse::<i64>().ok())
            });
            match original {
                Some(original) if original >= committed => return Ok(msg.offset()),
                Some(_) => {}
                // Over a whole partition other data is expected; inside the restored range
                // every record carries the header.
                None if range.is_none() => {}
                None => bail!("record {} of {label} has no readable x-original-offset header: restore with --add-original-offset-headers, or use --offset-strategy exact", msg.offset()),
            }
            if msg.offset() + 1 >= end {
                return Ok(end);
            }
        }
        bail!("scanning {label} for x-original-offset headers took longer than {SCAN_LIMIT:?}; use --offset-strategy exact")
    })
    .await?
}

/// Timestamp of the backed-up record at or after `committed`, then the target's first
/// offset at or after that timestamp; the target's end when there is none.
async fn by_timestamp(
    spec: &RestoreSpec,
    store: &BackupStore,
    manifest: &Manifest,
    g: &GroupOffsetTranslation,
) -> Result<i64> {
    let (source_topic, source_partition, committed) =
        (&g.source_topic, g.source_partition, g.source_offset);
    let (target_topic, target_partition) = (g.target_topic.as_str(), g.target_partition);
    let segments = manifest
        .topic(source_topic)
        .and_then(|t| {
            t.partitions
                .iter()
                .find(|p| p.partition_id == source_partition)
        })
        .map(|p| p.segments.as_slice())
        .unwrap_or_default();
    let mut ts = None;
    for seg in segments.iter().filter(|s| s.end_offset >= committed) {
        let bytes = store.get(&seg.key).await?;
        let decoded = DecodedSegment::decode(&seg.key, &bytes)?;
        for rec in decoded.records() {
            let rec = rec?;
            if rec.offset >= committed {
                ts = Some(rec.timestamp);
                break;
            }
        }
        if ts.is_some() {
            break;
        }
    }
    let c = consumer(spec)?;
    let (topic, label) = (
        target_topic.to_string(),
        format!("{target_topic}/{target_partition}"),
    );
    tokio::task::spawn_blocking(move || -> Result<i64> {
        let (_, high) = c
            .fetch_watermarks(&topic, target_partition, TIMEOUT)
            .with_context(|| format!("cannot read the watermarks of {label}"))?;
        let Some(ts) = ts else { return Ok(high) };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, target_partition, Offset::Offset(ts))?;
        let found = c
            .offsets_for_times(tpl, TIMEOUT)
            .with_context(|| format!("timestamp lookup on {label} failed"))?;
        Ok(found
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            })
            .unwrap_or(high))
    })
    .await?
}

/// Writes the planned offsets, group by group, after checking once more that no group has
/// become active, and reads each commit back.
pub async fn apply(spec: &RestoreSpec, resets: &[GroupReset]) -> Result<()> {
    if let Some(r) = resets.iter().find(|r| r.target_offset < 0) {
        bail!(
            "the target offset of group {:?} on {} is not known (its partition did not finish restoring); no offset was written",
            r.group, r.source
        );
    }
    let mut by_group: BTreeMap<&str, Vec<PartitionOffset>> = BTreeMap::new();
    for r in resets {
        by_group.entry(&r.group).or_default().push(PartitionOffset {
            topic: r.target_topic.clone(),
            partition: r.target_partition,
            offset: r.target_offset,
        });
    }
    let names: Vec<String> = by_group.keys().map(|g| g.to_string()).collect();
    refuse_active(spec, &names).await?;
    for (group, offsets) in by_group {
        let (bootstrap, props, group, offsets) = (
            spec.bootstrap_servers.clone(),
            spec.kafka_properties.clone(),
            group.to_string(),
            offsets,
        );
        tokio::task::spawn_blocking(move || -> Result<()> {
            groups::commit_offsets(&bootstrap, &props, &group, &offsets)?;
            let parts: Vec<(String, i32)> =
                offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
            let read = groups::committed_offsets(&bootstrap, &props, &group, &parts, TIMEOUT)?;
            for want in &offsets {
                let got = read
                    .iter()
                    .find(|r| r.topic == want.topic && r.partition == want.partition)
                    .map_or(-1, |r| r.offset);
                if got != want.offset {
                    bail!(
                        "the broker did not keep the reset of group {group:?} on {}/{}: committed {got}, expected {}",
                        want.topic, want.partition, want.offset
                    );
                }
            }
            Ok(())
        })
        .await??;
    }
    Ok(())
}

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
    println!(
        "\nConsumer offsets ({} strategy): {}",
        strategy.name(),
        if written {
            "written"
        } else {
            "dry run, nothing written"
        }
    );
    println!(
        "{:<24} {:<32} {:>12} {:<32} {:>12}",
        "GROUP", "SOURCE", "COMMITTED", "TARGET", "NEW OFFSET"
    );
    for r in resets {
        let target = format!("{}/{}", r.target_topic, r.target_partition);
        let new = if r.target_offset < 0 {
            "after restore".to_string()
        } else {
            r.target_offset.to_string()
        };
        println!(
            "{:<24} {:<32} {:>12} {:<32} {:>12}",
            r.group, r.source, r.source_offset, target, new
        );
    }
}

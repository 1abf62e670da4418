//! Resetting consumer-group offsets after a restore: the only code that ever writes a
//! consumer-group offset. It runs only with the operator's explicit consent, only for the groups named with
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

use kafka_backup_common::filters::{FilterError, TopicPattern};
use kafka_backup_common::groups::{self, GroupDescription, GroupError, PartitionOffset};
use kafka_backup_common::manifest_index::{ManifestIndex as Manifest, Sieve};
use kafka_backup_common::restore_options::{ResetRequest, ResetStrategy};
use kafka_backup_common::segment::{DecodedSegment, SegmentError};
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::{GroupOffsetTranslation, OffsetMapping, OffsetRun, RestoreSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ResetError {
    /// A reason not to write (nothing committed, an active group, an offset not known yet,
    /// a commit the broker did not keep), in words that name the group and the fix.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error(transparent)]
    Groups(#[from] GroupError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("{what} {partition} failed: {source}")]
    Kafka {
        what: &'static str,
        partition: String,
        #[source]
        source: KafkaError,
    },
    #[error("the offset reset's worker thread failed: {0}")]
    Thread(String),
}

type Result<T> = std::result::Result<T, ResetError>;

fn refused<T>(msg: String) -> Result<T> {
    Err(ResetError::Refused(msg))
}

fn kafka<'a>(what: &'static str, partition: &'a str) -> impl Fn(KafkaError) -> ResetError + 'a {
    move |source| ResetError::Kafka {
        what,
        partition: partition.to_string(),
        source,
    }
}

/// Runs blocking client work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ResetError::Thread(e.to_string()))?
}

const TIMEOUT: Duration = Duration::from_secs(15);
/// Longest a header scan of one partition may take before the reset gives up.
const SCAN_LIMIT: Duration = Duration::from_secs(300);

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
    let store = crate::spec_store(spec)?;
    // Streamed: memory grows with the segments kept, not with the manifest's text.
    let manifest = store
        .read_manifest_index(&spec.backup_id, Sieve::default())
        .await?;
    Ok((store, manifest))
}

/// Refuses groups that are active on the target or have nothing committed in the backup,
/// before anything is written.
pub async fn preflight(spec: &RestoreSpec, req: &ResetRequest) -> Result<()> {
    let store = crate::spec_store(spec)?;
    let manifest = store
        .read_manifest_index(&spec.backup_id, Sieve::no_segments())
        .await?;
    let patterns = spec
        .source_topics
        .iter()
        .map(|t| TopicPattern::parse(t))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    check_committed(&manifest, &spec.backup_id, &patterns, &req.groups)?;
    refuse_active(spec, &req.groups).await
}

/// Refuses a group the backup holds no committed offsets of for the restored topics.
fn check_committed(
    manifest: &Manifest,
    backup_id: &str,
    patterns: &[TopicPattern],
    groups: &[String],
) -> Result<()> {
    for g in groups {
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
            return refused(format!(
                "consumer group {g:?} has no committed offsets for the restored topics in backup {backup_id}; groups with offsets in it: {}. Back up with --consumer-groups {g}, or drop --consumer-group {g}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        }
    }
    Ok(())
}

async fn refuse_active(spec: &RestoreSpec, groups: &[String]) -> Result<()> {
    let (bootstrap, props, names) = (
        spec.bootstrap_servers.clone(),
        spec.kafka_properties.clone(),
        groups.to_vec(),
    );
    let described: Vec<GroupDescription> =
        blocking(move || Ok(groups::describe(&bootstrap, &props, &names, TIMEOUT)?)).await?;
    for d in described {
        if !d.is_inactive() {
            return refused(format!(
                "consumer group {:?} on {} is active (state {}, {} member(s) listed): its consumers would overwrite or race the reset. Stop them, wait until the group is Empty, then rerun; no offset was written",
                d.group,
                spec.bootstrap_servers,
                d.state,
                d.members
            ));
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
    let merged = |topic: &str, partition: i32| {
        mapping
            .partitions
            .iter()
            .filter(|p| p.target_topic == topic && p.target_partition == partition)
            .count()
            > 1
    };
    let mut out = Vec::new();
    for g in mapping
        .groups
        .iter()
        .filter(|g| req.groups.contains(&g.group))
    {
        if req.strategy != ResetStrategy::Exact && merged(&g.target_topic, g.target_partition) {
            return refused(format!(
                "{}/{} holds several merged source partitions: the {} strategy cannot tell their records apart; use --offset-strategy exact",
                g.target_topic,
                g.target_partition,
                req.strategy.name()
            ));
        }
        let restored = mapping
            .partitions
            .iter()
            .find(|p| p.source_topic == g.source_topic && p.source_partition == g.source_partition);
        let target_offset = match (req.strategy, restored) {
            (ResetStrategy::Exact, _) => g.target_offset,
            (_, None) => -1,
            (ResetStrategy::HeaderBased, Some(p)) => match restored_range(&p.runs) {
                Some((s, e)) => {
                    scan_headers(
                        spec,
                        &g.target_topic,
                        g.target_partition,
                        Some((s, e)),
                        g.source_offset,
                    )
                    .await?
                }
                None => p.target_next_offset,
            },
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
    out.extend(uncommitted_merge_sources(mapping, &out));
    Ok(out)
}

/// For a group reset on a target partition that merges several sources, the sources the
/// group committed nothing on: each is read from its first restored record, so taking the
/// smallest offset per target partition (`commits_by_group`) skips none of their records.
fn uncommitted_merge_sources(mapping: &OffsetMapping, resets: &[GroupReset]) -> Vec<GroupReset> {
    let mut extra = Vec::new();
    for r in resets {
        let sources = mapping.partitions.iter().filter(|p| {
            p.target_topic == r.target_topic && p.target_partition == r.target_partition
        });
        for p in sources {
            let label = format!("{}/{}", p.source_topic, p.source_partition);
            let covered = resets
                .iter()
                .chain(&extra)
                .any(|o| o.group == r.group && o.source == label);
            let Some(first) = p.runs.iter().min_by_key(|run| run.source_start) else {
                continue;
            };
            if !covered {
                extra.push(GroupReset {
                    group: r.group.clone(),
                    source: label,
                    source_offset: first.source_start,
                    target_topic: r.target_topic.clone(),
                    target_partition: r.target_partition,
                    target_offset: first.target_start,
                });
            }
        }
    }
    extra
}

/// The target offsets a restore wrote for a partition, from its offset runs.
fn restored_range(runs: &[OffsetRun]) -> Option<(i64, i64)> {
    let start = runs.iter().map(|r| r.target_start).min()?;
    let end = runs
        .iter()
        .map(|r| r.target_start + r.length as i64)
        .max()?;
    Some((start, end))
}

fn consumer(spec: &RestoreSpec) -> Result<BaseConsumer> {
    kafka_backup_common::kafka::client_config(&spec.bootstrap_servers, &spec.kafka_properties)
        .set("group.id", "kafka-backup-offset-reset")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(kafka("creating a client for", &spec.bootstrap_servers))
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
    blocking(move || -> Result<i64> {
        let (start, end) = match range {
            Some(r) => r,
            None => c
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(kafka("reading the watermarks of", &label))?,
        };
        if start >= end {
            return Ok(end);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, Offset::Offset(start))
            .map_err(kafka("seeking", &label))?;
        c.assign(&tpl).map_err(kafka("assigning", &label))?;
        let began = Instant::now();
        while began.elapsed() < SCAN_LIMIT {
            let Some(msg) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let msg = msg.map_err(kafka("reading x-original-offset headers of", &label))?;
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
                None => return refused(format!("record {} of {label} has no readable x-original-offset header: restore with --add-original-offset-headers, or use --offset-strategy exact", msg.offset())),
            }
            if msg.offset() + 1 >= end {
                return Ok(end);
            }
        }
        refused(format!("scanning {label} for x-original-offset headers took longer than {SCAN_LIMIT:?}; use --offset-strategy exact"))
    })
    .await
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
        let key = seg.object_key();
        let bytes = store.get(&key).await?;
        let decoded = DecodedSegment::decode(&key, &bytes)?;
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
    blocking(move || -> Result<i64> {
        let (_, high) = c
            .fetch_watermarks(&topic, target_partition, TIMEOUT)
            .map_err(kafka("reading the watermarks of", &label))?;
        let Some(ts) = ts else { return Ok(high) };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, target_partition, Offset::Offset(ts))
            .map_err(kafka("seeking", &label))?;
        let found = c
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(kafka("looking up a timestamp on", &label))?;
        Ok(found
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            })
            .unwrap_or(high))
    })
    .await
}

/// Writes the planned offsets, group by group, after checking once more that no group has
/// become active, and reads each commit back.
/// The commits a reset makes, per group; refused when any target offset is not known.
fn commits_by_group(resets: &[GroupReset]) -> Result<BTreeMap<String, Vec<PartitionOffset>>> {
    if let Some(r) = resets.iter().find(|r| r.target_offset < 0) {
        return refused(format!(
            "the target offset of group {:?} on {} is not known (its partition did not finish restoring); no offset was written",
            r.group, r.source
        ));
    }
    // Partitions merged into one target partition each translate to a target offset; the
    // group gets the smallest, so no record of any of them is skipped (records of the other
    // sources between that offset and theirs are read again).
    let mut lowest: BTreeMap<(String, String, i32), i64> = BTreeMap::new();
    for r in resets {
        let at = lowest
            .entry((r.group.clone(), r.target_topic.clone(), r.target_partition))
            .or_insert(r.target_offset);
        *at = (*at).min(r.target_offset);
    }
    let mut by_group: BTreeMap<String, Vec<PartitionOffset>> = BTreeMap::new();
    for ((group, topic, partition), offset) in lowest {
        by_group.entry(group).or_default().push(PartitionOffset {
            topic,
            partition,
            offset,
        });
    }
    Ok(by_group)
}

/// Writes the planned offsets, group by group, after checking once more that no group has
/// become active, and reads each commit back.
pub async fn apply(spec: &RestoreSpec, resets: &[GroupReset]) -> Result<()> {
    let by_group = commits_by_group(resets)?;
    let names: Vec<String> = by_group.keys().cloned().collect();
    refuse_active(spec, &names).await?;
    for (group, offsets) in by_group {
        let (bootstrap, props) = (
            spec.bootstrap_servers.clone(),
            spec.kafka_properties.clone(),
        );
        blocking(move || -> Result<()> {
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
                    return refused(format!(
                        "the broker did not keep the reset of group {group:?} on {}/{}: committed {got}, expected {}",
                        want.topic, want.partition, want.offset
                    ));
                }
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_backup_common::manifest::GroupOffset;

    fn reset(group: &str, partition: i32, target_offset: i64) -> GroupReset {
        GroupReset {
            group: group.into(),
            source: format!("t/{partition}"),
            source_offset: 5,
            target_topic: "t2".into(),
            target_partition: partition,
            target_offset,
        }
    }

    #[test]
    fn commits_are_grouped_and_an_unknown_offset_refuses_them_all() {
        let by = commits_by_group(&[reset("b", 0, 7), reset("a", 1, 9), reset("b", 1, 3)]).unwrap();
        assert_eq!(by.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            by["b"]
                .iter()
                .map(|o| (o.partition, o.offset))
                .collect::<Vec<_>>(),
            [(0, 7), (1, 3)]
        );
        let e = commits_by_group(&[reset("a", 0, 7), reset("b", 0, -1)]).unwrap_err();
        assert!(
            e.to_string().contains("group \"b\"")
                && e.to_string().contains("no offset was written"),
            "{e}"
        );
    }

    #[test]
    fn a_group_without_committed_offsets_for_the_restored_topics_is_refused() {
        let manifest = Manifest {
            backup_id: "bk".into(),
            consumer_group_offsets: vec![
                GroupOffset {
                    group: "g1".into(),
                    topic: "orders".into(),
                    partition: 0,
                    offset: 3,
                },
                GroupOffset {
                    group: "g2".into(),
                    topic: "other".into(),
                    partition: 0,
                    offset: 3,
                },
            ],
            ..Default::default()
        };
        let orders = [TopicPattern::parse("orders").unwrap()];
        check_committed(&manifest, "bk", &orders, &["g1".into()]).unwrap();
        let e = check_committed(&manifest, "bk", &orders, &["g2".into()]).unwrap_err();
        assert!(
            e.to_string().contains("\"g2\" has no committed offsets")
                && e.to_string().contains("g1, g2"),
            "{e}"
        );
    }

    #[test]
    fn a_merged_source_without_a_commit_is_read_from_its_first_restored_record() {
        let source =
            |partition: i32, target_start: i64| kafka_backup_proto::PartitionOffsetMapping {
                source_topic: "t".into(),
                source_partition: partition,
                target_topic: "t2".into(),
                target_partition: 0,
                runs: vec![OffsetRun {
                    source_index: partition as u32,
                    source_start: 0,
                    target_start,
                    length: 10,
                }],
                ..Default::default()
            };
        let mapping = OffsetMapping {
            partitions: vec![source(0, 0), source(1, 3)],
            ..Default::default()
        };
        // The group committed on t/0 only (translated to 50); t/1's records start at 3.
        let committed = [reset("g", 0, 50)];
        let extra = uncommitted_merge_sources(&mapping, &committed);
        assert_eq!(extra.len(), 1);
        assert_eq!(
            (extra[0].source.as_str(), extra[0].target_offset),
            ("t/1", 3)
        );
        let all: Vec<GroupReset> = committed.into_iter().chain(extra).collect();
        let by = commits_by_group(&all).unwrap();
        assert_eq!(by["g"][0].offset, 3, "nothing of t/1 is skipped");
    }

    #[test]
    fn the_restored_range_spans_every_run() {
        let run = |s, t, l| OffsetRun {
            source_index: 0,
            source_start: s,
            target_start: t,
            length: l,
        };
        assert_eq!(
            restored_range(&[run(0, 10, 3), run(9, 13, 2)]),
            Some((10, 15))
        );
        assert_eq!(restored_range(&[]), None);
    }
}

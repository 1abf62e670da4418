//! The planner: manifest + selection rules → one task per target partition, each with its
//! ordered segment list and target (topic, partition): one source partition (1:1), or
//! several of one topic merged (N:1 and M:N mappings; see `TaskLease.merge_sources`). Pure and synchronous so that every
//! error in the selection (an unknown topic or partition, a bad pattern, mapping or window)
//! is raised before any connection or write, and so it can be
//! tested and benchmarked without a cluster.

use kafka_backup_common::filters::{
    validate_topic_name, FilterError, PartitionMapping, TopicPattern, TopicRewrite,
};
use kafka_backup_common::manifest_index::{ManifestIndex, SegmentSpan};
use kafka_backup_proto::RestoreSpec;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("invalid time window: from_timestamp ({from}) is after to_timestamp ({to}); swap them or fix one")]
    InvalidWindow { from: i64, to: i64 },
    #[error("source topic {pattern:?} is not in backup {backup_id}; topics in the backup: {available:?}")]
    TopicNotInBackup {
        pattern: String,
        backup_id: String,
        available: Vec<String>,
    },
    #[error("{targets} target topics given for {sources} source topics; give one target per source topic (same order) or use --target-topics-rewrite")]
    TargetCountMismatch { sources: usize, targets: usize },
    #[error("target topic {target:?} was given for source pattern {pattern:?}, which matches {matched:?}; several topics cannot be restored into one, use --target-topics-rewrite")]
    TargetForManyTopics {
        target: String,
        pattern: String,
        matched: Vec<String>,
    },
    #[error("source partition {partition} of topic {topic:?} is not in the backup (it has partitions {available:?}); fix --source-partitions or the partition mapping")]
    PartitionNotInBackup {
        topic: String,
        partition: i32,
        available: Vec<i32>,
    },
    #[error("{first} and {second} would both be restored into {target}; partitions of different source topics are not merged into one target partition, restore them into different topics")]
    ManyToOne {
        first: String,
        second: String,
        target: String,
    },
    #[error("partition_mapping is given for topic {topic:?}, which this restore does not select (selected source topics: {selected:?}); key each mapping by a selected source topic")]
    MappingForUnselectedTopic {
        topic: String,
        selected: Vec<String>,
    },
    #[error("the partition mapping of {topic:?} names source partition {partition}, which --source-partitions {wanted:?} leaves out, so it would do nothing; add {partition} to --source-partitions or drop it from the mapping")]
    MappingOutsideFilter {
        topic: String,
        partition: i32,
        wanted: Vec<i32>,
    },
    #[error("{topic}/{unmapped} is not in the partition mapping and keeps its number, but the mapping also sends {topic}/{mapped} to {target}: the two would be merged; map {unmapped} explicitly (to another partition, or to {target_partition} to merge them on purpose)")]
    ImplicitMerge {
        topic: String,
        unmapped: i32,
        mapped: i32,
        target: String,
        target_partition: i32,
    },
    #[error("{0}")]
    BadTargetName(String),
    #[error("no source topics selected: give --source-topic(s) or restore.source.topics")]
    NoTopics,
}

/// One partition task: a source partition restored, in order, into one target partition,
/// or (a merge) several source partitions of one topic merged into one target partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTask {
    pub source_topic: String,
    /// The (first) source partition.
    pub source_partition: i32,
    pub target_topic: String,
    pub target_partition: i32,
    /// A merge's segments are its sources' lists one after the other (see `merged`).
    pub segments: Vec<SegmentSpan>,
    /// Partition count of the source topic, used when creating the target.
    pub source_partition_count: i32,
    /// A merge's sources in partition order, each a range of `segments`; empty for 1:1.
    pub merged: Vec<MergedSource>,
}

/// One source partition of a merge task and where its segments are in the task's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedSource {
    pub partition: i32,
    pub segment_start: usize,
    pub segment_count: usize,
}

impl PlannedTask {
    pub fn label(&self) -> String {
        format!("{}/{}", self.source_topic, self.source_partition)
    }
}

/// Builds the tasks for a spec. Segments that cannot hold a record of the time window are
/// dropped here (a manifest read with the window's `Sieve` has dropped them already); records
/// are filtered exactly by the workers. Takes the manifest by value: its segment lists move
/// into the tasks, which matters at a million segments.
pub fn plan(
    mut manifest: ManifestIndex,
    spec: &RestoreSpec,
) -> Result<Vec<PlannedTask>, PlanError> {
    if let (Some(from), Some(to)) = (spec.from_timestamp_ms, spec.to_timestamp_ms) {
        if from > to {
            return Err(PlanError::InvalidWindow { from, to });
        }
    }
    if spec.source_topics.is_empty() {
        return Err(PlanError::NoTopics);
    }
    if !spec.target_topics.is_empty() && spec.target_topics.len() != spec.source_topics.len() {
        return Err(PlanError::TargetCountMismatch {
            sources: spec.source_topics.len(),
            targets: spec.target_topics.len(),
        });
    }
    let rewrite = match spec.target_topics_rewrite.trim() {
        "" => None,
        r => Some(TopicRewrite::parse(r)?),
    };
    let default_mapping = PartitionMapping::parse(&spec.partition_mapping)?;
    let mut topic_mappings = BTreeMap::new();
    for (topic, m) in &spec.topic_partition_mappings {
        topic_mappings.insert(topic.clone(), PartitionMapping::parse(m)?);
    }
    for p in &spec.source_partitions {
        if *p < 0 {
            return Err(FilterError::BadPartition {
                what: "source partitions".into(),
                input: p.to_string(),
            }
            .into());
        }
    }
    let available: Vec<String> = manifest.topics.iter().map(|t| t.name.clone()).collect();

    // Source topic → target topic.
    let mut selected: BTreeMap<String, String> = BTreeMap::new();
    for (i, raw) in spec.source_topics.iter().enumerate() {
        let pattern = TopicPattern::parse(raw)?;
        let matched: Vec<String> = available
            .iter()
            .filter(|t| pattern.matches(t))
            .cloned()
            .collect();
        if matched.is_empty() {
            return Err(PlanError::TopicNotInBackup {
                pattern: raw.clone(),
                backup_id: manifest.backup_id.clone(),
                available: available.clone(),
            });
        }
        let explicit = spec.target_topics.get(i).filter(|t| !t.trim().is_empty());
        if let Some(target) = explicit {
            if matched.len() > 1 {
                return Err(PlanError::TargetForManyTopics {
                    target: target.clone(),
                    pattern: raw.clone(),
                    matched,
                });
            }
        }
        for topic in matched {
            let target = match (explicit, &rewrite) {
                (Some(t), _) => t.trim().to_string(),
                (None, Some(rw)) => rw.apply(&topic),
                (None, None) => topic.clone(),
            };
            validate_topic_name(&target).map_err(PlanError::BadTargetName)?;
            selected.insert(topic, target);
        }
    }

    for topic in topic_mappings.keys() {
        if !selected.contains_key(topic) {
            return Err(PlanError::MappingForUnselectedTopic {
                topic: topic.clone(),
                selected: selected.keys().cloned().collect(),
            });
        }
    }
    let wanted: BTreeSet<i32> = spec.source_partitions.iter().copied().collect();
    // Target partition → its sources (partition and kept segments), all of one source topic.
    let mut groups: BTreeMap<(String, i32), Group> = BTreeMap::new();
    for (source, target) in &selected {
        let Some(topic) = manifest.topics.iter_mut().find(|t| &t.name == source) else {
            continue;
        };
        let source_partition_count = topic.partition_count();
        let present: Vec<i32> = topic.partitions.iter().map(|p| p.partition_id).collect();
        let mapping = topic_mappings.get(source).unwrap_or(&default_mapping);
        if let Some(p) = mapping
            .0
            .keys()
            .find(|p| !wanted.is_empty() && !wanted.contains(p))
        {
            return Err(PlanError::MappingOutsideFilter {
                topic: source.clone(),
                partition: *p,
                wanted: wanted.iter().copied().collect(),
            });
        }
        for p in wanted.iter().chain(mapping.0.keys()) {
            // Filters name partitions of every selected topic; only check what this topic lacks
            // when it is the only topic, otherwise a partition filter applies where it exists.
            if !present.contains(p) && selected.len() == 1 {
                return Err(PlanError::PartitionNotInBackup {
                    topic: source.clone(),
                    partition: *p,
                    available: present.clone(),
                });
            }
        }
        for part in &mut topic.partitions {
            if !wanted.is_empty() && !wanted.contains(&part.partition_id) {
                continue;
            }
            let target_partition = mapping.target_of(part.partition_id);
            let group = groups
                .entry((target.clone(), target_partition))
                .or_insert_with(|| Group {
                    source_topic: source.clone(),
                    source_partition_count,
                    sources: Vec::new(),
                    unmapped: None,
                });
            if &group.source_topic != source {
                return Err(PlanError::ManyToOne {
                    first: format!("{}/{}", group.source_topic, group.sources[0].0),
                    second: format!("{source}/{}", part.partition_id),
                    target: format!("{target}/{target_partition}"),
                });
            }
            let mut segments = std::mem::take(&mut part.segments);
            segments.retain(|s| s.may_overlap(spec.from_timestamp_ms, spec.to_timestamp_ms));
            segments.sort_by_key(|s| s.start_offset);
            if !mapping.0.contains_key(&part.partition_id) {
                group.unmapped = Some(part.partition_id);
            }
            group.sources.push((part.partition_id, segments));
        }
    }
    // A merge is only made when the mapping asks for it: a partial mapping (`0:2`) must not
    // quietly merge partition 0 into partition 2, which kept its number by default.
    for ((target, target_partition), g) in &groups {
        if let (Some(unmapped), true) = (g.unmapped, g.sources.len() > 1) {
            let mapped = g
                .sources
                .iter()
                .map(|(p, _)| *p)
                .find(|p| *p != unmapped)
                .unwrap_or(unmapped);
            return Err(PlanError::ImplicitMerge {
                topic: g.source_topic.clone(),
                unmapped,
                mapped,
                target: format!("{target}/{target_partition}"),
                target_partition: *target_partition,
            });
        }
    }
    let mut tasks: Vec<PlannedTask> = groups
        .into_iter()
        .map(|((target_topic, target_partition), g)| g.into_task(target_topic, target_partition))
        .collect();
    // Tasks in source order, as before merges existed (task ids follow this order).
    tasks.sort_by(|a, b| {
        (&a.source_topic, a.source_partition).cmp(&(&b.source_topic, b.source_partition))
    });
    Ok(tasks)
}

/// The sources planned into one target partition.
struct Group {
    source_topic: String,
    source_partition_count: i32,
    sources: Vec<(i32, Vec<SegmentSpan>)>,
    /// A source partition that the mapping does not name (kept its number), if any.
    unmapped: Option<i32>,
}

impl Group {
    fn into_task(mut self, target_topic: String, target_partition: i32) -> PlannedTask {
        self.sources.sort_by_key(|(p, _)| *p);
        let source_partition = self.sources[0].0;
        let mut merged = Vec::new();
        let mut segments = Vec::new();
        if self.sources.len() > 1 {
            for (partition, segs) in &mut self.sources {
                merged.push(MergedSource {
                    partition: *partition,
                    segment_start: segments.len(),
                    segment_count: segs.len(),
                });
                segments.append(segs);
            }
        } else {
            segments = std::mem::take(&mut self.sources[0].1);
        }
        PlannedTask {
            source_topic: self.source_topic,
            source_partition,
            target_topic,
            target_partition,
            segments,
            source_partition_count: self.source_partition_count,
            merged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_backup_common::manifest_index::{PartitionIndex, TopicIndex};

    fn seg(start: i64, min: i64, max: i64) -> SegmentSpan {
        SegmentSpan {
            key: format!("b/topics/t/partition=0/segment-{start:020}.bin.zst").into(),
            start_offset: start,
            end_offset: start + 9,
            record_count: 10,
            compressed_size: 50,
            bounds: Some((min, max)),
            frames: Box::default(),
        }
    }

    fn manifest() -> ManifestIndex {
        let parts = |n: i32| {
            (0..n)
                .map(|p| PartitionIndex {
                    partition_id: p,
                    segments: vec![seg(0, 100, 200), seg(10, 201, 300)],
                })
                .collect()
        };
        ManifestIndex {
            backup_id: "b".into(),
            created_at: 0,
            topics: vec![
                TopicIndex {
                    name: "orders".into(),
                    replication_factor: None,
                    configs: None,
                    original_partition_count: Some(3),
                    partitions: parts(3),
                },
                TopicIndex {
                    name: "payments".into(),
                    replication_factor: None,
                    configs: None,
                    original_partition_count: Some(2),
                    partitions: parts(2),
                },
            ],
            consumer_group_offsets: vec![],
        }
    }

    fn spec(topics: &[&str]) -> RestoreSpec {
        RestoreSpec {
            backup_id: "b".into(),
            source_topics: topics.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn regex_rewrite_and_window_pruning() {
        let mut s = spec(&[".*"]);
        s.target_topics_rewrite = "s/^/prod-/".into();
        s.from_timestamp_ms = Some(250);
        let tasks = plan(manifest(), &s).unwrap();
        assert_eq!(tasks.len(), 5);
        assert!(tasks.iter().all(|t| t.target_topic.starts_with("prod-")));
        assert!(tasks.iter().all(|t| t.segments.len() == 1));
    }

    #[test]
    fn many_to_one_is_a_merge() {
        let mut s = spec(&["orders"]);
        s.partition_mapping = "0:1,1:1,2:0".into();
        let tasks = plan(manifest(), &s).unwrap();
        assert_eq!(tasks.len(), 2);
        let merge = &tasks[0];
        assert_eq!((merge.source_partition, merge.target_partition), (0, 1));
        assert_eq!(
            merge.merged,
            vec![
                MergedSource {
                    partition: 0,
                    segment_start: 0,
                    segment_count: 2
                },
                MergedSource {
                    partition: 1,
                    segment_start: 2,
                    segment_count: 2
                },
            ]
        );
        assert_eq!(merge.segments.len(), 4);
        assert!(tasks[1].merged.is_empty(), "a 1:1 task stays one");
    }

    #[test]
    fn a_partial_mapping_never_merges_by_default() {
        let mut s = spec(&["orders"]);
        s.partition_mapping = "0:2".into();
        let err = plan(manifest(), &s).expect_err("0 would merge into unmapped 2");
        assert!(
            matches!(
                err,
                PlanError::ImplicitMerge {
                    unmapped: 2,
                    mapped: 0,
                    ..
                }
            ),
            "{err}"
        );
        // Named on purpose, the same merge is made; a partial mapping without a
        // collision (0 -> 3) stays allowed, as does one limited by the partition filter.
        s.partition_mapping = "0:2,2:2".into();
        assert_eq!(plan(manifest(), &s).expect("explicit merge").len(), 2);
        s.partition_mapping = "0:3".into();
        assert_eq!(plan(manifest(), &s).expect("no collision").len(), 3);
        s.partition_mapping = "0:2".into();
        s.source_partitions = vec![0];
        assert_eq!(plan(manifest(), &s).expect("2 filtered out").len(), 1);
    }

    #[test]
    fn a_mapping_that_would_do_nothing_is_refused() {
        let mut s = spec(&["orders"]);
        s.source_partitions = vec![0];
        s.partition_mapping = "1:1".into();
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::MappingOutsideFilter { partition: 1, .. })
        ));
        let mut s = spec(&["orders"]);
        s.topic_partition_mappings
            .insert("order".into(), "0:1,1:0".into());
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::MappingForUnselectedTopic { .. })
        ));
    }

    #[test]
    fn refusals() {
        let mut s = spec(&["orders"]);
        s.from_timestamp_ms = Some(2);
        s.to_timestamp_ms = Some(1);
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::InvalidWindow { .. })
        ));
        assert!(matches!(
            plan(manifest(), &spec(&["nope"])),
            Err(PlanError::TopicNotInBackup { .. })
        ));
        let mut s = spec(&[".*"]);
        s.target_topics = vec!["x".into()];
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::TargetForManyTopics { .. })
        ));
        let mut s = spec(&["orders", "payments"]);
        s.target_topics = vec!["same".into(), "same".into()];
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::ManyToOne { .. })
        ));
        let mut s = spec(&["orders"]);
        s.source_partitions = vec![7];
        assert!(matches!(
            plan(manifest(), &s),
            Err(PlanError::PartitionNotInBackup { .. })
        ));
    }

    #[test]
    fn mapping_and_partition_filter() {
        let mut s = spec(&["orders"]);
        s.source_partitions = vec![0, 1];
        s.partition_mapping = "0:2,1:0".into();
        let tasks = plan(manifest(), &s).unwrap();
        let pairs: Vec<_> = tasks
            .iter()
            .map(|t| (t.source_partition, t.target_partition))
            .collect();
        assert_eq!(pairs, vec![(0, 2), (1, 0)]);
    }
}

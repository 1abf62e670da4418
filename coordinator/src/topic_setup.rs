//! How a plan's target topics are set up, decided before anything is written: the topics
//! `--create-topics` creates get the source topic's recorded replication factor and
//! configurations (with the restore's overrides), and every target topic's retention is
//! checked against the timestamps of the records the plan writes into it, because a broker
//! deletes records older than `retention.ms` soon after they arrive — loss nobody sees.

use crate::planner::PlannedTask;
use crate::target::TargetCluster;
use kafka_backup_common::manifest_index::ManifestIndex;
use kafka_backup_common::topic_configs::{broker_retention_ms, retention_ms};
use kafka_backup_proto::{RestoreSpec, TopicCreation};
use std::collections::BTreeMap;

/// What the backup recorded about a source topic besides its data.
#[derive(Debug, Clone, Default)]
pub struct RecordedTopic {
    pub replication_factor: Option<i32>,
    pub configs: BTreeMap<String, String>,
}

/// The recorded settings of every topic in the manifest (empty for foreign backups).
pub fn recorded_topics(manifest: &ManifestIndex) -> BTreeMap<String, RecordedTopic> {
    manifest
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                RecordedTopic {
                    replication_factor: t.replication_factor,
                    configs: t.configs.clone().unwrap_or_default(),
                },
            )
        })
        .collect()
}

/// How each missing target topic is created: partitions as planned, replication factor from
/// the restore, else the source topic's, else the broker's default; the source topic's
/// configurations with the restore's overrides on top.
pub fn creations(
    missing: &BTreeMap<String, i32>,
    tasks: &[PlannedTask],
    recorded: &BTreeMap<String, RecordedTopic>,
    spec: &RestoreSpec,
) -> Vec<TopicCreation> {
    missing
        .iter()
        .map(|(topic, partitions)| {
            let source = tasks
                .iter()
                .find(|t| &t.target_topic == topic)
                .and_then(|t| recorded.get(&t.source_topic))
                .cloned()
                .unwrap_or_default();
            let mut configs = source.configs;
            for (k, v) in &spec.topic_configs {
                if v.is_empty() {
                    configs.remove(k);
                } else {
                    configs.insert(k.clone(), v.clone());
                }
            }
            let replication_factor = match spec.replication_factor {
                n if n > 0 => n,
                _ => source.replication_factor.unwrap_or(-1),
            };
            // A min.insync.replicas above the replication factor would refuse every write.
            if replication_factor > 0 {
                let too_high = configs
                    .get("min.insync.replicas")
                    .and_then(|v| v.trim().parse::<i32>().ok())
                    .is_some_and(|m| m > replication_factor);
                if too_high {
                    configs.insert(
                        "min.insync.replicas".to_string(),
                        replication_factor.to_string(),
                    );
                }
            }
            TopicCreation {
                topic: topic.clone(),
                partitions: *partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            }
        })
        .collect()
}

/// Records younger than this are not warned about when the target's retention is unknown.
const UNKNOWN_RETENTION_WARN_AGE_MS: i64 = 86_400_000;

/// A target topic whose retention would delete restored records.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionRisk {
    pub topic: String,
    pub retention_ms: i64,
    pub oldest_ms: i64,
    pub created: bool,
}

impl RetentionRisk {
    /// What the operator is told: the setting, what it deletes, and how to avoid it.
    pub fn message(&self) -> String {
        let fix = if self.created {
            "pass --topic-config retention.ms=-1 (or a retention longer than the records' age)"
        } else {
            "raise the topic's retention.ms first (e.g. kafka-configs --alter --add-config retention.ms=-1)"
        };
        format!(
            "target topic {} has retention.ms={} ({}): restored records older than that, from {} on, would be deleted by the broker soon after the restore; {fix}, or pass --allow-retention-deletes to restore anyway",
            self.topic,
            self.retention_ms,
            human(self.retention_ms),
            kafka_backup_common::timestamp::format_ms(self.oldest_ms),
        )
    }
}

fn human(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    if ms >= DAY && ms % DAY == 0 {
        format!("{} days", ms / DAY)
    } else if ms >= HOUR && ms % HOUR == 0 {
        format!("{} hours", ms / HOUR)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// The target topics whose retention (as the cluster reports it, or as they will be created)
/// would delete some of the records the plan writes, given the oldest timestamp written into
/// each (`oldest`) and the time now. A retention the cluster does not report is not guessed:
/// such topics are listed in `unknown` for a warning instead.
pub async fn retention_risks(
    target: &TargetCluster,
    creations: &[TopicCreation],
    oldest: &BTreeMap<String, i64>,
    now_ms: i64,
) -> (Vec<RetentionRisk>, Vec<String>) {
    let created: BTreeMap<&str, &TopicCreation> =
        creations.iter().map(|c| (c.topic.as_str(), c)).collect();
    let existing: Vec<String> = oldest
        .keys()
        .filter(|t| !created.contains_key(t.as_str()))
        .cloned()
        .collect();
    // Both asked at once: the broker's default is needed whenever a topic does not set its
    // own retention, and one round trip instead of two keeps the dry run fast.
    let (described, broker) =
        tokio::join!(target.topic_configs(&existing), target.broker_configs());
    let described = described.unwrap_or_default();
    let broker_default = broker.and_then(|b| broker_retention_ms(&b));
    let (mut risks, mut unknown) = (Vec::new(), Vec::new());
    for (topic, oldest_ms) in oldest {
        // A retention that cannot be read is worth a warning only for records old enough
        // for a plausible retention to reach: fresh records (a clone, a test) would only
        // make every dry run noisy.
        let worth_asking = *oldest_ms < now_ms.saturating_sub(UNKNOWN_RETENTION_WARN_AGE_MS);
        let configs: BTreeMap<String, String> = match created.get(topic.as_str()) {
            Some(c) => c.configs.clone().into_iter().collect(),
            None => match described.get(topic) {
                Some(c) => c.clone(),
                None => {
                    if worth_asking {
                        unknown.push(topic.clone());
                    }
                    continue;
                }
            },
        };
        let retention = match retention_ms(&configs) {
            None => continue,
            Some(Some(ms)) => ms,
            Some(None) => match broker_default {
                Some(ms) if ms >= 0 => ms,
                Some(_) => continue,
                None => {
                    if worth_asking {
                        unknown.push(topic.clone());
                    }
                    continue;
                }
            },
        };
        if *oldest_ms < now_ms.saturating_sub(retention) {
            risks.push(RetentionRisk {
                topic: topic.clone(),
                retention_ms: retention,
                oldest_ms: *oldest_ms,
                created: created.contains_key(topic.as_str()),
            });
        }
    }
    (risks, unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(source: &str, target: &str) -> PlannedTask {
        PlannedTask {
            source_topic: source.into(),
            source_partition: 0,
            target_topic: target.into(),
            target_partition: 0,
            segments: vec![],
            source_partition_count: 3,
            merged: vec![],
        }
    }

    #[test]
    fn created_topics_take_the_recorded_settings_and_the_overrides() {
        let recorded = BTreeMap::from([(
            "orders".to_string(),
            RecordedTopic {
                replication_factor: Some(3),
                configs: BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("retention.ms".to_string(), "-1".to_string()),
                ]),
            },
        )]);
        let mut spec = RestoreSpec::default();
        spec.topic_configs
            .insert("retention.ms".into(), "86400000".into());
        let missing = BTreeMap::from([("orders-copy".to_string(), 3)]);
        let tasks = [task("orders", "orders-copy")];
        let c = &creations(&missing, &tasks, &recorded, &spec)[0];
        assert_eq!((c.partitions, c.replication_factor), (3, 3));
        assert_eq!(
            c.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert_eq!(
            c.configs.get("retention.ms").map(String::as_str),
            Some("86400000")
        );
        spec.replication_factor = 1;
        spec.topic_configs
            .insert("cleanup.policy".into(), String::new());
        let mut recorded = recorded;
        if let Some(r) = recorded.get_mut("orders") {
            r.configs.insert("min.insync.replicas".into(), "2".into());
        }
        let c = &creations(&missing, &tasks, &recorded, &spec)[0];
        assert!(!c.configs.contains_key("cleanup.policy"), "KEY= drops it");
        assert_eq!(
            c.configs.get("min.insync.replicas").map(String::as_str),
            Some("1")
        );
        let foreign = creations(&missing, &tasks, &BTreeMap::new(), &spec);
        assert_eq!(foreign[0].replication_factor, 1);
        assert!(foreign[0].configs.contains_key("retention.ms"));
    }

    #[test]
    fn risk_messages_name_the_setting_and_the_fix() {
        let r = RetentionRisk {
            topic: "t".into(),
            retention_ms: 3_600_000,
            oldest_ms: 0,
            created: true,
        };
        let m = r.message();
        assert!(m.contains("retention.ms=3600000 (1 hours)"), "{m}");
        assert!(m.contains("--topic-config retention.ms=-1"), "{m}");
        assert!(m.contains("--allow-retention-deletes"), "{m}");
    }
}

//! Topic configurations that travel with a backup. A restore that creates its topics with
//! the broker's defaults brings a compacted topic back with `cleanup.policy=delete`, and a
//! 7-day default `retention.ms` makes the broker delete restored records older than that soon
//! after the restore: silent loss in exactly the disaster-recovery case. So `backup` records
//! what differs from Kafka's defaults, `--create-topics` applies it, and a plan checks that
//! the target's retention will not delete what it restores.

use rdkafka::admin::{AdminClient, AdminOptions, ConfigSource, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use std::collections::BTreeMap;
use std::time::Duration;

/// Kafka's documented defaults of the topic-level configurations (Kafka 3.x). A value the
/// broker reports that differs from these is the topic's own, whatever source the broker
/// names (some brokers report every stored config as a default).
const KAFKA_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("follower.replication.throttled.replicas", ""),
    ("index.interval.bytes", "4096"),
    ("leader.replication.throttled.replicas", ""),
    ("local.retention.bytes", "-2"),
    ("local.retention.ms", "-2"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.downconversion.enable", "true"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.difference.max.ms", "9223372036854775807"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("remote.storage.enable", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

/// Broker-level retention when neither the topic nor the restore sets one.
pub const KAFKA_DEFAULT_RETENTION_MS: i64 = 604_800_000;

/// Whether a configuration the broker reported belongs in the backup: set on the topic
/// itself, or (for a known topic config) a value other than Kafka's default, which is what
/// the topic effectively has even when it comes from a broker-wide setting the target
/// cluster may not share. Read-only and sensitive entries never do.
pub fn worth_keeping(
    name: &str,
    value: Option<&str>,
    source: &ConfigSource,
    read_only: bool,
    sensitive: bool,
) -> bool {
    let Some(value) = value else {
        return false;
    };
    if read_only || sensitive || NOT_CARRIED.contains(&name) {
        return false;
    }
    // Only Kafka's own topic configs: a vendor's keys (confluent.*) are refused as unknown
    // by other brokers, and would make --create-topics fail on the target.
    let Some((_, default)) = KAFKA_DEFAULTS.iter().find(|(k, _)| *k == name) else {
        return false;
    };
    matches!(source, ConfigSource::DynamicTopic) || *default != value
}

/// Topic configs never carried to the target: replication throttles name the source's broker
/// ids, and `message.timestamp.type=LogAppendTime` would make the target broker replace every
/// restored record's timestamp (the original time is what a restore must keep, and what a
/// takeover recognises its records by).
const NOT_CARRIED: &[&str] = &[
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
    "message.timestamp.type",
];

/// The configurations of `topics` worth keeping (see `worth_keeping`), per topic. A topic
/// the broker describes with an error is left out (logged); the backup is valid without.
pub async fn describe_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, KafkaError> {
    let specs: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(t.as_str()))
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin.describe_configs(specs.iter(), &opts).await?;
    let mut out = BTreeMap::new();
    for (topic, res) in topics.iter().zip(results) {
        match res {
            Ok(resource) => {
                let kept = resource
                    .entries
                    .iter()
                    .filter(|e| {
                        worth_keeping(
                            &e.name,
                            e.value.as_deref(),
                            &e.source,
                            e.is_read_only,
                            e.is_sensitive,
                        )
                    })
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                    .collect();
                out.insert(topic.clone(), kept);
            }
            Err(code) => {
                tracing::warn!(topic = %topic, error = %code, "the broker did not describe the topic's configuration; it is not recorded");
            }
        }
    }
    Ok(out)
}

/// How long records stay in a topic with `configs` before time-based retention deletes
/// them; `None` when it never does (compaction only, or `retention.ms=-1`), `Some(None)`
/// inside when the configs do not say (the broker's default applies).
pub fn retention_ms(configs: &BTreeMap<String, String>) -> Option<Option<i64>> {
    let deletes = configs
        .get("cleanup.policy")
        .is_none_or(|p| p.split(',').any(|x| x.trim() == "delete"));
    if !deletes {
        return None;
    }
    match configs.get("retention.ms").map(|v| v.trim().parse::<i64>()) {
        Some(Ok(ms)) if ms < 0 => None,
        Some(Ok(ms)) => Some(Some(ms)),
        _ => Some(None),
    }
}

/// A broker's default retention from its `log.retention.*` settings (the most precise one
/// set wins, as in Kafka); `None` when the broker reports none of them.
pub fn broker_retention_ms(broker: &BTreeMap<String, String>) -> Option<i64> {
    let get = |k: &str| broker.get(k).and_then(|v| v.trim().parse::<i64>().ok());
    get("log.retention.ms")
        .or_else(|| get("log.retention.minutes").map(|m| m.saturating_mul(60_000)))
        .or_else(|| get("log.retention.hours").map(|h| h.saturating_mul(3_600_000)))
}

/// Parses one `--topic-config KEY=VALUE`; an empty value (`KEY=`) drops a configuration the
/// backup recorded.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.trim().to_string(), v.to_string()))
        }
        _ => Err(format!(
            "invalid --topic-config {s:?}: use KEY=VALUE, e.g. retention.ms=-1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_kept() {
        use ConfigSource::*;
        assert!(worth_keeping(
            "cleanup.policy",
            Some("compact"),
            &Default,
            false,
            false
        ));
        assert!(!worth_keeping(
            "cleanup.policy",
            Some("delete"),
            &Default,
            false,
            false
        ));
        assert!(worth_keeping(
            "retention.ms",
            Some("-1"),
            &StaticBroker,
            false,
            false
        ));
        assert!(worth_keeping(
            "retention.ms",
            Some("604800000"),
            &DynamicTopic,
            false,
            false
        ));
        assert!(!worth_keeping(
            "some.broker.thing",
            Some("x"),
            &StaticBroker,
            false,
            false
        ));
        assert!(!worth_keeping(
            "retention.ms",
            Some("1"),
            &DynamicTopic,
            true,
            false
        ));
        assert!(!worth_keeping(
            "sasl.jaas.config",
            None,
            &DynamicTopic,
            false,
            true
        ));
    }

    #[test]
    fn retention() {
        let c = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(retention_ms(&c(&[])), Some(None));
        assert_eq!(
            retention_ms(&c(&[("retention.ms", "3600000")])),
            Some(Some(3_600_000))
        );
        assert_eq!(retention_ms(&c(&[("retention.ms", "-1")])), None);
        assert_eq!(retention_ms(&c(&[("cleanup.policy", "compact")])), None);
        assert_eq!(
            retention_ms(&c(&[
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "5")
            ])),
            Some(Some(5))
        );
        assert_eq!(
            broker_retention_ms(&c(&[("log.retention.hours", "168")])),
            Some(604_800_000)
        );
        assert_eq!(
            broker_retention_ms(&c(&[
                ("log.retention.hours", "168"),
                ("log.retention.ms", "10")
            ])),
            Some(10)
        );
        assert_eq!(
            parse_override("retention.ms=-1"),
            Ok(("retention.ms".into(), "-1".into()))
        );
        assert!(parse_override("retention.ms").is_err());
        assert!(parse_override("=1").is_err());
    }
}

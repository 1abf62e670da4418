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

/// What values a Kafka topic configuration takes, as Kafka's own validators check them.
#[derive(Debug, Clone, Copy)]
enum ValueKind {
    /// A 64-bit whole number, at least the bound.
    Long(i64),
    /// A 32-bit whole number, within the bounds.
    Int(i32, i32),
    /// -1 (the codec's default) or 1 to 9.
    GzipLevel,
    /// A decimal number from 0 to 1.
    Ratio,
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these words, at least one.
    ListOf(&'static [&'static str]),
    /// Whatever the broker takes (lists of replica ids, a deprecated version string).
    Any,
}

/// Kafka's topic configurations: Kafka's documented default (3.x) and what values each takes,
/// as Kafka 3.x's validators check them.
///
/// The default decides what a backup records: a value the broker reports that differs from it
/// is the topic's own, whatever source the broker names (some brokers report every stored
/// config as a default). Configurations without one here are never recorded.
///
/// What each takes is checked for the values a restore is given, before anything is created:
/// a broker refuses a bad one only at topic creation, after the restore's earlier topics were
/// created, and some Kafka-protocol brokers take anything (`retention.ms=abc`) and apply
/// nothing. A newer broker may be stricter (Kafka 4.0 wants `segment.bytes` of 1 MiB or
/// more, and dropped `message.format.version`, `message.downconversion.enable` and
/// `message.timestamp.difference.max.ms`); it refuses those itself.
const KAFKA_TOPIC_CONFIGS: &[(&str, Option<&str>, ValueKind)] = {
    use ValueKind::*;
    const COMPRESSION: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
    const NEVER: Option<&str> = Some("9223372036854775807");
    &[
        (
            "cleanup.policy",
            Some("delete"),
            ListOf(&["delete", "compact"]),
        ),
        ("compression.gzip.level", None, GzipLevel),
        ("compression.lz4.level", None, Int(1, 17)),
        ("compression.type", Some("producer"), OneOf(COMPRESSION)),
        ("compression.zstd.level", None, Int(-131_072, 22)),
        ("delete.retention.ms", Some("86400000"), Long(0)),
        ("file.delete.delay.ms", Some("60000"), Long(0)),
        ("flush.messages", NEVER, Long(1)),
        ("flush.ms", NEVER, Long(0)),
        ("follower.replication.throttled.replicas", Some(""), Any),
        ("index.interval.bytes", Some("4096"), Int(0, i32::MAX)),
        ("leader.replication.throttled.replicas", Some(""), Any),
        ("local.retention.bytes", Some("-2"), Long(-2)),
        ("local.retention.ms", Some("-2"), Long(-2)),
        ("max.compaction.lag.ms", NEVER, Long(1)),
        ("max.message.bytes", Some("1048588"), Int(0, i32::MAX)),
        ("message.downconversion.enable", Some("true"), Bool),
        ("message.format.version", None, Any),
        ("message.timestamp.after.max.ms", NEVER, Long(0)),
        ("message.timestamp.before.max.ms", NEVER, Long(0)),
        ("message.timestamp.difference.max.ms", NEVER, Long(0)),
        (
            "message.timestamp.type",
            Some("CreateTime"),
            OneOf(&["CreateTime", "LogAppendTime"]),
        ),
        ("min.cleanable.dirty.ratio", Some("0.5"), Ratio),
        ("min.compaction.lag.ms", Some("0"), Long(0)),
        ("min.insync.replicas", Some("1"), Int(1, i32::MAX)),
        ("preallocate", Some("false"), Bool),
        ("remote.log.copy.disable", None, Bool),
        ("remote.log.delete.on.disable", None, Bool),
        ("remote.storage.enable", Some("false"), Bool),
        ("retention.bytes", Some("-1"), Long(i64::MIN)),
        ("retention.ms", Some("604800000"), Long(-1)),
        ("segment.bytes", Some("1073741824"), Int(14, i32::MAX)),
        ("segment.index.bytes", Some("10485760"), Int(4, i32::MAX)),
        ("segment.jitter.ms", Some("0"), Long(0)),
        ("segment.ms", Some("604800000"), Long(1)),
        ("unclean.leader.election.enable", Some("false"), Bool),
    ]
};

/// Kafka's topic configuration of this name.
fn kafka_topic_config(
    name: &str,
) -> Option<&'static (&'static str, Option<&'static str>, ValueKind)> {
    KAFKA_TOPIC_CONFIGS.iter().find(|(k, _, _)| *k == name)
}

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
    let Some((_, Some(default), _)) = kafka_topic_config(name) else {
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

/// How a restore's topic configuration override stands against Kafka's own.
#[derive(Debug, PartialEq)]
pub enum OverrideCheck {
    /// One of Kafka's topic configurations, with a value it takes (or empty: dropped).
    Valid,
    /// Not a Kafka topic configuration: a vendor's (a broker of that vendor may take it) or a
    /// misspelt one. The broker decides; the dry run says so.
    Unknown,
}

/// Checks one topic configuration a restore would create topics with; the error names the
/// setting, what it takes and an example. An empty value drops a recorded setting and is
/// always accepted.
pub fn check_override(key: &str, value: &str) -> Result<OverrideCheck, String> {
    let Some((_, _, kind)) = kafka_topic_config(key) else {
        return Ok(OverrideCheck::Unknown);
    };
    let v = value.trim();
    if value.is_empty() {
        return Ok(OverrideCheck::Valid);
    }
    let takes = match *kind {
        ValueKind::Long(min) => match v.parse::<i64>() {
            Ok(n) if n >= min => None,
            _ if min == i64::MIN => Some("a whole number".to_string()),
            _ => Some(format!("a whole number, {min} or more")),
        },
        ValueKind::Int(min, max) => match v.parse::<i32>() {
            Ok(n) if (min..=max).contains(&n) => None,
            _ if max == i32::MAX => Some(format!("a whole number, {min} or more")),
            _ => Some(format!("a whole number from {min} to {max}")),
        },
        ValueKind::GzipLevel => match v.parse::<i32>() {
            Ok(-1 | 1..=9) => None,
            _ => Some("-1 (the default) or a whole number from 1 to 9".to_string()),
        },
        ValueKind::Ratio => match v.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => None,
            _ => Some("a decimal number from 0 to 1, e.g. 0.5".to_string()),
        },
        ValueKind::Bool => {
            let word = v.to_ascii_lowercase();
            (word != "true" && word != "false").then(|| "true or false".to_string())
        }
        ValueKind::OneOf(words) => {
            (!words.contains(&v)).then(|| format!("one of {}", words.join(", ")))
        }
        ValueKind::ListOf(words) => {
            let ok = v.split(',').all(|w| words.contains(&w.trim()));
            (!ok).then(|| format!("{}, or several joined by commas", words.join(" or ")))
        }
        ValueKind::Any => None,
    };
    match takes {
        None => Ok(OverrideCheck::Valid),
        Some(takes) => Err(format!(
            "topic configuration {key}={value:?} is not valid: {key} takes {takes} \
             (--topic-config {key}=VALUE or restore.target.topic_configs; {key}= drops it)"
        )),
    }
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

    #[test]
    fn overrides_are_checked_as_kafka_checks_them() {
        use OverrideCheck::*;
        for (k, v) in [
            ("retention.ms", "-1"),
            ("retention.ms", " 3600000 "),
            ("retention.ms", ""),
            ("retention.bytes", "-7"),
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("unclean.leader.election.enable", "TRUE"),
            ("compression.type", "zstd"),
            ("min.insync.replicas", "2"),
            ("compression.zstd.level", "-5"),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
        ] {
            assert_eq!(check_override(k, v), Ok(Valid), "{k}={v}");
        }
        for (k, v, says) in [
            ("retention.ms", "abc", "a whole number, -1 or more"),
            ("retention.ms", "-5", "-1 or more"),
            ("retention.bytes", "1.5", "a whole number"),
            ("cleanup.policy", "compacted", "delete or compact"),
            ("min.insync.replicas", "0", "1 or more"),
            ("segment.bytes", "4294967296", "14 or more"),
            ("min.cleanable.dirty.ratio", "2", "from 0 to 1"),
            ("preallocate", "yes", "true or false"),
            ("compression.type", "ZSTD", "one of uncompressed, zstd"),
            ("compression.gzip.level", "10", "from 1 to 9"),
            ("compression.gzip.level", "0", "-1 (the default)"),
        ] {
            let e = check_override(k, v).expect_err(k);
            assert!(e.contains(k) && e.contains(says), "{k}={v}: {e}");
            assert!(e.contains("--topic-config"), "{e}");
        }
        assert_eq!(
            check_override("confluent.placement.constraints", "{}"),
            Ok(Unknown)
        );
        assert_eq!(check_override("retention.mss", "1"), Ok(Unknown));
    }
}

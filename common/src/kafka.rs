//! Kafka client settings shared by the backup, the coordinator (metadata, topic creation)
//! and the workers (producers). The YAML files' security settings map to librdkafka properties
//! here and nowhere else, so every client of one cluster is configured the same way.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Security section of the YAML config (`backup.security`, `restore.target.security`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<String>,
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<String>,
    /// Any further librdkafka properties, passed through verbatim.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: &[&str] = &[
    "PLAIN",
    "SCRAM-SHA-256",
    "SCRAM-SHA-512",
    "OAUTHBEARER",
    "GSSAPI",
];

impl SecurityConfig {
    /// Refuses settings librdkafka would only reject at connect time, or silently ignore (a
    /// SASL mechanism under a non-SASL protocol), naming the key and the accepted values.
    /// Returns (key, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let protocol = self
            .security_protocol
            .as_deref()
            .map(str::to_ascii_uppercase);
        if let Some(p) = &protocol {
            if !PROTOCOLS.contains(&p.as_str()) {
                return Err((
                    "security_protocol",
                    format!("{p:?} is not one of {}", PROTOCOLS.join(", ")),
                ));
            }
        }
        let sasl = protocol.as_deref().is_some_and(|p| p.starts_with("SASL_"));
        if let Some(m) = &self.sasl_mechanism {
            let upper = m.to_ascii_uppercase();
            if !MECHANISMS.contains(&upper.as_str()) {
                return Err((
                    "sasl_mechanism",
                    format!("{m:?} is not one of {}", MECHANISMS.join(", ")),
                ));
            }
            if !sasl {
                return Err((
                    "sasl_mechanism",
                    "is set but security_protocol is not SASL_PLAINTEXT or SASL_SSL, so it would be ignored".into(),
                ));
            }
        }
        let user_pw = matches!(
            self.sasl_mechanism
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref(),
            Some("PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
        );
        if user_pw && (self.sasl_username.is_none() || self.sasl_password.is_none()) {
            return Err((
                "sasl_username",
                "PLAIN and SCRAM need both sasl_username and sasl_password".into(),
            ));
        }
        if sasl && self.sasl_mechanism.is_none() {
            return Err((
                "sasl_mechanism",
                format!(
                    "is required with a SASL security_protocol: one of {}",
                    MECHANISMS.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// librdkafka properties for these settings.
    pub fn to_properties(&self) -> BTreeMap<String, String> {
        let mut p = self.properties.clone();
        let mut set = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                p.insert(k.to_string(), v.clone());
            }
        };
        set("security.protocol", &self.security_protocol);
        set(
            "sasl.mechanism",
            &self.sasl_mechanism.as_ref().map(|m| m.to_uppercase()),
        );
        set("sasl.username", &self.sasl_username);
        set("sasl.password", &self.sasl_password);
        set("ssl.ca.location", &self.ssl_ca_location);
        set("ssl.certificate.location", &self.ssl_certificate_location);
        set("ssl.key.location", &self.ssl_key_location);
        set("ssl.key.password", &self.ssl_key_password);
        p
    }
}

/// Base client config: bootstrap servers plus the security properties.
pub fn client_config<'a>(
    bootstrap_servers: &str,
    properties: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers);
    for (k, v) in properties {
        c.set(k, v);
    }
    c
}

/// Every one of `partitions`' offset at `bound` (`Offset::Beginning`: the low watermark,
/// `Offset::End`: the high one), in the order given, each with its own error: one
/// ListOffsets request per leader broker for all of them. librdkafka's watermark query asks
/// two requests per partition, so a backup's snapshot of 500 partitions or a dry run's end
/// offsets of 500 target partitions took 0.35-0.5 s on loopback, and would take 20 s at a
/// 20 ms round trip. librdkafka sends each partition's offset field as the request's
/// timestamp, where -2 and -1 ask for the earliest and the latest offset, as its watermark
/// query does. A partition missing from the answer, or answered with something other than
/// an offset, gets `UnknownTopicOrPartition`.
pub fn offsets_at(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
    bound: Offset,
    timeout: Duration,
) -> KafkaResult<Vec<KafkaResult<i64>>> {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition_offset(topic, *p, bound)?;
    }
    let answered = consumer.offsets_for_times(tpl, timeout)?;
    let mut found: HashMap<(String, i32), KafkaResult<i64>> = HashMap::new();
    for e in answered.elements() {
        let offset = e.error().and_then(|()| match e.offset() {
            Offset::Offset(o) => Ok(o),
            _ => Err(KafkaError::OffsetFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )),
        });
        found.insert((e.topic().to_string(), e.partition()), offset);
    }
    Ok(partitions
        .iter()
        .map(|key| {
            found.remove(key).unwrap_or(Err(KafkaError::OffsetFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )))
        })
        .collect())
}

/// Drops Kafka clients on a thread of their own. librdkafka's destroy joins its threads and,
/// for a consumer with a group, waits for the group coordinator: tens to ~100 ms that no
/// caller needs to wait for once it is done with the clients. When no thread can be
/// started, the refused closure drops them here.
pub fn drop_in_background<T: Send + 'static>(clients: T) {
    let _ = std::thread::Builder::new()
        .name("kafka-client-drop".into())
        .spawn(move || drop(clients));
}

/// Property names whose values must never be printed.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.ends_with(".key") || n.contains("token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;

    fn sec(protocol: &str, mechanism: Option<&str>) -> SecurityConfig {
        SecurityConfig {
            security_protocol: Some(protocol.into()),
            sasl_mechanism: mechanism.map(Into::into),
            sasl_username: mechanism.map(|_| "user".into()),
            sasl_password: mechanism.map(|_| "pw".into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_supported_mechanism_maps_to_a_client_librdkafka_accepts() {
        for (protocol, mechanism) in [
            ("SASL_PLAINTEXT", Some("plain")),
            ("SASL_SSL", Some("PLAIN")),
            ("sasl_plaintext", Some("scram-sha-256")),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SSL", None),
            ("PLAINTEXT", None),
        ] {
            let s = sec(protocol, mechanism);
            s.check().expect("valid");
            let props = s.to_properties();
            if let Some(m) = mechanism {
                assert_eq!(props["sasl.mechanism"], m.to_uppercase());
                assert_eq!(props["sasl.username"], "user");
                assert_eq!(props["sasl.password"], "pw");
            }
            let created: Result<BaseConsumer, _> = client_config("127.0.0.1:9", &props)
                .set("group.id", "g")
                .create();
            assert!(
                created.is_ok(),
                "{protocol} {mechanism:?}: {:?}",
                created.err()
            );
        }
        let ssl = SecurityConfig {
            security_protocol: Some("SSL".into()),
            ssl_ca_location: Some("/etc/ca.pem".into()),
            ssl_certificate_location: Some("/etc/c.pem".into()),
            ssl_key_location: Some("/etc/k.pem".into()),
            ssl_key_password: Some("kp".into()),
            ..Default::default()
        }
        .to_properties();
        assert_eq!(ssl["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(ssl["ssl.certificate.location"], "/etc/c.pem");
        assert_eq!(ssl["ssl.key.location"], "/etc/k.pem");
        assert_eq!(ssl["ssl.key.password"], "kp");
    }

    #[test]
    fn inconsistent_settings_name_the_key() {
        let bad = [
            (sec("SASL_SSL", Some("SCRAM-SHA-1")), "sasl_mechanism"),
            (sec("TLS", None), "security_protocol"),
            (sec("SSL", Some("PLAIN")), "sasl_mechanism"),
            (sec("SASL_SSL", None), "sasl_mechanism"),
            (
                SecurityConfig {
                    sasl_password: None,
                    ..sec("SASL_SSL", Some("PLAIN"))
                },
                "sasl_username",
            ),
        ];
        for (s, key) in bad {
            assert_eq!(s.check().map_err(|e| e.0), Err(key), "{s:?}");
        }
    }

    #[test]
    fn secret_names() {
        assert!(is_secret_property("sasl.password"));
        assert!(is_secret_property("ssl.key.password"));
        assert!(!is_secret_property("sasl.username"));
    }
}

//! Kafka client settings shared by the backup, the coordinator (metadata, topic creation)
//! and the workers (producers). Security settings of PRD §10.1 map to librdkafka properties
//! here and nowhere else, so every client of one cluster is configured the same way.

use rdkafka::ClientConfig;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Security section of the YAML config (PRD §10.1).
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

impl SecurityConfig {
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

/// Property names whose values must never be printed.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("password") || n.contains("secret") || n.ends_with(".key") || n.contains("token")
}

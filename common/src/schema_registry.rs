//! A client of the Confluent Schema Registry REST API, limited to what copying a schema from
//! one environment's registry to another's needs, and `SchemaCopier`, which resolves a source
//! schema ID to the target registry's ID for the same schema under the same subject(s).
//!
//! Registering is idempotent in the registry (the same schema under the same subject returns
//! the ID it already has), so every worker that meets an ID resolves it to the same target ID
//! on its own: a task taken over mid-restore reproduces exactly the bytes its predecessor
//! wrote, which reconciliation relies on.

use kafka_backup_proto::SchemaRegistryEndpoint;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Characters escaped in a URL path segment: controls and everything outside unreserved.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// A registry call that takes longer than this is treated as an outage of the registry.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Schema references nest; a cycle (which no registry accepts) must not recurse forever.
const MAX_REFERENCE_DEPTH: usize = 32;

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(
        "schema registry {url} is unreachable: {reason}; check the URL and that the registry is up"
    )]
    Unreachable { url: String, reason: String },
    #[error("schema registry {url} refused the credentials (HTTP {status}); give the registry's username and password (restore.{side}.schema_registry.security in the YAML, or user:password@ in the URL)")]
    Unauthorized {
        url: String,
        status: u16,
        side: &'static str,
    },
    #[error("{what} is not in the source schema registry {url}")]
    NotFound { url: String, what: String },
    #[error("schema registry {url} answered {what} with HTTP {status}: {body}")]
    Rejected {
        url: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("schema registry {url} answered {what} with a body that is not the registry API's: {reason}")]
    BadResponse {
        url: String,
        what: String,
        reason: String,
    },
    #[error(
        "schema {subject} version {version} nests references more than {MAX_REFERENCE_DEPTH} deep"
    )]
    TooDeep { subject: String, version: i64 },
}

impl RegistryError {
    /// The registry could not be reached or failed on its side: waiting may cure it.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Rejected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// A reference from one schema to another, by subject and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A schema as the registry stores it: text, type and references.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    pub schema: String,
    /// Absent for Avro.
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub schema_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<SchemaReference>,
}

/// One version of a subject.
#[derive(Debug, Clone, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i64,
    #[serde(default)]
    pub id: i32,
    #[serde(flatten)]
    pub schema: Option<Schema>,
}

#[derive(Deserialize)]
struct Registered {
    id: i32,
}

/// Which environment a registry belongs to, for error messages that say which to fix.
#[derive(Debug, Clone, Copy)]
pub enum RegistrySide {
    Source,
    Target,
}

/// One registry endpoint.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    auth: Option<(String, String)>,
    side: RegistrySide,
    http: reqwest::Client,
}

impl RegistryClient {
    pub fn new(endpoint: &SchemaRegistryEndpoint, side: RegistrySide) -> Self {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            base: endpoint.url.trim_end_matches('/').to_string(),
            auth: (!endpoint.username.is_empty())
                .then(|| (endpoint.username.clone(), endpoint.password.clone())),
            side,
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn side_name(&self) -> &'static str {
        match self.side {
            RegistrySide::Source => "source",
            RegistrySide::Target => "target",
        }
    }

    /// Sends one call; `None` for 404 (the caller says what was missing).
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Option<T>, RegistryError> {
        let req = match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        };
        let resp = req
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        match status {
            404 => return Ok(None),
            401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    url: self.base.clone(),
                    status,
                    side: self.side_name(),
                })
            }
            200..=299 => {}
            _ => {
                let body = resp.text().await.unwrap_or_default();
                return Err(RegistryError::Rejected {
                    url: self.base.clone(),
                    what: what.to_string(),
                    status,
                    body: body.chars().take(300).collect(),
                });
            }
        }
        let bytes = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| RegistryError::BadResponse {
                url: self.base.clone(),
                what: what.to_string(),
                reason: e.to_string(),
            })
    }

    /// A 404 where the registry API promises an answer.
    fn missing_route(&self, what: String) -> RegistryError {
        RegistryError::Rejected {
            url: self.base.clone(),
            what,
            status: 404,
            body: "not found".to_string(),
        }
    }

    fn not_found(&self, what: String) -> RegistryError {
        RegistryError::NotFound {
            url: self.base.clone(),
            what,
        }
    }

    /// The URL of `segments` under the registry's base URL, each segment percent-encoded
    /// as a path segment (a subject may hold any character).
    fn path(&self, segments: &[&str]) -> String {
        let mut out = self.base.clone();
        for s in segments {
            out.push('/');
            out.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
        }
        out
    }

    /// Whether the registry answers at all (and accepts the credentials).
    pub async fn check(&self) -> Result<(), RegistryError> {
        let what = "GET /subjects";
        self.call::<Vec<String>>(what, self.http.get(self.path(&["subjects"])))
            .await?
            .map(|_| ())
            .ok_or_else(|| RegistryError::Rejected {
                url: self.base.clone(),
                what: what.to_string(),
                status: 404,
                body: "is this the registry's base URL?".to_string(),
            })
    }

    pub async fn schema_by_id(&self, id: i32) -> Result<Schema, RegistryError> {
        let what = format!("GET /schemas/ids/{id}");
        self.call(
            &what,
            self.http.get(format!("{}/schemas/ids/{id}", self.base)),
        )
        .await?
        .ok_or_else(|| self.not_found(format!("schema ID {id}")))
    }

    /// The subjects (and versions) a schema ID is registered under.
    pub async fn subjects_of(&self, id: i32) -> Result<Vec<SubjectVersion>, RegistryError> {
        let what = format!("GET /schemas/ids/{id}/versions");
        let url = self.path(&["schemas", "ids", &id.to_string(), "versions"]);
        self.call(&what, self.http.get(url))
            .await?
            .ok_or_else(|| self.not_found(format!("schema ID {id}")))
    }

    pub async fn version(
        &self,
        subject: &str,
        version: i64,
    ) -> Result<SubjectVersion, RegistryError> {
        let what = format!("GET /subjects/{subject}/versions/{version}");
        let url = self.path(&["subjects", subject, "versions", &version.to_string()]);
        // A referenced version missing from the source is a broken registry, not an ID
        // without a target: an error, never a silent pass.
        self.call(&what, self.http.get(url))
            .await?
            .ok_or_else(|| self.missing_route(what))
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its ID.
    pub async fn register(&self, subject: &str, schema: &Schema) -> Result<i32, RegistryError> {
        let what = format!("POST /subjects/{subject}/versions");
        let url = self.path(&["subjects", subject, "versions"]);
        let req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(schema);
        let reg: Option<Registered> = self.call(&what, req).await?;
        reg.map(|r| r.id).ok_or_else(|| self.missing_route(what))
    }

    /// The version `schema` has under `subject` (after `register`).
    pub async fn version_of(&self, subject: &str, schema: &Schema) -> Result<i64, RegistryError> {
        let what = format!("POST /subjects/{subject}");
        let url = self.path(&["subjects", subject]);
        let req = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .json(schema);
        let found: Option<SubjectVersion> = self.call(&what, req).await?;
        found
            .map(|v| v.version)
            .ok_or_else(|| self.missing_route(what))
    }

    /// Every schema the registry holds (subject, version, ID), at most `limit` of them.
    pub async fn list(&self, limit: usize) -> Result<Vec<SubjectVersion>, RegistryError> {
        let what = "GET /schemas";
        if let Some(all) = self
            .call::<Vec<SubjectVersion>>(what, self.http.get(self.path(&["schemas"])))
            .await?
        {
            return Ok(all.into_iter().take(limit).collect());
        }
        // Registries before Confluent 7 lack GET /schemas: walk the subjects instead.
        let subjects: Vec<String> = self
            .call(
                "GET /subjects",
                self.http.get(format!("{}/subjects", self.base)),
            )
            .await?
            .unwrap_or_default();
        let mut out = Vec::new();
        for subject in subjects {
            let url = self.path(&["subjects", &subject, "versions"]);
            let versions: Vec<i64> = self
                .call("GET /subjects/{subject}/versions", self.http.get(url))
                .await?
                .unwrap_or_default();
            for v in versions {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(self.version(&subject, v).await?);
            }
        }
        Ok(out)
    }
}

/// Resolves source schema IDs to target IDs by copying each schema (and what it references)
/// from the source registry to the target one, remembering every answer.
pub struct SchemaCopier {
    source: RegistryClient,
    target: RegistryClient,
    /// Source (subject, version) of a referenced schema → its version in the target.
    reference_versions: HashMap<(String, i64), i64>,
}

impl SchemaCopier {
    pub fn new(source: &SchemaRegistryEndpoint, target: &SchemaRegistryEndpoint) -> Self {
        Self {
            source: RegistryClient::new(source, RegistrySide::Source),
            target: RegistryClient::new(target, RegistrySide::Target),
            reference_versions: HashMap::new(),
        }
    }

    /// The target ID of source schema `id`: registered under each subject the source has it
    /// under (the first one's ID is used; a registry gives one schema one ID).
    pub async fn copy(&mut self, id: i32) -> Result<i32, RegistryError> {
        let mut schema = self.source.schema_by_id(id).await?;
        let subjects = self.source.subjects_of(id).await?;
        if subjects.is_empty() {
            return Err(self
                .source
                .not_found(format!("a subject of schema ID {id}")));
        }
        schema.references = self.copy_references(&schema.references, 0).await?;
        let mut first = None;
        for sv in &subjects {
            let tid = self.target.register(&sv.subject, &schema).await?;
            first.get_or_insert(tid);
        }
        Ok(first.unwrap_or_default())
    }

    /// Registers what `refs` point at in the target and returns them with target versions.
    async fn copy_references(
        &mut self,
        refs: &[SchemaReference],
        depth: usize,
    ) -> Result<Vec<SchemaReference>, RegistryError> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            let key = (r.subject.clone(), r.version);
            let version = match self.reference_versions.get(&key) {
                Some(v) => *v,
                None => {
                    if depth >= MAX_REFERENCE_DEPTH {
                        return Err(RegistryError::TooDeep {
                            subject: r.subject.clone(),
                            version: r.version,
                        });
                    }
                    let sv = self.source.version(&r.subject, r.version).await?;
                    let Some(mut schema) = sv.schema else {
                        return Err(RegistryError::BadResponse {
                            url: self.source.url().to_string(),
                            what: format!("GET /subjects/{}/versions/{}", r.subject, r.version),
                            reason: "no schema in the answer".to_string(),
                        });
                    };
                    schema.references =
                        Box::pin(self.copy_references(&schema.references, depth + 1)).await?;
                    self.target.register(&r.subject, &schema).await?;
                    let v = self.target.version_of(&r.subject, &schema).await?;
                    self.reference_versions.insert(key, v);
                    v
                }
            };
            out.push(SchemaReference {
                name: r.name.clone(),
                subject: r.subject.clone(),
                version,
            });
        }
        Ok(out)
    }
}

//! The schema ID remapping options of a restore (flags over `restore.schema_id_mapping` and
//! the `schema_registry` of `restore.source` / `restore.target`), resolved into the spec's
//! `SchemaIdRemap`. The mapping file is read here, on the submitting side, so workers never
//! need it; every bad value is refused before anything connects.

use crate::config::{RestoreSection, SchemaRegistrySection};
use crate::restore_options::OptionsError;
use crate::schema_ids::{load_mapping, parse_mapping, MissingSchemaId, SchemaIdScope};
use kafka_backup_proto::{SchemaIdRemap, SchemaRegistryEndpoint};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The schema ID flags of `restore` / `validate-restore`.
#[derive(Debug, Clone, Default)]
pub struct SchemaIdFlags {
    pub mapping_file: Option<PathBuf>,
    pub source_registry: Option<String>,
    pub target_registry: Option<String>,
    pub apply_to: Option<String>,
    pub missing: Option<String>,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, OptionsError> {
    Err(OptionsError::Invalid(msg.into()))
}

/// An endpoint from a flag or the file's section; credentials may come as user:password@ in
/// the URL (taken out of it, so the URL can be shown) or from the section's `security`.
fn endpoint(
    what: &str,
    flag: Option<&String>,
    section: Option<&SchemaRegistrySection>,
) -> Result<Option<SchemaRegistryEndpoint>, OptionsError> {
    let Some(raw) = flag
        .cloned()
        .or_else(|| section.and_then(|s| s.url.clone()))
    else {
        if section.is_some_and(|s| s.security.username.is_some()) {
            return invalid(format!("{what} has credentials but no url"));
        }
        return Ok(None);
    };
    let mut url = match url::Url::parse(raw.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            return invalid(format!(
                "invalid {what} {raw:?}: use the registry's base URL, e.g. http://registry:8081"
            ))
        }
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut username = decode(url.username());
    let mut password = url.password().map(decode).unwrap_or_default();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if let Some(sec) = section.map(|s| &s.security) {
        if let Some(u) = &sec.username {
            username = u.clone();
        }
        if let Some(p) = &sec.password {
            password = p.clone();
        }
    }
    if username.is_empty() && !password.is_empty() {
        return invalid(format!("{what} has a password but no username"));
    }
    Ok(Some(SchemaRegistryEndpoint {
        url: url.as_str().trim_end_matches('/').to_string(),
        username,
        password,
    }))
}

fn inline_ids(ids: &BTreeMap<i64, i64>) -> Result<BTreeMap<i32, i32>, OptionsError> {
    let text = ids
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect::<String>();
    parse_mapping("restore.schema_id_mapping.ids", &text)
        .map_err(|e| OptionsError::Invalid(e.to_string()))
}

/// The remap a restore asks for, or `None` when it asks for none.
pub fn resolve(
    f: &SchemaIdFlags,
    r: &RestoreSection,
) -> Result<Option<SchemaIdRemap>, OptionsError> {
    let section = r.schema_id_mapping.clone().unwrap_or_default();
    let source = endpoint(
        "--source-schema-registry",
        f.source_registry.as_ref(),
        r.source.schema_registry.as_ref(),
    )?;
    let target = endpoint(
        "--target-schema-registry",
        f.target_registry.as_ref(),
        r.target.schema_registry.as_ref(),
    )?;
    let mut mapping = BTreeMap::new();
    if let Some(ids) = &section.ids {
        mapping.extend(inline_ids(ids)?);
    }
    let file = f
        .mapping_file
        .clone()
        .or(section.file.as_ref().map(PathBuf::from));
    if let Some(path) = &file {
        // The file's pairs win over inline ones given in the YAML.
        mapping.extend(load_mapping(path).map_err(|e| OptionsError::Invalid(e.to_string()))?);
    }
    let apply_to = f.apply_to.clone().or(section.apply_to.clone());
    let missing = f.missing.clone().or(section.missing.clone());
    if mapping.is_empty() && source.is_none() && target.is_none() {
        if apply_to.is_some() || missing.is_some() {
            return invalid("--schema-id-apply-to/--schema-id-missing need a schema ID mapping: give --schema-id-mapping FILE or --source-schema-registry and --target-schema-registry");
        }
        return Ok(None);
    }
    if source.is_some() != target.is_some() {
        return invalid("schema ID remapping through registries needs both --source-schema-registry and --target-schema-registry (the source's schemas are registered in the target)");
    }
    let scope = SchemaIdScope::parse(apply_to.as_deref().unwrap_or(""))
        .map_err(|e| OptionsError::Invalid(e.to_string()))?;
    let missing = MissingSchemaId::parse(missing.as_deref().unwrap_or(""))
        .map_err(|e| OptionsError::Invalid(e.to_string()))?;
    Ok(Some(SchemaIdRemap {
        mapping: mapping.into_iter().collect(),
        source_registry: source,
        target_registry: target,
        apply_to: scope.as_str().to_string(),
        missing: missing.as_str().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn section(yaml: &str) -> RestoreSection {
        parse("t.yaml", yaml, &|_| None)
            .expect("yaml")
            .restore
            .unwrap_or_default()
    }

    #[test]
    fn none_unless_asked() {
        let r = RestoreSection::default();
        assert!(resolve(&SchemaIdFlags::default(), &r)
            .expect("ok")
            .is_none());
        let f = SchemaIdFlags {
            missing: Some("pass".into()),
            ..Default::default()
        };
        assert!(
            resolve(&f, &r).is_err(),
            "a choice without a mapping is a mistake"
        );
    }

    #[test]
    fn file_and_registries() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("ids.json");
        std::fs::write(&file, r#"{"1": 11, "2": 12}"#).expect("write");
        let f = SchemaIdFlags {
            mapping_file: Some(file),
            source_registry: Some("http://alice:s%40c+ret@127.0.0.1:8081/".into()),
            target_registry: Some("https://127.0.0.1:8082".into()),
            apply_to: Some("value".into()),
            ..Default::default()
        };
        let remap = resolve(&f, &RestoreSection::default())
            .expect("ok")
            .expect("some");
        assert_eq!(remap.mapping.get(&2), Some(&12));
        assert_eq!(remap.apply_to, "value");
        assert_eq!(remap.missing, "fail");
        let src = remap.source_registry.expect("source");
        assert_eq!(src.url, "http://127.0.0.1:8081");
        assert_eq!(
            (src.username.as_str(), src.password.as_str()),
            ("alice", "s@c+ret"),
            "percent-decoded; a + stays a +"
        );
    }

    #[test]
    fn yaml_keys() {
        let r = section(
            r#"
restore:
  source:
    schema_registry: { url: "http://127.0.0.1:1", security: { username: u, password: p } }
  target:
    schema_registry: { url: "http://127.0.0.1:2" }
  schema_id_mapping: { ids: { 5: 50 }, apply_to: key, missing: pass }
"#,
        );
        let remap = resolve(&SchemaIdFlags::default(), &r)
            .expect("ok")
            .expect("some");
        assert_eq!(remap.mapping.get(&5), Some(&50));
        assert_eq!(
            (remap.apply_to.as_str(), remap.missing.as_str()),
            ("key", "pass")
        );
        assert_eq!(remap.source_registry.expect("src").username, "u");
    }

    #[test]
    fn refusals() {
        let r = RestoreSection::default();
        let cases = [
            (
                SchemaIdFlags {
                    source_registry: Some("http://127.0.0.1:1".into()),
                    ..Default::default()
                },
                "both",
            ),
            (
                SchemaIdFlags {
                    source_registry: Some("registry:8081".into()),
                    target_registry: Some("http://127.0.0.1:1".into()),
                    ..Default::default()
                },
                "base URL",
            ),
            (
                SchemaIdFlags {
                    mapping_file: Some("/nonexistent/ids.json".into()),
                    ..Default::default()
                },
                "/nonexistent/ids.json",
            ),
        ];
        for (f, want) in cases {
            let e = resolve(&f, &r).expect_err(want).to_string();
            assert!(e.contains(want), "{e}");
        }
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("ids.yaml");
        std::fs::write(&file, "1: 2\n").expect("write");
        let f = SchemaIdFlags {
            mapping_file: Some(file),
            apply_to: Some("headers".into()),
            ..Default::default()
        };
        assert!(resolve(&f, &r)
            .expect_err("scope")
            .to_string()
            .contains("key, value or both"));
    }
}

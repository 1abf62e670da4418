//! Schema ID remapping (environment cloning) against the real test broker: records framed in
//! the Confluent wire format come back with the target's IDs and every other byte untouched;
//! records not in the wire format come back unchanged; an ID without a target fails the task
//! naming it (or passes, when asked). The registry mode runs against
//! tests/support/schema_registry.py, a small in-memory server of the registry endpoints used
//! (no registry that runs without a Kafka cluster of its own can be installed here): it
//! copies schemas, references included, into a target registry with basic auth, and an
//! embedded restore killed mid-run (kill -9) and rerun still writes every record once.

mod common;

use common::*;
use kafka_backup_common::segment::Record;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

const BASE_TS: i64 = 1_720_000_000_000;

/// A value or key framed with `id`: magic byte 0, the ID big-endian, then `payload`.
fn framed(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Every 7th record is plain JSON with no key; the others have a key framed with `key_id`
/// and a value framed with one of `value_ids` in turn.
fn records(n: usize, key_id: u32, value_ids: &[u32]) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let ts = BASE_TS + i as i64;
            if i % 7 == 0 {
                return rec(None, Some(format!("{{\"plain\":{i}}}").as_bytes()), ts, &[]);
            }
            let key = framed(key_id, format!("k{i}").as_bytes());
            let value = framed(value_ids[i % value_ids.len()], &[i as u8, 0, 1, 2, 3, 4, 5]);
            rec(Some(&key), Some(&value), ts, &[("h", Some(b"v"))])
        })
        .collect()
}

/// `r` as the target must hold it: key and value IDs passed through `map` (`None`: unchanged).
fn remapped(r: &Record, map: &dyn Fn(u32) -> Option<u32>, keys: bool) -> Record {
    let fix = |b: &Option<Vec<u8>>| {
        b.as_ref().map(|b| match b.as_slice() {
            [0, a, bb, c, d, rest @ ..] => match map(u32::from_be_bytes([*a, *bb, *c, *d])) {
                Some(t) => framed(t, rest),
                None => b.clone(),
            },
            _ => b.clone(),
        })
    };
    Record {
        key: if keys { fix(&r.key) } else { r.key.clone() },
        value: fix(&r.value),
        ..r.clone()
    }
}

async fn backed_up(
    bootstrap: &str,
    name: &str,
    recs: &[Record],
) -> (String, Vec<Record>, tempfile::TempDir) {
    let topic = unique(name);
    create_topic(bootstrap, &topic, 1).await;
    let produced = produce(bootstrap, &topic, 0, recs).await;
    let dir = backup_local_with(
        bootstrap,
        &topic,
        "bk",
        &["--segment-max-records", "200", "--consumer-groups", "none"],
    );
    (topic, produced, dir)
}

fn restore_args<'a>(
    storage: &'a tempfile::TempDir,
    topic: &'a str,
    target: &'a str,
    state: &'a tempfile::TempDir,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "restore",
        "--storage",
        storage.path().to_str().expect("utf8"),
        "--backup-id",
        "bk",
        "--source-topic",
        topic,
        "--target-topic",
        target,
        "--bootstrap-servers",
        leak(broker()),
        "--create-topics",
        "--checkpoint-state",
        state.path().to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    args
}

/// Points `args` (from `restore_args`) at another target cluster.
fn on<'a>(args: &mut [&'a str], bootstrap: &'a str) {
    if let Some(i) = args.iter().position(|a| *a == "--bootstrap-servers") {
        args[i + 1] = bootstrap;
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn assert_target(target: &str, want: &[Record]) {
    let got = consume_all(&broker(), target, 0);
    assert_same_records(want, &got);
}

#[tokio::test(flavor = "multi_thread")]
async fn mapping_file_rewrites_only_the_id_bytes() {
    if skip_without_servers() {
        return;
    }
    let (topic, produced, backup) =
        backed_up(&broker(), "sid-file", &records(300, 1, &[1, 2])).await;
    let dir = temp_dir();
    let mapping = dir.path().join("ids.json");
    std::fs::write(&mapping, r#"{"1": 101, "2": 102}"#).expect("mapping");
    let map = |id| match id {
        1 => Some(101),
        2 => Some(102),
        _ => None,
    };

    // The dry run names the pairs and writes nothing.
    let target = unique("sid-file-target");
    let state = temp_dir();
    let mut args = restore_args(&backup, &topic, &target, &state, &["--dry-run"]);
    args.extend(["--schema-id-mapping", mapping.to_str().expect("utf8")]);
    let out = kb_ok(&args);
    assert!(out.contains("Schema ID 1 → 101 (mapping)"), "{out}");
    assert!(out.contains("Schema ID 2 → 102 (mapping)"), "{out}");
    assert!(!topic_exists(&broker(), &target));

    let args = restore_args(
        &backup,
        &topic,
        &target,
        &state,
        &["--schema-id-mapping", mapping.to_str().expect("utf8")],
    );
    kb_ok(&args);
    let want: Vec<Record> = produced.iter().map(|r| remapped(r, &map, true)).collect();
    assert_target(&target, &want);

    // Values only: keys keep the source IDs.
    let target = unique("sid-value-target");
    let state = temp_dir();
    let args = restore_args(
        &backup,
        &topic,
        &target,
        &state,
        &[
            "--schema-id-mapping",
            mapping.to_str().expect("utf8"),
            "--schema-id-apply-to",
            "value",
        ],
    );
    kb_ok(&args);
    let want: Vec<Record> = produced.iter().map(|r| remapped(r, &map, false)).collect();
    assert_target(&target, &want);
    let k = consume_all(&broker(), &target, 0)[1]
        .key
        .clone()
        .expect("key");
    assert_eq!(
        &k[..5],
        &[0, 0, 0, 0, 1],
        "keys untouched with apply-to value"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmapped_id_fails_naming_it_or_passes_when_asked() {
    if skip_without_servers() {
        return;
    }
    // Record 3 is the first with value ID 2 (values cycle 1, 2, 3 from record 1).
    let (topic, produced, backup) =
        backed_up(&broker(), "sid-missing", &records(60, 1, &[1, 2, 3])).await;
    let dir = temp_dir();
    let mapping = dir.path().join("ids.yaml");
    std::fs::write(&mapping, "1: 11\n3: 13\n").expect("mapping");
    let first_unmapped = produced
        .iter()
        .find(|r| {
            r.value
                .as_deref()
                .is_some_and(|v| v.get(..5) == Some(&[0, 0, 0, 0, 2]))
        })
        .expect("a record with ID 2");

    let target = unique("sid-missing-target");
    let state = temp_dir();
    let args = restore_args(
        &backup,
        &topic,
        &target,
        &state,
        &["--schema-id-mapping", mapping.to_str().expect("utf8")],
    );
    let out = kb(&args);
    assert!(!out.status.success(), "a missing ID must fail the restore");
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let needle = format!(
        "schema ID 2 in the value of source offset {}",
        first_unmapped.offset
    );
    assert!(text.contains(&needle), "lacks {needle:?}:\n{text}");
    assert!(text.contains("--schema-id-missing pass"), "{text}");
    // Nothing from the unmapped record on was written.
    let written = consume_all(&broker(), &target, 0);
    assert!(written.iter().all(|r| r.offset < first_unmapped.offset));

    let target = unique("sid-pass-target");
    let state = temp_dir();
    let args = restore_args(
        &backup,
        &topic,
        &target,
        &state,
        &[
            "--schema-id-mapping",
            mapping.to_str().expect("utf8"),
            "--schema-id-missing",
            "pass",
        ],
    );
    kb_ok(&args);
    let map = |id| match id {
        1 => Some(11),
        3 => Some(13),
        _ => None,
    };
    let want: Vec<Record> = produced.iter().map(|r| remapped(r, &map, true)).collect();
    assert_target(&target, &want);
}

/// A registry server from tests/support, killed when the test ends.
struct Registry {
    port: u16,
    _child: Killed,
}

impl Registry {
    fn start(first_id: u32, user: &str, seed: &serde_json::Value) -> Self {
        let port = free_port();
        let dir = temp_dir();
        let seed_path = dir.path().join("seed.json");
        std::fs::write(&seed_path, seed.to_string()).expect("seed");
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/schema_registry.py"
        );
        let mut child = Command::new("python3")
            .args([
                script,
                "--port",
                &port.to_string(),
                "--first-id",
                &first_id.to_string(),
            ])
            .args(["--user", user, "--seed", seed_path.to_str().expect("utf8")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the test registry");
        let mut first = String::new();
        if let Some(out) = child.stdout.take() {
            let mut lines = BufReader::new(out);
            lines.read_line(&mut first).expect("registry output");
            // Keep draining its request log so it never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while lines.read_line(&mut sink).is_ok_and(|n| n > 0) {
                    sink.clear();
                }
            });
        }
        assert!(
            first.starts_with("listening"),
            "registry did not start: {first}"
        );
        drop(dir);
        Self {
            port,
            _child: Killed(child),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// GET `path` with basic auth `user` (may be empty); the JSON body.
    fn get(&self, path: &str, user: &str) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        let auth = if user.is_empty() {
            String::new()
        } else {
            use base64_lite::encode;
            format!("Authorization: Basic {}\r\n", encode(user.as_bytes()))
        };
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
        )
        .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {resp}"))
    }
}

/// Base64 for one basic-auth header (the test needs nothing more).
mod base64_lite {
    pub fn encode(input: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_mode_copies_schemas_with_references_and_survives_a_kill() {
    if skip_without_servers() {
        return;
    }
    // Source: common v1 (ID 1), orders-value (ID 2, references common v1), orders-key (ID 3).
    let source = Registry::start(
        1,
        "",
        &serde_json::json!([
            {"subject": "common", "schema": "syntax = \"proto3\"; message Money { int64 cents = 1; }", "schemaType": "PROTOBUF"},
            {"subject": "orders-value", "schema": "syntax = \"proto3\"; import \"common.proto\"; message Order { Money total = 1; }", "schemaType": "PROTOBUF",
             "references": [{"name": "common.proto", "subject": "common", "version": 1}]},
            {"subject": "orders-key", "schema": "{\"type\":\"string\"}"},
        ]),
    );
    // Target: numbering from 500, behind basic auth, and "common" already has another v1,
    // so the copied reference must point at the version the target gives it (2).
    let target_reg = Registry::start(
        500,
        "restore:s3cret",
        &serde_json::json!([{"subject": "common", "schema": "syntax = \"proto3\"; message Other {}", "schemaType": "PROTOBUF"}]),
    );
    let total = 3000;
    // A broker of the test's own: a killed producer can make tansu panic (it is restarted),
    // and 3,000 records would slow the shared broker for every later test.
    let mut own = RestartingBroker::start();
    let b = leak(own.addr());
    let (topic, produced, backup) = backed_up(b, "sid-registry", &records(total, 3, &[2])).await;
    let target_url = format!("http://restore:s3cret@127.0.0.1:{}", target_reg.port);
    let src_url = source.url();
    let registry_flags = [
        "--source-schema-registry",
        src_url.as_str(),
        "--target-schema-registry",
        target_url.as_str(),
    ];

    // Wrong credentials: refused before anything is written, naming the fix.
    let target = unique("sid-registry-target");
    let state = temp_dir();
    let bad_url = target_reg.url().replace("http://", "http://restore:wrong@");
    let mut args = restore_args(&backup, &topic, &target, &state, &[]);
    args.extend([
        "--source-schema-registry",
        &src_url,
        "--target-schema-registry",
        &bad_url,
    ]);
    on(&mut args, b);
    let err = kb_err(&args, "refused the credentials");
    assert!(err.contains("user:password@"), "{err}");
    assert!(!topic_exists(b, &target), "nothing may be written");

    // Dry run: lists the source registry's schemas, to be registered when met.
    let mut args = restore_args(&backup, &topic, &target, &state, &["--dry-run"]);
    args.extend(registry_flags);
    on(&mut args, b);
    let out = kb_ok(&args);
    assert!(out.contains("Schema ID 2 (orders-value v1)"), "{out}");
    assert!(out.contains("Schema ID 3 (orders-key v1)"), "{out}");

    // The restore, slowed down so it can be killed mid-run, then rerun to the end.
    let mut args = restore_args(
        &backup,
        &topic,
        &target,
        &state,
        &[
            "--checkpoint-interval",
            "100ms",
            "--max-records-per-sec",
            "1000",
        ],
    );
    args.extend(registry_flags);
    on(&mut args, b);
    kill_mid_restore_and_rerun(
        &args,
        &state.path().join("restore.log"),
        &mut own,
        (&target, 0),
        (total as i64) * 2 / 5,
    )
    .await;

    let auth = "restore:s3cret";
    let common = target_reg.get("/subjects/common/versions/2", auth);
    assert_eq!(
        common["schema"],
        "syntax = \"proto3\"; message Money { int64 cents = 1; }"
    );
    let value = target_reg.get("/subjects/orders-value/versions/1", auth);
    assert_eq!(
        value["references"][0]["version"], 2,
        "the reference points at the target's version: {value}"
    );
    let key = target_reg.get("/subjects/orders-key/versions/1", auth);
    let (value_id, key_id) = (
        value["id"].as_u64().expect("id") as u32,
        key["id"].as_u64().expect("id") as u32,
    );
    assert!(value_id >= 500 && key_id >= 500 && value_id != key_id);
    let map = |id| match id {
        2 => Some(value_id),
        3 => Some(key_id),
        _ => None,
    };
    let want: Vec<Record> = produced.iter().map(|r| remapped(r, &map, true)).collect();
    own.keep_up();
    assert_same_records(&want, &consume_all(b, &target, 0));
}

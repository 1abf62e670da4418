//! gRPC hardening against a real coordinator process: a shared token refuses callers
//! without it, and TLS with client certificates (mTLS) refuses callers without a certificate
//! signed by the configured CA, while a properly authenticated worker restores a backup.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn start(args: &[&str], log: &Path) -> Killed {
    let file = std::fs::File::create(log).expect("log");
    Killed(
        Command::new(bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn"),
    )
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed to make test certificates");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate.
fn make_pki(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kb-test-ca",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    for name in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
    }
}

#[test]
fn token_is_required_by_every_service() {
    if skip_without_servers() {
        return;
    }
    let dir = temp_dir();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let ledger = dir.path().join("ledger");
    let _coord = start(
        &[
            "coordinator",
            "--listen",
            &listen,
            "--state-dir",
            ledger.to_str().expect("p"),
            "--token",
            "s3cret-token",
        ],
        &dir.path().join("c.log"),
    );
    wait_port(port);
    kb_err(&["list-plans", "--coordinator", &url], "requires a token");
    kb_err(
        &["list-plans", "--coordinator", &url, "--token", "wrong"],
        "invalid token",
    );
    kb_ok(&[
        "list-plans",
        "--coordinator",
        &url,
        "--token",
        "s3cret-token",
    ]);
    // A worker without the token is refused and says why.
    let o = Command::new(bin())
        .args(["worker", "--coordinator", &url])
        .env_remove("KAFKA_BACKUP_TOKEN")
        .output()
        .expect("worker");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("requires a token"), "{}", stderr(&o));
    let log = std::fs::read_to_string(dir.path().join("c.log")).unwrap_or_default();
    assert!(
        !log.contains("s3cret-token"),
        "the token must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_clients_without_a_certificate_and_restores_with_one() {
    if skip_without_servers() {
        return;
    }
    let dir = temp_dir();
    make_pki(dir.path());
    let p = |f: &str| dir.path().join(f).to_str().expect("p").to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("https://localhost:{port}");
    let ledger = p("ledger");
    let _coord = start(
        &[
            "coordinator",
            "--listen",
            &listen,
            "--state-dir",
            &ledger,
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.pem"),
            "--token",
            "t0k",
        ],
        &dir.path().join("c.log"),
    );
    wait_port(port);
    let ca = p("ca.pem");
    let (cert, key) = (p("client.pem"), p("client.key"));
    // Plain text, no client certificate, wrong CA: all refused.
    kb_err(
        &[
            "list-plans",
            "--coordinator",
            &format!("http://localhost:{port}"),
            "--token",
            "t0k",
        ],
        "error",
    );
    kb_err(
        &[
            "list-plans",
            "--coordinator",
            &url,
            "--token",
            "t0k",
            "--tls-ca",
            &ca,
        ],
        "error",
    );
    kb_ok(&[
        "list-plans",
        "--coordinator",
        &url,
        "--token",
        "t0k",
        "--tls-ca",
        &ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);

    // A real restore through the secured coordinator.
    let topic = unique("tls-src");
    create_topic(&broker(), &topic, 1).await;
    let src = produce(
        &broker(),
        &topic,
        0,
        &simple_records(40, 1_720_000_000_000, 5),
    )
    .await;
    let backup = backup_local(&broker(), &topic, "bk");
    let target = format!("{topic}-restored");
    let auth = [
        "--token",
        "t0k",
        "--tls-ca",
        ca.as_str(),
        "--tls-cert",
        cert.as_str(),
        "--tls-key",
        key.as_str(),
    ];
    let mut worker_args = vec!["worker", "--coordinator", url.as_str()];
    worker_args.extend_from_slice(&auth);
    let _worker = start(&worker_args, &dir.path().join("w.log"));
    let b = broker();
    let mut restore = vec![
        "restore",
        "--coordinator",
        url.as_str(),
        "--storage",
        backup.path().to_str().expect("p"),
        "--backup-id",
        "bk",
        "--source-topic",
        topic.as_str(),
        "--target-topic",
        target.as_str(),
        "--bootstrap-servers",
        b.as_str(),
        "--create-topics",
    ];
    restore.extend_from_slice(&auth);
    let out = kb_ok(&restore);
    assert!(out.contains("completed"), "{out}");
    assert_same_records(&src, &consume_all(&broker(), &target, 0));
}

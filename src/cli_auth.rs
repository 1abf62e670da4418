//! gRPC security flags: what clients (workers, `restore --coordinator`, status/cancel) send
//! and what the coordinator requires.

use anyhow::Result;
use clap::Args;
use kafka_backup_common::restore_options::parse_duration;
use kafka_backup_coordinator::security::ServerSecurity;
use kafka_backup_worker::connect::ClientSecurity;
use std::path::PathBuf;

#[derive(Args, Clone, Default)]
pub struct ClientAuthArgs {
    /// Shared token for the coordinator.
    #[arg(long, env = "KAFKA_BACKUP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) of the coordinator; enables TLS (use an https:// URL).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mTLS.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Name to verify in the coordinator certificate (default: the URL host).
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ClientAuthArgs {
    pub fn security(&self) -> ClientSecurity {
        ClientSecurity {
            token: self.token.clone().filter(|t| !t.is_empty()),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_domain: self.tls_domain.clone(),
        }
    }
}

#[derive(Args, Clone)]
pub struct ServerAuthArgs {
    /// Require this shared token from every client and worker.
    #[arg(long, env = "KAFKA_BACKUP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve TLS with this certificate (PEM).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Key (PEM) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    #[arg(long)]
    pub tls_client_ca: Option<PathBuf>,
    /// Longest a unary call may take, e.g. "30s".
    #[arg(long, default_value = "30s")]
    pub request_timeout: String,
    /// Most calls served at once across all connections.
    #[arg(long, default_value_t = 256)]
    pub max_concurrent_requests: usize,
}

impl ServerAuthArgs {
    pub fn security(&self) -> Result<ServerSecurity> {
        if self.max_concurrent_requests == 0 {
            anyhow::bail!("--max-concurrent-requests must be > 0");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some()
            || (self.tls_client_ca.is_some() && self.tls_cert.is_none())
        {
            anyhow::bail!("--tls-cert and --tls-key go together (and --tls-client-ca needs both)");
        }
        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-client-ca", &self.tls_client_ca),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    anyhow::bail!("{flag} {}: no such file", p.display());
                }
            }
        }
        Ok(ServerSecurity {
            token: self.token.clone().filter(|t| !t.is_empty()),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            request_timeout: parse_duration("--request-timeout", &self.request_timeout)?,
            max_concurrent_requests: self.max_concurrent_requests,
        })
    }
}

//! Server side of gRPC hardening: optional TLS (with client-certificate verification for
//! mTLS), a shared-token check on every call of the restore API (health checks and
//! reflection carry no secrets and stay open for probes), per-request timeouts and a
//! concurrency limit.
//! A coordinator hands out storage and cluster credentials with every lease, so on any
//! network but loopback it should run with TLS and a token or mTLS.

use std::path::PathBuf;
use std::time::Duration;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

#[derive(Debug, Clone)]
pub struct ServerSecurity {
    /// Require `authorization: Bearer <token>` on every call.
    pub token: Option<String>,
    /// Serve TLS with this certificate and key.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
}

impl Default for ServerSecurity {
    fn default() -> Self {
        Self {
            token: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("--tls-cert and --tls-key go together (and --tls-client-ca needs both)")]
    Incomplete,
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl ServerSecurity {
    /// The TLS configuration, if TLS is enabled. Reads the files now so a typo fails at start.
    pub fn tls(&self) -> Result<Option<ServerTlsConfig>, SecurityError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (None, None, None) => Ok(None),
            (Some(c), Some(k), ca) => {
                let mut tls = ServerTlsConfig::new()
                    .identity(Identity::from_pem(read("certificate", c)?, read("key", k)?));
                if let Some(ca) = ca {
                    tls = tls.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
                }
                Ok(Some(tls))
            }
            _ => Err(SecurityError::Incomplete),
        }
    }

    /// The per-call check: the token, when one is configured.
    pub fn interceptor(&self) -> TokenCheck {
        TokenCheck {
            expected: self
                .token
                .as_ref()
                .map(|t| format!("Bearer {t}").into_bytes()),
        }
    }
}

/// Refuses calls without the shared token.
#[derive(Clone)]
pub struct TokenCheck {
    expected: Option<Vec<u8>>,
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl tonic::service::Interceptor for TokenCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(req);
        };
        match req.metadata().get("authorization") {
            Some(v) if same_bytes(v.as_bytes(), expected) => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "invalid token: check --token / KAFKA_BACKUP_TOKEN",
            )),
            None => Err(Status::unauthenticated(
                "this coordinator requires a token: pass --token or set KAFKA_BACKUP_TOKEN",
            )),
        }
    }
}

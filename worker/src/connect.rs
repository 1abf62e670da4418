//! Client side of the coordinator connection, shared by workers and every CLI client:
//! endpoint, optional TLS (server CA, and a client identity for mTLS) and the shared-token
//! header. One place builds channels so a worker and `restore-status` can never disagree on
//! how to reach a secured coordinator.

use kafka_backup_proto::restore_plans_client::RestorePlansClient;
use kafka_backup_proto::restore_workers_client::RestoreWorkersClient;
use std::path::PathBuf;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

/// How to authenticate to the coordinator.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// Shared token sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// CA that signed the coordinator's certificate (enables TLS; use an https:// URL).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for mTLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Name to verify the coordinator certificate against (default: the URL host).
    pub tls_domain: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid coordinator URL {url:?}: {reason}; use http://HOST:PORT, or https://HOST:PORT with --tls-ca")]
    BadUrl { url: String, reason: String },
    #[error("cannot read {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    #[error("the token contains characters not allowed in a header; use printable ASCII")]
    BadToken,
    #[error(
        "coordinator {url} is unreachable: {reason}; check that it runs and the address is right"
    )]
    Unreachable { url: String, reason: String },
}

/// Adds the bearer token and the caller's trace context to every request.
#[derive(Clone)]
pub struct TokenInterceptor {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        // Trace context of the calling span, so the coordinator's spans join its trace.
        let tp = kafka_backup_common::telemetry::current_traceparent();
        if let Ok(v) = tp.parse::<MetadataValue<tonic::metadata::Ascii>>() {
            if !tp.is_empty() {
                req.metadata_mut().insert("traceparent", v);
            }
        }
        Ok(req)
    }
}

pub type AuthChannel = InterceptedService<Channel, TokenInterceptor>;
pub type WorkersClient = RestoreWorkersClient<AuthChannel>;
pub type PlansClient = RestorePlansClient<AuthChannel>;

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|e| ConnectError::File {
        what,
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A configured (not yet connected) endpoint plus the interceptor to use with it.
#[derive(Clone)]
pub struct CoordinatorEndpoint {
    pub url: String,
    endpoint: Endpoint,
    interceptor: TokenInterceptor,
}

impl CoordinatorEndpoint {
    pub fn new(url: &str, sec: &ClientSecurity) -> Result<Self, ConnectError> {
        let bad = |reason: String| ConnectError::BadUrl {
            url: url.to_string(),
            reason,
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "use http://host:port, or https://host:port with TLS".into()
            ));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30));
        if sec.tls_ca.is_some() || sec.tls_cert.is_some() {
            if !url.starts_with("https://") {
                return Err(bad("TLS options need an https:// URL".into()));
            }
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &sec.tls_ca {
                tls = tls.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
            }
            match (&sec.tls_cert, &sec.tls_key) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(
                        read("client certificate", c)?,
                        read("client key", k)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(ConnectError::Tls(
                        "--tls-cert and --tls-key go together".into(),
                    ))
                }
            }
            if let Some(d) = &sec.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
        }
        let header = match &sec.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<tonic::metadata::Ascii>>()
                    .map_err(|_| ConnectError::BadToken)?,
            ),
            None => None,
        };
        Ok(Self {
            url: url.to_string(),
            endpoint,
            interceptor: TokenInterceptor { header },
        })
    }

    pub async fn channel(&self) -> Result<AuthChannel, ConnectError> {
        let ch = self
            .endpoint
            .connect()
            .await
            .map_err(|e| ConnectError::Unreachable {
                url: self.url.clone(),
                reason: std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |s| s.to_string()),
            })?;
        Ok(InterceptedService::new(ch, self.interceptor.clone()))
    }

    /// Message limits are set explicitly (see `kafka_backup_proto::MAX_MESSAGE_BYTES`).
    pub async fn plans(&self) -> Result<PlansClient, ConnectError> {
        Ok(Self::plans_over(self.channel().await?))
    }

    /// A plans client that connects on its first call. For a coordinator this process has
    /// just bound on loopback, which answers at once: a dry run makes no call through it at
    /// all (it submits in process), and connecting up front cost it 0.5-3 ms.
    pub fn plans_lazily(&self) -> PlansClient {
        let ch = self.endpoint.connect_lazy();
        Self::plans_over(InterceptedService::new(ch, self.interceptor.clone()))
    }

    fn plans_over(ch: AuthChannel) -> PlansClient {
        RestorePlansClient::new(ch)
            .max_decoding_message_size(kafka_backup_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(kafka_backup_proto::MAX_MESSAGE_BYTES)
    }

    pub async fn workers(&self) -> Result<WorkersClient, ConnectError> {
        Ok(RestoreWorkersClient::new(self.channel().await?)
            .max_decoding_message_size(kafka_backup_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(kafka_backup_proto::MAX_MESSAGE_BYTES))
    }
}

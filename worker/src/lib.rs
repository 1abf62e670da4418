//! The restore worker: a stateless loop that leases one partition task at a time from the
//! coordinator and restores it (see `task.rs` for the data path and the exactly-once
//! argument). Everything it knows comes with the lease, so a worker can die at any moment
//! and another picks the task up from the ledger's checkpoint.

pub mod connect;
pub mod lease;
pub mod metrics;
pub mod pages;
pub mod produce;
pub mod reconcile;
pub mod source;
pub mod task;

use connect::{ClientSecurity, ConnectError, CoordinatorEndpoint, WorkersClient};
use kafka_backup_proto::{AcquireLeaseRequest, RegisterRequest};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub coordinator_url: String,
    pub worker_id: String,
    /// Only work on this plan and return once it is finished (embedded mode).
    pub plan_id: Option<String>,
    pub security: ClientSecurity,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the coordinator refused this worker: {0}")]
    Refused(String),
}

/// A fresh worker id: host name plus a random suffix.
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &id[..8])
}

async fn connect(endpoint: &CoordinatorEndpoint) -> WorkersClient {
    let mut backoff = Duration::from_millis(200);
    loop {
        match endpoint.workers().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "coordinator unreachable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the lease loop. Reconnects with backoff while the coordinator is away; returns only
/// when `plan_id` is set and that plan is finished.
pub async fn run_worker(cfg: WorkerConfig) -> Result<(), WorkerError> {
    let endpoint = CoordinatorEndpoint::new(&cfg.coordinator_url, &cfg.security)?;
    let mut backoff = Duration::from_millis(200);
    'connect: loop {
        let mut client = connect(&endpoint).await;
        let reg = client
            .register(RegisterRequest {
                worker_id: cfg.worker_id.clone(),
                hostname: std::env::var("HOSTNAME").unwrap_or_default(),
            })
            .await;
        let heartbeat = match reg {
            Ok(r) => Duration::from_millis(r.into_inner().heartbeat_interval_ms.max(100)),
            Err(e) if e.code() == tonic::Code::Unauthenticated => {
                return Err(WorkerError::Refused(e.message().to_string()));
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "register failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue 'connect;
            }
        };
        backoff = Duration::from_millis(200);
        let mut producers = produce::ProducerCache::default();
        loop {
            let sent = Instant::now();
            let resp = client
                .acquire_lease(AcquireLeaseRequest {
                    worker_id: cfg.worker_id.clone(),
                    plan_id: cfg.plan_id.clone().unwrap_or_default(),
                })
                .await;
            match resp {
                Ok(r) => {
                    let r = r.into_inner();
                    if let Some(lease) = r.lease {
                        task::run_task(
                            client.clone(),
                            &cfg.worker_id,
                            lease,
                            sent,
                            heartbeat,
                            &mut producers,
                        )
                        .await;
                        continue;
                    }
                    if r.plan_finished {
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(r.retry_after_ms.clamp(50, 5000)))
                        .await;
                }
                Err(e) => {
                    // A lease this worker cannot decode (too large, malformed) lands here too;
                    // the coordinator fails such a task after it is re-granted a few times
                    // without progress, so this loop cannot spin on it forever.
                    tracing::warn!(code = ?e.code(), error = %e.message(), "acquire failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            }
        }
    }
}

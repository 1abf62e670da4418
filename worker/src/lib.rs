//! The restore worker: stateless lease loops (`--max-tasks` of them) that each lease one
//! partition task at a time from the coordinator and restore it (see `task.rs` for the data path and the exactly-once
//! argument). Everything it knows comes with the lease, so a worker can die at any moment
//! and another picks the task up from the ledger's checkpoint.

pub mod connect;
pub mod health;
pub mod lease;
pub mod merge;
pub mod metrics;
pub mod pages;
pub mod produce;
pub mod reconcile;
pub mod schema_remap;
pub mod shutdown;
pub mod source;
pub mod task;

use connect::{ClientSecurity, ConnectError, CoordinatorEndpoint, WorkersClient};
use kafka_backup_proto::{AcquireLeaseRequest, RegisterRequest};
use shutdown::Shutdown;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub coordinator_url: String,
    pub worker_id: String,
    /// Only work on this plan and return once it is finished (embedded mode).
    pub plan_id: Option<String>,
    pub security: ClientSecurity,
    /// Leases held at once (one partition task each). A worker process is a node's worth of
    /// capacity: one partition has one produce request in flight at a time (idempotence keeps
    /// it in order), so a node restores several partitions at once to use its network and
    /// the target's brokers.
    pub max_tasks: usize,
}

/// The default number of leases a worker holds at once: the number of cores, at least 2.
pub fn default_max_tasks() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2)
        .max(2)
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

/// Registers with the coordinator (retrying while it is away) and returns the heartbeat
/// interval it asks for.
async fn register(
    endpoint: &CoordinatorEndpoint,
    cfg: &WorkerConfig,
) -> Result<Duration, WorkerError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut client = connect(endpoint).await;
        let reg = client
            .register(RegisterRequest {
                worker_id: cfg.worker_id.clone(),
                hostname: std::env::var("HOSTNAME").unwrap_or_default(),
            })
            .await;
        match reg {
            Ok(r) => {
                return Ok(Duration::from_millis(
                    r.into_inner().heartbeat_interval_ms.max(100),
                ))
            }
            Err(e) if e.code() == tonic::Code::Unauthenticated => {
                return Err(WorkerError::Refused(e.message().to_string()));
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "register failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the worker: `max_tasks` lease loops, each holding at most one lease at a time, each
/// fenced on its own (a stale epoch stops that task only). Reconnects with backoff while the
/// coordinator is away; returns when `plan_id` is set and that plan is finished, when the
/// coordinator refuses this worker, or once `shutdown` is requested and every task has been
/// handed back.
pub async fn run_worker(cfg: WorkerConfig, shutdown: Shutdown) -> Result<(), WorkerError> {
    let endpoint = CoordinatorEndpoint::new(&cfg.coordinator_url, &cfg.security)?;
    let heartbeat = tokio::select! {
        r = register(&endpoint, &cfg) => r?,
        _ = shutdown.requested() => return Ok(()),
    };
    tracing::info!(worker = %cfg.worker_id, max_tasks = cfg.max_tasks, "worker ready");
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..cfg.max_tasks.max(1) {
        let (endpoint, cfg, shutdown) = (endpoint.clone(), cfg.clone(), shutdown.clone());
        slots.spawn(async move { lease_loop(&endpoint, &cfg, heartbeat, &shutdown).await });
    }
    while let Some(done) = slots.join_next().await {
        match done {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
            Err(e) => tracing::error!(error = %e, "a lease loop ended abnormally"),
        }
    }
    Ok(())
}

/// One lease at a time: acquire, restore, repeat. Each loop keeps its own idle producer for
/// the next task of the same plan (see `ProducerCache`): a producer shared by concurrent
/// tasks would put their partitions behind one librdkafka broker thread, whose busy-polling
/// with queued idempotent batches is what limited several partitions at once (see
/// `produce.rs`); per-loop producers keep each partition's requests independent.
async fn lease_loop(
    endpoint: &CoordinatorEndpoint,
    cfg: &WorkerConfig,
    heartbeat: Duration,
    shutdown: &Shutdown,
) -> Result<(), WorkerError> {
    let mut client = connect(endpoint).await;
    let mut producers = produce::ProducerCache::default();
    let mut backoff = Duration::from_millis(200);
    // A request in flight is not cancelled on shutdown: a lease it brings is handed back at
    // once rather than left to expire.
    while !shutdown.is_requested() {
        let sent = Instant::now();
        let resp = client
            .acquire_lease(AcquireLeaseRequest {
                worker_id: cfg.worker_id.clone(),
                plan_id: cfg.plan_id.clone().unwrap_or_default(),
            })
            .await;
        match resp {
            Ok(r) => {
                backoff = Duration::from_millis(200);
                let r = r.into_inner();
                if let Some(lease) = r.lease {
                    task::run_task(
                        client.clone(),
                        &cfg.worker_id,
                        lease,
                        sent,
                        heartbeat,
                        &mut producers,
                        shutdown,
                    )
                    .await;
                    continue;
                }
                if r.plan_finished {
                    return Ok(());
                }
                let wait = Duration::from_millis(r.retry_after_ms.clamp(50, 5000));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.requested() => {}
                }
            }
            Err(e) if e.code() == tonic::Code::Unauthenticated => {
                return Err(WorkerError::Refused(e.message().to_string()));
            }
            Err(e) => {
                // A lease this worker cannot decode (too large, malformed) lands here too;
                // the coordinator fails such a task after it is re-granted a few times
                // without progress, so this loop cannot spin on it forever.
                tracing::warn!(code = ?e.code(), error = %e.message(), "acquire failed; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.requested() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    c = connect(endpoint) => client = c,
                    _ = shutdown.requested() => return Ok(()),
                }
            }
        }
    }
    Ok(())
}

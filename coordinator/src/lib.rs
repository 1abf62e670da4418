//! The restore coordinator: accepts plans, splits them into partition tasks, and leases
//! those tasks to workers over gRPC, keeping every lease and checkpoint in a sled ledger.
//! The embedded mode of `kafka-backup restore` runs this same coordinator in-process on a
//! loopback port, so there is one restore engine, not two.

pub mod breaker;
pub mod grpc;
pub mod health;
pub mod ledger;
pub mod metrics;
pub mod offset_reset;
pub mod offsets;
pub mod plan_service;
pub mod planner;
pub mod report;
pub mod schema_plan;
pub mod security;
pub mod status;
pub mod target;
pub mod topic_setup;
pub mod verify;
pub mod worker_service;

use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::restore_plans_server::RestorePlansServer;
use kafka_backup_proto::restore_workers_server::RestoreWorkersServer;
use kafka_backup_proto::RestoreSpec;
use ledger::Ledger;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Security(#[from] security::SecurityError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("gRPC reflection could not load the API descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Lease timing and retry policy.
#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// How long a lease lives without a heartbeat.
    pub lease_ttl_ms: u64,
    /// Extra wait after expiry before a task is re-granted, covering produce requests that
    /// the old holder sent just before its own deadline and the broker has yet to apply.
    pub grace_ms: u64,
    /// Grants per task before a retryable failure becomes final.
    pub max_attempts: u32,
    /// Grants in a row without progress (the holder's lease expired, or it failed before
    /// restoring anything) after which a task is failed instead of re-granted forever.
    pub max_stalled_grants: u32,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        Self {
            lease_ttl_ms: 30_000,
            grace_ms: 5_000,
            max_attempts: 8,
            max_stalled_grants: 5,
        }
    }
}

/// Whether a coordinator serves gRPC server reflection. A coordinator others connect to does
/// (grpcurl and other clients list and call its API without our .proto files); the one a
/// restore embeds for itself on a private loopback port does not: building the reflection
/// services decodes the API's descriptors, which cost an embedded dry run page faults and CPU
/// for nothing anyone can ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    Served,
    Omitted,
}

/// Shared state of both gRPC services.
pub struct Coordinator {
    pub ledger: Arc<Ledger>,
    /// Applies ledger changes in order, off the async threads (see `grpc::LedgerThread`).
    pub changes: grpc::LedgerThread,
    pub settings: CoordinatorSettings,
    /// Per-plan circuit breakers for target/object-store outages (in memory).
    pub breakers: breaker::Breakers,
    /// Bumped whenever a task completes or fails, so plan watchers see a plan end at once
    /// instead of at their next poll.
    pub task_ends: tokio::sync::watch::Sender<u64>,
    /// Set on shutdown: no more grants, while reports of held leases are still answered.
    draining: AtomicBool,
}

impl Coordinator {
    /// Wakes every plan watcher (see `task_ends`).
    pub fn task_ended(&self) {
        self.task_ends.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn new(ledger: Ledger, settings: CoordinatorSettings) -> Arc<Self> {
        let ledger = Arc::new(ledger);
        Arc::new(Self {
            changes: grpc::LedgerThread::start(ledger.clone()),
            ledger,
            settings,
            breakers: breaker::Breakers::default(),
            task_ends: tokio::sync::watch::Sender::new(0),
            draining: AtomicBool::new(false),
        })
    }

    /// Whether shutdown has begun (see `serve`).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Serves both services on `listener`, with the TLS, token, timeout and concurrency
    /// settings of `security`, plus the standard gRPC health service and server reflection
    /// (without the token, so Kubernetes probes and grpcurl-style tools work).
    ///
    /// When `shutdown` resolves, the coordinator drains: health turns NOT_SERVING and no lease
    /// is granted, while heartbeats, checkpoints and completions of the leases held are still
    /// answered for `drain` (so workers' last reports land and load balancers see it leave);
    /// then the server stops accepting calls, finishes the calls in flight, and the ledger is
    /// flushed.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        security: &security::ServerSecurity,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        drain: Duration,
        reflection: Reflection,
    ) -> Result<(), ServeError> {
        let check = security.interceptor();
        // Message limits are explicit on both sides (see kafka_backup_proto::MAX_MESSAGE_BYTES).
        let limit = kafka_backup_proto::MAX_MESSAGE_BYTES;
        let plans = RestorePlansServer::new(plan_service::PlanService::new(self.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let plans = tonic::service::interceptor::InterceptedService::new(plans, check.clone());
        let workers = RestoreWorkersServer::new(worker_service::WorkerService::new(self.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let workers = tonic::service::interceptor::InterceptedService::new(workers, check);
        let (health, health_service) = health::CoordinatorHealth::serving().await;
        let (reflection_v1, reflection_v1alpha) = match reflection {
            Reflection::Served => {
                let (v1, v1alpha) = health::reflection()?;
                (Some(v1), Some(v1alpha))
            }
            Reflection::Omitted => (None, None),
        };
        // Replies are a few small HTTP/2 frames; with Nagle's algorithm the last of them waited
        // for the client's delayed ACK (~40 ms on Linux) in about half of all calls.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(stream) = &conn {
                let _ = stream.set_nodelay(true);
            }
            conn
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = security.tls()? {
            builder = builder.tls_config(tls)?;
        }
        let me = self.clone();
        let drained = async move {
            shutdown.await;
            tracing::info!(drain = ?drain, "shutting down: no new leases; answering held leases' reports");
            me.draining.store(true, Ordering::SeqCst);
            health.not_serving().await;
            tokio::time::sleep(drain).await;
        };
        builder
            .timeout(security.request_timeout)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                security.max_concurrent_requests,
            ))
            .add_service(health_service)
            .add_optional_service(reflection_v1)
            .add_optional_service(reflection_v1alpha)
            .add_service(plans)
            .add_service(workers)
            .serve_with_incoming_shutdown(incoming, drained)
            .await?;
        let ledger = self.ledger.clone();
        match tokio::task::spawn_blocking(move || ledger.flush()).await {
            Ok(Ok(())) => tracing::info!("ledger flushed; coordinator stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "final ledger flush failed"),
            Err(e) => tracing::error!(error = %e, "final ledger flush did not run"),
        }
        Ok(())
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The backup location a plan's spec names, opened with the spec's storage options (an
/// object store's endpoint and credentials), as planning, verification and offset resets
/// read it.
pub fn spec_store(spec: &RestoreSpec) -> Result<BackupStore, StorageError> {
    let options: HashMap<String, String> = spec.storage_options.clone().into_iter().collect();
    BackupStore::open(&spec.storage_url, &options, false)
}

//! The worker's standard gRPC health service (`grpc.health.v1.Health`), for Kubernetes gRPC
//! probes and generic health checkers: SERVING while the worker takes leases, NOT_SERVING
//! from the moment it starts shutting down.

use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on --health-listen {addr}: {source}; give a free host:port, e.g. 0.0.0.0:50052"
)]
pub struct HealthListenError {
    addr: String,
    source: std::io::Error,
}

/// Serves the health service on `addr` in the background and returns its reporter.
pub async fn serve(addr: &str) -> Result<WorkerHealth, HealthListenError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| HealthListenError {
            addr: addr.to_string(),
            source,
        })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(listen = %local, "health endpoint ready (grpc.health.v1.Health)");
    }
    let (reporter, service) = tonic_health::server::health_reporter();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    });
    Ok(WorkerHealth(reporter))
}

/// Sets what the health endpoint answers.
#[derive(Debug, Clone)]
pub struct WorkerHealth(HealthReporter);

impl WorkerHealth {
    /// From now on the worker answers NOT_SERVING (it is shutting down).
    pub async fn not_serving(&self) {
        self.0
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }
}

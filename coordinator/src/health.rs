//! What generic gRPC tools see of the coordinator: the standard health service
//! (`grpc.health.v1.Health`, for Kubernetes probes and load balancers) and server reflection
//! (for grpcurl and similar clients, which then need no proto file). Both are served without
//! the token: they carry no secrets, and probes cannot send one.

use crate::plan_service::PlanService;
use crate::worker_service::WorkerService;
use kafka_backup_proto::restore_plans_server::RestorePlansServer;
use kafka_backup_proto::restore_workers_server::RestoreWorkersServer;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The names whose status the health service reports: the server as a whole ("") and each
/// restore service.
fn service_names() -> [&'static str; 3] {
    use tonic::server::NamedService;
    [
        "",
        <RestorePlansServer<PlanService> as NamedService>::NAME,
        <RestoreWorkersServer<WorkerService> as NamedService>::NAME,
    ]
}

/// Sets what the health service answers for every name it reports.
#[derive(Debug, Clone)]
pub struct CoordinatorHealth(HealthReporter);

impl CoordinatorHealth {
    /// The reporter (everything SERVING) and the service to add to the server.
    pub async fn serving() -> (
        Self,
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    ) {
        let (reporter, service) = tonic_health::server::health_reporter();
        let health = Self(reporter);
        health.set_all(ServingStatus::Serving).await;
        (health, service)
    }

    /// From now on every name answers NOT_SERVING (the coordinator is shutting down).
    pub async fn not_serving(&self) {
        self.set_all(ServingStatus::NotServing).await;
    }

    async fn set_all(&self, status: ServingStatus) {
        for name in service_names() {
            self.0.set_service_status(name, status).await;
        }
    }
}

/// Server reflection over the restore API and the health service, in both protocol
/// versions: grpcurl asks v1 first, many client libraries only v1alpha.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kafka_backup_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

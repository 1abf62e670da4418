//! A coordinator on a loopback port for this process only: what embedded restores and local
//! ledger reads (`show-offset-mapping` without `--coordinator`) run against, so they use the
//! same gRPC API and the same coordinator code as the distributed mode. The one exception is
//! submitting a plan, which calls the same plan service in process (see `submit_plan`).

use crate::RunError;
use kafka_backup_coordinator::ledger::Ledger;
use kafka_backup_coordinator::plan_service::PlanService;
use kafka_backup_coordinator::security::ServerSecurity;
use kafka_backup_coordinator::{Coordinator, CoordinatorSettings, Reflection, ServeError};
use kafka_backup_proto::restore_plans_server::RestorePlans;
use kafka_backup_proto::{SubmitPlanRequest, SubmitPlanResponse};
use std::time::Duration;
use tokio::net::TcpListener;

pub struct LocalCoordinator {
    pub url: String,
    /// The same plan service the server runs, for submitting without the loopback round trip.
    plans: PlanService,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl LocalCoordinator {
    pub async fn start(ledger: Ledger, settings: CoordinatorSettings) -> Result<Self, RunError> {
        let coord = Coordinator::new(ledger, settings);
        let plans = PlanService::new(coord.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| RunError::Io {
                what: "cannot listen on a loopback port for the embedded coordinator".into(),
                source: e,
            })?;
        let url = listener
            .local_addr()
            .map(|a| format!("http://{a}"))
            .map_err(|e| RunError::Io {
                what: "cannot read the embedded coordinator's address".into(),
                source: e,
            })?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Loopback only, so no token or TLS; no request timeout either, since the embedded
        // client follows the plan over one long stream.
        let security = ServerSecurity {
            request_timeout: Duration::from_secs(24 * 3600),
            ..ServerSecurity::default()
        };
        let server = tokio::spawn(async move {
            coord
                .serve(
                    listener,
                    &security,
                    async {
                        let _ = stop_rx.await;
                    },
                    Duration::ZERO,
                    Reflection::Omitted,
                )
                .await
        });
        Ok(Self {
            url,
            plans,
            stop,
            server,
        })
    }

    /// Plans (and, unless it is a dry run, records) a restore by calling the plan service in
    /// this process rather than through the server: the same code and the same answers, minus
    /// an HTTP/2 round trip over loopback that cost 1-3 ms of a ~20 ms dry run. Its span is a
    /// child of the caller's, so traces look as they do through gRPC.
    pub async fn submit_plan(
        &self,
        req: SubmitPlanRequest,
    ) -> Result<SubmitPlanResponse, tonic::Status> {
        self.plans
            .submit_plan(tonic::Request::new(req))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Stops serving. The ledger makes every change durable before it is acknowledged, so
    /// nothing waits for the in-process connections to wind down (a graceful close cost
    /// ~45 ms per run).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.abort();
        let _ = self.server.await;
    }
}

//! `coordinator`, `worker`, `restore-status`, `restore-cancel`, `restore-resume` and
//! `list-plans`: the distributed mode's processes and its gRPC clients.

use crate::cli_auth::{ClientAuthArgs, ServerAuthArgs};
use crate::cli_output::{print_json, print_status, status_json, Format};
use crate::cli_restore::exit_code;
use anyhow::{bail, Context, Result};
use clap::Args;
use kafka_backup_common::restore_options::parse_duration;
use kafka_backup_coordinator::ledger::Ledger;
use kafka_backup_coordinator::{Coordinator, CoordinatorSettings};
use kafka_backup_proto::PlanRef;
use kafka_backup_run::{plan_state, rpc, Coordinated, Session};
use kafka_backup_worker::shutdown::Shutdown;
use kafka_backup_worker::{default_max_tasks, default_worker_id, run_worker, WorkerConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Address to listen on, e.g. 0.0.0.0:50051.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Directory of the sled ledger.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Lease time-to-live, e.g. "30s". Workers only hand records to the producer while they
    /// would be delivered (message timeout = 40% of this) before the lease ends, so a slow
    /// target cluster needs a longer TTL.
    #[arg(long, default_value = "30s")]
    pub lease_ttl: String,
    /// Wait after a lease expires before re-granting it, e.g. "3s".
    #[arg(long, default_value = "5s")]
    pub lease_grace: String,
    /// Fail a task (with the reason, in the plan status) once it has been granted this many
    /// times in a row without progress: its holders keep dying, stalling or failing before
    /// they restore anything. Without a limit such a task would be re-granted forever.
    #[arg(long, default_value_t = 5)]
    pub max_stalled_grants: u32,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 0.0.0.0:9464.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// On SIGTERM/SIGINT: how long to keep answering the reports of held leases (while
    /// granting none and answering health checks NOT_SERVING) before stopping, e.g. "2s".
    #[arg(long, default_value = "2s")]
    pub shutdown_drain: String,
    #[command(flatten)]
    pub auth: ServerAuthArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Coordinator URL, e.g. http://coordinator:50051.
    #[arg(long, env = "KAFKA_BACKUP_COORDINATOR")]
    pub coordinator: String,
    /// Worker id (default: host name plus a random suffix).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// Leases (partition tasks) this process restores at once (default: the number of
    /// cores, at least 2). Each is fenced on its own.
    #[arg(long)]
    pub max_tasks: Option<usize>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g. 0.0.0.0:9465.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve the standard gRPC health service (grpc.health.v1.Health) on this address, for
    /// Kubernetes gRPC probes, e.g. 0.0.0.0:50052.
    #[arg(long)]
    pub health_listen: Option<String>,
    /// On SIGTERM/SIGINT: how long to wait for the tasks held to checkpoint and be handed
    /// back before exiting anyway (their leases then expire), e.g. "20s".
    #[arg(long, default_value = "20s")]
    pub shutdown_grace: String,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

#[derive(Args)]
pub struct PlanSelectArgs {
    #[arg(
        long,
        env = "KAFKA_BACKUP_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,
    /// The plan; or give --backup-id for its most recent plan.
    #[arg(long)]
    pub plan_id: Option<String>,
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Keep following until the plan ends.
    #[arg(long)]
    pub follow: bool,
    /// restore-status only: read the ledger of embedded restores (their --checkpoint-state)
    /// instead of asking a coordinator, e.g. to see how far an interrupted restore got.
    #[arg(long, visible_alias = "state-dir")]
    pub checkpoint_state: Option<std::path::PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

#[derive(Args)]
pub struct ListPlansArgs {
    #[arg(
        long,
        env = "KAFKA_BACKUP_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub coordinator: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

pub async fn coordinator(a: CoordinatorArgs) -> Result<ExitCode> {
    let security = a.auth.security()?;
    let settings = CoordinatorSettings {
        lease_ttl_ms: parse_duration("--lease-ttl", &a.lease_ttl)?.as_millis() as u64,
        grace_ms: parse_duration("--lease-grace", &a.lease_grace)?.as_millis() as u64,
        max_stalled_grants: a.max_stalled_grants,
        ..Default::default()
    };
    let drain = parse_duration("--shutdown-drain", &a.shutdown_drain)?;
    if a.max_stalled_grants == 0 {
        bail!("invalid --max-stalled-grants 0: use 1 or more (5 is the default)");
    }
    // Bind first: a bad or busy --listen must not leave a new state directory behind.
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on --listen {}: give a free host:port, e.g. 0.0.0.0:50051",
                a.listen
            )
        })?;
    let ledger = Ledger::open(&a.state_dir)?;
    tracing::info!(listen = %listener.local_addr()?, state_dir = %a.state_dir.display(), "coordinator ready");
    let coord = Coordinator::new(ledger, settings);
    if let Some(addr) = &a.metrics_listen {
        let ledger = coord.ledger.clone();
        spawn_metrics(addr, move || {
            kafka_backup_coordinator::metrics::render(&ledger, kafka_backup_coordinator::now_ms())
        })
        .await?;
    }
    coord
        .serve(
            listener,
            &security,
            crate::signals::terminated(),
            drain,
            kafka_backup_coordinator::Reflection::Served,
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves Prometheus metrics on `addr` in the background.
async fn spawn_metrics(
    addr: &str,
    render: impl Fn() -> String + Send + Sync + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?;
    tracing::info!(listen = %listener.local_addr()?, "metrics endpoint ready (GET /metrics)");
    tokio::spawn(kafka_backup_common::metrics::serve(listener, render));
    Ok(())
}

pub async fn worker(a: WorkerArgs) -> Result<ExitCode> {
    // A malformed address or unreadable TLS file is an operator error, not an outage to
    // retry forever.
    kafka_backup_worker::connect::CoordinatorEndpoint::new(&a.coordinator, &a.auth.security())?;
    let grace = parse_duration("--shutdown-grace", &a.shutdown_grace)?;
    let max_tasks = a.max_tasks.unwrap_or_else(default_max_tasks);
    if max_tasks == 0 || max_tasks > 256 {
        bail!("invalid --max-tasks {max_tasks}: use 1 to 256");
    }
    let cfg = WorkerConfig {
        coordinator_url: a.coordinator,
        worker_id: a.worker_id.unwrap_or_else(default_worker_id),
        plan_id: None,
        security: a.auth.security(),
        max_tasks,
    };
    tracing::info!(worker = %cfg.worker_id, coordinator = %cfg.coordinator_url, "worker started");
    if let Some(addr) = &a.metrics_listen {
        spawn_metrics(addr, kafka_backup_worker::metrics::render).await?;
    }
    let health = match &a.health_listen {
        Some(addr) => Some(kafka_backup_worker::health::serve(addr).await?),
        None => None,
    };
    let (stop, shutdown) = Shutdown::channel();
    let run = run_worker(cfg, shutdown);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => {
            r?;
            return Ok(ExitCode::SUCCESS);
        }
        _ = crate::signals::terminated() => {}
    }
    tracing::info!(grace = ?grace, "shutting down: no new leases; checkpointing and handing back the tasks held");
    if let Some(h) = &health {
        h.not_serving().await;
    }
    stop.request();
    match tokio::time::timeout(grace, run).await {
        Ok(r) => r?,
        Err(_) => tracing::warn!(
            grace = ?grace,
            "shutdown grace passed with tasks still held; exiting (their leases expire and are re-granted)"
        ),
    }
    tracing::info!("worker stopped");
    Ok(ExitCode::SUCCESS)
}

async fn session(coordinator: &str, auth: &ClientAuthArgs) -> Result<Session> {
    Ok(Session::open(
        Coordinated::Remote {
            url: coordinator.to_string(),
            security: auth.security(),
        },
        false,
    )
    .await?)
}

pub async fn status(a: PlanSelectArgs) -> Result<ExitCode> {
    let mut s = match &a.checkpoint_state {
        // Nothing runs an embedded plan but its own restore process: following one here
        // would wait forever; the restore shows its progress itself (--progress).
        Some(_) if a.follow => anyhow::bail!(
            "--follow needs a coordinator: an embedded restore is followed by its own process (--progress); leave --follow out to read where the ledger stands"
        ),
        Some(dir) => Session::on_ledger(dir).await?,
        None => session(&a.coordinator, &a.auth).await?,
    };
    let plan_id = s
        .pick_plan(a.plan_id.as_deref(), a.backup_id.as_deref())
        .await?;
    let st = if a.follow {
        let started = Instant::now();
        let mut view = crate::progress::Progress::new(true);
        let last = s.follow(&plan_id, |st| view.update(st, started)).await?;
        view.finish();
        last
    } else {
        s.status(&plan_id).await?
    };
    match a.format {
        Format::Json => print_json(&status_json(&st))?,
        Format::Table => print_status(&st),
    }
    Ok(if a.follow {
        exit_code(plan_state(&st))
    } else {
        ExitCode::SUCCESS
    })
}

/// What `restore-cancel` and `restore-resume` do to a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    Cancel,
    Resume,
}

pub async fn cancel_or_resume(a: PlanSelectArgs, action: PlanAction) -> Result<ExitCode> {
    if let Some(dir) = &a.checkpoint_state {
        anyhow::bail!(
            "--checkpoint-state {} names the ledger of embedded restores, which only restore-status reads: an embedded restore is stopped with Ctrl-C and resumed by running it again",
            dir.display()
        );
    }
    let mut s = session(&a.coordinator, &a.auth).await?;
    let plan_id = s
        .pick_plan(a.plan_id.as_deref(), a.backup_id.as_deref())
        .await?;
    let req = PlanRef {
        plan_id,
        ..Default::default()
    };
    let st = match action {
        PlanAction::Cancel => s.client()?.cancel_plan(req).await,
        PlanAction::Resume => s.client()?.resume_plan(req).await,
    }
    .map_err(rpc)?
    .into_inner();
    match a.format {
        Format::Json => print_json(&status_json(&st))?,
        Format::Table => print_status(&st),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(a: ListPlansArgs) -> Result<ExitCode> {
    let plans = session(&a.coordinator, &a.auth).await?.plans().await?;
    match a.format {
        Format::Json => print_json(&plans.iter().map(status_json).collect::<Vec<_>>())?,
        Format::Table => {
            outln!(
                "{:<60} {:<30} {:<10} {:>10}",
                "PLAN",
                "BACKUP",
                "STATE",
                "RECORDS"
            );
            for p in &plans {
                outln!(
                    "{:<60} {:<30} {:<10} {:>10}",
                    p.plan_id,
                    p.backup_id,
                    p.state,
                    format!("{}/{}", p.records_done, p.records_total)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

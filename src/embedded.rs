//! Running a restore: embedded (a coordinator with its sled ledger and N workers in this
//! process, talking over loopback gRPC — the same code as the distributed mode) or by
//! submitting to a remote coordinator. Both then follow the plan to its end.

use crate::cli_output::{print_json, print_report, print_status, report_json, status_json, Format};
use crate::cli_restore::{Resolved, RestoreArgs};
use anyhow::{Context, Result};
use kafka_backup_coordinator::ledger::Ledger;
use kafka_backup_coordinator::security::ServerSecurity;
use kafka_backup_coordinator::{Coordinator, CoordinatorSettings};
use kafka_backup_proto::{PlanStatus, SubmitPlanRequest, WatchPlanRequest};
use kafka_backup_worker::connect::{ClientSecurity, CoordinatorEndpoint, PlansClient};
use kafka_backup_worker::{default_worker_id, run_worker, WorkerConfig};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tracing::Instrument;

pub async fn connect_plans(url: &str, security: &ClientSecurity) -> Result<PlansClient> {
    Ok(CoordinatorEndpoint::new(url, security)?.plans().await?)
}

/// Turns a gRPC error into the coordinator's own message.
pub fn rpc_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

/// A coordinator on a loopback port for this process only.
pub struct LocalCoordinator {
    pub url: String,
    ledger: std::sync::Arc<Ledger>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), kafka_backup_coordinator::ServeError>>,
}

impl LocalCoordinator {
    pub async fn start(ledger: Ledger, settings: CoordinatorSettings) -> Result<Self> {
        let coord = Coordinator::new(ledger, settings);
        let ledger = coord.ledger.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // Loopback only, so no token or TLS; no request timeout either, since the embedded
        // client follows the plan over one long stream.
        let security = ServerSecurity {
            request_timeout: Duration::from_secs(24 * 3600),
            ..ServerSecurity::default()
        };
        let server = tokio::spawn(async move {
            coord
                .serve(listener, &security, async {
                    let _ = stop_rx.await;
                })
                .await
        });
        Ok(Self {
            url,
            ledger,
            stop,
            server,
        })
    }

    /// Stops serving. The ledger flushes every change as it is made, so nothing waits for
    /// the in-process connections to wind down (a graceful close cost ~45 ms per run).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.abort();
        let _ = self.server.await;
    }
}

/// A directory for a dry run's scratch ledger, removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "kafka-backup-dry-run-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create scratch dir {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn run_embedded(
    r: Resolved,
    dry_run: bool,
    a: &RestoreArgs,
    lease_ttl: Option<Duration>,
) -> Result<ExitCode> {
    // A dry run reads an existing ledger (to show what a completed restore means for
    // consumer offsets) but never creates one.
    let scratch = if dry_run && !r.state_dir.is_dir() {
        Some(ScratchDir::new()?)
    } else {
        None
    };
    let ledger = if let Some(dir) = &scratch {
        Ledger::scratch(&dir.0)?
    } else if dry_run {
        Ledger::open(&r.state_dir)?
    } else {
        std::fs::create_dir_all(&r.state_dir)
            .with_context(|| format!("cannot create state dir {}", r.state_dir.display()))?;
        Ledger::open(&r.state_dir)?
    };
    let mut settings = CoordinatorSettings::default();
    if let Some(ttl) = lease_ttl {
        settings.lease_ttl_ms = ttl.as_millis() as u64;
        settings.grace_ms = (settings.lease_ttl_ms / 3).max(200);
    }
    let local = LocalCoordinator::start(ledger, settings).await?;
    let result = submit_and_follow(&local.url, r, dry_run, a, true).await;
    let ledger = local.ledger.clone();
    local.stop().await;
    if scratch.is_some() {
        // The scratch ledger is never closed: closing a sled database flushes it, and its
        // first flush starts sled's I/O thread pool, whose threads spin while the pool starts
        // (2-16 ms of a ~20 ms dry run on 2 cores). Its files go with the directory below.
        std::mem::forget(ledger);
    }
    drop(scratch);
    result
}

pub async fn submit_remote(
    url: &str,
    r: Resolved,
    dry_run: bool,
    a: &RestoreArgs,
) -> Result<ExitCode> {
    submit_and_follow(url, r, dry_run, a, false).await
}

async fn submit_and_follow(
    url: &str,
    r: Resolved,
    dry_run: bool,
    a: &RestoreArgs,
    embedded: bool,
) -> Result<ExitCode> {
    let security = if embedded {
        ClientSecurity::default()
    } else {
        a.auth.security()
    };
    if let Some(req) = &r.reset {
        crate::offset_reset::preflight(&r.spec, req).await?;
    }
    let mut client = connect_plans(url, &security).await?;
    let submit_span = tracing::info_span!("restore.submit", backup_id = %r.spec.backup_id, dry_run);
    let resp = client
        .submit_plan(SubmitPlanRequest {
            spec: Some(r.spec.clone()),
            dry_run,
            new_run: a.new_run,
        })
        .instrument(submit_span)
        .await
        .map_err(rpc_error)?
        .into_inner();
    let report = resp.report.unwrap_or_default();
    if dry_run {
        let mut out = report_json(&report);
        if a.format == Format::Table {
            print_report(&report, true);
        }
        if let Some(req) = &r.reset {
            let resets = planned_resets(&mut client, &resp.plan_id, &r, req, &report).await?;
            match a.format {
                Format::Json => {
                    out["consumer_offset_reset"] =
                        crate::offset_reset::resets_json(req.strategy, false, &resets)
                }
                Format::Table => crate::offset_reset::print_resets(req.strategy, false, &resets),
            }
        }
        if a.format == Format::Json {
            print_json(&out)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let plan_id = resp.plan_id;
    if a.format == Format::Table {
        print_report(&report, false);
        if resp.resumed {
            println!("Resuming plan {plan_id} from its checkpoints.");
        } else {
            println!("Plan {plan_id} created.");
        }
    }
    if a.detach && !embedded {
        if a.format == Format::Json {
            print_json(&serde_json::json!({"plan_id": plan_id, "resumed": resp.resumed}))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut workers = Vec::new();
    if embedded {
        for _ in 0..r.workers {
            let cfg = WorkerConfig {
                coordinator_url: url.to_string(),
                worker_id: default_worker_id(),
                plan_id: Some(plan_id.clone()),
                security: ClientSecurity::default(),
            };
            workers.push(tokio::spawn(run_worker(cfg)));
        }
    }
    let last = follow(&mut client, &plan_id, a.progress).await?;
    if let Some(path) = &r.offset_report {
        crate::cli_offsets::write_report(&mut client, &plan_id, path).await?;
    }
    for w in workers {
        w.abort();
    }
    let mut out = status_json(&last);
    if a.format == Format::Table {
        print_status(&last);
    }
    let mut code = exit_code(&last);
    if let Some(req) = &r.reset {
        if last.state == "completed" {
            let mapping = crate::cli_offsets::fetch_mapping(&mut client, &plan_id).await?;
            let resets = crate::offset_reset::compute(&r.spec, &mapping, req).await?;
            crate::offset_reset::apply(&r.spec, &resets).await?;
            match a.format {
                Format::Json => {
                    out["consumer_offset_reset"] =
                        crate::offset_reset::resets_json(req.strategy, true, &resets)
                }
                Format::Table => crate::offset_reset::print_resets(req.strategy, true, &resets),
            }
        } else {
            eprintln!(
                "consumer offsets were NOT reset: the restore ended {}; rerun the same restore to finish it, and the reset runs then",
                last.state
            );
            code = ExitCode::from(1);
        }
    }
    if a.format == Format::Json {
        print_json(&out)?;
    }
    Ok(code)
}

/// What a dry run would write: the real offsets when the same restore already completed,
/// otherwise the committed source offsets with their target partitions.
async fn planned_resets(
    client: &mut PlansClient,
    existing_plan: &str,
    r: &Resolved,
    req: &crate::offset_reset::ResetRequest,
    report: &kafka_backup_proto::PlanReport,
) -> Result<Vec<crate::offset_reset::GroupReset>> {
    if !existing_plan.is_empty() {
        let mapping = crate::cli_offsets::fetch_mapping(client, existing_plan).await?;
        if mapping.partitions.iter().all(|p| p.state == "completed") {
            return crate::offset_reset::compute(&r.spec, &mapping, req).await;
        }
    }
    let (_, manifest) = crate::offset_reset::open_backup(&r.spec).await?;
    let mut out = Vec::new();
    for g in manifest
        .consumer_group_offsets
        .iter()
        .filter(|g| req.groups.contains(&g.group))
    {
        if let Some(t) = report
            .tasks
            .iter()
            .find(|t| t.source_topic == g.topic && t.source_partition == g.partition)
        {
            out.push(crate::offset_reset::GroupReset {
                group: g.group.clone(),
                source: format!("{}/{}", g.topic, g.partition),
                source_offset: g.offset,
                target_topic: t.target_topic.clone(),
                target_partition: t.target_partition,
                target_offset: -1,
            });
        }
    }
    Ok(out)
}

pub fn exit_code(s: &PlanStatus) -> ExitCode {
    match s.state.as_str() {
        "completed" => ExitCode::SUCCESS,
        "cancelled" => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

/// Streams status until the plan ends, printing progress lines when asked.
pub async fn follow(client: &mut PlansClient, plan_id: &str, progress: bool) -> Result<PlanStatus> {
    let started = Instant::now();
    let mut stream = client
        .watch_plan(WatchPlanRequest {
            plan_id: plan_id.to_string(),
            interval_ms: 200,
            task_limit: 0,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let mut last = None;
    let mut view = crate::progress::Progress::new(progress);
    while let Some(s) = stream.message().await.map_err(rpc_error)? {
        view.update(&s, started);
        last = Some(s);
    }
    view.finish();
    last.context("the coordinator ended the status stream without a status")
}

//! Running a restore from a front end, step by step, so that the CLI (or another front end)
//! only parses, calls and prints. A `Session` talks to a coordinator over its gRPC API:
//! either one it starts in this process on a loopback port with N workers (embedded mode,
//! the same coordinator and worker code as the distributed mode) or a remote one. Through it
//! a front end submits (or dry-runs) a plan, starts the embedded workers, follows the plan to
//! its end, writes the offset report and resets consumer offsets when asked.

pub mod local;
pub mod offset_report;

use kafka_backup_common::restore_options::{ResetRequest, ResolvedRestore};
use kafka_backup_coordinator::ledger::{Ledger, LedgerError, PlanState, TaskStatusState};
use kafka_backup_coordinator::offset_reset::{self, GroupReset, ResetError};
use kafka_backup_coordinator::CoordinatorSettings;
use kafka_backup_proto::{
    ListPlansRequest, OffsetMapping, PlanRef, PlanReport, PlanStatus, RestoreSpec,
    SubmitPlanRequest, SubmitPlanResponse, WatchPlanRequest,
};
use kafka_backup_worker::connect::{
    ClientSecurity, ConnectError, CoordinatorEndpoint, PlansClient,
};
use kafka_backup_worker::shutdown::Shutdown;
use kafka_backup_worker::{default_worker_id, run_worker, WorkerConfig};
use local::LocalCoordinator;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The coordinator refused a call; its message names the problem and the fix.
    #[error("{0}")]
    Coordinator(String),
    /// Boxed: a reset error carries a Kafka error and is much larger than the others.
    #[error(transparent)]
    Reset(Box<ResetError>),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl From<ResetError> for RunError {
    fn from(e: ResetError) -> Self {
        RunError::Reset(Box::new(e))
    }
}

/// The coordinator's own message for a refused call.
pub fn rpc(s: tonic::Status) -> RunError {
    RunError::Coordinator(s.message().to_string())
}

/// Where the plan runs.
#[derive(Debug, Clone)]
pub enum Coordinated {
    /// A coordinator and `workers` workers in this process, with the ledger in `state_dir`
    /// (a dry run without one plans here, with no coordinator).
    Embedded {
        state_dir: PathBuf,
        workers: u32,
        lease_ttl: Option<Duration>,
    },
    /// A running coordinator.
    Remote {
        url: String,
        security: ClientSecurity,
    },
}

impl Coordinated {
    /// Where a resolved restore runs: remote when a coordinator URL is given.
    pub fn for_restore(
        r: &ResolvedRestore,
        remote: Option<(String, ClientSecurity)>,
        lease_ttl: Option<Duration>,
    ) -> Self {
        match remote {
            Some((url, security)) => Coordinated::Remote { url, security },
            None => Coordinated::Embedded {
                state_dir: r.state_dir.clone(),
                workers: r.workers,
                lease_ttl,
            },
        }
    }
}

/// A plan's end state as an operator reads it.
pub fn plan_state(status: &PlanStatus) -> Option<PlanState> {
    PlanState::parse(&status.state)
}

pub async fn connect(url: &str, security: &ClientSecurity) -> Result<PlansClient, RunError> {
    Ok(CoordinatorEndpoint::new(url, security)?.plans().await?)
}

/// A front end's connection to the coordinator of one restore, and what runs for it here.
pub struct Session {
    /// `None` for a dry run with no ledger to read: it plans here, with no coordinator.
    link: Option<Link>,
    workers: Vec<tokio::task::JoinHandle<Result<(), kafka_backup_worker::WorkerError>>>,
    worker_count: u32,
}

/// The coordinator a session talks to, and the one it runs here (embedded mode).
struct Link {
    client: PlansClient,
    url: String,
    local: Option<LocalCoordinator>,
}

impl Session {
    /// Connects to a remote coordinator, or starts one here on the ledger in the state dir.
    /// A dry run never creates a ledger: it reads an existing one (to show what a completed
    /// restore means for consumer offsets) or, without one, plans here with no coordinator.
    pub async fn open(at: Coordinated, dry_run: bool) -> Result<Self, RunError> {
        let (state_dir, workers, lease_ttl) = match at {
            Coordinated::Remote { url, security } => {
                return Ok(Self {
                    link: Some(Link {
                        client: connect(&url, &security).await?,
                        url,
                        local: None,
                    }),
                    workers: Vec::new(),
                    worker_count: 0,
                })
            }
            Coordinated::Embedded {
                state_dir,
                workers,
                lease_ttl,
            } => (state_dir, workers, lease_ttl),
        };
        if dry_run && !state_dir.is_dir() {
            return Ok(Self {
                link: None,
                workers: Vec::new(),
                worker_count: 0,
            });
        }
        let ledger = Ledger::open(&state_dir)?;
        let mut settings = CoordinatorSettings::default();
        if let Some(ttl) = lease_ttl {
            settings.lease_ttl_ms = ttl.as_millis() as u64;
            settings.grace_ms = (settings.lease_ttl_ms / 3).max(200);
        }
        Self::local(ledger, settings, workers).await
    }

    /// A session on an existing ledger directory, read through a local coordinator.
    pub async fn on_ledger(dir: &Path) -> Result<Self, RunError> {
        if !dir.is_dir() {
            return Err(RunError::Invalid(format!(
                "no restore ledger at {}: give --checkpoint-state of the restore, or --coordinator",
                dir.display()
            )));
        }
        Self::local(Ledger::open(dir)?, CoordinatorSettings::default(), 0).await
    }

    async fn local(
        ledger: Ledger,
        settings: CoordinatorSettings,
        workers: u32,
    ) -> Result<Self, RunError> {
        let local = LocalCoordinator::start(ledger, settings).await?;
        Ok(Self {
            link: Some(Link {
                client: CoordinatorEndpoint::new(&local.url, &ClientSecurity::default())?
                    .plans_lazily(),
                url: local.url.clone(),
                local: Some(local),
            }),
            workers: Vec::new(),
            worker_count: workers,
        })
    }

    /// True when the plan runs in this process (or, for a dry run, is only planned here).
    pub fn is_embedded(&self) -> bool {
        self.link.as_ref().is_none_or(|l| l.local.is_some())
    }

    /// The coordinator's client; an error for a dry run planned here, which has none.
    pub fn client(&mut self) -> Result<&mut PlansClient, RunError> {
        self.link.as_mut().map(|l| &mut l.client).ok_or_else(|| {
            RunError::Invalid(
                "this dry run planned the restore here, with no coordinator to ask".into(),
            )
        })
    }

    /// Submits (or, with `dry_run`, only plans) the restore.
    pub async fn submit(
        &mut self,
        spec: &RestoreSpec,
        dry_run: bool,
        new_run: bool,
    ) -> Result<SubmitPlanResponse, RunError> {
        let span = tracing::info_span!("restore.submit", backup_id = %spec.backup_id, dry_run);
        let req = SubmitPlanRequest {
            spec: Some(spec.clone()),
            dry_run,
            new_run,
        };
        let call = async {
            let Some(link) = &mut self.link else {
                if !dry_run {
                    return Err(tonic::Status::failed_precondition(
                        "this session opened for a dry run has no coordinator to run the plan",
                    ));
                }
                return kafka_backup_coordinator::plan_service::dry_run_report(spec)
                    .await
                    .map(|report| SubmitPlanResponse {
                        report: Some(report),
                        ..Default::default()
                    });
            };
            match &link.local {
                Some(local) => local.submit_plan(req).await,
                None => link
                    .client
                    .submit_plan(req)
                    .await
                    .map(tonic::Response::into_inner),
            }
        };
        tracing::Instrument::instrument(call, span)
            .await
            .map_err(rpc)
    }

    /// Starts the embedded worker on `plan_id` (nothing for a remote coordinator): one worker
    /// holding up to `--workers` leases at once, as a `worker --max-tasks N` process would.
    pub fn start_workers(&mut self, plan_id: &str) {
        let Some(link) = self.link.as_ref().filter(|l| l.local.is_some()) else {
            return;
        };
        if self.worker_count == 0 {
            return;
        }
        let cfg = WorkerConfig {
            coordinator_url: link.url.clone(),
            worker_id: default_worker_id(),
            plan_id: Some(plan_id.to_string()),
            security: ClientSecurity::default(),
            max_tasks: self.worker_count as usize,
        };
        // The embedded worker ends with the plan; Ctrl-C ends the whole process.
        self.workers
            .push(tokio::spawn(run_worker(cfg, Shutdown::never())));
    }

    /// Follows the plan until it ends, calling `on_status` with each status (about every
    /// 200 ms, and at once when a task ends); returns the last.
    pub async fn follow(
        &mut self,
        plan_id: &str,
        mut on_status: impl FnMut(&PlanStatus),
    ) -> Result<PlanStatus, RunError> {
        let mut stream = self
            .client()?
            .watch_plan(WatchPlanRequest {
                plan_id: plan_id.to_string(),
                interval_ms: 200,
                task_limit: 0,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        let mut last = None;
        while let Some(s) = stream.message().await.map_err(rpc)? {
            on_status(&s);
            last = Some(s);
        }
        last.ok_or_else(|| {
            RunError::Coordinator("the coordinator ended the status stream without a status".into())
        })
    }

    pub async fn status(&mut self, plan_id: &str) -> Result<PlanStatus, RunError> {
        Ok(self
            .client()?
            .get_plan_status(PlanRef {
                plan_id: plan_id.to_string(),
                ..Default::default()
            })
            .await
            .map_err(rpc)?
            .into_inner())
    }

    /// Every plan the coordinator holds, newest first (totals and counts, no task lists).
    pub async fn plans(&mut self) -> Result<Vec<PlanStatus>, RunError> {
        Ok(self
            .client()?
            .list_plans(ListPlansRequest {})
            .await
            .map_err(rpc)?
            .into_inner()
            .plans)
    }

    /// The given plan, or the most recent plan of `backup_id`.
    pub async fn pick_plan(
        &mut self,
        plan_id: Option<&str>,
        backup_id: Option<&str>,
    ) -> Result<String, RunError> {
        if let Some(p) = plan_id {
            return Ok(p.to_string());
        }
        let Some(backup) = backup_id else {
            return Err(RunError::Invalid("give --plan-id or --backup-id".into()));
        };
        self.plans()
            .await?
            .into_iter()
            .find(|p| p.backup_id == backup)
            .map(|p| p.plan_id)
            .ok_or_else(|| RunError::Invalid(format!("no restore plan for backup {backup:?}")))
    }

    /// The plan's whole offset mapping, read a page of partitions at a time.
    pub async fn mapping(&mut self, plan_id: &str) -> Result<OffsetMapping, RunError> {
        let mut all: Option<OffsetMapping> = None;
        loop {
            let offset = all.as_ref().map_or(0, |m| m.partitions.len() as u32);
            let page = self
                .client()?
                .get_offset_mapping(PlanRef {
                    plan_id: plan_id.to_string(),
                    task_offset: offset,
                    task_limit: 0,
                })
                .await
                .map_err(rpc)?
                .into_inner();
            let got = page.partitions.len();
            let total = page.tasks_total as usize;
            match all.as_mut() {
                None => all = Some(page),
                Some(m) => {
                    m.partitions.extend(page.partitions);
                    m.groups.extend(page.groups);
                }
            }
            let have = all.as_ref().map_or(0, |m| m.partitions.len());
            if got == 0 || have >= total {
                return all.ok_or_else(|| {
                    RunError::Coordinator("the coordinator sent no offset mapping".into())
                });
            }
        }
    }

    /// Writes the offset report (see `offset_report.rs`) of a finished or stopped plan.
    pub async fn write_offset_report(
        &mut self,
        plan_id: &str,
        path: &Path,
    ) -> Result<(), RunError> {
        let m = self.mapping(plan_id).await?;
        offset_report::write(&m, path)
    }

    /// Writes the reset offsets of the named groups once the plan completed; returns them.
    pub async fn reset_offsets(
        &mut self,
        plan_id: &str,
        spec: &RestoreSpec,
        req: &ResetRequest,
    ) -> Result<Vec<GroupReset>, RunError> {
        let mapping = self.mapping(plan_id).await?;
        let resets = offset_reset::compute(spec, &mapping, req).await?;
        offset_reset::apply(spec, &resets).await?;
        Ok(resets)
    }

    /// What a dry run would write: the real offsets when the same restore already
    /// completed (`existing_plan`), otherwise the committed source offsets with their target
    /// partitions and the target offset unknown (-1).
    pub async fn planned_resets(
        &mut self,
        existing_plan: &str,
        spec: &RestoreSpec,
        req: &ResetRequest,
        report: &PlanReport,
    ) -> Result<Vec<GroupReset>, RunError> {
        if !existing_plan.is_empty() {
            let mapping = self.mapping(existing_plan).await?;
            let done = |p: &kafka_backup_proto::PartitionOffsetMapping| {
                TaskStatusState::parse(&p.state) == Some(TaskStatusState::Completed)
            };
            if mapping.partitions.iter().all(done) {
                return Ok(offset_reset::compute(spec, &mapping, req).await?);
            }
        }
        let (_, manifest) = offset_reset::open_backup(spec).await?;
        let mut out = Vec::new();
        for g in manifest
            .consumer_group_offsets
            .iter()
            .filter(|g| req.groups.contains(&g.group))
        {
            if let Some(t) = report.tasks.iter().find(|t| {
                t.source_topic == g.topic
                    && (t.source_partition == g.partition
                        || t.merged_source_partitions.contains(&g.partition))
            }) {
                out.push(GroupReset {
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

    /// Stops the embedded workers and coordinator.
    pub async fn close(self) {
        for w in &self.workers {
            w.abort();
        }
        if let Some(local) = self.link.and_then(|l| l.local) {
            local.stop().await;
        }
    }
}

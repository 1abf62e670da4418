//! The operator-facing gRPC service: submit (or dry-run) a plan, read and watch its status,
//! cancel and resume it, list plans. Submission validates everything — spec, backup,
//! target cluster — before the first write; a refused plan leaves no trace anywhere.

use crate::breaker::CircuitView;
use crate::ledger::{LedgerError, PlanRecord, SegmentEntry, TaskRecord, TaskState};
use crate::planner::{plan, PlanError};
use crate::report::{task_report, ReportError};
use crate::status::{plan_status, TERMINAL_STATES};
use crate::target::{TargetCluster, TargetError};
use crate::worker_service::ledger_status;
use crate::{now_ms, Coordinator};
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_common::telemetry::{current_traceparent, set_remote_parent};
use kafka_backup_proto::restore_plans_server::RestorePlans;
use kafka_backup_proto::*;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The caller's W3C traceparent from the request metadata ("" when absent).
pub fn remote_parent<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub struct PlanService {
    coord: Arc<Coordinator>,
}

impl PlanService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }

    fn status_of(&self, plan_id: &str) -> Result<PlanStatus, Status> {
        let ledger = &self.coord.ledger;
        let plan = ledger.plan(plan_id).map_err(ledger_status)?;
        let tasks = ledger.tasks(plan_id).map_err(ledger_status)?;
        Ok(self.with_circuit(plan_status(&plan, &tasks)))
    }

    /// Adds the plan's circuit-breaker state, which lives in memory, not in the ledger.
    fn with_circuit(&self, mut st: PlanStatus) -> PlanStatus {
        let breakers = &self.coord.breakers;
        st.circuit_opened = breakers.times_opened(&st.plan_id);
        match breakers.view(&st.plan_id, now_ms()) {
            CircuitView::Closed => st.circuit = "closed".into(),
            CircuitView::Open {
                until_ms,
                last_error,
            } => {
                st.circuit = "open".into();
                st.circuit_retry_at_ms = until_ms;
                st.circuit_error = last_error;
            }
            CircuitView::Probing { last_error } => {
                st.circuit = "probing".into();
                st.circuit_error = last_error;
            }
        }
        st
    }
}

fn storage_status(e: StorageError) -> Status {
    match e {
        StorageError::BackupNotFound { .. } | StorageError::SegmentNotFound { .. } => {
            Status::not_found(e.to_string())
        }
        StorageError::BadUrl { .. } => Status::invalid_argument(e.to_string()),
        StorageError::Io { .. } => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

fn target_status(e: TargetError) -> Status {
    match e {
        TargetError::Unreachable { .. } => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

fn plan_error_status(e: PlanError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A stable FNV-1a fingerprint of a spec, so resubmitting the same restore resumes it.
fn fingerprint(spec: &RestoreSpec) -> String {
    let mut s = spec.clone();
    s.checkpoint_interval_ms = 0;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.encode_to_vec() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("planner thread failed: {e}")))
}

#[tonic::async_trait]
impl RestorePlans for PlanService {
    async fn submit_plan(
        &self,
        req: Request<SubmitPlanRequest>,
    ) -> Result<Response<SubmitPlanResponse>, Status> {
        let span = tracing::info_span!(
            "plan",
            backup_id = tracing::field::Empty,
            plan_id = tracing::field::Empty,
            dry_run = req.get_ref().dry_run,
            tasks = tracing::field::Empty,
            records = tracing::field::Empty,
        );
        set_remote_parent(&span, &remote_parent(&req));
        self.submit(req.into_inner()).instrument(span).await
    }

    async fn get_plan_status(&self, req: Request<PlanRef>) -> Result<Response<PlanStatus>, Status> {
        self.status_of(&req.into_inner().plan_id).map(Response::new)
    }

    type WatchPlanStream = Pin<Box<dyn Stream<Item = Result<PlanStatus, Status>> + Send>>;

    async fn watch_plan(
        &self,
        req: Request<WatchPlanRequest>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let r = req.into_inner();
        // Marked seen before each status read: a task that ends after the read wakes the
        // wait below at once, and one that ended before it is in the status already.
        let mut task_ends = self.coord.task_ends.subscribe();
        task_ends.borrow_and_update();
        let first = self.status_of(&r.plan_id)?;
        let coord = self.coord.clone();
        let interval = Duration::from_millis(u64::from(r.interval_ms.clamp(100, 60_000)));
        let stream = futures::stream::unfold(Some((first, task_ends)), move |state| {
            let coord = coord.clone();
            async move {
                let (current, mut task_ends) = state?;
                let terminal = TERMINAL_STATES.contains(&current.state.as_str());
                let next = if terminal {
                    None
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = task_ends.changed() => {}
                    }
                    task_ends.borrow_and_update();
                    let svc = PlanService { coord };
                    svc.status_of(&current.plan_id).ok().map(|s| (s, task_ends))
                };
                Some((Ok(current), next))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_plan(&self, req: Request<PlanRef>) -> Result<Response<PlanStatus>, Status> {
        let id = req.into_inner().plan_id;
        self.coord
            .ledger
            .set_cancelled(&id, true)
            .map_err(ledger_status)?;
        tracing::warn!(plan = %id, "plan cancelled");
        self.status_of(&id).map(Response::new)
    }

    async fn resume_plan(&self, req: Request<PlanRef>) -> Result<Response<PlanStatus>, Status> {
        let id = req.into_inner().plan_id;
        self.coord
            .ledger
            .set_cancelled(&id, false)
            .map_err(ledger_status)?;
        tracing::info!(plan = %id, "plan resumed");
        self.status_of(&id).map(Response::new)
    }

    async fn get_offset_mapping(
        &self,
        req: Request<PlanRef>,
    ) -> Result<Response<OffsetMapping>, Status> {
        let plan_id = req.into_inner().plan_id;
        let ledger = &self.coord.ledger;
        let plan = ledger.plan(&plan_id).map_err(ledger_status)?;
        let tasks = ledger.tasks(&plan_id).map_err(ledger_status)?;
        let spec = RestoreSpec::decode(plan.spec.as_slice())
            .map_err(|e| Status::internal(format!("stored spec of {plan_id} unreadable: {e}")))?;
        let status = plan_status(&plan, &tasks);
        let mut out = OffsetMapping {
            plan_id: plan_id.clone(),
            backup_id: plan.backup_id.clone(),
            ..Default::default()
        };
        let mut runs_by_task = Vec::new();
        for (task, st) in tasks.iter().zip(&status.tasks) {
            let runs = ledger
                .offset_runs(&plan_id, task.task_id)
                .map_err(ledger_status)?;
            out.partitions.push(PartitionOffsetMapping {
                source_topic: task.source_topic.clone(),
                source_partition: task.source_partition,
                target_topic: task.target_topic.clone(),
                target_partition: task.target_partition,
                runs: runs
                    .iter()
                    .map(|r| OffsetRun {
                        source_start: r.source_start,
                        target_start: r.target_start,
                        length: r.length,
                    })
                    .collect(),
                target_next_offset: task
                    .checkpoint
                    .as_ref()
                    .map_or(-1, |c| c.target_next_offset),
                state: st.state.clone(),
            });
            runs_by_task.push(runs);
        }
        let options: HashMap<String, String> = spec.storage_options.clone().into_iter().collect();
        let store =
            BackupStore::open(&spec.storage_url, &options, false).map_err(storage_status)?;
        let manifest = store
            .read_manifest(&spec.backup_id)
            .await
            .map_err(storage_status)?;
        for g in &manifest.consumer_group_offsets {
            let Some(i) = tasks
                .iter()
                .position(|t| t.source_topic == g.topic && t.source_partition == g.partition)
            else {
                continue;
            };
            let task = &tasks[i];
            let target = crate::offsets::translate(g.offset, &runs_by_task[i], task);
            out.groups.push(GroupOffsetTranslation {
                group: g.group.clone(),
                source_topic: g.topic.clone(),
                source_partition: g.partition,
                source_offset: g.offset,
                target_topic: task.target_topic.clone(),
                target_partition: task.target_partition,
                target_offset: target.unwrap_or(-1),
                note: if target.is_some() {
                    String::new()
                } else {
                    "not known until this partition's restore completes".into()
                },
            });
        }
        Ok(Response::new(out))
    }

    async fn list_plans(
        &self,
        _req: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        let ledger = &self.coord.ledger;
        let mut plans = ledger.plans().map_err(ledger_status)?;
        plans.sort_by_key(|p| std::cmp::Reverse(p.created_at_ms));
        let statuses = plans
            .iter()
            .map(|p| {
                ledger
                    .tasks(&p.plan_id)
                    .map(|t| self.with_circuit(plan_status(p, &t)))
            })
            .collect::<Result<Vec<_>, LedgerError>>()
            .map_err(ledger_status)?;
        Ok(Response::new(ListPlansResponse { plans: statuses }))
    }
}

impl PlanService {
    async fn submit(&self, r: SubmitPlanRequest) -> Result<Response<SubmitPlanResponse>, Status> {
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        if spec.backup_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "backup_id is required: give --backup-id or restore.backup_id",
            ));
        }
        if spec.bootstrap_servers.trim().is_empty() {
            return Err(Status::invalid_argument(
                "target cluster is required: give --bootstrap-servers/--target-cluster or restore.target.bootstrap_servers",
            ));
        }
        let options: HashMap<String, String> = spec.storage_options.clone().into_iter().collect();
        let store =
            BackupStore::open(&spec.storage_url, &options, false).map_err(storage_status)?;
        tracing::Span::current().record("backup_id", spec.backup_id.as_str());
        // Ask the target for its topic layout while the manifest is read and planned: the
        // two round trips overlap instead of adding up.
        let target = Arc::new(TargetCluster::new(
            &spec.bootstrap_servers,
            &spec.kafka_properties,
        ));
        // A plain thread, not spawn_blocking: when planning fails first, nothing (not even a
        // runtime shutting down) waits for an unreachable cluster's metadata timeout.
        let layout = {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let target = target.clone();
            std::thread::spawn(move || {
                let _ = tx.send(target.topic_partitions());
            });
            rx
        };
        let manifest = store
            .read_manifest(&spec.backup_id)
            .await
            .map_err(storage_status)?;
        let tasks = plan(&manifest, &spec).map_err(plan_error_status)?;
        let existing = layout
            .await
            .map_err(|_| Status::internal("the target metadata thread ended without an answer"))?
            .map_err(target_status)?;
        let view = TargetCluster::check(&tasks, &existing).map_err(target_status)?;
        if !view.missing.is_empty() && !spec.create_topics {
            return Err(target_status(TargetError::MissingTopics {
                bootstrap: spec.bootstrap_servers.clone(),
                topics: view.missing.keys().cloned().collect(),
            }));
        }

        let (from, to) = (spec.from_timestamp_ms, spec.to_timestamp_ms);
        let mut report = PlanReport {
            backup_id: spec.backup_id.clone(),
            topics_to_create: view.missing.keys().cloned().collect(),
            ..Default::default()
        };
        for task in &tasks {
            let (mut tr, range) =
                task_report(&store, task, from, to)
                    .await
                    .map_err(|e| match e {
                        ReportError::Storage(s) => storage_status(s),
                        ReportError::Segment(s) => Status::data_loss(s.to_string()),
                    })?;
            if !view.missing.contains_key(&task.target_topic) {
                let (target, topic, p) = (
                    target.clone(),
                    task.target_topic.clone(),
                    task.target_partition,
                );
                tr.target_start_offset = blocking(move || target.end_offset(&topic, p))
                    .await?
                    .map_err(target_status)?;
            } else {
                tr.target_start_offset = 0;
            }
            report.segments += tr.segments;
            report.records += tr.records;
            report.bytes += tr.bytes;
            if let Some((a, b)) = range {
                report.min_timestamp_ms = Some(report.min_timestamp_ms.map_or(a, |m| m.min(a)));
                report.max_timestamp_ms = Some(report.max_timestamp_ms.map_or(b, |m| m.max(b)));
            }
            report.tasks.push(tr);
        }
        if report.records == 0 {
            report.warnings.push(if from.is_some() || to.is_some() {
                "the time window selects no records of this backup: 0 records will be restored"
                    .to_string()
            } else {
                "the selection holds no records: 0 records will be restored".to_string()
            });
        }
        let ledger = &self.coord.ledger;
        let fp = fingerprint(&spec);
        let existing = ledger.plan_for_fingerprint(&fp).map_err(ledger_status)?;
        if r.dry_run {
            return Ok(Response::new(SubmitPlanResponse {
                plan_id: existing.map(|p| p.plan_id).unwrap_or_default(),
                resumed: false,
                report: Some(report),
            }));
        }
        if let Some(existing) = existing {
            let state = self.status_of(&existing.plan_id)?.state;
            if !r.new_run || !TERMINAL_STATES.contains(&state.as_str()) || state == "cancelled" {
                tracing::info!(plan = %existing.plan_id, %state, "resubmitted plan resumes from the ledger");
                return Ok(Response::new(SubmitPlanResponse {
                    plan_id: existing.plan_id,
                    resumed: true,
                    report: Some(report),
                }));
            }
        }

        let target_for_create = target.clone();
        let missing = view.missing.clone();
        target_for_create
            .create_topics(&missing)
            .await
            .map_err(target_status)?;

        let created = now_ms();
        let plan_id = format!("{}-{}-{}", spec.backup_id, &fp[..8], created);
        let by_label: BTreeMap<(String, i32), &TaskReport> = report
            .tasks
            .iter()
            .map(|t| ((t.source_topic.clone(), t.source_partition), t))
            .collect();
        let records: Vec<TaskRecord> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let tr = by_label.get(&(t.source_topic.clone(), t.source_partition));
                TaskRecord {
                    task_id: i as u32,
                    source_topic: t.source_topic.clone(),
                    source_partition: t.source_partition,
                    target_topic: t.target_topic.clone(),
                    target_partition: t.target_partition,
                    segments: SegmentEntry::for_task(&t.segments),
                    records_total: tr.map_or(0, |r| r.records),
                    bytes_total: tr.map_or(0, |r| r.bytes),
                    state: TaskState::Pending,
                    epoch: 0,
                    lease: None,
                    checkpoint: None,
                    attempts: 0,
                    error: String::new(),
                    not_before_ms: 0,
                    started_at_ms: 0,
                    skipped_segments: vec![],
                }
            })
            .collect();
        let record = PlanRecord {
            plan_id: plan_id.clone(),
            backup_id: spec.backup_id.clone(),
            fingerprint: fp,
            created_at_ms: created,
            cancelled: false,
            task_count: records.len() as u32,
            spec: spec.encode_to_vec(),
            trace_parent: current_traceparent(),
        };
        ledger
            .create_plan(&record, &records)
            .map_err(ledger_status)?;
        crate::metrics::METRICS.plans_submitted.inc();
        let span = tracing::Span::current();
        span.record("plan_id", plan_id.as_str());
        span.record("tasks", records.len());
        span.record("records", report.records);
        tracing::info!(plan = %plan_id, tasks = records.len(), records = report.records, "plan accepted");
        Ok(Response::new(SubmitPlanResponse {
            plan_id,
            resumed: false,
            report: Some(report),
        }))
    }
}

//! The operator-facing gRPC service: submit (or dry-run) a plan, read and watch its status,
//! cancel and resume it, list plans, read its offset mapping. Submission validates
//! everything — spec, backup, target cluster — before the first write; a refused plan leaves
//! no trace anywhere.

use crate::breaker::CircuitView;
use crate::grpc::{blocking, commit, ledger_status, remote_parent, storage_status, target_status};
use crate::ledger::{MergeSourceMeta, NewTask, PlanRecord, PlanState, TaskMeta, TaskState};
use crate::offsets::translate;
use crate::planner::{plan, PlannedTask};
use crate::report::{task_report, ReportError};
use crate::status::{plan_status, TaskPage};
use crate::target::{TargetCluster, TargetError};
use crate::topic_setup::{creations, recorded_topics, retention_risks};
use crate::{now_ms, Coordinator};
use kafka_backup_common::manifest_index::Sieve;
use kafka_backup_common::telemetry::{current_traceparent, set_remote_parent};
use kafka_backup_common::topic_configs::{check_override, OverrideCheck};
use kafka_backup_proto::restore_plans_server::RestorePlans;
use kafka_backup_proto::*;
use prost::Message;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Tasks listed in a plan report; the rest are counted in its totals.
const MAX_REPORTED_TASKS: usize = 10_000;
/// Offset runs listed per partition in an offset mapping.
const MAX_LISTED_RUNS: usize = 10_000;

pub struct PlanService {
    coord: Arc<Coordinator>,
}

impl PlanService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }

    fn status_of(&self, plan_id: &str, page: TaskPage) -> Result<PlanStatus, Status> {
        let ledger = &self.coord.ledger;
        let (plan, tasks) = ledger.snapshot(plan_id).map_err(ledger_status)?;
        let skipped = |t: &crate::ledger::TaskView| {
            ledger
                .skipped_segments(plan_id, t.meta.task_id, crate::status::MAX_SKIPPED_LISTED)
                .unwrap_or_default()
        };
        Ok(self.with_circuit(plan_status(&plan, &tasks, page, skipped)))
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

/// A stable FNV-1a fingerprint of what a restore writes, so that resubmitting the same
/// restore resumes it. Settings of how it runs ([`with_run_settings_of`]) are left out: an
/// operator who reruns a failed restore with `--skip-corrupt-segments`, a rate limit or
/// rotated credentials means the same restore, and a new plan would write everything again.
fn fingerprint(spec: &RestoreSpec) -> String {
    let blank = RestoreSpec::default();
    fnv1a(&with_run_settings_of(spec.clone(), &blank).encode_to_vec())
}

/// The fingerprint of plans recorded before the run settings were left out of it (only the
/// checkpoint interval and the retention consent were): a plan such a version recorded with
/// a rate limit or credentials is still found, and resumed, after an upgrade.
fn legacy_fingerprint(spec: &RestoreSpec) -> String {
    let mut s = spec.clone();
    s.checkpoint_interval_ms = 0;
    s.allow_retention_deletes = false;
    fnv1a(&s.encode_to_vec())
}

fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// `spec` with the settings of how a restore runs taken from `from`: checkpoint interval,
/// retention consent, rate limit, corrupt-segment policy, and the credentials and client
/// options of the target cluster and the backup store. None changes which records are
/// written where; each is read from the plan's spec when a task is leased.
fn with_run_settings_of(mut spec: RestoreSpec, from: &RestoreSpec) -> RestoreSpec {
    spec.checkpoint_interval_ms = from.checkpoint_interval_ms;
    spec.allow_retention_deletes = from.allow_retention_deletes;
    spec.max_records_per_sec = from.max_records_per_sec;
    spec.skip_corrupt_segments = from.skip_corrupt_segments;
    spec.kafka_properties = from.kafka_properties.clone();
    spec.storage_options = from.storage_options.clone();
    spec
}

fn is_terminal(state: &str) -> bool {
    PlanState::parse(state).is_some_and(PlanState::is_terminal)
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
        let r = req.into_inner();
        self.status_of(&r.plan_id, TaskPage::requested(r.task_offset, r.task_limit))
            .map(Response::new)
    }

    type WatchPlanStream = Pin<Box<dyn Stream<Item = Result<PlanStatus, Status>> + Send>>;

    async fn watch_plan(
        &self,
        req: Request<WatchPlanRequest>,
    ) -> Result<Response<Self::WatchPlanStream>, Status> {
        let r = req.into_inner();
        let page = TaskPage::requested(0, r.task_limit);
        // Marked seen before each status read: a task that ends after the read wakes the
        // wait below at once, and one that ended before it is in the status already.
        let mut task_ends = self.coord.task_ends.subscribe();
        task_ends.borrow_and_update();
        let first = self.status_of(&r.plan_id, page)?;
        let coord = self.coord.clone();
        let interval = Duration::from_millis(u64::from(r.interval_ms.clamp(100, 60_000)));
        let stream = futures::stream::unfold(Some((first, task_ends)), move |state| {
            let coord = coord.clone();
            async move {
                let (current, mut task_ends) = state?;
                let next = if is_terminal(&current.state) {
                    None
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = task_ends.changed() => {}
                    }
                    task_ends.borrow_and_update();
                    let svc = PlanService { coord };
                    svc.status_of(&current.plan_id, page)
                        .ok()
                        .map(|s| (s, task_ends))
                };
                Some((Ok(current), next))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_plan(&self, req: Request<PlanRef>) -> Result<Response<PlanStatus>, Status> {
        let id = req.into_inner().plan_id;
        let state = self.coord.ledger.plan_state(&id).map_err(ledger_status)?;
        if state == PlanState::Completed {
            return Err(Status::failed_precondition(format!(
                "plan {id} has completed: there is nothing to cancel"
            )));
        }
        let plan = id.clone();
        commit(&self.coord.changes, move |l| l.cancel(&plan)).await?;
        tracing::warn!(plan = %id, "plan cancelled");
        self.status_of(&id, TaskPage::requested(0, 0))
            .map(Response::new)
    }

    async fn resume_plan(&self, req: Request<PlanRef>) -> Result<Response<PlanStatus>, Status> {
        let id = req.into_inner().plan_id;
        let plan = id.clone();
        commit(&self.coord.changes, move |l| l.resume(&plan)).await?;
        tracing::info!(plan = %id, "plan resumed");
        self.status_of(&id, TaskPage::requested(0, 0))
            .map(Response::new)
    }

    async fn get_offset_mapping(
        &self,
        req: Request<PlanRef>,
    ) -> Result<Response<OffsetMapping>, Status> {
        let r = req.into_inner();
        let page = TaskPage::requested(r.task_offset, r.task_limit);
        let ledger = self.coord.ledger.clone();
        let (plan, tasks) = ledger.snapshot(&r.plan_id).map_err(ledger_status)?;
        let spec = RestoreSpec::decode(plan.spec.as_slice()).map_err(|e| {
            Status::internal(format!("stored spec of {} unreadable: {e}", plan.plan_id))
        })?;
        let store = crate::spec_store(&spec).map_err(storage_status)?;
        let groups = store
            .read_manifest_index(&spec.backup_id, Sieve::no_segments())
            .await
            .map_err(storage_status)?
            .consumer_group_offsets;
        let status = plan_status(&plan, &tasks, page, |_| Vec::new());
        let plan_id = plan.plan_id.clone();
        let out = blocking(move || {
            let mut out = OffsetMapping {
                plan_id: plan_id.clone(),
                backup_id: plan.backup_id.clone(),
                tasks_total: tasks.len() as u32,
                task_offset: page.offset,
                ..Default::default()
            };
            let listed = tasks
                .iter()
                .skip(page.offset as usize)
                .take(page.limit as usize)
                .zip(&status.tasks);
            for (task, st) in listed {
                let (meta, p) = (&task.meta, &task.progress);
                let done = match (&p.state, &p.checkpoint) {
                    (TaskState::Completed, Some(cp)) => Some(cp.target_next_offset),
                    _ => None,
                };
                // A 1:1 task has one source (index 0); a merge task one per merged partition.
                let sources: Vec<i32> = if meta.merge_sources.is_empty() {
                    vec![meta.source_partition]
                } else {
                    meta.merge_sources.iter().map(|m| m.partition).collect()
                };
                for (index, source_partition) in sources.into_iter().enumerate() {
                    let index = index as u32;
                    let runs = ledger.offset_runs_page(
                        &plan_id,
                        meta.task_id,
                        index,
                        0,
                        MAX_LISTED_RUNS + 1,
                    )?;
                    let omitted = runs.len() > MAX_LISTED_RUNS;
                    out.partitions.push(PartitionOffsetMapping {
                        source_topic: meta.source_topic.clone(),
                        source_partition,
                        target_topic: meta.target_topic.clone(),
                        target_partition: meta.target_partition,
                        runs: runs
                            .iter()
                            .take(MAX_LISTED_RUNS)
                            .map(|r| OffsetRun {
                                source_start: r.source_start,
                                target_start: r.target_start,
                                length: r.length,
                                source_index: r.source_index,
                            })
                            .collect(),
                        target_next_offset: p
                            .checkpoint
                            .as_ref()
                            .map_or(-1, |c| c.target_next_offset),
                        state: st.state.clone(),
                        runs_truncated: omitted,
                    });
                    for g in groups
                        .iter()
                        .filter(|g| g.topic == meta.source_topic && g.partition == source_partition)
                    {
                        let (before, after) =
                            ledger.runs_around(&plan_id, meta.task_id, index, g.offset)?;
                        let target = translate(g.offset, before.as_ref(), after.as_ref(), done);
                        out.groups.push(GroupOffsetTranslation {
                            group: g.group.clone(),
                            source_topic: g.topic.clone(),
                            source_partition: g.partition,
                            source_offset: g.offset,
                            target_topic: meta.target_topic.clone(),
                            target_partition: meta.target_partition,
                            target_offset: target.unwrap_or(-1),
                            note: if target.is_some() {
                                String::new()
                            } else {
                                "not known until this partition's restore completes".into()
                            },
                        });
                    }
                }
            }
            Ok::<_, crate::ledger::LedgerError>(out)
        })
        .await?
        .map_err(ledger_status)?;
        Ok(Response::new(out))
    }

    async fn list_plans(
        &self,
        _req: Request<ListPlansRequest>,
    ) -> Result<Response<ListPlansResponse>, Status> {
        let ledger = &self.coord.ledger;
        let mut plans = ledger.plans();
        plans.reverse();
        let mut statuses = Vec::with_capacity(plans.len());
        for p in plans {
            statuses.push(self.status_of(&p.plan_id, TaskPage::none())?);
        }
        Ok(Response::new(ListPlansResponse { plans: statuses }))
    }
}

/// What planning found: the tasks, the target's layout, and the report shown to the user.
struct Planned {
    tasks: Vec<PlannedTask>,
    report: PlanReport,
    /// (records, bytes) each task will restore, in task order (the report lists only some).
    totals: Vec<(u64, u64)>,
    /// Target topics whose retention would delete restored records (refused unless allowed).
    retention_risks: Vec<String>,
}

fn check_required(spec: &RestoreSpec) -> Result<(), Status> {
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
    for (key, value) in &spec.topic_configs {
        check_override(key, value).map_err(Status::invalid_argument)?;
    }
    Ok(())
}

/// Plans a restore and reports it with no coordinator and no ledger: the dry run of an
/// embedded restore that has no ledger yet, so no existing plan can be resumed. The same
/// planning as a submitted dry run (the same answers); what it saves is opening a scratch
/// ledger and serving a coordinator nobody calls, which cost ~2 ms of a ~20 ms dry run.
pub async fn dry_run_report(spec: &RestoreSpec) -> Result<PlanReport, Status> {
    let span = tracing::info_span!("plan", backup_id = %spec.backup_id, dry_run = true);
    async {
        check_required(spec)?;
        Ok(plan_against_target(spec).await?.report)
    }
    .instrument(span)
    .await
}

/// Reads the manifest (as a stream, keeping only what the window needs), plans it, checks
/// the target's topics and builds the report. Asks the target for its layout while the
/// manifest is read and planned, so the two round trips overlap.
async fn plan_against_target(spec: &RestoreSpec) -> Result<Planned, Status> {
    let store = crate::spec_store(spec).map_err(storage_status)?;
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
    let (from, to) = (spec.from_timestamp_ms, spec.to_timestamp_ms);
    let manifest = store
        .read_manifest_index(&spec.backup_id, Sieve::window(from, to))
        .await
        .map_err(storage_status)?;
    let recorded = recorded_topics(&manifest);
    let plan_spec = spec.clone();
    let tasks = blocking(move || plan(manifest, &plan_spec))
        .await?
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
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
    let mut report = PlanReport {
        backup_id: spec.backup_id.clone(),
        topics_to_create: view.missing.keys().cloned().collect(),
        schema_ids: crate::schema_plan::plan_schema_ids(spec.schema_ids.as_ref()).await?,
        topic_creations: creations(&view.missing, &tasks, &recorded, spec),
        ..Default::default()
    };
    target
        .check_replication(&report.topic_creations, spec.replication_factor > 0)
        .map_err(target_status)?;
    // The oldest record each target topic receives, for the retention check.
    let mut oldest: BTreeMap<String, i64> = BTreeMap::new();
    let mut totals = Vec::with_capacity(tasks.len());
    // Reported tasks whose target partition exists: (their place in the report, partition).
    let mut ends_needed = Vec::new();
    for task in &tasks {
        let (mut tr, range) = task_report(&store, task, from, to)
            .await
            .map_err(|e| match e {
                ReportError::Storage(s) => storage_status(s),
                ReportError::Segment(s) => Status::data_loss(s.to_string()),
            })?;
        totals.push((tr.records, tr.bytes));
        report.segments += tr.segments;
        report.records += tr.records;
        report.bytes += tr.bytes;
        if let Some((a, b)) = range {
            // Records without a timestamp (-1) are not aged by time-based retention.
            if a >= 0 {
                let o = oldest.entry(task.target_topic.clone()).or_insert(a);
                *o = (*o).min(a);
            }
            report.min_timestamp_ms = Some(report.min_timestamp_ms.map_or(a, |m| m.min(a)));
            report.max_timestamp_ms = Some(report.max_timestamp_ms.map_or(b, |m| m.max(b)));
        }
        if report.tasks.len() >= MAX_REPORTED_TASKS {
            report.tasks_omitted += 1;
            continue;
        }
        // A topic to be created starts at 0; an existing one where its partition ends now.
        if view.missing.contains_key(&task.target_topic) {
            tr.target_start_offset = 0;
        } else {
            ends_needed.push((
                report.tasks.len(),
                (task.target_topic.clone(), task.target_partition),
            ));
        }
        report.tasks.push(tr);
    }
    let (at, partitions): (Vec<usize>, Vec<(String, i32)>) = ends_needed.into_iter().unzip();
    let target_for_ends = target.clone();
    let ends = blocking(move || target_for_ends.end_offsets(&partitions))
        .await?
        .map_err(target_status)?;
    for (i, end) in at.into_iter().zip(ends) {
        report.tasks[i].target_start_offset = end;
    }
    if report.records == 0 {
        report.warnings.push(if from.is_some() || to.is_some() {
            "the time window selects no records of this backup: 0 records will be restored"
                .to_string()
        } else {
            "the selection holds no records: 0 records will be restored".to_string()
        });
    }
    let retention_risks = check_retention(spec, &target, &mut report, &oldest).await;
    Ok(Planned {
        tasks,
        report,
        totals,
        retention_risks,
    })
}

/// Adds the retention findings to the report's warnings and returns the risks (a real
/// run refuses them unless allowed). Topic overrides for topics that exist are pointed
/// out too: they are applied only to topics the restore creates.
async fn check_retention(
    spec: &RestoreSpec,
    target: &TargetCluster,
    report: &mut PlanReport,
    oldest: &BTreeMap<String, i64>,
) -> Vec<String> {
    let (risks, unknown) = retention_risks(target, &report.topic_creations, oldest, now_ms()).await;
    let risks: Vec<String> = risks.iter().map(|r| r.message()).collect();
    report.warnings.extend(risks.iter().cloned());
    if !unknown.is_empty() {
        report.warnings.push(format!(
            "the target cluster does not report the retention of {}; check that retention.ms keeps records as old as the restored ones",
            unknown.join(", ")
        ));
    }
    let existing: Vec<&String> = oldest
        .keys()
        .filter(|t| !report.topics_to_create.contains(t))
        .collect();
    if !report.topics_to_create.is_empty() {
        let unknown: Vec<&str> = spec
            .topic_configs
            .iter()
            .filter(|(k, v)| check_override(k, v) == Ok(OverrideCheck::Unknown))
            .map(|(k, _)| k.as_str())
            .collect();
        if !unknown.is_empty() {
            let (is, it) = if unknown.len() == 1 {
                ("is", "it")
            } else {
                ("are", "them")
            };
            report.warnings.push(format!(
                "{} {is} not among Kafka's topic configurations: a broker of the vendor that defines {it} may take {it}, others refuse the topic creation (check the spelling)",
                unknown.join(", "),
            ));
        }
    }
    if !spec.topic_configs.is_empty() && !existing.is_empty() {
        report.warnings.push(format!(
            "--topic-config applies only to topics the restore creates; {} exist and keep their configuration",
            existing.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    risks
}

impl PlanService {
    async fn submit(&self, r: SubmitPlanRequest) -> Result<Response<SubmitPlanResponse>, Status> {
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("spec is required"))?;
        check_required(&spec)?;
        tracing::Span::current().record("backup_id", spec.backup_id.as_str());
        let planned = plan_against_target(&spec).await?;
        let fp = fingerprint(&spec);
        let ledger = &self.coord.ledger;
        let existing = match ledger.plan_for_fingerprint(&fp).map_err(ledger_status)? {
            Some(plan) => Some(plan),
            None => ledger
                .plan_for_fingerprint(&legacy_fingerprint(&spec))
                .map_err(ledger_status)?,
        };
        if r.dry_run {
            return Ok(Response::new(SubmitPlanResponse {
                plan_id: existing.map(|p| p.plan_id).unwrap_or_default(),
                resumed: false,
                report: Some(planned.report),
            }));
        }
        if let Some(existing) = existing {
            let state = self
                .coord
                .ledger
                .plan_state(&existing.plan_id)
                .map_err(ledger_status)?;
            if !r.new_run || !state.is_terminal() || state == PlanState::Cancelled {
                tracing::info!(plan = %existing.plan_id, state = state.as_str(), "resubmitted plan resumes from the ledger");
                self.update_run_settings(&existing, &spec).await?;
                if state != PlanState::Cancelled {
                    let plan = existing.plan_id.clone();
                    let retried =
                        commit(&self.coord.changes, move |l| l.retry_failed(&plan)).await?;
                    if retried > 0 {
                        tracing::info!(plan = %existing.plan_id, tasks = retried, "resubmitted plan retries its failed tasks");
                    }
                }
                return Ok(Response::new(SubmitPlanResponse {
                    plan_id: existing.plan_id,
                    resumed: true,
                    report: Some(planned.report),
                }));
            }
        }
        // Checked for new plans only: a plan being resumed already wrote its oldest records.
        if !planned.retention_risks.is_empty() && !spec.allow_retention_deletes {
            return Err(Status::failed_precondition(
                planned.retention_risks.join("; "),
            ));
        }
        let target = TargetCluster::new(&spec.bootstrap_servers, &spec.kafka_properties);
        target
            .create_topics(&planned.report.topic_creations)
            .await
            .map_err(target_status)?;
        let plan_id = self
            .record_plan(&spec, fp, planned.tasks, &planned.totals)
            .await?;
        let report = planned.report;
        let span = tracing::Span::current();
        span.record("plan_id", plan_id.as_str());
        span.record("tasks", planned.totals.len());
        span.record("records", report.records);
        tracing::info!(plan = %plan_id, tasks = planned.totals.len(), records = report.records, "plan accepted");
        Ok(Response::new(SubmitPlanResponse {
            plan_id,
            resumed: false,
            report: Some(report),
        }))
    }

    /// Takes a resubmission's run settings (rate limit, corrupt-segment policy, credentials,
    /// checkpoint interval) into the resumed plan, durably: tasks leased from now on run
    /// with them; a lease held now keeps the settings it was granted with.
    async fn update_run_settings(
        &self,
        plan: &PlanRecord,
        submitted: &RestoreSpec,
    ) -> Result<(), Status> {
        let stored = RestoreSpec::decode(plan.spec.as_slice()).map_err(|e| {
            Status::internal(format!("stored spec of {} unreadable: {e}", plan.plan_id))
        })?;
        let updated = with_run_settings_of(stored.clone(), submitted);
        if updated == stored {
            return Ok(());
        }
        let (id, encoded) = (plan.plan_id.clone(), updated.encode_to_vec());
        commit(&self.coord.changes, move |l| l.update_spec(&id, encoded)).await?;
        tracing::info!(plan = %plan.plan_id, "resumed plan takes the resubmission's run settings");
        Ok(())
    }

    /// Writes the plan, its tasks and their segment lists to the ledger.
    async fn record_plan(
        &self,
        spec: &RestoreSpec,
        fp: String,
        tasks: Vec<PlannedTask>,
        totals: &[(u64, u64)],
    ) -> Result<String, Status> {
        let created = now_ms();
        let plan_id = format!("{}-{}-{}", spec.backup_id, &fp[..8], created);
        let new_tasks: Vec<NewTask> = tasks
            .into_iter()
            .zip(totals)
            .enumerate()
            .map(|(i, (t, &(records, bytes)))| NewTask {
                meta: TaskMeta {
                    task_id: i as u32,
                    source_topic: t.source_topic,
                    source_partition: t.source_partition,
                    target_topic: t.target_topic,
                    target_partition: t.target_partition,
                    segment_count: t.segments.len() as u64,
                    segments_base: 0,
                    first_offset: t.segments.first().map_or(0, |s| s.start_offset),
                    records_total: records,
                    bytes_total: bytes,
                    merge_sources: t
                        .merged
                        .iter()
                        .map(|m| MergeSourceMeta {
                            partition: m.partition,
                            segment_start: m.segment_start as u64,
                            segment_count: m.segment_count as u64,
                            first_offset: t
                                .segments
                                .get(m.segment_start)
                                .filter(|_| m.segment_count > 0)
                                .map_or(0, |s| s.start_offset),
                        })
                        .collect(),
                },
                segments: t.segments,
            })
            .collect();
        let record = PlanRecord {
            plan_id: plan_id.clone(),
            backup_id: spec.backup_id.clone(),
            fingerprint: fp,
            created_at_ms: created,
            cancelled: false,
            task_count: new_tasks.len() as u32,
            spec: spec.encode_to_vec(),
            trace_parent: current_traceparent(),
        };
        // Not on the ledger thread: writing a million-entry segment list takes seconds, and
        // grants and checkpoints of running plans must not wait behind it.
        let ledger = self.coord.ledger.clone();
        let created = blocking(move || ledger.create_plan(record, new_tasks))
            .await?
            .map_err(ledger_status)?;
        self.coord
            .ledger
            .durable(created.seq)
            .await
            .map_err(ledger_status)?;
        crate::metrics::METRICS.plans_submitted.inc();
        Ok(plan_id)
    }
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    fn spec() -> RestoreSpec {
        RestoreSpec {
            backup_id: "b1".into(),
            storage_url: "/backups".into(),
            source_topics: vec!["orders".into()],
            bootstrap_servers: "broker:9092".into(),
            ..Default::default()
        }
    }

    #[test]
    fn run_settings_do_not_make_another_restore() {
        let mut rerun = spec();
        rerun.max_records_per_sec = 500;
        rerun.skip_corrupt_segments = true;
        rerun.checkpoint_interval_ms = 1000;
        rerun
            .kafka_properties
            .insert("sasl.password".into(), "rotated".into());
        assert_eq!(fingerprint(&spec()), fingerprint(&rerun));
        let mut other = spec();
        other.target_topics = vec!["orders-copy".into()];
        assert_ne!(fingerprint(&spec()), fingerprint(&other));
        // Plans recorded by earlier versions without run settings keep their fingerprint.
        assert_eq!(fingerprint(&spec()), legacy_fingerprint(&spec()));
    }

    #[test]
    fn a_resumed_plan_takes_the_new_run_settings_and_keeps_what_it_writes() {
        let mut rerun = spec();
        rerun.max_records_per_sec = 500;
        rerun.target_topics = vec!["ignored".into()];
        let merged = with_run_settings_of(spec(), &rerun);
        assert_eq!(merged.max_records_per_sec, 500);
        assert!(merged.target_topics.is_empty());
    }
}

//! The worker-facing gRPC service. Every call after AcquireLease names (plan, task, epoch,
//! worker) and is checked against the ledger: a stale epoch (and, for a heartbeat, an expired
//! lease) answers FAILED_PRECONDITION, which tells the worker to stop that task now. A
//! cancelled plan's heartbeat is refused too, marked as a cancel: its holder then stops,
//! checkpoints and hands the task back, calls that are still taken.
//!
//! A lease carries the first page of its task's segment list; the worker asks for the rest
//! with GetTaskSegments while it restores, so no message grows with a partition's size.

use crate::grpc::{blocking, commit, ledger_status, remote_parent};
use crate::ledger::{
    Checkpoint, Completion, FailureKind, GrantOutcome, GrantPolicy, Holder, Ledger,
    OffsetRunRecord, PlanRecord, SegmentEntry, TaskView,
};
use crate::metrics::METRICS;
use crate::{now_ms, Coordinator};
use kafka_backup_common::manifest::SegmentFrame as IndexFrame;
use kafka_backup_common::telemetry::set_remote_parent;
use kafka_backup_proto::restore_workers_server::RestoreWorkers;
use kafka_backup_proto::*;
use prost::Message;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument;

/// A lease larger than this is not sent: the task is failed with the reason instead of being
/// handed to workers that cannot decode it. Leases are bounded by the page size, so this only
/// trips on pathological seek indexes.
const MAX_LEASE_BYTES: usize = 4 * 1024 * 1024;

pub struct WorkerService {
    coord: Arc<Coordinator>,
}

impl WorkerService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }

    fn ledger(&self) -> &Arc<Ledger> {
        &self.coord.ledger
    }
}

/// Counts reports refused for a stale lease.
fn counted(s: Status) -> Status {
    if s.code() == Code::FailedPrecondition {
        METRICS.fenced_reports.inc();
    }
    s
}

fn lease_ref(l: Option<LeaseRef>) -> Result<LeaseRef, Status> {
    l.ok_or_else(|| Status::invalid_argument("lease is required"))
}

fn holder(l: &LeaseRef) -> Holder<'_> {
    Holder {
        plan_id: &l.plan_id,
        task_id: l.task_id,
        worker_id: &l.worker_id,
        epoch: l.epoch,
    }
}

fn build_lease(
    spec: &RestoreSpec,
    task: &TaskView,
    plan: &PlanRecord,
    ttl_ms: u64,
    page: (u64, Vec<SegmentEntry>),
) -> TaskLease {
    let cp = task.progress.checkpoint.clone();
    let meta = &task.meta;
    let (segment_index, entries) = page;
    TaskLease {
        plan_id: plan.plan_id.clone(),
        task_id: meta.task_id,
        epoch: task.progress.epoch,
        ttl_ms,
        backup_id: spec.backup_id.clone(),
        storage_url: spec.storage_url.clone(),
        storage_options: spec.storage_options.clone(),
        bootstrap_servers: spec.bootstrap_servers.clone(),
        kafka_properties: spec.kafka_properties.clone(),
        source_topic: meta.source_topic.clone(),
        source_partition: meta.source_partition,
        target_topic: meta.target_topic.clone(),
        target_partition: meta.target_partition,
        segments: entries.iter().map(segment_ref).collect(),
        from_timestamp_ms: spec.from_timestamp_ms,
        to_timestamp_ms: spec.to_timestamp_ms,
        checkpoint_interval_ms: spec.checkpoint_interval_ms,
        add_original_offset_headers: spec.add_original_offset_headers,
        has_checkpoint: cp.is_some(),
        source_next_offset: cp.as_ref().map_or(-1, |c| c.source_next_offset),
        target_next_offset: cp.as_ref().map_or(-1, |c| c.target_next_offset),
        records_done: cp.as_ref().map_or(0, |c| c.records_done),
        bytes_done: cp.as_ref().map_or(0, |c| c.bytes_done),
        max_records_per_sec: spec.max_records_per_sec,
        trace_parent: plan.trace_parent.clone(),
        skip_corrupt_segments: spec.skip_corrupt_segments,
        segment_index,
        segment_count: meta.segment_count,
        task_start_offset: meta.first_offset,
        required_capabilities: required_capabilities(spec, meta),
        schema_ids: spec.schema_ids.clone(),
        merge_sources: meta
            .merge_sources
            .iter()
            .enumerate()
            .map(|(i, m)| MergeSource {
                source_partition: m.partition,
                segment_index: m.segment_start,
                segment_count: m.segment_count,
                start_offset: m.first_offset,
                next_offset: cp
                    .as_ref()
                    .and_then(|c| c.source_next_offsets.get(i).copied())
                    .unwrap_or(-1),
            })
            .collect(),
    }
}

/// What a worker must support to run a lease of this spec correctly.
fn required_capabilities(spec: &RestoreSpec, meta: &crate::ledger::TaskMeta) -> Vec<String> {
    let mut caps = vec![CAPABILITY_SEGMENT_PAGES.to_string()];
    if spec.schema_ids.is_some() {
        caps.push(CAPABILITY_SCHEMA_IDS.to_string());
    }
    if !meta.merge_sources.is_empty() {
        caps.push(CAPABILITY_PARTITION_MERGE.to_string());
    }
    caps
}

/// A stored segment as sent to a worker, with its seek index when it has one.
pub fn segment_ref(s: &SegmentEntry) -> SegmentRef {
    SegmentRef {
        key: s.key.clone(),
        start_offset: s.start_offset,
        end_offset: s.end_offset,
        record_count: s.record_count,
        compressed_size: s.compressed_size,
        frames: s.frames.iter().map(frame_ref).collect(),
    }
}

fn frame_ref(f: &IndexFrame) -> SegmentFrame {
    SegmentFrame {
        position: f.position,
        compressed_len: f.compressed_len,
        first_offset: f.first_offset,
        last_offset: f.last_offset,
        record_count: f.record_count,
        min_timestamp: f.min_timestamp,
        max_timestamp: f.max_timestamp,
        crc32: f.crc32,
    }
}

/// The first page of a lease: from the segment that holds the resume point. None for a merge
/// task: its worker reads each source's range of the list from that source's own position.
fn first_page(
    ledger: &Ledger,
    plan_id: &str,
    task: &TaskView,
) -> Result<(u64, Vec<SegmentEntry>), Status> {
    let meta = &task.meta;
    if !meta.merge_sources.is_empty() {
        return Ok((0, Vec::new()));
    }
    let start = match &task.progress.checkpoint {
        Some(cp) => ledger
            .segment_index_for(plan_id, meta.task_id, cp.source_next_offset)
            .map_err(ledger_status)?,
        None => 0,
    };
    let page = ledger
        .segments_page(plan_id, meta.task_id, start, SEGMENT_PAGE)
        .map_err(ledger_status)?;
    Ok((start, page))
}

#[tonic::async_trait]
impl RestoreWorkers for WorkerService {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        tracing::info!(worker = %r.worker_id, host = %r.hostname, "worker registered");
        let ttl = self.coord.settings.lease_ttl_ms;
        Ok(Response::new(RegisterResponse {
            lease_ttl_ms: ttl,
            heartbeat_interval_ms: (ttl / 4).max(100),
        }))
    }

    async fn acquire_lease(
        &self,
        req: Request<AcquireLeaseRequest>,
    ) -> Result<Response<AcquireLeaseResponse>, Status> {
        let r = req.into_inner();
        let s = &self.coord.settings;
        if self.coord.is_draining() {
            // Shutting down: no new leases; reports of the leases held are still answered.
            return Ok(Response::new(AcquireLeaseResponse {
                lease: None,
                retry_after_ms: 1_000,
                plan_finished: false,
            }));
        }
        let plan_ids: Vec<String> = if r.plan_id.is_empty() {
            self.ledger().grantable_plans()
        } else {
            vec![r.plan_id.clone()]
        };
        // Plans whose circuit is open wait; the earliest reopening decides the retry hint.
        let now = now_ms();
        let mut wait_ms: Option<i64> = None;
        let plan_ids: Vec<String> = plan_ids
            .into_iter()
            .filter(|p| match self.coord.breakers.admit(p, now) {
                Ok(()) => true,
                Err(ms) => {
                    wait_ms = Some(wait_ms.map_or(ms, |w| w.min(ms)));
                    false
                }
            })
            .collect();
        let policy = GrantPolicy {
            ttl_ms: s.lease_ttl_ms,
            grace_ms: s.grace_ms,
            max_stalled_grants: s.max_stalled_grants,
        };
        let worker = r.worker_id.clone();
        let out: GrantOutcome = commit(&self.coord.changes, move |l| {
            l.grant(&plan_ids, &worker, now, policy)
        })
        .await?;
        self.note_stalled(&out);
        if let Some(g) = out.granted {
            METRICS.leases_granted.inc();
            if g.expired_regrant {
                tracing::warn!(plan = %g.plan.plan_id, task = g.task.meta.task_id, "lease expired; re-granted");
                METRICS.lease_expiries.inc();
            }
            let probe_ms = (s.lease_ttl_ms + s.grace_ms) as i64;
            self.coord.breakers.granted(&g.plan.plan_id, now, probe_ms);
            if let Some(lease) = self
                .deliverable_lease(&g.plan, &g.task, &r.worker_id)
                .await?
            {
                return Ok(Response::new(AcquireLeaseResponse {
                    lease: Some(lease),
                    retry_after_ms: 0,
                    plan_finished: false,
                }));
            }
        }
        let plan_finished = !r.plan_id.is_empty()
            && self
                .ledger()
                .plan_is_terminal(&r.plan_id)
                .map_err(ledger_status)?;
        Ok(Response::new(AcquireLeaseResponse {
            lease: None,
            retry_after_ms: wait_ms.map_or(200, |w| w.clamp(50, 5_000) as u64),
            plan_finished,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<LeaseRef>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let l = req.into_inner();
        let ttl = self.coord.settings.lease_ttl_ms;
        commit(&self.coord.changes, move |ledger| {
            ledger.renew(holder(&l), now_ms(), ttl)
        })
        .await
        .map_err(counted)?;
        Ok(Response::new(HeartbeatResponse {
            ttl_ms: ttl,
            plan_cancelled: false,
        }))
    }

    async fn report_checkpoint(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let span = tracing::info_span!(
            "checkpoint.store",
            task = req.get_ref().lease.as_ref().map_or(0, |l| l.task_id)
        );
        set_remote_parent(&span, &remote_parent(&req));
        let plan_cancelled = self
            .store_checkpoint(req.into_inner(), Completion::InProgress)
            .instrument(span)
            .await?;
        Ok(Response::new(HeartbeatResponse {
            ttl_ms: self.coord.settings.lease_ttl_ms,
            plan_cancelled,
        }))
    }

    async fn complete_task(
        &self,
        req: Request<CheckpointRequest>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        let span = tracing::info_span!(
            "task.complete",
            task = req.get_ref().lease.as_ref().map_or(0, |l| l.task_id)
        );
        set_remote_parent(&span, &remote_parent(&req));
        self.store_checkpoint(req.into_inner(), Completion::Done)
            .instrument(span)
            .await?;
        self.coord.task_ended();
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn fail_task(
        &self,
        req: Request<FailTaskRequest>,
    ) -> Result<Response<FailTaskResponse>, Status> {
        let r = req.into_inner();
        let l = lease_ref(r.lease)?;
        let kind = match (r.handed_back, r.retryable, r.dependency_unavailable) {
            (true, _, _) => FailureKind::HandedBack,
            (false, true, true) => FailureKind::Outage,
            (false, true, false) => FailureKind::Retryable,
            (false, false, _) => FailureKind::Fatal,
        };
        if kind == FailureKind::HandedBack {
            METRICS.tasks_handed_back.inc();
            tracing::info!(plan = %l.plan_id, task = l.task_id, worker = %l.worker_id, "task handed back (worker shutting down, or plan cancelled)");
        } else {
            METRICS.task_failures.inc();
            tracing::warn!(plan = %l.plan_id, task = l.task_id, ?kind, error = %r.error, "task failed");
        }
        let max_attempts = self.coord.settings.max_attempts;
        let (lc, error) = (l.clone(), r.error.clone());
        commit(&self.coord.changes, move |ledger| {
            ledger.fail(holder(&lc), &error, kind, now_ms(), max_attempts)
        })
        .await
        .map_err(counted)?;
        if kind == FailureKind::Outage {
            self.coord.breakers.outage(&l.plan_id, now_ms(), &r.error);
        }
        self.coord.task_ended();
        Ok(Response::new(FailTaskResponse {}))
    }

    async fn get_task_segments(
        &self,
        req: Request<TaskSegmentsRequest>,
    ) -> Result<Response<TaskSegmentsResponse>, Status> {
        let r = req.into_inner();
        let l = lease_ref(r.lease)?;
        let limit = match r.limit as usize {
            0 => SEGMENT_PAGE,
            n => n.min(SEGMENT_PAGE),
        };
        let ledger = self.ledger().clone();
        let from = r.from_index;
        let (count, page) = blocking(move || {
            let meta = ledger.check_holder(holder(&l))?;
            let page = ledger.segments_page(&l.plan_id, l.task_id, from, limit)?;
            Ok::<_, crate::ledger::LedgerError>((meta.segment_count, page))
        })
        .await?
        .map_err(|e| counted(ledger_status(e)))?;
        Ok(Response::new(TaskSegmentsResponse {
            next_index: from + page.len() as u64,
            segments: page.iter().map(segment_ref).collect(),
            segment_count: count,
        }))
    }
}

impl WorkerService {
    /// Reports tasks the grant failed for making no progress.
    fn note_stalled(&self, out: &GrantOutcome) {
        for t in &out.stalled {
            METRICS.tasks_stalled.inc();
            tracing::error!(plan = %t.plan_id, task = t.task_id, error = %t.error, "task failed: no progress");
        }
        if !out.stalled.is_empty() {
            self.coord.task_ended();
        }
    }

    /// Builds the lease of a grant with its first segment page. A lease too large to send
    /// fails its task with the reason instead (it could never be delivered).
    async fn deliverable_lease(
        &self,
        plan: &PlanRecord,
        task: &TaskView,
        worker_id: &str,
    ) -> Result<Option<TaskLease>, Status> {
        let spec = RestoreSpec::decode(plan.spec.as_slice()).map_err(|e| {
            Status::internal(format!("stored spec of {} unreadable: {e}", plan.plan_id))
        })?;
        let (ledger, t, p) = (self.ledger().clone(), task.clone(), plan.plan_id.clone());
        let page = blocking(move || first_page(&ledger, &p, &t)).await??;
        let lease = build_lease(&spec, task, plan, self.coord.settings.lease_ttl_ms, page);
        let span = tracing::info_span!(
            "lease.grant",
            plan_id = %plan.plan_id,
            task = task.meta.task_id,
            epoch = task.progress.epoch,
            worker_id = %worker_id,
            source = %format!("{}/{}", task.meta.source_topic, task.meta.source_partition),
        );
        set_remote_parent(&span, &plan.trace_parent);
        let size = lease.encoded_len();
        if size <= MAX_LEASE_BYTES {
            span.in_scope(|| tracing::info!(bytes = size, "lease granted"));
            return Ok(Some(lease));
        }
        let error = format!(
            "its lease would be a {size}-byte message, over the {MAX_LEASE_BYTES}-byte limit (the seek index of segment {} is too large); restore it without a time window or re-run the backup with a larger --index-interval-bytes",
            lease.segments.first().map_or("?", |s| s.key.as_str())
        );
        span.in_scope(|| tracing::error!(%error, "lease not deliverable; failing the task"));
        METRICS.tasks_stalled.inc();
        let l = LeaseRef {
            plan_id: plan.plan_id.clone(),
            task_id: task.meta.task_id,
            epoch: task.progress.epoch,
            worker_id: worker_id.to_string(),
        };
        commit(&self.coord.changes, move |ledger| {
            ledger.fail(holder(&l), &error, FailureKind::Fatal, now_ms(), 0)
        })
        .await?;
        self.coord.task_ended();
        Ok(None)
    }

    /// Stores a checkpoint (or completion); whether the plan was cancelled.
    async fn store_checkpoint(
        &self,
        r: CheckpointRequest,
        completion: Completion,
    ) -> Result<bool, Status> {
        let l = lease_ref(r.lease)?;
        let cp = Checkpoint {
            source_next_offset: r.source_next_offset,
            target_next_offset: r.target_next_offset,
            records_done: r.records_done,
            bytes_done: r.bytes_done,
            source_next_offsets: r.source_next_offsets.clone(),
        };
        let runs: Vec<OffsetRunRecord> = r
            .offset_runs
            .iter()
            .map(|o| OffsetRunRecord {
                source_start: o.source_start,
                target_start: o.target_start,
                length: o.length,
                source_index: o.source_index,
            })
            .collect();
        let (lc, skipped) = (l.clone(), r.skipped_segments);
        let out = commit(&self.coord.changes, move |ledger| {
            ledger.checkpoint(holder(&lc), &cp, &runs, &skipped, completion)
        })
        .await
        .map_err(counted)?;
        METRICS.checkpoints.inc();
        METRICS.records_restored.add(out.records_added);
        METRICS.bytes_restored.add(out.bytes_added);
        if out.records_added > 0 || out.completed {
            self.coord.breakers.progress(&l.plan_id);
        }
        if out.completed {
            tracing::info!(plan = %l.plan_id, task = l.task_id, records = r.records_done, "task completed");
        }
        Ok(out.plan_cancelled)
    }
}

//! The worker-facing gRPC service. Every call after AcquireLease names (plan, task, epoch,
//! worker) and is checked against the ledger: a stale epoch, a cancelled plan or an expired
//! lease answers FAILED_PRECONDITION, which tells the worker to stop that task now.

use crate::ledger::{
    Checkpoint, Holder, LedgerError, OffsetRunRecord, PlanRecord, SegmentEntry, TaskRecord,
};
use crate::plan_service::remote_parent;
use crate::status::{plan_state, TERMINAL_STATES};
use crate::{now_ms, Coordinator};
use kafka_backup_common::manifest::SegmentFrame as IndexFrame;
use kafka_backup_common::telemetry::set_remote_parent;
use kafka_backup_proto::restore_workers_server::RestoreWorkers;
use kafka_backup_proto::*;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct WorkerService {
    coord: Arc<Coordinator>,
}

impl WorkerService {
    pub fn new(coord: Arc<Coordinator>) -> Self {
        Self { coord }
    }
}

pub fn ledger_status(e: LedgerError) -> Status {
    match e {
        LedgerError::Fenced { .. } => {
            crate::metrics::METRICS.fenced_reports.inc();
            Status::failed_precondition(e.to_string())
        }
        LedgerError::UnknownPlan(_) | LedgerError::UnknownTask { .. } => {
            Status::not_found(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
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

fn build_lease(spec: &RestoreSpec, task: &TaskRecord, plan: &PlanRecord, ttl_ms: u64) -> TaskLease {
    let plan_id = plan.plan_id.as_str();
    let cp = task.checkpoint.clone();
    TaskLease {
        plan_id: plan_id.to_string(),
        task_id: task.task_id,
        epoch: task.epoch,
        ttl_ms,
        backup_id: spec.backup_id.clone(),
        storage_url: spec.storage_url.clone(),
        storage_options: spec.storage_options.clone(),
        bootstrap_servers: spec.bootstrap_servers.clone(),
        kafka_properties: spec.kafka_properties.clone(),
        source_topic: task.source_topic.clone(),
        source_partition: task.source_partition,
        target_topic: task.target_topic.clone(),
        target_partition: task.target_partition,
        segments: segment_refs(&task.segments, cp.as_ref().map(|c| c.source_next_offset)),
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
    }
}

/// The task's segments for its lease. Only the segment the worker starts in carries its seek
/// index (the first one that can hold the resume point), which keeps a lease small however
/// many segments a partition has.
pub fn segment_refs(segments: &[SegmentEntry], resume_at: Option<i64>) -> Vec<SegmentRef> {
    let start = resume_at.unwrap_or(i64::MIN);
    let mut indexed = false;
    segments
        .iter()
        .map(|s| {
            let starts_here = !indexed && s.end_offset >= start;
            indexed |= starts_here;
            SegmentRef {
                key: s.key.clone(),
                start_offset: s.start_offset,
                end_offset: s.end_offset,
                record_count: s.record_count,
                compressed_size: s.compressed_size,
                frames: if starts_here {
                    s.frames.iter().map(frame_ref).collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
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
        let ledger = &self.coord.ledger;
        let s = &self.coord.settings;
        let plan_ids: Vec<String> = if r.plan_id.is_empty() {
            let mut plans = ledger.plans().map_err(ledger_status)?;
            plans.retain(|p| !p.cancelled);
            plans.sort_by_key(|p| p.created_at_ms);
            plans.into_iter().map(|p| p.plan_id).collect()
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
        let granted = ledger
            .grant(
                &plan_ids,
                &r.worker_id,
                now_ms(),
                s.lease_ttl_ms,
                s.grace_ms,
            )
            .map_err(ledger_status)?;
        if let Some((plan, task)) = granted {
            let probe_ms = (s.lease_ttl_ms + s.grace_ms) as i64;
            self.coord.breakers.granted(&plan.plan_id, now, probe_ms);
            let spec = RestoreSpec::decode(plan.spec.as_slice()).map_err(|e| {
                Status::internal(format!("stored spec of {} unreadable: {e}", plan.plan_id))
            })?;
            let span = tracing::info_span!(
                "lease.grant",
                plan_id = %plan.plan_id,
                task = task.task_id,
                epoch = task.epoch,
                worker_id = %r.worker_id,
                source = %format!("{}/{}", task.source_topic, task.source_partition),
            );
            set_remote_parent(&span, &plan.trace_parent);
            span.in_scope(|| tracing::info!("lease granted"));
            return Ok(Response::new(AcquireLeaseResponse {
                lease: Some(build_lease(&spec, &task, &plan, s.lease_ttl_ms)),
                retry_after_ms: 0,
                plan_finished: false,
            }));
        }
        let plan_finished = if r.plan_id.is_empty() {
            false
        } else {
            let plan = ledger.plan(&r.plan_id).map_err(ledger_status)?;
            let tasks = ledger.tasks(&r.plan_id).map_err(ledger_status)?;
            TERMINAL_STATES.contains(&plan_state(&plan, &tasks))
        };
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
        self.coord
            .ledger
            .renew(holder(&l), now_ms(), ttl)
            .map_err(ledger_status)?;
        Ok(Response::new(HeartbeatResponse { ttl_ms: ttl }))
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
        span.in_scope(|| self.store_checkpoint(req.into_inner(), false))?;
        Ok(Response::new(HeartbeatResponse {
            ttl_ms: self.coord.settings.lease_ttl_ms,
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
        span.in_scope(|| self.store_checkpoint(req.into_inner(), true))?;
        self.coord.task_ended();
        Ok(Response::new(CompleteTaskResponse {}))
    }

    async fn fail_task(
        &self,
        req: Request<FailTaskRequest>,
    ) -> Result<Response<FailTaskResponse>, Status> {
        let r = req.into_inner();
        crate::metrics::METRICS.task_failures.inc();
        let l = lease_ref(r.lease)?;
        let outage = r.retryable && r.dependency_unavailable;
        tracing::warn!(plan = %l.plan_id, task = l.task_id, retryable = r.retryable, outage, error = %r.error, "task failed");
        self.coord
            .ledger
            .fail(
                holder(&l),
                &r.error,
                r.retryable,
                outage,
                now_ms(),
                self.coord.settings.max_attempts,
            )
            .map_err(ledger_status)?;
        if outage {
            self.coord.breakers.outage(&l.plan_id, now_ms(), &r.error);
        }
        self.coord.task_ended();
        Ok(Response::new(FailTaskResponse {}))
    }
}

impl WorkerService {
    fn store_checkpoint(&self, r: CheckpointRequest, complete: bool) -> Result<(), Status> {
        let l = lease_ref(r.lease)?;
        let cp = Checkpoint {
            source_next_offset: r.source_next_offset,
            target_next_offset: r.target_next_offset,
            records_done: r.records_done,
            bytes_done: r.bytes_done,
        };
        let runs: Vec<OffsetRunRecord> = r
            .offset_runs
            .iter()
            .map(|o| OffsetRunRecord {
                source_start: o.source_start,
                target_start: o.target_start,
                length: o.length,
            })
            .collect();
        let acknowledged = self
            .coord
            .ledger
            .checkpoint(holder(&l), &cp, &runs, &r.skipped_segments, complete)
            .map_err(ledger_status)?;
        if acknowledged > 0 || complete {
            self.coord.breakers.progress(&l.plan_id);
        }
        if complete {
            tracing::info!(plan = %l.plan_id, task = l.task_id, records = r.records_done, "task completed");
        }
        Ok(())
    }
}

//! One leased partition task, start to finish: resume point → fetch/decode → filter/remap →
//! produce → checkpoint.
//!
//! Why no record is lost or duplicated across worker crashes, without Kafka transactions:
//! 1. Only records the broker acknowledged enter a checkpoint, together with the target
//!    offset it assigned, so a checkpoint never claims more than is in the target.
//! 2. Lease-bounded writes (`lease.rs`): this worker hands a record to the producer only while
//!    the write would finish before its lease deadline, measured on its own monotonic clock
//!    from when the renewal was sent; after the deadline it drops its queue. The coordinator
//!    re-grants only after TTL + grace, so two holders never write at once.
//! 3. The next holder reconciles (`reconcile.rs`): whatever the previous holder wrote after its
//!    last checkpoint is found in the target tail and skipped, so it is not written twice.
//!
//! Together: each source record is in the target exactly once, in source order.

use crate::connect::WorkersClient;
use crate::lease::{spawn_heartbeats, stop_on_shutdown, LeaseState};
use crate::merge::{MergeStream, SourceSpec};
use crate::pages::{PageError, SegmentPages};
use crate::produce::{Acked, PartitionProducer, ProduceError, ProducerCache, ProducerKey};
use crate::reconcile::{reconcile, Expected, ReconcileError, TargetPartition, TaskSource};
use crate::schema_remap::{RemapError, SchemaIdRemapper};
use crate::shutdown::Shutdown;
use crate::source::{prefetch, RecordFilter, SourceError};
use kafka_backup_common::segment::DecodedSegment;
use kafka_backup_common::storage::{BackupStore, StorageError};
use kafka_backup_proto::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::Code;
use tracing::Instrument;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A missing or damaged segment without `--skip-corrupt-segments`: the message says how
    /// the operator goes on, since rerunning as is would stop at the same object.
    #[error("{0}; restore the object and rerun the same restore, or rerun it with --skip-corrupt-segments to skip it (its records are then not restored); either resumes from the checkpoints")]
    BadObject(SourceError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("lease was rejected by the coordinator (superseded or plan cancelled)")]
    Fenced,
    #[error("lease deadline passed without renewal (coordinator unreachable); stopped writing")]
    LeaseLost,
    #[error("coordinator refused a report: {0}")]
    Coordinator(String),
    #[error("this worker does not support {0:?}, which the lease requires; upgrade the worker to the coordinator's version")]
    Unsupported(String),
    #[error("the worker is shutting down; handed the task back after its last checkpoint")]
    ShuttingDown,
    /// Asked to stop while waiting for a write window (the heartbeats ended with the plan's
    /// cancel, so the window would never open): `execute` drains, checkpoints and hands back.
    #[error("asked to stop while waiting for the lease to allow a write")]
    StopRequested,
    #[error(transparent)]
    SchemaId(#[from] RemapError),
    #[error("the lease's schema ID remapping is invalid: {0}")]
    SchemaIdConfig(String),
}

/// Offset runs per checkpoint report at most: a report is sent early when this many have
/// gathered (a compacted partition can produce a run per record), so no report grows with
/// the checkpoint interval.
const MAX_RUNS_PER_REPORT: usize = 10_000;

impl TaskError {
    /// The target cluster or the object store could not be reached: an outage the plan's
    /// circuit breaker should pace, not a fault of this task.
    fn is_outage(&self) -> bool {
        let storage_io =
            |e: &SourceError| matches!(e, SourceError::Storage(StorageError::Io { .. }));
        match self {
            TaskError::Storage(StorageError::Io { .. }) => true,
            TaskError::Source(e) => storage_io(e),
            TaskError::Reconcile(ReconcileError::Source(e)) => storage_io(e),
            TaskError::Reconcile(ReconcileError::Kafka { source, .. }) => {
                crate::produce::is_transient_kafka_error(source)
            }
            TaskError::Reconcile(ReconcileError::Stalled { .. }) => true,
            TaskError::Produce(e) => e.is_outage(),
            TaskError::SchemaId(e) => e.is_outage(),
            TaskError::Reconcile(ReconcileError::SchemaId(e)) => e.is_outage(),
            _ => false,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            TaskError::Storage(e) => matches!(e, StorageError::Io { .. }),
            TaskError::Source(e) => e.retryable(),
            TaskError::Reconcile(ReconcileError::Source(e)) => e.retryable(),
            // An ID with no target fails again on every attempt; a registry outage may pass.
            TaskError::SchemaId(e) | TaskError::Reconcile(ReconcileError::SchemaId(e)) => {
                e.is_outage()
            }
            TaskError::SchemaIdConfig(_) | TaskError::BadObject(_) => false,
            _ => true,
        }
    }
}

/// Runs one lease to its end and reports the outcome to the coordinator.
pub async fn run_task(
    client: WorkersClient,
    worker_id: &str,
    lease: TaskLease,
    granted_at: Instant,
    heartbeat_interval: Duration,
    producers: &mut ProducerCache,
    shutdown: &Shutdown,
) {
    let lease_ref = LeaseRef {
        plan_id: lease.plan_id.clone(),
        task_id: lease.task_id,
        epoch: lease.epoch,
        worker_id: worker_id.to_string(),
    };
    let label = format!("{}/{}", lease.source_topic, lease.source_partition);
    let state = LeaseState::new(granted_at, Duration::from_millis(lease.ttl_ms));
    let heartbeats = spawn_heartbeats(
        client.clone(),
        lease_ref.clone(),
        state.clone(),
        heartbeat_interval,
    );
    let span = tracing::info_span!(
        "task",
        plan_id = %lease.plan_id,
        backup_id = %lease.backup_id,
        task = lease.task_id,
        epoch = lease.epoch,
        worker_id = %worker_id,
        source = %label,
        target = %format!("{}/{}", lease.target_topic, lease.target_partition),
    );
    kafka_backup_common::telemetry::set_remote_parent(&span, &lease.trace_parent);
    let m = &crate::metrics::METRICS;
    m.tasks_started.inc();
    m.active_tasks.inc();
    // The task stops to be handed back on the worker's shutdown or on the plan's cancel.
    let task_stop = state.task_stop();
    let forward_shutdown = stop_on_shutdown(state.clone(), shutdown.clone());
    let result = match unsupported_capability(&lease) {
        Some(cap) => Err(TaskError::Unsupported(cap)),
        // Granted while the worker began shutting down: nothing written, hand it back.
        None if shutdown.is_requested() => Err(TaskError::ShuttingDown),
        None => {
            execute(
                client.clone(),
                &lease_ref,
                &lease,
                &state,
                producers,
                &task_stop,
            )
            .instrument(span)
            .await
        }
    };
    drop(forward_shutdown);
    m.active_tasks.dec();
    drop(heartbeats);
    let mut client = client;
    match result {
        Ok(records) => {
            m.tasks_completed.inc();
            tracing::info!(task = %label, records, "task completed")
        }
        Err(TaskError::Fenced) => {
            m.tasks_fenced.inc();
            tracing::warn!(task = %label, "task fenced; dropped it")
        }
        Err(e @ TaskError::ShuttingDown) => {
            let req = FailTaskRequest {
                lease: Some(lease_ref),
                error: e.to_string(),
                retryable: true,
                dependency_unavailable: false,
                handed_back: true,
            };
            match client.fail_task(req).await {
                Ok(_) if state.is_cancelled() => {
                    m.tasks_handed_back.inc();
                    tracing::info!(task = %label, "plan cancelled: task handed back after its last checkpoint");
                }
                Ok(_) => {
                    m.tasks_handed_back.inc();
                    tracing::info!(task = %label, "shutting down: task handed back");
                }
                Err(s) => {
                    tracing::warn!(task = %label, error = %s.message(), "could not hand the task back; its lease will expire")
                }
            }
        }
        Err(e) => {
            m.tasks_failed.inc();
            let retryable = e.retryable();
            tracing::error!(task = %label, error = %e, retryable, "task failed");
            let req = FailTaskRequest {
                lease: Some(lease_ref),
                error: e.to_string(),
                retryable,
                dependency_unavailable: e.is_outage(),
                handed_back: false,
            };
            if let Err(s) = client.fail_task(req).await {
                tracing::warn!(task = %label, error = %s.message(), "could not report failure; the lease will expire");
            }
        }
    }
}

/// The first capability the lease requires that this worker lacks.
fn unsupported_capability(lease: &TaskLease) -> Option<String> {
    lease
        .required_capabilities
        .iter()
        .find(|c| !WORKER_CAPABILITIES.contains(&c.as_str()))
        .cloned()
}

fn report_error(s: tonic::Status) -> TaskError {
    if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) {
        TaskError::Fenced
    } else {
        TaskError::Coordinator(s.message().to_string())
    }
}

fn checkpoint_request(lease: &LeaseRef, acked: &mut Acked) -> CheckpointRequest {
    CheckpointRequest {
        lease: Some(lease.clone()),
        source_next_offset: acked.source_next,
        target_next_offset: acked.target_next,
        records_done: acked.records,
        bytes_done: acked.bytes,
        offset_runs: std::mem::take(&mut acked.runs),
        skipped_segments: std::mem::take(&mut acked.skipped),
        source_next_offsets: acked.source_nexts.clone(),
    }
}

/// What one lease's restore works with.
struct TaskContext<'a> {
    client: WorkersClient,
    lease_ref: &'a LeaseRef,
    lease: &'a TaskLease,
    state: &'a Arc<LeaseState>,
    /// A record is handed to the producer only if it would be delivered within this (see
    /// `lease.rs`).
    write_window: Duration,
    shutdown: &'a Shutdown,
    /// Schema ID rewriting, when the restore asks for it.
    remap: Option<SchemaIdRemapper>,
}

impl TaskContext<'_> {
    async fn checkpoint(&mut self, acked: &mut Acked) -> Result<(), TaskError> {
        let resp = self
            .client
            .report_checkpoint(checkpoint_request(self.lease_ref, acked))
            .await
            .map_err(report_error)?;
        if resp.into_inner().plan_cancelled {
            self.state.plan_cancelled();
        }
        Ok(())
    }

    /// Shutdown requested: nothing new is produced; what is in flight is awaited and
    /// checkpointed, so the task can be handed back with nothing left to reconcile.
    async fn stop_for_shutdown(&mut self, out: &mut PartitionProducer) -> TaskError {
        if let Err(e) = out.drain().await {
            return e.into();
        }
        match self.checkpoint(&mut out.acked).await {
            Ok(()) => TaskError::ShuttingDown,
            Err(e) => e,
        }
    }
}

/// Runs one lease: resume point, then every kept record of the task's segments produced in
/// order with periodic checkpoints, then the final checkpoint. Returns the records restored.
async fn execute(
    client: WorkersClient,
    lease_ref: &LeaseRef,
    lease: &TaskLease,
    state: &Arc<LeaseState>,
    producers: &mut ProducerCache,
    shutdown: &Shutdown,
) -> Result<u64, TaskError> {
    let options: HashMap<String, String> = lease.storage_options.clone().into_iter().collect();
    let store = BackupStore::open(&lease.storage_url, &options, false)?;
    let message_timeout = (Duration::from_millis(lease.ttl_ms) * 2 / 5).max(Duration::from_secs(1));
    let mut cx = TaskContext {
        client,
        lease_ref,
        lease,
        state,
        write_window: message_timeout + Duration::from_millis(500),
        shutdown,
        remap: SchemaIdRemapper::for_lease(lease.schema_ids.as_ref())
            .map_err(TaskError::SchemaIdConfig)?,
    };
    // Take the producer first: a new one acquires its producer id in the background while
    // the resume point is worked out. Nothing is sent before the resume point is known.
    let producer_key = ProducerKey {
        plan_id: lease.plan_id.clone(),
        bootstrap: lease.bootstrap_servers.clone(),
        properties: lease.kafka_properties.clone(),
        message_timeout,
    };
    let (producer, reused) = producers.take_or_create(&producer_key)?;
    let pages = SegmentPages::new(cx.client.clone(), lease_ref.clone(), lease, state.clone());
    let filter = RecordFilter {
        from_offset: lease.task_start_offset,
        from_ts: lease.from_timestamp_ms,
        to_ts: lease.to_timestamp_ms,
    };
    let mut acked = resume_point(&mut cx, &store, &producer, pages.clone(), filter).await?;
    if !reused {
        crate::produce::request_producer_id(&producer, &lease.target_topic).await;
    }
    // Record the resume point before writing anything new.
    cx.checkpoint(&mut acked).await?;
    let mut out = PartitionProducer::new(
        producer,
        &lease.target_topic,
        lease.target_partition,
        lease.add_original_offset_headers,
        acked,
    );
    let produced = if lease.merge_sources.is_empty() {
        let filter = RecordFilter {
            from_offset: out.acked.source_next,
            ..filter
        };
        let segments = prefetch(store, pages, filter, lease.skip_corrupt_segments);
        produce_all(&mut cx, segments, filter, &mut out).await
    } else {
        let positions = out.acked.source_nexts.clone();
        let mut merged = open_merge(&cx, &store, &positions);
        produce_merged(&mut cx, &mut merged, &mut out).await
    };
    match produced {
        Err(TaskError::StopRequested) => return Err(cx.stop_for_shutdown(&mut out).await),
        other => other?,
    }
    out.drain().await?;
    let records = out.acked.records;
    cx.client
        .complete_task(checkpoint_request(lease_ref, &mut out.acked))
        .await
        .map_err(report_error)?;
    producers.keep(producer_key, out.into_producer());
    Ok(records)
}

/// Where this holder starts: after reconciling the target tail when a previous holder left a
/// checkpoint, else at the task's first offset (each merge source's first offset) with the
/// target's current end.
async fn resume_point(
    cx: &mut TaskContext<'_>,
    store: &BackupStore,
    producer: &rdkafka::producer::FutureProducer,
    pages: SegmentPages,
    filter: RecordFilter,
) -> Result<Acked, TaskError> {
    let lease = cx.lease;
    let target = TargetPartition {
        bootstrap: &lease.bootstrap_servers,
        properties: &lease.kafka_properties,
        topic: &lease.target_topic,
        partition: lease.target_partition,
        client: producer,
    };
    let merge = !lease.merge_sources.is_empty();
    if !lease.has_checkpoint {
        let starts = merge_positions(lease);
        return Ok(Acked {
            source_next: if merge {
                starts.iter().sum()
            } else {
                lease.task_start_offset
            },
            target_next: target.end_offset().await?,
            source_nexts: starts,
            ..Default::default()
        });
    }
    let positions = merge_positions(lease);
    let cp = Acked {
        source_next: lease.source_next_offset,
        target_next: lease.target_next_offset,
        records: lease.records_done,
        bytes: lease.bytes_done,
        source_nexts: positions.clone(),
        ..Default::default()
    };
    let expected = if merge {
        Expected::Merge(open_merge(cx, store, &positions))
    } else {
        Expected::Partition(Box::new(TaskSource {
            store,
            segments: pages,
            filter,
            skip_bad: lease.skip_corrupt_segments,
        }))
    };
    Ok(reconcile(
        &target,
        expected,
        lease.add_original_offset_headers,
        cx.remap.as_mut(),
        cp,
    )
    .await?)
}

/// A merge task's next offset per source: the checkpoint's, else the source's first.
fn merge_positions(lease: &TaskLease) -> Vec<i64> {
    lease
        .merge_sources
        .iter()
        .map(|m| {
            if lease.has_checkpoint && m.next_offset >= 0 {
                m.next_offset
            } else {
                m.start_offset
            }
        })
        .collect()
}

/// The merged sequence of a merge task from `positions` (one per source).
fn open_merge(cx: &TaskContext<'_>, store: &BackupStore, positions: &[i64]) -> MergeStream {
    let lease = cx.lease;
    let sources = lease
        .merge_sources
        .iter()
        .zip(positions)
        .map(|(m, from)| SourceSpec {
            partition: m.source_partition,
            segments: SegmentPages::range(
                cx.client.clone(),
                cx.lease_ref.clone(),
                cx.state.clone(),
                m.segment_index,
                m.segment_count,
            ),
            filter: RecordFilter {
                from_offset: *from,
                from_ts: lease.from_timestamp_ms,
                to_ts: lease.to_timestamp_ms,
            },
        })
        .collect();
    MergeStream::open(store, sources, lease.skip_corrupt_segments)
}

/// Produces a merge task's merged sequence.
async fn produce_merged(
    cx: &mut TaskContext<'_>,
    merged: &mut MergeStream,
    out: &mut PartitionProducer,
) -> Result<(), TaskError> {
    let mut pace = Pace::new(cx.lease);
    pace.bytes_at_checkpoint = Some(out.acked.bytes);
    loop {
        let next = tokio::select! {
            biased;
            _ = cx.shutdown.requested() => return Err(cx.stop_for_shutdown(out).await),
            next = merged.next() => next,
        };
        out.acked.skipped.extend(merged.take_skipped());
        let rec = match next {
            Ok(Some(rec)) => rec,
            Ok(None) => return Ok(()),
            // The stream skipped what may be skipped; anything else (a damaged record
            // inside a segment, as for a 1:1 task) ends the task at this point.
            Err(e) => return Err(stop_at(cx, e, out).await),
        };
        pace.throttle.wait().await;
        wait_for_lease(cx.state, cx.write_window, out).await?;
        let view = rec.as_ref();
        match cx.remap.as_mut() {
            None => out.send_from(rec.index, &view).await?,
            Some(remap) => {
                let rewritten = remap.rewrite(&view).await?;
                out.send_from(rec.index, &rewritten.apply(&view)).await?;
            }
        }
        checkpoint_if_due(cx, out, &mut pace).await?;
    }
}

/// Produces the records `filter` keeps from every segment the fetch stage hands over.
async fn produce_all(
    cx: &mut TaskContext<'_>,
    mut segments: tokio::sync::mpsc::Receiver<(String, Result<DecodedSegment, SourceError>)>,
    filter: RecordFilter,
    out: &mut PartitionProducer,
) -> Result<(), TaskError> {
    let mut pace = Pace::new(cx.lease);
    loop {
        let next = tokio::select! {
            biased;
            _ = cx.shutdown.requested() => return Err(cx.stop_for_shutdown(out).await),
            next = segments.recv() => next,
        };
        let Some((key, seg)) = next else { break };
        let seg = match seg {
            Ok(seg) => seg,
            Err(e) => {
                skip_or_stop(cx, &key, e, out).await?;
                continue;
            }
        };
        let seg_span = tracing::info_span!(
            "segment",
            key = %seg.key,
            records = seg.header.record_count,
            start_offset = seg.header.start_offset,
            end_offset = seg.header.end_offset,
            bytes = seg.uncompressed_len(),
        );
        produce_segment(cx, &seg, filter, out, &mut pace)
            .instrument(seg_span)
            .await?;
    }
    Ok(())
}

/// A segment that could not be read: skipped and noted (`--skip-corrupt-segments` and a
/// missing or damaged object), or the end of the task — after everything before it is
/// produced and checkpointed, so the task stops exactly at the bad object.
async fn skip_or_stop(
    cx: &mut TaskContext<'_>,
    key: &str,
    e: SourceError,
    out: &mut PartitionProducer,
) -> Result<(), TaskError> {
    match e {
        e if cx.lease.skip_corrupt_segments && e.is_bad_object() => {
            tracing::error!(%key, error = %e, "skipping a missing or corrupt segment (--skip-corrupt-segments)");
            out.acked.skipped.push(format!("{key}: {e}"));
            Ok(())
        }
        e => Err(stop_at(cx, e, out).await),
    }
}

/// Ends the task at a source error: the coordinator's segment list gone (fenced or
/// unreachable) stops writing at once; anything else after producing and checkpointing
/// everything before it.
async fn stop_at(
    cx: &mut TaskContext<'_>,
    e: SourceError,
    out: &mut PartitionProducer,
) -> TaskError {
    if let SourceError::SegmentList(e) = e {
        out.abandon().await;
        return match e {
            PageError::Fenced(_) => TaskError::Fenced,
            PageError::Unavailable(why) => TaskError::Coordinator(why),
        };
    }
    if let Err(d) = out.drain().await {
        return d.into();
    }
    if let Err(c) = cx.checkpoint(&mut out.acked).await {
        return c;
    }
    if e.is_bad_object() {
        return TaskError::BadObject(e);
    }
    e.into()
}

/// When to checkpoint and how fast to go: the lease's checkpoint interval, an early report
/// once many offset runs gathered, and the record throttle.
struct Pace {
    interval: Duration,
    last_checkpoint: Instant,
    bytes_at_checkpoint: Option<u64>,
    throttle: Throttle,
}

impl Pace {
    fn new(lease: &TaskLease) -> Self {
        Self {
            interval: Duration::from_millis(lease.checkpoint_interval_ms.max(200)),
            last_checkpoint: Instant::now(),
            bytes_at_checkpoint: None,
            throttle: Throttle::new(lease.max_records_per_sec),
        }
    }

    fn checkpoint_due(&self, out: &PartitionProducer) -> bool {
        self.last_checkpoint.elapsed() >= self.interval
            || out.acked.runs.len() >= MAX_RUNS_PER_REPORT
    }

    /// Notes a checkpoint and updates the throughput gauge.
    fn checkpointed(&mut self, bytes: u64) {
        let secs = self.last_checkpoint.elapsed().as_secs_f64();
        self.last_checkpoint = Instant::now();
        if let Some(before) = self.bytes_at_checkpoint {
            crate::metrics::METRICS
                .throughput_bytes_per_sec
                .set((bytes.saturating_sub(before) as f64 / secs.max(1e-3)) as u64);
        }
        self.bytes_at_checkpoint = Some(bytes);
    }
}

async fn produce_segment(
    cx: &mut TaskContext<'_>,
    seg: &DecodedSegment,
    filter: RecordFilter,
    out: &mut PartitionProducer,
    pace: &mut Pace,
) -> Result<(), TaskError> {
    if pace.bytes_at_checkpoint.is_none() {
        pace.bytes_at_checkpoint = Some(out.acked.bytes);
    }
    for rec in seg.records() {
        let rec = rec.map_err(SourceError::from)?;
        if !filter.keeps(&rec) {
            continue;
        }
        if cx.shutdown.is_requested() {
            return Err(cx.stop_for_shutdown(out).await);
        }
        pace.throttle.wait().await;
        wait_for_lease(cx.state, cx.write_window, out).await?;
        match cx.remap.as_mut() {
            None => out.send(&rec).await?,
            Some(remap) => {
                let rewritten = remap.rewrite(&rec).await?;
                out.send(&rewritten.apply(&rec)).await?;
            }
        }
        checkpoint_if_due(cx, out, pace).await?;
    }
    Ok(())
}

/// Reports what was acknowledged since the last checkpoint when the interval has passed (or
/// many offset runs gathered); a refused report stops the producer at once.
async fn checkpoint_if_due(
    cx: &mut TaskContext<'_>,
    out: &mut PartitionProducer,
    pace: &mut Pace,
) -> Result<(), TaskError> {
    if !pace.checkpoint_due(out) {
        return Ok(());
    }
    out.collect_ready()?;
    pace.checkpointed(out.acked.bytes);
    // One produce batch = what was acknowledged since the last checkpoint.
    let batch = tracing::info_span!(
        "produce_batch",
        records_done = out.acked.records,
        source_next = out.acked.source_next,
        target_next = out.acked.target_next,
        runs = out.acked.runs.len(),
    );
    if let Err(e) = cx.checkpoint(&mut out.acked).instrument(batch).await {
        out.abandon().await;
        return Err(e);
    }
    Ok(())
}

/// Blocks the produce loop until a write may start inside the lease; stops the task (and
/// drops its queue) once fenced or past the deadline.
async fn wait_for_lease(
    state: &LeaseState,
    window: Duration,
    out: &mut PartitionProducer,
) -> Result<(), TaskError> {
    loop {
        if state.is_fenced() {
            out.abandon().await;
            return Err(TaskError::Fenced);
        }
        if state.is_stopping() {
            return Err(TaskError::StopRequested);
        }
        if state.may_write(window) {
            return Ok(());
        }
        if state.expired() {
            out.abandon().await;
            return Err(TaskError::LeaseLost);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keeps a task at or below a record rate, measured from the task's start.
struct Throttle {
    per_sec: u32,
    started: Instant,
    sent: u64,
}

impl Throttle {
    fn new(per_sec: u32) -> Self {
        Self {
            per_sec,
            started: Instant::now(),
            sent: 0,
        }
    }

    async fn wait(&mut self) {
        if self.per_sec == 0 {
            return;
        }
        self.sent += 1;
        let due = Duration::from_secs_f64(self.sent as f64 / f64::from(self.per_sec));
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

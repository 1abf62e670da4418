//! The lease keeper: renews a task lease by heartbeat and tells the produce loop, by the
//! worker's own monotonic clock, whether it may still write.
//!
//! Lease-bounded writes are half of the exactly-once argument (see `task.rs`): a record is
//! only handed to the producer while `now + message_timeout < deadline`, where the deadline
//! is computed from when the renewing request was *sent*, so this worker's writes all end
//! before the coordinator can consider the lease expired and re-grant it (after TTL + grace).

use crate::connect::WorkersClient;
use crate::shutdown::{Shutdown, ShutdownTrigger};
use kafka_backup_proto::{LeaseRef, PLAN_CANCELLED_METADATA};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tonic::Code;

/// Shared lease state between the heartbeat task and the produce loop.
pub struct LeaseState {
    base: Instant,
    deadline_ns: AtomicU64,
    fenced: AtomicBool,
    /// The plan was cancelled: the task stops as on shutdown (nothing new, what is in flight
    /// awaited, a last checkpoint) and is handed back, its lease being still its own.
    cancelled: AtomicBool,
    /// Asks this task to stop that way: on the plan's cancel or the worker's shutdown.
    stop: ShutdownTrigger,
    /// Whether `stop` was triggered, read for every record (cheaper than the channel).
    stopping: AtomicBool,
}

impl LeaseState {
    /// `granted_at` is when the AcquireLease request was sent.
    pub fn new(granted_at: Instant, ttl: Duration) -> Arc<Self> {
        let (stop, _) = Shutdown::channel();
        Arc::new(Self {
            base: granted_at,
            deadline_ns: AtomicU64::new(ttl.as_nanos() as u64),
            fenced: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            stop,
            stopping: AtomicBool::new(false),
        })
    }

    /// The signal that stops this task and hands it back (see [`LeaseState::stop_task`]).
    pub fn task_stop(&self) -> Shutdown {
        self.stop.subscribe()
    }

    /// Stops the task the way a shutdown does, so it is handed back.
    pub fn stop_task(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.request();
    }

    /// The coordinator said the plan was cancelled.
    pub fn plan_cancelled(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.stop_task();
    }

    /// Whether the task stopped for the plan's cancel (rather than the worker's shutdown).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Whether the task was asked to stop and be handed back (see [`LeaseState::stop_task`]).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn extend(&self, sent_at: Instant, ttl: Duration) {
        let d = (sent_at.saturating_duration_since(self.base) + ttl).as_nanos() as u64;
        self.deadline_ns.fetch_max(d, Ordering::SeqCst);
    }

    pub fn deadline(&self) -> Instant {
        self.base + Duration::from_nanos(self.deadline_ns.load(Ordering::SeqCst))
    }

    /// The coordinator rejected this lease (superseded epoch, expired): stop writing now.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// Whether a write that may take up to `within` would still end inside the lease.
    pub fn may_write(&self, within: Duration) -> bool {
        !self.is_fenced() && Instant::now() + within < self.deadline()
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline()
    }
}

/// A helper of one task (its heartbeat loop, its shutdown forwarder). It stops when dropped,
/// so it ends with the task whichever way the task ends (completed, failed, fenced, handed
/// back, or its future dropped).
pub struct LeaseHelper(JoinHandle<()>);

impl Drop for LeaseHelper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Stops the task (to hand it back) when the worker is asked to shut down.
pub fn stop_on_shutdown(state: Arc<LeaseState>, shutdown: Shutdown) -> LeaseHelper {
    LeaseHelper(tokio::spawn(async move {
        shutdown.requested().await;
        state.stop_task();
    }))
}

/// Spawns the heartbeat loop; it ends when fenced or when the returned guard is dropped.
pub fn spawn_heartbeats(
    mut client: WorkersClient,
    lease: LeaseRef,
    state: Arc<LeaseState>,
    interval: Duration,
) -> LeaseHelper {
    LeaseHelper(tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let sent = Instant::now();
            match client.heartbeat(lease.clone()).await {
                Ok(resp) => state.extend(sent, Duration::from_millis(resp.into_inner().ttl_ms)),
                Err(s) if s.metadata().contains_key(PLAN_CANCELLED_METADATA) => {
                    tracing::info!(
                        task = lease.task_id,
                        epoch = lease.epoch,
                        "plan cancelled; stopping the task to hand it back"
                    );
                    state.plan_cancelled();
                    return;
                }
                Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                    tracing::warn!(task = lease.task_id, epoch = lease.epoch, reason = %s.message(), "lease rejected; stopping task");
                    state.fence();
                    return;
                }
                // Coordinator away: the deadline is not extended and the produce loop stops
                // by itself when it passes.
                Err(s) => {
                    tracing::warn!(task = lease.task_id, error = %s.message(), "heartbeat failed; will retry")
                }
            }
        }
    }))
}

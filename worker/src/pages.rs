//! A task's segment list as a worker reads it: the page that came with the lease, then the
//! next pages asked of the coordinator (GetTaskSegments) as the restore moves along. A task
//! of a million segments never exists whole in a message or in this worker's memory; at most
//! one page of refs is buffered per reader.
//!
//! Asking is fenced like a heartbeat: a stale epoch stops the reader at once. While the
//! coordinator is unreachable the reader retries until this worker's lease deadline passes,
//! which is also when the produce loop must stop writing anyway.

use crate::connect::WorkersClient;
use crate::lease::LeaseState;
use kafka_backup_proto::{LeaseRef, SegmentRef, TaskLease, TaskSegmentsRequest};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

#[derive(Debug, Clone, thiserror::Error)]
pub enum PageError {
    #[error("the coordinator no longer recognises this lease while paging its segments: {0}")]
    Fenced(String),
    #[error("cannot read the task's segment list from the coordinator: {0}")]
    Unavailable(String),
}

/// A reader over one task's segment list.
#[derive(Clone)]
pub struct SegmentPages {
    /// None: the list is what is buffered (no coordinator to ask; benchmarks and tests).
    remote: Option<(WorkersClient, LeaseRef, Arc<LeaseState>)>,
    buffered: VecDeque<SegmentRef>,
    next_index: u64,
    /// Where this reader stops: the end of the list, or of one merge source's range of it.
    end: u64,
}

impl SegmentPages {
    /// Starts at the lease's first page.
    pub fn new(
        client: WorkersClient,
        lease_ref: LeaseRef,
        lease: &TaskLease,
        state: Arc<LeaseState>,
    ) -> Self {
        Self {
            remote: Some((client, lease_ref, state)),
            next_index: lease.segment_index + lease.segments.len() as u64,
            buffered: lease.segments.iter().cloned().collect(),
            end: lease.segment_count,
        }
    }

    /// A reader over entries `start..start + count` of the leased task's list (one merge
    /// source's range), asked of the coordinator page by page.
    pub fn range(
        client: WorkersClient,
        lease_ref: LeaseRef,
        state: Arc<LeaseState>,
        start: u64,
        count: u64,
    ) -> Self {
        Self {
            remote: Some((client, lease_ref, state)),
            next_index: start,
            buffered: VecDeque::new(),
            end: start.saturating_add(count),
        }
    }

    /// A list that is all here: nothing is asked of a coordinator.
    pub fn fixed(segments: Vec<SegmentRef>) -> Self {
        Self {
            remote: None,
            next_index: segments.len() as u64,
            end: segments.len() as u64,
            buffered: segments.into(),
        }
    }

    /// The next segment ref, or `None` at the end of the list.
    pub async fn next(&mut self) -> Result<Option<SegmentRef>, PageError> {
        if self.buffered.is_empty() && self.next_index < self.end {
            self.fetch().await?;
        }
        Ok(self.buffered.pop_front())
    }

    async fn fetch(&mut self) -> Result<(), PageError> {
        let Some((client, lease, state)) = self.remote.as_mut() else {
            return Ok(());
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let req = TaskSegmentsRequest {
                lease: Some(lease.clone()),
                from_index: self.next_index,
                limit: u32::try_from(self.end - self.next_index).unwrap_or(u32::MAX),
            };
            match client.get_task_segments(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if r.segments.is_empty() || r.next_index <= self.next_index {
                        return Err(PageError::Unavailable(format!(
                            "the coordinator returned no segments from index {} of {}",
                            self.next_index, self.end
                        )));
                    }
                    let wanted = (self.end - self.next_index) as usize;
                    self.next_index = r.next_index.min(self.end);
                    self.end = self.end.min(r.segment_count);
                    self.buffered.extend(r.segments.into_iter().take(wanted));
                    return Ok(());
                }
                Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                    state.fence();
                    return Err(PageError::Fenced(s.message().to_string()));
                }
                Err(s) => {
                    if state.is_fenced() || state.expired() {
                        return Err(PageError::Unavailable(s.message().to_string()));
                    }
                    tracing::warn!(error = %s.message(), retry_in = ?backoff, "segment page request failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

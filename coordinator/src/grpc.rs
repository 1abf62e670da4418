//! Glue both gRPC services share: how ledger, storage and target errors become gRPC statuses,
//! the caller's trace context, and running ledger changes off the async threads and answering
//! only once they are durable.

use crate::ledger::{Committed, Ledger, LedgerError};
use crate::target::TargetError;
use kafka_backup_common::storage::StorageError;
use std::sync::Arc;
use tonic::{Request, Status};

/// The caller's W3C traceparent from the request metadata ("" when absent).
pub fn remote_parent<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

pub fn ledger_status(e: LedgerError) -> Status {
    match e {
        LedgerError::Fenced { .. } => Status::failed_precondition(e.to_string()),
        LedgerError::UnknownPlan(_) | LedgerError::UnknownTask { .. } => {
            Status::not_found(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

pub fn storage_status(e: StorageError) -> Status {
    match e {
        StorageError::BackupNotFound { .. } | StorageError::SegmentNotFound { .. } => {
            Status::not_found(e.to_string())
        }
        StorageError::BadUrl { .. } => Status::invalid_argument(e.to_string()),
        StorageError::Io { .. } => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

pub fn target_status(e: TargetError) -> Status {
    match e {
        TargetError::Unreachable { .. } => Status::unavailable(e.to_string()),
        other => Status::failed_precondition(other.to_string()),
    }
}

/// Runs blocking work (sled, planning) on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("coordinator worker thread failed: {e}")))
}

/// Applies a ledger change off the async threads and waits until it is on disk: the caller
/// may answer only after that. Many concurrent changes share one flush (group commit).
pub async fn commit<T: Send + 'static>(
    ledger: &Arc<Ledger>,
    change: impl FnOnce(&Ledger) -> Result<Committed<T>, LedgerError> + Send + 'static,
) -> Result<T, Status> {
    let l = ledger.clone();
    let committed = blocking(move || change(&l)).await?.map_err(ledger_status)?;
    ledger.durable(committed.seq).await.map_err(ledger_status)?;
    Ok(committed.value)
}

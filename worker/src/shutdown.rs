//! The worker's shutdown request, shared by every lease loop and task.
//!
//! On SIGTERM (Kubernetes stops a pod on every rollout) a worker must not simply die: its
//! tasks would wait out the lease TTL before anyone else could take them. Instead each lease
//! loop stops taking leases, and each task produces nothing new, waits for what is in flight,
//! checkpoints and hands the task back so the coordinator re-grants it at once.

use tokio::sync::watch;

/// Asks the worker to shut down; dropping it does not.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Whether the worker has been asked to shut down.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl ShutdownTrigger {
    pub fn request(&self) {
        self.0.send_replace(true);
    }

    /// The signal this trigger drives.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// A trigger and the signal it drives.
    pub fn channel() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    /// A worker that runs until its work is done (the embedded mode's).
    pub fn never() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        // The sender is gone, so the value stays false and `requested` never resolves.
        drop(tx);
        Shutdown(rx)
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested; never, if it cannot be.
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_reaches_every_clone_and_never_means_never() {
        let (trigger, shutdown) = Shutdown::channel();
        let other = shutdown.clone();
        assert!(!other.is_requested());
        let waiter = tokio::spawn(async move { other.requested().await });
        trigger.request();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert!(shutdown.is_requested());
        let never = Shutdown::never();
        assert!(!never.is_requested());
        let waited = tokio::time::timeout(Duration::from_millis(50), never.requested()).await;
        assert!(waited.is_err(), "never resolves");
    }
}

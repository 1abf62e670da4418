//! Group commit: a change is acknowledged only after a flush that includes it, but one flush
//! serves every change made before it started. With hundreds of workers reporting at once,
//! each report waiting for its own fsync would queue them behind each other; here a report
//! costs at most the flush in progress plus the next one, however many arrive together.
//!
//! Every ledger change takes a sequence number after it is applied in memory. A dedicated
//! thread flushes whenever changes are outstanding and then publishes the highest sequence the
//! flush covered; waiters (async or blocking) wait for that number to reach theirs. A failed
//! flush is sticky: nothing after it can be known to be durable, so every waiter from then on
//! gets the error and the coordinator must be restarted to reload the ledger from disk.
//!
//! Applying and flushing take turns through `applying`. sled 0.34 serialises them anyway: a
//! multi-tree transaction (every checkpoint is one) takes a process-wide write lock, and
//! sled's `flush` holds the read side of it until its log write is done. Left to that lock,
//! the flusher began its next flush the moment one change was outstanding, and the ledger
//! thread's next transaction waited out the whole flush (checkpoint changes of 6-30 ms were
//! logged next to flushes as long). Now whoever applies changes holds `applying` for a whole
//! batch (the ledger thread: everything queued), and the flusher takes it only for sled's
//! log write, numbers its target with the batch applied, and syncs the file outside it while
//! the next batch is applied. At 1,000 simulated workers that took the p99 from 35 to 23 ms
//! and a third of the flushes away (README, Scale).

use super::durable_flush::DurableFlush;
use kafka_backup_common::metrics::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Durable so far: the highest sequence flushed, and why nothing later will be (a failed
/// flush, or the ledger was closed).
#[derive(Debug, Clone, PartialEq, Default)]
struct Durable {
    upto: u64,
    ended: Option<String>,
}

impl Durable {
    /// `Some` once `seq` is known durable (`Ok`) or known never to be (`Err`).
    fn outcome(&self, seq: Seq) -> Option<Result<(), String>> {
        if self.upto >= seq.0 {
            Some(Ok(()))
        } else {
            self.ended.clone().map(Err)
        }
    }
}

struct State {
    /// Highest sequence handed out.
    written: u64,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    durable: tokio::sync::watch::Sender<Durable>,
    /// For blocking waiters (tests, the dry run): notified after every flush.
    flushed: Condvar,
    flushed_lock: Mutex<()>,
    /// How long each flush took (read by the metrics endpoint).
    flush_seconds: Histogram,
    /// Changes per flush, summed (with the flush count, the average group size).
    grouped: AtomicU64,
    /// Held while a batch of changes is applied, and by the flusher while sled writes its log.
    applying: Mutex<()>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

/// A change's place in the flush order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seq(pub u64);

impl GroupCommit {
    /// Starts the flusher thread, which flushes with `flusher`.
    pub fn start(mut flusher: DurableFlush) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                written: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            durable: tokio::sync::watch::Sender::new(Durable::default()),
            flushed: Condvar::new(),
            flushed_lock: Mutex::new(()),
            flush_seconds: Histogram::default(),
            grouped: AtomicU64::new(0),
            applying: Mutex::new(()),
        });
        let worker = shared.clone();
        let flusher = std::thread::Builder::new()
            .name("ledger-flush".into())
            .spawn(move || flush_loop(&worker, &mut flusher))
            .ok();
        Self {
            shared,
            flusher: Mutex::new(flusher),
        }
    }

    /// Registers a change that has been applied; returns the sequence to wait for.
    pub fn changed(&self) -> Seq {
        let mut st = lock(&self.shared.state);
        st.written += 1;
        let seq = st.written;
        drop(st);
        self.shared.wake.notify_one();
        Seq(seq)
    }

    /// Held while applying a batch of changes: sled's log write waits for the batch, and the
    /// batch for the log write (see the module doc).
    pub fn applying(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.shared.applying)
    }

    /// Waits (async) until a flush covers `seq`.
    pub async fn durable(&self, seq: Seq) -> Result<(), String> {
        let mut rx = self.shared.durable.subscribe();
        let res = rx
            .wait_for(|d| d.outcome(seq).is_some())
            .await
            .map(|d| d.outcome(seq));
        match res {
            Ok(done) => done.unwrap_or(Ok(())),
            Err(_) => Err("the ledger flusher stopped".into()),
        }
    }

    /// Waits (blocking) until a flush covers `seq`.
    pub fn durable_blocking(&self, seq: Seq) -> Result<(), String> {
        let mut guard = lock(&self.shared.flushed_lock);
        loop {
            if let Some(done) = self.shared.durable.borrow().outcome(seq) {
                return done;
            }
            if self.flusher_gone() {
                return Err("the ledger flusher stopped".into());
            }
            guard = self
                .shared
                .flushed
                .wait_timeout(guard, std::time::Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn flusher_gone(&self) -> bool {
        lock(&self.flusher).as_ref().is_none_or(|h| h.is_finished())
    }

    /// Durations of the flushes so far.
    pub fn flush_seconds(&self) -> &Histogram {
        &self.shared.flush_seconds
    }

    /// Changes covered by the flushes so far.
    pub fn changes_flushed(&self) -> u64 {
        self.shared.grouped.load(Ordering::Relaxed)
    }

    /// Flushes what is outstanding and stops the flusher thread.
    pub fn stop(&self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_one();
        if let Some(h) = lock(&self.flusher).take() {
            let _ = h.join();
        }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn flush_loop(shared: &Shared, flusher: &mut DurableFlush) {
    let mut flushed = 0u64;
    let publish = |d: &dyn Fn(&mut Durable)| {
        shared.durable.send_modify(|x| d(x));
        let _g = lock(&shared.flushed_lock);
        shared.flushed.notify_all();
    };
    loop {
        {
            let mut st = lock(&shared.state);
            while st.written == flushed && !st.stop {
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            if st.written == flushed && st.stop {
                publish(&|d| d.ended = Some("the restore ledger was closed".into()));
                return;
            }
        }
        // Numbered after the batch being applied is done: everything numbered up to
        // `target` was applied before it was numbered, so this write includes it.
        let (target, started, written) = {
            let _applying = lock(&shared.applying);
            let target = lock(&shared.state).written;
            (target, std::time::Instant::now(), flusher.write_log())
        };
        let res = written.and_then(|_| flusher.sync());
        shared
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        shared
            .grouped
            .fetch_add(target - flushed, Ordering::Relaxed);
        match res {
            Ok(_) => publish(&|d| d.upto = target),
            Err(e) => {
                let why = format!(
                    "the restore ledger could not be flushed to disk ({e}); restart the coordinator"
                );
                publish(&|d| d.ended = Some(why.clone()));
                return;
            }
        }
        flushed = target;
    }
}

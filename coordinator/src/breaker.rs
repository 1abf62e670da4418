//! Per-plan circuit breaker for outages of what every task depends on: the target cluster
//! and the object store. Without it, each failed task is re-granted after its own backoff, so
//! N partitions keep N workers reconnecting to a cluster that is down, and every failure uses
//! up one of the task's attempts until the plan fails for an outage nobody could fix faster.
//!
//! After `THRESHOLD` consecutive outage failures with no progress in between, the breaker
//! opens: no task of the plan is granted until the open period ends. Then one probe lease is
//! granted (half-open); progress from anyone closes the breaker, another outage failure
//! reopens it with twice the period (capped). Outage failures do not count as attempts (see
//! `Ledger::fail`). The state lives in memory: after a coordinator restart the breaker starts
//! closed and reopens on the next failures.

use std::collections::HashMap;
use std::sync::Mutex;

const THRESHOLD: u32 = 3;
const FIRST_OPEN_MS: i64 = 1_000;
const MAX_OPEN_MS: i64 = 30_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PlanBreaker {
    consecutive: u32,
    /// 0 when closed.
    open_until_ms: i64,
    open_period_ms: i64,
    /// Half-open: a probe lease is out until this time (its TTL + grace).
    probe_until_ms: i64,
    last_error: String,
    times_opened: u64,
}

/// What the status shows about a plan's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CircuitView {
    Closed,
    /// Grants paused until `until_ms` after repeated outage failures.
    Open {
        until_ms: i64,
        last_error: String,
    },
    /// One probe lease is out; the rest wait for its outcome.
    Probing {
        last_error: String,
    },
}

#[derive(Debug, Default)]
pub struct Breakers {
    plans: Mutex<HashMap<String, PlanBreaker>>,
}

impl Breakers {
    fn with<T>(&self, plan: &str, f: impl FnOnce(&mut PlanBreaker) -> T) -> T {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        f(plans.entry(plan.to_string()).or_default())
    }

    /// Whether a lease of `plan` may be granted now; `Err(ms)` says when to ask again.
    pub fn admit(&self, plan: &str, now_ms: i64) -> Result<(), i64> {
        self.with(plan, |b| {
            if b.open_until_ms == 0 {
                return Ok(());
            }
            if now_ms < b.open_until_ms {
                return Err(b.open_until_ms - now_ms);
            }
            if now_ms < b.probe_until_ms {
                return Err((b.probe_until_ms - now_ms).min(1_000));
            }
            Ok(())
        })
    }

    /// A lease of `plan` was granted. When the breaker is half-open that lease is the probe:
    /// no other is granted for `probe_ms` (its TTL + grace) unless it reports first.
    pub fn granted(&self, plan: &str, now_ms: i64, probe_ms: i64) {
        self.with(plan, |b| {
            if b.open_until_ms != 0 && now_ms >= b.open_until_ms {
                b.probe_until_ms = now_ms + probe_ms;
            }
        })
    }

    /// A task could not reach the target cluster or the object store.
    pub fn outage(&self, plan: &str, now_ms: i64, error: &str) {
        self.with(plan, |b| {
            b.consecutive += 1;
            b.last_error = error.to_string();
            let half_open = b.open_until_ms != 0;
            if half_open || b.consecutive >= THRESHOLD {
                b.open_period_ms = if half_open {
                    (b.open_period_ms * 2).min(MAX_OPEN_MS)
                } else {
                    FIRST_OPEN_MS
                };
                b.open_until_ms = now_ms + b.open_period_ms;
                b.probe_until_ms = 0;
                b.times_opened += 1;
                crate::metrics::METRICS.circuit_opened.inc();
                tracing::warn!(
                    plan,
                    open_ms = b.open_period_ms,
                    error,
                    "circuit open: pausing grants while the target or object store is unreachable"
                );
            }
        })
    }

    /// Records were acknowledged: whatever was down is back.
    pub fn progress(&self, plan: &str) {
        self.with(plan, |b| {
            if b.open_until_ms != 0 {
                tracing::info!(plan, "circuit closed: progress again");
            }
            *b = PlanBreaker {
                times_opened: b.times_opened,
                ..PlanBreaker::default()
            };
        })
    }

    pub fn view(&self, plan: &str, now_ms: i64) -> CircuitView {
        self.with(plan, |b| {
            if b.open_until_ms == 0 {
                CircuitView::Closed
            } else if now_ms < b.open_until_ms {
                CircuitView::Open {
                    until_ms: b.open_until_ms,
                    last_error: b.last_error.clone(),
                }
            } else {
                CircuitView::Probing {
                    last_error: b.last_error.clone(),
                }
            }
        })
    }

    /// How many times the plan's breaker opened since this coordinator started.
    pub fn times_opened(&self, plan: &str) -> u64 {
        self.with(plan, |b| b.times_opened)
    }

    /// Plans whose breaker is not closed (for metrics).
    pub fn open_count(&self) -> usize {
        let plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.values().filter(|b| b.open_until_ms != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_once_and_backs_off() {
        let b = Breakers::default();
        let p = "plan";
        assert_eq!(b.admit(p, 0), Ok(()));
        b.outage(p, 0, "down");
        b.outage(p, 0, "down");
        assert_eq!(b.view(p, 0), CircuitView::Closed, "below the threshold");
        b.outage(p, 10, "down");
        assert_eq!(b.admit(p, 10), Err(1_000));
        assert_eq!(b.admit(p, 1_010), Ok(()), "half-open");
        assert_eq!(
            b.admit(p, 1_015),
            Ok(()),
            "no probe is out until one is granted"
        );
        b.granted(p, 1_010, 500);
        assert!(b.admit(p, 1_020).is_err(), "only one probe at a time");
        // The probe fails: open again for twice as long.
        b.outage(p, 1_100, "still down");
        assert_eq!(b.admit(p, 1_100), Err(2_000));
        // A probe that never reports (its worker died) is replaced after its deadline.
        assert_eq!(b.admit(p, 3_100), Ok(()));
        b.granted(p, 3_100, 500);
        assert!(b.admit(p, 3_500).is_err());
        assert_eq!(b.admit(p, 3_600), Ok(()));
        b.progress(p);
        assert_eq!(b.view(p, 3_700), CircuitView::Closed);
        assert_eq!(b.admit(p, 3_700), Ok(()));
        assert_eq!(b.times_opened(p), 2);
    }

    #[test]
    fn open_period_is_capped() {
        let b = Breakers::default();
        let mut now = 0;
        for _ in 0..3 {
            b.outage("p", now, "down");
        }
        for _ in 0..10 {
            while let Err(wait) = b.admit("p", now) {
                now += wait;
            }
            b.granted("p", now, 1);
            b.outage("p", now, "down");
        }
        assert_eq!(b.admit("p", now), Err(MAX_OPEN_MS));
    }
}

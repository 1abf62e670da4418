//! The ledger as a state machine, driven with an explicit clock: every rule of grant, renew,
//! expiry, fencing, checkpoint, failure, completion, cancel, the no-progress limit and
//! reopening from disk.

use super::codec::to_json;
use super::*;
use kafka_backup_common::manifest_index::SegmentSpan;

const TTL: u64 = 1_000;
const GRACE: u64 = 200;
const POLICY: GrantPolicy = GrantPolicy {
    ttl_ms: TTL,
    grace_ms: GRACE,
    max_stalled_grants: 3,
};

fn span(start: i64, len: i64) -> SegmentSpan {
    SegmentSpan {
        key: format!("b/topics/t/partition=0/segment-{start:020}.bin.zst").into(),
        start_offset: start,
        end_offset: start + len - 1,
        record_count: len as u64,
        compressed_size: 100,
        bounds: None,
        frames: Box::default(),
    }
}

pub(super) fn new_task(id: u32, segments: usize) -> NewTask {
    NewTask {
        meta: TaskMeta {
            task_id: id,
            source_topic: "t".into(),
            source_partition: id as i32,
            target_topic: "t2".into(),
            target_partition: id as i32,
            segment_count: segments as u64,
            segments_base: 0,
            first_offset: 0,
            records_total: segments as u64 * 10,
            bytes_total: segments as u64 * 100,
            merge_sources: vec![],
        },
        segments: (0..segments).map(|i| span(i as i64 * 10, 10)).collect(),
    }
}

pub(super) fn plan_record(id: &str, tasks: u32) -> PlanRecord {
    PlanRecord {
        plan_id: id.into(),
        backup_id: "b".into(),
        fingerprint: format!("fp-{id}"),
        created_at_ms: 1,
        cancelled: false,
        task_count: tasks,
        spec: vec![],
        trace_parent: String::new(),
    }
}

/// A ledger in a temp dir with one plan "p" of `tasks` tasks of `segments` segments each.
fn ledger_with(tasks: u32, segments: usize) -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(dir.path()).expect("open");
    let c = l
        .create_plan(
            plan_record("p", tasks),
            (0..tasks).map(|i| new_task(i, segments)).collect(),
        )
        .expect("create");
    l.durable_blocking(c.seq).expect("durable");
    (dir, l)
}

/// Applies a change and waits until it is durable.
pub(super) fn settle<T>(l: &Ledger, c: Result<Committed<T>, LedgerError>) -> T {
    let c = c.expect("the change is accepted");
    l.durable_blocking(c.seq).expect("durable");
    c.value
}

fn grant(l: &Ledger, worker: &str, now: i64) -> GrantOutcome {
    let c = l.grant(&["p".into()], worker, now, POLICY).expect("grant");
    l.durable_blocking(c.seq).expect("durable");
    c.value
}

pub(super) fn granted(l: &Ledger, worker: &str, now: i64) -> (u32, u64) {
    let g = grant(l, worker, now).granted.expect("a task is granted");
    (g.task.meta.task_id, g.task.progress.epoch)
}

pub(super) fn holder<'a>(worker: &'a str, task: u32, epoch: u64) -> Holder<'a> {
    Holder {
        plan_id: "p",
        task_id: task,
        worker_id: worker,
        epoch,
    }
}

pub(super) fn cp(source_next: i64, records: u64) -> Checkpoint {
    Checkpoint {
        source_next_offset: source_next,
        target_next_offset: source_next + 1000,
        records_done: records,
        bytes_done: records * 10,
        source_next_offsets: vec![],
    }
}

fn run(source: i64, target: i64, length: u64) -> OffsetRunRecord {
    OffsetRunRecord {
        source_start: source,
        target_start: target,
        length,
        source_index: 0,
    }
}

fn report(
    l: &Ledger,
    h: Holder<'_>,
    c: &Checkpoint,
    runs: &[OffsetRunRecord],
) -> Result<CheckpointOutcome, LedgerError> {
    l.checkpoint(h, c, runs, &[], Completion::InProgress)
        .map(|c| c.value)
}

fn is_fenced<T: std::fmt::Debug>(r: Result<T, LedgerError>) -> String {
    match r {
        Err(LedgerError::Fenced { reason, .. }) => reason,
        other => panic!("expected fenced, got {other:?}"),
    }
}

#[test]
fn grant_checkpoint_complete_in_task_order() {
    let (_d, l) = ledger_with(2, 3);
    assert_eq!(l.plan_state("p").unwrap(), PlanState::Pending);
    let (t0, e0) = granted(&l, "w1", 100);
    let (t1, e1) = granted(&l, "w2", 100);
    assert_eq!((t0, e0, t1, e1), (0, 1, 1, 1));
    assert!(
        grant(&l, "w3", 100).granted.is_none(),
        "both tasks are leased"
    );
    assert_eq!(l.plan_state("p").unwrap(), PlanState::Running);

    let out = report(&l, holder("w1", 0, 1), &cp(10, 10), &[run(0, 1000, 10)]).unwrap();
    assert_eq!(out.records_added, 10);
    assert!(out.progressed);
    let done = l
        .checkpoint(
            holder("w1", 0, 1),
            &cp(30, 30),
            &[run(10, 1010, 20)],
            &[],
            Completion::Done,
        )
        .unwrap()
        .value;
    assert!(done.completed);
    assert_eq!(done.records_added, 20);
    assert_eq!(
        l.offset_runs("p", 0).unwrap(),
        vec![run(0, 1000, 30)],
        "contiguous runs merge"
    );
    settle(
        &l,
        l.checkpoint(holder("w2", 1, 1), &cp(30, 30), &[], &[], Completion::Done),
    );
    assert_eq!(l.plan_state("p").unwrap(), PlanState::Completed);
    assert!(
        grant(&l, "w3", 10_000).granted.is_none(),
        "completed tasks are never granted"
    );
}

#[test]
fn an_expired_lease_is_re_granted_only_after_grace_and_the_old_holder_is_fenced() {
    let (_d, l) = ledger_with(1, 3);
    let (t, e) = granted(&l, "old", 0);
    report(&l, holder("old", t, e), &cp(10, 10), &[]).unwrap();
    // Renewed at 500: expires at 1500, re-grantable from 1700.
    settle(&l, l.renew(holder("old", t, e), 500, TTL));
    assert!(
        grant(&l, "new", 1_600).granted.is_none(),
        "inside TTL + grace"
    );
    let g = grant(&l, "new", 1_700).granted.expect("re-granted");
    assert!(g.expired_regrant);
    assert_eq!(g.task.progress.epoch, 2);
    assert_eq!(
        g.task.progress.checkpoint,
        Some(cp(10, 10)),
        "resumes from the checkpoint"
    );
    let why = is_fenced(report(&l, holder("old", t, e), &cp(20, 20), &[]));
    assert!(why.contains("superseded by epoch 2 of new"), "{why}");
    is_fenced(l.renew(holder("old", t, e), 1_700, TTL));
    is_fenced(l.fail(holder("old", t, e), "x", FailureKind::Fatal, 1_700, 8));
    report(&l, holder("new", t, 2), &cp(20, 20), &[]).unwrap();
}

#[test]
fn renewing_after_expiry_and_checkpoints_that_go_backwards_are_refused() {
    let (_d, l) = ledger_with(1, 3);
    let (t, e) = granted(&l, "w", 0);
    assert!(is_fenced(l.renew(holder("w", t, e), 1_001, TTL)).contains("expired"));
    report(&l, holder("w", t, e), &cp(20, 20), &[]).unwrap();
    let why = is_fenced(report(&l, holder("w", t, e), &cp(10, 10), &[]));
    assert!(why.contains("backwards"), "{why}");
    assert!(matches!(
        report(&l, holder("w", 9, 1), &cp(1, 1), &[]),
        Err(LedgerError::UnknownTask { .. })
    ));
}

#[test]
fn retryable_failures_back_off_and_run_out_outages_do_not() {
    let (_d, l) = ledger_with(1, 1);
    let mut now = 0;
    for attempt in 1..=3u64 {
        let (t, e) = granted(&l, "w", now);
        report(&l, holder("w", t, e), &cp(attempt as i64, attempt), &[]).unwrap();
        let out = l
            .fail(holder("w", t, e), "flaky", FailureKind::Retryable, now, 3)
            .unwrap()
            .value;
        match out {
            FailOutcome::Retrying { not_before_ms } if attempt < 3 => {
                assert!(
                    grant(&l, "w", not_before_ms - 1).granted.is_none(),
                    "backoff"
                );
                now = not_before_ms;
            }
            FailOutcome::Failed if attempt == 3 => {}
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(l.plan_state("p").unwrap(), PlanState::Failed);
    // Resume re-queues it with fresh attempts; outages then never use them up.
    settle(&l, l.resume("p"));
    for _ in 0..10 {
        now += 1_000;
        let (t, e) = granted(&l, "w", now);
        let out = l
            .fail(
                holder("w", t, e),
                "broker down",
                FailureKind::Outage,
                now,
                3,
            )
            .unwrap()
            .value;
        assert!(matches!(out, FailOutcome::Retrying { .. }));
    }
    assert_eq!(l.task("p", 0).unwrap().progress.attempts, 0);
    let (t, e) = granted(&l, "w", now + 1_000);
    settle(
        &l,
        l.fail(holder("w", t, e), "corrupt", FailureKind::Fatal, now, 3),
    );
    let task = l.task("p", 0).unwrap();
    assert_eq!(task.progress.state, TaskState::Failed);
    assert_eq!(task.progress.error, "corrupt");
}

#[test]
fn a_task_handed_back_is_granted_again_at_once_without_using_an_attempt() {
    let (_d, l) = ledger_with(1, 1);
    // More hand-backs than attempts or the no-progress limit allow: none of them count.
    for round in 0..10i64 {
        let now = round * 10;
        let (t, e) = granted(&l, &format!("w{round}"), now);
        let out = l
            .fail(
                holder(&format!("w{round}"), t, e),
                "shutting down",
                FailureKind::HandedBack,
                now,
                3,
            )
            .unwrap()
            .value;
        assert_eq!(out, FailOutcome::Retrying { not_before_ms: now });
        let task = l.task("p", 0).unwrap();
        assert_eq!(task.progress.state, TaskState::Pending);
        assert_eq!(task.progress.attempts, 0);
        assert_eq!(task.progress.error, "");
    }
    // No lease to wait out: the next worker gets it in the same millisecond.
    assert!(grant(&l, "next", 90).granted.is_some());
}

#[test]
fn a_task_granted_again_and_again_without_progress_fails_visibly() {
    let (_d, l) = ledger_with(2, 1);
    // Task 1 makes progress each time; task 0's holders vanish.
    let mut now = 0;
    for round in 0..3 {
        let (t0, _) = granted(&l, "ghost", now);
        let (t1, e1) = granted(&l, "busy", now);
        assert_eq!((t0, t1), (0, 1), "round {round}");
        report(
            &l,
            holder("busy", t1, e1),
            &cp(round + 1, round as u64 + 1),
            &[],
        )
        .unwrap();
        now += (TTL + GRACE) as i64;
    }
    // Third expiry of task 0: the next grant fails it instead; task 1 is re-granted.
    let out = grant(&l, "w", now);
    assert_eq!(out.stalled.len(), 1);
    let stalled = &out.stalled[0];
    assert_eq!(stalled.task_id, 0);
    assert!(
        stalled.error.contains("3 grants") && stalled.error.contains("ghost"),
        "{}",
        stalled.error
    );
    assert_eq!(
        out.granted.map(|g| g.task.meta.task_id),
        Some(1),
        "progress reset its count"
    );
    let t0 = l.task("p", 0).unwrap();
    assert_eq!(t0.progress.state, TaskState::Failed);
    assert_eq!(t0.progress.error, stalled.error);
}

#[test]
fn cancel_stops_grants_and_renewals_resume_undoes_it() {
    let (_d, l) = ledger_with(2, 1);
    let (t, e) = granted(&l, "w", 0);
    settle(&l, l.cancel("p"));
    assert_eq!(l.plan_state("p").unwrap(), PlanState::Cancelled);
    assert!(grant(&l, "w", 0).granted.is_none());
    // The holder is told by its renewal; its checkpoints are still taken, and say so.
    assert!(matches!(
        l.renew(holder("w", t, e), 0, 1000),
        Err(LedgerError::PlanCancelled { .. })
    ));
    assert!(
        report(&l, holder("w", t, e), &cp(1, 1), &[])
            .unwrap()
            .plan_cancelled
    );
    settle(&l, l.resume("p"));
    assert!(
        !report(&l, holder("w", t, e), &cp(2, 2), &[])
            .unwrap()
            .plan_cancelled
    );
    assert!(grant(&l, "w2", 0).granted.is_some());
}

/// A cancelled plan's holder checkpoints what it wrote and hands the task back: the status
/// counts every record, and on resume the task is granted at once, not after the lease TTL.
#[test]
fn a_cancelled_plans_holder_hands_back_and_resume_grants_at_once() {
    let (_d, l) = ledger_with(1, 1);
    let (t, e) = granted(&l, "w", 0);
    settle(&l, l.cancel("p"));
    settle(
        &l,
        l.checkpoint(
            holder("w", t, e),
            &cp(7, 7),
            &[],
            &[],
            Completion::InProgress,
        ),
    );
    settle(
        &l,
        l.fail(holder("w", t, e), "", FailureKind::HandedBack, 10, 3),
    );
    assert!(grant(&l, "w2", 20).granted.is_none(), "still cancelled");
    settle(&l, l.resume("p"));
    let g = grant(&l, "w2", 20)
        .granted
        .expect("granted at once after resume");
    assert_eq!(
        g.task.progress.checkpoint.expect("checkpoint").records_done,
        7
    );
    assert_eq!(g.task.progress.epoch, e + 1);
}

#[test]
fn reopening_from_disk_keeps_leases_checkpoints_runs_and_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = Ledger::open(dir.path()).unwrap();
        let c = l
            .create_plan(
                plan_record("p", 3),
                (0..3).map(|i| new_task(i, 5)).collect(),
            )
            .unwrap();
        l.durable_blocking(c.seq).unwrap();
        let (t, e) = granted(&l, "w", 0);
        let c = l
            .checkpoint(
                holder("w", t, e),
                &cp(25, 25),
                &[run(0, 1000, 20), run(22, 1020, 3)],
                &["seg-x: corrupt".into()],
                Completion::InProgress,
            )
            .unwrap();
        l.durable_blocking(c.seq).unwrap();
        let (t2, e2) = granted(&l, "w", 0);
        let c = l
            .checkpoint(holder("w", t2, e2), &cp(50, 50), &[], &[], Completion::Done)
            .unwrap();
        l.durable_blocking(c.seq).unwrap();
    }
    let l = Ledger::open(dir.path()).unwrap();
    let t0 = l.task("p", 0).unwrap();
    assert_eq!(t0.progress.state, TaskState::Leased);
    assert_eq!(t0.progress.checkpoint, Some(cp(25, 25)));
    assert_eq!(t0.meta.segment_count, 5);
    assert_eq!(
        l.offset_runs("p", 0).unwrap(),
        vec![run(0, 1000, 20), run(22, 1020, 3)]
    );
    assert_eq!(
        l.skipped_segments("p", 0, 10).unwrap(),
        vec!["seg-x: corrupt".to_string()]
    );
    assert_eq!(l.task("p", 1).unwrap().progress.state, TaskState::Completed);
    // Task 2 is next; task 0 only after its lease (granted at 0) expires.
    assert_eq!(granted(&l, "w2", 10), (2, 1));
    assert!(grant(&l, "w2", 10).granted.is_none());
    let g = grant(&l, "w2", (TTL + GRACE) as i64).granted.unwrap();
    assert_eq!((g.task.meta.task_id, g.task.progress.epoch), (0, 2));
    // The last run continues after a restart too.
    settle(
        &l,
        l.checkpoint(
            holder("w2", 0, 2),
            &cp(30, 30),
            &[run(25, 1023, 5)],
            &[],
            Completion::InProgress,
        ),
    );
    assert_eq!(
        l.offset_runs("p", 0).unwrap(),
        vec![run(0, 1000, 20), run(22, 1020, 8)]
    );
}

#[test]
fn segment_lists_are_paged_and_searched_not_loaded() {
    let (_d, l) = ledger_with(2, 25_000);
    let page = l.segments_page("p", 0, 24_990, 100).unwrap();
    assert_eq!(page.len(), 10, "the page ends with the task's list");
    assert_eq!(page[0].start_offset, 249_900);
    assert_eq!(l.segments_page("p", 1, 0, 3).unwrap()[2].start_offset, 20);
    for (offset, index) in [
        (0, 0),
        (9, 0),
        (10, 1),
        (123_456, 12_345),
        (249_999, 24_999),
        (250_000, 25_000),
    ] {
        assert_eq!(
            l.segment_index_for("p", 0, offset).unwrap(),
            index,
            "{offset}"
        );
    }
}

#[test]
fn runs_around_an_offset() {
    let (_d, l) = ledger_with(1, 1);
    let (t, e) = granted(&l, "w", 0);
    report(
        &l,
        holder("w", t, e),
        &cp(30, 6),
        &[run(0, 100, 3), run(10, 103, 2), run(20, 105, 1)],
    )
    .unwrap();
    assert_eq!(
        l.runs_around("p", 0, 0, 11).unwrap(),
        (Some(run(10, 103, 2)), Some(run(20, 105, 1)))
    );
    assert_eq!(
        l.runs_around("p", 0, 0, -1).unwrap(),
        (None, Some(run(0, 100, 3)))
    );
    assert_eq!(
        l.runs_around("p", 0, 0, 99).unwrap(),
        (Some(run(20, 105, 1)), None)
    );
}

/// A ledger with one merge task of two sources (one segment each).
fn merge_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(dir.path()).expect("open");
    let mut task = new_task(0, 2);
    task.meta.merge_sources = (0..2)
        .map(|i| MergeSourceMeta {
            partition: i,
            segment_start: i as u64,
            segment_count: 1,
            first_offset: 0,
        })
        .collect();
    let c = l
        .create_plan(plan_record("p", 1), vec![task])
        .expect("create");
    l.durable_blocking(c.seq).expect("durable");
    (dir, l)
}

#[test]
fn runs_of_merge_sources_are_kept_apart() {
    let (_d, l) = merge_ledger();
    let (t, e) = granted(&l, "w", 0);
    let of = |index: u32, r: OffsetRunRecord| OffsetRunRecord {
        source_index: index,
        ..r
    };
    // Two sources interleaved in the target: 0/0 → 0, 1/0 → 1, 0/1 → 2, 0/2 → 3.
    let runs = [
        of(0, run(0, 0, 1)),
        of(1, run(0, 1, 1)),
        of(0, run(1, 2, 2)),
    ];
    let mut c = cp(4, 4);
    c.source_next_offsets = vec![3, 1];
    report(&l, holder("w", t, e), &c, &runs).unwrap();
    assert_eq!(
        l.offset_runs_page("p", 0, 0, 0, 10).unwrap(),
        vec![of(0, run(0, 0, 1)), of(0, run(1, 2, 2))],
        "runs of one source that are not contiguous in the target stay apart"
    );
    assert_eq!(
        l.offset_runs_page("p", 0, 1, 0, 10).unwrap(),
        vec![of(1, run(0, 1, 1))]
    );
    assert_eq!(
        l.runs_around("p", 0, 1, 5).unwrap(),
        (Some(of(1, run(0, 1, 1))), None),
        "the search stays inside its source"
    );
    assert_eq!(
        l.runs_around("p", 0, 0, 1).unwrap(),
        (Some(of(0, run(1, 2, 2))), None)
    );
    let stored = l.task("p", 0).unwrap().progress.checkpoint.unwrap();
    assert_eq!(stored.source_next_offsets, vec![3, 1]);
    // One source going back is refused even when the sum grows; so is a wrong count.
    let mut back = cp(9, 6);
    back.source_next_offsets = vec![8, 0];
    assert!(report(&l, holder("w", t, e), &back, &[]).is_err());
    let mut short = cp(9, 6);
    short.source_next_offsets = vec![9];
    assert!(report(&l, holder("w", t, e), &short, &[]).is_err());
}

#[test]
fn a_ledger_held_open_elsewhere_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Ledger::open(dir.path()).unwrap();
    let err = Ledger::open(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("in use by another kafka-backup process"),
        "{err}"
    );
    assert!(err.contains("--state-dir"), "{err}");
}

#[test]
fn a_plan_cut_short_while_writing_segments_is_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let lists = dir.path().join("segment-lists");
    {
        let l = Ledger::open(dir.path()).unwrap();
        l.incomplete.insert("half", &[]).unwrap();
        let mut w = l.segments.create("half").unwrap();
        w.append(vec![span(0, 1)]).unwrap();
        w.finish().unwrap();
        l.db.flush().unwrap();
        assert_eq!(std::fs::read_dir(&lists).unwrap().count(), 2);
    }
    let l = Ledger::open(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(&lists).unwrap().count(), 0);
    assert!(l.incomplete.is_empty());
    assert!(l.plans().is_empty());
}

#[test]
fn a_first_format_ledger_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let plans = db.open_tree("plans").unwrap();
        plans.insert("p", to_json(&plan_record("p", 1))).unwrap();
        let v1 = serde_json::json!({
            "task_id": 0, "source_topic": "t", "source_partition": 0, "target_topic": "t2",
            "target_partition": 0, "records_total": 20, "bytes_total": 200,
            "segments": [
                {"key": "k0", "start_offset": 0, "end_offset": 9, "record_count": 10, "compressed_size": 100},
                {"key": "k1", "start_offset": 10, "end_offset": 19, "record_count": 10, "compressed_size": 100}
            ],
            "state": "leased", "epoch": 4,
            "lease": {"worker_id": "w", "epoch": 4, "expires_at_ms": 50},
            "checkpoint": {"source_next_offset": 12, "target_next_offset": 7, "records_done": 12, "bytes_done": 120},
            "attempts": 4, "error": "", "not_before_ms": 0, "started_at_ms": 3,
            "skipped_segments": ["k9: gone"]
        });
        db.open_tree("tasks")
            .unwrap()
            .insert(codec::task_key("p", 0), serde_json::to_vec(&v1).unwrap())
            .unwrap();
        db.open_tree("offset_runs")
            .unwrap()
            .insert(codec::task_item_key("p", 0, 0), to_json(&run(0, 0, 12)))
            .unwrap();
        db.flush().unwrap();
    }
    let l = Ledger::open(dir.path()).unwrap();
    let t = l.task("p", 0).unwrap();
    assert_eq!(t.meta.segment_count, 2);
    assert_eq!(t.progress.epoch, 4);
    assert_eq!(
        t.progress.checkpoint.as_ref().map(|c| c.records_done),
        Some(12)
    );
    assert_eq!(t.progress.last_run, Some(run(0, 0, 12)));
    assert_eq!(l.segment_index_for("p", 0, 12).unwrap(), 1);
    assert_eq!(l.offset_runs("p", 0).unwrap(), vec![run(0, 0, 12)]);
    assert_eq!(
        l.skipped_segments("p", 0, 5).unwrap(),
        vec!["k9: gone".to_string()]
    );
    // The old holder's lease (epoch 4) is honoured, then expires.
    report(&l, holder("w", 0, 4), &cp(15, 15), &[run(12, 12, 3)]).unwrap();
    assert_eq!(l.offset_runs("p", 0).unwrap(), vec![run(0, 0, 15)]);
    let g = grant(&l, "w2", 50 + GRACE as i64).granted.unwrap();
    assert_eq!(g.task.progress.epoch, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_share_flushes_and_are_all_durable() {
    let (_d, l) = ledger_with(64, 1);
    let l = Arc::new(l);
    let mut holders = Vec::new();
    for _ in 0..64 {
        holders.push(granted(&l, "w", 0));
    }
    let mut joins = Vec::new();
    for (t, e) in holders {
        let l = l.clone();
        joins.push(tokio::spawn(async move {
            for n in 1..=20i64 {
                let c = tokio::task::spawn_blocking({
                    let l = l.clone();
                    move || {
                        l.checkpoint(
                            Holder {
                                plan_id: "p",
                                task_id: t,
                                worker_id: "w",
                                epoch: e,
                            },
                            &cp(n, n as u64),
                            &[run(n - 1, n + 999, 1)],
                            &[],
                            Completion::InProgress,
                        )
                    }
                })
                .await
                .unwrap()
                .unwrap();
                l.durable(c.seq).await.unwrap();
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    for t in 0..64 {
        assert_eq!(l.offset_runs("p", t).unwrap(), vec![run(0, 1000, 20)]);
    }
}

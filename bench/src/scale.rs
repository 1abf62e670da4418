//! The coordinator at scale, over real gRPC on loopback, with no Kafka writes: workers are
//! simulated by clients that make exactly the calls a real worker makes.
//!   gen-manifest DIR ID TOPIC PARTITIONS SEGMENTS   a manifest only (segments are never read)
//!   scale-task URL DIR ID TOPIC BOOTSTRAP REPORTS    one task: plan, lease, page, checkpoints
//!   scale-workers URL DIR ID TOPIC BOOTSTRAP WORKERS SECONDS   many workers at once
//!   read-manifest DIR ID RUNS   the streaming manifest reader alone, best of RUNS

use crate::{arg, Res};
use kafka_backup_proto::*;
use kafka_backup_worker::connect::{
    ClientSecurity, CoordinatorEndpoint, PlansClient, WorkersClient,
};
use prost::Message;
use serde_json::json;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A real worker restores at most about this fast per task (the target's own limit).
const WORKER_BYTES_PER_SEC: u64 = 100_000_000;
/// Bytes per produce batch of a real worker; a checkpoint covers the batches since the last.
const BATCH_BYTES: u64 = 1 << 20;
/// Segment size the generated manifests claim (the default `--segment-max-bytes`).
const SEGMENT_BYTES: u64 = 16 << 20;
/// How often a simulated worker checkpoints: a real worker's shortest sensible interval
/// (the default is 5 s), i.e. every 95 batches at 100 MB/s.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Writes `DIR/ID/manifest.json`: PARTITIONS partitions of SEGMENTS segments of 16 MiB each,
/// as our backup writes them (compact JSON, true timestamp bounds, no seek index), streamed
/// to disk.
pub fn gen_manifest(args: &[String]) -> Res<()> {
    let (dir, id, topic) = (
        arg(args, 2, "DIR")?,
        arg(args, 3, "ID")?,
        arg(args, 4, "TOPIC")?,
    );
    let partitions: u32 = arg(args, 5, "PARTITIONS")?.parse()?;
    let segments: u64 = arg(args, 6, "SEGMENTS")?.parse()?;
    let path = std::path::Path::new(&dir).join(&id);
    std::fs::create_dir_all(&path)?;
    let file = std::fs::File::create(path.join("manifest.json"))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let records = 16_000u64;
    let ts = 1_700_000_000_000i64;
    write!(
        w,
        r#"{{"backup_id":"{id}","created_at":{ts},"compression":"zstd","topics":[{{"name":"{topic}","original_partition_count":{partitions},"partitions":["#
    )?;
    for p in 0..partitions {
        let sep = if p == 0 { "" } else { "," };
        write!(w, r#"{sep}{{"partition_id":{p},"segments":["#)?;
        for s in 0..segments {
            let start = s * records;
            let end = start + records - 1;
            let (t0, t1) = (ts + start as i64, ts + end as i64);
            let sep = if s == 0 { "" } else { "," };
            write!(
                w,
                r#"{sep}{{"key":"{id}/topics/{topic}/partition={p}/segment-{start:020}.bin.zst","start_offset":{start},"end_offset":{end},"start_timestamp":{t0},"end_timestamp":{t1},"record_count":{records},"uncompressed_size":{},"compressed_size":{SEGMENT_BYTES},"min_timestamp":{t0},"max_timestamp":{t1}}}"#,
                SEGMENT_BYTES * 2
            )?;
        }
        write!(w, "]}}")?;
    }
    write!(w, "]}}]}}")?;
    w.flush()?;
    let bytes = std::fs::metadata(path.join("manifest.json"))?.len();
    println!("{}", json!({"manifest_bytes": bytes}));
    Ok(())
}

/// The largest message seen, by encoded size.
#[derive(Default)]
struct Largest(AtomicU64);

impl Largest {
    fn see<M: Message>(&self, m: &M) {
        self.0.fetch_max(m.encoded_len() as u64, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a scale run points: coordinator, backup, topic and the target cluster.
struct Target {
    url: String,
    dir: String,
    id: String,
    topic: String,
    bootstrap: String,
}

impl Target {
    fn from_args(args: &[String]) -> Res<Self> {
        Ok(Self {
            url: arg(args, 2, "URL")?,
            dir: arg(args, 3, "DIR")?,
            id: arg(args, 4, "ID")?,
            topic: arg(args, 5, "TOPIC")?,
            bootstrap: arg(args, 6, "BOOTSTRAP")?,
        })
    }
}

async fn clients(url: &str) -> Res<(PlansClient, WorkersClient)> {
    let ep = CoordinatorEndpoint::new(url, &ClientSecurity::default())?;
    Ok((ep.plans().await?, ep.workers().await?))
}

fn spec(dir: &str, id: &str, topic: &str, bootstrap: &str) -> RestoreSpec {
    RestoreSpec {
        backup_id: id.to_string(),
        storage_url: dir.to_string(),
        source_topics: vec![topic.to_string()],
        target_topics: vec![format!("{topic}-restored")],
        bootstrap_servers: bootstrap.to_string(),
        create_topics: true,
        checkpoint_interval_ms: CHECKPOINT_EVERY.as_millis() as u64,
        ..Default::default()
    }
}

/// Submits the plan for real and returns its id and how long the coordinator took.
async fn submit(
    plans: &mut PlansClient,
    spec: RestoreSpec,
    largest: &Largest,
) -> Res<(String, f64)> {
    let req = SubmitPlanRequest {
        spec: Some(spec),
        dry_run: false,
        new_run: true,
    };
    largest.see(&req);
    let t = Instant::now();
    let resp = plans.submit_plan(req).await?.into_inner();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    largest.see(&resp);
    Ok((resp.plan_id, ms))
}

fn lease_ref(l: &TaskLease, worker: &str) -> LeaseRef {
    LeaseRef {
        plan_id: l.plan_id.clone(),
        task_id: l.task_id,
        epoch: l.epoch,
        worker_id: worker.to_string(),
    }
}

/// The checkpoint a worker sends when batches `from..to` of this task (1 KiB records) have
/// been acknowledged since its last one: one contiguous offset run.
fn checkpoint(l: &TaskLease, worker: &str, from: u64, to: u64) -> CheckpointRequest {
    let per_batch = BATCH_BYTES / 1024;
    let (first, records) = (from * per_batch, to * per_batch);
    CheckpointRequest {
        lease: Some(lease_ref(l, worker)),
        source_next_offset: l.task_start_offset + records as i64,
        target_next_offset: records as i64,
        records_done: records,
        bytes_done: to * BATCH_BYTES,
        offset_runs: vec![OffsetRun {
            source_start: l.task_start_offset + first as i64,
            target_start: first as i64,
            length: records - first,
            source_index: 0,
        }],
        skipped_segments: vec![],
        source_next_offsets: vec![],
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One task of a big partition: plan it, lease it, page through its whole segment list,
/// then time REPORTS checkpoint reports (each flushed before its answer).
pub async fn scale_task(args: &[String]) -> Res<()> {
    let Target {
        url,
        dir,
        id,
        topic,
        bootstrap,
    } = Target::from_args(args)?;
    let reports: u64 = arg(args, 7, "REPORTS")?.parse()?;
    let (mut plans, mut workers) = clients(&url).await?;
    let largest = Largest::default();
    let (plan_id, plan_ms) =
        submit(&mut plans, spec(&dir, &id, &topic, &bootstrap), &largest).await?;
    let worker = "bench-worker";
    let resp = workers
        .acquire_lease(AcquireLeaseRequest {
            worker_id: worker.into(),
            plan_id: plan_id.clone(),
        })
        .await?
        .into_inner();
    largest.see(&resp);
    let lease = resp.lease.ok_or("no lease granted")?;
    let lease_bytes = lease.encoded_len();
    // Page through the whole list, as a worker does while it restores.
    let t = Instant::now();
    let mut next = lease.segment_index + lease.segments.len() as u64;
    let mut pages = 0u64;
    while next < lease.segment_count {
        let page = workers
            .get_task_segments(TaskSegmentsRequest {
                lease: Some(lease_ref(&lease, worker)),
                from_index: next,
                limit: 0,
            })
            .await?
            .into_inner();
        largest.see(&page);
        next = page.next_index;
        pages += 1;
    }
    let paging_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut lat = Vec::with_capacity(reports as usize);
    for n in 1..=reports {
        let req = checkpoint(&lease, worker, (n - 1) * 95, n * 95);
        largest.see(&req);
        let t = Instant::now();
        workers.report_checkpoint(req).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let status = plans
        .get_plan_status(PlanRef {
            plan_id: plan_id.clone(),
            ..Default::default()
        })
        .await?
        .into_inner();
    largest.see(&status);
    println!(
        "{}",
        json!({
            "plan_ms": plan_ms,
            "segments": lease.segment_count,
            "lease_bytes": lease_bytes,
            "pages": pages,
            "paging_ms": paging_ms,
            "largest_message_bytes": largest.get(),
            "checkpoint_median_ms": percentile(&lat, 0.5),
            "checkpoint_p99_ms": percentile(&lat, 0.99),
        })
    );
    Ok(())
}

/// Latencies by call, shared by the simulated workers.
#[derive(Default)]
struct Calls {
    grants: AtomicU64,
    checkpoints: AtomicU64,
    completed: AtomicU64,
    latencies_ms: Mutex<Vec<f64>>,
    checkpoint_ms: Mutex<Vec<f64>>,
}

impl Calls {
    fn timed(&self, started: Instant, is_checkpoint: bool) {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if let Ok(mut v) = self.latencies_ms.lock() {
            v.push(ms);
        }
        if is_checkpoint {
            if let Ok(mut v) = self.checkpoint_ms.lock() {
                v.push(ms);
            }
        }
    }
}

/// Many simulated workers on one coordinator for SECONDS: each starts within the first
/// second, leases a task, restores it at 100 MB/s in 1 MiB batches (a checkpoint every
/// second, a heartbeat every TTL/4), completes it and leases the next, over its own
/// connection.
pub async fn scale_workers(args: &[String]) -> Res<()> {
    let Target {
        url,
        dir,
        id,
        topic,
        bootstrap,
    } = Target::from_args(args)?;
    let n: usize = arg(args, 7, "WORKERS")?.parse()?;
    let secs: u64 = arg(args, 8, "SECONDS")?.parse()?;
    let (mut plans, _) = clients(&url).await?;
    let largest = Largest::default();
    let (plan_id, plan_ms) =
        submit(&mut plans, spec(&dir, &id, &topic, &bootstrap), &largest).await?;
    let calls = Arc::new(Calls::default());
    let end = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut joins = Vec::with_capacity(n);
    for w in 0..n {
        let (url, plan_id, calls) = (url.clone(), plan_id.clone(), calls.clone());
        joins.push(tokio::spawn(async move {
            simulated_worker(&url, &plan_id, &format!("sim-{w}"), &calls, end)
                .await
                .map_err(|e| e.to_string())
        }));
    }
    let mut errors = 0u64;
    for (w, j) in joins.into_iter().enumerate() {
        let failure = match j.await {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(e) => format!("the task ended: {e}"),
        };
        // Counted in the table; named here, so a failure can be told from a fencing.
        eprintln!("simulated worker sim-{w} failed: {failure}");
        errors += 1;
    }
    let wall = started.elapsed().as_secs_f64();
    let mut all = calls
        .latencies_ms
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    let mut cps = calls
        .checkpoint_ms
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    all.sort_by(f64::total_cmp);
    cps.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({
            "workers": n,
            "plan_ms": plan_ms,
            "seconds": wall,
            "grants_per_sec": calls.grants.load(Ordering::Relaxed) as f64 / wall,
            "checkpoints_per_sec": calls.checkpoints.load(Ordering::Relaxed) as f64 / wall,
            "tasks_completed": calls.completed.load(Ordering::Relaxed),
            "calls": all.len(),
            "p90_ms": percentile(&all, 0.90),
            "p99_ms": percentile(&all, 0.99),
            "p999_ms": percentile(&all, 0.999),
            "max_ms": all.last().copied().unwrap_or(0.0),
            "checkpoint_p50_ms": percentile(&cps, 0.5),
            "checkpoint_p99_ms": percentile(&cps, 0.99),
            "worker_errors": errors,
        })
    );
    Ok(())
}

async fn simulated_worker(
    url: &str,
    plan_id: &str,
    worker: &str,
    calls: &Calls,
    end: Instant,
) -> Res<()> {
    let (_, mut client) = clients(url).await?;
    let reg = client
        .register(RegisterRequest {
            worker_id: worker.into(),
            hostname: "bench".into(),
        })
        .await?
        .into_inner();
    let heartbeat_every = Duration::from_millis(reg.heartbeat_interval_ms.max(100));
    // A fleet does not start on one tick: each worker starts somewhere in the first second
    // (deterministically by its name), so checkpoints are spread as in a real restore
    // rather than arriving as one burst of N every second for the whole run.
    let phase = worker
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    tokio::time::sleep(Duration::from_millis(phase % 1000)).await;
    while Instant::now() < end {
        let t = Instant::now();
        let resp = client
            .acquire_lease(AcquireLeaseRequest {
                worker_id: worker.into(),
                plan_id: plan_id.into(),
            })
            .await?
            .into_inner();
        calls.timed(t, false);
        let Some(lease) = resp.lease else {
            if resp.plan_finished {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(resp.retry_after_ms.max(50))).await;
            continue;
        };
        calls.grants.fetch_add(1, Ordering::Relaxed);
        let task_bytes = lease.segment_count * SEGMENT_BYTES;
        let task_time = Duration::from_secs_f64(task_bytes as f64 / WORKER_BYTES_PER_SEC as f64);
        let task_start = Instant::now();
        let (mut next_cp, mut next_hb) =
            (task_start + CHECKPOINT_EVERY, task_start + heartbeat_every);
        let mut reported = 0u64;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            let done = now.duration_since(task_start) >= task_time;
            let batches = (now.duration_since(task_start).as_secs_f64()
                * WORKER_BYTES_PER_SEC as f64
                / BATCH_BYTES as f64) as u64;
            if done {
                let t = Instant::now();
                let all = task_bytes / BATCH_BYTES;
                client
                    .complete_task(checkpoint(&lease, worker, reported, all))
                    .await?;
                calls.timed(t, true);
                calls.completed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if now >= next_cp {
                let t = Instant::now();
                client
                    .report_checkpoint(checkpoint(&lease, worker, reported, batches))
                    .await?;
                reported = batches;
                calls.timed(t, true);
                calls.checkpoints.fetch_add(1, Ordering::Relaxed);
                next_cp += CHECKPOINT_EVERY;
            }
            if now >= next_hb {
                let t = Instant::now();
                client.heartbeat(lease_ref(&lease, worker)).await?;
                calls.timed(t, false);
                next_hb += heartbeat_every;
            }
            let wake = next_cp.min(next_hb).min(task_start + task_time).min(end);
            tokio::time::sleep_until(wake.into()).await;
        }
    }
    Ok(())
}

/// Writes `DIR/ID/manifest.index` for a manifest `gen_manifest` streamed, as `backup` would
/// have written it next to the manifest (the scale bench dry-runs a backup both ways). With
/// STORE_URL, stores the manifest and its index there instead, as `backup` does on an object
/// store (the index records the manifest's entity tag).
pub async fn index_manifest(args: &[String]) -> Res<()> {
    let (dir, id) = (arg(args, 2, "DIR")?, arg(args, 3, "ID")?);
    let path = std::path::Path::new(&dir).join(&id);
    let json = std::fs::read(path.join("manifest.json"))?;
    let manifest: kafka_backup_common::manifest::Manifest = serde_json::from_slice(&json)?;
    let store = match args.get(4) {
        Some(url) => {
            let store = kafka_backup_common::storage::BackupStore::open(
                url,
                &std::collections::HashMap::new(),
                false,
            )?;
            store
                .put(&format!("{id}/manifest.json"), json.clone())
                .await?;
            store
        }
        None => kafka_backup_common::storage::BackupStore::open(
            &dir,
            &std::collections::HashMap::new(),
            false,
        )?,
    };
    let mut index = kafka_backup_common::index_file::IndexFile::of(&manifest, &json);
    store.write_index(&id, &mut index).await?;
    let index = store.get(&format!("{id}/manifest.index")).await?;
    println!("{}", json!({"index_bytes": index.len()}));
    Ok(())
}

/// The planning read of a backup alone (what planning a big backup spends most of its time
/// on): its manifest.index when it has one that matches, else the streaming manifest reader;
/// best of RUNS, in MB/s of manifest text.
pub async fn read_manifest(args: &[String]) -> Res<()> {
    let (dir, id) = (arg(args, 2, "DIR")?, arg(args, 3, "ID")?);
    let runs: usize = arg(args, 4, "RUNS")?.parse()?;
    let store = kafka_backup_common::storage::BackupStore::open(
        &dir,
        &std::collections::HashMap::new(),
        false,
    )?;
    let bytes =
        std::fs::metadata(std::path::Path::new(&dir).join(&id).join("manifest.json"))?.len();
    let mut best = f64::MAX;
    let mut segments = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let idx = store
            .read_manifest_index(&id, kafka_backup_common::manifest_index::Sieve::default())
            .await?;
        best = best.min(t.elapsed().as_secs_f64());
        segments = idx
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.segments.len())
            .sum::<usize>();
    }
    println!(
        "{}",
        json!({"seconds": best, "mb_per_s": bytes as f64 / 1e6 / best, "segments": segments,
               "index_file": std::path::Path::new(&dir).join(&id).join("manifest.index").is_file()})
    );
    Ok(())
}

//! `--verify-segments`: the read-back of a restore's segments before anything is written,
//! reported on stderr (the restore's own output, table or JSON, stays on stdout).

use anyhow::Result;
use kafka_backup_coordinator::verify::{verify_segments, VerifyProgress};
use kafka_backup_proto::RestoreSpec;
use std::time::{Duration, Instant};

/// Damaged segments listed one per line; the rest are counted.
const LISTED: usize = 20;

/// How often a long verification says how far it has come.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reads back every segment `spec` would restore. Missing or damaged ones refuse the restore
/// (nothing is written), unless it skips them (`--skip-corrupt-segments`), which is then
/// said with the records it loses.
pub async fn verify_before_writing(spec: &RestoreSpec) -> Result<()> {
    let started = Instant::now();
    let mut last_said = started;
    let verified = verify_segments(spec, |p: VerifyProgress| {
        if last_said.elapsed() >= PROGRESS_EVERY {
            last_said = Instant::now();
            eprintln!(
                "verifying segments: {} of {} read back ({:.1} MB)",
                p.done,
                p.total,
                p.bytes as f64 / 1e6
            );
        }
    })
    .await?;
    let read = format!(
        "{} segments of {} partitions ({:.1} MB, {} records) in {:.1} s",
        verified.segments,
        verified.partitions,
        verified.bytes as f64 / 1e6,
        verified.records,
        started.elapsed().as_secs_f64()
    );
    if verified.bad.is_empty() {
        eprintln!("Verified {read}: every one reads back intact.");
        return Ok(());
    }
    eprintln!(
        "Verified {read}: {} cannot be restored:",
        verified.bad.len()
    );
    for bad in verified.bad.iter().take(LISTED) {
        eprintln!("  {}", bad.reason);
    }
    if verified.bad.len() > LISTED {
        eprintln!("  ... and {} more", verified.bad.len() - LISTED);
    }
    if spec.skip_corrupt_segments {
        eprintln!(
            "--skip-corrupt-segments: the restore skips these {} segments and loses their records.",
            verified.bad.len()
        );
        return Ok(());
    }
    anyhow::bail!(
        "{} of {} segments of backup {} are missing or damaged (listed above); nothing was written. Put the objects back from another copy, restore a time window or partitions that leave them out, or add --skip-corrupt-segments to restore everything else without their records",
        verified.bad.len(),
        verified.segments,
        spec.backup_id
    )
}

//! A power loss after an acknowledgement: the ledger on a real ext4 filesystem (a loop-mounted
//! image), a child process that makes changes and waits until each is durable, then the
//! filesystem shut down the way xfstests simulates a power cut (`EXT4_IOC_SHUTDOWN` without
//! flushing the journal: nothing not already on stable storage reaches the disk after it).
//! Remounted, the ledger must hold every change the child saw acknowledged.
//!
//! Needs root (mount, loop devices, mkfs.ext4). Without root a plain `cargo test` says so and
//! skips it; under `scripts/test.sh` (`KAFKA_BACKUP_REQUIRE_SERVERS=1`, as in CI) it fails.

use super::tests::{cp, granted, holder, new_task, plan_record, settle};
use super::*;
use std::path::PathBuf;
use std::process::Command;

/// Set in the child: the ledger directory to write before the simulated power cut.
const CHILD_ENV: &str = "KAFKA_BACKUP_POWER_LOSS_LEDGER";
const TEST_NAME: &str = "ledger::power_loss_tests::acknowledged_changes_survive_a_power_loss";
/// Checkpoints the child waits out one by one: the log grows over several flushes. Each task
/// has 50 segments of 10 offsets.
const CHECKPOINTS: i64 = 200;

/// `_IOR('X', 125, __u32)` and its "do not flush the journal" flag (linux/ext4.h).
const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The mounted image; unmounted when dropped (also when the test fails).
struct Mounted(PathBuf);

impl Mounted {
    fn new(image: &Path, at: &Path) -> Self {
        run(
            "mount",
            &[
                "-o",
                "loop",
                &image.display().to_string(),
                &at.display().to_string(),
            ],
        );
        Self(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn acknowledged_changes_survive_a_power_loss() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        return write_then_cut_power(Path::new(&dir));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // `scripts/test.sh` (CI) runs every test; a plain `cargo test` skips this one.
        let required = std::env::var("KAFKA_BACKUP_REQUIRE_SERVERS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "the power-loss test mounts a loop device, which needs root"
        );
        eprintln!("skipped: mounting a loop device needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let image = tmp.path().join("ext4.img");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image file");
    run("mkfs.ext4", &["-q", "-F", &image.display().to_string()]);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let ledger_dir = mnt.join("ledger");

    let mounted = Mounted::new(&image, &mnt);
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &ledger_dir)
        .output()
        .expect("child test process");
    assert!(
        child.status.success(),
        "the writing child failed: {}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    drop(mounted);

    let _mounted = Mounted::new(&image, &mnt);
    let l = Ledger::open(&ledger_dir).expect("the ledger opens after the power cut");
    let t0 = l.task("p", 0).expect("the plan survived");
    assert_eq!(
        t0.progress.checkpoint,
        Some(cp(CHECKPOINTS, CHECKPOINTS as u64)),
        "the last acknowledged checkpoint of task 0 survived"
    );
    assert_eq!(l.task("p", 1).unwrap().progress.state, TaskState::Completed);
    assert_eq!(
        std::fs::read_dir(ledger_dir.join("blobs")).map_or(0, |d| d.count()),
        0,
        "no record went to sled's blob files"
    );
}

/// The child: every change waited out, then the filesystem cut off, then exit without any
/// destructor (as a crash would).
fn write_then_cut_power(dir: &Path) {
    let l = Ledger::open(dir).expect("open");
    let tasks = (0..2).map(|i| new_task(i, 50)).collect();
    settle(&l, l.create_plan(plan_record("p", 2), tasks));
    let (t, e) = granted(&l, "w", 0);
    for n in 1..=CHECKPOINTS {
        let progress = cp(n, n as u64);
        let h = holder("w", t, e);
        settle(
            &l,
            l.checkpoint(h, &progress, &[], &[], Completion::InProgress),
        );
    }
    let (t1, e1) = granted(&l, "w", 0);
    let h = holder("w", t1, e1);
    settle(
        &l,
        l.checkpoint(h, &cp(500, 500), &[], &[], Completion::Done),
    );

    let mount_point = dir.parent().expect("the ledger is inside the mount");
    let fs = std::fs::File::open(mount_point).expect("mount point");
    let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
    // SAFETY: the ioctl reads one u32 through a pointer to a live local.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fs),
            EXT4_IOC_SHUTDOWN,
            &flags,
        )
    };
    assert_eq!(rc, 0, "ext4 shutdown: {}", std::io::Error::last_os_error());
    std::process::exit(0);
}

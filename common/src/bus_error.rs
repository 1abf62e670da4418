//! Names the likely cause when the process is killed by SIGBUS.
//!
//! Local segment objects are read through memory mappings (`read_crc.rs`). A page of one
//! that cannot be read when it is touched (the file truncated or rewritten in place by
//! another process during a restore, or a disk read failing after the page was evicted) is
//! not an error a read call could return: the kernel sends SIGBUS, whose default action ends
//! the process with nothing but "Bus error" from the shell. This handler writes what
//! happened and what to do, then lets the signal end the process exactly as before (same
//! signal, same core dump rules), so supervisors and the coordinator see the same death as a
//! kill: the ledger and the idempotent producer make a rerun resume without loss or
//! duplicates, as after `kill -9`.

/// What is written to stderr on SIGBUS.
pub const MESSAGE: &str = "\nkafka-backup: killed by SIGBUS while reading a backup segment \
file mapped into memory: the file was most likely truncated or rewritten in place by another \
process during the restore, or the disk failed to read it. Restore the backup directory's \
files from an unchanged copy (backups never change a segment in place), then rerun the same \
command: it resumes from its ledger.\n";

/// Installs the handler for the rest of the process. Call once, early in `main`.
pub fn explain_bus_errors() {
    #[cfg(unix)]
    // SAFETY: the handler only calls write(2), which is async-signal-safe, on a static
    // message; SA_RESETHAND restores the default action before it runs.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_bus_error as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            tracing::debug!("could not install the SIGBUS handler; a bus error ends the process without its explanation");
        }
    }
}

/// Writes the message; returning re-runs the faulting read, which now takes the default
/// action (SA_RESETHAND) and ends the process with SIGBUS.
#[cfg(unix)]
extern "C" fn on_bus_error(_signal: libc::c_int) {
    // SAFETY: write(2) of a static buffer is async-signal-safe; its result is ignored
    // because there is nothing a signal handler could do about a failed write.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "KAFKA_BACKUP_BUS_ERROR_CHILD";

    /// In a child process of this test binary: maps a segment file the way a restore does,
    /// truncates it as another process would, and reads past the new end.
    #[test]
    fn bus_error_child() {
        let Some(dir) = std::env::var_os(CHILD) else {
            return;
        };
        let path = std::path::Path::new(&dir).join("seg");
        std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
        let object = crate::read_crc::read_file_checked(&path).expect("read");
        super::explain_bus_errors();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(0))
            .expect("truncate");
        let sum: u64 = object.bytes.iter().map(|&b| u64::from(b)).sum();
        panic!("the truncated mapping was read without a bus error (sum {sum})");
    }

    #[test]
    fn a_bus_error_on_a_truncated_segment_file_says_why_and_still_ends_the_process() {
        let dir = tempfile::tempdir().expect("dir");
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "bus_error::tests::bus_error_child",
                "--nocapture",
            ])
            .env(CHILD, dir.path())
            .output()
            .expect("run child");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "stderr: {stderr}");
        assert!(stderr.contains(super::MESSAGE.trim()), "stderr: {stderr}");
    }
}

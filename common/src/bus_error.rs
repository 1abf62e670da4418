//! Names the likely cause when the process is killed by SIGBUS.
//!
//! Local segment objects are read through memory mappings (`read_crc.rs`). A page of one
//! that cannot be read when it is touched (the file truncated by another process during a
//! restore, or a disk read failing after the page was evicted) is not an error a read call
//! could return: the kernel sends SIGBUS, whose default action ends the process with nothing
//! but "Bus error" from the shell. This handler writes what happened and what to do, then
//! lets SIGBUS end the process as it would have (same signal, same core dump rules), so
//! supervisors and the coordinator see the same death as a kill: the ledger and the
//! idempotent producer make a rerun resume without loss or duplicates, as after `kill -9`.

/// What is written to stderr on SIGBUS.
pub const MESSAGE: &str = "\nkafka-backup: killed by SIGBUS while reading a backup segment \
file mapped into memory: the file was most likely truncated or overwritten in place by \
another process during the restore, or the disk failed to read it. Restore the backup directory's \
files from an unchanged copy (backups never change a segment in place), then rerun the same \
command: it resumes from its ledger.\n";

/// Installs the handler for the rest of the process. Call once, early in `main`, after
/// logging is set up. Returns false when it could not be installed (SIGBUS then ends the
/// process without the explanation).
pub fn explain_bus_errors() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: the handler only calls async-signal-safe functions (write, raise) and saves
    // errno around them; SA_RESETHAND restores the default action as it is entered.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_bus_error
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) == 0
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// Writes the message when the fault is a memory access the kernel could not back (a mapped
/// page past a file's end, or one that could not be read: `BUS_ADRERR`, `BUS_OBJERR`), not
/// for misalignment or machine-check memory errors. Then the default action ends the
/// process: returning re-runs the faulting access, which faults again with the default
/// action back in place (SA_RESETHAND); a SIGBUS sent by another process (no faulting
/// access to re-run) is raised again instead.
#[cfg(target_os = "linux")]
extern "C" fn on_bus_error(_signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler; errno is this
    // thread's and is restored before returning; write(2) and raise(3) are
    // async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let code = if info.is_null() { 0 } else { (*info).si_code };
        if code == libc::BUS_ADRERR || code == libc::BUS_OBJERR {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        }
        if code <= 0 {
            libc::raise(libc::SIGBUS);
        }
        *libc::__errno_location() = errno;
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    const CHILD: &str = "KAFKA_BACKUP_BUS_ERROR_CHILD";
    const NOT_MAPPED: &str = "bus-error-test: not mapped";

    /// In a child process of this test binary: maps a segment file the way a restore does,
    /// truncates it as another process would, and reads past the new end.
    #[test]
    fn bus_error_child() {
        let Some(dir) = std::env::var_os(CHILD) else {
            return;
        };
        // SAFETY: setrlimit only reads the struct it is given. No core file from this death.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
        }
        let path = std::path::Path::new(&dir).join("seg");
        std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let Some(object) = crate::read_crc::map_checked(&file, 1 << 20) else {
            println!("{NOT_MAPPED}");
            return;
        };
        assert!(super::explain_bus_errors(), "handler not installed");
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
        if String::from_utf8_lossy(&out.stdout).contains(NOT_MAPPED) {
            eprintln!("segment files are not mapped here (file system or kernel): nothing to test");
            return;
        }
        assert_eq!(out.status.signal(), Some(libc::SIGBUS), "stderr: {stderr}");
        assert!(stderr.contains(super::MESSAGE.trim()), "stderr: {stderr}");
    }
}

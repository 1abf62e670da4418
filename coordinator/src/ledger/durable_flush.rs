//! A sled flush that is durable. sled 0.34's `flush` on Linux writes its log with
//! `sync_file_range` and never calls `fsync` (sled issue #1452): the data reaches the device,
//! but neither the log file's new length nor the device's write cache is committed. A power
//! loss or kernel crash then takes back changes the coordinator had already acknowledged.
//! Measured on ext4 with a simulated power loss (the filesystem shut down without flushing
//! its journal): 100 appends each followed by `sync_file_range` all vanished, the file came
//! back empty; followed by `fdatasync` too, all 100 survived (test:
//! `power_loss_tests.rs`).
//!
//! So after sled's flush this `fdatasync`s the log file through a descriptor of our own
//! (`fsync` acts on the file, not on the descriptor), and first any value sled wrote apart
//! from its log (values over a quarter of a log segment go to files in `blobs/`, which sled
//! writes without syncing).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where sled 0.34 keeps a database in its directory.
const LOG_FILE: &str = "db";
const BLOB_DIR: &str = "blobs";

pub struct DurableFlush {
    db: sled::Db,
    synced: Synced,
}

/// What a durable flush syncs after sled has written its log.
struct Synced {
    log: File,
    dir: PathBuf,
    /// Blob files already synced (sled never rewrites one in place).
    blobs: HashSet<OsString>,
}

impl DurableFlush {
    /// Syncs the ledger directory and every directory opening it created, from `existed`
    /// (the nearest ancestor there before, see [`existing_ancestor`]) down, once: so that
    /// sled's files and the directories holding them stay named after a crash. Then keeps
    /// the log file open for the flushes to come, and flushes what opening (or migrating)
    /// the ledger wrote before anything is acknowledged.
    pub fn new(db: sled::Db, dir: &Path, existed: &Path) -> Result<Self, String> {
        let opened = File::open(dir.join(LOG_FILE)).and_then(|log| {
            sync_dirs_down(existed, dir)?;
            Ok(log)
        });
        let log = opened.map_err(|e| format!("cannot sync it to disk: {e}"))?;
        let mut flusher = Self {
            db,
            synced: Synced {
                log,
                dir: dir.to_path_buf(),
                blobs: HashSet::new(),
            },
        };
        flusher.flush()?;
        Ok(flusher)
    }

    /// Everything written to the ledger so far is on stable storage when this returns `Ok`.
    pub fn flush(&mut self) -> Result<(), String> {
        self.write_log()?;
        self.sync()
    }

    /// sled's flush: everything applied so far is written to its log (see the module doc
    /// for why that is not yet durable). sled holds changes back while this runs.
    pub fn write_log(&mut self) -> Result<(), String> {
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Makes what `write_log` wrote durable; changes can be applied meanwhile (`fdatasync`
    /// covers at least what was written before it started).
    pub fn sync(&mut self) -> Result<(), String> {
        self.synced.sync().map_err(|e| e.to_string())
    }
}

/// The nearest of `dir` and its ancestors that exists now: opening the ledger creates the
/// rest, and their names are entries in this one.
pub fn existing_ancestor(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Syncs `dir` and each ancestor of it up to and including `top`: each holds the name of
/// one below it that may be new. A relative `dir` whose ancestors run out before `top` ("."
/// for a path with one component) ends at the current directory.
fn sync_dirs_down(top: &Path, dir: &Path) -> std::io::Result<()> {
    for d in dir.ancestors() {
        let d = if d.as_os_str().is_empty() {
            Path::new(".")
        } else {
            d
        };
        File::open(d)?.sync_all()?;
        if d == top {
            break;
        }
    }
    Ok(())
}

impl Synced {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_new_blobs()?;
        self.log.sync_data()
    }

    fn sync_new_blobs(&mut self) -> std::io::Result<()> {
        let dir = self.dir.join(BLOB_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut added = false;
        for entry in entries {
            let name = entry?.file_name();
            if !self.blobs.contains(&name) {
                match File::open(dir.join(&name)) {
                    Ok(f) => f.sync_all()?,
                    // sled removed it between the listing and here: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                added = true;
            }
            present.insert(name);
        }
        if added {
            File::open(&dir)?.sync_all()?;
        }
        self.blobs = present;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ancestor_that_existed_is_where_new_names_begin() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deep = tmp.path().join("a").join("b").join("ledger");
        assert_eq!(existing_ancestor(&deep), tmp.path());
        std::fs::create_dir_all(&deep).expect("mkdir");
        assert_eq!(existing_ancestor(&deep), deep);
        assert_eq!(
            existing_ancestor(Path::new("no-such-dir-here")),
            Path::new(".")
        );
        // Every directory from the new one up to the one that existed can be synced.
        sync_dirs_down(tmp.path(), &deep).expect("sync");
    }
}

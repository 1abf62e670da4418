//! Local backups on disk before they are called complete.
//!
//! Why: a local put is a temporary file renamed into place, and neither the file's data nor
//! the rename reaches the disk until the kernel writes them back, up to ~30 s later. A
//! power loss or kernel crash in that time after `backup` reported success could leave a
//! manifest that names segments that are empty or missing: a backup that cannot be
//! restored, discovered on the day it is needed. So every object's data is synced when it is
//! written (beside the fetching of the next one, as segment uploads run on threads of their
//! own), every directory of the backup before its manifest is written, and the manifest and
//! its directory last: once the manifest is on disk, everything it names is.

use std::path::{Path, PathBuf};

/// Syncs one written file's data and metadata to the disk.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()
}

/// Syncs a directory's entries (the files renamed into it, the directories made in it).
/// Only unix lets a directory be opened and synced; elsewhere this does nothing.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(path)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Syncs `root` and every directory below it, the deepest first, and returns them in that
/// order: an entry is on disk before the entry of the directory that holds it.
pub fn sync_dirs_under(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        next += 1;
    }
    // Breadth-first order reversed: every directory comes before its parent.
    dirs.reverse();
    for dir in &dirs {
        sync_dir(dir)?;
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_directory_of_a_backup_is_synced_before_the_one_that_holds_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let backup = root.path().join("bk");
        for p in ["topics/a/0", "topics/a/1", "topics/b/0", "groups"] {
            std::fs::create_dir_all(backup.join(p)).expect("mkdir");
        }
        std::fs::write(backup.join("topics/a/0/seg"), b"x").expect("write");
        let synced = sync_dirs_under(&backup).expect("sync");
        let rel: Vec<String> = synced
            .iter()
            .map(|d| {
                d.strip_prefix(&backup)
                    .expect("under the backup")
                    .display()
                    .to_string()
            })
            .collect();
        let mut expected = vec![
            "",
            "groups",
            "topics",
            "topics/a",
            "topics/b",
            "topics/a/0",
            "topics/a/1",
            "topics/b/0",
        ];
        expected.sort();
        let mut got = rel.clone();
        got.sort();
        assert_eq!(got, expected, "every directory, and no file");
        let at = |d: &str| rel.iter().position(|r| r == d).expect("synced");
        for d in &rel {
            if let Some(parent) = Path::new(d).parent() {
                assert!(
                    at(d) < at(&parent.display().to_string()),
                    "{d} after its parent"
                );
            }
        }
        assert_eq!(
            rel.last().map(String::as_str),
            Some(""),
            "the backup's own last"
        );
        sync_file(&backup.join("topics/a/0/seg")).expect("sync a file");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_silent_success() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = sync_dirs_under(&root.path().join("gone")).expect_err("missing");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}

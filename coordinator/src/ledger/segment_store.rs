//! Immutable segment lists, outside sled. A plan's lists are written once, when the plan is
//! created, and afterwards only read a page at a time, so they need none of what a database
//! offers and pay for all of it: written into sled, a million entries took ~20 s and ~2.5 GB
//! of coordinator memory. Here they are two flat files per plan, written sequentially:
//!
//! - `<stem>.seg`: the entries back to back (`codec::encode_segment`), task after task;
//! - `<stem>.idx`: one 24-byte record per entry — data offset, data length and the entry's
//!   end offset, little-endian — so entry `n` is found with one positioned read and the
//!   resume point of a task is found by binary search over the index alone.
//!
//! A task's entries are a contiguous range of the plan's (`TaskMeta::segments_base`). Both
//! files are synced before the plan's ledger transaction commits, so a plan that exists has
//! complete lists; the ledger removes the files of a plan whose creation was cut short.

use super::codec::{decode_segment, encode_segment};
use super::model::SegmentEntry;
use super::LedgerError;
use kafka_backup_common::manifest_index::SegmentSpan;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const INDEX_RECORD: u64 = 24;

/// The directory of every plan's list files, with the open files of plans being read.
pub struct SegmentStore {
    dir: PathBuf,
    open: Mutex<HashMap<String, Arc<PlanFiles>>>,
}

struct PlanFiles {
    index: File,
    data: File,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> LedgerError {
    LedgerError::Io(format!("{what} {}: {e}", path.display()))
}

/// The file stem of a plan: its id with anything but [A-Za-z0-9._-] escaped, so any plan
/// id maps to one safe, distinct file name.
pub fn stem(plan_id: &str) -> String {
    let mut out = String::with_capacity(plan_id.len());
    for b in plan_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// Writes one plan's lists; `finish` syncs them.
pub struct PlanWriter {
    index_path: PathBuf,
    data_path: PathBuf,
    index: BufWriter<File>,
    data: BufWriter<File>,
    written: u64,
    data_len: u64,
}

impl PlanWriter {
    /// Appends `segments` (one task's list, in order); returns the index of the first.
    pub fn append(&mut self, segments: Vec<SegmentSpan>) -> Result<u64, LedgerError> {
        let base = self.written;
        for s in segments {
            let bytes = encode_segment(&SegmentEntry::from(s));
            let end_offset = i64::from_le_bytes(
                bytes
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .unwrap_or_default(),
            );
            self.data
                .write_all(&bytes)
                .map_err(|e| io("cannot write", &self.data_path, e))?;
            let mut rec = [0u8; INDEX_RECORD as usize];
            rec[..8].copy_from_slice(&self.data_len.to_le_bytes());
            rec[8..16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
            rec[16..].copy_from_slice(&end_offset.to_le_bytes());
            self.index
                .write_all(&rec)
                .map_err(|e| io("cannot write", &self.index_path, e))?;
            self.data_len += bytes.len() as u64;
            self.written += 1;
        }
        Ok(base)
    }

    /// Flushes and syncs both files.
    pub fn finish(self) -> Result<(), LedgerError> {
        for (w, path) in [(self.index, &self.index_path), (self.data, &self.data_path)] {
            let f = w
                .into_inner()
                .map_err(|e| io("cannot write", path, e.into_error()))?;
            f.sync_all().map_err(|e| io("cannot sync", path, e))?;
        }
        Ok(())
    }
}

impl SegmentStore {
    pub fn open(dir: PathBuf) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        Ok(Self {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn paths(&self, plan_id: &str) -> (PathBuf, PathBuf) {
        let s = stem(plan_id);
        (
            self.dir.join(format!("{s}.idx")),
            self.dir.join(format!("{s}.seg")),
        )
    }

    /// Starts the lists of a new plan (replacing leftovers of an attempt that was cut short).
    pub fn create(&self, plan_id: &str) -> Result<PlanWriter, LedgerError> {
        let (index_path, data_path) = self.paths(plan_id);
        let create = |p: &Path| File::create(p).map_err(|e| io("cannot create", p, e));
        Ok(PlanWriter {
            index: BufWriter::with_capacity(1 << 20, create(&index_path)?),
            data: BufWriter::with_capacity(1 << 20, create(&data_path)?),
            index_path,
            data_path,
            written: 0,
            data_len: 0,
        })
    }

    /// Makes the new files' directory entries durable (after `PlanWriter::finish`).
    pub fn sync_dir(&self) -> Result<(), LedgerError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync", &self.dir, e))
    }

    /// Removes a plan's files (creation cut short).
    pub fn remove(&self, plan_id: &str) {
        let (i, d) = self.paths(plan_id);
        let _ = std::fs::remove_file(i);
        let _ = std::fs::remove_file(d);
        if let Ok(mut open) = self.open.lock() {
            open.remove(plan_id);
        }
    }

    fn files(&self, plan_id: &str) -> Result<Arc<PlanFiles>, LedgerError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = open.get(plan_id) {
            return Ok(f.clone());
        }
        let (i, d) = self.paths(plan_id);
        let files = Arc::new(PlanFiles {
            index: File::open(&i).map_err(|e| io("cannot open", &i, e))?,
            data: File::open(&d).map_err(|e| io("cannot open", &d, e))?,
        });
        open.insert(plan_id.to_string(), files.clone());
        Ok(files)
    }

    fn read(&self, f: &File, at: u64, len: u64, what: &str) -> Result<Vec<u8>, LedgerError> {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, at).map_err(|e| {
            LedgerError::Io(format!(
                "cannot read {len} bytes at {at} of the {what} file: {e}"
            ))
        })?;
        Ok(buf)
    }

    /// Entries `first..first + n` of a plan's lists (`n` is clamped to what is there; the
    /// caller knows the task's range).
    pub fn page(
        &self,
        plan_id: &str,
        first: u64,
        n: u64,
    ) -> Result<Vec<SegmentEntry>, LedgerError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let f = self.files(plan_id)?;
        let idx = self.read(
            &f.index,
            first * INDEX_RECORD,
            n * INDEX_RECORD,
            "segment index",
        )?;
        let field =
            |r: &[u8], at: usize| u64::from_le_bytes(r[at..at + 8].try_into().unwrap_or_default());
        let records: Vec<&[u8]> = idx.chunks_exact(INDEX_RECORD as usize).collect();
        let (Some(first_rec), Some(last_rec)) = (records.first(), records.last()) else {
            return Ok(Vec::new());
        };
        let start = field(first_rec, 0);
        let end = field(last_rec, 0) + field(last_rec, 8);
        let data = self.read(&f.data, start, end.saturating_sub(start), "segment list")?;
        let key = format!("{plan_id} segment list");
        records
            .iter()
            .map(|r| {
                let (at, len) = ((field(r, 0) - start) as usize, field(r, 8) as usize);
                let bytes = data.get(at..at + len).ok_or_else(|| LedgerError::Decode {
                    key: key.clone(),
                    reason: format!("entry at {at} (+{len}) is outside the page"),
                })?;
                decode_segment(key.as_bytes(), bytes)
            })
            .collect()
    }

    /// The end offset of entry `n` (binary search for a resume point).
    pub fn end_offset(&self, plan_id: &str, n: u64) -> Result<i64, LedgerError> {
        let f = self.files(plan_id)?;
        let rec = self.read(&f.index, n * INDEX_RECORD, INDEX_RECORD, "segment index")?;
        Ok(i64::from_le_bytes(
            rec[16..24].try_into().unwrap_or_default(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_ids_map_to_distinct_safe_names() {
        assert_eq!(stem("b-1_2.x"), "b-1_2.x");
        assert_eq!(stem("a/b"), "a%2fb");
        assert_ne!(stem("a/b"), stem("a%2fb"));
        assert!(!stem("../../etc").contains('/'));
    }
}

//! A segment object's CRC computed while the object is read, chunk by chunk as its bytes
//! arrive, instead of in a second pass over the whole object once it is in memory.
//!
//! Why: that second pass read 12–27 MB back from main memory before the first record could
//! be decoded (15 % of decoding time in `perf`, bound by memory bandwidth). A chunk hashed
//! right after it was read is still in the CPU cache. The CRC is still known before any
//! piece of the object is decoded, so nothing of a damaged object is ever produced.

use crate::segment::FOOTER_LEN;
use bytes::Bytes;

/// Bytes read (and hashed) at a time: well inside a core's L2 cache.
pub const READ_CHUNK: usize = 256 << 10;

/// The most memory reserved up front for an object from the length its store announces;
/// a longer object grows its buffer as its bytes really arrive.
pub const MAX_PREALLOCATED: usize = 1 << 30;

/// A whole object and the CRC32 of every byte before its 8-byte footer, which is what the
/// footer's stored CRC covers.
#[derive(Debug, Clone)]
pub struct CheckedObject {
    pub bytes: Bytes,
    pub crc_before_footer: u32,
}

/// Hashes an object's bytes as they arrive, stopping at the footer of an object of the
/// length the store announced.
pub struct RunningCrc {
    hasher: crc32fast::Hasher,
    hashed: usize,
    stop: usize,
}

impl RunningCrc {
    pub fn new(expected_len: usize) -> Self {
        Self {
            hasher: crc32fast::Hasher::new(),
            hashed: 0,
            stop: expected_len.saturating_sub(FOOTER_LEN),
        }
    }

    /// Hashes what arrived since the last call; `so_far` is every byte read yet.
    pub fn update(&mut self, so_far: &[u8]) {
        let end = so_far.len().min(self.stop);
        if end > self.hashed {
            self.hasher.update(&so_far[self.hashed..end]);
            self.hashed = end;
        }
    }

    /// The object's CRC. If the object did not have the announced length (it changed while
    /// it was read), the running hash covered the wrong bytes and the whole object is hashed
    /// again.
    pub fn finish(self, all: Bytes) -> CheckedObject {
        let crc_before_footer = if all.len() == self.stop + FOOTER_LEN && self.hashed == self.stop {
            self.hasher.finalize()
        } else {
            crc32fast::hash(&all[..all.len().saturating_sub(FOOTER_LEN)])
        };
        CheckedObject {
            bytes: all,
            crc_before_footer,
        }
    }
}

/// Reads a whole local file and its CRC: mapped into memory where it can be, else copied
/// in chunks, hashing each chunk as it is read.
///
/// Why map it: copying a 12 MB object out of the page cache into a buffer that is not in the
/// CPU cache was a quarter of the decoding time (`perf`: the kernel's copy and its cache
/// misses), where `zstd -d` reads into a small buffer that stays in cache. A mapping is read
/// where the page cache already holds it: decode + filter went from ~0.75x to ~0.9x `zstd -d`.
pub fn read_file_checked(path: &std::path::Path) -> std::io::Result<CheckedObject> {
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    match map_checked(&file, len) {
        Some(object) => Ok(object),
        None => copy_checked(file, len),
    }
}

/// The file mapped and every page of it read in up front, or None to read it by copying.
///
/// A mapped page that cannot be read later (the file truncated or rewritten in place while
/// it is mapped, or a disk that fails to read it once the page was evicted) is not an error
/// the program can handle: the kernel kills the process with SIGBUS (see [`crate::bus_error`]
/// for the message it then prints). So the mapping is only used once `MADV_POPULATE_READ`
/// has read every page in without error; any failure there (a disk error, a file shorter than
/// its length said, a kernel older than 5.14, a file system that cannot map) reads the file
/// by copying instead, which reports a read error as one. Backup objects are never changed
/// in place (they are written whole under a temporary name and renamed), so what is left is a
/// process changing the backup directory's files during a restore.
fn map_checked(file: &std::fs::File, len: usize) -> Option<CheckedObject> {
    if len == 0 {
        return None;
    }
    // SAFETY: the mapping is read-only, owned by the returned object alone, and its pages
    // are all read in without error just below before any of them is looked at. The hazard
    // left (another process truncating the file while it is mapped) ends the process with
    // SIGBUS on the next read of a page past the new end; see the doc comment above.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }.ok()?;
    map.advise(memmap2::Advice::PopulateRead).ok()?;
    let mut crc = RunningCrc::new(len);
    crc.update(&map);
    Some(crc.finish(Bytes::from_owner(map)))
}

/// Reads a whole file in chunks, hashing each chunk as it is read.
fn copy_checked(mut file: std::fs::File, len: usize) -> std::io::Result<CheckedObject> {
    use std::io::Read;
    let mut buf = crate::decompress::take_buffer_with(len.min(MAX_PREALLOCATED));
    let mut crc = RunningCrc::new(len);
    loop {
        let n = (&mut file).take(READ_CHUNK as u64).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        crc.update(&buf);
    }
    Ok(crc.finish(Bytes::from(buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 300) as u8).collect()
    }

    #[test]
    fn the_running_crc_is_the_crc_of_everything_before_the_footer_in_any_chunking() {
        for len in [0, 3, FOOTER_LEN, FOOTER_LEN + 1, 1000, 3 * READ_CHUNK + 5] {
            let all = object(len);
            let want = crc32fast::hash(&all[..len.saturating_sub(FOOTER_LEN)]);
            for chunk in [1, 7, 4096, READ_CHUNK] {
                let mut crc = RunningCrc::new(len);
                let mut end = 0;
                while end < len {
                    end = (end + chunk).min(len);
                    crc.update(&all[..end]);
                }
                let got = crc.finish(Bytes::from(all.clone()));
                assert_eq!(got.crc_before_footer, want, "len {len}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn an_object_of_another_length_than_announced_is_hashed_whole_again() {
        let all = object(5000);
        let want = crc32fast::hash(&all[..5000 - FOOTER_LEN]);
        for announced in [0, 100, 4999, 5001, 9000] {
            let mut crc = RunningCrc::new(announced);
            crc.update(&all);
            assert_eq!(crc.finish(Bytes::from(all.clone())).crc_before_footer, want);
        }
    }

    #[test]
    fn a_file_read_mapped_or_copied_has_the_crc_of_its_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("seg");
        for len in [0, 5, FOOTER_LEN, 2 * READ_CHUNK + 123] {
            let all = object(len);
            std::fs::write(&path, &all).expect("write");
            let want = crc32fast::hash(&all[..len.saturating_sub(FOOTER_LEN)]);
            let read = read_file_checked(&path).expect("read");
            let file = std::fs::File::open(&path).expect("open");
            let copied = copy_checked(file, len).expect("copy");
            for got in [read, copied] {
                assert_eq!(&got.bytes[..], &all[..], "len {len}");
                assert_eq!(got.crc_before_footer, want, "len {len}");
            }
        }
    }

    #[test]
    fn a_mapped_file_stays_readable_after_it_is_replaced_by_rename() {
        // How object stores (and `backup`) replace a file: the mapping keeps the old inode.
        let dir = tempfile::tempdir().expect("dir");
        let (path, next) = (dir.path().join("seg"), dir.path().join("seg.tmp"));
        let all = object(3 * READ_CHUNK);
        std::fs::write(&path, &all).expect("write");
        let got = read_file_checked(&path).expect("read");
        std::fs::write(&next, b"other").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(&got.bytes[..], &all[..]);
    }

    #[test]
    fn a_missing_file_is_a_not_found_error() {
        let dir = tempfile::tempdir().expect("dir");
        let err = read_file_checked(&dir.path().join("gone")).expect_err("missing");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}

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
    /// For an object read through a memory mapping: its file, to tell whether the bytes
    /// still are the ones the CRC covered (see [`MappedFrom`]).
    pub mapped_from: Option<std::sync::Arc<MappedFrom>>,
}

/// The file a mapped object was read from, and its size and modification time from before
/// its CRC was computed.
///
/// Why: a mapping shows the file as it is when a page is read, not as it was when it was
/// hashed. A copying read decodes the very bytes it checked; a mapped object is looked at
/// again before each piece of it is handed on, and a file changed in place since (a write
/// updates the modification time before it changes the page) ends the read with
/// [`crate::segment::SegmentError::ChangedWhileRead`], which a restore retries from a fresh
/// read. On kernels before 6.13 (coarse timestamps) a write within the same clock tick as
/// the first look, that keeps the size, can go unseen.
#[derive(Debug)]
pub struct MappedFrom {
    file: std::fs::File,
    stamp: FileStamp,
}

type FileStamp = (u64, i64, i64);

impl MappedFrom {
    fn stamp(file: &std::fs::File) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = file.metadata().ok()?;
        Some((m.len(), m.mtime(), m.mtime_nsec()))
    }

    /// Whether the file still has the size and modification time it had before it was hashed.
    pub fn unchanged(&self) -> bool {
        Self::stamp(&self.file) == Some(self.stamp)
    }
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
            mapped_from: None,
        }
    }
}

/// Reads a whole local file and its CRC: mapped into memory where it can be, else copied
/// in chunks, hashing each chunk as it is read.
///
/// Why map it: copying a 12 MB object out of the page cache into a buffer that is not in the
/// CPU cache was a quarter of the decoding time (`perf` on an Intel Xeon: the kernel's copy
/// and its cache misses), where `zstd -d` reads into a small buffer that stays in cache. A
/// mapping is read where the page cache already holds it (bench/HISTORY.md).
pub fn read_file_checked(path: &std::path::Path) -> std::io::Result<CheckedObject> {
    let file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    match map_checked(&file, len) {
        Some(object) => Ok(object),
        None => copy_checked(file, len),
    }
}

/// The length and CRC32 of a whole local file: a manifest checked against the index file
/// made from it. Read where the page cache holds it when it can be mapped (under the rules
/// of [`map_checked`], and only if the file was not changed while it was hashed), else
/// copied through a small buffer that stays in the CPU cache.
///
/// Why: at 10,000 segments the manifest is 3.3 MB, decoded beside its index file on a
/// 2-core machine; copying it out of the page cache into a fresh 256 KB buffer made the
/// checksum, not the decode, the longest step of a dry run (~3.4 ms against ~3.3). Files
/// over [`MAP_AT_MOST`] are copied: beside the decode of that many segments the copy is
/// small, and a mapping would count the whole file in the process's resident size.
pub fn file_len_and_crc(path: &std::path::Path) -> std::io::Result<(u64, u32)> {
    len_and_crc(path, MAP_AT_MOST)
}

/// The largest file [`file_len_and_crc`] maps (a manifest of ~200,000 segments).
pub const MAP_AT_MOST: u64 = 64 << 20;

fn len_and_crc(path: &std::path::Path, map_at_most: u64) -> std::io::Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    #[cfg(target_os = "linux")]
    {
        let len = file.metadata()?.len();
        if let Some((map, from)) = usize::try_from(len)
            .ok()
            .filter(|_| len <= map_at_most)
            .and_then(|l| map_populated(&file, 0, l))
        {
            let crc = crc32fast::hash(&map);
            if from.unchanged() {
                return Ok((len, crc));
            }
        }
    }
    let (mut crc, mut len) = (crc32fast::Hasher::new(), 0u64);
    let mut buf = vec![0u8; SMALL_CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((len, crc.finalize())),
            Ok(n) => {
                crc.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A copying read's buffer when nothing keeps the bytes: small enough to stay in L1/L2.
const SMALL_CHUNK: usize = 64 << 10;

/// The file mapped and every page of it read in up front, or None to read it by copying.
///
/// A mapped page that cannot be read when it is touched is not an error a read call could
/// return: the kernel ends the process with SIGBUS (see [`crate::bus_error`] for the message
/// it then prints). Hence: only files on local disk file systems are mapped (on NFS, SMB or
/// FUSE a page evicted and read again later may fail to come back); the mapping is used only
/// once `MADV_POPULATE_READ` has read every page in without error; and any failure on the
/// way (a disk error, a file shorter than its length said, a kernel older than 5.14, a file
/// system that cannot map) reads the file by copying instead, which reports a read error as
/// one.
///
/// What the mapping asks of others: that nobody changes the file in place while a restore
/// reads it. Backups never do (segments are written whole under a temporary name and
/// renamed, which leaves a mapping of the old file intact). A file truncated meanwhile ends
/// the process with SIGBUS; one overwritten in place is noticed by [`MappedFrom`] before
/// the next piece of it is handed on.
#[cfg(target_os = "linux")]
pub(crate) fn map_checked(file: &std::fs::File, len: usize) -> Option<CheckedObject> {
    let (map, from) = map_populated(file, 0, len)?;
    let mut crc = RunningCrc::new(len);
    crc.update(&map);
    let mut object = crc.finish(Bytes::from_owner(map));
    object.mapped_from = Some(from);
    Some(object)
}

/// `len` bytes of a file from `offset` (a multiple of the page size) mapped, every page read
/// in up front, with the file they still come from; None to read them by copying instead,
/// under the rules [`map_checked`] gives (for whole objects and seek-index frames alike).
#[cfg(target_os = "linux")]
pub(crate) fn map_populated(
    file: &std::fs::File,
    offset: u64,
    len: usize,
) -> Option<(memmap2::Mmap, std::sync::Arc<MappedFrom>)> {
    if len == 0 || !on_local_disk(file) {
        return None;
    }
    let stamp = MappedFrom::stamp(file)?;
    // SAFETY: the mapping is read-only and lives as long as the bytes made of it; all its
    // pages are read in without error before any of them is looked at. memmap2's contract
    // (the file is not changed while mapped) is what a backup's segments promise; the doc
    // comment of `map_checked` says what happens when another process breaks it.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }
    .ok()?;
    map.advise(memmap2::Advice::PopulateRead).ok()?;
    let file = file.try_clone().ok()?;
    Some((map, std::sync::Arc::new(MappedFrom { file, stamp })))
}

/// Elsewhere files are read by copying.
#[cfg(not(target_os = "linux"))]
pub(crate) fn map_checked(_file: &std::fs::File, _len: usize) -> Option<CheckedObject> {
    None
}

/// Whether `file` lives on a local disk (or memory) file system, whose pages come back from
/// the device or stay in memory: ext2/3/4, XFS, Btrfs, ZFS, F2FS, tmpfs, and overlayfs (a
/// container's root file system, over one of those).
#[cfg(target_os = "linux")]
fn on_local_disk(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    const LOCAL: [u32; 8] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // XFS
        0x9123_683E, // Btrfs
        0x2FC1_2FC1, // ZFS
        0xF2F5_2010, // F2FS
        0x0102_1994, // tmpfs
        0x794C_7630, // overlayfs
        0x8584_58F6, // ramfs
    ];
    // SAFETY: fstatfs only writes the struct it is given, for a descriptor this file owns.
    let f_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        if libc::fstatfs(file.as_raw_fd(), &mut st) != 0 {
            return false;
        }
        st.f_type
    };
    // File system magic numbers are 32-bit; `f_type`'s width and sign vary by target.
    LOCAL.contains(&(f_type as u32))
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
    fn a_files_length_and_crc_are_the_same_mapped_or_copied() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, 3 * SMALL_CHUNK + 17] {
            let all = object(len);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &all).expect("write");
            let want = (len as u64, crc32fast::hash(&all));
            assert_eq!(len_and_crc(&path, u64::MAX).expect("mapped"), want);
            assert_eq!(len_and_crc(&path, 0).expect("copied"), want);
        }
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
    fn a_file_on_a_local_disk_is_mapped_with_the_crc_of_its_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("seg");
        let all = object(3 * READ_CHUNK + 17);
        std::fs::write(&path, &all).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        let Some(mapped) = map_checked(&file, all.len()) else {
            eprintln!("not mapped here (file system or kernel): only the copying read is tested");
            return;
        };
        assert_eq!(&mapped.bytes[..], &all[..]);
        assert_eq!(
            mapped.crc_before_footer,
            crc32fast::hash(&all[..all.len() - FOOTER_LEN])
        );
        // A length longer than the file: the pages past its end cannot be read in, so the
        // file is not mapped (and the copying read reports what it finds).
        assert!(map_checked(&file, all.len() + 8192).is_none());
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

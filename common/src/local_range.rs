//! A byte range of a local object (the seek-index frames a windowed or resumed restore
//! starts from) read through a memory mapping instead of copied into a fresh buffer.
//!
//! Why: a timestamp seek reads one frame of about 4 MB before its first record. Copied, that
//! frame cost a zero-filled buffer faulted in page by page and a copy out of the page cache,
//! together about half of the seek's time on a 2-core Intel Xeon (`perf` of `kb-bench
//! seek`). Mapped, the frame is read where the page cache already holds it, as whole
//! objects already are (see [`crate::read_crc::read_file_checked`]), under the same rules:
//! local disk file systems only, every page read in without error before any is looked at,
//! and the file's stamp kept to notice a change in place.

use crate::read_crc::MappedFrom;
use bytes::Bytes;
use std::sync::Arc;

/// Bytes of an object's range, and for a mapped range the file they still come from.
#[derive(Debug, Clone)]
pub struct RangeBytes {
    pub bytes: Bytes,
    /// Looked at again before each decoded piece is handed on, as for whole mapped objects.
    pub mapped_from: Option<Arc<MappedFrom>>,
}

impl From<Bytes> for RangeBytes {
    fn from(bytes: Bytes) -> Self {
        Self {
            bytes,
            mapped_from: None,
        }
    }
}

/// Reads `range` of a local file: mapped where it can be, else copied. A range that is not
/// inside the file (it comes from a manifest, which is never trusted with an allocation) is
/// an `UnexpectedEof` error naming it.
pub fn read_file_range(
    path: &std::path::Path,
    range: std::ops::Range<u64>,
) -> std::io::Result<RangeBytes> {
    let file = std::fs::File::open(path)?;
    let file_len = file.metadata()?.len();
    if range.start > range.end || range.end > file_len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("bytes {range:?} are not inside the object ({file_len} bytes)"),
        ));
    }
    if let Some(mapped) = map_range(&file, &range) {
        return Ok(mapped);
    }
    copy_range(file, range).map(|b| Bytes::from(b).into())
}

/// The range mapped, its pages read in up front, or None to copy it instead (see
/// [`crate::read_crc::map_populated`]).
#[cfg(target_os = "linux")]
fn map_range(file: &std::fs::File, range: &std::ops::Range<u64>) -> Option<RangeBytes> {
    if range.is_empty() {
        return None;
    }
    // SAFETY: sysconf only reads a system constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    // A mapping starts at a page boundary: map from the one before the range, then skip.
    let start = range.start - range.start % page.max(1);
    let skip = usize::try_from(range.start - start).ok()?;
    let len = usize::try_from(range.end - start).ok()?;
    let (map, from) = crate::read_crc::map_populated(file, start, len)?;
    Some(RangeBytes {
        bytes: Bytes::from_owner(map).slice(skip..),
        mapped_from: Some(from),
    })
}

#[cfg(not(target_os = "linux"))]
fn map_range(_file: &std::fs::File, _range: &std::ops::Range<u64>) -> Option<RangeBytes> {
    None
}

fn copy_range(mut file: std::fs::File, range: std::ops::Range<u64>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek};
    file.seek(std::io::SeekFrom::Start(range.start))?;
    let mut buf = vec![0; (range.end - range.start) as usize];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("object");
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + i / 4096) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        (dir, path, data)
    }

    #[test]
    fn any_range_reads_exactly_its_bytes_whatever_its_alignment() {
        let (_dir, path, data) = file_of(3 * 4096 + 123);
        let len = data.len() as u64;
        for range in [
            0..1,
            0..len,
            1..4096,
            4095..4097,
            4096..8192,
            5000..len,
            len..len,
        ] {
            let got = read_file_range(&path, range.clone()).expect("read");
            assert_eq!(
                &got.bytes[..],
                &data[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_range_on_local_disk_is_mapped_and_a_change_in_place_is_noticed() {
        let (_dir, path, data) = file_of(2 * 4096);
        let got = read_file_range(&path, 100..5000).expect("read");
        let Some(from) = got.mapped_from else {
            // The temporary directory is not on a file system that is mapped (e.g. NFS).
            return;
        };
        assert!(from.unchanged());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut changed = data;
        changed[200] ^= 0xFF;
        std::fs::write(&path, &changed).expect("rewrite");
        assert!(!from.unchanged());
    }

    #[test]
    fn a_range_outside_the_file_is_refused_before_anything_is_allocated() {
        let (_dir, path, _) = file_of(1000);
        for range in [
            0..1001,
            999..u64::MAX,
            std::ops::Range { start: 10, end: 5 },
        ] {
            let err = read_file_range(&path, range).expect_err("outside");
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        }
    }
}

//! Decompressing a segment's record region into a reused buffer.
//!
//! Decoding used to run at well under half the speed of `zstd -d` on the same bodies: each
//! segment was decompressed through the streaming reader into a fresh `Vec` that grew by
//! doubling, so a 20 MB region was copied several times (memmove) and every page of every
//! new buffer was faulted in and cleared by the kernel. Here the region is decompressed in
//! one call straight into a buffer of exactly the right size (the size every zstd frame
//! written by `backup` records in its header), and the buffers of dropped segments are kept
//! for the next one, so steady-state decoding touches no new memory.
//!
//! Frames without a recorded size (streaming writers such as other backup tools) are
//! decompressed by the streaming reader into a reused buffer instead.

use std::io::Read;
use std::sync::Mutex;

/// Idle buffers kept for reuse: enough for the pieces of a few partitions decoding at once
/// (see `pieces.rs`) and the compressed objects they are read into (`read_crc.rs`; a fresh
/// buffer per object was faulted in page by page). Bounded in bytes too, because idle
/// buffers still count towards the process's memory.
const POOL_BUFFERS: usize = 16;
/// Total capacity of the idle buffers; a buffer that would exceed it is freed instead.
const POOL_BYTES: usize = 64 << 20;
/// Largest region decompressed in one call into a buffer reserved up front. A frame header
/// can claim any size; past this the region is decompressed by the streaming reader, which
/// grows the buffer only as real output arrives.
const MAX_PRESIZED: u64 = 1 << 30;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Idle streaming decompression contexts. A context allocates its window (megabytes) on
/// first use; a new one per segment paid for those pages again every time.
static CONTEXTS: Mutex<Vec<zstd::zstd_safe::DCtx<'static>>> = Mutex::new(Vec::new());
const POOL_CONTEXTS: usize = 8;

/// A streaming decompression context, fresh or reused.
pub fn take_context() -> zstd::zstd_safe::DCtx<'static> {
    CONTEXTS
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_else(zstd::zstd_safe::DCtx::create)
}

/// Hands a context back once its stream is done (or abandoned: the reset drops any frame
/// still in progress).
pub fn recycle_context(mut dctx: zstd::zstd_safe::DCtx<'static>) {
    if dctx
        .reset(zstd::zstd_safe::ResetDirective::SessionOnly)
        .is_err()
    {
        return;
    }
    if let Ok(mut pool) = CONTEXTS.lock() {
        if pool.len() < POOL_CONTEXTS {
            pool.push(dctx);
        }
    }
}

/// Why a zstd body could not be decompressed (the caller names the object).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecompressError(String);

impl DecompressError {
    pub fn from_code(code: usize) -> Self {
        Self(zstd::zstd_safe::get_error_name(code).to_string())
    }
}

/// Decompresses a body of one or more concatenated zstd frames.
pub fn zstd_region(body: &[u8]) -> Result<Vec<u8>, DecompressError> {
    let mut out = take_buffer();
    let result = match declared_size(body) {
        Some(size) if size <= MAX_PRESIZED => presized(body, size, &mut out),
        _ => streaming(body, &mut out),
    };
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            recycle(out);
            Err(e)
        }
    }
}

/// Hands a region's buffer back for the next decompression.
pub fn recycle(mut buf: Vec<u8>) {
    buf.clear();
    if buf.capacity() == 0 {
        return;
    }
    let Ok(mut pool) = POOL.lock() else { return };
    let idle: usize = pool.iter().map(Vec::capacity).sum();
    if pool.len() < POOL_BUFFERS && idle + buf.capacity() <= POOL_BYTES {
        pool.push(buf);
    }
}

fn take_buffer() -> Vec<u8> {
    POOL.lock()
        .ok()
        .and_then(|mut pool| {
            // The largest idle buffer: the next region is most likely as large as the last.
            let i = (0..pool.len()).max_by_key(|&i| pool[i].capacity())?;
            Some(pool.swap_remove(i))
        })
        .unwrap_or_default()
}

/// An idle buffer of at least `size` bytes (the smallest such), or a new one.
pub fn take_buffer_with(size: usize) -> Vec<u8> {
    let reused = POOL.lock().ok().and_then(|mut pool| {
        let i = (0..pool.len())
            .filter(|&i| pool[i].capacity() >= size)
            .min_by_key(|&i| pool[i].capacity())?;
        Some(pool.swap_remove(i))
    });
    reused.unwrap_or_else(|| Vec::with_capacity(size))
}

/// The sum of the content sizes of every frame in `body`, when each frame records one.
fn declared_size(mut body: &[u8]) -> Option<u64> {
    let mut total = 0u64;
    while !body.is_empty() {
        let size = zstd::zstd_safe::get_frame_content_size(body).ok()??;
        let frame_len = zstd::zstd_safe::find_frame_compressed_size(body).ok()?;
        total = total.checked_add(size)?;
        body = body.get(frame_len..)?;
        if frame_len == 0 {
            return None;
        }
    }
    Some(total)
}

fn presized(body: &[u8], size: u64, out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let size = usize::try_from(size).map_err(|_| DecompressError("region too large".into()))?;
    out.reserve_exact(size);
    let written = DCTX.with(|d| {
        let mut d = d.borrow_mut();
        d.decompress(out, body)
    });
    match written {
        Ok(n) if n == size => Ok(()),
        Ok(n) => Err(DecompressError(format!(
            "the zstd frames declare {size} bytes but hold {n}"
        ))),
        Err(code) => Err(DecompressError(
            zstd::zstd_safe::get_error_name(code).to_string(),
        )),
    }
}

fn streaming(body: &[u8], out: &mut Vec<u8>) -> Result<(), DecompressError> {
    let mut reader =
        zstd::stream::read::Decoder::new(body).map_err(|e| DecompressError(e.to_string()))?;
    reader
        .read_to_end(out)
        .map(|_| ())
        .map_err(|e| DecompressError(e.to_string()))
}

thread_local! {
    /// One decompression context per thread, reused: creating one allocates its tables.
    static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8 ^ (i / 1000) as u8).collect()
    }

    #[test]
    fn concatenated_frames_decompress_in_one_call() {
        let (a, b) = (sample(100_000), sample(7_000));
        let mut body = zstd::bulk::compress(&a, 3).unwrap();
        body.extend(zstd::bulk::compress(&b, 3).unwrap());
        assert_eq!(declared_size(&body), Some(107_000));
        let out = zstd_region(&body).unwrap();
        assert_eq!(out, [a, b].concat());
        recycle(out);
    }

    #[test]
    fn frames_without_a_size_stream() {
        let a = sample(300_000);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &a).unwrap();
        let body = enc.finish().unwrap();
        assert_eq!(declared_size(&body), None);
        assert_eq!(zstd_region(&body).unwrap(), a);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let body = zstd::bulk::compress(&sample(50_000), 3).unwrap();
        for cut in [1, body.len() / 2, body.len() - 1] {
            assert!(zstd_region(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = body.clone();
        lying.extend_from_slice(&[0x28, 0xb5, 0x2f, 0xfd]);
        assert!(zstd_region(&lying).is_err());
    }
}

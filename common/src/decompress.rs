//! zstd decompression of segment bodies and frames into reused buffers.
//!
//! Decoding is the CPU cost of a restore. Profiles of the first decoder (a fresh `Vec` per
//! segment, grown while the stream decoded) spent about as long in `memmove` (each growth
//! copies what was decoded so far) and in page faults and page zeroing (a new multi-MiB
//! allocation per segment) as in zstd itself. Here a body whose frames declare their size
//! (every segment this tool writes) is decompressed in one call into a buffer of exactly that
//! size, taken from a small pool of buffers that decoded segments return when dropped, with a
//! decompression context kept per thread.

use std::cell::RefCell;
use std::sync::Mutex;

/// Buffers kept for reuse: the restore pipeline holds about two decoded segments per task.
const POOLED_BUFFERS: usize = 8;
/// A buffer larger than this is not kept (a foreign backup's huge single-frame segment).
const POOLED_MAX_BYTES: usize = 64 << 20;
/// A declared size above this is not trusted for one up-front allocation; such a body is
/// decoded as a stream, growing only as real output appears.
const EXACT_MAX_BYTES: u64 = 512 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

thread_local! {
    static CONTEXT: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// An empty buffer with room for at least `capacity` bytes, reused when one is pooled.
pub fn take_buffer(capacity: usize) -> Vec<u8> {
    let pooled = POOL.lock().ok().and_then(|mut pool| {
        let best = pool
            .iter()
            .enumerate()
            .max_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i)?;
        Some(pool.swap_remove(best))
    });
    let mut buf = pooled.unwrap_or_default();
    buf.clear();
    buf.reserve(capacity);
    buf
}

/// Hands a buffer back for reuse (dropped if the pool is full or it is too large to keep).
pub fn give_buffer(buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > POOLED_MAX_BYTES {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < POOLED_BUFFERS {
            pool.push(buf);
        }
    }
}

/// Decompresses one or more concatenated zstd frames. The error is zstd's, for the caller to
/// name the object it came from.
pub fn zstd_frames(body: &[u8]) -> std::io::Result<Vec<u8>> {
    if let Some(size) = declared_size(body).filter(|&n| n <= EXACT_MAX_BYTES) {
        let mut out = take_buffer(size as usize);
        match with_context(|ctx| ctx.decompress_to_buffer(body, &mut out)) {
            Ok(written) if written as u64 == size => return Ok(out),
            // Frames that do not hold what they declare are damaged; the stream decoder
            // below gives the definitive answer and error.
            _ => give_buffer(out),
        }
    }
    // No declared size (a streaming writer's frames), or one too large to trust.
    let mut out = take_buffer(body.len().saturating_mul(4));
    match zstd::stream::copy_decode(body, &mut out) {
        Ok(()) => Ok(out),
        Err(e) => {
            give_buffer(out);
            Err(e)
        }
    }
}

/// The total size the frames of `body` declare, if every frame declares one.
fn declared_size(body: &[u8]) -> Option<u64> {
    let (mut pos, mut total) = (0usize, 0u64);
    while pos < body.len() {
        let rest = &body[pos..];
        total = total.checked_add(zstd::zstd_safe::get_frame_content_size(rest).ok()??)?;
        pos += zstd::zstd_safe::find_frame_compressed_size(rest)
            .ok()?
            .max(1);
    }
    Some(total)
}

fn with_context<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ctx = match slot.as_mut() {
            Some(ctx) => ctx,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        f(ctx)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &[u8]) -> Vec<u8> {
        zstd::bulk::compress(data, 3).expect("compress")
    }

    #[test]
    fn several_frames_decode_to_their_concatenation() {
        let (a, b) = (vec![7u8; 100_000], b"second frame".repeat(1000));
        let mut body = frame(&a);
        body.extend_from_slice(&frame(&b));
        assert_eq!(declared_size(&body), Some(100_000 + 12_000));
        let out = zstd_frames(&body).expect("decode");
        assert_eq!(out, [a, b].concat());
        give_buffer(out);
        // Again, on a pooled buffer.
        assert_eq!(zstd_frames(&frame(b"x")).expect("decode"), b"x");
    }

    #[test]
    fn a_frame_without_a_declared_size_decodes_as_a_stream() {
        let data = b"streamed".repeat(10_000);
        let mut body = Vec::new();
        let mut enc = zstd::stream::Encoder::new(&mut body, 3).expect("encoder");
        std::io::Write::write_all(&mut enc, &data).expect("write");
        enc.finish().expect("finish");
        assert_eq!(
            declared_size(&body),
            None,
            "a streaming encoder declares no size"
        );
        assert_eq!(zstd_frames(&body).expect("decode"), data);
    }

    #[test]
    fn damaged_frames_are_errors_not_panics() {
        let mut body = frame(&vec![1u8; 50_000]);
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
        body.truncate(body.len() - 3);
        assert!(zstd_frames(&body).is_err());
        assert!(zstd_frames(b"not zstd at all").is_err());
    }
}

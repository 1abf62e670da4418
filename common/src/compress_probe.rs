//! Whether a segment is worth compressing, judged from a sample before the whole is.
//!
//! Values that are already compressed or encrypted by their producers (common where records
//! carry personal data) do not shrink: zstd at level 3 spends about three times the CPU of
//! everything else a backup does on them (bench/HISTORY.md) to save a few percent of
//! storage. As file systems do (ZFS keeps a block uncompressed unless compression saves at
//! least an eighth of it), a segment whose sample saves less than the backup's
//! `--min-compression-savings` is stored uncompressed (format compression 0, defined beside
//! zstd and lz4). The sample is a few slices spread over the segment,
//! compressed at the backup's own level, so it costs about 1 % of compressing the whole.

/// Bytes taken from each of the start, the middle and the end of a segment's records.
pub const SLICE_BYTES: usize = 64 << 10;

/// Percent of a segment's size compression must save for it to be stored compressed, by
/// default: ZFS's rule (an eighth).
pub const DEFAULT_MIN_SAVINGS_PERCENT: f64 = 12.5;

/// Fills `sample` (cleared first) with the slices of `region` that stand for it: the whole
/// region when it is no larger than three slices.
pub fn sample_into(region: &[u8], sample: &mut Vec<u8>) {
    sample.clear();
    if region.len() <= 3 * SLICE_BYTES {
        sample.extend_from_slice(region);
        return;
    }
    let middle = region.len() / 2 - SLICE_BYTES / 2;
    for start in [0, middle, region.len() - SLICE_BYTES] {
        sample.extend_from_slice(&region[start..start + SLICE_BYTES]);
    }
}

/// Whether compressing `original` bytes into `compressed` bytes saves at least
/// `min_savings_percent` of them. An empty input is never worth compressing.
pub fn saves_enough(original: usize, compressed: usize, min_savings_percent: f64) -> bool {
    if original == 0 {
        return false;
    }
    let saved = original.saturating_sub(compressed) as f64 * 100.0 / original as f64;
    saved >= min_savings_percent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_region_is_its_own_sample() {
        let region: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut sample = vec![9; 5];
        sample_into(&region, &mut sample);
        assert_eq!(sample, region);
    }

    #[test]
    fn a_large_region_is_sampled_at_start_middle_and_end() {
        let region: Vec<u8> = (0..(1u32 << 20)).map(|i| (i / 4096) as u8).collect();
        let mut sample = Vec::new();
        sample_into(&region, &mut sample);
        assert_eq!(sample.len(), 3 * SLICE_BYTES);
        assert_eq!(&sample[..SLICE_BYTES], &region[..SLICE_BYTES]);
        let mid = region.len() / 2 - SLICE_BYTES / 2;
        assert_eq!(
            &sample[SLICE_BYTES..2 * SLICE_BYTES],
            &region[mid..mid + SLICE_BYTES]
        );
        assert_eq!(
            &sample[2 * SLICE_BYTES..],
            &region[region.len() - SLICE_BYTES..]
        );
    }

    #[test]
    fn savings_are_compared_in_percent() {
        assert!(saves_enough(1000, 875, 12.5));
        assert!(!saves_enough(1000, 876, 12.5));
        assert!(!saves_enough(1000, 1010, 0.5));
        assert!(saves_enough(1000, 1000, 0.0));
        assert!(!saves_enough(0, 0, 0.0));
        assert!(!saves_enough(1000, 0, 100.1));
    }
}

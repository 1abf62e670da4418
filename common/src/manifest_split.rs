//! Reading a manifest file on two cores.
//!
//! Parsing the manifest is most of a dry run's time and the first step of every plan, and a
//! pull parser is sequential. Most of the text is segment objects, and in the compact JSON
//! that `backup` writes each of them begins with the bytes `{"key":"`. In valid JSON those
//! bytes only ever start an object whose first member is `"key"` (inside a string the quote
//! after `{` would end the string, and `key` cannot follow a string). So a second thread can
//! start in the middle of the text, find the next such object and parse segment lists from
//! there, without knowing what came before.
//!
//! The reader from the start stays the authority: it takes a list the helper parsed only
//! when it arrives itself at exactly that list's first element, inside a segments array. From
//! there the helper parsed exactly what it would have (the same code, the same text), so the
//! result is the same as reading alone. Whatever the helper parsed elsewhere (an object of
//! another kind that happens to start with "key", a pretty-printed manifest where the bytes
//! never occur) is dropped, and if the helper meets an error it stops: the reader from the
//! start then parses on alone and reports the error where it is.

use crate::json_pull::{JsonPull, PullError};
use crate::manifest_index::{read_index, read_index_helped, read_segment, ManifestIndex};
use crate::manifest_index::{SegmentSpan, Sieve};
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

/// Below this size one thread reads the manifest (about 3,000 segments): starting a second
/// one and its share of the text would cost about as much as it saves.
const HELPED_MIN_BYTES: u64 = 1 << 20;

/// How every segment object in a manifest that `backup` wrote begins.
const SEGMENT_START: &[u8] = br#"{"key":""#;

/// The rest of one segments array, parsed by the helper.
pub(crate) struct ParsedRun {
    /// Where its first element (`{`) starts in the text.
    start: u64,
    /// Just past the array's `]`.
    pub(crate) end: u64,
    /// The elements the sieve keeps, in order.
    pub(crate) segments: Vec<SegmentSpan>,
}

/// The reader-from-the-start's end of the helper thread.
pub(crate) struct Helper {
    /// Where the helper started: no list it parsed starts before this.
    from: u64,
    runs: mpsc::Receiver<ParsedRun>,
    /// The first list received that starts beyond where the reader is.
    next: Option<ParsedRun>,
    finished: bool,
    /// Lists taken (the measure of whether the helper helped).
    taken: usize,
}

impl Helper {
    /// The rest of the segments array whose element starts at text position `at`, if the
    /// helper parsed it from there. Waits for the helper while it may still parse one that
    /// starts at `at` or before.
    pub(crate) fn run_at(&mut self, at: u64) -> Option<ParsedRun> {
        if self.finished || at < self.from {
            return None;
        }
        loop {
            let run = match self.next.take() {
                Some(run) => run,
                None => match self.runs.recv() {
                    Ok(run) => run,
                    Err(_) => {
                        self.finished = true;
                        return None;
                    }
                },
            };
            if run.start == at {
                self.taken += 1;
                return Some(run);
            }
            if run.start > at {
                self.next = Some(run);
                return None;
            }
            // It starts where the reader has been without being at a segment element there:
            // not a segment list.
        }
    }
}

/// Reads a manifest file as `read_index` does, on two threads when it is large enough.
pub fn read_index_of_file(file: &File, sieve: &Sieve) -> Result<ManifestIndex, PullError> {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < HELPED_MIN_BYTES || sieve.skip_segments {
        return read_index(file, sieve);
    }
    read_index_split(file, sieve, len / 2)
}

#[cfg(unix)]
fn read_index_split(file: &File, sieve: &Sieve, split: u64) -> Result<ManifestIndex, PullError> {
    let (read, taken) = read_helped_from(file, sieve, split);
    tracing::debug!(split, lists_taken = taken, "manifest read on two threads");
    read
}

/// Reads with a helper that starts at `split`; also says how many lists it took from it.
#[cfg(unix)]
fn read_helped_from(
    file: &File,
    sieve: &Sieve,
    split: u64,
) -> (Result<ManifestIndex, PullError>, usize) {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (tx, runs) = mpsc::channel();
        let stop = &stop;
        let helper_thread = std::thread::Builder::new()
            .name("manifest-helper".into())
            .spawn_scoped(scope, move || {
                let src = FileFrom { file, at: split };
                parse_runs(JsonPull::starting_at(src, split), sieve, &tx, stop);
            });
        if let Err(e) = helper_thread {
            // Without a helper, the channel is closed and the reader simply reads alone.
            tracing::debug!("manifest helper thread not started: {e}");
        }
        let mut helper = Helper {
            from: split,
            runs,
            next: None,
            finished: false,
            taken: 0,
        };
        let read = read_index_helped(file, sieve, Some(&mut helper));
        // Done (or failed): whatever the helper is still parsing is not needed.
        stop.store(true, Ordering::Relaxed);
        (read, helper.taken)
    })
}

/// Positioned reads are what lets two threads share the file; elsewhere one thread reads.
#[cfg(not(unix))]
fn read_index_split(file: &File, sieve: &Sieve, _split: u64) -> Result<ManifestIndex, PullError> {
    read_index(file, sieve)
}

/// On the helper thread: parses every segments array from the first segment object found
/// on, sending each as soon as it is complete. Stops at the end of the text, at the first
/// error, or when told to.
fn parse_runs<R: std::io::Read>(
    mut p: JsonPull<R>,
    sieve: &Sieve,
    runs: &mpsc::Sender<ParsedRun>,
    stop: &AtomicBool,
) {
    let mut frames = Vec::new();
    while let Ok(true) = p.find(SEGMENT_START) {
        let start = p.offset();
        p.enter_array();
        let mut segments = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match p.next_element() {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => return,
            }
            match read_segment(&mut p, sieve, &mut frames) {
                Ok(Some(s)) => segments.push(s),
                Ok(None) => {}
                Err(_) => return,
            }
        }
        let end = p.offset();
        if runs
            .send(ParsedRun {
                start,
                end,
                segments,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Reads a file from a position on with positioned reads, leaving the file's own cursor to
/// the reader from the start (both read the same open file, so the same text).
#[cfg(unix)]
struct FileFrom<'a> {
    file: &'a File,
    at: u64,
}

#[cfg(unix)]
impl std::io::Read for FileFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    /// A manifest of `partitions` partitions of `per` segments each in two topics, compact
    /// as `backup` writes it, with `extra` as the value of an unknown member of the first
    /// topic (where look-alikes of segment objects are planted).
    fn manifest_text(partitions: i32, per: i64, extra: &str) -> String {
        let mut parts = Vec::new();
        for p in 0..partitions {
            let segs: Vec<String> = (0..per)
                .map(|i| {
                    format!(
                        r#"{{"key":"t/{p}/{i:08}.seg","start_offset":{s},"end_offset":{e},"start_timestamp":{ts},"end_timestamp":{te},"record_count":10,"uncompressed_size":1000,"compressed_size":900,"min_timestamp":{ts},"max_timestamp":{te},"frames":[{{"position":16,"compressed_len":884,"first_offset":{s},"last_offset":{e},"record_count":10,"min_timestamp":{ts},"max_timestamp":{te},"crc32":7}}]}}"#,
                        s = i * 10,
                        e = i * 10 + 9,
                        ts = 1_700_000_000_000 + i * 100,
                        te = 1_700_000_000_000 + i * 100 + 90,
                    )
                })
                .collect();
            parts.push(format!(
                r#"{{"partition_id":{p},"segments":[{}]}}"#,
                segs.join(",")
            ));
        }
        format!(
            r#"{{"backup_id":"b","created_at":1,"topics":[{{"name":"t","extra":{extra},"partitions":[{}]}},{{"name":"u","partitions":[{}]}}]}}"#,
            parts.join(","),
            parts.join(",")
        )
    }

    /// A file holding `text`, its cursor at the start (as a file just opened).
    fn file_of(text: &str) -> File {
        let mut f = tempfile::tempfile().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f.seek(SeekFrom::Start(0)).expect("seek");
        f
    }

    fn read_at_split(text: &str, split: u64, sieve: &Sieve) -> Result<ManifestIndex, PullError> {
        read_at_split_counted(text, split, sieve).0
    }

    fn read_at_split_counted(
        text: &str,
        split: u64,
        sieve: &Sieve,
    ) -> (Result<ManifestIndex, PullError>, usize) {
        read_helped_from(&file_of(text), sieve, split)
    }

    #[test]
    fn every_split_point_reads_what_one_thread_reads() {
        let text = manifest_text(2, 6, r#""{\"key\":\"x\"}""#);
        let alone = read_index(text.as_bytes(), &Sieve::default()).expect("alone");
        let window = Sieve::window(Some(1_700_000_001_050), Some(1_700_000_002_000));
        let alone_windowed = read_index(text.as_bytes(), &window).expect("alone");
        // Every byte as the split point: inside keys, numbers, strings, between lists.
        let mut helped = 0;
        for split in 0..text.len() as u64 {
            let (split_read, taken) = read_at_split_counted(&text, split, &Sieve::default());
            assert_eq!(split_read.expect("split"), alone, "split at {split}");
            helped += usize::from(taken > 0);
        }
        // Every split up to the last segment of the last list leaves the helper a list.
        let last = text.rfind(r#"{"key":""#).expect("a segment") as u64;
        assert_eq!(helped as u64, last + 1);
        for split in (0..text.len() as u64).step_by(13) {
            let split_read = read_at_split(&text, split, &window).expect("split");
            assert_eq!(split_read, alone_windowed, "windowed split at {split}");
        }
    }

    #[test]
    fn look_alikes_of_segment_lists_elsewhere_are_not_taken_for_them() {
        // An unknown member holding an array of objects that start with "key", one of them a
        // complete segment: the helper parses it as a list, the reader skips the member and
        // never takes it.
        let look_alike = r#"[{"key":"a"},{"key":"t/0/x","start_offset":0,"end_offset":9,"start_timestamp":1,"end_timestamp":2,"record_count":10}]"#;
        let text = manifest_text(2, 20, look_alike);
        let alone = read_index(text.as_bytes(), &Sieve::default()).expect("alone");
        for split in (0..text.len() as u64).step_by(7) {
            let split_read = read_at_split(&text, split, &Sieve::default()).expect("split");
            assert_eq!(split_read, alone, "split at {split}");
        }
    }

    #[test]
    fn an_error_in_the_helpers_half_is_reported_as_reading_alone_reports_it() {
        let text = manifest_text(2, 30, r#""v""#);
        // Damage a segment near the end: drop a required field's value.
        let at = text.rfind(r#""end_offset":"#).expect("field");
        let broken = format!("{}\"end_offsex\":{}", &text[..at], &text[at + 13..]);
        let alone = read_index(broken.as_bytes(), &Sieve::default())
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert!(alone.is_err());
        for split in (0..broken.len() as u64).step_by(11) {
            let split_read = read_at_split(&broken, split, &Sieve::default())
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(split_read, alone, "split at {split}");
        }
    }

    #[test]
    fn a_large_file_is_read_on_two_threads_with_the_same_result() {
        let text = manifest_text(4, 1200, r#""v""#);
        assert!(text.len() as u64 >= HELPED_MIN_BYTES);
        let f = file_of(&text);
        let read = read_index_of_file(&f, &Sieve::default()).expect("read");
        assert_eq!(
            read,
            read_index(text.as_bytes(), &Sieve::default()).expect("alone")
        );
        // Split in the middle: the helper parsed the lists of the second topic (and the rest
        // of the list the split falls in, if it falls in one).
        let (_, taken) = read_at_split_counted(&text, text.len() as u64 / 2, &Sieve::default());
        assert!((4..=5).contains(&taken), "{taken} lists taken");
    }
}

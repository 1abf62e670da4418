//! Writing command output to stdout without `println!`'s panic when the reader has gone.
//!
//! `kafka-backup show-offset-mapping | head` closes the pipe after ten lines; `println!`
//! then panics with a backtrace hint, which reads like a crash. A command-line tool is
//! expected to stop quietly instead, as one killed by SIGPIPE would: we keep SIGPIPE ignored
//! (Rust's default) because librdkafka's TLS writes to brokers must not kill the process.

use std::io::Write;

/// Exit status of a tool that stopped because its output pipe closed (128 + SIGPIPE), what
/// a shell with `pipefail` sees from any Unix tool in the same place.
const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes one line to stdout. When the reader has closed the pipe the process ends quietly
/// (nothing more can be shown to anyone); any other write error (a full disk behind a
/// redirect) ends it with the error named, rather than a report that looks complete.
pub fn write_line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        eprintln!("error: writing the output to stdout failed: {e}");
        std::process::exit(2);
    }
}

/// `println!` for command output: see [`write_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write_line(format_args!($($arg)*))
    };
}

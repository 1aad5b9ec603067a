//! Standard output for what the commands print. Every print goes through [`stdout`], never
//! `println!` (which panics when the reader has gone: `lsq-webhooks tenants list | head -1`).
//! A write that finds the reader gone fails with the usual `BrokenPipe` error, which ends
//! the command as any error does, and marks the process so that `cli::run` then exits
//! quietly with [`READER_GONE`] instead of reporting it (see docs/decisions.md for why not
//! SIGPIPE's default action).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// The exit code when standard output's reader went away: 128 + SIGPIPE, what a shell
/// reports for a program that SIGPIPE ended. The output was cut short, which is neither
/// success nor a failure of ours.
pub const READER_GONE: u8 = 141;

/// Set by the first write to standard output that found the reader gone. A flag rather
/// than an error type: the error reaches `cli::run` through csv and serde_json writers that
/// keep only its kind, and a broken pipe elsewhere (a Redis connection) must not count.
static GONE: AtomicBool = AtomicBool::new(false);

/// Standard output, for commands to write their results to.
pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

/// Whether a write to standard output found the reader gone.
pub fn reader_gone() -> bool {
    GONE.load(Ordering::Relaxed)
}

/// Standard output that marks a broken pipe (see the module header).
pub struct Stdout(io::Stdout);

impl Stdout {
    fn mark<T>(result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            GONE.store(true, Ordering::Relaxed);
        }
        result
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Self::mark(self.0.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Self::mark(self.0.write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Self::mark(self.0.flush())
    }
}

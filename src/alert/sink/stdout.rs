//! JSON Lines on standard output, one alert per line.
//!
//! Invariant: lines are written whole and flushed whenever the queue runs empty, so a consumer
//! piping apitap's output sees each alert promptly and never half a line.

use std::io::{self, Write};

use super::{LineTarget, SinkCounters};

/// Any writer as a line target; the pipeline uses locked, buffered standard output.
pub struct LineWriter<W: Write>(pub W);

impl<W: Write> LineTarget for LineWriter<W> {
    fn write_line(&mut self, line: &[u8], _counters: &SinkCounters) -> io::Result<()> {
        self.0.write_all(line)?;
        self.0.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

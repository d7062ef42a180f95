//! JSON Lines file sink with size-based rotation.
//!
//! Invariants: the active file is `path`; rotated files are `path.1` (newest) to
//! `path.<max_files - 1>` (oldest), and at most `max_files` files exist. A line is never split
//! across files: rotation happens before a line that would push the active file past
//! `max_file_bytes`, so a file exceeds the limit only when one line alone does. Lines are
//! handed to the OS whenever the queue runs empty, and synced at rotation and shutdown.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{LineTarget, SinkCounters};
use crate::alert::config::FileSinkConfig;

/// The active file of a file sink and the rotation state.
pub struct RotatingFile {
    path: PathBuf,
    max_file_bytes: u64,
    max_files: u32,
    /// `None` after a failed reopen; the next write tries again.
    file: Option<BufWriter<File>>,
    len: u64,
}

impl RotatingFile {
    /// Opens `cfg.path` for appending, creating it (not its directory) if missing.
    pub fn open(cfg: &FileSinkConfig) -> io::Result<RotatingFile> {
        let mut f = RotatingFile {
            path: cfg.path.clone(),
            max_file_bytes: cfg.max_file_bytes,
            max_files: cfg.max_files.max(1),
            file: None,
            len: 0,
        };
        f.reopen()?;
        Ok(f)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = file.metadata()?.len();
        self.file = Some(BufWriter::new(file));
        Ok(())
    }

    /// `path.<n>`.
    pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
            f.get_ref().sync_all()?;
        }
        if self.max_files == 1 {
            fs::remove_file(&self.path)?;
        } else {
            // Shift .1 → .2 … ; renaming onto the oldest replaces (deletes) it.
            for n in (1..self.max_files - 1).rev() {
                match fs::rename(
                    Self::rotated_path(&self.path, n),
                    Self::rotated_path(&self.path, n + 1),
                ) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&self.path, Self::rotated_path(&self.path, 1))?;
        }
        self.reopen()
    }
}

impl LineTarget for RotatingFile {
    fn write_line(&mut self, line: &[u8], counters: &SinkCounters) -> io::Result<()> {
        let bytes = line.len() as u64 + 1;
        if self.file.is_some() && self.len > 0 && self.len + bytes > self.max_file_bytes {
            match self.rotate() {
                Ok(()) => {
                    counters.rotations.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    // Keep the alert: write it to whatever file can be (re)opened, past the
                    // size limit, rather than lose it to a rotation problem.
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    super::log_warn(
                        "Alert file rotation failed; appending past max_file_bytes.",
                        &[("path", &self.path.display()), ("error", &e)],
                    );
                }
            }
        }
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("file sink has no open file"));
        };
        f.write_all(line)?;
        f.write_all(b"\n")?;
        self.len += bytes;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => {
                f.flush()?;
                f.get_ref().sync_all()
            }
            None => Ok(()),
        }
    }
}

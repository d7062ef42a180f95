//! The sinks: where alerts leave apitap. Local sinks (JSON Lines file, stdout) write each alert
//! as one line; network sinks (webhook, Alertmanager) spool each alert durably, then deliver
//! batches over HTTP(S) with retries.
//!
//! Invariants: every sink owns one [`SinkCounters`], written only by its own task (and by
//! `submit` for the queue counters), read by anyone through atomics; counter names here are the
//! names the metrics layer exports. A sink never panics on I/O failure: failures are counted,
//! logged with a back-off on repetition, and the sink keeps going.

pub mod alertmanager;
pub mod file;
pub mod network;
pub mod stdout;
pub mod webhook;

use std::fmt::{self, Display};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Alert;

/// The type of a sink; with the sink's name it labels metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SinkKind {
    /// JSON Lines file with rotation.
    File,
    /// JSON Lines on standard output.
    Stdout,
    /// Generic signed HTTP webhook.
    Webhook,
    /// Prometheus Alertmanager v2 API.
    Alertmanager,
}

impl SinkKind {
    /// snake_case name for metric labels and spool directories.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::Webhook => "webhook",
            SinkKind::Alertmanager => "alertmanager",
        }
    }
}

impl Display for SinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters and gauges of one sink. Counters only grow; gauges are current values.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Alerts written (file, stdout) or acknowledged with a 2xx by the receiver (network).
    pub delivered: AtomicU64,
    /// Delivery attempts that repeated an earlier failed attempt.
    pub retries: AtomicU64,
    /// Failed attempts: write errors, connection errors, timeouts, non-2xx responses.
    pub failures: AtomicU64,
    /// Alerts the receiver refused as malformed (400, 413, 422 on a single alert), dropped.
    pub rejected: AtomicU64,
    /// Alerts waiting in the sink's in-memory queue (gauge).
    pub queue_depth: AtomicU64,
    /// Alerts dropped because the sink's queue was full (the newest is dropped).
    pub queue_drops: AtomicU64,
    /// Bytes of spool files on disk (gauge; network sinks).
    pub spool_bytes: AtomicU64,
    /// Alerts spooled and not yet acknowledged (gauge; network sinks).
    pub spool_pending: AtomicU64,
    /// Undelivered alerts dropped because the spool was full (the oldest are dropped).
    pub spool_drops: AtomicU64,
    /// Corrupt or truncated spool records detected and skipped.
    pub spool_corrupt_records: AtomicU64,
    /// Alerts larger than `spool.max_record_bytes`, dropped.
    pub oversize_drops: AtomicU64,
    /// Output files rotated (file sink).
    pub rotations: AtomicU64,
}

impl SinkCounters {
    /// A plain copy, for reports and tests.
    pub fn snapshot(&self) -> SinkCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SinkCountersSnapshot {
            delivered: get(&self.delivered),
            retries: get(&self.retries),
            failures: get(&self.failures),
            rejected: get(&self.rejected),
            queue_depth: get(&self.queue_depth),
            queue_drops: get(&self.queue_drops),
            spool_bytes: get(&self.spool_bytes),
            spool_pending: get(&self.spool_pending),
            spool_drops: get(&self.spool_drops),
            spool_corrupt_records: get(&self.spool_corrupt_records),
            oversize_drops: get(&self.oversize_drops),
            rotations: get(&self.rotations),
        }
    }

    /// Copies spool statistics into the gauges and counters (the spool is their only writer).
    pub(crate) fn publish_spool(&self, s: &super::spool::SpoolStats) {
        self.spool_bytes.store(s.bytes, Ordering::Relaxed);
        self.spool_pending.store(s.pending, Ordering::Relaxed);
        self.spool_drops.store(s.dropped, Ordering::Relaxed);
        self.spool_corrupt_records
            .store(s.corrupt_records + s.corrupt_acks, Ordering::Relaxed);
    }

    /// Counts a failure and says whether to log it: the 1st, 2nd, 4th, 8th, … in a row, so a
    /// receiver down for hours does not flood the log.
    pub(crate) fn failure_should_log(&self, consecutive: &mut u64) -> bool {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *consecutive += 1;
        consecutive.is_power_of_two()
    }
}

/// [`SinkCounters`] as plain numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCountersSnapshot {
    pub delivered: u64,
    pub retries: u64,
    pub failures: u64,
    pub rejected: u64,
    pub queue_depth: u64,
    pub queue_drops: u64,
    pub spool_bytes: u64,
    pub spool_pending: u64,
    pub spool_drops: u64,
    pub spool_corrupt_records: u64,
    pub oversize_drops: u64,
    pub rotations: u64,
}

/// A sink's identity and counters, as the metrics layer sees it.
#[derive(Clone, Debug)]
pub struct SinkStats {
    pub kind: SinkKind,
    /// `file`, `stdout`, or the configured name of a network sink.
    pub name: String,
    pub counters: Arc<SinkCounters>,
}

/// One structured warning line on stderr: `level=warn msg="…" key=value …`.
///
/// The alert sinks have no logger of their own yet; the daemon may redirect stderr.
pub(crate) fn log_warn(msg: &str, fields: &[(&str, &dyn Display)]) {
    let mut line = format!("level=warn msg={msg:?}");
    for (key, value) in fields {
        let v = value.to_string();
        if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
            line.push_str(&format!(" {key}={v:?}"));
        } else {
            line.push_str(&format!(" {key}={v}"));
        }
    }
    eprintln!("{line}");
}

/// Where a local sink writes lines. Implementations add the newline themselves.
pub(crate) trait LineTarget {
    /// Writes one JSON line (without its newline), rotating first if needed.
    fn write_line(&mut self, line: &[u8], counters: &SinkCounters) -> io::Result<()>;
    /// Hands buffered lines to the OS; called whenever the queue runs empty.
    fn flush(&mut self) -> io::Result<()>;
    /// Puts everything on stable storage; called at shutdown.
    fn sync(&mut self) -> io::Result<()>;
}

/// The loop of a local sink, run on a blocking thread of the alert runtime: write each queued
/// alert as a line, flush when the queue runs empty, sync when the queue closes.
pub(crate) fn run_line_sink<T: LineTarget>(
    mut target: T,
    mut rx: mpsc::Receiver<Arc<Alert>>,
    counters: Arc<SinkCounters>,
    name: &str,
) {
    let mut consecutive = 0u64;
    let mut line = Vec::new();
    let fail = |what: &str, e: &dyn Display, consecutive: &mut u64| {
        if counters.failure_should_log(consecutive) {
            log_warn(
                "Alert sink write failed; the alert is lost for this sink.",
                &[
                    ("sink", &name),
                    ("step", &what),
                    ("failures", consecutive),
                    ("error", e),
                ],
            );
        }
    };
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(alert) = next.take() {
            counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
            line.clear();
            match serde_json::to_writer(&mut line, &*alert) {
                Ok(()) => match target.write_line(&line, &counters) {
                    Ok(()) => {
                        consecutive = 0;
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => fail("write", &e, &mut consecutive),
                },
                Err(e) => fail("encode", &e, &mut consecutive),
            }
            next = rx.try_recv().ok();
        }
        if let Err(e) = target.flush() {
            fail("flush", &e, &mut consecutive);
        }
    }
    if let Err(e) = target.flush().and_then(|()| target.sync()) {
        fail("sync", &e, &mut consecutive);
    }
}

//! The dispatcher: fans each submitted alert out to every configured sink.
//!
//! Topology: [`AlertPipeline::new`] starts a small tokio runtime of its own (two worker threads
//! named `apitap-alert`) so detectors stay plain threads and the pipeline needs nothing from its
//! caller. Each sink has one bounded queue (`max_queued_alerts`) and one task: local sinks run
//! on the runtime's blocking pool, network sinks as async tasks (spool I/O on the blocking pool).
//!
//! Invariants:
//! - [`AlertPipeline::submit`] never blocks and never waits for I/O. A full queue drops the
//!   *newest* alert for that sink only, counted in `queue_drops`: blocking would stall packet
//!   processing, and one slow sink must not starve the others.
//! - [`AlertPipeline::shutdown`] closes the queues; local sinks drain and fsync; network sinks
//!   spool what was queued, then deliver for at most `shutdown_grace_secs`; what is left stays
//!   in the spool for the next start. It is safe to call from any thread, async or not.

use std::io::BufWriter;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{ConfigError, SinksConfig};
use super::sink::alertmanager::Alertmanager;
use super::sink::file::RotatingFile;
use super::sink::network::{build_client, Format, NetworkSink};
use super::sink::stdout::LineWriter;
use super::sink::webhook::Webhook;
use super::sink::{
    log_warn, run_line_sink, SinkCounters, SinkCountersSnapshot, SinkKind, SinkStats,
};
use super::spool::Spool;
use super::{Alert, AlertError};

/// Time beyond the grace period that shutdown waits for tasks to finish their last local I/O
/// (draining queues to disk, the final spool fsync) before giving up on them.
const SHUTDOWN_LOCAL_IO_SECS: u64 = 5;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid alert sink settings: {}", join(.0))]
    Config(Vec<ConfigError>),
    #[error("{sink}: {reason}")]
    Start { sink: String, reason: String },
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why [`AlertPipeline::submit`] refused an alert.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("invalid alert: {0}")]
    Invalid(#[from] AlertError),
}

/// What happened to one submitted alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Submitted {
    /// Sinks that queued it.
    pub queued: usize,
    /// Sinks whose queue was full (or whose task had ended): dropped there and counted.
    pub dropped: usize,
}

/// Pipeline-wide counters.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Alerts accepted by `submit` (valid).
    pub submitted: AtomicU64,
    /// Alerts refused by `submit` because [`Alert::validate`] failed.
    pub invalid: AtomicU64,
}

/// Final state of each sink after shutdown.
#[derive(Clone, Debug)]
pub struct ShutdownReport {
    pub sinks: Vec<(SinkKind, String, SinkCountersSnapshot)>,
    /// Sinks whose task had not finished when shutdown stopped waiting.
    pub unfinished: usize,
}

struct SinkSlot {
    tx: Option<mpsc::Sender<Arc<Alert>>>,
    task: Option<JoinHandle<()>>,
}

/// Handle of a running alert pipeline. Dropping it shuts the pipeline down like
/// [`AlertPipeline::shutdown`], without the report.
pub struct AlertPipeline {
    runtime: Option<tokio::runtime::Runtime>,
    slots: Vec<SinkSlot>,
    stats: Vec<SinkStats>,
    counters: Arc<PipelineCounters>,
    grace: Duration,
}

impl AlertPipeline {
    /// Validates `cfg`, opens files and spools, and starts one task per sink.
    pub fn new(cfg: &SinksConfig) -> Result<AlertPipeline, PipelineError> {
        cfg.validate().map_err(PipelineError::Config)?;
        // reqwest is built without a default crypto provider; ring is the one we ship. A
        // provider installed earlier by someone else is fine too, hence the ignored result.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .thread_name("apitap-alert")
            .enable_all()
            .build()
            .map_err(|e| PipelineError::Start {
                sink: "runtime".into(),
                reason: e.to_string(),
            })?;
        // Spawn through a handle and park the runtime in the pipeline at once: if a later sink
        // fails to start, dropping the pipeline shuts down what already runs, safely even when
        // `new` was called from async code.
        let rt = runtime.handle().clone();
        let mut pipeline = AlertPipeline {
            runtime: Some(runtime),
            slots: Vec::new(),
            stats: Vec::new(),
            counters: Arc::default(),
            grace: Duration::from_secs(cfg.shutdown_grace_secs),
        };
        let start_err = |sink: String, reason: String| PipelineError::Start { sink, reason };

        if let Some(fc) = &cfg.file {
            let target = RotatingFile::open(fc)
                .map_err(|e| start_err(format!("file {}", fc.path.display()), e.to_string()))?;
            let (tx, rx) = mpsc::channel(cfg.max_queued_alerts);
            let counters = pipeline.add_stats(SinkKind::File, "file");
            let task = rt.spawn_blocking(move || run_line_sink(target, rx, counters, "file"));
            pipeline.slots.push(SinkSlot {
                tx: Some(tx),
                task: Some(task),
            });
        }
        if cfg.stdout {
            let (tx, rx) = mpsc::channel(cfg.max_queued_alerts);
            let counters = pipeline.add_stats(SinkKind::Stdout, "stdout");
            let target = LineWriter(BufWriter::new(std::io::stdout()));
            let task = rt.spawn_blocking(move || run_line_sink(target, rx, counters, "stdout"));
            pipeline.slots.push(SinkSlot {
                tx: Some(tx),
                task: Some(task),
            });
        }
        let mut network: Vec<(SinkKind, &str, Box<dyn Format>, reqwest::Client, _)> = Vec::new();
        for w in &cfg.webhook {
            let what = || format!("webhook {}", w.name);
            let format =
                Webhook::new(&w.url, w.secret.as_deref()).map_err(|e| start_err(what(), e))?;
            let client = build_client(&w.delivery(), w.ca_file.as_deref())
                .map_err(|e| start_err(what(), e))?;
            network.push((
                SinkKind::Webhook,
                &w.name,
                Box::new(format),
                client,
                w.delivery(),
            ));
        }
        for a in &cfg.alertmanager {
            let what = || format!("alertmanager {}", a.name);
            let format = Alertmanager::new(&a.url, a.resolve_timeout_secs, a.generator_url.clone())
                .map_err(|e| start_err(what(), e))?;
            let client = build_client(&a.delivery(), a.ca_file.as_deref())
                .map_err(|e| start_err(what(), e))?;
            network.push((
                SinkKind::Alertmanager,
                &a.name,
                Box::new(format),
                client,
                a.delivery(),
            ));
        }
        for (kind, name, format, client, delivery) in network {
            let dir = cfg.spool_dir.join(format!("{}-{name}", kind.name()));
            let spool = Spool::open(&dir, &cfg.spool).map_err(|e| {
                start_err(
                    format!("{kind} {name}"),
                    format!("spool {}: {e}", dir.display()),
                )
            })?;
            let counters = pipeline.add_stats(kind, name);
            // Published now, not when the task first runs, so what recovery found (pending,
            // corrupt records) is visible as soon as `new` returns.
            counters.publish_spool(&spool.stats());
            let sink = NetworkSink {
                name: format!("{kind}-{name}"),
                format,
                client,
                delivery,
                grace: pipeline.grace,
                counters,
            };
            let (tx, rx) = mpsc::channel(cfg.max_queued_alerts);
            let task = rt.spawn(sink.run(spool, rx));
            pipeline.slots.push(SinkSlot {
                tx: Some(tx),
                task: Some(task),
            });
        }
        Ok(pipeline)
    }

    fn add_stats(&mut self, kind: SinkKind, name: &str) -> Arc<SinkCounters> {
        let counters = Arc::new(SinkCounters::default());
        self.stats.push(SinkStats {
            kind,
            name: name.to_string(),
            counters: counters.clone(),
        });
        counters
    }

    /// Validates `alert` and queues it for every sink, without blocking.
    pub fn submit(&self, alert: Alert) -> Result<Submitted, SubmitError> {
        if let Err(e) = alert.validate() {
            self.counters.invalid.fetch_add(1, Ordering::Relaxed);
            return Err(e.into());
        }
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let alert = Arc::new(alert);
        let mut out = Submitted::default();
        for (slot, stats) in self.slots.iter().zip(&self.stats) {
            let Some(tx) = &slot.tx else { continue };
            let c = &stats.counters;
            // Counted before sending so the task's decrement can never run first.
            c.queue_depth.fetch_add(1, Ordering::Relaxed);
            match tx.try_send(alert.clone()) {
                Ok(()) => out.queued += 1,
                Err(_) => {
                    c.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    let drops = c.queue_drops.fetch_add(1, Ordering::Relaxed) + 1;
                    out.dropped += 1;
                    if drops.is_power_of_two() {
                        log_warn(
                            "Alert sink queue full; dropped the newest alert.",
                            &[
                                ("sink", &format!("{}-{}", stats.kind, stats.name)),
                                ("queue_drops", &drops),
                            ],
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every sink's identity and live counters, for the metrics layer.
    pub fn sinks(&self) -> &[SinkStats] {
        &self.stats
    }

    /// Submitted and invalid alert counts.
    pub fn counters(&self) -> &Arc<PipelineCounters> {
        &self.counters
    }

    /// Flushes and stops every sink; see the module documentation for the guarantees.
    pub fn shutdown(mut self) -> ShutdownReport {
        let unfinished = self.stop();
        ShutdownReport {
            sinks: self
                .stats
                .iter()
                .map(|s| (s.kind, s.name.clone(), s.counters.snapshot()))
                .collect(),
            unfinished,
        }
    }

    /// Closes the queues and waits for the tasks. Returns how many did not finish in time.
    fn stop(&mut self) -> usize {
        let Some(runtime) = self.runtime.take() else {
            return 0;
        };
        for slot in &mut self.slots {
            slot.tx = None;
        }
        let tasks: Vec<JoinHandle<()>> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.task.take())
            .collect();
        let wait = self.grace + Duration::from_secs(SHUTDOWN_LOCAL_IO_SECS);
        // A thread of its own, because blocking on (and dropping) a runtime is not allowed
        // from inside another runtime's async context, where a daemon may well call us.
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                let unfinished = runtime.block_on(async move {
                    let deadline = tokio::time::Instant::now() + wait;
                    let mut unfinished = 0;
                    for task in tasks {
                        if tokio::time::timeout_at(deadline, task).await.is_err() {
                            unfinished += 1;
                        }
                    }
                    unfinished
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
                unfinished
            });
            handle.join().unwrap_or(0)
        })
    }
}

impl Drop for AlertPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::sample;
    use crate::common::Timestamp;

    /// A sink whose task is stalled: its queue fills, further alerts are dropped (the newest),
    /// counted, and `submit` returns at once every time.
    #[test]
    fn full_queue_drops_newest_and_counts() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut p = AlertPipeline {
            runtime: None,
            slots: vec![SinkSlot {
                tx: Some(tx),
                task: None,
            }],
            stats: Vec::new(),
            counters: Arc::default(),
            grace: Duration::ZERO,
        };
        let counters = p.add_stats(SinkKind::Stdout, "stdout");
        let base = Timestamp::from_secs_nanos(1_700_000_000, 0);
        let outcomes: Vec<Submitted> = (0..5).map(|i| p.submit(sample(i, base)).unwrap()).collect();
        let queued: Vec<usize> = outcomes.iter().map(|o| o.queued).collect();
        assert_eq!(queued, [1, 1, 0, 0, 0]);
        let c = counters.snapshot();
        assert_eq!((c.queue_depth, c.queue_drops), (2, 3));
        // What is queued is the oldest two: the newest were the ones dropped.
        assert_eq!(rx.try_recv().unwrap().id, sample(0, base).id);
        assert_eq!(rx.try_recv().unwrap().id, sample(1, base).id);
        assert_eq!(p.counters().submitted.load(Ordering::Relaxed), 5);
    }
}

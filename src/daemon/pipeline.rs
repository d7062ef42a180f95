//! The threads of `apitap run` and the bounded channels between them.
//!
//! ```text
//!             free pool (all batches; never full)
//!        ┌──────────────────────────────────────────────┐
//!        ▼                                              │
//!   capture ──batches──▶ worker 0 ─┐                    │
//!   thread  ──batches──▶ worker 1 ─┼──transactions──▶ analysis ──▶ metrics, JSONL log,
//!           ──batches──▶ worker N ─┘                   thread      (learning, detection)
//! ```
//!
//! - The capture thread copies each packet into the open batch of the worker its shard key
//!   picks ([`super::shard`]) and sends the batch when it is full or stale. Each worker has
//!   its own queue of `max_queued_batches`.
//! - Each worker owns one [`Engine`] and publishes its counters every `stats_interval_ms`.
//! - Transactions go to one analysis thread through a queue of `max_queued_transactions`.
//!
//! When a queue is full, live capture never waits (the kernel buffer would overflow instead,
//! losing packets silently): the newest batch or transaction is dropped and counted in
//! `apitap_daemon_channel_drops_total{channel}`. A replay waits, so it is lossless.
//!
//! Shutdown is a drain, in pipeline order: the capture thread stops reading, sends its open
//! batches and drops its queues; each worker empties its queue, flushes every flow
//! (`Engine::finish`), publishes its counters and drops its sender; the analysis thread
//! handles every remaining transaction, lets each analyzer finish (detection closes its
//! incidents and saves the model), flushes its outputs, drops its alert handles and sets
//! `apitap_daemon_pipeline_drained` to 1. The alert sinks are stopped after that, by the
//! daemon (see [`super`]), so alerts raised during the drain are delivered or spooled.

use super::analysis::{AlertOutput, Analyzer};
use super::batch::PacketBatch;
use super::shard;
use crate::capture::{KernelStats, LiveSource, OfflineSource, RawPacket};
use crate::common::Timestamp;
use crate::config::Config;
use crate::engine::Engine;
use crate::telemetry::{EnginePublisher, Metrics};
use crate::transaction::Transaction;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a full queue does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait for room (pcap replay: lossless).
    Block,
    /// Drop the newest item and count it (live capture: never stall the capture).
    DropNewest,
}

/// An opened packet source, moved into the capture thread.
pub enum OpenSource {
    Live(LiveSource),
    Replay {
        source: OfflineSource,
        realtime: bool,
    },
}

impl OpenSource {
    pub fn backpressure(&self) -> Backpressure {
        match self {
            OpenSource::Live(_) => Backpressure::DropNewest,
            OpenSource::Replay { .. } => Backpressure::Block,
        }
    }
}

/// How the pipeline ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Why capture stopped early (an interface read failed), if it did.
    pub capture_error: Option<String>,
    /// Threads that panicked; their share of the work is lost.
    pub panicked: Vec<String>,
}

/// A running pipeline.
pub struct Pipeline {
    stop: Arc<AtomicBool>,
    capturing: Arc<AtomicBool>,
    control: Sender<Config>,
    threads: Vec<(String, JoinHandle<Option<String>>)>,
}

impl Pipeline {
    /// Starts every thread. `workers` is at least 1.
    pub fn start(
        cfg: &Config,
        workers: usize,
        source: OpenSource,
        analyzers: Vec<Box<dyn Analyzer>>,
        alerts: AlertOutput,
        metrics: Metrics,
    ) -> std::io::Result<Pipeline> {
        let workers = workers.max(1);
        let d = &cfg.daemon;
        let policy = source.backpressure();
        let stop = Arc::new(AtomicBool::new(false));
        let capturing = Arc::new(AtomicBool::new(true));
        let stats_every = Duration::from_millis(d.stats_interval_ms);

        // Every batch exists from the start: one open in the capture thread, one being worked
        // on and `max_queued_batches` queued, per worker.
        let total = workers.saturating_mul(d.max_queued_batches.saturating_add(2));
        let (free_tx, free_rx) = bounded::<PacketBatch>(total);
        for _ in 0..total {
            let _ = free_tx.try_send(PacketBatch::new(d.batch_bytes, d.max_batch_packets));
        }
        let (tx_tx, tx_rx) = bounded::<Transaction>(d.max_queued_transactions);
        let (control_tx, control_rx) = bounded::<Config>(4);
        let mut threads = Vec::new();

        let flush_every = Duration::from_millis(cfg.output.flush_interval_ms);
        let m = metrics.clone();
        threads.push((
            "analysis".to_owned(),
            spawn("apitap-analysis", move || {
                analysis(tx_rx, control_rx, analyzers, alerts, flush_every, m);
                None
            })?,
        ));

        let mut queues = Vec::with_capacity(workers);
        for i in 0..workers {
            let (q_tx, q_rx) = bounded::<PacketBatch>(d.max_queued_batches);
            queues.push(q_tx);
            let w = Worker {
                engine: Engine::new(cfg.engine()),
                batches: q_rx,
                free: free_tx.clone(),
                out: tx_tx.clone(),
                policy,
                metrics: metrics.clone(),
                stats_every,
            };
            threads.push((
                format!("worker {i}"),
                spawn(&format!("apitap-worker-{i}"), move || {
                    w.run();
                    None
                })?,
            ));
        }
        // Only workers may hold these: the analysis thread ends when the last worker does.
        drop(tx_tx);
        drop(free_tx);

        let open = (0..workers)
            .map_while(|_| free_rx.try_recv().ok())
            .collect::<Vec<_>>();
        let dispatcher = Dispatcher {
            opened_at: vec![None; open.len()],
            open,
            spare: Vec::new(),
            queues,
            free: free_rx,
            policy,
            with_ports: d.shard_by_ports,
            metrics: metrics.clone(),
            packets: 0,
            bytes: 0,
            dropped: 0,
            broken: false,
        };
        let capture = Capture {
            dispatcher,
            stop: stop.clone(),
            capturing: capturing.clone(),
            batch_timeout: Duration::from_millis(d.batch_timeout_ms),
            stats_every,
            metrics,
        };
        threads.push((
            "capture".to_owned(),
            spawn("apitap-capture", move || capture.run(source))?,
        ));
        Ok(Pipeline {
            stop,
            capturing,
            control: control_tx,
            threads,
        })
    }

    /// Asks the capture thread to stop reading; the rest of the pipeline then drains.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// True while the capture thread reads packets; it turns false as capture ends, before
    /// the rest of the pipeline drains, so readiness never outlives the input.
    pub fn capturing(&self) -> Arc<AtomicBool> {
        self.capturing.clone()
    }

    /// A channel taking reloaded configurations to the analysis stage.
    pub fn control(&self) -> Sender<Config> {
        self.control.clone()
    }

    /// Waits for every thread to end (the drain) and says how it went.
    pub fn join(self) -> Outcome {
        let mut outcome = Outcome::default();
        drop(self.control);
        for (name, handle) in self.threads {
            match handle.join() {
                Ok(Some(error)) => outcome.capture_error = Some(error),
                Ok(None) => {}
                Err(_) => outcome.panicked.push(name),
            }
        }
        outcome
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f)
}

/// The capture thread's side of the batch loop.
struct Dispatcher {
    /// One open batch per worker.
    open: Vec<PacketBatch>,
    /// Wall time of the first packet in each open batch.
    opened_at: Vec<Option<Instant>>,
    /// Batches in hand beyond the open ones (only after an unexpected full queue).
    spare: Vec<PacketBatch>,
    queues: Vec<Sender<PacketBatch>>,
    free: Receiver<PacketBatch>,
    policy: Backpressure,
    with_ports: bool,
    metrics: Metrics,
    /// Counts not yet added to the metrics.
    packets: u64,
    bytes: u64,
    dropped: u64,
    /// A worker is gone: stop capturing.
    broken: bool,
}

impl Dispatcher {
    fn dispatch(&mut self, pkt: &RawPacket<'_>) {
        self.packets += 1;
        self.bytes += pkt.data.len() as u64;
        let w = shard::worker_of(pkt.linktype, pkt.data, self.open.len(), self.with_ports);
        let fits = self.open.get_mut(w).is_some_and(|b| b.push(pkt));
        if !fits {
            self.send(w);
            // An empty batch takes any packet; if sending failed and nothing was freed, the
            // batch was dropped (emptied) and takes it too.
            if let Some(b) = self.open.get_mut(w) {
                b.push(pkt);
            }
        }
        if let (Some(at), Some(b)) = (self.opened_at.get_mut(w), self.open.get(w)) {
            if b.len() == 1 {
                *at = Some(Instant::now());
            }
        }
    }

    /// Sends worker `w`'s open batch and opens a fresh one.
    fn send(&mut self, w: usize) {
        let (Some(open), Some(queue)) = (self.open.get_mut(w), self.queues.get(w)) else {
            return;
        };
        if let Some(at) = self.opened_at.get_mut(w) {
            *at = None;
        }
        if open.is_empty() {
            return;
        }
        let fresh = match self.policy {
            Backpressure::Block => match self.spare.pop() {
                Some(b) => Some(b),
                None => {
                    // Fails only once every worker is gone.
                    let b = self.free.recv().ok();
                    self.broken |= b.is_none();
                    b
                }
            },
            Backpressure::DropNewest if queue.is_full() => None,
            Backpressure::DropNewest => self.spare.pop().or_else(|| self.free.try_recv().ok()),
        };
        let Some(fresh) = fresh else {
            // No room downstream: this batch holds the newest packets, and they are dropped.
            self.dropped += open.len() as u64;
            open.clear();
            return;
        };
        let full = std::mem::replace(open, fresh);
        let sent = match self.policy {
            Backpressure::Block => queue
                .send(full)
                .map_err(|e| TrySendError::Disconnected(e.0)),
            Backpressure::DropNewest => queue.try_send(full),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(mut b)) => {
                // Only this thread fills the queue, so it cannot have filled since the check;
                // handled anyway without losing the buffer.
                self.dropped += b.len() as u64;
                b.clear();
                self.spare.push(b);
            }
            Err(TrySendError::Disconnected(_)) => self.broken = true,
        }
    }

    /// Sends every batch whose first packet waited `timeout` or longer.
    fn send_stale(&mut self, now: Instant, timeout: Duration) {
        for w in 0..self.open.len() {
            let stale = self
                .opened_at
                .get(w)
                .copied()
                .flatten()
                .is_some_and(|at| now.duration_since(at) >= timeout);
            if stale {
                self.send(w);
            }
        }
    }

    fn send_all(&mut self) {
        for w in 0..self.open.len() {
            self.send(w);
        }
    }

    fn publish(&mut self) {
        self.metrics.capture_packets.inc_by(self.packets);
        self.metrics.capture_bytes.inc_by(self.bytes);
        self.metrics.channel_drop("packets", self.dropped);
        self.packets = 0;
        self.bytes = 0;
        self.dropped = 0;
    }
}

/// Sleeps so packets are handed on at the pace they were captured.
struct Pacer {
    start: Option<(Timestamp, Instant)>,
}

impl Pacer {
    /// How long to wait before handing on a packet stamped `ts`.
    fn delay(&mut self, ts: Timestamp, now: Instant) -> Duration {
        let (t0, w0) = *self.start.get_or_insert((ts, now));
        let due = w0 + Duration::from_nanos(ts.saturating_since(t0).as_nanos());
        due.saturating_duration_since(now)
    }
}

/// The capture thread.
struct Capture {
    dispatcher: Dispatcher,
    stop: Arc<AtomicBool>,
    /// Cleared when reading ends, before the workers are told to drain.
    capturing: Arc<AtomicBool>,
    batch_timeout: Duration,
    stats_every: Duration,
    metrics: Metrics,
}

/// How often (in packets) the capture loop looks at the clock.
const CLOCK_EVERY_PACKETS: u32 = 64;

impl Capture {
    /// Runs until the source ends, a stop is requested or a worker is gone; returns the error
    /// that ended a live capture, if any.
    fn run(mut self, source: OpenSource) -> Option<String> {
        let error = match source {
            OpenSource::Live(src) => self.live(src),
            OpenSource::Replay { source, realtime } => {
                self.replay(source, realtime);
                None
            }
        };
        self.capturing.store(false, Ordering::Release);
        self.dispatcher.send_all();
        self.dispatcher.publish();
        if self.dispatcher.broken {
            tracing::error!("A packet worker stopped; capture ended early.");
        }
        tracing::info!("Capture stopped; draining the workers.");
        // Dropping the dispatcher closes the worker queues: the drain starts.
        error
    }

    fn live(&mut self, mut src: LiveSource) -> Option<String> {
        let mut kernel = KernelStats::default();
        let mut last_stats = Instant::now();
        let mut since_clock = 0u32;
        let mut error = None;
        while !self.stop.load(Ordering::Relaxed) && !self.dispatcher.broken {
            let quiet = match src.next_packet() {
                Ok(Some(p)) => {
                    self.dispatcher.dispatch(&p);
                    since_clock += 1;
                    false
                }
                Ok(None) => true,
                Err(e) => {
                    tracing::error!(error = %e, "Capture failed; stopping.");
                    error = Some(e.to_string());
                    break;
                }
            };
            if quiet || since_clock >= CLOCK_EVERY_PACKETS {
                since_clock = 0;
                let now = Instant::now();
                // Only stale batches go: sending on every empty read would make a batch per
                // packet on a quiet link and shrink the queues to a few packets each.
                self.dispatcher.send_stale(now, self.batch_timeout);
                if now.duration_since(last_stats) >= self.stats_every {
                    last_stats = now;
                    self.dispatcher.publish();
                    self.kernel_stats(&mut src, &mut kernel);
                }
            }
        }
        self.kernel_stats(&mut src, &mut kernel);
        error
    }

    /// Adds the kernel's drop counters since the last call.
    fn kernel_stats(&self, src: &mut LiveSource, last: &mut KernelStats) {
        match src.stats() {
            Ok(k) => {
                self.metrics
                    .capture_kernel_drops
                    .inc_by(k.dropped.saturating_sub(last.dropped));
                self.metrics
                    .capture_interface_drops
                    .inc_by(k.if_dropped.saturating_sub(last.if_dropped));
                *last = k;
            }
            Err(e) => tracing::debug!(error = %e, "Kernel capture statistics unavailable."),
        }
    }

    fn replay(&mut self, mut src: OfflineSource, realtime: bool) {
        let mut pacer = Pacer { start: None };
        let mut since_clock = 0u32;
        let mut last_stats = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && !self.dispatcher.broken {
            let Some(p) = src.next_packet() else { break };
            if realtime {
                let wait = pacer.delay(p.ts, Instant::now());
                if !wait.is_zero() {
                    // Hand on what is due before sleeping, so workers see packets on time.
                    self.dispatcher.send_all();
                    if !sleep_unless_stopped(wait, &self.stop) {
                        break;
                    }
                }
            }
            self.dispatcher.dispatch(&p);
            since_clock += 1;
            if since_clock >= CLOCK_EVERY_PACKETS {
                since_clock = 0;
                if last_stats.elapsed() >= self.stats_every {
                    last_stats = Instant::now();
                    self.dispatcher.publish();
                }
            }
        }
        let files = src.stats();
        self.metrics
            .capture_file_errors
            .inc_by(files.truncated_files + files.read_errors);
    }
}

/// Sleeps `d` in short steps; false if a stop was requested meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// One packet worker.
struct Worker {
    engine: Engine,
    batches: Receiver<PacketBatch>,
    free: Sender<PacketBatch>,
    out: Sender<Transaction>,
    policy: Backpressure,
    metrics: Metrics,
    stats_every: Duration,
}

impl Worker {
    fn run(mut self) {
        let mut publisher = EnginePublisher::new();
        let mut txs = Vec::with_capacity(64);
        let mut last_publish = Instant::now();
        let mut dirty = false;
        loop {
            match self.batches.recv_timeout(self.stats_every) {
                Ok(mut batch) => {
                    for p in batch.packets() {
                        self.engine.process(&p, &mut txs);
                    }
                    batch.clear();
                    // The pool holds every batch, so there is always room to give one back.
                    let _ = self.free.try_send(batch);
                    self.forward(&mut txs);
                    dirty = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if dirty && last_publish.elapsed() >= self.stats_every {
                publisher.publish(&self.metrics, &self.engine.stats());
                last_publish = Instant::now();
                dirty = false;
            }
        }
        self.engine.finish(&mut txs);
        self.forward(&mut txs);
        publisher.publish(&self.metrics, &self.engine.stats());
    }

    fn forward(&mut self, txs: &mut Vec<Transaction>) {
        let mut dropped = 0u64;
        for tx in txs.drain(..) {
            let sent = match self.policy {
                Backpressure::Block => self
                    .out
                    .send(tx)
                    .map_err(|e| TrySendError::Disconnected(e.0)),
                Backpressure::DropNewest => self.out.try_send(tx),
            };
            match sent {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => dropped += 1,
                // The analysis stage is gone (it panicked): nothing to hand the rest to.
                Err(TrySendError::Disconnected(_)) => dropped += 1,
            }
        }
        self.metrics.channel_drop("transactions", dropped);
    }
}

/// The analysis thread: every transaction through every analyzer, outputs flushed on a timer.
fn analysis(
    txs: Receiver<Transaction>,
    control: Receiver<Config>,
    mut analyzers: Vec<Box<dyn Analyzer>>,
    alerts: AlertOutput,
    mut flush_every: Duration,
    metrics: Metrics,
) {
    let mut control = Some(control);
    let mut next_flush = Instant::now() + flush_every;
    let never = crossbeam_channel::never::<Config>();
    loop {
        let wait = next_flush.saturating_duration_since(Instant::now());
        let ctl = control.as_ref().unwrap_or(&never);
        crossbeam_channel::select! {
            recv(txs) -> msg => match msg {
                Ok(tx) => {
                    for a in analyzers.iter_mut() {
                        a.on_transaction(&tx);
                    }
                }
                Err(_) => break,
            },
            recv(ctl) -> msg => match msg {
                Ok(cfg) => {
                    flush_every = Duration::from_millis(cfg.output.flush_interval_ms);
                    next_flush = Instant::now() + flush_every;
                    for a in analyzers.iter_mut() {
                        a.reconfigure(&cfg);
                    }
                }
                // No more reloads can come; stop listening rather than spin on the closed
                // channel.
                Err(_) => control = None,
            },
            default(wait) => {}
        }
        if Instant::now() >= next_flush {
            flush(&mut analyzers);
            next_flush = Instant::now() + flush_every;
        }
    }
    for a in analyzers.iter_mut() {
        a.finish();
    }
    flush(&mut analyzers);
    // Analyzers go first, with their alert handles, then ours: once the last handle is gone
    // the daemon may shut the alert sinks down, and every alert raised so far, by the final
    // flush too, has been queued for them.
    drop(analyzers);
    metrics.pipeline_drained.set(1);
    tracing::info!(alerts = alerts.submitted(), "Pipeline drained.");
    drop(alerts);
}

fn flush(analyzers: &mut [Box<dyn Analyzer>]) {
    for a in analyzers.iter_mut() {
        if let Err(e) = a.flush() {
            tracing::debug!(analyzer = a.name(), error = %e, "Flush failed.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_waits_by_packet_time_deltas() {
        let mut p = Pacer { start: None };
        let w0 = Instant::now();
        let t0 = Timestamp::from_nanos(5_000_000_000);
        assert_eq!(p.delay(t0, w0), Duration::ZERO);
        let t1 = Timestamp::from_nanos(5_250_000_000);
        assert_eq!(p.delay(t1, w0), Duration::from_millis(250));
        assert_eq!(
            p.delay(t1, w0 + Duration::from_millis(100)),
            Duration::from_millis(150)
        );
        // A packet stamped earlier than the first (files merged, clock steps) is not delayed.
        assert_eq!(p.delay(Timestamp::from_nanos(1), w0), Duration::ZERO);
    }

    /// Records, at the end of the input, how many transactions it saw and whether the
    /// pipeline still said it was capturing.
    struct EndWatcher {
        capturing: Arc<std::sync::Mutex<Option<Arc<AtomicBool>>>>,
        seen_at_finish: Arc<std::sync::Mutex<Option<(usize, bool)>>>,
        transactions: usize,
    }

    impl Analyzer for EndWatcher {
        fn name(&self) -> &'static str {
            "end_watcher"
        }
        fn on_transaction(&mut self, _tx: &Transaction) {
            self.transactions += 1;
        }
        fn finish(&mut self) {
            // The test hands the flag over just after the start; wait for it (bounded).
            let deadline = Instant::now() + Duration::from_secs(30);
            let flag = loop {
                if let Some(f) = self.capturing.lock().unwrap().clone() {
                    break f;
                }
                if Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            *self.seen_at_finish.lock().unwrap() =
                Some((self.transactions, flag.load(Ordering::Acquire)));
        }
    }

    /// Readiness ends with the input, not with the drain: by the time the analysis stage
    /// finishes (and reports the pipeline drained), the capture flag is already down, so a
    /// probe after `apitap_daemon_pipeline_drained` is 1 never sees "ready".
    #[test]
    fn capture_flag_is_down_before_the_analysis_stage_finishes() {
        use super::super::analysis::tests::file_pipeline;
        let pcap =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("captures/api-basic.pcap");
        let dir = std::env::temp_dir().join(format!("apitap-ready-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let metrics = Metrics::new();
        let output = AlertOutput::new(file_pipeline(&dir.join("a.jsonl")), metrics.clone());
        let slot = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let watcher = EndWatcher {
            capturing: slot.clone(),
            seen_at_finish: seen.clone(),
            transactions: 0,
        };
        let source = OpenSource::Replay {
            source: OfflineSource::open(&[pcap]).expect("bundled capture"),
            realtime: false,
        };
        let cfg = Config::default();
        let p = Pipeline::start(
            &cfg,
            2,
            source,
            vec![Box::new(watcher)],
            output,
            metrics.clone(),
        )
        .expect("start");
        *slot.lock().unwrap() = Some(p.capturing());
        let outcome = p.join();
        assert!(outcome.panicked.is_empty(), "{outcome:?}");
        assert_eq!(metrics.pipeline_drained.get(), 1);
        let (transactions, capturing) = seen.lock().unwrap().expect("finish ran with the flag");
        assert!(transactions > 100, "{transactions}");
        assert!(
            !capturing,
            "still 'capturing' when the analysis stage finished"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Raises one alert per flush, as a detector closing its windows at the end would.
    struct FlushRaiser {
        alerts: AlertOutput,
        next: u8,
    }

    impl Analyzer for FlushRaiser {
        fn name(&self) -> &'static str {
            "flush_raiser"
        }
        fn on_transaction(&mut self, _tx: &Transaction) {}
        fn flush(&mut self) -> std::io::Result<()> {
            self.next += 1;
            let _ = self
                .alerts
                .submit(super::super::analysis::tests::alert(self.next));
            Ok(())
        }
    }

    /// Alerts raised by the analysis stage's final flush reach the sinks: every handle is gone
    /// when the stage returns, so the sinks can be shut down then, and they deliver them.
    #[test]
    fn alerts_of_the_final_flush_are_delivered() {
        use super::super::analysis::tests::file_pipeline;
        let dir = std::env::temp_dir().join(format!("apitap-drain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("alerts.jsonl");
        let sinks = file_pipeline(&path);
        let metrics = Metrics::new();
        let output = AlertOutput::new(sinks.clone(), metrics.clone());
        let raiser = FlushRaiser {
            alerts: output.clone(),
            next: 0,
        };
        let (tx_tx, tx_rx) = bounded::<Transaction>(1);
        let (_control_tx, control_rx) = bounded::<Config>(1);
        // No transactions, an hour between timed flushes: only the final flush raises.
        drop(tx_tx);
        analysis(
            tx_rx,
            control_rx,
            vec![Box::new(raiser)],
            output,
            Duration::from_secs(3600),
            metrics.clone(),
        );
        assert_eq!(metrics.pipeline_drained.get(), 1);
        let report = Arc::try_unwrap(sinks)
            .ok()
            .expect("the analysis stage let go of every handle")
            .shutdown();
        assert_eq!(report.sinks[0].2.delivered, 1);
        let text = std::fs::read_to_string(&path).expect("alert file");
        assert_eq!(text.lines().count(), 1, "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

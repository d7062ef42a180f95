//! `apitap run`: the sensor daemon.
//!
//! It wires the pure stages into threads ([`pipeline`]), serves metrics and health
//! ([`server`]), and owns the process lifecycle: signals, configuration reload, privileges
//! and logs. See ARCHITECTURE.md, "Runtime topology", for threads, queues and shutdown order.
//!
//! Start-up order, each step needing the one before:
//! 1. logging, signal handlers (so a signal during start-up is not fatal);
//! 2. the packet source, the metrics socket and the transaction log: everything needing root;
//! 3. dropping privileges, before any thread exists;
//! 4. detection ([`detection`]): the model, pseudonym key, spec and GeoIP database of
//!    `[detect]`, loaded as the unprivileged user so that the model saves it makes later are
//!    its own; a bad file refuses the start before anything else runs;
//! 5. the alert pipeline (`[alert]`), as the unprivileged user so that the files and spools it
//!    creates later (rotation, new segments) are its own; it fails the start if a sink cannot
//!    open its file or spool;
//! 6. the pipeline threads, then the HTTP server and the signal loop on the main thread.
//!
//! Lifecycle:
//! - SIGTERM or SIGINT: capture stops and the pipeline drains (see [`pipeline`]); the process
//!   exits 0 once every transaction was analysed and every output flushed. The alert sinks
//!   stop last, after the analysis stage has drained (so alerts raised by its final flush are
//!   delivered or spooled), within `[alert] shutdown_grace_secs` plus a few seconds of local
//!   I/O; their final counters are logged. A second signal while draining exits at once, with
//!   status 1, leaving what the network sinks had not delivered in their spools.
//! - SIGHUP: the configuration file is read again. If it is invalid, the running configuration
//!   stays and the reason is logged. If it is valid, the keys in
//!   [`crate::config::LIVE_KEYS`] take effect and any other change is logged as needing a
//!   restart (`[alert]` among them: sinks hold open files, spools and connections).
//! - A replay ends by itself once drained, unless `--hold` keeps the metrics server up.
//!
//! Invariant: no log line holds a secret, a packet payload or a configuration value beyond
//! key names; configuration errors name keys and redact secret values.

pub mod analysis;
pub mod batch;
pub mod detection;
pub mod pipeline;
pub mod privileges;
pub mod server;
pub mod settings;
pub mod shard;

use crate::alert::pipeline::PipelineError;
use crate::alert::{AlertPipeline, ShutdownReport};
use crate::capture::{CaptureError, LiveSource, OfflineSource};
use crate::config::{Config, LogLevel};
use crate::telemetry::metrics::{sink_label, AlertPublisher};
use crate::telemetry::Metrics;
use analysis::{AlertOutput, Analyzer, TransactionLog, TransactionMetrics};
use pipeline::{OpenSource, Pipeline};
use privileges::Dropped;
use settings::{RunSettings, Source};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Why the daemon could not start or did not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("[metrics] listen = {addr:?}: cannot listen: {reason}")]
    Listen { addr: String, reason: String },
    #[error("{}: cannot open the transaction log: {reason}", path.display())]
    Log { path: PathBuf, reason: String },
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error("[alert] {0}")]
    Alerts(#[from] PipelineError),
    #[error("[detect] {0}")]
    Detect(#[from] detection::StartError),
    #[error("cannot start: {0}")]
    Start(String),
    #[error("capture failed: {0}")]
    CaptureFailed(String),
    #[error("{} crashed; its share of the traffic was lost", .0.join(", "))]
    Panicked(Vec<String>),
    #[error("stopped by a second signal before the pipeline drained")]
    Forced,
}

type LogHandle = reload::Handle<LevelFilter, tracing_subscriber::Registry>;

fn level_filter(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// Structured logs to stderr, at a level that a reload can change.
fn init_logging(level: LogLevel) -> Option<LogHandle> {
    let (filter, handle) = reload::Layer::new(level_filter(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()
        .map(|()| handle)
}

/// Runs the sensor until its input ends or it is stopped.
pub fn run(settings: RunSettings) -> Result<(), DaemonError> {
    let log = init_logging(settings.config.daemon.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Start(format!("tokio runtime: {e}")))?;
    let _entered = runtime.enter();
    let signals = Signals::install().map_err(|e| DaemonError::Start(format!("signals: {e}")))?;

    let cfg = settings.config.clone();
    let metrics = Metrics::new();
    metrics.workers.set(settings.workers as i64);

    // Everything that may need root, before dropping it.
    let source = open_source(&settings.source)?;
    let listener = match cfg.metrics.listen.as_str() {
        "" => None,
        addr => Some(bind(addr)?),
    };
    let mut analyzers: Vec<Box<dyn Analyzer>> =
        vec![Box::new(TransactionMetrics::new(&cfg, metrics.clone()))];
    if !cfg.output.transaction_log.is_empty() {
        let path = PathBuf::from(&cfg.output.transaction_log);
        let log = TransactionLog::open(&path).map_err(|e| DaemonError::Log {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        analyzers.push(Box::new(log));
    }
    match privileges::drop_to(&cfg.daemon.user)? {
        Dropped::NotConfigured { root: true } => tracing::warn!(
            "Running as root: set [daemon] user to drop privileges once the capture is open."
        ),
        Dropped::NotConfigured { root: false } => {}
        Dropped::NotRoot => tracing::info!(
            user = %cfg.daemon.user,
            "Not running as root; [daemon] user is not needed and is skipped."
        ),
        Dropped::Switched { user, uid, gid } => {
            tracing::info!(%user, uid, gid, "Dropped privileges.")
        }
    }

    // As the unprivileged user, so the model files it saves later are its own; before the
    // sinks, so a refused model starts nothing.
    let detect = detection::load(&cfg)?;

    // `alert_sinks` carries the webhook key in plain text: it goes to the sinks and nowhere
    // else.
    let sinks = Arc::new(AlertPipeline::new(&cfg.alert_sinks())?);
    let publisher = AlertPublisher::new(&sinks, &metrics);
    log_sinks(&sinks);
    let alerts = AlertOutput::new(sinks.clone(), metrics.clone());
    if let Some(engine) = detect {
        analyzers.push(Box::new(detection::DetectAnalyzer::new(
            engine,
            &cfg.detect,
            alerts.clone(),
            metrics.clone(),
        )));
    }

    let pipeline = Pipeline::start(
        &cfg,
        settings.workers,
        source,
        analyzers,
        alerts,
        metrics.clone(),
    )
    .map_err(|e| DaemonError::Start(format!("threads: {e}")))?;
    let stop = pipeline.stop_handle();
    let control = pipeline.control();
    let state = Arc::new(server::State {
        metrics: metrics.clone(),
        ready: pipeline.capturing(),
        alerts: Some(publisher),
    });
    match &settings.source {
        Source::Live(o) => tracing::info!(
            interface = %o.interface,
            workers = settings.workers,
            filter = %o.filter,
            "Capturing."
        ),
        Source::Replay { files, realtime } => {
            tracing::info!(
                files = files.len(),
                workers = settings.workers,
                realtime,
                "Replaying."
            );
            if !cfg.capture.filter.is_empty() {
                tracing::warn!("The capture filter applies to live capture only; the replay reads every packet.");
            }
        }
    }

    // The supervisor joins the pipeline threads off the async loop and reports the outcome.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("apitap-supervisor".into())
        .spawn(move || {
            let _ = done_tx.send(pipeline.join());
        })
        .map_err(|e| DaemonError::Start(format!("threads: {e}")))?;

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    if let Some(l) = listener {
        let l = tokio::net::TcpListener::from_std(l)
            .map_err(|e| DaemonError::Start(format!("metrics socket: {e}")))?;
        runtime.spawn(server::serve(
            l,
            state.clone(),
            cfg.metrics.max_connections,
            Duration::from_secs(cfg.metrics.request_timeout_secs),
            shutdown_rx,
        ));
    }
    let mut life = Lifecycle {
        running: cfg,
        config_path: settings.config_path.clone(),
        log,
        control,
        metrics,
        state,
        stop,
        hold: settings.hold,
    };
    let result = runtime.block_on(life.supervise(signals, done_rx));
    // After a forced stop the analysis stage may still hold handles: the process exits now
    // and the network sinks' spools keep what they had not delivered.
    if !matches!(result, Err(DaemonError::Forced)) {
        stop_sinks(sinks);
    }
    let _ = shutdown_tx.send(true);
    result
}

/// Says where alerts go, once, at start.
fn log_sinks(sinks: &AlertPipeline) {
    let labels: Vec<String> = sinks
        .sinks()
        .iter()
        .map(|s| sink_label(s.kind, &s.name))
        .collect();
    if labels.is_empty() {
        tracing::warn!("No alert sink configured: alerts are counted but go nowhere; see [alert].");
    } else {
        tracing::info!(sinks = %labels.join(", "), "Alert sinks started.");
    }
}

/// Stops the alert sinks once the analysis stage has let go of them, and logs how each ended.
fn stop_sinks(sinks: Arc<AlertPipeline>) {
    match Arc::try_unwrap(sinks) {
        Ok(p) => log_report(&p.shutdown()),
        // Only a handle kept beyond the analysis stage's end gets here; dropping ours leaves
        // the stop to the last holder.
        Err(_) => tracing::warn!(
            "Alert sinks still in use at shutdown; they stop when the last user ends."
        ),
    }
}

fn log_report(report: &ShutdownReport) {
    for (kind, name, c) in &report.sinks {
        tracing::info!(
            sink = %sink_label(*kind, name),
            delivered = c.delivered,
            failures = c.failures,
            queue_drops = c.queue_drops,
            rejected = c.rejected,
            spool_drops = c.spool_drops,
            oversize_drops = c.oversize_drops,
            spool_pending = c.spool_pending,
            "Alert sink stopped."
        );
    }
    if report.unfinished > 0 {
        tracing::warn!(
            unfinished = report.unfinished,
            "Alert sinks still busy at the end of the shutdown grace; spooled alerts are sent at the next start."
        );
    }
}

fn open_source(source: &Source) -> Result<OpenSource, DaemonError> {
    Ok(match source {
        Source::Live(opts) => OpenSource::Live(LiveSource::open(opts)?),
        Source::Replay { files, realtime } => OpenSource::Replay {
            source: OfflineSource::open(files)?,
            realtime: *realtime,
        },
    })
}

fn bind(addr: &str) -> Result<std::net::TcpListener, DaemonError> {
    let err = |e: std::io::Error| DaemonError::Listen {
        addr: addr.to_owned(),
        reason: e.to_string(),
    };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    let local = l.local_addr().map_err(err)?;
    tracing::info!(listen = %local, "Serving /metrics, /healthz and /readyz.");
    Ok(l)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

/// The main thread's state once the pipeline runs.
struct Lifecycle {
    /// The configuration in force: the start-up file plus the live keys of later reloads.
    running: Config,
    config_path: Option<PathBuf>,
    log: Option<LogHandle>,
    control: crossbeam_channel::Sender<Config>,
    metrics: Metrics,
    state: Arc<server::State>,
    stop: Arc<AtomicBool>,
    hold: bool,
}

impl Lifecycle {
    async fn supervise(
        &mut self,
        mut signals: Signals,
        mut done: tokio::sync::oneshot::Receiver<pipeline::Outcome>,
    ) -> Result<(), DaemonError> {
        let mut stopping = false;
        let mut outcome = None;
        loop {
            let stop_signal = tokio::select! {
                _ = signals.term.recv() => Some("SIGTERM"),
                _ = signals.int.recv() => Some("SIGINT"),
                _ = signals.hup.recv() => {
                    self.reload();
                    None
                }
                r = &mut done, if outcome.is_none() => {
                    self.state.ready.store(false, Ordering::Release);
                    outcome = Some(r.unwrap_or_default());
                    if stopping || !self.hold {
                        break;
                    }
                    tracing::info!("Replay drained; serving metrics until SIGTERM or SIGINT.");
                    None
                }
            };
            let Some(name) = stop_signal else { continue };
            if outcome.is_some() {
                tracing::info!(signal = name, "Stopping.");
                break;
            }
            if stopping {
                tracing::error!(
                    signal = name,
                    "Second stop signal; exiting without draining."
                );
                return Err(DaemonError::Forced);
            }
            stopping = true;
            self.state.ready.store(false, Ordering::Release);
            self.stop.store(true, Ordering::Relaxed);
            tracing::info!(signal = name, "Stopping: draining the pipeline.");
        }
        let outcome = outcome.unwrap_or_default();
        if let Some(e) = outcome.capture_error {
            return Err(DaemonError::CaptureFailed(e));
        }
        if !outcome.panicked.is_empty() {
            return Err(DaemonError::Panicked(outcome.panicked));
        }
        tracing::info!("Stopped.");
        Ok(())
    }

    /// SIGHUP: read the file again; keep the running configuration if the file is bad.
    fn reload(&mut self) {
        let Some(path) = &self.config_path else {
            tracing::info!("SIGHUP: started without --config, so there is nothing to reload.");
            return;
        };
        match Config::load(path, |k| std::env::var(k).ok()) {
            Err(e) => {
                crate::telemetry::metrics::inc(&self.metrics.config_reloads, &["error"], 1);
                // One line per problem would split a log record; join them.
                let error = e.to_string().replace('\n', "; ");
                tracing::error!(%error, "Config reload failed; keeping the running config.");
            }
            Ok(new) => {
                crate::telemetry::metrics::inc(&self.metrics.config_reloads, &["ok"], 1);
                let (applied, restart) = self.running.apply_live(&new);
                if let Some(h) = &self.log {
                    let _ = h.modify(|f| *f = level_filter(self.running.daemon.log_level));
                }
                let _ = self.control.try_send(self.running.clone());
                tracing::info!(applied = %applied.join(", "), "Config reloaded.");
                if !restart.is_empty() {
                    tracing::warn!(
                        keys = %restart.join(", "),
                        "Config changes need a restart to take effect; the running values stay."
                    );
                }
            }
        }
    }
}

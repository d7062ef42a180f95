//! The analysis stage: where transactions from every worker meet.
//!
//! One thread receives the transactions of all packet workers and hands each, in arrival
//! order, to a list of [`Analyzer`]s: [`TransactionMetrics`] (counts, latency, endpoint
//! series, capture quality), [`TransactionLog`] (a JSON Lines file) and
//! [`super::detection::DetectAnalyzer`] (learning and detection). Each sees every transaction
//! exactly once, on one thread, so none needs locking.
//!
//! Analyzers raise alerts through an [`AlertOutput`], a cloneable handle to the alert pipeline
//! that each detector takes when it is built. The analysis stage holds one too and drops it
//! only after its final flush, so alerts raised while flushing still reach the sinks: the
//! daemon shuts the pipeline down once every handle is gone.
//!
//! Invariants:
//! - An analyzer never blocks on the network: slow outputs (alert sinks) get their own queue,
//!   and [`AlertOutput::submit`] never waits (a full sink queue drops the newest alert there).
//! - Memory is bounded: the route learner and the top-K selection have fixed limits, the
//!   quality window is `quality_window_transactions` booleans.
//! - Transactions are analysed in packet time (`Transaction::ts`); only output flushing uses
//!   the wall clock.

use crate::alert::pipeline::{SubmitError, Submitted};
use crate::alert::{Alert, AlertPipeline};
use crate::cli::output::{FlowWriter, Format};
use crate::config::Config;
use crate::http::conn::{FLAG_PARTIAL, FLAG_REQUEST_GAP, FLAG_RESPONSE_GAP};
use crate::inventory::template::RouteLearner;
use crate::telemetry::metrics::{inc, Metrics, OTHER_ROUTE};
use crate::telemetry::TopRoutes;
use crate::transaction::Transaction;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A consumer of transactions on the analysis thread.
pub trait Analyzer: Send {
    /// A name for logs.
    fn name(&self) -> &'static str;
    /// Looks at one transaction.
    fn on_transaction(&mut self, tx: &Transaction);
    /// Pushes buffered output out: called every `[output] flush_interval_ms` and at the end.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Called once when the input has ended, before the final flush: close what is still
    /// open (incidents) and save state.
    fn finish(&mut self) {}
    /// Takes the live-changeable settings of a reloaded configuration (see
    /// [`crate::config::LIVE_KEYS`]).
    fn reconfigure(&mut self, _cfg: &Config) {}
}

/// How analyzers raise alerts: a handle to the running [`AlertPipeline`], cheap to clone.
///
/// [`AlertOutput::submit`] validates the alert, counts it in
/// `apitap_detect_alerts_total{kind,severity}` (detectors do not count alerts themselves) and
/// queues it for every sink without blocking. An alert that fails validation is a detector
/// bug: it is refused, counted (`apitap_alert_invalid_total`) and logged with a back-off.
#[derive(Clone)]
pub struct AlertOutput {
    pipeline: Arc<AlertPipeline>,
    metrics: Metrics,
    /// Alerts refused by this handle and its clones, for the log back-off.
    refused: Arc<AtomicU64>,
}

impl AlertOutput {
    pub fn new(pipeline: Arc<AlertPipeline>, metrics: Metrics) -> AlertOutput {
        AlertOutput {
            pipeline,
            metrics,
            refused: Arc::default(),
        }
    }

    /// Validates `alert` and queues it for every sink; never blocks. `Ok` says how many sinks
    /// queued it and how many dropped it on a full queue (counted per sink).
    pub fn submit(&self, alert: Alert) -> Result<Submitted, SubmitError> {
        let (kind, severity) = (alert.kind, alert.severity);
        match self.pipeline.submit(alert) {
            Ok(s) => {
                inc(&self.metrics.alerts, &[kind.name(), severity.name()], 1);
                Ok(s)
            }
            Err(e) => {
                let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
                // The 1st, 2nd, 4th, ... refusal: a detector bug shows without flooding.
                if n.is_power_of_two() {
                    tracing::error!(
                        kind = kind.name(),
                        refused = n,
                        error = %e,
                        "Refused an invalid alert; it was not sent."
                    );
                }
                Err(e)
            }
        }
    }

    /// Alerts the pipeline accepted so far, from every handle.
    pub fn submitted(&self) -> u64 {
        self.pipeline.counters().submitted.load(Ordering::Relaxed)
    }
}

/// The status class label of a transaction: `1xx` to `5xx`, `none` without a response,
/// `other` for a code outside 100..=599.
pub fn status_class(tx: &Transaction) -> &'static str {
    match tx.response.as_ref().map(|r| r.status) {
        None => "none",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
    }
}

const STATUS_CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "other"];

/// A transaction both of whose messages were seen whole.
pub fn is_complete(tx: &Transaction) -> bool {
    tx.request.is_some()
        && tx.response.is_some()
        && ![FLAG_PARTIAL, FLAG_REQUEST_GAP, FLAG_RESPONSE_GAP]
            .iter()
            .any(|f| tx.has_flag(f))
}

/// Transaction counts, latency per endpoint and the capture-quality ratio.
pub struct TransactionMetrics {
    metrics: Metrics,
    /// Templates requests into endpoints (`GET /users/{id}`), so no raw path becomes a label.
    routes: RouteLearner,
    top: TopRoutes,
    unlabelled: Vec<String>,
    window: VecDeque<bool>,
    window_len: usize,
    complete_in_window: usize,
}

impl TransactionMetrics {
    pub fn new(cfg: &Config, metrics: Metrics) -> TransactionMetrics {
        let m = &cfg.metrics;
        TransactionMetrics {
            metrics,
            routes: RouteLearner::new(cfg.routes.clone()),
            top: TopRoutes::new(
                m.max_route_series,
                m.max_tracked_routes,
                m.route_refresh_secs,
            ),
            unlabelled: Vec::new(),
            window: VecDeque::with_capacity(m.quality_window_transactions),
            window_len: m.quality_window_transactions.max(1),
            complete_in_window: 0,
        }
    }

    /// The endpoint of a transaction, e.g. `GET /users/{id}`; `None` without a request.
    fn route(&mut self, tx: &Transaction) -> Option<String> {
        let req = tx.request.as_ref()?;
        let host = req.headers.get_str("host").unwrap_or_default();
        self.routes.observe(&host, &req.method, &req.uri);
        Some(
            self.routes
                .template_of(&host, &req.method, &req.uri)
                .to_string(),
        )
    }

    fn quality(&mut self, complete: bool) {
        if self.window.len() == self.window_len && self.window.pop_front() == Some(true) {
            self.complete_in_window = self.complete_in_window.saturating_sub(1);
        }
        self.window.push_back(complete);
        if complete {
            self.complete_in_window += 1;
        }
        let ratio = self.complete_in_window as f64 / self.window.len() as f64;
        self.metrics.http_capture_quality.set(ratio);
    }
}

impl Analyzer for TransactionMetrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn on_transaction(&mut self, tx: &Transaction) {
        let m = &self.metrics;
        m.http_transactions.inc();
        let route = self.route(tx);
        let label = match &route {
            Some(r) => self.top.observe(r, tx.ts(), &mut self.unlabelled),
            None => OTHER_ROUTE,
        };
        let m = &self.metrics;
        // Series of endpoints that lost their label go, so the series count stays bounded.
        for gone in self.unlabelled.drain(..) {
            for class in STATUS_CLASSES {
                let _ = m
                    .http_route_transactions
                    .remove_label_values(&[&gone, class]);
            }
            let _ = m.http_duration.remove_label_values(&[&gone]);
        }
        inc(&m.http_route_transactions, &[label, status_class(tx)], 1);
        if tx.request.is_some() && tx.response.is_some() {
            if let Ok(h) = m.http_duration.get_metric_with_label_values(&[label]) {
                h.observe(tx.duration().as_secs_f64());
            }
        }
        self.quality(is_complete(tx));
    }

    fn reconfigure(&mut self, cfg: &Config) {
        self.top
            .set_limits(cfg.metrics.max_route_series, cfg.metrics.route_refresh_secs);
    }
}

/// Every transaction as one JSON line (the `apitap flows` record), appended to a file.
pub struct TransactionLog {
    writer: FlowWriter<BufWriter<File>>,
    /// Write errors in a row; logged on the first only, so a full disk does not flood stderr.
    failing: bool,
}

impl TransactionLog {
    /// Opens (creates or appends to) the log. Done before privileges are dropped, so the file
    /// may live where only root can create it.
    pub fn open(path: &Path) -> io::Result<TransactionLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(TransactionLog {
            writer: FlowWriter::new(BufWriter::with_capacity(1 << 16, file), Format::Jsonl),
            failing: false,
        })
    }

    fn result(&mut self, r: io::Result<()>) {
        match r {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::error!(error = %e, "Writing the transaction log failed; records are lost until it recovers.");
            }
            Err(_) => {}
        }
    }
}

impl Analyzer for TransactionLog {
    fn name(&self) -> &'static str {
        "transaction_log"
    }

    fn on_transaction(&mut self, tx: &Transaction) {
        let r = self.writer.write(tx);
        self.result(r);
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.writer.flush();
        let out = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        self.result(r);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::OfflineSource;
    use crate::engine::Engine;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn transactions(pcap: &str) -> Vec<Transaction> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("captures")
            .join(pcap);
        let mut src = OfflineSource::open(&[path]).expect("bundled capture");
        let mut engine = Engine::new(Config::default().engine());
        let mut out = Vec::new();
        while let Some(p) = src.next_packet() {
            engine.process(&p, &mut out);
        }
        engine.finish(&mut out);
        out
    }

    fn samples(m: &Metrics) -> BTreeMap<String, f64> {
        m.render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn counts_routes_and_quality_match_the_transactions() {
        let txs = transactions("api-basic.pcap");
        assert!(!txs.is_empty());
        let mut cfg = Config::default();
        cfg.metrics.max_route_series = 3;
        let metrics = Metrics::new();
        let mut a = TransactionMetrics::new(&cfg, metrics.clone());
        for t in &txs {
            a.on_transaction(t);
        }
        let s = samples(&metrics);
        assert_eq!(s["apitap_http_transactions_total"], txs.len() as f64);
        // Per-route counters add up to the total, and at most 3 routes plus "other" appear.
        let per_route: Vec<(&String, &f64)> = s
            .iter()
            .filter(|(k, _)| k.starts_with("apitap_http_route_transactions_total{"))
            .collect();
        let sum: f64 = per_route.iter().map(|(_, v)| **v).sum();
        assert_eq!(sum, txs.len() as f64);
        let routes: std::collections::BTreeSet<&str> = per_route
            .iter()
            .filter_map(|(k, _)| k.split("route=\"").nth(1)?.split('"').next())
            .collect();
        assert!(routes.len() <= 4, "{routes:?}");
        for r in &routes {
            assert!(
                *r == "other" || r.contains(' '),
                "route label {r:?} is METHOD template"
            );
            assert!(!r.contains('?'), "no query strings in labels: {r}");
        }
        let complete = txs.iter().filter(|t| is_complete(t)).count();
        let window = cfg.metrics.quality_window_transactions.min(txs.len());
        let recent = txs
            .iter()
            .rev()
            .take(window)
            .filter(|t| is_complete(t))
            .count();
        assert!(complete > 0);
        assert_eq!(
            s["apitap_http_capture_quality_ratio"],
            recent as f64 / window as f64
        );
        let answered = txs
            .iter()
            .filter(|t| t.request.is_some() && t.response.is_some())
            .count();
        let observed: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("apitap_http_transaction_duration_seconds_count"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(observed, answered as f64);
    }

    #[test]
    fn quality_window_forgets_old_transactions() {
        let txs = transactions("api-impaired.pcap");
        let mut cfg = Config::default();
        cfg.metrics.quality_window_transactions = 5;
        let metrics = Metrics::new();
        let mut a = TransactionMetrics::new(&cfg, metrics.clone());
        for (i, t) in txs.iter().enumerate() {
            a.on_transaction(t);
            let start = (i + 1).saturating_sub(5);
            let window = &txs[start..=i];
            let want =
                window.iter().filter(|t| is_complete(t)).count() as f64 / window.len() as f64;
            assert_eq!(metrics.http_capture_quality.get(), want, "after {i}");
        }
    }

    #[test]
    fn log_writes_one_line_per_transaction() {
        let txs = transactions("api-basic.pcap");
        let dir = std::env::temp_dir().join(format!("apitap-analysis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tx.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut log = TransactionLog::open(&path).expect("open log");
        for t in &txs {
            log.on_transaction(t);
        }
        log.flush().expect("flush");
        let text = std::fs::read_to_string(&path).expect("read log");
        assert_eq!(text.lines().count(), txs.len());
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            assert!(v.get("flow").is_some());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A bola alert as a detector would build it, `i` telling the clients apart.
    pub(crate) fn alert(i: u8) -> Alert {
        use crate::alert::{AlertKind, Client, Endpoint, Severity};
        let mut a = Alert::new(
            AlertKind::Bola,
            Endpoint {
                host: "api.example.com".into(),
                method: "GET".into(),
                route: "/accounts/{id}".into(),
            },
            Client {
                ip: Some(std::net::IpAddr::from([192, 0, 2, i])),
                identity: Some(format!("user:{i:04x}")),
                role: None,
            },
            crate::common::Timestamp::from_secs_nanos(1_700_000_000, 0),
        );
        a.severity = Severity::High;
        a.summary = format!("Client {i} read objects of 12 other identities.");
        a
    }

    /// An alert pipeline with only a JSON Lines file sink at `path`.
    pub(crate) fn file_pipeline(path: &Path) -> Arc<AlertPipeline> {
        let cfg = crate::alert::SinksConfig {
            file: Some(crate::alert::config::FileSinkConfig {
                path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Arc::new(AlertPipeline::new(&cfg).expect("file sink starts"))
    }

    #[test]
    fn submitted_alerts_reach_the_file_sink_and_are_counted() {
        let dir = std::env::temp_dir().join(format!("apitap-alert-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("alerts.jsonl");
        let pipeline = file_pipeline(&path);
        let metrics = Metrics::new();
        let out = AlertOutput::new(pipeline.clone(), metrics.clone());
        let copy = out.clone();

        let sent: Vec<Alert> = (1..=3).map(alert).collect();
        for a in &sent {
            let s = copy.submit(a.clone()).expect("a valid alert is accepted");
            assert_eq!(
                s,
                Submitted {
                    queued: 1,
                    dropped: 0
                }
            );
        }
        let mut invalid = alert(9);
        invalid.confidence = 2.0;
        assert!(out.submit(invalid).is_err(), "an invalid alert is refused");
        assert_eq!(out.submitted(), 3);

        drop((out, copy));
        let report = Arc::try_unwrap(pipeline)
            .ok()
            .expect("no handle left")
            .shutdown();
        assert_eq!(report.sinks[0].2.delivered, 3);

        let text = std::fs::read_to_string(&path).expect("alert file");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one JSON alert a line");
                assert_eq!(v["kind"], "bola");
                assert_eq!(v["severity"], "high");
                v["id"].as_str().expect("id").to_owned()
            })
            .collect();
        let want: Vec<String> = sent.iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids, want);
        let s = samples(&metrics);
        assert_eq!(
            s["apitap_detect_alerts_total{kind=\"bola\",severity=\"high\"}"], 3.0,
            "the refused alert is not counted as raised"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

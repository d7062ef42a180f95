//! The Prometheus metric catalogue of the daemon.
//!
//! [`Metrics`] registers every family once, in its own registry, and the stages update it:
//! the capture thread (packets, bytes, kernel drops), each packet worker (its engine's counters,
//! published as deltas by [`EnginePublisher`]), the analysis stage (transactions, routes,
//! latency, capture quality, alerts raised), and the alert pipeline, whose sink counters
//! [`AlertPublisher`] copies in on every scrape. Detector families are registered here as they
//! land, so the catalogue is in one place.
//!
//! Invariants:
//! - Names follow `apitap_<subsystem>_<name>_<unit>` with `_total` on counters.
//! - Every label has a bounded set of values fixed by the code (layer, anomaly, reason, channel,
//!   sink, kind, severity) or chosen by a bounded selection (`route`, see
//!   [`super::routes::TopRoutes`]). A raw path, an address or an identity is never a label.
//! - Updating a metric never panics: a label-arity mistake drops the update instead.
//! - Counters summed over workers are published as deltas from each worker's own previous
//!   snapshot, so every worker adds its share and nothing is counted twice.

use crate::alert::pipeline::PipelineCounters;
use crate::alert::{AlertPipeline, SinkKind, SinkStats};
use crate::detect::incident::IncidentCounters;
use crate::detect::DetectCounters;
use crate::engine::EngineStats;
use crate::flow::reassembly::TcpAnomaly;
use crate::http::HttpAnomaly;
use prometheus::core::{Collector, GenericCounterVec, GenericGaugeVec};
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The label value for requests outside the labelled top endpoints.
pub const OTHER_ROUTE: &str = "other";

/// Latency buckets in seconds: from a cache hit on the same rack to a slow report.
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Decode error layers, as the `layer` label.
pub const DECODE_LAYERS: [&str; 6] = ["link", "vlan", "ipv4", "ipv6", "tcp", "tunnel"];

/// Channels of the daemon that can drop, as the `channel` label.
pub const CHANNELS: [&str; 2] = ["packets", "transactions"];

/// Every metric family of apitap.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,

    /// `apitap_capture_packets_total`: packets read from the interface or files.
    pub capture_packets: IntCounter,
    /// `apitap_capture_bytes_total`: captured bytes read.
    pub capture_bytes: IntCounter,
    /// `apitap_capture_kernel_drops_total`: packets the kernel dropped because the capture
    /// buffer was full (libpcap `ps_drop`).
    pub capture_kernel_drops: IntCounter,
    /// `apitap_capture_interface_drops_total`: packets the interface or driver dropped
    /// (libpcap `ps_ifdrop`).
    pub capture_interface_drops: IntCounter,
    /// `apitap_capture_file_errors_total`: capture files that ended early (truncated or
    /// damaged).
    pub capture_file_errors: IntCounter,

    /// `apitap_decode_errors_total{layer}`: packets whose headers could not be decoded.
    pub decode_errors: IntCounterVec,
    /// `apitap_decode_skipped_packets_total{kind}`: packets decoded but not TCP.
    pub decode_skipped: IntCounterVec,
    /// `apitap_decode_truncated_packets_total`: packets cut by the snaplen.
    pub decode_truncated: IntCounter,
    /// `apitap_decode_fragment_drops_total{reason}`: incomplete IP datagrams dropped.
    pub decode_fragment_drops: IntCounterVec,

    /// `apitap_flow_active_flows`: connections tracked now.
    pub flow_active: IntGauge,
    /// `apitap_flow_created_total`: connections tracked so far.
    pub flow_created: IntCounter,
    /// `apitap_flow_evicted_total{reason}`: connections removed before they ended.
    pub flow_evicted: IntCounterVec,
    /// `apitap_flow_not_http_total`: connections abandoned as not HTTP.
    pub flow_not_http: IntCounter,

    /// `apitap_reassembly_gaps_total`: holes in byte streams declared lost.
    pub reassembly_gaps: IntCounter,
    /// `apitap_reassembly_gap_bytes_total`: bytes covered by those holes.
    pub reassembly_gap_bytes: IntCounter,
    /// `apitap_reassembly_memcap_hits_total`: holes given up to stay under the memcap.
    pub reassembly_memcap_hits: IntCounter,
    /// `apitap_reassembly_buffer_limit_hits_total`: holes given up at a per-stream limit.
    pub reassembly_buffer_limit_hits: IntCounter,
    /// `apitap_reassembly_buffered_bytes`: out-of-order bytes held now.
    pub reassembly_buffered: IntGauge,
    /// `apitap_reassembly_anomalies_total{anomaly}`: TCP stream anomalies.
    pub reassembly_anomalies: IntCounterVec,

    /// `apitap_http_transactions_total`: transactions that reached the analysis stage.
    pub http_transactions: IntCounter,
    /// `apitap_http_route_transactions_total{route,status_class}`: transactions per endpoint
    /// (top endpoints only, the rest under `route="other"`).
    pub http_route_transactions: IntCounterVec,
    /// `apitap_http_transaction_duration_seconds{route}`: request start to response end.
    pub http_duration: HistogramVec,
    /// `apitap_http_anomalies_total{anomaly}`: HTTP anomalies raised by the parser.
    pub http_anomalies: IntCounterVec,
    /// `apitap_http_capture_quality_ratio`: share of complete transactions (request and
    /// response, no gap) among the last `quality_window_transactions`.
    pub http_capture_quality: Gauge,

    /// `apitap_detect_alerts_total{kind,severity}`: alerts raised (counted by
    /// [`crate::daemon::analysis::AlertOutput`] as detectors submit them).
    pub alerts: IntCounterVec,
    /// `apitap_alert_submitted_total`: alerts the alert pipeline accepted for its sinks.
    pub alert_submitted: IntCounter,
    /// `apitap_alert_invalid_total`: alerts refused by validation (a detector bug), not sent.
    pub alert_invalid: IntCounter,
    /// `apitap_sink_deliveries_total{sink}`: alerts written (local sinks) or acknowledged by
    /// the receiver (network sinks).
    pub sink_deliveries: IntCounterVec,
    /// `apitap_sink_retries_total{sink}`: delivery attempts repeated.
    pub sink_retries: IntCounterVec,
    /// `apitap_sink_failures_total{sink}`: failed delivery attempts (write or connection
    /// errors, timeouts, non-2xx); a network sink keeps the alerts spooled and retries.
    pub sink_failures: IntCounterVec,
    /// `apitap_sink_queue_depth_alerts{sink}`: alerts waiting in the sink's memory queue.
    pub sink_queue_depth: IntGaugeVec,
    /// `apitap_sink_queue_drops_total{sink}`: alerts dropped because the queue was full.
    pub sink_queue_drops: IntCounterVec,
    /// `apitap_sink_rejected_total{sink}`: alerts the receiver refused as malformed, dropped.
    pub sink_rejected: IntCounterVec,
    /// `apitap_sink_spool_drops_total{sink}`: undelivered alerts dropped from a full spool.
    pub sink_spool_drops: IntCounterVec,
    /// `apitap_sink_oversize_drops_total{sink}`: alerts larger than a spool record, dropped.
    pub sink_oversize_drops: IntCounterVec,
    /// `apitap_sink_spool_corrupt_records_total{sink}`: damaged spool records skipped.
    pub sink_spool_corrupt: IntCounterVec,
    /// `apitap_sink_rotations_total{sink}`: alert files rotated.
    pub sink_rotations: IntCounterVec,
    /// `apitap_sink_spool_bytes{sink}`: bytes of spool files on disk.
    pub sink_spool_bytes: IntGaugeVec,
    /// `apitap_sink_spool_pending_alerts{sink}`: alerts spooled and not yet acknowledged.
    pub sink_spool_pending: IntGaugeVec,

    /// `apitap_detect_transactions_total`: transactions the detection engine was given.
    pub detect_transactions: IntCounter,
    /// `apitap_detect_findings_total`: detector findings, before incident grouping folds them
    /// into alerts.
    pub detect_findings: IntCounter,
    /// `apitap_detect_learned_total`: transactions learned into the baselines.
    pub detect_learned: IntCounter,
    /// `apitap_detect_withheld_total`: transactions not learned because they raised a finding
    /// or their client had an open incident (the poisoning guard).
    pub detect_withheld: IntCounter,
    /// `apitap_detect_incidents_open`: incidents open now.
    pub detect_incidents_open: IntGauge,
    /// `apitap_detect_suppressed_total`: findings silenced by a suppression rule.
    pub detect_suppressed: IntCounter,
    /// `apitap_detect_rate_limited_total`: incidents not alerted because of the global alert
    /// rate limit.
    pub detect_rate_limited: IntCounter,
    /// `apitap_detect_learning`: 1 while the learning period runs (no detection yet).
    pub detect_learning: IntGauge,
    /// `apitap_detect_model_saves_total{result}`: saves of the adapted model, `ok` or `error`.
    pub detect_model_saves: IntCounterVec,
    /// `apitap_detect_detector_events_total{detector,counter}`: each detector's own counters
    /// (values looked at, memo hits, entries its bounded tables turned away or evicted) and
    /// the identity extractor's credential cache (`detector="identity"`).
    pub detect_detector_events: IntCounterVec,

    /// `apitap_baseline_learning_state{state}`: 1 for the current state of the baseline
    /// (`learning`, `detecting`), 0 for the others.
    pub learning_state: IntGaugeVec,
    /// `apitap_baseline_model_age_seconds{model}`: packet time since a model was last updated.
    pub model_age: GaugeVec,

    /// `apitap_daemon_channel_drops_total{channel}`: items dropped because a queue was full.
    pub channel_drops: IntCounterVec,
    /// `apitap_daemon_config_reloads_total{result}`: SIGHUP reloads, `ok` or `error`.
    pub config_reloads: IntCounterVec,
    /// `apitap_daemon_pipeline_drained`: 1 once the input ended and every stage flushed.
    pub pipeline_drained: IntGauge,
    /// `apitap_daemon_workers`: packet worker threads.
    pub workers: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name");
    register(r, c.clone());
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name");
    register(r, c.clone());
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name");
    register(r, g.clone());
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric name");
    register(r, g.clone());
    g
}

/// Registration fails only on a duplicate name: a programming error caught by the tests.
fn register(r: &Registry, c: impl Collector + 'static) {
    r.register(Box::new(c)).expect("metric names are unique");
}

/// Creates label values up front so a series reads 0 before its first event, instead of being
/// absent (which dashboards cannot tell from "not exported").
fn touch<P: prometheus::core::Atomic>(v: &GenericCounterVec<P>, values: &[&str]) {
    for value in values {
        let _ = v.get_metric_with_label_values(&[value]);
    }
}

impl Metrics {
    /// Registers the whole catalogue in a fresh registry.
    // The names are literals checked by the tests, so the `expect`s in the helpers cannot fire
    // on input.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let m = Metrics {
            capture_packets: counter(&r, "apitap_capture_packets_total", "Packets read from the interface or capture files."),
            capture_bytes: counter(&r, "apitap_capture_bytes_total", "Captured bytes read."),
            capture_kernel_drops: counter(&r, "apitap_capture_kernel_drops_total", "Packets the kernel dropped because the capture buffer was full."),
            capture_interface_drops: counter(&r, "apitap_capture_interface_drops_total", "Packets the interface or its driver dropped."),
            capture_file_errors: counter(&r, "apitap_capture_file_errors_total", "Capture files that ended early (truncated or damaged)."),
            decode_errors: counter_vec(&r, "apitap_decode_errors_total", "Packets whose headers could not be decoded, by layer.", &["layer"]),
            decode_skipped: counter_vec(&r, "apitap_decode_skipped_packets_total", "Packets decoded but not TCP, by kind.", &["kind"]),
            decode_truncated: counter(&r, "apitap_decode_truncated_packets_total", "Packets cut short by the snaplen."),
            decode_fragment_drops: counter_vec(&r, "apitap_decode_fragment_drops_total", "Incomplete IP datagrams dropped, by reason.", &["reason"]),
            flow_active: gauge(&r, "apitap_flow_active_flows", "Connections tracked now."),
            flow_created: counter(&r, "apitap_flow_created_total", "Connections tracked so far."),
            flow_evicted: counter_vec(&r, "apitap_flow_evicted_total", "Connections removed before they ended, by reason.", &["reason"]),
            flow_not_http: counter(&r, "apitap_flow_not_http_total", "Connections abandoned as not HTTP."),
            reassembly_gaps: counter(&r, "apitap_reassembly_gaps_total", "Holes in TCP byte streams declared lost."),
            reassembly_gap_bytes: counter(&r, "apitap_reassembly_gap_bytes_total", "Bytes covered by holes declared lost."),
            reassembly_memcap_hits: counter(&r, "apitap_reassembly_memcap_hits_total", "Holes given up to stay under the reassembly memcap."),
            reassembly_buffer_limit_hits: counter(&r, "apitap_reassembly_buffer_limit_hits_total", "Holes given up at a per-stream buffer limit."),
            reassembly_buffered: gauge(&r, "apitap_reassembly_buffered_bytes", "Out-of-order bytes held now."),
            reassembly_anomalies: counter_vec(&r, "apitap_reassembly_anomalies_total", "TCP stream anomalies, by name.", &["anomaly"]),
            http_transactions: counter(&r, "apitap_http_transactions_total", "HTTP transactions that reached the analysis stage."),
            http_route_transactions: counter_vec(&r, "apitap_http_route_transactions_total", "HTTP transactions per endpoint (the busiest; the rest under route=\"other\") and status class.", &["route", "status_class"]),
            http_duration: {
                let opts = HistogramOpts::new("apitap_http_transaction_duration_seconds", "Time from request start to response end, per endpoint.")
                    .buckets(LATENCY_BUCKETS.to_vec());
                let h = HistogramVec::new(opts, &["route"]).expect("valid metric name");
                register(&r, h.clone());
                h
            },
            http_anomalies: counter_vec(&r, "apitap_http_anomalies_total", "HTTP anomalies raised by the parser, by name.", &["anomaly"]),
            http_capture_quality: {
                let g = Gauge::with_opts(Opts::new("apitap_http_capture_quality_ratio", "Share of complete transactions (request and response, no gap) among the most recent ones.")).expect("valid metric name");
                register(&r, g.clone());
                g
            },
            alerts: counter_vec(&r, "apitap_detect_alerts_total", "Alerts raised, by kind and severity.", &["kind", "severity"]),
            alert_submitted: counter(&r, "apitap_alert_submitted_total", "Alerts accepted by the alert pipeline for its sinks."),
            alert_invalid: counter(&r, "apitap_alert_invalid_total", "Alerts refused by validation and not sent (a detector bug)."),
            sink_deliveries: counter_vec(&r, "apitap_sink_deliveries_total", "Alerts written or acknowledged by the receiver, by sink.", &["sink"]),
            sink_retries: counter_vec(&r, "apitap_sink_retries_total", "Alert delivery attempts repeated, by sink.", &["sink"]),
            sink_failures: counter_vec(&r, "apitap_sink_failures_total", "Failed alert delivery attempts (spooled alerts are retried), by sink.", &["sink"]),
            sink_queue_depth: gauge_vec(&r, "apitap_sink_queue_depth_alerts", "Alerts waiting in the memory queue, by sink.", &["sink"]),
            sink_queue_drops: counter_vec(&r, "apitap_sink_queue_drops_total", "Alerts dropped because the sink's queue was full, by sink.", &["sink"]),
            sink_rejected: counter_vec(&r, "apitap_sink_rejected_total", "Alerts the receiver refused as malformed and that were dropped, by sink.", &["sink"]),
            sink_spool_drops: counter_vec(&r, "apitap_sink_spool_drops_total", "Undelivered alerts dropped because the spool was full, by sink.", &["sink"]),
            sink_oversize_drops: counter_vec(&r, "apitap_sink_oversize_drops_total", "Alerts larger than a spool record and dropped, by sink.", &["sink"]),
            sink_spool_corrupt: counter_vec(&r, "apitap_sink_spool_corrupt_records_total", "Damaged spool records skipped, by sink.", &["sink"]),
            sink_rotations: counter_vec(&r, "apitap_sink_rotations_total", "Alert files rotated, by sink.", &["sink"]),
            sink_spool_bytes: gauge_vec(&r, "apitap_sink_spool_bytes", "Bytes of spool files on disk, by sink.", &["sink"]),
            sink_spool_pending: gauge_vec(&r, "apitap_sink_spool_pending_alerts", "Alerts spooled and not yet acknowledged, by sink.", &["sink"]),
            detect_transactions: counter(&r, "apitap_detect_transactions_total", "Transactions given to the detection engine."),
            detect_findings: counter(&r, "apitap_detect_findings_total", "Detector findings, before incidents fold them into alerts."),
            detect_learned: counter(&r, "apitap_detect_learned_total", "Transactions learned into the baselines."),
            detect_withheld: counter(&r, "apitap_detect_withheld_total", "Transactions not learned because they raised a finding or their client had an open incident."),
            detect_incidents_open: gauge(&r, "apitap_detect_incidents_open", "Incidents open now."),
            detect_suppressed: counter(&r, "apitap_detect_suppressed_total", "Findings silenced by a suppression rule."),
            detect_rate_limited: counter(&r, "apitap_detect_rate_limited_total", "Incidents not alerted because of the global alert rate limit."),
            detect_learning: gauge(&r, "apitap_detect_learning", "1 while the learning period runs and nothing is detected yet."),
            detect_model_saves: counter_vec(&r, "apitap_detect_model_saves_total", "Saves of the adapted model, by result.", &["result"]),
            detect_detector_events: counter_vec(&r, "apitap_detect_detector_events_total", "Each detector's own counters: what it looked at and what its bounded tables turned away.", &["detector", "counter"]),
            learning_state: gauge_vec(&r, "apitap_baseline_learning_state", "1 for the current state of the baseline, 0 for the others.", &["state"]),
            model_age: {
                let g = GaugeVec::new(Opts::new("apitap_baseline_model_age_seconds", "Packet time since a model was last updated."), &["model"]).expect("valid metric name");
                register(&r, g.clone());
                g
            },
            channel_drops: counter_vec(&r, "apitap_daemon_channel_drops_total", "Items dropped because a queue was full, by channel.", &["channel"]),
            config_reloads: counter_vec(&r, "apitap_daemon_config_reloads_total", "Configuration reloads on SIGHUP, by result.", &["result"]),
            pipeline_drained: gauge(&r, "apitap_daemon_pipeline_drained", "1 once the input ended and every stage flushed its output."),
            workers: gauge(&r, "apitap_daemon_workers", "Packet worker threads."),
            registry: r,
        };
        touch(&m.decode_errors, &DECODE_LAYERS);
        touch(
            &m.decode_skipped,
            &["udp", "other_l4", "non_ip", "unknown_linktype"],
        );
        touch(
            &m.decode_fragment_drops,
            &["memcap", "timeout", "datagram_limit"],
        );
        touch(&m.flow_evicted, &["idle", "cap"]);
        touch(&m.http_anomalies, &HttpAnomaly::ALL.map(HttpAnomaly::name));
        let tcp = [
            TcpAnomaly::OverlapMismatch,
            TcpAnomaly::DataAfterFin,
            TcpAnomaly::InconsistentFin,
            TcpAnomaly::SegmentOutOfWindow,
            TcpAnomaly::AckOutOfWindow,
        ];
        touch(&m.reassembly_anomalies, &tcp.map(TcpAnomaly::name));
        touch(&m.channel_drops, &CHANNELS);
        touch(&m.config_reloads, &["ok", "error"]);
        touch(&m.detect_model_saves, &["ok", "error"]);
        m
    }

    /// Brings the detection families up to the engine's state (called by the detection
    /// analyzer on every flush; counters only grow, so each is raised to the engine's count).
    /// The state gauges go first: a scrape that sees a transaction counted also sees the
    /// learning state it was judged in.
    pub fn publish_detect(&self, s: &DetectStatus<'_>) {
        self.detect_incidents_open
            .set(i64::try_from(s.open_incidents).unwrap_or(i64::MAX));
        self.detect_learning.set(i64::from(s.learning));
        for (state, on) in [("learning", s.learning), ("detecting", !s.learning)] {
            if let Ok(g) = self.learning_state.get_metric_with_label_values(&[state]) {
                g.set(i64::from(on));
            }
        }
        if let Ok(g) = self.model_age.get_metric_with_label_values(&["baseline"]) {
            g.set(s.model_age_secs);
        }
        advance(&self.detect_transactions, s.counters.transactions);
        advance(&self.detect_findings, s.counters.findings);
        advance(&self.detect_learned, s.counters.learned);
        advance(&self.detect_withheld, s.counters.withheld_from_learning);
        let suppressed = s
            .incidents
            .suppressed
            .values()
            .fold(0u64, |a, n| a.saturating_add(*n));
        advance(&self.detect_suppressed, suppressed);
        advance(&self.detect_rate_limited, s.incidents.rate_limited);
        for (detector, counter, n) in s.detectors {
            if let Ok(c) = self
                .detect_detector_events
                .get_metric_with_label_values(&[detector, counter.as_str()])
            {
                advance(&c, *n);
            }
        }
    }

    /// The text exposition format (version 0.0.4) of every family.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Encoding only fails on invalid names, which `new` already refused.
        let _ = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }

    /// Counts `n` items dropped on a full `channel` (one of [`CHANNELS`]).
    pub fn channel_drop(&self, channel: &str, n: u64) {
        inc(&self.channel_drops, &[channel], n);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the detection stage reports to [`Metrics::publish_detect`].
pub struct DetectStatus<'a> {
    pub counters: &'a DetectCounters,
    pub incidents: &'a IncidentCounters,
    pub open_incidents: usize,
    /// The learning period runs: transactions are learned, not yet judged.
    pub learning: bool,
    /// Packet time since the model last learned a transaction.
    pub model_age_secs: f64,
    /// [`crate::detect::DetectEngine::detector_counters`].
    pub detectors: &'a [(&'static str, String, u64)],
}

/// Adds `n` to one series of a counter family; a wrong label count drops the update.
pub fn inc(v: &IntCounterVec, labels: &[&str], n: u64) {
    if n > 0 {
        if let Ok(c) = v.get_metric_with_label_values(labels) {
            c.inc_by(n);
        }
    }
}

/// Adds `delta` to one series of a gauge family.
pub fn add(v: &GenericGaugeVec<prometheus::core::AtomicI64>, labels: &[&str], delta: i64) {
    if let Ok(g) = v.get_metric_with_label_values(labels) {
        g.add(delta);
    }
}

/// The `sink` label of an alert sink: its type for the local sinks (`file`, `stdout`), type and
/// configured name for network sinks (`webhook-siem`). Bounded by the configuration.
pub fn sink_label(kind: SinkKind, name: &str) -> String {
    if name == kind.name() {
        name.to_owned()
    } else {
        format!("{kind}-{name}")
    }
}

/// Copies the alert pipeline's own counters ([`PipelineCounters`], [`SinkCounters`]) into the
/// metric families, on every scrape.
///
/// The sinks count in plain atomics on their own tasks; copying at scrape time keeps the
/// exported values exact without the sinks knowing about Prometheus. Counters are advanced by
/// the difference to what is exported (they only grow), gauges are set. One lock serialises
/// concurrent scrapes so no difference is added twice.
///
/// [`SinkCounters`]: crate::alert::SinkCounters
pub struct AlertPublisher {
    pipeline: Arc<PipelineCounters>,
    sinks: Vec<(String, SinkStats)>,
    lock: Mutex<()>,
}

impl AlertPublisher {
    /// Takes the counters of `pipeline`'s sinks; every sink's series reads 0 from now on.
    pub fn new(pipeline: &AlertPipeline, m: &Metrics) -> AlertPublisher {
        let p = AlertPublisher {
            pipeline: pipeline.counters().clone(),
            sinks: pipeline
                .sinks()
                .iter()
                .map(|s| (sink_label(s.kind, &s.name), s.clone()))
                .collect(),
            lock: Mutex::new(()),
        };
        p.publish(m);
        p
    }

    /// Brings every alert family of `m` up to the pipeline's current counts.
    pub fn publish(&self, m: &Metrics) {
        // A poisoned lock only means a scrape panicked mid-copy; the copy is idempotent.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        advance(&m.alert_submitted, load(&self.pipeline.submitted));
        advance(&m.alert_invalid, load(&self.pipeline.invalid));
        for (label, s) in &self.sinks {
            let c = s.counters.snapshot();
            for (family, now) in [
                (&m.sink_deliveries, c.delivered),
                (&m.sink_retries, c.retries),
                (&m.sink_failures, c.failures),
                (&m.sink_queue_drops, c.queue_drops),
                (&m.sink_rejected, c.rejected),
                (&m.sink_spool_drops, c.spool_drops),
                (&m.sink_oversize_drops, c.oversize_drops),
                (&m.sink_spool_corrupt, c.spool_corrupt_records),
                (&m.sink_rotations, c.rotations),
            ] {
                if let Ok(counter) = family.get_metric_with_label_values(&[label]) {
                    advance(&counter, now);
                }
            }
            for (family, now) in [
                (&m.sink_queue_depth, c.queue_depth),
                (&m.sink_spool_bytes, c.spool_bytes),
                (&m.sink_spool_pending, c.spool_pending),
            ] {
                if let Ok(g) = family.get_metric_with_label_values(&[label]) {
                    g.set(i64::try_from(now).unwrap_or(i64::MAX));
                }
            }
        }
    }
}

/// Raises an exported counter to `now`; never lowers it.
fn advance(c: &IntCounter, now: u64) {
    c.inc_by(now.saturating_sub(c.get()));
}

/// Publishes one engine's counters as deltas from what it published last.
#[derive(Debug, Default)]
pub struct EnginePublisher {
    last: Option<EngineStats>,
}

/// `now - before` for a counter that only grows; 0 if it ever went back.
fn delta(now: u64, before: u64) -> u64 {
    now.saturating_sub(before)
}

fn gauge_delta(now: usize, before: usize) -> i64 {
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let before = i64::try_from(before).unwrap_or(i64::MAX);
    now.saturating_sub(before)
}

impl EnginePublisher {
    pub fn new() -> EnginePublisher {
        EnginePublisher::default()
    }

    /// Adds what changed since the previous call to `m`.
    pub fn publish(&mut self, m: &Metrics, now: &EngineStats) {
        let zero = EngineStats {
            decode: Default::default(),
            flow: Default::default(),
            stream: Default::default(),
            http: Default::default(),
            transactions: 0,
            active_flows: 0,
            buffered_bytes: 0,
        };
        let was = self.last.as_ref().unwrap_or(&zero);
        let (d, w) = (&now.decode, &was.decode);
        for (layer, n, b) in [
            ("link", d.link_errors, w.link_errors),
            ("vlan", d.vlan_errors, w.vlan_errors),
            ("ipv4", d.ipv4_errors, w.ipv4_errors),
            ("ipv6", d.ipv6_errors, w.ipv6_errors),
            ("tcp", d.tcp_errors, w.tcp_errors),
            ("tunnel", d.tunnel_errors, w.tunnel_errors),
        ] {
            inc(&m.decode_errors, &[layer], delta(n, b));
        }
        for (kind, n, b) in [
            ("udp", d.udp, w.udp),
            ("other_l4", d.other_l4, w.other_l4),
            ("non_ip", d.non_ip, w.non_ip),
            ("unknown_linktype", d.unknown_linktype, w.unknown_linktype),
        ] {
            inc(&m.decode_skipped, &[kind], delta(n, b));
        }
        m.decode_truncated.inc_by(delta(d.truncated, w.truncated));
        for (reason, n, b) in [
            ("memcap", d.frag_memcap_drops, w.frag_memcap_drops),
            ("timeout", d.frag_timeouts, w.frag_timeouts),
            (
                "datagram_limit",
                d.frag_datagram_limit_drops,
                w.frag_datagram_limit_drops,
            ),
        ] {
            inc(&m.decode_fragment_drops, &[reason], delta(n, b));
        }

        let (f, fw) = (&now.flow, &was.flow);
        m.flow_created.inc_by(delta(f.created, fw.created));
        inc(
            &m.flow_evicted,
            &["idle"],
            delta(f.evicted_idle, fw.evicted_idle),
        );
        inc(
            &m.flow_evicted,
            &["cap"],
            delta(f.evicted_cap, fw.evicted_cap),
        );
        m.flow_not_http.inc_by(delta(f.not_http, fw.not_http));
        m.flow_active
            .add(gauge_delta(now.active_flows, was.active_flows));
        for (name, n) in &f.tcp_anomalies {
            let b = fw
                .tcp_anomalies
                .iter()
                .find(|(x, _)| x == name)
                .map_or(0, |(_, c)| *c);
            inc(&m.reassembly_anomalies, &[name], delta(*n, b));
        }

        let (s, sw) = (&now.stream, &was.stream);
        m.reassembly_gaps.inc_by(delta(s.gaps, sw.gaps));
        m.reassembly_gap_bytes
            .inc_by(delta(s.gap_bytes, sw.gap_bytes));
        m.reassembly_memcap_hits
            .inc_by(delta(s.memcap_hits, sw.memcap_hits));
        m.reassembly_buffer_limit_hits
            .inc_by(delta(s.buffer_limit_hits, sw.buffer_limit_hits));
        m.reassembly_buffered
            .add(gauge_delta(now.buffered_bytes, was.buffered_bytes));

        for ((name, n), (_, b)) in now.http.anomaly_counts().zip(was.http.anomaly_counts()) {
            inc(&m.http_anomalies, &[name], delta(n, b));
        }
        self.last = Some(now.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::OfflineSource;
    use crate::engine::{Engine, EngineConfig};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// `name{labels} value` lines of the exposition, without comments.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn names_follow_the_convention_and_labels_are_bounded() {
        let m = Metrics::new();
        // Give every labelled family one series so it is exported.
        inc(&m.alerts, &["bola", "high"], 1);
        inc(&m.sink_deliveries, &["webhook"], 1);
        inc(&m.sink_retries, &["webhook"], 1);
        inc(&m.sink_failures, &["webhook"], 1);
        add(&m.sink_queue_depth, &["webhook"], 1);
        for family in [
            &m.sink_queue_drops,
            &m.sink_rejected,
            &m.sink_spool_drops,
            &m.sink_oversize_drops,
            &m.sink_spool_corrupt,
            &m.sink_rotations,
        ] {
            inc(family, &["webhook"], 1);
        }
        add(&m.sink_spool_bytes, &["webhook"], 1);
        add(&m.sink_spool_pending, &["webhook"], 1);
        add(&m.learning_state, &["learning"], 1);
        m.model_age.with_label_values(&["baseline"]).set(1.0);
        inc(&m.http_route_transactions, &[OTHER_ROUTE, "2xx"], 1);
        m.http_duration
            .with_label_values(&[OTHER_ROUTE])
            .observe(0.01);
        let text = m.render();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert_eq!(families.len(), 54, "{families:?}");
        for (name, kind) in families {
            assert!(name.starts_with("apitap_"), "{name}");
            let parts: Vec<&str> = name.split('_').collect();
            assert!(parts.len() >= 3, "{name}: apitap_<subsystem>_<name>");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
        }
        let allowed = [
            "layer",
            "kind",
            "reason",
            "anomaly",
            "route",
            "status_class",
            "severity",
            "sink",
            "state",
            "model",
            "channel",
            "result",
            "le",
        ];
        for key in samples(&text).keys() {
            if let Some((_, labels)) = key.split_once('{') {
                for pair in labels.trim_end_matches('}').split(',') {
                    let label = pair.split('=').next().unwrap_or("");
                    assert!(allowed.contains(&label), "{key}: label {label}");
                }
            }
        }
    }

    #[test]
    fn fixed_label_values_read_zero_before_any_event() {
        let s = samples(&Metrics::new().render());
        assert_eq!(
            s.get("apitap_decode_errors_total{layer=\"ipv6\"}"),
            Some(&0.0)
        );
        assert_eq!(
            s.get("apitap_http_anomalies_total{anomaly=\"duplicate_content_length\"}"),
            Some(&0.0)
        );
        assert_eq!(
            s.get("apitap_daemon_channel_drops_total{channel=\"packets\"}"),
            Some(&0.0)
        );
        assert_eq!(
            s.get("apitap_flow_evicted_total{reason=\"cap\"}"),
            Some(&0.0)
        );
    }

    fn run_engine(pcap: &str, publish_every: usize, m: &Metrics) -> EngineStats {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("captures")
            .join(pcap);
        let mut src = OfflineSource::open(&[path]).expect("bundled capture");
        let mut engine = Engine::new(EngineConfig::default());
        let mut publisher = EnginePublisher::new();
        let mut out = Vec::new();
        let mut n = 0usize;
        while let Some(p) = src.next_packet() {
            engine.process(&p, &mut out);
            n += 1;
            if n % publish_every == 0 {
                publisher.publish(m, &engine.stats());
            }
        }
        engine.finish(&mut out);
        publisher.publish(m, &engine.stats());
        engine.stats()
    }

    /// Publishing deltas at any cadence ends at the engine's own totals: nothing is lost or
    /// counted twice.
    #[test]
    fn deltas_add_up_to_the_engine_totals_whatever_the_cadence() {
        for every in [1, 7, 1_000_000] {
            let m = Metrics::new();
            let st = run_engine("api-impaired.pcap", every, &m);
            let s = samples(&m.render());
            assert_eq!(
                s["apitap_flow_created_total"], st.flow.created as f64,
                "every {every}"
            );
            assert_eq!(s["apitap_reassembly_gaps_total"], st.stream.gaps as f64);
            assert_eq!(
                s["apitap_reassembly_gap_bytes_total"],
                st.stream.gap_bytes as f64
            );
            assert_eq!(s["apitap_flow_active_flows"], st.active_flows as f64);
            assert_eq!(
                s["apitap_reassembly_buffered_bytes"],
                st.buffered_bytes as f64
            );
            let anomalies: f64 = s
                .iter()
                .filter(|(k, _)| k.starts_with("apitap_http_anomalies_total"))
                .map(|(_, v)| v)
                .sum();
            let want: u64 = st.http.anomaly_counts().map(|(_, c)| c).sum();
            assert_eq!(anomalies, want as f64);
            let tcp: f64 = s
                .iter()
                .filter(|(k, _)| k.starts_with("apitap_reassembly_anomalies_total"))
                .map(|(_, v)| v)
                .sum();
            let want: u64 = st.flow.tcp_anomalies.iter().map(|(_, c)| c).sum();
            assert_eq!(tcp, want as f64);
            assert!(st.stream.gaps > 0, "the impaired capture has gaps to count");
        }
    }

    /// Every sink counter reaches its family under the sink's label, exactly, however often it
    /// is scraped.
    #[test]
    fn alert_publisher_copies_the_sink_counters() {
        use crate::alert::config::{FileSinkConfig, SinksConfig};
        use crate::alert::{Alert, AlertKind, Client, Endpoint};
        use crate::common::Timestamp;

        let sample = |i: u8, base: Timestamp| {
            let mut a = Alert::new(
                AlertKind::Bola,
                Endpoint {
                    host: "api.example.com".into(),
                    method: "GET".into(),
                    route: "/users/{id}".into(),
                },
                Client {
                    ip: Some(std::net::IpAddr::from([10, 0, 0, i])),
                    identity: None,
                    role: None,
                },
                base,
            );
            a.summary = format!("Alert {i}.");
            a
        };

        let dir = std::env::temp_dir().join(format!("apitap-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = SinksConfig {
            file: Some(FileSinkConfig {
                path: dir.join("alerts.jsonl"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pipeline = AlertPipeline::new(&cfg).expect("file sink starts");
        let m = Metrics::new();
        let publisher = AlertPublisher::new(&pipeline, &m);
        let s = samples(&m.render());
        assert_eq!(
            s.get("apitap_sink_deliveries_total{sink=\"file\"}"),
            Some(&0.0)
        );
        assert_eq!(s.get("apitap_sink_spool_bytes{sink=\"file\"}"), Some(&0.0));

        let base = Timestamp::from_secs_nanos(1_700_000_000, 0);
        for i in 0..7 {
            pipeline.submit(sample(i, base)).expect("valid alert");
        }
        let mut bad = sample(7, base);
        bad.summary.clear();
        assert!(pipeline.submit(bad).is_err());
        let report = pipeline.shutdown();
        assert_eq!(report.sinks[0].2.delivered, 7);
        for _ in 0..3 {
            publisher.publish(&m);
        }
        let s = samples(&m.render());
        assert_eq!(s["apitap_alert_submitted_total"], 7.0);
        assert_eq!(s["apitap_alert_invalid_total"], 1.0);
        assert_eq!(s["apitap_sink_deliveries_total{sink=\"file\"}"], 7.0);
        assert_eq!(s["apitap_sink_queue_depth_alerts{sink=\"file\"}"], 0.0);
        assert_eq!(s["apitap_sink_queue_drops_total{sink=\"file\"}"], 0.0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Publishing the detection state any number of times exports exactly the engine's counts.
    #[test]
    fn detect_status_is_published_exactly() {
        let m = Metrics::new();
        let mut counters = DetectCounters::default();
        let mut incidents = IncidentCounters::default();
        for step in 1..=3u64 {
            counters.transactions = 10 * step;
            counters.findings = step;
            counters.learned = 9 * step;
            counters.withheld_from_learning = step;
            incidents.suppressed.insert(step as usize, 2);
            incidents.rate_limited = step;
            for _ in 0..2 {
                let detectors = [
                    ("bola", "ids_harvested".to_owned(), 100 * step),
                    ("identity", "credential_cache_hits".to_owned(), 7 * step),
                ];
                m.publish_detect(&DetectStatus {
                    counters: &counters,
                    incidents: &incidents,
                    open_incidents: step as usize,
                    learning: step == 1,
                    model_age_secs: 5.0,
                    detectors: &detectors,
                });
            }
        }
        let s = samples(&m.render());
        assert_eq!(s["apitap_detect_transactions_total"], 30.0);
        assert_eq!(s["apitap_detect_findings_total"], 3.0);
        assert_eq!(s["apitap_detect_learned_total"], 27.0);
        assert_eq!(s["apitap_detect_withheld_total"], 3.0);
        assert_eq!(
            s["apitap_detect_suppressed_total"], 6.0,
            "summed over rules"
        );
        assert_eq!(s["apitap_detect_rate_limited_total"], 3.0);
        assert_eq!(
            s["apitap_detect_detector_events_total{counter=\"ids_harvested\",detector=\"bola\"}"],
            300.0
        );
        assert_eq!(
            s["apitap_detect_detector_events_total{counter=\"credential_cache_hits\",detector=\"identity\"}"],
            21.0
        );
        assert_eq!(s["apitap_detect_incidents_open"], 3.0);
        assert_eq!(s["apitap_detect_learning"], 0.0);
        assert_eq!(s["apitap_baseline_learning_state{state=\"learning\"}"], 0.0);
        assert_eq!(
            s["apitap_baseline_learning_state{state=\"detecting\"}"],
            1.0
        );
        assert_eq!(
            s["apitap_baseline_model_age_seconds{model=\"baseline\"}"],
            5.0
        );
    }

    #[test]
    fn sink_labels_name_type_and_configured_name() {
        assert_eq!(sink_label(SinkKind::File, "file"), "file");
        assert_eq!(sink_label(SinkKind::Stdout, "stdout"), "stdout");
        assert_eq!(sink_label(SinkKind::Webhook, "siem"), "webhook-siem");
        assert_eq!(sink_label(SinkKind::Alertmanager, "am"), "alertmanager-am");
    }
}

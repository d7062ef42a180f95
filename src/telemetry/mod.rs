//! Telemetry: named counters of a run, the Prometheus metric catalogue, and the bounded choice
//! of endpoints that get their own metric series.
//!
//! Each stage keeps plain counters in its own stats struct; this module names them so the
//! summary line of `apitap flows` and the metrics of `apitap run` list the same things under
//! the same names. Only the daemon reads wall time to publish them; the stages never do.

pub mod metrics;
pub mod routes;

pub use metrics::{EnginePublisher, Metrics, OTHER_ROUTE};
pub use routes::TopRoutes;

use crate::engine::EngineStats;

/// Anomalies by name across layers (TCP reassembly, HTTP), non-zero only, sorted by name.
pub fn anomaly_counts(s: &EngineStats) -> Vec<(&'static str, u64)> {
    let mut v: Vec<(&'static str, u64)> = s
        .http
        .anomaly_counts()
        .chain(s.flow.tcp_anomalies.iter().copied())
        .filter(|(_, c)| *c > 0)
        .collect();
    v.sort();
    v
}

/// Input that was counted and skipped instead of parsed, non-zero only.
pub fn skip_counts(s: &EngineStats) -> Vec<(&'static str, u64)> {
    let d = &s.decode;
    let mut v = vec![
        ("non_tcp", d.udp + d.other_l4),
        ("non_ip", d.non_ip),
        ("decode_errors", d.errors()),
        ("unknown_linktype", d.unknown_linktype),
        ("truncated_packets", d.truncated),
        ("frag_memcap_drops", d.frag_memcap_drops),
        ("frag_timeouts", d.frag_timeouts),
        ("reassembly_buffer_limit_hits", s.stream.buffer_limit_hits),
        ("reassembly_memcap_hits", s.stream.memcap_hits),
        ("reassembly_dropped_segments", s.stream.dropped_segments),
        ("flows_evicted_cap", s.flow.evicted_cap),
        ("flows_not_http", s.flow.not_http),
        ("flows_tunnel", s.flow.tunnels),
        ("segments_before_synack", s.flow.ignored_before_synack),
        ("http_resyncs", s.http.resyncs),
        ("http_junk_bytes", s.http.junk_bytes),
    ];
    v.retain(|(_, c)| *c > 0);
    v
}

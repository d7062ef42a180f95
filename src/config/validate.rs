//! Range and consistency checks of a parsed [`Config`].
//!
//! Every numeric option has a range here; the ranges keep each limit meaningful (a snaplen that
//! cannot hold an IP header, a zero-sized queue) and every product the daemon computes from
//! them far from overflow. All problems are collected, so one run of `apitap config check`
//! lists everything to fix.

use super::{Config, Problem, Secret};
use crate::identity::{IdentityError, MIN_SECRET_BYTES};
use std::fmt::Display;
use std::net::SocketAddr;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Collects problems for one section.
struct Section<'a> {
    name: &'static str,
    out: &'a mut Vec<Problem>,
}

impl Section<'_> {
    fn fail(&mut self, key: &str, value: impl Display, reason: impl Into<String>) {
        self.out.push(Problem {
            section: self.name.into(),
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    /// `lo <= v <= hi`, for any unsigned integer type.
    fn range(&mut self, key: &str, v: impl Into<u64>, lo: u64, hi: u64) {
        let v = v.into();
        if v < lo || v > hi {
            self.fail(key, v, format!("must be between {lo} and {hi}"));
        }
    }

    fn range_usize(&mut self, key: &str, v: usize, lo: u64, hi: u64) {
        self.range(key, u64::try_from(v).unwrap_or(u64::MAX), lo, hi);
    }
}

/// Every problem of `cfg`, in file order.
pub(super) fn check(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    capture(cfg, &mut out);
    daemon(cfg, &mut out);
    metrics(cfg, &mut out);
    output(cfg, &mut out);
    alert(cfg, &mut out);
    secrets(cfg, &mut out);
    decode(cfg, &mut out);
    flow(cfg, &mut out);
    stream(cfg, &mut out);
    http(cfg, &mut out);
    identity(cfg, &mut out);
    routes(cfg, &mut out);
    detect(cfg, &mut out);
    out
}

fn detect(cfg: &Config, out: &mut Vec<Problem>) {
    let mut s = Section {
        name: "detect",
        out,
    };
    // The detection stage owns its checks.
    for p in cfg.detect.problems() {
        s.fail(&p.key, p.value, p.reason);
    }
}

fn capture(cfg: &Config, out: &mut Vec<Problem>) {
    let c = &cfg.capture;
    let mut s = Section {
        name: "capture",
        out,
    };
    s.range("snaplen_bytes", c.snaplen_bytes, 64, 262_144);
    s.range("buffer_bytes", c.buffer_bytes, 64 * KIB, 2047 * MIB);
    s.range("read_timeout_ms", c.read_timeout_ms, 1, 10_000);
    if !c.filter.trim().is_empty() {
        if let Err(reason) = compile_filter(&c.filter) {
            s.fail("filter", format!("{:?}", c.filter), reason);
        }
    }
    if c.interface.trim() != c.interface {
        s.fail(
            "interface",
            format!("{:?}", c.interface),
            "has leading or trailing spaces: remove them",
        );
    }
}

/// Compiles a BPF filter for Ethernet without opening anything, to catch typos at load time
/// rather than when the interface is opened.
fn compile_filter(filter: &str) -> Result<(), String> {
    let cap = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| e.to_string())?;
    cap.compile(filter, true)
        .map(drop)
        .map_err(|e| format!("not a valid BPF filter ({e}): check it with tcpdump -d"))
}

fn daemon(cfg: &Config, out: &mut Vec<Problem>) {
    let d = &cfg.daemon;
    let mut s = Section {
        name: "daemon",
        out,
    };
    s.range_usize("workers", d.workers, 0, 256);
    s.range_usize("max_queued_batches", d.max_queued_batches, 1, 65_536);
    let snaplen = u64::from(cfg.capture.snaplen_bytes);
    if (d.batch_bytes as u64) < snaplen || d.batch_bytes as u64 > 64 * MIB {
        s.fail(
            "batch_bytes",
            d.batch_bytes,
            format!(
                "must be between [capture] snaplen_bytes ({snaplen}) and {}, so that any \
                 captured packet fits in a batch",
                64 * MIB
            ),
        );
    }
    s.range_usize("max_batch_packets", d.max_batch_packets, 1, 65_536);
    s.range("batch_timeout_ms", d.batch_timeout_ms, 1, 10_000);
    s.range_usize(
        "max_queued_transactions",
        d.max_queued_transactions,
        1,
        1_000_000,
    );
    s.range("stats_interval_ms", d.stats_interval_ms, 100, 60_000);
    if d.user.trim() != d.user || d.user.contains('\0') {
        s.fail(
            "user",
            format!("{:?}", d.user),
            "is not a user name: remove spaces and control characters",
        );
    }
}

fn metrics(cfg: &Config, out: &mut Vec<Problem>) {
    let m = &cfg.metrics;
    let mut s = Section {
        name: "metrics",
        out,
    };
    if !m.listen.is_empty() && m.listen.parse::<SocketAddr>().is_err() {
        s.fail(
            "listen",
            format!("{:?}", m.listen),
            "must be an address and port like \"127.0.0.1:9187\" or \"[::1]:9187\", or empty \
             for no metrics server",
        );
    }
    s.range_usize("max_connections", m.max_connections, 1, 1024);
    s.range("request_timeout_secs", m.request_timeout_secs, 1, 300);
    s.range_usize("max_route_series", m.max_route_series, 0, 1000);
    let lo = (m.max_route_series as u64).max(1);
    if (m.max_tracked_routes as u64) < lo || m.max_tracked_routes > 100_000 {
        s.fail(
            "max_tracked_routes",
            m.max_tracked_routes,
            format!("must be between max_route_series ({lo}) and 100000"),
        );
    }
    s.range("route_refresh_secs", m.route_refresh_secs, 1, 86_400);
    s.range_usize(
        "quality_window_transactions",
        m.quality_window_transactions,
        1,
        1_000_000,
    );
}

fn output(cfg: &Config, out: &mut Vec<Problem>) {
    let o = &cfg.output;
    let mut s = Section {
        name: "output",
        out,
    };
    s.range("flush_interval_ms", o.flush_interval_ms, 10, 60_000);
}

fn alert(cfg: &Config, out: &mut Vec<Problem>) {
    let mut s = Section { name: "alert", out };
    // The sinks own their checks (keys relative to the section, like `webhook[0].url`); only
    // the section is added here.
    if let Err(errors) = cfg.alert.validate() {
        for e in errors {
            s.fail(&e.key, e.value, e.reason);
        }
    }
    // A key written here would sit in plain text in every `Debug` print of the configuration;
    // `[secrets]` holds it redacted and can take it from the environment instead.
    for (i, w) in cfg.alert.webhook.iter().enumerate() {
        if let Some(secret) = &w.secret {
            s.fail(
                &format!("webhook[{i}].secret"),
                Secret::new(secret.as_str()).redacted(),
                format!(
                    "is not read here: set [secrets] webhook_secret or {} instead",
                    super::ENV_WEBHOOK_SECRET
                ),
            );
        }
    }
}

fn secrets(cfg: &Config, out: &mut Vec<Problem>) {
    let mut s = Section {
        name: "secrets",
        out,
    };
    let key: &Secret = &cfg.secrets.pseudonym_key;
    if !key.is_empty() && key.expose().len() < MIN_SECRET_BYTES {
        s.fail(
            "pseudonym_key",
            key.redacted(),
            format!(
                "must be at least {MIN_SECRET_BYTES} random bytes (or set \
                 {}), the same on every sensor whose identities should correlate",
                super::ENV_PSEUDONYM_KEY
            ),
        );
    }
}

fn decode(cfg: &Config, out: &mut Vec<Problem>) {
    let d = &cfg.decode;
    let mut s = Section {
        name: "decode",
        out,
    };
    // A fragment memcap below one largest datagram could never reassemble it.
    s.range_usize("frag_memcap_bytes", d.frag_memcap_bytes, 64 * KIB, 16 * GIB);
    s.range("frag_timeout_secs", d.frag_timeout_secs, 1, 3600);
    s.range_usize("max_frag_datagrams", d.max_frag_datagrams, 1, 1_000_000);
    s.range_usize("max_tunnel_depth", d.max_tunnel_depth, 0, 16);
}

fn flow(cfg: &Config, out: &mut Vec<Problem>) {
    let f = &cfg.flow;
    let mut s = Section { name: "flow", out };
    s.range_usize("max_flows", f.max_flows, 1, 100_000_000);
    s.range("idle_timeout_secs", f.idle_timeout_secs, 1, 7 * 86_400);
    s.range("closed_linger_secs", f.closed_linger_secs, 0, 3600);
    s.range("max_non_http_bytes", f.max_non_http_bytes, 1, GIB);
    s.range_usize(
        "reassembly_memcap_bytes",
        f.reassembly_memcap_bytes,
        MIB,
        1024 * GIB,
    );
}

fn stream(cfg: &Config, out: &mut Vec<Problem>) {
    let t = &cfg.stream;
    let mut s = Section {
        name: "stream",
        out,
    };
    s.range_usize("max_buffered_bytes", t.max_buffered_bytes, KIB, GIB);
    s.range_usize("max_segments", t.max_segments, 1, 1_000_000);
    // Beyond 2^31 "ahead" and "behind" are no longer distinguishable in sequence space.
    s.range("max_ahead_bytes", t.max_ahead_bytes, 1, 1 << 31);
    s.range_usize("overlap_retain_bytes", t.overlap_retain_bytes, 0, 16 * MIB);
}

fn http(cfg: &Config, out: &mut Vec<Problem>) {
    let h = &cfg.http;
    let mut s = Section { name: "http", out };
    s.range_usize("body_limit_bytes", h.body_limit_bytes, 0, 64 * MIB);
    s.range_usize("max_header_bytes", h.max_header_bytes, KIB, 16 * MIB);
    s.range_usize("max_headers", h.max_headers, 1, 10_000);
    s.range_usize("max_pending_requests", h.max_pending_requests, 1, 100_000);
    s.range(
        "max_decompressed_bytes",
        h.max_decompressed_bytes,
        1,
        16 * GIB,
    );
    s.range(
        "max_decompression_ratio",
        h.max_decompression_ratio,
        1,
        1_000_000,
    );
    s.range(
        "min_ratio_check_bytes",
        h.min_ratio_check_bytes,
        0,
        16 * GIB,
    );
    s.range_usize("max_chunk_line_bytes", h.max_chunk_line_bytes, 16, MIB);
    s.range_usize("max_interim_responses", h.max_interim_responses, 0, 1000);
    s.range_usize(
        "max_tunnel_wait_bytes",
        h.max_tunnel_wait_bytes,
        0,
        16 * MIB,
    );
    s.range_usize(
        "max_socks_handshake_bytes",
        h.max_socks_handshake_bytes,
        0,
        64 * KIB,
    );
}

fn identity(cfg: &Config, out: &mut Vec<Problem>) {
    let mut s = Section {
        name: "identity",
        out,
    };
    // The identity stage owns its checks; only its messages are reshaped here. Its zero-limit
    // check is left to the ranges below (which give the bounds) and must not hide the checks
    // that follow it there, so it runs on a copy with those limits made valid.
    let mut names = cfg.identity.clone();
    names.max_jwt_bytes = names.max_jwt_bytes.max(1);
    names.max_forwarded_hops = names.max_forwarded_hops.max(1);
    match names.validate() {
        Ok(_) => {}
        Err(IdentityError::InvalidTrustedProxy { value }) => s.fail(
            "trusted_proxies",
            format!("{value:?}"),
            "is not a CIDR or IP address: write it like \"10.0.0.0/8\", \"2001:db8::/32\" or \
             \"192.0.2.7\"",
        ),
        Err(IdentityError::InvalidName { key, value }) => s.fail(
            key,
            format!("{value:?}"),
            "is not a usable name: remove it or correct it",
        ),
        Err(IdentityError::ZeroLimit { key }) => s.fail(key, 0, "must be at least 1"),
        Err(e @ IdentityError::SecretTooShort { .. }) => s.fail("", "", e.to_string()),
    }
    let i = &cfg.identity;
    s.range_usize("max_jwt_bytes", i.max_jwt_bytes, 1, MIB);
    s.range_usize("max_roles", i.max_roles, 0, 1024);
    s.range_usize("max_role_bytes", i.max_role_bytes, 1, 4096);
    s.range_usize("max_claim_bytes", i.max_claim_bytes, 1, 64 * KIB);
    s.range_usize("max_audiences", i.max_audiences, 0, 1024);
    s.range_usize("max_forwarded_hops", i.max_forwarded_hops, 1, 1024);
    s.range("jwt_leeway_secs", i.jwt_leeway_secs, 0, 86_400);
}

fn routes(cfg: &Config, out: &mut Vec<Problem>) {
    let r = &cfg.routes;
    let mut s = Section {
        name: "routes",
        out,
    };
    s.range("fold_min_distinct", r.fold_min_distinct, 1, 100_000);
    s.range("fold_rare_max_hits", r.fold_rare_max_hits, 1, 1_000_000);
    s.range("fold_min_rare_percent", r.fold_min_rare_percent, 0, 100);
    s.range("stable_min_hits", r.stable_min_hits, 1, u64::from(u32::MAX));
    s.range("stable_min_percent", r.stable_min_percent, 0, 100);
    if r.max_tracked_values as u64 <= u64::from(r.fold_min_distinct)
        || r.max_tracked_values > 1_000_000
    {
        s.fail(
            "max_tracked_values",
            r.max_tracked_values,
            format!(
                "must be more than fold_min_distinct ({}) and at most 1000000: a position must \
                 track enough values to decide to fold",
                r.fold_min_distinct
            ),
        );
    }
    s.range_usize(
        "max_templates_per_host",
        r.max_templates_per_host,
        1,
        10_000_000,
    );
    s.range_usize("max_hosts", r.max_hosts, 1, 1_000_000);
    s.range_usize("max_host_bytes", r.max_host_bytes, 1, 1024);
    s.range_usize(
        "max_methods_per_template",
        r.max_methods_per_template,
        1,
        1024,
    );
    s.range_usize("max_segments", r.max_segments, 1, 1024);
    s.range_usize(
        "max_literal_segment_bytes",
        r.max_literal_segment_bytes,
        1,
        4096,
    );
}

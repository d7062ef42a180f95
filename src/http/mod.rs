//! HTTP/1.x: turns the two reassembled byte streams of a TCP connection into the exact sequence
//! of [`Transaction`](crate::transaction::Transaction)s that crossed the wire.
//!
//! Layout (as in Suricata): [`parser`] is pure grammar (start lines, heads, chunk-size lines);
//! [`body`] does transfer and content decoding; [`conn`] is the per-connection state machine that
//! owns the queue of pending transactions and pairs responses with requests; [`anomaly`] names
//! every oddity.
//!
//! Invariants:
//! - No I/O, no clock, no threads: time comes in with each call.
//! - No input panics, and memory per connection is bounded by the [`HttpConfig`] limits.
//! - Parsing never stops: junk, gaps and oversize heads lead to a resync on the next line that
//!   starts a message, and a tunnel (CONNECT, Upgrade) only counts bytes.
//! - The output for a connection does not depend on how its bytes were split into calls.

pub mod anomaly;
pub mod body;
pub mod conn;
pub mod parser;
pub mod socks;

pub use anomaly::HttpAnomaly;
pub use conn::HttpConn;

/// Limits of the HTTP parser (`[http]` in the config file). Every limit has a policy when hit
/// and a counter or flag.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Decoded body bytes kept per message in `Body.data`; lengths are always counted in full.
    /// When hit: the rest is counted, not kept, and the transaction is flagged `body_truncated`.
    pub body_limit_bytes: usize,
    /// Longest message head (start line and fields). When hit: the fields read so far are kept,
    /// the message is flagged `oversize_head`, and parsing resyncs on the next message.
    pub max_header_bytes: usize,
    /// Header fields kept per message; framing fields are read from all of them. When hit:
    /// the rest are dropped and `too_many_headers` is raised.
    pub max_headers: usize,
    /// Pipelined requests awaiting a response. When hit: the oldest is emitted without a
    /// response and flagged `excessive_pipelining`.
    pub max_pending_requests: usize,
    /// Decoded bytes produced per gzip/deflate body. When hit: decoding stops, the body is
    /// flagged `decompression_bomb` and `Body.len` is what was decoded.
    pub max_decompressed_bytes: u64,
    /// Decoded-to-compressed size ratio allowed per body once `min_ratio_check_bytes` have been
    /// decoded. When hit: like `max_decompressed_bytes`.
    pub max_decompression_ratio: u64,
    /// Decoded bytes below which the ratio guard does not apply (small, highly compressible
    /// bodies such as JSON of zeros are normal).
    pub min_ratio_check_bytes: u64,
    /// Longest chunk-size line (size and extensions). When hit: `oversize_chunk_line`, the
    /// message ends and parsing resyncs.
    pub max_chunk_line_bytes: usize,
    /// Interim (1xx) responses remembered before one final response. When hit: the rest are not
    /// recorded and `too_many_interim_responses` is raised.
    pub max_interim_responses: usize,
    /// Client bytes held back after a CONNECT or Upgrade request until the server decides whether
    /// a tunnel starts. When hit: the bytes are parsed as HTTP without waiting.
    pub max_tunnel_wait_bytes: usize,
    /// Bytes of one side's SOCKS handshake held at the start of a connection (a SOCKS5 greeting,
    /// login and request fit in 1032). When hit: the connection is not SOCKS, the bytes are
    /// parsed as HTTP, and `socks_abandoned` counts it.
    pub max_socks_handshake_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit_bytes: 64 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 256,
            max_pending_requests: 100,
            max_decompressed_bytes: 64 * 1024 * 1024,
            max_decompression_ratio: 1000,
            min_ratio_check_bytes: 1024 * 1024,
            max_chunk_line_bytes: 16 * 1024,
            max_interim_responses: 16,
            max_tunnel_wait_bytes: 64 * 1024,
            max_socks_handshake_bytes: 2048,
        }
    }
}

/// Counters of the HTTP stage, summed over connections by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Request heads parsed.
    pub requests: u64,
    /// Final response heads parsed (including HTTP/0.9 responses).
    pub responses: u64,
    /// Interim (1xx other than 101) responses parsed.
    pub interim_responses: u64,
    /// Transactions emitted.
    pub transactions: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Bytes reported missing by gaps.
    pub gap_bytes: u64,
    /// Times a direction lost message framing and started looking for the next message.
    pub resyncs: u64,
    /// Bytes skipped while looking for a message start.
    pub junk_bytes: u64,
    /// Tunnels entered (CONNECT 2xx, 101 Switching Protocols).
    pub tunnels: u64,
    /// Bytes counted but not parsed inside tunnels.
    pub tunnel_bytes: u64,
    /// Bodies whose content went past `body_limit_bytes`.
    pub bodies_truncated: u64,
    /// Connections whose SOCKS handshake was skipped before parsing HTTP.
    pub socks_handshakes: u64,
    /// Connections that opened like SOCKS but were not (or whose handshake could not finish);
    /// their bytes were parsed as HTTP.
    pub socks_abandoned: u64,
    /// Anomalies raised, indexed by [`HttpAnomaly::index`].
    pub anomalies: [u64; HttpAnomaly::COUNT],
}

impl HttpStats {
    /// How often one anomaly was raised.
    pub fn anomaly(&self, a: HttpAnomaly) -> u64 {
        self.anomalies.get(a.index()).copied().unwrap_or(0)
    }

    /// `(name, count)` for every anomaly, in declaration order.
    pub fn anomaly_counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        HttpAnomaly::ALL
            .iter()
            .map(|a| (a.name(), self.anomaly(*a)))
    }

    /// Adds another set of counters into this one.
    pub fn merge(&mut self, o: &HttpStats) {
        self.requests += o.requests;
        self.responses += o.responses;
        self.interim_responses += o.interim_responses;
        self.transactions += o.transactions;
        self.gaps += o.gaps;
        self.gap_bytes = self.gap_bytes.saturating_add(o.gap_bytes);
        self.resyncs += o.resyncs;
        self.junk_bytes = self.junk_bytes.saturating_add(o.junk_bytes);
        self.tunnels += o.tunnels;
        self.tunnel_bytes = self.tunnel_bytes.saturating_add(o.tunnel_bytes);
        self.bodies_truncated += o.bodies_truncated;
        self.socks_handshakes += o.socks_handshakes;
        self.socks_abandoned += o.socks_abandoned;
        for (a, b) in self.anomalies.iter_mut().zip(o.anomalies.iter()) {
            *a += b;
        }
    }
}

/// What the first bytes of a stream look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniff {
    Request,
    Response,
    Unknown,
}

/// Does this look like the start of a request or a response? Used to decide roles when the
/// handshake was not seen. Looks at the first line only (complete or not).
pub fn sniff(first_bytes: &[u8]) -> Sniff {
    let line_end = memchr::memchr(b'\n', first_bytes);
    let line = first_bytes
        .get(..line_end.unwrap_or(first_bytes.len()))
        .unwrap_or(&[]);
    if line.len() >= 5 && parser::may_start_status_line(line) {
        let complete_ok = parser::parse_status_line(line).is_some();
        // A partial line cannot be checked fully; `HTTP/` is distinctive enough.
        return if complete_ok || line_end.is_none() {
            Sniff::Response
        } else {
            Sniff::Unknown
        };
    }
    if line_end.is_some() {
        return match parser::parse_request_line(line) {
            Some(_) => Sniff::Request,
            None => Sniff::Unknown,
        };
    }
    // A partial first line: an upper-case method token followed by a space and a target.
    let Some(sp) = line.iter().position(|b| *b == b' ') else {
        return Sniff::Unknown;
    };
    let method = line.get(..sp).unwrap_or(&[]);
    let target_start = line.get(sp + 1).copied();
    if (1..=32).contains(&method.len())
        && method
            .iter()
            .all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_')
        && target_start.is_some_and(|b| b.is_ascii_graphic())
    {
        Sniff::Request
    } else {
        Sniff::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_classifies_first_bytes() {
        let cases: &[(&[u8], Sniff)] = &[
            (b"GET / HTTP/1.1\r\n", Sniff::Request),
            (b"POST /api/v1/x", Sniff::Request),
            (b"GET /x\r\n", Sniff::Request),
            (b"HTTP/1.1 200 OK\r\n", Sniff::Response),
            (b"HTTP/1.", Sniff::Response),
            // Every line that starts with `HTTP/` is a status line (see `parse_status_line`).
            (b"HTTP/1.1 OK\r\n", Sniff::Response),
            (b"HTTX/1.1 200 OK\r\n", Sniff::Unknown),
            (b"\x16\x03\x01\x00\xa5\x01", Sniff::Unknown),
            (b"SSH-2.0-OpenSSH_8.9\r\n", Sniff::Unknown),
            (b"", Sniff::Unknown),
            (b"G", Sniff::Unknown),
        ];
        for (bytes, want) in cases {
            assert_eq!(sniff(bytes), *want, "{:?}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn stats_merge_adds_counters() {
        let mut a = HttpStats {
            requests: 1,
            ..HttpStats::default()
        };
        let mut b = HttpStats {
            requests: 2,
            ..HttpStats::default()
        };
        b.anomalies[HttpAnomaly::ObsFold.index()] = 3;
        a.merge(&b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.anomaly(HttpAnomaly::ObsFold), 3);
        assert_eq!(a.anomaly_counts().count(), HttpAnomaly::COUNT);
    }
}

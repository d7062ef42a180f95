//! The security scenario suite: labelled captures of an invented bank API that the detectors
//! are scored on, the OpenAPI spec that documents it, and the scoring function.
//!
//! Three scenarios share one API model ([`bank`]): `security-train` (benign, a Monday morning),
//! `security-benign` (benign, one hour at about 50 requests/s) and `security-attack` (the same
//! benign background plus labelled incidents of every alert kind, [`attacks`]). Each incident
//! has one [`Label`]; [`score()`] matches alerts against labels.
//!
//! Traffic is planned as [`Session`]s (one TCP connection each: who, when, which request and
//! response bytes) and rendered through [`TcpConversation`]; sessions are opened in start-time
//! order and their packets merged by timestamp, so the pcap never goes back in time.
//!
//! Invariants: nothing reads a clock or the OS; the same [`SecurityOptions`] give the same bytes.
//! Memory is bounded by the sessions open at one moment (benign sessions last seconds, the
//! longest incident session a few minutes), never by the capture length. Incidents never
//! overlap in time and every label lies inside the capture.

pub mod attacks;
pub mod bank;
pub mod labels;
pub mod score;
pub mod spec;

pub use labels::Label;
pub use score::{false_alerts_per_hour, score, KindScore, Score};

use super::pcap_writer::{PcapWriter, LINKTYPE_ETHERNET};
use super::rng::Rng;
use super::tcp::{Impairments, TcpConfig, TcpConversation};
use crate::common::{Direction, Duration, Timestamp};
use bank::Bank;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;

/// The virtual host every request names.
pub const HOST: &str = "api.bank.example";

/// 2026-01-05 00:00:00 UTC, a Monday.
const TRAIN_DAY: u64 = 1_767_571_200;
/// 2026-01-12 00:00:00 UTC, the Monday after.
const TEST_DAY: u64 = TRAIN_DAY + 7 * 86_400;

/// Which security capture to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityScenario {
    /// Benign training traffic, Monday 2026-01-05 from 08:00 UTC (4 hours by default).
    Train,
    /// Benign test traffic, Monday 2026-01-12 10:00-11:00 UTC.
    Benign,
    /// Benign background plus labelled incidents, Monday 2026-01-12 11:00-12:00 UTC.
    Attack,
}

impl SecurityScenario {
    pub const ALL: [SecurityScenario; 3] = [
        SecurityScenario::Train,
        SecurityScenario::Benign,
        SecurityScenario::Attack,
    ];

    /// The name used with `apitap generate --scenario`.
    pub fn name(self) -> &'static str {
        match self {
            SecurityScenario::Train => "security-train",
            SecurityScenario::Benign => "security-benign",
            SecurityScenario::Attack => "security-attack",
        }
    }

    pub fn from_name(s: &str) -> Option<SecurityScenario> {
        SecurityScenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Capture start, seconds since the epoch.
    pub fn start_secs(self) -> u64 {
        match self {
            SecurityScenario::Train => TRAIN_DAY + 8 * 3_600,
            SecurityScenario::Benign => TEST_DAY + 10 * 3_600,
            SecurityScenario::Attack => TEST_DAY + 11 * 3_600,
        }
    }

    /// Capture length when `--hours` is not given.
    pub fn default_hours(self) -> f64 {
        match self {
            SecurityScenario::Train => 4.0,
            SecurityScenario::Benign | SecurityScenario::Attack => 1.0,
        }
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SecurityOptions {
    pub scenario: SecurityScenario,
    /// Seed for every random choice; the same seed gives the same bytes.
    pub seed: u64,
    /// Capture length in hours (at most 24); `None` takes the scenario's default. The attack
    /// scenario always lays its incidents over its first hour, so it needs at least one.
    pub hours: Option<f64>,
    /// Multiplies the benign request rate (1.0: the diurnal curve; 0.0: incidents only). Tests
    /// use small values to stay fast in debug builds.
    pub benign_rate_scale: f64,
}

impl SecurityOptions {
    pub fn new(scenario: SecurityScenario, seed: u64) -> SecurityOptions {
        SecurityOptions {
            scenario,
            seed,
            hours: None,
            benign_rate_scale: 1.0,
        }
    }

    /// Capture start and end.
    pub fn window(&self) -> (Timestamp, Timestamp) {
        let hours = self
            .hours
            .unwrap_or_else(|| self.scenario.default_hours())
            .clamp(0.0, 24.0);
        let start = Timestamp::from_secs_nanos(self.scenario.start_secs() as i64, 0);
        (
            start,
            start.add(Duration::from_nanos((hours * 3.6e12) as u64)),
        )
    }
}

/// What [`generate`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecuritySummary {
    pub packets: u64,
    /// Bytes of the pcap file, headers included.
    pub bytes: u64,
    /// HTTP transactions (benign and attack).
    pub transactions: u64,
    /// Of which were sent by incidents.
    pub attack_transactions: u64,
    pub connections: u64,
    pub incidents: u64,
}

/// One request and its response on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// The request bytes exactly as sent (head and body).
    pub request: Vec<u8>,
    /// The response bytes exactly as sent.
    pub response: Vec<u8>,
    /// Pause before the request goes out (client think time).
    pub think: Duration,
    /// Server time between the request and its response.
    pub work: Duration,
}

/// One planned TCP connection.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub start: Timestamp,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub exchanges: Vec<Exchange>,
    /// Capture impairments (only the protocol-anomaly incidents set any).
    pub impair: Impairments,
    /// Maximum segment size, when an incident needs small segments.
    pub mss: Option<u16>,
    /// Sent by an incident, not by the benign background.
    pub attack: bool,
}

impl Session {
    /// Estimated time of the last request: start plus every think time. Connection setup and
    /// server time add milliseconds, which labels absorb.
    pub fn last_request_at(&self) -> Timestamp {
        self.exchanges
            .iter()
            .fold(self.start, |t, e| t.add(e.think))
    }
}

/// Renders a request: start line, `Host`, the given headers in order, then `Content-Length`
/// when there is a body.
pub fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(out, "{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n");
    for (k, v) in headers {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Renders a JSON response with `Content-Length` (no body for 204).
pub fn response(status: u16, body: &[u8], date_secs: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(200 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nServer: envoy\r\n",
        reason(status),
        super::api::http_date(date_secs)
    );
    if status == 204 {
        out.extend_from_slice(b"\r\n");
        return out;
    }
    let _ = write!(
        out,
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Drives one session through a TCP conversation and returns its packets.
fn render(s: &Session, seed: u64) -> Vec<super::tcp::Packet> {
    let mut cfg = TcpConfig::new(s.client, s.server, s.start, seed);
    cfg.impair = s.impair;
    if let Some(m) = s.mss {
        cfg.mss = m;
    }
    let mut conv = TcpConversation::new(cfg);
    conv.handshake();
    for e in &s.exchanges {
        conv.send(Direction::ToServer, &e.request, e.think);
        conv.send(Direction::ToClient, &e.response, e.work);
    }
    conv.advance(Duration::from_nanos(5_000_000));
    conv.close(Direction::ToServer);
    conv.finish().packets
}

/// Writes the scenario's capture to `pcap` and, when given, one [`Label`] per line to
/// `labels` (only the attack scenario has incidents).
pub fn generate(
    opts: &SecurityOptions,
    pcap: impl Write,
    labels: Option<impl Write>,
) -> io::Result<SecuritySummary> {
    let mut out = PcapWriter::new(
        BufWriter::with_capacity(1 << 20, pcap),
        LINKTYPE_ETHERNET,
        0,
    )?;
    let bank = Bank::new(opts.seed);
    let (start, end) = opts.window();
    let plan = match opts.scenario {
        SecurityScenario::Attack => attacks::plan(&bank, opts.seed, start),
        _ => attacks::Plan::default(),
    };
    if let Some(w) = labels {
        let mut w = BufWriter::new(w);
        for l in &plan.labels {
            serde_json::to_writer(&mut w, l).map_err(io::Error::other)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    let mut benign = bank::Background::new(&bank, opts, start, end, plan.faults.clone());
    let mut incidents: VecDeque<Session> = plan.sessions.into();
    let mut summary = SecuritySummary {
        incidents: plan.labels.len() as u64,
        ..SecuritySummary::default()
    };
    let mut next_benign = benign.next_session();
    // Open connections: their remaining packets, and a heap of (next packet time, serial).
    let mut open: Vec<Option<std::vec::IntoIter<super::tcp::Packet>>> = Vec::new();
    let mut heads: Vec<Option<super::tcp::Packet>> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(Timestamp, u64, usize)>> = BinaryHeap::new();
    let seeds = Rng::new(opts.seed).fork(0x0074_6370_7365_6564);
    let mut ports: std::collections::HashMap<std::net::IpAddr, u64> = Default::default();
    loop {
        let attack_first = match (incidents.front(), &next_benign) {
            (Some(a), Some(b)) => a.start <= b.start,
            (Some(_), None) => true,
            _ => false,
        };
        let next_start = if attack_first {
            incidents.front().map(|s| s.start)
        } else {
            next_benign.as_ref().map(|s| s.start)
        };
        let head = heap.peek().map(|Reverse((t, _, _))| *t);
        // A session opens before any packet later than its start is written, which keeps the
        // merged output in time order.
        if let Some(ns) = next_start.filter(|ns| head.is_none_or(|h| *ns <= h)) {
            let _ = ns;
            let session = if attack_first {
                incidents.pop_front()
            } else {
                std::mem::replace(&mut next_benign, benign.next_session())
            };
            let Some(mut session) = session else { continue };
            let serial = summary.connections;
            // Ports come from a per-address counter: two open connections from one load
            // balancer address never share a 5-tuple.
            let n = ports.entry(session.client.ip()).or_insert(0u64);
            session.client.set_port(super::api::ephemeral_port(*n));
            *n += 1;
            summary.connections += 1;
            summary.transactions += session.exchanges.len() as u64;
            if session.attack {
                summary.attack_transactions += session.exchanges.len() as u64;
            }
            let mut packets = render(&session, seeds.fork(serial).next_u64()).into_iter();
            if let Some(first) = packets.next() {
                let slot = match open.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        open.push(None);
                        heads.push(None);
                        open.len() - 1
                    }
                };
                heap.push(Reverse((first.ts, serial, slot)));
                if let (Some(o), Some(h)) = (open.get_mut(slot), heads.get_mut(slot)) {
                    *o = Some(packets);
                    *h = Some(first);
                }
            }
            continue;
        }
        let Some(Reverse((_, serial, slot))) = heap.pop() else {
            break;
        };
        if let Some(p) = heads.get_mut(slot).and_then(Option::take) {
            out.write_packet_with_orig_len(p.ts, &p.data, p.orig_len)?;
        }
        let next = open
            .get_mut(slot)
            .and_then(|o| o.as_mut())
            .and_then(|it| it.next());
        match next {
            Some(p) => {
                heap.push(Reverse((p.ts, serial, slot)));
                if let Some(h) = heads.get_mut(slot) {
                    *h = Some(p);
                }
            }
            None => {
                if let Some(o) = open.get_mut(slot) {
                    *o = None;
                }
            }
        }
    }
    out.flush()?;
    summary.packets = out.packets();
    summary.bytes = out.bytes();
    Ok(summary)
}

#[cfg(test)]
mod tests;

//! The bidirectional flow table: one entry per TCP connection, owning its two reassembly streams
//! and its HTTP parser state.
//!
//! Invariants:
//! - A flow's key is direction-free (the lower endpoint first), plus the outer VLAN id, so both
//!   directions of a connection find the same entry.
//! - Roles (client/server) are fixed before any byte reaches the HTTP parser: from the handshake
//!   when it was seen, else from which side speaks HTTP first, else from the ports.
//! - The table never holds more than `max_flows` entries. Entries sit on an intrusive list in
//!   last-packet order, so idle expiry and eviction at the cap are O(1) per packet; time is the
//!   packet timestamp, never a clock.
//! - Every flow that leaves the table (closed, idle, evicted, end of input) is flushed first:
//!   buffered stream data is delivered (holes as gaps) and pending transactions are emitted, so
//!   nothing already seen is silently lost.

use crate::common::{Direction, Duration, Timestamp};
use crate::flow::reassembly::{
    MemBudget, Stream, StreamConfig, StreamCtx, StreamEvent, StreamStats,
};
use crate::flow::seq::SeqNum;
use crate::http::{self, HttpConfig, HttpConn, HttpStats, Sniff};
use crate::transaction::{ConnInfo, Transaction};
use crate::wire::TcpSegment;
use std::collections::HashMap;
use std::net::IpAddr;

/// Limits and timeouts of the flow table (`[flow]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Connections tracked at once; at the cap the least recently active flow is flushed and
    /// evicted (`FlowStats::evicted_cap`).
    pub max_flows: usize,
    /// A flow with no packet for this long (packet time) is flushed and removed.
    pub idle_timeout_secs: u64,
    /// A flow that saw FIN from both sides or a RST is flushed after this much packet time, so
    /// late retransmissions and reordered segments still land.
    pub closed_linger_secs: u64,
    /// Bytes delivered to the HTTP parser on a connection without a single HTTP message before
    /// apitap stops reassembling it (TLS, SSH, ... on a monitored port).
    pub max_non_http_bytes: u64,
    /// Global memory for out-of-order segments across all flows.
    pub reassembly_memcap_bytes: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_flows: 1_000_000,
            idle_timeout_secs: 300,
            closed_linger_secs: 5,
            max_non_http_bytes: 64 * 1024,
            reassembly_memcap_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Counters of the flow table.
#[derive(Clone, Debug, Default)]
pub struct FlowStats {
    pub created: u64,
    pub closed: u64,
    pub evicted_idle: u64,
    pub evicted_cap: u64,
    pub flushed_at_end: u64,
    /// Connections picked up without a handshake.
    pub midstream: u64,
    /// Connections whose roles were decided from ports alone.
    pub roles_from_ports: u64,
    /// Connections abandoned as not HTTP after `max_non_http_bytes`.
    pub not_http: u64,
    /// Connections that switched to a tunnel (CONNECT, Upgrade) and stopped being parsed.
    pub tunnels: u64,
    /// Payload bytes seen after a flow stopped being parsed (tunnel, not HTTP).
    pub ignored_bytes: u64,
    /// Packets without payload or SYN for connections not in the table (the last ACK of a
    /// connection already gone, a stray RST): not worth a flow.
    pub untracked_packets: u64,
    /// Server segments without SYN seen while the client was still in SYN-SENT; a client drops
    /// them (RFC 9293 §3.10.7.3), so they carry no data, FIN or RST into the connection.
    pub ignored_before_synack: u64,
    /// TCP anomalies raised by reassembly, by name.
    pub tcp_anomalies: Vec<(&'static str, u64)>,
}

impl FlowStats {
    fn count_tcp_anomaly(&mut self, name: &'static str) {
        match self.tcp_anomalies.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => self.tcp_anomalies.push((name, 1)),
        }
    }
}

/// One side of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// Direction-free key: endpoints in canonical order, plus the outer VLAN id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    lo: Endpoint,
    hi: Endpoint,
    vlan: Option<u16>,
}

impl FlowKey {
    pub fn new(a: Endpoint, b: Endpoint, vlan: Option<u16>) -> FlowKey {
        if a <= b {
            FlowKey { lo: a, hi: b, vlan }
        } else {
            FlowKey { lo: b, hi: a, vlan }
        }
    }
}

/// How the client/server roles of a flow were decided; later evidence may override weaker ones.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum RoleSource {
    Ports,
    Sniffed,
    Handshake,
}

const NIL: u32 = u32::MAX;

struct Flow {
    key: FlowKey,
    client: Endpoint,
    server: Endpoint,
    roles: RoleSource,
    /// Indexed by `Direction::index()`: `[client→server, server→client]`.
    streams: [Stream; 2],
    http: HttpConn,
    info: ConnInfo,
    last_ts: Timestamp,
    fin: [bool; 2],
    reset: bool,
    /// Reassembly stopped (tunnel or not HTTP); packets are only counted.
    ignored: bool,
    /// The client's SYN was seen and nothing since shows it left SYN-SENT (no SYN-ACK, no
    /// client segment with ACK). The ISN is the one its SYN carried.
    syn_sent: Option<u32>,
    /// Bytes delivered to HTTP and whether any HTTP message was recognised.
    delivered: u64,
    http_seen: bool,
    /// Neighbours on the activity list (older / newer), or `NIL`.
    older: u32,
    newer: u32,
}

/// The flow table. Single-threaded: one per packet worker.
pub struct FlowTable {
    cfg: FlowConfig,
    stream_cfg: StreamConfig,
    http_cfg: HttpConfig,
    /// Keyed with ahash's per-process random seed: flow keys are attacker-chosen, so the hash
    /// must resist collision flooding (SipHash did, at 2.4% of `apitap flows`). The map is never
    /// iterated, so the seed cannot change output order.
    index: HashMap<FlowKey, u32, ahash::RandomState>,
    slots: Vec<Option<Flow>>,
    free: Vec<u32>,
    /// Least recently active flow, and most recently active.
    oldest: u32,
    newest: u32,
    budget: MemBudget,
    pub stats: FlowStats,
    pub stream_stats: StreamStats,
    pub http_stats: HttpStats,
    /// Monotonic counter mixed into flow ids so a reused 5-tuple gets a new id.
    serial: u64,
}

/// Ports on which the server side of a midstream connection is assumed when nothing better is
/// known.
const SERVER_PORTS: &[u16] = &[
    80, 8080, 8000, 8008, 8081, 8088, 8888, 3128, 443, 8443, 3000, 5000, 9000, 9200, 81, 591,
];

impl FlowTable {
    pub fn new(cfg: FlowConfig, stream_cfg: StreamConfig, http_cfg: HttpConfig) -> FlowTable {
        let budget = MemBudget::new(cfg.reassembly_memcap_bytes);
        FlowTable {
            cfg,
            stream_cfg,
            http_cfg,
            index: HashMap::with_hasher(ahash::RandomState::new()),
            slots: Vec::new(),
            free: Vec::new(),
            oldest: NIL,
            newest: NIL,
            budget,
            stats: FlowStats::default(),
            stream_stats: StreamStats::default(),
            http_stats: HttpStats::default(),
            serial: 0,
        }
    }

    /// Flows currently tracked.
    pub fn active(&self) -> usize {
        self.index.len()
    }

    /// Out-of-order bytes held across all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Feeds one TCP segment. Completed transactions are appended to `out`.
    pub fn on_segment(&mut self, seg: &TcpSegment<'_>, ts: Timestamp, out: &mut Vec<Transaction>) {
        self.expire(ts, out);
        let src = Endpoint {
            ip: seg.src,
            port: seg.src_port,
        };
        let dst = Endpoint {
            ip: seg.dst,
            port: seg.dst_port,
        };
        let key = FlowKey::new(src, dst, seg.vlan);
        let slot = match self.index.get(&key) {
            Some(&slot) => {
                if self.is_new_connection(slot, seg) {
                    self.remove(slot, ts, out);
                    self.stats.closed += 1;
                    self.create(key, src, dst, seg, ts, out)
                } else {
                    slot
                }
            }
            None => {
                // Only a SYN or data opens a flow: a bare ACK, FIN or RST of a connection we do
                // not track carries nothing to parse.
                if !seg.flags.syn() && seg.payload.is_empty() {
                    self.stats.untracked_packets += 1;
                    return;
                }
                self.create(key, src, dst, seg, ts, out)
            }
        };
        self.touch(slot, ts);
        self.feed(slot, src, seg, ts, out);
        // A closed connection (both FINs or a RST) is not removed here: it stays in the table
        // for `closed_linger_secs` (see `expire`), as TCP's TIME-WAIT does, so retransmissions of
        // its last segments land on it as retransmissions instead of opening a midstream flow
        // that would parse the same request again. Its transactions were emitted when the FINs
        // were delivered.
    }

    /// Flushes every flow, oldest activity first. Call at end of input.
    pub fn finish(&mut self, ts: Timestamp, out: &mut Vec<Transaction>) {
        while self.oldest != NIL {
            let slot = self.oldest;
            self.remove(slot, ts, out);
            self.stats.flushed_at_end += 1;
        }
    }

    /// Removes flows idle past their timeout, judged by the newest packet time.
    pub fn expire(&mut self, now: Timestamp, out: &mut Vec<Transaction>) {
        let idle = Duration::from_secs(self.cfg.idle_timeout_secs);
        let linger = Duration::from_secs(self.cfg.closed_linger_secs);
        while self.oldest != NIL {
            let slot = self.oldest;
            let Some(f) = &self.slots[slot as usize] else {
                break;
            };
            let closed = f.reset || (f.fin[0] && f.fin[1]);
            let limit = if closed { linger } else { idle };
            if now.saturating_since(f.last_ts) <= limit {
                break;
            }
            self.remove(slot, now, out);
            if closed {
                self.stats.closed += 1;
            } else {
                self.stats.evicted_idle += 1;
            }
        }
    }

    /// A SYN (without ACK) on a flow that already ended, or carrying a different ISN after data,
    /// starts a new connection on a reused 5-tuple.
    fn is_new_connection(&self, slot: u32, seg: &TcpSegment<'_>) -> bool {
        if !seg.flags.syn() || seg.flags.ack() {
            return false;
        }
        match &self.slots[slot as usize] {
            Some(f) => f.reset || f.fin[0] || f.fin[1],
            None => false,
        }
    }

    fn create(
        &mut self,
        key: FlowKey,
        src: Endpoint,
        dst: Endpoint,
        seg: &TcpSegment<'_>,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
    ) -> u32 {
        if self.index.len() >= self.cfg.max_flows.max(1) && self.oldest != NIL {
            // Policy at the cap: flush and evict the least recently active flow.
            let victim = self.oldest;
            self.remove(victim, ts, out);
            self.stats.evicted_cap += 1;
        }
        let (client, server, roles) = decide_roles(src, dst, seg);
        if roles != RoleSource::Handshake {
            self.stats.midstream += 1;
        }
        if roles == RoleSource::Ports {
            self.stats.roles_from_ports += 1;
        }
        self.serial += 1;
        let flow_id = flow_id(&key, ts, self.serial);
        let info = ConnInfo {
            flow_id,
            client: client.ip,
            client_port: client.port,
            server: server.ip,
            server_port: server.port,
            vlan: key.vlan,
        };
        let flow = Flow {
            key,
            client,
            server,
            roles,
            streams: [Stream::new(), Stream::new()],
            http: HttpConn::new(),
            info,
            last_ts: ts,
            fin: [false; 2],
            reset: false,
            ignored: false,
            syn_sent: (seg.flags.syn() && !seg.flags.ack()).then_some(seg.seq),
            delivered: 0,
            http_seen: false,
            older: NIL,
            newer: NIL,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(flow);
                s
            }
            None => {
                self.slots.push(Some(flow));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        self.link_newest(slot);
        self.stats.created += 1;
        slot
    }

    fn feed(
        &mut self,
        slot: u32,
        src: Endpoint,
        seg: &TcpSegment<'_>,
        ts: Timestamp,
        out: &mut Vec<Transaction>,
    ) {
        let Some(flow) = self.slots[slot as usize].as_mut() else {
            return;
        };
        let mut dir = if src == flow.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        };

        // Stronger evidence about roles may still arrive before any byte was parsed.
        if flow.delivered == 0 && flow.roles < RoleSource::Handshake {
            let evidence = if seg.flags.syn() {
                Some((
                    if seg.flags.ack() {
                        Direction::ToClient
                    } else {
                        Direction::ToServer
                    },
                    RoleSource::Handshake,
                ))
            } else if flow.roles < RoleSource::Sniffed && !seg.payload.is_empty() {
                match http::sniff(seg.payload) {
                    Sniff::Request => Some((Direction::ToServer, RoleSource::Sniffed)),
                    Sniff::Response => Some((Direction::ToClient, RoleSource::Sniffed)),
                    Sniff::Unknown => None,
                }
            } else {
                None
            };
            if let Some((should_be, source)) = evidence {
                if should_be != dir {
                    flow.swap_roles();
                    dir = should_be;
                }
                flow.roles = source;
            }
        }

        if let Some(isn) = flow.syn_sent {
            // A client in SYN-SENT accepts nothing from the server but its SYN-ACK, or a RST that
            // acknowledges the SYN (RFC 9293 §3.10.7.3). Data or a FIN sent before the handshake
            // (the Linux evasion of suricata-verify bug-3286) never reaches the client, so it
            // must not start the server's stream either.
            let synced = match dir {
                Direction::ToServer => seg.flags.ack(),
                Direction::ToClient => seg.flags.syn(),
            };
            if synced {
                flow.syn_sent = None;
            } else if dir == Direction::ToClient {
                let acks_syn = seg.flags.ack() && seg.ack == isn.wrapping_add(1);
                if !(seg.flags.rst() && acks_syn) {
                    self.stats.ignored_before_synack += 1;
                    return;
                }
            }
        }
        if seg.flags.rst() {
            flow.reset = true;
        }
        if flow.ignored {
            self.stats.ignored_bytes += seg.payload.len() as u64;
            return;
        }

        let Flow {
            streams,
            http: conn,
            fin,
            delivered,
            http_seen,
            ..
        } = &mut *flow;
        let stats = &mut self.stats;
        let http_cfg = &self.http_cfg;
        let http_stats = &mut self.http_stats;
        let mut ctx = StreamCtx {
            cfg: &self.stream_cfg,
            budget: &mut self.budget,
            stats: &mut self.stream_stats,
        };
        let before = out.len();
        let messages_before = http_stats.requests + http_stats.responses;
        let [to_server, to_client] = streams;
        let (this, peer) = match dir {
            Direction::ToServer => (to_server, to_client),
            Direction::ToClient => (to_client, to_server),
        };

        if seg.flags.syn() {
            this.on_syn(SeqNum(seg.seq));
        }
        // The ACK first: it may declare lost bytes of the other direction, which must reach the
        // parser before this segment's data (a response after its request).
        if seg.flags.ack() {
            let peer_dir = dir.reverse();
            peer.on_peer_ack(SeqNum(seg.ack), &mut ctx, &mut |ev| {
                deliver(
                    conn, peer_dir, ev, ts, http_cfg, http_stats, stats, fin, delivered, out,
                )
            });
        }
        if !seg.payload.is_empty() || seg.flags.fin() {
            let seq = if seg.flags.syn() {
                seg.seq.wrapping_add(1)
            } else {
                seg.seq
            };
            this.on_segment(
                SeqNum(seq),
                seg.payload,
                seg.flags.fin(),
                &mut ctx,
                &mut |ev| {
                    deliver(
                        conn, dir, ev, ts, http_cfg, http_stats, stats, fin, delivered, out,
                    )
                },
            );
        }
        if seg.flags.rst() {
            // Nothing more will be acknowledged: deliver what is buffered on both sides now.
            for (d, s) in [(dir, this), (dir.reverse(), peer)] {
                s.flush(&mut ctx, &mut |ev| {
                    deliver(
                        conn, d, ev, ts, http_cfg, http_stats, stats, fin, delivered, out,
                    )
                });
            }
        }
        // Any request or response parsed on this call came from this connection.
        if out.len() > before || http_stats.requests + http_stats.responses > messages_before {
            *http_seen = true;
        }
        if conn.in_tunnel() {
            flow.ignored = true;
            self.stats.tunnels += 1;
        } else if !flow.http_seen && flow.delivered > self.cfg.max_non_http_bytes {
            flow.ignored = true;
            self.stats.not_http += 1;
        }
        if flow.ignored {
            flow.streams[0].flush(&mut ctx, &mut |_| {});
            flow.streams[1].flush(&mut ctx, &mut |_| {});
        }
        for t in &mut out[before..] {
            t.conn = flow.info.clone();
        }
    }

    /// Flushes a flow's streams and parser into `out` and frees its slot.
    fn remove(&mut self, slot: u32, ts: Timestamp, out: &mut Vec<Transaction>) {
        self.unlink(slot);
        let Some(mut flow) = self.slots[slot as usize].take() else {
            return;
        };
        self.index.remove(&flow.key);
        self.free.push(slot);
        let before = out.len();
        if !flow.ignored {
            let mut ctx = StreamCtx {
                cfg: &self.stream_cfg,
                budget: &mut self.budget,
                stats: &mut self.stream_stats,
            };
            let Flow {
                streams,
                http: conn,
                fin,
                delivered,
                ..
            } = &mut flow;
            let http_cfg = &self.http_cfg;
            let http_stats = &mut self.http_stats;
            let stats = &mut self.stats;
            for d in [Direction::ToServer, Direction::ToClient] {
                streams[d.index()].flush(&mut ctx, &mut |ev| {
                    deliver(
                        conn, d, ev, ts, http_cfg, http_stats, stats, fin, delivered, out,
                    )
                });
            }
        } else {
            let mut ctx = StreamCtx {
                cfg: &self.stream_cfg,
                budget: &mut self.budget,
                stats: &mut self.stream_stats,
            };
            for s in &mut flow.streams {
                s.flush(&mut ctx, &mut |_| {});
            }
        }
        flow.http
            .finish(ts, &self.http_cfg, &mut self.http_stats, out);
        for t in &mut out[before..] {
            t.conn = flow.info.clone();
        }
    }

    fn touch(&mut self, slot: u32, ts: Timestamp) {
        if let Some(f) = self.slots[slot as usize].as_mut() {
            // Packets of merged files can step back in time a little; activity never does.
            if ts > f.last_ts {
                f.last_ts = ts;
            }
        }
        if self.newest != slot {
            self.unlink(slot);
            self.link_newest(slot);
        }
    }

    fn link_newest(&mut self, slot: u32) {
        let prev_newest = self.newest;
        if let Some(f) = self.slots[slot as usize].as_mut() {
            f.older = prev_newest;
            f.newer = NIL;
        }
        if prev_newest != NIL {
            if let Some(p) = self.slots[prev_newest as usize].as_mut() {
                p.newer = slot;
            }
        } else {
            self.oldest = slot;
        }
        self.newest = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let (older, newer) = match &self.slots[slot as usize] {
            Some(f) => (f.older, f.newer),
            None => return,
        };
        if older != NIL {
            if let Some(o) = self.slots[older as usize].as_mut() {
                o.newer = newer;
            }
        } else if self.oldest == slot {
            self.oldest = newer;
        }
        if newer != NIL {
            if let Some(n) = self.slots[newer as usize].as_mut() {
                n.older = older;
            }
        } else if self.newest == slot {
            self.newest = older;
        }
        if let Some(f) = self.slots[slot as usize].as_mut() {
            f.older = NIL;
            f.newer = NIL;
        }
    }
}

impl Flow {
    fn swap_roles(&mut self) {
        std::mem::swap(&mut self.client, &mut self.server);
        self.streams.swap(0, 1);
        self.info.client = self.client.ip;
        self.info.client_port = self.client.port;
        self.info.server = self.server.ip;
        self.info.server_port = self.server.port;
    }
}

/// Passes one stream event to the HTTP parser of the connection.
#[allow(clippy::too_many_arguments)]
fn deliver(
    conn: &mut HttpConn,
    dir: Direction,
    ev: StreamEvent<'_>,
    ts: Timestamp,
    cfg: &HttpConfig,
    http_stats: &mut HttpStats,
    stats: &mut FlowStats,
    fin: &mut [bool; 2],
    delivered: &mut u64,
    out: &mut Vec<Transaction>,
) {
    match ev {
        StreamEvent::Data(bytes) => {
            *delivered += bytes.len() as u64;
            conn.on_data(dir, bytes, ts, cfg, http_stats, out);
        }
        StreamEvent::Gap(len) => conn.on_gap(dir, len, ts, cfg, http_stats, out),
        StreamEvent::Fin => {
            fin[dir.index()] = true;
            conn.on_fin(dir, ts, cfg, http_stats, out);
        }
        StreamEvent::Anomaly(a) => {
            stats.count_tcp_anomaly(a.name());
            conn.on_flag(dir, a.name());
        }
    }
}

/// Decides client and server for a new flow from its first packet.
fn decide_roles(
    src: Endpoint,
    dst: Endpoint,
    seg: &TcpSegment<'_>,
) -> (Endpoint, Endpoint, RoleSource) {
    if seg.flags.syn() {
        return if seg.flags.ack() {
            (dst, src, RoleSource::Handshake)
        } else {
            (src, dst, RoleSource::Handshake)
        };
    }
    if !seg.payload.is_empty() {
        match http::sniff(seg.payload) {
            Sniff::Request => return (src, dst, RoleSource::Sniffed),
            Sniff::Response => return (dst, src, RoleSource::Sniffed),
            Sniff::Unknown => {}
        }
    }
    let src_known = SERVER_PORTS.contains(&src.port);
    let dst_known = SERVER_PORTS.contains(&dst.port);
    let src_is_server = match (src_known, dst_known) {
        (true, false) => true,
        (false, true) => false,
        // Ephemeral ports are high: the lower port is the service.
        _ => src.port < dst.port,
    };
    if src_is_server {
        (dst, src, RoleSource::Ports)
    } else {
        (src, dst, RoleSource::Ports)
    }
}

/// A stable, deterministic flow id in Zeek's style: `C` and 17 base-62 characters derived from
/// the connection's endpoints, its first packet time and its order of appearance.
fn flow_id(key: &FlowKey, ts: Timestamp, serial: u64) -> String {
    let mut h = Fnv::new();
    for ep in [key.lo, key.hi] {
        match ep.ip {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => h.write(&a.octets()),
        }
        h.write(&ep.port.to_be_bytes());
    }
    h.write(&key.vlan.unwrap_or(0).to_be_bytes());
    h.write(&ts.as_nanos().to_be_bytes());
    h.write(&serial.to_be_bytes());
    let a = h.finish();
    h.write(&a.to_le_bytes());
    let b = h.finish();
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut id = String::with_capacity(18);
    id.push('C');
    let mut x = ((a as u128) << 64) | b as u128;
    for _ in 0..17 {
        id.push(ALPHABET[(x % 62) as usize] as char);
        x /= 62;
    }
    id
}

/// FNV-1a, 64 bit: tiny, deterministic across runs and platforms.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TcpFlags;

    const C: [u8; 4] = [192, 168, 1, 43];
    const S: [u8; 4] = [192, 168, 1, 90];
    const SYN: u8 = TcpFlags::SYN;
    const ACK: u8 = TcpFlags::ACK;
    const FIN: u8 = TcpFlags::FIN;
    const RST: u8 = TcpFlags::RST;
    const PSH: u8 = TcpFlags::PSH;

    /// One segment: `to_server` picks the direction, then seq, ack, flags, payload.
    fn seg(to_server: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> TcpSegment<'_> {
        let (src, dst, sp, dp) = if to_server {
            (C, S, 35532, 80)
        } else {
            (S, C, 80, 35532)
        };
        TcpSegment {
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            src_port: sp,
            dst_port: dp,
            vlan: None,
            seq,
            ack,
            flags: TcpFlags::from_bits(flags),
            window: 65535,
            payload,
            truncated: false,
            missing_bytes: 0,
        }
    }

    fn run(segs: &[TcpSegment<'_>]) -> (Vec<Transaction>, FlowTable) {
        let mut t = FlowTable::new(
            FlowConfig::default(),
            StreamConfig::default(),
            HttpConfig::default(),
        );
        let mut out = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            t.on_segment(s, Timestamp::from_nanos(1_000_000 * i as u64), &mut out);
        }
        t.finish(Timestamp::from_secs_nanos(10, 0), &mut out);
        (out, t)
    }

    const REQ: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nTHIS_IS_A_TEST";

    #[test]
    fn server_segments_before_the_synack_do_not_reach_a_client_in_syn_sent() {
        // suricata-verify bug-3286-02: a fake RST and a FIN with bogus sequence numbers arrive
        // before the real SYN-ACK; Linux drops the FIN (and the RST fails its timestamp check),
        // then the connection carries a request and a 14-byte answer.
        let c_isn = 3_810_062_735u32;
        let s_isn = 26_175u32;
        let segs = [
            seg(true, c_isn, 0, SYN, b""),
            seg(false, 0, c_isn.wrapping_add(7), ACK | RST, b""),
            seg(false, 0, c_isn + 1, ACK | FIN, b""),
            seg(false, 5, c_isn + 1, ACK | PSH, b"HTTP/1.1 500 fake\r\n\r\n"),
            seg(true, c_isn + 1, 0, RST, b""),
            seg(false, s_isn, c_isn + 1, SYN | ACK, b""),
            seg(true, c_isn + 1, s_isn + 1, ACK, b""),
            seg(true, c_isn + 1, s_isn + 1, ACK | PSH, REQ),
            seg(
                false,
                s_isn + 1,
                c_isn + 1 + REQ.len() as u32,
                ACK | PSH,
                RESP,
            ),
        ];
        let (out, t) = run(&segs);
        assert_eq!(out.len(), 1, "{out:?}");
        let r = out[0].response.as_ref().expect("a response");
        assert_eq!((r.status, r.body.len), (200, 14));
        // The RST with a wrong ACK, the FIN and the data; the RST that acks the SYN counts.
        assert_eq!(t.stats.ignored_before_synack, 3);
    }

    #[test]
    fn server_data_is_taken_once_the_client_acks_even_if_the_synack_was_not_captured() {
        let segs = [
            seg(true, 100, 0, SYN, b""),
            seg(true, 101, 5001, ACK | PSH, REQ),
            seg(false, 5001, 101 + REQ.len() as u32, ACK | PSH, RESP),
        ];
        let (out, t) = run(&segs);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.as_ref().map(|r| r.status), Some(200));
        assert_eq!(t.stats.ignored_before_synack, 0);
    }

    #[test]
    fn retransmissions_after_both_fins_land_on_the_closed_connection() {
        // CVE-2018-6794's capture: the request is retransmitted after both sides closed. A
        // closed flow lingers, so the copy is a retransmission, not a new midstream request.
        let q = 101 + REQ.len() as u32;
        let segs = [
            seg(true, 100, 0, SYN, b""),
            seg(false, 5000, 101, SYN | ACK, b""),
            seg(true, 101, 5001, ACK, b""),
            seg(true, 101, 5001, ACK | PSH, REQ),
            seg(false, 5001, q, ACK | PSH | FIN, RESP),
            seg(true, q, 5002 + RESP.len() as u32, ACK | FIN, b""),
            seg(true, 101, 5001, ACK | PSH | FIN, REQ),
            seg(true, 101, 5001, ACK | PSH | FIN, REQ),
        ];
        let (out, t) = run(&segs);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(t.stats.created, 1);
        assert!(!out[0].has_flag("partial"));
    }
}

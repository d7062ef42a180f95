//! A model of one TCP conversation as a span port sees it, with capture impairments.
//!
//! The caller drives the conversation at the application level: [`TcpConversation::handshake`],
//! [`TcpConversation::send`] (one application write, cut into MSS-sized segments and acknowledged
//! by the peer), and [`TcpConversation::close`] or [`TcpConversation::reset`]. Then
//! [`TcpConversation::finish`] returns the captured packets in time order plus a record of which
//! stream bytes reached the capture intact.
//!
//! The sensor is modelled next to the server: a server packet reacting to a client packet
//! appears `server_ack_delay` later, a client packet reacting to a server packet appears one RTT
//! later. A sender keeps at most `window_segments` unacknowledged segments in flight.
//!
//! Impairments are capture-side, as on a real mirror port: a *lost* segment was delivered to the
//! peer (whose ACK still covers it) but never reached the sensor; *reorder*, *duplicate*,
//! *retransmit* and *overlap* add or move copies without removing the original; *midstream*,
//! *one-sided* and *snaplen* are applied to the finished capture.
//!
//! Invariants: the two byte streams the endpoints exchange are exactly the bytes passed to
//! `send`; sequence numbers are `ISN + 1 + stream offset` modulo 2^32 (so an ISN near 2^32 wraps);
//! packets come out sorted by timestamp (ties in emission order); every captured byte of an
//! original segment is the true stream byte, and only `overlap_diff` copies carry other bytes
//! (never counted as coverage). Memory is proportional to the bytes sent, which the caller bounds.

use super::frame::{
    build_tcp_frame, encapsulate, fragment_ipv4, Encap, EthernetSpec, IpSpec, Mac, TcpOptions,
    TcpSpec, VlanTags, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
};
use super::rng::Rng;
use crate::common::{Direction, Duration, Timestamp};
use std::net::{IpAddr, SocketAddr};

/// Something that happened to a segment between the wire and the capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Impairment {
    /// The segment reached the peer but not the capture.
    Loss,
    /// The segment was captured after one sent later.
    Reorder,
    /// The capture holds the same segment twice, back to back (mirror duplication).
    Duplicate,
    /// The sender retransmitted the segment (same bytes) later.
    Retransmit,
    /// A retransmission straddled two earlier segments with the same bytes.
    OverlapSame,
    /// A retransmission straddled two earlier segments with different bytes.
    OverlapDiff,
    /// The capture started after this segment was sent.
    Midstream,
    /// The capture saw only the other direction.
    OneSided,
    /// The capture snaplen cut off part of the segment.
    Snaplen,
    /// The segment travelled as IPv4 fragments.
    Fragmented,
}

impl Impairment {
    pub const ALL: [Impairment; 10] = [
        Impairment::Loss,
        Impairment::Reorder,
        Impairment::Duplicate,
        Impairment::Retransmit,
        Impairment::OverlapSame,
        Impairment::OverlapDiff,
        Impairment::Midstream,
        Impairment::OneSided,
        Impairment::Snaplen,
        Impairment::Fragmented,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Impairment::Loss => "loss",
            Impairment::Reorder => "reorder",
            Impairment::Duplicate => "duplicate",
            Impairment::Retransmit => "retransmit",
            Impairment::OverlapSame => "overlap_same",
            Impairment::OverlapDiff => "overlap_diff",
            Impairment::Midstream => "midstream",
            Impairment::OneSided => "one_sided",
            Impairment::Snaplen => "snaplen",
            Impairment::Fragmented => "fragmented",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A small set of [`Impairment`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairSet(u16);

impl ImpairSet {
    pub fn insert(&mut self, i: Impairment) {
        self.0 |= i.bit();
    }
    pub fn contains(self, i: Impairment) -> bool {
        self.0 & i.bit() != 0
    }
    pub fn union(self, other: ImpairSet) -> ImpairSet {
        ImpairSet(self.0 | other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Names in declaration order.
    pub fn names(self) -> Vec<&'static str> {
        Impairment::ALL
            .iter()
            .filter(|i| self.contains(**i))
            .map(|i| i.name())
            .collect()
    }
}

/// Capture impairments for one conversation. Probabilities apply per data segment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairments {
    /// Probability a data segment never reaches the capture (its ACK still does).
    pub loss: f64,
    /// Probability a data segment is captured after the segment before it.
    pub reorder: f64,
    /// Probability a data segment is captured twice in a row.
    pub duplicate: f64,
    /// Probability a data segment is retransmitted two RTTs later.
    pub retransmit: f64,
    /// Probability of an extra segment straddling this and the previous one, same bytes.
    pub overlap_same: f64,
    /// Probability of an extra segment straddling this and the previous one, other bytes.
    pub overlap_diff: f64,
    /// Midstream pickup: this many packets (in capture order) happen before capture starts.
    pub skip_first_packets: u32,
    /// One-sided capture: only packets travelling this way are written.
    pub only_direction: Option<Direction>,
    /// Capture snaplen for this conversation's frames, in bytes.
    pub snaplen_bytes: Option<u32>,
    /// IPv4 only: fragment datagrams whose IP payload exceeds this many bytes.
    pub fragment_bytes: Option<u16>,
}

/// Everything fixed about one conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct TcpConfig {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_mac: Mac,
    pub server_mac: Mac,
    pub vlans: VlanTags,
    pub encap: Encap,
    /// IPv6 only: every Nth packet carries a destination-options extension header (0: never).
    pub ipv6_ext_every: u32,
    pub client_isn: u32,
    pub server_isn: u32,
    /// Maximum segment size in payload bytes (clamped to at least 1).
    pub mss: u16,
    /// Round trip between the sensor and the client.
    pub rtt: Duration,
    /// Time the server takes to acknowledge or react to a client packet.
    pub server_ack_delay: Duration,
    /// Segments a sender may have unacknowledged (clamped to at least 2).
    pub window_segments: u32,
    /// Carry the TCP timestamps option on every segment.
    pub tcp_timestamps: bool,
    /// Time of the SYN.
    pub start: Timestamp,
    pub impair: Impairments,
    /// Seed for the impairment dice and the TSval offsets.
    pub seed: u64,
}

impl TcpConfig {
    /// A plain IPv4-or-IPv6 conversation with typical LAN timing and no impairment.
    pub fn new(client: SocketAddr, server: SocketAddr, start: Timestamp, seed: u64) -> Self {
        let mut r = Rng::new(seed);
        TcpConfig {
            client,
            server,
            client_mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x02],
            server_mac: [0x02, 0x42, 0xac, 0x11, 0x00, 0x03],
            vlans: VlanTags::None,
            encap: Encap::None,
            ipv6_ext_every: 0,
            client_isn: r.next_u32(),
            server_isn: r.next_u32(),
            mss: 1448,
            rtt: Duration::from_nanos(2_000_000),
            server_ack_delay: Duration::from_nanos(40_000),
            window_segments: 20,
            tcp_timestamps: true,
            start,
            impair: Impairments::default(),
            seed,
        }
    }
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub ts: Timestamp,
    /// The captured bytes (possibly cut by a snaplen).
    pub data: Vec<u8>,
    /// Length on the wire.
    pub orig_len: u32,
}

/// A packet waiting for [`TcpConversation::finish`].
struct Pending {
    ts: Timestamp,
    order: u32,
    dir: Direction,
    /// The inner Ethernet frame; the payload is its last `payload_len` bytes.
    frame: Vec<u8>,
    payload_len: u32,
    /// Stream offsets `[start, end)` of the payload this frame carries (a fragment carries its
    /// whole datagram's range).
    range: (u64, u64),
    /// The payload bytes are the true stream bytes (false only for `overlap_diff` copies).
    correct: bool,
    tags: ImpairSet,
    /// Fragment group id, 0 when not fragmented.
    group: u32,
}

/// An impairment that touched stream bytes `[start, end)` of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImpairEvent {
    pub dir: Direction,
    pub start: u64,
    pub end: u64,
    pub kind: Impairment,
}

/// The finished capture of a conversation.
#[derive(Clone, Debug, Default)]
pub struct ConversationCapture {
    /// Captured packets in timestamp order.
    pub packets: Vec<Packet>,
    /// Per direction (`Direction::index`): sorted, disjoint stream ranges captured intact.
    pub coverage: [Vec<(u64, u64)>; 2],
    pub events: Vec<ImpairEvent>,
    /// Bytes each direction sent.
    pub stream_len: [u64; 2],
}

impl ConversationCapture {
    /// Whether every byte in `[start, end)` of `dir` reached the capture with its true value.
    pub fn is_intact(&self, dir: Direction, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let cov = &self.coverage[dir.index()];
        // The last range starting at or before `start` must reach `end`.
        let i = cov.partition_point(|r| r.0 <= start);
        i > 0 && cov.get(i - 1).is_some_and(|r| r.1 >= end)
    }

    /// Impairments that touched any byte in `[start, end)` of `dir`.
    pub fn impairments_in(&self, dir: Direction, start: u64, end: u64) -> ImpairSet {
        let mut s = ImpairSet::default();
        for e in &self.events {
            if e.dir == dir && e.start < end && start < e.end {
                s.insert(e.kind);
            }
        }
        s
    }
}

/// A TCP conversation being generated. See the module documentation.
pub struct TcpConversation {
    cfg: TcpConfig,
    rng: Rng,
    /// The earliest time the next action may happen.
    now: Timestamp,
    /// Stream bytes sent per direction.
    sent: [u64; 2],
    fin: [bool; 2],
    ip_id: [u16; 2],
    ts_offset: [u32; 2],
    /// Time of the last packet each side sent (by `Direction::index` of its data).
    last_tx: [Timestamp; 2],
    /// Time of the last data segment each side sent.
    last_data: [Timestamp; 2],
    pending: Vec<Pending>,
    events: Vec<ImpairEvent>,
    order: u32,
    groups: u32,
    packets_built: u32,
    /// Stream offset and time of each segment of the last `send`, for [`Self::sent_at`].
    last_send: (Direction, Vec<(u64, Timestamp)>),
}

impl TcpConversation {
    pub fn new(cfg: TcpConfig) -> Self {
        let mut rng = Rng::new(cfg.seed ^ 0x7463_7063_6f6e_7600);
        let ts_offset = [rng.next_u32(), rng.next_u32()];
        TcpConversation {
            now: cfg.start,
            rng,
            sent: [0; 2],
            fin: [false; 2],
            ip_id: [(cfg.seed >> 16) as u16, (cfg.seed >> 32) as u16],
            ts_offset,
            last_tx: [cfg.start; 2],
            last_data: [cfg.start; 2],
            pending: Vec::new(),
            events: Vec::new(),
            order: 0,
            groups: 0,
            packets_built: 0,
            last_send: (Direction::ToServer, Vec::new()),
            cfg,
        }
    }

    pub fn config(&self) -> &TcpConfig {
        &self.cfg
    }

    /// Bytes sent so far in `dir`: the stream offset the next `send` starts at.
    pub fn offset(&self, dir: Direction) -> u64 {
        self.sent[dir.index()]
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// When the segment holding stream offset `off` of the last `send` in `dir` went out.
    pub fn sent_at(&self, dir: Direction, off: u64) -> Option<Timestamp> {
        if self.last_send.0 != dir {
            return None;
        }
        let v = &self.last_send.1;
        let i = v.partition_point(|(o, _)| *o <= off);
        v.get(i.checked_sub(1)?).map(|(_, t)| *t)
    }

    /// Lets time pass with nothing sent.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.add(d);
    }

    /// How long after seeing a packet from the other side a packet from `sender` appears.
    fn react(&self, sender: Direction) -> Duration {
        match sender {
            Direction::ToServer => self.cfg.rtt,
            Direction::ToClient => self.cfg.server_ack_delay,
        }
    }

    fn isn(&self, dir: Direction) -> u32 {
        match dir {
            Direction::ToServer => self.cfg.client_isn,
            Direction::ToClient => self.cfg.server_isn,
        }
    }

    /// Sequence number of stream offset `off` in `dir`.
    fn seq_at(&self, dir: Direction, off: u64) -> u32 {
        self.isn(dir).wrapping_add(1).wrapping_add(off as u32)
    }

    /// The acknowledgment a packet travelling `dir` carries when its sender has received
    /// `peer_bytes` of the peer's stream.
    fn ack_for(&self, dir: Direction, peer_bytes: u64) -> u32 {
        let peer = dir.reverse();
        let fin = u32::from(self.fin[peer.index()]);
        self.seq_at(peer, peer_bytes).wrapping_add(fin)
    }

    fn tsval(&self, dir: Direction, ts: Timestamp) -> u32 {
        ((ts.as_nanos() / 1_000_000) as u32).wrapping_add(self.ts_offset[dir.index()])
    }

    /// Builds and queues one packet (several when it is fragmented).
    // Each argument is one TCP header field or one piece of ground-truth bookkeeping; bundling
    // them into a struct would only rename them at every call site.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        dir: Direction,
        ts: Timestamp,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
        range: (u64, u64),
        correct: bool,
        tags: ImpairSet,
    ) {
        let (src, dst, smac, dmac) = match dir {
            Direction::ToServer => (
                self.cfg.client,
                self.cfg.server,
                self.cfg.client_mac,
                self.cfg.server_mac,
            ),
            Direction::ToClient => (
                self.cfg.server,
                self.cfg.client,
                self.cfg.server_mac,
                self.cfg.client_mac,
            ),
        };
        let id = self.ip_id[dir.index()];
        self.ip_id[dir.index()] = id.wrapping_add(1);
        self.packets_built = self.packets_built.wrapping_add(1);
        let fragmenting = self.cfg.impair.fragment_bytes.is_some();
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => IpSpec::V4 {
                src: s,
                dst: d,
                id,
                ttl: if dir == Direction::ToServer { 57 } else { 64 },
                dont_fragment: !fragmenting,
            },
            (s, d) => IpSpec::V6 {
                src: to_v6(s),
                dst: to_v6(d),
                hop_limit: if dir == Direction::ToServer { 57 } else { 64 },
                flow_label: (u32::from(src.port()) << 4) ^ u32::from(dst.port()),
                dest_opts: self.cfg.ipv6_ext_every > 0
                    && self.packets_built % self.cfg.ipv6_ext_every == 0,
            },
        };
        let tsecr = if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
            0
        } else {
            self.tsval(dir.reverse(), ts)
        };
        let stamps = self
            .cfg
            .tcp_timestamps
            .then(|| (self.tsval(dir, ts), tsecr));
        let options = match (flags & TCP_SYN != 0, stamps) {
            (true, timestamps) => TcpOptions::Syn {
                mss: self.cfg.mss,
                wscale: 7,
                timestamps,
            },
            (false, Some((tsval, tsecr))) => TcpOptions::Timestamps { tsval, tsecr },
            (false, None) => TcpOptions::None,
        };
        let tcp = TcpSpec {
            src_port: src.port(),
            dst_port: dst.port(),
            seq,
            ack,
            flags,
            window: if flags & TCP_SYN != 0 { 64240 } else { 502 },
            options,
        };
        let eth = EthernetSpec {
            src: smac,
            dst: dmac,
            vlans: self.cfg.vlans,
        };
        let mut frame = Vec::with_capacity(14 + 8 + 40 + 8 + 32 + payload.len());
        let layout = build_tcp_frame(&mut frame, &eth, &ip, &tcp, payload);
        let payload_len = payload.len() as u32;
        if let (Some(max), IpSpec::V4 { .. }) = (self.cfg.impair.fragment_bytes, ip) {
            let frags = fragment_ipv4(&frame, layout.ip_offset, usize::from(max.max(8)));
            if frags.len() > 1 {
                self.groups += 1;
                let mut tags = tags;
                tags.insert(Impairment::Fragmented);
                let n = frags.len() as u64;
                for (i, f) in frags.into_iter().enumerate() {
                    let order = self.next_order();
                    self.pending.push(Pending {
                        // Fragments leave the router a few microseconds apart.
                        ts: ts.add(Duration::from_nanos(i as u64 * 3_000)),
                        order,
                        dir,
                        frame: f,
                        // Only the last fragment ends with stream bytes; snaplen accounting
                        // treats a cut fragment as spoiling its whole datagram.
                        payload_len: if i as u64 + 1 == n { payload_len } else { 0 },
                        range,
                        correct,
                        tags,
                        group: self.groups,
                    });
                }
                return;
            }
        }
        let order = self.next_order();
        self.pending.push(Pending {
            ts,
            order,
            dir,
            frame,
            payload_len,
            range,
            correct,
            tags,
            group: 0,
        });
    }

    fn next_order(&mut self) -> u32 {
        self.order = self.order.wrapping_add(1);
        self.order
    }

    fn note_tx(&mut self, dir: Direction, ts: Timestamp) {
        let i = dir.index();
        if ts > self.last_tx[i] {
            self.last_tx[i] = ts;
        }
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self) {
        let c = Direction::ToServer;
        let s = Direction::ToClient;
        let t0 = self.now;
        let t1 = t0.add(self.react(s));
        let t2 = t1.add(self.react(c));
        let none = ImpairSet::default();
        self.emit(c, t0, self.isn(c), 0, TCP_SYN, &[], (0, 0), true, none);
        let ack = self.seq_at(c, 0);
        self.emit(
            s,
            t1,
            self.isn(s),
            ack,
            TCP_SYN | TCP_ACK,
            &[],
            (0, 0),
            true,
            none,
        );
        let (seq, ack) = (self.seq_at(c, 0), self.seq_at(s, 0));
        self.emit(c, t2, seq, ack, TCP_ACK, &[], (0, 0), true, none);
        self.note_tx(c, t2);
        self.note_tx(s, t1);
        self.now = t2;
    }

    /// One application write of `data` in `dir`, `think` after the sender could first act
    /// (after its own last packet and after reacting to the peer's last data). Returns the time
    /// of the first segment. An empty write sends nothing.
    pub fn send(&mut self, dir: Direction, data: &[u8], think: Duration) -> Timestamp {
        let i = dir.index();
        let peer = dir.reverse();
        let mut t = self.now.max(self.last_tx[i]);
        let after_peer = self.last_data[peer.index()].add(self.react(dir));
        if after_peer > t && self.sent[peer.index()] > 0 {
            t = after_peer;
        }
        t = t.add(think);
        let first = t;
        if data.is_empty() || self.fin[i] {
            self.now = t;
            return first;
        }
        let mss = usize::from(self.cfg.mss.max(1));
        let window = self.cfg.window_segments.max(2) as usize;
        let ack_delay = self.react(peer);
        let base = self.sent[i];
        let peer_bytes = self.sent[peer.index()];
        let mut ack_times: Vec<Timestamp> = Vec::with_capacity(data.len() / mss + 1);
        // Index in `pending` and stream range of the previous captured data segment of this
        // write, for reordering and overlaps.
        let mut prev: Option<(usize, usize, usize)> = None;
        let mut off = 0usize;
        let mut k = 0usize;
        self.last_send.0 = dir;
        self.last_send.1.clear();
        while off < data.len() {
            let end = (off + mss).min(data.len());
            let last = end == data.len();
            if k >= window {
                if let Some(&gate) = ack_times.get(k - window) {
                    t = t.max(gate);
                }
            }
            let seg_ts = t;
            self.last_send.1.push((base + off as u64, seg_ts));
            let seq = self.seq_at(dir, base + off as u64);
            let ack = self.ack_for(dir, peer_bytes);
            let flags = if last { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let range = (base + off as u64, base + end as u64);
            let chunk = &data[off..end];
            let imp = self.cfg.impair;
            let mut tags = ImpairSet::default();
            if self.rng.chance(imp.loss) {
                self.events.push(ImpairEvent {
                    dir,
                    start: range.0,
                    end: range.1,
                    kind: Impairment::Loss,
                });
                prev = None;
            } else {
                let idx = self.pending.len();
                let reorder = prev.is_some() && self.rng.chance(imp.reorder);
                if reorder {
                    tags.insert(Impairment::Reorder);
                }
                self.emit(dir, seg_ts, seq, ack, flags, chunk, range, true, tags);
                if reorder {
                    // Capture the previous segment after this one: swap their times, which keeps
                    // the capture's clock monotonic while the sequence numbers go backwards.
                    if let Some((pidx, _, _)) = prev {
                        let later = self.pending.len();
                        if let (Some(a), Some(b)) = (
                            self.pending.get(pidx).map(|p| p.ts),
                            self.pending.get(idx).map(|p| p.ts),
                        ) {
                            if let Some(p) = self.pending.get_mut(pidx) {
                                p.ts = b;
                                p.tags.insert(Impairment::Reorder);
                            }
                            for p in self.pending.get_mut(idx..later).into_iter().flatten() {
                                p.ts = a;
                            }
                        }
                    }
                }
                if self.rng.chance(imp.duplicate) {
                    let mut tg = tags;
                    tg.insert(Impairment::Duplicate);
                    self.emit(
                        dir,
                        seg_ts.add(Duration::from_nanos(1_000)),
                        seq,
                        ack,
                        flags,
                        chunk,
                        range,
                        true,
                        tg,
                    );
                }
                if self.rng.chance(imp.retransmit) {
                    let mut tg = tags;
                    tg.insert(Impairment::Retransmit);
                    let rto = Duration::from_nanos(self.cfg.rtt.as_nanos().saturating_mul(2));
                    self.emit(
                        dir,
                        seg_ts.add(rto),
                        seq,
                        ack,
                        flags,
                        chunk,
                        range,
                        true,
                        tg,
                    );
                }
                if let Some((_, ps, _)) = prev {
                    for (p, kind) in [
                        (imp.overlap_same, Impairment::OverlapSame),
                        (imp.overlap_diff, Impairment::OverlapDiff),
                    ] {
                        if !self.rng.chance(p) {
                            continue;
                        }
                        // From the middle of the previous segment to the middle of this one.
                        let o0 = ps + (off - ps) / 2;
                        let o1 = off + (end - off).div_ceil(2);
                        let Some(orig) = data.get(o0..o1) else {
                            continue;
                        };
                        let bytes: Vec<u8> = if kind == Impairment::OverlapDiff {
                            orig.iter()
                                .map(|&b| if b == b'X' { b'Y' } else { b'X' })
                                .collect()
                        } else {
                            orig.to_vec()
                        };
                        let mut tg = ImpairSet::default();
                        tg.insert(kind);
                        let r = (base + o0 as u64, base + o1 as u64);
                        let s = self.seq_at(dir, r.0);
                        self.emit(
                            dir,
                            seg_ts.add(Duration::from_nanos(2_000)),
                            s,
                            ack,
                            TCP_ACK,
                            &bytes,
                            r,
                            kind == Impairment::OverlapSame,
                            tg,
                        );
                    }
                }
                prev = Some((idx, off, end));
            }
            // Serialisation at 1 Gbit/s: 8 ns per byte plus framing.
            t = seg_ts.add(Duration::from_nanos(((end - off) as u64 + 78) * 8));
            let acked_at = seg_ts.add(ack_delay);
            ack_times.push(acked_at);
            if k % 2 == 1 || last {
                // Delayed ACK: the receiver acknowledges every second segment, and the last.
                let aseq = self.seq_at(peer, peer_bytes);
                let fin = u32::from(self.fin[i]);
                let aack = self.seq_at(dir, base + end as u64).wrapping_add(fin);
                let none = ImpairSet::default();
                self.emit(peer, acked_at, aseq, aack, TCP_ACK, &[], (0, 0), true, none);
                self.note_tx(peer, acked_at);
            }
            off = end;
            k += 1;
        }
        self.sent[i] = base + data.len() as u64;
        self.last_data[i] = t;
        self.note_tx(dir, t);
        self.now = t;
        first
    }

    /// FIN from `initiator`, FIN-ACK from the peer, final ACK.
    pub fn close(&mut self, initiator: Direction) {
        let a = initiator;
        let b = a.reverse();
        let mut t = self.now.max(self.last_tx[a.index()]);
        let after_peer = self.last_data[b.index()].add(self.react(a));
        if after_peer > t && self.sent[b.index()] > 0 {
            t = after_peer;
        }
        let none = ImpairSet::default();
        if self.fin[a.index()] {
            return;
        }
        let seq = self.seq_at(a, self.sent[a.index()]);
        let ack = self.ack_for(a, self.sent[b.index()]);
        self.emit(a, t, seq, ack, TCP_FIN | TCP_ACK, &[], (0, 0), true, none);
        self.fin[a.index()] = true;
        let t1 = t.add(self.react(b)).max(self.last_tx[b.index()]);
        let seq = self.seq_at(b, self.sent[b.index()]);
        let ack = self.ack_for(b, self.sent[a.index()]);
        self.emit(b, t1, seq, ack, TCP_FIN | TCP_ACK, &[], (0, 0), true, none);
        self.fin[b.index()] = true;
        let t2 = t1.add(self.react(a));
        let seq = self.seq_at(a, self.sent[a.index()]).wrapping_add(1);
        let ack = self.ack_for(a, self.sent[b.index()]);
        self.emit(a, t2, seq, ack, TCP_ACK, &[], (0, 0), true, none);
        self.note_tx(a, t2);
        self.note_tx(b, t1);
        self.now = t2;
    }

    /// An abortive close: one RST from `from`.
    pub fn reset(&mut self, from: Direction) {
        let t = self.now.max(self.last_tx[from.index()]);
        let seq = self.seq_at(from, self.sent[from.index()]);
        let ack = self.ack_for(from, self.sent[from.reverse().index()]);
        let none = ImpairSet::default();
        self.emit(
            from,
            t,
            seq,
            ack,
            TCP_RST | TCP_ACK,
            &[],
            (0, 0),
            true,
            none,
        );
        self.fin = [true, true];
        self.note_tx(from, t);
        self.now = t;
    }

    /// Applies the capture-side impairments and returns the packets in time order.
    pub fn finish(self) -> ConversationCapture {
        let TcpConversation {
            cfg,
            mut pending,
            mut events,
            sent,
            ..
        } = self;
        pending.sort_by_key(|p| (p.ts, p.order));
        let imp = &cfg.impair;
        let snap = imp.snaplen_bytes.map(|s| s as usize);
        // Pass 1: what is captured, and how many payload bytes survive.
        let mut kept: Vec<Option<u64>> = Vec::with_capacity(pending.len());
        let mut group_spoiled =
            vec![false; pending.iter().map(|p| p.group as usize).max().unwrap_or(0) + 1];
        let encap_extra = match cfg.encap {
            Encap::None => 0,
            Encap::Vxlan { .. } => 50,
            Encap::ErspanII { .. } => 50,
        };
        for (n, p) in pending.iter().enumerate() {
            let has_data = p.range.1 > p.range.0;
            let missing = if (n as u64) < u64::from(imp.skip_first_packets) {
                Some(Impairment::Midstream)
            } else if imp.only_direction.is_some_and(|d| d != p.dir) {
                Some(Impairment::OneSided)
            } else {
                None
            };
            if let Some(kind) = missing {
                if has_data && p.correct {
                    events.push(ImpairEvent {
                        dir: p.dir,
                        start: p.range.0,
                        end: p.range.1,
                        kind,
                    });
                }
                if let Some(g) = group_spoiled.get_mut(p.group as usize) {
                    *g = p.group != 0;
                }
                kept.push(None);
                continue;
            }
            let wire_len = p.frame.len() + encap_extra;
            let cut = snap.map_or(0, |s| wire_len.saturating_sub(s)) as u64;
            let plen = u64::from(p.payload_len);
            let surviving = plen.saturating_sub(cut);
            if cut > 0 && (plen > 0 || p.group != 0) && has_data {
                let start = if p.group != 0 {
                    p.range.0
                } else {
                    p.range.0 + surviving
                };
                events.push(ImpairEvent {
                    dir: p.dir,
                    start,
                    end: p.range.1,
                    kind: Impairment::Snaplen,
                });
                if let Some(g) = group_spoiled.get_mut(p.group as usize) {
                    *g = p.group != 0;
                }
            }
            kept.push(Some(surviving));
        }
        // Pass 2: build the output and the coverage.
        let mut cov: [Vec<(u64, u64)>; 2] = [Vec::new(), Vec::new()];
        let mut packets = Vec::with_capacity(pending.len());
        let flow_hash = cfg.client.port() ^ cfg.server.port().rotate_left(7);
        let mut seq = (cfg.seed as u32) & 0xffff;
        for (p, k) in pending.into_iter().zip(kept) {
            // A fragmented datagram reports its tags once, on the fragment holding the tail.
            let reports = p.range.1 > p.range.0 && (p.group == 0 || p.payload_len > 0);
            if reports {
                for kind in Impairment::ALL.into_iter().filter(|k| p.tags.contains(*k)) {
                    events.push(ImpairEvent {
                        dir: p.dir,
                        start: p.range.0,
                        end: p.range.1,
                        kind,
                    });
                }
            }
            let Some(surviving) = k else { continue };
            if p.correct && p.range.1 > p.range.0 {
                let ok_range = if p.group != 0 {
                    let spoiled = group_spoiled.get(p.group as usize).copied().unwrap_or(true);
                    (!spoiled && p.payload_len > 0).then_some(p.range)
                } else {
                    Some((p.range.0, p.range.0 + surviving))
                };
                if let Some(r) = ok_range.filter(|r| r.1 > r.0) {
                    cov[p.dir.index()].push(r);
                }
            }
            let mut data = match cfg.encap {
                Encap::None => p.frame,
                enc => {
                    let mut out = Vec::with_capacity(p.frame.len() + encap_extra);
                    seq = seq.wrapping_add(1);
                    encapsulate(&mut out, &p.frame, &enc, flow_hash, seq);
                    out
                }
            };
            let orig_len = data.len() as u32;
            if let Some(s) = snap {
                data.truncate(s);
            }
            packets.push(Packet {
                ts: p.ts,
                data,
                orig_len,
            });
        }
        for c in cov.iter_mut() {
            merge_ranges(c);
        }
        ConversationCapture {
            packets,
            coverage: cov,
            events,
            stream_len: sent,
        }
    }
}

fn to_v6(a: IpAddr) -> std::net::Ipv6Addr {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    }
}

/// Sorts and merges overlapping or touching ranges in place.
fn merge_ranges(v: &mut Vec<(u64, u64)>) {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for &(s, e) in v.iter() {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetHeaders, PacketHeaders, TransportHeader};
    use std::collections::BTreeMap;

    /// One TCP segment as parsed back from a captured frame.
    #[derive(Debug, Clone)]
    struct Seg {
        dir: Direction,
        seq: u32,
        ack: u32,
        syn: bool,
        fin: bool,
        rst: bool,
        payload: Vec<u8>,
    }

    /// One IPv4 fragment: (offset, IP payload, more fragments, link and IP header).
    type Frag = (usize, Vec<u8>, bool, Vec<u8>);

    /// Parses frames with etherparse, joining IPv4 fragments by their id first.
    fn parse(cap: &ConversationCapture, cfg: &TcpConfig) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut frags: BTreeMap<u16, Vec<Frag>> = BTreeMap::new();
        for p in &cap.packets {
            assert!(p.data.len() as u32 <= p.orig_len);
            let ip_off = 14 + cfg.vlans.len();
            let data = &p.data;
            if data.len() > ip_off + 20 && data[ip_off] >> 4 == 4 {
                let ff = u16::from_be_bytes([data[ip_off + 6], data[ip_off + 7]]);
                if ff & 0x3fff != 0 {
                    let id = u16::from_be_bytes([data[ip_off + 4], data[ip_off + 5]]);
                    let e = frags.entry(id).or_default();
                    e.push((
                        usize::from(ff & 0x1fff) * 8,
                        data[ip_off + 20..].to_vec(),
                        ff & 0x2000 != 0,
                        data[..ip_off + 20].to_vec(),
                    ));
                    let mut parts = e.clone();
                    parts.sort_by_key(|p| p.0);
                    let total: usize = parts.iter().map(|p| p.1.len()).sum();
                    let complete = parts.last().is_some_and(|l| !l.2)
                        && parts
                            .iter()
                            .scan(0, |exp, p| {
                                let ok = p.0 == *exp;
                                *exp += p.1.len();
                                Some(ok)
                            })
                            .all(|x| x);
                    if complete {
                        let mut whole = parts[0].3.clone();
                        let tl = (20 + total) as u16;
                        whole[ip_off + 2..ip_off + 4].copy_from_slice(&tl.to_be_bytes());
                        whole[ip_off + 6] = 0;
                        whole[ip_off + 7] = 0;
                        for p in &parts {
                            whole.extend_from_slice(&p.1);
                        }
                        frags.remove(&id);
                        out.push(parse_one(&whole, cfg));
                    }
                    continue;
                }
            }
            if p.data.len() as u32 == p.orig_len {
                out.push(parse_one(data, cfg));
            }
        }
        out
    }

    fn parse_one(frame: &[u8], cfg: &TcpConfig) -> Seg {
        let h = PacketHeaders::from_ethernet_slice(frame).expect("valid frame");
        let Some(TransportHeader::Tcp(t)) = h.transport else {
            panic!("not TCP")
        };
        let payload = h.payload.slice().to_vec();
        let ck = match &h.net {
            Some(NetHeaders::Ipv4(ip, _)) => t.calc_checksum_ipv4(ip, &payload).unwrap(),
            Some(NetHeaders::Ipv6(ip, _)) => t.calc_checksum_ipv6(ip, &payload).unwrap(),
            _ => panic!("not IP"),
        };
        assert_eq!(ck, t.checksum);
        let dir = if t.destination_port == cfg.server.port() {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        Seg {
            dir,
            seq: t.sequence_number,
            ack: t.acknowledgment_number,
            syn: t.syn,
            fin: t.fin,
            rst: t.rst,
            payload,
        }
    }

    /// First-copy-wins byte map per direction, keyed by stream offset.
    fn reassemble(segs: &[Seg], cfg: &TcpConfig, dir: Direction) -> BTreeMap<u64, u8> {
        let isn = if dir == Direction::ToServer {
            cfg.client_isn
        } else {
            cfg.server_isn
        };
        let mut m = BTreeMap::new();
        for s in segs.iter().filter(|s| s.dir == dir && !s.syn) {
            let off = u64::from(s.seq.wrapping_sub(isn.wrapping_add(1)));
            for (i, b) in s.payload.iter().enumerate() {
                m.entry(off + i as u64).or_insert(*b);
            }
        }
        m
    }

    fn contiguous(m: &BTreeMap<u64, u8>) -> Vec<u8> {
        m.iter()
            .enumerate()
            .map(|(i, (k, v))| {
                assert_eq!(*k, i as u64, "hole in the stream");
                *v
            })
            .collect()
    }

    fn config(seed: u64, v6: bool) -> TcpConfig {
        let (c, s): (SocketAddr, SocketAddr) = if v6 {
            (
                "[2001:db8::10]:51000".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap(),
            )
        } else {
            (
                "10.0.0.10:51000".parse().unwrap(),
                "10.0.0.1:80".parse().unwrap(),
            )
        };
        let mut cfg = TcpConfig::new(c, s, Timestamp::from_secs_nanos(1_700_000_000, 0), seed);
        cfg.mss = 100;
        // Near 2^32 so every conversation here wraps its sequence space.
        cfg.client_isn = u32::MAX - 250;
        cfg.server_isn = u32::MAX - 1_000;
        cfg
    }

    fn text(n: usize, salt: u8) -> Vec<u8> {
        (0..n)
            .map(|i| b'a' + ((i * 7 + usize::from(salt)) % 26) as u8)
            .collect()
    }

    /// A request/response exchange run twice, then a FIN close.
    fn run(cfg: TcpConfig) -> (ConversationCapture, Vec<u8>, Vec<u8>) {
        let req = [text(350, 1), text(120, 2)];
        let resp = [text(2_500, 3), text(90, 4)];
        let mut conv = TcpConversation::new(cfg);
        conv.handshake();
        for (q, r) in req.iter().zip(&resp) {
            conv.send(Direction::ToServer, q, Duration::from_nanos(1_000_000));
            conv.send(Direction::ToClient, r, Duration::from_nanos(300_000));
        }
        conv.close(Direction::ToServer);
        (conv.finish(), req.concat(), resp.concat())
    }

    #[test]
    fn clean_conversation_reassembles_exactly_across_seq_wraparound() {
        for v6 in [false, true] {
            let mut cfg = config(1, v6);
            cfg.vlans = VlanTags::Single(30);
            cfg.ipv6_ext_every = 3;
            let (cap, req, resp) = run(cfg.clone());
            assert!(
                cap.packets.windows(2).all(|w| w[0].ts <= w[1].ts),
                "time order"
            );
            let segs = parse(&cap, &cfg);
            assert!(segs[0].syn && segs[0].dir == Direction::ToServer);
            assert!(segs[1].syn && segs[1].ack == cfg.client_isn.wrapping_add(1));
            assert_eq!(
                contiguous(&reassemble(&segs, &cfg, Direction::ToServer)),
                req
            );
            assert_eq!(
                contiguous(&reassemble(&segs, &cfg, Direction::ToClient)),
                resp
            );
            assert!(segs.iter().any(|s| s.seq < 100), "sequence numbers wrapped");
            assert_eq!(segs.iter().filter(|s| s.fin).count(), 2);
            assert!(
                segs.iter().all(|s| s.payload.len() <= 100),
                "cut at the MSS"
            );
            // The final ACK from the client covers the server's FIN.
            let last = segs.last().unwrap();
            let want = cfg
                .server_isn
                .wrapping_add(1)
                .wrapping_add(resp.len() as u32 + 1);
            assert_eq!((last.dir, last.ack), (Direction::ToServer, want));
            assert!(cap.is_intact(Direction::ToServer, 0, req.len() as u64));
            assert!(cap.is_intact(Direction::ToClient, 0, resp.len() as u64));
            assert!(cap.events.is_empty());
            assert_eq!(cap.stream_len, [req.len() as u64, resp.len() as u64]);
        }
    }

    #[test]
    fn lost_segments_leave_holes_yet_are_acknowledged() {
        let mut cfg = config(2, false);
        cfg.impair.loss = 0.3;
        let (cap, _req, resp) = run(cfg.clone());
        let segs = parse(&cap, &cfg);
        let m = reassemble(&segs, &cfg, Direction::ToClient);
        let holes: Vec<u64> = (0..resp.len() as u64)
            .filter(|o| !m.contains_key(o))
            .collect();
        assert!(
            !holes.is_empty(),
            "30% loss over 26 segments loses something"
        );
        for (o, b) in &m {
            assert_eq!(resp[*o as usize], *b);
        }
        for h in &holes {
            assert!(!cap.is_intact(Direction::ToClient, *h, h + 1));
            assert!(cap
                .impairments_in(Direction::ToClient, *h, h + 1)
                .contains(Impairment::Loss));
        }
        // Some client ACK acknowledges past the first hole: the peer did receive it.
        let first = holes[0] as u32;
        let past = cfg.server_isn.wrapping_add(1).wrapping_add(first + 1);
        let acked = |s: &Seg| s.dir == Direction::ToServer && s.ack.wrapping_sub(past) < 1 << 30;
        assert!(segs.iter().any(acked));
    }

    #[test]
    fn reorder_duplicate_retransmit_and_same_overlap_keep_the_stream_intact() {
        for (name, set) in [
            (
                "reorder",
                (|i: &mut Impairments| i.reorder = 0.5) as fn(&mut Impairments),
            ),
            ("duplicate", |i| i.duplicate = 0.5),
            ("retransmit", |i| i.retransmit = 0.5),
            ("overlap_same", |i| i.overlap_same = 0.5),
        ] {
            let mut cfg = config(3, false);
            set(&mut cfg.impair);
            let (cap, req, resp) = run(cfg.clone());
            let segs = parse(&cap, &cfg);
            assert_eq!(
                contiguous(&reassemble(&segs, &cfg, Direction::ToServer)),
                req,
                "{name}"
            );
            assert_eq!(
                contiguous(&reassemble(&segs, &cfg, Direction::ToClient)),
                resp,
                "{name}"
            );
            assert!(
                cap.is_intact(Direction::ToClient, 0, resp.len() as u64),
                "{name}"
            );
            let kinds = cap.impairments_in(Direction::ToClient, 0, resp.len() as u64);
            assert_eq!(kinds.names(), vec![name]);
            let data: Vec<&Seg> = segs
                .iter()
                .filter(|s| s.dir == Direction::ToClient && !s.payload.is_empty())
                .collect();
            let backwards = data
                .windows(2)
                .any(|w| (w[1].seq.wrapping_sub(w[0].seq) as i32) <= 0);
            assert!(
                backwards,
                "{name}: some segment goes back in sequence space"
            );
        }
    }

    #[test]
    fn overlap_with_different_bytes_conflicts_but_first_copy_is_true() {
        let mut cfg = config(4, false);
        cfg.impair.overlap_diff = 0.5;
        let (cap, _req, resp) = run(cfg.clone());
        let segs = parse(&cap, &cfg);
        assert_eq!(
            contiguous(&reassemble(&segs, &cfg, Direction::ToClient)),
            resp
        );
        // A last-copy-wins reassembly disagrees somewhere.
        let isn1 = cfg.server_isn.wrapping_add(1);
        let mut last_wins = resp.clone();
        for s in segs.iter().filter(|s| s.dir == Direction::ToClient) {
            let off = s.seq.wrapping_sub(isn1) as usize;
            for (i, b) in s.payload.iter().enumerate() {
                last_wins[off + i] = *b;
            }
        }
        assert_ne!(last_wins, resp);
        assert!(cap.is_intact(Direction::ToClient, 0, resp.len() as u64));
        assert!(cap
            .impairments_in(Direction::ToClient, 0, resp.len() as u64)
            .contains(Impairment::OverlapDiff));
    }

    /// The same conflicting copies, replayed through the whole engine: most reach back behind
    /// bytes already delivered in order, so only retention can see them. The transactions keep
    /// the true (first) bytes and carry `overlap_mismatch`; with retention off, the conflicts
    /// behind the delivery point go unseen.
    #[test]
    fn overlap_with_different_bytes_flags_transactions_through_the_engine() {
        use crate::capture::RawPacket;
        use crate::engine::{Engine, EngineConfig, EngineStats};
        use crate::transaction::Transaction;

        let mut cfg = config(4, false);
        cfg.impair.overlap_diff = 0.5;
        let body = text(2_500, 3);
        let req = b"GET /items HTTP/1.1\r\nHost: api.example\r\n\r\n".to_vec();
        let mut resp =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        resp.extend_from_slice(&body);
        let mut conv = TcpConversation::new(cfg);
        conv.handshake();
        for _ in 0..2 {
            conv.send(Direction::ToServer, &req, Duration::from_nanos(1_000_000));
            conv.send(Direction::ToClient, &resp, Duration::from_nanos(300_000));
        }
        conv.close(Direction::ToServer);
        let cap = conv.finish();
        assert!(cap
            .impairments_in(Direction::ToClient, 0, resp.len() as u64)
            .contains(Impairment::OverlapDiff));

        let replay = |retain: usize| -> (Vec<Transaction>, EngineStats) {
            let mut ecfg = EngineConfig::default();
            ecfg.stream.overlap_retain_bytes = retain;
            let mut engine = Engine::new(ecfg);
            let mut out = Vec::new();
            for p in &cap.packets {
                let raw = RawPacket {
                    ts: p.ts,
                    linktype: 1,
                    data: &p.data,
                    orig_len: p.orig_len,
                };
                engine.process(&raw, &mut out);
            }
            engine.finish(&mut out);
            (out, engine.stats())
        };
        let (txs, st) = replay(4096);
        assert_eq!(txs.len(), 2);
        for t in &txs {
            let r = t.response.as_ref().expect("response");
            assert_eq!((r.status, r.body.len), (200, body.len() as u64));
            assert_eq!(r.body.data, body, "the first copy of every byte wins");
        }
        assert!(
            txs.iter().any(|t| t.has_flag("overlap_mismatch")),
            "flags: {:?}",
            txs.iter().map(|t| &t.flags).collect::<Vec<_>>()
        );
        assert!(st.stream.retaining_streams > 0);
        assert!(st.stream.overlap_verified_bytes > 0);

        let (plain, st0) = replay(0);
        assert_eq!(st0.stream.retaining_streams, 0);
        assert!(st0.stream.overlap_mismatches < st.stream.overlap_mismatches);
        // Retention adds flags only: the transactions are otherwise the same.
        let unflagged = |v: &[Transaction]| -> Vec<Transaction> {
            v.iter()
                .cloned()
                .map(|mut t| {
                    t.flags.retain(|f| *f != "overlap_mismatch");
                    t
                })
                .collect()
        };
        assert_eq!(unflagged(&txs), unflagged(&plain));
    }

    #[test]
    fn midstream_one_sided_and_snaplen_mark_missing_bytes() {
        // Midstream: handshake and the first request are not captured.
        let mut cfg = config(5, false);
        cfg.impair.skip_first_packets = 6;
        let (cap, req, resp) = run(cfg.clone());
        let segs = parse(&cap, &cfg);
        assert!(segs.iter().all(|s| !s.syn));
        assert!(!cap.is_intact(Direction::ToServer, 0, 1));
        assert!(cap.is_intact(Direction::ToServer, 350, req.len() as u64));
        assert!(cap.is_intact(Direction::ToClient, 2_500, resp.len() as u64));
        assert!(cap
            .impairments_in(Direction::ToServer, 0, 1)
            .contains(Impairment::Midstream));

        // One-sided: only the client's packets.
        let mut cfg = config(6, false);
        cfg.impair.only_direction = Some(Direction::ToServer);
        let (cap, req, resp) = run(cfg.clone());
        let segs = parse(&cap, &cfg);
        assert!(segs.iter().all(|s| s.dir == Direction::ToServer));
        assert_eq!(
            contiguous(&reassemble(&segs, &cfg, Direction::ToServer)),
            req
        );
        assert!(!cap.is_intact(Direction::ToClient, 0, resp.len() as u64));
        assert!(cap
            .impairments_in(Direction::ToClient, 10, 11)
            .contains(Impairment::OneSided));

        // Snaplen: every full-size frame is cut, small ones are not.
        let mut cfg = config(7, false);
        cfg.impair.snaplen_bytes = Some(96);
        let (cap, _req, _resp) = run(cfg.clone());
        assert!(cap.packets.iter().all(|p| p.data.len() <= 96));
        assert!(cap
            .packets
            .iter()
            .any(|p| p.orig_len > 96 && p.data.len() == 96));
        // 14 + 20 + 32 = 66 header bytes: the first 30 bytes of each segment survive.
        assert!(cap.is_intact(Direction::ToClient, 0, 30));
        assert!(!cap.is_intact(Direction::ToClient, 0, 31));
        assert!(cap
            .impairments_in(Direction::ToClient, 30, 31)
            .contains(Impairment::Snaplen));
    }

    #[test]
    fn fragmented_segments_reassemble_after_ip_defragmentation() {
        let mut cfg = config(8, false);
        cfg.mss = 1400;
        cfg.impair.fragment_bytes = Some(512);
        let (cap, req, resp) = run(cfg.clone());
        let mf = cap
            .packets
            .iter()
            .filter(|p| p.data[20] & 0x20 != 0)
            .count();
        assert!(mf > 0, "some frames carry More Fragments");
        let segs = parse(&cap, &cfg);
        assert_eq!(
            contiguous(&reassemble(&segs, &cfg, Direction::ToServer)),
            req
        );
        assert_eq!(
            contiguous(&reassemble(&segs, &cfg, Direction::ToClient)),
            resp
        );
        assert!(cap.is_intact(Direction::ToClient, 0, resp.len() as u64));
        assert!(cap
            .impairments_in(Direction::ToClient, 0, 10)
            .contains(Impairment::Fragmented));
    }

    #[test]
    fn reset_ends_the_conversation_and_same_seed_is_deterministic() {
        let build = || {
            let mut cfg = config(9, true);
            cfg.impair.loss = 0.2;
            cfg.impair.reorder = 0.2;
            let mut conv = TcpConversation::new(cfg.clone());
            conv.handshake();
            conv.send(Direction::ToServer, &text(500, 1), Duration::default());
            conv.reset(Direction::ToClient);
            // Nothing more is sent after a reset.
            conv.send(Direction::ToServer, &text(10, 2), Duration::default());
            (conv.finish(), cfg)
        };
        let (a, cfg) = build();
        let (b, _) = build();
        assert_eq!(a.packets, b.packets);
        let segs = parse(&a, &cfg);
        assert!(segs.last().unwrap().rst);
        assert_eq!(a.stream_len, [500, 0]);
    }
}

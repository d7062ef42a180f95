//! Packet decoding: from a captured frame to the TCP segment it carries.
//!
//! [`Decoder::decode`] walks a frame layer by layer — link header, VLAN/MPLS/PPPoE, IPv4 or IPv6
//! with options and extension headers, tunnels (GRE, ERSPAN, VXLAN, Geneve, Teredo, IP-in-IP) —
//! reassembles IP fragments, and hands back only TCP. Everything else is counted in
//! [`DecodeStats`] and skipped.
//!
//! Invariants:
//! - Pure: no I/O, no clock, no threads. Time is the packet timestamp, which drives fragment
//!   expiry.
//! - Input never panics the decoder and memory is bounded: the only growing state is the
//!   fragment table, capped by [`DecodeConfig::frag_memcap_bytes`] and
//!   [`DecodeConfig::max_frag_datagrams`], plus one scratch buffer no larger than the biggest
//!   reassembled datagram (64 KiB).
//! - Every packet lands in exactly one outcome counter: `tcp`, `udp`, `other_l4`, `non_ip`,
//!   `held`, `unknown_linktype`, or one of the per-layer error counters.
//! - Decoding is lax where captures are: a frame cut by the snaplen still yields its TCP
//!   segment, flagged `truncated` with the number of missing bytes. Checksums are not verified,
//!   because mirrored traffic often carries offloaded (unfilled) checksums.
//! - A segment's payload borrows from the packet, or from the decoder's scratch buffer when the
//!   segment came out of fragment reassembly; either way it is valid until the next `decode`.

mod frag;
pub mod link;
mod tunnel;

#[cfg(test)]
mod tests;

use crate::capture::RawPacket;
use crate::common::Duration;
use etherparse::{
    Ethernet2HeaderSlice, IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice,
    Ipv6HeaderSlice, Ipv6RawExtHeaderSlice, SingleVlanHeaderSlice, TcpSlice, UdpHeaderSlice,
};
use frag::{FragKey, FragLimits, FragOutcome, FragTable, Fragment};
use std::fmt;
use std::net::IpAddr;
use tunnel::{Decap, GreError, TunnelKind};

pub use tunnel::{
    UDP_PORT_GENEVE, UDP_PORT_TEREDO, UDP_PORT_VXLAN, UDP_PORT_VXLAN_GPE, UDP_PORT_VXLAN_LINUX,
};

/// Decoder limits (`[decode]` in the config file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeConfig {
    /// Memory for IP fragments waiting for reassembly. When a fragment would exceed it, the
    /// oldest incomplete datagrams are dropped (`frag_memcap_drops`). Default 16 MiB.
    pub frag_memcap_bytes: usize,
    /// How long, in packet time, a datagram may wait for its missing fragments after its first
    /// fragment arrived; then it is dropped (`frag_timeouts`). Default 30 s, Linux's
    /// `ipfrag_time`.
    pub frag_timeout_secs: u64,
    /// Datagrams in reassembly at once. A new datagram beyond it evicts the oldest
    /// (`frag_datagram_limit_drops`). Default 4096.
    pub max_frag_datagrams: usize,
    /// Nested tunnels opened per packet. A packet needing more is counted
    /// (`tunnel_depth_exceeded`) and dropped as a tunnel error. Default 4.
    pub max_tunnel_depth: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            frag_memcap_bytes: 16 * 1024 * 1024,
            frag_timeout_secs: 30,
            max_frag_datagrams: 4096,
            max_tunnel_depth: 4,
        }
    }
}

/// The outcome of decoding one packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A TCP segment, possibly from a reassembled datagram or from inside a tunnel.
    Tcp(TcpSegment<'a>),
    /// Not TCP (UDP, ICMP, ARP, ...): counted by kind.
    Skipped,
    /// An IP fragment stored for reassembly; its datagram is not complete yet.
    Held,
    /// Malformed or cut before the TCP header: counted by layer.
    Error,
}

/// TCP header flags, as the low byte of the TCP flags field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub const fn from_bits(bits: u8) -> Self {
        TcpFlags(bits)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub const fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub const fn psh(self) -> bool {
        self.0 & Self::PSH != 0
    }
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
    pub const fn urg(self) -> bool {
        self.0 & Self::URG != 0
    }
}

impl fmt::Debug for TcpFlags {
    /// Letters in tcpdump's order and spelling: `S`, `F`, `R`, `P`, `.` for ACK, `U`, `E`, `W`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::SYN, 'S'),
            (Self::FIN, 'F'),
            (Self::RST, 'R'),
            (Self::PSH, 'P'),
            (Self::ACK, '.'),
            (Self::URG, 'U'),
            (Self::ECE, 'E'),
            (Self::CWR, 'W'),
        ];
        let s: String = names
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, c)| *c)
            .collect();
        write!(f, "[{s}]")
    }
}

/// One TCP segment with the addresses of the innermost IP header that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Outermost 802.1Q/802.1ad id of the innermost tagged Ethernet frame (for QinQ, the
    /// service tag). Inside a tunnel, a tagged inner frame wins over the transport's tag, since
    /// it names the monitored network; an untagged inner frame keeps the transport's tag.
    pub vlan: Option<u16>,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    /// Borrowed from the packet, or from the decoder's reassembly buffer.
    pub payload: &'a [u8],
    /// The capture holds less than the headers announce (snaplen); `payload` is what there is.
    pub truncated: bool,
    /// Payload bytes the headers promise but the capture lacks.
    pub missing_bytes: u32,
}

/// Decoder counters. All are totals since the decoder was created.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Packets given to `decode`.
    pub packets: u64,
    /// Packets that yielded a TCP segment.
    pub tcp: u64,
    /// UDP packets, other than tunnels that were opened.
    pub udp: u64,
    /// IP packets with another protocol (ICMP, ESP, SCTP, PPTP GRE, ...).
    pub other_l4: u64,
    /// Frames without IP (ARP, LLDP, STP, netlink, 802.11 management, ...).
    pub non_ip: u64,
    /// Fragments stored for reassembly that did not complete a datagram.
    pub held: u64,
    /// Packets the capture cut short (snaplen): decoded laxly where possible.
    pub truncated: u64,
    /// Link header unreadable (short frame, bad radiotap or NFLOG).
    pub link_errors: u64,
    /// 802.1Q/802.1ad, MPLS or PPPoE header cut short.
    pub vlan_errors: u64,
    /// IPv4 header unreadable, or IPv4 fragment rejected.
    pub ipv4_errors: u64,
    /// IPv6 header or extension header unreadable, or IPv6 fragment rejected.
    pub ipv6_errors: u64,
    /// TCP header unreadable.
    pub tcp_errors: u64,
    /// Tunnel header unreadable, or tunnels nested deeper than allowed.
    pub tunnel_errors: u64,
    /// IPv4 fragments seen.
    pub ipv4_fragments: u64,
    /// IPv6 fragments seen (atomic fragments excluded: they decode directly).
    pub ipv6_fragments: u64,
    /// Datagrams rebuilt from fragments.
    pub reassembled: u64,
    /// Incomplete datagrams dropped to stay under the fragment memcap.
    pub frag_memcap_drops: u64,
    /// Incomplete datagrams dropped because their fragments stopped arriving in time.
    pub frag_timeouts: u64,
    /// Incomplete datagrams dropped because too many were in reassembly.
    pub frag_datagram_limit_drops: u64,
    /// Fragments that overlapped data already received (the first data was kept).
    pub frag_overlaps: u64,
    /// Overlaps whose bytes differed from the data already received: a sign of evasion.
    pub frag_overlap_mismatches: u64,
    /// Fragments that repeated data already received exactly.
    pub frag_duplicates: u64,
    /// Fragments rejected: unaligned, past 64 KiB, or contradicting the datagram's end.
    pub frag_invalid: u64,
    /// GRE tunnels opened (ERSPAN counted apart).
    pub tunnel_gre: u64,
    /// ERSPAN type I, II and III tunnels opened.
    pub tunnel_erspan: u64,
    /// VXLAN tunnels opened.
    pub tunnel_vxlan: u64,
    /// Geneve tunnels opened.
    pub tunnel_geneve: u64,
    /// Teredo tunnels opened.
    pub tunnel_teredo: u64,
    /// IPv4/IPv6-in-IPv4/IPv6 tunnels opened.
    pub tunnel_ipip: u64,
    /// Packets whose tunnels nest deeper than `max_tunnel_depth`.
    pub tunnel_depth_exceeded: u64,
    /// Packets of a link type the decoder does not know.
    pub unknown_linktype: u64,
}

impl DecodeStats {
    /// Every counter with its snake_case name, for metrics and logs.
    pub fn counters(&self) -> [(&'static str, u64); 32] {
        [
            ("packets", self.packets),
            ("tcp", self.tcp),
            ("udp", self.udp),
            ("other_l4", self.other_l4),
            ("non_ip", self.non_ip),
            ("held", self.held),
            ("truncated", self.truncated),
            ("link_errors", self.link_errors),
            ("vlan_errors", self.vlan_errors),
            ("ipv4_errors", self.ipv4_errors),
            ("ipv6_errors", self.ipv6_errors),
            ("tcp_errors", self.tcp_errors),
            ("tunnel_errors", self.tunnel_errors),
            ("ipv4_fragments", self.ipv4_fragments),
            ("ipv6_fragments", self.ipv6_fragments),
            ("reassembled", self.reassembled),
            ("frag_memcap_drops", self.frag_memcap_drops),
            ("frag_timeouts", self.frag_timeouts),
            ("frag_datagram_limit_drops", self.frag_datagram_limit_drops),
            ("frag_overlaps", self.frag_overlaps),
            ("frag_overlap_mismatches", self.frag_overlap_mismatches),
            ("frag_duplicates", self.frag_duplicates),
            ("frag_invalid", self.frag_invalid),
            ("tunnel_gre", self.tunnel_gre),
            ("tunnel_erspan", self.tunnel_erspan),
            ("tunnel_vxlan", self.tunnel_vxlan),
            ("tunnel_geneve", self.tunnel_geneve),
            ("tunnel_teredo", self.tunnel_teredo),
            ("tunnel_ipip", self.tunnel_ipip),
            ("tunnel_depth_exceeded", self.tunnel_depth_exceeded),
            ("unknown_linktype", self.unknown_linktype),
            ("errors", self.errors()),
        ]
    }

    /// Sum of the per-layer error counters.
    pub fn errors(&self) -> u64 {
        self.link_errors
            + self.vlan_errors
            + self.ipv4_errors
            + self.ipv6_errors
            + self.tcp_errors
            + self.tunnel_errors
    }
}

/// The layer at which decoding stopped with an error; selects the error counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// Link-layer or capture pseudo header.
    Link,
    /// VLAN tags, MPLS labels, PPPoE.
    Vlan,
    /// IPv4 header or fragment.
    Ipv4,
    /// IPv6 header, extension header or fragment.
    Ipv6,
    /// TCP header.
    Tcp,
    /// Tunnel header or depth.
    Tunnel,
}

impl Layer {
    pub fn name(self) -> &'static str {
        match self {
            Layer::Link => "link",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Tcp => "tcp",
            Layer::Tunnel => "tunnel",
        }
    }
}

/// The next header to decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// An Ethernet II (or 802.3 + LLC/SNAP) header.
    Ethernet,
    /// Whatever this EtherType names: VLAN tag, IPv4, IPv6, MPLS, PPPoE, bridged Ethernet.
    EtherType(u16),
    /// IPv4 or IPv6, told apart by the version nibble (raw IP link types).
    IpGuess,
    /// An IPv4 header.
    Ipv4,
    /// An IPv6 header.
    Ipv6,
    /// IPv6 extension headers, starting with this protocol number.
    Ipv6Ext(u8),
    /// The payload of an IP header (or of its last extension header).
    IpPayload(u8),
    /// A radiotap header, then an 802.11 frame.
    Radiotap,
    /// An 802.11 frame.
    Ieee80211,
}

/// Hard bound on the layers walked per packet. Every layer consumes header bytes and tunnels
/// are capped by `max_tunnel_depth`, so real packets stay far below it; it only guarantees the
/// walk ends whatever the bytes say.
const MAX_LAYERS: usize = 64;

/// Where the bytes being decoded live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Buf {
    Packet,
    Scratch,
}

/// A TCP segment located but not yet borrowed (see [`Decoder::decode`]).
struct TcpFound {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    vlan: Option<u16>,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    window: u16,
    buf: Buf,
    start: usize,
    end: usize,
    truncated: bool,
    missing_bytes: u32,
}

enum Walked {
    Tcp(TcpFound),
    Skipped,
    Held,
    Error,
}

/// State carried down the layers of one packet.
struct Ctx {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    vlan: Option<u16>,
    /// Whether the current Ethernet frame already gave its outermost tag.
    frame_tagged: bool,
    /// Bytes the innermost IP header announces beyond what was captured.
    missing: u32,
    /// The frame was cut by the snaplen (`orig_len` larger than the captured length).
    snapped: bool,
    saw_truncation: bool,
    tunnels: usize,
}

/// Stateful decoder: owns the fragment table and the buffer reassembled datagrams live in.
pub struct Decoder {
    cfg: DecodeConfig,
    stats: DecodeStats,
    frags: FragTable,
    /// The last reassembled datagram's payload; segments found in it borrow from here.
    scratch: Vec<u8>,
}

/// What one layer step decided.
enum Step {
    /// Continue with `next` on `start..end` of the current buffer.
    Go {
        next: Next,
        start: usize,
        end: usize,
    },
    /// Continue with `next` at the start of a freshly reassembled payload.
    Reassembled {
        next: Next,
        data: Vec<u8>,
    },
    Done(Walked),
}

impl Decoder {
    pub fn new(cfg: DecodeConfig) -> Self {
        let limits = FragLimits {
            memcap_bytes: cfg.frag_memcap_bytes,
            timeout: Duration::from_secs(cfg.frag_timeout_secs.min(u64::MAX / 1_000_000_000)),
            max_datagrams: cfg.max_frag_datagrams,
        };
        Decoder {
            cfg,
            stats: DecodeStats::default(),
            frags: FragTable::new(limits),
            scratch: Vec::new(),
        }
    }

    pub fn config(&self) -> &DecodeConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Datagrams currently waiting for fragments.
    pub fn frag_datagrams(&self) -> usize {
        self.frags.len()
    }

    /// Bytes the fragment table holds, counted against `frag_memcap_bytes`.
    pub fn frag_mem_bytes(&self) -> usize {
        self.frags.mem_bytes()
    }

    /// Decodes one captured frame.
    pub fn decode<'s>(&'s mut self, pkt: &RawPacket<'s>) -> Decoded<'s> {
        // The walk records where the segment is; the payload is borrowed only afterwards, so
        // the walk itself may replace the scratch buffer while it descends.
        let walked = self.walk(pkt);
        match walked {
            Walked::Tcp(t) => {
                let this: &'s Decoder = self;
                let buf: &'s [u8] = match t.buf {
                    Buf::Packet => pkt.data,
                    Buf::Scratch => &this.scratch,
                };
                Decoded::Tcp(TcpSegment {
                    src: t.src,
                    dst: t.dst,
                    src_port: t.src_port,
                    dst_port: t.dst_port,
                    vlan: t.vlan,
                    seq: t.seq,
                    ack: t.ack,
                    flags: t.flags,
                    window: t.window,
                    payload: buf.get(t.start..t.end).unwrap_or(&[]),
                    truncated: t.truncated,
                    missing_bytes: t.missing_bytes,
                })
            }
            Walked::Skipped => Decoded::Skipped,
            Walked::Held => Decoded::Held,
            Walked::Error => Decoded::Error,
        }
    }

    fn walk(&mut self, pkt: &RawPacket<'_>) -> Walked {
        let Decoder {
            cfg,
            stats,
            frags,
            scratch,
        } = self;
        stats.packets += 1;
        frags.expire(pkt.ts, stats);

        let mut ctx = Ctx {
            src: None,
            dst: None,
            vlan: None,
            frame_tagged: false,
            missing: 0,
            snapped: (pkt.orig_len as usize) > pkt.data.len(),
            saw_truncation: false,
            tunnels: 0,
        };
        let (mut next, mut start, mut end) = match link::start(pkt.linktype, pkt.data) {
            link::LinkStart::Next { start, end, next } => (next, start, end),
            link::LinkStart::NonIp => {
                stats.non_ip += 1;
                return Walked::Skipped;
            }
            link::LinkStart::Unknown => {
                stats.unknown_linktype += 1;
                return Walked::Skipped;
            }
            link::LinkStart::Truncated | link::LinkStart::Malformed => {
                if ctx.snapped {
                    stats.truncated += 1;
                }
                stats.link_errors += 1;
                return Walked::Error;
            }
        };
        let mut buf = Buf::Packet;
        let mut result = None;
        for _ in 0..MAX_LAYERS {
            let bytes: &[u8] = match buf {
                Buf::Packet => pkt.data,
                Buf::Scratch => scratch,
            };
            let data = bytes.get(start..end).unwrap_or(&[]);
            let step = step(cfg, stats, frags, &mut ctx, pkt, next, data);
            match step {
                Step::Go {
                    next: n,
                    start: s,
                    end: e,
                } => {
                    // `s..e` is relative to `data`, which starts at `start`.
                    next = n;
                    end = start + e.min(data.len());
                    start += s.min(data.len());
                }
                Step::Reassembled { next: n, data } => {
                    next = n;
                    // Every byte of a reassembled datagram was captured.
                    ctx.missing = 0;
                    *scratch = data;
                    buf = Buf::Scratch;
                    start = 0;
                    end = scratch.len();
                }
                Step::Done(Walked::Tcp(mut t)) => {
                    t.buf = buf;
                    t.start += start;
                    t.end += start;
                    // A segment that reaches the end of a frame the snaplen cut is missing
                    // bytes even when no IP length says how many (IPv6 jumbo/TSO frames).
                    if buf == Buf::Packet && ctx.snapped && t.end == pkt.data.len() {
                        t.truncated = true;
                        if t.missing_bytes == 0 {
                            t.missing_bytes = pkt.orig_len.saturating_sub(pkt.data.len() as u32);
                        }
                    }
                    if t.truncated {
                        ctx.saw_truncation = true;
                    }
                    result = Some(Walked::Tcp(t));
                    break;
                }
                Step::Done(other) => {
                    result = Some(other);
                    break;
                }
            }
        }
        // Only a packet that nests past every bound ends here; it still lands in one counter.
        let result = result.unwrap_or_else(|| {
            stats.tunnel_errors += 1;
            Walked::Error
        });
        if ctx.saw_truncation {
            stats.truncated += 1;
        }
        match result {
            Walked::Tcp(_) => stats.tcp += 1,
            Walked::Held => stats.held += 1,
            _ => {}
        }
        result
    }
}

/// Counts an error at `layer` (and a truncation when the capture was cut) and stops.
fn fail(stats: &mut DecodeStats, ctx: &mut Ctx, layer: Layer) -> Step {
    if ctx.snapped || ctx.missing > 0 {
        ctx.saw_truncation = true;
    }
    match layer {
        Layer::Link => stats.link_errors += 1,
        Layer::Vlan => stats.vlan_errors += 1,
        Layer::Ipv4 => stats.ipv4_errors += 1,
        Layer::Ipv6 => stats.ipv6_errors += 1,
        Layer::Tcp => stats.tcp_errors += 1,
        Layer::Tunnel => stats.tunnel_errors += 1,
    }
    Step::Done(Walked::Error)
}

fn skip(counter: &mut u64) -> Step {
    *counter += 1;
    Step::Done(Walked::Skipped)
}

fn go(next: Next, start: usize, end: usize) -> Step {
    Step::Go { next, start, end }
}

/// Opens one tunnel, or stops when that would nest too deep.
fn decap(cfg: &DecodeConfig, stats: &mut DecodeStats, ctx: &mut Ctx, d: Decap, end: usize) -> Step {
    if ctx.tunnels >= cfg.max_tunnel_depth {
        stats.tunnel_depth_exceeded += 1;
        return fail(stats, ctx, Layer::Tunnel);
    }
    ctx.tunnels += 1;
    match d.kind {
        TunnelKind::Gre => stats.tunnel_gre += 1,
        TunnelKind::Erspan => stats.tunnel_erspan += 1,
        TunnelKind::Vxlan => stats.tunnel_vxlan += 1,
        TunnelKind::Geneve => stats.tunnel_geneve += 1,
        TunnelKind::Teredo => stats.tunnel_teredo += 1,
        TunnelKind::IpIp => stats.tunnel_ipip += 1,
    }
    go(d.next, d.header_len, end)
}

/// Decodes one layer of `data`. Offsets in the returned step are relative to `data`.
fn step(
    cfg: &DecodeConfig,
    stats: &mut DecodeStats,
    frags: &mut FragTable,
    ctx: &mut Ctx,
    pkt: &RawPacket<'_>,
    next: Next,
    data: &[u8],
) -> Step {
    let len = data.len();
    match next {
        Next::Ethernet => {
            ctx.frame_tagged = false;
            let Ok(eth) = Ethernet2HeaderSlice::from_slice(data) else {
                return fail(stats, ctx, Layer::Link);
            };
            let ether_type = eth.ether_type().0;
            if ether_type < 0x0600 {
                // An 802.3 length field: LLC follows, and IP only behind a SNAP header.
                return match data.get(14..22) {
                    Some([0xAA, 0xAA, 0x03, 0, 0, 0, t0, t1]) => {
                        go(Next::EtherType(u16::from_be_bytes([*t0, *t1])), 22, len)
                    }
                    _ => skip(&mut stats.non_ip),
                };
            }
            go(Next::EtherType(ether_type), 14, len)
        }
        Next::EtherType(t) => match t {
            0x0800 => go(Next::Ipv4, 0, len),
            0x86DD => go(Next::Ipv6, 0, len),
            0x8100 | 0x88A8 | 0x9100 => {
                let Ok(tag) = SingleVlanHeaderSlice::from_slice(data) else {
                    return fail(stats, ctx, Layer::Vlan);
                };
                if !ctx.frame_tagged {
                    ctx.frame_tagged = true;
                    ctx.vlan = Some(tag.vlan_identifier().value());
                }
                go(Next::EtherType(tag.ether_type().0), 4, len)
            }
            0x6558 => go(Next::Ethernet, 0, len),
            0x8847 | 0x8848 => mpls(stats, ctx, data),
            0x8864 => {
                // PPPoE session: a 6-byte header, then the PPP protocol number. With protocol
                // field compression (RFC 1661 §6.5) it is one byte, recognisable as odd.
                let (Some(&p0), Some(&p1)) = (data.get(6), data.get(7)) else {
                    return fail(stats, ctx, Layer::Vlan);
                };
                let (proto, hl) = if p0 & 1 == 1 {
                    (u16::from(p0), 7)
                } else {
                    (u16::from_be_bytes([p0, p1]), 8)
                };
                match proto {
                    0x0021 => go(Next::Ipv4, hl, len),
                    0x0057 => go(Next::Ipv6, hl, len),
                    _ => skip(&mut stats.non_ip),
                }
            }
            _ => skip(&mut stats.non_ip),
        },
        Next::IpGuess => match data.first().map(|b| b >> 4) {
            Some(4) => go(Next::Ipv4, 0, len),
            Some(6) => go(Next::Ipv6, 0, len),
            Some(_) => skip(&mut stats.non_ip),
            None => fail(stats, ctx, Layer::Link),
        },
        Next::Radiotap => match link::radiotap(data) {
            Ok(hl) => go(Next::Ieee80211, hl, len),
            Err(link::LinkStart::NonIp) => skip(&mut stats.non_ip),
            Err(_) => fail(stats, ctx, Layer::Link),
        },
        Next::Ieee80211 => match link::ieee80211(data) {
            Ok((hl, t)) => go(Next::EtherType(t), hl, len),
            Err(link::LinkStart::NonIp) => skip(&mut stats.non_ip),
            Err(_) => fail(stats, ctx, Layer::Link),
        },
        Next::Ipv4 => ipv4(stats, frags, ctx, pkt, data),
        Next::Ipv6 => ipv6(stats, ctx, data),
        Next::Ipv6Ext(proto) => ipv6_ext(stats, frags, ctx, pkt, proto, data),
        Next::IpPayload(proto) => ip_payload(cfg, stats, ctx, proto, data),
    }
}

/// MPLS label stack: 4-byte entries until the bottom-of-stack bit, then IP told apart by its
/// version nibble. Pseudowires carrying Ethernet are not opened.
fn mpls(stats: &mut DecodeStats, ctx: &mut Ctx, data: &[u8]) -> Step {
    let mut off = 0;
    loop {
        let Some(entry) = data.get(off..off + 4) else {
            return fail(stats, ctx, Layer::Vlan);
        };
        off += 4;
        if entry[2] & 0x01 != 0 {
            break;
        }
    }
    match data.get(off).map(|b| b >> 4) {
        Some(4) => go(Next::Ipv4, off, data.len()),
        Some(6) => go(Next::Ipv6, off, data.len()),
        Some(_) => skip(&mut stats.non_ip),
        None => fail(stats, ctx, Layer::Vlan),
    }
}

/// The end of an IP payload from the length the header announces and the bytes captured.
/// Records the shortfall in `ctx.missing`. `claimed` is None when the header gives no usable
/// length (zero, as in TSO captures and jumbograms, or less than the header itself).
fn payload_end(ctx: &mut Ctx, claimed: Option<usize>, captured: usize) -> usize {
    match claimed {
        Some(c) if c > captured => {
            ctx.missing = u32::try_from(c - captured).unwrap_or(u32::MAX);
            captured
        }
        Some(c) => {
            ctx.missing = 0;
            c
        }
        None => {
            ctx.missing = 0;
            captured
        }
    }
}

fn ipv4(
    stats: &mut DecodeStats,
    frags: &mut FragTable,
    ctx: &mut Ctx,
    pkt: &RawPacket<'_>,
    data: &[u8],
) -> Step {
    let h = match Ipv4HeaderSlice::from_slice(data) {
        Ok(h) => h,
        Err(_) => return fail(stats, ctx, Layer::Ipv4),
    };
    let header_len = h.slice().len();
    let total = usize::from(h.total_len());
    let claimed = (total >= header_len).then_some(total);
    let end = payload_end(ctx, claimed, data.len());
    let (src, dst) = (IpAddr::from(h.source()), IpAddr::from(h.destination()));
    ctx.src = Some(src);
    ctx.dst = Some(dst);
    let proto = h.protocol().0;
    if !h.is_fragmenting_payload() {
        return go(Next::IpPayload(proto), header_len, end);
    }
    stats.ipv4_fragments += 1;
    if ctx.missing > 0 {
        // The capture lost part of this fragment: the datagram could only be rebuilt with a
        // hole, so the fragment is not stored.
        return fail(stats, ctx, Layer::Ipv4);
    }
    let frag = Fragment {
        key: FragKey {
            src,
            dst,
            id: u32::from(h.identification()),
            proto,
        },
        offset: u32::from(h.fragments_offset().byte_offset()),
        more: h.more_fragments(),
        proto: Some(proto),
        data: data.get(header_len..end).unwrap_or(&[]),
    };
    match frags.insert(pkt.ts, frag, stats) {
        FragOutcome::Held => Step::Done(Walked::Held),
        FragOutcome::Complete { proto, data } => Step::Reassembled {
            next: Next::IpPayload(proto),
            data,
        },
        FragOutcome::Dropped => fail(stats, ctx, Layer::Ipv4),
    }
}

fn ipv6(stats: &mut DecodeStats, ctx: &mut Ctx, data: &[u8]) -> Step {
    let h = match Ipv6HeaderSlice::from_slice(data) {
        Ok(h) => h,
        Err(_) => return fail(stats, ctx, Layer::Ipv6),
    };
    let payload_len = usize::from(h.payload_length());
    let claimed = (payload_len > 0).then_some(40 + payload_len);
    let end = payload_end(ctx, claimed, data.len());
    ctx.src = Some(IpAddr::from(h.source_addr()));
    ctx.dst = Some(IpAddr::from(h.destination_addr()));
    go(Next::Ipv6Ext(h.next_header().0), 40, end)
}

/// IPv6 extension headers (RFC 8200 §4): walked until the upper-layer protocol, reassembling
/// at a fragment header. An atomic fragment (offset 0, M = 0) is just skipped.
fn ipv6_ext(
    stats: &mut DecodeStats,
    frags: &mut FragTable,
    ctx: &mut Ctx,
    pkt: &RawPacket<'_>,
    proto: u8,
    data: &[u8],
) -> Step {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DEST_OPTS: u8 = 60;
    const AUTH: u8 = 51;
    let mut off = 0usize;
    let mut proto = proto;
    loop {
        let rest = data.get(off..).unwrap_or(&[]);
        match proto {
            HOP_BY_HOP | ROUTING | DEST_OPTS => match Ipv6RawExtHeaderSlice::from_slice(rest) {
                Ok(x) => {
                    off += x.slice().len();
                    proto = x.next_header().0;
                }
                Err(_) => return fail(stats, ctx, Layer::Ipv6),
            },
            AUTH => match IpAuthHeaderSlice::from_slice(rest) {
                Ok(x) => {
                    off += x.slice().len();
                    proto = x.next_header().0;
                }
                Err(_) => return fail(stats, ctx, Layer::Ipv6),
            },
            FRAGMENT => {
                let Ok(f) = Ipv6FragmentHeaderSlice::from_slice(rest) else {
                    return fail(stats, ctx, Layer::Ipv6);
                };
                off += f.slice().len();
                proto = f.next_header().0;
                if !f.is_fragmenting_payload() {
                    continue;
                }
                stats.ipv6_fragments += 1;
                if ctx.missing > 0 {
                    return fail(stats, ctx, Layer::Ipv6);
                }
                let (Some(src), Some(dst)) = (ctx.src, ctx.dst) else {
                    return fail(stats, ctx, Layer::Ipv6);
                };
                let offset = u32::from(f.fragment_offset().byte_offset());
                let frag = Fragment {
                    key: FragKey {
                        src,
                        dst,
                        id: f.identification(),
                        proto: 0,
                    },
                    offset,
                    more: f.more_fragments(),
                    // Only the first fragment's next header names the reassembled payload.
                    proto: (offset == 0).then_some(proto),
                    data: data.get(off..).unwrap_or(&[]),
                };
                return match frags.insert(pkt.ts, frag, stats) {
                    FragOutcome::Held => Step::Done(Walked::Held),
                    FragOutcome::Complete { proto, data } => Step::Reassembled {
                        next: Next::Ipv6Ext(proto),
                        data,
                    },
                    FragOutcome::Dropped => fail(stats, ctx, Layer::Ipv6),
                };
            }
            upper => return go(Next::IpPayload(upper), off, data.len()),
        }
    }
}

fn ip_payload(
    cfg: &DecodeConfig,
    stats: &mut DecodeStats,
    ctx: &mut Ctx,
    proto: u8,
    data: &[u8],
) -> Step {
    const IPIP: u8 = 4;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const IPV6: u8 = 41;
    const GRE: u8 = 47;
    const AUTH: u8 = 51;
    let len = data.len();
    match proto {
        TCP => tcp(stats, ctx, data),
        UDP => {
            let Ok(udp) = UdpHeaderSlice::from_slice(data) else {
                if ctx.snapped || ctx.missing > 0 {
                    ctx.saw_truncation = true;
                }
                return skip(&mut stats.udp);
            };
            let udp_len = usize::from(udp.length());
            let end = if (8..=len).contains(&udp_len) {
                udp_len
            } else {
                len
            };
            let body = data.get(8..end).unwrap_or(&[]);
            let (sport, dport) = (udp.source_port(), udp.destination_port());
            // Either port may carry the well-known number: encapsulators pick the source port
            // for entropy, and some (as in Arkime's ERSPAN/VXLAN sample) swap them.
            let on = |ports: &[u16]| ports.contains(&sport) || ports.contains(&dport);
            let tunnel_port = on(&[
                UDP_PORT_VXLAN,
                UDP_PORT_VXLAN_LINUX,
                UDP_PORT_VXLAN_GPE,
                UDP_PORT_GENEVE,
            ]);
            let found = if on(&[UDP_PORT_VXLAN, UDP_PORT_VXLAN_LINUX]) {
                tunnel::vxlan(body)
            } else if on(&[UDP_PORT_VXLAN_GPE]) {
                tunnel::vxlan_gpe(body)
            } else if on(&[UDP_PORT_GENEVE]) {
                tunnel::geneve(body)
            } else if on(&[UDP_PORT_TEREDO]) {
                tunnel::teredo(body)
            } else {
                None
            };
            match found {
                Some(d) => {
                    let d = Decap {
                        header_len: 8 + d.header_len,
                        ..d
                    };
                    decap(cfg, stats, ctx, d, end)
                }
                // A tunnel header the capture cut: an error, not a plain UDP datagram.
                None if ctx.missing > 0 && tunnel_port => fail(stats, ctx, Layer::Tunnel),
                None => skip(&mut stats.udp),
            }
        }
        GRE => match tunnel::gre(data) {
            Ok(d) => decap(cfg, stats, ctx, d, len),
            Err(GreError::Unsupported) => skip(&mut stats.other_l4),
            Err(GreError::Truncated) => fail(stats, ctx, Layer::Tunnel),
        },
        IPIP | IPV6 => {
            let d = Decap {
                header_len: 0,
                next: if proto == IPIP {
                    Next::Ipv4
                } else {
                    Next::Ipv6
                },
                kind: TunnelKind::IpIp,
            };
            decap(cfg, stats, ctx, d, len)
        }
        AUTH => match IpAuthHeaderSlice::from_slice(data) {
            // IPv4 authentication header (IPv6 ones are walked with the extension headers).
            Ok(x) => go(Next::IpPayload(x.next_header().0), x.slice().len(), len),
            Err(_) => fail(stats, ctx, Layer::Ipv4),
        },
        _ => skip(&mut stats.other_l4),
    }
}

fn tcp(stats: &mut DecodeStats, ctx: &mut Ctx, data: &[u8]) -> Step {
    let t = match TcpSlice::from_slice(data) {
        Ok(t) => t,
        Err(_) => return fail(stats, ctx, Layer::Tcp),
    };
    let (Some(src), Some(dst)) = (ctx.src, ctx.dst) else {
        return fail(stats, ctx, Layer::Tcp);
    };
    let header_len = t.header_slice().len();
    // Byte 13 of the header holds CWR..FIN.
    let flags = TcpFlags(t.header_slice().get(13).copied().unwrap_or(0));
    Step::Done(Walked::Tcp(TcpFound {
        src,
        dst,
        src_port: t.source_port(),
        dst_port: t.destination_port(),
        vlan: ctx.vlan,
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        flags,
        window: t.window_size(),
        buf: Buf::Packet,
        start: header_len,
        end: data.len(),
        truncated: ctx.missing > 0,
        missing_bytes: ctx.missing,
    }))
}

//! Builds wire frames: Ethernet (optionally 802.1Q or QinQ tagged), IPv4/IPv6, TCP, and the
//! tunnels a sensor meets on mirrored links (VXLAN, GRE/ERSPAN type II), plus IPv4 fragmentation.
//!
//! Frames are serialised by hand into a caller-owned buffer rather than through a generic
//! builder: the benchmark capture writes gigabytes, and one pass over each header plus one
//! checksum pass over the payload is what keeps that fast. The tests parse every shape back with
//! etherparse, an independent implementation, so the hand-written layout is checked.
//!
//! Invariants: every length field (IPv4 total length, IPv6 payload length, UDP length) matches
//! the bytes written; IPv4 header and TCP checksums are correct; nothing here panics on any
//! argument (payloads too large for a length field are the caller's bug and are clamped).

use std::net::{Ipv4Addr, Ipv6Addr};

pub type Mac = [u8; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const ETHERTYPE_ERSPAN_II: u16 = 0x88be;
pub const IP_PROTO_TCP: u8 = 6;
pub const IP_PROTO_UDP: u8 = 17;
pub const IP_PROTO_GRE: u8 = 47;
pub const IPV6_DEST_OPTS: u8 = 60;
pub const VXLAN_PORT: u16 = 4789;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// 802.1Q tags carried by a frame. `Double` is QinQ: an 802.1ad service tag outside a
/// customer tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlanTags {
    #[default]
    None,
    Single(u16),
    Double {
        outer: u16,
        inner: u16,
    },
}

impl VlanTags {
    /// Bytes the tags add to the Ethernet header.
    pub fn len(self) -> usize {
        match self {
            VlanTags::None => 0,
            VlanTags::Single(_) => 4,
            VlanTags::Double { .. } => 8,
        }
    }

    pub fn is_empty(self) -> bool {
        self == VlanTags::None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetSpec {
    pub src: Mac,
    pub dst: Mac,
    pub vlans: VlanTags,
}

impl EthernetSpec {
    /// Length of the Ethernet header including tags.
    pub fn header_len(&self) -> usize {
        14 + self.vlans.len()
    }
}

/// The IP header of one TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpSpec {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        ttl: u8,
        dont_fragment: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        flow_label: u32,
        /// Insert an 8-byte Destination Options extension header (PadN) before TCP, so that
        /// decoders must walk the extension chain.
        dest_opts: bool,
    },
}

/// TCP options in the shapes a Linux stack sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOptions {
    None,
    /// With timestamps, Linux's layout: MSS, SACK permitted, timestamps, NOP, window scale
    /// (20 bytes). Without: MSS, NOP, window scale, NOP, NOP, SACK permitted (12 bytes), as
    /// Windows sends.
    Syn {
        mss: u16,
        wscale: u8,
        timestamps: Option<(u32, u32)>,
    },
    /// NOP, NOP, timestamps: 12 bytes.
    Timestamps {
        tsval: u32,
        tsecr: u32,
    },
}

impl TcpOptions {
    fn len(self) -> usize {
        match self {
            TcpOptions::None => 0,
            TcpOptions::Syn { timestamps, .. } => {
                if timestamps.is_some() {
                    20
                } else {
                    12
                }
            }
            TcpOptions::Timestamps { .. } => 12,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSpec {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: TcpOptions,
}

/// Where the parts of a frame built by [`build_tcp_frame`] start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// Offset of the IP header (the Ethernet header length).
    pub ip_offset: usize,
    /// Offset of the TCP payload; the frame ends at `payload_offset + payload.len()`.
    pub payload_offset: usize,
}

/// Sums `data` as big-endian 16-bit words (odd tail padded with zero), without folding.
///
/// Summing 32-bit words is equivalent because 2^16 ≡ 1 (mod 2^16 - 1), and halves the work.
pub fn checksum_sum(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut tail = [0u8; 4];
        tail[..rem.len()].copy_from_slice(rem);
        sum += u64::from(u32::from_be_bytes(tail));
    }
    sum
}

/// Folds a sum from [`checksum_sum`] into the one's-complement checksum field value.
pub fn checksum_fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn set_u16(out: &mut [u8], at: usize, v: u16) {
    if let Some(s) = out.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Writes the Ethernet header with its tags, ending with `ethertype`.
pub fn write_ethernet(out: &mut Vec<u8>, eth: &EthernetSpec, ethertype: u16) {
    out.extend_from_slice(&eth.dst);
    out.extend_from_slice(&eth.src);
    match eth.vlans {
        VlanTags::None => {}
        VlanTags::Single(vid) => {
            put_u16(out, ETHERTYPE_VLAN);
            put_u16(out, vid & 0x0fff);
        }
        VlanTags::Double { outer, inner } => {
            put_u16(out, ETHERTYPE_QINQ);
            put_u16(out, outer & 0x0fff);
            put_u16(out, ETHERTYPE_VLAN);
            put_u16(out, inner & 0x0fff);
        }
    }
    put_u16(out, ethertype);
}

/// Writes a 20-byte IPv4 header with a correct checksum.
fn write_ipv4(
    out: &mut Vec<u8>,
    (src, dst): (Ipv4Addr, Ipv4Addr),
    proto: u8,
    payload_len: usize,
    id: u16,
    ttl: u8,
    flags_frag: u16,
) {
    let start = out.len();
    let total = (20 + payload_len).min(usize::from(u16::MAX)) as u16;
    out.push(0x45);
    out.push(0);
    put_u16(out, total);
    put_u16(out, id);
    put_u16(out, flags_frag);
    out.push(ttl);
    out.push(proto);
    put_u16(out, 0);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let ck = checksum_fold(checksum_sum(&out[start..], 0));
    set_u16(out, start + 10, ck);
}

/// Builds one Ethernet/IP/TCP frame into `out` (cleared first) and returns its layout.
pub fn build_tcp_frame(
    out: &mut Vec<u8>,
    eth: &EthernetSpec,
    ip: &IpSpec,
    tcp: &TcpSpec,
    payload: &[u8],
) -> FrameLayout {
    out.clear();
    let tcp_len = 20 + tcp.options.len() + payload.len();
    let pseudo;
    match *ip {
        IpSpec::V4 {
            src,
            dst,
            id,
            ttl,
            dont_fragment,
        } => {
            write_ethernet(out, eth, ETHERTYPE_IPV4);
            let ff = if dont_fragment { 0x4000 } else { 0 };
            write_ipv4(out, (src, dst), IP_PROTO_TCP, tcp_len, id, ttl, ff);
            let mut s = checksum_sum(&src.octets(), 0);
            s = checksum_sum(&dst.octets(), s);
            pseudo = s + u64::from(IP_PROTO_TCP) + tcp_len as u64;
        }
        IpSpec::V6 {
            src,
            dst,
            hop_limit,
            flow_label,
            dest_opts,
        } => {
            write_ethernet(out, eth, ETHERTYPE_IPV6);
            let ext = if dest_opts { 8 } else { 0 };
            put_u32(out, 0x6000_0000 | (flow_label & 0x000f_ffff));
            put_u16(out, (tcp_len + ext).min(usize::from(u16::MAX)) as u16);
            out.push(if dest_opts {
                IPV6_DEST_OPTS
            } else {
                IP_PROTO_TCP
            });
            out.push(hop_limit);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            if dest_opts {
                // Next header TCP, length 0 (8 bytes), one PadN option filling the rest.
                out.extend_from_slice(&[IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
            }
            let mut s = checksum_sum(&src.octets(), 0);
            s = checksum_sum(&dst.octets(), s);
            pseudo = s + u64::from(IP_PROTO_TCP) + tcp_len as u64;
        }
    }
    let tcp_start = out.len();
    put_u16(out, tcp.src_port);
    put_u16(out, tcp.dst_port);
    put_u32(out, tcp.seq);
    put_u32(out, tcp.ack);
    let words = ((20 + tcp.options.len()) / 4) as u8;
    out.push(words << 4);
    out.push(tcp.flags);
    put_u16(out, tcp.window);
    put_u16(out, 0); // checksum, filled below
    put_u16(out, 0); // urgent pointer
    match tcp.options {
        TcpOptions::None => {}
        TcpOptions::Syn {
            mss,
            wscale,
            timestamps: Some((tsval, tsecr)),
        } => {
            out.extend_from_slice(&[2, 4]);
            put_u16(out, mss);
            out.extend_from_slice(&[4, 2, 8, 10]);
            put_u32(out, tsval);
            put_u32(out, tsecr);
            out.extend_from_slice(&[1, 3, 3, wscale]);
        }
        TcpOptions::Syn {
            mss,
            wscale,
            timestamps: None,
        } => {
            out.extend_from_slice(&[2, 4]);
            put_u16(out, mss);
            out.extend_from_slice(&[1, 3, 3, wscale, 1, 1, 4, 2]);
        }
        TcpOptions::Timestamps { tsval, tsecr } => {
            out.extend_from_slice(&[1, 1, 8, 10]);
            put_u32(out, tsval);
            put_u32(out, tsecr);
        }
    }
    let payload_offset = out.len();
    out.extend_from_slice(payload);
    let ck = checksum_fold(checksum_sum(&out[tcp_start..], pseudo));
    set_u16(out, tcp_start + 16, ck);
    FrameLayout {
        ip_offset: eth.header_len(),
        payload_offset,
    }
}

/// The outer network a tunnel runs over (always IPv4 here, as in most fabrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Underlay {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

/// How a whole inner Ethernet frame is carried to the sensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Encap {
    #[default]
    None,
    /// RFC 7348: outer Ethernet/IPv4/UDP 4789, 8-byte VXLAN header with the I flag.
    Vxlan { underlay: Underlay, vni: u32 },
    /// Cisco ERSPAN type II: outer Ethernet/IPv4/GRE with sequence number, protocol 0x88be,
    /// then the 8-byte ERSPAN II header.
    ErspanII { underlay: Underlay, session_id: u16 },
}

/// Wraps `inner` (a full Ethernet frame) in `encap`, writing the result into `out` (cleared).
/// `flow_hash` picks the VXLAN UDP source port (as switches do, for ECMP entropy); `seq` is the
/// GRE sequence number, the ERSPAN index and (its low 16 bits) the outer IPv4 identification.
pub fn encapsulate(out: &mut Vec<u8>, inner: &[u8], encap: &Encap, flow_hash: u16, seq: u32) {
    out.clear();
    match *encap {
        Encap::None => out.extend_from_slice(inner),
        Encap::Vxlan { underlay, vni } => {
            let eth = EthernetSpec {
                src: underlay.src_mac,
                dst: underlay.dst_mac,
                vlans: VlanTags::None,
            };
            write_ethernet(out, &eth, ETHERTYPE_IPV4);
            let udp_len = 8 + 8 + inner.len();
            write_ipv4(
                out,
                (underlay.src, underlay.dst),
                IP_PROTO_UDP,
                udp_len,
                seq as u16,
                64,
                0x4000,
            );
            put_u16(out, 49152 | (flow_hash & 0x3fff));
            put_u16(out, VXLAN_PORT);
            put_u16(out, udp_len.min(usize::from(u16::MAX)) as u16);
            // A zero UDP checksum is what VTEPs send over IPv4 (RFC 7348 section 5).
            put_u16(out, 0);
            out.extend_from_slice(&[0x08, 0, 0, 0]);
            put_u32(out, (vni & 0x00ff_ffff) << 8);
            out.extend_from_slice(inner);
        }
        Encap::ErspanII {
            underlay,
            session_id,
        } => {
            let eth = EthernetSpec {
                src: underlay.src_mac,
                dst: underlay.dst_mac,
                vlans: VlanTags::None,
            };
            write_ethernet(out, &eth, ETHERTYPE_IPV4);
            let gre_len = 8 + 8 + inner.len();
            write_ipv4(
                out,
                (underlay.src, underlay.dst),
                IP_PROTO_GRE,
                gre_len,
                seq as u16,
                64,
                0x4000,
            );
            put_u16(out, 0x1000); // S bit: sequence number present, version 0
            put_u16(out, ETHERTYPE_ERSPAN_II);
            put_u32(out, seq);
            // Ver=1 (type II), VLAN 0 | COS 0, En=3 (original tags preserved), T=0, session id
            // | reserved, index.
            put_u16(out, 0x1000);
            put_u16(out, (3 << 11) | (session_id & 0x03ff));
            put_u32(out, seq & 0x000f_ffff);
            out.extend_from_slice(inner);
        }
    }
}

/// Splits an IPv4 frame into fragments whose IP payload is at most `max_payload` bytes (rounded
/// down to a multiple of 8, at least 8). Each fragment repeats the link header. A frame that is
/// not IPv4, or whose payload already fits, comes back whole.
pub fn fragment_ipv4(frame: &[u8], ip_offset: usize, max_payload: usize) -> Vec<Vec<u8>> {
    let whole = || vec![frame.to_vec()];
    let Some(&vihl) = frame.get(ip_offset) else {
        return whole();
    };
    if vihl >> 4 != 4 {
        return whole();
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let Some(total) = frame
        .get(ip_offset + 2..ip_offset + 4)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    else {
        return whole();
    };
    let step = (max_payload / 8).max(1) * 8;
    let (Some(link), Some(hdr), Some(payload)) = (
        frame.get(..ip_offset),
        frame.get(ip_offset..ip_offset + ihl),
        frame.get(ip_offset + ihl..ip_offset + total),
    ) else {
        return whole();
    };
    if payload.len() <= step || ihl < 20 {
        return whole();
    }
    let mut out = Vec::with_capacity(payload.len() / step + 1);
    let mut off = 0usize;
    while off < payload.len() {
        let end = (off + step).min(payload.len());
        let last = end == payload.len();
        let mut f = Vec::with_capacity(link.len() + ihl + (end - off));
        f.extend_from_slice(link);
        let h = f.len();
        f.extend_from_slice(hdr);
        set_u16(&mut f, h + 2, (ihl + end - off) as u16);
        let mf = if last { 0 } else { 0x2000 };
        set_u16(&mut f, h + 6, mf | ((off / 8) as u16 & 0x1fff));
        set_u16(&mut f, h + 10, 0);
        let ck = checksum_fold(checksum_sum(&f[h..h + ihl], 0));
        set_u16(&mut f, h + 10, ck);
        f.extend_from_slice(&payload[off..end]);
        out.push(f);
        off = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader};

    fn eth(vlans: VlanTags) -> EthernetSpec {
        EthernetSpec {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
            vlans,
        }
    }

    fn v4() -> IpSpec {
        IpSpec::V4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            id: 77,
            ttl: 64,
            dont_fragment: true,
        }
    }

    fn v6(dest_opts: bool) -> IpSpec {
        IpSpec::V6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            hop_limit: 64,
            flow_label: 0x12345,
            dest_opts,
        }
    }

    fn tcp(options: TcpOptions) -> TcpSpec {
        TcpSpec {
            src_port: 40000,
            dst_port: 80,
            seq: 0xffff_fff0,
            ack: 12345,
            flags: TCP_ACK | TCP_PSH,
            window: 501,
            options,
        }
    }

    /// Parses a frame with etherparse and checks every length and checksum; returns the
    /// VLAN ids, the TCP header and the payload.
    fn check_tcp_frame(frame: &[u8]) -> (Vec<u16>, etherparse::TcpHeader, Vec<u8>) {
        let p = PacketHeaders::from_ethernet_slice(frame).expect("etherparse parses the frame");
        let vlans = p
            .link_exts
            .iter()
            .filter_map(|e| match e {
                LinkExtHeader::Vlan(v) => Some(v.vlan_id.value()),
                _ => None,
            })
            .collect();
        let Some(TransportHeader::Tcp(t)) = p.transport.clone() else {
            panic!("no TCP header")
        };
        let payload = p.payload.slice().to_vec();
        let want = match &p.net {
            Some(NetHeaders::Ipv4(h, _)) => {
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                assert_eq!(
                    usize::from(h.total_len),
                    frame.len() - 14 - 4 * p.link_exts.len()
                );
                t.calc_checksum_ipv4(h, &payload).unwrap()
            }
            Some(NetHeaders::Ipv6(h, _)) => {
                assert_eq!(
                    usize::from(h.payload_length),
                    frame.len() - 14 - 4 * p.link_exts.len() - 40
                );
                t.calc_checksum_ipv6(h, &payload).unwrap()
            }
            _ => panic!("no IP header"),
        };
        assert_eq!(t.checksum, want, "TCP checksum");
        (vlans, t, payload)
    }

    #[test]
    fn tcp_frames_parse_back_with_correct_lengths_and_checksums() {
        let cases: Vec<(VlanTags, IpSpec, TcpOptions, usize)> = vec![
            (VlanTags::None, v4(), TcpOptions::None, 0),
            (
                VlanTags::None,
                v4(),
                TcpOptions::Timestamps { tsval: 1, tsecr: 2 },
                1,
            ),
            (VlanTags::Single(100), v4(), TcpOptions::None, 1447),
            (
                VlanTags::Double {
                    outer: 10,
                    inner: 20,
                },
                v6(false),
                TcpOptions::Syn {
                    mss: 1440,
                    wscale: 7,
                    timestamps: Some((9, 0)),
                },
                0,
            ),
            (VlanTags::Single(4094), v6(true), TcpOptions::None, 999),
            (
                VlanTags::None,
                v4(),
                TcpOptions::Syn {
                    mss: 1460,
                    wscale: 8,
                    timestamps: None,
                },
                0,
            ),
            (
                VlanTags::None,
                v6(true),
                TcpOptions::Timestamps { tsval: 5, tsecr: 6 },
                3,
            ),
        ];
        let mut buf = Vec::new();
        for (vl, ip, opts, n) in cases {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let lay = build_tcp_frame(&mut buf, &eth(vl), &ip, &tcp(opts), &payload);
            assert_eq!(lay.payload_offset + n, buf.len());
            let (vlans, t, got) = check_tcp_frame(&buf);
            let want_vlans = match vl {
                VlanTags::None => vec![],
                VlanTags::Single(v) => vec![v],
                VlanTags::Double { outer, inner } => vec![outer, inner],
            };
            assert_eq!(vlans, want_vlans);
            assert_eq!(t.sequence_number, 0xffff_fff0);
            assert_eq!(t.acknowledgment_number, 12345);
            assert!(t.psh && t.ack && !t.syn);
            assert_eq!(got, payload);
        }
    }

    #[test]
    fn tunnels_carry_the_inner_frame_intact() {
        let mut inner = Vec::new();
        build_tcp_frame(
            &mut inner,
            &eth(VlanTags::None),
            &v4(),
            &tcp(TcpOptions::None),
            b"GET / HTTP/1.1\r\n\r\n",
        );
        let underlay = Underlay {
            src_mac: [2, 1, 1, 1, 1, 1],
            dst_mac: [2, 2, 2, 2, 2, 2],
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
        };
        let mut out = Vec::new();
        encapsulate(
            &mut out,
            &inner,
            &Encap::Vxlan {
                underlay,
                vni: 5001,
            },
            0xbeef,
            9,
        );
        let p = PacketHeaders::from_ethernet_slice(&out).unwrap();
        let Some(TransportHeader::Udp(u)) = p.transport else {
            panic!("VXLAN must ride on UDP")
        };
        assert_eq!(u.destination_port, VXLAN_PORT);
        assert_eq!(usize::from(u.length), 16 + inner.len());
        let vx = p.payload.slice();
        assert_eq!(vx[0], 0x08);
        assert_eq!(u32::from_be_bytes([0, vx[4], vx[5], vx[6]]), 5001);
        assert_eq!(&vx[8..], &inner[..]);
        check_tcp_frame(&vx[8..]);

        encapsulate(
            &mut out,
            &inner,
            &Encap::ErspanII {
                underlay,
                session_id: 7,
            },
            0,
            1234,
        );
        let p = PacketHeaders::from_ethernet_slice(&out).unwrap();
        let Some(NetHeaders::Ipv4(h, _)) = &p.net else {
            panic!("outer IPv4")
        };
        assert_eq!(h.protocol.0, IP_PROTO_GRE);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let gre = &out[34..];
        assert_eq!(u16::from_be_bytes([gre[2], gre[3]]), ETHERTYPE_ERSPAN_II);
        assert_eq!(u32::from_be_bytes([gre[4], gre[5], gre[6], gre[7]]), 1234);
        assert_eq!(gre[8] >> 4, 1, "ERSPAN version 1 means type II");
        assert_eq!(u16::from_be_bytes([gre[10], gre[11]]) & 0x3ff, 7);
        assert_eq!(&gre[16..], &inner[..]);
    }

    #[test]
    fn ipv4_fragments_reassemble_to_the_original_datagram() {
        let payload: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
        let mut frame = Vec::new();
        let ip = IpSpec::V4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            id: 4242,
            ttl: 64,
            dont_fragment: false,
        };
        let lay = build_tcp_frame(
            &mut frame,
            &eth(VlanTags::Single(5)),
            &ip,
            &tcp(TcpOptions::None),
            &payload,
        );
        let frags = fragment_ipv4(&frame, lay.ip_offset, 1000);
        assert_eq!(
            frags.len(),
            4,
            "3020 bytes of IP payload in 1000-byte pieces"
        );
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            let h = &f[lay.ip_offset..lay.ip_offset + 20];
            let ck = checksum_fold(checksum_sum(h, 0));
            assert_eq!(ck, 0, "a valid header sums to zero");
            let ff = u16::from_be_bytes([h[6], h[7]]);
            assert_eq!(
                ff & 0x2000 != 0,
                i + 1 < frags.len(),
                "MF on all but the last"
            );
            assert_eq!(usize::from(ff & 0x1fff) * 8, joined.len());
            assert_eq!(u16::from_be_bytes([h[4], h[5]]), 4242);
            assert_eq!(
                usize::from(u16::from_be_bytes([h[2], h[3]])),
                f.len() - lay.ip_offset
            );
            joined.extend_from_slice(&f[lay.ip_offset + 20..]);
        }
        assert_eq!(&joined[..], &frame[lay.ip_offset + 20..]);
        // Fits already, or is not IPv4: returned whole.
        assert_eq!(
            fragment_ipv4(&frame, lay.ip_offset, 4000),
            vec![frame.clone()]
        );
        assert_eq!(fragment_ipv4(&[1, 2, 3], 14, 8), vec![vec![1, 2, 3]]);
    }
}

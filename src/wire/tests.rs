//! Decoder tests: one per link type and tunnel, fragment reassembly through the decoder,
//! snaplen truncation, and property tests (every prefix of valid frames, random bytes).
//!
//! Frames are built with etherparse's `PacketBuilder` where it can, and by hand for the
//! pseudo headers and tunnels it does not write. Everything goes through [`run`], which decodes
//! a sequence of frames and returns owned outcomes for comparison.

use super::link::linktype;
use super::*;
use crate::common::Timestamp;
use etherparse::{PacketBuilder, VlanId};
use proptest::prelude::*;

const REQ: &[u8] = b"GET /api/users/42 HTTP/1.1\r\nHost: api.example\r\n\r\n";
const C4: [u8; 4] = [10, 0, 0, 1];
const S4: [u8; 4] = [10, 0, 0, 2];
const C6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// An owned view of one outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Tcp(Seg),
    Skipped,
    Held,
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seg {
    src: IpAddr,
    dst: IpAddr,
    ports: (u16, u16),
    vlan: Option<u16>,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: Vec<u8>,
    truncated: bool,
    missing: u32,
}

fn own(d: Decoded<'_>) -> Out {
    match d {
        Decoded::Tcp(s) => Out::Tcp(Seg {
            src: s.src,
            dst: s.dst,
            ports: (s.src_port, s.dst_port),
            vlan: s.vlan,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags.bits(),
            window: s.window,
            payload: s.payload.to_vec(),
            truncated: s.truncated,
            missing: s.missing_bytes,
        }),
        Decoded::Skipped => Out::Skipped,
        Decoded::Held => Out::Held,
        Decoded::Error => Out::Error,
    }
}

/// A frame to decode: link type, bytes, and (for truncation tests) its length on the wire.
struct Frame {
    linktype: i32,
    data: Vec<u8>,
    orig_len: usize,
    secs: u64,
}

fn frame(linktype: i32, data: Vec<u8>) -> Frame {
    let orig_len = data.len();
    Frame {
        linktype,
        data,
        orig_len,
        secs: 1,
    }
}

/// Decodes the frames in order with one decoder.
fn run_with(cfg: DecodeConfig, frames: &[Frame]) -> (Vec<Out>, DecodeStats) {
    let mut dec = Decoder::new(cfg);
    let outs = frames
        .iter()
        .map(|f| {
            let pkt = RawPacket {
                ts: Timestamp::from_nanos(f.secs * 1_000_000_000),
                linktype: f.linktype,
                data: &f.data,
                orig_len: f.orig_len as u32,
            };
            own(dec.decode(&pkt))
        })
        .collect();
    (outs, dec.stats().clone())
}

fn run(frames: &[Frame]) -> (Vec<Out>, DecodeStats) {
    run_with(DecodeConfig::default(), frames)
}

/// Decodes one frame and returns the TCP segment, failing the test otherwise.
fn seg(linktype: i32, data: Vec<u8>) -> Seg {
    let (outs, stats) = run(&[frame(linktype, data)]);
    match outs.into_iter().next() {
        Some(Out::Tcp(s)) => s,
        other => panic!("expected TCP, got {other:?} with {stats:?}"),
    }
}

fn tcp_v4(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv4(C4, S4, 64)
        .tcp(40000, 80, 1000, 512)
        .ack(7)
        .psh();
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

fn tcp_v6(payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ipv6(C6, S6, 64)
        .tcp(40000, 80, 1000, 512)
        .ack(7)
        .psh();
    let mut v = Vec::new();
    b.write(&mut v, payload).expect("build");
    v
}

fn eth(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(inner);
    v
}

/// A minimal IPv4 header (no options) around `payload`.
fn ip4(proto: u8, src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend_from_slice(&total.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(payload);
    v
}

fn ip6(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&C6);
    v.extend_from_slice(&S6);
    v.extend_from_slice(payload);
    v
}

fn udp4(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&5555u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ip4(17, [192, 168, 0, 1], [192, 168, 0, 2], &u)
}

fn assert_request(s: &Seg) {
    assert_eq!(s.payload, REQ);
    assert_eq!(s.ports, (40000, 80));
    assert_eq!((s.seq, s.ack, s.window), (1000, 7, 512));
    assert_eq!(s.flags, TcpFlags::ACK | TcpFlags::PSH);
    assert!(!s.truncated);
    assert_eq!(s.missing, 0);
}

fn assert_v4(s: &Seg) {
    assert_request(s);
    assert_eq!(s.src, IpAddr::from(C4));
    assert_eq!(s.dst, IpAddr::from(S4));
}

fn assert_v6(s: &Seg) {
    assert_request(s);
    assert_eq!(s.src, IpAddr::from(C6));
    assert_eq!(s.dst, IpAddr::from(S6));
}

// ---------------------------------------------------------------- link types

#[test]
fn ethernet_ipv4_tcp_with_padding() {
    // A short segment padded to Ethernet's 60-byte minimum: the padding is not payload.
    let mut f = eth(0x0800, &tcp_v4(b"hi"));
    f.resize(60, 0xEE);
    let s = seg(linktype::ETHERNET, f);
    assert_eq!(s.payload, b"hi");
    assert_eq!(s.vlan, None);
    let s = seg(linktype::ETHERNET, eth(0x0800, &tcp_v4(REQ)));
    assert_v4(&s);
}

#[test]
fn ethernet_ipv6_tcp() {
    assert_v6(&seg(linktype::ETHERNET, eth(0x86DD, &tcp_v6(REQ))));
}

#[test]
fn vlan_and_qinq_report_outer_tag() {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .single_vlan(VlanId::try_new(42).expect("vlan"))
        .ipv4(C4, S4, 64)
        .tcp(40000, 80, 1000, 512)
        .ack(7)
        .psh();
    let mut v = Vec::new();
    b.write(&mut v, REQ).expect("build");
    let s = seg(linktype::ETHERNET, v);
    assert_v4(&s);
    assert_eq!(s.vlan, Some(42));

    // 802.1ad service tag 100 outside customer tag 200, built by hand.
    let mut inner = vec![0x00, 200];
    inner.extend_from_slice(&0x0800u16.to_be_bytes());
    inner.extend_from_slice(&tcp_v4(REQ));
    let mut outer = vec![0x00, 100];
    outer.extend_from_slice(&0x8100u16.to_be_bytes());
    outer.extend_from_slice(&inner);
    let s = seg(linktype::ETHERNET, eth(0x88A8, &outer));
    assert_v4(&s);
    assert_eq!(s.vlan, Some(100));
}

#[test]
fn linux_cooked_v1_and_v2() {
    let mut sll = vec![0, 0, 0x03, 0x04, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    sll.extend_from_slice(&tcp_v4(REQ));
    assert_v4(&seg(linktype::LINUX_SLL, sll));

    let mut sll2 = Vec::new();
    sll2.extend_from_slice(&0x86DDu16.to_be_bytes());
    sll2.extend_from_slice(&[0, 0, 0, 0, 0, 3]); // reserved, ifindex
    sll2.extend_from_slice(&1u16.to_be_bytes()); // ARPHRD_ETHER
    sll2.extend_from_slice(&[0, 6, 1, 2, 3, 4, 5, 6, 0, 0]);
    sll2.extend_from_slice(&tcp_v6(REQ));
    assert_v6(&seg(linktype::LINUX_SLL2, sll2));
}

#[test]
fn raw_ip_link_types() {
    for lt in [linktype::RAW, linktype::RAW_DLT12, linktype::RAW_DLT14] {
        assert_v4(&seg(lt, tcp_v4(REQ)));
        assert_v6(&seg(lt, tcp_v6(REQ)));
    }
    assert_v4(&seg(linktype::IPV4, tcp_v4(REQ)));
    assert_v6(&seg(linktype::IPV6, tcp_v6(REQ)));
}

#[test]
fn bsd_loopback_both_byte_orders() {
    let mut le = 2u32.to_le_bytes().to_vec();
    le.extend_from_slice(&tcp_v4(REQ));
    assert_v4(&seg(linktype::NULL, le));
    let mut be = 30u32.to_be_bytes().to_vec();
    be.extend_from_slice(&tcp_v6(REQ));
    assert_v6(&seg(linktype::LOOP, be.clone()));
    assert_v6(&seg(linktype::NULL, be));
}

#[test]
fn nflog_payload_tlv() {
    let mut f = vec![2, 0, 0, 0];
    // NFULA_PACKET_HDR, then NFULA_PAYLOAD, little-endian host.
    f.extend_from_slice(&8u16.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&[0x08, 0x00, 3, 0]);
    let pkt = tcp_v4(REQ);
    f.extend_from_slice(&((pkt.len() + 4) as u16).to_le_bytes());
    f.extend_from_slice(&9u16.to_le_bytes());
    f.extend_from_slice(&pkt);
    assert_v4(&seg(linktype::NFLOG, f));
}

#[test]
fn radiotap_80211_llc_snap() {
    let mut f = vec![0, 0, 8, 0, 0, 0, 0, 0]; // radiotap, no fields
    f.extend_from_slice(&[0x08, 0x01]); // data, to-DS
    f.extend_from_slice(&[0u8; 22]);
    f.extend_from_slice(&[0xAA, 0xAA, 0x03, 0, 0, 0, 0x08, 0x00]);
    f.extend_from_slice(&tcp_v4(REQ));
    f.extend_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]); // FCS: trimmed by the IP length
    assert_v4(&seg(linktype::IEEE802_11_RADIOTAP, f));
}

#[test]
fn llc_snap_on_ethernet() {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    let pkt = tcp_v4(REQ);
    f.extend_from_slice(&((pkt.len() + 8) as u16).to_be_bytes());
    f.extend_from_slice(&[0xAA, 0xAA, 0x03, 0, 0, 0, 0x08, 0x00]);
    f.extend_from_slice(&pkt);
    assert_v4(&seg(linktype::ETHERNET, f));
}

#[test]
fn mpls_and_pppoe() {
    let mut labels = vec![0, 0x10, 0x00, 0x40, 0, 0x20, 0x01, 0x40]; // two labels, S on 2nd
    labels.extend_from_slice(&tcp_v4(REQ));
    assert_v4(&seg(linktype::ETHERNET, eth(0x8847, &labels)));
    let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x57];
    pppoe.extend_from_slice(&tcp_v6(REQ));
    assert_v6(&seg(linktype::ETHERNET, eth(0x8864, &pppoe)));
    // Protocol field compression: a one-byte PPP protocol (suricata-verify bug-4810).
    let mut pfc = vec![0x11, 0, 0, 1, 0, 0, 0x21];
    pfc.extend_from_slice(&tcp_v4(REQ));
    assert_v4(&seg(linktype::ETHERNET, eth(0x8864, &pfc)));
}

#[test]
fn non_tcp_is_skipped_and_counted() {
    let arp = eth(0x0806, &[0u8; 28]);
    let udp = eth(0x0800, &udp4(53, b"dns"));
    let icmp = eth(0x0800, &ip4(1, C4, S4, &[8, 0, 0, 0, 0, 1, 0, 1]));
    let odd = frame(147, vec![0; 40]);
    let (outs, st) = run(&[
        frame(linktype::ETHERNET, arp),
        frame(linktype::ETHERNET, udp),
        frame(linktype::ETHERNET, icmp),
        odd,
    ]);
    assert_eq!(outs, vec![Out::Skipped; 4]);
    assert_eq!(
        (
            st.non_ip,
            st.udp,
            st.other_l4,
            st.unknown_linktype,
            st.packets
        ),
        (1, 1, 1, 1, 4)
    );
}

// ---------------------------------------------------------------- IP options and extensions

#[test]
fn ipv4_options_are_skipped() {
    let mut p = tcp_v4(REQ);
    // IHL 6 with four option bytes (NOP, NOP, NOP, EOL); checksums are not checked.
    p[0] = 0x46;
    let total = u16::from_be_bytes([p[2], p[3]]) + 4;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.splice(20..20, [1, 1, 1, 0]);
    assert_v4(&seg(linktype::RAW, p));
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let tcp = tcp_v6(REQ)[40..].to_vec();
    let mut exts = Vec::new();
    exts.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop → dest opts
    exts.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // dest opts → routing
    exts.extend_from_slice(&[51, 0, 0, 0, 0, 0, 0, 0]); // routing → AH
    exts.extend_from_slice(&[44, 1, 0, 0, 0, 0, 1, 0]); // AH (12 bytes) → fragment
    exts.extend_from_slice(&[0, 0, 0, 1]);
    exts.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 9]); // atomic fragment → TCP
    exts.extend_from_slice(&tcp);
    let (outs, st) = run(&[frame(linktype::RAW, ip6(0, &exts))]);
    match &outs[0] {
        Out::Tcp(s) => assert_v6(s),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.ipv6_fragments, 0, "an atomic fragment is not a fragment");
}

#[test]
fn ipv4_authentication_header() {
    let tcp = tcp_v4(REQ)[20..].to_vec();
    let mut ah = vec![6, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
    ah.extend_from_slice(&tcp);
    assert_v4(&seg(linktype::RAW, ip4(51, C4, S4, &ah)));
}

// ---------------------------------------------------------------- tunnels

fn gre(flags: u16, proto: u16, extra: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(extra);
    g.extend_from_slice(inner);
    ip4(47, [172, 16, 0, 1], [172, 16, 0, 2], &g)
}

#[test]
fn vxlan_on_both_ports() {
    for port in [UDP_PORT_VXLAN, UDP_PORT_VXLAN_LINUX] {
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
        vx.extend_from_slice(&eth(0x0800, &tcp_v4(REQ)));
        let (outs, st) = run(&[frame(linktype::ETHERNET, eth(0x0800, &udp4(port, &vx)))]);
        match &outs[0] {
            Out::Tcp(s) => assert_v4(s),
            other => panic!("{other:?}"),
        }
        assert_eq!((st.tunnel_vxlan, st.udp), (1, 0));
    }
}

#[test]
fn vxlan_on_source_port_and_gpe() {
    // Arkime's ERSPAN sample sends VXLAN from port 4789 to 4790 with the GPE P flag set.
    let mut vx = vec![0x0C, 0, 0, 0x03, 0, 0, 7, 0];
    vx.extend_from_slice(&eth(0x0800, &tcp_v4(REQ)));
    let mut u = Vec::new();
    u.extend_from_slice(&UDP_PORT_VXLAN.to_be_bytes());
    u.extend_from_slice(&UDP_PORT_VXLAN_GPE.to_be_bytes());
    u.extend_from_slice(&((8 + vx.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(&vx);
    assert_v4(&seg(linktype::RAW, ip4(17, [1, 1, 1, 1], [2, 2, 2, 2], &u)));
    let mut gpe = vec![0x0C, 0, 0, 0x02, 0, 0, 7, 0];
    gpe.extend_from_slice(&tcp_v6(REQ));
    assert_v6(&seg(linktype::RAW, udp4(UDP_PORT_VXLAN_GPE, &gpe)));
}

#[test]
fn gre_with_key_sequence_and_checksum() {
    let p = gre(0xB000, 0x0800, &[0; 12], &tcp_v4(REQ));
    let (outs, st) = run(&[frame(linktype::RAW, p)]);
    match &outs[0] {
        Out::Tcp(s) => assert_v4(s),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.tunnel_gre, 1);
    let p6 = gre(0x2000, 0x86DD, &[0, 0, 0, 9], &tcp_v6(REQ));
    assert_v6(&seg(linktype::RAW, p6));
}

#[test]
fn gre_transparent_ethernet_bridging() {
    let p = gre(0, 0x6558, &[], &eth(0x0800, &tcp_v4(REQ)));
    assert_v4(&seg(linktype::ETHERNET, eth(0x0800, &p)));
}

#[test]
fn erspan_type_ii_and_iii() {
    let mirrored = eth(0x0800, &tcp_v4(REQ));
    let mut e2 = vec![0x10, 0x0A, 0x00, 0x01, 0, 0, 0, 0];
    e2.extend_from_slice(&mirrored);
    let p2 = gre(0x1000, 0x88BE, &[0, 0, 0, 1], &e2);
    let mut e3 = vec![0x20, 0x0A, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0x01];
    e3.extend_from_slice(&[0; 8]); // platform-specific subheader (O bit)
    e3.extend_from_slice(&mirrored);
    let p3 = gre(0x1000, 0x22EB, &[0, 0, 0, 1], &e3);
    let (outs, st) = run(&[
        frame(linktype::ETHERNET, eth(0x0800, &p2)),
        frame(linktype::ETHERNET, eth(0x0800, &p3)),
    ]);
    for o in &outs {
        match o {
            Out::Tcp(s) => assert_v4(s),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((st.tunnel_erspan, st.tunnel_gre), (2, 0));
}

#[test]
fn ip_in_ip_and_6in4() {
    let (outs, st) = run(&[
        frame(
            linktype::RAW,
            ip4(4, [1, 1, 1, 1], [2, 2, 2, 2], &tcp_v4(REQ)),
        ),
        frame(
            linktype::RAW,
            ip4(41, [1, 1, 1, 1], [2, 2, 2, 2], &tcp_v6(REQ)),
        ),
    ]);
    match (&outs[0], &outs[1]) {
        (Out::Tcp(a), Out::Tcp(b)) => {
            assert_v4(a);
            assert_v6(b);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.tunnel_ipip, 2);
}

#[test]
fn geneve_and_teredo() {
    let mut gn = vec![0x01, 0, 0x65, 0x58, 0, 0, 7, 0, 0, 0, 0, 0];
    gn.extend_from_slice(&eth(0x0800, &tcp_v4(REQ)));
    assert_v4(&seg(linktype::RAW, udp4(UDP_PORT_GENEVE, &gn)));
    let mut td = vec![0, 0, 0x12, 0x34, 1, 2, 3, 4]; // origin indication
    td.extend_from_slice(&tcp_v6(REQ));
    let (outs, st) = run(&[frame(linktype::RAW, udp4(UDP_PORT_TEREDO, &td))]);
    match &outs[0] {
        Out::Tcp(s) => assert_v6(s),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.tunnel_teredo, 1);
}

#[test]
fn tunnel_depth_is_limited() {
    let mut p = tcp_v4(REQ);
    for _ in 0..5 {
        p = ip4(4, [1, 1, 1, 1], [2, 2, 2, 2], &p);
    }
    // Five IP-in-IP layers around the TCP packet: one more than the default limit of 4.
    let (outs, st) = run(&[frame(linktype::RAW, p.clone())]);
    assert_eq!(outs, vec![Out::Error]);
    assert_eq!((st.tunnel_depth_exceeded, st.tunnel_errors), (1, 1));
    let cfg = DecodeConfig {
        max_tunnel_depth: 5,
        ..DecodeConfig::default()
    };
    let (outs, _) = run_with(cfg, &[frame(linktype::RAW, p)]);
    assert!(matches!(&outs[0], Out::Tcp(s) if s.payload == REQ));
}

// ---------------------------------------------------------------- fragments

/// Splits an IPv4 packet (20-byte header) into fragments carrying `size` payload bytes each.
fn frag_v4(pkt: &[u8], size: usize, id: u16) -> Vec<Vec<u8>> {
    let payload = &pkt[20..];
    let n = payload.len().div_ceil(size);
    (0..n)
        .map(|i| {
            let chunk = &payload[i * size..((i + 1) * size).min(payload.len())];
            let mut h = pkt[..20].to_vec();
            h[2..4].copy_from_slice(&((20 + chunk.len()) as u16).to_be_bytes());
            h[4..6].copy_from_slice(&id.to_be_bytes());
            let more = if i + 1 < n { 0x2000 } else { 0 };
            h[6..8].copy_from_slice(&(more | (i * size / 8) as u16).to_be_bytes());
            h.extend_from_slice(chunk);
            h
        })
        .collect()
}

/// Splits an IPv6 packet (no extension headers) into fragments of `size` bytes each.
fn frag_v6(pkt: &[u8], size: usize, id: u32) -> Vec<Vec<u8>> {
    let next = pkt[6];
    let payload = &pkt[40..];
    let n = payload.len().div_ceil(size);
    (0..n)
        .map(|i| {
            let chunk = &payload[i * size..((i + 1) * size).min(payload.len())];
            let more = u16::from(i + 1 < n);
            let mut f = vec![next, 0];
            f.extend_from_slice(&(((i * size) as u16) | more).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(chunk);
            ip6(44, &f)
        })
        .collect()
}

fn frames_at(pieces: &[Vec<u8>], order: &[usize], secs: u64) -> Vec<Frame> {
    order
        .iter()
        .map(|&i| Frame {
            secs,
            ..frame(linktype::RAW, pieces[i].clone())
        })
        .collect()
}

#[test]
fn ipv4_fragments_in_order_and_reversed() {
    let pieces = frag_v4(&tcp_v4(REQ), 24, 77);
    assert_eq!(pieces.len(), 3);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
        let (outs, st) = run(&frames_at(&pieces, &order, 1));
        assert_eq!(&outs[..2], &[Out::Held, Out::Held], "{order:?}");
        match &outs[2] {
            Out::Tcp(s) => assert_v4(s),
            other => panic!("{order:?}: {other:?}"),
        }
        assert_eq!((st.ipv4_fragments, st.reassembled, st.held), (3, 1, 2));
    }
}

#[test]
fn ipv6_fragments_reassemble() {
    let pieces = frag_v6(&tcp_v6(REQ), 32, 0xABCD);
    assert_eq!(pieces.len(), 3);
    let (outs, st) = run(&frames_at(&pieces, &[1, 0, 2], 1));
    match &outs[2] {
        Out::Tcp(s) => assert_v6(s),
        other => panic!("{other:?}"),
    }
    assert_eq!((st.ipv6_fragments, st.reassembled), (3, 1));
}

#[test]
fn overlapping_and_duplicate_fragments() {
    let pkt = tcp_v4(REQ);
    let pieces = frag_v4(&pkt, 24, 5);
    // A forged copy of the middle fragment with different bytes, sent after the real one.
    let mut forged = pieces[1].clone();
    for b in &mut forged[20..] {
        *b = b'X';
    }
    let mut frames = frames_at(&pieces, &[0, 1, 1], 1);
    frames.push(frame(linktype::RAW, forged));
    frames.extend(frames_at(&pieces, &[2], 1));
    let (outs, st) = run(&frames);
    assert_eq!(outs[..4].to_vec(), vec![Out::Held; 4]);
    match &outs[4] {
        Out::Tcp(s) => assert_v4(s),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.frag_duplicates, 1);
    assert_eq!(st.frag_overlap_mismatches, 1);
}

#[test]
fn missing_fragment_times_out() {
    let pieces = frag_v4(&tcp_v4(REQ), 24, 9);
    let mut frames = frames_at(&pieces, &[0, 2], 1);
    // A later unrelated packet, 40 s on: the incomplete datagram expires.
    frames.push(Frame {
        secs: 41,
        ..frame(linktype::RAW, tcp_v4(b"x"))
    });
    // The missing piece arrives too late: it starts a new datagram and is held.
    frames.extend(frames_at(&pieces, &[1], 41));
    let (outs, st) = run(&frames);
    assert_eq!(outs[3], Out::Held);
    assert_eq!((st.frag_timeouts, st.reassembled), (1, 0));
}

#[test]
fn fragment_memcap_evicts_oldest() {
    let big = vec![b'a'; 4000];
    let a = frag_v4(&tcp_v4(&big), 1024, 1);
    let b = frag_v4(&tcp_v4(&big), 1024, 2);
    let cfg = DecodeConfig {
        frag_memcap_bytes: 6000,
        ..DecodeConfig::default()
    };
    // Datagram 1 gets three fragments, then datagram 2 needs room: datagram 1 is evicted.
    let mut frames = frames_at(&a, &[0, 1, 2], 1);
    frames.extend(frames_at(&b, &[0, 1, 2, 3], 2));
    frames.extend(frames_at(&a, &[3], 3));
    let (outs, st) = run_with(cfg, &frames);
    assert!(st.frag_memcap_drops >= 1, "{st:?}");
    match &outs[6] {
        Out::Tcp(s) => assert_eq!(s.payload, big),
        other => panic!("datagram 2 should complete: {other:?} {st:?}"),
    }
    assert_eq!(outs[7], Out::Held, "datagram 1 was evicted");
}

// ---------------------------------------------------------------- truncation

#[test]
fn snaplen_cut_segment_is_flagged() {
    let full = eth(0x0800, &tcp_v4(REQ));
    let cut = 14 + 20 + 20 + 10;
    let f = Frame {
        orig_len: full.len(),
        ..frame(linktype::ETHERNET, full[..cut].to_vec())
    };
    let (outs, st) = run(&[f]);
    match &outs[0] {
        Out::Tcp(s) => {
            assert_eq!(s.payload, &REQ[..10]);
            assert!(s.truncated);
            assert_eq!(s.missing as usize, REQ.len() - 10);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.truncated, 1);
}

#[test]
fn missing_bytes_come_from_the_ip_length_not_the_frame_length() {
    // The frame on the wire carried a 4-byte FCS after the IP packet, so orig_len overstates
    // what the segment lacks; the IP total length says exactly.
    let mut full = eth(0x0800, &tcp_v4(REQ));
    full.extend_from_slice(&[0xFC; 4]);
    let cut = 14 + 40 + 5;
    let snapped = Frame {
        orig_len: full.len(),
        ..frame(linktype::ETHERNET, full[..cut].to_vec())
    };
    // A tool rewrote the record with orig_len equal to the cut length: only the IP header
    // tells that bytes are missing.
    let relabelled = frame(linktype::ETHERNET, full[..cut].to_vec());
    let (outs, st) = run(&[snapped, relabelled]);
    for o in &outs {
        match o {
            Out::Tcp(s) => {
                assert!(s.truncated);
                assert_eq!(s.missing as usize, REQ.len() - 5);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(st.truncated, 2);
}

/// Valid frames of every kind the decoder opens, each holding `REQ` in a TCP segment.
fn corpus() -> Vec<(i32, Vec<u8>)> {
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
    vx.extend_from_slice(&eth(0x0800, &tcp_v4(REQ)));
    let mut e2 = vec![0x10, 0x0A, 0x00, 0x01, 0, 0, 0, 0];
    e2.extend_from_slice(&eth(0x86DD, &tcp_v6(REQ)));
    let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&tcp_v4(REQ));
    vec![
        (linktype::ETHERNET, eth(0x0800, &tcp_v4(REQ))),
        (linktype::ETHERNET, eth(0x86DD, &tcp_v6(REQ))),
        (linktype::ETHERNET, eth(0x0800, &udp4(4789, &vx))),
        (
            linktype::ETHERNET,
            eth(0x0800, &gre(0x1000, 0x88BE, &[0, 0, 0, 1], &e2)),
        ),
        (
            linktype::RAW,
            ip4(4, [1, 1, 1, 1], [2, 2, 2, 2], &tcp_v4(REQ)),
        ),
        (linktype::LINUX_SLL, sll),
    ]
}

proptest! {
    /// Every prefix of every valid frame decodes without panicking; a TCP segment from a cut
    /// frame is flagged, its payload is a prefix of the real one, and the missing count adds
    /// up.
    #[test]
    fn truncation_sweep(which in 0usize..6) {
        let (lt, full) = corpus().swap_remove(which);
        for cut in 0..=full.len() {
            let f = Frame { orig_len: full.len(), ..frame(lt, full[..cut].to_vec()) };
            let (outs, st) = run(&[f]);
            match &outs[0] {
                Out::Tcp(s) => {
                    prop_assert!(REQ.starts_with(&s.payload), "cut {}", cut);
                    if cut < full.len() {
                        prop_assert!(s.truncated, "cut {} not flagged", cut);
                        prop_assert_eq!(s.payload.len() + s.missing as usize, REQ.len());
                        prop_assert_eq!(st.truncated, 1);
                    } else {
                        prop_assert!(!s.truncated);
                        prop_assert_eq!(&s.payload[..], REQ);
                    }
                }
                Out::Error => prop_assert!(cut < full.len()),
                // A UDP header cut short cannot be told from plain UDP.
                Out::Skipped => prop_assert!(cut < full.len() && st.udp == 1, "cut {}", cut),
                other => prop_assert!(false, "cut {}: {:?}", cut, other),
            }
        }
    }

    /// Arbitrary bytes under every link type never panic and land in exactly one counter.
    #[test]
    fn random_bytes_never_panic(
        lt in prop::sample::select(vec![0, 1, 12, 14, 101, 105, 108, 113, 127, 228, 229, 239, 276, 999]),
        data in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let (_, st) = run(&[frame(lt, data)]);
        let outcomes = st.tcp + st.udp + st.other_l4 + st.non_ip + st.held
            + st.unknown_linktype + st.errors();
        prop_assert_eq!(outcomes, 1, "{:?}", st);
    }

    /// Random mutations of valid frames (including tunnel and fragment headers) never panic.
    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..6,
        edits in prop::collection::vec((any::<u16>(), any::<u8>()), 1..8),
    ) {
        let (lt, mut data) = corpus().swap_remove(which);
        for (at, v) in edits {
            let i = usize::from(at) % data.len();
            data[i] = v;
        }
        let (_, st) = run(&[frame(lt, data.clone()), frame(lt, data)]);
        prop_assert_eq!(st.packets, 2);
    }
}

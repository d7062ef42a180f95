//! Which worker a packet goes to: a symmetric hash of its outermost IP addresses.
//!
//! Each worker owns its own flow table, so every packet of a connection (both directions, and
//! every IP fragment) must reach the same worker. The key is the unordered pair of the outermost
//! source and destination addresses:
//! - both directions give the same key, because the pair is sorted before hashing;
//! - IP fragments give the same key as unfragmented packets, because fragments carry addresses
//!   but not ports; hashing ports too would let an attacker steer part of a connection to a
//!   worker that does not track it just by fragmenting it (`[daemon] shard_by_ports` opts in,
//!   for links where few address pairs carry most traffic, and accepts that risk);
//! - tunnelled traffic (VXLAN, GRE, ERSPAN, ...) is keyed by the tunnel endpoints, which are the
//!   same for both directions of every connection inside one mirror session. Its UDP source
//!   port is per-flow entropy that differs between directions, so it is never hashed.
//!
//! The walk reads only fixed link, VLAN, MPLS, PPPoE, IPv4 and IPv6 headers. A frame it cannot
//! read (ARP, a truncated header) gets key 0: it goes to worker 0, whose decoder counts it.
//!
//! Invariant: a pure function of the frame bytes that never panics and reads a bounded number
//! of headers.

use crate::wire::link::{self, LinkStart};
use crate::wire::Next;

/// Most VLAN tags, MPLS labels and IPv6 extension headers walked before giving up.
const MAX_HEADERS: usize = 8;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88A8, 0x9100];
const ETHERTYPE_MPLS: [u16; 2] = [0x8847, 0x8848];
const ETHERTYPE_PPPOE_SESSION: u16 = 0x8864;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_FRAGMENT: u8 = 44;
/// IPv6 extension headers with the generic (next, length in 8-octet units) layout.
const IPV6_EXT: [u8; 3] = [0, 43, 60];

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *d.get(at)?,
        *d.get(at.checked_add(1)?)?,
    ]))
}

/// The worker for a frame among `workers` (at least 1).
pub fn worker_of(linktype: i32, data: &[u8], workers: usize, with_ports: bool) -> usize {
    if workers <= 1 {
        return 0;
    }
    let key = shard_key(linktype, data, with_ports);
    // `workers` is small; the modulo bias of a 64-bit hash is negligible.
    (key % workers as u64) as usize
}

/// The symmetric key of a frame; 0 when no IP header could be read.
pub fn shard_key(linktype: i32, data: &[u8], with_ports: bool) -> u64 {
    ip_key(linktype, data, with_ports).unwrap_or(0)
}

fn ip_key(linktype: i32, data: &[u8], with_ports: bool) -> Option<u64> {
    let LinkStart::Next { start, end, next } = link::start(linktype, data) else {
        return None;
    };
    let mut d = data.get(start..end)?;
    let mut next = next;
    for _ in 0..MAX_HEADERS {
        // Each step reads one header at the start of `d` and says how many bytes it spans and
        // what follows it.
        let (skip, n) = match next {
            Next::Ethernet => (14, Next::EtherType(be16(d, 12)?)),
            Next::EtherType(ETHERTYPE_IPV4) => return ipv4(d, with_ports),
            Next::EtherType(ETHERTYPE_IPV6) => return ipv6(d, with_ports),
            // A tag: 2 bytes of TCI, then the EtherType of what it carries.
            Next::EtherType(t) if ETHERTYPE_VLAN.contains(&t) => (4, Next::EtherType(be16(d, 2)?)),
            Next::EtherType(t) if ETHERTYPE_MPLS.contains(&t) => {
                // 4-byte labels until the bottom-of-stack bit, then IP told by its version.
                let mut at = 0usize;
                loop {
                    let bos = d.get(at + 2)? & 1 == 1;
                    at += 4;
                    if bos {
                        break;
                    }
                    if at >= 4 * MAX_HEADERS {
                        return None;
                    }
                }
                (at, Next::IpGuess)
            }
            // PPPoE session header (6 bytes), then the 2-byte PPP protocol.
            Next::EtherType(ETHERTYPE_PPPOE_SESSION) => match be16(d, 6)? {
                0x0021 => (8, Next::EtherType(ETHERTYPE_IPV4)),
                0x0057 => (8, Next::EtherType(ETHERTYPE_IPV6)),
                _ => return None,
            },
            Next::IpGuess | Next::Ipv4 | Next::Ipv6 => match d.first()? >> 4 {
                4 => return ipv4(d, with_ports),
                6 => return ipv6(d, with_ports),
                _ => return None,
            },
            Next::Radiotap => (link::radiotap(d).ok()?, Next::Ieee80211),
            Next::Ieee80211 => {
                let (hl, t) = link::ieee80211(d).ok()?;
                (hl, Next::EtherType(t))
            }
            _ => return None,
        };
        d = d.get(skip..)?;
        next = n;
    }
    None
}

fn ipv4(d: &[u8], with_ports: bool) -> Option<u64> {
    let ihl = usize::from(d.first()? & 0x0f) * 4;
    let a = d.get(12..16)?;
    let b = d.get(16..20)?;
    let frag = be16(d, 6)?;
    let fragment = frag & 0x2000 != 0 || frag & 0x1fff != 0;
    let ports = if with_ports && !fragment && d.get(9) == Some(&IPPROTO_TCP) && ihl >= 20 {
        tcp_ports(d.get(ihl..)?)
    } else {
        None
    };
    Some(hash(a, b, ports))
}

fn ipv6(d: &[u8], with_ports: bool) -> Option<u64> {
    let a = d.get(8..24)?;
    let b = d.get(24..40)?;
    let mut ports = None;
    if with_ports {
        let mut proto = *d.get(6)?;
        let mut at = 40usize;
        for _ in 0..MAX_HEADERS {
            if proto == IPPROTO_TCP {
                ports = d.get(at..).and_then(tcp_ports);
                break;
            }
            if proto == IPPROTO_FRAGMENT || !IPV6_EXT.contains(&proto) {
                break;
            }
            proto = *d.get(at)?;
            let len = (usize::from(*d.get(at + 1)?) + 1) * 8;
            at = at.checked_add(len)?;
        }
    }
    Some(hash(a, b, ports))
}

fn tcp_ports(d: &[u8]) -> Option<(u16, u16)> {
    Some((be16(d, 0)?, be16(d, 2)?))
}

/// Order-independent hash of an address pair and, optionally, a port pair.
fn hash(a: &[u8], b: &[u8], ports: Option<(u16, u16)>) -> u64 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let ports = ports.map(|(p, q)| (p.min(q), p.max(q)));
    // Fixed seeds: the same packet goes to the same worker on every run, so a replay spreads
    // its flows the same way each time.
    let state = ahash::RandomState::with_seeds(
        0x6170_6974_6170_0001,
        0x9e37_79b9_7f4a_7c15,
        0x2545_f491_4f6c_dd1d,
        0x1234_5678_9abc_def1,
    );
    state.hash_one((lo, hi, ports))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::link::linktype;

    fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 40, 0, 1];
        ip.extend_from_slice(&frag.to_be_bytes());
        ip.extend_from_slice(&[64, 6, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&[0; 16]);
        ip
    }

    fn ipv6_tcp(src: u8, dst: u8, sport: u16, dport: u16, fragment: bool) -> Vec<u8> {
        let mut ip = vec![0x60, 0, 0, 0, 0, 28, if fragment { 44 } else { 6 }, 64];
        ip.extend_from_slice(&[src; 16]);
        ip.extend_from_slice(&[dst; 16]);
        if fragment {
            ip.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9]);
        }
        ip.extend_from_slice(&sport.to_be_bytes());
        ip.extend_from_slice(&dport.to_be_bytes());
        ip.extend_from_slice(&[0; 16]);
        ip
    }

    fn ether(ethertype: u16, vlans: &[u16], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        for v in vlans {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// (description, link type of A, frame A, frame B, with_ports, must A and B share a key)
    type Case = (&'static str, i32, Vec<u8>, Vec<u8>, bool, bool);

    fn cases() -> Vec<Case> {
        let c = [10, 0, 0, 1];
        let s = [10, 0, 0, 2];
        let e = linktype::ETHERNET;
        vec![
            (
                "the two directions of a connection",
                e,
                ether(0x0800, &[], &ipv4_tcp(c, s, 40000, 80, 0)),
                ether(0x0800, &[], &ipv4_tcp(s, c, 80, 40000, 0)),
                true,
                true,
            ),
            (
                "a fragment and an unfragmented packet, addresses only",
                e,
                ether(0x0800, &[], &ipv4_tcp(c, s, 40000, 80, 0x2000)),
                ether(0x0800, &[], &ipv4_tcp(s, c, 80, 40000, 0)),
                false,
                true,
            ),
            (
                "a later fragment has no ports: addresses only",
                e,
                ether(0x0800, &[], &ipv4_tcp(c, s, 1, 2, 0x0010)),
                ether(0x0800, &[], &ipv4_tcp(c, s, 40000, 80, 0)),
                false,
                true,
            ),
            (
                "VLAN-tagged and raw IP views of the same packet",
                linktype::RAW,
                ipv4_tcp(c, s, 40000, 80, 0),
                ether(0x0800, &[7, 9], &ipv4_tcp(s, c, 80, 40000, 0)),
                true,
                true,
            ),
            (
                "IPv6 directions, and a fragment",
                linktype::IPV6,
                ipv6_tcp(1, 2, 40000, 80, true),
                ipv6_tcp(2, 1, 80, 40000, false),
                false,
                true,
            ),
            (
                "ports on: different connections between the same hosts",
                e,
                ether(0x0800, &[], &ipv4_tcp(c, s, 40000, 80, 0)),
                ether(0x0800, &[], &ipv4_tcp(c, s, 40001, 80, 0)),
                true,
                false,
            ),
            (
                "ports on, IPv6: different connections between the same hosts",
                linktype::IPV6,
                ipv6_tcp(1, 2, 40000, 80, false),
                ipv6_tcp(1, 2, 40001, 80, false),
                true,
                false,
            ),
            (
                "different host pairs",
                e,
                ether(0x0800, &[], &ipv4_tcp(c, s, 40000, 80, 0)),
                ether(0x0800, &[], &ipv4_tcp(c, [10, 0, 0, 3], 40000, 80, 0)),
                false,
                false,
            ),
        ]
    }

    #[test]
    fn packets_of_one_connection_share_a_key() {
        for (what, lt, a, b, ports, same) in cases() {
            let lt_b = if lt == linktype::RAW {
                linktype::ETHERNET
            } else {
                lt
            };
            let ka = shard_key(lt, &a, ports);
            let kb = shard_key(lt_b, &b, ports);
            assert_ne!(ka, 0, "{what}: frame A not read");
            assert_ne!(kb, 0, "{what}: frame B not read");
            assert_eq!(ka == kb, same, "{what}");
        }
    }

    #[test]
    fn unreadable_frames_go_to_worker_zero_and_nothing_panics() {
        let frame = ether(0x0800, &[], &ipv4_tcp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 0));
        for cut in 0..frame.len() {
            // Every prefix is handled; those too short for the addresses get key 0.
            let k = shard_key(linktype::ETHERNET, &frame[..cut], true);
            if cut < 14 + 20 {
                assert_eq!(k, 0, "cut at {cut}");
            }
            assert!(worker_of(linktype::ETHERNET, &frame[..cut], 4, true) < 4);
        }
        assert_eq!(
            shard_key(linktype::ETHERNET, &ether(0x0806, &[], &[0; 28]), false),
            0
        );
        assert_eq!(worker_of(linktype::ETHERNET, &frame, 1, true), 0);
    }

    #[test]
    fn many_host_pairs_spread_over_workers() {
        let mut per_worker = [0usize; 4];
        for i in 0..400u32 {
            let c = [10, 1, (i >> 8) as u8, i as u8];
            let f = ipv4_tcp(c, [10, 0, 0, 1], 40000, 80, 0);
            per_worker[worker_of(linktype::RAW, &f, 4, false)] += 1;
        }
        for n in per_worker {
            assert!((60..=140).contains(&n), "{per_worker:?}");
        }
    }
}

//! Link-layer glue: where the network layer starts for each pcap link type.
//!
//! etherparse parses Ethernet II and VLAN tags, which the decoder uses directly. The pseudo
//! headers written by capture stacks are parsed here by hand because etherparse lacks them or is
//! too strict for a sensor: Linux cooked capture v1 (etherparse rejects ARPHRD values such as
//! loopback and tun devices that `-i any` produces) and v2, BSD NULL/LOOP, NFLOG and
//! radiotap/802.11.
//!
//! Invariant: every function here is a pure function of its input bytes, returns a range inside
//! the slice it was given, and never indexes past it.

use super::Next;

/// pcap link types (the `LINKTYPE_*`/`DLT_*` numbers a capture reports).
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    /// `DLT_RAW` as most systems number it.
    pub const RAW_DLT12: i32 = 12;
    /// `DLT_RAW` on OpenBSD.
    pub const RAW_DLT14: i32 = 14;
    pub const RAW: i32 = 101;
    pub const IEEE802_11: i32 = 105;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IEEE802_11_RADIOTAP: i32 = 127;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const NFLOG: i32 = 239;
    pub const LINUX_SLL2: i32 = 276;
}

/// Where decoding continues after the link layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStart {
    /// Continue with `next` on bytes `start..end` of the frame.
    Next {
        start: usize,
        end: usize,
        next: Next,
    },
    /// A frame that carries no IP (ARP, netlink, 802.11 management, encrypted 802.11 data).
    NonIp,
    /// The frame is shorter than its link header.
    Truncated,
    /// The link header is inconsistent (bad radiotap version or length, NFLOG TLV chain).
    Malformed,
    /// A link type this decoder does not know.
    Unknown,
}

/// ARPHRD values of interest in Linux cooked headers.
const ARPHRD_NETLINK: u16 = 824;
const ARPHRD_IEEE80211_RADIOTAP: u16 = 803;

/// NFLOG TLV type that holds the packet (`NFULA_PAYLOAD`).
const NFULA_PAYLOAD: u16 = 9;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// Decides how a frame of `linktype` starts.
pub fn start(linktype: i32, data: &[u8]) -> LinkStart {
    let whole = |start: usize, next: Next| {
        if start > data.len() {
            LinkStart::Truncated
        } else {
            LinkStart::Next {
                start,
                end: data.len(),
                next,
            }
        }
    };
    match linktype {
        linktype::ETHERNET => whole(0, Next::Ethernet),
        linktype::RAW | linktype::RAW_DLT12 | linktype::RAW_DLT14 => whole(0, Next::IpGuess),
        linktype::IPV4 => whole(0, Next::Ipv4),
        linktype::IPV6 => whole(0, Next::Ipv6),
        linktype::NULL | linktype::LOOP => null_loop(data),
        linktype::LINUX_SLL => cooked(data, 16, 2, 14),
        linktype::LINUX_SLL2 => cooked(data, 20, 8, 0),
        linktype::NFLOG => nflog(data),
        linktype::IEEE802_11_RADIOTAP => whole(0, Next::Radiotap),
        linktype::IEEE802_11 => whole(0, Next::Ieee80211),
        _ => LinkStart::Unknown,
    }
}

/// BSD loopback: a 4-byte address family, in the capturing host's byte order for NULL and in
/// network order for LOOP. Both orders are accepted for both, since files move between hosts.
fn null_loop(data: &[u8]) -> LinkStart {
    let Some(fam) = data.get(..4) else {
        return LinkStart::Truncated;
    };
    let fam: [u8; 4] = [fam[0], fam[1], fam[2], fam[3]];
    let le = u32::from_le_bytes(fam);
    let be = u32::from_be_bytes(fam);
    // AF_INET is 2 everywhere; AF_INET6 is 10 on Linux, 24 on OpenBSD/NetBSD, 28 on FreeBSD,
    // 30 on macOS.
    let is = |v: &[u32]| v.contains(&le) || v.contains(&be);
    let next = if is(&[2]) {
        Next::Ipv4
    } else if is(&[10, 24, 28, 30]) {
        Next::Ipv6
    } else {
        return LinkStart::NonIp;
    };
    LinkStart::Next {
        start: 4,
        end: data.len(),
        next,
    }
}

/// Linux cooked capture v1 (16-byte header) and v2 (20-byte header), which differ only in where
/// the ARPHRD type and the protocol field sit.
fn cooked(data: &[u8], header_len: usize, arphrd_at: usize, proto_at: usize) -> LinkStart {
    if data.len() < header_len {
        return LinkStart::Truncated;
    }
    let (Some(arphrd), Some(proto)) = (be16(data, arphrd_at), be16(data, proto_at)) else {
        return LinkStart::Truncated;
    };
    let next = match arphrd {
        ARPHRD_NETLINK => return LinkStart::NonIp,
        ARPHRD_IEEE80211_RADIOTAP => Next::Radiotap,
        // For every other device type (Ethernet, loopback, tun, IP-GRE, ...) the protocol field
        // is an EtherType; values below 0x0600 are Linux's private codes for non-IP frames.
        _ => Next::EtherType(proto),
    };
    LinkStart::Next {
        start: header_len,
        end: data.len(),
        next,
    }
}

/// NFLOG: a 4-byte header (address family, version, resource id) then netlink-style TLVs whose
/// length and type are in the logging host's byte order. Little-endian is tried first (almost
/// every host that runs NFLOG), big-endian when that reading does not fit.
fn nflog(data: &[u8]) -> LinkStart {
    let Some(&family) = data.first() else {
        return LinkStart::Truncated;
    };
    if data.len() < 4 {
        return LinkStart::Truncated;
    }
    let next = match family {
        2 => Next::Ipv4,
        10 => Next::Ipv6,
        _ => Next::IpGuess,
    };
    let mut off = 4usize;
    while let Some(tlv) = data.get(off..off + 4) {
        let rest = data.len() - off;
        let le_len = usize::from(u16::from_le_bytes([tlv[0], tlv[1]]));
        let be_len = usize::from(u16::from_be_bytes([tlv[0], tlv[1]]));
        let (len, kind) = if (4..=rest).contains(&le_len) {
            (le_len, u16::from_le_bytes([tlv[2], tlv[3]]))
        } else if (4..=rest).contains(&be_len) {
            (be_len, u16::from_be_bytes([tlv[2], tlv[3]]))
        } else {
            return LinkStart::Malformed;
        };
        // The top two bits are netlink attribute flags (nested, byte order), not the type.
        if kind & 0x3fff == NFULA_PAYLOAD {
            return LinkStart::Next {
                start: off + 4,
                end: off + len,
                next,
            };
        }
        // TLVs are padded to 4 bytes; the last one may omit its padding.
        off = off.saturating_add((len + 3) & !3);
    }
    // No payload TLV: a log record without the packet.
    LinkStart::NonIp
}

/// Radiotap: a little-endian header whose length is at bytes 2..4, then an 802.11 frame.
pub fn radiotap(data: &[u8]) -> Result<usize, LinkStart> {
    let (Some(&version), Some(len)) = (data.first(), data.get(2..4)) else {
        return Err(LinkStart::Truncated);
    };
    let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
    if version != 0 || len < 8 {
        return Err(LinkStart::Malformed);
    }
    if len > data.len() {
        return Err(LinkStart::Truncated);
    }
    Ok(len)
}

/// 802.11 data frame header plus LLC/SNAP: returns the header length and the EtherType.
/// Management, control, null-data and protected (encrypted) frames carry no readable IP.
pub fn ieee80211(data: &[u8]) -> Result<(usize, u16), LinkStart> {
    let (Some(&fc0), Some(&fc1)) = (data.first(), data.get(1)) else {
        return Err(LinkStart::Truncated);
    };
    let frame_type = (fc0 >> 2) & 0x3;
    let subtype = fc0 >> 4;
    const DATA: u8 = 2;
    if frame_type != DATA || subtype & 0x4 != 0 || fc1 & 0x40 != 0 {
        return Err(LinkStart::NonIp);
    }
    let mut len = 24;
    if fc1 & 0x3 == 0x3 {
        // To-DS and From-DS: a fourth address (WDS).
        len += 6;
    }
    if subtype & 0x8 != 0 {
        // QoS control, and an HT control field when the order bit is set.
        len += 2;
        if fc1 & 0x80 != 0 {
            len += 4;
        }
    }
    let Some(llc) = data.get(len..len + 8) else {
        return Err(LinkStart::Truncated);
    };
    // LLC/SNAP with the RFC 1042 or 802.1H (bridge tunnel) OUI.
    let snap = llc[0] == 0xAA && llc[1] == 0xAA && llc[2] == 0x03;
    let oui_ok = llc[3] == 0 && llc[4] == 0 && (llc[5] == 0 || llc[5] == 0xF8);
    if !snap || !oui_ok {
        return Err(LinkStart::NonIp);
    }
    Ok((len + 8, u16::from_be_bytes([llc[6], llc[7]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_accepts_both_byte_orders() {
        let mut v4_le = vec![2, 0, 0, 0];
        v4_le.extend_from_slice(&[0x45; 20]);
        assert!(matches!(
            start(linktype::NULL, &v4_le),
            LinkStart::Next {
                start: 4,
                next: Next::Ipv4,
                ..
            }
        ));
        let v6_be = [0, 0, 0, 30, 0x60];
        assert!(matches!(
            start(linktype::LOOP, &v6_be),
            LinkStart::Next {
                start: 4,
                next: Next::Ipv6,
                ..
            }
        ));
        assert_eq!(start(linktype::NULL, &[7, 0, 0, 0]), LinkStart::NonIp);
        assert_eq!(start(linktype::NULL, &[2, 0]), LinkStart::Truncated);
    }

    #[test]
    fn cooked_headers_give_protocol() {
        let mut sll = vec![0u8; 16];
        sll[2..4].copy_from_slice(&772u16.to_be_bytes()); // loopback: etherparse rejects it
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(
            start(linktype::LINUX_SLL, &sll),
            LinkStart::Next {
                start: 16,
                end: 16,
                next: Next::EtherType(0x0800)
            }
        );
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&0x86DDu16.to_be_bytes());
        sll2[8..10].copy_from_slice(&1u16.to_be_bytes());
        assert!(matches!(
            start(linktype::LINUX_SLL2, &sll2),
            LinkStart::Next {
                start: 20,
                next: Next::EtherType(0x86DD),
                ..
            }
        ));
        sll2[8..10].copy_from_slice(&ARPHRD_NETLINK.to_be_bytes());
        assert_eq!(start(linktype::LINUX_SLL2, &sll2), LinkStart::NonIp);
        assert_eq!(
            start(linktype::LINUX_SLL2, &sll2[..19]),
            LinkStart::Truncated
        );
    }

    fn nflog_frame(big_endian: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 1];
        let tlv = |f: &mut Vec<u8>, kind: u16, value: &[u8]| {
            let len = (value.len() + 4) as u16;
            if big_endian {
                f.extend_from_slice(&len.to_be_bytes());
                f.extend_from_slice(&kind.to_be_bytes());
            } else {
                f.extend_from_slice(&len.to_le_bytes());
                f.extend_from_slice(&kind.to_le_bytes());
            }
            f.extend_from_slice(value);
            while f.len() % 4 != 0 {
                f.push(0);
            }
        };
        tlv(&mut f, 1, &[0, 0x08, 0, 1]); // packet header
        tlv(&mut f, 10, b"prefix\0"); // log prefix, padded
        tlv(&mut f, NFULA_PAYLOAD, payload);
        f
    }

    #[test]
    fn nflog_finds_payload_tlv_in_either_byte_order() {
        let payload = [0x45u8, 0, 0, 20, 1, 2, 3];
        for be in [false, true] {
            let f = nflog_frame(be, &payload);
            match start(linktype::NFLOG, &f) {
                LinkStart::Next { start, end, next } => {
                    assert_eq!(&f[start..end], &payload, "big endian: {be}");
                    assert_eq!(next, Next::Ipv4);
                }
                other => panic!("big endian {be}: {other:?}"),
            }
        }
        // Without a payload TLV there is nothing to decode.
        let mut f = nflog_frame(false, &payload);
        f.truncate(4 + 8 + 12);
        assert_eq!(start(linktype::NFLOG, &f), LinkStart::NonIp);
        // A TLV length that fits neither byte order.
        assert_eq!(
            start(linktype::NFLOG, &[2, 0, 0, 0, 0xff, 0xff, 9, 0]),
            LinkStart::Malformed
        );
    }

    #[test]
    fn ieee80211_qos_data_with_snap() {
        let mut f = vec![0x88, 0x01]; // QoS data, to-DS
        f.extend_from_slice(&[0u8; 22]);
        f.extend_from_slice(&[0, 0]); // QoS control
        f.extend_from_slice(&[0xAA, 0xAA, 0x03, 0, 0, 0, 0x08, 0x00]);
        assert_eq!(ieee80211(&f), Ok((34, 0x0800)));
        let mut protected = f.clone();
        protected[1] |= 0x40;
        assert_eq!(ieee80211(&protected), Err(LinkStart::NonIp));
        assert_eq!(ieee80211(&f[..30]), Err(LinkStart::Truncated));
        let beacon = [0x80, 0x00];
        assert_eq!(ieee80211(&beacon), Err(LinkStart::NonIp));
    }

    #[test]
    fn radiotap_length_is_checked() {
        assert_eq!(radiotap(&[0, 0, 8, 0, 0, 0, 0, 0, 0x08]), Ok(8));
        assert_eq!(
            radiotap(&[0, 0, 64, 0, 0, 0, 0, 0]),
            Err(LinkStart::Truncated)
        );
        assert_eq!(
            radiotap(&[1, 0, 8, 0, 0, 0, 0, 0]),
            Err(LinkStart::Malformed)
        );
        assert_eq!(radiotap(&[0]), Err(LinkStart::Truncated));
    }

    #[test]
    fn unknown_linktype_is_reported() {
        assert_eq!(start(147, &[0; 64]), LinkStart::Unknown);
    }
}

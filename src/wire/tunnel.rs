//! Tunnel headers: GRE (with ERSPAN II/III), VXLAN, Geneve and Teredo.
//!
//! Mirrored traffic often reaches a sensor encapsulated (ERSPAN from a switch, VXLAN from a
//! cloud packet mirror), so the inner packet is the one that matters. etherparse does not parse
//! these headers; they are small and parsed here by hand.
//!
//! Invariant: each function reads only the header it is named after, returns its length and
//! what follows, and never indexes past the slice it was given. Depth limiting and counting are
//! the decoder's job.

use super::Next;

/// Which tunnel a decapsulation went through, for the per-kind counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelKind {
    Gre,
    Erspan,
    Vxlan,
    Geneve,
    Teredo,
    IpIp,
}

/// A decoded tunnel header: its length, what follows and the tunnel kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decap {
    pub header_len: usize,
    pub next: Next,
    pub kind: TunnelKind,
}

/// Why a GRE packet was not decapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreError {
    /// The capture ends inside the GRE or ERSPAN header.
    Truncated,
    /// A GRE variant this decoder does not open (version 1/PPTP, source routing, unknown
    /// ERSPAN version): the packet is counted as other L4 traffic, not as an error.
    Unsupported,
}

pub const UDP_PORT_VXLAN: u16 = 4789;
/// The port Linux used for VXLAN before IANA assigned 4789; still the kernel default.
pub const UDP_PORT_VXLAN_LINUX: u16 = 8472;
/// VXLAN Generic Protocol Extension (draft-ietf-nvo3-vxlan-gpe).
pub const UDP_PORT_VXLAN_GPE: u16 = 4790;
pub const UDP_PORT_GENEVE: u16 = 6081;
pub const UDP_PORT_TEREDO: u16 = 3544;

const ETHERTYPE_TEB: u16 = 0x6558;
const ETHERTYPE_ERSPAN_2: u16 = 0x88BE;
const ETHERTYPE_ERSPAN_3: u16 = 0x22EB;

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

/// What an EtherType-style protocol field inside a tunnel leads to.
fn after_ethertype(proto: u16) -> Next {
    match proto {
        ETHERTYPE_TEB => Next::Ethernet,
        0x0800 => Next::Ipv4,
        0x86DD => Next::Ipv6,
        other => Next::EtherType(other),
    }
}

/// GRE (RFC 2784/2890): optional checksum, key and sequence words, then a protocol given as an
/// EtherType. ERSPAN rides on GRE and is unwrapped here too.
pub fn gre(data: &[u8]) -> Result<Decap, GreError> {
    let (Some(flags), Some(proto)) = (be16(data, 0), be16(data, 2)) else {
        return Err(GreError::Truncated);
    };
    const CHECKSUM: u16 = 0x8000;
    const ROUTING: u16 = 0x4000;
    const KEY: u16 = 0x2000;
    const SEQUENCE: u16 = 0x1000;
    if flags & 0x7 != 0 || flags & ROUTING != 0 {
        return Err(GreError::Unsupported);
    }
    let mut len = 4;
    for bit in [CHECKSUM, KEY, SEQUENCE] {
        if flags & bit != 0 {
            len += 4;
        }
    }
    if data.len() < len {
        return Err(GreError::Truncated);
    }
    let gre = |header_len, next| {
        Ok(Decap {
            header_len,
            next,
            kind: TunnelKind::Gre,
        })
    };
    let erspan = |header_len| {
        if data.len() < header_len {
            return Err(GreError::Truncated);
        }
        Ok(Decap {
            header_len,
            next: Next::Ethernet,
            kind: TunnelKind::Erspan,
        })
    };
    match proto {
        ETHERTYPE_ERSPAN_2 if flags & SEQUENCE == 0 => {
            // ERSPAN type I: no ERSPAN header, the mirrored frame follows GRE directly.
            erspan(len)
        }
        ETHERTYPE_ERSPAN_2 => {
            let Some(&b0) = data.get(len) else {
                return Err(GreError::Truncated);
            };
            if b0 >> 4 != 1 {
                return Err(GreError::Unsupported);
            }
            erspan(len + 8)
        }
        ETHERTYPE_ERSPAN_3 => {
            let Some(&b0) = data.get(len) else {
                return Err(GreError::Truncated);
            };
            if b0 >> 4 != 2 {
                return Err(GreError::Unsupported);
            }
            // The O flag (last bit of the 12-byte header) announces an 8-byte platform-specific
            // subheader.
            let Some(&b11) = data.get(len + 11) else {
                return Err(GreError::Truncated);
            };
            let sub = if b11 & 0x1 != 0 { 8 } else { 0 };
            erspan(len + 12 + sub)
        }
        other => gre(len, after_ethertype(other)),
    }
}

/// VXLAN (RFC 7348): 8 bytes whose flags must have the I (valid VNI) bit, then Ethernet.
/// Returns None when the bytes are not VXLAN, so the datagram counts as plain UDP.
pub fn vxlan(data: &[u8]) -> Option<Decap> {
    let flags = *data.first()?;
    if data.len() < 8 || flags & 0x08 == 0 {
        return None;
    }
    Some(Decap {
        header_len: 8,
        next: Next::Ethernet,
        kind: TunnelKind::Vxlan,
    })
}

/// VXLAN-GPE: VXLAN's 8 bytes with a next-protocol byte (1 IPv4, 2 IPv6, 3 Ethernet) valid
/// when the P flag is set; without it the payload is Ethernet as in plain VXLAN.
pub fn vxlan_gpe(data: &[u8]) -> Option<Decap> {
    let flags = *data.first()?;
    let proto = *data.get(3)?;
    if data.len() < 8 || flags & 0x08 == 0 {
        return None;
    }
    let next = if flags & 0x04 == 0 {
        Next::Ethernet
    } else {
        match proto {
            1 => Next::Ipv4,
            2 => Next::Ipv6,
            3 => Next::Ethernet,
            _ => return None,
        }
    };
    Some(Decap {
        header_len: 8,
        next,
        kind: TunnelKind::Vxlan,
    })
}

/// Geneve (RFC 8926): 8 bytes plus options, then an EtherType-named payload.
pub fn geneve(data: &[u8]) -> Option<Decap> {
    let b0 = *data.first()?;
    let proto = be16(data, 2)?;
    if b0 >> 6 != 0 {
        return None;
    }
    let header_len = 8 + usize::from(b0 & 0x3f) * 4;
    if data.len() < header_len {
        return None;
    }
    Some(Decap {
        header_len,
        next: after_ethertype(proto),
        kind: TunnelKind::Geneve,
    })
}

/// Teredo (RFC 4380): optional authentication and origin indication headers, then IPv6.
/// Returns None unless an IPv6 header follows, since port 3544 carries Teredo's own
/// qualification traffic too.
pub fn teredo(data: &[u8]) -> Option<Decap> {
    let mut off = 0usize;
    // Authentication: 0x0001, id len, auth len, id, auth, 8-byte nonce, 1-byte confirmation.
    if be16(data, off)? == 0x0001 {
        let id_len = usize::from(*data.get(off + 2)?);
        let auth_len = usize::from(*data.get(off + 3)?);
        off += 4 + id_len + auth_len + 8 + 1;
    }
    // Origin indication: 0x0000 then port and address, 8 bytes.
    if be16(data, off)? == 0x0000 {
        off += 8;
    }
    let version = *data.get(off)? >> 4;
    if version != 6 || data.len() < off + 40 {
        return None;
    }
    Some(Decap {
        header_len: off,
        next: Next::Ipv6,
        kind: TunnelKind::Teredo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_optional_words_are_skipped() {
        let cases: &[(u16, usize)] = &[(0x0000, 4), (0x2000, 8), (0xB000, 16), (0x1000, 8)];
        for &(flags, want) in cases {
            let mut h = flags.to_be_bytes().to_vec();
            h.extend_from_slice(&0x0800u16.to_be_bytes());
            h.extend_from_slice(&[0; 12]);
            let d = gre(&h).unwrap_or_else(|e| panic!("flags {flags:#x}: {e:?}"));
            assert_eq!(d.header_len, want, "flags {flags:#x}");
            assert_eq!(d.next, Next::Ipv4);
            assert_eq!(d.kind, TunnelKind::Gre);
        }
    }

    #[test]
    fn gre_variants() {
        // Transparent Ethernet bridging.
        assert_eq!(gre(&[0, 0, 0x65, 0x58]).map(|d| d.next), Ok(Next::Ethernet));
        // PPTP enhanced GRE (version 1) and source routing are not opened.
        assert_eq!(gre(&[0x30, 0x01, 0x88, 0x0B]), Err(GreError::Unsupported));
        assert_eq!(gre(&[0x40, 0x00, 0x08, 0x00]), Err(GreError::Unsupported));
        assert_eq!(
            gre(&[0x20, 0x00, 0x08, 0x00, 0, 0]),
            Err(GreError::Truncated)
        );
        assert_eq!(gre(&[0x20]), Err(GreError::Truncated));
    }

    #[test]
    fn erspan_types() {
        // Type II: GRE with sequence number, 8-byte ERSPAN header.
        let mut t2 = vec![0x10, 0x00, 0x88, 0xBE, 0, 0, 0, 1];
        t2.extend_from_slice(&[0x10, 0x64, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            gre(&t2),
            Ok(Decap {
                header_len: 16,
                next: Next::Ethernet,
                kind: TunnelKind::Erspan
            })
        );
        // Type I: no sequence number, no ERSPAN header.
        assert_eq!(gre(&[0, 0, 0x88, 0xBE]).map(|d| d.header_len), Ok(4));
        // Type III with and without the platform subheader.
        let mut t3 = vec![0x10, 0x00, 0x22, 0xEB, 0, 0, 0, 1];
        t3.extend_from_slice(&[0x20, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(gre(&t3).map(|d| d.header_len), Ok(20));
        let mut t3o = t3.clone();
        t3o[19] = 0x01;
        t3o.extend_from_slice(&[0; 8]);
        assert_eq!(gre(&t3o).map(|d| d.header_len), Ok(28));
        assert_eq!(gre(&t3o[..24]), Err(GreError::Truncated));
        // Wrong ERSPAN version.
        t3[8] = 0x10;
        assert_eq!(gre(&t3), Err(GreError::Unsupported));
    }

    #[test]
    fn udp_tunnels() {
        assert_eq!(
            vxlan(&[0x08, 0, 0, 0, 0, 0, 1, 0]).map(|d| d.header_len),
            Some(8)
        );
        assert_eq!(vxlan(&[0x00, 0, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(vxlan(&[0x08, 0, 0]), None);
        let gpe =
            |flags: u8, proto: u8| vxlan_gpe(&[flags, 0, 0, proto, 0, 0, 1, 0]).map(|d| d.next);
        assert_eq!(gpe(0x0C, 1), Some(Next::Ipv4));
        assert_eq!(gpe(0x0C, 2), Some(Next::Ipv6));
        assert_eq!(gpe(0x0C, 3), Some(Next::Ethernet));
        assert_eq!(gpe(0x0C, 4), None, "NSH is not opened");
        assert_eq!(gpe(0x08, 9), Some(Next::Ethernet));
        let g = [0x02, 0, 0x65, 0x58, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            geneve(&g).map(|d| (d.header_len, d.next)),
            Some((16, Next::Ethernet))
        );
        assert_eq!(geneve(&g[..12]), None);
        let mut t = vec![0, 0, 0x12, 0x34, 1, 2, 3, 4];
        t.push(0x60);
        t.extend_from_slice(&[0; 39]);
        assert_eq!(teredo(&t).map(|d| d.header_len), Some(8));
        assert_eq!(teredo(&t[8..]).map(|d| d.header_len), Some(0));
        assert_eq!(teredo(&t[..20]), None);
        let mut auth = vec![0, 1, 2, 1, b'i', b'd', b'a'];
        auth.extend_from_slice(&[0; 9]);
        auth.extend_from_slice(&t[8..]);
        assert_eq!(teredo(&auth).map(|d| d.header_len), Some(16));
    }
}

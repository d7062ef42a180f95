//! Test-only oracle: reads captures back without any of the generator's code, to check that
//! the packets say what the ground truth claims.
//!
//! Frames are decoded by hand (tunnels, VLAN tags, IPv4 fragments, IPv6 extension headers,
//! truncated frames), TCP payloads are laid into per-direction byte maps (first copy wins, as
//! most reassemblers do by default), and HTTP/1.x is parsed with httparse plus a small de-chunker
//! and gunzip.

use super::frame::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One TCP segment recovered from a frame; `payload` may be cut short by a snaplen.
#[derive(Clone, Debug)]
pub struct Seg {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub payload: Vec<u8>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Fragments of one datagram so far: (offset, more fragments, bytes).
type FragParts = Vec<(usize, bool, Vec<u8>)>;

/// Reassembles IPv4 fragments keyed by (src, dst, id).
#[derive(Default)]
pub struct Decoder {
    frags: HashMap<(Ipv4Addr, Ipv4Addr, u16), FragParts>,
}

impl Decoder {
    /// Decodes one Ethernet frame into a TCP segment, if it completes one.
    pub fn frame(&mut self, f: &[u8]) -> Option<Seg> {
        let mut et = be16(f, 12)?;
        let mut off = 14;
        while et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ {
            et = be16(f, off + 2)?;
            off += 4;
        }
        match et {
            ETHERTYPE_IPV4 => self.ipv4(f.get(off..)?),
            ETHERTYPE_IPV6 => self.ipv6(f.get(off..)?),
            _ => None,
        }
    }

    fn ipv4(&mut self, p: &[u8]) -> Option<Seg> {
        let ihl = usize::from(p.first()? & 0x0f) * 4;
        let total = usize::from(be16(p, 2)?);
        let src = Ipv4Addr::new(*p.get(12)?, *p.get(13)?, *p.get(14)?, *p.get(15)?);
        let dst = Ipv4Addr::new(*p.get(16)?, *p.get(17)?, *p.get(18)?, *p.get(19)?);
        let proto = *p.get(9)?;
        let body = p.get(ihl..total.min(p.len()))?;
        if proto == 17 && be16(body, 2)? == 4789 {
            return self.frame(body.get(16..)?);
        }
        if proto == 47 && be16(body, 2)? == 0x88be {
            return self.frame(body.get(16..)?);
        }
        if proto != 6 {
            return None;
        }
        let ff = be16(p, 6)?;
        if ff & 0x3fff != 0 {
            let id = be16(p, 4)?;
            let parts = self.frags.entry((src, dst, id)).or_default();
            parts.push((
                usize::from(ff & 0x1fff) * 8,
                ff & 0x2000 != 0,
                body.to_vec(),
            ));
            parts.sort_by_key(|x| x.0);
            let mut next = 0;
            for (o, _, b) in parts.iter() {
                if *o != next {
                    return None;
                }
                next += b.len();
            }
            if parts.last()?.1 {
                return None;
            }
            let whole: Vec<u8> = parts.iter().flat_map(|x| x.2.clone()).collect();
            self.frags.remove(&(src, dst, id));
            return tcp(IpAddr::V4(src), IpAddr::V4(dst), &whole);
        }
        tcp(IpAddr::V4(src), IpAddr::V4(dst), body)
    }

    fn ipv6(&mut self, p: &[u8]) -> Option<Seg> {
        let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
        let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
        let mut next = *p.get(6)?;
        let mut off = 40;
        while next == 60 || next == 0 {
            let len = (usize::from(*p.get(off + 1)?) + 1) * 8;
            next = *p.get(off)?;
            off += len;
        }
        if next != 6 {
            return None;
        }
        let end = (40 + usize::from(be16(p, 4)?)).min(p.len());
        tcp(
            IpAddr::V6(Ipv6Addr::from(src)),
            IpAddr::V6(Ipv6Addr::from(dst)),
            p.get(off..end)?,
        )
    }
}

fn tcp(src: IpAddr, dst: IpAddr, t: &[u8]) -> Option<Seg> {
    let sp = be16(t, 0)?;
    let dp = be16(t, 2)?;
    let seq = u32::from_be_bytes(t.get(4..8)?.try_into().ok()?);
    let doff = usize::from(t.get(12)? >> 4) * 4;
    let flags = *t.get(13)?;
    Some(Seg {
        src: SocketAddr::new(src, sp),
        dst: SocketAddr::new(dst, dp),
        seq,
        syn: flags & 0x02 != 0,
        payload: t.get(doff..).unwrap_or(&[]).to_vec(),
    })
}

/// Both byte streams of one connection, keyed by offset from ISN + 1.
#[derive(Default, Debug)]
pub struct Streams {
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// [to server, to client], first copy wins.
    pub bytes: [BTreeMap<u64, u8>; 2],
}

impl Streams {
    /// The contiguous prefix of one direction.
    pub fn prefix(&self, dir: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (k, v)) in self.bytes[dir].iter().enumerate() {
            if *k != i as u64 {
                break;
            }
            out.push(*v);
        }
        out
    }
}

/// Splits segments into connections (a SYN without ACK opens one) and reassembles each,
/// given the server ports. Connections appear in SYN order.
pub fn connections(segs: &[Seg], server_ports: &[u16]) -> Vec<Streams> {
    let mut out: Vec<Streams> = Vec::new();
    let mut current: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    let mut isn: HashMap<usize, [Option<u32>; 2]> = HashMap::new();
    for s in segs {
        let to_server = server_ports.contains(&s.dst.port());
        let (c, sv) = if to_server {
            (s.src, s.dst)
        } else {
            (s.dst, s.src)
        };
        let d = usize::from(!to_server);
        if s.syn && to_server {
            out.push(Streams {
                client: Some(c),
                server: Some(sv),
                ..Default::default()
            });
            current.insert((c, sv), out.len() - 1);
        }
        let Some(&i) = current.get(&(c, sv)) else {
            continue;
        };
        let e = isn.entry(i).or_default();
        if s.syn {
            e[d] = Some(s.seq);
            continue;
        }
        let Some(base) = e[d] else { continue };
        let off = u64::from(s.seq.wrapping_sub(base.wrapping_add(1)));
        if let Some(st) = out.get_mut(i) {
            for (k, b) in s.payload.iter().enumerate() {
                st.bytes[d].entry(off + k as u64).or_insert(*b);
            }
        }
    }
    out
}

/// A request as parsed back.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedReq {
    pub method: String,
    pub uri: String,
    pub host: String,
    pub body_len: u64,
}

/// A response as parsed back.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedResp {
    pub status: u16,
    pub interim: Vec<u16>,
    pub decoded_len: u64,
}

pub fn parse_requests(s: &[u8]) -> Vec<ParsedReq> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < s.len() {
        let mut hs = [httparse::EMPTY_HEADER; 40];
        let mut r = httparse::Request::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = r.parse(&s[pos..]) else {
            break;
        };
        let hdr = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let cl: u64 = hdr("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.push(ParsedReq {
            method: r.method.unwrap_or("").to_string(),
            uri: r.path.unwrap_or("").to_string(),
            host: hdr("host").unwrap_or_default(),
            body_len: cl,
        });
        pos += n + cl as usize;
    }
    out
}

/// Parses responses, using the request methods to know which have no body.
pub fn parse_responses(s: &[u8], methods: &[String]) -> Vec<ParsedResp> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut interim = Vec::new();
    while pos < s.len() {
        let mut hs = [httparse::EMPTY_HEADER; 40];
        let mut r = httparse::Response::new(&mut hs);
        let Ok(httparse::Status::Complete(n)) = r.parse(&s[pos..]) else {
            break;
        };
        let status = r.code.unwrap_or(0);
        pos += n;
        if (100..200).contains(&status) {
            interim.push(status);
            continue;
        }
        let hdr = |name: &str| {
            r.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        let head = methods.get(out.len()).is_some_and(|m| m == "HEAD");
        let mut body = Vec::new();
        if head || status == 204 || status == 304 {
        } else if hdr("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            while let Some(eol) = s[pos..].windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&s[pos..pos + eol]).unwrap_or("0"),
                    16,
                )
                .unwrap_or(0);
                pos += eol + 2;
                if size == 0 {
                    // Trailer fields, then the empty line.
                    while let Some(eol) = s[pos..].windows(2).position(|w| w == b"\r\n") {
                        pos += eol + 2;
                        if eol == 0 {
                            break;
                        }
                    }
                    break;
                }
                body.extend_from_slice(&s[pos..(pos + size).min(s.len())]);
                pos = (pos + size + 2).min(s.len());
            }
        } else if let Some(cl) = hdr("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body.extend_from_slice(&s[pos..(pos + cl).min(s.len())]);
            pos = (pos + cl).min(s.len());
        } else {
            body.extend_from_slice(&s[pos..]);
            pos = s.len();
        }
        let decoded_len = if hdr("content-encoding").is_some_and(|v| v == "gzip") {
            let mut d = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut d)
                .expect("valid gzip");
            d.len() as u64
        } else {
            body.len() as u64
        };
        out.push(ParsedResp {
            status,
            interim: std::mem::take(&mut interim),
            decoded_len,
        });
    }
    out
}

/// Both streams of the connection `client`–`server` with known ISNs (works without a SYN, as
/// for a midstream pickup).
pub fn streams_for(
    segs: &[Seg],
    client: SocketAddr,
    server: SocketAddr,
    isn: [u32; 2],
) -> [BTreeMap<u64, u8>; 2] {
    let mut out = [BTreeMap::new(), BTreeMap::new()];
    for s in segs.iter().filter(|s| !s.syn) {
        let d = if (s.src, s.dst) == (client, server) {
            0
        } else if (s.src, s.dst) == (server, client) {
            1
        } else {
            continue;
        };
        let off = u64::from(s.seq.wrapping_sub(isn[d].wrapping_add(1)));
        for (k, b) in s.payload.iter().enumerate() {
            out[d].entry(off + k as u64).or_insert(*b);
        }
    }
    out
}

//! The caller's address behind reverse proxies: `X-Forwarded-For`, `Forwarded` (RFC 7239) and
//! `X-Real-IP`.
//!
//! Anyone can send these headers, so they are believed only as far as a chain of trusted
//! proxies vouches for them: starting from the TCP peer (which must itself be trusted), the list
//! is walked from the right, the newest hop first, and the first address that is not a trusted
//! proxy is the client. Everything to its left was written by the client and is ignored.
//!
//! Invariants:
//! - At most `max_forwarded_hops` entries (the rightmost ones) are looked at per header kind;
//!   the rest of the header is counted but not parsed.
//! - A hop that is not an address (`unknown`, an obfuscated `_name`, garbage) stops the walk at
//!   the last address reached: nothing to its left can be vouched for.
//! - No allocation: the list is read twice in wire order (once to count its entries, once to
//!   judge the kept ones) instead of being stored to be walked backwards; this runs for every
//!   request a trusted proxy forwards.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest node text worth parsing: a bracketed IPv6 address with zone and port is well under
/// this; anything longer is not an address.
const MAX_NODE_BYTES: usize = 80;

/// One entry of a forwarding list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Hop {
    Addr(IpAddr),
    /// Present but not an address.
    Invalid,
}

/// The outcome of walking one forwarding list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Walk {
    pub client: IpAddr,
    /// The walk stopped at an entry that is not an address.
    pub malformed: bool,
    /// Every kept hop was a trusted proxy and entries beyond `max_forwarded_hops` were dropped,
    /// so the client may be further left than we looked.
    pub capped: bool,
}

/// Parses one node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, optionally in double quotes, with an IPv6 zone ignored. IPv4-mapped IPv6
/// addresses become IPv4 so trust lists match them.
pub(super) fn parse_node(raw: &[u8]) -> Option<IpAddr> {
    let raw = raw.trim_ascii();
    let raw = raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .unwrap_or(raw);
    if raw.len() > MAX_NODE_BYTES {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let ip = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
            return None;
        }
        IpAddr::V6(strip_zone(inside).parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = strip_zone(text).parse::<IpAddr>() {
        ip
    } else {
        // Exactly one colon: IPv4 with a port. (A bare IPv6 address parsed above.)
        let (host, port) = text.split_once(':')?;
        if !valid_port(port) {
            return None;
        }
        IpAddr::V4(host.parse::<Ipv4Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

fn strip_zone(s: &str) -> &str {
    s.split_once('%').map_or(s, |(a, _)| a)
}

/// RFC 7239 allows obfuscated ports (`_abc`) as well as numbers.
fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && (p.parse::<u16>().is_ok()
            || (p.starts_with('_')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')))
}

/// Splits on `sep` outside double-quoted strings (with backslash escapes inside quotes), as the
/// RFC 7239 grammar needs: a quoted value may itself contain `,` or `;`.
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut pos = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        while let Some(&b) = s.get(pos) {
            pos += 1;
            if escaped {
                escaped = false;
            } else if in_quotes && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = !in_quotes;
            } else if b == sep && !in_quotes {
                let part = s.get(start..pos - 1);
                start = pos;
                return part;
            }
        }
        done = true;
        s.get(start..)
    })
}

/// The entries of all `X-Forwarded-For` values, in wire order (several header lines form one
/// list); [`xff_hop`] reads one.
pub(super) fn xff_entries<'a>(
    values: impl Iterator<Item = &'a [u8]> + 'a,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// One `X-Forwarded-For` entry as a hop.
pub(super) fn xff_hop(entry: &[u8]) -> Hop {
    parse_node(entry).map_or(Hop::Invalid, Hop::Addr)
}

/// The elements of all `Forwarded` values, in wire order; [`forwarded_hop`] reads one.
pub(super) fn forwarded_entries<'a>(
    values: impl Iterator<Item = &'a [u8]> + 'a,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    values
        .flat_map(|v| split_unquoted(v, b','))
        .filter(|e| !e.trim_ascii().is_empty())
}

/// The `for=` hop of one `Forwarded` element. An element without `for=` is an invalid hop: the
/// proxy that wrote it did not say whom it received the request from.
pub(super) fn forwarded_hop(element: &[u8]) -> Hop {
    split_unquoted(element, b';')
        .find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let name = pair.get(..eq)?.trim_ascii();
            name.eq_ignore_ascii_case(b"for")
                .then(|| pair.get(eq + 1..))
                .flatten()
        })
        .and_then(parse_node)
        .map_or(Hop::Invalid, Hop::Addr)
}

/// Walks a forwarding list from the right, starting at the trusted TCP peer: the first hop
/// that is not a trusted proxy's address is the client. `entries` gives the list's entries in
/// wire order (it is called twice) and `hop` reads one. `None` when there are no entries at
/// all, so the caller can try the next header kind.
pub(super) fn walk<'a, I: Iterator<Item = &'a [u8]>>(
    peer: IpAddr,
    entries: impl Fn() -> I,
    hop: impl Fn(&'a [u8]) -> Hop,
    max_hops: usize,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<Walk> {
    let n = entries().count();
    if n == 0 {
        return None;
    }
    // Only the rightmost `max_hops` entries are kept.
    let skip = n.saturating_sub(max_hops);
    // Walking from the right stops at the rightmost kept hop that is not a trusted address;
    // reading left to right, that is the last such hop seen. Also remember the hop just right
    // of it (where a walk stopped by an invalid hop left off) and the leftmost kept hop (where
    // a walk through trusted proxies only ends).
    let mut stop: Option<Hop> = None;
    let mut after_stop: Option<IpAddr> = None;
    let mut leftmost: Option<IpAddr> = None;
    let mut just_stopped = false;
    for (i, h) in entries().skip(skip).map(hop).enumerate() {
        match h {
            Hop::Addr(ip) if is_trusted(ip) => {
                if i == 0 {
                    leftmost = Some(ip);
                }
                if just_stopped {
                    after_stop = Some(ip);
                    just_stopped = false;
                }
            }
            other => {
                stop = Some(other);
                after_stop = None;
                just_stopped = true;
            }
        }
    }
    Some(match stop {
        Some(Hop::Addr(client)) => Walk {
            client,
            malformed: false,
            capped: false,
        },
        Some(Hop::Invalid) => Walk {
            client: after_stop.unwrap_or(peer),
            malformed: true,
            capped: false,
        },
        None => Walk {
            client: leftmost.unwrap_or(peer),
            malformed: false,
            capped: skip > 0,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff_hops<'a>(values: impl Iterator<Item = &'a [u8]> + 'a) -> impl Iterator<Item = Hop> + 'a {
        xff_entries(values).map(xff_hop)
    }

    fn forwarded_hops<'a>(
        values: impl Iterator<Item = &'a [u8]> + 'a,
    ) -> impl Iterator<Item = Hop> + 'a {
        forwarded_entries(values).map(forwarded_hop)
    }

    /// The walk as first written: keep the rightmost `max_hops` hops in a queue, then walk
    /// them from the right. The allocation-free [`walk`] must agree with it.
    fn walk_from_the_right(
        peer: IpAddr,
        hops: impl Iterator<Item = Hop>,
        max_hops: usize,
        is_trusted: impl Fn(IpAddr) -> bool,
    ) -> Option<Walk> {
        let mut kept = std::collections::VecDeque::new();
        let mut dropped = false;
        for hop in hops {
            if kept.len() >= max_hops {
                dropped = true;
                if kept.pop_front().is_none() {
                    continue;
                }
            }
            kept.push_back(hop);
        }
        if kept.is_empty() && !dropped {
            return None;
        }
        let mut client = peer;
        for hop in kept.iter().rev() {
            match *hop {
                Hop::Addr(ip) => {
                    client = ip;
                    if !is_trusted(ip) {
                        return Some(Walk {
                            client,
                            malformed: false,
                            capped: false,
                        });
                    }
                }
                Hop::Invalid => {
                    return Some(Walk {
                        client,
                        malformed: true,
                        capped: false,
                    })
                }
            }
        }
        Some(Walk {
            client,
            malformed: false,
            capped: dropped,
        })
    }

    fn trusted_ten(i: IpAddr) -> bool {
        matches!(i, IpAddr::V4(v) if v.octets()[0] == 10)
    }

    proptest! {
        /// Header lines of entries drawn from trusted and untrusted addresses, garbage and
        /// blanks, under every small cap: the two-pass walk equals the walk from the right.
        #[test]
        fn walk_equals_a_walk_from_the_right(
            lines in prop::collection::vec(
                prop::collection::vec(
                    prop::sample::select(vec![
                        "10.0.0.2", "10.9.8.7", " 10.0.0.3 ", "1.2.3.4", "[2001:db8::1]:80",
                        "unknown", "garbage", "", " ",
                    ]),
                    0..6,
                ),
                0..4,
            ),
            max in 0usize..8,
        ) {
            let peer = ip("10.0.0.1");
            let values: Vec<String> = lines.iter().map(|l| l.join(",")).collect();
            let vals = || values.iter().map(|v| v.as_bytes());
            let got = walk(peer, || xff_entries(vals()), xff_hop, max, trusted_ten);
            let want = walk_from_the_right(peer, xff_hops(vals()), max, trusted_ten);
            prop_assert_eq!(got, want, "{:?} max {}", values, max);
            let fwd: Vec<String> = lines
                .iter()
                .map(|l| l.iter().map(|e| format!("for=\"{e}\";proto=http")).collect::<Vec<_>>().join(","))
                .collect();
            let fvals = || fwd.iter().map(|v| v.as_bytes());
            let got = walk(peer, || forwarded_entries(fvals()), forwarded_hop, max, trusted_ten);
            let want = walk_from_the_right(peer, forwarded_hops(fvals()), max, trusted_ten);
            prop_assert_eq!(got, want, "{:?} max {}", fwd, max);
        }
    }

    #[test]
    fn node_forms() {
        let cases: &[(&str, Option<&str>)] = &[
            ("192.0.2.1", Some("192.0.2.1")),
            (" 192.0.2.1 ", Some("192.0.2.1")),
            ("192.0.2.1:8080", Some("192.0.2.1")),
            ("\"192.0.2.1:8080\"", Some("192.0.2.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("\"[2001:db8:cafe::17]:4711\"", Some("2001:db8:cafe::17")),
            ("[2001:db8::1]:_port", Some("2001:db8::1")),
            ("fe80::1%eth0", Some("fe80::1")),
            ("::ffff:192.0.2.9", Some("192.0.2.9")),
            ("[::ffff:192.0.2.9]:1", Some("192.0.2.9")),
            ("unknown", None),
            ("_hidden", None),
            ("", None),
            ("192.0.2.1:", None),
            ("192.0.2.1:99999", None),
            ("[2001:db8::1]x", None),
            ("[2001:db8::1", None),
            ("[192.0.2.1]", None),
            ("300.1.1.1", None),
            ("\"192.0.2.1", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_node(input.as_bytes()), want.map(ip), "{input:?}");
        }
        assert_eq!(parse_node("1".repeat(200).as_bytes()), None);
        assert_eq!(parse_node(b"\xff\xfe"), None);
    }

    #[test]
    fn forwarded_grammar() {
        let a = Hop::Addr;
        let cases: &[(&[&str], &[Hop])] = &[
            (
                &["for=192.0.2.60;proto=http;by=203.0.113.43"],
                &[a(ip("192.0.2.60"))],
            ),
            (
                &["for=192.0.2.43, for=\"[2001:db8:cafe::17]\""],
                &[a(ip("192.0.2.43")), a(ip("2001:db8:cafe::17"))],
            ),
            (&["For=\"192.0.2.1:1\""], &[a(ip("192.0.2.1"))]),
            (&["for=unknown"], &[Hop::Invalid]),
            (&["proto=https;by=1.2.3.4"], &[Hop::Invalid]),
            (
                &["for=\"x,y;z\";by=1.1.1.1, for=10.0.0.1"],
                &[Hop::Invalid, a(ip("10.0.0.1"))],
            ),
            (
                &["for=1.1.1.1", "for=2.2.2.2"],
                &[a(ip("1.1.1.1")), a(ip("2.2.2.2"))],
            ),
            (&[" , ,"], &[]),
            (&["for=\"\\\"\""], &[Hop::Invalid]),
        ];
        for (values, want) in cases {
            let got: Vec<Hop> = forwarded_hops(values.iter().map(|v| v.as_bytes())).collect();
            assert_eq!(&got, want, "{values:?}");
        }
    }

    #[test]
    fn walk_stops_at_first_untrusted_from_the_right() {
        let peer = ip("10.0.0.1");
        let run = |xff: &str, max| {
            walk(
                peer,
                || xff_entries([xff.as_bytes()].into_iter()),
                xff_hop,
                max,
                trusted_ten,
            )
        };
        let w = |c: &str, malformed, capped| {
            Some(Walk {
                client: ip(c),
                malformed,
                capped,
            })
        };
        assert_eq!(
            run("6.6.6.6, 1.2.3.4, 10.0.0.2", 8),
            w("1.2.3.4", false, false)
        );
        assert_eq!(run("1.2.3.4", 8), w("1.2.3.4", false, false));
        assert_eq!(run("10.0.0.3, 10.0.0.2", 8), w("10.0.0.3", false, false));
        assert_eq!(
            run("1.1.1.1, 10.0.0.3, 10.0.0.2", 2),
            w("10.0.0.3", false, true)
        );
        assert_eq!(
            run("1.1.1.1, garbage, 10.0.0.2", 8),
            w("10.0.0.2", true, false)
        );
        assert_eq!(run("garbage, 1.1.1.1", 8), w("1.1.1.1", false, false));
        assert_eq!(run("unknown", 8), w("10.0.0.1", true, false));
        assert_eq!(run("1.1.1.1", 0), w("10.0.0.1", false, true));
        assert_eq!(run(" , ", 8), None);
        assert_eq!(run("", 8), None);
    }

    #[test]
    fn split_unquoted_keeps_quoted_separators() {
        let parts: Vec<&[u8]> = split_unquoted(b"a,\"b,c\",d\\,e,\"f\\\",g\"", b',').collect();
        let want: Vec<&[u8]> = vec![b"a", b"\"b,c\"", b"d\\", b"e", b"\"f\\\",g\""];
        assert_eq!(parts, want);
        assert_eq!(split_unquoted(b"", b',').count(), 1);
        assert_eq!(split_unquoted(b"\"unterminated,x", b',').count(), 1);
    }
}

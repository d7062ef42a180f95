//! SOCKS4, SOCKS4a and SOCKS5 handshakes (RFC 1928, RFC 1929 and the SOCKS4/4a notes) at the
//! start of a connection, so that HTTP carried through a SOCKS proxy is parsed like any other.
//!
//! Pure grammar: each function reads one side's whole handshake from the first byte of its stream
//! and says how long it is. The connection layer ([`super::conn`]) holds the bytes until a side's
//! handshake is complete, drops them, and hands what follows to the HTTP parser.
//!
//! Invariants: no function panics on any input or reads past it; a handshake is only `Done` when
//! every field checked below has a legal value, so a stream that merely starts with byte 4 or 5
//! falls back to HTTP parsing as `NotSocks` (at the latest when the caller's byte limit is hit).
//! Deliberately absent: GSSAPI authentication (RFC 1961) and the UDP relay; a handshake choosing
//! them is `NotSocks`.

/// Which SOCKS protocol the client opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocksVersion {
    /// SOCKS4 and its 4a extension (a host name instead of an address).
    V4,
    V5,
}

/// The first client byte names the protocol version.
pub fn version_of(first_byte: u8) -> Option<SocksVersion> {
    match first_byte {
        4 => Some(SocksVersion::V4),
        5 => Some(SocksVersion::V5),
        _ => None,
    }
}

/// How much of one side's handshake is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The handshake continues past the bytes given.
    NeedMore,
    /// The handshake is the first `consumed` bytes. For the server side, `granted` tells whether
    /// the proxy accepted the request (SOCKS4 code 90, SOCKS5 reply 0); for the client it is
    /// always true.
    Done { consumed: usize, granted: bool },
    /// These bytes are not this side of a SOCKS handshake.
    NotSocks,
}

/// A cursor over a handshake prefix: each read is `None` when the bytes run out.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = self.buf.get(self.pos).copied()?;
        self.pos += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.pos = end;
        Some(())
    }

    /// A NUL-terminated string of at most `max` bytes: `Err` when it runs longer.
    fn cstr(&mut self, max: usize) -> Result<Option<()>, ()> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        match memchr::memchr(0, rest) {
            Some(i) if i <= max => {
                self.pos += i + 1;
                Ok(Some(()))
            }
            Some(_) => Err(()),
            None if rest.len() > max => Err(()),
            None => Ok(None),
        }
    }

    /// A SOCKS5 address (type byte, address) and port.
    fn socks5_addr(&mut self) -> Result<Option<()>, ()> {
        let Some(atyp) = self.u8() else {
            return Ok(None);
        };
        let len = match atyp {
            1 => 4,
            4 => 16,
            3 => match self.u8() {
                Some(0) => return Err(()),
                Some(n) => usize::from(n),
                None => return Ok(None),
            },
            _ => return Err(()),
        };
        Ok(self.skip(len + 2))
    }
}

/// Longest SOCKS4 user id or SOCKS4a host name accepted; real ones are short.
const MAX_SOCKS4_STRING: usize = 255;

/// Reads the client side: SOCKS4 `CONNECT`/`BIND` (with the 4a host name when the address is
/// `0.0.0.x`), or SOCKS5 greeting, optional username/password (RFC 1929) and request.
pub fn client_handshake(buf: &[u8]) -> Handshake {
    let mut c = Cursor { buf, pos: 0 };
    let r = match buf.first().copied().and_then(version_of) {
        None if buf.is_empty() => return Handshake::NeedMore,
        None => return Handshake::NotSocks,
        Some(SocksVersion::V4) => socks4_request(&mut c),
        Some(SocksVersion::V5) => socks5_client(&mut c),
    };
    match r {
        Ok(Some(())) => Handshake::Done {
            consumed: c.pos,
            granted: true,
        },
        Ok(None) => Handshake::NeedMore,
        Err(()) => Handshake::NotSocks,
    }
}

fn socks4_request(c: &mut Cursor<'_>) -> Result<Option<()>, ()> {
    let (Some(_version), Some(cmd)) = (c.u8(), c.u8()) else {
        return Ok(None);
    };
    if !matches!(cmd, 1 | 2) {
        return Err(());
    }
    if c.skip(2).is_none() {
        return Ok(None);
    }
    let Some(ip) = c.buf.get(c.pos..c.pos + 4) else {
        return Ok(None);
    };
    // SOCKS4a: 0.0.0.x with x non-zero announces a host name after the user id.
    let has_host = ip.get(..3) == Some(&[0, 0, 0][..]) && ip.get(3) != Some(&0);
    c.skip(4).ok_or(())?;
    if c.cstr(MAX_SOCKS4_STRING)?.is_none() {
        return Ok(None);
    }
    if has_host {
        return c.cstr(MAX_SOCKS4_STRING);
    }
    Ok(Some(()))
}

fn socks5_client(c: &mut Cursor<'_>) -> Result<Option<()>, ()> {
    let (Some(_version), Some(n)) = (c.u8(), c.u8()) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(());
    }
    if c.skip(usize::from(n)).is_none() {
        return Ok(None);
    }
    // The next message says itself what it is: username/password (version 1) or the request.
    let Some(next) = c.buf.get(c.pos).copied() else {
        return Ok(None);
    };
    if next == 1 {
        c.skip(1).ok_or(())?;
        let Some(ulen) = c.u8() else {
            return Ok(None);
        };
        if c.skip(usize::from(ulen)).is_none() {
            return Ok(None);
        }
        let Some(plen) = c.u8() else {
            return Ok(None);
        };
        if c.skip(usize::from(plen)).is_none() {
            return Ok(None);
        }
    }
    let (Some(version), Some(cmd), Some(rsv)) = (c.u8(), c.u8(), c.u8()) else {
        return Ok(None);
    };
    if version != 5 || !matches!(cmd, 1..=3) || rsv != 0 {
        return Err(());
    }
    c.socks5_addr()
}

/// Reads the server side of a handshake the client opened with `version`: the SOCKS4 reply, or
/// the SOCKS5 method choice, the RFC 1929 status when username/password was chosen, and the
/// reply. A refusal (SOCKS4 code other than 90, SOCKS5 "no acceptable method", failed login or
/// a non-zero reply) ends the handshake with `granted: false`.
pub fn server_handshake(buf: &[u8], version: SocksVersion) -> Handshake {
    let mut c = Cursor { buf, pos: 0 };
    let r = match version {
        SocksVersion::V4 => socks4_reply(&mut c),
        SocksVersion::V5 => socks5_server(&mut c),
    };
    match r {
        Ok(Some(granted)) => Handshake::Done {
            consumed: c.pos,
            granted,
        },
        Ok(None) => Handshake::NeedMore,
        Err(()) => Handshake::NotSocks,
    }
}

fn socks4_reply(c: &mut Cursor<'_>) -> Result<Option<bool>, ()> {
    let (Some(vn), Some(cd)) = (c.u8(), c.u8()) else {
        return Ok(None);
    };
    // The reply version is 0; some proxies echo 4.
    if !matches!(vn, 0 | 4) || !(90..=93).contains(&cd) {
        return Err(());
    }
    Ok(c.skip(6).map(|()| cd == 90))
}

fn socks5_server(c: &mut Cursor<'_>) -> Result<Option<bool>, ()> {
    let (Some(version), Some(method)) = (c.u8(), c.u8()) else {
        return Ok(None);
    };
    if version != 5 {
        return Err(());
    }
    match method {
        0xff => return Ok(Some(false)),
        0 => {}
        2 => {
            let (Some(v), Some(status)) = (c.u8(), c.u8()) else {
                return Ok(None);
            };
            if v != 1 {
                return Err(());
            }
            if status != 0 {
                return Ok(Some(false));
            }
        }
        // GSSAPI and private methods exchange messages this parser does not follow.
        _ => return Err(()),
    }
    let (Some(version), Some(rep), Some(rsv)) = (c.u8(), c.u8(), c.u8()) else {
        return Ok(None);
    };
    if version != 5 || rep > 8 || rsv != 0 {
        return Err(());
    }
    Ok(c.socks5_addr()?.map(|()| rep == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(consumed: usize, granted: bool) -> Handshake {
        Handshake::Done { consumed, granted }
    }

    #[test]
    fn client_handshakes() {
        let cases: &[(&[u8], Handshake)] = &[
            // SOCKS4 CONNECT to 93.184.216.119:80, user "u".
            (b"\x04\x01\x00\x50\x5d\xb8\xd8\x77u\x00GET", done(10, true)),
            // SOCKS4a: 0.0.0.1 and a host name after the (empty) user id.
            (
                b"\x04\x01\x00\x50\x00\x00\x00\x01\x00www.example.com\x00",
                done(25, true),
            ),
            (
                b"\x04\x01\x00\x50\x00\x00\x00\x01\x00www.exa",
                Handshake::NeedMore,
            ),
            // SOCKS5: greeting (no auth), CONNECT www.google.com:80 by name.
            (
                b"\x05\x01\x00\x05\x01\x00\x03\x0ewww.google.com\x00\x50",
                done(24, true),
            ),
            // SOCKS5 with username/password, CONNECT to an IPv4 address.
            (
                b"\x05\x01\x02\x01\x01u\x02pw\x05\x01\x00\x01\x0a\x00\x00\x02\x00\x50",
                done(19, true),
            ),
            // SOCKS5 to an IPv6 address.
            (
                &[
                    5, 1, 0, 5, 1, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80,
                ],
                done(25, true),
            ),
            (b"\x05\x01\x00\x05\x01\x00\x03", Handshake::NeedMore),
            (b"\x05", Handshake::NeedMore),
            (b"", Handshake::NeedMore),
            (b"GET / HTTP/1.1\r\n", Handshake::NotSocks),
            (b"\x04\x07\x00\x50", Handshake::NotSocks),
            (b"\x05\x00", Handshake::NotSocks),
            (b"\x05\x01\x00\x05\x09\x00\x01", Handshake::NotSocks),
            (b"\x05\x01\x00\x05\x01\x01\x01", Handshake::NotSocks),
            (b"\x05\x01\x00\x05\x01\x00\x07", Handshake::NotSocks),
        ];
        for (bytes, want) in cases {
            assert_eq!(client_handshake(bytes), *want, "{bytes:?}");
        }
        let mut long = b"\x04\x01\x00\x50\x01\x02\x03\x04".to_vec();
        long.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(client_handshake(&long), Handshake::NotSocks);
    }

    #[test]
    fn server_handshakes() {
        use SocksVersion::{V4, V5};
        let cases: &[(&[u8], SocksVersion, Handshake)] = &[
            (b"\x00\x5a\x00\x50\x5d\xb8\xd8\x77HTTP", V4, done(8, true)),
            (b"\x00\x5b\x00\x00\x00\x00\x00\x00", V4, done(8, false)),
            (b"\x00\x5a\x00", V4, Handshake::NeedMore),
            (b"\x00\x10\x00\x00\x00\x00\x00\x00", V4, Handshake::NotSocks),
            (
                b"\x05\x00\x05\x00\x00\x01\x0a\x00\x00\x02\x00\x50HTTP",
                V5,
                done(12, true),
            ),
            (
                b"\x05\x02\x01\x00\x05\x00\x00\x01\x0a\x00\x00\x02\x00\x50",
                V5,
                done(14, true),
            ),
            (b"\x05\x02\x01\x01", V5, done(4, false)),
            (b"\x05\xff", V5, done(2, false)),
            (
                b"\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00",
                V5,
                done(12, false),
            ),
            (b"\x05\x00", V5, Handshake::NeedMore),
            (b"\x05\x01", V5, Handshake::NotSocks),
            (b"HTTP/1.1 200 OK", V5, Handshake::NotSocks),
        ];
        for (bytes, v, want) in cases {
            assert_eq!(server_handshake(bytes, *v), *want, "{bytes:?}");
        }
    }

    #[test]
    fn prefixes_of_a_handshake_need_more_and_never_fail() {
        let client: &[u8] =
            b"\x05\x02\x00\x02\x01\x03bob\x03pwd\x05\x01\x00\x03\x0bexample.com\x01\xbb";
        let server: &[u8] = b"\x05\x02\x01\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38";
        for n in 0..client.len() {
            assert_eq!(client_handshake(&client[..n]), Handshake::NeedMore, "{n}");
        }
        assert_eq!(client_handshake(client), done(client.len(), true));
        for n in 0..server.len() {
            let got = server_handshake(&server[..n], SocksVersion::V5);
            assert_eq!(got, Handshake::NeedMore, "{n}");
        }
        assert_eq!(
            server_handshake(server, SocksVersion::V5),
            done(server.len(), true)
        );
    }
}

//! The HTTP transaction: the one record that crosses from parsing to analysis.
//!
//! Everything after the `http` stage (inventory, baselines, detectors, `apitap flows` output)
//! consumes [`Transaction`] values and nothing lower. Keep this type small and stable.
//!
//! Invariants:
//! - `*_body_len` fields count the whole body, however much of it was kept in `body`.
//! - `body` holds at most the configured body limit (default 64 KiB) of *decoded* content
//!   (de-chunked and, for gzip/deflate, decompressed).
//! - Header names and values are kept as the bytes that were sent; nothing here is secret-safe:
//!   stages that log or alert must hash or mask credentials (see `identity`).

use crate::common::{Duration, Timestamp};
use std::fmt;
use std::net::IpAddr;

/// A pair of (name, value) byte ranges into [`Headers::buf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeaderSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// Header fields of one message, in wire order, stored in one buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    buf: Vec<u8>,
    spans: Vec<HeaderSpan>,
}

impl Headers {
    pub fn new() -> Self {
        Headers::default()
    }

    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Headers {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    /// Appends one field. Leading and trailing whitespace of the value should already be trimmed.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let n0 = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let n1 = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        let v1 = self.buf.len() as u32;
        self.spans.push(HeaderSpan {
            name: (n0, n1),
            value: (n1, v1),
        });
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes used by names and values together.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// All fields in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans.iter().map(move |s| {
            (
                &self.buf[s.name.0 as usize..s.name.1 as usize],
                &self.buf[s.value.0 as usize..s.value.1 as usize],
            )
        })
    }

    /// The first value of a field, name compared ASCII case-insensitively.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Every value of a field, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first value as text (lossy UTF-8).
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// A message body as seen by apitap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// Decoded content, at most the configured body limit.
    pub data: Vec<u8>,
    /// Length of the content after transfer decoding (de-chunking) and content decoding
    /// (gzip/deflate), counted in full even when `data` stopped early. This is Zeek's
    /// `request_body_len` / `response_body_len`.
    pub len: u64,
    /// Length of the body as it crossed the wire after de-chunking, before content decoding.
    pub wire_len: u64,
    /// `data` holds less than `len` bytes because of the body limit or a decoding guard.
    pub truncated: bool,
}

/// An HTTP version as sent on the start line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    Http09,
    Http10,
    Http11,
}

impl HttpVersion {
    /// `"0.9"`, `"1.0"` or `"1.1"`, as Zeek logs it.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpVersion::Http09 => "0.9",
            HttpVersion::Http10 => "1.0",
            HttpVersion::Http11 => "1.1",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method token as sent (not upper-cased).
    pub method: String,
    /// The request target exactly as sent (lossy UTF-8 for non-UTF-8 bytes).
    pub uri: String,
    pub version: HttpVersion,
    pub headers: Headers,
    pub body: Body,
    /// Packet time of the first byte of the request line.
    pub start: Timestamp,
    /// Packet time of the last byte of the request.
    pub end: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: HttpVersion,
    pub headers: Headers,
    pub body: Body,
    /// Interim (1xx) status codes seen before this final response, in order.
    pub interim: Vec<u16>,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Addresses and identity of the connection a transaction travelled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Stable flow id, the same for every transaction of one connection.
    pub flow_id: String,
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// Outermost 802.1Q VLAN id, if any.
    pub vlan: Option<u16>,
}

impl Default for ConnInfo {
    fn default() -> Self {
        ConnInfo {
            flow_id: String::new(),
            client: IpAddr::from([0, 0, 0, 0]),
            client_port: 0,
            server: IpAddr::from([0, 0, 0, 0]),
            server_port: 0,
            vlan: None,
        }
    }
}

/// One request paired with its response.
///
/// `request` is `None` only for a response that arrived without any request to pair it with
/// (flagged `response_without_request`); `response` is `None` when the connection ended or the
/// capture stopped before an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    pub conn: ConnInfo,
    /// 1-based position of this transaction within its connection.
    pub depth: u32,
    pub request: Option<Request>,
    pub response: Option<Response>,
    /// Anomaly and state names, without duplicates, in the order they were first raised.
    pub flags: Vec<&'static str>,
}

impl Transaction {
    /// Time of the first request packet, or of the response when there is no request.
    pub fn ts(&self) -> Timestamp {
        match (&self.request, &self.response) {
            (Some(r), _) => r.start,
            (None, Some(r)) => r.start,
            (None, None) => Timestamp::ZERO,
        }
    }

    /// Request start to response end; zero without both.
    pub fn duration(&self) -> Duration {
        match (&self.request, &self.response) {
            (Some(q), Some(r)) => r.end.saturating_since(q.start),
            _ => Duration::default(),
        }
    }

    /// Adds a flag once.
    pub fn flag(&mut self, name: &'static str) {
        if !self.flags.contains(&name) {
            self.flags.push(name);
        }
    }

    pub fn has_flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| *f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_lookup_is_case_insensitive_and_keeps_order() {
        let mut h = Headers::new();
        h.push(b"Host", b"example.com");
        h.push(b"Set-Cookie", b"a=1");
        h.push(b"set-cookie", b"b=2");
        assert_eq!(h.get("HOST"), Some(&b"example.com"[..]));
        let cookies: Vec<_> = h.get_all("Set-Cookie").collect();
        assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("missing"), None);
    }

    #[test]
    fn flags_are_deduplicated_in_first_seen_order() {
        let mut t = Transaction {
            conn: ConnInfo::default(),
            depth: 1,
            request: None,
            response: None,
            flags: vec![],
        };
        t.flag("partial");
        t.flag("request_gap");
        t.flag("partial");
        assert_eq!(t.flags, vec!["partial", "request_gap"]);
    }
}

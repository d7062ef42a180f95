//! Pure HTTP/1.x grammar: bytes in, small structs out. No state, no I/O, no allocation beyond the
//! values returned.
//!
//! Heads go through `httparse` first (fast, strict); when it rejects a head, a lenient line parser
//! takes over, records what was odd as [`HttpAnomaly`] values and keeps going, because a passive
//! sensor must describe what the server may have accepted, not what the RFC allows.
//!
//! Invariants: functions never panic on any input; every returned `consumed` is at most the input
//! length; numeric fields use checked arithmetic (a chunk size of 2^64 is an error, not a wrap).

use super::anomaly::HttpAnomaly;
use crate::transaction::{Headers, HttpVersion};

/// The outcome of an incremental parse over a byte prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<T, E> {
    /// A complete item was parsed from the first `consumed` bytes.
    Done { value: T, consumed: usize },
    /// The input ends before the item does; call again with more bytes.
    NeedMore,
    /// The bytes can never form the item.
    Fail(E),
}

/// Longest method token accepted when deciding whether a line starts a request. Real methods are
/// short; the bound keeps junk lines with one long word from passing as requests.
const MAX_METHOD_LEN: usize = 32;

/// Header fields httparse is given room for on the fast path; heads with more go to the lenient
/// parser, which has no fixed bound other than the caller's `max_headers`.
const FAST_PATH_HEADERS: usize = 64;

/// A parsed request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// The method token as sent.
    pub method: String,
    /// The request target as sent (lossy UTF-8).
    pub uri: String,
    pub version: HttpVersion,
    /// An HTTP/0.9 simple request: no version, no headers, no body.
    pub simple: bool,
    pub anomalies: Vec<HttpAnomaly>,
}

/// A parsed status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusLine {
    pub version: HttpVersion,
    pub status: u16,
    pub reason: String,
    pub anomalies: Vec<HttpAnomaly>,
}

/// What Content-Length said, after looking at every field and every comma-separated value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContentLength {
    #[default]
    Absent,
    /// The first valid value.
    Valid(u64),
    /// Present, but no value was a valid length.
    Invalid,
}

/// A content coding apitap can decode, or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Coding {
    #[default]
    Identity,
    Gzip,
    /// `deflate`: zlib-wrapped per RFC 9110, but raw deflate is common; the decoder sniffs.
    Deflate,
    Unsupported,
}

/// The header fields that decide framing and decoding, gathered from *all* fields of a head,
/// including those beyond `max_headers`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FramingFields {
    pub content_length: ContentLength,
    /// A Transfer-Encoding field was present.
    pub te_present: bool,
    /// The final transfer coding is `chunked`.
    pub te_chunked: bool,
    /// A gzip/deflate transfer coding before `chunked`: decoded like a content coding.
    pub te_coding: Coding,
    /// The single content coding named by Content-Encoding.
    pub content_encoding: Coding,
    /// An `Upgrade` field was present.
    pub upgrade: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// Either kind of start line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request(RequestLine),
    Status(StatusLine),
}

/// One parsed message head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub start: StartLine,
    /// At most `max_headers` fields, in wire order.
    pub headers: Headers,
    pub framing: FramingFields,
    pub anomalies: Vec<HttpAnomaly>,
}

/// Why a head could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The first line is not a request line (or a status line, for responses).
    BadStartLine,
}

/// Why a chunk-size line could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkSizeError {
    Invalid,
    Overflow,
    Negative,
}

impl ChunkSizeError {
    pub fn anomaly(self) -> HttpAnomaly {
        match self {
            ChunkSizeError::Invalid => HttpAnomaly::InvalidChunkSize,
            ChunkSizeError::Overflow => HttpAnomaly::ChunkSizeOverflow,
            ChunkSizeError::Negative => HttpAnomaly::NegativeChunkSize,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_ws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_ws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Strips a trailing `\n` and then a trailing `\r`, so both CRLF and bare LF endings work. Only
/// one CR goes: a line of `\r\r\n` is not blank, as Chromium and Firefox read it.
pub fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether a line (with or without its ending) is empty: the end of a head.
pub fn is_blank_line(line: &[u8]) -> bool {
    strip_eol(line).is_empty()
}

/// Offset just past the blank line that ends the head starting at `buf[0]`, if present.
/// Accepts CRLF and bare LF line endings.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(i) = memchr::memchr(b'\n', buf.get(pos..)?) {
        let end = pos + i + 1;
        if pos > 0 && is_blank_line(buf.get(pos..end)?) {
            return Some(end);
        }
        pos = end;
    }
    None
}

/// Splits a line into fields separated by runs of spaces or tabs.
fn split_ws(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| is_ws(*b)).filter(|p| !p.is_empty())
}

/// Parses an `HTTP/x.y` token, case-insensitively. Anything but exactly `HTTP/1.0` and
/// `HTTP/1.1` is flagged. As Chromium does, the major version is the digit right after `/` and
/// the minor one the digit right after the first dot (`HTTP/1.01` is 1.0, `HTTP/1.10` is 1.1, and
/// so is `HTTP/1\0.1`): `0.x` is 0.9, `1.0` is 1.0, every later version is framed like 1.1,
/// and `HTTP/1.` or `HTTP/1` is 1.1.
///
/// Strict mode (request lines, where the version token is what tells a request from free text)
/// accepts only digits and dots after the prefix. `lenient` mode (status lines, which the `HTTP/`
/// prefix already identifies) takes any token, and one without a readable number is 1.0, as
/// Firefox assumes.
fn parse_version(
    tok: &[u8],
    lenient: bool,
    anomalies: &mut Vec<HttpAnomaly>,
) -> Option<HttpVersion> {
    let (prefix, num) = (tok.get(..5)?, tok.get(5..)?);
    if !prefix.eq_ignore_ascii_case(b"HTTP/") {
        return None;
    }
    let numeric = !num.is_empty() && num.iter().all(|b| b.is_ascii_digit() || *b == b'.');
    if !numeric && !lenient {
        return None;
    }
    let digit = |b: Option<&u8>| b.filter(|b| b.is_ascii_digit()).map(|b| b - b'0');
    let major = digit(num.first());
    let dot = num.iter().position(|b| *b == b'.');
    let minor = dot.and_then(|i| digit(num.get(i + 1)));
    let version = match (major, minor) {
        (Some(0), _) => HttpVersion::Http09,
        (Some(1), Some(0)) => HttpVersion::Http10,
        (Some(1), Some(_)) => HttpVersion::Http11,
        // `HTTP/1.` and `HTTP/1`: a 1.x whose minor is missing, framed like 1.1.
        (Some(1), None) if numeric => HttpVersion::Http11,
        (Some(1), None) => HttpVersion::Http10,
        (Some(_), _) => HttpVersion::Http11,
        (None, _) => HttpVersion::Http10,
    };
    let standard = num == b"1.1" || num == b"1.0";
    if !standard || prefix != b"HTTP/" {
        anomalies.push(HttpAnomaly::NonstandardVersion);
    }
    Some(version)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request target as text without losing a byte: valid UTF-8 is kept as is and every byte
/// of an invalid sequence is written percent-encoded (`%D9`), which is legal in a URI and decodes
/// back to the byte sent. Returns whether any byte had to be encoded.
pub fn target_text(b: &[u8]) -> (String, bool) {
    let mut out = String::with_capacity(b.len());
    let mut rest = b;
    let mut encoded = false;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return (out, encoded);
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                // `good` is valid UTF-8 by construction; the lossy call cannot replace anything.
                out.push_str(&String::from_utf8_lossy(good));
                let n = e.error_len().unwrap_or(bad.len()).max(1);
                for byte in bad.iter().take(n) {
                    out.push_str(&format!("%{byte:02X}"));
                }
                encoded = true;
                rest = bad.get(n..).unwrap_or(&[]);
            }
        }
    }
}

/// Parses a request line leniently (line ending optional). `None` when the line does not look
/// like a request at all. A method followed by a target starting with `/` and no version is an
/// HTTP/0.9 simple request when the method is at least three upper-case letters (`GET` and `PUT`
/// are the shortest methods; Zeek applies the same floor), which keeps free text out. Target
/// bytes that are not UTF-8 are kept percent-encoded and flagged `uri_invalid_utf8`.
pub fn parse_request_line(line: &[u8]) -> Option<RequestLine> {
    let line = strip_eol(line);
    let mut anomalies = Vec::new();
    let sp = line.iter().position(|b| is_ws(*b))?;
    let method = line.get(..sp)?;
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.iter().all(|b| is_tchar(*b)) {
        return None;
    }
    let rest = trim_ws(line.get(sp..)?);
    if rest.is_empty() {
        return None;
    }
    // The version is the last whitespace-separated token if it looks like one; the target is
    // everything between, spaces included (seen in the wild, accepted by some servers).
    let last_ws = rest.iter().rposition(|b| is_ws(*b));
    let (target, version) = match last_ws {
        Some(i) => {
            let tok = rest.get(i + 1..)?;
            match parse_version(tok, false, &mut anomalies) {
                Some(v) => (trim_ws(rest.get(..i)?), Some(v)),
                None => (rest, None),
            }
        }
        // `OPTIONS HTTP/1.1`: a version and no target (Zeek logs it with an empty URI).
        None => match parse_version(rest, false, &mut anomalies) {
            Some(v) => (&b""[..], Some(v)),
            None => (rest, None),
        },
    };
    let simple = version.is_none();
    if simple {
        let plain_target = target.first() == Some(&b'/') && !target.iter().any(|b| is_ws(*b));
        let method_ok = method.len() >= 3
            && method
                .iter()
                .all(|b| b.is_ascii_uppercase() || *b == b'_' || *b == b'-');
        if !plain_target || !method_ok {
            return None;
        }
        anomalies.push(HttpAnomaly::Http09);
    }
    let strict = !simple
        && line.get(sp) == Some(&b' ')
        && line.get(sp + 1).is_some_and(|b| !is_ws(*b))
        && split_ws(line).count() == 3
        && line.iter().filter(|b| is_ws(**b)).count() == 2
        && !target.is_empty()
        && target.iter().all(|b| b.is_ascii_graphic());
    if !strict && !simple {
        anomalies.push(HttpAnomaly::InvalidRequestLine);
    }
    let (uri, encoded) = target_text(target);
    if encoded {
        anomalies.push(HttpAnomaly::UriInvalidUtf8);
    }
    Some(RequestLine {
        method: lossy(method),
        uri,
        version: version.unwrap_or(HttpVersion::Http09),
        simple,
        anomalies,
    })
}

/// Whether a line looks like a header field: a token, a colon, anything. Used after an HTTP/0.9
/// request line to decide whether a header block follows it.
pub fn looks_like_header_field(line: &[u8]) -> bool {
    let line = strip_eol(line);
    match line.iter().position(|b| *b == b':') {
        Some(i) => line
            .get(..i)
            .is_some_and(|name| !name.is_empty() && name.iter().all(|b| is_tchar(*b))),
        None => false,
    }
}

/// Whether a line starts a full request (`METHOD SP target SP HTTP/x.y`): the resync criterion.
pub fn is_full_request_line(line: &[u8]) -> bool {
    parse_request_line(line).is_some_and(|r| !r.simple)
}

/// Methods recognised inside a line when resynchronising: a message that starts right after the
/// end of a body we joined midstream has no line break before it.
const EMBEDDED_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Offset inside `line` (never 0) at which a full request line (`to_server`) or a status line
/// begins after other bytes, e.g. `..."}GET /x HTTP/1.1`. The earliest such start wins.
pub fn embedded_message_start(line: &[u8], to_server: bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    let needles: &[&[u8]] = if to_server {
        EMBEDDED_METHODS
    } else {
        &[b"HTTP/1."]
    };
    for needle in needles {
        for pos in memchr::memmem::find_iter(line, needle) {
            if pos == 0 || best.is_some_and(|b| pos >= b) {
                continue;
            }
            let rest = line.get(pos..).unwrap_or(b"");
            let ok = if to_server {
                is_full_request_line(rest)
            } else {
                parse_status_line(rest).is_some()
            };
            if ok {
                best = Some(pos);
                break;
            }
        }
    }
    best
}

/// Parses a status line leniently (line ending optional). `None` when it does not look like one.
///
/// A line that starts with `HTTP/` is a status line, as Zeek and the browsers read it, however
/// broken the rest: control bytes and spaces before the prefix are skipped (Firefox looks for the
/// prefix), the version is read leniently (see [`parse_version`]), and the status code is the
/// token after the version when it is all digits (`HTTP/1.1 2000 ok` gives 2000, `0204` gives
/// 204), else 0 with the token kept in the reason (`HTTP/1.0 2XX OK` gives 0, "2XX OK").
/// Anything but `HTTP/x.y SP 3DIGIT [SP reason]` is flagged `invalid_status_line`.
pub fn parse_status_line(line: &[u8]) -> Option<StatusLine> {
    let line = strip_eol(line);
    let mut anomalies = Vec::new();
    let lead = line.iter().take_while(|b| **b <= b' ').count();
    let line = line.get(lead..)?;
    let vlen = line.iter().position(|b| is_ws(*b)).unwrap_or(line.len());
    let version = parse_version(line.get(..vlen)?, true, &mut anomalies)?;
    // `rest` keeps the separator so odd spacing can be told apart from one SP.
    let rest = line.get(vlen..).unwrap_or(b"");
    let rest_trim = trim_ws(rest);
    // The code is the token after the version when it is all digits; a token like `2XX` is no
    // code at all (status 0) and stays in the reason, so nothing sent is lost.
    let token_len = rest_trim.iter().take_while(|b| !is_ws(**b)).count();
    let token = rest_trim.get(..token_len).unwrap_or(b"");
    let code_len = if token.iter().all(u8::is_ascii_digit) {
        token_len
    } else {
        0
    };
    let status = rest_trim.iter().take(code_len).fold(0u16, |acc, d| {
        acc.saturating_mul(10).saturating_add(u16::from(d - b'0'))
    });
    let after = rest_trim.get(code_len..).unwrap_or(b"");
    let strict = lead == 0
        && code_len == 3
        && (100..1000).contains(&status)
        && rest.first() == Some(&b' ')
        && !rest.get(1).is_some_and(|b| is_ws(*b))
        && (after.is_empty() || after.first().is_some_and(|b| is_ws(*b)));
    if !strict {
        anomalies.push(HttpAnomaly::InvalidStatusLine);
    }
    Some(StatusLine {
        version,
        status,
        reason: lossy(trim_ws(after)),
        anomalies,
    })
}

/// Whether a line is a status line conventional enough to end a resync: `HTTP/` at its very
/// start and a three-digit code. The lenient forms [`parse_status_line`] also accepts (no code,
/// control bytes first) are only taken where a response is due.
pub fn is_resync_status_line(line: &[u8]) -> bool {
    may_start_status_line(line)
        && parse_status_line(line).is_some_and(|s| (100..1000).contains(&s.status))
}

/// Does `buf` start with something that could become a status line (`HTTP/` prefix so far)?
pub fn may_start_status_line(buf: &[u8]) -> bool {
    let n = buf.len().min(5);
    match (buf.get(..n), b"HTTP/".get(..n)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// A chunk size read from a chunk-size line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize {
    pub size: u64,
    /// Bytes other than whitespace and `;extensions` surrounded the digits (`fx`, `f,`, a
    /// leading vertical tab, a `0x` prefix): the digits were used anyway.
    pub junk: bool,
}

/// Parses a chunk-size line (ending optional): hex digits, optional whitespace, optional
/// `;extensions`. Leading zeros are fine; 17 significant hex digits are an overflow.
///
/// Beyond the grammar it reads what lenient clients read (Firefox scans the size with
/// `sscanf("%x")`, curl stops at the first non-hex byte): leading whitespace of any kind (also
/// vertical tab, form feed, CR) is skipped, a `0x` prefix is allowed, and whatever follows the
/// digits is ignored. Such a line is flagged through [`ChunkSize::junk`]. A line without any hex
/// digit is still invalid.
pub fn parse_chunk_size_line(line: &[u8]) -> Result<ChunkSize, ChunkSizeError> {
    let line = strip_eol(line);
    let lead = line
        .iter()
        .take_while(|b| matches!(**b, b' ' | b'\t' | b'\x0b' | b'\x0c' | b'\r'))
        .count();
    let mut junk = line.iter().take(lead).any(|b| !is_ws(*b));
    let mut rest = line.get(lead..).unwrap_or(b"");
    if rest.first() == Some(&b'-') {
        return Err(ChunkSizeError::Negative);
    }
    if let [b'0', b'x' | b'X', d, ..] = rest {
        if d.is_ascii_hexdigit() {
            rest = rest.get(2..).unwrap_or(b"");
            junk = true;
        }
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(ChunkSizeError::Invalid);
    }
    let mut size: u64 = 0;
    for b in rest.iter().take(digits) {
        let d = match *b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkSizeError::Overflow)?;
    }
    let after = trim_ws(rest.get(digits..).unwrap_or(b""));
    junk |= !(after.is_empty() || after.first() == Some(&b';'));
    Ok(ChunkSize { size, junk })
}

/// Incremental form of [`parse_chunk_size_line`]: finds the line ending first.
pub fn parse_chunk_size(buf: &[u8]) -> Parse<ChunkSize, ChunkSizeError> {
    match memchr::memchr(b'\n', buf) {
        None => Parse::NeedMore,
        Some(i) => match parse_chunk_size_line(buf.get(..i).unwrap_or(b"")) {
            Ok(value) => Parse::Done {
                value,
                consumed: i + 1,
            },
            Err(e) => Parse::Fail(e),
        },
    }
}

/// Parses one Content-Length value list (`"5"`, `"5, 5"`) into `acc`.
fn note_content_length(
    value: &[u8],
    acc: &mut ContentLength,
    seen: &mut bool,
    anomalies: &mut Vec<HttpAnomaly>,
) {
    for part in value.split(|b| *b == b',') {
        let part = trim_ws(part);
        let parsed = if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            None
        } else {
            part.iter().try_fold(0u64, |acc, d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })
        };
        match (parsed, *acc) {
            (None, _) => anomalies.push(HttpAnomaly::InvalidContentLength),
            (Some(v), ContentLength::Valid(first)) => anomalies.push(if v == first {
                HttpAnomaly::DuplicateContentLength
            } else {
                HttpAnomaly::ConflictingContentLength
            }),
            (Some(v), _) => {
                if *seen {
                    // An earlier value was invalid: that is a conflict too.
                    anomalies.push(HttpAnomaly::ConflictingContentLength);
                }
                *acc = ContentLength::Valid(v);
            }
        }
        *seen = true;
    }
    if *acc == ContentLength::Absent {
        *acc = ContentLength::Invalid;
    }
}

fn coding_of(token: &[u8]) -> Option<Coding> {
    let t = trim_ws(token);
    if t.eq_ignore_ascii_case(b"gzip") || t.eq_ignore_ascii_case(b"x-gzip") {
        Some(Coding::Gzip)
    } else if t.eq_ignore_ascii_case(b"deflate") {
        Some(Coding::Deflate)
    } else if t.eq_ignore_ascii_case(b"identity") || t.is_empty() {
        Some(Coding::Identity)
    } else {
        None
    }
}

/// Gathers framing fields from every header field of a head.
fn collect_framing<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    anomalies: &mut Vec<HttpAnomaly>,
) -> FramingFields {
    let mut f = FramingFields::default();
    let mut cl_seen = false;
    let mut te_codings: Vec<Coding> = Vec::new();
    let mut te_unknown = false;
    let mut te_last_chunked = false;
    let mut ce: Option<Coding> = None;
    let mut ce_count = 0usize;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            note_content_length(value, &mut f.content_length, &mut cl_seen, anomalies);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.te_present = true;
            for tok in value.split(|b| *b == b',') {
                // Parameters (`;q=..`) do not change which coding it is.
                let tok = trim_ws(tok.split(|b| *b == b';').next().unwrap_or(b""));
                if tok.is_empty() {
                    continue;
                }
                if tok.eq_ignore_ascii_case(b"chunked") {
                    if te_last_chunked {
                        // chunked applied twice is not a valid coding sequence.
                        te_unknown = true;
                    }
                    te_last_chunked = true;
                    continue;
                }
                if te_last_chunked {
                    // Anything after chunked means chunked is not the final coding.
                    te_unknown = true;
                }
                te_last_chunked = false;
                match coding_of(tok) {
                    Some(Coding::Identity) => {}
                    Some(c) if te_codings.len() < 4 => te_codings.push(c),
                    _ => te_unknown = true,
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            for tok in value.split(|b| *b == b',') {
                match coding_of(tok) {
                    Some(Coding::Identity) => {}
                    Some(c) => {
                        ce = Some(c);
                        ce_count += 1;
                    }
                    None => {
                        ce = Some(Coding::Unsupported);
                        ce_count += 1;
                    }
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            f.upgrade = true;
        } else if name.eq_ignore_ascii_case(b"expect") {
            f.expect_continue |= trim_ws(value).eq_ignore_ascii_case(b"100-continue");
        }
    }
    if f.te_present {
        f.te_chunked = te_last_chunked;
        if te_unknown || te_codings.len() > 1 {
            anomalies.push(HttpAnomaly::UnknownTransferCoding);
        } else if let Some(c) = te_codings.first() {
            f.te_coding = *c;
        }
        if f.content_length != ContentLength::Absent {
            anomalies.push(HttpAnomaly::TransferEncodingWithContentLength);
        }
    }
    f.content_encoding = match (ce, ce_count) {
        (None, _) => Coding::Identity,
        (Some(c), 1) => c,
        // Stacked codings (`gzip, gzip`) are not decoded.
        (Some(_), _) => Coding::Unsupported,
    };
    f
}

fn version_of(v: Option<u8>) -> HttpVersion {
    match v {
        Some(0) => HttpVersion::Http10,
        _ => HttpVersion::Http11,
    }
}

/// Copies up to `max_headers` fields into one `Headers`. `bytes_hint` (the head's length) sizes
/// the buffer once: growing it field by field was 9% of `apitap flows` (callgrind).
fn push_fields<'a>(
    fields: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    max_headers: usize,
    bytes_hint: usize,
    anomalies: &mut Vec<HttpAnomaly>,
) -> Headers {
    let mut headers = Headers::with_capacity(fields.len().min(max_headers), bytes_hint);
    for (name, value) in fields {
        if headers.len() >= max_headers {
            anomalies.push(HttpAnomaly::TooManyHeaders);
            break;
        }
        headers.push(name, trim_ws(value));
    }
    headers
}

/// Splits header lines leniently into (name, value) pairs: bare LF, obs-fold (joined with one
/// space), lines without a colon (skipped), odd name bytes (kept as sent). Flags each oddity once.
fn lenient_fields(block: &[u8], anomalies: &mut Vec<HttpAnomaly>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut odd_line = false;
    let mut folded = false;
    for raw in block.split(|b| *b == b'\n') {
        let line = strip_eol(raw);
        if line.is_empty() {
            continue;
        }
        if line.first().is_some_and(|b| is_ws(*b)) {
            if let Some((_, v)) = out.last_mut() {
                folded = true;
                let cont = trim_ws(line);
                if !cont.is_empty() {
                    if !v.is_empty() {
                        v.push(b' ');
                    }
                    v.extend_from_slice(cont);
                }
                continue;
            }
            odd_line = true;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            odd_line = true;
            continue;
        };
        let raw_name = line.get(..colon).unwrap_or(b"");
        let name = trim_ws(raw_name);
        if name.is_empty() || name.len() != raw_name.len() || !name.iter().all(|b| is_tchar(*b)) {
            odd_line = true;
        }
        if name.is_empty() {
            continue;
        }
        let value = trim_ws(line.get(colon + 1..).unwrap_or(b""));
        out.push((name.to_vec(), value.to_vec()));
    }
    if odd_line {
        anomalies.push(HttpAnomaly::InvalidHeaderLine);
    }
    if folded {
        anomalies.push(HttpAnomaly::ObsFold);
    }
    out
}

/// Parses a complete head: start line, header fields, blank line. `request` selects the grammar.
/// Returns `NeedMore` until the blank line is present; `Fail` if the first line is not a start
/// line of the expected kind. At most `max_headers` fields are kept; framing fields are read from
/// all of them.
pub fn parse_head(buf: &[u8], request: bool, max_headers: usize) -> Parse<Head, HeadError> {
    let Some(end) = find_head_end(buf) else {
        return Parse::NeedMore;
    };
    let head = buf.get(..end).unwrap_or(b"");
    match parse_head_fast(head, request, max_headers) {
        Some(value) => Parse::Done {
            value,
            consumed: end,
        },
        None => match parse_head_lenient(head, request, max_headers) {
            Some(value) => Parse::Done {
                value,
                consumed: end,
            },
            None => Parse::Fail(HeadError::BadStartLine),
        },
    }
}

/// The strict httparse path. `None` means "let the lenient parser decide".
fn parse_head_fast(head: &[u8], request: bool, max_headers: usize) -> Option<Head> {
    let mut storage = [httparse::EMPTY_HEADER; FAST_PATH_HEADERS];
    let mut anomalies = Vec::new();
    let (start, fields): (StartLine, &[httparse::Header<'_>]) = if request {
        let mut req = httparse::Request::new(&mut storage);
        if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let line = RequestLine {
            method: req.method?.to_owned(),
            uri: req.path?.to_owned(),
            version: version_of(req.version),
            simple: false,
            anomalies: Vec::new(),
        };
        (StartLine::Request(line), req.headers)
    } else {
        let mut resp = httparse::Response::new(&mut storage);
        if !matches!(resp.parse(head), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let line = StatusLine {
            version: version_of(resp.version),
            // httparse takes any three digits; codes below 100 go to the lenient path, which
            // flags them.
            status: resp.code.filter(|c| *c >= 100)?,
            reason: resp.reason.unwrap_or("").to_owned(),
            anomalies: Vec::new(),
        };
        (StartLine::Status(line), resp.headers)
    };
    let pairs = || fields.iter().map(|h| (h.name.as_bytes(), h.value));
    let framing = collect_framing(pairs(), &mut anomalies);
    let headers = push_fields(pairs(), max_headers, head.len(), &mut anomalies);
    Some(Head {
        start,
        headers,
        framing,
        anomalies,
    })
}

/// The lenient path: accepts everything a tolerant server might, and flags it.
pub fn parse_head_lenient(head: &[u8], request: bool, max_headers: usize) -> Option<Head> {
    let first_end = memchr::memchr(b'\n', head).map_or(head.len(), |i| i + 1);
    let (first, block) = (head.get(..first_end)?, head.get(first_end..)?);
    let mut anomalies = Vec::new();
    let start = if request {
        let mut line = parse_request_line(first)?;
        anomalies.append(&mut line.anomalies);
        StartLine::Request(line)
    } else {
        let mut line = parse_status_line(first)?;
        anomalies.append(&mut line.anomalies);
        StartLine::Status(line)
    };
    let fields = lenient_fields(block, &mut anomalies);
    let pairs = || fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
    let framing = collect_framing(pairs(), &mut anomalies);
    let headers = push_fields(pairs(), max_headers, block.len(), &mut anomalies);
    Some(Head {
        start,
        headers,
        framing,
        anomalies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req_head(s: &str) -> Head {
        match parse_head(s.as_bytes(), true, 256) {
            Parse::Done { value, consumed } => {
                assert_eq!(consumed, s.len());
                value
            }
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn strict_request_goes_through_fast_path_without_anomalies() {
        let h = req_head("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n");
        let StartLine::Request(r) = &h.start else {
            panic!()
        };
        assert_eq!((r.method.as_str(), r.uri.as_str()), ("GET", "/a?b=1"));
        assert_eq!(r.version, HttpVersion::Http11);
        assert_eq!(h.framing.content_length, ContentLength::Valid(5));
        assert_eq!(h.headers.get("host"), Some(&b"x"[..]));
        assert!(h.anomalies.is_empty(), "{:?}", h.anomalies);
    }

    #[test]
    fn lenient_request_lines_are_parsed_and_flagged() {
        let cases: &[(&str, &str, &str, HttpVersion, &[HttpAnomaly])] = &[
            (
                "GET  /x  HTTP/1.1",
                "GET",
                "/x",
                HttpVersion::Http11,
                &[HttpAnomaly::InvalidRequestLine],
            ),
            (
                "GET /x HTTP/1.2",
                "GET",
                "/x",
                HttpVersion::Http11,
                &[HttpAnomaly::NonstandardVersion],
            ),
            (
                "get /x http/1.0",
                "get",
                "/x",
                HttpVersion::Http10,
                &[HttpAnomaly::NonstandardVersion],
            ),
            (
                "GET /a b HTTP/1.1",
                "GET",
                "/a b",
                HttpVersion::Http11,
                &[HttpAnomaly::InvalidRequestLine],
            ),
            (
                "GET /caf\u{e9} HTTP/1.1",
                "GET",
                "/caf\u{e9}",
                HttpVersion::Http11,
                &[HttpAnomaly::InvalidRequestLine],
            ),
            (
                "GET /x",
                "GET",
                "/x",
                HttpVersion::Http09,
                &[HttpAnomaly::Http09],
            ),
            (
                "OPTIONS HTTP/1.1",
                "OPTIONS",
                "",
                HttpVersion::Http11,
                &[HttpAnomaly::InvalidRequestLine],
            ),
            (
                "GET / HTTP/1.",
                "GET",
                "/",
                HttpVersion::Http11,
                &[HttpAnomaly::NonstandardVersion],
            ),
            (
                "CCM_POST /HTTP/1.1",
                "CCM_POST",
                "/HTTP/1.1",
                HttpVersion::Http09,
                &[HttpAnomaly::Http09],
            ),
            (
                "CCM_POST /x HTTP/1.1",
                "CCM_POST",
                "/x",
                HttpVersion::Http11,
                &[],
            ),
        ];
        for (line, m, u, v, a) in cases {
            let r = parse_request_line(line.as_bytes()).unwrap_or_else(|| panic!("{line}"));
            assert_eq!(
                (r.method.as_str(), r.uri.as_str(), r.version),
                (*m, *u, *v),
                "{line}"
            );
            assert_eq!(r.anomalies.as_slice(), *a, "{line}");
        }
    }

    #[test]
    fn non_requests_are_rejected() {
        for line in [
            "",
            "hello world",
            "GET",
            "OPTIONSHTTP/1.1",
            "get /x",
            "\x16\x03\x01\x02\x00",
            "HTTP/1.1 200 OK",
            "G\0T /x HTTP/1.1",
        ] {
            assert!(parse_request_line(line.as_bytes()).is_none(), "{line:?}");
        }
        assert!(!is_full_request_line(b"GET /x\r\n"));
        assert!(is_full_request_line(b"GET /x HTTP/1.1\r\n"));
    }

    #[test]
    fn status_lines_strict_and_lenient() {
        let s = parse_status_line(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!((s.status, s.reason.as_str()), (200, "OK"));
        assert!(s.anomalies.is_empty());
        let s = parse_status_line(b"HTTP/1.0 404\n").unwrap();
        assert_eq!((s.status, s.version), (404, HttpVersion::Http10));
        let s = parse_status_line(b"http/1.1  500  Oops").unwrap();
        assert_eq!(s.status, 500);
        assert_eq!(
            s.anomalies,
            vec![
                HttpAnomaly::NonstandardVersion,
                HttpAnomaly::InvalidStatusLine
            ]
        );
        // Every line that starts with `HTTP/` is a status line, read as lenient clients do.
        let lenient: &[(&[u8], u16, HttpVersion, &str)] = &[
            (b"HTTP/1.1 20 OK", 20, HttpVersion::Http11, "OK"),
            (b"HTTP/1.1 2000 OK", 2000, HttpVersion::Http11, "OK"),
            (b"HTTP/1.1 0204 x", 204, HttpVersion::Http11, "x"),
            (b"HTTP/1.1 099 x", 99, HttpVersion::Http11, "x"),
            (b"HTTP/1.1 000 ok", 0, HttpVersion::Http11, "ok"),
            (b"HTTP/1.1 20x ok", 0, HttpVersion::Http11, "20x ok"),
            (b"HTTP/1.0 2XX OK", 0, HttpVersion::Http10, "2XX OK"),
            (b"HTTP/1.1 2 ok", 2, HttpVersion::Http11, "ok"),
            (b"HTTP/1.1 abc", 0, HttpVersion::Http11, "abc"),
            (b"HTTP/1.1", 0, HttpVersion::Http11, ""),
            (b"HTTP/1.1foobar", 0, HttpVersion::Http11, ""),
            (b"HTTP/x 200", 200, HttpVersion::Http10, ""),
            (b"HTTP/ 200", 200, HttpVersion::Http10, ""),
            (b"HTTP/!.4 206 t", 206, HttpVersion::Http10, "t"),
            (b"HTTP/1.01 200 ok", 200, HttpVersion::Http10, "ok"),
            (b"HTTP/1\x00.1 200 ok", 200, HttpVersion::Http11, "ok"),
            (b"HTTP/1.10 200 ok", 200, HttpVersion::Http11, "ok"),
            (b"HTTP/2.0 200 ok", 200, HttpVersion::Http11, "ok"),
            (b"HTTP/0.9 200 ok", 200, HttpVersion::Http09, "ok"),
            (b"HTTP/1.1\r 200 ok", 200, HttpVersion::Http11, "ok"),
            (b" HTTP/1.1 200 ok", 200, HttpVersion::Http11, "ok"),
            (b"\x00HTTP/1.1 200 ok", 200, HttpVersion::Http11, "ok"),
            (b"\r\rHTTP/1.1 200 ok\r\n", 200, HttpVersion::Http11, "ok"),
        ];
        for (line, status, version, reason) in lenient {
            let shown = String::from_utf8_lossy(line);
            let s = parse_status_line(line).unwrap_or_else(|| panic!("{shown:?}"));
            assert_eq!(
                (s.status, s.version, s.reason.as_str()),
                (*status, *version, *reason),
                "{shown:?}"
            );
            assert!(
                s.anomalies.contains(&HttpAnomaly::InvalidStatusLine)
                    || s.anomalies.contains(&HttpAnomaly::NonstandardVersion),
                "{shown:?}: {:?}",
                s.anomalies
            );
        }
        // A code below 100 is flagged on the full-head path too (httparse takes any 3 digits).
        match parse_head(b"HTTP/1.1 000 ok\r\n\r\n", false, 8) {
            Parse::Done { value, .. } => {
                assert!(value.anomalies.contains(&HttpAnomaly::InvalidStatusLine))
            }
            other => panic!("{other:?}"),
        }
        // Inside unknown bytes only the conventional form ends a resync.
        assert!(is_resync_status_line(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(is_resync_status_line(b"http/1.0 200\n"));
        for line in [
            "HTTP/1.1 is a protocol",
            " HTTP/1.1 200 ok",
            "HTTP/1.1 2000 ok",
            "HTTP/1.1",
        ] {
            assert!(!is_resync_status_line(line.as_bytes()), "{line}");
        }
        for bad in [
            "FTP 200",
            "HTTX/1.1 200 OK",
            "",
            "GET / HTTP/1.1",
            "xHTTP/1.1 200 ok",
        ] {
            assert!(parse_status_line(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn request_targets_keep_invalid_utf8_bytes_percent_encoded() {
        let r = parse_request_line(b"ETA unknown/\xd9ccIOST / HTTP/1.1\r\n").unwrap();
        assert_eq!(
            (r.method.as_str(), r.uri.as_str()),
            ("ETA", "unknown/%D9ccIOST /")
        );
        assert!(r.anomalies.contains(&HttpAnomaly::UriInvalidUtf8));
        // Valid UTF-8 stays as sent; only the bytes of a broken sequence are encoded.
        assert_eq!(
            target_text("/caf\u{e9}".as_bytes()),
            ("/caf\u{e9}".to_string(), false)
        );
        assert_eq!(
            target_text(b"/a\xe2\x82/\xff\xfe%41"),
            ("/a%E2%82/%FF%FE%41".to_string(), true)
        );
        assert_eq!(target_text(b"\xc3"), ("%C3".to_string(), true));
    }

    #[test]
    fn http09_needs_a_three_letter_method_and_a_target() {
        for line in ["T /zeek.html", "GE /x", "GET ", "GET"] {
            assert!(parse_request_line(line.as_bytes()).is_none(), "{line}");
        }
        let r = parse_request_line(b"PUT /x").unwrap();
        assert!(r.simple);
    }

    #[test]
    fn header_field_detection_for_http09_heads() {
        assert!(looks_like_header_field(b"Host: www.google.com\r\n"));
        assert!(looks_like_header_field(b"X-A:"));
        for line in ["GET /x HTTP/1.1", "Host www", ": v", "Bad Name: v", "\r\n"] {
            assert!(!looks_like_header_field(line.as_bytes()), "{line}");
        }
    }

    #[test]
    fn chunk_sizes() {
        let ok: &[(&[u8], u64, bool)] = &[
            (b"0", 0, false),
            (b"1a", 26, false),
            (b"1A;name=value", 26, false),
            (b"  5  ; x", 5, false),
            (b"\t5\t", 5, false),
            (b"00000000000000000000000f", 15, false),
            (b"FFFFFFFFFFFFFFFF", u64::MAX, false),
            // What Firefox (`sscanf("%x")`) and curl read from lines outside the grammar.
            (b"fx", 15, true),
            (b"f,", 15, true),
            (b"f\x0b", 15, true),
            (b"\x0bf", 15, true),
            (b"\x0cf", 15, true),
            (b"\r5", 5, true),
            (b"5 5", 5, true),
            (b"0x5", 5, true),
            (b"0x", 0, true),
        ];
        for (line, size, junk) in ok {
            assert_eq!(
                parse_chunk_size_line(line),
                Ok(ChunkSize {
                    size: *size,
                    junk: *junk
                }),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let bad: &[(&str, ChunkSizeError)] = &[
            ("FFFFFFFFFFFFFFFFF", ChunkSizeError::Overflow),
            ("10000000000000000", ChunkSizeError::Overflow),
            ("-1", ChunkSizeError::Negative),
            ("", ChunkSizeError::Invalid),
            ("xyz", ChunkSizeError::Invalid),
            (";ext", ChunkSizeError::Invalid),
        ];
        for (line, e) in bad {
            assert_eq!(parse_chunk_size_line(line.as_bytes()), Err(*e), "{line}");
        }
        assert_eq!(parse_chunk_size(b"a\r"), Parse::NeedMore);
        assert_eq!(
            parse_chunk_size(b"a\r\nrest"),
            Parse::Done {
                value: ChunkSize {
                    size: 10,
                    junk: false
                },
                consumed: 3
            }
        );
    }

    #[test]
    fn head_end_detection() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(find_head_end(b"\r\n"), None);
    }
}

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

/// Strips a trailing `\n` and then a trailing `\r`, so both CRLF and bare LF endings work.
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
/// `HTTP/1.1` is flagged; `HTTP/0.x` is 0.9, and every other version after an `HTTP/` prefix
/// (`HTTP/1.2`, `HTTP/2.0`, even `HTTP/1.`) is framed like 1.1, as lenient servers do.
fn parse_version(tok: &[u8], anomalies: &mut Vec<HttpAnomaly>) -> Option<HttpVersion> {
    let (prefix, num) = (tok.get(..5)?, tok.get(5..)?);
    if !prefix.eq_ignore_ascii_case(b"HTTP/") || num.is_empty() {
        return None;
    }
    let (version, standard) = match num {
        b"1.1" => (HttpVersion::Http11, true),
        b"1.0" => (HttpVersion::Http10, true),
        [b'0', ..] => (HttpVersion::Http09, false),
        _ if num.iter().all(|b| b.is_ascii_digit() || *b == b'.') => (HttpVersion::Http11, false),
        _ => return None,
    };
    if !standard || prefix != b"HTTP/" {
        anomalies.push(HttpAnomaly::NonstandardVersion);
    }
    Some(version)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses a request line leniently (line ending optional). `None` when the line does not look
/// like a request at all. A method followed by a target starting with `/` and no version is an
/// HTTP/0.9 simple request when the method is upper-case letters, which keeps free text out.
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
            match parse_version(tok, &mut anomalies) {
                Some(v) => (trim_ws(rest.get(..i)?), Some(v)),
                None => (rest, None),
            }
        }
        // `OPTIONS HTTP/1.1`: a version and no target (Zeek logs it with an empty URI).
        None => match parse_version(rest, &mut anomalies) {
            Some(v) => (&b""[..], Some(v)),
            None => (rest, None),
        },
    };
    let simple = version.is_none();
    if simple {
        let plain_target = target.first() == Some(&b'/') && !target.iter().any(|b| is_ws(*b));
        let method_ok = method
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
    Some(RequestLine {
        method: lossy(method),
        uri: lossy(target),
        version: version.unwrap_or(HttpVersion::Http09),
        simple,
        anomalies,
    })
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
pub fn parse_status_line(line: &[u8]) -> Option<StatusLine> {
    let line = strip_eol(line);
    let mut anomalies = Vec::new();
    let vlen = line.iter().position(|b| is_ws(*b)).unwrap_or(line.len());
    let version = parse_version(line.get(..vlen)?, &mut anomalies)?;
    // `rest` keeps the separator so odd spacing can be told apart from one SP.
    let rest = line.get(vlen..).unwrap_or(b"");
    let rest_trim = trim_ws(rest);
    let code_len = rest_trim.iter().take_while(|b| b.is_ascii_digit()).count();
    if code_len != 3 {
        return None;
    }
    let code = rest_trim.get(..3)?;
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if status < 100 {
        return None;
    }
    let after = rest_trim.get(3..)?;
    if !after.is_empty() && !after.first().is_some_and(|b| is_ws(*b)) {
        return None;
    }
    if rest.first() != Some(&b' ') || rest.get(1).is_some_and(|b| is_ws(*b)) {
        anomalies.push(HttpAnomaly::InvalidStatusLine);
    }
    Some(StatusLine {
        version,
        status,
        reason: lossy(trim_ws(after)),
        anomalies,
    })
}

/// Does `buf` start with something that could become a status line (`HTTP/` prefix so far)?
pub fn may_start_status_line(buf: &[u8]) -> bool {
    let n = buf.len().min(5);
    match (buf.get(..n), b"HTTP/".get(..n)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// Parses a chunk-size line (ending optional): hex digits, optional whitespace, optional
/// `;extensions`. Leading zeros are fine; 17 significant hex digits are an overflow.
pub fn parse_chunk_size_line(line: &[u8]) -> Result<u64, ChunkSizeError> {
    let line = trim_ws(strip_eol(line));
    let size_part = match line.iter().position(|b| *b == b';') {
        Some(i) => trim_ws(line.get(..i).unwrap_or(b"")),
        None => line,
    };
    if size_part.first() == Some(&b'-') {
        return Err(ChunkSizeError::Negative);
    }
    if size_part.is_empty() {
        return Err(ChunkSizeError::Invalid);
    }
    let mut size: u64 = 0;
    for b in size_part {
        let d = match *b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ChunkSizeError::Invalid),
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or(ChunkSizeError::Overflow)?;
    }
    Ok(size)
}

/// Incremental form of [`parse_chunk_size_line`]: finds the line ending first.
pub fn parse_chunk_size(buf: &[u8]) -> Parse<u64, ChunkSizeError> {
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
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
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
            status: resp.code?,
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
        for bad in [
            "HTTP/1.1 20 OK",
            "HTTP/1.1 2000 OK",
            "HTTP/1.1 abc",
            "HTTP/x 200",
            "HTTP/ 200",
            "HTTP/1.1 099 x",
            "FTP 200",
        ] {
            assert!(parse_status_line(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn content_length_variants() {
        let cases: &[(&str, ContentLength, &[HttpAnomaly])] = &[
            ("Content-Length: 7\r\n", ContentLength::Valid(7), &[]),
            (
                "Content-Length: 7\r\nContent-Length: 7\r\n",
                ContentLength::Valid(7),
                &[HttpAnomaly::DuplicateContentLength],
            ),
            (
                "Content-Length: 7, 7\r\n",
                ContentLength::Valid(7),
                &[HttpAnomaly::DuplicateContentLength],
            ),
            (
                "Content-Length: 7\r\nContent-Length: 8\r\n",
                ContentLength::Valid(7),
                &[HttpAnomaly::ConflictingContentLength],
            ),
            (
                "Content-Length: -1\r\n",
                ContentLength::Invalid,
                &[HttpAnomaly::InvalidContentLength],
            ),
            (
                "Content-Length: 18446744073709551616\r\n",
                ContentLength::Invalid,
                &[HttpAnomaly::InvalidContentLength],
            ),
            (
                "Content-Length: 18446744073709551615\r\n",
                ContentLength::Valid(u64::MAX),
                &[],
            ),
        ];
        for (fields, cl, anomalies) in cases {
            let h = req_head(&format!("POST / HTTP/1.1\r\n{fields}\r\n"));
            assert_eq!(h.framing.content_length, *cl, "{fields}");
            assert_eq!(h.anomalies.as_slice(), *anomalies, "{fields}");
        }
    }

    #[test]
    fn transfer_encoding_variants() {
        let h =
            req_head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert!(h.framing.te_chunked);
        assert_eq!(
            h.anomalies,
            vec![HttpAnomaly::TransferEncodingWithContentLength]
        );
        let h = req_head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, foo\r\n\r\n");
        assert!(!h.framing.te_chunked);
        assert_eq!(h.anomalies, vec![HttpAnomaly::UnknownTransferCoding]);
        let h = req_head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(h.framing.te_chunked);
        assert_eq!(h.framing.te_coding, Coding::Gzip);
        assert!(h.anomalies.is_empty());
        let h = req_head("POST / HTTP/1.1\r\nContent-Encoding: br\r\n\r\n");
        assert_eq!(h.framing.content_encoding, Coding::Unsupported);
        let h = req_head("POST / HTTP/1.1\r\nContent-Encoding: x-gzip\r\n\r\n");
        assert_eq!(h.framing.content_encoding, Coding::Gzip);
    }

    #[test]
    fn lenient_headers_fold_and_odd_names() {
        let h = req_head("GET / HTTP/1.1\nX-A: one\n  two\nBad Name: v\nnocolon\n\n");
        assert_eq!(h.headers.get("x-a"), Some(&b"one two"[..]));
        assert_eq!(h.headers.get("bad name"), Some(&b"v"[..]));
        assert_eq!(h.headers.len(), 2);
        assert!(h.anomalies.contains(&HttpAnomaly::ObsFold));
        assert!(h.anomalies.contains(&HttpAnomaly::InvalidHeaderLine));
    }

    #[test]
    fn max_headers_keeps_first_fields_but_frames_from_all() {
        let mut s = String::from("POST / HTTP/1.1\r\n");
        for i in 0..300 {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("Content-Length: 4\r\n\r\n");
        let h = req_head(&s);
        assert_eq!(h.headers.len(), 256);
        assert_eq!(h.framing.content_length, ContentLength::Valid(4));
        assert_eq!(h.anomalies, vec![HttpAnomaly::TooManyHeaders]);
    }

    #[test]
    fn head_needs_blank_line_and_fails_on_junk() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n", true, 8),
            Parse::NeedMore
        );
        assert_eq!(
            parse_head(b"\x00\x01junk\r\n\r\n", true, 8),
            Parse::Fail(HeadError::BadStartLine)
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\n\r\n", false, 8),
            Parse::Fail(HeadError::BadStartLine)
        );
        assert!(matches!(
            parse_head(b"HTTP/1.1 204 No Content\n\n", false, 8),
            Parse::Done { consumed: 25, .. }
        ));
    }

    #[test]
    fn chunk_sizes() {
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("1a", 26),
            ("1A;name=value", 26),
            ("  5  ; x", 5),
            ("00000000000000000000000f", 15),
            ("FFFFFFFFFFFFFFFF", u64::MAX),
        ];
        for (line, v) in ok {
            assert_eq!(parse_chunk_size_line(line.as_bytes()), Ok(*v), "{line}");
        }
        let bad: &[(&str, ChunkSizeError)] = &[
            ("FFFFFFFFFFFFFFFFF", ChunkSizeError::Overflow),
            ("10000000000000000", ChunkSizeError::Overflow),
            ("-1", ChunkSizeError::Negative),
            ("", ChunkSizeError::Invalid),
            ("xyz", ChunkSizeError::Invalid),
            ("5 5", ChunkSizeError::Invalid),
            ("0x5", ChunkSizeError::Invalid),
        ];
        for (line, e) in bad {
            assert_eq!(parse_chunk_size_line(line.as_bytes()), Err(*e), "{line}");
        }
        assert_eq!(parse_chunk_size(b"a\r"), Parse::NeedMore);
        assert_eq!(
            parse_chunk_size(b"a\r\nrest"),
            Parse::Done {
                value: 10,
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

//! Transcript tests for the HTTP/1.x parser.
//!
//! A transcript (`tests/http/*.txt`) is a conversation written as text, followed by the
//! transactions it must produce. One helper, [`check`], runs a file: once as written, once with
//! every data section split at every byte boundary, once byte by byte. All runs must give the same
//! transactions and the same counters, and these must match the `=== expect` section.
//!
//! Format:
//! - `# ...` is a comment.
//! - `>>>` starts client bytes, `<<<` starts server bytes. The lines below form one escaped
//!   string: the file's own line breaks are dropped, so bytes end a line only where `\n` is
//!   written. Escapes: `\r \n \t \0 \\ \xHH`, and `\s` for a space at the end of a file line.
//! - `~~~ gap N [client|server]`: N bytes lost (default: the direction of the current section).
//! - `~~~ fin client|server`: that side closed.
//! - `~~~ body CODING TEXT`: append `Content-Length: N\r\n\r\n` and TEXT encoded with CODING
//!   (`plain`, `gzip`, `zlib`, `deflate` = raw deflate) to the current section. TEXT is escaped;
//!   `zeros:N` means N zero bytes (compressed without ever being held whole).
//! - `~~~ chunk CODING TEXT`: like `body` but without the Content-Length header (for chunked).
//! - `~~~ repeat N TEXT`: append TEXT N times.
//! - `~~~ config field=value`: set an `HttpConfig` field before the conversation starts.
//! - `~~~ flag client|server NAME`: attach an outside flag (as `HttpConn::on_flag`).
//! - `=== expect`: one line per transaction:
//!   `depth method uri version -> status version req_len/req_wire resp_len/resp_wire [flags]`
//!   with `-` for an absent side, then optional `req="…"` / `resp="…"` previews of kept bodies
//!   (first 24 bytes) and `interim=100,102`. A last line `stats k=v ...` lists the non-zero
//!   counters and anomaly counts.
//!
//! Set `APITAP_UPDATE_EXPECT=1` to rewrite the expect sections from the actual output; review
//! the diff by hand before committing.

use apitap::common::{Direction, Timestamp};
use apitap::http::{HttpConfig, HttpConn, HttpStats};
use apitap::transaction::{Body, Transaction};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
enum Event {
    Data(Direction, Vec<u8>),
    Gap(Direction, u64),
    Fin(Direction),
    Flag(Direction, &'static str),
}

struct Transcript {
    cfg: HttpConfig,
    events: Vec<Event>,
    expect: Vec<String>,
    /// The file text up to and including the `=== expect` line.
    head_text: String,
}

fn unescape(s: &str, path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b
            .get(i + 1)
            .unwrap_or_else(|| panic!("{}: trailing backslash", path.display()));
        i += 2;
        match c {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b's' => out.push(b' '),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = s
                    .get(i..i + 2)
                    .unwrap_or_else(|| panic!("{}: bad \\x", path.display()));
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            other => panic!("{}: unknown escape \\{}", path.display(), other as char),
        }
    }
    out
}

/// Escapes bytes for expect lines: printable ASCII as is, the rest as `\xHH`.
fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b' ' => s.push_str("\\s"),
            0x21..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}

fn encode(coding: &str, text: &str, path: &Path) -> Vec<u8> {
    // `zeros:N` is streamed through the encoder 1 MiB at a time.
    let feed = |w: &mut dyn Write| {
        if let Some(n) = text.strip_prefix("zeros:") {
            let mut left: u64 = n.parse().expect("zeros:N");
            let block = vec![0u8; 1 << 20];
            while left > 0 {
                let k = left.min(block.len() as u64) as usize;
                w.write_all(&block[..k]).unwrap();
                left -= k as u64;
            }
        } else {
            w.write_all(&unescape(text, path)).unwrap();
        }
    };
    match coding {
        "plain" => {
            let mut v = Vec::new();
            feed(&mut v);
            v
        }
        "gzip" => {
            let mut e = GzEncoder::new(Vec::new(), Compression::best());
            feed(&mut e);
            e.finish().unwrap()
        }
        "zlib" => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
            feed(&mut e);
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
            feed(&mut e);
            e.finish().unwrap()
        }
        other => panic!("{}: unknown coding {other}", path.display()),
    }
}

fn set_config(cfg: &mut HttpConfig, kv: &str, path: &Path) {
    let (k, v) = kv
        .split_once('=')
        .unwrap_or_else(|| panic!("{}: config k=v", path.display()));
    let n: u64 = v.trim().parse().expect("config value");
    match k.trim() {
        "body_limit_bytes" => cfg.body_limit_bytes = n as usize,
        "max_header_bytes" => cfg.max_header_bytes = n as usize,
        "max_headers" => cfg.max_headers = n as usize,
        "max_pending_requests" => cfg.max_pending_requests = n as usize,
        "max_decompressed_bytes" => cfg.max_decompressed_bytes = n,
        "max_decompression_ratio" => cfg.max_decompression_ratio = n,
        "min_ratio_check_bytes" => cfg.min_ratio_check_bytes = n,
        "max_chunk_line_bytes" => cfg.max_chunk_line_bytes = n as usize,
        "max_interim_responses" => cfg.max_interim_responses = n as usize,
        "max_tunnel_wait_bytes" => cfg.max_tunnel_wait_bytes = n as usize,
        "max_socks_handshake_bytes" => cfg.max_socks_handshake_bytes = n as usize,
        other => panic!("{}: unknown config field {other}", path.display()),
    }
}

fn side(word: &str, path: &Path) -> Direction {
    match word {
        "client" => Direction::ToServer,
        "server" => Direction::ToClient,
        other => panic!("{}: expected client|server, got {other}", path.display()),
    }
}

fn parse(path: &Path) -> Transcript {
    let text = std::fs::read_to_string(path).unwrap();
    let mut cfg = HttpConfig::default();
    let mut events = Vec::new();
    let mut cur: Option<(Direction, Vec<u8>)> = None;
    let mut expect = Vec::new();
    let mut head_text = String::new();
    let mut in_expect = false;
    fn flush(cur: &mut Option<(Direction, Vec<u8>)>, events: &mut Vec<Event>) {
        if let Some((d, bytes)) = cur.take() {
            if !bytes.is_empty() {
                events.push(Event::Data(d, bytes));
            }
        }
    }
    for line in text.lines() {
        if in_expect {
            if !line.trim().is_empty() {
                expect.push(line.trim_end().to_string());
            }
            continue;
        }
        head_text.push_str(line);
        head_text.push('\n');
        if line.starts_with('#') {
            continue;
        }
        if line == "=== expect" {
            flush(&mut cur, &mut events);
            in_expect = true;
        } else if line == ">>>" || line == "<<<" {
            flush(&mut cur, &mut events);
            let d = if line == ">>>" {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            cur = Some((d, Vec::new()));
        } else if let Some(rest) = line.strip_prefix("~~~ ") {
            let words: Vec<&str> = rest.splitn(3, ' ').collect();
            let here = cur.as_ref().map(|(d, _)| *d);
            match words.as_slice() {
                ["gap", n] | ["gap", n, _] => {
                    let d = match words.get(2) {
                        Some(w) => side(w, path),
                        None => here.expect("gap outside a section needs a side"),
                    };
                    flush(&mut cur, &mut events);
                    events.push(Event::Gap(d, n.parse().expect("gap N")));
                    cur = Some((here.unwrap_or(d), Vec::new()));
                }
                ["fin", w] => {
                    flush(&mut cur, &mut events);
                    events.push(Event::Fin(side(w, path)));
                    cur = here.map(|d| (d, Vec::new()));
                }
                ["flag", w, name] => {
                    flush(&mut cur, &mut events);
                    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
                    events.push(Event::Flag(side(w, path), name));
                    cur = here.map(|d| (d, Vec::new()));
                }
                ["config", kv] => set_config(&mut cfg, kv, path),
                ["body", coding, t] | ["chunk", coding, t] => {
                    let enc = encode(coding, t, path);
                    let (_, bytes) = cur.as_mut().expect("body directive outside a section");
                    if words[0] == "body" {
                        bytes.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", enc.len()).as_bytes(),
                        );
                    } else {
                        bytes.extend_from_slice(format!("{:x}\r\n", enc.len()).as_bytes());
                    }
                    bytes.extend_from_slice(&enc);
                    if words[0] == "chunk" {
                        bytes.extend_from_slice(b"\r\n");
                    }
                }
                ["repeat", n, t] => {
                    let piece = unescape(t, path);
                    let n: usize = n.parse().expect("repeat N");
                    let (_, bytes) = cur.as_mut().expect("repeat directive outside a section");
                    for _ in 0..n {
                        bytes.extend_from_slice(&piece);
                    }
                }
                _ => panic!("{}: unknown directive {line:?}", path.display()),
            }
        } else {
            let (_, bytes) = cur
                .as_mut()
                .unwrap_or_else(|| panic!("{}: bytes outside a section: {line:?}", path.display()));
            bytes.extend_from_slice(&unescape(line, path));
        }
    }
    flush(&mut cur, &mut events);
    assert!(in_expect, "{}: no `=== expect` section", path.display());
    Transcript {
        cfg,
        events,
        expect,
        head_text,
    }
}

/// Runs the events; `split` cuts each data section into the pieces it returns.
fn run(t: &Transcript, split: &dyn Fn(&[u8]) -> Vec<usize>) -> (Vec<Transaction>, HttpStats) {
    let mut conn = HttpConn::new();
    let mut stats = HttpStats::default();
    let mut out = Vec::new();
    let mut i = 0u64;
    for e in &t.events {
        i += 1;
        let ts = Timestamp::from_secs_nanos(i as i64, 0);
        match e {
            Event::Data(d, bytes) => {
                let mut start = 0;
                for cut in split(bytes).into_iter().chain([bytes.len()]) {
                    if cut > start && cut <= bytes.len() {
                        conn.on_data(*d, &bytes[start..cut], ts, &t.cfg, &mut stats, &mut out);
                        start = cut;
                    }
                }
            }
            Event::Gap(d, n) => conn.on_gap(*d, *n, ts, &t.cfg, &mut stats, &mut out),
            Event::Fin(d) => conn.on_fin(*d, ts, &t.cfg, &mut stats, &mut out),
            Event::Flag(d, name) => conn.on_flag(*d, name),
        }
    }
    conn.finish(
        Timestamp::from_secs_nanos(i as i64 + 1, 0),
        &t.cfg,
        &mut stats,
        &mut out,
    );
    (out, stats)
}

fn lens(b: &Body) -> String {
    format!("{}/{}", b.len, b.wire_len)
}

fn preview(b: &Body) -> String {
    escape(&b.data[..b.data.len().min(24)])
}

/// One compact line per transaction.
fn describe(t: &Transaction) -> String {
    let mut s = format!("{} ", t.depth);
    match &t.request {
        Some(q) => s.push_str(&format!(
            "{} {} {} ",
            escape(q.method.as_bytes()),
            escape(q.uri.as_bytes()),
            q.version.as_str()
        )),
        None => s.push_str("- - - "),
    }
    s.push_str("-> ");
    match &t.response {
        Some(r) => s.push_str(&format!("{} {} ", r.status, r.version.as_str())),
        None => s.push_str("- - "),
    }
    s.push_str(&t.request.as_ref().map_or("-".into(), |q| lens(&q.body)));
    s.push(' ');
    s.push_str(&t.response.as_ref().map_or("-".into(), |r| lens(&r.body)));
    if !t.flags.is_empty() {
        s.push_str(&format!(" [{}]", t.flags.join(" ")));
    }
    if let Some(q) = t.request.as_ref().filter(|q| !q.body.data.is_empty()) {
        s.push_str(&format!(" req=\"{}\"", preview(&q.body)));
    }
    if let Some(r) = &t.response {
        if !r.body.data.is_empty() {
            s.push_str(&format!(" resp=\"{}\"", preview(&r.body)));
        }
        if !r.interim.is_empty() {
            let codes: Vec<String> = r.interim.iter().map(u16::to_string).collect();
            s.push_str(&format!(" interim={}", codes.join(",")));
        }
    }
    s
}

/// The non-zero counters, as one line.
fn describe_stats(s: &HttpStats) -> String {
    let mut line = String::from("stats");
    for (k, v) in [
        ("requests", s.requests),
        ("responses", s.responses),
        ("interim", s.interim_responses),
        ("transactions", s.transactions),
        ("gaps", s.gaps),
        ("gap_bytes", s.gap_bytes),
        ("resyncs", s.resyncs),
        ("junk_bytes", s.junk_bytes),
        ("tunnels", s.tunnels),
        ("tunnel_bytes", s.tunnel_bytes),
        ("bodies_truncated", s.bodies_truncated),
        ("socks_handshakes", s.socks_handshakes),
        ("socks_abandoned", s.socks_abandoned),
    ]
    .into_iter()
    .chain(s.anomaly_counts())
    {
        if v != 0 {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line
}

/// Runs one transcript file: as written, split at every boundary, byte by byte.
fn check(path: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let t = parse(&path);
    let (txs, stats) = run(&t, &|_| Vec::new());
    let mut actual: Vec<String> = txs.iter().map(describe).collect();
    actual.push(describe_stats(&stats));

    let longest = t
        .events
        .iter()
        .map(|e| match e {
            Event::Data(_, b) => b.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    // Every boundary for small transcripts; a spread of boundaries for big ones.
    let cuts: Vec<usize> = if longest <= 8192 {
        (1..longest).collect()
    } else {
        (1..longest)
            .step_by(longest / 97 + 1)
            .chain([longest - 1])
            .collect()
    };
    for cut in cuts {
        let (txs2, stats2) = run(&t, &|_| vec![cut]);
        assert_eq!(
            txs2,
            txs,
            "{}: split at byte {cut} changed the transactions",
            path.display()
        );
        assert_eq!(
            stats2,
            stats,
            "{}: split at byte {cut} changed the counters",
            path.display()
        );
    }
    let bytewise = |b: &[u8]| (1..b.len()).collect::<Vec<_>>();
    let (txs3, stats3) = run(&t, &bytewise);
    assert_eq!(
        txs3,
        txs,
        "{}: byte-by-byte replay changed the transactions",
        path.display()
    );
    assert_eq!(
        stats3,
        stats,
        "{}: byte-by-byte replay changed the counters",
        path.display()
    );

    if std::env::var_os("APITAP_UPDATE_EXPECT").is_some() {
        let mut text = t.head_text.clone();
        for l in &actual {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        return;
    }
    if actual != t.expect {
        panic!(
            "{}: transactions differ\n--- expected\n{}\n--- actual\n{}\n",
            path.display(),
            t.expect.join("\n"),
            actual.join("\n")
        );
    }
}

macro_rules! transcripts {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(concat!("tests/http/", stringify!($name), ".txt"));
            }
        )*

        /// Every file in tests/http is listed above, so none is silently skipped.
        #[test]
        fn every_transcript_file_is_listed() {
            let listed: Vec<&str> = vec![$(stringify!($name)),*];
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/http");
            for entry in std::fs::read_dir(dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if let Some(stem) = name.strip_suffix(".txt") {
                    assert!(listed.contains(&stem), "tests/http/{name} is not listed");
                }
            }
        }
    };
}

transcripts!(
    content_length,
    chunked,
    until_close,
    no_body_rules,
    interim_1xx,
    expect_continue,
    pipelining,
    connect_tunnel,
    upgrade_websocket,
    upgrade_refused,
    http09,
    http09_status_reply,
    gzip,
    decompression_guards,
    decompression_cap,
    junk,
    bare_lf,
    lenient_heads,
    gap_in_body,
    gap_resync,
    resync_midline,
    gap_lost_response,
    gap_lost_request,
    gap_other_states,
    framing_anomalies,
    chunk_anomalies,
    response_without_request,
    limits,
    truncated,
    outside_flags,
    pathological,
    http09_headers,
    http09_next_line,
    http09_answered,
    response_before_request_end,
    request_after_server_close,
    chunk_size_lenient,
    te_in_http10,
    status_line_lenient,
    socks5,
    socks4a,
    socks5_login,
    socks_refused,
    socks_lookalike,
    socks_limit,
    resync_status_strict,
);

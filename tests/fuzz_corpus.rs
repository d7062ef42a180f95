//! Replays the fuzz corpora without cargo-fuzz, so CI keeps every fixed crash fixed.
//!
//! Every file under `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` runs through the
//! same harness the fuzz target calls (`apitap::fuzzing`). The regressions are the inputs that
//! crashed a target before a fix; each is named after the bug.
//!
//! The seeds are generated, not hand-made: frames and pcap slices from `captures/`, the HTTP
//! transcripts in `tests/http/` turned into byte scripts, and a few reassembly schedules written
//! here. `seeds_match_their_sources` checks that the committed seeds are what the generator
//! makes today; rewrite them with `APITAP_UPDATE_SEEDS=1 cargo test --test fuzz_corpus`.

use apitap::capture::RawPacket;
use apitap::common::{Direction, Timestamp};
use apitap::fuzzing::{
    encode_http, encode_reassembly, encode_wire, HttpOp, SegOp, Target, HTTP_TIGHT, WIRE_TIGHT,
};
use apitap::wire::{DecodeConfig, Decoded, Decoder};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The seed writer deletes and rewrites `fuzz/seeds`; the replay must not read it meanwhile.
static SEEDS_DIR: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(target, file)` for every file in `<dir>/<target>/`, sorted.
fn corpus_files(dir: &Path) -> Vec<(Target, PathBuf)> {
    let mut files = Vec::new();
    for t in Target::ALL {
        let Ok(entries) = std::fs::read_dir(dir.join(t.name())) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_file() {
                files.push((t, path));
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    files
}

#[test]
fn every_seed_and_regression_replays_cleanly() {
    let _lock = SEEDS_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let mut files = corpus_files(&root().join("fuzz/seeds"));
    let seeds = files.len();
    files.extend(corpus_files(&root().join("fuzz/regressions")));
    assert!(
        seeds >= 40,
        "only {seeds} seeds: run with APITAP_UPDATE_SEEDS=1"
    );
    // Unknown folder names would be silently skipped by `corpus_files`.
    for dir in ["fuzz/seeds", "fuzz/regressions"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap().file_name();
            let name = name.to_string_lossy();
            assert!(
                Target::from_name(&name).is_some(),
                "{dir}/{name}: not a fuzz target"
            );
        }
    }
    let mut failed = Vec::new();
    for (t, path) in &files {
        let data = std::fs::read(path).unwrap();
        if catch_unwind(AssertUnwindSafe(|| t.run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their harness: {failed:#?}"
    );
}

#[test]
fn seeds_match_their_sources() {
    let want = generate_seeds();
    let _lock = SEEDS_DIR.lock().unwrap_or_else(|e| e.into_inner());
    let dir = root().join("fuzz/seeds");
    if std::env::var_os("APITAP_UPDATE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        for ((target, name), bytes) in &want {
            let sub = dir.join(target);
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(name), bytes).unwrap();
        }
    }
    let mut have = BTreeMap::new();
    for (t, path) in corpus_files(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        have.insert((t.name().to_string(), name), std::fs::read(&path).unwrap());
    }
    let stale: BTreeSet<_> = want
        .keys()
        .chain(have.keys())
        .filter(|k| want.get(*k) != have.get(*k))
        .collect();
    assert!(
        stale.is_empty(),
        "seeds differ from what their sources give: {stale:?}; \
         run APITAP_UPDATE_SEEDS=1 cargo test --test fuzz_corpus"
    );
    let total: usize = want.values().map(Vec::len).sum();
    assert!(
        total < 200 * 1024,
        "seeds take {total} bytes, budget 200 KiB"
    );
}

type Seeds = BTreeMap<(String, String), Vec<u8>>;

fn generate_seeds() -> Seeds {
    let mut seeds = Seeds::new();
    let mut add = |t: Target, name: String, bytes: Vec<u8>| {
        seeds.insert((t.name().to_string(), name), bytes);
    };
    let captures = ["basic", "pipelined", "vlan-ipv6", "impaired", "tunnels"];
    for name in captures {
        let path = root().join(format!("captures/api-{name}.pcap"));
        let file = std::fs::read(&path).unwrap();
        let pcap = PcapFile::parse(&file);
        for (i, bytes) in wire_seeds(&pcap).into_iter().enumerate() {
            add(Target::WireDecode, format!("{name}-{i:02}.bin"), bytes);
        }
        for (i, bytes) in pcap_seeds(&pcap, name).into_iter().enumerate() {
            add(Target::PcapEngine, format!("{name}-{i}.pcap"), bytes);
        }
    }
    for (name, bytes) in link_variants() {
        add(Target::WireDecode, name, bytes);
    }
    let mut transcripts: Vec<PathBuf> = std::fs::read_dir(root().join("tests/http"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    transcripts.sort();
    for path in transcripts {
        if let Some(bytes) = transcript_script(&path) {
            let stem = path.file_stem().unwrap().to_string_lossy();
            add(Target::HttpConn, format!("{stem}.bin"), bytes);
        }
    }
    for (name, bytes) in reassembly_seeds() {
        add(Target::Reassembly, name, bytes);
    }
    seeds
}

/// A classic pcap file cut into its header and records (enough of the format for slicing).
struct PcapFile<'a> {
    header: &'a [u8],
    /// Whole records: 16-byte record header plus data.
    records: Vec<&'a [u8]>,
}

impl<'a> PcapFile<'a> {
    fn parse(file: &'a [u8]) -> Self {
        assert_eq!(
            &file[..4],
            &[0x4d, 0x3c, 0xb2, 0xa1],
            "bundled captures are LE ns pcap"
        );
        let mut records = Vec::new();
        let mut at = 24;
        while at + 16 <= file.len() {
            let caplen = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            records.push(&file[at..at + 16 + caplen]);
            at += 16 + caplen;
        }
        PcapFile {
            header: &file[..24],
            records,
        }
    }

    fn packet(record: &[u8]) -> (Timestamp, &[u8], u32) {
        let word = |i: usize| u32::from_le_bytes(record[i..i + 4].try_into().unwrap());
        let ts = Timestamp::from_secs_nanos(i64::from(word(0)), word(4));
        (ts, &record[16..], word(12))
    }
}

/// The first frame of each decoding outcome a capture shows (which counters it bumps), with
/// the frames before it when it completes a fragmented datagram.
fn wire_seeds(pcap: &PcapFile) -> Vec<Vec<u8>> {
    let mut dec = Decoder::new(DecodeConfig::default());
    let mut seen = BTreeSet::new();
    let mut seeds = Vec::new();
    for (i, rec) in pcap.records.iter().enumerate() {
        let (ts, data, orig_len) = PcapFile::packet(rec);
        let before = dec.stats().counters();
        let pkt = RawPacket {
            ts,
            linktype: 1,
            data,
            orig_len,
        };
        let tcp_payload = matches!(dec.decode(&pkt), Decoded::Tcp(ref s) if !s.payload.is_empty());
        let after = dec.stats().counters();
        let mut sig: Vec<&str> = before
            .iter()
            .zip(after.iter())
            .filter(|(b, a)| b.1 != a.1 && a.0 != "packets")
            .map(|(_, a)| a.0)
            .collect();
        if tcp_payload {
            sig.push("payload");
        }
        if !seen.insert(sig.clone()) {
            continue;
        }
        let first = if sig.contains(&"reassembled") {
            i.saturating_sub(3)
        } else {
            i
        };
        let frames: Vec<(bool, &[u8])> = pcap.records[first..=i]
            .iter()
            .map(|r| {
                let (_, d, o) = PcapFile::packet(r);
                (o as usize > d.len(), d)
            })
            .collect();
        seeds.push(encode_wire(0, &frames));
    }
    seeds
}

/// The start of the capture, and for the impaired one two windows from its middle, each as a
/// small pcap file.
fn pcap_seeds(pcap: &PcapFile, name: &str) -> Vec<Vec<u8>> {
    const BYTES: usize = 6 * 1024;
    let slice = |from: usize| {
        let mut out = pcap.header.to_vec();
        for r in pcap.records.iter().skip(from) {
            if out.len() + r.len() > BYTES {
                break;
            }
            out.extend_from_slice(r);
        }
        out
    };
    let mut seeds = vec![slice(0)];
    if name == "impaired" {
        let n = pcap.records.len();
        seeds.push(slice(n / 3));
        seeds.push(slice(2 * n / 3));
    }
    seeds
}

/// One TCP frame of the basic capture under the other link types the decoder knows: the IP
/// packet with each link type's own header in front.
fn link_variants() -> Vec<(String, Vec<u8>)> {
    let file = std::fs::read(root().join("captures/api-basic.pcap")).unwrap();
    let pcap = PcapFile::parse(&file);
    let (_, frame, _) = PcapFile::packet(pcap.records[0]);
    let ip = &frame[14..];
    let cat = |head: &[u8]| [head, ip].concat();
    let mut sll = vec![0u8; 16];
    sll[14..16].copy_from_slice(&[0x08, 0x00]);
    let mut sll2 = vec![0u8; 20];
    sll2[0..2].copy_from_slice(&[0x08, 0x00]);
    // Index into `WIRE_LINKTYPES`, and the bytes.
    let variants: [(&str, u8, Vec<u8>); 6] = [
        ("null", 1, cat(&2u32.to_le_bytes())),
        ("raw", 4, ip.to_vec()),
        ("loop", 6, cat(&2u32.to_be_bytes())),
        ("sll", 7, cat(&sll)),
        ("ipv4", 9, ip.to_vec()),
        ("sll2", 12, cat(&sll2)),
    ];
    let mut out: Vec<(String, Vec<u8>)> = variants
        .into_iter()
        .map(|(name, sel, bytes)| {
            (
                format!("link-{name}.bin"),
                encode_wire(sel, &[(false, &bytes)]),
            )
        })
        .collect();
    // The same frame under the tight limits, cut by a snaplen.
    out.push((
        "link-ethernet-tight-snapped.bin".to_string(),
        encode_wire(WIRE_TIGHT, &[(true, &frame[..frame.len().min(60)])]),
    ));
    out
}

/// A transcript as an `http_conn` script, or None when it needs more than a few KiB (the
/// decompression-bomb and limit transcripts feed megabytes).
fn transcript_script(path: &Path) -> Option<Vec<u8>> {
    const MAX: usize = 8 * 1024;
    let text = std::fs::read_to_string(path).unwrap();
    let mut ops = Vec::new();
    let mut cur: Option<(Direction, Vec<u8>)> = None;
    let mut tight = false;
    let side = |w: &str| {
        if w == "client" {
            Direction::ToServer
        } else {
            Direction::ToClient
        }
    };
    fn flush(cur: &mut Option<(Direction, Vec<u8>)>, ops: &mut Vec<HttpOp>) {
        if let Some((d, bytes)) = cur.take() {
            if !bytes.is_empty() {
                ops.push(HttpOp::Data(d, bytes));
            }
        }
    }
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line == "=== expect" {
            break;
        }
        if line == ">>>" || line == "<<<" {
            flush(&mut cur, &mut ops);
            let d = if line == ">>>" {
                Direction::ToServer
            } else {
                Direction::ToClient
            };
            cur = Some((d, Vec::new()));
            continue;
        }
        let here = cur.as_ref().map(|(d, _)| *d);
        let Some(rest) = line.strip_prefix("~~~ ") else {
            cur.as_mut()?.1.extend_from_slice(&unescape(line));
            continue;
        };
        let words: Vec<&str> = rest.splitn(3, ' ').collect();
        match words.as_slice() {
            ["gap", n, rest @ ..] => {
                let d = rest.first().map(|w| side(w)).or(here)?;
                flush(&mut cur, &mut ops);
                ops.push(HttpOp::Gap(d, n.parse().ok()?));
                cur = Some((here.unwrap_or(d), Vec::new()));
            }
            ["fin", w] | ["flag", w, _] => {
                flush(&mut cur, &mut ops);
                ops.push(if words[0] == "fin" {
                    HttpOp::Fin(side(w))
                } else {
                    HttpOp::Flag(side(w))
                });
                cur = here.map(|d| (d, Vec::new()));
            }
            // The script has two configurations; any tuned limit picks the tight one.
            ["config", _] => tight = true,
            [kind @ ("body" | "chunk"), coding, t] => {
                let enc = encode(coding, t)?;
                let bytes = &mut cur.as_mut()?.1;
                if *kind == "body" {
                    bytes.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", enc.len()).as_bytes(),
                    );
                } else {
                    bytes.extend_from_slice(format!("{:x}\r\n", enc.len()).as_bytes());
                }
                bytes.extend_from_slice(&enc);
                if *kind == "chunk" {
                    bytes.extend_from_slice(b"\r\n");
                }
            }
            ["repeat", n, t] => {
                let piece = unescape(t);
                let n: usize = n.parse().ok()?;
                if n.saturating_mul(piece.len()) > MAX {
                    return None;
                }
                let bytes = &mut cur.as_mut()?.1;
                for _ in 0..n {
                    bytes.extend_from_slice(&piece);
                }
            }
            _ => panic!("{}: unknown directive {line:?}", path.display()),
        }
    }
    flush(&mut cur, &mut ops);
    let script = encode_http(if tight { HTTP_TIGHT } else { 0 }, 7, &ops);
    (script.len() <= MAX).then_some(script)
}

/// The transcript escapes: `\r \n \t \0 \\ \s \xHH`.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.bytes();
    while let Some(c) = chars.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'0') => out.push(0),
            Some(b's') => out.push(b' '),
            Some(b'x') => {
                let hex: Vec<u8> = chars.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// A body in a coding, or None for `zeros:N` bodies too big for a seed.
fn encode(coding: &str, text: &str) -> Option<Vec<u8>> {
    let plain = match text.strip_prefix("zeros:") {
        Some(n) => {
            let n: usize = n.parse().ok()?;
            if n > 64 * 1024 {
                return None;
            }
            vec![0; n]
        }
        None => unescape(text),
    };
    let out = match coding {
        "plain" => plain,
        "gzip" => {
            let mut e = GzEncoder::new(Vec::new(), Compression::best());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        }
        "zlib" => {
            let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        }
        "deflate" => {
            let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
            e.write_all(&plain).unwrap();
            e.finish().unwrap()
        }
        other => panic!("unknown coding {other}"),
    };
    Some(out)
}

/// Schedules that reach each reassembly path once; the fuzzer mutates from there.
fn reassembly_seeds() -> Vec<(String, Vec<u8>)> {
    let seg = |stream, off, len, fin, mismatch| SegOp::Seg {
        stream,
        off,
        len,
        fin,
        mismatch,
    };
    let syn = |stream, off| SegOp::Syn { stream, off };
    let ack = |stream, off| SegOp::Ack { stream, off };
    let cases: Vec<(&str, u8, u8, u8, Vec<SegOp>)> = vec![
        (
            // Both directions across the 2^32 wrap, in order, closed by FINs.
            "in-order-wrap",
            1,
            0xff,
            0xff,
            vec![
                syn(0, 0),
                syn(1, 1000),
                seg(0, 1, 40, false, false),
                seg(1, 1001, 100, false, false),
                seg(0, 41, 30, true, false),
                seg(1, 1101, 0, true, false),
            ],
        ),
        (
            // Out of order, a differing overlap, a duplicate, then the hole filled.
            "out-of-order-overlap",
            2,
            0xff,
            0xff,
            vec![
                syn(0, 0),
                seg(0, 21, 20, false, false),
                seg(0, 31, 20, false, true),
                seg(0, 21, 20, false, false),
                seg(0, 1, 25, false, false),
                ack(0, 51),
            ],
        ),
        (
            // A hole the peer acknowledges: given up as a gap; late bytes of it dropped.
            "ack-past-hole",
            3,
            0x33,
            0x20,
            vec![
                syn(0, 0),
                seg(0, 1, 10, false, false),
                seg(0, 50, 10, false, false),
                ack(0, 60),
                seg(0, 20, 40, false, false),
                seg(0, 60, 5, true, false),
                ack(0, 66),
            ],
        ),
        (
            // Tiny limits: one-segment buffer and a small shared budget force give-ups.
            "limits",
            4,
            0x00,
            0x03,
            vec![
                seg(0, 1, 10, false, false),
                seg(0, 30, 200, false, false),
                seg(1, 100, 200, false, false),
                seg(0, 300, 250, false, false),
                seg(1, 400, 250, false, false),
                seg(0, 11, 5, false, false),
            ],
        ),
        (
            // FIN placement: a FIN ahead of a hole, an inconsistent FIN, data after the FIN.
            "fin-rules",
            5,
            0xff,
            0xff,
            vec![
                syn(1, 7),
                seg(1, 20, 5, true, false),
                seg(1, 8, 4, true, false),
                seg(1, 8, 20, false, false),
                seg(1, 8, 30, false, false),
            ],
        ),
        (
            // Far segments: one out of window, one wrapping back behind the stream.
            "far-segments",
            6,
            0xff,
            0xff,
            vec![
                seg(0, 1, 10, false, false),
                SegOp::Far {
                    stream: 0,
                    seq: 0x4000_0000,
                    len: 10,
                    fin: false,
                },
                SegOp::Far {
                    stream: 0,
                    seq: 0x8000_0000,
                    len: 10,
                    fin: true,
                },
                syn(0, 99),
                ack(0, 0),
            ],
        ),
    ];
    cases
        .into_iter()
        .map(|(name, base, limits, memcap, ops)| {
            (
                format!("{name}.bin"),
                encode_reassembly(base, limits, memcap, &ops),
            )
        })
        .collect()
}

//! Fuzz harnesses: the code behind the cargo-fuzz targets in `fuzz/` and the replay test in
//! `tests/fuzz_corpus.rs`, kept in the library so both run exactly the same checks.
//!
//! Each harness turns arbitrary bytes into calls on one public stage and asserts what must hold
//! for *any* input: no panic, memory within the configured limits, and the stage's documented
//! invariants (transaction depths, reassembly accounting, one outcome counter per packet). A
//! harness panics only when such an assertion fails; that is how libFuzzer and the replay test
//! see a bug. The byte formats are small scripts so that mutations stay meaningful, and each has
//! an encoder here so seeds can be written from readable descriptions.
//!
//! Invariant: a harness never allocates more than a constant times its input, plus the stage's
//! own configured limits, so a run over any corpus is bounded.
//!
//! This is a test aid, not part of the sensor: `pcap_engine` writes a temporary file, and the
//! module is hidden from the documentation.

use crate::capture::{OfflineSource, RawPacket};
use crate::common::{Direction, Timestamp};
use crate::engine::{Engine, EngineConfig};
use crate::flow::reassembly::{
    MemBudget, Stream, StreamConfig, StreamCtx, StreamEvent, StreamStats,
};
use crate::flow::seq::SeqNum;
use crate::http::{HttpConfig, HttpConn, HttpStats};
use crate::transaction::Transaction;
use crate::wire::link::linktype;
use crate::wire::{DecodeConfig, DecodeStats, Decoded, Decoder};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// The fuzz targets, by the names of their files in `fuzz/fuzz_targets/` and their seed folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Frames under a chosen link type through `wire::Decoder`.
    WireDecode,
    /// A script of data, gaps, FINs and outside flags through `http::HttpConn`.
    HttpConn,
    /// A schedule of SYNs, segments and ACKs through two `flow::reassembly::Stream`s.
    Reassembly,
    /// The bytes as a pcap file through `capture::OfflineSource` and `engine::Engine`.
    PcapEngine,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::WireDecode,
        Target::HttpConn,
        Target::Reassembly,
        Target::PcapEngine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::WireDecode => "wire_decode",
            Target::HttpConn => "http_conn",
            Target::Reassembly => "reassembly",
            Target::PcapEngine => "pcap_engine",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the harness on one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::WireDecode => wire_decode(data),
            Target::HttpConn => http_conn(data),
            Target::Reassembly => reassembly(data),
            Target::PcapEngine => pcap_engine(data),
        }
    }
}

/// Reads the script formats: every read is bounded by what is left, and a short read yields
/// what there is (or nothing), so any input is a valid script.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).first().copied()
    }

    /// Little-endian; missing high bytes read as zero.
    fn uint(&mut self, width: usize) -> u64 {
        self.take(width)
            .iter()
            .rev()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
    }
}

// ---------------------------------------------------------------------------------------------
// wire_decode
// ---------------------------------------------------------------------------------------------

/// Link types the first byte selects from (modulo the length); 999 is one the decoder does not
/// know.
pub const WIRE_LINKTYPES: [i32; 14] = [
    linktype::ETHERNET,
    linktype::NULL,
    linktype::RAW_DLT12,
    linktype::RAW_DLT14,
    linktype::RAW,
    linktype::IEEE802_11,
    linktype::LOOP,
    linktype::LINUX_SLL,
    linktype::IEEE802_11_RADIOTAP,
    linktype::IPV4,
    linktype::IPV6,
    linktype::NFLOG,
    linktype::LINUX_SLL2,
    999,
];

/// First-byte bit that selects [`tight_decode_config`].
pub const WIRE_TIGHT: u8 = 0x80;
/// Frame-header bit marking a frame cut by the snaplen (its `orig_len` is 64 bytes longer).
pub const WIRE_SNAPPED: u16 = 0x8000;

/// Limits small enough that fragment memcap, datagram cap, timeout and tunnel depth are reached
/// by inputs of a few hundred bytes.
pub fn tight_decode_config() -> DecodeConfig {
    DecodeConfig {
        frag_memcap_bytes: 2048,
        frag_timeout_secs: 3,
        max_frag_datagrams: 4,
        max_tunnel_depth: 2,
    }
}

/// Encodes a `wire_decode` input: `selector` picks the link type (index into
/// [`WIRE_LINKTYPES`], plus [`WIRE_TIGHT`]); each frame is `(snapped, bytes)`.
pub fn encode_wire(selector: u8, frames: &[(bool, &[u8])]) -> Vec<u8> {
    let mut out = vec![selector];
    for (snapped, bytes) in frames {
        let len = bytes.len().min(0x7fff);
        let head = len as u16 | if *snapped { WIRE_SNAPPED } else { 0 };
        out.extend_from_slice(&head.to_le_bytes());
        out.extend_from_slice(bytes.get(..len).unwrap_or_default());
    }
    out
}

/// `[selector] ([u16 LE: bit 15 snapped, bits 0..15 length] [frame bytes])*`; frames are one
/// second of packet time apart so fragment timeouts fire.
pub fn wire_decode(data: &[u8]) {
    let mut r = Reader::new(data);
    let Some(selector) = r.u8() else {
        return;
    };
    let lt = WIRE_LINKTYPES
        .get(usize::from(selector & !WIRE_TIGHT) % WIRE_LINKTYPES.len())
        .copied()
        .unwrap_or(linktype::ETHERNET);
    let cfg = if selector & WIRE_TIGHT != 0 {
        tight_decode_config()
    } else {
        DecodeConfig::default()
    };
    let mut dec = Decoder::new(cfg);
    let mut packets = 0u64;
    while !r.is_empty() {
        let head = r.uint(2) as u16;
        let frame = r.take(usize::from(head & !WIRE_SNAPPED));
        let snap_extra = if head & WIRE_SNAPPED != 0 { 64 } else { 0 };
        packets += 1;
        let pkt = RawPacket {
            ts: Timestamp::from_secs_nanos(1_700_000_000 + packets as i64, 0),
            linktype: lt,
            data: frame,
            orig_len: frame.len() as u32 + snap_extra,
        };
        let before = outcome_counts(dec.stats());
        let kind = match dec.decode(&pkt) {
            Decoded::Tcp(seg) => {
                // Reassembled datagrams are at most 64 KiB; packet payloads lie in the frame.
                assert!(seg.payload.len() <= 65_535, "segment payload beyond 64 KiB");
                0
            }
            Decoded::Skipped => 1,
            Decoded::Held => 2,
            Decoded::Error => 3,
        };
        let after = outcome_counts(dec.stats());
        let bumped: Vec<usize> = (0..4).filter(|&i| after[i] != before[i]).collect();
        assert_eq!(
            bumped,
            vec![kind],
            "packet {packets}: outcome counters do not match the result: {:?}",
            dec.stats()
        );
        assert_eq!(
            after.iter().sum::<u64>(),
            before.iter().sum::<u64>() + 1,
            "packet {packets}: not exactly one outcome counter: {:?}",
            dec.stats()
        );
        assert!(
            dec.frag_mem_bytes() <= cfg.frag_memcap_bytes,
            "fragment memcap exceeded"
        );
        assert!(
            dec.frag_datagrams() <= cfg.max_frag_datagrams,
            "fragment datagram cap exceeded"
        );
    }
    assert_eq!(dec.stats().packets, packets);
}

/// Outcome counters grouped like [`Decoded`]: TCP, skipped, held, error.
fn outcome_counts(s: &DecodeStats) -> [u64; 4] {
    [
        s.tcp,
        s.udp + s.other_l4 + s.non_ip + s.unknown_linktype,
        s.held,
        s.errors(),
    ]
}

// ---------------------------------------------------------------------------------------------
// http_conn
// ---------------------------------------------------------------------------------------------

/// One step of an `http_conn` script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpOp {
    Data(Direction, Vec<u8>),
    Gap(Direction, u64),
    Fin(Direction),
    /// An outside anomaly, as the flow table attaches a TCP overlap mismatch.
    Flag(Direction),
}

/// First-byte bit that selects [`tight_http_config`].
pub const HTTP_TIGHT: u8 = 0x01;
const HTTP_TO_CLIENT: u8 = 0x04;
/// Gap-tag bit: the 32-bit length is shifted left by 32 (gaps near `u64::MAX`).
const HTTP_HUGE_GAP: u8 = 0x40;

/// Limits small enough that every `HttpConfig` policy is reached by short scripts.
pub fn tight_http_config() -> HttpConfig {
    HttpConfig {
        body_limit_bytes: 8,
        max_header_bytes: 96,
        max_headers: 4,
        max_pending_requests: 3,
        max_decompressed_bytes: 4096,
        max_decompression_ratio: 10,
        min_ratio_check_bytes: 256,
        max_chunk_line_bytes: 24,
        max_interim_responses: 2,
        max_tunnel_wait_bytes: 32,
        max_socks_handshake_bytes: 48,
    }
}

/// Encodes an `http_conn` input. `flags` is the first byte ([`HTTP_TIGHT`]); `cut` is where the
/// second run splits every data chunk.
pub fn encode_http(flags: u8, cut: u8, ops: &[HttpOp]) -> Vec<u8> {
    let dir_bit = |d: &Direction| match d {
        Direction::ToServer => 0,
        Direction::ToClient => HTTP_TO_CLIENT,
    };
    let mut out = vec![flags, cut];
    for op in ops {
        match op {
            HttpOp::Data(d, bytes) => {
                // Longer chunks become several data steps: the output must not depend on it.
                for piece in bytes.chunks(0xffff) {
                    out.push(dir_bit(d));
                    out.extend_from_slice(&(piece.len() as u16).to_le_bytes());
                    out.extend_from_slice(piece);
                }
            }
            HttpOp::Gap(d, n) => {
                let (tag, len) = match u32::try_from(*n) {
                    Ok(small) => (1 | dir_bit(d), small),
                    Err(_) => (1 | dir_bit(d) | HTTP_HUGE_GAP, (*n >> 32) as u32),
                };
                out.push(tag);
                out.extend_from_slice(&len.to_le_bytes());
            }
            HttpOp::Fin(d) => out.push(2 | dir_bit(d)),
            HttpOp::Flag(d) => out.push(3 | dir_bit(d)),
        }
    }
    out
}

fn decode_http(r: &mut Reader<'_>) -> Vec<HttpOp> {
    let mut ops = Vec::new();
    while let Some(tag) = r.u8() {
        let dir = if tag & HTTP_TO_CLIENT != 0 {
            Direction::ToClient
        } else {
            Direction::ToServer
        };
        ops.push(match tag & 3 {
            0 => {
                let len = r.uint(2) as usize;
                HttpOp::Data(dir, r.take(len).to_vec())
            }
            1 => {
                let n = r.uint(4);
                HttpOp::Gap(dir, if tag & HTTP_HUGE_GAP != 0 { n << 32 } else { n })
            }
            2 => HttpOp::Fin(dir),
            _ => HttpOp::Flag(dir),
        });
    }
    ops
}

/// `[flags] [cut] ([tag] args)*` with tag bits 0-1 the step (0 data + u16 LE length + bytes,
/// 1 gap + u32 LE length, 2 fin, 3 flag), bit 2 the direction (set: to client), bit 6 a huge
/// gap. The script runs twice, the second time with every data chunk split at `cut`: both runs
/// must give the same transactions and counters.
pub fn http_conn(data: &[u8]) {
    let mut r = Reader::new(data);
    let (Some(flags), Some(cut)) = (r.u8(), r.u8()) else {
        return;
    };
    let cfg = if flags & HTTP_TIGHT != 0 {
        tight_http_config()
    } else {
        HttpConfig::default()
    };
    let ops = decode_http(&mut r);
    let (whole, stats) = replay_http(&ops, usize::MAX, &cfg);
    let (split, split_stats) = replay_http(&ops, usize::from(cut), &cfg);
    assert!(
        whole == split,
        "output depends on how bytes were split (cut {cut})"
    );
    assert_eq!(
        stats, split_stats,
        "counters depend on how bytes were split"
    );
    assert_eq!(stats.transactions, whole.len() as u64);
    for (i, t) in whole.iter().enumerate() {
        assert_eq!(
            t.depth as usize,
            i + 1,
            "transaction depths must go up by one"
        );
        let bodies = t
            .request
            .iter()
            .map(|q| &q.body)
            .chain(t.response.iter().map(|r| &r.body));
        for b in bodies {
            assert!(
                b.data.len() <= cfg.body_limit_bytes,
                "body kept beyond limit"
            );
            assert!(b.data.len() as u64 <= b.len, "kept more body than counted");
        }
        if let (Some(q), Some(resp)) = (&t.request, &t.response) {
            assert!(q.start <= resp.start, "a response answered a later request");
        }
        if let Some(resp) = &t.response {
            assert!(resp.interim.len() <= cfg.max_interim_responses);
        }
    }
}

fn replay_http(ops: &[HttpOp], cut: usize, cfg: &HttpConfig) -> (Vec<Transaction>, HttpStats) {
    let mut conn = HttpConn::new();
    let mut stats = HttpStats::default();
    let mut out = Vec::new();
    let head_bound = cfg.max_header_bytes.max(cfg.max_tunnel_wait_bytes);
    let queue_bound = cfg.max_pending_requests.saturating_mul(2).saturating_add(2);
    for (i, op) in ops.iter().enumerate() {
        let ts = Timestamp::from_nanos(1_000 * i as u64);
        match op {
            HttpOp::Data(d, bytes) => {
                let (a, b) = bytes.split_at(cut.min(bytes.len()));
                for piece in [a, b] {
                    if !piece.is_empty() {
                        conn.on_data(*d, piece, ts, cfg, &mut stats, &mut out);
                    }
                }
            }
            HttpOp::Gap(d, n) => conn.on_gap(*d, *n, ts, cfg, &mut stats, &mut out),
            HttpOp::Fin(d) => conn.on_fin(*d, ts, cfg, &mut stats, &mut out),
            HttpOp::Flag(d) => conn.on_flag(*d, "overlap_mismatch"),
        }
        for d in [Direction::ToServer, Direction::ToClient] {
            assert!(
                conn.buffered_bytes(d) <= head_bound,
                "step {i}: {d:?} buffers {} bytes, bound {head_bound}",
                conn.buffered_bytes(d)
            );
        }
        assert!(
            conn.pending() <= queue_bound,
            "step {i}: {} entries queued, bound {queue_bound}",
            conn.pending()
        );
    }
    conn.finish(
        Timestamp::from_nanos(1_000 * ops.len() as u64),
        cfg,
        &mut stats,
        &mut out,
    );
    assert_eq!(conn.pending(), 0, "finish left entries queued");
    (out, stats)
}

// ---------------------------------------------------------------------------------------------
// reassembly
// ---------------------------------------------------------------------------------------------

/// One step of a `reassembly` schedule, on stream 0 or 1. Offsets are added (wrapping) to the
/// base sequence number; payload bytes are a function of their sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegOp {
    /// A SYN with ISN `base + off`.
    Syn { stream: u8, off: u16 },
    /// A segment at `base + off` with `len` pattern bytes (inverted when `mismatch`).
    Seg {
        stream: u8,
        off: u16,
        len: u8,
        fin: bool,
        mismatch: bool,
    },
    /// An acknowledgement of stream `stream` by its peer, at `base + off`.
    Ack { stream: u8, off: u16 },
    /// A segment at an absolute sequence number (far from base: out of window, wrapped).
    Far {
        stream: u8,
        seq: u32,
        len: u8,
        fin: bool,
    },
}

/// The payload byte for a sequence number; the pattern never equals its own inverse, so a
/// delivered byte tells which copy it came from.
pub fn seq_pattern(seq: u32) -> u8 {
    (seq.wrapping_mul(0x9e37_79b1) >> 24) as u8
}

/// Encodes a `reassembly` input. The base sequence number is `0 - 64 * base`, within 16 KiB
/// below 2^32 so schedules cross the wrap. `limits` packs `max_segments - 1` (high nibble) and
/// `max_buffered_bytes / 256 - 1` (low nibble); `memcap` is the shared budget in 64-byte units
/// minus one.
pub fn encode_reassembly(base: u8, limits: u8, memcap: u8, ops: &[SegOp]) -> Vec<u8> {
    let mut out = vec![base, limits, memcap];
    for op in ops {
        match *op {
            SegOp::Syn { stream, off } => {
                out.push((stream & 1) | 2 << 1);
                out.extend_from_slice(&off.to_le_bytes());
            }
            SegOp::Seg {
                stream,
                off,
                len,
                fin,
                mismatch,
            } => {
                out.push((stream & 1) | u8::from(fin) << 3 | u8::from(mismatch) << 4);
                out.extend_from_slice(&off.to_le_bytes());
                out.push(len);
            }
            SegOp::Ack { stream, off } => {
                out.push((stream & 1) | 1 << 1);
                out.extend_from_slice(&off.to_le_bytes());
            }
            SegOp::Far {
                stream,
                seq,
                len,
                fin,
            } => {
                out.push((stream & 1) | 3 << 1 | u8::from(fin) << 3);
                out.extend_from_slice(&seq.to_le_bytes());
                out.push(len);
            }
        }
    }
    out
}

fn decode_reassembly(r: &mut Reader<'_>) -> Vec<SegOp> {
    let mut ops = Vec::new();
    while let Some(tag) = r.u8() {
        let stream = tag & 1;
        let fin = tag & 0x08 != 0;
        ops.push(match (tag >> 1) & 3 {
            0 => SegOp::Seg {
                stream,
                off: r.uint(2) as u16,
                len: r.u8().unwrap_or(0),
                fin,
                mismatch: tag & 0x10 != 0,
            },
            1 => SegOp::Ack {
                stream,
                off: r.uint(2) as u16,
            },
            2 => SegOp::Syn {
                stream,
                off: r.uint(2) as u16,
            },
            _ => SegOp::Far {
                stream,
                seq: r.uint(4) as u32,
                len: r.u8().unwrap_or(0),
                fin,
            },
        });
    }
    ops
}

/// What the harness knows about one stream, independent of its internals.
#[derive(Default)]
struct Tracked {
    /// Positions reported so far (`Data` plus `Gap`): the stream's delivery point.
    reported: u64,
    /// The highest stream position any segment or ACK reached: nothing past it was sent.
    reach: u64,
    fin: bool,
}

/// `[base] [limits] [memcap] ([tag] args)*` with tag bit 0 the stream, bits 1-2 the step
/// (0 segment + u16 LE offset + length, 1 ACK + offset, 2 SYN + offset, 3 far segment + u32 LE
/// sequence number + length), bit 3 FIN, bit 4 mismatching bytes. Both streams share one
/// budget and are flushed at the end.
///
/// Checked after every call: `Data` plus `Gap` never pass the furthest position sent, every
/// delivered byte is one that was sent at its position, nothing follows `Fin`, buffers and the
/// budget stay within their limits; after the flushes the budget is back to zero.
pub fn reassembly(data: &[u8]) {
    let mut r = Reader::new(data);
    let (Some(base), Some(limits), Some(memcap)) = (r.u8(), r.u8(), r.u8()) else {
        return;
    };
    let base = 0u32.wrapping_sub(64 * u32::from(base));
    let cfg = StreamConfig {
        max_buffered_bytes: 256 * (usize::from(limits & 0x0f) + 1),
        max_segments: usize::from(limits >> 4) + 1,
        // Small enough that a far segment is often out of window, large enough for the offsets.
        max_ahead_bytes: 1 << 20,
        // Not a power of two, and small, so retransmissions wrap the ring at odd offsets.
        overlap_retain_bytes: 200,
    };
    let memcap = 64 * (usize::from(memcap) + 1);
    let mut budget = MemBudget::new(memcap);
    let mut stats = StreamStats::default();
    let mut streams = [Stream::new(), Stream::new()];
    let mut tracked = [Tracked::default(), Tracked::default()];
    let ops = decode_reassembly(&mut r);
    let mut payload = Vec::with_capacity(256);

    for op in &ops {
        let (s, seq) = match *op {
            SegOp::Syn { stream, off } | SegOp::Ack { stream, off } => {
                (usize::from(stream), base.wrapping_add(u32::from(off)))
            }
            SegOp::Seg { stream, off, .. } => {
                (usize::from(stream), base.wrapping_add(u32::from(off)))
            }
            SegOp::Far { stream, seq, .. } => (usize::from(stream), seq),
        };
        let (Some(stream), Some(t)) = (streams.get_mut(s), tracked.get_mut(s)) else {
            continue;
        };
        let mut ctx = StreamCtx {
            cfg: &cfg,
            budget: &mut budget,
            stats: &mut stats,
        };
        let seq = SeqNum(seq);
        // Where the delivery point is in sequence space; an unstarted stream starts at the
        // first segment it sees.
        let cur = stream.next_seq().unwrap_or(seq);
        let rel = i64::from(seq.diff(cur));
        let in_window = rel <= 0 || rel.unsigned_abs() <= cfg.max_ahead_bytes;
        let mut check = Checker { t, cur };
        match *op {
            SegOp::Syn { .. } => {
                let before = stream.next_seq();
                stream.on_syn(seq);
                if stream.next_seq() != before {
                    // A (re)start: only allowed while nothing was reported, and it moves the
                    // stream's origin, so what earlier segments reached no longer applies.
                    assert_eq!(
                        check.t.reported, 0,
                        "SYN restarted a stream that had delivered"
                    );
                    check.t.reach = 0;
                }
                continue;
            }
            SegOp::Ack { .. } => {
                if in_window && stream.next_seq().is_some() {
                    check.reach_to(rel);
                }
                stream.on_peer_ack(seq, &mut ctx, &mut |ev| check.event(ev));
            }
            SegOp::Seg {
                len, fin, mismatch, ..
            } => {
                fill(&mut payload, seq, len, mismatch);
                if in_window {
                    check.reach_to(rel + i64::from(len));
                }
                stream.on_segment(seq, &payload, fin, &mut ctx, &mut |ev| check.event(ev));
            }
            SegOp::Far { len, fin, .. } => {
                fill(&mut payload, seq, len, false);
                if in_window {
                    check.reach_to(rel + i64::from(len));
                }
                stream.on_segment(seq, &payload, fin, &mut ctx, &mut |ev| check.event(ev));
            }
        }
        assert!(
            stream.buffered_bytes() <= cfg.max_buffered_bytes,
            "stream buffers beyond max_buffered_bytes"
        );
        assert!(budget.used() <= memcap, "budget over its memcap");
    }
    for (stream, t) in streams.iter_mut().zip(tracked.iter_mut()) {
        let mut ctx = StreamCtx {
            cfg: &cfg,
            budget: &mut budget,
            stats: &mut stats,
        };
        let cur = stream.next_seq().unwrap_or(SeqNum(0));
        let mut check = Checker { t, cur };
        stream.flush(&mut ctx, &mut |ev| check.event(ev));
        assert_eq!(stream.buffered_bytes(), 0, "flush left bytes buffered");
    }
    assert_eq!(
        budget.used(),
        0,
        "budget not zero after flushing every stream"
    );
    let reported: u64 = tracked.iter().map(|t| t.reported).sum();
    assert_eq!(stats.delivered_bytes + stats.gap_bytes, reported);
}

/// Checks the events of one call against what was sent to that stream.
struct Checker<'t> {
    t: &'t mut Tracked,
    /// Sequence number of the next position to be reported.
    cur: SeqNum,
}

impl Checker<'_> {
    /// Something was sent up to `rel` positions past the delivery point.
    fn reach_to(&mut self, rel: i64) {
        if rel > 0 {
            let end = self.t.reported.saturating_add(rel.unsigned_abs());
            self.t.reach = self.t.reach.max(end);
        }
    }

    fn event(&mut self, ev: StreamEvent<'_>) {
        let n = match ev {
            StreamEvent::Data(d) => {
                assert!(!self.t.fin, "data after Fin");
                for (k, b) in d.iter().enumerate() {
                    let want = seq_pattern(self.cur.add(k as u32).0);
                    assert!(
                        *b == want || *b == !want,
                        "delivered byte {b:#04x} was never sent at its position"
                    );
                }
                d.len() as u64
            }
            StreamEvent::Gap(n) => {
                assert!(!self.t.fin, "gap after Fin");
                assert!(n > 0, "empty gap");
                n
            }
            StreamEvent::Fin => {
                assert!(!self.t.fin, "second Fin");
                self.t.fin = true;
                0
            }
            StreamEvent::Anomaly(_) => 0,
        };
        self.t.reported = self.t.reported.saturating_add(n);
        self.cur = self.cur.add(n as u32);
        assert!(
            self.t.reported <= self.t.reach,
            "reported {} positions, but segments and ACKs only reached {}",
            self.t.reported,
            self.t.reach
        );
    }
}

fn fill(payload: &mut Vec<u8>, seq: SeqNum, len: u8, mismatch: bool) {
    payload.clear();
    payload.extend((0..u32::from(len)).map(|k| {
        let b = seq_pattern(seq.add(k).0);
        if mismatch {
            !b
        } else {
            b
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// pcap_engine
// ---------------------------------------------------------------------------------------------

/// The bytes, as they are, in a temporary pcap file replayed through `OfflineSource` and a
/// default `Engine`. A file libpcap refuses to open is fine; whatever opens must run to the end
/// without a panic, leave no flow or buffered byte behind, and number each flow's transactions
/// 1, 2, 3, ...
pub fn pcap_engine(data: &[u8]) {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "apitap-fuzz-{}-{}.pcap",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let result = OfflineSource::open(std::slice::from_ref(&path));
    // libpcap has read the header on open and keeps its own handle; unlinking now also cleans
    // up when an assertion below fails.
    let _ = std::fs::remove_file(&path);
    let Ok(mut src) = result else {
        return;
    };
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    while let Some(pkt) = src.next_packet() {
        engine.process(&pkt, &mut out);
    }
    engine.finish(&mut out);
    let stats = engine.stats();
    assert_eq!(stats.transactions, out.len() as u64);
    assert_eq!(stats.active_flows, 0, "finish left flows behind");
    assert_eq!(
        stats.buffered_bytes, 0,
        "finish left reassembly memory charged"
    );
    let mut depth: HashMap<&str, u32> = HashMap::new();
    for t in &out {
        let last = depth.entry(t.conn.flow_id.as_str()).or_insert(0);
        assert_eq!(
            t.depth,
            *last + 1,
            "flow {}: depths must go up by one",
            t.conn.flow_id
        );
        *last = t.depth;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_script_round_trips() {
        let ops = vec![
            HttpOp::Data(Direction::ToServer, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            HttpOp::Gap(Direction::ToClient, 7),
            HttpOp::Gap(Direction::ToServer, 5 << 32),
            HttpOp::Flag(Direction::ToClient),
            HttpOp::Fin(Direction::ToClient),
        ];
        let bytes = encode_http(HTTP_TIGHT, 3, &ops);
        assert_eq!(&bytes[..2], &[HTTP_TIGHT, 3]);
        assert_eq!(decode_http(&mut Reader::new(&bytes[2..])), ops);
        http_conn(&bytes);
    }

    #[test]
    fn reassembly_schedule_round_trips() {
        let ops = vec![
            SegOp::Syn { stream: 0, off: 0 },
            SegOp::Seg {
                stream: 0,
                off: 5,
                len: 4,
                fin: true,
                mismatch: false,
            },
            SegOp::Seg {
                stream: 0,
                off: 1,
                len: 6,
                fin: false,
                mismatch: true,
            },
            SegOp::Ack { stream: 1, off: 9 },
            SegOp::Far {
                stream: 1,
                seq: 7,
                len: 3,
                fin: true,
            },
        ];
        let bytes = encode_reassembly(2, 0x11, 9, &ops);
        assert_eq!(decode_reassembly(&mut Reader::new(&bytes[3..])), ops);
        reassembly(&bytes);
    }

    #[test]
    fn wire_input_round_trips_frames() {
        let bytes = encode_wire(WIRE_TIGHT | 4, &[(false, b"\x45\x00"), (true, b"")]);
        assert_eq!(bytes, [0x84, 2, 0, 0x45, 0, 0, 0x80]);
        wire_decode(&bytes);
    }

    /// The reassembly oracle is only worth its runs if it objects to a wrong stream: bytes
    /// never sent at their position, positions nobody sent, and anything after `Fin`.
    #[test]
    fn reassembly_checker_rejects_what_was_never_sent() {
        let rejects = |reach: u64, events: &[StreamEvent<'_>]| {
            std::panic::catch_unwind(|| {
                let mut t = Tracked {
                    reach,
                    ..Tracked::default()
                };
                let mut c = Checker {
                    t: &mut t,
                    cur: SeqNum(u32::MAX - 1),
                };
                for ev in events {
                    c.event(*ev);
                }
            })
            .is_err()
        };
        let sent: Vec<u8> = (0..4)
            .map(|k| seq_pattern((u32::MAX - 1).wrapping_add(k)))
            .collect();
        let inverted: Vec<u8> = sent.iter().map(|b| !b).collect();
        let wrong: Vec<u8> = sent.iter().map(|b| b ^ 1).collect();
        assert!(!rejects(4, &[StreamEvent::Data(&sent)]));
        assert!(!rejects(4, &[StreamEvent::Data(&inverted)]));
        assert!(!rejects(
            6,
            &[
                StreamEvent::Gap(2),
                StreamEvent::Data(&sent[2..]),
                StreamEvent::Fin
            ]
        ));
        assert!(rejects(4, &[StreamEvent::Data(&wrong)]));
        assert!(rejects(3, &[StreamEvent::Data(&sent)]));
        assert!(rejects(9, &[StreamEvent::Fin, StreamEvent::Gap(1)]));
        assert!(rejects(9, &[StreamEvent::Fin, StreamEvent::Fin]));
    }

    #[test]
    fn target_names_round_trip() {
        for t in Target::ALL {
            assert_eq!(Target::from_name(t.name()), Some(t));
        }
        assert_eq!(Target::from_name("nope"), None);
    }

    #[test]
    fn truncated_scripts_are_valid_input() {
        // Every prefix of a script of each kind is itself a valid input.
        let http = encode_http(
            0,
            1,
            &[
                HttpOp::Data(Direction::ToServer, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
                HttpOp::Gap(Direction::ToServer, 3),
            ],
        );
        let seg = encode_reassembly(
            1,
            0,
            0,
            &[SegOp::Far {
                stream: 0,
                seq: u32::MAX,
                len: 9,
                fin: true,
            }],
        );
        for k in 0..=http.len() {
            http_conn(&http[..k]);
        }
        for k in 0..=seg.len() {
            reassembly(&seg[..k]);
        }
    }
}

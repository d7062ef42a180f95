//! Message bodies: transfer decoding (Content-Length, chunked, until close) and content decoding
//! (gzip, x-gzip, deflate as zlib or raw), both streaming.
//!
//! Invariants:
//! - Memory per body is bounded whatever the input: at most `body_limit_bytes` of decoded content
//!   are kept, a chunk-size line buffer of at most `max_chunk_line_bytes`, trailers counted against
//!   `max_header_bytes` and never stored, and one decoder with a fixed staging block.
//! - `Body.len` counts every decoded byte produced (or every wire byte without a coding), also past
//!   the keep limit; decoding stops at `max_decompressed_bytes` or when the output/input ratio
//!   passes `max_decompression_ratio`, and then `len` is what was decoded until that point.
//! - Results do not depend on how the input was split: compressed bytes reach the decoder in fixed
//!   blocks of [`STAGE_BYTES`], so guards trip at the same place whatever the packet boundaries.

use super::anomaly::HttpAnomaly;
use super::parser::{parse_chunk_size_line, strip_eol, Coding};
use super::HttpConfig;
use crate::transaction::Body;
use flate2::write::{DeflateDecoder, GzDecoder, ZlibDecoder};
use std::io::{self, Write};

/// Compressed bytes are handed to the decoder in blocks of this size (the last one may be
/// shorter). A fixed block makes decoding and its guards independent of packet boundaries.
pub const STAGE_BYTES: usize = 4096;

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (requests without length, HEAD responses, 1xx/204/304).
    NoBody,
    /// Exactly this many bytes (Content-Length).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the sender closes (responses only).
    UntilClose,
}

/// Where the transfer decoder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// After chunk data: expecting CRLF; `seen_cr` after the CR.
    ChunkDataEnd {
        seen_cr: bool,
    },
    Trailer,
    /// After an over-long chunk-size or trailer line: skipping to its end, then framing is lost.
    DiscardLine,
    UntilClose,
    Done,
}

/// The result of feeding bytes to a [`TransferDecoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the body continues.
    NeedMore,
    /// The body ended after `consumed` bytes.
    Done,
    /// Framing was lost after `consumed` bytes (bad chunk size, oversize line): the message ends
    /// here and the caller must resync.
    Lost,
}

/// The result of a gap inside a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapOutcome {
    /// The gap lay inside the body; framing continues.
    Absorbed,
    /// The gap ended exactly where the body ends.
    Done,
    /// The gap ran past the body end or hit framing bytes: the message ends, resync.
    Lost,
}

/// De-frames one body. Holds at most one partial chunk-size or trailer line.
#[derive(Debug)]
pub struct TransferDecoder {
    state: TState,
    /// Partial chunk-size or trailer line; bounded by the config limits.
    line: Vec<u8>,
    /// Trailer bytes seen so far, counted against `max_header_bytes`.
    trailer_bytes: usize,
    /// Bytes of a partial line dropped when framing was lost (for the junk counter).
    discarded: usize,
}

impl TransferDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::NoBody | Framing::Length(0) => TState::Done,
            Framing::Length(n) => TState::Length(n),
            Framing::Chunked => TState::ChunkSize,
            Framing::UntilClose => TState::UntilClose,
        };
        TransferDecoder {
            state,
            line: Vec::new(),
            trailer_bytes: 0,
            discarded: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == TState::Done
    }

    /// Bytes consumed but dropped (an over-long line) since the last call: for the junk counter.
    pub fn take_discarded(&mut self) -> usize {
        std::mem::take(&mut self.discarded)
    }

    /// No byte of the body has been read yet.
    pub fn untouched(&self) -> bool {
        matches!(self.state, TState::Length(_))
            || (self.state == TState::ChunkSize && self.line.is_empty())
    }

    /// The body is delimited by the connection close.
    pub fn until_close(&self) -> bool {
        self.state == TState::UntilClose
    }

    /// Feeds wire bytes; returns how many were consumed and what happened. Body content goes to
    /// `sink`, anomalies to `anomalies`.
    pub fn feed(
        &mut self,
        input: &[u8],
        cfg: &HttpConfig,
        sink: &mut BodySink,
        anomalies: &mut Vec<HttpAnomaly>,
    ) -> (usize, Progress) {
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            match self.state {
                TState::Done => return (pos, Progress::Done),
                TState::UntilClose => {
                    sink.write(rest, cfg);
                    return (input.len(), Progress::NeedMore);
                }
                TState::Length(rem) | TState::ChunkData(rem) => {
                    if rest.is_empty() {
                        return (pos, Progress::NeedMore);
                    }
                    let take = usize::try_from(rem).unwrap_or(usize::MAX).min(rest.len());
                    sink.write(rest.get(..take).unwrap_or(&[]), cfg);
                    pos += take;
                    let left = rem - take as u64;
                    self.state = match (self.state, left) {
                        (TState::Length(_), 0) => TState::Done,
                        (TState::Length(_), n) => TState::Length(n),
                        (_, 0) => TState::ChunkDataEnd { seen_cr: false },
                        (_, n) => TState::ChunkData(n),
                    };
                }
                TState::DiscardLine => match memchr::memchr(b'\n', rest) {
                    None => {
                        self.discarded = self.discarded.saturating_add(rest.len());
                        return (input.len(), Progress::NeedMore);
                    }
                    Some(i) => {
                        self.discarded = self.discarded.saturating_add(i + 1);
                        self.state = TState::Done;
                        return (pos + i + 1, Progress::Lost);
                    }
                },
                TState::ChunkDataEnd { seen_cr } => {
                    let Some(&b) = rest.first() else {
                        return (pos, Progress::NeedMore);
                    };
                    if b == b'\n' {
                        pos += 1;
                        self.state = TState::ChunkSize;
                    } else if b == b'\r' && !seen_cr {
                        pos += 1;
                        self.state = TState::ChunkDataEnd { seen_cr: true };
                    } else {
                        // Lenient: read the next chunk-size line from here.
                        anomalies.push(HttpAnomaly::MissingChunkCrlf);
                        self.state = TState::ChunkSize;
                    }
                }
                TState::ChunkSize | TState::Trailer => {
                    let trailer = self.state == TState::Trailer;
                    let nl = memchr::memchr(b'\n', rest);
                    let take = nl.map_or(rest.len(), |i| i + 1);
                    let cap = if trailer {
                        cfg.max_header_bytes.saturating_sub(self.trailer_bytes)
                    } else {
                        cfg.max_chunk_line_bytes
                    };
                    if self.line.len().saturating_add(take) > cap {
                        anomalies.push(if trailer {
                            HttpAnomaly::OversizeHead
                        } else {
                            HttpAnomaly::OversizeChunkLine
                        });
                        // Skip the rest of the line too, so that where framing is lost does not
                        // depend on how the line was split into packets.
                        self.discarded = self.discarded.saturating_add(self.line.len());
                        self.line = Vec::new();
                        self.state = TState::DiscardLine;
                        continue;
                    }
                    self.line.extend_from_slice(rest.get(..take).unwrap_or(&[]));
                    pos += take;
                    if nl.is_none() {
                        return (pos, Progress::NeedMore);
                    }
                    let line = std::mem::take(&mut self.line);
                    if trailer {
                        self.trailer_bytes = self.trailer_bytes.saturating_add(line.len());
                        if strip_eol(&line).is_empty() {
                            self.state = TState::Done;
                        }
                        continue;
                    }
                    if strip_eol(&line).is_empty() {
                        // A stray blank line where a size was due: tolerated, as servers do.
                        continue;
                    }
                    match parse_chunk_size_line(&line) {
                        Ok(c) => {
                            if c.junk {
                                anomalies.push(HttpAnomaly::ChunkSizeJunk);
                            }
                            self.state = match c.size {
                                0 => TState::Trailer,
                                n => TState::ChunkData(n),
                            };
                        }
                        Err(e) => {
                            anomalies.push(e.anomaly());
                            self.state = TState::Done;
                            return (pos, Progress::Lost);
                        }
                    }
                }
            }
        }
    }

    /// Accounts for `len` lost bytes inside the body.
    pub fn gap(&mut self, len: u64, sink: &mut BodySink) -> GapOutcome {
        match self.state {
            TState::UntilClose => {
                sink.gap(len);
                GapOutcome::Absorbed
            }
            TState::Length(rem) | TState::ChunkData(rem) => {
                let lost = len.min(rem);
                sink.gap(lost);
                if len > rem {
                    self.state = TState::Done;
                    return GapOutcome::Lost;
                }
                let left = rem - len;
                self.state = match (self.state, left) {
                    (TState::Length(_), 0) => TState::Done,
                    (TState::Length(_), n) => TState::Length(n),
                    (_, 0) => TState::ChunkDataEnd { seen_cr: false },
                    (_, n) => TState::ChunkData(n),
                };
                if self.state == TState::Done {
                    GapOutcome::Done
                } else {
                    GapOutcome::Absorbed
                }
            }
            TState::Done => GapOutcome::Lost,
            TState::ChunkSize
            | TState::ChunkDataEnd { .. }
            | TState::Trailer
            | TState::DiscardLine => {
                self.state = TState::Done;
                GapOutcome::Lost
            }
        }
    }
}

/// Receives decoded bytes: counts them all, keeps the first `limit`, refuses past `cap`.
#[derive(Debug)]
struct Collector {
    data: Vec<u8>,
    len: u64,
    /// Bytes of content to keep in `data`.
    limit: usize,
    /// Decoded bytes accepted at most (the bomb guard); writes past it fail.
    cap: u64,
    /// A write hit `cap`.
    hit_cap: bool,
    /// No more writes accepted (set before a decoder is dropped so its final flush is a no-op).
    closed: bool,
    /// Content past `limit` was not kept.
    limited: bool,
    /// Stop keeping content (after a gap).
    keep: bool,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            data: Vec::new(),
            len: 0,
            limit: 0,
            cap: 0,
            hit_cap: false,
            closed: true,
            limited: false,
            keep: false,
        }
    }
}

impl Collector {
    fn new(limit: usize, cap: u64) -> Self {
        Collector {
            limit,
            cap,
            closed: false,
            keep: true,
            ..Collector::default()
        }
    }

    fn accept(&mut self, buf: &[u8]) {
        self.len = self.len.saturating_add(buf.len() as u64);
        let room = if self.keep {
            self.limit.saturating_sub(self.data.len())
        } else {
            0
        };
        let keep = room.min(buf.len());
        self.data.extend_from_slice(buf.get(..keep).unwrap_or(&[]));
        if self.keep && keep < buf.len() {
            self.limited = true;
        }
    }
}

impl Write for Collector {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Err(io::Error::other("collector closed"));
        }
        let room = self.cap.saturating_sub(self.len);
        if buf.len() as u64 > room {
            if room == 0 {
                self.hit_cap = true;
                return Err(io::Error::other("decompressed size limit"));
            }
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(buf.len());
            self.accept(buf.get(..n).unwrap_or(&[]));
            return Ok(n);
        }
        self.accept(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A streaming content decoder writing into a [`Collector`].
enum Inflater {
    /// `deflate` before its first two bytes are known: zlib or raw?
    SniffDeflate,
    Gzip(Box<GzDecoder<Collector>>),
    Zlib(Box<ZlibDecoder<Collector>>),
    Raw(Box<DeflateDecoder<Collector>>),
}

impl Inflater {
    fn collector(&mut self) -> Option<&mut Collector> {
        match self {
            Inflater::SniffDeflate => None,
            Inflater::Gzip(d) => Some(d.get_mut()),
            Inflater::Zlib(d) => Some(d.get_mut()),
            Inflater::Raw(d) => Some(d.get_mut()),
        }
    }

    fn write_all(&mut self, block: &[u8]) -> io::Result<()> {
        match self {
            Inflater::SniffDeflate => Ok(()),
            Inflater::Gzip(d) => d.write_all(block),
            Inflater::Zlib(d) => d.write_all(block),
            Inflater::Raw(d) => d.write_all(block),
        }
    }

    fn try_finish(&mut self) -> io::Result<()> {
        match self {
            Inflater::SniffDeflate => Ok(()),
            Inflater::Gzip(d) => d.try_finish(),
            Inflater::Zlib(d) => d.try_finish(),
            Inflater::Raw(d) => d.try_finish(),
        }
    }
}

/// gzip header flag bits (RFC 1952 §2.3.1).
const GZ_FHCRC: u8 = 0x02;
const GZ_FEXTRA: u8 = 0x04;
const GZ_FNAME: u8 = 0x08;
const GZ_FCOMMENT: u8 = 0x10;
const GZ_RESERVED: u8 = 0xe0;

/// Rewrites a gzip header at the start of `block` so that a strict decoder takes it the way
/// Chromium's header reader does: reserved flag bits are ignored and a header CRC is skipped
/// without being checked (both are rejected by zlib-style decoders, and used as evasions).
/// Returns whether anything was changed. A header that does not end inside `block` is left
/// alone.
fn relax_gzip_header(block: &mut Vec<u8>) -> bool {
    let flags = match block.as_slice() {
        [0x1f, 0x8b, 8, flags, ..] => *flags,
        _ => return false,
    };
    if flags & (GZ_RESERVED | GZ_FHCRC) == 0 {
        return false;
    }
    let mut end = 10usize;
    if flags & GZ_FEXTRA != 0 {
        let xlen = match (block.get(end), block.get(end + 1)) {
            (Some(&lo), Some(&hi)) => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return false,
        };
        end += 2 + xlen;
    }
    for bit in [GZ_FNAME, GZ_FCOMMENT] {
        if flags & bit != 0 {
            match block.get(end..).and_then(|rest| memchr::memchr(0, rest)) {
                Some(i) => end += i + 1,
                None => return false,
            }
        }
    }
    if flags & GZ_FHCRC != 0 {
        if block.len() < end + 2 {
            return false;
        }
        block.drain(end..end + 2);
    }
    if let Some(f) = block.get_mut(3) {
        *f = flags & !(GZ_RESERVED | GZ_FHCRC);
    }
    true
}

/// Does this start look like a zlib header (RFC 1950: CM=8, window ≤ 32K, check bits)?
fn is_zlib_header(b0: u8, b1: u8) -> bool {
    b0 & 0x0f == 8 && b0 >> 4 <= 7 && (u16::from(b0) << 8 | u16::from(b1)) % 31 == 0
}

enum Decoding {
    /// No content coding: wire bytes are the content.
    Identity(Collector),
    /// Content coding in progress.
    Inflate {
        inflater: Inflater,
        /// Compressed bytes waiting for a full block.
        stage: Vec<u8>,
        /// Compressed bytes handed to the inflater so far.
        fed: u64,
        /// Kept for the `deflate` sniff: the collector before an inflater owns it.
        pending: Option<Collector>,
    },
    /// Decoding stopped (guard, failure or gap); the final counts are kept.
    Stopped(Collector),
}

/// Collects one message body: counts wire and decoded bytes, keeps a bounded prefix of the
/// decoded content, and raises decoding anomalies.
pub struct BodySink {
    decoding: Decoding,
    wire_len: u64,
    /// Decoding anomalies raised so far (drained by the caller with [`BodySink::take_anomalies`]).
    anomalies: Vec<HttpAnomaly>,
    /// Decoding stopped early, so `data` may miss content.
    stopped: bool,
}

impl BodySink {
    /// A sink for a body with the given content coding.
    pub fn new(coding: Coding, cfg: &HttpConfig) -> Self {
        let collector = Collector::new(cfg.body_limit_bytes, cfg.max_decompressed_bytes);
        let mut anomalies = Vec::new();
        let decoding = match coding {
            Coding::Identity => Decoding::Identity(Collector {
                // Without decoding there is nothing to guard: the cap is the wire itself.
                cap: u64::MAX,
                ..collector
            }),
            Coding::Unsupported => {
                anomalies.push(HttpAnomaly::UnsupportedContentEncoding);
                Decoding::Identity(Collector {
                    cap: u64::MAX,
                    ..collector
                })
            }
            Coding::Gzip => Decoding::Inflate {
                inflater: Inflater::Gzip(Box::new(GzDecoder::new(collector))),
                stage: Vec::new(),
                fed: 0,
                pending: None,
            },
            Coding::Deflate => Decoding::Inflate {
                inflater: Inflater::SniffDeflate,
                stage: Vec::new(),
                fed: 0,
                pending: Some(collector),
            },
        };
        BodySink {
            decoding,
            wire_len: 0,
            anomalies,
            stopped: false,
        }
    }

    /// Anomalies raised since the last call.
    pub fn take_anomalies(&mut self) -> Vec<HttpAnomaly> {
        std::mem::take(&mut self.anomalies)
    }

    /// Wire bytes of the body (after de-chunking) seen so far.
    pub fn wire_len(&self) -> u64 {
        self.wire_len
    }

    /// Adds body bytes as they crossed the wire (de-chunked).
    pub fn write(&mut self, wire: &[u8], cfg: &HttpConfig) {
        if wire.is_empty() {
            return;
        }
        self.wire_len = self.wire_len.saturating_add(wire.len() as u64);
        let mut rest = wire;
        loop {
            match &mut self.decoding {
                Decoding::Identity(c) => {
                    c.accept(rest);
                    return;
                }
                Decoding::Stopped(_) => return,
                Decoding::Inflate { stage, .. } => {
                    let room = STAGE_BYTES.saturating_sub(stage.len());
                    let n = room.min(rest.len());
                    stage.extend_from_slice(rest.get(..n).unwrap_or(&[]));
                    rest = rest.get(n..).unwrap_or(&[]);
                    if stage.len() < STAGE_BYTES {
                        return;
                    }
                    self.run_block(cfg);
                }
            }
        }
    }

    /// Hands the staged block to the inflater and applies the guards.
    fn run_block(&mut self, cfg: &HttpConfig) {
        let Decoding::Inflate {
            inflater,
            stage,
            fed,
            pending,
        } = &mut self.decoding
        else {
            return;
        };
        if stage.is_empty() {
            return;
        }
        if let Inflater::SniffDeflate = inflater {
            let c = pending.take().unwrap_or_default();
            *inflater = match (stage.first(), stage.get(1)) {
                (Some(&b0), Some(&b1)) if is_zlib_header(b0, b1) => {
                    Inflater::Zlib(Box::new(ZlibDecoder::new(c)))
                }
                _ => Inflater::Raw(Box::new(DeflateDecoder::new(c))),
            };
        }
        let mut block = std::mem::take(stage);
        let first = *fed == 0;
        // The bytes as sent, kept only while a relaxed header may still have to be undone.
        let mut as_sent = None;
        if first && matches!(inflater, Inflater::Gzip(_)) {
            let original = block.clone();
            if relax_gzip_header(&mut block) {
                self.anomalies.push(HttpAnomaly::LenientGzipHeader);
                as_sent = Some(original);
            }
        }
        let Decoding::Inflate {
            inflater,
            stage,
            fed,
            ..
        } = &mut self.decoding
        else {
            return;
        };
        *fed = fed.saturating_add(block.len() as u64);
        let fed_now = *fed;
        let result = inflater.write_all(&block);
        let (decoded, hit_cap) = inflater
            .collector()
            .map_or((0, false), |c| (c.len, c.hit_cap));
        // A gzip magic or a valid zlib header says the body is encoded, even if it breaks later.
        let marked = match inflater {
            Inflater::Gzip(_) => block.starts_with(&[0x1f, 0x8b]),
            Inflater::Zlib(_) => true,
            Inflater::Raw(_) | Inflater::SniffDeflate => false,
        };
        match result {
            Err(_) if hit_cap => self.stop(Some(HttpAnomaly::DecompressionBomb)),
            Err(_) if first && decoded == 0 && !marked => {
                // Not in the declared coding from its first byte: the header was wrong (or an
                // evasion), and the bytes as sent are the best evidence of the content.
                self.stop(Some(HttpAnomaly::DecompressionFailed));
                self.keep_as_sent(as_sent.as_deref().unwrap_or(&block));
            }
            Err(_) => self.stop(Some(HttpAnomaly::DecompressionFailed)),
            Ok(()) if decoded >= cfg.max_decompressed_bytes => {
                self.stop(Some(HttpAnomaly::DecompressionBomb))
            }
            Ok(())
                if decoded > cfg.min_ratio_check_bytes
                    && decoded > fed_now.saturating_mul(cfg.max_decompression_ratio) =>
            {
                self.stop(Some(HttpAnomaly::DecompressionBomb))
            }
            Ok(()) => {
                // Reuse the allocation for the next block.
                block.clear();
                *stage = block;
            }
        }
    }

    /// Decoding failed on the first block without producing anything: the body is kept as
    /// identity from here on, starting with that block (wire bytes, so `len` equals `wire_len`).
    fn keep_as_sent(&mut self, block: &[u8]) {
        let Decoding::Stopped(c) = &mut self.decoding else {
            return;
        };
        let mut identity = Collector {
            cap: u64::MAX,
            ..Collector::new(c.limit, u64::MAX)
        };
        identity.accept(block);
        self.decoding = Decoding::Identity(identity);
        self.stopped = false;
    }

    /// Stops decoding, keeping the counts so far.
    fn stop(&mut self, why: Option<HttpAnomaly>) {
        let collector = match &mut self.decoding {
            Decoding::Identity(c) | Decoding::Stopped(c) => {
                c.keep = false;
                return;
            }
            Decoding::Inflate {
                inflater, pending, ..
            } => match inflater.collector() {
                Some(c) => std::mem::take(c),
                None => pending.take().unwrap_or_default(),
            },
        };
        // `collector` was replaced by a closed default, so the inflater's drop-time flush is a
        // no-op instead of more decompression work.
        self.decoding = Decoding::Stopped(collector);
        self.stopped = true;
        if let Some(a) = why {
            self.anomalies.push(a);
        }
    }

    /// Accounts for `len` body bytes lost in a capture gap.
    pub fn gap(&mut self, len: u64) {
        self.wire_len = self.wire_len.saturating_add(len);
        match &mut self.decoding {
            Decoding::Identity(c) => {
                c.len = c.len.saturating_add(len);
                c.keep = false;
                self.stopped = true;
            }
            // A compressed stream cannot continue past a hole.
            Decoding::Inflate { .. } => self.stop(None),
            Decoding::Stopped(_) => {}
        }
    }

    /// Ends the body. `complete` is false when the message was cut short (gap, close), in which
    /// case an unfinished compressed stream is expected and not flagged.
    pub fn finish(mut self, complete: bool, cfg: &HttpConfig) -> Finished {
        if matches!(self.decoding, Decoding::Inflate { .. }) {
            self.run_block(cfg);
        }
        let mut clean = None;
        if let Decoding::Inflate {
            inflater, pending, ..
        } = &mut self.decoding
        {
            let result = inflater.try_finish();
            let hit_cap = inflater.collector().is_some_and(|c| c.hit_cap);
            match result {
                Err(_) if hit_cap => self.stop(Some(HttpAnomaly::DecompressionBomb)),
                Err(_) if complete => self.stop(Some(HttpAnomaly::DecompressionFailed)),
                Err(_) => self.stop(None),
                Ok(()) => {
                    clean = Some(match inflater.collector() {
                        Some(c) => std::mem::take(c),
                        None => pending.take().unwrap_or_default(),
                    })
                }
            }
        }
        let collector = match (clean, self.decoding) {
            (Some(c), _) => c,
            (None, Decoding::Identity(c) | Decoding::Stopped(c)) => c,
            (None, Decoding::Inflate { .. }) => Collector::default(),
        };
        Finished {
            hit_limit: collector.limited,
            body: Body {
                truncated: collector.limited || self.stopped,
                len: collector.len,
                wire_len: self.wire_len,
                data: collector.data,
            },
            anomalies: self.anomalies,
        }
    }
}

/// A finished body.
#[derive(Debug)]
pub struct Finished {
    pub body: Body,
    /// Decoding anomalies not yet taken.
    pub anomalies: Vec<HttpAnomaly>,
    /// Content went past `body_limit_bytes` and was not all kept.
    pub hit_limit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    fn cfg() -> HttpConfig {
        HttpConfig::default()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Runs a whole body through framing and decoding, fed in pieces of `step` bytes.
    fn decode(
        framing: Framing,
        coding: Coding,
        wire: &[u8],
        step: usize,
        cfg: &HttpConfig,
    ) -> (Body, Vec<HttpAnomaly>, usize, Progress) {
        let mut td = TransferDecoder::new(framing);
        let mut sink = BodySink::new(coding, cfg);
        let mut anomalies = Vec::new();
        let mut used = 0;
        let mut progress = Progress::NeedMore;
        for piece in wire.chunks(step.max(1)) {
            let (n, p) = td.feed(piece, cfg, &mut sink, &mut anomalies);
            used += n;
            progress = p;
            if p != Progress::NeedMore {
                break;
            }
        }
        let mut f = sink.finish(progress == Progress::Done, cfg);
        anomalies.append(&mut f.anomalies);
        let body = f.body;
        (body, anomalies, used, progress)
    }

    #[test]
    fn chunked_with_extensions_and_trailers_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, anomalies, used, p) =
                decode(Framing::Chunked, Coding::Identity, wire, step, &cfg());
            assert_eq!(body.data, b"hello world");
            assert_eq!((body.len, body.wire_len), (11, 11));
            assert!(anomalies.is_empty());
            assert_eq!(p, Progress::Done);
            assert_eq!(used, wire.len() - 4, "step {step}");
        }
    }

    #[test]
    fn chunk_size_errors_lose_framing_without_overflow() {
        for (line, a) in [
            ("FFFFFFFFFFFFFFFFF\r\n", HttpAnomaly::ChunkSizeOverflow),
            ("-1\r\n", HttpAnomaly::NegativeChunkSize),
            ("zz\r\n", HttpAnomaly::InvalidChunkSize),
        ] {
            let (body, anomalies, used, p) = decode(
                Framing::Chunked,
                Coding::Identity,
                line.as_bytes(),
                1,
                &cfg(),
            );
            assert_eq!(p, Progress::Lost, "{line}");
            assert_eq!(anomalies, vec![a]);
            assert_eq!(used, line.len());
            assert_eq!(body.len, 0);
        }
        // The largest representable chunk just keeps counting.
        let (body, _, _, p) = decode(
            Framing::Chunked,
            Coding::Identity,
            b"FFFFFFFFFFFFFFFF\r\nabc",
            2,
            &cfg(),
        );
        assert_eq!((p, body.len), (Progress::NeedMore, 3));
    }

    #[test]
    fn missing_chunk_crlf_is_flagged_and_tolerated() {
        let (body, anomalies, _, p) = decode(
            Framing::Chunked,
            Coding::Identity,
            b"3\r\nabc3\r\ndef\n0\r\n\r\n",
            1,
            &cfg(),
        );
        assert_eq!(p, Progress::Done);
        assert_eq!(body.data, b"abcdef");
        assert_eq!(anomalies, vec![HttpAnomaly::MissingChunkCrlf]);
    }

    #[test]
    fn oversize_chunk_line_is_lost() {
        // The whole over-long line is skipped, wherever the packet boundaries fall.
        let mut wire = b"5;".to_vec();
        wire.extend(std::iter::repeat_n(b'x', 100_000));
        wire.extend_from_slice(b"\r\nNEXT");
        for step in [1, 999, wire.len()] {
            let (_, anomalies, used, p) =
                decode(Framing::Chunked, Coding::Identity, &wire, step, &cfg());
            assert_eq!((p, used), (Progress::Lost, wire.len() - 4));
            assert_eq!(anomalies, vec![HttpAnomaly::OversizeChunkLine]);
        }
    }

    #[test]
    fn length_body_keeps_limit_and_counts_all() {
        let c = HttpConfig {
            body_limit_bytes: 4,
            ..cfg()
        };
        let (body, _, used, p) = decode(
            Framing::Length(10),
            Coding::Identity,
            b"0123456789AB",
            3,
            &c,
        );
        assert_eq!((used, p), (10, Progress::Done));
        assert_eq!(body.data, b"0123");
        assert_eq!((body.len, body.wire_len, body.truncated), (10, 10, true));
    }

    #[test]
    fn gzip_headers_with_reserved_bits_or_a_header_crc_decode_as_in_chromium() {
        let text = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
        let plain = gzip(text);
        // FHCRC with a bogus CRC inserted after the 10-byte header (http-evader 195).
        let mut hcrc = plain.clone();
        hcrc[3] |= GZ_FHCRC;
        hcrc.splice(10..10, [0u8, 0]);
        // A file name, then the header CRC: the CRC follows the name.
        let mut named = plain.clone();
        named[3] |= GZ_FNAME | GZ_FHCRC;
        named.splice(10..10, b"eicar.txt\0\x12\x34".iter().copied());
        for (what, reserved) in [
            ("reserved 0x40", 0x40u8),
            ("reserved 0x80", 0x80),
            ("0x20", 0x20),
        ] {
            let mut v = plain.clone();
            v[3] |= reserved;
            for step in [1, 7, 4096] {
                let (body, anomalies, _, _) = decode(
                    Framing::Length(v.len() as u64),
                    Coding::Gzip,
                    &v,
                    step,
                    &cfg(),
                );
                assert_eq!(body.data, text, "{what} step {step}");
                assert_eq!(anomalies, vec![HttpAnomaly::LenientGzipHeader], "{what}");
            }
        }
        for v in [hcrc, named] {
            for step in [1, 3, 4096] {
                let (body, anomalies, _, _) = decode(
                    Framing::Length(v.len() as u64),
                    Coding::Gzip,
                    &v,
                    step,
                    &cfg(),
                );
                assert_eq!(body.data, text, "step {step}");
                assert_eq!(body.wire_len, v.len() as u64);
                assert_eq!(anomalies, vec![HttpAnomaly::LenientGzipHeader]);
            }
        }
        // An ordinary header is left alone.
        let (body, anomalies, _, _) = decode(
            Framing::Length(plain.len() as u64),
            Coding::Gzip,
            &plain,
            5,
            &cfg(),
        );
        assert_eq!((body.data.as_slice(), anomalies.len()), (&text[..], 0));
    }

    #[test]
    fn a_body_not_in_its_declared_coding_is_kept_as_sent() {
        // `Content-Encoding: deflate,` (http-evader 168) or gzip over plain bytes: nothing
        // decodes, so the body is the wire bytes, flagged decompression_failed.
        let text = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
        let mut long = Vec::new();
        while long.len() < 3 * STAGE_BYTES {
            long.extend_from_slice(text);
        }
        for coding in [Coding::Deflate, Coding::Gzip] {
            for wire in [&text[..], &long[..]] {
                for step in [1, 13, 5000] {
                    let (body, anomalies, _, _) = decode(
                        Framing::Length(wire.len() as u64),
                        coding,
                        wire,
                        step,
                        &cfg(),
                    );
                    assert_eq!(body.len, wire.len() as u64, "{coding:?} step {step}");
                    assert_eq!(body.wire_len, wire.len() as u64);
                    assert_eq!(body.data, wire, "{coding:?} step {step}");
                    assert_eq!(anomalies, vec![HttpAnomaly::DecompressionFailed]);
                }
            }
        }
        // A body that starts as gzip and then breaks is not taken for plain bytes.
        let mut broken = gzip(&long);
        let n = broken.len();
        broken[n / 2..].iter_mut().for_each(|b| *b = 0xff);
        let (body, anomalies, _, _) = decode(
            Framing::Length(n as u64),
            Coding::Gzip,
            &broken,
            100,
            &cfg(),
        );
        assert_ne!(body.data, broken);
        assert_eq!(anomalies, vec![HttpAnomaly::DecompressionFailed]);
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_decode_at_any_split() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{i},").into_bytes())
            .collect();
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&text).unwrap();
        let zlib = z.finish().unwrap();
        let mut d = DeflateEncoder::new(Vec::new(), Compression::default());
        d.write_all(&text).unwrap();
        let raw = d.finish().unwrap();
        for (coding, wire) in [
            (Coding::Gzip, gzip(&text)),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
        ] {
            for step in [1, 100, wire.len()] {
                let (body, anomalies, _, _) = decode(
                    Framing::Length(wire.len() as u64),
                    coding,
                    &wire,
                    step,
                    &cfg(),
                );
                assert!(anomalies.is_empty(), "{anomalies:?}");
                assert_eq!(body.len, text.len() as u64);
                assert_eq!(body.wire_len, wire.len() as u64);
                assert_eq!(body.data, text[..64 * 1024]);
                assert!(body.truncated);
            }
        }
    }

    #[test]
    fn corrupt_gzip_is_flagged() {
        let wire = b"this is not gzip at all";
        let (body, anomalies, _, _) = decode(
            Framing::Length(wire.len() as u64),
            Coding::Gzip,
            wire,
            5,
            &cfg(),
        );
        assert_eq!(anomalies, vec![HttpAnomaly::DecompressionFailed]);
        assert_eq!(body.wire_len, wire.len() as u64);
    }

    #[test]
    fn one_gigabyte_gzip_bomb_stops_at_the_cap_without_allocating_it() {
        // Build a gzip stream of 1 GiB of zeros without holding 1 GiB: compress in pieces.
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
        // Ratio guard (default 1000) trips first.
        let (body, anomalies, _, _) = decode(
            Framing::Length(bomb.len() as u64),
            Coding::Gzip,
            &bomb,
            1500,
            &cfg(),
        );
        assert_eq!(anomalies, vec![HttpAnomaly::DecompressionBomb]);
        assert!(body.len < 64 << 20);
        assert_eq!(body.data.len(), 64 * 1024);
        assert!(body.truncated);
        // Without the ratio guard, the absolute cap stops it at exactly the cap.
        let c = HttpConfig {
            max_decompression_ratio: u64::MAX,
            max_decompressed_bytes: 8 << 20,
            ..cfg()
        };
        let (body, anomalies, _, _) = decode(
            Framing::Length(bomb.len() as u64),
            Coding::Gzip,
            &bomb,
            70_000,
            &c,
        );
        assert_eq!(anomalies, vec![HttpAnomaly::DecompressionBomb]);
        assert_eq!(body.len, 8 << 20);
    }

    #[test]
    fn gaps_inside_bodies() {
        let c = cfg();
        let mut td = TransferDecoder::new(Framing::Length(10));
        let mut sink = BodySink::new(Coding::Identity, &c);
        let mut a = Vec::new();
        td.feed(b"abc", &c, &mut sink, &mut a);
        assert_eq!(td.gap(4, &mut sink), GapOutcome::Absorbed);
        assert_eq!(
            td.feed(b"xyzNEXT", &c, &mut sink, &mut a),
            (3, Progress::Done)
        );
        let body = sink.finish(true, &c).body;
        assert_eq!(
            (body.len, body.data.as_slice(), body.truncated),
            (10, &b"abc"[..], true)
        );

        let mut td = TransferDecoder::new(Framing::Chunked);
        let mut sink = BodySink::new(Coding::Identity, &c);
        td.feed(b"5\r\nab", &c, &mut sink, &mut a);
        assert_eq!(td.gap(3, &mut sink), GapOutcome::Absorbed);
        assert_eq!(
            td.feed(b"\r\n0\r\n\r\n", &c, &mut sink, &mut a).1,
            Progress::Done
        );
        let mut td = TransferDecoder::new(Framing::Chunked);
        td.feed(b"5\r\nab", &c, &mut sink, &mut a);
        assert_eq!(td.gap(4, &mut sink), GapOutcome::Lost);
        let mut td = TransferDecoder::new(Framing::Chunked);
        td.feed(b"5", &c, &mut sink, &mut a);
        assert_eq!(td.gap(1, &mut sink), GapOutcome::Lost);
        assert!(a.is_empty());
    }
}

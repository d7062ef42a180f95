//! Per-direction TCP byte-stream reassembly for a passive sensor.
//!
//! A [`Stream`] turns the segments of one direction of a connection, in capture order, into an
//! ordered sequence of [`StreamEvent`]s: contiguous `Data`, `Gap`s of known length where the
//! capture lost bytes, one `Fin`, and named `Anomaly`s. We see a mirror copy and never ACK, so
//! the stream cannot ask for a retransmission: holes are waited for while memory allows and the
//! peer has not acknowledged past them, then given up as gaps.
//!
//! Invariants:
//! - Every stream position from the start point to the delivery point is reported exactly once,
//!   in order, as either `Data` or `Gap`. Nothing is delivered twice; overlapping bytes are
//!   resolved first-wins (the first copy we saw is the one delivered).
//! - Positions are 64-bit offsets from the stream's start, never raw sequence numbers; a segment's
//!   place is found from its distance to the delivery point, so wraparound at 2^32 (and streams
//!   longer than 4 GiB) need no special cases.
//! - Only out-of-order bytes are copied. In-order data with nothing buffered is handed out
//!   straight from the caller's slice, so the steady state allocates nothing.
//! - Every byte held (plus a fixed per-segment overhead) is charged to the worker's [`MemBudget`]
//!   and released when delivered or flushed. A stream must be `flush`ed before it is dropped, or
//!   its charge stays in the budget.
//! - No clock, no I/O, no panics on any input; every limit is a [`StreamConfig`] field with a
//!   policy and a counter in [`StreamStats`].
//!
//! - Retransmissions of delivered bytes are checked against a small ring of the last bytes
//!   delivered, kept per stream only once that stream has first reached back behind its delivery
//!   point: a stream that never retransmits keeps nothing and pays one `None` test per delivery.
//!   Verification only reports; it never changes what is delivered (the first copy still wins).
//!
//! Deliberately absent: comparing retransmissions with delivered bytes older than the ring, or
//! delivered before the stream's first retransmission (counted as `overlaps_unverified`), RST and
//! connection state (the flow table's job), urgent data, and PAWS/timestamp checks.

use super::seq::SeqNum;
use std::collections::BTreeMap;

/// Memory charged to the [`MemBudget`] for each buffered segment on top of its bytes: the map
/// entry and `Vec` header, rounded up. Charging it keeps floods of tiny segments honest.
pub const SEGMENT_OVERHEAD_BYTES: usize = 64;

/// Limits for one direction of one connection (`[stream]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Out-of-order payload bytes held per direction. When a segment would exceed it, the
    /// earliest hole is declared lost (a `Gap`) and what follows it is delivered; counted in
    /// `buffer_limit_hits`. Default 1 MiB.
    pub max_buffered_bytes: usize,
    /// Out-of-order segments held per direction (contiguous arrivals share one). Same policy and
    /// counter as `max_buffered_bytes`. Default 2048.
    pub max_segments: usize,
    /// How far ahead of the delivery point a segment or an ACK may land before it is treated as
    /// bogus: it is ignored and reported as `SegmentOutOfWindow` / `AckOutOfWindow`. The largest
    /// window TCP can advertise is 2^30 bytes (RFC 7323 §2.3), so that is the default.
    pub max_ahead_bytes: u64,
    /// Delivered bytes kept per direction to compare later retransmissions of them against.
    /// Nothing is kept until a stream first receives a segment reaching back behind its
    /// delivery point; from then on its last `overlap_retain_bytes` delivered bytes are kept in a
    /// ring charged to the shared memcap, and a retransmission that differs from them raises
    /// `OverlapMismatch` (`overlap_mismatches`). Rings together take at most half the memcap; a
    /// ring that does not fit is not kept (`retain_memcap_hits`) and asked for again at the next
    /// retransmission. Bytes that cannot be compared are counted in `overlaps_unverified`.
    /// 0 disables. Default 4096.
    pub overlap_retain_bytes: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_buffered_bytes: 1 << 20,
            max_segments: 2048,
            max_ahead_bytes: 1 << 30,
            overlap_retain_bytes: 4096,
        }
    }
}

/// The out-of-order memory cap shared by all streams of one worker.
///
/// Single-threaded by design (each worker owns its own); a stream that cannot charge it first
/// gives up its own earliest hole, so one stream's backlog never blocks another's delivery.
/// Retention rings are charged here too, but together never more than half the cap, so
/// verifying retransmissions can never starve reassembly of more than half its memory.
#[derive(Debug, PartialEq, Eq)]
pub struct MemBudget {
    memcap_bytes: usize,
    used: usize,
    /// The part of `used` held by retention rings.
    retained: usize,
}

impl MemBudget {
    pub fn new(memcap_bytes: usize) -> Self {
        MemBudget {
            memcap_bytes,
            used: 0,
            retained: 0,
        }
    }

    /// Bytes currently charged by retention rings (included in `used`).
    pub fn retained(&self) -> usize {
        self.retained
    }

    /// Charges `n` bytes for a retention ring if they fit under the cap and keep all rings
    /// within half of it; charges nothing otherwise.
    fn try_charge_retained(&mut self, n: usize) -> bool {
        let fits = self
            .retained
            .checked_add(n)
            .is_some_and(|total| total <= self.memcap_bytes / 2);
        if fits && self.try_charge(n) {
            self.retained += n;
            return true;
        }
        false
    }

    /// Returns `n` bytes charged by `try_charge_retained`.
    fn release_retained(&mut self, n: usize) {
        self.release(n);
        self.retained = self.retained.saturating_sub(n);
    }

    /// Bytes currently charged by all streams.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn memcap_bytes(&self) -> usize {
        self.memcap_bytes
    }

    /// Charges `n` bytes if they fit under the cap; charges nothing otherwise.
    pub fn try_charge(&mut self, n: usize) -> bool {
        match self.used.checked_add(n) {
            Some(total) if total <= self.memcap_bytes => {
                self.used = total;
                true
            }
            _ => false,
        }
    }

    /// Returns `n` previously charged bytes.
    pub fn release(&mut self, n: usize) {
        // Saturating: a double release would be a bug here, but must not wrap the gauge.
        self.used = self.used.saturating_sub(n);
    }
}

/// Something odd about a TCP byte stream, reported in-band as `StreamEvent::Anomaly`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpAnomaly {
    /// A retransmission or overlapping segment carried different bytes than the copy kept.
    OverlapMismatch,
    /// Payload beyond the sequence position of the FIN; the excess was ignored.
    DataAfterFin,
    /// A FIN at a different position than an earlier FIN, or behind data already seen; ignored.
    InconsistentFin,
    /// A segment starting more than `max_ahead_bytes` ahead of the delivery point; dropped.
    SegmentOutOfWindow,
    /// An acknowledgement more than `max_ahead_bytes` ahead of the delivery point; ignored.
    AckOutOfWindow,
}

impl TcpAnomaly {
    pub fn name(self) -> &'static str {
        match self {
            TcpAnomaly::OverlapMismatch => "overlap_mismatch",
            TcpAnomaly::DataAfterFin => "data_after_fin",
            TcpAnomaly::InconsistentFin => "inconsistent_fin",
            TcpAnomaly::SegmentOutOfWindow => "segment_out_of_window",
            TcpAnomaly::AckOutOfWindow => "ack_out_of_window",
        }
    }
}

/// What a stream hands to its consumer, in stream order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// The next `n` bytes of the stream were lost by the capture.
    Gap(u64),
    /// The sender closed its side; no data follows.
    Fin,
    /// Something odd was seen; delivery continues.
    Anomaly(TcpAnomaly),
}

/// Reassembly counters. Plain sums, so per-stream stats can be added into per-worker totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Segments passed to `on_segment`.
    pub segments: u64,
    /// Payload bytes passed to `on_segment`.
    pub payload_bytes: u64,
    /// Bytes delivered as `Data`.
    pub delivered_bytes: u64,
    /// Payload bytes at positions already delivered or given up as lost.
    pub retransmitted_bytes: u64,
    /// Segments that overlapped bytes still buffered.
    pub overlaps: u64,
    /// Payload bytes that overlapped bytes still buffered (and were discarded, first-wins).
    pub overlap_bytes: u64,
    /// Segments whose overlapping bytes differed from the buffered or retained copy.
    pub overlap_mismatches: u64,
    /// Segments reaching back behind the delivery point of which some bytes could not be
    /// compared with what was delivered (no ring yet, older than the ring, or lost).
    pub overlaps_unverified: u64,
    /// Bytes behind the delivery point compared with the retained copy.
    pub overlap_verified_bytes: u64,
    /// Streams that started retaining delivered bytes (after their first retransmission).
    pub retaining_streams: u64,
    /// Times a retention ring was not kept because the memcap (or its half for rings) was full.
    pub retain_memcap_hits: u64,
    /// Segments that had to be buffered because they arrived ahead of a hole.
    pub out_of_order_segments: u64,
    /// `Gap` events delivered.
    pub gaps: u64,
    /// Bytes covered by `Gap` events.
    pub gap_bytes: u64,
    /// Times `max_buffered_bytes` or `max_segments` forced a hole to be given up.
    pub buffer_limit_hits: u64,
    /// Times the shared `MemBudget` forced a hole to be given up.
    pub memcap_hits: u64,
    /// Segments ignored entirely (out of window).
    pub dropped_segments: u64,
    /// Segments carrying payload beyond the FIN.
    pub data_after_fin: u64,
    /// FINs ignored because they contradicted an earlier FIN or data already seen.
    pub inconsistent_fins: u64,
    /// ACKs ignored because they were implausibly far ahead.
    pub out_of_window_acks: u64,
}

impl StreamStats {
    pub fn add(&mut self, other: &StreamStats) {
        // Destructuring makes a newly added field a compile error here until it is summed.
        let StreamStats {
            segments,
            payload_bytes,
            delivered_bytes,
            retransmitted_bytes,
            overlaps,
            overlap_bytes,
            overlap_mismatches,
            overlaps_unverified,
            overlap_verified_bytes,
            retaining_streams,
            retain_memcap_hits,
            out_of_order_segments,
            gaps,
            gap_bytes,
            buffer_limit_hits,
            memcap_hits,
            dropped_segments,
            data_after_fin,
            inconsistent_fins,
            out_of_window_acks,
        } = other;
        self.segments += segments;
        self.payload_bytes += payload_bytes;
        self.delivered_bytes += delivered_bytes;
        self.retransmitted_bytes += retransmitted_bytes;
        self.overlaps += overlaps;
        self.overlap_bytes += overlap_bytes;
        self.overlap_mismatches += overlap_mismatches;
        self.overlaps_unverified += overlaps_unverified;
        self.overlap_verified_bytes += overlap_verified_bytes;
        self.retaining_streams += retaining_streams;
        self.retain_memcap_hits += retain_memcap_hits;
        self.out_of_order_segments += out_of_order_segments;
        self.gaps += gaps;
        self.gap_bytes += gap_bytes;
        self.buffer_limit_hits += buffer_limit_hits;
        self.memcap_hits += memcap_hits;
        self.dropped_segments += dropped_segments;
        self.data_after_fin += data_after_fin;
        self.inconsistent_fins += inconsistent_fins;
        self.out_of_window_acks += out_of_window_acks;
    }
}

/// What a stream needs from its owner on every call: limits, the worker's memory budget and the
/// counters to bump.
pub struct StreamCtx<'c> {
    pub cfg: &'c StreamConfig,
    pub budget: &'c mut MemBudget,
    pub stats: &'c mut StreamStats,
}

/// Why an out-of-order piece could not be stored.
enum Refusal {
    StreamLimit,
    Memcap,
}

/// One direction of a TCP connection being reassembled.
#[derive(Debug, Default)]
pub struct Stream {
    /// False until a SYN or the first segment fixes where the stream starts.
    started: bool,
    /// The ISN of the SYN that started the stream, if it was started by one.
    isn: Option<SeqNum>,
    /// Stream offset of the next byte to report (everything before it was `Data` or `Gap`).
    next: u64,
    /// Sequence number of offset `next`; kept in step with it so the in-order check is one
    /// comparison.
    next_seq: SeqNum,
    /// Bytes delivered as `Data`.
    delivered: u64,
    /// Stream offset at which the FIN sits (the end of the data), once seen.
    fin_at: Option<u64>,
    /// Highest stream offset any segment reached (a bare ACK's sequence number counts: the
    /// sender had sent everything before it). Only kept up to date off the in-order fast path,
    /// where `next` covers it; `flush` reports any hole below it as lost.
    seen_end: u64,
    fin_delivered: bool,
    /// The last position reported was inside a `Gap`. An ACK of a FIN we have not seen yet
    /// reports the FIN's own sequence number as a lost byte; this lets that FIN still land, one
    /// position behind `next`, when it shows up.
    ends_in_gap: bool,
    /// Out-of-order bytes by stream offset. Invariant between calls: entries are disjoint and
    /// non-empty, every key is greater than `next`, and no entry extends past `fin_at`. Bytes
    /// that continue an entry are appended to it rather than stored separately.
    segs: BTreeMap<u64, Vec<u8>>,
    /// Sum of the lengths in `segs`.
    buffered: usize,
    /// What this stream has charged to the budget: capacities in `segs` plus overheads.
    charged: usize,
    /// The last bytes delivered, kept only once this stream has reached back behind `next`
    /// (never when `overlap_retain_bytes` is 0). Boxed so a stream that never retransmits pays
    /// one pointer for it. Its charge is `Retained::cost` and `flush` returns it.
    retained: Option<Box<Retained>>,
}

/// A ring of the last delivered bytes of a stream, by stream offset: offset `o` is kept at
/// `buf[o % buf.len()]`.
///
/// Invariant: `buf` is non-empty, `len <= buf.len()` and `len <= end`, and the ring holds exactly
/// the bytes delivered at offsets `[end - len, end)`, which were one run of `Data` (a delivery
/// that does not continue at `end`, i.e. one after a gap, starts the run afresh).
#[derive(Debug)]
struct Retained {
    buf: Box<[u8]>,
    end: u64,
    len: usize,
}

/// What comparing a retransmission with the retained bytes found.
struct Verified {
    /// Bytes that could be compared.
    compared: u64,
    /// Some compared byte differed.
    differs: bool,
}

impl Retained {
    /// The budget charge of a ring holding `n` bytes: its buffer plus the box, rounded up.
    fn cost(n: usize) -> usize {
        n.saturating_add(SEGMENT_OVERHEAD_BYTES)
    }

    /// Records bytes delivered at offset `at`.
    fn push(&mut self, at: u64, data: &[u8]) {
        if at != self.end {
            self.len = 0;
        }
        // Only the newest `buf.len()` bytes can be kept.
        let skip = data.len().saturating_sub(self.buf.len());
        let data = data.get(skip..).unwrap_or_default();
        let at = at + skip as u64;
        let (first, second) = self.pieces(at, data.len());
        let (head, tail) = data.split_at(first.len().min(data.len()));
        if let Some(dst) = self.buf.get_mut(first) {
            dst.copy_from_slice(head);
        }
        if let Some(dst) = self.buf.get_mut(second) {
            dst.copy_from_slice(tail);
        }
        self.end = at + data.len() as u64;
        self.len = self.len.saturating_add(data.len()).min(self.buf.len());
    }

    /// Compares `data`, seen at offset `at`, with the retained bytes where they overlap.
    fn verify(&self, at: u64, data: &[u8]) -> Verified {
        let from = at.max(self.end.saturating_sub(self.len as u64));
        let to = (at + data.len() as u64).min(self.end);
        if from >= to {
            return Verified {
                compared: 0,
                differs: false,
            };
        }
        // Both bounds lie within `data`, and `to - from <= len <= buf.len()`.
        let seen = data
            .get((from - at) as usize..(to - at) as usize)
            .unwrap_or_default();
        let (first, second) = self.pieces(from, seen.len());
        let (head, tail) = seen.split_at(first.len().min(seen.len()));
        let same = self.buf.get(first) == Some(head) && self.buf.get(second) == Some(tail);
        Verified {
            compared: to - from,
            differs: !same,
        }
    }

    /// Where `n <= buf.len()` bytes from offset `at` sit in `buf`: up to the end of the buffer,
    /// then wrapped round to its start.
    fn pieces(&self, at: u64, n: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let cap = self.buf.len();
        // The remainder is below `cap`, so it fits usize; `cap` is never 0 (see `arm`).
        let slot = at.checked_rem(cap as u64).unwrap_or(0) as usize;
        let first = n.min(cap - slot);
        (slot..slot + first, 0..n - first)
    }
}

impl Stream {
    /// A stream that has seen nothing. Allocates nothing.
    pub fn new() -> Stream {
        Stream::default()
    }

    /// A SYN (or SYN-ACK) from this direction's sender: data starts at `isn + 1`.
    ///
    /// A retransmitted SYN is a no-op. A SYN with a different ISN restarts the stream only while
    /// nothing has been delivered or buffered; after that it is ignored here, and deciding
    /// whether it opens a new connection on the same ports is the flow table's business.
    pub fn on_syn(&mut self, isn: SeqNum) {
        if self.isn == Some(isn) {
            return;
        }
        if self.started && (self.next != 0 || !self.segs.is_empty() || self.fin_at.is_some()) {
            return;
        }
        // Nothing is held (checked above; a retention ring exists only once `next > 0`), so
        // starting afresh leaks no budget.
        *self = Stream {
            started: true,
            isn: Some(isn),
            next_seq: isn.add(1),
            ..Stream::default()
        };
    }

    /// One segment from this direction's sender, in capture order. `fin` is the segment's FIN
    /// flag; the FIN sits right after its payload.
    pub fn on_segment(
        &mut self,
        seq: SeqNum,
        payload: &[u8],
        fin: bool,
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        ctx.stats.segments += 1;
        ctx.stats.payload_bytes += payload.len() as u64;
        if !self.started {
            // Midstream pickup: the first segment seen defines the start of the stream.
            self.started = true;
            self.next_seq = seq;
        }

        // The common case: the next bytes, nothing waiting, no FIN to place.
        if seq == self.next_seq && self.segs.is_empty() && self.fin_at.is_none() && !fin {
            self.deliver(payload, ctx, out);
            return;
        }

        let rel = i64::from(seq.diff(self.next_seq));
        if rel > 0 && rel.unsigned_abs() > ctx.cfg.max_ahead_bytes {
            ctx.stats.dropped_segments += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::SegmentOutOfWindow));
            return;
        }
        // Offsets in i128 so a segment reaching back before the stream start cannot underflow.
        let seg_start = i128::from(self.next) + i128::from(rel);
        let seg_end = seg_start + payload.len() as i128;

        if fin {
            self.on_fin(seg_end, ctx, out);
        }
        let mut end = seg_end;
        if let Some(fin_at) = self.fin_at {
            // A bare ACK after the FIN sits at fin_at + 1 but carries no bytes: not an anomaly.
            if end > i128::from(fin_at) {
                if !payload.is_empty() {
                    ctx.stats.data_after_fin += 1;
                    out(StreamEvent::Anomaly(TcpAnomaly::DataAfterFin));
                }
                end = i128::from(fin_at);
            }
        }
        let next = i128::from(self.next);
        if end > i128::from(self.seen_end) {
            // `end` is above `seen_end >= 0` and within 2^31 + payload of `next`: it fits u64.
            self.seen_end = end as u64;
        }
        let start = seg_start.max(next);
        if start > seg_start {
            ctx.stats.retransmitted_bytes += (end.min(next) - seg_start).max(0) as u64;
        }
        // The bytes behind the delivery point (from the stream's start on) were reported
        // already; they only get compared with what was delivered there.
        let (behind, behind_end) = (seg_start.max(0), end.min(next));
        let mut flagged = false;
        if behind < behind_end {
            // Both bounds lie within [0, next] and within the payload's span.
            let data = payload
                .get((behind - seg_start) as usize..(behind_end - seg_start) as usize)
                .unwrap_or_default();
            flagged = self.verify_behind(behind as u64, data, ctx, out);
        }
        if start < end {
            // Both bounds lie within [next, next + 2^31 + payload.len()], so they fit u64, and
            // their distances from seg_start are within the payload.
            let data = payload
                .get((start - seg_start) as usize..(end - seg_start) as usize)
                .unwrap_or_default();
            self.insert(start as u64, data, flagged, ctx, out);
        }
        self.drain(ctx, out);
    }

    /// An acknowledgement sent by the *other* direction: its receiver has every byte of this
    /// stream before `ack`. A hole below it was lost by the capture, not the network, so it will
    /// never be filled and is reported as a gap now.
    pub fn on_peer_ack(
        &mut self,
        ack: SeqNum,
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        if !self.started {
            return;
        }
        let rel = ack.diff(self.next_seq);
        if rel <= 0 {
            return;
        }
        let rel = u64::from(rel.unsigned_abs());
        if rel > ctx.cfg.max_ahead_bytes {
            ctx.stats.out_of_window_acks += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::AckOutOfWindow));
            return;
        }
        let mut target = self.next.saturating_add(rel);
        if let Some(fin_at) = self.fin_at {
            // The FIN takes one sequence number of its own; the ACK for it covers no data.
            target = target.min(fin_at);
        }
        self.give_up_until(target, ctx, out);
    }

    /// End of flow: every remaining hole is a gap, everything buffered is delivered, and the
    /// stream ends up holding no memory. A hole before the FIN, or before the highest sequence
    /// number seen, is reported as a gap reaching it.
    pub fn flush(&mut self, ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        let target = self.fin_at.unwrap_or(self.seen_end.max(self.next));
        self.give_up_until(target, ctx, out);
        if let Some(r) = self.retained.take() {
            ctx.budget.release_retained(Retained::cost(r.buf.len()));
        }
        // Delivery emptied the map; replacing it also returns the (empty) root node.
        self.segs = BTreeMap::new();
        ctx.budget.release(self.charged);
        self.charged = 0;
        self.buffered = 0;
    }

    /// Out-of-order payload bytes held.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Delivered bytes held to verify retransmissions against (0 until the stream first
    /// reaches back behind its delivery point).
    pub fn retained_bytes(&self) -> usize {
        self.retained.as_ref().map_or(0, |r| r.len)
    }

    /// Bytes delivered as `Data` so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Sequence number of the next byte to deliver, once the stream has started.
    pub fn next_seq(&self) -> Option<SeqNum> {
        self.started.then_some(self.next_seq)
    }

    /// Whether `Fin` has been delivered.
    pub fn is_finished(&self) -> bool {
        self.fin_delivered
    }

    /// Records a FIN at stream offset `at` (first FIN wins).
    fn on_fin(&mut self, at: i128, ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        let last = self
            .segs
            .last_key_value()
            .map(|(&k, buf)| k + buf.len() as u64);
        let consistent = match self.fin_at {
            Some(fin_at) => i128::from(fin_at) == at,
            // A FIN behind data already delivered or buffered contradicts that data.
            None => {
                let reach = i128::from(self.next) - i128::from(self.ends_in_gap);
                at >= reach && last.is_none_or(|l| i128::from(l) <= at)
            }
        };
        if !consistent {
            ctx.stats.inconsistent_fins += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::InconsistentFin));
        } else if self.fin_at.is_none() {
            // `at >= next - 1 >= 0` was checked, and it is within 2^31 + payload of `next`.
            self.fin_at = Some(at as u64);
        }
    }

    /// Compares the part `data` of a segment lying behind the delivery point, at offset `at`,
    /// with the retained copy of what was delivered there. The first such segment only starts
    /// the ring (there is nothing to compare it with yet). Returns whether a mismatch was
    /// reported.
    fn verify_behind(
        &mut self,
        at: u64,
        data: &[u8],
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) -> bool {
        let Some(ring) = self.retained.as_deref() else {
            ctx.stats.overlaps_unverified += 1;
            self.arm(ctx);
            return false;
        };
        let v = ring.verify(at, data);
        ctx.stats.overlap_verified_bytes += v.compared;
        if v.compared < data.len() as u64 {
            ctx.stats.overlaps_unverified += 1;
        }
        if v.differs {
            ctx.stats.overlap_mismatches += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::OverlapMismatch));
        }
        v.differs
    }

    /// Starts retaining delivered bytes, if enabled and the budget allows.
    fn arm(&mut self, ctx: &mut StreamCtx) {
        let n = ctx.cfg.overlap_retain_bytes;
        if n == 0 {
            return;
        }
        if !ctx.budget.try_charge_retained(Retained::cost(n)) {
            ctx.stats.retain_memcap_hits += 1;
            return;
        }
        ctx.stats.retaining_streams += 1;
        self.retained = Some(Box::new(Retained {
            buf: vec![0; n].into_boxed_slice(),
            end: self.next,
            len: 0,
        }));
    }

    /// Places `data` at offset `start` (>= `next`), skipping what is already buffered (first
    /// wins) and delivering or storing the rest. `flagged`: this segment's mismatch was reported
    /// already (one anomaly per segment).
    fn insert(
        &mut self,
        start: u64,
        data: &[u8],
        flagged: bool,
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        let end = start + data.len() as u64;
        let mut cursor = start;
        let mut mismatch = false;
        let mut overlap = 0u64;
        let mut buffered_any = false;
        while cursor < end {
            if cursor < self.next {
                // Giving up a hole delivered buffered bytes past the cursor; they already won.
                overlap += self.next.min(end) - cursor;
                cursor = self.next.min(end);
                continue;
            }
            let at = (cursor - start) as usize;
            let covering = self
                .segs
                .range(..=cursor)
                .next_back()
                .filter(|(&k, buf)| k + buf.len() as u64 > cursor);
            if let Some((&k, buf)) = covering {
                let stop = end.min(k + buf.len() as u64);
                let kept = buf.get((cursor - k) as usize..(stop - k) as usize);
                let seen = data.get(at..(stop - start) as usize);
                mismatch |= kept != seen;
                overlap += stop - cursor;
                cursor = stop;
                continue;
            }
            let stop = self.segs.range(cursor..end).next().map_or(end, |(&k, _)| k);
            let piece = data.get(at..(stop - start) as usize).unwrap_or_default();
            buffered_any |= cursor > self.next;
            self.place(cursor, piece, ctx, out);
            cursor = stop;
        }
        if overlap > 0 {
            ctx.stats.overlaps += 1;
            ctx.stats.overlap_bytes += overlap;
        }
        if buffered_any {
            ctx.stats.out_of_order_segments += 1;
        }
        if mismatch && !flagged {
            ctx.stats.overlap_mismatches += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::OverlapMismatch));
        }
    }

    /// Delivers or stores one piece that overlaps nothing buffered. When a limit refuses it, the
    /// earliest hole is given up and the piece tried again: each round either delivers the piece
    /// or delivers (and frees) at least one buffered segment, so the loop ends.
    fn place(
        &mut self,
        at: u64,
        piece: &[u8],
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        loop {
            if at <= self.next {
                // Only `at == next` is reachable; skipping any passed bytes keeps it exact anyway.
                let passed = usize::try_from(self.next - at).unwrap_or(usize::MAX);
                self.deliver(piece.get(passed..).unwrap_or_default(), ctx, out);
                return;
            }
            match self.store(at, piece, ctx) {
                Ok(()) => return,
                Err(Refusal::StreamLimit) => ctx.stats.buffer_limit_hits += 1,
                Err(Refusal::Memcap) => ctx.stats.memcap_hits += 1,
            }
            let first = self.segs.keys().next().copied();
            let hole_end = first.filter(|&k| k < at).unwrap_or(at);
            self.gap_to(hole_end, ctx, out);
            self.drain(ctx, out);
        }
    }

    /// Copies an out-of-order piece into the buffer, appending to the segment it continues when
    /// there is one, within the stream's limits and the shared budget.
    fn store(&mut self, at: u64, piece: &[u8], ctx: &mut StreamCtx) -> Result<(), Refusal> {
        let len = piece.len();
        if self.buffered.saturating_add(len) > ctx.cfg.max_buffered_bytes {
            return Err(Refusal::StreamLimit);
        }
        let prev = self
            .segs
            .range_mut(..at)
            .next_back()
            .filter(|(&k, buf)| k + buf.len() as u64 == at);
        if let Some((_, buf)) = prev {
            let needed = buf.len().saturating_add(len);
            if needed > buf.capacity() {
                // Grow by doubling so a long run behind one hole costs amortised O(1) per byte,
                // but settle for an exact fit rather than refuse when memory is tight. A fresh
                // `with_capacity` Vec has exactly the capacity asked for, so the charge is exact.
                let old = buf.capacity();
                let doubled = needed.max(old.saturating_mul(2));
                let want = if ctx.budget.try_charge(doubled - old) {
                    doubled
                } else if ctx.budget.try_charge(needed - old) {
                    needed
                } else {
                    return Err(Refusal::Memcap);
                };
                let mut grown = Vec::with_capacity(want);
                grown.extend_from_slice(buf);
                *buf = grown;
                self.charged += want - old;
            }
            buf.extend_from_slice(piece);
        } else {
            if self.segs.len() >= ctx.cfg.max_segments {
                return Err(Refusal::StreamLimit);
            }
            let cost = len.saturating_add(SEGMENT_OVERHEAD_BYTES);
            if !ctx.budget.try_charge(cost) {
                return Err(Refusal::Memcap);
            }
            self.segs.insert(at, piece.to_vec());
            self.charged += cost;
        }
        self.buffered += len;
        Ok(())
    }

    /// Reports every position before `target` (never past the FIN): buffered bytes as `Data`,
    /// holes as `Gap`s.
    fn give_up_until(
        &mut self,
        target: u64,
        ctx: &mut StreamCtx,
        out: &mut dyn FnMut(StreamEvent<'_>),
    ) {
        self.drain(ctx, out);
        while self.next < target {
            let hole_end = self.segs.keys().next().map_or(target, |&k| k.min(target));
            self.gap_to(hole_end, ctx, out);
            self.drain(ctx, out);
        }
    }

    /// Delivers buffered segments that start at the delivery point, then the FIN if reached.
    fn drain(&mut self, ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        while let Some(entry) = self.segs.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let at = *entry.key();
            let buf = entry.remove();
            // Saturating only so a broken invariant cannot panic or wrap; the sums are exact.
            self.buffered = self.buffered.saturating_sub(buf.len());
            let cost = buf.capacity() + SEGMENT_OVERHEAD_BYTES;
            ctx.budget.release(cost);
            self.charged = self.charged.saturating_sub(cost);
            // Invariant: keys never fall behind `next`, so nothing is skipped; `get` keeps this
            // panic-free should that ever break.
            let skip = (self.next - at) as usize;
            self.deliver(buf.get(skip..).unwrap_or_default(), ctx, out);
        }
        if self.fin_at.is_some_and(|at| at <= self.next) && !self.fin_delivered {
            self.fin_delivered = true;
            out(StreamEvent::Fin);
        }
    }

    fn deliver(&mut self, data: &[u8], ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        if data.is_empty() {
            return;
        }
        if let Some(ring) = self.retained.as_deref_mut() {
            ring.push(self.next, data);
        }
        let n = data.len() as u64;
        self.advance(n);
        self.ends_in_gap = false;
        self.delivered += n;
        ctx.stats.delivered_bytes += n;
        out(StreamEvent::Data(data));
    }

    /// Reports the hole from `next` up to `to` as lost.
    fn gap_to(&mut self, to: u64, ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        if to <= self.next {
            return;
        }
        let n = to - self.next;
        self.advance(n);
        self.ends_in_gap = true;
        ctx.stats.gaps += 1;
        ctx.stats.gap_bytes += n;
        out(StreamEvent::Gap(n));
    }

    fn advance(&mut self, n: u64) {
        self.next += n;
        // Sequence numbers are the offset modulo 2^32, so truncation is the wrap we want.
        self.next_seq = self.next_seq.add(n as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An event with its bytes copied out, so tests can keep it after the callback returns.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Owned {
        Data(Vec<u8>),
        Gap(u64),
        Fin,
        Anomaly(TcpAnomaly),
    }

    impl From<StreamEvent<'_>> for Owned {
        fn from(ev: StreamEvent<'_>) -> Owned {
            match ev {
                StreamEvent::Data(d) => Owned::Data(d.to_vec()),
                StreamEvent::Gap(n) => Owned::Gap(n),
                StreamEvent::Fin => Owned::Fin,
                StreamEvent::Anomaly(a) => Owned::Anomaly(a),
            }
        }
    }

    /// Renders events compactly: adjacent `Data` merged into one `'quoted'` run (how the stream
    /// splits its deliveries is not part of its contract), `gap:N`, `fin`, `!anomaly_name`.
    fn render(events: &[Owned]) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut run: Option<Vec<u8>> = None;
        for ev in events {
            if let Owned::Data(d) = ev {
                run.get_or_insert_with(Vec::new).extend_from_slice(d);
                continue;
            }
            if let Some(d) = run.take() {
                parts.push(format!("'{}'", String::from_utf8_lossy(&d)));
            }
            parts.push(match ev {
                Owned::Gap(n) => format!("gap:{n}"),
                Owned::Fin => "fin".to_string(),
                Owned::Anomaly(a) => format!("!{}", a.name()),
                Owned::Data(_) => unreachable!("handled above"),
            });
        }
        if let Some(d) = run.take() {
            parts.push(format!("'{}'", String::from_utf8_lossy(&d)));
        }
        parts.join(" ")
    }

    /// A sequence number in a script: decimal, taken modulo 2^32 so `-3` is 2^32 - 3.
    fn seq(word: &str) -> SeqNum {
        let n: i64 = word.parse().expect("script: bad number");
        SeqNum(n.rem_euclid(1 << 32) as u32)
    }

    struct Outcome {
        stream: Stream,
        stats: StreamStats,
        budget: MemBudget,
    }

    /// Runs a script of `;`-separated steps against one stream and compares the rendered events:
    /// `syn N`, `seg N TEXT`, `fin N TEXT` (a segment with FIN), `ack N`, `flush`; TEXT `-` is
    /// an empty payload. After every step the limits must hold.
    fn check_with(cfg: &StreamConfig, memcap: usize, script: &str, expect: &str) -> Outcome {
        let mut stream = Stream::new();
        let mut stats = StreamStats::default();
        let mut budget = MemBudget::new(memcap);
        let mut events = Vec::new();
        for step in script.split(';').map(str::trim) {
            let words: Vec<&str> = step.split_whitespace().collect();
            let mut ctx = StreamCtx {
                cfg,
                budget: &mut budget,
                stats: &mut stats,
            };
            let mut out = |ev: StreamEvent<'_>| events.push(Owned::from(ev));
            let text = |w: &str| {
                if w == "-" {
                    Vec::new()
                } else {
                    w.as_bytes().to_vec()
                }
            };
            match words.as_slice() {
                ["syn", n] => stream.on_syn(seq(n)),
                ["seg", n, t] => stream.on_segment(seq(n), &text(t), false, &mut ctx, &mut out),
                ["fin", n, t] => stream.on_segment(seq(n), &text(t), true, &mut ctx, &mut out),
                ["ack", n] => stream.on_peer_ack(seq(n), &mut ctx, &mut out),
                ["flush"] => stream.flush(&mut ctx, &mut out),
                _ => panic!("script: bad step {step:?}"),
            }
            assert!(budget.used() <= memcap, "{step}: budget over cap");
            assert!(
                stream.buffered_bytes() <= cfg.max_buffered_bytes,
                "{step}: over limit"
            );
            assert!(
                stream.segs.len() <= cfg.max_segments,
                "{step}: too many segments"
            );
        }
        assert_eq!(render(&events), expect, "script: {script}");
        let data: u64 = events
            .iter()
            .map(|e| match e {
                Owned::Data(d) => d.len() as u64,
                _ => 0,
            })
            .sum();
        assert_eq!(stream.delivered(), data);
        assert_eq!(stats.delivered_bytes, data);
        Outcome {
            stream,
            stats,
            budget,
        }
    }

    fn check(script: &str, expect: &str) -> Outcome {
        check_with(&StreamConfig::default(), 64 << 20, script, expect)
    }

    #[test]
    fn in_order_data_is_delivered_without_buffering() {
        let o = check("syn 100; seg 101 GET; seg 104 _/; seg 106 -", "'GET_/'");
        assert_eq!((o.stream.buffered_bytes(), o.budget.used()), (0, 0));
        // Nor is anything retained for a stream that never retransmits.
        assert!(o.stream.retained.is_none());
        assert_eq!(o.stats.retaining_streams, 0);
        assert_eq!(o.stats.segments, 3);
        assert_eq!(o.stream.next_seq(), Some(SeqNum(106)));
    }

    #[test]
    fn midstream_pickup_starts_at_the_first_segment() {
        check("seg 5000 abc; seg 5003 def", "'abcdef'");
        // Bytes before the pickup point were never part of the stream we follow.
        let o = check("seg 5000 abc; seg 4998 xyabc; seg 5003 d", "'abcd'");
        assert_eq!(o.stats.retransmitted_bytes, 5);
        // A bare ACK can be the first segment too.
        check("seg 7 -; seg 8 b; seg 7 a", "'ab'");
    }

    #[test]
    fn syn_sets_the_start_and_retransmits_are_no_ops() {
        check("syn 100; seg 101 ab; syn 100; seg 103 c", "'abc'");
        // A new ISN before any data restarts the stream; old-ISN data is then far behind.
        check("syn 100; syn 500; seg 501 ab", "'ab'");
        check("syn 100; syn 500; seg 101 ab; seg 501 c", "'c'");
        check("seg 7 -; syn 100; seg 101 ab", "'ab'");
        // Once data was delivered, a different SYN does not move the stream.
        check("syn 100; seg 101 ab; syn 500; seg 103 c", "'abc'");
        // Nor once data is buffered.
        check("syn 100; seg 105 ef; syn 500; seg 101 abcd", "'abcdef'");
        // What a bare ACK taught about the old start is forgotten on restart.
        check("seg 7 -; seg 12 -; syn 100; seg 101 ab; flush", "'ab'");
    }

    #[test]
    fn out_of_order_segments_wait_for_the_hole() {
        let o = check("syn 0; seg 4 def; seg 7 g; seg 1 abc", "'abcdefg'");
        assert_eq!(o.stats.out_of_order_segments, 2);
        assert_eq!((o.stream.buffered_bytes(), o.budget.used()), (0, 0));
        // Contiguous out-of-order arrivals share one buffered segment.
        let o = check("syn 0; seg 4 d; seg 5 e; seg 6 f", "");
        assert_eq!(o.stream.segs.len(), 1);
        assert_eq!(o.stream.buffered_bytes(), 3);
    }

    #[test]
    fn retransmissions_are_delivered_once() {
        let o = check("syn 0; seg 1 abc; seg 1 abc; seg 2 bcd", "'abcd'");
        assert_eq!(o.stats.retransmitted_bytes, 5);
        // The first reach behind the delivery point only starts retention: the bytes it
        // overlaps were delivered before anything was kept, so they cannot be compared.
        let o = check("syn 0; seg 1 abc; seg 1 XYZ; seg 4 d", "'abcd'");
        assert_eq!(
            (o.stats.overlaps_unverified, o.stats.retaining_streams),
            (1, 1)
        );
        assert_eq!(o.stream.retained_bytes(), 1);
        // Out-of-order arrivals never reach behind the delivery point: nothing is retained.
        let o = check("syn 0; seg 4 def; seg 1 abc", "'abcdef'");
        assert!(o.stream.retained.is_none());
        // Nor do bytes from before a midstream pickup, which were never part of the stream.
        let o = check("seg 5000 abc; seg 4998 xy; seg 5003 d", "'abcd'");
        assert_eq!(
            (o.stats.overlaps_unverified, o.stats.retaining_streams),
            (0, 0)
        );
    }

    #[test]
    fn retransmissions_of_delivered_bytes_are_checked_once_retaining() {
        // Retaining from the first retransmission on, a later copy with other bytes is flagged
        // where it overlaps what was kept; delivery is unchanged (the first copy won).
        let o = check(
            "syn 0; seg 1 abc; seg 1 abc; seg 4 def; seg 3 cXe",
            "'abcdef' !overlap_mismatch",
        );
        assert_eq!(o.stats.overlap_mismatches, 1);
        // 'c' was delivered before retention started: unverified. 'Xe' was compared.
        assert_eq!(o.stats.overlap_verified_bytes, 2);
        assert_eq!(o.stats.overlaps_unverified, 2);
        // Identical retransmissions, the normal case, are silent.
        let o = check(
            "syn 0; seg 1 abc; seg 1 abc; seg 4 def; seg 4 def; seg 5 ef",
            "'abcdef'",
        );
        assert_eq!(
            (o.stats.overlap_mismatches, o.stats.overlap_verified_bytes),
            (0, 5)
        );
        assert_eq!(o.stats.overlaps_unverified, 1);
        // The flag comes before the new bytes the same segment carries.
        check(
            "syn 0; seg 1 abc; seg 1 abc; seg 4 def; seg 5 eXgh",
            "'abcdef' !overlap_mismatch 'gh'",
        );
        // A segment contradicting both retained and buffered bytes is one anomaly.
        let o = check(
            "syn 0; seg 1 ab; seg 1 ab; seg 3 cd; seg 8 hi; seg 4 XefgZi",
            "'abcd' !overlap_mismatch 'efghi'",
        );
        assert_eq!(o.stats.overlap_mismatches, 1);
        // A gap ends the retained run: what lies before it is no longer compared.
        check(
            "syn 0; seg 1 ab; seg 1 ab; seg 3 cd; ack 7; seg 7 gh; seg 3 XY; seg 7 gZ",
            "'abcd' gap:2 'gh' !overlap_mismatch",
        );
    }

    fn retaining(overlap_retain_bytes: usize) -> StreamConfig {
        StreamConfig {
            overlap_retain_bytes,
            ..StreamConfig::default()
        }
    }

    #[test]
    fn retention_ring_keeps_the_newest_bytes_across_its_wrap() {
        let cfg = retaining(4);
        // After 'bc' and 'de' the ring holds offsets 1..5, the last one wrapped to its start.
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 1 a; seg 1 a; seg 2 bc; seg 4 de; seg 3 cde",
            "'abcde'",
        );
        assert_eq!(o.stats.overlap_verified_bytes, 3);
        assert_eq!(o.stream.retained_bytes(), 4);
        check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 1 a; seg 1 a; seg 2 bc; seg 4 de; seg 3 cdX",
            "'abcde' !overlap_mismatch",
        );
        // A delivery longer than the ring keeps its last bytes; older ones are unverified.
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 1 a; seg 1 a; seg 2 bcdefg; seg 3 cdeXg",
            "'abcdefg' !overlap_mismatch",
        );
        assert_eq!(o.stats.overlap_verified_bytes, 4);
        assert_eq!(o.stats.overlaps_unverified, 2);
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 1 a; seg 1 a; seg 2 bcdefg; seg 2 Xcdefg",
            "'abcdefg'",
        );
        assert_eq!(o.stats.overlaps_unverified, 2);
    }

    #[test]
    fn retention_is_optional_bounded_and_released() {
        // Disabled: nothing is kept and every reach behind is unverified.
        let o = check_with(
            &retaining(0),
            1 << 20,
            "syn 0; seg 1 abc; seg 1 abc; seg 1 XYZ",
            "'abc'",
        );
        assert_eq!(
            (o.stats.overlaps_unverified, o.stats.retaining_streams),
            (2, 0)
        );
        // Rings take at most half the memcap: one byte short, the ring is refused and asked for
        // again at the next retransmission.
        let cost = 4 + SEGMENT_OVERHEAD_BYTES;
        let o = check_with(
            &retaining(4),
            2 * cost - 1,
            "syn 0; seg 1 abc; seg 1 abc; seg 1 XYZ",
            "'abc'",
        );
        assert_eq!((o.stats.retain_memcap_hits, o.budget.used()), (2, 0));
        let o = check_with(
            &retaining(4),
            2 * cost,
            "syn 0; seg 1 abc; seg 1 abc; seg 4 d; seg 3 cX",
            "'abcd' !overlap_mismatch",
        );
        assert_eq!((o.budget.used(), o.budget.retained()), (cost, cost));
        // Flushing returns the ring's charge.
        let o = check_with(
            &retaining(4),
            2 * cost,
            "syn 0; seg 1 abc; seg 1 abc; seg 4 d; flush",
            "'abcd'",
        );
        assert_eq!((o.budget.used(), o.budget.retained()), (0, 0));
        assert!(o.stream.retained.is_none());
    }

    #[test]
    fn overlaps_keep_the_first_copy_and_flag_differences() {
        let o = check(
            "syn 0; seg 5 efg; seg 1 abcdEFgh",
            "'abcd' !overlap_mismatch 'efgh'",
        );
        assert_eq!((o.stats.overlaps, o.stats.overlap_bytes), (1, 3));
        assert_eq!(o.stats.overlap_mismatches, 1);
        // One anomaly per segment however many buffered runs it contradicts.
        check(
            "syn 0; seg 3 c; seg 5 e; seg 2 bxdyf; seg 1 a",
            "!overlap_mismatch 'abcdef'",
        );
        // An identical overlap is silent.
        let o = check("syn 0; seg 3 cd; seg 2 bcde; seg 1 a", "'abcde'");
        assert_eq!((o.stats.overlaps, o.stats.overlap_mismatches), (1, 0));
    }

    #[test]
    fn peer_ack_past_a_hole_turns_it_into_a_gap() {
        let o = check(
            "syn 0; seg 1 ab; seg 6 fg; ack 8; seg 8 h",
            "'ab' gap:3 'fgh'",
        );
        assert_eq!((o.stats.gaps, o.stats.gap_bytes), (1, 3));
        check("syn 0; seg 1 ab; ack 10; seg 10 j", "'ab' gap:7 'j'");
        // Bytes of a hole that show up after it was given up are not delivered.
        check("syn 0; seg 1 ab; ack 5; seg 3 cdef", "'ab' gap:2 'ef'");
        // Old, current and unstarted-stream ACKs change nothing.
        check("syn 0; seg 1 ab; ack 2; ack 3", "'ab'");
        check("ack 50; seg 1 ab", "'ab'");
        let o = check("syn 0; seg 1 ab; ack 1073741900", "'ab' !ack_out_of_window");
        assert_eq!(o.stats.out_of_window_acks, 1);
    }

    #[test]
    fn ack_of_the_fin_does_not_invent_a_byte() {
        check("syn 0; seg 1 ab; fin 6 fg; ack 9", "'ab' gap:3 'fg' fin");
        // Unseen, the FIN's sequence number looks like a lost byte; the FIN may still land there.
        check("syn 0; seg 1 ab; ack 6; fin 3 cd", "'ab' gap:3 fin");
        check("syn 0; seg 1 ab; ack 6; seg 6 -; flush", "'ab' gap:3");
        // Not so one position behind delivered data.
        check("syn 0; seg 1 abc; fin 2 b", "'abc' !inconsistent_fin");
    }

    #[test]
    fn fin_is_delivered_once_where_the_data_ends() {
        check("syn 0; fin 1 abc", "'abc' fin");
        check("syn 0; seg 1 abc; fin 4 -", "'abc' fin");
        check("syn 0; fin 1 abc; fin 1 abc; seg 5 -", "'abc' fin");
        check("syn 0; fin 4 def; seg 1 abc", "'abcdef' fin");
        let o = check("syn 0; fin 1 abc; seg 3 cZZ", "'abc' fin !data_after_fin");
        assert_eq!(o.stats.data_after_fin, 1);
        check("syn 0; fin 4 d; seg 1 abcdE", "!data_after_fin 'abcd' fin");
        let o = check("syn 0; fin 1 abc; fin 1 a", "'abc' fin !inconsistent_fin");
        assert_eq!(o.stats.inconsistent_fins, 1);
        // A FIN behind buffered data contradicts it and is ignored.
        check(
            "syn 0; seg 5 ef; fin 3 -; seg 1 abcd",
            "!inconsistent_fin 'abcdef'",
        );
        assert!(check("syn 0; fin 1 a", "'a' fin").stream.is_finished());
    }

    #[test]
    fn flush_gives_up_every_hole_and_frees_everything() {
        let o = check(
            "syn 0; seg 1 ab; seg 6 fg; seg 10 j; flush",
            "'ab' gap:3 'fg' gap:2 'j'",
        );
        assert_eq!((o.stream.buffered_bytes(), o.budget.used()), (0, 0));
        assert_eq!(o.stream.charged, 0);
        check("syn 0; seg 1 ab; fin 6 fg; flush", "'ab' gap:3 'fg' fin");
        check("syn 0; seg 1 ab; fin 9 -; flush", "'ab' gap:6 fin");
        // A bare ACK shows how far the sender got: the bytes before it were lost.
        check("syn 0; seg 1 ab; seg 6 -; flush", "'ab' gap:3");
        check("syn 0; seg 1 ab; seg 9 i; seg 6 -; flush", "'ab' gap:6 'i'");
        check("flush", "");
        check("syn 0; seg 1 ab; flush; flush", "'ab'");
    }

    #[test]
    fn sequence_wraparound_is_seamless() {
        check("syn -3; seg -2 ab; seg 0 cd; seg 2 ef", "'abcdef'");
        check("syn -3; seg 0 cd; seg -2 ab", "'abcd'");
        check("syn -3; seg -2 ab; seg 2 ef; ack 4", "'ab' gap:2 'ef'");
        check("syn -3; fin 1 d; seg -2 abc", "'abcd' fin");
        check("seg -1 a; seg 1 c; flush", "'a' gap:1 'c'");
        // The SYN itself may sit on the last number before the wrap.
        check("syn -1; seg 0 a", "'a'");
    }

    #[test]
    fn segments_absurdly_far_ahead_are_dropped() {
        let o = check(
            "syn 0; seg 1 a; seg 1073741900 zz; seg 2 b",
            "'a' !segment_out_of_window 'b'",
        );
        assert_eq!(o.stats.dropped_segments, 1);
    }

    fn limits(max_buffered_bytes: usize, max_segments: usize) -> StreamConfig {
        StreamConfig {
            max_buffered_bytes,
            max_segments,
            ..StreamConfig::default()
        }
    }

    #[test]
    fn byte_limit_gives_up_the_earliest_hole() {
        let cfg = limits(8, 100);
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 3 cc; seg 8 hhhh; seg 20 tttt",
            "gap:2 'cc'",
        );
        assert_eq!(o.stats.buffer_limit_hits, 1);
        assert_eq!(o.stream.buffered_bytes(), 8);
        check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 3 cc; seg 8 hhhh; seg 20 tttt; flush",
            "gap:2 'cc' gap:3 'hhhh' gap:8 'tttt'",
        );
        // A piece inside the earliest hole is delivered after a gap up to it, not buffered.
        let cfg = limits(4, 100);
        check_with(&cfg, 1 << 20, "syn 0; seg 11 kkkk; seg 5 ee", "gap:4 'ee'");
        // A single segment larger than the limit still gets through, after the hole before it.
        check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 1 a; seg 3 cdefgh",
            "'a' gap:1 'cdefgh'",
        );
    }

    #[test]
    fn segment_limit_gives_up_the_earliest_hole() {
        let cfg = limits(1 << 20, 2);
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 3 c; seg 5 e; seg 7 g; flush",
            "gap:2 'c' gap:1 'e' gap:1 'g'",
        );
        assert_eq!(o.stats.buffer_limit_hits, 1);
        // Appends do not count as new segments.
        let o = check_with(
            &cfg,
            1 << 20,
            "syn 0; seg 3 c; seg 4 d; seg 5 e; seg 7 g; seg 1 ab; flush",
            "'abcde' gap:1 'g'",
        );
        assert_eq!(o.stats.buffer_limit_hits, 0);
    }

    #[test]
    fn memcap_is_never_exceeded_and_growth_falls_back_to_exact() {
        let cap = SEGMENT_OVERHEAD_BYTES + 3;
        // 'a' costs 1 + overhead, 'b' doubles to 2, 'c' cannot double to 4 so grows to exactly 3,
        // and 'd' does not fit at all: the hole is given up and 'd' follows directly.
        let o = check_with(
            &limits(1 << 20, 100),
            cap,
            "syn 0; seg 3 a; seg 4 b; seg 5 c",
            "",
        );
        assert_eq!(o.budget.used(), cap);
        let o = check_with(
            &limits(1 << 20, 100),
            cap,
            "syn 0; seg 3 a; seg 4 b; seg 5 c; seg 6 d",
            "gap:2 'abcd'",
        );
        assert_eq!(o.stats.memcap_hits, 1);
        assert_eq!(o.budget.used(), 0);
    }

    #[test]
    fn memcap_is_shared_between_streams() {
        let cfg = StreamConfig::default();
        let mut budget = MemBudget::new(2 * (SEGMENT_OVERHEAD_BYTES + 4));
        let (mut a, mut b) = (Stream::new(), Stream::new());
        let (mut sa, mut sb) = (StreamStats::default(), StreamStats::default());
        let (mut ea, mut eb) = (Vec::new(), Vec::new());
        a.on_syn(SeqNum(0));
        b.on_syn(SeqNum(0));
        for (at, text) in [(3, "cccc"), (10, "jjjj")] {
            let mut ctx = StreamCtx {
                cfg: &cfg,
                budget: &mut budget,
                stats: &mut sa,
            };
            a.on_segment(SeqNum(at), text.as_bytes(), false, &mut ctx, &mut |e| {
                ea.push(Owned::from(e))
            });
        }
        assert_eq!(budget.used(), budget.memcap_bytes());
        // B holds nothing to give up: its own hole becomes the gap and its data goes straight out.
        let mut ctx = StreamCtx {
            cfg: &cfg,
            budget: &mut budget,
            stats: &mut sb,
        };
        b.on_segment(SeqNum(3), b"xx", false, &mut ctx, &mut |e| {
            eb.push(Owned::from(e))
        });
        assert_eq!(render(&eb), "gap:2 'xx'");
        assert_eq!(sb.memcap_hits, 1);
        // A gives up its earliest hole to make room for its next out-of-order segment.
        let mut ctx = StreamCtx {
            cfg: &cfg,
            budget: &mut budget,
            stats: &mut sa,
        };
        a.on_segment(SeqNum(20), b"tttt", false, &mut ctx, &mut |e| {
            ea.push(Owned::from(e))
        });
        assert_eq!(render(&ea), "gap:2 'cccc'");
        assert_eq!(sa.memcap_hits, 1);
        assert!(budget.used() <= budget.memcap_bytes());
        for (s, st) in [(&mut a, &mut sa), (&mut b, &mut sb)] {
            let mut ctx = StreamCtx {
                cfg: &cfg,
                budget: &mut budget,
                stats: st,
            };
            s.flush(&mut ctx, &mut |_| {});
        }
        assert_eq!(budget.used(), 0);
        let mut total = StreamStats::default();
        total.add(&sa);
        total.add(&sb);
        assert_eq!(total.memcap_hits, 2);
        assert_eq!(
            total.delivered_bytes,
            sa.delivered_bytes + sb.delivered_bytes
        );
    }

    #[test]
    fn anomaly_names_are_snake_case() {
        for (a, name) in [
            (TcpAnomaly::OverlapMismatch, "overlap_mismatch"),
            (TcpAnomaly::DataAfterFin, "data_after_fin"),
            (TcpAnomaly::InconsistentFin, "inconsistent_fin"),
            (TcpAnomaly::SegmentOutOfWindow, "segment_out_of_window"),
            (TcpAnomaly::AckOutOfWindow, "ack_out_of_window"),
        ] {
            assert_eq!(a.name(), name);
        }
    }

    // ---- Model-based property tests against a byte-map oracle ----

    #[derive(Clone)]
    enum Step {
        /// A segment: stream offset (0 = the byte after the ISN), payload, FIN flag.
        Seg(usize, Vec<u8>, bool),
        /// A peer acknowledgement of everything before this stream offset.
        Ack(usize),
    }

    /// Shrunk failures print as `seg 10..25 fin` and `ack 40`, one per line.
    impl std::fmt::Debug for Step {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Step::Seg(at, bytes, fin) => {
                    write!(
                        f,
                        "seg {at}..{} {:02x?}",
                        at + bytes.len(),
                        &bytes[..bytes.len().min(4)]
                    )?;
                    if *fin {
                        write!(f, " fin")?;
                    }
                    Ok(())
                }
                Step::Ack(at) => write!(f, "ack {at}"),
            }
        }
    }

    #[derive(Clone, Debug)]
    struct Case {
        len: usize,
        isn: u32,
        syn: bool,
        /// Some segment carries bytes that differ from the true stream.
        corrupted: bool,
        /// Some slice of the true stream was never put on the schedule.
        lossy: bool,
        steps: Vec<Step>,
    }

    /// A true byte stream cut into consecutive chunks (some lost, the last one maybe with the
    /// FIN), plus duplicate and overlapping extras (in half the cases some corrupted), plus ACKs,
    /// all shuffled. ISNs cluster just below 2^32 so many streams cross the wrap.
    fn case_strategy(max_acks: usize) -> impl Strategy<Value = Case> {
        (
            prop::collection::vec(any::<u8>(), 0..3000),
            prop_oneof![3 => (u32::MAX - 3000)..=u32::MAX, 1 => any::<u32>()],
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec((1usize..400, prop::bool::weighted(0.05)), 1..60),
            prop::collection::vec((0.0f64..1.0, 0usize..500, prop::bool::weighted(0.3)), 0..24),
            prop::collection::vec(0.0f64..1.0, 0..=max_acks),
        )
            .prop_flat_map(|(data, isn, syn, fin, may_corrupt, chunks, extras, acks)| {
                let len = data.len();
                let (mut steps, mut lossy, mut corrupted) = (Vec::new(), false, false);
                let mut pos = 0;
                for &(size, lost) in &chunks {
                    if pos >= len {
                        break;
                    }
                    let end = (pos + size).min(len);
                    if lost {
                        lossy = true;
                    } else {
                        steps.push(Step::Seg(pos, data[pos..end].to_vec(), fin && end == len));
                    }
                    pos = end;
                }
                if pos < len || len == 0 {
                    steps.push(Step::Seg(pos, data[pos..].to_vec(), fin));
                }
                for &(frac, elen, corrupt) in &extras {
                    let start = ((frac * len as f64) as usize).min(len);
                    let end = (start + elen).min(len);
                    let mut bytes = data[start..end].to_vec();
                    if may_corrupt && corrupt {
                        bytes.iter_mut().for_each(|b| *b ^= 0x5a);
                        corrupted |= !bytes.is_empty();
                    }
                    steps.push(Step::Seg(start, bytes, false));
                }
                for &frac in &acks {
                    // Up to len + 1: the ACK of the FIN.
                    steps.push(Step::Ack(((frac * (len + 2) as f64) as usize).min(len + 1)));
                }
                Just(steps).prop_shuffle().prop_map(move |steps| Case {
                    len,
                    isn,
                    syn,
                    corrupted,
                    lossy,
                    steps,
                })
            })
    }

    struct Run {
        /// Events tagged with the index of the step that produced them (`steps.len()` = flush).
        events: Vec<(usize, Owned)>,
        stats: StreamStats,
        stream: Stream,
        budget: MemBudget,
    }

    /// Feeds a case to one stream, asserting the limits after every step, then flushes.
    fn run(case: &Case, cfg: &StreamConfig, memcap: usize) -> Result<Run, TestCaseError> {
        let mut stream = Stream::new();
        let mut stats = StreamStats::default();
        let mut budget = MemBudget::new(memcap);
        let mut events = Vec::new();
        if case.syn {
            stream.on_syn(SeqNum(case.isn));
        }
        let first = SeqNum(case.isn).add(1);
        for (i, step) in case
            .steps
            .iter()
            .chain([&Step::Ack(usize::MAX)])
            .enumerate()
        {
            let mut ctx = StreamCtx {
                cfg,
                budget: &mut budget,
                stats: &mut stats,
            };
            let mut out = |ev: StreamEvent<'_>| events.push((i, Owned::from(ev)));
            match step {
                Step::Seg(at, bytes, fin) => {
                    stream.on_segment(first.add(*at as u32), bytes, *fin, &mut ctx, &mut out)
                }
                Step::Ack(usize::MAX) => stream.flush(&mut ctx, &mut out),
                Step::Ack(at) => stream.on_peer_ack(first.add(*at as u32), &mut ctx, &mut out),
            }
            prop_assert!(budget.used() <= memcap);
            prop_assert!(stream.buffered_bytes() <= cfg.max_buffered_bytes);
            prop_assert!(stream.segs.len() <= cfg.max_segments);
        }
        Ok(Run {
            events,
            stats,
            stream,
            budget,
        })
    }

    /// Checks a run against the byte map of first arrivals. Returns whether any gap was seen.
    fn check_against_oracle(case: &Case, run: &Run) -> Result<bool, TestCaseError> {
        // Where the stream starts: after the SYN, or at the first segment (midstream pickup).
        let (base, start_step) = if case.syn {
            (0, 0)
        } else {
            let first_seg = case.steps.iter().enumerate().find_map(|(i, s)| match s {
                Step::Seg(at, ..) => Some((*at, i)),
                Step::Ack(_) => None,
            });
            let Some(start) = first_seg else {
                prop_assert!(
                    run.events.is_empty(),
                    "events from a stream that never started"
                );
                return Ok(false);
            };
            start
        };
        // The oracle: for each stream position, the first byte seen there and when.
        let mut first: Vec<Option<(u8, usize)>> = vec![None; case.len];
        let (mut end, mut fin_seen) = (base, false);
        for (i, step) in case.steps.iter().enumerate() {
            match step {
                Step::Seg(at, bytes, fin) => {
                    for (k, &b) in bytes.iter().enumerate() {
                        if at + k >= base && first[at + k].is_none() {
                            first[at + k] = Some((b, i));
                        }
                    }
                    end = end.max(at + bytes.len());
                    fin_seen |= *fin;
                }
                // Once the FIN is known an ACK of it covers no data; before, it looks like a byte.
                Step::Ack(at) if case.syn || i > start_step => {
                    end = end.max(if fin_seen { (*at).min(case.len) } else { *at })
                }
                Step::Ack(_) => {}
            }
        }

        let (mut pos, mut fin, mut gaps) = (base, false, false);
        for (i, ev) in &run.events {
            match ev {
                Owned::Data(d) => {
                    prop_assert!(!fin, "data after Fin");
                    for &b in d {
                        let Some(Some((want, _))) = first.get(pos) else {
                            return Err(TestCaseError::fail(format!("byte {pos} never arrived")));
                        };
                        prop_assert_eq!(b, *want, "byte {} is not the first copy", pos);
                        pos += 1;
                    }
                }
                Owned::Gap(n) => {
                    prop_assert!(!fin && *n > 0, "empty gap or gap after Fin");
                    gaps = true;
                    for p in pos..pos + *n as usize {
                        prop_assert!(p <= case.len, "gap past the end of the stream");
                        // A byte we held is never given up: it must have arrived after the gap.
                        if let Some(&Some((_, arrived))) = first.get(p) {
                            prop_assert!(arrived > *i, "byte {} arrived before its gap", p);
                        }
                    }
                    pos += *n as usize;
                }
                Owned::Fin => {
                    // One past the end only when the FIN's own number was reported lost.
                    prop_assert!(fin_seen && !fin, "unexpected Fin");
                    prop_assert!(pos == case.len || pos == case.len + 1, "misplaced Fin");
                    fin = true;
                }
                Owned::Anomaly(a) => {
                    prop_assert_eq!(*a, TcpAnomaly::OverlapMismatch);
                    prop_assert!(case.corrupted, "mismatch reported without corruption");
                    // The segment flagged is one that contradicts the first copy somewhere.
                    let differs = match case.steps.get(*i) {
                        Some(Step::Seg(at, bytes, _)) => bytes.iter().enumerate().any(
                            |(k, b)| matches!(first.get(at + k), Some(Some((w, _))) if w != b),
                        ),
                        _ => false,
                    };
                    prop_assert!(differs, "step {} flagged but agrees with the stream", i);
                }
            }
        }
        prop_assert_eq!(pos, end, "delivery did not cover the stream");
        prop_assert_eq!(fin, fin_seen);

        let data: u64 = run
            .events
            .iter()
            .map(|(_, e)| match e {
                Owned::Data(d) => d.len() as u64,
                _ => 0,
            })
            .sum();
        prop_assert_eq!(run.stream.delivered(), data);
        prop_assert_eq!(run.stats.delivered_bytes, data);
        prop_assert_eq!(run.stats.gap_bytes, (end - base) as u64 - data);
        prop_assert_eq!(run.budget.used(), 0);
        prop_assert_eq!(run.stream.buffered_bytes(), 0);
        Ok(gaps)
    }

    /// Without gaps and with a ring larger than any case, retention must flag every segment
    /// that contradicts a byte delivered after the stream's first reach behind its delivery
    /// point, and only those (or ones contradicting buffered bytes). Returns the steps whose
    /// retained-byte comparison must find a mismatch.
    fn must_flag(case: &Case, run: &Run) -> Vec<usize> {
        let base = if case.syn {
            0
        } else {
            match case.steps.iter().find_map(|s| match s {
                Step::Seg(at, ..) => Some(*at),
                Step::Ack(_) => None,
            }) {
                Some(at) => at,
                None => return Vec::new(),
            }
        };
        // The byte delivered at each stream position, and how far delivery got before each step.
        let mut delivered: Vec<u8> = Vec::new();
        let mut reached = vec![0usize; case.steps.len() + 1];
        for (i, ev) in &run.events {
            match ev {
                Owned::Data(d) => delivered.extend_from_slice(d),
                // Before the first gap only: a gap empties the ring.
                Owned::Gap(_) => break,
                _ => continue,
            }
            for r in reached.iter_mut().skip(i + 1) {
                *r = delivered.len();
            }
        }
        let mut ring_from = None;
        let mut want = Vec::new();
        for (i, step) in case.steps.iter().enumerate() {
            let Step::Seg(at, bytes, _) = step else {
                continue;
            };
            let next = base + reached[i];
            let (lo, hi) = ((*at).max(base), (at + bytes.len()).min(next));
            if lo >= hi {
                continue;
            }
            let Some(from) = ring_from else {
                ring_from = Some(next);
                continue;
            };
            let differs = (lo.max(from)..hi).any(|p| {
                let seen = bytes.get(p - at);
                seen.is_some() && seen != delivered.get(p - base)
            });
            if differs {
                want.push(i);
            }
        }
        want
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Retention only ever adds `OverlapMismatch` flags: with it on, the data, gaps and FIN
        /// are exactly those of a run with it off (the first copy still wins), identical
        /// retransmissions are never flagged (checked by the oracle), and without gaps every
        /// segment that contradicts a retained byte is flagged.
        #[test]
        fn retention_flags_conflicts_and_never_changes_delivery(
            case in case_strategy(0),
            small in 1usize..64,
        ) {
            let off = run(&case, &retaining(0), 64 << 20)?;
            let whole = run(&case, &retaining(4096), 64 << 20)?;
            let tiny = run(&case, &retaining(small), 64 << 20)?;
            let strip = |r: &Run| -> Vec<Owned> {
                r.events
                    .iter()
                    .filter(|(_, e)| !matches!(e, Owned::Anomaly(_)))
                    .map(|(_, e)| e.clone())
                    .collect()
            };
            let flagged = |r: &Run| -> Vec<usize> {
                let mut v: Vec<usize> = r
                    .events
                    .iter()
                    .filter(|(_, e)| matches!(e, Owned::Anomaly(_)))
                    .map(|(i, _)| *i)
                    .collect();
                v.dedup();
                v
            };
            for r in [&whole, &tiny] {
                check_against_oracle(&case, r)?;
                prop_assert_eq!(strip(r), strip(&off));
                prop_assert_eq!(r.stats.overlap_mismatches as usize, flagged(r).len());
                let without = flagged(&off);
                prop_assert!(without.iter().all(|i| flagged(r).contains(i)));
            }
            let got = flagged(&whole);
            for i in must_flag(&case, &whole) {
                prop_assert!(got.contains(&i), "step {} contradicts retained bytes unflagged", i);
            }
            if !case.corrupted {
                prop_assert_eq!(whole.stats.overlap_mismatches, 0);
            }
        }

        /// Generous limits, no ACKs: the output is fully determined by the byte map. Every
        /// received position is `Data` with its first copy, every other one is inside a `Gap`,
        /// and a loss-free schedule has no gaps at all.
        #[test]
        fn reassembly_matches_byte_map_oracle(case in case_strategy(0)) {
            let run = run(&case, &StreamConfig::default(), 64 << 20)?;
            let gaps = check_against_oracle(&case, &run)?;
            prop_assert!(case.lossy || !gaps, "gap without loss");
            prop_assert_eq!(run.stats.dropped_segments + run.stats.buffer_limit_hits, 0);
        }

        /// Tight limits, a tiny memcap and ACKs racing the data: gaps may now appear early, but
        /// memory stays under its caps at every step, nothing held is ever given up, and every
        /// byte delivered is still the first copy.
        #[test]
        fn reassembly_under_pressure_keeps_its_invariants(
            case in case_strategy(6),
            max_buffered_bytes in 0usize..600,
            max_segments in 1usize..8,
            memcap in 0usize..1200,
        ) {
            let cfg = limits(max_buffered_bytes, max_segments);
            let run = run(&case, &cfg, memcap)?;
            check_against_oracle(&case, &run)?;
        }
    }
}

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

use super::seq::SeqNum;
use std::collections::BTreeMap;

/// Memory charged to the [`MemBudget`] for each buffered segment on top of its bytes: the map
/// entry and `Vec` header, rounded up. Charging it keeps floods of tiny segments honest.
pub const SEGMENT_OVERHEAD_BYTES: usize = 64;

/// Limits for one direction of one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
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
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_buffered_bytes: 1 << 20,
            max_segments: 2048,
            max_ahead_bytes: 1 << 30,
        }
    }
}

/// The out-of-order memory cap shared by all streams of one worker.
///
/// Single-threaded by design (each worker owns its own); a stream that cannot charge it first
/// gives up its own earliest hole, so one stream's backlog never blocks another's delivery.
#[derive(Debug, PartialEq, Eq)]
pub struct MemBudget {
    memcap_bytes: usize,
    used: usize,
}

impl MemBudget {
    pub fn new(memcap_bytes: usize) -> Self {
        MemBudget {
            memcap_bytes,
            used: 0,
        }
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
    /// Segments whose overlapping bytes differed from the buffered copy.
    pub overlap_mismatches: u64,
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
    fin_delivered: bool,
    /// Out-of-order bytes by stream offset. Invariant between calls: entries are disjoint and
    /// non-empty, every key is greater than `next`, and no entry extends past `fin_at`. Bytes
    /// that continue an entry are appended to it rather than stored separately.
    segs: BTreeMap<u64, Vec<u8>>,
    /// Sum of the lengths in `segs`.
    buffered: usize,
    /// What this stream has charged to the budget: capacities in `segs` plus overheads.
    charged: usize,
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
        self.started = true;
        self.isn = Some(isn);
        self.next = 0;
        self.next_seq = isn.add(1);
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
        let start = seg_start.max(next);
        if start > seg_start {
            ctx.stats.retransmitted_bytes += (end.min(next) - seg_start).max(0) as u64;
        }
        if start < end {
            // Both bounds lie within [next, next + 2^31 + payload.len()], so they fit u64, and
            // their distances from seg_start are within the payload.
            let data = payload
                .get((start - seg_start) as usize..(end - seg_start) as usize)
                .unwrap_or_default();
            self.insert(start as u64, data, ctx, out);
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
    /// stream ends up holding no memory. A FIN seen beyond the last data is delivered after a
    /// gap reaching it.
    pub fn flush(&mut self, ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        let last = self
            .segs
            .last_key_value()
            .map(|(&at, buf)| at + buf.len() as u64);
        let target = self.fin_at.or(last).unwrap_or(self.next);
        self.give_up_until(target, ctx, out);
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
            None => at >= i128::from(self.next) && last.is_none_or(|l| i128::from(l) <= at),
        };
        if !consistent {
            ctx.stats.inconsistent_fins += 1;
            out(StreamEvent::Anomaly(TcpAnomaly::InconsistentFin));
        } else if self.fin_at.is_none() {
            // `at >= next` was checked, and it is within 2^31 + payload of `next`.
            self.fin_at = Some(at as u64);
        }
    }

    /// Places `data` at offset `start` (>= `next`), skipping what is already buffered (first
    /// wins) and delivering or storing the rest.
    fn insert(
        &mut self,
        start: u64,
        data: &[u8],
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
        if mismatch {
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
            self.buffered -= buf.len();
            let cost = buf.capacity() + SEGMENT_OVERHEAD_BYTES;
            ctx.budget.release(cost);
            self.charged -= cost;
            // Invariant: keys never fall behind `next`, so nothing is skipped; `get` keeps this
            // panic-free should that ever break.
            let skip = (self.next - at) as usize;
            self.deliver(buf.get(skip..).unwrap_or_default(), ctx, out);
        }
        if self.fin_at == Some(self.next) && !self.fin_delivered {
            self.fin_delivered = true;
            out(StreamEvent::Fin);
        }
    }

    fn deliver(&mut self, data: &[u8], ctx: &mut StreamCtx, out: &mut dyn FnMut(StreamEvent<'_>)) {
        if data.is_empty() {
            return;
        }
        let n = data.len() as u64;
        self.advance(n);
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

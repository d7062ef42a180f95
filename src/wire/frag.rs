//! IPv4 and IPv6 fragment reassembly.
//!
//! A [`FragTable`] collects the fragments of datagrams that a sensor saw split on the wire and
//! hands back the payload (what follows the IP header, or the IPv6 fragment header) once every
//! byte from offset 0 up to the end announced by the last fragment has arrived.
//!
//! Invariants:
//! - Memory is bounded: the bytes held by all datagrams in progress (buffers at their capacity,
//!   range lists and a fixed per-datagram overhead) never exceed `memcap_bytes`, and at most
//!   `max_datagrams` datagrams are in progress. When either limit would be crossed the oldest
//!   datagram in progress is evicted, and counted.
//! - Time is packet time: a datagram expires `timeout` after its first fragment was seen, checked
//!   whenever a later packet arrives. No clock is read.
//! - Overlapping data is resolved "first wins": bytes already received are never overwritten, so
//!   a later fragment cannot rewrite what an earlier one said (the classic IDS evasion). Every
//!   overlap whose bytes differ is counted.
//! - No datagram grows past [`MAX_DATAGRAM_BYTES`], the largest payload an IP header can announce.

use crate::common::{Duration, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::DecodeStats;

/// The largest reassembled payload accepted: the 16-bit IP length fields cannot describe more.
/// Fragments reaching beyond it are invalid (this is the "ping of death" shape).
pub const MAX_DATAGRAM_BYTES: u32 = 65_535;

/// Memory charged for one datagram in progress besides its buffers: the map entries and the
/// bookkeeping struct. It keeps a flood of tiny fragments from looking free.
const DATAGRAM_OVERHEAD_BYTES: usize = 160;

/// Identifies one datagram being reassembled (RFC 791 / RFC 8200: source, destination,
/// identification, and for IPv4 the protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    /// IPv4: the protocol field. IPv6: always 0, the protocol comes from the first fragment.
    pub proto: u8,
}

/// One received fragment.
#[derive(Clone, Copy, Debug)]
pub struct Fragment<'a> {
    pub key: FragKey,
    /// Byte offset of `data` in the reassembled payload.
    pub offset: u32,
    /// The "more fragments" flag: false on the last fragment.
    pub more: bool,
    /// Protocol of the reassembled payload when this fragment tells it: every IPv4 fragment, and
    /// the IPv6 fragment at offset 0 (its fragment header's next header).
    pub proto: Option<u8>,
    pub data: &'a [u8],
}

/// What became of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum FragOutcome {
    /// Stored; its datagram is still incomplete.
    Held,
    /// The datagram is complete: its payload protocol and bytes.
    Complete { proto: u8, data: Vec<u8> },
    /// Not stored (invalid, over a limit). The reason was counted.
    Dropped,
}

/// Reassembly limits, copied from [`super::DecodeConfig`].
#[derive(Clone, Copy, Debug)]
pub struct FragLimits {
    pub memcap_bytes: usize,
    pub timeout: Duration,
    pub max_datagrams: usize,
}

struct Datagram {
    first_seen: Timestamp,
    /// Tie-breaker in the age index for datagrams first seen at the same instant.
    serial: u64,
    proto: Option<u8>,
    /// End of the payload, known once the last fragment (MF = 0) arrived.
    total: Option<u32>,
    /// Received bytes at their offsets; `data.len()` is the highest end seen so far.
    data: Vec<u8>,
    /// Received byte ranges `[start, end)`: sorted, disjoint and not touching (touching ranges
    /// are merged), so the datagram is complete exactly when this is `[(0, total)]`.
    ranges: Vec<(u32, u32)>,
}

impl Datagram {
    fn mem_bytes(&self) -> usize {
        DATAGRAM_OVERHEAD_BYTES
            + self.data.capacity()
            + self.ranges.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    fn is_complete(&self) -> bool {
        matches!((self.total, self.ranges.as_slice()), (Some(t), [(0, end)]) if *end == t)
    }
}

/// Datagrams in progress, keyed by [`FragKey`], with an age index for expiry and eviction.
pub struct FragTable {
    limits: FragLimits,
    datagrams: HashMap<FragKey, Datagram>,
    /// (first seen in nanoseconds, serial) → key, oldest first.
    by_age: BTreeMap<(u64, u64), FragKey>,
    next_serial: u64,
    mem_bytes: usize,
}

impl FragTable {
    pub fn new(limits: FragLimits) -> Self {
        FragTable {
            limits,
            datagrams: HashMap::new(),
            by_age: BTreeMap::new(),
            next_serial: 0,
            mem_bytes: 0,
        }
    }

    /// Datagrams in progress.
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// Bytes charged against the memcap.
    pub fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    /// Drops every datagram whose first fragment is older than the timeout at `now`.
    pub fn expire(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        while let Some((&(first_ns, _), &key)) = self.by_age.first_key_value() {
            let age = now.saturating_since(Timestamp::from_nanos(first_ns));
            if age <= self.limits.timeout {
                break;
            }
            self.remove(&key);
            stats.frag_timeouts += 1;
        }
    }

    /// Adds one fragment at packet time `now`.
    pub fn insert(
        &mut self,
        now: Timestamp,
        frag: Fragment<'_>,
        stats: &mut DecodeStats,
    ) -> FragOutcome {
        self.expire(now, stats);

        let Some(end) = u32::try_from(frag.data.len())
            .ok()
            .and_then(|len| frag.offset.checked_add(len))
            .filter(|end| *end <= MAX_DATAGRAM_BYTES)
        else {
            stats.frag_invalid += 1;
            return FragOutcome::Dropped;
        };
        // RFC 791 / 8200: every fragment but the last carries a multiple of 8 bytes, and none is
        // empty. Endpoints discard such fragments, so a sensor must not reassemble them either.
        if frag.data.is_empty() || (frag.more && frag.data.len() % 8 != 0) {
            stats.frag_invalid += 1;
            return FragOutcome::Dropped;
        }

        if !self.datagrams.contains_key(&frag.key) && !self.make_room_for_new(stats) {
            return FragOutcome::Dropped;
        }
        let key = frag.key;
        let serial = self.next_serial;
        let dg = self.datagrams.entry(key).or_insert_with(|| Datagram {
            first_seen: now,
            serial,
            proto: None,
            total: None,
            data: Vec::new(),
            ranges: Vec::new(),
        });
        if dg.serial == serial {
            // Freshly created.
            self.next_serial += 1;
            self.mem_bytes += dg.mem_bytes();
            self.by_age.insert((now.as_nanos(), serial), key);
        }

        // A fragment that contradicts the known end of the datagram is dropped, the datagram
        // kept: one bad fragment (or a forged one) should not destroy good data.
        let known_end = dg.data.len() as u32;
        let contradicts = match (frag.more, dg.total) {
            (false, Some(total)) => total != end,
            (false, None) => end < known_end,
            (true, Some(total)) => end > total,
            (true, None) => false,
        };
        if contradicts {
            stats.frag_invalid += 1;
            return FragOutcome::Held;
        }

        // Memory check before the buffer grows.
        let growth = (end as usize).saturating_sub(dg.data.len());
        if growth > 0
            && self.mem_bytes + growth > self.limits.memcap_bytes
            && !self.evict_for(growth, Some(&key), stats)
        {
            // Even alone this datagram does not fit: give it up.
            self.remove(&key);
            stats.frag_memcap_drops += 1;
            return FragOutcome::Dropped;
        }
        let Some(dg) = self.datagrams.get_mut(&key) else {
            return FragOutcome::Dropped;
        };
        let before = dg.mem_bytes();

        if !frag.more {
            dg.total = Some(end);
        }
        if dg.proto.is_none() {
            dg.proto = frag.proto;
        }
        if growth > 0 {
            dg.data.reserve_exact(growth);
            dg.data.resize(end as usize, 0);
        }
        store(dg, frag.offset, end, frag.data, stats);

        let after = dg.mem_bytes();
        self.mem_bytes = self.mem_bytes + after - before;

        if !dg.is_complete() {
            return FragOutcome::Held;
        }
        let proto = dg.proto;
        let Some(mut dg) = self.remove(&key) else {
            return FragOutcome::Dropped;
        };
        match proto {
            Some(proto) => {
                stats.reassembled += 1;
                if let Some(total) = dg.total {
                    dg.data.truncate(total as usize);
                }
                FragOutcome::Complete {
                    proto,
                    data: dg.data,
                }
            }
            // Complete bytes but no fragment said what they are: cannot happen for IPv4, and for
            // IPv6 the offset-0 fragment always carries it. Kept as a guard, counted.
            None => {
                stats.frag_invalid += 1;
                FragOutcome::Dropped
            }
        }
    }

    /// Ensures a new datagram may start, evicting the oldest one at the count limit.
    fn make_room_for_new(&mut self, stats: &mut DecodeStats) -> bool {
        if self.limits.max_datagrams == 0 {
            stats.frag_datagram_limit_drops += 1;
            return false;
        }
        while self.datagrams.len() >= self.limits.max_datagrams {
            let Some((_, &oldest)) = self.by_age.first_key_value() else {
                break;
            };
            self.remove(&oldest);
            stats.frag_datagram_limit_drops += 1;
        }
        if !self.evict_for(DATAGRAM_OVERHEAD_BYTES, None, stats) {
            stats.frag_memcap_drops += 1;
            return false;
        }
        true
    }

    /// Evicts the oldest datagrams other than `keep` until `extra` more bytes fit under the
    /// memcap. Returns false when they cannot fit even with only `keep` left in the table.
    fn evict_for(&mut self, extra: usize, keep: Option<&FragKey>, stats: &mut DecodeStats) -> bool {
        while self.mem_bytes + extra > self.limits.memcap_bytes {
            let victim = self.by_age.values().find(|k| Some(*k) != keep).copied();
            let Some(victim) = victim else {
                return false;
            };
            self.remove(&victim);
            stats.frag_memcap_drops += 1;
        }
        true
    }

    fn remove(&mut self, key: &FragKey) -> Option<Datagram> {
        let dg = self.datagrams.remove(key)?;
        self.by_age.remove(&(dg.first_seen.as_nanos(), dg.serial));
        self.mem_bytes = self.mem_bytes.saturating_sub(dg.mem_bytes());
        Some(dg)
    }
}

/// Copies the parts of `[offset, end)` not yet received into `dg.data` and records the range.
/// Bytes already present win; differing overlaps, partial overlaps and exact duplicates are
/// counted.
fn store(dg: &mut Datagram, offset: u32, end: u32, data: &[u8], stats: &mut DecodeStats) {
    let mut overlapped = false;
    let mut mismatch = false;
    let mut covered: u32 = 0;
    // Walk the existing ranges that intersect [offset, end), comparing the shared bytes.
    for &(s, e) in dg.ranges.iter() {
        let lo = s.max(offset);
        let hi = e.min(end);
        if lo >= hi {
            continue;
        }
        overlapped = true;
        covered += hi - lo;
        let old = dg.data.get(lo as usize..hi as usize);
        let new = data.get((lo - offset) as usize..(hi - offset) as usize);
        if old != new {
            mismatch = true;
        }
    }
    if overlapped {
        if covered == end - offset && !mismatch {
            stats.frag_duplicates += 1;
        } else {
            stats.frag_overlaps += 1;
        }
        if mismatch {
            stats.frag_overlap_mismatches += 1;
        }
    }
    // Fill the gaps between existing ranges.
    let mut cursor = offset;
    let mut gaps: Vec<(u32, u32)> = Vec::new();
    for &(s, e) in dg.ranges.iter() {
        if e <= cursor {
            continue;
        }
        if s >= end {
            break;
        }
        if s > cursor {
            gaps.push((cursor, s));
        }
        cursor = cursor.max(e);
    }
    if cursor < end {
        gaps.push((cursor, end));
    }
    for (s, e) in gaps {
        let src = data.get((s - offset) as usize..(e - offset) as usize);
        let dst = dg.data.get_mut(s as usize..e as usize);
        if let (Some(src), Some(dst)) = (src, dst) {
            dst.copy_from_slice(src);
        }
    }
    merge_range(&mut dg.ranges, offset, end);
}

/// Inserts `[start, end)` into a sorted list of disjoint, non-touching ranges.
fn merge_range(ranges: &mut Vec<(u32, u32)>, start: u32, end: u32) {
    // First range that ends at or after `start` (touching counts, so it merges).
    let first = ranges.partition_point(|&(_, e)| e < start);
    // One past the last range that starts at or before `end`.
    let last = ranges.partition_point(|&(s, _)| s <= end);
    if first >= last {
        ranges.insert(first, (start, end));
        return;
    }
    let new_start = ranges.get(first).map_or(start, |r| r.0.min(start));
    let new_end = ranges.get(last - 1).map_or(end, |r| r.1.max(end));
    ranges.drain(first..last);
    ranges.insert(first, (new_start, new_end));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> FragKey {
        FragKey {
            src: IpAddr::from([10, 0, 0, 1]),
            dst: IpAddr::from([10, 0, 0, 2]),
            id: 7,
            proto: 6,
        }
    }

    fn table(memcap: usize, max: usize) -> FragTable {
        FragTable::new(FragLimits {
            memcap_bytes: memcap,
            timeout: Duration::from_secs(30),
            max_datagrams: max,
        })
    }

    fn frag(key: FragKey, offset: u32, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment {
            key,
            offset,
            more,
            proto: Some(6),
            data,
        }
    }

    fn t(secs: u64) -> Timestamp {
        Timestamp::from_nanos(secs * 1_000_000_000)
    }

    /// Splits `payload` into 8-byte-aligned pieces of `size` and feeds them in `order`.
    fn feed(
        tbl: &mut FragTable,
        stats: &mut DecodeStats,
        payload: &[u8],
        size: usize,
        order: &[usize],
    ) -> Vec<FragOutcome> {
        let pieces: Vec<(u32, &[u8])> = payload
            .chunks(size)
            .enumerate()
            .map(|(i, c)| ((i * size) as u32, c))
            .collect();
        let n = pieces.len();
        order
            .iter()
            .map(|&i| {
                let (off, data) = pieces[i];
                tbl.insert(t(1), frag(key(), off, i + 1 != n, data), stats)
            })
            .collect()
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn in_order_and_reversed_fragments_reassemble() {
        let p = payload(100);
        for order in [vec![0, 1, 2, 3], vec![3, 2, 1, 0], vec![2, 0, 3, 1]] {
            let mut tbl = table(1 << 20, 16);
            let mut st = DecodeStats::default();
            let out = feed(&mut tbl, &mut st, &p, 32, &order);
            assert!(
                out[..3].iter().all(|o| *o == FragOutcome::Held),
                "{order:?}"
            );
            assert_eq!(
                out[3],
                FragOutcome::Complete {
                    proto: 6,
                    data: p.clone()
                },
                "{order:?}"
            );
            assert_eq!(st.reassembled, 1);
            assert_eq!(tbl.len(), 0);
            assert_eq!(tbl.mem_bytes(), 0);
        }
    }

    #[test]
    fn duplicate_fragment_is_counted_and_harmless() {
        let p = payload(48);
        let mut tbl = table(1 << 20, 16);
        let mut st = DecodeStats::default();
        let out = feed(&mut tbl, &mut st, &p, 16, &[0, 0, 1, 2]);
        assert_eq!(st.frag_duplicates, 1);
        assert_eq!(st.frag_overlap_mismatches, 0);
        assert_eq!(
            out[3],
            FragOutcome::Complete {
                proto: 6,
                data: p.clone()
            }
        );
    }

    #[test]
    fn overlap_keeps_first_bytes_and_counts_mismatch() {
        let mut tbl = table(1 << 20, 16);
        let mut st = DecodeStats::default();
        let first = [b'A'; 16];
        let evil = [b'X'; 16];
        let last = [b'C'; 8];
        assert_eq!(
            tbl.insert(t(1), frag(key(), 0, true, &first), &mut st),
            FragOutcome::Held
        );
        // Rewrites bytes 8..16 and brings new bytes 16..24.
        assert_eq!(
            tbl.insert(t(1), frag(key(), 8, true, &evil), &mut st),
            FragOutcome::Held
        );
        let out = tbl.insert(t(1), frag(key(), 24, false, &last), &mut st);
        let mut want = vec![b'A'; 16];
        want.extend_from_slice(&[b'X'; 8]);
        want.extend_from_slice(&[b'C'; 8]);
        assert_eq!(
            out,
            FragOutcome::Complete {
                proto: 6,
                data: want
            }
        );
        assert_eq!(st.frag_overlaps, 1);
        assert_eq!(st.frag_overlap_mismatches, 1);
    }

    #[test]
    fn missing_fragment_times_out_by_packet_time() {
        let p = payload(64);
        let mut tbl = table(1 << 20, 16);
        let mut st = DecodeStats::default();
        feed(&mut tbl, &mut st, &p, 16, &[0, 1, 3]);
        assert_eq!(tbl.len(), 1);
        tbl.expire(t(31), &mut st);
        assert_eq!(tbl.len(), 1, "30 s have not passed since t=1");
        tbl.expire(t(32), &mut st);
        assert_eq!(tbl.len(), 0);
        assert_eq!(st.frag_timeouts, 1);
        assert_eq!(tbl.mem_bytes(), 0);
    }

    #[test]
    fn memcap_evicts_oldest_incomplete_datagram() {
        let mut st = DecodeStats::default();
        // Room for roughly two 1 KiB datagrams.
        let mut tbl = table(2 * (1024 + DATAGRAM_OVERHEAD_BYTES) + 64, 16);
        let data = vec![1u8; 1024];
        for id in 0..3u32 {
            let k = FragKey { id, ..key() };
            let now = t(u64::from(id) + 1);
            assert_eq!(
                tbl.insert(now, frag(k, 0, true, &data), &mut st),
                FragOutcome::Held
            );
        }
        assert_eq!(st.frag_memcap_drops, 1);
        assert_eq!(tbl.len(), 2);
        assert!(tbl.mem_bytes() <= 2 * (1024 + DATAGRAM_OVERHEAD_BYTES) + 64);
        // The oldest (id 0) went; completing it now starts afresh instead of completing.
        let last = [2u8; 8];
        let k0 = FragKey { id: 0, ..key() };
        assert_eq!(
            tbl.insert(t(4), frag(k0, 1024, false, &last), &mut st),
            FragOutcome::Held
        );
        assert_eq!(st.frag_memcap_drops, 2, "id 1 evicted to make room");
        let k2 = FragKey { id: 2, ..key() };
        match tbl.insert(t(4), frag(k2, 1024, false, &last), &mut st) {
            FragOutcome::Complete { data, .. } => assert_eq!(data.len(), 1032),
            other => panic!("id 2 should complete, got {other:?}"),
        }
    }

    #[test]
    fn datagram_count_limit_evicts_oldest() {
        let mut st = DecodeStats::default();
        let mut tbl = table(1 << 20, 2);
        let data = [0u8; 8];
        for id in 0..5u32 {
            let k = FragKey { id, ..key() };
            tbl.insert(t(1), frag(k, 0, true, &data), &mut st);
        }
        assert_eq!(tbl.len(), 2);
        assert_eq!(st.frag_datagram_limit_drops, 3);
    }

    #[test]
    fn invalid_fragments_are_rejected() {
        let mut st = DecodeStats::default();
        let mut tbl = table(1 << 20, 4);
        // Non-last fragment with a length that is not a multiple of 8.
        assert_eq!(
            tbl.insert(t(1), frag(key(), 0, true, &[0; 10]), &mut st),
            FragOutcome::Dropped
        );
        // Beyond the 64 KiB limit.
        assert_eq!(
            tbl.insert(t(1), frag(key(), 65_528, false, &[0; 16]), &mut st),
            FragOutcome::Dropped
        );
        // Two different ends.
        tbl.insert(t(1), frag(key(), 16, false, &[0; 8]), &mut st);
        assert_eq!(
            tbl.insert(t(1), frag(key(), 32, false, &[0; 8]), &mut st),
            FragOutcome::Held
        );
        assert_eq!(st.frag_invalid, 3);
    }

    proptest! {
        /// Random fragments of one payload, in random order with random duplicates and
        /// overlapping re-sends of the same bytes, always reassemble to the payload exactly once.
        #[test]
        fn random_cover_reassembles_exactly(
            len8 in 1usize..64,
            tail in 1usize..8,
            cuts in proptest::collection::vec((0usize..64, 1usize..16), 1..40),
        ) {
            let total = len8 * 8 + tail;
            let p = payload(total);
            let mut pieces: Vec<(usize, usize)> = cuts
                .iter()
                .map(|&(s, l)| {
                    let s = (s % (len8 + 1)) * 8;
                    (s, (s + l * 8).min(total))
                })
                .collect();
            // Guarantee coverage with an aligned tiling, placed at random positions.
            for (i, s) in (0..total).step_by(16).enumerate() {
                pieces.insert(i * 7 % (pieces.len() + 1), (s, (s + 16).min(total)));
            }
            let mut tbl = table(1 << 20, 4);
            let mut st = DecodeStats::default();
            let mut completions = Vec::new();
            for (s, e) in pieces {
                let more = e != total;
                if more && (e - s) % 8 != 0 {
                    continue;
                }
                if let FragOutcome::Complete { data, .. } =
                    tbl.insert(t(1), frag(key(), s as u32, more, &p[s..e]), &mut st)
                {
                    completions.push(data);
                }
            }
            // Fragments after completion start a new datagram; the first completion is whole.
            prop_assert!(!completions.is_empty());
            prop_assert_eq!(&completions[0], &p);
            prop_assert_eq!(st.frag_overlap_mismatches, 0);
        }

        #[test]
        fn merge_range_matches_bitmap(ops in proptest::collection::vec((0u32..200, 1u32..40), 1..30)) {
            let mut ranges = Vec::new();
            let mut bits = [false; 256];
            for (s, l) in ops {
                merge_range(&mut ranges, s, s + l);
                for b in &mut bits[s as usize..(s + l) as usize] {
                    *b = true;
                }
            }
            let mut want = Vec::new();
            let mut i = 0;
            while i < bits.len() {
                if bits[i] {
                    let s = i;
                    while i < bits.len() && bits[i] { i += 1; }
                    want.push((s as u32, i as u32));
                } else {
                    i += 1;
                }
            }
            prop_assert_eq!(ranges, want);
        }
    }
}

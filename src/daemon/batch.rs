//! Packet batches: fixed-size buffers that carry packets from the capture thread to a worker.
//!
//! The capture source lends each packet only until the next read, so the capture thread copies
//! it into the batch of the worker it belongs to. Batches are allocated once, at start, and go
//! round a loop: free pool → capture thread → worker queue → worker → free pool.
//!
//! Invariants:
//! - A batch never grows: `data` and `meta` keep the capacity they were created with, so the
//!   steady state allocates nothing per packet and packet memory is exactly
//!   `batches * batch_bytes`.
//! - Any packet fits in an empty batch: one longer than the whole batch is cut to it and keeps
//!   its original length, exactly as a snaplen would cut it (the decoder flags it truncated).

use crate::capture::RawPacket;
use crate::common::Timestamp;

/// Where one packet lives in a batch.
#[derive(Clone, Copy, Debug)]
struct Meta {
    ts: Timestamp,
    linktype: i32,
    orig_len: u32,
    start: usize,
    len: usize,
}

/// Packets copied out of the capture source, in capture order.
#[derive(Debug)]
pub struct PacketBatch {
    data: Vec<u8>,
    meta: Vec<Meta>,
}

impl PacketBatch {
    /// A batch holding up to `bytes` of packet data in up to `packets` packets (each at least 1).
    pub fn new(bytes: usize, packets: usize) -> PacketBatch {
        PacketBatch {
            data: Vec::with_capacity(bytes.max(1)),
            meta: Vec::with_capacity(packets.max(1)),
        }
    }

    /// Copies `pkt` in. Returns false, copying nothing, when it does not fit: the caller sends
    /// this batch and pushes into an empty one, where it always fits (cut if need be).
    pub fn push(&mut self, pkt: &RawPacket<'_>) -> bool {
        let room = self.data.capacity() - self.data.len();
        if self.meta.len() == self.meta.capacity() || (pkt.data.len() > room && !self.is_empty()) {
            return false;
        }
        let take = pkt.data.get(..room).unwrap_or(pkt.data);
        let start = self.data.len();
        self.data.extend_from_slice(take);
        self.meta.push(Meta {
            ts: pkt.ts,
            linktype: pkt.linktype,
            orig_len: pkt.orig_len,
            start,
            len: take.len(),
        });
        true
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.data.clear();
        self.meta.clear();
    }

    /// The packets, in the order they were pushed.
    pub fn packets(&self) -> impl Iterator<Item = RawPacket<'_>> + '_ {
        self.meta.iter().map(move |m| RawPacket {
            ts: m.ts,
            linktype: m.linktype,
            data: self.data.get(m.start..m.start + m.len).unwrap_or(&[]),
            orig_len: m.orig_len,
        })
    }

    /// Bytes the batch can hold (it never holds more).
    pub fn capacity_bytes(&self) -> usize {
        self.data.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pkt(ts: u64, data: &[u8]) -> RawPacket<'_> {
        RawPacket {
            ts: Timestamp::from_nanos(ts),
            linktype: 1,
            data,
            orig_len: data.len() as u32 + 3,
        }
    }

    proptest! {
        /// Pushing packets into batches (a new one whenever push says full) hands back every
        /// packet unchanged, in order, and no batch ever reallocates.
        #[test]
        fn packets_come_out_as_they_went_in(
            sizes in proptest::collection::vec(0usize..300, 0..200),
            bytes in 300usize..2000,
            per_batch in 1usize..20,
        ) {
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
                .collect();
            let mut batches = vec![PacketBatch::new(bytes, per_batch)];
            for (i, p) in payloads.iter().enumerate() {
                let last = batches.len() - 1;
                if !batches[last].push(&pkt(i as u64, p)) {
                    let mut b = PacketBatch::new(bytes, per_batch);
                    prop_assert!(b.push(&pkt(i as u64, p)), "an empty batch takes any packet");
                    batches.push(b);
                }
            }
            let mut out = Vec::new();
            for b in &batches {
                prop_assert_eq!(b.capacity_bytes(), bytes);
                prop_assert!(b.len() <= per_batch);
                for p in b.packets() {
                    out.push((p.ts.as_nanos(), p.data.to_vec(), p.orig_len));
                }
            }
            let want: Vec<(u64, Vec<u8>, u32)> = payloads
                .iter()
                .enumerate()
                .map(|(i, p)| (i as u64, p.clone(), p.len() as u32 + 3))
                .collect();
            prop_assert_eq!(out, want);
        }
    }

    #[test]
    fn a_packet_larger_than_the_batch_is_cut_and_keeps_its_length() {
        let mut b = PacketBatch::new(100, 4);
        let big = vec![9u8; 150];
        assert!(b.push(&pkt(1, &big)));
        let p = b.packets().next().expect("one packet");
        assert_eq!(p.data.len(), 100);
        assert_eq!(p.orig_len, 153);
        // Full now: the next packet goes to another batch.
        assert!(!b.push(&pkt(2, &[1, 2, 3])));
        b.clear();
        assert!(b.is_empty());
        assert!(b.push(&pkt(2, &[1, 2, 3])));
        assert_eq!(b.capacity_bytes(), 100);
    }
}

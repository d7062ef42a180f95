//! A streaming writer for classic pcap files with nanosecond timestamps.
//!
//! The file header uses the nanosecond magic `0xa1b23c4d` (written little-endian), so record
//! timestamps carry the full [`Timestamp`] resolution. Records go straight to the underlying
//! writer: nothing but the current record is ever held, so captures of any size stream in
//! constant memory (wrap the writer in a `BufWriter` for throughput).
//!
//! Invariants: every record has `incl_len <= snaplen` and `incl_len <= orig_len`; the writer never
//! reorders records (the caller merges by time).

use crate::common::Timestamp;
use std::io::{self, Write};

/// Nanosecond-resolution pcap magic number.
pub const PCAP_MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// DLT_EN10MB / LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: packets start with an IPv4 or IPv6 header.
pub const LINKTYPE_RAW: u32 = 101;
/// The snaplen tcpdump uses by default; large enough that nothing is ever cut.
pub const DEFAULT_SNAPLEN: u32 = 262_144;

/// Writes a pcap file header once, then one record per [`PcapWriter::write_packet`] call.
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
    packets: u64,
    bytes: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the 24-byte file header. `snaplen` of 0 is treated as [`DEFAULT_SNAPLEN`].
    pub fn new(mut out: W, linktype: u32, snaplen: u32) -> io::Result<Self> {
        let snaplen = if snaplen == 0 {
            DEFAULT_SNAPLEN
        } else {
            snaplen
        };
        let mut hdr = [0u8; 24];
        hdr[0..4].copy_from_slice(&PCAP_MAGIC_NANOS.to_le_bytes());
        hdr[4..6].copy_from_slice(&2u16.to_le_bytes());
        hdr[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay zero, as every modern writer leaves them.
        hdr[16..20].copy_from_slice(&snaplen.to_le_bytes());
        hdr[20..24].copy_from_slice(&linktype.to_le_bytes());
        out.write_all(&hdr)?;
        Ok(PcapWriter {
            out,
            snaplen,
            packets: 0,
            bytes: 24,
        })
    }

    /// Writes one packet whose original length is its full length; it is cut to the snaplen.
    pub fn write_packet(&mut self, ts: Timestamp, data: &[u8]) -> io::Result<()> {
        let orig = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.write_packet_with_orig_len(ts, data, orig)
    }

    /// Writes a packet that was already cut by a smaller capture snaplen: `data` is what was
    /// captured, `orig_len` what was on the wire. `orig_len` below `data.len()` is raised to it.
    pub fn write_packet_with_orig_len(
        &mut self,
        ts: Timestamp,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let keep = data.len().min(self.snaplen as usize);
        let captured = data.get(..keep).unwrap_or(data);
        let incl = captured.len() as u32;
        let orig = orig_len.max(incl);
        let nanos = ts.as_nanos();
        let secs = u32::try_from(nanos / 1_000_000_000).unwrap_or(u32::MAX);
        let sub = (nanos % 1_000_000_000) as u32;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&secs.to_le_bytes());
        rec[4..8].copy_from_slice(&sub.to_le_bytes());
        rec[8..12].copy_from_slice(&incl.to_le_bytes());
        rec[12..16].copy_from_slice(&orig.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(captured)?;
        self.packets += 1;
        self.bytes += 16 + u64::from(incl);
        Ok(())
    }

    /// Records written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes written so far, file header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// One record read back from a pcap written by [`PcapWriter`] (for tests and tools).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapRecord {
    pub ts: Timestamp,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Parses a whole little-endian nanosecond pcap; `None` when the bytes are not one.
/// Meant for tests over small captures, so it returns owned records.
pub fn read_pcap(bytes: &[u8]) -> Option<(u32, Vec<PcapRecord>)> {
    let magic = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?);
    if magic != PCAP_MAGIC_NANOS {
        return None;
    }
    let linktype = u32::from_le_bytes(bytes.get(20..24)?.try_into().ok()?);
    let mut out = Vec::new();
    let mut pos = 24usize;
    while pos < bytes.len() {
        let rec = bytes.get(pos..pos.checked_add(16)?)?;
        let secs = u32::from_le_bytes(rec[0..4].try_into().ok()?);
        let sub = u32::from_le_bytes(rec[4..8].try_into().ok()?);
        let incl = u32::from_le_bytes(rec[8..12].try_into().ok()?) as usize;
        let orig_len = u32::from_le_bytes(rec[12..16].try_into().ok()?);
        let start = pos + 16;
        let data = bytes.get(start..start.checked_add(incl)?)?.to_vec();
        out.push(PcapRecord {
            ts: Timestamp::from_secs_nanos(i64::from(secs), sub),
            orig_len,
            data,
        });
        pos = start + incl;
    }
    Some((linktype, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_round_trip_with_snaplen_cut() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_ETHERNET, 8).unwrap();
        let t1 = Timestamp::from_secs_nanos(1_700_000_000, 123_456_789);
        w.write_packet(t1, &[1, 2, 3]).unwrap();
        w.write_packet(t1, &[9; 20]).unwrap();
        w.write_packet_with_orig_len(t1, &[5; 4], 1500).unwrap();
        assert_eq!(w.packets(), 3);
        let bytes = w.into_inner();
        assert_eq!(&bytes[0..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 8);
        let (lt, recs) = read_pcap(&bytes).unwrap();
        assert_eq!(lt, LINKTYPE_ETHERNET);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].ts, t1);
        assert_eq!(recs[0].data, vec![1, 2, 3]);
        assert_eq!((recs[1].data.len(), recs[1].orig_len), (8, 20));
        assert_eq!((recs[2].data.len(), recs[2].orig_len), (4, 1500));
        assert_eq!(bytes.len(), 24 + 16 * 3 + 3 + 8 + 4);
    }
}

//! Reading pcap/pcapng files, several merged into one stream in timestamp order.
//!
//! The merge keeps one look-ahead packet per file that is not being read from (a k-way merge).
//! The file being read is the "current" one: its packets are handed out straight from libpcap's
//! buffer while they are not later than every other file's look-ahead. Only when the current
//! file's next packet is later than another file's look-ahead is it copied and set aside, and
//! the earliest look-ahead handed out. A single file therefore never copies a packet.
//!
//! Invariant: packets come out in non-decreasing time order across files when each file is
//! itself in order; ties go to the file that is current, then to the file given first.

use super::{header_ts, reason, CaptureError, CaptureStats, RawPacket};
use crate::common::Timestamp;
use pcap::{Capture, Offline, Precision};
use std::path::{Path, PathBuf};

/// A packet copied out of libpcap's buffer.
struct Owned {
    ts: Timestamp,
    data: Vec<u8>,
    orig_len: u32,
}

struct Stream {
    path: PathBuf,
    cap: Capture<Offline>,
    linktype: i32,
    /// The next packet of this file, when it is not the current one.
    head: Option<Owned>,
    /// The file has no more packets (ended or damaged).
    done: bool,
}

enum Read<'a> {
    /// The packet is not later than `bound`: hand it out.
    Yield(RawPacket<'a>),
    /// The packet is later than `bound`: it was stored in `head`.
    Deferred,
    /// End of file, or damage (counted).
    End,
}

impl Stream {
    /// Reads the next packet: hands it out when it is not later than `bound`, else stores it as
    /// this file's look-ahead.
    fn read(&mut self, bound: Option<Timestamp>, stats: &mut CaptureStats) -> Read<'_> {
        if self.done {
            return Read::End;
        }
        match self.cap.next_packet() {
            Ok(p) => {
                let ts = header_ts(p.header, 1);
                if bound.is_none_or(|b| ts <= b) {
                    return Read::Yield(RawPacket {
                        ts,
                        linktype: self.linktype,
                        data: p.data,
                        orig_len: p.header.len,
                    });
                }
                self.head = Some(Owned {
                    ts,
                    data: p.data.to_vec(),
                    orig_len: p.header.len,
                });
                Read::Deferred
            }
            Err(pcap::Error::NoMorePackets) => {
                self.done = true;
                Read::End
            }
            Err(e) => {
                end_on_error(&mut self.done, &self.path, e, stats);
                Read::End
            }
        }
    }

    /// Reads the next packet into `head` (a look-ahead copy).
    fn prime(&mut self, stats: &mut CaptureStats) {
        if self.done {
            return;
        }
        match self.cap.next_packet() {
            Ok(p) => {
                self.head = Some(Owned {
                    ts: header_ts(p.header, 1),
                    data: p.data.to_vec(),
                    orig_len: p.header.len,
                });
            }
            Err(pcap::Error::NoMorePackets) => self.done = true,
            Err(e) => end_on_error(&mut self.done, &self.path, e, stats),
        }
    }
}

/// Ends a file's stream after a read error, counting and logging it once.
fn end_on_error(done: &mut bool, path: &Path, e: pcap::Error, stats: &mut CaptureStats) {
    *done = true;
    let why = reason(&e, &path.to_string_lossy());
    // libpcap says "truncated dump file" (pcap) or "truncated pcapng dump file" when a record
    // is cut short; anything else is other damage.
    if why.contains("truncated") {
        stats.truncated_files += 1;
    } else {
        stats.read_errors += 1;
    }
    let line = format!(
        "{}: capture file ends early, later packets skipped: {why}",
        path.display()
    );
    eprintln!("{line}");
    stats.warnings.push(line);
}

/// pcap and pcapng files replayed as one packet stream.
pub struct OfflineSource {
    streams: Vec<Stream>,
    /// The file packets are read from directly; it has no look-ahead.
    current: Option<usize>,
    /// The look-ahead last handed out, kept alive until the next call.
    out: Option<Owned>,
    out_linktype: i32,
    stats: CaptureStats,
}

impl OfflineSource {
    /// Opens every file, failing with a message naming the first that cannot be read as a
    /// capture.
    pub fn open(paths: &[PathBuf]) -> Result<OfflineSource, CaptureError> {
        if paths.is_empty() {
            return Err(CaptureError::NoFiles);
        }
        let mut streams = Vec::with_capacity(paths.len());
        for path in paths {
            streams.push(open_one(path)?);
        }
        let mut src = OfflineSource {
            streams,
            current: Some(0),
            out: None,
            out_linktype: 0,
            stats: CaptureStats::default(),
        };
        // Every file but the first gets its look-ahead now; the first is read directly.
        for s in src.streams.iter_mut().skip(1) {
            s.prime(&mut src.stats);
        }
        Ok(src)
    }

    /// Counters so far.
    pub fn stats(&self) -> &CaptureStats {
        &self.stats
    }

    /// Link type of the first file (files may differ; each packet carries its own).
    pub fn linktype(&self) -> i32 {
        self.streams.first().map_or(0, |s| s.linktype)
    }

    /// The next packet in time order, or None when every file has ended.
    pub fn next_packet(&mut self) -> Option<RawPacket<'_>> {
        let OfflineSource {
            streams,
            current,
            out,
            out_linktype,
            stats,
        } = self;
        if let Some(c) = *current {
            let (before, rest) = streams.split_at_mut(c);
            let (cur, after) = rest.split_first_mut()?;
            let bound = before
                .iter()
                .chain(after.iter())
                .filter_map(|s| s.head.as_ref().map(|h| h.ts))
                .min();
            if let Read::Yield(p) = cur.read(bound, stats) {
                stats.packets += 1;
                stats.bytes += p.data.len() as u64;
                return Some(p);
            }
            // The current file ended or its packet was set aside; `cur` is not touched again, so
            // the earliest look-ahead is among the other files.
            *current = None;
            return take_earliest(before, after, c, current, out, out_linktype, stats);
        }
        take_earliest(
            streams,
            &mut [],
            usize::MAX,
            current,
            out,
            out_linktype,
            stats,
        )
    }
}

/// Hands out the earliest look-ahead among `a` then `b` (`b` starts at index `skip + 1`; `a`
/// at 0) and makes its file current.
fn take_earliest<'a>(
    a: &mut [Stream],
    b: &mut [Stream],
    skip: usize,
    current: &mut Option<usize>,
    out: &'a mut Option<Owned>,
    out_linktype: &mut i32,
    stats: &mut CaptureStats,
) -> Option<RawPacket<'a>> {
    let b_base = skip.wrapping_add(1);
    let mut best: Option<(Timestamp, usize, bool)> = None;
    for (i, s) in a.iter().enumerate() {
        if let Some(h) = &s.head {
            if best.is_none_or(|(t, _, _)| h.ts < t) {
                best = Some((h.ts, i, false));
            }
        }
    }
    for (i, s) in b.iter().enumerate() {
        if let Some(h) = &s.head {
            if best.is_none_or(|(t, _, _)| h.ts < t) {
                best = Some((h.ts, i, true));
            }
        }
    }
    let (_, i, in_b) = best?;
    let s = if in_b { b.get_mut(i)? } else { a.get_mut(i)? };
    *out = s.head.take();
    *out_linktype = s.linktype;
    *current = Some(if in_b { b_base + i } else { i });
    let o = out.as_ref()?;
    stats.packets += 1;
    stats.bytes += o.data.len() as u64;
    Some(RawPacket {
        ts: o.ts,
        linktype: *out_linktype,
        data: &o.data,
        orig_len: o.orig_len,
    })
}

fn open_one(path: &Path) -> Result<Stream, CaptureError> {
    let fail = |reason: String| CaptureError::Open {
        path: path.to_path_buf(),
        reason,
    };
    let Some(text) = path.to_str() else {
        return Err(fail("path is not valid UTF-8".into()));
    };
    // libpcap reads both pcap and pcapng; asking for nanoseconds keeps nanosecond files exact
    // and scales microsecond files up.
    let cap = Capture::from_file_with_precision(path, Precision::Nano)
        .map_err(|e| fail(reason(&e, text)))?;
    let linktype = cap.get_datalink().0;
    Ok(Stream {
        path: path.to_path_buf(),
        cap,
        linktype,
        head: None,
        done: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory for one test's files, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch_dir(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "apitap-offline-{}-{}-{}",
            std::process::id(),
            name,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    struct Rec<'a> {
        ts_ns: u64,
        data: &'a [u8],
        orig_len: u32,
    }

    fn rec(ts_ns: u64, data: &[u8]) -> Rec<'_> {
        Rec {
            ts_ns,
            data,
            orig_len: data.len() as u32,
        }
    }

    /// Writes a classic pcap file, with nanosecond or microsecond stamps.
    fn write_pcap(path: &Path, nanos: bool, linktype: u32, recs: &[Rec<'_>]) {
        let mut f = Vec::new();
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        f.extend_from_slice(&magic.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65_535u32.to_le_bytes());
        f.extend_from_slice(&linktype.to_le_bytes());
        for r in recs {
            let secs = (r.ts_ns / 1_000_000_000) as u32;
            let frac = (r.ts_ns % 1_000_000_000) as u32;
            let frac = if nanos { frac } else { frac / 1000 };
            f.extend_from_slice(&secs.to_le_bytes());
            f.extend_from_slice(&frac.to_le_bytes());
            f.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
            f.extend_from_slice(&r.orig_len.to_le_bytes());
            f.extend_from_slice(r.data);
        }
        std::fs::write(path, f).expect("write pcap");
    }

    /// Writes a pcapng file with one interface (microsecond resolution, the default).
    fn write_pcapng(path: &Path, linktype: u16, recs: &[Rec<'_>]) {
        let mut f = Vec::new();
        let block = |f: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let len = (12 + body.len()) as u32;
            f.extend_from_slice(&kind.to_le_bytes());
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(body);
            f.extend_from_slice(&len.to_le_bytes());
        };
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut f, 0x0A0D_0D0A, &shb);
        let mut idb = linktype.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65_535u32.to_le_bytes());
        block(&mut f, 1, &idb);
        for r in recs {
            let us = r.ts_ns / 1000;
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(us as u32).to_le_bytes());
            epb.extend_from_slice(&(r.data.len() as u32).to_le_bytes());
            epb.extend_from_slice(&r.orig_len.to_le_bytes());
            epb.extend_from_slice(r.data);
            while epb.len() % 4 != 0 {
                epb.push(0);
            }
            block(&mut f, 6, &epb);
        }
        std::fs::write(path, f).expect("write pcapng");
    }

    /// Reads everything: (ts in ns, linktype, first data byte, data length, orig_len).
    fn drain(src: &mut OfflineSource) -> Vec<(u64, i32, u8, usize, u32)> {
        let mut out = Vec::new();
        while let Some(p) = src.next_packet() {
            out.push((
                p.ts.as_nanos(),
                p.linktype,
                p.data.first().copied().unwrap_or(0),
                p.data.len(),
                p.orig_len,
            ));
        }
        out
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    #[test]
    fn single_nanosecond_file_keeps_exact_time_and_lengths() {
        let dir = scratch_dir("single");
        let path = dir.join("a.pcap");
        let recs = [
            rec(T0 + 123_456_789, &[1; 60]),
            Rec {
                ts_ns: T0 + 999_999_999,
                data: &[2; 40],
                orig_len: 1514,
            },
        ];
        write_pcap(&path, true, 1, &recs);
        let mut src = OfflineSource::open(std::slice::from_ref(&path)).expect("open");
        assert_eq!(src.linktype(), 1);
        assert_eq!(
            drain(&mut src),
            vec![
                (T0 + 123_456_789, 1, 1, 60, 60),
                (T0 + 999_999_999, 1, 2, 40, 1514)
            ]
        );
        assert_eq!(src.stats().packets, 2);
        assert_eq!(src.stats().bytes, 100);
        assert!(src.next_packet().is_none(), "stays ended");
    }

    #[test]
    fn microsecond_pcap_and_pcapng_scale_to_nanoseconds() {
        let dir = scratch_dir("micro");
        let a = dir.join("a.pcap");
        let b = dir.join("b.pcapng");
        write_pcap(&a, false, 101, &[rec(T0 + 5_000, &[0x45; 20])]);
        write_pcapng(&b, 1, &[rec(T0 + 7_000, &[9; 64])]);
        let mut src = OfflineSource::open(&[a]).expect("open pcap");
        // libpcap reports LINKTYPE_RAW (101 in the file) as DLT_RAW, 12 on Linux.
        assert_eq!(drain(&mut src), vec![(T0 + 5_000, 12, 0x45, 20, 20)]);
        let mut src = OfflineSource::open(&[b]).expect("open pcapng");
        assert_eq!(drain(&mut src), vec![(T0 + 7_000, 1, 9, 64, 64)]);
    }

    #[test]
    fn files_merge_in_time_order_keeping_each_linktype() {
        let dir = scratch_dir("merge");
        let a = dir.join("a.pcap");
        let b = dir.join("b.pcap");
        let c = dir.join("c.pcap");
        // a: 1 3 5 7, b: 2 3 8, c: empty. Ties go to the current file, then to the earlier one.
        let ra: Vec<Rec<'_>> = [1u64, 3, 5, 7]
            .iter()
            .map(|t| rec(T0 + t, &[0xA0]))
            .collect();
        let rb: Vec<Rec<'_>> = [2u64, 3, 8].iter().map(|t| rec(T0 + t, &[0xB0])).collect();
        write_pcap(&a, true, 1, &ra);
        write_pcap(&b, true, 113, &rb);
        write_pcap(&c, true, 1, &[]);
        let mut src = OfflineSource::open(&[a, b, c]).expect("open");
        let got: Vec<(u64, i32, u8)> = drain(&mut src)
            .into_iter()
            .map(|(t, lt, b0, _, _)| (t - T0, lt, b0))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 1, 0xA0),
                (2, 113, 0xB0),
                (3, 113, 0xB0),
                (3, 1, 0xA0),
                (5, 1, 0xA0),
                (7, 1, 0xA0),
                (8, 113, 0xB0),
            ]
        );
        assert_eq!(src.stats().packets, 7);
    }

    #[test]
    fn truncated_file_ends_its_stream_with_a_warning() {
        let dir = scratch_dir("trunc");
        let a = dir.join("cut.pcap");
        let b = dir.join("ok.pcap");
        write_pcap(
            &a,
            true,
            1,
            &[rec(T0 + 1, &[1; 100]), rec(T0 + 4, &[1; 100])],
        );
        write_pcap(&b, true, 1, &[rec(T0 + 2, &[2; 10]), rec(T0 + 6, &[2; 10])]);
        // Cut the second record of `cut.pcap` in the middle of its data.
        let bytes = std::fs::read(&a).expect("read");
        std::fs::write(&a, &bytes[..bytes.len() - 30]).expect("cut");
        let mut src = OfflineSource::open(&[a.clone(), b]).expect("open");
        let got: Vec<u64> = drain(&mut src).into_iter().map(|r| r.0 - T0).collect();
        assert_eq!(got, vec![1, 2, 6]);
        let st = src.stats();
        assert_eq!((st.truncated_files, st.read_errors), (1, 0));
        assert_eq!(st.warnings.len(), 1);
        assert!(
            st.warnings[0].contains(&a.display().to_string()),
            "{}",
            st.warnings[0]
        );
    }

    #[test]
    fn unopenable_files_fail_naming_the_file() {
        let dir = scratch_dir("bad");
        let missing = dir.join("missing.pcap");
        let text = dir.join("notes.txt");
        std::fs::write(&text, "this is not a capture file at all\n").expect("write");
        let good = dir.join("good.pcap");
        write_pcap(&good, true, 1, &[]);
        for bad in [missing, text] {
            let err = OfflineSource::open(&[good.clone(), bad.clone()])
                .err()
                .expect("must fail");
            let msg = err.to_string();
            println!("{msg}");
            assert!(msg.starts_with(&bad.display().to_string()), "{msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
        assert!(matches!(
            OfflineSource::open(&[]),
            Err(CaptureError::NoFiles)
        ));
    }
}

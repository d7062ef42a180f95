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

//! A durable, bounded FIFO of encoded alerts on local disk, in front of each network sink.
//!
//! Layout of a spool directory:
//! - `<id>.seg`: segment files, `id` a zero-padded 20-digit number increasing with age order.
//!   A segment is a sequence of records: `magic (4) | len u32 LE | crc32c u32 LE | payload`,
//!   where the CRC covers the length bytes and the payload.
//! - `ack`: the position (segment id, offset) just past the last acknowledged record, with its
//!   own magic and CRC, replaced atomically (write `ack.tmp`, fsync, rename, fsync directory).
//!
//! Invariants:
//! - Records before the ack position are delivered; every record at or after it is re-sent
//!   after a restart. Acking therefore happens only after the receiver's 2xx, which makes
//!   delivery at least once.
//! - Bytes of segment files on disk never exceed `max_spool_bytes` after an append: the oldest
//!   segment is deleted (its undelivered records counted as dropped) to make room.
//! - Nothing read from disk is trusted: a record with a bad magic, length or CRC is counted and
//!   skipped by scanning forward to the next valid record. The magic contains bytes that never
//!   occur in UTF-8, so inside JSON payloads it cannot appear, and a false match must also pass
//!   the CRC. A torn tail on the active segment (a crash mid-write) is cut off at open so new
//!   records follow valid ones.
//! - Memory is bounded: one index entry per pending record, and a record read allocates at most
//!   `max_record_bytes`; a segment scanned at open is read whole only if it is within the
//!   spool bound.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::{FsyncPolicy, SpoolConfig};

/// Starts every record. 0xFF and 0xFE never occur in UTF-8 text.
const RECORD_MAGIC: [u8; 4] = [0xFF, 0xFE, b'A', b'S'];
/// Starts the ack file.
const ACK_MAGIC: [u8; 4] = [0xFF, 0xFE, b'A', b'K'];
/// Magic, length and CRC.
pub const RECORD_HEADER_BYTES: u64 = 12;
const ACK_FILE_BYTES: usize = 24;
const ACK_FILE: &str = "ack";
const ACK_TMP_FILE: &str = "ack.tmp";
const SEGMENT_SUFFIX: &str = ".seg";

/// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, as in iSCSI and ext4 metadata.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32c(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for part in parts {
        for &b in *part {
            c = CRC32C_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
    }
    !c
}

/// A place in the spool: a segment and a byte offset in it. Ordered by age.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// One pending record: where it starts and how long its payload is.
#[derive(Clone, Copy, Debug)]
struct RecordRef {
    segment: u64,
    offset: u64,
    len: u32,
}

impl RecordRef {
    fn end(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset + RECORD_HEADER_BYTES + u64::from(self.len),
        }
    }
}

#[derive(Debug)]
struct Segment {
    id: u64,
    bytes: u64,
}

/// Records read for one delivery attempt. Acknowledge with [`Spool::ack`]`(batch.end)`.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<Vec<u8>>,
    /// Just past the last record in `records`.
    pub end: Position,
    /// Records found corrupt while reading this batch (skipped, already counted).
    pub corrupt: u64,
}

/// Counters of one spool since it was opened (gauges are current values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes of segment files on disk (gauge).
    pub bytes: u64,
    /// Records appended and not yet acknowledged (gauge).
    pub pending: u64,
    /// Undelivered records dropped because the spool was full.
    pub dropped: u64,
    /// Corrupt regions skipped (each a record or a run of garbage between valid records).
    pub corrupt_records: u64,
    /// Bytes skipped in those regions.
    pub corrupt_bytes: u64,
    /// Ack files that could not be read and were treated as "nothing acknowledged".
    pub corrupt_acks: u64,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("record of {len} bytes exceeds max_record_bytes {max}")]
    TooLarge { len: usize, max: u64 },
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
}

/// What an append did besides appending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Oldest undelivered records dropped to make room.
    pub dropped: u64,
}

/// The spool of one sink. Single owner; not shared between threads.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cfg: SpoolConfig,
    /// Oldest first; the last one is the active (appended) segment when `active` is open.
    segments: VecDeque<Segment>,
    active: Option<File>,
    next_segment: u64,
    /// Pending records, oldest first.
    index: VecDeque<RecordRef>,
    ack: Position,
    /// Open handle for reading, with the id of the segment it belongs to.
    reader: Option<(u64, File)>,
    unsynced: bool,
    last_sync: Instant,
    stats: SpoolStats,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, recovering pending records and cutting a
    /// torn tail off the newest segment.
    pub fn open(dir: &Path, cfg: &SpoolConfig) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut stats = SpoolStats::default();
        let _ = fs::remove_file(dir.join(ACK_TMP_FILE));
        let ack = match fs::read(dir.join(ACK_FILE)) {
            Ok(bytes) => decode_ack(&bytes).unwrap_or_else(|| {
                stats.corrupt_acks += 1;
                super::sink::log_warn(
                    "Spool ack file is corrupt; every spooled alert will be re-sent.",
                    &[("dir", &dir.display())],
                );
                Position::default()
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Position::default(),
            Err(e) => return Err(e),
        };
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .filter(|n| n.len() == 20)
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cfg: cfg.clone(),
            segments: VecDeque::new(),
            active: None,
            next_segment: ack.segment.saturating_add(1),
            index: VecDeque::new(),
            ack,
            reader: None,
            unsynced: false,
            last_sync: Instant::now(),
            stats,
        };
        let last = ids.last().copied();
        for id in ids {
            spool.next_segment = spool.next_segment.max(id.saturating_add(1));
            let path = spool.segment_path(id);
            if id < ack.segment {
                // Fully acknowledged; a crash came between the ack and the delete.
                fs::remove_file(&path)?;
                continue;
            }
            let len = fs::metadata(&path)?.len();
            if len > cfg.max_spool_bytes {
                // Larger than the whole spool may be: not ours to read into memory.
                super::sink::log_warn(
                    "Spool segment is larger than max_spool_bytes; deleted unread.",
                    &[("path", &path.display()), ("bytes", &len)],
                );
                spool.stats.corrupt_records += 1;
                spool.stats.corrupt_bytes += len;
                fs::remove_file(&path)?;
                continue;
            }
            let data = fs::read(&path)?;
            let start = if id == ack.segment { ack.offset } else { 0 };
            let scan = scan_segment(&data, start, cfg.max_record_bytes);
            spool.stats.corrupt_records += scan.corrupt_regions;
            spool.stats.corrupt_bytes += scan.corrupt_bytes;
            if scan.corrupt_regions > 0 {
                super::sink::log_warn(
                    "Spool segment has corrupt records; skipped them.",
                    &[
                        ("path", &path.display()),
                        ("regions", &scan.corrupt_regions),
                        ("bytes", &scan.corrupt_bytes),
                    ],
                );
            }
            spool
                .index
                .extend(scan.records.iter().map(|&(offset, len)| RecordRef {
                    segment: id,
                    offset,
                    len,
                }));
            let mut bytes = len;
            if Some(id) == last && scan.valid_end < len {
                // A torn tail: cut it so the next append follows a valid record.
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_end.max(start.min(len)))?;
                f.sync_all()?;
                bytes = scan.valid_end.max(start.min(len));
            }
            spool.segments.push_back(Segment { id, bytes });
        }
        // Resume appending to the newest segment if it has room.
        if let Some(seg) = spool.segments.back() {
            // Never append below the ack position (possible only if the file was cut by hand):
            // such records would count as delivered after the next restart.
            let below_ack = seg.id == ack.segment && seg.bytes < ack.offset;
            if seg.bytes < cfg.segment_bytes && !below_ack {
                let f = OpenOptions::new()
                    .append(true)
                    .open(spool.segment_path(seg.id))?;
                spool.active = Some(f);
            }
        }
        spool.refresh_gauges();
        // A smaller bound than last run: enforce it now rather than at the next append.
        spool.make_room(0)?;
        Ok(spool)
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
    }

    fn refresh_gauges(&mut self) {
        self.stats.bytes = self.segments.iter().map(|s| s.bytes).sum();
        self.stats.pending = self.index.len() as u64;
    }

    pub fn stats(&self) -> SpoolStats {
        self.stats
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.index.len()
    }

    /// Appends one record. Call [`Spool::flush`] after a burst of appends to apply the fsync
    /// policy. Drops the oldest segments first if the record would not fit the bound; the
    /// caller logs drops (it can rate-limit them across appends).
    pub fn append(&mut self, payload: &[u8]) -> Result<AppendOutcome, AppendError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| u64::from(l) <= self.cfg.max_record_bytes)
            .ok_or(AppendError::TooLarge {
                len: payload.len(),
                max: self.cfg.max_record_bytes,
            })?;
        let record_bytes = RECORD_HEADER_BYTES + u64::from(len);
        if let Some(seg) = self.segments.back() {
            if self.active.is_some()
                && seg.bytes > 0
                && seg.bytes + record_bytes > self.cfg.segment_bytes
            {
                self.roll()?;
            }
        }
        let dropped = self.make_room(record_bytes)?;
        if self.active.is_none() {
            let id = self.next_segment;
            self.next_segment = id.saturating_add(1);
            let f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.segment_path(id))?;
            if self.cfg.fsync == FsyncPolicy::Always {
                // The new directory entry must survive too, or the records in it are lost.
                sync_dir(&self.dir)?;
            }
            self.active = Some(f);
            self.segments.push_back(Segment { id, bytes: 0 });
        }
        let (Some(file), Some(seg)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Err(AppendError::Io(io::Error::other("no active segment")));
        };
        let len_bytes = len.to_le_bytes();
        let crc = crc32c(&[&len_bytes, payload]);
        let mut record = Vec::with_capacity(payload.len() + RECORD_HEADER_BYTES as usize);
        record.extend_from_slice(&RECORD_MAGIC);
        record.extend_from_slice(&len_bytes);
        record.extend_from_slice(&crc.to_le_bytes());
        record.extend_from_slice(payload);
        if let Err(e) = file.write_all(&record) {
            // Undo a partial write so the segment stays a sequence of whole records.
            let _ = file.set_len(seg.bytes);
            return Err(e.into());
        }
        self.index.push_back(RecordRef {
            segment: seg.id,
            offset: seg.bytes,
            len,
        });
        seg.bytes += record_bytes;
        self.unsynced = true;
        self.refresh_gauges();
        Ok(AppendOutcome { dropped })
    }

    /// Applies the fsync policy to what was appended since the last flush.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.cfg.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval => {
                if self.last_sync.elapsed() >= Duration::from_secs(self.cfg.fsync_interval_secs) {
                    self.sync()
                } else {
                    Ok(())
                }
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// Forces appended records to stable storage, whatever the policy (used at shutdown).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some(f) = &self.active {
                f.sync_data()?;
            }
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Closes the active segment; the next append starts a new one.
    fn roll(&mut self) -> io::Result<()> {
        if let Some(f) = self.active.take() {
            if self.unsynced && self.cfg.fsync != FsyncPolicy::Never {
                f.sync_data()?;
            }
            self.unsynced = false;
        }
        Ok(())
    }

    /// Deletes oldest segments until `incoming` more bytes fit. Returns records dropped.
    fn make_room(&mut self, incoming: u64) -> io::Result<u64> {
        let mut dropped = 0;
        while self.stats.bytes + incoming > self.cfg.max_spool_bytes {
            let Some(oldest) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                // The oldest is also the active segment.
                self.roll()?;
            }
            let mut n = 0u64;
            while self.index.front().is_some_and(|r| r.segment == oldest.id) {
                self.index.pop_front();
                n += 1;
            }
            if matches!(self.reader, Some((id, _)) if id == oldest.id) {
                self.reader = None;
            }
            remove_if_exists(&self.segment_path(oldest.id))?;
            self.ack = self.ack.max(Position {
                segment: oldest.id.saturating_add(1),
                offset: 0,
            });
            dropped += n;
            self.stats.dropped += n;
            self.refresh_gauges();
        }
        Ok(dropped)
    }

    /// Reads the oldest pending records: at most `max_records`, and at most `max_bytes` of
    /// payload unless the first record alone is larger. Corrupt records met on the way (the disk
    /// changed under us) are counted and dropped from the index.
    pub fn peek(&mut self, max_records: usize, max_bytes: u64) -> io::Result<Batch> {
        let mut batch = Batch {
            end: self.ack,
            ..Batch::default()
        };
        let mut bytes = 0u64;
        let mut i = 0;
        while batch.records.len() < max_records {
            let Some(r) = self.index.get(i).copied() else {
                break;
            };
            if !batch.records.is_empty() && bytes + u64::from(r.len) > max_bytes {
                break;
            }
            match self.read_record(r)? {
                Some(payload) => {
                    bytes += u64::from(r.len);
                    batch.records.push(payload);
                    i += 1;
                }
                None => {
                    self.index.remove(i);
                    self.stats.corrupt_records += 1;
                    self.stats.corrupt_bytes += RECORD_HEADER_BYTES + u64::from(r.len);
                    batch.corrupt += 1;
                    self.refresh_gauges();
                }
            }
            batch.end = r.end();
        }
        Ok(batch)
    }

    fn read_record(&mut self, r: RecordRef) -> io::Result<Option<Vec<u8>>> {
        if !matches!(self.reader, Some((id, _)) if id == r.segment) {
            let f = match File::open(self.segment_path(r.segment)) {
                Ok(f) => f,
                // Deleted under us: its records are gone, like corrupt ones. Any other error may
                // pass (permissions fixed, disk back), so it is retried.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            self.reader = Some((r.segment, f));
        }
        let Some((_, f)) = self.reader.as_mut() else {
            return Ok(None);
        };
        f.seek(SeekFrom::Start(r.offset))?;
        let mut header = [0u8; RECORD_HEADER_BYTES as usize];
        let mut payload = vec![0u8; r.len as usize];
        if f.read_exact(&mut header).is_err() || f.read_exact(&mut payload).is_err() {
            return Ok(None);
        }
        Ok(parse_header(&header, self.cfg.max_record_bytes)
            .filter(|&(len, crc)| len == r.len && crc == crc32c(&[&len.to_le_bytes(), &payload]))
            .map(|_| payload))
    }

    /// Marks everything before `end` delivered: persists the position atomically, then deletes
    /// segments that hold nothing pending. Positions at or before the current ack are ignored.
    ///
    /// The in-memory state advances even if persisting fails, so this process does not re-send
    /// forever; after a restart the unpersisted part is re-sent, which at-least-once allows.
    pub fn ack(&mut self, end: Position) -> io::Result<()> {
        if end <= self.ack {
            return Ok(());
        }
        self.ack = end;
        while self.index.front().is_some_and(|r| r.end() <= end) {
            self.index.pop_front();
        }
        let persisted = write_ack(&self.dir, end, self.cfg.fsync);
        // Segments before the oldest pending record are finished; if nothing is pending, the
        // active one is too (the next append starts a fresh segment with a larger id).
        let keep_from = self.index.front().map_or(u64::MAX, |r| r.segment);
        while self.segments.front().is_some_and(|s| s.id < keep_from) {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            if self.segments.is_empty() {
                self.active = None;
                self.unsynced = false;
            }
            if matches!(self.reader, Some((id, _)) if id == seg.id) {
                self.reader = None;
            }
            if persisted.is_ok() {
                remove_if_exists(&self.segment_path(seg.id))?;
            } else {
                // Without a durable ack the file must stay so a restart can re-send it; it is
                // no longer tracked, and the next successful open deletes or rescans it.
            }
        }
        self.refresh_gauges();
        persisted
    }
}

fn parse_header(
    h: &[u8; RECORD_HEADER_BYTES as usize],
    max_record_bytes: u64,
) -> Option<(u32, u32)> {
    let (magic, rest) = h.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let (crc, _) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len);
    (magic == &RECORD_MAGIC && u64::from(len) <= max_record_bytes)
        .then_some((len, u32::from_le_bytes(*crc)))
}

/// What a scan of one segment found.
struct Scan {
    /// (offset, payload length) of each valid record from the start offset.
    records: Vec<(u64, u32)>,
    /// Just past the last valid record (or the start offset).
    valid_end: u64,
    corrupt_regions: u64,
    corrupt_bytes: u64,
}

/// Walks `data` from `start`, resynchronising on the record magic after any corruption.
fn scan_segment(data: &[u8], start: u64, max_record_bytes: u64) -> Scan {
    let mut scan = Scan {
        records: Vec::new(),
        valid_end: start,
        corrupt_regions: 0,
        corrupt_bytes: 0,
    };
    let Ok(mut pos) = usize::try_from(start) else {
        return scan;
    };
    let mut garbage_from: Option<usize> = None;
    while pos < data.len() {
        if let Some(len) = valid_record_at(data, pos, max_record_bytes) {
            if let Some(g) = garbage_from.take() {
                scan.corrupt_regions += 1;
                scan.corrupt_bytes += (pos - g) as u64;
            }
            scan.records.push((pos as u64, len));
            pos += RECORD_HEADER_BYTES as usize + len as usize;
            scan.valid_end = pos as u64;
            continue;
        }
        garbage_from.get_or_insert(pos);
        // Skip to the next candidate magic.
        pos = match data
            .get(pos + 1..)
            .and_then(|rest| memchr::memmem::find(rest, &RECORD_MAGIC))
        {
            Some(i) => pos + 1 + i,
            None => data.len(),
        };
    }
    if let Some(g) = garbage_from {
        scan.corrupt_regions += 1;
        scan.corrupt_bytes += (data.len() - g) as u64;
    }
    scan
}

fn valid_record_at(data: &[u8], pos: usize, max_record_bytes: u64) -> Option<u32> {
    let header: &[u8; RECORD_HEADER_BYTES as usize] = data
        .get(pos..pos.checked_add(RECORD_HEADER_BYTES as usize)?)?
        .try_into()
        .ok()?;
    let (len, crc) = parse_header(header, max_record_bytes)?;
    let body_start = pos + RECORD_HEADER_BYTES as usize;
    let payload = data.get(body_start..body_start.checked_add(len as usize)?)?;
    (crc32c(&[&len.to_le_bytes(), payload]) == crc).then_some(len)
}

fn decode_ack(bytes: &[u8]) -> Option<Position> {
    let b: &[u8; ACK_FILE_BYTES] = bytes.try_into().ok()?;
    let (magic, rest) = b.split_first_chunk::<4>()?;
    let (segment, rest) = rest.split_first_chunk::<8>()?;
    let (offset, rest) = rest.split_first_chunk::<8>()?;
    let (crc, _) = rest.split_first_chunk::<4>()?;
    (magic == &ACK_MAGIC && crc32c(&[segment, offset]) == u32::from_le_bytes(*crc)).then(|| {
        Position {
            segment: u64::from_le_bytes(*segment),
            offset: u64::from_le_bytes(*offset),
        }
    })
}

fn write_ack(dir: &Path, pos: Position, fsync: FsyncPolicy) -> io::Result<()> {
    let segment = pos.segment.to_le_bytes();
    let offset = pos.offset.to_le_bytes();
    let mut buf = Vec::with_capacity(ACK_FILE_BYTES);
    buf.extend_from_slice(&ACK_MAGIC);
    buf.extend_from_slice(&segment);
    buf.extend_from_slice(&offset);
    buf.extend_from_slice(&crc32c(&[&segment, &offset]).to_le_bytes());
    let tmp = dir.join(ACK_TMP_FILE);
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    if fsync != FsyncPolicy::Never {
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(ACK_FILE))?;
    if fsync != FsyncPolicy::Never {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Deleting a file someone else already deleted is not an error: the goal is reached.
fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(max_spool_bytes: u64, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            max_spool_bytes,
            segment_bytes,
            max_record_bytes: 4096,
            fsync: FsyncPolicy::Never,
            fsync_interval_secs: 1,
        }
    }

    fn payload(i: usize) -> Vec<u8> {
        format!(
            "{{\"id\":\"alert-{i:05}\",\"pad\":\"{}\"}}",
            "x".repeat(i % 50)
        )
        .into_bytes()
    }

    fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let batch = spool.peek(7, 1 << 20).unwrap();
            if batch.records.is_empty() && batch.corrupt == 0 {
                return out;
            }
            out.extend(batch.records);
            spool.ack(batch.end).unwrap();
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    }

    #[test]
    fn records_survive_reopen_in_order_and_acks_persist() {
        let dir = tempdir("reopen");
        let c = cfg(1 << 20, 1024);
        let mut s = Spool::open(&dir, &c).unwrap();
        for i in 0..40 {
            s.append(&payload(i)).unwrap();
        }
        s.sync().unwrap();
        let first = s.peek(10, 1 << 20).unwrap();
        assert_eq!(first.records, (0..10).map(payload).collect::<Vec<_>>());
        s.ack(first.end).unwrap();
        drop(s);

        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(s.pending(), 30);
        assert_eq!(drain(&mut s), (10..40).map(payload).collect::<Vec<_>>());
        assert_eq!(s.stats().bytes, 0, "fully acked segments are deleted");
        s.append(&payload(99)).unwrap();
        drop(s);
        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(drain(&mut s), vec![payload(99)]);
        assert_eq!(s.stats().corrupt_records, 0);
    }

    #[test]
    fn full_spool_drops_oldest_segments_and_counts_them() {
        let dir = tempdir("bound");
        let c = cfg(4096, 1024);
        let mut s = Spool::open(&dir, &c).unwrap();
        let mut dropped = 0;
        for i in 0..200 {
            dropped += s.append(&payload(i)).unwrap().dropped;
            assert!(
                s.stats().bytes <= c.max_spool_bytes,
                "bound held after append {i}"
            );
            assert!(on_disk_bytes(&dir) <= c.max_spool_bytes);
        }
        assert!(dropped > 0);
        assert_eq!(s.stats().dropped, dropped);
        let kept = drain(&mut s);
        assert_eq!(kept.len() as u64 + dropped, 200);
        // What is kept is exactly the newest suffix, in order.
        let first_kept = 200 - kept.len();
        assert_eq!(kept, (first_kept..200).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempdir("torn");
        let c = cfg(1 << 20, 1 << 16);
        let mut s = Spool::open(&dir, &c).unwrap();
        for i in 0..5 {
            s.append(&payload(i)).unwrap();
        }
        drop(s);
        let seg = only_segment(&dir);
        let full = fs::read(&seg).unwrap();
        // Cut the last record in half, as a crash mid-write would.
        fs::write(&seg, &full[..full.len() - 7]).unwrap();
        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(s.stats().corrupt_records, 1);
        assert_eq!(s.pending(), 4);
        s.append(&payload(5)).unwrap();
        drop(s);
        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(
            s.stats().corrupt_records,
            0,
            "the tail was cut, not left behind"
        );
        assert_eq!(
            drain(&mut s),
            [0, 1, 2, 3, 5].into_iter().map(payload).collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupt_record_in_the_middle_is_skipped_and_later_ones_recovered() {
        let dir = tempdir("middle");
        let c = cfg(1 << 20, 1 << 16);
        let mut s = Spool::open(&dir, &c).unwrap();
        for i in 0..6 {
            s.append(&payload(i)).unwrap();
        }
        drop(s);
        let seg = only_segment(&dir);
        let mut data = fs::read(&seg).unwrap();
        // Flip a byte inside the payload of record 2, and another in the length of record 4.
        let starts = scan_segment(&data, 0, 4096).records;
        let (off2, _) = starts[2];
        data[off2 as usize + 20] ^= 0x40;
        let (off4, _) = starts[4];
        data[off4 as usize + 5] ^= 0x01;
        fs::write(&seg, &data).unwrap();
        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(s.stats().corrupt_records, 2);
        assert_eq!(
            drain(&mut s),
            [0, 1, 3, 5].into_iter().map(payload).collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupt_ack_file_means_resend_everything() {
        let dir = tempdir("ack");
        let c = cfg(1 << 20, 1 << 16);
        let mut s = Spool::open(&dir, &c).unwrap();
        for i in 0..4 {
            s.append(&payload(i)).unwrap();
        }
        let b = s.peek(2, 1 << 20).unwrap();
        s.ack(b.end).unwrap();
        drop(s);
        let mut ack = fs::read(dir.join(ACK_FILE)).unwrap();
        ack[10] ^= 0xff;
        fs::write(dir.join(ACK_FILE), &ack).unwrap();
        let mut s = Spool::open(&dir, &c).unwrap();
        assert_eq!(s.stats().corrupt_acks, 1);
        assert_eq!(drain(&mut s), (0..4).map(payload).collect::<Vec<_>>());
    }

    #[test]
    fn segment_deleted_under_the_spool_is_skipped_not_retried_forever() {
        let dir = tempdir("deleted");
        let c = cfg(1 << 20, 1024);
        let mut s = Spool::open(&dir, &c).unwrap();
        for i in 0..40 {
            s.append(&payload(i)).unwrap();
        }
        let oldest = s.segments.front().unwrap().id;
        let lost = s.index.iter().filter(|r| r.segment == oldest).count();
        fs::remove_file(s.segment_path(oldest)).unwrap();
        let got = drain(&mut s);
        assert_eq!(got, (lost..40).map(payload).collect::<Vec<_>>());
        assert_eq!(s.stats().corrupt_records, lost as u64);
    }

    #[test]
    fn oversize_records_are_refused() {
        let dir = tempdir("oversize");
        let mut s = Spool::open(&dir, &cfg(1 << 20, 1 << 16)).unwrap();
        assert!(matches!(
            s.append(&vec![b'x'; 4097]),
            Err(AppendError::TooLarge { len: 4097, .. })
        ));
        assert_eq!(s.pending(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any damage to a segment file (truncation, overwritten bytes) never panics the
        /// reader, and every record whose bytes were untouched is still delivered.
        #[test]
        fn damaged_segments_never_panic_and_keep_untouched_records(
            n in 1usize..30,
            cut in 0usize..4000,
            flips in proptest::collection::vec((0usize..4000, 1u8..=255), 0..6),
        ) {
            let dir = tempdir("prop");
            let c = cfg(1 << 20, 1 << 16);
            let mut s = Spool::open(&dir, &c).unwrap();
            for i in 0..n {
                s.append(&payload(i)).unwrap();
            }
            drop(s);
            let seg = only_segment(&dir);
            let mut data = fs::read(&seg).unwrap();
            let spans: Vec<(usize, usize)> = scan_segment(&data, 0, 4096)
                .records
                .iter()
                .map(|&(o, l)| (o as usize, o as usize + 12 + l as usize))
                .collect();
            let mut damaged = vec![false; n];
            for (at, x) in &flips {
                if let Some(b) = data.get_mut(*at) {
                    *b ^= x;
                    for (i, (a, e)) in spans.iter().enumerate() {
                        if (*a..*e).contains(at) { damaged[i] = true; }
                    }
                }
            }
            let cut = cut.min(data.len());
            data.truncate(data.len() - cut.min(data.len()));
            for (i, (_, e)) in spans.iter().enumerate() {
                if *e > data.len() { damaged[i] = true; }
            }
            fs::write(&seg, &data).unwrap();
            let mut s = Spool::open(&dir, &c).unwrap();
            let got = drain(&mut s);
            for (i, hit) in damaged.iter().enumerate() {
                if !hit {
                    prop_assert!(got.contains(&payload(i)), "record {} lost", i);
                }
            }
            // Nothing invented: every delivered record is one that was written.
            for r in &got {
                prop_assert!((0..n).any(|i| &payload(i) == r));
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }

    fn on_disk_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(SEGMENT_SUFFIX))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let segs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(SEGMENT_SUFFIX))
            .collect();
        assert_eq!(segs.len(), 1, "{segs:?}");
        segs.into_iter().next().unwrap()
    }

    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "apitap-spool-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        dir
    }
}

//! Packet capture: the one stage that touches files and network interfaces.
//!
//! [`OfflineSource`] replays pcap and pcapng files (several at once, merged in timestamp order);
//! [`LiveSource`] reads an interface through libpcap. Both hand out [`RawPacket`]s that borrow
//! libpcap's buffer (or, when merging files, a look-ahead copy) until the next call.
//!
//! Invariants:
//! - Timestamps are kept at nanosecond precision where the source has it; they are the network
//!   time every later stage runs on.
//! - Damage inside a file ends that file's stream with a counted, logged warning; it never ends
//!   the run or panics. Only failing to open a source is an error.

mod live;
mod offline;

pub use live::{KernelStats, LiveOptions, LiveSource};
pub use offline::OfflineSource;

use crate::common::Timestamp;
use std::path::PathBuf;

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the epoch.
    pub ts: Timestamp,
    /// pcap link type (`DLT_*` value) of the source this frame came from.
    pub linktype: i32,
    /// The captured bytes: at most the snaplen.
    pub data: &'a [u8],
    /// Length of the frame on the wire; larger than `data.len()` when the snaplen cut it.
    pub orig_len: u32,
}

/// Counters of a capture source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets handed out.
    pub packets: u64,
    /// Captured bytes handed out.
    pub bytes: u64,
    /// Files that ended in the middle of a record.
    pub truncated_files: u64,
    /// Files that stopped early because a record could not be read (other damage).
    pub read_errors: u64,
    /// One line per file that ended early, naming it and the reason. At most one per file.
    pub warnings: Vec<String>,
}

/// Why a capture source could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No file was given to an offline source.
    #[error("no capture files given")]
    NoFiles,
    /// A capture file is missing, unreadable or not a pcap/pcapng file.
    #[error("{}: cannot open capture file: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// A live interface could not be opened or configured.
    #[error("interface {interface}: cannot capture: {reason}")]
    Live { interface: String, reason: String },
    /// The BPF filter did not compile.
    #[error("interface {interface}: bad capture filter {filter:?}: {reason}")]
    Filter {
        interface: String,
        filter: String,
        reason: String,
    },
    /// Reading from a live interface failed.
    #[error("interface {interface}: read failed: {reason}")]
    Read { interface: String, reason: String },
}

/// Converts a libpcap header time. `frac` is microseconds or nanoseconds per `nanos_per_unit`.
fn timestamp(secs: i64, frac: i64, nanos_per_unit: u32) -> Timestamp {
    let frac = u32::try_from(frac.max(0)).unwrap_or(u32::MAX);
    let nanos = frac.saturating_mul(nanos_per_unit).min(999_999_999);
    Timestamp::from_secs_nanos(secs, nanos)
}

/// The timestamp of a libpcap record header.
// `time_t` and `suseconds_t` are 32 bits on some platforms and 64 on others, so the casts are
// needed there even though they are no-ops here.
#[allow(clippy::unnecessary_cast)]
fn header_ts(h: &pcap::PacketHeader, nanos_per_unit: u32) -> Timestamp {
    timestamp(h.ts.tv_sec as i64, h.ts.tv_usec as i64, nanos_per_unit)
}

/// libpcap's error text without a leading "path: " it sometimes adds.
fn reason(err: &pcap::Error, path: &str) -> String {
    let text = match err {
        pcap::Error::PcapError(s) => s.clone(),
        other => other.to_string(),
    };
    text.strip_prefix(path)
        .and_then(|t| t.strip_prefix(": "))
        .map(str::to_owned)
        .unwrap_or(text)
}

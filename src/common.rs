//! Small value types shared by every pipeline stage: packet time, stream direction, and short
//! text held inline.
//!
//! Invariant: time in apitap is always *network time*, taken from packet timestamps. No stage
//! below `capture` and `cli` reads a clock; they receive a [`Timestamp`] with each event. That is
//! what makes a replay of the same capture deterministic.

use std::fmt;

/// A packet timestamp: nanoseconds since the Unix epoch.
///
/// pcap files carry microsecond or nanosecond resolution; both convert losslessly. Serialised
/// as the plain nanosecond count.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// Builds a timestamp from whole seconds and a sub-second part in nanoseconds.
    /// Values before the epoch clamp to zero; values past year 2554 saturate.
    pub fn from_secs_nanos(secs: i64, nanos: u32) -> Self {
        if secs < 0 {
            return Timestamp(0);
        }
        Timestamp(
            (secs as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(nanos as u64),
        )
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        (self.0 / 1_000_000_000) as f64 + (self.0 % 1_000_000_000) as f64 / 1e9
    }

    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later (packets may be slightly out of
    /// order across merged capture files).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A span of network time in nanoseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Duration(u64);

impl Duration {
    pub const fn from_nanos(n: u64) -> Self {
        Duration(n)
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1_000_000_000)
    }
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

/// Which way bytes travel once a connection's roles are known.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    /// Client to server: requests.
    ToServer,
    /// Server to client: responses.
    ToClient,
}

impl Direction {
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
    /// 0 for `ToServer`, 1 for `ToClient`: an index into per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

/// Longest text an [`InlineText`] holds without a heap block: a one-letter kind, `:` and 16
/// hex digits (every pseudonym) fit, with room to spare.
pub const INLINE_TEXT_BYTES: usize = 22;

/// Short text held in place (no heap block up to [`INLINE_TEXT_BYTES`] bytes), longer text on
/// the heap. For keys probed or copied on every transaction (pseudonyms, caller-table keys): a
/// `String` would cost an allocation per copy and a cache miss per compare.
///
/// Equality, hashing and order are those of the text (so a wrapper may implement
/// `Borrow<str>`). Invariant: inline exactly when the text fits, with the unused tail of the
/// buffer zero, so one text has one representation and the derived equality (a compare of the
/// slot, no UTF-8 check: tables probe keys on every transaction) is the text's.
#[derive(Clone, PartialEq, Eq)]
pub struct InlineText(TextRepr);

#[derive(Clone, PartialEq, Eq)]
enum TextRepr {
    Inline {
        len: u8,
        buf: [u8; INLINE_TEXT_BYTES],
    },
    Heap(Box<str>),
}

impl InlineText {
    pub fn new(text: &str) -> InlineText {
        let mut buf = [0u8; INLINE_TEXT_BYTES];
        match (buf.get_mut(..text.len()), u8::try_from(text.len())) {
            (Some(dst), Ok(len)) => {
                dst.copy_from_slice(text.as_bytes());
                InlineText(TextRepr::Inline { len, buf })
            }
            _ => InlineText(TextRepr::Heap(text.into())),
        }
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // The bytes are a whole `&str` copied in by `new`, so they are valid UTF-8.
            TextRepr::Inline { len, buf } => buf
                .get(..usize::from(*len))
                .and_then(|b| std::str::from_utf8(b).ok())
                .unwrap_or_default(),
            TextRepr::Heap(s) => s,
        }
    }

    /// Whether the text is held in place (it fits).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, TextRepr::Inline { .. })
    }
}

impl From<InlineText> for String {
    fn from(t: InlineText) -> String {
        match t.0 {
            TextRepr::Heap(s) => s.into(),
            TextRepr::Inline { .. } => t.as_str().to_owned(),
        }
    }
}

/// As the text's hash.
impl std::hash::Hash for InlineText {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for InlineText {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InlineText {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for InlineText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_seconds_and_nanos() {
        let t = Timestamp::from_secs_nanos(1_700_000_000, 123_456_789);
        assert_eq!(t.secs(), 1_700_000_000);
        assert_eq!(format!("{t}"), "1700000000.123456789");
        assert!((t.as_secs_f64() - 1_700_000_000.123_457).abs() < 1e-5);
        assert_eq!(Timestamp::from_secs_nanos(-5, 0), Timestamp::ZERO);
    }

    #[test]
    fn duration_saturates_when_clock_goes_backwards() {
        let a = Timestamp::from_secs_nanos(10, 0);
        let b = Timestamp::from_secs_nanos(9, 0);
        assert_eq!(b.saturating_since(a), Duration::from_nanos(0));
        assert_eq!(a.saturating_since(b), Duration::from_secs(1));
    }
}

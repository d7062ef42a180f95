//! TCP sequence numbers: a `u32` newtype whose ordering wraps around 2^32.
//!
//! Sequence space is circular (RFC 793 §3.3), so `a < b` means "b is ahead of a by less than half
//! the space" (serial number arithmetic, RFC 1982). Invariant: no comparison here is a plain
//! integer comparison; code that needs a total order converts to a 64-bit stream offset first
//! (see `reassembly`), which is why `SeqNum` deliberately does not implement `Ord`.
//! Two numbers exactly 2^31 apart compare as "behind" in both directions: RFC 1982 leaves that
//! case undefined, and callers treat anything that far away as out of window anyway.

use std::fmt;
use std::ops;

/// A TCP sequence (or acknowledgement) number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// The number `n` bytes ahead, wrapping at 2^32.
    // Named `add` to read like the arithmetic it is; `ops::Add<u32>` is implemented too.
    #[allow(clippy::should_implement_trait)]
    #[must_use]
    pub const fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }

    /// Signed distance from `other` to `self`: positive when `self` is ahead of `other`.
    pub const fn diff(self, other: SeqNum) -> i32 {
        // Reinterpreting the wrapped difference as signed is exactly RFC 1982's comparison.
        self.0.wrapping_sub(other.0) as i32
    }

    /// `self` is strictly behind `other`.
    pub const fn lt(self, other: SeqNum) -> bool {
        self.diff(other) < 0
    }

    /// `self` is behind or equal to `other`.
    pub const fn le(self, other: SeqNum) -> bool {
        self.diff(other) <= 0
    }

    /// `self` is strictly ahead of `other`.
    pub const fn gt(self, other: SeqNum) -> bool {
        self.diff(other) > 0
    }

    /// `self` is ahead of or equal to `other`.
    pub const fn ge(self, other: SeqNum) -> bool {
        self.diff(other) >= 0
    }

    /// The later of two numbers in wrapping order.
    #[must_use]
    pub const fn max(self, other: SeqNum) -> SeqNum {
        if self.ge(other) {
            self
        } else {
            other
        }
    }
}

impl ops::Add<u32> for SeqNum {
    type Output = SeqNum;

    fn add(self, n: u32) -> SeqNum {
        SeqNum::add(self, n)
    }
}

impl fmt::Debug for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SeqNum({})", self.0)
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One comparison case: `a` against `b`, the expected distance `a - b`, and the four
    /// relations rendered as a string so a failing row shows every relation at once.
    fn check(a: u32, b: u32, diff: i32, relations: &str) {
        let (a, b) = (SeqNum(a), SeqNum(b));
        assert_eq!(a.diff(b), diff, "{a:?}.diff({b:?})");
        let got: Vec<&str> = [
            ("lt", a.lt(b)),
            ("le", a.le(b)),
            ("gt", a.gt(b)),
            ("ge", a.ge(b)),
        ]
        .iter()
        .filter(|(_, holds)| *holds)
        .map(|(name, _)| *name)
        .collect();
        assert_eq!(got.join(" "), relations, "{a:?} vs {b:?}");
    }

    #[test]
    fn comparisons_wrap_at_two_to_the_32() {
        check(1, 2, -1, "lt le");
        check(2, 1, 1, "gt ge");
        check(7, 7, 0, "le ge");
        // Across the wrap: 5 is 11 bytes ahead of 2^32 - 6.
        check(5, u32::MAX - 5, 11, "gt ge");
        check(u32::MAX - 5, 5, -11, "lt le");
        check(0, u32::MAX, 1, "gt ge");
        // Just under half the space is still "ahead".
        check(0x7fff_ffff, 0, i32::MAX, "gt ge");
        check(0, 0x7fff_ffff, -i32::MAX, "lt le");
        // Exactly half the space apart: undefined by RFC 1982, "behind" both ways here.
        check(0x8000_0000, 0, i32::MIN, "lt le");
        check(0, 0x8000_0000, i32::MIN, "lt le");
    }

    #[test]
    fn add_wraps_and_max_follows_wrapping_order() {
        assert_eq!(SeqNum(u32::MAX).add(1), SeqNum(0));
        assert_eq!(SeqNum(u32::MAX - 1) + 5, SeqNum(3));
        assert_eq!(SeqNum(u32::MAX).max(SeqNum(3)), SeqNum(3));
        assert_eq!(SeqNum(3).max(SeqNum(u32::MAX)), SeqNum(3));
        assert_eq!(SeqNum(10).max(SeqNum(9)), SeqNum(10));
    }

    proptest! {
        #[test]
        fn diff_inverts_add(base in any::<u32>(), n in 0u32..=i32::MAX as u32) {
            let a = SeqNum(base);
            let b = a.add(n);
            prop_assert_eq!(b.diff(a), n as i32);
            prop_assert_eq!(a.diff(b), -(n as i32));
            prop_assert!(a.le(b) && b.ge(a));
            prop_assert_eq!(a.lt(b), n != 0);
        }
    }
}

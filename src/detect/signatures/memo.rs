//! A bounded memo of values the injection classifiers judged clean, so that the values most
//! requests repeat (`User-Agent`, `Referer`, custom `X-` headers, common query values) run
//! through the classifiers once, not on every request.
//!
//! Invariants:
//! - Only clean verdicts are remembered, and a hit stands for exactly what a fresh
//!   classification would return: the key is a digest of every input the verdict depends on
//!   (the decoded value and the encoded-traversal flag, see [`key`]). The digest is the first
//!   128 bits of SHA-256, so making an attack value share a clean value's entry would take a
//!   SHA-256 collision, not just a crafted input.
//! - Values are never kept, only their digests; the caller does not even digest values that
//!   may be credentials (cookies, password fields).
//! - Fixed size: [`SETS`] sets of [`WAYS`] digests (64 KiB), allocated once. Each set is kept
//!   in most-recently-used order; a new digest takes the front of its set and, when the set is
//!   full, pushes out the least recently used one (an eviction, counted by the caller). Which
//!   set a digest lands in and which entry leaves depend only on the sequence of values, never
//!   on a random seed or the clock, so replaying a capture gives the same hits and evictions.

use sha2::{Digest, Sha256};

/// Sets in the memo (a power of two: the set is picked by the digest's low bits).
pub const SETS: usize = 1024;
/// Digests per set. Four ways keep a hot value resident while unique values (ids, names)
/// stream through its set.
pub const WAYS: usize = 4;

/// The memo key of one value: the first 128 bits of SHA-256 over the encoded-traversal flag
/// and the decoded bytes.
pub type Key = [u8; 16];

/// Digests a decoded value and the flag [`super::injection::scan`] takes with it.
pub fn key(value: &[u8], encoded_traversal: bool) -> Key {
    let mut h = Sha256::new();
    h.update([u8::from(encoded_traversal)]);
    h.update(value);
    let digest = h.finalize();
    let mut k = [0u8; 16];
    for (d, s) in k.iter_mut().zip(digest.iter()) {
        *d = *s;
    }
    k
}

/// One set: `keys[..len]` in most-recently-used order.
#[derive(Clone, Copy, Default)]
struct Set {
    keys: [Key; WAYS],
    len: usize,
}

/// Digests of values judged clean; see the module documentation.
pub struct CleanMemo {
    sets: Box<[Set]>,
}

impl Default for CleanMemo {
    fn default() -> Self {
        CleanMemo {
            sets: vec![Set::default(); SETS].into_boxed_slice(),
        }
    }
}

impl CleanMemo {
    fn set(&mut self, k: &Key) -> Option<&mut Set> {
        let index = usize::from(u16::from_le_bytes([k[0], k[1]])) % SETS;
        self.sets.get_mut(index)
    }

    /// True when `k` was remembered clean; it becomes its set's most recently used entry.
    pub fn hit(&mut self, k: &Key) -> bool {
        let Some(set) = self.set(k) else {
            return false;
        };
        let len = set.len.min(WAYS);
        match set.keys[..len].iter().position(|x| x == k) {
            Some(i) => {
                set.keys[..=i].rotate_right(1);
                true
            }
            None => false,
        }
    }

    /// Remembers `k` as clean, at the front of its set (the caller has just missed it).
    /// Returns true when a full set pushed out its least recently used entry.
    pub fn insert(&mut self, k: Key) -> bool {
        let Some(set) = self.set(&k) else {
            return false;
        };
        let evicted = set.len >= WAYS;
        set.len = (set.len + 1).min(WAYS);
        set.keys.rotate_right(1);
        set.keys[0] = k;
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys that all land in set 0, told apart by their last byte.
    fn same_set(n: u8) -> Key {
        let mut k = [0u8; 16];
        k[15] = n;
        k
    }

    #[test]
    fn keys_depend_on_every_input_of_the_verdict() {
        let ua = b"Mozilla/5.0 (X11; Linux x86_64)";
        assert_eq!(key(ua, false), key(ua, false));
        assert_ne!(key(ua, false), key(ua, true));
        assert_ne!(
            key(ua, false),
            key(b"Mozilla/5.0 (X11; Linux x86_64 )", false)
        );
        assert_ne!(key(b"", false), key(b"", true));
    }

    #[test]
    fn a_full_set_evicts_its_least_recently_used_digest() {
        let mut m = CleanMemo::default();
        for n in 0..WAYS as u8 {
            assert!(!m.hit(&same_set(n)));
            assert!(!m.insert(same_set(n)), "no eviction while the set has room");
        }
        // Touch the oldest: now 1 is the least recently used.
        assert!(m.hit(&same_set(0)));
        assert!(m.insert(same_set(100)), "a full set evicts");
        assert!(!m.hit(&same_set(1)), "the least recently used left");
        for n in [0, 2, 3, 100] {
            assert!(m.hit(&same_set(n)), "{n} stayed");
        }
        // Other sets are untouched by this one's traffic.
        let mut other = same_set(1);
        other[0] = 1;
        assert!(!m.insert(other));
        assert!(m.hit(&other));
    }

    #[test]
    fn replaying_the_same_values_gives_the_same_hits_and_evictions() {
        let run = || {
            let mut m = CleanMemo::default();
            let (mut hits, mut evictions) = (0u32, 0u32);
            for i in 0..20_000u32 {
                // A few hot values among a stream of unique ones.
                let v = if i % 3 == 0 {
                    format!("hot-{}", i % 7)
                } else {
                    format!("unique-{i}")
                };
                let k = key(v.as_bytes(), false);
                if m.hit(&k) {
                    hits += 1;
                } else if m.insert(k) {
                    evictions += 1;
                }
            }
            (hits, evictions)
        };
        let (hits, evictions) = run();
        assert_eq!((hits, evictions), run());
        // Hot values stay resident while unique ones churn through their sets.
        assert!(hits >= 6_600, "{hits}");
        assert!(evictions > 0);
    }
}

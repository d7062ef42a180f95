//! A bounded memo from credentials to what identity extraction derives from them.
//!
//! Busy APIs see the same few thousand tokens, keys and cookies on hundreds of thousands of
//! requests, and deriving a token's facts (base64 and JSON decoding, HMAC pseudonyms) costs far
//! more than looking them up. The memo remembers only what a credential yields regardless of
//! when it is seen; callers redo every time-dependent judgement (JWT `exp`/`nbf` against packet
//! time) on each use, so a hit gives exactly what a miss would have computed.
//!
//! Invariants:
//! - Raw credentials are never stored: entries are keyed by a 128-bit keyed hash of the
//!   credential's kind and bytes. The hash keys are derived from the deployment secret, so
//!   nobody without it can search for two credentials that collide (which would let one be
//!   taken for the other); an accidental collision among even 2^32 distinct credentials has
//!   probability below 2^-64.
//! - At most `max_entries` entries (rounded down to an even number) are held, in two
//!   generations of half each. When the current generation is full the previous one is
//!   dropped (counted as evictions) and the current one takes its place; a hit in the previous
//!   generation moves the entry back into the current one. Eviction depends only on the order
//!   of lookups, never on hash iteration order or wall time, and results never depend on it.
//! - Shared across threads behind a mutex that is never held while deriving a value. A hit is
//!   read in place under the mutex rather than cloned out: what a hit costs is mostly cache
//!   misses on the entry, so it should touch as little memory as it can.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Which derivation a cached value came from; part of the hashed key, so the same bytes sent as
/// two kinds of credential (a token that is also a cookie value) get separate entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Credential {
    Bearer,
    Basic,
    ApiKey,
    Cookie,
}

/// Lookups and evictions since the cache was made. `hits + misses` is the number of lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CredentialCacheStats {
    /// Credentials found in the cache.
    pub hits: u64,
    /// Credentials derived afresh (every lookup when the cache is disabled).
    pub misses: u64,
    /// Entries dropped to make room.
    pub evictions: u64,
}

/// The keys are already keyed hashes, uniformly spread: the maps need no second keyed hash,
/// only a fast one, and fixed seeds keep them free of process randomness.
type Map<V> = HashMap<u128, V, ahash::RandomState>;

fn map<V>() -> Map<V> {
    HashMap::with_hasher(ahash::RandomState::with_seeds(0, 0, 0, 0))
}

/// The two generations and the counters, guarded together by the mutex.
#[derive(Debug)]
struct Generations<V> {
    current: Map<V>,
    previous: Map<V>,
    /// Entries per generation; 0 disables the cache.
    generation_cap: usize,
    stats: CredentialCacheStats,
}

impl<V> Generations<V> {
    /// `read` applied to the value held for `key`, counting a hit; `read` handed back on a
    /// miss. A hit in the current generation probes the map once: reading in place, rather
    /// than returning a reference, is what lets the borrow end before the miss path.
    fn read<R, F: FnOnce(&V) -> R>(&mut self, key: u128, read: F) -> Result<R, F> {
        if let Some(v) = self.current.get(&key) {
            self.stats.hits = self.stats.hits.saturating_add(1);
            return Ok(read(v));
        }
        let Some(v) = self.previous.remove(&key) else {
            self.stats.misses = self.stats.misses.saturating_add(1);
            return Err(read);
        };
        self.insert(key, v);
        self.stats.hits = self.stats.hits.saturating_add(1);
        match self.current.get(&key) {
            Some(v) => Ok(read(v)),
            None => Err(read),
        }
    }

    fn insert(&mut self, key: u128, value: V) {
        if self.generation_cap == 0 {
            return;
        }
        if self.current.len() >= self.generation_cap && !self.current.contains_key(&key) {
            // Swap and clear rather than replace, so both maps keep their allocations.
            std::mem::swap(&mut self.current, &mut self.previous);
            let dropped = u64::try_from(self.current.len()).unwrap_or(u64::MAX);
            self.stats.evictions = self.stats.evictions.saturating_add(dropped);
            self.current.clear();
        }
        self.current.insert(key, value);
    }
}

/// A keyed, bounded, two-generation memo; see the module documentation.
pub(super) struct CredentialCache<V> {
    /// Two independently seeded 64-bit hashers make the 128-bit key.
    hashers: [ahash::RandomState; 2],
    inner: Mutex<Generations<V>>,
}

impl<V> std::fmt::Debug for CredentialCache<V> {
    /// Prints neither the hash seeds nor the entries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache").finish_non_exhaustive()
    }
}

impl<V> CredentialCache<V> {
    /// A cache of at most `max_entries` entries (below 2 disables it), keyed with 64 bytes of
    /// secret seed material.
    pub(super) fn new(max_entries: usize, seeds: [u64; 8]) -> Self {
        let [a0, a1, a2, a3, b0, b1, b2, b3] = seeds;
        CredentialCache {
            hashers: [
                ahash::RandomState::with_seeds(a0, a1, a2, a3),
                ahash::RandomState::with_seeds(b0, b1, b2, b3),
            ],
            inner: Mutex::new(Generations {
                current: map(),
                previous: map(),
                generation_cap: max_entries / 2,
                stats: CredentialCacheStats::default(),
            }),
        }
    }

    fn key(&self, kind: Credential, raw: &[u8]) -> u128 {
        let [a, b] = &self.hashers;
        (u128::from(a.hash_one((kind, raw))) << 64) | u128::from(b.hash_one((kind, raw)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<V>> {
        // A panic elsewhere while holding the lock cannot leave a map half-updated in a way
        // that matters here: each entry is a complete value, so keep using it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `read` applied to the value remembered for `raw` as a `kind` credential, or else to
    /// `derive()`, which is then remembered. `derive` must depend on nothing but `kind`, `raw`
    /// and fixed configuration. On a hit `read` runs under the mutex, so it should only copy.
    pub(super) fn read_or_derive<R>(
        &self,
        kind: Credential,
        raw: &[u8],
        derive: impl FnOnce() -> V,
        read: impl FnOnce(&V) -> R,
    ) -> R {
        let key = self.key(kind, raw);
        let read = match self.lock().read(key, read) {
            Ok(r) => return r,
            Err(read) => read,
        };
        let v = derive();
        let r = read(&v);
        self.lock().insert(key, v);
        r
    }

    pub(super) fn stats(&self) -> CredentialCacheStats {
        self.lock().stats
    }

    /// Entries held now (both generations).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const SEEDS: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    /// Looks `raw` up, deriving its length; returns the value and whether it was derived.
    fn lookup(c: &CredentialCache<usize>, kind: Credential, raw: &[u8]) -> (usize, bool) {
        let derived = Cell::new(false);
        let v = c.read_or_derive(
            kind,
            raw,
            || {
                derived.set(true);
                raw.len()
            },
            |v| *v,
        );
        (v, derived.get())
    }

    #[test]
    fn hits_return_what_was_derived_and_kinds_are_separate() {
        let c = CredentialCache::new(8, SEEDS);
        assert_eq!(lookup(&c, Credential::Bearer, b"abc"), (3, true));
        assert_eq!(lookup(&c, Credential::Bearer, b"abc"), (3, false));
        assert_eq!(lookup(&c, Credential::Cookie, b"abc"), (3, true));
        assert_eq!(lookup(&c, Credential::Bearer, b"abcd"), (4, true));
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.evictions), (1, 3, 0));
    }

    /// The cache is bounded, evicts whole generations, and keeps what is in use.
    #[test]
    fn two_generations_bound_and_evict_deterministically() {
        let c = CredentialCache::new(4, SEEDS);
        let keys: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        // Fill the current generation (2), then rotate: 0 and 1 become the previous one.
        for k in &keys[..3] {
            assert!(lookup(&c, Credential::ApiKey, k).1);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evictions, 0);
        // A hit in the previous generation moves 0 into the current one (now 2, 0).
        assert_eq!(lookup(&c, Credential::ApiKey, &keys[0]), (1, false));
        // 3 rotates again: the previous generation (1) is evicted, {2, 0} become previous.
        assert!(lookup(&c, Credential::ApiKey, &keys[3]).1);
        assert_eq!(c.stats().evictions, 1);
        assert!(lookup(&c, Credential::ApiKey, &keys[1]).1);
        assert!(c.len() <= 4);
        for k in &keys {
            lookup(&c, Credential::ApiKey, k);
            assert!(c.len() <= 4);
        }
        let s = c.stats();
        assert_eq!(s.hits + s.misses, 3 + 1 + 1 + 1 + 6);
    }

    #[test]
    fn below_two_entries_the_cache_is_disabled() {
        for max in [0, 1] {
            let c = CredentialCache::new(max, SEEDS);
            for _ in 0..3 {
                assert_eq!(lookup(&c, Credential::Basic, b"x"), (1, true));
            }
            assert_eq!(c.len(), 0);
            let s = c.stats();
            assert_eq!((s.hits, s.misses, s.evictions), (0, 3, 0));
        }
    }

    /// Whatever the sequence of lookups, every answer equals a fresh derivation and the bound
    /// holds.
    #[test]
    fn random_lookups_match_fresh_derivation() {
        use proptest::prelude::*;
        proptest!(|(ops in proptest::collection::vec((0u8..4, 0u8..12), 0..200),
                    max in 0usize..10)| {
            let c = CredentialCache::new(max, SEEDS);
            let kinds = [Credential::Bearer, Credential::Basic, Credential::ApiKey,
                         Credential::Cookie];
            for (kind, n) in ops {
                let raw = vec![n; usize::from(n)];
                let kind = kinds[usize::from(kind)];
                let got = c.read_or_derive(kind, &raw, || usize::from(n) * 10 + kind as usize, |v| *v);
                prop_assert_eq!(got, usize::from(n) * 10 + kind as usize);
                prop_assert!(c.len() <= max / 2 * 2);
            }
        });
    }
}

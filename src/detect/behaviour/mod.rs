//! Behaviour detectors: what one client does over time, rather than what one request carries.
//!
//! Four detectors share this folder: [`bola::Bola`] (one identity walking many objects of an
//! endpoint, above what its callers reached while learning), [`bruteforce::Bruteforce`] (failed
//! logins per client, per username and across the whole login endpoint), [`recon::Recon`] (one
//! client collecting 404s on many distinct paths) and [`travel::ImpossibleTravel`] (one identity
//! seen from two places faster than an airliner flies).
//!
//! They share the primitives below: capture-time sliding windows of fixed size
//! ([`RollingCount`], [`RecentSet`]) and a bounded keyed table ([`Table`]) that sweeps idle
//! entries and, when still full, turns new keys away and counts them.
//!
//! Invariants: every piece of state has a configured cap and a counter for what it turned away;
//! time is the transaction's capture time; no output depends on hash-map iteration order (the
//! tables are only ever looked up by key, never iterated into findings).

pub mod bola;
pub mod bruteforce;
pub mod recon;
pub mod travel;

#[cfg(test)]
mod scenarios;

use super::config::Problems;
use super::{Context, DetectEnv, DetectError, Detector};
use crate::common::Timestamp;
use crate::detect::FastMap;
use serde::{Deserialize, Serialize};
use std::hash::Hash;
use std::net::IpAddr;

pub use bola::{Bola, BolaConfig};
pub use bruteforce::{Bruteforce, BruteforceConfig};
pub use recon::{Recon, ReconConfig};
pub use travel::{ImpossibleTravel, TravelConfig};

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Settings of the behaviour detectors (`[detect.behaviour]` and its sub-tables).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BehaviourConfig {
    /// Broken object level authorisation: one identity reaching many objects (`bola`).
    pub bola: BolaConfig,
    /// Failed-login bursts on login and token endpoints (`auth_bruteforce`).
    pub bruteforce: BruteforceConfig,
    /// One client probing many nonexistent paths (`recon_scan`).
    pub recon: ReconConfig,
    /// One identity in two far places too quickly (`impossible_travel`).
    pub travel: TravelConfig,
}

impl BehaviourConfig {
    /// Adds every out-of-range value to `p`, keys relative to `[detect]`.
    pub fn check(&self, p: &mut Problems) {
        self.bola.check(p);
        self.bruteforce.check(p);
        self.recon.check(p);
        self.travel.check(p);
    }
}

/// The behaviour detectors `cfg` enables, in a fixed order. A GeoIP database that is named
/// but unreadable stops the engine: a silently disabled detector would look like quiet traffic.
pub fn detectors(
    cfg: &BehaviourConfig,
    env: &DetectEnv,
) -> Result<Vec<Box<dyn Detector>>, DetectError> {
    let mut out: Vec<Box<dyn Detector>> = Vec::new();
    if cfg.bola.enabled {
        out.push(Box::new(Bola::new(&cfg.bola)));
    }
    if cfg.bruteforce.enabled {
        out.push(Box::new(Bruteforce::new(&cfg.bruteforce)));
    }
    if cfg.recon.enabled {
        out.push(Box::new(
            Recon::new(&cfg.recon).map_err(DetectError::Config)?,
        ));
    }
    if cfg.travel.enabled {
        let db = match &env.geoip {
            Some(path) => Some(
                travel::GeoDb::open(path).map_err(|reason| DetectError::Input {
                    path: path.display().to_string(),
                    reason,
                })?,
            ),
            None => None,
        };
        out.push(Box::new(ImpossibleTravel::new(&cfg.travel, db)));
    }
    Ok(out)
}

/// A 64-bit key over several byte strings, each length-prefixed so that `("ab", "c")` and
/// `("a", "bc")` differ. Used to key state without building a `String` per transaction.
pub(crate) fn key_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for part in parts {
        let part_hash = crate::baseline::sketch::hash64(part) ^ (part.len() as u64);
        h = (h ^ part_hash)
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(29);
    }
    crate::baseline::sketch::hash64(&h.to_le_bytes())
}

/// The state key of the context's client: its pseudonym, else its address.
pub(crate) fn client_hash(cx: &Context<'_>) -> u64 {
    match &cx.identity.subject {
        Some(s) => key_hash(&[b"subject", s.as_str().as_bytes()]),
        None => ip_hash(cx.identity.client_ip),
    }
}

/// The state key of an address.
pub(crate) fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => key_hash(&[b"ip4", &a.octets()]),
        IpAddr::V6(a) => key_hash(&[b"ip6", &a.octets()]),
    }
}

/// The state key of the context's endpoint (host, method, route template).
pub(crate) fn endpoint_hash(cx: &Context<'_>) -> u64 {
    key_hash(&[
        cx.key.host.as_bytes(),
        cx.key.method.as_bytes(),
        cx.key.template.as_bytes(),
    ])
}

/// Events counted in a sliding window of capture time, kept as `N` buckets of
/// `window / N` each: fixed memory per key whatever the event rate, at the price of a window
/// edge that moves in steps of one bucket.
#[derive(Clone, Debug)]
pub struct RollingCount<const N: usize> {
    /// The bucket slot (capture time / bucket width) of the newest event.
    slot: u64,
    counts: [u32; N],
}

impl<const N: usize> Default for RollingCount<N> {
    fn default() -> Self {
        RollingCount {
            slot: 0,
            counts: [0; N],
        }
    }
}

impl<const N: usize> RollingCount<N> {
    /// The slot of `ts` for a window of `window_secs` (a bucket is at least 1 ns wide).
    pub fn slot_of(ts: Timestamp, window_secs: u64) -> u64 {
        let width = (window_secs.saturating_mul(NANOS_PER_SEC) / N as u64).max(1);
        ts.as_nanos() / width
    }

    fn advance(&mut self, slot: u64) {
        if slot <= self.slot {
            return;
        }
        let gap = slot - self.slot;
        if gap >= N as u64 {
            self.counts = [0; N];
        } else {
            for s in self.slot + 1..=slot {
                if let Some(c) = self.counts.get_mut((s % N as u64) as usize) {
                    *c = 0;
                }
            }
        }
        self.slot = slot;
    }

    /// Adds `n` events in `slot`. Events older than the window (out-of-order input) are
    /// dropped; events within it land in their own bucket.
    pub fn add(&mut self, slot: u64, n: u32) {
        self.advance(slot);
        if self.slot - slot.min(self.slot) >= N as u64 {
            return;
        }
        if let Some(c) = self.counts.get_mut((slot % N as u64) as usize) {
            *c = c.saturating_add(n);
        }
    }

    /// Events in the window ending at `slot`.
    pub fn total(&mut self, slot: u64) -> u64 {
        self.advance(slot);
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The newest slot seen.
    pub fn last_slot(&self) -> u64 {
        self.slot
    }
}

/// Distinct items (64-bit hashes) seen in a sliding window of capture time, at most `cap` of
/// them, each with the time it was last seen and one flag bit the caller may use.
///
/// When full, a new item is refused (and reported so): the count stays at `cap`, which
/// configuration keeps at or above the alert threshold, so saturation never hides an attack.
#[derive(Clone, Debug, Default)]
pub struct RecentSet {
    items: Vec<(u64, u64, bool)>,
    /// At most the oldest time of any item (exact after each expiry; times only grow), so an
    /// expiry with nothing to forget reads no item.
    oldest: u64,
}

/// What [`RecentSet::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The item is new in the window.
    New,
    /// The item was already in the window; its time was refreshed.
    Seen,
    /// The item is new but the set is full: not kept.
    Full,
}

impl RecentSet {
    /// Forgets items last seen before `now - window_secs`.
    pub fn expire(&mut self, now: Timestamp, window_secs: u64) {
        let horizon = now
            .as_nanos()
            .saturating_sub(window_secs.saturating_mul(NANOS_PER_SEC));
        if self.oldest >= horizon {
            return;
        }
        self.items.retain(|&(_, ts, _)| ts >= horizon);
        self.oldest = self.items.iter().map(|e| e.1).min().unwrap_or(u64::MAX);
    }

    /// Adds `item` at `now` with `flag` (a seen item keeps a flag once set).
    pub fn insert(&mut self, item: u64, now: Timestamp, flag: bool, cap: usize) -> Inserted {
        let ts = now.as_nanos();
        if let Some(e) = self.items.iter_mut().find(|e| e.0 == item) {
            e.1 = e.1.max(ts);
            e.2 |= flag;
            return Inserted::Seen;
        }
        if self.items.len() >= cap {
            return Inserted::Full;
        }
        self.items.push((item, ts, flag));
        self.oldest = self.oldest.min(ts);
        Inserted::New
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items with the flag set.
    pub fn flagged(&self) -> usize {
        self.items.iter().filter(|e| e.2).count()
    }

    /// Newest time of any item, in nanoseconds.
    pub fn newest(&self) -> u64 {
        self.items.iter().map(|e| e.1).max().unwrap_or(0)
    }
}

/// A bounded map of per-key state. When a new key arrives at `cap`, entries idle for longer
/// than `idle_secs` are swept (at most once per second of capture time, so a flood of new keys
/// does not make every transaction walk the table); if it is still full the key is turned
/// away and [`Table::turned_away`] counts it.
#[derive(Debug)]
pub struct Table<K, V> {
    map: FastMap<K, (u64, V)>,
    last_sweep: u64,
    turned_away: u64,
}

impl<K: Hash + Eq, V: Default> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            map: FastMap::default(),
            last_sweep: 0,
            turned_away: 0,
        }
    }
}

impl<K: Hash + Eq, V: Default> Table<K, V> {
    /// The state of `key`, created if room allows; `None` (counted) when the table is full.
    pub fn entry(&mut self, key: K, now: Timestamp, cap: usize, idle_secs: u64) -> Option<&mut V> {
        let ts = now.as_nanos();
        if !self.map.contains_key(&key) && self.map.len() >= cap {
            if ts.saturating_sub(self.last_sweep) >= NANOS_PER_SEC {
                self.last_sweep = ts;
                let horizon = ts.saturating_sub(idle_secs.saturating_mul(NANOS_PER_SEC));
                self.map.retain(|_, (seen, _)| *seen >= horizon);
            }
            if self.map.len() >= cap {
                self.turned_away = self.turned_away.saturating_add(1);
                return None;
            }
        }
        let slot = self.map.entry(key).or_insert_with(|| (ts, V::default()));
        slot.0 = slot.0.max(ts);
        Some(&mut slot.1)
    }

    /// The state of `key` if it exists, without touching its idle time.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// New keys refused because the table was full of active entries.
    pub fn turned_away(&self) -> u64 {
        self.turned_away
    }
}

/// `s` cut to at most `max` bytes on a character boundary, for evidence.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_nanos(1_700_000_000 * NANOS_PER_SEC + secs * NANOS_PER_SEC)
    }

    #[test]
    fn rolling_count_forgets_events_older_than_the_window() {
        // 60 s window in 6 buckets of 10 s.
        let mut c = RollingCount::<6>::default();
        for s in [0, 5, 15, 25] {
            c.add(RollingCount::<6>::slot_of(at(s), 60), 1);
        }
        assert_eq!(c.total(RollingCount::<6>::slot_of(at(30), 60)), 4);
        // At 65 s the bucket [0, 10) has left the window.
        assert_eq!(c.total(RollingCount::<6>::slot_of(at(65), 60)), 2);
        // After a long silence nothing is left.
        assert_eq!(c.total(RollingCount::<6>::slot_of(at(1000), 60)), 0);
        // An event older than the window is dropped, a late one inside it is kept.
        c.add(RollingCount::<6>::slot_of(at(100), 60), 1);
        assert_eq!(c.total(RollingCount::<6>::slot_of(at(1000), 60)), 0);
        c.add(RollingCount::<6>::slot_of(at(995), 60), 1);
        assert_eq!(c.total(RollingCount::<6>::slot_of(at(1000), 60)), 1);
    }

    proptest::proptest! {
        /// Against an oracle that keeps every event: the window holds exactly the events of
        /// the last `N` slots before the newest slot seen, whatever the arrival order.
        #[test]
        fn rolling_count_matches_an_oracle_that_keeps_every_event(
            ops in proptest::collection::vec((0u64..60, proptest::bool::ANY), 1..200)
        ) {
            const N: usize = 8;
            let mut c = RollingCount::<N>::default();
            let mut events: Vec<u64> = Vec::new();
            let mut newest = 0u64;
            for (slot, is_add) in ops {
                newest = newest.max(slot);
                if is_add {
                    c.add(slot, 1);
                    events.push(slot);
                } else {
                    let expected = events
                        .iter()
                        .filter(|&&e| e + (N as u64) > newest)
                        .count() as u64;
                    proptest::prop_assert_eq!(c.total(slot), expected);
                }
            }
        }
    }

    #[test]
    fn recent_set_counts_distinct_items_expires_and_refuses_past_its_cap() {
        let mut s = RecentSet::default();
        assert_eq!(s.insert(1, at(0), false, 3), Inserted::New);
        assert_eq!(s.insert(1, at(1), true, 3), Inserted::Seen);
        assert_eq!(s.insert(2, at(2), false, 3), Inserted::New);
        assert_eq!(s.insert(3, at(3), false, 3), Inserted::New);
        assert_eq!(s.insert(4, at(4), false, 3), Inserted::Full);
        assert_eq!((s.len(), s.flagged()), (3, 1));
        s.expire(at(62), 60);
        assert_eq!(s.len(), 2, "item 1 was last seen at 1 s");
        assert_eq!(s.flagged(), 0);
    }

    proptest::proptest! {
        /// Against an oracle that walks every item on every expiry: the same items, flags and
        /// answers, whatever the order of times (late items included).
        #[test]
        fn recent_set_matches_an_oracle_that_always_expires(
            ops in proptest::collection::vec((0u64..8, 0u64..200, proptest::bool::ANY, proptest::bool::ANY), 1..200)
        ) {
            let mut s = RecentSet::default();
            let mut oracle: Vec<(u64, u64, bool)> = Vec::new();
            for (item, secs, flag, expire) in ops {
                let now = at(secs);
                if expire {
                    s.expire(now, 30);
                    let horizon = now.as_nanos().saturating_sub(30 * NANOS_PER_SEC);
                    oracle.retain(|e| e.1 >= horizon);
                } else {
                    let full = oracle.len() >= 5;
                    let want = match oracle.iter_mut().find(|e| e.0 == item) {
                        Some(e) => {
                            e.1 = e.1.max(now.as_nanos());
                            e.2 |= flag;
                            Inserted::Seen
                        }
                        None if full => Inserted::Full,
                        None => {
                            oracle.push((item, now.as_nanos(), flag));
                            Inserted::New
                        }
                    };
                    proptest::prop_assert_eq!(s.insert(item, now, flag, 5), want);
                }
                proptest::prop_assert_eq!(&s.items, &oracle);
            }
        }
    }

    #[test]
    fn table_sweeps_idle_keys_then_turns_new_ones_away() {
        let mut t: Table<u32, u32> = Table::default();
        *t.entry(1, at(0), 2, 60).unwrap() += 1;
        *t.entry(2, at(10), 2, 60).unwrap() += 1;
        assert!(t.entry(3, at(20), 2, 60).is_none());
        assert_eq!(t.turned_away(), 1);
        // Key 1 has been idle for more than 60 s at 65 s: swept, key 3 fits.
        assert!(t.entry(3, at(65), 2, 60).is_some());
        assert!(t.get(&1).is_none());
        assert_eq!(t.get(&2), Some(&1));
    }

    #[test]
    fn key_hash_separates_parts() {
        assert_ne!(key_hash(&[b"ab", b"c"]), key_hash(&[b"a", b"bc"]));
        assert_eq!(key_hash(&[b"a", b"b"]), key_hash(&[b"a", b"b"]));
    }

    #[test]
    fn clipping_keeps_evidence_short() {
        assert_eq!(clip("/é/abc", 2), "/…");
        assert_eq!(clip("/abc", 10), "/abc");
    }
}

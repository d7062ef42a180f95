//! `bola`: one identity reaching many objects of an endpoint, or objects that belong to others.
//!
//! For each (client, endpoint with object ids in its path) the detector keeps the distinct
//! object ids answered with a 2xx in a sliding window of capture time. The threshold is the
//! largest of: an absolute floor; a high quantile of the distinct objects per caller that the
//! endpoint's callers reached over the whole learning period (scaled up when the window is
//! longer than that period, never down: a benign caller revisits its own few objects, so its
//! count saturates rather than grows with time); and what this very caller reached while
//! learning (support staff legitimately read many accounts). Endpoints learned from fewer than
//! `min_baseline_callers` callers are judged on the floor alone.
//!
//! Only identified callers are judged: object authorisation is about identities, and an
//! anonymous walk over objects is public data or scraping (recon_scan, volume_spike).
//!
//! Ownership raises confidence: object ids returned to an identity by a collection endpoint
//! (`GET /accounts` listing the caller's accounts) or, more weakly, first reached by that
//! identity's own successful calls are recorded as owned by it, in a bounded map (oldest
//! evicted, counted). An object listed to two different identities is shared (a catalogue
//! entry) and foreign to nobody. Objects in the window owned by someone else are the
//! `foreign_objects` of the evidence.
//!
//! Harvesting is the costly part (every identified 2xx GET without object ids is read), so two
//! shortcuts skip reading a body when reading it cannot change anything, and neither changes a
//! result. A body holding no `d"`, `D"` or backslash cannot hold an id-named key (each ends in
//! `d` or `D` unless written with escapes). And a collection already read for the same owner on
//! the same host (a user polling `GET /accounts` gets the same bytes every time; recognised by
//! a keyed 128-bit hash of host, owner and body) would only list the same ids to the same
//! owner again, which changes no owner entry, provided none of its ids was forgotten since: no
//! owner was evicted since it was read, and reading it evicted none.
//!
//! Invariants: state is bounded by `max_windows` × `max_objects_per_window` ids plus
//! `max_owned_objects` owners plus [`MAX_READ_LISTINGS`] remembered listings; ids are hashed for
//! state (object ids are not secrets, but hashing keeps the per-transaction cost
//! allocation-free); at most 10 raw ids per window are kept, for the evidence.

use super::{endpoint_hash, key_hash, Inserted, RecentSet, Table};
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::EndpointProfile;
use crate::detect::config::Problems;
use crate::detect::rawjson::{self, Event};
use crate::detect::FastMap;
use crate::detect::{Context, Detector, Finding};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;

/// Raw object ids kept per window for the evidence.
const SAMPLE_IDS: usize = 10;
/// Depth of a collection response walked for object ids: `{"accounts": [{"id": ..}]}` is 3.
const MAX_HARVEST_DEPTH: usize = 4;
/// Collection responses remembered as already read (16 bytes of key and 16 of value each);
/// when full the memory is cleared (`listings_memo_resets`) and fills again.
const MAX_READ_LISTINGS: usize = 65_536;

/// Settings of `bola` (`[detect.behaviour.bola]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BolaConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Sliding window, in seconds of capture time, over which distinct objects are counted.
    pub window_secs: u64,
    /// Absolute floor: fewer distinct objects in the window never alert.
    pub min_distinct_objects: usize,
    /// Quantile of the learned distinct-objects-per-caller distribution used as the baseline.
    /// It describes the bulk of callers: the few that legitimately reach many objects (support
    /// staff) are judged by their own learned count instead, so they must not set everyone's.
    pub baseline_quantile: f64,
    /// The baseline quantile times this is the learned threshold.
    pub baseline_multiplier: f64,
    /// Callers an endpoint must have been learned from before its baseline is used.
    pub min_baseline_callers: usize,
    /// (client, endpoint) windows tracked at once; new ones beyond it are turned away
    /// (`windows_turned_away`) until idle ones are swept.
    pub max_windows: usize,
    /// Distinct object ids tracked per window; more are counted (`objects_over_cap`), not kept.
    /// Endpoints whose threshold is above it are not judged (`thresholds_above_cap`).
    pub max_objects_per_window: usize,
    /// Object ids whose owner is remembered; beyond it the oldest is forgotten
    /// (`owners_evicted`).
    pub max_owned_objects: usize,
    /// Object ids taken as owned from one collection response at most.
    pub max_ids_per_response: usize,
    /// Endpoint baselines computed and cached at most (`baselines_turned_away` beyond).
    pub max_endpoints: usize,
}

impl Default for BolaConfig {
    fn default() -> Self {
        BolaConfig {
            enabled: true,
            window_secs: 300,
            min_distinct_objects: 20,
            baseline_quantile: 0.9,
            baseline_multiplier: 3.0,
            min_baseline_callers: 20,
            max_windows: 100_000,
            max_objects_per_window: 128,
            max_owned_objects: 1_000_000,
            max_ids_per_response: 100,
            max_endpoints: 10_000,
        }
    }
}

impl BolaConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let k = |s: &str| format!("behaviour.bola.{s}");
        p.range(&k("window_secs"), self.window_secs, 1, 86_400);
        p.range(
            &k("min_distinct_objects"),
            self.min_distinct_objects,
            2,
            100_000,
        );
        p.range(&k("baseline_quantile"), self.baseline_quantile, 0.5, 1.0);
        p.range(
            &k("baseline_multiplier"),
            self.baseline_multiplier,
            1.0,
            1000.0,
        );
        p.range(
            &k("min_baseline_callers"),
            self.min_baseline_callers,
            1,
            1_000_000,
        );
        p.range(&k("max_windows"), self.max_windows, 1, 100_000_000);
        p.range(
            &k("max_objects_per_window"),
            self.max_objects_per_window,
            self.min_distinct_objects.max(2),
            100_000,
        );
        p.range(
            &k("max_owned_objects"),
            self.max_owned_objects,
            0,
            100_000_000,
        );
        p.range(
            &k("max_ids_per_response"),
            self.max_ids_per_response,
            0,
            100_000,
        );
        p.range(&k("max_endpoints"), self.max_endpoints, 1, 10_000_000);
    }
}

/// What `bola` did and turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BolaCounters {
    pub findings: u64,
    /// New (client, endpoint) windows refused because `max_windows` were active.
    pub windows_turned_away: u64,
    /// Distinct objects not kept because a window held `max_objects_per_window`.
    pub objects_over_cap: u64,
    /// Calls not judged because the endpoint's threshold exceeds `max_objects_per_window`.
    pub thresholds_above_cap: u64,
    /// Owned object ids forgotten to make room (`max_owned_objects`).
    pub owners_evicted: u64,
    /// Object ids recorded as owned from collection responses.
    pub ids_harvested: u64,
    /// Endpoints not given a learned baseline because `max_endpoints` were cached.
    pub baselines_turned_away: u64,
    /// Collection responses not read because the same owner was given the same bytes before.
    pub listings_memo_hits: u64,
    /// Times the memory of read listings was full ([`MAX_READ_LISTINGS`]) and cleared.
    pub listings_memo_resets: u64,
}

/// One (client, endpoint) window.
#[derive(Debug, Default)]
struct Window {
    /// Object ids; the flag marks ids owned by another identity.
    objects: RecentSet,
    /// The first distinct raw ids of the current run of activity.
    sample: Vec<String>,
    /// Distinct objects the caller reached while learning, read when the run began.
    own_learned: f64,
}

/// The learned part of an endpoint's threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Baseline {
    /// The quantile of distinct objects per caller, when enough callers were learned.
    quantile: Option<f64>,
    callers: usize,
    /// Seconds between the endpoint's first and last learned call.
    span_secs: f64,
}

/// The owner of an object listed to several identities: a shared or public object (a product
/// catalogue entry), never foreign to anyone.
const SHARED: u64 = 0;

/// Object id -> (owner, whether a collection listed it to the owner), both hashed; oldest
/// first out.
#[derive(Debug, Default)]
struct Owners {
    map: FastMap<u64, (u64, bool)>,
    order: VecDeque<u64>,
    /// Entries evicted so far: a listing read when this stood at the same value still has
    /// all of its ids.
    evictions: u64,
}

impl Owners {
    /// The owner of `id`, unless unknown or shared.
    fn owner(&self, id: u64) -> Option<u64> {
        self.map.get(&id).map(|&(o, _)| o).filter(|&o| o != SHARED)
    }

    /// A collection listed `id` to `owner`: that beats a claim from a path; a second, different
    /// identity listed the same object makes it shared. Returns whether an older entry was
    /// evicted to make room.
    fn listed(&mut self, id: u64, owner: u64, cap: usize) -> bool {
        match self.map.get_mut(&id) {
            Some(e) if !e.1 => {
                *e = (owner, true);
                false
            }
            Some(e) => {
                if e.0 != owner {
                    e.0 = SHARED;
                }
                false
            }
            None => self.insert(id, (owner, true), cap),
        }
    }

    /// `owner` reached `id` first, by its path: a weak claim, kept only if nobody has one.
    fn claimed(&mut self, id: u64, owner: u64, cap: usize) -> bool {
        if self.map.contains_key(&id) {
            return false;
        }
        self.insert(id, (owner, false), cap)
    }

    /// The owner of `id` as [`Owners::owner`] tells it, after recording `me`'s weak claim
    /// when nobody has any (as [`Owners::claimed`]): one map probe while there is room. The
    /// flag tells whether an older entry was evicted to make room.
    fn owner_or_claim(&mut self, id: u64, me: u64, cap: usize) -> (Option<u64>, bool) {
        use std::collections::hash_map::Entry;
        if self.map.len() < cap {
            return match self.map.entry(id) {
                Entry::Occupied(e) => (Some(e.get().0).filter(|&o| o != SHARED), false),
                Entry::Vacant(e) => {
                    e.insert((me, false));
                    self.order.push_back(id);
                    (None, false)
                }
            };
        }
        // Full: the old way, which may evict.
        match self.owner(id) {
            Some(o) => (Some(o), false),
            None => (None, self.claimed(id, me, cap)),
        }
    }

    fn insert(&mut self, id: u64, value: (u64, bool), cap: usize) -> bool {
        if cap == 0 {
            return false;
        }
        let mut evicted = false;
        while self.map.len() >= cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                    self.evictions = self.evictions.saturating_add(1);
                    evicted = true;
                }
                None => break,
            }
        }
        self.map.insert(id, value);
        self.order.push_back(id);
        evicted
    }
}

/// The `bola` detector; see the module documentation.
pub struct Bola {
    cfg: BolaConfig,
    windows: Table<u64, Window>,
    owners: Owners,
    baselines: FastMap<u64, Baseline>,
    counters: BolaCounters,
    /// Ids of the collection response being harvested (reused).
    ids: Vec<u64>,
    /// Collection responses already read: keyed hash of (host, owner, body) -> (ids it
    /// listed, [`Owners::evictions`] just after). See the module documentation.
    read_listings: FastMap<u128, (u64, u64)>,
    /// Keys the hash of `read_listings`, per detector, so that nobody can aim a collision.
    listing_keys: ahash::RandomState,
    /// Finds `d"`, the end of most id-named keys.
    lower_id_end: memchr::memmem::Finder<'static>,
    /// Finds `D"`, the end of `userID`.
    upper_id_end: memchr::memmem::Finder<'static>,
}

impl Bola {
    pub fn new(cfg: &BolaConfig) -> Bola {
        Bola {
            cfg: cfg.clone(),
            windows: Table::default(),
            owners: Owners::default(),
            baselines: FastMap::default(),
            counters: BolaCounters::default(),
            ids: Vec::new(),
            read_listings: FastMap::default(),
            listing_keys: ahash::RandomState::new(),
            lower_id_end: memchr::memmem::Finder::new(b"d\"").into_owned(),
            upper_id_end: memchr::memmem::Finder::new(b"D\"").into_owned(),
        }
    }

    pub fn counters(&self) -> BolaCounters {
        let mut c = self.counters.clone();
        c.windows_turned_away = self.windows.turned_away();
        c
    }

    /// The endpoint's learned baseline, computed once and cached.
    fn baseline(&mut self, endpoint: u64, profile: Option<&EndpointProfile>) -> Baseline {
        if let Some(b) = self.baselines.get(&endpoint) {
            return *b;
        }
        let b = learned_baseline(profile, &self.cfg);
        if self.baselines.len() < self.cfg.max_endpoints {
            self.baselines.insert(endpoint, b);
        } else {
            self.counters.baselines_turned_away =
                self.counters.baselines_turned_away.saturating_add(1);
        }
        b
    }

    /// Whether `body` can hold an id-named key: unescaped, each ends in `d` or `D` right
    /// before its closing quote; escaped, it holds a backslash.
    fn may_hold_ids(&self, body: &[u8]) -> bool {
        self.lower_id_end.find(body).is_some()
            || self.upper_id_end.find(body).is_some()
            || memchr::memchr(b'\\', body).is_some()
    }

    /// Records the ids a collection response returned to `owner`, read from the raw body,
    /// unless reading it cannot change anything (see the module documentation).
    fn harvest(&mut self, host: &str, owner: u64, body: &[u8]) {
        if !self.may_hold_ids(body) {
            return;
        }
        let memo_key = {
            let a = self.listing_keys.hash_one((host, owner, body));
            let b = self.listing_keys.hash_one((a, body, owner, host));
            (u128::from(a) << 64) | u128::from(b)
        };
        if let Some(&(listed, evictions)) = self.read_listings.get(&memo_key) {
            if listed == 0 || evictions == self.owners.evictions {
                self.counters.listings_memo_hits =
                    self.counters.listings_memo_hits.saturating_add(1);
                self.counters.ids_harvested = self.counters.ids_harvested.saturating_add(listed);
                return;
            }
        }
        let evictions_before = self.owners.evictions;
        let listed = self.harvest_body(host, owner, body);
        // A listing that evicted some of its own ids would put them back when read again.
        if self.owners.evictions == evictions_before {
            if self.read_listings.len() >= MAX_READ_LISTINGS {
                self.read_listings.clear();
                self.counters.listings_memo_resets =
                    self.counters.listings_memo_resets.saturating_add(1);
            }
            self.read_listings
                .insert(memo_key, (listed, self.owners.evictions));
        }
    }

    /// Reads the ids of one collection response and records them as listed to `owner`;
    /// returns how many it recorded.
    fn harvest_body(&mut self, host: &str, owner: u64, body: &[u8]) -> u64 {
        let mut ids = std::mem::take(&mut self.ids);
        let whole = collect_ids(body, self.cfg.max_ids_per_response, &mut |id| {
            ids.push(key_hash(&[host.as_bytes(), id]));
        });
        let mut listed = 0u64;
        // A body cut by a capture gap, or not JSON, tells nothing reliable about ownership.
        if whole {
            for &id in &ids {
                if self.owners.listed(id, owner, self.cfg.max_owned_objects) {
                    self.counters.owners_evicted = self.counters.owners_evicted.saturating_add(1);
                }
                listed += 1;
            }
            self.counters.ids_harvested = self.counters.ids_harvested.saturating_add(listed);
        }
        ids.clear();
        self.ids = ids;
        listed
    }
}

/// The quantile of distinct objects per caller over callers that carried object ids.
fn learned_baseline(profile: Option<&EndpointProfile>, cfg: &BolaConfig) -> Baseline {
    let Some(p) = profile else {
        return Baseline {
            quantile: None,
            callers: 0,
            span_secs: 0.0,
        };
    };
    let mut per_caller: Vec<f64> = p
        .caller_objects
        .values()
        .filter(|c| c.calls > 0)
        .map(|c| c.objects.estimate())
        .collect();
    per_caller.sort_by(f64::total_cmp);
    let callers = per_caller.len();
    let quantile = (callers >= cfg.min_baseline_callers && callers > 0).then(|| {
        // Nearest rank: the smallest value with at least q of the callers at or below it.
        let rank = (cfg.baseline_quantile * callers as f64).ceil() as usize;
        per_caller
            .get(rank.clamp(1, callers) - 1)
            .copied()
            .unwrap_or(0.0)
    });
    Baseline {
        quantile,
        callers,
        span_secs: p.last_seen.saturating_since(p.first_seen).as_secs_f64(),
    }
}

/// Is `key` the name of an object id (`id`, `accountId`, `account_id`, `userID`)?
fn is_id_key(key: &str) -> bool {
    key == "id" || key.ends_with("Id") || key.ends_with("_id") || key.ends_with("ID")
}

/// [`is_id_key`] on the bytes of a key.
fn is_id_key_bytes(key: &[u8]) -> bool {
    key == b"id" || key.ends_with(b"Id") || key.ends_with(b"_id") || key.ends_with(b"ID")
}

/// Calls `f` with each object id (string or integer value of an id-named key) of a JSON
/// document, at most `budget` of them in document order, from objects nested at most
/// [`MAX_HARVEST_DEPTH`] deep. Reads the raw bytes ([`rawjson`]): a collection response costs
/// no parse and no allocation (ids are formatted on the stack). Returns whether the bytes were
/// one whole JSON document; a caller acts on the ids only then, as it would on a parse.
fn collect_ids(body: &[u8], mut budget: usize, f: &mut impl FnMut(&[u8])) -> bool {
    let mut reader = rawjson::Reader::new(body);
    // The id-named key whose value comes next.
    let mut id_key = false;
    loop {
        let event = match reader.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return reader.finished(),
            Err(_) => return false,
        };
        // Objects at depth `MAX_HARVEST_DEPTH` (0 = the document) are the deepest read.
        let shallow = reader.depth() <= MAX_HARVEST_DEPTH + 1;
        let take = std::mem::take(&mut id_key) && shallow && budget > 0;
        match event {
            Event::Key { raw, escaped } => {
                // Unescaped, the key is its bytes: test the name first, so that only id-named
                // keys pay for the UTF-8 check.
                id_key = if escaped {
                    rawjson::unescape(raw, escaped).is_some_and(|k| is_id_key(&k))
                } else {
                    is_id_key_bytes(raw) && std::str::from_utf8(raw).is_ok()
                };
            }
            Event::Str { raw, escaped } => {
                let Some(s) = rawjson::unescape(raw, escaped) else {
                    return false;
                };
                if take && !s.is_empty() && s.len() <= 128 {
                    budget -= 1;
                    f(s.as_bytes());
                }
            }
            Event::Scalar(raw) => match raw {
                b"true" | b"false" | b"null" => {}
                _ if is_plain_integer(raw) => {
                    if take {
                        budget -= 1;
                        f(raw);
                    }
                }
                _ if !take => {
                    // Only ids are parsed; a bare word is not JSON.
                    if !raw
                        .first()
                        .is_some_and(|c| c.is_ascii_digit() || *c == b'-')
                    {
                        return false;
                    }
                }
                _ => {
                    // Floats and out-of-range integers as serde_json prints them.
                    let Ok(n) = serde_json::from_slice::<serde_json::Number>(raw) else {
                        return false;
                    };
                    {
                        let mut buf = [0u8; 40];
                        let mut cur = &mut buf[..];
                        if std::io::Write::write_fmt(&mut cur, format_args!("{n}")).is_ok() {
                            let rest = cur.len();
                            budget -= 1;
                            f(buf.get(..buf.len() - rest).unwrap_or(&[]));
                        }
                    }
                }
            },
            Event::Open { .. } | Event::Close => {}
        }
    }
}

/// A JSON integer serde_json prints back exactly as written: an optional `-`, then `0` or a
/// non-zero digit followed by at most 17 more (so it fits an i64 or u64), and not `-0`.
fn is_plain_integer(raw: &[u8]) -> bool {
    let digits = raw.strip_prefix(b"-").unwrap_or(raw);
    !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits.first() != Some(&b'0'))
        && raw != b"-0"
}

impl Detector for Bola {
    fn name(&self) -> &'static str {
        "bola"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !self.cfg.enabled || !(200..300).contains(&cx.status()) {
            return;
        }
        let host = cx.key.host.as_str();
        // Object authorisation is about identities: an anonymous walk over objects is public
        // data or scraping, left to recon_scan and volume_spike.
        let Some(subject) = cx.identity.subject.as_ref() else {
            return;
        };
        let me = key_hash(&[b"subject", subject.as_str().as_bytes()]);
        if cx.object_ids.is_empty() {
            // A collection answer to an identity tells whose objects these are.
            if let (Some(resp), true) = (cx.resp, cx.req.method == "GET") {
                self.harvest(host, me, &resp.body.data);
            }
            return;
        }
        let endpoint = endpoint_hash(cx);
        let baseline = self.baseline(endpoint, cx.profile);
        let learned = baseline.quantile.map_or(0.0, |q| {
            let window = self.cfg.window_secs as f64;
            let scale = if baseline.span_secs > 0.0 {
                (window / baseline.span_secs).max(1.0)
            } else {
                1.0
            };
            (q * self.cfg.baseline_multiplier * scale).ceil()
        });
        let window_key = key_hash(&[&me.to_le_bytes(), &endpoint.to_le_bytes()]);
        let Some(w) = self.windows.entry(
            window_key,
            cx.ts,
            self.cfg.max_windows,
            self.cfg.window_secs,
        ) else {
            return;
        };
        w.objects.expire(cx.ts, self.cfg.window_secs);
        if w.objects.is_empty() {
            // A new run of activity. The caller's own learned reach is read now and kept for
            // the run: with adaptation on, the run's own calls are learned until it alerts, and
            // a threshold read live would climb with the walk it is meant to catch.
            w.sample.clear();
            w.own_learned = cx
                .profile
                .and_then(|p| p.distinct_objects(subject.as_str()))
                .unwrap_or(0.0);
        }
        let own_learned = w.own_learned;
        let threshold = (self.cfg.min_distinct_objects as f64)
            .max(learned)
            .max(own_learned.ceil());
        let cap = self.cfg.max_objects_per_window;
        if threshold > cap as f64 {
            self.counters.thresholds_above_cap =
                self.counters.thresholds_above_cap.saturating_add(1);
            return;
        }
        let threshold = threshold as usize;
        for (_, id) in cx.object_ids {
            let id_key = key_hash(&[host.as_bytes(), id.as_bytes()]);
            let (owner, evicted) =
                self.owners
                    .owner_or_claim(id_key, me, self.cfg.max_owned_objects);
            if evicted {
                self.counters.owners_evicted = self.counters.owners_evicted.saturating_add(1);
            }
            let foreign = owner.is_some_and(|o| o != me);
            match w.objects.insert(id_key, cx.ts, foreign, cap) {
                Inserted::New
                    if w.sample.len() < SAMPLE_IDS && !w.sample.iter().any(|s| s == id) =>
                {
                    w.sample.push(super::clip(id, 64));
                }
                Inserted::Full => {
                    self.counters.objects_over_cap =
                        self.counters.objects_over_cap.saturating_add(1);
                }
                _ => {}
            }
        }
        let distinct = w.objects.len();
        if distinct < threshold {
            return;
        }
        let foreign = w.objects.flagged();
        let share = foreign as f64 / distinct as f64;
        let who = cx.client_key();
        let summary = if foreign > 0 {
            format!(
                "{who} reached {distinct} distinct objects of {} {} in {} s (threshold {threshold}); {foreign} belong to other identities",
                cx.key.method, cx.key.template, self.cfg.window_secs
            )
        } else {
            format!(
                "{who} reached {distinct} distinct objects of {} {} in {} s (threshold {threshold})",
                cx.key.method, cx.key.template, self.cfg.window_secs
            )
        };
        self.counters.findings = self.counters.findings.saturating_add(1);
        out.push(
            Finding::new(AlertKind::Bola, cx)
                .severity(if foreign > 0 {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(0.6 + 0.35 * share)
                .summary(summary)
                .with("distinct_objects", distinct as u64)
                .with("threshold", threshold as u64)
                .with("floor", self.cfg.min_distinct_objects as u64)
                .with(
                    "baseline_quantile",
                    baseline
                        .quantile
                        .map_or(Value::Null, |q| Value::from(q.round())),
                )
                .with("baseline_q", self.cfg.baseline_quantile)
                .with("baseline_callers", baseline.callers as u64)
                .with("caller_learned_objects", own_learned.round())
                .with("window_secs", self.cfg.window_secs)
                .with("foreign_objects", foreign as u64)
                .with("sample_ids", w.sample.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_taken_from_id_named_keys_of_collections_within_bounds() {
        let body = br#"{"accounts":[{"accountId":"A1","balance":3},{"accountId":"A2"},{"id":77}],
                "owner_id":"u9","name":"x","nested":{"a":{"b":{"c":{"d":{"id":"deep"}}}}}}"#;
        let collect = |max: usize| {
            let mut ids = Vec::new();
            assert!(collect_ids(body, max, &mut |id| {
                ids.push(String::from_utf8_lossy(id).into_owned())
            }));
            ids.sort();
            ids
        };
        assert_eq!(
            collect(100),
            ["77", "A1", "A2", "u9"],
            "too deep ids are not taken"
        );
        assert_eq!(collect(2).len(), 2);
    }

    /// The ids of a parsed document, walked as the JSON tree (the reference).
    fn tree_ids(v: &Value, depth: usize, out: &mut Vec<String>) {
        if depth > MAX_HARVEST_DEPTH {
            return;
        }
        match v {
            Value::Array(items) => items.iter().for_each(|i| tree_ids(i, depth + 1, out)),
            Value::Object(map) => {
                for (k, item) in map {
                    match item {
                        Value::String(s) if is_id_key(k) && !s.is_empty() && s.len() <= 128 => {
                            out.push(s.clone())
                        }
                        Value::Number(n) if is_id_key(k) => out.push(n.to_string()),
                        Value::Array(_) | Value::Object(_) => tree_ids(item, depth + 1, out),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    #[test]
    fn raw_ids_need_a_whole_document_and_print_numbers_as_serde_does() {
        let ids = |body: &[u8]| {
            let mut ids = Vec::new();
            let whole = collect_ids(body, 100, &mut |id| {
                ids.push(String::from_utf8_lossy(id).into_owned())
            });
            (whole, ids)
        };
        assert!(!ids(br#"[{"id": 1}, {"id": 2"#).0, "cut by a gap");
        assert!(!ids(br#"[{"id": 1}, {"id": nope}]"#).0, "not JSON");
        assert!(!ids(br#"[{"id": "bad \q escape"}]"#).0);
        let (whole, got) = ids(
            br#"[{"id": 1.50}, {"userId": 12345678901234567890}, {"i\u0064": "x"}, {"id": -0}]"#,
        );
        assert!(whole);
        assert_eq!(got, ["1.5", "12345678901234567890", "x", "-0.0"]);
        let (whole, got) = ids(br#"[{"id": ""}, {"id": true}, {"ID": "b\"c"}]"#);
        assert!(whole);
        assert_eq!(got, ["b\"c"]);
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("id".to_owned()),
            Just("accountId".to_owned()),
            Just("owner_id".to_owned()),
            "[a-zA-Z_]{0,6}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            ".{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(7, 64, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Read raw, a document gives the ids its parsed tree gives (document order aside).
        #[test]
        fn raw_ids_match_the_parsed_tree(v in json(), pretty in proptest::prelude::any::<bool>()) {
            proptest::prop_assume!(v.is_object() || v.is_array());
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let parsed: Value = serde_json::from_slice(&text).unwrap();
            let mut want = Vec::new();
            tree_ids(&parsed, 0, &mut want);
            let mut got = Vec::new();
            let whole = collect_ids(&text, usize::MAX, &mut |id| {
                got.push(String::from_utf8_lossy(id).into_owned())
            });
            proptest::prop_assert!(whole);
            want.sort();
            got.sort();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn listings_beat_path_claims_and_objects_listed_to_two_identities_are_shared() {
        let mut o = Owners::default();
        assert!(!o.claimed(1, 10, 8));
        assert!(!o.claimed(1, 11, 8), "the first claim stays");
        assert_eq!(o.owner(1), Some(10));
        o.listed(1, 12, 8);
        assert_eq!(o.owner(1), Some(12), "a listing beats a claim");
        o.claimed(1, 10, 8);
        assert_eq!(o.owner(1), Some(12), "a claim never beats a listing");
        o.listed(1, 12, 8);
        assert_eq!(o.owner(1), Some(12));
        o.listed(1, 13, 8);
        assert_eq!(o.owner(1), None, "listed to two identities: shared");
    }

    #[test]
    fn owners_evict_oldest_first() {
        let mut o = Owners::default();
        assert!(!o.claimed(1, 10, 2));
        assert!(!o.listed(2, 20, 2));
        assert!(o.claimed(3, 30, 2), "id 1, the oldest, makes room");
        assert_eq!(
            (o.owner(1), o.owner(2), o.owner(3)),
            (None, Some(20), Some(30))
        );
    }

    /// The owner entries, in eviction order, and the counters that harvesting moves.
    type OwnerState = (Vec<(u64, (u64, bool))>, u64, u64);

    fn owner_state(b: &Bola) -> OwnerState {
        let entries = b
            .owners
            .order
            .iter()
            .filter_map(|id| b.owners.map.get(id).map(|&e| (*id, e)))
            .collect();
        (entries, b.counters.ids_harvested, b.counters.owners_evicted)
    }

    /// Collection bodies for the harvest tests: overlapping ids, one escaped key, one
    /// without ids, one cut short.
    const LISTINGS: [&str; 6] = [
        r#"{"accounts":[{"id":1},{"id":2},{"id":3}]}"#,
        r#"{"accounts":[{"id":3},{"id":4}]}"#,
        r#"[{"accountId":"a5"},{"i\u0064":6}]"#,
        r#"{"items":[{"sku":"x"}],"page":2}"#,
        r#"{"accounts":[{"id":7},{"id":8"#,
        r#"{"ownerID":"9","userId":10,"id":11}"#,
    ];

    proptest::proptest! {
        /// Harvesting through the prefilter and the memory of read listings leaves the owner
        /// entries (and their eviction order) and the counters exactly as reading every body,
        /// including when the owner map is small enough to evict.
        #[test]
        fn remembered_listings_change_nothing(
            ops in proptest::collection::vec((0usize..LISTINGS.len(), 0u64..3, 0u8..3, 0u64..12), 1..80),
            cap in 1usize..12,
        ) {
            let cfg = BolaConfig { max_owned_objects: cap, ..BolaConfig::default() };
            let (mut fast, mut plain) = (Bola::new(&cfg), Bola::new(&cfg));
            for (body, owner, kind, id) in ops {
                match kind {
                    // A path claim in between, as observe makes them.
                    0 => {
                        let (a, ea) = fast.owners.owner_or_claim(id, owner + 1, cap);
                        let b = plain.owners.owner(id);
                        let eb = if b.is_none() { plain.owners.claimed(id, owner + 1, cap) } else { false };
                        proptest::prop_assert_eq!((a, ea), (b, eb));
                        for (bola, e) in [(&mut fast, ea), (&mut plain, eb)] {
                            if e {
                                bola.counters.owners_evicted += 1;
                            }
                        }
                    }
                    _ => {
                        let host = if kind == 1 { "a.example" } else { "b.example" };
                        let raw = LISTINGS[body].as_bytes();
                        fast.harvest(host, owner + 1, raw);
                        plain.harvest_body(host, owner + 1, raw);
                    }
                }
                proptest::prop_assert_eq!(owner_state(&fast), owner_state(&plain));
            }
        }

        /// A body the prefilter passes over has no id to give.
        #[test]
        fn bodies_without_id_key_ends_give_no_ids(v in json(), pretty in proptest::prelude::any::<bool>()) {
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let b = Bola::new(&BolaConfig::default());
            if !b.may_hold_ids(&text) {
                let mut n = 0;
                collect_ids(&text, usize::MAX, &mut |_| n += 1);
                proptest::prop_assert_eq!(n, 0);
            }
        }
    }

    #[test]
    fn a_listing_read_again_is_not_read_but_counted() {
        let mut b = Bola::new(&BolaConfig::default());
        let body = LISTINGS[0].as_bytes();
        b.harvest("h", 7, body);
        b.harvest("h", 7, body);
        b.harvest("h", 8, body);
        assert_eq!(b.counters.listings_memo_hits, 1);
        assert_eq!(b.counters.ids_harvested, 9);
        assert_eq!(
            b.owners.owner(key_hash(&[b"h", b"1"])),
            None,
            "shared by 7 and 8"
        );
        // No id-named key: not even hashed.
        b.harvest("h", 7, LISTINGS[3].as_bytes());
        assert_eq!(b.read_listings.len(), 2);
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = BolaConfig {
            max_objects_per_window: 10,
            ..BolaConfig::default()
        };
        c.baseline_quantile = 2.0;
        let mut p = Problems::default();
        c.check(&mut p);
        let keys: Vec<&str> = p.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "behaviour.bola.baseline_quantile",
                "behaviour.bola.max_objects_per_window"
            ]
        );
    }
}

//! Rates over sliding windows of capture time: `volume_spike` and `error_spike`.
//!
//! A window is a ring of [`SLOTS`] fixed slots; a count covers the current, partly filled slot
//! and the `SLOTS - 1` before it, so it spans between `window_secs * (SLOTS - 1) / SLOTS` and
//! `window_secs` of capture time. Slots are cleared as time moves on; an event older than the
//! ring (out-of-order capture files) is dropped from the counts, which only lowers them.
//!
//! Volume: an endpoint (with enough learned calls) or an identified caller is spiking while
//! its window count exceeds `max(floor, factor * expected + sigmas * sqrt(expected))`, where
//! `expected` is its learned seasonal rate scaled to the window: the Poisson spread keeps
//! small rates from alerting on noise, the factor keeps large rates from alerting on a busy
//! hour, the floor keeps a quiet caller's few calls in a row from alerting at all. Anonymous
//! callers are not judged here: behind NAT or a load balancer an address is many users, and
//! a login storm from one address is `auth_bruteforce`'s to name.
//!
//! Errors: an endpoint is failing while, over the window, its 5xx share (or its share of 4xx
//! other than 401, 403 and 404, which belong to brute force and recon) reaches `min_share`,
//! `share_factor` times its learned share, and its learned share plus `sigmas` binomial
//! standard deviations, with the errors coming from at least `min_clients` clients.
//!
//! Invariants: state per endpoint and per caller is capped (`max_endpoints`, `max_callers`)
//! and what is turned away is counted; a finding is pushed for every call while the condition
//! holds (the incident lifecycle folds them).

use super::{ErrorSpikeConfig, VolumeConfig};
use crate::alert::{AlertKind, Severity};
use crate::baseline::caller::CallerKey;
use crate::baseline::sketch::{hash64, HourOfWeekRate};
use crate::common::Timestamp;
use crate::detect::FastMap;
use crate::detect::{Context, Detector, Finding};
use std::collections::hash_map::Entry;

/// Slots per window.
pub const SLOTS: usize = 12;

/// Error events remembered per endpoint to count distinct failing clients.
pub const MAX_ERROR_EVENTS: usize = 32;

/// Counts of `M` quantities in a ring of [`SLOTS`] slots of capture time.
#[derive(Clone, Debug)]
pub(super) struct Ring<const M: usize> {
    slot_nanos: u64,
    /// Slot number (time / slot length) of the newest slot.
    head: u64,
    counts: [[u32; M]; SLOTS],
    /// Capture time of the newest event, for sweeping idle rings.
    last: Timestamp,
}

impl<const M: usize> Ring<M> {
    pub(super) fn new(window_secs: u64) -> Self {
        Ring {
            slot_nanos: (window_secs.saturating_mul(1_000_000_000) / SLOTS as u64).max(1),
            head: 0,
            counts: [[0; M]; SLOTS],
            last: Timestamp::ZERO,
        }
    }

    /// Adds `add` at `ts`, moving the ring forward if `ts` is in a later slot.
    pub(super) fn add(&mut self, ts: Timestamp, add: [u32; M]) {
        let slot = ts.as_nanos() / self.slot_nanos;
        if slot > self.head {
            let steps = (slot - self.head).min(SLOTS as u64);
            for k in 1..=steps {
                if let Some(c) = self
                    .counts
                    .get_mut(((self.head + k) % SLOTS as u64) as usize)
                {
                    *c = [0; M];
                }
            }
            self.head = slot;
        } else if self.head - slot >= SLOTS as u64 {
            return;
        }
        if let Some(c) = self.counts.get_mut((slot % SLOTS as u64) as usize) {
            for (c, a) in c.iter_mut().zip(add) {
                *c = c.saturating_add(a);
            }
        }
        self.last = self.last.max(ts);
    }

    pub(super) fn sum(&self) -> [u64; M] {
        let mut s = [0u64; M];
        for c in &self.counts {
            for (s, c) in s.iter_mut().zip(c) {
                *s += u64::from(*c);
            }
        }
        s
    }
}

/// The threshold `max(floor, factor * expected + sigmas * sqrt(expected))`.
pub(super) fn poisson_threshold(expected: f64, factor: f64, sigmas: f64, floor: u64) -> f64 {
    (factor * expected + sigmas * expected.sqrt()).max(floor as f64)
}

/// Expected calls per window of `rate` at `ts`, with the name of its basis.
fn expected_per_window(
    rate: &HourOfWeekRate,
    ts: Timestamp,
    window_secs: u64,
) -> Option<(f64, &'static str)> {
    let e = rate.expected_per_hour(ts)?;
    Some((e.per_hour * window_secs as f64 / 3600.0, e.basis.name()))
}

/// What the volume detector turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct VolumeCounters {
    /// Calls to endpoints beyond `max_endpoints`, not judged.
    pub endpoints_untracked: u64,
    /// Calls by callers beyond `max_callers` (after sweeping idle ones), not judged.
    pub callers_untracked: u64,
    /// Idle caller windows dropped to make room.
    pub callers_swept: u64,
}

/// `volume_spike` per endpoint and per identified caller; see the module documentation.
pub struct VolumeDetector {
    cfg: VolumeConfig,
    /// By [`crate::detect::endpoint_id`].
    endpoints: FastMap<u64, Ring<1>>,
    /// Pseudonyms held inline: the table is probed on every identified call.
    callers: FastMap<CallerKey, Ring<1>>,
    /// Capture time of the last sweep of idle caller windows: at most one sweep per window.
    last_sweep: Timestamp,
    counters: VolumeCounters,
}

impl VolumeDetector {
    pub fn new(cfg: &VolumeConfig) -> Self {
        VolumeDetector {
            cfg: cfg.clone(),
            endpoints: FastMap::default(),
            callers: FastMap::default(),
            last_sweep: Timestamp::ZERO,
            counters: VolumeCounters::default(),
        }
    }

    pub fn counters(&self) -> &VolumeCounters {
        &self.counters
    }

    fn endpoint(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let w = self.cfg.window_secs;
        // Only learned endpoints get a window: a scan of a thousand nonexistent paths must
        // not fill the map and push real endpoints out.
        let Some(p) = cx
            .profile
            .filter(|p| p.calls >= self.cfg.min_endpoint_calls)
        else {
            return;
        };
        let full = self.endpoints.len() >= self.cfg.max_endpoints;
        let ring = match self.endpoints.entry(cx.endpoint_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => {
                self.counters.endpoints_untracked += 1;
                return;
            }
            Entry::Vacant(e) => e.insert(Ring::new(w)),
        };
        ring.add(cx.ts, [1]);
        let [observed] = ring.sum();
        let Some((expected, basis)) = expected_per_window(&p.rate, cx.ts, w) else {
            return;
        };
        let c = &self.cfg;
        let threshold = poisson_threshold(
            expected,
            c.endpoint_factor,
            c.endpoint_sigmas,
            c.endpoint_floor,
        );
        if observed as f64 <= threshold {
            return;
        }
        let ratio = observed as f64 / expected.max(1.0);
        out.push(
            Finding::new(AlertKind::VolumeSpike, cx)
                .endpoint_scope()
                .severity(if ratio >= 20.0 {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(confidence(observed as f64, threshold))
                .summary(format!(
                    "{} received {observed} calls in {w} s, {ratio:.1} times its {basis} rate.",
                    cx.endpoint_label()
                ))
                .with("scope", "endpoint")
                .with("observed_calls", observed)
                .with("window_secs", w)
                .with("expected_calls", round2(expected))
                .with("baseline_basis", basis)
                .with("threshold_calls", round2(threshold))
                .with("ratio", round2(ratio))
                .with("learned_calls", p.calls),
        );
    }

    fn caller(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(subject) = cx.identity.subject.as_ref() else {
            return;
        };
        let w = self.cfg.window_secs;
        let subject = subject.as_str();
        // One probe for a known caller; a new one costs a second (and the only allocation, for
        // a pseudonym too long to be held inline).
        let ring = match self.callers.get_mut(subject) {
            Some(ring) => ring,
            None => {
                if self.callers.len() >= self.cfg.max_callers {
                    self.sweep(cx.ts);
                    if self.callers.len() >= self.cfg.max_callers {
                        self.counters.callers_untracked += 1;
                        return;
                    }
                }
                self.callers
                    .entry(CallerKey::new(subject))
                    .or_insert_with(|| Ring::new(w))
            }
        };
        ring.add(cx.ts, [1]);
        let [observed] = ring.sum();
        let c = &self.cfg;
        if observed <= c.caller_floor {
            // Below the floor nothing else can make it a spike: skip the rate lookups.
            return;
        }
        let learned = cx
            .caller
            .and_then(|p| expected_per_window(&p.rate, cx.ts, w).or_else(|| young_rate(p, w)));
        let (expected, basis) = learned.unwrap_or((0.0, "none"));
        let threshold =
            poisson_threshold(expected, c.caller_factor, c.caller_sigmas, c.caller_floor);
        if observed as f64 <= threshold {
            return;
        }
        let ratio = observed as f64 / expected.max(1.0);
        out.push(
            Finding::new(AlertKind::VolumeSpike, cx)
                .client_scope()
                .severity(if ratio >= 50.0 { Severity::High } else { Severity::Medium })
                .confidence(confidence(observed as f64, threshold))
                .summary(format!(
                    "Caller made {observed} calls in {w} s against an expected {expected:.1} ({basis})."
                ))
                .with("scope", "caller")
                .with("observed_calls", observed)
                .with("window_secs", w)
                .with("expected_calls", round2(expected))
                .with("baseline_basis", basis)
                .with("threshold_calls", round2(threshold))
                .with("learned_calls", cx.caller.map_or(0, |p| p.calls)),
        );
    }

    /// Drops caller windows idle for a whole window, at most once per window of capture time.
    fn sweep(&mut self, now: Timestamp) {
        let window = self.cfg.window_secs.saturating_mul(1_000_000_000);
        if now.as_nanos().saturating_sub(self.last_sweep.as_nanos()) < window {
            return;
        }
        self.last_sweep = now;
        let before = self.callers.len();
        // `retain` keeps or drops each entry on its own merit: the result does not depend on
        // the map's iteration order.
        self.callers
            .retain(|_, r| now.as_nanos().saturating_sub(r.last.as_nanos()) < window);
        self.counters.callers_swept += (before - self.callers.len()) as u64;
    }
}

/// A caller learned within its first clock hour has no closed hour: its calls over the time
/// it was seen, counted as at least a minute.
fn young_rate(
    p: &crate::baseline::caller::CallerProfile,
    window_secs: u64,
) -> Option<(f64, &'static str)> {
    if p.calls == 0 {
        return None;
    }
    let span = p
        .last_seen
        .saturating_since(p.first_seen)
        .as_secs_f64()
        .max(60.0);
    Some((
        p.calls as f64 * window_secs as f64 / span,
        "calls_over_span",
    ))
}

/// How far past the threshold, mapped into 0.6..=0.99.
fn confidence(observed: f64, threshold: f64) -> f64 {
    let over = (observed / threshold.max(1.0) - 1.0).max(0.0);
    (0.6 + over * 0.4).min(0.99)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Detector for VolumeDetector {
    fn name(&self) -> &'static str {
        "volume_spike"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.endpoint(cx, out);
        self.caller(cx, out);
    }
}

/// Per-endpoint error window: responses, 5xx, other 4xx, and the latest error events.
struct ErrorWindow {
    ring: Ring<3>,
    /// (capture time, client hash) of the latest errors, oldest overwritten first.
    events: [(Timestamp, u64); MAX_ERROR_EVENTS],
    next: usize,
}

/// What the error-spike detector turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorSpikeCounters {
    /// Responses of endpoints beyond `max_endpoints`, not judged.
    pub endpoints_untracked: u64,
}

/// `error_spike` per endpoint; see the module documentation.
pub struct ErrorSpikeDetector {
    cfg: ErrorSpikeConfig,
    /// By [`crate::detect::endpoint_id`].
    endpoints: FastMap<u64, Box<ErrorWindow>>,
    counters: ErrorSpikeCounters,
}

/// Which error class a status belongs to: 0 for 5xx, 1 for 4xx other than 401/403/404.
fn error_class(status: u16) -> Option<usize> {
    match status {
        500..=599 => Some(0),
        401 | 403 | 404 => None,
        400..=499 => Some(1),
        _ => None,
    }
}

const ERROR_CLASS_NAMES: [&str; 2] = ["5xx", "4xx"];

impl ErrorSpikeDetector {
    pub fn new(cfg: &ErrorSpikeConfig) -> Self {
        ErrorSpikeDetector {
            cfg: cfg.clone(),
            endpoints: FastMap::default(),
            counters: ErrorSpikeCounters::default(),
        }
    }

    pub fn counters(&self) -> &ErrorSpikeCounters {
        &self.counters
    }
}

/// The learned share of responses in error class `class` of an endpoint's status counts.
fn learned_share(status: &crate::baseline::sketch::TopK, class: usize) -> f64 {
    let total = status.total();
    if total == 0 {
        return 0.0;
    }
    let errors: u64 = status
        .entries()
        .iter()
        .filter(|e| e.item.parse::<u16>().ok().and_then(error_class) == Some(class))
        .map(|e| e.count)
        .sum();
    (errors as f64 / total as f64).min(1.0)
}

impl Detector for ErrorSpikeDetector {
    fn name(&self) -> &'static str {
        "error_spike"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(resp) = cx.resp else {
            return;
        };
        let class = error_class(resp.status);
        let w = self.cfg.window_secs;
        // Only learned endpoints get a window (see the volume detector).
        let Some(p) = cx.profile.filter(|p| p.calls >= self.cfg.min_learned_calls) else {
            return;
        };
        let full = self.endpoints.len() >= self.cfg.max_endpoints;
        let win = match self.endpoints.entry(cx.endpoint_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => {
                self.counters.endpoints_untracked += 1;
                return;
            }
            Entry::Vacant(e) => e.insert(Box::new(ErrorWindow {
                ring: Ring::new(w),
                events: [(Timestamp::ZERO, 0); MAX_ERROR_EVENTS],
                next: 0,
            })),
        };
        let add = match class {
            Some(0) => [1, 1, 0],
            Some(_) => [1, 0, 1],
            None => [1, 0, 0],
        };
        win.ring.add(cx.ts, add);
        let Some(class) = class else {
            return;
        };
        if let Some(e) = win.events.get_mut(win.next) {
            *e = (cx.ts, hash64(cx.client_key().as_bytes()));
        }
        win.next = (win.next + 1) % MAX_ERROR_EVENTS;
        let [n, e5, e4] = win.ring.sum();
        let errors = if class == 0 { e5 } else { e4 };
        let c = &self.cfg;
        if n < c.min_responses {
            return;
        }
        let share = errors as f64 / n as f64;
        let p0 = learned_share(&p.status, class);
        let binomial = p0 + c.sigmas * (p0 * (1.0 - p0) / n as f64).sqrt();
        let needed = c.min_share.max(c.share_factor * p0).max(binomial);
        if share < needed {
            return;
        }
        let window_nanos = w.saturating_mul(1_000_000_000);
        let mut clients: [u64; MAX_ERROR_EVENTS] = [0; MAX_ERROR_EVENTS];
        let mut distinct = 0usize;
        for (ts, h) in win.events.iter() {
            let recent = *ts != Timestamp::ZERO
                && cx.ts.as_nanos().saturating_sub(ts.as_nanos()) < window_nanos;
            if recent && !clients.get(..distinct).unwrap_or(&[]).contains(h) {
                if let Some(slot) = clients.get_mut(distinct) {
                    *slot = *h;
                    distinct += 1;
                }
            }
        }
        if distinct < c.min_clients {
            return;
        }
        let name = ERROR_CLASS_NAMES.get(class).copied().unwrap_or("error");
        out.push(
            Finding::new(AlertKind::ErrorSpike, cx)
                .endpoint_scope()
                .severity(if class == 0 {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(if share >= 2.0 * needed { 0.95 } else { 0.8 })
                .summary(format!(
                    "{} answered {name} to {:.0}% of {n} calls in {w} s; learned share {:.2}%.",
                    cx.endpoint_label(),
                    share * 100.0,
                    p0 * 100.0
                ))
                .with("error_class", name)
                .with("errors", errors)
                .with("responses", n)
                .with("window_secs", w)
                .with("observed_share", round4(share))
                .with("learned_share", round4(p0))
                .with("threshold_share", round4(needed))
                .with("distinct_clients", distinct as u64)
                .with("status", resp.status),
        );
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

//! Learned detectors: Gaussian mixtures over request shapes (per endpoint) and caller windows
//! (across callers), with thresholds set from the training scores.
//!
//! `apitap learn` feeds a [`Trainer`] beside the baselines' learner. Per endpoint it keeps a
//! reservoir of request-shape vectors ([`features::SHAPE_FEATURES`]); per client a tumbling
//! window of capture time whose closed [`features::WINDOW_FEATURES`] vectors go to one
//! reservoir across callers. At the end it fits a mixture to each reservoir large enough and
//! saves them, with the reservoirs (so a later `learn` on the same model extends and refits),
//! as `<model>/detect.json` in the model store's versioned envelope. The threshold of each
//! mixture is the training-score quantile at `1 − false_alarm_rate`, widened by a margin (see
//! [`gmm`]).
//!
//! [`LearnedDetector`] scores every request of a modelled endpoint and raises
//! `parameter_anomaly` when the shape scores above its endpoint's threshold *and* one
//! parameter departs from its learned value shape (the explainable part, named in the
//! evidence); it scores each client's open window after every call (so a window is judged
//! while it is open, and its last call sees it as it closes) and, when it scores above the
//! caller threshold, raises a client-scoped finding named after the feature that explains it,
//! among those beyond their training 99.9th percentile: `bola` for distinct objects or
//! `recon_scan` for distinct endpoints (many requests over many objects is an enumeration,
//! over many paths a scan, before it is volume), then `recon_scan` for the error share, then
//! `volume_spike` for requests or response bytes. A window over the threshold with no feature
//! beyond its 99.9th percentile is counted, not raised.
//!
//! Invariants: reservoirs are bottom-k samples by a hash of (endpoint or client, time,
//! sequence), so which vectors are kept does not depend on a random generator or on hash-map
//! order, and fits read them sorted: the same input gives the same `detect.json` bytes.
//! Every table is capped (`max_endpoints`, `max_callers`, `max_distinct_per_window`,
//! `max_*_samples`) and what the caps turn away is counted. No clock, no I/O outside
//! [`TrainedModel::load`] and [`TrainedModel::save`], which the CLI calls.

pub mod features;
pub mod gmm;

use super::config::Problems;
use super::{Context, Detector, Finding};
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::{EndpointKey, EndpointProfile};
use crate::common::Timestamp;
use crate::detect::FastMap;
use crate::identity::Identity;
use crate::model::learn::Prepared;
use crate::model::store::{self, StoreError};
use crate::model::Model;
use crate::transaction::Transaction;
use features::{
    endpoint_hash, fnv, ShapeScanner, Window, SHAPE_DIM, SHAPE_FEATURES, SHAPE_MIN_SCALE,
    WINDOW_DIM, WINDOW_FEATURES, WINDOW_MIN_SCALE,
};
use gmm::{FitParams, Mixture, Scorer, MAX_DIM};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The learned models' file inside a model directory.
pub const DETECT_FILE: &str = "detect.json";
/// Format version written; files up to it are read.
pub const DETECT_VERSION: u32 = 1;

/// Settings of the learned detectors (`[detect.learned]`). Training reads the fit settings;
/// detection reads the rest (the window length is the one the model was trained with).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnedConfig {
    /// Run the learned detectors when the model directory holds a `detect.json`.
    pub enabled: bool,
    /// Share of ordinary training requests (and caller windows) allowed to score above the
    /// threshold before the margin: the score quantile at `1 − false_alarm_rate` sets it.
    pub false_alarm_rate: f64,
    /// Threshold = median + margin × (quantile − median) of the training scores.
    pub threshold_margin: f64,
    /// The threshold is at least this many nats above the median training score, so a model
    /// whose training vectors were all alike still needs a real departure.
    pub min_score_excess_nats: f64,
    /// Gaussian components per mixture; fewer are tried when a fit fails.
    pub components: usize,
    /// EM iterations per fit, at most.
    pub max_fit_iterations: u64,
    /// Endpoints with fewer sampled requests get no shape model (and are not judged by it).
    pub min_endpoint_samples: usize,
    /// Request-shape vectors kept per endpoint (reservoir); more are sampled down.
    pub max_endpoint_samples: usize,
    /// Endpoints sampled in training; requests of further endpoints are counted
    /// (`endpoints_over_cap`), not sampled.
    pub max_endpoints: usize,
    /// A shape over its threshold raises `parameter_anomaly` only if a parameter departs from
    /// its learned value shape with at least this score (0 to 1); otherwise it is counted
    /// (`unexplained_shapes`).
    pub min_departure_score: f64,
    /// Caller window length, seconds of capture time (training; detection uses the model's).
    pub window_secs: u64,
    /// Fewer closed caller windows in training: no caller model.
    pub min_window_samples: usize,
    /// Caller-window vectors kept (reservoir); more are sampled down.
    pub max_window_samples: usize,
    /// Clients with an open window at once; new clients beyond it are not windowed
    /// (`callers_over_cap`) until expired windows are swept.
    pub max_callers: usize,
    /// Distinct endpoints, and distinct objects, remembered per window; beyond it they are
    /// not counted (`distinct_over_cap`), so the features saturate there.
    pub max_distinct_per_window: usize,
    /// Parameter values (query, JSON nodes) examined per request; the rest of a request is
    /// not scanned (`scan_truncated`).
    pub max_scan_values: usize,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            enabled: true,
            false_alarm_rate: 0.0005,
            threshold_margin: 1.5,
            min_score_excess_nats: 8.0,
            components: 3,
            max_fit_iterations: 300,
            min_endpoint_samples: 200,
            max_endpoint_samples: 1000,
            max_endpoints: 5000,
            min_departure_score: 0.5,
            window_secs: 60,
            min_window_samples: 500,
            max_window_samples: 20_000,
            max_callers: 200_000,
            max_distinct_per_window: 256,
            max_scan_values: 2000,
        }
    }
}

impl LearnedConfig {
    /// Adds this table's bad values to `p`, keys prefixed `learned.`.
    pub fn check(&self, p: &mut Problems) {
        p.range("learned.false_alarm_rate", self.false_alarm_rate, 1e-6, 0.2);
        p.range(
            "learned.threshold_margin",
            self.threshold_margin,
            1.0,
            100.0,
        );
        p.range(
            "learned.min_score_excess_nats",
            self.min_score_excess_nats,
            0.0,
            1000.0,
        );
        p.range(
            "learned.components",
            self.components,
            1,
            gmm::MAX_COMPONENTS,
        );
        p.range(
            "learned.max_fit_iterations",
            self.max_fit_iterations,
            10,
            100_000,
        );
        p.range(
            "learned.min_endpoint_samples",
            self.min_endpoint_samples,
            20,
            1_000_000,
        );
        p.range(
            "learned.max_endpoint_samples",
            self.max_endpoint_samples,
            self.min_endpoint_samples.max(20),
            1_000_000,
        );
        p.range("learned.max_endpoints", self.max_endpoints, 1, 1_000_000);
        p.range(
            "learned.min_departure_score",
            self.min_departure_score,
            0.0,
            1.0,
        );
        p.range("learned.window_secs", self.window_secs, 1, 24 * 3600);
        p.range(
            "learned.min_window_samples",
            self.min_window_samples,
            20,
            10_000_000,
        );
        p.range(
            "learned.max_window_samples",
            self.max_window_samples,
            self.min_window_samples.max(20),
            10_000_000,
        );
        p.range("learned.max_callers", self.max_callers, 1, 100_000_000);
        p.range(
            "learned.max_distinct_per_window",
            self.max_distinct_per_window,
            1,
            1_000_000,
        );
        p.range(
            "learned.max_scan_values",
            self.max_scan_values,
            1,
            10_000_000,
        );
    }

    fn fit_params(&self, min_scale: &[f64]) -> FitParams {
        let mut floor = [0.1; MAX_DIM];
        for (f, m) in floor.iter_mut().zip(min_scale) {
            *f = *m;
        }
        FitParams {
            components: self.components,
            max_iterations: self.max_fit_iterations,
            // Standardised units: every component spreads at least one feature floor in each
            // direction, so a feature constant in training does not make its first wobble an
            // infinite surprise (EM would shrink such a component to a point).
            reg_covariance: 1.0,
            min_scale: floor,
            false_alarm_rate: self.false_alarm_rate,
            margin: self.threshold_margin,
            min_excess: self.min_score_excess_nats,
        }
    }
}

/// A bottom-k sample: the `cap` vectors with the smallest hashes of all offered.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservoir {
    /// Vectors offered in total.
    pub seen: u64,
    /// `(hash, vector)`; vectors stored as `f32` (the fits need no more).
    pub samples: Vec<(u64, Vec<f32>)>,
    /// Index of the largest hash while full; rebuilt after load.
    #[serde(skip)]
    max_at: Option<usize>,
}

/// Equal when they hold the same samples (the cached index of the largest is not content).
impl PartialEq for Reservoir {
    fn eq(&self, other: &Reservoir) -> bool {
        self.seen == other.seen && self.samples == other.samples
    }
}

impl Reservoir {
    /// Offers a vector under hash `h`; keeps at most `cap`.
    pub fn offer(&mut self, h: u64, x: &[f64], cap: usize) {
        self.seen = self.seen.saturating_add(1);
        if cap == 0 {
            return;
        }
        if self.samples.len() < cap {
            self.samples
                .push((h, x.iter().map(|v| *v as f32).collect()));
            self.max_at = None;
            return;
        }
        let at = match self.max_at {
            Some(i) if i < self.samples.len() => i,
            _ => self.find_max(),
        };
        if let Some(slot) = self.samples.get_mut(at) {
            if h < slot.0 {
                slot.0 = h;
                slot.1.clear();
                slot.1.extend(x.iter().map(|v| *v as f32));
                self.max_at = Some(self.find_max());
            } else {
                self.max_at = Some(at);
            }
        }
    }

    fn find_max(&self) -> usize {
        let mut best = 0;
        for (i, (h, _)) in self.samples.iter().enumerate() {
            if let Some((b, _)) = self.samples.get(best) {
                if h > b {
                    best = i;
                }
            }
        }
        best
    }

    /// Keeps the `cap` smallest hashes (after a load with another cap, or a merge).
    pub fn shrink_to(&mut self, cap: usize) {
        self.samples.sort_by_key(|a| a.0);
        self.samples.truncate(cap);
        self.max_at = None;
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Reservoir, cap: usize) {
        let seen = self.seen.saturating_add(other.seen);
        self.samples.extend(other.samples.iter().cloned());
        self.shrink_to(cap);
        self.seen = seen;
    }

    /// The vectors in hash order, as `f64`.
    pub fn sorted(&self) -> Vec<Vec<f64>> {
        let mut s: Vec<&(u64, Vec<f32>)> = self.samples.iter().collect();
        s.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_f32(&a.1, &b.1)));
        s.iter()
            .map(|(_, x)| x.iter().map(|v| f64::from(*v)).collect())
            .collect()
    }
}

fn cmp_f32(a: &[f32], b: &[f32]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = x.total_cmp(y);
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// What training saw and turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainCounters {
    /// Requests whose shapes were offered to a reservoir.
    pub requests: u64,
    /// Closed caller windows offered to the window reservoir.
    pub windows: u64,
    pub endpoints_over_cap: u64,
    pub callers_over_cap: u64,
    pub distinct_over_cap: u64,
    pub scan_truncated: u64,
    /// Endpoints sampled but below `min_endpoint_samples`: no shape model.
    pub endpoints_too_few_samples: u64,
    /// Fits that failed for every component count tried.
    pub fits_failed: u64,
}

/// The learned models and their training samples: `<model>/detect.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedModel {
    /// The caller window length the caller model was trained with.
    pub window_secs: u64,
    /// Shape mixtures by endpoint, sorted by key.
    pub shapes: Vec<(EndpointKey, Mixture)>,
    /// The caller-window mixture, when training closed enough windows.
    pub callers: Option<Mixture>,
    /// Shape reservoirs by endpoint, sorted by key: refitted when learning goes on.
    pub shape_samples: Vec<(EndpointKey, Reservoir)>,
    pub window_samples: Reservoir,
    pub counters: TrainCounters,
}

impl TrainedModel {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join(DETECT_FILE)
    }

    /// Loads `<dir>/detect.json`: `Ok(None)` when there is none, an error naming the file
    /// when it is corrupt, from a newer apitap, or holds a model that cannot score.
    pub fn load(dir: &Path) -> Result<Option<TrainedModel>, StoreError> {
        let path = TrainedModel::file(dir);
        if !path.exists() {
            return Ok(None);
        }
        let (_, t): (u32, TrainedModel) = store::load(&path, DETECT_VERSION)?;
        t.validate().map_err(|reason| StoreError {
            file: path.clone(),
            reason: format!("{reason}; rebuild it with `apitap learn`"),
        })?;
        Ok(Some(t))
    }

    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        store::save(&TrainedModel::file(dir), DETECT_VERSION, self)
    }

    /// Every mixture can score with the features this apitap computes.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_secs == 0 {
            return Err("window_secs is 0".into());
        }
        for (k, m) in &self.shapes {
            let s = Scorer::new(m).map_err(|e| format!("shape model of {}: {e}", k.label()))?;
            if s.dim() != SHAPE_DIM {
                return Err(format!(
                    "shape model of {} has {} features, this apitap computes {SHAPE_DIM}",
                    k.label(),
                    s.dim()
                ));
            }
        }
        if let Some(m) = &self.callers {
            let s = Scorer::new(m).map_err(|e| format!("caller model: {e}"))?;
            if s.dim() != WINDOW_DIM {
                return Err(format!(
                    "caller model has {} features, this apitap computes {WINDOW_DIM}",
                    s.dim()
                ));
            }
        }
        Ok(())
    }
}

/// A stable hash of a client: its pseudonym, else its address.
fn client_hash(identity: &Identity) -> u64 {
    match &identity.subject {
        Some(s) => fnv(&[b"s", s.as_str().as_bytes()]),
        None => match identity.client_ip {
            std::net::IpAddr::V4(a) => fnv(&[b"4", &a.octets()]),
            std::net::IpAddr::V6(a) => fnv(&[b"6", &a.octets()]),
        },
    }
}

/// Closed windows kept for reuse by new clients, so the steady turnover of windows (every
/// client's is closed by a sweep within two window lengths of its last call) does not free
/// and regrow their sets. Each holds at most `2 * max_distinct` hashes of capacity.
const MAX_SPARE_WINDOWS: usize = 256;

/// Open caller windows, capped, swept once per window length of capture time.
struct Windows {
    open: FastMap<u64, Window>,
    /// Closed windows whose memory the next new clients take, at most [`MAX_SPARE_WINDOWS`].
    spare: Vec<Window>,
    /// The clients a sweep closes; kept to reuse its memory (at most `max_callers`).
    done: Vec<u64>,
    window_ns: u64,
    max_callers: usize,
    max_distinct: usize,
    last_sweep: Timestamp,
    callers_over_cap: u64,
    distinct_over_cap: u64,
}

impl Windows {
    fn new(window_secs: u64, max_callers: usize, max_distinct: usize) -> Windows {
        Windows {
            open: FastMap::default(),
            spare: Vec::new(),
            done: Vec::new(),
            window_ns: window_secs.saturating_mul(1_000_000_000).max(1),
            max_callers,
            max_distinct,
            last_sweep: Timestamp::ZERO,
            callers_over_cap: 0,
            distinct_over_cap: 0,
        }
    }

    fn ended(&self, w: &Window, now: Timestamp) -> bool {
        now.as_nanos() >= w.start.as_nanos().saturating_add(self.window_ns)
    }

    /// Closes every window that ended by `now`, in client order, handing each to `closed`.
    fn sweep(&mut self, now: Timestamp, closed: &mut dyn FnMut(u64, &Window)) {
        if now.as_nanos() < self.last_sweep.as_nanos().saturating_add(self.window_ns) {
            return;
        }
        self.last_sweep = now;
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        done.extend(
            self.open
                .iter()
                .filter(|(_, w)| self.ended(w, now))
                .map(|(c, _)| *c),
        );
        // Client order, not the map's: the reservoir sees the same sequence on every run.
        done.sort_unstable();
        for c in &done {
            if let Some(w) = self.open.remove(c) {
                closed(*c, &w);
                if self.spare.len() < MAX_SPARE_WINDOWS {
                    self.spare.push(w);
                }
            }
        }
        self.done = done;
    }

    /// Adds a call to its client's window (closing the previous one first when it ended);
    /// `None` when the client could not be tracked.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        client: u64,
        ts: Timestamp,
        endpoint: u64,
        objects: &[(String, String)],
        status: u16,
        response_bytes: u64,
        closed: &mut dyn FnMut(u64, &Window),
    ) -> Option<&Window> {
        self.sweep(ts, closed);
        let full = self.open.len() >= self.max_callers;
        let w = match self.open.entry(client) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => {
                self.callers_over_cap = self.callers_over_cap.saturating_add(1);
                return None;
            }
            Entry::Vacant(e) => e.insert(match self.spare.pop() {
                Some(mut w) => {
                    w.reset(ts);
                    w
                }
                None => Window::new(ts),
            }),
        };
        if ts.as_nanos() >= w.start.as_nanos().saturating_add(self.window_ns) {
            closed(client, w);
            w.reset(ts);
        }
        let refused = w.add(endpoint, objects, status, response_bytes, self.max_distinct);
        self.distinct_over_cap = self.distinct_over_cap.saturating_add(refused);
        Some(w)
    }
}

/// Parses a JSON request body within `max` bytes, as the detection engine does.
fn request_json(tx: &Transaction, max: usize) -> Option<Value> {
    let req = tx.request.as_ref()?;
    let data = req.body.data.as_slice();
    let first = data.iter().find(|b| !b.is_ascii_whitespace())?;
    if (*first != b'{' && *first != b'[') || data.len() > max || req.body.truncated {
        return None;
    }
    serde_json::from_slice(data).ok()
}

/// Collects training vectors beside the baselines' learner; see the module documentation.
pub struct Trainer {
    cfg: LearnedConfig,
    max_json_bytes: usize,
    shapes: FastMap<EndpointKey, Reservoir>,
    windows: Windows,
    window_samples: Reservoir,
    scanner: ShapeScanner,
    counters: TrainCounters,
}

impl Trainer {
    /// A trainer that extends `previous` (the model directory's `detect.json`), if any.
    pub fn new(cfg: &super::DetectConfig, previous: Option<TrainedModel>) -> Trainer {
        let l = &cfg.learned;
        let mut t = Trainer {
            cfg: l.clone(),
            max_json_bytes: cfg.max_json_bytes,
            shapes: FastMap::default(),
            windows: Windows::new(l.window_secs, l.max_callers, l.max_distinct_per_window),
            window_samples: Reservoir::default(),
            scanner: ShapeScanner::default(),
            counters: TrainCounters::default(),
        };
        if let Some(p) = previous {
            for (k, mut r) in p.shape_samples {
                r.shrink_to(l.max_endpoint_samples);
                t.shapes.insert(k, r);
            }
            t.window_samples = p.window_samples;
            t.window_samples.shrink_to(l.max_window_samples);
            t.counters = p.counters;
        }
        t
    }

    /// Samples one transaction; `profile` is its endpoint's baseline as learned so far (call
    /// before [`crate::model::learn::Learner::learn`]).
    pub fn observe(
        &mut self,
        tx: &Transaction,
        prepared: &Prepared,
        profile: Option<&EndpointProfile>,
    ) {
        let Some(req) = tx.request.as_ref() else {
            return;
        };
        let ts = tx.ts();
        let ep = endpoint_hash(&prepared.key);
        let status = tx.response.as_ref().map_or(0, |r| r.status);
        let bytes = tx.response.as_ref().map_or(0, |r| r.body.len);
        let (samples, cap, windows) = (
            &mut self.window_samples,
            self.cfg.max_window_samples,
            &mut self.counters.windows,
        );
        let mut closed = |client: u64, w: &Window| {
            *windows = windows.saturating_add(1);
            let h = fnv(&[&client.to_le_bytes(), &w.start.as_nanos().to_le_bytes()]);
            samples.offer(h, &w.features(), cap);
        };
        self.windows.observe(
            client_hash(&prepared.identity),
            ts,
            ep,
            &prepared.object_ids,
            status,
            bytes,
            &mut closed,
        );
        self.counters.callers_over_cap = self.windows.callers_over_cap;
        self.counters.distinct_over_cap = self.windows.distinct_over_cap;

        if !self.shapes.contains_key(&prepared.key) && self.shapes.len() >= self.cfg.max_endpoints {
            self.counters.endpoints_over_cap = self.counters.endpoints_over_cap.saturating_add(1);
            return;
        }
        let json = request_json(tx, self.max_json_bytes);
        let scan = self.scanner.scan(
            req,
            json.as_ref(),
            &prepared.object_ids,
            profile,
            self.cfg.max_scan_values,
        );
        if scan.truncated {
            self.counters.scan_truncated = self.counters.scan_truncated.saturating_add(1);
        }
        let r = self.shapes.entry(prepared.key.clone()).or_default();
        let h = fnv(&[
            &ep.to_le_bytes(),
            &ts.as_nanos().to_le_bytes(),
            &r.seen.to_le_bytes(),
        ]);
        r.offer(h, &scan.features, self.cfg.max_endpoint_samples);
        self.counters.requests = self.counters.requests.saturating_add(1);
    }

    /// Fits the models. `model` is the learned baseline model: reservoirs filed under a
    /// template that changed during learning move to its final template, as profiles do.
    pub fn finish(self, model: &Model) -> TrainedModel {
        let Trainer {
            cfg,
            shapes,
            window_samples,
            mut counters,
            ..
        } = self;
        let mut keyed: Vec<(EndpointKey, Reservoir)> = shapes.into_iter().collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: BTreeMap<EndpointKey, Reservoir> = BTreeMap::new();
        for (mut key, r) in keyed {
            let now = model
                .routes
                .template_of(&key.host, &key.method, &key.template);
            key.template = now.path;
            match merged.get_mut(&key) {
                Some(m) => m.merge(&r, cfg.max_endpoint_samples),
                None => {
                    merged.insert(key, r);
                }
            }
        }
        let shape_params = cfg.fit_params(&SHAPE_MIN_SCALE);
        let mut shapes = Vec::new();
        counters.endpoints_too_few_samples = 0;
        for (key, r) in &merged {
            if r.samples.len() < cfg.min_endpoint_samples {
                counters.endpoints_too_few_samples += 1;
                continue;
            }
            match gmm::fit(&r.sorted(), SHAPE_DIM, &shape_params) {
                Ok(m) => shapes.push((key.clone(), m)),
                Err(_) => counters.fits_failed += 1,
            }
        }
        let callers = if window_samples.samples.len() >= cfg.min_window_samples {
            let p = cfg.fit_params(&WINDOW_MIN_SCALE);
            match gmm::fit(&window_samples.sorted(), WINDOW_DIM, &p) {
                Ok(m) => Some(m),
                Err(_) => {
                    counters.fits_failed += 1;
                    None
                }
            }
        } else {
            None
        };
        TrainedModel {
            window_secs: cfg.window_secs,
            shapes,
            callers,
            shape_samples: merged.into_iter().collect(),
            window_samples,
            counters,
        }
    }
}

/// What the learned detector did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LearnedCounters {
    /// Requests scored by a shape model.
    pub shapes_scored: u64,
    pub shape_findings: u64,
    /// Shapes over the threshold without a parameter departure to name: not raised.
    pub unexplained_shapes: u64,
    /// Calls whose caller window was scored.
    pub windows_scored: u64,
    pub window_findings: u64,
    /// Windows over the threshold whose features were all within the training 99.9th
    /// percentile: not raised.
    pub unexplained_windows: u64,
    pub callers_over_cap: u64,
    pub distinct_over_cap: u64,
    pub scan_truncated: u64,
}

/// A mixture ready to score.
struct Scored {
    mixture: Mixture,
    scorer: Scorer,
}

impl Scored {
    fn new(m: &Mixture) -> Option<Scored> {
        Some(Scored {
            scorer: Scorer::new(m).ok()?,
            mixture: m.clone(),
        })
    }
}

/// The learned detector; see the module documentation.
pub struct LearnedDetector {
    cfg: LearnedConfig,
    /// By [`crate::detect::endpoint_id`].
    shapes: FastMap<u64, Scored>,
    callers: Option<Scored>,
    window_secs: u64,
    windows: Windows,
    scanner: ShapeScanner,
    counters: LearnedCounters,
}

impl LearnedDetector {
    pub fn new(cfg: &LearnedConfig, trained: &TrainedModel) -> LearnedDetector {
        let shapes = trained
            .shapes
            .iter()
            .filter_map(|(k, m)| Some((crate::detect::endpoint_id(k), Scored::new(m)?)))
            .collect();
        let window_secs = trained.window_secs.max(1);
        LearnedDetector {
            cfg: cfg.clone(),
            shapes,
            callers: trained.callers.as_ref().and_then(Scored::new),
            window_secs,
            windows: Windows::new(window_secs, cfg.max_callers, cfg.max_distinct_per_window),
            scanner: ShapeScanner::default(),
            counters: LearnedCounters::default(),
        }
    }

    pub fn counters(&self) -> LearnedCounters {
        let mut c = self.counters.clone();
        c.callers_over_cap = self.windows.callers_over_cap;
        c.distinct_over_cap = self.windows.distinct_over_cap;
        c
    }

    fn observe_shape(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(model) = self.shapes.get(&cx.endpoint_id) else {
            return;
        };
        let scan = self.scanner.scan(
            cx.req,
            cx.request_json(),
            cx.object_ids,
            cx.profile,
            self.cfg.max_scan_values,
        );
        let c = &mut self.counters;
        c.shapes_scored = c.shapes_scored.saturating_add(1);
        if scan.truncated {
            c.scan_truncated = c.scan_truncated.saturating_add(1);
        }
        let score = model.scorer.score(&scan.features);
        let m = &model.mixture;
        if score <= m.threshold {
            return;
        }
        let Some(d) = scan
            .worst
            .as_ref()
            .filter(|d| d.score >= self.cfg.min_departure_score)
        else {
            c.unexplained_shapes = c.unexplained_shapes.saturating_add(1);
            return;
        };
        c.shape_findings = c.shape_findings.saturating_add(1);
        let features = feature_evidence(&SHAPE_FEATURES, &scan.features, m, &[0, 1, 2, 3, 4]);
        let over = (score - m.threshold) / (m.threshold - m.score_median).abs().max(1.0);
        let severity = if d.score >= 0.85 && over >= 1.0 {
            Severity::High
        } else {
            Severity::Medium
        };
        out.push(
            Finding::new(AlertKind::ParameterAnomaly, cx)
                .severity(severity)
                .confidence(0.5 + 0.3 * d.score + 0.2 * over.min(1.0))
                .summary(format!(
                    "{} parameter {} broke its learned shape ({}: a {} of {} bytes where {} was learned); the request-shape model scores {:.1} against a threshold of {:.1}.",
                    d.place.name(),
                    d.name,
                    d.kind.name(),
                    d.observed.name(),
                    d.value_bytes,
                    d.learned,
                    score,
                    m.threshold
                ))
                .with("parameter", d.name.clone())
                .with("location", d.place.name())
                .with("departure", d.kind.name())
                .with("departure_score", round3(d.score))
                .with("observed_type", d.observed.name())
                .with("observed_bytes", d.value_bytes as u64)
                .with("learned_shape", d.learned.clone())
                .with("model_score", round3(score))
                .with("model_threshold", round3(m.threshold))
                .with("model_median_score", round3(m.score_median))
                .with("false_alarm_rate", self.cfg.false_alarm_rate)
                .with("training_samples", m.samples as u64)
                .with("features", features),
        );
    }

    fn observe_window(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let status = cx.status();
        let bytes = cx.resp.map_or(0, |r| r.body.len);
        let ep = endpoint_hash(cx.key);
        let Some(w) = self.windows.observe(
            client_hash(cx.identity),
            cx.ts,
            ep,
            cx.object_ids,
            status,
            bytes,
            &mut |_, _| {},
        ) else {
            return;
        };
        let Some(model) = self.callers.as_ref() else {
            return;
        };
        let c = &mut self.counters;
        c.windows_scored = c.windows_scored.saturating_add(1);
        let f = w.features();
        let score = model.scorer.score(&f);
        let m = &model.mixture;
        if score <= m.threshold {
            return;
        }
        // The explaining feature, among those beyond the training 99.9th percentile: distinct
        // objects or endpoints first (many requests over many objects is an enumeration, over
        // many missing paths a scan, before it is volume), then the error share, then requests
        // or bytes; within a group the one more spreads above its training median.
        let beyond = |j: usize| {
            let q999 = m.feature_quantiles.get(j).map_or(f64::INFINITY, |q| q[2]);
            f.get(j).is_some_and(|v| *v > q999)
        };
        let mut dominant: Option<usize> = None;
        for group in [&[2usize, 1][..], &[3], &[0, 4]] {
            for &j in group {
                let better = dominant.is_none_or(|d| {
                    model.scorer.standardised(&f, j) > model.scorer.standardised(&f, d)
                });
                if beyond(j) && better {
                    dominant = Some(j);
                }
            }
            if dominant.is_some() {
                break;
            }
        }
        let Some(j) = dominant else {
            c.unexplained_windows = c.unexplained_windows.saturating_add(1);
            return;
        };
        c.window_findings = c.window_findings.saturating_add(1);
        let name = WINDOW_FEATURES.get(j).copied().unwrap_or("");
        let (kind, severity) = match name {
            "distinct_objects" => (AlertKind::Bola, Severity::High),
            "distinct_endpoints" | "error_ratio" => (AlertKind::ReconScan, Severity::Medium),
            _ => (AlertKind::VolumeSpike, Severity::Medium),
        };
        let raw = w.raw();
        let over = (score - m.threshold) / (m.threshold - m.score_median).abs().max(1.0);
        let features = feature_evidence(&WINDOW_FEATURES, &f, m, &[0, 1, 2, 4]);
        out.push(
            Finding::new(kind, cx)
                .client_scope()
                .severity(severity)
                .confidence(0.6 + 0.3 * over.min(1.0))
                .summary(format!(
                    "In {} s this client made {} requests to {} endpoints touching {} objects ({:.0}% errors, {} response bytes); the caller-window model scores {:.1} against a threshold of {:.1}, dominated by {name}.",
                    self.window_secs,
                    raw[0],
                    raw[1],
                    raw[2],
                    raw[3] * 100.0,
                    raw[4],
                    score,
                    m.threshold
                ))
                .with("dominant_feature", name)
                .with("window_secs", self.window_secs)
                .with("window_start", w.start.as_secs_f64())
                .with("model_score", round3(score))
                .with("model_threshold", round3(m.threshold))
                .with("model_median_score", round3(m.score_median))
                .with("false_alarm_rate", self.cfg.false_alarm_rate)
                .with("training_samples", m.samples as u64)
                .with("features", features),
        );
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `{feature: {observed, p50, p99, p999}}` in natural units; `log_scaled` lists the features
/// stored as `ln(1 + x)`.
fn feature_evidence(names: &[&str], f: &[f64], m: &Mixture, log_scaled: &[usize]) -> Value {
    let mut out = Map::new();
    for (j, name) in names.iter().enumerate() {
        let natural = |x: f64| {
            let x = if log_scaled.contains(&j) {
                features::expm1(x)
            } else {
                x
            };
            round3(x)
        };
        let q = m.feature_quantiles.get(j).copied().unwrap_or([0.0; 3]);
        out.insert(
            (*name).to_owned(),
            json!({
                "observed": natural(f.get(j).copied().unwrap_or(0.0)),
                "p50": natural(q[0]),
                "p99": natural(q[1]),
                "p999": natural(q[2]),
            }),
        );
    }
    Value::Object(out)
}

impl Detector for LearnedDetector {
    fn name(&self) -> &'static str {
        "learned"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.observe_shape(cx, out);
        self.observe_window(cx, out);
    }
}

#[cfg(test)]
mod tests;

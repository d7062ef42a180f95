//! Learning: transactions in, a [`Model`] out.
//!
//! Each transaction's path is observed by the route learner, mapped to its current template,
//! and folded into that endpoint's profile with the caller's identity. Templates can change as
//! learning goes on (a position folds into a parameter once enough distinct values were seen),
//! so [`Learner::finish`] re-homes every profile under its final template, merging profiles that
//! now share one — profiles are mergeable, so nothing learned is lost.
//!
//! Each transaction with a subject (JWT subject, Basic user, token, API key or session
//! pseudonym) is also folded into that caller's [`CallerProfile`]. Anonymous transactions get
//! no caller profile: keying them by client address would store raw IPs in the model (it only
//! holds pseudonyms) and would lump every client behind one NAT or proxy into one "caller";
//! they are counted (`anonymous`) and still shape the endpoint profiles.
//!
//! Memory policy: the learner keeps an estimate of the bytes its profiles hold
//! ([`Learner::memory_bytes`]), updated by the change in `heap_bytes()` of the one or two
//! profiles each transaction touches, never by a walk over all of them (an endpoint profile,
//! costly to walk, is re-measured every `REMEASURE_EVERY` calls). A caller is charged at
//! least `caller_reservation_bytes` from its first call, because a young caller profile grows
//! several-fold as its hour-of-week series fills in. Callers give way
//! first: a new caller is admitted only while the estimate is below the budget less
//! `endpoint_reserve_percent`, so the last share is left to new endpoints (few, and each worth
//! more to detection than one caller) and to the growth of profiles already kept; a new
//! endpoint is created only while the estimate is below the whole budget. Profiles already
//! kept go on learning, so the estimate can pass the budget by what they grow after it is
//! reached (each profile's growth is itself bounded by its configuration). What is turned
//! away is counted (`callers_over_budget`, `endpoints_over_budget`).
//!
//! Invariants: no I/O, no clock (time is the transaction's); endpoints are capped
//! (`max_endpoints`) and callers and endpoints by the memory budget, and what the caps turn
//! away is counted.

use super::{LearnCounters, Model};
use crate::baseline::caller::{CallerConfig, CallerKey, CallerProfile};
use crate::baseline::profile::{endpoint_host_into, EndpointKey, EndpointProfile, ProfileConfig};
use crate::detect::{endpoint_id, FastMap};
use crate::identity::{Identity, IdentityExtractor};
use crate::inventory::params;
use crate::inventory::template::RouteLearner;
use crate::transaction::Transaction;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits of one learning run.
#[derive(Clone, Debug)]
pub struct LearnConfig {
    pub profile: ProfileConfig,
    pub caller: CallerConfig,
    /// Endpoint profiles kept; transactions of further endpoints are counted, not learned.
    pub max_endpoints: usize,
    /// Estimated bytes the endpoint and caller profiles may hold (the route learner has its
    /// own caps and is not counted). Past it, new callers and then new endpoints are turned
    /// away (`callers_over_budget`, `endpoints_over_budget`); see the module documentation.
    /// Default 1 GiB.
    pub memory_budget_bytes: usize,
    /// Share of `memory_budget_bytes`, in percent, that new callers may not fill: it is kept
    /// for new endpoints and the growth of kept profiles. Default 10; values above 100 count
    /// as 100.
    pub endpoint_reserve_percent: u8,
    /// Bytes each caller is charged against the budget from its first call, or its estimate
    /// when larger. A new caller's profile is under 1 KiB, but its hour-of-week series fills
    /// in as its calls spread over the week (about 5.6 KiB each after ten calls in the model
    /// memory bench); charging only the current size admitted callers that later grew the
    /// estimate to almost three times the budget. Default 8 KiB.
    pub caller_reservation_bytes: usize,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            profile: ProfileConfig::default(),
            caller: CallerConfig::default(),
            max_endpoints: 20_000,
            memory_budget_bytes: 1 << 30,
            endpoint_reserve_percent: 10,
            caller_reservation_bytes: 8 << 10,
        }
    }
}

impl LearnConfig {
    /// The estimate below which new callers are still admitted.
    fn caller_budget_bytes(&self) -> usize {
        let reserve = usize::from(self.endpoint_reserve_percent.min(100));
        // Divide first: no overflow for any budget, and a percent of rounding is immaterial.
        (self.memory_budget_bytes / 100).saturating_mul(100 - reserve)
    }
}

/// Hash-map bookkeeping per entry beyond the key and value (control byte, load-factor slack).
const MAP_ENTRY_OVERHEAD_BYTES: usize = 16;

/// Estimated bytes one endpoint entry holds: key, profile and map slot.
fn endpoint_bytes(key: &EndpointKey, profile: &EndpointProfile) -> usize {
    // Lengths, not capacities: a stored key is a clone (exact capacity) while the key of a
    // prepared transaction may carry slack, and both must be charged the same.
    let key_heap = key.host.len()
        + key.method.len()
        + key.template.len()
        + key.graphql.as_ref().map_or(0, |(_, name)| name.len());
    std::mem::size_of::<(EndpointKey, EndpointProfile)>()
        + MAP_ENTRY_OVERHEAD_BYTES
        + key_heap
        + profile.heap_bytes()
}

/// Bytes one caller entry is charged: its estimate (pseudonym, profile and map slot), at
/// least `reservation`. Charged as when the table held a `String` key and the profile in the
/// slot, before it held a [`CallerKey`] and a box: a budget admits the same callers as it did,
/// and the charge is within a few bytes of what an entry now holds.
fn caller_bytes(pseudonym: &str, profile: &CallerProfile, reservation: usize) -> usize {
    let estimate = std::mem::size_of::<(String, CallerProfile)>()
        + MAP_ENTRY_OVERHEAD_BYTES
        + pseudonym.len()
        + profile.heap_bytes();
    estimate.max(reservation)
}

/// A transaction's endpoint, caller and object ids, found once by [`Learner::prepare`].
#[derive(Clone, Debug)]
pub struct Prepared {
    pub key: EndpointKey,
    /// [`endpoint_id`] of `key`.
    pub endpoint_id: u64,
    pub identity: Identity,
    /// Path parameters of the template: (name, raw value).
    pub object_ids: Vec<(String, String)>,
    /// Where the learner that prepared this held the endpoint's profile then, so that
    /// [`Learner::endpoint_of`] and learning need no second lookup by key.
    slot: Option<Slot>,
}

/// A position in one learner's [`EndpointTable`]. Positions stay valid for the learner's life
/// (entries are only appended); the learner's number keeps a position from being read in
/// another learner's table.
#[derive(Clone, Copy, Debug)]
struct Slot {
    learner: u64,
    index: usize,
}

/// Numbers learners apart for [`Slot`]: compared for equality only, never output.
static NEXT_LEARNER: AtomicU64 = AtomicU64::new(0);

/// Walking a whole endpoint profile for its size costs more than learning one call into it, so
/// a profile's size is measured when it is created and then every this many calls; in between
/// the estimate lags by at most that many calls' growth per endpoint (each bounded by the
/// profile's own limits).
const REMEASURE_EVERY: u32 = 64;

/// The bytes an endpoint profile is charged, and the calls learned since they were measured.
#[derive(Clone, Copy, Debug)]
struct Charge {
    bytes: usize,
    since: u32,
}

/// Caller profiles by subject pseudonym. Profiles are boxed so the table is dense (32 bytes
/// a slot instead of a few hundred): detection probes it for every identified call but rarely
/// reads the profile it finds, and thousands of callers then fit in cache.
type CallerMap = HashMap<CallerKey, Box<CallerProfile>, ahash::RandomState>;

/// One endpoint as learned: its key, its profile, the bytes the profile is charged and the
/// calls learned since they were measured.
#[derive(Debug)]
struct EndpointEntry {
    key: EndpointKey,
    profile: EndpointProfile,
    charge: Charge,
}

/// The endpoint profiles, in the order they were first learned, found by [`endpoint_id`]: a
/// probe of an integer map, then one comparison with the stored key, so every transaction
/// costs one integer hash instead of a SipHash over the key's strings, and a position found
/// once ([`Slot`]) serves the engine's later lookups of the same transaction.
///
/// Invariants: entries are only appended (positions never move); each key is stored once;
/// `by_id` holds the first entry of every id, and `collided` every later entry whose id an
/// earlier one already had, so two keys whose ids collide (a keyed 64-bit hash: practically
/// never, and not steerable by traffic) still get two profiles. Nothing here depends on hash
/// iteration order: iteration is insertion order, and the model sorts by key anyway.
#[derive(Debug, Default)]
struct EndpointTable {
    entries: Vec<EndpointEntry>,
    by_id: FastMap<u64, usize>,
    collided: HashMap<EndpointKey, usize>,
}

impl EndpointTable {
    /// The position of `key`, whose [`endpoint_id`] is `id`.
    fn find(&self, id: u64, key: &EndpointKey) -> Option<usize> {
        let &first = self.by_id.get(&id)?;
        if self.entries.get(first).is_some_and(|e| e.key == *key) {
            return Some(first);
        }
        self.collided.get(key).copied()
    }

    /// Appends an entry for `key`, which must not be in the table yet; its position.
    fn push(&mut self, id: u64, entry: EndpointEntry) -> usize {
        let index = self.entries.len();
        match self.by_id.entry(id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.collided.insert(entry.key.clone(), index);
            }
        }
        self.entries.push(entry);
        index
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

pub struct Learner {
    cfg: LearnConfig,
    identity: IdentityExtractor,
    routes: RouteLearner,
    /// This learner's number in [`Slot`]s.
    number: u64,
    endpoints: EndpointTable,
    /// Looked up for every transaction with a subject, in detection as in learning: keys held
    /// inline and a cheap (per-process seeded) hash. Iteration order is never output:
    /// [`assemble`] sorts.
    callers: CallerMap,
    /// Sum of [`endpoint_bytes`] and [`caller_bytes`] over all entries, kept up to date by
    /// the change of the entries each transaction touches.
    memory_bytes: usize,
    model: Model,
}

impl Learner {
    /// Continues learning into `model` (a fresh one or one loaded from disk).
    pub fn new(model: Model, identity: IdentityExtractor, cfg: LearnConfig) -> Learner {
        let mut model = model;
        let routes = std::mem::take(&mut model.routes);
        let mut endpoints = EndpointTable::default();
        for (key, profile) in std::mem::take(&mut model.endpoints) {
            let charge = Charge {
                bytes: endpoint_bytes(&key, &profile),
                since: 0,
            };
            let id = endpoint_id(&key);
            // A key listed twice keeps its last profile, as collecting into a map did.
            match endpoints
                .find(id, &key)
                .and_then(|i| endpoints.entries.get_mut(i))
            {
                Some(e) => {
                    e.profile = profile;
                    e.charge = charge;
                }
                None => {
                    endpoints.push(
                        id,
                        EndpointEntry {
                            key,
                            profile,
                            charge,
                        },
                    );
                }
            }
        }
        let callers: CallerMap = std::mem::take(&mut model.callers)
            .into_iter()
            .map(|(k, p)| (CallerKey::new(&k), Box::new(p)))
            .collect();
        // The one full walk: a loaded model's profiles count against the budget from the start.
        let memory_bytes = endpoints
            .entries
            .iter()
            .map(|e| e.charge.bytes)
            .chain(
                callers
                    .iter()
                    .map(|(k, p)| caller_bytes(k.as_str(), p, cfg.caller_reservation_bytes)),
            )
            .fold(0usize, usize::saturating_add);
        Learner {
            cfg,
            identity,
            routes,
            number: NEXT_LEARNER.fetch_add(1, Ordering::Relaxed),
            endpoints,
            callers,
            memory_bytes,
            model,
        }
    }

    /// Estimated bytes held by the endpoint and caller profiles (see the module documentation).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    /// Endpoint profiles held now (before [`Learner::finish`] re-homes them).
    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Caller profiles held now.
    pub fn caller_count(&self) -> usize {
        self.callers.len()
    }

    /// Learned so far.
    pub fn counters(&self) -> &LearnCounters {
        &self.model.counters
    }

    /// Moves the estimate from `before` to `after` bytes for one entry.
    fn account(&mut self, before: usize, after: usize) {
        self.memory_bytes = self
            .memory_bytes
            .saturating_sub(before)
            .saturating_add(after);
    }

    /// Learns one transaction: [`Learner::prepare`] then [`Learner::learn`].
    pub fn observe(&mut self, tx: &Transaction) {
        if let Some(p) = self.prepare(tx, true) {
            self.learn(tx, &p);
        }
    }

    /// Finds a transaction's endpoint, caller and object ids, counting it; `None` (counted)
    /// without a request. With `learn_routes` the route learner sees the path first, as in
    /// learning; without it the path is templated by what is known (detection without
    /// adaptation). The detection engine calls this once per transaction and shares the
    /// result with [`Learner::learn`], so identities are extracted once.
    pub fn prepare(&mut self, tx: &Transaction, learn_routes: bool) -> Option<Prepared> {
        self.prepare_reusing(tx, learn_routes, None)
    }

    /// [`Learner::prepare`], writing the key's strings and the object ids over the buffers of
    /// `spent` (a result no longer needed), so that a caller preparing one transaction after
    /// another allocates for them only while the buffers grow. The result is the same with or
    /// without `spent`.
    pub fn prepare_reusing(
        &mut self,
        tx: &Transaction,
        learn_routes: bool,
        spent: Option<Prepared>,
    ) -> Option<Prepared> {
        // Every transaction, learned or not, says the sensor was listening in its hour.
        self.model.coverage.note(tx.ts());
        let c = &mut self.model.counters;
        c.transactions = c.transactions.saturating_add(1);
        let Some(req) = tx.request.as_ref() else {
            c.without_request = c.without_request.saturating_add(1);
            return None;
        };
        let (mut host, mut template, method, mut object_ids) = match spent {
            Some(p) => (p.key.host, p.key.template, p.key.method, p.object_ids),
            None => Default::default(),
        };
        endpoint_host_into(tx, &mut host);
        if learn_routes {
            self.routes.observe(&host, &req.method, &req.uri);
        }
        self.routes
            .template_path_into(&host, &req.uri, &mut template);
        let params = params::path_params(&template, &req.uri);
        object_ids.truncate(params.len());
        for (i, (name, value)) in params.into_iter().enumerate() {
            match object_ids.get_mut(i) {
                Some((n, v)) => {
                    n.clear();
                    n.push_str(name);
                    v.clear();
                    v.push_str(value);
                }
                None => object_ids.push((name.to_owned(), value.to_owned())),
            }
        }
        let key = EndpointKey::of_request_reusing(req, host, template, method, &self.cfg.profile);
        let endpoint_id = endpoint_id(&key);
        let slot = self.endpoints.find(endpoint_id, &key).map(|index| Slot {
            learner: self.number,
            index,
        });
        let identity = self.identity.extract(tx);
        Some(Prepared {
            key,
            endpoint_id,
            identity,
            object_ids,
            slot,
        })
    }

    /// The position of a prepared transaction's endpoint in this learner's table: the one
    /// [`Learner::prepare`] found, else (prepared by another learner, or a new endpoint then)
    /// a lookup by key.
    fn slot_of(&self, prepared: &Prepared) -> Option<usize> {
        match prepared.slot {
            Some(s) if s.learner == self.number => Some(s.index),
            _ => self.endpoints.find(prepared.endpoint_id, &prepared.key),
        }
    }

    /// Folds a prepared transaction into the endpoint and caller profiles.
    pub fn learn(&mut self, tx: &Transaction, prepared: &Prepared) {
        self.learn_detail(tx, prepared, true);
    }

    /// [`Learner::learn`], with the endpoint's bodies, parameters and sizes learned only when
    /// `detail` (see [`EndpointProfile::observe_counts`]); counts and the caller profile always.
    pub fn learn_detail(&mut self, tx: &Transaction, prepared: &Prepared, detail: bool) {
        if tx.has_flag("partial") {
            let c = &mut self.model.counters;
            c.partial = c.partial.saturating_add(1);
        }
        let ts = tx.ts();
        if self.model.first_seen == crate::common::Timestamp::ZERO || ts < self.model.first_seen {
            self.model.first_seen = ts;
        }
        if ts > self.model.last_seen {
            self.model.last_seen = ts;
        }
        let Prepared {
            key,
            identity,
            object_ids,
            ..
        } = prepared;
        let ids: Vec<&str> = object_ids.iter().map(|(_, v)| v.as_str()).collect();
        let slot = self.slot_of(prepared);
        if slot.is_none() {
            let c = &mut self.model.counters;
            if self.endpoints.len() >= self.cfg.max_endpoints {
                c.endpoints_over_cap = c.endpoints_over_cap.saturating_add(1);
                return;
            }
            if self.memory_bytes >= self.cfg.memory_budget_bytes {
                c.endpoints_over_budget = c.endpoints_over_budget.saturating_add(1);
                return;
            }
        }
        match identity.subject.as_ref() {
            Some(subject) => self.observe_caller(subject.as_str(), tx, key),
            None => {
                let c = &mut self.model.counters;
                c.anonymous = c.anonymous.saturating_add(1);
            }
        }
        let entry = slot.and_then(|i| self.endpoints.entries.get_mut(i));
        let (before, after) = match entry {
            Some(EndpointEntry {
                profile: p, charge, ..
            }) => {
                let cov = &self.model.coverage;
                if detail {
                    p.observe(tx, identity, &ids, &self.cfg.profile, cov);
                } else {
                    p.observe_counts(tx, identity, &ids, &self.cfg.profile, cov);
                }
                let before = charge.bytes;
                charge.since += 1;
                if charge.since >= REMEASURE_EVERY {
                    charge.bytes = endpoint_bytes(key, p);
                    charge.since = 0;
                }
                (before, charge.bytes)
            }
            None => {
                let mut p = EndpointProfile::new(&self.cfg.profile);
                p.observe(tx, identity, &ids, &self.cfg.profile, &self.model.coverage);
                let bytes = endpoint_bytes(key, &p);
                self.endpoints.push(
                    prepared.endpoint_id,
                    EndpointEntry {
                        key: key.clone(),
                        profile: p,
                        charge: Charge { bytes, since: 0 },
                    },
                );
                (0, bytes)
            }
        };
        self.account(before, after);
        self.model.counters.learned = self.model.counters.learned.saturating_add(1);
    }

    /// The profile of an endpoint, as learned so far.
    pub fn endpoint(&self, key: &EndpointKey) -> Option<&EndpointProfile> {
        let i = self.endpoints.find(endpoint_id(key), key)?;
        self.endpoints.entries.get(i).map(|e| &e.profile)
    }

    /// The profile of a prepared transaction's endpoint, as learned so far: what
    /// [`Learner::endpoint`] gives for `prepared.key`, without a lookup by key when this
    /// learner prepared it.
    pub fn endpoint_of(&self, prepared: &Prepared) -> Option<&EndpointProfile> {
        let i = self.slot_of(prepared)?;
        self.endpoints.entries.get(i).map(|e| &e.profile)
    }

    /// The profile of a caller (subject pseudonym), as learned so far.
    pub fn caller(&self, subject: &str) -> Option<&CallerProfile> {
        self.callers.get(subject).map(|p| &**p)
    }

    /// Adds OpenAPI path templates to the route learner (a spec loaded while running).
    pub fn add_spec_paths<S: AsRef<str>>(&mut self, paths: impl IntoIterator<Item = S>) {
        self.routes.add_spec_paths(paths);
    }

    /// The identity extractor (and its pseudonymiser) calls are prepared with.
    pub fn identity(&self) -> &IdentityExtractor {
        &self.identity
    }

    /// The route learner (templates, spec paths, overrides).
    pub fn routes(&self) -> &RouteLearner {
        &self.routes
    }

    /// The model's bookkeeping: sensors, learning period, counters (profiles are held apart
    /// until [`Learner::finish`]).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Endpoint profiles held now, in the order they were first learned.
    pub fn endpoints(&self) -> impl Iterator<Item = (&EndpointKey, &EndpointProfile)> {
        self.endpoints.entries.iter().map(|e| (&e.key, &e.profile))
    }

    /// Folds one call into its caller's profile, admitting a new caller only under the
    /// caller share of the budget.
    fn observe_caller(&mut self, subject: &str, tx: &Transaction, endpoint: &EndpointKey) {
        let reservation = self.cfg.caller_reservation_bytes;
        let (before, after) = match self.callers.get_mut(subject) {
            Some(p) => {
                let before = caller_bytes(subject, p, reservation);
                p.observe(tx, endpoint, &self.cfg.caller, &self.model.coverage);
                (before, caller_bytes(subject, p, reservation))
            }
            None if self.memory_bytes >= self.cfg.caller_budget_bytes() => {
                let c = &mut self.model.counters;
                c.callers_over_budget = c.callers_over_budget.saturating_add(1);
                return;
            }
            None => {
                let mut p = CallerProfile::new(&self.cfg.caller);
                p.observe(tx, endpoint, &self.cfg.caller, &self.model.coverage);
                let after = caller_bytes(subject, &p, reservation);
                self.callers.insert(CallerKey::new(subject), Box::new(p));
                (0, after)
            }
        };
        self.account(before, after);
    }

    /// Ends learning: profiles re-homed under their final templates, in a stable order.
    pub fn finish(self) -> Model {
        let Learner {
            cfg,
            routes,
            endpoints,
            callers,
            model,
            ..
        } = self;
        let endpoints = endpoints
            .entries
            .into_iter()
            .map(|e| (e.key, e.profile))
            .collect();
        let callers = callers.into_iter().map(|(k, p)| (k.into(), *p)).collect();
        assemble(&cfg, routes, endpoints, callers, model)
    }

    /// The model [`Learner::finish`] would return now, leaving the learner as it is: a
    /// checkpoint of a learner that goes on learning (the daemon's periodic save). It copies
    /// every profile, so for the moment it takes the model is held twice.
    pub fn snapshot(&self) -> Model {
        let endpoints = self
            .endpoints
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.profile.clone()))
            .collect();
        let callers = self
            .callers
            .iter()
            .map(|(k, p)| (k.as_str().to_owned(), (**p).clone()))
            .collect();
        assemble(
            &self.cfg,
            self.routes.clone(),
            endpoints,
            callers,
            self.model.clone(),
        )
    }
}

/// Puts a learner's parts back into one storable model.
fn assemble(
    cfg: &LearnConfig,
    routes: RouteLearner,
    mut endpoints: Vec<(EndpointKey, EndpointProfile)>,
    mut callers: Vec<(String, CallerProfile)>,
    mut model: Model,
) -> Model {
    // Merge in key order: float sums depend on order, and a model must be byte-identical for
    // the same input (the hash map's order is random per process).
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: HashMap<EndpointKey, EndpointProfile> = HashMap::new();
    for (mut key, profile) in endpoints {
        // A profile filed under a concrete path (`/users/alice`) moves to the template the
        // path folds into now (`/users/{param}`). Templates map to themselves.
        let now = routes.template_of(&key.host, &key.method, &key.template);
        if now.path != key.template {
            key.template = now.path;
            model.counters.profiles_rehomed = model.counters.profiles_rehomed.saturating_add(1);
        }
        match merged.get_mut(&key) {
            Some(p) => p.merge(&profile, &cfg.profile, &model.coverage),
            None => {
                merged.insert(key, profile);
            }
        }
    }
    let mut endpoints: Vec<(EndpointKey, EndpointProfile)> = merged.into_iter().collect();
    endpoints.sort_by(|a, b| a.0.cmp(&b.0));
    model.routes = routes;
    model.endpoints = endpoints;
    callers.sort_by(|a, b| a.0.cmp(&b.0));
    model.callers = callers;
    model
}

impl LearnCounters {
    pub fn add(&mut self, o: &LearnCounters) {
        self.transactions = self.transactions.saturating_add(o.transactions);
        self.learned = self.learned.saturating_add(o.learned);
        self.without_request = self.without_request.saturating_add(o.without_request);
        self.partial = self.partial.saturating_add(o.partial);
        self.endpoints_over_cap = self.endpoints_over_cap.saturating_add(o.endpoints_over_cap);
        self.profiles_rehomed = self.profiles_rehomed.saturating_add(o.profiles_rehomed);
        self.anonymous = self.anonymous.saturating_add(o.anonymous);
        self.callers_over_budget = self
            .callers_over_budget
            .saturating_add(o.callers_over_budget);
        self.endpoints_over_budget = self
            .endpoints_over_budget
            .saturating_add(o.endpoints_over_budget);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::coverage::Coverage;
    use crate::common::Timestamp;
    use crate::identity::IdentityConfig;
    use crate::inventory::template::RouteConfig;
    use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response};

    const KEY: &[u8] = b"learn-test-key-0123456789abcdef!";

    /// A GET of `path` at second `sec`, by bearer token `caller` (anonymous when `None`).
    fn call(path: &str, caller: Option<&str>, sec: u64) -> Transaction {
        call_on("api.example", path, caller, sec)
    }

    fn call_on(host: &str, path: &str, caller: Option<&str>, sec: u64) -> Transaction {
        let start = Timestamp::from_nanos(1_700_000_000_000_000_000 + sec * 1_000_000_000);
        let mut headers = Headers::new();
        headers.push(b"Host", host.as_bytes());
        if let Some(c) = caller {
            headers.push(b"Authorization", format!("Bearer {c}").as_bytes());
        }
        Transaction {
            conn: ConnInfo::default(),
            depth: 1,
            request: Some(Request {
                method: "GET".into(),
                uri: path.into(),
                version: HttpVersion::Http11,
                headers,
                body: Body::default(),
                start,
                end: start,
            }),
            response: Some(Response {
                status: 200,
                reason: String::new(),
                version: HttpVersion::Http11,
                headers: Headers::new(),
                body: Body::default(),
                interim: vec![],
                start,
                end: start,
            }),
            flags: vec![],
        }
    }

    fn learner(cfg: LearnConfig) -> Learner {
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
        Learner::new(model, identity, cfg)
    }

    /// `n` calls by `callers` token holders (every fifth call anonymous) over `endpoints` paths.
    fn traffic(n: u64, callers: u64, endpoints: u64, offset: u64) -> Vec<Transaction> {
        (0..n)
            .map(|i| {
                let caller = format!("token-{:04}", (i * 7 + offset) % callers);
                let path = format!("/v1/ep{}", (i + offset) % endpoints);
                call(&path, (i % 5 != 4).then_some(caller.as_str()), i)
            })
            .collect()
    }

    /// A checkpoint taken mid-stream is the model `finish` would give at that point, and the
    /// learner goes on as if none was taken.
    #[test]
    fn snapshot_equals_finish_and_leaves_the_learner_untouched() {
        let txs = traffic(400, 30, 12, 3);
        let (half, rest) = txs.split_at(200);
        let json = |m: &Model| serde_json::to_string(m).unwrap();
        let mut l = learner(LearnConfig::default());
        for t in half {
            l.observe(t);
        }
        let snap = l.snapshot();
        let (at_half, _) = learn(LearnConfig::default(), half);
        assert_eq!(json(&snap), json(&at_half));
        assert!(!snap.endpoints.is_empty() && !snap.callers.is_empty());
        for t in rest {
            l.observe(t);
        }
        let (whole, _) = learn(LearnConfig::default(), &txs);
        assert_eq!(json(&l.finish()), json(&whole));
    }

    fn learn(cfg: LearnConfig, txs: &[Transaction]) -> (Model, usize) {
        let mut l = learner(cfg);
        for t in txs {
            l.observe(t);
        }
        let bytes = l.memory_bytes();
        (l.finish(), bytes)
    }

    #[test]
    fn callers_are_learned_by_subject_and_anonymous_calls_counted() {
        let (m, _) = learn(LearnConfig::default(), &traffic(100, 10, 3, 0));
        assert_eq!(m.counters.learned, 100);
        assert_eq!(m.counters.anonymous, 20);
        // Caller 7i mod 10 for call i; calls with i mod 5 == 4 are anonymous, and those are
        // exactly all calls of callers 3 and 8 (i ≡ 9 and 4 mod 10): 8 callers remain.
        assert_eq!(m.callers.len(), 8);
        assert!(m.callers.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        assert!(m.callers.iter().all(|(k, _)| k.starts_with("t:")));
        let calls: u64 = m.callers.iter().map(|(_, p)| p.calls).sum();
        assert_eq!(calls, 80);
        // Caller token-0000 made calls i = 0, 10, .. 90, to endpoints i mod 3: all three.
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let sub = identity
            .extract(&call("/", Some("token-0000"), 0))
            .subject
            .unwrap();
        let (_, p) = m.callers.iter().find(|(k, _)| k == sub.as_str()).unwrap();
        assert_eq!(p.calls, 10);
        assert_eq!(p.endpoints.len(), 3);
    }

    #[test]
    fn merge_of_two_halves_equals_one_pass_for_callers() {
        let txs = traffic(200, 25, 4, 3);
        let (whole, _) = learn(LearnConfig::default(), &txs);
        let (mut a, _) = learn(LearnConfig::default(), &txs[..77]);
        let (b, _) = learn(LearnConfig::default(), &txs[77..]);
        a.merge(&b, &LearnConfig::default()).unwrap();
        assert_eq!(a.callers.len(), whole.callers.len());
        for ((ka, pa), (kw, pw)) in a.callers.iter().zip(&whole.callers) {
            assert_eq!(ka, kw);
            assert_eq!(
                (pa.calls, pa.first_seen, pa.last_seen),
                (pw.calls, pw.first_seen, pw.last_seen)
            );
            assert_eq!(pa.endpoints, pw.endpoints);
            assert_eq!(pa.rate, pw.rate);
        }
        assert_eq!(a.counters.anonymous, whole.counters.anonymous);
    }

    /// A three-day outage (no transaction at all) is not silence, and an hour the sensor heard
    /// only seconds of is not an hour's sample: the endpoint's and the caller's rates record
    /// whole hours only. A model saved without coverage assumes its own period, as it did.
    #[test]
    fn rates_record_only_hours_the_sensor_listened_to_whole() {
        const HOUR: u64 = 3_600;
        // `call` counts seconds from 1_700_000_000; this many more is the top of clock hour H0.
        const T0: u64 = 2_800;
        const H0: u64 = 472_223;
        let mut l = learner(LearnConfig::default());
        // /a by alice at 0:00:10. /b by bob every ten minutes from 0:05 to 3:00:05, so the
        // sensor listened to hours 0, 1 and 2 whole and to five seconds of hour 3 (a capture
        // ending). Then nothing for 72 hours; from 75:00:05, /b again for two hours, and /a at
        // 76:30.
        l.observe(&call("/a", Some("alice"), T0 + 10));
        for k in 0..=18 {
            let sec = 300 + k * 600 - u64::from(k == 18) * 295;
            l.observe(&call("/b", Some("bob"), T0 + sec));
        }
        for k in 0..=12 {
            l.observe(&call("/b", Some("bob"), T0 + 75 * HOUR + 5 + k * 600));
        }
        l.observe(&call("/a", Some("alice"), T0 + 76 * HOUR + 1_800));
        let m = l.finish();
        assert_eq!(m.coverage.spans().len(), 2, "{:?}", m.coverage);
        // The second span runs from 75:00:05 to 77:00:05: hours 75 and 76 whole, 77 not.
        let whole: Vec<u64> = (0..80).filter(|&h| m.coverage.whole(H0 + h)).collect();
        assert_eq!(whole, vec![0, 1, 2, 75, 76]);
        let endpoint = |template: &str| {
            m.endpoints
                .iter()
                .find(|(k, _)| k.template == template)
                .map(|(_, p)| p)
                .unwrap()
        };
        let a = endpoint("/a");
        // Closed: hour 0 (one call) and hours 1, 2 and 75 quiet. Hour 3 (five seconds) and the
        // outage are not counted; hour 76 is still open.
        assert_eq!(a.rate.hours_observed(), 4);
        let bucket = |h: u64| ((H0 + h) % 168) as usize;
        assert_eq!(a.rate.mean(bucket(0)), Some(1.0));
        assert_eq!(a.rate.partial(), 0);
        let (_, alice) = m.callers.iter().find(|(_, p)| p.calls == 2).unwrap();
        assert_eq!(alice.rate.hours_observed(), 4);
        // Bob's hour 3 had a call but only five seconds of listening: left out, counted.
        let b = endpoint("/b");
        assert_eq!(b.rate.partial(), 1);
        assert_eq!(b.rate.hours_observed(), 5, "0, 1, 2, 75 and 76");
        assert_eq!(b.rate.mean(bucket(1)), Some(6.0));
        // Saved and loaded, the coverage is kept.
        let dir = std::env::temp_dir().join(format!("apitap-coverage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        m.save(&dir).unwrap();
        assert_eq!(Model::load(&dir).unwrap().coverage, m.coverage);
        // A model written before coverage existed: its period counts as listened to, and
        // nothing after it.
        let mut old = m.clone();
        old.coverage = Coverage::new();
        old.save(&dir).unwrap();
        let back = Model::load(&dir).unwrap();
        assert_eq!(back.coverage, Coverage::through(m.first_seen, m.last_seen));
        assert_eq!(back.coverage.whole_hours(), 77);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn models_with_callers_are_byte_deterministic() {
        let txs = traffic(300, 40, 6, 1);
        let one = serde_json::to_vec(&learn(LearnConfig::default(), &txs).0).unwrap();
        let two = serde_json::to_vec(&learn(LearnConfig::default(), &txs).0).unwrap();
        assert_eq!(one, two);
        let back: Model = serde_json::from_slice(&one).unwrap();
        assert_eq!(serde_json::to_vec(&back).unwrap(), one);
    }

    #[test]
    fn incremental_estimate_equals_a_full_walk() {
        let mut l = learner(LearnConfig::default());
        for t in traffic(500, 60, 8, 2) {
            l.observe(&t);
        }
        let callers = l
            .callers
            .iter()
            .map(|(k, p)| caller_bytes(k.as_str(), p, 8 << 10))
            .sum::<usize>();
        let charged = l
            .endpoints
            .entries
            .iter()
            .map(|e| e.charge.bytes)
            .sum::<usize>();
        let walk = l
            .endpoints
            .entries
            .iter()
            .map(|e| endpoint_bytes(&e.key, &e.profile))
            .sum::<usize>();
        // The bookkeeping adds up; endpoint charges lag a full walk by what fewer than
        // REMEASURE_EVERY calls added, and catch up at the next measurement.
        assert_eq!(l.memory_bytes(), charged + callers);
        assert!(
            charged <= walk && walk - charged < walk / 2,
            "{charged} vs {walk}"
        );
        for t in traffic(8 * REMEASURE_EVERY as u64, 60, 8, 2) {
            l.observe(&t);
        }
        let after = l
            .endpoints
            .entries
            .iter()
            .map(|e| e.charge.bytes)
            .sum::<usize>();
        assert!(
            after > charged,
            "re-measured profiles are charged their growth"
        );
        // A learner continuing a saved model starts from the same estimate.
        let bytes = l.memory_bytes();
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let again = Learner::new(l.finish(), identity, LearnConfig::default());
        assert!(again.memory_bytes() > 0 && again.memory_bytes() <= bytes);
    }

    #[test]
    fn tiny_budget_turns_away_callers_first_then_endpoints() {
        // Measure one endpoint and one caller, then allow room for about ten of each.
        let (_, one) = learn(LearnConfig::default(), &[call("/v1/ep0", Some("a"), 0)]);
        let budget = one * 10;
        let cfg = LearnConfig {
            memory_budget_bytes: budget,
            endpoint_reserve_percent: 50,
            ..LearnConfig::default()
        };
        let mut l = learner(cfg);
        let mut max_single = 0;
        for i in 0..2000u64 {
            let before = l.memory_bytes();
            let caller = format!("caller-token-{i:06}");
            // One host per endpoint: paths on one host would fold into one template.
            l.observe(&call_on(
                &format!("h{i}.example"),
                "/v1/items",
                Some(&caller),
                i,
            ));
            max_single = max_single.max(l.memory_bytes().saturating_sub(before));
        }
        let c = l.counters().clone();
        assert!(c.callers_over_budget > 0, "{c:?}");
        assert!(c.endpoints_over_budget > 0, "{c:?}");
        // Callers stopped at half the budget, endpoints went on to the whole budget.
        assert!(l.endpoint_count() > l.caller_count(), "{c:?}");
        assert_eq!(c.learned + c.endpoints_over_budget, 2000);
        assert_eq!(l.caller_count() as u64 + c.callers_over_budget, c.learned);
        assert!(
            l.memory_bytes() <= budget + max_single,
            "{} > {budget} + {max_single}",
            l.memory_bytes()
        );
        // Known callers on known endpoints keep learning past the budget.
        let learned = c.learned;
        l.observe(&call_on(
            "h0.example",
            "/v1/items",
            Some("caller-token-000000"),
            5000,
        ));
        assert_eq!(l.counters().learned, learned + 1);
        let m = l.finish();
        assert_eq!(
            m.callers.iter().find(|(_, p)| p.calls == 2).map(|_| ()),
            Some(())
        );
    }

    fn key(template: &str) -> EndpointKey {
        EndpointKey {
            host: "api.example".into(),
            method: "GET".into(),
            template: template.into(),
            graphql: None,
        }
    }

    fn entry(template: &str) -> EndpointEntry {
        EndpointEntry {
            key: key(template),
            profile: EndpointProfile::new(&ProfileConfig::default()),
            charge: Charge { bytes: 0, since: 0 },
        }
    }

    /// Ids are a seeded hash, so collisions are forced here: keys sharing an id each keep
    /// their own entry, and an unknown key with a known id is not found.
    #[test]
    fn endpoint_table_keeps_keys_whose_ids_collide_apart() {
        let mut t = EndpointTable::default();
        let cases: [(u64, &str); 4] = [(7, "/a"), (7, "/b"), (9, "/c"), (7, "/d")];
        for (i, (id, path)) in cases.iter().enumerate() {
            assert_eq!(t.find(*id, &key(path)), None);
            assert_eq!(t.push(*id, entry(path)), i);
        }
        for (i, (id, path)) in cases.iter().enumerate() {
            assert_eq!(t.find(*id, &key(path)), Some(i), "{path}");
        }
        assert_eq!(t.find(7, &key("/e")), None);
        assert_eq!(t.find(9, &key("/a")), None);
        assert_eq!(t.find(8, &key("/a")), None);
        assert_eq!(t.len(), 4);
        assert_eq!(t.collided.len(), 2);
    }

    /// The position `prepare` found gives the profile a lookup by key gives, for known and
    /// new endpoints, learning or not.
    #[test]
    fn prepared_positions_agree_with_lookups_by_key() {
        let mut l = learner(LearnConfig::default());
        for (i, t) in traffic(300, 20, 9, 4).iter().enumerate() {
            let p = l.prepare(t, true).unwrap();
            assert_eq!(p.endpoint_id, endpoint_id(&p.key));
            let by_key = l.endpoint(&p.key).map(|e| e as *const EndpointProfile);
            let by_slot = l.endpoint_of(&p).map(|e| e as *const EndpointProfile);
            assert_eq!(by_slot, by_key);
            if i % 3 != 2 {
                l.learn(t, &p);
                assert!(l.endpoint_of(&p).is_some());
                assert_eq!(
                    l.endpoint_of(&p).map(|e| e as *const EndpointProfile),
                    l.endpoint(&p.key).map(|e| e as *const EndpointProfile)
                );
            }
        }
    }

    /// A transaction prepared by one learner and learned by another lands on the other's
    /// profile for its key, not on whatever sits at the first learner's position.
    #[test]
    fn a_transaction_prepared_elsewhere_is_learned_under_its_key() {
        let mut a = learner(LearnConfig::default());
        let mut b = learner(LearnConfig::default());
        for t in [call("/v1/x", None, 0), call("/v1/y", None, 1)] {
            a.observe(&t);
        }
        b.observe(&call("/v1/y", None, 2));
        let t = call("/v1/y", None, 3);
        let p = a.prepare(&t, true).unwrap();
        // `/v1/y` is a's second endpoint and b's first.
        assert_eq!(b.endpoint_of(&p).map(|e| e.calls), Some(1));
        b.learn(&t, &p);
        assert_eq!(b.endpoint_count(), 1);
        assert_eq!(b.endpoint(&p.key).map(|e| e.calls), Some(2));
        let p = a.prepare(&call("/v1/x", None, 4), true).unwrap();
        assert_eq!(b.endpoint_of(&p).map(|e| e.calls), None);
    }

    /// A request with the method and path given, on `host` (`None`: no Host header, so the
    /// server address names the host).
    fn request(host: Option<&str>, method: &str, path: &str, sec: u64) -> Transaction {
        let mut t = call_on(host.unwrap_or(""), path, Some("tok"), sec);
        if let Some(req) = t.request.as_mut() {
            req.method = method.into();
            if host.is_none() {
                req.headers = Headers::new();
            }
        }
        t
    }

    /// Preparing over the buffers of the previous result gives what preparing afresh gives,
    /// whichever way the buffers have to grow or shrink: hosts long and short, upper case, a
    /// trailing dot or none at all; paths with zero to three parameters; a method over the
    /// label limit.
    #[test]
    fn prepare_reusing_a_spent_result_equals_preparing_afresh() {
        let long_method = "M".repeat(ProfileConfig::default().max_label_bytes + 5);
        let cases: Vec<(Option<&str>, &str, String)> = vec![
            (
                Some("api.example"),
                "GET",
                "/v1/users/123/orders/456".into(),
            ),
            (
                Some("A.Much.Longer.Host.Name.Example."),
                "POST",
                "/v1/users/7".into(),
            ),
            (None, "GET", "/".into()),
            (Some("api.example"), &long_method, "/v1/items".into()),
            (Some("x"), "DELETE", "/v1/users/9/orders/8/lines/7".into()),
            (Some("api.example"), "GET", "/v1/users/123?q=1".into()),
        ];
        let mut fresh = learner(LearnConfig::default());
        let mut reusing = learner(LearnConfig::default());
        let mut spent = None;
        let mut most_ids = 0;
        for round in 0..40u64 {
            for (i, (host, method, path)) in cases.iter().enumerate() {
                let t = request(*host, method, path, round * 10 + i as u64);
                let learn_routes = round % 3 != 2;
                let a = fresh.prepare(&t, learn_routes).unwrap();
                let b = reusing
                    .prepare_reusing(&t, learn_routes, spent.take())
                    .unwrap();
                assert_eq!(a.key, b.key, "{round} {path}");
                assert_eq!(a.endpoint_id, b.endpoint_id);
                assert_eq!(a.object_ids, b.object_ids, "{round} {path}");
                assert_eq!(a.identity, b.identity);
                most_ids = most_ids.max(b.object_ids.len());
                fresh.learn(&t, &a);
                reusing.learn(&t, &b);
                spent = Some(b);
            }
        }
        assert!(
            most_ids >= 3,
            "the cases must exercise object ids: {most_ids}"
        );
        let json = |m: &Model| serde_json::to_string(m).unwrap();
        assert_eq!(json(&fresh.finish()), json(&reusing.finish()));
    }

    /// Loading a model whose endpoint list names a key twice keeps the last profile, once.
    #[test]
    fn a_key_listed_twice_in_a_model_is_kept_once() {
        let (mut m, _) = learn(LearnConfig::default(), &traffic(40, 4, 2, 0));
        let dup = m.endpoints[0].clone();
        let mut last = dup.1.clone();
        last.calls += 1000;
        m.endpoints.push((dup.0.clone(), last));
        let n = m.endpoints.len();
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let l = Learner::new(m, identity, LearnConfig::default());
        assert_eq!(l.endpoint_count(), n - 1);
        assert_eq!(
            l.endpoint(&dup.0).map(|p| p.calls),
            Some(dup.1.calls + 1000)
        );
    }

    #[test]
    fn caller_budget_never_overflows() {
        let cfg = LearnConfig {
            memory_budget_bytes: usize::MAX,
            endpoint_reserve_percent: 255,
            ..LearnConfig::default()
        };
        assert_eq!(cfg.caller_budget_bytes(), 0);
        let cfg = LearnConfig {
            memory_budget_bytes: usize::MAX,
            endpoint_reserve_percent: 0,
            ..LearnConfig::default()
        };
        assert!(cfg.caller_budget_bytes() > usize::MAX / 100 * 99);
    }
}

//! Detection: transactions in, alerts out.
//!
//! The [`DetectEngine`] works on one transaction at a time, in capture order:
//! 1. [`Learner::prepare`] finds the endpoint (route template), the caller (identity
//!    pseudonym) and the object ids of the request, once.
//! 2. A [`Context`] gathers what every detector needs: the endpoint's and the caller's learned
//!    baselines, the JSON bodies parsed once, whether the capture was complete.
//! 3. Each [`Detector`] looks at the context and pushes [`Finding`]s: "this request, or this
//!    client's recent requests, look like `<kind>`, and here is the evidence".
//! 4. The [`incident`] tracker folds findings into incidents keyed by (kind, endpoint, client),
//!    applies suppression rules and the global rate limit, and emits [`Alert`]s: one when an
//!    incident opens, one more with the final `count` when it closes.
//! 5. With `adapt`, the transaction is then learned into the baselines, unless it raised a
//!    finding or its client has an open incident: an attacker cannot teach the model that the
//!    attack is normal (no baseline poisoning).
//!
//! Invariants: deterministic (no clock, no randomness, no hash-order dependence: the same
//! transactions and model give the same alerts byte for byte); bounded (every detector's state
//! has a configured cap and a counter for what it turned away); no raw secret ever enters a
//! finding (detectors describe credentials by kind and pseudonym, never by value).

pub mod baseline;
pub mod behaviour;
pub mod config;
pub mod incident;
pub mod learned;
pub mod rawjson;
pub mod signatures;

use crate::alert::{Alert, AlertKind, Client, Endpoint, Severity};
use crate::baseline::caller::CallerProfile;
use crate::baseline::profile::{EndpointKey, EndpointProfile};
use crate::common::Timestamp;
use crate::identity::{Identity, IdentityExtractor};
use crate::inventory::spec::{Spec, SpecOperation};
use crate::model::learn::{LearnConfig, Learner, Prepared};
use crate::model::Model;
use crate::transaction::{Body, Request, Response, Transaction};
use serde_json::{Map, Value};
use std::cell::{Cell, OnceCell};

pub use config::DetectConfig;

/// The hash map of detector state. Keys come from traffic (endpoints, callers, hashed ids), so
/// the hasher is seeded per process (no crafted collisions) but much cheaper than SipHash;
/// nothing iterates these maps into output, so the seed never shows in results.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, ahash::RandomState>;

/// Seeds of [`endpoint_id`], drawn once per process.
static ENDPOINT_SEED: std::sync::LazyLock<ahash::RandomState> =
    std::sync::LazyLock::new(ahash::RandomState::new);

/// A 64-bit name of an endpoint (every field of its key), for detector state keyed by
/// endpoint: hashing and comparing one integer instead of the key's strings on every
/// transaction. Seeded per process, so traffic cannot be shaped to make two endpoints share
/// an id; ids never appear in output, and two of a few thousand endpoints colliding by chance
/// is a one in 10^12 event.
pub fn endpoint_id(key: &EndpointKey) -> u64 {
    ENDPOINT_SEED.hash_one(key)
}
use incident::Incidents;

/// What an incident is about: which part of (endpoint, client) groups its findings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One client on one endpoint (an injection attempt, a BOLA walk).
    Call,
    /// One client across endpoints (a scan, a caller's volume burst, impossible travel).
    Client,
    /// One endpoint across clients (an error spike, distributed credential stuffing).
    Endpoint,
}

/// Route and method of an alert about a client across endpoints.
pub const ANY: &str = "*";

/// One detector verdict: the raw material of an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: AlertKind,
    pub scope: Scope,
    /// For [`Scope::Client`] findings, method and route are [`ANY`].
    pub endpoint: Endpoint,
    /// For [`Scope::Endpoint`] findings, `ip` and `identity` are `None`.
    pub client: Client,
    /// Capture time of the traffic that produced it.
    pub ts: Timestamp,
    pub severity: Severity,
    /// In `0..=1`.
    pub confidence: f64,
    /// One sentence a human reads; no raw secret.
    pub summary: String,
    /// Kind-specific facts: observed and baseline values, thresholds, counts.
    pub evidence: Map<String, Value>,
    /// Transactions this finding stands for (at least 1).
    pub count: u64,
    /// Of those, how many were complete (see [`is_complete`]).
    pub complete: u64,
    /// The request that triggered it, as `<flow id>#<depth>` (`apitap flows` prints both).
    pub sample: String,
}

impl Finding {
    /// A finding about the context's call (client on endpoint) at medium severity.
    pub fn new(kind: AlertKind, cx: &Context<'_>) -> Finding {
        Finding {
            kind,
            scope: Scope::Call,
            endpoint: cx.endpoint().clone(),
            client: cx.client().clone(),
            ts: cx.ts,
            severity: Severity::Medium,
            confidence: 0.8,
            summary: String::new(),
            evidence: Map::new(),
            count: 1,
            complete: u64::from(cx.complete),
            sample: cx.sample_id(),
        }
    }

    /// The same finding about the client across endpoints.
    pub fn client_scope(mut self) -> Finding {
        self.scope = Scope::Client;
        self.endpoint.method = ANY.to_owned();
        self.endpoint.route = ANY.to_owned();
        self
    }

    /// The same finding about the endpoint across clients.
    pub fn endpoint_scope(mut self) -> Finding {
        self.scope = Scope::Endpoint;
        self.client = Client {
            ip: None,
            identity: None,
            role: None,
        };
        self
    }

    pub fn severity(mut self, s: Severity) -> Finding {
        self.severity = s;
        self
    }

    pub fn confidence(mut self, c: f64) -> Finding {
        self.confidence = c.clamp(0.0, 1.0);
        self
    }

    pub fn summary(mut self, s: impl Into<String>) -> Finding {
        self.summary = s.into();
        self
    }

    /// Adds one evidence fact.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Finding {
        self.evidence.insert(key.to_owned(), value.into());
        self
    }
}

/// Everything detectors may look at for one transaction. Built once per transaction by the
/// engine; detectors only read it.
pub struct Context<'a> {
    pub tx: &'a Transaction,
    pub req: &'a Request,
    pub resp: Option<&'a Response>,
    /// Capture time of the request (the transaction's time).
    pub ts: Timestamp,
    pub key: &'a EndpointKey,
    /// [`endpoint_id`] of `key`.
    pub endpoint_id: u64,
    /// `host`, `method`, `route` of the alert record for this call, made on first use
    /// ([`Context::endpoint`]): most calls raise no finding and never need it.
    pub endpoint: OnceCell<Endpoint>,
    /// `ip`, `identity`, `role` of the alert record for this call, made on first use
    /// ([`Context::client`]).
    pub client: OnceCell<Client>,
    pub identity: &'a Identity,
    /// Path parameters of the template: (name, raw value).
    pub object_ids: &'a [(String, String)],
    /// The endpoint's learned baseline; `None` for an endpoint never learned.
    pub profile: Option<&'a EndpointProfile>,
    /// The caller's learned baseline; `None` for anonymous or never-seen callers.
    pub caller: Option<&'a CallerProfile>,
    /// All learned baselines (other endpoints, other callers, routes).
    pub learner: &'a Learner,
    /// The OpenAPI spec given to `detect` or the daemon, if any.
    pub spec: Option<&'a Spec>,
    /// Request and response seen whole, without gaps.
    pub complete: bool,
    /// The JSON bodies, parsed on first use ([`Context::request_json`]).
    pub bodies: Bodies,
    /// The spec operation of the request, looked up on first use ([`Context::spec_operation`]).
    pub spec_op: OnceCell<Option<&'a SpecOperation>>,
}

/// A transaction's JSON bodies, parsed on first use: most transactions need neither parsed.
pub struct Bodies {
    request: OnceCell<Option<Value>>,
    response: OnceCell<Option<Value>>,
    max_json_bytes: usize,
    too_large: Cell<u64>,
}

impl Bodies {
    /// Bodies of up to `max_json_bytes` will be parsed when asked for.
    pub fn new(max_json_bytes: usize) -> Bodies {
        Bodies {
            request: OnceCell::new(),
            response: OnceCell::new(),
            max_json_bytes,
            too_large: Cell::new(0),
        }
    }

    /// JSON bodies over the limit met so far (not parsed).
    pub fn too_large(&self) -> u64 {
        self.too_large.get()
    }
}

impl<'a> Context<'a> {
    /// `host`, `method`, `route` of the alert record for this call.
    pub fn endpoint(&self) -> &Endpoint {
        self.endpoint.get_or_init(|| Endpoint {
            host: self.key.host.clone(),
            method: self.key.method.clone(),
            route: self.key.template.clone(),
        })
    }

    /// `ip`, `identity`, `role` of the alert record for this call.
    pub fn client(&self) -> &Client {
        self.client.get_or_init(|| call_client(self.identity))
    }

    /// The request body as JSON, when it is JSON and within `max_json_bytes`; parsed once, on
    /// the first call.
    pub fn request_json(&self) -> Option<&Value> {
        let b = &self.bodies;
        b.request
            .get_or_init(|| {
                let mut n = 0;
                let v = parse_json(&self.req.body, &self.req.headers, b.max_json_bytes, &mut n);
                b.too_large.set(b.too_large.get() + n);
                v
            })
            .as_ref()
    }

    /// The response body as JSON, when it is JSON and within `max_json_bytes`; parsed once, on
    /// the first call.
    pub fn response_json(&self) -> Option<&Value> {
        let b = &self.bodies;
        b.response
            .get_or_init(|| {
                let mut n = 0;
                let v = self
                    .resp
                    .and_then(|r| parse_json(&r.body, &r.headers, b.max_json_bytes, &mut n));
                b.too_large.set(b.too_large.get() + n);
                v
            })
            .as_ref()
    }

    /// The spec operation this request falls under (method and concrete path), `None` without
    /// a spec or outside it; looked up once.
    pub fn spec_operation(&self) -> Option<&'a SpecOperation> {
        *self.spec_op.get_or_init(|| {
            self.spec
                .and_then(|s| s.find(&self.req.method, &self.req.uri))
        })
    }

    /// `<flow id>#<depth>`: names this transaction in `apitap flows` output.
    pub fn sample_id(&self) -> String {
        format!("{}#{}", self.tx.conn.flow_id, self.tx.depth)
    }

    /// The response status, 0 without a response.
    pub fn status(&self) -> u16 {
        self.resp.map_or(0, |r| r.status)
    }

    /// The grouping key of the caller: its pseudonym, else its address.
    pub fn client_key(&self) -> String {
        client_key(self.client())
    }

    /// The endpoint's label (`GET api.example.com/users/{id}`), the key detectors keep state under.
    pub fn endpoint_label(&self) -> String {
        self.key.label()
    }
}

/// The grouping key of a client: its pseudonym, else its address, else empty.
pub fn client_key(c: &Client) -> String {
    match (&c.identity, c.ip) {
        (Some(id), _) => id.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => String::new(),
    }
}

/// One detection family. Detectors keep their own bounded state (windows, counters) keyed by
/// client or endpoint and are driven only by transactions, in capture time.
pub trait Detector: Send {
    /// A name for logs and counters.
    fn name(&self) -> &'static str;
    /// Its own counters as a JSON object of counts (what it looked at, what its bounded tables
    /// turned away), for [`DetectEngine::detector_counters`].
    fn counter_values(&self) -> Value;
    /// Looks at one transaction and pushes what it finds.
    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>);
}

/// What the engine needs besides the model and the configuration.
#[derive(Default)]
pub struct DetectEnv {
    /// The OpenAPI spec: templates, shadow and deprecated endpoints.
    pub spec: Option<Spec>,
    /// A MaxMind-format database for impossible travel.
    pub geoip: Option<std::path::PathBuf>,
    /// The learned models (`<model>/detect.json`); `None` turns the learned detectors off.
    pub trained: Option<learned::TrainedModel>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0}")]
    Config(String),
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
}

/// What the engine did, for the summary line and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DetectCounters {
    pub transactions: u64,
    /// Transactions looked at by the detectors (with a request, after the learning period).
    pub analysed: u64,
    pub findings: u64,
    /// Transactions learned into the baselines (`adapt`).
    pub learned: u64,
    /// Transactions not learned because they raised a finding or their client had an open
    /// incident.
    pub withheld_from_learning: u64,
    /// JSON bodies over `max_json_bytes`, not parsed for detection.
    pub json_too_large: u64,
}

/// Detection over a transaction stream; see the module documentation.
pub struct DetectEngine {
    cfg: DetectConfig,
    learner: Learner,
    spec: Option<Spec>,
    detectors: Vec<Box<dyn Detector>>,
    incidents: Incidents,
    findings: Vec<Finding>,
    counters: DetectCounters,
    /// Detection starts with the first transaction at or after this time (the daemon's
    /// learning period); [`Timestamp::ZERO`] detects from the start.
    detect_from: Timestamp,
    /// A learning period to count from the first transaction (empty model).
    pending_period: Option<crate::common::Duration>,
    /// The last transaction's [`Prepared`], whose buffers the next one reuses.
    spent: Option<Prepared>,
}

impl DetectEngine {
    /// An engine that detects against `model` (learned earlier, or empty for a daemon that
    /// learns first) and, with `cfg.adapt`, goes on learning into it.
    pub fn new(
        model: Model,
        identity: IdentityExtractor,
        cfg: DetectConfig,
        env: DetectEnv,
    ) -> Result<DetectEngine, DetectError> {
        cfg.validate().map_err(DetectError::Config)?;
        let detectors = build_detectors(&cfg, &env, &model)?;
        let learner = Learner::new(model, identity, LearnConfig::default());
        Ok(DetectEngine {
            incidents: Incidents::new(&cfg.lifecycle).map_err(DetectError::Config)?,
            cfg,
            learner,
            spec: env.spec,
            detectors,
            findings: Vec::new(),
            counters: DetectCounters::default(),
            detect_from: Timestamp::ZERO,
            pending_period: None,
            spent: None,
        })
    }

    /// Learn only until `ts` (capture time), detect from then on.
    pub fn detect_from(&mut self, ts: Timestamp) {
        self.detect_from = ts;
    }

    /// A learning period for a model that has not yet learned `period` of traffic (the
    /// daemon's `learning_period_secs`): detection starts once the model spans `period`, counted
    /// from its first learned transaction, or from the first transaction seen now when it is
    /// empty. A model that already spans `period` detects at once.
    pub fn learn_first(&mut self, period: crate::common::Duration) {
        let m = self.learner.model();
        let learned = m.last_seen.saturating_since(m.first_seen);
        self.detect_from = if m.first_seen == Timestamp::ZERO {
            // Resolved at the first transaction (see `observe`).
            Timestamp::from_nanos(u64::MAX)
        } else if learned >= period {
            Timestamp::ZERO
        } else {
            m.first_seen.add(period)
        };
        self.pending_period = (m.first_seen == Timestamp::ZERO).then_some(period);
    }

    /// Replaces the OpenAPI spec (SIGHUP): its templates join the route learner's (templates
    /// already learned stay), and shadow and deprecated endpoints are judged against it from
    /// the next transaction. `None` judges without a spec.
    pub fn set_spec(&mut self, spec: Option<Spec>) {
        if let Some(s) = &spec {
            self.learner.add_spec_paths(s.paths());
        }
        self.spec = spec;
    }

    /// Whether detection has started (the learning period is over).
    pub fn detecting(&self, now: Timestamp) -> bool {
        now >= self.detect_from
    }

    pub fn counters(&self) -> &DetectCounters {
        &self.counters
    }

    pub fn incident_counters(&self) -> &incident::IncidentCounters {
        self.incidents.counters()
    }

    /// Incidents open now.
    pub fn open_incidents(&self) -> usize {
        self.incidents.open_count()
    }

    /// The model's metadata as learned so far (traffic span, counters); its profiles are held
    /// by the engine, see [`DetectEngine::snapshot_model`].
    pub fn model(&self) -> &Model {
        self.learner.model()
    }

    /// The baselines as adapted so far, leaving the engine running: a checkpoint.
    pub fn snapshot_model(&self) -> Model {
        self.learner.snapshot()
    }

    /// Every detector's own counters, flattened to (detector, counter, count) in detector
    /// order, plus the identity extractor's credential cache as detector `identity`: nested
    /// objects join their keys with `_`; values that are not counts (flags) are left out. The
    /// detector is named by [`Detector::name`] without any parenthesised note.
    pub fn detector_counters(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for d in &self.detectors {
            let name = d.name();
            let name = name.split(" (").next().unwrap_or(name);
            flatten_counts(name, "", &d.counter_values(), &mut out);
        }
        let cache = self.learner.identity().credential_cache_stats();
        for (counter, n) in [
            ("credential_cache_hits", cache.hits),
            ("credential_cache_misses", cache.misses),
            ("credential_cache_evictions", cache.evictions),
        ] {
            out.push(("identity", counter.to_owned(), n));
        }
        out
    }

    /// Names of the detectors in use.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// Analyses one transaction; alerts to send now are appended to `out`.
    pub fn observe(&mut self, tx: &Transaction, out: &mut Vec<Alert>) {
        self.counters.transactions = self.counters.transactions.saturating_add(1);
        let ts = tx.ts();
        if let Some(period) = self.pending_period.take() {
            self.detect_from = ts.add(period);
        }
        self.incidents.advance(ts, out);
        let spent = self.spent.take();
        let Some(prepared) = self.learner.prepare_reusing(tx, self.cfg.adapt, spent) else {
            return;
        };
        let Some(req) = tx.request.as_ref() else {
            return;
        };
        let detecting = ts >= self.detect_from;
        if detecting {
            self.counters.analysed = self.counters.analysed.saturating_add(1);
            self.run_detectors(tx, req, &prepared);
        }
        let raised = !self.findings.is_empty();
        let mut guarded = raised;
        for f in self.findings.drain(..) {
            self.counters.findings = self.counters.findings.saturating_add(1);
            self.incidents.submit(f, out);
        }
        if detecting && !guarded && self.incidents.open_count() > 0 {
            guarded = self
                .incidents
                .client_has_open(&client_key(&call_client(&prepared.identity)));
        }
        if self.cfg.adapt || !detecting {
            if guarded {
                self.counters.withheld_from_learning =
                    self.counters.withheld_from_learning.saturating_add(1);
            } else {
                let detail = !detecting || self.detail_due(&prepared);
                self.learner.learn_detail(tx, &prepared, detail);
                self.counters.learned = self.counters.learned.saturating_add(1);
            }
        }
        self.spent = Some(prepared);
    }

    /// Whether this call of an endpoint is learned in detail while detecting: every call of
    /// an endpoint with fewer than `adapt_full_calls` learned, then one in `adapt_detail_every`.
    fn detail_due(&self, prepared: &Prepared) -> bool {
        match self.learner.endpoint_of(prepared) {
            None => true,
            Some(p) => {
                p.calls < self.cfg.adapt_full_calls
                    || p.calls % self.cfg.adapt_detail_every.max(1) == 0
            }
        }
    }

    fn run_detectors(&mut self, tx: &Transaction, req: &Request, prepared: &Prepared) {
        let resp = tx.response.as_ref();
        let cx = Context {
            tx,
            req,
            resp,
            ts: tx.ts(),
            key: &prepared.key,
            endpoint_id: prepared.endpoint_id,
            endpoint: OnceCell::new(),
            client: OnceCell::new(),
            identity: &prepared.identity,
            object_ids: &prepared.object_ids,
            profile: self.learner.endpoint_of(prepared),
            caller: prepared
                .identity
                .subject
                .as_ref()
                .and_then(|s| self.learner.caller(s.as_str())),
            learner: &self.learner,
            spec: self.spec.as_ref(),
            complete: crate::daemon::analysis::is_complete(tx),
            bodies: Bodies::new(self.cfg.max_json_bytes),
            spec_op: OnceCell::new(),
        };
        for d in &mut self.detectors {
            d.observe(&cx, &mut self.findings);
        }
        let too_large = cx.bodies.too_large();
        self.counters.json_too_large = self.counters.json_too_large.saturating_add(too_large);
    }

    /// Closes every open incident (end of input); their final alerts go to `out`.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        self.incidents.close_all(out);
    }

    /// The baselines as adapted so far, for saving.
    pub fn into_model(self) -> Model {
        self.learner.finish()
    }
}

/// Appends the counts in `v` as (`detector`, name, count); see
/// [`DetectEngine::detector_counters`].
fn flatten_counts(
    detector: &'static str,
    prefix: &str,
    v: &Value,
    out: &mut Vec<(&'static str, String, u64)>,
) {
    match v {
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                out.push((detector, prefix.to_owned(), n));
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten_counts(detector, &name, v, out);
            }
        }
        _ => {}
    }
}

/// The alert client of a call: address, pseudonym and first role.
fn call_client(identity: &Identity) -> Client {
    Client {
        ip: Some(identity.client_ip),
        identity: identity.subject.as_ref().map(|s| s.as_str().to_owned()),
        role: identity.roles.first().cloned(),
    }
}

/// Parses a JSON body of at most `max` bytes; `None` when it is not JSON. Oversize JSON bodies
/// are counted, not parsed: a detector never pays for an unbounded parse.
fn parse_json(
    body: &Body,
    headers: &crate::transaction::Headers,
    max: usize,
    too_large: &mut u64,
) -> Option<Value> {
    let data = body.data.as_slice();
    let first = data.iter().find(|b| !b.is_ascii_whitespace())?;
    // Compared in place: lower-casing a copy of the header cost an allocation per body.
    let declared = headers
        .get("content-type")
        .is_some_and(|ct| ct.windows(4).any(|w| w.eq_ignore_ascii_case(b"json")));
    if !declared && *first != b'{' && *first != b'[' {
        return None;
    }
    if data.len() > max {
        *too_large += 1;
        return None;
    }
    serde_json::from_slice(data).ok()
}

/// The detectors the configuration enables, in a fixed order (findings, hence alerts, come
/// out in this order for one transaction): signatures (per request), behaviour (per client
/// over time), baseline deviations, then the learned models.
fn build_detectors(
    cfg: &DetectConfig,
    env: &DetectEnv,
    _model: &Model,
) -> Result<Vec<Box<dyn Detector>>, DetectError> {
    let mut detectors: Vec<Box<dyn Detector>> = vec![Box::new(
        signatures::SignatureDetector::new(&cfg.signatures).map_err(DetectError::Config)?,
    )];
    detectors.extend(behaviour::detectors(&cfg.behaviour, env)?);
    detectors.extend(baseline::detectors(&cfg.baseline));
    if let Some(t) = env.trained.as_ref().filter(|_| cfg.learned.enabled) {
        detectors.push(Box::new(learned::LearnedDetector::new(&cfg.learned, t)));
    }
    Ok(detectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityConfig;
    use crate::inventory::template::{RouteConfig, RouteLearner};
    use crate::transaction::{ConnInfo, Headers, HttpVersion};
    use std::net::IpAddr;

    const KEY: &[u8] = b"detect-test-key-0123456789abcdef";

    /// A GET of `path` at second `sec` by bearer token `caller` from `10.0.0.<ip>`.
    fn call(path: &str, caller: &str, ip: u8, sec: u64) -> Transaction {
        let start = Timestamp::from_nanos(1_700_000_000_000_000_000 + sec * 1_000_000_000);
        let mut headers = Headers::new();
        headers.push(b"Host", b"api.example");
        headers.push(b"Authorization", format!("Bearer {caller}").as_bytes());
        let conn = ConnInfo {
            client: IpAddr::from([10, 0, 0, ip]),
            ..ConnInfo::default()
        };
        Transaction {
            conn,
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

    /// Flags every request whose path contains `evil`.
    struct Evil;

    impl Detector for Evil {
        fn name(&self) -> &'static str {
            "evil"
        }
        fn counter_values(&self) -> Value {
            Value::Null
        }
        fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
            if cx.req.uri.contains("evil") {
                out.push(
                    Finding::new(AlertKind::Injection, cx)
                        .summary("evil path")
                        .with("path", cx.req.uri.clone()),
                );
            }
        }
    }

    fn engine(model: Model, cfg: DetectConfig) -> DetectEngine {
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let mut e = DetectEngine::new(model, identity, cfg, DetectEnv::default()).unwrap();
        // The engine's own behaviour is under test here, with one predictable detector.
        e.detectors.clear();
        e.detectors.push(Box::new(Evil));
        e
    }

    /// An engine with every default detector, on an empty model.
    fn full_engine() -> DetectEngine {
        let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        DetectEngine::new(
            empty_model(),
            identity,
            DetectConfig::default(),
            DetectEnv::default(),
        )
        .unwrap()
    }

    fn empty_model() -> Model {
        Model::new("s", "k", RouteLearner::new(RouteConfig::default()))
    }

    fn run(e: &mut DetectEngine, txs: &[Transaction]) -> Vec<Alert> {
        let mut out = Vec::new();
        for t in txs {
            e.observe(t, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn traffic_that_raised_a_finding_or_comes_from_an_open_incident_is_not_learned() {
        let mut e = engine(empty_model(), DetectConfig::default());
        let txs = vec![
            call("/v1/items", "alice", 1, 0),
            call("/v1/evil", "mallory", 2, 1),
            // Mallory's ordinary call while her incident is open: withheld too.
            call("/v1/items", "mallory", 2, 2),
            call("/v1/items", "bob", 3, 3),
        ];
        let alerts = run(&mut e, &txs);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, AlertKind::Injection);
        let c = e.counters().clone();
        assert_eq!((c.learned, c.withheld_from_learning), (2, 2));
        let model = e.into_model();
        assert!(model
            .endpoints
            .iter()
            .all(|(k, _)| !k.template.contains("evil")));
        assert_eq!(model.callers.len(), 2, "alice and bob, not mallory");
    }

    #[test]
    fn without_adapt_nothing_is_learned_while_detecting() {
        let cfg = DetectConfig {
            adapt: false,
            ..DetectConfig::default()
        };
        let mut e = engine(empty_model(), cfg);
        run(&mut e, &[call("/v1/items", "alice", 1, 0)]);
        assert_eq!(e.counters().learned, 0);
        assert!(e.into_model().endpoints.is_empty());
    }

    #[test]
    fn an_empty_model_learns_for_the_period_then_detects() {
        let mut e = engine(empty_model(), DetectConfig::default());
        e.learn_first(crate::common::Duration::from_secs(60));
        let txs = vec![
            call("/v1/evil", "mallory", 2, 0),
            call("/v1/evil", "mallory", 2, 59),
            call("/v1/evil", "mallory", 2, 60),
        ];
        let alerts = run(&mut e, &txs);
        assert_eq!(e.counters().analysed, 1);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].first_seen, txs[2].ts());
    }

    #[test]
    fn a_model_that_spans_the_period_detects_at_once() {
        let mut e = engine(empty_model(), DetectConfig::default());
        e.learn_first(crate::common::Duration::from_secs(0));
        run(
            &mut e,
            &[call("/v1/items", "a", 1, 0), call("/v1/items", "a", 1, 30)],
        );
        let model = e.into_model();
        let mut e = engine(model, DetectConfig::default());
        e.learn_first(crate::common::Duration::from_secs(30));
        assert!(e.detecting(Timestamp::ZERO.add(crate::common::Duration::from_secs(1))));
    }

    #[test]
    fn detector_counters_name_every_detector_and_count_what_it_saw() {
        let mut e = full_engine();
        let txs: Vec<Transaction> = (0..5)
            .map(|i| call("/v1/items?q=1", "alice", 1, i))
            .collect();
        run(&mut e, &txs);
        let c = e.detector_counters();
        let get = |d: &str, k: &str| {
            c.iter()
                .find(|(dd, kk, _)| *dd == d && kk == k)
                .map(|(_, _, n)| *n)
        };
        // Each call carried a bearer token to a server the config does not list as TLS-fronted.
        assert_eq!(
            get("signatures", "cleartext_unconfigured"),
            Some(5),
            "{c:?}"
        );
        assert_eq!(get("identity", "credential_cache_misses"), Some(1), "{c:?}");
        assert_eq!(get("identity", "credential_cache_hits"), Some(4), "{c:?}");
        // The geoip-less travel detector is named without its note; flags are not counts.
        assert!(get("impossible_travel", "lookups").is_some(), "{c:?}");
        assert!(get("impossible_travel", "database_loaded").is_none());
        let names: std::collections::BTreeSet<&str> = c.iter().map(|(d, _, _)| *d).collect();
        for d in &e.detectors {
            let name = d.name().split(" (").next().unwrap();
            assert!(names.contains(name), "{name} exports no counter: {names:?}");
        }
        assert!(names.iter().all(|n| !n.contains(' ')), "{names:?}");
    }

    #[test]
    fn findings_carry_the_call_endpoint_client_and_sample() {
        let mut e = engine(empty_model(), DetectConfig::default());
        let t = call("/v1/evil", "mallory", 9, 5);
        let alerts = run(&mut e, std::slice::from_ref(&t));
        let a = &alerts[0];
        assert_eq!(a.endpoint.host, "api.example");
        assert_eq!(a.endpoint.method, "GET");
        assert_eq!(a.client.ip, Some(IpAddr::from([10, 0, 0, 9])));
        assert!(a
            .client
            .identity
            .as_deref()
            .is_some_and(|s| s.starts_with("t:")));
        assert_eq!(a.evidence["samples"][0], format!("{}#1", t.conn.flow_id));
        assert_eq!(a.capture_quality, 1.0);
        a.validate().unwrap();
    }

    #[test]
    fn a_spec_set_while_running_judges_the_next_transactions() {
        let mut e = full_engine();
        let deprecated = |alerts: &[Alert]| {
            alerts
                .iter()
                .filter(|a| a.kind == AlertKind::DeprecatedEndpoint)
                .count()
        };
        let mut out = Vec::new();
        e.observe(&call("/v0/items/7", "alice", 1, 0), &mut out);
        assert_eq!(deprecated(&out), 0, "no spec, nothing is deprecated");
        let spec = Spec::parse(
            "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /v0/items/{id}:\n    get:\n      deprecated: true\n      responses: {'200': {description: ok}}\n",
            "spec.yaml",
        )
        .unwrap();
        e.set_spec(Some(spec));
        e.observe(&call("/v0/items/8", "alice", 1, 1), &mut out);
        e.finish(&mut out);
        assert_eq!(deprecated(&out), 1, "{out:#?}");
        let a = out
            .iter()
            .find(|a| a.kind == AlertKind::DeprecatedEndpoint)
            .unwrap();
        assert_eq!(
            a.endpoint.route, "/v0/items/{id}",
            "the spec's template names it"
        );
    }
}

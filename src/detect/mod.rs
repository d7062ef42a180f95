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
pub mod config;
pub mod incident;

use crate::alert::{Alert, AlertKind, Client, Endpoint, Severity};
use crate::baseline::caller::CallerProfile;
use crate::baseline::profile::{EndpointKey, EndpointProfile};
use crate::common::Timestamp;
use crate::identity::{Identity, IdentityExtractor};
use crate::inventory::spec::Spec;
use crate::model::learn::{LearnConfig, Learner, Prepared};
use crate::model::Model;
use crate::transaction::{Body, Request, Response, Transaction};
use serde_json::{Map, Value};

pub use config::DetectConfig;
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
            endpoint: cx.endpoint.clone(),
            client: cx.client.clone(),
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
    /// `host`, `method`, `route` of the alert record for this call.
    pub endpoint: Endpoint,
    /// `ip`, `identity`, `role` of the alert record for this call.
    pub client: Client,
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
    /// The request body as JSON, when it is JSON and within `max_json_bytes`.
    pub request_json: Option<&'a Value>,
    /// The response body as JSON, when it is JSON and within `max_json_bytes`.
    pub response_json: Option<&'a Value>,
    /// Request and response seen whole, without gaps.
    pub complete: bool,
}

impl Context<'_> {
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
        client_key(&self.client)
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
        })
    }

    /// Learn only until `ts` (capture time), detect from then on.
    pub fn detect_from(&mut self, ts: Timestamp) {
        self.detect_from = ts;
    }

    pub fn counters(&self) -> &DetectCounters {
        &self.counters
    }

    pub fn incident_counters(&self) -> &incident::IncidentCounters {
        self.incidents.counters()
    }

    /// Names of the detectors in use.
    pub fn detector_names(&self) -> Vec<&'static str> {
        self.detectors.iter().map(|d| d.name()).collect()
    }

    /// Analyses one transaction; alerts to send now are appended to `out`.
    pub fn observe(&mut self, tx: &Transaction, out: &mut Vec<Alert>) {
        self.counters.transactions = self.counters.transactions.saturating_add(1);
        let ts = tx.ts();
        self.incidents.advance(ts, out);
        let Some(prepared) = self.learner.prepare(tx, self.cfg.adapt) else {
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
        let client = call_client(&prepared.identity);
        let mut guarded = raised;
        for f in self.findings.drain(..) {
            self.counters.findings = self.counters.findings.saturating_add(1);
            self.incidents.submit(f, out);
        }
        if detecting && !guarded {
            guarded = self.incidents.client_has_open(&client_key(&client));
        }
        if self.cfg.adapt || !detecting {
            if guarded {
                self.counters.withheld_from_learning =
                    self.counters.withheld_from_learning.saturating_add(1);
            } else {
                self.learner.learn(tx, &prepared);
                self.counters.learned = self.counters.learned.saturating_add(1);
            }
        }
    }

    fn run_detectors(&mut self, tx: &Transaction, req: &Request, prepared: &Prepared) {
        let max = self.cfg.max_json_bytes;
        let mut too_large = 0u64;
        let request_json = parse_json(&req.body, &req.headers, max, &mut too_large);
        let resp = tx.response.as_ref();
        let response_json = resp.and_then(|r| parse_json(&r.body, &r.headers, max, &mut too_large));
        self.counters.json_too_large = self.counters.json_too_large.saturating_add(too_large);
        let client = call_client(&prepared.identity);
        let cx = Context {
            tx,
            req,
            resp,
            ts: tx.ts(),
            key: &prepared.key,
            endpoint: Endpoint {
                host: prepared.key.host.clone(),
                method: prepared.key.method.clone(),
                route: prepared.key.template.clone(),
            },
            client,
            identity: &prepared.identity,
            object_ids: &prepared.object_ids,
            profile: self.learner.endpoint(&prepared.key),
            caller: prepared
                .identity
                .subject
                .as_ref()
                .and_then(|s| self.learner.caller(s.as_str())),
            learner: &self.learner,
            spec: self.spec.as_ref(),
            request_json: request_json.as_ref(),
            response_json: response_json.as_ref(),
            complete: crate::daemon::analysis::is_complete(tx),
        };
        for d in &mut self.detectors {
            d.observe(&cx, &mut self.findings);
        }
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
    let declared = headers
        .get("content-type")
        .is_some_and(|ct| memchr::memmem::find(&ct.to_ascii_lowercase(), b"json").is_some());
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
/// out in this order for one transaction).
fn build_detectors(
    cfg: &DetectConfig,
    _env: &DetectEnv,
    _model: &Model,
) -> Result<Vec<Box<dyn Detector>>, DetectError> {
    let mut detectors: Vec<Box<dyn Detector>> = Vec::new();
    detectors.extend(baseline::detectors(&cfg.baseline));
    Ok(detectors)
}

//! Alert records and their delivery: the contract between detectors and everything downstream.
//!
//! An [`Alert`] is the one record every sink writes and every consumer reads. Its JSON field
//! names are fixed (`id`, `ts`, `kind`, `owasp`, `severity`, `confidence`, `summary`,
//! `endpoint`, `client`, `evidence`, `first_seen`, `last_seen`, `count`, `capture_quality`);
//! times are RFC 3339 in UTC and always *capture* time, never the wall clock of the sensor.
//!
//! Invariants:
//! - `id` is a pure function of kind, endpoint, client (ip and identity) and `first_seen`
//!   ([`Alert::derive_id`]), so replaying the same capture yields the same ids, and a record
//!   re-sent after a crash carries the id it had the first time.
//! - `owasp` is fixed by `kind` ([`AlertKind::owasp`]); the table lives here and nowhere else.
//! - `evidence` is a JSON object with no raw secrets: credentials appear only as pseudonyms or
//!   redacted shapes. [`Alert::validate`] rejects the obvious leaks (bearer/basic credentials,
//!   JWTs) as a backstop, not as the primary control.
//!
//! # Delivery contract (alert README)
//!
//! [`AlertPipeline`] fans each submitted alert out to every configured sink (JSON Lines file,
//! stdout, webhook, Alertmanager). Submission never blocks the detector: each sink has a bounded
//! queue and, when it is full, the *newest* alert is dropped and counted (`queue_drops`), because
//! blocking would stall packet processing and the older alerts are already on their way.
//!
//! Network sinks put every accepted alert in a durable [`spool`] on local disk before trying to
//! deliver it, and remove it only after the receiver acknowledged it with a 2xx status. Delivery
//! is therefore **at least once**: a crash between the receiver's 2xx and our acknowledgement,
//! or a timeout after the receiver already processed a batch, sends the same alert again.
//! **Consumers must deduplicate by `id`.** Alertmanager does so by itself, because the id is one
//! of the labels it fingerprints.
//!
//! The spool is bounded (`max_spool_bytes`). When a receiver stays down long enough to fill it,
//! the *oldest* undelivered alerts are dropped (whole segments at a time), counted
//! (`spool_drops`) and logged: during a long outage the most recent alerts describe the attack
//! that is still going on, and an operator who restores the receiver wants those first.
//!
//! A receiver that refuses an alert's *content* (400, 413, 422) gets smaller and smaller
//! batches until the offending alert is alone; that one alert is dropped and counted
//! (`rejected`). Every other failure, 401/403/404 included, is retried with backoff for as long
//! as the alert is spooled, because those are mistakes an operator can fix without losing data.
//! One spool directory belongs to one running apitap: two processes over the same
//! `spool_dir` would corrupt each other's acknowledgements.

pub mod config;
pub mod pipeline;
pub mod sink;
pub mod spool;
pub mod time;

#[cfg(test)]
mod sink_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::common::Timestamp;

pub use config::SinksConfig;
pub use pipeline::{AlertPipeline, ShutdownReport, SubmitError};
pub use sink::{SinkCounters, SinkKind, SinkStats};

/// What a detector saw. The snake_case names are part of the JSON contract.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A client reached objects that belong to other identities (broken object level authz).
    Bola,
    /// Many failed logins against one account or from one client.
    AuthBruteforce,
    /// One identity used from places too far apart for the time between them.
    ImpossibleTravel,
    /// A client wrote properties it should not control (role, owner, price).
    MassAssignment,
    /// Responses carry far more records or properties than the endpoint usually returns.
    ExcessiveData,
    /// Responses expose sensitive data classes (PII, card numbers, keys).
    SensitiveData,
    /// Request volume far above the learned baseline for a client or endpoint.
    VolumeSpike,
    /// GraphQL queries that are too deep, too wide, batched or introspecting.
    GraphqlAbuse,
    /// A client called functions reserved for another role (broken function level authz).
    Bfla,
    /// Request parameters carry SQL, command, template or similar injection payloads.
    Injection,
    /// Parameters whose type, shape or size departs from the learned baseline.
    ParameterAnomaly,
    /// Traffic to an endpoint that is not in the documented or learned inventory.
    ShadowEndpoint,
    /// Traffic to an endpoint marked deprecated or superseded by a newer version.
    DeprecatedEndpoint,
    /// Credentials, tokens or keys in the URL, where proxies and logs keep them.
    SecretInUrl,
    /// Credentials sent over a connection without TLS.
    CleartextCredentials,
    /// Error responses far above the learned baseline.
    ErrorSpike,
    /// One client walking many routes or ids, typical of enumeration and scanning.
    ReconScan,
    /// HTTP that violates the protocol in ways used for smuggling or evasion.
    ProtocolAnomaly,
}

impl AlertKind {
    /// Every kind, in declaration order.
    pub const ALL: [AlertKind; 18] = [
        AlertKind::Bola,
        AlertKind::AuthBruteforce,
        AlertKind::ImpossibleTravel,
        AlertKind::MassAssignment,
        AlertKind::ExcessiveData,
        AlertKind::SensitiveData,
        AlertKind::VolumeSpike,
        AlertKind::GraphqlAbuse,
        AlertKind::Bfla,
        AlertKind::Injection,
        AlertKind::ParameterAnomaly,
        AlertKind::ShadowEndpoint,
        AlertKind::DeprecatedEndpoint,
        AlertKind::SecretInUrl,
        AlertKind::CleartextCredentials,
        AlertKind::ErrorSpike,
        AlertKind::ReconScan,
        AlertKind::ProtocolAnomaly,
    ];

    /// The snake_case name used in JSON and as the Alertmanager `kind` label.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Bola => "bola",
            AlertKind::AuthBruteforce => "auth_bruteforce",
            AlertKind::ImpossibleTravel => "impossible_travel",
            AlertKind::MassAssignment => "mass_assignment",
            AlertKind::ExcessiveData => "excessive_data",
            AlertKind::SensitiveData => "sensitive_data",
            AlertKind::VolumeSpike => "volume_spike",
            AlertKind::GraphqlAbuse => "graphql_abuse",
            AlertKind::Bfla => "bfla",
            AlertKind::Injection => "injection",
            AlertKind::ParameterAnomaly => "parameter_anomaly",
            AlertKind::ShadowEndpoint => "shadow_endpoint",
            AlertKind::DeprecatedEndpoint => "deprecated_endpoint",
            AlertKind::SecretInUrl => "secret_in_url",
            AlertKind::CleartextCredentials => "cleartext_credentials",
            AlertKind::ErrorSpike => "error_spike",
            AlertKind::ReconScan => "recon_scan",
            AlertKind::ProtocolAnomaly => "protocol_anomaly",
        }
    }

    /// The OWASP API Security Top 10 (2023) category, or `None` where no 2023 category fits.
    ///
    /// The choices that need a reason:
    /// - `impossible_travel`, `secret_in_url` and `cleartext_credentials` are API2 (broken
    ///   authentication): API2:2023 names tokens in URLs and unprotected credentials outright.
    /// - `sensitive_data` and `excessive_data` are API3, which in 2023 absorbed "excessive data
    ///   exposure"; `mass_assignment` is API3 for the same property-level reason.
    /// - `volume_spike` and `graphql_abuse` are API4 (unrestricted resource consumption).
    /// - `injection` has no 2023 category (it was API8:2019), and `parameter_anomaly`,
    ///   `error_spike`, `recon_scan` and `protocol_anomaly` are symptoms, not weaknesses: saying
    ///   `null` is more honest than a guess a SOC would route on.
    pub fn owasp(self) -> Option<Owasp> {
        match self {
            AlertKind::Bola => Some(Owasp::Api1),
            AlertKind::AuthBruteforce
            | AlertKind::ImpossibleTravel
            | AlertKind::SecretInUrl
            | AlertKind::CleartextCredentials => Some(Owasp::Api2),
            AlertKind::MassAssignment | AlertKind::ExcessiveData | AlertKind::SensitiveData => {
                Some(Owasp::Api3)
            }
            AlertKind::VolumeSpike | AlertKind::GraphqlAbuse => Some(Owasp::Api4),
            AlertKind::Bfla => Some(Owasp::Api5),
            AlertKind::ShadowEndpoint | AlertKind::DeprecatedEndpoint => Some(Owasp::Api9),
            AlertKind::Injection
            | AlertKind::ParameterAnomaly
            | AlertKind::ErrorSpike
            | AlertKind::ReconScan
            | AlertKind::ProtocolAnomaly => None,
        }
    }
}

impl fmt::Display for AlertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An OWASP API Security Top 10 (2023) category; serialised as `API<n>:2023`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Owasp {
    /// Broken Object Level Authorization.
    #[serde(rename = "API1:2023")]
    Api1,
    /// Broken Authentication.
    #[serde(rename = "API2:2023")]
    Api2,
    /// Broken Object Property Level Authorization.
    #[serde(rename = "API3:2023")]
    Api3,
    /// Unrestricted Resource Consumption.
    #[serde(rename = "API4:2023")]
    Api4,
    /// Broken Function Level Authorization.
    #[serde(rename = "API5:2023")]
    Api5,
    /// Unrestricted Access to Sensitive Business Flows.
    #[serde(rename = "API6:2023")]
    Api6,
    /// Server Side Request Forgery.
    #[serde(rename = "API7:2023")]
    Api7,
    /// Security Misconfiguration.
    #[serde(rename = "API8:2023")]
    Api8,
    /// Improper Inventory Management.
    #[serde(rename = "API9:2023")]
    Api9,
    /// Unsafe Consumption of APIs.
    #[serde(rename = "API10:2023")]
    Api10,
}

impl Owasp {
    /// The category as written in the JSON record and the Alertmanager label.
    pub fn name(self) -> &'static str {
        match self {
            Owasp::Api1 => "API1:2023",
            Owasp::Api2 => "API2:2023",
            Owasp::Api3 => "API3:2023",
            Owasp::Api4 => "API4:2023",
            Owasp::Api5 => "API5:2023",
            Owasp::Api6 => "API6:2023",
            Owasp::Api7 => "API7:2023",
            Owasp::Api8 => "API8:2023",
            Owasp::Api9 => "API9:2023",
            Owasp::Api10 => "API10:2023",
        }
    }
}

/// How bad it is if the alert is true.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look during routine review.
    Low,
    /// Worth a look today.
    Medium,
    /// Worth waking someone for if confidence is high.
    High,
    /// Active abuse with direct impact.
    Critical,
}

impl Severity {
    /// The snake_case name used in JSON and as the Alertmanager `severity` label.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The API operation an alert is about. `route` is the inventory template (`/users/{id}`),
/// never a raw path, so alerts group by operation and carry no object ids.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub method: String,
    pub route: String,
}

/// Who did it. `ip` is the client address (after trusted forwarding headers), `null` for an
/// alert about an endpoint as a whole (an error spike, distributed credential stuffing);
/// `identity` is a keyed pseudonym from the identity stage, never a raw credential; `role` is
/// the role the caller's token claimed, if any.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub identity: Option<String>,
    pub role: Option<String>,
}

/// One alert: the record every sink writes. See the module documentation for the contract.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: 32 lowercase hex digits from [`Alert::derive_id`]. Consumers dedupe on it.
    pub id: String,
    /// Capture time at which the alert was raised.
    #[serde(with = "time::rfc3339")]
    pub ts: Timestamp,
    pub kind: AlertKind,
    /// Fixed by `kind`; see [`AlertKind::owasp`].
    pub owasp: Option<Owasp>,
    pub severity: Severity,
    /// Detector confidence that the alert is true, in `0..=1`.
    pub confidence: f64,
    /// One human sentence.
    pub summary: String,
    pub endpoint: Endpoint,
    pub client: Client,
    /// Kind-specific facts as a JSON object; no raw secrets.
    pub evidence: Map<String, Value>,
    /// Capture time of the first transaction that contributed.
    #[serde(with = "time::rfc3339")]
    pub first_seen: Timestamp,
    /// Capture time of the last transaction that contributed.
    #[serde(with = "time::rfc3339")]
    pub last_seen: Timestamp,
    /// Transactions (or events) aggregated into this alert; at least 1.
    pub count: u64,
    /// Share of the folded transactions that were complete (request and response seen whole,
    /// no reassembly gap), in `0..=1`: below 1, conclusions drawn from an absence (no
    /// response, a missing field) may be wrong.
    pub capture_quality: f64,
}

/// Why [`Alert::validate`] refused a record. Each names the field at fault.
#[derive(Clone, PartialEq, Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{field}: must not be empty")]
    Empty { field: &'static str },
    #[error("confidence: {value}: must be a number between 0 and 1")]
    Confidence { value: f64 },
    #[error("capture_quality: {value}: must be a share between 0 and 1")]
    CaptureQuality { value: f64 },
    #[error("count: must be at least 1")]
    ZeroCount,
    #[error("first_seen: {first_seen}: must not be later than last_seen {last_seen}")]
    SeenOrder {
        first_seen: Timestamp,
        last_seen: Timestamp,
    },
    #[error("ts: {ts}: must not be earlier than first_seen {first_seen}")]
    TsBeforeFirstSeen {
        ts: Timestamp,
        first_seen: Timestamp,
    },
    #[error("owasp: {}: kind {kind} maps to {}", owasp_text(*found), owasp_text(*expected))]
    Owasp {
        kind: AlertKind,
        found: Option<Owasp>,
        expected: Option<Owasp>,
    },
    #[error(
        "id: {found}: does not match kind, endpoint, client and first_seen (expected {expected})"
    )]
    Id { found: String, expected: String },
    #[error("evidence.{path}: looks like a raw credential; redact it or use a pseudonym")]
    SecretInEvidence { path: String },
    #[error("evidence: nested deeper than {MAX_EVIDENCE_DEPTH} levels")]
    EvidenceTooDeep,
}

fn owasp_text(o: Option<Owasp>) -> &'static str {
    o.map_or("null", Owasp::name)
}

/// Evidence deeper than this is refused: consumers (and our own secret scan) recurse over it.
pub const MAX_EVIDENCE_DEPTH: usize = 16;

/// Domain separation for alert ids, with a version so a future change of the id scheme cannot
/// collide with ids already in consumers' stores.
const ID_DOMAIN: &[u8] = b"apitap alert id v1";

impl Alert {
    /// A new alert with its id derived, `ts` and `last_seen` at `first_seen`, count 1, medium
    /// severity, full confidence, full capture quality and empty evidence and summary.
    /// Detectors set the remaining public fields; [`Alert::validate`] checks the result.
    pub fn new(
        kind: AlertKind,
        endpoint: Endpoint,
        client: Client,
        first_seen: Timestamp,
    ) -> Alert {
        let id = Alert::derive_id(kind, &endpoint, &client, first_seen);
        Alert {
            id,
            ts: first_seen,
            kind,
            owasp: kind.owasp(),
            severity: Severity::Medium,
            confidence: 1.0,
            summary: String::new(),
            endpoint,
            client,
            evidence: Map::new(),
            first_seen,
            last_seen: first_seen,
            count: 1,
            capture_quality: 1.0,
        }
    }

    /// The stable id: the first 128 bits of SHA-256 over a length-prefixed encoding of kind,
    /// host, method, route, client ip, client identity and `first_seen` (nanoseconds).
    ///
    /// Length prefixes make the encoding injective, so no two different inputs share a
    /// preimage. The client's role is left out on purpose: it is a learned label that can change
    /// while the baseline matures, and the same event must keep the same id.
    pub fn derive_id(
        kind: AlertKind,
        endpoint: &Endpoint,
        client: &Client,
        first_seen: Timestamp,
    ) -> String {
        let mut h = Sha256::new();
        let ip = client.ip.map(|ip| ip.to_string()).unwrap_or_default();
        let identity = client.identity.as_deref().unwrap_or("");
        for part in [
            ID_DOMAIN,
            kind.name().as_bytes(),
            endpoint.host.as_bytes(),
            endpoint.method.as_bytes(),
            endpoint.route.as_bytes(),
            ip.as_bytes(),
            identity.as_bytes(),
            &first_seen.as_nanos().to_be_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        hex(digest.get(..16).unwrap_or(&[]))
    }

    /// Checks the record against the contract: non-empty text fields, confidence in `0..=1`,
    /// count at least 1, `first_seen <= last_seen`, `first_seen <= ts`, `owasp` as the kind
    /// dictates, `id` as derived, and no credential-shaped strings in `evidence`.
    pub fn validate(&self) -> Result<(), AlertError> {
        for (field, value) in [
            ("summary", &self.summary),
            ("endpoint.host", &self.endpoint.host),
            ("endpoint.method", &self.endpoint.method),
            ("endpoint.route", &self.endpoint.route),
        ] {
            if value.trim().is_empty() {
                return Err(AlertError::Empty { field });
            }
        }
        if matches!(&self.client.identity, Some(s) if s.is_empty()) {
            return Err(AlertError::Empty {
                field: "client.identity",
            });
        }
        if matches!(&self.client.role, Some(s) if s.is_empty()) {
            return Err(AlertError::Empty {
                field: "client.role",
            });
        }
        if !(self.confidence.is_finite() && (0.0..=1.0).contains(&self.confidence)) {
            return Err(AlertError::Confidence {
                value: self.confidence,
            });
        }
        if !(self.capture_quality.is_finite() && (0.0..=1.0).contains(&self.capture_quality)) {
            return Err(AlertError::CaptureQuality {
                value: self.capture_quality,
            });
        }
        if self.count == 0 {
            return Err(AlertError::ZeroCount);
        }
        if self.first_seen > self.last_seen {
            return Err(AlertError::SeenOrder {
                first_seen: self.first_seen,
                last_seen: self.last_seen,
            });
        }
        if self.ts < self.first_seen {
            return Err(AlertError::TsBeforeFirstSeen {
                ts: self.ts,
                first_seen: self.first_seen,
            });
        }
        if self.owasp != self.kind.owasp() {
            return Err(AlertError::Owasp {
                kind: self.kind,
                found: self.owasp,
                expected: self.kind.owasp(),
            });
        }
        let expected = Alert::derive_id(self.kind, &self.endpoint, &self.client, self.first_seen);
        if self.id != expected {
            return Err(AlertError::Id {
                found: self.id.clone(),
                expected,
            });
        }
        let mut path = String::new();
        for (key, value) in &self.evidence {
            path.clear();
            path.push_str(key);
            scan_evidence(value, &mut path, 1)?;
        }
        Ok(())
    }
}

/// Walks evidence looking for strings shaped like credentials. `path` is the dotted location,
/// kept so the error tells the detector author where the leak is.
fn scan_evidence(value: &Value, path: &mut String, depth: usize) -> Result<(), AlertError> {
    if depth > MAX_EVIDENCE_DEPTH {
        return Err(AlertError::EvidenceTooDeep);
    }
    match value {
        Value::String(s) => {
            if looks_like_credential(s) {
                return Err(AlertError::SecretInEvidence { path: path.clone() });
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                scan_evidence(item, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                scan_evidence(item, path, depth + 1)?;
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Authorization header values (`Bearer <token>`, `Basic <token>`) and JWTs (`eyJ….….…`).
/// Deliberately narrow: a broad entropy test would refuse legitimate evidence such as hashes and
/// ids, and prose like "basic auth over cleartext" must pass.
fn looks_like_credential(s: &str) -> bool {
    let t = s.trim();
    for scheme in ["bearer ", "basic "] {
        let Some(rest) = t
            .get(..scheme.len())
            .filter(|p| p.eq_ignore_ascii_case(scheme))
            .and_then(|_| t.get(scheme.len()..))
        else {
            continue;
        };
        // RFC 7235 token68: one word of base64-ish characters.
        let rest = rest.trim();
        if rest.len() >= 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        {
            return true;
        }
    }
    // A JWT's header is base64url JSON, so it starts with `eyJ` (`{"`); three non-empty
    // base64url segments.
    t.split(|c: char| c.is_whitespace() || c == '"' || c == '=' || c == '&')
        .any(|word| {
            let mut parts = word.split('.');
            let (Some(h), Some(p), Some(sig), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return false;
            };
            h.starts_with("eyJ")
                && [h, p, sig].iter().all(|seg| {
                    seg.len() >= 4
                        && seg
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        })
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

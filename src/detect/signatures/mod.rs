//! Signature detectors: what one transaction shows by itself, without a statistical baseline.
//!
//! One [`SignatureDetector`] raises five kinds, because they read the same bytes and the
//! request should be decoded and walked once, not five times:
//! - `injection`: SQL, NoSQL, OS command, path traversal, template and script payloads in
//!   path segments, query values, user-data headers, form fields and JSON keys and strings
//!   (classifiers in [`injection`]);
//! - `secret_in_url`: API keys, tokens, passwords and JWTs in the query string or path;
//! - `sensitive_data`: a response carrying a sensitive kind (cards, SSNs, keys, credentials,
//!   password hashes) that the endpoint's learned responses never carried;
//! - `cleartext_credentials`: credentials sent in plaintext to a server that is not a
//!   configured TLS-terminated upstream;
//! - `protocol_anomaly`: smuggling and evasion shapes named in `Transaction::flags`.
//!
//! Invariants:
//! - Verdicts do not depend on earlier transactions: nothing grows with traffic, so no
//!   per-client caps are needed; the limits bound the work done on one transaction (bytes per
//!   value, JSON values and depth), each with a counter of what was skipped. The one state
//!   kept across transactions is a fixed-size memo of digests of values judged clean
//!   ([`memo`]), which changes the cost of a verdict, never the verdict.
//! - No raw secret leaves this module: credentials appear as their kind, the caller's
//!   pseudonym and a masked form (`sk_l…(32 chars)`); injection excerpts from fields named like
//!   passwords, and from cookies, are masked too.
//! - Allocation happens only on a hit (evidence) or for scratch buffers the detector keeps and
//!   reuses; a clean transaction costs one automaton pass per value, plus a digest and a memo
//!   lookup for the values the prefilter lets through.

pub mod injection;
mod memo;

use super::config::Problems;
use super::{Context, Detector, Finding};
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::EndpointProfile;
use crate::inventory::sensitive::{
    classify, classify_wanted, is_aws_secret_key_name, is_aws_secret_value, is_password_key,
    KindSet, SensitiveCounts, SensitiveKind,
};
use injection::{Hit, InjectionClass};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::LazyLock;

/// Settings of the signature detectors (`[detect.signatures]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignatureConfig {
    /// Raise `injection` for attack payloads in request paths, query values, headers and bodies.
    pub injection: bool,
    /// Raise `secret_in_url` for keys, tokens and passwords in the query string or path.
    pub secret_in_url: bool,
    /// Raise `sensitive_data` for responses carrying a sensitive kind new to their endpoint.
    pub sensitive_data: bool,
    /// Raise `cleartext_credentials` for credentials sent to servers outside
    /// `tls_terminated_servers`.
    pub cleartext_credentials: bool,
    /// Raise `protocol_anomaly` for smuggling and evasion shapes.
    pub protocol_anomaly: bool,
    /// Bytes of one value (query value, header, JSON string) inspected for injection; longer
    /// values are inspected on their first bytes only (counted in `values_truncated`).
    pub max_value_bytes: usize,
    /// Percent-decoding rounds applied before inspection; a second round catches
    /// double-encoded payloads (`%252e%252e%252f`).
    pub max_decode_rounds: usize,
    /// JSON keys and strings inspected per request body; the rest are skipped (counted in
    /// `json_values_skipped`).
    pub max_json_values: usize,
    /// JSON nesting levels walked; deeper subtrees are skipped (counted in
    /// `json_depth_skipped`).
    pub max_json_depth: usize,
    /// Matches listed in one finding's evidence; further ones are only counted there.
    pub max_matches: usize,
    /// Longest excerpt of a matched payload shown in evidence, in bytes.
    pub max_excerpt_bytes: usize,
    /// Request headers inspected for injection, besides every `X-` header.
    pub inspect_headers: Vec<String>,
    /// Headers never inspected for injection: credentials and opaque ids.
    pub skip_headers: Vec<String>,
    /// Query parameter names whose values are secrets (case-insensitive, after decoding).
    pub secret_params: Vec<String>,
    /// Shortest value of a secret-named parameter judged a secret; password-named parameters
    /// count with any non-empty value.
    pub min_secret_value_bytes: usize,
    /// A secret-carrying query parameter the endpoint's baseline saw in at least this many
    /// calls is a known practice of the API: reported once per endpoint at low severity,
    /// instead of per client at high severity.
    pub min_learned_presence: u64,
    /// Sensitive kinds judged in responses (names as in the inventory, plus `password_hash`).
    pub response_kinds: Vec<String>,
    /// Upstreams behind a TLS-terminating load balancer, whose plaintext on the span port is
    /// expected: CIDRs or addresses. Empty disables `cleartext_credentials` (counted in
    /// `cleartext_unconfigured`): on a span port every upstream talks plaintext, so without
    /// this list every login would alert.
    pub tls_terminated_servers: Vec<String>,
    /// Request headers that carry API keys (case-insensitive), for `cleartext_credentials`.
    pub api_key_headers: Vec<String>,
    /// Protocol anomaly names (as in `Transaction::flags`) not to alert on.
    pub ignore_anomalies: Vec<String>,
}

impl Default for SignatureConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        SignatureConfig {
            injection: true,
            secret_in_url: true,
            sensitive_data: true,
            cleartext_credentials: true,
            protocol_anomaly: true,
            max_value_bytes: 4096,
            max_decode_rounds: 2,
            max_json_values: 1000,
            max_json_depth: 32,
            max_matches: 4,
            max_excerpt_bytes: 48,
            inspect_headers: strings(&["user-agent", "referer", "cookie"]),
            skip_headers: strings(&[
                "authorization",
                "proxy-authorization",
                "x-api-key",
                "x-auth-token",
                "x-csrf-token",
                "x-xsrf-token",
                "x-amz-security-token",
            ]),
            secret_params: strings(&[
                "api_key",
                "apikey",
                "api-key",
                "key",
                "token",
                "access_token",
                "id_token",
                "refresh_token",
                "auth",
                "auth_token",
                "secret",
                "client_secret",
                "password",
                "passwd",
                "pwd",
            ]),
            min_secret_value_bytes: 8,
            min_learned_presence: 20,
            // Not `iban`, `email`, `phone` or `jwt`: a bank API returns account numbers,
            // contact details and tokens as its ordinary business.
            response_kinds: strings(&[
                "card_number",
                "us_ssn",
                "pem_private_key",
                "aws_access_key_id",
                "aws_secret_key",
                "github_token",
                "stripe_key",
                "slack_token",
                "google_api_key",
                "password_field",
                PASSWORD_HASH,
            ]),
            tls_terminated_servers: Vec::new(),
            api_key_headers: strings(&["x-api-key", "api-key", "x-auth-token"]),
            ignore_anomalies: Vec::new(),
        }
    }
}

/// The response kind this module adds to the inventory's: a stored password hash (bcrypt,
/// argon2, crypt(3) SHA) or a field named like one.
pub const PASSWORD_HASH: &str = "password_hash";

impl SignatureConfig {
    /// Adds one problem per bad value, keys under `signatures.`.
    pub fn check(&self, p: &mut Problems) {
        p.range(
            "signatures.max_value_bytes",
            self.max_value_bytes,
            16,
            1 << 20,
        );
        p.range("signatures.max_decode_rounds", self.max_decode_rounds, 1, 4);
        p.range(
            "signatures.max_json_values",
            self.max_json_values,
            1,
            1_000_000,
        );
        p.range("signatures.max_json_depth", self.max_json_depth, 1, 256);
        p.range("signatures.max_matches", self.max_matches, 1, 100);
        p.range(
            "signatures.max_excerpt_bytes",
            self.max_excerpt_bytes,
            8,
            1024,
        );
        p.range(
            "signatures.min_secret_value_bytes",
            self.min_secret_value_bytes,
            1,
            1024,
        );
        for k in &self.response_kinds {
            if k != PASSWORD_HASH && sensitive_kind(k).is_none() {
                p.fail(
                    "signatures.response_kinds",
                    k,
                    "not a sensitive kind (card_number, us_ssn, pem_private_key, password_hash, ...)",
                );
            }
        }
        for s in &self.tls_terminated_servers {
            if parse_net(s).is_none() {
                p.fail(
                    "signatures.tls_terminated_servers",
                    s,
                    "not a CIDR (10.1.0.0/24) or an address",
                );
            }
        }
        for a in &self.ignore_anomalies {
            if !PROTOCOL_RULES.iter().any(|r| r.flag == a) {
                p.fail(
                    "signatures.ignore_anomalies",
                    a,
                    "not a protocol anomaly this detector alerts on",
                );
            }
        }
    }
}

fn sensitive_kind(name: &str) -> Option<SensitiveKind> {
    SensitiveKind::ALL.into_iter().find(|k| k.name() == name)
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// What the detector did and what its limits turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SignatureCounters {
    /// Values the prefilter passed to the injection classifiers (memo hits included).
    pub values_inspected: u64,
    /// Of `values_inspected`, values judged clean from the memo of clean values without
    /// running the classifiers again.
    pub clean_memo_hits: u64,
    /// Digests of clean values pushed out of the full memo by newer ones (the memo has a
    /// fixed size, `memo::SETS` x `memo::WAYS`).
    pub clean_memo_evictions: u64,
    /// Values longer than `max_value_bytes`, inspected on their first bytes only.
    pub values_truncated: u64,
    /// JSON keys and strings not inspected because of `max_json_values`.
    pub json_values_skipped: u64,
    /// JSON subtrees not inspected because of `max_json_depth`.
    pub json_depth_skipped: u64,
    pub injection_findings: u64,
    pub secret_in_url_findings: u64,
    pub sensitive_data_findings: u64,
    /// Responses with a sensitive kind the endpoint had already carried: not alerted.
    pub sensitive_data_known: u64,
    pub cleartext_credentials_findings: u64,
    /// Requests with credentials not judged because `tls_terminated_servers` is empty.
    pub cleartext_unconfigured: u64,
    pub protocol_anomaly_findings: u64,
    /// Parser anomalies not alerted because the transaction lost bytes to a capture gap,
    /// which can produce the same shapes.
    pub protocol_impaired_suppressed: u64,
}

// ---------------------------------------------------------------------------------------------
// Protocol anomalies
// ---------------------------------------------------------------------------------------------

/// One protocol anomaly this detector alerts on.
struct ProtocolRule {
    /// The flag name in `Transaction::flags`.
    flag: &'static str,
    severity: Severity,
    /// Still alerted when the transaction lost bytes to a capture gap: the anomaly is read
    /// from a complete header block or from TCP itself, not from bytes a gap could misalign.
    survives_gap: bool,
}

const PROTOCOL_RULES: [ProtocolRule; 16] = [
    // Request smuggling: two framings a front end and a back end may pick differently.
    rule(
        "transfer_encoding_with_content_length",
        Severity::High,
        true,
    ),
    rule("conflicting_content_length", Severity::High, true),
    // TCP segments that overlap with different bytes: the IDS and the host may each see
    // another stream (Ptacek and Newsham evasion).
    rule("overlap_mismatch", Severity::High, true),
    // Header-line oddities a gap inside the head can fake: judged on gap-free heads only.
    rule("invalid_content_length", Severity::Medium, false),
    rule("unknown_transfer_coding", Severity::Medium, true),
    rule("obs_fold", Severity::Medium, false),
    rule("invalid_header_line", Severity::Medium, false),
    rule("negative_chunk_size", Severity::Medium, false),
    rule("chunk_size_overflow", Severity::Medium, false),
    rule("invalid_chunk_size", Severity::Medium, false),
    rule("chunk_size_junk", Severity::Medium, false),
    rule("missing_chunk_crlf", Severity::Low, false),
    rule("transfer_encoding_in_http10", Severity::Low, true),
    rule("inconsistent_fin", Severity::Low, false),
    // Agreeing duplicates frame the same way everywhere: odd, not dangerous.
    rule("duplicate_content_length", Severity::Low, true),
    rule("nonstandard_version", Severity::Low, true),
];

const fn rule(flag: &'static str, severity: Severity, survives_gap: bool) -> ProtocolRule {
    ProtocolRule {
        flag,
        severity,
        survives_gap,
    }
}

/// Flags that say the capture lost bytes of this transaction.
const GAP_FLAGS: [&str; 3] = ["partial", "request_gap", "response_gap"];

// ---------------------------------------------------------------------------------------------
// The detector
// ---------------------------------------------------------------------------------------------

/// One injection match, ready for evidence.
struct Match {
    class: InjectionClass,
    rule: &'static str,
    location: String,
    excerpt: String,
}

/// A secret seen in the URL.
struct UrlSecret {
    kind: &'static str,
    location: String,
    masked: String,
    /// The endpoint's baseline saw this parameter often: a known practice.
    learned: bool,
}

/// What one request header name means to this detector: the configuration's lists
/// (`api_key_headers`, `skip_headers`, `inspect_headers`) and the two headers read apart
/// (`Authorization`, `Cookie`), found with one lookup per header rather than one per list.
#[derive(Clone, Copy, Default)]
struct HeaderRole {
    api_key: bool,
    skip: bool,
    inspect: bool,
    authorization: bool,
    cookie: bool,
}

/// The five signature kinds; see the module documentation.
pub struct SignatureDetector {
    cfg: SignatureConfig,
    /// Every header name the configuration lists, lower-cased, with its role.
    header_roles: Vec<(Vec<u8>, HeaderRole)>,
    tls_nets: Vec<IpNet>,
    response_kinds: KindSet,
    /// Kinds judged in a URL value: the token kinds (`secret_in_url`) and the personal kinds
    /// of `response_kinds` (`sensitive_data` in URLs); the only kinds URL checks read.
    url_kinds: KindSet,
    /// The token kinds alone, for path segments.
    token_kinds: KindSet,
    password_hash: bool,
    ignored: [bool; PROTOCOL_RULES.len()],
    counters: SignatureCounters,
    /// Scratch: the decoded value, a decoding buffer, a decoded parameter name.
    buf: Vec<u8>,
    tmp: Vec<u8>,
    name: Vec<u8>,
    /// Per-transaction results, cleared at each call.
    matches: Vec<Match>,
    matches_total: u64,
    secrets: Vec<UrlSecret>,
    credentials: Vec<&'static str>,
    /// Personal data in query values, for `sensitive_data`.
    url_exposures: Vec<Exposure>,
    values_left: usize,
    /// Digests of values the classifiers judged clean.
    memo: memo::CleanMemo,
}

impl SignatureDetector {
    /// Builds the detector; `cfg` must have passed [`SignatureConfig::check`] (bad entries
    /// are refused here too).
    pub fn new(cfg: &SignatureConfig) -> Result<SignatureDetector, String> {
        let mut p = Problems::default();
        cfg.check(&mut p);
        if let Some(first) = p.0.first() {
            return Err(format!("[detect] {first}"));
        }
        let mut response_kinds = KindSet::default();
        for k in cfg.response_kinds.iter().filter_map(|k| sensitive_kind(k)) {
            response_kinds.insert(k);
        }
        let mut token_kinds = KindSet::default();
        for k in TOKEN_KINDS {
            token_kinds.insert(k);
        }
        let mut url_kinds = token_kinds;
        for k in URL_PERSONAL_KINDS {
            if response_kinds.contains(k) {
                url_kinds.insert(k);
            }
        }
        let mut header_roles: Vec<(Vec<u8>, HeaderRole)> = Vec::new();
        let lists = [
            &cfg.api_key_headers,
            &cfg.skip_headers,
            &cfg.inspect_headers,
        ];
        let names = lists.into_iter().flatten().map(|n| n.as_bytes());
        for name in names.chain([&b"authorization"[..], b"cookie"]) {
            let name = name.to_ascii_lowercase();
            if header_roles.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let listed = |list: &[String]| {
                list.iter()
                    .any(|h| h.as_bytes().eq_ignore_ascii_case(&name))
            };
            let role = HeaderRole {
                api_key: listed(&cfg.api_key_headers),
                skip: listed(&cfg.skip_headers),
                inspect: listed(&cfg.inspect_headers),
                authorization: name == b"authorization",
                cookie: name == b"cookie",
            };
            header_roles.push((name, role));
        }
        let mut ignored = [false; PROTOCOL_RULES.len()];
        for (slot, r) in ignored.iter_mut().zip(PROTOCOL_RULES.iter()) {
            *slot = cfg.ignore_anomalies.iter().any(|a| a == r.flag);
        }
        Ok(SignatureDetector {
            tls_nets: cfg
                .tls_terminated_servers
                .iter()
                .filter_map(|s| parse_net(s))
                .collect(),
            response_kinds,
            url_kinds,
            token_kinds,
            password_hash: cfg.response_kinds.iter().any(|k| k == PASSWORD_HASH),
            ignored,
            header_roles,
            cfg: cfg.clone(),
            counters: SignatureCounters::default(),
            buf: Vec::new(),
            tmp: Vec::new(),
            name: Vec::new(),
            matches: Vec::new(),
            matches_total: 0,
            secrets: Vec::new(),
            credentials: Vec::new(),
            url_exposures: Vec::new(),
            values_left: 0,
            memo: memo::CleanMemo::default(),
        })
    }

    pub fn counters(&self) -> &SignatureCounters {
        &self.counters
    }
}

impl Detector for SignatureDetector {
    fn name(&self) -> &'static str {
        "signatures"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        self.matches.clear();
        self.matches_total = 0;
        self.secrets.clear();
        self.credentials.clear();
        self.url_exposures.clear();
        self.values_left = self.cfg.max_json_values;
        if self.cfg.protocol_anomaly {
            self.protocol(cx, out);
        }
        self.inspect_request(cx);
        if self.cfg.injection && !self.matches.is_empty() {
            out.push(self.injection_finding(cx));
        }
        if self.cfg.secret_in_url && !self.secrets.is_empty() {
            out.push(self.secret_finding(cx));
        }
        if self.cfg.cleartext_credentials
            && !(self.credentials.is_empty() && self.secrets.is_empty())
        {
            self.cleartext(cx, out);
        }
        if self.cfg.sensitive_data {
            if !self.url_exposures.is_empty() {
                out.push(self.url_sensitive_finding(cx));
            }
            self.sensitive(cx, out);
        }
    }
}

// ----- protocol ------------------------------------------------------------------------------

impl SignatureDetector {
    fn protocol(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let gap = GAP_FLAGS.iter().any(|f| cx.tx.has_flag(f));
        let mut seen: Vec<&'static str> = Vec::new();
        let mut worst: Option<Severity> = None;
        for (r, ignored) in PROTOCOL_RULES.iter().zip(self.ignored) {
            if ignored || !cx.tx.has_flag(r.flag) {
                continue;
            }
            if gap && !r.survives_gap {
                self.counters.protocol_impaired_suppressed =
                    self.counters.protocol_impaired_suppressed.saturating_add(1);
                continue;
            }
            seen.push(r.flag);
            worst = Some(worst.map_or(r.severity, |w| w.max(r.severity)));
        }
        let Some(severity) = worst else {
            return;
        };
        self.counters.protocol_anomaly_findings =
            self.counters.protocol_anomaly_findings.saturating_add(1);
        let summary = format!(
            "HTTP framing or TCP stream anomaly used for smuggling or evasion: {}.",
            seen.join(", ")
        );
        let confidence = if severity >= Severity::High {
            0.85
        } else {
            0.6
        };
        out.push(
            Finding::new(AlertKind::ProtocolAnomaly, cx)
                .severity(severity)
                .confidence(confidence)
                .summary(summary)
                .with("anomalies", seen)
                .with("capture_gap", gap)
                .with(
                    "server",
                    format!("{}:{}", cx.tx.conn.server, cx.tx.conn.server_port),
                ),
        );
    }
}

// ----- request inspection --------------------------------------------------------------------

/// Where a value came from, to name it in evidence and to decide masking.
#[derive(Clone, Copy)]
enum Loc<'a> {
    Path(usize),
    Query(&'a [u8]),
    Form(&'a [u8]),
    Header(&'a [u8]),
    Cookie(&'a [u8]),
    Json(&'a JsonPath<'a>),
}

impl Loc<'_> {
    fn render(&self) -> String {
        let text = |b: &[u8]| {
            let b = &b[..b.len().min(64)];
            String::from_utf8_lossy(b).into_owned()
        };
        match self {
            Loc::Path(i) => format!("path:{i}"),
            Loc::Query(n) => format!("query:{}", text(n)),
            Loc::Form(n) => format!("body:{}", text(n)),
            Loc::Header(n) => format!("header:{}", text(n).to_ascii_lowercase()),
            Loc::Cookie(n) => format!("cookie:{}", text(n)),
            Loc::Json(p) => format!("body:{}", p.render()),
        }
    }

    /// Values here may be credentials: excerpts are masked.
    fn secret(&self) -> bool {
        match self {
            Loc::Query(n) | Loc::Form(n) => is_password_key(n),
            Loc::Cookie(_) => true,
            Loc::Json(p) => p.key().is_some_and(|k| is_password_key(k.as_bytes())),
            Loc::Path(_) | Loc::Header(_) => false,
        }
    }
}

/// A JSON key path kept on the stack while walking: rendered only for evidence.
enum JsonPath<'a> {
    Root,
    Key(&'a JsonPath<'a>, &'a str),
    Index(&'a JsonPath<'a>),
}

impl JsonPath<'_> {
    fn render(&self) -> String {
        match self {
            JsonPath::Root => "$".to_owned(),
            JsonPath::Key(p, k) => format!("{}.{k}", p.render()),
            JsonPath::Index(p) => format!("{}[]", p.render()),
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            JsonPath::Key(_, k) => Some(k),
            JsonPath::Index(p) => p.key(),
            JsonPath::Root => None,
        }
    }
}

fn is_form(headers: &crate::transaction::Headers) -> bool {
    headers.get("content-type").is_some_and(|ct| {
        ct.len() >= 33 && ct[..33].eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
    })
}

/// Splits `a=1&b=2` into raw (name, value) pairs.
fn pairs(qs: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    qs.split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match memchr::memchr(b'=', p) {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        })
}

impl SignatureDetector {
    fn inspect_request(&mut self, cx: &Context<'_>) {
        let req = cx.req;
        let uri = req.uri.as_bytes();
        let (path, query) = match memchr::memchr(b'?', uri) {
            Some(i) => (&uri[..i], Some(&uri[i + 1..])),
            None => (uri, None),
        };
        let query = query.map(|q| match memchr::memchr(b'#', q) {
            Some(i) => &q[..i],
            None => q,
        });
        // Path: each segment alone, and the whole decoded path for traversal across
        // segments (`/files/../../etc/passwd`).
        for (i, seg) in path
            .split(|&c| c == b'/')
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            self.inspect_value(seg, false, Loc::Path(i + 1));
            if self.cfg.secret_in_url {
                self.url_secret_value(seg, Loc::Path(i + 1));
            }
        }
        let segment_traversal = self
            .matches
            .iter()
            .any(|m| m.class == InjectionClass::PathTraversal);
        // `..` via memchr on `.`: most paths have no dot, and no searcher is built per request.
        let dot_dot = memchr::memchr_iter(b'.', path).any(|i| path.get(i + 1) == Some(&b'.'));
        if self.cfg.injection && !segment_traversal && dot_dot {
            let encoded = injection::encodes_traversal(path);
            injection::decode_into(
                path,
                false,
                self.cfg.max_decode_rounds,
                &mut self.buf,
                &mut self.tmp,
            );
            if let Some(hit) = injection::traversal(&self.buf, encoded) {
                self.push_match(hit, Loc::Path(0));
            }
        }
        if let Some(q) = query {
            for (name, value) in pairs(q) {
                self.inspect_pair(name, value, true, cx);
            }
        }
        for (name, value) in req.headers.iter() {
            self.inspect_header(name, value);
        }
        if let Some(json) = cx.request_json() {
            self.walk_json(json, &JsonPath::Root, 0, cx);
        } else if is_form(&req.headers) {
            let body = req.body.data.as_slice();
            for (name, value) in pairs(body) {
                self.inspect_pair(name, value, false, cx);
            }
        }
    }

    /// A query (`in_query`) or form pair: injection in the value, NoSQL operators in the
    /// name, secrets in the URL, password fields for cleartext credentials.
    fn inspect_pair(&mut self, name: &[u8], value: &[u8], in_query: bool, cx: &Context<'_>) {
        let mut name_buf = std::mem::take(&mut self.name);
        injection::decode_into(name, true, 1, &mut name_buf, &mut self.tmp);
        let loc = if in_query {
            Loc::Query(&name_buf)
        } else {
            Loc::Form(&name_buf)
        };
        if self.cfg.injection {
            if let Some((s, e)) = injection::nosql_param_operator(&name_buf) {
                let learned = in_query
                    && cx.profile.is_some_and(|p| {
                        p.query_params
                            .fields
                            .contains_key(String::from_utf8_lossy(&name_buf).as_ref())
                    });
                if !learned {
                    let hit = Hit {
                        class: InjectionClass::Nosqli,
                        rule: "nosql_operator_parameter",
                        start: s,
                        end: e,
                    };
                    let excerpt = excerpt(&name_buf, &hit, self.cfg.max_excerpt_bytes, false);
                    self.record(hit, loc, excerpt);
                }
            }
        }
        self.inspect_value(value, true, loc);
        if is_password_key(&name_buf)
            && !value.is_empty()
            && !self.credentials.contains(&"password_field")
        {
            self.credentials.push("password_field");
        }
        if in_query && (self.cfg.secret_in_url || self.cfg.sensitive_data) {
            self.url_secret_param(&name_buf, value, cx);
        }
        self.name = name_buf;
    }

    fn inspect_header(&mut self, name: &[u8], value: &[u8]) {
        let role = self
            .header_roles
            .iter()
            .find(|(n, _)| n.len() == name.len() && n.eq_ignore_ascii_case(name))
            .map_or(HeaderRole::default(), |(_, r)| *r);
        if role.authorization {
            let scheme = value.split(|&c| c == b' ').next().unwrap_or(&[]);
            let kind = if scheme.eq_ignore_ascii_case(b"basic") {
                Some("basic_auth")
            } else if scheme.eq_ignore_ascii_case(b"bearer") {
                Some("bearer_token")
            } else if value.is_empty() {
                None
            } else {
                Some("authorization_header")
            };
            if let Some(k) = kind {
                self.credentials.push(k);
            }
        } else if !value.is_empty() && role.api_key {
            self.credentials.push("api_key_header");
        }
        if !self.cfg.injection || role.skip {
            return;
        }
        if role.cookie {
            if !role.inspect {
                return;
            }
            for part in value.split(|&c| c == b';') {
                let part = part.trim_ascii();
                let (n, v) = match memchr::memchr(b'=', part) {
                    Some(i) => (&part[..i], &part[i + 1..]),
                    None => continue,
                };
                self.inspect_value(v, false, Loc::Cookie(n));
            }
            return;
        }
        let custom = name.len() > 2 && name[..2].eq_ignore_ascii_case(b"x-");
        if custom || role.inspect {
            self.inspect_value(value, false, Loc::Header(name));
        }
    }

    /// Decodes and classifies one value; records a hit.
    fn inspect_value(&mut self, raw: &[u8], plus_is_space: bool, loc: Loc<'_>) {
        if !self.cfg.injection || raw.is_empty() {
            return;
        }
        let raw = if raw.len() > self.cfg.max_value_bytes {
            self.counters.values_truncated = self.counters.values_truncated.saturating_add(1);
            &raw[..self.cfg.max_value_bytes]
        } else {
            raw
        };
        let encoded = memchr::memchr(b'%', raw).is_some() && injection::encodes_traversal(raw);
        injection::decode_into(
            raw,
            plus_is_space,
            self.cfg.max_decode_rounds,
            &mut self.buf,
            &mut self.tmp,
        );
        self.classify_buf(encoded, loc);
    }

    fn classify_buf(&mut self, encoded: bool, loc: Loc<'_>) {
        if !injection::could_be_attack(&self.buf) {
            return;
        }
        self.counters.values_inspected = self.counters.values_inspected.saturating_add(1);
        // The verdict is a function of the decoded bytes and `encoded` alone, so a value judged
        // clean before is clean now. Values that may be credentials are not remembered, not
        // even as digests, and are classified every time.
        let secret = loc.secret();
        let key = (!secret).then(|| memo::key(&self.buf, encoded));
        if let Some(k) = &key {
            if self.memo.hit(k) {
                self.counters.clean_memo_hits = self.counters.clean_memo_hits.saturating_add(1);
                return;
            }
        }
        match injection::scan(&self.buf, encoded) {
            Some(hit) => {
                let ex = excerpt(&self.buf, &hit, self.cfg.max_excerpt_bytes, secret);
                self.record(hit, loc, ex);
            }
            None => {
                if let Some(k) = key {
                    if self.memo.insert(k) {
                        self.counters.clean_memo_evictions =
                            self.counters.clean_memo_evictions.saturating_add(1);
                    }
                }
            }
        }
    }

    fn push_match(&mut self, hit: Hit, loc: Loc<'_>) {
        let ex = excerpt(&self.buf, &hit, self.cfg.max_excerpt_bytes, false);
        self.record(hit, loc, ex);
    }

    fn record(&mut self, hit: Hit, loc: Loc<'_>, excerpt: String) {
        self.matches_total = self.matches_total.saturating_add(1);
        if self.matches.len() < self.cfg.max_matches {
            self.matches.push(Match {
                class: hit.class,
                rule: hit.rule,
                location: loc.render(),
                excerpt,
            });
        }
    }

    /// One walk of the request JSON: injection in keys and strings, NoSQL operator keys the
    /// endpoint never learned, password fields for cleartext credentials.
    fn walk_json(&mut self, v: &Value, path: &JsonPath<'_>, depth: usize, cx: &Context<'_>) {
        if depth > self.cfg.max_json_depth {
            self.counters.json_depth_skipped = self.counters.json_depth_skipped.saturating_add(1);
            return;
        }
        match v {
            Value::String(s) => {
                if !self.take_value() {
                    return;
                }
                if let Some(k) = path.key() {
                    if is_password_key(k.as_bytes())
                        && !s.is_empty()
                        && !self.credentials.contains(&"password_field")
                    {
                        self.credentials.push("password_field");
                    }
                }
                if self.cfg.injection {
                    let raw = s.as_bytes();
                    let raw = if raw.len() > self.cfg.max_value_bytes {
                        self.counters.values_truncated =
                            self.counters.values_truncated.saturating_add(1);
                        &raw[..self.cfg.max_value_bytes]
                    } else {
                        raw
                    };
                    // JSON strings are not URL-encoded; decode only what looks encoded, so
                    // `50%` stays and `..%2f..%2f` is seen as the server's decoder sees it.
                    let encoded = injection::encodes_traversal(raw);
                    injection::decode_into(
                        raw,
                        false,
                        self.cfg.max_decode_rounds,
                        &mut self.buf,
                        &mut self.tmp,
                    );
                    self.classify_buf(encoded, Loc::Json(path));
                }
            }
            Value::Array(items) => {
                let here = JsonPath::Index(path);
                for item in items {
                    self.walk_json(item, &here, depth + 1, cx);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let here = JsonPath::Key(path, k);
                    if self.cfg.injection && self.take_value() {
                        if injection::is_nosql_operator(k) {
                            let learned = cx.profile.is_some_and(|p| {
                                p.request_fields.fields.contains_key(&here.render())
                            });
                            if !learned {
                                let rule = if k == "$where" {
                                    "nosql_where_clause"
                                } else {
                                    "nosql_operator_key"
                                };
                                self.matches_total = self.matches_total.saturating_add(1);
                                if self.matches.len() < self.cfg.max_matches {
                                    self.matches.push(Match {
                                        class: InjectionClass::Nosqli,
                                        rule,
                                        location: format!("body:{}", here.render()),
                                        excerpt: nosql_excerpt(k, item),
                                    });
                                }
                            }
                        } else if injection::could_be_attack(k.as_bytes()) {
                            self.buf.clear();
                            self.buf.extend_from_slice(k.as_bytes());
                            self.classify_buf(false, Loc::Json(&here));
                        }
                    }
                    self.walk_json(item, &here, depth + 1, cx);
                }
            }
            Value::Number(_) | Value::Bool(_) | Value::Null => {}
        }
    }

    fn take_value(&mut self) -> bool {
        if self.values_left == 0 {
            self.counters.json_values_skipped = self.counters.json_values_skipped.saturating_add(1);
            return false;
        }
        self.values_left -= 1;
        true
    }

    fn injection_finding(&mut self, cx: &Context<'_>) -> Finding {
        self.counters.injection_findings = self.counters.injection_findings.saturating_add(1);
        let mut classes: Vec<InjectionClass> = self.matches.iter().map(|m| m.class).collect();
        classes.sort();
        classes.dedup();
        let first = &self.matches[0];
        let severity = if classes.iter().all(|c| *c == InjectionClass::Xss) {
            Severity::Medium
        } else {
            Severity::High
        };
        let summary = format!(
            "{} payload ({}) in {} of a request to {} {}.",
            class_title(first.class),
            first.rule,
            first.location,
            cx.endpoint().method,
            cx.endpoint().route
        );
        let matches: Vec<Value> = self
            .matches
            .iter()
            .map(|m| {
                json!({
                    "class": m.class.name(),
                    "rule": m.rule,
                    "where": m.location,
                    "excerpt": m.excerpt,
                })
            })
            .collect();
        Finding::new(AlertKind::Injection, cx)
            .severity(severity)
            .confidence(if self.matches_total > 1 { 0.95 } else { 0.85 })
            .summary(summary)
            .with(
                "classes",
                classes.iter().map(|c| c.name()).collect::<Vec<_>>(),
            )
            .with("matches", matches)
            .with("matches_total", self.matches_total)
            .with("status", cx.status())
    }
}

fn class_title(c: InjectionClass) -> &'static str {
    match c {
        InjectionClass::Sqli => "SQL injection",
        InjectionClass::Nosqli => "NoSQL operator injection",
        InjectionClass::PathTraversal => "Path traversal",
        InjectionClass::OsCommand => "OS command injection",
        InjectionClass::Ssti => "Template injection",
        InjectionClass::Xss => "Script injection",
    }
}

/// The matched bytes, cut to `max` bytes at a character boundary, control bytes escaped;
/// fully masked when the value may be a credential.
fn excerpt(buf: &[u8], hit: &Hit, max: usize, secret: bool) -> String {
    let end = hit.end.min(buf.len());
    let start = hit.start.min(end);
    let m = &buf[start..end];
    if secret {
        return format!("…({} chars)", m.len());
    }
    let text = String::from_utf8_lossy(&m[..m.len().min(max)]);
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(ch) & 0xff));
        } else if ch != '\u{fffd}' {
            out.push(ch);
        }
    }
    if m.len() > max {
        out.push('…');
    }
    out
}

/// `{"$ne": null}` as `$ne: null`, the operand cut short.
fn nosql_excerpt(op: &str, operand: &Value) -> String {
    let v = match operand {
        Value::String(s) => format!("\"{}\"", s.chars().take(24).collect::<String>()),
        Value::Object(_) => "{…}".to_owned(),
        Value::Array(_) => "[…]".to_owned(),
        other => other.to_string(),
    };
    format!("{op}: {v}")
}

// ----- secrets in the URL --------------------------------------------------------------------

/// Inventory kinds that are secrets wherever they appear.
const TOKEN_KINDS: [SensitiveKind; 9] = [
    SensitiveKind::Jwt,
    SensitiveKind::PemPrivateKey,
    SensitiveKind::AwsAccessKeyId,
    SensitiveKind::AwsSecretKey,
    SensitiveKind::GithubToken,
    SensitiveKind::StripeKey,
    SensitiveKind::SlackToken,
    SensitiveKind::GoogleApiKey,
    SensitiveKind::PasswordField,
];

/// Personal kinds that raise `sensitive_data` when sent in a query value (if judged in
/// responses too).
const URL_PERSONAL_KINDS: [SensitiveKind; 3] = [
    SensitiveKind::CardNumber,
    SensitiveKind::UsSsn,
    SensitiveKind::Iban,
];

/// A value that looks like a generated key: no spaces, only token characters, letters and
/// digits mixed.
fn token_shaped(v: &[u8]) -> bool {
    v.iter()
        .all(|&c| c.is_ascii_alphanumeric() || b"-_.~+/=".contains(&c))
        && v.iter().any(u8::is_ascii_digit)
        && v.iter().any(u8::is_ascii_alphabetic)
}

/// `sk_l…(32 chars)`: the first four characters name the vendor, the rest is hidden. Values
/// named like passwords show nothing.
fn mask(v: &[u8], show_prefix: bool) -> String {
    let n = String::from_utf8_lossy(v).chars().count();
    if show_prefix && n >= 12 {
        let head: String = String::from_utf8_lossy(v).chars().take(4).collect();
        format!("{head}…({n} chars)")
    } else {
        format!("…({n} chars)")
    }
}

impl SignatureDetector {
    /// A secret-named query parameter, or any parameter whose value is a known token shape.
    fn url_secret_param(&mut self, name: &[u8], raw: &[u8], cx: &Context<'_>) {
        if raw.is_empty() {
            return;
        }
        let mut value = std::mem::take(&mut self.buf);
        injection::decode_into(raw, true, 1, &mut value, &mut self.tmp);
        // One classification serves both kinds: tokens (secret_in_url) and personal data
        // (sensitive_data in URLs). Nothing shorter than an SSN can be either.
        let mut counts = SensitiveCounts::default();
        if value.len() >= 9 {
            classify_wanted(&value, self.url_kinds, &mut counts);
        }
        if self.cfg.sensitive_data {
            self.url_personal_data(name, &value, &counts, cx);
        }
        if !self.cfg.secret_in_url {
            self.buf = value;
            return;
        }
        let named = self
            .cfg
            .secret_params
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(name));
        let password = is_password_key(name);
        let token = if value.len() >= 16 {
            token_kind_in(&counts)
        } else {
            None
        };
        let kind = token.or(if password && named {
            Some("password")
        } else if named && value.len() >= self.cfg.min_secret_value_bytes && token_shaped(&value) {
            Some("api_key_or_token")
        } else {
            None
        });
        if let Some(kind) = kind {
            let learned = cx.profile.is_some_and(|p| {
                learned_param(
                    p,
                    &String::from_utf8_lossy(name),
                    self.cfg.min_learned_presence,
                )
            });
            self.secrets.push(UrlSecret {
                kind,
                location: Loc::Query(name).render(),
                masked: mask(&value, !password),
                learned,
            });
        }
        self.buf = value;
    }

    /// Card numbers, SSNs, IBANs in a query value the endpoint never took them in: they end
    /// up in access logs and browser history.
    fn url_personal_data(
        &mut self,
        name: &[u8],
        value: &[u8],
        counts: &SensitiveCounts,
        cx: &Context<'_>,
    ) {
        for kind in URL_PERSONAL_KINDS {
            if counts.get(kind) == 0 || !self.response_kinds.contains(kind) {
                continue;
            }
            let learned = cx.profile.is_some_and(|p| {
                p.query_params
                    .fields
                    .get(String::from_utf8_lossy(name).as_ref())
                    .is_some_and(|f| f.sensitive_kinds().any(|k| k == kind))
            });
            if !learned && self.url_exposures.len() < self.cfg.max_matches {
                self.url_exposures.push(Exposure {
                    kind: kind.name(),
                    path: Loc::Query(name).render(),
                    masked: mask_sensitive(kind, value),
                });
            }
        }
    }

    /// A token in a path segment (`/reset/eyJhbGciOi...`).
    fn url_secret_value(&mut self, raw: &[u8], loc: Loc<'_>) {
        if raw.len() < 16 {
            return;
        }
        let mut value = std::mem::take(&mut self.buf);
        injection::decode_into(raw, false, 1, &mut value, &mut self.tmp);
        if let Some(kind) = token_kind(&value, self.token_kinds) {
            self.secrets.push(UrlSecret {
                kind,
                location: loc.render(),
                masked: mask(&value, true),
                learned: false,
            });
        }
        self.buf = value;
    }

    fn secret_finding(&mut self, cx: &Context<'_>) -> Finding {
        self.counters.secret_in_url_findings =
            self.counters.secret_in_url_findings.saturating_add(1);
        let all_learned = self.secrets.iter().all(|s| s.learned);
        let mut kinds: Vec<&str> = self.secrets.iter().map(|s| s.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let first = &self.secrets[0];
        let items: Vec<Value> = self
            .secrets
            .iter()
            .take(self.cfg.max_matches)
            .map(|s| json!({"kind": s.kind, "where": s.location, "masked": s.masked, "learned": s.learned}))
            .collect();
        let f = Finding::new(AlertKind::SecretInUrl, cx)
            .with("kinds", kinds)
            .with("secrets", items)
            .with("identity", cx.client().identity.clone())
            .with("learned_practice", all_learned);
        if all_learned {
            // A practice the API was built with: one incident per endpoint, not per client.
            f.endpoint_scope()
                .severity(Severity::Low)
                .confidence(0.9)
                .summary(format!(
                    "Clients of {} {} routinely send a {} in the URL ({}), where proxies and logs keep it.",
                    cx.endpoint().method, cx.endpoint().route, first.kind, first.location
                ))
        } else {
            f.severity(Severity::High).confidence(0.9).summary(format!(
                "A {} was sent in the URL ({}, {}), where proxies and logs keep it.",
                first.kind, first.location, first.masked
            ))
        }
    }
}

/// The inventory kind of a value that is a token wherever it appears; `token_kinds` holds
/// [`TOKEN_KINDS`], the only kinds read from the classification.
fn token_kind(v: &[u8], token_kinds: KindSet) -> Option<&'static str> {
    if v.len() < 16 {
        return None;
    }
    let mut c = SensitiveCounts::default();
    classify_wanted(v, token_kinds, &mut c);
    token_kind_in(&c)
}

fn token_kind_in(c: &SensitiveCounts) -> Option<&'static str> {
    TOKEN_KINDS
        .iter()
        .find(|k| **k != SensitiveKind::PasswordField && c.get(**k) > 0)
        .map(|k| k.name())
}

fn learned_param(p: &EndpointProfile, name: &str, min: u64) -> bool {
    p.query_params
        .fields
        .get(name)
        .is_some_and(|f| f.present >= min)
}

// ----- cleartext credentials -----------------------------------------------------------------

impl SignatureDetector {
    fn cleartext(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        for s in &self.secrets {
            if !self.credentials.contains(&s.kind) {
                self.credentials.push(s.kind);
            }
        }
        if self.tls_nets.is_empty() {
            self.counters.cleartext_unconfigured =
                self.counters.cleartext_unconfigured.saturating_add(1);
            return;
        }
        let server = cx.tx.conn.server;
        if self.tls_nets.iter().any(|n| n.contains(&server)) {
            return;
        }
        self.counters.cleartext_credentials_findings = self
            .counters
            .cleartext_credentials_findings
            .saturating_add(1);
        let mut kinds = self.credentials.clone();
        kinds.sort_unstable();
        kinds.dedup();
        let summary = format!(
            "Credentials ({}) sent in plaintext to {}:{}, which is not a TLS-terminated upstream.",
            kinds.join(", "),
            server,
            cx.tx.conn.server_port
        );
        out.push(
            Finding::new(AlertKind::CleartextCredentials, cx)
                .severity(Severity::High)
                .confidence(0.9)
                .summary(summary)
                .with("credential_kinds", kinds)
                .with("server", server.to_string())
                .with("server_port", cx.tx.conn.server_port)
                .with("identity", cx.client().identity.clone())
                .with(
                    "basic_user",
                    cx.identity
                        .basic_user
                        .as_ref()
                        .map(|u| u.as_str().to_owned()),
                )
                .with(
                    "tls_terminated_servers",
                    self.cfg.tls_terminated_servers.clone(),
                ),
        );
    }
}

// ----- sensitive data in responses -----------------------------------------------------------

/// One sensitive value found in a response, for evidence.
struct Exposure {
    kind: &'static str,
    path: String,
    masked: String,
}

impl SignatureDetector {
    fn sensitive(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let Some(resp) = cx.resp else {
            return;
        };
        let body = resp.body.data.as_slice();
        if body.is_empty() || !is_text(&resp.headers, body) {
            return;
        }
        // One pass over the raw bytes decides whether anything judged is there at all.
        let mut counts = SensitiveCounts::default();
        classify_wanted(body, self.response_kinds, &mut counts);
        let by_key = |k: SensitiveKind| {
            matches!(
                k,
                SensitiveKind::PasswordField | SensitiveKind::AwsSecretKey
            )
        };
        // Both scans are pure functions of the body: each runs once, whatever asks for it.
        let hash_key = self.password_hash && hash_key_in(body);
        let hash_value = self.password_hash && hash_value_in(body);
        // Whether the body is JSON decides how key-judged kinds count; parsing it is the
        // costliest step here, so it happens only when something in the raw bytes needs it.
        let needs_json = counts
            .iter()
            .any(|(k, _)| by_key(k) && self.response_kinds.contains(k))
            || hash_key;
        let found_in = |text: bool| {
            let mut s = KindSet::default();
            for (k, _) in counts.iter() {
                // In script, markup and config text `password = x` is code, not a leak:
                // kinds recognised by their key count only where keys are known (JSON).
                if self.response_kinds.contains(k) && !(text && by_key(k)) {
                    s.insert(k);
                }
            }
            s
        };
        let text = needs_json && cx.response_json().is_none();
        let found = found_in(text);
        // Text bodies have no keys to check against: only hash-shaped values count there.
        let hash = hash_value || (!text && hash_key);
        if found.is_empty() && !hash {
            return;
        }
        let text = cx.response_json().is_none();
        let found = found_in(text);
        let hash = hash_value || (!text && hash_key);
        if found.is_empty() && !hash {
            return;
        }
        let known = known_response_kinds(cx.profile, text);
        let new: Vec<SensitiveKind> = found.iter().filter(|k| !known.contains(*k)).collect();
        let mut exposures = Vec::new();
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        match cx.response_json() {
            Some(json) => {
                let mut walk = SensitiveWalk {
                    new: &new,
                    hash,
                    profile: cx.profile,
                    max: self.cfg.max_matches,
                    max_depth: self.cfg.max_json_depth,
                    out: &mut exposures,
                    totals: &mut totals,
                };
                walk.walk(json, &JsonPath::Root, None, 0);
            }
            None => {
                for k in &new {
                    totals.push((k.name(), u64::from(counts.get(*k))));
                    exposures.push(Exposure {
                        kind: k.name(),
                        path: "body".to_owned(),
                        masked: String::new(),
                    });
                }
                if hash && !known_hash_text(cx.profile) {
                    totals.push((PASSWORD_HASH, 1));
                    exposures.push(Exposure {
                        kind: PASSWORD_HASH,
                        path: "body".to_owned(),
                        masked: String::new(),
                    });
                }
            }
        }
        if exposures.is_empty() {
            self.counters.sensitive_data_known =
                self.counters.sensitive_data_known.saturating_add(1);
            return;
        }
        self.counters.sensitive_data_findings =
            self.counters.sensitive_data_findings.saturating_add(1);
        let mut kinds: Vec<&str> = exposures.iter().map(|e| e.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let critical = kinds.iter().any(|k| {
            matches!(
                *k,
                "card_number" | "us_ssn" | "pem_private_key" | "aws_secret_key"
            )
        });
        let baseline_calls = cx.profile.map_or(0, |p| p.calls);
        let summary = format!(
            "Response of {} {} carries {} never seen in its {} learned calls.",
            cx.endpoint().method,
            cx.endpoint().route,
            kinds.join(", "),
            baseline_calls
        );
        let items: Vec<Value> = exposures
            .iter()
            .map(|e| json!({"kind": e.kind, "where": e.path, "masked": e.masked}))
            .collect();
        let counts: serde_json::Map<String, Value> = totals
            .iter()
            .map(|(k, n)| ((*k).to_owned(), Value::from(*n)))
            .collect();
        out.push(
            Finding::new(AlertKind::SensitiveData, cx)
                .severity(if critical {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(0.85)
                .summary(summary)
                .with("kinds", kinds)
                .with("fields", items)
                .with("counts", Value::Object(counts))
                .with("baseline_calls", baseline_calls)
                .with("status", resp.status),
        );
    }
}

impl SignatureDetector {
    fn url_sensitive_finding(&mut self, cx: &Context<'_>) -> Finding {
        self.counters.sensitive_data_findings =
            self.counters.sensitive_data_findings.saturating_add(1);
        let mut kinds: Vec<&str> = self.url_exposures.iter().map(|e| e.kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let first = &self.url_exposures[0];
        let summary = format!(
            "A {} was sent in the URL of {} {} ({}), where access logs keep it.",
            first.kind,
            cx.endpoint().method,
            cx.endpoint().route,
            first.path
        );
        let items: Vec<Value> = self
            .url_exposures
            .iter()
            .map(|e| json!({"kind": e.kind, "where": e.path, "masked": e.masked}))
            .collect();
        Finding::new(AlertKind::SensitiveData, cx)
            .severity(Severity::Medium)
            .confidence(0.8)
            .summary(summary)
            .with("kinds", kinds)
            .with("fields", items)
            .with("in_url", true)
    }
}

/// Kinds the endpoint's responses already carried: the sensitive bits of every learned
/// response field. When some fields were not tracked (caps) or the body is not JSON (not
/// learned per field), the endpoint-wide counts stand in.
fn known_response_kinds(p: Option<&EndpointProfile>, text: bool) -> KindSet {
    let mut s = KindSet::default();
    let Some(p) = p else {
        return s;
    };
    let mut incomplete = text;
    for map in &p.response_fields {
        incomplete |= map.fields_dropped > 0 || map.paths_too_long > 0;
        for f in map.fields.values() {
            for k in f.sensitive_kinds() {
                s.insert(k);
            }
        }
    }
    if incomplete {
        for (name, n) in &p.sensitive {
            if *n > 0 {
                if let Some(k) = sensitive_kind(name) {
                    s.insert(k);
                }
            }
        }
    }
    s
}

fn known_hash_text(p: Option<&EndpointProfile>) -> bool {
    p.is_some_and(|p| {
        p.response_fields
            .iter()
            .any(|m| m.fields.keys().any(|k| is_hash_key(last_key(k).as_bytes())))
    })
}

fn last_key(path: &str) -> &str {
    let p = path.trim_end_matches("[]");
    p.rsplit('.').next().unwrap_or(p)
}

/// Password-hash formats: bcrypt, argon2, scrypt, crypt(3) SHA-256/512, Django PBKDF2.
const HASH_PREFIXES: [&[u8]; 8] = [
    b"$2a$",
    b"$2b$",
    b"$2y$",
    b"$argon2",
    b"$scrypt$",
    b"$5$",
    b"$6$",
    b"pbkdf2_sha256$",
];

fn is_hash_value(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    v.len() >= 20
        && HASH_PREFIXES.iter().any(|p| v.starts_with(p))
        && !v.iter().any(u8::is_ascii_whitespace)
}

/// A key that names a stored password hash: `passwordHash`, `password_hash`, `hashedPassword`,
/// `pwdHash`, `passhash`.
fn is_hash_key(k: &[u8]) -> bool {
    let mut buf = [0u8; 64];
    let mut n = 0;
    for &c in k.iter().filter(|c| c.is_ascii_alphanumeric()) {
        if let Some(s) = buf.get_mut(n) {
            *s = c.to_ascii_lowercase();
            n += 1;
        }
    }
    let k = &buf[..n];
    let has = |w: &[u8]| memchr::memmem::find(k, w).is_some();
    (has(b"password") || has(b"passwd") || has(b"pwd") || has(b"pass")) && has(b"hash")
}

/// A password-hash-shaped token somewhere in the bytes: a known prefix and at least 28
/// characters of the hash alphabet (bcrypt has 60).
fn hash_value_in(body: &[u8]) -> bool {
    let token_at = |i: usize| {
        let rest = body.get(i..).unwrap_or(&[]);
        HASH_PREFIXES.iter().any(|p| rest.starts_with(p))
            && rest
                .iter()
                .take(28)
                .take_while(|&&c| c.is_ascii_alphanumeric() || b"./$+=_".contains(&c))
                .count()
                == 28
    };
    let mut dollars = memchr::memchr_iter(b'$', body).peekable();
    // Every prefix holds a `$`: a body without one needs no second pass.
    if dollars.peek().is_none() {
        return false;
    }
    dollars.any(token_at) || PBKDF2_FINDER.find_iter(body).any(token_at)
}

/// Searchers for the needles looked for in every response body, built once rather than per
/// body.
static PBKDF2_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"pbkdf2_sha256$"));
static ASH_FINDER: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"ash"));

/// Bodies worth scanning for sensitive text: a textual media type, or without one, a start
/// that is printable text. Images and archives hold every byte pattern somewhere.
fn is_text(headers: &crate::transaction::Headers, body: &[u8]) -> bool {
    if let Some(ct) = headers.get("content-type") {
        // Media types are short: a plain case-insensitive window compare beats building a
        // searcher (and a lower-cased copy) for every response.
        let has = |w: &[u8]| ct.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w));
        return ct
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
            || has(b"json")
            || has(b"xml")
            || has(b"javascript")
            || has(b"x-www-form-urlencoded")
            || has(b"x-pem-file")
            || has(b"yaml");
    }
    let head = &body[..body.len().min(512)];
    let printable = head
        .iter()
        .filter(|&&c| c.is_ascii_graphic() || c.is_ascii_whitespace() || c >= 0x80)
        .count();
    printable * 100 >= head.len() * 95 && !head.contains(&0)
}

/// A key named like a password hash somewhere in the bytes (a prefilter: `hash` with a
/// password word nearby; the JSON walk confirms on real keys).
fn hash_key_in(body: &[u8]) -> bool {
    ASH_FINDER.find_iter(body).any(|at| {
        let from = at.saturating_sub(20);
        let to = (at + 20).min(body.len());
        body.get(from..to).is_some_and(is_hash_key)
    })
}

fn mask_sensitive(kind: SensitiveKind, v: &[u8]) -> String {
    let digits: Vec<u8> = v.iter().copied().filter(u8::is_ascii_digit).collect();
    let last4 = |d: &[u8]| String::from_utf8_lossy(&d[d.len().saturating_sub(4)..]).into_owned();
    match kind {
        SensitiveKind::CardNumber => format!("…{} ({} digits)", last4(&digits), digits.len()),
        SensitiveKind::UsSsn => format!("***-**-{}", last4(&digits)),
        SensitiveKind::PasswordField | SensitiveKind::AwsSecretKey => mask(v, false),
        _ => mask(v, true),
    }
}

/// The response JSON walk, run only when the raw scan found a judged kind: which fields carry
/// the new kinds, with masked samples.
struct SensitiveWalk<'a> {
    new: &'a [SensitiveKind],
    hash: bool,
    profile: Option<&'a EndpointProfile>,
    max: usize,
    max_depth: usize,
    out: &'a mut Vec<Exposure>,
    totals: &'a mut Vec<(&'static str, u64)>,
}

impl SensitiveWalk<'_> {
    fn count(&mut self, kind: &'static str) {
        match self.totals.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.totals.push((kind, 1)),
        }
    }

    fn walk(&mut self, v: &Value, path: &JsonPath<'_>, key: Option<&str>, depth: usize) {
        if depth > self.max_depth {
            return;
        }
        let text;
        let bytes: &[u8] = match v {
            Value::String(s) => s.as_bytes(),
            Value::Number(n) => {
                text = n.to_string();
                text.as_bytes()
            }
            Value::Array(items) => {
                let here = JsonPath::Index(path);
                for item in items {
                    self.walk(item, &here, key, depth + 1);
                }
                return;
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let here = JsonPath::Key(path, k);
                    self.walk(item, &here, Some(k), depth + 1);
                }
                return;
            }
            Value::Bool(_) | Value::Null => return,
        };
        let mut c = SensitiveCounts::default();
        classify(bytes, &mut c);
        if let Some(k) = key.map(str::as_bytes) {
            if is_aws_secret_key_name(k) {
                if is_aws_secret_value(bytes) {
                    c.add(SensitiveKind::AwsSecretKey);
                }
            } else if is_password_key(k) && !bytes.is_empty() {
                c.add(SensitiveKind::PasswordField);
            }
        }
        for kind in self.new.iter().copied().filter(|k| c.get(*k) > 0) {
            self.count(kind.name());
            if self.out.len() < self.max {
                self.out.push(Exposure {
                    kind: kind.name(),
                    path: path.render(),
                    masked: mask_sensitive(kind, bytes),
                });
            }
        }
        let hash_field = key.is_some_and(|k| is_hash_key(k.as_bytes())) && !bytes.is_empty();
        if self.hash && (hash_field || is_hash_value(bytes)) {
            let rendered = path.render();
            let learned = self.profile.is_some_and(|p| {
                p.response_fields
                    .iter()
                    .any(|m| m.fields.contains_key(&rendered))
            });
            if !learned {
                self.count(PASSWORD_HASH);
                if self.out.len() < self.max {
                    self.out.push(Exposure {
                        kind: PASSWORD_HASH,
                        path: rendered,
                        masked: mask(bytes, false),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

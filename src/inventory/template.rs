//! Route templating: from a concrete request path (`/users/100/orders?page=2`) to the route
//! template that names its endpoint (`/users/{id}/orders`).
//!
//! A template is decided, in order of precedence, by:
//! 1. an operator override ([`Overrides`]): a glob over whole paths forcing segments to stay
//!    literal or to become parameters;
//! 2. an OpenAPI spec's path templates ([`RouteLearner::with_spec_paths`]), where a literal
//!    segment beats a parameter when both match;
//! 3. what was learned from traffic: typed segment recognisers ([`classify_segment`]: integers,
//!    UUIDs, hashes, dates, emails, tokens, percent-encoded blobs) and per-position cardinality
//!    folding (`/users/alice`, `/users/bob`, ... become `/users/{param}`).
//!
//! Path normalisation: the query string and fragment are not part of a template. An
//! absolute-form target (`http://host/p`) is reduced to its path. Empty segments are dropped,
//! so `//a//b/` and `/a/b` are one template, and a trailing `/` never makes a second endpoint.
//! Dot segments and percent-escapes are not decoded: a segment holding an escape is data and
//! becomes `{param}`.
//!
//! Naming rule: a placeholder names the parameter's *type* (`{id}`, `{uuid}`, `{hash}`,
//! `{date}`, `{email}`, `{token}`, `{param}`, and `{rest}` for a folded tail), never a name
//! guessed from the preceding literal. Spec templates keep the names their spec gives.
//!
//! Invariants:
//! - Folding never merges a stable literal: at a folded position, a value seen at least
//!   [`RouteConfig::stable_min_hits`] times and making up at least
//!   [`RouteConfig::stable_min_percent`] of that position's traffic keeps its own template and
//!   subtree (`/users/me` next to `/users/{param}`). A position with few distinct values never
//!   folds (`/org/settings`, `/org/onboardingStatus`).
//! - Folding is decided when a new value arrives at a position and is sticky: once a position
//!   folds it stays folded, so a user population that grows busy over days stays one template.
//!   The price: a model learned from a short burst in which many busy words were each seen once
//!   may fold them; pin such words with a spec or a `force_literal` override.
//!   [`RouteLearner::merge`] ORs the decision. Because every count is a sum, merging two learners gives the templates that
//!   learning their union gives, except where a value's stability changed during learning.
//! - Memory is bounded: hosts ([`RouteConfig::max_hosts`]), tree nodes per host
//!   ([`RouteConfig::max_templates_per_host`]), tracked values per position
//!   ([`RouteConfig::max_tracked_values`]), methods per template, segments per path and bytes
//!   per literal segment are all capped, and each cap has a counter in [`RouteCounters`].
//! - [`RouteLearner::template_of`] is read-only and allocates the returned strings only.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

// ---------------------------------------------------------------------------------------------
// Typed segment recognisers
// ---------------------------------------------------------------------------------------------

/// What a typed recogniser found a path segment to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// Decimal digits only (`100`).
    Integer,
    /// A textual UUID, 8-4-4-4-12 hex digits.
    Uuid,
    /// Hex digits: at least 8 mixing digits and letters, or at least 16 (hashes, hex ids).
    Hash,
    /// A calendar date, `2024-01-31` or `20240131`, years 1900 to 2199.
    Date,
    /// An email address.
    Email,
    /// A JWT, base64 blob, long mixed alphanumeric or prefixed random id (`cus_9s8d7f6g5h`).
    Token,
    /// A short letter prefix, a dash or underscore, and a mostly numeric code: the shape of
    /// business identifiers (`SKU-01559`, `ORD-2024-0001`, `inv_10442`).
    PrefixedId,
    /// Contains a percent-encoded byte (`%20`): data, not a route word.
    Encoded,
    /// A literal longer than `max_literal_segment_bytes`.
    Oversized,
}

impl SegmentKind {
    pub fn name(self) -> &'static str {
        match self {
            SegmentKind::Integer => "integer",
            SegmentKind::Uuid => "uuid",
            SegmentKind::Hash => "hash",
            SegmentKind::Date => "date",
            SegmentKind::Email => "email",
            SegmentKind::Token => "token",
            SegmentKind::PrefixedId => "prefixed_id",
            SegmentKind::Encoded => "encoded",
            SegmentKind::Oversized => "oversized",
        }
    }

    /// The parameter a segment of this kind becomes.
    pub fn param(self) -> ParamKind {
        match self {
            SegmentKind::Integer => ParamKind::Id,
            SegmentKind::Uuid => ParamKind::Uuid,
            SegmentKind::Hash => ParamKind::Hash,
            SegmentKind::Date => ParamKind::Date,
            SegmentKind::Email => ParamKind::Email,
            SegmentKind::Token => ParamKind::Token,
            SegmentKind::PrefixedId => ParamKind::Param,
            SegmentKind::Encoded | SegmentKind::Oversized => ParamKind::Param,
        }
    }
}

/// A parameter position in a learned template; each renders as one placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Id,
    Uuid,
    Hash,
    Date,
    Email,
    Token,
    /// Untyped: folded by cardinality, percent-encoded or oversized.
    Param,
    /// The tail of a path deeper than `max_segments`, or past a full host's catch-all.
    Rest,
}

impl ParamKind {
    pub fn placeholder(self) -> &'static str {
        match self {
            ParamKind::Id => "{id}",
            ParamKind::Uuid => "{uuid}",
            ParamKind::Hash => "{hash}",
            ParamKind::Date => "{date}",
            ParamKind::Email => "{email}",
            ParamKind::Token => "{token}",
            ParamKind::Param => "{param}",
            ParamKind::Rest => "{rest}",
        }
    }
}

/// Classifies one path segment, or `None` when it looks like a route word (`api`, `v2`,
/// `onboardingStatus`, `2fa`). The recognisers are deliberately conservative: a word that
/// slips through here can still fold by cardinality, while a word wrongly typed here would
/// merge endpoints with no way back short of an override.
pub fn classify_segment(seg: &str) -> Option<SegmentKind> {
    let b = seg.as_bytes();
    if b.is_empty() {
        return None;
    }
    if has_percent_escape(b) {
        return Some(SegmentKind::Encoded);
    }
    if b.iter().all(u8::is_ascii_digit) {
        if b.len() == 8 && is_compact_date(b) {
            return Some(SegmentKind::Date);
        }
        return Some(SegmentKind::Integer);
    }
    if is_dashed_date(b) {
        return Some(SegmentKind::Date);
    }
    if is_uuid(b) {
        return Some(SegmentKind::Uuid);
    }
    if is_hex_id(b) {
        return Some(SegmentKind::Hash);
    }
    if is_email(b) {
        return Some(SegmentKind::Email);
    }
    if is_token(b) {
        return Some(SegmentKind::Token);
    }
    if is_prefixed_id(b) {
        return Some(SegmentKind::PrefixedId);
    }
    None
}

/// `SKU-01559`, `ORD-2024-0001`, `inv_10442`: 1 to 8 letters, `-` or `_`, then a code of
/// letters, digits and separators holding at least 3 digits and more digits than letters.
/// Route words with a version or a number (`v2-beta`, `oauth2_callback`, `2fa`) have too few
/// digits.
fn is_prefixed_id(b: &[u8]) -> bool {
    let prefix = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if !(1..=8).contains(&prefix) || !matches!(b.get(prefix), Some(b'-' | b'_')) {
        return false;
    }
    let code = &b[prefix + 1..];
    if code.is_empty()
        || !code
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    {
        return false;
    }
    let digits = code.iter().filter(|c| c.is_ascii_digit()).count();
    let letters = code.iter().filter(|c| c.is_ascii_alphabetic()).count();
    digits >= 3 && digits > letters
}

fn has_percent_escape(b: &[u8]) -> bool {
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn digits_value(b: &[u8]) -> u32 {
    b.iter().fold(0u32, |acc, d| {
        acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    })
}

fn is_valid_date(y: &[u8], m: &[u8], d: &[u8]) -> bool {
    let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    if !(all_digits(y) && all_digits(m) && all_digits(d)) {
        return false;
    }
    let (y, m, d) = (digits_value(y), digits_value(m), digits_value(d));
    let max_day = match m {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return false,
    };
    (1900..=2199).contains(&y) && (1..=max_day).contains(&d)
}

fn is_compact_date(b: &[u8]) -> bool {
    b.len() == 8 && is_valid_date(&b[0..4], &b[4..6], &b[6..8])
}

fn is_dashed_date(b: &[u8]) -> bool {
    b.len() == 10 && b[4] == b'-' && b[7] == b'-' && is_valid_date(&b[0..4], &b[5..7], &b[8..10])
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_hex_id(b: &[u8]) -> bool {
    if !b.iter().all(u8::is_ascii_hexdigit) {
        return false;
    }
    let has_digit = b.iter().any(u8::is_ascii_digit);
    let has_letter = b.iter().any(u8::is_ascii_alphabetic);
    (b.len() >= 8 && has_digit && has_letter) || b.len() >= 16
}

fn is_email(b: &[u8]) -> bool {
    let mut parts = b.split(|&c| c == b'@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"._+-".contains(&c));
    local_ok && is_domain(domain)
}

/// A DNS name with at least two labels and an alphabetic top-level label of 2+ letters.
fn is_domain(d: &[u8]) -> bool {
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2 && last.len() >= 2 && last.iter().all(u8::is_ascii_alphabetic)
}

fn is_base64url_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Key-id prefixes of AWS credentials and principals (`AKIA...`, `ASIA...`).
const AWS_ID_PREFIXES: [&[u8]; 5] = [b"AKIA", b"ASIA", b"AIDA", b"AROA", b"AGPA"];

fn is_token(b: &[u8]) -> bool {
    // JWT: three base64url parts whose header starts with `{"` (base64 `eyJ`).
    let mut parts = b.split(|&c| c == b'.');
    if let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    {
        if h.starts_with(b"eyJ")
            && [h, p, s]
                .iter()
                .all(|x| !x.is_empty() && x.iter().all(|&c| is_base64url_char(c)))
        {
            return true;
        }
    }
    // Padded base64.
    let body_len = b.len() - b.iter().rev().take_while(|&&c| c == b'=').count();
    if body_len < b.len() && b.len() - body_len <= 2 && body_len >= 12 {
        return b[..body_len]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"+-_".contains(&c));
    }
    if !b.iter().all(|&c| is_base64url_char(c)) {
        return false;
    }
    if b.len() == 20
        && AWS_ID_PREFIXES.iter().any(|p| b.starts_with(p))
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return true;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let upper = b.iter().filter(|c| c.is_ascii_uppercase()).count();
    let lower = b.iter().filter(|c| c.is_ascii_lowercase()).count();
    let letters = upper + lower;
    // Long and mixing letters with several digits: `a8f3k29dk3jd82kd`, not `getUserProfileV2`.
    if b.len() >= 16 && digits >= 2 && letters >= 1 {
        return true;
    }
    // Long base64url with all three classes.
    if b.len() >= 20 && upper >= 1 && lower >= 1 && digits >= 1 {
        return true;
    }
    // Prefixed random ids, Stripe style: `cus_9s8d7f6g5h`, `acct_1032D82eZvKYlo2C`.
    if let Some(us) = b.iter().position(|&c| c == b'_') {
        let (prefix, body) = (&b[..us], &b[us + 1..]);
        let body_digits = body.iter().filter(|c| c.is_ascii_digit()).count();
        if (2..=8).contains(&prefix.len())
            && prefix.iter().all(u8::is_ascii_lowercase)
            && body.len() >= 8
            && body.iter().all(u8::is_ascii_alphanumeric)
            && body_digits >= 2
            && body_digits < body.len()
        {
            return true;
        }
    }
    // Letters and digits alternating often look random (`9s8d7f6g5h`); words with a version
    // or size in them (`sha256sum`, `utf8mb4`) switch class at most twice.
    if b.len() >= 8 && digits >= 3 && letters >= 1 && b.iter().all(u8::is_ascii_alphanumeric) {
        let switches = b
            .windows(2)
            .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
            .count();
        if switches >= 3 {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Path normalisation
// ---------------------------------------------------------------------------------------------

/// The path part of a request target: no scheme/authority, query or fragment.
fn path_only(target: &str) -> &str {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let mut p = target.get(..end).unwrap_or("");
    for scheme in ["http://", "https://"] {
        if p.len() >= scheme.len()
            && p.get(..scheme.len())
                .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
        {
            let rest = p.get(scheme.len()..).unwrap_or("");
            p = rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("");
        }
    }
    p
}

/// Non-empty raw segments of a request target.
fn raw_segments(target: &str) -> impl Iterator<Item = &str> + Clone {
    path_only(target).split('/').filter(|s| !s.is_empty())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg<'a> {
    Lit(&'a str),
    Typed(SegmentKind),
    /// Everything past `max_segments`.
    Rest,
}

/// Segments as the learner sees them: typed, literal, and at most `max_segments` of them
/// followed by one [`Seg::Rest`] standing for the remainder.
#[derive(Clone)]
struct PathSegs<I> {
    raw: I,
    taken: usize,
    max_segments: usize,
    max_literal_bytes: usize,
    done: bool,
}

impl<'a, I: Iterator<Item = &'a str>> Iterator for PathSegs<I> {
    type Item = Seg<'a>;
    fn next(&mut self) -> Option<Seg<'a>> {
        if self.done {
            return None;
        }
        let s = self.raw.next()?;
        if self.taken >= self.max_segments {
            self.done = true;
            return Some(Seg::Rest);
        }
        self.taken += 1;
        Some(match classify_segment(s) {
            Some(k) => Seg::Typed(k),
            None if s.len() > self.max_literal_bytes => Seg::Typed(SegmentKind::Oversized),
            None => Seg::Lit(s),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Config, counters, reasons, templates
// ---------------------------------------------------------------------------------------------

/// Limits and folding thresholds of the route learner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// A position folds into `{param}` once it has seen more than this many distinct literal
    /// values (and enough of them are rare, see `fold_min_rare_percent`). Default 20.
    pub fold_min_distinct: u32,
    /// A value seen at most this many times counts as rare. Default 3.
    pub fold_rare_max_hits: u64,
    /// Percentage of a position's values that must be rare for it to fold; a position of many
    /// busy words (`/api/orders`, `/api/products`, ...) does not. Default 50.
    pub fold_min_rare_percent: u64,
    /// At a folded position, a value keeps its own template only when seen at least this many
    /// times... Default 10.
    pub stable_min_hits: u64,
    /// ...and when it carries at least this percentage of the position's traffic. Default 5.
    pub stable_min_percent: u64,
    /// Distinct literal values tracked per position. Values beyond it are parameters and are
    /// counted in `values_untracked`. Must exceed `fold_min_distinct`. Default 256.
    pub max_tracked_values: usize,
    /// Tree nodes per host; each node is one template (`/users`, `/users/{id}`, ...). A path
    /// needing a new node when the host is full is not learned (`templates_overflowed`) and
    /// templates to its longest known prefix followed by `{rest}`. Default 4096.
    pub max_templates_per_host: usize,
    /// Hosts with their own tree. Further hosts share one catch-all tree under the name `*`
    /// (`hosts_overflowed`). Default 1024.
    pub max_hosts: usize,
    /// Host names longer than this go to the catch-all host `*` (`hosts_overflowed`).
    /// Default 255, the DNS limit.
    pub max_host_bytes: usize,
    /// Methods counted per template; others are counted as `OTHER` (`methods_overflowed`).
    /// Default 16.
    pub max_methods_per_template: usize,
    /// Segments templated per path; the remainder becomes one `{rest}` (`segments_truncated`).
    /// Default 32.
    pub max_segments: usize,
    /// A segment longer than this that no recogniser claimed becomes `{param}`: route words
    /// are short. Default 64.
    pub max_literal_segment_bytes: usize,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            fold_min_distinct: 20,
            fold_rare_max_hits: 3,
            fold_min_rare_percent: 50,
            stable_min_hits: 10,
            stable_min_percent: 5,
            max_tracked_values: 256,
            max_templates_per_host: 4096,
            max_hosts: 1024,
            max_host_bytes: 255,
            max_methods_per_template: 16,
            max_segments: 32,
            max_literal_segment_bytes: 64,
        }
    }
}

/// What the learner's limits turned away, and how templates were decided.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteCounters {
    /// Calls to `observe`.
    pub observations: u64,
    /// Observations decided by an override and therefore not learned.
    pub override_hits: u64,
    /// Observations matching a spec template and therefore not learned.
    pub spec_hits: u64,
    /// Observations (or merged subtrees) not learned because their host's tree was full.
    pub templates_overflowed: u64,
    /// Observations of hosts beyond `max_hosts` or `max_host_bytes`, learned under `*`.
    pub hosts_overflowed: u64,
    /// Values not tracked at a position that already tracks `max_tracked_values`.
    pub values_untracked: u64,
    /// Method counts recorded as `OTHER`.
    pub methods_overflowed: u64,
    /// Paths longer than `max_segments`.
    pub segments_truncated: u64,
    /// Positions that folded by cardinality.
    pub positions_folded: u64,
}

impl RouteCounters {
    /// Every counter with its snake_case name, for metrics and logs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("observations", self.observations),
            ("override_hits", self.override_hits),
            ("spec_hits", self.spec_hits),
            ("templates_overflowed", self.templates_overflowed),
            ("hosts_overflowed", self.hosts_overflowed),
            ("values_untracked", self.values_untracked),
            ("methods_overflowed", self.methods_overflowed),
            ("segments_truncated", self.segments_truncated),
            ("positions_folded", self.positions_folded),
        ]
        .into_iter()
    }

    fn add(&mut self, o: &RouteCounters) {
        let pairs = [
            (&mut self.observations, o.observations),
            (&mut self.override_hits, o.override_hits),
            (&mut self.spec_hits, o.spec_hits),
            (&mut self.templates_overflowed, o.templates_overflowed),
            (&mut self.hosts_overflowed, o.hosts_overflowed),
            (&mut self.values_untracked, o.values_untracked),
            (&mut self.methods_overflowed, o.methods_overflowed),
            (&mut self.segments_truncated, o.segments_truncated),
            (&mut self.positions_folded, o.positions_folded),
        ];
        for (a, b) in pairs {
            *a = a.saturating_add(b);
        }
    }
}

/// Why a template has the shape it has. When several segments had reasons, the template
/// carries the strongest: `Override` and `Spec` decide whole paths; then `Overflow`,
/// `Cardinality`, `Typed`, `Literal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    /// Every segment is a literal route word.
    Literal,
    /// A typed recogniser made a segment a parameter.
    Typed { kind: SegmentKind },
    /// A position with many distinct values folded into `{param}`.
    Cardinality { distinct: u32 },
    /// An OpenAPI spec template matched.
    Spec,
    /// An operator override matched.
    Override,
    /// The host's tree was full; the unknown tail became `{rest}`.
    Overflow,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Literal => "literal",
            Reason::Typed { .. } => "typed",
            Reason::Cardinality { .. } => "cardinality",
            Reason::Spec => "spec",
            Reason::Override => "override",
            Reason::Overflow => "overflow",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Reason::Literal => 0,
            Reason::Typed { .. } => 1,
            Reason::Cardinality { .. } => 2,
            Reason::Overflow => 3,
            Reason::Spec => 4,
            Reason::Override => 5,
        }
    }

    /// Keeps the stronger reason; the first one seen wins a tie.
    fn strongest(self, other: Reason) -> Reason {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// A request's route template, e.g. `GET /users/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The method as sent, or `OTHER` when it is not a short token.
    pub method: String,
    /// The path template, starting with `/`.
    pub path: String,
    pub reason: Reason,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// One learned template with its traffic, for `model show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub host: String,
    pub method: String,
    pub path: String,
    pub hits: u64,
    pub reason: Reason,
}

/// Methods are tokens of at most this many bytes; anything else is `OTHER`.
const MAX_METHOD_BYTES: usize = 16;
const OTHER_METHOD: &str = "OTHER";
/// The host under which hosts beyond the limits are learned.
pub const OVERFLOW_HOST: &str = "*";

fn method_key(m: &str) -> &str {
    let ok = !m.is_empty()
        && m.len() <= MAX_METHOD_BYTES
        && m.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok {
        m
    } else {
        OTHER_METHOD
    }
}

/// Lower-cases a host and drops a default port, borrowing when nothing changes.
fn host_key(host: &str) -> Cow<'_, str> {
    let h = host.trim();
    let h = h
        .strip_suffix(":80")
        .or_else(|| h.strip_suffix(":443"))
        .unwrap_or(h);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.bytes().any(|c| c.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

// ---------------------------------------------------------------------------------------------
// Overrides
// ---------------------------------------------------------------------------------------------

/// A route override pattern could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("route pattern `{pattern}`: must start with '/'")]
    NotAbsolute { pattern: String },
    #[error("route pattern `{pattern}`: '**' may only be the last segment")]
    RestNotLast { pattern: String },
    #[error("route pattern `{pattern}`: has no segments; use '/**' to match every path")]
    Empty { pattern: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PatSeg {
    Lit(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments, last only.
    Rest,
}

/// A glob over whole paths. Segments are literal words, `*` (exactly one segment) or `**`
/// (any number of segments, only last). `/api/*/status` matches `/api/v1/status`;
/// `/files/**` matches `/files` and `/files/a/b.txt`.
///
/// The wildcard positions are the ones the rule governs: a *literal* rule keeps the segments
/// they match as sent; a *param* rule turns each `*` into `{param}` and a non-empty `**` tail
/// into `{rest}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoutePattern {
    text: String,
    segs: Vec<PatSeg>,
}

impl RoutePattern {
    pub fn parse(text: &str) -> Result<RoutePattern, PatternError> {
        let err_text = || text.to_owned();
        if !text.starts_with('/') {
            return Err(PatternError::NotAbsolute {
                pattern: err_text(),
            });
        }
        let raw: Vec<&str> = text.split('/').filter(|s| !s.is_empty()).collect();
        if raw.is_empty() {
            return Err(PatternError::Empty {
                pattern: err_text(),
            });
        }
        let mut segs = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            segs.push(match *s {
                "**" if i + 1 == raw.len() => PatSeg::Rest,
                "**" => {
                    return Err(PatternError::RestNotLast {
                        pattern: err_text(),
                    })
                }
                "*" => PatSeg::One,
                w => PatSeg::Lit(w.to_owned()),
            });
        }
        Ok(RoutePattern {
            text: text.to_owned(),
            segs,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches raw segments; on a match, writes the template into `out` (`param` chooses how
    /// wildcard positions render).
    fn render<'a>(
        &self,
        mut segs: impl Iterator<Item = &'a str>,
        param: bool,
        out: &mut String,
    ) -> bool {
        out.clear();
        for p in &self.segs {
            match p {
                PatSeg::Lit(w) => match segs.next() {
                    Some(s) if s == w => {
                        out.push('/');
                        out.push_str(s);
                    }
                    _ => return false,
                },
                PatSeg::One => match segs.next() {
                    Some(s) => {
                        out.push('/');
                        out.push_str(if param {
                            ParamKind::Param.placeholder()
                        } else {
                            s
                        });
                    }
                    None => return false,
                },
                PatSeg::Rest => {
                    let mut any = false;
                    for s in segs.by_ref() {
                        if param {
                            if !any {
                                out.push('/');
                                out.push_str(ParamKind::Rest.placeholder());
                            }
                        } else {
                            out.push('/');
                            out.push_str(s);
                        }
                        any = true;
                    }
                    return true;
                }
            }
        }
        segs.next().is_none()
    }
}

impl TryFrom<String> for RoutePattern {
    type Error = PatternError;
    fn try_from(s: String) -> Result<Self, PatternError> {
        RoutePattern::parse(&s)
    }
}

impl From<RoutePattern> for String {
    fn from(p: RoutePattern) -> String {
        p.text
    }
}

/// Operator overrides. Literal rules are tried before parameter rules, because keeping two
/// endpoints apart is the safer mistake; within a list, the first match wins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Overrides {
    /// Paths whose wildcard segments stay literal, e.g. `/api/*/status`.
    pub force_literal: Vec<RoutePattern>,
    /// Paths whose wildcard segments become parameters, e.g. `/files/**`.
    pub force_param: Vec<RoutePattern>,
}

impl Overrides {
    pub fn parse<L: AsRef<str>, P: AsRef<str>>(
        force_literal: &[L],
        force_param: &[P],
    ) -> Result<Overrides, PatternError> {
        Ok(Overrides {
            force_literal: force_literal
                .iter()
                .map(|p| RoutePattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
            force_param: force_param
                .iter()
                .map(|p| RoutePattern::parse(p.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    fn apply(&self, target: &str) -> Option<String> {
        if self.force_literal.is_empty() && self.force_param.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(target.len() + 8);
        let lists = [(&self.force_literal, false), (&self.force_param, true)];
        for (list, param) in lists {
            for p in list.iter() {
                if p.render(raw_segments(target), param, &mut out) {
                    if out.is_empty() {
                        out.push('/');
                    }
                    return Some(out);
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Spec templates
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct SpecNode {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    literals: BTreeMap<String, SpecNode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    param: Option<Box<SpecNode>>,
    /// The template that ends here, as the spec wrote it (normalised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
}

impl SpecNode {
    fn insert(&mut self, template: &str) {
        let mut norm = String::with_capacity(template.len());
        let mut node = self;
        for s in raw_segments(template) {
            norm.push('/');
            norm.push_str(s);
            node = if s.contains('{') {
                node.param.get_or_insert_with(Box::default)
            } else {
                node.literals.entry(s.to_owned()).or_default()
            };
        }
        if norm.is_empty() {
            norm.push('/');
        }
        node.template.get_or_insert(norm);
    }

    /// Depth-first, literal before parameter. Each spec node is reached by one path from the
    /// root, so the search visits every node at most once: linear in the spec, whatever the
    /// input.
    fn find<'a, 's>(&'s self, mut segs: impl Iterator<Item = &'a str> + Clone) -> Option<&'s str> {
        let Some(s) = segs.next() else {
            return self.template.as_deref();
        };
        if let Some(found) = self.literals.get(s).and_then(|n| n.find(segs.clone())) {
            return Some(found);
        }
        self.param.as_ref().and_then(|n| n.find(segs))
    }

    fn merge(&mut self, o: &SpecNode) {
        for (k, v) in &o.literals {
            self.literals.entry(k.clone()).or_default().merge(v);
        }
        if let Some(p) = &o.param {
            self.param.get_or_insert_with(Box::default).merge(p);
        }
        if self.template.is_none() {
            self.template.clone_from(&o.template);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The learned tree
// ---------------------------------------------------------------------------------------------

/// One distinct literal value at a position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lit {
    hits: u64,
    /// This value's own subtree. `None` once its position folded and the value is not stable:
    /// its traffic then continues under the position's `{param}` child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<Box<Node>>,
}

/// One template prefix. Invariant: `literals.len() <= max_tracked_values`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Node {
    /// Requests whose path ended here, per method.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    methods: BTreeMap<String, u64>,
    /// Observations that continued through a literal value at the next position.
    #[serde(default, skip_serializing_if = "is_zero")]
    through: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    literals: BTreeMap<String, Lit>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    params: BTreeMap<ParamKind, Node>,
    /// The next position folded by cardinality (sticky).
    #[serde(default, skip_serializing_if = "is_false")]
    folded: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn count_nodes(n: &Node) -> usize {
    1 + n
        .literals
        .values()
        .filter_map(|l| l.node.as_deref())
        .chain(n.params.values())
        .map(count_nodes)
        .sum::<usize>()
}

/// One host's tree and its node count (recomputed on load, never trusted from a file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HostRoutes {
    root: Node,
    nodes: usize,
}

impl Serialize for HostRoutes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.root.serialize(s)
    }
}

impl<'de> Deserialize<'de> for HostRoutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let root = Node::deserialize(d)?;
        Ok(HostRoutes {
            nodes: count_nodes(&root),
            root,
        })
    }
}

/// Mutable context threaded through tree updates.
struct Ctx<'c> {
    cfg: &'c RouteConfig,
    counters: &'c mut RouteCounters,
    nodes: &'c mut usize,
}

impl Ctx<'_> {
    /// Reserves room for `n` new nodes, or reports that the host is full.
    fn grow(&mut self, n: usize) -> bool {
        match self.nodes.checked_add(n) {
            Some(t) if t <= self.cfg.max_templates_per_host => {
                *self.nodes = t;
                true
            }
            _ => false,
        }
    }

    fn stable(&self, hits: u64, through: u64) -> bool {
        is_stable(self.cfg, hits, through)
    }
}

fn is_stable(cfg: &RouteConfig, hits: u64, through: u64) -> bool {
    hits >= cfg.stable_min_hits
        && u128::from(hits) * 100 >= u128::from(cfg.stable_min_percent) * u128::from(through)
}

fn should_fold(cfg: &RouteConfig, n: &Node) -> bool {
    let distinct = n.literals.len();
    if distinct <= cfg.fold_min_distinct as usize {
        return false;
    }
    let rare = n
        .literals
        .values()
        .filter(|l| l.hits <= cfg.fold_rare_max_hits)
        .count();
    (rare as u128) * 100 >= u128::from(cfg.fold_min_rare_percent) * distinct as u128
}

fn add_method(node: &mut Node, method: &str, count: u64, ctx: &mut Ctx) {
    let key = if node.methods.contains_key(method)
        || node.methods.len() < ctx.cfg.max_methods_per_template
    {
        method
    } else {
        ctx.counters.methods_overflowed = ctx.counters.methods_overflowed.saturating_add(count);
        OTHER_METHOD
    };
    let c = node.methods.entry(key.to_owned()).or_default();
    *c = c.saturating_add(count);
}

/// The child for parameter `k`, created if the host has room.
fn param_child<'n>(node: &'n mut Node, k: ParamKind, ctx: &mut Ctx) -> Option<&'n mut Node> {
    match node.params.entry(k) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) => ctx.grow(1).then(|| e.insert(Node::default())),
    }
}

fn overflow(ctx: &mut Ctx) {
    ctx.counters.templates_overflowed = ctx.counters.templates_overflowed.saturating_add(1);
}

fn insert<'a>(
    node: &mut Node,
    mut segs: impl Iterator<Item = Seg<'a>>,
    method: &str,
    ctx: &mut Ctx,
) {
    let Some(seg) = segs.next() else {
        add_method(node, method, 1, ctx);
        return;
    };
    let k = match seg {
        Seg::Typed(k) => k.param(),
        Seg::Rest => ParamKind::Rest,
        Seg::Lit(s) => {
            node.through = node.through.saturating_add(1);
            if !node.literals.contains_key(s) {
                if node.literals.len() < ctx.cfg.max_tracked_values {
                    node.literals.insert(s.to_owned(), Lit::default());
                    if !node.folded && should_fold(ctx.cfg, node) {
                        fold(node, ctx);
                    }
                } else {
                    ctx.counters.values_untracked = ctx.counters.values_untracked.saturating_add(1);
                }
            }
            let (folded, through) = (node.folded, node.through);
            if let Some(lit) = node.literals.get_mut(s) {
                lit.hits = lit.hits.saturating_add(1);
                if !folded || is_stable(ctx.cfg, lit.hits, through) {
                    if lit.node.is_none() {
                        if !ctx.grow(1) {
                            overflow(ctx);
                            return;
                        }
                        lit.node = Some(Box::default());
                    }
                    if let Some(child) = lit.node.as_deref_mut() {
                        insert(child, segs, method, ctx);
                    }
                    return;
                }
            }
            ParamKind::Param
        }
    };
    match param_child(node, k, ctx) {
        Some(child) => insert(child, segs, method, ctx),
        None => overflow(ctx),
    }
}

/// Folds a position: every value that is not stable hands its subtree to the `{param}` child.
/// Idempotent; also used after a merge to restore the invariant.
fn fold(node: &mut Node, ctx: &mut Ctx) {
    if !node.folded {
        node.folded = true;
        ctx.counters.positions_folded = ctx.counters.positions_folded.saturating_add(1);
    }
    let through = node.through;
    let mut moved = Vec::new();
    for lit in node.literals.values_mut() {
        if !ctx.stable(lit.hits, through) {
            if let Some(sub) = lit.node.take() {
                moved.push(sub);
            }
        }
    }
    if moved.is_empty() {
        return;
    }
    // The moved subtrees leave the count; merging re-adds only the nodes that are new.
    let freed: usize = moved.iter().map(|n| count_nodes(n)).sum();
    *ctx.nodes = ctx.nodes.saturating_sub(freed);
    if let Some(dst) = param_child(node, ParamKind::Param, ctx) {
        for sub in &moved {
            merge_node(dst, sub, ctx);
        }
    }
}

/// Adds `src`'s counts and subtrees into `dst`, creating nodes only while the host has room.
fn merge_node(dst: &mut Node, src: &Node, ctx: &mut Ctx) {
    for (m, c) in &src.methods {
        add_method(dst, m, *c, ctx);
    }
    dst.through = dst.through.saturating_add(src.through);
    for (k, sl) in &src.literals {
        if !dst.literals.contains_key(k) {
            if dst.literals.len() >= ctx.cfg.max_tracked_values {
                ctx.counters.values_untracked =
                    ctx.counters.values_untracked.saturating_add(sl.hits);
                if let Some(sub) = sl.node.as_deref() {
                    if let Some(p) = param_child(dst, ParamKind::Param, ctx) {
                        merge_node(p, sub, ctx);
                    }
                }
                continue;
            }
            dst.literals.insert(k.clone(), Lit::default());
        }
        let Some(dl) = dst.literals.get_mut(k) else {
            continue;
        };
        dl.hits = dl.hits.saturating_add(sl.hits);
        if let Some(sub) = sl.node.as_deref() {
            match dl.node.as_deref_mut() {
                Some(d) => merge_node(d, sub, ctx),
                None => {
                    let n = count_nodes(sub);
                    if ctx.grow(n) {
                        dl.node = Some(Box::new(sub.clone()));
                    } else {
                        overflow(ctx);
                    }
                }
            }
        }
    }
    for (k, sp) in &src.params {
        match dst.params.get_mut(k) {
            Some(d) => merge_node(d, sp, ctx),
            None => {
                if ctx.grow(count_nodes(sp)) {
                    dst.params.insert(*k, sp.clone());
                } else {
                    overflow(ctx);
                }
            }
        }
    }
    if dst.folded || src.folded || should_fold(ctx.cfg, dst) {
        fold(dst, ctx);
    }
}

// ---------------------------------------------------------------------------------------------
// The learner
// ---------------------------------------------------------------------------------------------

/// Learns route templates per host from observed requests. Serializable, so a learned model
/// can be stored, and mergeable, so models learned on several sensors can be combined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteLearner {
    config: RouteConfig,
    overrides: Overrides,
    spec: SpecNode,
    hosts: BTreeMap<String, HostRoutes>,
    counters: RouteCounters,
}

impl RouteLearner {
    /// A learner with the given limits. `max_tracked_values` is raised to exceed
    /// `fold_min_distinct`, since a position must track enough values to decide to fold.
    pub fn new(mut config: RouteConfig) -> Self {
        let need = (config.fold_min_distinct as usize).saturating_add(1);
        config.max_tracked_values = config.max_tracked_values.max(need);
        RouteLearner {
            config,
            ..RouteLearner::default()
        }
    }

    /// Adds OpenAPI path templates (`/pets/{petId}`). A segment containing `{` is a parameter;
    /// requests matching a spec template get it verbatim.
    pub fn with_spec_paths<S: AsRef<str>>(mut self, paths: impl IntoIterator<Item = S>) -> Self {
        for p in paths {
            self.spec.insert(p.as_ref());
        }
        self
    }

    /// [`RouteLearner::with_spec_paths`] on a running learner (a spec reloaded on SIGHUP).
    pub fn add_spec_paths<S: AsRef<str>>(&mut self, paths: impl IntoIterator<Item = S>) {
        for p in paths {
            self.spec.insert(p.as_ref());
        }
    }

    pub fn with_overrides(mut self, overrides: Overrides) -> Self {
        self.overrides = overrides;
        self
    }

    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    pub fn counters(&self) -> &RouteCounters {
        &self.counters
    }

    /// The tree a host is learned under: its own, or `*` once the host limits are reached.
    fn host_slot<'h>(&self, host: &'h str) -> (Cow<'h, str>, bool) {
        let key = host_key(host);
        if key.len() > self.config.max_host_bytes {
            return (Cow::Borrowed(OVERFLOW_HOST), true);
        }
        if !self.hosts.contains_key(key.as_ref()) && self.hosts.len() >= self.config.max_hosts {
            return (Cow::Borrowed(OVERFLOW_HOST), true);
        }
        (key, false)
    }

    fn path_segs<'a>(&self, path: &'a str) -> PathSegs<impl Iterator<Item = &'a str> + Clone> {
        PathSegs {
            raw: raw_segments(path),
            taken: 0,
            max_segments: self.config.max_segments,
            max_literal_bytes: self.config.max_literal_segment_bytes,
            done: false,
        }
    }

    /// Learns from one request.
    pub fn observe(&mut self, host: &str, method: &str, path: &str) {
        self.counters.observations = self.counters.observations.saturating_add(1);
        if self.overrides.apply(path).is_some() {
            self.counters.override_hits = self.counters.override_hits.saturating_add(1);
            return;
        }
        if self.spec.find(raw_segments(path)).is_some() {
            self.counters.spec_hits = self.counters.spec_hits.saturating_add(1);
            return;
        }
        if raw_segments(path).nth(self.config.max_segments).is_some() {
            self.counters.segments_truncated = self.counters.segments_truncated.saturating_add(1);
        }
        let (key, overflowed) = self.host_slot(host);
        if overflowed {
            self.counters.hosts_overflowed = self.counters.hosts_overflowed.saturating_add(1);
        }
        let segs = self.path_segs(path);
        let method = method_key(method);
        let entry = match self.hosts.get_mut(key.as_ref()) {
            Some(e) => e,
            None => self.hosts.entry(key.into_owned()).or_insert(HostRoutes {
                root: Node::default(),
                nodes: 1,
            }),
        };
        let mut ctx = Ctx {
            cfg: &self.config,
            counters: &mut self.counters,
            nodes: &mut entry.nodes,
        };
        insert(&mut entry.root, segs, method, &mut ctx);
    }

    /// The template of one request. Read-only: an unseen path is templated by the recognisers
    /// alone, every literal kept.
    pub fn template_of(&self, host: &str, method: &str, path: &str) -> Template {
        let (path, reason) = self.path_template(host, path);
        Template {
            method: method_key(method).to_owned(),
            path,
            reason,
        }
    }

    /// The path of [`RouteLearner::template_of`] alone: templates do not depend on the method,
    /// and a caller that keys by the method it already has need not copy it again.
    pub fn template_path_of(&self, host: &str, path: &str) -> String {
        self.path_template(host, path).0
    }

    /// [`RouteLearner::template_path_of`] written over `out`, reusing its capacity (the
    /// per-request path of detection makes one template per transaction).
    pub fn template_path_into(&self, host: &str, path: &str, out: &mut String) {
        self.path_template_into(host, path, out);
    }

    fn path_template(&self, host: &str, path: &str) -> (String, Reason) {
        let mut out = String::with_capacity(path.len() + 8);
        let reason = self.path_template_into(host, path, &mut out);
        (out, reason)
    }

    /// Writes the template of `path` over `out`; why it is what it is.
    fn path_template_into(&self, host: &str, path: &str, out: &mut String) -> Reason {
        out.clear();
        if let Some(path) = self.overrides.apply(path) {
            out.push_str(&path);
            return Reason::Override;
        }
        if let Some(t) = self.spec.find(raw_segments(path)) {
            out.push_str(t);
            return Reason::Spec;
        }
        let (key, _) = self.host_slot(host);
        let routes = self.hosts.get(key.as_ref());
        let full = routes.is_some_and(|r| r.nodes >= self.config.max_templates_per_host);
        let mut node = routes.map(|r| &r.root);
        let mut reason = Reason::Literal;
        for seg in self.path_segs(path) {
            let (text, next, why) = match (seg, node) {
                (Seg::Typed(k), n) => {
                    let p = k.param();
                    (
                        p.placeholder(),
                        n.and_then(|n| n.params.get(&p)),
                        Reason::Typed { kind: k },
                    )
                }
                (Seg::Rest, n) => (
                    ParamKind::Rest.placeholder(),
                    n.and_then(|n| n.params.get(&ParamKind::Rest)),
                    Reason::Literal,
                ),
                (Seg::Lit(s), None) => (s, None, Reason::Literal),
                (Seg::Lit(s), Some(n)) => {
                    let lit = n.literals.get(s);
                    let stable = lit.is_some_and(|l| is_stable(&self.config, l.hits, n.through));
                    // Values a full position could not track were learned as parameters.
                    let untracked =
                        lit.is_none() && n.literals.len() >= self.config.max_tracked_values;
                    if (n.folded && !stable) || untracked {
                        let distinct = u32::try_from(n.literals.len()).unwrap_or(u32::MAX);
                        (
                            ParamKind::Param.placeholder(),
                            n.params.get(&ParamKind::Param),
                            Reason::Cardinality { distinct },
                        )
                    } else {
                        (s, lit.and_then(|l| l.node.as_deref()), Reason::Literal)
                    }
                }
            };
            out.push('/');
            if node.is_some() && next.is_none() && full {
                // A full host could not learn this path: the longest known prefix, then a
                // catch-all, so unlearnable paths do not each make a template downstream.
                out.push_str(ParamKind::Rest.placeholder());
                reason = reason.strongest(Reason::Overflow);
                break;
            }
            out.push_str(text);
            reason = reason.strongest(why);
            node = next;
        }
        if out.is_empty() {
            out.push('/');
        }
        reason
    }

    /// Adds another learner's state into this one. Counts add up; folding decisions are ORed
    /// and re-evaluated; spec paths are united; this learner's config and overrides are kept.
    pub fn merge(&mut self, other: &RouteLearner) {
        self.spec.merge(&other.spec);
        self.counters.add(&other.counters);
        for (host, theirs) in &other.hosts {
            let key = if self.hosts.contains_key(host) || self.hosts.len() < self.config.max_hosts {
                host.clone()
            } else {
                self.counters.hosts_overflowed = self.counters.hosts_overflowed.saturating_add(1);
                OVERFLOW_HOST.to_owned()
            };
            let mine = self.hosts.entry(key).or_insert(HostRoutes {
                root: Node::default(),
                nodes: 1,
            });
            let mut ctx = Ctx {
                cfg: &self.config,
                counters: &mut self.counters,
                nodes: &mut mine.nodes,
            };
            merge_node(&mut mine.root, &theirs.root, &mut ctx);
        }
    }

    /// Every learned template with traffic, per host and method, for `model show`.
    pub fn templates(&self) -> Vec<TemplateSummary> {
        let mut out = Vec::new();
        for (host, routes) in &self.hosts {
            let mut path = String::new();
            collect(host, &routes.root, &mut path, Reason::Literal, &mut out);
        }
        out
    }
}

fn collect(
    host: &str,
    node: &Node,
    path: &mut String,
    reason: Reason,
    out: &mut Vec<TemplateSummary>,
) {
    for (m, hits) in &node.methods {
        out.push(TemplateSummary {
            host: host.to_owned(),
            method: m.clone(),
            path: if path.is_empty() {
                "/".to_owned()
            } else {
                path.clone()
            },
            hits: *hits,
            reason,
        });
    }
    let len = path.len();
    for (word, lit) in &node.literals {
        if let Some(sub) = lit.node.as_deref() {
            path.push('/');
            path.push_str(word);
            collect(host, sub, path, reason, out);
            path.truncate(len);
        }
    }
    for (k, sub) in &node.params {
        let why = match k {
            ParamKind::Param if node.folded => Reason::Cardinality {
                distinct: u32::try_from(node.literals.len()).unwrap_or(u32::MAX),
            },
            ParamKind::Rest => Reason::Literal,
            k => Reason::Typed {
                kind: typed_kind_of(*k),
            },
        };
        path.push('/');
        path.push_str(k.placeholder());
        collect(host, sub, path, reason.strongest(why), out);
        path.truncate(len);
    }
}

/// The recogniser kind a parameter child stands for, for explanations.
fn typed_kind_of(k: ParamKind) -> SegmentKind {
    match k {
        ParamKind::Id => SegmentKind::Integer,
        ParamKind::Uuid => SegmentKind::Uuid,
        ParamKind::Hash => SegmentKind::Hash,
        ParamKind::Date => SegmentKind::Date,
        ParamKind::Email => SegmentKind::Email,
        ParamKind::Token => SegmentKind::Token,
        ParamKind::Param | ParamKind::Rest => SegmentKind::Encoded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_segments(cases: &[(&str, Option<SegmentKind>)]) {
        for (seg, want) in cases {
            assert_eq!(classify_segment(seg), *want, "segment {seg:?}");
        }
    }

    #[test]
    fn recognisers_type_ids_and_leave_route_words_alone() {
        use SegmentKind::*;
        check_segments(&[
            ("100", Some(Integer)),
            ("0", Some(Integer)),
            ("18446744073709551616000", Some(Integer)),
            ("123e4567-e89b-12d3-a456-426614174000", Some(Uuid)),
            ("123E4567-E89B-12D3-A456-426614174000", Some(Uuid)),
            ("123e4567-e89b-12d3-a456-42661417400", Some(Token)),
            ("not-a-uuid-but-words", None),
            ("123e4567xe89b-12d3-a456-426614174000", Some(Token)),
            ("cafe1234", Some(Hash)),
            ("d41d8cd98f00b204e9800998ecf8427e", Some(Hash)),
            ("da39a3ee5e6b4b0d3255bfef95601890afd80709", Some(Hash)),
            ("deadbeefcafebabe", Some(Hash)),
            ("deadbeef", None),
            ("facade", None),
            ("abc123", None),
            ("2024-01-31", Some(Date)),
            ("20240131", Some(Date)),
            ("2024-02-30", None),
            ("2024-13-01", None),
            ("20241301", Some(Integer)),
            ("alice@example.com", Some(Email)),
            ("a.b+tag@mail.example.co", Some(Email)),
            ("alice@localhost", None),
            ("@example.com", None),
            ("a@b@example.com", None),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
                Some(Token),
            ),
            ("dGhpcyBpcyBhIHRlc3Q=", Some(Token)),
            ("a8f3k29dk3jd82kd", Some(Token)),
            ("cus_9s8d7f6g5h", Some(Token)),
            ("acct_1032D82eZvKYlo2C", Some(Token)),
            ("AKIAIOSFODNN7EXAMPLE", Some(Token)),
            ("9s8d7f6g5h", Some(Token)),
            ("Zx9Qm2LpR7tY4wKc8VbN", Some(Token)),
            ("hello%20world", Some(Encoded)),
            ("S%C3%A3o_Paulo", Some(Encoded)),
            ("100%", None),
            ("onboardingStatus", None),
            ("getUserProfileV2", None),
            ("v2", None),
            ("api", None),
            ("me", None),
            ("search", None),
            ("2fa", None),
            ("sha256sum", None),
            ("utf8mb4", None),
            ("oauth2", None),
            ("user_settings", None),
            ("api_v2beta", None),
            ("index.html", None),
            ("favicon.ico", None),
            ("SKU-01559", Some(PrefixedId)),
            ("ORD-2024-0001", Some(PrefixedId)),
            ("inv_10442", Some(PrefixedId)),
            ("v2-beta", None),
            ("oauth2_callback", None),
            ("x-1", None),
            ("rfc-7231", Some(PrefixedId)),
            ("", None),
        ]);
    }

    fn learner() -> RouteLearner {
        RouteLearner::new(RouteConfig::default())
    }

    /// Observes every path once on host `h`, then asserts each path's template, through both
    /// ways of asking for it.
    fn check(l: &RouteLearner, cases: &[(&str, &str)]) {
        for (path, want) in cases {
            assert_eq!(l.template_of("h", "GET", path).path, *want, "path {path:?}");
            assert_eq!(l.template_path_of("h", path), *want, "path {path:?}");
        }
    }

    #[test]
    fn paths_are_normalised_before_templating() {
        let l = learner();
        check(
            &l,
            &[
                ("/", "/"),
                ("", "/"),
                ("?x=1", "/"),
                ("/users/", "/users"),
                ("//users///100/", "/users/{id}"),
                ("/users/100?expand=orders#top", "/users/{id}"),
                ("/users/100#frag?x", "/users/{id}"),
                ("http://api.example.com/users/7?x", "/users/{id}"),
                ("HTTPS://api.example.com", "/"),
                ("/a/../b", "/a/../b"),
            ],
        );
    }

    #[test]
    fn typed_segments_merge_without_any_learning() {
        let mut l = learner();
        for i in 100..130 {
            l.observe("h", "GET", &format!("/users/{i}"));
        }
        let t = l.template_of("h", "GET", "/users/101");
        assert_eq!(t.to_string(), "GET /users/{id}");
        assert_eq!(
            t.reason,
            Reason::Typed {
                kind: SegmentKind::Integer
            }
        );
        check(
            &l,
            &[
                ("/users/9999999", "/users/{id}"),
                (
                    "/orders/123e4567-e89b-12d3-a456-426614174000/items/3",
                    "/orders/{uuid}/items/{id}",
                ),
                ("/reports/2024-01-31", "/reports/{date}"),
                ("/customers/cus_9s8d7f6g5h", "/customers/{token}"),
            ],
        );
    }

    /// Peer failure: `/org/onboardingStatus` folded into `/org/{param}`.
    #[test]
    fn few_stable_words_stay_literal() {
        let mut l = learner();
        for _ in 0..50 {
            for p in [
                "/org/settings",
                "/org/onboardingStatus",
                "/org/members",
                "/org/billing",
            ] {
                l.observe("h", "GET", p);
            }
        }
        let t = l.template_of("h", "GET", "/org/onboardingStatus");
        assert_eq!(t.path, "/org/onboardingStatus");
        assert_eq!(t.reason, Reason::Literal);
        check(
            &l,
            &[("/org/settings", "/org/settings"), ("/org/new", "/org/new")],
        );
        assert_eq!(l.counters().positions_folded, 0);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("user{}name", char::from(b'a' + (i % 26) as u8)).repeat(1 + i / 26))
            .collect()
    }

    /// Peer failure: `/users/alice`, `/users/bob`, ... never merged.
    #[test]
    fn many_rare_names_fold_into_a_parameter() {
        let mut l = learner();
        for name in names(50) {
            l.observe("h", "GET", &format!("/users/{name}"));
            l.observe("h", "GET", &format!("/users/{name}/repos"));
        }
        let t = l.template_of("h", "GET", "/users/usercname");
        assert_eq!(t.path, "/users/{param}");
        assert_eq!(t.reason, Reason::Cardinality { distinct: 50 });
        check(
            &l,
            &[
                ("/users/someone-new", "/users/{param}"),
                ("/users/usercname/repos", "/users/{param}/repos"),
                ("/users/brandnew/repos", "/users/{param}/repos"),
            ],
        );
        assert_eq!(l.counters().positions_folded, 1);
        // Only `/`, `/users`, `/users/{param}`, `/users/{param}/repos` remain.
        let paths: Vec<_> = l.templates().into_iter().map(|t| t.path).collect();
        assert_eq!(paths, ["/users/{param}", "/users/{param}/repos"]);
    }

    #[test]
    fn a_busy_literal_keeps_its_endpoint_next_to_folded_names() {
        let mut l = learner();
        for name in names(50) {
            l.observe("h", "GET", &format!("/users/{name}"));
            l.observe("h", "GET", "/users/me");
            l.observe("h", "GET", "/users/me/settings");
        }
        check(
            &l,
            &[
                ("/users/me", "/users/me"),
                ("/users/me/settings", "/users/me/settings"),
                ("/users/userbname", "/users/{param}"),
            ],
        );
    }

    #[test]
    fn many_busy_resources_do_not_fold() {
        let mut l = learner();
        for r in names(30) {
            for round in 0..5 {
                l.observe("h", "GET", &format!("/api/{r}"));
                l.observe("h", "GET", &format!("/api/{r}/{round}"));
            }
        }
        // Each resource is busy by the time the next appears: when the 21st arrives, only it is
        // rare, so the position does not fold even with more than `fold_min_distinct` values.
        check(
            &l,
            &[
                ("/api/useraname", "/api/useraname"),
                ("/api/userbname/7", "/api/userbname/{id}"),
            ],
        );
        assert_eq!(l.counters().positions_folded, 0);
    }

    #[test]
    fn spec_templates_take_precedence_and_literals_beat_parameters() {
        let l = learner().with_spec_paths([
            "/pets/{petId}",
            "/pets/mine",
            "/pets/{petId}/owner",
            "/a/b/c",
            "/a/{x}/d",
            "/",
        ]);
        let t = l.template_of("h", "GET", "/pets/123");
        assert_eq!((t.path.as_str(), t.reason), ("/pets/{petId}", Reason::Spec));
        check(
            &l,
            &[
                ("/pets/mine", "/pets/mine"),
                ("/pets/alice", "/pets/{petId}"),
                ("/pets/mine/owner", "/pets/{petId}/owner"),
                ("/a/b/c", "/a/b/c"),
                ("/a/b/d", "/a/{x}/d"),
                ("/a/b/e", "/a/b/e"),
                ("/?q=1", "/"),
            ],
        );
        assert_eq!(l.template_of("h", "GET", "/a/b/e").reason, Reason::Literal);

        let mut l = l;
        l.observe("h", "GET", "/pets/1");
        assert_eq!(l.counters().spec_hits, 1);
        assert!(l.templates().is_empty());
    }

    #[test]
    fn overrides_force_literal_and_parameter_segments() {
        let o = Overrides::parse(
            &["/api/*/status", "/files/readme"],
            &["/files/**", "/t/*/x"],
        )
        .unwrap();
        let mut l = learner().with_overrides(o);
        let cases = [
            ("/api/12345/status", "/api/12345/status"),
            ("/files/a/b/c.txt", "/files/{rest}"),
            ("/files", "/files"),
            ("/files/readme", "/files/readme"),
            ("/t/anything/x", "/t/{param}/x"),
        ];
        for (path, want) in cases {
            let t = l.template_of("h", "GET", path);
            assert_eq!(
                (t.path.as_str(), t.reason),
                (want, Reason::Override),
                "{path}"
            );
            assert_eq!(l.template_path_of("h", path), want, "{path}");
            l.observe("h", "GET", path);
        }
        assert_eq!(l.counters().override_hits, cases.len() as u64);
        // Not matching any override: learned as usual.
        assert_eq!(l.template_of("h", "GET", "/api/12345").path, "/api/{id}");
        assert_eq!(l.template_of("h", "GET", "/t/a/y").path, "/t/a/y");
    }

    #[test]
    fn override_patterns_are_validated() {
        let cases: [(&str, Option<PatternError>); 5] = [
            ("/a/*/b", None),
            ("/**", None),
            (
                "a/b",
                Some(PatternError::NotAbsolute {
                    pattern: "a/b".into(),
                }),
            ),
            (
                "/a/**/b",
                Some(PatternError::RestNotLast {
                    pattern: "/a/**/b".into(),
                }),
            ),
            (
                "//",
                Some(PatternError::Empty {
                    pattern: "//".into(),
                }),
            ),
        ];
        for (p, want) in cases {
            assert_eq!(RoutePattern::parse(p).err(), want, "{p}");
        }
        let e = RoutePattern::parse("a").unwrap_err().to_string();
        assert_eq!(e, "route pattern `a`: must start with '/'");
    }

    #[test]
    fn template_cap_stops_growth_and_counts_a_catch_all() {
        let cfg = RouteConfig {
            max_templates_per_host: 5,
            ..RouteConfig::default()
        };
        let mut l = RouteLearner::new(cfg);
        for p in ["/a", "/b", "/c", "/d", "/e", "/f/g"] {
            l.observe("h", "GET", p);
        }
        let routes = &l.hosts["h"];
        assert_eq!(routes.nodes, 5);
        assert_eq!(count_nodes(&routes.root), 5);
        assert_eq!(l.counters().templates_overflowed, 2);
        let t = l.template_of("h", "GET", "/f/g");
        assert_eq!((t.path.as_str(), t.reason), ("/{rest}", Reason::Overflow));
        assert_eq!(l.template_of("h", "GET", "/a").path, "/a");
        // Another host has its own budget.
        assert_eq!(l.template_of("other", "GET", "/f/g").path, "/f/g");
    }

    #[test]
    fn host_cap_sends_new_hosts_to_the_catch_all_host() {
        let cfg = RouteConfig {
            max_hosts: 2,
            ..RouteConfig::default()
        };
        let mut l = RouteLearner::new(cfg);
        for h in [
            "a.example",
            "B.EXAMPLE:443",
            "b.example",
            "c.example",
            "d.example",
        ] {
            l.observe(h, "GET", "/x");
        }
        let hosts: Vec<_> = l.hosts.keys().cloned().collect();
        assert_eq!(hosts, ["*", "a.example", "b.example"]);
        assert_eq!(l.counters().hosts_overflowed, 2);
    }

    #[test]
    fn methods_and_segments_are_capped() {
        let cfg = RouteConfig {
            max_methods_per_template: 2,
            max_segments: 3,
            ..RouteConfig::default()
        };
        let mut l = RouteLearner::new(cfg);
        for m in ["GET", "POST", "PUT", "DELETE", "not a method"] {
            l.observe("h", m, "/x");
        }
        let methods: Vec<_> = l
            .templates()
            .into_iter()
            .map(|t| (t.method, t.hits))
            .collect();
        assert_eq!(
            methods,
            [("GET".into(), 1), ("OTHER".into(), 3), ("POST".into(), 1)]
        );
        assert_eq!(l.counters().methods_overflowed, 2);
        l.observe("h", "GET", "/a/b/c/d/e");
        assert_eq!(l.counters().segments_truncated, 1);
        assert_eq!(
            l.template_of("h", "GET", "/a/b/c/d/e").path,
            "/a/b/c/{rest}"
        );
        assert_eq!(l.template_of("h", "GET", "/a/b/c/x").path, "/a/b/c/{rest}");
        let long = "x".repeat(65);
        assert_eq!(
            l.template_of("h", "GET", &format!("/{long}")).path,
            "/{param}"
        );
    }

    #[test]
    fn tracked_values_are_capped_per_position() {
        let cfg = RouteConfig {
            max_tracked_values: 30,
            ..RouteConfig::default()
        };
        let mut l = RouteLearner::new(cfg);
        for name in names(40) {
            l.observe("h", "GET", &format!("/users/{name}"));
        }
        let users = l.hosts["h"].root.literals["users"].node.as_deref().unwrap();
        assert_eq!(users.literals.len(), 30);
        assert_eq!(l.counters().values_untracked, 10);
        assert_eq!(
            l.template_of("h", "GET", "/users/zzz").path,
            "/users/{param}"
        );
    }

    #[test]
    fn values_past_the_tracking_cap_are_parameters_even_unfolded() {
        let cfg = RouteConfig {
            max_tracked_values: 21,
            ..RouteConfig::default()
        };
        let mut l = RouteLearner::new(cfg);
        for name in names(21) {
            for _ in 0..5 {
                l.observe("h", "GET", &format!("/api/{name}"));
            }
        }
        l.observe("h", "GET", "/api/newcomer");
        assert_eq!(l.counters().positions_folded, 0);
        assert_eq!(l.counters().values_untracked, 1);
        check(
            &l,
            &[
                ("/api/useraname", "/api/useraname"),
                ("/api/newcomer", "/api/{param}"),
            ],
        );
    }

    fn learn(paths: &[String]) -> RouteLearner {
        let mut l = learner();
        for p in paths {
            l.observe("h", "GET", p);
        }
        l
    }

    #[test]
    fn merging_two_learners_equals_learning_the_union() {
        // Neither half has enough names to fold; together they do.
        let mut a_paths = Vec::new();
        let mut b_paths = Vec::new();
        for (i, name) in names(30).into_iter().enumerate() {
            let dst = if i % 2 == 0 {
                &mut a_paths
            } else {
                &mut b_paths
            };
            dst.push(format!("/users/{name}/repos"));
            dst.push(format!("/orders/{i}"));
            dst.push("/org/settings".to_owned());
        }
        let mut merged = learn(&a_paths);
        assert_eq!(merged.counters().positions_folded, 0);
        merged.merge(&learn(&b_paths));
        let all: Vec<String> = a_paths.iter().chain(&b_paths).cloned().collect();
        let union = learn(&all);
        assert_eq!(merged.templates(), union.templates());
        for p in all.iter().chain(["/users/new/repos".to_owned()].iter()) {
            assert_eq!(
                merged.template_of("h", "GET", p),
                union.template_of("h", "GET", p),
                "{p}"
            );
        }
        assert_eq!(
            merged.template_of("h", "GET", "/users/x/repos").path,
            "/users/{param}/repos"
        );
        assert_eq!(
            merged.hosts["h"].nodes,
            count_nodes(&merged.hosts["h"].root)
        );
    }

    #[test]
    fn learner_state_round_trips_through_json() {
        let mut l = learner()
            .with_spec_paths(["/pets/{petId}"])
            .with_overrides(Overrides::parse(&["/api/*/status"], &["/files/**"]).unwrap());
        for name in names(40) {
            l.observe("h", "GET", &format!("/users/{name}/repos/{}", name.len()));
        }
        let json = serde_json::to_string(&l).unwrap();
        let back: RouteLearner = serde_json::from_str(&json).unwrap();
        assert_eq!(back, l);
        assert_eq!(
            back.template_of("h", "GET", "/users/q/repos/1").path,
            "/users/{param}/repos/{id}"
        );
        assert!(
            serde_json::from_str::<RouteLearner>(r#"{"overrides":{"force_literal":["x"]}}"#)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_paths_never_panic_and_keep_the_node_count(
            paths in proptest::collection::vec(("[a-c]{0,2}", "\\PC{0,40}|(/[a-z0-9%._@-]{0,12}){0,40}"), 1..60),
        ) {
            let cfg = RouteConfig { max_templates_per_host: 64, fold_min_distinct: 3, max_segments: 8, ..RouteConfig::default() };
            let mut l = RouteLearner::new(cfg).with_spec_paths(["/s/{x}"]);
            for (m, p) in &paths {
                l.observe("h", m, p);
                let t = l.template_of("h", m, p);
                prop_assert!(t.path.starts_with('/'));
                prop_assert_eq!(&l.template_of("h", m, p), &t);
            }
            let r = &l.hosts["h"];
            prop_assert!(r.nodes <= 64);
            prop_assert_eq!(r.nodes, count_nodes(&r.root));
            let mut m = learner();
            m.merge(&l);
            prop_assert_eq!(m.hosts["h"].nodes, count_nodes(&m.hosts["h"].root));
        }
    }
}

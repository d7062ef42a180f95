//! Feature vectors of the learned models: the shape of one request, and one caller's window.
//!
//! Request shape ([`SHAPE_FEATURES`]): sizes and counts on a log scale (so a 3000-byte value
//! where 3-byte ones were is far away while 30 against 20 is not), two character-mix shares, and
//! the strongest per-parameter departure from the endpoint's learned [`ValueShape`]s (type
//! change, range, length, enum, format, character class). That last feature is the explainable
//! part: the mixture learns how often an endpoint's ordinary traffic already departs a little,
//! and the parameter behind the strongest departure is named in the evidence.
//!
//! Caller window ([`WINDOW_FEATURES`]): per client (pseudonym, else address), per tumbling window
//! of capture time, requests, distinct endpoints, distinct objects (path parameter values),
//! error share and response bytes.
//!
//! Invariants: one walk of a request gives every shape feature and the worst departure; the
//! walk visits at most `max_scan_values` values and `MAX_DEPTH` levels; it allocates only for
//! percent-encoded query values and for the one departure it reports. A window keeps at most
//! `max_distinct` hashes per set. Hashes are FNV-1a, so they are the same on every run.
//!
//! [`ValueShape`]: crate::baseline::shape::ValueShape

use crate::baseline::profile::{EndpointKey, EndpointProfile};
use crate::baseline::shape::{DeviationKind, ValueType};
use crate::common::Timestamp;
use crate::inventory::params::percent_decode;
use crate::transaction::Request;
use serde_json::Value;
use std::borrow::Cow;

/// Request-shape features, in vector order.
pub const SHAPE_FEATURES: [&str; SHAPE_DIM] = [
    "query_params",
    "body_fields",
    "body_containers",
    "request_bytes",
    "max_value_bytes",
    "numeric_share",
    "symbol_share",
    "shape_departure",
];
pub const SHAPE_DIM: usize = 8;
/// Spread floors of the shape features: a log count must move by about a third (×1.4) or a
/// share by a tenth before it is one spread away.
pub const SHAPE_MIN_SCALE: [f64; SHAPE_DIM] = [0.35, 0.35, 0.35, 0.35, 0.35, 0.1, 0.05, 0.1];

/// Caller-window features, in vector order.
pub const WINDOW_FEATURES: [&str; WINDOW_DIM] = [
    "requests",
    "distinct_endpoints",
    "distinct_objects",
    "error_ratio",
    "response_bytes",
];
pub const WINDOW_DIM: usize = 5;
/// Spread floors of the window features (log counts, a share, log bytes).
pub const WINDOW_MIN_SCALE: [f64; WINDOW_DIM] = [0.35, 0.35, 0.35, 0.1, 0.5];

/// JSON nesting followed by the walk; deeper nodes are neither counted nor checked.
const MAX_DEPTH: usize = 32;
/// Bytes of a parameter name kept in a reported departure.
const MAX_NAME_BYTES: usize = 96;

/// FNV-1a over `parts`, each followed by a separator byte.
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(std::iter::once(&0xffu8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A stable hash of an endpoint key.
pub fn endpoint_hash(k: &EndpointKey) -> u64 {
    let g = k.graphql.as_ref().map_or("", |(_, n)| n.as_str());
    fnv(&[
        k.host.as_bytes(),
        k.method.as_bytes(),
        k.template.as_bytes(),
        g.as_bytes(),
    ])
}

/// Where a parameter was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Query,
    Body,
}

impl Place {
    pub fn name(self) -> &'static str {
        match self {
            Place::Query => "query",
            Place::Body => "body",
        }
    }
}

/// The strongest departure of one parameter from its learned shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub place: Place,
    /// Query parameter name or JSON key path (`$.amount`), cut to [`MAX_NAME_BYTES`].
    pub name: String,
    pub kind: DeviationKind,
    /// In `[0, 1)`, see [`crate::baseline::shape::Deviation`] (unweighted).
    pub score: f64,
    pub observed: ValueType,
    /// Bytes of the value (strings) or of its JSON text estimate; never the value itself.
    pub value_bytes: usize,
    /// The learned shape, described.
    pub learned: String,
}

/// What one walk of a request found.
#[derive(Clone, Debug, Default)]
pub struct ShapeScan {
    pub features: [f64; SHAPE_DIM],
    pub worst: Option<Departure>,
    /// The walk stopped at `max_scan_values` or `MAX_DEPTH`.
    pub truncated: bool,
}

/// Running totals of one walk.
#[derive(Default)]
struct Tally {
    query: u32,
    fields: u32,
    containers: u32,
    values: u32,
    numeric: u32,
    value_bytes: u64,
    symbol_bytes: u64,
    max_len: usize,
    best: f64,
    visited: usize,
    truncated: bool,
}

/// Punctuation that ordinary values carry (names, dates, emails, paths, prices) is not counted
/// as "symbol": what is left (quotes, brackets, operators, `$`, `;`, `|`, `<`) is the mark of
/// code-like input.
fn is_symbol(b: u8) -> bool {
    b.is_ascii_punctuation() && !matches!(b, b'-' | b'_' | b'.' | b'@' | b':' | b',' | b'/' | b'+')
}

/// Decodes a query component only when it has escapes.
fn decode(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b == b'%' || b == b'+') {
        Cow::Owned(percent_decode(s))
    } else {
        Cow::Borrowed(s)
    }
}

/// Digits of an integer's decimal text (with sign).
fn int_len(i: i64) -> usize {
    let mut n = i.unsigned_abs();
    let mut len = usize::from(i < 0) + 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn numeric_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.parse::<f64>().is_ok_and(f64::is_finite)
}

fn ln1p(x: f64) -> f64 {
    x.max(0.0).ln_1p()
}

/// Walks requests into [`ShapeScan`]s, reusing its key-path buffer.
#[derive(Default)]
pub struct ShapeScanner {
    path: String,
}

impl ShapeScanner {
    /// One walk over the query string, the JSON body and the path parameter values; departures
    /// are checked against `profile` when given.
    pub fn scan(
        &mut self,
        req: &Request,
        json: Option<&Value>,
        object_ids: &[(String, String)],
        profile: Option<&EndpointProfile>,
        max_values: usize,
    ) -> ShapeScan {
        let mut t = Tally::default();
        let mut worst: Option<Departure> = None;
        if let Some((_, qs)) = req.uri.split_once('?') {
            let qs = qs.split('#').next().unwrap_or("");
            for pair in qs.split('&').filter(|p| !p.is_empty()) {
                if t.visited >= max_values {
                    t.truncated = true;
                    break;
                }
                t.visited += 1;
                t.query = t.query.saturating_add(1);
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let v = decode(v);
                tally_text(&mut t, &v);
                let shape = profile.and_then(|p| {
                    let k = decode(k);
                    p.query_params.fields.get(k.as_ref())
                });
                if let Some(f) = shape {
                    if let Some(d) = f.shape.check_str(&v) {
                        if weighted(&d) > t.best {
                            t.best = weighted(&d);
                            worst = Some(departure(Place::Query, &decode(k), d, v.len(), f));
                        }
                    }
                }
            }
        }
        for (_, v) in object_ids {
            tally_text(&mut t, v);
        }
        if let Some(v) = json {
            self.path.clear();
            self.path.push('$');
            let fields = profile.map(|p| &p.request_fields);
            self.walk(v, 0, fields, &mut t, &mut worst, max_values);
        }
        let values = f64::from(t.values.max(1));
        let features = [
            ln1p(f64::from(t.query)),
            ln1p(f64::from(t.fields)),
            ln1p(f64::from(t.containers)),
            ln1p(req.body.len as f64),
            ln1p(t.max_len as f64),
            f64::from(t.numeric) / values,
            t.symbol_bytes as f64 / (t.value_bytes.max(1)) as f64,
            t.best,
        ];
        ShapeScan {
            features,
            worst,
            truncated: t.truncated,
        }
    }

    fn walk(
        &mut self,
        v: &Value,
        depth: usize,
        fields: Option<&crate::baseline::profile::FieldMap>,
        t: &mut Tally,
        worst: &mut Option<Departure>,
        max_values: usize,
    ) {
        if depth > MAX_DEPTH || t.visited >= max_values {
            t.truncated = true;
            return;
        }
        t.visited += 1;
        let len = match v {
            Value::String(s) => s.len(),
            Value::Number(n) => n.as_i64().map_or(8, int_len),
            Value::Bool(_) | Value::Null => 4,
            Value::Object(_) | Value::Array(_) => 0,
        };
        if let Some(f) = fields.and_then(|m| m.fields.get(self.path.as_str())) {
            if let Some(d) = f.shape.check(v) {
                if weighted(&d) > t.best {
                    t.best = weighted(&d);
                    *worst = Some(departure(Place::Body, &self.path, d, len, f));
                }
            }
        }
        match v {
            Value::Object(members) => {
                if depth > 0 {
                    t.containers = t.containers.saturating_add(1);
                }
                let mark = self.path.len();
                for (k, item) in members {
                    self.path.push('.');
                    self.path.push_str(k);
                    self.walk(item, depth + 1, fields, t, worst, max_values);
                    self.path.truncate(mark);
                }
            }
            Value::Array(items) => {
                if depth > 0 {
                    t.containers = t.containers.saturating_add(1);
                }
                let mark = self.path.len();
                self.path.push_str("[]");
                for item in items {
                    self.walk(item, depth + 1, fields, t, worst, max_values);
                }
                self.path.truncate(mark);
            }
            Value::String(s) => {
                t.fields = t.fields.saturating_add(1);
                tally_text(t, s);
            }
            Value::Number(_) => {
                t.fields = t.fields.saturating_add(1);
                t.values = t.values.saturating_add(1);
                t.numeric = t.numeric.saturating_add(1);
                t.value_bytes = t.value_bytes.saturating_add(len as u64);
                t.max_len = t.max_len.max(len);
            }
            Value::Bool(_) | Value::Null => {
                t.fields = t.fields.saturating_add(1);
                t.values = t.values.saturating_add(1);
                t.value_bytes = t.value_bytes.saturating_add(len as u64);
            }
        }
    }
}

/// A departure's score as the `shape_departure` feature: a new value of an enum-like field, in
/// its usual length and characters, is the commonest benign novelty (a new product, a new memo)
/// and counts half; a new character class a little less than a change of type, range, length
/// or format.
fn weighted(d: &crate::baseline::shape::Deviation) -> f64 {
    let w = match d.kind {
        DeviationKind::UnseenEnumValue => 0.5,
        DeviationKind::NewCharClass => 0.8,
        DeviationKind::TypeChange
        | DeviationKind::OutOfRange
        | DeviationKind::LengthOutlier
        | DeviationKind::FormatChange => 1.0,
    };
    d.score * w
}

fn tally_text(t: &mut Tally, s: &str) {
    t.values = t.values.saturating_add(1);
    if numeric_text(s) {
        t.numeric = t.numeric.saturating_add(1);
    }
    t.value_bytes = t.value_bytes.saturating_add(s.len() as u64);
    t.symbol_bytes = t
        .symbol_bytes
        .saturating_add(s.bytes().filter(|b| is_symbol(*b)).count() as u64);
    t.max_len = t.max_len.max(s.len());
}

fn departure(
    place: Place,
    name: &str,
    d: crate::baseline::shape::Deviation,
    value_bytes: usize,
    f: &crate::baseline::profile::FieldStats,
) -> Departure {
    let mut name = name.to_owned();
    if name.len() > MAX_NAME_BYTES {
        let mut cut = MAX_NAME_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    let mut learned = f.shape.describe();
    if learned.len() > 160 {
        let mut cut = 160;
        while !learned.is_char_boundary(cut) {
            cut -= 1;
        }
        learned.truncate(cut);
        learned.push('…');
    }
    Departure {
        place,
        name,
        kind: d.kind,
        score: d.score,
        observed: d.observed,
        value_bytes,
        learned,
    }
}

/// One client's current window.
#[derive(Clone, Debug)]
pub struct Window {
    pub start: Timestamp,
    pub requests: u32,
    pub errors: u32,
    pub response_bytes: u64,
    /// Sorted, at most `max_distinct`.
    endpoints: Vec<u64>,
    /// Sorted `(endpoint, value)` hashes, at most `max_distinct`.
    objects: Vec<u64>,
}

impl Window {
    pub fn new(start: Timestamp) -> Window {
        Window {
            start,
            requests: 0,
            errors: 0,
            response_bytes: 0,
            endpoints: Vec::new(),
            objects: Vec::new(),
        }
    }

    /// Starts over at `start`, keeping the sets' memory.
    pub fn reset(&mut self, start: Timestamp) {
        self.start = start;
        self.requests = 0;
        self.errors = 0;
        self.response_bytes = 0;
        self.endpoints.clear();
        self.objects.clear();
    }

    /// Adds one call; returns how many set insertions the cap refused.
    pub fn add(
        &mut self,
        endpoint: u64,
        objects: &[(String, String)],
        status: u16,
        response_bytes: u64,
        max_distinct: usize,
    ) -> u64 {
        self.requests = self.requests.saturating_add(1);
        if status >= 400 {
            self.errors = self.errors.saturating_add(1);
        }
        self.response_bytes = self.response_bytes.saturating_add(response_bytes);
        let mut refused = u64::from(!insert(&mut self.endpoints, endpoint, max_distinct));
        for (_, v) in objects {
            let h = fnv(&[&endpoint.to_le_bytes(), v.as_bytes()]);
            refused += u64::from(!insert(&mut self.objects, h, max_distinct));
        }
        refused
    }

    pub fn features(&self) -> [f64; WINDOW_DIM] {
        [
            ln1p(f64::from(self.requests)),
            ln1p(self.endpoints.len() as f64),
            ln1p(self.objects.len() as f64),
            f64::from(self.errors) / f64::from(self.requests.max(1)),
            ln1p(self.response_bytes as f64),
        ]
    }

    /// The features in their natural units (counts, share, bytes), for evidence.
    pub fn raw(&self) -> [f64; WINDOW_DIM] {
        [
            f64::from(self.requests),
            self.endpoints.len() as f64,
            self.objects.len() as f64,
            f64::from(self.errors) / f64::from(self.requests.max(1)),
            self.response_bytes as f64,
        ]
    }

    pub fn heap_bytes(&self) -> usize {
        (self.endpoints.capacity() + self.objects.capacity()) * 8
    }
}

/// Inserts into a sorted set unless full; `false` when refused (already present is `true`).
fn insert(set: &mut Vec<u64>, h: u64, cap: usize) -> bool {
    match set.binary_search(&h) {
        Ok(_) => true,
        Err(_) if set.len() >= cap => false,
        Err(i) => {
            set.insert(i, h);
            true
        }
    }
}

/// Undoes [`ln1p`] for evidence in natural units.
pub fn expm1(x: f64) -> f64 {
    x.exp_m1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::{Body, Headers};

    fn req(uri: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            uri: uri.into(),
            version: crate::transaction::HttpVersion::Http11,
            headers: Headers::new(),
            body: Body {
                data: body.as_bytes().to_vec(),
                len: body.len() as u64,
                wire_len: body.len() as u64,
                truncated: false,
            },
            start: Timestamp::ZERO,
            end: Timestamp::ZERO,
        }
    }

    fn scan(uri: &str, body: &str, max: usize) -> ShapeScan {
        let json: Option<Value> = serde_json::from_str(body).ok();
        ShapeScanner::default().scan(&req(uri, body), json.as_ref(), &[], None, max)
    }

    #[test]
    fn shape_features_count_what_the_request_carries() {
        let s = scan(
            "/a?x=1&y=hello&z=%27",
            r#"{"a":1,"b":{"c":"it's"},"d":[1,2]}"#,
            100,
        );
        let want = [
            ln1p(3.0),  // x, y, z
            ln1p(4.0),  // a, b.c, d[0], d[1]
            ln1p(2.0),  // b and d
            ln1p(34.0), // body bytes
            ln1p(5.0),  // "hello"
            4.0 / 7.0,  // 1 (query), 1, 1, 2 (body) numeric of 7 values
            2.0 / 14.0, // ' twice over 14 value bytes
            0.0,        // no profile: no departure
        ];
        for (i, (got, want)) in s.features.iter().zip(want).enumerate() {
            assert!(
                (got - want).abs() < 1e-9,
                "{}: {got} vs {want}",
                SHAPE_FEATURES[i]
            );
        }
        assert!(!s.truncated);
        // The walk stops at the value cap and says so.
        let s = scan("/a?x=1&y=2&z=3", "", 2);
        assert!(s.truncated);
        assert_eq!(s.features[0], ln1p(2.0));
    }

    #[test]
    fn windows_count_distinct_endpoints_and_objects_up_to_the_cap() {
        let mut w = Window::new(Timestamp::ZERO);
        let ids = |v: &str| vec![("id".to_string(), v.to_string())];
        assert_eq!(w.add(1, &ids("a"), 200, 100, 3), 0);
        assert_eq!(w.add(1, &ids("a"), 404, 100, 3), 0);
        assert_eq!(w.add(2, &ids("a"), 200, 0, 3), 0); // same id, other endpoint: new object
        assert_eq!(w.add(1, &ids("b"), 500, 0, 3), 0);
        assert_eq!(w.add(3, &ids("c"), 200, 0, 3), 1); // objects full
        assert_eq!(w.raw(), [5.0, 3.0, 3.0, 0.4, 200.0]);
        w.reset(Timestamp::from_nanos(5));
        assert_eq!(w.raw(), [0.0; WINDOW_DIM]);
    }
}

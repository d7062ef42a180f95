//! Request and response shapes against the endpoint's learned fields: `mass_assignment` and
//! `excessive_data`.
//!
//! Key paths are written as the profile learns them (`$`, `$.user.role`, `$.items[].id`), so
//! a path is new exactly when the learned
//! [`FieldMap`](crate::baseline::profile::FieldMap) lacks it. Only the top-most new path of
//! a subtree is reported (its children are new by implication). Paths the learner could not
//! have kept are never called new: longer than its `max_key_path_bytes`, deeper than its
//! `max_json_depth`, under a map that was full (`fields_dropped`), elements of an array only
//! ever learned empty, or members of an object keyed by data (ids, many distinct names).
//!
//! Invariants: each body is walked once, by one detector (requests here for mass assignment,
//! responses for excessive data), with a node budget and a reused path buffer; the walk stops
//! at the budget and says so (`walk_truncated`).

use super::authz::contains_ci;
use super::skeleton::skeleton;
use super::{ExcessiveDataConfig, MassAssignmentConfig};
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::{status_class, ProfileConfig, STATUS_CLASSES};
use crate::detect::FastMap;
use crate::detect::{Context, Detector, Finding};
use serde_json::Value;
use std::collections::BTreeMap;

/// Limits of one walk.
struct Limits {
    max_nodes: usize,
    max_path_bytes: usize,
    max_depth: usize,
    max_listed: usize,
    /// Objects with more learned member names than this are maps.
    max_object_keys: usize,
    /// Elements walked per array.
    max_array_items: usize,
}

/// New paths found by a walk.
#[derive(Default)]
struct NewPaths {
    /// The first `max_listed` new paths, in document order.
    listed: Vec<String>,
    /// New paths: distinct while they fit in `listed`, at least that many beyond.
    total: usize,
    nodes: usize,
    truncated: bool,
}

/// Whether an object member name is data (an id, a date, a hash) rather than a field name.
fn data_like_key(k: &str) -> bool {
    let digits = k.bytes().filter(u8::is_ascii_digit).count();
    digits > 0 && (digits == k.len() || digits * 3 >= k.len() || k.len() >= 24)
}

/// Learned direct members of the object at `parent`, counted up to `limit + 1`.
fn learned_members<T>(fields: &BTreeMap<String, T>, parent: &str, limit: usize) -> usize {
    let mut prefix = String::with_capacity(parent.len() + 1);
    prefix.push_str(parent);
    prefix.push('.');
    fields
        .range::<str, _>((
            std::ops::Bound::Excluded(prefix.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
        .filter(|(k, _)| {
            k.get(prefix.len()..)
                .is_some_and(|rest| !rest.contains(['.', '[']))
        })
        .take(limit + 1)
        .count()
}

/// Walks `v` at `path`, recording into `out` the top-most paths `known` rejects.
fn walk<T>(
    v: &Value,
    path: &mut String,
    depth: usize,
    map: &BTreeMap<String, T>,
    known: &dyn Fn(&str) -> bool,
    lim: &Limits,
    out: &mut NewPaths,
) {
    if out.nodes >= lim.max_nodes {
        out.truncated = true;
        return;
    }
    out.nodes += 1;
    if path.len() > lim.max_path_bytes || depth > lim.max_depth {
        return;
    }
    if !known(path) {
        if path.ends_with("[]") {
            // Elements of an array only ever learned empty: not a new field.
            return;
        }
        let (parent, key) = match path.rfind('.') {
            Some(i) => (path.get(..i).unwrap_or(""), path.get(i + 1..).unwrap_or("")),
            None => (path.as_str(), ""),
        };
        if data_like_key(key)
            || learned_members(map, parent, lim.max_object_keys) > lim.max_object_keys
        {
            return;
        }
        // The same new member in every element of a list is one new field.
        if out.listed.iter().any(|p| p == path) {
            return;
        }
        out.total += 1;
        if out.listed.len() < lim.max_listed {
            out.listed.push(path.clone());
        }
        return;
    }
    match v {
        Value::Object(members) => {
            let len = path.len();
            for (k, item) in members {
                path.push('.');
                path.push_str(k);
                walk(item, path, depth + 1, map, known, lim, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let len = path.len();
            path.push_str("[]");
            for item in items.iter().take(lim.max_array_items) {
                walk(item, path, depth + 1, map, known, lim, out);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

/// The last field name of a key path (`$.user.isAdmin[]` gives `isAdmin`).
fn leaf_name(path: &str) -> &str {
    let p = path.trim_end_matches("[]");
    p.rsplit('.').next().unwrap_or(p)
}

/// A field name folded for comparison: lower case, without `_` and `-`.
fn fold_name(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Decoded query parameter names of a URI, in order; names with escapes are decoded.
fn query_names(uri: &str) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    let qs = uri.split_once('?').map_or("", |(_, q)| q);
    let qs = qs.split('#').next().unwrap_or("");
    qs.split('&').filter(|p| !p.is_empty()).map(|p| {
        let name = p.split_once('=').map_or(p, |(k, _)| k);
        if name.contains(['%', '+']) {
            std::borrow::Cow::Owned(percent_decode(name))
        } else {
            std::borrow::Cow::Borrowed(name)
        }
    })
}

/// Form-style percent-decoding, as the profile learns query names.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                if let (Some(h), Some(l)) = (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the mass-assignment detector skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MassAssignmentCounters {
    /// Bodies whose walk stopped at `max_json_nodes`.
    pub walk_truncated: u64,
    /// Requests not judged because the endpoint's learned field map was full.
    pub map_saturated: u64,
}

/// `mass_assignment`; see the module documentation.
pub struct MassAssignmentDetector {
    cfg: MassAssignmentConfig,
    profile: ProfileConfig,
    privileged: Vec<String>,
    path: String,
    counters: MassAssignmentCounters,
}

impl MassAssignmentDetector {
    pub fn new(cfg: &MassAssignmentConfig) -> Self {
        MassAssignmentDetector {
            privileged: cfg.privileged_fields.iter().map(|f| fold_name(f)).collect(),
            cfg: cfg.clone(),
            profile: ProfileConfig::default(),
            path: String::new(),
            counters: MassAssignmentCounters::default(),
        }
    }

    pub fn counters(&self) -> &MassAssignmentCounters {
        &self.counters
    }

    fn is_privileged(&self, path: &str) -> bool {
        let name = fold_name(leaf_name(path));
        self.privileged.contains(&name)
    }
}

impl Detector for MassAssignmentDetector {
    fn name(&self) -> &'static str {
        "mass_assignment"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !self
            .cfg
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&cx.req.method))
        {
            return;
        }
        let Some(p) = cx.profile else {
            return;
        };
        let spec_fields = cx
            .spec_operation()
            .map(|op| op.request_fields.as_slice())
            .unwrap_or(&[]);
        let mut found = NewPaths::default();
        // Body fields.
        let body_map = &p.request_fields;
        if let Some(body) = cx.request_json() {
            if body_map.docs >= self.cfg.min_learned_docs {
                if body_map.fields_dropped > 0 {
                    self.counters.map_saturated += 1;
                } else {
                    let lim = Limits {
                        max_nodes: self.cfg.max_json_nodes,
                        max_path_bytes: self.profile.max_key_path_bytes,
                        max_depth: self.profile.max_json_depth,
                        max_listed: self.cfg.max_listed_fields,
                        max_object_keys: usize::MAX - 1,
                        // A request is judged whole: one element can carry the field.
                        max_array_items: usize::MAX,
                    };
                    let known = |path: &str| {
                        body_map.fields.contains_key(path) || spec_fields.iter().any(|f| f == path)
                    };
                    self.path.clear();
                    self.path.push('$');
                    walk(
                        body,
                        &mut self.path,
                        0,
                        &body_map.fields,
                        &known,
                        &lim,
                        &mut found,
                    );
                    if found.truncated {
                        self.counters.walk_truncated += 1;
                    }
                }
            }
        }
        // Query parameters, learned on every request of the endpoint.
        let query_map = &p.query_params;
        if query_map.docs >= self.cfg.min_learned_docs && query_map.fields_dropped == 0 {
            for name in query_names(&cx.req.uri) {
                if !query_map.fields.contains_key(name.as_ref()) {
                    found.total += 1;
                    if found.listed.len() < self.cfg.max_listed_fields {
                        found.listed.push(format!("?{name}"));
                    }
                }
            }
        }
        if found.total == 0 {
            return;
        }
        let privileged: Vec<&str> = found
            .listed
            .iter()
            .filter(|f| self.is_privileged(f.trim_start_matches('?')))
            .map(String::as_str)
            .collect();
        if privileged.is_empty() && !self.cfg.report_unprivileged {
            return;
        }
        let (severity, confidence) = if privileged.is_empty() {
            (Severity::Low, 0.6)
        } else {
            (Severity::High, 0.9)
        };
        let shown = privileged
            .first()
            .copied()
            .or(found.listed.first().map(String::as_str))
            .unwrap_or("");
        out.push(
            Finding::new(AlertKind::MassAssignment, cx)
                .severity(severity)
                .confidence(confidence)
                .summary(format!(
                    "{} request carried {} field(s) never learned for {}, e.g. {shown}.",
                    cx.req.method,
                    found.total,
                    cx.endpoint_label()
                ))
                .with("new_fields", found.listed.clone())
                .with("new_field_count", found.total as u64)
                .with("privileged_fields", privileged)
                .with("learned_bodies", body_map.docs)
                .with("learned_fields", body_map.fields.len() as u64)
                .with("spec_fields", spec_fields.len() as u64)
                .with("status", cx.status()),
        );
    }
}

/// What the excessive-data detector skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExcessiveDataCounters {
    /// Bodies whose walk stopped at `max_json_nodes`.
    pub walk_truncated: u64,
    /// Responses not judged for fields because the class's learned map was full.
    pub map_saturated: u64,
    /// 2xx bodies neither parsed nor walked: their key paths walked clean before.
    pub memo_hits: u64,
    /// Clean skeletons not remembered because the memo was full.
    pub memo_full: u64,
}

/// `excessive_data`; see the module documentation.
pub struct ExcessiveDataDetector {
    cfg: ExcessiveDataConfig,
    profile: ProfileConfig,
    sensitive: Vec<String>,
    path: String,
    counters: ExcessiveDataCounters,
    /// Per endpoint, skeletons ([`skeleton`]) of 2xx bodies that walked clean: a body with the
    /// same set of key paths walks clean again (learned fields only grow), so it is neither
    /// parsed nor walked. Semantically transparent; bounded by [`MAX_MEMO_ENDPOINTS`] and
    /// [`MAX_MEMO_SKELETONS`].
    clean: FastMap<u64, Vec<u64>>,
    scratch: Vec<u64>,
}

/// Endpoints whose clean skeletons are remembered.
const MAX_MEMO_ENDPOINTS: usize = 4096;
/// Clean skeletons remembered per endpoint.
const MAX_MEMO_SKELETONS: usize = 64;
impl ExcessiveDataDetector {
    pub fn new(cfg: &ExcessiveDataConfig) -> Self {
        ExcessiveDataDetector {
            sensitive: cfg
                .sensitive_words
                .iter()
                .map(|w| w.to_ascii_lowercase())
                .collect(),
            cfg: cfg.clone(),
            profile: ProfileConfig::default(),
            path: String::new(),
            counters: ExcessiveDataCounters::default(),
            clean: FastMap::default(),
            scratch: Vec::new(),
        }
    }

    pub fn counters(&self) -> &ExcessiveDataCounters {
        &self.counters
    }

    fn sensitive_name(&self, path: &str) -> bool {
        let leaf = leaf_name(path);
        self.sensitive.iter().any(|w| contains_ci(leaf, w))
    }

    /// A 2xx body far above the learned sizes: (observed, p50, p99, max, threshold).
    fn oversize(
        &self,
        p: &crate::baseline::profile::EndpointProfile,
        len: u64,
    ) -> Option<[f64; 5]> {
        let s = &p.response_bytes;
        if s.count() < self.cfg.min_learned_docs {
            return None;
        }
        let len = len as f64;
        let max = s.max()?;
        // Cheap exit first: most bodies are below the learned maximum.
        if len <= self.cfg.max_factor * max {
            return None;
        }
        let (p50, p99) = (s.quantile(0.5)?, s.quantile(0.99)?);
        let threshold = (self.cfg.median_factor * p50)
            .max(self.cfg.p99_factor * p99)
            .max(self.cfg.max_factor * max)
            .max(p99 + self.cfg.floor_bytes as f64);
        (len > threshold).then_some([len, p50, p99, max, threshold])
    }
}

impl Detector for ExcessiveDataDetector {
    fn name(&self) -> &'static str {
        "excessive_data"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let (Some(resp), Some(p)) = (cx.resp, cx.profile) else {
            return;
        };
        let status = resp.status;
        let size = if (200..300).contains(&status) {
            self.oversize(p, resp.body.len)
        } else {
            None
        };
        let mut found = NewPaths::default();
        let class = status_class(status);
        // Only 2xx bodies: error bodies vary with the error.
        let map = class
            .filter(|&c| c == 0)
            .and_then(|c| p.response_fields.get(c));
        // A body whose set of key paths walked clean before walks clean again.
        let memo = match (self.cfg.new_fields, map) {
            (true, Some(_)) if class == Some(0) => {
                skeleton(&resp.body.data, &mut self.scratch).map(|s| (cx.endpoint_id, s))
            }
            _ => None,
        };
        let known_clean =
            memo.is_some_and(|(e, s)| self.clean.get(&e).is_some_and(|v| v.contains(&s)));
        if known_clean {
            self.counters.memo_hits += 1;
        }
        let body = if known_clean {
            None
        } else {
            cx.response_json()
        };
        if let (true, Some(body), Some(map)) = (self.cfg.new_fields, body, map) {
            if map.docs >= self.cfg.min_learned_docs {
                if map.fields_dropped > 0 {
                    self.counters.map_saturated += 1;
                } else {
                    let lim = Limits {
                        max_nodes: self.cfg.max_json_nodes,
                        max_path_bytes: self.profile.max_key_path_bytes,
                        max_depth: self.profile.max_json_depth,
                        max_listed: self.cfg.max_listed_fields,
                        max_object_keys: self.cfg.max_object_keys,
                        max_array_items: self.cfg.max_array_items,
                    };
                    let known = |path: &str| map.fields.contains_key(path);
                    self.path.clear();
                    self.path.push('$');
                    walk(
                        body,
                        &mut self.path,
                        0,
                        &map.fields,
                        &known,
                        &lim,
                        &mut found,
                    );
                    if found.truncated {
                        self.counters.walk_truncated += 1;
                    } else if found.total == 0 {
                        if let Some((e, sk)) = memo {
                            let room = self.clean.len() < MAX_MEMO_ENDPOINTS
                                || self.clean.contains_key(&e);
                            let v = if room {
                                Some(self.clean.entry(e).or_default())
                            } else {
                                None
                            };
                            match v {
                                Some(v) if v.len() < MAX_MEMO_SKELETONS => v.push(sk),
                                _ => self.counters.memo_full += 1,
                            }
                        }
                    }
                }
            }
        }
        if size.is_none() && found.total == 0 {
            return;
        }
        let sensitive: Vec<&str> = found
            .listed
            .iter()
            .filter(|f| self.sensitive_name(f))
            .map(String::as_str)
            .collect();
        let severity = if !sensitive.is_empty() {
            Severity::High
        } else if size.is_some() {
            Severity::Medium
        } else {
            Severity::Low
        };
        let class_name = class
            .and_then(|c| STATUS_CLASSES.get(c))
            .copied()
            .unwrap_or("other");
        let summary = match (size, found.listed.first()) {
            (Some([len, p50, ..]), _) => format!(
                "{} returned {len:.0} bytes, {:.0} times its learned median of {p50:.0}.",
                cx.endpoint_label(),
                len / p50.max(1.0)
            ),
            (None, Some(first)) => format!(
                "{} returned {} {class_name} field(s) it never returned before, e.g. {first}.",
                cx.endpoint_label(),
                found.total
            ),
            (None, None) => return,
        };
        let mut f = Finding::new(AlertKind::ExcessiveData, cx)
            .severity(severity)
            .confidence(if size.is_some() || !sensitive.is_empty() {
                0.85
            } else {
                0.7
            })
            .summary(summary)
            .with("status", status)
            .with("response_bytes", resp.body.len);
        if let Some([_, p50, p99, max, threshold]) = size {
            f = f
                .with("learned_p50_bytes", p50.round())
                .with("learned_p99_bytes", p99.round())
                .with("learned_max_bytes", max.round())
                .with("threshold_bytes", threshold.round())
                .with("learned_responses", p.response_bytes.count());
        }
        if found.total > 0 {
            f = f
                .with("new_fields", found.listed.clone())
                .with("new_field_count", found.total as u64)
                .with("sensitive_fields", sensitive)
                .with("status_class", class_name)
                .with("learned_bodies", map.map_or(0, |m| m.docs));
        }
        out.push(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// Every key path of `v`, as the profile writes them.
    fn all_paths(v: &Value, path: &mut String, out: &mut BTreeSet<String>) {
        out.insert(path.clone());
        let len = path.len();
        match v {
            Value::Object(m) => {
                for (k, item) in m {
                    path.push('.');
                    path.push_str(k);
                    all_paths(item, path, out);
                    path.truncate(len);
                }
            }
            Value::Array(items) => {
                path.push_str("[]");
                for item in items {
                    all_paths(item, path, out);
                }
                path.truncate(len);
            }
            _ => {}
        }
    }

    pub(super) fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn lim(max_nodes: usize) -> Limits {
        Limits {
            max_nodes,
            max_path_bytes: 256,
            max_depth: 32,
            max_listed: 4,
            max_object_keys: 64,
            max_array_items: usize::MAX,
        }
    }

    proptest! {
        /// Against a map learned from the document itself nothing is new; with one member
        /// path removed (and its subtree), exactly that path is reported; any node budget
        /// is honoured.
        #[test]
        fn new_paths_are_exactly_the_unlearned_top_most(v in json(), pick in any::<usize>(), budget in 1usize..50) {
            let mut paths = BTreeSet::new();
            all_paths(&v, &mut String::from("$"), &mut paths);
            let map: BTreeMap<String, ()> = paths.iter().map(|p| (p.clone(), ())).collect();
            let walk_with = |map: &BTreeMap<String, ()>, l: &Limits| {
                let mut out = NewPaths::default();
                let known = |p: &str| map.contains_key(p);
                walk(&v, &mut String::from("$"), 0, map, &known, l, &mut out);
                out
            };
            prop_assert_eq!(walk_with(&map, &lim(usize::MAX)).total, 0);
            let members: Vec<&String> = paths
                .iter()
                .filter(|p| p.rsplit('.').next().is_some_and(|k| !k.contains('[') && p.contains('.')))
                .filter(|p| !data_like_key(leaf_name(p)))
                .collect();
            if let Some(&gone) = members.get(pick % members.len().max(1)) {
                let mut cut = map.clone();
                cut.retain(|k, _| !(k == gone || k.starts_with(&format!("{gone}.")) || k.starts_with(&format!("{gone}["))));
                let out = walk_with(&cut, &lim(usize::MAX));
                prop_assert_eq!(out.total, 1);
                prop_assert_eq!(&out.listed, &vec![gone.clone()]);
            }
            let out = walk_with(&BTreeMap::new(), &lim(budget));
            prop_assert!(out.nodes <= budget);
            prop_assert!(out.listed.len() <= 4 && out.listed.len() <= out.total);
        }
    }
}

#[cfg(test)]
mod skeleton_tests {
    use super::skeleton;

    /// `v` with every array's elements reversed and its first repeated: the same set of key
    /// paths.
    fn shuffled(v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Array(items) => {
                let mut out: Vec<Value> = items.iter().rev().map(shuffled).collect();
                out.extend(items.first().map(shuffled));
                Value::Array(out)
            }
            Value::Object(m) => Value::Object(
                m.iter()
                    .rev()
                    .map(|(k, v)| (k.clone(), shuffled(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    proptest::proptest! {
        /// Reordered and repeated elements (and members) keep the skeleton.
        #[test]
        fn repeats_and_order_keep_the_skeleton(v in super::tests::json()) {
            proptest::prop_assume!(v.is_object() || v.is_array());
            let a = skeleton(&serde_json::to_vec(&v).unwrap(), &mut Vec::new());
            let b = skeleton(&serde_json::to_vec(&shuffled(&v)).unwrap(), &mut Vec::new());
            proptest::prop_assert!(a.is_some());
            proptest::prop_assert_eq!(a, b);
        }
    }
}

//! Caller profiles: how one identity (a subject pseudonym) uses the API, so detectors can
//! tell a caller's burst, scan or exfiltration from its own normal.
//!
//! A [`CallerProfile`] holds call counts and times, an hour-of-week rate series, the endpoints
//! used (a bounded set of labels plus a distinct count that keeps counting past the bound),
//! response-status outcomes for an error ratio, and response bytes sent to the caller.
//!
//! Tables keyed by caller (the learner's profiles, the volume windows) use [`CallerKey`]: the
//! pseudonym text held inline in the table's own slot, so a lookup compares keys without
//! reaching for a separate heap block.
//!
//! Invariants: pure and bounded like every baseline structure (endpoints kept per caller are
//! capped by [`CallerConfig::max_endpoints_per_caller`], with a counter); keyed by pseudonym,
//! so nothing here names a person or holds a credential; `merge` equals one profile fed both
//! streams, exactly for counts; a [`CallerKey`] hashes, compares and orders as its text.

use super::coverage::Coverage;
use super::profile::EndpointKey;
use super::sketch::{Hll, HourOfWeekRate, QuantileSketch};
use crate::common::{InlineText, Timestamp};
use crate::transaction::Transaction;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;

/// A caller (subject pseudonym) as the key of a table keyed by caller.
///
/// A `String` key keeps its bytes in a heap block of its own, so every probe of a table of
/// thousands of callers paid a cache miss to compare the probed key, on every transaction
/// (about 5 % of detection's CPU went to those compares). Held inline ([`InlineText`]), the
/// text sits in the slot the probe has just loaded. Hashing, equality and order are those of
/// the text, and `Borrow<str>` lets a table be searched with a `&str` without building a key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallerKey(InlineText);

impl CallerKey {
    pub fn new(text: &str) -> CallerKey {
        CallerKey(InlineText::new(text))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for CallerKey {
    fn from(text: &str) -> CallerKey {
        CallerKey::new(text)
    }
}

impl From<CallerKey> for String {
    fn from(k: CallerKey) -> String {
        k.0.into()
    }
}

impl Borrow<str> for CallerKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Settings of caller profiles (`[baseline.caller]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallerConfig {
    /// Endpoint labels kept per caller; further endpoints are only counted in
    /// `distinct_endpoints` (`endpoints_untracked`). Default 64.
    pub max_endpoints_per_caller: usize,
    /// Precision of the distinct-endpoints counter (sparse while small). Default 8.
    pub endpoints_hll_precision: u8,
    /// Relative accuracy of the bytes-out quantiles. Default 0.02.
    pub quantile_relative_accuracy: f64,
    /// Buckets of the bytes-out sketch; 256 at 2 % span 1 byte to 30 MB. Default 256.
    pub max_quantile_buckets: usize,
}

impl Default for CallerConfig {
    fn default() -> Self {
        CallerConfig {
            max_endpoints_per_caller: 64,
            endpoints_hll_precision: 8,
            quantile_relative_accuracy: 0.02,
            max_quantile_buckets: 256,
        }
    }
}

/// Everything learned about one caller. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerProfile {
    pub calls: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub rate: HourOfWeekRate,
    /// Endpoint labels ([`EndpointKey::label`]), at most `max_endpoints_per_caller`.
    pub endpoints: BTreeSet<String>,
    /// Calls to endpoints not kept in `endpoints` because it was full.
    pub endpoints_untracked: u64,
    /// Every distinct endpoint, kept or not.
    pub distinct_endpoints: Hll,
    /// Calls that got a response.
    pub responses: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    /// 401 and 403 responses: failed or refused authorisation.
    pub auth_failures: u64,
    /// Response body bytes sent to the caller per call (decoded length, counted in full).
    pub bytes_out: QuantileSketch,
}

impl CallerProfile {
    pub fn new(cfg: &CallerConfig) -> Self {
        CallerProfile {
            calls: 0,
            first_seen: Timestamp::ZERO,
            last_seen: Timestamp::ZERO,
            rate: HourOfWeekRate::new(),
            endpoints: BTreeSet::new(),
            endpoints_untracked: 0,
            distinct_endpoints: Hll::new(cfg.endpoints_hll_precision),
            responses: 0,
            client_errors: 0,
            server_errors: 0,
            auth_failures: 0,
            bytes_out: QuantileSketch::new(
                cfg.quantile_relative_accuracy,
                cfg.max_quantile_buckets,
            ),
        }
    }

    /// Learns from one transaction this caller made to `endpoint`.
    pub fn observe(
        &mut self,
        tx: &Transaction,
        endpoint: &EndpointKey,
        cfg: &CallerConfig,
        cov: &Coverage,
    ) {
        let ts = tx.ts();
        super::count_call(
            &mut self.calls,
            &mut self.first_seen,
            &mut self.last_seen,
            &mut self.rate,
            ts,
            cov,
        );
        let label = endpoint.label();
        self.distinct_endpoints.insert(label.as_bytes());
        if !self.endpoints.contains(&label) {
            if self.endpoints.len() < cfg.max_endpoints_per_caller {
                self.endpoints.insert(label);
            } else {
                self.endpoints_untracked = self.endpoints_untracked.saturating_add(1);
            }
        }
        if let Some(resp) = tx.response.as_ref() {
            self.responses = self.responses.saturating_add(1);
            match resp.status {
                401 | 403 => {
                    self.auth_failures = self.auth_failures.saturating_add(1);
                    self.client_errors = self.client_errors.saturating_add(1);
                }
                400..=499 => self.client_errors = self.client_errors.saturating_add(1),
                500..=599 => self.server_errors = self.server_errors.saturating_add(1),
                _ => {}
            }
            self.bytes_out.add(resp.body.len as f64);
        }
    }

    /// Share of responses that were 4xx or 5xx; `None` before any response.
    pub fn error_ratio(&self) -> Option<f64> {
        (self.responses > 0).then(|| {
            self.client_errors.saturating_add(self.server_errors) as f64 / self.responses as f64
        })
    }

    /// Adds `other`, learned from other calls of the same caller.
    pub fn merge(&mut self, other: &CallerProfile, cfg: &CallerConfig, cov: &Coverage) {
        if other.calls > 0 && (self.calls == 0 || other.first_seen < self.first_seen) {
            self.first_seen = other.first_seen;
        }
        self.last_seen = self.last_seen.max(other.last_seen);
        self.calls = self.calls.saturating_add(other.calls);
        self.rate.merge(&other.rate, cov);
        for e in &other.endpoints {
            if self.endpoints.contains(e) {
                continue;
            }
            if self.endpoints.len() < cfg.max_endpoints_per_caller {
                self.endpoints.insert(e.clone());
            } else {
                self.endpoints_untracked = self.endpoints_untracked.saturating_add(1);
            }
        }
        self.endpoints_untracked = self
            .endpoints_untracked
            .saturating_add(other.endpoints_untracked);
        self.distinct_endpoints.merge(&other.distinct_endpoints);
        self.responses = self.responses.saturating_add(other.responses);
        self.client_errors = self.client_errors.saturating_add(other.client_errors);
        self.server_errors = self.server_errors.saturating_add(other.server_errors);
        self.auth_failures = self.auth_failures.saturating_add(other.auth_failures);
        self.bytes_out.merge(&other.bytes_out);
    }

    /// Estimated heap bytes held; add `size_of::<CallerProfile>()` for the whole profile.
    pub fn heap_bytes(&self) -> usize {
        self.endpoints
            .iter()
            .map(|e| e.capacity() + std::mem::size_of::<String>() + 16)
            .sum::<usize>()
            + self.distinct_endpoints.heap_bytes()
            + self.bytes_out.heap_bytes()
            + self.rate.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::INLINE_TEXT_BYTES;
    use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response};
    use std::collections::HashMap;
    use std::hash::Hash;

    fn call(template: &str, status: u16, bytes: u64, hour: u64) -> (Transaction, EndpointKey) {
        let start = Timestamp::from_nanos(hour * 3_600_000_000_000);
        let body = Body {
            len: bytes,
            ..Body::default()
        };
        let tx = Transaction {
            conn: ConnInfo::default(),
            depth: 1,
            request: Some(Request {
                method: "GET".into(),
                uri: template.into(),
                version: HttpVersion::Http11,
                headers: Headers::new(),
                body: Body::default(),
                start,
                end: start,
            }),
            response: Some(Response {
                status,
                reason: String::new(),
                version: HttpVersion::Http11,
                headers: Headers::new(),
                body,
                interim: vec![],
                start,
                end: start,
            }),
            flags: vec![],
        };
        let key = EndpointKey {
            host: "api".into(),
            method: "GET".into(),
            template: template.into(),
            graphql: None,
        };
        (tx, key)
    }

    fn stream() -> Vec<(Transaction, EndpointKey)> {
        (0..40u64)
            .map(|i| {
                let status = [200, 200, 404, 403, 500][(i % 5) as usize];
                call(&format!("/e{}", i % 6), status, 100 * (i + 1), i / 3)
            })
            .collect()
    }

    fn profile_of(s: &[(Transaction, EndpointKey)], cfg: &CallerConfig) -> CallerProfile {
        let mut p = CallerProfile::new(cfg);
        for (t, k) in s {
            p.observe(t, k, cfg, &Coverage::always());
        }
        p
    }

    #[test]
    fn observe_counts_outcomes_endpoints_and_bytes() {
        let cfg = CallerConfig::default();
        let p = profile_of(&stream(), &cfg);
        assert_eq!(p.calls, 40);
        assert_eq!(p.responses, 40);
        assert_eq!(
            (p.client_errors, p.server_errors, p.auth_failures),
            (16, 8, 8)
        );
        assert_eq!(p.error_ratio(), Some(0.6));
        assert_eq!(p.endpoints.len(), 6);
        assert!(p.endpoints.contains("GET api/e0"));
        let est = p.distinct_endpoints.estimate();
        // 256 registers: a couple of percent of estimator error even for tiny sets.
        assert!((est - 6.0).abs() < 0.2, "{est}");
        assert_eq!(p.bytes_out.max(), Some(4000.0));
        assert_eq!(p.first_seen, Timestamp::ZERO);
        assert_eq!(p.last_seen, Timestamp::from_nanos(13 * 3_600_000_000_000));
        assert_eq!(p.rate.bucket(0).sum, 3);
        assert_eq!(CallerProfile::new(&cfg).error_ratio(), None);
    }

    #[test]
    fn endpoint_cap_keeps_counting_distinct_endpoints() {
        let cfg = CallerConfig {
            max_endpoints_per_caller: 2,
            ..CallerConfig::default()
        };
        let p = profile_of(&stream(), &cfg);
        assert_eq!(p.endpoints.len(), 2);
        assert_eq!(p.endpoints_untracked, 40 - 14);
        let est = p.distinct_endpoints.estimate();
        // 256 registers: a couple of percent of estimator error even for tiny sets.
        assert!((est - 6.0).abs() < 0.2, "{est}");
    }

    /// Texts around the inline limit, multi-byte characters across it, and real pseudonyms.
    fn key_texts() -> Vec<String> {
        let mut texts: Vec<String> = (0..=INLINE_TEXT_BYTES + 2).map(|n| "k".repeat(n)).collect();
        texts.push(format!("{}é", "a".repeat(INLINE_TEXT_BYTES - 1))); // 23 bytes: heap
        texts.push(format!("{}é", "a".repeat(INLINE_TEXT_BYTES - 2))); // 22 bytes: inline
        texts.push("u:3f9a0c1d2e4b5a69".into());
        texts.push("tenant:3f9a0c1d2e4b5a69".into());
        texts
    }

    fn hash_of<T: Hash + ?Sized>(s: &ahash::RandomState, v: &T) -> u64 {
        s.hash_one(v)
    }

    #[test]
    fn caller_keys_are_their_text_inline_or_not() {
        let texts = key_texts();
        let seeds = ahash::RandomState::with_seeds(1, 2, 3, 4);
        for t in &texts {
            let k = CallerKey::new(t);
            assert_eq!(k.as_str(), t);
            assert_eq!(k.0.is_inline(), t.len() <= INLINE_TEXT_BYTES, "{t}");
            assert_eq!(hash_of(&seeds, &k), hash_of(&seeds, t.as_str()));
            assert_eq!(String::from(k.clone()), *t);
            assert_eq!(format!("{k}"), *t);
            assert_eq!(format!("{k:?}"), format!("{t:?}"));
            for u in &texts {
                let j = CallerKey::new(u);
                assert_eq!(k == j, t == u, "{t} vs {u}");
                assert_eq!(k.cmp(&j), t.cmp(u), "{t} vs {u}");
            }
        }
    }

    /// A table keyed by `CallerKey` is found by `&str`, holds what a `String`-keyed one
    /// holds, and sorts into the same order.
    #[test]
    fn caller_key_tables_agree_with_string_tables() {
        let texts = key_texts();
        let mut by_key: HashMap<CallerKey, usize, ahash::RandomState> = HashMap::default();
        let mut by_string: HashMap<String, usize> = HashMap::new();
        for (i, t) in texts.iter().chain(texts.iter().rev()).enumerate() {
            *by_key.entry(CallerKey::new(t)).or_default() += i;
            *by_string.entry(t.clone()).or_default() += i;
        }
        assert_eq!(by_key.len(), by_string.len());
        for (t, v) in &by_string {
            assert_eq!(by_key.get(t.as_str()), Some(v), "{t}");
        }
        assert_eq!(by_key.get("k:absent"), None);
        let mut a: Vec<(String, usize)> = by_key.into_iter().map(|(k, v)| (k.into(), v)).collect();
        let mut b: Vec<(String, usize)> = by_string.into_iter().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    proptest::proptest! {
        /// Any two texts: keys are equal, ordered and hashed as the texts are.
        #[test]
        fn caller_keys_compare_as_their_texts(a in "\\PC{0,30}", b in "\\PC{0,30}") {
            let (ka, kb) = (CallerKey::new(&a), CallerKey::new(&b));
            let seeds = ahash::RandomState::with_seeds(5, 6, 7, 8);
            proptest::prop_assert_eq!(ka.as_str(), a.as_str());
            proptest::prop_assert_eq!(ka == kb, a == b);
            proptest::prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            proptest::prop_assert_eq!(hash_of(&seeds, &ka), hash_of(&seeds, a.as_str()));
        }
    }

    #[test]
    fn merge_equals_single_pass_and_serde_round_trips() {
        let cfg = CallerConfig::default();
        let s = stream();
        let whole = profile_of(&s, &cfg);
        for split in [0, 1, 13, 20, 40] {
            let mut a = profile_of(&s[..split], &cfg);
            a.merge(&profile_of(&s[split..], &cfg), &cfg, &Coverage::always());
            assert_eq!(
                (a.calls, a.first_seen, a.last_seen),
                (whole.calls, whole.first_seen, whole.last_seen)
            );
            assert_eq!(a.rate, whole.rate, "split {split}");
            assert_eq!(a.endpoints, whole.endpoints);
            assert_eq!(a.distinct_endpoints, whole.distinct_endpoints);
            assert_eq!(
                (
                    a.responses,
                    a.client_errors,
                    a.server_errors,
                    a.auth_failures
                ),
                (
                    whole.responses,
                    whole.client_errors,
                    whole.server_errors,
                    whole.auth_failures
                )
            );
            for q in [0.0, 0.5, 0.99, 1.0] {
                assert_eq!(a.bytes_out.quantile(q), whole.bytes_out.quantile(q));
            }
        }
        let json = serde_json::to_string(&whole).unwrap();
        assert_eq!(serde_json::from_str::<CallerProfile>(&json).unwrap(), whole);
    }
}

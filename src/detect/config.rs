//! Settings of detection (`[detect]` and its sub-tables in the configuration file).
//!
//! Invariant: every field has a default and a doc comment; [`DetectConfig::validate`] turns
//! every out-of-range value into a `key = value: reason` message before the engine starts.

use super::incident::LifecycleConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Detection settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Run detection in `apitap run`. Off: the daemon only counts and logs transactions.
    pub enabled: bool,
    /// `apitap run`: directory of the model, laid out as `apitap learn --model` writes it:
    /// `model.json` (loaded at start if present, else an empty model learns from scratch; saved
    /// every `save_interval_secs` and at shutdown), `detect.json` (learned detectors, read
    /// only) and `pseudonym.key` (used when `[secrets] pseudonym_key` is empty, created if
    /// absent). Must be writable by the daemon's user.
    pub model_dir: PathBuf,
    /// `apitap run`: wall-clock seconds between saves of the adapted baselines to
    /// `model_dir`, 60 to 604800; each save replaces `model.json` atomically. A save also
    /// happens at shutdown.
    pub save_interval_secs: u64,
    /// `apitap run`: OpenAPI spec (3.0/3.1, YAML or JSON) whose templates name endpoints; traffic
    /// outside it raises shadow_endpoint, operations it marks deprecated raise
    /// deprecated_endpoint. Empty: none.
    pub spec: PathBuf,
    /// `apitap run`: MaxMind-format GeoIP city database for impossible_travel. Empty: none
    /// (impossible_travel is off).
    pub geoip: PathBuf,
    /// Keep learning while detecting, so baselines follow the API as it changes. Traffic that
    /// raised a finding, and all traffic of a client with an open incident, is never learned.
    pub adapt: bool,
    /// While adapting, an endpoint's bodies, parameters and sizes are learned from one call in
    /// this many once it has `adapt_full_calls` learned calls; counts, rates, statuses and
    /// callers are learned from every call. 1 learns every call in full (slowest).
    pub adapt_detail_every: u64,
    /// Calls of an endpoint learned in full before sampling starts.
    pub adapt_full_calls: u64,
    /// `apitap run` with a model younger than this (seconds between its first and last learned
    /// transaction) learns only, and starts detecting when the period is complete.
    pub learning_period_secs: u64,
    /// JSON bodies up to this many bytes are parsed for detection; larger ones are counted
    /// (`json_too_large`) and only their size is judged.
    pub max_json_bytes: usize,
    /// Incident grouping, cooldown, suppression rules and the global alert rate limit.
    pub lifecycle: LifecycleConfig,
    /// Learned models: request shapes per endpoint, caller windows across callers.
    pub learned: super::learned::LearnedConfig,
    /// Behaviour detectors: bola, auth_bruteforce, recon_scan, impossible_travel.
    pub behaviour: super::behaviour::BehaviourConfig,
    /// Injection, secrets in URLs, sensitive data, cleartext credentials, protocol anomalies.
    pub signatures: super::signatures::SignatureConfig,
    /// Baseline-deviation detectors (`[detect.baseline]`).
    pub baseline: super::baseline::BaselineConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            model_dir: PathBuf::from("/var/lib/apitap/model"),
            save_interval_secs: 3600,
            spec: PathBuf::new(),
            geoip: PathBuf::new(),
            adapt: true,
            adapt_detail_every: 16,
            adapt_full_calls: 10_000,
            learning_period_secs: 7 * 24 * 3600,
            max_json_bytes: 1 << 20,
            lifecycle: LifecycleConfig::default(),
            learned: super::learned::LearnedConfig::default(),
            behaviour: Default::default(),
            signatures: Default::default(),
            baseline: super::baseline::BaselineConfig::default(),
        }
    }
}

/// One bad value: `key = value: reason`, the key relative to `[detect]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.key, self.value, self.reason)
    }
}

/// Collects problems: `range` checks `lo <= v <= hi`.
#[derive(Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn fail(&mut self, key: &str, value: impl std::fmt::Display, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    pub fn range<T: PartialOrd + std::fmt::Display>(&mut self, key: &str, v: T, lo: T, hi: T) {
        if v < lo || v > hi {
            let reason = format!("must be between {lo} and {hi}");
            self.fail(key, v, reason);
        }
    }
}

impl DetectConfig {
    /// Checks every value; each bad one is reported, not just the first.
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        if self.enabled && self.model_dir.as_os_str().is_empty() {
            p.fail(
                "model_dir",
                "\"\"",
                "must name the model directory, or set enabled = false",
            );
        }
        p.range(
            "save_interval_secs",
            self.save_interval_secs,
            60,
            7 * 24 * 3600,
        );
        for (key, path) in [
            ("model_dir", &self.model_dir),
            ("spec", &self.spec),
            ("geoip", &self.geoip),
        ] {
            let text = path.to_string_lossy();
            if text.trim() != text {
                p.fail(
                    key,
                    format!("{text:?}"),
                    "has leading or trailing spaces: remove them",
                );
            }
        }
        p.range("max_json_bytes", self.max_json_bytes, 1, 64 << 20);
        p.range("adapt_detail_every", self.adapt_detail_every, 1, 1_000_000);
        p.range(
            "learning_period_secs",
            self.learning_period_secs,
            0,
            366 * 24 * 3600,
        );
        let l = &self.lifecycle;
        p.range("lifecycle.cooldown_secs", l.cooldown_secs, 1, 7 * 24 * 3600);
        p.range(
            "lifecycle.max_open_incidents",
            l.max_open_incidents,
            1,
            10_000_000,
        );
        p.range("lifecycle.max_samples", l.max_samples, 0, 100);
        self.baseline.problems(&mut p);
        if let Err(e) = super::incident::Incidents::new(l) {
            p.fail("lifecycle.suppress", "[...]", e);
        }
        self.learned.check(&mut p);
        self.behaviour.check(&mut p);
        self.signatures.check(&mut p);
        p.0
    }

    /// [`DetectConfig::problems`] as one message.
    pub fn validate(&self) -> Result<(), String> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(problems
            .iter()
            .map(|p| format!("[detect] {p}"))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_each_named() {
        DetectConfig::default().validate().unwrap();
        let c = DetectConfig {
            max_json_bytes: 0,
            lifecycle: LifecycleConfig {
                cooldown_secs: 0,
                ..LifecycleConfig::default()
            },
            ..DetectConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("[detect] max_json_bytes = 0: must be between"),
            "{e}"
        );
        assert!(e.contains("lifecycle.cooldown_secs = 0"), "{e}");
    }

    #[test]
    fn daemon_keys_are_checked() {
        let cases = [
            (
                DetectConfig {
                    model_dir: PathBuf::new(),
                    ..DetectConfig::default()
                },
                "[detect] model_dir = \"\": must name the model directory",
            ),
            (
                DetectConfig {
                    save_interval_secs: 59,
                    ..DetectConfig::default()
                },
                "[detect] save_interval_secs = 59: must be between 60 and 604800",
            ),
            (
                DetectConfig {
                    spec: PathBuf::from("api.yaml "),
                    ..DetectConfig::default()
                },
                "[detect] spec = \"api.yaml \": has leading or trailing spaces",
            ),
        ];
        for (cfg, want) in cases {
            let e = cfg.validate().unwrap_err();
            assert!(e.starts_with(want), "{e:?} should start with {want:?}");
        }
        // Detection off needs no model directory.
        DetectConfig {
            enabled: false,
            model_dir: PathBuf::new(),
            ..DetectConfig::default()
        }
        .validate()
        .unwrap();
    }
}

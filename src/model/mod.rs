//! Learned models (`models/<name>/model.json`): route templates, endpoint profiles, caller
//! profiles and the counters of how they were learned, stored with the versioned, checksummed, atomic envelope
//! of [`store`]. `learn` builds and extends them; [`Model::merge`] combines the models of
//! several sensors.
//!
//! Invariant: a model only holds pseudonyms, never a raw credential; models from sensors with
//! different pseudonym keys refuse to merge (their caller ids would not correlate). A model is
//! byte-deterministic: endpoints and callers are stored sorted by key and merged in key order
//! (float sums in the sketches depend on order).

pub mod learn;
pub mod store;

use crate::baseline::caller::CallerProfile;
use crate::baseline::coverage::Coverage;
use crate::baseline::profile::{EndpointKey, EndpointProfile};
use crate::common::Timestamp;
use crate::inventory::template::RouteLearner;
use learn::LearnConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format version written by this apitap; files up to this version are read.
pub const MODEL_VERSION: u32 = 1;
/// The model file inside a model directory.
pub const MODEL_FILE: &str = "model.json";

/// How much was learned and what was turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnCounters {
    pub transactions: u64,
    pub learned: u64,
    /// Responses without a request: nothing to file them under.
    pub without_request: u64,
    /// Learned although parts were lost in capture (flag `partial`).
    pub partial: u64,
    /// Transactions of endpoints beyond `max_endpoints`.
    pub endpoints_over_cap: u64,
    /// Profiles moved under a template that formed after they were started.
    pub profiles_rehomed: u64,
    /// Learned transactions without a subject (no credential): no caller profile, by design
    /// (see [`learn`]).
    pub anonymous: u64,
    /// Transactions of new callers not tracked because the learner was over
    /// [`LearnConfig::memory_budget_bytes`] (less the endpoint reserve).
    pub callers_over_budget: u64,
    /// Transactions of new endpoints not learned because the learner was over
    /// [`LearnConfig::memory_budget_bytes`].
    pub endpoints_over_budget: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// Names of the sensors whose traffic this model learned, sorted, without duplicates.
    pub sensors: Vec<String>,
    /// Fingerprint of the pseudonym key the caller ids were made with.
    pub pseudonym_key_id: String,
    /// Packet time of the first and last learned transaction (nanoseconds since the epoch).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub counters: LearnCounters,
    pub routes: RouteLearner,
    /// Endpoint profiles sorted by key.
    pub endpoints: Vec<(EndpointKey, EndpointProfile)>,
    /// Caller profiles keyed by subject pseudonym, sorted by it. Absent in models written
    /// before caller profiles existed.
    #[serde(default)]
    pub callers: Vec<(String, CallerProfile)>,
    /// The clock hours the sensors saw traffic in: learned rates count quiet hours only inside
    /// them. Absent in models written before it existed; [`Model::load`] then assumes the
    /// model's own period was covered, as those models did.
    #[serde(default)]
    pub coverage: Coverage,
}

impl Model {
    pub fn new(sensor: &str, pseudonym_key_id: &str, routes: RouteLearner) -> Model {
        Model {
            sensors: vec![sensor.to_string()],
            pseudonym_key_id: pseudonym_key_id.to_string(),
            first_seen: Timestamp::ZERO,
            last_seen: Timestamp::ZERO,
            counters: LearnCounters::default(),
            routes,
            endpoints: Vec::new(),
            callers: Vec::new(),
            coverage: Coverage::new(),
        }
    }

    pub fn file(dir: &Path) -> PathBuf {
        dir.join(MODEL_FILE)
    }

    pub fn load(dir: &Path) -> Result<Model, store::StoreError> {
        store::load(&Model::file(dir), MODEL_VERSION).map(|(_, m): (_, Model)| m.with_coverage())
    }

    /// A model saved before coverage was recorded counted every hour of its period as
    /// listened to; it keeps that assumption for its own period and no further.
    fn with_coverage(mut self) -> Model {
        if self.coverage.is_empty() && self.last_seen != Timestamp::ZERO {
            self.coverage = Coverage::through(self.first_seen, self.last_seen);
        }
        self
    }

    pub fn save(&self, dir: &Path) -> Result<(), store::StoreError> {
        store::save(&Model::file(dir), MODEL_VERSION, self)
    }

    /// Adds another sensor's model into this one.
    pub fn merge(&mut self, other: &Model, cfg: &LearnConfig) -> Result<(), String> {
        if self.pseudonym_key_id != other.pseudonym_key_id {
            return Err(format!(
                "pseudonym keys differ ({} vs {}): caller ids would not correlate; learn both with the same APITAP_PSEUDONYM_KEY",
                self.pseudonym_key_id, other.pseudonym_key_id
            ));
        }
        for s in &other.sensors {
            if !self.sensors.contains(s) {
                self.sensors.push(s.clone());
            }
        }
        self.sensors.sort();
        if other.first_seen != Timestamp::ZERO
            && (self.first_seen == Timestamp::ZERO || other.first_seen < self.first_seen)
        {
            self.first_seen = other.first_seen;
        }
        self.last_seen = self.last_seen.max(other.last_seen);
        self.counters.add(&other.counters);
        self.routes.merge(&other.routes);
        // First, so the rates below fill the quiet hours either sensor listened in.
        self.coverage.union(&other.coverage);
        let mut all: std::collections::BTreeMap<EndpointKey, EndpointProfile> =
            std::mem::take(&mut self.endpoints).into_iter().collect();
        for (k, p) in &other.endpoints {
            match all.get_mut(k) {
                Some(mine) => mine.merge(p, &cfg.profile, &self.coverage),
                None => {
                    all.insert(k.clone(), p.clone());
                }
            }
        }
        self.endpoints = all.into_iter().collect();
        let mut callers: std::collections::BTreeMap<String, CallerProfile> =
            std::mem::take(&mut self.callers).into_iter().collect();
        for (k, p) in &other.callers {
            match callers.get_mut(k) {
                Some(mine) => mine.merge(p, &cfg.caller, &self.coverage),
                None => {
                    callers.insert(k.clone(), p.clone());
                }
            }
        }
        self.callers = callers.into_iter().collect();
        Ok(())
    }

    /// Total calls across endpoints.
    pub fn calls(&self) -> u64 {
        self.endpoints.iter().map(|(_, p)| p.calls).sum()
    }
}

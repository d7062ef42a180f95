//! Learning: transactions in, a [`Model`] out.
//!
//! Each transaction's path is observed by the route learner, mapped to its current template,
//! and folded into that endpoint's profile with the caller's identity. Templates can change as
//! learning goes on (a position folds into a parameter once enough distinct values were seen),
//! so [`Learner::finish`] re-homes every profile under its final template, merging profiles that
//! now share one — profiles are mergeable, so nothing learned is lost.
//!
//! Invariants: no I/O, no clock (time is the transaction's); endpoints are capped
//! (`max_endpoints`), and what the cap turns away is counted.

use super::{LearnCounters, Model};
use crate::baseline::profile::{endpoint_host, EndpointKey, EndpointProfile, ProfileConfig};
use crate::identity::IdentityExtractor;
use crate::inventory::params;
use crate::inventory::template::RouteLearner;
use crate::transaction::Transaction;
use std::collections::HashMap;

/// Limits of one learning run.
#[derive(Clone, Debug)]
pub struct LearnConfig {
    pub profile: ProfileConfig,
    /// Endpoint profiles kept; transactions of further endpoints are counted, not learned.
    pub max_endpoints: usize,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            profile: ProfileConfig::default(),
            max_endpoints: 20_000,
        }
    }
}

pub struct Learner {
    cfg: LearnConfig,
    identity: IdentityExtractor,
    routes: RouteLearner,
    endpoints: HashMap<EndpointKey, EndpointProfile>,
    model: Model,
}

impl Learner {
    /// Continues learning into `model` (a fresh one or one loaded from disk).
    pub fn new(model: Model, identity: IdentityExtractor, cfg: LearnConfig) -> Learner {
        let mut model = model;
        let routes = std::mem::take(&mut model.routes);
        let endpoints = std::mem::take(&mut model.endpoints).into_iter().collect();
        Learner {
            cfg,
            identity,
            routes,
            endpoints,
            model,
        }
    }

    pub fn observe(&mut self, tx: &Transaction) {
        let c = &mut self.model.counters;
        c.transactions = c.transactions.saturating_add(1);
        let Some(req) = tx.request.as_ref() else {
            c.without_request = c.without_request.saturating_add(1);
            return;
        };
        if tx.has_flag("partial") {
            c.partial = c.partial.saturating_add(1);
        }
        let ts = tx.ts();
        if self.model.first_seen == crate::common::Timestamp::ZERO || ts < self.model.first_seen {
            self.model.first_seen = ts;
        }
        if ts > self.model.last_seen {
            self.model.last_seen = ts;
        }
        let host = endpoint_host(tx);
        self.routes.observe(&host, &req.method, &req.uri);
        let template = self.routes.template_of(&host, &req.method, &req.uri);
        let Some(key) = EndpointKey::from_transaction(tx, &template.path, &self.cfg.profile) else {
            return;
        };
        let identity = self.identity.extract(tx);
        let values = params::path_params(&template.path, &req.uri);
        let ids: Vec<&str> = values.iter().map(|(_, v)| *v).collect();
        let at_cap = self.endpoints.len() >= self.cfg.max_endpoints;
        let profile = match self.endpoints.get_mut(&key) {
            Some(p) => p,
            None if at_cap => {
                let c = &mut self.model.counters;
                c.endpoints_over_cap = c.endpoints_over_cap.saturating_add(1);
                return;
            }
            None => self
                .endpoints
                .entry(key)
                .or_insert_with(|| EndpointProfile::new(&self.cfg.profile)),
        };
        profile.observe(tx, &identity, &ids, &self.cfg.profile);
        self.model.counters.learned = self.model.counters.learned.saturating_add(1);
    }

    /// Ends learning: profiles re-homed under their final templates, in a stable order.
    pub fn finish(self) -> Model {
        let Learner {
            cfg,
            routes,
            endpoints,
            mut model,
            ..
        } = self;
        // Merge in key order: float sums depend on order, and a model must be byte-identical for
        // the same input (the hash map's order is random per process).
        let mut endpoints: Vec<(EndpointKey, EndpointProfile)> = endpoints.into_iter().collect();
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        let mut merged: HashMap<EndpointKey, EndpointProfile> = HashMap::new();
        for (mut key, profile) in endpoints {
            // A profile filed under a concrete path (`/users/alice`) moves to the template the
            // path folds into now (`/users/{param}`). Templates map to themselves.
            let now = routes.template_of(&key.host, &key.method, &key.template);
            if now.path != key.template {
                key.template = now.path;
                model.counters.profiles_rehomed = model.counters.profiles_rehomed.saturating_add(1);
            }
            match merged.get_mut(&key) {
                Some(p) => p.merge(&profile, &cfg.profile),
                None => {
                    merged.insert(key, profile);
                }
            }
        }
        let mut endpoints: Vec<(EndpointKey, EndpointProfile)> = merged.into_iter().collect();
        endpoints.sort_by(|a, b| a.0.cmp(&b.0));
        model.routes = routes;
        model.endpoints = endpoints;
        model
    }
}

impl LearnCounters {
    pub fn add(&mut self, o: &LearnCounters) {
        self.transactions = self.transactions.saturating_add(o.transactions);
        self.learned = self.learned.saturating_add(o.learned);
        self.without_request = self.without_request.saturating_add(o.without_request);
        self.partial = self.partial.saturating_add(o.partial);
        self.endpoints_over_cap = self.endpoints_over_cap.saturating_add(o.endpoints_over_cap);
        self.profiles_rehomed = self.profiles_rehomed.saturating_add(o.profiles_rehomed);
    }
}

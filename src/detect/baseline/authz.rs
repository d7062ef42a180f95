//! Broken function-level authorisation (`bfla`): a caller succeeding on a function (method and
//! route) that its role or auth class never calls.
//!
//! Two shapes:
//! - Learned: the endpoint has at least `min_learned_calls` calls, its learned callers carry
//!   roles, none of the caller's roles was seen on more than `max_role_share` of them, and the
//!   caller's role is more common over the whole API than the endpoint's most common role
//!   (privilege is rarer than its absence: a customer on an admin function is an escalation,
//!   an admin on a customer function is not). An anonymous success on a function only ever
//!   called with credentials is the same failure by auth class.
//! - Administrative: the route template contains an administrative word (`admin`, `internal`,
//!   `manage`) and either the caller's roles were never seen there, or the route was never
//!   learned and the caller holds no privileged role. Stronger confidence: these functions
//!   exist for a few roles by design.
//!
//! Only successful calls (2xx) are findings: a refused call is the access control working.
//!
//! Invariants: the only state is a cache of role totals (at most 1024 roles), refreshed every
//! `role_refresh_secs` of capture time; evidence names roles and counts, never credentials.

use super::BflaConfig;
use crate::alert::{AlertKind, Severity};
use crate::baseline::sketch::TopK;
use crate::common::Timestamp;
use crate::detect::{Context, Detector, Finding};
use crate::identity::AuthScheme;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// What the bfla detector turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BflaCounters {
    /// Roles beyond the 1024 whose API-wide totals are kept (counted at each refresh).
    pub roles_untracked: u64,
}

/// `bfla`; see the module documentation.
pub struct BflaDetector {
    cfg: BflaConfig,
    admin_words: Vec<String>,
    privileged: Vec<String>,
    /// Learned calls per role over every endpoint, at most [`MAX_ROLES`] roles.
    role_totals: BTreeMap<String, u64>,
    role_totals_at: Option<Timestamp>,
    counters: BflaCounters,
}

impl BflaDetector {
    pub fn new(cfg: &BflaConfig) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        BflaDetector {
            admin_words: lower(&cfg.admin_route_words),
            privileged: lower(&cfg.privileged_roles),
            cfg: cfg.clone(),
            role_totals: BTreeMap::new(),
            role_totals_at: None,
            counters: BflaCounters::default(),
        }
    }

    pub fn counters(&self) -> &BflaCounters {
        &self.counters
    }

    fn is_admin_route(&self, template: &str) -> bool {
        self.admin_words.iter().any(|w| contains_ci(template, w))
    }

    fn is_privileged(&self, role: &str) -> bool {
        self.privileged.iter().any(|w| contains_ci(role, w))
    }

    /// Whether `label` stands for at most `max_role_share` of `topk`'s total.
    fn unseen(&self, topk: &TopK, label: &str) -> bool {
        let total = topk.total().max(1) as f64;
        topk.get(label).unwrap_or(0) as f64 <= self.cfg.max_role_share * total
    }

    /// Whether the caller's most common role is learned on more calls, over all endpoints,
    /// than the endpoint's most common role. Privilege is rarer than its absence: customers
    /// outnumber support staff, who outnumber admins. So a populous role on a function of a
    /// rarer one is an escalation, and an admin on a customer function (never seen there,
    /// but nothing it could not do anyway) is not.
    fn less_privileged(&mut self, cx: &Context<'_>, roles: &[String], learned: &TopK) -> bool {
        self.refresh_role_totals(cx);
        let total = |r: &str| self.role_totals.get(r).copied().unwrap_or(0);
        let caller = roles.iter().map(|r| total(r)).max().unwrap_or(0);
        let endpoint = learned
            .entries()
            .first()
            .map_or(0, |e| total(e.item.as_str()));
        caller > endpoint
    }

    /// Role call counts over every learned endpoint, recomputed every `role_refresh_secs` of
    /// capture time; only needed when a role was never seen on an endpoint, which is rare.
    fn refresh_role_totals(&mut self, cx: &Context<'_>) {
        let refresh = self.cfg.role_refresh_secs.saturating_mul(1_000_000_000);
        let fresh = self
            .role_totals_at
            .is_some_and(|t| cx.ts.as_nanos().saturating_sub(t.as_nanos()) < refresh);
        if fresh {
            return;
        }
        self.role_totals.clear();
        // Sums are independent of the order the profiles are visited in.
        for (_, p) in cx.learner.endpoints() {
            for e in p.roles.entries() {
                if let Some(t) = self.role_totals.get_mut(e.item.as_str()) {
                    *t = t.saturating_add(e.count);
                } else if self.role_totals.len() < MAX_ROLES {
                    self.role_totals.insert(e.item.clone(), e.count);
                } else {
                    self.counters.roles_untracked += 1;
                }
            }
        }
        self.role_totals_at = Some(cx.ts);
    }
}

/// Distinct roles whose global totals are kept (a profile keeps at most `max_roles` each).
const MAX_ROLES: usize = 1024;

/// Whether `hay` contains `needle_lower` (lower-case ASCII), ignoring ASCII case, without
/// allocating: this runs on every successful call.
pub(super) fn contains_ci(hay: &str, needle_lower: &str) -> bool {
    let n = needle_lower.as_bytes();
    n.is_empty()
        || hay
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n))
}

/// `[{"label": "admin", "calls": 812}, ...]`, most counted first.
fn learned_list(topk: &TopK) -> Value {
    Value::Array(
        topk.entries()
            .iter()
            .map(|e| json!({"label": e.item, "calls": e.count}))
            .collect(),
    )
}

impl Detector for BflaDetector {
    fn name(&self) -> &'static str {
        "bfla"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let status = cx.status();
        if !(200..300).contains(&status) {
            return;
        }
        let roles = &cx.identity.roles;
        let scheme = cx.identity.scheme;
        let admin_route = self.is_admin_route(&cx.key.template);
        let learned = cx.profile.filter(|p| p.calls >= self.cfg.min_learned_calls);
        let (reason, confidence, learned_by) = match learned {
            Some(p) => {
                // A caller without roles (an API key, an opaque token) has no role to judge.
                let role_unseen = !p.roles.is_empty()
                    && !roles.is_empty()
                    && roles.iter().all(|r| self.unseen(&p.roles, r));
                // An anonymous success on a function only ever called with credentials.
                let anonymous_unseen = scheme == AuthScheme::None
                    && !p.auth_schemes.is_empty()
                    && self.unseen(&p.auth_schemes, scheme.name());
                // On an administrative route any unprivileged role never seen there will do,
                // even one seen nowhere else (a forged claim has no popularity to compare).
                let escalates = role_unseen
                    && ((admin_route && !roles.iter().any(|r| self.is_privileged(r)))
                        || self.less_privileged(cx, roles, &p.roles));
                if escalates {
                    let conf = if admin_route { 0.95 } else { 0.8 };
                    ("role_never_seen", conf, learned_list(&p.roles))
                } else if anonymous_unseen {
                    ("anonymous_never_seen", 0.75, learned_list(&p.auth_schemes))
                } else {
                    return;
                }
            }
            None if admin_route => {
                if roles.iter().any(|r| self.is_privileged(r)) || cx.identity.subject.is_none() {
                    // A privileged caller on a new admin route is inventory news, not an
                    // authorisation failure; an anonymous success there is for the
                    // credential detectors, which can say more.
                    return;
                }
                ("admin_route_not_learned", 0.85, Value::Array(Vec::new()))
            }
            None => return,
        };
        let role = roles.first().map_or("none", String::as_str);
        let finding = Finding::new(AlertKind::Bfla, cx);
        // Anonymous successes are one incident per endpoint, however many addresses they come
        // from: the finding is that the function answers without credentials.
        let finding = if reason == "anonymous_never_seen" {
            finding.endpoint_scope()
        } else {
            finding
        };
        out.push(
            finding
                .severity(if admin_route {
                    Severity::High
                } else {
                    Severity::Medium
                })
                .confidence(confidence)
                .summary(format!(
                    "Caller with role {role} ({}) succeeded on {}, which its role never calls.",
                    scheme.name(),
                    cx.endpoint_label()
                ))
                .with("reason", reason)
                .with("caller_roles", roles.clone())
                .with("caller_auth_scheme", scheme.name())
                .with("learned_callers", learned_by)
                .with("learned_calls", cx.profile.map_or(0, |p| p.calls))
                .with("administrative_route", admin_route)
                .with("status", status),
        );
    }
}

//! Broken function-level authorisation (`bfla`): a caller succeeding on a function (method and
//! route) that its role or auth class never calls.
//!
//! Two shapes:
//! - Learned: the endpoint has at least `min_learned_calls` calls, its learned callers carry
//!   roles (or auth schemes), and none of the caller's roles (or its scheme) was seen on more
//!   than `max_role_share` of them. The share, not mere presence, because a TopK count is an
//!   upper bound and may carry another label's evicted count.
//! - Administrative: the route template contains an administrative word (`admin`, `internal`,
//!   `manage`) and either the caller's roles were never seen there, or the route was never
//!   learned and the caller holds no privileged role. Stronger confidence: these functions
//!   exist for a few roles by design.
//!
//! Only successful calls (2xx) are findings: a refused call is the access control working.
//!
//! Invariants: stateless (everything comes from the learned profile and the call); evidence
//! names roles and counts, never credentials.

use super::BflaConfig;
use crate::alert::{AlertKind, Severity};
use crate::baseline::sketch::TopK;
use crate::detect::{Context, Detector, Finding};
use serde_json::{json, Value};

/// `bfla`; see the module documentation.
pub struct BflaDetector {
    cfg: BflaConfig,
    admin_words: Vec<String>,
    privileged: Vec<String>,
}

impl BflaDetector {
    pub fn new(cfg: &BflaConfig) -> Self {
        let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
        BflaDetector {
            admin_words: lower(&cfg.admin_route_words),
            privileged: lower(&cfg.privileged_roles),
            cfg: cfg.clone(),
        }
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
}

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

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let status = cx.status();
        if !(200..300).contains(&status) {
            return;
        }
        let roles = &cx.identity.roles;
        let scheme = cx.identity.scheme.name();
        let admin_route = self.is_admin_route(&cx.key.template);
        let learned = cx.profile.filter(|p| p.calls >= self.cfg.min_learned_calls);
        let (reason, confidence, learned_by) = match learned {
            Some(p) => {
                let role_labelled = !p.roles.is_empty();
                // A caller without roles (an API key, an opaque token) is judged by its scheme.
                let role_unseen = role_labelled
                    && !roles.is_empty()
                    && roles.iter().all(|r| self.unseen(&p.roles, r));
                let scheme_unseen =
                    !p.auth_schemes.is_empty() && self.unseen(&p.auth_schemes, scheme);
                if role_unseen {
                    let conf = if admin_route { 0.95 } else { 0.8 };
                    ("role_never_seen", conf, learned_list(&p.roles))
                } else if scheme_unseen {
                    ("auth_scheme_never_seen", 0.7, learned_list(&p.auth_schemes))
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
        out.push(
            Finding::new(AlertKind::Bfla, cx)
                .severity(if admin_route { Severity::High } else { Severity::Medium })
                .confidence(confidence)
                .summary(format!(
                    "Caller with role {role} ({scheme}) succeeded on {}, which its role never calls.",
                    cx.endpoint_label()
                ))
                .with("reason", reason)
                .with("caller_roles", roles.clone())
                .with("caller_auth_scheme", scheme)
                .with("learned_callers", learned_by)
                .with("learned_calls", cx.profile.map_or(0, |p| p.calls))
                .with("administrative_route", admin_route)
                .with("status", status),
        );
    }
}

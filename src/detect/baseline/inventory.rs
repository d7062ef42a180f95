//! The API inventory as a detector: `shadow_endpoint` and `deprecated_endpoint`.
//!
//! Shadow: an endpoint that answers (anything but 404, which is a probe of nothing and belongs
//! to `recon_scan`) although it is not in the inventory. With a spec, "not in the inventory"
//! means [`Spec::find`](crate::inventory::spec::Spec::find) has no operation for the method and
//! path and, unless `alert_learned_undocumented`, the endpoint was not learned either (the
//! inventory report lists learned undocumented routes once; an alert per hour would be noise).
//! Without a spec it means first seen after learning ended: no profile, or a profile whose
//! first call is not older than the first call this detector judged (the engine adapts the
//! baselines while detecting, so a new endpoint gets a profile from its first benign call). A
//! 2xx raises at once; other statuses after `shadow_min_calls` calls.
//!
//! Deprecated: the spec's operation for the call is marked `deprecated` and it still answers
//! (not 404).
//!
//! Invariants: both are endpoint-scoped (one incident per endpoint, whoever calls it); the
//! calls of new endpoints are counted in a map capped by `max_new_endpoints`.

use super::InventoryConfig;
use crate::alert::{AlertKind, Severity};
use crate::common::Timestamp;
use crate::detect::FastMap;
use crate::detect::{Context, Detector, Finding};

/// What the inventory detector turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InventoryCounters {
    /// Calls of new endpoints beyond `max_new_endpoints`, judged as first calls.
    pub endpoints_untracked: u64,
}

/// `shadow_endpoint` and `deprecated_endpoint`; see the module documentation.
pub struct InventoryDetector {
    cfg: InventoryConfig,
    /// Capture time of the first call judged: profiles first seen before it were learned.
    learning_end: Option<Timestamp>,
    /// By [`crate::detect::endpoint_id`].
    new_calls: FastMap<u64, u32>,
    counters: InventoryCounters,
}

impl InventoryDetector {
    pub fn new(cfg: &InventoryConfig) -> Self {
        InventoryDetector {
            cfg: cfg.clone(),
            learning_end: None,
            new_calls: FastMap::default(),
            counters: InventoryCounters::default(),
        }
    }

    pub fn counters(&self) -> &InventoryCounters {
        &self.counters
    }

    /// Calls of a new endpoint so far, this one included.
    fn count_new(&mut self, key: u64) -> u32 {
        if let Some(n) = self.new_calls.get_mut(&key) {
            *n = n.saturating_add(1);
            return *n;
        }
        if self.new_calls.len() >= self.cfg.max_new_endpoints {
            self.counters.endpoints_untracked += 1;
            return 1;
        }
        self.new_calls.insert(key, 1);
        1
    }
}

impl Detector for InventoryDetector {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        let learning_end = *self.learning_end.get_or_insert(cx.ts);
        let status = cx.status();
        if status == 404 || status == 0 {
            return;
        }
        let op = cx.spec_operation();
        if let Some(op) = op.filter(|op| op.deprecated) {
            out.push(
                Finding::new(AlertKind::DeprecatedEndpoint, cx)
                    .endpoint_scope()
                    .severity(Severity::Low)
                    .confidence(0.95)
                    .summary(format!(
                        "{} is marked deprecated in the spec and still answers {status}.",
                        cx.endpoint_label()
                    ))
                    .with("spec_path", op.path.clone())
                    .with("operation_id", op.operation_id.clone())
                    .with("status", status),
            );
        }
        let learned = cx.profile.is_some_and(|p| p.first_seen < learning_end);
        let in_spec = op.is_some();
        let shadow = match cx.spec {
            Some(_) => !in_spec && (!learned || self.cfg.alert_learned_undocumented),
            None => !learned,
        };
        if !shadow {
            return;
        }
        let calls = self.count_new(cx.endpoint_id);
        let success = (200..300).contains(&status);
        if !success && calls < self.cfg.shadow_min_calls {
            return;
        }
        let basis = match (cx.spec.is_some(), learned) {
            (true, true) => "not_in_spec",
            (true, false) => "not_in_spec_nor_learned",
            (false, _) => "first_seen_after_learning",
        };
        out.push(
            Finding::new(AlertKind::ShadowEndpoint, cx)
                .endpoint_scope()
                .severity(if success {
                    Severity::Medium
                } else {
                    Severity::Low
                })
                .confidence(if success { 0.85 } else { 0.7 })
                .summary(format!(
                    "{} answered {status} but is not in the API inventory ({basis}).",
                    cx.endpoint_label()
                ))
                .with("basis", basis)
                .with("status", status)
                .with("calls_since_learning", u64::from(calls))
                .with("spec_given", cx.spec.is_some())
                .with("learned_calls", cx.profile.map_or(0, |p| p.calls)),
        );
    }
}

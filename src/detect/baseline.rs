//! Baseline-deviation detectors: traffic judged against what was learned about its endpoint
//! and its caller.
//!
//! - [`rate::VolumeDetector`] (`volume_spike`): calls per sliding minute of an endpoint or an
//!   identified caller above a Poisson-aware multiple of its seasonal rate.
//! - [`rate::ErrorSpikeDetector`] (`error_spike`): an endpoint's 5xx share, or its share of
//!   4xx other than 401/403/404, over a sliding window, far above its learned share.
//! - [`authz::BflaDetector`] (`bfla`): a role or auth class succeeding on a function only
//!   other roles call, or on an administrative-looking route.
//! - [`schema::MassAssignmentDetector`] (`mass_assignment`) and
//!   [`schema::ExcessiveDataDetector`] (`excessive_data`): request fields never learned for
//!   the endpoint, responses far larger than learned or carrying never-seen fields.
//! - [`graphql::GraphqlDetector`] (`graphql_abuse`): depth, aliases, batch length, field count
//!   over limits and over what was learned; introspection.
//! - [`inventory::InventoryDetector`] (`shadow_endpoint`, `deprecated_endpoint`).
//!
//! Invariants: statistics are only judged with enough learned material (every `min_*` below);
//! every threshold is a field of [`BaselineConfig`]; every map a detector keeps is capped by a
//! `max_*` field, with a counter of what it turned away; time is capture time only; nothing
//! iterates a hash map in a way that reaches the output.

pub mod authz;
pub mod graphql;
pub mod inventory;
pub mod rate;
pub mod schema;
mod skeleton;

#[cfg(test)]
mod tests;

use super::config::Problems;
use serde::{Deserialize, Serialize};

/// Settings of the baseline detectors (`[detect.baseline]` and its sub-tables).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// `volume_spike`.
    pub volume: VolumeConfig,
    /// `error_spike`.
    pub errors: ErrorSpikeConfig,
    /// `bfla`.
    pub bfla: BflaConfig,
    /// `mass_assignment`.
    pub mass_assignment: MassAssignmentConfig,
    /// `excessive_data`.
    pub excessive_data: ExcessiveDataConfig,
    /// `graphql_abuse`.
    pub graphql: GraphqlConfig,
    /// `shadow_endpoint` and `deprecated_endpoint`.
    pub inventory: InventoryConfig,
}

/// `[detect.baseline.volume]`: calls per sliding window against the seasonal rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeConfig {
    pub enabled: bool,
    /// Length of the sliding window calls are counted over.
    pub window_secs: u64,
    /// Endpoint spikes: the endpoint's learned calls needed before it is judged.
    pub min_endpoint_calls: u64,
    /// Endpoint spikes: alert above `endpoint_factor` times the expected calls per window...
    pub endpoint_factor: f64,
    /// ...plus this many Poisson standard deviations (`sqrt(expected)`)...
    pub endpoint_sigmas: f64,
    /// ...and never below this many calls per window.
    pub endpoint_floor: u64,
    /// Caller spikes: alert above `caller_factor` times the caller's expected calls per
    /// window...
    pub caller_factor: f64,
    /// ...plus this many Poisson standard deviations...
    pub caller_sigmas: f64,
    /// ...and never below this many calls per window (also the whole threshold for a caller
    /// with no learned rate).
    pub caller_floor: u64,
    /// Learned endpoints (`min_endpoint_calls`) with a window; further endpoints are not
    /// judged (`endpoints_untracked`).
    pub max_endpoints: usize,
    /// Identified callers with a window; when full, idle windows are swept, then further
    /// callers are not judged (`callers_untracked`).
    pub max_callers: usize,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            window_secs: 60,
            min_endpoint_calls: 500,
            endpoint_factor: 5.0,
            endpoint_sigmas: 5.0,
            endpoint_floor: 120,
            caller_factor: 10.0,
            caller_sigmas: 5.0,
            caller_floor: 40,
            max_endpoints: 10_000,
            max_callers: 200_000,
        }
    }
}

/// `[detect.baseline.errors]`: error shares per endpoint over a sliding window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErrorSpikeConfig {
    pub enabled: bool,
    /// Length of the sliding window responses are counted over.
    pub window_secs: u64,
    /// Responses in the window needed before the share is judged.
    pub min_responses: u64,
    /// Learned calls of the endpoint needed before it is judged.
    pub min_learned_calls: u64,
    /// The window's error share must reach at least this...
    pub min_share: f64,
    /// ...and `share_factor` times the learned share...
    pub share_factor: f64,
    /// ...and the learned share plus this many binomial standard deviations.
    pub sigmas: f64,
    /// Distinct clients among the window's errors needed: one client's failing probes are
    /// another detector's business, not an endpoint failing its users.
    pub min_clients: usize,
    /// Learned endpoints (`min_learned_calls`) with a window; further endpoints are not
    /// judged (`endpoints_untracked`).
    pub max_endpoints: usize,
}

impl Default for ErrorSpikeConfig {
    fn default() -> Self {
        ErrorSpikeConfig {
            enabled: true,
            window_secs: 120,
            min_responses: 30,
            min_learned_calls: 200,
            min_share: 0.2,
            share_factor: 3.0,
            sigmas: 4.0,
            min_clients: 3,
            max_endpoints: 10_000,
        }
    }
}

/// `[detect.baseline.bfla]`: functions called by roles that never call them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BflaConfig {
    pub enabled: bool,
    /// Learned calls of the endpoint needed before its callers' roles are trusted.
    pub min_learned_calls: u64,
    /// A role seen on at most this share of the endpoint's role-labelled calls counts as
    /// never seen there. 0: only roles never seen at all.
    pub max_role_share: f64,
    /// Seconds of capture time after which the per-role call totals over all endpoints (which
    /// tell a populous role from a privileged one) are recomputed.
    pub role_refresh_secs: u64,
    /// Route words that mark an administrative function (case-insensitive substrings of
    /// the template).
    pub admin_route_words: Vec<String>,
    /// Role words that are privileged: a caller holding one is not flagged on an
    /// administrative route never learned (case-insensitive substrings).
    pub privileged_roles: Vec<String>,
}

impl Default for BflaConfig {
    fn default() -> Self {
        BflaConfig {
            enabled: true,
            min_learned_calls: 50,
            max_role_share: 0.0,
            role_refresh_secs: 600,
            admin_route_words: strings(&["admin", "internal", "manage", "backoffice"]),
            privileged_roles: strings(&["admin", "superuser", "root", "staff", "operator"]),
        }
    }
}

/// `[detect.baseline.mass_assignment]`: request fields never learned for the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MassAssignmentConfig {
    pub enabled: bool,
    /// Methods judged (writes).
    pub methods: Vec<String>,
    /// Learned JSON request bodies (or requests, for query parameters) needed before new
    /// fields are judged.
    pub min_learned_docs: u64,
    /// Field names that grant privilege or value; a new one raises severity. Compared
    /// case-insensitively without `_` and `-` (`is_admin` matches `isAdmin`).
    pub privileged_fields: Vec<String>,
    /// Alert on new fields that are not privileged too (at low severity).
    pub report_unprivileged: bool,
    /// JSON nodes walked per request body; the rest is not judged (`walk_truncated`).
    pub max_json_nodes: usize,
    /// New field paths listed in the evidence.
    pub max_listed_fields: usize,
}

impl Default for MassAssignmentConfig {
    fn default() -> Self {
        MassAssignmentConfig {
            enabled: true,
            methods: strings(&["POST", "PUT", "PATCH"]),
            min_learned_docs: 30,
            privileged_fields: strings(&[
                "role",
                "roles",
                "isAdmin",
                "admin",
                "isStaff",
                "verified",
                "isVerified",
                "emailVerified",
                "balance",
                "permissions",
                "scope",
                "scopes",
                "owner",
                "ownerId",
                "userId",
                "approved",
                "fee",
                "price",
                "discount",
                "credit",
                "tier",
                "plan",
                "groups",
            ]),
            report_unprivileged: true,
            max_json_nodes: 10_000,
            max_listed_fields: 8,
        }
    }
}

/// `[detect.baseline.excessive_data]`: responses larger than learned or with new fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExcessiveDataConfig {
    pub enabled: bool,
    /// Learned responses (sizes) or JSON bodies (fields) needed before judging.
    pub min_learned_docs: u64,
    /// A 2xx body is too large above `median_factor` times the learned median...
    pub median_factor: f64,
    /// ...and `p99_factor` times the learned 99th percentile...
    pub p99_factor: f64,
    /// ...and `max_factor` times the largest learned body...
    pub max_factor: f64,
    /// ...and the 99th percentile plus this many bytes.
    pub floor_bytes: u64,
    /// Alert on 2xx response field paths never learned for the endpoint. (Error bodies vary
    /// with the error and are not judged.)
    pub new_fields: bool,
    /// A learned object with more distinct member names than this is a map keyed by data
    /// (ids, dates), not a record: new members under it are not new fields.
    pub max_object_keys: usize,
    /// JSON nodes walked per response body; the rest is not judged (`walk_truncated`).
    pub max_json_nodes: usize,
    /// Elements walked per array: records of one list share their fields, so the first few
    /// show a new one, and a list of thousands costs no more than a short one.
    pub max_array_items: usize,
    /// New field paths listed in the evidence.
    pub max_listed_fields: usize,
    /// Field name words that mark secrets or personal data; a new field containing one
    /// raises severity (case-insensitive substrings).
    pub sensitive_words: Vec<String>,
}

impl Default for ExcessiveDataConfig {
    fn default() -> Self {
        ExcessiveDataConfig {
            enabled: true,
            min_learned_docs: 50,
            median_factor: 8.0,
            p99_factor: 2.0,
            max_factor: 1.25,
            floor_bytes: 1024,
            new_fields: true,
            max_object_keys: 64,
            max_json_nodes: 20_000,
            max_array_items: 16,
            max_listed_fields: 8,
            sensitive_words: strings(&[
                "password", "passwd", "hash", "secret", "token", "ssn", "card", "cvv", "iban",
                "salt", "private", "apikey",
            ]),
        }
    }
}

/// `[detect.baseline.graphql]`: abusive GraphQL documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlConfig {
    pub enabled: bool,
    /// Selection-set depth above which a document is abusive, if also above the learned
    /// maximum for the path.
    pub max_depth: u32,
    /// Aliased fields above which a document is abusive (same condition).
    pub max_aliases: u32,
    /// Documents in one batched request above which it is abusive (same condition).
    pub max_batch_len: u32,
    /// Field selections above which a document is abusive (same condition).
    pub max_fields: u32,
    /// Introspection (`__schema`, `__type`) is expected here: do not alert on it.
    pub allow_introspection: bool,
    /// Bytes of query text scanned.
    pub max_query_bytes: usize,
    /// GraphQL paths whose learned maxima are cached; further paths are judged on the
    /// limits alone (`paths_untracked`).
    pub max_paths: usize,
    /// Seconds after which a path's cached learned maxima are recomputed.
    pub refresh_secs: u64,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        GraphqlConfig {
            enabled: true,
            max_depth: 10,
            max_aliases: 30,
            max_batch_len: 20,
            max_fields: 500,
            allow_introspection: false,
            max_query_bytes: 64 * 1024,
            max_paths: 1_000,
            refresh_secs: 600,
        }
    }
}

/// `[detect.baseline.inventory]`: endpoints outside the spec or the learned inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InventoryConfig {
    pub enabled: bool,
    /// A never-learned endpoint answered with a non-404, non-2xx status raises
    /// `shadow_endpoint` after this many calls (a 2xx raises it at once).
    pub shadow_min_calls: u32,
    /// With a spec, also alert on endpoints missing from it that were already learned (the
    /// inventory report lists those; by default only new ones alert).
    pub alert_learned_undocumented: bool,
    /// Never-learned endpoints whose calls are counted; further ones are judged as if on
    /// their first call (`endpoints_untracked`).
    pub max_new_endpoints: usize,
}

impl Default for InventoryConfig {
    fn default() -> Self {
        InventoryConfig {
            enabled: true,
            shadow_min_calls: 5,
            alert_learned_undocumented: false,
            max_new_endpoints: 10_000,
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

impl BaselineConfig {
    /// Checks every value, keys relative to `[detect]`.
    pub fn problems(&self, p: &mut Problems) {
        let v = &self.volume;
        p.range("baseline.volume.window_secs", v.window_secs, 10, 3600);
        p.range(
            "baseline.volume.endpoint_factor",
            v.endpoint_factor,
            1.0,
            1e6,
        );
        p.range(
            "baseline.volume.endpoint_sigmas",
            v.endpoint_sigmas,
            0.0,
            100.0,
        );
        p.range(
            "baseline.volume.endpoint_floor",
            v.endpoint_floor,
            1,
            1 << 32,
        );
        p.range("baseline.volume.caller_factor", v.caller_factor, 1.0, 1e6);
        p.range("baseline.volume.caller_sigmas", v.caller_sigmas, 0.0, 100.0);
        p.range("baseline.volume.caller_floor", v.caller_floor, 1, 1 << 32);
        p.range(
            "baseline.volume.max_endpoints",
            v.max_endpoints,
            1,
            10_000_000,
        );
        p.range("baseline.volume.max_callers", v.max_callers, 1, 100_000_000);
        let e = &self.errors;
        p.range("baseline.errors.window_secs", e.window_secs, 10, 3600);
        p.range("baseline.errors.min_responses", e.min_responses, 1, 1 << 32);
        p.range("baseline.errors.min_share", e.min_share, 0.0, 1.0);
        p.range("baseline.errors.share_factor", e.share_factor, 1.0, 1e6);
        p.range("baseline.errors.sigmas", e.sigmas, 0.0, 100.0);
        p.range(
            "baseline.errors.min_clients",
            e.min_clients,
            1,
            rate::MAX_ERROR_EVENTS,
        );
        p.range(
            "baseline.errors.max_endpoints",
            e.max_endpoints,
            1,
            10_000_000,
        );
        let b = &self.bfla;
        p.range("baseline.bfla.max_role_share", b.max_role_share, 0.0, 0.5);
        p.range(
            "baseline.bfla.role_refresh_secs",
            b.role_refresh_secs,
            1,
            7 * 24 * 3600,
        );
        let m = &self.mass_assignment;
        p.range(
            "baseline.mass_assignment.max_json_nodes",
            m.max_json_nodes,
            1,
            10_000_000,
        );
        p.range(
            "baseline.mass_assignment.max_listed_fields",
            m.max_listed_fields,
            1,
            1000,
        );
        let x = &self.excessive_data;
        p.range(
            "baseline.excessive_data.median_factor",
            x.median_factor,
            1.0,
            1e9,
        );
        p.range("baseline.excessive_data.p99_factor", x.p99_factor, 1.0, 1e9);
        p.range("baseline.excessive_data.max_factor", x.max_factor, 1.0, 1e9);
        p.range(
            "baseline.excessive_data.max_object_keys",
            x.max_object_keys,
            1,
            1_000_000,
        );
        p.range(
            "baseline.excessive_data.max_array_items",
            x.max_array_items,
            1,
            10_000_000,
        );
        p.range(
            "baseline.excessive_data.max_json_nodes",
            x.max_json_nodes,
            1,
            10_000_000,
        );
        p.range(
            "baseline.excessive_data.max_listed_fields",
            x.max_listed_fields,
            1,
            1000,
        );
        let g = &self.graphql;
        p.range(
            "baseline.graphql.max_query_bytes",
            g.max_query_bytes,
            64,
            16 << 20,
        );
        p.range("baseline.graphql.max_paths", g.max_paths, 1, 1_000_000);
        p.range(
            "baseline.graphql.refresh_secs",
            g.refresh_secs,
            1,
            7 * 24 * 3600,
        );
        let i = &self.inventory;
        p.range(
            "baseline.inventory.shadow_min_calls",
            i.shadow_min_calls,
            1,
            1_000_000,
        );
        p.range(
            "baseline.inventory.max_new_endpoints",
            i.max_new_endpoints,
            1,
            10_000_000,
        );
    }
}

/// The detectors of this family that `cfg` enables, in a fixed order.
pub fn detectors(cfg: &BaselineConfig) -> Vec<Box<dyn super::Detector>> {
    let mut v: Vec<Box<dyn super::Detector>> = Vec::new();
    if cfg.volume.enabled {
        v.push(Box::new(rate::VolumeDetector::new(&cfg.volume)));
    }
    if cfg.errors.enabled {
        v.push(Box::new(rate::ErrorSpikeDetector::new(&cfg.errors)));
    }
    if cfg.bfla.enabled {
        v.push(Box::new(authz::BflaDetector::new(&cfg.bfla)));
    }
    if cfg.mass_assignment.enabled {
        v.push(Box::new(schema::MassAssignmentDetector::new(
            &cfg.mass_assignment,
        )));
    }
    if cfg.excessive_data.enabled {
        v.push(Box::new(schema::ExcessiveDataDetector::new(
            &cfg.excessive_data,
        )));
    }
    if cfg.graphql.enabled {
        v.push(Box::new(graphql::GraphqlDetector::new(&cfg.graphql)));
    }
    if cfg.inventory.enabled {
        v.push(Box::new(inventory::InventoryDetector::new(&cfg.inventory)));
    }
    v
}

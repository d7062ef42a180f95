//! GraphQL abuse (`graphql_abuse`): documents deeper, wider, more aliased or more batched than
//! both a configured limit and anything learned on the same GraphQL path, and introspection.
//!
//! Endpoint profiles of GraphQL are keyed by operation, so an attacker's new operation has no
//! profile of its own: the learned maxima are taken over every operation learned on the same
//! host and path, computed once per path and refreshed every `refresh_secs` of capture time
//! (learned maxima only grow, so a stale cache can only be stricter by what benign traffic
//! added since). Introspection (`__schema`, `__type`) alerts unless configured as expected or
//! an operation named `IntrospectionQuery` was learned on the path.
//!
//! Invariants: the document is scanned once with [`scan_graphql`] (linear, bounded by
//! `max_query_bytes`); the per-path cache is capped by `max_paths` with a counter.

use super::GraphqlConfig;
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::{graphql_from_json, is_graphql_path, scan_graphql, GraphqlInfo};
use crate::baseline::sketch::hash64;
use crate::common::Timestamp;
use crate::detect::FastMap;
use crate::detect::{Context, Detector, Finding};

/// Learned maxima over every operation of one GraphQL path.
#[derive(Clone, Copy, Debug, Default)]
struct Learned {
    depth: f64,
    aliases: f64,
    batch_len: f64,
    fields: f64,
    /// An `IntrospectionQuery` operation was learned here.
    introspection: bool,
    computed: Timestamp,
}

/// What the GraphQL detector turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GraphqlCounters {
    /// Requests on paths beyond `max_paths`, judged on the limits alone.
    pub paths_untracked: u64,
}

/// `graphql_abuse`; see the module documentation.
pub struct GraphqlDetector {
    cfg: GraphqlConfig,
    /// Keyed by a hash of (host, template): no allocation per request.
    learned: FastMap<u64, Learned>,
    counters: GraphqlCounters,
}

impl GraphqlDetector {
    pub fn new(cfg: &GraphqlConfig) -> Self {
        GraphqlDetector {
            cfg: cfg.clone(),
            learned: FastMap::default(),
            counters: GraphqlCounters::default(),
        }
    }

    pub fn counters(&self) -> &GraphqlCounters {
        &self.counters
    }

    fn learned(&mut self, cx: &Context<'_>) -> Learned {
        let refresh = self.cfg.refresh_secs.saturating_mul(1_000_000_000);
        let key =
            hash64(cx.key.host.as_bytes()) ^ hash64(cx.key.template.as_bytes()).rotate_left(1);
        if let Some(l) = self.learned.get(&key) {
            if cx.ts.as_nanos().saturating_sub(l.computed.as_nanos()) < refresh {
                return *l;
            }
        }
        let mut l = Learned {
            computed: cx.ts,
            ..Learned::default()
        };
        // Maxima and "any" are independent of the iteration order of the profiles.
        for (k, p) in cx.learner.endpoints() {
            if k.host != cx.key.host || k.template != cx.key.template {
                continue;
            }
            if k.graphql
                .as_ref()
                .is_some_and(|(_, n)| n.eq_ignore_ascii_case("IntrospectionQuery"))
            {
                l.introspection = true;
            }
            if let Some(g) = &p.graphql {
                let max = |s: &crate::baseline::sketch::QuantileSketch| s.max().unwrap_or(0.0);
                l.depth = l.depth.max(max(&g.depth));
                l.aliases = l.aliases.max(max(&g.aliases));
                l.batch_len = l.batch_len.max(max(&g.batch_len));
                l.fields = l.fields.max(max(&g.fields));
            }
        }
        if self.learned.contains_key(&key) || self.learned.len() < self.cfg.max_paths {
            self.learned.insert(key, l);
        } else {
            self.counters.paths_untracked += 1;
        }
        l
    }

    /// The GraphQL document of the request, with whether it asks for introspection.
    fn document(&self, cx: &Context<'_>) -> Option<(GraphqlInfo, bool)> {
        let max = self.cfg.max_query_bytes;
        let introspects = |q: &str| {
            let b = q.as_bytes().get(..q.len().min(max)).unwrap_or(&[]);
            memchr::memmem::find(b, b"__schema").is_some()
                || memchr::memmem::find(b, b"__type").is_some()
        };
        if let Some(body) = cx.request_json() {
            let info = graphql_from_json(body, max, 128)?;
            let docs: Box<dyn Iterator<Item = &serde_json::Value>> = match body {
                serde_json::Value::Array(items) => Box::new(items.iter()),
                v => Box::new(std::iter::once(v)),
            };
            let intro = docs
                .filter_map(|d| d.get("query").and_then(|q| q.as_str()))
                .any(introspects);
            return Some((info, intro));
        }
        // A raw document only under its own media type: a JSON body too large to parse
        // would scan as one anonymous selection with the query hidden in a string.
        let media = cx.req.headers.get("content-type")?;
        memchr::memmem::find(&media.to_ascii_lowercase(), b"application/graphql")?;
        let text = std::str::from_utf8(&cx.req.body.data).ok()?;
        Some((scan_graphql(text, None, max, 128), introspects(text)))
    }
}

impl Detector for GraphqlDetector {
    fn name(&self) -> &'static str {
        "graphql_abuse"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !is_graphql_path(&cx.key.template) {
            return;
        }
        let Some((info, introspection)) = self.document(cx) else {
            return;
        };
        let learned = self.learned(cx);
        let c = &self.cfg;
        let mut over: Vec<serde_json::Value> = Vec::new();
        let mut check = |name: &str, observed: u32, limit: u32, learned_max: f64| {
            if observed > limit && f64::from(observed) > learned_max {
                over.push(serde_json::json!({
                    "measure": name,
                    "observed": observed,
                    "limit": limit,
                    "learned_max": learned_max,
                }));
            }
        };
        check("depth", info.depth, c.max_depth, learned.depth);
        check("aliases", info.aliases, c.max_aliases, learned.aliases);
        check(
            "batch_len",
            info.batch_len,
            c.max_batch_len,
            learned.batch_len,
        );
        check("fields", info.fields, c.max_fields, learned.fields);
        let introspection = introspection && !c.allow_introspection && !learned.introspection;
        if over.is_empty() && !introspection {
            return;
        }
        let what = over
            .iter()
            .filter_map(|o| o.get("measure").and_then(|m| m.as_str()))
            .chain(introspection.then_some("introspection"))
            .collect::<Vec<_>>()
            .join(", ");
        let op = info
            .op
            .as_ref()
            .map(|(t, n)| format!("{} {n}", t.name()))
            .unwrap_or_default();
        out.push(
            Finding::new(AlertKind::GraphqlAbuse, cx)
                .severity(if over.is_empty() {
                    Severity::Medium
                } else {
                    Severity::High
                })
                .confidence(0.9)
                .summary(format!(
                    "GraphQL request to {} exceeded its limits ({what}).",
                    cx.endpoint_label()
                ))
                .with("exceeded", over)
                .with("introspection", introspection)
                .with("operation", op.trim().to_owned())
                .with("depth", info.depth)
                .with("aliases", info.aliases)
                .with("batch_len", info.batch_len)
                .with("fields", info.fields)
                .with("query_truncated", info.truncated)
                .with("status", cx.status()),
        );
    }
}

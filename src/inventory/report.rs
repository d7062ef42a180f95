//! What the inventory commands print: endpoint listings, an OpenAPI 3.1 document reconstructed
//! from traffic, and the drift between a learned model and a supplied spec.
//!
//! Pure functions of a [`Model`] (and a [`Spec`]); rendering to text or files is the CLI's job.

use crate::baseline::profile::{EndpointKey, EndpointProfile, FieldMap};
use crate::baseline::shape::ValueShape;
use crate::inventory::spec::{ParamIn, Spec};
use crate::model::Model;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One endpoint as `apitap inventory` lists it.
#[derive(Serialize, Debug)]
pub struct EndpointRow {
    pub host: String,
    pub method: String,
    pub route: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graphql: Option<String>,
    pub calls: u64,
    /// Epoch seconds.
    pub first_seen: f64,
    pub last_seen: f64,
    /// Query parameter name → learned shape.
    pub params: BTreeMap<String, String>,
    /// JSON request field path → learned shape.
    pub request_fields: BTreeMap<String, String>,
    pub auth_schemes: Vec<String>,
    /// Status code → calls.
    pub status: BTreeMap<String, u64>,
    /// Sensitive data kinds seen in the endpoint's traffic → findings.
    pub sensitive: BTreeMap<String, u64>,
    pub distinct_callers: u64,
    /// Response body size quantiles (bytes): p50, p95.
    pub response_bytes_p50: Option<f64>,
    pub response_bytes_p95: Option<f64>,
}

fn shapes(fields: &FieldMap) -> BTreeMap<String, String> {
    fields
        .fields
        .iter()
        .map(|(k, f)| (k.clone(), f.shape.describe()))
        .collect()
}

pub fn endpoint_rows(model: &Model) -> Vec<EndpointRow> {
    model.endpoints.iter().map(|(k, p)| row(k, p)).collect()
}

fn row(k: &EndpointKey, p: &EndpointProfile) -> EndpointRow {
    EndpointRow {
        host: k.host.clone(),
        method: k.method.clone(),
        route: k.template.clone(),
        graphql: k
            .graphql
            .as_ref()
            .map(|(t, n)| format!("{} {}", t.name(), n).trim().to_string()),
        calls: p.calls,
        first_seen: p.first_seen.as_secs_f64(),
        last_seen: p.last_seen.as_secs_f64(),
        params: shapes(&p.query_params),
        request_fields: shapes(&p.request_fields),
        auth_schemes: p
            .auth_schemes
            .entries()
            .iter()
            .map(|e| e.item.clone())
            .collect(),
        status: p
            .status
            .entries()
            .iter()
            .map(|e| (e.item.clone(), e.count))
            .collect(),
        sensitive: p.sensitive.clone(),
        distinct_callers: p.callers.estimate().round() as u64,
        response_bytes_p50: p.response_bytes.quantile(0.5),
        response_bytes_p95: p.response_bytes.quantile(0.95),
    }
}

/// JSON Schema of a learned value shape.
pub fn shape_schema(s: &ValueShape) -> Value {
    let mut types: Vec<Value> = Vec::new();
    let mut schema = Map::new();
    if s.trues + s.falses > 0 {
        types.push(json!("boolean"));
    }
    if s.integers > 0 && s.floats == 0 {
        types.push(json!("integer"));
        schema.insert("minimum".into(), json!(s.int_min));
        schema.insert("maximum".into(), json!(s.int_max));
    } else if s.floats > 0 {
        types.push(json!("number"));
    }
    if s.objects > 0 {
        types.push(json!("object"));
    }
    if s.arrays > 0 {
        types.push(json!("array"));
    }
    if let Some(st) = &s.strings {
        types.push(json!("string"));
        let all = |n: u64| n > 0 && n == st.count;
        if all(st.uuids) {
            schema.insert("format".into(), json!("uuid"));
        } else if all(st.datetimes) {
            schema.insert("format".into(), json!("date-time"));
        } else if all(st.dates) {
            schema.insert("format".into(), json!("date"));
        } else if all(st.emails) {
            schema.insert("format".into(), json!("email"));
        }
        if let Some(values) = &st.enum_values {
            if !values.is_empty() && s.integers + s.floats + s.objects + s.arrays == 0 {
                schema.insert("enum".into(), json!(values.keys().collect::<Vec<_>>()));
            }
        }
    }
    if s.nulls > 0 {
        types.push(json!("null"));
    }
    match types.len() {
        0 => {}
        1 => {
            schema.insert("type".into(), types.remove(0));
        }
        _ => {
            schema.insert("type".into(), Value::Array(types));
        }
    }
    Value::Object(schema)
}

/// Rebuilds a nested object schema from flat key paths (`$.a.b`, `$.items[].sku`).
pub fn fields_schema(fields: &FieldMap) -> Value {
    let mut root = json!({"type": "object", "properties": {}});
    for (path, f) in &fields.fields {
        let Some(rest) = path.strip_prefix('$') else {
            continue;
        };
        let mut node = &mut root;
        let parts: Vec<&str> = rest.split('.').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            continue;
        }
        for (i, part) in parts.iter().enumerate() {
            let (name, arrays) = {
                let n = part.trim_end_matches("[]");
                (n, (part.len() - n.len()) / 2)
            };
            let last = i + 1 == parts.len();
            if !node.get("properties").is_some_and(Value::is_object) {
                node["type"] = json!("object");
                node["properties"] = json!({});
            }
            let props = &mut node["properties"];
            if props.get(name).is_none() {
                props[name] = json!({});
            }
            let mut child = &mut props[name];
            for _ in 0..arrays {
                child["type"] = json!("array");
                if child.get("items").is_none() {
                    child["items"] = json!({});
                }
                child = &mut child["items"];
            }
            if last {
                let learned = shape_schema(&f.shape);
                if let Value::Object(m) = learned {
                    for (k, v) in m {
                        // Keep structure built by deeper paths; add the learned type and limits.
                        if k == "type" && child.get("properties").is_some() {
                            continue;
                        }
                        child[k] = v;
                    }
                }
            }
            node = child;
        }
    }
    root
}

fn status_for_class(p: &EndpointProfile, class: usize) -> String {
    p.status
        .entries()
        .iter()
        .find(|e| e.item.starts_with(char::from(b'2' + class as u8)))
        .map(|e| e.item.clone())
        .unwrap_or_else(|| format!("{}XX", class + 2))
}

/// An OpenAPI 3.1 document of everything the model saw.
pub fn openapi(model: &Model, title: &str) -> Value {
    let mut paths = Map::new();
    let mut schemes = Map::new();
    for (k, p) in &model.endpoints {
        let mut params = Vec::new();
        for seg in k.template.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        for (name, f) in &p.query_params.fields {
            let required = p.query_params.docs > 0 && f.present == p.query_params.docs;
            params.push(json!({"name": name, "in": "query", "required": required, "schema": shape_schema(&f.shape)}));
        }
        let mut op = json!({
            "summary": format!("{} calls seen", p.calls),
            "parameters": params,
            "responses": {},
        });
        if let Some((t, n)) = &k.graphql {
            op["x-graphql-operation"] = json!(format!("{} {}", t.name(), n).trim());
        }
        if !p.request_fields.fields.is_empty() {
            op["requestBody"] = json!({"content": {"application/json": {"schema": fields_schema(&p.request_fields)}}});
        }
        for e in p.status.entries() {
            op["responses"][e.item.as_str()] =
                json!({"description": format!("{} responses seen", e.count)});
        }
        for (class, fields) in p.response_fields.iter().enumerate() {
            if fields.fields.is_empty() {
                continue;
            }
            let code = status_for_class(p, class);
            op["responses"][code.as_str()]["description"]
                .as_str()
                .is_none()
                .then(|| op["responses"][code.as_str()]["description"] = json!("seen"));
            op["responses"][code.as_str()]["content"] =
                json!({"application/json": {"schema": fields_schema(fields)}});
        }
        let mut security = Vec::new();
        for e in p.auth_schemes.entries() {
            let (name, scheme) = match e.item.as_str() {
                "bearer_jwt" => (
                    "bearerJwt",
                    json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
                ),
                "bearer_opaque" => ("bearer", json!({"type": "http", "scheme": "bearer"})),
                "basic" => ("basic", json!({"type": "http", "scheme": "basic"})),
                "api_key" => (
                    "apiKey",
                    json!({"type": "apiKey", "in": "header", "name": "X-API-Key"}),
                ),
                "cookie" => (
                    "session",
                    json!({"type": "apiKey", "in": "cookie", "name": "session"}),
                ),
                _ => continue,
            };
            schemes.insert(name.to_string(), scheme);
            security.push(json!({ name: [] }));
        }
        if !security.is_empty() {
            op["security"] = Value::Array(security);
        }
        let item = paths.entry(k.template.clone()).or_insert_with(|| json!({}));
        let method = k.method.to_ascii_lowercase();
        // Several GraphQL operations share one path and method: keep the busiest.
        if item.get(&method).is_none() {
            item[method] = op;
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": "observed", "description": format!(
            "Reconstructed by apitap from {} transactions seen by {}.",
            model.counters.learned, model.sensors.join(", "))},
        "paths": paths,
        "components": {"securitySchemes": schemes},
    })
}

/// Differences between what the model saw and what a spec says.
#[derive(Serialize, Debug, Default)]
pub struct Drift {
    /// Endpoints seen that the spec does not have: `METHOD route`.
    pub shadow: Vec<String>,
    /// Spec operations marked deprecated that were still called: `METHOD path (calls)`.
    pub deprecated_called: Vec<String>,
    /// Spec operations never seen in traffic.
    pub never_seen: Vec<String>,
    /// Query parameters seen but not in the spec: `METHOD path: name`.
    pub unknown_params: Vec<String>,
    /// JSON request fields seen but not in the spec: `METHOD path: $.field`.
    pub unknown_fields: Vec<String>,
}

pub fn drift(model: &Model, spec: &Spec) -> Drift {
    let mut d = Drift::default();
    let mut seen_ops = std::collections::BTreeSet::new();
    for (k, p) in &model.endpoints {
        let Some(op) = spec.find(&k.method, &k.template) else {
            d.shadow
                .push(format!("{} {}{}", k.method, k.host, k.template));
            continue;
        };
        seen_ops.insert((op.method.clone(), op.path.clone()));
        if op.deprecated {
            d.deprecated_called
                .push(format!("{} {} ({} calls)", op.method, op.path, p.calls));
        }
        for name in p.query_params.fields.keys() {
            if !op
                .params
                .iter()
                .any(|q| q.location == ParamIn::Query && q.name == *name)
            {
                d.unknown_params
                    .push(format!("{} {}: {name}", op.method, op.path));
            }
        }
        // Fields under a known object are only reported at their first unknown level.
        for path in p.request_fields.fields.keys() {
            if !op.request_fields.is_empty() && !op.request_fields.contains(path) {
                let parent_known =
                    path.rfind(['.', '['])
                        .map(|i| &path[..i])
                        .is_none_or(|parent| {
                            parent == "$" || op.request_fields.iter().any(|f| f == parent)
                        });
                if parent_known {
                    d.unknown_fields
                        .push(format!("{} {}: {path}", op.method, op.path));
                }
            }
        }
    }
    for op in &spec.operations {
        if !seen_ops.contains(&(op.method.clone(), op.path.clone())) {
            d.never_seen.push(format!("{} {}", op.method, op.path));
        }
    }
    d.unknown_params.dedup();
    d.unknown_fields.dedup();
    d
}

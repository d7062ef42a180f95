//! OpenAPI documents as apitap uses them: which operations exist, under which path templates,
//! with which parameters and JSON fields, and which are deprecated.
//!
//! Reads OpenAPI 3.0 and 3.1 (and Swagger 2.0's `basePath`/`definitions`), YAML or JSON. Only
//! what the inventory and the detectors need is kept: this is an index, not a validator. Local
//! `$ref`s (`#/components/...`, `#/definitions/...`) are resolved with a depth cap, so a cyclic
//! schema cannot loop.
//!
//! Invariant: loading never panics on any input; a document that is not an OpenAPI object gives
//! an error naming the file and the reason.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// `$ref` hops and schema nesting followed before giving up on a branch.
const MAX_SCHEMA_DEPTH: usize = 12;
/// JSON field paths kept per schema (request body or one response).
const MAX_FIELDS: usize = 512;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Why a spec could not be used.
#[derive(Debug)]
pub struct SpecError {
    pub file: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.reason)
    }
}

impl std::error::Error for SpecError {}

/// Where a parameter travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamIn {
    Path,
    Query,
    Header,
    Cookie,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SpecParam {
    pub name: String,
    pub location: ParamIn,
    pub required: bool,
    /// The schema's `type` (`integer`, `string`, ...) when it says one.
    pub schema_type: Option<String>,
}

/// The declared type of one JSON field: the schema's `type` and `format`, either absent when
/// the schema does not say (a bare `$ref` to a missing component, an untyped `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FieldType {
    /// `integer`, `number`, `string`, `boolean`, `object` or `array`; an untyped schema with
    /// `properties` counts as `object`, one with `items` as `array`.
    pub type_name: Option<String>,
    /// `uuid`, `date`, `date-time`, `email`, ... as written.
    pub format: Option<String>,
}

/// One operation: a method on a path template.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SpecOperation {
    /// Upper-case method.
    pub method: String,
    /// Path template as written in the spec, with the server base path in front.
    pub path: String,
    pub operation_id: Option<String>,
    pub deprecated: bool,
    pub params: Vec<SpecParam>,
    /// JSON key paths of the request body (`$.items[].sku`), when it has a JSON schema.
    pub request_fields: Vec<String>,
    /// JSON key paths per response status (`200`, `4XX`, `default`).
    pub response_fields: BTreeMap<String, Vec<String>>,
    /// Declared types of the request body's key paths (every path of `request_fields`).
    pub request_field_types: BTreeMap<String, FieldType>,
    /// Declared types of each response's key paths, by status as in `response_fields`.
    pub response_field_types: BTreeMap<String, BTreeMap<String, FieldType>>,
    /// The operation requires some security scheme (its own `security` or the document's).
    pub secured: bool,
}

/// An indexed OpenAPI document.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub title: String,
    /// `openapi` or `swagger` version string.
    pub version: String,
    pub operations: Vec<SpecOperation>,
    /// `operations` compiled for [`Spec::find`], in the same order; built by [`Spec::load`].
    /// An index that does not match `operations` (changed after loading) is not used.
    routes: Vec<Route>,
}

/// One operation's method and template, split once: `find` runs for every request.
#[derive(Clone, Debug)]
struct Route {
    method: String,
    segments: Vec<Segment>,
    literals: usize,
}

/// One template segment.
#[derive(Clone, Debug)]
enum Segment {
    /// `{id}`: any non-empty segment.
    Param,
    /// `{id}.json`, `v{n}`: the text around the parameter, and something between.
    Mixed {
        pre: String,
        post: String,
    },
    Literal(String),
}

impl Route {
    fn compile(op: &SpecOperation) -> Route {
        let segments: Vec<Segment> = op
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|t| {
                if t.starts_with('{') && t.ends_with('}') {
                    Segment::Param
                } else if let Some((pre, rest)) = t.split_once('{') {
                    let post = rest.split_once('}').map(|(_, p)| p).unwrap_or("");
                    Segment::Mixed {
                        pre: pre.to_owned(),
                        post: post.to_owned(),
                    }
                } else {
                    Segment::Literal(t.to_owned())
                }
            })
            .collect();
        Route {
            method: op.method.clone(),
            literals: segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count(),
            segments,
        }
    }

    /// Whether the request path's segments (`segs`) fall under this template.
    fn matches(&self, segs: &[&str]) -> bool {
        self.segments.len() == segs.len()
            && self.segments.iter().zip(segs).all(|(t, s)| match t {
                Segment::Param => true,
                Segment::Mixed { pre, post } => {
                    s.starts_with(pre.as_str())
                        && s.ends_with(post.as_str())
                        && s.len() > pre.len() + post.len()
                }
                Segment::Literal(l) => l == s,
            })
    }
}

/// Request path segments split on the stack; longer paths take the uncompiled route.
const MAX_FIND_SEGMENTS: usize = 32;

impl Spec {
    /// Loads a spec file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: name.clone(),
            reason: e.to_string(),
        })?;
        Spec::parse(&text, &name)
    }

    /// Parses spec text; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Spec, SpecError> {
        let err = |reason: String| SpecError {
            file: name.to_string(),
            reason,
        };
        // JSON is YAML, but a JSON parser gives better errors for JSON documents.
        let doc: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?
        } else {
            serde_norway::from_str(text).map_err(|e| err(format!("invalid YAML: {e}")))?
        };
        let version = doc
            .get("openapi")
            .or_else(|| doc.get("swagger"))
            .and_then(Value::as_str)
            .ok_or_else(
                || err("not an OpenAPI document: no `openapi` or `swagger` version".into()),
            )?
            .to_string();
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| err("no `paths` object".into()))?;
        let base = base_path(&doc);
        let global_security = has_security(doc.get("security"));
        let mut operations = Vec::new();
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            let shared_params = item.get("parameters");
            for m in METHODS {
                let Some(op) = item.get(*m) else {
                    continue;
                };
                let mut params = Vec::new();
                collect_params(&doc, shared_params, &mut params);
                collect_params(&doc, op.get("parameters"), &mut params);
                let mut request_fields = Fields::default();
                if let Some(schema) = json_body_schema(&doc, op.get("requestBody")) {
                    field_paths(&doc, schema, "$", 0, &mut request_fields);
                }
                // Swagger 2.0: a `body` parameter carries the schema.
                if request_fields.paths.is_empty() {
                    if let Some(body) =
                        swagger_body_param(&doc, shared_params, op.get("parameters"))
                    {
                        field_paths(&doc, body, "$", 0, &mut request_fields);
                    }
                }
                let mut response_fields = BTreeMap::new();
                let mut response_field_types = BTreeMap::new();
                if let Some(responses) = op.get("responses").and_then(Value::as_object) {
                    for (status, resp) in responses {
                        let resp = resolve(&doc, resp, 0);
                        let schema = json_body_schema(&doc, Some(resp))
                            .or_else(|| resp.get("schema").map(|s| resolve(&doc, s, 0)));
                        if let Some(schema) = schema {
                            let mut fields = Fields::default();
                            field_paths(&doc, schema, "$", 0, &mut fields);
                            response_fields.insert(status.clone(), fields.paths);
                            response_field_types.insert(status.clone(), fields.types);
                        }
                    }
                }
                let secured = match op.get("security") {
                    Some(s) => has_security(Some(s)),
                    None => global_security,
                };
                operations.push(SpecOperation {
                    method: m.to_ascii_uppercase(),
                    path: join_base(&base, template),
                    operation_id: op
                        .get("operationId")
                        .and_then(Value::as_str)
                        .map(String::from),
                    deprecated: op
                        .get("deprecated")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    params,
                    request_fields: request_fields.paths,
                    response_fields,
                    request_field_types: request_fields.types,
                    response_field_types,
                    secured,
                });
            }
        }
        Ok(Spec {
            title: doc
                .pointer("/info/title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            version,
            routes: operations.iter().map(Route::compile).collect(),
            operations,
        })
    }

    /// Every path template, once each, in spec order.
    pub fn paths(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for op in &self.operations {
            if !seen.contains(&op.path.as_str()) {
                seen.push(op.path.as_str());
            }
        }
        seen
    }

    /// The operation a concrete request path (query string ignored) and method fall under.
    /// Literal segments beat parameters when several templates match.
    pub fn find(&self, method: &str, path: &str) -> Option<&SpecOperation> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let mut segs = [""; MAX_FIND_SEGMENTS];
        let mut n = 0;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            match segs.get_mut(n) {
                Some(slot) => *slot = seg,
                None => return self.find_uncompiled(method, path),
            }
            n += 1;
        }
        if self.routes.len() != self.operations.len() {
            return self.find_uncompiled(method, path);
        }
        let segs = segs.get(..n).unwrap_or(&[]);
        let mut best: Option<(&SpecOperation, usize)> = None;
        for (route, op) in self.routes.iter().zip(&self.operations) {
            if route.method.eq_ignore_ascii_case(method)
                && route.matches(segs)
                && best.is_none_or(|(_, l)| route.literals > l)
            {
                best = Some((op, route.literals));
            }
        }
        best.map(|(op, _)| op)
    }

    /// [`Spec::find`] without the compiled routes (very long paths, an index out of date).
    fn find_uncompiled(&self, method: &str, path: &str) -> Option<&SpecOperation> {
        let mut best: Option<(&SpecOperation, usize)> = None;
        for op in &self.operations {
            if !op.method.eq_ignore_ascii_case(method) {
                continue;
            }
            if let Some(literals) = template_match(&op.path, path) {
                if best.is_none_or(|(_, l)| literals > l) {
                    best = Some((op, literals));
                }
            }
        }
        best.map(|(op, _)| op)
    }

    /// Whether any operation (whatever its method) has this template.
    pub fn has_path(&self, template: &str) -> bool {
        self.operations.iter().any(|o| o.path == template)
    }
}

/// Number of literal segments if `template` matches the request path segment for segment
/// (empty segments ignored on both sides). Runs once per operation per request: no allocation.
fn template_match(template: &str, path: &str) -> Option<usize> {
    let mut tsegs = template.split('/').filter(|s| !s.is_empty());
    let mut segs = path.split('/').filter(|s| !s.is_empty());
    let mut literals = 0;
    loop {
        let (t, s) = match (tsegs.next(), segs.next()) {
            (None, None) => return Some(literals),
            (Some(t), Some(s)) => (t, s),
            _ => return None,
        };
        if t.starts_with('{') && t.ends_with('}') {
            continue;
        }
        if t.contains('{') {
            // A segment mixing text and a parameter (`{id}.json`): match the literal parts.
            let (pre, rest) = t.split_once('{')?;
            let post = rest.split_once('}').map(|(_, p)| p).unwrap_or("");
            if !(s.starts_with(pre) && s.ends_with(post) && s.len() > pre.len() + post.len()) {
                return None;
            }
            continue;
        }
        if t != s {
            return None;
        }
        literals += 1;
    }
}

/// The path part of the first server URL (3.x) or `basePath` (2.0), without a trailing slash.
fn base_path(doc: &Value) -> String {
    let raw = doc
        .pointer("/servers/0/url")
        .and_then(Value::as_str)
        .map(|u| match u.find("://") {
            Some(i) => u[i + 3..].find('/').map(|j| &u[i + 3 + j..]).unwrap_or(""),
            None => u,
        })
        .or_else(|| doc.get("basePath").and_then(Value::as_str))
        .unwrap_or("");
    // Server variables (`/{version}`) cannot be resolved to one path: ignore such a base.
    if raw.contains('{') {
        return String::new();
    }
    raw.trim_end_matches('/').to_string()
}

fn join_base(base: &str, template: &str) -> String {
    if base.is_empty() {
        template.to_string()
    } else {
        format!("{base}{template}")
    }
}

fn has_security(v: Option<&Value>) -> bool {
    match v.and_then(Value::as_array) {
        // `security: []` or `[{}]` explicitly allows anonymous access.
        Some(reqs) => reqs
            .iter()
            .any(|r| r.as_object().is_some_and(|o| !o.is_empty())),
        None => false,
    }
}

/// Follows local `$ref`s up to the depth cap.
fn resolve<'a>(doc: &'a Value, v: &'a Value, depth: usize) -> &'a Value {
    let mut cur = v;
    for _ in depth..MAX_SCHEMA_DEPTH {
        match cur.get("$ref").and_then(Value::as_str) {
            Some(r) if r.starts_with("#/") => match doc.pointer(&r[1..]) {
                Some(next) => cur = next,
                None => return cur,
            },
            _ => return cur,
        }
    }
    cur
}

fn collect_params(doc: &Value, list: Option<&Value>, out: &mut Vec<SpecParam>) {
    for p in list.and_then(Value::as_array).into_iter().flatten() {
        let p = resolve(doc, p, 0);
        let (Some(name), Some(loc)) = (
            p.get("name").and_then(Value::as_str),
            p.get("in").and_then(Value::as_str),
        ) else {
            continue;
        };
        let location = match loc {
            "path" => ParamIn::Path,
            "query" => ParamIn::Query,
            "header" => ParamIn::Header,
            "cookie" => ParamIn::Cookie,
            _ => continue, // `body` and `formData` (Swagger 2.0) are bodies, not parameters.
        };
        let schema_type = p
            .get("schema")
            .map(|s| resolve(doc, s, 0))
            .and_then(|s| s.get("type"))
            .or_else(|| p.get("type"))
            .and_then(type_name);
        let param = SpecParam {
            name: name.to_string(),
            location,
            required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
            schema_type,
        };
        // An operation-level parameter overrides a path-level one of the same name and place.
        match out
            .iter_mut()
            .find(|q| q.name == param.name && q.location == param.location)
        {
            Some(q) => *q = param,
            None => out.push(param),
        }
    }
}

/// `type: integer` or, in 3.1, `type: [integer, "null"]`.
fn type_name(t: &Value) -> Option<String> {
    match t {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|s| *s != "null")
            .map(String::from),
        _ => None,
    }
}

/// The schema of a JSON request body or response (`content` with a JSON media type).
fn json_body_schema<'a>(doc: &'a Value, body: Option<&'a Value>) -> Option<&'a Value> {
    let body = resolve(doc, body?, 0);
    let content = body.get("content")?.as_object()?;
    let media = content
        .iter()
        .find(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.starts_with("application/json") || k.ends_with("+json") || k == "*/*"
        })
        .map(|(_, v)| v)?;
    media.get("schema").map(|s| resolve(doc, s, 0))
}

fn swagger_body_param<'a>(
    doc: &'a Value,
    shared: Option<&'a Value>,
    own: Option<&'a Value>,
) -> Option<&'a Value> {
    [own, shared]
        .into_iter()
        .flatten()
        .filter_map(Value::as_array)
        .flatten()
        .map(|p| resolve(doc, p, 0))
        .find(|p| p.get("in").and_then(Value::as_str) == Some("body"))
        .and_then(|p| p.get("schema"))
        .map(|s| resolve(doc, s, 0))
}

/// Key paths of one schema, in order of first appearance, with their declared types.
#[derive(Default)]
struct Fields {
    paths: Vec<String>,
    types: BTreeMap<String, FieldType>,
}

/// The declared type of a (resolved) schema; `allOf` members lend theirs when it has none.
fn field_type(doc: &Value, schema: &Value, depth: usize) -> FieldType {
    let own = schema.get("type").and_then(type_name).or_else(|| {
        if schema.get("properties").is_some() {
            Some("object".to_string())
        } else if schema.get("items").is_some() {
            Some("array".to_string())
        } else {
            None
        }
    });
    let mut t = FieldType {
        type_name: own,
        format: schema
            .get("format")
            .and_then(Value::as_str)
            .map(String::from),
    };
    if t.type_name.is_none() && depth < MAX_SCHEMA_DEPTH {
        for sub in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let s = field_type(doc, resolve(doc, sub, depth + 1), depth + 1);
            if s.type_name.is_some() {
                t.type_name = s.type_name;
                t.format = t.format.or(s.format);
                break;
            }
        }
    }
    t
}

/// Key paths of a schema, in the same notation as the inventory (`$.a.b`, `$.items[].sku`).
fn field_paths(doc: &Value, schema: &Value, prefix: &str, depth: usize, out: &mut Fields) {
    if depth >= MAX_SCHEMA_DEPTH || out.paths.len() >= MAX_FIELDS {
        return;
    }
    let schema = resolve(doc, schema, depth);
    for combo in ["allOf", "oneOf", "anyOf"] {
        for sub in schema
            .get(combo)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            field_paths(doc, sub, prefix, depth + 1, out);
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            if out.paths.len() >= MAX_FIELDS {
                return;
            }
            let path = format!("{prefix}.{name}");
            if !out.paths.contains(&path) {
                out.paths.push(path.clone());
                // The first declaration wins, as for the path itself.
                let t = field_type(doc, resolve(doc, sub, depth + 1), depth + 1);
                out.types.insert(path.clone(), t);
            }
            field_paths(doc, sub, &path, depth + 1, out);
        }
    }
    if let Some(items) = schema.get("items") {
        field_paths(doc, items, &format!("{prefix}[]"), depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PETSTORE: &str = r##"
openapi: 3.1.0
info: { title: Pet shop, version: "1" }
servers:
  - url: https://api.example.com/v1
security:
  - bearer: []
paths:
  /pets:
    get:
      operationId: listPets
      security: []
      parameters:
        - { name: limit, in: query, schema: { type: [integer, "null"] } }
      responses:
        "200":
          description: ok
          content:
            application/json:
              schema: { type: array, items: { $ref: "#/components/schemas/Pet" } }
    post:
      requestBody:
        content:
          application/json:
            schema: { $ref: "#/components/schemas/NewPet" }
      responses: { "201": { description: created } }
  /pets/{petId}:
    parameters:
      - { $ref: "#/components/parameters/PetId" }
    get:
      responses:
        "200":
          description: ok
          content: { application/json: { schema: { $ref: "#/components/schemas/Pet" } } }
    delete:
      deprecated: true
      responses: { "204": { description: gone } }
  /pets/mine:
    get:
      responses: { "200": { description: ok } }
components:
  parameters:
    PetId: { name: petId, in: path, required: true, schema: { type: integer } }
  schemas:
    NewPet:
      type: object
      properties:
        name: { type: string }
        tags: { type: array, items: { type: object, properties: { label: { type: string } } } }
    Pet:
      allOf:
        - $ref: "#/components/schemas/NewPet"
        - { type: object, properties: { id: { type: integer }, owner: { $ref: "#/components/schemas/Pet" } } }
"##;

    #[test]
    fn operations_parameters_and_fields_are_indexed() {
        let spec = Spec::parse(PETSTORE, "pets.yaml").unwrap();
        assert_eq!(spec.title, "Pet shop");
        assert_eq!(spec.version, "3.1.0");
        assert_eq!(spec.operations.len(), 5);
        let list = spec.find("GET", "/v1/pets?limit=3").unwrap();
        assert_eq!(list.operation_id.as_deref(), Some("listPets"));
        assert!(!list.secured, "security: [] allows anonymous access");
        assert_eq!(list.params[0].schema_type.as_deref(), Some("integer"));
        assert!(list.response_fields["200"].contains(&"$[].tags[].label".to_string()));
        let create = spec.find("post", "/v1/pets").unwrap();
        assert!(create.secured, "the document's security applies");
        assert_eq!(
            create.request_fields,
            vec!["$.name", "$.tags", "$.tags[].label"]
        );
        let del = spec.find("DELETE", "/v1/pets/7").unwrap();
        assert!(del.deprecated);
        assert_eq!(del.params[0].name, "petId");
        assert_eq!(del.params[0].location, ParamIn::Path);
    }

    proptest::proptest! {
        /// The compiled routes find what matching each template against the path finds.
        #[test]
        fn compiled_routes_find_what_templates_find(
            method in proptest::sample::select(vec!["GET", "get", "POST", "DELETE", "PUT"]),
            segs in proptest::collection::vec(
                proptest::sample::select(vec!["v1", "pets", "7", "x.json", ".json", "", "users"]),
                0..40,
            ),
        ) {
            let mut templated = Spec::parse(PETSTORE, "pets.yaml").unwrap();
            for (m, t) in [("GET", "/v1/{doc}.json"), ("GET", "/v1/pets/{id}.json"), ("PUT", "/users/{id}")] {
                let mut op = templated.operations[0].clone();
                op.method = m.to_owned();
                op.path = t.to_owned();
                templated.routes.push(Route::compile(&op));
                templated.operations.push(op);
            }
            let path = format!("/{}", segs.join("/"));
            let a = templated.find(method, &path).map(|o| (&o.method, &o.path));
            let b = templated.find_uncompiled(method, &path).map(|o| (&o.method, &o.path));
            proptest::prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn field_types_follow_refs_and_all_of() {
        let spec = Spec::parse(PETSTORE, "pets.yaml").unwrap();
        let ty = |t: &str, f: Option<&str>| FieldType {
            type_name: Some(t.to_string()),
            format: f.map(String::from),
        };
        let create = spec.find("POST", "/v1/pets").unwrap();
        assert_eq!(
            create.request_field_types.len(),
            create.request_fields.len()
        );
        assert_eq!(create.request_field_types["$.name"], ty("string", None));
        assert_eq!(create.request_field_types["$.tags"], ty("array", None));
        assert_eq!(
            create.request_field_types["$.tags[].label"],
            ty("string", None)
        );
        let get = spec.find("GET", "/v1/pets/1").unwrap();
        let types = &get.response_field_types["200"];
        assert_eq!(types["$.id"], ty("integer", None));
        // `owner` is a bare `$ref` to an `allOf` without its own `type`: the members lend one.
        assert_eq!(types["$.owner"], ty("object", None));
        let text = "openapi: 3.1.0\npaths:\n  /u:\n    post:\n      requestBody: {content: {application/json: {schema: {properties: {at: {type: [string, 'null'], format: date-time}, any: {}}}}}}\n      responses: {}\n";
        let op = &Spec::parse(text, "u.yaml").unwrap().operations[0];
        assert_eq!(
            op.request_field_types["$.at"],
            ty("string", Some("date-time"))
        );
        assert_eq!(op.request_field_types["$.any"], FieldType::default());
    }

    #[test]
    fn literal_segments_beat_parameters() {
        let spec = Spec::parse(PETSTORE, "pets.yaml").unwrap();
        assert_eq!(
            spec.find("GET", "/v1/pets/mine").unwrap().path,
            "/v1/pets/mine"
        );
        assert_eq!(
            spec.find("GET", "/v1/pets/12").unwrap().path,
            "/v1/pets/{petId}"
        );
        assert!(spec.find("GET", "/v1/pets/12/toys").is_none());
        assert!(spec.find("PATCH", "/v1/pets/12").is_none());
        assert!(
            spec.find("GET", "/pets").is_none(),
            "the server base path is part of the path"
        );
    }

    #[test]
    fn cyclic_schemas_stop_at_the_depth_cap() {
        let spec = Spec::parse(PETSTORE, "pets.yaml").unwrap();
        let get = spec.find("GET", "/v1/pets/1").unwrap();
        let fields = &get.response_fields["200"];
        assert!(fields.contains(&"$.owner.owner.id".to_string()));
        assert!(fields.len() < MAX_FIELDS);
    }

    #[test]
    fn swagger_2_json_with_base_path_and_body_parameter() {
        let text = r##"{"swagger": "2.0", "basePath": "/api/", "paths": {
            "/users/{id}": {"put": {"parameters": [
                {"name": "id", "in": "path", "required": true, "type": "string"},
                {"name": "body", "in": "body", "schema": {"$ref": "#/definitions/User"}}],
              "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/User"}}}}}},
            "definitions": {"User": {"type": "object", "properties": {"email": {"type": "string"}}}}}"##;
        let spec = Spec::parse(text, "s.json").unwrap();
        let op = spec.find("PUT", "/api/users/ab12").unwrap();
        assert_eq!(op.path, "/api/users/{id}");
        assert_eq!(op.params.len(), 1);
        assert_eq!(op.params[0].schema_type.as_deref(), Some("string"));
        assert_eq!(op.request_fields, vec!["$.email"]);
        assert_eq!(op.response_fields["200"], vec!["$.email"]);
    }

    #[test]
    fn bad_documents_name_the_file_and_the_reason() {
        for (text, why) in [
            ("{ not json", "invalid JSON"),
            ("a: [unclosed", "invalid YAML"),
            ("title: hello", "not an OpenAPI document"),
            ("openapi: 3.0.0\ninfo: {}", "no `paths`"),
        ] {
            let e = Spec::parse(text, "x.yaml").unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("x.yaml: "), "{msg}");
            assert!(msg.contains(why), "{msg} lacks {why}");
        }
        let e = Spec::load(Path::new("/nonexistent/spec.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/spec.yaml: "));
    }

    #[test]
    fn mixed_segments_and_server_variables() {
        let text = "openapi: 3.0.3\nservers: [{url: 'https://{region}.example.com/{base}'}]\npaths:\n  /files/{name}.json:\n    get: {responses: {}}\n";
        let spec = Spec::parse(text, "m.yaml").unwrap();
        assert!(spec.find("GET", "/files/report.json").is_some());
        assert!(spec.find("GET", "/files/.json").is_none());
        assert!(spec.find("GET", "/files/report.xml").is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,400}") {
            let _ = Spec::parse(&text, "p.yaml");
        }
    }
}

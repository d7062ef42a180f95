//! Endpoint profiles: what normal traffic to one endpoint looks like, learned from its
//! transactions.
//!
//! An endpoint is `(host, method, route template)` plus, for GraphQL, the operation type and
//! name ([`EndpointKey`]). Its [`EndpointProfile`] holds call counts and times, an hour-of-week
//! rate series, query parameters and JSON request fields by key path (presence and value
//! shape), the JSON response schema per status class, size and latency quantiles, the status,
//! content-type, auth-scheme and role mix, distinct callers, the distinct object ids each
//! caller touched, sensitive-data kinds per field, and for GraphQL the query depth, alias and
//! field counts.
//!
//! Key paths are written as [`crate::inventory::sensitive::classify_json_fields`] writes them:
//! `$` for the body, `.name` for a member, `[]` for any array element (`$.items[].sku`), so the
//! sensitive kinds it reports land on the same fields.
//!
//! Invariants:
//! - Bounded: fields per map (`max_fields`), key-path bytes, JSON depth, tracked callers,
//!   object ids per call, label bytes and every sketch size are capped by [`ProfileConfig`];
//!   each cap has a counter in [`FieldMap`] or [`ProfileCounters`].
//! - Bodies are parsed as JSON only when their content type says JSON, only from the kept
//!   bytes, and not at all when the kept bytes are a truncated prefix; a body that does not
//!   parse is counted, never an error.
//! - `merge` of two profiles equals one profile fed both streams: exactly for counts, within
//!   the sketches' accuracy for quantiles and distinct counts.
//! - No raw credential or free-text value is kept: callers are pseudonyms, objects live only
//!   as HyperLogLog registers, shapes keep only short enum members.

use super::coverage::Coverage;
use super::shape::{ShapeConfig, ValueShape};
use super::sketch::{Hll, HourOfWeekRate, QuantileSketch, TopK};
use crate::common::Timestamp;
use crate::identity::Identity;
use crate::inventory::sensitive::{
    classify, classify_json_fields, FieldReport, JsonScanConfig, KindSet, SensitiveCounts,
    SensitiveKind,
};
use crate::transaction::{Headers, Request, Transaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Settings of endpoint profiles (`[baseline.profile]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Shape limits of every parameter and field.
    pub shape: ShapeConfig,
    /// Key paths kept per map (query parameters, request fields, response fields of one status
    /// class); further new paths are not profiled (`fields_dropped`). Default 256.
    pub max_fields: usize,
    /// Longest key path or parameter name kept; longer ones are not profiled
    /// (`paths_too_long`). Default 256.
    pub max_key_path_bytes: usize,
    /// JSON nesting levels walked; deeper subtrees are skipped (`json_depth_exceeded`).
    /// Default 32.
    pub max_json_depth: usize,
    /// Callers whose distinct object ids are tracked per endpoint; calls by further callers
    /// are not tracked (`callers_untracked`). Default 1000.
    pub max_callers_tracked: usize,
    /// Object ids taken from one call; the rest are ignored (`object_ids_dropped`). Default 64.
    pub max_object_ids_per_call: usize,
    /// Precision of the per-caller object-id counters: 2^p registers, dense at most 2^p
    /// bytes, sparse (4 bytes per register touched) while small. Default 10 (3 % error).
    pub caller_objects_hll_precision: u8,
    /// Precision of the distinct-callers counter. Default 12 (1.6 % error, 4 KiB when dense).
    pub distinct_callers_hll_precision: u8,
    /// Longest label (host, template, content type, role, GraphQL name) kept; longer ones are
    /// cut at a character boundary (`labels_truncated`). Default 128.
    pub max_label_bytes: usize,
    /// Status codes tracked in the status mix (space-saving). Default 16.
    pub max_status_codes: usize,
    /// Content types tracked per direction. Default 8.
    pub max_content_types: usize,
    /// Auth schemes tracked. Default 8 (there are 6).
    pub max_auth_schemes: usize,
    /// Roles tracked. Default 16.
    pub max_roles: usize,
    /// Relative accuracy of size, latency and GraphQL quantiles. Default 0.02.
    pub quantile_relative_accuracy: f64,
    /// Buckets per quantile sketch; 512 at 2 % span a factor of 10^8 (1 µs to 100 s).
    /// Default 512.
    pub max_quantile_buckets: usize,
    /// Bytes of a GraphQL query text scanned; the rest is not counted (`graphql_truncated`).
    /// Default 65536.
    pub max_graphql_query_bytes: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            shape: ShapeConfig::default(),
            max_fields: 256,
            max_key_path_bytes: 256,
            max_json_depth: 32,
            max_callers_tracked: 1000,
            max_object_ids_per_call: 64,
            caller_objects_hll_precision: 10,
            distinct_callers_hll_precision: 12,
            max_label_bytes: 128,
            max_status_codes: 16,
            max_content_types: 8,
            max_auth_schemes: 8,
            max_roles: 16,
            quantile_relative_accuracy: 0.02,
            max_quantile_buckets: 512,
            max_graphql_query_bytes: 65536,
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, in place.
fn truncate_owned(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `s` cut to at most `max` bytes at a character boundary; `true` when it was cut.
fn truncate_label(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    (s.get(..end).unwrap_or("").to_owned(), true)
}

// ---------------------------------------------------------------------------------------------
// GraphQL
// ---------------------------------------------------------------------------------------------

/// A GraphQL operation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphqlOpType {
    Query,
    Mutation,
    Subscription,
}

impl GraphqlOpType {
    pub fn name(self) -> &'static str {
        match self {
            GraphqlOpType::Query => "query",
            GraphqlOpType::Mutation => "mutation",
            GraphqlOpType::Subscription => "subscription",
        }
    }
}

/// What a scan of one GraphQL document found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphqlInfo {
    /// The operation executed: the one named by `operationName`, else the first.
    pub op: Option<(GraphqlOpType, String)>,
    /// Operation definitions in the document.
    pub operations: u32,
    /// Deepest selection-set nesting in the document (fragments are not expanded).
    pub depth: u32,
    /// Aliased fields (`a: user(id: 1)`), the tool of alias-based batching attacks.
    pub aliases: u32,
    /// Field selections, aliased or not, in the whole document.
    pub fields: u32,
    /// Documents in a batched request (a JSON array); 1 otherwise.
    pub batch_len: u32,
    /// The query text was longer than the scan limit.
    pub truncated: bool,
}

/// Whether a route template addresses a GraphQL endpoint: a path segment that is `graphql`
/// or ends with it (`/graphql`, `/api/graphql`, `/v1/graphql/`, `/admin-graphql`),
/// case-insensitively.
pub fn is_graphql_path(template: &str) -> bool {
    const NAME: &[u8] = b"graphql";
    let b = template.as_bytes();
    let path = b
        .get(..memchr::memchr2(b'?', b'#', b).unwrap_or(b.len()))
        .unwrap_or(b);
    // Called for every transaction: look only at the bytes before each segment's end instead
    // of splitting the path into strings.
    let ends_segment_with_name = |end: usize| {
        end.checked_sub(NAME.len())
            .and_then(|start| path.get(start..end))
            .is_some_and(|t| t.eq_ignore_ascii_case(NAME))
    };
    memchr::memchr_iter(b'/', path)
        .chain(std::iter::once(path.len()))
        .any(ends_segment_with_name)
}

/// GraphQL information from a JSON request body `{"query": ..., "operationName": ...}` or a
/// batch (array) of them; `None` when the body is not one.
pub fn graphql_from_json(
    body: &Value,
    max_query_bytes: usize,
    max_label_bytes: usize,
) -> Option<GraphqlInfo> {
    let (doc, batch_len) = match body {
        Value::Array(items) => (items.first()?, items.len()),
        v => (v, 1),
    };
    let query = doc.get("query")?.as_str()?;
    let wanted = doc.get("operationName").and_then(Value::as_str);
    let mut info = scan_graphql(query, wanted, max_query_bytes, max_label_bytes);
    info.batch_len = u32::try_from(batch_len).unwrap_or(u32::MAX);
    Some(info)
}

/// Lexical scan of a GraphQL document: enough of the grammar to find operation definitions,
/// selection-set depth, aliases and fields, without building a tree. Braces inside argument
/// lists are input objects, not selections; names after `...`, `... on` and `@` are
/// fragment spreads, type conditions and directives, not fields. Strings (including block
/// strings) and comments are skipped. Linear in the scanned bytes; allocates only the name
/// of the chosen operation.
pub fn scan_graphql(
    query: &str,
    wanted: Option<&str>,
    max_bytes: usize,
    max_label_bytes: usize,
) -> GraphqlInfo {
    let mut info = GraphqlInfo {
        batch_len: 1,
        ..GraphqlInfo::default()
    };
    let b = query.as_bytes();
    let limit = b.len().min(max_bytes);
    info.truncated = b.len() > max_bytes;
    let b = b.get(..limit).unwrap_or(&[]);

    let (mut brace, mut paren) = (0u32, 0u32);
    // 0: none; 1: after `...`; 2: after `... on`.
    let mut spread = 0u8;
    let mut after_at = false;
    // An operation or fragment keyword was read and its `{` not yet: the brace opens it.
    let mut pending_def = false;
    // The last operation keyword whose name may follow.
    let mut naming: Option<GraphqlOpType> = None;
    let mut chosen_found = false;
    let mut i = 0usize;

    let choose = |info: &mut GraphqlInfo, t: GraphqlOpType, name: &str, found: &mut bool| {
        info.operations = info.operations.saturating_add(1);
        if *found {
            return;
        }
        let first = info.op.is_none();
        let matches = wanted.is_some_and(|w| w == name);
        if first || matches {
            let (n, _) = truncate_label(name, max_label_bytes);
            info.op = Some((t, n));
            // Without a wanted name the first operation wins and stays.
            *found = matches || wanted.is_none();
        }
    };

    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while b.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
            }
            b'"' => {
                if b.get(i..i + 3) == Some(b"\"\"\"") {
                    i += 3;
                    loop {
                        match b.get(i..i + 3) {
                            None => return info,
                            Some(b"\"\"\"") => {
                                i += 3;
                                break;
                            }
                            Some([b'\\', ..]) => i += 2,
                            _ => i += 1,
                        }
                    }
                } else {
                    i += 1;
                    loop {
                        match b.get(i) {
                            None | Some(b'\n') => return info,
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b'\\') => i += 2,
                            _ => i += 1,
                        }
                    }
                }
            }
            b'.' => {
                if b.get(i..i + 3) == Some(b"...") {
                    spread = 1;
                    i += 3;
                } else {
                    i += 1;
                }
            }
            b'@' => {
                after_at = true;
                i += 1;
            }
            b'(' => {
                paren = paren.saturating_add(1);
                i += 1;
            }
            b')' => {
                paren = paren.saturating_sub(1);
                i += 1;
            }
            b'{' => {
                i += 1;
                if paren > 0 {
                    continue; // an input object value
                }
                if brace == 0 {
                    if let Some(t) = naming.take() {
                        choose(&mut info, t, "", &mut chosen_found);
                    } else if !pending_def {
                        // Shorthand: a bare selection set is an anonymous query.
                        choose(&mut info, GraphqlOpType::Query, "", &mut chosen_found);
                    }
                    pending_def = false;
                }
                spread = 0;
                brace = brace.saturating_add(1);
                info.depth = info.depth.max(brace);
            }
            b'}' => {
                if paren == 0 {
                    brace = brace.saturating_sub(1);
                }
                i += 1;
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
                {
                    i += 1;
                }
                let name = std::str::from_utf8(b.get(start..i).unwrap_or(&[])).unwrap_or("");
                if paren > 0 {
                    continue; // arguments, variables, types
                }
                if brace == 0 {
                    if let Some(t) = naming.take() {
                        // `query Name`: the name follows the keyword.
                        choose(&mut info, t, name, &mut chosen_found);
                        continue;
                    }
                    match name {
                        "query" if !pending_def => naming = Some(GraphqlOpType::Query),
                        "mutation" if !pending_def => naming = Some(GraphqlOpType::Mutation),
                        "subscription" if !pending_def => {
                            naming = Some(GraphqlOpType::Subscription)
                        }
                        "fragment" => {}
                        _ => {}
                    }
                    pending_def = true;
                    continue;
                }
                if after_at {
                    after_at = false;
                    continue;
                }
                match spread {
                    1 => {
                        spread = if name == "on" { 2 } else { 0 };
                        continue;
                    }
                    2 => {
                        spread = 0;
                        continue;
                    }
                    _ => {}
                }
                let mut j = i;
                while b
                    .get(j)
                    .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b','))
                {
                    j += 1;
                }
                if b.get(j) == Some(&b':') {
                    info.aliases = info.aliases.saturating_add(1);
                } else {
                    info.fields = info.fields.saturating_add(1);
                }
            }
            _ => i += 1,
        }
    }
    if let Some(t) = naming {
        // `query` keyword at the very end of a truncated document.
        choose(&mut info, t, "", &mut chosen_found);
    }
    info
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

/// What names an endpoint. For GraphQL the operation is part of the key, so every named query
/// behind one `POST /graphql` gets its own profile; an anonymous operation has name `""`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointKey {
    /// Lower-cased `Host` header without a trailing dot, or the server `address:port`.
    pub host: String,
    /// The method as sent.
    pub method: String,
    /// The route template (see [`crate::inventory::template`]).
    pub template: String,
    pub graphql: Option<(GraphqlOpType, String)>,
}

/// The host an endpoint is filed under: the `Host` header lower-cased without a trailing dot,
/// or the server `address:port` when there is none.
pub fn endpoint_host(tx: &Transaction) -> String {
    let mut host = String::new();
    endpoint_host_into(tx, &mut host);
    host
}

/// [`endpoint_host`] written over `out`, reusing its capacity.
pub fn endpoint_host_into(tx: &Transaction, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    match tx.request.as_ref().and_then(|r| r.headers.get("host")) {
        Some(h) if !h.is_empty() => {
            out.push_str(&String::from_utf8_lossy(h));
            out.make_ascii_lowercase();
            if out.ends_with('.') {
                out.pop();
            }
        }
        // Writing to a String cannot fail.
        _ => match tx.conn.server {
            std::net::IpAddr::V4(a) => {
                let _ = write!(out, "{a}:{}", tx.conn.server_port);
            }
            std::net::IpAddr::V6(a) => {
                let _ = write!(out, "[{a}]:{}", tx.conn.server_port);
            }
        },
    }
}

impl EndpointKey {
    /// The key of a transaction's request under a route `template`; `None` without a request.
    /// GraphQL operations are read from the request body when the template looks like a
    /// GraphQL endpoint ([`is_graphql_path`]).
    pub fn from_transaction(
        tx: &Transaction,
        template: &str,
        cfg: &ProfileConfig,
    ) -> Option<EndpointKey> {
        let req = tx.request.as_ref()?;
        Some(EndpointKey::of_request(
            req,
            endpoint_host(tx),
            template.to_owned(),
            cfg,
        ))
    }

    /// [`EndpointKey::from_transaction`] for a caller that already has the request's
    /// [`endpoint_host`] and its template, which become the key's strings without a copy.
    pub fn of_request(
        req: &Request,
        host: String,
        template: String,
        cfg: &ProfileConfig,
    ) -> EndpointKey {
        EndpointKey::of_request_reusing(req, host, template, String::new(), cfg)
    }

    /// [`EndpointKey::of_request`] that writes the method over `method`, reusing its
    /// capacity: with the host and template buffers of a spent key, a key made per request
    /// allocates nothing once the buffers are large enough.
    pub fn of_request_reusing(
        req: &Request,
        host: String,
        template: String,
        mut method: String,
        cfg: &ProfileConfig,
    ) -> EndpointKey {
        let graphql = if is_graphql_path(&template) {
            request_graphql(req, cfg).and_then(|g| g.op)
        } else {
            None
        };
        let max = cfg.max_label_bytes;
        method.clear();
        method.push_str(&req.method);
        EndpointKey {
            host: truncate_owned(host, max),
            method: truncate_owned(method, max),
            template: truncate_owned(template, max.max(cfg.max_key_path_bytes)),
            graphql,
        }
    }

    /// `GET api.example.com/users/{id}`, with ` query GetUser` appended for GraphQL.
    pub fn label(&self) -> String {
        let mut s = format!("{} {}{}", self.method, self.host, self.template);
        if let Some((t, n)) = &self.graphql {
            s.push(' ');
            s.push_str(t.name());
            if !n.is_empty() {
                s.push(' ');
                s.push_str(n);
            }
        }
        s
    }
}

/// How a body's content type says to read it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Graphql,
    Other,
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(headers: &Headers) -> Option<String> {
    let v = headers.get("content-type")?;
    let v = String::from_utf8_lossy(v);
    let mt = v
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (!mt.is_empty()).then_some(mt)
}

fn body_kind(media: Option<&str>) -> BodyKind {
    match media {
        Some("application/json" | "text/json") => BodyKind::Json,
        Some("application/graphql") => BodyKind::Graphql,
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => BodyKind::Json,
        _ => BodyKind::Other,
    }
}

/// How a JSON body read went.
enum JsonBody {
    Parsed(Value),
    NotJson,
    Truncated,
    Invalid,
}

fn read_json(body: &crate::transaction::Body, kind: BodyKind) -> JsonBody {
    if kind != BodyKind::Json || body.data.is_empty() {
        return JsonBody::NotJson;
    }
    if body.truncated {
        // A prefix of a document never parses; do not spend the effort.
        return JsonBody::Truncated;
    }
    match serde_json::from_slice(&body.data) {
        Ok(v) => JsonBody::Parsed(v),
        Err(_) => JsonBody::Invalid,
    }
}

/// [`graphql_from_json`] of `data` parsed as JSON, without building the document: this runs
/// for every request to a GraphQL endpoint, and only `query` and `operationName` of the first
/// operation are wanted. The whole document is still parsed and validated by `serde_json`
/// (same number, string, nesting and trailing-data rules), so every input gives exactly what
/// parsing into a `Value` first gives, including for duplicate keys (the last one counts).
fn graphql_from_json_bytes(
    data: &[u8],
    max_query_bytes: usize,
    max_label_bytes: usize,
) -> Option<GraphqlInfo> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(data);
    let top = graphql_json::Top.deserialize(&mut de).ok()?;
    de.end().ok()?;
    let (fields, batch_len) = top?;
    let query = fields.query?;
    let mut info = scan_graphql(
        &query,
        fields.operation_name.as_deref(),
        max_query_bytes,
        max_label_bytes,
    );
    info.batch_len = u32::try_from(batch_len).unwrap_or(u32::MAX);
    Some(info)
}

/// Visitors for [`graphql_from_json_bytes`]: they read `query` and `operationName` of the
/// first operation and walk everything else without keeping it.
mod graphql_json {
    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    /// The scalar `visit_*` methods of a visitor that gives `$v` for every scalar it does not
    /// read; with `; str`, for strings too.
    macro_rules! scalars_give {
        ($v:expr) => {
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok($v)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok($v)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok($v)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok($v)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok($v)
            }
        };
        ($v:expr; str) => {
            scalars_give!($v);
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok($v)
            }
        };
    }

    /// A document's fields as `Value::get(..).and_then(Value::as_str)` would give them.
    #[derive(Default)]
    pub(super) struct Fields {
        pub query: Option<String>,
        pub operation_name: Option<String>,
    }

    /// The top level: one operation (an object) or a batch (an array whose first element is
    /// the operation read). `None` when it holds no readable operation; otherwise the fields
    /// and the batch length.
    pub(super) struct Top;

    impl<'de> DeserializeSeed<'de> for Top {
        type Value = Option<(Fields, usize)>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Top {
        type Value = Option<(Fields, usize)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON document")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(Some((read_fields(map)?, 1)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let Some(first) = seq.next_element_seed(Operation)? else {
                return Ok(None);
            };
            let mut len: usize = 1;
            while seq.next_element::<Skip>()?.is_some() {
                len = len.saturating_add(1);
            }
            Ok(first.map(|fields| (fields, len)))
        }

        scalars_give!(None; str);
    }

    /// A batch's first element: its fields when it is an object.
    struct Operation;

    impl<'de> DeserializeSeed<'de> for Operation {
        type Value = Option<Fields>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Operation {
        type Value = Option<Fields>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            read_fields(map).map(Some)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Skip::drain_seq(seq).map(|_| None)
        }

        scalars_give!(None; str);
    }

    /// An object's `query` and `operationName`, each the last one given, kept only when it is
    /// a string (as `Value::as_str` would).
    fn read_fields<'de, A: MapAccess<'de>>(mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Query => fields.query = map.next_value::<MaybeStr>()?.0,
                Key::OperationName => fields.operation_name = map.next_value::<MaybeStr>()?.0,
                Key::Other => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(fields)
    }

    enum Key {
        Query,
        OperationName,
        Other,
    }

    struct KeySeed;

    impl<'de> DeserializeSeed<'de> for KeySeed {
        type Value = Key;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeySeed {
        type Value = Key;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object key")
        }

        fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
            Ok(match k {
                "query" => Key::Query,
                "operationName" => Key::OperationName,
                _ => Key::Other,
            })
        }
    }

    /// A value that is kept when it is a string and walked over otherwise.
    struct MaybeStr(Option<String>);

    impl<'de> de::Deserialize<'de> for MaybeStr {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(MaybeStrVisitor)
        }
    }

    struct MaybeStrVisitor;

    impl<'de> Visitor<'de> for MaybeStrVisitor {
        type Value = MaybeStr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<MaybeStr, E> {
            Ok(MaybeStr(Some(s.to_owned())))
        }
        fn visit_string<E: de::Error>(self, s: String) -> Result<MaybeStr, E> {
            Ok(MaybeStr(Some(s)))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MaybeStr, A::Error> {
            Skip::drain_map(map).map(|_| MaybeStr(None))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MaybeStr, A::Error> {
            Skip::drain_seq(seq).map(|_| MaybeStr(None))
        }
        scalars_give!(MaybeStr(None));
    }

    /// Any value, parsed as strictly as into a `Value` (through `deserialize_any`, unlike
    /// `IgnoredAny`, which lets serde_json skip numbers without checking their range) and
    /// dropped as it is read.
    struct Skip;

    impl Skip {
        fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
            while map.next_entry::<Skip, Skip>()?.is_some() {}
            Ok(())
        }

        fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
            while seq.next_element::<Skip>()?.is_some() {}
            Ok(())
        }
    }

    impl<'de> de::Deserialize<'de> for Skip {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(SkipVisitor)
        }
    }

    struct SkipVisitor;

    impl<'de> Visitor<'de> for SkipVisitor {
        type Value = Skip;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Skip, A::Error> {
            Skip::drain_map(map).map(|_| Skip)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Skip, A::Error> {
            Skip::drain_seq(seq).map(|_| Skip)
        }
        scalars_give!(Skip; str);
    }
}

fn request_graphql(req: &Request, cfg: &ProfileConfig) -> Option<GraphqlInfo> {
    let media = media_type(&req.headers);
    let kind = body_kind(media.as_deref());
    match kind {
        BodyKind::Graphql => {
            let text = String::from_utf8_lossy(&req.body.data);
            Some(scan_graphql(
                &text,
                None,
                cfg.max_graphql_query_bytes,
                cfg.max_label_bytes,
            ))
        }
        BodyKind::Json => {
            // `read_json`'s conditions, then the two fields straight from the bytes.
            let body = &req.body;
            if body.data.is_empty() || body.truncated {
                return None;
            }
            graphql_from_json_bytes(&body.data, cfg.max_graphql_query_bytes, cfg.max_label_bytes)
        }
        BodyKind::Other => graphql_from_query_string(&req.uri, cfg),
    }
}

/// GraphQL over GET: `?query=...&operationName=...`.
fn graphql_from_query_string(uri: &str, cfg: &ProfileConfig) -> Option<GraphqlInfo> {
    let (_, qs) = uri.split_once('?')?;
    let mut query = None;
    let mut name = None;
    for (k, v) in query_pairs(qs) {
        match k.as_str() {
            "query" => query = Some(v),
            "operationName" => name = Some(v),
            _ => {}
        }
    }
    let q = query?;
    Some(scan_graphql(
        &q,
        name.as_deref(),
        cfg.max_graphql_query_bytes,
        cfg.max_label_bytes,
    ))
}

// ---------------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------------

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Form-style percent-decoding (`+` is a space); a malformed escape is kept as sent.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).and_then(|&h| hex_val(h)),
                b.get(i + 2).and_then(|&l| hex_val(l)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decoded `(name, value)` pairs of a query string; a fragment is not part of it. A pair
/// without `=` has an empty value.
fn query_pairs(qs: &str) -> impl Iterator<Item = (String, String)> + '_ {
    let qs = qs.split('#').next().unwrap_or("");
    qs.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    })
}

// ---------------------------------------------------------------------------------------------
// Field maps
// ---------------------------------------------------------------------------------------------

/// Bits of a [`KindSet`], by position in [`SensitiveKind::ALL`], so they can be stored and
/// read back (the inventory type serializes names only).
fn kind_bits(set: KindSet) -> u32 {
    SensitiveKind::ALL
        .iter()
        .enumerate()
        .filter(|(_, &k)| set.contains(k))
        .fold(0, |acc, (i, _)| acc | 1 << i)
}

/// One parameter or field of an endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldStats {
    /// Documents (requests or JSON bodies) in which the field occurred at least once.
    pub present: u64,
    pub shape: ValueShape,
    /// Sensitive kinds seen in the field, as bits by position in [`SensitiveKind::ALL`].
    pub sensitive: u32,
    /// The document that last counted towards `present`, so an array of a thousand elements
    /// is one presence. Transient: after a merge or load, `FieldMap::docs` is at least every
    /// stored stamp, so the next document still counts.
    #[serde(skip)]
    last_doc: u64,
}

/// Equality of what was learned; the transient presence stamp is not part of it.
impl PartialEq for FieldStats {
    fn eq(&self, o: &Self) -> bool {
        self.present == o.present && self.shape == o.shape && self.sensitive == o.sensitive
    }
}

impl FieldStats {
    /// Sensitive kinds seen in the field.
    pub fn sensitive_kinds(&self) -> impl Iterator<Item = SensitiveKind> + '_ {
        SensitiveKind::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.sensitive & (1 << i) != 0)
            .map(|(_, k)| k)
    }
}

/// Fields by key path, with the number of documents they were learned from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    pub fields: BTreeMap<String, FieldStats>,
    /// Documents observed: the denominator of presence rates.
    pub docs: u64,
    /// Observations of new paths refused because `max_fields` were tracked.
    pub fields_dropped: u64,
    /// Observations of paths longer than `max_key_path_bytes`, not profiled.
    pub paths_too_long: u64,
}

impl FieldMap {
    /// Starts a new document.
    fn begin_doc(&mut self) {
        self.docs = self.docs.saturating_add(1);
    }

    fn entry(&mut self, path: &str, cfg: &ProfileConfig) -> Option<&mut FieldStats> {
        if path.len() > cfg.max_key_path_bytes {
            self.paths_too_long = self.paths_too_long.saturating_add(1);
            return None;
        }
        if !self.fields.contains_key(path) {
            if self.fields.len() >= cfg.max_fields {
                self.fields_dropped = self.fields_dropped.saturating_add(1);
                return None;
            }
            self.fields.insert(
                path.to_owned(),
                FieldStats {
                    present: 0,
                    shape: ValueShape::new(&cfg.shape),
                    sensitive: 0,
                    last_doc: 0,
                },
            );
        }
        let doc = self.docs;
        let f = self.fields.get_mut(path)?;
        if f.last_doc != doc {
            f.last_doc = doc;
            f.present = f.present.saturating_add(1);
        }
        Some(f)
    }

    /// Share of documents in which `path` occurred.
    pub fn presence_rate(&self, path: &str) -> Option<f64> {
        let f = self.fields.get(path)?;
        (self.docs > 0).then(|| f.present as f64 / self.docs as f64)
    }

    fn mark_sensitive(&mut self, report: &FieldReport) {
        for (path, set) in &report.fields {
            if let Some(f) = self.fields.get_mut(path) {
                f.sensitive |= kind_bits(*set);
            }
        }
    }

    /// Adds `other`'s fields; new paths beyond `max_fields` are dropped and counted.
    fn merge(&mut self, other: &FieldMap, cfg: &ProfileConfig) {
        self.docs = self.docs.saturating_add(other.docs);
        self.fields_dropped = self.fields_dropped.saturating_add(other.fields_dropped);
        self.paths_too_long = self.paths_too_long.saturating_add(other.paths_too_long);
        for (path, of) in &other.fields {
            let room = self.fields.len() < cfg.max_fields;
            match self.fields.get_mut(path) {
                Some(f) => {
                    f.present = f.present.saturating_add(of.present);
                    f.shape.merge(&of.shape);
                    f.sensitive |= of.sensitive;
                }
                None if room => {
                    let mut f = of.clone();
                    f.last_doc = 0;
                    self.fields.insert(path.clone(), f);
                }
                None => {
                    self.fields_dropped = self.fields_dropped.saturating_add(of.present);
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        // A B-tree entry costs roughly its key and value plus a share of node overhead.
        self.fields
            .iter()
            .map(|(k, f)| {
                k.capacity()
                    + std::mem::size_of::<(String, FieldStats)>()
                    + 16
                    + f.shape.heap_bytes()
            })
            .sum()
    }
}

/// Walks a JSON document, observing every node into `map` under its key path.
fn walk_json(
    v: &Value,
    path: &mut String,
    depth: usize,
    map: &mut FieldMap,
    counters: &mut ProfileCounters,
    cfg: &ProfileConfig,
) {
    if depth > cfg.max_json_depth {
        counters.json_depth_exceeded = counters.json_depth_exceeded.saturating_add(1);
        return;
    }
    if let Some(f) = map.entry(path, cfg) {
        f.shape.observe(v);
    }
    match v {
        Value::Object(members) => {
            let len = path.len();
            for (k, item) in members {
                path.push('.');
                path.push_str(k);
                walk_json(item, path, depth + 1, map, counters, cfg);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            let len = path.len();
            path.push_str("[]");
            for item in items {
                walk_json(item, path, depth + 1, map, counters, cfg);
            }
            path.truncate(len);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------------------------

/// Things a profile saw but did not (fully) learn from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileCounters {
    /// Transactions without a request (a response nobody asked for), not profiled.
    pub no_request: u64,
    /// Requests without a response: no status, size or latency.
    pub no_response: u64,
    /// JSON request bodies that did not parse.
    pub request_json_invalid: u64,
    /// JSON request bodies cut by the body limit, not parsed.
    pub request_json_truncated: u64,
    /// JSON response bodies that did not parse.
    pub response_json_invalid: u64,
    /// JSON response bodies cut by the body limit, not parsed.
    pub response_json_truncated: u64,
    /// JSON subtrees skipped because of `max_json_depth`.
    pub json_depth_exceeded: u64,
    /// Responses whose status is outside 2xx..5xx, kept out of the per-class schemas.
    pub status_unclassified: u64,
    /// Calls with object ids by callers beyond `max_callers_tracked`.
    pub callers_untracked: u64,
    /// Object ids beyond `max_object_ids_per_call`.
    pub object_ids_dropped: u64,
    /// Labels cut to `max_label_bytes`.
    pub labels_truncated: u64,
    /// GraphQL query texts longer than `max_graphql_query_bytes`.
    pub graphql_truncated: u64,
    /// Requests to a GraphQL path with no readable GraphQL document.
    pub graphql_unreadable: u64,
}

impl ProfileCounters {
    fn merge(&mut self, o: &ProfileCounters) {
        let pairs: [(&mut u64, u64); 13] = [
            (&mut self.no_request, o.no_request),
            (&mut self.no_response, o.no_response),
            (&mut self.request_json_invalid, o.request_json_invalid),
            (&mut self.request_json_truncated, o.request_json_truncated),
            (&mut self.response_json_invalid, o.response_json_invalid),
            (&mut self.response_json_truncated, o.response_json_truncated),
            (&mut self.json_depth_exceeded, o.json_depth_exceeded),
            (&mut self.status_unclassified, o.status_unclassified),
            (&mut self.callers_untracked, o.callers_untracked),
            (&mut self.object_ids_dropped, o.object_ids_dropped),
            (&mut self.labels_truncated, o.labels_truncated),
            (&mut self.graphql_truncated, o.graphql_truncated),
            (&mut self.graphql_unreadable, o.graphql_unreadable),
        ];
        for (a, b) in pairs {
            *a = a.saturating_add(b);
        }
    }
}

/// GraphQL document statistics of an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphqlStats {
    pub depth: QuantileSketch,
    pub aliases: QuantileSketch,
    pub fields: QuantileSketch,
    pub batch_len: QuantileSketch,
    pub operations: QuantileSketch,
}

impl GraphqlStats {
    fn new(cfg: &ProfileConfig) -> Self {
        let q = || QuantileSketch::new(cfg.quantile_relative_accuracy, cfg.max_quantile_buckets);
        GraphqlStats {
            depth: q(),
            aliases: q(),
            fields: q(),
            batch_len: q(),
            operations: q(),
        }
    }

    fn observe(&mut self, g: &GraphqlInfo) {
        self.depth.add(f64::from(g.depth));
        self.aliases.add(f64::from(g.aliases));
        self.fields.add(f64::from(g.fields));
        self.batch_len.add(f64::from(g.batch_len));
        self.operations.add(f64::from(g.operations));
    }

    fn merge(&mut self, o: &GraphqlStats) {
        self.depth.merge(&o.depth);
        self.aliases.merge(&o.aliases);
        self.fields.merge(&o.fields);
        self.batch_len.merge(&o.batch_len);
        self.operations.merge(&o.operations);
    }

    fn heap_bytes(&self) -> usize {
        [
            &self.depth,
            &self.aliases,
            &self.fields,
            &self.batch_len,
            &self.operations,
        ]
        .iter()
        .map(|s| s.heap_bytes())
        .sum()
    }
}

/// The objects one caller touched on an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerObjects {
    /// Calls by this caller that carried object ids.
    pub calls: u64,
    pub objects: Hll,
}

/// The objects each caller touched on an endpoint, by caller pseudonym, serialised as the
/// plain map.
///
/// Detection asks for one caller's estimate at the start of each of its runs of activity; a
/// search of the ordered map compares pseudonyms at every level, each a cache miss. So the
/// first [`CallerObjectsMap::distinct`] builds an index from a 128-bit hash of the pseudonym to
/// its estimate. Invariant: the index has an entry for every caller of the map; every change
/// goes through a method that marks the caller's entry stale (NaN), and a stale entry (or two
/// pseudonyms with one hash) is answered from the map. So an answer is the map's, except if a
/// pseudonym absent from the map shares its 128-bit hash with one present: pseudonyms are keyed
/// MACs, so nobody can aim at that.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallerObjectsMap {
    map: BTreeMap<String, CallerObjects>,
    #[serde(skip)]
    index: EstimateIndex,
}

/// Pseudonym hash -> the caller's distinct-objects estimate; NaN: ask the map. Never compared,
/// cloned or printed: it is derived from the map.
#[derive(Default)]
struct EstimateIndex(std::sync::OnceLock<std::collections::HashMap<u128, f64, ahash::RandomState>>);

impl Clone for EstimateIndex {
    fn clone(&self) -> Self {
        EstimateIndex::default()
    }
}

impl PartialEq for EstimateIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for EstimateIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EstimateIndex")
    }
}

/// The index key of a pseudonym: two 64-bit hashes with fixed, distinct seeds.
fn caller_hash(caller: &str) -> u128 {
    const A: ahash::RandomState = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );
    const B: ahash::RandomState = ahash::RandomState::with_seeds(
        0x4528_21e6_38d0_1377,
        0xbe54_66cf_34e9_0c6c,
        0xc0ac_29b7_c97c_50dd,
        0x3f84_d5b5_b547_0917,
    );
    (u128::from(A.hash_one(caller)) << 64) | u128::from(B.hash_one(caller))
}

impl CallerObjectsMap {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn get(&self, caller: &str) -> Option<&CallerObjects> {
        self.map.get(caller)
    }

    /// Callers in pseudonym order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &CallerObjects)> {
        self.map.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &CallerObjects> {
        self.map.values()
    }

    /// The caller's entry, to change: its index entry goes stale.
    pub fn get_mut(&mut self, caller: &str) -> Option<&mut CallerObjects> {
        let e = self.map.get_mut(caller)?;
        if let Some(ix) = self.index.0.get_mut() {
            ix.insert(caller_hash(caller), f64::NAN);
        }
        Some(e)
    }

    /// The caller's entry, made with `make` if absent; its index entry goes stale.
    pub fn get_or_insert_with(
        &mut self,
        caller: &str,
        make: impl FnOnce() -> CallerObjects,
    ) -> &mut CallerObjects {
        if let Some(ix) = self.index.0.get_mut() {
            ix.insert(caller_hash(caller), f64::NAN);
        }
        self.map.entry(caller.to_owned()).or_insert_with(make)
    }

    /// Estimated distinct objects `caller` touched, as `get(caller)` would give it.
    pub fn distinct(&self, caller: &str) -> Option<f64> {
        let ix = self.index.0.get_or_init(|| {
            let mut ix = std::collections::HashMap::with_capacity_and_hasher(
                self.map.len(),
                ahash::RandomState::new(),
            );
            for (k, c) in &self.map {
                match ix.entry(caller_hash(k)) {
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(c.objects.estimate());
                    }
                    // Two pseudonyms with one hash: both are answered from the map.
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        e.insert(f64::NAN);
                    }
                }
            }
            ix
        });
        match ix.get(&caller_hash(caller)) {
            None => None,
            Some(v) if !v.is_nan() => Some(*v),
            Some(_) => self.map.get(caller).map(|c| c.objects.estimate()),
        }
    }
}

/// Status classes with a response schema each: 2xx, 3xx, 4xx, 5xx.
pub const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Index into [`STATUS_CLASSES`].
pub fn status_class(status: u16) -> Option<usize> {
    match status {
        200..=299 => Some(0),
        300..=399 => Some(1),
        400..=499 => Some(2),
        500..=599 => Some(3),
        _ => None,
    }
}

/// Everything learned about one endpoint. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointProfile {
    pub calls: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub rate: HourOfWeekRate,
    /// Query parameters by decoded name.
    pub query_params: FieldMap,
    /// JSON request body fields by key path; `docs` counts parsed JSON bodies.
    pub request_fields: FieldMap,
    /// JSON response body fields per status class ([`STATUS_CLASSES`]).
    pub response_fields: [FieldMap; 4],
    /// Request body lengths (decoded, counted in full), bytes.
    pub request_bytes: QuantileSketch,
    /// Response body lengths (decoded, counted in full), bytes.
    pub response_bytes: QuantileSketch,
    /// Request start to response end, milliseconds.
    pub latency_ms: QuantileSketch,
    pub status: TopK,
    pub request_content_types: TopK,
    pub response_content_types: TopK,
    /// [`AuthScheme`](crate::identity::AuthScheme) names.
    pub auth_schemes: TopK,
    pub roles: TopK,
    /// Distinct callers: subject pseudonyms, or the client address for anonymous calls.
    pub callers: Hll,
    /// Distinct object ids per caller pseudonym, at most `max_callers_tracked` callers.
    pub caller_objects: CallerObjectsMap,
    /// Sensitive findings per kind name over query values and JSON bodies.
    pub sensitive: BTreeMap<String, u64>,
    pub graphql: Option<Box<GraphqlStats>>,
    pub counters: ProfileCounters,
}

impl EndpointProfile {
    pub fn new(cfg: &ProfileConfig) -> Self {
        let q = || QuantileSketch::new(cfg.quantile_relative_accuracy, cfg.max_quantile_buckets);
        EndpointProfile {
            calls: 0,
            first_seen: Timestamp::ZERO,
            last_seen: Timestamp::ZERO,
            rate: HourOfWeekRate::new(),
            query_params: FieldMap::default(),
            request_fields: FieldMap::default(),
            response_fields: Default::default(),
            request_bytes: q(),
            response_bytes: q(),
            latency_ms: q(),
            status: TopK::new(cfg.max_status_codes),
            request_content_types: TopK::new(cfg.max_content_types),
            response_content_types: TopK::new(cfg.max_content_types),
            auth_schemes: TopK::new(cfg.max_auth_schemes),
            roles: TopK::new(cfg.max_roles),
            callers: Hll::new(cfg.distinct_callers_hll_precision),
            caller_objects: CallerObjectsMap::default(),
            sensitive: BTreeMap::new(),
            graphql: None,
            counters: ProfileCounters::default(),
        }
    }

    fn label(&mut self, s: &str, cfg: &ProfileConfig) -> String {
        let (l, cut) = truncate_label(s, cfg.max_label_bytes);
        if cut {
            self.counters.labels_truncated = self.counters.labels_truncated.saturating_add(1);
        }
        l
    }

    fn count_sensitive(&mut self, counts: &SensitiveCounts) {
        for (k, n) in counts.iter() {
            let e = self.sensitive.entry(k.name().to_owned()).or_insert(0);
            *e = e.saturating_add(u64::from(n));
        }
    }

    /// Learns from one transaction of this endpoint. `identity` is the caller as
    /// [`IdentityExtractor`](crate::identity::IdentityExtractor) saw it; `object_ids` are the
    /// ids of the objects the request addressed (path parameters, id fields), as the caller
    /// of this function decides; `cov` the hours the sensor was listening in.
    pub fn observe(
        &mut self,
        tx: &Transaction,
        identity: &Identity,
        object_ids: &[&str],
        cfg: &ProfileConfig,
        cov: &Coverage,
    ) {
        let Some(req) = tx.request.as_ref() else {
            self.counters.no_request = self.counters.no_request.saturating_add(1);
            return;
        };
        let ts = tx.ts();
        super::count_call(
            &mut self.calls,
            &mut self.first_seen,
            &mut self.last_seen,
            &mut self.rate,
            ts,
            cov,
        );

        self.observe_query(&req.uri, cfg);
        self.observe_request_body(req, cfg);
        self.observe_response(tx, cfg);
        self.observe_caller(identity, object_ids, cfg);
    }

    /// Learns what is cheap and must be exact from one transaction: the call count and rate,
    /// the status, the auth scheme and roles, and the caller's objects; the bodies, parameters
    /// and sizes are left out. Adaptation during detection uses it for most calls of a
    /// well-learned endpoint (see `[detect] adapt_detail_every`): counts stay exact, shapes are
    /// learned from a sample.
    pub fn observe_counts(
        &mut self,
        tx: &Transaction,
        identity: &Identity,
        object_ids: &[&str],
        cfg: &ProfileConfig,
        cov: &Coverage,
    ) {
        if tx.request.is_none() {
            self.counters.no_request = self.counters.no_request.saturating_add(1);
            return;
        }
        super::count_call(
            &mut self.calls,
            &mut self.first_seen,
            &mut self.last_seen,
            &mut self.rate,
            tx.ts(),
            cov,
        );
        match tx.response.as_ref() {
            Some(resp) => self.status.add(&resp.status.to_string()),
            None => self.counters.no_response = self.counters.no_response.saturating_add(1),
        }
        self.observe_caller(identity, object_ids, cfg);
    }

    fn observe_query(&mut self, uri: &str, cfg: &ProfileConfig) {
        self.query_params.begin_doc();
        let Some((_, qs)) = uri.split_once('?') else {
            return;
        };
        for (name, value) in query_pairs(qs) {
            let mut found = SensitiveCounts::default();
            classify(value.as_bytes(), &mut found);
            self.count_sensitive(&found);
            if let Some(f) = self.query_params.entry(&name, cfg) {
                f.shape.observe_str(&value);
                f.sensitive |= kind_bits(found.kinds());
            }
        }
    }

    fn observe_request_body(&mut self, req: &Request, cfg: &ProfileConfig) {
        self.request_bytes.add(req.body.len as f64);
        let media = media_type(&req.headers);
        if let Some(m) = &media {
            let l = self.label(m, cfg);
            self.request_content_types.add(&l);
        }
        let kind = body_kind(media.as_deref());
        let graphql_path = is_graphql_path(&req.uri);
        let mut graphql = None;
        match read_json(&req.body, kind) {
            JsonBody::Parsed(v) => {
                self.request_fields.begin_doc();
                let mut path = String::from("$");
                walk_json(
                    &v,
                    &mut path,
                    0,
                    &mut self.request_fields,
                    &mut self.counters,
                    cfg,
                );
                self.observe_sensitive_json(&v, None, cfg);
                if graphql_path {
                    graphql =
                        graphql_from_json(&v, cfg.max_graphql_query_bytes, cfg.max_label_bytes);
                }
            }
            JsonBody::Truncated => {
                self.counters.request_json_truncated =
                    self.counters.request_json_truncated.saturating_add(1)
            }
            JsonBody::Invalid => {
                self.counters.request_json_invalid =
                    self.counters.request_json_invalid.saturating_add(1)
            }
            JsonBody::NotJson => {
                if graphql_path {
                    graphql = request_graphql(req, cfg);
                }
            }
        }
        if !graphql_path {
            return;
        }
        match graphql {
            Some(g) => {
                if g.truncated {
                    self.counters.graphql_truncated =
                        self.counters.graphql_truncated.saturating_add(1);
                }
                self.graphql
                    .get_or_insert_with(|| Box::new(GraphqlStats::new(cfg)))
                    .observe(&g);
            }
            None => {
                self.counters.graphql_unreadable =
                    self.counters.graphql_unreadable.saturating_add(1)
            }
        }
    }

    /// Classifies a parsed body's fields and marks them on the request map (`class` `None`)
    /// or a response class map.
    fn observe_sensitive_json(&mut self, v: &Value, class: Option<usize>, cfg: &ProfileConfig) {
        let scan = JsonScanConfig {
            max_depth: cfg.max_json_depth,
            max_fields: cfg.max_fields,
            max_key_path_bytes: cfg.max_key_path_bytes,
        };
        let mut report = FieldReport::default();
        classify_json_fields(v, &scan, &mut report);
        self.count_sensitive(&report.totals);
        let map = match class {
            None => &mut self.request_fields,
            Some(c) => match self.response_fields.get_mut(c) {
                Some(m) => m,
                None => return,
            },
        };
        map.mark_sensitive(&report);
    }

    fn observe_response(&mut self, tx: &Transaction, cfg: &ProfileConfig) {
        let Some(resp) = tx.response.as_ref() else {
            self.counters.no_response = self.counters.no_response.saturating_add(1);
            return;
        };
        self.status.add(&resp.status.to_string());
        self.response_bytes.add(resp.body.len as f64);
        self.latency_ms.add(tx.duration().as_nanos() as f64 / 1e6);
        let media = media_type(&resp.headers);
        if let Some(m) = &media {
            let l = self.label(m, cfg);
            self.response_content_types.add(&l);
        }
        let Some(class) = status_class(resp.status) else {
            self.counters.status_unclassified = self.counters.status_unclassified.saturating_add(1);
            return;
        };
        match read_json(&resp.body, body_kind(media.as_deref())) {
            JsonBody::Parsed(v) => {
                if let Some(map) = self.response_fields.get_mut(class) {
                    map.begin_doc();
                    let mut path = String::from("$");
                    walk_json(&v, &mut path, 0, map, &mut self.counters, cfg);
                }
                self.observe_sensitive_json(&v, Some(class), cfg);
            }
            JsonBody::Truncated => {
                self.counters.response_json_truncated =
                    self.counters.response_json_truncated.saturating_add(1)
            }
            JsonBody::Invalid => {
                self.counters.response_json_invalid =
                    self.counters.response_json_invalid.saturating_add(1)
            }
            JsonBody::NotJson => {}
        }
    }

    fn observe_caller(&mut self, identity: &Identity, object_ids: &[&str], cfg: &ProfileConfig) {
        self.auth_schemes.add(identity.scheme.name());
        for role in &identity.roles {
            let l = self.label(role, cfg);
            self.roles.add(&l);
        }
        let Some(subject) = identity.subject.as_ref() else {
            // Anonymous: the address is the best notion of a caller for counting; it is
            // hashed into the counter and never stored.
            let ip = format!("ip:{}", identity.client_ip);
            self.callers.insert(ip.as_bytes());
            return;
        };
        self.callers.insert(subject.as_str().as_bytes());
        if object_ids.is_empty() {
            return;
        }
        let take = object_ids.len().min(cfg.max_object_ids_per_call);
        let dropped = (object_ids.len() - take) as u64;
        self.counters.object_ids_dropped = self.counters.object_ids_dropped.saturating_add(dropped);
        let room = self.caller_objects.len() < cfg.max_callers_tracked;
        let entry = match self.caller_objects.get_mut(subject.as_str()) {
            Some(e) => e,
            None if room => self
                .caller_objects
                .get_or_insert_with(subject.as_str(), || CallerObjects {
                    calls: 0,
                    objects: Hll::new(cfg.caller_objects_hll_precision),
                }),
            None => {
                self.counters.callers_untracked = self.counters.callers_untracked.saturating_add(1);
                return;
            }
        };
        entry.calls = entry.calls.saturating_add(1);
        for id in object_ids.iter().take(take) {
            entry.objects.insert(id.as_bytes());
        }
    }

    /// Estimated distinct objects `caller` (a pseudonym) touched here.
    pub fn distinct_objects(&self, caller: &str) -> Option<f64> {
        self.caller_objects.distinct(caller)
    }

    /// Adds `other`, learned from other transactions of the same endpoint. Caps apply as in
    /// `observe`: fields and callers beyond them are counted, not kept.
    pub fn merge(&mut self, other: &EndpointProfile, cfg: &ProfileConfig, cov: &Coverage) {
        if other.calls > 0 && (self.calls == 0 || other.first_seen < self.first_seen) {
            self.first_seen = other.first_seen;
        }
        self.last_seen = self.last_seen.max(other.last_seen);
        self.calls = self.calls.saturating_add(other.calls);
        self.rate.merge(&other.rate, cov);
        self.query_params.merge(&other.query_params, cfg);
        self.request_fields.merge(&other.request_fields, cfg);
        for (a, b) in self.response_fields.iter_mut().zip(&other.response_fields) {
            a.merge(b, cfg);
        }
        self.request_bytes.merge(&other.request_bytes);
        self.response_bytes.merge(&other.response_bytes);
        self.latency_ms.merge(&other.latency_ms);
        self.status.merge(&other.status);
        self.request_content_types
            .merge(&other.request_content_types);
        self.response_content_types
            .merge(&other.response_content_types);
        self.auth_schemes.merge(&other.auth_schemes);
        self.roles.merge(&other.roles);
        self.callers.merge(&other.callers);
        for (caller, oc) in other.caller_objects.iter() {
            let room = self.caller_objects.len() < cfg.max_callers_tracked;
            match self.caller_objects.get_mut(caller) {
                Some(c) => {
                    c.calls = c.calls.saturating_add(oc.calls);
                    c.objects.merge(&oc.objects);
                }
                None if room => {
                    self.caller_objects
                        .get_or_insert_with(caller, || oc.clone());
                }
                None => {
                    self.counters.callers_untracked =
                        self.counters.callers_untracked.saturating_add(oc.calls)
                }
            }
        }
        for (k, &n) in &other.sensitive {
            let e = self.sensitive.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(n);
        }
        match (&mut self.graphql, &other.graphql) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.graphql = Some(b.clone()),
            _ => {}
        }
        self.counters.merge(&other.counters);
    }

    /// Estimated heap bytes held, for the model's memory budget. Add
    /// `size_of::<EndpointProfile>()` for the whole profile.
    pub fn heap_bytes(&self) -> usize {
        let maps: usize = self.query_params.heap_bytes()
            + self.request_fields.heap_bytes()
            + self
                .response_fields
                .iter()
                .map(FieldMap::heap_bytes)
                .sum::<usize>();
        let sketches = self.request_bytes.heap_bytes()
            + self.response_bytes.heap_bytes()
            + self.latency_ms.heap_bytes();
        let topks = [
            &self.status,
            &self.request_content_types,
            &self.response_content_types,
            &self.auth_schemes,
            &self.roles,
        ]
        .iter()
        .map(|t| t.heap_bytes())
        .sum::<usize>();
        let callers = self.callers.heap_bytes()
            + self
                .caller_objects
                .iter()
                .map(|(k, c)| {
                    k.capacity()
                        + std::mem::size_of::<(String, CallerObjects)>()
                        + 16
                        + c.objects.heap_bytes()
                })
                .sum::<usize>();
        let sensitive = self
            .sensitive
            .keys()
            .map(|k| k.capacity() + 40)
            .sum::<usize>();
        let graphql = self
            .graphql
            .as_ref()
            .map_or(0, |g| std::mem::size_of::<GraphqlStats>() + g.heap_bytes());
        maps + sketches + topks + callers + sensitive + graphql + self.rate.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::Timestamp;
    use crate::identity::{AuthScheme, Pseudonymizer};
    use crate::transaction::{Body, ConnInfo, HttpVersion, Response};

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n.as_bytes(), v.as_bytes());
        }
        h
    }

    fn body(data: &str) -> Body {
        Body {
            data: data.as_bytes().to_vec(),
            len: data.len() as u64,
            wire_len: data.len() as u64,
            truncated: false,
        }
    }

    /// A transaction at `secs`, the response `ms` milliseconds later; JSON bodies get a JSON
    /// content type, empty ones none.
    fn tx(
        method: &str,
        uri: &str,
        req_body: &str,
        status: u16,
        resp_body: &str,
        secs: i64,
        ms: u64,
    ) -> Transaction {
        let json = |b: &str| {
            if b.is_empty() {
                vec![("Host", "API.Example.com.")]
            } else {
                vec![
                    ("Host", "API.Example.com."),
                    ("Content-Type", "application/json; charset=utf-8"),
                ]
            }
        };
        let start = Timestamp::from_secs_nanos(secs, 0);
        let end = start.add(crate::common::Duration::from_nanos(ms * 1_000_000));
        Transaction {
            conn: ConnInfo::default(),
            depth: 1,
            request: Some(Request {
                method: method.into(),
                uri: uri.into(),
                version: HttpVersion::Http11,
                headers: headers(&json(req_body)),
                body: body(req_body),
                start,
                end: start,
            }),
            response: Some(Response {
                status,
                reason: String::new(),
                version: HttpVersion::Http11,
                headers: headers(&json(resp_body)[1..]),
                body: body(resp_body),
                interim: vec![],
                start: end,
                end,
            }),
            flags: vec![],
        }
    }

    fn identity(user: Option<&str>, roles: &[&str]) -> Identity {
        let p = Pseudonymizer::new(b"test secret for profiles");
        Identity {
            scheme: if user.is_some() {
                AuthScheme::BearerJwt
            } else {
                AuthScheme::None
            },
            subject: user.map(|u| p.pseudonym("u", u.as_bytes())),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            tenant: None,
            client_ip: "192.0.2.7".parse().unwrap(),
            jwt: None,
            basic_user: None,
            flags: vec![],
        }
    }

    fn profile_of(
        txs: &[(Transaction, Identity, Vec<&str>)],
        cfg: &ProfileConfig,
    ) -> EndpointProfile {
        let mut p = EndpointProfile::new(cfg);
        for (t, id, objs) in txs {
            p.observe(t, id, objs, cfg, &Coverage::always());
        }
        p
    }

    fn describe(map: &FieldMap, path: &str) -> String {
        map.fields
            .get(path)
            .map(|f| f.shape.describe())
            .unwrap_or_else(|| "absent".into())
    }

    #[test]
    fn json_request_fields_get_paths_presence_shapes_and_sensitive_kinds() {
        let cfg = ProfileConfig::default();
        let alice = identity(Some("alice"), &["admin"]);
        let txs = vec![
            (
                tx(
                    "POST",
                    "/orders",
                    r#"{"qty":1,"items":[{"sku":"A1"},{"sku":"B2"}],"card":{"number":"4111111111111111"}}"#,
                    201,
                    r#"{"id":10}"#,
                    100,
                    5,
                ),
                alice.clone(),
                vec![],
            ),
            (
                tx(
                    "POST",
                    "/orders",
                    r#"{"qty":7,"items":[]}"#,
                    201,
                    r#"{"id":11}"#,
                    200,
                    7,
                ),
                alice.clone(),
                vec![],
            ),
            (
                tx(
                    "POST",
                    "/orders",
                    r#"{"qty":"#,
                    400,
                    r#"{"error":"bad json"}"#,
                    300,
                    1,
                ),
                alice,
                vec![],
            ),
        ];
        let p = profile_of(&txs, &cfg);
        let rf = &p.request_fields;
        assert_eq!(p.calls, 3);
        assert_eq!(rf.docs, 2, "the unparsable body is not a document");
        assert_eq!(p.counters.request_json_invalid, 1);
        assert_eq!(describe(rf, "$"), "object");
        assert_eq!(describe(rf, "$.qty"), "integer 1..7");
        assert_eq!(describe(rf, "$.items"), "array len 0..2");
        assert_eq!(describe(rf, "$.items[]"), "object");
        assert_eq!(describe(rf, "$.items[].sku"), "string len 2 [A-Z0-9]");
        // Two elements in one body are one presence.
        assert_eq!(rf.fields["$.items[].sku"].present, 1);
        assert_eq!(rf.presence_rate("$.qty"), Some(1.0));
        assert_eq!(rf.presence_rate("$.card.number"), Some(0.5));
        let kinds: Vec<_> = rf.fields["$.card.number"].sensitive_kinds().collect();
        assert_eq!(kinds, vec![SensitiveKind::CardNumber]);
        assert_eq!(p.sensitive.get("card_number"), Some(&1));
        // Response schema per status class.
        assert_eq!(describe(&p.response_fields[0], "$.id"), "integer 10..11");
        assert_eq!(
            describe(&p.response_fields[2], "$.error"),
            "string len 8 [a-z space]"
        );
        assert_eq!(p.response_fields[1].docs, 0);
        let statuses: Vec<_> = p
            .status
            .entries()
            .iter()
            .map(|e| (e.item.clone(), e.count))
            .collect();
        assert_eq!(
            statuses,
            vec![("201".to_string(), 2), ("400".to_string(), 1)]
        );
        assert_eq!(p.request_content_types.get("application/json"), Some(3));
        assert_eq!(p.roles.get("admin"), Some(3));
        assert_eq!(p.auth_schemes.get("bearer_jwt"), Some(3));
        let lat = p.latency_ms.quantile(1.0).unwrap();
        assert!((lat - 7.0).abs() / 7.0 <= 0.02, "{lat}");
        assert_eq!(p.first_seen, Timestamp::from_secs_nanos(100, 0));
        assert_eq!(p.last_seen, Timestamp::from_secs_nanos(300, 0));
    }

    #[test]
    fn query_params_are_decoded_typed_and_counted_per_request() {
        let cfg = ProfileConfig::default();
        let anon = identity(None, &[]);
        let mut txs = vec![];
        for (i, q) in [
            "?page=1&sort=asc",
            "?page=20&sort=desc&q=red%20shoes",
            "?page=3&sort=asc",
            "",
            "?page=2&sort=desc&tag=a&tag=b",
        ]
        .iter()
        .enumerate()
        {
            txs.push((
                tx("GET", &format!("/items{q}"), "", 200, "", i as i64, 1),
                anon.clone(),
                vec![],
            ));
        }
        let p = profile_of(&txs, &cfg);
        let qp = &p.query_params;
        assert_eq!(qp.docs, 5);
        assert_eq!(describe(qp, "page"), "integer 1..20");
        assert_eq!(qp.presence_rate("page"), Some(0.8));
        assert_eq!(describe(qp, "q"), "string len 9 [a-z space]");
        // Repeated parameter: two values, one presence.
        assert_eq!(qp.fields["tag"].present, 1);
        assert_eq!(qp.fields["tag"].shape.count, 2);
        assert!(p.caller_objects.is_empty());
        // Anonymous callers are counted by address: one here.
        assert!((p.callers.estimate() - 1.0).abs() < 0.01);
    }

    #[test]
    fn truncated_and_non_json_bodies_are_not_parsed() {
        let cfg = ProfileConfig::default();
        let mut t = tx("POST", "/up", r#"{"a":1}"#, 200, r#"{"b":2}"#, 0, 1);
        if let Some(r) = t.response.as_mut() {
            r.body.truncated = true;
            r.body.len = 1 << 20;
        }
        let mut plain = tx("POST", "/up", "a=1", 200, "", 1, 1);
        if let Some(r) = plain.request.as_mut() {
            r.headers = headers(&[("Content-Type", "application/x-www-form-urlencoded")]);
        }
        let mut vendor = tx("POST", "/up", r#"{"v":true}"#, 200, "", 2, 1);
        if let Some(r) = vendor.request.as_mut() {
            r.headers = headers(&[("Content-Type", "application/vnd.api+json")]);
        }
        let id = identity(None, &[]);
        let p = profile_of(
            &[
                (t, id.clone(), vec![]),
                (plain, id.clone(), vec![]),
                (vendor, id, vec![]),
            ],
            &cfg,
        );
        assert_eq!(p.counters.response_json_truncated, 1);
        assert_eq!(p.response_fields[0].docs, 0);
        assert_eq!(p.request_fields.docs, 2);
        assert_eq!(describe(&p.request_fields, "$.v"), "bool");
        assert_eq!(p.response_bytes.max(), Some((1u64 << 20) as f64));
    }

    #[test]
    fn caps_hold_and_count() {
        let cfg = ProfileConfig {
            max_fields: 3,
            max_json_depth: 2,
            max_callers_tracked: 2,
            max_object_ids_per_call: 2,
            max_label_bytes: 5,
            ..ProfileConfig::default()
        };
        let mut txs = vec![];
        for (i, user) in ["u1", "u2", "u3", "u1"].iter().enumerate() {
            let b = r#"{"a":1,"b":2,"c":3,"d":{"e":{"f":{"g":1}}}}"#;
            txs.push((
                tx("PUT", "/x", b, 200, "", i as i64, 1),
                identity(Some(user), &["superlongrole"]),
                vec!["1", "2", "3"],
            ));
        }
        let p = profile_of(&txs, &cfg);
        assert_eq!(p.request_fields.fields.len(), 3);
        assert!(p.request_fields.fields_dropped > 0);
        assert_eq!(p.counters.json_depth_exceeded, 4);
        assert_eq!(p.caller_objects.len(), 2);
        assert_eq!(p.counters.callers_untracked, 1);
        assert_eq!(p.counters.object_ids_dropped, 4);
        assert_eq!(p.roles.get("super"), Some(4));
        // Four roles and four `application/json` content types cut to five bytes.
        assert_eq!(p.counters.labels_truncated, 8);
        let u1 = identity(Some("u1"), &[]).subject.unwrap();
        assert_eq!(p.caller_objects.get(u1.as_str()).map(|c| c.calls), Some(2));
        assert!((p.distinct_objects(u1.as_str()).unwrap() - 2.0).abs() < 0.01);
        // Long key paths.
        let cfg = ProfileConfig {
            max_key_path_bytes: 4,
            ..ProfileConfig::default()
        };
        let p = profile_of(
            &[(
                tx("PUT", "/x", r#"{"ab":1,"long":2}"#, 200, "", 0, 1),
                identity(None, &[]),
                vec![],
            )],
            &cfg,
        );
        assert_eq!(
            p.request_fields.fields.keys().collect::<Vec<_>>(),
            vec!["$", "$.ab"]
        );
        assert_eq!(p.request_fields.paths_too_long, 1);
    }

    #[test]
    fn per_caller_objects_count_distinct_ids() {
        let cfg = ProfileConfig::default();
        let mut p = EndpointProfile::new(&cfg);
        let (alice, bob) = (identity(Some("alice"), &[]), identity(Some("bob"), &[]));
        for i in 0..500 {
            let id = i.to_string();
            p.observe(
                &tx("GET", &format!("/users/{i}"), "", 200, "", i, 1),
                &alice,
                &[&id],
                &cfg,
                &Coverage::always(),
            );
            p.observe(
                &tx("GET", "/users/1", "", 200, "", i, 1),
                &bob,
                &["1"],
                &cfg,
                &Coverage::always(),
            );
        }
        let a = p
            .distinct_objects(alice.subject.as_ref().unwrap().as_str())
            .unwrap();
        let b = p
            .distinct_objects(bob.subject.as_ref().unwrap().as_str())
            .unwrap();
        assert!((a - 500.0).abs() / 500.0 < 0.05, "{a}");
        assert!((b - 1.0).abs() < 0.01, "{b}");
        assert!((p.callers.estimate() - 2.0).abs() < 0.01);
    }

    /// (query, operationName, expected operation, depth, aliases, fields, operations).
    type GqlCase = (
        &'static str,
        Option<&'static str>,
        Option<(GraphqlOpType, &'static str)>,
        u32,
        u32,
        u32,
        u32,
    );

    fn gql(q: &str, name: Option<&str>) -> GraphqlInfo {
        scan_graphql(q, name, 65536, 128)
    }

    #[test]
    fn graphql_scan_finds_operation_depth_aliases_and_fields() {
        use GraphqlOpType::*;
        let cases: Vec<GqlCase> = vec![
            ("{ me { id name } }", None, Some((Query, "")), 2, 0, 3, 1),
            ("query GetUser($id: ID!) { user(id: $id) { id email } }", None, Some((Query, "GetUser")), 2, 0, 3, 1),
            ("mutation { login(input: {user: \"a\", pass: \"b\"}) { token } }", None, Some((Mutation, "")), 2, 0, 2, 1),
            ("subscription OnMsg { messages { body } }", None, Some((Subscription, "OnMsg")), 2, 0, 2, 1),
            (
                "query A { a1: user(id: 1) { id } a2: user(id: 2) { id } a3: user(id: 3) { id } }",
                None,
                Some((Query, "A")),
                2,
                3,
                6,
                1,
            ),
            ("query A { x } mutation B { y }", Some("B"), Some((Mutation, "B")), 1, 0, 2, 2),
            ("query A { x } mutation B { y }", None, Some((Query, "A")), 1, 0, 2, 2),
            ("query A { x } mutation B { y }", Some("Missing"), Some((Query, "A")), 1, 0, 2, 2),
            // Spreads, type conditions, directives, strings and comments are not fields.
            (
                "query Q { node(id: \"{ not: a field }\") { ...F ... on User @include(if: true) { name } } } # { x y z }\nfragment F on Node { id }",
                None,
                Some((Query, "Q")),
                3,
                0,
                3,
                1,
            ),
            ("query Deep { a { b { c { d { e { f } } } } } }", None, Some((Query, "Deep")), 6, 0, 6, 1),
            ("\"\"\"doc { with } braces\"\"\" query Z { q }", None, Some((Query, "Z")), 1, 0, 1, 1),
            ("fragment F on T { a }", None, None, 1, 0, 1, 0),
            ("", None, None, 0, 0, 0, 0),
            ("query Broken { a(arg: \"unterminated", None, Some((Query, "Broken")), 1, 0, 1, 1),
        ];
        for (q, name, op, depth, aliases, fields, operations) in cases {
            let got = gql(q, name);
            let want_op = op.map(|(t, n)| (t, n.to_string()));
            assert_eq!(
                (
                    got.op.clone(),
                    got.depth,
                    got.aliases,
                    got.fields,
                    got.operations
                ),
                (want_op, depth, aliases, fields, operations),
                "{q}"
            );
        }
    }

    /// Reading `query` and `operationName` straight from the bytes gives what parsing the
    /// body into a `Value` and calling [`graphql_from_json`] gives: for duplicate keys,
    /// escaped keys, batches, non-object operations, non-string fields, numbers out of range,
    /// trailing data, bad UTF-8 and every prefix of a document.
    #[test]
    fn graphql_fields_from_bytes_equal_those_of_a_parsed_value() {
        use proptest::prelude::*;
        fn both(data: &[u8]) -> (Option<GraphqlInfo>, Option<GraphqlInfo>) {
            let via_value = serde_json::from_slice::<Value>(data)
                .ok()
                .and_then(|v| graphql_from_json(&v, 256, 16));
            (graphql_from_json_bytes(data, 256, 16), via_value)
        }
        let cases: &[&[u8]] = &[
            br#"{"query":"query Q { a }"}"#,
            br#"{"query":"query A { a } query B { b { c } }","operationName":"B"}"#,
            br#"{"operationName":"B","query":"query A { a } query B { b }"}"#,
            br#"{"query":"query A { a }","query":"mutation M { m }"}"#,
            br#"{"query":"query A { a }","query":7}"#,
            br#"{"query":7,"query":"query A { a }"}"#,
            br#"{"query":"{ a }","operationName":"X","operationName":["X"]}"#,
            br#"{"qu\u0065ry":"query E { e }","operationName":null}"#,
            br#"{"query":"query \"q\" { a(s: \"\\n\") }"}"#,
            br#"[{"query":"{ a }"},{"query":"{ b }"},3]"#,
            br#"[{"query":"{ a }"}, 1e400]"#,
            b"[]",
            b"[1]",
            br#"[[{"query":"{ a }"}]]"#,
            br#"[{"variables":{}}, {"query":"{ a }"}]"#,
            br#"{"query":"{ a }","variables":{"n":1e400}}"#,
            br#"{"query":"{ a }","variables":{"n":123456789012345678901234567890}}"#,
            br#"{"query":"{ a }"} x"#,
            b"{\"query\":\"{ a }\"}  \n",
            br#"{"query":"{ a }"}{}"#,
            br#""query""#,
            b"7",
            b"null",
            br#"{"query":"{ a }","#,
            br#"{"query":"\ud800"}"#,
            b"{\"query\":\"{ \xff }\"}",
            b"{\"query\":\"{ a }\",\"x\":\"\xc3\"}",
            br#"{"query":{"query":"{ a }"}}"#,
        ];
        let mut found = 0;
        for c in cases {
            let (got, want) = both(c);
            found += usize::from(want.is_some());
            assert_eq!(got, want, "{}", String::from_utf8_lossy(c));
        }
        assert!(found >= 8, "too few cases name an operation: {found}");

        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            "(query|mutation|subscription)? ?[A-Za-z]{0,3} ?\\{ ?[a-z]{1,3} ?\\}"
                .prop_map(Value::from),
            "[a-zA-Z\"\\\\é ]{0,6}".prop_map(Value::from),
        ];
        let key = prop::sample::select(vec!["query", "operationName", "variables", "x"]);
        let value = leaf.prop_recursive(4, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        });
        proptest!(|(v in value, cut in any::<prop::sample::Index>())| {
            let text = serde_json::to_vec(&v).unwrap();
            let (got, want) = both(&text);
            prop_assert_eq!(got, want);
            let prefix = &text[..cut.index(text.len() + 1)];
            let (got, want) = both(prefix);
            prop_assert_eq!(got, want);
        });
    }

    /// The faster [`is_graphql_path`] agrees with the split-based definition, including
    /// non-ASCII bytes next to the name and `?`/`#` cutting the path.
    #[test]
    fn graphql_path_matches_its_definition() {
        use proptest::prelude::*;
        fn oracle(template: &str) -> bool {
            let path = template.split(['?', '#']).next().unwrap_or("");
            path.split('/').any(|seg| {
                seg.len() >= 7
                    && seg
                        .get(seg.len() - 7..)
                        .is_some_and(|t| t.eq_ignore_ascii_case("graphql"))
            })
        }
        let piece = prop::sample::select(vec![
            "/", "graphql", "GraphQL", "raphql", "g", "x-", "é", "?", "#", "ql",
        ]);
        proptest!(|(v in proptest::collection::vec(piece, 0..7))| {
            let t = v.concat();
            prop_assert_eq!(is_graphql_path(&t), oracle(&t), "{}", t);
        });
    }

    /// Keys made from parts equal keys made from the transaction, cut labels included.
    #[test]
    fn key_of_request_equals_key_from_transaction() {
        let cfg = ProfileConfig {
            max_label_bytes: 5,
            max_key_path_bytes: 6,
            ..ProfileConfig::default()
        };
        let mut t = tx(
            "DELETE",
            "/graphql",
            r#"{"query":"query Abcdefgh { a }"}"#,
            200,
            "",
            0,
            1,
        );
        if let Some(r) = t.request.as_mut() {
            r.headers = headers(&[
                ("Host", "Éxample.COM."),
                ("Content-Type", "application/json"),
            ]);
        }
        for template in ["/graphql", "/ordérs/{id}/items", "/"] {
            let from_tx = EndpointKey::from_transaction(&t, template, &cfg).unwrap();
            let req = t.request.as_ref().unwrap();
            let parts = EndpointKey::of_request(req, endpoint_host(&t), template.to_owned(), &cfg);
            assert_eq!(parts, from_tx, "{template}");
        }
        assert_eq!(endpoint_host(&t), "Éxample.com");
    }

    #[test]
    fn graphql_scan_is_bounded() {
        let q = format!("query Big {{ {} }}", "f ".repeat(10_000));
        let g = scan_graphql(&q, None, 100, 3);
        assert!(g.truncated);
        assert_eq!(g.op, Some((GraphqlOpType::Query, "Big".into())));
        assert!(g.fields < 60);
        // Deep nesting does not recurse.
        let deep = format!("{}{}", "{a".repeat(20_000), "}".repeat(20_000));
        assert_eq!(gql(&deep, None).depth, 20_000);
        // Name cut at the label limit.
        assert_eq!(
            scan_graphql("query Abcdef { x }", None, 1000, 3).op,
            Some((GraphqlOpType::Query, "Abc".into()))
        );
    }

    #[test]
    fn graphql_operations_key_endpoints_and_feed_stats() {
        let cfg = ProfileConfig::default();
        assert!(is_graphql_path("/graphql"));
        assert!(is_graphql_path("/api/GraphQL?x=1"));
        assert!(is_graphql_path("/admin-graphql/"));
        assert!(!is_graphql_path("/graphiql"));
        assert!(!is_graphql_path("/graph"));
        let body = r#"{"query":"query GetUser { a: user { id } b: user { id } }","operationName":"GetUser"}"#;
        let t = tx("POST", "/graphql", body, 200, r#"{"data":{}}"#, 0, 3);
        let key = EndpointKey::from_transaction(&t, "/graphql", &cfg).unwrap();
        assert_eq!(key.host, "api.example.com");
        assert_eq!(key.graphql, Some((GraphqlOpType::Query, "GetUser".into())));
        assert_eq!(key.label(), "POST api.example.com/graphql query GetUser");
        let plain = EndpointKey::from_transaction(&t, "/orders", &cfg).unwrap();
        assert_eq!(plain.graphql, None);
        // Batches, GET and application/graphql.
        let batch: Value =
            serde_json::from_str(r#"[{"query":"mutation M { x }"},{"query":"{ y }"}]"#).unwrap();
        let g = graphql_from_json(&batch, 1000, 100).unwrap();
        assert_eq!(
            (g.op, g.batch_len),
            (Some((GraphqlOpType::Mutation, "M".into())), 2)
        );
        let get = tx(
            "GET",
            "/graphql?query=query%20Q%20%7B%20me%20%7D",
            "",
            200,
            "",
            0,
            1,
        );
        let key = EndpointKey::from_transaction(&get, "/graphql", &cfg).unwrap();
        assert_eq!(key.graphql, Some((GraphqlOpType::Query, "Q".into())));
        let mut raw = tx("POST", "/graphql", "subscription S { s }", 200, "", 0, 1);
        if let Some(r) = raw.request.as_mut() {
            r.headers = headers(&[("Content-Type", "application/graphql")]);
        }
        let key = EndpointKey::from_transaction(&raw, "/graphql", &cfg).unwrap();
        assert_eq!(key.graphql, Some((GraphqlOpType::Subscription, "S".into())));

        let mut p = EndpointProfile::new(&cfg);
        let id = identity(None, &[]);
        p.observe(&t, &id, &[], &cfg, &Coverage::always());
        p.observe(&raw, &id, &[], &cfg, &Coverage::always());
        p.observe(
            &tx("POST", "/graphql", r#"{"nope":1}"#, 400, "", 0, 1),
            &id,
            &[],
            &cfg,
            &Coverage::always(),
        );
        let g = p.graphql.as_ref().unwrap();
        assert_eq!(g.aliases.count(), 2);
        assert_eq!(g.aliases.max(), Some(2.0));
        assert_eq!(g.depth.max(), Some(2.0));
        assert_eq!(p.counters.graphql_unreadable, 1);
        // Without a Host header the server address names the host.
        let mut nohost = tx("GET", "/", "", 200, "", 0, 1);
        if let Some(r) = nohost.request.as_mut() {
            r.headers = Headers::new();
        }
        nohost.conn.server = "2001:db8::1".parse().unwrap();
        nohost.conn.server_port = 8443;
        assert_eq!(
            EndpointKey::from_transaction(&nohost, "/", &cfg)
                .unwrap()
                .host,
            "[2001:db8::1]:8443"
        );
    }

    fn sample_stream() -> Vec<(Transaction, Identity, Vec<&'static str>)> {
        let mut v = vec![];
        let users = ["alice", "bob", "carol"];
        for i in 0..60i64 {
            let user = users[(i % 3) as usize];
            let status = if i % 7 == 0 { 404 } else { 200 };
            let req = format!(
                r#"{{"n":{i},"tags":["t{}"],"email":"{user}@example.com"}}"#,
                i % 4
            );
            let resp = if status == 200 {
                format!(r#"{{"id":{i},"ok":true}}"#)
            } else {
                r#"{"error":"nf"}"#.to_string()
            };
            let uri = format!(
                "/things?page={}&sort={}",
                i % 5,
                if i % 2 == 0 { "asc" } else { "desc" }
            );
            let ids: Vec<&'static str> = vec![["1", "2", "3", "4"][(i % 4) as usize]];
            v.push((
                tx(
                    "POST",
                    &uri,
                    &req,
                    status,
                    &resp,
                    i * 1800,
                    (i % 9 + 1) as u64,
                ),
                identity(Some(user), &["reader"]),
                ids,
            ));
        }
        v
    }

    /// Profiles equal up to sketch layout: exact counts and maps, quantiles compared by value.
    fn assert_same(a: &EndpointProfile, b: &EndpointProfile) {
        assert_eq!(
            (a.calls, a.first_seen, a.last_seen),
            (b.calls, b.first_seen, b.last_seen)
        );
        assert_eq!(a.rate, b.rate);
        assert_eq!(a.query_params, b.query_params);
        assert_eq!(a.request_fields, b.request_fields);
        assert_eq!(a.response_fields, b.response_fields);
        for (x, y) in [
            (&a.request_bytes, &b.request_bytes),
            (&a.response_bytes, &b.response_bytes),
            (&a.latency_ms, &b.latency_ms),
        ] {
            assert_eq!(x.count(), y.count());
            for q in [0.0, 0.25, 0.5, 0.9, 1.0] {
                assert_eq!(x.quantile(q), y.quantile(q));
            }
        }
        assert_eq!(a.status.entries(), b.status.entries());
        assert_eq!(a.roles.entries(), b.roles.entries());
        assert_eq!(a.auth_schemes.entries(), b.auth_schemes.entries());
        assert_eq!(
            a.request_content_types.entries(),
            b.request_content_types.entries()
        );
        assert_eq!(a.callers.estimate(), b.callers.estimate());
        assert_eq!(a.caller_objects, b.caller_objects);
        assert_eq!(a.sensitive, b.sensitive);
        assert_eq!(a.counters, b.counters);
    }

    #[test]
    fn merge_equals_single_pass() {
        let cfg = ProfileConfig::default();
        let stream = sample_stream();
        let whole = profile_of(&stream, &cfg);
        assert_eq!(whole.sensitive.get("email"), Some(&60));
        for split in [0, 1, 17, 30, 59, 60] {
            let mut a = profile_of(&stream[..split], &cfg);
            let b = profile_of(&stream[split..], &cfg);
            a.merge(&b, &cfg, &Coverage::always());
            assert_same(&a, &whole);
        }
    }

    #[test]
    fn serde_round_trip() {
        let cfg = ProfileConfig::default();
        let mut p = profile_of(&sample_stream(), &cfg);
        let g = tx("POST", "/graphql", r#"{"query":"{ a }"}"#, 200, "", 0, 1);
        p.observe(&g, &identity(None, &[]), &[], &cfg, &Coverage::always());
        let json = serde_json::to_string(&p).unwrap();
        let back: EndpointProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
        // A loaded profile keeps learning presence correctly.
        let mut back = back;
        let next = &sample_stream()[0];
        back.observe(&next.0, &next.1, &next.2, &cfg, &Coverage::always());
        p.observe(&next.0, &next.1, &next.2, &cfg, &Coverage::always());
        assert_eq!(back.request_fields, p.request_fields);
        let key = EndpointKey::from_transaction(&g, "/graphql", &cfg).unwrap();
        let kj = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<EndpointKey>(&kj).unwrap(), key);
    }

    #[test]
    fn transactions_without_request_or_response() {
        let cfg = ProfileConfig::default();
        let mut t = tx("GET", "/", "", 200, "", 0, 1);
        t.response = None;
        let mut orphan = tx("GET", "/", "", 200, "", 0, 1);
        orphan.request = None;
        let id = identity(None, &[]);
        let p = profile_of(&[(t, id.clone(), vec![]), (orphan, id, vec![])], &cfg);
        assert_eq!(p.calls, 1);
        assert_eq!(p.counters.no_response, 1);
        assert_eq!(p.counters.no_request, 1);
        assert!(p.status.is_empty());
    }

    proptest::proptest! {
        /// The indexed estimate is the map's, whatever the interleaving of changes (new
        /// callers, more objects, merges) and lookups (which build the index).
        #[test]
        fn caller_estimates_from_the_index_are_the_maps(
            ops in proptest::collection::vec((0u8..4, 0u8..12, 0u32..400), 1..120)
        ) {
            let mut m = CallerObjectsMap::default();
            let caller = |c: u8| format!("u:{c:02x}");
            for (op, c, obj) in ops {
                let name = caller(c);
                match op {
                    0 => {
                        let e = m.get_or_insert_with(&name, || CallerObjects {
                            calls: 0,
                            objects: Hll::new(8),
                        });
                        e.calls += 1;
                        e.objects.insert(&obj.to_le_bytes());
                    }
                    1 => {
                        if let Some(e) = m.get_mut(&name) {
                            for k in 0..obj % 50 {
                                e.objects.insert(&(obj + k).to_le_bytes());
                            }
                        }
                    }
                    2 => {
                        // A merge-style insert of a fresh entry when absent.
                        let mut other = CallerObjects { calls: 1, objects: Hll::new(8) };
                        other.objects.insert(&obj.to_le_bytes());
                        let fresh = m.get(&name).is_none();
                        let e = m.get_or_insert_with(&name, || other.clone());
                        if !fresh {
                            e.objects.merge(&other.objects);
                        }
                    }
                    _ => {}
                }
                for c in 0..12u8 {
                    let name = caller(c);
                    let want = m.get(&name).map(|e| e.objects.estimate());
                    proptest::prop_assert_eq!(m.distinct(&name).map(f64::to_bits), want.map(f64::to_bits));
                }
            }
            // A clone and a deserialised copy answer the same, and compare equal.
            let copy: CallerObjectsMap =
                serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            proptest::prop_assert_eq!(&copy, &m);
            let cloned = m.clone();
            for c in 0..12u8 {
                proptest::prop_assert_eq!(
                    copy.distinct(&caller(c)).map(f64::to_bits),
                    m.distinct(&caller(c)).map(f64::to_bits)
                );
                proptest::prop_assert_eq!(
                    cloned.distinct(&caller(c)).map(f64::to_bits),
                    m.distinct(&caller(c)).map(f64::to_bits)
                );
            }
        }
    }

    #[test]
    fn caller_objects_serialise_as_the_plain_map() {
        let mut m = CallerObjectsMap::default();
        m.get_or_insert_with("u:1", || CallerObjects {
            calls: 2,
            objects: Hll::new(4),
        });
        assert!(m.distinct("u:1").is_some(), "builds the index");
        let mut plain = BTreeMap::new();
        plain.insert(
            "u:1".to_owned(),
            CallerObjects {
                calls: 2,
                objects: Hll::new(4),
            },
        );
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::to_value(&plain).unwrap()
        );
        assert_eq!(m.distinct("u:2"), None);
    }
}

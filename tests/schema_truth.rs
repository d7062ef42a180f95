//! Schema ground truth (issue 3): "every true body field and parameter found with its true
//! type", measured on the project's own generated traffic.
//!
//! The security scenario generator documents the bank API it simulates as an OpenAPI 3.0 spec
//! (`apitap generate --spec-out`). This test generates a short training capture, learns it with
//! `apitap learn --spec`, and checks, for every spec operation the traffic called, that each
//! query parameter, each JSON request-body field and each 2xx response field the spec lists was
//! learned under the same key path with a value shape of the declared type. It prints one row
//! per field and the totals, and fails on any field missing or learned with another type.

use apitap::baseline::profile::{status_class, FieldMap};
use apitap::baseline::shape::{ValueShape, ValueType};
use apitap::inventory::spec::{FieldType, ParamIn, Spec};
use apitap::model::Model;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = r#"
[identity]
# The load balancer in front of the API sets X-Forwarded-For.
trusted_proxies = ["10.0.0.0/24"]
"#;

/// A quarter of an hour at the scenario's rate calls every benign operation many times.
const HOURS: &str = "0.25";

fn apitap(args: &[&str], dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_apitap"))
        .args(args)
        .current_dir(dir)
        .env("APITAP_PSEUDONYM_KEY", "schema-truth-key-not-a-secret")
        .output()
        .expect("run apitap");
    assert!(
        out.status.success(),
        "apitap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a checked field lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Query,
    Request,
    Response,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Query => "query",
            Place::Request => "request",
            Place::Response => "response",
        }
    }
}

/// The non-null JSON types a shape has seen, by [`ValueType::name`], most frequent first
/// (`integer`, `float|integer`); with the string format every string had, if any
/// (`string/uuid`).
fn learned_type(shape: &ValueShape) -> String {
    let mut seen: Vec<(u64, ValueType)> = [
        ValueType::Bool,
        ValueType::Integer,
        ValueType::Float,
        ValueType::String,
        ValueType::Object,
        ValueType::Array,
    ]
    .into_iter()
    .map(|t| (shape.type_count(t), t))
    .filter(|(n, _)| *n > 0)
    .collect();
    seen.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut names: Vec<String> = seen.iter().map(|(_, t)| t.name().to_string()).collect();
    if let (Some(f), Some(s)) = (
        string_format(shape),
        names.iter_mut().find(|n| *n == "string"),
    ) {
        s.push('/');
        s.push_str(f);
    }
    if shape.nulls > 0 {
        names.push("null".into());
    }
    names.join("|")
}

/// The format every string of the shape had, spelled as OpenAPI spells it.
fn string_format(shape: &ValueShape) -> Option<&'static str> {
    let st = shape.strings.as_ref().filter(|s| s.count > 0)?;
    [
        (st.uuids, "uuid"),
        (st.datetimes, "date-time"),
        (st.dates, "date"),
        (st.emails, "email"),
    ]
    .into_iter()
    .find(|(n, _)| *n == st.count)
    .map(|(_, f)| f)
}

/// Whether a learned shape has the declared type. Integers are numbers; a query parameter is
/// text, so a declared string whose values happened to read as numbers still fits (the shape
/// types text by its look). A declared format the shape recognises (uuid, date, date-time,
/// email) must be the format every string had; other formats (`password`) constrain nothing
/// the shape can see. A null is never declared by this spec (no `nullable`), so it breaks any
/// type.
fn type_fits(declared: &FieldType, shape: &ValueShape, place: Place) -> bool {
    let Some(t) = declared.type_name.as_deref() else {
        return true;
    };
    let count = |v| shape.type_count(v);
    let others = |allowed: &[ValueType]| {
        [
            ValueType::Null,
            ValueType::Bool,
            ValueType::Integer,
            ValueType::Float,
            ValueType::String,
            ValueType::Object,
            ValueType::Array,
        ]
        .into_iter()
        .filter(|v| !allowed.contains(v))
        .map(count)
        .sum::<u64>()
    };
    if shape.count == 0 {
        return false;
    }
    match t {
        "integer" => others(&[ValueType::Integer]) == 0,
        "number" => others(&[ValueType::Integer, ValueType::Float]) == 0,
        "boolean" => others(&[ValueType::Bool]) == 0,
        "object" => others(&[ValueType::Object]) == 0,
        "array" => others(&[ValueType::Array]) == 0,
        "string" => {
            let allowed: &[ValueType] = match place {
                Place::Query => &[ValueType::String, ValueType::Integer, ValueType::Float],
                _ => &[ValueType::String],
            };
            let format_ok = match declared.format.as_deref() {
                Some(f @ ("uuid" | "date" | "date-time" | "email")) => {
                    string_format(shape) == Some(f)
                }
                _ => true,
            };
            others(allowed) == 0 && format_ok
        }
        _ => false,
    }
}

fn declared_name(t: &FieldType) -> String {
    match (&t.type_name, &t.format) {
        (Some(n), Some(f)) => format!("{n}/{f}"),
        (Some(n), None) => n.clone(),
        (None, _) => "(any)".into(),
    }
}

/// One field as learned across the maps given (a GraphQL template has one profile per
/// operation): the union of their shapes, `None` if no map has the path.
fn learned(maps: &[&FieldMap], path: &str) -> Option<ValueShape> {
    let mut out: Option<ValueShape> = None;
    for f in maps.iter().filter_map(|m| m.fields.get(path)) {
        match out.as_mut() {
            Some(s) => s.merge(&f.shape),
            None => out = Some(f.shape.clone()),
        }
    }
    out
}

#[test]
fn every_spec_field_is_learned_with_its_declared_type() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("apitap-schema-truth-{}", std::process::id())));
    let d = &dir.0;
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(d.join("apitap.toml"), CONFIG).unwrap();
    apitap(
        &[
            "generate",
            "--scenario",
            "security-train",
            "--hours",
            HOURS,
            "--out",
            "train.pcap",
            "--spec-out",
            "spec.yaml",
        ],
        d,
    );
    apitap(
        &[
            "learn",
            "--config",
            "apitap.toml",
            "--spec",
            "spec.yaml",
            "--model",
            "model",
            "train.pcap",
        ],
        d,
    );
    let spec = Spec::load(&d.join("spec.yaml")).unwrap();
    let model = Model::load(&d.join("model")).unwrap();
    let ok_class = status_class(200).unwrap();

    let (mut checked, mut found, mut typed) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    let mut operations_seen = BTreeSet::new();
    println!(
        "{:<44} {:<9} {:<28} {:<16} {:<22} ok",
        "operation", "in", "field", "spec type", "learned type"
    );
    for op in &spec.operations {
        let profiles: Vec<_> = model
            .endpoints
            .iter()
            .filter(|(k, _)| k.method == op.method && k.template == op.path)
            .map(|(_, p)| p)
            .collect();
        if profiles.is_empty() {
            continue;
        }
        let label = format!("{} {}", op.method, op.path);
        operations_seen.insert(label.clone());
        let mut rows: Vec<(Place, String, FieldType)> = op
            .params
            .iter()
            .filter(|p| p.location == ParamIn::Query)
            .map(|p| {
                let t = FieldType {
                    type_name: p.schema_type.clone(),
                    format: None,
                };
                (Place::Query, p.name.clone(), t)
            })
            .collect();
        for path in &op.request_fields {
            let t = op
                .request_field_types
                .get(path)
                .cloned()
                .unwrap_or_default();
            rows.push((Place::Request, path.clone(), t));
        }
        for (status, paths) in &op.response_fields {
            let is_2xx = status.len() == 3 && status.starts_with('2');
            if !is_2xx {
                continue;
            }
            let types = op.response_field_types.get(status);
            for path in paths {
                let t = types.and_then(|m| m.get(path)).cloned().unwrap_or_default();
                rows.push((Place::Response, path.clone(), t));
            }
        }
        for (place, field, declared) in rows {
            let maps: Vec<&FieldMap> = profiles
                .iter()
                .filter_map(|p| match place {
                    Place::Query => Some(&p.query_params),
                    Place::Request => Some(&p.request_fields),
                    Place::Response => p.response_fields.get(ok_class),
                })
                .collect();
            checked += 1;
            let shape = learned(&maps, &field);
            let (learned_name, ok) = match &shape {
                None => ("(missing)".to_string(), false),
                Some(s) => {
                    found += 1;
                    let fits = type_fits(&declared, s, place);
                    typed += usize::from(fits);
                    (learned_type(s), fits)
                }
            };
            println!(
                "{:<44} {:<9} {:<28} {:<16} {:<22} {}",
                label,
                place.name(),
                field,
                declared_name(&declared),
                learned_name,
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!(
                    "{label} {} {field}: spec {}, learned {learned_name}",
                    place.name(),
                    declared_name(&declared)
                ));
            }
        }
    }
    println!(
        "operations in traffic: {} of {}; fields checked: {checked}, found: {found}, type matches: {typed}",
        operations_seen.len(),
        spec.operations.len()
    );
    // The training traffic calls the spec's operations; a quarter hour that called almost none
    // would make every figure above vacuous.
    assert!(
        operations_seen.len() * 2 > spec.operations.len(),
        "only {operations_seen:?} were called"
    );
    assert!(checked >= 40, "only {checked} fields checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

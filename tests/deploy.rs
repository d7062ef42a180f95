//! Checks of the deployment files in `deploy/`: each one parses, says what the daemon really
//! does, and passes its own validator when that validator is installed.
//!
//! The metric names and labels every PromQL expression may use come from the daemon's own
//! catalogue ([`Metrics::render`]), not from a list kept here, so renaming a metric breaks this
//! test instead of silently emptying a dashboard panel or disarming an alert rule.
//!
//! External validators, run when found on PATH (Debian packages in parentheses): `promtool`
//! (prometheus), `amtool` (prometheus-alertmanager), `systemd-analyze` (systemd). A missing
//! one prints `skipped: <tool> not installed`; the structural checks here run regardless.

use apitap::config::Config;
use apitap::telemetry::Metrics;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    let p = deploy(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"))
}

/// Follows a path of mapping keys and sequence indexes ("spec.ports.0.port").
fn at<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.').fold(v, |v, k| {
        let next = match k.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(k),
        };
        next.unwrap_or_else(|| panic!("no {k:?} on the way to {path:?} in {v:?}"))
    })
}

/// The `apitap.toml` key of the ConfigMap (a dotted key, which [`at`] would split).
fn configmap_toml(cm: &Yaml) -> &str {
    at(cm, "data")
        .get("apitap.toml")
        .and_then(Yaml::as_str)
        .expect("data.\"apitap.toml\"")
}

fn strs(v: &Yaml) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_else(|| panic!("not a string: {s:?}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The metric catalogue and a PromQL reference checker.

/// Sample names the daemon exports, each with the label names it carries.
struct Catalogue(BTreeMap<String, BTreeSet<String>>);

/// Labels Prometheus adds to every scraped series, and its own `up` series.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

impl Catalogue {
    fn real() -> Catalogue {
        let m = Metrics::new();
        // Families labelled by alerts, sinks, routes and models have no series until their stage
        // reports; give each one series so its sample names and labels show in the exposition.
        m.alerts.with_label_values(&["bola", "high"]).inc();
        m.sink_deliveries.with_label_values(&["webhook"]).inc();
        m.sink_retries.with_label_values(&["webhook"]).inc();
        m.sink_failures.with_label_values(&["webhook"]).inc();
        m.sink_queue_depth.with_label_values(&["webhook"]).set(1);
        for family in [
            &m.sink_queue_drops,
            &m.sink_rejected,
            &m.sink_spool_drops,
            &m.sink_oversize_drops,
            &m.sink_spool_corrupt,
            &m.sink_rotations,
        ] {
            family.with_label_values(&["webhook"]).inc();
        }
        m.sink_spool_bytes.with_label_values(&["webhook"]).set(1);
        m.sink_spool_pending.with_label_values(&["webhook"]).set(1);
        m.learning_state.with_label_values(&["learning"]).set(1);
        m.model_age.with_label_values(&["baseline"]).set(1.0);
        m.http_route_transactions
            .with_label_values(&["GET /users/{id}", "2xx"])
            .inc();
        m.http_duration
            .with_label_values(&["GET /users/{id}"])
            .observe(0.01);
        Catalogue::from_exposition(&m.render())
    }

    /// Reads sample lines `name{a="x",b="y"} value` of the text exposition format.
    fn from_exposition(text: &str) -> Catalogue {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = names.entry(line[..end].to_owned()).or_default();
            if let Some(body) = line[end..].strip_prefix('{') {
                // Label values of this catalogue hold no `,` or `=` except in the route
                // sample, whose braces sit inside the quoted value: split on `",`.
                for pair in body.split("\",") {
                    if let Some((k, _)) = pair.split_once('=') {
                        labels.insert(k.trim().to_owned());
                    }
                }
            }
        }
        names.insert("up".to_owned(), BTreeSet::new());
        Catalogue(names)
    }

    /// Every problem with the metric and label names `expr` uses; empty when it is sound.
    fn check(&self, expr: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let refs = promql_refs(expr);
        let mut usable: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
        let mut metrics = 0;
        for r in &refs {
            if let Ref::Metric(name, matchers) = r {
                match self.0.get(name) {
                    Some(labels) => {
                        metrics += 1;
                        usable.extend(labels.iter().map(String::as_str));
                        for m in matchers {
                            if !labels.contains(m) && !TARGET_LABELS.contains(&m.as_str()) {
                                problems.push(format!("{name} has no label {m:?}"));
                            }
                        }
                    }
                    None => problems.push(format!("{name} is not exported")),
                }
            }
        }
        if metrics == 0 && problems.is_empty() {
            problems.push("references no exported metric".to_owned());
        }
        for r in &refs {
            if let Ref::Grouping(label) = r {
                if !usable.contains(label.as_str()) {
                    problems.push(format!("groups by {label:?}, which no metric here carries"));
                }
            }
        }
        problems
    }
}

#[derive(Debug, PartialEq)]
enum Ref {
    /// A metric name and the label names of its `{...}` matchers.
    Metric(String, Vec<String>),
    /// A label of a `by (...)` or `without (...)` clause.
    Grouping(String),
}

/// PromQL words that are not metric names where they appear bare.
const PROMQL_WORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "count_values",
    "group",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "label_values",
    "abs",
    "clamp_min",
    "clamp_max",
    "vector",
    "scalar",
    "time",
    "absent",
    "changes",
    "resets",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "predict_linear",
    "humanize",
    "inf",
    "nan",
];

/// The metric names, matcher label names and grouping labels of a PromQL expression (or a
/// Grafana `label_values(metric, label)` query). A small lexer, not a parser: enough to name
/// every identifier by its role.
fn promql_refs(expr: &str) -> Vec<Ref> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut grouping_next = false;
    let mut in_label_values = false;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            // Skip a string literal, honouring backslash escapes.
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'[' {
            // A range or subquery duration, possibly a Grafana variable.
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
        } else if c == b'$' {
            // A Grafana or template variable: $instance, ${x}, $__rate_interval.
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_{}".contains(&b[i])) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let rest = expr[i..].trim_start();
            if word == "by" || word == "without" {
                grouping_next = true;
                continue;
            }
            if word == "label_values" {
                in_label_values = true;
                continue;
            }
            if PROMQL_WORDS.contains(&word) || rest.starts_with('(') {
                continue;
            }
            if in_label_values && out.iter().any(|r| matches!(r, Ref::Metric(..))) {
                out.push(Ref::Grouping(word.to_owned()));
                continue;
            }
            let mut matchers = Vec::new();
            if let Some(body) = rest.strip_prefix('{') {
                let close = matching_brace(body);
                matchers = matcher_labels(&body[..close]);
                i = expr.len() - rest.len() + 1 + close;
            }
            out.push(Ref::Metric(word.to_owned(), matchers));
        } else if c == b'(' && grouping_next {
            grouping_next = false;
            let close = expr[i..].find(')').map_or(expr.len(), |n| i + n);
            for label in expr[i + 1..close].split(',').map(str::trim) {
                if !label.is_empty() {
                    out.push(Ref::Grouping(label.to_owned()));
                }
            }
            i = close + 1;
        } else if c == b'{' {
            // A bare selector `{__name__=~"..."}` is not used in these files.
            let close = matching_brace(&expr[i + 1..]);
            i += close + 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Index of the `}` closing a matcher list, skipping quoted values.
fn matching_brace(body: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (n, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return n,
            _ => {}
        }
    }
    body.len()
}

/// Label names of `a="x", b=~"y"`.
fn matcher_labels(body: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut word = String::new();
    for c in body.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            _ if quoted => {}
            '=' | '!' => {
                if !word.trim().is_empty() {
                    labels.push(word.trim().to_owned());
                }
                word.clear();
            }
            ',' => word.clear(),
            _ => word.push(c),
        }
    }
    labels
}

#[test]
fn promql_checker_catches_wrong_names_and_labels() {
    let cat = Catalogue::real();
    // (expression, problems expected)
    let cases: &[(&str, &[&str])] = &[
        ("rate(apitap_capture_packets_total[5m])", &[]),
        (
            r#"sum by (layer) (rate(apitap_decode_errors_total{instance=~"$instance"}[$__rate_interval]))"#,
            &[],
        ),
        (
            "histogram_quantile(0.9, sum by (le, route) (rate(apitap_http_transaction_duration_seconds_bucket[5m])))",
            &[],
        ),
        (r#"up{job="apitap"} == 0"#, &[]),
        ("label_values(apitap_capture_packets_total, instance)", &[]),
        (
            "rate(apitap_capture_packet_total[5m])",
            &["apitap_capture_packet_total is not exported"],
        ),
        (
            r#"rate(apitap_daemon_channel_drops_total{chanel="packets"}[5m])"#,
            &["apitap_daemon_channel_drops_total has no label \"chanel\""],
        ),
        (
            "sum by (route) (rate(apitap_capture_packets_total[5m]))",
            &["groups by \"route\", which no metric here carries"],
        ),
        ("vector(1)", &["references no exported metric"]),
        (
            r#"rate(apitap_http_route_transactions_total{route="GET /a/{id}",status_class="5xx"}[1m])"#,
            &[],
        ),
    ];
    for (expr, want) in cases {
        assert_eq!(cat.check(expr), *want, "{expr}");
    }
}

#[test]
fn catalogue_lists_every_family_with_its_labels() {
    let cat = Catalogue::real();
    let labels = |n: &str| -> Vec<&str> {
        cat.0
            .get(n)
            .unwrap_or_else(|| panic!("{n} missing"))
            .iter()
            .map(String::as_str)
            .collect()
    };
    assert_eq!(labels("apitap_detect_alerts_total"), ["kind", "severity"]);
    assert_eq!(
        labels("apitap_http_transaction_duration_seconds_bucket"),
        ["le", "route"]
    );
    assert_eq!(
        labels("apitap_http_transaction_duration_seconds_count"),
        ["route"]
    );
    assert_eq!(labels("apitap_capture_packets_total"), Vec::<&str>::new());
    // Every family of the README catalogue table is here: 54, the histogram counted once.
    let families: BTreeSet<&str> = cat
        .0
        .keys()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(n)
        })
        .filter(|n| n.starts_with("apitap_"))
        .collect();
    assert_eq!(families.len(), 54, "{families:#?}");
}

// ---------------------------------------------------------------------------------------------
// External validators.

fn on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Runs `tool args...`; `None` (after printing why) when the tool is not installed.
fn run_tool(tool: &str, args: &[&str]) -> Option<(bool, String)> {
    let Some(exe) = on_path(tool) else {
        println!("skipped: {tool} not installed");
        return None;
    };
    let out = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

fn path_str(rel: &str) -> String {
    deploy(rel).to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Prometheus.

fn rule_list() -> Vec<Yaml> {
    let rules = yaml("prometheus/apitap-rules.yml");
    at(&rules, "groups")
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| at(g, "rules").as_sequence().expect("rules").clone())
        .collect()
}

#[test]
fn alert_rules_use_exported_metrics_and_cover_the_sensor_failures() {
    let cat = Catalogue::real();
    let rules = rule_list();
    let mut names = BTreeSet::new();
    for rule in &rules {
        let name = at(rule, "alert").as_str().expect("alert name");
        assert!(names.insert(name), "{name} defined twice");
        let expr = at(rule, "expr").as_str().expect("expr");
        assert_eq!(cat.check(expr), Vec::<String>::new(), "rule {name}: {expr}");
        let severity = at(rule, "labels.severity").as_str().expect("severity");
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: {severity}"
        );
        assert!(at(rule, "annotations.summary").as_str().is_some(), "{name}");
        assert!(
            at(rule, "annotations.description").as_str().is_some(),
            "{name}"
        );
    }
    // The failure modes the brief asks for, by the metric each must watch.
    let exprs: Vec<&str> = rules
        .iter()
        .map(|r| at(r, "expr").as_str().unwrap())
        .collect();
    for needle in [
        "up{",
        "apitap_capture_kernel_drops_total",
        "apitap_capture_interface_drops_total",
        "apitap_reassembly_memcap_hits_total",
        "apitap_sink_failures_total",
        "apitap_sink_queue_depth_alerts",
        "apitap_sink_queue_drops_total",
        "apitap_sink_spool_drops_total",
        "apitap_sink_spool_bytes",
        "apitap_detect_alerts_total",
        "apitap_detect_model_saves_total",
        "apitap_http_capture_quality_ratio",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no rule watches {needle}"
        );
    }
}

#[test]
fn prometheus_configs_scrape_the_sensor_and_load_the_rules() {
    for file in [
        "prometheus/prometheus.yml",
        "prometheus/prometheus-kubernetes.yml",
    ] {
        let cfg = yaml(file);
        for rule_file in strs(at(&cfg, "rule_files")) {
            assert!(
                deploy("prometheus").join(rule_file).is_file(),
                "{file}: {rule_file}"
            );
        }
        let job = at(&cfg, "scrape_configs.0");
        assert_eq!(at(job, "job_name").as_str(), Some("apitap"), "{file}");
        assert_eq!(at(job, "metrics_path").as_str(), Some("/metrics"), "{file}");
    }
    let local = yaml("prometheus/prometheus.yml");
    assert_eq!(
        strs(at(&local, "scrape_configs.0.static_configs.0.targets")),
        ["localhost:9187"]
    );
    // The Kubernetes job keeps exactly the endpoints of the Service in kubernetes/service.yaml.
    let k8s = yaml("prometheus/prometheus-kubernetes.yml");
    let service = yaml("kubernetes/service.yaml");
    let keep = at(&k8s, "scrape_configs.0.relabel_configs.0");
    assert_eq!(at(keep, "action").as_str(), Some("keep"));
    let want = format!(
        "{};{}",
        at(&service, "metadata.name").as_str().unwrap(),
        at(&service, "spec.ports.0.name").as_str().unwrap()
    );
    assert_eq!(at(keep, "regex").as_str(), Some(want.as_str()));
    assert_eq!(
        strs(at(
            &k8s,
            "scrape_configs.0.kubernetes_sd_configs.0.namespaces.names"
        )),
        [at(&service, "metadata.namespace").as_str().unwrap()]
    );
}

#[test]
fn promtool_accepts_the_configs_and_rules() {
    let Some((ok, out)) = run_tool(
        "promtool",
        &["check", "rules", &path_str("prometheus/apitap-rules.yml")],
    ) else {
        return;
    };
    assert!(ok, "promtool check rules:\n{out}");
    let Some((ok, out)) = run_tool(
        "promtool",
        &["check", "config", &path_str("prometheus/prometheus.yml")],
    ) else {
        return;
    };
    assert!(ok, "promtool check config:\n{out}");
    let Some((ok, out)) = run_tool(
        "promtool",
        &[
            "check",
            "config",
            &path_str("prometheus/prometheus-kubernetes.yml"),
        ],
    ) else {
        return;
    };
    // Debian's prometheus package is built without Kubernetes service discovery and refuses the
    // key itself; everything else about that file is checked structurally above.
    if !ok && out.contains("field kubernetes_sd_configs not found") {
        println!("skipped: this promtool has no Kubernetes service discovery (Debian build)");
    } else {
        assert!(ok, "promtool check config (kubernetes):\n{out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Alertmanager.

fn route_receivers<'a>(route: &'a Yaml, out: &mut Vec<&'a str>) {
    if let Some(r) = route.get("receiver").and_then(Yaml::as_str) {
        out.push(r);
    }
    for child in route
        .get("routes")
        .and_then(Yaml::as_sequence)
        .into_iter()
        .flatten()
    {
        route_receivers(child, out);
    }
}

#[test]
fn alertmanager_routes_group_by_alert_kind_and_route() {
    let am = yaml("alertmanager/alertmanager.yml");
    let route = at(&am, "route");
    assert_eq!(strs(at(route, "group_by")), ["alertname", "kind", "route"]);
    let defined: BTreeSet<&str> = at(&am, "receivers")
        .as_sequence()
        .expect("receivers")
        .iter()
        .map(|r| at(r, "name").as_str().expect("receiver name"))
        .collect();
    assert!(defined.contains("default"), "{defined:?}");
    let mut used = Vec::new();
    route_receivers(route, &mut used);
    for r in &used {
        assert!(defined.contains(r), "route names undefined receiver {r}");
    }
    assert!(
        am.get("receivers")
            .and_then(Yaml::as_sequence)
            .into_iter()
            .flatten()
            .any(
                |r| r.get("webhook_configs").is_some() && at(r, "name").as_str() != Some("default")
            ),
        "no webhook receiver besides the default"
    );
    let Some((ok, out)) = run_tool(
        "amtool",
        &["check-config", &path_str("alertmanager/alertmanager.yml")],
    ) else {
        return;
    };
    assert!(ok, "amtool check-config:\n{out}");
}

// ---------------------------------------------------------------------------------------------
// Grafana.

fn collect_exprs<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
    match v {
        Json::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", Json::String(s)) => out.push(s),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_is_valid_and_queries_only_exported_metrics() {
    let dash: Json = serde_json::from_str(&read("grafana/apitap-dashboard.json"))
        .unwrap_or_else(|e| panic!("dashboard is not JSON: {e}"));
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );

    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "{p}");
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64(),
            g["y"].as_u64(),
            g["w"].as_u64(),
            g["h"].as_u64(),
        );
        let (Some(x), Some(y), Some(w), Some(h)) = (x, y, w, h) else {
            panic!("bad gridPos: {p}")
        };
        assert!(x + w <= 24, "{}: wider than the grid", p["title"]);
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(cells.insert(cell), "{} overlaps another panel", p["title"]);
        }
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                !p["targets"].as_array().is_none_or(Vec::is_empty),
                "{}",
                p["title"]
            );
        }
    }

    let cat = Catalogue::real();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    for expr in &exprs {
        assert_eq!(cat.check(expr), Vec::<String>::new(), "{expr}");
    }
    // The panels the brief asks for, by the metric each must show.
    for needle in [
        "apitap_capture_packets_total",
        "apitap_capture_bytes_total",
        "apitap_capture_kernel_drops_total",
        "apitap_decode_errors_total",
        "apitap_flow_active_flows",
        "apitap_flow_evicted_total",
        "apitap_reassembly_gaps_total",
        "apitap_reassembly_memcap_hits_total",
        "apitap_http_transactions_total",
        "apitap_http_anomalies_total",
        "apitap_http_transaction_duration_seconds_bucket",
        "apitap_http_capture_quality_ratio",
        "apitap_detect_alerts_total",
        "apitap_sink_deliveries_total",
        "apitap_sink_failures_total",
        "apitap_sink_queue_depth_alerts",
        "apitap_sink_spool_drops_total",
        "apitap_sink_spool_pending_alerts",
        "apitap_http_route_transactions_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "no panel shows {needle}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Kubernetes.

#[test]
fn configmap_holds_a_valid_config_reachable_from_the_service() {
    let cm = yaml("kubernetes/configmap.yaml");
    assert_eq!(at(&cm, "kind").as_str(), Some("ConfigMap"));
    let text = configmap_toml(&cm);
    let cfg = Config::parse(text, Path::new("configmap.yaml"))
        .unwrap_or_else(|e| panic!("configmap apitap.toml: {e}"));
    cfg.validate(Path::new("configmap.yaml"))
        .unwrap_or_else(|e| panic!("configmap apitap.toml: {e}"));
    // The Service and the kubelet probes reach the sensor on the node address.
    assert_eq!(cfg.metrics.listen, "0.0.0.0:9187");
    assert_eq!(cfg.daemon.user, "apitap");
    assert!(!cfg.capture.interface.is_empty());
}

#[test]
fn daemonset_captures_with_least_privilege_and_probes_the_daemon() {
    let ds = yaml("kubernetes/daemonset.yaml");
    let cm = yaml("kubernetes/configmap.yaml");
    let svc = yaml("kubernetes/service.yaml");
    assert_eq!(at(&ds, "kind").as_str(), Some("DaemonSet"));
    let pod = at(&ds, "spec.template.spec");
    assert_eq!(at(pod, "hostNetwork").as_bool(), Some(true));
    assert_eq!(
        at(pod, "dnsPolicy").as_str(),
        Some("ClusterFirstWithHostNet")
    );
    assert_eq!(
        at(pod, "automountServiceAccountToken").as_bool(),
        Some(false)
    );

    let c = at(pod, "containers.0");
    let sc = at(c, "securityContext");
    assert_eq!(strs(at(sc, "capabilities.drop")), ["ALL"]);
    let mut added = strs(at(sc, "capabilities.add"));
    added.sort_unstable();
    // SETUID/SETGID only to leave root: the config must name a user to switch to.
    assert_eq!(added, ["NET_ADMIN", "NET_RAW", "SETGID", "SETUID"]);
    assert_eq!(at(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(at(sc, "privileged").as_bool(), Some(false));
    let cfg = Config::parse(configmap_toml(&cm), Path::new("cm")).unwrap();
    assert!(
        !cfg.daemon.user.is_empty(),
        "root in the pod needs [daemon] user"
    );
    // The fsGroup is the group of the image's apitap user, so the emptyDirs are writable.
    assert_eq!(at(pod, "securityContext.fsGroup").as_u64(), Some(10001));
    assert!(read("Dockerfile").contains("--gid 10001"));

    for key in [
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ] {
        assert!(
            at(at(c, "resources"), key).as_str().is_some(),
            "resources.{key}"
        );
    }
    assert_eq!(at(c, "ports.0.name").as_str(), Some("metrics"));
    assert_eq!(at(c, "ports.0.containerPort").as_u64(), Some(9187));
    assert_eq!(
        at(c, "livenessProbe.httpGet.path").as_str(),
        Some("/healthz")
    );
    assert_eq!(
        at(c, "readinessProbe.httpGet.path").as_str(),
        Some("/readyz")
    );
    assert_eq!(
        at(c, "livenessProbe.httpGet.port").as_str(),
        Some("metrics")
    );
    assert_eq!(
        at(c, "readinessProbe.httpGet.port").as_str(),
        Some("metrics")
    );

    // The config volume is the ConfigMap, mounted where the args look for it.
    let args = strs(at(c, "args"));
    assert_eq!(args, ["run", "--config", "/etc/apitap/apitap.toml"]);
    let cm_name = at(&cm, "metadata.name").as_str().unwrap();
    let volume = at(pod, "volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.get("configMap").is_some())
        .expect("a configMap volume");
    assert_eq!(at(volume, "configMap.name").as_str(), Some(cm_name));
    let vname = at(volume, "name").as_str().unwrap();
    let mount = at(c, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| at(m, "name").as_str() == Some(vname))
        .expect("config mounted");
    assert_eq!(at(mount, "mountPath").as_str(), Some("/etc/apitap"));

    // The Service selects these pods and targets this port; all three share one namespace.
    let labels = at(&ds, "spec.template.metadata.labels");
    for (k, v) in at(&svc, "spec.selector").as_mapping().expect("selector") {
        assert_eq!(labels.get(k.as_str().unwrap()), Some(v), "selector {k:?}");
    }
    assert_eq!(at(&svc, "spec.ports.0.port").as_u64(), Some(9187));
    assert_eq!(
        at(&svc, "spec.ports.0.targetPort").as_str(),
        Some("metrics")
    );
    let ns = at(&ds, "metadata.namespace");
    assert_eq!(at(&svc, "metadata.namespace"), ns);
    assert_eq!(at(&cm, "metadata.namespace"), ns);
}

// ---------------------------------------------------------------------------------------------
// Dockerfile.

#[test]
fn dockerfile_builds_from_real_paths_and_derives_a_valid_config() {
    let df = read("Dockerfile");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let instructions: Vec<&str> = df
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms, ["rust:1-bookworm AS build", "debian:bookworm-slim"]);
    assert!(df.contains("libpcap-dev") && df.contains("libpcap0.8"));
    assert!(df.contains("cargo build --release --locked"));
    assert!(instructions.contains(&"EXPOSE 9187"));

    // Every COPY from the build context names a path of the repository.
    for l in instructions.iter().filter_map(|l| l.strip_prefix("COPY ")) {
        if l.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = l.split_whitespace().collect();
        let (_dest, sources) = parts.split_last().expect("COPY arguments");
        for src in sources {
            assert!(root.join(src).exists(), "COPY {src}: no such path");
        }
    }

    // The image's config is deploy/apitap.toml with the sed edits of the Dockerfile applied:
    // each edit must hit exactly one line and the result must load.
    let mut toml = read("apitap.toml");
    let mut edits = 0;
    for part in df.split("-e 's/^").skip(1) {
        let edit = part.split("/'").next().expect("sed edit");
        let (from, to) = edit.split_once("$/").expect("s/^FROM$/TO/");
        let hits = toml.lines().filter(|l| *l == from).count();
        assert_eq!(
            hits, 1,
            "sed pattern {from:?} hits {hits} lines of apitap.toml"
        );
        toml = toml
            .lines()
            .map(|l| if l == from { to } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        edits += 1;
    }
    assert_eq!(edits, 2);
    let cfg = Config::parse(&toml, Path::new("image apitap.toml")).expect("image config parses");
    cfg.validate(Path::new("image apitap.toml"))
        .expect("image config is valid");
    assert_eq!(cfg.metrics.listen, "0.0.0.0:9187");
    assert_eq!(cfg.daemon.user, "apitap");
    assert!(df.contains("useradd --system --uid 10001 --gid apitap"));
}

// ---------------------------------------------------------------------------------------------
// systemd.

/// `key=value` lines of a unit file, by key (a key may repeat).
fn unit_keys(text: &str) -> BTreeMap<&str, Vec<&str>> {
    let mut keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            keys.entry(k.trim()).or_default().push(v.trim());
        }
    }
    keys
}

#[test]
fn systemd_unit_is_hardened() {
    let text = read("apitap.service");
    let keys = unit_keys(&text);
    let one = |k: &str| -> &str {
        match keys.get(k).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("{k}: expected one value, found {other:?}"),
        }
    };
    let expected = [
        (
            "ExecStart",
            "/usr/local/bin/apitap run --config /etc/apitap/apitap.toml",
        ),
        ("AmbientCapabilities", "CAP_NET_RAW CAP_NET_ADMIN"),
        ("CapabilityBoundingSet", "CAP_NET_RAW CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadWritePaths", "/var/lib/apitap"),
        ("StateDirectory", "apitap"),
        ("User", "apitap"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_PACKET AF_NETLINK",
        ),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", "30"),
    ];
    for (k, v) in expected {
        assert_eq!(one(k), v, "{k}");
    }
    assert_eq!(keys["SystemCallFilter"][0], "@system-service");
    // The sensor needs the host's interfaces: no private network namespace.
    assert!(!keys.contains_key("PrivateNetwork"));

    let Some(exe) = on_path("systemd-analyze") else {
        println!("skipped: systemd-analyze not installed");
        return;
    };
    // `verify` requires ExecStart's binary to exist: point it at the one this test built.
    let dir = std::env::temp_dir().join(format!("apitap-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("apitap.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/apitap", env!("CARGO_BIN_EXE_apitap")),
    )
    .unwrap();
    let out = Command::new(exe).arg("verify").arg(&unit).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let msg = String::from_utf8_lossy(&out.stderr);
    // Without a running systemd some containers cannot even load the unit; the key checks
    // above stand in for `verify` there.
    let no_manager = [
        "Failed to initialize manager",
        "System has not been booted with systemd",
    ];
    if !out.status.success() && no_manager.iter().any(|m| msg.contains(m)) {
        println!(
            "skipped: systemd-analyze verify cannot run here ({})",
            msg.trim()
        );
        return;
    }
    assert!(
        out.status.success() && msg.trim().is_empty(),
        "systemd-analyze verify:\n{msg}"
    );
}

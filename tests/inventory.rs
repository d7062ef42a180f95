//! The inventory on the bundled captures, whose ground truth names every request's true route:
//! templating accuracy, template count, and no template that merges two true endpoints; then
//! the learn / merge / show / inventory commands end to end.

use apitap::capture::OfflineSource;
use apitap::engine::{Engine, EngineConfig};
use apitap::identity::{IdentityConfig, IdentityExtractor};
use apitap::inventory::template::{RouteConfig, RouteLearner};
use apitap::model::learn::{LearnConfig, Learner};
use apitap::model::Model;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CAPTURES: &[&str] = &[
    "api-basic",
    "api-pipelined",
    "api-vlan-ipv6",
    "api-tunnels",
    "api-impaired",
];

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
}

/// Placeholder names differ between a learner (`{id}`) and the generator (`{userId}`): compare
/// shapes only.
fn shape(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn learn(names: &[&str]) -> Model {
    let key = b"inventory-test-key-0123456789abcdef";
    let identity = IdentityExtractor::new(&IdentityConfig::default(), key).unwrap();
    let model = Model::new("test", "k", RouteLearner::new(RouteConfig::default()));
    let mut learner = Learner::new(model, identity, LearnConfig::default());
    let paths: Vec<PathBuf> = names
        .iter()
        .map(|n| capture(&format!("{n}.pcap")))
        .collect();
    let mut src = OfflineSource::open(&paths).unwrap();
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    while let Some(p) = src.next_packet() {
        engine.process(&p, &mut out);
        for t in out.drain(..) {
            learner.observe(&t);
        }
    }
    engine.finish(&mut out);
    for t in out.drain(..) {
        learner.observe(&t);
    }
    learner.finish()
}

#[test]
fn templates_match_the_true_routes() {
    // The captures are learned together, as one sensor would see them over time.
    let model = learn(CAPTURES);
    let mut total = 0usize;
    let mut right = 0usize;
    let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
    // template -> true routes mapped to it; true route -> templates it became.
    let mut merged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut true_routes = BTreeSet::new();
    for name in CAPTURES {
        let text = std::fs::read_to_string(capture(&format!("{name}.truth.jsonl"))).unwrap();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let host = v["host"].as_str().unwrap();
            if host.is_empty() {
                continue; // the HTTP/1.0 health check has no Host: filed under the address
            }
            let method = v["method"].as_str().unwrap();
            let truth = v["route"].as_str().unwrap();
            let t = model
                .routes
                .template_of(host, method, v["uri"].as_str().unwrap());
            total += 1;
            true_routes.insert(format!("{method} {}", shape(truth)));
            merged
                .entry(format!("{method} {}", shape(&t.path)))
                .or_default()
                .insert(shape(truth));
            if shape(&t.path) == shape(truth) {
                right += 1;
            } else {
                *wrong
                    .entry(format!("{method} {truth} -> {}", t.path))
                    .or_default() += 1;
            }
        }
    }
    let templates = merged.len();
    let accuracy = right as f64 / total as f64;
    println!(
        "templating: {right}/{total} requests on the true template ({:.2}%), {templates} templates for {} true routes",
        accuracy * 100.0,
        true_routes.len()
    );
    for (w, n) in &wrong {
        println!("  {n:>4}  {w}");
    }
    let merging: Vec<_> = merged
        .iter()
        .filter(|(_, routes)| routes.len() > 1)
        .collect();
    assert!(
        merging.is_empty(),
        "templates merging true endpoints: {merging:?}"
    );
    assert!(
        accuracy >= 0.98,
        "templating accuracy {accuracy:.4} below 0.98"
    );
    let ratio = templates as f64 / true_routes.len() as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{templates} templates for {} routes",
        true_routes.len()
    );
}

fn apitap(args: &[&str], key: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apitap"))
        .args(args)
        .env("APITAP_PSEUDONYM_KEY", key)
        .output()
        .unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("apitap-inv-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn learn_merge_show_inventory_and_drift() {
    let key = "a-shared-pseudonym-key-for-tests";
    let (a, b, m) = (tmp("a"), tmp("b"), tmp("merged"));
    let basic = capture("api-basic.pcap");
    let piped = capture("api-pipelined.pcap");
    for (dir, pcap, sensor) in [(&a, &basic, "s1"), (&b, &piped, "s2")] {
        let o = apitap(
            &[
                "learn",
                pcap.to_str().unwrap(),
                "--model",
                dir.to_str().unwrap(),
                "--sensor",
                sensor,
            ],
            key,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = apitap(
        &[
            "model",
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ],
        key,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ma, mb, mm) = (
        Model::load(&a).unwrap(),
        Model::load(&b).unwrap(),
        Model::load(&m).unwrap(),
    );
    assert_eq!(mm.sensors, vec!["s1", "s2"]);
    assert_eq!(
        mm.counters.learned,
        ma.counters.learned + mb.counters.learned
    );
    assert_eq!(mm.calls(), ma.calls() + mb.calls());
    assert!(mm.endpoints.len() >= ma.endpoints.len().max(mb.endpoints.len()));
    // The merged model listened whenever either sensor did.
    let mut both = ma.coverage.clone();
    both.union(&mb.coverage);
    assert_eq!(mm.coverage, both);
    // The bundled captures last seconds: heard, but not one whole hour.
    assert!(!mm.coverage.is_empty());
    assert_eq!(mm.coverage.whole_hours(), 0);

    let show = apitap(&["model", "show", m.to_str().unwrap()], key);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("sensors:      s1, s2"), "{text}");
    let listened = format!(
        "listened:     {} whole clock hours in",
        mm.coverage.whole_hours()
    );
    assert!(text.contains(&listened), "{text}");
    assert!(text.contains("/api/v1/users/{id}"), "{text}");

    let oa = m.join("observed.json");
    let inv = apitap(
        &[
            "inventory",
            "--model",
            m.to_str().unwrap(),
            "--format",
            "json",
            "--openapi",
            oa.to_str().unwrap(),
        ],
        key,
    );
    assert!(inv.status.success());
    let rows: Value = serde_json::from_slice(&inv.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), mm.endpoints.len());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&oa).unwrap()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let put = &doc["paths"]["/api/v1/users/{id}"]["put"];
    assert!(put["requestBody"]["content"]["application/json"]["schema"]["properties"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearerJwt"].is_object());

    // A spec with one deprecated operation, one never called, and not the rest.
    let spec = m.join("spec.yaml");
    std::fs::write(
        &spec,
        "openapi: 3.0.3\npaths:\n  /api/v1/users/{userId}:\n    get:\n      deprecated: true\n      parameters: [{name: userId, in: path, required: true}]\n      responses: {}\n  /api/v1/legacy:\n    get: {responses: {}}\n",
    )
    .unwrap();
    let d = apitap(
        &[
            "inventory",
            "--model",
            m.to_str().unwrap(),
            "--spec",
            spec.to_str().unwrap(),
            "--format",
            "json",
        ],
        key,
    );
    let drift: Value = serde_json::from_slice(&d.stdout).unwrap();
    assert!(drift["deprecated_called"][0]
        .as_str()
        .unwrap()
        .starts_with("GET /api/v1/users/{userId}"));
    assert_eq!(
        drift["never_seen"],
        serde_json::json!(["GET /api/v1/legacy"])
    );
    assert!(drift["shadow"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s.as_str().unwrap().contains("/api/v1/orders")));

    // Learning again extends; a different key is refused; a damaged model is a clear error.
    let again = apitap(
        &[
            "learn",
            basic.to_str().unwrap(),
            "--model",
            a.to_str().unwrap(),
        ],
        key,
    );
    assert!(again.status.success());
    assert_eq!(
        Model::load(&a).unwrap().counters.learned,
        2 * ma.counters.learned
    );
    let other = apitap(
        &[
            "learn",
            basic.to_str().unwrap(),
            "--model",
            a.to_str().unwrap(),
        ],
        "another-key-of-sufficient-length",
    );
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("pseudonym key"));
    let file = a.join("model.json");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let bad = apitap(&["model", "show", a.to_str().unwrap()], key);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("model.json") && err.contains("truncated"),
        "{err}"
    );
}

/// `models/demo` is what `apitap learn` makes of the bundled training captures, byte for byte.
#[test]
fn demo_model_is_fresh() {
    let dir = tmp("demo");
    let mut args: Vec<String> = vec!["learn".into()];
    for c in ["api-basic", "api-pipelined", "api-vlan-ipv6", "api-tunnels"] {
        args.push(capture(&format!("{c}.pcap")).display().to_string());
    }
    args.extend([
        "--model".into(),
        dir.display().to_string(),
        "--sensor".into(),
        "demo".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = apitap(&args, "apitap-demo-key-not-a-secret");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fresh = std::fs::read(dir.join("model.json")).unwrap();
    let committed_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/model.json");
    if std::env::var_os("APITAP_UPDATE_MODELS").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&committed_path).expect("models/demo/model.json");
    assert!(
        fresh == committed,
        "models/demo is stale: rerun with APITAP_UPDATE_MODELS=1"
    );
    let model = Model::load(committed_path.parent().unwrap()).unwrap();
    assert!(
        model.endpoints.len() >= 12,
        "{} endpoints",
        model.endpoints.len()
    );
}

/// `learn --config` reads the same file as the daemon: a bad value is refused with the file,
/// key and reason; `[identity]` and `[secrets]` settings take effect.
#[test]
fn learn_reads_the_config_file() {
    let dir = tmp("config");
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = capture("api-basic.pcap");
    let model = dir.join("m");
    let learn_with = |name: &str, text: &str| {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        let args = [
            "learn",
            pcap.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
        ];
        let mut args: Vec<&str> = args.to_vec();
        let file = file.display().to_string();
        args.extend(["--config", &file]);
        apitap(&args, "")
    };
    let o = learn_with("bad.toml", "[flow]\nmax_flows = \"many\"\n");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("max_flows"),
        "{err}"
    );

    let o = learn_with(
        "good.toml",
        "[secrets]\npseudonym_key = \"a-configured-key-of-enough-length\"\n",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !model.join("pseudonym.key").exists(),
        "the configured key is used, no key file made"
    );
    assert!(Model::load(&model).unwrap().counters.learned > 300);
}

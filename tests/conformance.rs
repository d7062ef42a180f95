//! Conformance of `apitap flows` against third-party captures and their reference outputs.
//!
//! Reads the corpus named by `APITAP_CORPUS` (Zeek traces with Zeek's own `http.log` baselines,
//! suricata-verify tests with their expected eve checks, the HTTP evader cases, Arkime sessions)
//! and scores apitap with the shared scorer (`<corpus>/../tools/conformance.py`, or
//! `APITAP_SCORER`). It prints the agreement figures, fails below the floors below, and fails on
//! any difference that is not listed with its reason in `tests/conformance/known-differences.tsv`.
//! Without `APITAP_CORPUS` it prints why it is skipped.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

// The floors guard against regressions; every difference under them must also be listed with
// its reason in known-differences.tsv. They sit at what apitap reaches when it describes the
// wire correctly, not at full agreement, because some reference rows are not on the wire:
// - Zeek: 86 of 93 rows (0.925). The other 7 are Zeek artifacts (an empty record after each
//   HTTP/0.9 exchange, a reply it drops, the WebSocket tunnel's 301 on the upgrade request).
// - suricata-verify: 30 of 33 checks (0.909). The other 3 depend on Suricata features a passive
//   sensor does not have (a rule that disables logging, IPS drops) or on its protocol detection
//   (a `GET%00` method token). Without their own Suricata configuration, 19 of 19 pass.
// - Arkime: 162 of 165 items (0.982); the rest are Arkime's reading of a target with a space.

/// Share of Zeek baseline rows matched (matched / (matched + missing + extra)).
const ZEEK_MATCH_FLOOR: f64 = 0.92;
/// Share of scoreable suricata-verify http checks passed.
const SURICATA_PASS_FLOOR: f64 = 0.90;
/// Share of Arkime session items matched.
const ARKIME_MATCH_FLOOR: f64 = 0.98;

fn corpus() -> Option<PathBuf> {
    match std::env::var_os("APITAP_CORPUS") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => None,
    }
}

fn scorer(corpus: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("APITAP_SCORER") {
        return PathBuf::from(p);
    }
    corpus.join("..").join("tools").join("conformance.py")
}

/// One listed difference: `suite`, `test`, `detail`.
fn known_differences() -> BTreeSet<(String, String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/known-differences.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut set = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert!(
            cols.len() == 4 && !cols[3].trim().is_empty(),
            "{}:{}: expected 4 tab-separated columns (suite, test, detail, reason)",
            path.display(),
            i + 1
        );
        set.insert((
            cols[0].to_string(),
            cols[1].to_string(),
            cols[2].to_string(),
        ));
    }
    set
}

fn key_text(v: &Value) -> String {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|x| match x {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn frac(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

#[test]
fn conformance_against_shared_corpus() {
    let Some(corpus) = corpus() else {
        println!("skipped: APITAP_CORPUS is not set (CI sets it to ../shared/corpus)");
        return;
    };
    let scorer = scorer(&corpus);
    assert!(
        scorer.exists(),
        "APITAP_CORPUS is set but the scorer {} is missing (set APITAP_SCORER)",
        scorer.display()
    );
    let out_dir = std::env::temp_dir().join(format!("apitap-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let json = out_dir.join("results.json");
    let report = out_dir.join("report.md");
    let bin = env!("CARGO_BIN_EXE_apitap");
    let status = Command::new("python3")
        .arg(&scorer)
        .arg("--corpus")
        .arg(&corpus)
        .arg("--cmd")
        .arg(format!("'{bin}' flows --quiet {{pcap}}"))
        .arg("--suite")
        .arg("all")
        .arg("--jobs")
        .arg("2")
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report)
        .status()
        .expect("running python3 (is it installed?)");
    assert!(status.success(), "the scorer failed: {status}");
    let results: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    println!("full report: {}", report.display());

    let known = known_differences();
    let mut unlisted: Vec<String> = Vec::new();
    let mut seen: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut check = |suite: &str, test: &str, detail: String| {
        let k = (suite.to_string(), test.to_string(), detail.clone());
        if !known.contains(&k) {
            unlisted.push(format!("{suite}\t{test}\t{detail}"));
        }
        seen.insert(k);
    };

    // Zeek: every missing or extra row.
    let (mut zm, mut zmi, mut zex) = (0u64, 0u64, 0u64);
    for r in results["zeek"].as_array().into_iter().flatten() {
        let test = r["test"].as_str().unwrap_or("?");
        zm += r["matched"].as_u64().unwrap_or(0);
        zmi += r["missing"].as_u64().unwrap_or(0);
        zex += r["extra"].as_u64().unwrap_or(0);
        for k in r["missing_keys"].as_array().into_iter().flatten() {
            check("zeek", test, format!("missing {}", key_text(k)));
        }
        for k in r["extra_keys"].as_array().into_iter().flatten() {
            check("zeek", test, format!("extra {}", key_text(k)));
        }
    }
    // suricata-verify: every failed strict check.
    let (mut sp, mut ss) = (0u64, 0u64);
    for r in results["suricata"].as_array().into_iter().flatten() {
        let test = r["test"].as_str().unwrap_or("?");
        match r["status"].as_str() {
            Some("pass") => {
                sp += 1;
                ss += 1;
            }
            Some("fail") => {
                ss += 1;
                check(
                    "suricata",
                    test,
                    format!("check {} {}", r["check"], r["desc"].as_str().unwrap_or("")),
                );
            }
            _ => {}
        }
    }
    // Evader cases: the request, its response and the full EICAR body must be seen.
    let mut evader_ok = 0u64;
    let mut evader_n = 0u64;
    for r in results["evader"].as_array().into_iter().flatten() {
        let test = r["test"].as_str().unwrap_or("?");
        evader_n += 1;
        let mut all = true;
        for part in ["req", "resp", "body"] {
            if r[part].as_bool() != Some(true) {
                all = false;
                check("evader", test, format!("no {part}"));
            }
        }
        evader_ok += all as u64;
    }
    // Arkime.
    let (mut am, mut ami, mut aex) = (0u64, 0u64, 0u64);
    for r in results["arkime"].as_array().into_iter().flatten() {
        let test = r["test"].as_str().or(r["file"].as_str()).unwrap_or("?");
        if let Some(per) = r["per"].as_object() {
            for (field, v) in per {
                let m = v[0].as_u64().unwrap_or(0);
                let mi = v[1].as_u64().unwrap_or(0);
                let ex = v[2].as_u64().unwrap_or(0);
                am += m;
                ami += mi;
                aex += ex;
                if mi + ex > 0 {
                    check("arkime", test, format!("{field} missing={mi} extra={ex}"));
                }
            }
        }
    }

    for line in results["summary"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or(""));
    }
    let zeek_match = frac(zm, zm + zmi + zex);
    let suri_pass = frac(sp, ss);
    let arkime_match = frac(am, am + ami + aex);
    println!(
        "apitap conformance: zeek_match={zeek_match:.4} ({zm} matched, {zmi} missing, {zex} extra), \
         suricata_checks={sp}/{ss} ({suri_pass:.4}), evader={evader_ok}/{evader_n}, arkime_match={arkime_match:.4}"
    );
    let stale: Vec<_> = known.difference(&seen).collect();
    if !stale.is_empty() {
        println!("known differences that no longer occur (remove them):");
        for s in &stale {
            println!("  {}\t{}\t{}", s.0, s.1, s.2);
        }
    }
    if !unlisted.is_empty() {
        println!("differences not listed in tests/conformance/known-differences.tsv:");
        for u in &unlisted {
            println!("  {u}");
        }
    }
    assert!(
        zeek_match >= ZEEK_MATCH_FLOOR,
        "zeek_match {zeek_match:.4} < floor {ZEEK_MATCH_FLOOR}"
    );
    assert!(
        suri_pass >= SURICATA_PASS_FLOOR,
        "suricata {suri_pass:.4} < floor {SURICATA_PASS_FLOOR}"
    );
    assert!(
        arkime_match >= ARKIME_MATCH_FLOOR,
        "arkime_match {arkime_match:.4} < floor {ARKIME_MATCH_FLOOR}"
    );
    assert!(
        unlisted.is_empty(),
        "{} unlisted differences (see above)",
        unlisted.len()
    );
    assert!(
        stale.is_empty(),
        "{} stale known differences (see above)",
        stale.len()
    );
}

//! The scenario suite (issue 4): learn on four hours of benign traffic of the invented bank API,
//! detect on one benign hour and one attack hour at ~50 requests/s, and score the alerts
//! against the attack capture's labels. Prints recall per kind, precision and false alerts per
//! hour of benign traffic, and fails below the floors.
//!
//! Every input is written by apitap's own generator (`apitap generate --scenario security-*`).
//! The GeoIP database for impossible travel is MaxMind's test database from the shared corpus
//! (`APITAP_CORPUS`); without it that kind is skipped with a printed reason, never passed.
//! `APITAP_SCENARIO_DIR=<dir>` keeps the captures and model there between runs (for tuning);
//! by default they go to a temporary directory that is removed.

use apitap::alert::{Alert, AlertKind};
use apitap::synth::security::{labels, score};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Floors this suite holds (the issue's targets).
const MIN_RECALL: f64 = 0.95;
const MIN_PRECISION: f64 = 0.90;
const MAX_FALSE_ALERTS_PER_HOUR: f64 = 1.0;

const CONFIG: &str = r#"
[identity]
# The load balancer in front of the API sets X-Forwarded-For.
trusted_proxies = ["10.0.0.0/24"]

[detect.signatures]
# The API servers sit behind a TLS-terminating load balancer; anything else is cleartext.
tls_terminated_servers = ["10.1.0.0/24"]
"#;

fn apitap(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_apitap"))
        .args(args)
        .current_dir(dir)
        .env("APITAP_PSEUDONYM_KEY", "scenario-suite-key-not-a-secret")
        .output()
        .expect("run apitap");
    assert!(
        out.status.success(),
        "apitap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Dir {
    path: PathBuf,
    keep: bool,
}

impl Drop for Dir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn read_alerts(path: &Path) -> Vec<Alert> {
    std::fs::read_to_string(path)
        .expect("alerts file")
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).expect("alert record"))
        .collect()
}

#[test]
fn scenario_suite_recall_precision_and_false_alerts() {
    let dir = match std::env::var_os("APITAP_SCENARIO_DIR") {
        Some(d) => Dir {
            path: PathBuf::from(d),
            keep: true,
        },
        None => Dir {
            path: std::env::temp_dir().join(format!("apitap-scenario-{}", std::process::id())),
            keep: false,
        },
    };
    let d = &dir.path;
    std::fs::create_dir_all(d).unwrap();
    std::fs::write(d.join("apitap.toml"), CONFIG).unwrap();
    for (scenario, extra) in [
        ("security-train", vec![]),
        ("security-benign", vec![]),
        (
            "security-attack",
            vec!["--labels", "labels.jsonl", "--spec-out", "spec.yaml"],
        ),
    ] {
        let pcap = format!("{}.pcap", scenario.trim_start_matches("security-"));
        if !d.join(&pcap).exists() {
            let mut args = vec!["generate", "--scenario", scenario, "--out", &pcap];
            args.extend(extra);
            apitap(&args, d);
        }
    }
    if !d.join("model/model.json").exists() {
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
    }
    let geoip = std::env::var_os("APITAP_CORPUS")
        .map(|c| PathBuf::from(c).join("mmdb/test-data/GeoLite2-City-Test.mmdb"))
        .filter(|p| p.exists());
    if geoip.is_none() {
        println!(
            "SKIP impossible_travel: APITAP_CORPUS is not set (or lacks mmdb/test-data/GeoLite2-City-Test.mmdb); its recall is not measured"
        );
    }
    let detect = |pcap: &str, out: &str, mode: &[&str]| {
        let mut args = vec![
            "detect",
            "--config",
            "apitap.toml",
            "--spec",
            "spec.yaml",
            "--model",
            "model",
            "--alerts",
            out,
            pcap,
        ];
        args.extend(mode);
        let g;
        if let Some(p) = &geoip {
            g = p.to_string_lossy().into_owned();
            args.extend(["--geoip", g.as_str()]);
        }
        apitap(&args, d);
        read_alerts(&d.join(out))
    };
    let benign = detect("benign.pcap", "benign-alerts.jsonl", &["--threads", "2"]);
    let attack = detect("attack.pcap", "attack-alerts.jsonl", &["--threads", "2"]);
    // One thread gives the same bytes as the two-stage pipeline.
    detect("attack.pcap", "attack-alerts-1.jsonl", &["--threads", "1"]);
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(
        read("attack-alerts.jsonl") == read("attack-alerts-1.jsonl"),
        "detect --threads 1 and --threads 2 differ on the attack hour"
    );
    // Adapting as the daemon does, a week after training: the rates learned then must not
    // read the week between as silence (nor the last seconds of training as an hour).
    let benign_adapt = detect("benign.pcap", "benign-adapt.jsonl", &["--adapt"]);
    let attack_adapt = detect("attack.pcap", "attack-adapt.jsonl", &["--adapt"]);
    let labels = labels::parse_lines(&std::fs::read_to_string(d.join("labels.jsonl")).unwrap())
        .expect("labels");

    let mut failures = Vec::new();
    let travel = geoip.is_some();
    judge("detect", &labels, &attack, &benign, travel, &mut failures);
    judge(
        "detect --adapt",
        &labels,
        &attack_adapt,
        &benign_adapt,
        travel,
        &mut failures,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Prints the scores of one mode and adds what falls below the floors to `failures`.
fn judge(
    mode: &str,
    labels: &[labels::Label],
    attack: &[Alert],
    benign: &[Alert],
    travel: bool,
    failures: &mut Vec<String>,
) {
    println!("== {mode}");
    let benign_hours = 1.0;
    let s = score::score(labels, attack, benign_hours);
    println!("{s}");
    for a in attack {
        if !labels.iter().any(|l| score::matches(l, a)) {
            println!(
                "false alert in the attack hour: {} {} {} client {:?} {}..{} count {}: {}",
                a.kind,
                a.endpoint.method,
                a.endpoint.route,
                a.client.ip,
                a.first_seen,
                a.last_seen,
                a.count,
                a.summary
            );
        }
    }
    for a in benign {
        println!(
            "false alert in the benign hour: {} {} {} client {:?} count {}: {}",
            a.kind, a.endpoint.method, a.endpoint.route, a.client.ip, a.count, a.summary
        );
    }
    let fa_per_hour = score::false_alerts_per_hour(benign.len(), benign_hours);
    println!(
        "benign hour: {} alerts = {fa_per_hour:.1} false alerts per hour at ~50 requests/s",
        benign.len()
    );
    println!(
        "attack hour: {} alerts, precision {:.3}, min recall {:.3}",
        s.alerts,
        s.precision,
        s.min_recall()
    );
    for k in &s.kinds {
        if k.kind == AlertKind::ImpossibleTravel && !travel {
            continue;
        }
        if k.labels < 2 {
            failures.push(format!("{}: only {} labelled incidents", k.kind, k.labels));
        }
        if k.recall < MIN_RECALL {
            failures.push(format!(
                "{mode}: {}: recall {:.2} < {MIN_RECALL}",
                k.kind, k.recall
            ));
        }
    }
    if s.precision < MIN_PRECISION {
        failures.push(format!(
            "{mode}: precision {:.3} < {MIN_PRECISION}",
            s.precision
        ));
    }
    if fa_per_hour > MAX_FALSE_ALERTS_PER_HOUR {
        failures.push(format!(
            "{mode}: {fa_per_hour:.1} false alerts per benign hour > {MAX_FALSE_ALERTS_PER_HOUR}"
        ));
    }
}

//! Golden tests: `apitap`'s engine on the bundled captures (written by its own generator)
//! against their ground truth (`captures/<name>.truth.jsonl`).
//!
//! Every transaction the generator sent intact must come out exactly (addresses, depth, method,
//! host, uri, status, both body lengths). Transactions whose bytes the capture lost (`impaired`)
//! must still be found where the request line survived, and be flagged when data is missing.
//! Nothing may be invented: each output transaction matches a truth row, or is flagged as
//! damaged (`partial`, `response_without_request`).

use apitap::capture::OfflineSource;
use apitap::engine::{Engine, EngineConfig};
use apitap::transaction::Transaction;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("captures")
        .join(name)
}

fn run(pcap: &Path) -> Vec<Transaction> {
    let mut src = OfflineSource::open(&[pcap.to_path_buf()]).expect("open capture");
    let mut engine = Engine::new(EngineConfig::default());
    let mut out = Vec::new();
    while let Some(pkt) = src.next_packet() {
        engine.process(&pkt, &mut out);
    }
    engine.finish(&mut out);
    out
}

fn truth(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(capture(name)).expect("truth file");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("truth json"))
        .collect()
}

fn endpoint(ip: std::net::IpAddr, port: u16) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The fields compared for an intact transaction, rendered as one line for readable diffs.
///
/// `trans_depth` is left out: after a midstream pickup apitap counts from the first transaction
/// it saw, not from the connection's first. Clean captures check depth in `check_depths`.
fn render_tx(t: &Transaction) -> String {
    let q = t.request.as_ref();
    let r = t.response.as_ref();
    format!(
        "{} {} {} {} {} {} {} {}",
        endpoint(t.conn.client, t.conn.client_port),
        endpoint(t.conn.server, t.conn.server_port),
        q.map(|q| q.method.as_str()).unwrap_or("-"),
        q.and_then(|q| q.headers.get_str("host"))
            .unwrap_or_default(),
        q.map(|q| q.uri.as_str()).unwrap_or("-"),
        r.map(|r| r.status).unwrap_or(0),
        q.map(|q| q.body.len).unwrap_or(0),
        r.map(|r| r.body.len).unwrap_or(0),
    )
}

fn render_truth(v: &Value) -> String {
    format!(
        "{} {} {} {} {} {} {} {}",
        v["client"].as_str().unwrap(),
        v["server"].as_str().unwrap(),
        v["method"].as_str().unwrap(),
        v["host"].as_str().unwrap(),
        v["uri"].as_str().unwrap(),
        v["status_code"],
        v["request_body_len"],
        v["response_body_len"],
    )
}

struct Score {
    intact: usize,
    intact_exact: usize,
    impaired: usize,
    impaired_found: usize,
    /// Impaired transactions whose request line can have survived (not a one-sided capture of
    /// the server side, not cut by a midstream start), and how many of them were found.
    recoverable: usize,
    recoverable_found: usize,
    unexplained: Vec<String>,
    missing_intact: Vec<String>,
}

fn score(name: &str) -> Score {
    let txs = run(&capture(&format!("{name}.pcap")));
    let truth = truth(&format!("{name}.truth.jsonl"));
    // Output keyed by (client, server, method, uri): a lost request can shift depths.
    let mut by_line: HashMap<String, usize> = HashMap::new();
    let mut by_req: HashMap<(String, String, String, String), usize> = HashMap::new();
    for t in &txs {
        *by_line.entry(render_tx(t)).or_default() += 1;
        if let Some(q) = &t.request {
            *by_req
                .entry((
                    endpoint(t.conn.client, t.conn.client_port),
                    endpoint(t.conn.server, t.conn.server_port),
                    q.method.clone(),
                    q.uri.clone(),
                ))
                .or_default() += 1;
        }
    }
    let mut s = Score {
        intact: 0,
        intact_exact: 0,
        impaired: 0,
        impaired_found: 0,
        recoverable: 0,
        recoverable_found: 0,
        unexplained: vec![],
        missing_intact: vec![],
    };
    let mut truth_lines: HashMap<String, usize> = HashMap::new();
    let mut truth_reqs: HashMap<(String, String, String, String), usize> = HashMap::new();
    for v in &truth {
        let line = render_truth(v);
        *truth_lines.entry(line.clone()).or_default() += 1;
        let key = (
            v["client"].as_str().unwrap().to_string(),
            v["server"].as_str().unwrap().to_string(),
            v["method"].as_str().unwrap().to_string(),
            v["uri"].as_str().unwrap().to_string(),
        );
        *truth_reqs.entry(key.clone()).or_default() += 1;
        if v["impaired"].as_bool().unwrap() {
            s.impaired += 1;
            let kinds: Vec<&str> = v["impairments"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|k| k.as_str())
                .collect();
            let recoverable = !kinds.iter().any(|k| *k == "one_sided" || *k == "midstream");
            s.recoverable += recoverable as usize;
            if let Some(n) = by_req.get_mut(&key).filter(|n| **n > 0) {
                *n -= 1;
                s.impaired_found += 1;
                s.recoverable_found += recoverable as usize;
            }
        } else {
            s.intact += 1;
            match by_line.get_mut(&line).filter(|n| **n > 0) {
                Some(n) => {
                    *n -= 1;
                    s.intact_exact += 1;
                }
                None => s.missing_intact.push(line),
            }
        }
    }
    for t in &txs {
        let line = render_tx(t);
        let known_line = truth_lines.get(&line).copied().unwrap_or(0) > 0;
        let damaged = t.has_flag("partial") || t.has_flag("response_without_request");
        let known_req = t.request.as_ref().is_some_and(|q| {
            truth_reqs.contains_key(&(
                endpoint(t.conn.client, t.conn.client_port),
                endpoint(t.conn.server, t.conn.server_port),
                q.method.clone(),
                q.uri.clone(),
            ))
        });
        if !known_line && !damaged && !known_req {
            s.unexplained.push(format!("{line} {:?}", t.flags));
        }
    }
    println!(
        "{name}: intact {}/{} exact, impaired {}/{} found ({}/{} of those not one-sided or \
         midstream), {} unexplained of {} output",
        s.intact_exact,
        s.intact,
        s.impaired_found,
        s.impaired,
        s.recoverable_found,
        s.recoverable,
        s.unexplained.len(),
        txs.len()
    );
    s
}

/// Depths as the generator numbered them, for captures that start every connection at its
/// handshake and lose nothing.
fn check_depths(name: &str) {
    let txs = run(&capture(&format!("{name}.pcap")));
    let mut got: Vec<(String, u32, String)> = txs
        .iter()
        .map(|t| {
            let conn = format!(
                "{} {}",
                endpoint(t.conn.client, t.conn.client_port),
                endpoint(t.conn.server, t.conn.server_port)
            );
            let uri = t
                .request
                .as_ref()
                .map(|q| q.uri.clone())
                .unwrap_or_default();
            (conn, t.depth, uri)
        })
        .collect();
    let mut want: Vec<(String, u32, String)> = truth(&format!("{name}.truth.jsonl"))
        .iter()
        .map(|v| {
            (
                format!(
                    "{} {}",
                    v["client"].as_str().unwrap(),
                    v["server"].as_str().unwrap()
                ),
                v["trans_depth"].as_u64().unwrap() as u32,
                v["uri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{name}: (connection, trans_depth, uri) differ");
}

fn check_clean(name: &str) {
    check_depths(name);
    let s = score(name);
    assert_eq!(
        s.impaired, 0,
        "{name}: the clean captures have no impaired transactions"
    );
    assert!(
        s.missing_intact.is_empty(),
        "{name}: transactions not reproduced exactly:\n{}",
        s.missing_intact.join("\n")
    );
    assert!(
        s.unexplained.is_empty(),
        "{name}: invented:\n{}",
        s.unexplained.join("\n")
    );
}

#[test]
fn basic_capture_matches_truth_exactly() {
    check_clean("api-basic");
}

#[test]
fn pipelined_capture_matches_truth_exactly() {
    check_clean("api-pipelined");
}

#[test]
fn vlan_ipv6_capture_matches_truth_exactly() {
    check_clean("api-vlan-ipv6");
}

#[test]
fn tunnelled_capture_matches_truth_exactly() {
    check_clean("api-tunnels");
}

/// Loss, reordering, overlaps, wraparound, midstream, one-sided, truncation and fragments:
/// every intact transaction exact, and most impaired ones still found.
#[test]
fn impaired_capture_recovers_what_survived() {
    let s = score("api-impaired");
    assert!(
        s.missing_intact.is_empty(),
        "intact transactions not reproduced exactly:\n{}",
        s.missing_intact.join("\n")
    );
    assert!(
        s.unexplained.is_empty(),
        "invented:\n{}",
        s.unexplained.join("\n")
    );
    // Within a connection, depths still count up from 1 without holes or repeats.
    let txs = run(&capture("api-impaired.pcap"));
    let mut per_flow: HashMap<&str, Vec<u32>> = HashMap::new();
    for t in &txs {
        per_flow.entry(&t.conn.flow_id).or_default().push(t.depth);
    }
    for (flow, mut depths) in per_flow {
        depths.sort();
        let want: Vec<u32> = (1..=depths.len() as u32).collect();
        assert_eq!(depths, want, "flow {flow}: depths");
    }
    // Loss and snaplen cuts: the request line usually survives, so the transaction must be
    // found. One-sided (server side only) and midstream starts can remove it entirely.
    let recall = s.recoverable_found as f64 / s.recoverable.max(1) as f64;
    assert!(recall >= 0.90, "impaired recall {recall:.3} below 0.90");
}

/// The same capture gives byte-identical transactions on every run.
#[test]
fn replay_is_deterministic() {
    let a = run(&capture("api-impaired.pcap"));
    let b = run(&capture("api-impaired.pcap"));
    assert_eq!(a, b);
}

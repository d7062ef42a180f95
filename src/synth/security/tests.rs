//! Tests of the security scenario suite: the API model, the incident plan, the capture.

use super::bank::{rate_rps, Bank, Role, GEO_HOMES, USERS};
use super::*;
use crate::alert::AlertKind;
use crate::inventory::spec::Spec;
use std::collections::{BTreeMap, BTreeSet};

fn capture(opts: &SecurityOptions) -> (Vec<u8>, Vec<Label>, SecuritySummary) {
    let mut pcap = Vec::new();
    let mut labels = Vec::new();
    let sum = generate(opts, &mut pcap, Some(&mut labels)).unwrap();
    let labels = labels::parse_lines(std::str::from_utf8(&labels).unwrap()).unwrap();
    (pcap, labels, sum)
}

/// Request lines (`METHOD target`) of every request in a capture, parsed back out of the
/// packets with the synth oracle.
fn request_lines(pcap: &[u8]) -> Vec<String> {
    use crate::synth::oracle::{self, Decoder};
    let (_, recs) = crate::synth::pcap_writer::read_pcap(pcap).unwrap();
    assert!(
        recs.windows(2).all(|w| w[0].ts <= w[1].ts),
        "time never goes back"
    );
    let mut d = Decoder::default();
    let segs: Vec<oracle::Seg> = recs.iter().filter_map(|r| d.frame(&r.data)).collect();
    let mut out = Vec::new();
    for c in oracle::connections(&segs, &[80]) {
        for r in oracle::parse_requests(&c.prefix(0)) {
            out.push(format!("{} {}", r.method, r.uri));
        }
    }
    out
}

#[test]
fn callers_are_many_disjoint_and_some_are_geolocatable() {
    let bank = Bank::new(1);
    assert!(bank.users.len() >= 3_000);
    assert_eq!(bank.partners.len(), 20);
    let mut accounts = BTreeSet::new();
    for u in &bank.users {
        for a in &u.accounts {
            assert!(accounts.insert(*a), "account {a} owned twice");
        }
    }
    let roles: BTreeMap<&str, usize> = bank.users.iter().fold(BTreeMap::new(), |mut m, u| {
        *m.entry(u.role.name()).or_default() += 1;
        m
    });
    assert!(
        roles["customer"] > 2_800 && roles["admin"] < 50 && roles["support"] < 100,
        "{roles:?}"
    );
    let geo = bank
        .users
        .iter()
        .filter(|u| GEO_HOMES.iter().any(|g| u.home == std::net::IpAddr::V4(*g)))
        .count();
    assert!(geo >= 100, "{geo}");
    // The token decodes to the claims the identity stage reads, valid at the time of use.
    let u = &bank.users[102];
    assert_eq!(u.role, Role::Admin);
    let now = Timestamp::from_secs_nanos(SecurityScenario::Benign.start_secs() as i64 + 1_800, 0);
    let tok = bank.jwt(u, now);
    let payload = tok.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&b64url_decode(payload)).unwrap();
    assert_eq!(claims["sub"], "u-102");
    assert_eq!(claims["role"], "admin");
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(iat <= now.secs() && now.secs() < exp);
}

#[test]
fn rate_curve_is_smooth_peaks_mid_day_and_averages_50_from_10_to_11() {
    let mean: f64 = (0..60)
        .map(|m| rate_rps(10.0 + (m as f64 + 0.5) / 60.0))
        .sum::<f64>()
        / 60.0;
    assert!((mean - 50.0).abs() < 2.0, "{mean}");
    let peak = (0..240)
        .map(|i| i as f64 / 10.0)
        .max_by(|a, b| rate_rps(*a).total_cmp(&rate_rps(*b)))
        .unwrap();
    assert!((12.0..=14.0).contains(&peak), "{peak}");
    for i in 0..240 {
        let h = i as f64 / 10.0;
        assert!(
            (rate_rps(h + 0.1) - rate_rps(h)).abs() < 2.0,
            "smooth at {h}"
        );
    }
}

#[test]
fn benign_traffic_runs_near_50_requests_a_second_on_the_documented_routes() {
    let opts = SecurityOptions::new(SecurityScenario::Benign, 3);
    let (start, _) = opts.window();
    let bank = Bank::new(3);
    // Five minutes of sessions, planned without rendering packets.
    let end = start.add(Duration::from_secs(300));
    let mut bg = bank::Background::new(&bank, &opts, start, end, vec![]);
    let (mut requests, mut users) = (0usize, BTreeSet::new());
    while let Some(s) = bg.next_session() {
        requests += s.exchanges.len();
        for e in &s.exchanges {
            let text = String::from_utf8_lossy(&e.request);
            if let Some(x) = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Forwarded-For: "))
            {
                users.insert(x.to_string());
            }
            assert!(
                !text.contains("/api/v0/"),
                "benign traffic avoids the deprecated route"
            );
        }
    }
    let rps = requests as f64 / 300.0;
    assert!((45.0..55.0).contains(&rps), "{rps} requests/s");
    assert!(users.len() > 1_000, "{} client addresses", users.len());
}

#[test]
fn every_kind_has_two_labelled_incidents_inside_the_hour_without_overlap() {
    let bank = Bank::new(1);
    let opts = SecurityOptions::new(SecurityScenario::Attack, 1);
    let (start, end) = opts.window();
    let plan = attacks::plan(&bank, 1, start);
    for kind in AlertKind::ALL {
        let n = plan.labels.iter().filter(|l| l.kind == kind).count();
        assert!(n >= 2, "{kind}: {n} incidents");
    }
    let mut spans: Vec<(Timestamp, Timestamp)> =
        plan.labels.iter().map(|l| (l.start, l.end)).collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 < w[1].0),
        "incidents overlap"
    );
    for l in &plan.labels {
        assert!(
            start <= l.start && l.start <= l.end && l.end <= end,
            "{} outside the capture",
            l.id
        );
        assert!(
            l.end.saturating_since(l.start) <= Duration::from_secs(125),
            "{} too long",
            l.id
        );
        assert_eq!(l.host, HOST);
    }
    let ids: BTreeSet<&str> = plan.labels.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids.len(), plan.labels.len());
    // Every request of a session falls inside its incident's label.
    for s in &plan.sessions {
        let last = s.last_request_at();
        assert!(
            plan.labels
                .iter()
                .any(|l| l.start.as_nanos() <= s.start.as_nanos() + 10_000_000 && last <= l.end),
            "session at {:?} unlabelled",
            s.start
        );
    }
    // Labelled routes are the spec's (shadow routes excepted), so scoring can compare them.
    let spec = Spec::parse(spec::SPEC_YAML, "spec").unwrap();
    for l in &plan.labels {
        if let (Some(m), Some(r)) = (&l.method, &l.route) {
            let documented = spec
                .operations
                .iter()
                .any(|o| &o.method == m && &o.path == r);
            let shadow = l.kind == AlertKind::ShadowEndpoint || l.id == "secret_in_url-3";
            assert!(documented != shadow, "{}: {m} {r}", l.id);
        }
    }
}

#[test]
fn spec_documents_the_api_marks_v0_deprecated_and_omits_shadow_routes() {
    let spec = Spec::parse(spec::SPEC_YAML, "spec").unwrap();
    assert!(spec.operations.len() >= 16, "{}", spec.operations.len());
    let v0 = spec
        .operations
        .iter()
        .find(|o| o.path == "/api/v0/accounts/{accountId}")
        .unwrap();
    assert!(v0.deprecated);
    assert_eq!(spec.operations.iter().filter(|o| o.deprecated).count(), 1);
    assert!(spec
        .operations
        .iter()
        .all(|o| !o.path.contains("internal") && !o.path.contains("/v2/")));
    let transfer = spec
        .operations
        .iter()
        .find(|o| o.path == "/api/v1/transfers")
        .unwrap();
    assert!(
        transfer.request_fields.iter().any(|f| f == "$.amount"),
        "{:?}",
        transfer.request_fields
    );
}

#[test]
fn attack_capture_carries_every_incident_and_parses_back() {
    let mut opts = SecurityOptions::new(SecurityScenario::Attack, 7);
    opts.benign_rate_scale = 0.002;
    let (pcap, labels, sum) = capture(&opts);
    assert_eq!(sum.incidents as usize, labels.len());
    assert!(sum.attack_transactions > 4_000, "{sum:?}");
    let lines = request_lines(&pcap);
    // The smuggling requests confuse a plain parser on purpose; everything else parses.
    assert!(
        lines.len() as u64 + 10 >= sum.transactions,
        "{} of {}",
        lines.len(),
        sum.transactions
    );
    for needle in [
        "GET /.env",
        "GET /api/v0/accounts/",
        "POST /graphql",
        "DELETE /api/v1/admin/users/",
        "GET /api/v1/internal/debug/config",
        "api_key=sk_live_",
    ] {
        assert!(lines.iter().any(|l| l.contains(needle)), "{needle}");
    }
    let text = String::from_utf8_lossy(&pcap);
    assert!(text.contains("Transfer-Encoding: chunked"));
    assert!(text.contains("Authorization: Basic "));
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let mut opts = SecurityOptions::new(SecurityScenario::Benign, 5);
    opts.hours = Some(20.0 / 3_600.0);
    let a = capture(&opts);
    let b = capture(&opts);
    assert!(a.2.transactions > 500, "{:?}", a.2);
    assert_eq!(a.0, b.0);
    assert!(a.1.is_empty(), "benign captures have no labels");
    opts.seed = 6;
    assert_ne!(capture(&opts).0, a.0);
    let lines = request_lines(&a.0);
    assert_eq!(lines.len() as u64, a.2.transactions);
}

#[test]
fn luhn_numbers_are_valid_and_scenario_names_round_trip() {
    let mut r = crate::synth::rng::Rng::new(3);
    for _ in 0..100 {
        let pan = attacks::luhn_pan(&mut r, "4532");
        assert_eq!(pan.len(), 16);
        assert!(attacks::luhn_valid(&pan), "{pan}");
    }
    assert!(attacks::luhn_valid("4111111111111111"));
    assert!(!attacks::luhn_valid("4111111111111112"));
    for s in SecurityScenario::ALL {
        assert_eq!(SecurityScenario::from_name(s.name()), Some(s));
    }
    assert_eq!(USERS, 3_200);
}

/// A plain base64url decoder (no padding), independent of the one in the identity stage.
fn b64url_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let vals: Vec<u32> = s
        .bytes()
        .map(|c| A.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for c in vals.chunks(4) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..c.len()]);
    }
    out
}

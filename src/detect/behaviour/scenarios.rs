//! Scenario tests of the behaviour detectors through the whole engine: a model is learned from
//! four hours of benign bank-API traffic, then each attack shape and its closest benign
//! look-alike run through [`DetectEngine`], and the alerts (one per incident) are checked.

use crate::alert::{Alert, AlertKind};
use crate::common::Timestamp;
use crate::detect::{DetectConfig, DetectEngine, DetectEnv};
use crate::identity::{IdentityConfig, IdentityExtractor};
use crate::inventory::template::{RouteConfig, RouteLearner};
use crate::model::learn::{LearnConfig, Learner};
use crate::model::Model;
use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response, Transaction};
use std::collections::BTreeMap;
use std::net::IpAddr;

const KEY: &[u8] = b"behaviour-scenario-key-0123456789";
/// Monday 2026-01-05 08:00 UTC: training starts.
const TRAIN: u64 = 1_767_600_000;
/// Monday 2026-01-12 10:00 UTC: detection starts.
const DETECT: u64 = 1_768_212_000;
const HOST: &str = "api.bank.example";
const USERS: u64 = 60;

/// One call: at `ms` milliseconds after the epoch, from `ip`, with bearer `token`.
struct Call<'a> {
    ms: u64,
    ip: IpAddr,
    token: Option<&'a str>,
    method: &'a str,
    uri: &'a str,
    status: u16,
    req: &'a str,
    resp: &'a str,
}

fn body(s: &str) -> Body {
    Body {
        data: s.as_bytes().to_vec(),
        len: s.len() as u64,
        wire_len: s.len() as u64,
        truncated: false,
    }
}

fn tx(c: Call<'_>) -> Transaction {
    let start = Timestamp::from_nanos(c.ms * 1_000_000);
    let mut h = Headers::new();
    h.push(b"Host", HOST.as_bytes());
    if let Some(t) = c.token {
        h.push(b"Authorization", format!("Bearer {t}").as_bytes());
    }
    if !c.req.is_empty() {
        h.push(b"Content-Type", b"application/json");
    }
    let mut rh = Headers::new();
    if !c.resp.is_empty() {
        rh.push(b"Content-Type", b"application/json");
    }
    Transaction {
        conn: ConnInfo {
            flow_id: format!("f{}", c.ms),
            client: c.ip,
            client_port: 40_000,
            server: IpAddr::from([10, 1, 0, 1]),
            server_port: 80,
            vlan: None,
        },
        depth: 1,
        request: Some(Request {
            method: c.method.into(),
            uri: c.uri.into(),
            version: HttpVersion::Http11,
            headers: h,
            body: body(c.req),
            start,
            end: start,
        }),
        response: Some(Response {
            status: c.status,
            reason: String::new(),
            version: HttpVersion::Http11,
            headers: rh,
            body: body(c.resp),
            interim: vec![],
            start,
            end: start,
        }),
        flags: vec![],
    }
}

fn user_ip(u: u64) -> IpAddr {
    IpAddr::from([10, 20, (u / 250) as u8, (u % 250) as u8 + 1])
}

fn token(u: u64) -> String {
    format!("tok-user-{u:04}")
}

/// The two accounts user `u` owns.
fn accounts(u: u64) -> [u64; 2] {
    [100_000 + u * 10, 100_000 + u * 10 + 1]
}

fn get(ms: u64, ip: IpAddr, tok: Option<&str>, uri: &str, status: u16, resp: &str) -> Transaction {
    tx(Call {
        ms,
        ip,
        token: tok,
        method: "GET",
        uri,
        status,
        req: "",
        resp,
    })
}

fn login(ms: u64, ip: IpAddr, username: &str, status: u16) -> Transaction {
    let req = format!(r#"{{"username":"{username}","password":"not-the-point"}}"#);
    let resp = if status == 200 {
        r#"{"token":"eyJ..."}"#
    } else {
        r#"{"error":"invalid credentials"}"#
    };
    tx(Call {
        ms,
        ip,
        token: None,
        method: "POST",
        uri: "/api/v1/auth/login",
        status,
        req: &req,
        resp,
    })
}

/// One benign session of user `u` at `ms`: log in (every 20th attempt of the population
/// mistyped first), list own accounts, read one, browse products.
fn session(u: u64, round: u64, ms: u64, out: &mut Vec<Transaction>) {
    let ip = user_ip(u);
    let tok = token(u);
    let name = format!("user{u}@bank.example");
    if (u + round) % 20 == 0 {
        out.push(login(ms, ip, &name, 401));
    }
    out.push(login(ms + 300, ip, &name, 200));
    let [a, b] = accounts(u);
    let list = format!(r#"{{"accounts":[{{"accountId":"{a}"}},{{"accountId":"{b}"}}]}}"#);
    out.push(get(
        ms + 600,
        ip,
        Some(&tok),
        "/api/v1/accounts",
        200,
        &list,
    ));
    let own = if round % 2 == 0 { a } else { b };
    let detail = format!(r#"{{"accountId":"{own}","balance":12.5}}"#);
    out.push(get(
        ms + 900,
        ip,
        Some(&tok),
        &format!("/api/v1/accounts/{own}"),
        200,
        &detail,
    ));
    out.push(get(
        ms + 1200,
        ip,
        Some(&tok),
        &format!("/api/v1/products?page={}", round % 5),
        200,
        r#"{"items":[]}"#,
    ));
}

/// `minutes` of benign traffic from `start` (seconds): every user opens a session every four
/// minutes, staggered. A support agent reads many customers' accounts, as support does.
fn benign(start: u64, minutes: u64) -> Vec<Transaction> {
    let mut out = Vec::new();
    for round in 0..minutes / 4 {
        for u in 0..USERS {
            let ms = (start + round * 240) * 1000 + u * 3_900;
            session(u, round, ms, &mut out);
        }
        // The support agent: three customers' accounts per round.
        for k in 0..3 {
            let customer = (round * 3 + k) % USERS;
            let acct = accounts(customer)[0];
            out.push(get(
                (start + round * 240 + 100 + k * 7) * 1000,
                IpAddr::from([10, 30, 0, 9]),
                Some("tok-support-01"),
                &format!("/api/v1/accounts/{acct}"),
                200,
                &format!(r#"{{"accountId":"{acct}"}}"#),
            ));
        }
    }
    out.sort_by_key(|t| t.ts());
    out
}

fn extractor() -> IdentityExtractor {
    IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap()
}

/// The model of four hours of benign traffic, learned once for all tests.
fn trained() -> Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL.get_or_init(learn_training).clone()
}

fn learn_training() -> Model {
    let model = Model::new("test", "k1", RouteLearner::new(RouteConfig::default()));
    let mut l = Learner::new(model, extractor(), LearnConfig::default());
    for t in benign(TRAIN, 240) {
        l.observe(&t);
    }
    l.finish()
}

/// Runs detection over `txs` (sorted here) and returns the last record of every incident of
/// `kind`, in id order.
fn detect(txs: Vec<Transaction>, env: DetectEnv, kind: AlertKind) -> Vec<Alert> {
    detect_with(txs, env, kind, DetectConfig::default())
}

fn detect_with(
    txs: Vec<Transaction>,
    env: DetectEnv,
    kind: AlertKind,
    cfg: DetectConfig,
) -> Vec<Alert> {
    let alerts = detect_records(txs, env, cfg);
    let mut last: BTreeMap<String, Alert> = BTreeMap::new();
    for a in alerts.into_iter().filter(|a| a.kind == kind) {
        last.insert(a.id.clone(), a);
    }
    last.into_values().collect()
}

/// Every alert record, opening and closing ones, in emission order.
fn detect_records(mut txs: Vec<Transaction>, env: DetectEnv, cfg: DetectConfig) -> Vec<Alert> {
    txs.sort_by_key(|t| t.ts());
    let mut engine = DetectEngine::new(trained(), extractor(), cfg, env).unwrap();
    let mut alerts = Vec::new();
    for t in &txs {
        engine.observe(t, &mut alerts);
    }
    engine.finish(&mut alerts);
    alerts
}

fn ev(a: &Alert, key: &str) -> serde_json::Value {
    a.evidence.get(key).cloned().unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// bola
// ------------------------------------------------------------------------------------------

/// User 7 walks `n` other users' accounts, one a second, from minute 10 of detection.
fn walk(n: u64, status: u16) -> Vec<Transaction> {
    (0..n)
        .map(|i| {
            let victim = (i + 8) % USERS;
            let acct = accounts(victim)[0];
            get(
                (DETECT + 600 + i) * 1000 + 500,
                user_ip(7),
                Some(&token(7)),
                &format!("/api/v1/accounts/{acct}"),
                status,
                &format!(r#"{{"accountId":"{acct}","balance":99.0}}"#),
            )
        })
        .collect()
}

#[test]
fn bola_fires_on_a_walk_over_other_users_accounts_with_foreign_objects() {
    let mut txs = benign(DETECT, 20);
    txs.extend(walk(35, 200));
    let alerts = detect(txs, DetectEnv::default(), AlertKind::Bola);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.endpoint.route, "/api/v1/accounts/{id}");
    assert_eq!(a.client.ip, Some(user_ip(7)));
    assert!(ev(a, "distinct_objects").as_u64().unwrap() >= 20);
    // The victims listed their accounts during the first ten minutes: the walk reads
    // objects owned by others.
    assert!(ev(a, "foreign_objects").as_u64().unwrap() >= 20, "{a:#?}");
    assert_eq!(ev(a, "sample_ids").as_array().unwrap().len(), 10);
    // One finding per offending call from the threshold on, folded into one incident.
    assert!(a.count >= 10, "{}", a.count);
}

#[test]
fn bola_stays_quiet_below_the_floor_on_failures_and_for_a_support_agent() {
    // 15 accounts: below the floor of 20.
    let mut txs = benign(DETECT, 20);
    txs.extend(walk(15, 200));
    assert!(detect(txs, DetectEnv::default(), AlertKind::Bola).is_empty());
    // 35 attempts answered 404: not reached, not bola (recon's or nobody's business).
    let mut txs = benign(DETECT, 20);
    txs.extend(walk(35, 404));
    assert!(detect(txs, DetectEnv::default(), AlertKind::Bola).is_empty());
    // The support agent learned 60 customers' accounts; reading 40 in a burst is its normal.
    let mut txs = benign(DETECT, 20);
    txs.extend((0..40).map(|i| {
        let acct = accounts(i % USERS)[0];
        get(
            (DETECT + 600 + i) * 1000 + 700,
            IpAddr::from([10, 30, 0, 9]),
            Some("tok-support-01"),
            &format!("/api/v1/accounts/{acct}"),
            200,
            "{}",
        )
    }));
    assert!(detect(txs, DetectEnv::default(), AlertKind::Bola).is_empty());
}

#[test]
fn bola_threshold_follows_the_floor_setting() {
    let mut cfg = DetectConfig::default();
    cfg.behaviour.bola.min_distinct_objects = 10;
    let mut txs = benign(DETECT, 20);
    txs.extend(walk(15, 200));
    let alerts = detect_with(txs, DetectEnv::default(), AlertKind::Bola, cfg);
    assert_eq!(alerts.len(), 1);
    assert_eq!(ev(&alerts[0], "threshold"), 10, "{:?}", alerts[0].evidence);
}

// ------------------------------------------------------------------------------------------
// auth_bruteforce
// ------------------------------------------------------------------------------------------

#[test]
fn bruteforce_fires_per_client_on_a_spray_over_many_usernames() {
    let mut txs = benign(DETECT, 20);
    let attacker = IpAddr::from([198, 51, 100, 23]);
    txs.extend((0..50).map(|i| {
        login(
            (DETECT + 600) * 1000 + i * 1100 + 50,
            attacker,
            &format!("victim{i}@bank.example"),
            401,
        )
    }));
    let alerts = detect(txs, DetectEnv::default(), AlertKind::AuthBruteforce);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.client.ip, Some(attacker));
    assert_eq!(ev(a, "view"), "client");
    assert_eq!(ev(a, "distinct_usernames"), 50);
    assert!(a.count >= 30);
    let text = serde_json::to_string(a).unwrap();
    assert!(!text.contains("victim"), "no raw username: {text}");
}

#[test]
fn bruteforce_fires_per_username_on_a_distributed_attack() {
    let mut txs = benign(DETECT, 20);
    // 30 addresses, two attempts each, one account.
    txs.extend((0..60).map(|i| {
        login(
            (DETECT + 600) * 1000 + i * 900 + 70,
            IpAddr::from([203, 0, 113, (i / 2) as u8 + 1]),
            "Alice.Target@bank.example",
            401,
        )
    }));
    let alerts = detect_records(txs, DetectEnv::default(), DetectConfig::default());
    let records: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::AuthBruteforce)
        .collect();
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|a| a.id == records[0].id),
        "one incident"
    );
    // It opens on the username view; while the window still holds the burst, the endpoint's
    // failure count is far above its learned ratio too, and later failures fold in.
    let a = records[0];
    assert_eq!(a.client.ip, None, "an endpoint-scope incident");
    assert_eq!(a.endpoint.route, "/api/v1/auth/login");
    assert_eq!(ev(a, "view"), "username");
    // The account is shown as the keyed pseudonym Basic credentials of that name would get.
    let name = "alice.target@bank.example";
    let want = extractor().username_pseudonym(name.as_bytes());
    assert_eq!(ev(a, "username"), want.as_str());
    assert!(want.as_str().starts_with("u:"));
    let text = serde_json::to_string(a).unwrap();
    assert!(!text.to_lowercase().contains("target"), "{text}");
}

#[test]
fn bruteforce_fires_on_the_endpoint_when_failures_come_from_everywhere() {
    let mut txs = benign(DETECT, 20);
    // 60 addresses, one failure each, each on a different username: neither one client nor
    // one account stands out, the endpoint does.
    txs.extend((0..60).map(|i| {
        login(
            (DETECT + 600) * 1000 + i * 800 + 90,
            IpAddr::from([203, 0, 113, i as u8 + 1]),
            &format!("someone{i}@bank.example"),
            401,
        )
    }));
    let alerts = detect(txs, DetectEnv::default(), AlertKind::AuthBruteforce);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(ev(&alerts[0], "view"), "distributed");
    assert!(ev(&alerts[0], "baseline_failure_ratio").as_f64().unwrap() > 0.0);
}

#[test]
fn bruteforce_stays_quiet_on_mistyped_passwords() {
    let mut txs = benign(DETECT, 20);
    // Ten users each mistype three times from home, then get in.
    for u in 0..10 {
        for k in 0..3 {
            let ms = (DETECT + 600 + u * 20 + k) * 1000 + 10;
            txs.push(login(ms, user_ip(u), &format!("user{u}@bank.example"), 401));
        }
        let ms = (DETECT + 600 + u * 20 + 5) * 1000 + 10;
        txs.push(login(ms, user_ip(u), &format!("user{u}@bank.example"), 200));
    }
    assert!(detect(txs, DetectEnv::default(), AlertKind::AuthBruteforce).is_empty());
}

// ------------------------------------------------------------------------------------------
// recon_scan
// ------------------------------------------------------------------------------------------

const PROBES: [&str; 6] = [
    "/.env",
    "/wp-login.php",
    "/.git/config",
    "/phpmyadmin/index.php",
    "/actuator/env",
    "/server-status",
];

#[test]
fn recon_fires_on_a_404_storm_with_scanner_paths() {
    let mut txs = benign(DETECT, 20);
    let scanner = IpAddr::from([192, 0, 2, 66]);
    txs.extend((0..60u64).map(|i| {
        let path = match PROBES.get(i as usize) {
            Some(p) => (*p).to_owned(),
            None => format!("/backup/old-{i}.zip"),
        };
        get(
            (DETECT + 600) * 1000 + i * 700 + 30,
            scanner,
            None,
            &path,
            404,
            "",
        )
    }));
    let alerts = detect(txs, DetectEnv::default(), AlertKind::ReconScan);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(
        (a.client.ip, a.endpoint.route.as_str()),
        (Some(scanner), "*")
    );
    assert_eq!(ev(a, "scanner_paths"), 6);
    assert_eq!(ev(a, "distinct_paths"), 60);
    assert_eq!(ev(a, "sample_paths")[0], "/.env");
}

#[test]
fn recon_stays_quiet_on_ordinary_misses() {
    let mut txs = benign(DETECT, 20);
    // Every user follows three stale links; one follows twelve (one scanner-looking path
    // among them, for a weighted score of 15).
    for u in 0..USERS {
        for k in 0..3 {
            let ms = (DETECT + 300 + u * 5 + k) * 1000 + 40;
            let path = format!("/api/v1/promo/{}", u * 3 + k);
            txs.push(get(ms, user_ip(u), Some(&token(u)), &path, 404, ""));
        }
    }
    for k in 0..12 {
        let path = if k == 0 {
            "/.env".to_owned()
        } else {
            format!("/help/page-{k}")
        };
        let ms = (DETECT + 900 + k) * 1000 + 40;
        txs.push(get(ms, user_ip(3), Some(&token(3)), &path, 404, ""));
    }
    assert!(detect(txs, DetectEnv::default(), AlertKind::ReconScan).is_empty());
}

// ------------------------------------------------------------------------------------------
// impossible_travel
// ------------------------------------------------------------------------------------------

/// Addresses placed by MaxMind's GeoLite2-City-Test.mmdb (its source-data JSON):
/// London (accuracy 10 km), Boxford GB (100 km), Linköping SE (76 km), Milton US (22 km).
const LONDON: [u8; 4] = [81, 2, 69, 142];
const BOXFORD: [u8; 4] = [2, 125, 160, 216];
const LINKOPING: [u8; 4] = [89, 160, 20, 128];
const MILTON: [u8; 4] = [216, 160, 83, 56];

fn geoip_env() -> Option<DetectEnv> {
    let Some(corpus) = std::env::var_os("APITAP_CORPUS") else {
        println!("skipped: APITAP_CORPUS is unset (the MaxMind test database lives there)");
        return None;
    };
    let path = std::path::Path::new(&corpus).join("mmdb/test-data/GeoLite2-City-Test.mmdb");
    Some(DetectEnv {
        geoip: Some(path),
        ..DetectEnv::default()
    })
}

/// User 5 at `from`, then `minutes` later at `to`, each for a few calls.
fn trip(from: [u8; 4], to: [u8; 4], minutes: u64) -> Vec<Transaction> {
    let tok = token(5);
    let mut out = Vec::new();
    for (k, (ip, at)) in [(from, 600), (to, 600 + minutes * 60)]
        .into_iter()
        .enumerate()
    {
        for i in 0..3u64 {
            let ms = (DETECT + at + i * 20) * 1000 + 60 + k as u64;
            out.push(get(
                ms,
                IpAddr::from(ip),
                Some(&tok),
                "/api/v1/accounts",
                200,
                "{}",
            ));
        }
    }
    out
}

#[test]
fn impossible_travel_fires_on_london_then_the_us_minutes_later() {
    let Some(env) = geoip_env() else { return };
    let mut txs = benign(DETECT, 20);
    txs.extend(trip(LONDON, MILTON, 8));
    let alerts = detect(txs, env, AlertKind::ImpossibleTravel);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.client.ip, Some(IpAddr::from(MILTON)));
    assert_eq!(ev(a, "from")["city"], "London");
    assert_eq!(ev(a, "to")["country"], "US");
    let km = ev(a, "distance_km").as_f64().unwrap();
    assert!((7_600.0..7_900.0).contains(&km), "{km}");
    assert_eq!(ev(a, "minutes_between"), 7.3);
    assert!(ev(a, "implied_speed_kmh").as_f64().unwrap() > 50_000.0);
}

#[test]
fn impossible_travel_stays_quiet_on_short_hops_and_real_flights() {
    let Some(env) = geoip_env() else { return };
    // London to Boxford (about 90 km) in five minutes: under the minimum distance.
    let mut txs = benign(DETECT, 20);
    txs.extend(trip(LONDON, BOXFORD, 5));
    // User 6: London to Linköping (about 1,400 km) in three hours, a flight's pace.
    let tok = token(6);
    for (ip, at) in [(LONDON, 300u64), (LINKOPING, 300 + 3 * 3600)] {
        txs.push(get(
            (DETECT + at) * 1000 + 80,
            IpAddr::from(ip),
            Some(&tok),
            "/api/v1/accounts",
            200,
            "{}",
        ));
    }
    let alerts = detect(txs, env, AlertKind::ImpossibleTravel);
    assert!(alerts.is_empty(), "{alerts:#?}");
}

#[test]
fn impossible_travel_leaves_api_keys_alone_unless_asked() {
    let Some(env) = geoip_env() else { return };
    // A partner's API key used from London and the US at once: services do that.
    let partner = || {
        let mut txs = benign(DETECT, 20);
        for (k, ip) in [LONDON, MILTON, LONDON, MILTON].into_iter().enumerate() {
            let mut t = get(
                (DETECT + 700 + k as u64 * 30) * 1000 + 90,
                IpAddr::from(ip),
                None,
                "/partner/v1/inventory",
                200,
                "{}",
            );
            if let Some(r) = t.request.as_mut() {
                r.headers.push(b"X-API-Key", b"pk_partner_0001");
            }
            txs.push(t);
        }
        txs
    };
    let geoip = env.geoip.clone();
    assert!(detect(partner(), env, AlertKind::ImpossibleTravel).is_empty());
    let mut cfg = DetectConfig::default();
    cfg.behaviour.travel.identity_kinds.push("k".into());
    let env = DetectEnv {
        geoip,
        ..DetectEnv::default()
    };
    let alerts = detect_with(partner(), env, AlertKind::ImpossibleTravel, cfg);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(
        alerts[0].count >= 3,
        "every flip is a finding: {}",
        alerts[0].count
    );
}

#[test]
fn an_unreadable_geoip_database_stops_the_engine_with_its_path() {
    let env = DetectEnv {
        geoip: Some("/nonexistent/City.mmdb".into()),
        ..DetectEnv::default()
    };
    let err = DetectEngine::new(trained(), extractor(), DetectConfig::default(), env)
        .err()
        .expect("an error");
    assert!(
        err.to_string().starts_with("/nonexistent/City.mmdb: "),
        "{err}"
    );
}

#[test]
fn without_a_database_travel_says_it_is_off() {
    let engine = DetectEngine::new(
        trained(),
        extractor(),
        DetectConfig::default(),
        DetectEnv::default(),
    )
    .unwrap();
    let names = engine.detector_names();
    for name in [
        "bola",
        "auth_bruteforce",
        "recon_scan",
        "impossible_travel (off: no geoip database)",
    ] {
        assert!(names.contains(&name), "{names:?}");
    }
}

#[test]
fn an_hour_of_benign_traffic_raises_no_behaviour_alert() {
    // Typos at login, a support agent reading many customers, users moving between their own
    // accounts: the look-alikes of all four kinds, for an hour.
    let records = detect_records(
        benign(DETECT, 60),
        geoip_env().unwrap_or_default(),
        DetectConfig::default(),
    );
    let ours = [
        AlertKind::Bola,
        AlertKind::AuthBruteforce,
        AlertKind::ReconScan,
        AlertKind::ImpossibleTravel,
    ];
    let false_alerts: Vec<&Alert> = records.iter().filter(|a| ours.contains(&a.kind)).collect();
    assert!(false_alerts.is_empty(), "{false_alerts:#?}");
}

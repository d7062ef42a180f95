//! The baseline detectors end to end: a small bank API is learned for three hours, then the
//! engine runs over more benign traffic (which must stay silent) and over attack shapes next
//! to their closest benign look-alikes.

use super::rate::{poisson_threshold, Ring};
use crate::alert::Alert;
use crate::common::Timestamp;
use crate::detect::{DetectConfig, DetectEngine, DetectEnv};
use crate::identity::{IdentityConfig, IdentityExtractor};
use crate::inventory::spec::Spec;
use crate::inventory::template::{RouteConfig, RouteLearner};
use crate::model::learn::{LearnConfig, Learner};
use crate::model::Model;
use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response, Transaction};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use proptest::prelude::*;
use std::net::IpAddr;

const KEY: &[u8] = b"baseline-test-key-0123456789abcd";
const HOST: &str = "api.bank.example";
/// An hour boundary, so hour-of-week buckets line up with the training hours.
const T0: u64 = 1_699_999_200;
const TRAIN_SECS: u64 = 3 * 3600;

/// A call: who, what, and what came back.
#[derive(Clone)]
struct Call {
    sec: u64,
    user: Option<(String, &'static str)>,
    ip: [u8; 4],
    method: &'static str,
    path: String,
    body: Option<String>,
    status: u16,
    resp: String,
}

impl Call {
    fn get(sec: u64, user: &str, role: &'static str, path: &str, status: u16, resp: &str) -> Call {
        Call {
            sec,
            user: Some((user.to_owned(), role)),
            ip: ip_of(user),
            method: "GET",
            path: path.to_owned(),
            body: None,
            status,
            resp: resp.to_owned(),
        }
    }

    fn with_body(mut self, method: &'static str, body: &str) -> Call {
        self.method = method;
        self.body = Some(body.to_owned());
        self
    }

    fn tx(&self) -> Transaction {
        let start = Timestamp::from_nanos((T0 + self.sec) * 1_000_000_000);
        let mut headers = Headers::new();
        headers.push(b"Host", HOST.as_bytes());
        if let Some((sub, role)) = &self.user {
            let claims = format!(r#"{{"sub":"{sub}","role":"{role}"}}"#);
            let jwt = format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(claims)
            );
            headers.push(b"Authorization", format!("Bearer {jwt}").as_bytes());
        }
        let req_body = match &self.body {
            Some(b) => {
                headers.push(b"Content-Type", b"application/json");
                body(b)
            }
            None => Body::default(),
        };
        let mut rh = Headers::new();
        rh.push(b"Content-Type", b"application/json");
        Transaction {
            conn: ConnInfo {
                flow_id: format!("f{}", self.sec),
                client: IpAddr::from(self.ip),
                client_port: 40000,
                server: IpAddr::from([10, 9, 9, 9]),
                server_port: 80,
                vlan: None,
            },
            depth: 1,
            request: Some(Request {
                method: self.method.into(),
                uri: self.path.clone(),
                version: HttpVersion::Http11,
                headers,
                body: req_body,
                start,
                end: start,
            }),
            response: Some(Response {
                status: self.status,
                reason: String::new(),
                version: HttpVersion::Http11,
                headers: rh,
                body: body(&self.resp),
                interim: vec![],
                start,
                end: start,
            }),
            flags: vec![],
        }
    }
}

fn body(s: &str) -> Body {
    Body {
        data: s.as_bytes().to_vec(),
        len: s.len() as u64,
        wire_len: s.len() as u64,
        truncated: false,
    }
}

fn ip_of(user: &str) -> [u8; 4] {
    let h = crate::baseline::sketch::hash64(user.as_bytes()).to_le_bytes();
    [10, 1, h[0], h[1]]
}

/// A small deterministic generator (xorshift), so traffic is varied but reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const GQL_ME: &str =
    r#"{"query":"query GetMe { me { id name accounts { id balance } } }","operationName":"GetMe"}"#;

fn account_json(r: &mut Rng, user: &str) -> String {
    let name = "x".repeat(5 + r.below(20) as usize);
    format!(
        r#"{{"id":"{user}","name":"{name}","balance":{},"currency":"EUR"}}"#,
        r.below(100_000)
    )
}

/// One benign call at second `sec`: 200 customers and 4 admins on six endpoints; the status
/// endpoint fails 1 % of the time.
fn benign(r: &mut Rng, sec: u64) -> Call {
    let admin = r.below(50) == 0;
    let (user, role) = if admin {
        (format!("admin{}", r.below(4)), "admin")
    } else {
        (format!("user{}", r.below(200)), "customer")
    };
    if admin {
        let list = r#"{"users":[{"id":"user1","role":"customer"}],"total":1}"#;
        return Call::get(sec, &user, role, "/api/v1/admin/users", 200, list);
    }
    match r.below(5) {
        0 => {
            let resp = account_json(r, &user);
            Call::get(sec, &user, role, "/api/v1/accounts/me", 200, &resp)
        }
        1 => {
            let b = format!(
                r#"{{"name":"n{}","email":"{user}@bank.example"}}"#,
                r.below(999)
            );
            Call::get(sec, &user, role, "/api/v1/profile", 200, r#"{"ok":true}"#)
                .with_body("PUT", &b)
        }
        2 => {
            let status = if r.below(100) == 0 { 503 } else { 200 };
            Call::get(sec, &user, role, "/api/v1/status", status, r#"{"up":true}"#)
        }
        3 => Call::get(
            sec,
            &user,
            role,
            "/graphql",
            200,
            r#"{"data":{"me":{"id":"1"}}}"#,
        )
        .with_body("POST", GQL_ME),
        _ => {
            let b = format!(
                r#"{{"to":"acc{}","amount":{}}}"#,
                r.below(500),
                r.below(900)
            );
            Call::get(sec, &user, role, "/api/v1/transfers", 201, r#"{"id":"t1"}"#)
                .with_body("POST", &b)
        }
    }
}

/// Benign traffic, one call per second over `[from, to)`.
fn benign_range(seed: u64, from: u64, to: u64) -> Vec<Call> {
    let mut r = Rng(seed);
    (from..to).map(|s| benign(&mut r, s)).collect()
}

fn extractor() -> IdentityExtractor {
    IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap()
}

/// The model of three hours of benign traffic, learned once per test.
fn trained() -> Model {
    let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
    let mut l = Learner::new(model, extractor(), LearnConfig::default());
    for c in benign_range(1, 0, TRAIN_SECS) {
        l.observe(&c.tx());
    }
    l.finish()
}

/// Detection over `calls` (sorted by time) against the trained model.
fn detect_with(cfg: DetectConfig, spec: Option<Spec>, mut calls: Vec<Call>) -> Vec<Alert> {
    calls.sort_by_key(|c| c.sec);
    let env = DetectEnv {
        spec,
        ..DetectEnv::default()
    };
    let mut engine = DetectEngine::new(trained(), extractor(), cfg, env).unwrap();
    let mut alerts = Vec::new();
    for c in &calls {
        engine.observe(&c.tx(), &mut alerts);
    }
    engine.finish(&mut alerts);
    alerts
}

fn detect(calls: Vec<Call>) -> Vec<Alert> {
    detect_with(DetectConfig::default(), None, calls)
}

/// The first alert of `kind`, if any.
fn first<'a>(alerts: &'a [Alert], kind: &str) -> Option<&'a Alert> {
    alerts.iter().find(|a| a.kind.name() == kind)
}

fn kinds(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a.kind.name(),
                a.endpoint.method,
                a.endpoint.route
            )
        })
        .collect();
    v.dedup();
    v
}

/// An hour of benign traffic after training, in which attacks are embedded.
fn test_hour(seed: u64) -> Vec<Call> {
    benign_range(seed, TRAIN_SECS, TRAIN_SECS + 3600)
}

const AT: u64 = TRAIN_SECS + 1800;

#[test]
fn an_hour_of_benign_traffic_raises_nothing() {
    let alerts = detect(test_hour(2));
    assert!(alerts.is_empty(), "{:?}", kinds(&alerts));
}

#[test]
fn volume_spike_of_a_caller_and_not_of_a_busy_minute() {
    let mut calls = test_hour(3);
    // user7 learned ~0.3 calls a minute; now 100 in a minute.
    for i in 0..100 {
        let resp = r#"{"id":"user7","name":"n","balance":1,"currency":"EUR"}"#;
        calls.push(Call::get(
            AT + i * 6 / 10,
            "user7",
            "customer",
            "/api/v1/accounts/me",
            200,
            resp,
        ));
    }
    // user8: 12 calls in a minute, a busy but human minute.
    for i in 0..12 {
        calls.push(Call::get(
            AT + 300 + i * 4,
            "user8",
            "customer",
            "/api/v1/status",
            200,
            "{}",
        ));
    }
    let alerts = detect(calls);
    let a = first(&alerts, "volume_spike").expect("caller spike");
    assert_eq!(a.endpoint.route, "*", "client scope");
    assert!(a.client.identity.is_some());
    assert_eq!(a.evidence["scope"], "caller");
    // The opening alert carries the first finding: one call past the floor.
    let observed = a.evidence["observed_calls"].as_f64().unwrap();
    assert!(observed > a.evidence["threshold_calls"].as_f64().unwrap());
    assert_eq!(a.evidence["threshold_calls"], 40.0);
    let spikes: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind.name() == "volume_spike")
        .collect();
    assert!(
        spikes
            .iter()
            .all(|s| s.client.identity == a.client.identity),
        "only user7: {:?}",
        kinds(&alerts)
    );
}

#[test]
fn volume_spike_of_an_endpoint_and_not_at_three_times_its_rate() {
    // The status endpoint learned ~12 calls a minute. 400 calls in a minute from 100 users
    // (4 each: no caller spikes) is an endpoint spike.
    let mut calls = test_hour(4);
    for i in 0..400u64 {
        let user = format!("user{}", i % 100);
        calls.push(Call::get(
            AT + i * 15 / 100,
            &user,
            "customer",
            "/api/v1/status",
            200,
            "{}",
        ));
    }
    let alerts = detect(calls);
    let a = first(&alerts, "volume_spike").expect("endpoint spike");
    assert_eq!(a.endpoint.route, "/api/v1/status");
    assert_eq!(a.client.identity, None, "endpoint scope");
    assert_eq!(a.evidence["baseline_basis"], "overall");
    assert!(a.evidence["expected_calls"].as_f64().unwrap() < 20.0);

    // 36 calls in a minute (three times the rate) stays quiet.
    let mut calls = test_hour(4);
    for i in 0..24u64 {
        let user = format!("user{}", i % 100);
        calls.push(Call::get(
            AT + i * 2,
            &user,
            "customer",
            "/api/v1/status",
            200,
            "{}",
        ));
    }
    let alerts = detect(calls);
    assert!(
        first(&alerts, "volume_spike").is_none(),
        "{:?}",
        kinds(&alerts)
    );
}

#[test]
fn error_spike_needs_a_share_far_above_learned_and_many_clients() {
    // Two minutes of the status endpoint failing 40 % of 2 calls a second, for everyone.
    let spike = |one_client: bool| {
        let mut calls = test_hour(5);
        for i in 0..240u64 {
            let user = if one_client {
                "user1".to_owned()
            } else {
                format!("user{}", i % 150)
            };
            let status = if i % 5 < 2 { 500 } else { 200 };
            calls.push(Call::get(
                AT + i / 2,
                &user,
                "customer",
                "/api/v1/status",
                status,
                "{}",
            ));
        }
        detect(calls)
    };
    let alerts = spike(false);
    let a = first(&alerts, "error_spike").expect("error spike");
    assert_eq!(a.endpoint.route, "/api/v1/status");
    assert_eq!(a.evidence["error_class"], "5xx");
    assert!(a.evidence["learned_share"].as_f64().unwrap() < 0.05);
    assert!(a.evidence["observed_share"].as_f64().unwrap() >= 0.2);
    // The same errors for one client only are that client's problem.
    let alerts = spike(true);
    assert!(
        first(&alerts, "error_spike").is_none(),
        "{:?}",
        kinds(&alerts)
    );
    // 404s for everyone are probes of nothing (recon), not a failing endpoint.
    let mut calls = test_hour(5);
    for i in 0..240u64 {
        let status = if i % 5 < 2 { 404 } else { 200 };
        let user = format!("user{}", i % 150);
        calls.push(Call::get(
            AT + i / 2,
            &user,
            "customer",
            "/api/v1/status",
            status,
            "{}",
        ));
    }
    let alerts = detect(calls);
    assert!(
        first(&alerts, "error_spike").is_none(),
        "{:?}",
        kinds(&alerts)
    );
}

#[test]
fn bfla_on_a_role_never_seen_and_on_an_unlearned_admin_route() {
    let list = r#"{"users":[],"total":0}"#;
    let mut calls = test_hour(6);
    calls.push(Call::get(
        AT,
        "user5",
        "customer",
        "/api/v1/admin/users",
        200,
        list,
    ));
    let mut del = Call::get(
        AT + 10,
        "user6",
        "customer",
        "/api/v1/admin/users/user9",
        204,
        "",
    );
    del.method = "DELETE";
    calls.push(del);
    // Look-alikes: a customer refused, an admin on a never-learned admin route.
    calls.push(Call::get(
        AT + 20,
        "user7",
        "customer",
        "/api/v1/admin/users",
        403,
        "{}",
    ));
    let mut admin_del = Call::get(
        AT + 30,
        "admin1",
        "admin",
        "/api/v1/admin/users/user9",
        204,
        "",
    );
    admin_del.method = "DELETE";
    calls.push(admin_del);
    // An admin on a customer function never called by admins: not an escalation.
    let me = r#"{"id":"admin2","name":"a","balance":0,"currency":"EUR"}"#;
    calls.push(Call::get(
        AT + 40,
        "admin2",
        "admin",
        "/api/v1/accounts/me",
        200,
        me,
    ));
    let alerts = detect(calls);
    let bfla: Vec<&Alert> = alerts.iter().filter(|a| a.kind.name() == "bfla").collect();
    let routes: Vec<(&str, &str, Option<&str>)> = bfla
        .iter()
        .map(|a| {
            (
                a.endpoint.method.as_str(),
                a.endpoint.route.as_str(),
                a.client.role.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        vec![
            ("GET", "/api/v1/admin/users", Some("customer")),
            ("DELETE", "/api/v1/admin/users/user9", Some("customer")),
        ]
    );
    assert_eq!(bfla[0].evidence["reason"], "role_never_seen");
    assert_eq!(bfla[0].evidence["learned_callers"][0]["label"], "admin");
    assert_eq!(bfla[1].evidence["reason"], "admin_route_not_learned");
}

#[test]
fn mass_assignment_of_privileged_fields_not_of_learned_ones() {
    let mut calls = test_hour(7);
    let put = |sec: u64, b: &str| {
        Call::get(
            sec,
            "user3",
            "customer",
            "/api/v1/profile",
            200,
            r#"{"ok":true}"#,
        )
        .with_body("PUT", b)
    };
    calls.push(put(
        AT,
        r#"{"name":"Eve","email":"e@x","role":"admin","isAdmin":true}"#,
    ));
    calls.push(put(AT + 5, r#"{"name":"O'Brien","email":"o@x"}"#));
    let transfer = r#"{"to":"acc1","amount":5,"fee":0,"approved":true}"#;
    calls.push(
        Call::get(AT + 9, "user4", "customer", "/api/v1/transfers", 201, "{}")
            .with_body("POST", transfer),
    );
    let alerts = detect(calls);
    let ma: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind.name() == "mass_assignment")
        .collect();
    assert_eq!(ma.len(), 2, "{:?}", kinds(&alerts));
    assert_eq!(ma[0].endpoint.route, "/api/v1/profile");
    assert_eq!(
        ma[0].evidence["new_fields"],
        serde_json::json!(["$.isAdmin", "$.role"])
    );
    assert_eq!(ma[0].severity.name(), "high");
    assert_eq!(
        ma[1].evidence["privileged_fields"],
        serde_json::json!(["$.approved", "$.fee"])
    );
}

#[test]
fn excessive_data_by_size_and_by_new_fields_not_by_ordinary_variation() {
    let mut calls = test_hour(8);
    let big = format!(
        r#"{{"id":"user2","name":"{}","balance":1,"currency":"EUR"}}"#,
        "y".repeat(2000)
    );
    calls.push(Call::get(
        AT,
        "user2",
        "customer",
        "/api/v1/accounts/me",
        200,
        &big,
    ));
    let leak =
        r#"{"id":"user3","name":"n","balance":1,"currency":"EUR","passwordHash":"$2b$10$abc"}"#;
    calls.push(Call::get(
        AT + 400,
        "user3",
        "customer",
        "/api/v1/accounts/me",
        200,
        leak,
    ));
    // A longer name than usual but within the learned sizes: quiet.
    let long =
        r#"{"id":"user4","name":"xxxxxxxxxxxxxxxxxxxxxxxx","balance":99999,"currency":"EUR"}"#;
    calls.push(Call::get(
        AT + 800,
        "user4",
        "customer",
        "/api/v1/accounts/me",
        200,
        long,
    ));
    let alerts = detect(calls);
    let ex: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind.name() == "excessive_data")
        .collect();
    assert_eq!(ex.len(), 2, "{:?}", kinds(&alerts));
    assert!(ex[0].evidence["response_bytes"].as_u64().unwrap() > 2000);
    assert!(ex[0].evidence["learned_p99_bytes"].as_f64().unwrap() < 200.0);
    assert_eq!(
        ex[1].evidence["new_fields"],
        serde_json::json!(["$.passwordHash"])
    );
    assert_eq!(ex[1].severity.name(), "high");
}

#[test]
fn graphql_abuse_on_depth_aliases_batches_and_introspection() {
    let gql = |sec: u64, user: &str, body: &str| {
        Call::get(sec, user, "customer", "/graphql", 200, r#"{"data":{}}"#).with_body("POST", body)
    };
    let deep = format!(
        r#"{{"query":"query Deep {{ {}id{} }}"}}"#,
        "a { ".repeat(13),
        " }".repeat(13)
    );
    let aliases: String = (0..60).map(|i| format!("a{i}: me {{ id }} ")).collect();
    let aliased = format!(r#"{{"query":"query Many {{ {aliases} }}"}}"#);
    let batch = format!("[{}]", vec![GQL_ME; 50].join(","));
    let intro = r#"{"query":"query IntrospectionQuery { __schema { types { name } } }"}"#;
    let cases = [
        ("user10", deep.as_str(), "depth"),
        ("user11", aliased.as_str(), "aliases"),
        ("user12", batch.as_str(), "batch_len"),
        ("user13", intro, "introspection"),
    ];
    for (i, (user, body, what)) in cases.iter().enumerate() {
        let mut calls = test_hour(9);
        calls.push(gql(AT + i as u64, user, body));
        // A benign query a little deeper and wider than usual.
        let ok = r#"{"query":"query Wide { me { id name accounts { id balance owner { id name } } } }"}"#;
        calls.push(gql(AT + 100, "user14", ok));
        let alerts = detect(calls);
        let g: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.kind.name() == "graphql_abuse")
            .collect();
        assert_eq!(g.len(), 1, "{what}: {:?}", kinds(&alerts));
        let ev = &g[0].evidence;
        let named = ev["exceeded"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["measure"] == *what)
            || (*what == "introspection" && ev["introspection"] == true);
        assert!(named, "{what}: {ev:?}");
    }
}

const SPEC: &str = r#"
openapi: 3.0.0
info: { title: bank, version: "1" }
paths:
  /api/v1/accounts/me: { get: { responses: { "200": { description: ok } } } }
  /api/v1/profile: { put: { responses: { "200": { description: ok } } } }
  /api/v1/admin/users: { get: { responses: { "200": { description: ok } } } }
  /api/v1/status: { get: { responses: { "200": { description: ok } } } }
  /api/v1/transfers: { post: { responses: { "201": { description: ok } } } }
  /graphql: { post: { responses: { "200": { description: ok } } } }
  /api/v0/accounts/{accountId}:
    get: { deprecated: true, responses: { "200": { description: ok } } }
"#;

#[test]
fn shadow_and_deprecated_endpoints_with_and_without_a_spec() {
    let mut calls = test_hour(10);
    calls.push(Call::get(
        AT,
        "user1",
        "customer",
        "/api/v1/debug/dump",
        200,
        "{}",
    ));
    calls.push(Call::get(
        AT + 1,
        "user1",
        "customer",
        "/api/v0/accounts/acc7",
        200,
        "{}",
    ));
    // Probes of nothing are recon's business.
    for i in 0..10 {
        calls.push(Call::get(AT + 2 + i, "user2", "customer", "/.env", 404, ""));
    }
    let spec = Spec::parse(SPEC, "spec.yaml").unwrap();
    let alerts = detect_with(DetectConfig::default(), Some(spec), calls.clone());
    assert_eq!(
        kinds(&alerts),
        vec![
            "shadow_endpoint GET /api/v1/debug/dump",
            // In the spec (deprecated), hence not shadow.
            "deprecated_endpoint GET /api/v0/accounts/acc7",
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    );
    let shadow = first(&alerts, "shadow_endpoint").unwrap();
    assert_eq!(shadow.evidence["basis"], "not_in_spec_nor_learned");

    // Without a spec: both are new since learning; nothing is deprecated.
    let alerts = detect(calls);
    let shadows: Vec<&str> = alerts
        .iter()
        .filter(|a| a.kind.name() == "shadow_endpoint")
        .map(|a| a.endpoint.route.as_str())
        .collect();
    assert_eq!(shadows, vec!["/api/v1/debug/dump", "/api/v0/accounts/acc7"]);
    assert!(first(&alerts, "deprecated_endpoint").is_none());
}

#[test]
fn bad_baseline_settings_are_each_named() {
    let mut c = DetectConfig::default();
    c.baseline.volume.window_secs = 0;
    c.baseline.errors.min_share = 1.5;
    let e = c.validate().unwrap_err();
    assert!(
        e.contains("baseline.volume.window_secs = 0: must be between 10 and 3600"),
        "{e}"
    );
    assert!(e.contains("baseline.errors.min_share = 1.5"), "{e}");
}

#[test]
fn poisson_threshold_grows_with_the_rate_and_keeps_its_floor() {
    // (expected, factor, sigmas, floor, threshold)
    let cases = [
        (0.0, 10.0, 5.0, 20, 20.0),
        (1.0, 10.0, 5.0, 20, 20.0),
        (4.0, 10.0, 5.0, 20, 50.0),
        (100.0, 5.0, 5.0, 120, 550.0),
    ];
    for (e, f, s, floor, want) in cases {
        assert_eq!(poisson_threshold(e, f, s, floor), want, "expected {e}");
    }
}

proptest! {
    /// The ring's count equals a naive count of events in its current slot and the eleven
    /// before it, for events in time order with arbitrary gaps.
    #[test]
    fn ring_counts_match_a_naive_window(gaps in proptest::collection::vec(0u64..30_000, 1..200)) {
        let window_secs = 60;
        let slot = window_secs * 1_000_000_000 / super::rate::SLOTS as u64;
        let mut ring = Ring::<1>::new(window_secs);
        let mut t = 1_000_000_000_000u64;
        let mut seen = Vec::new();
        for g in gaps {
            t += g * 1_000_000;
            ring.add(Timestamp::from_nanos(t), [1]);
            seen.push(t);
            let head = t / slot;
            let naive = seen.iter().filter(|&&s| head - s / slot < super::rate::SLOTS as u64).count();
            prop_assert_eq!(ring.sum()[0], naive as u64);
        }
    }
}

/// Runs `f` on the detection context of `call` against an empty model, as the engine builds
/// it (no profiles: what state caps do does not depend on them).
fn with_context(
    call: &Call,
    learner: &mut Learner,
    f: &mut dyn FnMut(&crate::detect::Context<'_>),
) {
    let tx = call.tx();
    let prepared = learner.prepare(&tx, false).unwrap();
    let req = tx.request.as_ref().unwrap();
    let cx = crate::detect::Context {
        tx: &tx,
        req,
        resp: tx.response.as_ref(),
        ts: tx.ts(),
        key: &prepared.key,
        endpoint_id: crate::detect::endpoint_id(&prepared.key),
        endpoint: std::cell::OnceCell::from(crate::alert::Endpoint {
            host: prepared.key.host.clone(),
            method: prepared.key.method.clone(),
            route: prepared.key.template.clone(),
        }),
        client: std::cell::OnceCell::from(crate::alert::Client {
            ip: Some(prepared.identity.client_ip),
            identity: prepared
                .identity
                .subject
                .as_ref()
                .map(|s| s.as_str().to_owned()),
            role: None,
        }),
        identity: &prepared.identity,
        object_ids: &prepared.object_ids,
        profile: None,
        caller: None,
        learner,
        spec: None,
        bodies: crate::detect::Bodies::new(1 << 20),
        spec_op: std::cell::OnceCell::new(),
        complete: true,
    };
    f(&cx);
}

#[test]
fn caller_windows_are_capped_swept_and_counted() {
    use crate::detect::Detector;
    let cfg = super::VolumeConfig {
        max_callers: 2,
        ..super::VolumeConfig::default()
    };
    let mut d = super::rate::VolumeDetector::new(&cfg);
    let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
    let mut learner = Learner::new(model, extractor(), LearnConfig::default());
    let mut out = Vec::new();
    // (second, user): the third user finds the map full of busy windows and is turned away;
    // a window later the first two are idle and swept, so the fourth and fifth get windows.
    for (sec, user) in [
        (0, "u1"),
        (1, "u2"),
        (2, "u3"),
        (3, "u1"),
        (200, "u4"),
        (201, "u5"),
    ] {
        let call = Call::get(sec, user, "customer", "/api/v1/status", 200, "{}");
        with_context(&call, &mut learner, &mut |cx| d.observe(cx, &mut out));
    }
    let c = d.counters();
    assert_eq!((c.callers_untracked, c.callers_swept), (1, 2), "{c:?}");
    assert!(out.is_empty());
}

#[test]
fn new_endpoints_counted_for_shadow_are_capped() {
    use crate::detect::Detector;
    let cfg = super::InventoryConfig {
        max_new_endpoints: 1,
        shadow_min_calls: 2,
        ..super::InventoryConfig::default()
    };
    let mut d = super::inventory::InventoryDetector::new(&cfg);
    let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
    let mut learner = Learner::new(model, extractor(), LearnConfig::default());
    let mut out = Vec::new();
    // 401s: shadow only from the second call of a tracked endpoint.
    for (sec, path) in [(0, "/a"), (1, "/b"), (2, "/b"), (3, "/a")] {
        let call = Call::get(sec, "u1", "customer", path, 401, "{}");
        with_context(&call, &mut learner, &mut |cx| d.observe(cx, &mut out));
    }
    assert_eq!(d.counters().endpoints_untracked, 2);
    let routes: Vec<&str> = out.iter().map(|f| f.endpoint.route.as_str()).collect();
    assert_eq!(routes, vec!["/a"]);
}

//! Learned detectors end to end: a small synthetic bank API is learned (baselines and learned
//! models, as `apitap learn` does), then benign held-out traffic and attacks go through the
//! detection engine.

use super::*;
use crate::alert::Alert;
use crate::common::Timestamp;
use crate::detect::{DetectConfig, DetectEngine, DetectEnv};
use crate::identity::{IdentityConfig, IdentityExtractor};
use crate::inventory::template::{RouteConfig, RouteLearner};
use crate::model::learn::{LearnConfig, Learner};
use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response};
use std::net::{IpAddr, Ipv4Addr};

const KEY: &[u8] = b"learned-test-key-0123456789abcd!";
const T0: u64 = 1_700_000_000;

/// splitmix64: the test traffic's only source of variety.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

struct Call<'a> {
    method: &'a str,
    uri: String,
    body: String,
    caller: Option<String>,
    ip: u32,
    status: u16,
    response_bytes: u64,
    ms: u64,
}

fn tx(c: Call<'_>) -> Transaction {
    let start = Timestamp::from_nanos(T0 * 1_000_000_000 + c.ms * 1_000_000);
    let mut headers = Headers::new();
    headers.push(b"Host", b"api.bank.example");
    if let Some(t) = &c.caller {
        headers.push(b"Authorization", format!("Bearer {t}").as_bytes());
    }
    if !c.body.is_empty() {
        headers.push(b"Content-Type", b"application/json");
    }
    let body = Body {
        data: c.body.as_bytes().to_vec(),
        len: c.body.len() as u64,
        wire_len: c.body.len() as u64,
        truncated: false,
    };
    Transaction {
        conn: ConnInfo {
            flow_id: format!("f{}", c.ms),
            client: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | c.ip)),
            ..ConnInfo::default()
        },
        depth: 1,
        request: Some(Request {
            method: c.method.into(),
            uri: c.uri,
            version: HttpVersion::Http11,
            headers,
            body,
            start,
            end: start,
        }),
        response: Some(Response {
            status: c.status,
            reason: String::new(),
            version: HttpVersion::Http11,
            headers: Headers::new(),
            body: Body {
                data: Vec::new(),
                len: c.response_bytes,
                wire_len: c.response_bytes,
                truncated: false,
            },
            interim: vec![],
            start,
            end: start,
        }),
        flags: vec![],
    }
}

const MEMOS: &[&str] = &[
    "rent",
    "dinner with O'Brien",
    "rock & roll tickets",
    "50% off deal",
    "c++ books",
    "José's birthday",
    "groceries",
    "",
];
const WORDS: &[&str] = &[
    "shoes",
    "boots",
    "o'neill jacket",
    "tv",
    "c++ primer",
    "café",
];

/// One benign call of user `u` at millisecond `ms`.
fn benign(rng: &mut Rng, u: u64, ms: u64) -> Transaction {
    let caller = Some(format!("user-{u:04}"));
    let ip = 1000 + u as u32;
    let account = 100_000 + u * 3 + rng.below(2);
    match rng.below(10) {
        0..=4 => tx(Call {
            method: "GET",
            uri: format!(
                "/api/v1/accounts/{account}?limit={}&status={}",
                10 + rng.below(41),
                rng.pick(&["active", "closed", "pending"])
            ),
            body: String::new(),
            caller,
            ip,
            status: if rng.below(100) == 0 { 404 } else { 200 },
            response_bytes: 500 + rng.below(400),
            ms,
        }),
        5..=7 => tx(Call {
            method: "POST",
            uri: "/api/v1/transfers".into(),
            body: format!(
                r#"{{"amount":{},"currency":"{}","to":"acc-{:06}","memo":"{}"}}"#,
                1 + rng.below(5000),
                rng.pick(&["EUR", "USD", "GBP"]),
                rng.below(1_000_000),
                rng.pick(MEMOS)
            ),
            caller,
            ip,
            status: 201,
            response_bytes: 120 + rng.below(40),
            ms,
        }),
        _ => tx(Call {
            method: "GET",
            uri: format!(
                "/api/v1/products?q={}&page={}",
                rng.pick(WORDS).replace(' ', "+"),
                1 + rng.below(5)
            ),
            body: String::new(),
            caller,
            ip,
            status: 200,
            response_bytes: 2000 + rng.below(3000),
            ms,
        }),
    }
}

/// `users` users each calling about once a minute for `minutes`, from minute `from`, in time
/// order.
fn traffic(seed: u64, users: u64, from: u64, minutes: u64) -> Vec<Transaction> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for m in from..from + minutes {
        for u in 0..users {
            let ms = m * 60_000 + rng.below(60_000);
            out.push(benign(&mut rng, u, ms));
        }
    }
    out.sort_by_key(|t| t.ts());
    out
}

fn identity() -> IdentityExtractor {
    IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap()
}

fn small_config() -> DetectConfig {
    let mut c = DetectConfig {
        adapt: false,
        ..DetectConfig::default()
    };
    c.learned.max_window_samples = 5000;
    c
}

/// Learns `txs` as `apitap learn` does: baselines and learned models.
fn learn(
    txs: &[Transaction],
    cfg: &DetectConfig,
    previous: Option<TrainedModel>,
) -> (Model, TrainedModel) {
    let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
    let mut learner = Learner::new(model, identity(), LearnConfig::default());
    let mut trainer = Trainer::new(cfg, previous);
    for t in txs {
        if let Some(p) = learner.prepare(t, true) {
            trainer.observe(t, &p, learner.endpoint(&p.key));
            learner.learn(t, &p);
        }
    }
    let model = learner.finish();
    let trained = trainer.finish(&model);
    (model, trained)
}

/// The world every detection test starts from, learned once.
fn world() -> &'static (Model, TrainedModel) {
    static WORLD: std::sync::OnceLock<(Model, TrainedModel)> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| learn(&traffic(1, 120, 0, 90), &small_config(), None))
}

fn engine(trained: Option<TrainedModel>) -> DetectEngine {
    let env = DetectEnv {
        trained,
        ..DetectEnv::default()
    };
    DetectEngine::new(world().0.clone(), identity(), small_config(), env).unwrap()
}

/// Alerts (final records) of `txs` run through a detection engine on the world's models.
fn detect(txs: &[Transaction]) -> Vec<Alert> {
    let mut e = engine(Some(world().1.clone()));
    let mut out = Vec::new();
    for t in txs {
        e.observe(t, &mut out);
    }
    e.finish(&mut out);
    // The other detector families run too; these tests judge the learned models' alerts.
    let mut last: BTreeMap<String, Alert> = BTreeMap::new();
    for a in out
        .into_iter()
        .filter(|a| a.evidence.contains_key("model_score"))
    {
        last.insert(a.id.clone(), a);
    }
    last.into_values().collect()
}

fn kinds(alerts: &[Alert]) -> Vec<&'static str> {
    alerts.iter().map(|a| a.kind.name()).collect()
}

#[test]
fn the_world_is_learned_into_shape_and_caller_models() {
    let (_, t) = world();
    let labels: Vec<String> = t.shapes.iter().map(|(k, _)| k.label()).collect();
    assert_eq!(labels.len(), 3, "{labels:?}");
    assert!(
        labels.iter().any(|l| l.contains("/api/v1/accounts/{")),
        "{labels:?}"
    );
    let callers = t.callers.as_ref().expect("caller model");
    assert!(callers.samples >= 500);
    // Every reservoir stayed within its cap.
    let cfg = small_config().learned;
    assert!(t
        .shape_samples
        .iter()
        .all(|(_, r)| r.samples.len() <= cfg.max_endpoint_samples));
    assert!(t.window_samples.samples.len() <= cfg.max_window_samples);
    assert!(t.window_samples.seen > t.window_samples.samples.len() as u64);
}

#[test]
fn held_out_benign_traffic_stays_under_the_thresholds() {
    let txs = traffic(2, 120, 90, 30);
    let alerts = detect(&txs);
    assert!(alerts.is_empty(), "{:#?}", alerts.first());
}

fn attacker_get(uri: String, ms: u64) -> Transaction {
    tx(Call {
        method: "GET",
        uri,
        body: String::new(),
        caller: Some("user-0007".into()),
        ip: 1007,
        status: 200,
        response_bytes: 700,
        ms,
    })
}

/// The benign traffic of the held-out half hour with `attack` mixed in.
fn with_benign(mut attack: Vec<Transaction>) -> Vec<Transaction> {
    let mut all = traffic(3, 120, 90, 10);
    all.append(&mut attack);
    all.sort_by_key(|t| t.ts());
    all
}

#[test]
fn a_learned_integer_given_a_long_string_is_a_parameter_anomaly() {
    let ms = 92 * 60_000;
    let long = "A".repeat(3000);
    let alerts = detect(&with_benign(vec![attacker_get(
        format!("/api/v1/accounts/100021?limit={long}&status=active"),
        ms,
    )]));
    assert_eq!(kinds(&alerts), ["parameter_anomaly"]);
    let e = &alerts[0].evidence;
    assert_eq!(e["parameter"], "limit");
    assert_eq!(e["location"], "query");
    assert_eq!(e["departure"], "type_change");
    assert_eq!(e["observed_bytes"], 3000);
    assert!(e["model_score"].as_f64() > e["model_threshold"].as_f64());
    assert_eq!(e["features"]["max_value_bytes"]["observed"], 3000.0);
    // The raw value never enters the alert.
    assert!(!serde_json::to_string(&alerts[0])
        .unwrap()
        .contains("AAAAAAAA"));
}

#[test]
fn a_number_field_turned_object_is_a_parameter_anomaly() {
    let ms = 93 * 60_000;
    let attack = tx(Call {
        method: "POST",
        uri: "/api/v1/transfers".into(),
        body: r#"{"amount":{"$gt":0},"currency":"EUR","to":"acc-000001","memo":"rent"}"#.into(),
        caller: Some("user-0009".into()),
        ip: 1009,
        status: 201,
        response_bytes: 130,
        ms,
    });
    let alerts = detect(&with_benign(vec![attack]));
    assert_eq!(kinds(&alerts), ["parameter_anomaly"]);
    assert_eq!(alerts[0].evidence["parameter"], "$.amount");
    assert_eq!(alerts[0].evidence["departure"], "type_change");
    assert_eq!(alerts[0].evidence["observed_type"], "object");
}

#[test]
fn an_enum_value_far_outside_is_a_parameter_anomaly_but_a_known_one_is_not() {
    let ms = 94 * 60_000;
    let far = attacker_get(
        "/api/v1/accounts/100021?limit=20&status=ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ;--"
            .into(),
        ms,
    );
    let alerts = detect(&with_benign(vec![far]));
    assert_eq!(kinds(&alerts), ["parameter_anomaly"]);
    assert_eq!(alerts[0].evidence["parameter"], "status");
    // Close look-alikes: a known value with other known parameters at their extremes, and a
    // memo with an apostrophe, ampersand and accent, as in training.
    let near = vec![
        attacker_get("/api/v1/accounts/100021?limit=50&status=pending".into(), ms),
        tx(Call {
            method: "POST",
            uri: "/api/v1/transfers".into(),
            body: r#"{"amount":4999,"currency":"GBP","to":"acc-999999","memo":"José & O'Brien"}"#
                .into(),
            caller: Some("user-0009".into()),
            ip: 1009,
            status: 201,
            response_bytes: 130,
            ms: ms + 5,
        }),
    ];
    let alerts = detect(&with_benign(near));
    assert!(alerts.is_empty(), "{:#?}", alerts);
}

#[test]
fn one_identity_walking_many_accounts_is_bola() {
    let start = 95 * 60_000;
    let walk = (0..40)
        .map(|i| {
            attacker_get(
                format!("/api/v1/accounts/{}?limit=20&status=active", 200_000 + i),
                start + i * 1500,
            )
        })
        .collect();
    let alerts = detect(&with_benign(walk));
    assert_eq!(kinds(&alerts), ["bola"], "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.endpoint.route, crate::detect::ANY);
    assert_eq!(a.evidence["dominant_feature"], "distinct_objects");
    assert!(a.count >= 20, "{}", a.count);
    eprintln!("{}", serde_json::to_string(&a.evidence).unwrap());
    let objects = a.evidence["features"]["distinct_objects"].clone();
    assert!(
        objects["observed"].as_f64() > objects["p999"].as_f64(),
        "{objects}"
    );
}

#[test]
fn one_identity_hammering_one_account_is_a_volume_spike() {
    let start = 95 * 60_000;
    let burst = (0..60)
        .map(|i| {
            attacker_get(
                "/api/v1/accounts/100021?limit=20&status=active".into(),
                start + i * 900,
            )
        })
        .collect();
    let alerts = detect(&with_benign(burst));
    assert_eq!(kinds(&alerts), ["volume_spike"], "{alerts:#?}");
    assert_eq!(alerts[0].evidence["dominant_feature"], "requests");
}

#[test]
fn an_anonymous_client_probing_missing_paths_is_a_recon_scan() {
    let start = 96 * 60_000;
    let paths = [
        "/.env",
        "/wp-login.php",
        "/.git/config",
        "/server-status",
        "/admin.php",
    ];
    let scan = (0..60u64)
        .map(|i| {
            let p = paths[i as usize % paths.len()];
            tx(Call {
                method: "GET",
                uri: format!("{p}{}", "x".repeat(i as usize / paths.len())),
                body: String::new(),
                caller: None,
                ip: 9999,
                status: 404,
                response_bytes: 150,
                ms: start + i * 800,
            })
        })
        .collect();
    let alerts = detect(&with_benign(scan));
    assert_eq!(kinds(&alerts), ["recon_scan"], "{alerts:#?}");
    assert_eq!(
        alerts[0].client.ip,
        Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | 9999)))
    );
}

#[test]
fn a_few_extra_calls_of_one_user_are_not_a_spike() {
    // Five calls in a minute, to two of the user's own accounts: busier than usual, not an
    // attack.
    let start = 97 * 60_000;
    let busy = (0..5)
        .map(|i| {
            attacker_get(
                format!(
                    "/api/v1/accounts/{}?limit=20&status=active",
                    100_021 + i % 2
                ),
                start + i * 9000,
            )
        })
        .collect();
    assert!(detect(&with_benign(busy)).is_empty());
}

#[test]
fn training_is_byte_deterministic_and_round_trips_through_the_store() {
    let txs = traffic(5, 60, 0, 40);
    let (_, a) = learn(&txs, &small_config(), None);
    let (_, b) = learn(&txs, &small_config(), None);
    let dir = std::env::temp_dir().join(format!("apitap-learned-{}-det", std::process::id()));
    let dir_b = dir.with_extension("b");
    a.save(&dir).unwrap();
    b.save(&dir_b).unwrap();
    let bytes_a = std::fs::read(TrainedModel::file(&dir)).unwrap();
    let bytes_b = std::fs::read(TrainedModel::file(&dir_b)).unwrap();
    assert_eq!(bytes_a, bytes_b);
    // serde_json's float parser may land one ulp away: compare what the models decide.
    let back = TrainedModel::load(&dir).unwrap().unwrap();
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * x.abs().max(1.0);
    for ((kb, mb), (ka, ma)) in back.shapes.iter().zip(&a.shapes) {
        assert_eq!(kb, ka);
        assert!(close(mb.threshold, ma.threshold) && close(mb.score_median, ma.score_median));
        let (sb, sa) = (Scorer::new(mb).unwrap(), Scorer::new(ma).unwrap());
        for (_, r) in &a.shape_samples {
            for x in r.sorted().iter().take(50) {
                assert!(close(sb.score(x), sa.score(x)));
            }
        }
    }
    assert_eq!(back.shapes.len(), a.shapes.len());
    assert_eq!(back.callers.is_some(), a.callers.is_some());
    assert_eq!(back.shape_samples, a.shape_samples);
    assert_eq!(back.window_samples, a.window_samples);
    assert!(TrainedModel::load(&dir.join("nowhere")).unwrap().is_none());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&dir_b);
}

#[test]
fn extending_a_model_refits_on_both_runs_within_the_caps() {
    let cfg = small_config();
    let first = traffic(6, 60, 0, 30);
    let second = traffic(7, 60, 30, 30);
    let (_, one) = learn(&first, &cfg, None);
    let (_, two) = learn(&second, &cfg, Some(one.clone()));
    let seen = |t: &TrainedModel| -> u64 { t.shape_samples.iter().map(|(_, r)| r.seen).sum() };
    let all = first.len() as u64 + second.len() as u64;
    assert_eq!(seen(&one), first.len() as u64);
    assert_eq!(seen(&two), all);
    assert_eq!(two.counters.requests, all);
    for (_, r) in &two.shape_samples {
        assert!(r.samples.len() <= cfg.learned.max_endpoint_samples);
    }
    // The second fit saw vectors of both runs: some sampled hashes come from each.
    let (_, only_second) = learn(&second, &cfg, None);
    assert_ne!(two.shape_samples, only_second.shape_samples);
}

#[test]
fn reservoirs_keep_the_smallest_hashes_whatever_the_order() {
    let mut rng = Rng(42);
    let items: Vec<(u64, f64)> = (0..5000).map(|i| (rng.next(), i as f64)).collect();
    let mut fwd = Reservoir::default();
    let mut rev = Reservoir::default();
    for (h, x) in &items {
        fwd.offer(*h, &[*x], 100);
    }
    for (h, x) in items.iter().rev() {
        rev.offer(*h, &[*x], 100);
    }
    let mut want: Vec<u64> = items.iter().map(|(h, _)| *h).collect();
    want.sort_unstable();
    want.truncate(100);
    for r in [&fwd, &rev] {
        assert_eq!(r.seen, 5000);
        let mut got: Vec<u64> = r.samples.iter().map(|(h, _)| *h).collect();
        got.sort_unstable();
        assert_eq!(got, want);
    }
    assert_eq!(fwd.sorted(), rev.sorted());
    // Merging two halves equals one pass.
    let (mut a, mut b) = (Reservoir::default(), Reservoir::default());
    for (i, (h, x)) in items.iter().enumerate() {
        let r = if i % 2 == 0 { &mut a } else { &mut b };
        r.offer(*h, &[*x], 100);
    }
    a.merge(&b, 100);
    assert_eq!(a.sorted(), fwd.sorted());
    assert_eq!(a.seen, 5000);
}

#[test]
fn a_corrupt_or_unusable_detect_json_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("apitap-learned-{}-bad", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = TrainedModel::file(&dir);
    std::fs::write(&file, b"{\"format\":\"apitap-model\"\nnot json").unwrap();
    let e = TrainedModel::load(&dir).unwrap_err().to_string();
    assert!(e.contains("detect.json"), "{e}");
    // A valid envelope around a model that cannot score names the problem and the cure.
    let mut t = world().1.clone();
    if let Some((_, m)) = t.shapes.first_mut() {
        m.covariances[0][0] = -1.0;
    }
    store::save(&file, DETECT_VERSION, &t).unwrap();
    let e = TrainedModel::load(&dir).unwrap_err().to_string();
    assert!(
        e.contains("detect.json") && e.contains("not positive definite"),
        "{e}"
    );
    assert!(e.contains("apitap learn"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn caps_turn_away_callers_and_count_them() {
    let mut w = Windows::new(60, 2, 4);
    let mut closed = 0;
    let t = |s: u64| Timestamp::from_nanos((T0 + s) * 1_000_000_000);
    for c in 0..5u64 {
        w.observe(c, t(1), 1, &[], 200, 0, &mut |_, _| closed += 1);
    }
    assert_eq!(w.open.len(), 2);
    assert_eq!(w.callers_over_cap, 3);
    // After a window length the sweep closes both and makes room.
    w.observe(9, t(200), 1, &[], 200, 0, &mut |_, _| closed += 1);
    assert_eq!(closed, 2);
    assert_eq!(w.open.len(), 1);
}

/// A naive model of [`Windows`]: ordered maps and sets, a fresh window for every client.
#[derive(Default)]
struct WindowsOracle {
    open: BTreeMap<u64, OracleWindow>,
    last_sweep: u64,
    over_cap: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct OracleWindow {
    start: u64,
    requests: u32,
    errors: u32,
    bytes: u64,
    endpoints: std::collections::BTreeSet<u64>,
    objects: std::collections::BTreeSet<u64>,
}

impl OracleWindow {
    fn new(start: u64) -> OracleWindow {
        OracleWindow {
            start,
            requests: 0,
            errors: 0,
            bytes: 0,
            endpoints: Default::default(),
            objects: Default::default(),
        }
    }

    fn raw(&self) -> [f64; features::WINDOW_DIM] {
        [
            f64::from(self.requests),
            self.endpoints.len() as f64,
            self.objects.len() as f64,
            f64::from(self.errors) / f64::from(self.requests.max(1)),
            self.bytes as f64,
        ]
    }
}

impl WindowsOracle {
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        (window_ns, max_callers, max_distinct): (u64, usize, usize),
        client: u64,
        ts: u64,
        endpoint: u64,
        objects: &[(String, String)],
        status: u16,
        bytes: u64,
        closed: &mut Vec<(u64, u64, [f64; features::WINDOW_DIM])>,
    ) -> Option<OracleWindow> {
        if ts >= self.last_sweep.saturating_add(window_ns) {
            self.last_sweep = ts;
            let ended: Vec<u64> = self
                .open
                .iter()
                .filter(|(_, w)| ts >= w.start + window_ns)
                .map(|(c, _)| *c)
                .collect();
            for c in ended {
                if let Some(w) = self.open.remove(&c) {
                    closed.push((c, w.start, w.raw()));
                }
            }
        }
        if !self.open.contains_key(&client) && self.open.len() >= max_callers {
            self.over_cap += 1;
            return None;
        }
        let w = self
            .open
            .entry(client)
            .or_insert_with(|| OracleWindow::new(ts));
        if ts >= w.start + window_ns {
            closed.push((client, w.start, w.raw()));
            *w = OracleWindow::new(ts);
        }
        w.requests += 1;
        w.errors += u32::from(status >= 400);
        w.bytes += bytes;
        let add = |set: &mut std::collections::BTreeSet<u64>, h: u64| {
            if set.len() < max_distinct || set.contains(&h) {
                set.insert(h);
            }
        };
        add(&mut w.endpoints, endpoint);
        for (_, v) in objects {
            add(
                &mut w.objects,
                fnv(&[&endpoint.to_le_bytes(), v.as_bytes()]),
            );
        }
        Some(w.clone())
    }
}

/// Windows taken over from closed ones (with their sets' memory) count exactly as fresh
/// windows would: every open and closed window equals the naive model's, call by call, through
/// caps, sweeps and thousands of window turnovers.
#[test]
fn recycled_windows_count_like_fresh_ones() {
    let window_ns = 60_000_000_000;
    let caps = (window_ns, 12, 5);
    for seed in 1..=4u64 {
        let mut rng = Rng(seed);
        let mut w = Windows::new(60, caps.1, caps.2);
        let mut oracle = WindowsOracle::default();
        let (mut got_closed, mut want_closed) = (Vec::new(), Vec::new());
        let mut ts = T0 * 1_000_000_000;
        let mut most_spare = 0;
        for _ in 0..20_000 {
            // Mostly sub-second steps, now and then a gap of minutes that ends every window.
            ts += if rng.below(500) == 0 {
                rng.below(300) * 1_000_000_000
            } else {
                rng.below(400_000_000)
            };
            let client = rng.below(20);
            let endpoint = rng.below(8);
            let objects: Vec<(String, String)> = (0..rng.below(3))
                .map(|_| ("id".to_string(), rng.below(10).to_string()))
                .collect();
            let status = [200, 200, 404, 500][rng.below(4) as usize];
            let bytes = rng.below(5000);
            let got = w
                .observe(
                    client,
                    Timestamp::from_nanos(ts),
                    endpoint,
                    &objects,
                    status,
                    bytes,
                    &mut |c, win| got_closed.push((c, win.start.as_nanos(), win.raw())),
                )
                .map(|win| (win.start.as_nanos(), win.raw()));
            let want = oracle
                .observe(
                    caps,
                    client,
                    ts,
                    endpoint,
                    &objects,
                    status,
                    bytes,
                    &mut want_closed,
                )
                .map(|win| (win.start, win.raw()));
            assert_eq!(got, want, "seed {seed} at {ts}");
            most_spare = most_spare.max(w.spare.len());
        }
        assert_eq!(got_closed, want_closed, "seed {seed}");
        assert_eq!(w.callers_over_cap, oracle.over_cap);
        assert!(
            w.callers_over_cap > 0 && got_closed.len() > 500,
            "{}",
            got_closed.len()
        );
        // Closed windows were put aside and taken again (the stream is checked throughout).
        assert!(
            most_spare > 0 && most_spare <= MAX_SPARE_WINDOWS,
            "{most_spare}"
        );
    }
}

#[test]
fn scoring_cost_per_transaction() {
    // Detection over the same traffic with and without the learned models: the difference is
    // what scoring costs (a rough figure; this build is unoptimised).
    let txs = traffic(8, 120, 90, 10);
    let time = |trained: Option<TrainedModel>| {
        let mut e = engine(trained);
        let mut out = Vec::new();
        let start = std::time::Instant::now();
        for t in &txs {
            e.observe(t, &mut out);
        }
        start.elapsed().as_nanos() as f64 / txs.len() as f64
    };
    let base = time(None);
    let with = time(Some(world().1.clone()));
    eprintln!(
        "learned detectors: {:.0} ns/tx engine without, {:.0} ns/tx with ({:.0} ns/tx scoring), {} tx",
        base,
        with,
        with - base,
        txs.len()
    );
    assert!(
        with - base < 200_000.0,
        "scoring costs {} ns/tx",
        with - base
    );
}

#[test]
fn bad_learned_settings_are_each_named() {
    let mut c = DetectConfig::default();
    c.learned.false_alarm_rate = 0.0;
    c.learned.components = 9;
    c.learned.max_endpoint_samples = 10;
    c.learned.window_secs = 0;
    let e = c.validate().unwrap_err();
    for key in [
        "learned.false_alarm_rate = 0:",
        "learned.components = 9:",
        "learned.max_endpoint_samples = 10:",
        "learned.window_secs = 0:",
    ] {
        assert!(e.contains(key), "{key} in {e}");
    }
    assert!(DetectConfig::default().validate().is_ok());
}

proptest::proptest! {
    /// Whatever a request carries, the shape walk ends, stays within its cap and gives
    /// finite features; windows take any status and size.
    #[test]
    fn shape_scans_of_arbitrary_requests_are_finite(
        uri in "/[ -~]{0,80}",
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        json in proptest::option::of("[\\[\\]{}\":,0-9a-z ]{0,120}"),
        status in 0u16..1000,
        bytes in proptest::num::u64::ANY,
    ) {
        let (_, trained) = world();
        let profile = world().0.endpoints.first().map(|(_, p)| p);
        let mut r = attacker_get(uri, 0);
        if let Some(req) = r.request.as_mut() {
            req.body.data = body;
        }
        let parsed: Option<Value> = json.as_deref().and_then(|j| serde_json::from_str(j).ok());
        let req = r.request.as_ref().unwrap();
        let scan = features::ShapeScanner::default().scan(req, parsed.as_ref(), &[], profile, 16);
        proptest::prop_assert!(scan.features.iter().all(|f| f.is_finite()));
        for (_, m) in &trained.shapes {
            proptest::prop_assert!(Scorer::new(m).unwrap().score(&scan.features).is_finite());
        }
        let mut w = Window::new(Timestamp::ZERO);
        w.add(1, &[("id".into(), "x".into())], status, bytes, 4);
        w.add(2, &[], status, bytes, 4);
        proptest::prop_assert!(w.features().iter().all(|f| f.is_finite()));
    }
}

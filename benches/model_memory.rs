//! Model memory benchmark (issue 3): 10,000,000 synthetic transactions over 1,000 endpoints and
//! 1,000,000 callers fed to a [`Learner`] under its memory budget. Prints throughput, the
//! learner's byte estimate against the process's peak RSS, bytes per endpoint and per caller,
//! and what the budget turned away.
//!
//! Run with `cargo bench --bench model_memory`. Environment: `BENCH_TRANSACTIONS`,
//! `BENCH_CALLERS`, `BENCH_ENDPOINTS` (defaults 10,000,000 / 1,000,000 / 1,000) and
//! `BENCH_BUDGET_BYTES` (default: `LearnConfig`'s, 1 GiB). The traffic is deterministic
//! (a fixed-seed SplitMix64), so two runs learn the same model.
//!
//! Figures of one run on the shared 2-core development box (release, default budget):
//! 223,838 transactions/s (10M in 44.7 s); estimate 925.0 MiB, peak RSS 743.6 MiB; 1,000
//! endpoints at 11,041 B each, 117,030 callers at 5,664 B each; callers_over_budget 8,719,059,
//! endpoints_over_budget 0. A million callers of this size need about 5.4 GiB, so under 1 GiB
//! about one caller in nine is tracked, the first to appear.

use apitap::common::Timestamp;
use apitap::identity::{IdentityConfig, IdentityExtractor};
use apitap::inventory::template::{RouteConfig, RouteLearner};
use apitap::model::learn::{LearnConfig, Learner};
use apitap::model::Model;
use apitap::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response, Transaction};
use std::fmt::Write as _;
use std::time::Instant;

/// Resource names; 10 per host, well under the route learner's fold threshold, so every
/// (host, path) stays its own endpoint.
const NOUNS: [&str; 10] = [
    "users",
    "orders",
    "items",
    "carts",
    "invoices",
    "payments",
    "reviews",
    "stores",
    "coupons",
    "shipments",
];

/// SplitMix64: tiny, fast and deterministic; statistical quality is ample for picking ids.
struct SplitMix64(u64);

impl SplitMix64 {
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
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// Peak resident set size of this process, from `/proc/self/status` (`VmHWM`, in kB).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let transactions = env_u64("BENCH_TRANSACTIONS", 10_000_000);
    let callers = env_u64("BENCH_CALLERS", 1_000_000);
    let endpoints = env_u64("BENCH_ENDPOINTS", 1_000);
    let mut cfg = LearnConfig::default();
    cfg.memory_budget_bytes =
        env_u64("BENCH_BUDGET_BYTES", cfg.memory_budget_bytes as u64) as usize;
    let budget = cfg.memory_budget_bytes;
    println!(
        "model_memory: {transactions} transactions, {endpoints} endpoints, {callers} callers, budget {budget} B ({:.0} MiB)",
        mib(budget as u64)
    );
    let rss_start = peak_rss_bytes().unwrap_or(0);

    let identity = IdentityExtractor::new(
        &IdentityConfig::default(),
        b"model-memory-bench-key-0123456789",
    )
    .expect("identity extractor");
    let model = Model::new("bench", "bench", RouteLearner::new(RouteConfig::default()));
    let mut learner = Learner::new(model, identity, cfg);

    // Buffers reused across transactions; only the two small header blocks are rebuilt.
    let mut host = String::new();
    let mut path = String::new();
    let mut token = String::new();
    let mut tx = Transaction {
        conn: ConnInfo::default(),
        depth: 1,
        request: Some(Request {
            method: "GET".into(),
            uri: String::new(),
            version: HttpVersion::Http11,
            headers: Headers::new(),
            body: Body::default(),
            start: Timestamp::ZERO,
            end: Timestamp::ZERO,
        }),
        response: Some(Response {
            status: 200,
            reason: String::new(),
            version: HttpVersion::Http11,
            headers: Headers::new(),
            body: Body::default(),
            interim: vec![],
            start: Timestamp::ZERO,
            end: Timestamp::ZERO,
        }),
        flags: vec![],
    };
    let mut rng = SplitMix64(0x00A9_17A9);
    // A week of traffic starting 2026-01-05 00:00 UTC.
    let t0: u64 = 1_767_571_200_000_000_000;
    let step = 7 * 86_400 * 1_000_000_000 / transactions.max(1);
    let report_every = (transactions / 10).max(1);
    let started = Instant::now();
    for i in 0..transactions {
        let endpoint = rng.below(endpoints);
        let caller = rng.below(callers);
        let ts = Timestamp::from_nanos(t0 + i * step);
        host.clear();
        let _ = write!(host, "svc{}.example", endpoint / NOUNS.len() as u64);
        path.clear();
        let _ = write!(
            path,
            "/v1/{}",
            NOUNS[(endpoint % NOUNS.len() as u64) as usize]
        );
        token.clear();
        let _ = write!(token, "Bearer bench-token-{caller:07}");
        let roll = rng.below(100);
        if let Some(req) = tx.request.as_mut() {
            req.uri.clone_from(&path);
            let mut h = Headers::with_capacity(2, 64);
            h.push(b"Host", host.as_bytes());
            h.push(b"Authorization", token.as_bytes());
            req.headers = h;
            req.start = ts;
            req.end = ts;
        }
        if let Some(resp) = tx.response.as_mut() {
            resp.status = match roll {
                0..=2 => 404,
                3 => 500,
                4 => 403,
                _ => 200,
            };
            resp.body.len = 200 + rng.below(4000);
            resp.start = Timestamp::from_nanos(t0 + i * step + 1_000_000 + rng.below(50_000_000));
            resp.end = resp.start;
        }
        learner.observe(&tx);
        if (i + 1) % report_every == 0 {
            println!(
                "  {:>11} tx  {:>7.1} s  estimate {:>8.1} MiB  endpoints {:>5}  callers {:>8}",
                i + 1,
                started.elapsed().as_secs_f64(),
                mib(learner.memory_bytes() as u64),
                learner.endpoint_count(),
                learner.caller_count()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let estimate = learner.memory_bytes() as u64;
    let (n_endpoints, n_callers) = (learner.endpoint_count(), learner.caller_count());
    let c = learner.counters().clone();
    let peak = peak_rss_bytes().unwrap_or(0);

    // Bytes per profile from the finished model, without the learner's map overhead, so the
    // figures say what one more endpoint or caller costs in a saved-and-loaded model.
    let model = learner.finish();
    let endpoint_bytes: u64 = model
        .endpoints
        .iter()
        .map(|(_, p)| (std::mem::size_of_val(p) + p.heap_bytes()) as u64)
        .sum();
    let caller_bytes: u64 = model
        .callers
        .iter()
        .map(|(k, p)| (std::mem::size_of_val(p) + k.len() + p.heap_bytes()) as u64)
        .sum();

    println!(
        "transactions/s:        {:.0} ({transactions} in {secs:.1} s)",
        transactions as f64 / secs
    );
    println!(
        "learner estimate:      {estimate} B ({:.1} MiB, budget {:.0} MiB)",
        mib(estimate),
        mib(budget as u64)
    );
    println!(
        "peak RSS (VmHWM):      {peak} B ({:.1} MiB; {:.1} MiB before learning)",
        mib(peak),
        mib(rss_start)
    );
    println!(
        "endpoints:             {n_endpoints} kept, {:.0} B each (profile inline + heap)",
        endpoint_bytes as f64 / n_endpoints.max(1) as f64
    );
    println!(
        "callers:               {n_callers} kept, {:.0} B each (profile inline + heap + pseudonym)",
        caller_bytes as f64 / n_callers.max(1) as f64
    );
    println!(
        "counters:              learned {}, anonymous {}, callers_over_budget {}, endpoints_over_budget {}, endpoints_over_cap {}",
        c.learned, c.anonymous, c.callers_over_budget, c.endpoints_over_budget, c.endpoints_over_cap
    );
}

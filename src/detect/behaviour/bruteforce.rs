//! `auth_bruteforce`: bursts of failed logins on login and token endpoints.
//!
//! A login endpoint is one whose route has a segment word from `route_words` (`login`,
//! `signin`, `auth`, `token`, `session`, `oauth`, ...; segments split on `-_.` and compared
//! case-insensitively) or is listed in `routes`. A failure is a 401 or 403 answer: nothing
//! else, so a 400 for a malformed body or a 200 carrying `"error"` is not counted (those are
//! API-specific; the operator can use suppression rules, not guesswork, to shape this).
//!
//! Three views, each with its own window and threshold:
//! - per client address: one source spraying many failures (credential stuffing), client scope;
//! - per username (the Basic user pseudonym, else the JSON or form body's `username`, `email`,
//!   `login` or `user` field, kept only as a keyed pseudonym and a 64-bit hash of it): one account attacked from at least
//!   `username_min_clients` addresses (a single source is the first view's), endpoint scope;
//! - per endpoint: failures across at least `endpoint_min_clients` addresses far above the
//!   endpoint's learned failure ratio times its calls in the window, endpoint scope.
//!
//! Invariants: per-key state is a fixed-size bucket counter plus a capped set of hashes, in
//! tables with caps and turned-away counters; a raw username never enters state or evidence
//! (the evidence shows its keyed `u:` pseudonym, the one Basic credentials of that name get).

use super::{endpoint_hash, ip_hash, key_hash, RecentSet, RollingCount, Table};
use crate::alert::{AlertKind, Severity};
use crate::baseline::profile::EndpointProfile;
use crate::detect::config::Problems;
use crate::detect::{Context, Detector, Finding};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Buckets per window: the window edge moves in steps of window / 10.
const BUCKETS: usize = 10;
/// Distinct usernames or clients remembered per key, for the evidence and the distinct-client
/// conditions (thresholds on them are validated to stay below it).
const MAX_DISTINCT: usize = 64;
/// Body fields that name the account of a login attempt, in order of preference.
const USERNAME_FIELDS: [&str; 6] = ["username", "userName", "email", "login", "user", "account"];

/// Settings of `auth_bruteforce` (`[detect.behaviour.bruteforce]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteforceConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Route segment words that make an endpoint a login endpoint (lower case).
    pub route_words: Vec<String>,
    /// Further login endpoints, as exact route templates (`/api/v2/verify-otp`).
    pub routes: Vec<String>,
    /// Window of the per-client view, in seconds of capture time.
    pub client_window_secs: u64,
    /// Failures from one client address in its window that alert.
    pub client_min_failures: u64,
    /// Window of the per-username view, in seconds.
    pub username_window_secs: u64,
    /// Failures against one username in its window that alert...
    pub username_min_failures: u64,
    /// ...when they came from at least this many client addresses.
    pub username_min_clients: usize,
    /// Window of the per-endpoint (distributed) view, in seconds.
    pub endpoint_window_secs: u64,
    /// Failures on one login endpoint in its window below which it never alerts.
    pub endpoint_min_failures: u64,
    /// Alert when failures exceed the learned failure ratio times the window's calls by this.
    pub endpoint_failure_multiplier: f64,
    /// Distinct failing client addresses the distributed view requires.
    pub endpoint_min_clients: usize,
    /// Client addresses tracked at once (`clients_turned_away` beyond).
    pub max_clients: usize,
    /// Usernames tracked at once (`usernames_turned_away` beyond).
    pub max_usernames: usize,
    /// Login endpoints tracked at once (`endpoints_turned_away` beyond).
    pub max_endpoints: usize,
}

impl Default for BruteforceConfig {
    fn default() -> Self {
        BruteforceConfig {
            enabled: true,
            route_words: [
                "login",
                "logon",
                "signin",
                "auth",
                "authenticate",
                "token",
                "session",
                "sessions",
                "oauth",
                "oauth2",
            ]
            .map(String::from)
            .to_vec(),
            routes: Vec::new(),
            client_window_secs: 300,
            client_min_failures: 20,
            username_window_secs: 600,
            username_min_failures: 10,
            username_min_clients: 3,
            endpoint_window_secs: 300,
            endpoint_min_failures: 50,
            endpoint_failure_multiplier: 4.0,
            endpoint_min_clients: 10,
            max_clients: 100_000,
            max_usernames: 100_000,
            max_endpoints: 1_000,
        }
    }
}

impl BruteforceConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        let k = |s: &str| format!("behaviour.bruteforce.{s}");
        for (key, v) in [
            ("client_window_secs", self.client_window_secs),
            ("username_window_secs", self.username_window_secs),
            ("endpoint_window_secs", self.endpoint_window_secs),
        ] {
            p.range(&k(key), v, 1, 86_400);
        }
        for (key, v) in [
            ("client_min_failures", self.client_min_failures),
            ("username_min_failures", self.username_min_failures),
            ("endpoint_min_failures", self.endpoint_min_failures),
        ] {
            p.range(&k(key), v, 2, 1_000_000);
        }
        p.range(
            &k("username_min_clients"),
            self.username_min_clients,
            1,
            MAX_DISTINCT,
        );
        p.range(
            &k("endpoint_min_clients"),
            self.endpoint_min_clients,
            1,
            MAX_DISTINCT,
        );
        p.range(
            &k("endpoint_failure_multiplier"),
            self.endpoint_failure_multiplier,
            1.0,
            1000.0,
        );
        p.range(&k("max_clients"), self.max_clients, 1, 100_000_000);
        p.range(&k("max_usernames"), self.max_usernames, 1, 100_000_000);
        p.range(&k("max_endpoints"), self.max_endpoints, 1, 1_000_000);
        if self.route_words.is_empty() && self.routes.is_empty() {
            p.fail(
                &k("route_words"),
                "[]",
                "name at least one login route word or route",
            );
        }
    }
}

/// What `auth_bruteforce` did and turned away.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BruteforceCounters {
    /// Failed logins seen (401/403 on a login endpoint).
    pub failures: u64,
    pub findings: u64,
    pub clients_turned_away: u64,
    pub usernames_turned_away: u64,
    pub endpoints_turned_away: u64,
}

/// Failures of one key, and who else was involved (usernames for a client, clients for a
/// username or an endpoint).
#[derive(Debug, Default)]
struct Failures {
    count: RollingCount<BUCKETS>,
    distinct: RecentSet,
}

/// Calls and failures of one login endpoint.
#[derive(Debug, Default)]
struct EndpointWindow {
    calls: RollingCount<BUCKETS>,
    failures: Failures,
}

/// The `auth_bruteforce` detector; see the module documentation.
pub struct Bruteforce {
    cfg: BruteforceConfig,
    clients: Table<u64, Failures>,
    usernames: Table<u64, Failures>,
    endpoints: Table<u64, EndpointWindow>,
    counters: BruteforceCounters,
}

/// Whether `template` is a login route by its words or the configured list.
fn is_login_route(template: &str, cfg: &BruteforceConfig) -> bool {
    if cfg.routes.iter().any(|r| r == template) {
        return true;
    }
    template
        .split(['/', '-', '_', '.'])
        .filter(|w| !w.is_empty() && !w.starts_with('{'))
        .any(|w| cfg.route_words.iter().any(|r| r.eq_ignore_ascii_case(w)))
}

/// The account a login attempt names: (state hash, evidence form). Both come from a keyed
/// pseudonym (the Basic user's, else one made from the body's name), so neither the state nor
/// an alert holds anything from which the name can be guessed without the deployment key.
fn username(cx: &Context<'_>) -> Option<(u64, String)> {
    let pseudonym = match &cx.identity.basic_user {
        Some(u) => u.clone(),
        None => {
            let raw = match cx.request_json() {
                Some(Value::Object(map)) => USERNAME_FIELDS
                    .iter()
                    .find_map(|f| map.get(*f).and_then(Value::as_str))
                    .map(str::to_owned),
                _ => form_username(&cx.req.body.data),
            }?;
            let norm = raw.trim().to_lowercase();
            if norm.is_empty() || norm.len() > 256 {
                return None;
            }
            cx.learner.identity().username_pseudonym(norm.as_bytes())
        }
    };
    let shown = pseudonym.as_str();
    Some((key_hash(&[b"user", shown.as_bytes()]), shown.to_owned()))
}

/// The username of an `application/x-www-form-urlencoded` login body.
fn form_username(body: &[u8]) -> Option<String> {
    if body.len() > 4096 || body.first() == Some(&b'{') {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    text.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        USERNAME_FIELDS
            .contains(&k)
            .then(|| crate::inventory::params::percent_decode(&v.replace('+', " ")))
    })
}

/// The endpoint's learned share of 401/403 answers, when it has a learned profile.
fn learned_failure_ratio(profile: Option<&EndpointProfile>) -> Option<f64> {
    let p = profile?;
    let total = p.status.total();
    if total == 0 {
        return None;
    }
    let failures = p.status.get("401").unwrap_or(0) + p.status.get("403").unwrap_or(0);
    Some(failures as f64 / total as f64)
}

impl Bruteforce {
    pub fn new(cfg: &BruteforceConfig) -> Bruteforce {
        Bruteforce {
            cfg: cfg.clone(),
            clients: Table::default(),
            usernames: Table::default(),
            endpoints: Table::default(),
            counters: BruteforceCounters::default(),
        }
    }

    pub fn counters(&self) -> BruteforceCounters {
        let mut c = self.counters.clone();
        c.clients_turned_away = self.clients.turned_away();
        c.usernames_turned_away = self.usernames.turned_away();
        c.endpoints_turned_away = self.endpoints.turned_away();
        c
    }
}

/// A finding of one view; counts it.
fn finding(counters: &mut BruteforceCounters, cx: &Context<'_>, view: &str) -> Finding {
    counters.findings = counters.findings.saturating_add(1);
    Finding::new(AlertKind::AuthBruteforce, cx)
        .severity(Severity::High)
        .with("view", view)
        .with("route", cx.key.template.as_str())
}

impl Detector for Bruteforce {
    fn name(&self) -> &'static str {
        "auth_bruteforce"
    }

    fn counter_values(&self) -> serde_json::Value {
        serde_json::to_value(self.counters()).unwrap_or_default()
    }

    fn observe(&mut self, cx: &Context<'_>, out: &mut Vec<Finding>) {
        if !self.cfg.enabled || !is_login_route(&cx.key.template, &self.cfg) {
            return;
        }
        let status = cx.status();
        let failed = status == 401 || status == 403;
        let cfg = &self.cfg;
        let ts = cx.ts;
        let ip_key = ip_hash(cx.identity.client_ip);

        // The endpoint view counts every call, so the failure ratio has a denominator.
        let ep_slot = RollingCount::<BUCKETS>::slot_of(ts, cfg.endpoint_window_secs);
        let mut endpoint = self.endpoints.entry(
            endpoint_hash(cx),
            ts,
            cfg.max_endpoints,
            cfg.endpoint_window_secs,
        );
        if let Some(e) = endpoint.as_deref_mut() {
            e.calls.add(ep_slot, 1);
        }
        if !failed {
            return;
        }
        self.counters.failures = self.counters.failures.saturating_add(1);
        let user = username(cx);
        // (failures, calls, distinct failing clients) of the endpoint's window; a login
        // endpoint turned away by a full table is judged by the other two views only.
        let ep = endpoint.map(|e| {
            e.failures.count.add(ep_slot, 1);
            e.failures.distinct.expire(ts, cfg.endpoint_window_secs);
            e.failures.distinct.insert(ip_key, ts, false, MAX_DISTINCT);
            (
                e.failures.count.total(ep_slot),
                e.calls.total(ep_slot),
                e.failures.distinct.len(),
            )
        });

        let c_slot = RollingCount::<BUCKETS>::slot_of(ts, cfg.client_window_secs);
        let client = self
            .clients
            .entry(ip_key, ts, cfg.max_clients, cfg.client_window_secs)
            .map(|c| {
                c.count.add(c_slot, 1);
                c.distinct.expire(ts, cfg.client_window_secs);
                if let Some((h, _)) = &user {
                    c.distinct.insert(*h, ts, false, MAX_DISTINCT);
                }
                (c.count.total(c_slot), c.distinct.len())
            });

        let u_slot = RollingCount::<BUCKETS>::slot_of(ts, cfg.username_window_secs);
        let per_user = match &user {
            Some((h, shown)) => self
                .usernames
                .entry(*h, ts, cfg.max_usernames, cfg.username_window_secs)
                .map(|u| {
                    u.count.add(u_slot, 1);
                    u.distinct.expire(ts, cfg.username_window_secs);
                    u.distinct.insert(ip_key, ts, false, MAX_DISTINCT);
                    (u.count.total(u_slot), u.distinct.len(), shown.clone())
                }),
            None => None,
        };

        if let Some((failures, usernames)) = client {
            if failures >= cfg.client_min_failures {
                let summary = format!(
                    "{} failed {failures} logins on {} in {} s over {usernames} usernames (threshold {})",
                    cx.identity.client_ip,
                    cx.key.template,
                    cfg.client_window_secs,
                    cfg.client_min_failures
                );
                let f = finding(&mut self.counters, cx, "client")
                    .client_scope()
                    .confidence(0.9)
                    .summary(summary)
                    .with("failures", failures)
                    .with("threshold", cfg.client_min_failures)
                    .with("window_secs", cfg.client_window_secs)
                    .with("distinct_usernames", usernames as u64);
                out.push(f);
            }
        }
        if let Some((failures, clients, shown)) = per_user {
            if failures >= cfg.username_min_failures && clients >= cfg.username_min_clients {
                let summary = format!(
                    "{failures} failed logins for username {shown} on {} from {clients} addresses in {} s (threshold {})",
                    cx.key.template, cfg.username_window_secs, cfg.username_min_failures
                );
                let f = finding(&mut self.counters, cx, "username")
                    .endpoint_scope()
                    .confidence(0.85)
                    .summary(summary)
                    .with("username", shown)
                    .with("failures", failures)
                    .with("threshold", cfg.username_min_failures)
                    .with("distinct_clients", clients as u64)
                    .with("window_secs", cfg.username_window_secs);
                out.push(f);
                return;
            }
        }
        let Some((ep_failures, ep_calls, ep_clients)) = ep else {
            return;
        };
        let ratio = learned_failure_ratio(cx.profile);
        let expected = ratio.unwrap_or(0.0) * ep_calls as f64;
        let threshold = (cfg.endpoint_min_failures as f64)
            .max((expected * cfg.endpoint_failure_multiplier).ceil());
        if ep_failures as f64 >= threshold && ep_clients >= cfg.endpoint_min_clients {
            let summary = format!(
                "{ep_failures} failed logins on {} from {ep_clients} addresses in {} s, {:.0} expected from its learned failure ratio",
                cx.key.template, cfg.endpoint_window_secs, expected
            );
            let f = finding(&mut self.counters, cx, "distributed")
                .endpoint_scope()
                .confidence(0.75)
                .summary(summary)
                .with("failures", ep_failures)
                .with("calls", ep_calls)
                .with("expected_failures", (expected * 10.0).round() / 10.0)
                .with(
                    "baseline_failure_ratio",
                    ratio.map_or(Value::Null, |r| Value::from((r * 1e4).round() / 1e4)),
                )
                .with("threshold", threshold)
                .with("distinct_clients", ep_clients as u64)
                .with("window_secs", cfg.endpoint_window_secs);
            out.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_routes_are_recognised_by_whole_words() {
        let cfg = BruteforceConfig {
            routes: vec!["/api/v2/verify-otp".into()],
            ..BruteforceConfig::default()
        };
        for (route, login) in [
            ("/api/v1/auth/login", true),
            ("/oauth2/token", true),
            ("/api/v1/signIn", true),
            ("/api/v1/user-sessions", true),
            ("/api/v2/verify-otp", true),
            ("/api/v1/authors", false),
            ("/api/v1/tokenizer/{id}", false),
            ("/api/v1/accounts/{id}", false),
        ] {
            assert_eq!(is_login_route(route, &cfg), login, "{route}");
        }
    }

    #[test]
    fn form_bodies_give_their_username() {
        assert_eq!(
            form_username(b"username=alice%40x.example&password=hunter2").as_deref(),
            Some("alice@x.example")
        );
        assert_eq!(form_username(b"password=hunter2"), None);
        assert_eq!(form_username(b"{\"username\":\"a\"}"), None);
    }
}

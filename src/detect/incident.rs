//! The alert lifecycle: findings in, one alert per incident out.
//!
//! An incident is keyed by (kind, scope, endpoint, client): the findings of one attacker
//! walking one endpoint fold into one incident whose `count` grows. It opens with the first
//! finding (an alert is emitted at once: timeliness) and closes `cooldown_secs` of capture
//! time after its last finding, or at the end of input; if findings folded in after the
//! opening alert, a final alert with the same id and the grown `count`, `last_seen` and latest
//! evidence is emitted at close. Consumers keep the last record per id.
//!
//! Before an incident opens, the finding passes the suppression rules (operator-declared
//! benign: kind, route pattern, identity, client network, until an expiry date) and the
//! global rate limit (a token bucket over capture time: at most `max_alerts_per_minute`, with
//! that many as burst). A rate-limited incident is still tracked, silently, so its later
//! findings do not knock again at every request; it is counted, never emitted.
//!
//! Invariants: at most `max_open_incidents` are open (the least recently updated is closed
//! early, counted); time is capture time only; output order depends only on input order.

use super::{client_key, Finding, Scope};
use crate::alert::{time, Alert, AlertKind, Client, Endpoint};
use crate::common::Timestamp;
use crate::detect::FastMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Settings of the lifecycle (`[detect.lifecycle]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Seconds of capture time without a new finding after which an incident closes; findings
    /// within it fold into the open incident instead of raising a new alert.
    pub cooldown_secs: u64,
    /// Incidents open at once; beyond it the least recently updated one closes early
    /// (`evicted`).
    pub max_open_incidents: usize,
    /// New alerts per minute of capture time, across all kinds; incidents opening beyond it
    /// are tracked but not alerted (`rate_limited`). 0 disables the limit.
    pub max_alerts_per_minute: u32,
    /// Sample request ids kept in an alert's evidence (`samples`).
    pub max_samples: usize,
    /// Suppression rules: findings matching every non-empty field of a rule raise nothing.
    pub suppress: Vec<SuppressRule>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            cooldown_secs: 300,
            max_open_incidents: 10_000,
            max_alerts_per_minute: 60,
            max_samples: 5,
            suppress: Vec::new(),
        }
    }
}

/// One suppression rule. Empty fields match anything; a rule with every field empty is
/// refused (it would silence everything).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SuppressRule {
    /// Alert kind name (`recon_scan`).
    pub kind: String,
    /// Route template pattern; `*` matches any run of characters (`/internal/*`).
    pub route: String,
    /// Caller pseudonym as it appears in alerts (`client.identity`).
    pub identity: String,
    /// Client network (`10.20.0.0/16`) or address.
    pub cidr: String,
    /// Last day the rule applies (`2026-12-31`, capture time, UTC), or an RFC 3339 instant.
    /// Empty: no expiry.
    pub expires: String,
    /// Why: kept for the operator's records, shown in the suppression counter's log line.
    pub reason: String,
}

/// A rule, checked and compiled.
#[derive(Clone, Debug)]
struct Rule {
    kind: Option<AlertKind>,
    route: Option<String>,
    identity: Option<String>,
    net: Option<IpNet>,
    expires: Option<Timestamp>,
}

impl Rule {
    fn compile(r: &SuppressRule, i: usize) -> Result<Rule, String> {
        let at = |field: &str, v: &str, why: &str| format!("suppress[{i}].{field} = {v:?}: {why}");
        let kind = match r.kind.as_str() {
            "" => None,
            k => Some(
                AlertKind::ALL
                    .into_iter()
                    .find(|x| x.name() == k)
                    .ok_or_else(|| at("kind", k, "not an alert kind"))?,
            ),
        };
        let net = match r.cidr.as_str() {
            "" => None,
            c => Some(
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| at("cidr", c, "not a network or address"))?,
            ),
        };
        let expires =
            match r.expires.as_str() {
                "" => None,
                e if e.len() == 10 => Some(
                    time::parse(&format!("{e}T23:59:59.999999999Z"))
                        .ok_or_else(|| at("expires", e, "not a date (YYYY-MM-DD)"))?,
                ),
                e => Some(time::parse(e).ok_or_else(|| {
                    at("expires", e, "not a date (YYYY-MM-DD) or an RFC 3339 time")
                })?),
            };
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let rule = Rule {
            kind,
            route: nonempty(&r.route),
            identity: nonempty(&r.identity),
            net,
            expires,
        };
        if rule.kind.is_none()
            && rule.route.is_none()
            && rule.identity.is_none()
            && rule.net.is_none()
        {
            return Err(format!(
                "suppress[{i}]: names no kind, route, identity or cidr: it would silence every alert"
            ));
        }
        Ok(rule)
    }

    fn matches(&self, f: &Finding) -> bool {
        self.expires.is_none_or(|e| f.ts <= e)
            && self.kind.is_none_or(|k| k == f.kind)
            && self
                .route
                .as_deref()
                .is_none_or(|p| glob(p, &f.endpoint.route))
            && self
                .identity
                .as_deref()
                .is_none_or(|id| f.client.identity.as_deref() == Some(id))
            && self
                .net
                .is_none_or(|n| f.client.ip.is_some_and(|ip| n.contains(&ip)))
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What the lifecycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IncidentCounters {
    pub opened: u64,
    /// Findings folded into an open incident.
    pub folded: u64,
    /// Alert records emitted (openings and closing updates).
    pub emitted: u64,
    /// Findings silenced by a suppression rule, per rule index.
    pub suppressed: BTreeMap<usize, u64>,
    /// Incidents not alerted because of `max_alerts_per_minute`.
    pub rate_limited: u64,
    /// Incidents closed early because `max_open_incidents` were open.
    pub evicted: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    kind: AlertKind,
    scope: Scope,
    host: String,
    method: String,
    route: String,
    client: String,
}

struct Incident {
    alert: Alert,
    complete: u64,
    /// The count when the last record was emitted; a close emits again only if it grew.
    emitted_count: u64,
    /// Held back by the rate limit: tracked, never emitted.
    silent: bool,
    /// Open order, to break ties deterministically.
    serial: u64,
}

/// Open incidents and the lifecycle rules.
pub struct Incidents {
    cfg: LifecycleConfig,
    rules: Vec<Rule>,
    open: FastMap<Key, Incident>,
    /// Open incidents per client key, for the learning guard.
    by_client: FastMap<String, u32>,
    tokens: f64,
    refilled_at: Timestamp,
    last_sweep: Timestamp,
    serial: u64,
    counters: IncidentCounters,
}

impl Incidents {
    pub fn new(cfg: &LifecycleConfig) -> Result<Incidents, String> {
        let rules = cfg
            .suppress
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(r, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Incidents {
            cfg: cfg.clone(),
            rules,
            open: FastMap::default(),
            by_client: FastMap::default(),
            tokens: f64::from(cfg.max_alerts_per_minute),
            refilled_at: Timestamp::ZERO,
            last_sweep: Timestamp::ZERO,
            serial: 0,
            counters: IncidentCounters::default(),
        })
    }

    pub fn counters(&self) -> &IncidentCounters {
        &self.counters
    }

    /// Open incidents now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Whether the client (pseudonym or address, see [`client_key`]) has an open incident.
    pub fn client_has_open(&self, client: &str) -> bool {
        !client.is_empty() && self.by_client.get(client).is_some_and(|n| *n > 0)
    }

    fn cooldown(&self) -> crate::common::Duration {
        crate::common::Duration::from_secs(self.cfg.cooldown_secs)
    }

    /// Capture time moved to `now`: closes the incidents quiet for longer than the cooldown.
    /// Sweeps at most once per second of capture time.
    pub fn advance(&mut self, now: Timestamp, out: &mut Vec<Alert>) {
        if now.saturating_since(self.last_sweep).as_nanos() < 1_000_000_000 {
            return;
        }
        self.last_sweep = now;
        let cooldown = self.cooldown();
        let mut due: Vec<(u64, Key)> = self
            .open
            .iter()
            .filter(|(_, i)| now.saturating_since(i.alert.last_seen) > cooldown)
            .map(|(k, i)| (i.serial, k.clone()))
            .collect();
        due.sort();
        for (_, k) in due {
            self.close(&k, out);
        }
    }

    /// Folds a finding into its incident or opens one.
    pub fn submit(&mut self, f: Finding, out: &mut Vec<Alert>) {
        if let Some(i) = self.rules.iter().position(|r| r.matches(&f)) {
            *self.counters.suppressed.entry(i).or_insert(0) += 1;
            return;
        }
        let key = Key {
            kind: f.kind,
            scope: f.scope,
            host: f.endpoint.host.clone(),
            method: f.endpoint.method.clone(),
            route: f.endpoint.route.clone(),
            client: client_key(&f.client),
        };
        let max_samples = self.cfg.max_samples;
        if let Some(inc) = self.open.get_mut(&key) {
            self.counters.folded = self.counters.folded.saturating_add(1);
            fold(inc, f, max_samples);
            return;
        }
        if self.open.len() >= self.cfg.max_open_incidents.max(1) {
            self.evict_one(out);
        }
        let silent = !self.take_token(f.ts);
        if silent {
            self.counters.rate_limited = self.counters.rate_limited.saturating_add(1);
        }
        self.counters.opened = self.counters.opened.saturating_add(1);
        let mut inc = open(f, self.serial, max_samples);
        self.serial += 1;
        inc.silent = silent;
        if !silent {
            out.push(inc.alert.clone());
            self.counters.emitted = self.counters.emitted.saturating_add(1);
        }
        if !key.client.is_empty() {
            *self.by_client.entry(key.client.clone()).or_insert(0) += 1;
        }
        self.open.insert(key, inc);
    }

    /// End of input: closes every incident, oldest first.
    pub fn close_all(&mut self, out: &mut Vec<Alert>) {
        let mut all: Vec<(u64, Key)> = self
            .open
            .iter()
            .map(|(k, i)| (i.serial, k.clone()))
            .collect();
        all.sort();
        for (_, k) in all {
            self.close(&k, out);
        }
    }

    fn evict_one(&mut self, out: &mut Vec<Alert>) {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(_, i)| (i.alert.last_seen, i.serial))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.counters.evicted = self.counters.evicted.saturating_add(1);
            self.close(&k, out);
        }
    }

    fn close(&mut self, key: &Key, out: &mut Vec<Alert>) {
        let Some(mut inc) = self.open.remove(key) else {
            return;
        };
        if let Some(n) = self.by_client.get_mut(&key.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_client.remove(&key.client);
            }
        }
        if !inc.silent && inc.alert.count > inc.emitted_count {
            inc.alert.ts = inc.alert.last_seen;
            out.push(inc.alert);
            self.counters.emitted = self.counters.emitted.saturating_add(1);
        }
    }

    /// Takes one alert from the token bucket; refills at `max_alerts_per_minute` per minute
    /// of capture time.
    fn take_token(&mut self, now: Timestamp) -> bool {
        let per_minute = f64::from(self.cfg.max_alerts_per_minute);
        if per_minute == 0.0 {
            return true;
        }
        if self.refilled_at == Timestamp::ZERO {
            self.refilled_at = now;
        }
        let elapsed = now.saturating_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_minute / 60.0).min(per_minute);
        self.refilled_at = self.refilled_at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn open(f: Finding, serial: u64, max_samples: usize) -> Incident {
    let client = Client {
        ip: f.client.ip,
        identity: f.client.identity.clone(),
        role: f.client.role.clone(),
    };
    let endpoint = Endpoint {
        host: f.endpoint.host.clone(),
        method: f.endpoint.method.clone(),
        route: f.endpoint.route.clone(),
    };
    let mut alert = Alert::new(f.kind, endpoint, client, f.ts);
    alert.severity = f.severity;
    alert.confidence = f.confidence;
    alert.summary = f.summary;
    alert.evidence = f.evidence;
    alert.count = f.count.max(1);
    let complete = f.complete.min(alert.count);
    alert.capture_quality = complete as f64 / alert.count as f64;
    let samples = if max_samples > 0 {
        vec![Value::from(f.sample)]
    } else {
        Vec::new()
    };
    alert
        .evidence
        .insert("samples".to_owned(), Value::Array(samples));
    Incident {
        emitted_count: alert.count,
        alert,
        complete,
        silent: false,
        serial,
    }
}

/// Folds a later finding: counts add up, the latest evidence and summary describe the
/// incident now, severity and confidence keep their highest value, samples keep the first few.
fn fold(inc: &mut Incident, f: Finding, max_samples: usize) {
    let a = &mut inc.alert;
    let samples = match a.evidence.remove("samples") {
        Some(Value::Array(mut s)) => {
            if s.len() < max_samples && !s.iter().any(|v| v.as_str() == Some(f.sample.as_str())) {
                s.push(Value::from(f.sample));
            }
            s
        }
        _ => Vec::new(),
    };
    a.count = a.count.saturating_add(f.count.max(1));
    inc.complete = inc.complete.saturating_add(f.complete.min(f.count.max(1)));
    a.capture_quality = inc.complete as f64 / a.count as f64;
    a.last_seen = a.last_seen.max(f.ts);
    a.severity = a.severity.max(f.severity);
    a.confidence = a.confidence.max(f.confidence);
    if !f.summary.is_empty() {
        a.summary = f.summary;
    }
    if !f.evidence.is_empty() {
        a.evidence = f.evidence;
    }
    a.evidence
        .insert("samples".to_owned(), Value::Array(samples));
    if a.client.role.is_none() {
        a.client.role = f.client.role;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Severity;
    use serde_json::Map;
    use std::net::IpAddr;

    fn finding(kind: AlertKind, route: &str, ip: [u8; 4], secs: u64) -> Finding {
        Finding {
            kind,
            scope: Scope::Call,
            endpoint: Endpoint {
                host: "api.example".into(),
                method: "GET".into(),
                route: route.into(),
            },
            client: Client {
                ip: Some(IpAddr::from(ip)),
                identity: None,
                role: None,
            },
            ts: Timestamp::from_secs_nanos(1_767_600_000 + secs as i64, 0),
            severity: Severity::Medium,
            confidence: 0.7,
            summary: format!("{} at {secs}", kind.name()),
            evidence: Map::new(),
            count: 1,
            complete: 1,
            sample: format!("flow{secs}#0"),
        }
    }

    fn feed(inc: &mut Incidents, fs: Vec<Finding>) -> Vec<Alert> {
        let mut out = Vec::new();
        for f in fs {
            inc.advance(f.ts, &mut out);
            inc.submit(f, &mut out);
        }
        inc.close_all(&mut out);
        out
    }

    #[test]
    fn findings_within_the_cooldown_fold_into_one_incident() {
        let mut inc = Incidents::new(&LifecycleConfig::default()).unwrap();
        let fs = (0..50)
            .map(|i| finding(AlertKind::Injection, "/a", [1, 2, 3, 4], i * 10))
            .collect();
        let out = feed(&mut inc, fs);
        // One alert at opening, one final record with the grown count, same id.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].id, out[1].id);
        assert_eq!(out[0].count, 1);
        assert_eq!(out[1].count, 50);
        assert_eq!(out[1].last_seen.secs() - out[1].first_seen.secs(), 490);
        assert_eq!(out[1].evidence["samples"].as_array().unwrap().len(), 5);
        for a in &out {
            a.validate().unwrap();
        }
    }

    #[test]
    fn a_quiet_gap_longer_than_the_cooldown_opens_a_new_incident() {
        let mut inc = Incidents::new(&LifecycleConfig::default()).unwrap();
        let fs = vec![
            finding(AlertKind::Injection, "/a", [1, 2, 3, 4], 0),
            finding(AlertKind::Injection, "/a", [1, 2, 3, 4], 301),
        ];
        let out = feed(&mut inc, fs);
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].id, out[1].id);
        assert!(out.iter().all(|a| a.count == 1));
    }

    #[test]
    fn kind_endpoint_and_client_each_separate_incidents() {
        let mut inc = Incidents::new(&LifecycleConfig::default()).unwrap();
        let fs = vec![
            finding(AlertKind::Injection, "/a", [1, 2, 3, 4], 0),
            finding(AlertKind::Bola, "/a", [1, 2, 3, 4], 1),
            finding(AlertKind::Injection, "/b", [1, 2, 3, 4], 2),
            finding(AlertKind::Injection, "/a", [1, 2, 3, 5], 3),
            finding(AlertKind::Injection, "/a", [1, 2, 3, 4], 4),
        ];
        let out = feed(&mut inc, fs);
        let ids: std::collections::BTreeSet<_> = out.iter().map(|a| a.id.clone()).collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(inc.counters().folded, 1);
    }

    #[test]
    fn suppression_rules_match_every_given_field_until_they_expire() {
        let cfg = LifecycleConfig {
            suppress: vec![SuppressRule {
                kind: "injection".into(),
                route: "/internal/*".into(),
                cidr: "10.0.0.0/8".into(),
                expires: "2026-01-05".into(),
                ..SuppressRule::default()
            }],
            ..LifecycleConfig::default()
        };
        let mut inc = Incidents::new(&cfg).unwrap();
        // 1_767_600_000 is 2026-01-05 08:00 UTC.
        let fs = vec![
            finding(AlertKind::Injection, "/internal/x", [10, 1, 1, 1], 0),
            finding(AlertKind::Injection, "/internal/x", [11, 1, 1, 1], 1),
            finding(AlertKind::Bola, "/internal/x", [10, 1, 1, 1], 2),
            finding(AlertKind::Injection, "/public", [10, 1, 1, 1], 3),
            finding(AlertKind::Injection, "/internal/y", [10, 1, 1, 2], 86_400),
        ];
        let out = feed(&mut inc, fs);
        assert_eq!(inc.counters().suppressed.get(&0), Some(&1));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn bad_rules_are_refused_with_their_index_and_field() {
        for (rule, want) in [
            (SuppressRule::default(), "suppress[0]: names no kind"),
            (
                SuppressRule {
                    kind: "bogus".into(),
                    ..SuppressRule::default()
                },
                "suppress[0].kind = \"bogus\": not an alert kind",
            ),
            (
                SuppressRule {
                    cidr: "10.0.0.0/33".into(),
                    ..SuppressRule::default()
                },
                "suppress[0].cidr",
            ),
            (
                SuppressRule {
                    kind: "bola".into(),
                    expires: "tomorrow".into(),
                    ..SuppressRule::default()
                },
                "suppress[0].expires",
            ),
        ] {
            let cfg = LifecycleConfig {
                suppress: vec![rule],
                ..LifecycleConfig::default()
            };
            let e = Incidents::new(&cfg).err().expect("refused");
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn the_rate_limit_holds_back_new_incidents_and_refills_with_capture_time() {
        let cfg = LifecycleConfig {
            max_alerts_per_minute: 3,
            ..LifecycleConfig::default()
        };
        let mut inc = Incidents::new(&cfg).unwrap();
        let mut fs: Vec<Finding> = (0..10u8)
            .map(|i| finding(AlertKind::ReconScan, "/a", [9, 9, 9, i], 0))
            .collect();
        // A minute later the bucket has three tokens again.
        fs.extend((0..5u8).map(|i| finding(AlertKind::ReconScan, "/a", [8, 8, 8, i], 60)));
        let out = feed(&mut inc, fs);
        assert_eq!(out.len(), 6);
        assert_eq!(inc.counters().rate_limited, 9);
    }

    #[test]
    fn the_open_table_is_capped_and_evicts_the_least_recently_updated() {
        let cfg = LifecycleConfig {
            max_open_incidents: 4,
            max_alerts_per_minute: 0,
            ..LifecycleConfig::default()
        };
        let mut inc = Incidents::new(&cfg).unwrap();
        let fs: Vec<Finding> = (0..10u8)
            .map(|i| finding(AlertKind::Injection, "/a", [7, 7, 7, i], u64::from(i)))
            .collect();
        let mut out = Vec::new();
        for f in fs {
            inc.submit(f, &mut out);
            assert!(inc.open_count() <= 4);
        }
        assert_eq!(inc.counters().evicted, 6);
    }

    #[test]
    fn open_incidents_mark_their_client_for_the_learning_guard() {
        let mut inc = Incidents::new(&LifecycleConfig::default()).unwrap();
        let mut out = Vec::new();
        inc.submit(finding(AlertKind::Bola, "/a", [5, 5, 5, 5], 0), &mut out);
        assert!(inc.client_has_open("5.5.5.5"));
        assert!(!inc.client_has_open("5.5.5.6"));
        inc.advance(
            finding(AlertKind::Bola, "/a", [5, 5, 5, 5], 400).ts,
            &mut out,
        );
        assert!(!inc.client_has_open("5.5.5.5"));
    }

    #[test]
    fn glob_matches_stars_anywhere() {
        for (p, t, want) in [
            ("/internal/*", "/internal/a/b", true),
            ("/internal/*", "/internals", false),
            ("*", "", true),
            ("/a/*/c", "/a/b/c", true),
            ("/a/*/c", "/a/b/d", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
            ("*/users/*", "/v1/users/{id}", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} vs {t}");
        }
    }
}

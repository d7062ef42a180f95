//! Scoring alerts against the labelled incidents of the attack capture.
//!
//! An alert *matches* a label when its `[first_seen, last_seen]` overlaps the label's
//! `[start - 5 s, end + 120 s]` (detectors may need a window to fill before they fire), the
//! label names no client or the alert's client IP equals it, and the label names no route, the
//! alert's route is `*`, or both routes are equal once every `{name}` is written `{}`.
//! Recall per kind counts labels matched by an alert *of that kind*; precision counts alerts
//! matching *any* label, because one attack may rightly raise two kinds.
//!
//! Invariants: pure functions of their inputs; empty inputs give recall and precision of 1
//! (nothing was missed, nothing was wrong) rather than a division by zero.

use super::Label;
use crate::alert::{Alert, AlertKind};
use crate::common::Duration;
use std::fmt;

/// How long before a label's start an alert may begin and still match it.
pub const EARLY_SECS: u64 = 5;
/// How long after a label's end an alert may begin and still match it.
pub const LATE_SECS: u64 = 120;

/// Recall of one kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KindScore {
    pub kind: AlertKind,
    pub labels: usize,
    /// Labels matched by an alert of this kind.
    pub detected: usize,
    /// `detected / labels`, 1 when there are no labels.
    pub recall: f64,
}

/// The result of [`score`].
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// One row per kind, in [`AlertKind::ALL`] order.
    pub kinds: Vec<KindScore>,
    pub alerts: usize,
    /// Alerts matching no label.
    pub false_alerts: usize,
    /// `(alerts - false_alerts) / alerts`, 1 when there are no alerts.
    pub precision: f64,
    /// False alerts per hour of the benign hours given.
    pub false_alerts_per_hour: f64,
}

impl Score {
    /// The lowest recall over kinds that have labels.
    pub fn min_recall(&self) -> f64 {
        self.kinds
            .iter()
            .filter(|k| k.labels > 0)
            .map(|k| k.recall)
            .fold(1.0, f64::min)
    }
}

/// `/a/{id}/b` and `/a/{accountId}/b` are the same route.
fn normalise(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    let mut inside = false;
    for c in route.chars() {
        match c {
            '{' => {
                inside = true;
                out.push_str("{}");
            }
            '}' if inside => inside = false,
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// Whether `alert` matches `label` (see the module documentation).
pub fn matches(label: &Label, alert: &Alert) -> bool {
    let from = label
        .start
        .as_nanos()
        .saturating_sub(Duration::from_secs(EARLY_SECS).as_nanos());
    let to = label.end.add(Duration::from_secs(LATE_SECS)).as_nanos();
    let overlaps = alert.first_seen.as_nanos() <= to && alert.last_seen.as_nanos() >= from;
    // An alert about an endpoint as a whole (no client) is judged on time and route alone.
    let client = label
        .client_ip
        .is_none_or(|ip| alert.client.ip.is_none_or(|a| a == ip));
    let route = match &label.route {
        None => true,
        Some(r) => alert.endpoint.route == "*" || normalise(r) == normalise(&alert.endpoint.route),
    };
    overlaps && client && route
}

/// Scores `alerts` raised on the attack capture against its `labels`; `benign_hours` is the
/// length of benign traffic the alerts came from, for the false-alert rate (0: not reported).
pub fn score(labels: &[Label], alerts: &[Alert], benign_hours: f64) -> Score {
    let kinds = AlertKind::ALL
        .iter()
        .map(|&kind| {
            let of_kind: Vec<&Label> = labels.iter().filter(|l| l.kind == kind).collect();
            let detected = of_kind
                .iter()
                .filter(|l| alerts.iter().any(|a| a.kind == kind && matches(l, a)))
                .count();
            KindScore {
                kind,
                labels: of_kind.len(),
                detected,
                recall: ratio(detected, of_kind.len()),
            }
        })
        .collect();
    let false_alerts = alerts
        .iter()
        .filter(|a| !labels.iter().any(|l| matches(l, a)))
        .count();
    Score {
        kinds,
        alerts: alerts.len(),
        false_alerts,
        precision: ratio(alerts.len() - false_alerts, alerts.len()),
        false_alerts_per_hour: false_alerts_per_hour(false_alerts, benign_hours),
    }
}

/// False alerts per hour; 0 when `hours` is not positive. On the benign capture every alert is
/// false, so pass `alerts.len()`.
pub fn false_alerts_per_hour(false_alerts: usize, hours: f64) -> f64 {
    if hours > 0.0 {
        false_alerts as f64 / hours
    } else {
        0.0
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 {
        1.0
    } else {
        n as f64 / d as f64
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<22} {:>6} {:>8} {:>7}",
            "kind", "labels", "detected", "recall"
        )?;
        for k in &self.kinds {
            writeln!(
                f,
                "{:<22} {:>6} {:>8} {:>7.2}",
                k.kind.name(),
                k.labels,
                k.detected,
                k.recall
            )?;
        }
        writeln!(
            f,
            "precision {:.3} ({} of {} alerts match a label), {} false alerts, {:.2} false alerts/hour",
            self.precision,
            self.alerts - self.false_alerts,
            self.alerts,
            self.false_alerts,
            self.false_alerts_per_hour
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Client, Endpoint, Severity};
    use crate::common::Timestamp;
    use std::net::IpAddr;

    const T0: u64 = 1_768_215_600;

    fn ts(s: u64) -> Timestamp {
        Timestamp::from_secs_nanos((T0 + s) as i64, 0)
    }

    fn label(kind: AlertKind, span: (u64, u64), ip: Option<&str>, route: Option<&str>) -> Label {
        Label {
            id: format!("{}-x", kind.name()),
            kind,
            start: ts(span.0),
            end: ts(span.1),
            client_ip: ip.map(|s| s.parse().unwrap()),
            host: "api.bank.example".into(),
            method: Some("GET".into()),
            route: route.map(String::from),
            description: String::new(),
        }
    }

    fn alert(kind: AlertKind, seen: (u64, u64), ip: &str, route: &str) -> Alert {
        Alert {
            id: "0".repeat(32),
            ts: ts(seen.0),
            kind,
            owasp: kind.owasp(),
            severity: Severity::High,
            confidence: 0.9,
            summary: "s".into(),
            endpoint: Endpoint {
                host: "api.bank.example".into(),
                method: "GET".into(),
                route: route.into(),
            },
            client: Client {
                ip: Some(ip.parse::<IpAddr>().unwrap()),
                identity: None,
                role: None,
            },
            evidence: Default::default(),
            first_seen: ts(seen.0),
            last_seen: ts(seen.1),
            count: 1,
            capture_quality: 1.0,
        }
    }

    const ACCT: &str = "/api/v1/accounts/{accountId}";

    #[test]
    fn matching_follows_time_client_and_route_rules() {
        let l = label(AlertKind::Bola, (100, 160), Some("203.0.113.5"), Some(ACCT));
        // (alert span, ip, route, matches)
        let cases: &[((u64, u64), &str, &str, bool)] = &[
            ((120, 130), "203.0.113.5", ACCT, true),
            ((120, 130), "203.0.113.5", "/api/v1/accounts/{id}", true),
            ((120, 130), "203.0.113.5", "*", true),
            ((120, 130), "203.0.113.6", ACCT, false),
            (
                (120, 130),
                "203.0.113.5",
                "/api/v1/accounts/{id}/transactions",
                false,
            ),
            ((95, 95), "203.0.113.5", ACCT, true),
            ((90, 94), "203.0.113.5", ACCT, false),
            ((280, 300), "203.0.113.5", ACCT, true),
            ((281, 300), "203.0.113.5", ACCT, false),
            ((10, 500), "203.0.113.5", ACCT, true),
        ];
        for (seen, ip, route, want) in cases {
            let a = alert(AlertKind::Bola, *seen, ip, route);
            assert_eq!(matches(&l, &a), *want, "{seen:?} {ip} {route}");
        }
        let open = label(AlertKind::ReconScan, (100, 160), None, None);
        assert!(matches(
            &open,
            &alert(AlertKind::ReconScan, (150, 150), "192.0.2.1", "/x")
        ));
    }

    #[test]
    fn recall_needs_the_same_kind_and_precision_accepts_any_kind() {
        let labels = vec![
            label(AlertKind::Bola, (100, 160), Some("203.0.113.5"), Some(ACCT)),
            label(
                AlertKind::Bola,
                (1_000, 1_060),
                Some("203.0.113.7"),
                Some(ACCT),
            ),
            label(
                AlertKind::Injection,
                (2_000, 2_020),
                Some("203.0.113.9"),
                None,
            ),
        ];
        let alerts = vec![
            alert(
                AlertKind::Bola,
                (130, 140),
                "203.0.113.5",
                "/api/v1/accounts/{id}",
            ),
            // Right incident, other kind: precise, but no recall for bola-2.
            alert(AlertKind::ReconScan, (1_010, 1_020), "203.0.113.7", ACCT),
            alert(
                AlertKind::Injection,
                (2_005, 2_006),
                "203.0.113.9",
                "/api/v1/search",
            ),
            // Nothing happened here.
            alert(AlertKind::VolumeSpike, (3_000, 3_100), "198.51.100.1", "*"),
        ];
        let s = score(&labels, &alerts, 2.0);
        let bola = s.kinds.iter().find(|k| k.kind == AlertKind::Bola).unwrap();
        assert_eq!((bola.labels, bola.detected, bola.recall), (2, 1, 0.5));
        let inj = s
            .kinds
            .iter()
            .find(|k| k.kind == AlertKind::Injection)
            .unwrap();
        assert_eq!((inj.labels, inj.detected), (1, 1));
        let recon = s
            .kinds
            .iter()
            .find(|k| k.kind == AlertKind::ReconScan)
            .unwrap();
        assert_eq!((recon.labels, recon.recall), (0, 1.0));
        assert_eq!(s.kinds.len(), 18);
        assert_eq!((s.alerts, s.false_alerts), (4, 1));
        assert_eq!(s.precision, 0.75);
        assert_eq!(s.false_alerts_per_hour, 0.5);
        assert_eq!(s.min_recall(), 0.5);
        let table = s.to_string();
        assert!(table.contains("bola"), "{table}");
        assert!(table.contains("precision 0.750"), "{table}");
    }

    #[test]
    fn empty_inputs_score_perfectly_and_benign_rate_divides_by_hours() {
        let s = score(&[], &[], 0.0);
        assert_eq!((s.precision, s.false_alerts, s.min_recall()), (1.0, 0, 1.0));
        assert_eq!(false_alerts_per_hour(3, 2.0), 1.5);
        assert_eq!(false_alerts_per_hour(3, 0.0), 0.0);
        assert_eq!(normalise("/a/{x}/b/{yy}"), "/a/{}/b/{}");
        assert_eq!(normalise("/a/b"), "/a/b");
    }
}

//! Tests of the alert record contract. End-to-end sink tests live in `sink_tests.rs`.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::*;

pub(crate) fn sample(i: usize, base: Timestamp) -> Alert {
    let kind = AlertKind::ALL[i % AlertKind::ALL.len()];
    let first_seen = base.add(crate::common::Duration::from_nanos(i as u64 * 1_000_003));
    let mut a = Alert::new(
        kind,
        Endpoint {
            host: "api.example.com".into(),
            method: if i % 2 == 0 { "GET" } else { "POST" }.into(),
            route: format!("/v1/accounts/{{id}}/orders/{}", i % 7),
        },
        Client {
            ip: Some(IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8 + 1])),
            identity: (i % 3 != 0).then(|| format!("id:{:016x}", i * 7919)),
            role: (i % 5 == 0).then(|| "user".to_string()),
        },
        first_seen,
    );
    a.ts = first_seen.add(crate::common::Duration::from_secs(2));
    a.last_seen = a.ts;
    a.count = 1 + (i as u64 % 9);
    a.confidence = 0.5 + (i % 5) as f64 / 10.0;
    a.severity = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ][i % 4];
    a.summary = format!("Alert number {i} for {}.", kind.name());
    a.capture_quality = 0.75;
    a.evidence = json!({"objects_seen": i, "status_codes": [200, 403], "sample_route": "/v1/x"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    a
}

fn base() -> Timestamp {
    Timestamp::from_secs_nanos(1_700_000_000, 250_000_000)
}

#[test]
fn json_has_exactly_the_contract_fields() {
    let a = sample(5, base());
    let v = serde_json::to_value(&a).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = vec![
        "id",
        "ts",
        "kind",
        "owasp",
        "severity",
        "confidence",
        "summary",
        "endpoint",
        "client",
        "evidence",
        "first_seen",
        "last_seen",
        "count",
        "capture_quality",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(
        v["endpoint"],
        json!({"host": "api.example.com", "method": "POST", "route": "/v1/accounts/{id}/orders/5"})
    );
    assert_eq!(v["client"]["ip"], "10.0.0.6");
    assert_eq!(v["first_seen"], "2023-11-14T22:13:20.255000015Z");
    assert_eq!(v["ts"], "2023-11-14T22:13:22.255000015Z");
    assert_eq!(v["kind"], "sensitive_data");
    assert_eq!(v["owasp"], "API3:2023");
    assert_eq!(v["severity"], "medium");
    assert_eq!(v["client"]["identity"], "id:0000000000009aab");
    assert_eq!(v["client"]["role"], "user");
    assert_eq!(v["capture_quality"], 0.75);
    let back: Alert = serde_json::from_value(v).unwrap();
    assert_eq!(back, a);
}

#[test]
fn kind_names_round_trip_through_serde_and_name() {
    let expected = [
        "bola",
        "auth_bruteforce",
        "impossible_travel",
        "mass_assignment",
        "excessive_data",
        "sensitive_data",
        "volume_spike",
        "graphql_abuse",
        "bfla",
        "injection",
        "parameter_anomaly",
        "shadow_endpoint",
        "deprecated_endpoint",
        "secret_in_url",
        "cleartext_credentials",
        "error_spike",
        "recon_scan",
        "protocol_anomaly",
    ];
    for (kind, name) in AlertKind::ALL.iter().zip(expected) {
        assert_eq!(kind.name(), name);
        assert_eq!(
            serde_json::to_value(kind).unwrap(),
            Value::String(name.into())
        );
        let back: AlertKind = serde_json::from_value(Value::String(name.into())).unwrap();
        assert_eq!(back, *kind);
        if let Some(o) = kind.owasp() {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                Value::String(o.name().into())
            );
        }
    }
}

#[test]
fn owasp_table() {
    let table: &[(AlertKind, Option<&str>)] = &[
        (AlertKind::Bola, Some("API1:2023")),
        (AlertKind::AuthBruteforce, Some("API2:2023")),
        (AlertKind::SecretInUrl, Some("API2:2023")),
        (AlertKind::MassAssignment, Some("API3:2023")),
        (AlertKind::VolumeSpike, Some("API4:2023")),
        (AlertKind::Bfla, Some("API5:2023")),
        (AlertKind::ShadowEndpoint, Some("API9:2023")),
        (AlertKind::Injection, None),
        (AlertKind::ProtocolAnomaly, None),
    ];
    for (kind, owasp) in table {
        assert_eq!(kind.owasp().map(Owasp::name), *owasp, "{kind}");
    }
}

#[test]
fn ids_are_deterministic_and_depend_on_each_input() {
    let a = sample(4, base());
    assert_eq!(a.id.len(), 32);
    assert!(a
        .id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(sample(4, base()).id, a.id, "same inputs, same id");
    let id = |f: &dyn Fn(&mut Alert)| {
        let mut b = a.clone();
        f(&mut b);
        Alert::derive_id(b.kind, &b.endpoint, &b.client, b.first_seen)
    };
    let variants = [
        id(&|b| b.kind = AlertKind::Bfla),
        id(&|b| b.endpoint.host.push('x')),
        id(&|b| b.endpoint.method = "PUT".into()),
        id(&|b| b.endpoint.route.push('/')),
        id(&|b| b.client.ip = Some(IpAddr::from([10, 9, 9, 9]))),
        id(&|b| b.client.identity = None),
        id(&|b| b.first_seen = b.first_seen.add(crate::common::Duration::from_nanos(1))),
        // Length prefixes: moving a byte between adjacent fields changes the id.
        id(&|b| {
            b.endpoint.host = "api.example.co".into();
            b.endpoint.method = format!("m{}", b.endpoint.method);
        }),
    ];
    for v in &variants {
        assert_ne!(*v, a.id);
    }
    // Not part of the id: the learned role, severity, counts, evidence.
    assert_eq!(id(&|b| b.client.role = Some("admin".into())), a.id);
    assert_eq!(id(&|b| b.count = 99), a.id);
}

#[test]
fn validate_accepts_samples_and_names_each_problem() {
    for i in 0..40 {
        assert_eq!(sample(i, base()).validate(), Ok(()), "sample {i}");
    }
    type Edit = fn(&mut Alert);
    let cases: &[(Edit, &str)] = &[
        (|a| a.summary = " ".into(), "summary: must not be empty"),
        (|a| a.endpoint.route.clear(), "endpoint.route: must not be empty"),
        (|a| a.client.identity = Some(String::new()), "client.identity: must not be empty"),
        (|a| a.confidence = 1.5, "confidence: 1.5: must be a number between 0 and 1"),
        (|a| a.confidence = f64::NAN, "confidence: NaN: must be a number between 0 and 1"),
        (|a| a.count = 0, "count: must be at least 1"),
        (
            |a| a.last_seen = Timestamp::from_nanos(a.first_seen.as_nanos() - 1),
            "first_seen: 1700000000.255000015: must not be later than last_seen 1700000000.255000014",
        ),
        (
            |a| a.ts = Timestamp::ZERO,
            "ts: 0.000000000: must not be earlier than first_seen 1700000000.255000015",
        ),
        (|a| a.owasp = None, "owasp: null: kind sensitive_data maps to API3:2023"),
        (
            |a| {
                a.evidence.insert("auth".into(), json!({"header": "Bearer abcdefghijklmnop"}));
            },
            "evidence.auth.header: looks like a raw credential; redact it or use a pseudonym",
        ),
        (
            |a| {
                a.evidence.insert(
                    "tokens".into(),
                    json!(["ok", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"]),
                );
            },
            "evidence.tokens[1]: looks like a raw credential; redact it or use a pseudonym",
        ),
    ];
    for (edit, expected) in cases {
        let mut a = sample(5, base());
        edit(&mut a);
        assert_eq!(
            a.validate().map_err(|e| e.to_string()),
            Err(expected.to_string())
        );
    }
    let mut a = sample(5, base());
    a.first_seen = a.first_seen.add(crate::common::Duration::from_nanos(1));
    assert!(matches!(a.validate(), Err(AlertError::Id { .. })));
}

#[test]
fn prose_about_credentials_is_not_a_credential() {
    for ok in [
        "basic auth over cleartext",
        "Bearer token reused from 3 IPs",
        "eyJ",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "user:3f2a9c0d11e2b7a4",
    ] {
        assert!(!looks_like_credential(ok), "{ok}");
    }
    for bad in [
        "Basic dXNlcjpwYXNzd29yZA==",
        "bearer abcdefgh12345678",
        "token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.xxxx",
    ] {
        assert!(looks_like_credential(bad), "{bad}");
    }
}

#[test]
fn deep_evidence_is_refused_without_recursing_forever() {
    let mut v = json!("leaf");
    for _ in 0..100 {
        v = json!({ "n": v });
    }
    let mut a = sample(1, base());
    a.evidence.insert("deep".into(), v);
    assert_eq!(a.validate(), Err(AlertError::EvidenceTooDeep));
}

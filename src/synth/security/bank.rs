//! The invented API of the security suite, `api.bank.example`, and its benign callers.
//!
//! [`Bank`] holds the callers: [`USERS`] people with JWT bearer tokens (customers, a few
//! support agents and admins) and [`PARTNERS`] integrations with API keys. Every caller reaches
//! the API servers (10.1.0.10-17, port 80) through the load balancer (10.0.0.2-9), which adds
//! `X-Forwarded-For: <client ip>`. [`Background`] draws benign sessions as Poisson arrivals
//! whose rate follows [`rate_rps`], a smooth diurnal curve.
//!
//! Invariants: a user's home address, accounts, role and name depend on the seed and the user id
//! only, so training and test captures agree about who owns what; account ids are disjoint per
//! user; benign traffic never uses the deprecated `/api/v0` route, the shadow routes or another
//! user's account or profile, and never carries a full card number.

use super::{request, response, Exchange, SecurityOptions, Session};
use crate::common::{Duration, Timestamp};
use crate::synth::api::base64url;
use crate::synth::rng::Rng;
use crate::synth::tcp::Impairments;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Users with a JWT.
pub const USERS: u32 = 3_200;
/// Partner integrations with an API key.
pub const PARTNERS: u32 = 20;
/// Mean requests per benign session, measured over the session mix below; the session arrival
/// rate is the request rate divided by it.
const MEAN_REQUESTS_PER_SESSION: f64 = 3.35;

/// Addresses inside networks of MaxMind's `GeoLite2-City-Test.mmdb` (its source data,
/// `GeoLite2-City-Test.json`), so a detector with that database can place them: London
/// (81.2.69.144/28, accuracy 3 km), Linköping (89.160.20.112/28), Boxford GB (2.125.160.216/29)
/// and Milton, WA (216.160.83.56/29). Every 25th user lives at one of them.
pub const GEO_HOMES: [Ipv4Addr; 12] = [
    Ipv4Addr::new(81, 2, 69, 145),
    Ipv4Addr::new(81, 2, 69, 147),
    Ipv4Addr::new(81, 2, 69, 150),
    Ipv4Addr::new(81, 2, 69, 153),
    Ipv4Addr::new(81, 2, 69, 156),
    Ipv4Addr::new(89, 160, 20, 114),
    Ipv4Addr::new(89, 160, 20, 120),
    Ipv4Addr::new(89, 160, 20, 125),
    Ipv4Addr::new(2, 125, 160, 217),
    Ipv4Addr::new(2, 125, 160, 220),
    Ipv4Addr::new(216, 160, 83, 57),
    Ipv4Addr::new(216, 160, 83, 61),
];

/// Far cities of the same test database, used only by impossible-travel incidents: San Diego
/// (214.78.0.0/19, accuracy 10 km) and Changchun (175.16.199.0/24).
pub const FAR_AWAY: [Ipv4Addr; 2] = [
    Ipv4Addr::new(214, 78, 1, 20),
    Ipv4Addr::new(175, 16, 199, 20),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Customer,
    Support,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Support => "support",
            Role::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: u32,
    pub username: String,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub role: Role,
    pub tenant: u32,
    /// The stable address the user's requests come from (behind the load balancer).
    pub home: IpAddr,
    pub user_agent: &'static str,
    /// Account ids, disjoint across users.
    pub accounts: Vec<u64>,
}

#[derive(Clone, Debug)]
pub struct Partner {
    pub id: u32,
    pub name: String,
    pub api_key: String,
    pub ip: IpAddr,
}

const FIRST: &[&str] = &[
    "Ada",
    "José",
    "Zoë",
    "Siobhán",
    "Liam",
    "Mia",
    "Noah",
    "Åsa",
    "Björn",
    "Chloé",
    "Dmitri",
    "Emma",
    "François",
    "Grace",
    "Hiroshi",
    "Inés",
    "Jürgen",
    "Kai",
    "Léa",
    "Mateo",
];
const LAST: &[&str] = &[
    "O'Brien",
    "Núñez",
    "Müller",
    "Ångström",
    "Smith",
    "García",
    "Nguyen",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Johansson",
    "Tanaka",
    "Okafor",
    "Silva",
    "Brown",
    "Łukasz",
    "D'Amico",
    "Ivanova",
];
/// Innocent search terms that look like payloads to a careless detector.
pub const SEARCHES: &[&str] = &[
    "O'Brien",
    "rock & roll",
    "50% off",
    "c++ books",
    "savings account",
    "credit card",
    "José Núñez",
    "select comfort",
    "union jack mug",
    "drop-off location",
    "mortgage rates 2026",
    "IBAN",
    "lost card",
    "<3 gift card",
    "1=1 consultation",
    "cashback",
    "café crème",
    "how to transfer",
    "fees; charges",
    "\"premium\" account",
];
const MEMOS: &[&str] = &[
    "Rent - January & utilities",
    "50% split dinner",
    "Payment; thanks!",
    "Gift for Zoë",
    "Invoice #2026-0012",
    "O'Reilly books",
    "Groceries",
    "Loan repayment (1/12)",
];
pub const CATEGORIES: &[&str] = &["cards", "loans", "savings", "insurance", "mortgages"];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "BankApp/7.3.0 (iPhone; iOS 18.1)",
    "BankApp/7.2.4 (Android 14; Pixel 8)",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
];
const PARTNER_AGENTS: &[&str] = &[
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
];

fn pick<'a>(r: &mut Rng, xs: &[&'a str]) -> &'a str {
    r.pick(xs).copied().unwrap_or("")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Requests per second of benign traffic at `hour` (UTC, fractional) of a weekday: a Gaussian
/// bump peaking at 62 requests/s at 13:00 over a floor of 6, so 10:00-11:00 averages about 50.
pub fn rate_rps(hour: f64) -> f64 {
    let d = (hour - 13.0) / 3.5;
    6.0 + 56.0 * (-0.5 * d * d).exp()
}

/// A window in which one endpoint fails a share of ordinary calls (the error-spike incidents).
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub method: &'static str,
    pub route: &'static str,
    pub from: Timestamp,
    pub to: Timestamp,
    pub share: f64,
    pub status: u16,
}

/// Every caller of the API.
pub struct Bank {
    pub users: Vec<User>,
    pub partners: Vec<Partner>,
    seed: u64,
}

impl Bank {
    pub fn new(seed: u64) -> Bank {
        let users = (0..USERS).map(|id| make_user(seed, id)).collect();
        let partners = (0..PARTNERS)
            .map(|id| {
                let mut r = Rng::new(seed ^ 0x7061_7274 ^ u64::from(id) << 20);
                let mut key = [0u8; 18];
                r.fill(&mut key);
                Partner {
                    id,
                    name: format!("partner-{id:02}"),
                    api_key: format!("pk_live_{}", hex(&key)),
                    ip: IpAddr::V4(Ipv4Addr::new(198, 18, 7, 10 + id as u8)),
                }
            })
            .collect();
        Bank {
            users,
            partners,
            seed,
        }
    }

    pub fn user(&self, id: u32) -> Option<&User> {
        self.users.get(id as usize)
    }

    /// A bearer token valid at `now`: issued up to an hour before, valid for two hours.
    pub fn jwt(&self, u: &User, now: Timestamp) -> String {
        let iat = now.secs() / 3_600 * 3_600 - 600;
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = json!({
            "sub": format!("u-{}", u.id),
            "role": u.role.name(),
            "tenant": format!("t-{}", u.tenant),
            "iss": "https://auth.bank.example",
            "iat": iat,
            "exp": iat + 7_200,
        });
        let payload = base64url(claims.to_string().as_bytes());
        let mut sig = [0u8; 32];
        Rng::new(self.seed ^ u64::from(u.id) << 32 ^ iat).fill(&mut sig);
        format!("{header}.{payload}.{}", base64url(&sig))
    }

    /// The headers a user's request carries after the load balancer.
    pub fn user_headers(&self, u: &User, now: Timestamp, from: IpAddr) -> Vec<(String, String)> {
        vec![
            ("User-Agent".into(), u.user_agent.into()),
            ("Accept".into(), "application/json".into()),
            (
                "Authorization".into(),
                format!("Bearer {}", self.jwt(u, now)),
            ),
            ("X-Forwarded-For".into(), from.to_string()),
        ]
    }

    /// Owner view of one account. Card numbers are masked.
    pub fn account_json(&self, u: &User, acct: u64) -> Value {
        let mut r = Rng::new(self.seed ^ acct.wrapping_mul(0x9E37));
        let last4 = r.range(1_000, 9_999);
        json!({
            "id": acct,
            "owner": format!("u-{}", u.id),
            "type": pick(&mut r, &["checking", "savings", "credit"]),
            "iban": format!("DE89 **** **** **** {:04}", r.range(1_000, 9_999)),
            "currency": "EUR",
            "balance": r.range(0, 2_500_000) as f64 / 100.0,
            "available": r.range(0, 2_000_000) as f64 / 100.0,
            "card": {"brand": pick(&mut r, &["visa", "mastercard"]), "masked": format!("**** {last4}")},
            "status": "active",
            "openedAt": format!("20{:02}-{:02}-{:02}", r.range(15, 25), r.range(1, 12), r.range(1, 28)),
        })
    }

    pub fn transactions_json(&self, r: &mut Rng, acct: u64, page: u64, limit: u64) -> Value {
        let items: Vec<Value> = (0..limit)
            .map(|i| {
                json!({
                    "id": format!("tx_{:x}", r.next_u64() >> 16),
                    "date": format!("2026-01-{:02}", 1 + (i + page) % 11),
                    "amount": (r.range(1, 250_000) as f64 / 100.0) * if r.chance(0.7) { -1.0 } else { 1.0 },
                    "currency": "EUR",
                    "description": pick(r, MEMOS),
                    "category": pick(r, &["groceries", "rent", "travel", "salary", "utilities", "dining"]),
                })
            })
            .collect();
        json!({"accountId": acct, "page": page, "limit": limit, "items": items})
    }

    pub fn profile_json(&self, u: &User) -> Value {
        json!({
            "id": format!("u-{}", u.id),
            "username": u.username,
            "name": u.name,
            "email": u.email,
            "phone": u.phone,
            "address": {"city": pick(&mut Rng::new(u64::from(u.id)), &["London", "Berlin", "Lyon", "Malmö", "Porto", "Dublin"]), "country": "EU"},
            "preferences": {"language": "en", "newsletter": u.id % 3 == 0},
            "createdAt": format!("2024-{:02}-{:02}T09:00:00Z", 1 + u.id % 12, 1 + u.id % 28),
        })
    }

    /// A support export: one row per card payment of the month.
    pub fn export_json(&self, r: &mut Rng, month: &str, rows: u64) -> Value {
        let items: Vec<Value> = (0..rows)
            .map(|_| {
                json!({
                    "account": 10_000_000 + r.below(u64::from(USERS) * 10),
                    "amount": r.range(100, 90_000) as f64 / 100.0,
                    "currency": "EUR",
                    "merchant": pick(r, &["Café Crème", "O'Neill's", "Rock & Roll Records", "Grocer"]),
                    "status": pick(r, &["settled", "pending", "disputed"]),
                })
            })
            .collect();
        json!({"month": month, "rows": items, "count": rows})
    }

    pub fn admin_users_json(&self, r: &mut Rng) -> Value {
        let start = r.below(u64::from(USERS) - 25) as u32;
        let users: Vec<Value> = (start..start + 20)
            .filter_map(|id| self.user(id))
            .map(|u| json!({"id": format!("u-{}", u.id), "username": u.username, "role": u.role.name(), "status": "active"}))
            .collect();
        json!({"users": users, "page": 1, "total": USERS})
    }

    /// One benign request by `u` at (about) `now`, with its response.
    fn user_exchange(
        &self,
        r: &mut Rng,
        u: &User,
        op: Op,
        now: Timestamp,
        faults: &[Fault],
    ) -> Exchange {
        let mut hdrs = self.user_headers(u, now, u.home);
        let acct = *r.pick(&u.accounts).unwrap_or(&0);
        let (method, target, body, status, resp): (&str, String, Vec<u8>, u16, Value) = match op {
            Op::Login => {
                hdrs.retain(|(k, _)| k != "Authorization");
                let typo = r.chance(0.03);
                let body = json!({"username": u.username, "password": format!("{}-{}", pick(r, &["Winter", "Blue", "Hike"]), r.range(100, 999))});
                if typo {
                    (
                        op.method(),
                        op.route().into(),
                        body.to_string().into_bytes(),
                        401,
                        json!({"error": "invalid_credentials", "message": "Invalid username or password"}),
                    )
                } else {
                    (
                        op.method(),
                        op.route().into(),
                        body.to_string().into_bytes(),
                        200,
                        json!({"token": self.jwt(u, now), "tokenType": "Bearer", "expiresIn": 7200}),
                    )
                }
            }
            Op::Accounts => {
                let list: Vec<Value> = u
                    .accounts
                    .iter()
                    .map(|a| self.account_json(u, *a))
                    .collect();
                (
                    "GET",
                    op.route().into(),
                    vec![],
                    200,
                    json!({"accounts": list, "count": u.accounts.len()}),
                )
            }
            Op::Account => (
                "GET",
                format!("/api/v1/accounts/{acct}"),
                vec![],
                200,
                self.account_json(u, acct),
            ),
            Op::Transactions => {
                let page = r.range(1, 4);
                let limit = *r.pick(&[10u64, 20, 25]).unwrap_or(&10);
                (
                    "GET",
                    format!("/api/v1/accounts/{acct}/transactions?page={page}&limit={limit}"),
                    vec![],
                    200,
                    self.transactions_json(r, acct, page, limit),
                )
            }
            Op::Transfer => {
                let to = 10_000_000 + r.below(u64::from(USERS) * 10);
                let amount = r.range(500, 150_000) as f64 / 100.0;
                let body = json!({"from": acct, "to": to, "amount": amount, "currency": pick(r, &["EUR", "EUR", "GBP", "USD"]), "memo": pick(r, MEMOS)});
                if r.chance(0.04) {
                    (
                        "POST",
                        op.route().into(),
                        body.to_string().into_bytes(),
                        422,
                        json!({"error": "insufficient_funds", "message": "Available balance is too low"}),
                    )
                } else {
                    (
                        "POST",
                        op.route().into(),
                        body.to_string().into_bytes(),
                        201,
                        json!({"id": format!("tr_{:x}", r.next_u64() >> 20), "status": "pending", "from": acct, "to": to, "amount": amount}),
                    )
                }
            }
            Op::Profile => (
                "GET",
                format!("/api/v1/users/u-{}/profile", u.id),
                vec![],
                200,
                self.profile_json(u),
            ),
            Op::ProfileUpdate => {
                let body = json!({"name": u.name, "email": u.email, "phone": u.phone});
                (
                    "PUT",
                    format!("/api/v1/users/u-{}/profile", u.id),
                    body.to_string().into_bytes(),
                    200,
                    self.profile_json(u),
                )
            }
            Op::Products => {
                let cat = pick(r, CATEGORIES);
                let page = r.range(1, 3);
                let items: Vec<Value> = (0..8).map(|i| json!({"sku": format!("{cat}-{}", page * 10 + i), "name": format!("{} {}", pick(r, &["Classic", "Premium", "Flex", "Green"]), cat), "rate": r.range(10, 900) as f64 / 100.0})).collect();
                (
                    "GET",
                    format!("/api/v1/products?category={cat}&page={page}"),
                    vec![],
                    200,
                    json!({"category": cat, "page": page, "items": items}),
                )
            }
            Op::Search => {
                let q = pick(r, SEARCHES);
                let n = r.below(5);
                let results: Vec<Value> = (0..n).map(|i| json!({"type": "help", "title": format!("Result {i} for {q}"), "url": format!("/help/{}", r.range(100, 999))})).collect();
                (
                    "GET",
                    format!("/api/v1/search?q={}", pct(q)),
                    vec![],
                    200,
                    json!({"q": q, "results": results}),
                )
            }
            Op::Graphql => {
                let (body, data) = if r.chance(0.5) {
                    (
                        json!({"operationName": "AccountSummary", "query": "query AccountSummary($id: ID!) { account(id: $id) { id balance currency owner { name } } }", "variables": {"id": acct.to_string()}}),
                        json!({"data": {"account": {"id": acct.to_string(), "balance": r.range(0, 900_000) as f64 / 100.0, "currency": "EUR", "owner": {"name": u.name}}}}),
                    )
                } else {
                    (
                        json!({"operationName": "RecentActivity", "query": "query RecentActivity($first: Int) { me { accounts { transactions(first: $first) { id amount } } } }", "variables": {"first": 5}}),
                        json!({"data": {"me": {"accounts": [{"transactions": [{"id": "tx_1", "amount": -12.5}, {"id": "tx_2", "amount": 40.0}]}]}}}),
                    )
                };
                (
                    "POST",
                    "/graphql".into(),
                    body.to_string().into_bytes(),
                    200,
                    data,
                )
            }
            Op::AdminUsers => (
                "GET",
                "/api/v1/admin/users?page=1".into(),
                vec![],
                200,
                self.admin_users_json(r),
            ),
            Op::AdminDelete => {
                let victim = r.below(u64::from(USERS));
                (
                    "DELETE",
                    format!("/api/v1/admin/users/u-{victim}"),
                    vec![],
                    204,
                    Value::Null,
                )
            }
            Op::Export => {
                let month = format!("2025-{:02}", r.range(1, 12));
                let rows = r.range(40, 60);
                (
                    "GET",
                    format!("/api/v1/reports/export?month={month}"),
                    vec![],
                    200,
                    self.export_json(r, &month, rows),
                )
            }
        };
        let (status, resp) = match faults
            .iter()
            .find(|f| f.method == method && f.route == op.route() && f.from <= now && now <= f.to)
        {
            Some(f) if r.chance(f.share) => (
                f.status,
                json!({"error": "upstream_unavailable", "message": "Please retry later"}),
            ),
            _ => (status, resp),
        };
        if !body.is_empty() {
            hdrs.push(("Content-Type".into(), "application/json".into()));
        }
        let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let resp_body = if status == 204 {
            vec![]
        } else {
            resp.to_string().into_bytes()
        };
        Exchange {
            request: request(method, &target, &h, &body),
            response: response(status, &resp_body, now.secs()),
            think: Duration::default(),
            work: Duration::from_nanos(r.range(2_000_000, 40_000_000)),
        }
    }

    fn partner_exchange(
        &self,
        r: &mut Rng,
        p: &Partner,
        now: Timestamp,
        target: String,
    ) -> Exchange {
        let items: Vec<Value> = (0..10)
            .map(|_| json!({"sku": format!("card-{}", r.range(100, 999)), "available": r.range(0, 5_000), "updatedAt": "2026-01-12T06:00:00Z"}))
            .collect();
        let ua = PARTNER_AGENTS
            .get(p.id as usize % PARTNER_AGENTS.len())
            .copied()
            .unwrap_or("");
        let xff = p.ip.to_string();
        let h = [
            ("User-Agent", ua),
            ("Accept", "application/json"),
            ("X-API-Key", p.api_key.as_str()),
            ("X-Forwarded-For", xff.as_str()),
        ];
        let body = json!({"partner": p.name, "items": items}).to_string();
        Exchange {
            request: request("GET", &target, &h, &[]),
            response: response(200, body.as_bytes(), now.secs()),
            think: Duration::default(),
            work: Duration::from_nanos(r.range(3_000_000, 30_000_000)),
        }
    }

    /// One benign inventory poll by partner `p`.
    pub fn partner_poll(&self, r: &mut Rng, p: &Partner, now: Timestamp) -> Exchange {
        let target = format!("/partner/v1/inventory?page={}", r.range(1, 5));
        self.partner_exchange(r, p, now, target)
    }

    /// A partner request to an arbitrary target (the secret-in-URL incident).
    pub fn partner_request(
        &self,
        r: &mut Rng,
        p: &Partner,
        now: Timestamp,
        target: String,
    ) -> Exchange {
        self.partner_exchange(r, p, now, target)
    }

    /// A benign request of kind `op` by `u`; incidents reuse it for their ordinary traffic.
    pub fn benign(&self, r: &mut Rng, u: &User, op: Op, now: Timestamp) -> Exchange {
        self.user_exchange(r, u, op, now, &[])
    }
}

/// The benign operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Login,
    Accounts,
    Account,
    Transactions,
    Transfer,
    Profile,
    ProfileUpdate,
    Products,
    Search,
    Graphql,
    AdminUsers,
    AdminDelete,
    Export,
}

impl Op {
    pub fn method(self) -> &'static str {
        match self {
            Op::Login | Op::Transfer | Op::Graphql => "POST",
            Op::ProfileUpdate => "PUT",
            Op::AdminDelete => "DELETE",
            _ => "GET",
        }
    }

    /// The route as the spec names it.
    pub fn route(self) -> &'static str {
        match self {
            Op::Login => "/api/v1/auth/login",
            Op::Accounts => "/api/v1/accounts",
            Op::Account => "/api/v1/accounts/{accountId}",
            Op::Transactions => "/api/v1/accounts/{accountId}/transactions",
            Op::Transfer => "/api/v1/transfers",
            Op::Profile | Op::ProfileUpdate => "/api/v1/users/{userId}/profile",
            Op::Products => "/api/v1/products",
            Op::Search => "/api/v1/search",
            Op::Graphql => "/graphql",
            Op::AdminUsers => "/api/v1/admin/users",
            Op::AdminDelete => "/api/v1/admin/users/{userId}",
            Op::Export => "/api/v1/reports/export",
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn make_user(seed: u64, id: u32) -> User {
    let mut r = Rng::new(seed ^ 0x7573_6572 ^ u64::from(id).wrapping_mul(0x9E37_79B9));
    let first = pick(&mut r, FIRST);
    let last = pick(&mut r, LAST);
    let role = if id % 100 == 2 {
        Role::Admin
    } else if id % 40 == 3 {
        Role::Support
    } else {
        Role::Customer
    };
    let b = (id % 250) as u8 + 1;
    let home = if id % 25 == 0 {
        GEO_HOMES[(id / 25) as usize % GEO_HOMES.len()]
    } else {
        match id % 4 {
            0 => Ipv4Addr::new(198, 51, 100, b),
            1 => Ipv4Addr::new(203, 0, 113, b),
            _ => Ipv4Addr::new(100, 64 + (id / 250 % 60) as u8, (id / 7 % 250) as u8, b),
        }
    };
    let n = 1 + (id % 3) as u64;
    let ascii: String = format!("{first}.{last}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect::<String>()
        .to_lowercase();
    User {
        id,
        username: format!("{ascii}{id}"),
        name: format!("{first} {last}"),
        email: format!("{ascii}{id}@mail.example"),
        phone: format!("+44 20 7946 {:04}", id % 10_000),
        role,
        tenant: id % 7,
        home: IpAddr::V4(home),
        user_agent: USER_AGENTS
            .get(id as usize % USER_AGENTS.len())
            .copied()
            .unwrap_or(""),
        accounts: (0..n)
            .map(|k| 10_000_000 + u64::from(id) * 10 + k)
            .collect(),
    }
}

/// An address of the load balancer (10.0.0.2-9).
pub fn lb_addr(r: &mut Rng) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2 + r.below(8) as u8))
}

/// One of the API servers (10.1.0.10-17, port 80).
pub fn server_addr(r: &mut Rng) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 10 + r.below(8) as u8)),
        80,
    )
}

/// Benign sessions in start order, until the end of the capture.
pub struct Background<'a> {
    bank: &'a Bank,
    rng: Rng,
    t: Timestamp,
    end: Timestamp,
    scale: f64,
    faults: Vec<Fault>,
    serial: u64,
}

impl<'a> Background<'a> {
    pub fn new(
        bank: &'a Bank,
        opts: &SecurityOptions,
        start: Timestamp,
        end: Timestamp,
        faults: Vec<Fault>,
    ) -> Self {
        Background {
            bank,
            rng: Rng::new(opts.seed).fork(0x6265_6e69_676e),
            t: start,
            end,
            scale: opts.benign_rate_scale.max(0.0),
            faults,
            serial: 0,
        }
    }

    /// The next session, or `None` once arrivals pass the end of the capture.
    pub fn next_session(&mut self) -> Option<Session> {
        let hour = (self.t.secs() % 86_400) as f64 / 3_600.0;
        let lambda = rate_rps(hour) * self.scale / MEAN_REQUESTS_PER_SESSION;
        if lambda <= 0.0 {
            return None;
        }
        // Exponential inter-arrival time: a Poisson process with the current rate.
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let gap = -(1.0 - u).ln() / lambda;
        self.t = self.t.add(Duration::from_nanos((gap * 1e9) as u64));
        if self.t >= self.end {
            return None;
        }
        self.serial += 1;
        let mut r = self.rng.fork(self.serial);
        Some(self.session(&mut r))
    }

    fn session(&self, r: &mut Rng) -> Session {
        let start = self.t;
        let mut exchanges = Vec::new();
        let mut now = start;
        let roll = r.below(100);
        let client = lb_addr(r);
        let server = server_addr(r);
        if roll < 2 {
            // The load balancer's own health check: no forwarding header, no credentials.
            let h = [("User-Agent", "lb-healthcheck/2.1")];
            exchanges.push(Exchange {
                request: request("GET", "/health", &h, &[]),
                response: response(200, br#"{"status":"ok"}"#, now.secs()),
                think: Duration::from_nanos(200_000),
                work: Duration::from_nanos(500_000),
            });
        } else if roll < 7 {
            let p = &self.bank.partners[r.below(u64::from(PARTNERS)) as usize];
            for i in 0..r.range(1, 5) {
                let think = Duration::from_nanos(if i == 0 {
                    300_000
                } else {
                    r.range(200_000_000, 2_000_000_000)
                });
                now = now.add(think);
                let mut e = self.bank.partner_poll(r, p, now);
                e.think = think;
                exchanges.push(e);
            }
        } else {
            let u = &self.bank.users[r.below(u64::from(USERS)) as usize];
            let mut ops = Vec::with_capacity(8);
            if r.chance(0.2) {
                ops.push(Op::Login);
            }
            if r.chance(0.7) {
                ops.push(Op::Accounts);
            }
            for _ in 0..r.range(1, 4) {
                let op = match r.below(100) {
                    0..=21 => Op::Account,
                    22..=39 => Op::Transactions,
                    40..=53 => Op::Products,
                    54..=62 => Op::Search,
                    63..=69 => Op::Profile,
                    70..=72 => Op::ProfileUpdate,
                    73..=81 => Op::Transfer,
                    _ => Op::Graphql,
                };
                ops.push(op);
            }
            match u.role {
                Role::Admin if r.chance(0.6) => {
                    ops.push(Op::AdminUsers);
                    if r.chance(0.3) {
                        ops.push(Op::AdminDelete);
                    }
                }
                Role::Support if r.chance(0.5) => ops.push(Op::Export),
                _ => {}
            }
            for (i, op) in ops.into_iter().enumerate() {
                let think = Duration::from_nanos(if i == 0 {
                    300_000
                } else {
                    r.range(300_000_000, 4_000_000_000)
                });
                now = now.add(think);
                let mut e = self.bank.user_exchange(r, u, op, now, &self.faults);
                e.think = think;
                exchanges.push(e);
            }
        }
        Session {
            start,
            client: SocketAddr::new(client, 0),
            server,
            exchanges,
            impair: Impairments::default(),
            mss: None,
            attack: false,
        }
    }
}

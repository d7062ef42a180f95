//! The invented API the captures carry: `api.shop.example`, a REST/JSON shop with a GraphQL
//! endpoint, spoken over keep-alive HTTP/1.x by browsers, mobile apps and partner integrations.
//!
//! [`ApiModel::connection`] plans one TCP connection (who connects, which requests, how each
//! response is framed), drives a [`TcpConversation`] with it, and returns the captured packets
//! with one [`TruthRecord`] per transaction.
//!
//! What the traffic exercises: keep-alive with several transactions, pipelining (coalesced in
//! one write and back to back), `Expect: 100-continue`, `103 Early Hints`, chunked responses
//! with and without trailers, gzip (with Content-Length and chunked), HEAD, 204, 304, 401, 403,
//! 404 and 500 answers, an HTTP/1.0 health check whose body ends at connection close, bearer
//! JWTs and API keys, and X-Forwarded-For from a load balancer.
//!
//! Invariants: every choice comes from the seeded [`Rng`]; bodies have stable shapes per route;
//! `response_body_len` in the truth is the decoded length (after de-chunking and gunzip) and is
//! 0 for HEAD, 1xx-only, 204 and 304 answers; bodies are bounded (the largest is a product page
//! of at most 50 items), so a connection's memory is bounded.

use super::frame::{Encap, Underlay, VlanTags};
use super::rng::Rng;
use super::tcp::{ConversationCapture, Impairments, TcpConfig, TcpConversation};
use crate::common::{Direction, Duration, Timestamp};
use flate2::{Compression, GzBuilder};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

/// Which capture to produce. Each one stresses a different part of the sensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Keep-alive, chunked and gzip responses, many endpoints and clients, IPv4.
    Basic,
    /// Pipelining, 100-continue, 103 Early Hints, HEAD, 204, 304.
    Pipelined,
    /// 802.1Q and QinQ tags, IPv6 with and without a destination-options header.
    VlanIpv6,
    /// Capture impairments: loss, reordering, duplicates, overlaps, sequence wraparound,
    /// midstream pickup, one-sided capture, snaplen truncation, IPv4 fragments, resets.
    Impaired,
    /// VXLAN- and GRE/ERSPAN II-encapsulated traffic.
    Tunnels,
    /// The Basic mix with more clients and concurrency, for throughput benchmarks.
    Bench,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Basic,
        Scenario::Pipelined,
        Scenario::VlanIpv6,
        Scenario::Impaired,
        Scenario::Tunnels,
        Scenario::Bench,
    ];

    /// The name used on the command line and in capture file names.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Basic => "basic",
            Scenario::Pipelined => "pipelined",
            Scenario::VlanIpv6 => "vlan-ipv6",
            Scenario::Impaired => "impaired",
            Scenario::Tunnels => "tunnels",
            Scenario::Bench => "bench",
        }
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    /// Connections generated when no byte target is given.
    pub fn default_connections(self) -> u32 {
        match self {
            Scenario::Basic => 90,
            Scenario::Pipelined => 60,
            Scenario::VlanIpv6 => 60,
            Scenario::Impaired => 72,
            Scenario::Tunnels => 50,
            Scenario::Bench => 2_000,
        }
    }

    /// Distinct users the clients act as.
    pub fn default_users(self) -> u32 {
        match self {
            Scenario::Bench => 50_000,
            _ => 2_000,
        }
    }
}

/// One line of the ground-truth file: a transaction as it crossed the wire.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TruthRecord {
    /// Client address, `ip:port` (IPv6 in brackets).
    pub client: String,
    /// Server address, `ip:port`.
    pub server: String,
    /// 1-based position in the connection.
    pub trans_depth: u32,
    pub method: String,
    pub host: String,
    /// The request target exactly as sent.
    pub uri: String,
    /// The route template the server matched, e.g. `/api/v1/users/{id}`.
    pub route: String,
    /// Final status code.
    pub status_code: u16,
    /// Interim (1xx) status codes sent before the final response.
    pub interim: Vec<u16>,
    pub request_body_len: u64,
    /// Decoded length: after de-chunking and gunzip.
    pub response_body_len: u64,
    /// Some byte of the request or response never reached the capture intact.
    pub impaired: bool,
    /// Names of the capture impairments that touched this transaction's bytes.
    pub impairments: Vec<&'static str>,
    /// Time the first request byte was sent, seconds since the epoch.
    pub ts: f64,
}

/// A connection's packets and truth.
pub struct GeneratedConn {
    pub config: TcpConfig,
    pub capture: ConversationCapture,
    pub truth: Vec<TruthRecord>,
    /// For each truth record, its byte ranges `[start, end)` in the client's and the server's
    /// stream (stream offsets count from ISN + 1).
    pub ranges: Vec<[(u64, u64); 2]>,
}

/// Catalogue pages (and their gzip encodings) are memoised: with a fixed set of pages the
/// benchmark would otherwise spend most of its time formatting JSON and in deflate. Beyond this
/// many entries per cache, bodies are built afresh (same bytes, only slower).
const MAX_GZIP_CACHE_ENTRIES: usize = 512;

/// Generates connections of one scenario.
pub struct ApiModel {
    scenario: Scenario,
    users: u32,
    seed: Rng,
    gzip_cache: HashMap<(u8, u32), Rc<Vec<u8>>>,
    catalog_cache: HashMap<(u8, u32), Rc<Vec<u8>>>,
    /// The last formatted Date header and its second: most responses share one.
    date_cache: (u64, String),
    /// Gzip encodings served from the cache.
    pub gzip_cache_hits: u64,
    /// Apply the scenario's capture impairments (on by default). Turning them off yields the
    /// same conversations captured perfectly, which is what the tests compare against.
    pub impairments: bool,
}

/// How a response body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`.
    Length,
    /// `Transfer-Encoding: chunked`, optionally with a trailer section.
    Chunked { trailer: bool },
    /// No length: the body ends when the server closes (HTTP/1.0 style).
    Close,
}

/// A response before rendering.
struct Resp {
    status: u16,
    headers: Vec<(&'static str, String)>,
    /// The decoded body (before gzip), shared with the catalogue cache.
    body: Rc<Vec<u8>>,
    content_type: &'static str,
    framing: Framing,
    gzip: Option<Rc<Vec<u8>>>,
    early_hints: bool,
    http10: bool,
}

impl Resp {
    fn new(status: u16) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: Rc::default(),
            content_type: "application/json",
            framing: Framing::Length,
            gzip: None,
            early_hints: false,
            http10: false,
        }
    }

    fn json(status: u16, body: String) -> Resp {
        let mut r = Resp::new(status);
        r.body = Rc::new(body.into_bytes());
        r
    }
}

/// One planned transaction.
struct Txn {
    method: &'static str,
    uri: String,
    route: &'static str,
    /// Request head (start line and headers, final CRLF included).
    head: Vec<u8>,
    body: Vec<u8>,
    expect_continue: bool,
    resp: Resp,
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn choose<'a>(r: &mut Rng, xs: &[&'a str]) -> &'a str {
    xs.get(r.below(xs.len() as u64) as usize)
        .copied()
        .unwrap_or("")
}

const FIRST: &[&str] = &[
    "Ada", "Linus", "Grace", "Ken", "Radia", "Barbara", "Vint", "Margaret", "Dennis", "Frances",
    "Edsger", "Sophie", "Niklaus", "Hedy", "Tim", "Joan",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Torvalds",
    "Hopper",
    "Thompson",
    "Perlman",
    "Liskov",
    "Cerf",
    "Hamilton",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Wilson",
    "Wirth",
    "Lamarr",
    "Berners-Lee",
    "Clarke",
];
const CITIES: &[&str] = &[
    "Berlin", "Lyon", "Porto", "Gent", "Bergen", "Tartu", "Brno", "Graz", "Turku", "Cork",
];
const CATEGORIES: &[&str] = &[
    "shoes",
    "jackets",
    "tents",
    "backpacks",
    "lamps",
    "stoves",
    "socks",
    "maps",
];
const ADJ: &[&str] = &[
    "Trail", "Alpine", "Urban", "Storm", "Summit", "Coastal", "Forest", "Desert", "Polar",
];
const SEARCHES: &[&str] = &[
    "rain%20jacket",
    "waterproof+boots",
    "tent",
    "headlamp",
    "wool%20socks",
    "stove+gas",
    "map%20alps",
    "ultralight",
    "kids",
    "sale",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "ShopApp/4.12.1 (iPhone; iOS 18.1; Scale/3.00)",
    "ShopApp/4.11.0 (Android 14; Pixel 8)",
    "okhttp/4.12.0",
];
const PARTNER_AGENTS: &[&str] = &[
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "curl/8.10.1",
];
const SERVERS: &[&str] = &["nginx/1.27.2", "envoy"];
/// The virtual host every API request names.
const HOST: &str = "api.shop.example";
const LB_HEALTH: Ipv4Addr = Ipv4Addr::new(10, 0, 10, 1);

/// RFC 4648 base64url without padding, as JWTs use.
pub(crate) fn base64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = c.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(A[idx]));
        }
    }
    out
}

fn uuid(r: &mut Rng) -> String {
    let a = r.next_u64();
    let b = r.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a Unix time (RFC 9110 IMF-fixdate).
pub(crate) fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS.get((m - 1) as usize).copied().unwrap_or("Jan"),
        y,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // mtime 0 and a fixed OS byte keep the output identical on every platform.
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::with_capacity(data.len() / 3 + 32), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A product, derived from its SKU number alone so every page agrees with the detail view.
fn product_json(out: &mut String, sku: u32) {
    let mut r = Rng::new(u64::from(sku).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let cat = choose(&mut r, CATEGORIES);
    let _ = write!(
        out,
        r#"{{"sku":"SKU-{sku:05}","name":"{} {} {}","category":"{cat}","price_cents":{},"currency":"EUR","stock":{},"rating":{}.{},"tags":["{}","{}"]}}"#,
        choose(&mut r, ADJ),
        choose(&mut r, ADJ),
        cat.trim_end_matches('s'),
        r.range(499, 49_999),
        r.below(400),
        r.range(2, 4),
        r.below(10),
        choose(&mut r, &["new", "sale", "bestseller", "eco"]),
        choose(&mut r, &["outdoor", "winter", "summer", "kids"]),
    );
}

fn user_json(out: &mut String, id: u32, admin: bool) {
    let mut r = Rng::new(u64::from(id) ^ 0x5553_4552);
    let first = choose(&mut r, FIRST);
    let last = choose(&mut r, LAST);
    let _ = write!(
        out,
        r#"{{"id":{id},"username":"{}{}","email":"{}.{}{id}@mail.example","name":"{first} {last}","roles":["customer"{}],"address":{{"street":"{} Street {}","city":"{}","zip":"{:05}"}},"loyalty_points":{},"created_at":"2024-{:02}-{:02}T10:{:02}:00Z"}}"#,
        first.to_lowercase(),
        id,
        first.to_lowercase(),
        last.to_lowercase(),
        if admin { r#","admin""# } else { "" },
        choose(&mut r, LAST),
        r.range(1, 200),
        choose(&mut r, CITIES),
        r.below(100_000),
        r.below(5_000),
        r.range(1, 12),
        r.range(1, 28),
        r.below(60),
    );
}

fn order_json(out: &mut String, r: &mut Rng, id: &str, user: u32) {
    let n = r.range(1, 4);
    let _ = write!(
        out,
        r#"{{"id":"{id}","user_id":{user},"status":"{}","items":["#,
        choose(r, &["pending", "paid", "shipped", "delivered"])
    );
    let mut total = 0;
    for i in 0..n {
        let price = r.range(499, 19_999);
        let qty = r.range(1, 3);
        total += price * qty;
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"sku":"SKU-{:05}","qty":{qty},"price_cents":{price}}}"#,
            r.below(20_000)
        );
    }
    let _ = write!(
        out,
        r#"],"total_cents":{total},"currency":"EUR","created_at":"2025-{:02}-{:02}T{:02}:{:02}:00Z"}}"#,
        r.range(1, 12),
        r.range(1, 28),
        r.below(24),
        r.below(60)
    );
}

fn error_json(code: &str, message: &str, r: &mut Rng) -> String {
    format!(
        r#"{{"error":"{code}","message":"{message}","request_id":"{}"}}"#,
        uuid(r)
    )
}

/// Who is on the other end of a connection.
struct Client {
    user: u32,
    admin: bool,
    /// The address the TCP connection comes from.
    addr: IpAddr,
    /// The real client, sent as X-Forwarded-For when a load balancer sits in between.
    forwarded_for: Option<IpAddr>,
    user_agent: &'static str,
    auth: Auth,
    accepts_gzip: bool,
}

enum Auth {
    Bearer(String),
    ApiKey(String),
    /// Not logged in yet: the client logs in first, or gets 401s.
    None,
}

impl ApiModel {
    pub fn new(scenario: Scenario, seed: u64, users: u32) -> ApiModel {
        ApiModel {
            scenario,
            users: users.max(1),
            seed: Rng::new(seed),
            gzip_cache: HashMap::new(),
            catalog_cache: HashMap::new(),
            date_cache: (u64::MAX, String::new()),
            gzip_cache_hits: 0,
            impairments: true,
        }
    }

    fn user_ip(&self, user: u32, v6: bool) -> IpAddr {
        if v6 {
            let mut o = [0x2001, 0x0db8, 0x00c0, 0, 0, 0, 0, 0];
            o[6] = (user >> 16) as u16;
            o[7] = user as u16;
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            // Carrier-grade NAT space: room for four million distinct users.
            let n = user & 0x003f_ffff;
            IpAddr::V4(Ipv4Addr::new(
                100,
                64 | (n >> 16) as u8,
                (n >> 8) as u8,
                n as u8 | 1,
            ))
        }
    }

    fn jwt(&self, user: u32, admin: bool, iat: u64) -> String {
        let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let roles = if admin {
            r#"["customer","admin"]"#
        } else {
            r#"["customer"]"#
        };
        let payload = format!(
            r#"{{"sub":"user-{user}","roles":{roles},"iss":"https://auth.shop.example","iat":{iat},"exp":{}}}"#,
            iat + 3600
        );
        let mut sig = [0u8; 32];
        Rng::new(u64::from(user) ^ 0x4a57_5400 ^ iat).fill(&mut sig);
        format!(
            "{header}.{}.{}",
            base64url(payload.as_bytes()),
            base64url(&sig)
        )
    }

    fn client(&self, r: &mut Rng, v6: bool, now_secs: u64) -> Client {
        let user = r.range(1, u64::from(self.users)) as u32;
        let admin = user % 97 == 0;
        let partner = r.chance(0.12);
        let behind_lb = !v6 && r.chance(0.6);
        let own = self.user_ip(user, v6);
        let (addr, forwarded_for) = if behind_lb {
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, 10, r.range(2, 5) as u8)),
                Some(own),
            )
        } else {
            (own, None)
        };
        let auth = if partner {
            let mut k = [0u8; 12];
            Rng::new(u64::from(user % 7) ^ 0x004b_4559).fill(&mut k);
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            Auth::ApiKey(format!("pk_live_{hex}"))
        } else if r.chance(0.85) {
            Auth::Bearer(self.jwt(user, admin, now_secs.saturating_sub(r.below(3000))))
        } else {
            Auth::None
        };
        Client {
            user,
            admin,
            addr,
            forwarded_for,
            user_agent: if partner {
                choose(r, PARTNER_AGENTS)
            } else {
                choose(r, USER_AGENTS)
            },
            auth,
            accepts_gzip: r.chance(0.8),
        }
    }

    fn date(&mut self, secs: u64) -> String {
        if self.date_cache.0 != secs {
            self.date_cache = (secs, http_date(secs));
        }
        self.date_cache.1.clone()
    }

    /// A catalogue body (product page, search result), built once per key: the catalogue is
    /// the same for every client, and formatting dozens of products per request would
    /// dominate the benchmark.
    fn catalog(&mut self, key: (u8, u32), build: impl FnOnce() -> String) -> Rc<Vec<u8>> {
        if let Some(v) = self.catalog_cache.get(&key) {
            return Rc::clone(v);
        }
        let v = Rc::new(build().into_bytes());
        if self.catalog_cache.len() < MAX_GZIP_CACHE_ENTRIES {
            self.catalog_cache.insert(key, Rc::clone(&v));
        }
        v
    }

    /// A compressed catalogue body, from the cache when possible.
    fn gzip_cached(&mut self, key: (u8, u32), body: &[u8]) -> Rc<Vec<u8>> {
        if let Some(v) = self.gzip_cache.get(&key) {
            self.gzip_cache_hits += 1;
            return Rc::clone(v);
        }
        let v = Rc::new(gzip(body));
        if self.gzip_cache.len() < MAX_GZIP_CACHE_ENTRIES {
            self.gzip_cache.insert(key, Rc::clone(&v));
        }
        v
    }

    /// Plans one request and its response.
    fn plan_txn(&mut self, r: &mut Rng, c: &Client, now_secs: u64, idempotent_only: bool) -> Txn {
        let s = self.scenario;
        let pipelined = s == Scenario::Pipelined;
        let authed = !matches!(c.auth, Auth::None);
        // Weighted endpoint choice; pipelined connections stick to idempotent requests.
        let weights: &[(u8, u64)] = if idempotent_only {
            &[
                (2, 20),
                (4, 10),
                (5, 10),
                (7, 25),
                (8, 20),
                (9, 5),
                (11, 10),
            ]
        } else if pipelined {
            &[
                (0, 2),
                (2, 10),
                (3, 6),
                (4, 6),
                (5, 6),
                (6, 10),
                (7, 16),
                (8, 16),
                (9, 4),
                (10, 6),
                (11, 8),
                (12, 4),
                (13, 4),
                (14, 2),
                (15, 6),
            ]
        } else {
            &[
                (0, 3),
                (1, 4),
                (2, 14),
                (3, 5),
                (4, 10),
                (5, 8),
                (6, 7),
                (7, 18),
                (8, 10),
                (9, 5),
                (10, 6),
                (11, 5),
                (12, 6),
                (13, 6),
                (14, 2),
                (15, 2),
            ]
        };
        let total: u64 = weights.iter().map(|w| w.1).sum();
        let mut roll = r.below(total);
        let mut ep = 2u8;
        for (e, w) in weights {
            if roll < *w {
                ep = *e;
                break;
            }
            roll -= w;
        }
        let own = c.user;
        // Mostly one's own resources; sometimes someone else's id, as scrapers and BOLA probes do.
        let uid = if r.chance(0.9) {
            own
        } else {
            r.range(1, u64::from(self.users) + 50) as u32
        };
        let exists = uid <= self.users;
        let mut body = Vec::new();
        let mut ctype: Option<&'static str> = None;
        let mut expect_continue = false;
        let mut if_none_match: Option<String> = None;
        let mut head = false;
        let (method, uri, route, mut resp): (&'static str, String, &'static str, Resp) = match ep {
            0 => ("GET", "/health".into(), "/health", {
                let mut rs = Resp::new(200);
                rs.body = Rc::new(br#"{"status":"ok"}"#.to_vec());
                rs
            }),
            1 => {
                let ok = r.chance(0.85);
                body = format!(
                    r#"{{"email":"user{own}@mail.example","password":"{}"}}"#,
                    if ok {
                        "correct-horse-battery"
                    } else {
                        "hunter2"
                    }
                )
                .into_bytes();
                ctype = Some("application/json");
                let resp = if ok {
                    Resp::json(
                        200,
                        format!(
                            r#"{{"access_token":"{}","token_type":"Bearer","expires_in":3600}}"#,
                            self.jwt(own, c.admin, now_secs)
                        ),
                    )
                } else {
                    Resp::json(
                        401,
                        error_json("invalid_credentials", "email or password is wrong", r),
                    )
                };
                (
                    "POST",
                    "/api/v1/auth/login".into(),
                    "/api/v1/auth/login",
                    resp,
                )
            }
            2 | 3 => {
                let put = ep == 3;
                let uri = format!("/api/v1/users/{uid}");
                let mut js = String::new();
                let resp = if !exists {
                    Resp::json(404, error_json("not_found", "no such user", r))
                } else {
                    user_json(&mut js, uid, uid % 97 == 0);
                    Resp::json(200, js)
                };
                if put {
                    body = format!(
                        r#"{{"name":"{} {}","address":{{"city":"{}"}}}}"#,
                        choose(r, FIRST),
                        choose(r, LAST),
                        choose(r, CITIES)
                    )
                    .into_bytes();
                    ctype = Some("application/json");
                    expect_continue = pipelined && r.chance(0.5);
                }
                (
                    if put { "PUT" } else { "GET" },
                    uri,
                    "/api/v1/users/{id}",
                    resp,
                )
            }
            4 => {
                let mut js = format!(r#"{{"user_id":{uid},"orders":["#);
                for i in 0..r.range(0, 6) {
                    if i > 0 {
                        js.push(',');
                    }
                    let id = uuid(r);
                    order_json(&mut js, r, &id, uid);
                }
                js.push_str(r#"],"next_page":null}"#);
                let mut resp = Resp::json(200, js);
                resp.framing = Framing::Chunked {
                    trailer: r.chance(0.3),
                };
                (
                    "GET",
                    format!("/api/v1/users/{uid}/orders"),
                    "/api/v1/users/{id}/orders",
                    resp,
                )
            }
            5 => {
                let id = uuid(r);
                let resp = if r.chance(0.85) {
                    let mut js = String::new();
                    order_json(&mut js, r, &id, own);
                    Resp::json(200, js)
                } else {
                    Resp::json(404, error_json("not_found", "no such order", r))
                };
                (
                    "GET",
                    format!("/api/v1/orders/{id}"),
                    "/api/v1/orders/{uuid}",
                    resp,
                )
            }
            6 => {
                let mut js = String::from(r#"{"items":["#);
                for i in 0..r.range(1, 5) {
                    if i > 0 {
                        js.push(',');
                    }
                    let _ = write!(
                        js,
                        r#"{{"sku":"SKU-{:05}","qty":{}}}"#,
                        r.below(20_000),
                        r.range(1, 3)
                    );
                }
                let _ = write!(
                    js,
                    r#"],"shipping":{{"method":"{}","city":"{}"}},"payment":{{"type":"card","token":"tok_{:016x}"}}}}"#,
                    choose(r, &["standard", "express"]),
                    choose(r, CITIES),
                    r.next_u64()
                );
                body = js.into_bytes();
                ctype = Some("application/json");
                expect_continue = r.chance(if pipelined { 0.7 } else { 0.15 });
                let id = uuid(r);
                let mut out = String::new();
                order_json(&mut out, r, &id, own);
                let mut resp = Resp::json(201, out);
                resp.headers
                    .push(("Location", format!("/api/v1/orders/{id}")));
                ("POST", "/api/v1/orders".into(), "/api/v1/orders", resp)
            }
            7 => {
                let ci = r.below(CATEGORIES.len() as u64) as usize;
                let cat = CATEGORIES.get(ci).copied().unwrap_or("shoes");
                let page = r.range(1, 20) as u32;
                let size = choose(r, &["20", "50"]);
                let uri = format!("/api/v1/products?category={cat}&page={page}&page_size={size}");
                let key = (ci as u32) << 16 | page << 1 | u32::from(size == "50");
                let etag = format!("\"p{key:08x}\"");
                if r.chance(if pipelined { 0.4 } else { 0.15 }) {
                    if_none_match = Some(etag.clone());
                }
                let resp = if if_none_match.is_some() {
                    let mut rs = Resp::new(304);
                    rs.headers.push(("ETag", etag));
                    rs
                } else {
                    let body = self.catalog((7, key), || {
                        let mut js = format!(
                            r#"{{"category":"{cat}","page":{page},"page_size":{size},"total":{},"items":["#,
                            400 + ci * 37
                        );
                        let n: u32 = if size == "50" { 50 } else { 20 };
                        for i in 0..n {
                            if i > 0 {
                                js.push(',');
                            }
                            product_json(&mut js, (ci as u32) * 1000 + page * n + i);
                        }
                        js.push_str("]}");
                        js
                    });
                    let mut rs = Resp::new(200);
                    rs.body = body;
                    rs.headers.push(("ETag", etag));
                    rs.headers.push(("Cache-Control", "max-age=60".into()));
                    if c.accepts_gzip {
                        rs.gzip = Some(self.gzip_cached((7, key), &rs.body));
                        if r.chance(0.5) {
                            rs.framing = Framing::Chunked { trailer: false };
                        }
                    }
                    rs
                };
                ("GET", uri, "/api/v1/products", resp)
            }
            8 => {
                let sku = r.below(20_000) as u32;
                head = r.chance(if pipelined { 0.4 } else { 0.1 });
                let mut js = String::new();
                product_json(&mut js, sku);
                let mut rs = Resp::json(200, js);
                rs.early_hints = pipelined && r.chance(0.3);
                (
                    if head { "HEAD" } else { "GET" },
                    format!("/api/v1/products/SKU-{sku:05}"),
                    "/api/v1/products/{sku}",
                    rs,
                )
            }
            9 => {
                let mut js = format!(r#"{{"id":{own},"user_id":{own},"items":["#);
                for i in 0..r.range(0, 4) {
                    if i > 0 {
                        js.push(',');
                    }
                    let _ = write!(
                        js,
                        r#"{{"sku":"SKU-{:05}","qty":{}}}"#,
                        r.below(20_000),
                        r.range(1, 3)
                    );
                }
                js.push_str(r#"],"updated_at":"2025-11-02T09:12:44Z"}"#);
                (
                    "GET",
                    format!("/api/v1/carts/{own}"),
                    "/api/v1/carts/{id}",
                    Resp::json(200, js),
                )
            }
            10 => {
                let sku = r.below(20_000);
                body = format!(r#"{{"sku":"SKU-{sku:05}","qty":{}}}"#, r.range(1, 3)).into_bytes();
                ctype = Some("application/json");
                let rs = Resp::json(
                    201,
                    format!(r#"{{"cart_id":{own},"sku":"SKU-{sku:05}","added":true}}"#),
                );
                (
                    "POST",
                    format!("/api/v1/carts/{own}/items"),
                    "/api/v1/carts/{id}/items",
                    rs,
                )
            }
            11 => {
                let sku = r.below(20_000);
                let mut rs = Resp::new(204);
                rs.content_type = "";
                (
                    "DELETE",
                    format!("/api/v1/carts/{own}/items/SKU-{sku:05}"),
                    "/api/v1/carts/{id}/items/{sku}",
                    rs,
                )
            }
            12 => {
                let qi = r.below(SEARCHES.len() as u64) as u32;
                let q = SEARCHES.get(qi as usize).copied().unwrap_or("tent");
                let body = self.catalog((12, qi), || {
                    let mut js = format!(
                        r#"{{"query":"{}","results":["#,
                        q.replace("%20", " ").replace('+', " ")
                    );
                    for i in 0..10u32 {
                        if i > 0 {
                            js.push(',');
                        }
                        product_json(&mut js, 7_000 + qi * 10 + i);
                    }
                    js.push_str("]}");
                    js
                });
                let mut rs = Resp::new(200);
                rs.body = body;
                rs.framing = Framing::Chunked {
                    trailer: r.chance(0.6),
                };
                if c.accepts_gzip && r.chance(0.5) {
                    rs.gzip = Some(self.gzip_cached((12, qi), &rs.body));
                }
                (
                    "GET",
                    format!("/api/v1/search?q={q}&limit=10"),
                    "/api/v1/search",
                    rs,
                )
            }
            13 => {
                let id = uuid(r);
                body = format!(r#"{{"operationName":"Order","query":"query Order($id: ID!) {{ order(id: $id) {{ id status total_cents items {{ sku qty }} }} }}","variables":{{"id":"{id}"}}}}"#).into_bytes();
                ctype = Some("application/json");
                let mut js = String::from(r#"{"data":{"order":"#);
                order_json(&mut js, r, &id, own);
                js.push_str("}}");
                ("POST", "/graphql".into(), "/graphql", Resp::json(200, js))
            }
            14 => {
                let page = r.range(1, 5);
                let resp = if c.admin {
                    let mut js = format!(r#"{{"page":{page},"users":["#);
                    for i in 0..10u32 {
                        if i > 0 {
                            js.push(',');
                        }
                        user_json(&mut js, (page as u32 - 1) * 10 + i + 1, false);
                    }
                    js.push_str("]}");
                    Resp::json(200, js)
                } else {
                    Resp::json(403, error_json("forbidden", "admin role required", r))
                };
                (
                    "GET",
                    format!("/api/v1/admin/users?page={page}"),
                    "/api/v1/admin/users",
                    resp,
                )
            }
            _ => {
                let mut img = vec![0u8; r.range(2_000, 12_000) as usize];
                r.fill(&mut img);
                // A RIFF/WebP container header; the rest stands in for VP8 data.
                let riff_len = (img.len() as u32).saturating_sub(8).to_le_bytes();
                if let Some(h) = img.get_mut(..16) {
                    h.copy_from_slice(b"RIFF\0\0\0\0WEBPVP8 ");
                }
                if let Some(h) = img.get_mut(4..8) {
                    h.copy_from_slice(&riff_len);
                }
                body = img;
                ctype = Some("image/webp");
                expect_continue = r.chance(0.8);
                let rs = Resp::json(
                    201,
                    format!(
                        r#"{{"user_id":{own},"avatar":"https://cdn.shop.example/avatars/{}.webp"}}"#,
                        uuid(r)
                    ),
                );
                (
                    "POST",
                    "/api/v1/uploads/avatar".into(),
                    "/api/v1/uploads/avatar",
                    rs,
                )
            }
        };
        // Authentication and server failures override the planned answer.
        let public = matches!(ep, 0 | 1 | 7 | 8 | 12);
        if !public && !authed {
            resp = Resp::json(401, error_json("unauthorized", "missing credentials", r));
            resp.headers
                .push(("WWW-Authenticate", r#"Bearer realm="shop""#.into()));
        } else if ep != 0 && r.chance(0.015) {
            resp = Resp::json(500, error_json("internal", "upstream timeout", r));
        }
        if head {
            resp.framing = Framing::Length;
            resp.gzip = None;
        }
        let mut h = String::with_capacity(512);
        let _ = write!(
            h,
            "{method} {uri} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {}\r\n",
            c.user_agent
        );
        h.push_str(if route == "/graphql" || ep != 15 {
            "Accept: application/json\r\n"
        } else {
            "Accept: */*\r\n"
        });
        if c.accepts_gzip {
            h.push_str("Accept-Encoding: gzip, deflate, br\r\n");
        }
        match &c.auth {
            Auth::Bearer(t) if ep != 0 && ep != 1 => {
                let _ = write!(h, "Authorization: Bearer {t}\r\n");
            }
            Auth::ApiKey(k) if ep != 0 => {
                let _ = write!(h, "X-API-Key: {k}\r\n");
            }
            _ => {}
        }
        if let Some(etag) = &if_none_match {
            let _ = write!(h, "If-None-Match: {etag}\r\n");
        }
        if let Some(ip) = c.forwarded_for {
            let _ = write!(h, "X-Forwarded-For: {ip}\r\nX-Forwarded-Proto: https\r\n");
        }
        if let Some(ct) = ctype {
            let _ = write!(
                h,
                "Content-Type: {ct}\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        if expect_continue {
            h.push_str("Expect: 100-continue\r\n");
        }
        if r.chance(0.3) {
            let _ = write!(h, "X-Request-Id: {}\r\n", uuid(r));
        }
        Txn {
            method,
            uri,
            route,
            head: {
                h.push_str("\r\n");
                h.into_bytes()
            },
            body,
            expect_continue,
            resp,
        }
    }

    /// Renders the final response; returns the bytes and the decoded body length.
    fn render(
        resp: &Resp,
        head: bool,
        close: bool,
        date: &str,
        server: &str,
        r: &mut Rng,
    ) -> (Vec<u8>, u64) {
        let mut h = String::with_capacity(384);
        let version = if resp.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let _ = write!(
            h,
            "{version} {} {}\r\nServer: {server}\r\nDate: {date}\r\n",
            resp.status,
            reason(resp.status)
        );
        let no_body = matches!(resp.status, 100..=199 | 204 | 304);
        let wire: &[u8] = match &resp.gzip {
            Some(g) => g.as_slice(),
            None => resp.body.as_slice(),
        };
        if !no_body && !resp.content_type.is_empty() {
            let _ = write!(h, "Content-Type: {}\r\n", resp.content_type);
        }
        for (n, v) in &resp.headers {
            let _ = write!(h, "{n}: {v}\r\n");
        }
        if resp.gzip.is_some() {
            h.push_str("Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n");
        }
        let framing = if no_body {
            Framing::Length
        } else {
            resp.framing
        };
        match framing {
            Framing::Length if !no_body => {
                let _ = write!(h, "Content-Length: {}\r\n", wire.len());
            }
            Framing::Length | Framing::Close => {}
            Framing::Chunked { trailer } => {
                h.push_str("Transfer-Encoding: chunked\r\n");
                if trailer {
                    h.push_str("Trailer: Server-Timing\r\n");
                }
            }
        }
        if !resp.http10 {
            h.push_str(if close {
                "Connection: close\r\n"
            } else {
                "Connection: keep-alive\r\n"
            });
        }
        let _ = write!(h, "X-Request-Id: {}\r\n\r\n", uuid(r));
        let mut out = h.into_bytes();
        if no_body || head {
            return (out, 0);
        }
        match framing {
            Framing::Chunked { trailer } => {
                let mut rest = wire;
                while !rest.is_empty() {
                    let n = (r.range(64, 4096) as usize).min(rest.len());
                    let (a, b) = rest.split_at(n);
                    let _ = write!(out, "{n:x}\r\n");
                    out.extend_from_slice(a);
                    out.extend_from_slice(b"\r\n");
                    rest = b;
                }
                out.extend_from_slice(b"0\r\n");
                if trailer {
                    let _ = write!(
                        out,
                        "Server-Timing: db;dur={}, app;dur={}\r\n",
                        r.range(1, 40),
                        r.range(1, 90)
                    );
                }
                out.extend_from_slice(b"\r\n");
            }
            Framing::Length | Framing::Close => out.extend_from_slice(wire),
        }
        (out, resp.body.len() as u64)
    }

    /// Per-connection network setup for the scenario: addresses, tags, tunnels, impairments.
    fn setup(&self, serial: u64, r: &mut Rng, start: Timestamp) -> (TcpConfig, bool) {
        let s = self.scenario;
        let v6 = s == Scenario::VlanIpv6 && serial % 4 >= 2;
        let server = if v6 {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0x5e,
                    0,
                    0,
                    0,
                    0,
                    0x10 + (serial % 2) as u16,
                )),
                80,
            )
        } else {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 20, 0, 10 + r.below(4) as u8)),
                if s == Scenario::Tunnels { 8080 } else { 80 },
            )
        };
        // The client address is filled in by the caller; a placeholder keeps the family right.
        let client = SocketAddr::new(server.ip(), 0);
        let mut cfg = TcpConfig::new(client, server, start, r.next_u64());
        cfg.rtt = Duration::from_nanos(r.range(300_000, 60_000_000));
        cfg.server_ack_delay = Duration::from_nanos(r.range(20_000, 80_000));
        cfg.mss = if v6 { 1428 } else { 1448 };
        cfg.tcp_timestamps = r.chance(0.85);
        match s {
            Scenario::VlanIpv6 => {
                cfg.vlans = match serial % 4 {
                    0 => VlanTags::Single(100 + (serial % 3) as u16),
                    1 => VlanTags::Double {
                        outer: 200,
                        inner: 10 + (serial % 5) as u16,
                    },
                    2 => VlanTags::None,
                    _ => VlanTags::Single(300),
                };
                if v6 {
                    cfg.ipv6_ext_every = if serial % 4 == 2 { 3 } else { 2 };
                }
            }
            Scenario::Tunnels => {
                let underlay = |a: u8, b: u8| Underlay {
                    src_mac: [0x02, 0x00, 0x5e, 0x00, 0x01, a],
                    dst_mac: [0x02, 0x00, 0x5e, 0x00, 0x02, b],
                    src: Ipv4Addr::new(192, 0, 2, a),
                    dst: Ipv4Addr::new(192, 0, 2, b),
                };
                cfg.encap = if serial % 2 == 0 {
                    Encap::Vxlan {
                        underlay: underlay(11 + (serial % 3) as u8, 200),
                        vni: 5001 + (serial % 3) as u32,
                    }
                } else {
                    Encap::ErspanII {
                        underlay: underlay(21, 250),
                        session_id: 10 + (serial % 4) as u16,
                    }
                };
            }
            Scenario::Impaired => {
                // Every connection's sequence numbers cross 2^32 within its first few KB.
                cfg.client_isn = u32::MAX - r.below(1_500) as u32;
                cfg.server_isn = u32::MAX - r.below(6_000) as u32;
                // The classic 536-byte MSS (no MSS option honoured, or clamping on a tunnel)
                // cuts even small messages into several segments for the impairments to act on.
                cfg.mss = 536;
                let mut i = Impairments::default();
                match serial % 12 {
                    0 => i.loss = 0.12,
                    1 => i.reorder = 0.3,
                    2 => i.duplicate = 0.25,
                    3 => i.retransmit = 0.25,
                    4 => i.overlap_same = 0.3,
                    5 => i.overlap_diff = 0.3,
                    6 => i.skip_first_packets = r.range(4, 12) as u32,
                    7 => i.only_direction = Some(Direction::ToServer),
                    8 => i.only_direction = Some(Direction::ToClient),
                    9 => i.snaplen_bytes = Some(r.range(120, 400) as u32),
                    10 => {
                        cfg.mss = 1448;
                        i.fragment_bytes = Some(if r.chance(0.5) { 512 } else { 1200 });
                    }
                    // A clean connection, except for the wraparound (and maybe a reset).
                    _ => {}
                }
                if self.impairments {
                    cfg.impair = i;
                }
            }
            _ => {}
        }
        (cfg, v6)
    }

    /// Generates connection number `serial`, opening at `start`.
    ///
    /// Client ports come from the serial, not the RNG: two connections open at the same time must
    /// never share a 5-tuple (a random pick collided in the 1 GB benchmark capture, which no real
    /// TCP stack allows).
    pub fn connection(&mut self, serial: u64, start: Timestamp) -> GeneratedConn {
        let mut r = self.seed.fork(serial);
        let (mut cfg, v6) = self.setup(serial, &mut r, start);
        let s = self.scenario;
        // Every twentieth connection of the plain mixes is the load balancer's health check.
        let health = matches!(s, Scenario::Basic | Scenario::Bench) && serial % 20 == 7;
        let client = self.client(&mut r, v6, start.secs());
        cfg.client = SocketAddr::new(
            if health {
                IpAddr::V4(LB_HEALTH)
            } else {
                client.addr
            },
            ephemeral_port(serial),
        );
        let server_name = choose(&mut r, SERVERS);
        let mut conv = TcpConversation::new(cfg.clone());
        conv.handshake();
        let mut pending: Vec<PendingTruth> = Vec::new();
        let ms = |n: u64| Duration::from_nanos(n * 1_000_000);
        let us = |n: u64| Duration::from_nanos(n * 1_000);
        if health {
            let req = b"GET /health HTTP/1.0\r\nUser-Agent: lb-healthcheck/1.0\r\n\r\n";
            let mut resp = Resp::new(200);
            resp.body = Rc::new(b"ok".to_vec());
            resp.content_type = "text/plain";
            resp.framing = Framing::Close;
            resp.http10 = true;
            let ts = conv.send(Direction::ToServer, req, Duration::default());
            let (bytes, len) = Self::render(
                &resp,
                false,
                true,
                &self.date(ts.secs()),
                server_name,
                &mut r,
            );
            conv.send(Direction::ToClient, &bytes, us(r.range(50, 400)));
            conv.close(Direction::ToClient);
            let cap = conv.finish();
            let t = PendingTruth {
                depth: 1,
                method: "GET",
                host: "",
                uri: "/health".into(),
                route: "/health",
                status: 200,
                interim: vec![],
                request_body_len: 0,
                response_body_len: len,
                request: (0, req.len() as u64),
                response: (0, bytes.len() as u64),
                ts,
            };
            let ranges = vec![[t.request, t.response]];
            let truth = vec![t.finish(&cfg, &cap)];
            return GeneratedConn {
                config: cfg,
                capture: cap,
                truth,
                ranges,
            };
        }
        let n_txn = match s {
            Scenario::Impaired => r.range(2, 5),
            _ => r.range(1, 8),
        } as u32;
        let pipeline = s == Scenario::Pipelined && r.chance(0.7);
        let mut depth = 0u32;
        let mut plans: Vec<Txn> = Vec::with_capacity(n_txn as usize);
        let mut r2 = r.fork(1);
        for i in 0..n_txn {
            let idem = pipeline && i % 3 != 0;
            plans.push(self.plan_txn(&mut r2, &client, start.secs(), idem));
        }
        let close_by_server = r.chance(0.3);
        let reset = r.chance(if s == Scenario::Impaired { 0.25 } else { 0.04 });
        let mut idx = 0usize;
        while idx < plans.len() {
            // A pipelined batch: consecutive idempotent requests without a body or Expect.
            let mut batch = 1usize;
            if pipeline {
                while idx + batch < plans.len()
                    && batch < 4
                    && plans
                        .get(idx + batch)
                        .is_some_and(|t| t.body.is_empty() && !t.expect_continue)
                    && plans
                        .get(idx)
                        .is_some_and(|t| t.body.is_empty() && !t.expect_continue)
                {
                    batch += 1;
                }
            }
            let last_batch = idx + batch >= plans.len();
            let coalesce = batch > 1 && r.chance(0.5);
            let think = if idx == 0 {
                us(r.range(100, 2_000))
            } else {
                ms(r.range(1, 120))
            };
            // Send the requests.
            let mut starts = Vec::with_capacity(batch);
            let mut req_ranges = Vec::with_capacity(batch);
            let mut interims: Vec<Vec<u16>> = vec![Vec::new(); batch];
            // Where a response began when a 100 Continue went out before the request body.
            let mut early_resp_start: Vec<Option<u64>> = vec![None; batch];
            if coalesce {
                let mut all = Vec::new();
                let base = conv.offset(Direction::ToServer);
                let mut offs = Vec::with_capacity(batch);
                for t in plans.iter().skip(idx).take(batch) {
                    offs.push((
                        base + all.len() as u64,
                        base + (all.len() + t.head.len()) as u64,
                    ));
                    all.extend_from_slice(&t.head);
                }
                let ts = conv.send(Direction::ToServer, &all, think);
                for o in offs {
                    starts.push(conv.sent_at(Direction::ToServer, o.0).unwrap_or(ts));
                    req_ranges.push(o);
                }
            }
            let mut resp_bytes: Vec<(Vec<u8>, u64)> = Vec::with_capacity(batch);
            for (k, t) in plans.iter().skip(idx).take(batch).enumerate() {
                let close = last_batch && k + 1 == batch && close_by_server;
                let date = self.date(conv.now().secs());
                resp_bytes.push(Self::render(
                    &t.resp,
                    t.method == "HEAD",
                    close,
                    &date,
                    server_name,
                    &mut r,
                ));
                if coalesce {
                    continue;
                }
                let q0 = conv.offset(Direction::ToServer);
                let gap = if k == 0 { think } else { us(r.range(5, 300)) };
                if t.expect_continue {
                    let ts = conv.send(Direction::ToServer, &t.head, gap);
                    starts.push(ts);
                    let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
                    if let Some(v) = early_resp_start.get_mut(k) {
                        *v = Some(conv.offset(Direction::ToClient));
                    }
                    // In a pipeline the 100 would be stuck behind earlier responses; the batch
                    // rule keeps Expect requests alone, so it can be sent right away.
                    conv.send(Direction::ToClient, cont, us(r.range(30, 200)));
                    if let Some(v) = interims.get_mut(k) {
                        v.push(100);
                    }
                    conv.send(Direction::ToServer, &t.body, Duration::default());
                } else {
                    let mut msg = t.head.clone();
                    msg.extend_from_slice(&t.body);
                    starts.push(conv.send(Direction::ToServer, &msg, gap));
                }
                req_ranges.push((q0, conv.offset(Direction::ToServer)));
            }
            // Then the responses, in order.
            let mut resp_ranges = Vec::with_capacity(batch);
            for (k, t) in plans.iter().skip(idx).take(batch).enumerate() {
                let r0 = conv.offset(Direction::ToClient);
                let work = us(r.range(200, 15_000));
                if t.expect_continue {
                    // Already answered 100; the final response follows its body.
                } else if t.resp.early_hints {
                    let hints = b"HTTP/1.1 103 Early Hints\r\nLink: </static/app.css>; rel=preload; as=style\r\n\r\n";
                    conv.send(Direction::ToClient, hints, us(r.range(30, 200)));
                    if let Some(v) = interims.get_mut(k) {
                        v.push(103);
                    }
                }
                let bytes: &[u8] = resp_bytes.get(k).map_or(&[], |x| x.0.as_slice());
                // A 100 Continue counts as part of this transaction's response bytes.
                let r0 = early_resp_start.get(k).copied().flatten().unwrap_or(r0);
                conv.send(Direction::ToClient, bytes, work);
                resp_ranges.push((r0, conv.offset(Direction::ToClient)));
            }
            for k in 0..batch {
                let Some(t) = plans.get(idx + k) else { break };
                depth += 1;
                let q = req_ranges.get(k).copied().unwrap_or((0, 0));
                let a = resp_ranges.get(k).copied().unwrap_or((0, 0));
                let ts = starts.get(k).copied().unwrap_or(start);
                let decoded = resp_bytes.get(k).map_or(0, |x| x.1);
                let interim = interims.get(k).cloned().unwrap_or_default();
                pending.push(PendingTruth {
                    depth,
                    method: t.method,
                    host: HOST,
                    uri: t.uri.clone(),
                    route: t.route,
                    status: t.resp.status,
                    interim,
                    request_body_len: t.body.len() as u64,
                    response_body_len: if t.method == "HEAD" { 0 } else { decoded },
                    request: q,
                    response: a,
                    ts,
                });
            }
            idx += batch;
        }
        if reset {
            conv.reset(if r.chance(0.5) {
                Direction::ToServer
            } else {
                Direction::ToClient
            });
        } else {
            let idle = ms(r.range(5, 2_000));
            conv.advance(idle);
            conv.close(if close_by_server {
                Direction::ToClient
            } else {
                Direction::ToServer
            });
        }
        let cap = conv.finish();
        let ranges = pending.iter().map(|t| [t.request, t.response]).collect();
        let truth = pending.into_iter().map(|t| t.finish(&cfg, &cap)).collect();
        GeneratedConn {
            config: cfg,
            capture: cap,
            truth,
            ranges,
        }
    }
}

/// A transaction's truth before the capture is finished: its byte ranges in each stream.
struct PendingTruth {
    depth: u32,
    method: &'static str,
    /// The Host header, empty when the request had none.
    host: &'static str,
    uri: String,
    route: &'static str,
    status: u16,
    interim: Vec<u16>,
    request_body_len: u64,
    response_body_len: u64,
    /// `[start, end)` in the client's stream.
    request: (u64, u64),
    /// `[start, end)` in the server's stream, interim responses included.
    response: (u64, u64),
    ts: Timestamp,
}

impl PendingTruth {
    fn finish(self, cfg: &TcpConfig, cap: &ConversationCapture) -> TruthRecord {
        let (q, a) = (self.request, self.response);
        let impaired = !cap.is_intact(Direction::ToServer, q.0, q.1)
            || !cap.is_intact(Direction::ToClient, a.0, a.1);
        let kinds = cap
            .impairments_in(Direction::ToServer, q.0, q.1)
            .union(cap.impairments_in(Direction::ToClient, a.0, a.1));
        TruthRecord {
            client: cfg.client.to_string(),
            server: cfg.server.to_string(),
            trans_depth: self.depth,
            method: self.method.to_string(),
            host: self.host.to_string(),
            uri: self.uri,
            route: self.route.to_string(),
            status_code: self.status,
            interim: self.interim,
            request_body_len: self.request_body_len,
            response_body_len: self.response_body_len,
            impaired,
            impairments: kinds.names(),
            ts: self.ts.as_secs_f64(),
        }
    }
}

/// The client's ephemeral port for connection `serial`: a stride through the Linux ephemeral
/// range (32768..61000) that is coprime with its size, so any 28,232 consecutive connections get
/// distinct ports.
pub(crate) fn ephemeral_port(serial: u64) -> u16 {
    const BASE: u64 = 32_768;
    const SPAN: u64 = 28_232;
    (BASE + serial.wrapping_mul(7_919) % SPAN) as u16
}

#[cfg(test)]
mod tests {
    #[test]
    fn concurrent_connections_never_share_a_client_port() {
        let ports: std::collections::HashSet<u16> =
            (0..28_232u64).map(super::ephemeral_port).collect();
        assert_eq!(ports.len(), 28_232);
        assert!(ports.iter().all(|p| (32_768..61_000).contains(p)));
    }

    use super::*;

    #[test]
    fn http_dates_match_known_instants() {
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_767_603_600, "Mon, 05 Jan 2026 09:00:00 GMT"),
        ] {
            assert_eq!(http_date(secs), want);
        }
    }

    #[test]
    fn base64url_matches_rfc4648_vectors_without_padding() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want);
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn jwt_claims_decode_to_subject_and_roles() {
        let m = ApiModel::new(Scenario::Basic, 1, 1000);
        let t = m.jwt(97, true, 1_767_603_600);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], base64url(br#"{"alg":"HS256","typ":"JWT"}"#));
        let payload = r#"{"sub":"user-97","roles":["customer","admin"],"iss":"https://auth.shop.example","iat":1767603600,"exp":1767607200}"#;
        assert_eq!(parts[1], base64url(payload.as_bytes()));
        assert_eq!(parts[2].len(), 43, "a 32-byte signature");
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_name(s.name()), Some(s));
        }
        assert_eq!(Scenario::from_name("nope"), None);
    }
}

//! Caller identities: who made each request, keyed by credential rather than by IP address.
//!
//! [`IdentityExtractor::extract`] reads a [`Transaction`]'s request and produces an
//! [`Identity`]: the authentication scheme used, a pseudonymous subject (JWT subject, Basic user,
//! API key, opaque token or session cookie), role names and tenant from JWT claims, unverified JWT
//! metadata, and the client address, taken from forwarding headers only when the TCP peer is a
//! trusted proxy. When several credentials are present, the strongest statement of identity
//! names the subject: bearer token > Basic > API key > session cookie.
//!
//! Invariants:
//! - Raw secrets are never stored: every credential becomes a keyed [`Pseudonym`] before it
//!   leaves this module, the Basic password is wiped as soon as the user is split off, and no
//!   field of [`Identity`] can hold a token, key, cookie or password.
//! - Pure: no I/O, no clock (expiry is judged against the request's packet time), no threads.
//! - Input-driven paths never panic and allocate only in proportion to the request, under the
//!   limits in [`IdentityConfig`]; hitting a limit raises an [`IdentityAnomaly`] and counts it.
//! - What a credential yields regardless of time (pseudonyms, decoded JWT facts and their
//!   anomalies) is remembered in a bounded cache keyed by a keyed hash of the credential
//!   (`max_cached_credentials`); what depends on packet time is judged afresh on every request,
//!   so an identity is the same whether its credential was cached or not.

mod cache;
mod credentials;
mod facts;
mod forwarded;
mod jwt;
mod pseudonym;

#[cfg(test)]
mod tests;

pub use cache::CredentialCacheStats;
pub use pseudonym::{Pseudonym, Pseudonymizer};

use crate::transaction::{Request, Transaction};
use cache::{Credential, CredentialCache};
use credentials::Authorization;
use facts::{BearerFacts, Derived};
use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Pseudonym namespaces. Users share one so a person seen through a JWT `sub` and a Basic user
/// of the same name correlate; the others are credentials, not people.
const KIND_USER: &str = "u";
const KIND_API_KEY: &str = "k";
const KIND_TOKEN: &str = "t";
const KIND_SESSION: &str = "s";
const KIND_TENANT: &str = "o";

/// Shortest accepted pseudonym secret. Shorter secrets make pseudonyms of short user names
/// guessable by trying secrets.
pub const MIN_SECRET_BYTES: usize = 16;

/// Domain-separation labels for deriving the credential cache's hash seeds from the deployment
/// secret, independent of the pseudonym key.
const CACHE_SEED_LABELS: [&[u8]; 2] = [
    b"apitap identity credential cache seed a v1",
    b"apitap identity credential cache seed b v1",
];

/// Settings for identity extraction (`[identity]` in the config file).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// JWT claims naming the caller, tried in order; the first present string or number wins
    /// (e.g. add `client_id` for machine clients, `email`). A name with dots that is not itself
    /// a claim is a path into nested objects (`user.id`).
    pub jwt_subject_claims: Vec<String>,
    /// JWT claims holding role names; all present ones are merged. A string claim is a
    /// space-separated list (OAuth `scope`), an array contributes its strings. Dotted paths work
    /// as for subjects (`realm_access.roles`).
    pub jwt_role_claims: Vec<String>,
    /// JWT claims naming the tenant, tried in order like `jwt_subject_claims`.
    pub jwt_tenant_claims: Vec<String>,
    /// Request headers carrying API keys, tried in order (names are case-insensitive).
    pub api_key_headers: Vec<String>,
    /// Query parameters carrying API keys, tried in order after the headers (names are
    /// case-insensitive). A hit raises `credential_in_query`: URLs end up in logs.
    pub api_key_query_params: Vec<String>,
    /// Cookies holding session ids, tried in order (names are case-insensitive).
    pub session_cookies: Vec<String>,
    /// Reverse proxies whose forwarding headers are believed, as CIDRs (`10.0.0.0/8`,
    /// `2001:db8::/32`) or single addresses. Empty: forwarding headers are never believed.
    pub trusted_proxies: Vec<String>,
    /// Longest bearer token decoded as a JWT. Longer tokens are treated as opaque and raise
    /// `jwt_too_long`.
    pub max_jwt_bytes: usize,
    /// Role names kept per request; further roles are dropped and raise `jwt_roles_capped`.
    pub max_roles: usize,
    /// Longest role name kept; longer ones are dropped and raise `jwt_roles_capped`.
    pub max_role_bytes: usize,
    /// Longest JWT header or claim text kept (`alg`, `typ`, `iss`, each `aud`); longer values are
    /// cut at a character boundary and raise `jwt_claim_truncated`.
    pub max_claim_bytes: usize,
    /// Audiences kept from an `aud` array; further ones are dropped and raise
    /// `jwt_claim_truncated`.
    pub max_audiences: usize,
    /// Entries kept per forwarding header kind (the rightmost ones). If all kept entries are
    /// trusted proxies and more were dropped, the leftmost kept one is used and
    /// `forwarded_hops_capped` is raised.
    pub max_forwarded_hops: usize,
    /// Clock skew allowed when judging `exp` and `nbf` against packet time, as most token
    /// validators allow some; without it tokens at the edge of validity would be flagged.
    pub jwt_leeway_secs: u64,
    /// Credentials (bearer tokens, Basic credentials, API keys, session cookies) whose derived
    /// identity facts are remembered, so a repeated credential is not decoded and pseudonymised
    /// again. Entries are keyed by a keyed hash, never by the credential; each holds at most the
    /// capped JWT facts (`max_claim_bytes`, `max_roles`...), typically a few hundred bytes.
    /// When full, the older half is dropped (counted as evictions). Below 2 disables the cache;
    /// results are the same either way, only slower.
    pub max_cached_credentials: usize,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        IdentityConfig {
            jwt_subject_claims: strings(&["sub"]),
            jwt_role_claims: strings(&["roles", "role", "scope", "scp", "groups"]),
            jwt_tenant_claims: strings(&["tenant", "tid", "org_id"]),
            api_key_headers: strings(&["x-api-key", "api-key", "x-auth-token"]),
            api_key_query_params: strings(&["api_key", "apikey", "key", "access_token", "token"]),
            session_cookies: strings(&[
                "session",
                "sessionid",
                "JSESSIONID",
                "PHPSESSID",
                "connect.sid",
                "sid",
            ]),
            trusted_proxies: Vec::new(),
            max_jwt_bytes: 16 * 1024,
            max_roles: 32,
            max_role_bytes: 128,
            max_claim_bytes: 256,
            max_audiences: 8,
            max_forwarded_hops: 16,
            jwt_leeway_secs: 60,
            max_cached_credentials: 16_384,
        }
    }
}

impl IdentityConfig {
    /// Checks every field that can be wrong and returns the parsed trusted-proxy networks.
    pub fn validate(&self) -> Result<Vec<IpNet>, IdentityError> {
        let name_lists: [(&'static str, &Vec<String>); 6] = [
            ("jwt_subject_claims", &self.jwt_subject_claims),
            ("jwt_role_claims", &self.jwt_role_claims),
            ("jwt_tenant_claims", &self.jwt_tenant_claims),
            ("api_key_headers", &self.api_key_headers),
            ("api_key_query_params", &self.api_key_query_params),
            ("session_cookies", &self.session_cookies),
        ];
        for (key, list) in name_lists {
            if let Some(bad) = list.iter().find(|s| s.trim().is_empty()) {
                return Err(IdentityError::InvalidName {
                    key,
                    value: bad.clone(),
                });
            }
        }
        // Header names are matched against the wire, so one that cannot be a field name
        // (a space, a colon) is a typo that would silently match nothing.
        let not_a_header = |s: &&String| !s.bytes().all(is_header_name_byte);
        if let Some(bad) = self.api_key_headers.iter().find(not_a_header) {
            return Err(IdentityError::InvalidName {
                key: "api_key_headers",
                value: bad.clone(),
            });
        }
        if self.max_jwt_bytes == 0 {
            return Err(IdentityError::ZeroLimit {
                key: "max_jwt_bytes",
            });
        }
        if self.max_forwarded_hops == 0 {
            return Err(IdentityError::ZeroLimit {
                key: "max_forwarded_hops",
            });
        }
        self.trusted_proxies.iter().map(|s| parse_net(s)).collect()
    }
}

/// RFC 9110 `tchar`: what a header field name may contain.
fn is_header_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_net(s: &str) -> Result<IpNet, IdentityError> {
    let t = s.trim();
    t.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| IdentityError::InvalidTrustedProxy {
            value: s.to_owned(),
        })
}

/// Configuration and setup errors. Messages name the key and the value, and say what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "[identity] trusted_proxies: {value:?} is not a CIDR or IP address: write it like \
         \"10.0.0.0/8\", \"2001:db8::/32\" or \"192.0.2.7\""
    )]
    InvalidTrustedProxy { value: String },
    #[error("[identity] {key}: {value:?} is not a usable name: remove it or correct it")]
    InvalidName { key: &'static str, value: String },
    #[error("[identity] {key} = 0: must be at least 1")]
    ZeroLimit { key: &'static str },
    #[error(
        "[identity] pseudonym secret is {len} bytes: it must be at least {min} random bytes, \
         the same on every sensor whose identities should correlate"
    )]
    SecretTooShort { len: usize, min: usize },
}

/// How the request authenticated, by the credential that named the subject.
///
/// Names (as in JSON): `none`, `basic`, `bearer_jwt`, `bearer_opaque`, `api_key`, `cookie`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthScheme {
    /// No credential found.
    None,
    /// HTTP Basic (RFC 7617).
    Basic,
    /// Bearer token that decodes as a JWT.
    BearerJwt,
    /// Bearer token that is not a decodable JWT (reference token, JWE, malformed or too long).
    BearerOpaque,
    /// API key in a configured header or query parameter.
    ApiKey,
    /// Session cookie.
    Cookie,
}

impl AuthScheme {
    pub fn name(self) -> &'static str {
        match self {
            AuthScheme::None => "none",
            AuthScheme::Basic => "basic",
            AuthScheme::BearerJwt => "bearer_jwt",
            AuthScheme::BearerOpaque => "bearer_opaque",
            AuthScheme::ApiKey => "api_key",
            AuthScheme::Cookie => "cookie",
        }
    }
}

impl serde::Serialize for AuthScheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Something odd about a request's credentials or forwarding headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdentityAnomaly {
    /// A JWT-shaped bearer token whose header or claims are not base64url JSON objects.
    JwtUndecodable,
    /// A bearer token longer than `max_jwt_bytes`, not decoded.
    JwtTooLong,
    /// A JWE (encrypted) bearer token: its claims cannot be read.
    JwtEncrypted,
    /// A JWT whose header says `alg: none` (any case).
    JwtAlgNone,
    /// A JWT with an empty signature segment.
    JwtUnsigned,
    /// A JWT whose `exp` is at or before the packet time (beyond the leeway).
    JwtExpired,
    /// A JWT whose `nbf` is after the packet time (beyond the leeway).
    JwtNotYetValid,
    /// A JWT with none of the configured subject claims; the token itself names the caller.
    JwtWithoutSubject,
    /// Roles were dropped: more than `max_roles`, or longer than `max_role_bytes`.
    JwtRolesCapped,
    /// A JWT text field was cut to `max_claim_bytes` or audiences to `max_audiences`.
    JwtClaimTruncated,
    /// Basic credentials that are not base64 of `user:password`, or have an empty user.
    BasicMalformed,
    /// An `Authorization` header that is empty or has a scheme with no credentials.
    AuthorizationMalformed,
    /// An `Authorization` scheme other than Basic or Bearer, not interpreted.
    AuthorizationUnsupported,
    /// More than one `Authorization` header; only the first is used.
    MultipleAuthorizationHeaders,
    /// More than one kind of credential (bearer, Basic, API key, session cookie) in one request.
    MultipleCredentials,
    /// An API key was taken from the query string, where it leaks into logs and referrers.
    CredentialInQuery,
    /// Forwarding headers (XFF, Forwarded, X-Real-IP) from a peer that is not a trusted proxy.
    XffUntrusted,
    /// A forwarding entry that is not an address stopped the walk before an untrusted hop.
    ForwardedMalformed,
    /// Every kept forwarding entry was a trusted proxy and more than `max_forwarded_hops` existed.
    ForwardedHopsCapped,
}

impl IdentityAnomaly {
    /// Every variant, in declaration order (the index of each counter).
    pub const ALL: [IdentityAnomaly; 19] = [
        IdentityAnomaly::JwtUndecodable,
        IdentityAnomaly::JwtTooLong,
        IdentityAnomaly::JwtEncrypted,
        IdentityAnomaly::JwtAlgNone,
        IdentityAnomaly::JwtUnsigned,
        IdentityAnomaly::JwtExpired,
        IdentityAnomaly::JwtNotYetValid,
        IdentityAnomaly::JwtWithoutSubject,
        IdentityAnomaly::JwtRolesCapped,
        IdentityAnomaly::JwtClaimTruncated,
        IdentityAnomaly::BasicMalformed,
        IdentityAnomaly::AuthorizationMalformed,
        IdentityAnomaly::AuthorizationUnsupported,
        IdentityAnomaly::MultipleAuthorizationHeaders,
        IdentityAnomaly::MultipleCredentials,
        IdentityAnomaly::CredentialInQuery,
        IdentityAnomaly::XffUntrusted,
        IdentityAnomaly::ForwardedMalformed,
        IdentityAnomaly::ForwardedHopsCapped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IdentityAnomaly::JwtUndecodable => "jwt_undecodable",
            IdentityAnomaly::JwtTooLong => "jwt_too_long",
            IdentityAnomaly::JwtEncrypted => "jwt_encrypted",
            IdentityAnomaly::JwtAlgNone => "jwt_alg_none",
            IdentityAnomaly::JwtUnsigned => "jwt_unsigned",
            IdentityAnomaly::JwtExpired => "jwt_expired",
            IdentityAnomaly::JwtNotYetValid => "jwt_not_yet_valid",
            IdentityAnomaly::JwtWithoutSubject => "jwt_without_subject",
            IdentityAnomaly::JwtRolesCapped => "jwt_roles_capped",
            IdentityAnomaly::JwtClaimTruncated => "jwt_claim_truncated",
            IdentityAnomaly::BasicMalformed => "basic_malformed",
            IdentityAnomaly::AuthorizationMalformed => "authorization_malformed",
            IdentityAnomaly::AuthorizationUnsupported => "authorization_unsupported",
            IdentityAnomaly::MultipleAuthorizationHeaders => "multiple_authorization_headers",
            IdentityAnomaly::MultipleCredentials => "multiple_credentials",
            IdentityAnomaly::CredentialInQuery => "credential_in_query",
            IdentityAnomaly::XffUntrusted => "xff_untrusted",
            IdentityAnomaly::ForwardedMalformed => "forwarded_malformed",
            IdentityAnomaly::ForwardedHopsCapped => "forwarded_hops_capped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Unverified JWT metadata. None of it is secret; strings are capped by `max_claim_bytes`.
///
/// What the token says is the same on every request that carries it, so it is shared rather
/// than copied: cloning a `JwtInfo` or reading one from the credential cache costs a reference
/// count. Only the judgement against the request's packet time is held per request. It
/// serializes as one flat object (`alg` ... `nbf`, `alg_none`, `unsigned`, `expired`,
/// `not_yet_valid`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtInfo {
    /// Header and claim facts of the token.
    pub claims: Arc<JwtClaims>,
    /// `exp` had passed at the request's packet time.
    pub expired: bool,
    /// `nbf` had not yet come at the request's packet time.
    pub not_yet_valid: bool,
}

/// What a JWT's header and claims say, independent of when it is seen.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct JwtClaims {
    /// Header `alg`.
    pub alg: Option<String>,
    /// Header `typ`.
    pub typ: Option<String>,
    /// Claim `iss`.
    pub iss: Option<String>,
    /// Claim `aud`, a string or array, as a list.
    pub aud: Vec<String>,
    /// Claim `exp`, seconds since the epoch.
    pub exp: Option<i64>,
    /// Claim `iat`, seconds since the epoch.
    pub iat: Option<i64>,
    /// Claim `nbf`, seconds since the epoch.
    pub nbf: Option<i64>,
    /// `alg` is `none` in any case.
    pub alg_none: bool,
    /// The signature segment is empty.
    pub unsigned: bool,
}

impl serde::Serialize for JwtInfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let c = &*self.claims;
        let mut st = s.serialize_struct("JwtInfo", 11)?;
        st.serialize_field("alg", &c.alg)?;
        st.serialize_field("typ", &c.typ)?;
        st.serialize_field("iss", &c.iss)?;
        st.serialize_field("aud", &c.aud)?;
        st.serialize_field("exp", &c.exp)?;
        st.serialize_field("iat", &c.iat)?;
        st.serialize_field("nbf", &c.nbf)?;
        st.serialize_field("alg_none", &c.alg_none)?;
        st.serialize_field("unsigned", &c.unsigned)?;
        st.serialize_field("expired", &self.expired)?;
        st.serialize_field("not_yet_valid", &self.not_yet_valid)?;
        st.end()
    }
}

/// Role names from JWT claims, in claim order, deduplicated. Every request carrying the same
/// token shares one list, so cloning costs a reference count, and an empty list holds no
/// allocation. Reads as a `[String]`.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Roles(
    /// Invariant: `None` exactly when there are no roles, so equal lists compare equal.
    Option<Arc<[String]>>,
);

impl Roles {
    pub fn as_slice(&self) -> &[String] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::Deref for Roles {
    type Target = [String];

    fn deref(&self) -> &[String] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Roles {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl From<Vec<String>> for Roles {
    fn from(roles: Vec<String>) -> Self {
        Roles((!roles.is_empty()).then(|| roles.into()))
    }
}

impl FromIterator<String> for Roles {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

impl<const N: usize> PartialEq<[&str; N]> for Roles {
    fn eq(&self, other: &[&str; N]) -> bool {
        self.as_slice() == other
    }
}

impl std::fmt::Debug for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// For alert evidence: the same JSON array a `Vec<String>` of the roles gives.
impl From<Roles> for serde_json::Value {
    fn from(roles: Roles) -> Self {
        serde_json::Value::Array(
            roles
                .iter()
                .map(|r| serde_json::Value::String(r.clone()))
                .collect(),
        )
    }
}

impl serde::Serialize for Roles {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

/// Who made one request, with credentials replaced by pseudonyms.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub scheme: AuthScheme,
    /// The caller, from the credential that chose `scheme`: JWT subject or Basic user (`u:`),
    /// opaque bearer token (`t:`), API key (`k:`), session cookie (`s:`).
    pub subject: Option<Pseudonym>,
    /// Role names from JWT claims, deduplicated, at most `max_roles`.
    pub roles: Roles,
    /// The tenant from JWT claims (`o:`).
    pub tenant: Option<Pseudonym>,
    /// The client: the TCP peer, or the address forwarding headers give when the peer is a
    /// trusted proxy.
    pub client_ip: IpAddr,
    pub jwt: Option<JwtInfo>,
    /// The Basic user whenever Basic credentials were sent, even if another credential named the
    /// subject.
    pub basic_user: Option<Pseudonym>,
    /// [`IdentityAnomaly`] names, each once, in the order raised.
    pub flags: Vec<&'static str>,
}

/// Extracts identities from transactions. Shareable across threads; counters are atomics and
/// the credential cache is behind a mutex.
pub struct IdentityExtractor {
    cfg: IdentityConfig,
    trusted: Vec<IpNet>,
    pseudo: Pseudonymizer,
    anomaly_counts: [AtomicU64; IdentityAnomaly::ALL.len()],
    cache: CredentialCache<Derived>,
}

impl std::fmt::Debug for IdentityExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityExtractor")
            .field("cfg", &self.cfg)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

/// One credential found in a request, already pseudonymised.
struct Found {
    scheme: AuthScheme,
    subject: Option<Pseudonym>,
}

impl IdentityExtractor {
    /// Validates `cfg` and derives the pseudonym key from `secret` (at least
    /// [`MIN_SECRET_BYTES`]).
    pub fn new(cfg: &IdentityConfig, secret: &[u8]) -> Result<Self, IdentityError> {
        let trusted = cfg.validate()?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(IdentityError::SecretTooShort {
                len: secret.len(),
                min: MIN_SECRET_BYTES,
            });
        }
        let mut seeds = [0u64; 8];
        let seed_bytes = CACHE_SEED_LABELS.map(|label| pseudonym::hmac_short_key(label, &[secret]));
        for (seed, chunk) in seeds
            .iter_mut()
            .zip(seed_bytes.iter().flat_map(|b| b.chunks_exact(8)))
        {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *seed = u64::from_le_bytes(word);
        }
        Ok(IdentityExtractor {
            cfg: cfg.clone(),
            trusted,
            pseudo: Pseudonymizer::new(secret),
            anomaly_counts: Default::default(),
            cache: CredentialCache::new(cfg.max_cached_credentials, seeds),
        })
    }

    /// Hits, misses and evictions of the credential cache so far; meant for export as
    /// `apitap_identity_credential_cache_{hits,misses,evictions}_total`.
    pub fn credential_cache_stats(&self) -> CredentialCacheStats {
        self.cache.stats()
    }

    /// How many requests raised `anomaly` so far; meant for export as
    /// `apitap_identity_anomalies_total{anomaly="<name>"}`.
    pub fn anomaly_count(&self, anomaly: IdentityAnomaly) -> u64 {
        self.anomaly_counts
            .get(anomaly.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    pub fn extract(&self, tx: &Transaction) -> Identity {
        let peer = tx.conn.client.to_canonical();
        let mut raised = Vec::new();
        let mut identity = Identity {
            scheme: AuthScheme::None,
            subject: None,
            roles: Roles::default(),
            tenant: None,
            client_ip: peer,
            jwt: None,
            basic_user: None,
            flags: Vec::new(),
        };
        if let Some(req) = &tx.request {
            identity.client_ip = self.client_ip(req, peer, &mut raised);
            self.credentials(req, tx, &mut identity, &mut raised);
        }
        for anomaly in raised {
            let name = anomaly.name();
            if !identity.flags.contains(&name) {
                identity.flags.push(name);
                if let Some(c) = self.anomaly_counts.get(anomaly.index()) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        identity
    }

    /// Finds every credential kind, fills JWT facts and `basic_user`, then lets the strongest
    /// credential name the subject.
    fn credentials(
        &self,
        req: &Request,
        tx: &Transaction,
        identity: &mut Identity,
        raised: &mut Vec<IdentityAnomaly>,
    ) {
        let mut authorizations = req.headers.get_all("authorization");
        let first_auth = authorizations.next();
        if authorizations.next().is_some() {
            raised.push(IdentityAnomaly::MultipleAuthorizationHeaders);
        }
        let mut bearer = None;
        let mut basic = None;
        match first_auth.map(credentials::parse_authorization) {
            None => {}
            Some(Authorization::Bearer(token)) => {
                let (leeway, now) = (self.cfg.jwt_leeway_secs, tx.ts());
                let mut apply = |facts: &BearerFacts| {
                    let (scheme, subject) = facts.apply(leeway, now, identity, raised);
                    Found {
                        scheme,
                        subject: Some(subject),
                    }
                };
                let found = self.cache.read_or_derive(
                    Credential::Bearer,
                    token,
                    || Derived::Bearer(self.bearer(token)),
                    |derived| match derived {
                        Derived::Bearer(facts) => Some(apply(facts)),
                        Derived::Pseudonym(_) => None,
                    },
                );
                // Only bearer tokens derive `Bearer` and the kind is part of the key; were two
                // keys ever to collide, deriving afresh still gives the right answer.
                bearer = Some(found.unwrap_or_else(|| apply(&self.bearer(token))));
            }
            Some(Authorization::Basic(b64)) => {
                let user = self.pseudonym_of(Credential::Basic, b64, || {
                    credentials::with_basic_user(b64, |user| {
                        (!user.is_empty()).then(|| self.pseudo.pseudonym(KIND_USER, user))
                    })
                    .flatten()
                });
                if user.is_none() {
                    raised.push(IdentityAnomaly::BasicMalformed);
                }
                identity.basic_user = user.clone();
                basic = Some(Found {
                    scheme: AuthScheme::Basic,
                    subject: user,
                });
            }
            Some(Authorization::Other) => raised.push(IdentityAnomaly::AuthorizationUnsupported),
            Some(Authorization::Malformed) => raised.push(IdentityAnomaly::AuthorizationMalformed),
        }

        let api_key_pseudonym = |key: &[u8]| {
            self.pseudonym_of(Credential::ApiKey, key, || {
                Some(self.pseudo.pseudonym(KIND_API_KEY, key))
            })
        };
        let api_key = match credentials::find_header(&req.headers, &self.cfg.api_key_headers) {
            Some(key) => api_key_pseudonym(key),
            None => credentials::find_query_param(&req.uri, &self.cfg.api_key_query_params)
                .and_then(|key| {
                    raised.push(IdentityAnomaly::CredentialInQuery);
                    api_key_pseudonym(&key)
                }),
        }
        .map(|k| Found {
            scheme: AuthScheme::ApiKey,
            subject: Some(k),
        });

        let cookie =
            credentials::find_cookie(&req.headers, &self.cfg.session_cookies).map(|c| Found {
                scheme: AuthScheme::Cookie,
                subject: self.pseudonym_of(Credential::Cookie, c, || {
                    Some(self.pseudo.pseudonym(KIND_SESSION, c))
                }),
            });

        let mut found = [bearer, basic, api_key, cookie].into_iter().flatten();
        if let Some(first) = found.next() {
            if found.next().is_some() {
                raised.push(IdentityAnomaly::MultipleCredentials);
            }
            identity.scheme = first.scheme;
            identity.subject = first.subject;
        }
    }

    /// The pseudonym of an account name read from a login request's body (JSON or form), in
    /// the namespace of Basic users (`u:`): detectors key and show the account by it, never
    /// by the name. Callers normalise the name first (trimmed, lower case).
    pub fn username_pseudonym(&self, name: &[u8]) -> Pseudonym {
        self.pseudo.pseudonym(KIND_USER, name)
    }

    /// The pseudonym `derive` gives for a credential other than a bearer token, through the
    /// cache.
    fn pseudonym_of(
        &self,
        kind: Credential,
        raw: &[u8],
        derive: impl Fn() -> Option<Pseudonym>,
    ) -> Option<Pseudonym> {
        self.cache
            .read_or_derive(
                kind,
                raw,
                || Derived::Pseudonym(derive()),
                |derived| match derived {
                    Derived::Pseudonym(p) => Ok(p.clone()),
                    Derived::Bearer(_) => Err(()),
                },
            )
            // Only a bearer token derives `Bearer`, and the kind is part of the key; were two
            // keys ever to collide, deriving afresh still gives the right answer.
            .unwrap_or_else(|()| derive())
    }

    /// Decodes a bearer token as a JWT when it is one, and pseudonymises what names the caller
    /// and tenant: everything about the token that does not depend on when it is seen.
    fn bearer(&self, token: &[u8]) -> BearerFacts {
        let opaque =
            |anomaly| BearerFacts::opaque(self.pseudo.pseudonym(KIND_TOKEN, token), anomaly);
        if token.len() > self.cfg.max_jwt_bytes {
            return opaque(Some(IdentityAnomaly::JwtTooLong));
        }
        match jwt::classify(token) {
            jwt::Token::Opaque => opaque(None),
            jwt::Token::Encrypted => opaque(Some(IdentityAnomaly::JwtEncrypted)),
            jwt::Token::Undecodable => opaque(Some(IdentityAnomaly::JwtUndecodable)),
            jwt::Token::Jws(jws) => {
                let mut claims = jwt::inspect(&jws, &self.cfg);
                let subject = match &claims.subject {
                    Some(sub) => self.pseudo.pseudonym(KIND_USER, sub),
                    None => {
                        // Client-credential tokens often carry no subject; the token still
                        // names one caller for as long as it lives.
                        claims.raised.push(IdentityAnomaly::JwtWithoutSubject);
                        self.pseudo.pseudonym(KIND_TOKEN, token)
                    }
                };
                let tenant = claims
                    .tenant
                    .as_ref()
                    .map(|t| self.pseudo.pseudonym(KIND_TENANT, t));
                BearerFacts::jwt(subject, tenant, claims)
            }
        }
    }

    /// The client address: the TCP peer unless it is a trusted proxy, in which case the first
    /// forwarding header kind present (X-Forwarded-For, then Forwarded, then X-Real-IP) is walked.
    fn client_ip(&self, req: &Request, peer: IpAddr, raised: &mut Vec<IdentityAnomaly>) -> IpAddr {
        let h = &req.headers;
        // One pass over the fields finds which kinds carry a value; most requests carry none.
        let (mut xff, mut fwd, mut real) = (false, false, false);
        for (name, value) in h.iter() {
            let kind = match name.len() {
                15 if name.eq_ignore_ascii_case(b"x-forwarded-for") => &mut xff,
                9 if name.eq_ignore_ascii_case(b"forwarded") => &mut fwd,
                9 if name.eq_ignore_ascii_case(b"x-real-ip") => &mut real,
                _ => continue,
            };
            *kind |= !value.trim_ascii().is_empty();
        }
        if !(xff || fwd || real) {
            return peer;
        }
        if !self.is_trusted(peer) {
            raised.push(IdentityAnomaly::XffUntrusted);
            return peer;
        }
        let max = self.cfg.max_forwarded_hops;
        let trusted = |ip| self.is_trusted(ip);
        // A kind without a non-empty value has no entries: its walk would be `None`.
        let walked = xff
            .then(|| {
                forwarded::walk(
                    peer,
                    || forwarded::xff_entries(h.get_all("x-forwarded-for")),
                    forwarded::xff_hop,
                    max,
                    trusted,
                )
            })
            .flatten()
            .or_else(|| {
                fwd.then(|| {
                    forwarded::walk(
                        peer,
                        || forwarded::forwarded_entries(h.get_all("forwarded")),
                        forwarded::forwarded_hop,
                        max,
                        trusted,
                    )
                })
                .flatten()
            })
            .or_else(|| {
                // Only the first non-empty X-Real-IP value counts, as one hop.
                let first = || {
                    h.get_all("x-real-ip")
                        .filter(|v| !v.trim_ascii().is_empty())
                        .take(1)
                };
                real.then(|| forwarded::walk(peer, first, forwarded::xff_hop, max, trusted))
                    .flatten()
            });
        match walked {
            None => peer,
            Some(w) => {
                if w.malformed {
                    raised.push(IdentityAnomaly::ForwardedMalformed);
                }
                if w.capped {
                    raised.push(IdentityAnomaly::ForwardedHopsCapped);
                }
                w.client
            }
        }
    }
}

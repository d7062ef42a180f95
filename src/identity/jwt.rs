//! JSON Web Token inspection without verification (RFC 7519, RFC 7515 compact form).
//!
//! A passive sensor has no keys, so nothing here checks a signature: it reads the header and
//! claims a token *claims* to carry, which is what the API behind the sensor acts on when it
//! accepts the token. Facts that make a token suspicious regardless of keys (`alg: none`, an empty
//! signature, expiry relative to packet time) are reported so detectors can pair them with the
//! server's answer.
//!
//! Invariants:
//! - Only tokens of at most `max_jwt_bytes` are decoded; decoding allocates at most that much
//!   (base64 shrinks) plus the JSON values parsed from it, and `serde_json` bounds nesting depth.
//! - Every string kept from a token is cut to `max_claim_bytes`/`max_role_bytes` and every list to
//!   `max_audiences`/`max_roles`; the raw token and its signature are never kept.

use super::{IdentityAnomaly, IdentityConfig, JwtClaims};
use crate::common::Timestamp;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

/// base64url as JWTs use it: no padding required, but tolerate senders that add it, and accept
/// non-canonical trailing bits rather than calling a token undecodable over them.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// What a bearer token turned out to be.
#[derive(Debug)]
pub(super) enum Token {
    /// Not in JWS or JWE compact form: an opaque reference token.
    Opaque,
    /// JWE compact form (five segments, JSON header): its claims are encrypted.
    Encrypted,
    /// Shaped like a JWS with a JSON-looking header, but the header or claims do not decode.
    Undecodable,
    /// A decoded JWS.
    Jws(Jws),
}

#[derive(Debug)]
pub(super) struct Jws {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    signature_empty: bool,
}

/// The identity-relevant facts read from one JWS, none of which depend on when it is seen: the
/// same token always yields the same `Claims`, so they can be remembered per token and only
/// [`judge_time`] run again for each request.
#[derive(Debug)]
pub(super) struct Claims {
    pub info: JwtClaims,
    /// The raw subject value (string contents, or the number's JSON text), to be pseudonymised.
    pub subject: Option<Vec<u8>>,
    /// The raw tenant value, to be pseudonymised.
    pub tenant: Option<Vec<u8>>,
    pub roles: Vec<String>,
    /// Anomalies in the order raised. The time checks' anomalies belong between
    /// `raised[..time_checks_at]` and the rest, which keeps the order of `Identity::flags`
    /// what it was when all checks ran in one pass.
    pub raised: Vec<IdentityAnomaly>,
    pub time_checks_at: usize,
}

fn is_b64url_segment(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
}

/// Decodes a segment that should hold a JSON object. `None` if it is not base64url or does not
/// start like an object (after whitespace), `Some(None)` if it starts like one but is not valid
/// JSON object text.
fn decode_object(segment: &[u8]) -> Option<Option<Map<String, Value>>> {
    let bytes = B64URL.decode(segment).ok()?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    Some(serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
}

/// Classifies a bearer token. The caller has already applied `max_jwt_bytes`.
pub(super) fn classify(token: &[u8]) -> Token {
    let mut segments = token.split(|&b| b == b'.');
    let (Some(header), Some(claims), Some(signature)) =
        (segments.next(), segments.next(), segments.next())
    else {
        return Token::Opaque;
    };
    let rest = segments.count();
    if header.is_empty() || !is_b64url_segment(header) {
        return Token::Opaque;
    }
    match rest {
        // JWS compact: header.claims.signature
        0 => {
            if claims.is_empty() || !is_b64url_segment(claims) || !is_b64url_segment(signature) {
                return Token::Opaque;
            }
            match decode_object(header) {
                None => Token::Opaque,
                Some(None) => Token::Undecodable,
                Some(Some(header)) => match decode_object(claims) {
                    Some(Some(claims)) => Token::Jws(Jws {
                        header,
                        claims,
                        signature_empty: signature.is_empty(),
                    }),
                    _ => Token::Undecodable,
                },
            }
        }
        // JWE compact: header.key.iv.ciphertext.tag
        2 => match decode_object(header) {
            Some(Some(_)) => Token::Encrypted,
            _ => Token::Opaque,
        },
        _ => Token::Opaque,
    }
}

/// Looks a claim up by its exact name first (namespaced claims such as
/// `https://example.com/roles` contain dots), then as a dotted path into nested objects
/// (`realm_access.roles`).
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    if !name.contains('.') {
        return None;
    }
    let mut parts = name.split('.');
    let mut cur = claims.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A claim usable as an identifier: a non-empty string, or a number (by its JSON text).
fn identifier(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.as_bytes().to_vec()),
        Value::Number(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn first_identifier(claims: &Map<String, Value>, names: &[String]) -> Option<Vec<u8>> {
    names
        .iter()
        .filter_map(|n| claim(claims, n))
        .find_map(identifier)
}

/// A NumericDate (seconds since the epoch; fractions allowed), saturated to `i64`.
fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    if v.as_u64().is_some() {
        return Some(i64::MAX);
    }
    // `as` from f64 saturates and maps NaN to 0; JSON has no NaN anyway.
    v.as_f64().map(|f| f.floor() as i64)
}

/// Cuts `s` to at most `max` bytes on a character boundary; reports whether it cut.
fn bounded(s: &str, max: usize, raised: &mut Vec<IdentityAnomaly>) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    raised.push(IdentityAnomaly::JwtClaimTruncated);
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

fn text_field(
    map: &Map<String, Value>,
    name: &str,
    max: usize,
    raised: &mut Vec<IdentityAnomaly>,
) -> Option<String> {
    map.get(name)
        .and_then(Value::as_str)
        .map(|s| bounded(s, max, raised))
}

/// Role names from every configured claim, in claim order, without duplicates. A string claim is
/// a space-separated list (the OAuth `scope` form, which also covers a single role); an array
/// contributes its string elements.
fn roles(
    claims: &Map<String, Value>,
    cfg: &IdentityConfig,
    raised: &mut Vec<IdentityAnomaly>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |role: &str, out: &mut Vec<String>| {
        let role = role.trim();
        if role.is_empty() || out.iter().any(|r| r == role) {
            return;
        }
        if role.len() > cfg.max_role_bytes || out.len() >= cfg.max_roles {
            raised.push(IdentityAnomaly::JwtRolesCapped);
            return;
        }
        out.push(role.to_owned());
    };
    for name in &cfg.jwt_role_claims {
        match claim(claims, name) {
            Some(Value::String(s)) => s.split_ascii_whitespace().for_each(|r| add(r, &mut out)),
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .for_each(|r| add(r, &mut out)),
            _ => {}
        }
    }
    out
}

/// Reads header and claims of a decoded JWS: everything but the judgement of `exp` and `nbf`
/// against packet time, which is [`judge_time`]'s.
pub(super) fn inspect(jws: &Jws, cfg: &IdentityConfig) -> Claims {
    let mut raised = Vec::new();
    let alg = text_field(&jws.header, "alg", cfg.max_claim_bytes, &mut raised);
    let alg_none = alg
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("none"));
    let mut aud = Vec::new();
    match jws.claims.get("aud") {
        Some(Value::String(s)) => aud.push(bounded(s, cfg.max_claim_bytes, &mut raised)),
        Some(Value::Array(items)) => {
            for s in items.iter().filter_map(Value::as_str) {
                if aud.len() >= cfg.max_audiences {
                    raised.push(IdentityAnomaly::JwtClaimTruncated);
                    break;
                }
                aud.push(bounded(s, cfg.max_claim_bytes, &mut raised));
            }
        }
        _ => {}
    }
    let unsigned = jws.signature_empty;
    if alg_none {
        raised.push(IdentityAnomaly::JwtAlgNone);
    }
    if unsigned {
        raised.push(IdentityAnomaly::JwtUnsigned);
    }
    let time_checks_at = raised.len();
    let info = JwtClaims {
        alg,
        typ: text_field(&jws.header, "typ", cfg.max_claim_bytes, &mut raised),
        iss: text_field(&jws.claims, "iss", cfg.max_claim_bytes, &mut raised),
        aud,
        exp: jws.claims.get("exp").and_then(numeric_date),
        iat: jws.claims.get("iat").and_then(numeric_date),
        nbf: jws.claims.get("nbf").and_then(numeric_date),
        alg_none,
        unsigned,
    };
    let roles = roles(&jws.claims, cfg, &mut raised);
    Claims {
        info,
        subject: first_identifier(&jws.claims, &cfg.jwt_subject_claims),
        tenant: first_identifier(&jws.claims, &cfg.jwt_tenant_claims),
        roles,
        raised,
        time_checks_at,
    }
}

/// Whether a token was usable at one packet time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Validity {
    /// `exp` had passed.
    pub expired: bool,
    /// `nbf` had not yet come.
    pub not_yet_valid: bool,
}

/// Judges a token's `exp` and `nbf` against `now`, the packet time of the request, allowing
/// `leeway_secs` of clock skew, and raises the anomalies of what fails. Takes the two times
/// rather than the claims so that a cached token is judged without reading its shared facts.
pub(super) fn judge_time(
    exp: Option<i64>,
    nbf: Option<i64>,
    leeway_secs: u64,
    now: Timestamp,
    raised: &mut Vec<IdentityAnomaly>,
) -> Validity {
    // Packet seconds fit in i64 until year 292e9; saturate rather than trust that.
    let now_secs = i64::try_from(now.secs()).unwrap_or(i64::MAX);
    let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    // RFC 7519 4.1.4: the token must not be accepted on or after `exp`.
    let expired = exp.is_some_and(|e| now_secs >= e.saturating_add(leeway));
    let not_yet_valid = nbf.is_some_and(|n| now_secs < n.saturating_sub(leeway));
    if expired {
        raised.push(IdentityAnomaly::JwtExpired);
    }
    if not_yet_valid {
        raised.push(IdentityAnomaly::JwtNotYetValid);
    }
    Validity {
        expired,
        not_yet_valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        B64URL.encode(s)
    }

    #[test]
    fn classify_table() {
        let h = b64(r#"{"alg":"HS256","typ":"JWT"}"#);
        let c = b64(r#"{"sub":"alice"}"#);
        let cases: Vec<(String, &str)> = vec![
            (format!("{h}.{c}.c2ln"), "jws"),
            (format!("{h}.{c}."), "jws"),
            (
                format!(
                    "{h}.{}.c2ln",
                    base64::engine::general_purpose::URL_SAFE.encode("{\"a\":1}")
                ),
                "jws",
            ),
            ("2YotnFZFEjr1zCsicMWpAA".into(), "opaque"),
            ("abc.def.ghi".into(), "opaque"),
            ("a.b".into(), "opaque"),
            (".x.y".into(), "opaque"),
            (format!("{h}..sig"), "opaque"),
            (format!("{h}.{c}.sig.x"), "opaque"),
            (format!("{h}.!!.sig"), "opaque"),
            (format!("{}.{c}.sig", b64("{\"alg\":")), "undecodable"),
            (format!("{h}.{}.sig", b64("{\"sub\":1")), "undecodable"),
            (format!("{h}.{}.sig", b64("[1,2]")), "undecodable"),
            (format!("{h}.@@@@.sig"), "opaque"),
            (format!("{h}.a.b.c.d"), "encrypted"),
            (format!("{}.a.b.c.d", b64("x")), "opaque"),
        ];
        for (token, want) in cases {
            let got = match classify(token.as_bytes()) {
                Token::Opaque => "opaque",
                Token::Encrypted => "encrypted",
                Token::Undecodable => "undecodable",
                Token::Jws(_) => "jws",
            };
            assert_eq!(got, want, "token {token}");
        }
    }

    fn inspect_claims(
        claims: &str,
        cfg: &IdentityConfig,
        now: u64,
    ) -> (Claims, Validity, Vec<IdentityAnomaly>) {
        let token = format!("{}.{}.sig", b64(r#"{"alg":"RS256"}"#), b64(claims));
        let Token::Jws(jws) = classify(token.as_bytes()) else {
            panic!("not a JWS: {claims}");
        };
        let c = inspect(&jws, cfg);
        let (before, after) = c.raised.split_at(c.time_checks_at);
        let mut raised = before.to_vec();
        let now = Timestamp::from_secs_nanos(now as i64, 0);
        let (exp, nbf) = (c.info.exp, c.info.nbf);
        let validity = judge_time(exp, nbf, cfg.jwt_leeway_secs, now, &mut raised);
        raised.extend_from_slice(after);
        (c, validity, raised)
    }

    #[test]
    fn subject_claims_follow_configuration() {
        let mut cfg = IdentityConfig::default();
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (&["sub"], r#"{"sub":"alice"}"#, Some("alice")),
            (&["sub"], r#"{"sub":12345}"#, Some("12345")),
            (&["sub"], r#"{"sub":""}"#, None),
            (&["sub"], r#"{"sub":null,"client_id":"x"}"#, None),
            (
                &["sub", "client_id"],
                r#"{"sub":null,"client_id":"svc"}"#,
                Some("svc"),
            ),
            (
                &["client_id", "sub"],
                r#"{"sub":"a","client_id":"svc"}"#,
                Some("svc"),
            ),
            (&["email"], r#"{"sub":"a","email":"a@b.c"}"#, Some("a@b.c")),
            (&["user.id"], r#"{"user":{"id":"u7"}}"#, Some("u7")),
            (
                &["https://x.io/uid"],
                r#"{"https://x.io/uid":"n1"}"#,
                Some("n1"),
            ),
            (&["user.id"], r#"{"user":"flat"}"#, None),
            (&["sub"], r#"{"sub":["a"]}"#, None),
        ];
        for (names, claims, want) in cases {
            cfg.jwt_subject_claims = names.iter().map(|s| s.to_string()).collect();
            let (c, _, _) = inspect_claims(claims, &cfg, 0);
            assert_eq!(
                c.subject.as_deref(),
                want.map(str::as_bytes),
                "{names:?} {claims}"
            );
        }
    }

    #[test]
    fn roles_are_merged_deduplicated_and_capped() {
        let mut cfg = IdentityConfig::default();
        let (c, _, raised) = inspect_claims(
            r#"{"roles":["admin","user"],"scope":"read:a write:a  admin","groups":[1,"g"]}"#,
            &cfg,
            0,
        );
        assert_eq!(c.roles, ["admin", "user", "read:a", "write:a", "g"]);
        assert!(raised.is_empty());

        cfg.max_roles = 2;
        cfg.max_role_bytes = 5;
        let (c, _, raised) = inspect_claims(r#"{"roles":["toolongrole","a","b","c"]}"#, &cfg, 0);
        assert_eq!(c.roles, ["a", "b"]);
        assert!(raised.contains(&IdentityAnomaly::JwtRolesCapped));

        cfg.jwt_role_claims = vec!["realm_access.roles".into()];
        let (c, _, _) =
            inspect_claims(r#"{"realm_access":{"roles":["x"]},"roles":["y"]}"#, &cfg, 0);
        assert_eq!(c.roles, ["x"]);
    }

    #[test]
    fn time_claims_against_packet_time() {
        let cfg = IdentityConfig {
            jwt_leeway_secs: 10,
            ..IdentityConfig::default()
        };
        // (claims, now, expired, not_yet_valid)
        let cases = [
            (r#"{"exp":1000}"#, 1009, false, false),
            (r#"{"exp":1000}"#, 1010, true, false),
            (r#"{"exp":1000.9}"#, 1010, true, false),
            (r#"{"exp":"1000"}"#, 5000, false, false),
            (r#"{"exp":-5}"#, 5, true, false),
            (r#"{"exp":18446744073709551615}"#, 5000, false, false),
            (r#"{"nbf":2000}"#, 1990, false, false),
            (r#"{"nbf":2000}"#, 1989, false, true),
            (r#"{"exp":1e300,"nbf":-1e300}"#, 7, false, false),
        ];
        for (claims, now, expired, nyv) in cases {
            let (_, v, raised) = inspect_claims(claims, &cfg, now);
            assert_eq!(v.expired, expired, "{claims} at {now}");
            assert_eq!(v.not_yet_valid, nyv, "{claims} at {now}");
            assert_eq!(raised.contains(&IdentityAnomaly::JwtExpired), expired);
        }
    }

    #[test]
    fn long_claims_are_cut_on_char_boundaries() {
        let cfg = IdentityConfig {
            max_claim_bytes: 4,
            max_audiences: 2,
            ..IdentityConfig::default()
        };
        let (c, _, raised) = inspect_claims(r#"{"iss":"ééé","aud":["a","bbbbbbb","c"]}"#, &cfg, 0);
        assert_eq!(c.info.iss.as_deref(), Some("éé"));
        assert_eq!(c.info.aud, ["a", "bbbb"]);
        assert!(raised.contains(&IdentityAnomaly::JwtClaimTruncated));
    }
}

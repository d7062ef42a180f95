//! What a credential yields regardless of when it is seen: the values of the credential cache,
//! laid out so that reading one back touches little memory.
//!
//! Between two requests with the same token the rest of the pipeline evicts the token's entry
//! from the CPU caches, so a hit costs about one cache miss per separately allocated piece it
//! reads. A bearer token's facts (JWT header and claim texts, validity times, roles,
//! pseudonyms) are therefore packed into one byte buffer, written by [`BearerFacts::jwt`] or
//! [`BearerFacts::opaque`] and read back in the same order by [`BearerFacts::apply`], instead
//! of being cloned out of a dozen small allocations.
//!
//! Invariants:
//! - Entries hold pseudonyms and the capped JWT metadata an [`Identity`] shows, never a raw
//!   credential.
//! - Unpacking gives exactly what was packed; only the time checks are redone, at the packet
//!   time of each request, and their anomalies take the place they had in a single pass.
//! - The buffer never leaves the process, so its integers are in native width and order.

use super::{jwt, AuthScheme, Identity, IdentityAnomaly, JwtInfo, Pseudonym};
use crate::common::Timestamp;

/// The credential cache's value.
pub(super) enum Derived {
    /// The pseudonym of a Basic user, API key or session cookie; `None` for Basic credentials
    /// that name no user.
    Pseudonym(Option<Pseudonym>),
    /// A bearer token's facts.
    Bearer(BearerFacts),
}

/// A bearer token's time-independent facts.
pub(super) struct BearerFacts {
    /// Anomalies in the order raised; the time checks' ones go at `time_checks_at`. Empty, and
    /// so without an allocation to read, for an unremarkable token.
    raised: Vec<IdentityAnomaly>,
    time_checks_at: usize,
    /// Scheme, subject and JWT facts, in the order [`Unpacked::read`] reads them.
    packed: Box<[u8]>,
}

const OPAQUE: u8 = 0;
const JWT: u8 = 1;

/// Appends fields to a packed buffer.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn usize(&mut self, v: usize) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }

    fn str(&mut self, s: &str) {
        self.usize(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        self.u8(u8::from(s.is_some()));
        if let Some(s) = s {
            self.str(s);
        }
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        self.u8(u8::from(v.is_some()));
        if let Some(v) = v {
            self.0.extend_from_slice(&v.to_ne_bytes());
        }
    }

    fn strs(&mut self, items: &[String]) {
        self.usize(items.len());
        for s in items {
            self.str(s);
        }
    }

    fn finish(self) -> Box<[u8]> {
        self.0.into_boxed_slice()
    }
}

/// Reads fields back from a packed buffer; `None` if it ends early or holds something else
/// (which cannot happen for a buffer from [`Writer`] read in the same order).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[b]| b)
    }

    fn usize(&mut self) -> Option<usize> {
        self.bytes().map(usize::from_ne_bytes)
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = self.usize()?;
        let (s, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        std::str::from_utf8(s).ok()
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.str().map(Some),
        }
    }

    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.bytes().map(|b| Some(i64::from_ne_bytes(b))),
        }
    }

    fn strs(&mut self) -> Option<Vec<String>> {
        let n = self.usize()?;
        // Each string takes at least its length word: a bad count cannot make a huge Vec.
        let mut out = Vec::with_capacity(n.min(self.0.len() / std::mem::size_of::<usize>()));
        for _ in 0..n {
            out.push(self.str()?.to_owned());
        }
        Some(out)
    }
}

/// A packed buffer read back into what an [`Identity`] holds.
struct Unpacked {
    scheme: AuthScheme,
    subject: Pseudonym,
    /// `JwtInfo` (with `expired` and `not_yet_valid` false), roles and tenant.
    jwt: Option<(JwtInfo, Vec<String>, Option<Pseudonym>)>,
}

impl Unpacked {
    fn read(packed: &[u8]) -> Option<Unpacked> {
        let mut r = Reader(packed);
        let kind = r.u8()?;
        let subject = Pseudonym::from_text(r.str()?);
        if kind == OPAQUE {
            return Some(Unpacked {
                scheme: AuthScheme::BearerOpaque,
                subject,
                jwt: None,
            });
        }
        let flags = r.u8()?;
        let exp = r.opt_i64()?;
        let iat = r.opt_i64()?;
        let nbf = r.opt_i64()?;
        let alg = r.opt_str()?.map(str::to_owned);
        let typ = r.opt_str()?.map(str::to_owned);
        let iss = r.opt_str()?.map(str::to_owned);
        let tenant = r.opt_str()?.map(Pseudonym::from_text);
        let aud = r.strs()?;
        let roles = r.strs()?;
        let info = JwtInfo {
            alg,
            typ,
            iss,
            aud,
            exp,
            iat,
            nbf,
            alg_none: flags & 1 != 0,
            unsigned: flags & 2 != 0,
            expired: false,
            not_yet_valid: false,
        };
        Some(Unpacked {
            scheme: AuthScheme::BearerJwt,
            subject,
            jwt: Some((info, roles, tenant)),
        })
    }
}

impl BearerFacts {
    /// A token that is not a readable JWT: it names the caller itself.
    pub(super) fn opaque(subject: &Pseudonym, anomaly: Option<IdentityAnomaly>) -> BearerFacts {
        let mut w = Writer::default();
        w.u8(OPAQUE);
        w.str(subject.as_str());
        let raised: Vec<IdentityAnomaly> = anomaly.into_iter().collect();
        BearerFacts {
            time_checks_at: raised.len(),
            raised,
            packed: w.finish(),
        }
    }

    /// A decoded JWT. `claims.raised` must already hold every anomaly but the time checks'.
    pub(super) fn jwt(
        subject: &Pseudonym,
        tenant: Option<&Pseudonym>,
        claims: jwt::Claims,
    ) -> BearerFacts {
        let info = &claims.info;
        let mut w = Writer::default();
        w.u8(JWT);
        w.str(subject.as_str());
        w.u8(u8::from(info.alg_none) | (u8::from(info.unsigned) << 1));
        w.opt_i64(info.exp);
        w.opt_i64(info.iat);
        w.opt_i64(info.nbf);
        w.opt_str(info.alg.as_deref());
        w.opt_str(info.typ.as_deref());
        w.opt_str(info.iss.as_deref());
        w.opt_str(tenant.map(Pseudonym::as_str));
        w.strs(&info.aud);
        w.strs(&claims.roles);
        BearerFacts {
            raised: claims.raised,
            time_checks_at: claims.time_checks_at,
            packed: w.finish(),
        }
    }

    /// Fills `jwt`, `roles` and `tenant` of `identity`, judging the token's validity period at
    /// `now`, raises its anomalies in single-pass order, and returns its scheme and subject.
    /// `None`, changing nothing, if the buffer does not read back (which cannot happen).
    pub(super) fn apply(
        &self,
        leeway_secs: u64,
        now: Timestamp,
        identity: &mut Identity,
        raised: &mut Vec<IdentityAnomaly>,
    ) -> Option<(AuthScheme, Pseudonym)> {
        let u = Unpacked::read(&self.packed)?;
        let at = self.time_checks_at.min(self.raised.len());
        let (before, after) = self.raised.split_at(at);
        raised.extend_from_slice(before);
        if let Some((mut info, roles, tenant)) = u.jwt {
            jwt::judge_time(&mut info, leeway_secs, now, raised);
            identity.jwt = Some(info);
            identity.roles = roles;
            identity.tenant = tenant;
        }
        raised.extend_from_slice(after);
        Some((u.scheme, u.subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field kind reads back as written, and a cut buffer reads as `None`, not as a
    /// shorter value.
    #[test]
    fn packed_fields_read_back_and_truncation_is_detected() {
        let mut w = Writer::default();
        w.u8(7);
        w.str("héllo");
        w.opt_str(None);
        w.opt_str(Some(""));
        w.opt_i64(Some(i64::MIN));
        w.opt_i64(None);
        w.strs(&["a".into(), "bc".into()]);
        let packed = w.finish();
        let read = |b: &[u8]| -> Option<_> {
            let mut r = Reader(b);
            let v = (
                r.u8()?,
                r.str()?.to_owned(),
                r.opt_str()?.map(str::to_owned),
                r.opt_str()?.map(str::to_owned),
                r.opt_i64()?,
                r.opt_i64()?,
                r.strs()?,
            );
            r.0.is_empty().then_some(v)
        };
        assert_eq!(
            read(&packed),
            Some((
                7,
                "héllo".into(),
                None,
                Some(String::new()),
                Some(i64::MIN),
                None,
                vec!["a".into(), "bc".into()]
            ))
        );
        for cut in 0..packed.len() {
            assert_eq!(read(&packed[..cut]), None, "cut at {cut}");
        }
    }
}

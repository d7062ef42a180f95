//! What a credential yields regardless of when it is seen: the values of the credential cache,
//! laid out so that reading one back touches little memory.
//!
//! Between two requests with the same token the rest of the pipeline evicts the token's entry
//! from the CPU caches, so a hit costs about one cache miss per separately allocated piece it
//! reads. A bearer token's strings (JWT header and claim texts, roles, pseudonyms) are therefore
//! kept back to back in one buffer ([`Texts`]) and unpacked into the [`Identity`]'s own strings
//! on each hit, instead of being cloned out of a dozen small allocations.
//!
//! Invariants:
//! - Entries hold pseudonyms and the capped JWT metadata an [`Identity`] shows, never a raw
//!   credential.
//! - Unpacking gives exactly what was packed; only the time checks are redone, at the packet
//!   time of each request, and their anomalies take the place they had in a single pass.

use super::{jwt, AuthScheme, Identity, IdentityAnomaly, JwtInfo, Pseudonym};
use crate::common::Timestamp;
use std::ops::Range;

/// The credential cache's value.
pub(super) enum Derived {
    /// The pseudonym of a Basic user, API key or session cookie; `None` for Basic credentials
    /// that name no user.
    Pseudonym(Option<Pseudonym>),
    /// A bearer token's facts, boxed so that the cache's buckets stay small.
    Bearer(Box<BearerFacts>),
}

/// Strings back to back in one buffer, addressed by the order they were pushed in.
#[derive(Default)]
struct Texts {
    text: String,
    /// Where each string ends in `text`; each starts where the one before it ends.
    ends: Vec<usize>,
}

impl Texts {
    fn push(&mut self, s: &str) -> usize {
        self.text.push_str(s);
        self.ends.push(self.text.len());
        self.ends.len() - 1
    }

    fn push_all<'a>(&mut self, items: impl IntoIterator<Item = &'a String>) -> Range<usize> {
        let start = self.ends.len();
        for s in items {
            self.push(s);
        }
        start..self.ends.len()
    }

    fn get(&self, i: usize) -> &str {
        let start = match i.checked_sub(1) {
            Some(before) => self.ends.get(before).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.text.get(start..end).unwrap_or_default()
    }

    fn owned(&self, i: usize) -> String {
        self.get(i).to_owned()
    }

    fn owned_all(&self, range: Range<usize>) -> Vec<String> {
        range.map(|i| self.owned(i)).collect()
    }
}

/// A bearer token's time-independent facts.
pub(super) struct BearerFacts {
    scheme: AuthScheme,
    texts: Texts,
    /// Index of the subject pseudonym in `texts`.
    subject: usize,
    jwt: Option<JwtFacts>,
    /// Anomalies in the order raised; the time checks' ones go at `time_checks_at`. Empty, and
    /// so without an allocation to read, for an unremarkable token.
    raised: Vec<IdentityAnomaly>,
    time_checks_at: usize,
}

/// A JWT's [`JwtInfo`], roles and tenant, strings as indexes into [`BearerFacts::texts`].
struct JwtFacts {
    alg: Option<usize>,
    typ: Option<usize>,
    iss: Option<usize>,
    aud: Range<usize>,
    roles: Range<usize>,
    tenant: Option<usize>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    alg_none: bool,
    unsigned: bool,
}

impl BearerFacts {
    /// A token that is not a readable JWT: it names the caller itself.
    pub(super) fn opaque(subject: &Pseudonym, anomaly: Option<IdentityAnomaly>) -> BearerFacts {
        let mut texts = Texts::default();
        let subject = texts.push(subject.as_str());
        let raised: Vec<IdentityAnomaly> = anomaly.into_iter().collect();
        BearerFacts {
            scheme: AuthScheme::BearerOpaque,
            texts,
            subject,
            jwt: None,
            time_checks_at: raised.len(),
            raised,
        }
    }

    /// A decoded JWT. `claims.raised` must already hold every anomaly but the time checks'.
    pub(super) fn jwt(
        subject: &Pseudonym,
        tenant: Option<&Pseudonym>,
        claims: jwt::Claims,
    ) -> BearerFacts {
        let info = &claims.info;
        let mut texts = Texts::default();
        let subject = texts.push(subject.as_str());
        let tenant = tenant.map(|t| texts.push(t.as_str()));
        let alg = info.alg.as_deref().map(|s| texts.push(s));
        let typ = info.typ.as_deref().map(|s| texts.push(s));
        let iss = info.iss.as_deref().map(|s| texts.push(s));
        let aud = texts.push_all(&info.aud);
        let roles = texts.push_all(&claims.roles);
        // Built by appending: give back what doubling reserved, as entries live long.
        texts.text.shrink_to_fit();
        texts.ends.shrink_to_fit();
        BearerFacts {
            scheme: AuthScheme::BearerJwt,
            texts,
            subject,
            jwt: Some(JwtFacts {
                alg,
                typ,
                iss,
                aud,
                roles,
                tenant,
                exp: info.exp,
                iat: info.iat,
                nbf: info.nbf,
                alg_none: info.alg_none,
                unsigned: info.unsigned,
            }),
            raised: claims.raised,
            time_checks_at: claims.time_checks_at,
        }
    }

    /// Fills `jwt`, `roles` and `tenant` of `identity`, judging the token's validity period at
    /// `now`, raises its anomalies in single-pass order, and returns its scheme and subject.
    pub(super) fn apply(
        &self,
        leeway_secs: u64,
        now: Timestamp,
        identity: &mut Identity,
        raised: &mut Vec<IdentityAnomaly>,
    ) -> (AuthScheme, Pseudonym) {
        let at = self.time_checks_at.min(self.raised.len());
        let (before, after) = self.raised.split_at(at);
        raised.extend_from_slice(before);
        if let Some(j) = &self.jwt {
            let t = &self.texts;
            let mut info = JwtInfo {
                alg: j.alg.map(|i| t.owned(i)),
                typ: j.typ.map(|i| t.owned(i)),
                iss: j.iss.map(|i| t.owned(i)),
                aud: t.owned_all(j.aud.clone()),
                exp: j.exp,
                iat: j.iat,
                nbf: j.nbf,
                alg_none: j.alg_none,
                unsigned: j.unsigned,
                expired: false,
                not_yet_valid: false,
            };
            jwt::judge_time(&mut info, leeway_secs, now, raised);
            identity.jwt = Some(info);
            identity.roles = t.owned_all(j.roles.clone());
            identity.tenant = j.tenant.map(|i| Pseudonym::from_text(t.get(i)));
        }
        raised.extend_from_slice(after);
        (
            self.scheme,
            Pseudonym::from_text(self.texts.get(self.subject)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_give_back_what_was_pushed() {
        let strings = ["", "a", "", "héllo", "b c", ""];
        let mut t = Texts::default();
        let ids: Vec<usize> = strings.iter().map(|s| t.push(s)).collect();
        for (id, s) in ids.iter().zip(strings) {
            assert_eq!(t.get(*id), s);
        }
        let owned: Vec<String> = ["x", "yy"].map(String::from).into();
        let range = t.push_all(&owned);
        assert_eq!(t.owned_all(range), owned);
        assert_eq!(t.get(99), "");
    }
}

//! What a credential yields regardless of when it is seen: the values of the credential cache,
//! held so that reading one back for a request copies nothing that allocates.
//!
//! A busy API sees each token on many requests. What its JWT says (header and claim texts,
//! audiences, roles) is decoded once into immutable values behind reference counts, and every
//! request's [`Identity`] shares them instead of copying them; pseudonyms are inline and cheap
//! to copy. Only the time checks are redone, at the packet time of each request, from copies of
//! `exp` and `nbf` kept in the entry itself, so judging them does not touch the shared values.
//!
//! Invariants:
//! - Entries hold pseudonyms and the capped JWT metadata an [`Identity`] shows, never a raw
//!   credential.
//! - [`BearerFacts::apply`] is the one way from facts to an identity, for a fresh derivation
//!   and a cached one alike, so both give the same identity; the time checks' anomalies take
//!   the place they had in a single pass.
//! - Shared values are never changed once built.

use super::{jwt, AuthScheme, Identity, IdentityAnomaly, JwtClaims, JwtInfo, Pseudonym, Roles};
use crate::common::Timestamp;
use std::sync::Arc;

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
    raised: Box<[IdentityAnomaly]>,
    time_checks_at: usize,
    /// The caller: the JWT subject (`u:`), or the token itself (`t:`).
    subject: Pseudonym,
    /// `None` for a token that is not a readable JWT.
    jwt: Option<JwtFacts>,
}

/// What a decoded JWT contributes to every identity it appears in.
struct JwtFacts {
    claims: Arc<JwtClaims>,
    /// `claims.exp` and `claims.nbf`, copied so that the per-request time checks read only the
    /// cache entry.
    exp: Option<i64>,
    nbf: Option<i64>,
    roles: Roles,
    tenant: Option<Pseudonym>,
}

impl BearerFacts {
    /// A token that is not a readable JWT: it names the caller itself.
    pub(super) fn opaque(subject: Pseudonym, anomaly: Option<IdentityAnomaly>) -> BearerFacts {
        let raised: Box<[IdentityAnomaly]> = anomaly.into_iter().collect();
        BearerFacts {
            time_checks_at: raised.len(),
            raised,
            subject,
            jwt: None,
        }
    }

    /// A decoded JWT. `claims.raised` must already hold every anomaly but the time checks'.
    pub(super) fn jwt(
        subject: Pseudonym,
        tenant: Option<Pseudonym>,
        claims: jwt::Claims,
    ) -> BearerFacts {
        let info = claims.info;
        BearerFacts {
            raised: claims.raised.into_boxed_slice(),
            time_checks_at: claims.time_checks_at,
            subject,
            jwt: Some(JwtFacts {
                exp: info.exp,
                nbf: info.nbf,
                claims: Arc::new(info),
                roles: claims.roles.into(),
                tenant,
            }),
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
        let scheme = match &self.jwt {
            None => AuthScheme::BearerOpaque,
            Some(facts) => {
                let v = jwt::judge_time(facts.exp, facts.nbf, leeway_secs, now, raised);
                identity.jwt = Some(JwtInfo {
                    claims: Arc::clone(&facts.claims),
                    expired: v.expired,
                    not_yet_valid: v.not_yet_valid,
                });
                identity.roles = facts.roles.clone();
                identity.tenant = facts.tenant.clone();
                AuthScheme::BearerJwt
            }
        };
        raised.extend_from_slice(after);
        (scheme, self.subject.clone())
    }
}

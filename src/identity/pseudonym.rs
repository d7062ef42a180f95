//! Keyed pseudonyms: stable, non-reversible names for credentials.
//!
//! A pseudonym is `kind ":" hex(HMAC-SHA256(key, kind || 0x00 || raw)[..8])`. The same raw value
//! under the same deployment secret always yields the same pseudonym, so callers can be
//! correlated across transactions and restarts; without the secret, a pseudonym cannot be
//! inverted or even confirmed by guessing (unlike a plain hash of a short user name).
//!
//! Invariants:
//! - The key never leaves [`Pseudonymizer`]: it has no accessor and its `Debug` prints no key
//!   material.
//! - The `kind` is inside the MAC input and separated from `raw` by a zero byte, so the same raw
//!   bytes under two kinds (a user name that is also a cookie value) give unrelated pseudonyms.
//! - 64 bits of MAC are kept: collisions stay negligible below about 2^32 distinct callers,
//!   which is far beyond what one sensor sees.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// SHA-256's block size: HMAC zero-pads any key up to it, so a padded block is the same key.
const BLOCK_BYTES: usize = 64;

/// Bytes of MAC kept in a pseudonym (16 hex digits).
const PSEUDONYM_MAC_BYTES: usize = 8;

/// Domain-separation label for deriving the MAC key from the deployment secret, so the same
/// secret reused elsewhere (by mistake) does not produce the same MAC values there.
const KEY_DERIVATION_LABEL: &[u8] = b"apitap identity pseudonym key v1";

/// HMAC-SHA256 with a key of at most one block. Keys that short need no pre-hashing, and
/// padding them ourselves lets us use the infallible `KeyInit::new` instead of a
/// `new_from_slice` whose error case cannot happen but would still need handling.
pub(super) fn hmac_short_key(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK_BYTES];
    for (dst, src) in block.iter_mut().zip(key) {
        *dst = *src;
    }
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Turns raw credentials into keyed pseudonyms. Holds the only copy of the derived key.
#[derive(Clone)]
pub struct Pseudonymizer {
    key: [u8; 32],
}

impl Pseudonymizer {
    /// Derives the MAC key from a per-deployment secret of any length
    /// (HKDF-Extract with a fixed label as salt: `HMAC(label, secret)`).
    pub fn new(secret: &[u8]) -> Self {
        Pseudonymizer {
            key: hmac_short_key(KEY_DERIVATION_LABEL, &[secret]),
        }
    }

    /// The pseudonym of `raw` in namespace `kind`. `kind` should be a short constant (it is
    /// printed as the pseudonym's prefix), e.g. `"u"` for users.
    pub fn pseudonym(&self, kind: &str, raw: &[u8]) -> Pseudonym {
        let mac = hmac_short_key(&self.key, &[kind.as_bytes(), &[0], raw]);
        let mut text = String::with_capacity(kind.len() + 1 + 2 * PSEUDONYM_MAC_BYTES);
        text.push_str(kind);
        text.push(':');
        for b in mac.iter().take(PSEUDONYM_MAC_BYTES) {
            text.push(HEX[usize::from(b >> 4)] as char);
            text.push(HEX[usize::from(b & 0x0f)] as char);
        }
        Pseudonym(text)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for Pseudonymizer {
    /// Prints no key material, not even a fingerprint: logs must not help confirm a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymizer").finish_non_exhaustive()
    }
}

/// A keyed pseudonym such as `u:3f9a0c1d2e4b5a69`. Safe to log, store and export.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(String);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rebuilds a pseudonym from its text, as the credential cache keeps it. Only text that
    /// came from [`Pseudonym::as_str`] may be given: this is not a way to name anyone.
    pub(super) fn from_text(text: &str) -> Pseudonym {
        Pseudonym(text.to_owned())
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 pins that padding the key ourselves is plain HMAC-SHA256.
    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_short_key(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn pseudonyms_are_stable_and_shaped() {
        let p = Pseudonymizer::new(b"deployment secret one");
        let a = p.pseudonym("u", b"alice");
        assert_eq!(a, p.pseudonym("u", b"alice"));
        assert_eq!(
            a,
            Pseudonymizer::new(b"deployment secret one").pseudonym("u", b"alice")
        );
        let s = a.to_string();
        assert_eq!(s.len(), 2 + 16);
        assert!(s.starts_with("u:"));
        assert!(s[2..].bytes().all(|b| HEX.contains(&b)));
        assert_eq!(format!("{a:?}"), s);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{s}\""));
    }

    #[test]
    fn pseudonyms_depend_on_key_kind_and_value() {
        let p1 = Pseudonymizer::new(b"deployment secret one");
        let p2 = Pseudonymizer::new(b"deployment secret two");
        let base = p1.pseudonym("u", b"alice");
        assert_ne!(base, p2.pseudonym("u", b"alice"));
        assert_ne!(base, p1.pseudonym("u", b"alicf"));
        // Same MAC input bytes if the separator were missing: "u"+"alice" vs "ua"+"lice".
        assert_ne!(
            base.as_str()[2..],
            p1.pseudonym("ua", b"lice").as_str()[3..]
        );
        assert_ne!(
            base.as_str()[2..],
            p1.pseudonym("k", b"alice").as_str()[2..]
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = Pseudonymizer::new(b"s3cr3t-deployment-key");
        let dbg = format!("{p:?}");
        assert_eq!(dbg, "Pseudonymizer { .. }");
        let key_hex: String = p.key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&key_hex));
    }
}

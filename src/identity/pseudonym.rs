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

use crate::common::InlineText;
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

/// Turns raw credentials into keyed pseudonyms. Holds the only copy of the derived key, as an
/// HMAC state that has already absorbed it.
#[derive(Clone)]
pub struct Pseudonymizer {
    /// HMAC-SHA256 keyed with the derived key and fed nothing yet. Cloning it for each
    /// pseudonym saves hashing the two padded key blocks again, about half the cost of a
    /// short pseudonym; the MAC is the same.
    keyed: HmacSha256,
}

impl Pseudonymizer {
    /// Derives the MAC key from a per-deployment secret of any length
    /// (HKDF-Extract with a fixed label as salt: `HMAC(label, secret)`).
    pub fn new(secret: &[u8]) -> Self {
        let key = hmac_short_key(KEY_DERIVATION_LABEL, &[secret]);
        let mut block = [0u8; BLOCK_BYTES];
        for (dst, src) in block.iter_mut().zip(key) {
            *dst = src;
        }
        Pseudonymizer {
            keyed: <HmacSha256 as KeyInit>::new(&block.into()),
        }
    }

    /// The pseudonym of `raw` in namespace `kind`. `kind` should be a short constant (it is
    /// printed as the pseudonym's prefix), e.g. `"u"` for users.
    pub fn pseudonym(&self, kind: &str, raw: &[u8]) -> Pseudonym {
        let mut mac = self.keyed.clone();
        for part in [kind.as_bytes(), &[0], raw] {
            mac.update(part);
        }
        let mac: [u8; 32] = mac.finalize().into_bytes().into();
        let mut text = Text::default();
        text.push(kind.as_bytes());
        text.push(b":");
        for b in mac.iter().take(PSEUDONYM_MAC_BYTES) {
            text.push(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]]);
        }
        Pseudonym::from_text(text.as_str())
    }
}

/// A pseudonym's text being assembled on the stack.
struct Text {
    buf: [u8; 64],
    len: usize,
    /// Bytes that did not fit (only with a kind of over 40 bytes).
    spill: Vec<u8>,
}

impl Default for Text {
    fn default() -> Self {
        Text {
            buf: [0; 64],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Text {
    fn push(&mut self, bytes: &[u8]) {
        if self.spill.is_empty() {
            if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
                return;
            }
            self.spill
                .extend_from_slice(self.buf.get(..self.len).unwrap_or_default());
        }
        self.spill.extend_from_slice(bytes);
    }

    fn as_str(&self) -> &str {
        let bytes = if self.spill.is_empty() {
            self.buf.get(..self.len).unwrap_or_default()
        } else {
            &self.spill
        };
        // Only `kind` (a `&str`), `:` and hex digits were pushed, whole.
        std::str::from_utf8(bytes).unwrap_or_default()
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
///
/// Identities are built for every request and their pseudonyms copied into detector state, so
/// the text is held inline ([`InlineText`]): making, cloning and dropping one does not
/// allocate. Equality, hashing and order are those of the text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(InlineText);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// A pseudonym holding `text`. Only text made by [`Pseudonymizer::pseudonym`] (or, in tests,
    /// taken from [`Pseudonym::as_str`]) may be given: this is not a way to name anyone.
    pub(super) fn from_text(text: &str) -> Pseudonym {
        Pseudonym(InlineText::new(text))
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Pseudonym {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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

    /// The pre-keyed MAC gives the pseudonym the plain HMAC of the derived key gives, for
    /// kinds that fit inline and kinds long enough to spill to the heap.
    #[test]
    fn pseudonyms_equal_plain_hmac_whatever_their_length() {
        let secret = b"deployment secret one";
        let p = Pseudonymizer::new(secret);
        let key = hmac_short_key(KEY_DERIVATION_LABEL, &[secret]);
        let kinds = [
            "u",
            "tenant",
            "a-kind-of-exactly-40-bytes-............!",
            &"k".repeat(70),
        ];
        for kind in kinds {
            for raw in [&b""[..], b"alice", &[0xff; 300]] {
                let mac = hmac_short_key(&key, &[kind.as_bytes(), &[0], raw]);
                let hex: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
                let want = format!("{kind}:{hex}");
                let got = p.pseudonym(kind, raw);
                assert_eq!(got.as_str(), want);
                assert_eq!(got, Pseudonym::from_text(&want));
                assert_eq!(got.to_string(), want);
            }
        }
        let (short, long) = (p.pseudonym("u", b"x"), p.pseudonym(&"k".repeat(70), b"x"));
        assert!(short.0.is_inline());
        assert!(!long.0.is_inline());
        assert_eq!(short.cmp(&long), short.as_str().cmp(long.as_str()));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let p = Pseudonymizer::new(b"s3cr3t-deployment-key");
        let dbg = format!("{p:?}");
        assert_eq!(dbg, "Pseudonymizer { .. }");
        let key = hmac_short_key(KEY_DERIVATION_LABEL, &[b"s3cr3t-deployment-key"]);
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!dbg.contains(&key_hex));
    }
}

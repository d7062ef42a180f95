//! Sensitive-data classification: which kinds of sensitive data (card numbers, IBANs, SSNs,
//! emails, phone numbers, credentials and tokens, password fields) occur in a request or
//! response, and how often, so the inventory can say "`POST /payments` carries card numbers".
//!
//! Invariants:
//! - Values are never kept, returned or logged: the output is counts per [`SensitiveKind`]
//!   and, for JSON, the set of kinds per key path.
//! - Scans are linear in the input: a few passes (an Aho-Corasick automaton over fixed
//!   prefixes, byte loops for key words, digit runs and IBANs, memchr for `@`), each
//!   candidate examined within a bounded window. No regex, no backtracking. The key-word and
//!   digit-run loops skip to their candidates testing 16 positions at once: response bodies
//!   are scanned whole on every call.
//! - [`classify`] allocates nothing; the caller bounds the input (bodies are already capped).
//!   [`classify_json_fields`] allocates key paths, bounded by [`JsonScanConfig`].
//! - Recognisers are conservative, because ordinary API data (ids, prices, timestamps, UUIDs)
//!   must not light up: numbers need a checksum (Luhn, mod-97) or an unambiguous shape, bare
//!   digit strings are never phone numbers or SSNs, and tokens need their vendor prefix and
//!   exact length.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// A kind of sensitive data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SensitiveKind {
    /// A payment card number: 13 to 19 digits, Luhn-valid, with a known issuer prefix.
    CardNumber,
    /// An IBAN: known country code, that country's length, mod-97 check.
    Iban,
    /// A US social security number written `ddd-dd-dddd`, outside the never-issued ranges.
    UsSsn,
    /// An email address.
    Email,
    /// A phone number: `+` and 8 to 15 digits, or a separated North American number.
    Phone,
    /// A JSON Web Token whose header decodes to a JSON object with `alg`.
    Jwt,
    /// A PEM private key block.
    PemPrivateKey,
    /// An AWS access key id (`AKIA` or `ASIA` and 16 characters).
    AwsAccessKeyId,
    /// An AWS secret access key next to a key named like one.
    AwsSecretKey,
    /// A GitHub token (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// A live Stripe key (`sk_live_`, `rk_live_`, `pk_live_`).
    StripeKey,
    /// A Slack token (`xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, `xoxs-`).
    SlackToken,
    /// A Google API key (`AIza` and 35 characters).
    GoogleApiKey,
    /// A JSON key or form field named like a password or secret, with a value.
    PasswordField,
}

impl SensitiveKind {
    pub const ALL: [SensitiveKind; 14] = [
        SensitiveKind::CardNumber,
        SensitiveKind::Iban,
        SensitiveKind::UsSsn,
        SensitiveKind::Email,
        SensitiveKind::Phone,
        SensitiveKind::Jwt,
        SensitiveKind::PemPrivateKey,
        SensitiveKind::AwsAccessKeyId,
        SensitiveKind::AwsSecretKey,
        SensitiveKind::GithubToken,
        SensitiveKind::StripeKey,
        SensitiveKind::SlackToken,
        SensitiveKind::GoogleApiKey,
        SensitiveKind::PasswordField,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SensitiveKind::CardNumber => "card_number",
            SensitiveKind::Iban => "iban",
            SensitiveKind::UsSsn => "us_ssn",
            SensitiveKind::Email => "email",
            SensitiveKind::Phone => "phone",
            SensitiveKind::Jwt => "jwt",
            SensitiveKind::PemPrivateKey => "pem_private_key",
            SensitiveKind::AwsAccessKeyId => "aws_access_key_id",
            SensitiveKind::AwsSecretKey => "aws_secret_key",
            SensitiveKind::GithubToken => "github_token",
            SensitiveKind::StripeKey => "stripe_key",
            SensitiveKind::SlackToken => "slack_token",
            SensitiveKind::GoogleApiKey => "google_api_key",
            SensitiveKind::PasswordField => "password_field",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Occurrences per kind. Serializes as `{name: count}` with zero counts left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SensitiveCounts {
    counts: [u32; SensitiveKind::ALL.len()],
}

impl SensitiveCounts {
    pub fn get(&self, kind: SensitiveKind) -> u32 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    pub fn add(&mut self, kind: SensitiveKind) {
        if let Some(c) = self.counts.get_mut(kind.index()) {
            *c = c.saturating_add(1);
        }
    }

    pub fn merge(&mut self, other: &SensitiveCounts) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// Kinds seen at least once, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (SensitiveKind, u32)> + '_ {
        SensitiveKind::ALL
            .iter()
            .map(|&k| (k, self.get(k)))
            .filter(|&(_, c)| c > 0)
    }

    pub fn kinds(&self) -> KindSet {
        let mut s = KindSet::default();
        for (k, _) in self.iter() {
            s.insert(k);
        }
        s
    }
}

impl Serialize for SensitiveCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, c) in self.iter() {
            m.serialize_entry(k.name(), &c)?;
        }
        m.end()
    }
}

/// A set of kinds. Serializes as a list of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u32);

impl KindSet {
    pub fn insert(&mut self, k: SensitiveKind) {
        self.0 |= 1 << k.index();
    }

    pub fn contains(self, k: SensitiveKind) -> bool {
        self.0 & (1 << k.index()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, o: KindSet) -> KindSet {
        KindSet(self.0 | o.0)
    }

    pub fn iter(self) -> impl Iterator<Item = SensitiveKind> {
        SensitiveKind::ALL
            .into_iter()
            .filter(move |&k| self.contains(k))
    }
}

impl Serialize for KindSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(SensitiveKind::name))
    }
}

// ---------------------------------------------------------------------------------------------
// The byte scan
// ---------------------------------------------------------------------------------------------

/// Counts the sensitive data in `bytes` (a body, query string or header value) into `out`.
pub fn classify(bytes: &[u8], out: &mut SensitiveCounts) {
    scan_prefixed_tokens(bytes, true, out);
    scan_keys(bytes, out);
    scan_numbers(bytes, out);
    scan_ibans(bytes, out);
    scan_emails(bytes, out);
}

/// [`classify`] restricted to the scans that can find a kind in `wanted`, for callers that
/// judge a few kinds on every body or URL value. Each kind comes from exactly one scan (vendor
/// prefixes; keys; digit runs; IBANs; e-mail addresses), so the wanted kinds count exactly as
/// [`classify`] counts them; a scan none of whose kinds is wanted is skipped, and JWT
/// candidates are not decoded unless JWTs are wanted (login responses are full of them).
/// Kinds outside `wanted` may still be reported by the scans that run.
pub fn classify_wanted(bytes: &[u8], wanted: KindSet, out: &mut SensitiveCounts) {
    use SensitiveKind::*;
    let any = |kinds: &[SensitiveKind]| kinds.iter().any(|k| wanted.contains(*k));
    if any(&[
        Jwt,
        PemPrivateKey,
        AwsAccessKeyId,
        GithubToken,
        StripeKey,
        SlackToken,
        GoogleApiKey,
    ]) {
        scan_prefixed_tokens(bytes, wanted.contains(Jwt), out);
    }
    if any(&[PasswordField, AwsSecretKey]) {
        scan_keys(bytes, out);
    }
    if any(&[CardNumber, UsSsn, Phone]) {
        scan_numbers(bytes, out);
    }
    if wanted.contains(SensitiveKind::Iban) {
        scan_ibans(bytes, out);
    }
    if wanted.contains(SensitiveKind::Email) {
        scan_emails(bytes, out);
    }
}

const fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// True when the byte before `at` cannot continue a token (start of input counts).
fn starts_token(b: &[u8], at: usize) -> bool {
    at == 0 || b.get(at - 1).is_none_or(|&c| !is_word(c))
}

/// Length of the run of bytes from `from` that satisfy `f`, at most `max`.
fn run_len(b: &[u8], from: usize, max: usize, f: impl Fn(u8) -> bool) -> usize {
    b.get(from..)
        .unwrap_or(&[])
        .iter()
        .take(max)
        .take_while(|&&c| f(c))
        .count()
}

/// Vendor prefixes, matched case-sensitively.
const PREFIXES: [&str; 19] = [
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "sk_live_",
    "rk_live_",
    "pk_live_",
    "xoxa-",
    "xoxb-",
    "xoxp-",
    "xoxr-",
    "xoxs-",
    "AIza",
    "-----BEGIN ",
    // Last, so that the automaton without it numbers the other prefixes the same.
    "eyJ",
];

/// `None` only if the constant patterns failed to build, which the tests rule out.
static PREFIX_AC: LazyLock<Option<AhoCorasick>> = LazyLock::new(|| prefix_automaton(&PREFIXES));

/// The same without the JWT prefix, for scans that do not want JWTs: login responses carry
/// `eyJ` at every token, and no other prefix starts inside one, so dropping it changes no
/// other match.
static PREFIX_AC_NO_JWT: LazyLock<Option<AhoCorasick>> =
    LazyLock::new(|| prefix_automaton(PREFIXES.get(..PREFIXES.len() - 1).unwrap_or(&[])));

fn prefix_automaton(patterns: &[&str]) -> Option<AhoCorasick> {
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns)
        .ok()
}

/// Words that start or end a password- or secret-like key, matched case-insensitively. No
/// two match at one position: they differ in their first two letters.
const KEY_WORDS: [&[u8]; 3] = [b"pass", b"pwd", b"secret"];

/// Positions tested at once when skipping to the next possible key word.
const KEY_BLOCK: usize = 16;

/// The offset of the first position `j < KEY_BLOCK` in `w` where a key word may start: `pa`,
/// `pw` or `sec` in any case. As in [`first_start_in_block`], the per-position tests are
/// branch-free and folded into one integer so that the block is tested with vector
/// instructions; the caller confirms the whole word.
fn first_key_word_in_block(w: &[u8; KEY_BLOCK + 2]) -> Option<usize> {
    let mut hits = [0u8; KEY_BLOCK];
    for (j, slot) in hits.iter_mut().enumerate() {
        // `| 0x20` folds ASCII upper case to lower case; no other byte folds to a letter.
        let (a, b, c) = (w[j] | 0x20, w[j + 1] | 0x20, w[j + 2] | 0x20);
        let pass_or_pwd = (a == b'p') & ((b == b'a') | (b == b'w'));
        let secret = (a == b's') & (b == b'e') & (c == b'c');
        *slot = u8::from(pass_or_pwd | secret);
    }
    let bits = u128::from_le_bytes(hits);
    (bits != 0).then_some(bits.trailing_zeros() as usize / 8)
}

/// The key words in `b`: leftmost first, each search resuming at the end of the previous
/// match, as a leftmost Aho-Corasick automaton over [`KEY_WORDS`] would yield them (at most
/// one word matches at a position, so leftmost-first and leftmost-longest agree).
struct KeyWords<'a> {
    b: &'a [u8],
    from: usize,
}

impl Iterator for KeyWords<'_> {
    /// `(start, end)` of one key word.
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        let mut i = self.from;
        loop {
            let block = self
                .b
                .get(i..i + KEY_BLOCK + 2)
                .and_then(|w| <&[u8; KEY_BLOCK + 2]>::try_from(w).ok());
            let at = match block {
                Some(w) => match first_key_word_in_block(w) {
                    Some(k) => i + k,
                    None => {
                        i += KEY_BLOCK;
                        continue;
                    }
                },
                // The last bytes: every position is confirmed directly.
                None if i < self.b.len() => i,
                None => return None,
            };
            for w in KEY_WORDS {
                let word = self.b.get(at..at + w.len());
                if word.is_some_and(|t| t.eq_ignore_ascii_case(w)) {
                    self.from = at + w.len();
                    return Some((at, at + w.len()));
                }
            }
            i = at + 1;
        }
    }
}

/// Vendor tokens, keys and (when `jwt`) JSON Web Tokens, by their prefixes.
fn scan_prefixed_tokens(b: &[u8], jwt: bool, out: &mut SensitiveCounts) {
    let automaton = if jwt { &PREFIX_AC } else { &PREFIX_AC_NO_JWT };
    let Some(ac) = automaton.as_ref() else {
        return;
    };
    for m in ac.find_iter(b) {
        let (start, end) = (m.start(), m.end());
        let alnum = |c: u8| c.is_ascii_alphanumeric();
        let kind = match PREFIXES.get(m.pattern().as_usize()).copied() {
            _ if !starts_token(b, start) => None,
            Some("AKIA" | "ASIA") => {
                let n = run_len(b, end, 17, |c| c.is_ascii_uppercase() || c.is_ascii_digit());
                (n == 16 && ends_token(b, end + n)).then_some(SensitiveKind::AwsAccessKeyId)
            }
            Some("github_pat_") => {
                (run_len(b, end, 255, is_word) >= 22).then_some(SensitiveKind::GithubToken)
            }
            Some(p) if p.starts_with("gh") => {
                let n = run_len(b, end, 37, alnum);
                (n == 36 && ends_token(b, end + n)).then_some(SensitiveKind::GithubToken)
            }
            Some(p) if p.ends_with("_live_") => {
                (run_len(b, end, 255, alnum) >= 16).then_some(SensitiveKind::StripeKey)
            }
            Some(p) if p.starts_with("xox") => {
                let n = run_len(b, end, 255, |c| alnum(c) || c == b'-');
                let digits = b
                    .get(end..end + n)
                    .unwrap_or(&[])
                    .iter()
                    .any(u8::is_ascii_digit);
                (n >= 10 && digits).then_some(SensitiveKind::SlackToken)
            }
            Some("AIza") => {
                let n = run_len(b, end, 36, |c| alnum(c) || c == b'-' || c == b'_');
                (n == 35 && ends_token(b, end + n)).then_some(SensitiveKind::GoogleApiKey)
            }
            Some("eyJ") => is_jwt_at(b, start).then_some(SensitiveKind::Jwt),
            Some("-----BEGIN ") => {
                is_pem_private_key(b, end).then_some(SensitiveKind::PemPrivateKey)
            }
            _ => None,
        };
        if let Some(k) = kind {
            out.add(k);
        }
    }
}

fn ends_token(b: &[u8], at: usize) -> bool {
    b.get(at).is_none_or(|&c| !is_word(c))
}

fn is_base64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// JWT headers longer than this are not decoded (real ones are under 200 bytes).
const MAX_JWT_HEADER_BYTES: usize = 1024;
/// Payloads and signatures longer than this are not followed, so that many candidate headers
/// sharing one long payload cost a bounded amount each.
const MAX_JWT_PART_BYTES: usize = 16 * 1024;

fn is_jwt_at(b: &[u8], start: usize) -> bool {
    let h = run_len(b, start, MAX_JWT_HEADER_BYTES + 1, is_base64url);
    if h > MAX_JWT_HEADER_BYTES || b.get(start + h) != Some(&b'.') {
        return false;
    }
    let p_start = start + h + 1;
    let p = run_len(b, p_start, MAX_JWT_PART_BYTES + 1, is_base64url);
    // The signature may be empty (`alg: none`), the payload may not.
    if p == 0 || p > MAX_JWT_PART_BYTES || b.get(p_start + p) != Some(&b'.') {
        return false;
    }
    let s_end = p_start + p + 1;
    let s = run_len(b, s_end, MAX_JWT_PART_BYTES + 1, is_base64url);
    if s > MAX_JWT_PART_BYTES || !ends_token(b, s_end + s) {
        return false;
    }
    let mut buf = [0u8; MAX_JWT_HEADER_BYTES];
    let Some(header) = b.get(start..start + h) else {
        return false;
    };
    let Some(n) = base64url_decode(header, &mut buf) else {
        return false;
    };
    let json = buf.get(..n).unwrap_or(&[]);
    let trimmed = json.trim_ascii_start();
    trimmed.first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
        && memchr::memmem::find(json, b"\"alg\"").is_some()
}

/// Decodes unpadded base64url into `out`; `None` on a bad character or a short buffer.
fn base64url_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for &c in input {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(n)? = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    Some(n)
}

/// After `-----BEGIN `: up to a few words, then `PRIVATE KEY-----`, on one line.
fn is_pem_private_key(b: &[u8], from: usize) -> bool {
    const TAIL: &[u8] = b"PRIVATE KEY-----";
    let window = b.get(from..).unwrap_or(&[]);
    let line = &window[..window.len().min(48)];
    let line = match memchr::memchr2(b'\n', b'\r', line) {
        Some(i) => &line[..i],
        None => line,
    };
    memchr::memmem::find(line, TAIL).is_some_and(|i| {
        line[..i]
            .iter()
            .all(|&c| c.is_ascii_uppercase() || c == b' ')
    })
}

// ----- keys: password fields and AWS secret keys --------------------------------------------

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b'[' | b']')
}

/// Keys longer than this are not considered field names.
const MAX_KEY_BYTES: usize = 64;

/// Lower-cases a key and drops separators, into a stack buffer: `user[new_Password]` ->
/// `usernewpassword`.
fn normalize_key(key: &[u8], buf: &mut [u8; MAX_KEY_BYTES]) -> usize {
    let mut n = 0;
    for &c in key.iter().filter(|c| c.is_ascii_alphanumeric()) {
        if let Some(slot) = buf.get_mut(n) {
            *slot = c.to_ascii_lowercase();
            n += 1;
        }
    }
    n
}

/// A key that names a password or secret: `password`, `newPassword`, `passwd`, `pwd`,
/// `passphrase`, `passcode`, `pass`, `client_secret`. Not `password_reset_required`,
/// `secretary` or `bypass`.
pub fn is_password_key(key: &[u8]) -> bool {
    let mut buf = [0u8; MAX_KEY_BYTES];
    let n = normalize_key(key, &mut buf);
    let k = &buf[..n];
    const ENDINGS: [&[u8]; 6] = [
        b"password",
        b"passwd",
        b"pwd",
        b"passphrase",
        b"passcode",
        b"secret",
    ];
    // `pass` alone, since `bypass` and `compass` end with it too.
    key.len() <= MAX_KEY_BYTES && (k == b"pass" || ENDINGS.iter().any(|e| k.ends_with(e)))
}

/// A key that names an AWS secret access key.
pub fn is_aws_secret_key_name(key: &[u8]) -> bool {
    let mut buf = [0u8; MAX_KEY_BYTES];
    let n = normalize_key(key, &mut buf);
    let k = &buf[..n];
    key.len() <= MAX_KEY_BYTES
        && (memchr::memmem::find(k, b"secretaccesskey").is_some()
            || k.ends_with(b"awssecretkey")
            || k.ends_with(b"awssecret"))
}

/// The shape of an AWS secret access key: 40 base64 characters mixing cases.
pub fn is_aws_secret_value(v: &[u8]) -> bool {
    v.len() == 40
        && v.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'/' || c == b'+')
        && v.iter().any(u8::is_ascii_uppercase)
        && v.iter().any(u8::is_ascii_lowercase)
        && v.iter()
            .any(|c| c.is_ascii_digit() || *c == b'/' || *c == b'+')
}

fn scan_keys(b: &[u8], out: &mut SensitiveCounts) {
    let mut done_until = 0usize;
    for (m_start, m_end) in (KeyWords { b, from: 0 }) {
        if m_start < done_until {
            continue;
        }
        // Widen the key word to the whole key.
        let left = b
            .get(..m_start)
            .unwrap_or(&[])
            .iter()
            .rev()
            .take(MAX_KEY_BYTES + 1)
            .take_while(|&&c| is_key_char(c))
            .count();
        let start = m_start - left;
        let end = m_end + run_len(b, m_end, MAX_KEY_BYTES + 1, is_key_char);
        done_until = end;
        let Some(key) = b.get(start..end) else {
            continue;
        };
        let before_ok = start == 0
            || b.get(start - 1)
                .is_some_and(|c| b"\"'{,&?; \t\r\n".contains(c));
        if !before_ok {
            continue;
        }
        let Some(value) = value_after_key(b, end) else {
            continue;
        };
        if is_aws_secret_key_name(key) {
            if is_aws_secret_value(value) {
                out.add(SensitiveKind::AwsSecretKey);
            }
        } else if is_password_key(key) && !value.is_empty() {
            out.add(SensitiveKind::PasswordField);
        }
    }
}

/// How much of a value is read after a key: enough to tell empty from not and to see the
/// 40 characters of an AWS secret. Keeps `pwd=pwd=pwd=...` linear.
const MAX_VALUE_PEEK_BYTES: usize = 64;

/// The value after a key in JSON (`"key": "v"`, `"key":123`) or a form (`key=v`); `None`
/// when no separator follows, so the word was not a key. Empty and `null`/boolean values
/// come back empty.
fn value_after_key(b: &[u8], mut i: usize) -> Option<&[u8]> {
    if matches!(b.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    match b.get(i) {
        Some(b'=') => {
            i += 1;
            // `key = value` in config-like text.
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            let v = run_len(b, i, MAX_VALUE_PEEK_BYTES, |c| {
                !matches!(c, b'&' | b';' | b' ' | b'\r' | b'\n')
            });
            b.get(i..i + v)
        }
        Some(b':') => {
            i += 1;
            while matches!(b.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
                i += 1;
            }
            if b.get(i) == Some(&b'"') {
                let v = run_len(b, i + 1, MAX_VALUE_PEEK_BYTES, |c| c != b'"');
                return b.get(i + 1..i + 1 + v);
            }
            let v = run_len(b, i, MAX_VALUE_PEEK_BYTES, |c| {
                !matches!(c, b',' | b'}' | b']' | b' ' | b'\r' | b'\n')
            });
            let raw = b.get(i..i + v)?;
            Some(if matches!(raw, b"null" | b"true" | b"false") {
                &[]
            } else {
                raw
            })
        }
        _ => None,
    }
}

// ----- digit runs: cards, SSNs, phone numbers ------------------------------------------------

/// A run of digits and single separators, as written.
#[derive(Default)]
struct DigitRun {
    digits: [u8; 19],
    n_digits: usize,
    /// Lengths of the digit groups between separators (at most 8 kept).
    groups: [u8; 8],
    n_groups: usize,
    /// The separator bytes used (space, `-`, `.`), as a small bitset.
    seps: u8,
    plus: bool,
    paren: bool,
    too_long: bool,
}

const SEP_SPACE: u8 = 1;
const SEP_DASH: u8 = 2;
const SEP_DOT: u8 = 4;

impl DigitRun {
    fn push_digit(&mut self, d: u8) {
        match self.digits.get_mut(self.n_digits) {
            Some(slot) => {
                *slot = d - b'0';
                self.n_digits += 1;
            }
            None => self.too_long = true,
        }
        if let Some(g) = self.groups.get_mut(self.n_groups) {
            *g = g.saturating_add(1);
        }
    }

    fn digits(&self) -> &[u8] {
        &self.digits[..self.n_digits.min(self.digits.len())]
    }

    fn groups(&self) -> &[u8] {
        &self.groups[..(self.n_groups + 1).min(self.groups.len())]
    }
}

/// Reads a digit run at `i`; returns it and the index just past it.
fn read_digit_run(b: &[u8], mut i: usize) -> (DigitRun, usize) {
    let mut r = DigitRun::default();
    if b.get(i) == Some(&b'+') {
        r.plus = true;
        i += 1;
    }
    let mut end = i;
    loop {
        match b.get(i) {
            Some(c) if c.is_ascii_digit() => {
                r.push_digit(*c);
                i += 1;
                end = i;
                if r.too_long {
                    // Keep consuming so the tail is not rescanned as its own run.
                    i += b
                        .get(i..)
                        .unwrap_or(&[])
                        .iter()
                        .take_while(|c| c.is_ascii_digit())
                        .count();
                    return (r, i);
                }
            }
            Some(b'(') if r.n_digits == 0 || b.get(i.wrapping_sub(1)) == Some(&b' ') => {
                r.paren = true;
                i += 1;
            }
            Some(b')') if r.paren => {
                r.n_groups += 1;
                i += 1;
                if b.get(i) == Some(&b' ') || b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            Some(&c @ (b' ' | b'-' | b'.'))
                if b.get(i + 1).is_some_and(u8::is_ascii_digit) && r.n_digits > 0 =>
            {
                r.seps |= match c {
                    b' ' => SEP_SPACE,
                    b'-' => SEP_DASH,
                    _ => SEP_DOT,
                };
                r.n_groups += 1;
                i += 1;
            }
            _ => break,
        }
    }
    (r, end)
}

/// Whether `c` may open a number: a digit, `+` or `(`.
const fn opens_number(c: u8) -> bool {
    (c.wrapping_sub(b'0') < 10) | (c == b'+') | (c == b'(')
}

/// Whether a number right after `c` would continue what `c` belongs to rather than start:
/// a word character (an identifier), `.` (a decimal), `-` (a date), `+`, `/` (a path) or
/// `:` (a time). `-` to `:` are one range of ASCII (`-./0123456789:`).
const fn joins_number(c: u8) -> bool {
    ((c | 0x20).wrapping_sub(b'a') < 26) | (c == b'_') | (c.wrapping_sub(b'-') < 14) | (c == b'+')
}

/// Whether [`read_digit_run`] may read `c` as part of a number: a digit, a separator (space,
/// `-`, `.`), `+` or a parenthesis. A run never spans any other byte.
const fn in_number(c: u8) -> bool {
    (c.wrapping_sub(b'0') < 10)
        | (c == b' ')
        | (c.wrapping_sub(b'-') < 2)
        | (c == b'+')
        | ((c & !1) == b'(')
}

/// The fewest bytes a number [`classify_digit_run`] reports spans: `+` and 8 digits (E.164);
/// SSNs have 9 digits, cards and NANP numbers more. A number is read only where this many
/// [`in_number`] bytes follow its start; shorter runs (ids, amounts, counts) are not.
const MIN_NUMBER_BYTES: usize = 9;

/// Bytes tested at once when skipping to the next place a number may start.
const SKIP_BLOCK: usize = 16;

/// The offset in `w[1..]` of the first byte that may open a number after a byte that does
/// not join one (`w[0]` is the byte before the block). The per-byte tests are branch-free
/// and folded into one integer, so that the compiler tests the block with vector
/// instructions: most of a body is skipped a block at a time.
fn first_start_in_block(w: &[u8; SKIP_BLOCK + 1]) -> Option<usize> {
    let mut starts = [0u8; SKIP_BLOCK];
    for (j, slot) in starts.iter_mut().enumerate() {
        *slot = u8::from(opens_number(w[j + 1]) & !joins_number(w[j]));
    }
    let bits = u128::from_le_bytes(starts);
    (bits != 0).then_some(bits.trailing_zeros() as usize / 8)
}

/// How many of the `MIN_NUMBER_BYTES` bytes from `i` may belong to a number before one that
/// cannot: `None` when all may (a number starting at `i` may be long enough to report), and
/// when fewer than `MIN_NUMBER_BYTES` bytes remain, all of them. Tested without a branch per
/// byte: most numbers in API bodies (ids, amounts, counts) are short, and a loop that stops
/// at their end would mispredict on every length.
fn short_run(b: &[u8], i: usize) -> Option<usize> {
    let Some(w) = b
        .get(i..i + MIN_NUMBER_BYTES)
        .and_then(|w| <&[u8; MIN_NUMBER_BYTES]>::try_from(w).ok())
    else {
        return Some(b.len().saturating_sub(i));
    };
    let outside = w
        .iter()
        .enumerate()
        .fold(0u16, |m, (j, &c)| m | (u16::from(!in_number(c)) << j));
    (outside != 0).then_some(outside.trailing_zeros() as usize)
}

fn scan_numbers(b: &[u8], out: &mut SensitiveCounts) {
    // A number is reported only if MIN_NUMBER_BYTES `in_number` bytes follow its start, and a
    // number never spans another byte. So where fewer follow a position, every number read
    // from there to the end of that run is too short to count, and none read elsewhere
    // overlaps the run: skipping the run entirely changes no count.
    let mut i = 0;
    while i < b.len() {
        // Skip to the next possible start a block at a time while a whole block remains.
        let block = i
            .checked_sub(1)
            .and_then(|p| b.get(p..i + SKIP_BLOCK))
            .and_then(|w| <&[u8; SKIP_BLOCK + 1]>::try_from(w).ok());
        if let Some(w) = block {
            match first_start_in_block(w) {
                Some(k) => i += k,
                None => {
                    i += SKIP_BLOCK;
                    continue;
                }
            }
        }
        if let Some(len) = short_run(b, i) {
            // The byte after the run (if any) cannot open a number either.
            i += len + 1;
            continue;
        }
        let Some(&c) = b.get(i) else {
            break;
        };
        // `+` and `(` open a number only before a digit. A digit after a letter, `_`, `.`
        // or `-` continues an identifier, decimal or date, not a new number.
        let opens = c.is_ascii_digit()
            || (matches!(c, b'+' | b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        let after_ok = i == 0 || b.get(i - 1).is_some_and(|&p| !joins_number(p));
        if !(opens && after_ok) {
            i += 1;
            continue;
        }
        let (run, end) = read_digit_run(b, i);
        // The number must end the token: `4111...1111abc` or `1.5` is something else.
        let next = b.get(end).copied();
        let ends_ok = next.is_none_or(|n| !(is_word(n) || n == b'-' || n == b'/' || n == b':'))
            && !(next == Some(b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit));
        if ends_ok && !run.too_long {
            if let Some(k) = classify_digit_run(&run) {
                out.add(k);
            }
        }
        i = end.max(i + 1);
    }
}

fn classify_digit_run(r: &DigitRun) -> Option<SensitiveKind> {
    let d = r.digits();
    let groups = r.groups();
    if r.plus {
        let e164 = (8..=15).contains(&d.len()) && d.first() != Some(&0) && r.seps & SEP_DOT == 0;
        return e164.then_some(SensitiveKind::Phone);
    }
    if !r.paren && r.seps & SEP_DOT == 0 && is_card(d, groups, r.seps) {
        return Some(SensitiveKind::CardNumber);
    }
    if !r.paren && r.seps == SEP_DASH && groups == [3, 2, 4] && is_ssn(d) {
        return Some(SensitiveKind::UsSsn);
    }
    if is_nanp(d, groups, r) {
        return Some(SensitiveKind::Phone);
    }
    None
}

fn is_card(d: &[u8], groups: &[u8], seps: u8) -> bool {
    if !(13..=19).contains(&d.len()) || seps == (SEP_SPACE | SEP_DASH) {
        return false;
    }
    // Bare, or printed in groups: 4-4-4-4(-3), 4-6-5 (Amex), 4-6-4 (Diners).
    let grouped_ok = groups.len() == 1
        || (groups.first() == Some(&4) && groups.iter().skip(1).all(|g| (3..=6).contains(g)));
    if !grouped_ok || d.iter().all(|&x| Some(&x) == d.first()) {
        return false;
    }
    iin_matches(d) && luhn(d)
}

fn prefix_value(d: &[u8], n: usize) -> u32 {
    d.iter()
        .take(n)
        .fold(0u32, |acc, &x| acc * 10 + u32::from(x))
}

/// Issuer prefixes and lengths of the major card networks.
fn iin_matches(d: &[u8]) -> bool {
    let (p1, p2, p3, p4, p6) = (
        prefix_value(d, 1),
        prefix_value(d, 2),
        prefix_value(d, 3),
        prefix_value(d, 4),
        prefix_value(d, 6),
    );
    let len = d.len();
    match () {
        // Visa.
        _ if p1 == 4 => matches!(len, 13 | 16 | 19),
        // Mastercard.
        _ if (51..=55).contains(&p2) || (2221..=2720).contains(&p4) => len == 16,
        // American Express.
        _ if p2 == 34 || p2 == 37 => len == 15,
        // Discover.
        _ if p4 == 6011
            || p2 == 65
            || (644..=649).contains(&p3)
            || (622126..=622925).contains(&p6) =>
        {
            (16..=19).contains(&len)
        }
        // JCB.
        _ if (3528..=3589).contains(&p4) => (16..=19).contains(&len),
        // Diners Club.
        _ if (300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39 => {
            (14..=19).contains(&len)
        }
        // UnionPay.
        _ if p2 == 62 => (16..=19).contains(&len),
        // Maestro.
        _ if matches!(
            p4,
            5018 | 5020 | 5038 | 5893 | 6304 | 6759 | 6761 | 6762 | 6763
        ) =>
        {
            (12..=19).contains(&len)
        }
        _ => false,
    }
}

/// Whether digit values (0-9, most significant first) pass the Luhn check.
pub fn luhn(d: &[u8]) -> bool {
    luhn_sum(d) % 10 == 0
}

/// The Luhn sum of digit values (0-9, most significant first): every second digit from the
/// right doubled, less 9 when that passes 9.
pub fn luhn_sum(d: &[u8]) -> u32 {
    d.iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum()
}

/// SSA rules: area not 000, 666 or 900-999; group not 00; serial not 0000.
fn is_ssn(d: &[u8]) -> bool {
    if d.len() != 9 {
        return false;
    }
    let area = prefix_value(d, 3);
    let group = prefix_value(d.get(3..).unwrap_or(&[]), 2);
    let serial = prefix_value(d.get(5..).unwrap_or(&[]), 4);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// North American numbers written with separators: `(415) 555-2671`, `415-555-2671`,
/// `415.555.2671`, `1-415-555-2671`. Bare ten-digit strings are ids far more often.
fn is_nanp(d: &[u8], groups: &[u8], r: &DigitRun) -> bool {
    let national = match (d.len(), groups) {
        (10, [3, 3, 4]) => d,
        (11, [1, 3, 3, 4]) if d.first() == Some(&1) => d.get(1..).unwrap_or(&[]),
        _ => return false,
    };
    // One kind of separator, or parentheses around the area code.
    let seps_ok = r.paren || matches!(r.seps, SEP_SPACE | SEP_DASH | SEP_DOT);
    let area = national.first().copied().unwrap_or(0);
    let exchange = national.get(3).copied().unwrap_or(0);
    seps_ok && area >= 2 && exchange >= 2
}

// ----- IBAN ----------------------------------------------------------------------------------

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn scan_ibans(b: &[u8], out: &mut SensitiveCounts) {
    let mut i = 0;
    while i + 4 <= b.len() {
        let head = b.get(i..i + 4).unwrap_or(&[]);
        let candidate = head.len() == 4
            && head[0].is_ascii_uppercase()
            && head[1].is_ascii_uppercase()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit()
            && starts_token(b, i);
        if candidate {
            if let Some(end) = iban_at(b, i) {
                out.add(SensitiveKind::Iban);
                i = end;
                continue;
            }
        }
        i += 1;
    }
}

/// Validates an IBAN starting at `start`, electronic (`DE89370400440532013000`) or printed in
/// groups of four (`DE89 3704 0044 0532 0130 00`); returns the index past it.
fn iban_at(b: &[u8], start: usize) -> Option<usize> {
    let country = b.get(start..start + 2)?;
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == country)?
        .1;
    let mut chars = [0u8; 34];
    let (mut n, mut i) = (0usize, start);
    while n < len {
        let c = *b.get(i)?;
        if c.is_ascii_uppercase() || c.is_ascii_digit() {
            *chars.get_mut(n)? = c;
            n += 1;
            i += 1;
        } else if c == b' ' && n % 4 == 0 && n > 0 {
            i += 1;
        } else {
            return None;
        }
    }
    if !ends_token(b, i) {
        return None;
    }
    let iban = chars.get(..len)?;
    // Move the first four characters to the end and read letters as 10..35: mod 97 == 1.
    let rearranged = iban.iter().skip(4).chain(iban.iter().take(4));
    let mut rem = 0u32;
    for &c in rearranged {
        rem = if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    (rem == 1).then_some(i)
}

// ----- email ---------------------------------------------------------------------------------

/// RFC 5321 limits: 64-byte local part, 255-byte domain.
const MAX_LOCAL_BYTES: usize = 64;
const MAX_DOMAIN_BYTES: usize = 255;

/// "Domains" that are file names (`icon@2x.png`).
const FILE_SUFFIXES: [&[u8]; 8] = [
    b"png", b"jpg", b"jpeg", b"gif", b"svg", b"webp", b"css", b"js",
];

fn scan_emails(b: &[u8], out: &mut SensitiveCounts) {
    for at in memchr::memchr_iter(b'@', b) {
        if email_around(b, at, at + 1) {
            out.add(SensitiveKind::Email);
        }
    }
    // Form and query encoding: `alice%40example.com`.
    for at in memchr::memmem::find_iter(b, b"%40") {
        if email_around(b, at, at + 3) {
            out.add(SensitiveKind::Email);
        }
    }
}

fn email_around(b: &[u8], at: usize, domain_start: usize) -> bool {
    let local_char = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let local_len = b
        .get(..at)
        .unwrap_or(&[])
        .iter()
        .rev()
        .take(MAX_LOCAL_BYTES + 1)
        .take_while(|&&c| local_char(c))
        .count();
    if local_len == 0 || local_len > MAX_LOCAL_BYTES {
        return false;
    }
    let local = b.get(at - local_len..at).unwrap_or(&[]);
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') {
        return false;
    }
    let d_len = run_len(b, domain_start, MAX_DOMAIN_BYTES + 1, |c| {
        c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
    });
    if d_len > MAX_DOMAIN_BYTES {
        return false;
    }
    let domain = b.get(domain_start..domain_start + d_len).unwrap_or(&[]);
    // A sentence may end right after the address.
    let domain = domain.strip_suffix(b".").unwrap_or(domain);
    is_domain(domain)
}

fn is_domain(d: &[u8]) -> bool {
    let mut labels = 0usize;
    let mut last: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        if label.is_empty() || label.len() > 63 || label.first() == Some(&b'-') {
            return false;
        }
        labels += 1;
        last = label;
    }
    labels >= 2
        && last.len() >= 2
        && last.iter().all(u8::is_ascii_alphabetic)
        && !FILE_SUFFIXES.iter().any(|s| last.eq_ignore_ascii_case(s))
}

// ---------------------------------------------------------------------------------------------
// JSON fields
// ---------------------------------------------------------------------------------------------

/// Limits of [`classify_json_fields`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JsonScanConfig {
    /// Nesting levels walked; deeper values are skipped (`depth_exceeded`). Default 32.
    pub max_depth: usize,
    /// Distinct key paths reported; further paths still count in the totals but are not
    /// listed (`fields_dropped`). Default 256.
    pub max_fields: usize,
    /// Key paths longer than this are not listed (`fields_dropped`). Default 256.
    pub max_key_path_bytes: usize,
}

impl Default for JsonScanConfig {
    fn default() -> Self {
        JsonScanConfig {
            max_depth: 32,
            max_fields: 256,
            max_key_path_bytes: 256,
        }
    }
}

/// Sensitive kinds per JSON key path. Paths are written `$.user.cards[].number`: every array
/// element shares one path, so a list of 1000 cards is one field.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FieldReport {
    pub fields: BTreeMap<String, KindSet>,
    pub totals: SensitiveCounts,
    /// Findings not listed per field because of `max_fields` or `max_key_path_bytes`.
    pub fields_dropped: u64,
    /// Subtrees skipped because of `max_depth`.
    pub depth_exceeded: u64,
}

impl FieldReport {
    fn record(&mut self, cfg: &JsonScanConfig, path: &str, found: KindSet) {
        if found.is_empty() {
            return;
        }
        if path.len() > cfg.max_key_path_bytes {
            self.fields_dropped = self.fields_dropped.saturating_add(1);
            return;
        }
        let room = self.fields.len() < cfg.max_fields;
        match self.fields.get_mut(path) {
            Some(s) => *s = s.union(found),
            None if room => {
                self.fields.insert(path.to_owned(), found);
            }
            None => self.fields_dropped = self.fields_dropped.saturating_add(1),
        }
    }
}

/// Classifies every string and integer in a JSON document, attributing findings to key paths;
/// keys named like passwords or AWS secrets are judged with their values.
pub fn classify_json_fields(value: &Value, cfg: &JsonScanConfig, out: &mut FieldReport) {
    let mut path = String::from("$");
    walk(value, None, cfg, 0, &mut path, out);
}

fn walk(
    v: &Value,
    key: Option<&str>,
    cfg: &JsonScanConfig,
    depth: usize,
    path: &mut String,
    out: &mut FieldReport,
) {
    if depth > cfg.max_depth {
        out.depth_exceeded = out.depth_exceeded.saturating_add(1);
        return;
    }
    let mut found = SensitiveCounts::default();
    match v {
        Value::String(s) => {
            classify(s.as_bytes(), &mut found);
            judge_key(key, s.as_bytes(), &mut found);
        }
        Value::Number(n) => {
            // Card numbers are sometimes sent as JSON integers.
            if let Some(u) = n.as_u64() {
                let mut buf = [0u8; 20];
                let digits = format_u64(u, &mut buf);
                classify(digits, &mut found);
                judge_key(key, digits, &mut found);
            }
        }
        Value::Array(items) => {
            let len = path.len();
            path.push_str("[]");
            for item in items {
                walk(item, key, cfg, depth + 1, path, out);
            }
            path.truncate(len);
        }
        Value::Object(map) => {
            let len = path.len();
            for (k, item) in map {
                path.push('.');
                path.push_str(k);
                walk(item, Some(k), cfg, depth + 1, path, out);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
    if !found.is_empty() {
        out.totals.merge(&found);
        out.record(cfg, path, found.kinds());
    }
}

fn judge_key(key: Option<&str>, value: &[u8], found: &mut SensitiveCounts) {
    let Some(key) = key else {
        return;
    };
    let key = key.as_bytes();
    if is_aws_secret_key_name(key) {
        if is_aws_secret_value(value) {
            found.add(SensitiveKind::AwsSecretKey);
        }
    } else if is_password_key(key) && !value.is_empty() {
        found.add(SensitiveKind::PasswordField);
    }
}

fn format_u64(mut u: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use SensitiveKind::*;

    /// Classifies `input` and compares every non-zero count with `want`.
    fn check(input: &str, want: &[(SensitiveKind, u32)]) {
        let mut got = SensitiveCounts::default();
        classify(input.as_bytes(), &mut got);
        let got: Vec<_> = got.iter().collect();
        assert_eq!(got, want, "input {input:?}");
    }

    fn check_all(cases: &[(&str, &[(SensitiveKind, u32)])]) {
        for (input, want) in cases {
            check(input, want);
        }
    }

    #[test]
    fn automata_build() {
        assert!(PREFIX_AC.is_some());
        assert!(PREFIX_AC_NO_JWT.is_some());
        assert_eq!(PREFIXES.last(), Some(&"eyJ"));
    }

    #[test]
    fn card_numbers_need_luhn_an_issuer_and_a_card_shape() {
        check_all(&[
            ("4111 1111 1111 1111", &[(CardNumber, 1)]),
            ("4111111111111111", &[(CardNumber, 1)]),
            (r#"{"card":"4242424242424242"}"#, &[(CardNumber, 1)]),
            ("5500-0000-0000-0004", &[(CardNumber, 1)]),
            ("2223003122003222", &[(CardNumber, 1)]),
            ("378282246310005", &[(CardNumber, 1)]),
            ("3782 822463 10005", &[(CardNumber, 1)]),
            ("6011111111111117", &[(CardNumber, 1)]),
            ("3530111333300000", &[(CardNumber, 1)]),
            ("30569309025904", &[(CardNumber, 1)]),
            (
                "cards 4111111111111111, 5555555555554444.",
                &[(CardNumber, 2)],
            ),
            // Near misses.
            ("4111111111111112", &[]),
            ("1234567812345670", &[]),
            ("4111 1111-1111 1111", &[]),
            ("4111.1111.1111.1111", &[]),
            ("41111111111111111111", &[]),
            ("378282246310005x", &[]),
            ("id_4111111111111111", &[]),
            ("0.4111111111111111", &[]),
        ]);
    }

    #[test]
    fn ibans_need_a_known_country_its_length_and_mod_97() {
        check_all(&[
            ("DE89370400440532013000", &[(Iban, 1)]),
            ("GB82 WEST 1234 5698 7654 32", &[(Iban, 1)]),
            ("iban=FR1420041010050500013M02606&x=1", &[(Iban, 1)]),
            ("NL91ABNA0417164300", &[(Iban, 1)]),
            ("DE89370400440532013001", &[]),
            ("DE8937040044053201300", &[]),
            ("DE893704004405320130000", &[]),
            ("XX89370400440532013000", &[]),
            ("XDE89370400440532013000", &[]),
        ]);
    }

    #[test]
    fn ssns_need_dashes_and_an_issuable_number() {
        check_all(&[
            ("ssn: 123-45-6789", &[(UsSsn, 1)]),
            ("000-12-3456", &[]),
            ("666-12-3456", &[]),
            ("900-12-3456", &[]),
            ("123-00-6789", &[]),
            ("123-45-0000", &[]),
            ("123456789", &[]),
            ("123 45 6789", &[]),
            ("A123-45-6789", &[]),
        ]);
    }

    #[test]
    fn emails_in_text_and_query_strings() {
        check_all(&[
            ("alice@example.com", &[(Email, 1)]),
            ("to: bob.smith+x@mail.example.co.uk.", &[(Email, 1)]),
            ("q=alice%40example.com&b=c", &[(Email, 1)]),
            (r#"["a@b.io","c@d.org"]"#, &[(Email, 2)]),
            ("icon@2x.png", &[]),
            ("lodash@4.17.21", &[]),
            ("user@localhost", &[]),
            ("@example.com", &[]),
            ("a@.com", &[]),
            (".a@example.com", &[]),
        ]);
    }

    #[test]
    fn phones_are_e164_or_separated_north_american_numbers() {
        check_all(&[
            ("+14155552671", &[(Phone, 1)]),
            ("tel +44 20 7946 0958", &[(Phone, 1)]),
            ("(415) 555-2671", &[(Phone, 1)]),
            ("415-555-2671", &[(Phone, 1)]),
            ("415.555.2671", &[(Phone, 1)]),
            ("415 555 2671", &[(Phone, 1)]),
            ("1-415-555-2671", &[(Phone, 1)]),
            ("+1 (415) 555-2671", &[(Phone, 1)]),
            ("4155552671", &[]),
            ("123-456-7890", &[]),
            ("415-155-2671", &[]),
            ("+0123456789", &[]),
            ("+1234567", &[]),
            ("+1.415.555.2671", &[]),
            ("415-555-2671-99", &[]),
        ]);
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";

    #[test]
    fn jwts_need_three_parts_and_a_json_header_with_alg() {
        let bearer = format!("Bearer {JWT}");
        let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
        check_all(&[
            (JWT, &[(Jwt, 1)]),
            (&bearer, &[(Jwt, 1)]),
            (unsigned, &[(Jwt, 1)]),
            ("eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2ln", &[]),
            ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", &[]),
            ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9..sig", &[]),
            ("eyJhbGciOiJub25lIg.eyJzdWIiOiIxIn0.c2ln", &[]),
            ("xeyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.c2ln", &[]),
        ]);
    }

    #[test]
    fn vendor_tokens_need_prefix_length_and_boundaries() {
        let ghp = format!(
            "token ghp_{}",
            "a1B2c3D4e5".repeat(4).get(..36).unwrap_or("")
        );
        let ghp_short = format!("ghp_{}", "a".repeat(35));
        let ghp_long = format!("ghp_{}", "a".repeat(37));
        let google = format!(
            "key=AIza{}",
            "SyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"
                .get(..35)
                .unwrap_or("")
        );
        check_all(&[
            ("AKIAIOSFODNN7EXAMPLE", &[(AwsAccessKeyId, 1)]),
            ("id=ASIAY34FZKBOKMUTVV7A&x", &[(AwsAccessKeyId, 1)]),
            ("AKIAIOSFODNN7EXAMPL", &[]),
            ("AKIAIOSFODNN7EXAMPLEX", &[]),
            ("XAKIAIOSFODNN7EXAMPLE", &[]),
            ("AKIAiosfodnn7example", &[]),
            (&ghp, &[(GithubToken, 1)]),
            (&ghp_short, &[]),
            (&ghp_long, &[]),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                &[(GithubToken, 1)],
            ),
            ("github_pat_short", &[]),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", &[(StripeKey, 1)]),
            ("pk_live_51H8abcdefghijklmnop", &[(StripeKey, 1)]),
            ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", &[]),
            ("sk_live_short", &[]),
            (
                "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                &[(SlackToken, 1)],
            ),
            ("xoxb-abc", &[]),
            ("xoxz-123456789012-1234567890123", &[]),
            (&google, &[(GoogleApiKey, 1)]),
            ("AIzaShort", &[]),
        ]);
    }

    #[test]
    fn pem_private_keys_but_not_certificates() {
        check_all(&[
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA",
                &[(PemPrivateKey, 1)],
            ),
            (
                r#"{"key":"-----BEGIN PRIVATE KEY-----\nMIIE"}"#,
                &[(PemPrivateKey, 1)],
            ),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", &[(PemPrivateKey, 1)]),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----",
                &[(PemPrivateKey, 1)],
            ),
            ("-----BEGIN CERTIFICATE-----\nMIIB", &[]),
            ("-----BEGIN PUBLIC KEY-----", &[]),
            ("-----BEGIN CERTIFICATE-----\nPRIVATE KEY-----", &[]),
        ]);
    }

    #[test]
    fn aws_secret_keys_need_their_key_name() {
        let v = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let env = format!("aws_secret_access_key = {v}");
        let json = format!(r#"{{"SecretAccessKey":"{v}"}}"#);
        let bare = format!("value {v}");
        let short = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI";
        check_all(&[
            (&env, &[(AwsSecretKey, 1)]),
            (&json, &[(AwsSecretKey, 1)]),
            (&bare, &[]),
            (short, &[]),
        ]);
    }

    #[test]
    fn password_fields_are_keys_with_values() {
        check_all(&[
            (
                r#"{"username":"a","password":"hunter2"}"#,
                &[(PasswordField, 1)],
            ),
            ("user=a&passwd=x", &[(PasswordField, 1)]),
            (r#"{"client_secret": "abc"}"#, &[(PasswordField, 1)]),
            (
                "new_password=abc&confirmPassword=abc",
                &[(PasswordField, 2)],
            ),
            ("user[password]=x", &[(PasswordField, 1)]),
            (r#"{"pin":1234,"pwd":1234}"#, &[(PasswordField, 1)]),
            (r#"{"password_reset_required": true}"#, &[]),
            (r#"{"password": ""}"#, &[]),
            (r#"{"password": null}"#, &[]),
            ("bypass=1&compass=2", &[]),
            ("the password is long", &[]),
            ("secretary=bob", &[]),
        ]);
    }

    /// Ordinary API data must stay quiet: ids, UUIDs, hashes, timestamps, prices, versions.
    #[test]
    fn ordinary_api_data_has_no_findings() {
        check_all(&[
            (
                r#"{"id":"550e8400-e29b-41d4-a716-446655440000","order_id":987654321,
                   "ts":1706695200000,"created_at":"2024-01-31T10:00:00Z","price":"1234.56",
                   "amount":19.99,"sku":"SKU-12345-XL","version":"1.2.3","ip":"192.168.10.200",
                   "count":5000000000000000,"etag":"d41d8cd98f00b204e9800998ecf8427e",
                   "ref":"AB12CD34EF56","range":"1-100","ratio":"16:9","size":"1920x1080",
                   "trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                   "customer":"cus_9s8d7f6g5h","items":[1,2,3],"next":"/v1/items?page=2"}"#,
                &[],
            ),
            (
                "GET /api/v2/users/1706695200123/orders?limit=100&offset=4000 HTTP/1.1",
                &[],
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.6099.109",
                &[],
            ),
            ("max-age=31536000; includeSubDomains", &[]),
            ("2024-01-31 10:00:00.123456", &[]),
        ]);
    }

    #[test]
    fn json_fields_report_kinds_per_key_path() {
        let v = serde_json::json!({
            "user": {
                "email": "alice@example.com",
                "password": "hunter2",
                "cards": [{"number": "4111111111111111"}, {"number": 5555555555554444u64}],
                "id": 4111111111111112u64,
                "aws": {"secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
            },
            "note": "call +14155552671 or mail bob@example.org",
            "password_reset_required": true,
        });
        let mut r = FieldReport::default();
        classify_json_fields(&v, &JsonScanConfig::default(), &mut r);
        let got: Vec<(String, Vec<&str>)> = r
            .fields
            .iter()
            .map(|(p, k)| (p.clone(), k.iter().map(SensitiveKind::name).collect()))
            .collect();
        let want: Vec<(String, Vec<&str>)> = [
            ("$.note", vec!["email", "phone"]),
            ("$.user.aws.secret_access_key", vec!["aws_secret_key"]),
            ("$.user.cards[].number", vec!["card_number"]),
            ("$.user.email", vec!["email"]),
            ("$.user.password", vec!["password_field"]),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_owned(), k))
        .collect();
        assert_eq!(got, want);
        assert_eq!(r.totals.get(CardNumber), 2);
        assert_eq!(r.totals.get(Email), 2);
        assert_eq!(
            serde_json::to_value(r.totals).unwrap(),
            serde_json::json!({"card_number": 2, "email": 2, "phone": 1,
                               "aws_secret_key": 1, "password_field": 1})
        );
    }

    #[test]
    fn json_limits_drop_fields_and_deep_subtrees_with_counters() {
        let cfg = JsonScanConfig {
            max_depth: 3,
            max_fields: 2,
            max_key_path_bytes: 12,
        };
        let v = serde_json::json!({
            "a": "x@example.com",
            "b": "y@example.com",
            "c": "z@example.com",
            "long_key_name": "w@example.com",
            "d": {"e": {"f": {"g": "deep@example.com"}}},
        });
        let mut r = FieldReport::default();
        classify_json_fields(&v, &cfg, &mut r);
        assert_eq!(r.fields.keys().collect::<Vec<_>>(), ["$.a", "$.b"]);
        assert_eq!(r.fields_dropped, 2);
        assert_eq!(r.depth_exceeded, 1);
        assert_eq!(r.totals.get(Email), 4);
    }

    #[test]
    fn kind_names_are_snake_case_and_distinct() {
        let mut names: Vec<_> = SensitiveKind::ALL.iter().map(|k| k.name()).collect();
        assert!(names
            .iter()
            .all(|n| n.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SensitiveKind::ALL.len());
        for (i, k) in SensitiveKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    /// Inputs built to make a careless scanner quadratic: every candidate re-reading one long
    /// value. A linear scan takes milliseconds; a quadratic one would stall the suite for
    /// minutes. Speed itself is measured in `benches/`, not asserted here (shared machines are
    /// noisy); this test pins that such inputs are scanned without panicking and count sanely.
    #[test]
    fn adversarial_inputs_are_scanned() {
        let n = 256 * 1024;
        let inputs = [
            "pwd=".repeat(n / 4),
            format!("{}.{}", "eyJ-".repeat(256), "A".repeat(n)),
            "a@".repeat(n / 2),
            "1 ".repeat(n / 2),
            format!("{}{}", "DE89 ".repeat(n / 5), "1"),
            "%40a".repeat(n / 4),
        ];
        for input in &inputs {
            let mut c = SensitiveCounts::default();
            classify(input.as_bytes(), &mut c);
            let total: u64 = c.iter().map(|(_, n)| u64::from(n)).sum();
            assert!(total <= input.len() as u64, "{:?}...", input.get(..16));
        }
    }

    /// The key-word and number scans as first written (an Aho-Corasick automaton; a test of
    /// every byte), kept as oracles: the fast scans must count exactly what these count.
    mod oracle {
        use super::super::*;

        pub fn scan_keys(b: &[u8], out: &mut SensitiveCounts) {
            let ac = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::LeftmostLongest)
                .build(KEY_WORDS)
                .unwrap();
            let mut done_until = 0usize;
            for m in ac.find_iter(b) {
                if m.start() < done_until {
                    continue;
                }
                let left = b[..m.start()]
                    .iter()
                    .rev()
                    .take(MAX_KEY_BYTES + 1)
                    .take_while(|&&c| is_key_char(c))
                    .count();
                let start = m.start() - left;
                let end = m.end() + run_len(b, m.end(), MAX_KEY_BYTES + 1, is_key_char);
                done_until = end;
                let key = &b[start..end];
                let before_ok = start == 0 || b"\"'{,&?; \t\r\n".contains(&b[start - 1]);
                if !before_ok {
                    continue;
                }
                let Some(value) = value_after_key(b, end) else {
                    continue;
                };
                if is_aws_secret_key_name(key) {
                    if is_aws_secret_value(value) {
                        out.add(SensitiveKind::AwsSecretKey);
                    }
                } else if is_password_key(key) && !value.is_empty() {
                    out.add(SensitiveKind::PasswordField);
                }
            }
        }

        pub fn scan_numbers(b: &[u8], out: &mut SensitiveCounts) {
            let mut i = 0;
            while i < b.len() {
                let c = b[i];
                let opens = c.is_ascii_digit()
                    || (matches!(c, b'+' | b'(') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
                let after_ok = i == 0 || {
                    let p = b[i - 1];
                    !(is_word(p) || p == b'.' || p == b'-' || p == b'+' || p == b'/' || p == b':')
                };
                if !(opens && after_ok) {
                    i += 1;
                    continue;
                }
                let (run, end) = read_digit_run(b, i);
                let next = b.get(end).copied();
                let ends_ok = next
                    .is_none_or(|n| !(is_word(n) || n == b'-' || n == b'/' || n == b':'))
                    && !(next == Some(b'.') && b.get(end + 1).is_some_and(u8::is_ascii_digit));
                if ends_ok && !run.too_long {
                    if let Some(k) = classify_digit_run(&run) {
                        out.add(k);
                    }
                }
                i = end.max(i + 1);
            }
        }
    }

    /// Numbers at every offset of the 16-byte blocks the number scan skips by, after a
    /// separator (counted) and glued to a word (not counted).
    #[test]
    fn numbers_are_found_at_every_block_offset() {
        for pad in 0..40 {
            for (sep, want) in [(" ", 1), (",", 1), ("x", 0), ("-", 0)] {
                let input = format!("{}{sep}4111 1111 1111 1111 tail", "a".repeat(pad));
                let (mut fast, mut slow) = (SensitiveCounts::default(), SensitiveCounts::default());
                scan_numbers(input.as_bytes(), &mut fast);
                oracle::scan_numbers(input.as_bytes(), &mut slow);
                assert_eq!(fast, slow, "input {input:?}");
                assert_eq!(fast.get(CardNumber), want, "input {input:?}");
            }
        }
    }

    /// The kinds asked for count exactly as in a full classification; skipped scans only
    /// leave out kinds nobody asked for.
    #[test]
    fn classify_wanted_counts_the_wanted_kinds_as_classify_does() {
        let input = format!(
            "{JWT} DE89370400440532013000 alice@example.com 4111 1111 1111 1111 \
             +14155552671 password=x ghp_{} 123-45-6789",
            "a1B2c3D4e5".repeat(4).get(..36).unwrap_or("")
        );
        let mut all = SensitiveCounts::default();
        classify(input.as_bytes(), &mut all);
        assert_eq!(all.iter().count(), 8, "{all:?}");
        let singles = SensitiveKind::ALL.map(|k| [k]);
        let sets: [&[SensitiveKind]; 4] = [
            &SensitiveKind::ALL,
            &[CardNumber, UsSsn, GithubToken, PasswordField],
            &[Jwt, StripeKey, AwsSecretKey],
            &[Iban, Email],
        ];
        for kinds in sets.into_iter().chain(singles.iter().map(|k| &k[..])) {
            let mut wanted = KindSet::default();
            for k in kinds {
                wanted.insert(*k);
            }
            let mut got = SensitiveCounts::default();
            classify_wanted(input.as_bytes(), wanted, &mut got);
            for k in kinds {
                assert_eq!(got.get(*k), all.get(*k), "{k:?} wanted as {kinds:?}");
            }
            if !wanted.contains(Jwt) {
                assert_eq!(got.get(Jwt), 0, "JWTs not decoded unless wanted");
            }
        }
    }

    /// Key words at every offset of the 16-position blocks the key-word scan skips by, and
    /// near the end of the input, where positions are confirmed one by one.
    #[test]
    fn key_words_are_found_at_every_block_offset() {
        for pad in 0..40 {
            for (key, want) in [
                ("PaSsWoRd=1", 1),
                ("pwd: 2", 1),
                ("SECRET=x", 1),
                ("pas=1", 0),
            ] {
                for tail in ["", " and more text after the key"] {
                    let input = format!("{} {key}{tail}", "a".repeat(pad));
                    let (mut fast, mut slow) =
                        (SensitiveCounts::default(), SensitiveCounts::default());
                    scan_keys(input.as_bytes(), &mut fast);
                    oracle::scan_keys(input.as_bytes(), &mut slow);
                    assert_eq!(fast, slow, "input {input:?}");
                    assert_eq!(fast.get(PasswordField), want, "input {input:?}");
                }
            }
        }
    }

    /// Pieces that put key words, separators and digit runs next to each other in every
    /// order: case variants, keys glued to words, numbers glued to letters and punctuation.
    const PIECES: [&str; 45] = [
        "pass",
        "PASS",
        "Pwd",
        "pwD",
        "SeCrEt",
        "secret",
        "password",
        "passwd",
        "newPassword",
        "client_secret",
        "aws_secret_access_key",
        "bypass",
        "compass",
        "p",
        "s",
        "P",
        "S",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "\"",
        "'",
        ":",
        "=",
        " ",
        "&",
        ",",
        "{",
        "\n",
        "_",
        "-",
        ".",
        "(",
        ")",
        "+",
        "/",
        "4111 1111 1111 1111",
        "415-555-2671",
        "123-45-6789",
        "+14155552671",
        "378282246310005",
        "7",
        // Just long enough and just too short to be read at all.
        "+14155552",
        "+1415555",
        "123456789",
        "12345678",
        "(415)555",
    ];

    fn pieces() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                3 => proptest::sample::select(PIECES.to_vec()).prop_map(|p| p.as_bytes().to_vec()),
                1 => proptest::collection::vec(any::<u8>(), 0..4),
            ],
            0..48,
        )
        .prop_map(|v| v.concat())
    }

    #[test]
    fn fast_scans_agree_with_their_oracles_on_the_fixtures() {
        let long_key = format!(
            "{}password=x {}pass=1 pwd=1",
            "k".repeat(70),
            "_".repeat(64)
        );
        let fixtures = [
            r#"{"username":"a","password":"hunter2","pin":1234,"pwd":1234}"#,
            "new_password=abc&confirmPassword=abc&passpass=1&secretsecret=2",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "cards 4111111111111111, 5555555555554444. (415) 555-2671 +1 (415) 555-2671",
            "ssn: 123-45-6789 id_4111111111111111 0.4111111111111111 1-415-555-2671",
            long_key.as_str(),
        ];
        for f in fixtures {
            let (mut fast, mut slow) = (SensitiveCounts::default(), SensitiveCounts::default());
            scan_keys(f.as_bytes(), &mut fast);
            scan_numbers(f.as_bytes(), &mut fast);
            oracle::scan_keys(f.as_bytes(), &mut slow);
            oracle::scan_numbers(f.as_bytes(), &mut slow);
            assert_eq!(fast, slow, "input {f:?}");
            assert!(!fast.is_empty(), "fixture finds nothing: {f:?}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut c = SensitiveCounts::default();
            classify(&bytes, &mut c);
            let total: u64 = c.iter().map(|(_, n)| u64::from(n)).sum();
            prop_assert!(total <= bytes.len() as u64);
        }

        #[test]
        fn fast_key_scan_counts_what_the_automaton_counts(b in pieces()) {
            let (mut fast, mut slow) = (SensitiveCounts::default(), SensitiveCounts::default());
            scan_keys(&b, &mut fast);
            oracle::scan_keys(&b, &mut slow);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn fast_number_scan_counts_what_the_byte_loop_counts(b in pieces()) {
            let (mut fast, mut slow) = (SensitiveCounts::default(), SensitiveCounts::default());
            scan_numbers(&b, &mut fast);
            oracle::scan_numbers(&b, &mut slow);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn every_cut_of_a_dense_input_is_safe(cut in 0usize..400, tail in 0usize..400) {
            let dense = format!(
                "{JWT} 4111 1111 1111 1111 DE89 3704 0044 0532 0130 00 +1 (415) 555-2671 \
                 a@b.co password=x -----BEGIN RSA PRIVATE KEY----- AKIAIOSFODNN7EXAMPLE \
                 aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY 123-45-6789"
            );
            let b = dense.as_bytes();
            let start = cut.min(b.len());
            let end = (start + tail).min(b.len());
            let mut c = SensitiveCounts::default();
            classify(&b[start..end], &mut c);
            prop_assert!(c.iter().all(|(_, n)| n <= 2));
        }
    }
}

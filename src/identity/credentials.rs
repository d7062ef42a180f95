//! Finding credentials in a request: the `Authorization` header, API-key headers, query
//! parameters and session cookies.
//!
//! These functions only locate and decode; they never keep what they find. Callers turn each
//! credential into a pseudonym at once.
//!
//! Invariants:
//! - No function here panics on any byte sequence, and each allocates at most the size of its
//!   input (a decoded query value, a decoded Basic credential).
//! - The Basic password is wiped from the decode buffer before the buffer is released.

use crate::transaction::Headers;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard base64 as Basic credentials use it, tolerant of missing padding and loose trailing
/// bits: a server that accepts such a header still learns the user.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// One `Authorization` header value, split by scheme (RFC 9110 section 11.6.2).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Authorization<'a> {
    /// `Bearer <token>` (RFC 6750), scheme matched case-insensitively.
    Bearer(&'a [u8]),
    /// `Basic <base64>` (RFC 7617).
    Basic(&'a [u8]),
    /// Another scheme (Digest, NTLM, AWS4-HMAC-SHA256, ...): not interpreted.
    Other,
    /// Empty, or a Bearer/Basic scheme with no credentials after it.
    Malformed,
}

pub(super) fn parse_authorization(value: &[u8]) -> Authorization<'_> {
    let value = value.trim_ascii();
    let split = value
        .iter()
        .position(|b| *b == b' ' || *b == b'\t')
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(split);
    let rest = rest.trim_ascii();
    if scheme.is_empty() {
        return Authorization::Malformed;
    }
    let wanted = scheme.eq_ignore_ascii_case(b"bearer") || scheme.eq_ignore_ascii_case(b"basic");
    if !wanted {
        return Authorization::Other;
    }
    if rest.is_empty() {
        return Authorization::Malformed;
    }
    if scheme.eq_ignore_ascii_case(b"bearer") {
        Authorization::Bearer(rest)
    } else {
        Authorization::Basic(rest)
    }
}

/// Decodes Basic credentials and hands only the user part to `use_user`. `None` when the value is
/// not base64 or has no `:`. The password never leaves this function: the decode buffer is
/// zeroed before it is dropped.
pub(super) fn with_basic_user<R>(b64: &[u8], use_user: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let mut decoded = B64.decode(b64).ok()?;
    let result = decoded
        .iter()
        .position(|b| *b == b':')
        .and_then(|colon| decoded.get(..colon))
        .map(use_user);
    decoded.fill(0);
    // Keep the wipe from being optimised away as a dead store before deallocation.
    std::hint::black_box(&mut decoded);
    result
}

/// The best-ranked candidate seen in one pass over a message's fields: the lowest index into
/// the configured names wins, then the earliest candidate. That is what looking for each name
/// in turn would find, in one pass instead of one per name (this runs on every request).
struct FirstByRank<'a, T> {
    names: &'a [String],
    best: Option<(usize, T)>,
}

impl<'a, T> FirstByRank<'a, T> {
    fn new(names: &'a [String]) -> Self {
        FirstByRank { names, best: None }
    }

    /// Offers `value` under field name `name`; only names ranked before the best so far can
    /// replace it.
    fn offer(&mut self, name: &[u8], value: T) {
        let limit = self
            .best
            .as_ref()
            .map_or(self.names.len(), |(rank, _)| *rank);
        let rank = self.names.get(..limit).and_then(|ahead| {
            ahead
                .iter()
                .position(|n| name.eq_ignore_ascii_case(n.as_bytes()))
        });
        if let Some(rank) = rank {
            self.best = Some((rank, value));
        }
    }

    /// Nothing can beat the best so far.
    fn settled(&self) -> bool {
        matches!(self.best, Some((0, _)))
    }

    fn into_best(self) -> Option<T> {
        self.best.map(|(_, v)| v)
    }
}

/// The value of the first configured session cookie present (configuration order wins over
/// header order), from all `Cookie` headers (RFC 6265 `name=value; name2=value2`). Names are
/// matched ASCII case-insensitively because frameworks differ in case (`JSESSIONID`,
/// `jsessionid`); surrounding double quotes are removed from values; empty values are skipped.
pub(super) fn find_cookie<'a>(headers: &'a Headers, names: &[String]) -> Option<&'a [u8]> {
    let mut found = FirstByRank::new(names);
    for pair in headers
        .get_all("cookie")
        .flat_map(|h| h.split(|b| *b == b';'))
    {
        let Some(eq) = pair.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (Some(name), Some(value)) = (pair.get(..eq), pair.get(eq + 1..)) else {
            continue;
        };
        let value = value.trim_ascii();
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        if !value.is_empty() {
            found.offer(name.trim_ascii(), value);
            if found.settled() {
                break;
            }
        }
    }
    found.into_best()
}

/// The first header among `names` (configuration order) with a non-empty value.
pub(super) fn find_header<'a>(headers: &'a Headers, names: &[String]) -> Option<&'a [u8]> {
    let mut found = FirstByRank::new(names);
    for (name, value) in headers.iter() {
        let value = value.trim_ascii();
        if !value.is_empty() {
            found.offer(name, value);
            if found.settled() {
                break;
            }
        }
    }
    found.into_best()
}

/// The percent-decoded value of the first configured query parameter present with a non-empty
/// value (configuration order wins). Names are decoded too and matched ASCII case-insensitively
/// (`apiKey` and `apikey` are the same convention). Works on origin-form and absolute-form
/// targets; the fragment, which clients should not send, is ignored if present.
pub(super) fn find_query_param(uri: &str, names: &[String]) -> Option<Vec<u8>> {
    let without_fragment = uri.split_once('#').map_or(uri, |(u, _)| u);
    let query = without_fragment.split_once('?')?.1;
    let mut name_buf = Vec::new();
    let mut found = FirstByRank::new(names);
    for pair in query.split('&') {
        // Decoding never empties a non-empty value (every input byte yields an output byte),
        // so empty values can be skipped before decoding.
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        if !value.is_empty() {
            percent_decode_into(name.as_bytes(), &mut name_buf);
            found.offer(&name_buf, value);
            if found.settled() {
                break;
            }
        }
    }
    found.into_best().map(|value| {
        let mut decoded = Vec::with_capacity(value.len());
        percent_decode_into(value.as_bytes(), &mut decoded);
        decoded
    })
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-style decoding: `%XX` to a byte and `+` to a space; a `%` not followed by two hex digits
/// is kept as is, as browsers and most servers do. Writes at most `input.len()` bytes.
fn percent_decode_into(input: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        let escaped = match (b, input.get(i + 1), input.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) => hex_value(h).zip(hex_value(l)).map(|(h, l)| (h << 4) | l),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_schemes() {
        use Authorization::*;
        let cases: &[(&[u8], Authorization)] = &[
            (b"Bearer abc.def", Bearer(b"abc.def")),
            (b"bearer   abc  ", Bearer(b"abc")),
            (b"BEARER\tabc", Bearer(b"abc")),
            (b"Basic dXNlcjpwdw==", Basic(b"dXNlcjpwdw==")),
            (b"Bearer", Malformed),
            (b"Bearer   ", Malformed),
            (b"", Malformed),
            (b"   ", Malformed),
            (b"Digest username=\"x\"", Other),
            (b"Bearerabc", Other),
            (b"token", Other),
        ];
        for (input, want) in cases {
            assert_eq!(
                &parse_authorization(input),
                want,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn basic_yields_only_the_user() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"YWxpY2U6czNjcjN0", Some(b"alice")),     // alice:s3cr3t
            (b"YWxpY2U6czNjcjN0MQ==", Some(b"alice")), // alice:s3cr3t1, padded
            (b"YWxpY2U6czNjcjN0MQ", Some(b"alice")),   // padding left out
            (b"YWxpY2U6czNjcjN0==", None),             // padding where none belongs
            (b"YWxpY2U6", Some(b"alice")),             // alice:
            (b"OnB3", Some(b"")),                      // :pw
            (b"YWxpY2U6YjpjOmQ=", Some(b"alice")),     // alice:b:c:d
            (b"YWxpY2U", None),                        // alice (no colon)
            (b"!!!", None),
            (b"", None),
        ];
        for (input, want) in cases {
            let got = with_basic_user(input, <[u8]>::to_vec);
            assert_eq!(got.as_deref(), *want, "{}", String::from_utf8_lossy(input));
        }
    }

    /// Cookie header values, and the session id expected from them.
    type CookieCase = (&'static [&'static [u8]], Option<&'static [u8]>);

    #[test]
    fn cookies_follow_configured_order() {
        let names: Vec<String> = ["session", "JSESSIONID"].map(String::from).into();
        let cases: &[CookieCase] = &[
            (&[b"a=1; session=abc; b=2"], Some(b"abc")),
            (&[b"JSESSIONID=j1; session=s1"], Some(b"s1")),
            (&[b"jsessionid=j1"], Some(b"j1")),
            (&[b"x=1", b"JSESSIONID=\"q\""], Some(b"q")),
            (&[b"session=; JSESSIONID=j"], Some(b"j")),
            (&[b"session"], None),
            (&[b"sessionx=1;=2;;"], None),
            (&[b" session = v "], Some(b"v")),
            (&[b"session=\""], Some(b"\"")),
        ];
        for (cookies, want) in cases {
            let mut h = Headers::new();
            for c in cookies.iter() {
                h.push(b"Cookie", c);
            }
            assert_eq!(find_cookie(&h, &names), *want, "{cookies:?}");
        }
    }

    #[test]
    fn query_params_are_decoded_and_ordered_by_configuration() {
        let names: Vec<String> = ["api_key", "token"].map(String::from).into();
        let cases: &[(&str, Option<&[u8]>)] = &[
            ("/a?api_key=k1", Some(b"k1")),
            ("/a?token=t&api_key=k", Some(b"k")),
            ("/a?api%5Fkey=k%2B1+2", Some(b"k+1 2")),
            ("/a?API_KEY=K", Some(b"K")),
            ("/a?api_key=&token=t", Some(b"t")),
            ("/a?api_key", None),
            ("/a?x=api_key", None),
            ("/a#?api_key=k", None),
            ("/a?api_key=k#frag", Some(b"k")),
            ("http://h/a?token=%zz%4", Some(b"%zz%4")),
            ("/a", None),
        ];
        for (uri, want) in cases {
            assert_eq!(find_query_param(uri, &names).as_deref(), *want, "{uri}");
        }
    }

    /// The one-pass searches against the obvious one-search-per-name ones, on small random
    /// fields drawn from few names so that repeats, case variants and empty values are common.
    #[test]
    fn one_pass_searches_match_per_name_search() {
        use proptest::prelude::*;
        let field = || "(a|A|b|key|Key|x)(=| = |)(|v|w|\"\"|\"q\"|%41|\\+)";
        proptest!(|(names in proptest::collection::vec("(a|b|key|KEY)", 0..4),
                    fields in proptest::collection::vec(field(), 0..6))| {
            let names: Vec<String> = names;
            let mut h = Headers::new();
            let mut cookie = Vec::new();
            for f in &fields {
                let (n, v) = f.split_once('=').unwrap_or((f, ""));
                h.push(n.trim().as_bytes(), v.as_bytes());
                cookie.push(f.as_str());
            }
            h.push(b"Cookie", cookie.join("; ").as_bytes());
            let query = format!("/p?{}", fields.join("&"));

            let want_header = names.iter().find_map(|n| {
                h.get_all(n).map(<[u8]>::trim_ascii).find(|v| !v.is_empty())
            });
            prop_assert_eq!(find_header(&h, &names), want_header);

            let want_cookie = names.iter().find_map(|wanted| {
                h.get_all("cookie").flat_map(|c| c.split(|b| *b == b';')).find_map(|pair| {
                    let eq = pair.iter().position(|b| *b == b'=')?;
                    let (name, value) = (pair.get(..eq)?, pair.get(eq + 1..)?);
                    if !name.trim_ascii().eq_ignore_ascii_case(wanted.as_bytes()) {
                        return None;
                    }
                    let value = value.trim_ascii();
                    let value = value
                        .strip_prefix(b"\"")
                        .and_then(|v| v.strip_suffix(b"\""))
                        .unwrap_or(value);
                    (!value.is_empty()).then_some(value)
                })
            });
            prop_assert_eq!(find_cookie(&h, &names), want_cookie);

            let mut name_buf = Vec::new();
            let want_query = names.iter().find_map(|wanted| {
                query.split_once('?')?.1.split('&').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    percent_decode_into(name.as_bytes(), &mut name_buf);
                    if !name_buf.eq_ignore_ascii_case(wanted.as_bytes()) {
                        return None;
                    }
                    let mut decoded = Vec::new();
                    percent_decode_into(value.as_bytes(), &mut decoded);
                    (!decoded.is_empty()).then_some(decoded)
                })
            });
            prop_assert_eq!(find_query_param(&query, &names), want_query);
        });
    }

    #[test]
    fn headers_first_non_empty_in_configured_order() {
        let names: Vec<String> = ["x-api-key", "api-key"].map(String::from).into();
        let mut h = Headers::new();
        h.push(b"Api-Key", b"second");
        h.push(b"X-API-Key", b"  ");
        assert_eq!(find_header(&h, &names), Some(&b"second"[..]));
        h.push(b"x-api-key", b"first");
        assert_eq!(find_header(&h, &names), Some(&b"first"[..]));
    }
}

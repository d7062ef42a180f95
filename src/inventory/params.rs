//! Parameters of a concrete request: the values a route template's placeholders stand for
//! (`/users/{id}` on `/users/42` gives `id = 42`), and the query string's pairs.
//!
//! These are what per-endpoint profiles learn shapes from and what object-level authorisation
//! checks (BOLA) count per caller. Borrowed slices where possible; bounded counts.

/// Query pairs kept per request; the rest are counted by the caller as dropped.
pub const MAX_QUERY_PARAMS: usize = 64;

/// Values of the placeholders of `template` in `path` (query and fragment ignored), in order.
/// Empty when the path does not have the template's shape. A `{rest}`-style placeholder in the
/// last position takes the remaining segments.
pub fn path_params<'t, 'p>(template: &'t str, path: &'p str) -> Vec<(&'t str, &'p str)> {
    // Only placeholders yield values: a template without one yields none whatever the path,
    // and most templates are all literals, so skip matching them (this runs per request).
    if !template.contains('{') {
        return Vec::new();
    }
    let path = path
        .get(..memchr::memchr2(b'?', b'#', path.as_bytes()).unwrap_or(path.len()))
        .unwrap_or(path);
    let mut tsegs = template.split('/').filter(|s| !s.is_empty()).peekable();
    let mut out = Vec::new();
    let mut rest = path.trim_start_matches('/');
    while let Some(t) = tsegs.next() {
        let last = tsegs.peek().is_none();
        let name = t.strip_prefix('{').and_then(|t| t.strip_suffix('}'));
        // Repeated slashes do not make empty segments (the templater drops them too).
        rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return Vec::new();
        }
        let (seg, tail) = match rest.find('/') {
            Some(j) if !(last && t == "{rest}") => rest.split_at(j),
            _ => (rest, ""),
        };
        match name {
            Some(name) => out.push((name, seg)),
            None if t != seg => return Vec::new(),
            None => {}
        }
        rest = tail;
    }
    if !rest.trim_matches('/').is_empty() {
        return Vec::new();
    }
    out
}

/// Percent-decodes `s` (and `+` as space, as in forms); invalid escapes are kept as sent.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decoded `(name, value)` pairs of the query string of `uri`, at most [`MAX_QUERY_PARAMS`];
/// the second value is how many pairs were beyond the cap.
pub fn query_params(uri: &str) -> (Vec<(String, String)>, usize) {
    let Some((_, q)) = uri.split_once('?') else {
        return (Vec::new(), 0);
    };
    let q = q.split('#').next().unwrap_or("");
    let mut out = Vec::new();
    let mut dropped = 0;
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        if out.len() >= MAX_QUERY_PARAMS {
            dropped += 1;
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((percent_decode(k), percent_decode(v)));
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    #[test]
    fn placeholders_take_their_segments() {
        let cases: &[Case] = &[
            ("/users/{id}", "/users/42", &[("id", "42")]),
            (
                "/users/{id}/orders/{uuid}",
                "/users/7/orders/ab-cd?x=1",
                &[("id", "7"), ("uuid", "ab-cd")],
            ),
            ("/users/{id}", "//users//42/", &[("id", "42")]),
            (
                "/files/{rest}",
                "/files/a/b/c.txt",
                &[("rest", "a/b/c.txt")],
            ),
            ("/health", "/health", &[]),
        ];
        for (t, p, want) in cases {
            assert_eq!(path_params(t, p), want.to_vec(), "{t} on {p}");
        }
    }

    /// The matcher as first written (split into a Vec, no shortcut for literal templates):
    /// the oracle the faster one must agree with.
    fn path_params_oracle<'t, 'p>(template: &'t str, path: &'p str) -> Vec<(&'t str, &'p str)> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let tsegs: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
        let mut out = Vec::new();
        let mut rest = path.trim_start_matches('/');
        for (i, t) in tsegs.iter().enumerate() {
            let last = i + 1 == tsegs.len();
            let is_param = t.starts_with('{') && t.ends_with('}');
            rest = rest.trim_start_matches('/');
            if rest.is_empty() {
                return Vec::new();
            }
            let (seg, tail) = match rest.find('/') {
                Some(j) if !(last && is_param && *t == "{rest}") => (&rest[..j], &rest[j..]),
                _ => (rest, ""),
            };
            if is_param {
                out.push((&t[1..t.len() - 1], seg));
            } else if *t != seg {
                return Vec::new();
            }
            rest = tail;
        }
        if !rest.trim_matches('/').is_empty() {
            return Vec::new();
        }
        out
    }

    /// Templates and paths over a small alphabet (slashes, braces, `?`, `#`, `rest`) so that
    /// matches, near misses and odd placeholders all occur.
    #[test]
    fn matcher_agrees_with_the_oracle() {
        use proptest::prelude::*;
        let piece = prop::sample::select(vec![
            "/", "//", "a", "b", "{id}", "{rest}", "{}", "{", "}", "?q=1", "#f", "é",
        ]);
        let text = proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat());
        proptest!(|(t in text.clone(), p in text)| {
            prop_assert_eq!(path_params(&t, &p), path_params_oracle(&t, &p));
        });
        for (t, p) in [
            ("/{id}/b", "/x/b"),
            ("/a/{rest}", "/a/b/c?x"),
            ("/{}", "/z"),
            ("/a", "/a"),
        ] {
            assert_eq!(path_params(t, p), path_params_oracle(t, p), "{t} on {p}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_give_nothing() {
        for (t, p) in [
            ("/users/{id}", "/users"),
            ("/users/{id}", "/users/1/2"),
            ("/users/{id}", "/accounts/1"),
            ("/a/{x}/c", "/a/b/d"),
        ] {
            assert!(path_params(t, p).is_empty(), "{t} on {p}");
        }
    }

    #[test]
    fn query_pairs_are_decoded_and_capped() {
        let (q, dropped) =
            query_params("/s?q=waterproof+boots&limit=10&empty=&flag&pct=%41%2x#frag");
        assert_eq!(
            q,
            vec![
                ("q".into(), "waterproof boots".into()),
                ("limit".into(), "10".into()),
                ("empty".into(), "".into()),
                ("flag".into(), "".into()),
                ("pct".into(), "A%2x".into()),
            ]
        );
        assert_eq!(dropped, 0);
        let many = format!(
            "/x?{}",
            (0..100)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        );
        let (q, dropped) = query_params(&many);
        assert_eq!(
            (q.len(), dropped),
            (MAX_QUERY_PARAMS, 100 - MAX_QUERY_PARAMS)
        );
        assert_eq!(query_params("/plain"), (vec![], 0));
    }

    #[test]
    fn percent_decoding_edges() {
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%FF"), "\u{FFFD}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_inputs_never_panic(t in "[/{}a-z]{0,30}", p in ".{0,60}") {
            let _ = path_params(&t, &p);
            let _ = query_params(&p);
        }
    }
}

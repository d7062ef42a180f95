//! The structure of a JSON document read straight from its bytes, without building it.
//!
//! Several detectors only need a document's shape (its key paths) or a handful of scalar
//! values (object ids), and most bodies they look at are unremarkable. Parsing each into a
//! `serde_json::Value` allocates a node per key and value; this reader instead yields
//! [`Event`]s that borrow from the input, skips string contents with `memchr`, and allocates
//! nothing.
//!
//! It is a structural reader, not a validator: it tracks containers and tells keys from string
//! values, but accepts what a strict parser would reject between tokens (a missing `:` or `,`,
//! a bare word). Callers that act on a document only when it is whole check
//! [`Reader::finished`] after the last event, which holds when exactly one top-level container
//! was opened and closed and nothing but whitespace follows. Nesting deeper than
//! [`MAX_DEPTH`] or a close that does not match its open ends the reading with an error.
//! Strings are returned as written (escapes included), with a flag saying whether they contain
//! any escape.

/// Containers open at once, at most (the reader keeps them in one 64-bit stack).
pub const MAX_DEPTH: usize = 64;

/// One token of the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `{` (object) or `[` (array).
    Open { object: bool },
    /// `}` or `]`.
    Close,
    /// An object key: the bytes between its quotes, as written.
    Key { raw: &'a [u8], escaped: bool },
    /// A string value: the bytes between its quotes, as written.
    Str { raw: &'a [u8], escaped: bool },
    /// A number, `true`, `false` or `null`, as written.
    Scalar(&'a [u8]),
}

/// Why the reading stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawJsonError {
    /// More than [`MAX_DEPTH`] containers open at once.
    TooDeep,
    /// A close without its open, or of the other kind (`{ ]`).
    Unbalanced,
    /// A string without its closing quote.
    UnterminatedString,
    /// A second top-level value after the first container closed.
    TrailingData,
}

impl RawJsonError {
    pub fn name(self) -> &'static str {
        match self {
            RawJsonError::TooDeep => "too_deep",
            RawJsonError::Unbalanced => "unbalanced",
            RawJsonError::UnterminatedString => "unterminated_string",
            RawJsonError::TrailingData => "trailing_data",
        }
    }
}

/// Reads the events of one document; see the module documentation.
pub struct Reader<'a> {
    raw: &'a [u8],
    i: usize,
    /// Bit `d` set: the container at depth `d` is an object.
    kinds: u64,
    depth: usize,
    /// The next string in the current object is a key.
    expect_key: bool,
    /// Some token was read.
    started: bool,
    /// The first token was a container.
    opened: bool,
}

impl<'a> Reader<'a> {
    pub fn new(raw: &'a [u8]) -> Reader<'a> {
        Reader {
            raw,
            i: 0,
            kinds: 0,
            depth: 0,
            expect_key: false,
            started: false,
            opened: false,
        }
    }

    /// Containers open now: 1 inside the top-level container.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Whether the document read so far is one whole top-level container (meaningful once
    /// [`Reader::next_event`] returned `Ok(None)`).
    pub fn finished(&self) -> bool {
        self.opened && self.depth == 0
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.kinds & (1 << (self.depth - 1)) != 0
    }

    /// The next event, `Ok(None)` at the end of the input.
    // Inlined into the few loops that read a document, so an event is matched where it is
    // made instead of passing through memory.
    #[inline]
    pub fn next_event(&mut self) -> Result<Option<Event<'a>>, RawJsonError> {
        while let Some(&c) = self.raw.get(self.i) {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b':' => self.i += 1,
                b',' => {
                    self.expect_key = self.in_object();
                    self.i += 1;
                }
                b'{' | b'[' => {
                    if self.started && self.depth == 0 {
                        return Err(RawJsonError::TrailingData);
                    }
                    if self.depth >= MAX_DEPTH {
                        return Err(RawJsonError::TooDeep);
                    }
                    let object = c == b'{';
                    if object {
                        self.kinds |= 1 << self.depth;
                    } else {
                        self.kinds &= !(1 << self.depth);
                    }
                    self.depth += 1;
                    self.opened |= !self.started;
                    self.started = true;
                    self.expect_key = object;
                    self.i += 1;
                    return Ok(Some(Event::Open { object }));
                }
                b'}' | b']' => {
                    if self.depth == 0 || self.in_object() != (c == b'}') {
                        return Err(RawJsonError::Unbalanced);
                    }
                    self.depth -= 1;
                    self.expect_key = false;
                    self.i += 1;
                    return Ok(Some(Event::Close));
                }
                b'"' => {
                    if self.started && self.depth == 0 {
                        return Err(RawJsonError::TrailingData);
                    }
                    let start = self.i + 1;
                    let (end, escaped) = string_end(self.raw, start)?;
                    let raw = self.raw.get(start..end).unwrap_or(&[]);
                    self.i = end + 1;
                    self.started = true;
                    if self.expect_key {
                        self.expect_key = false;
                        return Ok(Some(Event::Key { raw, escaped }));
                    }
                    return Ok(Some(Event::Str { raw, escaped }));
                }
                _ => {
                    if self.started && self.depth == 0 {
                        return Err(RawJsonError::TrailingData);
                    }
                    let start = self.i;
                    let len = self
                        .raw
                        .get(start..)
                        .unwrap_or(&[])
                        .iter()
                        .position(|&b| is_delimiter(b))
                        .unwrap_or(self.raw.len() - start);
                    self.i = start + len;
                    self.started = true;
                    self.expect_key = false;
                    return Ok(Some(Event::Scalar(
                        self.raw.get(start..start + len).unwrap_or(&[]),
                    )));
                }
            }
        }
        Ok(None)
    }
}

fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'\n' | b':' | b',' | b'{' | b'}' | b'[' | b']' | b'"'
    )
}

/// The index of the first `"` or `\` among the first 16 bytes of `rest`, read as two 64-bit
/// words (most keys and values are that short, and the vectorised search costs a call and a
/// set-up); `None` if there is none there, or fewer than 8 bytes to read.
#[inline]
fn quote_or_backslash_in_words(rest: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Bytes of `x` that are zero have their top bit set; a byte above a zero one may be
    // flagged too (the borrow), so only the lowest flag is trusted: on a little-endian read it
    // is the first such byte in memory order.
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    for (i, chunk) in rest.chunks_exact(8).take(2).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = zero(w ^ (LO * u64::from(b'"'))) | zero(w ^ (LO * u64::from(b'\\')));
        if hits != 0 {
            return Some(i * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    None
}

/// The index of the quote closing a string whose contents start at `start`, and whether the
/// string holds an escape.
#[inline]
fn string_end(raw: &[u8], start: usize) -> Result<(usize, bool), RawJsonError> {
    let mut j = start;
    let mut escaped = false;
    loop {
        let rest = raw.get(j..).unwrap_or(&[]);
        let found = match quote_or_backslash_in_words(rest) {
            Some(k) => Some(k),
            None => {
                // The words read hold neither byte: search on from where they end.
                let skip = (rest.len() / 8).min(2) * 8;
                memchr::memchr2(b'"', b'\\', rest.get(skip..).unwrap_or(&[])).map(|k| k + skip)
            }
        };
        match found {
            None => return Err(RawJsonError::UnterminatedString),
            Some(k) if rest.get(k) == Some(&b'"') => return Ok((j + k, escaped)),
            Some(k) => {
                // A backslash: the byte after it is escaped, whatever it is.
                escaped = true;
                j += k + 2;
            }
        }
    }
}

/// The text of a string as written between quotes, unescaped; `None` when its escapes are
/// invalid. Allocates only for strings holding an escape.
pub fn unescape(raw: &[u8], escaped: bool) -> Option<std::borrow::Cow<'_, str>> {
    if !escaped {
        return std::str::from_utf8(raw)
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(std::borrow::Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn events(raw: &[u8]) -> Result<(Vec<Event<'_>>, bool), RawJsonError> {
        let mut r = Reader::new(raw);
        let mut out = Vec::new();
        while let Some(e) = r.next_event()? {
            out.push(e);
        }
        Ok((out, r.finished()))
    }

    #[test]
    fn reads_keys_values_and_containers() {
        let doc = br#" {"a": 1, "b\"c": ["x", true, {"id": -2.5e3}], "d": null} "#;
        let (ev, whole) = events(doc).unwrap();
        assert!(whole);
        let key = |s: &'static [u8], escaped| Event::Key { raw: s, escaped };
        assert_eq!(
            ev,
            vec![
                Event::Open { object: true },
                key(b"a", false),
                Event::Scalar(b"1"),
                key(br#"b\"c"#, true),
                Event::Open { object: false },
                Event::Str {
                    raw: b"x",
                    escaped: false
                },
                Event::Scalar(b"true"),
                Event::Open { object: true },
                key(b"id", false),
                Event::Scalar(b"-2.5e3"),
                Event::Close,
                Event::Close,
                key(b"d", false),
                Event::Scalar(b"null"),
                Event::Close,
            ]
        );
    }

    #[test]
    fn truncated_and_malformed_documents() {
        // Cut by a capture gap: the events so far come out, but the document is not whole.
        let (_, whole) = events(br#"{"a": [1, 2"#).unwrap();
        assert!(!whole);
        assert_eq!(
            events(br#"{"a": "no end"#).unwrap_err(),
            RawJsonError::UnterminatedString
        );
        assert_eq!(events(b"{]").unwrap_err(), RawJsonError::Unbalanced);
        assert_eq!(events(b"}").unwrap_err(), RawJsonError::Unbalanced);
        assert_eq!(events(b"{} {}").unwrap_err(), RawJsonError::TrailingData);
        assert_eq!(events(b"[] x").unwrap_err(), RawJsonError::TrailingData);
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(events(deep.as_bytes()).unwrap_err(), RawJsonError::TooDeep);
        let ok_deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(events(ok_deep.as_bytes()).unwrap().1);
        // A scalar alone is not a container document.
        assert!(!events(b"").unwrap().1);
        assert!(!events(b"123").unwrap().1);
        assert!(!events(br#""s""#).unwrap().1);
    }

    #[test]
    fn unescapes_like_serde() {
        assert_eq!(unescape(b"plain", false).as_deref(), Some("plain"));
        assert_eq!(unescape(br"a\u0041\n", true).as_deref(), Some("aA\n"));
        assert_eq!(unescape(br"bad\q", true), None);
    }

    /// Rebuilds a `Value` from the events (numbers via serde, strings unescaped).
    fn rebuild(ev: &[Event<'_>], i: &mut usize) -> Value {
        let e = ev[*i];
        *i += 1;
        match e {
            Event::Open { object: true } => {
                let mut m = serde_json::Map::new();
                while ev[*i] != Event::Close {
                    let Event::Key { raw, escaped } = ev[*i] else {
                        panic!("expected a key at {i}");
                    };
                    *i += 1;
                    let k = unescape(raw, escaped).unwrap().into_owned();
                    let v = rebuild(ev, i);
                    m.insert(k, v);
                }
                *i += 1;
                Value::Object(m)
            }
            Event::Open { object: false } => {
                let mut a = Vec::new();
                while ev[*i] != Event::Close {
                    a.push(rebuild(ev, i));
                }
                *i += 1;
                Value::Array(a)
            }
            Event::Str { raw, escaped } => Value::String(unescape(raw, escaped).unwrap().into()),
            Event::Scalar(s) => serde_json::from_slice(s).unwrap(),
            e => panic!("unexpected {e:?}"),
        }
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Every serialised container document reads back to the value serde reads from it,
        /// compact or pretty-printed.
        #[test]
        fn round_trips_serde_documents(v in json(), pretty in any::<bool>()) {
            prop_assume!(v.is_object() || v.is_array());
            let text = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            let (ev, whole) = events(&text).unwrap();
            prop_assert!(whole);
            let mut i = 0;
            // Against serde's own reading of the text (its float parsing is not exact).
            let parsed: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(rebuild(&ev, &mut i), parsed);
            prop_assert_eq!(i, ev.len());
        }

        /// The end of a string is found as a byte-by-byte scan finds it, wherever the quote
        /// and the escapes fall relative to the words read at once.
        #[test]
        fn string_ends_match_a_byte_by_byte_scan(
            raw in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'"'), Just(b'\\'), Just(0u8), Just(1u8), Just(b'"' + 1)], 0..48),
            start in 0usize..20,
        ) {
            let naive = || {
                let (mut j, mut escaped) = (start, false);
                while let Some(&c) = raw.get(j) {
                    match c {
                        b'"' => return Ok((j, escaped)),
                        b'\\' => {
                            escaped = true;
                            j += 2;
                        }
                        _ => j += 1,
                    }
                }
                Err(RawJsonError::UnterminatedString)
            };
            prop_assert_eq!(string_end(&raw, start), naive());
        }

        /// Arbitrary bytes never panic the reader and never make it loop.
        #[test]
        fn arbitrary_bytes_are_safe(raw in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut r = Reader::new(&raw);
            let mut n = 0;
            while let Ok(Some(_)) = r.next_event() {
                n += 1;
                prop_assert!(n <= raw.len());
            }
        }
    }
}

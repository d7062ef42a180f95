//! The skeleton of a JSON response body: a hash of its set of key paths (`$.a`,
//! `$.items[].b`), read in one pass over the raw bytes, for the excessive-data memo.
//!
//! Most 2xx bodies only need their skeleton (the memo then says they walk clean), so this is
//! a scanner dedicated to it rather than a general reader: it keeps the key bytes, skips string
//! values to their closing quote and scalars to the next delimiter, and decodes nothing.
//!
//! Invariant: [`skeleton`] accepts and rejects exactly what a skeleton built from
//! [`rawjson::Reader`](crate::detect::rawjson::Reader) events does, and gives the same hash
//! (the tests hold it to that reading, kept there as the oracle): the same structural leniency
//! between tokens, the same errors (too deep, unbalanced, unterminated string, trailing data)
//! and the same whole-document rule. Bounded: [`MAX_SKELETON_DEPTH`] containers open at once
//! (a fixed stack), [`MAX_SKELETON_KEYS`] keys read; nothing is allocated beyond `scratch`,
//! which holds at most one hash per key read.

/// Key paths read from one body for its skeleton; a larger body is simply walked.
pub(super) const MAX_SKELETON_KEYS: usize = 4096;
/// Nesting read for a skeleton (the structural reader's own limit); deeper bodies are simply
/// walked.
pub(super) const MAX_SKELETON_DEPTH: usize = 64;

/// Step of an array in a path hash (`[]`).
const ARRAY: u64 = 0x9e37_79b9_7f4a_7c15;

/// Byte classes outside strings, as the structural reader splits tokens.
const SCALAR: u8 = 0;
/// Whitespace and `:` (the reader does not check where colons go).
const SPACE: u8 = 1;
const COMMA: u8 = 2;
const OPEN_OBJECT: u8 = 3;
const OPEN_ARRAY: u8 = 4;
const CLOSE_OBJECT: u8 = 5;
const CLOSE_ARRAY: u8 = 6;
const QUOTE: u8 = 7;

/// The class of every byte: one load per byte instead of a chain of compares (scalars, which
/// end at any delimiter, are most of what is skipped outside strings).
static CLASS: [u8; 256] = {
    let mut t = [SCALAR; 256];
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b':' as usize] = SPACE;
    t[b',' as usize] = COMMA;
    t[b'{' as usize] = OPEN_OBJECT;
    t[b'[' as usize] = OPEN_ARRAY;
    t[b'}' as usize] = CLOSE_OBJECT;
    t[b']' as usize] = CLOSE_ARRAY;
    t[b'"' as usize] = QUOTE;
    t
};

#[inline(always)]
fn class(b: u8) -> u8 {
    // A u8 always indexes a 256-entry table; the fallback is never taken.
    CLASS.get(usize::from(b)).copied().unwrap_or(SCALAR)
}

/// The path hash `h` extended by one key: eight bytes per multiply (keys are short, and a
/// byte-at-a-time hash was a fifth of the skeleton's cost), the length folded in so that zero
/// padding cannot alias.
#[inline]
fn mix(h: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |x: u64, w: u64| {
        let y = (x ^ w).wrapping_mul(K);
        y ^ (y >> 32)
    };
    let mut x = step(h, 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        x = step(x, u64::from_le_bytes(word));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        if let Some(w) = word.get_mut(..tail.len()) {
            w.copy_from_slice(tail);
        }
        x = step(x, u64::from_le_bytes(word));
    }
    let x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 29)
}

/// The index of the first `"` or `\` in the first 16 bytes of `rest`, read as two words: most
/// keys and values are that short, and the vectorised search costs a call and a set-up.
/// `None` when neither is there (or fewer than 8 bytes remain to read as a word).
#[inline(always)]
fn quote_or_backslash_near(rest: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // Flags the zero bytes of `x`; a borrow can also flag a byte above a zero one, so only the
    // lowest flag (the first byte in memory, read little-endian) is used.
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & TOPS;
    let mut at = 0;
    for chunk in rest.chunks_exact(8).take(2) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let hits = zeros(w ^ (ONES * u64::from(b'"'))) | zeros(w ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    None
}

/// The index of the quote closing a string whose contents start at `start`; `None` when the
/// input ends first. A backslash escapes the byte after it, whatever that is.
#[inline(always)]
fn string_end(raw: &[u8], start: usize) -> Option<usize> {
    let mut j = start;
    loop {
        let rest = raw.get(j..)?;
        let k = match quote_or_backslash_near(rest) {
            Some(k) => k,
            None => {
                let skip = (rest.len() / 8).min(2) * 8;
                memchr::memchr2(b'"', b'\\', rest.get(skip..)?)? + skip
            }
        };
        if rest.get(k) == Some(&b'"') {
            return Some(j + k);
        }
        j = j.checked_add(k + 2)?;
    }
}

/// A hash of the set of key paths of a JSON document, read from its raw bytes without building
/// it. `None` when the bytes are not one whole JSON object or array (as the structural reader
/// judges it), or exceed [`MAX_SKELETON_DEPTH`] or [`MAX_SKELETON_KEYS`]: the caller then parses
/// and walks as usual. Key strings are hashed as written (escapes included), so two spellings
/// of one key only cost a memo miss.
pub(super) fn skeleton(raw: &[u8], scratch: &mut Vec<u64>) -> Option<u64> {
    scratch.clear();
    // Filler before the document; its first token must open a container, or the reader would
    // not call it whole (a leading scalar or string) or fail (a close).
    let mut i = raw
        .iter()
        .position(|&b| !matches!(class(b), SPACE | COMMA))?;
    let object = match raw.get(i) {
        Some(b'{') => true,
        Some(b'[') => false,
        _ => return None,
    };
    i += 1;
    // The innermost open container: whether it is an object, its path hash (with the `[]`
    // step for an array), and for an object the path hash of its last key (0 before any: a
    // container directly inside an object without a key hangs there, as in the reader).
    let mut cur = if object {
        (true, 1u64, 0u64)
    } else {
        (false, mix(1, &ARRAY.to_le_bytes()), 0)
    };
    // The containers around `cur`, outermost first: `depth - 1` of them.
    let mut outer = [(false, 0u64, 0u64); MAX_SKELETON_DEPTH];
    let mut depth = 1usize;
    let mut expect_key = object;
    // The elements of a list repeat the same key paths: a path equal to the last one kept in
    // its slot here is not kept again, so the sort below sees about the distinct paths (the
    // set is the same: the sort and dedup still remove any repeat this misses).
    let mut recent = [0u64; 64];
    // Key paths read, kept or not: the limit counts them all.
    let mut keys = 0usize;
    loop {
        let b = *raw.get(i)?;
        i += 1;
        match class(b) {
            SPACE => {}
            COMMA => expect_key = cur.0,
            c @ (OPEN_OBJECT | OPEN_ARRAY) => {
                let path = if cur.0 { cur.2 } else { cur.1 };
                *outer.get_mut(depth - 1)? = cur;
                depth += 1;
                if depth > MAX_SKELETON_DEPTH {
                    return None;
                }
                let object = c == OPEN_OBJECT;
                cur = if object {
                    (true, path, 0)
                } else {
                    (false, mix(path, &ARRAY.to_le_bytes()), 0)
                };
                expect_key = object;
            }
            c @ (CLOSE_OBJECT | CLOSE_ARRAY) => {
                if cur.0 != (c == CLOSE_OBJECT) {
                    return None;
                }
                depth -= 1;
                if depth == 0 {
                    break;
                }
                cur = *outer.get(depth - 1)?;
                expect_key = false;
            }
            QUOTE => {
                let end = string_end(raw, i)?;
                if expect_key {
                    expect_key = false;
                    let path = mix(cur.1, raw.get(i..end)?);
                    cur.2 = path;
                    if keys >= MAX_SKELETON_KEYS {
                        return None;
                    }
                    keys += 1;
                    let keep = match recent.get_mut((path % 64) as usize) {
                        // 0 marks an empty slot, so a path hashing to 0 is always kept.
                        Some(last) if *last == path && path != 0 => false,
                        Some(last) => {
                            *last = path;
                            true
                        }
                        None => true,
                    };
                    if keep {
                        scratch.push(path);
                    }
                }
                i = end + 1;
            }
            _ => {
                // A number, a literal or any other run up to the next delimiter.
                while raw.get(i).is_some_and(|&b| class(b) == SCALAR) {
                    i += 1;
                }
                expect_key = false;
            }
        }
    }
    // After the document only filler may follow; anything else is a second value.
    if !raw
        .get(i..)?
        .iter()
        .all(|&b| matches!(class(b), SPACE | COMMA))
    {
        return None;
    }
    scratch.sort_unstable();
    scratch.dedup();
    Some(scratch.iter().fold(0x8422_2325_cbf2_9ce4, |h, p| {
        (h ^ p).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The skeleton as built from the structural reader's events: the oracle the dedicated
    /// scanner must agree with on every input.
    fn oracle(raw: &[u8]) -> Option<u64> {
        use crate::detect::rawjson::{Event, Reader};
        let mut paths = Vec::new();
        let mut stack = [(false, 0u64, 0u64); MAX_SKELETON_DEPTH];
        let mut keys = 0usize;
        let mut reader = Reader::new(raw);
        while let Some(event) = reader.next_event().ok()? {
            let depth = reader.depth();
            match event {
                Event::Open { object } => {
                    if depth > MAX_SKELETON_DEPTH {
                        return None;
                    }
                    let path = match depth.checked_sub(2).and_then(|d| stack.get(d)) {
                        None => 1,
                        Some(&(true, _, value)) => value,
                        Some(&(false, arr, _)) => arr,
                    };
                    let slot = stack.get_mut(depth - 1)?;
                    *slot = if object {
                        (true, path, 0)
                    } else {
                        (false, mix(path, &ARRAY.to_le_bytes()), 0)
                    };
                }
                Event::Key { raw: key, .. } => {
                    let top = stack.get_mut(depth.checked_sub(1)?)?;
                    let path = mix(top.1, key);
                    top.2 = path;
                    if keys >= MAX_SKELETON_KEYS {
                        return None;
                    }
                    keys += 1;
                    paths.push(path);
                }
                Event::Close | Event::Str { .. } | Event::Scalar(_) => {}
            }
        }
        if !reader.finished() {
            return None;
        }
        paths.sort_unstable();
        paths.dedup();
        Some(paths.iter().fold(0x8422_2325_cbf2_9ce4, |h, p| {
            (h ^ p).wrapping_mul(0x0100_0000_01b3).rotate_left(17)
        }))
    }

    fn sk(s: &str) -> Option<u64> {
        skeleton(s.as_bytes(), &mut Vec::new())
    }

    /// Each input through the scanner and the oracle: the same answer, and `expect_some` says
    /// whether it is a skeleton at all.
    fn check(cases: &[(&str, bool)]) {
        for &(s, expect_some) in cases {
            let got = sk(s);
            assert_eq!(got, oracle(s.as_bytes()), "{s:?}");
            assert_eq!(got.is_some(), expect_some, "{s:?}");
        }
    }

    #[test]
    fn whole_documents_and_the_readers_leniency() {
        check(&[
            (r#"{"a":1}"#, true),
            (r#"  ,: [ {"a" : "x"} ] ,:  "#, true),
            ("[]", true),
            ("{}", true),
            // No `:` or `,` between tokens, bare words: structural, not validated.
            (r#"{"a" 1 "b" 2}"#, true),
            (r#"{"a":tru,"b":nul}"#, true),
            (r#"{"a":1 "b":2}"#, true),
            // A container where a key belongs hangs under the last key (or none).
            (r#"{{"a":1}}"#, true),
            (r#"{"k":1,{"a":1}}"#, true),
            (r#"{"k":1 x "s" {"a":1}}"#, true),
            // Escapes in keys and values; a backslash outside a string is scalar text.
            (r#"{"a\"b":"c\\","d":"\"}"}"#, true),
            (r#"{"a":\x}"#, true),
            ("{\"caf\u{e9}\":\"\u{1f600}\"}", true),
            ("", false),
            ("   ", false),
            ("1", false),
            ("\"s\"", false),
            ("x {}", false),
            ("}", false),
            ("{", false),
            ("{]", false),
            ("[}", false),
            (r#"{"a":1}}"#, false),
            (r#"{"a":1} x"#, false),
            (r#"{"a":1} "s""#, false),
            (r#"{"a":1}{"b":2}"#, false),
            (r#"{"a":"unterminated}"#, false),
            (r#"{"a":"ends in a backslash\"#, false),
            (r#"{"a":"\"#, false),
        ]);
    }

    #[test]
    fn depth_and_key_limits() {
        let nest = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(sk(&nest(MAX_SKELETON_DEPTH)).is_some());
        assert_eq!(sk(&nest(MAX_SKELETON_DEPTH + 1)), None);
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        assert_eq!(
            sk(&objects(MAX_SKELETON_DEPTH)),
            oracle(objects(64).as_bytes())
        );
        assert!(sk(&objects(MAX_SKELETON_DEPTH)).is_some());
        assert_eq!(sk(&objects(MAX_SKELETON_DEPTH + 1)), None);
        // The key limit counts every key read, repeated or not.
        let many = |n: usize| format!("[{}]", vec![r#"{"a":1}"#; n].join(","));
        assert!(sk(&many(MAX_SKELETON_KEYS)).is_some());
        assert_eq!(sk(&many(MAX_SKELETON_KEYS + 1)), None);
        assert_eq!(oracle(many(MAX_SKELETON_KEYS + 1).as_bytes()), None);
    }

    #[test]
    fn the_same_key_paths_give_the_same_skeleton_whatever_the_values() {
        let a = sk(r#"{"id":1,"items":[{"sku":"a","qty":2},{"sku":"b","qty":3}],"next":null}"#);
        let b = sk(r#"{ "next": "x", "items": [ {"qty": 9, "sku": "z\"q"} ], "id": "7" }"#);
        assert!(a.is_some());
        assert_eq!(a, b);
        // Values that look like keys are not keys.
        assert_eq!(
            sk(r#"{"a":"b","c":"d"}"#),
            sk(r#"{"a":"x:y","c":"{\"k\":1}"}"#)
        );
    }

    #[test]
    fn a_new_or_moved_key_changes_the_skeleton() {
        let base = sk(r#"{"user":{"name":"x","email":"y"}}"#);
        for other in [
            r#"{"user":{"name":"x","email":"y","passwordHash":"h"}}"#,
            r#"{"user":{"name":"x"},"email":"y"}"#,
            r#"{"user":[{"name":"x","email":"y"}]}"#,
            r#"{"user":{"name":"x","email":"y"},"name":"z"}"#,
        ] {
            assert_ne!(sk(other), base, "{other}");
        }
    }

    /// Documents with awkward strings: quotes, backslashes, control and non-ASCII characters,
    /// lengths on both sides of the 8- and 16-byte words the string scan reads.
    fn json() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "[a-z]{0,20}",
            r#"[a-z"\\/\n\t\u{0}\u{e9}\u{1f600}{}\[\]:,]{0,24}"#,
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 96, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// One edit of a document: delete, insert or replace the byte at a position, or cut there.
    #[derive(Clone, Debug)]
    enum Edit {
        Delete(usize),
        Insert(usize, u8),
        Replace(usize, u8),
        Cut(usize),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        // Mostly structural bytes: they are the ones that change how the rest is read.
        let byte = prop_oneof![prop::sample::select(b"{}[]\":,\\ a1".to_vec()), any::<u8>(),];
        prop_oneof![
            any::<usize>().prop_map(Edit::Delete),
            (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
            (any::<usize>(), byte).prop_map(|(i, b)| Edit::Replace(i, b)),
            any::<usize>().prop_map(Edit::Cut),
        ]
    }

    fn apply(doc: &mut Vec<u8>, e: &Edit) {
        let at = |i: usize, n: usize| if n == 0 { 0 } else { i % n };
        match *e {
            Edit::Delete(i) if !doc.is_empty() => {
                doc.remove(at(i, doc.len()));
            }
            Edit::Insert(i, b) => doc.insert(at(i, doc.len() + 1), b),
            Edit::Replace(i, b) if !doc.is_empty() => {
                let i = at(i, doc.len());
                doc[i] = b;
            }
            Edit::Cut(i) => doc.truncate(at(i, doc.len() + 1)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Serialised documents, compact or pretty, then edited: the scanner gives exactly the
        /// oracle's answer (the same hash, or both none).
        #[test]
        fn agrees_with_the_reader_on_edited_documents(
            v in json(),
            pretty in any::<bool>(),
            edits in prop::collection::vec(edit(), 0..4),
        ) {
            let mut doc = if pretty {
                serde_json::to_vec_pretty(&v).unwrap()
            } else {
                serde_json::to_vec(&v).unwrap()
            };
            if edits.is_empty() && (v.is_object() || v.is_array()) {
                prop_assert!(skeleton(&doc, &mut Vec::new()).is_some());
            }
            for e in &edits {
                apply(&mut doc, e);
            }
            prop_assert_eq!(skeleton(&doc, &mut Vec::new()), oracle(&doc));
        }

        /// Short runs of structural bytes (and anything else): the same answer, never a panic.
        #[test]
        fn agrees_with_the_reader_on_token_soup(
            raw in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(b"{}[]\":,\\ a1\n".to_vec()),
                    any::<u8>(),
                ],
                0..64,
            ),
        ) {
            prop_assert_eq!(skeleton(&raw, &mut Vec::new()), oracle(&raw));
        }
    }
}

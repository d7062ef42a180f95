//! The value-shape lattice: what the values of one query parameter or JSON field look like,
//! learned by generalising every value seen, and how a new value breaks that shape.
//!
//! A [`ValueShape`] counts values per [`ValueType`] and keeps, per type, the least general
//! description that covers them: bools; integers and floats with their range; strings with a
//! recognised format (UUID, date, date-time, email) while every string had it, an enum of
//! few values while there are few, otherwise a length sketch and the character classes seen.
//! Objects and arrays record only that they occurred (and array lengths): their contents are
//! profiled under their own key paths (`$.items[].sku`), which keeps every shape flat.
//!
//! Invariants: a shape's size is bounded by [`ShapeConfig`] (enum values and their bytes,
//! length-sketch buckets) whatever it observes; `merge` of two shapes equals one shape fed
//! both streams (exactly for counts, ranges, classes and enums); shapes never keep a free
//! string value, only enum members no longer than `max_enum_value_bytes`.

use super::sketch::QuantileSketch;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Limits and accuracy of value shapes (`[baseline.shape]` in the config file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapeConfig {
    /// Distinct string values kept as an enum; one more and the field becomes a free string
    /// (sticky; counted in `enums_overflowed`). Default 8.
    pub max_enum_values: usize,
    /// Longest string kept as an enum member; a longer value makes the field a free string.
    /// Default 32.
    pub max_enum_value_bytes: usize,
    /// Relative accuracy of string-length quantiles. Default 0.05.
    pub length_relative_accuracy: f64,
    /// Buckets per string-length sketch; lengths are at most 64 KiB (the body limit), which
    /// 128 buckets at 5 % cover. Default 128.
    pub max_length_buckets: usize,
}

impl Default for ShapeConfig {
    fn default() -> Self {
        ShapeConfig {
            max_enum_values: 8,
            max_enum_value_bytes: 32,
            length_relative_accuracy: 0.05,
            max_length_buckets: 128,
        }
    }
}

/// The JSON type of one value (query parameters are typed from their text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    Null,
    Bool,
    Integer,
    Float,
    String,
    Object,
    Array,
}

impl ValueType {
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Null => "null",
            ValueType::Bool => "bool",
            ValueType::Integer => "integer",
            ValueType::Float => "float",
            ValueType::String => "string",
            ValueType::Object => "object",
            ValueType::Array => "array",
        }
    }
}

/// Character classes, as bits of [`StringShape::classes`].
pub mod class {
    pub const LOWER: u8 = 1;
    pub const UPPER: u8 = 2;
    pub const DIGIT: u8 = 4;
    pub const SPACE: u8 = 8;
    pub const PUNCT: u8 = 16;
    pub const NON_ASCII: u8 = 32;
    pub const CONTROL: u8 = 64;
}

/// The character classes occurring in `s`.
pub fn char_classes(s: &str) -> u8 {
    let mut bits = 0u8;
    for b in s.bytes() {
        bits |= match b {
            b'a'..=b'z' => class::LOWER,
            b'A'..=b'Z' => class::UPPER,
            b'0'..=b'9' => class::DIGIT,
            b' ' => class::SPACE,
            0x21..=0x7e => class::PUNCT,
            0x80..=0xff => class::NON_ASCII,
            // Tabs and newlines are controls here: in an API value they are as suspicious.
            _ => class::CONTROL,
        };
    }
    bits
}

fn describe_classes(bits: u8) -> String {
    let mut out = String::from("[");
    for (bit, name) in [
        (class::LOWER, "a-z"),
        (class::UPPER, "A-Z"),
        (class::DIGIT, "0-9"),
    ] {
        if bits & bit != 0 {
            out.push_str(name);
        }
    }
    for (bit, name) in [
        (class::SPACE, "space"),
        (class::PUNCT, "punct"),
        (class::NON_ASCII, "non_ascii"),
        (class::CONTROL, "control"),
    ] {
        if bits & bit != 0 {
            if out.len() > 1 {
                out.push(' ');
            }
            out.push_str(name);
        }
    }
    out.push(']');
    out
}

/// How alarming a newly seen character class is: controls and punctuation carry injections,
/// letters and digits rarely mean more than a new kind of id.
fn class_severity(bits: u8) -> f64 {
    [
        (class::CONTROL, 1.0),
        (class::PUNCT, 0.7),
        (class::NON_ASCII, 0.6),
        (class::SPACE, 0.5),
        (class::UPPER, 0.4),
        (class::LOWER, 0.4),
        (class::DIGIT, 0.4),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|&(_, s)| s)
    .fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------------------------

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
}

/// `YYYY-MM-DD` with a plausible month and day.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return false;
    }
    let (y, m, d) = (
        b.get(0..4).and_then(digits),
        b.get(5..7).and_then(digits),
        b.get(8..10).and_then(digits),
    );
    matches!((y, m, d), (Some(_), Some(1..=12), Some(1..=31)))
}

/// RFC 3339 and its common relatives: a date, `T` or a space, `HH:MM[:SS[.frac]]`, then an
/// optional `Z` or `±HH[:MM]`.
fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 16 || b.len() > 40 || !s.get(..10).is_some_and(is_date) {
        return false;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return false;
    }
    let (h, m) = (
        b.get(11..13).and_then(digits),
        b.get(14..16).and_then(digits),
    );
    if b.get(13) != Some(&b':') || !matches!((h, m), (Some(0..=23), Some(0..=59))) {
        return false;
    }
    let mut rest = b.get(16..).unwrap_or(&[]);
    if let [b':', s1, s2, tail @ ..] = rest {
        if !(s1.is_ascii_digit() && s2.is_ascii_digit()) {
            return false;
        }
        rest = tail;
        if let [b'.', tail @ ..] = rest {
            let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return false;
            }
            rest = tail.get(n..).unwrap_or(&[]);
        }
    }
    match rest {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', tz @ ..] => {
            let t: Vec<u8> = tz.iter().copied().filter(|&c| c != b':').collect();
            (t.len() == 2 || t.len() == 4) && t.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// A conservative `local@domain.tld` check: one `@`, no spaces, a dotted domain of
/// letter-digit-hyphen labels ending in an alphabetic label of two letters or more.
fn is_email(s: &str) -> bool {
    if s.len() > 254 {
        return false;
    }
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
        && labels
            .last()
            .is_some_and(|t| t.len() >= 2 && t.bytes().all(|c| c.is_ascii_alphabetic()));
    local_ok && domain_ok
}

// ---------------------------------------------------------------------------------------------
// Observed values
// ---------------------------------------------------------------------------------------------

/// One value reduced to what a shape looks at.
#[derive(Clone, Copy, Debug)]
enum Obs<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Object,
    Array(usize),
}

impl<'a> Obs<'a> {
    fn of_json(v: &'a Value) -> Obs<'a> {
        match v {
            Value::Null => Obs::Null,
            Value::Bool(b) => Obs::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Obs::Int(i),
                // Integers beyond i64 and fractions; serde_json numbers are always finite.
                None => Obs::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => Obs::Str(s),
            Value::Array(a) => Obs::Array(a.len()),
            Value::Object(_) => Obs::Object,
        }
    }

    /// Types query-string text: `true`/`false`, integers without leading zeros (a leading
    /// zero means a code such as a ZIP, not a number), decimal floats; anything else is a
    /// string.
    fn of_text(s: &'a str) -> Obs<'a> {
        match s {
            "true" => return Obs::Bool(true),
            "false" => return Obs::Bool(false),
            _ => {}
        }
        let b = s.as_bytes();
        let unsigned = b.strip_prefix(b"-").unwrap_or(b);
        let is_int = !unsigned.is_empty()
            && unsigned.len() <= 18
            && unsigned.iter().all(u8::is_ascii_digit)
            && (unsigned.len() == 1 || unsigned.first() != Some(&b'0'));
        if is_int {
            if let Ok(i) = s.parse::<i64>() {
                return Obs::Int(i);
            }
        }
        let numeric_chars = b
            .iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+'));
        let has_digit_first = unsigned.first().is_some_and(u8::is_ascii_digit);
        let has_fraction_or_exponent = b.iter().any(|c| matches!(c, b'.' | b'e' | b'E'));
        if numeric_chars && has_digit_first && has_fraction_or_exponent && b.len() <= 32 {
            if let Ok(f) = s.parse::<f64>() {
                if f.is_finite() {
                    return Obs::Float(f);
                }
            }
        }
        Obs::Str(s)
    }

    fn value_type(self) -> ValueType {
        match self {
            Obs::Null => ValueType::Null,
            Obs::Bool(_) => ValueType::Bool,
            Obs::Int(_) => ValueType::Integer,
            Obs::Float(_) => ValueType::Float,
            Obs::Str(_) => ValueType::String,
            Obs::Object => ValueType::Object,
            Obs::Array(_) => ValueType::Array,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

/// What the strings of a field look like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StringShape {
    pub count: u64,
    pub uuids: u64,
    pub dates: u64,
    pub datetimes: u64,
    pub emails: u64,
    /// Union of [`char_classes`] of every string.
    pub classes: u8,
    /// Lengths in bytes.
    pub length: QuantileSketch,
    /// Values and counts while at most `max_enum_values` distinct short values were seen;
    /// `None` once that stopped being true (never comes back).
    pub enum_values: Option<BTreeMap<String, u64>>,
}

impl StringShape {
    fn new(cfg: &Limits) -> Self {
        StringShape {
            count: 0,
            uuids: 0,
            dates: 0,
            datetimes: 0,
            emails: 0,
            classes: 0,
            length: QuantileSketch::new(
                f64::from(cfg.length_alpha_permille) / 1000.0,
                usize::from(cfg.max_length_buckets),
            ),
            enum_values: Some(BTreeMap::new()),
        }
    }

    /// The single format every string had, if any.
    fn format(&self) -> Option<&'static str> {
        if self.count == 0 {
            return None;
        }
        [
            (self.uuids, "uuid"),
            (self.datetimes, "datetime"),
            (self.dates, "date"),
            (self.emails, "email"),
        ]
        .iter()
        .find(|(n, _)| *n == self.count)
        .map(|&(_, f)| f)
    }

    fn has_format(&self, s: &str, f: &str) -> bool {
        match f {
            "uuid" => is_uuid(s),
            "datetime" => is_datetime(s),
            "date" => is_date(s),
            "email" => is_email(s),
            _ => false,
        }
    }

    /// An enum needs each value seen several times on average; otherwise it is a free string
    /// that simply has not shown much variety yet.
    fn enum_members(&self) -> Option<&BTreeMap<String, u64>> {
        let e = self.enum_values.as_ref()?;
        (!e.is_empty() && self.count >= 4 * e.len() as u64).then_some(e)
    }
}

/// Enum and sketch limits copied from [`ShapeConfig`] into each shape, so a shape can be
/// observed and merged without its config at hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_enum_values: u16,
    max_enum_value_bytes: u16,
    length_alpha_permille: u16,
    max_length_buckets: u16,
}

impl Limits {
    fn from_cfg(cfg: &ShapeConfig) -> Self {
        let clamp16 = |v: usize| v.min(usize::from(u16::MAX)) as u16;
        Limits {
            max_enum_values: clamp16(cfg.max_enum_values),
            max_enum_value_bytes: clamp16(cfg.max_enum_value_bytes),
            length_alpha_permille: (cfg.length_relative_accuracy * 1000.0).clamp(1.0, 500.0) as u16,
            max_length_buckets: clamp16(cfg.max_length_buckets.max(1)),
        }
    }

    fn min(self, o: Limits) -> Limits {
        Limits {
            max_enum_values: self.max_enum_values.min(o.max_enum_values),
            max_enum_value_bytes: self.max_enum_value_bytes.min(o.max_enum_value_bytes),
            length_alpha_permille: self.length_alpha_permille.max(o.length_alpha_permille),
            max_length_buckets: self.max_length_buckets.min(o.max_length_buckets),
        }
    }
}

/// The learned shape of one parameter or field. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueShape {
    limits: Limits,
    /// Values observed, of any type.
    pub count: u64,
    pub nulls: u64,
    pub trues: u64,
    pub falses: u64,
    pub integers: u64,
    /// Meaningful only when `integers > 0`.
    pub int_min: i64,
    pub int_max: i64,
    pub floats: u64,
    /// Meaningful only when `floats > 0`.
    pub float_min: f64,
    pub float_max: f64,
    pub objects: u64,
    pub arrays: u64,
    /// Meaningful only when `arrays > 0`.
    pub array_len_min: u64,
    pub array_len_max: u64,
    /// Boxed: most fields never see a string, and a string shape is the large part.
    pub strings: Option<Box<StringShape>>,
    /// Times an enum turned into a free string (0 or 1 per shape, summed by merges).
    pub enums_overflowed: u64,
}

/// How a new value breaks a learned shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviationKind {
    /// A JSON type never seen for this field (a string where integers were, a null).
    TypeChange,
    /// A number outside the learned range.
    OutOfRange,
    /// A string with a character class never seen in this field (quote, control, non-ASCII).
    NewCharClass,
    /// A string far longer or shorter than the learned lengths.
    LengthOutlier,
    /// A value outside a learned enum (or the other boolean, never seen).
    UnseenEnumValue,
    /// A string without the format (UUID, date, date-time, email) every earlier string had.
    FormatChange,
}

impl DeviationKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviationKind::TypeChange => "type_change",
            DeviationKind::OutOfRange => "out_of_range",
            DeviationKind::NewCharClass => "new_char_class",
            DeviationKind::LengthOutlier => "length_outlier",
            DeviationKind::UnseenEnumValue => "unseen_enum_value",
            DeviationKind::FormatChange => "format_change",
        }
    }
}

/// A deviation with a score in `[0, 1)`: how far outside the shape the value is (its
/// severity, in `[0.4, 1]`) times how much evidence the shape rests on, `n / (n + 10)` for
/// `n` values observed, so a shape learned from three values barely speaks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Deviation {
    pub kind: DeviationKind,
    pub score: f64,
    /// The type the offending value had.
    pub observed: ValueType,
}

/// Evidence weight of a shape learned from `n` values.
fn confidence(n: u64) -> f64 {
    let n = n as f64;
    n / (n + 10.0)
}

/// Severity of a distance `d` beyond a range of width `w`: 0.5 just outside, towards 1 far out.
fn range_severity(d: f64, w: f64) -> f64 {
    let r = d / w.max(1.0);
    0.5 + 0.5 * r / (1.0 + r)
}

impl ValueShape {
    pub fn new(cfg: &ShapeConfig) -> Self {
        ValueShape {
            limits: Limits::from_cfg(cfg),
            count: 0,
            nulls: 0,
            trues: 0,
            falses: 0,
            integers: 0,
            int_min: 0,
            int_max: 0,
            floats: 0,
            float_min: 0.0,
            float_max: 0.0,
            objects: 0,
            arrays: 0,
            array_len_min: 0,
            array_len_max: 0,
            strings: None,
            enums_overflowed: 0,
        }
    }

    /// Observes one JSON value.
    pub fn observe(&mut self, v: &Value) {
        self.observe_obs(Obs::of_json(v));
    }

    /// Observes one query-parameter value, typed from its text (see [`Obs::of_text`]).
    pub fn observe_str(&mut self, s: &str) {
        self.observe_obs(Obs::of_text(s));
    }

    fn observe_obs(&mut self, o: Obs<'_>) {
        self.count = self.count.saturating_add(1);
        match o {
            Obs::Null => self.nulls = self.nulls.saturating_add(1),
            Obs::Bool(true) => self.trues = self.trues.saturating_add(1),
            Obs::Bool(false) => self.falses = self.falses.saturating_add(1),
            Obs::Int(i) => {
                if self.integers == 0 {
                    (self.int_min, self.int_max) = (i, i);
                }
                self.integers = self.integers.saturating_add(1);
                self.int_min = self.int_min.min(i);
                self.int_max = self.int_max.max(i);
            }
            Obs::Float(f) => {
                if self.floats == 0 {
                    (self.float_min, self.float_max) = (f, f);
                }
                self.floats = self.floats.saturating_add(1);
                self.float_min = self.float_min.min(f);
                self.float_max = self.float_max.max(f);
            }
            Obs::Object => self.objects = self.objects.saturating_add(1),
            Obs::Array(n) => {
                let n = n as u64;
                if self.arrays == 0 {
                    (self.array_len_min, self.array_len_max) = (n, n);
                }
                self.arrays = self.arrays.saturating_add(1);
                self.array_len_min = self.array_len_min.min(n);
                self.array_len_max = self.array_len_max.max(n);
            }
            Obs::Str(s) => self.observe_string(s),
        }
    }

    fn observe_string(&mut self, s: &str) {
        let limits = self.limits;
        let st = self
            .strings
            .get_or_insert_with(|| Box::new(StringShape::new(&limits)));
        st.count = st.count.saturating_add(1);
        if s.len() <= 40 {
            st.uuids += u64::from(is_uuid(s));
            st.dates += u64::from(is_date(s));
            st.datetimes += u64::from(is_datetime(s));
        }
        st.emails += u64::from(s.contains('@') && is_email(s));
        st.classes |= char_classes(s);
        st.length.add(s.len() as f64);
        let mut overflow = false;
        if let Some(e) = st.enum_values.as_mut() {
            if s.len() > usize::from(limits.max_enum_value_bytes) {
                overflow = true;
            } else if let Some(c) = e.get_mut(s) {
                *c = c.saturating_add(1);
            } else if e.len() < usize::from(limits.max_enum_values) {
                e.insert(s.to_owned(), 1);
            } else {
                overflow = true;
            }
        }
        if overflow {
            st.enum_values = None;
            self.enums_overflowed = self.enums_overflowed.saturating_add(1);
        }
    }

    /// Values of one type seen.
    pub fn type_count(&self, t: ValueType) -> u64 {
        match t {
            ValueType::Null => self.nulls,
            ValueType::Bool => self.trues.saturating_add(self.falses),
            ValueType::Integer => self.integers,
            ValueType::Float => self.floats,
            ValueType::String => self.strings.as_ref().map_or(0, |s| s.count),
            ValueType::Object => self.objects,
            ValueType::Array => self.arrays,
        }
    }

    /// Adds `other`'s observations. Limits become the tighter of the two.
    pub fn merge(&mut self, other: &ValueShape) {
        self.limits = self.limits.min(other.limits);
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        if other.integers > 0 {
            if self.integers == 0 {
                (self.int_min, self.int_max) = (other.int_min, other.int_max);
            }
            self.int_min = self.int_min.min(other.int_min);
            self.int_max = self.int_max.max(other.int_max);
        }
        if other.floats > 0 {
            if self.floats == 0 {
                (self.float_min, self.float_max) = (other.float_min, other.float_max);
            }
            self.float_min = self.float_min.min(other.float_min);
            self.float_max = self.float_max.max(other.float_max);
        }
        if other.arrays > 0 {
            if self.arrays == 0 {
                (self.array_len_min, self.array_len_max) =
                    (other.array_len_min, other.array_len_max);
            }
            self.array_len_min = self.array_len_min.min(other.array_len_min);
            self.array_len_max = self.array_len_max.max(other.array_len_max);
        }
        add(&mut self.count, other.count);
        add(&mut self.nulls, other.nulls);
        add(&mut self.trues, other.trues);
        add(&mut self.falses, other.falses);
        add(&mut self.integers, other.integers);
        add(&mut self.floats, other.floats);
        add(&mut self.objects, other.objects);
        add(&mut self.arrays, other.arrays);
        add(&mut self.enums_overflowed, other.enums_overflowed);
        let Some(os) = other.strings.as_ref() else {
            return;
        };
        let limits = self.limits;
        let st = self
            .strings
            .get_or_insert_with(|| Box::new(StringShape::new(&limits)));
        add(&mut st.count, os.count);
        add(&mut st.uuids, os.uuids);
        add(&mut st.dates, os.dates);
        add(&mut st.datetimes, os.datetimes);
        add(&mut st.emails, os.emails);
        st.classes |= os.classes;
        st.length.merge(&os.length);
        let merged = match (st.enum_values.take(), os.enum_values.as_ref()) {
            (Some(mut a), Some(b)) => {
                for (k, &c) in b {
                    let e = a.entry(k.clone()).or_insert(0);
                    *e = e.saturating_add(c);
                }
                let fits = a.len() <= usize::from(limits.max_enum_values)
                    && a.keys()
                        .all(|k| k.len() <= usize::from(limits.max_enum_value_bytes));
                if fits {
                    Some(a)
                } else {
                    self.enums_overflowed = self.enums_overflowed.saturating_add(1);
                    None
                }
            }
            _ => None,
        };
        st.enum_values = merged;
    }

    /// Heap bytes held (string shape, its sketch and enum members).
    pub fn heap_bytes(&self) -> usize {
        self.strings.as_ref().map_or(0, |s| {
            std::mem::size_of::<StringShape>()
                + s.length.heap_bytes()
                + s.enum_values.as_ref().map_or(0, |e| {
                    e.keys()
                        .map(|k| k.capacity() + std::mem::size_of::<(String, u64)>() + 16)
                        .sum()
                })
        })
    }

    /// A short description of the shape, such as `integer 1..5000`, `enum[asc,desc]`, `uuid`,
    /// `string len 3..40 [a-z0-9]` or `integer 1..5 | null` for a mix (most frequent first).
    pub fn describe(&self) -> String {
        let mut parts: Vec<(u64, String)> = Vec::new();
        if self.nulls > 0 {
            parts.push((self.nulls, "null".into()));
        }
        let bools = self.trues.saturating_add(self.falses);
        if bools > 0 {
            parts.push((bools, "bool".into()));
        }
        match (self.integers, self.floats) {
            (0, 0) => {}
            (n, 0) => parts.push((
                n,
                range_text("integer", self.int_min as f64, self.int_max as f64),
            )),
            (0, n) => parts.push((n, range_text("float", self.float_min, self.float_max))),
            (a, b) => {
                let lo = (self.int_min as f64).min(self.float_min);
                let hi = (self.int_max as f64).max(self.float_max);
                parts.push((a.saturating_add(b), range_text("number", lo, hi)));
            }
        }
        if let Some(st) = self.strings.as_ref().filter(|s| s.count > 0) {
            parts.push((st.count, describe_string(st)));
        }
        if self.objects > 0 {
            parts.push((self.objects, "object".into()));
        }
        if self.arrays > 0 {
            let len = if self.array_len_min == self.array_len_max {
                format!("array len {}", self.array_len_min)
            } else {
                format!("array len {}..{}", self.array_len_min, self.array_len_max)
            };
            parts.push((self.arrays, len));
        }
        if parts.is_empty() {
            return "unknown".into();
        }
        // Stable: most frequent first, ties in lattice order as pushed above.
        parts.sort_by_key(|p| std::cmp::Reverse(p.0));
        parts
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// How a JSON value breaks this shape, the strongest deviation if several; `None` if it
    /// fits or the shape is empty.
    pub fn check(&self, v: &Value) -> Option<Deviation> {
        self.check_obs(Obs::of_json(v))
    }

    /// As [`check`](Self::check) for a query-parameter value typed from its text.
    pub fn check_str(&self, s: &str) -> Option<Deviation> {
        self.check_obs(Obs::of_text(s))
    }

    fn check_obs(&self, o: Obs<'_>) -> Option<Deviation> {
        if self.count == 0 {
            return None;
        }
        let t = o.value_type();
        let found = |kind, severity: f64| {
            Some(Deviation {
                kind,
                score: severity * confidence(self.count),
                observed: t,
            })
        };
        let numbers = self.integers.saturating_add(self.floats);
        match o {
            Obs::Int(i) if numbers > 0 => self.check_number(i as f64, found),
            // A fraction where only integers were seen.
            Obs::Float(_) if self.floats == 0 && self.integers > 0 => {
                found(DeviationKind::TypeChange, 0.5)
            }
            Obs::Float(f) if self.floats > 0 => self.check_number(f, found),
            Obs::Null if self.nulls == 0 => found(DeviationKind::TypeChange, 0.6),
            Obs::Bool(b) if self.trues.saturating_add(self.falses) > 0 => {
                let seen = if b { self.trues } else { self.falses };
                if seen == 0 {
                    found(DeviationKind::UnseenEnumValue, 0.5)
                } else {
                    None
                }
            }
            Obs::Str(s) if self.type_count(ValueType::String) > 0 => {
                let st = self.strings.as_ref()?;
                self.check_string(st, s)
                    .and_then(|(kind, sev)| found(kind, sev))
            }
            Obs::Array(_) if self.arrays > 0 => None,
            Obs::Object if self.objects > 0 => None,
            Obs::Null => None,
            _ => found(DeviationKind::TypeChange, 1.0),
        }
    }

    fn check_number(
        &self,
        x: f64,
        found: impl Fn(DeviationKind, f64) -> Option<Deviation>,
    ) -> Option<Deviation> {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        if self.integers > 0 {
            lo = lo.min(self.int_min as f64);
            hi = hi.max(self.int_max as f64);
        }
        if self.floats > 0 {
            lo = lo.min(self.float_min);
            hi = hi.max(self.float_max);
        }
        let width = (hi - lo).max(lo.abs()).max(hi.abs());
        if x < lo {
            // A negative value where none was ever seen is a classic probe (ids, amounts).
            let sign_flip = lo >= 0.0 && x < 0.0;
            let sev = range_severity(lo - x, width);
            return found(
                DeviationKind::OutOfRange,
                if sign_flip { sev.max(0.8) } else { sev },
            );
        }
        if x > hi {
            return found(DeviationKind::OutOfRange, range_severity(x - hi, width));
        }
        None
    }

    fn check_string(&self, st: &StringShape, s: &str) -> Option<(DeviationKind, f64)> {
        let mut best: Option<(DeviationKind, f64)> = None;
        let mut consider = |kind, sev: f64| {
            if best.is_none_or(|(_, b)| sev > b) {
                best = Some((kind, sev));
            }
        };
        if let Some(f) = st.format() {
            if !st.has_format(s, f) {
                consider(DeviationKind::FormatChange, 0.9);
            }
        }
        if let Some(e) = st.enum_members() {
            if !e.contains_key(s) {
                consider(DeviationKind::UnseenEnumValue, 0.8);
            }
        }
        let new = char_classes(s) & !st.classes;
        if new != 0 {
            consider(DeviationKind::NewCharClass, class_severity(new));
        }
        let len = s.len() as f64;
        if let (Some(min), Some(max), Some(p01), Some(p99)) = (
            st.length.min(),
            st.length.max(),
            st.length.quantile(0.01),
            st.length.quantile(0.99),
        ) {
            // Far outside: beyond every length seen and beyond twice the 99th percentile (or
            // below half the 1st), so ordinary variation of a few bytes never fires.
            if len > max && len > 2.0 * p99 + 2.0 {
                consider(DeviationKind::LengthOutlier, range_severity(len - max, max));
            } else if len < min && 2.0 * len + 2.0 < p01 {
                consider(DeviationKind::LengthOutlier, 0.5);
            }
        }
        best
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn range_text(name: &str, lo: f64, hi: f64) -> String {
    if lo == hi {
        format!("{name} {}", fmt_num(lo))
    } else {
        format!("{name} {}..{}", fmt_num(lo), fmt_num(hi))
    }
}

fn describe_string(st: &StringShape) -> String {
    if let Some(f) = st.format() {
        return f.to_string();
    }
    if let Some(e) = st.enum_members() {
        let mut out = String::from("enum[");
        for (i, k) in e.keys().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
        }
        out.push(']');
        return out;
    }
    let (lo, hi) = (
        st.length.min().unwrap_or(0.0) as u64,
        st.length.max().unwrap_or(0.0) as u64,
    );
    let mut out = String::from("string len ");
    if lo == hi {
        let _ = write!(out, "{lo}");
    } else {
        let _ = write!(out, "{lo}..{hi}");
    }
    if st.classes != 0 {
        out.push(' ');
        out.push_str(&describe_classes(st.classes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape_of_json(values: &[Value]) -> ValueShape {
        let mut s = ValueShape::new(&ShapeConfig::default());
        for v in values {
            s.observe(v);
        }
        s
    }

    fn shape_of_text(values: &[&str]) -> ValueShape {
        let mut s = ValueShape::new(&ShapeConfig::default());
        for v in values {
            s.observe_str(v);
        }
        s
    }

    /// Repeats a list so enums have the evidence they need.
    fn times<T: Clone>(v: &[T], n: usize) -> Vec<T> {
        v.iter().cloned().cycle().take(v.len() * n).collect()
    }

    #[test]
    fn json_values_generalise_along_the_lattice() {
        let uuid_a = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
        let uuid_b = "6FA459EA-EE8A-3CA4-894E-DB77E160355E";
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (vec![], "unknown"),
            (vec![json!(true), json!(false)], "bool"),
            (vec![json!(1), json!(5000), json!(42)], "integer 1..5000"),
            (vec![json!(7), json!(7)], "integer 7"),
            (vec![json!(0.5), json!(2.25)], "float 0.5..2.25"),
            (vec![json!(1), json!(2.5), json!(-3)], "number -3..2.5"),
            (vec![json!(uuid_a), json!(uuid_b)], "uuid"),
            (vec![json!("2024-01-31"), json!("1999-12-01")], "date"),
            (
                vec![
                    json!("2024-01-31T10:00:00Z"),
                    json!("2024-02-01T23:59:59.123+02:00"),
                ],
                "datetime",
            ),
            (
                vec![json!("a@example.com"), json!("b.c@mail.example.org")],
                "email",
            ),
            (times(&[json!("asc"), json!("desc")], 5), "enum[asc,desc]"),
            // Two values seen once each: not yet evidence of an enum.
            (vec![json!("asc"), json!("desc")], "string len 3..4 [a-z]"),
            (
                vec![json!("abc"), json!("hello world 42"), json!("x9")],
                "string len 2..14 [a-z0-9 space]",
            ),
            (vec![json!(null), json!(3), json!(4)], "integer 3..4 | null"),
            (vec![json!({"a": 1}), json!({})], "object"),
            (vec![json!([1, 2]), json!([])], "array len 0..2"),
            (
                vec![json!("x"), json!(1), json!(2)],
                "integer 1..2 | string len 1 [a-z]",
            ),
            // One odd uuid-less value ends the format.
            (
                vec![json!(uuid_a), json!("not-a-uuid")],
                "string len 10..36 [a-z0-9 punct]",
            ),
        ];
        for (values, want) in cases {
            assert_eq!(shape_of_json(&values).describe(), want, "values {values:?}");
        }
    }

    #[test]
    fn query_text_is_typed() {
        let cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["1", "20", "300"], "integer 1..300"),
            (vec!["-5", "0"], "integer -5..0"),
            (vec!["0.5", "1e3"], "float 0.5..1000"),
            (vec!["true", "false"], "bool"),
            // Leading zeros are codes, not numbers.
            (vec!["02134", "10001"], "integer 10001 | string len 5 [0-9]"),
            (vec!["", "abc"], "string len 0..3 [a-z]"),
            (vec!["inf", "NaN"], "string len 3 [a-zA-Z]"),
            (vec!["99999999999999999999"], "string len 20 [0-9]"),
        ];
        for (values, want) in cases {
            assert_eq!(shape_of_text(&values).describe(), want, "values {values:?}");
        }
    }

    #[test]
    fn enums_overflow_into_free_strings_and_stay_there() {
        let cfg = ShapeConfig {
            max_enum_values: 3,
            ..ShapeConfig::default()
        };
        let mut s = ValueShape::new(&cfg);
        for v in times(&["a", "b", "c"], 4) {
            s.observe_str(v);
        }
        assert_eq!(s.describe(), "enum[a,b,c]");
        s.observe_str("d");
        assert_eq!(s.enums_overflowed, 1);
        for v in times(&["a"], 20) {
            s.observe_str(v);
        }
        assert_eq!(s.describe(), "string len 1 [a-z]");
        // A value longer than max_enum_value_bytes also ends the enum.
        let mut s = ValueShape::new(&ShapeConfig::default());
        s.observe_str(&"x".repeat(33));
        assert!(s.strings.as_ref().unwrap().enum_values.is_none());
    }

    #[test]
    fn char_classes_cover_every_byte() {
        assert_eq!(char_classes(""), 0);
        assert_eq!(
            char_classes("aZ9"),
            class::LOWER | class::UPPER | class::DIGIT
        );
        assert_eq!(char_classes("a b"), class::LOWER | class::SPACE);
        assert_eq!(char_classes("'--"), class::PUNCT);
        assert_eq!(char_classes("é"), class::NON_ASCII);
        assert_eq!(char_classes("\t\0\x7f"), class::CONTROL);
    }

    #[test]
    fn formats_are_recognised_strictly() {
        assert!(is_uuid("3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
        assert!(!is_uuid("3f2504e0-4f89-11d3-9a0c-0305e82c330"));
        assert!(!is_uuid("3f2504e0x4f89-11d3-9a0c-0305e82c3301"));
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2024-13-01"));
        assert!(!is_date("2024-1-01"));
        for ok in [
            "2024-01-31T10:00Z",
            "2024-01-31 10:00:00",
            "2024-01-31T10:00:00.5-0700",
        ] {
            assert!(is_datetime(ok), "{ok}");
        }
        for bad in [
            "2024-01-31",
            "2024-01-31T25:00Z",
            "2024-01-31T10:00:00.Z",
            "2024-01-31T10:00+7",
        ] {
            assert!(!is_datetime(bad), "{bad}");
        }
        assert!(is_email("first.last+tag@sub.example.co"));
        for bad in [
            "a@b",
            "@example.com",
            "a b@example.com",
            "a@example.c0m",
            "a@@example.com",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    fn kind(d: Option<Deviation>) -> Option<&'static str> {
        d.map(|d| d.kind.name())
    }

    #[test]
    fn deviations_name_how_a_value_breaks_the_shape() {
        let ints = shape_of_text(&times(&["1", "2", "500", "5000"], 25));
        let enum_shape = shape_of_text(&times(&["asc", "desc"], 50));
        let uuids = shape_of_json(&times(&[json!("3f2504e0-4f89-11d3-9a0c-0305e82c3301")], 50));
        let names: Vec<String> = (0..100).map(|i| format!("user{}", i % 37)).collect();
        let mut free = ValueShape::new(&ShapeConfig::default());
        for n in &names {
            free.observe_str(n);
        }
        let flags = shape_of_json(&times(&[json!(true)], 50));
        let cases: Vec<(&ValueShape, Value, Option<&str>)> = vec![
            (&ints, json!(300), None),
            (&ints, json!(5001), Some("out_of_range")),
            (&ints, json!(-1), Some("out_of_range")),
            (&ints, json!(2.5), Some("type_change")),
            (&ints, json!("1 OR 1=1"), Some("type_change")),
            (&ints, json!(null), Some("type_change")),
            (&ints, json!([1]), Some("type_change")),
            (&enum_shape, json!("asc"), None),
            (&enum_shape, json!("rand()"), Some("unseen_enum_value")),
            (
                &uuids,
                json!("3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
                Some("new_char_class"),
            ),
            (&uuids, json!("3f2504e0-4f89-11d3-9a0c-0305e82c3302"), None),
            (&uuids, json!("1"), Some("format_change")),
            (&free, json!("user99"), None),
            (&free, json!("user'--"), Some("new_char_class")),
            (&free, json!("user\n1"), Some("new_char_class")),
            (&free, json!("a".repeat(200)), Some("length_outlier")),
            (&flags, json!(true), None),
            (&flags, json!(false), Some("unseen_enum_value")),
        ];
        for (shape, v, want) in cases {
            assert_eq!(kind(shape.check(&v)), want, "{} vs {v}", shape.describe());
        }
        // Query text goes through the same typing.
        assert_eq!(kind(ints.check_str("42")), None);
        assert_eq!(kind(ints.check_str("abc")), Some("type_change"));
    }

    #[test]
    fn scores_grow_with_distance_and_evidence() {
        let few = shape_of_text(&["1", "100"]);
        let many = shape_of_text(&times(&["1", "100"], 100));
        let near = many.check(&json!(101)).unwrap().score;
        let far = many.check(&json!(1_000_000)).unwrap().score;
        assert!(far > near, "{far} {near}");
        assert!(far < 1.0);
        let weak = few.check(&json!(1_000_000)).unwrap().score;
        assert!(weak < far / 2.0, "{weak} {far}");
        // Control characters outrank new letters.
        let lower = shape_of_text(&times(&["abc"], 50));
        let ctl = lower.check_str("ab\x01").unwrap().score;
        let upper = lower.check_str("ABC").unwrap().score;
        assert!(ctl > upper);
        // An empty shape has nothing to say.
        assert_eq!(
            ValueShape::new(&ShapeConfig::default()).check(&json!(1)),
            None
        );
    }

    #[test]
    fn merge_equals_single_pass() {
        let values = [
            json!(1),
            json!("asc"),
            json!(null),
            json!(2.5),
            json!("desc"),
            json!([1, 2, 3]),
            json!({"k": 1}),
            json!(true),
            json!("asc"),
            json!(-7),
            json!("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
        ];
        let whole = shape_of_json(&values);
        for split in 0..=values.len() {
            let mut a = shape_of_json(&values[..split]);
            let b = shape_of_json(&values[split..]);
            a.merge(&b);
            assert_eq!(a, whole, "split {split}");
        }
        // Enums that overflow only when merged.
        let cfg = ShapeConfig {
            max_enum_values: 2,
            ..ShapeConfig::default()
        };
        let (mut a, mut b) = (ValueShape::new(&cfg), ValueShape::new(&cfg));
        a.observe_str("x");
        b.observe_str("y");
        b.observe_str("z");
        a.merge(&b);
        assert!(a.strings.as_ref().unwrap().enum_values.is_none());
        assert_eq!(a.enums_overflowed, 1);
    }

    #[test]
    fn serde_round_trip() {
        let s = shape_of_json(&[json!("asc"), json!(3), json!(null), json!([1])]);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ValueShape>(&j).unwrap(), s);
        let empty = ValueShape::new(&ShapeConfig::default());
        let j = serde_json::to_string(&empty).unwrap();
        assert_eq!(serde_json::from_str::<ValueShape>(&j).unwrap(), empty);
    }
}

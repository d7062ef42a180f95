//! RFC 3339 text for capture timestamps, in UTC, without a date-time dependency.
//!
//! Formatting is lossless and canonical: the fraction has 0, 3, 6 or 9 digits, the fewest that
//! represent the value exactly, and the zone is always `Z`. Parsing accepts any RFC 3339
//! date-time (fraction of 1 to 9 digits, `Z` or a numeric offset) in the range a [`Timestamp`]
//! holds, and never panics on malformed text.

use crate::common::Timestamp;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// `2024-05-01T12:00:00.250Z`.
pub fn format(ts: Timestamp) -> String {
    let nanos = ts.as_nanos();
    let secs = nanos / NANOS_PER_SEC;
    let frac = nanos % NANOS_PER_SEC;
    let (year, month, day) = civil_from_days((secs / SECS_PER_DAY) as i64);
    let sod = secs % SECS_PER_DAY;
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac == 0 {
    } else if frac % 1_000_000 == 0 {
        s.push_str(&format!(".{:03}", frac / 1_000_000));
    } else if frac % 1_000 == 0 {
        s.push_str(&format!(".{:06}", frac / 1_000));
    } else {
        s.push_str(&format!(".{frac:09}"));
    }
    s.push('Z');
    s
}

/// Parses an RFC 3339 date-time. `None` for malformed text, impossible dates, more than nine
/// fraction digits, or instants before 1970 or past what a [`Timestamp`] holds.
pub fn parse(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(range)?;
        let mut v: u32 = 0;
        for d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
        }
        Some(v)
    };
    let year = i64::from(num(0..4)?);
    let month = num(5..7)?;
    let day = num(8..10)?;
    let hour = num(11..13)?;
    let minute = num(14..16)?;
    let second = num(17..19)?;
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    // A leap second (60) is folded into the next second's start: Timestamp has no room for it.
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            if i - start == 9 {
                return None;
            }
            frac = frac * 10 + u64::from(d - b'0');
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        frac *= 10u64.pow(9 - digits as u32);
    }
    let offset_secs: i64 = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b.get(i + 3) == Some(&b':') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60);
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * SECS_PER_DAY as i64
        + i64::from(hour * 3600 + minute * 60 + second)
        - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    let nanos = secs.checked_mul(NANOS_PER_SEC)?.checked_add(frac)?;
    Some(Timestamp::from_nanos(nanos))
}

/// `#[serde(with = "time::rfc3339")]` for [`Timestamp`] fields.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::common::Timestamp;

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        super::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?}: not an RFC 3339 date-time after 1970"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        let cases: &[(&str, u64)] = &[
            ("1970-01-01T00:00:00Z", 0),
            ("2000-02-29T23:59:59Z", 951_868_799_000_000_000),
            ("2023-11-14T22:13:20.123Z", 1_700_000_000_123_000_000),
            ("2023-11-14T22:13:20.123456Z", 1_700_000_000_123_456_000),
            ("2023-11-14T22:13:20.123456789Z", 1_700_000_000_123_456_789),
        ];
        for (text, nanos) in cases {
            assert_eq!(format(Timestamp::from_nanos(*nanos)), *text);
            assert_eq!(parse(text), Some(Timestamp::from_nanos(*nanos)), "{text}");
        }
    }

    #[test]
    fn offsets_and_loose_forms() {
        let utc = parse("2023-11-14T22:13:20Z");
        assert_eq!(parse("2023-11-15T00:13:20+02:00"), utc);
        assert_eq!(parse("2023-11-14T20:13:20-02:00"), utc);
        assert_eq!(parse("2023-11-14t22:13:20z"), utc);
        assert_eq!(
            parse("2023-11-14T22:13:20.1Z"),
            Some(Timestamp::from_nanos(1_700_000_000_100_000_000))
        );
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-02-29T22:13:20Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-11-14T22:13:20+2:00",
            "2023-11-14T22:13:20Zjunk",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "２０２3-11-14T22:13:20Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(nanos in 0u64..=u64::MAX) {
            let ts = Timestamp::from_nanos(nanos);
            prop_assert_eq!(parse(&format(ts)), Some(ts));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }
    }
}

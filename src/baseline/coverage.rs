//! When the sensor was listening: the clock hours a rate may count, as quiet or as busy.
//!
//! An [`HourOfWeekRate`](super::sketch::HourOfWeekRate) records the hours between two calls of
//! an endpoint or a caller as zero-call hours, since silence is part of a rate. That is only
//! true while the sensor saw the network: across a sensor outage (a daemon stopped over a
//! weekend, a training capture and a test capture a week apart) nobody was counting, and
//! recording those hours as silence drags every learned rate down. Nor is an hour the sensor
//! listened to for a few seconds (the end of a capture) a sample of an hour's traffic.
//!
//! [`Coverage`] keeps spans of listening: from the first to the last transaction seen with no
//! whole clock hour without a transaction in between. A clock hour without a single transaction
//! on the whole monitored network is an outage, not a quiet API. An hour is *whole* when the
//! sensor listened to at least [`WHOLE_SHARE`] of it: every hour inside a span, and the span's
//! first and last hours when the span starts early or ends late enough in them. Rates record
//! whole hours only.
//!
//! Invariants: spans are `[first, last]` packet times (nanoseconds), sorted, with at least one
//! whole clock hour between a span's last hour and the next span's first hour (closer spans are
//! joined). At most [`MAX_SPANS`] spans are kept: past that the two spans with the shortest gap
//! between them are joined, so that gap counts as listened to (the behaviour before coverage
//! existed), and `gaps_joined` counts it.

use crate::common::Timestamp;
use serde::{Deserialize, Serialize};

/// Spans kept; one outage a day for eleven years.
pub const MAX_SPANS: usize = 4096;

/// Share of a clock hour the sensor must have listened to for the hour to count.
pub const WHOLE_SHARE: f64 = 0.9;

const NANOS_PER_HOUR: u64 = 3_600 * 1_000_000_000;

/// When a sensor (or several, merged) listened; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CoverageRepr")]
pub struct Coverage {
    /// `[first, last]` packet times in nanoseconds.
    spans: Vec<(u64, u64)>,
    /// Gaps counted as listened to, to stay within [`MAX_SPANS`].
    gaps_joined: u64,
}

/// The saved form, checked against the invariants before it becomes a [`Coverage`].
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CoverageRepr {
    spans: Vec<(u64, u64)>,
    gaps_joined: u64,
}

impl TryFrom<CoverageRepr> for Coverage {
    type Error = String;
    fn try_from(r: CoverageRepr) -> Result<Coverage, String> {
        if r.spans.len() > MAX_SPANS {
            return Err(format!(
                "coverage: {} spans, at most {MAX_SPANS}",
                r.spans.len()
            ));
        }
        if let Some(s) = r.spans.iter().find(|s| s.0 > s.1) {
            return Err(format!("coverage: span {s:?} ends before it starts"));
        }
        if let Some(w) = r
            .spans
            .windows(2)
            .find(|w| hour(w[1].0) <= hour(w[0].1).saturating_add(1))
        {
            return Err(format!(
                "coverage: spans {:?} and {:?} are out of order or not an empty hour apart",
                w[0], w[1]
            ));
        }
        Ok(Coverage {
            spans: r.spans,
            gaps_joined: r.gaps_joined,
        })
    }
}

impl Coverage {
    pub fn new() -> Coverage {
        Coverage::default()
    }

    /// All time: for series not tied to a sensor's listening.
    pub fn always() -> Coverage {
        Coverage {
            spans: vec![(0, u64::MAX)],
            gaps_joined: 0,
        }
    }

    /// Listening from `first` to `last` without a break: what a model saved before coverage
    /// was recorded assumed about its own period.
    pub fn through(first: Timestamp, last: Timestamp) -> Coverage {
        let (a, b) = (first.as_nanos(), last.as_nanos());
        Coverage {
            spans: vec![(a.min(b), a.max(b))],
            gaps_joined: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// `[first, last]` packet times (nanoseconds) of each span of listening.
    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    pub fn gaps_joined(&self) -> u64 {
        self.gaps_joined
    }

    /// Whole clock hours listened to.
    pub fn whole_hours(&self) -> u64 {
        self.spans.iter().fold(0u64, |n, &s| {
            n.saturating_add(whole_range(s).map_or(0, |(a, b)| b - a))
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.spans.capacity() * std::mem::size_of::<(u64, u64)>()
    }

    /// The sensor saw traffic at `ts`. In time order this is a comparison and a store.
    pub fn note(&mut self, ts: Timestamp) {
        let t = ts.as_nanos();
        match self.spans.last_mut() {
            Some(last) if t >= last.0 && hour(t) <= hour(last.1).saturating_add(1) => {
                last.1 = last.1.max(t);
            }
            Some(last) if t > last.1 => {
                self.spans.push((t, t));
                self.bound();
            }
            None => self.spans.push((t, t)),
            // Earlier than the last span (merged capture files): placed where it belongs.
            Some(_) => self.insert((t, t)),
        }
    }

    /// Adds the listening of `other` (models of several sensors, or periods, merged).
    pub fn union(&mut self, other: &Coverage) {
        for &s in &other.spans {
            self.insert(s);
        }
        self.gaps_joined = self.gaps_joined.saturating_add(other.gaps_joined);
    }

    /// Whether clock hour `h` (hours since the epoch) was listened to as a whole.
    pub fn whole(&self, h: u64) -> bool {
        let i = self.spans.partition_point(|s| hour(s.1) < h);
        self.spans
            .get(i)
            .and_then(|&s| whole_range(s))
            .is_some_and(|(a, b)| a <= h && h < b)
    }

    /// The whole hours among the clock hours `[from, to)`, as ranges in order.
    pub fn whole_in(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.spans.partition_point(|s| hour(s.1) < from);
        self.spans
            .get(first..)
            .unwrap_or_default()
            .iter()
            .take_while(move |s| hour(s.0) < to)
            .filter_map(|&s| whole_range(s))
            .map(move |(a, b)| (a.max(from), b.min(to)))
            .filter(|(a, b)| a < b)
    }

    /// Adds span `s`, joining every span it overlaps or comes within an hour of.
    fn insert(&mut self, s: (u64, u64)) {
        let near = |x: &(u64, u64), y: &(u64, u64)| hour(y.0) <= hour(x.1).saturating_add(1);
        // Spans wholly before `s` and not near it stay; so do those wholly after it.
        let lo = self.spans.partition_point(|x| x.1 < s.0 && !near(x, &s));
        let hi = self.spans.partition_point(|x| x.0 <= s.1 || near(&s, x));
        if lo >= hi {
            self.spans.insert(lo, s);
        } else {
            let start = self.spans.get(lo).map_or(s.0, |x| x.0.min(s.0));
            let end = self.spans.get(hi - 1).map_or(s.1, |x| x.1.max(s.1));
            self.spans.splice(lo..hi, [(start, end)]);
        }
        self.bound();
    }

    /// Joins the spans with the shortest gap between them until at most [`MAX_SPANS`] remain.
    fn bound(&mut self) {
        while self.spans.len() > MAX_SPANS {
            let Some(i) =
                (0..self.spans.len() - 1).min_by_key(|&i| self.spans[i + 1].0 - self.spans[i].1)
            else {
                return;
            };
            let end = self.spans[i + 1].1;
            self.spans[i].1 = end;
            self.spans.remove(i + 1);
            self.gaps_joined = self.gaps_joined.saturating_add(1);
        }
    }
}

fn hour(ns: u64) -> u64 {
    ns / NANOS_PER_HOUR
}

/// The whole clock hours `[a, b)` of span `s`, if any.
fn whole_range((first, last): (u64, u64)) -> Option<(u64, u64)> {
    let (fh, lh) = (hour(first), hour(last));
    let listened = |from: u64, to: u64| (to - from) as f64 >= WHOLE_SHARE * NANOS_PER_HOUR as f64;
    let hour_end = |h: u64| h.saturating_add(1).saturating_mul(NANOS_PER_HOUR);
    let a = if fh == lh {
        return listened(first, last).then_some((fh, fh + 1));
    } else if listened(first, hour_end(fh)) {
        fh
    } else {
        fh + 1
    };
    let b = if listened(lh.saturating_mul(NANOS_PER_HOUR), last) {
        lh.saturating_add(1)
    } else {
        lh
    };
    (a < b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60 * 1_000_000_000;

    /// `m` minutes into clock hour `h`.
    fn at(h: u64, m: u64) -> Timestamp {
        Timestamp::from_nanos(h * NANOS_PER_HOUR + m * MIN)
    }

    fn well_formed(c: &Coverage) {
        for s in c.spans() {
            assert!(s.0 <= s.1, "{c:?}");
        }
        for w in c.spans().windows(2) {
            assert!(
                hour(w[1].0) > hour(w[0].1) + 1,
                "an empty hour between: {c:?}"
            );
        }
    }

    fn wholes(c: &Coverage) -> Vec<u64> {
        (0..200).filter(|&h| c.whole(h)).collect()
    }

    #[test]
    fn an_hour_counts_when_listened_to_almost_whole() {
        let mut c = Coverage::new();
        // 5:02 .. 8:30 with traffic every 20 minutes, then nothing until 20:10 .. 20:40.
        let mut t = at(5, 2).as_nanos();
        while t <= at(8, 30).as_nanos() {
            c.note(Timestamp::from_nanos(t));
            t += 20 * MIN;
        }
        c.note(at(20, 10));
        c.note(at(20, 40));
        well_formed(&c);
        assert_eq!(c.spans().len(), 2, "{c:?}");
        // Hour 5 from :02 is 97% listened to; hour 8 up to :22 is not; hour 20 never.
        assert_eq!(wholes(&c), vec![5, 6, 7]);
        assert_eq!(c.whole_hours(), 3);
        assert_eq!(c.whole_in(0, 100).collect::<Vec<_>>(), vec![(5, 8)]);
        assert_eq!(c.whole_in(6, 7).collect::<Vec<_>>(), vec![(6, 7)]);
        assert_eq!(c.whole_in(8, 20).count(), 0, "an outage");
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Coverage>(&json).unwrap(), c);
    }

    #[test]
    fn a_quiet_hour_of_the_network_splits_the_spans() {
        let mut c = Coverage::new();
        c.note(at(1, 0));
        c.note(at(2, 59)); // the next hour: same span
        c.note(at(4, 0)); // hour 3 had nothing: a new span
        assert_eq!(c.spans().len(), 2);
        assert_eq!(wholes(&c), vec![1, 2]);
    }

    #[test]
    fn notes_in_any_order_and_unions_give_the_same_coverage() {
        let times: Vec<Timestamp> = [
            (5, 0),
            (5, 30),
            (6, 10),
            (9, 0),
            (3, 5),
            (4, 50),
            (12, 0),
            (7, 0),
            (30, 1),
            (31, 58),
            (2, 0),
        ]
        .into_iter()
        .map(|(h, m)| at(h, m))
        .collect();
        let mut sorted = times.clone();
        sorted.sort();
        let mut want = Coverage::new();
        for &t in &sorted {
            want.note(t);
        }
        let mut got = Coverage::new();
        for &t in &times {
            got.note(t);
            well_formed(&got);
        }
        assert_eq!(got, want);
        for split in 0..=sorted.len() {
            let (mut a, mut b) = (Coverage::new(), Coverage::new());
            for &t in &sorted[..split] {
                a.note(t);
            }
            for &t in &sorted[split..] {
                b.note(t);
            }
            let mut ab = a.clone();
            ab.union(&b);
            well_formed(&ab);
            assert_eq!(ab, want, "split {split}");
            b.union(&a);
            assert_eq!(b, want, "split {split}, reversed");
        }
    }

    #[test]
    fn malformed_saved_coverage_is_refused_with_the_reason() {
        let h = NANOS_PER_HOUR;
        for (json, why) in [
            (r#"{"spans":[[5,4]]}"#, "ends before it starts"),
            (
                &format!(r#"{{"spans":[[{},{}],[0,1]]}}"#, 10 * h, 11 * h) as &str,
                "out of order",
            ),
            (
                &format!(r#"{{"spans":[[0,{}],[{},{}]]}}"#, h, 2 * h, 3 * h),
                "not an empty hour apart",
            ),
            (r#"{"spans":[],"extra":1}"#, "unknown field"),
        ] {
            let e = serde_json::from_str::<Coverage>(json)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{json}: {e}");
        }
        let ok = format!(r#"{{"spans":[[0,{}],[{},{}]]}}"#, h, 3 * h, 4 * h);
        assert_eq!(
            serde_json::from_str::<Coverage>(&ok).unwrap().spans().len(),
            2
        );
        assert_eq!(
            serde_json::from_str::<Coverage>("{}").unwrap(),
            Coverage::new()
        );
    }

    #[test]
    fn always_and_through() {
        let all = Coverage::always();
        assert!(all.whole(0) && all.whole(123_456));
        assert_eq!(all.whole_in(7, 9).collect::<Vec<_>>(), vec![(7, 9)]);
        assert_eq!(Coverage::new().whole_in(0, 9).count(), 0);
        let old = Coverage::through(at(10, 0), at(14, 0));
        assert_eq!(wholes(&old), vec![10, 11, 12, 13]);
        assert_eq!(Coverage::through(at(14, 0), at(10, 0)), old);
    }

    #[test]
    fn spans_are_capped_by_joining_the_shortest_gaps() {
        let mut c = Coverage::new();
        // One note every 4 hours: every gap is the same.
        let n = MAX_SPANS as u64 + 10;
        for k in 0..n {
            c.note(at(k * 4, 0));
        }
        assert_eq!(c.spans().len(), MAX_SPANS);
        assert_eq!(c.gaps_joined(), 10);
        well_formed(&c);
        // Joined gaps count as listened to: the hours between the first notes are whole.
        assert!(c.whole(1) && c.whole(5));
        // A shorter gap is the one joined next.
        let (last, next) = (at((n - 1) * 4, 0), at((n - 1) * 4 + 2, 0));
        c.note(next);
        assert_eq!(c.spans().len(), MAX_SPANS);
        assert_eq!(c.gaps_joined(), 11);
        assert_eq!(
            c.spans().last().copied(),
            Some((last.as_nanos(), next.as_nanos()))
        );
    }
}

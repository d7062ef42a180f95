//! Which endpoints get their own `route` label: the busiest ones, chosen with bounded memory.
//!
//! A label value per endpoint would let traffic create series without bound (every scanner
//! probe a new route). [`TopRoutes`] estimates each endpoint's traffic with the space-saving
//! algorithm (Metwally, Agrawal, El Abbadi, 2005): a fixed number of counters, where an unseen
//! endpoint takes over the smallest counter and inherits its count as an overestimate. Any
//! endpoint with more than `1/capacity` of the traffic is guaranteed a counter.
//!
//! The labelled set is refreshed every `refresh` of packet time: the `k` largest counters win,
//! and every estimate is then halved, so endpoints that went quiet lose their label within a few
//! refreshes while steady ones keep it. Between refreshes an endpoint is labelled only if it
//! already was or if the set still has room, so the set cannot churn on every request.
//!
//! Invariants:
//! - At most `k` endpoints are labelled at any time; everything else is [`OTHER_ROUTE`].
//! - At most `capacity` counters exist; memory is `capacity` route strings, each bounded by the
//!   route learner's template limits.
//! - Decisions depend only on the sequence of observations and their packet times, so a pcap
//!   replay labels the same endpoints every time.

use super::metrics::OTHER_ROUTE;
use crate::common::{Duration, Timestamp};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug)]
struct Slot {
    route: String,
    /// Estimated requests since the counter was taken, halved at each refresh.
    count: u64,
    /// How much of `count` may belong to the routes this counter held before.
    error: u64,
}

/// The bounded top-K selection of labelled endpoints.
#[derive(Clone, Debug)]
pub struct TopRoutes {
    k: usize,
    capacity: usize,
    refresh_nanos: u64,
    next_refresh: Option<Timestamp>,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    selected: HashSet<String>,
}

impl TopRoutes {
    /// `k` labelled endpoints chosen among `capacity` counters (raised to `k` if smaller),
    /// refreshed every `refresh_secs` of packet time.
    pub fn new(k: usize, capacity: usize, refresh_secs: u64) -> TopRoutes {
        let capacity = capacity.max(k).max(1);
        TopRoutes {
            k,
            capacity,
            refresh_nanos: refresh_secs.max(1).saturating_mul(1_000_000_000),
            next_refresh: None,
            slots: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            selected: HashSet::with_capacity(k),
        }
    }

    /// Changes the number of labelled endpoints and the refresh period (a config reload); the
    /// new `k` applies from the next refresh on, or at once where it only adds room.
    pub fn set_limits(&mut self, k: usize, refresh_secs: u64) {
        self.k = k.min(self.capacity);
        self.refresh_nanos = refresh_secs.max(1).saturating_mul(1_000_000_000);
    }

    /// Counts one request to `route` at packet time `now`. Routes that lost their label in a
    /// refresh are appended to `unlabelled` (their series should be removed). Returns the label
    /// to use for this request: the route itself or [`OTHER_ROUTE`].
    pub fn observe<'r>(
        &mut self,
        route: &'r str,
        now: Timestamp,
        unlabelled: &mut Vec<String>,
    ) -> &'r str {
        match self.next_refresh {
            None => self.next_refresh = Some(now.add(Duration::from_nanos(self.refresh_nanos))),
            Some(at) if now >= at => {
                self.refresh(unlabelled);
                self.next_refresh = Some(now.add(Duration::from_nanos(self.refresh_nanos)));
            }
            Some(_) => {}
        }
        self.count(route);
        if self.selected.contains(route) {
            return route;
        }
        if self.selected.len() < self.k {
            self.selected.insert(route.to_owned());
            return route;
        }
        OTHER_ROUTE
    }

    /// The space-saving update.
    fn count(&mut self, route: &str) {
        if let Some(slot) = self.index.get(route).and_then(|&i| self.slots.get_mut(i)) {
            slot.count = slot.count.saturating_add(1);
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(route.to_owned(), self.slots.len());
            self.slots.push(Slot {
                route: route.to_owned(),
                count: 1,
                error: 0,
            });
            return;
        }
        // Take over the smallest counter. A linear scan: `capacity` is small (hundreds) and
        // this runs only for routes without a counter.
        let Some((i, _)) = self.slots.iter().enumerate().min_by_key(|(_, s)| s.count) else {
            return;
        };
        if let Some(slot) = self.slots.get_mut(i) {
            self.index.remove(&slot.route);
            slot.route.clear();
            slot.route.push_str(route);
            slot.error = slot.count;
            slot.count = slot.count.saturating_add(1);
            self.index.insert(route.to_owned(), i);
        }
    }

    /// Chooses the labelled set again and ages the estimates.
    fn refresh(&mut self, unlabelled: &mut Vec<String>) {
        let mut order: Vec<&Slot> = self.slots.iter().collect();
        // Ties broken by name so the choice does not depend on hash order.
        order.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.route.cmp(&b.route)));
        let chosen: HashSet<String> = order.iter().take(self.k).map(|s| s.route.clone()).collect();
        let mut gone: Vec<String> = self
            .selected
            .iter()
            .filter(|r| !chosen.contains(*r))
            .cloned()
            .collect();
        gone.sort();
        unlabelled.extend(gone);
        self.selected = chosen;
        for s in &mut self.slots {
            s.count /= 2;
            s.error /= 2;
        }
    }

    /// The labelled endpoints, sorted.
    pub fn labelled(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.selected.iter().map(String::as_str).collect();
        v.sort();
        v
    }

    /// The estimated count of a route and its possible overestimate, if it has a counter.
    pub fn estimate(&self, route: &str) -> Option<(u64, u64)> {
        let s = self.slots.get(*self.index.get(route)?)?;
        Some((s.count, s.error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_nanos(secs * SEC)
    }

    /// Feeds `(route, second)` pairs; returns the label of each and every unlabelled route.
    fn run(t: &mut TopRoutes, input: &[(String, u64)]) -> (Vec<String>, Vec<String>) {
        let mut gone = Vec::new();
        let labels = input
            .iter()
            .map(|(r, s)| t.observe(r, at(*s), &mut gone).to_owned())
            .collect();
        (labels, gone)
    }

    #[test]
    fn free_slots_label_at_once_then_the_rest_is_other() {
        let mut t = TopRoutes::new(2, 10, 60);
        let input: Vec<(String, u64)> = ["GET /a", "GET /b", "GET /c", "GET /a"]
            .iter()
            .map(|r| (r.to_string(), 0))
            .collect();
        let (labels, gone) = run(&mut t, &input);
        assert_eq!(labels, ["GET /a", "GET /b", "other", "GET /a"]);
        assert!(gone.is_empty());
    }

    #[test]
    fn refresh_labels_the_busiest_and_unlabels_the_quiet() {
        let mut t = TopRoutes::new(2, 10, 60);
        let mut input = Vec::new();
        // Two early routes fill the set, then a heavy route arrives and stays busy.
        input.push(("GET /early1".to_string(), 0));
        input.push(("GET /early2".to_string(), 0));
        for s in 1..=59 {
            input.push(("GET /heavy".to_string(), s));
            input.push(("GET /steady".to_string(), s));
        }
        let (labels, gone) = run(&mut t, &input);
        assert_eq!(
            labels.last().map(String::as_str),
            Some("other"),
            "no room before refresh"
        );
        assert!(gone.is_empty());
        // The refresh at 60 s picks the two busy routes.
        let (labels, gone) = run(&mut t, &[("GET /heavy".to_string(), 61)]);
        assert_eq!(labels, ["GET /heavy"]);
        assert_eq!(gone, ["GET /early1", "GET /early2"]);
        assert_eq!(t.labelled(), ["GET /heavy", "GET /steady"]);
    }

    #[test]
    fn a_route_that_goes_quiet_loses_its_label_to_a_new_busy_one() {
        let mut t = TopRoutes::new(1, 4, 10);
        let mut input = Vec::new();
        for s in 0..100 {
            input.push(("GET /old".to_string(), s));
        }
        for s in 100..200 {
            input.push(("GET /new".to_string(), s));
            input.push(("GET /new".to_string(), s));
        }
        let (labels, gone) = run(&mut t, &input);
        assert_eq!(labels.last().map(String::as_str), Some("GET /new"));
        assert_eq!(gone, ["GET /old"]);
        assert_eq!(t.labelled(), ["GET /new"]);
    }

    #[test]
    fn zero_series_means_everything_is_other() {
        let mut t = TopRoutes::new(0, 10, 60);
        let (labels, _) = run(
            &mut t,
            &[("GET /a".to_string(), 0), ("GET /a".to_string(), 100)],
        );
        assert_eq!(labels, ["other", "other"]);
    }

    proptest! {
        /// Whatever the traffic: at most `k` labels, at most `capacity` counters, and (within
        /// one refresh period, where no halving happens) every route with more than
        /// `n / capacity` requests has a counter whose estimate bounds its true count.
        #[test]
        fn bounds_and_the_space_saving_guarantee(
            routes in proptest::collection::vec(0u8..40, 1..600),
            k in 0usize..6,
            capacity in 1usize..16,
        ) {
            let mut t = TopRoutes::new(k, capacity, 1_000_000);
            let mut gone = Vec::new();
            let mut truth: HashMap<String, u64> = HashMap::new();
            let mut labelled_seen = HashSet::new();
            for r in &routes {
                let name = format!("GET /r{r}");
                *truth.entry(name.clone()).or_default() += 1;
                let label = t.observe(&name, at(1), &mut gone).to_owned();
                if label != OTHER_ROUTE {
                    prop_assert_eq!(&label, &name);
                    labelled_seen.insert(label);
                }
                prop_assert!(t.labelled().len() <= k);
                prop_assert!(t.slots.len() <= capacity.max(k));
            }
            prop_assert!(labelled_seen.len() <= k, "labels never refreshed away");
            let n = routes.len() as u64;
            let cap = capacity.max(k).max(1) as u64;
            for (name, count) in &truth {
                if *count > n / cap {
                    let (est, err) = t.estimate(name).expect("a heavy hitter has a counter");
                    prop_assert!(est >= *count && est - err <= *count, "{} {} {} {}", name, count, est, err);
                }
            }
        }
    }
}

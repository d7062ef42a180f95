//! Streaming sketches that keep endpoint and caller profiles bounded and mergeable.
//!
//! - [`QuantileSketch`]: DDSketch-style logarithmic buckets. Every quantile of non-negative
//!   values is returned within a relative error `alpha` of a true sample value, as long as the
//!   bucket cap was not hit; past the cap the lowest buckets collapse, so only low quantiles
//!   lose accuracy (high quantiles are what size and latency alerts need).
//! - [`Hll`]: HyperLogLog distinct counter with a sparse form for small sets and Ertl's
//!   improved raw estimator (no bias tables, no range switches).
//! - [`TopK`]: space-saving heavy-hitter counter for enum-like labels.
//! - [`HourOfWeekRate`]: calls per clock hour, folded into 168 hour-of-week buckets, so a
//!   mean rate per hour-of-week and a deviation can be computed.
//!
//! Invariants: every sketch has a size fixed at construction (bucket cap, register count,
//! capacity, 168 buckets), never grows past it whatever the input, and has
//! `merge(&mut self, &Self)` such that merging sketches of two streams equals (exactly for
//! counts, within the accuracy bound for estimates) a sketch of the concatenated stream.
//! Hashes are a fixed function (FNV-1a and a 64-bit finaliser), never seeded per process, so
//! sketches saved by one run merge with those of another.

use super::coverage::Coverage;
use crate::common::Timestamp;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Hashing
// ---------------------------------------------------------------------------------------------

/// A stable 64-bit hash of bytes: FNV-1a, then the MurmurHash3 finaliser so that every output
/// bit depends on every input bit (FNV alone leaves the high bits weak for short keys, and
/// HyperLogLog reads exactly those bits).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

// ---------------------------------------------------------------------------------------------
// Quantiles
// ---------------------------------------------------------------------------------------------

/// Smallest and largest accepted relative accuracy.
const MIN_ALPHA: f64 = 1e-4;
const MAX_ALPHA: f64 = 0.5;
/// Positive values below this are counted in the zero bucket: they carry no information for
/// sizes, durations or lengths, and would otherwise stretch the bucket range.
const MIN_POSITIVE: f64 = 1e-9;

/// A mergeable quantile sketch of non-negative values with relative accuracy `alpha`.
///
/// Value `x > 0` falls in bucket `i = ceil(ln x / ln gamma)`, `gamma = (1 + alpha) / (1 -
/// alpha)`; the bucket's representative `2 gamma^i / (gamma + 1)` is within `alpha` of every
/// value in it. Buckets are stored densely from `offset`; at most `max_buckets` of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QuantileSketchRepr", into = "QuantileSketchRepr")]
pub struct QuantileSketch {
    alpha: f64,
    // Derived from `alpha`; not serialized.
    ln_gamma: f64,
    max_buckets: u32,
    // Invariant: bins.len() <= max_buckets; bins[j] counts bucket offset + j.
    offset: i32,
    bins: Vec<u64>,
    zero_count: u64,
    count: u64,
    /// Values refused: negative, NaN or infinite.
    rejected: u64,
    /// Values folded into the lowest bucket because of `max_buckets`.
    collapsed: u64,
    min: f64,
    max: f64,
    sum: f64,
}

/// The serialized form, validated on the way back in.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuantileSketchRepr {
    alpha: f64,
    max_buckets: u32,
    offset: i32,
    bins: Vec<u64>,
    zero_count: u64,
    count: u64,
    rejected: u64,
    collapsed: u64,
    /// `None` when empty: JSON has no infinities.
    min: Option<f64>,
    max: Option<f64>,
    sum: f64,
}

impl From<QuantileSketch> for QuantileSketchRepr {
    fn from(s: QuantileSketch) -> Self {
        let (min, max) = (s.min(), s.max());
        QuantileSketchRepr {
            alpha: s.alpha,
            max_buckets: s.max_buckets,
            offset: s.offset,
            bins: s.bins,
            zero_count: s.zero_count,
            count: s.count,
            rejected: s.rejected,
            collapsed: s.collapsed,
            min,
            max,
            sum: s.sum,
        }
    }
}

impl TryFrom<QuantileSketchRepr> for QuantileSketch {
    type Error = String;
    fn try_from(r: QuantileSketchRepr) -> Result<Self, String> {
        if !(MIN_ALPHA..=MAX_ALPHA).contains(&r.alpha) {
            return Err(format!(
                "quantile sketch: alpha = {}: must be in [{MIN_ALPHA}, {MAX_ALPHA}]",
                r.alpha
            ));
        }
        if r.max_buckets == 0 || r.bins.len() > r.max_buckets as usize {
            return Err(format!(
                "quantile sketch: {} bins with max_buckets = {}",
                r.bins.len(),
                r.max_buckets
            ));
        }
        let binned = r
            .bins
            .iter()
            .fold(r.zero_count, |a, &b| a.saturating_add(b));
        if binned != r.count {
            return Err(format!(
                "quantile sketch: count = {} but bins hold {binned}",
                r.count
            ));
        }
        if r.offset.checked_add(r.bins.len() as i32).is_none() {
            return Err("quantile sketch: offset out of range".into());
        }
        let mut s = QuantileSketch::new(r.alpha, r.max_buckets as usize);
        s.offset = r.offset;
        s.bins = r.bins;
        s.zero_count = r.zero_count;
        s.count = r.count;
        s.rejected = r.rejected;
        s.collapsed = r.collapsed;
        s.min = r.min.unwrap_or(f64::INFINITY);
        s.max = r.max.unwrap_or(f64::NEG_INFINITY);
        s.sum = r.sum;
        Ok(s)
    }
}

impl QuantileSketch {
    /// A sketch with relative accuracy `alpha` (clamped to `[1e-4, 0.5]`) and at most
    /// `max_buckets` buckets (at least 1). With `alpha = 0.01`, 1024 buckets span values over
    /// nine orders of magnitude (for example 1 µs to 20 min of latency).
    pub fn new(alpha: f64, max_buckets: usize) -> Self {
        let alpha = if alpha.is_nan() {
            0.01
        } else {
            alpha.clamp(MIN_ALPHA, MAX_ALPHA)
        };
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        QuantileSketch {
            alpha,
            ln_gamma: gamma.ln(),
            max_buckets: max_buckets.clamp(1, u32::MAX as usize) as u32,
            offset: 0,
            bins: Vec::new(),
            zero_count: 0,
            count: 0,
            rejected: 0,
            collapsed: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Values added (not counting rejected ones).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Values refused because they were negative, NaN or infinite.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Values that landed in the lowest bucket because the bucket cap was hit.
    pub fn collapsed(&self) -> u64 {
        self.collapsed
    }

    /// Exact smallest value added, `None` when empty.
    pub fn min(&self) -> Option<f64> {
        (self.count > 0).then_some(self.min)
    }

    /// Exact largest value added, `None` when empty.
    pub fn max(&self) -> Option<f64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Heap bytes held (the bucket vector).
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<u64>()
    }

    pub fn add(&mut self, x: f64) {
        self.add_n(x, 1);
    }

    /// Adds `n` copies of `x`.
    pub fn add_n(&mut self, x: f64, n: u64) {
        if n == 0 {
            return;
        }
        if !x.is_finite() || x < 0.0 {
            self.rejected = self.rejected.saturating_add(n);
            return;
        }
        self.count = self.count.saturating_add(n);
        self.sum += x * n as f64;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        if x < MIN_POSITIVE {
            self.zero_count = self.zero_count.saturating_add(n);
            return;
        }
        let i = self.index_of(x);
        self.add_to_bucket(i, n);
    }

    fn index_of(&self, x: f64) -> i32 {
        // |ln x| <= 710 for finite x and ln_gamma >= 2e-4, so this fits an i32 comfortably.
        (x.ln() / self.ln_gamma).ceil() as i32
    }

    fn value_of(&self, i: i32) -> f64 {
        let gamma = self.ln_gamma.exp();
        2.0 * (f64::from(i) * self.ln_gamma).exp() / (gamma + 1.0)
    }

    fn add_to_bucket(&mut self, i: i32, n: u64) {
        if self.bins.is_empty() {
            self.offset = i;
            self.bins.push(n);
            return;
        }
        let lo = i64::from(self.offset);
        let hi = lo + self.bins.len() as i64 - 1;
        let i64i = i64::from(i);
        if (lo..=hi).contains(&i64i) {
            if let Some(b) = self.bins.get_mut((i64i - lo) as usize) {
                *b = b.saturating_add(n);
            }
            return;
        }
        let new_hi = hi.max(i64i);
        let mut new_lo = lo.min(i64i);
        let cap = i64::from(self.max_buckets);
        if new_hi - new_lo + 1 > cap {
            new_lo = new_hi - cap + 1;
        }
        self.rebase(new_lo, new_hi);
        let j = (i64i.max(new_lo) - new_lo) as usize;
        if i64i < new_lo {
            self.collapsed = self.collapsed.saturating_add(n);
        }
        if let Some(b) = self.bins.get_mut(j) {
            *b = b.saturating_add(n);
        }
    }

    /// Re-lays the bins over `[new_lo, new_hi]`, folding buckets below `new_lo` into it.
    fn rebase(&mut self, new_lo: i64, new_hi: i64) {
        let len = (new_hi - new_lo + 1).max(0) as usize;
        let mut bins = vec![0u64; len];
        let old_lo = i64::from(self.offset);
        for (j, &c) in self.bins.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let idx = old_lo + j as i64;
            if idx < new_lo {
                self.collapsed = self.collapsed.saturating_add(c);
            }
            let t = (idx.max(new_lo) - new_lo) as usize;
            if let Some(b) = bins.get_mut(t) {
                *b = b.saturating_add(c);
            }
        }
        self.bins = bins;
        // new_lo is within i32: it is either an existing index, a new index or hi - cap + 1.
        self.offset = new_lo.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    }

    /// The value at quantile `q` (clamped to `[0, 1]`), `None` when empty. Within relative
    /// error `alpha` of the sample value of that rank unless low buckets collapsed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Rank by the "lower" convention: the value with (count - 1) * q values below it.
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank < self.zero_count {
            return Some(self.min.max(0.0).min(self.max));
        }
        let mut seen = self.zero_count;
        for (j, &c) in self.bins.iter().enumerate() {
            seen = seen.saturating_add(c);
            if seen > rank {
                let v = self.value_of(self.offset.saturating_add(j as i32));
                return Some(v.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Adds `other`'s values. Sketches of different accuracy merge by re-adding the other's
    /// bucket representatives, which keeps the coarser of the two error bounds.
    pub fn merge(&mut self, other: &QuantileSketch) {
        if other.count == 0 {
            self.rejected = self.rejected.saturating_add(other.rejected);
            return;
        }
        let (min, max) = (self.min.min(other.min), self.max.max(other.max));
        let sum = self.sum + other.sum;
        if self.alpha.to_bits() == other.alpha.to_bits() {
            for (j, &c) in other.bins.iter().enumerate() {
                if c > 0 {
                    self.add_to_bucket(other.offset.saturating_add(j as i32), c);
                }
            }
            self.zero_count = self.zero_count.saturating_add(other.zero_count);
            self.count = self.count.saturating_add(other.count);
        } else {
            for (j, &c) in other.bins.iter().enumerate() {
                if c > 0 {
                    let v = other.value_of(other.offset.saturating_add(j as i32));
                    self.add_n(v, c);
                }
            }
            self.add_n(0.0, other.zero_count);
        }
        self.collapsed = self.collapsed.saturating_add(other.collapsed);
        self.rejected = self.rejected.saturating_add(other.rejected);
        self.min = min;
        self.max = max;
        self.sum = sum;
    }
}

// ---------------------------------------------------------------------------------------------
// HyperLogLog
// ---------------------------------------------------------------------------------------------

/// Smallest and largest register-index width.
pub const HLL_MIN_PRECISION: u8 = 4;
pub const HLL_MAX_PRECISION: u8 = 16;

/// A HyperLogLog distinct counter with `2^p` registers; standard error about `1.04 / sqrt(2^p)`
/// (1.6 % at `p = 12`).
///
/// Small sets are kept sparse, as sorted `(index << 8 | rank)` words, and become a dense
/// register array once the sparse list would be larger than it. Both forms give the same
/// estimate for the same registers, so the switch is invisible to callers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HllRepr", into = "HllRepr")]
pub struct Hll {
    p: u8,
    repr: HllRepr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HllRepr {
    p: u8,
    /// Sorted, one word per non-zero register, used while `dense` is empty.
    sparse: Vec<u32>,
    /// `2^p` registers once dense.
    dense: Vec<u8>,
}

impl From<Hll> for HllRepr {
    fn from(h: Hll) -> Self {
        h.repr
    }
}

impl TryFrom<HllRepr> for Hll {
    type Error = String;
    fn try_from(r: HllRepr) -> Result<Self, String> {
        if !(HLL_MIN_PRECISION..=HLL_MAX_PRECISION).contains(&r.p) {
            return Err(format!("hll: p = {}: must be in 4..=16", r.p));
        }
        let m = 1usize << r.p;
        let max_rank = 65 - u32::from(r.p);
        if !r.dense.is_empty() && (r.dense.len() != m || !r.sparse.is_empty()) {
            return Err(format!("hll: {} dense registers, want {m}", r.dense.len()));
        }
        if r.dense.iter().any(|&v| u32::from(v) > max_rank) {
            return Err("hll: register above its maximum rank".into());
        }
        let sorted = r.sparse.windows(2).all(|w| (w[0] >> 8) < (w[1] >> 8));
        let valid = r
            .sparse
            .iter()
            .all(|&w| ((w >> 8) as usize) < m && (1..=max_rank).contains(&(w & 0xff)));
        if !sorted || !valid || r.sparse.len() > m {
            return Err("hll: malformed sparse registers".into());
        }
        Ok(Hll { p: r.p, repr: r })
    }
}

impl Hll {
    /// An empty counter with `2^p` registers, `p` clamped to `4..=16`.
    pub fn new(p: u8) -> Self {
        let p = p.clamp(HLL_MIN_PRECISION, HLL_MAX_PRECISION);
        Hll {
            p,
            repr: HllRepr {
                p,
                sparse: Vec::new(),
                dense: Vec::new(),
            },
        }
    }

    pub fn precision(&self) -> u8 {
        self.p
    }

    pub fn is_empty(&self) -> bool {
        self.repr.sparse.is_empty() && self.repr.dense.iter().all(|&r| r == 0)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.repr.sparse.capacity() * 4 + self.repr.dense.capacity()
    }

    pub fn insert(&mut self, item: &[u8]) {
        self.insert_hash(hash64(item));
    }

    /// Inserts a value already hashed with a good 64-bit hash.
    pub fn insert_hash(&mut self, h: u64) {
        let p = u32::from(self.p);
        let idx = (h >> (64 - p)) as u32;
        let w = h << p;
        // Rank: position of the first 1 bit in the remaining 64 - p bits, 65 - p if none.
        let rank = (w.leading_zeros() + 1).min(65 - p);
        self.set(idx, rank as u8);
    }

    fn set(&mut self, idx: u32, rank: u8) {
        if !self.repr.dense.is_empty() {
            if let Some(r) = self.repr.dense.get_mut(idx as usize) {
                *r = (*r).max(rank);
            }
            return;
        }
        let sparse = &mut self.repr.sparse;
        match sparse.binary_search_by_key(&idx, |w| w >> 8) {
            Ok(pos) => {
                if let Some(w) = sparse.get_mut(pos) {
                    if (*w & 0xff) < u32::from(rank) {
                        *w = idx << 8 | u32::from(rank);
                    }
                }
            }
            Err(pos) => {
                sparse.insert(pos, idx << 8 | u32::from(rank));
                // Four bytes per sparse word against one per dense register.
                if sparse.len() * 4 >= 1usize << self.p {
                    self.densify();
                }
            }
        }
    }

    fn densify(&mut self) {
        let mut dense = vec![0u8; 1usize << self.p];
        for &w in &self.repr.sparse {
            if let Some(r) = dense.get_mut((w >> 8) as usize) {
                *r = (*r).max((w & 0xff) as u8);
            }
        }
        self.repr.sparse = Vec::new();
        self.repr.dense = dense;
    }

    /// `(index, rank)` of every non-zero register.
    fn registers(&self) -> Box<dyn Iterator<Item = (u32, u8)> + '_> {
        if self.repr.dense.is_empty() {
            Box::new(self.repr.sparse.iter().map(|&w| (w >> 8, (w & 0xff) as u8)))
        } else {
            Box::new(
                self.repr
                    .dense
                    .iter()
                    .enumerate()
                    .filter(|&(_, &r)| r > 0)
                    .map(|(i, &r)| (i as u32, r)),
            )
        }
    }

    /// Estimated number of distinct items inserted.
    pub fn estimate(&self) -> f64 {
        let p = u32::from(self.p);
        let q = 64 - p;
        let m = (1u64 << p) as f64;
        // Histogram of register values 0..=q+1.
        let mut c = vec![0u64; q as usize + 2];
        let mut nonzero = 0u64;
        for (_, r) in self.registers() {
            if let Some(slot) = c.get_mut(r as usize) {
                *slot += 1;
            }
            nonzero += 1;
        }
        if let Some(c0) = c.get_mut(0) {
            *c0 = (1u64 << p) - nonzero;
        }
        // Ertl 2017, "New cardinality estimation algorithms for HyperLogLog sketches", the
        // improved raw estimator: unbiased over the whole range without empirical tables.
        let last = c.get(q as usize + 1).copied().unwrap_or(0) as f64;
        let mut z = m * ertl_tau(1.0 - last / m);
        for k in (1..=q as usize).rev() {
            z = 0.5 * (z + c.get(k).copied().unwrap_or(0) as f64);
        }
        z += m * ertl_sigma(c.first().copied().unwrap_or(0) as f64 / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        if z.is_infinite() {
            return 0.0;
        }
        alpha_inf * m * m / z
    }

    /// This counter's registers at a lower precision `p2 < p`: the dropped index bits become
    /// the leading bits of the rank word, so the result equals a counter built at `p2`.
    fn reduced(&self, p2: u8) -> Hll {
        let mut out = Hll::new(p2);
        let d = u32::from(self.p - out.p);
        let max2 = 65 - u32::from(out.p);
        for (idx, r) in self.registers() {
            let low = idx & ((1u32 << d) - 1);
            let rank = if low != 0 {
                // Leading zeros of `low` within its d bits, plus one.
                low.leading_zeros() - (32 - d) + 1
            } else {
                d + u32::from(r)
            };
            out.set(idx >> d, rank.min(max2) as u8);
        }
        out
    }

    /// Union with `other`. Counters of different precision merge at the lower one.
    pub fn merge(&mut self, other: &Hll) {
        if other.p > self.p {
            let o = other.reduced(self.p);
            self.merge_same(&o);
        } else if other.p < self.p {
            *self = self.reduced(other.p);
            self.merge_same(other);
        } else {
            self.merge_same(other);
        }
    }

    fn merge_same(&mut self, other: &Hll) {
        if other.repr.dense.is_empty() && self.repr.dense.is_empty() {
            // Two sorted lists: merge them, then densify once if the result is large.
            let (a, b) = (&self.repr.sparse, &other.repr.sparse);
            let mut out = Vec::with_capacity(a.len() + b.len());
            let (mut i, mut j) = (0, 0);
            while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
                match (x >> 8).cmp(&(y >> 8)) {
                    std::cmp::Ordering::Less => {
                        out.push(x);
                        i += 1;
                    }
                    std::cmp::Ordering::Greater => {
                        out.push(y);
                        j += 1;
                    }
                    std::cmp::Ordering::Equal => {
                        out.push(x.max(y));
                        i += 1;
                        j += 1;
                    }
                }
            }
            out.extend_from_slice(a.get(i..).unwrap_or(&[]));
            out.extend_from_slice(b.get(j..).unwrap_or(&[]));
            self.repr.sparse = out;
            if self.repr.sparse.len() * 4 >= 1usize << self.p {
                self.densify();
            }
            return;
        }
        if self.repr.dense.is_empty() {
            self.densify();
        }
        for (idx, r) in other.registers() {
            self.set(idx, r);
        }
    }
}

fn ertl_sigma(mut x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if prev == z {
            return z;
        }
    }
}

fn ertl_tau(mut x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if prev == z {
            return z / 3.0;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Heavy hitters
// ---------------------------------------------------------------------------------------------

/// One tracked label of a [`TopK`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKEntry {
    pub item: String,
    /// Upper bound on the label's true count.
    pub count: u64,
    /// How much of `count` may belong to labels this entry evicted: the true count is in
    /// `count - error ..= count`.
    pub error: u64,
}

/// Space-saving heavy-hitter counter (Metwally et al.): at most `capacity` labels; a new label
/// when full replaces the least counted one and inherits its count as error. Exact while the
/// number of distinct labels stays within capacity; any label with more than
/// `total / capacity` occurrences is always tracked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopK {
    capacity: u32,
    entries: Vec<TopKEntry>,
    total: u64,
    /// Labels that displaced another because the counter was full.
    evictions: u64,
}

impl TopK {
    /// An empty counter keeping at most `capacity` labels (at least 1).
    pub fn new(capacity: usize) -> Self {
        TopK {
            capacity: capacity.clamp(1, u32::MAX as usize) as u32,
            entries: Vec::new(),
            total: 0,
            evictions: 0,
        }
    }

    pub fn add(&mut self, item: &str) {
        self.add_n(item, 1);
    }

    pub fn add_n(&mut self, item: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.total = self.total.saturating_add(n);
        if let Some(e) = self.entries.iter_mut().find(|e| e.item == item) {
            e.count = e.count.saturating_add(n);
            return;
        }
        if self.entries.len() < self.capacity as usize {
            self.entries.push(TopKEntry {
                item: item.to_owned(),
                count: n,
                error: 0,
            });
            return;
        }
        self.evictions = self.evictions.saturating_add(1);
        if let Some(min) = self.entries.iter_mut().min_by_key(|e| e.count) {
            let floor = min.count;
            *min = TopKEntry {
                item: item.to_owned(),
                count: floor.saturating_add(n),
                error: floor,
            };
        }
    }

    /// Every occurrence added, tracked or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Upper bound on `item`'s count; `None` when not tracked.
    pub fn get(&self, item: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.item == item)
            .map(|e| e.count)
    }

    /// Tracked labels, most counted first (ties by label, so output is deterministic).
    pub fn entries(&self) -> Vec<&TopKEntry> {
        let mut v: Vec<_> = self.entries.iter().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.item.cmp(&b.item)));
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<TopKEntry>()
            + self
                .entries
                .iter()
                .map(|e| e.item.capacity())
                .sum::<usize>()
    }

    /// The count a label absent from a full counter may have had: its minimum.
    fn floor(&self) -> u64 {
        if self.entries.len() < self.capacity as usize {
            0
        } else {
            self.entries.iter().map(|e| e.count).min().unwrap_or(0)
        }
    }

    /// Mergeable-summaries union (Agarwal et al. 2012): a label missing from a full side may
    /// have had up to that side's minimum there, so it gets that much added as count and
    /// error; then the `capacity` largest survive. Exact when the union fits.
    pub fn merge(&mut self, other: &TopK) {
        let (fa, fb) = (self.floor(), other.floor());
        let mut all: Vec<TopKEntry> = Vec::with_capacity(self.entries.len() + other.entries.len());
        for e in &self.entries {
            let (oc, oe) = match other.entries.iter().find(|o| o.item == e.item) {
                Some(o) => (o.count, o.error),
                None => (fb, fb),
            };
            all.push(TopKEntry {
                item: e.item.clone(),
                count: e.count.saturating_add(oc),
                error: e.error.saturating_add(oe),
            });
        }
        for o in &other.entries {
            if !self.entries.iter().any(|e| e.item == o.item) {
                all.push(TopKEntry {
                    item: o.item.clone(),
                    count: o.count.saturating_add(fa),
                    error: o.error.saturating_add(fa),
                });
            }
        }
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.item.cmp(&b.item)));
        let cap = self.capacity.min(other.capacity.max(self.capacity)) as usize;
        if all.len() > cap {
            self.evictions = self.evictions.saturating_add((all.len() - cap) as u64);
            all.truncate(cap);
        }
        self.entries = all;
        self.total = self.total.saturating_add(other.total);
        self.evictions = self.evictions.saturating_add(other.evictions);
    }
}

// ---------------------------------------------------------------------------------------------
// Hour-of-week rate
// ---------------------------------------------------------------------------------------------

/// Hours in a week; bucket 0 is Thursday 00:00 UTC, because the Unix epoch was a Thursday.
pub const HOURS_PER_WEEK: usize = 168;
const NANOS_PER_HOUR: u64 = 3_600 * 1_000_000_000;

/// One hour-of-week bucket: the closed clock hours that fell on it and their call counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourBucket {
    /// Clock hours observed (including quiet hours with zero calls).
    pub hours: u32,
    /// Calls in those hours.
    pub sum: u64,
    /// Sum of squared per-hour counts, for the variance.
    pub sum_sq: u64,
}

impl HourBucket {
    fn record(&mut self, calls: u64) {
        self.hours = self.hours.saturating_add(1);
        self.sum = self.sum.saturating_add(calls);
        self.sum_sq = self.sum_sq.saturating_add(calls.saturating_mul(calls));
    }

    fn add(&mut self, o: &HourBucket) {
        self.hours = self.hours.saturating_add(o.hours);
        self.sum = self.sum.saturating_add(o.sum);
        self.sum_sq = self.sum_sq.saturating_add(o.sum_sq);
    }
}

/// Which learned hours an expected rate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateBasis {
    /// The same hour of the week.
    HourOfWeek,
    /// The same hour of the day (UTC), on any day.
    HourOfDay,
    /// Every closed hour.
    Overall,
}

impl RateBasis {
    pub fn name(self) -> &'static str {
        match self {
            RateBasis::HourOfWeek => "hour_of_week",
            RateBasis::HourOfDay => "hour_of_day",
            RateBasis::Overall => "overall",
        }
    }
}

/// An expected hourly rate and what it rests on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateEstimate {
    /// Mean calls per clock hour.
    pub per_hour: f64,
    /// Closed hours the mean was taken over.
    pub hours: u64,
    pub basis: RateBasis,
}

/// Calls per clock hour folded into 168 hour-of-week buckets.
///
/// The hour in progress stays open until an event from a later hour closes it; the quiet hours
/// in between are recorded as zero-call hours, since silence is part of the rate. Only hours
/// the sensor listened to whole (see [`Coverage`]) are recorded, busy or quiet: across an
/// outage nobody counted, and a few minutes heard are not an hour's sample; busy hours left
/// out are counted (`partial`). The series starts at the first event: hours before it are
/// unknown, not zero.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HourOfWeekRate {
    /// Invariant: exactly [`HOURS_PER_WEEK`] buckets, or none before the first event.
    /// Saved sparsely (see [`week_buckets`]): most callers are seen in a few hours of the week.
    #[serde(with = "week_buckets")]
    buckets: Vec<HourBucket>,
    /// Clock hour (hours since the epoch) of the first event.
    first_hour: Option<u64>,
    /// The open clock hour and its calls so far.
    open_hour: u64,
    open_calls: u64,
    /// Calls in the first clock hour, so a merge with a series ending in that hour is exact.
    first_calls: u64,
    /// Events older than the open hour, counted into their own bucket's sum but not as hours.
    late: u64,
    /// Hours with calls that the sensor did not listen to as a whole: left out of the buckets.
    #[serde(default, skip_serializing_if = "is_zero")]
    partial: u64,
    /// Whether the first hour was closed as partial (its calls are `first_calls`), so a merge
    /// that finds it whole after all can still record it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    first_partial: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for HourOfWeekRate {
    fn default() -> Self {
        Self::new()
    }
}

impl HourOfWeekRate {
    pub fn new() -> Self {
        HourOfWeekRate {
            buckets: Vec::new(),
            first_hour: None,
            open_hour: 0,
            open_calls: 0,
            first_calls: 0,
            late: 0,
            partial: 0,
            first_partial: false,
        }
    }

    /// Hour-of-week bucket of a timestamp.
    pub fn hour_of_week(ts: Timestamp) -> usize {
        ((ts.as_nanos() / NANOS_PER_HOUR) % HOURS_PER_WEEK as u64) as usize
    }

    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<HourBucket>()
    }

    /// Events that arrived after a later hour had opened.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Hours with calls left out because the sensor did not listen to them as a whole.
    pub fn partial(&self) -> u64 {
        self.partial
    }

    fn bucket_mut(&mut self, hour: u64) -> Option<&mut HourBucket> {
        if self.buckets.len() != HOURS_PER_WEEK {
            self.buckets = vec![HourBucket::default(); HOURS_PER_WEEK];
        }
        self.buckets
            .get_mut((hour % HOURS_PER_WEEK as u64) as usize)
    }

    /// Records `n` calls at `ts`; of the hours since the previous call, those `cov` says were
    /// listened to whole were quiet.
    pub fn observe(&mut self, ts: Timestamp, n: u64, cov: &Coverage) {
        let hour = ts.as_nanos() / NANOS_PER_HOUR;
        match self.first_hour {
            None => {
                self.first_hour = Some(hour);
                self.open_hour = hour;
                self.open_calls = n;
                self.first_calls = n;
            }
            Some(first) if hour == self.open_hour => {
                self.open_calls = self.open_calls.saturating_add(n);
                if hour == first {
                    self.first_calls = self.first_calls.saturating_add(n);
                }
            }
            Some(_) if hour > self.open_hour => {
                self.close_open(cov);
                self.record_quiet(self.open_hour + 1, hour, cov);
                self.open_hour = hour;
                self.open_calls = n;
            }
            Some(_) => {
                // Out of order across hours (merged capture files): its hour is already
                // closed; keep the call in the totals without inventing an hour.
                self.late = self.late.saturating_add(n);
                if let Some(b) = self.bucket_mut(hour) {
                    b.sum = b.sum.saturating_add(n);
                }
            }
        }
    }

    fn close_open(&mut self, cov: &Coverage) {
        let (h, c) = (self.open_hour, self.open_calls);
        if !self.record_hour(h, c, cov) && Some(h) == self.first_hour {
            self.first_partial = true;
        }
        self.open_calls = 0;
    }

    /// Records clock hour `h` with `calls` if `cov` says the sensor listened to it as a whole;
    /// counts it as partial otherwise. True if recorded.
    fn record_hour(&mut self, h: u64, calls: u64, cov: &Coverage) -> bool {
        if !cov.whole(h) {
            self.partial = self.partial.saturating_add(1);
            return false;
        }
        if let Some(b) = self.bucket_mut(h) {
            b.record(calls);
        }
        true
    }

    /// Records every hour in `[from, to)` that `cov` says was listened to whole as a zero-call
    /// hour, in O(168) per span of listening whatever its length.
    fn record_quiet(&mut self, from: u64, to: u64, cov: &Coverage) {
        for (a, b) in cov.whole_in(from, to) {
            self.record_quiet_span(a, b);
        }
    }

    /// Records every hour in `[from, to)` as a zero-call hour.
    fn record_quiet_span(&mut self, from: u64, to: u64) {
        if to <= from {
            return;
        }
        let gap = to - from;
        let weeks = gap / HOURS_PER_WEEK as u64;
        let rest = gap % HOURS_PER_WEEK as u64;
        if self.buckets.len() != HOURS_PER_WEEK {
            self.buckets = vec![HourBucket::default(); HOURS_PER_WEEK];
        }
        if weeks > 0 {
            let w = u32::try_from(weeks).unwrap_or(u32::MAX);
            for b in &mut self.buckets {
                b.hours = b.hours.saturating_add(w);
            }
        }
        for k in 0..rest {
            if let Some(b) = self.bucket_mut(from + weeks * HOURS_PER_WEEK as u64 + k) {
                b.hours = b.hours.saturating_add(1);
            }
        }
    }

    /// Closed-hour statistics of one hour-of-week bucket.
    pub fn bucket(&self, hour_of_week: usize) -> HourBucket {
        self.buckets.get(hour_of_week).copied().unwrap_or_default()
    }

    /// Closed hours recorded over all buckets.
    pub fn hours_observed(&self) -> u64 {
        self.buckets.iter().map(|b| u64::from(b.hours)).sum()
    }

    /// Mean calls per hour at this hour of the week, `None` before any hour closed there.
    pub fn mean(&self, hour_of_week: usize) -> Option<f64> {
        let b = self.bucket(hour_of_week);
        (b.hours > 0).then(|| b.sum as f64 / f64::from(b.hours))
    }

    /// The expected calls per hour at `ts`, from the most specific learned basis: this
    /// hour of the week, else this hour of the day (UTC) on other days, else the mean over
    /// every closed hour. A short learning run (hours, not weeks) has no bucket for most
    /// hours of the week, so detectors need the fallbacks. `None` before any hour closed.
    pub fn expected_per_hour(&self, ts: Timestamp) -> Option<RateEstimate> {
        let how = Self::hour_of_week(ts);
        let b = self.bucket(how);
        if b.hours > 0 {
            return Some(RateEstimate {
                per_hour: b.sum as f64 / f64::from(b.hours),
                hours: u64::from(b.hours),
                basis: RateBasis::HourOfWeek,
            });
        }
        let (mut day_sum, mut day_hours, mut all_sum, mut all_hours) = (0u64, 0u64, 0u64, 0u64);
        for (i, b) in self.buckets.iter().enumerate() {
            all_sum = all_sum.saturating_add(b.sum);
            all_hours = all_hours.saturating_add(u64::from(b.hours));
            if i % 24 == how % 24 {
                day_sum = day_sum.saturating_add(b.sum);
                day_hours = day_hours.saturating_add(u64::from(b.hours));
            }
        }
        let (sum, hours, basis) = if day_hours > 0 {
            (day_sum, day_hours, RateBasis::HourOfDay)
        } else {
            (all_sum, all_hours, RateBasis::Overall)
        };
        (hours > 0).then(|| RateEstimate {
            per_hour: sum as f64 / hours as f64,
            hours,
            basis,
        })
    }

    /// How unusual `calls` in one hour at `ts` is: `(calls - mean) / scale`, where scale is
    /// the bucket's standard deviation floored by the Poisson spread `sqrt(mean)` and by 1, so
    /// a bucket that was always identical or nearly empty does not turn every change into a
    /// huge score. `None` until `min_hours` hours closed in that bucket.
    pub fn deviation(&self, ts: Timestamp, calls: u64, min_hours: u32) -> Option<f64> {
        let b = self.bucket(Self::hour_of_week(ts));
        if b.hours == 0 || b.hours < min_hours {
            return None;
        }
        let n = f64::from(b.hours);
        let mean = b.sum as f64 / n;
        let var = (b.sum_sq as f64 / n - mean * mean).max(0.0);
        let scale = var.sqrt().max(mean.sqrt()).max(1.0);
        Some((calls as f64 - mean) / scale)
    }

    /// Adds `other`; `cov` is when either was listening (the union of their coverages). When
    /// the two series cover disjoint periods (one may end in the hour the other starts) the
    /// result equals one series fed both streams in time order under `cov`, quiet hours between
    /// them included, even if each was learned under its own coverage only. Overlapping periods
    /// (two sensors at once) add their closed hours, and the later open hour stays open: an
    /// approximation, as the per-hour counts of the two cannot be paired after the fact.
    pub fn merge(&mut self, other: &HourOfWeekRate, cov: &Coverage) {
        match (self.first_hour, other.first_hour) {
            (_, None) => {}
            (None, Some(_)) => *self = other.clone(),
            // The series that started first (or, starting in the same hour, ended first)
            // takes the other after it.
            (Some(a), Some(b)) if (b, other.open_hour) < (a, self.open_hour) => {
                let mut early = other.clone();
                early.merge_later(self, cov);
                *self = early;
            }
            (Some(_), Some(_)) => self.merge_later(other, cov),
        }
    }

    /// `merge` for an `other` that started no earlier than `self`.
    fn merge_later(&mut self, other: &HourOfWeekRate, cov: &Coverage) {
        let (Some(a_first), Some(b_first)) = (self.first_hour, other.first_hour) else {
            return;
        };
        if self.open_hour < b_first {
            // Disjoint: self ends before other starts.
            self.close_open(cov);
            self.record_quiet(self.open_hour + 1, b_first, cov);
            add_closed(self, other);
            // Other's first hour, partial to other alone, may be whole to both.
            if other.first_partial && other.open_hour != b_first && cov.whole(b_first) {
                self.partial = self.partial.saturating_sub(1);
                self.record_hour(b_first, other.first_calls, cov);
            }
            self.open_hour = other.open_hour;
            self.open_calls = other.open_calls;
        } else if self.open_hour == b_first {
            // Touching: self's last hour is other's first; their calls share one clock hour.
            let (ca, cb) = (self.open_calls, other.first_calls);
            add_closed(self, other);
            if other.open_hour == b_first {
                self.open_calls = ca.saturating_add(other.open_calls);
            } else {
                if !other.first_partial {
                    if let Some(bk) = self.bucket_mut(b_first) {
                        let both = ca.saturating_add(cb);
                        bk.sum = bk.sum.saturating_add(ca);
                        bk.sum_sq = bk
                            .sum_sq
                            .saturating_sub(cb.saturating_mul(cb))
                            .saturating_add(both.saturating_mul(both));
                    }
                } else if cov.whole(b_first) {
                    self.partial = self.partial.saturating_sub(1);
                    self.record_hour(b_first, ca.saturating_add(cb), cov);
                }
                if a_first == b_first {
                    self.first_partial = other.first_partial && !cov.whole(b_first);
                }
                self.open_hour = other.open_hour;
                self.open_calls = other.open_calls;
            }
            if a_first == b_first {
                self.first_calls = self.first_calls.saturating_add(cb);
            }
        } else {
            add_closed(self, other);
            match self.open_hour.cmp(&other.open_hour) {
                std::cmp::Ordering::Equal => {
                    self.open_calls = self.open_calls.saturating_add(other.open_calls)
                }
                std::cmp::Ordering::Less => {
                    self.close_open(cov);
                    self.open_hour = other.open_hour;
                    self.open_calls = other.open_calls;
                }
                std::cmp::Ordering::Greater => {
                    let (h, c) = (other.open_hour, other.open_calls);
                    self.record_hour(h, c, cov);
                }
            }
        }
    }
}

/// Adds `o`'s closed hours and late events into `me`.
fn add_closed(me: &mut HourOfWeekRate, o: &HourOfWeekRate) {
    if o.buckets.len() == HOURS_PER_WEEK {
        for h in 0..HOURS_PER_WEEK {
            let ob = o.bucket(h);
            if let Some(b) = me.bucket_mut(h as u64) {
                b.add(&ob);
            }
        }
    }
    me.late = me.late.saturating_add(o.late);
    me.partial = me.partial.saturating_add(o.partial);
}

/// The saved form of [`HourOfWeekRate`]'s buckets. A caller active a few hours of the week
/// would otherwise write 168 mostly empty buckets; a model of a few thousand callers was 90%
/// empty buckets, and loading it was a visible share of a detection run.
///
/// Written as `[]` before any bucket exists, else as
/// `{"hours_of_week": 168, "nonzero": [[index, hours, sum, sum_sq], ...]}` with indices
/// strictly ascending, so a series reads back exactly as it was. Models written before this
/// form hold the dense list of 168 bucket objects; both are read.
mod week_buckets {
    use super::{HourBucket, HOURS_PER_WEEK};
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};
    use serde::{Deserialize, Serialize};
    use std::fmt;

    const LEN: &str = "hours_of_week";
    const NONZERO: &str = "nonzero";

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    enum Field {
        #[serde(rename = "hours_of_week")]
        Len,
        #[serde(rename = "nonzero")]
        Nonzero,
    }

    pub fn serialize<S: Serializer>(buckets: &[HourBucket], s: S) -> Result<S::Ok, S::Error> {
        if buckets.is_empty() {
            // Nothing closed yet: the same `[]` as the dense form.
            return s.serialize_seq(Some(0))?.end();
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(LEN, &buckets.len())?;
        m.serialize_entry(NONZERO, &Nonzero(buckets))?;
        m.end()
    }

    struct Nonzero<'a>(&'a [HourBucket]);

    impl Serialize for Nonzero<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let empty = HourBucket::default();
            let mut seq = s.serialize_seq(None)?;
            for (i, b) in self.0.iter().enumerate().filter(|(_, b)| **b != empty) {
                seq.serialize_element(&(i, b.hours, b.sum, b.sum_sq))?;
            }
            seq.end()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HourBucket>, D::Error> {
        d.deserialize_any(BucketsVisitor)
    }

    struct BucketsVisitor;

    impl<'de> Visitor<'de> for BucketsVisitor {
        type Value = Vec<HourBucket>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "hour-of-week buckets: {{\"{LEN}\", \"{NONZERO}\"}} or a list of {HOURS_PER_WEEK}"
            )
        }

        /// The dense form of older models.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<HourBucket>()? {
                if out.len() == HOURS_PER_WEEK {
                    return Err(de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(b);
            }
            if !out.is_empty() && out.len() != HOURS_PER_WEEK {
                return Err(de::Error::invalid_length(out.len(), &self));
            }
            Ok(out)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut len: Option<usize> = None;
            let mut entries: Option<Vec<(usize, u32, u64, u64)>> = None;
            while let Some(key) = map.next_key::<Field>()? {
                match key {
                    Field::Len if len.is_none() => len = Some(map.next_value()?),
                    Field::Nonzero if entries.is_none() => entries = Some(map.next_value()?),
                    Field::Len => return Err(de::Error::duplicate_field(LEN)),
                    Field::Nonzero => return Err(de::Error::duplicate_field(NONZERO)),
                }
            }
            let len = len.ok_or_else(|| de::Error::missing_field(LEN))?;
            let entries = entries.ok_or_else(|| de::Error::missing_field(NONZERO))?;
            if len != 0 && len != HOURS_PER_WEEK {
                return Err(de::Error::custom(format!(
                    "{LEN} is {len}; it must be 0 or {HOURS_PER_WEEK}"
                )));
            }
            let mut out = vec![HourBucket::default(); len];
            let mut next = 0;
            for (i, hours, sum, sum_sq) in entries {
                let slot = out.get_mut(i).filter(|_| i >= next).ok_or_else(|| {
                    de::Error::custom(format!("bucket index {i} out of order or not below {len}"))
                })?;
                *slot = HourBucket { hours, sum, sum_sq };
                next = i + 1;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (SplitMix64) so accuracy tests are reproducible.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            fmix64(self.0)
        }
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
        sorted[rank]
    }

    fn check_quantiles(values: &[f64], alpha: f64) {
        let mut s = QuantileSketch::new(alpha, 4096);
        for &v in values {
            s.add(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0] {
            let want = exact_quantile(&sorted, q);
            let got = s.quantile(q).unwrap();
            let err = (got - want).abs() / want.max(1e-12);
            assert!(
                err <= alpha + 1e-9,
                "q={q} want {want} got {got} rel err {err} > {alpha}"
            );
        }
        assert_eq!(s.count(), values.len() as u64);
        assert_eq!(s.min(), Some(sorted[0]));
        assert_eq!(s.max(), Some(*sorted.last().unwrap()));
    }

    #[test]
    fn quantiles_are_within_relative_accuracy_on_random_data() {
        let mut rng = Rng(7);
        // Uniform, log-uniform over six decades (latencies), and heavy-tailed Pareto.
        let uniform: Vec<f64> = (0..20_000).map(|_| 1.0 + rng.unit() * 1000.0).collect();
        let log_uniform: Vec<f64> = (0..20_000).map(|_| 10f64.powf(rng.unit() * 6.0)).collect();
        let pareto: Vec<f64> = (0..20_000)
            .map(|_| 1.0 / (1.0 - rng.unit()).max(1e-9).powf(1.0 / 1.5))
            .collect();
        for alpha in [0.01, 0.02, 0.05] {
            check_quantiles(&uniform, alpha);
            check_quantiles(&log_uniform, alpha);
            check_quantiles(&pareto, alpha);
        }
    }

    #[test]
    fn zeros_and_bad_values() {
        let mut s = QuantileSketch::new(0.01, 64);
        assert_eq!(s.quantile(0.5), None);
        for v in [0.0, 0.0, 0.0, 10.0] {
            s.add(v);
        }
        s.add(-1.0);
        s.add(f64::NAN);
        s.add(f64::INFINITY);
        assert_eq!(s.count(), 4);
        assert_eq!(s.rejected(), 3);
        assert_eq!(s.quantile(0.5), Some(0.0));
        let top = s.quantile(1.0).unwrap();
        assert!((top - 10.0).abs() <= 0.1, "{top}");
    }

    #[test]
    fn bucket_cap_collapses_low_buckets_and_keeps_high_quantiles() {
        let mut s = QuantileSketch::new(0.01, 50);
        let mut rng = Rng(3);
        let mut values: Vec<f64> = (0..5000).map(|_| 10f64.powf(rng.unit() * 6.0)).collect();
        for &v in &values {
            s.add(v);
        }
        assert!(s.bins.len() <= 50);
        assert!(s.collapsed() > 0);
        values.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let want = exact_quantile(&values, 1.0);
        let got = s.quantile(1.0).unwrap();
        assert!((got - want).abs() / want <= 0.01);
        // The top 50 buckets at alpha 0.01 cover a factor of about 2.7: p99.9 is still exact.
        let want = exact_quantile(&values, 0.999);
        let got = s.quantile(0.999).unwrap();
        assert!((got - want).abs() / want <= 0.01, "{got} {want}");
    }

    #[test]
    fn quantile_merge_equals_single_pass() {
        let mut rng = Rng(11);
        let values: Vec<f64> = (0..10_000).map(|_| 10f64.powf(rng.unit() * 4.0)).collect();
        let mut whole = QuantileSketch::new(0.01, 2048);
        let mut a = QuantileSketch::new(0.01, 2048);
        let mut b = QuantileSketch::new(0.01, 2048);
        for (i, &v) in values.iter().enumerate() {
            whole.add(v);
            if i % 3 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        assert_eq!(a.bins, {
            // Same buckets: the dense layout may differ only by trailing/leading zeros.
            let mut w = whole.clone();
            w.rebase(
                i64::from(a.offset),
                i64::from(a.offset) + a.bins.len() as i64 - 1,
            );
            w.bins
        });
        for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.quantile(q), whole.quantile(q));
        }
        // Different accuracies still merge, within the coarser bound.
        let mut coarse = QuantileSketch::new(0.05, 2048);
        coarse.merge(&whole);
        let mut sorted = values.clone();
        sorted.sort_by(|x, y| x.partial_cmp(y).unwrap());
        let want = exact_quantile(&sorted, 0.9);
        let got = coarse.quantile(0.9).unwrap();
        assert!((got - want).abs() / want <= 0.05 + 0.01 + 1e-9);
    }

    #[test]
    fn quantile_serde_round_trip_and_validation() {
        let mut s = QuantileSketch::new(0.02, 128);
        for v in [1.0, 2.0, 3.0, 500.0, 0.0] {
            s.add(v);
        }
        let empty = QuantileSketch::new(0.02, 128);
        let json = serde_json::to_string(&empty).unwrap();
        assert_eq!(
            serde_json::from_str::<QuantileSketch>(&json).unwrap(),
            empty
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: QuantileSketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let bad = json.replace("\"count\":5", "\"count\":6");
        assert!(serde_json::from_str::<QuantileSketch>(&bad).is_err());
        let bad = json.replace("\"max_buckets\":128", "\"max_buckets\":1");
        assert!(serde_json::from_str::<QuantileSketch>(&bad).is_err());
    }

    fn hll_with(p: u8, range: std::ops::Range<u64>) -> Hll {
        let mut h = Hll::new(p);
        for i in range {
            h.insert(format!("caller-{i}").as_bytes());
        }
        h
    }

    #[test]
    fn hll_error_is_a_few_percent_at_1e5() {
        let h = hll_with(12, 0..100_000);
        let est = h.estimate();
        let err = (est - 100_000.0).abs() / 100_000.0;
        assert!(err < 0.05, "estimate {est}, error {err}");
        assert_eq!(h.heap_bytes(), 4096);
    }

    #[test]
    fn hll_small_sets_are_nearly_exact_and_sparse() {
        for n in [0u64, 1, 2, 10, 100, 500] {
            let h = hll_with(12, 0..n);
            let est = h.estimate();
            assert!(
                (est - n as f64).abs() <= (n as f64 * 0.02).max(0.5),
                "n={n} est={est}"
            );
            if n <= 500 {
                assert!(h.repr.dense.is_empty(), "n={n} should still be sparse");
            }
        }
        // Duplicates do not count.
        let mut h = Hll::new(12);
        for _ in 0..1000 {
            h.insert(b"same");
        }
        assert!((h.estimate() - 1.0).abs() < 0.01);
    }

    #[test]
    fn hll_merge_equals_single_pass_and_sparse_dense_agree() {
        let whole = hll_with(12, 0..30_000);
        let mut a = hll_with(12, 0..20_000);
        let b = hll_with(12, 10_000..30_000);
        a.merge(&b);
        assert_eq!(a.estimate(), whole.estimate());
        // Sparse into dense and dense into sparse.
        let mut small = hll_with(12, 0..50);
        small.merge(&whole);
        assert_eq!(small.estimate(), whole.estimate());
        let mut big = whole.clone();
        big.merge(&hll_with(12, 0..50));
        assert_eq!(big.estimate(), whole.estimate());
        // Two sparse halves give the same registers as one sparse pass.
        let mut s1 = hll_with(12, 0..200);
        s1.merge(&hll_with(12, 200..400));
        assert_eq!(s1, hll_with(12, 0..400));
    }

    #[test]
    fn hll_precision_reduction_equals_building_at_lower_precision() {
        for n in [100u64, 20_000] {
            let mut hi = hll_with(14, 0..n);
            let lo = hll_with(10, 0..n);
            assert_eq!(hi.reduced(10).estimate(), lo.estimate());
            hi.merge(&hll_with(10, 0..0));
            assert_eq!(hi.precision(), 10);
            assert_eq!(hi.estimate(), lo.estimate());
        }
    }

    #[test]
    fn hll_serde_round_trip_and_validation() {
        for n in [10u64, 5000] {
            let h = hll_with(12, 0..n);
            let json = serde_json::to_string(&h).unwrap();
            let back: Hll = serde_json::from_str(&json).unwrap();
            assert_eq!(back, h);
        }
        assert!(serde_json::from_str::<Hll>(r#"{"p":20,"sparse":[],"dense":[]}"#).is_err());
        assert!(serde_json::from_str::<Hll>(r#"{"p":4,"sparse":[],"dense":[1,2]}"#).is_err());
        assert!(serde_json::from_str::<Hll>(r#"{"p":4,"sparse":[513,257],"dense":[]}"#).is_err());
        assert!(serde_json::from_str::<Hll>(r#"{"p":4,"sparse":[257,513],"dense":[]}"#).is_ok());
    }

    #[test]
    fn topk_is_exact_within_capacity_and_keeps_heavy_hitters() {
        let mut t = TopK::new(4);
        for s in ["200", "200", "404", "200", "500"] {
            t.add(s);
        }
        let got: Vec<_> = t
            .entries()
            .iter()
            .map(|e| (e.item.as_str(), e.count))
            .collect();
        assert_eq!(got, vec![("200", 3), ("404", 1), ("500", 1)]);
        // Three heavy labels, each about a sixth of the stream, among 1000 singletons: above
        // total / capacity, so space-saving must keep them.
        let mut t = TopK::new(10);
        let mut rng = Rng(5);
        for i in 0..1000 {
            t.add(&format!("noise-{i}"));
            t.add(["a", "b", "c"][(rng.next() % 3) as usize]);
        }
        for heavy in ["a", "b", "c"] {
            assert!(t.get(heavy).is_some(), "{heavy} lost");
        }
        assert_eq!(t.len(), 10);
        assert!(t.evictions() > 0);
        for e in t.entries() {
            assert!(e.error <= e.count);
        }
    }

    #[test]
    fn topk_merge_equals_single_pass_within_capacity() {
        let stream = ["GET", "POST", "GET", "PUT", "GET", "POST"];
        let mut whole = TopK::new(8);
        let (mut a, mut b) = (TopK::new(8), TopK::new(8));
        for (i, s) in stream.iter().enumerate() {
            whole.add(s);
            if i < 3 {
                a.add(s)
            } else {
                b.add(s)
            }
        }
        a.merge(&b);
        assert_eq!(a.entries(), whole.entries());
        assert_eq!(a.total(), whole.total());
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<TopK>(&json).unwrap(), a);
    }

    #[test]
    fn topk_merge_of_full_counters_bounds_counts() {
        let mut a = TopK::new(2);
        let mut b = TopK::new(2);
        for s in ["x", "x", "x", "y", "z"] {
            a.add(s);
        }
        for s in ["x", "w", "w", "w", "w", "v"] {
            b.add(s);
        }
        a.merge(&b);
        assert_eq!(a.len(), 2);
        // True counts: x 4, w 4. Both survive, and each count is an upper bound with a
        // lower bound count - error at or below the truth.
        for (item, truth) in [("x", 4u64), ("w", 4)] {
            let e = a
                .entries()
                .into_iter()
                .find(|e| e.item == item)
                .unwrap()
                .clone();
            assert!(e.count >= truth && e.count - e.error <= truth, "{e:?}");
        }
        assert_eq!(a.total(), 11);
    }

    fn at_hour(h: u64) -> Timestamp {
        Timestamp::from_nanos(h * NANOS_PER_HOUR + 17)
    }

    #[test]
    fn hour_of_week_counts_quiet_hours_and_weeks() {
        let mut r = HourOfWeekRate::new();
        // Five calls in hour 0, two in hour 3: hours 1 and 2 were quiet.
        for _ in 0..5 {
            r.observe(at_hour(0), 1, &Coverage::always());
        }
        r.observe(at_hour(3), 2, &Coverage::always());
        assert_eq!(
            r.bucket(0),
            HourBucket {
                hours: 1,
                sum: 5,
                sum_sq: 25
            }
        );
        assert_eq!(r.bucket(1).hours, 1);
        assert_eq!(r.bucket(2).hours, 1);
        assert_eq!(r.bucket(3).hours, 0, "hour 3 is still open");
        // Three weeks and one hour later: every bucket gains about three quiet hours.
        r.observe(at_hour(3 + 3 * 168 + 1), 1, &Coverage::always());
        assert_eq!(r.hours_observed(), 3 + 1 + (3 * 168));
        assert_eq!(
            r.bucket(3),
            HourBucket {
                hours: 1 + 3,
                sum: 2,
                sum_sq: 4
            }
        );
        assert_eq!(r.mean(0), Some(5.0 / 4.0));
        // Late events keep their calls without inventing hours.
        r.observe(at_hour(10), 1, &Coverage::always());
        assert_eq!(r.late(), 1);
    }

    #[test]
    fn hour_of_week_deviation_is_robust_to_flat_history() {
        let mut r = HourOfWeekRate::new();
        for week in 0..4u64 {
            for _ in 0..100 {
                r.observe(at_hour(week * 168 + 5), 1, &Coverage::always());
            }
        }
        r.observe(at_hour(3 * 168 + 6), 1, &Coverage::always());
        let ts = at_hour(4 * 168 + 5);
        assert_eq!(r.mean(5), Some(100.0));
        // Always exactly 100: scale falls back to sqrt(100) = 10.
        assert_eq!(r.deviation(ts, 100, 2), Some(0.0));
        assert_eq!(r.deviation(ts, 400, 2), Some(30.0));
        assert_eq!(r.deviation(ts, 400, 5), None);
    }

    #[test]
    fn expected_rate_falls_back_from_week_to_day_to_overall() {
        let mut r = HourOfWeekRate::new();
        assert_eq!(r.expected_per_hour(at_hour(0)), None);
        // Hours 0..3 of the first day with 10, 20, 30 calls; hour 3 stays open.
        for (h, n) in [(0u64, 10u64), (1, 20), (2, 30), (3, 1)] {
            r.observe(at_hour(h), n, &Coverage::always());
        }
        let week = r.expected_per_hour(at_hour(1)).unwrap();
        assert_eq!((week.per_hour, week.basis), (20.0, RateBasis::HourOfWeek));
        // A week later, hour 1 again: the same bucket.
        let again = r.expected_per_hour(at_hour(168 + 1)).unwrap();
        assert_eq!(again.basis, RateBasis::HourOfWeek);
        // The next day's hour 2 was never seen that day of the week: hour of day.
        let day = r.expected_per_hour(at_hour(24 + 2)).unwrap();
        assert_eq!((day.per_hour, day.basis), (30.0, RateBasis::HourOfDay));
        // Hour 10 was never seen on any day: the overall mean of the closed hours.
        let all = r.expected_per_hour(at_hour(10)).unwrap();
        assert_eq!(
            (all.per_hour, all.hours, all.basis),
            (20.0, 3, RateBasis::Overall)
        );
    }

    /// Listening through the whole of clock hours `hours`.
    fn listening(hours: impl IntoIterator<Item = u64>) -> Coverage {
        let mut cov = Coverage::new();
        for h in hours {
            cov.note(at_hour(h));
            cov.note(Timestamp::from_nanos((h + 1) * NANOS_PER_HOUR - 1));
        }
        cov
    }

    /// Hours the sensor was not listening in are neither quiet nor busy: a series spanning an
    /// outage records quiet hours only on either side of it, in observing as in merging.
    #[test]
    fn quiet_hours_are_recorded_only_where_the_sensor_listened() {
        // Listening in hours 0..5 and 50..53; an outage in between.
        let cov = listening((0..5).chain(50..53));
        let mut r = HourOfWeekRate::new();
        r.observe(at_hour(1), 4, &cov);
        r.observe(at_hour(51), 2, &cov);
        // Hour 1 closed with 4 calls; hours 2..5 and 50 quiet; hours 5..50 unknown.
        assert_eq!(r.hours_observed(), 1 + 3 + 1);
        assert_eq!(r.bucket(1).hours, 1);
        assert_eq!(r.bucket(3).hours, 1);
        assert_eq!(r.bucket(20).hours, 0, "in the outage");
        assert_eq!(r.bucket(50).hours, 1);
        assert_eq!(r.mean(1), Some(4.0));
        // The same series listening throughout counts the outage as silence.
        let mut always = HourOfWeekRate::new();
        always.observe(at_hour(1), 4, &Coverage::always());
        always.observe(at_hour(51), 2, &Coverage::always());
        assert_eq!(always.hours_observed(), 50);
        // Two halves merged with the same coverage equal the single pass.
        let (mut a, mut b) = (HourOfWeekRate::new(), HourOfWeekRate::new());
        a.observe(at_hour(1), 4, &cov);
        b.observe(at_hour(51), 2, &cov);
        a.merge(&b, &cov);
        assert_eq!(a, r);
        let mut first = HourOfWeekRate::new();
        first.observe(at_hour(1), 4, &cov);
        b.merge(&first, &cov);
        assert_eq!(b, r);
    }

    /// The last hour of a capture that ends seconds into it is not an hour's sample: it is
    /// left out and counted, and a merge that finds it whole after all records it.
    #[test]
    fn an_hour_heard_for_seconds_is_left_out_until_a_merge_finds_it_whole() {
        let end = Timestamp::from_nanos(4 * NANOS_PER_HOUR + 11_000_000_000);
        let mut train = listening(0..4);
        train.note(end);
        let mut r = HourOfWeekRate::new();
        for h in 0..4 {
            r.observe(at_hour(h), 100, &train);
        }
        r.observe(end, 1, &train);
        // A week later the series goes on: hour 4 (one call in 11 s) is partial, not a zero.
        let later = 4 + HOURS_PER_WEEK as u64;
        let mut both = train.clone();
        both.union(&listening([later, later + 1]));
        r.observe(at_hour(later), 100, &both);
        r.observe(at_hour(later + 1), 100, &both);
        assert_eq!(r.partial(), 1);
        assert_eq!(r.bucket(4).hours, 1, "hour 4 of the later week only");
        assert_eq!(r.mean(4), Some(100.0));
        // A series that began in a partial first hour, merged under a coverage that heard all
        // of it: recorded, as a single pass under that coverage would.
        let mid = Timestamp::from_nanos(10 * NANOS_PER_HOUR + 40 * 60_000_000_000);
        let mut late = Coverage::new();
        late.note(mid);
        for h in 11..13 {
            late.note(at_hour(h));
        }
        let mut b = HourOfWeekRate::new();
        b.observe(mid, 3, &late);
        b.observe(at_hour(11), 5, &late);
        b.observe(at_hour(12), 5, &late);
        assert_eq!((b.partial(), b.bucket(10).hours), (1, 0));
        let full = listening(0..13);
        let mut a = HourOfWeekRate::new();
        a.observe(at_hour(2), 7, &full);
        let mut single = a.clone();
        for (t, n) in [(mid, 3), (at_hour(11), 5), (at_hour(12), 5)] {
            single.observe(t, n, &full);
        }
        a.merge(&b, &full);
        assert_eq!(a, single);
        assert_eq!(
            a.bucket(10),
            HourBucket {
                hours: 1,
                sum: 3,
                sum_sq: 9
            }
        );
        assert_eq!(a.partial(), 0);
    }

    /// A stream split in two at any event, each half learned under the coverage of its own
    /// events, then merged under both coverages: the same as one pass under them.
    #[test]
    fn halves_learned_under_their_own_coverage_merge_to_the_single_pass() {
        let min = |h: u64, m: u64| Timestamp::from_nanos(h * NANOS_PER_HOUR + m * 60_000_000_000);
        let events: Vec<Timestamp> = [
            (0, 30),
            (0, 50),
            (1, 10),
            (1, 55),
            (2, 0),
            (2, 40),
            (3, 5),
            (3, 58),
            (4, 0),
            (9, 20),
            (10, 2),
            (10, 59),
            (11, 30),
            (200, 1),
            (200, 58),
            (201, 3),
        ]
        .into_iter()
        .map(|(h, m)| min(h, m))
        .collect();
        let mut all = Coverage::new();
        for &t in &events {
            all.note(t);
        }
        let mut whole = HourOfWeekRate::new();
        for &t in &events {
            whole.observe(t, 1, &all);
        }
        // Hours 0 (from :30), 4 (one minute), 9 (from :20) and 11 (to :30) are partial; 201
        // is open.
        assert_eq!(whole.partial(), 4);
        assert_eq!(whole.hours_observed(), 3 + 1 + 1);
        let mut rescued = 0;
        for split in 0..=events.len() {
            let (mut ca, mut cb) = (Coverage::new(), Coverage::new());
            let (mut a, mut b) = (HourOfWeekRate::new(), HourOfWeekRate::new());
            for &t in &events[..split] {
                ca.note(t);
                a.observe(t, 1, &ca);
            }
            for &t in &events[split..] {
                cb.note(t);
                b.observe(t, 1, &cb);
            }
            // The half starting mid-hour found its first hour partial; both halves heard it.
            rescued += usize::from(b.first_partial && all.whole(b.first_hour.unwrap_or(0)));
            let mut ab = a.clone();
            ab.merge(&b, &all);
            assert_eq!(ab, whole, "split {split}");
            b.merge(&a, &all);
            assert_eq!(b, whole, "split {split}, reversed");
        }
        assert!(rescued >= 3, "{rescued}");
    }

    #[test]
    fn hour_of_week_merge_of_disjoint_periods_equals_single_pass() {
        let events: Vec<u64> = vec![0, 0, 1, 5, 5, 5, 200, 201, 201, 400, 1000];
        let mut whole = HourOfWeekRate::new();
        for &h in &events {
            whole.observe(at_hour(h), 1, &Coverage::always());
        }
        for split in 0..=events.len() {
            let (mut a, mut b) = (HourOfWeekRate::new(), HourOfWeekRate::new());
            for &h in &events[..split] {
                a.observe(at_hour(h), 1, &Coverage::always());
            }
            for &h in &events[split..] {
                b.observe(at_hour(h), 1, &Coverage::always());
            }
            let mut ab = a.clone();
            ab.merge(&b, &Coverage::always());
            assert_eq!(ab, whole, "split {split}");
            let mut ba = b.clone();
            ba.merge(&a, &Coverage::always());
            assert_eq!(ba, whole, "split {split}, reversed");
        }
        // Overlap in the open hour adds calls.
        let (mut a, mut b) = (HourOfWeekRate::new(), HourOfWeekRate::new());
        a.observe(at_hour(7), 3, &Coverage::always());
        b.observe(at_hour(7), 4, &Coverage::always());
        a.merge(&b, &Coverage::always());
        a.observe(at_hour(8), 0, &Coverage::always());
        assert_eq!(
            a.bucket(7),
            HourBucket {
                hours: 1,
                sum: 7,
                sum_sq: 49
            }
        );
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<HourOfWeekRate>(&json).unwrap(), a);
    }

    #[test]
    fn hour_of_week_is_saved_sparsely_and_reads_back_exactly() {
        let fresh = HourOfWeekRate::new();
        // Begun, nothing closed, and a late call of none: allocated, every bucket empty.
        let mut begun = HourOfWeekRate::new();
        begun.observe(at_hour(3), 2, &Coverage::always());
        begun.observe(at_hour(2), 0, &Coverage::always());
        assert_eq!(begun.buckets, vec![HourBucket::default(); HOURS_PER_WEEK]);
        let mut busy = HourOfWeekRate::new();
        for (h, n) in [
            (5, 4),
            (6, 0),
            (29, 7),
            (29, 1),
            (200, 3),
            (201, 9),
            (1000, 2),
        ] {
            busy.observe(at_hour(h), n, &Coverage::always());
        }
        busy.observe(at_hour(100), 5, &Coverage::always()); // late
        for r in [&fresh, &begun, &busy] {
            let json = serde_json::to_string(r).unwrap();
            let back: HourOfWeekRate = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, r, "{json}");
            assert_eq!(back.heap_bytes(), r.heap_bytes());
            let nonzero = r
                .buckets
                .iter()
                .filter(|b| **b != HourBucket::default())
                .count();
            assert_eq!(
                json.matches("],[").count() + usize::from(nonzero > 0),
                nonzero,
                "{json}"
            );
        }
        assert!(busy.buckets.iter().filter(|b| b.hours > 0).count() > 100);
        let json = serde_json::to_string(&busy).unwrap();
        assert!(json.len() < 3 * 1024, "{} bytes", json.len());
    }

    #[test]
    fn hour_of_week_reads_the_dense_form_of_older_models() {
        let mut r = HourOfWeekRate::new();
        for (h, n) in [(1, 4), (2, 6), (170, 1)] {
            r.observe(at_hour(h), n, &Coverage::always());
        }
        let mut dense = serde_json::to_value(&r).unwrap();
        dense["buckets"] = serde_json::to_value(&r.buckets).unwrap();
        assert_eq!(dense["buckets"].as_array().unwrap().len(), HOURS_PER_WEEK);
        assert_eq!(serde_json::from_value::<HourOfWeekRate>(dense).unwrap(), r);
    }

    #[test]
    fn hour_of_week_rejects_malformed_buckets() {
        let with = |buckets: &str| {
            format!(
                r#"{{"buckets":{buckets},"first_hour":1,"open_hour":1,"open_calls":0,"first_calls":0,"late":0}}"#
            )
        };
        let ok = with(r#"{"hours_of_week":168,"nonzero":[[0,1,2,4],[167,1,1,1]]}"#);
        assert!(serde_json::from_str::<HourOfWeekRate>(&ok).is_ok(), "{ok}");
        for bad in [
            r#"{"hours_of_week":24,"nonzero":[]}"#,
            r#"{"hours_of_week":0,"nonzero":[[0,1,1,1]]}"#,
            r#"{"hours_of_week":168,"nonzero":[[168,1,1,1]]}"#,
            r#"{"hours_of_week":168,"nonzero":[[9,1,1,1],[3,1,1,1]]}"#,
            r#"{"hours_of_week":168,"nonzero":[[9,1,1,1],[9,1,1,1]]}"#,
            r#"{"hours_of_week":168,"nonzero":[[-1,1,1,1]]}"#,
            r#"{"hours_of_week":168}"#,
            r#"{"nonzero":[]}"#,
            r#"{"hours_of_week":168,"hours_of_week":168,"nonzero":[]}"#,
            r#"{"hours_of_week":168,"nonzero":[],"extra":1}"#,
            r#"[{"hours":1,"sum":1,"sum_sq":1}]"#,
            "7",
        ] {
            let json = with(bad);
            assert!(
                serde_json::from_str::<HourOfWeekRate>(&json).is_err(),
                "{json}"
            );
        }
        let full = vec![HourBucket::default(); HOURS_PER_WEEK + 1];
        let json = with(&serde_json::to_string(&full).unwrap());
        assert!(serde_json::from_str::<HourOfWeekRate>(&json).is_err());
    }
}

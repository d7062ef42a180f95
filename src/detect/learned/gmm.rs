//! Gaussian mixtures: fitted with linfa, scored here.
//!
//! A [`Mixture`] is a small Gaussian mixture model over robustly standardised feature vectors:
//! each feature is centred on its training median and divided by its spread (interquartile
//! range, never below a floor, so a feature that was constant in training does not turn every
//! later wobble into an infinite surprise). linfa's `GaussianMixtureModel` does the EM fit from
//! a k-means++ start, seeded with a fixed xoshiro seed, so a fit is a pure function of its sorted
//! input. (linfa's random start was tried: uniform random responsibilities leave every component
//! at the global mean, and EM stops before the symmetry breaks. Its k-means runs the assignment
//! step on rayon's pool, row by row, so the result does not depend on the thread count; fits
//! only happen in `apitap learn`.) linfa has no log-likelihood method, so [`Scorer`]
//! computes the negative log-density from the stored weights, means and covariances with its own
//! Cholesky factors (at most [`MAX_DIM`] features: a few hundred flops per score, no allocation).
//!
//! The score of a vector is its surprise in nats, `-ln p(x)`. The threshold comes from the
//! training scores: `median + margin × (q − median)` where `q` is the training score quantile at
//! `1 − false_alarm_rate`, and never less than `median + min_excess`: a model whose training
//! scores are all alike (a constant shape) still needs a real departure before it speaks.
//!
//! Invariants: scoring never panics and never allocates; a stored model whose shapes disagree
//! with its dimension, or whose covariances are not positive definite, is refused at load.

use linfa::prelude::Fit;
use linfa::DatasetBase;
use linfa_clustering::{GaussianMixtureModel, GmmInitMethod};
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use serde::{Deserialize, Serialize};

/// Features per vector, at most.
pub const MAX_DIM: usize = 8;

/// Components per mixture, at most.
pub const MAX_COMPONENTS: usize = 8;

/// The fixed seed of every fit: fits are reproducible bit for bit.
const SEED: u64 = 0x6170_6974_6170_2d6d;

/// How a mixture is fitted.
#[derive(Clone, Debug)]
pub struct FitParams {
    /// Components tried first; fewer are tried when a fit fails (empty or collapsed component).
    pub components: usize,
    pub max_iterations: u64,
    /// Added to each covariance diagonal, in standardised units.
    pub reg_covariance: f64,
    /// Spread floor per feature, in the feature's own units.
    pub min_scale: [f64; MAX_DIM],
    pub false_alarm_rate: f64,
    pub margin: f64,
    pub min_excess: f64,
}

/// A fitted mixture with its standardisation and its threshold, as stored in `detect.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mixture {
    /// Per feature: training median.
    pub center: Vec<f64>,
    /// Per feature: spread the feature is divided by.
    pub scale: Vec<f64>,
    /// Per component.
    pub weights: Vec<f64>,
    /// Per component, `dim` values.
    pub means: Vec<Vec<f64>>,
    /// Per component, `dim × dim` values, row-major.
    pub covariances: Vec<Vec<f64>>,
    /// Training score (nats) quantiles: median and at `1 − false_alarm_rate`.
    pub score_median: f64,
    pub score_quantile: f64,
    /// Scores above this are anomalous.
    pub threshold: f64,
    /// Per feature: training quantiles 0.5, 0.99 and 0.999, in feature units (evidence).
    pub feature_quantiles: Vec<[f64; 3]>,
    /// Samples the fit used.
    pub samples: usize,
}

/// Why a fit gave nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum FitError {
    TooFewSamples(usize),
    Linfa(String),
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::TooFewSamples(n) => write!(f, "{n} samples are too few to fit"),
            FitError::Linfa(e) => write!(f, "{e}"),
        }
    }
}

/// Quantile `q` of sorted values (nearest rank, upper side); 0 for none.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.saturating_sub(1).min(sorted.len() - 1);
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Fits a mixture to `samples` (each of length `dim`), which the caller has sorted.
pub fn fit(samples: &[Vec<f64>], dim: usize, p: &FitParams) -> Result<Mixture, FitError> {
    let n = samples.len();
    if n < 10 || dim == 0 || dim > MAX_DIM {
        return Err(FitError::TooFewSamples(n));
    }
    let mut center = vec![0.0; dim];
    let mut scale = vec![1.0; dim];
    let mut feature_quantiles = vec![[0.0; 3]; dim];
    let mut col = Vec::with_capacity(n);
    for j in 0..dim {
        col.clear();
        col.extend(samples.iter().map(|s| s.get(j).copied().unwrap_or(0.0)));
        col.sort_by(f64::total_cmp);
        let (q1, q2, q3) = (
            quantile_sorted(&col, 0.25),
            quantile_sorted(&col, 0.5),
            quantile_sorted(&col, 0.75),
        );
        center[j] = q2;
        scale[j] = ((q3 - q1) / 1.349).max(p.min_scale.get(j).copied().unwrap_or(0.1));
        feature_quantiles[j] = [
            q2,
            quantile_sorted(&col, 0.99),
            quantile_sorted(&col, 0.999),
        ];
    }
    let mut x = Array2::<f64>::zeros((n, dim));
    for (i, s) in samples.iter().enumerate() {
        for j in 0..dim {
            x[[i, j]] = (s.get(j).copied().unwrap_or(0.0) - center[j]) / scale[j];
        }
    }
    let data = DatasetBase::from(x);
    let mut last = String::new();
    for k in (1..=p.components.clamp(1, MAX_COMPONENTS).min(n / 5).max(1)).rev() {
        let params = GaussianMixtureModel::params(k)
            .with_rng(Xoshiro256Plus::seed_from_u64(SEED))
            .init_method(GmmInitMethod::KMeans)
            .n_runs(1)
            .tolerance(1e-4)
            .reg_covariance(p.reg_covariance)
            .max_n_iterations(p.max_iterations);
        match params.fit(&data) {
            Ok(g) => {
                let mut m = Mixture {
                    center: center.clone(),
                    scale: scale.clone(),
                    weights: g.weights().to_vec(),
                    means: g.means().outer_iter().map(|r| r.to_vec()).collect(),
                    covariances: g
                        .covariances()
                        .outer_iter()
                        .map(|c| c.iter().copied().collect())
                        .collect(),
                    score_median: 0.0,
                    score_quantile: 0.0,
                    threshold: f64::INFINITY,
                    feature_quantiles: feature_quantiles.clone(),
                    samples: n,
                };
                let Ok(scorer) = Scorer::new(&m) else {
                    last = "a component's covariance is not positive definite".into();
                    continue;
                };
                let mut scores: Vec<f64> = samples.iter().map(|s| scorer.score(s)).collect();
                scores.sort_by(f64::total_cmp);
                m.score_median = quantile_sorted(&scores, 0.5);
                m.score_quantile = quantile_sorted(&scores, 1.0 - p.false_alarm_rate);
                m.threshold = threshold(m.score_median, m.score_quantile, p.margin, p.min_excess);
                return Ok(m);
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(FitError::Linfa(last))
}

/// `median + margin × (q − median)`, at least `median + min_excess`.
pub fn threshold(median: f64, q: f64, margin: f64, min_excess: f64) -> f64 {
    median + (margin * (q - median)).max(min_excess)
}

/// One component ready to score: the lower Cholesky factor of its covariance.
#[derive(Clone, Debug)]
struct Component {
    /// `ln w − ½ (d ln 2π + ln |Σ|)`.
    log_norm: f64,
    mean: [f64; MAX_DIM],
    /// Row-major lower triangle of `L` with `Σ = L Lᵀ`.
    chol: [[f64; MAX_DIM]; MAX_DIM],
}

/// A [`Mixture`] prepared for scoring.
#[derive(Clone, Debug)]
pub struct Scorer {
    dim: usize,
    center: [f64; MAX_DIM],
    scale: [f64; MAX_DIM],
    components: Vec<Component>,
}

impl Scorer {
    /// Checks a stored mixture and factors its covariances.
    pub fn new(m: &Mixture) -> Result<Scorer, String> {
        let dim = m.center.len();
        if dim == 0 || dim > MAX_DIM {
            return Err(format!("{dim} features: must be 1 to {MAX_DIM}"));
        }
        if m.scale.len() != dim || m.scale.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err("scale: one positive value per feature expected".into());
        }
        let k = m.weights.len();
        if k == 0 || k > MAX_COMPONENTS || m.means.len() != k || m.covariances.len() != k {
            return Err("weights, means and covariances disagree on the component count".into());
        }
        let mut center = [0.0; MAX_DIM];
        let mut scale = [1.0; MAX_DIM];
        center[..dim].copy_from_slice(&m.center);
        scale[..dim].copy_from_slice(&m.scale);
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let mut components = Vec::with_capacity(k);
        for ((w, mean), cov) in m.weights.iter().zip(&m.means).zip(&m.covariances) {
            if mean.len() != dim || cov.len() != dim * dim || !(*w > 0.0 && w.is_finite()) {
                return Err("a component has the wrong shape or a non-positive weight".into());
            }
            let chol = cholesky(cov, dim).ok_or("a covariance is not positive definite")?;
            let log_det: f64 = (0..dim).map(|i| 2.0 * chol[i][i].ln()).sum();
            let mut mu = [0.0; MAX_DIM];
            mu[..dim].copy_from_slice(mean);
            components.push(Component {
                log_norm: w.ln() - 0.5 * (dim as f64 * ln2pi + log_det),
                mean: mu,
                chol,
            });
        }
        Ok(Scorer {
            dim,
            center,
            scale,
            components,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `-ln p(x)` in nats; missing features count as the median, non-finite ones as huge.
    pub fn score(&self, x: &[f64]) -> f64 {
        let mut z = [0.0; MAX_DIM];
        for (j, zj) in z.iter_mut().enumerate().take(self.dim) {
            let v = x.get(j).copied().unwrap_or(self.center[j]);
            let v = if v.is_finite() { v } else { 1e6 };
            *zj = (v - self.center[j]) / self.scale[j];
        }
        // log-sum-exp over components.
        let mut terms = [0.0; MAX_COMPONENTS];
        let mut max = f64::NEG_INFINITY;
        for (c, t) in self.components.iter().zip(terms.iter_mut()) {
            let mut y = [0.0; MAX_DIM];
            let mut m2 = 0.0;
            // Forward substitution: L y = z − μ, Mahalanobis² = |y|².
            for i in 0..self.dim {
                let done: f64 = c.chol[i][..i].iter().zip(&y[..i]).map(|(a, b)| a * b).sum();
                y[i] = (z[i] - c.mean[i] - done) / c.chol[i][i];
                m2 += y[i] * y[i];
            }
            *t = c.log_norm - 0.5 * m2;
            max = max.max(*t);
        }
        let sum: f64 = terms
            .iter()
            .take(self.components.len())
            .map(|t| (t - max).exp())
            .sum();
        -(max + sum.ln())
    }

    /// Per feature, the standardised value: how many spreads from the training median.
    pub fn standardised(&self, x: &[f64], j: usize) -> f64 {
        match (x.get(j), self.center.get(j), self.scale.get(j)) {
            (Some(v), Some(c), Some(s)) if j < self.dim => (v - c) / s,
            _ => 0.0,
        }
    }
}

/// Lower Cholesky factor of a symmetric `dim × dim` row-major matrix; `None` unless positive
/// definite.
fn cholesky(a: &[f64], dim: usize) -> Option<[[f64; MAX_DIM]; MAX_DIM]> {
    let mut l = [[0.0; MAX_DIM]; MAX_DIM];
    for i in 0..dim {
        for j in 0..=i {
            let done: f64 = l[i][..j].iter().zip(&l[j][..j]).map(|(x, y)| x * y).sum();
            let s = *a.get(i * dim + j)? - done;
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> FitParams {
        FitParams {
            components: 3,
            max_iterations: 200,
            reg_covariance: 1e-3,
            min_scale: [0.01; MAX_DIM],
            false_alarm_rate: 0.01,
            margin: 1.0,
            min_excess: 0.0,
        }
    }

    /// A deterministic pseudo-random stream in `[0, 1)` (splitmix64).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Standard normal pairs by Box-Muller.
    fn normals(n: usize, dim: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut u = uniform(seed);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        let (a, b) = (u().max(1e-12), u());
                        (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn score_of_a_single_gaussian_is_its_negative_log_density() {
        // One component, identity covariance, unit scale: -ln N(x) = ½(d ln 2π + |x|²).
        let m = Mixture {
            center: vec![0.0, 0.0],
            scale: vec![1.0, 1.0],
            weights: vec![1.0],
            means: vec![vec![0.0, 0.0]],
            covariances: vec![vec![1.0, 0.0, 0.0, 1.0]],
            score_median: 0.0,
            score_quantile: 0.0,
            threshold: 0.0,
            feature_quantiles: vec![[0.0; 3]; 2],
            samples: 0,
        };
        let s = Scorer::new(&m).unwrap();
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        for (x, m2) in [([0.0, 0.0], 0.0), ([3.0, 4.0], 25.0), ([-1.0, 2.0], 5.0)] {
            let want = 0.5 * (2.0 * ln2pi + m2);
            assert!((s.score(&x) - want).abs() < 1e-12, "{x:?}");
        }
        // Correlated covariance: [[4,2],[2,3]], x=(1,1): x'Σ⁻¹x = (3-4+4)/8 = 3/8.
        let mut c = m.clone();
        c.covariances = vec![vec![4.0, 2.0, 2.0, 3.0]];
        let s = Scorer::new(&c).unwrap();
        let want = 0.5 * (2.0 * ln2pi + 8f64.ln() + 3.0 / 8.0);
        assert!((s.score(&[1.0, 1.0]) - want).abs() < 1e-12);
    }

    #[test]
    fn threshold_matches_the_false_alarm_rate_on_a_synthetic_distribution() {
        let train = normals(4000, 3, 7);
        let mut p = params();
        p.components = 1;
        let m = fit(&train, 3, &p).unwrap();
        let s = Scorer::new(&m).unwrap();
        // Held-out draws of the same distribution exceed the threshold at about the rate asked.
        let test = normals(20_000, 3, 99);
        let over = test.iter().filter(|x| s.score(x) > m.threshold).count();
        let rate = over as f64 / test.len() as f64;
        assert!((0.005..=0.02).contains(&rate), "{rate}");
        // And the threshold sits where chi-square(3) puts its 99th percentile: 11.345 / 2 nats
        // above the density's peak, ½·3·ln 2π.
        let peak = 1.5 * (2.0 * std::f64::consts::PI).ln();
        let want = peak + 11.345 / 2.0;
        assert!(
            (m.threshold - want).abs() < 0.5,
            "{} vs {want}",
            m.threshold
        );
    }

    #[test]
    fn two_clusters_get_two_components_and_the_gap_between_them_scores_high() {
        let mut train = normals(1500, 2, 3);
        for (i, x) in train.iter_mut().enumerate() {
            let off = if i % 2 == 0 { -10.0 } else { 10.0 };
            x[0] = x[0] * 0.5 + off;
        }
        train.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
        let m = fit(&train, 2, &params()).unwrap();
        let s = Scorer::new(&m).unwrap();
        assert!(s.score(&[-10.0, 0.0]) < m.threshold);
        assert!(s.score(&[10.0, 0.0]) < m.threshold);
        assert!(
            s.score(&[0.0, 0.0]) > m.threshold + 10.0,
            "{}",
            s.score(&[0.0, 0.0])
        );
    }

    #[test]
    fn fits_are_deterministic_and_constant_features_stay_finite() {
        let mut train = normals(600, 3, 11);
        for x in &mut train {
            x[2] = 1.0; // never varies
        }
        let mut p = params();
        p.min_scale = [0.1; MAX_DIM];
        p.min_excess = 5.0;
        p.reg_covariance = 1.0;
        let a = fit(&train, 3, &p).unwrap();
        let b = fit(&train, 3, &p).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let s = Scorer::new(&a).unwrap();
        assert!(s.score(&[0.0, 0.0, 1.0]).is_finite());
        // A departure of the constant feature by 2 floors is ordinary wobble, by 20 is not.
        assert!(s.score(&[0.0, 0.0, 1.2]) < a.threshold);
        assert!(s.score(&[0.0, 0.0, 3.0]) > a.threshold);
    }

    #[test]
    fn bad_stored_mixtures_are_refused() {
        let good = Mixture {
            center: vec![0.0],
            scale: vec![1.0],
            weights: vec![1.0],
            means: vec![vec![0.0]],
            covariances: vec![vec![1.0]],
            score_median: 0.0,
            score_quantile: 0.0,
            threshold: 0.0,
            feature_quantiles: vec![[0.0; 3]],
            samples: 0,
        };
        assert!(Scorer::new(&good).is_ok());
        type Breaker = Box<dyn Fn(&mut Mixture)>;
        let cases: Vec<(&str, Breaker)> = vec![
            (
                "negative variance",
                Box::new(|m| m.covariances[0][0] = -1.0),
            ),
            ("zero scale", Box::new(|m| m.scale[0] = 0.0)),
            ("short mean", Box::new(|m| m.means[0].clear())),
            ("no components", Box::new(|m| m.weights.clear())),
            ("nan weight", Box::new(|m| m.weights[0] = f64::NAN)),
            ("too many features", Box::new(|m| m.center = vec![0.0; 9])),
        ];
        for (name, break_it) in cases {
            let mut m = good.clone();
            break_it(&mut m);
            assert!(Scorer::new(&m).is_err(), "{name}");
        }
    }
}

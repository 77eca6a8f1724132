//! The statistics of the judgement: the Mann-Whitney U test (normal
//! approximation with tie and continuity correction, two-sided), the
//! Hodges-Lehmann shift estimate, means and medians. Inputs are finite
//! numbers; the caller drops the rest.

/// Points of each sample the Hodges-Lehmann estimate uses at most: it looks
/// at every pair, so two full 1 100-point series would be 1.2 million pairs.
/// Longer samples are thinned to evenly spaced quantiles.
pub const MAX_SHIFT_POINTS: usize = 100;

/// The result of a Mann-Whitney U test of `x` against `y`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of `x`: how many of the pairs (x_i, y_j) have x_i > y_j, ties
    /// counting one half.
    pub u: f64,
    /// The standard normal deviate of U, continuity corrected; positive when
    /// `x` tends higher.
    pub z: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Mann-Whitney U of `x` (canary) against `y` (primary), both non-empty.
/// Sorting the pooled sample is the whole cost: O((n + m) log(n + m)).
pub fn mann_whitney(x: &[f64], y: &[f64]) -> MannWhitney {
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = pooled.len();
    let mut rank_sum_x = 0.0;
    // Σ (t³ - t) over groups of t tied values.
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && pooled[j].0 == pooled[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their average.
        let rank = (i + 1 + j) as f64 / 2.0;
        let from_x = pooled[i..j].iter().filter(|(_, is_x)| *is_x).count();
        rank_sum_x += rank * from_x as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (n1, n2, nf) = (x.len() as f64, y.len() as f64, n as f64);
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = if n > 1 {
        n1 * n2 / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)))
    } else {
        0.0
    };
    if variance <= 0.0 {
        // Every value tied: nothing tells the samples apart.
        return MannWhitney { u, z: 0.0, p: 1.0 };
    }
    let distance = ((u - mean).abs() - 0.5).max(0.0);
    let z = (distance / variance.sqrt()).copysign(u - mean);
    let p = erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0);
    MannWhitney { u, z, p }
}

/// The complementary error function, with a fractional error below 1.2e-7
/// everywhere (the Chebyshev fit of Numerical Recipes' `erfcc`), so tiny
/// p-values keep their magnitude.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * (-z * z + poly).exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The Hodges-Lehmann estimate of how far `x` lies above `y`: the median of
/// all differences x_i - y_j. Samples longer than [`MAX_SHIFT_POINTS`] are
/// first thinned to that many evenly spaced quantiles, which bounds the cost
/// at 10 000 differences.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> f64 {
    let x = thin(x, MAX_SHIFT_POINTS);
    let y = thin(y, MAX_SHIFT_POINTS);
    let mut diffs: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    median_in_place(&mut diffs)
}

/// At most `max` points of `values`: all of them, or the sorted sample's
/// quantiles at (k + 0.5) / max.
fn thin(values: &[f64], max: usize) -> Vec<f64> {
    let mut sorted = values.to_vec();
    if sorted.len() <= max {
        return sorted;
    }
    sorted.sort_by(f64::total_cmp);
    (0..max)
        .map(|k| sorted[(2 * k + 1) * sorted.len() / (2 * max)])
        .collect()
}

/// The median of a non-empty sample.
pub fn median(values: &[f64]) -> f64 {
    median_in_place(&mut values.to_vec())
}

fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    let (_, upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return upper;
    }
    // The lower middle is the largest of the half below.
    let lower = values[..n / 2]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

/// The arithmetic mean of a non-empty sample.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

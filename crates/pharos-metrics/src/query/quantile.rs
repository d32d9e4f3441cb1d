//! Quantiles over plain values and over classic (`le`) histogram buckets.

/// Tolerance under which neighbouring cumulative bucket counts are considered equal.
const SMALL_DELTA_TOLERANCE: f64 = 1e-12;

/// The q-quantile of `values` with linear interpolation between the closest ranks, as
/// Prometheus's `quantile` aggregation and `quantile_over_time` compute it.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // NaN sorts first, like Prometheus's value heap.
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// One classic histogram bucket: upper bound and cumulative count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    pub(crate) upper: f64,
    pub(crate) count: f64,
}

fn almost_equal(a: f64, b: f64, epsilon: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < epsilon * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < epsilon
}

/// Counts raised to a lower bucket's (more than a rounding difference): the upper bounds of the
/// buckets raised and the largest raise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MonotonicFix {
    pub(crate) min_bucket: f64,
    pub(crate) max_bucket: f64,
    pub(crate) max_diff: f64,
}

/// Sorts, merges equal bounds and forces monotonic counts; `None` when unusable, else what had
/// to be fixed, if anything.
fn prepare_buckets(buckets: &mut Vec<Bucket>) -> Option<Option<MonotonicFix>> {
    buckets.sort_by(|a, b| a.upper.partial_cmp(&b.upper).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return None,
    }
    let mut fix: Option<MonotonicFix> = None;
    // Merge buckets with the same upper bound.
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    // Make counts monotonic, ignoring tiny floating point differences.
    if let Some(first) = merged.first() {
        let mut prev = first.count;
        for b in merged.iter_mut().skip(1) {
            let curr = b.count;
            if curr == prev {
                continue;
            }
            if almost_equal(prev, curr, SMALL_DELTA_TOLERANCE) {
                b.count = prev;
                continue;
            }
            if curr < prev {
                let f = fix.get_or_insert(MonotonicFix {
                    min_bucket: f64::INFINITY,
                    max_bucket: f64::NEG_INFINITY,
                    max_diff: 0.0,
                });
                f.min_bucket = f.min_bucket.min(b.upper);
                f.max_bucket = f.max_bucket.max(b.upper);
                f.max_diff = f.max_diff.max(prev - curr);
                b.count = prev;
                continue;
            }
            prev = curr;
        }
    }
    *buckets = merged;
    Some(fix)
}

/// The q-quantile of a classic histogram given as cumulative buckets.
#[cfg(test)]
pub(crate) fn bucket_quantile(q: f64, buckets: Vec<Bucket>) -> f64 {
    bucket_quantile_noting(q, buckets).0
}

/// [`bucket_quantile`], and what had to be fixed to make the counts monotonic.
pub(crate) fn bucket_quantile_noting(q: f64, mut buckets: Vec<Bucket>) -> (f64, Option<MonotonicFix>) {
    if q.is_nan() {
        return (f64::NAN, None);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, None);
    }
    if q > 1.0 {
        return (f64::INFINITY, None);
    }
    let fix = match prepare_buckets(&mut buckets) {
        Some(fix) if buckets.len() >= 2 => fix,
        _ => return (f64::NAN, None),
    };
    (quantile_of_prepared(q, &buckets), fix)
}

fn quantile_of_prepared(q: f64, buckets: &[Bucket]) -> f64 {
    let n = buckets.len();
    let observations = buckets[n - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..n - 1].partition_point(|bk| bk.count < rank);
    if b == n - 1 {
        return buckets[n - 2].upper;
    }
    if b == 0 && buckets[0].upper <= 0.0 {
        return buckets[0].upper;
    }
    let mut start = 0.0;
    let end = buckets[b].upper;
    let mut count = buckets[b].count;
    if b > 0 {
        start = buckets[b - 1].upper;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// The fraction of observations between `lower` and `upper` in a classic histogram.
pub(crate) fn bucket_fraction(lower: f64, upper: f64, mut buckets: Vec<Bucket>) -> f64 {
    buckets.sort_by(|a, b| a.upper.partial_cmp(&b.upper).unwrap_or(std::cmp::Ordering::Equal));
    match buckets.last() {
        Some(b) if b.upper == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in &buckets {
        match merged.last_mut() {
            Some(last) if last.upper == b.upper => last.count += b.count,
            _ => merged.push(*b),
        }
    }
    let count = merged.last().map_or(0.0, |b| b.count);
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    let (mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0);
    let (mut lower_set, mut upper_set) = (false, false);
    let mut lower_bound = if merged[0].upper <= 0.0 { f64::NEG_INFINITY } else { 0.0 };
    for (i, b) in merged.iter().enumerate() {
        if i > 0 {
            lower_bound = merged[i - 1].upper;
        }
        let upper_bound = b.upper;
        let interpolate = |v: f64| {
            if lower_bound == f64::NEG_INFINITY {
                b.count
            } else {
                rank + (b.count - rank) * (v - lower_bound) / (upper_bound - lower_bound)
            }
        };
        if !lower_set && lower_bound >= lower {
            lower_rank = rank;
            lower_set = true;
        }
        if !upper_set && lower_bound >= upper {
            upper_rank = rank;
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        if !lower_set && lower_bound < lower && upper_bound > lower {
            lower_rank = interpolate(lower);
            lower_set = true;
        }
        if !upper_set && lower_bound < upper && upper_bound > upper {
            upper_rank = interpolate(upper);
            upper_set = true;
        }
        if lower_set && upper_set {
            break;
        }
        rank = b.count;
    }
    if !lower_set || lower_rank > count {
        lower_rank = count;
    }
    if !upper_set || upper_rank > count {
        upper_rank = count;
    }
    (upper_rank - lower_rank) / count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_between_ranks() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        assert!((quantile(0.5, &mut v) - 2.5).abs() < 1e-12);
        assert_eq!(quantile(2.0, &mut v), f64::INFINITY);
    }

    #[test]
    fn bucket_quantile_interpolates_inside_the_bucket() {
        let b = vec![
            Bucket { upper: 1.0, count: 10.0 },
            Bucket { upper: 2.0, count: 20.0 },
            Bucket { upper: f64::INFINITY, count: 20.0 },
        ];
        assert!((bucket_quantile(0.75, b) - 1.5).abs() < 1e-12);
    }
}

//! Exponential histograms, reduced to classic `le` buckets.
//!
//! A point at scale `s` has base `b = 2^(2^-s)`; positive bucket `i` counts values in
//! `(b^i, b^(i+1)]`, negative bucket `i` values in `[-b^(i+1), -b^i)`, the zero bucket values
//! in `[-zero_threshold, zero_threshold]`. The classic buckets are their upper boundaries in
//! ascending order: `-b^i` for the negative buckets (largest magnitude first), then
//! `zero_threshold`, then `b^(i+1)` for the positive buckets, each with the cumulative count.
//! Before that the histogram is downscaled (two neighbouring buckets merged into one, scale
//! minus one) until it has at most `max_buckets` buckets, so that one point never makes more
//! than `max_buckets + 2` series.

use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogramDataPoint, exponential_histogram_data_point::Buckets as OtlpBuckets,
};

/// Lowest and highest scales the OTLP data model allows.
pub(crate) const MIN_SCALE: i32 = -10;
/// See [`MIN_SCALE`].
pub(crate) const MAX_SCALE: i32 = 20;

/// One side (positive or negative) of an exponential histogram: counts of consecutive
/// bucket indices from `offset`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Span {
    offset: i64,
    counts: Vec<u64>,
}

impl Span {
    fn from_otlp(b: Option<&OtlpBuckets>) -> Self {
        let Some(b) = b else { return Self::default() };
        let mut span = Self { offset: i64::from(b.offset), counts: b.bucket_counts.clone() };
        span.trim();
        span
    }

    /// Drops empty buckets at both ends.
    fn trim(&mut self) {
        let lead = self.counts.iter().take_while(|c| **c == 0).count();
        if lead == self.counts.len() {
            self.counts.clear();
            self.offset = 0;
            return;
        }
        let trail = self.counts.iter().rev().take_while(|c| **c == 0).count();
        self.counts.truncate(self.counts.len() - trail);
        self.counts.drain(..lead);
        self.offset += lead as i64;
    }

    fn end(&self) -> i64 {
        self.offset + self.counts.len() as i64
    }

    /// Halves the resolution: bucket `i` goes to `i >> 1`.
    fn downscale_once(&mut self) {
        if self.counts.is_empty() {
            return;
        }
        let new_offset = self.offset >> 1;
        let new_end = (self.end() - 1) >> 1;
        let mut counts = vec![0u64; (new_end - new_offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = ((self.offset + i as i64) >> 1) - new_offset;
            counts[idx as usize] = counts[idx as usize].saturating_add(*c);
        }
        self.offset = new_offset;
        self.counts = counts;
    }

    /// Adds `other` (same scale) into `self`.
    fn add(&mut self, other: &Span) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        let start = self.offset.min(other.offset);
        let end = self.end().max(other.end());
        let mut counts = vec![0u64; (end - start) as usize];
        for span in [&*self, other] {
            for (i, c) in span.counts.iter().enumerate() {
                let idx = (span.offset - start) as usize + i;
                counts[idx] = counts[idx].saturating_add(*c);
            }
        }
        self.offset = start;
        self.counts = counts;
    }
}

/// An exponential histogram reduced to what the conversion needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExpHistogram {
    scale: i32,
    zero_threshold: f64,
    zero_count: u64,
    positive: Span,
    negative: Span,
    /// Total count of observations.
    pub(crate) count: u64,
    /// Sum of observations, when the producer recorded it.
    pub(crate) sum: Option<f64>,
}

impl ExpHistogram {
    /// The histogram of a point; `None` when its scale is outside the data model's range.
    pub(crate) fn from_point(p: &ExponentialHistogramDataPoint, max_buckets: usize) -> Option<Self> {
        if !(MIN_SCALE..=MAX_SCALE).contains(&p.scale) {
            return None;
        }
        let mut h = Self {
            scale: p.scale,
            zero_threshold: if p.zero_threshold.is_finite() { p.zero_threshold.abs() } else { 0.0 },
            zero_count: p.zero_count,
            positive: Span::from_otlp(p.positive.as_ref()),
            negative: Span::from_otlp(p.negative.as_ref()),
            count: p.count,
            sum: p.sum,
        };
        h.limit(max_buckets);
        Some(h)
    }

    fn buckets(&self) -> usize {
        self.positive.counts.len() + self.negative.counts.len()
    }

    fn downscale_once(&mut self) {
        self.positive.downscale_once();
        self.negative.downscale_once();
        self.scale -= 1;
    }

    /// Downscales until at most `max_buckets` buckets remain (always terminates: each step
    /// halves every span, and a span of one bucket stays one bucket).
    fn limit(&mut self, max_buckets: usize) {
        let max_buckets = max_buckets.max(2);
        while self.buckets() > max_buckets {
            self.downscale_once();
        }
    }

    /// Adds `other` into `self` (a delta onto the running total), at the coarser of the two
    /// scales and the larger zero threshold, then limits the bucket count.
    pub(crate) fn add(&mut self, other: &ExpHistogram, max_buckets: usize) {
        let mut other = other.clone();
        while self.scale > other.scale {
            self.downscale_once();
        }
        while other.scale > self.scale {
            other.downscale_once();
        }
        // Bring both spans within reach of each other before allocating their union.
        let max_span = (max_buckets.max(2) as i64).saturating_mul(2);
        while union_len(&self.positive, &other.positive) > max_span
            || union_len(&self.negative, &other.negative) > max_span
        {
            self.downscale_once();
            other.downscale_once();
        }
        if other.zero_threshold > self.zero_threshold {
            self.widen_zero_bucket(other.zero_threshold);
        } else if self.zero_threshold > other.zero_threshold {
            other.widen_zero_bucket(self.zero_threshold);
        }
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.positive.add(&other.positive);
        self.negative.add(&other.negative);
        self.count = self.count.saturating_add(other.count);
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.limit(max_buckets);
    }

    /// Moves every bucket lying wholly within `[-threshold, threshold]` into the zero bucket.
    fn widen_zero_bucket(&mut self, threshold: f64) {
        self.zero_threshold = threshold;
        for span in [&mut self.positive, &mut self.negative] {
            let mut moved = 0u64;
            while !span.counts.is_empty() && upper_bound(self.scale, span.offset + 1) <= threshold {
                moved = moved.saturating_add(span.counts.remove(0));
                span.offset += 1;
            }
            self.zero_count = self.zero_count.saturating_add(moved);
            span.trim();
        }
    }

    /// The classic buckets: `(le, cumulative count)` in ascending `le`, finite bounds only
    /// and each bound once (the caller adds `+Inf` with the total count).
    pub(crate) fn classic_buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = Vec::with_capacity(self.buckets() + 1);
        let mut cumulative = 0u64;
        let mut push = |le: f64, count: u64, out: &mut Vec<(f64, u64)>| {
            cumulative = cumulative.saturating_add(count);
            if !le.is_finite() {
                return;
            }
            match out.last_mut() {
                // Folds a bound that does not increase (rounding at extreme scales, or a zero
                // threshold above the lowest buckets) into the previous one.
                Some(last) if le <= last.0 => last.1 = cumulative,
                _ => out.push((le, cumulative)),
            }
        };
        for (i, c) in self.negative.counts.iter().enumerate().rev() {
            let index = self.negative.offset + i as i64;
            push(-upper_bound(self.scale, index), *c, &mut out);
        }
        push(self.zero_threshold, self.zero_count, &mut out);
        for (i, c) in self.positive.counts.iter().enumerate() {
            let index = self.positive.offset + i as i64;
            push(upper_bound(self.scale, index + 1), *c, &mut out);
        }
        out
    }
}

fn union_len(a: &Span, b: &Span) -> i64 {
    if a.counts.is_empty() || b.counts.is_empty() {
        return a.counts.len().max(b.counts.len()) as i64;
    }
    a.end().max(b.end()) - a.offset.min(b.offset)
}

/// `base^index` at `scale`, i.e. `2^(index * 2^-scale)`: the lower boundary of bucket `index`.
fn upper_bound(scale: i32, index: i64) -> f64 {
    (index as f64 * (-f64::from(scale)).exp2()).exp2()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scale: i32, zero: u64, offset: i32, counts: &[u64]) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            zero_count: zero,
            count: zero + counts.iter().sum::<u64>(),
            sum: Some(1.0),
            positive: Some(OtlpBuckets { offset, bucket_counts: counts.to_vec() }),
            ..Default::default()
        }
    }

    #[test]
    fn classic_buckets_scale_zero_are_powers_of_two() {
        let h = ExpHistogram::from_point(&point(0, 1, 1, &[0, 2]), 160).expect("valid scale");
        // Leading empty bucket trimmed: index 2 covers (4, 8].
        assert_eq!(h.classic_buckets(), vec![(0.0, 1), (8.0, 3)]);
    }

    #[test]
    fn classic_buckets_negative_side_comes_first_in_ascending_order() {
        let mut p = point(0, 0, 0, &[1]);
        p.negative = Some(OtlpBuckets { offset: 0, bucket_counts: vec![2, 3] });
        p.count = 6;
        let h = ExpHistogram::from_point(&p, 160).expect("valid scale");
        // negative index 1: [-4, -2) → le=-2; index 0: [-2, -1) → le=-1; zero; positive (1, 2].
        assert_eq!(h.classic_buckets(), vec![(-2.0, 3), (-1.0, 5), (0.0, 5), (2.0, 6)]);
    }

    #[test]
    fn from_point_too_many_buckets_downscales_to_limit() {
        let counts = vec![1u64; 1000];
        let h = ExpHistogram::from_point(&point(8, 0, -500, &counts), 160).expect("valid scale");
        assert!(h.buckets() <= 160, "{}", h.buckets());
        assert_eq!(h.scale, 5);
        let buckets = h.classic_buckets();
        assert_eq!(buckets.last().map(|b| b.1), Some(1000));
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn from_point_scale_out_of_range_is_rejected() {
        assert!(ExpHistogram::from_point(&point(21, 0, 0, &[1]), 160).is_none());
        assert!(ExpHistogram::from_point(&point(i32::MIN, 0, 0, &[1]), 160).is_none());
    }

    #[test]
    fn add_different_scales_merges_at_coarser_scale() {
        let mut a = ExpHistogram::from_point(&point(1, 0, 0, &[1, 1, 1, 1]), 160).expect("valid");
        let b = ExpHistogram::from_point(&point(0, 2, 0, &[5]), 160).expect("valid");
        a.add(&b, 160);
        assert_eq!(a.scale, 0);
        assert_eq!(a.count, 11);
        assert_eq!(a.sum, Some(2.0));
        // scale 1 indices 0..4 → scale 0 indices 0,0,1,1; plus 5 at index 0.
        assert_eq!(a.classic_buckets(), vec![(0.0, 2), (2.0, 9), (4.0, 11)]);
    }

    #[test]
    fn add_far_apart_offsets_stays_bounded() {
        let mut a = ExpHistogram::from_point(&point(20, 0, i32::MIN, &[1]), 160).expect("valid");
        let b = ExpHistogram::from_point(&point(20, 0, i32::MAX - 1, &[1]), 160).expect("valid");
        a.add(&b, 160);
        assert!(a.buckets() <= 160);
        assert_eq!(a.count, 2);
        let buckets = a.classic_buckets();
        assert!(buckets.iter().all(|b| b.0.is_finite()));
    }
}

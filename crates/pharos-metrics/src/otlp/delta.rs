//! Delta temporality made cumulative: a running total per series, bounded in size.
//!
//! Prometheus stores cumulative counters, so a DELTA sum or histogram is added onto the total
//! of its series (keyed by the converted label set of the series, without suffixes). A delta
//! point continues the total when its window starts at or after the end of the previous one
//! (`start >= last time`, or an unknown start of 0). A point whose window starts before the
//! end of the previous point — its start time went back, as when the producer restarted its
//! accounting — resets the total to its own value (a counter reset for PromQL). A point not
//! after the previous one (`time <= last time`) is a duplicate or arrived out of order and is
//! dropped. A histogram whose explicit bounds change also restarts its total.

use std::collections::HashMap;

use super::exponential::ExpHistogram;
use crate::model::Labels;

/// A delta point not accumulated because the state already holds its maximum of series.
pub(crate) const DELTA_STATE_FULL: &str = "delta_state_full";
/// A delta point not after the previous point of its series.
pub(crate) const DELTA_OUT_OF_ORDER: &str = "delta_out_of_order";

/// The running total of one delta series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Total {
    /// A sum.
    Sum(f64),
    /// An explicit-bucket histogram: per-bucket (non-cumulative) counts.
    Histogram { bounds: Vec<f64>, counts: Vec<u64>, count: u64, sum: Option<f64> },
    /// An exponential histogram.
    Exponential(ExpHistogram),
}

impl Total {
    /// Adds `delta` onto `self`; false when the two cannot be added (different kinds or
    /// histogram bounds), and the caller restarts the total instead.
    fn add(&mut self, delta: &Total, max_exp_buckets: usize) -> bool {
        match (self, delta) {
            (Total::Sum(a), Total::Sum(b)) => {
                *a += b;
                true
            }
            (
                Total::Histogram { bounds, counts, count, sum },
                Total::Histogram { bounds: b_bounds, counts: b_counts, count: b_count, sum: b_sum },
            ) if bounds == b_bounds && counts.len() == b_counts.len() => {
                for (c, d) in counts.iter_mut().zip(b_counts) {
                    *c = c.saturating_add(*d);
                }
                *count = count.saturating_add(*b_count);
                *sum = match (*sum, b_sum) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
                true
            }
            (Total::Exponential(a), Total::Exponential(b)) => {
                a.add(b, max_exp_buckets);
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Entry {
    last_ns: u64,
    total: Total,
}

/// Running totals of delta series, at most `max_series` of them.
#[derive(Debug)]
pub(crate) struct DeltaState {
    series: HashMap<Labels, Entry>,
    max_series: usize,
}

impl DeltaState {
    pub(crate) fn new(max_series: usize) -> Self {
        Self { series: HashMap::new(), max_series }
    }

    /// Adds the delta `(start_ns, time_ns]` of series `key` and returns its new running
    /// total, or the reason the point is dropped.
    pub(crate) fn accumulate(
        &mut self,
        key: &Labels,
        start_ns: u64,
        time_ns: u64,
        delta: Total,
        max_exp_buckets: usize,
    ) -> Result<&Total, &'static str> {
        if !self.series.contains_key(key) {
            if self.series.len() >= self.max_series {
                return Err(DELTA_STATE_FULL);
            }
            let entry = self.series.entry(key.clone()).or_insert(Entry { last_ns: time_ns, total: delta });
            return Ok(&entry.total);
        }
        let entry = self.series.get_mut(key).expect("checked above that the key is present");
        if time_ns <= entry.last_ns {
            return Err(DELTA_OUT_OF_ORDER);
        }
        let continues = start_ns == 0 || start_ns >= entry.last_ns;
        if !continues || !entry.total.add(&delta, max_exp_buckets) {
            entry.total = delta;
        }
        entry.last_ns = time_ns;
        Ok(&entry.total)
    }

    /// Forgets series `key` (its producer said it has no value any more).
    pub(crate) fn remove(&mut self, key: &Labels) {
        self.series.remove(key);
    }

    /// Forgets every series whose last point is before `time_ns`; returns how many.
    pub(crate) fn forget_before(&mut self, time_ns: u64) -> usize {
        let before = self.series.len();
        self.series.retain(|_, e| e.last_ns >= time_ns);
        before - self.series.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Labels {
        Labels::from_pairs([("__name__", "requests_total"), ("job", "api")])
    }

    fn sum(state: &mut DeltaState, start: u64, time: u64, v: f64) -> Result<f64, &'static str> {
        match state.accumulate(&key(), start, time, Total::Sum(v), 160)? {
            Total::Sum(total) => Ok(*total),
            other => panic!("not a sum: {other:?}"),
        }
    }

    #[test]
    fn accumulate_contiguous_windows_adds_up() {
        let mut s = DeltaState::new(10);
        assert_eq!(sum(&mut s, 0, 10, 3.0), Ok(3.0));
        assert_eq!(sum(&mut s, 10, 20, 2.0), Ok(5.0));
        assert_eq!(sum(&mut s, 25, 30, 1.0), Ok(6.0), "a gap still continues the total");
    }

    #[test]
    fn accumulate_start_before_previous_end_resets_total() {
        let mut s = DeltaState::new(10);
        assert_eq!(sum(&mut s, 0, 10, 3.0), Ok(3.0));
        assert_eq!(sum(&mut s, 10, 20, 2.0), Ok(5.0));
        assert_eq!(sum(&mut s, 5, 30, 1.0), Ok(1.0));
        assert_eq!(sum(&mut s, 30, 40, 4.0), Ok(5.0));
    }

    #[test]
    fn accumulate_old_or_duplicate_point_is_dropped() {
        let mut s = DeltaState::new(10);
        assert_eq!(sum(&mut s, 0, 10, 3.0), Ok(3.0));
        assert_eq!(sum(&mut s, 0, 10, 3.0), Err(DELTA_OUT_OF_ORDER));
        assert_eq!(sum(&mut s, 0, 5, 3.0), Err(DELTA_OUT_OF_ORDER));
        assert_eq!(sum(&mut s, 10, 20, 1.0), Ok(4.0));
    }

    #[test]
    fn accumulate_over_bound_rejects_new_series_only() {
        let mut s = DeltaState::new(1);
        assert_eq!(sum(&mut s, 0, 10, 1.0), Ok(1.0));
        let other = Labels::from_pairs([("__name__", "other_total")]);
        assert_eq!(s.accumulate(&other, 0, 10, Total::Sum(1.0), 160).err(), Some(DELTA_STATE_FULL));
        assert_eq!(sum(&mut s, 10, 20, 1.0), Ok(2.0));
        assert_eq!(s.forget_before(30), 1);
        assert!(s.accumulate(&other, 0, 10, Total::Sum(1.0), 160).is_ok());
    }

    #[test]
    fn accumulate_histogram_with_new_bounds_restarts() {
        let mut s = DeltaState::new(10);
        let h = |bounds: Vec<f64>, counts: Vec<u64>| Total::Histogram {
            count: counts.iter().sum(),
            bounds,
            counts,
            sum: Some(1.0),
        };
        s.accumulate(&key(), 0, 10, h(vec![1.0], vec![1, 2]), 160).expect("new series");
        let t = s.accumulate(&key(), 10, 20, h(vec![1.0], vec![1, 1]), 160).expect("accumulated");
        assert_eq!(t, &h(vec![1.0], vec![2, 3]).with_sum(2.0));
        let t = s.accumulate(&key(), 20, 30, h(vec![5.0], vec![4, 0]), 160).expect("restarted");
        assert_eq!(t, &h(vec![5.0], vec![4, 0]));
    }

    impl Total {
        fn with_sum(mut self, v: f64) -> Self {
            if let Total::Histogram { sum, .. } = &mut self {
                *sum = Some(v);
            }
            self
        }
    }
}

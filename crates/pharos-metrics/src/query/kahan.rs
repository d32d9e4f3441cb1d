//! Compensated (Kahan–Neumaier) summation, as Prometheus uses for sums and averages.

/// Adds `inc` to the running `sum` with compensation term `c`; returns the new pair.
///
/// The compensation is reset when the sum becomes infinite, so an infinite sum stays
/// infinite instead of turning into NaN when the compensation is added back.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// The mean of `values` (at least one) as Prometheus computes `avg` and `avg_over_time`: a
/// compensated sum while it stays finite, then an incremental mean so that large values do not
/// overflow.
pub(crate) fn kahan_mean(mut values: impl Iterator<Item = f64>) -> f64 {
    let mut sum = values.next().unwrap_or(f64::NAN);
    let (mut c, mut mean) = (0.0, 0.0);
    let mut incremental = false;
    let mut count = 1.0;
    for v in values {
        count += 1.0;
        if !incremental {
            let (ns, nc) = kahan_inc(v, sum, c);
            if !ns.is_infinite() {
                sum = ns;
                c = nc;
                continue;
            }
            incremental = true;
            mean = sum / (count - 1.0);
            c /= count - 1.0;
        }
        let q = (count - 1.0) / count;
        (mean, c) = kahan_inc(v / count, q * mean, q * c);
    }
    if incremental { mean + c } else { sum / count + c / count }
}

/// A running compensated sum.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KahanSum {
    sum: f64,
    c: f64,
}

impl KahanSum {
    /// Adds a value.
    pub(crate) fn add(&mut self, v: f64) {
        (self.sum, self.c) = kahan_inc(v, self.sum, self.c);
    }

    /// The compensated total.
    pub(crate) fn value(&self) -> f64 {
        if self.sum.is_infinite() { self.sum } else { self.sum + self.c }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kahan_sum_of_large_and_small_values_keeps_the_small_ones() {
        let mut k = KahanSum::default();
        let mut naive = 0.0;
        for v in [1.0, 1e100, 1.0, -1e100] {
            k.add(v);
            naive += v;
        }
        assert_eq!(k.value(), 2.0);
        assert_eq!(naive, 0.0);
    }

    #[test]
    fn kahan_sum_with_infinity_stays_infinite() {
        let mut k = KahanSum::default();
        for v in [1.0, f64::INFINITY, 2.0] {
            k.add(v);
        }
        assert_eq!(k.value(), f64::INFINITY);
    }

    #[test]
    fn kahan_sum_of_many_tenths_is_exact_to_the_last_bit() {
        let mut k = KahanSum::default();
        for _ in 0..10 {
            k.add(0.1);
        }
        assert_eq!(k.value(), 1.0);
    }
}

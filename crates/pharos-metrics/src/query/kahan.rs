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

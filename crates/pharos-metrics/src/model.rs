//! The metric data model: labels, samples and series, as Prometheus defines them.

use std::fmt;
use std::sync::Arc;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Bit pattern of the staleness marker Prometheus writes when a series disappears.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float value.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `v` is the staleness marker (and not any other NaN).
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    /// Label name.
    pub name: String,
    /// Label value (never empty inside a [`Labels`] set).
    pub value: String,
}

/// A label set, sorted by name, without empty values; `__name__` is an ordinary member.
///
/// Ordering compares label by label (name, then value), shorter sets first on a common
/// prefix, which is the order Prometheus uses for query results.
///
/// The labels are shared: a clone is a reference count (query evaluation hands a series'
/// labels to every step), and a change copies them first if they are shared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Arc<Vec<Label>>);

impl Labels {
    /// The empty label set.
    pub fn empty() -> Self {
        Self::default()
    }

    fn labels_mut(&mut self) -> &mut Vec<Label> {
        Arc::make_mut(&mut self.0)
    }

    /// Builds a label set from pairs in any order; empty values are dropped, a repeated
    /// name keeps the last value.
    pub fn from_pairs<N: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut labels = Self::empty();
        for (n, v) in pairs {
            labels.set(&n.into(), &v.into());
        }
        labels
    }

    /// Builds a label set from labels already sorted by name, with unique names and
    /// non-empty values (as the head stores them).
    pub(crate) fn from_sorted(labels: impl IntoIterator<Item = Label>) -> Self {
        let v: Vec<Label> = labels.into_iter().collect();
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name));
        Self(Arc::new(v))
    }

    /// Value of `name`, or `""` when absent (as Prometheus treats missing labels).
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) => &self.0[i].value,
            Err(_) => "",
        }
    }

    /// Whether the set has a label called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.0.binary_search_by(|l| l.name.as_str().cmp(name)).is_ok()
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.labels_mut().remove(i);
            }
            Ok(i) if self.0[i].value == value => {}
            Ok(i) => value.clone_into(&mut self.labels_mut()[i].value),
            Err(_) if value.is_empty() => {}
            Err(i) => self.labels_mut().insert(i, Label { name: name.to_owned(), value: value.to_owned() }),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|l| l.name.as_str().cmp(name)) {
            self.labels_mut().remove(i);
        }
    }

    /// Keeps only the labels whose names are listed.
    pub fn keep(&mut self, names: &[String]) {
        if !self.0.iter().all(|l| names.iter().any(|n| n == &l.name)) {
            self.labels_mut().retain(|l| names.iter().any(|n| n == &l.name));
        }
    }

    /// Removes every listed label.
    pub fn remove_all(&mut self, names: &[String]) {
        if self.0.iter().any(|l| names.iter().any(|n| n == &l.name)) {
            self.labels_mut().retain(|l| !names.iter().any(|n| n == &l.name));
        }
    }

    /// The set without `__name__`.
    pub fn without_name(&self) -> Self {
        let mut out = self.clone();
        out.remove(METRIC_NAME);
        out
    }

    /// Iterates the labels in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Label> {
        self.0.iter()
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Labels {
    /// Formats like Prometheus's `labels.Labels.String()`: `{a="b", c="d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}=\"{}\"", l.name, escape_label_value(&l.value))?;
        }
        f.write_str("}")
    }
}

fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float sample: timestamp in milliseconds since the epoch, and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value; may be the staleness marker.
    pub v: f64,
}

/// A series: its labels and its samples in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series' identity.
    pub labels: Labels,
    /// Samples sorted by timestamp, no duplicate timestamps.
    pub samples: Vec<Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_set_keeps_names_sorted_and_drops_empty_values() {
        let mut l = Labels::from_pairs([("b", "2"), ("a", "1"), ("__name__", "m")]);
        assert_eq!(l.to_string(), r#"{__name__="m", a="1", b="2"}"#);
        l.set("a", "");
        assert_eq!(l.get("a"), "");
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn stale_nan_is_distinct_from_ordinary_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
    }
}

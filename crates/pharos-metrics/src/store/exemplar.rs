//! Exemplars: a sample of a trace-linked measurement kept beside a series.

use crate::model::Labels;

/// Most characters an exemplar's label names and values may have together (Prometheus's
/// `ExemplarMaxLabelSetLength`).
pub const EXEMPLAR_MAX_LABEL_CHARS: usize = 128;

/// One exemplar: its own labels (typically `trace_id`, `span_id`), value and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// The exemplar's labels.
    pub labels: Labels,
    /// The measured value.
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    pub t: i64,
}

/// The exemplars of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesExemplars {
    /// The series the exemplars belong to.
    pub series: Labels,
    /// Exemplars in time order.
    pub exemplars: Vec<Exemplar>,
}

/// Characters in the names and values of `labels`.
pub(crate) fn label_chars(labels: &Labels) -> usize {
    labels.iter().map(|l| l.name.chars().count() + l.value.chars().count()).sum()
}

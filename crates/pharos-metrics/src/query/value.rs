//! Values flowing through the evaluator, and the results a query returns.

use std::rc::Rc;

use crate::model::{Labels, Sample, Series};

/// An element of an instant vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct InstantSample {
    pub(crate) labels: Labels,
    pub(crate) v: f64,
    /// `__name__` is to be removed once the whole expression is evaluated (Prometheus 3's
    /// delayed name removal).
    pub(crate) drop_name: bool,
}

/// A series of a range vector during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct RangeSeries {
    pub(crate) labels: Labels,
    pub(crate) points: Points,
    pub(crate) drop_name: bool,
}

/// The points of a range-vector series: its own, or a window of a fetched series (a range
/// selector at each step of a range query points into the same fetched samples, uncopied).
#[derive(Debug, Clone)]
pub(crate) enum Points {
    Owned(Vec<Sample>),
    Window { series: Rc<Vec<Series>>, index: usize, from: usize, to: usize },
}

impl Points {
    pub(crate) fn new() -> Points {
        Points::Owned(Vec::new())
    }

    pub(crate) fn as_slice(&self) -> &[Sample] {
        match self {
            Points::Owned(v) => v,
            Points::Window { series, index, from, to } => &series[*index].samples[*from..*to],
        }
    }

    /// Appends a point (copying a window first).
    pub(crate) fn push(&mut self, s: Sample) {
        if let Points::Window { .. } = self {
            *self = Points::Owned(self.as_slice().to_vec());
        }
        if let Points::Owned(v) = self {
            v.push(s);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<Sample> {
        match self {
            Points::Owned(v) => v,
            w @ Points::Window { .. } => w.as_slice().to_vec(),
        }
    }
}

impl std::ops::Deref for Points {
    type Target = [Sample];
    fn deref(&self) -> &[Sample] {
        self.as_slice()
    }
}

/// The window a range vector was selected for: `(start, end]`, in ms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RangeWindow {
    pub(crate) start: i64,
    pub(crate) end: i64,
}

impl RangeWindow {
    pub(crate) fn range_secs(&self) -> f64 {
        (self.end - self.start) as f64 / 1000.0
    }
}

/// An evaluated expression at one step.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Scalar(f64),
    Str(String),
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>, RangeWindow),
}

/// One element of an instant-vector result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    /// The series' labels.
    pub labels: Labels,
    /// Evaluation time, ms.
    pub t: i64,
    /// The value.
    pub v: f64,
}

/// What a query returns.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryValue {
    /// A scalar at the evaluation time.
    Scalar {
        /// Evaluation time, ms.
        t: i64,
        /// The value.
        v: f64,
    },
    /// A string literal.
    String {
        /// Evaluation time, ms.
        t: i64,
        /// The string.
        value: String,
    },
    /// An instant vector (instant queries); in the order the expression produced it.
    Vector(Vec<VectorSample>),
    /// A range vector (instant queries of range selectors or subqueries) or the result of
    /// a range query: series sorted by labels, points in time order.
    Matrix(Vec<Series>),
}

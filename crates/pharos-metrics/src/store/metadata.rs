//! Metric metadata: type, help and unit per metric name.

use std::fmt;

/// A metric's type, as the Prometheus metadata API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MetricType {
    /// A monotonic counter.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A classic or native histogram.
    Histogram,
    /// A gauge histogram.
    GaugeHistogram,
    /// A summary.
    Summary,
    /// An info metric.
    Info,
    /// A state set.
    StateSet,
    /// Not known.
    #[default]
    Unknown,
}

impl MetricType {
    /// The name the API reports (`counter`, `gauge`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::GaugeHistogram => "gaugehistogram",
            Self::Summary => "summary",
            Self::Info => "info",
            Self::StateSet => "stateset",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about a metric name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Metadata {
    /// The metric's type.
    pub kind: MetricType,
    /// Its help text.
    pub help: String,
    /// Its unit (may be empty).
    pub unit: String,
}

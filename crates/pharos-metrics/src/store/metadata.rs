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
    /// The number remote write (1.0 and 2.0) gives the type, also used in part files.
    pub fn code(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Counter => 1,
            Self::Gauge => 2,
            Self::Histogram => 3,
            Self::GaugeHistogram => 4,
            Self::Summary => 5,
            Self::Info => 6,
            Self::StateSet => 7,
        }
    }

    /// The type of a [`MetricType::code`]; `None` for a number no type has.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Unknown,
            1 => Self::Counter,
            2 => Self::Gauge,
            3 => Self::Histogram,
            4 => Self::GaugeHistogram,
            5 => Self::Summary,
            6 => Self::Info,
            7 => Self::StateSet,
            _ => return None,
        })
    }

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

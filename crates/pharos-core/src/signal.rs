use std::fmt;

/// One of the three telemetry signals Pharos stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The word OTLP uses for one item of this signal, as in `rejected_spans`.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Signal::Traces => 1,
            Signal::Metrics => 2,
            Signal::Logs => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Signal> {
        match code {
            1 => Some(Signal::Traces),
            2 => Some(Signal::Metrics),
            3 => Some(Signal::Logs),
            _ => None,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

//! Why the head refused a sample, an exemplar or a series.

use pharos_core::ErrorCode;

/// Why an append was refused. Messages name the limit that was hit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AppendError {
    /// The series has no `__name__` label.
    #[error("series {labels} has no metric name (__name__)")]
    MissingMetricName {
        /// The series, formatted.
        labels: String,
    },
    /// A label name is longer than allowed.
    #[error("label name {name:?} is {len} bytes, over the limit of {limit} (max_label_name_length)")]
    LabelNameTooLong {
        /// The name, cut to the limit.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A label value is longer than allowed.
    #[error("value of label {name:?} is {len} bytes, over the limit of {limit} (max_label_value_length)")]
    LabelValueTooLong {
        /// The label's name.
        name: String,
        /// The value's length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The series has more labels than allowed.
    #[error("series {labels} has {count} labels, over the limit of {limit} (max_labels_per_series)")]
    TooManyLabels {
        /// The series, formatted.
        labels: String,
        /// Its label count.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Creating the series would pass the tenant's series limit.
    #[error("per-tenant series limit of {limit} reached (max_series_per_tenant)")]
    SeriesLimit {
        /// The limit.
        limit: usize,
    },
    /// A sample older than the series' newest, with out-of-order ingestion off.
    #[error(
        "out of order sample: timestamp {timestamp} is before the series' last sample at {last} and out_of_order_time_window is 0"
    )]
    OutOfOrder {
        /// The sample's timestamp, ms.
        timestamp: i64,
        /// The series' newest timestamp, ms.
        last: i64,
    },
    /// A sample older than the out-of-order window allows.
    #[error(
        "too old sample: timestamp {timestamp} is more than out_of_order_time_window {window_ms}ms before the series' last sample at {last}"
    )]
    TooOld {
        /// The sample's timestamp, ms.
        timestamp: i64,
        /// The series' newest timestamp, ms.
        last: i64,
        /// The window, ms.
        window_ms: i64,
    },
    /// A sample older than the head's lower bound: that time is already in blocks.
    #[error(
        "out of bounds: timestamp {timestamp} is before {min_valid}, the oldest time the head still accepts (older data is already in blocks)"
    )]
    OutOfBounds {
        /// The sample's timestamp, ms.
        timestamp: i64,
        /// The oldest timestamp the head accepts, ms.
        min_valid: i64,
    },
    /// Internal: the series was dropped from the head while being appended to; the head
    /// looks it up again (never returned by the head).
    #[error("series removed from the head")]
    Removed,
    /// A sample for a timestamp the series already has, with another value.
    #[error("duplicate sample for timestamp {timestamp}")]
    DuplicateSample {
        /// The timestamp, ms.
        timestamp: i64,
    },
    /// A new metric name's metadata would pass the limit of names with metadata.
    #[error("metadata limit of {limit} metric names reached (max_metadata)")]
    MetadataLimit {
        /// The limit.
        limit: usize,
    },
    /// An exemplar older than the series' newest exemplar.
    #[error("out of order exemplar: timestamp {timestamp} is before the series' last exemplar at {last}")]
    OutOfOrderExemplar {
        /// The exemplar's timestamp, ms.
        timestamp: i64,
        /// The newest exemplar's timestamp, ms.
        last: i64,
    },
    /// An exemplar's labels are longer than Prometheus allows.
    #[error("exemplar labels are {len} characters, over the limit of {limit}")]
    ExemplarLabelsTooLong {
        /// Characters in names and values together.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

impl AppendError {
    /// The protocol-independent kind of failure (none of these improve on retry).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::SeriesLimit { .. } | Self::MetadataLimit { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::InvalidInput,
        }
    }

    /// A short, bounded label for the kind of failure (for metric labels and reasons).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetricName { .. } => "missing_metric_name",
            Self::LabelNameTooLong { .. } | Self::LabelValueTooLong { .. } | Self::TooManyLabels { .. } => {
                "invalid_labels"
            }
            Self::SeriesLimit { .. } => "series_limit",
            Self::OutOfOrder { .. } => "out_of_order",
            Self::TooOld { .. } => "too_old",
            Self::OutOfBounds { .. } | Self::Removed => "out_of_bounds",
            Self::DuplicateSample { .. } => "duplicate_sample",
            Self::MetadataLimit { .. } => "metadata_limit",
            Self::OutOfOrderExemplar { .. } | Self::ExemplarLabelsTooLong { .. } => "exemplar",
        }
    }
}

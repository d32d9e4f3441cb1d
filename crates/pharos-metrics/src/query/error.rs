//! Query errors, and their mapping to Prometheus's API `errorType`.

/// Why a query failed. Messages follow Prometheus's wording where clients may match on it.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query text does not parse.
    #[error("{at}parse error: {message}")]
    Parse {
        /// Where, as Prometheus writes it (`line:column: `, 1-based), or empty.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A regex in a matcher or function argument does not compile (or is too large).
    #[error("invalid regular expression {pattern:?}")]
    InvalidRegex {
        /// The pattern as written in the query.
        pattern: String,
        /// The regex engine's reason.
        #[source]
        source: Box<regex::Error>,
    },
    /// A range query whose expression is not an instant vector or scalar.
    #[error("invalid expression type \"{found}\" for range query, must be Scalar or instant Vector")]
    InvalidRangeQueryType {
        /// `range vector` or `string`.
        found: &'static str,
    },
    /// A range query with a step that is not positive or an end before the start.
    #[error("invalid range query: {reason}")]
    InvalidRange {
        /// What is wrong with start, end or step.
        reason: &'static str,
    },
    /// The query would hold more samples in memory than allowed.
    #[error(
        "query processing would load too many samples into memory in query execution (over the limit of {limit} samples, max_query_samples)"
    )]
    TooManySamples {
        /// The configured limit.
        limit: usize,
    },
    /// The query ran past its deadline.
    #[error("query timed out in expression evaluation")]
    Timeout,
    /// The caller cancelled the query.
    #[error("query was canceled in expression evaluation")]
    Canceled,
    /// Reading series failed.
    #[error("expanding series")]
    Source {
        /// The source's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Two output series ended up with the same labels.
    #[error("vector cannot contain metrics with the same labelset")]
    DuplicateLabelset,
    /// One-to-one or many-to-one matching found several series on the "one" side.
    #[error(
        "found duplicate series for the match group {group} on the {side} hand-side of the operation: [{first}, {second}];many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    DuplicateMatchSeries {
        /// The matching labels, formatted.
        group: String,
        /// `left` or `right`.
        side: &'static str,
        /// The first duplicate, formatted.
        first: String,
        /// The second duplicate, formatted.
        second: String,
    },
    /// One-to-one matching where several left series match one right series.
    #[error("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)")]
    ImplicitManyToOne,
    /// group_left/group_right produced the same output series twice.
    #[error("multiple matches for labels: grouping labels must ensure unique matches")]
    NonUniqueGroupMatch,
    /// A topk/bottomk/limitk parameter was NaN.
    #[error("Parameter value is NaN")]
    NanParameter,
    /// A limit_ratio parameter was NaN.
    #[error("Ratio value is NaN")]
    NanRatio,
    /// A topk/bottomk/limitk parameter does not fit an int64.
    #[error("Scalar value {value} {direction} int64")]
    ParameterOutOfRange {
        /// The parameter.
        value: f64,
        /// `overflows` or `underflows`.
        direction: &'static str,
    },
    /// A label name produced or used by the query is not valid.
    #[error("invalid label name {}", super::strings::quoted(.name))]
    InvalidLabelName {
        /// The offending name.
        name: String,
    },
    /// label_replace got a regex that does not compile.
    #[error("invalid regular expression in label_replace(): {pattern}")]
    InvalidLabelReplaceRegex {
        /// The pattern.
        pattern: String,
    },
    /// label_replace/label_join got an invalid destination label name.
    #[error("invalid destination label name in {function}(): {}", super::strings::shown(.name))]
    InvalidDestinationLabel {
        /// `label_replace` or `label_join`.
        function: &'static str,
        /// The name.
        name: String,
    },
    /// label_join got an invalid source label name.
    #[error("invalid source label name in label_join(): {}", super::strings::shown(.name))]
    InvalidSourceLabel {
        /// The name.
        name: String,
    },
    /// double_exponential_smoothing got a factor outside (0, 1).
    #[error("invalid {which} factor. Expected: 0 < {short} < 1, got: {value:.6}")]
    InvalidSmoothingFactor {
        /// `smoothing` or `trend`.
        which: &'static str,
        /// `sf` or `tf`.
        short: &'static str,
        /// The value given.
        value: f64,
    },
    /// The query uses something this engine does not implement (yet).
    #[error("not supported: {what}")]
    Unsupported {
        /// What is missing.
        what: String,
    },
}

/// Prometheus's API `errorType` values that queries can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// The request is malformed (HTTP 400).
    BadData,
    /// The query failed while running (HTTP 422).
    Execution,
    /// The query ran out of time (HTTP 503).
    Timeout,
    /// The query was cancelled (HTTP 503).
    Canceled,
    /// Storage or engine fault (HTTP 500).
    Internal,
}

impl ErrorType {
    /// The string Prometheus puts in `errorType`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadData => "bad_data",
            Self::Execution => "execution",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
            Self::Internal => "internal",
        }
    }
}

impl QueryError {
    /// The `errorType` the Prometheus HTTP API reports for this error.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Self::Parse { .. }
            | Self::InvalidRegex { .. }
            | Self::InvalidRangeQueryType { .. }
            | Self::InvalidRange { .. } => ErrorType::BadData,
            Self::Timeout => ErrorType::Timeout,
            Self::Canceled => ErrorType::Canceled,
            Self::Source { .. } => ErrorType::Internal,
            _ => ErrorType::Execution,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_parse_error_is_bad_data() {
        let e = QueryError::Parse { at: String::new(), message: "unexpected end of input".into() };
        assert_eq!(e.error_type().as_str(), "bad_data");
        assert_eq!(QueryError::DuplicateLabelset.error_type().as_str(), "execution");
    }
}

/// What kind of failure an error is, independent of the protocol that reports it.
///
/// Each crate's public errors map to one of these; one place per protocol maps a code to a
/// status (HTTP, gRPC). `retryable` says whether the same request can succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or breaks a rule; retrying the same request cannot help.
    InvalidInput,
    /// The request is over a size or count limit; retrying the same request cannot help.
    TooLarge,
    /// The body's media type or encoding is not supported.
    UnsupportedMediaType,
    /// The caller sends faster than allowed; retry later.
    Throttled,
    /// Pharos cannot take the data now (queue full, shutting down); retry later.
    Unavailable,
    /// The request took too long to arrive.
    Timeout,
    NotFound,
    /// A bug or an I/O failure inside Pharos.
    Internal,
}

impl ErrorCode {
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::Throttled | ErrorCode::Unavailable)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Throttled => "throttled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Internal => "internal",
        }
    }
}

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

    /// The HTTP status that reports this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Throttled => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 408,
            ErrorCode::NotFound => 404,
            ErrorCode::Internal => 500,
        }
    }

    /// The gRPC status code (as in `google.rpc.Code`) that reports this code. Whether a
    /// RESOURCE_EXHAUSTED may be retried is told by the RetryInfo detail, which only
    /// [`retryable`](Self::retryable) codes carry.
    pub fn grpc_code(self) -> i32 {
        match self {
            ErrorCode::InvalidInput | ErrorCode::UnsupportedMediaType => 3,
            ErrorCode::Timeout => 4,
            ErrorCode::NotFound => 5,
            ErrorCode::TooLarge | ErrorCode::Throttled => 8,
            ErrorCode::Internal => 13,
            ErrorCode::Unavailable => 14,
        }
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

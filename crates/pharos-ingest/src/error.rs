use pharos_core::{ErrorCode, Signal, TenantError};
use pharos_queue::QueueError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid X-Scope-OrgID: {0}")]
    Tenant(#[from] TenantError),
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    #[error("unsupported content encoding {0:?}: use gzip, zstd or identity")]
    UnsupportedEncoding(String),
    #[error("request body is over the limit max_body_size of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("decompressed request body is over the limit max_decompressed_size of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("cannot decompress the {encoding} body: {source}")]
    Decompress {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode the protobuf body: {0}")]
    DecodeProtobuf(#[from] prost::DecodeError),
    #[error("cannot decode the protobuf body: {0}")]
    MalformedProtobuf(#[from] crate::otlp::WireError),
    #[error("cannot decode the protobuf body: {0}")]
    DecodeWire(#[from] pharos_core::wire::WireError),
    #[error("cannot decode the JSON body: {0}")]
    DecodeJson(#[from] serde_json::Error),
    #[error("request has {count} {}, over the limit max_items_per_request of {limit}", signal.item_name())]
    TooManyItems { signal: Signal, count: usize, limit: usize },
    #[error("all {count} {} were rejected: {message}", signal.item_name())]
    AllRejected { signal: Signal, count: u64, message: String },
    #[error("the request body did not arrive within {secs} seconds")]
    BodyTimeout { secs: f64 },
    #[error("cannot read the request body: {0}")]
    ReadBody(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl IngestError {
    pub fn code(&self) -> ErrorCode {
        match self {
            IngestError::Tenant(_)
            | IngestError::Decompress { .. }
            | IngestError::DecodeProtobuf(_)
            | IngestError::MalformedProtobuf(_)
            | IngestError::DecodeWire(_)
            | IngestError::DecodeJson(_)
            | IngestError::AllRejected { .. }
            | IngestError::ReadBody(_)
            | IngestError::Invalid(_) => ErrorCode::InvalidInput,
            IngestError::UnsupportedContentType(_) | IngestError::UnsupportedEncoding(_) => {
                ErrorCode::UnsupportedMediaType
            }
            IngestError::BodyTooLarge { .. }
            | IngestError::DecompressedTooLarge { .. }
            | IngestError::TooManyItems { .. } => ErrorCode::TooLarge,
            IngestError::BodyTimeout { .. } => ErrorCode::Timeout,
            IngestError::Queue(e) => e.code(),
        }
    }

    /// The message for the client: the whole story for the client's own mistakes, no internal
    /// detail (paths, I/O errors) for Pharos's.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::Internal => "internal error while storing the data; it was not accepted".into(),
            _ => self.to_string(),
        }
    }

    /// A short, bounded label for self-telemetry.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Tenant(_) => "invalid_tenant",
            IngestError::UnsupportedContentType(_) => "unsupported_content_type",
            IngestError::UnsupportedEncoding(_) => "unsupported_encoding",
            IngestError::BodyTooLarge { .. } => "body_too_large",
            IngestError::DecompressedTooLarge { .. } => "decompressed_too_large",
            IngestError::Decompress { .. } => "bad_compression",
            IngestError::DecodeProtobuf(_)
            | IngestError::MalformedProtobuf(_)
            | IngestError::DecodeWire(_) => "malformed_protobuf",
            IngestError::DecodeJson(_) => "malformed_json",
            IngestError::TooManyItems { .. } => "too_many_items",
            IngestError::AllRejected { .. } => "all_rejected",
            IngestError::BodyTimeout { .. } => "body_timeout",
            IngestError::ReadBody(_) => "read_body",
            IngestError::Invalid(_) => "invalid_request",
            IngestError::Queue(QueueError::Full { .. }) => "queue_full",
            IngestError::Queue(QueueError::Closed) => "shutting_down",
            IngestError::Queue(_) => "queue_error",
        }
    }
}

//! Receivers: OTLP over gRPC and HTTP (protobuf and JSON, gzip and zstd), Prometheus remote
//! write, Loki push and Zipkin, with limits, tenancy and back-pressure. A receiver answers
//! success only once the queue says the data is durable.

mod body;
mod error;
mod limits;
pub mod loki;
mod metrics;
pub mod otlp;
pub mod remote_write;
mod tenant;
pub mod zipkin;

pub use error::IngestError;
pub use limits::Limits;
pub use metrics::IngestMetrics;
pub use otlp::{Ingestor, Outcome};
pub use tenant::{TENANT_HEADER, tenant_from_header};

//! Pharos traces: the span model, TraceQL, the trace store and the Tempo API.
//!
//! - [`model`]: spans as they arrived over OTLP, with their resource and scope.
//! - [`query`]: TraceQL parsing and evaluation.
//! - [`store`]: the head, Parquet blocks on the object store, the compactor.
//! - [`api`]: the Tempo HTTP API; [`jaeger`]: the Jaeger query API.

pub mod api;
pub mod jaeger;
pub mod model;
pub mod query;
pub mod store;

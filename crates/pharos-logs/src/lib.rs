//! Pharos logs.
//!
//! - `model`: streams (label sets) and entries, and the `LogSource` the LogQL engine reads;
//! - `decode`: OTLP logs and Loki push records from the queue into streams;
//! - `store`: the head, the Parquet blocks, the processors' `PartitionWriter`, compaction;
//! - `query`: LogQL: the parser (its AST prints back to LogQL that parses to the same AST)
//!   and the evaluator over a `LogSource`;
//! - `api`: the Loki HTTP API router over the store.

pub mod api;
pub mod decode;
pub mod model;
pub mod query;
pub mod store;
mod wire;

//! Pharos traces: TraceQL today; the span model, the trace store and the Tempo and Jaeger
//! APIs follow.
//!
//! `query` parses TraceQL into a typed syntax tree ([`query::Query`]) that prints back as
//! TraceQL; evaluation comes later.

pub mod query;

//! Pharos metrics: the sample model and the PromQL engine.
//!
//! `model` holds labels, samples and series; `query` parses and evaluates PromQL against
//! any [`query::SeriesSource`]; `store` is the in-memory head of the TSDB (one per tenant),
//! itself a `SeriesSource`; `api` serves the Prometheus HTTP API over the heads; `otlp`
//! converts OTLP metrics into Prometheus series, exemplars and metadata.

pub mod api;
pub mod model;
pub mod otlp;
pub mod query;
pub mod remote_write;
pub mod store;

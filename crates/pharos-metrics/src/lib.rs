//! Pharos metrics: the sample model and the PromQL engine.
//!
//! `model` holds labels, samples and series; `query` parses and evaluates PromQL against
//! any [`query::SeriesSource`]. Storage (`store`) and the Prometheus HTTP API (`api`) come
//! later.

pub mod model;
pub mod query;

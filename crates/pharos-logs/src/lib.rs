//! Pharos logs.
//!
//! `model` holds streams (label sets) and entries and the `LogSource` the LogQL engine reads;
//! `query` parses LogQL into an AST that prints back to LogQL that parses to the same AST.

pub mod model;
pub mod query;

//! Pharos logs.
//!
//! `query` parses LogQL into an AST that the evaluator (to come) walks; the AST prints
//! back to LogQL that parses to the same AST.

pub mod query;

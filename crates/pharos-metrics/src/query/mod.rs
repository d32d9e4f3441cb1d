//! PromQL: parse, then evaluate against a [`SeriesSource`] (as Prometheus's engine runs
//! against `storage.Querier`), so the engine is tested on in-memory data.
//!
//! Evaluation follows Prometheus 3: a 5m lookback with staleness markers, left-open range
//! windows `(t - range, t]`, `offset` and `@` (with `start()`/`end()`), subqueries aligned
//! to their step, delayed removal of `__name__`, and Kahan summation where Prometheus uses
//! it. Native histograms are not supported; float samples only.

mod aggregate;
mod binary;
mod engine;
mod error;
mod eval;
mod functions;
mod kahan;
mod quantile;
mod rollup;
mod selector;
mod source;
mod strings;
mod value;

pub use engine::{Annotations, CancelToken, Engine, EngineOptions, parse};
pub use error::{ErrorType, QueryError};
pub use selector::{extract_selectors, parse_series_selector};
pub use source::{
    MatchKind, Matcher, MemSource, REGEX_SIZE_LIMIT, SeriesSource, compile_anchored, matches_all,
};
pub use value::{QueryValue, VectorSample};

/// The parsed expression type (from the `promql-parser` crate).
pub use promql_parser::parser::Expr;

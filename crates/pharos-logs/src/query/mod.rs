//! LogQL: parsing queries into a syntax tree, and printing them back.
//!
//! ```
//! use pharos_logs::query::{parse, Expr};
//!
//! let expr = parse(r#"sum by (level) (count_over_time({app="api"} |= "error" | json [5m]))"#).unwrap();
//! assert!(expr.is_metric());
//! assert_eq!(expr.selectors()[0].matchers()[0].name, "app");
//! assert_eq!(parse(&expr.to_string()).unwrap(), expr);
//! ```
//!
//! Supported: stream selectors; line filters `|=`, `!=`, `|~`, `!~`, `|>`, `!>` with `or`
//! and `ip(...)`; the parsers `json`, `logfmt`, `regexp`, `pattern` and `unpack`; label
//! filters on strings, regexes, numbers, durations, byte sizes and IPs with `and`, `or`, `,`
//! and parentheses; `line_format`, `label_format`, `drop`, `keep` and `decolorize`; range
//! aggregations with `unwrap` and `offset`; vector aggregations; binary operators with
//! `bool`, `on`/`ignoring` and `group_left`/`group_right`; `label_replace` and `vector`.

mod ast;
mod bytesize;
mod display;
mod duration;
mod error;
mod eval;
mod lexer;
mod parser;
mod pattern;

pub use ast::*;
pub use error::{ParseError, ParseErrorKind};
pub use eval::{
    DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SERIES, Direction, EvalError, Limits, LogStream, MAX_STEPS, QueryValue,
    ResultEntry, Sample, Series, Stats, evaluate_instant, evaluate_range, select_logs,
};
pub use parser::{MAX_DEPTH, parse};

//! The error a TraceQL query that does not parse (or does not type-check) reports.

use pharos_core::ErrorCode;

/// Why a TraceQL query was rejected, and where.
///
/// `offset` is a byte offset into the query text; `line` and `column` are 1-based, the
/// column counted in characters. Displays as `parse error at line 1, col 14: expected "}",
/// found end of query`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("parse error at line {line}, col {column}: {kind}")]
pub struct ParseError {
    /// Byte offset of the offending token in the query text.
    pub offset: usize,
    /// 1-based line of `offset`.
    pub line: usize,
    /// 1-based column of `offset`, in characters.
    pub column: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// An error of `kind` at byte `offset` of `input` (clamped to the input's length and to a
    /// character boundary).
    pub(crate) fn at(input: &str, offset: usize, kind: ParseErrorKind) -> Self {
        let mut offset = offset.min(input.len());
        while !input.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &input[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { offset, line, column, kind }
    }

    /// The wire-independent code: a query that does not parse is invalid input (HTTP 400).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidInput
    }
}

/// What is wrong with a query, without its position.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseErrorKind {
    /// The parser met a token (or the end) where it needed something else.
    #[error("expected {expected}, found {found}")]
    Unexpected {
        /// What would have been valid here, e.g. `"}"` or `an expression`.
        expected: &'static str,
        /// The token met, quoted, or `end of query`.
        found: String,
    },
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// A string or quoted attribute name without its closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// A backslash escape that TraceQL strings do not know.
    #[error("invalid escape sequence {0:?} in string")]
    InvalidEscape(String),
    /// A number that does not parse or is out of range.
    #[error("invalid number {0:?}")]
    InvalidNumber(String),
    /// A duration with an unknown unit or out of range.
    #[error("invalid duration {0:?} (units are ns, us, µs, ms, s, m, h)")]
    InvalidDuration(String),
    /// `span.`, `resource.`, … not followed by a name.
    #[error("expected an attribute name after {0:?}")]
    MissingAttributeName(&'static str),
    /// `span:foo` and the like where `foo` is not an intrinsic of that scope.
    #[error("unknown intrinsic {0:?}")]
    UnknownIntrinsic(String),
    /// A bare word that is neither an intrinsic nor a keyword nor a literal.
    #[error("unknown identifier {0:?}; attributes are written .{0} or span.{0} or resource.{0}")]
    UnknownIdentifier(String),
    /// A function name that TraceQL does not have in this position.
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    /// A function called with the wrong arguments.
    #[error("{function}() {reason}")]
    InvalidArguments {
        /// The function's name.
        function: &'static str,
        /// What is wrong, e.g. `takes no arguments`.
        reason: &'static str,
    },
    /// A binary operator applied to operands of types it cannot combine.
    #[error("operator {op} cannot compare or combine {lhs} and {rhs}")]
    TypeMismatch {
        /// The operator as written.
        op: &'static str,
        /// The left operand's static type.
        lhs: &'static str,
        /// The right operand's static type.
        rhs: &'static str,
    },
    /// A unary operator applied to an operand of the wrong type.
    #[error("operator {op} cannot be applied to {operand}")]
    InvalidOperand {
        /// The operator as written.
        op: &'static str,
        /// The operand's static type.
        operand: &'static str,
    },
    /// A spanset filter whose expression cannot be a boolean, e.g. `{ 1 }`.
    #[error("a spanset filter must be a boolean expression, found {0}")]
    NotBoolean(&'static str),
    /// The right side of `=~` or `!~` is not a string literal.
    #[error("the right side of {0} must be a string literal")]
    RegexNotLiteral(&'static str),
    /// A regular expression that does not compile.
    #[error("invalid regular expression {pattern:?}: {source}")]
    InvalidRegex {
        /// The pattern as written.
        pattern: String,
        /// The regex engine's reason.
        #[source]
        source: regex::Error,
    },
    /// A pipeline scalar filter without an aggregate, e.g. `| 1 > 2`.
    #[error("a scalar filter must compare an aggregate such as count() or avg(duration)")]
    ScalarFilterWithoutAggregate,
    /// A quantile outside [0, 1].
    #[error("quantile {0} is outside [0, 1]")]
    InvalidQuantile(f64),
    /// Brackets, prefix operators or operator chains nested deeper than the parser allows.
    #[error("query nests deeper than {0} levels")]
    TooDeep(usize),
}

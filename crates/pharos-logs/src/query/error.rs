//! The one error type of the LogQL parser.

use pharos_core::ErrorCode;

/// A LogQL query that cannot be parsed, with where it went wrong.
///
/// `position` is a byte offset into the query; `line` and `column` are 1-based, the column
/// counted in characters. The message reads like Loki's
/// (`parse error at line 1, col 14: ...`), so the HTTP layer can return it as is with 400.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parse error at line {line}, col {column}: {kind}")]
pub struct ParseError {
    pub position: usize,
    pub line: usize,
    pub column: usize,
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// An error at byte `position` of `input`.
    pub(crate) fn new(input: &str, position: usize, kind: ParseErrorKind) -> Self {
        let position = position.min(input.len());
        // `position` always comes from a token or character boundary; fall back to the
        // nearest earlier boundary rather than slicing inside a character.
        let mut boundary = position;
        while !input.is_char_boundary(boundary) {
            boundary -= 1;
        }
        let before = &input[..boundary];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ParseError { position, line, column, kind }
    }

    /// Every parse error is the client's: a malformed query, never retryable.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidInput
    }
}

/// What is wrong with the query.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("expected {expected}, found {found}")]
    Unexpected { expected: &'static str, found: String },
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("unterminated string")]
    UnterminatedString,
    #[error("invalid escape sequence in string: {reason}")]
    InvalidEscape { reason: &'static str },
    #[error("string is not valid UTF-8 after unescaping")]
    InvalidUtf8String,
    #[error("invalid number, duration or byte size {text:?}")]
    InvalidNumber { text: String },
    #[error("number {text:?} is out of range")]
    NumberOutOfRange { text: String },
    #[error("unknown flag {flag:?}, expected --strict or --keep-empty")]
    UnknownFlag { flag: String },
    #[error("invalid regex: {source}")]
    InvalidRegex { source: regex::Error },
    #[error("regexp parser needs at least one named capture group like (?P<name>...)")]
    RegexpWithoutNamedGroup,
    #[error("invalid pattern: {reason}")]
    InvalidPattern { reason: &'static str },
    #[error(
        "stream selector needs at least one equality or regex matcher that does not match the empty \
         string; app=~\".*\" does not, app=~\".+\" does"
    )]
    SelectorMatchesEverything,
    #[error("range must be greater than zero")]
    ZeroRange,
    #[error("range given twice; put it after the stream selector or at the end of the pipeline")]
    DuplicateRange,
    #[error("a range like [5m] is only allowed inside a range aggregation such as count_over_time")]
    RangeOutsideAggregation,
    #[error("unwrap is only allowed inside a range aggregation such as sum_over_time")]
    UnwrapOutsideAggregation,
    #[error("only label filters are allowed after unwrap")]
    StageAfterUnwrap,
    #[error("{op} needs an unwrap expression like | unwrap latency")]
    UnwrapRequired { op: &'static str },
    #[error("{op} does not take an unwrap expression")]
    UnwrapNotAllowed { op: &'static str },
    #[error("grouping with by/without is not allowed for {op}")]
    GroupingNotAllowed { op: &'static str },
    #[error("grouping given twice for {op}")]
    DuplicateGrouping { op: &'static str },
    #[error("invalid parameter for {op}: {reason}")]
    InvalidParameter { op: &'static str, reason: &'static str },
    #[error("unknown function or aggregation {name:?}")]
    UnknownFunction { name: String },
    #[error(
        "a log query cannot be used here; wrap it in a range aggregation such as count_over_time({{...}} [1m])"
    )]
    LogQueryNotAllowed,
    #[error("bool is only allowed on comparison operators")]
    BoolOnNonComparison,
    #[error("set operator {op} is not allowed with a scalar operand")]
    SetOperatorWithScalar { op: &'static str },
    #[error("vector matching with on/ignoring is not allowed with a scalar operand")]
    MatchingWithScalar,
    #[error("group_left/group_right is not allowed with set operator {op}")]
    GroupModifierOnSetOperator { op: &'static str },
    #[error("invalid label name {name:?}")]
    InvalidLabelName { name: String },
    #[error("query is nested too deeply (more than {limit} levels)")]
    TooDeep { limit: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_on_second_line_counts_line_and_column() {
        let err = ParseError::new("ab\ncdé f", 7, ParseErrorKind::UnterminatedString);
        assert_eq!((err.line, err.column), (2, 4));
        assert_eq!(err.to_string(), "parse error at line 2, col 4: unterminated string");
    }

    #[test]
    fn new_inside_a_character_does_not_panic() {
        let err = ParseError::new("é", 1, ParseErrorKind::UnterminatedString);
        assert_eq!((err.line, err.column), (1, 1));
    }

    #[test]
    fn code_is_invalid_input() {
        let err = ParseError::new("", 0, ParseErrorKind::ZeroRange);
        assert_eq!(err.code().http_status(), 400);
    }
}

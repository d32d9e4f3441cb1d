//! A recursive-descent parser from tokens to the syntax tree.
//!
//! Metric expressions use precedence climbing. Recursion and the depth of the built tree are
//! both bounded by [`MAX_DEPTH`], so neither parsing, printing nor dropping a tree can
//! overflow the stack, whatever the input.

use std::time::Duration;

use regex::Regex;

use super::ast::*;
use super::error::{ParseError, ParseErrorKind};
use super::lexer::{Tok, Token, tokenize};
use super::pattern::{PatternUse, validate_pattern};

/// The deepest nesting accepted: parentheses, aggregations and chains of operators.
pub const MAX_DEPTH: usize = 256;

/// Parses a LogQL query.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(input)?;
    let mut parser = QueryParser { input, tokens, pos: 0, depth: 0 };
    let expr = if parser.peek() == &Tok::LBrace {
        let query = parser.log_query()?;
        if parser.peek() == &Tok::LBracket {
            return Err(parser.error_here(ParseErrorKind::RangeOutsideAggregation));
        }
        parser.expect_end("line filter, \"|\" or end of query")?;
        Expr::Log(query)
    } else {
        let expr = parser.metric_expr()?.0;
        parser.expect_end("binary operator or end of query")?;
        Expr::Metric(expr)
    };
    Ok(expr)
}

const STAGE_KEYWORDS: [&str; 11] = [
    "json",
    "logfmt",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "drop",
    "keep",
    "decolorize",
    "unwrap",
];

struct QueryParser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    /// Current recursion depth of nested constructs.
    depth: usize,
}

/// A parsed node and the depth of its tree.
type Depth<T> = (T, usize);

impl QueryParser<'_> {
    // ---- token access -------------------------------------------------------------------

    fn token(&self, offset: usize) -> &Token {
        let index = (self.pos + offset).min(self.tokens.len() - 1);
        &self.tokens[index]
    }

    fn peek(&self) -> &Tok {
        &self.token(0).tok
    }

    fn peek_at(&self, offset: usize) -> &Tok {
        &self.token(offset).tok
    }

    fn text(&self, token: &Token) -> &str {
        &self.input[token.start..token.end]
    }

    /// The identifier at `offset`, if the token there is one.
    fn ident_at(&self, offset: usize) -> Option<&str> {
        let token = self.token(offset);
        (token.tok == Tok::Ident).then(|| self.text(token))
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        self.ident_at(0) == Some(keyword)
    }

    fn advance(&mut self) -> Token {
        let token = self.token(0).clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    // ---- errors -------------------------------------------------------------------------

    fn error_at(&self, position: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.input, position, kind)
    }

    fn error_here(&self, kind: ParseErrorKind) -> ParseError {
        self.error_at(self.token(0).start, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        let token = self.token(0);
        let found = describe(token, self.text(token));
        self.error_at(token.start, ParseErrorKind::Unexpected { expected, found })
    }

    fn expect(&mut self, tok: &Tok, expected: &'static str) -> Result<Token, ParseError> {
        if self.peek() == tok { Ok(self.advance()) } else { Err(self.unexpected(expected)) }
    }

    fn expect_ident(&mut self, expected: &'static str) -> Result<String, ParseError> {
        match self.ident_at(0) {
            Some(name) => {
                let name = name.to_string();
                self.advance();
                Ok(name)
            }
            None => Err(self.unexpected(expected)),
        }
    }

    fn expect_string(&mut self, expected: &'static str) -> Result<(String, usize), ParseError> {
        if let Tok::Str(value) = self.peek() {
            let value = value.clone();
            let start = self.advance().start;
            Ok((value, start))
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn comma_string(&mut self, expected: &'static str) -> Result<(String, usize), ParseError> {
        self.expect(&Tok::Comma, "\",\"")?;
        self.expect_string(expected)
    }

    fn expect_end(&self, expected: &'static str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Eof { Ok(()) } else { Err(self.unexpected(expected)) }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(ParseErrorKind::TooDeep { limit: MAX_DEPTH }));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn check_tree_depth(&self, depth: usize, position: usize) -> Result<(), ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error_at(position, ParseErrorKind::TooDeep { limit: MAX_DEPTH }));
        }
        Ok(())
    }

    fn compile_regex(&self, pattern: &str, anchored: bool, position: usize) -> Result<Regex, ParseError> {
        let result = if anchored { Regex::new(&format!("^(?:{pattern})$")) } else { Regex::new(pattern) };
        result.map_err(|source| self.error_at(position, ParseErrorKind::InvalidRegex { source }))
    }

    // ---- log queries --------------------------------------------------------------------

    fn log_query(&mut self) -> Result<LogQuery, ParseError> {
        let selector = self.selector()?;
        let (pipeline, unwrap) = self.pipeline(false)?;
        debug_assert!(unwrap.is_none(), "unwrap is rejected outside ranges");
        Ok(LogQuery { selector, pipeline })
    }

    fn selector(&mut self) -> Result<Selector, ParseError> {
        let open = self.expect(&Tok::LBrace, "\"{\"")?;
        let mut matchers = Vec::new();
        let mut has_non_empty_matcher = false;
        loop {
            if matchers.is_empty() && self.peek() == &Tok::RBrace {
                return Err(self.unexpected("label matcher like app=\"api\""));
            }
            let (matcher, matches_empty) = self.matcher()?;
            if matches!(matcher.op, MatchOp::Eq | MatchOp::Re) && !matches_empty {
                has_non_empty_matcher = true;
            }
            matchers.push(matcher);
            if self.eat(&Tok::Comma) {
                // A trailing comma is fine: `{app="api",}`.
                if self.peek() == &Tok::RBrace {
                    self.advance();
                    break;
                }
                continue;
            }
            self.expect(&Tok::RBrace, "\"}\" or \",\"")?;
            break;
        }
        if !has_non_empty_matcher {
            return Err(self.error_at(open.start, ParseErrorKind::SelectorMatchesEverything));
        }
        Ok(Selector { matchers })
    }

    /// `name op "value"`, and whether it matches the empty value.
    fn matcher(&mut self) -> Result<(Matcher, bool), ParseError> {
        let name = self.expect_ident("label name")?;
        let op = match self.peek() {
            Tok::Eq => MatchOp::Eq,
            Tok::Neq => MatchOp::Neq,
            Tok::Re => MatchOp::Re,
            Tok::Nre => MatchOp::Nre,
            _ => return Err(self.unexpected("\"=\", \"!=\", \"=~\" or \"!~\"")),
        };
        self.advance();
        let (value, position) = self.expect_string("string")?;
        let matches_empty = match op {
            MatchOp::Eq => value.is_empty(),
            MatchOp::Neq => !value.is_empty(),
            MatchOp::Re | MatchOp::Nre => {
                let regex_matches_empty = self.compile_regex(&value, true, position)?.is_match("");
                regex_matches_empty == (op == MatchOp::Re)
            }
        };
        Ok((Matcher { name, op, value }, matches_empty))
    }

    /// Stages until something that cannot continue a pipeline. With `allow_unwrap`, an
    /// `| unwrap` ends the stages and only label filters may follow it.
    fn pipeline(&mut self, allow_unwrap: bool) -> Result<(Vec<Stage>, Option<Unwrap>), ParseError> {
        let mut stages = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::PipeEq => LineFilterOp::Contains,
                Tok::Neq => LineFilterOp::NotContains,
                Tok::PipeRe => LineFilterOp::Regex,
                Tok::Nre => LineFilterOp::NotRegex,
                Tok::PipePattern => LineFilterOp::Pattern,
                Tok::NotPattern => LineFilterOp::NotPattern,
                Tok::Pipe => {
                    if self.ident_at(1) == Some("unwrap") && !is_comparison(self.peek_at(2)) {
                        let start = self.token(1).start;
                        if !allow_unwrap {
                            return Err(self.error_at(start, ParseErrorKind::UnwrapOutsideAggregation));
                        }
                        self.advance();
                        let unwrap = self.unwrap()?;
                        return Ok((stages, Some(unwrap)));
                    }
                    self.advance();
                    stages.push(self.stage()?);
                    continue;
                }
                _ => return Ok((stages, None)),
            };
            self.advance();
            stages.push(Stage::LineFilter(self.line_filter(op)?));
        }
    }

    fn line_filter(&mut self, op: LineFilterOp) -> Result<LineFilter, ParseError> {
        let mut values = vec![self.line_filter_value(op)?];
        while self.peek_keyword("or")
            && (matches!(self.peek_at(1), Tok::Str(_))
                || (self.ident_at(1) == Some("ip") && self.peek_at(2) == &Tok::LParen))
        {
            self.advance();
            values.push(self.line_filter_value(op)?);
        }
        Ok(LineFilter { op, values })
    }

    fn line_filter_value(&mut self, op: LineFilterOp) -> Result<LineFilterValue, ParseError> {
        let ip_allowed = matches!(op, LineFilterOp::Contains | LineFilterOp::NotContains);
        if ip_allowed && self.peek_keyword("ip") && self.peek_at(1) == &Tok::LParen {
            return Ok(LineFilterValue::Ip(self.ip_call()?));
        }
        let (value, position) =
            self.expect_string(if ip_allowed { "string or ip(...)" } else { "string" })?;
        match op {
            LineFilterOp::Regex | LineFilterOp::NotRegex => {
                self.compile_regex(&value, false, position)?;
            }
            LineFilterOp::Pattern | LineFilterOp::NotPattern => {
                validate_pattern(&value, PatternUse::Filter)
                    .map_err(|reason| self.error_at(position, ParseErrorKind::InvalidPattern { reason }))?;
            }
            LineFilterOp::Contains | LineFilterOp::NotContains => {}
        }
        Ok(LineFilterValue::Text(value))
    }

    /// `ip("...")`, at the `ip` identifier.
    fn ip_call(&mut self) -> Result<String, ParseError> {
        self.advance();
        self.expect(&Tok::LParen, "\"(\"")?;
        let (address, _) = self.expect_string("string with an IP address, range or CIDR")?;
        self.expect(&Tok::RParen, "\")\"")?;
        Ok(address)
    }

    /// The stage after a `|`.
    fn stage(&mut self) -> Result<Stage, ParseError> {
        let keyword = self.ident_at(0).filter(|word| STAGE_KEYWORDS.contains(word));
        // `| json="x"` filters on a label that happens to be named like a keyword.
        let Some(keyword) = keyword.filter(|_| !is_comparison(self.peek_at(1))) else {
            if self.ident_at(0).is_none() && self.peek() != &Tok::LParen {
                return Err(self.unexpected("parser, formatter or label filter after \"|\""));
            }
            return Ok(Stage::LabelFilter(self.label_filter()?.0));
        };
        let keyword = keyword.to_string();
        self.advance();
        Ok(match keyword.as_str() {
            "json" => Stage::Parser(Parser::Json { params: self.extract_params()? }),
            "logfmt" => {
                let (mut strict, mut keep_empty) = (false, false);
                while self.peek() == &Tok::Flag {
                    let token = self.advance();
                    match self.text(&token) {
                        "--strict" => strict = true,
                        "--keep-empty" => keep_empty = true,
                        other => {
                            let flag = other.to_string();
                            return Err(self.error_at(token.start, ParseErrorKind::UnknownFlag { flag }));
                        }
                    }
                }
                Stage::Parser(Parser::Logfmt { strict, keep_empty, params: self.extract_params()? })
            }
            "regexp" => {
                let (regex, position) = self.expect_string("string with a regex")?;
                let compiled = self.compile_regex(&regex, false, position)?;
                if compiled.capture_names().flatten().next().is_none() {
                    return Err(self.error_at(position, ParseErrorKind::RegexpWithoutNamedGroup));
                }
                Stage::Parser(Parser::Regexp(regex))
            }
            "pattern" => {
                let (pattern, position) = self.expect_string("string with a pattern")?;
                validate_pattern(&pattern, PatternUse::Parser)
                    .map_err(|reason| self.error_at(position, ParseErrorKind::InvalidPattern { reason }))?;
                Stage::Parser(Parser::Pattern(pattern))
            }
            "unpack" => Stage::Parser(Parser::Unpack),
            "decolorize" => Stage::Decolorize,
            "line_format" => Stage::LineFormat(self.expect_string("string with a template")?.0),
            "label_format" => Stage::LabelFormat(self.label_formats()?),
            "drop" => Stage::Drop(self.label_selections()?),
            "keep" => Stage::Keep(self.label_selections()?),
            // `unwrap` is handled by `pipeline`; here it was not allowed.
            _ => return Err(self.error_at(self.token(0).start, ParseErrorKind::UnwrapOutsideAggregation)),
        })
    }

    /// `a="path", b` after `json` or `logfmt`; may be empty.
    fn extract_params(&mut self) -> Result<Vec<ExtractParam>, ParseError> {
        let mut params = Vec::new();
        if self.ident_at(0).is_none() {
            return Ok(params);
        }
        loop {
            let label = self.expect_ident("label name")?;
            let path =
                if self.eat(&Tok::Eq) { Some(self.expect_string("string with a path")?.0) } else { None };
            params.push(ExtractParam { label, path });
            if !self.eat(&Tok::Comma) {
                return Ok(params);
            }
        }
    }

    fn label_formats(&mut self) -> Result<Vec<LabelFormat>, ParseError> {
        let mut ops = Vec::new();
        loop {
            let dst = self.expect_ident("label name")?;
            self.expect(&Tok::Eq, "\"=\"")?;
            let op = match self.peek() {
                Tok::Str(template) => {
                    let template = template.clone();
                    self.advance();
                    LabelFormat::Template { dst, template }
                }
                Tok::Ident => LabelFormat::Rename { dst, src: self.expect_ident("label name")? },
                _ => return Err(self.unexpected("label name or string with a template")),
            };
            ops.push(op);
            if !self.eat(&Tok::Comma) {
                return Ok(ops);
            }
        }
    }

    fn label_selections(&mut self) -> Result<Vec<LabelSelection>, ParseError> {
        let mut labels = Vec::new();
        loop {
            if matches!(self.peek_at(1), Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre) {
                labels.push(LabelSelection::Matcher(self.matcher()?.0));
            } else {
                labels.push(LabelSelection::Name(self.expect_ident("label name")?));
            }
            if !self.eat(&Tok::Comma) {
                return Ok(labels);
            }
        }
    }

    fn unwrap(&mut self) -> Result<Unwrap, ParseError> {
        self.advance(); // `unwrap`
        let conversion = match self.ident_at(0) {
            Some("duration") if self.peek_at(1) == &Tok::LParen => UnwrapConversion::Duration,
            Some("duration_seconds") if self.peek_at(1) == &Tok::LParen => UnwrapConversion::DurationSeconds,
            Some("bytes") if self.peek_at(1) == &Tok::LParen => UnwrapConversion::Bytes,
            _ => UnwrapConversion::None,
        };
        let label = if conversion == UnwrapConversion::None {
            self.expect_ident("label name")?
        } else {
            self.advance();
            self.advance();
            let label = self.expect_ident("label name")?;
            self.expect(&Tok::RParen, "\")\"")?;
            label
        };
        let mut post_filters = Vec::new();
        loop {
            match self.peek() {
                Tok::Pipe => {
                    let keyword = self.ident_at(1).filter(|word| STAGE_KEYWORDS.contains(word));
                    if keyword.is_some() && !is_comparison(self.peek_at(2)) {
                        return Err(self.error_at(self.token(1).start, ParseErrorKind::StageAfterUnwrap));
                    }
                    self.advance();
                    if self.ident_at(0).is_none() && self.peek() != &Tok::LParen {
                        return Err(self.unexpected("label filter after unwrap"));
                    }
                    post_filters.push(self.label_filter()?.0);
                }
                Tok::PipeEq | Tok::Neq | Tok::PipeRe | Tok::Nre | Tok::PipePattern | Tok::NotPattern => {
                    return Err(self.error_here(ParseErrorKind::StageAfterUnwrap));
                }
                _ => return Ok(Unwrap { label, conversion, post_filters }),
            }
        }
    }

    // ---- label filters ------------------------------------------------------------------

    /// `a or b`, where `or` binds loosest.
    fn label_filter(&mut self) -> Result<Depth<LabelFilter>, ParseError> {
        self.enter()?;
        let (mut lhs, mut depth) = self.label_filter_and()?;
        while self.peek_keyword("or") {
            let position = self.advance().start;
            let (rhs, rhs_depth) = self.label_filter_and()?;
            depth = depth.max(rhs_depth) + 1;
            self.check_tree_depth(depth, position)?;
            lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
        }
        self.leave();
        Ok((lhs, depth))
    }

    /// `a and b`, `a, b` or `a b`.
    fn label_filter_and(&mut self) -> Result<Depth<LabelFilter>, ParseError> {
        let (mut lhs, mut depth) = self.label_filter_primary()?;
        loop {
            let position = self.token(0).start;
            let explicit = self.peek_keyword("and") || self.peek() == &Tok::Comma;
            let implicit = !explicit
                && self.ident_at(0).is_some_and(|word| word != "or")
                && is_comparison(self.peek_at(1));
            if explicit {
                self.advance();
            } else if !implicit {
                return Ok((lhs, depth));
            }
            let (rhs, rhs_depth) = self.label_filter_primary()?;
            depth = depth.max(rhs_depth) + 1;
            self.check_tree_depth(depth, position)?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
    }

    fn label_filter_primary(&mut self) -> Result<Depth<LabelFilter>, ParseError> {
        if self.eat(&Tok::LParen) {
            let inner = self.label_filter()?;
            self.expect(&Tok::RParen, "\")\", \"and\" or \"or\"")?;
            return Ok(inner);
        }
        let name = self.expect_ident("label name or \"(\"")?;
        let op_token = self.token(0).clone();
        let cmp = match op_token.tok {
            Tok::Eq | Tok::EqEq => CmpOp::Eq,
            Tok::Neq => CmpOp::Neq,
            Tok::Gt => CmpOp::Gt,
            Tok::Gte => CmpOp::Gte,
            Tok::Lt => CmpOp::Lt,
            Tok::Lte => CmpOp::Lte,
            Tok::Re | Tok::Nre => CmpOp::Eq,
            _ => return Err(self.unexpected("comparison operator like \"=\", \"=~\" or \">\"")),
        };
        self.advance();
        let is_regex = matches!(op_token.tok, Tok::Re | Tok::Nre);
        let is_equality = matches!(cmp, CmpOp::Eq | CmpOp::Neq);
        let value_token = self.token(0).clone();
        let filter = match value_token.tok {
            Tok::Str(value) if is_equality => {
                self.advance();
                let op = match op_token.tok {
                    Tok::Re => MatchOp::Re,
                    Tok::Nre => MatchOp::Nre,
                    Tok::Neq => MatchOp::Neq,
                    _ => MatchOp::Eq,
                };
                if is_regex {
                    self.compile_regex(&value, true, value_token.start)?;
                }
                LabelFilter::String(Matcher { name, op, value })
            }
            Tok::Ident if !is_regex && is_equality && self.text(&value_token) == "ip" => {
                let address = self.ip_call()?;
                LabelFilter::Ip { name, negated: cmp == CmpOp::Neq, address }
            }
            _ if is_regex => return Err(self.unexpected("string with a regex")),
            Tok::Sub | Tok::Number(_)
                if matches!(self.peek_at(1), Tok::Number(_)) || value_token.tok != Tok::Sub =>
            {
                let value = self.number_literal("number")?;
                LabelFilter::Number { name, op: cmp, value }
            }
            Tok::Duration(value) => {
                self.advance();
                LabelFilter::Duration { name, op: cmp, value }
            }
            Tok::Bytes(value) => {
                self.advance();
                LabelFilter::Bytes { name, op: cmp, value }
            }
            _ if is_equality => return Err(self.unexpected("string, number, duration, byte size or ip(...)")),
            _ => return Err(self.unexpected("number, duration or byte size")),
        };
        Ok((filter, 1))
    }

    // ---- metric queries -----------------------------------------------------------------

    fn metric_expr(&mut self) -> Result<Depth<MetricExpr>, ParseError> {
        self.binary(0)
    }

    fn binary(&mut self, min_precedence: u8) -> Result<Depth<MetricExpr>, ParseError> {
        self.enter()?;
        let (mut lhs, mut depth) = self.unary()?;
        while let Some(op) = self.peek_binary_op().filter(|op| op.precedence() >= min_precedence) {
            let op_position = self.advance().start;
            let return_bool = self.peek_keyword("bool");
            if return_bool {
                if !op.is_comparison() {
                    return Err(self.error_here(ParseErrorKind::BoolOnNonComparison));
                }
                self.advance();
            }
            let matching = self.vector_matching(op)?;
            let next_min = if op.is_right_associative() { op.precedence() } else { op.precedence() + 1 };
            let (rhs, rhs_depth) = self.binary(next_min)?;
            if op.is_set_operator() && (lhs.is_scalar() || rhs.is_scalar()) {
                return Err(
                    self.error_at(op_position, ParseErrorKind::SetOperatorWithScalar { op: op.as_str() })
                );
            }
            if matching.is_some() && (lhs.is_scalar() || rhs.is_scalar()) {
                return Err(self.error_at(op_position, ParseErrorKind::MatchingWithScalar));
            }
            depth = depth.max(rhs_depth) + 1;
            self.check_tree_depth(depth, op_position)?;
            lhs = MetricExpr::Binary(Box::new(BinaryExpr { op, lhs, rhs, return_bool, matching }));
        }
        self.leave();
        Ok((lhs, depth))
    }

    fn peek_binary_op(&self) -> Option<BinaryOp> {
        Some(match self.peek() {
            Tok::Add => BinaryOp::Add,
            Tok::Sub => BinaryOp::Sub,
            Tok::Mul => BinaryOp::Mul,
            Tok::Div => BinaryOp::Div,
            Tok::Mod => BinaryOp::Mod,
            Tok::Pow => BinaryOp::Pow,
            Tok::EqEq => BinaryOp::Eq,
            Tok::Neq => BinaryOp::Neq,
            Tok::Gt => BinaryOp::Gt,
            Tok::Gte => BinaryOp::Gte,
            Tok::Lt => BinaryOp::Lt,
            Tok::Lte => BinaryOp::Lte,
            Tok::Ident => match self.ident_at(0) {
                Some("and") => BinaryOp::And,
                Some("or") => BinaryOp::Or,
                Some("unless") => BinaryOp::Unless,
                _ => return None,
            },
            _ => return None,
        })
    }

    fn vector_matching(&mut self, op: BinaryOp) -> Result<Option<VectorMatching>, ParseError> {
        let on = match self.ident_at(0) {
            Some("on") => true,
            Some("ignoring") => false,
            _ => return Ok(None),
        };
        self.advance();
        let labels = self.label_list()?;
        let group = match self.ident_at(0) {
            Some(word @ ("group_left" | "group_right")) => {
                let left = word == "group_left";
                if op.is_set_operator() {
                    return Err(
                        self.error_here(ParseErrorKind::GroupModifierOnSetOperator { op: op.as_str() })
                    );
                }
                self.advance();
                let labels = if self.peek() == &Tok::LParen { self.label_list()? } else { Vec::new() };
                Some(GroupModifier { left, labels })
            }
            _ => None,
        };
        Ok(Some(VectorMatching { on, labels, group }))
    }

    /// `(a, b)`, possibly empty, possibly with a trailing comma.
    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(&Tok::LParen, "\"(\"")?;
        let mut labels = Vec::new();
        loop {
            if self.eat(&Tok::RParen) {
                return Ok(labels);
            }
            labels.push(self.expect_ident("label name or \")\"")?);
            if !self.eat(&Tok::Comma) {
                self.expect(&Tok::RParen, "\",\" or \")\"")?;
                return Ok(labels);
            }
        }
    }

    fn unary(&mut self) -> Result<Depth<MetricExpr>, ParseError> {
        let negative = match self.peek() {
            Tok::Sub => true,
            Tok::Add => false,
            _ => return self.primary(),
        };
        self.advance();
        match self.peek() {
            Tok::Number(value) => {
                let value = if negative { -value } else { *value };
                self.advance();
                Ok((MetricExpr::Literal(value), 1))
            }
            _ => Err(self.unexpected("number")),
        }
    }

    fn primary(&mut self) -> Result<Depth<MetricExpr>, ParseError> {
        match self.peek() {
            Tok::Number(value) => {
                let value = *value;
                self.advance();
                Ok((MetricExpr::Literal(value), 1))
            }
            Tok::LParen => {
                self.advance();
                let inner = self.metric_expr()?;
                self.expect(&Tok::RParen, "\")\" or binary operator")?;
                Ok(inner)
            }
            Tok::LBrace => Err(self.error_here(ParseErrorKind::LogQueryNotAllowed)),
            Tok::Ident => {
                let name = self.ident_at(0).unwrap_or_default().to_string();
                if let Some(op) = RangeOp::from_name(&name) {
                    self.range_aggregation(op)
                } else if let Some(op) = VectorOp::from_name(&name) {
                    self.vector_aggregation(op)
                } else if name == "label_replace" {
                    self.label_replace()
                } else if name == "vector" {
                    self.advance();
                    self.expect(&Tok::LParen, "\"(\"")?;
                    let value = self.number_literal("number")?;
                    self.expect(&Tok::RParen, "\")\"")?;
                    Ok((MetricExpr::Vector(value), 1))
                } else {
                    Err(self.error_here(ParseErrorKind::UnknownFunction { name }))
                }
            }
            _ => Err(self.unexpected("metric expression (aggregation, function, number or \"(\")")),
        }
    }

    /// A number, possibly with a sign.
    fn number_literal(&mut self, expected: &'static str) -> Result<f64, ParseError> {
        let negative = self.peek() == &Tok::Sub && matches!(self.peek_at(1), Tok::Number(_));
        if negative {
            self.advance();
        }
        match self.peek() {
            Tok::Number(value) => {
                let value = if negative { -value } else { *value };
                self.advance();
                Ok(value)
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.ident_at(0) {
            Some("by") => false,
            Some("without") => true,
            _ => return Ok(None),
        };
        self.advance();
        Ok(Some(Grouping { without, labels: self.label_list()? }))
    }

    fn range_aggregation(&mut self, op: RangeOp) -> Result<Depth<MetricExpr>, ParseError> {
        self.advance();
        self.expect(&Tok::LParen, "\"(\"")?;
        let param = if op == RangeOp::QuantileOverTime {
            let value = self.number_literal("number (the quantile)")?;
            self.expect(&Tok::Comma, "\",\"")?;
            Some(value)
        } else {
            None
        };
        let range = self.log_range(op)?;
        self.expect(&Tok::RParen, "\")\"")?;
        let grouping_position = self.token(0).start;
        let grouping = self.grouping()?;
        if grouping.is_some() && !op.allows_grouping() {
            return Err(
                self.error_at(grouping_position, ParseErrorKind::GroupingNotAllowed { op: op.as_str() })
            );
        }
        Ok((MetricExpr::RangeAggregation(Box::new(RangeAggregation { op, param, range, grouping })), 1))
    }

    /// `{...} |... [5m] offset 1h`, or with the range right after the selector.
    fn log_range(&mut self, op: RangeOp) -> Result<LogRange, ParseError> {
        if self.peek() != &Tok::LBrace {
            return Err(self.unexpected("stream selector \"{\""));
        }
        let selector = self.selector()?;
        let mut range = None;
        if self.peek() == &Tok::LBracket {
            range = Some(self.range_and_offset()?);
        }
        let unwrap_position = self.token(0).start;
        let (pipeline, unwrap) = self.pipeline(true)?;
        if self.peek() == &Tok::LBracket {
            if range.is_some() {
                return Err(self.error_here(ParseErrorKind::DuplicateRange));
            }
            range = Some(self.range_and_offset()?);
        }
        let Some((range, offset)) = range else {
            return Err(self.unexpected("range like [5m] or pipeline stage"));
        };
        match (op.unwrap_rule(), &unwrap) {
            (UnwrapRule::Required, None) => {
                return Err(
                    self.error_at(unwrap_position, ParseErrorKind::UnwrapRequired { op: op.as_str() })
                );
            }
            (UnwrapRule::Forbidden, Some(_)) => {
                return Err(
                    self.error_at(unwrap_position, ParseErrorKind::UnwrapNotAllowed { op: op.as_str() })
                );
            }
            _ => {}
        }
        Ok(LogRange { query: LogQuery { selector, pipeline }, unwrap, range, offset })
    }

    fn range_and_offset(&mut self) -> Result<(Duration, Duration), ParseError> {
        self.expect(&Tok::LBracket, "\"[\"")?;
        let range = self.duration("duration like 5m")?;
        if range.is_zero() {
            return Err(self.error_at(self.token(0).start.saturating_sub(1), ParseErrorKind::ZeroRange));
        }
        self.expect(&Tok::RBracket, "\"]\"")?;
        let offset = if self.peek_keyword("offset") {
            self.advance();
            self.duration("duration like 1h")?
        } else {
            Duration::ZERO
        };
        Ok((range, offset))
    }

    fn duration(&mut self, expected: &'static str) -> Result<Duration, ParseError> {
        match self.peek() {
            Tok::Duration(value) => {
                let value = *value;
                self.advance();
                Ok(value)
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn vector_aggregation(&mut self, op: VectorOp) -> Result<Depth<MetricExpr>, ParseError> {
        self.advance();
        let grouping_position = self.token(0).start;
        let mut grouping = self.grouping()?;
        self.expect(&Tok::LParen, "\"(\"")?;
        self.enter()?;
        let param = if op.takes_param() {
            let position = self.token(0).start;
            let value = self.number_literal("number (how many series)")?;
            if value < 1.0 || value.fract() != 0.0 || value > u64::MAX as f64 {
                return Err(self.error_at(
                    position,
                    ParseErrorKind::InvalidParameter {
                        op: op.as_str(),
                        reason: "must be a whole number of at least 1",
                    },
                ));
            }
            self.expect(&Tok::Comma, "\",\"")?;
            Some(value as u64)
        } else {
            None
        };
        let (expr, depth) = self.metric_expr()?;
        self.expect(&Tok::RParen, "\")\" or binary operator")?;
        self.leave();
        let after_position = self.token(0).start;
        if let Some(after) = self.grouping()? {
            if grouping.is_some() {
                return Err(
                    self.error_at(after_position, ParseErrorKind::DuplicateGrouping { op: op.as_str() })
                );
            }
            grouping = Some(after);
        }
        if grouping.is_some() && !op.allows_grouping() {
            let position = grouping_position.min(after_position);
            return Err(self.error_at(position, ParseErrorKind::GroupingNotAllowed { op: op.as_str() }));
        }
        let depth = depth + 1;
        self.check_tree_depth(depth, grouping_position)?;
        Ok((MetricExpr::VectorAggregation(Box::new(VectorAggregation { op, param, grouping, expr })), depth))
    }

    fn label_replace(&mut self) -> Result<Depth<MetricExpr>, ParseError> {
        let position = self.advance().start;
        self.expect(&Tok::LParen, "\"(\"")?;
        self.enter()?;
        let (expr, depth) = self.metric_expr()?;
        let (dst, dst_position) = self.comma_string("string with the destination label")?;
        let (replacement, _) = self.comma_string("string with the replacement")?;
        let (src, _) = self.comma_string("string with the source label")?;
        let (regex, regex_position) = self.comma_string("string with a regex")?;
        self.expect(&Tok::RParen, "\")\"")?;
        self.leave();
        if !is_label_name(&dst) {
            return Err(self.error_at(dst_position, ParseErrorKind::InvalidLabelName { name: dst }));
        }
        self.compile_regex(&regex, true, regex_position)?;
        let depth = depth + 1;
        self.check_tree_depth(depth, position)?;
        Ok((MetricExpr::LabelReplace(Box::new(LabelReplace { expr, dst, replacement, src, regex })), depth))
    }
}

fn is_comparison(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Eq | Tok::EqEq | Tok::Neq | Tok::Re | Tok::Nre | Tok::Gt | Tok::Gte | Tok::Lt | Tok::Lte
    )
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a token reads in an error message.
fn describe(token: &Token, text: &str) -> String {
    const MAX: usize = 40;
    let short = |text: &str| -> String {
        if text.chars().count() > MAX {
            format!("{}...", text.chars().take(MAX).collect::<String>())
        } else {
            text.to_string()
        }
    };
    match &token.tok {
        Tok::Eof => "end of query".to_string(),
        Tok::Ident => format!("identifier {:?}", short(text)),
        Tok::Str(value) => format!("string {:?}", short(value)),
        Tok::Number(_) => format!("number {text}"),
        Tok::Duration(_) => format!("duration {text}"),
        Tok::Bytes(_) => format!("byte size {text}"),
        Tok::Flag => format!("flag {text}"),
        _ => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> Expr {
        match parse(input) {
            Ok(expr) => expr,
            Err(err) => panic!("{input}\n{err}"),
        }
    }

    fn err(input: &str) -> ParseError {
        match parse(input) {
            Ok(expr) => panic!("{input} parsed as {expr}"),
            Err(err) => err,
        }
    }

    fn log(input: &str) -> LogQuery {
        ok(input).as_log().expect("a log query").clone()
    }

    fn metric(input: &str) -> MetricExpr {
        ok(input).as_metric().expect("a metric query").clone()
    }

    fn matcher(name: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher { name: name.into(), op, value: value.into() }
    }

    fn range_agg(expr: &MetricExpr) -> &RangeAggregation {
        match expr {
            MetricExpr::RangeAggregation(agg) => agg,
            other => panic!("not a range aggregation: {other:?}"),
        }
    }

    fn binary(expr: &MetricExpr) -> &BinaryExpr {
        match expr {
            MetricExpr::Binary(binary) => binary,
            other => panic!("not a binary expression: {other:?}"),
        }
    }

    fn label_filter(query: &LogQuery, index: usize) -> &LabelFilter {
        match &query.pipeline[index] {
            Stage::LabelFilter(filter) => filter,
            other => panic!("not a label filter: {other:?}"),
        }
    }

    // ---- selectors --------------------------------------------------------------------

    #[test]
    fn parse_selector_with_all_operators_keeps_matchers_in_order() {
        let query = log(r#"{app="x", env=~"prod|dev", a!="b", c!~"re"}"#);
        assert_eq!(
            query.selector.matchers,
            vec![
                matcher("app", MatchOp::Eq, "x"),
                matcher("env", MatchOp::Re, "prod|dev"),
                matcher("a", MatchOp::Neq, "b"),
                matcher("c", MatchOp::Nre, "re"),
            ]
        );
        assert!(query.pipeline.is_empty());
    }

    #[test]
    fn parse_selector_trailing_comma_and_backticks_are_accepted() {
        let query = log("{app=`a\\b`,}");
        assert_eq!(query.selector.matchers, vec![matcher("app", MatchOp::Eq, "a\\b")]);
    }

    #[test]
    fn parse_empty_selector_reports_expected_matcher() {
        let e = err("{}");
        assert_eq!(e.position, 1);
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 2: expected label matcher like app=\"api\", found \"}\""
        );
    }

    #[test]
    fn parse_selector_matching_empty_is_rejected() {
        for input in [r#"{app=""}"#, r#"{app=~".*"}"#, r#"{app!="x"}"#, r#"{a!~"x", b=""}"#] {
            assert_eq!(err(input).kind, ParseErrorKind::SelectorMatchesEverything, "{input}");
        }
        ok(r#"{app=~".+", env=""}"#);
    }

    #[test]
    fn parse_selector_missing_brace_reports_position() {
        let e = err(r#"{app="x" env="y"}"#);
        assert_eq!(e.position, 9);
        assert_eq!(
            e.to_string(),
            r#"parse error at line 1, col 10: expected "}" or ",", found identifier "env""#
        );
    }

    #[test]
    fn parse_selector_invalid_regex_points_at_the_string() {
        let e = err(r#"{app=~"(unclosed"}"#);
        assert_eq!(e.position, 6);
        assert!(matches!(e.kind, ParseErrorKind::InvalidRegex { .. }));
    }

    #[test]
    fn parse_regex_too_big_to_compile_is_an_error_not_a_hang() {
        let e = err(r#"{app=~"((a{1000}){1000}){1000}"}"#);
        assert!(matches!(e.kind, ParseErrorKind::InvalidRegex { .. }));
    }

    // ---- line filters -----------------------------------------------------------------

    #[test]
    fn parse_line_filters_all_operators_in_order() {
        let query = log(r#"{app="x"} |= "a" != "b" |~ "c.*" !~ `d\d` |> "<_> e <_>" !> "f <_>""#);
        let ops: Vec<_> = query.line_filters().map(|filter| filter.op).collect();
        assert_eq!(
            ops,
            vec![
                LineFilterOp::Contains,
                LineFilterOp::NotContains,
                LineFilterOp::Regex,
                LineFilterOp::NotRegex,
                LineFilterOp::Pattern,
                LineFilterOp::NotPattern
            ]
        );
        assert!(query.is_filter_only());
    }

    #[test]
    fn parse_line_filter_or_chain_collects_values() {
        let query = log(r#"{app="x"} |= "a" or "b" or `c` != "d""#);
        let filters: Vec<_> = query.line_filters().collect();
        assert_eq!(filters.len(), 2);
        assert_eq!(
            filters[0].values,
            vec![
                LineFilterValue::Text("a".into()),
                LineFilterValue::Text("b".into()),
                LineFilterValue::Text("c".into())
            ]
        );
    }

    #[test]
    fn parse_line_filter_ip_is_recognised() {
        let query = log(r#"{app="x"} |= ip("192.168.0.0/16") != ip("10.0.0.1")"#);
        let filters: Vec<_> = query.line_filters().collect();
        assert_eq!(filters[0].values, vec![LineFilterValue::Ip("192.168.0.0/16".into())]);
        assert_eq!(filters[1].op, LineFilterOp::NotContains);
    }

    #[test]
    fn parse_line_filter_bad_regex_is_rejected() {
        let e = err(r#"{app="x"} |~ "a(b""#);
        assert_eq!(e.position, 13);
        assert!(matches!(e.kind, ParseErrorKind::InvalidRegex { .. }));
    }

    #[test]
    fn parse_line_filter_without_string_reports_expectation() {
        let e = err(r#"{app="x"} |= 5"#);
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 14: expected string or ip(...), found number 5"
        );
    }

    // ---- parsers and formatters -------------------------------------------------------

    #[test]
    fn parse_json_with_params_keeps_paths() {
        let query =
            log(r#"{app="x"} | json first="servers[0]", ua="request.headers[\"User-Agent\"]", method"#);
        assert_eq!(
            query.pipeline,
            vec![Stage::Parser(Parser::Json {
                params: vec![
                    ExtractParam { label: "first".into(), path: Some("servers[0]".into()) },
                    ExtractParam { label: "ua".into(), path: Some("request.headers[\"User-Agent\"]".into()) },
                    ExtractParam { label: "method".into(), path: None },
                ]
            })]
        );
    }

    #[test]
    fn parse_logfmt_flags_and_params() {
        let query = log(r#"{app="x"} | logfmt --strict --keep-empty host, dur="duration""#);
        assert_eq!(
            query.pipeline,
            vec![Stage::Parser(Parser::Logfmt {
                strict: true,
                keep_empty: true,
                params: vec![
                    ExtractParam { label: "host".into(), path: None },
                    ExtractParam { label: "dur".into(), path: Some("duration".into()) },
                ]
            })]
        );
        assert!(matches!(err(r#"{app="x"} | logfmt --loose"#).kind, ParseErrorKind::UnknownFlag { .. }));
    }

    #[test]
    fn parse_regexp_needs_named_group() {
        let query = log(r#"{app="x"} | regexp "(?P<method>\\w+) (?P<path>[^ ]+)""#);
        assert_eq!(
            query.pipeline,
            vec![Stage::Parser(Parser::Regexp("(?P<method>\\w+) (?P<path>[^ ]+)".into()))]
        );
        assert_eq!(err(r#"{app="x"} | regexp "(\\w+)""#).kind, ParseErrorKind::RegexpWithoutNamedGroup);
    }

    #[test]
    fn parse_pattern_is_validated() {
        log(r#"{app="x"} | pattern "<ip> - - <_> \"<method> <uri> <_>\" <status>""#);
        assert!(matches!(err(r#"{app="x"} | pattern "<a><b>""#).kind, ParseErrorKind::InvalidPattern { .. }));
    }

    #[test]
    fn parse_formatters_and_selections() {
        let query = log(
            r#"{app="x"} | unpack | line_format "{{.level}} {{.msg}}" | label_format lvl=level, svc="{{.app}}-{{.env}}" | drop a, b="v", c=~"x.*" | keep level, app | decolorize"#,
        );
        assert_eq!(
            query.pipeline,
            vec![
                Stage::Parser(Parser::Unpack),
                Stage::LineFormat("{{.level}} {{.msg}}".into()),
                Stage::LabelFormat(vec![
                    LabelFormat::Rename { dst: "lvl".into(), src: "level".into() },
                    LabelFormat::Template { dst: "svc".into(), template: "{{.app}}-{{.env}}".into() },
                ]),
                Stage::Drop(vec![
                    LabelSelection::Name("a".into()),
                    LabelSelection::Matcher(matcher("b", MatchOp::Eq, "v")),
                    LabelSelection::Matcher(matcher("c", MatchOp::Re, "x.*")),
                ]),
                Stage::Keep(vec![LabelSelection::Name("level".into()), LabelSelection::Name("app".into())]),
                Stage::Decolorize,
            ]
        );
    }

    #[test]
    fn parse_keyword_named_label_followed_by_operator_is_a_label_filter() {
        let query = log(r#"{app="x"} | json="yes" | pattern != "p""#);
        assert_eq!(*label_filter(&query, 0), LabelFilter::String(matcher("json", MatchOp::Eq, "yes")));
        assert_eq!(*label_filter(&query, 1), LabelFilter::String(matcher("pattern", MatchOp::Neq, "p")));
    }

    #[test]
    fn parse_pipe_followed_by_nothing_reports_expectation() {
        let e = err(r#"{app="x"} |"#);
        assert_eq!(e.position, 11);
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 12: expected parser, formatter or label filter after \"|\", found end of query"
        );
    }

    // ---- label filters ----------------------------------------------------------------

    #[test]
    fn parse_label_filter_types_follow_the_value() {
        let query = log(
            r#"{app="x"} | level="error" | status >= 500 | duration > 10s | size > 20KB | latency <= 250ms | path=~"/api/.*" | ratio == -0.5 | addr = ip("10.0.0.0/8") | __error__="""#,
        );
        let filters: Vec<_> = (0..9).map(|i| label_filter(&query, i).clone()).collect();
        assert_eq!(
            filters,
            vec![
                LabelFilter::String(matcher("level", MatchOp::Eq, "error")),
                LabelFilter::Number { name: "status".into(), op: CmpOp::Gte, value: 500.0 },
                LabelFilter::Duration {
                    name: "duration".into(),
                    op: CmpOp::Gt,
                    value: Duration::from_secs(10)
                },
                LabelFilter::Bytes { name: "size".into(), op: CmpOp::Gt, value: 20_000 },
                LabelFilter::Duration {
                    name: "latency".into(),
                    op: CmpOp::Lte,
                    value: Duration::from_millis(250)
                },
                LabelFilter::String(matcher("path", MatchOp::Re, "/api/.*")),
                LabelFilter::Number { name: "ratio".into(), op: CmpOp::Eq, value: -0.5 },
                LabelFilter::Ip { name: "addr".into(), negated: false, address: "10.0.0.0/8".into() },
                LabelFilter::String(matcher("__error__", MatchOp::Eq, "")),
            ]
        );
    }

    #[test]
    fn parse_label_filter_and_binds_tighter_than_or() {
        let query = log(r#"{app="x"} | a="1" or b="2" and c="3""#);
        let a = Box::new(LabelFilter::String(matcher("a", MatchOp::Eq, "1")));
        let b = Box::new(LabelFilter::String(matcher("b", MatchOp::Eq, "2")));
        let c = Box::new(LabelFilter::String(matcher("c", MatchOp::Eq, "3")));
        assert_eq!(*label_filter(&query, 0), LabelFilter::Or(a, Box::new(LabelFilter::And(b, c))));
    }

    #[test]
    fn parse_label_filter_comma_space_and_keyword_all_mean_and() {
        let with_and = log(r#"{app="x"} | a="1" and b > 2 and c < 3"#);
        let with_comma = log(r#"{app="x"} | a="1", b > 2, c < 3"#);
        let with_space = log(r#"{app="x"} | a="1" b > 2 c < 3"#);
        assert_eq!(with_and, with_comma);
        assert_eq!(with_and, with_space);
    }

    #[test]
    fn parse_label_filter_parentheses_group() {
        let query = log(r#"{app="x"} | (status >= 500 or status == 429) and method="GET""#);
        assert!(
            matches!(label_filter(&query, 0), LabelFilter::And(lhs, _) if matches!(**lhs, LabelFilter::Or(..)))
        );
    }

    #[test]
    fn parse_label_filter_regex_with_number_is_rejected() {
        let e = err(r#"{app="x"} | status =~ 500"#);
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 23: expected string with a regex, found number 500"
        );
    }

    #[test]
    fn parse_label_filter_greater_than_string_is_rejected() {
        let e = err(r#"{app="x"} | level > "error""#);
        assert_eq!(e.position, 20);
        assert_eq!(
            e.kind,
            ParseErrorKind::Unexpected {
                expected: "number, duration or byte size",
                found: "string \"error\"".into()
            }
        );
    }

    #[test]
    fn parse_label_filter_missing_operator_reports_position() {
        let e = err(r#"{app="x"} | level"#);
        assert_eq!(e.position, 17);
    }

    // ---- log query errors -------------------------------------------------------------

    #[test]
    fn parse_log_query_with_range_outside_aggregation_is_rejected() {
        assert_eq!(err(r#"{app="x"} [5m]"#).kind, ParseErrorKind::RangeOutsideAggregation);
    }

    #[test]
    fn parse_log_query_with_unwrap_is_rejected() {
        let e = err(r#"{app="x"} | unwrap latency"#);
        assert_eq!((e.position, e.kind), (12, ParseErrorKind::UnwrapOutsideAggregation));
    }

    #[test]
    fn parse_log_query_followed_by_operator_is_rejected() {
        let e = err(r#"{app="x"} + 1"#);
        assert_eq!(
            e.to_string(),
            r#"parse error at line 1, col 11: expected line filter, "|" or end of query, found "+""#
        );
        let e = err(r#"rate({app="x"}[1m]) rate"#);
        assert_eq!(
            e.to_string(),
            r#"parse error at line 1, col 21: expected binary operator or end of query, found identifier "rate""#
        );
    }

    // ---- range aggregations -----------------------------------------------------------

    #[test]
    fn parse_range_aggregation_log_range_forms_are_equal() {
        let at_end = metric(r#"count_over_time({app="x"} |= "error" [5m])"#);
        let after_selector = metric(r#"count_over_time({app="x"}[5m] |= "error")"#);
        assert_eq!(at_end, after_selector);
        let agg = range_agg(&at_end);
        assert_eq!(agg.op, RangeOp::CountOverTime);
        assert_eq!(agg.range.range, Duration::from_secs(300));
        assert_eq!(agg.range.offset, Duration::ZERO);
    }

    #[test]
    fn parse_range_aggregation_offset_is_kept() {
        let expr = metric(r#"rate({app="x"}[5m] offset 1h)"#);
        assert_eq!(range_agg(&expr).range.offset, Duration::from_secs(3600));
        assert_eq!(expr.max_lookback(), Duration::from_secs(3900));
    }

    #[test]
    fn parse_unwrap_with_conversion_and_post_filters() {
        let expr = metric(
            r#"quantile_over_time(0.99, {app="x"} | json | unwrap duration(took) | __error__="" [1m]) by (path)"#,
        );
        let agg = range_agg(&expr);
        assert_eq!(agg.param, Some(0.99));
        assert_eq!(agg.grouping, Some(Grouping { without: false, labels: vec!["path".into()] }));
        let unwrap = agg.range.unwrap.as_ref().expect("unwrap");
        assert_eq!(unwrap.label, "took");
        assert_eq!(unwrap.conversion, UnwrapConversion::Duration);
        assert_eq!(unwrap.post_filters, vec![LabelFilter::String(matcher("__error__", MatchOp::Eq, ""))]);
    }

    #[test]
    fn parse_unwrap_of_label_named_like_a_conversion() {
        let expr = metric(r#"sum_over_time({app="x"} | logfmt | unwrap bytes [1m])"#);
        let unwrap = range_agg(&expr).range.unwrap.clone().expect("unwrap");
        assert_eq!((unwrap.label.as_str(), unwrap.conversion), ("bytes", UnwrapConversion::None));
    }

    #[test]
    fn parse_unwrap_rules_follow_the_operation() {
        assert_eq!(
            err(r#"sum_over_time({app="x"} | json [1m])"#).kind,
            ParseErrorKind::UnwrapRequired { op: "sum_over_time" }
        );
        assert_eq!(
            err(r#"count_over_time({app="x"} | unwrap a [1m])"#).kind,
            ParseErrorKind::UnwrapNotAllowed { op: "count_over_time" }
        );
        metric(r#"rate({app="x"} | unwrap a [1m])"#);
        metric(r#"rate({app="x"} [1m])"#);
    }

    #[test]
    fn parse_stage_after_unwrap_is_rejected() {
        let e = err(r#"sum_over_time({app="x"} | unwrap a | json [1m])"#);
        assert_eq!((e.position, e.kind), (37, ParseErrorKind::StageAfterUnwrap));
        assert_eq!(
            err(r#"sum_over_time({app="x"} | unwrap a |= "x" [1m])"#).kind,
            ParseErrorKind::StageAfterUnwrap
        );
    }

    #[test]
    fn parse_grouping_on_range_aggregation_follows_loki_rules() {
        metric(r#"max_over_time({app="x"} | unwrap a [1m]) without (pod)"#);
        let e = err(r#"sum_over_time({app="x"} | unwrap a [1m]) by (pod)"#);
        assert_eq!((e.position, e.kind), (41, ParseErrorKind::GroupingNotAllowed { op: "sum_over_time" }));
        assert!(matches!(
            err(r#"count_over_time({app="x"}[1m]) by (pod)"#).kind,
            ParseErrorKind::GroupingNotAllowed { .. }
        ));
    }

    #[test]
    fn parse_range_errors_have_positions() {
        let e = err(r#"rate({app="x"})"#);
        assert_eq!(
            e.to_string(),
            r#"parse error at line 1, col 15: expected range like [5m] or pipeline stage, found ")""#
        );
        assert_eq!(err(r#"rate({app="x"}[0s])"#).kind, ParseErrorKind::ZeroRange);
        assert_eq!(err(r#"rate({app="x"}[1m] |= "a" [1m])"#).kind, ParseErrorKind::DuplicateRange);
        let e = err(r#"rate({app="x"}[5])"#);
        assert_eq!(e.to_string(), "parse error at line 1, col 16: expected duration like 5m, found number 5");
        assert_eq!(err(r#"quantile_over_time({app="x"} | unwrap a [1m])"#).position, 19);
    }

    // ---- vector aggregations ----------------------------------------------------------

    #[test]
    fn parse_vector_aggregation_grouping_before_or_after_is_equal() {
        let before = metric(r#"sum by (level) (count_over_time({app="x"}[1m]))"#);
        let after = metric(r#"sum(count_over_time({app="x"}[1m])) by (level)"#);
        assert_eq!(before, after);
        let MetricExpr::VectorAggregation(agg) = before else { panic!("vector aggregation") };
        assert_eq!(agg.op, VectorOp::Sum);
        assert_eq!(agg.grouping, Some(Grouping { without: false, labels: vec!["level".into()] }));
    }

    #[test]
    fn parse_topk_takes_whole_number() {
        let expr = metric(r#"topk(5, sum by (host) (rate({app="x"}[5m])))"#);
        let MetricExpr::VectorAggregation(agg) = expr else { panic!("vector aggregation") };
        assert_eq!((agg.op, agg.param), (VectorOp::Topk, Some(5)));
        for input in [r#"topk(0, rate({app="x"}[5m]))"#, r#"bottomk(1.5, rate({app="x"}[5m]))"#] {
            assert!(matches!(err(input).kind, ParseErrorKind::InvalidParameter { .. }), "{input}");
        }
        assert_eq!(err(r#"topk(rate({app="x"}[5m]))"#).position, 5);
    }

    #[test]
    fn parse_grouping_twice_is_rejected() {
        let e = err(r#"sum by (a) (rate({app="x"}[5m])) by (b)"#);
        assert_eq!(e.kind, ParseErrorKind::DuplicateGrouping { op: "sum" });
        assert!(matches!(
            err(r#"sort by (a) (rate({app="x"}[5m]))"#).kind,
            ParseErrorKind::GroupingNotAllowed { op: "sort" }
        ));
    }

    #[test]
    fn parse_log_query_inside_aggregation_is_rejected() {
        let e = err(r#"sum({app="x"})"#);
        assert_eq!((e.position, e.kind), (4, ParseErrorKind::LogQueryNotAllowed));
    }

    #[test]
    fn parse_unknown_function_is_named() {
        let e = err(r#"summ(rate({app="x"}[5m]))"#);
        assert_eq!(e.kind, ParseErrorKind::UnknownFunction { name: "summ".into() });
    }

    // ---- binary expressions -----------------------------------------------------------

    #[test]
    fn parse_binary_precedence_multiplication_before_addition() {
        let expr = metric("1 + 2 * 3");
        let top = binary(&expr);
        assert_eq!(top.op, BinaryOp::Add);
        assert_eq!(binary(&top.rhs).op, BinaryOp::Mul);
    }

    #[test]
    fn parse_binary_subtraction_is_left_associative() {
        let expr = metric("1 - 2 - 3");
        let top = binary(&expr);
        assert_eq!(top.rhs, MetricExpr::Literal(3.0));
        assert_eq!(binary(&top.lhs).op, BinaryOp::Sub);
    }

    #[test]
    fn parse_binary_power_is_right_associative() {
        let expr = metric("2 ^ 3 ^ 2");
        let top = binary(&expr);
        assert_eq!(top.lhs, MetricExpr::Literal(2.0));
        assert_eq!(binary(&top.rhs).op, BinaryOp::Pow);
    }

    #[test]
    fn parse_binary_set_operators_bind_loosest() {
        let expr = metric(r#"rate({a="1"}[1m]) > 5 and rate({a="2"}[1m]) or vector(0)"#);
        let top = binary(&expr);
        assert_eq!(top.op, BinaryOp::Or);
        let and = binary(&top.lhs);
        assert_eq!(and.op, BinaryOp::And);
        assert_eq!(binary(&and.lhs).op, BinaryOp::Gt);
    }

    #[test]
    fn parse_binary_modifiers_are_kept() {
        let expr = metric(
            r#"sum by (app, pod) (rate({a="1"}[1m])) / on (app) group_left (team) sum by (app) (rate({a="2"}[1m]))"#,
        );
        assert_eq!(
            binary(&expr).matching,
            Some(VectorMatching {
                on: true,
                labels: vec!["app".into()],
                group: Some(GroupModifier { left: true, labels: vec!["team".into()] }),
            })
        );
        let expr = metric(r#"rate({a="1"}[1m]) > bool 10"#);
        assert!(binary(&expr).return_bool);
        let expr = metric(r#"rate({a="1"}[1m]) * ignoring (pod) group_right rate({a="2"}[1m])"#);
        let matching = binary(&expr).matching.clone().expect("matching");
        assert!(!matching.on);
        assert_eq!(matching.group, Some(GroupModifier { left: false, labels: vec![] }));
    }

    #[test]
    fn parse_binary_modifier_misuse_is_rejected() {
        assert_eq!(err(r#"rate({a="1"}[1m]) + bool 1"#).kind, ParseErrorKind::BoolOnNonComparison);
        assert_eq!(err("1 and 2").kind, ParseErrorKind::SetOperatorWithScalar { op: "and" });
        assert_eq!(err(r#"rate({a="1"}[1m]) + on (x) 1"#).kind, ParseErrorKind::MatchingWithScalar);
        assert_eq!(
            err(r#"rate({a="1"}[1m]) or on (x) group_left rate({a="2"}[1m])"#).kind,
            ParseErrorKind::GroupModifierOnSetOperator { op: "or" }
        );
    }

    #[test]
    fn parse_negative_literals_and_parentheses() {
        assert_eq!(metric("-1"), MetricExpr::Literal(-1.0));
        let expr = metric("(1 + 2) * -3");
        let top = binary(&expr);
        assert_eq!(top.op, BinaryOp::Mul);
        assert_eq!(top.rhs, MetricExpr::Literal(-3.0));
        assert!(metric("1 - 2").is_scalar());
    }

    #[test]
    fn parse_binary_missing_operand_reports_position() {
        let e = err(r#"rate({a="1"}[1m]) /"#);
        assert_eq!(e.position, 19);
        let e = err("(1 + 2");
        assert_eq!(
            e.to_string(),
            "parse error at line 1, col 7: expected \")\" or binary operator, found end of query"
        );
    }

    // ---- functions --------------------------------------------------------------------

    #[test]
    fn parse_label_replace_and_vector() {
        let expr = metric(r#"label_replace(rate({a="1"}[1m]), "svc", "$1", "app", "(.*)-api") or vector(0)"#);
        let MetricExpr::LabelReplace(replace) = &binary(&expr).lhs else { panic!("label_replace") };
        assert_eq!(
            (
                replace.dst.as_str(),
                replace.replacement.as_str(),
                replace.src.as_str(),
                replace.regex.as_str()
            ),
            ("svc", "$1", "app", "(.*)-api")
        );
        assert_eq!(binary(&expr).rhs, MetricExpr::Vector(0.0));
        assert!(matches!(
            err(r#"label_replace(rate({a="1"}[1m]), "1x", "", "a", "")"#).kind,
            ParseErrorKind::InvalidLabelName { .. }
        ));
        assert!(matches!(
            err(r#"label_replace(rate({a="1"}[1m]), "x", "", "a", "(")"#).kind,
            ParseErrorKind::InvalidRegex { .. }
        ));
    }

    // ---- accessors --------------------------------------------------------------------

    #[test]
    fn selectors_of_binary_metric_query_are_listed_left_to_right() {
        let expr = ok(r#"sum(rate({app="a"}[1m])) / sum(rate({app="b"}[5m] offset 10m))"#);
        let names: Vec<_> = expr.selectors().iter().map(|s| s.matchers()[0].value.clone()).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(expr.as_metric().map(MetricExpr::max_lookback), Some(Duration::from_secs(900)));
        assert!(expr.is_metric() && !expr.is_log());
    }

    // ---- limits -----------------------------------------------------------------------

    #[test]
    fn parse_nesting_at_limit_is_accepted_and_beyond_is_rejected() {
        let nested = |levels: usize| format!("{}1{}", "(".repeat(levels), ")".repeat(levels));
        ok(&nested(MAX_DEPTH - 2));
        assert_eq!(err(&nested(100_000)).kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
    }

    #[test]
    fn parse_long_operator_chain_is_bounded() {
        let chain = vec!["1"; 100_000].join(" + ");
        assert_eq!(err(&chain).kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
        let power = vec!["2"; 100_000].join(" ^ ");
        assert_eq!(err(&power).kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
        let filters = vec![r#"a="1""#; 100_000].join(" or ");
        assert_eq!(
            err(&format!(r#"{{app="x"}} | {filters}"#)).kind,
            ParseErrorKind::TooDeep { limit: MAX_DEPTH }
        );
        let parens = format!(r#"{{app="x"}} | {}a="1"{}"#, "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(err(&parens).kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
        let sums = format!(r#"{}rate({{a="1"}}[1m]){}"#, "sum(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(err(&sums).kind, ParseErrorKind::TooDeep { limit: MAX_DEPTH });
    }

    #[test]
    fn parse_error_on_second_line_counts_lines() {
        let e = err("sum(\n  rate({app=\"x\"}[5m]\n)");
        assert_eq!((e.line, e.column), (3, 2));
    }
}

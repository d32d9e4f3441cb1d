//! A recursive-descent (precedence-climbing) parser from tokens to [`Query`], with static
//! type checks.
//!
//! Precedence, loosest first. Between spansets: `|`, then `||`, then `&&`, then the
//! structural operators (`>`, `>>`, `<`, `<<`, `~` and their `!`/`&` forms); all
//! left-associative. Inside filters: `||`, `&&`, comparisons (`= != < <= > >= =~ !~`),
//! `+ -`, `* / %`, prefix `! -`, and `^` (right-associative, so `-2 ^ 2` is `-(2 ^ 2)`).

use super::ast::{
    Aggregate, BinaryOp, FieldExpr, Hint, Intrinsic, Kind, MetricsFunction, MetricsStage, Pipeline, Query,
    ScalarExpr, ScalarFilter, SecondStage, SpansetExpr, SpansetFilter, SpansetOp, Stage, Static, Status,
    UNARY_PRECEDENCE, UnaryOp,
};
use super::error::{ParseError, ParseErrorKind};
use super::lexer::{Token, TokenKind, tokenize};

/// How deep brackets and prefix operators may nest.
pub const MAX_NESTING: usize = 256;

/// How tall an expression tree may grow (long `&&`/`||` chains count one level per
/// operator). Keeps every later recursive walk of the tree within a small stack.
pub const MAX_HEIGHT: usize = 1024;

/// Parses and type-checks a TraceQL query.
///
/// Never panics; every failure is a [`ParseError`] with the position of the offending token.
pub fn parse(input: &str) -> Result<Query, ParseError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser { input, tokens, pos: 0, nesting: 0 };
    parser.query()
}

/// The static type of an expression, as far as the parser can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// An attribute: any type at run time.
    Any,
    /// Arithmetic on attributes: some number.
    Number,
    Int,
    Float,
    Duration,
    String,
    Bool,
    Nil,
    Status,
    Kind,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Any => "attribute",
            Ty::Number => "number",
            Ty::Int => "integer",
            Ty::Float => "float",
            Ty::Duration => "duration",
            Ty::String => "string",
            Ty::Bool => "boolean",
            Ty::Nil => "nil",
            Ty::Status => "status",
            Ty::Kind => "kind",
        }
    }

    fn is_numeric(self) -> bool {
        matches!(self, Ty::Number | Ty::Int | Ty::Float | Ty::Duration)
    }

    fn can_be_numeric(self) -> bool {
        self == Ty::Any || self.is_numeric()
    }

    fn can_be_bool(self) -> bool {
        matches!(self, Ty::Any | Ty::Bool)
    }

    fn can_be_string(self) -> bool {
        matches!(self, Ty::Any | Ty::String)
    }

    /// Whether `=` and `!=` can compare the two.
    fn equatable(self, other: Ty) -> bool {
        self == Ty::Any
            || other == Ty::Any
            || self == Ty::Nil
            || other == Ty::Nil
            || (self.is_numeric() && other.is_numeric())
            || self == other
    }

    /// Whether `<`, `<=`, `>`, `>=` can order the two.
    fn orderable(self, other: Ty) -> bool {
        let ordered = |t: Ty| t == Ty::Any || t == Ty::String || t.is_numeric();
        ordered(self) && ordered(other) && self.equatable(other)
    }

    /// The type of `self op other` for an arithmetic operator, both sides numeric.
    fn arithmetic(self, other: Ty) -> Ty {
        match (self, other) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (Ty::Duration, t) | (t, Ty::Duration) if t != Ty::Any && t != Ty::Number => Ty::Duration,
            (Ty::Float | Ty::Int, Ty::Float | Ty::Int) => Ty::Float,
            _ => Ty::Number,
        }
    }

    fn of_static(s: &Static) -> Ty {
        match s {
            Static::String(_) => Ty::String,
            Static::Int(_) => Ty::Int,
            Static::Float(_) => Ty::Float,
            Static::Duration(_) => Ty::Duration,
            Static::Bool(_) => Ty::Bool,
            Static::Nil => Ty::Nil,
            Static::Status(_) => Ty::Status,
            Static::Kind(_) => Ty::Kind,
        }
    }

    fn of_intrinsic(i: Intrinsic) -> Ty {
        match i {
            Intrinsic::Status => Ty::Status,
            Intrinsic::Kind => Ty::Kind,
            Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => Ty::Duration,
            Intrinsic::ChildCount => Ty::Int,
            Intrinsic::Name
            | Intrinsic::StatusMessage
            | Intrinsic::SpanId
            | Intrinsic::ParentId
            | Intrinsic::RootServiceName
            | Intrinsic::RootName
            | Intrinsic::TraceId
            | Intrinsic::EventName
            | Intrinsic::LinkTraceId
            | Intrinsic::LinkSpanId
            | Intrinsic::InstrumentationName
            | Intrinsic::InstrumentationVersion => Ty::String,
        }
    }
}

/// A parsed field expression with what the parser knows about it.
struct Typed {
    expr: FieldExpr,
    ty: Ty,
    height: usize,
    /// Byte offset where the expression starts.
    start: usize,
}

/// A parsed scalar expression with its type and height.
struct TypedScalar {
    expr: ScalarExpr,
    ty: Ty,
    height: usize,
}

const METRICS_FUNCTIONS: [&str; 8] = [
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
];

const AGGREGATES: [&str; 5] = ["count", "avg", "min", "max", "sum"];

type PResult<T> = Result<T, ParseError>;

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

impl Parser<'_> {
    // -- token access ------------------------------------------------------------------

    fn token(&self) -> &Token {
        // The lexer always ends the list with Eof, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &TokenKind {
        &self.token().kind
    }

    fn peek_at(&self, ahead: usize) -> &TokenKind {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)].kind
    }

    fn peek_ident(&self) -> Option<&str> {
        match self.peek() {
            TokenKind::Ident(w) => Some(w),
            _ => None,
        }
    }

    fn advance(&mut self) -> Token {
        let token = self.token().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn error(&self, offset: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::at(self.input, offset, kind)
    }

    fn unexpected(&self, expected: &'static str) -> ParseError {
        let token = self.token();
        let found = if token.kind == TokenKind::Eof {
            "end of query".to_owned()
        } else {
            let text = &self.input[token.start..token.end];
            let short: String = text.chars().take(40).collect();
            format!("{short:?}")
        };
        self.error(token.start, ParseErrorKind::Unexpected { expected, found })
    }

    fn expect(&mut self, kind: TokenKind, expected: &'static str) -> PResult<Token> {
        if *self.peek() == kind { Ok(self.advance()) } else { Err(self.unexpected(expected)) }
    }

    /// Enters one nesting level (a bracket or a prefix operator).
    fn enter(&mut self) -> PResult<()> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(self.error(self.token().start, ParseErrorKind::TooDeep(MAX_NESTING)));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    fn check_height(&self, height: usize, offset: usize) -> PResult<()> {
        if height > MAX_HEIGHT {
            Err(self.error(offset, ParseErrorKind::TooDeep(MAX_HEIGHT)))
        } else {
            Ok(())
        }
    }

    // -- query and pipeline ------------------------------------------------------------

    fn query(&mut self) -> PResult<Query> {
        let (pipeline, metrics) = self.pipeline(true)?;
        let hints = if self.peek_ident() == Some("with") { self.hints()? } else { Vec::new() };
        if *self.peek() != TokenKind::Eof {
            let expected = if metrics.is_some() || !hints.is_empty() {
                "end of query"
            } else {
                "\"|\", a spanset operator or end of query"
            };
            return Err(self.unexpected(expected));
        }
        Ok(Query { pipeline, metrics, hints })
    }

    fn pipeline(&mut self, top_level: bool) -> PResult<(Pipeline, Option<MetricsStage>)> {
        let (first, _) = self.spanset_expr()?;
        let mut stages = vec![Stage::Spansets(first)];
        while *self.peek() == TokenKind::Pipe {
            self.advance();
            if let Some(name) = self.peek_ident()
                && METRICS_FUNCTIONS.contains(&name)
            {
                if !top_level {
                    let offset = self.token().start;
                    return Err(self.error(
                        offset,
                        ParseErrorKind::InvalidArguments {
                            function: "metrics function",
                            reason: "must be the last stage of the whole query, outside parentheses",
                        },
                    ));
                }
                let metrics = self.metrics_stage()?;
                return Ok((Pipeline { stages }, Some(metrics)));
            }
            stages.push(self.stage()?);
        }
        Ok((Pipeline { stages }, None))
    }

    fn stage(&mut self) -> PResult<Stage> {
        match self.peek() {
            TokenKind::LBrace => Ok(Stage::Spansets(self.spanset_expr()?.0)),
            TokenKind::LParen if self.parenthesis_opens_spanset() => {
                Ok(Stage::Spansets(self.spanset_expr()?.0))
            }
            TokenKind::Ident(w) if w == "by" => {
                self.advance();
                Ok(Stage::GroupBy(self.field_list("by")?))
            }
            TokenKind::Ident(w) if w == "select" => {
                self.advance();
                let start = self.token().start;
                let fields = self.field_list("select")?;
                if !fields.iter().all(|f| matches!(f, FieldExpr::Attribute(_) | FieldExpr::Intrinsic(_))) {
                    return Err(self.error(
                        start,
                        ParseErrorKind::InvalidArguments {
                            function: "select",
                            reason: "takes only attributes and intrinsics",
                        },
                    ));
                }
                Ok(Stage::Select(fields))
            }
            TokenKind::Ident(w) if w == "coalesce" => {
                self.advance();
                self.expect(TokenKind::LParen, "\"(\"")?;
                self.no_arguments("coalesce")?;
                Ok(Stage::Coalesce)
            }
            _ => Ok(Stage::ScalarFilter(self.scalar_filter()?)),
        }
    }

    /// Whether the `(` here (and any directly following) opens a spanset expression.
    fn parenthesis_opens_spanset(&self) -> bool {
        let mut ahead = 0;
        while *self.peek_at(ahead) == TokenKind::LParen {
            ahead += 1;
        }
        *self.peek_at(ahead) == TokenKind::LBrace
    }

    /// `( expr, expr, … )` with at least one expression.
    fn field_list(&mut self, function: &'static str) -> PResult<Vec<FieldExpr>> {
        self.expect(TokenKind::LParen, "\"(\"")?;
        if *self.peek() == TokenKind::RParen {
            let offset = self.token().start;
            return Err(self.error(
                offset,
                ParseErrorKind::InvalidArguments { function, reason: "needs at least one argument" },
            ));
        }
        let mut out = vec![self.field_expr(1)?.expr];
        while *self.peek() == TokenKind::Comma {
            self.advance();
            out.push(self.field_expr(1)?.expr);
        }
        self.expect(TokenKind::RParen, "\",\" or \")\"")?;
        Ok(out)
    }

    /// The `)` of a function that takes no arguments.
    fn no_arguments(&mut self, function: &'static str) -> PResult<()> {
        if *self.peek() == TokenKind::RParen {
            self.advance();
            Ok(())
        } else {
            let offset = self.token().start;
            Err(self
                .error(offset, ParseErrorKind::InvalidArguments { function, reason: "takes no arguments" }))
        }
    }

    /// One numeric argument (`avg(duration)`, `histogram_over_time(duration)`), not yet `)`.
    fn numeric_argument(&mut self, function: &'static str) -> PResult<Typed> {
        let start = self.token().start;
        if *self.peek() == TokenKind::RParen {
            return Err(
                self.error(start, ParseErrorKind::InvalidArguments { function, reason: "needs an argument" })
            );
        }
        let arg = self.field_expr(1)?;
        if !arg.ty.can_be_numeric() {
            return Err(self.error(
                start,
                ParseErrorKind::InvalidArguments { function, reason: "needs a numeric argument" },
            ));
        }
        Ok(arg)
    }

    fn hints(&mut self) -> PResult<Vec<Hint>> {
        self.advance(); // with
        self.expect(TokenKind::LParen, "\"(\"")?;
        let mut hints = Vec::new();
        loop {
            let Some(name) = self.peek_ident().map(str::to_owned) else {
                return Err(self.unexpected("a hint name"));
            };
            self.advance();
            self.expect(TokenKind::Eq, "\"=\"")?;
            let value = match self.peek() {
                TokenKind::String(s) => Static::String(s.clone()),
                TokenKind::Int(i) => Static::Int(*i),
                TokenKind::Float(x) => Static::Float(*x),
                TokenKind::Duration(d) => Static::Duration(*d),
                TokenKind::Ident(w) if w == "true" => Static::Bool(true),
                TokenKind::Ident(w) if w == "false" => Static::Bool(false),
                _ => return Err(self.unexpected("a hint value")),
            };
            self.advance();
            hints.push(Hint { name, value });
            if *self.peek() == TokenKind::Comma {
                self.advance();
            } else {
                self.expect(TokenKind::RParen, "\",\" or \")\"")?;
                return Ok(hints);
            }
        }
    }

    // -- metrics ------------------------------------------------------------------------

    fn metrics_stage(&mut self) -> PResult<MetricsStage> {
        let name = self.peek_ident().unwrap_or_default().to_owned();
        self.advance();
        self.expect(TokenKind::LParen, "\"(\"")?;
        let function = match name.as_str() {
            "rate" => {
                self.no_arguments("rate")?;
                MetricsFunction::Rate
            }
            "count_over_time" => {
                self.no_arguments("count_over_time")?;
                MetricsFunction::CountOverTime
            }
            "quantile_over_time" => {
                let expr = self.numeric_argument("quantile_over_time")?.expr;
                let mut quantiles = Vec::new();
                while *self.peek() == TokenKind::Comma {
                    self.advance();
                    let q = match self.peek() {
                        TokenKind::Float(x) => *x,
                        TokenKind::Int(i) => *i as f64,
                        _ => return Err(self.unexpected("a quantile between 0 and 1")),
                    };
                    let start = self.advance().start;
                    if !(0.0..=1.0).contains(&q) {
                        return Err(self.error(start, ParseErrorKind::InvalidQuantile(q)));
                    }
                    quantiles.push(q);
                }
                if quantiles.is_empty() {
                    return Err(self.unexpected("\",\" and a quantile"));
                }
                self.expect(TokenKind::RParen, "\",\" or \")\"")?;
                MetricsFunction::QuantileOverTime { expr, quantiles }
            }
            other => {
                let (function, make): (&'static str, fn(FieldExpr) -> MetricsFunction) = match other {
                    "min_over_time" => ("min_over_time", MetricsFunction::MinOverTime),
                    "max_over_time" => ("max_over_time", MetricsFunction::MaxOverTime),
                    "avg_over_time" => ("avg_over_time", MetricsFunction::AvgOverTime),
                    "sum_over_time" => ("sum_over_time", MetricsFunction::SumOverTime),
                    _ => ("histogram_over_time", MetricsFunction::HistogramOverTime),
                };
                let arg = self.numeric_argument(function)?.expr;
                self.expect(TokenKind::RParen, "\")\"")?;
                make(arg)
            }
        };
        let by = if self.peek_ident() == Some("by") {
            self.advance();
            self.field_list("by")?
        } else {
            Vec::new()
        };
        let second_stage = if *self.peek() == TokenKind::Pipe {
            self.advance();
            let make: fn(u32) -> SecondStage = match self.peek_ident() {
                Some("topk") => SecondStage::TopK,
                Some("bottomk") => SecondStage::BottomK,
                _ => return Err(self.unexpected("topk or bottomk")),
            };
            self.advance();
            self.expect(TokenKind::LParen, "\"(\"")?;
            let n = match self.peek() {
                TokenKind::Int(n) => u32::try_from(*n).ok().filter(|n| *n > 0),
                _ => None,
            };
            let Some(n) = n else { return Err(self.unexpected("a positive integer")) };
            self.advance();
            self.expect(TokenKind::RParen, "\")\"")?;
            Some(make(n))
        } else {
            None
        };
        Ok(MetricsStage { function, by, second_stage })
    }

    // -- spanset expressions -------------------------------------------------------------

    /// A spanset expression and its height.
    fn spanset_expr(&mut self) -> PResult<(SpansetExpr, usize)> {
        self.spanset_binary(1)
    }

    fn spanset_op(kind: &TokenKind) -> Option<SpansetOp> {
        Some(match kind {
            TokenKind::AndAnd => SpansetOp::And,
            TokenKind::OrOr => SpansetOp::Or,
            TokenKind::Gt => SpansetOp::Child,
            TokenKind::GtGt => SpansetOp::Descendant,
            TokenKind::Lt => SpansetOp::Parent,
            TokenKind::LtLt => SpansetOp::Ancestor,
            TokenKind::Tilde => SpansetOp::Sibling,
            TokenKind::NotGt => SpansetOp::NotChild,
            TokenKind::NotGtGt => SpansetOp::NotDescendant,
            TokenKind::NotLt => SpansetOp::NotParent,
            TokenKind::NotLtLt => SpansetOp::NotAncestor,
            TokenKind::NotRe => SpansetOp::NotSibling,
            TokenKind::AmpGt => SpansetOp::UnionChild,
            TokenKind::AmpGtGt => SpansetOp::UnionDescendant,
            TokenKind::AmpLt => SpansetOp::UnionParent,
            TokenKind::AmpLtLt => SpansetOp::UnionAncestor,
            TokenKind::AmpTilde => SpansetOp::UnionSibling,
            _ => return None,
        })
    }

    fn spanset_binary(&mut self, min_precedence: u8) -> PResult<(SpansetExpr, usize)> {
        let (mut lhs, mut height) = self.spanset_primary()?;
        while let Some(op) = Self::spanset_op(self.peek()) {
            if op.precedence() < min_precedence {
                break;
            }
            let op_start = self.advance().start;
            let (rhs, rhs_height) = self.spanset_binary(op.precedence() + 1)?;
            height = height.max(rhs_height) + 1;
            self.check_height(height, op_start)?;
            lhs = SpansetExpr::Binary { op, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok((lhs, height))
    }

    fn spanset_primary(&mut self) -> PResult<(SpansetExpr, usize)> {
        match self.peek() {
            TokenKind::LBrace => {
                self.advance();
                if *self.peek() == TokenKind::RBrace {
                    self.advance();
                    return Ok((SpansetExpr::Filter(SpansetFilter { expr: None }), 1));
                }
                let expr = self.field_expr(1)?;
                if !expr.ty.can_be_bool() {
                    return Err(self.error(expr.start, ParseErrorKind::NotBoolean(expr.ty.name())));
                }
                self.expect(TokenKind::RBrace, "\"}\"")?;
                Ok((SpansetExpr::Filter(SpansetFilter { expr: Some(expr.expr) }), 1))
            }
            TokenKind::LParen => {
                self.enter()?;
                self.advance();
                let (mut pipeline, _) = self.pipeline(false)?;
                self.expect(TokenKind::RParen, "\")\"")?;
                self.leave();
                if pipeline.stages.len() == 1
                    && let Some(Stage::Spansets(expr)) = pipeline.stages.pop()
                {
                    let height = spanset_height(&expr);
                    return Ok((expr, height));
                }
                Ok((SpansetExpr::Pipeline(Box::new(pipeline)), 1))
            }
            _ => Err(self.unexpected("\"{\" or \"(\"")),
        }
    }

    // -- field expressions ---------------------------------------------------------------

    fn binary_op(kind: &TokenKind) -> Option<BinaryOp> {
        Some(match kind {
            TokenKind::OrOr => BinaryOp::Or,
            TokenKind::AndAnd => BinaryOp::And,
            TokenKind::Eq => BinaryOp::Eq,
            TokenKind::Neq => BinaryOp::Neq,
            TokenKind::Lt => BinaryOp::Lt,
            TokenKind::Lte => BinaryOp::Lte,
            TokenKind::Gt => BinaryOp::Gt,
            TokenKind::Gte => BinaryOp::Gte,
            TokenKind::Re => BinaryOp::Regex,
            TokenKind::NotRe => BinaryOp::NotRegex,
            TokenKind::Plus => BinaryOp::Add,
            TokenKind::Minus => BinaryOp::Sub,
            TokenKind::Star => BinaryOp::Mul,
            TokenKind::Slash => BinaryOp::Div,
            TokenKind::Percent => BinaryOp::Mod,
            TokenKind::Caret => BinaryOp::Pow,
            _ => return None,
        })
    }

    /// Operators binding at least as tightly as `min_precedence`, by precedence climbing.
    fn field_expr(&mut self, min_precedence: u8) -> PResult<Typed> {
        let mut lhs = self.field_unary()?;
        while let Some(op) = Self::binary_op(self.peek()) {
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            let op_start = self.advance().start;
            let rhs = if op.is_right_associative() {
                self.enter()?;
                let rhs = self.field_expr(precedence)?;
                self.leave();
                rhs
            } else {
                self.field_expr(precedence + 1)?
            };
            lhs = self.binary(op, lhs, rhs, op_start)?;
        }
        Ok(lhs)
    }

    fn field_unary(&mut self) -> PResult<Typed> {
        let op = match self.peek() {
            TokenKind::Bang => UnaryOp::Not,
            TokenKind::Minus => UnaryOp::Neg,
            _ => return self.field_primary(),
        };
        let start = self.advance().start;
        self.enter()?;
        let operand = self.field_expr(UNARY_PRECEDENCE + 1)?;
        self.leave();
        let ty = match op {
            UnaryOp::Not if operand.ty.can_be_bool() => Ty::Bool,
            UnaryOp::Neg if operand.ty.can_be_numeric() => {
                if operand.ty == Ty::Any {
                    Ty::Number
                } else {
                    operand.ty
                }
            }
            _ => {
                return Err(self.error(
                    start,
                    ParseErrorKind::InvalidOperand { op: op.as_str(), operand: operand.ty.name() },
                ));
            }
        };
        let height = operand.height + 1;
        self.check_height(height, start)?;
        Ok(Typed { expr: FieldExpr::Unary { op, expr: Box::new(operand.expr) }, ty, height, start })
    }

    fn field_primary(&mut self) -> PResult<Typed> {
        let start = self.token().start;
        let leaf = |expr: FieldExpr, ty: Ty| Ok(Typed { expr, ty, height: 1, start });
        let static_leaf = |s: Static| {
            let ty = Ty::of_static(&s);
            leaf(FieldExpr::Static(s), ty)
        };
        match self.peek().clone() {
            TokenKind::LParen => {
                self.enter()?;
                self.advance();
                let mut inner = self.field_expr(1)?;
                self.expect(TokenKind::RParen, "\")\"")?;
                self.leave();
                inner.start = start;
                Ok(inner)
            }
            TokenKind::String(s) => {
                self.advance();
                static_leaf(Static::String(s))
            }
            TokenKind::Int(i) => {
                self.advance();
                static_leaf(Static::Int(i))
            }
            TokenKind::Float(x) => {
                self.advance();
                static_leaf(Static::Float(x))
            }
            TokenKind::Duration(d) => {
                self.advance();
                static_leaf(Static::Duration(d))
            }
            TokenKind::Attribute(a) => {
                self.advance();
                leaf(FieldExpr::Attribute(a), Ty::Any)
            }
            TokenKind::Intrinsic(i) => {
                self.advance();
                leaf(FieldExpr::Intrinsic(i), Ty::of_intrinsic(i))
            }
            TokenKind::Ident(word) => {
                if let Some(s) = keyword_static(&word) {
                    self.advance();
                    return static_leaf(s);
                }
                if let Some(i) = Intrinsic::from_bare(&word) {
                    self.advance();
                    return leaf(FieldExpr::Intrinsic(i), Ty::of_intrinsic(i));
                }
                if *self.peek_at(1) == TokenKind::LParen {
                    return Err(self.error(start, ParseErrorKind::UnknownFunction(word)));
                }
                Err(self.error(start, ParseErrorKind::UnknownIdentifier(word)))
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// Builds `lhs op rhs`, checking operand types and the tree's height.
    fn binary(&self, op: BinaryOp, lhs: Typed, rhs: Typed, op_start: usize) -> PResult<Typed> {
        let height = lhs.height.max(rhs.height) + 1;
        self.check_height(height, op_start)?;
        let mismatch = || {
            self.error(
                op_start,
                ParseErrorKind::TypeMismatch { op: op.as_str(), lhs: lhs.ty.name(), rhs: rhs.ty.name() },
            )
        };
        let ty = match op {
            BinaryOp::And | BinaryOp::Or if lhs.ty.can_be_bool() && rhs.ty.can_be_bool() => Ty::Bool,
            BinaryOp::Eq | BinaryOp::Neq if lhs.ty.equatable(rhs.ty) => Ty::Bool,
            BinaryOp::Lt | BinaryOp::Lte | BinaryOp::Gt | BinaryOp::Gte if lhs.ty.orderable(rhs.ty) => {
                Ty::Bool
            }
            BinaryOp::Regex | BinaryOp::NotRegex => {
                let FieldExpr::Static(Static::String(pattern)) = &rhs.expr else {
                    return Err(self.error(rhs.start, ParseErrorKind::RegexNotLiteral(op.as_str())));
                };
                if !lhs.ty.can_be_string() {
                    return Err(mismatch());
                }
                if let Err(source) = super::compile_regex(pattern) {
                    return Err(self.error(
                        rhs.start,
                        ParseErrorKind::InvalidRegex { pattern: pattern.clone(), source },
                    ));
                }
                Ty::Bool
            }
            op if op.is_arithmetic() && lhs.ty.can_be_numeric() && rhs.ty.can_be_numeric() => {
                lhs.ty.arithmetic(rhs.ty)
            }
            _ => return Err(mismatch()),
        };
        let start = lhs.start;
        Ok(Typed {
            expr: FieldExpr::Binary { op, lhs: Box::new(lhs.expr), rhs: Box::new(rhs.expr) },
            ty,
            height,
            start,
        })
    }

    // -- scalar filters ------------------------------------------------------------------

    fn scalar_filter(&mut self) -> PResult<ScalarFilter> {
        let start = self.token().start;
        let lhs = self.scalar_expr(4)?;
        let op = match Self::binary_op(self.peek()) {
            Some(
                op @ (BinaryOp::Eq
                | BinaryOp::Neq
                | BinaryOp::Lt
                | BinaryOp::Lte
                | BinaryOp::Gt
                | BinaryOp::Gte),
            ) => op,
            _ => return Err(self.unexpected("a comparison operator such as \">\"")),
        };
        let op_start = self.advance().start;
        let rhs = self.scalar_expr(4)?;
        if !lhs.expr.has_aggregate() && !rhs.expr.has_aggregate() {
            return Err(self.error(start, ParseErrorKind::ScalarFilterWithoutAggregate));
        }
        if !lhs.ty.equatable(rhs.ty) {
            return Err(self.error(
                op_start,
                ParseErrorKind::TypeMismatch { op: op.as_str(), lhs: lhs.ty.name(), rhs: rhs.ty.name() },
            ));
        }
        Ok(ScalarFilter { op, lhs: lhs.expr, rhs: rhs.expr })
    }

    /// Arithmetic over aggregates and numeric literals.
    fn scalar_expr(&mut self, min_precedence: u8) -> PResult<TypedScalar> {
        let mut lhs = self.scalar_unary()?;
        while let Some(op) = Self::binary_op(self.peek()).filter(|op| op.is_arithmetic()) {
            let precedence = op.precedence();
            if precedence < min_precedence {
                break;
            }
            let op_start = self.advance().start;
            let rhs = if op.is_right_associative() {
                self.enter()?;
                let rhs = self.scalar_expr(precedence)?;
                self.leave();
                rhs
            } else {
                self.scalar_expr(precedence + 1)?
            };
            let height = lhs.height.max(rhs.height) + 1;
            self.check_height(height, op_start)?;
            lhs = TypedScalar {
                ty: lhs.ty.arithmetic(rhs.ty),
                expr: ScalarExpr::Binary { op, lhs: Box::new(lhs.expr), rhs: Box::new(rhs.expr) },
                height,
            };
        }
        Ok(lhs)
    }

    fn scalar_unary(&mut self) -> PResult<TypedScalar> {
        if *self.peek() != TokenKind::Minus {
            return self.scalar_primary();
        }
        let start = self.advance().start;
        self.enter()?;
        let operand = self.scalar_expr(UNARY_PRECEDENCE + 1)?;
        self.leave();
        let height = operand.height + 1;
        self.check_height(height, start)?;
        Ok(TypedScalar { expr: ScalarExpr::Neg(Box::new(operand.expr)), ty: operand.ty, height })
    }

    fn scalar_primary(&mut self) -> PResult<TypedScalar> {
        let leaf = |s: Static| {
            let ty = Ty::of_static(&s);
            Ok(TypedScalar { expr: ScalarExpr::Static(s), ty, height: 1 })
        };
        match self.peek().clone() {
            TokenKind::LParen => {
                self.enter()?;
                self.advance();
                let inner = self.scalar_expr(4)?;
                self.expect(TokenKind::RParen, "\")\"")?;
                self.leave();
                Ok(inner)
            }
            TokenKind::Int(i) => {
                self.advance();
                leaf(Static::Int(i))
            }
            TokenKind::Float(x) => {
                self.advance();
                leaf(Static::Float(x))
            }
            TokenKind::Duration(d) => {
                self.advance();
                leaf(Static::Duration(d))
            }
            TokenKind::Ident(name) if AGGREGATES.contains(&name.as_str()) => self.aggregate(&name),
            TokenKind::Ident(name) if *self.peek_at(1) == TokenKind::LParen => {
                let start = self.token().start;
                Err(self.error(start, ParseErrorKind::UnknownFunction(name)))
            }
            _ => {
                Err(self.unexpected("a spanset, an aggregate such as count(), by(), select() or coalesce()"))
            }
        }
    }

    fn aggregate(&mut self, name: &str) -> PResult<TypedScalar> {
        self.advance();
        self.expect(TokenKind::LParen, "\"(\"")?;
        let (aggregate, ty) = if name == "count" {
            self.no_arguments("count")?;
            (Aggregate::Count, Ty::Int)
        } else {
            let (function, make): (&'static str, fn(FieldExpr) -> Aggregate) = match name {
                "avg" => ("avg", Aggregate::Avg),
                "min" => ("min", Aggregate::Min),
                "max" => ("max", Aggregate::Max),
                _ => ("sum", Aggregate::Sum),
            };
            let arg = self.numeric_argument(function)?;
            self.expect(TokenKind::RParen, "\")\"")?;
            let ty = match (function, arg.ty) {
                ("avg", Ty::Int) => Ty::Float,
                (_, Ty::Any) => Ty::Number,
                (_, t) => t,
            };
            (make(arg.expr), ty)
        };
        Ok(TypedScalar { expr: ScalarExpr::Aggregate(aggregate), ty, height: 1 })
    }
}

/// Literals written as bare words.
fn keyword_static(word: &str) -> Option<Static> {
    Some(match word {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "ok" => Static::Status(Status::Ok),
        "error" => Static::Status(Status::Error),
        "unset" => Static::Status(Status::Unset),
        "server" => Static::Kind(Kind::Server),
        "client" => Static::Kind(Kind::Client),
        "producer" => Static::Kind(Kind::Producer),
        "consumer" => Static::Kind(Kind::Consumer),
        "internal" => Static::Kind(Kind::Internal),
        "unspecified" => Static::Kind(Kind::Unspecified),
        _ => return None,
    })
}

/// The height of a spanset expression tree (bounded by [`MAX_HEIGHT`] when it was built).
fn spanset_height(expr: &SpansetExpr) -> usize {
    match expr {
        SpansetExpr::Filter(_) | SpansetExpr::Pipeline(_) => 1,
        SpansetExpr::Binary { lhs, rhs, .. } => spanset_height(lhs).max(spanset_height(rhs)) + 1,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::query::ast::{Attribute, AttributeScope};

    fn p(input: &str) -> Query {
        parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"))
    }

    fn err(input: &str) -> ParseError {
        match parse(input) {
            Ok(q) => panic!("{input:?} parsed as {q}"),
            Err(e) => e,
        }
    }

    /// Parses, prints, parses again: the trees are equal and the printed text is stable.
    fn assert_round_trip(input: &str) {
        let first = p(input);
        let printed = first.to_string();
        let second = parse(&printed).unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
        assert_eq!(first, second, "{input:?} printed as {printed:?}");
        assert_eq!(second.to_string(), printed, "{input:?}");
    }

    fn filter_expr(input: &str) -> FieldExpr {
        match p(input).as_single_filter() {
            Some(SpansetFilter { expr: Some(e) }) => e.clone(),
            _ => panic!("{input:?} is not a single non-empty filter"),
        }
    }

    fn first_spansets(input: &str) -> SpansetExpr {
        match p(input).pipeline.stages.first() {
            Some(Stage::Spansets(e)) => e.clone(),
            other => panic!("{input:?}: first stage {other:?}"),
        }
    }

    const REALISTIC: &[&str] = &[
        "{}",
        "{ }",
        "{ true }",
        "{ false }",
        "{ span.http.status_code >= 200 && span.http.status_code < 300 } | count() > 2",
        r#"{ resource.service.name = "frontend" && name = "POST /api/orders" }"#,
        r#"{ .service.name = "checkout" }"#,
        "{ status = error }",
        "{ status != ok && kind = server }",
        "{ span:status = error && span:kind = client }",
        "{ duration > 500ms }",
        "{ span:duration >= 1.5s && span:duration < 2m }",
        "{ traceDuration > 5s }",
        "{ trace:duration > 1h }",
        r#"{ rootServiceName = "gateway" && rootName = "GET /" }"#,
        r#"{ trace:rootService = "gateway" && trace:rootName =~ "GET .*" }"#,
        r#"{ statusMessage =~ ".*timeout.*" }"#,
        r#"{ span:statusMessage != "" }"#,
        r#"{ span.http.method = "GET" && status = ok } && { span.http.method = "DELETE" && status != ok }"#,
        r#"{ resource.deployment.environment =~ "prod-.*" && span.http.status_code = 200 }"#,
        r#"{ span.db.system = "postgresql" } | avg(duration) > 100ms"#,
        r#"{ resource.service.name = "api" } | max(duration) > 2s"#,
        "{ } | min(span.http.response_content_length) < 10",
        "{ } | sum(span.bytes) >= 1000000",
        r#"{ resource.service.name = "frontend" } > { resource.service.name = "cart" }"#,
        r#"{ resource.service.name = "frontend" } >> { status = error }"#,
        r#"{ name = "child" } < { name = "parent" }"#,
        r#"{ name = "leaf" } << { name = "root" }"#,
        r#"{ span.foo = "a" } ~ { span.foo = "b" }"#,
        "{ .a } !> { .b }",
        "{ .a } !>> { .b }",
        "{ .a } !< { .b }",
        "{ .a } !<< { .b }",
        "{ .a } !~ { .b }",
        "{ .a } &> { .b }",
        "{ .a } &>> { .b }",
        "{ .a } &< { .b }",
        "{ .a } &<< { .b }",
        "{ .a } &~ { .b }",
        r"{ span.http.url =~ `^/api/v[0-9]+/users/\d+$` }",
        r#"{ span.http.target !~ "/health.*" }"#,
        r#"{ span."name with spaces" = "x" }"#,
        r#"{ ."weird \"key\"" = 1 }"#,
        "{ .foo-bar = 1 }",
        "{ span.http.request.header.x-forwarded-for != nil }",
        "{ span.optional = nil }",
        r#"{ event.exception.message =~ ".*NullPointer.*" }"#,
        r#"{ event:name = "exception" }"#,
        "{ event:timeSinceStart > 10ms }",
        r#"{ link.opentracing.ref_type = "follows_from" }"#,
        r#"{ link:traceID = "abc" && link:spanID = "def" }"#,
        r#"{ instrumentation.name = "io.opentelemetry.jdbc" }"#,
        r#"{ instrumentation:name = "my-lib" && instrumentation:version = "1.2.3" }"#,
        r#"{ span:id = "0123456789abcdef" }"#,
        r#"{ span:parentID = "0123456789abcdef" }"#,
        "{ span:childCount > 10 }",
        r#"{ trace:id = "0123456789abcdef0123456789abcdef" }"#,
        "{ kind = producer } >> { kind = consumer }",
        "{ kind = internal || kind = unspecified }",
        "{ status = unset }",
        "{ .http.status_code = 500 || .http.status_code = 503 }",
        "{ (.a = 1 || .b = 2) && .c = 3 }",
        "{ !(.retry = true) }",
        "{ !.cache.hit }",
        "{ .cache.hit = false }",
        "{ .sampling.ratio > 0.5 }",
        "{ .x > -1 && .y < -2.5 }",
        "{ .latency_ms * 1000 > duration }",
        "{ span.bytes_in + span.bytes_out > 1024 * 1024 }",
        "{ .a % 2 = 0 }",
        "{ .a ^ 2 > 100 }",
        "{ .a / 3 - 1 >= 0 }",
        "{ duration > 100ms } | select(span.http.method, .foo, resource.service.name)",
        "{ } | select(duration, name)",
        "{ status = error } | by(resource.service.name) | count() > 1",
        "{ } | by(span.http.route) | avg(duration) > 1s",
        "{ } | by(resource.service.name, span.http.method) | count() > 3",
        "{ .a } | coalesce()",
        r#"{ resource.service.name = "db" } | { span.db.statement =~ "SELECT.*" }"#,
        "({ .a } | count() > 1) && { .b }",
        "({ .a } && { .b }) > { .c }",
        "(({ .a }))",
        "{ .a } | count() > 2 | select(.b)",
        "{ } | count() = 1",
        "{ } | count() != 0",
        "{ } | 2 < count()",
        "{ } | avg(duration) > 2 * 100ms",
        "{ } | max(duration) - min(duration) > 1s",
        "{ } | (count() + 1) * 2 > 10",
        "{ } | rate()",
        "{ } | rate() by (resource.service.name)",
        "{ status = error } | count_over_time() by (resource.service.name, span.http.route)",
        "{ } | quantile_over_time(duration, .9, .99) by (resource.service.name)",
        "{ } | quantile_over_time(duration, 0.5, 1)",
        "{ } | histogram_over_time(duration) by (span.http.method)",
        "{ } | avg_over_time(span.http.response.size)",
        "{ } | min_over_time(duration)",
        "{ } | max_over_time(duration)",
        "{ } | sum_over_time(span.bytes)",
        "{ } | rate() by (resource.service.name) | topk(10)",
        "{ } | rate() | bottomk(3)",
        "{ } | rate() with (sample=true)",
        "{ } | quantile_over_time(duration, .95) with (sample=0.1, exemplars=false)",
        "{ span.http.status_code >= 500 } with (most_recent=true)",
        r#"{ name = "GET /health" && duration < 1ms }"#,
        "{ duration >= 10us && duration <= 5ns }",
        r#"{ .a = "multi\nline \"quoted\" \\ text é" }"#,
        r#"{ resource.k8s.pod.labels.app.kubernetes.io/name = "web" }"#,
        ".a",
        "{ .a=1&&.b=2 }",
        "{\n  span.http.method = \"POST\"\n  && duration > 1s\n}",
        "{ span.http.status_code = 200 } && { span.http.status_code = 500 } || { status = error }",
        "{ .a } > { .b } > { .c }",
        "{ .a } > ({ .b } > { .c })",
        "{ .a = 1 } | { .b = 2 } | { .c = 3 }",
        "{ duration > 1h30m }",
        "{ name > \"m\" }",
        "{ .a = .b }",
        "{ .count = 3 } | count() > 1 && { .x }",
    ];

    #[test]
    fn parse_realistic_queries_round_trip() {
        for q in REALISTIC {
            // `.a` alone and the last entry are deliberate errors, checked elsewhere.
            if *q == ".a" || q.ends_with("&& { .x }") {
                continue;
            }
            assert_round_trip(q);
        }
    }

    #[test]
    fn parse_every_prefix_of_realistic_queries_never_panics() {
        for q in REALISTIC {
            for (i, _) in q.char_indices().chain([(q.len(), ' ')]) {
                let prefix = &q[..i];
                if let Ok(query) = parse(prefix) {
                    assert_round_trip(prefix);
                    let _ = query.attributes();
                }
            }
        }
    }

    #[test]
    fn parse_empty_filter_and_true_filter_both_match_all() {
        let empty = p("{}");
        let filter = empty.as_single_filter().expect("single filter");
        assert_eq!(filter.expr, None);
        assert!(filter.matches_all());
        assert!(p("{ true }").as_single_filter().is_some_and(SpansetFilter::matches_all));
        assert!(!p("{ false }").as_single_filter().is_some_and(SpansetFilter::matches_all));
        assert_eq!(empty.to_string(), "{ }");
    }

    #[test]
    fn parse_colon_intrinsics_equal_their_short_forms() {
        assert_eq!(p("{ span:name = \"x\" }"), p("{ name = \"x\" }"));
        assert_eq!(p("{ trace:rootService = \"x\" }"), p("{ rootServiceName = \"x\" }"));
        assert_eq!(p("{ trace:rootName = \"x\" }"), p("{ rootName = \"x\" }"));
        assert_eq!(p("{ trace:duration > 1s }"), p("{ traceDuration > 1s }"));
        assert_eq!(p("{ span:kind = server }"), p("{ kind = server }"));
    }

    #[test]
    fn parse_literals_have_their_values() {
        let rhs = |q: &str| match filter_expr(q) {
            FieldExpr::Binary { rhs, .. } => *rhs,
            other => panic!("{other:?}"),
        };
        assert_eq!(rhs("{ .a = 42 }"), FieldExpr::Static(Static::Int(42)));
        assert_eq!(rhs("{ .a = 1.5 }"), FieldExpr::Static(Static::Float(1.5)));
        assert_eq!(rhs("{ .a = 1.5s }"), FieldExpr::Static(Static::Duration(Duration::from_millis(1500))));
        assert_eq!(rhs("{ .a = `x\\y` }"), FieldExpr::Static(Static::String("x\\y".into())));
        assert_eq!(rhs("{ .a = nil }"), FieldExpr::Static(Static::Nil));
        assert_eq!(rhs("{ .a = true }"), FieldExpr::Static(Static::Bool(true)));
        assert_eq!(rhs("{ status = error }"), FieldExpr::Static(Static::Status(Status::Error)));
        assert_eq!(rhs("{ kind = consumer }"), FieldExpr::Static(Static::Kind(Kind::Consumer)));
        assert_eq!(
            rhs("{ .a = -3 }"),
            FieldExpr::Unary { op: UnaryOp::Neg, expr: Box::new(FieldExpr::Static(Static::Int(3))) }
        );
    }

    #[test]
    fn parse_and_binds_tighter_than_or_inside_filters() {
        assert_eq!(p("{ .a || .b && .c }"), p("{ .a || (.b && .c) }"));
        assert_eq!(p("{ .a && .b || .c }"), p("{ (.a && .b) || .c }"));
        assert_ne!(p("{ .a || .b && .c }"), p("{ (.a || .b) && .c }"));
    }

    #[test]
    fn parse_comparison_binds_tighter_than_logical_and_looser_than_arithmetic() {
        assert_eq!(p("{ .a = 1 && .b > 2 }"), p("{ (.a = 1) && (.b > 2) }"));
        assert_eq!(p("{ .a + 1 * 2 > .b - 3 }"), p("{ (.a + (1 * 2)) > (.b - 3) }"));
    }

    #[test]
    fn parse_arithmetic_is_left_associative_except_power() {
        assert_eq!(p("{ .a - .b - .c = 0 }"), p("{ ((.a - .b) - .c) = 0 }"));
        assert_eq!(p("{ .a / .b * .c = 0 }"), p("{ ((.a / .b) * .c) = 0 }"));
        assert_eq!(p("{ .a ^ .b ^ .c = 0 }"), p("{ (.a ^ (.b ^ .c)) = 0 }"));
        assert_eq!(p("{ .a % 2 + 1 = 0 }"), p("{ ((.a % 2) + 1) = 0 }"));
    }

    #[test]
    fn parse_prefix_operators_bind_tighter_than_infix_except_power() {
        assert_eq!(p("{ -2 ^ 2 = .a }"), p("{ (-(2 ^ 2)) = .a }"));
        assert_eq!(p("{ -.a * 2 = 1 }"), p("{ ((-.a) * 2) = 1 }"));
        assert_eq!(p("{ !.a = true }"), p("{ (!.a) = true }"));
        assert_eq!(p("{ !.a && .b }"), p("{ (!.a) && .b }"));
        assert_eq!(p("{ 2 ^ -1 = .a }"), p("{ (2 ^ (-1)) = .a }"));
    }

    #[test]
    fn parse_spanset_and_binds_tighter_than_or_and_structural_tighter_than_both() {
        assert_eq!(
            first_spansets("{ .a } || { .b } && { .c }"),
            first_spansets("{ .a } || ({ .b } && { .c })")
        );
        assert_eq!(
            first_spansets("{ .a } && { .b } > { .c }"),
            first_spansets("{ .a } && ({ .b } > { .c })")
        );
        assert_eq!(
            first_spansets("{ .a } > { .b } || { .c }"),
            first_spansets("({ .a } > { .b }) || { .c }")
        );
        assert_eq!(
            first_spansets("{ .a } > { .b } >> { .c }"),
            first_spansets("({ .a } > { .b }) >> { .c }")
        );
        assert_ne!(first_spansets("{ .a } > { .b } > { .c }"), first_spansets("{ .a } > ({ .b } > { .c })"));
    }

    #[test]
    fn parse_pipe_binds_loosest() {
        let q = p("{ .a } > { .b } | count() > 1");
        assert_eq!(q.pipeline.stages.len(), 2);
        assert!(matches!(
            &q.pipeline.stages[0],
            Stage::Spansets(SpansetExpr::Binary { op: SpansetOp::Child, .. })
        ));
        assert!(matches!(&q.pipeline.stages[1], Stage::ScalarFilter(ScalarFilter { op: BinaryOp::Gt, .. })));
    }

    #[test]
    fn parse_wrapped_pipeline_is_a_spanset_operand() {
        let e = first_spansets("({ .a } | count() > 1) && { .b }");
        let SpansetExpr::Binary { op: SpansetOp::And, lhs, .. } = e else { panic!("{e:?}") };
        let SpansetExpr::Pipeline(inner) = *lhs else { panic!("{lhs:?}") };
        assert_eq!(inner.stages.len(), 2);
    }

    #[test]
    fn parse_redundant_parentheses_leave_no_trace() {
        assert_eq!(p("(({ .a }))"), p("{ .a }"));
        assert_eq!(p("{ ((.a)) = (((1))) }"), p("{ .a = 1 }"));
    }

    #[test]
    fn parse_not_tilde_means_not_regex_inside_filters_and_not_sibling_between_them() {
        assert!(matches!(filter_expr("{ .a !~ \"x\" }"), FieldExpr::Binary { op: BinaryOp::NotRegex, .. }));
        assert!(matches!(
            first_spansets("{ .a } !~ { .b }"),
            SpansetExpr::Binary { op: SpansetOp::NotSibling, .. }
        ));
    }

    #[test]
    fn parse_metrics_query_has_function_grouping_and_second_stage() {
        let q = p(
            "{ status = error } | quantile_over_time(duration, .9, .99) by (resource.service.name) | topk(5)",
        );
        let m = q.metrics.as_ref().expect("metrics");
        assert!(q.is_metrics());
        assert_eq!(
            m.function,
            MetricsFunction::QuantileOverTime {
                expr: FieldExpr::Intrinsic(Intrinsic::Duration),
                quantiles: vec![0.9, 0.99]
            }
        );
        assert_eq!(
            m.by,
            vec![FieldExpr::Attribute(Attribute::new(AttributeScope::Resource, "service.name"))]
        );
        assert_eq!(m.second_stage, Some(SecondStage::TopK(5)));
    }

    #[test]
    fn parse_hints_are_readable_by_name() {
        let q = p("{ } | rate() with (sample=true, sample_rate=0.1)");
        assert_eq!(q.hint("sample"), Some(&Static::Bool(true)));
        assert_eq!(q.hint("sample_rate"), Some(&Static::Float(0.1)));
        assert_eq!(q.hint("other"), None);
    }

    #[test]
    fn parse_error_display_names_line_column_and_expectation() {
        let e = err("{ .a = 1");
        assert_eq!(e.to_string(), "parse error at line 1, col 9: expected \"}\", found end of query");
        assert_eq!(e.offset, 8);
        assert_eq!(e.code(), pharos_core::ErrorCode::InvalidInput);
    }

    #[test]
    fn parse_error_positions_point_at_the_offending_token() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("{ span.foo = }", 1, 14, "expected an expression, found \"}\""),
            ("{ .a = 1 } { .b = 2 }", 1, 12, "found \"{\""),
            ("{ .a = 1 ) }", 1, 10, "expected \"}\""),
            ("{ .a = 1 } |", 1, 13, "found end of query"),
            ("{ .a = 1 }\n  && { .b = }", 2, 13, "expected an expression"),
            ("{ .a = 1 } | count() >", 1, 23, "found end of query"),
            ("{ .a = 1 } | count()", 1, 21, "a comparison operator"),
            ("{ } | rate() by", 1, 16, "expected \"(\""),
            ("{ } | rate() | foo(1)", 1, 16, "topk or bottomk"),
            ("{ } | quantile_over_time(duration)", 1, 34, "a quantile"),
            ("{ foo = 1 }", 1, 3, "unknown identifier \"foo\""),
            ("{ } | frobnicate() > 1", 1, 7, "unknown function \"frobnicate\""),
            ("count() > 1", 1, 1, "expected \"{\" or \"(\""),
            ("", 1, 1, "found end of query"),
            ("{ .a = 1 } with (x=)", 1, 20, "a hint value"),
            ("{ .a = 1 } with (x=", 1, 20, "a hint value, found end of query"),
            ("{ } | quantile_over_time(duration,", 1, 35, "a quantile between 0 and 1, found end of query"),
            ("{ } | rate() | topk(", 1, 21, "a positive integer, found end of query"),
            ("{ } | rate() | topk(-1)", 1, 21, "a positive integer, found \"-\""),
        ];
        for (input, line, column, message) in cases {
            let e = err(input);
            assert_eq!((e.line, e.column), (*line, *column), "{input:?}: {e}");
            assert!(e.to_string().contains(message), "{input:?}: {e}");
        }
    }

    #[test]
    fn parse_type_mismatches_are_errors_at_the_operator() {
        let cases: &[(&str, usize)] = &[
            ("{ duration = \"abc\" }", 12),
            ("{ status = 200 }", 10),
            ("{ kind = ok }", 8),
            ("{ status = server }", 10),
            ("{ name > 1 }", 8),
            ("{ name = 1s }", 8),
            ("{ status > ok }", 10),
            ("{ .a > nil }", 6),
            ("{ .a = 1 && 2 }", 10),
            ("{ name + 1 = 2 }", 8),
            ("{ duration =~ \"1s\" }", 12),
            ("{ true = 1 }", 8),
        ];
        for (input, column) in cases {
            let e = err(input);
            assert!(matches!(e.kind, ParseErrorKind::TypeMismatch { .. }), "{input:?}: {e}");
            assert_eq!(e.column, *column, "{input:?}: {e}");
        }
    }

    #[test]
    fn parse_well_typed_mixes_are_accepted() {
        for q in [
            "{ duration > 100 }",
            "{ duration > 1.5 }",
            "{ .a = nil }",
            "{ nil != .a }",
            "{ .a + 1 > duration }",
            "{ duration * 2 > traceDuration }",
            "{ .a = ok }",
            "{ .a = server }",
            "{ .a }",
            "{ !.a }",
            "{ -.a > 1 }",
            "{ (.a = 1) = true }",
            "{ name > \"a\" && name < \"b\" }",
        ] {
            assert_round_trip(q);
        }
    }

    #[test]
    fn parse_filter_that_is_not_boolean_is_an_error() {
        for (input, found) in
            [("{ 1 }", "integer"), ("{ name }", "string"), ("{ duration + 1s }", "duration")]
        {
            let e = err(input);
            assert!(matches!(e.kind, ParseErrorKind::NotBoolean(f) if f == found), "{input:?}: {e}");
            assert_eq!(e.column, 3);
        }
    }

    #[test]
    fn parse_prefix_operator_on_wrong_type_is_an_error() {
        assert!(matches!(err("{ !duration }").kind, ParseErrorKind::InvalidOperand { op: "!", .. }));
        assert!(matches!(err("{ -name = 1 }").kind, ParseErrorKind::InvalidOperand { op: "-", .. }));
    }

    #[test]
    fn parse_invalid_regex_is_an_error_at_the_pattern() {
        let e = err("{ name =~ \"(unclosed\" }");
        assert!(
            matches!(e.kind, ParseErrorKind::InvalidRegex { ref pattern, .. } if pattern == "(unclosed"),
            "{e}"
        );
        assert_eq!(e.column, 11);
        assert!(e.to_string().contains("invalid regular expression"), "{e}");
        assert!(matches!(err("{ name =~ .other }").kind, ParseErrorKind::RegexNotLiteral("=~")));
        assert!(matches!(err("{ .a !~ 1 }").kind, ParseErrorKind::RegexNotLiteral("!~")));
    }

    #[test]
    fn parse_function_argument_errors_are_reported() {
        let cases: &[(&str, &str)] = &[
            ("{ } | count(duration) > 1", "count() takes no arguments"),
            ("{ } | avg() > 1", "avg() needs an argument"),
            ("{ } | avg(name) > 1", "avg() needs a numeric argument"),
            ("{ } | by() | count() > 1", "by() needs at least one argument"),
            ("{ } | select(.a = 1)", "select() takes only attributes"),
            ("{ } | coalesce(.a)", "coalesce() takes no arguments"),
            ("{ } | rate(duration)", "rate() takes no arguments"),
            ("{ } | histogram_over_time(name)", "needs a numeric argument"),
            ("{ } | quantile_over_time(duration, 1.5)", "quantile 1.5 is outside [0, 1]"),
            ("{ } | rate() | topk(0)", "a positive integer"),
            ("{ } | 1 > 2", "must compare an aggregate"),
            ("{ } | count() > \"x\"", "expected a spanset"),
            ("({ } | rate())", "must be the last stage"),
        ];
        for (input, message) in cases {
            let e = err(input);
            assert!(e.to_string().contains(message), "{input:?}: {e}");
        }
    }

    #[test]
    fn parse_trailing_tokens_after_metrics_or_filter_are_errors() {
        assert!(err("{ } | rate() { }").to_string().contains("expected end of query"));
        assert!(err("{ } { }").to_string().contains("spanset operator or end of query"));
        assert!(err("{ .count = 3 } | count() > 1 && { .x }").to_string().contains("found \"&&\""));
    }

    #[test]
    fn parse_nesting_up_to_the_limit_is_accepted() {
        let depth = MAX_NESTING - 1;
        let q = format!("{{ {}.a = 1{} }}", "(".repeat(depth), ")".repeat(depth));
        assert_round_trip(&q);
        let q = format!("{}{{ .a }}{}", "(".repeat(depth), ")".repeat(depth));
        assert_round_trip(&q);
        assert_round_trip(&format!("{{ {}.a }}", "!".repeat(depth)));
        assert_round_trip(&format!("{{ .a = {}1 }}", "-".repeat(depth)));
        assert_round_trip(&format!("{{ }} | {}count(){} > 1", "(".repeat(depth), ")".repeat(depth)));
    }

    #[test]
    fn parse_nesting_past_the_limit_is_a_clear_error() {
        let deep = [
            format!("{{ {}.a = 1{} }}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1)),
            format!("{{ {}.a }}", "!".repeat(MAX_NESTING + 1)),
            format!("{{ .a = {}1 }}", "-".repeat(100_000)),
            format!("{{ {}", "(".repeat(100_000)),
            "(".repeat(100_000),
            format!("{{ .a = 2{} }}", " ^ 2".repeat(MAX_NESTING + 1)),
            format!("{{ }} | {}count() > 1", "(".repeat(100_000)),
        ];
        for q in deep {
            let e = err(&q);
            assert!(matches!(e.kind, ParseErrorKind::TooDeep(MAX_NESTING)), "{e}");
            assert!(e.to_string().contains("nests deeper than 256 levels"), "{e}");
        }
    }

    #[test]
    fn parse_long_operator_chains_are_accepted_up_to_the_height_limit() {
        let chain = |n: usize| {
            let parts: Vec<String> = (0..n).map(|i| format!(".a = {i}")).collect();
            format!("{{ {} }}", parts.join(" || "))
        };
        assert_round_trip(&chain(MAX_HEIGHT / 2));
        let e = err(&chain(MAX_HEIGHT * 2));
        assert!(matches!(e.kind, ParseErrorKind::TooDeep(MAX_HEIGHT)), "{e}");
        let spansets = vec!["{ .a }"; MAX_HEIGHT * 2].join(" && ");
        assert!(matches!(err(&spansets).kind, ParseErrorKind::TooDeep(MAX_HEIGHT)));
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn parse_random_garbage_never_panics() {
        const ALPHABET: &[char] = &[
            '{', '}', '(', ')', '.', ',', '|', '&', '!', '=', '~', '<', '>', '+', '-', '*', '/', '%', '^',
            '"', '`', '\\', ' ', '\n', 'a', 's', 'm', 'h', 'e', '0', '1', '9', ':', 'é', 'µ', '\u{0}', '\'',
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let input: String = (0..len).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
            if parse(&input).is_ok() {
                assert_round_trip(&input);
            }
        }
    }

    #[test]
    fn parse_random_token_soup_never_panics_and_valid_results_round_trip() {
        const WORDS: &[&str] = &[
            "{",
            "}",
            "(",
            ")",
            "{ }",
            ",",
            "|",
            "&&",
            "||",
            "!",
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "=~",
            "!~",
            ">>",
            "<<",
            "~",
            "!>",
            "!>>",
            "&>",
            "&~",
            "+",
            "-",
            "*",
            "/",
            "%",
            "^",
            ".a",
            "span.http.status_code",
            "resource.service.name",
            "span.\"x y\"",
            "name",
            "status",
            "kind",
            "duration",
            "traceDuration",
            "span:id",
            "trace:duration",
            "error",
            "ok",
            "server",
            "nil",
            "true",
            "false",
            "1",
            "2.5",
            ".9",
            "100ms",
            "1h30m",
            "\"GET .*\"",
            "`raw`",
            "count()",
            "avg(duration)",
            "max(.a)",
            "by",
            "select",
            "coalesce()",
            "rate()",
            "quantile_over_time(duration, .9)",
            "by (.a)",
            "topk(2)",
            "with",
            "(sample=true)",
        ];
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut valid = 0;
        for _ in 0..30_000 {
            let len = 1 + rng.below(14);
            let words: Vec<&str> = (0..len).map(|_| WORDS[rng.below(WORDS.len())]).collect();
            let input = words.join(if rng.below(4) == 0 { "" } else { " " });
            if parse(&input).is_ok() {
                valid += 1;
                assert_round_trip(&input);
            }
        }
        assert!(valid > 0, "the generator should hit some valid queries");
    }

    #[test]
    fn parse_mutated_realistic_queries_never_panic_and_valid_results_round_trip() {
        let mut rng = Rng(42);
        let pieces = ["{", "}", "(", ")", "|", "&", "!", "=", "~", ">", "\"", "`", ".", "-", "1", "s", " "];
        for _ in 0..20_000 {
            let mut q: Vec<char> = REALISTIC[rng.below(REALISTIC.len())].chars().collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(q.len() + 1);
                match rng.below(3) {
                    0 if at < q.len() => {
                        q.remove(at);
                    }
                    1 if at < q.len() => {
                        q[at] = pieces[rng.below(pieces.len())].chars().next().unwrap_or(' ')
                    }
                    _ => q.insert(at, pieces[rng.below(pieces.len())].chars().next().unwrap_or(' ')),
                }
            }
            let input: String = q.into_iter().collect();
            if parse(&input).is_ok() {
                assert_round_trip(&input);
            }
        }
    }
}

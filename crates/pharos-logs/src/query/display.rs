//! Prints the syntax tree back to LogQL.
//!
//! The output is canonical (one spelling per tree: `and` for every conjunction, `==` for numeric
//! equality, durations in `h`/`m`/`s`/...), and parses back to an equal tree. Parentheses are
//! added only where precedence needs them.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::*;
use super::bytesize::DisplayBytes;
use super::duration::DisplayDuration;
use super::lexer::quote;

struct Quoted<'a>(&'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        quote(self.0, f)
    }
}

/// Writes items separated by `, `.
fn comma_list<T>(
    f: &mut Formatter<'_>,
    items: &[T],
    mut each: impl FnMut(&mut Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        each(f, item)?;
    }
    Ok(())
}

fn label_list(f: &mut Formatter<'_>, labels: &[String]) -> fmt::Result {
    f.write_char('(')?;
    comma_list(f, labels, |f, label| f.write_str(label))?;
    f.write_char(')')
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(query) => query.fmt(f),
            Expr::Metric(expr) => expr.fmt(f),
        }
    }
}

impl Display for LogQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.selector.fmt(f)?;
        for stage in &self.pipeline {
            write!(f, " {stage}")?;
        }
        Ok(())
    }
}

impl Display for Selector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_char('{')?;
        comma_list(f, &self.matchers, |f, matcher| matcher.fmt(f))?;
        f.write_char('}')
    }
}

impl Display for Matcher {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), Quoted(&self.value))
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::LineFilter(filter) => filter.fmt(f),
            Stage::Parser(parser) => parser.fmt(f),
            Stage::LabelFilter(filter) => write!(f, "| {filter}"),
            Stage::LineFormat(template) => write!(f, "| line_format {}", Quoted(template)),
            Stage::LabelFormat(ops) => {
                f.write_str("| label_format ")?;
                comma_list(f, ops, |f, op| match op {
                    LabelFormat::Rename { dst, src } => write!(f, "{dst}={src}"),
                    LabelFormat::Template { dst, template } => write!(f, "{dst}={}", Quoted(template)),
                })
            }
            Stage::Drop(labels) => {
                f.write_str("| drop ")?;
                comma_list(f, labels, |f, label| label.fmt(f))
            }
            Stage::Keep(labels) => {
                f.write_str("| keep ")?;
                comma_list(f, labels, |f, label| label.fmt(f))
            }
            Stage::Decolorize => f.write_str("| decolorize"),
        }
    }
}

impl Display for LabelSelection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LabelSelection::Name(name) => f.write_str(name),
            LabelSelection::Matcher(matcher) => matcher.fmt(f),
        }
    }
}

impl Display for LineFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(" or")?;
            }
            match value {
                LineFilterValue::Text(text) => write!(f, " {}", Quoted(text))?,
                LineFilterValue::Ip(address) => write!(f, " ip({})", Quoted(address))?,
            }
        }
        Ok(())
    }
}

fn extract_params(f: &mut Formatter<'_>, params: &[ExtractParam]) -> fmt::Result {
    if params.is_empty() {
        return Ok(());
    }
    f.write_char(' ')?;
    comma_list(f, params, |f, param| match &param.path {
        Some(path) => write!(f, "{}={}", param.label, Quoted(path)),
        None => f.write_str(&param.label),
    })
}

impl Display for Parser {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Parser::Json { params } => {
                f.write_str("| json")?;
                extract_params(f, params)
            }
            Parser::Logfmt { strict, keep_empty, params } => {
                f.write_str("| logfmt")?;
                if *strict {
                    f.write_str(" --strict")?;
                }
                if *keep_empty {
                    f.write_str(" --keep-empty")?;
                }
                extract_params(f, params)
            }
            Parser::Regexp(regex) => write!(f, "| regexp {}", Quoted(regex)),
            Parser::Pattern(pattern) => write!(f, "| pattern {}", Quoted(pattern)),
            Parser::Unpack => f.write_str("| unpack"),
        }
    }
}

impl Display for LabelFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            LabelFilter::And(lhs, rhs) => {
                // `and` binds tighter than `or`; a right-nested `and` keeps its parentheses so
                // the tree reads back with the same shape.
                let lhs_parens = matches!(**lhs, LabelFilter::Or(..));
                let rhs_parens = matches!(**rhs, LabelFilter::Or(..) | LabelFilter::And(..));
                write_maybe_parens(f, lhs, lhs_parens)?;
                f.write_str(" and ")?;
                write_maybe_parens(f, rhs, rhs_parens)
            }
            LabelFilter::Or(lhs, rhs) => {
                lhs.fmt(f)?;
                f.write_str(" or ")?;
                write_maybe_parens(f, rhs, matches!(**rhs, LabelFilter::Or(..)))
            }
            LabelFilter::String(matcher) => matcher.fmt(f),
            LabelFilter::Number { name, op, value } => write!(f, "{name} {} {value}", op.as_str()),
            LabelFilter::Duration { name, op, value } => {
                write!(f, "{name} {} {}", op.as_str(), DisplayDuration(*value))
            }
            LabelFilter::Bytes { name, op, value } => {
                write!(f, "{name} {} {}", op.as_str(), DisplayBytes(*value))
            }
            LabelFilter::Ip { name, negated, address } => {
                write!(f, "{name} {} ip({})", if *negated { "!=" } else { "=" }, Quoted(address))
            }
        }
    }
}

fn write_maybe_parens(f: &mut Formatter<'_>, item: &impl Display, parens: bool) -> fmt::Result {
    if parens { write!(f, "({item})") } else { item.fmt(f) }
}

impl Display for Grouping {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(if self.without { "without " } else { "by " })?;
        label_list(f, &self.labels)
    }
}

impl Display for MetricExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MetricExpr::RangeAggregation(agg) => agg.fmt(f),
            MetricExpr::VectorAggregation(agg) => agg.fmt(f),
            MetricExpr::Binary(binary) => binary.fmt(f),
            MetricExpr::Literal(value) => write!(f, "{value}"),
            MetricExpr::Vector(value) => write!(f, "vector({value})"),
            MetricExpr::LabelReplace(replace) => write!(
                f,
                "label_replace({}, {}, {}, {}, {})",
                replace.expr,
                Quoted(&replace.dst),
                Quoted(&replace.replacement),
                Quoted(&replace.src),
                Quoted(&replace.regex)
            ),
        }
    }
}

impl Display for RangeAggregation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.op.as_str())?;
        if let Some(param) = self.param {
            write!(f, "{param}, ")?;
        }
        write!(f, "{})", self.range)?;
        if let Some(grouping) = &self.grouping {
            write!(f, " {grouping}")?;
        }
        Ok(())
    }
}

impl Display for LogRange {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        self.query.fmt(f)?;
        if let Some(unwrap) = &self.unwrap {
            write!(f, " {unwrap}")?;
        }
        write!(f, " [{}]", DisplayDuration(self.range))?;
        if !self.offset.is_zero() {
            write!(f, " offset {}", DisplayDuration(self.offset))?;
        }
        Ok(())
    }
}

impl Display for Unwrap {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.conversion.function_name() {
            Some(function) => write!(f, "| unwrap {function}({})", self.label)?,
            None => write!(f, "| unwrap {}", self.label)?,
        }
        for filter in &self.post_filters {
            write!(f, " | {filter}")?;
        }
        Ok(())
    }
}

impl Display for VectorAggregation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        if let Some(grouping) = &self.grouping {
            write!(f, " {grouping} ")?;
        }
        f.write_char('(')?;
        if let Some(param) = self.param {
            write!(f, "{param}, ")?;
        }
        write!(f, "{})", self.expr)
    }
}

impl Display for BinaryExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let prec = self.op.precedence();
        let right_assoc = self.op.is_right_associative();
        let needs_parens = |child: &MetricExpr, is_lhs: bool| match child {
            MetricExpr::Binary(inner) => {
                let inner_prec = inner.op.precedence();
                inner_prec < prec || (inner_prec == prec && (is_lhs == right_assoc))
            }
            _ => false,
        };
        write_maybe_parens(f, &self.lhs, needs_parens(&self.lhs, true))?;
        write!(f, " {}", self.op.as_str())?;
        if self.return_bool {
            f.write_str(" bool")?;
        }
        if let Some(matching) = &self.matching {
            f.write_str(if matching.on { " on " } else { " ignoring " })?;
            label_list(f, &matching.labels)?;
            if let Some(group) = &matching.group {
                f.write_str(if group.left { " group_left " } else { " group_right " })?;
                label_list(f, &group.labels)?;
            }
        }
        f.write_char(' ')?;
        write_maybe_parens(f, &self.rhs, needs_parens(&self.rhs, false))
    }
}

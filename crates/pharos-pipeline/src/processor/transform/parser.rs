//! The OTTL subset's syntax: a lexer and a recursive-descent parser from statement text to an
//! unresolved syntax tree. Paths, functions and argument types are checked later, in
//! `compile`, against the statement's context. Every error names the 1-based column (in
//! characters) where it was found and what was expected there.

use std::fmt;

/// A rejected statement (bad syntax, unknown function or path, wrong argument): where and what.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatementError {
    pub(super) column: usize,
    pub(super) message: String,
}

impl StatementError {
    pub(super) fn new(column: usize, message: impl Into<String>) -> Self {
        StatementError { column, message: message.into() }
    }
}

impl fmt::Display for StatementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

// ---- syntax tree ----

/// `editor(args) where condition`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Statement {
    pub(super) editor: Call,
    pub(super) condition: Option<BoolExpr>,
}

/// A function call: an editor (lowercase) or a converter (capitalised).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Call {
    pub(super) name: String,
    pub(super) column: usize,
    pub(super) args: Vec<Arg>,
}

/// One argument, positional or named (`limit = 10`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Arg {
    pub(super) name: Option<String>,
    pub(super) value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Expr {
    pub(super) column: usize,
    pub(super) kind: ExprKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum ExprKind {
    Literal(Literal),
    /// An upper-case constant such as `STATUS_CODE_ERROR`.
    Enum(String),
    Path(PathExpr),
    Converter(Call),
    List(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Literal {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

/// `resource.attributes["service.name"]`: dotted names, then keys.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PathExpr {
    pub(super) names: Vec<String>,
    pub(super) keys: Vec<Key>,
}

impl fmt::Display for PathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join("."))?;
        for key in &self.keys {
            match key {
                Key::Str(s) => write!(f, "[{s:?}]")?,
                Key::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Key {
    Str(String),
    Index(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum BoolExpr {
    Or(Vec<BoolExpr>),
    And(Vec<BoolExpr>),
    Not(Box<BoolExpr>),
    Compare(Expr, CmpOp, Expr),
    /// A value standing alone: `true`, or a converter returning a boolean (`IsMatch(...)`).
    Value(Expr),
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Assign,
    Cmp(CmpOp),
    End,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Int(i) => write!(f, "number {i}"),
            Tok::Float(x) => write!(f, "number {x}"),
            Tok::Bytes(_) => f.write_str("a bytes literal"),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
            Tok::Dot => f.write_str("`.`"),
            Tok::Assign => f.write_str("`=`"),
            Tok::Cmp(op) => write!(f, "`{}`", op_text(*op)),
            Tok::End => f.write_str("the end of the statement"),
        }
    }
}

pub(super) fn op_text(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

/// Statements longer than this are refused (bounds parsing and nesting work).
const MAX_STATEMENT_CHARS: usize = 16 * 1024;
/// Nesting of parentheses, lists and calls.
const MAX_DEPTH: usize = 64;

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, StatementError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_STATEMENT_CHARS {
        return Err(StatementError::new(
            1,
            format!("statement is longer than {MAX_STATEMENT_CHARS} characters"),
        ));
    }
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = |next: char| chars.get(i + 1) == Some(&next);
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            ',' => (Tok::Comma, 1),
            '.' => (Tok::Dot, 1),
            '=' if two('=') => (Tok::Cmp(CmpOp::Eq), 2),
            '=' => (Tok::Assign, 1),
            '!' if two('=') => (Tok::Cmp(CmpOp::Ne), 2),
            '<' if two('=') => (Tok::Cmp(CmpOp::Le), 2),
            '<' => (Tok::Cmp(CmpOp::Lt), 1),
            '>' if two('=') => (Tok::Cmp(CmpOp::Ge), 2),
            '>' => (Tok::Cmp(CmpOp::Gt), 1),
            '"' => lex_string(&chars, i)?,
            '0' if matches!(chars.get(i + 1), Some('x') | Some('X')) => lex_bytes(&chars, i)?,
            c if c.is_ascii_digit() => lex_number(&chars, i)?,
            '-' if chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) => lex_number(&chars, i)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = chars[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
                    .map_or(chars.len(), |n| i + n);
                (Tok::Ident(chars[i..end].iter().collect()), end - i)
            }
            other => {
                let hint = if "+-*/".contains(other) { " (arithmetic is not supported)" } else { "" };
                return Err(StatementError::new(column, format!("unexpected character {other:?}{hint}")));
            }
        };
        toks.push((column, tok));
        i += len;
    }
    toks.push((chars.len() + 1, Tok::End));
    Ok(toks)
}

fn lex_string(chars: &[char], start: usize) -> Result<(Tok, usize), StatementError> {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '"' => return Ok((Tok::Str(out), i + 1 - start)),
            '\\' => {
                match chars.get(i + 1) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    // Any other escape is kept as written, so regexes such as "\d+" work.
                    Some(other) => {
                        out.push('\\');
                        out.push(*other);
                    }
                    None => break,
                }
                i += 2;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err(StatementError::new(start + 1, "unterminated string: expected a closing `\"`"))
}

fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), StatementError> {
    let mut i = start;
    if chars[i] == '-' {
        i += 1;
    }
    while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
    }
    let mut float = false;
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        float = true;
        i += 1;
        while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
    }
    let text: String = chars[start..i].iter().collect();
    let tok =
        if float {
            Tok::Float(
                text.parse().map_err(|_| StatementError::new(start + 1, format!("invalid number {text}")))?,
            )
        } else {
            Tok::Int(text.parse().map_err(|_| {
                StatementError::new(start + 1, format!("integer {text} does not fit in 64 bits"))
            })?)
        };
    Ok((tok, i - start))
}

fn lex_bytes(chars: &[char], start: usize) -> Result<(Tok, usize), StatementError> {
    let digits: Vec<u8> = chars[start + 2..]
        .iter()
        .take_while(|c| c.is_ascii_hexdigit())
        .map(|c| c.to_digit(16).unwrap_or(0) as u8)
        .collect();
    if digits.is_empty() || digits.len() % 2 == 1 {
        return Err(StatementError::new(
            start + 1,
            "a bytes literal needs an even number of hex digits after 0x",
        ));
    }
    let bytes = digits.chunks(2).map(|pair| (pair[0] << 4) | pair[1]).collect();
    Ok((Tok::Bytes(bytes), digits.len() + 2))
}

// ---- parser ----

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

/// Parses one statement: `editor(args)` with an optional `where` clause.
pub(super) fn parse_statement(text: &str) -> Result<Statement, StatementError> {
    let mut p = Parser { toks: lex(text)?, pos: 0, depth: 0 };
    let (column, tok) = p.next();
    let name = match tok {
        Tok::Ident(name) => name,
        other => {
            return Err(StatementError::new(
                column,
                format!("expected an editor such as `set(`, found {other}"),
            ));
        }
    };
    if name.starts_with(|c: char| c.is_ascii_uppercase()) {
        return Err(StatementError::new(
            column,
            format!("expected an editor (a lowercase function such as `set`), found converter `{name}`"),
        ));
    }
    p.expect(Tok::LParen, "`(` after the editor's name")?;
    let editor = Call { name, column, args: p.args()? };
    let condition = match p.peek() {
        Tok::Ident(w) if w == "where" => {
            p.next();
            Some(p.bool_expr()?)
        }
        _ => None,
    };
    p.end(if condition.is_some() {
        "`and`, `or` or the end of the statement"
    } else {
        "`where` or the end"
    })?;
    Ok(Statement { editor, condition })
}

/// Parses a condition on its own (a group's `conditions` entry).
pub(super) fn parse_condition(text: &str) -> Result<BoolExpr, StatementError> {
    let mut p = Parser { toks: lex(text)?, pos: 0, depth: 0 };
    let expr = p.bool_expr()?;
    p.end("`and`, `or` or the end of the condition")?;
    Ok(expr)
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::End, |(_, t)| t)
    }

    fn peek_at(&self, ahead: usize) -> &Tok {
        self.toks.get(self.pos + ahead).map_or(&Tok::End, |(_, t)| t)
    }

    fn column(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(1, |(c, _)| *c)
    }

    fn next(&mut self) -> (usize, Tok) {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                t.clone()
            }
            None => (self.column(), Tok::End),
        }
    }

    fn unexpected(&self, expected: &str) -> StatementError {
        StatementError::new(self.column(), format!("expected {expected}, found {}", self.peek()))
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> Result<(), StatementError> {
        if *self.peek() == tok {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }

    fn end(&self, expected: &str) -> Result<(), StatementError> {
        if *self.peek() == Tok::End { Ok(()) } else { Err(self.unexpected(expected)) }
    }

    fn deeper(&mut self) -> Result<(), StatementError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(StatementError::new(
                self.column(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    /// Arguments after `(`, up to and including `)`.
    fn args(&mut self) -> Result<Vec<Arg>, StatementError> {
        self.deeper()?;
        let mut args = Vec::new();
        if *self.peek() == Tok::RParen {
            self.next();
            self.depth -= 1;
            return Ok(args);
        }
        loop {
            let name = match (self.peek(), self.peek_at(1)) {
                (Tok::Ident(name), Tok::Assign) => {
                    let name = name.clone();
                    self.pos += 2;
                    Some(name)
                }
                _ => None,
            };
            let value = self.value()?;
            args.push(Arg { name, value });
            match self.peek() {
                Tok::Comma => {
                    self.next();
                }
                Tok::RParen => {
                    self.next();
                    self.depth -= 1;
                    return Ok(args);
                }
                _ => return Err(self.unexpected("`,` or `)` after an argument")),
            }
        }
    }

    fn value(&mut self) -> Result<Expr, StatementError> {
        let column = self.column();
        let (_, tok) = self.next();
        let kind = match tok {
            Tok::Str(s) => ExprKind::Literal(Literal::Str(s)),
            Tok::Int(i) => ExprKind::Literal(Literal::Int(i)),
            Tok::Float(x) => ExprKind::Literal(Literal::Float(x)),
            Tok::Bytes(b) => ExprKind::Literal(Literal::Bytes(b)),
            Tok::LBracket => {
                self.deeper()?;
                let mut items = Vec::new();
                if *self.peek() == Tok::RBracket {
                    self.next();
                } else {
                    loop {
                        items.push(self.value()?);
                        match self.next() {
                            (_, Tok::Comma) => {}
                            (_, Tok::RBracket) => break,
                            (c, other) => {
                                return Err(StatementError::new(
                                    c,
                                    format!("expected `,` or `]` in a list, found {other}"),
                                ));
                            }
                        }
                    }
                }
                self.depth -= 1;
                ExprKind::List(items)
            }
            Tok::Ident(name) => match name.as_str() {
                "nil" => ExprKind::Literal(Literal::Nil),
                "true" => ExprKind::Literal(Literal::Bool(true)),
                "false" => ExprKind::Literal(Literal::Bool(false)),
                _ if *self.peek() == Tok::LParen => {
                    if !name.starts_with(|c: char| c.is_ascii_uppercase()) {
                        return Err(StatementError::new(
                            column,
                            format!("editor `{name}` cannot be used as a value (converters are capitalised)"),
                        ));
                    }
                    self.next();
                    ExprKind::Converter(Call { name, column, args: self.args()? })
                }
                _ if is_enum_name(&name) && !matches!(self.peek(), Tok::Dot | Tok::LBracket) => {
                    ExprKind::Enum(name)
                }
                _ => ExprKind::Path(self.path(name)?),
            },
            other => {
                return Err(StatementError::new(
                    column,
                    format!("expected a value (a string, number, path, list or converter), found {other}"),
                ));
            }
        };
        Ok(Expr { column, kind })
    }

    /// The rest of a path whose first name was read.
    fn path(&mut self, first: String) -> Result<PathExpr, StatementError> {
        let mut names = vec![first];
        while *self.peek() == Tok::Dot {
            self.next();
            match self.next() {
                (_, Tok::Ident(name)) => names.push(name),
                (c, other) => {
                    return Err(StatementError::new(c, format!("expected a name after `.`, found {other}")));
                }
            }
        }
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            self.next();
            match self.next() {
                (_, Tok::Str(s)) => keys.push(Key::Str(s)),
                (_, Tok::Int(i)) => keys.push(Key::Index(i)),
                (c, other) => {
                    return Err(StatementError::new(
                        c,
                        format!("expected a string key or an index inside `[]`, found {other}"),
                    ));
                }
            }
            self.expect(Tok::RBracket, "`]` after the key")?;
            if keys.len() > MAX_DEPTH {
                return Err(StatementError::new(
                    self.column(),
                    format!("more than {MAX_DEPTH} keys in one path"),
                ));
            }
        }
        Ok(PathExpr { names, keys })
    }

    fn bool_expr(&mut self) -> Result<BoolExpr, StatementError> {
        self.deeper()?;
        let mut terms = vec![self.and_expr()?];
        while matches!(self.peek(), Tok::Ident(w) if w == "or") {
            self.next();
            terms.push(self.and_expr()?);
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 { terms.remove(0) } else { BoolExpr::Or(terms) })
    }

    fn and_expr(&mut self) -> Result<BoolExpr, StatementError> {
        let mut terms = vec![self.not_expr()?];
        while matches!(self.peek(), Tok::Ident(w) if w == "and") {
            self.next();
            terms.push(self.not_expr()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { BoolExpr::And(terms) })
    }

    fn not_expr(&mut self) -> Result<BoolExpr, StatementError> {
        if matches!(self.peek(), Tok::Ident(w) if w == "not") {
            self.next();
            self.deeper()?;
            let inner = self.not_expr()?;
            self.depth -= 1;
            return Ok(BoolExpr::Not(Box::new(inner)));
        }
        if *self.peek() == Tok::LParen {
            self.next();
            let inner = self.bool_expr()?;
            self.expect(Tok::RParen, "`)` closing the parenthesis, `and` or `or`")?;
            return Ok(inner);
        }
        if matches!(self.peek(), Tok::End | Tok::RParen | Tok::Comma) {
            return Err(self.unexpected("a condition"));
        }
        let left = self.value()?;
        match self.peek() {
            Tok::Cmp(op) => {
                let op = *op;
                self.next();
                let right = self.value()?;
                Ok(BoolExpr::Compare(left, op, right))
            }
            Tok::Assign => Err(self.unexpected("a comparison operator (`==` compares, `=` does not)")),
            _ => Ok(BoolExpr::Value(left)),
        }
    }
}

/// `STATUS_CODE_ERROR`-style constant names.
fn is_enum_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && name.contains('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(names: &[&str], keys: Vec<Key>) -> ExprKind {
        ExprKind::Path(PathExpr { names: names.iter().map(|s| s.to_string()).collect(), keys })
    }

    fn err(text: &str) -> StatementError {
        match parse_statement(text) {
            Ok(s) => panic!("{text:?} parsed as {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parse_set_with_where_on_resource_attribute_builds_tree() {
        let s = parse_statement(
            r#"set(attributes["deployment.environment"], "prod") where resource.attributes["service.name"] == "checkout""#,
        )
        .unwrap();
        assert_eq!(s.editor.name, "set");
        assert_eq!(s.editor.args.len(), 2);
        assert_eq!(
            s.editor.args[0].value.kind,
            path(&["attributes"], vec![Key::Str("deployment.environment".into())])
        );
        assert_eq!(s.editor.args[1].value.kind, ExprKind::Literal(Literal::Str("prod".into())));
        let Some(BoolExpr::Compare(left, CmpOp::Eq, right)) = s.condition else { panic!("no comparison") };
        assert_eq!(left.kind, path(&["resource", "attributes"], vec![Key::Str("service.name".into())]));
        assert_eq!(left.column, 57);
        assert_eq!(right.kind, ExprKind::Literal(Literal::Str("checkout".into())));
    }

    #[test]
    fn parse_and_binds_tighter_than_or_with_not_and_parentheses() {
        let c =
            parse_condition(r#"name == "a" or kind == SPAN_KIND_SERVER and not (status.code != 2)"#).unwrap();
        let BoolExpr::Or(terms) = c else { panic!("expected or") };
        assert_eq!(terms.len(), 2);
        let BoolExpr::And(and) = &terms[1] else { panic!("expected and") };
        let BoolExpr::Compare(_, _, right) = &and[0] else { panic!("expected comparison") };
        assert_eq!(right.kind, ExprKind::Enum("SPAN_KIND_SERVER".into()));
        assert!(
            matches!(&and[1], BoolExpr::Not(inner) if matches!(**inner, BoolExpr::Compare(_, CmpOp::Ne, _)))
        );
    }

    #[test]
    fn parse_literals_escapes_negative_numbers_bytes_and_lists() {
        let s =
            parse_statement(r#"f(a, "q\"uo\\te\n\d", -42, 2.5, 0xDEad, nil, true, [1, "x"], [])"#).unwrap();
        let kinds: Vec<_> = s.editor.args.iter().map(|a| a.value.kind.clone()).collect();
        assert_eq!(kinds[1], ExprKind::Literal(Literal::Str("q\"uo\\te\n\\d".into())));
        assert_eq!(kinds[2], ExprKind::Literal(Literal::Int(-42)));
        assert_eq!(kinds[3], ExprKind::Literal(Literal::Float(2.5)));
        assert_eq!(kinds[4], ExprKind::Literal(Literal::Bytes(vec![0xde, 0xad])));
        assert_eq!(kinds[5], ExprKind::Literal(Literal::Nil));
        assert_eq!(kinds[6], ExprKind::Literal(Literal::Bool(true)));
        let ExprKind::List(items) = &kinds[7] else { panic!("expected list") };
        assert_eq!(items.len(), 2);
        assert_eq!(kinds[8], ExprKind::List(vec![]));
    }

    #[test]
    fn parse_named_arguments_and_nested_converters() {
        let s =
            parse_statement(r#"limit(attributes, limit = 10, priority_keys = [Concat(["a", name], "-")])"#)
                .unwrap();
        assert_eq!(s.editor.args[1].name.as_deref(), Some("limit"));
        assert_eq!(s.editor.args[2].name.as_deref(), Some("priority_keys"));
        let ExprKind::List(items) = &s.editor.args[2].value.kind else { panic!("expected list") };
        assert!(matches!(&items[0].kind, ExprKind::Converter(c) if c.name == "Concat" && c.args.len() == 2));
    }

    #[test]
    fn parse_nested_keys_and_indexes_in_paths() {
        let s = parse_statement(r#"set(body["user"]["roles"][0], "admin")"#).unwrap();
        let ExprKind::Path(p) = &s.editor.args[0].value.kind else { panic!("expected path") };
        assert_eq!(p.to_string(), r#"body["user"]["roles"][0]"#);
    }

    #[test]
    fn parse_missing_closing_paren_names_column_and_expectation() {
        let e = err(r#"set(name, "x""#);
        assert_eq!(e.column, 14);
        assert!(e.message.contains("expected `,` or `)`"), "{}", e.message);
        assert!(e.message.contains("end of the statement"), "{}", e.message);
    }

    #[test]
    fn parse_unterminated_string_points_at_its_opening_quote() {
        let e = err(r#"set(name, "abc)"#);
        assert_eq!(e.column, 11);
        assert!(e.message.contains("unterminated string"));
    }

    #[test]
    fn parse_single_equals_in_where_is_explained() {
        let e = err(r#"set(name, "x") where name = "y""#);
        assert_eq!(e.column, 27);
        assert!(e.message.contains("`==` compares"), "{}", e.message);
    }

    #[test]
    fn parse_trailing_tokens_after_statement_are_rejected() {
        let e = err(r#"set(name, "x") when name == "y""#);
        assert_eq!(e.column, 16);
        assert!(e.message.contains("expected `where` or the end, found `when`"), "{}", e.message);
    }

    #[test]
    fn parse_converter_as_statement_is_rejected() {
        let e = err(r#"Concat(["a"], "")"#);
        assert_eq!(e.column, 1);
        assert!(e.message.contains("converter `Concat`"));
    }

    #[test]
    fn parse_editor_as_value_is_rejected() {
        let e = err(r#"set(name, delete_key(attributes, "a"))"#);
        assert_eq!(e.column, 11);
        assert!(e.message.contains("cannot be used as a value"));
    }

    #[test]
    fn parse_arithmetic_is_rejected_with_a_hint() {
        let e = err(r#"set(attributes["x"], 1 + 2)"#);
        assert_eq!(e.column, 24);
        assert!(e.message.contains("arithmetic is not supported"));
    }

    #[test]
    fn parse_empty_where_clause_expects_a_condition() {
        let e = err(r#"set(name, "x") where"#);
        assert_eq!(e.column, 21);
        assert!(e.message.contains("expected a condition"));
    }

    #[test]
    fn parse_unclosed_parenthesis_in_where_names_column() {
        let e = err(r#"set(name, "x") where (name == "a" or name == "b""#);
        assert_eq!(e.column, 49);
        assert!(e.message.contains("`)`"));
    }

    #[test]
    fn parse_integer_overflow_and_odd_bytes_are_errors() {
        assert!(err("set(attributes[\"a\"], 99999999999999999999)").message.contains("64 bits"));
        assert_eq!(err("set(attributes[\"a\"], 0xabc)").column, 22);
    }

    #[test]
    fn parse_bad_key_inside_brackets_names_column() {
        let e = err("set(attributes[name], 1)");
        assert_eq!(e.column, 16);
        assert!(e.message.contains("string key or an index"));
    }

    #[test]
    fn parse_deep_nesting_is_refused_without_overflowing_the_stack() {
        let text = format!("set(name, \"x\") where {}true{}", "(".repeat(5000), ")".repeat(5000));
        assert!(err(&text).message.contains("nested more than"));
        let text = format!("set(name, \"x\") where {}true", "not ".repeat(2000));
        assert!(err(&text).message.contains("nested more than"));
    }

    #[test]
    fn parse_overlong_statement_is_refused() {
        let text = format!("set(name, \"{}\")", "x".repeat(MAX_STATEMENT_CHARS));
        assert!(err(&text).message.contains("longer than"));
    }

    #[test]
    fn parse_multibyte_text_counts_columns_in_characters() {
        let e = err("set(attributes[\"é\"], \"ü\" x)");
        assert_eq!(e.column, 26);
    }
}

//! Splits TraceQL text into tokens, each with its byte range.

use std::time::Duration;

use super::ast::{Attribute, AttributeScope, Intrinsic, is_attribute_char};
use super::error::{ParseError, ParseErrorKind};

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    AndAnd,
    OrOr,
    Bang,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    /// `=~`.
    Re,
    /// `!~`: a negated regex match inside filters, "not sibling" between spansets.
    NotRe,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    /// `>>`.
    GtGt,
    /// `<<`.
    LtLt,
    /// `~`.
    Tilde,
    /// `!>`.
    NotGt,
    /// `!>>`.
    NotGtGt,
    /// `!<`.
    NotLt,
    /// `!<<`.
    NotLtLt,
    /// `&>`.
    AmpGt,
    /// `&>>`.
    AmpGtGt,
    /// `&<`.
    AmpLt,
    /// `&<<`.
    AmpLtLt,
    /// `&~`.
    AmpTilde,
    /// A bare word: keyword, function name, literal keyword or unscoped intrinsic.
    Ident(String),
    Attribute(Attribute),
    /// `span:id` and the other colon forms.
    Intrinsic(Intrinsic),
    String(String),
    Int(i64),
    Float(f64),
    Duration(Duration),
    Eof,
}

/// A token and where it is in the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// Byte offset of the first character.
    pub(crate) start: usize,
    /// Byte offset just past the last character.
    pub(crate) end: usize,
}

/// Tokenizes `input`; the last token is always [`TokenKind::Eof`].
pub(crate) fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut lexer = Lexer { input, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_whitespace();
        let start = lexer.pos;
        let kind = lexer.next_kind().map_err(|(offset, kind)| ParseError::at(input, offset, kind))?;
        let done = kind == TokenKind::Eof;
        tokens.push(Token { kind, start, end: lexer.pos });
        if done {
            return Ok(tokens);
        }
    }
}

type LexResult<T> = Result<T, (usize, ParseErrorKind)>;

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

const SCOPES: [(&str, AttributeScope); 5] = [
    ("span", AttributeScope::Span),
    ("resource", AttributeScope::Resource),
    ("event", AttributeScope::Event),
    ("link", AttributeScope::Link),
    ("instrumentation", AttributeScope::Instrumentation),
];

const INTRINSIC_SCOPES: [&str; 5] = ["span", "trace", "event", "link", "instrumentation"];

/// Nanoseconds per duration unit.
const DURATION_UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn skip_whitespace(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    /// Consumes `s` when the input continues with it.
    fn eat(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn next_kind(&mut self) -> LexResult<TokenKind> {
        let start = self.pos;
        let Some(c) = self.peek() else { return Ok(TokenKind::Eof) };
        // Longest operators first.
        const OPERATORS: [(&str, TokenKind); 33] = [
            ("!>>", TokenKind::NotGtGt),
            ("!<<", TokenKind::NotLtLt),
            ("&>>", TokenKind::AmpGtGt),
            ("&<<", TokenKind::AmpLtLt),
            ("&&", TokenKind::AndAnd),
            ("||", TokenKind::OrOr),
            ("!=", TokenKind::Neq),
            ("!~", TokenKind::NotRe),
            ("!>", TokenKind::NotGt),
            ("!<", TokenKind::NotLt),
            ("&>", TokenKind::AmpGt),
            ("&<", TokenKind::AmpLt),
            ("&~", TokenKind::AmpTilde),
            ("=~", TokenKind::Re),
            (">>", TokenKind::GtGt),
            ("<<", TokenKind::LtLt),
            (">=", TokenKind::Gte),
            ("<=", TokenKind::Lte),
            ("{", TokenKind::LBrace),
            ("}", TokenKind::RBrace),
            ("(", TokenKind::LParen),
            (")", TokenKind::RParen),
            (",", TokenKind::Comma),
            ("|", TokenKind::Pipe),
            ("!", TokenKind::Bang),
            ("=", TokenKind::Eq),
            ("<", TokenKind::Lt),
            (">", TokenKind::Gt),
            ("~", TokenKind::Tilde),
            ("+", TokenKind::Plus),
            ("-", TokenKind::Minus),
            ("*", TokenKind::Star),
            ("/", TokenKind::Slash),
        ];
        for (text, kind) in OPERATORS {
            if self.eat(text) {
                return Ok(kind);
            }
        }
        match c {
            '%' => {
                self.pos += 1;
                Ok(TokenKind::Percent)
            }
            '^' => {
                self.pos += 1;
                Ok(TokenKind::Caret)
            }
            '"' => self.double_quoted().map(TokenKind::String),
            '`' => self.backquoted().map(TokenKind::String),
            '.' if self.peek_second().is_some_and(|c| c.is_ascii_digit()) => self.number(),
            '.' => {
                self.pos += 1;
                self.attribute_name(AttributeScope::Unscoped, start)
            }
            c if c.is_ascii_digit() => self.number(),
            c if c.is_ascii_alphabetic() || c == '_' => self.word(),
            c => Err((start, ParseErrorKind::UnexpectedChar(c))),
        }
    }

    fn word(&mut self) -> LexResult<TokenKind> {
        let start = self.pos;
        let len =
            self.rest().find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest().len());
        self.pos += len;
        let word = &self.input[start..self.pos];
        if self.peek() == Some('.')
            && let Some((_, scope)) = SCOPES.iter().find(|(name, _)| *name == word)
        {
            self.pos += 1;
            return self.attribute_name(*scope, start);
        }
        if self.peek() == Some(':')
            && let Some(scope) = INTRINSIC_SCOPES.iter().find(|name| **name == word)
        {
            self.pos += 1;
            let name_start = self.pos;
            let len = self
                .rest()
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(self.rest().len());
            self.pos += len;
            let name = &self.input[name_start..self.pos];
            return Intrinsic::from_scoped(scope, name)
                .map(TokenKind::Intrinsic)
                .ok_or_else(|| (start, ParseErrorKind::UnknownIntrinsic(format!("{scope}:{name}"))));
        }
        Ok(TokenKind::Ident(word.to_owned()))
    }

    /// The name after `span.`, `.`, …: quoted, or a run of attribute characters.
    fn attribute_name(&mut self, scope: AttributeScope, start: usize) -> LexResult<TokenKind> {
        let name = if self.peek() == Some('"') {
            self.double_quoted()?
        } else {
            let len = self.rest().find(|c: char| !is_attribute_char(c)).unwrap_or(self.rest().len());
            if len == 0 {
                return Err((start, ParseErrorKind::MissingAttributeName(scope.prefix())));
            }
            self.pos += len;
            self.input[self.pos - len..self.pos].to_owned()
        };
        Ok(TokenKind::Attribute(Attribute { scope, name }))
    }

    /// `"…"` with backslash escapes.
    fn double_quoted(&mut self) -> LexResult<String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else { return Err((start, ParseErrorKind::UnterminatedString)) };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(out),
                '\\' => out.push(self.escape(self.pos - 1)?),
                c => out.push(c),
            }
        }
    }

    /// The character an escape stands for; the backslash is already consumed.
    fn escape(&mut self, backslash: usize) -> LexResult<char> {
        let Some(c) = self.peek() else { return Err((backslash, ParseErrorKind::UnterminatedString)) };
        self.pos += c.len_utf8();
        let hex = |lexer: &mut Self, digits: usize| -> LexResult<char> {
            let text: String = lexer.rest().chars().take(digits).collect();
            let bad = || (backslash, ParseErrorKind::InvalidEscape(format!("\\{c}{text}")));
            if text.len() != digits || !text.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            lexer.pos += digits;
            u32::from_str_radix(&text, 16).ok().and_then(char::from_u32).ok_or_else(bad)
        };
        match c {
            '"' => Ok('"'),
            '\'' => Ok('\''),
            '\\' => Ok('\\'),
            '/' => Ok('/'),
            'n' => Ok('\n'),
            'r' => Ok('\r'),
            't' => Ok('\t'),
            '0' => Ok('\0'),
            'x' => hex(self, 2),
            'u' => hex(self, 4),
            'U' => hex(self, 8),
            c => Err((backslash, ParseErrorKind::InvalidEscape(format!("\\{c}")))),
        }
    }

    /// `` `…` `` without escapes.
    fn backquoted(&mut self) -> LexResult<String> {
        let start = self.pos;
        let body = &self.input[start + 1..];
        let Some(len) = body.find('`') else { return Err((start, ParseErrorKind::UnterminatedString)) };
        self.pos = start + 1 + len + 1;
        Ok(body[..len].to_owned())
    }

    fn digits(&mut self) -> usize {
        let len = self.rest().find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest().len());
        self.pos += len;
        len
    }

    /// An integer, float or duration.
    fn number(&mut self) -> LexResult<TokenKind> {
        let start = self.pos;
        self.digits();
        let mut is_float = false;
        if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            self.digits();
            is_float = true;
        }
        let mantissa_end = self.pos;
        if matches!(self.peek(), Some('e' | 'E')) {
            let save = self.pos;
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.digits() > 0 {
                is_float = true;
            } else {
                self.pos = save;
            }
        }
        let at_unit = self.peek().is_some_and(|c| c.is_alphabetic());
        if at_unit && self.pos == mantissa_end {
            return self.duration(start);
        }
        if at_unit || self.peek().is_some_and(|c| c == '_' || c == '.') {
            let len = self
                .rest()
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(self.rest().len());
            self.pos += len;
            return Err((start, ParseErrorKind::InvalidNumber(self.input[start..self.pos].to_owned())));
        }
        let text = &self.input[start..self.pos];
        let invalid = || (start, ParseErrorKind::InvalidNumber(text.to_owned()));
        if is_float {
            let x: f64 = text.parse().map_err(|_| invalid())?;
            if x.is_finite() { Ok(TokenKind::Float(x)) } else { Err(invalid()) }
        } else {
            text.parse::<i64>().map(TokenKind::Int).map_err(|_| invalid())
        }
    }

    /// A duration such as `1.5s` or `1h30m`; `self.pos` is at the first unit, `start` at the
    /// first digit.
    fn duration(&mut self, start: usize) -> LexResult<TokenKind> {
        let mut total: u128 = 0;
        let mut component_start = start;
        loop {
            let input = self.input;
            let number = &input[component_start..self.pos];
            let unit_len = self.rest().find(|c: char| !c.is_alphabetic()).unwrap_or(self.rest().len());
            let unit = &input[self.pos..self.pos + unit_len];
            self.pos += unit_len;
            let invalid = |lexer: &Self| {
                let len = lexer
                    .rest()
                    .find(|c: char| !(c.is_alphanumeric() || c == '.'))
                    .unwrap_or(lexer.rest().len());
                (start, ParseErrorKind::InvalidDuration(lexer.input[start..lexer.pos + len].to_owned()))
            };
            let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
                return Err(invalid(self));
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            let mut nanos = whole.parse::<u128>().ok().and_then(|w| w.checked_mul(scale));
            // Digits past the nanosecond are dropped.
            let mut place = scale;
            for d in fraction.bytes() {
                place /= 10;
                nanos = nanos.map(|n| n + u128::from(d - b'0') * place);
            }
            total = match nanos.and_then(|n| total.checked_add(n)) {
                Some(t) if t <= i64::MAX as u128 => t,
                _ => return Err(invalid(self)),
            };
            if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
                break;
            }
            component_start = self.pos;
            self.digits();
            if self.peek() == Some('.') && self.peek_second().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
                self.digits();
            }
            if !self.peek().is_some_and(|c| c.is_alphabetic()) {
                return Err(invalid(self));
            }
        }
        if self.peek().is_some_and(|c| c == '_' || c == '.') {
            let len = self
                .rest()
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(self.rest().len());
            let text = self.input[start..self.pos + len].to_owned();
            return Err((start, ParseErrorKind::InvalidDuration(text)));
        }
        let nanos =
            u64::try_from(total).map_err(|_| (start, ParseErrorKind::InvalidDuration(String::new())))?;
        Ok(TokenKind::Duration(Duration::from_nanos(nanos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(input: &str) -> Vec<TokenKind> {
        tokenize(input).unwrap_or_else(|e| panic!("{input:?}: {e}")).into_iter().map(|t| t.kind).collect()
    }

    fn lex_error(input: &str) -> ParseError {
        match tokenize(input) {
            Ok(t) => panic!("{input:?} lexed as {t:?}"),
            Err(e) => e,
        }
    }

    fn attr(scope: AttributeScope, name: &str) -> TokenKind {
        TokenKind::Attribute(Attribute::new(scope, name))
    }

    #[test]
    fn tokenize_operators_longest_match_wins() {
        assert_eq!(
            kinds("!>> !<< &>> &<< && || != !~ !> !< &> &< &~ =~ >> << >= <= = < > ~ !"),
            vec![
                TokenKind::NotGtGt,
                TokenKind::NotLtLt,
                TokenKind::AmpGtGt,
                TokenKind::AmpLtLt,
                TokenKind::AndAnd,
                TokenKind::OrOr,
                TokenKind::Neq,
                TokenKind::NotRe,
                TokenKind::NotGt,
                TokenKind::NotLt,
                TokenKind::AmpGt,
                TokenKind::AmpLt,
                TokenKind::AmpTilde,
                TokenKind::Re,
                TokenKind::GtGt,
                TokenKind::LtLt,
                TokenKind::Gte,
                TokenKind::Lte,
                TokenKind::Eq,
                TokenKind::Lt,
                TokenKind::Gt,
                TokenKind::Tilde,
                TokenKind::Bang,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn tokenize_scoped_attributes_keep_dotted_names() {
        assert_eq!(
            kinds("span.http.status_code resource.service.name .foo event.x link.y instrumentation.z"),
            vec![
                attr(AttributeScope::Span, "http.status_code"),
                attr(AttributeScope::Resource, "service.name"),
                attr(AttributeScope::Unscoped, "foo"),
                attr(AttributeScope::Event, "x"),
                attr(AttributeScope::Link, "y"),
                attr(AttributeScope::Instrumentation, "z"),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn tokenize_attribute_name_stops_at_delimiters_and_keeps_dashes_and_slashes() {
        assert_eq!(
            kinds(".http.request.header.x-forwarded-for=resource.k8s.label.app.kubernetes.io/name}"),
            vec![
                attr(AttributeScope::Unscoped, "http.request.header.x-forwarded-for"),
                TokenKind::Eq,
                attr(AttributeScope::Resource, "k8s.label.app.kubernetes.io/name"),
                TokenKind::RBrace,
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn tokenize_quoted_attribute_name_allows_spaces_and_escapes() {
        assert_eq!(
            kinds(r#"span."name with spaces" ."a\"b""#),
            vec![
                attr(AttributeScope::Span, "name with spaces"),
                attr(AttributeScope::Unscoped, "a\"b"),
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn tokenize_colon_intrinsics_resolve_to_intrinsics() {
        assert_eq!(
            kinds("span:name trace:rootService trace:duration span:id trace:id"),
            vec![
                TokenKind::Intrinsic(Intrinsic::Name),
                TokenKind::Intrinsic(Intrinsic::RootServiceName),
                TokenKind::Intrinsic(Intrinsic::TraceDuration),
                TokenKind::Intrinsic(Intrinsic::SpanId),
                TokenKind::Intrinsic(Intrinsic::TraceId),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn tokenize_unknown_colon_intrinsic_is_an_error_at_its_start() {
        let e = lex_error("{ span:bogus = 1 }");
        assert!(matches!(e.kind, ParseErrorKind::UnknownIntrinsic(ref n) if n == "span:bogus"), "{e}");
        assert_eq!(e.column, 3);
    }

    #[test]
    fn tokenize_numbers_floats_and_durations() {
        assert_eq!(
            kinds("42 1.5 .9 1e3 2.5E-2 100ms 1.5s 2m 1h 10us 5ns 3µs 1h30m"),
            vec![
                TokenKind::Int(42),
                TokenKind::Float(1.5),
                TokenKind::Float(0.9),
                TokenKind::Float(1000.0),
                TokenKind::Float(0.025),
                TokenKind::Duration(Duration::from_millis(100)),
                TokenKind::Duration(Duration::from_millis(1500)),
                TokenKind::Duration(Duration::from_secs(120)),
                TokenKind::Duration(Duration::from_secs(3600)),
                TokenKind::Duration(Duration::from_micros(10)),
                TokenKind::Duration(Duration::from_nanos(5)),
                TokenKind::Duration(Duration::from_micros(3)),
                TokenKind::Duration(Duration::from_secs(5400)),
                TokenKind::Eof,
            ]
        );
    }

    #[test]
    fn tokenize_fractional_duration_is_exact() {
        assert_eq!(kinds("0.001s")[0], TokenKind::Duration(Duration::from_millis(1)));
        assert_eq!(kinds("1.000000001s")[0], TokenKind::Duration(Duration::from_nanos(1_000_000_001)));
    }

    #[test]
    fn tokenize_bad_numbers_and_units_are_errors() {
        for input in ["1x", "10sec", "1.5.5", "99999999999999999999", "1e999", "1h30", "3_000", "9999999999h"]
        {
            let e = lex_error(input);
            assert_eq!(e.offset, 0, "{input}: {e}");
            assert!(
                matches!(e.kind, ParseErrorKind::InvalidNumber(_) | ParseErrorKind::InvalidDuration(_)),
                "{input}: {e}"
            );
        }
    }

    #[test]
    fn tokenize_strings_handle_escapes_and_raw_backticks() {
        assert_eq!(
            kinds(r#""a\"b\\c\n\t\u00e9" `raw \d+ "x"`"#),
            vec![
                TokenKind::String("a\"b\\c\n\té".into()),
                TokenKind::String(r#"raw \d+ "x""#.into()),
                TokenKind::Eof
            ]
        );
    }

    #[test]
    fn tokenize_unterminated_string_points_at_opening_quote() {
        let e = lex_error(r#"{ name = "abc }"#);
        assert!(matches!(e.kind, ParseErrorKind::UnterminatedString));
        assert_eq!((e.line, e.column), (1, 10));
        let e = lex_error("{ name = `abc }");
        assert_eq!((e.line, e.column), (1, 10));
    }

    #[test]
    fn tokenize_bad_escape_is_an_error() {
        let e = lex_error(r#""\q""#);
        assert!(matches!(e.kind, ParseErrorKind::InvalidEscape(_)), "{e}");
        let e = lex_error(r#""\u12""#);
        assert!(matches!(e.kind, ParseErrorKind::InvalidEscape(_)), "{e}");
    }

    #[test]
    fn tokenize_lone_ampersand_and_unknown_characters_are_errors() {
        assert!(matches!(lex_error("{ } & { }").kind, ParseErrorKind::UnexpectedChar('&')));
        assert!(matches!(lex_error("{ .a = 1 ; }").kind, ParseErrorKind::UnexpectedChar(';')));
        assert!(matches!(lex_error("span. = 1").kind, ParseErrorKind::MissingAttributeName("span.")));
    }

    #[test]
    fn tokenize_positions_count_lines_and_characters() {
        let e = lex_error("{\n  name = \"é\" ;\n}");
        assert_eq!((e.line, e.column), (2, 14));
        assert_eq!(e.offset, 16);
    }
}

//! Splits a LogQL query into tokens.
//!
//! Strings are unescaped here (double-quoted with Go escapes, or backtick raw strings), and
//! words that start with a digit become a number, a duration (`5m`) or a byte size (`20KB`).
//! `#` starts a comment that runs to the end of the line.

use std::time::Duration;

use super::bytesize::parse_bytes;
use super::duration::parse_duration;
use super::error::{ParseError, ParseErrorKind};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A name or keyword; its text is `input[start..end]`.
    Ident,
    /// A string literal, unescaped.
    Str(String),
    Number(f64),
    Duration(Duration),
    Bytes(u64),
    /// `--strict`, `--keep-empty`; its text is `input[start..end]`.
    Flag,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    /// `=`
    Eq,
    /// `==`
    EqEq,
    /// `!=`
    Neq,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `|=`
    PipeEq,
    /// `|~`
    PipeRe,
    /// `|>`
    PipePattern,
    /// `!>`
    NotPattern,
    /// `|`
    Pipe,
    Gt,
    Gte,
    Lt,
    Lte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Tokenizes the whole input; the last token is always [`Tok::Eof`].
pub(crate) fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    Lexer { input, pos: 0 }.run()
}

struct Lexer<'a> {
    input: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn error(&self, position: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::new(self.input, position, kind)
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.input[self.pos..].chars();
        chars.next();
        chars.next()
    }

    fn run(mut self) -> Result<Vec<Token>, ParseError> {
        let mut tokens = Vec::new();
        loop {
            self.skip_space_and_comments();
            let start = self.pos;
            let Some(c) = self.peek() else {
                tokens.push(Token { tok: Tok::Eof, start, end: start });
                return Ok(tokens);
            };
            let tok = match c {
                '"' => self.double_quoted()?,
                '`' => self.raw_string()?,
                c if c.is_ascii_digit() => self.numeric()?,
                '.' if self.peek_second().is_some_and(|c| c.is_ascii_digit()) => self.numeric()?,
                c if c.is_ascii_alphabetic() || c == '_' => {
                    self.pos += self.input[start..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(self.input.len() - start);
                    Tok::Ident
                }
                '-' if self.input[start..].starts_with("--")
                    && self.input[start + 2..].starts_with(|c: char| c.is_ascii_alphabetic()) =>
                {
                    self.pos += 2;
                    self.pos += self.input[self.pos..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                        .unwrap_or(self.input.len() - self.pos);
                    Tok::Flag
                }
                _ => self.punctuation(c)?,
            };
            tokens.push(Token { tok, start, end: self.pos });
        }
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            let rest = &self.input[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with('#') {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    fn punctuation(&mut self, c: char) -> Result<Tok, ParseError> {
        let rest = &self.input[self.pos..];
        let two = [
            ("==", Tok::EqEq),
            ("!=", Tok::Neq),
            ("=~", Tok::Re),
            ("!~", Tok::Nre),
            ("|=", Tok::PipeEq),
            ("|~", Tok::PipeRe),
            ("|>", Tok::PipePattern),
            ("!>", Tok::NotPattern),
            (">=", Tok::Gte),
            ("<=", Tok::Lte),
        ];
        for (text, tok) in two {
            if rest.starts_with(text) {
                self.pos += 2;
                return Ok(tok);
            }
        }
        let tok = match c {
            '{' => Tok::LBrace,
            '}' => Tok::RBrace,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '=' => Tok::Eq,
            '|' => Tok::Pipe,
            '>' => Tok::Gt,
            '<' => Tok::Lt,
            '+' => Tok::Add,
            '-' => Tok::Sub,
            '*' => Tok::Mul,
            '/' => Tok::Div,
            '%' => Tok::Mod,
            '^' => Tok::Pow,
            other => return Err(self.error(self.pos, ParseErrorKind::UnexpectedChar(other))),
        };
        self.pos += c.len_utf8();
        Ok(tok)
    }

    /// A number (`5`, `0.99`, `1e3`), duration (`5m`, `1h30m`) or byte size (`20KB`).
    fn numeric(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let rest = &self.input[start..];
        let word_len =
            rest.find(|c: char| !(c.is_alphanumeric() || c == '.' || c == '_')).unwrap_or(rest.len());
        // An exponent may carry a sign: `1e-3`.
        let mut word = &rest[..word_len];
        let bytes = rest.as_bytes();
        if word_len > 1
            && matches!(bytes[word_len - 1], b'e' | b'E')
            && matches!(bytes.get(word_len), Some(b'+' | b'-'))
            && bytes.get(word_len + 1).is_some_and(u8::is_ascii_digit)
        {
            let exp_rest = &rest[word_len + 1..];
            let exp_len = exp_rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(exp_rest.len());
            word = &rest[..word_len + 1 + exp_len];
        }
        self.pos += word.len();
        if is_plain_number(word) {
            let value: f64 = word
                .parse()
                .map_err(|_| self.error(start, ParseErrorKind::InvalidNumber { text: word.to_string() }))?;
            if !value.is_finite() {
                return Err(self.error(start, ParseErrorKind::NumberOutOfRange { text: word.to_string() }));
            }
            return Ok(Tok::Number(value));
        }
        if let Some(duration) = parse_duration(word) {
            return Ok(Tok::Duration(duration));
        }
        if let Some(bytes) = parse_bytes(word) {
            return Ok(Tok::Bytes(bytes));
        }
        Err(self.error(start, ParseErrorKind::InvalidNumber { text: word.to_string() }))
    }

    fn raw_string(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let body = &self.input[start + 1..];
        let Some(len) = body.find('`') else {
            return Err(self.error(start, ParseErrorKind::UnterminatedString));
        };
        self.pos = start + 1 + len + 1;
        Ok(Tok::Str(body[..len].to_string()))
    }

    fn double_quoted(&mut self) -> Result<Tok, ParseError> {
        let start = self.pos;
        let mut out: Vec<u8> = Vec::new();
        let mut chars = self.input[start + 1..].char_indices();
        loop {
            let Some((offset, c)) = chars.next() else {
                return Err(self.error(start, ParseErrorKind::UnterminatedString));
            };
            match c {
                '"' => {
                    self.pos = start + 1 + offset + 1;
                    let text = String::from_utf8(out)
                        .map_err(|_| self.error(start, ParseErrorKind::InvalidUtf8String))?;
                    return Ok(Tok::Str(text));
                }
                '\\' => {
                    let escape_at = start + 1 + offset;
                    let invalid = |reason| self.error(escape_at, ParseErrorKind::InvalidEscape { reason });
                    let Some((_, e)) = chars.next() else {
                        return Err(self.error(start, ParseErrorKind::UnterminatedString));
                    };
                    let simple = match e {
                        'a' => Some(0x07),
                        'b' => Some(0x08),
                        'f' => Some(0x0c),
                        'n' => Some(b'\n'),
                        'r' => Some(b'\r'),
                        't' => Some(b'\t'),
                        'v' => Some(0x0b),
                        '\\' => Some(b'\\'),
                        '"' => Some(b'"'),
                        _ => None,
                    };
                    if let Some(byte) = simple {
                        out.push(byte);
                        continue;
                    }
                    let mut take = |count: usize, radix: u32| -> Option<u32> {
                        let mut value: u32 = 0;
                        for _ in 0..count {
                            let (_, d) = chars.next()?;
                            value = value.checked_mul(radix)?.checked_add(d.to_digit(radix)?)?;
                        }
                        Some(value)
                    };
                    match e {
                        'x' => {
                            let value = take(2, 16).ok_or_else(|| invalid("\\x needs two hex digits"))?;
                            out.push(value as u8);
                        }
                        '0'..='7' => {
                            let first = e.to_digit(8).unwrap_or(0);
                            let rest =
                                take(2, 8).ok_or_else(|| invalid("octal escape needs three digits"))?;
                            let value = first * 64 + rest;
                            let byte =
                                u8::try_from(value).map_err(|_| invalid("octal escape above \\377"))?;
                            out.push(byte);
                        }
                        'u' | 'U' => {
                            let count = if e == 'u' { 4 } else { 8 };
                            let value = take(count, 16).ok_or_else(|| invalid("\\u needs hex digits"))?;
                            let c =
                                char::from_u32(value).ok_or_else(|| invalid("not a unicode scalar value"))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => {
                            return Err(invalid(
                                "unknown escape; write \\\\ for a backslash or use a `backtick` string",
                            ));
                        }
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

fn is_plain_number(word: &str) -> bool {
    let mantissa_end = word.find(['e', 'E']).unwrap_or(word.len());
    let (mantissa, exponent) = word.split_at(mantissa_end);
    let mantissa_ok = !mantissa.is_empty()
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.matches('.').count() <= 1
        && mantissa.bytes().any(|b| b.is_ascii_digit());
    let exponent_ok = match exponent.get(1..) {
        None => true,
        Some(digits) => {
            let digits = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mantissa_ok && exponent_ok
}

/// Quotes `value` so that the lexer reads it back unchanged.
pub(crate) fn quote(value: &str, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    use std::fmt::Write;
    f.write_char('"')?;
    for c in value.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(input: &str) -> Vec<Tok> {
        tokenize(input).expect("valid input").into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn tokenize_selector_yields_punctuation_and_strings() {
        assert_eq!(
            toks(r#"{app="x", env=~`a|b`}"#),
            vec![
                Tok::LBrace,
                Tok::Ident,
                Tok::Eq,
                Tok::Str("x".into()),
                Tok::Comma,
                Tok::Ident,
                Tok::Re,
                Tok::Str("a|b".into()),
                Tok::RBrace,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn tokenize_two_char_operators_win_over_one_char() {
        assert_eq!(
            toks("|= |~ |> !> != !~ == =~ >= <= | = > <"),
            vec![
                Tok::PipeEq,
                Tok::PipeRe,
                Tok::PipePattern,
                Tok::NotPattern,
                Tok::Neq,
                Tok::Nre,
                Tok::EqEq,
                Tok::Re,
                Tok::Gte,
                Tok::Lte,
                Tok::Pipe,
                Tok::Eq,
                Tok::Gt,
                Tok::Lt,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn tokenize_numeric_words_are_classified() {
        assert_eq!(
            toks("5 0.99 1e3 2.5E-2 5m 1h30m 250ms 20KB 1MiB"),
            vec![
                Tok::Number(5.0),
                Tok::Number(0.99),
                Tok::Number(1000.0),
                Tok::Number(0.025),
                Tok::Duration(Duration::from_secs(300)),
                Tok::Duration(Duration::from_secs(5400)),
                Tok::Duration(Duration::from_millis(250)),
                Tok::Bytes(20_000),
                Tok::Bytes(1 << 20),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn tokenize_double_dash_before_letter_is_flag_else_minus() {
        assert_eq!(toks("--strict"), vec![Tok::Flag, Tok::Eof]);
        assert_eq!(toks("1--1"), vec![Tok::Number(1.0), Tok::Sub, Tok::Sub, Tok::Number(1.0), Tok::Eof]);
    }

    #[test]
    fn tokenize_escapes_are_decoded() {
        assert_eq!(
            toks(r#""a\"b\\c\n\t\x41\101\u00e9\U0001F600""#),
            vec![Tok::Str("a\"b\\c\n\tAAé😀".into()), Tok::Eof]
        );
    }

    #[test]
    fn tokenize_comment_runs_to_end_of_line() {
        assert_eq!(toks("{ # comment\n}"), vec![Tok::LBrace, Tok::RBrace, Tok::Eof]);
    }

    #[test]
    fn tokenize_unknown_escape_reports_its_position() {
        let err = tokenize(r#"|~ "a\d""#).expect_err("bad escape");
        assert_eq!(err.position, 5);
        assert!(matches!(err.kind, ParseErrorKind::InvalidEscape { .. }));
    }

    #[test]
    fn tokenize_unterminated_string_reports_its_start() {
        let err = tokenize(r#"{a="b}"#).expect_err("unterminated");
        assert_eq!((err.position, err.kind), (3, ParseErrorKind::UnterminatedString));
        let err = tokenize("{a=`b}").expect_err("unterminated");
        assert_eq!(err.position, 3);
    }

    #[test]
    fn tokenize_invalid_utf8_escape_is_error() {
        let err = tokenize(r#""\xff""#).expect_err("invalid utf-8");
        assert_eq!(err.kind, ParseErrorKind::InvalidUtf8String);
    }

    #[test]
    fn tokenize_bad_numeric_word_is_error() {
        let err = tokenize("[5x]").expect_err("bad duration");
        assert_eq!(err.position, 1);
        assert_eq!(err.kind, ParseErrorKind::InvalidNumber { text: "5x".into() });
        assert!(matches!(
            tokenize("1e999").expect_err("overflow").kind,
            ParseErrorKind::NumberOutOfRange { .. }
        ));
    }

    #[test]
    fn tokenize_stray_character_is_error() {
        let err = tokenize("{a=\"b\"} ; ").expect_err("stray");
        assert_eq!((err.position, err.kind), (8, ParseErrorKind::UnexpectedChar(';')));
    }
}

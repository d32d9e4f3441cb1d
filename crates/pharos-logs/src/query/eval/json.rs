//! The `json` and `unpack` parsers: a small JSON reader over the line that borrows every
//! string without escapes and never builds a document tree.

use std::borrow::Cow;

use super::EvalError;
use super::labels::{LabelState, sanitize_label_name};

/// Nesting deeper than this is an error (no stack overflow on hostile lines).
const MAX_DEPTH: usize = 128;

/// Why a line is not the JSON expected; the text goes into `__error_details__`.
#[derive(Debug)]
pub(super) struct JsonError(pub(super) String);

type Result<T> = std::result::Result<T, JsonError>;

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn error<T>(&self, what: &str) -> Result<T> {
        Err(JsonError(format!("{what} at offset {}", self.pos)))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        if self.eat(b) { Ok(()) } else { self.error(&format!("expected '{}'", b as char)) }
    }

    /// A string at the cursor, unescaped.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        let bytes = self.bytes();
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'"' => {
                    let s = &self.text[start..self.pos];
                    self.pos += 1;
                    return Ok(Cow::Borrowed(s));
                }
                b'\\' => break,
                0..=0x1f => return self.error("control character in string"),
                _ => self.pos += 1,
            }
        }
        if self.pos >= bytes.len() {
            return self.error("unterminated string");
        }
        let mut out = String::from(&self.text[start..self.pos]);
        loop {
            let Some(&b) = bytes.get(self.pos) else { return self.error("unterminated string") };
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    self.pos += 1;
                    let Some(&esc) = bytes.get(self.pos) else { return self.error("unterminated string") };
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let first = self.hex4()?;
                            let c = if (0xd800..0xdc00).contains(&first) {
                                if self.text[self.pos..].starts_with("\\u") {
                                    let save = self.pos;
                                    self.pos += 2;
                                    let second = self.hex4()?;
                                    if (0xdc00..0xe000).contains(&second) {
                                        char::from_u32(0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00))
                                    } else {
                                        self.pos = save;
                                        None
                                    }
                                } else {
                                    None
                                }
                            } else {
                                char::from_u32(first)
                            };
                            out.push(c.unwrap_or('\u{fffd}'));
                        }
                        _ => return self.error("invalid escape"),
                    }
                }
                0..=0x1f => return self.error("control character in string"),
                _ => {
                    // Copy the run up to the next quote or backslash (UTF-8 safe: both ASCII).
                    let run_end = bytes[self.pos..]
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                        .map_or(bytes.len(), |i| self.pos + i);
                    out.push_str(&self.text[self.pos..run_end]);
                    self.pos = run_end;
                }
            }
        }
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.text.get(self.pos..self.pos + 4).unwrap_or("");
        match u32::from_str_radix(digits, 16) {
            Ok(v) if digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.pos += 4;
                Ok(v)
            }
            _ => self.error("invalid \\u escape"),
        }
    }

    /// A number at the cursor, as written.
    fn number(&mut self) -> Result<&'a str> {
        let start = self.pos;
        self.eat(b'-');
        let int_start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos == int_start {
            return self.error("invalid value");
        }
        if self.eat(b'.') {
            let frac_start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.pos == frac_start {
                return self.error("invalid number");
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            let exp_start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            if self.pos == exp_start {
                return self.error("invalid number");
            }
        }
        Ok(&self.text[start..self.pos])
    }

    fn word(&mut self, word: &'static str) -> Result<&'static str> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(word)
        } else {
            self.error("invalid value")
        }
    }

    /// Skips the value at the cursor.
    fn skip_value(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return self.error("nesting too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                self.ws();
                if self.eat(b'}') {
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(b'}');
                }
            }
            Some(b'[') => {
                self.pos += 1;
                self.ws();
                if self.eat(b']') {
                    return Ok(());
                }
                loop {
                    self.skip_value(depth + 1)?;
                    self.ws();
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(b']');
                }
            }
            Some(b'"') => self.string().map(drop),
            Some(b't') => self.word("true").map(drop),
            Some(b'f') => self.word("false").map(drop),
            Some(b'n') => self.word("null").map(drop),
            _ => self.number().map(drop),
        }
    }

    /// The value at the cursor as a label value: strings unescaped, numbers and booleans as
    /// written, objects and arrays as their JSON text, `null` as `None`.
    fn value_text(&mut self, depth: usize) -> Result<Option<Cow<'a, str>>> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(Some),
            Some(b'{' | b'[') => {
                let start = self.pos;
                self.skip_value(depth)?;
                Ok(Some(Cow::Borrowed(&self.text[start..self.pos])))
            }
            Some(b't') => self.word("true").map(|w| Some(Cow::Borrowed(w))),
            Some(b'f') => self.word("false").map(|w| Some(Cow::Borrowed(w))),
            Some(b'n') => self.word("null").map(|_| None),
            _ => self.number().map(|n| Some(Cow::Borrowed(n))),
        }
    }

    /// Calls `field` for each key of the object at the cursor, with the cursor on its value;
    /// `field` must consume the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, Cow<'a, str>) -> Result<()>) -> Result<()> {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            if self.eat(b',') {
                continue;
            }
            return self.expect(b'}');
        }
    }
}

/// `| json`: every field of the object, nested keys joined with `_`, arrays and `null`
/// skipped. On an error nothing is extracted.
pub(super) fn parse_all(line: &str, state: &mut LabelState) -> Result<()> {
    let mark = state.mark();
    let mut prefix = String::new();
    let mut cursor = Cursor::new(line);
    let result = flatten(&mut cursor, &mut prefix, state, 0);
    if result.is_err() {
        state.rollback(mark);
    }
    result
}

fn flatten(cursor: &mut Cursor<'_>, prefix: &mut String, state: &mut LabelState, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return cursor.error("nesting too deep");
    }
    cursor.object(|cursor, key| {
        let saved = prefix.len();
        let part = sanitize_part(&key);
        if !prefix.is_empty() && !part.is_empty() {
            prefix.push('_');
        }
        prefix.push_str(&part);
        let result = match cursor.peek() {
            Some(b'{') => flatten(cursor, prefix, state, depth + 1),
            Some(b'[') => cursor.skip_value(depth + 1),
            _ => match cursor.value_text(depth + 1) {
                Ok(Some(value)) => {
                    state.add_parsed(&sanitize_label_name(prefix), &value);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
        };
        prefix.truncate(saved);
        result
    })
}

/// A key of a nested object, trimmed, with characters that cannot be in a label name
/// replaced by `_` (the leading-digit rule applies to the joined name).
fn sanitize_part(key: &str) -> Cow<'_, str> {
    let key = key.trim();
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if key.chars().all(valid) {
        Cow::Borrowed(key)
    } else {
        Cow::Owned(key.chars().map(|c| if valid(c) { c } else { '_' }).collect())
    }
}

/// One step of a `json` parameter's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PathStep {
    Key(String),
    Index(usize),
}

/// Parses `a.b[0]["c d"]`.
pub(super) fn parse_path(path: &str) -> std::result::Result<Vec<PathStep>, EvalError> {
    let invalid = || EvalError::InvalidJsonPath { path: path.to_owned() };
    let bytes = path.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    let mut expect_key = true;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                i += 1;
                expect_key = true;
            }
            b'[' => {
                i += 1;
                match bytes.get(i) {
                    Some(&quote @ (b'"' | b'\'')) => {
                        i += 1;
                        let mut key = String::new();
                        loop {
                            match bytes.get(i) {
                                None => return Err(invalid()),
                                Some(&b) if b == quote => break,
                                Some(b'\\') => {
                                    let c = path[i + 1..].chars().next().ok_or_else(invalid)?;
                                    key.push(c);
                                    i += 1 + c.len_utf8();
                                }
                                Some(_) => {
                                    let c = path[i..].chars().next().ok_or_else(invalid)?;
                                    key.push(c);
                                    i += c.len_utf8();
                                }
                            }
                        }
                        i += 1;
                        steps.push(PathStep::Key(key));
                    }
                    _ => {
                        let start = i;
                        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                            i += 1;
                        }
                        let index = path[start..i].parse().map_err(|_| invalid())?;
                        steps.push(PathStep::Index(index));
                    }
                }
                if bytes.get(i) != Some(&b']') {
                    return Err(invalid());
                }
                i += 1;
                expect_key = false;
            }
            _ if expect_key => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'.' && bytes[i] != b'[' {
                    i += 1;
                }
                steps.push(PathStep::Key(path[start..i].to_owned()));
                expect_key = false;
            }
            _ => return Err(invalid()),
        }
    }
    if steps.is_empty() {
        return Err(invalid());
    }
    Ok(steps)
}

/// The value at `path` in the JSON `line`; `Ok(None)` when the path is not there.
pub(super) fn extract_path<'a>(line: &'a str, path: &[PathStep]) -> Result<Option<Cow<'a, str>>> {
    let mut cursor = Cursor::new(line);
    cursor.ws();
    if cursor.peek() != Some(b'{') {
        return cursor.error("expected '{'");
    }
    let Some((first, rest)) = path.split_first() else { return Ok(None) };
    descend(&mut cursor, first, rest, 0)
}

fn descend<'a>(
    cursor: &mut Cursor<'a>,
    step: &PathStep,
    rest: &[PathStep],
    depth: usize,
) -> Result<Option<Cow<'a, str>>> {
    if depth > MAX_DEPTH {
        return cursor.error("nesting too deep");
    }
    cursor.ws();
    match step {
        PathStep::Key(want) => {
            if cursor.peek() != Some(b'{') {
                cursor.skip_value(depth)?;
                return Ok(None);
            }
            let mut found: Option<Option<Cow<'a, str>>> = None;
            cursor.object(|cursor, key| {
                if found.is_none() && key == want.as_str() {
                    found = Some(match rest.split_first() {
                        Some((next, rest)) => descend(cursor, next, rest, depth + 1)?,
                        None => cursor.value_text(depth + 1)?,
                    });
                    Ok(())
                } else {
                    cursor.skip_value(depth + 1)
                }
            })?;
            Ok(found.flatten())
        }
        PathStep::Index(want) => {
            if cursor.peek() != Some(b'[') {
                cursor.skip_value(depth)?;
                return Ok(None);
            }
            cursor.pos += 1;
            cursor.ws();
            if cursor.eat(b']') {
                return Ok(None);
            }
            let mut found = None;
            let mut index = 0;
            loop {
                if index == *want {
                    found = match rest.split_first() {
                        Some((next, rest)) => descend(cursor, next, rest, depth + 1)?,
                        None => cursor.value_text(depth + 1)?,
                    };
                } else {
                    cursor.skip_value(depth + 1)?;
                }
                index += 1;
                cursor.ws();
                if cursor.eat(b',') {
                    continue;
                }
                cursor.expect(b']')?;
                return Ok(found);
            }
        }
    }
}

/// `| unpack`: when the object has an `_entry` string, adds its other string fields as
/// labels and returns `_entry` as the new line; otherwise changes nothing.
pub(super) fn unpack(line: &str, state: &mut LabelState) -> Result<Option<String>> {
    let mut fields: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    let mut entry: Option<Cow<'_, str>> = None;
    let mut cursor = Cursor::new(line);
    cursor.object(|cursor, key| {
        if cursor.peek() != Some(b'"') {
            return cursor.skip_value(1);
        }
        let value = cursor.string()?;
        if key == "_entry" {
            entry = Some(value);
        } else {
            fields.push((key, value));
        }
        Ok(())
    })?;
    let Some(entry) = entry else { return Ok(None) };
    for (key, value) in &fields {
        state.add_parsed(&sanitize_label_name(key), value);
    }
    Ok(Some(entry.into_owned()))
}

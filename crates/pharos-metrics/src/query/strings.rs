//! Strings in queries as Go reads them. PromQL's string escapes follow Go, where `\xNN` and
//! octal escapes are bytes, so a string may hold bytes that are not UTF-8. Pharos's strings are
//! Rust strings: such a byte is kept as a character of its own in a private-use plane
//! (U+10FF80 to U+10FFFF), which real label names and values practically never hold (so a
//! matcher holding one matches nothing, as the byte would not either), a label name holding
//! one is invalid as a name with that byte is in Prometheus, and messages quote it back as
//! `\xNN`. The cost: a query that means those private-use characters themselves in a label
//! name is refused.

use std::borrow::Cow;

/// First of the characters standing for the bytes 0x80..=0xFF.
const RAW_BASE: u32 = 0x10FF00;

/// The character standing for byte `b` (0x80 and above) of a string that is not UTF-8.
fn raw_byte(b: u8) -> char {
    char::from_u32(RAW_BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The byte a character stands for, if it stands for one.
fn as_raw_byte(c: char) -> Option<u8> {
    let v = u32::from(c).checked_sub(RAW_BASE)?;
    u8::try_from(v).ok().filter(|&b| b >= 0x80)
}

/// Whether `name` may name a label: not empty, and UTF-8 (Prometheus 3's rule).
pub(crate) fn valid_label_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| as_raw_byte(c).is_some())
}

/// `s` quoted as Go's `%q` writes it, raw bytes as `\xNN`.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match as_raw_byte(c) {
            Some(b) => out.push_str(&format!("\\x{b:02x}")),
            None => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
    out
}

/// `s` with raw bytes written as `\xNN`, for messages that print a name unquoted.
pub(crate) fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match as_raw_byte(c) {
            Some(b) => out.push_str(&format!("\\x{b:02x}")),
            None => out.push(c),
        }
    }
    out
}

/// The query with `\xNN` and octal escapes of bytes 0x80 and above, inside quoted strings,
/// replaced by the characters those bytes encode. PromQL strings follow Go's rules, where such
/// an escape is one byte (`"\xc3\xbf"` is `ÿ`); the parser reads it as a code point instead.
/// Bytes that are not UTF-8 become [raw byte](raw_byte) characters.
pub(crate) fn byte_escapes(query: &str) -> Cow<'_, str> {
    if !query.contains('\\') {
        return query.into();
    }
    // An escape of a high byte at `i`: its value and length.
    fn high_byte(b: &[u8], i: usize) -> Option<(u8, usize)> {
        let hex = |c: u8| (c as char).to_digit(16);
        let oct = |c: u8| (c as char).to_digit(8);
        let v = match b.get(i + 1)? {
            b'x' => hex(*b.get(i + 2)?)? * 16 + hex(*b.get(i + 3)?)?,
            c @ b'0'..=b'3' => oct(*c)? * 64 + oct(*b.get(i + 2)?)? * 8 + oct(*b.get(i + 3)?)?,
            _ => return None,
        };
        (v >= 0x80).then_some((v as u8, 4))
    }
    let b = query.as_bytes();
    let mut out: Option<String> = None;
    let (mut quote, mut i, mut copied) = (None::<u8>, 0, 0);
    while i < b.len() {
        match (quote, b[i]) {
            (None, q @ (b'"' | b'\'' | b'`')) => quote = Some(q),
            (None, b'#') => {
                // A comment runs to the end of the line.
                i = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
                continue;
            }
            (Some(q), c) if c == q => quote = None,
            (Some(b'`'), _) | (None, _) => {}
            (Some(_), b'\\') => {
                let start = i;
                let mut bytes = Vec::new();
                while let Some((v, len)) = high_byte(b, i) {
                    bytes.push(v);
                    i += len;
                }
                if bytes.is_empty() {
                    i += 2; // any other escape, kept for the parser
                    continue;
                }
                let out = out.get_or_insert_with(|| String::with_capacity(query.len()));
                out.push_str(&query[copied..start]);
                for chunk in bytes.utf8_chunks() {
                    out.push_str(chunk.valid());
                    out.extend(chunk.invalid().iter().map(|&b| raw_byte(b)));
                }
                copied = i;
                continue;
            }
            (Some(_), _) => {}
        }
        i += 1;
    }
    match out {
        Some(mut out) => {
            out.push_str(&query[copied..]);
            out.into()
        }
        None => query.into(),
    }
}

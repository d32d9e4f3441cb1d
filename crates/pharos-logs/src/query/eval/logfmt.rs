//! The `logfmt` parser: `key=value key2="quoted \"value\"" flag`.

use std::borrow::Cow;

/// Calls `pair(key, value)` for each pair of `line` (`value` empty for a key without `=` or
/// value; those are reported only with `keep_empty`). Without `strict` a malformed pair is
/// skipped up to the next whitespace; with it parsing stops and the error text (for
/// `__error_details__`) is returned.
pub(super) fn parse<'a>(
    line: &'a str,
    strict: bool,
    keep_empty: bool,
    mut pair: impl FnMut(&'a str, Cow<'a, str>),
) -> Result<(), String> {
    let bytes = line.as_bytes();
    let n = bytes.len();
    let mut i = 0;
    let is_space = |b: u8| b <= b' ';
    let skip_garbage = |mut i: usize| {
        while i < n && !is_space(bytes[i]) {
            i += 1;
        }
        i
    };
    while i < n {
        while i < n && is_space(bytes[i]) {
            i += 1;
        }
        if i >= n {
            break;
        }
        let key_start = i;
        while i < n && !is_space(bytes[i]) && bytes[i] != b'=' && bytes[i] != b'"' {
            i += 1;
        }
        let key = &line[key_start..i];
        if (i < n && bytes[i] == b'"') || key.is_empty() {
            let what = if i < n && bytes[i] == b'"' { "unexpected '\"'" } else { "unexpected '='" };
            if strict {
                return Err(format!("logfmt syntax error at pos {} : {what}", i + 1));
            }
            i = skip_garbage(i + 1);
            continue;
        }
        if i >= n || is_space(bytes[i]) {
            if keep_empty {
                pair(key, Cow::Borrowed(""));
            }
            continue;
        }
        // bytes[i] == b'='
        i += 1;
        if i >= n || is_space(bytes[i]) {
            if keep_empty {
                pair(key, Cow::Borrowed(""));
            }
            continue;
        }
        if bytes[i] == b'"' {
            match quoted(line, i) {
                Ok((value, end)) if end >= n || is_space(bytes[end]) => {
                    pair(key, value);
                    i = end;
                }
                Ok((_, end)) => {
                    if strict {
                        return Err(format!(
                            "logfmt syntax error at pos {} : unexpected character after quoted value",
                            end + 1
                        ));
                    }
                    i = skip_garbage(end);
                }
                Err(end) => {
                    if strict {
                        return Err(format!(
                            "logfmt syntax error at pos {} : unterminated quoted value",
                            end + 1
                        ));
                    }
                    i = end;
                }
            }
            continue;
        }
        let value_start = i;
        while i < n && !is_space(bytes[i]) && bytes[i] != b'=' && bytes[i] != b'"' {
            i += 1;
        }
        if i < n && !is_space(bytes[i]) {
            let what = if bytes[i] == b'=' { "unexpected '='" } else { "unexpected '\"'" };
            if strict {
                return Err(format!("logfmt syntax error at pos {} : {what}", i + 1));
            }
            i = skip_garbage(i);
            continue;
        }
        pair(key, Cow::Borrowed(&line[value_start..i]));
    }
    Ok(())
}

/// The quoted value starting at `start` (a `"`) and the index after its closing quote, or
/// the end of the line when it is not closed.
fn quoted(line: &str, start: usize) -> Result<(Cow<'_, str>, usize), usize> {
    let bytes = line.as_bytes();
    let mut i = start + 1;
    let content_start = i;
    while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\\' {
        i += 1;
    }
    if i >= bytes.len() {
        return Err(bytes.len());
    }
    if bytes[i] == b'"' {
        return Ok((Cow::Borrowed(&line[content_start..i]), i + 1));
    }
    let mut out = String::from(&line[content_start..i]);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Ok((Cow::Owned(out), i + 1)),
            b'\\' => {
                let Some(c) = line[i + 1..].chars().next() else { return Err(bytes.len()) };
                match c {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let code = line.get(i + 2..i + 6).and_then(|h| u32::from_str_radix(h, 16).ok());
                        match code.and_then(char::from_u32) {
                            Some(ch) => {
                                out.push(ch);
                                i += 6;
                                continue;
                            }
                            None => out.push_str("\\u"),
                        }
                    }
                    c => out.push(c),
                }
                i += 1 + c.len_utf8();
            }
            _ => {
                let run_end =
                    bytes[i..].iter().position(|&b| b == b'"' || b == b'\\').map_or(bytes.len(), |p| i + p);
                out.push_str(&line[i..run_end]);
                i = run_end;
            }
        }
    }
    Err(bytes.len())
}

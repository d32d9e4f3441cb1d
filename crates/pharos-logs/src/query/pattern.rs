//! Checks the pattern language of `| pattern "<ip> - <_>"` and `|> "<_> error <_>"`.
//!
//! A pattern is literal text with captures `<name>`; `<_>` matches without capturing. A `<`
//! that does not start a well-formed capture is literal text.

/// Where a pattern is used: the parser must capture something, the line filter need not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatternUse {
    Parser,
    Filter,
}

/// Checks `pattern`, returning why it is invalid.
pub(crate) fn validate_pattern(pattern: &str, usage: PatternUse) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("pattern is empty");
    }
    let mut names: Vec<&str> = Vec::new();
    let mut previous_was_capture = false;
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(name) = capture_at(rest) {
            if previous_was_capture {
                return Err("two captures must be separated by literal text");
            }
            if name != "_" {
                if names.contains(&name) {
                    return Err("a capture name is used twice");
                }
                names.push(name);
            }
            previous_was_capture = true;
            rest = &rest[name.len() + 2..];
        } else {
            previous_was_capture = false;
            let first_len = rest.chars().next().map_or(1, char::len_utf8);
            let next = rest[first_len..].find('<').map_or(rest.len(), |i| i + first_len);
            rest = &rest[next..];
        }
    }
    if usage == PatternUse::Parser && names.is_empty() {
        return Err("the pattern parser needs at least one named capture like <name>");
    }
    Ok(())
}

/// The capture name when `text` starts with `<name>`.
fn capture_at(text: &str) -> Option<&str> {
    let body = text.strip_prefix('<')?;
    let end = body.find('>')?;
    let name = &body[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_pattern_access_log_is_ok() {
        let pattern = r#"<ip> - - <_> "<method> <uri> <_>" <status> <size> <_> "<agent>" <_>"#;
        assert_eq!(validate_pattern(pattern, PatternUse::Parser), Ok(()));
    }

    #[test]
    fn validate_pattern_parser_without_named_capture_is_error() {
        assert!(validate_pattern("<_> foo", PatternUse::Parser).is_err());
        assert_eq!(validate_pattern("<_> foo", PatternUse::Filter), Ok(()));
    }

    #[test]
    fn validate_pattern_adjacent_captures_is_error() {
        assert!(validate_pattern("<a><b>", PatternUse::Parser).is_err());
    }

    #[test]
    fn validate_pattern_duplicate_name_is_error() {
        assert!(validate_pattern("<a> <a>", PatternUse::Parser).is_err());
    }

    #[test]
    fn validate_pattern_malformed_angle_brackets_are_literal() {
        assert_eq!(validate_pattern("é < b <c> <1x> <", PatternUse::Parser), Ok(()));
        assert!(validate_pattern("", PatternUse::Filter).is_err());
    }
}

//! Matching the pattern language of `| pattern "<ip> - <_>"` and `|> "<_> error <_>"`.

/// A piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `<name>`; `None` for `<_>`.
    Capture(Option<String>),
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    parts: Vec<Part>,
}

/// The capture name when `text` starts with `<name>` (the parser's rule: a letter or `_`,
/// then letters, digits and `_`).
fn capture_at(text: &str) -> Option<&str> {
    let body = text.strip_prefix('<')?;
    let end = body.find('>')?;
    let name = &body[..end];
    let mut chars = name.chars();
    let first = chars.next()?;
    ((first.is_ascii_alphabetic() || first == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

impl Pattern {
    pub(super) fn new(pattern: &str) -> Self {
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(name) = capture_at(rest) {
                parts.push(Part::Capture((name != "_").then(|| name.to_owned())));
                rest = &rest[name.len() + 2..];
            } else {
                let first_len = rest.chars().next().map_or(1, char::len_utf8);
                let next = rest[first_len..].find('<').map_or(rest.len(), |i| i + first_len);
                match parts.last_mut() {
                    Some(Part::Literal(text)) => text.push_str(&rest[..next]),
                    _ => parts.push(Part::Literal(rest[..next].to_owned())),
                }
                rest = &rest[next..];
            }
        }
        Self { parts }
    }

    /// The parser: calls `capture(name, value)` for each named capture matched. Anchored at
    /// the start when the pattern starts with literal text; each capture runs to the next
    /// literal (the last one to the line end); when a literal is missing, the capture before
    /// it takes the rest of the line and matching stops.
    pub(super) fn captures<'a>(&self, line: &'a str, mut capture: impl FnMut(&str, &'a str)) {
        let mut parts = self.parts.as_slice();
        let mut rest = line;
        if line.is_empty() {
            return;
        }
        if let Some((Part::Literal(text), tail)) = parts.split_first() {
            let Some(after) = rest.strip_prefix(text.as_str()) else { return };
            rest = after;
            parts = tail;
        }
        while let Some((Part::Capture(name), tail)) = parts.split_first() {
            match tail.split_first() {
                None => {
                    if let Some(name) = name {
                        capture(name, rest);
                    }
                    return;
                }
                Some((Part::Literal(text), tail)) => match rest.find(text.as_str()) {
                    Some(at) => {
                        if let Some(name) = name {
                            capture(name, &rest[..at]);
                        }
                        rest = &rest[at + text.len()..];
                        parts = tail;
                    }
                    None => {
                        if let Some(name) = name {
                            capture(name, rest);
                        }
                        return;
                    }
                },
                // Two captures in a row are rejected by the parser.
                Some((Part::Capture(_), _)) => return,
            }
        }
    }

    /// The line filter: whether the line starts with the leading literal (if any) and
    /// holds every following literal in order.
    pub(super) fn is_match(&self, line: &str) -> bool {
        let mut rest = line;
        for (i, part) in self.parts.iter().enumerate() {
            if let Part::Literal(text) = part {
                if i == 0 {
                    match rest.strip_prefix(text.as_str()) {
                        Some(after) => rest = after,
                        None => return false,
                    }
                } else {
                    match rest.find(text.as_str()) {
                        Some(at) => rest = &rest[at + text.len()..],
                        None => return false,
                    }
                }
            }
        }
        true
    }
}

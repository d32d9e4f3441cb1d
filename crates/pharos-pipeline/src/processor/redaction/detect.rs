//! Finding secrets in text: the built-in detectors and the custom `blocked_values` patterns.
//!
//! A [`Scanner`] is compiled once from the configuration and reports the byte ranges of a string
//! that hold a secret. The common case (nothing found) costs one byte pass counting digits,
//! dots, colons and `@`, a few substring searches (each detector's regex runs only when the
//! string holds its literal: `@`, `eyJ`, `AKIA`, `bearer`, ...), the hand-written scanners for
//! card numbers and IP addresses only when there are enough digits, dots or colons, and one
//! `RegexSet` pass over the custom `blocked_values`; it allocates nothing.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    ops::Range,
};

use regex::{Regex, RegexSet};
use serde::Deserialize;

use super::super::{ConfigError, compile_regex};

/// A built-in detector, by the name used under `detectors:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Detector {
    /// 13 to 19 digits, optionally in groups separated by single spaces or dashes, passing the
    /// Luhn check.
    CreditCard,
    Email,
    /// Dotted quads that parse as an IPv4 address (`1.2.3` and `1.2.3.4.5` are left alone).
    Ipv4,
    /// Colon-separated hex that parses as an IPv6 address.
    Ipv6,
    Jwt,
    /// The credential after `Bearer ` (the scheme word stays).
    BearerToken,
    /// Prefixed keys (Stripe, AWS, GitHub, Slack) and `api_key=…` / `apikey: …` assignments.
    ApiKey,
}

impl Detector {
    pub(super) const ALL: [Detector; 7] = [
        Detector::CreditCard,
        Detector::Email,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Jwt,
        Detector::BearerToken,
        Detector::ApiKey,
    ];

    /// The patterns of a regex-based detector: (gate, pattern, capture group holding the
    /// secret). A pattern runs only on strings its gate lets through.
    fn patterns(self) -> &'static [(Gate, &'static str, usize)] {
        match self {
            // Scanned by hand (validation the regex crate cannot do).
            Detector::CreditCard | Detector::Ipv4 | Detector::Ipv6 => &[],
            Detector::Email => &[(
                Gate::At,
                r"[\p{L}\p{N}._%+\-]+@(?:[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?\.)+\p{L}{2,}",
                0,
            )],
            Detector::Jwt => &[(
                Gate::Literal(&["eyJ"]),
                r"(?-u:\b)eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
                0,
            )],
            Detector::BearerToken => {
                &[(Gate::AsciiCaseless("bearer"), r"(?i-u:\bbearer)[ \t]+([A-Za-z0-9\-._~+/]{8,}=*)", 1)]
            }
            Detector::ApiKey => &[
                // Stripe secret and restricted keys.
                (Gate::Literal(&["k_live_", "k_test_"]), r"(?-u:\b)[sr]k_(?:live|test)_[A-Za-z0-9]{10,}", 0),
                // AWS access key ids (long-term and temporary).
                (Gate::Literal(&["AKIA", "ASIA"]), r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)", 0),
                // GitHub tokens: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained.
                (Gate::Literal(&["gh"]), r"(?-u:\b)gh[pousr]_[A-Za-z0-9]{30,}", 0),
                (Gate::Literal(&["github_pat_"]), r"(?-u:\b)github_pat_[A-Za-z0-9_]{20,}", 0),
                // Slack tokens.
                (Gate::Literal(&["xox"]), r"(?-u:\b)xox[abprs]-[A-Za-z0-9\-]{10,}", 0),
                // api_key=…, api-key: …, "apiKey": "…", x-api-key: …
                (
                    Gate::AsciiCaseless("api"),
                    r#"(?i-u:\bapi[_\-]?key\b)["']?[ \t]*[:=][ \t]*["']?([^\s"'&,;]+)"#,
                    1,
                ),
            ],
        }
    }
}

/// What a string must contain for a pattern to have a chance: checked before the regex runs,
/// so that the common string (nothing to find) costs a few substring searches.
#[derive(Debug, Clone, Copy)]
enum Gate {
    /// An `@`.
    At,
    /// One of these substrings.
    Literal(&'static [&'static str]),
    /// This ASCII word, in any case.
    AsciiCaseless(&'static str),
}

impl Gate {
    fn admits(self, s: &str, shape: &Shape) -> bool {
        match self {
            Gate::At => shape.ats > 0,
            Gate::Literal(any) => any.iter().any(|lit| lit.bytes().all(|b| shape.has(b)) && s.contains(lit)),
            Gate::AsciiCaseless(word) => {
                let word = word.as_bytes();
                let present = |b: u8| shape.has(b.to_ascii_lowercase()) || shape.has(b.to_ascii_uppercase());
                if !word.iter().all(|&b| present(b)) {
                    return false;
                }
                let bytes = s.as_bytes();
                let first = word.first().map_or(0, u8::to_ascii_lowercase);
                (0..bytes.len()).any(|i| {
                    bytes[i].to_ascii_lowercase() == first
                        && bytes.get(i..i + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word))
                })
            }
        }
    }
}

struct Pattern {
    /// `None` for `blocked_values` (they run in the set).
    gate: Option<Gate>,
    regex: Regex,
    /// The capture group that holds the secret (0: the whole match).
    group: usize,
}

/// Everything that finds secrets in a string, compiled once.
pub(super) struct Scanner {
    cards: bool,
    ipv4: bool,
    ipv6: bool,
    /// The patterns of the regex-based detectors, each behind its gate.
    detectors: Vec<Pattern>,
    /// `blocked_values`, run together first, then one by one where the set matched.
    set: Option<RegexSet>,
    blocked: Vec<Pattern>,
    /// `allowed_values`: a secret lying wholly inside a match of one of these is kept.
    allowed: Vec<Regex>,
}

impl Scanner {
    /// Builds the scanner. `blocked_values` and `allowed_values` are `(config path, pattern)`.
    pub(super) fn new(
        detectors: &[Detector],
        blocked_values: &[(String, String)],
        allowed_values: &[(String, String)],
    ) -> Result<Scanner, ConfigError> {
        let mut patterns = Vec::new();
        for detector in Detector::ALL.into_iter().filter(|d| detectors.contains(d)) {
            for &(gate, pattern, group) in detector.patterns() {
                let regex = compile_regex("detectors", pattern)?;
                patterns.push(Pattern { gate: Some(gate), regex, group });
            }
        }
        let mut blocked = Vec::new();
        for (path, pattern) in blocked_values {
            let regex = compile_regex(path, pattern)?;
            if regex.is_match("") {
                return Err(ConfigError::new(
                    path.as_str(),
                    format!("{pattern:?} matches the empty string, so it would match everywhere"),
                ));
            }
            blocked.push(Pattern { gate: None, regex, group: 0 });
        }
        let set = if blocked_values.len() < 2 {
            None
        } else {
            let sources = blocked_values.iter().map(|(_, pattern)| pattern);
            Some(regex::RegexSetBuilder::new(sources).size_limit(1 << 24).build().map_err(|e| {
                ConfigError::new("blocked_values", format!("the patterns together are too large: {e}"))
            })?)
        };
        let allowed = allowed_values
            .iter()
            .map(|(path, pattern)| compile_regex(path, pattern))
            .collect::<Result<_, _>>()?;
        Ok(Scanner {
            cards: detectors.contains(&Detector::CreditCard),
            ipv4: detectors.contains(&Detector::Ipv4),
            ipv6: detectors.contains(&Detector::Ipv6),
            detectors: patterns,
            set,
            blocked,
            allowed,
        })
    }

    /// Appends the ranges of `s` that hold a secret, sorted, merged and without the ones
    /// `allowed_values` keeps. Leaves `out` empty (and unallocated) when there is none.
    pub(super) fn find(&self, s: &str, out: &mut Vec<Range<usize>>) {
        out.clear();
        if s.is_empty() {
            return;
        }
        let shape = Shape::of(s);
        for p in &self.detectors {
            if p.gate.is_none_or(|gate| gate.admits(s, &shape)) {
                p.find(s, out);
            }
        }
        match &self.set {
            Some(set) => {
                for i in set.matches(s).iter() {
                    if let Some(p) = self.blocked.get(i) {
                        p.find(s, out);
                    }
                }
            }
            None => self.blocked.iter().for_each(|p| p.find(s, out)),
        }
        if self.cards && shape.digits >= CARD_MIN_DIGITS {
            find_cards(s, out);
        }
        if self.ipv4 && shape.dots >= 3 && shape.digits >= 4 {
            find_ipv4(s, out);
        }
        if self.ipv6 && shape.colons >= 2 {
            find_ipv6(s, out);
        }
        if out.is_empty() {
            return;
        }
        merge(out);
        if !self.allowed.is_empty() {
            let allowed: Vec<Range<usize>> =
                self.allowed.iter().flat_map(|re| re.find_iter(s).map(|m| m.range())).collect();
            out.retain(|r| !allowed.iter().any(|a| a.start <= r.start && r.end <= a.end));
        }
    }

    /// Whether `s` holds a secret.
    pub(super) fn contains_secret(&self, s: &str) -> bool {
        let mut ranges = Vec::new();
        self.find(s, &mut ranges);
        !ranges.is_empty()
    }
}

impl Pattern {
    /// Appends the (non-empty) ranges of the secret in each match.
    fn find(&self, s: &str, out: &mut Vec<Range<usize>>) {
        if self.group == 0 {
            out.extend(self.regex.find_iter(s).map(|m| m.range()).filter(|r| !r.is_empty()));
        } else if self.regex.is_match(s) {
            // Captures are slow: only asked for once the fast search found something.
            out.extend(
                self.regex
                    .captures_iter(s)
                    .filter_map(|c| c.get(self.group))
                    .map(|m| m.range())
                    .filter(|r| !r.is_empty()),
            );
        }
    }
}

/// Replaces each range of `s` by `mask` (ranges sorted and disjoint, as [`Scanner::find`]
/// returns them).
pub(super) fn mask_ranges(s: &str, ranges: &[Range<usize>], mask: &str) -> String {
    let kept: usize = s.len() - ranges.iter().map(|r| r.len()).sum::<usize>();
    let mut out = String::with_capacity(kept + ranges.len() * mask.len());
    let mut at = 0;
    for r in ranges {
        // Ranges come from regex matches or ASCII scanners: always on char boundaries.
        if let (Some(before), true) = (s.get(at..r.start), s.is_char_boundary(r.end)) {
            out.push_str(before);
            out.push_str(mask);
            at = r.end;
        }
    }
    out.push_str(s.get(at..).unwrap_or_default());
    out
}

/// Sorts ranges and merges those that overlap or touch.
fn merge(ranges: &mut Vec<Range<usize>>) {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *ranges = merged;
}

/// What one pass over a string learns: counts deciding which hand-written scanners can find
/// anything, and which bytes occur (so a gate rejects most strings without searching them).
struct Shape {
    digits: usize,
    dots: usize,
    colons: usize,
    ats: usize,
    seen: [u64; 4],
}

impl Shape {
    fn of(s: &str) -> Shape {
        let (mut digits, mut dots, mut colons, mut ats) = (0, 0, 0, 0);
        let mut seen = [0u64; 4];
        for &b in s.as_bytes() {
            digits += b.is_ascii_digit() as usize;
            dots += (b == b'.') as usize;
            colons += (b == b':') as usize;
            ats += (b == b'@') as usize;
            seen[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        Shape { digits, dots, colons, ats, seen }
    }

    fn has(&self, b: u8) -> bool {
        self.seen[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
}

/// A byte that glues a number to a word: a number inside `a4111…` or `…1111x` is not a card
/// (nor an address).
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

// ---- payment cards ----

const CARD_MIN_DIGITS: usize = 13;
const CARD_MAX_DIGITS: usize = 19;

/// Finds card numbers: a run of digit groups separated by single spaces or dashes, in which a
/// window of whole groups holds 13 to 19 digits, starts with 2 to 6 (the major issuers: Visa,
/// Mastercard, Amex, Discover, JCB, UnionPay, Diners; this keeps millisecond and nanosecond
/// timestamps, which start with 1, out) and passes the Luhn check. A window of several groups
/// needs groups of 3 to 6 digits (as cards are printed: 4-4-4-4, 4-6-5); a single group is a
/// contiguous number of 13 to 19 digits (a longer one is an id, not a card).
fn find_cards(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // A run starts here: measure it without storing anything.
        let start = i;
        let mut end = i;
        let mut digits = 0;
        let mut j = i;
        loop {
            while j < b.len() && b[j].is_ascii_digit() {
                digits += 1;
                j += 1;
            }
            end = end.max(j);
            if j + 1 < b.len() && (b[j] == b' ' || b[j] == b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        i = end;
        if digits < CARD_MIN_DIGITS {
            continue;
        }
        // A number glued to a word or part of a decimal (`0.4111…`, `4111….5`) is not a card.
        let glued_before = start > 0 && (is_word(b[start - 1]) || b[start - 1] == b'.');
        let glued_after = end < b.len()
            && (is_word(b[end]) || (b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit)));
        let mut groups = Vec::new();
        let mut g = start;
        while g < end {
            let group_start = g;
            while g < end && b[g].is_ascii_digit() {
                g += 1;
            }
            groups.push(group_start..g);
            g += 1; // the separator
        }
        let first = usize::from(glued_before);
        let last = groups.len() - usize::from(glued_after); // exclusive
        let mut a = first;
        while a < last {
            let mut best = None;
            let mut count = 0;
            for z in a..last {
                count += groups[z].len();
                if count > CARD_MAX_DIGITS {
                    break;
                }
                let window = &groups[a..=z];
                let shaped = window.len() == 1 || window.iter().all(|g| (3..=6).contains(&g.len()));
                let issuer = (b'2'..=b'6').contains(&b[window[0].start]);
                let text = &b[window[0].start..window[window.len() - 1].end];
                if count >= CARD_MIN_DIGITS && shaped && issuer && luhn(text) {
                    best = Some(z);
                }
            }
            match best {
                Some(z) => {
                    out.push(groups[a].start..groups[z].end);
                    a = z + 1;
                }
                None => a += 1,
            }
        }
    }
}

/// The Luhn check over the digits of `text` (separators skipped).
fn luhn(text: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    for &b in text.iter().rev().filter(|b| b.is_ascii_digit()) {
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
    }
    sum.is_multiple_of(10)
}

// ---- IP addresses ----

/// Finds IPv4 addresses: a run of digits and dots with exactly four parts that std parses
/// (so each part is 0–255 without leading zeros). Runs of other lengths (`1.2.3`, `1.2.3.4.5`)
/// and runs glued to words are left alone. A trailing dot (end of a sentence) is not part of it.
fn find_ipv4(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // A run starts at a digit after neither a word nor a dot (`v1.2.3.4`, `x.1.2.3.4`), nor
        // a slash after a word (`Chrome/120.0.0.0` is a version; `http://10.0.0.1` and Java's
        // `/10.0.0.1:9092` are addresses).
        let after_slash = i >= 2 && b[i - 1] == b'/' && is_word(b[i - 2]);
        let starts =
            b[i].is_ascii_digit() && (i == 0 || !(b[i - 1] == b'.' || is_word(b[i - 1]) || after_slash));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let mut end = i;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        if i < b.len() && is_word(b[i]) {
            continue;
        }
        let Some(text) = s.get(start..end) else { continue };
        if text.bytes().filter(|&c| c == b'.').count() == 3 && text.parse::<Ipv4Addr>().is_ok() {
            out.push(start..end);
        }
    }
}

fn is_ipv6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b':' || b == b'.'
}

/// Finds IPv6 addresses: a run of hex digits, colons and dots (for an embedded IPv4 tail) with
/// at least two colons and one hex digit that std parses. Runs glued to words (`std::fmt`,
/// `T12:30:45`) are left alone, and so is a bare `::`.
fn find_ipv6(s: &str, out: &mut Vec<Range<usize>>) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !is_ipv6_byte(b[i]) {
            i += 1;
            continue;
        }
        let mut start = i;
        while i < b.len() && is_ipv6_byte(b[i]) {
            i += 1;
        }
        if i < b.len() && is_word(b[i]) {
            continue;
        }
        if start > 0 && is_word(b[start - 1]) {
            // Glued to a word: only a `key:` before the address (`addr:2001:db8::1`,
            // `src:fe80::1`) lets it through; `std::fmt` and `T12:30:45` stay out.
            match b[start..i].iter().position(|&c| c == b':') {
                Some(p) if start + p + 1 < i && b[start + p + 1] != b':' => start += p + 1,
                _ => continue,
            }
        }
        let mut end = i;
        while end > start && b[end - 1] == b'.' {
            end -= 1;
        }
        // A single colon after the address is punctuation (`2001:db8::1: connection refused`).
        if end - start >= 2 && b[end - 1] == b':' && b[end - 2] != b':' {
            end -= 1;
        }
        let Some(text) = s.get(start..end) else { continue };
        if text.bytes().filter(|&c| c == b':').count() < 2 || !text.bytes().any(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        if text.parse::<Ipv6Addr>().is_ok() {
            out.push(start..end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Scanner {
        Scanner::new(&Detector::ALL, &[], &[]).expect("the built-in detectors compile")
    }

    fn only(d: Detector) -> Scanner {
        Scanner::new(&[d], &[], &[]).expect("a built-in detector compiles")
    }

    fn masked(scanner: &Scanner, s: &str) -> String {
        let mut ranges = Vec::new();
        scanner.find(s, &mut ranges);
        mask_ranges(s, &ranges, "****")
    }

    #[test]
    fn luhn_valid_test_cards_pass_and_neighbours_fail() {
        assert!(luhn(b"4111111111111111"));
        assert!(luhn(b"5500-0000-0000-0004"));
        assert!(luhn(b"378282246310005"));
        assert!(luhn(b"1700000000004") && luhn(b"1700000000000000004") && luhn(b"7992739871300"));
        assert!(!luhn(b"4111111111111112"));
        assert!(!luhn(b"1234567812345678"));
    }

    #[test]
    fn card_in_groups_or_contiguous_is_masked() {
        let s = only(Detector::CreditCard);
        assert_eq!(masked(&s, "charge card 4111 1111 1111 1111 failed"), "charge card **** failed");
        assert_eq!(masked(&s, "pan=4111-1111-1111-1111;"), "pan=****;");
        assert_eq!(masked(&s, "4111111111111111"), "****");
        assert_eq!(masked(&s, "amex 3782 822463 10005 ok"), "amex **** ok");
        assert_eq!(masked(&s, "card 4111 1111 1111 1111 12/25"), "card **** 12/25");
    }

    #[test]
    fn card_failing_luhn_or_glued_or_too_long_is_kept() {
        let s = only(Detector::CreditCard);
        for text in [
            "order 1234567812345678 shipped",
            "order 1234-5678-1234-5678 shipped",
            "trace 4bf92f3577b34da6a3ce929d0e0e4736",
            "id a4111111111111111",
            "id 4111111111111111x",
            "ratio 0.4111111111111111",
            "big 41111111111111111111111",
            "list 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            // Luhn-valid, but timestamps (ms, ns) and numbers starting 1, 7, 8, 9 are not cards.
            "at 1700000000004",
            "at 1700000000000000004",
            "id 7992739871300",
        ] {
            assert_eq!(masked(&s, text), text, "{text}");
        }
    }

    #[test]
    fn email_needs_a_domain_with_a_dot() {
        let s = only(Detector::Email);
        assert_eq!(masked(&s, "user alice.smith+test@example.co.uk logged in."), "user **** logged in.");
        assert_eq!(masked(&s, "jörg.müller@beispiel.de für"), "**** für");
        for text in ["user@", "user@localhost", "@example.com", "a@b"] {
            assert_eq!(masked(&s, text), text, "{text}");
        }
    }

    #[test]
    fn ipv4_needs_four_valid_parts() {
        let s = only(Detector::Ipv4);
        assert_eq!(masked(&s, "from 10.0.0.1:8080"), "from ****:8080");
        assert_eq!(masked(&s, "client 192.168.1.20."), "client ****.");
        assert_eq!(masked(&s, "a=1.1.1.1,b=8.8.8.8"), "a=****,b=****");
        assert_eq!(masked(&s, "GET http://10.0.0.1/health"), "GET http://****/health");
        for text in [
            "version 1.2.3",
            "v1.2.3.4",
            "Mozilla/5.0 Chrome/120.0.0.0 Safari/537.36",
            "1.2.3.4.5",
            "256.1.1.1",
            "999.1.2.3.4",
            "01.2.3.4",
            "x.1.2.3.4",
        ] {
            assert_eq!(masked(&s, text), text, "{text}");
        }
    }

    #[test]
    fn ipv4_after_a_slash_that_follows_no_word_is_masked() {
        // Java's InetSocketAddress prints `/10.0.0.1:9092` (Kafka, Netty, JDBC logs); only a slash
        // after a product name (`Chrome/120.0.0.0`) introduces a version.
        let s = only(Detector::Ipv4);
        assert_eq!(
            masked(&s, "Connection to node 1 (/10.0.0.1:9092) could not be established"),
            "Connection to node 1 (/****:9092) could not be established"
        );
        assert_eq!(masked(&s, "L:/10.0.0.1:8080 - R:/10.0.0.2:54321"), "L:/****:8080 - R:/****:54321");
        assert_eq!(masked(&s, "/192.168.1.20:5432"), "/****:5432");
        assert_eq!(masked(&s, "Edg/120.0.2210.91 Chrome/120.0.0.0"), "Edg/120.0.2210.91 Chrome/120.0.0.0");
    }

    #[test]
    fn ipv6_after_a_key_and_colon_or_before_a_colon_is_masked() {
        let s = only(Detector::Ipv6);
        assert_eq!(masked(&s, "addr:2001:db8::1 closed"), "addr:**** closed");
        assert_eq!(masked(&s, "src:fe80::1 dst:2001:db8::8a2e:370:7334"), "src:**** dst:****");
        assert_eq!(
            masked(&s, "connect to 2001:db8::1: connection refused"),
            "connect to ****: connection refused"
        );
        for text in ["std::fmt::Display", "at T12:30:45", "2024-01-01T12:30:45+01:00", "Foo::Bar::baz"] {
            assert_eq!(masked(&s, text), text, "{text}");
        }
    }

    #[test]
    fn ipv6_parses_and_skips_times_and_paths() {
        let s = only(Detector::Ipv6);
        assert_eq!(masked(&s, "peer [2001:db8::8a2e:370:7334]:443"), "peer [****]:443");
        assert_eq!(masked(&s, "from ::ffff:192.0.2.1 at"), "from **** at");
        assert_eq!(masked(&s, "lo ::1"), "lo ****");
        for text in
            ["at 12:30:45", "2024-01-01T12:30:45Z", "std::fmt::Debug", "a :: b", "mac 00:1a:2b:3c:4d:5e"]
        {
            assert_eq!(masked(&s, text), text, "{text}");
        }
    }

    #[test]
    fn jwt_and_bearer_are_masked_keeping_the_scheme() {
        let s = all();
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(masked(&s, jwt), "****");
        assert_eq!(masked(&s, &format!("Bearer {jwt}")), "Bearer ****");
        assert_eq!(masked(&s, "bearer abcdEFGH1234ijkl"), "bearer ****");
        assert_eq!(masked(&s, "the Bearer scheme"), "the Bearer scheme");
    }

    #[test]
    fn api_keys_in_prefixed_and_assignment_forms_are_masked() {
        let s = only(Detector::ApiKey);
        let fake_stripe = ["sk", "live", "4eC39HqLyjWDarjtT1zdp7dc"].join("_");
        assert_eq!(masked(&s, &format!("key {fake_stripe} used")), "key **** used");
        assert_eq!(masked(&s, "AKIAIOSFODNN7EXAMPLE"), "****");
        assert_eq!(masked(&s, "token ghp_abcdefghijklmnopqrstuvwxyz0123456789"), "token ****");
        assert_eq!(masked(&s, "github_pat_11ABCDEFG0123456789_abcdefghij"), "****");
        assert_eq!(masked(&s, "slack xoxb-1234567890-abcdefghij"), "slack ****");
        assert_eq!(masked(&s, "GET /v1?api_key=abc123&user=7"), "GET /v1?api_key=****&user=7");
        assert_eq!(masked(&s, r#"{"apiKey": "s3cr3t"}"#), r#"{"apiKey": "****"}"#);
        assert_eq!(masked(&s, "X-API-Key: zzz"), "X-API-Key: ****");
        assert_eq!(masked(&s, "the api key docs"), "the api key docs");
    }

    #[test]
    fn overlapping_matches_merge_into_one_mask() {
        let s = all();
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
        assert_eq!(masked(&s, &format!("Authorization: Bearer {jwt} ok")), "Authorization: Bearer **** ok");
    }

    #[test]
    fn allowed_values_keep_secrets_inside_their_matches() {
        let allowed = [("allowed_values[0]".to_string(), r"[a-z]+@example\.com".to_string())];
        let s = Scanner::new(&[Detector::Email], &[], &allowed).expect("valid patterns");
        assert_eq!(masked(&s, "from noreply@example.com to bob@corp.io"), "from noreply@example.com to ****");
    }

    #[test]
    fn custom_blocked_value_that_matches_empty_is_rejected() {
        let blocked = [("blocked_values[0]".to_string(), "x*".to_string())];
        let err = Scanner::new(&[], &blocked, &[]).err().expect("an empty-matching pattern is an error");
        assert_eq!(err.path, "blocked_values[0]");
    }

    #[test]
    fn scanner_handles_unicode_and_odd_input_without_panicking() {
        let s = all();
        for text in [
            "",
            "é",
            "::",
            ".",
            "-",
            "1-",
            "4111 ",
            "日本 4111 1111 1111 1111 日本",
            "\u{0}\u{ffff}1.2.3.4\u{10ffff}",
        ] {
            let _ = masked(&s, text);
        }
        assert_eq!(masked(&s, "日本 4111 1111 1111 1111 日本"), "日本 **** 日本");
        assert_eq!(masked(&s, "ü1.2.3.4ü"), "ü****ü");
    }
}

//! Inputs that must give an error, never a panic: random bytes, random token soup, and every
//! truncation and single-character mutation of valid queries.

use pharos_logs::query::parse;

use crate::corpus::{LOG_QUERIES, METRIC_QUERIES};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn all_queries() -> impl Iterator<Item = &'static str> {
    LOG_QUERIES.iter().chain(METRIC_QUERIES).copied()
}

/// Parses `input`; when it parses, its printed form must parse to the same tree.
fn check(input: &str) {
    if let Ok(expr) = parse(input) {
        let printed = expr.to_string();
        match parse(&printed) {
            Ok(again) => assert_eq!(again, expr, "{input:?} printed as {printed:?}"),
            Err(err) => panic!("{input:?} printed as {printed:?} does not parse: {err}"),
        }
    }
}

#[test]
fn parse_every_truncation_of_valid_queries_never_panics() {
    for query in all_queries() {
        for (end, _) in query.char_indices() {
            check(&query[..end]);
            check(&query[end..]);
        }
    }
}

#[test]
fn parse_single_character_mutations_never_panic() {
    const ALPHABET: &[char] = &[
        '{', '}', '(', ')', '[', ']', ',', '|', '=', '!', '~', '>', '<', '"', '`', '\\', ' ', '-', '+', '*',
        '/', '%', '^', '#', '\n', '0', '5', 'm', 'B', '.', 'e', 'a', '_', 'é', '\u{0}',
    ];
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for query in all_queries() {
        let chars: Vec<char> = query.chars().collect();
        for _ in 0..200 {
            let mut mutated = chars.clone();
            let at = rng.below(mutated.len());
            match rng.below(3) {
                0 => mutated[at] = ALPHABET[rng.below(ALPHABET.len())],
                1 => {
                    mutated.remove(at);
                }
                _ => mutated.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
            }
            check(&mutated.into_iter().collect::<String>());
        }
    }
}

#[test]
fn parse_random_token_soup_never_panics() {
    const WORDS: &[&str] = &[
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        ",",
        "|",
        "|=",
        "!=",
        "|~",
        "!~",
        "|>",
        "!>",
        "=",
        "==",
        "=~",
        ">",
        ">=",
        "<",
        "<=",
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "app",
        "\"x\"",
        "`y`",
        "5m",
        "1h",
        "0s",
        "20KB",
        "5",
        "0.99",
        "-1",
        "json",
        "logfmt",
        "--strict",
        "regexp",
        "pattern",
        "\"<a> <_>\"",
        "unpack",
        "line_format",
        "label_format",
        "drop",
        "keep",
        "decolorize",
        "unwrap",
        "duration",
        "bytes",
        "ip",
        "and",
        "or",
        "unless",
        "bool",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "by",
        "without",
        "offset",
        "sum",
        "topk",
        "sort",
        "rate",
        "count_over_time",
        "quantile_over_time",
        "sum_over_time",
        "label_replace",
        "vector",
        "#",
    ];
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for _ in 0..20_000 {
        let len = 1 + rng.below(24);
        let soup: Vec<&str> = (0..len).map(|_| WORDS[rng.below(WORDS.len())]).collect();
        check(&soup.join(" "));
        check(&soup.concat());
    }
}

#[test]
fn parse_random_bytes_never_panics() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() >> 56) as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn parse_splices_of_valid_queries_never_panic() {
    let queries: Vec<&str> = all_queries().collect();
    let mut rng = Rng(0xfeed_face_0000_0001);
    for _ in 0..20_000 {
        let a = queries[rng.below(queries.len())];
        let b = queries[rng.below(queries.len())];
        let cut_a = floor_boundary(a, rng.below(a.len() + 1));
        let cut_b = floor_boundary(b, rng.below(b.len() + 1));
        check(&format!("{}{}", &a[..cut_a], &b[cut_b..]));
    }
}

#[test]
fn parse_deepest_accepted_nestings_print_and_drop_safely() {
    // Each template nests `n` times; the deepest `n` the parser accepts must parse, print and
    // drop on an ordinary 2 MiB thread stack (the test thread's), in a debug build.
    let templates: [fn(usize) -> String; 7] = [
        |n| format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        |n| format!(r#"{}rate({{a="1"}}[1m]){}"#, "sum(".repeat(n), ")".repeat(n)),
        |n| {
            let open = r#"label_replace("#.repeat(n);
            format!(r#"{open}vector(1){}"#, r#", "a", "", "b", "")"#.repeat(n))
        },
        |n| format!(r#"{{app="x"}} | {}a="1"{}"#, "(".repeat(n), ")".repeat(n)),
        |n| vec!["1"; n].join(" + "),
        |n| vec!["2"; n].join(" ^ "),
        |n| format!(r#"{{app="x"}} | {}"#, vec![r#"a="1""#; n].join(" or ")),
    ];
    let limit = pharos_logs::query::MAX_DEPTH;
    for template in templates {
        let deepest =
            (1..=limit + 2).rev().find(|&n| parse(&template(n)).is_ok()).expect("some depth parses");
        assert!(deepest >= limit / 2 - 2, "only {deepest} levels of {}", template(2));
        let expr = parse(&template(deepest)).expect("found above");
        check(&expr.to_string());
        assert!(parse(&template(limit + 2)).is_err());
    }
}

fn floor_boundary(text: &str, mut index: usize) -> usize {
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

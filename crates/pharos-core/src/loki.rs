//! The Loki push wire types (`logproto.PushRequest`, from Loki's published `push.proto`,
//! Apache-2.0), written by hand. Receivers decode them (from snappy protobuf or from JSON) and
//! processors read them from the queue: shared vocabulary, like `prompb`.

#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<Stream>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Stream {
    /// The stream's labels as a selector string: `{app="api", env="prod"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<Entry>,
    /// Set by Loki's own clients; ignored.
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entry {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPair>,
    /// Labels a Loki distributor parsed; clients leave it empty.
    #[prost(message, repeated, tag = "4")]
    pub parsed: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Unix nanoseconds (saturating).
    pub fn unix_nanos(self) -> i64 {
        self.seconds.saturating_mul(1_000_000_000).saturating_add(i64::from(self.nanos))
    }

    pub fn from_unix_nanos(ns: i64) -> Self {
        Self { seconds: ns.div_euclid(1_000_000_000), nanos: ns.rem_euclid(1_000_000_000) as i32 }
    }
}

/// Parses a stream's labels string: a selector with only `=` matchers, `{app="api", env="prod"}`.
/// Values are Go string literals (double quotes with Go's escapes: `\n`, `\"`, `\\`, `\x41`,
/// `\101`, `\u00e9`, …) or raw strings in backquotes. The pairs come in the order written;
/// `{}` gives none. Names are not checked against any naming rule here, nor for duplicates.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = LabelsParser { s, at: 0 };
    p.skip_space();
    p.expect('{')?;
    let mut pairs = Vec::new();
    p.skip_space();
    if p.eat('}') {
        return p.end(pairs);
    }
    loop {
        p.skip_space();
        let name = p.name()?;
        p.skip_space();
        p.equals(name)?;
        p.skip_space();
        let value = p.value(name)?;
        pairs.push((name.to_string(), value));
        p.skip_space();
        if p.eat(',') {
            continue;
        }
        if p.eat('}') {
            return p.end(pairs);
        }
        return Err(p.unexpected("`,` or `}`"));
    }
}

/// Writes labels as a labels string, `{a="1", b="2"}`, in the order given, each value a Go
/// string literal: `"` and `\` are escaped, control characters are written as Go escapes
/// (`\n`, `\t`, `\x00`, `\u0085`), every other character as it is. [`parse_labels`] reads it back.
pub fn format_labels(labels: &[(String, String)]) -> String {
    let mut out = String::with_capacity(2 + labels.iter().map(|(n, v)| n.len() + v.len() + 5).sum::<usize>());
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push('=');
        quote(value, &mut out);
    }
    out.push('}');
    out
}

fn quote(value: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct LabelsParser<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> LabelsParser<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.at..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            Some(c) => format!("expected {wanted} at byte {}, found {c:?}", self.at),
            None => format!("expected {wanted} at byte {}, found the end", self.at),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(self.unexpected(&format!("`{c}`"))) }
    }

    fn end(&mut self, pairs: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
        self.skip_space();
        match self.peek() {
            None => Ok(pairs),
            Some(_) => Err(self.unexpected("the end after `}`")),
        }
    }

    /// A label name: everything up to a space, an operator, a quote or a delimiter.
    fn name(&mut self) -> Result<&'a str, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| {
            !c.is_whitespace() && !matches!(c, '=' | '!' | '~' | ',' | '{' | '}' | '"' | '`')
        }) {
            self.bump();
        }
        if self.at == start {
            return Err(self.unexpected("a label name"));
        }
        Ok(&self.s[start..self.at])
    }

    fn equals(&mut self, name: &str) -> Result<(), String> {
        let at = self.at;
        let rest = &self.s[at..];
        for op in ["=~", "!=", "!~"] {
            if rest.starts_with(op) {
                return Err(format!(
                    "label {name:?} has the matcher `{op}` at byte {at}: a labels string takes only `=`"
                ));
            }
        }
        if self.eat('=') { Ok(()) } else { Err(self.unexpected(&format!("`=` after label name {name:?}"))) }
    }

    fn value(&mut self, name: &str) -> Result<String, String> {
        let start = self.at;
        if self.eat('`') {
            let Some(len) = self.s[self.at..].find('`') else {
                return Err(format!("the value of label {name:?} at byte {start} has no closing backquote"));
            };
            let value = self.s[self.at..self.at + len].to_string();
            self.at += len + 1;
            return Ok(value);
        }
        if !self.eat('"') {
            return Err(self.unexpected(&format!("a quoted value for label {name:?}")));
        }
        let bad = |what: String| format!("the value of label {name:?} at byte {start}: {what}");
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.bump() else { return Err(bad("no closing quote".into())) };
            match c {
                '"' => break,
                '\n' => return Err(bad("a newline inside the quotes".into())),
                '\\' => {
                    let Some(e) = self.bump() else { return Err(bad("no closing quote".into())) };
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
                    if let Some(b) = simple {
                        bytes.push(b);
                        continue;
                    }
                    match e {
                        'x' => bytes.push(self.digits(2, 16).map_err(bad)? as u8),
                        '0'..='7' => {
                            let rest = self.digits(2, 8).map_err(bad)?;
                            let v = (e as u32 - '0' as u32) * 64 + rest;
                            let v = u8::try_from(v)
                                .map_err(|_| bad(format!("octal escape \\{e}.. is over 255")))?;
                            bytes.push(v);
                        }
                        'u' | 'U' => {
                            let n = if e == 'u' { 4 } else { 8 };
                            let v = self.digits(n, 16).map_err(bad)?;
                            let c = char::from_u32(v).ok_or_else(|| {
                                bad(format!("escape \\{e}{v:0n$x} is not a Unicode character"))
                            })?;
                            let mut buf = [0u8; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        other => return Err(bad(format!("unknown escape sequence \\{other}"))),
                    }
                }
                c => {
                    let mut buf = [0u8; 4];
                    bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        String::from_utf8(bytes).map_err(|_| bad("the escapes make invalid UTF-8".into()))
    }

    fn digits(&mut self, n: usize, radix: u32) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.peek().and_then(|c| c.to_digit(radix));
            let Some(d) = d else {
                let kind = if radix == 16 { "hexadecimal" } else { "octal" };
                return Err(format!("an escape needs {n} {kind} digits at byte {}", self.at));
            };
            self.bump();
            v = v * radix + d;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn timestamps_round_trip_through_nanoseconds() {
        for ns in [0, 1, 1_700_000_000_123_456_789, -1] {
            assert_eq!(Timestamp::from_unix_nanos(ns).unix_nanos(), ns);
        }
    }

    #[test]
    fn a_push_request_round_trips() {
        let request = PushRequest {
            streams: vec![Stream {
                labels: r#"{app="api"}"#.into(),
                entries: vec![Entry {
                    timestamp: Some(Timestamp { seconds: 1, nanos: 2 }),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPair { name: "trace_id".into(), value: "abc".into() }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
        };
        assert_eq!(PushRequest::decode(request.encode_to_vec().as_slice()).unwrap(), request);
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parse_labels_reads_pairs_in_the_order_written() {
        assert_eq!(
            parse_labels(r#"{env="prod", app="api"}"#).unwrap(),
            pairs(&[("env", "prod"), ("app", "api")])
        );
        assert_eq!(
            parse_labels(" { a = \"1\" ,b=`raw \\n`}  ").unwrap(),
            pairs(&[("a", "1"), ("b", "raw \\n")])
        );
        assert_eq!(parse_labels("{}").unwrap(), pairs(&[]));
    }

    #[test]
    fn parse_labels_decodes_go_escapes() {
        let got = parse_labels(r#"{a="q\"b\\s\n\t\x41\101\u00e9\U0001F600"}"#).unwrap();
        assert_eq!(got, pairs(&[("a", "q\"b\\s\n\tAAé😀")]));
    }

    #[test]
    fn parse_labels_refuses_what_is_not_a_label_set() {
        for (text, why) in [
            ("app=\"x\"", "expected `{`"),
            ("{app=\"x\"", "expected `,` or `}`"),
            ("{app=~\"x\"}", "only `=`"),
            ("{app!=\"x\"}", "only `=`"),
            ("{app=x}", "a quoted value"),
            ("{app=\"x}", "no closing quote"),
            ("{=\"x\"}", "a label name"),
            ("{a=\"1\",}", "a label name"),
            ("{a=\"\\q\"}", "unknown escape"),
            ("{a=\"\\x4\"}", "2 hexadecimal digits"),
            ("{a=\"\\777\"}", "over 255"),
            ("{a=\"\\xff\"}", "invalid UTF-8"),
            ("{a=\"\\uD800\"}", "not a Unicode character"),
            ("{a=\"1\"} x", "the end after `}`"),
        ] {
            let err = parse_labels(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn format_labels_round_trips_through_parse_labels() {
        let labels = pairs(&[("a", "1"), ("b", "q\"b\\s\n\u{0}\u{7f}\u{85}é 😀")]);
        let text = format_labels(&labels);
        assert_eq!(text, "{a=\"1\", b=\"q\\\"b\\\\s\\n\\x00\\x7f\\u0085é 😀\"}");
        assert_eq!(parse_labels(&text).unwrap(), labels);
        assert_eq!(format_labels(&[]), "{}");
    }
}

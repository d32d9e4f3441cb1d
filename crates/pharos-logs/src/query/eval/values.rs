//! Converting label values as Loki does (Go's `strconv.ParseFloat`, `time.ParseDuration`,
//! go-humanize's `ParseBytes`), IP address matching, and Go's float formatting.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::EvalError;
use crate::query::CmpOp;

/// A label value as a float, or Go's error text.
pub(super) fn parse_float(text: &str) -> Result<f64, String> {
    // Rust accepts what Go accepts in decimal (and `inf`, `infinity`, `nan` in any case);
    // Go's hexadecimal floats and underscores are not accepted here.
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'));
    match text.parse::<f64>() {
        Ok(v) if ok => Ok(v),
        _ => Err(format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(text))),
    }
}

/// A Go duration (`1h15m30.5s`, `-250ms`, `0`) in nanoseconds, or Go's error text.
pub(super) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {}", go_quote(text));
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (int_part, after) = rest.split_at(int_len);
        let (frac_part, after) = match after.strip_prefix('.') {
            Some(after_dot) => {
                let len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
                after_dot.split_at(len)
            }
            None => ("", after),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration {}", go_quote(text)));
        }
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {} in duration {}", go_quote(unit), go_quote(text))),
        };
        let int_value: i128 =
            if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| invalid())? };
        let mut component = int_value.checked_mul(scale).ok_or_else(invalid)?;
        let mut divisor: i128 = 1;
        for digit in frac_part.bytes().take(18) {
            divisor *= 10;
            component += i128::from(digit - b'0') * scale / divisor;
        }
        total = total.checked_add(component).ok_or_else(invalid)?;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
        rest = after;
    }
    Ok(if negative { -total } else { total })
}

/// A byte size as go-humanize reads it (`5 MB`, `3k`, `1.5GiB`, `42`), or its error text.
pub(super) fn parse_humanized_bytes(text: &str) -> Result<u64, String> {
    let number_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ',')).unwrap_or(text.len());
    let number: String = text[..number_end].chars().filter(|&c| c != ',').collect();
    let value: f64 = number
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(&number)))?;
    let unit = text[number_end..].trim().to_ascii_lowercase();
    let scale: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1_048_576.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1_073_741_824.0,
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1_099_511_627_776.0,
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1_125_899_906_842_624.0,
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1_152_921_504_606_846_976.0,
        _ => return Err(format!("unhandled size name: {unit}")),
    };
    let bytes = value * scale;
    if bytes >= u64::MAX as f64 {
        return Err(format!("too large: {text}"));
    }
    Ok(bytes as u64)
}

/// `a op b`.
pub(super) fn compare<T: PartialOrd>(op: CmpOp, a: T, b: T) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Neq => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Gte => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Lte => a <= b,
    }
}

/// `text` quoted as Go's `%q` does (control characters escaped, the rest kept).
pub(super) fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as Go's `%v` prints a float64: the shortest representation that reads back,
/// with an exponent below 1e-4 and from 1e6 up (`1e+06`, `123456`, `0.0001`).
pub(super) fn go_float(value: f64) -> String {
    format_float_g(value, 6)
}

/// `value` as `%g` with the shortest precision: an exponent from `10^exp_from` up.
pub(super) fn format_float_g(value: f64, exp_from: i32) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let sci = format!("{:e}", value.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if value < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= exp_from {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{dot}e{exp_sign}{:02}", exp.abs());
    }
    let n = digits.len() as i32;
    let body = if exp < 0 {
        format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
    } else if exp + 1 >= n {
        format!("{digits}{}", "0".repeat((exp + 1 - n) as usize))
    } else {
        let (int, frac) = digits.split_at((exp + 1) as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// The addresses of an `ip("...")`: one address, a range `a-b` or a CIDR `a/n`.
#[derive(Debug, Clone)]
pub(super) struct IpMatcher {
    v4: bool,
    low: u128,
    high: u128,
}

fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

impl IpMatcher {
    pub(super) fn new(pattern: &str) -> Result<Self, EvalError> {
        let invalid = || EvalError::InvalidIp { pattern: pattern.to_owned() };
        let text = pattern.trim();
        if let Some((addr, bits)) = text.split_once('/') {
            let (v4, value) = ip_bits(addr.trim().parse().map_err(|_| invalid())?);
            let width = if v4 { 32 } else { 128 };
            let bits: u32 = bits.trim().parse().map_err(|_| invalid())?;
            if bits > width {
                return Err(invalid());
            }
            let host_bits = width - bits;
            let mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
            return Ok(Self { v4, low: value & !mask, high: value | mask });
        }
        if let Some((from, to)) = text.split_once('-') {
            let (v4_from, low) = ip_bits(from.trim().parse().map_err(|_| invalid())?);
            let (v4_to, high) = ip_bits(to.trim().parse().map_err(|_| invalid())?);
            if v4_from != v4_to || low > high {
                return Err(invalid());
            }
            return Ok(Self { v4: v4_from, low, high });
        }
        let (v4, value) = ip_bits(text.parse().map_err(|_| invalid())?);
        Ok(Self { v4, low: value, high: value })
    }

    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        let (v4, value) = ip_bits(ip);
        v4 == self.v4 && self.low <= value && value <= self.high
    }

    /// Whether `value` is one address in the set.
    pub(super) fn matches_value(&self, value: &str) -> bool {
        value.trim().parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }

    /// Whether `line` holds an address in the set: every run of digits and dots is tried as
    /// an IPv4 address and every run of hex digits, colons and dots as an IPv6 address.
    pub(super) fn matches_line(&self, line: &str) -> bool {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if !(b.is_ascii_hexdigit() || b == b':') {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_hexdigit() || bytes[i] == b':' || bytes[i] == b'.') {
                i += 1;
            }
            if self.run_matches(&line[start..i]) {
                return true;
            }
        }
        false
    }

    fn run_matches(&self, run: &str) -> bool {
        if self.v4 {
            // IPv4 candidates are the digit-and-dot pieces of the run (`10.0.0.1:8080`).
            return run
                .split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map(|piece| piece.trim_matches('.'))
                .any(|piece| piece.parse::<Ipv4Addr>().is_ok_and(|ip| self.contains(IpAddr::V4(ip))));
        }
        if run.matches(':').count() < 2 {
            return false;
        }
        let run = run.trim_end_matches('.');
        run.parse::<Ipv6Addr>().is_ok_and(|ip| self.contains(IpAddr::V6(ip)))
    }
}

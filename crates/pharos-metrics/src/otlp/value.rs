//! Attribute values as label values, formatted as Prometheus's OTLP receiver formats them
//! (the collector's `pcommon.Value.AsString`): strings as they are, booleans `true`/`false`,
//! integers in decimal, doubles as JavaScript prints numbers, bytes in standard base64, and
//! arrays and maps as JSON (map keys sorted, HTML characters escaped as Go does).

use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// The label value for an attribute value; empty for an absent value.
pub(crate) fn label_value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format_double(*d),
        Some(Value::BytesValue(b)) => base64(b),
        Some(Value::StringValueStrindex(i)) => i.to_string(),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => {
            let mut out = String::new();
            write_json(&mut out, Some(v), 0);
            out
        }
    }
}

/// Formats a double as ECMAScript's `Number.prototype.toString` (Go's JSON encoder does the
/// same): shortest round-trip digits, exponent notation below 1e-6 and from 1e21.
/// Non-finite values print as Prometheus prints them (`NaN`, `+Inf`, `-Inf`).
pub(crate) fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "+Inf".to_owned() } else { "-Inf".to_owned() };
    }
    let abs = d.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{d:e}");
        match s.split_once('e') {
            Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
            _ => s,
        }
    } else if d == 0.0 {
        "0".to_owned()
    } else {
        format!("{d}")
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Nesting deeper than this is written as `null` (attribute limits upstream keep real data
/// far below it; the bound only keeps hostile input from exhausting the stack).
const MAX_JSON_DEPTH: usize = 64;

fn write_json(out: &mut String, value: Option<&Value>, depth: usize) {
    if depth > MAX_JSON_DEPTH {
        out.push_str("null");
        return;
    }
    match value {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_string(out, s),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) if d.is_finite() => out.push_str(&format_double(*d)),
        Some(Value::DoubleValue(d)) => write_json_string(out, &format_double(*d)),
        Some(Value::BytesValue(b)) => write_json_string(out, &base64(b)),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, v.value.as_ref(), depth + 1);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kv)) => {
            // Go marshals a map: keys sorted, a repeated key keeps its last value.
            let mut entries: Vec<&KeyValue> = Vec::with_capacity(kv.values.len());
            for e in &kv.values {
                match entries.iter_mut().find(|x| x.key == e.key) {
                    Some(slot) => *slot = e,
                    None => entries.push(e),
                }
            }
            entries.sort_by(|a, b| a.key.cmp(&b.key));
            out.push('{');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, &e.key);
                out.push(':');
                write_json(out, e.value.as_ref().and_then(|v| v.value.as_ref()), depth + 1);
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn label_value_scalars_format_like_prometheus() {
        assert_eq!(label_value(Some(&any(Value::StringValue("GET".into())))), "GET");
        assert_eq!(label_value(Some(&any(Value::BoolValue(true)))), "true");
        assert_eq!(label_value(Some(&any(Value::IntValue(-42)))), "-42");
        assert_eq!(label_value(Some(&any(Value::DoubleValue(1.5)))), "1.5");
        assert_eq!(label_value(Some(&any(Value::DoubleValue(3.0)))), "3");
        assert_eq!(label_value(Some(&any(Value::BytesValue(b"hello".to_vec())))), "aGVsbG8=");
        assert_eq!(label_value(None), "");
    }

    #[test]
    fn format_double_uses_exponent_outside_javascript_range() {
        assert_eq!(format_double(1e21), "1e+21");
        assert_eq!(format_double(1.5e-7), "1.5e-7");
        assert_eq!(format_double(123456789.0), "123456789");
        assert_eq!(format_double(0.000001), "0.000001");
        assert_eq!(format_double(-0.0), "0");
        assert_eq!(format_double(f64::INFINITY), "+Inf");
    }

    #[test]
    fn label_value_array_and_map_are_json() {
        let arr = any(Value::ArrayValue(ArrayValue {
            values: vec![
                any(Value::StringValue("a<b".into())),
                any(Value::IntValue(1)),
                any(Value::BoolValue(false)),
            ],
        }));
        assert_eq!(label_value(Some(&arr)), r#"["a\u003cb",1,false]"#);
        let kv = |k: &str, v: Value| KeyValue { key: k.into(), value: Some(any(v)), ..Default::default() };
        let map = any(Value::KvlistValue(KeyValueList {
            values: vec![kv("z", Value::DoubleValue(0.5)), kv("a", Value::StringValue("x\"y".into()))],
        }));
        assert_eq!(label_value(Some(&map)), r#"{"a":"x\"y","z":0.5}"#);
    }
}

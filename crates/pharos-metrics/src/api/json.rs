//! JSON output in the exact shape Prometheus writes: values as strings formatted like Go's
//! `strconv.FormatFloat(v, 'f', -1, 64)`, timestamps as seconds with up to three decimals.

use std::fmt::Write;

use crate::model::{Labels, Sample, Series};
use crate::query::{QueryValue, VectorSample};

/// Appends `s` as a JSON string.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a millisecond timestamp as seconds (`1435781451.781`, `4`).
pub(crate) fn push_timestamp(out: &mut String, ms: i64) {
    let abs = ms.unsigned_abs();
    if ms < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}", abs / 1000);
    let frac = abs % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// Appends a float value as a JSON string (`"1.5"`, `"NaN"`, `"+Inf"`).
pub(crate) fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "\"+Inf\"" } else { "\"-Inf\"" });
    } else {
        let _ = write!(out, "\"{v}\"");
    }
}

/// Appends a label set as a JSON object in label order.
pub(crate) fn push_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, &l.name);
        out.push(':');
        push_str(out, &l.value);
    }
    out.push('}');
}

/// Appends `[ts,"value"]`.
pub(crate) fn push_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    push_timestamp(out, t);
    out.push(',');
    push_value(out, v);
    out.push(']');
}

/// Appends a list of strings.
pub(crate) fn push_str_list<S: AsRef<str>>(out: &mut String, items: &[S]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, s.as_ref());
    }
    out.push(']');
}

fn push_vector(out: &mut String, v: &[VectorSample]) {
    out.push('[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(out, &s.labels);
        out.push_str(r#","value":"#);
        push_point(out, s.t, s.v);
        out.push('}');
    }
    out.push(']');
}

fn push_matrix(out: &mut String, m: &[Series]) {
    out.push('[');
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        push_labels(out, &s.labels);
        out.push_str(r#","values":["#);
        for (j, Sample { t, v }) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            push_point(out, *t, *v);
        }
        out.push_str("]}");
    }
    out.push(']');
}

/// The `data` of a query response: `{"resultType":..,"result":..}`.
pub(crate) fn query_data(value: &QueryValue) -> String {
    let mut out = String::from(r#"{"resultType":"#);
    match value {
        QueryValue::Scalar { t, v } => {
            out.push_str(r#""scalar","result":"#);
            push_point(&mut out, *t, *v);
        }
        QueryValue::String { t, value } => {
            out.push_str(r#""string","result":["#);
            push_timestamp(&mut out, *t);
            out.push(',');
            push_str(&mut out, value);
            out.push(']');
        }
        QueryValue::Vector(v) => {
            out.push_str(r#""vector","result":"#);
            push_vector(&mut out, v);
        }
        QueryValue::Matrix(m) => {
            out.push_str(r#""matrix","result":"#);
            push_matrix(&mut out, m);
        }
    }
    out.push('}');
    out
}

/// The success envelope around `data` (already JSON), with optional warnings.
pub(crate) fn success(data: &str, warnings: &[String]) -> String {
    success_with_infos(data, warnings, &[])
}

/// [`success`] with infos too (Prometheus 3's `infos`, beside `warnings`).
pub(crate) fn success_with_infos(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str(r#"{"status":"success","data":"#);
    out.push_str(data);
    for (key, list) in [("warnings", warnings), ("infos", infos)] {
        if !list.is_empty() {
            out.push_str(&format!(r#","{key}":"#));
            push_str_list(&mut out, list);
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_timestamps_format_like_prometheus() {
        let mut s = String::new();
        push_point(&mut s, 1_435_781_451_781, 1.0);
        push_point(&mut s, 4000, 2.0);
        push_point(&mut s, -1500, f64::NAN);
        push_point(&mut s, 1050, f64::NEG_INFINITY);
        push_point(&mut s, 0, 1e21);
        push_point(&mut s, 0, 0.1);
        assert_eq!(
            s,
            r#"[1435781451.781,"1"][4,"2"][-1.500,"NaN"][1.050,"-Inf"][0,"1000000000000000000000"][0,"0.1"]"#
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
    }
}

//! Request parameters as Prometheus reads them: URL query and form body merged, times as
//! RFC3339 or float seconds, durations as float seconds or `5m`-style, and Grafana's
//! `U__` escaping of label names.

use axum::extract::{Form, FromRequest, Query, Request};
use axum::http::{Method, header};

use super::error::ApiError;

/// Every parameter of a request: form body values first, then the URL's, as Go's
/// `Request.ParseForm` orders them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The first value of `key`, if any and not empty.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// Every value of `key` (for repeated parameters such as `match[]`).
    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// The value of `key`, or a `bad_data` error naming it.
    pub(crate) fn required(&self, key: &'static str) -> Result<&str, ApiError> {
        self.get(key).ok_or(ApiError::MissingParam { param: key })
    }

    /// The time in `key` (ms), or `default` when absent.
    pub(crate) fn time_or(&self, key: &'static str, default: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(s) => parse_time(s).map_err(|reason| ApiError::BadParam { param: key, reason }),
        }
    }

    /// The optional non-negative integer in `key`; Prometheus treats 0 and negatives as
    /// "no limit".
    pub(crate) fn limit(&self, key: &'static str) -> Result<Option<usize>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n > 0 => Ok(usize::try_from(n).ok()),
                Ok(_) => Ok(None),
                Err(_) => Err(ApiError::BadParam {
                    param: key,
                    reason: format!("cannot parse {s:?} to an integer"),
                }),
            },
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let url: Vec<(String, String)> = match Query::try_from_uri(req.uri()) {
            Ok(Query(pairs)) => pairs,
            Err(e) => return Err(ApiError::BadForm { reason: e.body_text() }),
        };
        let is_form =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
                ct.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded")
            });
        let mut pairs = Vec::new();
        if req.method() == Method::POST && is_form {
            match Form::<Vec<(String, String)>>::from_request(req, state).await {
                Ok(Form(body)) => pairs = body,
                Err(e) => return Err(ApiError::BadForm { reason: e.body_text() }),
            }
        }
        pairs.extend(url);
        Ok(Self(pairs))
    }
}

/// Prometheus's `minTime` and `maxTime` as clients spell them.
const MIN_TIME_TEXT: &str = "-292273086-05-16T16:47:06Z";
const MAX_TIME_TEXT: &str = "292277025-08-18T07:12:54.999999999Z";

/// Parses a timestamp given as float seconds (millisecond precision, rounded) or RFC3339.
pub(crate) fn parse_time(s: &str) -> Result<i64, String> {
    let invalid = || format!("cannot parse {s:?} to a valid timestamp");
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(invalid());
        }
        let secs = f.trunc();
        // ±9.2e15 s is the range of i64 milliseconds.
        if secs.abs() >= 9.2e15 {
            return Err(invalid());
        }
        let ms = ((f - secs) * 1000.0).round() as i64;
        return (secs as i64).checked_mul(1000).and_then(|v| v.checked_add(ms)).ok_or_else(invalid);
    }
    match s {
        MIN_TIME_TEXT => return Ok(i64::MIN),
        MAX_TIME_TEXT => return Ok(i64::MAX),
        _ => {}
    }
    parse_rfc3339(s).ok_or_else(invalid)
}

/// RFC3339 to ms since the epoch, the fraction truncated (as Prometheus's `timestamp.FromTime`).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (secs, nanos) = pharos_core::time::parse_rfc3339(s)?;
    secs.checked_mul(1000)?.checked_add(i64::from(nanos / 1_000_000))
}

/// Parses a duration given as float seconds or as `1h30m`-style text, to ms.
pub(crate) fn parse_duration_ms(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms.abs() >= 9.2e18 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms.round() as i64);
    }
    // Floats (including "inf" and "nan") were handled above, so the parser's own float
    // path, which panics on those, is never reached.
    match promql_parser::util::parse_duration(s) {
        Ok(d) => i64::try_from(d.as_millis()).map_err(|_| format!("cannot parse {s:?} to a valid duration")),
        Err(_) => Err(format!("cannot parse {s:?} to a valid duration")),
    }
}

/// Undoes the `U__` value-encoding escape Grafana applies to label names that are not
/// legacy names: `__` is `_`, `_<hex>_` is that code point. An `_` that starts no valid
/// escape is kept as is (so the loosely escaped `U__http_2e_status_code` also decodes to
/// `http.status_code`). Names without the prefix are returned unchanged.
pub(crate) fn unescape_label_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("U__") else { return name.to_owned() };
    let b = rest.as_bytes();
    let mut out = String::with_capacity(rest.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'_' {
            let ch_len = rest[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[i..i + ch_len]);
            i += ch_len;
            continue;
        }
        if b.get(i + 1) == Some(&b'_') {
            out.push('_');
            i += 2;
            continue;
        }
        // `_` hex{1,6} `_`
        let hex_len = b[i + 1..].iter().take(7).take_while(|c| c.is_ascii_hexdigit()).count();
        let decoded = (1..=6)
            .contains(&hex_len)
            .then(|| b.get(i + 1 + hex_len) == Some(&b'_'))
            .filter(|&closed| closed)
            .and_then(|_| u32::from_str_radix(&rest[i + 1..i + 1 + hex_len], 16).ok())
            .and_then(char::from_u32);
        match decoded {
            Some(c) => {
                out.push(c);
                i += hex_len + 2;
            }
            None => {
                out.push('_');
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_time_accepts_float_seconds_and_rfc3339() {
        assert_eq!(parse_time("4"), Ok(4000));
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("-1.5"), Ok(-1500));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T22:10:51+02:00"), Ok(1_435_781_451_000));
        assert_eq!(parse_time("1970-01-01T00:00:00.9999Z"), Ok(999));
        assert_eq!(parse_time("1970-01-01T00:00:00.5Z"), Ok(500));
        assert_eq!(parse_time(MAX_TIME_TEXT), Ok(i64::MAX));
        for bad in [
            "",
            "abc",
            "NaN",
            "inf",
            "1e30",
            "2015-13-01T00:00:00Z",
            "2015-02-30T00:00:00Z",
            "2015-07-01T20:10:51",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parse_duration_accepts_float_seconds_and_units() {
        assert_eq!(parse_duration_ms("15"), Ok(15_000));
        assert_eq!(parse_duration_ms("0.5"), Ok(500));
        assert_eq!(parse_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert!(parse_duration_ms("inf").is_err());
        assert!(parse_duration_ms("-inf").is_err());
        assert!(parse_duration_ms("5x").is_err());
    }

    #[test]
    fn unescape_label_name_decodes_grafana_escapes() {
        assert_eq!(unescape_label_name("U__http_2e_status_code"), "http.status_code");
        assert_eq!(unescape_label_name("U__http_2e_status__code"), "http.status_code");
        assert_eq!(unescape_label_name("U__service_2e_name"), "service.name");
        assert_eq!(unescape_label_name("U___1f600_"), "\u{1f600}");
        assert_eq!(unescape_label_name("job"), "job");
        assert_eq!(unescape_label_name("U__a_zz"), "a_zz");
    }
}

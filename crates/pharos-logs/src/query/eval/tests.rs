//! The evaluator over in-memory streams; every expected value is computed by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pharos_core::ErrorCode;

use super::labels::LabelState;
use super::template::{Data, Template};
use super::values::{go_float, parse_go_duration, parse_humanized_bytes};
use super::*;
use crate::model::{Entry, Labels, MemSource};
use crate::query::{Expr, LogQuery, parse};

const S: i64 = 1_000_000_000;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

type Pairs<'a> = &'a [(&'a str, &'a str)];
/// (seconds, line, metadata).
type MetadataEntries<'a> = &'a [(i64, &'a str, Pairs<'a>)];

/// `streams`: (labels, [(seconds, line, metadata)]).
fn source_with_metadata(streams: &[(Pairs<'_>, MetadataEntries<'_>)]) -> MemSource {
    let mut source = MemSource::default();
    for (stream, entries) in streams {
        let stream = labels(stream);
        for (secs, line, metadata) in *entries {
            source.push(
                &stream,
                Entry {
                    timestamp: secs * S,
                    line: line.to_string(),
                    metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                },
            );
        }
    }
    source.finish()
}

/// `streams`: (labels, [(seconds, line)]).
fn source(streams: &[(Pairs<'_>, &[(i64, &str)])]) -> MemSource {
    let mut source = MemSource::default();
    for (stream, entries) in streams {
        let stream = labels(stream);
        for (secs, line) in *entries {
            source.push(&stream, Entry { timestamp: secs * S, line: line.to_string(), metadata: Vec::new() });
        }
    }
    source.finish()
}

fn log_query(query: &str) -> LogQuery {
    match parse(query).unwrap_or_else(|e| panic!("{query}: {e}")) {
        Expr::Log(q) => q,
        Expr::Metric(_) => panic!("{query} is not a log query"),
    }
}

fn metric(query: &str) -> Expr {
    let expr = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert!(expr.is_metric(), "{query}");
    expr
}

fn run_logs(src: &MemSource, query: &str) -> Result<(Vec<LogStream>, Stats), EvalError> {
    select_logs(&log_query(query), src, 0, 2_000_000_000 * S, Direction::Forward, 100, &Limits::default())
}

/// Every (labels, line) of a forward log query, in time order across streams.
fn lines(src: &MemSource, query: &str) -> Vec<(String, String)> {
    let (streams, _) = run_logs(src, query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut out: Vec<(i64, String, String)> = streams
        .into_iter()
        .flat_map(|s| {
            let l = s.labels.to_string();
            s.entries.into_iter().map(move |e| (e.timestamp, l.clone(), e.line))
        })
        .collect();
    out.sort_by_key(|e| e.0);
    out.into_iter().map(|(_, labels, line)| (labels, line)).collect()
}

/// Just the lines.
fn only_lines(src: &MemSource, query: &str) -> Vec<String> {
    lines(src, query).into_iter().map(|(_, line)| line).collect()
}

fn instant_result(src: &MemSource, query: &str, secs: i64) -> Result<QueryValue, EvalError> {
    evaluate_instant(&metric(query), src, secs * S, &Limits::default()).map(|(v, _)| v)
}

/// (labels, value) of an instant vector query at `secs`.
fn instant(src: &MemSource, query: &str, secs: i64) -> Vec<(String, f64)> {
    match instant_result(src, query, secs).unwrap_or_else(|e| panic!("{query}: {e}")) {
        QueryValue::Vector(samples) => {
            for s in &samples {
                assert_eq!(s.timestamp, secs * S);
            }
            samples.into_iter().map(|s| (s.labels.to_string(), s.value)).collect()
        }
        other => panic!("{query}: expected a vector, got {other:?}"),
    }
}

fn instant_err(src: &MemSource, query: &str, secs: i64) -> EvalError {
    match instant_result(src, query, secs) {
        Err(e) => e,
        Ok(v) => panic!("{query}: expected an error, got {v:?}"),
    }
}

/// (labels, [(seconds, value)]) of a range query.
fn range(src: &MemSource, query: &str, start: i64, end: i64, step: i64) -> Vec<(String, Vec<(i64, f64)>)> {
    let (value, _) = evaluate_range(&metric(query), src, start * S, end * S, step * S, &Limits::default())
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    match value {
        QueryValue::Matrix(series) => series
            .into_iter()
            .map(|s| (s.labels.to_string(), s.points.into_iter().map(|(t, v)| (t / S, v)).collect()))
            .collect(),
        other => panic!("{query}: expected a matrix, got {other:?}"),
    }
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn assert_samples(actual: &[(String, f64)], expected: &[(&str, f64)]) {
    assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
    for ((al, av), (el, ev)) in actual.iter().zip(expected) {
        assert_eq!(al, el, "{actual:?} vs {expected:?}");
        assert!(approx(*av, *ev), "{al}: {av} vs {ev}");
    }
}

/// {app=api, level=info}: 10s 20s 30s; {app=api, level=error}: 15s 25s; {app=web, level=info}: 5s.
fn levels() -> MemSource {
    source(&[
        (&[("app", "api"), ("level", "info")], &[(10, "i1"), (20, "i2"), (30, "i3")]),
        (&[("app", "api"), ("level", "error")], &[(15, "e1"), (25, "e2 longer")]),
        (&[("app", "web"), ("level", "info")], &[(5, "w1")]),
    ])
}

// ---- log queries: selection, limits, order ------------------------------------------------

#[test]
fn select_logs_backward_limit_keeps_newest_across_streams() {
    let src = source(&[
        (&[("s", "a")], &[(1, "a1"), (3, "a3"), (5, "a5")]),
        (&[("s", "b")], &[(2, "b2"), (4, "b4"), (6, "b6")]),
    ]);
    let (streams, stats) = select_logs(
        &log_query(r#"{s=~"a|b"}"#),
        &src,
        0,
        100 * S,
        Direction::Backward,
        3,
        &Limits::default(),
    )
    .expect("query");
    let got: Vec<(String, Vec<&str>)> = streams
        .iter()
        .map(|s| (s.labels.to_string(), s.entries.iter().map(|e| e.line.as_str()).collect()))
        .collect();
    assert_eq!(
        got,
        vec![(r#"{s="a"}"#.to_string(), vec!["a5"]), (r#"{s="b"}"#.to_string(), vec!["b6", "b4"])]
    );
    assert_eq!(stats.entries_returned, 3);
    assert_eq!(stats.streams_selected, 2);
    assert_eq!(stats.lines_processed, 6);
    assert_eq!(stats.bytes_processed, 12);
}

#[test]
fn select_logs_forward_limit_keeps_oldest_in_time_order() {
    let src = source(&[
        (&[("s", "a")], &[(1, "a1"), (3, "a3"), (5, "a5")]),
        (&[("s", "b")], &[(2, "b2"), (4, "b4")]),
    ]);
    let (streams, _) =
        select_logs(&log_query(r#"{s=~"a|b"}"#), &src, 0, 100 * S, Direction::Forward, 3, &Limits::default())
            .expect("query");
    let got: Vec<Vec<i64>> =
        streams.iter().map(|s| s.entries.iter().map(|e| e.timestamp / S).collect()).collect();
    assert_eq!(got, vec![vec![1, 3], vec![2]]);
}

#[test]
fn select_logs_range_includes_start_and_excludes_end() {
    let src = source(&[(&[("s", "a")], &[(9, "before"), (10, "start"), (19, "inside"), (20, "end")])]);
    let (streams, _) = select_logs(
        &log_query(r#"{s="a"}"#),
        &src,
        10 * S,
        20 * S,
        Direction::Forward,
        10,
        &Limits::default(),
    )
    .expect("query");
    let got: Vec<&str> = streams[0].entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(got, vec!["start", "inside"]);
}

#[test]
fn select_logs_limit_above_max_entries_is_rejected() {
    let src = levels();
    let limits = Limits { max_entries: 10, ..Limits::default() };
    let err =
        select_logs(&log_query(r#"{app="api"}"#), &src, 0, S, Direction::Backward, 11, &limits).unwrap_err();
    assert!(matches!(err, EvalError::TooManyEntries { requested: 11, limit: 10 }), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidInput);
}

#[test]
fn select_logs_bytes_over_limit_is_too_large() {
    let src = levels();
    // {app="api"} has 2 + 2 + 2 + 2 + 9 = 17 bytes.
    let limits = Limits { max_bytes_scanned: 16, ..Limits::default() };
    let err = select_logs(&log_query(r#"{app="api"}"#), &src, 0, 100 * S, Direction::Backward, 10, &limits)
        .unwrap_err();
    assert!(matches!(err, EvalError::TooManyBytes { scanned: 17, limit: 16 }), "{err}");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    assert!(err.to_string().contains("max_bytes_scanned"));
    let limits = Limits { max_bytes_scanned: 17, ..Limits::default() };
    assert!(
        select_logs(&log_query(r#"{app="api"}"#), &src, 0, 100 * S, Direction::Backward, 10, &limits).is_ok()
    );
}

#[test]
fn select_logs_past_deadline_times_out() {
    let src = levels();
    let limits = Limits { deadline: Some(Instant::now() - Duration::from_secs(1)), ..Limits::default() };
    let err = select_logs(&log_query(r#"{app="api"}"#), &src, 0, 100 * S, Direction::Backward, 10, &limits)
        .unwrap_err();
    assert!(matches!(err, EvalError::Timeout));
    assert_eq!(err.code(), ErrorCode::Unavailable);
    let err =
        evaluate_instant(&metric(r#"count_over_time({app="api"}[1m])"#), &src, 60 * S, &limits).unwrap_err();
    assert!(matches!(err, EvalError::Timeout));
}

#[test]
fn select_logs_metric_query_functions_reject_log_queries() {
    let src = levels();
    let err =
        evaluate_instant(&parse(r#"{app="api"}"#).expect("parse"), &src, S, &Limits::default()).unwrap_err();
    assert!(matches!(err, EvalError::Unsupported { .. }), "{err}");
}

// ---- line filters ---------------------------------------------------------------------

fn text_lines() -> MemSource {
    source(&[(
        &[("app", "t")],
        &[
            (1, "GET /api 200 took 5ms"),
            (2, "POST /api 500 error timeout"),
            (3, "GET /health 200"),
            (4, "client 10.0.0.7:443 connected"),
            (5, "client 192.168.1.20 refused"),
            (6, "peer [2001:db8::5]:80 ok"),
        ],
    )])
}

#[test]
fn line_filter_contains_and_not_contains() {
    let src = text_lines();
    assert_eq!(only_lines(&src, r#"{app="t"} |= "GET""#), vec!["GET /api 200 took 5ms", "GET /health 200"]);
    assert_eq!(only_lines(&src, r#"{app="t"} |= "GET" != "health""#), vec!["GET /api 200 took 5ms"]);
}

#[test]
fn line_filter_or_keeps_any_and_negated_or_keeps_none() {
    let src = text_lines();
    assert_eq!(
        only_lines(&src, r#"{app="t"} |= "POST" or "health""#),
        vec!["POST /api 500 error timeout", "GET /health 200"]
    );
    assert_eq!(
        only_lines(&src, r#"{app="t"} != "GET" or "client""#),
        vec!["POST /api 500 error timeout", "peer [2001:db8::5]:80 ok"]
    );
}

#[test]
fn line_filter_regex_is_unanchored() {
    let src = text_lines();
    assert_eq!(only_lines(&src, r#"{app="t"} |~ "5\\d\\d""#), vec!["POST /api 500 error timeout"]);
    assert_eq!(only_lines(&src, r#"{app="t"} |~ "(?i)get" !~ "api""#), vec!["GET /health 200"]);
}

#[test]
fn line_filter_pattern_anchors_leading_literal() {
    let src = text_lines();
    assert_eq!(
        only_lines(&src, r#"{app="t"} |> "GET <_> 200<_>""#),
        vec!["GET /api 200 took 5ms", "GET /health 200"]
    );
    // Without a leading capture the line must start with the literal.
    assert!(only_lines(&src, r#"{app="t"} |> "api <_>""#).is_empty());
    assert_eq!(only_lines(&src, r#"{app="t"} |> "<_> error <_>""#), vec!["POST /api 500 error timeout"]);
    assert_eq!(only_lines(&src, r#"{app="t"} !> "<_> 200<_>""#).len(), 4);
}

#[test]
fn line_filter_ip_matches_addresses_ranges_and_cidrs() {
    let src = text_lines();
    assert_eq!(only_lines(&src, r#"{app="t"} |= ip("10.0.0.0/8")"#), vec!["client 10.0.0.7:443 connected"]);
    assert_eq!(
        only_lines(&src, r#"{app="t"} |= ip("192.168.1.10-192.168.1.30")"#),
        vec!["client 192.168.1.20 refused"]
    );
    assert_eq!(only_lines(&src, r#"{app="t"} |= ip("2001:db8::/32")"#), vec!["peer [2001:db8::5]:80 ok"]);
    assert!(only_lines(&src, r#"{app="t"} |= ip("10.0.0.8")"#).is_empty());
    assert_eq!(
        only_lines(&src, r#"{app="t"} != ip("10.0.0.0/8") |= "client""#),
        vec!["client 192.168.1.20 refused"]
    );
    let err = run_logs(&src, r#"{app="t"} |= ip("10.0.0/8")"#).unwrap_err();
    assert!(matches!(err, EvalError::InvalidIp { .. }), "{err}");
}

#[test]
fn decolorize_strips_ansi_colour_codes() {
    let src = source(&[(
        &[("app", "c")],
        &[(1, "\u{1b}[31mERROR\u{1b}[0m disk \u{1b}[1;32mfull\u{1b}[0m"), (2, "plain")],
    )]);
    assert_eq!(only_lines(&src, r#"{app="c"} | decolorize"#), vec!["ERROR disk full", "plain"]);
}

// ---- parsers --------------------------------------------------------------------------

#[test]
fn json_flattens_nested_keys_skips_arrays_and_null_and_sanitises_names() {
    let src = source(&[(
        &[("app", "j")],
        &[(
            1,
            r#"{"a.b": {"c": "d"}, "e": 1.50, "ok": true, "none": null, "list": [1, 2], "req": {"headers": {"User-Agent": "curl/8"}}, "1st": "x", "esc": "q\"\u00e9\n"}"#,
        )],
    )]);
    let got = lines(&src, r#"{app="j"} | json"#);
    assert_eq!(
        got[0].0,
        r#"{_1st="x", a_b_c="d", app="j", e="1.50", esc="q\"é\n", ok="true", req_headers_User_Agent="curl/8"}"#
    );
}

#[test]
fn json_label_named_like_a_stream_label_gets_extracted_suffix_and_first_value_wins() {
    let src =
        source(&[(&[("app", "j"), ("level", "info")], &[(1, r#"{"level": "error", "x": "1", "x": "2"}"#)])]);
    assert_eq!(
        lines(&src, r#"{app="j"} | json"#)[0].0,
        r#"{app="j", level="info", level_extracted="error", x="1"}"#
    );
    // A second parser does not overwrite what the first extracted.
    let src = source(&[(&[("app", "j")], &[(1, r#"{"x": "json"} x=logfmt"#)])]);
    assert_eq!(
        lines(&src, r#"{app="j"} | regexp "(?P<x>json)" | regexp "(?P<x>logfmt)""#)[0].0,
        r#"{app="j", x="json"}"#
    );
}

#[test]
fn json_with_parameters_extracts_paths_and_raw_objects() {
    let src = source(&[(
        &[("app", "j")],
        &[(
            1,
            r#"{"servers": ["129.0.1.1", "10.2.1.3"], "request": {"headers": {"User-Agent": "curl/7.68.0", "Accept": "*/*"}}, "n": 3}"#,
        )],
    )]);
    let got = lines(
        &src,
        r#"{app="j"} | json first="servers[1]", ua="request.headers[\"User-Agent\"]", headers="request.headers", n, missing="nope.x""#,
    );
    assert_eq!(
        got[0].0,
        r#"{app="j", first="10.2.1.3", headers="{\"User-Agent\": \"curl/7.68.0\", \"Accept\": \"*/*\"}", n="3", ua="curl/7.68.0"}"#
    );
}

#[test]
fn json_on_invalid_line_sets_error_and_error_filter_drops_it() {
    let src = source(&[(&[("app", "j")], &[(1, r#"{"a": "1"}"#), (2, "not json"), (3, r#"{"a": "#)])]);
    let got = lines(&src, r#"{app="j"} | json"#);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, r#"{a="1", app="j"}"#);
    for (labels, _) in &got[1..] {
        assert!(labels.contains(r#"__error__="JSONParserErr""#), "{labels}");
        assert!(labels.contains("__error_details__="), "{labels}");
    }
    assert_eq!(only_lines(&src, r#"{app="j"} | json | __error__="""#), vec![r#"{"a": "1"}"#]);
    assert_eq!(
        only_lines(&src, r#"{app="j"} | json | __error__="JSONParserErr""#),
        vec!["not json", r#"{"a": "#]
    );
}

#[test]
fn logfmt_extracts_pairs_quoted_values_and_skips_malformed_pairs() {
    let src = source(&[(
        &[("app", "l")],
        &[(
            1,
            r#"at=info method=GET path=/ fwd="124.133.124.161" msg="say \"hi\"" service=8ms bad=x=y =novalue flag"#,
        )],
    )]);
    assert_eq!(
        lines(&src, r#"{app="l"} | logfmt"#)[0].0,
        r#"{app="l", at="info", fwd="124.133.124.161", method="GET", msg="say \"hi\"", path="/", service="8ms"}"#
    );
    assert_eq!(
        lines(&src, r#"{app="l"} | logfmt host, fwd_ip="fwd", m="method""#)[0].0,
        r#"{app="l", fwd_ip="124.133.124.161", m="GET"}"#
    );
}

#[test]
fn logfmt_strict_stops_at_first_malformed_pair_with_error() {
    let src = source(&[(&[("app", "l")], &[(1, "a=1 b=2=3 c=4")])]);
    let got = lines(&src, r#"{app="l"} | logfmt --strict"#);
    assert!(got[0].0.contains(r#"__error__="LogfmtParserErr""#), "{}", got[0].0);
    assert!(!got[0].0.contains("c=\"4\""), "{}", got[0].0);
    assert_eq!(lines(&src, r#"{app="l"} | logfmt"#)[0].0, r#"{a="1", app="l", c="4"}"#);
}

#[test]
fn regexp_extracts_named_groups() {
    let src = source(&[(
        &[("app", "r")],
        &[(1, "POST /api/prom/api/v1/query_range (200) 1.5s"), (2, "nothing here")],
    )]);
    let got = lines(
        &src,
        r#"{app="r"} | regexp `(?P<method>\w+) (?P<path>[\w|/]+) \((?P<status>\d+?)\) (?P<duration>.*)`"#,
    );
    assert_eq!(
        got[0].0,
        r#"{app="r", duration="1.5s", method="POST", path="/api/prom/api/v1/query_range", status="200"}"#
    );
    assert_eq!(got[1].0, r#"{app="r"}"#);
}

#[test]
fn pattern_parser_extracts_captures_and_stops_at_missing_literal() {
    let line = r#"0.191.12.2 - - [10/Jun/2021:09:14:29 +0000] "GET /api/plugins/versioncheck HTTP/1.1" 200 2 "-" "Go-http-client/2.0" "13.76.247.102, 34.120.177.193" "TLSv1.2" "US" """#;
    let src = source(&[(&[("app", "p")], &[(1, line), (2, "short line without dashes")])]);
    let got = lines(
        &src,
        r#"{app="p"} | pattern `<ip> - - <_> "<method> <uri> <_>" <status> <size> <_> "<agent>" <_>`"#,
    );
    assert_eq!(
        got[0].0,
        r#"{agent="Go-http-client/2.0", app="p", ip="0.191.12.2", method="GET", size="2", status="200", uri="/api/plugins/versioncheck"}"#
    );
    // The literal " - - " is missing: the first capture takes the whole line.
    assert_eq!(got[1].0, r#"{app="p", ip="short line without dashes"}"#);
    // A leading literal anchors the pattern at the line start.
    assert_eq!(
        lines(&src, r#"{app="p"} | pattern `short <rest>`"#)[1].0,
        r#"{app="p", rest="line without dashes"}"#
    );
    assert_eq!(lines(&src, r#"{app="p"} | pattern `line <rest>`"#)[1].0, r#"{app="p"}"#);
}

#[test]
fn unpack_replaces_line_with_entry_and_adds_packed_labels() {
    let src = source(&[(
        &[("app", "u"), ("pod", "stream")],
        &[
            (1, r#"{"container": "myapp", "pod": "pod-3223f", "n": 5, "_entry": "original log message"}"#),
            (2, r#"{"container": "x"}"#),
            (3, "plain"),
        ],
    )]);
    let got = lines(&src, r#"{app="u"} | unpack"#);
    assert_eq!(
        got[0],
        (
            r#"{app="u", container="myapp", pod="stream", pod_extracted="pod-3223f"}"#.into(),
            "original log message".into()
        )
    );
    // Without `_entry` nothing is unpacked.
    assert_eq!(got[1], (r#"{app="u", pod="stream"}"#.into(), r#"{"container": "x"}"#.into()));
    assert!(got[2].0.contains(r#"__error__="JSONParserErr""#));
}

// ---- label filters --------------------------------------------------------------------

fn requests() -> MemSource {
    source(&[(
        &[("app", "q")],
        &[
            (1, "status=200 took=5ms size=512B addr=10.0.0.1 method=GET"),
            (2, "status=503 took=1.5s size=2KB addr=192.168.4.2 method=POST"),
            (3, "status=abc took=fast size=big addr=nope method=GET"),
            (4, "took=20s method=PUT"),
        ],
    )])
}

#[test]
fn number_label_filter_converts_and_failed_conversion_sets_error_and_keeps_entry() {
    let src = requests();
    let got = lines(&src, r#"{app="q"} | logfmt | status >= 500"#);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].1.starts_with("status=503"));
    assert!(got[1].0.contains(r#"__error__="LabelFilterErr""#), "{}", got[1].0);
    assert!(
        got[1].0.contains(r#"__error_details__="strconv.ParseFloat: parsing \"abc\": invalid syntax""#),
        "{}",
        got[1].0
    );
    // The entry without `status` is dropped; `__error__=""` drops the failed conversion.
    assert_eq!(only_lines(&src, r#"{app="q"} | logfmt | status >= 500 | __error__="""#).len(), 1);
    assert_eq!(
        only_lines(&src, r#"{app="q"} | logfmt | status == 200"#)[0],
        "status=200 took=5ms size=512B addr=10.0.0.1 method=GET"
    );
}

#[test]
fn duration_and_bytes_label_filters_convert_units() {
    let src = requests();
    let got = only_lines(&src, r#"{app="q"} | logfmt | took > 1s | __error__="""#);
    assert_eq!(
        got,
        vec!["status=503 took=1.5s size=2KB addr=192.168.4.2 method=POST", "took=20s method=PUT"]
    );
    let got = only_lines(&src, r#"{app="q"} | logfmt | size > 1KB | __error__="""#);
    assert_eq!(got, vec!["status=503 took=1.5s size=2KB addr=192.168.4.2 method=POST"]);
    let got = lines(&src, r#"{app="q"} | logfmt | took <= 5ms"#);
    assert_eq!(got.len(), 2);
    assert!(got[1].0.contains(r#"__error_details__="time: invalid duration \"fast\"""#), "{}", got[1].0);
}

#[test]
fn typed_label_filter_lets_an_earlier_error_through() {
    let src = requests();
    // The first filter errs on `abc`; the second does not test an errored entry.
    let got = only_lines(&src, r#"{app="q"} | logfmt | status > 100 | size > 100KB"#);
    assert_eq!(got, vec!["status=abc took=fast size=big addr=nope method=GET"]);
}

#[test]
fn ip_label_filter_and_or_precedence() {
    let src = requests();
    assert_eq!(only_lines(&src, r#"{app="q"} | logfmt | addr = ip("192.168.4.0/24")"#).len(), 1);
    assert_eq!(only_lines(&src, r#"{app="q"} | logfmt | addr != ip("192.168.4.0/24")"#).len(), 2);
    // `and` binds tighter: method="PUT" or (method="GET" and status="200").
    let got = only_lines(&src, r#"{app="q"} | logfmt | method="PUT" or method="GET" and status="200""#);
    assert_eq!(got, vec!["status=200 took=5ms size=512B addr=10.0.0.1 method=GET", "took=20s method=PUT"]);
    let got = only_lines(&src, r#"{app="q"} | logfmt | (method="PUT" or method="GET") , status=~"2.."  "#);
    assert_eq!(got, vec!["status=200 took=5ms size=512B addr=10.0.0.1 method=GET"]);
    // A string filter on a missing label compares the empty string.
    assert_eq!(only_lines(&src, r#"{app="q"} | logfmt | status="""#), vec!["took=20s method=PUT"]);
}

// ---- formatting and label stages ------------------------------------------------------

#[test]
fn line_format_renders_labels_functions_and_missing_labels_as_empty() {
    let src = source(&[(&[("app", "f")], &[(1, "level=warn msg=\"disk full\" duration=3000")])]);
    let got = only_lines(
        &src,
        r#"{app="f"} | logfmt | line_format `{{.level | ToUpper}} [{{ .msg }}] {{div .duration 1000}}s missing={{.nope}} {{ .nope | default "-" }} {{printf "%5.1f|%-4s|%d" 2.25 .level 7}}`"#,
    );
    assert_eq!(got, vec!["WARN [disk full] 3s missing= -   2.2|warn|7"]);
}

#[test]
fn line_format_if_else_line_and_timestamp_functions() {
    let src = source(&[(&[("app", "f")], &[(1_700_000_000, "a=1"), (1_700_000_001, "a=2")])]);
    let got = only_lines(
        &src,
        r#"{app="f"} | logfmt | line_format `{{ if eq .a "1" }}one{{ else if eq .a "2" }}two{{ else }}other{{ end }} {{ __line__ | upper }} {{ __timestamp__ | date "2006-01-02T15:04:05Z07:00" }} {{ __timestamp__ | unixEpoch }}`"#,
    );
    assert_eq!(
        got,
        vec!["one A=1 2023-11-14T22:13:20Z 1700000000", "two A=2 2023-11-14T22:13:21Z 1700000001"]
    );
}

#[test]
fn line_format_failure_sets_template_error_and_keeps_line() {
    let src = source(&[(&[("app", "f")], &[(1, "n=0")])]);
    let got = lines(&src, r#"{app="f"} | logfmt | line_format "{{ div 10 .n }}""#);
    assert_eq!(got[0].1, "n=0");
    assert!(got[0].0.contains(r#"__error__="TemplateFormatErr""#), "{}", got[0].0);
    let err = run_logs(&src, r#"{app="f"} | line_format "{{ nosuch .n }}""#).unwrap_err();
    assert!(matches!(err, EvalError::InvalidTemplate { .. }), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidInput);
}

#[test]
fn label_format_renames_templates_from_the_old_labels_and_overrides_stream_labels() {
    let src = source(&[(&[("app", "f"), ("env", "prod")], &[(1, "level=info user=bob")])]);
    let got = lines(
        &src,
        r#"{app="f"} | logfmt | label_format lvl=level, who="{{.user}}@{{.env}}", env="{{.level}}-x""#,
    );
    assert_eq!(got[0].0, r#"{app="f", env="info-x", lvl="info", user="bob", who="bob@prod"}"#);
    // A template reads the labels before the stage: `a` sees the old `level`.
    let got = lines(&src, r#"{app="f"} | logfmt | label_format level="new", a="{{.level}}""#);
    assert_eq!(got[0].0, r#"{a="info", app="f", env="prod", level="new", user="bob"}"#);
    // Renaming a missing label changes nothing.
    assert_eq!(lines(&src, r#"{app="f"} | label_format x=nope"#)[0].0, r#"{app="f", env="prod"}"#);
}

#[test]
fn drop_removes_named_labels_and_matching_values_and_errors() {
    let src = source(&[(
        &[("job", "varlogs")],
        &[
            (1, r#"{"app": "some-api-service", "level": "info", "method": "GET", "path": "/"}"#),
            (2, r#"{"app": "other-service", "level": "info", "method": "GET", "path": "/"}"#),
            (3, "INFO GET / loki.net 200"),
        ],
    )]);
    let got = lines(&src, r#"{job="varlogs"} | json | drop level, path, app=~"some-api.*""#);
    assert_eq!(got[0].0, r#"{job="varlogs", method="GET"}"#);
    assert_eq!(got[1].0, r#"{app="other-service", job="varlogs", method="GET"}"#);
    assert!(got[2].0.contains("__error__"));
    assert_eq!(lines(&src, r#"{job="varlogs"} | json | drop __error__"#)[2].0, r#"{job="varlogs"}"#);
    // Dropping a stream label works too.
    assert_eq!(lines(&src, r#"{job="varlogs"} | drop job"#)[0].0, "{}");
}

#[test]
fn keep_retains_listed_labels_and_matching_values_but_never_errors() {
    let src = source(&[(
        &[("job", "varlogs")],
        &[
            (1, r#"{"level": "info", "method": "GET", "path": "/"}"#),
            (2, r#"{"level": "info", "method": "POST", "path": "/"}"#),
            (3, "not json"),
        ],
    )]);
    let got = lines(&src, r#"{job="varlogs"} | json | keep level, method="GET""#);
    assert_eq!(got[0].0, r#"{level="info", method="GET"}"#);
    assert_eq!(got[1].0, r#"{level="info"}"#);
    assert!(got[2].0.starts_with(r#"{__error__="JSONParserErr", __error_details__="#), "{}", got[2].0);
}

#[test]
fn structured_metadata_is_a_label_for_filters_and_results_but_not_a_stream_label() {
    let src = source_with_metadata(&[(
        &[("app", "m")],
        &[
            (1, r#"{"trace_id": "parsed", "msg": "a"}"#, &[("trace_id", "t1"), ("service.name", "svc")]),
            (2, r#"{"msg": "b"}"#, &[("trace_id", "t2")]),
            (3, r#"{"msg": "c"}"#, &[]),
        ],
    )]);
    let (streams, _) = run_logs(&src, r#"{app="m"} | json"#).expect("query");
    let got: Vec<String> = streams.iter().map(|s| s.labels.to_string()).collect();
    assert_eq!(
        got,
        vec![
            r#"{app="m", msg="a", service_name="svc", trace_id="t1", trace_id_extracted="parsed"}"#,
            r#"{app="m", msg="b", trace_id="t2"}"#,
            r#"{app="m", msg="c"}"#,
        ]
    );
    assert_eq!(
        streams[0].entries[0].metadata,
        vec![("service_name".to_string(), "svc".to_string()), ("trace_id".to_string(), "t1".to_string())]
    );
    assert_eq!(only_lines(&src, r#"{app="m"} | trace_id="t2""#), vec![r#"{"msg": "b"}"#]);
    // Dropped metadata leaves the entry's metadata too.
    let (streams, _) = run_logs(&src, r#"{app="m"} | drop trace_id"#).expect("query");
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0].labels.to_string(), r#"{app="m"}"#);
    assert_eq!(streams[1].labels.to_string(), r#"{app="m", service_name="svc"}"#);
    assert_eq!(streams[1].entries[0].metadata, vec![("service_name".to_string(), "svc".to_string())]);
}

#[test]
fn log_streams_group_by_final_labels() {
    let src = source(&[(&[("app", "g")], &[(1, "level=info"), (2, "level=error"), (3, "level=info")])]);
    let (streams, _) = run_logs(&src, r#"{app="g"} | logfmt"#).expect("query");
    let got: Vec<(String, usize)> = streams.iter().map(|s| (s.labels.to_string(), s.entries.len())).collect();
    assert_eq!(
        got,
        vec![(r#"{app="g", level="error"}"#.into(), 1), (r#"{app="g", level="info"}"#.into(), 2)]
    );
}

// ---- range aggregations ---------------------------------------------------------------

#[test]
fn count_over_time_window_excludes_its_start_and_includes_its_end() {
    let src = levels();
    assert_samples(
        &instant(&src, r#"count_over_time({app="api"}[30s])"#, 30),
        &[(r#"{app="api", level="error"}"#, 2.0), (r#"{app="api", level="info"}"#, 3.0)],
    );
    // At 40s the window is (10s, 40s]: the entry at 10s is out.
    assert_samples(
        &instant(&src, r#"count_over_time({app="api"}[30s])"#, 40),
        &[(r#"{app="api", level="error"}"#, 2.0), (r#"{app="api", level="info"}"#, 2.0)],
    );
}

#[test]
fn rate_is_count_per_second_of_the_range() {
    let src = levels();
    assert_samples(
        &instant(&src, r#"rate({app="api"}[30s])"#, 30),
        &[(r#"{app="api", level="error"}"#, 2.0 / 30.0), (r#"{app="api", level="info"}"#, 0.1)],
    );
}

#[test]
fn bytes_over_time_and_bytes_rate_count_lines_after_the_pipeline() {
    let src = levels();
    // error lines: "e1" (2) + "e2 longer" (9).
    assert_samples(
        &instant(&src, r#"bytes_over_time({level="error"}[30s])"#, 30),
        &[(r#"{app="api", level="error"}"#, 11.0)],
    );
    assert_samples(
        &instant(&src, r#"bytes_rate({level="error"}[30s])"#, 30),
        &[(r#"{app="api", level="error"}"#, 11.0 / 30.0)],
    );
    assert_samples(
        &instant(&src, r#"bytes_over_time({level="error"} | line_format "xxxx" [30s])"#, 30),
        &[(r#"{app="api", level="error"}"#, 8.0)],
    );
}

#[test]
fn absent_over_time_gives_one_with_equality_matcher_labels_only_when_empty() {
    let src = levels();
    assert_samples(
        &instant(&src, r#"absent_over_time({app="nope", level=~"e.*", x="1"}[30s])"#, 30),
        &[(r#"{app="nope", x="1"}"#, 1.0)],
    );
    assert!(instant(&src, r#"absent_over_time({app="api"}[30s])"#, 30).is_empty());
    // Filtered-out entries count as absent.
    assert_samples(
        &instant(&src, r#"absent_over_time({app="api"} |= "zzz" [30s])"#, 30),
        &[(r#"{app="api"}"#, 1.0)],
    );
    assert_eq!(
        range(&src, r#"absent_over_time({app="web"}[5s])"#, 5, 15, 5),
        vec![(r#"{app="web"}"#.to_string(), vec![(10, 1.0), (15, 1.0)])]
    );
}

#[test]
fn offset_shifts_the_window_back() {
    let src = levels();
    // (10s, 20s]: info 20s, error 15s.
    assert_samples(
        &instant(&src, r#"count_over_time({app="api"}[10s] offset 10s)"#, 30),
        &[(r#"{app="api", level="error"}"#, 1.0), (r#"{app="api", level="info"}"#, 1.0)],
    );
}

#[test]
fn range_query_evaluates_every_step_inclusive() {
    let src = levels();
    assert_eq!(
        range(&src, r#"count_over_time({app="api", level="info"}[10s])"#, 10, 40, 10),
        vec![(r#"{app="api", level="info"}"#.to_string(), vec![(10, 1.0), (20, 1.0), (30, 1.0)])]
    );
    assert_eq!(
        range(&src, r#"sum(count_over_time({app="api"}[20s]))"#, 20, 40, 10),
        // (0,20]: 10,15,20 → 3; (10,30]: 15,20,25,30 → 4; (20,40]: 25,30 → 2.
        vec![("{}".to_string(), vec![(20, 3.0), (30, 4.0), (40, 2.0)])]
    );
}

#[test]
fn range_query_rejects_bad_steps() {
    let src = levels();
    let expr = metric(r#"count_over_time({app="api"}[10s])"#);
    for (start, end, step) in [(0, 10, 0), (10, 0, 1), (0, 11_000, 1)] {
        let err = evaluate_range(&expr, &src, start * S, end * S, step * S, &Limits::default()).unwrap_err();
        assert!(matches!(err, EvalError::InvalidRange { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::InvalidInput);
    }
    assert!(evaluate_range(&expr, &src, 0, 10_999 * S, S, &Limits::default()).is_ok());
}

fn latencies() -> MemSource {
    source(&[(
        &[("app", "u")],
        &[
            (10, "latency=1 host=a"),
            (20, "latency=2 host=b"),
            (30, "latency=3 host=a"),
            (40, "latency=4 host=b"),
            (41, "host=c"),
        ],
    )])
}

#[test]
fn unwrap_sum_and_rate_drop_the_unwrapped_label_from_series() {
    let src = latencies();
    assert_samples(
        &instant(&src, r#"sum_over_time({app="u"} | logfmt | unwrap latency [40s])"#, 40),
        &[(r#"{app="u", host="a"}"#, 4.0), (r#"{app="u", host="b"}"#, 6.0)],
    );
    assert_samples(
        &instant(&src, r#"rate({app="u"} | logfmt | unwrap latency [40s])"#, 40),
        &[(r#"{app="u", host="a"}"#, 0.1), (r#"{app="u", host="b"}"#, 0.15)],
    );
}

#[test]
fn unwrap_statistics_over_the_window() {
    let src = latencies();
    let by_app =
        |f: &str| instant(&src, &format!(r#"{f}({{app="u"}} | logfmt | unwrap latency [40s]) by (app)"#), 40);
    assert_samples(&by_app("avg_over_time"), &[(r#"{app="u"}"#, 2.5)]);
    assert_samples(&by_app("min_over_time"), &[(r#"{app="u"}"#, 1.0)]);
    assert_samples(&by_app("max_over_time"), &[(r#"{app="u"}"#, 4.0)]);
    assert_samples(&by_app("first_over_time"), &[(r#"{app="u"}"#, 1.0)]);
    assert_samples(&by_app("last_over_time"), &[(r#"{app="u"}"#, 4.0)]);
    assert_samples(&by_app("stdvar_over_time"), &[(r#"{app="u"}"#, 1.25)]);
    assert_samples(&by_app("stddev_over_time"), &[(r#"{app="u"}"#, 1.25f64.sqrt())]);
    assert_samples(
        &instant(&src, r#"quantile_over_time(0.5, {app="u"} | logfmt | unwrap latency [40s]) by (app)"#, 40),
        &[(r#"{app="u"}"#, 2.5)],
    );
    assert_samples(
        &instant(&src, r#"quantile_over_time(0.9, {app="u"} | logfmt | unwrap latency [40s]) by (app)"#, 40),
        &[(r#"{app="u"}"#, 3.7)],
    );
    assert_samples(
        &instant(&src, r#"max_over_time({app="u"} | logfmt | unwrap latency [40s]) by (host)"#, 40),
        &[(r#"{host="a"}"#, 3.0), (r#"{host="b"}"#, 4.0)],
    );
    assert_samples(
        &instant(&src, r#"max_over_time({app="u"} | logfmt | unwrap latency [40s]) without (host)"#, 40),
        &[(r#"{app="u"}"#, 4.0)],
    );
}

#[test]
fn unwrap_duration_and_bytes_conversions() {
    let src = source(&[(
        &[("app", "d")],
        &[(1, r#"took=1.5s size=1KB"#), (2, r#"took=250ms size=1KiB"#), (3, r#"took=1m size="3 MB""#)],
    )]);
    assert_samples(
        &instant(&src, r#"sum_over_time({app="d"} | logfmt | unwrap duration(took) [1m])"#, 10),
        &[
            (r#"{app="d", size="1KB"}"#, 1.5),
            (r#"{app="d", size="1KiB"}"#, 0.25),
            (r#"{app="d", size="3 MB"}"#, 60.0),
        ],
    );
    assert_samples(
        &instant(&src, r#"max_over_time({app="d"} | logfmt | unwrap bytes(size) [1m]) by (app)"#, 10),
        &[(r#"{app="d"}"#, 3e6)],
    );
    assert_samples(
        &instant(&src, r#"min_over_time({app="d"} | logfmt | unwrap bytes(size) [1m]) by (app)"#, 10),
        &[(r#"{app="d"}"#, 1000.0)],
    );
}

#[test]
fn unwrap_failure_is_a_pipeline_error_unless_filtered_after_unwrap() {
    let src = source(&[(&[("app", "e")], &[(1, "latency=2"), (2, "latency=abc"), (3, "other=1")])]);
    let err = instant_err(&src, r#"sum_over_time({app="e"} | logfmt | unwrap latency [1m])"#, 10);
    match &err {
        EvalError::Pipeline { error, labels } => {
            assert_eq!(error, "SampleExtractionErr");
            assert!(labels.contains(r#"latency="abc""#), "{labels}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().starts_with("pipeline error: 'SampleExtractionErr' for series: '{"), "{err}");
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    assert_samples(
        &instant(&src, r#"sum_over_time({app="e"} | logfmt | unwrap latency | __error__="" [1m])"#, 10),
        &[(r#"{app="e"}"#, 2.0)],
    );
}

#[test]
fn parser_error_in_a_metric_query_fails_unless_filtered() {
    let src = source(&[(&[("app", "j")], &[(1, r#"{"level": "info"}"#), (2, "broken")])]);
    let err = instant_err(&src, r#"count_over_time({app="j"} | json [1m])"#, 10);
    assert!(matches!(&err, EvalError::Pipeline { error, .. } if error == "JSONParserErr"), "{err}");
    assert_samples(
        &instant(&src, r#"count_over_time({app="j"} | json | __error__="" [1m])"#, 10),
        &[(r#"{app="j", level="info"}"#, 1.0)],
    );
    assert_samples(
        &instant(&src, r#"count_over_time({app="j"} | json | drop __error__ [1m])"#, 10),
        &[(r#"{app="j"}"#, 1.0), (r#"{app="j", level="info"}"#, 1.0)],
    );
}

#[test]
fn rate_counter_extrapolates_like_prometheus() {
    // Counter 1, 3, 6 at 10s, 20s, 30s, evaluated at 40s over 40s: increase 5, sampled 20s,
    // start extrapolation capped by the zero point (20 * 1/5 = 4s), end 10s (< 1.1 * 10s):
    // 5 * (20 + 4 + 10) / 20 / 40 = 0.2125.
    let src = source(&[(&[("app", "c")], &[(10, "v=1"), (20, "v=3"), (30, "v=6")])]);
    assert_samples(
        &instant(&src, r#"rate_counter({app="c"} | logfmt | unwrap v [40s])"#, 40),
        &[(r#"{app="c"}"#, 0.2125)],
    );
    // A reset (5 → 2) adds the value before it: increase 4 - 5 + 5 = 4, extrapolated over 40s.
    let src = source(&[(&[("app", "c")], &[(10, "v=5"), (20, "v=2"), (30, "v=4")])]);
    assert_samples(
        &instant(&src, r#"rate_counter({app="c"} | logfmt | unwrap v [40s])"#, 40),
        &[(r#"{app="c"}"#, 0.2)],
    );
    // One sample gives no rate.
    assert!(instant(&src, r#"rate_counter({app="c"} | logfmt | unwrap v [5s])"#, 30).is_empty());
}

#[test]
fn metric_series_include_metadata_and_parsed_labels_but_not_internal_ones() {
    let src = source_with_metadata(&[(
        &[("app", "m")],
        &[
            (1, "level=info", &[("trace", "t1")]),
            (2, "level=info", &[("trace", "t2")]),
            (3, "level=error", &[("trace", "t1")]),
        ],
    )]);
    assert_samples(
        &instant(&src, r#"count_over_time({app="m"} | logfmt [1m])"#, 10),
        &[
            (r#"{app="m", level="error", trace="t1"}"#, 1.0),
            (r#"{app="m", level="info", trace="t1"}"#, 1.0),
            (r#"{app="m", level="info", trace="t2"}"#, 1.0),
        ],
    );
    assert_samples(
        &instant(&src, r#"sum by (level) (count_over_time({app="m"} | logfmt [1m]))"#, 10),
        &[(r#"{level="error"}"#, 1.0), (r#"{level="info"}"#, 2.0)],
    );
    assert_samples(
        &instant(&src, r#"sum without (trace) (count_over_time({app="m"} | logfmt [1m]))"#, 10),
        &[(r#"{app="m", level="error"}"#, 1.0), (r#"{app="m", level="info"}"#, 2.0)],
    );
    let src = source(&[(&[("app", "m"), ("__internal__", "x")], &[(1, "a")])]);
    assert_samples(&instant(&src, r#"count_over_time({app="m"}[1m])"#, 10), &[(r#"{app="m"}"#, 1.0)]);
}

#[test]
fn sum_grouping_pushed_into_extraction_matches_unique_parsed_labels() {
    let src = source(&[(
        &[("app", "p")],
        &[
            (1, r#"{"id": "1", "level": "info"}"#),
            (2, r#"{"id": "2", "level": "info"}"#),
            (3, r#"{"id": "3", "level": "warn"}"#),
        ],
    )]);
    assert_samples(
        &instant(&src, r#"sum by (level) (count_over_time({app="p"} | json [1m]))"#, 10),
        &[(r#"{level="info"}"#, 2.0), (r#"{level="warn"}"#, 1.0)],
    );
    assert_samples(&instant(&src, r#"sum(rate({app="p"} | json [1m]))"#, 10), &[("{}", 3.0 / 60.0)]);
    // `sum by` naming the unwrapped label cannot see it, as without the push-down.
    let src = latencies();
    assert_samples(
        &instant(&src, r#"sum by (latency) (sum_over_time({app="u"} | logfmt | unwrap latency [40s]))"#, 40),
        &[("{}", 10.0)],
    );
}

// ---- vector aggregations --------------------------------------------------------------

#[test]
fn vector_aggregations_over_all_series_and_by_without() {
    let src = levels();
    // At 30s over 30s: {api,info} 3, {api,error} 2, {web,info} 1.
    let agg = |op: &str| instant(&src, &format!(r#"{op}(count_over_time({{app=~".+"}}[30s]))"#), 30);
    assert_samples(&agg("sum"), &[("{}", 6.0)]);
    assert_samples(&agg("avg"), &[("{}", 2.0)]);
    assert_samples(&agg("min"), &[("{}", 1.0)]);
    assert_samples(&agg("max"), &[("{}", 3.0)]);
    assert_samples(&agg("count"), &[("{}", 3.0)]);
    assert_samples(&agg("stdvar"), &[("{}", 2.0 / 3.0)]);
    assert_samples(&agg("stddev"), &[("{}", (2.0f64 / 3.0).sqrt())]);
    assert_samples(
        &instant(&src, r#"sum by (level) (count_over_time({app=~".+"}[30s]))"#, 30),
        &[(r#"{level="error"}"#, 2.0), (r#"{level="info"}"#, 4.0)],
    );
    assert_samples(
        &instant(&src, r#"max without (level) (count_over_time({app=~".+"}[30s]))"#, 30),
        &[(r#"{app="api"}"#, 3.0), (r#"{app="web"}"#, 1.0)],
    );
    assert_samples(
        &instant(&src, r#"count by (nope) (count_over_time({app=~".+"}[30s]))"#, 30),
        &[("{}", 3.0)],
    );
}

#[test]
fn topk_bottomk_keep_original_labels_per_group() {
    let src = levels();
    assert_samples(
        &instant(&src, r#"topk(1, count_over_time({app=~".+"}[30s]))"#, 30),
        &[(r#"{app="api", level="info"}"#, 3.0)],
    );
    assert_samples(
        &instant(&src, r#"topk by (app) (1, count_over_time({app=~".+"}[30s]))"#, 30),
        &[(r#"{app="api", level="info"}"#, 3.0), (r#"{app="web", level="info"}"#, 1.0)],
    );
    assert_samples(
        &instant(&src, r#"bottomk(2, count_over_time({app=~".+"}[30s]))"#, 30),
        &[(r#"{app="api", level="error"}"#, 2.0), (r#"{app="web", level="info"}"#, 1.0)],
    );
}

#[test]
fn sort_and_sort_desc_order_an_instant_vector_by_value() {
    let src = levels();
    assert_samples(
        &instant(&src, r#"sort(count_over_time({app=~".+"}[30s]))"#, 30),
        &[
            (r#"{app="web", level="info"}"#, 1.0),
            (r#"{app="api", level="error"}"#, 2.0),
            (r#"{app="api", level="info"}"#, 3.0),
        ],
    );
    assert_samples(
        &instant(&src, r#"sort_desc(count_over_time({app=~".+"}[30s]))"#, 30),
        &[
            (r#"{app="api", level="info"}"#, 3.0),
            (r#"{app="api", level="error"}"#, 2.0),
            (r#"{app="web", level="info"}"#, 1.0),
        ],
    );
}

#[test]
fn max_series_limits_the_result() {
    let src = levels();
    let limits = Limits { max_series: 2, ..Limits::default() };
    let expr = metric(r#"count_over_time({app=~".+"}[30s])"#);
    let err = evaluate_instant(&expr, &src, 30 * S, &limits).unwrap_err();
    assert!(matches!(err, EvalError::TooManySeries { limit: 2 }), "{err}");
    assert_eq!(err.code(), ErrorCode::TooLarge);
    let err = evaluate_range(&expr, &src, 10 * S, 30 * S, 10 * S, &limits).unwrap_err();
    assert!(matches!(err, EvalError::TooManySeries { limit: 2 }), "{err}");
    // Aggregated to two series it passes.
    assert!(
        evaluate_instant(
            &metric(r#"sum by (level) (count_over_time({app=~".+"}[30s]))"#),
            &src,
            30 * S,
            &limits
        )
        .is_ok()
    );
}

// ---- binary operators -----------------------------------------------------------------

#[test]
fn scalar_arithmetic_follows_precedence() {
    let src = levels();
    assert!(matches!(instant_result(&src, "1 + 2 * 3", 0), Ok(QueryValue::Scalar(v)) if v == 7.0));
    assert!(matches!(instant_result(&src, "2 ^ 3 ^ 2", 0), Ok(QueryValue::Scalar(v)) if v == 512.0));
    assert!(matches!(instant_result(&src, "7 % 4 - 10 / 4", 0), Ok(QueryValue::Scalar(v)) if v == 0.5));
    assert!(matches!(instant_result(&src, "2 > bool 1", 0), Ok(QueryValue::Scalar(v)) if v == 1.0));
    assert_eq!(
        range(&src, "1 + 1", 0, 20, 10),
        vec![("{}".to_string(), vec![(0, 2.0), (10, 2.0), (20, 2.0)])]
    );
}

#[test]
fn vector_scalar_arithmetic_and_comparisons() {
    let src = levels();
    let q = r#"count_over_time({app="api"}[30s])"#;
    assert_samples(
        &instant(&src, &format!("{q} * 2"), 30),
        &[(r#"{app="api", level="error"}"#, 4.0), (r#"{app="api", level="info"}"#, 6.0)],
    );
    assert_samples(
        &instant(&src, &format!("2 - {q}"), 30),
        &[(r#"{app="api", level="error"}"#, 0.0), (r#"{app="api", level="info"}"#, -1.0)],
    );
    assert_samples(&instant(&src, &format!("{q} > 2"), 30), &[(r#"{app="api", level="info"}"#, 3.0)]);
    // The filter keeps the vector's value with the scalar on the left.
    assert_samples(&instant(&src, &format!("2 < {q}"), 30), &[(r#"{app="api", level="info"}"#, 3.0)]);
    assert_samples(
        &instant(&src, &format!("{q} > bool 2"), 30),
        &[(r#"{app="api", level="error"}"#, 0.0), (r#"{app="api", level="info"}"#, 1.0)],
    );
    assert_samples(&instant(&src, &format!("{q} == 2"), 30), &[(r#"{app="api", level="error"}"#, 2.0)]);
}

#[test]
fn vector_vector_one_to_one_matches_all_labels_or_on() {
    let src = levels();
    // Now (0,30]: info 3, error 2; 10s earlier (-10,20]: info 2, error 1.
    assert_samples(
        &instant(
            &src,
            r#"count_over_time({app="api"}[30s]) / count_over_time({app="api"}[30s] offset 10s)"#,
            30,
        ),
        &[(r#"{app="api", level="error"}"#, 2.0), (r#"{app="api", level="info"}"#, 1.5)],
    );
    assert_samples(
        &instant(
            &src,
            r#"sum by (level) (count_over_time({app="api"}[30s])) + on (level) sum by (app, level) (count_over_time({app="api"}[30s]))"#,
            30,
        ),
        &[(r#"{level="error"}"#, 4.0), (r#"{level="info"}"#, 6.0)],
    );
    // Series that match nothing are dropped.
    assert!(
        instant(&src, r#"count_over_time({app="api"}[30s]) + count_over_time({app="web"}[30s])"#, 30)
            .is_empty()
    );
}

#[test]
fn vector_matching_group_left_and_ignoring() {
    let src = levels();
    let all = r#"count_over_time({app=~".+"}[30s])"#;
    let by_level = r#"sum by (level) (count_over_time({app=~".+"}[30s]))"#;
    assert_samples(
        &instant(&src, &format!("{all} / on (level) group_left {by_level}"), 30),
        &[
            (r#"{app="api", level="error"}"#, 1.0),
            (r#"{app="api", level="info"}"#, 0.75),
            (r#"{app="web", level="info"}"#, 0.25),
        ],
    );
    assert_samples(
        &instant(&src, &format!(r#"{all} - ignoring (level) group_left sum by (app) ({all})"#), 30),
        &[
            (r#"{app="api", level="error"}"#, -3.0),
            (r#"{app="api", level="info"}"#, -2.0),
            (r#"{app="web", level="info"}"#, 0.0),
        ],
    );
    // group_left (team) copies the label from the "one" side.
    let teams = format!(r#"label_replace({by_level}, "team", "t-$1", "level", "(.*)")"#);
    assert_samples(
        &instant(&src, &format!("{all} * on (level) group_left (team) {teams}"), 30),
        &[
            (r#"{app="api", level="error", team="t-error"}"#, 4.0),
            (r#"{app="api", level="info", team="t-info"}"#, 12.0),
            (r#"{app="web", level="info", team="t-info"}"#, 4.0),
        ],
    );
    assert_samples(
        &instant(&src, &format!("{by_level} / on (level) group_right {all}"), 30),
        &[
            (r#"{app="api", level="error"}"#, 1.0),
            (r#"{app="api", level="info"}"#, 4.0 / 3.0),
            (r#"{app="web", level="info"}"#, 4.0),
        ],
    );
}

#[test]
fn vector_matching_ambiguities_are_errors() {
    let src = levels();
    let all = r#"count_over_time({app=~".+"}[30s])"#;
    let err = instant_err(&src, &format!(r#"{all} / on (level) sum by (level) ({all})"#), 30);
    assert!(matches!(err, EvalError::MultipleMatches { .. }), "{err}");
    assert!(err.is_execution());
    let err = instant_err(&src, &format!("{all} + on (level) group_left {all}"), 30);
    assert!(matches!(err, EvalError::ManyToMany { side: "right", .. }), "{err}");
    assert!(err.is_execution());
}

#[test]
fn set_operators_and_or_unless() {
    let src = levels();
    assert_samples(
        &instant(
            &src,
            r#"count_over_time({app=~".+"}[30s]) and on (level) count_over_time({level="error"}[30s])"#,
            30,
        ),
        &[(r#"{app="api", level="error"}"#, 2.0)],
    );
    assert_samples(
        &instant(&src, r#"count_over_time({app="web"}[30s]) or count_over_time({app="api"}[30s])"#, 30),
        &[
            (r#"{app="api", level="error"}"#, 2.0),
            (r#"{app="api", level="info"}"#, 3.0),
            (r#"{app="web", level="info"}"#, 1.0),
        ],
    );
    assert_samples(
        &instant(
            &src,
            r#"count_over_time({app=~".+"}[30s]) unless on (app) count_over_time({app="web"}[30s])"#,
            30,
        ),
        &[(r#"{app="api", level="error"}"#, 2.0), (r#"{app="api", level="info"}"#, 3.0)],
    );
    // `or` fills the steps where the left side has no sample.
    assert_eq!(
        range(&src, r#"sum(count_over_time({app="web"}[5s])) or vector(0)"#, 5, 15, 5),
        vec![("{}".to_string(), vec![(5, 1.0), (10, 0.0), (15, 0.0)])]
    );
}

#[test]
fn label_replace_sets_removes_and_rejects_duplicates() {
    let src = levels();
    let info = r#"count_over_time({app="api", level="info"}[30s])"#;
    assert_samples(
        &instant(&src, &format!(r#"label_replace({info}, "svc", "$1-svc", "app", "(a.*)")"#), 30),
        &[(r#"{app="api", level="info", svc="api-svc"}"#, 3.0)],
    );
    // The regex is anchored: "p" does not match "api", so nothing changes.
    assert_samples(
        &instant(&src, &format!(r#"label_replace({info}, "svc", "x", "app", "p")"#), 30),
        &[(r#"{app="api", level="info"}"#, 3.0)],
    );
    assert_samples(
        &instant(&src, &format!(r#"label_replace({info}, "level", "", "app", ".*")"#), 30),
        &[(r#"{app="api"}"#, 3.0)],
    );
    let err = instant_err(
        &src,
        r#"label_replace(count_over_time({app="api"}[30s]), "level", "", "app", ".*")"#,
        30,
    );
    assert!(matches!(err, EvalError::DuplicateSeries { .. }), "{err}");
}

#[test]
fn vector_literal_and_or_vector_zero() {
    let src = levels();
    assert_samples(&instant(&src, "vector(2)", 30), &[("{}", 2.0)]);
    assert_samples(
        &instant(&src, r#"sum(count_over_time({app="none"}[30s])) or vector(0)"#, 30),
        &[("{}", 0.0)],
    );
    assert_samples(&instant(&src, r#"vector(1) + vector(2)"#, 30), &[("{}", 3.0)]);
}

#[test]
fn metric_stats_count_reads_and_returned_samples() {
    let src = levels();
    let (_, stats) = evaluate_range(
        &metric(r#"count_over_time({app="api"}[10s]) / count_over_time({app="api"}[10s])"#),
        &src,
        10 * S,
        30 * S,
        10 * S,
        &Limits::default(),
    )
    .expect("query");
    // Each side reads (0s, 30s]: 5 api lines of 17 bytes in 2 streams.
    assert_eq!(stats.lines_processed, 10);
    assert_eq!(stats.bytes_processed, 34);
    assert_eq!(stats.streams_selected, 4);
    // info at 10, 20, 30; error at 20 (15s) and 30 (25s).
    assert_eq!(stats.entries_returned, 5);
}

// ---- templates and conversions --------------------------------------------------------

fn render(template: &str, pairs: &[(&str, &str)], line: &str) -> Result<String, String> {
    let template = Template::new(template).map_err(|e| e.to_string())?;
    let mut state = LabelState::new();
    state.reset(&Arc::new(labels(pairs)), &[]);
    template.render(&Data { labels: &state, line, timestamp: 1_700_000_000_123_000_000 })
}

fn ok(template: &str, pairs: &[(&str, &str)]) -> String {
    render(template, pairs, "the line").unwrap_or_else(|e| panic!("{template}: {e}"))
}

#[test]
fn template_string_functions() {
    let l = &[("path", "/api/v1/users"), ("cluster", "eu-cluster"), ("m", "get"), ("sp", "  x  ")];
    assert_eq!(ok(r#"{{ .path | replace "/" "_" | trunc 5 | upper }}"#, l), "_API_");
    assert_eq!(
        ok(
            r#"{{ .cluster | replace "-cluster" "" }}|{{ title "hello world" }}|{{ .m | ToUpper | lower }}"#,
            l
        ),
        "eu|Hello World|get"
    );
    assert_eq!(
        ok(
            r#"{{ trunc -5 "hello world" }}|{{ substr 6 11 "hello world" }}|{{ substr 0 5 "hello world" }}"#,
            l
        ),
        "world|world|hello"
    );
    assert_eq!(
        ok(
            r#"[{{ trim .sp }}][{{ trimAll "$" "$5.00$" }}][{{ trimPrefix "/" .path }}][{{ TrimSuffix .path "users" }}]"#,
            l
        ),
        "[x][5.00][api/v1/users][/api/v1/]"
    );
    assert_eq!(
        ok(
            r#"{{ alignLeft 5 "hi" }}|{{ alignRight 5 "hi" }}|{{ alignLeft 5 "hello world" }}|{{ alignRight 5 "hello world" }}"#,
            l
        ),
        "hi   |   hi|hello|world"
    );
    assert_eq!(ok(r#"{{ repeat 3 "ab" }} {{ indent 2 "a\nb" }}"#, l), "ababab   a\n  b");
    assert_eq!(ok(r#"{{ default "-" .nope }} {{ default "-" .m }} {{ .nope | default "d" }}"#, l), "- get d");
    assert_eq!(
        ok(
            r#"{{ b64enc "hello" }} {{ b64dec "aGVsbG8=" }} {{ urlencode "a b&c" }} {{ urldecode "a+b%26c" }}"#,
            l
        ),
        "aGVsbG8= hello a+b%26c a b&c"
    );
    assert_eq!(
        ok(r#"{{ Replace "aaa" "a" "b" 2 }} {{ Trim "xxhixx" "x" }} {{ TrimSpace "  y " }}"#, l),
        "bba hi y"
    );
}

#[test]
fn template_regex_logic_and_math_functions() {
    let l = &[("err", "ErrTimeout"), ("d", "3000"), ("n", "2.5")];
    assert_eq!(
        ok(
            r#"{{ count "a|b" "abab" }} {{ regexReplaceAll "(a*)bc" "aabc" "${1}X" }} {{ regexReplaceAllLiteral "(ts=)" "ts=1" "$1" }}"#,
            l
        ),
        "4 aaX $11"
    );
    assert_eq!(
        ok(
            r#"{{ if contains "Timeout" .err }}timeout{{ end }}{{ if and (hasPrefix "Err" .err) (not (hasSuffix "x" .err)) }} yes{{ end }}"#,
            l
        ),
        "timeout yes"
    );
    assert_eq!(
        ok(r#"{{ if or (eq .err "a") (eq .err "b" "ErrTimeout") }}in{{ else }}out{{ end }}"#, l),
        "in"
    );
    assert_eq!(
        ok(
            r#"{{ add 3 2 5 }} {{ sub 5 2 }} {{ mul 5 2 3 }} {{ div .d 1000 }} {{ mod 10 3 }} {{ max 1 3 2 }} {{ min 4 2 }}"#,
            l
        ),
        "10 3 30 3 1 3 2"
    );
    assert_eq!(
        ok(
            r#"{{ addf 3.5 2 5 }} {{ subf 5.5 2 1.5 }} {{ mulf 5.5 2 2.5 }} {{ divf 10 2 4 }} {{ ceil 123.001 }} {{ floor .n }} {{ round 123.555555 3 }}"#,
            l
        ),
        "10.5 2 27.5 1.25 124 2 123.556"
    );
    assert_eq!(
        ok(r#"{{ "3.5" | float64 }} {{ "3" | int }} {{ lt 1 2 }} {{ ge 2.5 3 }} {{ len "abc" }}"#, l),
        "3.5 3 true false 3"
    );
    assert_eq!(ok(r#"{{ mulf 1000 1000 }} {{ divf 1 100000 }}"#, l), "1e+06 1e-05");
    assert_eq!(ok(r#"{{ bytes "2 KiB" }} {{ duration "1m30s" }}"#, l), "2048 90");
    assert!(render("{{ div 1 0 }}", l, "").is_err());
    assert!(render(r#"{{ eq 1 "1" }}"#, l, "").is_err());
}

#[test]
fn template_printf_verbs_and_go_mistakes() {
    let l = &[("ip", "129.168.1.1"), ("s", "200")];
    assert_eq!(ok(r#"{{ printf "The IP address was %s" .ip }}"#, l), "The IP address was 129.168.1.1");
    assert_eq!(
        ok(
            r#"[{{ printf "%-8.3s" "abcdef" }}][{{ printf "%6.2f" 3.14159 }}][{{ printf "%05d" 42 }}][{{ printf "%q" "a\"b" }}]"#,
            l
        ),
        r#"[abc     ][  3.14][00042]["a\"b"]"#
    );
    assert_eq!(
        ok(
            r#"{{ printf "%d" .s }}|{{ printf "%s" }}|{{ printf "%d%%" 5 "x" }}|{{ printf "%v %x %t %e" 1.5 255 true 1500.0 }}"#,
            l
        ),
        "%!d(string=200)|%!s(MISSING)|5%%!(EXTRA string=x)|1.5 ff true 1.500000e+03"
    );
}

#[test]
fn template_syntax_trim_markers_comments_line_and_time() {
    let l = &[("a", "1")];
    assert_eq!(render("x  {{- .a -}}  y{{/* comment */}}", l, "").as_deref(), Ok("x1y"));
    assert_eq!(render("{{ __line__ }} {{ . }}", l, "raw").as_deref(), Ok(r#"raw map[a:1]"#));
    assert_eq!(ok("{{ __timestamp__ }}", l), "2023-11-14 22:13:20.123 +0000 UTC");
    assert_eq!(
        ok(r#"{{ __timestamp__ | date "Mon Jan _2 03:04:05.000 PM 2006 MST -07:00" }}"#, l),
        "Tue Nov 14 10:13:20.123 PM 2023 UTC +00:00"
    );
    assert_eq!(
        ok(r#"{{ __timestamp__ | unixEpochMillis }} {{ date "2006-01-02" (unixToTime "1679577215") }}"#, l),
        "1700000000123 2023-03-23"
    );
    assert_eq!(
        ok("{{ `raw \\n` }} {{ \"esc\\tx\" }} {{ 0x10 }} {{ -3 }} {{ true }}", l),
        "raw \\n esc\tx 16 -3 true"
    );
    for bad in [
        "{{ $x }}",
        "{{ range .a }}{{ end }}",
        "{{ .a.b }}",
        "{{ nosuch }}",
        "{{ if .a }}",
        "{{ end }}",
        "{{ .a",
        "{{ now }}",
        "{{ .a | \"x\" }}",
    ] {
        assert!(Template::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn go_conversions_match_go_behaviour() {
    assert_eq!(parse_go_duration("1h15m30.5s"), Ok(4_530_500_000_000));
    assert_eq!(parse_go_duration("-250ms"), Ok(-250_000_000));
    assert_eq!(parse_go_duration("0"), Ok(0));
    assert_eq!(parse_go_duration("5").unwrap_err(), r#"time: missing unit in duration "5""#);
    assert_eq!(parse_go_duration("5d").unwrap_err(), r#"time: unknown unit "d" in duration "5d""#);
    assert_eq!(parse_humanized_bytes("5 MiB"), Ok(5 << 20));
    assert_eq!(parse_humanized_bytes("3k"), Ok(3000));
    assert_eq!(parse_humanized_bytes("1G"), Ok(1_000_000_000));
    assert_eq!(parse_humanized_bytes("1,024"), Ok(1024));
    assert!(parse_humanized_bytes("5 XB").is_err());
    assert_eq!(go_float(1e6), "1e+06");
    assert_eq!(go_float(123_456.0), "123456");
    assert_eq!(go_float(3.0), "3");
    assert_eq!(go_float(0.000_012_5), "1.25e-05");
    assert_eq!(go_float(-0.5), "-0.5");
}

// ---- hostile input --------------------------------------------------------------------

#[test]
fn deeply_nested_json_is_a_parser_error_not_a_crash() {
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let deep_arrays = format!(r#"{{"a": {}1{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let src = source(&[(&[("app", "h")], &[(1, deep_objects.as_str()), (2, deep_arrays.as_str())])]);
    for query in [r#"{app="h"} | json"#, r#"{app="h"} | json x="a.a.a""#, r#"{app="h"} | unpack"#] {
        let got = lines(&src, query);
        assert_eq!(got.len(), 2, "{query}");
        assert!(got.iter().all(|(labels, _)| labels.contains("JSONParserErr")), "{query}: {got:?}");
    }
}

#[test]
fn templates_that_would_build_huge_strings_fail_the_entry() {
    let src = source(&[(&[("app", "h")], &[(1, "x")])]);
    for template in [
        r#"{{ repeat 100000000 "abc" }}"#,
        r#"{{ printf "%999999999999999999999d" 1 }}"#,
        r#"{{ alignLeft 99999999999 "a" }}"#,
    ] {
        let got = lines(&src, &format!("{{app=\"h\"}} | line_format `{template}`"));
        assert_eq!(got[0].1, "x", "{template}");
        assert!(got[0].0.contains("TemplateFormatErr"), "{template}: {}", got[0].0);
    }
}

#[test]
fn extreme_query_ranges_are_rejected_without_overflow() {
    let src = levels();
    let expr = metric(r#"count_over_time({app="api"}[10s])"#);
    let err = evaluate_range(&expr, &src, i64::MIN, i64::MAX, 1, &Limits::default()).unwrap_err();
    assert!(matches!(err, EvalError::InvalidRange { .. }), "{err}");
    let (value, _) =
        evaluate_range(&expr, &src, i64::MIN, i64::MAX, i64::MAX, &Limits::default()).expect("three steps");
    assert!(matches!(value, QueryValue::Matrix(m) if m.is_empty()));
    assert!(evaluate_instant(&expr, &src, i64::MIN, &Limits::default()).is_ok());
}

#[test]
fn json_numbers_compare_as_numbers_in_label_filters() {
    let src = source(&[(
        &[("app", "n")],
        &[(1, r#"{"status": 401}"#), (2, r#"{"status": 200}"#), (3, r#"{"status": "5e2"}"#)],
    )]);
    assert_eq!(
        only_lines(&src, r#"{app="n"} | json | status >= 400"#),
        vec![r#"{"status": 401}"#, r#"{"status": "5e2"}"#]
    );
}

#[test]
fn line_filters_reach_the_source_only_while_the_line_is_as_stored() {
    let src = source(&[(&[("app", "a")], &[(1, "GET /x 200"), (2, "GET /y 500"), (3, "POST /x 500")])]);
    // Before any line_format: the source drops what the filters drop; stats count every line scanned.
    assert_eq!(only_lines(&src, r#"{app="a"} |= "500" | logfmt |~ "GET""#), ["GET /y 500"]);
    let (_, stats) = run_logs(&src, r#"{app="a"} |= "500" | logfmt |~ "GET""#).unwrap();
    assert_eq!((stats.lines_processed, stats.entries_returned), (3, 1));
    // After line_format the filter sees the new line: pushing it down would drop everything.
    assert_eq!(
        only_lines(&src, r#"{app="a"} | line_format "status {{__line__}}" |= "status GET""#),
        ["status GET /x 200", "status GET /y 500"]
    );
    // After decolorize too.
    let coloured = source(&[(&[("app", "c")], &[(1, "\u{1b}[31mred\u{1b}[0m alert")])]);
    assert_eq!(only_lines(&coloured, r#"{app="c"} | decolorize |= "red alert""#), ["red alert"]);
}

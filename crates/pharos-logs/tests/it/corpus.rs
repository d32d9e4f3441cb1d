//! Queries as people write them in Grafana, each parsed, printed and parsed again.

use pharos_logs::query::{Expr, parse};

/// Log queries.
pub(crate) const LOG_QUERIES: &[&str] = &[
    r#"{app="api"}"#,
    r#"{app="api", env=~"prod|staging", namespace!="kube-system", pod!~"test-.*"}"#,
    r#"{job="mysql"} |= "error""#,
    r#"{job="mysql"} |= "error" != "timeout""#,
    r#"{container="query-frontend", namespace="loki-dev"} |= "metrics.go" | logfmt | duration > 10s and throughput_mb < 500"#,
    r#"{cluster="ops-tools1", namespace="loki-dev", job="loki-dev/query-frontend"} |= "metrics.go" !="out of order" | logfmt | duration > 30s or status_code!="200""#,
    r#"{name="kafka"} |~ "tsdb-ops.*io:2003""#,
    r#"{name="cassandra"} |~ `error=\w+`"#,
    r#"{instance=~"kafka-[23]", name="kafka"} != "kafka.server:type=ReplicaManager""#,
    r#"{app="api"} |= "GET" or "POST" or "PUT""#,
    r#"{app="api"} |> "<_> level=error <_>""#,
    r#"{app="api"} !> "<_> healthcheck <_>""#,
    r#"{app="api"} |= ip("192.168.4.5/16")"#,
    r#"{app="api"} | json"#,
    r#"{app="api"} | json | level="error""#,
    r#"{app="api"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]""#,
    r#"{app="api"} | json method, status="response.status" | status >= 500"#,
    r#"{app="api"} | logfmt"#,
    r#"{app="api"} | logfmt --strict"#,
    r#"{app="api"} | logfmt --keep-empty --strict host, duration"#,
    r#"{app="nginx"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+) \\((?P<status>\\d+?)\\) (?P<duration>.*)""#,
    r#"{app="nginx"} | regexp `(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^\]]+)\]`"#,
    r#"{job="nginx"} | pattern `<ip> - - <_> "<method> <uri> <_>" <status> <size> <_> "<agent>" <_>`"#,
    r#"{app="api"} | unpack"#,
    r#"{app="api"} | unpack | json | line_format "{{.message}}""#,
    r#"{app="api"} | logfmt | line_format "{{.query}} {{.duration}}""#,
    r#"{app="api"} | json | line_format "{{ .level | ToUpper }} {{ __line__ }}""#,
    r#"{app="api"} | logfmt | label_format dst=src"#,
    r#"{app="api"} | logfmt | label_format foo="{{.bar}}-{{.baz}}", level=lvl"#,
    r#"{app="api"} | logfmt | drop level, method="GET""#,
    r#"{app="api"} | logfmt | drop __error__, __error_details__"#,
    r#"{app="api"} | logfmt | keep level, status=~"5..""#,
    r#"{app="api"} | decolorize"#,
    r#"{app="api"} | json | __error__="""#,
    r#"{app="api"} | json | __error__!="JSONParserErr""#,
    r#"{app="api"} | logfmt | status >= 500 | size > 20KB"#,
    r#"{app="api"} | logfmt | latency <= 250ms, size < 1MiB"#,
    r#"{app="api"} | logfmt | (status >= 500 or status == 429) and method="POST""#,
    r#"{app="api"} | logfmt | level="error" or level="warn" and path=~"/api/.*""#,
    r#"{app="api"} | logfmt | duration > 1h30m"#,
    r#"{app="api"} | logfmt | client = ip("10.0.0.0/8")"#,
    r#"{app="api"} | logfmt | client != ip("192.168.1.1-192.168.1.100")"#,
    r#"{app="api"} | logfmt | ratio > -0.5"#,
    r#"{app="api"} |= "error" | json | line_format "{{.msg}}" |= "connection refused""#,
    "{app=\"api\"} # everything from the api\n |= \"error\" # only errors",
];

/// Metric queries.
pub(crate) const METRIC_QUERIES: &[&str] = &[
    r#"rate({app="api"}[5m])"#,
    r#"count_over_time({job="mysql"}[5m])"#,
    r#"count_over_time({job="mysql"} |= "error" [5m])"#,
    r#"count_over_time({job="mysql"}[5m] |= "error")"#,
    r#"bytes_rate({app="api"}[1m])"#,
    r#"bytes_over_time({app="api"} |= "panic" [1h])"#,
    r#"absent_over_time({app="api"}[10m])"#,
    r#"rate({app="api"}[5m] offset 1h)"#,
    r#"sum by (host) (rate({job="mysql"} |= "error" != "timeout" | json | duration > 10s [1m]))"#,
    r#"sum(count_over_time({app="api"} | json | level="error" [5m])) by (service)"#,
    r#"sum by (level) (count_over_time({app="x"} |= "error" [1m]))"#,
    r#"topk(10, sum(rate({region="us-east1"}[5m])) by (name))"#,
    r#"bottomk(3, sum by (pod) (bytes_rate({namespace="prod"}[5m])))"#,
    r#"avg(rate({app="api"}[1m])) without (pod)"#,
    r#"count(sum by (pod) (count_over_time({app="api"}[1h])))"#,
    r#"max without (instance) (rate({app="api"}[5m]))"#,
    r#"stddev(rate({app="api"}[5m]))"#,
    r#"stdvar by (app) (rate({app="api"}[5m]))"#,
    r#"sort(sum by (app) (rate({app=~".+"}[5m])))"#,
    r#"sort_desc(sum by (app) (rate({app=~".+"}[5m])))"#,
    r#"sum_over_time({app="api"} | logfmt | unwrap bytes_sent [5m])"#,
    r#"avg_over_time({app="api"} | logfmt | unwrap latency [5m]) by (path)"#,
    r#"max_over_time({app="api"} | logfmt | unwrap duration(took) | __error__="" [5m]) by (path)"#,
    r#"min_over_time({app="api"} | logfmt | unwrap duration_seconds(took) [5m])"#,
    r#"quantile_over_time(0.99, {cluster="ops-tools1", container="ingress-nginx"} | json | __error__ = "" | unwrap request_time [1m]) by (path)"#,
    r#"quantile_over_time(0.5, {app="api"} | json | unwrap bytes(size) | __error__="" [5m] offset 5m)"#,
    r#"stddev_over_time({app="api"} | logfmt | unwrap latency [5m]) without (pod)"#,
    r#"stdvar_over_time({app="api"} | logfmt | unwrap latency [5m])"#,
    r#"first_over_time({app="api"} | logfmt | unwrap queue_depth [1m]) by (queue)"#,
    r#"last_over_time({app="api"} | logfmt | unwrap queue_depth [1m])"#,
    r#"rate_counter({app="api"} | logfmt | unwrap requests_total [5m])"#,
    r#"rate({app="api"} | logfmt | unwrap bytes [1m])"#,
    r#"sum by (org_id) (sum_over_time({cluster="ops-tools1", container="loki-dev"} |= "metrics.go" | logfmt | unwrap bytes_processed [1m]))"#,
    r#"sum(rate({app="api"} |= "error" [5m])) / sum(rate({app="api"}[5m]))"#,
    r#"sum(rate({app="api"} |= "error" [5m])) / sum(rate({app="api"}[5m])) * 100"#,
    r#"sum by (app) (rate({app=~".+"} |= "error" [5m])) > 10"#,
    r#"sum by (app) (rate({app=~".+"}[5m])) >= bool 1"#,
    r#"sum(rate({app="api"}[5m])) > 1 and sum(rate({app="web"}[5m])) > 1"#,
    r#"sum(rate({app="api"}[5m])) unless sum(rate({app="api"} |= "healthz" [5m]))"#,
    r#"sum(rate({app="api"}[5m])) or vector(0)"#,
    r#"sum by (app, pod) (rate({a="1"}[1m])) / on (app) group_left (team) sum by (app) (rate({a="2"}[1m]))"#,
    r#"sum by (app) (rate({a="1"}[1m])) * ignoring (pod) group_right sum by (app, pod) (rate({a="2"}[1m]))"#,
    r#"(sum(rate({app="api"}[5m])) + sum(rate({app="web"}[5m]))) / 2"#,
    r#"2 ^ 3 ^ 2"#,
    r#"(2 ^ 3) ^ 2"#,
    r#"1 - (2 - 3)"#,
    r#"-1 + 2 * 3 % 4"#,
    r#"sum(rate({app="api"}[5m])) * -1"#,
    r#"label_replace(rate({job="api"} |= "err" [1m]), "foo", "$1", "service", "(.*):.*")"#,
    r#"vector(1)"#,
    r#"sum(count_over_time({app="api"}[1m] | json | level="error")) by (level) / ignoring (level) group_left sum(count_over_time({app="api"}[1m]))"#,
    r#"topk by (namespace) (3, sum by (namespace, pod) (rate({namespace=~"prod-.*"}[5m])))"#,
    r#"sum(rate({app="api"} |= "error" [1h30m]))"#,
    r#"count_over_time({app="api"}[250ms])"#,
];

fn round_trip(input: &str) -> Expr {
    let first = parse(input).unwrap_or_else(|err| panic!("{input}\n{err}"));
    let printed = first.to_string();
    let second = parse(&printed).unwrap_or_else(|err| panic!("{input}\nprinted as {printed}\n{err}"));
    assert_eq!(first, second, "{input}\nprinted as {printed}");
    assert_eq!(second.to_string(), printed, "printing is stable");
    first
}

#[test]
fn corpus_log_queries_round_trip_and_are_log_queries() {
    for input in LOG_QUERIES {
        assert!(round_trip(input).is_log(), "{input}");
    }
}

#[test]
fn corpus_metric_queries_round_trip_and_are_metric_queries() {
    for input in METRIC_QUERIES {
        assert!(round_trip(input).is_metric(), "{input}");
    }
}

#[test]
fn display_canonical_form_matches_expectation() {
    let cases = [
        (r#"{app="api"}|="a"or"b""#, r#"{app="api"} |= "a" or "b""#),
        (r#"{app="api"} | a="1", b > 2 c < 3"#, r#"{app="api"} | a="1" and b > 2 and c < 3"#),
        (r#"{app="api"} | a="1" and (b="2" and c="3")"#, r#"{app="api"} | a="1" and (b="2" and c="3")"#),
        (r#"{app="api"} | (a="1" or b="2") and c="3""#, r#"{app="api"} | (a="1" or b="2") and c="3""#),
        (r#"{app="api"} | status = 200"#, r#"{app="api"} | status == 200"#),
        (r#"{app="api"} | level == "error""#, r#"{app="api"} | level="error""#),
        (r#"{app="api"} | size > 1.5KB"#, r#"{app="api"} | size > 1500B"#),
        (r#"{app="api"} | d > 90m"#, r#"{app="api"} | d > 1h30m"#),
        (r#"{app=`a"b\c`}"#, r#"{app="a\"b\\c"}"#),
        (r#"count_over_time({app="api"}[5m] |= "x")"#, r#"count_over_time({app="api"} |= "x" [5m])"#),
        (r#"rate({app="api"}[7d] offset 1d)"#, r#"rate({app="api"} [168h] offset 24h)"#),
        (r#"sum(rate({app="api"}[1m])) by (a)"#, r#"sum by (a) (rate({app="api"} [1m]))"#),
        ("(1 + 2) * 3", "(1 + 2) * 3"),
        ("1 + (2 * 3)", "1 + 2 * 3"),
        ("1 - (2 - 3)", "1 - (2 - 3)"),
        ("(2 ^ 3) ^ 2", "(2 ^ 3) ^ 2"),
        ("2 ^ (3 ^ 2)", "2 ^ 3 ^ 2"),
        ("((vector(1)))", "vector(1)"),
        ("0.5e1", "5"),
    ];
    for (input, expected) in cases {
        let expr = parse(input).unwrap_or_else(|err| panic!("{input}\n{err}"));
        assert_eq!(expr.to_string(), expected, "{input}");
    }
}

#[test]
fn display_escapes_control_characters_and_reads_back() {
    let expr = parse("{app=\"a\\tb\\u0001c\\n\"} |= \"é😀\"").expect("valid");
    assert_eq!(expr.to_string(), "{app=\"a\\tb\\u0001c\\n\"} |= \"é😀\"");
    assert_eq!(parse(&expr.to_string()).expect("valid"), expr);
}

//! Metric and label names: OTLP names and UCUM units to Prometheus names.
//!
//! The rules are those of the OpenTelemetry "Prometheus and OpenMetrics compatibility"
//! specification as Prometheus's OTLP receiver applies them (with UTF-8 names off):
//! characters outside `[a-zA-Z0-9:]` split the name into words joined by one `_`; the unit
//! adds a word (`s` → `seconds`, `By` → `bytes`, `By/s` → `bytes_per_second`, annotations in
//! `{}` dropped, a word already in the name not repeated); a monotonic counter ends in
//! `total`, a gauge with unit `1` in `ratio`, each word once and last.

/// The kind of a metric as far as its name is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameKind {
    /// A gauge: gets `_ratio` for unit `1`.
    Gauge,
    /// A non-monotonic sum: stored as a gauge, but named without `_ratio` (as Prometheus).
    UpDownCounter,
    /// A monotonic cumulative sum: gets `_total`.
    Counter,
    /// A histogram, exponential histogram or summary (suffixes `_bucket`, `_sum`, `_count`
    /// are added per series, not here).
    Other,
}

/// UCUM main units Prometheus spells out; any other unit is kept (sanitised).
fn main_unit(unit: &str) -> &str {
    match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tebibytes",
        "KBy" | "kBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "1" => "",
        "%" => "percent",
        other => other,
    }
}

/// UCUM units after `/`, spelled in the singular.
fn per_unit(unit: &str) -> &str {
    match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => other,
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == ':'
}

/// Splits `s` into the words between characters outside `[a-zA-Z0-9:]` (so `_` separates
/// too, and runs of separators collapse).
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !is_name_char(c)).filter(|w| !w.is_empty())
}

/// A unit word sanitised as a name part: words joined with `_`.
fn clean_unit(unit: &str) -> String {
    words(unit).collect::<Vec<_>>().join("_")
}

/// The main and "per" unit words of a UCUM unit (`By/s` → `("bytes", "per_second")`), each
/// sanitised; empty when absent or an annotation in `{}`.
fn unit_words(unit: &str) -> (String, String) {
    let (main, per) = match unit.split_once('/') {
        Some((m, p)) => (m, Some(p)),
        None => (unit, None),
    };
    let main = main.trim();
    let main_word = if main.is_empty() || main.contains(['{', '}']) {
        String::new()
    } else {
        clean_unit(main_unit(main))
    };
    let per_word = match per.map(str::trim) {
        Some(p) if !p.is_empty() && !p.contains(['{', '}']) => {
            let w = clean_unit(per_unit(p));
            if w.is_empty() { String::new() } else { format!("per_{w}") }
        }
        _ => String::new(),
    };
    (main_word, per_word)
}

/// The unit as Prometheus names it in metadata (`s` → `seconds`, `By/s` →
/// `bytes_per_second`, `1` → empty).
pub(crate) fn prometheus_unit(unit: &str) -> String {
    match unit_words(unit) {
        (m, p) if m.is_empty() => p,
        (m, p) if p.is_empty() => m,
        (m, p) => format!("{m}_{p}"),
    }
}

/// The Prometheus metric name for an OTLP metric; empty when nothing valid remains (the
/// caller drops such a metric).
pub(crate) fn metric_name(name: &str, unit: &str, kind: NameKind, with_suffixes: bool) -> String {
    let mut tokens: Vec<&str> = words(name).collect();
    let out = if with_suffixes {
        let (main_word, per_word) = unit_words(unit);
        let mut tokens: Vec<String> = tokens.drain(..).map(str::to_owned).collect();
        let has = |tokens: &[String], w: &str| tokens.iter().any(|t| t == w);
        if !main_word.is_empty() && !has(&tokens, &main_word) {
            tokens.push(main_word);
        }
        if !per_word.is_empty() && !has(&tokens, &per_word) {
            tokens.push(per_word);
        }
        if kind == NameKind::Counter {
            tokens.retain(|t| t != "total");
            tokens.push("total".to_owned());
        }
        if unit == "1" && kind == NameKind::Gauge {
            tokens.retain(|t| t != "ratio");
            tokens.push("ratio".to_owned());
        }
        tokens.join("_")
    } else {
        tokens.join("_")
    };
    if out.starts_with(|c: char| c.is_ascii_digit()) { format!("_{out}") } else { out }
}

/// The Prometheus label name for an attribute key: characters outside `[a-zA-Z0-9]` and runs
/// of them become one `_`; a name that would start with a digit gets `key_` in front, one
/// that would start with `_` gets `key` (so no attribute ever makes a name reserved by
/// Prometheus, `__name__` included). Empty for an empty key.
pub(crate) fn label_name(key: &str) -> String {
    if key.is_empty() {
        return String::new();
    }
    // Keep a reserved-looking `__x__` recognisable, as Prometheus does, but under `key`.
    let (inner, reserved) = match key.strip_prefix("__").and_then(|k| k.strip_suffix("__")) {
        Some(inner) if key.len() >= 4 => (inner, true),
        _ => (key, false),
    };
    let mut out = String::with_capacity(key.len() + 6);
    if reserved {
        out.push_str("__");
    }
    let mut prev_underscore = reserved;
    for c in inner.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_underscore = false;
        } else if !prev_underscore {
            out.push('_');
            prev_underscore = true;
        }
    }
    if reserved {
        if out.ends_with('_') {
            out.push('_');
        } else {
            out.push_str("__");
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    } else if out.starts_with('_') {
        out.insert_str(0, "key");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_name_table_matches_prometheus_normalisation() {
        use NameKind::*;
        let cases: &[(&str, &str, NameKind, &str)] = &[
            ("http.server.request.duration", "s", Other, "http_server_request_duration_seconds"),
            ("http.server.duration", "ms", Other, "http_server_duration_milliseconds"),
            ("system.filesystem.usage", "By", Gauge, "system_filesystem_usage_bytes"),
            ("system.memory.utilization", "1", Gauge, "system_memory_utilization_ratio"),
            ("cpu.utilization.ratio", "1", Gauge, "cpu_utilization_ratio"),
            ("http.server.requests", "{requests}", Counter, "http_server_requests_total"),
            ("requests.total", "1", Counter, "requests_total"),
            ("total.requests", "", Counter, "requests_total"),
            ("my.counter", "1", Counter, "my_counter_total"),
            ("system.network.io", "By", Counter, "system_network_io_bytes_total"),
            ("network.rate", "By/s", Gauge, "network_rate_bytes_per_second"),
            ("packets.rate", "{packets}/s", Gauge, "packets_rate_per_second"),
            ("requests.rate", "1/s", Gauge, "requests_rate_per_second"),
            ("latency.seconds", "s", Other, "latency_seconds"),
            ("seconds.elapsed", "s", Gauge, "seconds_elapsed"),
            ("system.network.dropped", "packets", Counter, "system_network_dropped_packets_total"),
            ("temperature", "Cel", Gauge, "temperature_celsius"),
            ("disk.free", "%", Gauge, "disk_free_percent"),
            ("(lambda).function.executions(#)", "", Counter, "lambda_function_executions_total"),
            ("foo__bar..baz", "", Gauge, "foo_bar_baz"),
            ("k8s:pod:cpu", "", Gauge, "k8s:pod:cpu"),
            ("2xx.responses", "", Counter, "_2xx_responses_total"),
            ("queue.size", "{items}", Gauge, "queue_size"),
            ("db.client.connections.usage", "1", UpDownCounter, "db_client_connections_usage"),
            ("process.threads", "{thread}", UpDownCounter, "process_threads"),
            ("fs.free", "By", UpDownCounter, "fs_free_bytes"),
            ("memory.limit", "MiBy", Gauge, "memory_limit_mebibytes"),
            ("weird.unit", "foo bar", Gauge, "weird_unit_foo_bar"),
            ("...", "s", Gauge, "seconds"),
            ("...", "", Gauge, ""),
        ];
        for (name, unit, kind, want) in cases {
            assert_eq!(metric_name(name, unit, *kind, true), *want, "{name} [{unit}] {kind:?}");
        }
    }

    #[test]
    fn metric_name_without_suffixes_only_sanitises() {
        assert_eq!(metric_name("http.server.duration", "s", NameKind::Other, false), "http_server_duration");
        assert_eq!(metric_name("my.counter", "1", NameKind::Counter, false), "my_counter");
        assert_eq!(metric_name("usage", "1", NameKind::Gauge, false), "usage");
        assert_eq!(metric_name("1st.metric", "", NameKind::Gauge, false), "_1st_metric");
    }

    #[test]
    fn label_name_table_matches_prometheus_normalisation() {
        let cases: &[(&str, &str)] = &[
            ("http.method", "http_method"),
            ("http.response.status_code", "http_response_status_code"),
            ("net.peer.name", "net_peer_name"),
            ("a..b", "a_b"),
            ("a__b", "a_b"),
            ("123invalid", "key_123invalid"),
            ("_private", "key_private"),
            ("__name__", "key__name__"),
            ("__reserved__", "key__reserved__"),
            ("__foo", "key_foo"),
            ("...", "key_"),
            ("größe", "gr_e"),
            ("CamelCase", "CamelCase"),
            ("", ""),
        ];
        for (key, want) in cases {
            assert_eq!(label_name(key), *want, "{key}");
        }
    }

    #[test]
    fn prometheus_unit_translates_ucum() {
        assert_eq!(prometheus_unit("s"), "seconds");
        assert_eq!(prometheus_unit("By/s"), "bytes_per_second");
        assert_eq!(prometheus_unit("1"), "");
        assert_eq!(prometheus_unit("{requests}"), "");
        assert_eq!(prometheus_unit("{requests}/s"), "per_second");
    }
}

//! What the canary writes for each signal, and how it reads the answers back.
//!
//! Every item is derived from the run id and a sequence number, so the canary needs to remember
//! only `(seq, timestamp)` to know what a query should return:
//! - traces: one trace of three spans (`canary-root` and two children) whose trace id is a hash of
//!   the run and the sequence number; the root carries `canary.seq` and `canary.checksum`;
//! - logs: one line `pharos canary run=<run> seq=<seq> checksum=<checksum>` in the stream of
//!   `service.name=pharos-canary`, `service.instance.id=<run>`;
//! - metrics: one sample of the gauge `pharos_canary_seq` (`job="pharos-canary"`,
//!   `instance="<run>"`) whose value is the sequence number, at the write's timestamp.

use std::{collections::HashMap, fmt};

use opentelemetry_proto::tonic::{
    collector::{
        logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
        trace::v1::ExportTraceServiceRequest,
    },
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData, span},
};
use prost::Message;
use serde_json::Value;

use super::ledger::{Probe, Seen};

/// The service name of everything the canary writes.
pub(crate) const SERVICE: &str = "pharos-canary";
/// The metric the canary writes.
pub(crate) const METRIC: &str = "pharos_canary_seq";
const SPAN_NAMES: [&str; 3] = ["canary-root", "canary-child-1", "canary-child-2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }

    /// The OTLP/HTTP path of the signal.
    pub(crate) fn otlp_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// FNV-1a, 64 bits: a stable hash for ids and checksums (not for security).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One canary run: its id, in every item it writes.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub id: String,
}

impl Run {
    /// The checksum of an item: what a changed item is told by.
    pub(crate) fn checksum(&self, signal: Signal, seq: u64, ts_ns: i64) -> String {
        let h =
            fnv(&[self.id.as_bytes(), signal.name().as_bytes(), &seq.to_le_bytes(), &ts_ns.to_le_bytes()]);
        format!("{h:016x}")
    }

    pub(crate) fn trace_id(&self, seq: u64) -> [u8; 16] {
        let hi = fnv(&[self.id.as_bytes(), b"trace-hi", &seq.to_le_bytes()]);
        let lo = fnv(&[self.id.as_bytes(), b"trace-lo", &seq.to_le_bytes()]);
        let mut id = [0; 16];
        id[..8].copy_from_slice(&hi.to_be_bytes());
        id[8..].copy_from_slice(&lo.to_be_bytes());
        id
    }

    pub(crate) fn trace_id_hex(&self, seq: u64) -> String {
        self.trace_id(seq).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn span_id(&self, seq: u64, n: u8) -> [u8; 8] {
        // Never all zeros (an invalid span id): the low bit is set.
        (fnv(&[self.id.as_bytes(), b"span", &seq.to_le_bytes(), &[n]]) | 1).to_be_bytes()
    }

    fn resource(&self) -> Resource {
        Resource {
            attributes: vec![
                string_attr("service.name", SERVICE),
                string_attr("service.instance.id", &self.id),
            ],
            ..Resource::default()
        }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: SERVICE.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..InstrumentationScope::default()
        }
    }

    /// The OTLP/HTTP protobuf body that writes item `seq` of `signal`.
    pub(crate) fn encode(&self, signal: Signal, seq: u64, ts_ns: i64) -> Vec<u8> {
        match signal {
            Signal::Traces => self.trace_request(seq, ts_ns).encode_to_vec(),
            Signal::Logs => self.log_request(seq, ts_ns).encode_to_vec(),
            Signal::Metrics => self.metric_request(seq, ts_ns).encode_to_vec(),
        }
    }

    fn trace_request(&self, seq: u64, ts_ns: i64) -> ExportTraceServiceRequest {
        let start = ts_ns as u64;
        let trace_id = self.trace_id(seq).to_vec();
        let root_id = self.span_id(seq, 0);
        let spans = SPAN_NAMES
            .iter()
            .enumerate()
            .map(|(n, name)| {
                let n = n as u64;
                let mut attributes = vec![int_attr("canary.seq", seq as i64)];
                if n == 0 {
                    attributes
                        .push(string_attr("canary.checksum", &self.checksum(Signal::Traces, seq, ts_ns)));
                }
                Span {
                    trace_id: trace_id.clone(),
                    span_id: self.span_id(seq, n as u8).to_vec(),
                    parent_span_id: if n == 0 { Vec::new() } else { root_id.to_vec() },
                    name: (*name).to_string(),
                    kind: if n == 0 { span::SpanKind::Server } else { span::SpanKind::Internal } as i32,
                    start_time_unix_nano: start + n * 1_000_000,
                    end_time_unix_nano: start + if n == 0 { 10_000_000 } else { (n + 1) * 1_000_000 },
                    attributes,
                    ..Span::default()
                }
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource()),
                scope_spans: vec![ScopeSpans { scope: Some(Self::scope()), spans, ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// The line of log item `seq`.
    pub(crate) fn log_line(&self, seq: u64, ts_ns: i64) -> String {
        format!(
            "pharos canary run={} seq={seq} checksum={}",
            self.id,
            self.checksum(Signal::Logs, seq, ts_ns)
        )
    }

    fn log_request(&self, seq: u64, ts_ns: i64) -> ExportLogsServiceRequest {
        let record = LogRecord {
            time_unix_nano: ts_ns as u64,
            observed_time_unix_nano: ts_ns as u64,
            severity_number: 9, // INFO
            severity_text: "INFO".to_string(),
            body: Some(AnyValue { value: Some(any_value::Value::StringValue(self.log_line(seq, ts_ns))) }),
            ..LogRecord::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(Self::scope()),
                    log_records: vec![record],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    fn metric_request(&self, seq: u64, ts_ns: i64) -> ExportMetricsServiceRequest {
        let point = NumberDataPoint {
            time_unix_nano: ts_ns as u64,
            value: Some(number_data_point::Value::AsDouble(seq as f64)),
            ..NumberDataPoint::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(Self::scope()),
                    metrics: vec![Metric {
                        name: METRIC.to_string(),
                        description: "The sequence number of the canary's last write".to_string(),
                        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    /// Judges a trace-by-id answer (OTLP `TracesData` protobuf) for `probe`.
    pub(crate) fn judge_trace(&self, probe: Probe, body: &[u8]) -> Seen {
        let data = match TracesData::decode(body) {
            Ok(d) => d,
            Err(e) => return Seen::Different(format!("undecodable trace: {e}")),
        };
        let spans: Vec<&Span> =
            data.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        if spans.is_empty() {
            return Seen::Absent;
        }
        let mut problems = Vec::new();
        let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        let mut want = SPAN_NAMES;
        want.sort_unstable();
        if names != want {
            problems.push(format!("spans {names:?}, want {want:?}"));
        }
        let trace_id = self.trace_id(probe.seq);
        if spans.iter().any(|s| s.trace_id != trace_id) {
            problems.push("a span with another trace id".to_string());
        }
        match spans.iter().find(|s| s.name == SPAN_NAMES[0]) {
            Some(root) => {
                let want = self.checksum(Signal::Traces, probe.seq, probe.ts_ns);
                let got =
                    root.attributes.iter().find(|kv| kv.key == "canary.checksum").and_then(|kv| {
                        match kv.value.as_ref()?.value.as_ref()? {
                            any_value::Value::StringValue(s) => Some(s.as_str()),
                            _ => None,
                        }
                    });
                if got != Some(want.as_str()) {
                    problems.push(format!("root canary.checksum {got:?}, want {want:?}"));
                }
                if root.start_time_unix_nano != probe.ts_ns as u64 {
                    problems.push(format!("root start {}, want {}", root.start_time_unix_nano, probe.ts_ns));
                }
            }
            None => problems.push("no root span".to_string()),
        }
        if problems.is_empty() { Seen::Intact } else { Seen::Different(problems.join("; ")) }
    }

    /// The LogQL query that returns this run's lines.
    pub(crate) fn log_query(&self) -> String {
        format!("{{service_name=\"{SERVICE}\"}} |= \"run={} \"", self.id)
    }

    /// The PromQL query that returns this run's samples in `(at - range, at]`.
    pub(crate) fn metric_query(&self, range_ms: i64) -> String {
        format!("{METRIC}{{job=\"{SERVICE}\",instance=\"{}\"}}[{range_ms}ms]", self.id)
    }

    /// Judges the log entries found (by sequence number) for each probe.
    pub(crate) fn judge_logs(
        &self,
        probes: &[Probe],
        entries: &HashMap<u64, Vec<(i64, String)>>,
    ) -> Vec<(u64, Seen)> {
        probes
            .iter()
            .map(|p| {
                let seen = match entries.get(&p.seq).map(Vec::as_slice) {
                    None | Some([]) => Seen::Absent,
                    Some([(ts, line)]) => {
                        let want = self.log_line(p.seq, p.ts_ns);
                        let mut problems = Vec::new();
                        if *ts != p.ts_ns {
                            problems.push(format!("timestamp {ts}, want {}", p.ts_ns));
                        }
                        if *line != want {
                            problems.push(format!("line {line:?}, want {want:?}"));
                        }
                        if problems.is_empty() { Seen::Intact } else { Seen::Different(problems.join("; ")) }
                    }
                    Some(many) => {
                        Seen::Different(format!("{} entries with this sequence number", many.len()))
                    }
                };
                (p.seq, seen)
            })
            .collect()
    }

    /// Judges the samples found (by timestamp in milliseconds) for each probe.
    pub(crate) fn judge_samples(&self, probes: &[Probe], samples: &HashMap<i64, f64>) -> Vec<(u64, Seen)> {
        probes
            .iter()
            .map(|p| {
                let seen = match samples.get(&(p.ts_ns / 1_000_000)) {
                    None => Seen::Absent,
                    Some(v) if *v == p.seq as f64 => Seen::Intact,
                    Some(v) => Seen::Different(format!("value {v}, want {}", p.seq)),
                };
                (p.seq, seen)
            })
            .collect()
    }
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..KeyValue::default()
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        ..KeyValue::default()
    }
}

/// The entries of a Loki `query_range` streams answer: by sequence number, `(timestamp, line)`;
/// also the number of entries and the newest timestamp (to page on).
pub(crate) fn parse_log_streams(
    answer: &Value,
    into: &mut HashMap<u64, Vec<(i64, String)>>,
) -> Result<(usize, Option<i64>), String> {
    let result = answer
        .pointer("/data/result")
        .and_then(Value::as_array)
        .ok_or_else(|| "no data.result in the answer".to_string())?;
    let mut count = 0;
    let mut newest = None;
    for stream in result {
        let values = stream.get("values").and_then(Value::as_array).ok_or("a stream without values")?;
        for v in values {
            let (Some(ts), Some(line)) = (v.get(0).and_then(Value::as_str), v.get(1).and_then(Value::as_str))
            else {
                return Err(format!("bad entry {v}"));
            };
            let ts: i64 = ts.parse().map_err(|_| format!("bad timestamp {ts:?}"))?;
            count += 1;
            newest = newest.max(Some(ts));
            let seq = line
                .split_ascii_whitespace()
                .find_map(|w| w.strip_prefix("seq="))
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(seq) = seq {
                into.entry(seq).or_default().push((ts, line.to_string()));
            }
        }
    }
    Ok((count, newest))
}

/// The samples of a Prometheus matrix answer, by timestamp in milliseconds.
pub(crate) fn parse_matrix(answer: &Value) -> Result<HashMap<i64, f64>, String> {
    let result = answer
        .pointer("/data/result")
        .and_then(Value::as_array)
        .ok_or_else(|| "no data.result in the answer".to_string())?;
    let mut samples = HashMap::new();
    for series in result {
        let values = series.get("values").and_then(Value::as_array).ok_or("a series without values")?;
        for v in values {
            let (Some(ts), Some(value)) =
                (v.get(0).and_then(Value::as_f64), v.get(1).and_then(Value::as_str))
            else {
                return Err(format!("bad sample {v}"));
            };
            let value: f64 = value.parse().map_err(|_| format!("bad value {value:?}"))?;
            samples.insert((ts * 1000.0).round() as i64, value);
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run() -> Run {
        Run { id: "r1".to_string() }
    }

    fn trace_body(request: ExportTraceServiceRequest) -> Vec<u8> {
        TracesData { resource_spans: request.resource_spans }.encode_to_vec()
    }

    #[test]
    fn trace_as_written_is_intact_and_a_changed_checksum_is_wrong() {
        let r = run();
        let probe = Probe { seq: 7, ts_ns: 1_700_000_000_000_000_000 };
        let request = r.trace_request(7, probe.ts_ns);
        assert_eq!(r.judge_trace(probe, &trace_body(request.clone())), Seen::Intact);
        assert_eq!(r.judge_trace(probe, &TracesData::default().encode_to_vec()), Seen::Absent);

        let mut changed = request.clone();
        let root = &mut changed.resource_spans[0].scope_spans[0].spans[0];
        root.attributes[1].value = Some(AnyValue { value: Some(any_value::Value::StringValue("x".into())) });
        assert!(
            matches!(r.judge_trace(probe, &trace_body(changed)), Seen::Different(d) if d.contains("checksum"))
        );

        let mut short = request;
        short.resource_spans[0].scope_spans[0].spans.pop();
        assert!(
            matches!(r.judge_trace(probe, &trace_body(short)), Seen::Different(d) if d.contains("spans"))
        );
    }

    #[test]
    fn trace_ids_differ_by_run_and_sequence() {
        let a = Run { id: "a".into() };
        let b = Run { id: "b".into() };
        assert_ne!(a.trace_id(1), a.trace_id(2));
        assert_ne!(a.trace_id(1), b.trace_id(1));
        assert_eq!(a.trace_id_hex(1).len(), 32);
    }

    #[test]
    fn log_answer_is_parsed_and_judged_by_sequence_number() {
        let r = run();
        let p1 = Probe { seq: 1, ts_ns: 1_000 };
        let p2 = Probe { seq: 2, ts_ns: 2_000 };
        let p3 = Probe { seq: 3, ts_ns: 3_000 };
        let answer = json!({"status": "success", "data": {"resultType": "streams", "result": [
            {"stream": {"service_name": "pharos-canary"}, "values": [
                ["1000", r.log_line(1, 1_000)],
                ["2000", r.log_line(2, 2_001)],
                ["2500", "unrelated line"],
            ]}
        ]}});
        let mut entries = HashMap::new();
        assert_eq!(parse_log_streams(&answer, &mut entries), Ok((3, Some(2500))));
        let judged = r.judge_logs(&[p1, p2, p3], &entries);
        assert_eq!(judged[0], (1, Seen::Intact));
        assert!(matches!(&judged[1].1, Seen::Different(d) if d.contains("checksum")), "{judged:?}");
        assert_eq!(judged[2], (3, Seen::Absent));
    }

    #[test]
    fn matrix_answer_is_judged_by_timestamp_and_value() {
        let r = run();
        let answer = json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": METRIC}, "values": [[1.5, "1"], [2.25, "9"]]}
        ]}});
        let samples = parse_matrix(&answer).unwrap();
        let probes = [
            Probe { seq: 1, ts_ns: 1_500_000_000 },
            Probe { seq: 2, ts_ns: 2_250_000_000 },
            Probe { seq: 3, ts_ns: 3_000_000_000 },
        ];
        let judged = r.judge_samples(&probes, &samples);
        assert_eq!(judged[0].1, Seen::Intact);
        assert_eq!(judged[1].1, Seen::Different("value 9, want 2".into()));
        assert_eq!(judged[2].1, Seen::Absent);
    }
}

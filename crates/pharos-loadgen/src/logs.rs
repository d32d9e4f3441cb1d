//! Log records: OTLP logs (a pool of encoded requests, moved in time on each send) and Loki push
//! requests (protobuf `logproto.PushRequest`, snappy, or JSON), with bodies in the format and
//! size of `--log-format` and `--log-body-size`.

use crate::manifest::StreamRange;
use crate::rng::{Rng, hex, splitmix64};
use crate::shape::{LogFormat, METHODS, ROUTES, Shape, i, resource, s, scope};
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use prost::Message;

const TEMPLATES: &[(&str, SeverityNumber, &str)] = &[
    ("INFO", SeverityNumber::Info, "request completed"),
    ("INFO", SeverityNumber::Info, "order placed"),
    ("DEBUG", SeverityNumber::Debug, "cache lookup"),
    ("WARN", SeverityNumber::Warn, "slow upstream response"),
    ("ERROR", SeverityNumber::Error, "payment authorization failed"),
    ("INFO", SeverityNumber::Info, "user signed in"),
];

/// One log line's content.
pub(crate) struct Line {
    pub(crate) severity_text: &'static str,
    pub(crate) severity: SeverityNumber,
    pub(crate) body: String,
    pub(crate) route: &'static str,
    pub(crate) user: u64,
}

/// A log line in `shape.log_format`, padded to `shape.log_body_size` bytes.
pub(crate) fn line(shape: &Shape, rng: &mut Rng) -> Line {
    let (severity_text, severity, what) = *rng.pick(TEMPLATES);
    let route = *rng.pick(ROUTES);
    let method = *rng.pick(METHODS);
    let order_id = rng.below(10_000_000);
    let user = rng.below(1_000_000);
    let ms = rng.below(2_000);
    let status = if severity == SeverityNumber::Error { 502 } else { 200 };
    let level = severity_text.to_ascii_lowercase();
    let mut body = match shape.log_format {
        LogFormat::Text => format!(
            "{what}: method={method} route={route} order_id={order_id} user_id=u{user} duration_ms={ms} status={status}"
        ),
        LogFormat::Logfmt => format!(
            "level={level} msg=\"{what}\" method={method} route={route} order_id={order_id} user_id=u{user} duration_ms={ms} status={status}"
        ),
        LogFormat::Json => format!(
            "{{\"level\":\"{level}\",\"msg\":\"{what}\",\"method\":\"{method}\",\"route\":\"{route}\",\"order_id\":{order_id},\"user_id\":\"u{user}\",\"duration_ms\":{ms},\"status\":{status}}}"
        ),
    };
    if body.len() < shape.log_body_size {
        // Padding of random hex words in the syntax of the format, to the size (over it by the
        // padding's own syntax when even one byte of padding does not fit).
        let overhead = match shape.log_format {
            LogFormat::Text => " detail=".len(),
            LogFormat::Logfmt => " detail=\"\"".len(),
            LogFormat::Json => ",\"detail\":\"\"".len(),
        };
        let want = shape.log_body_size.saturating_sub(body.len() + overhead).max(1);
        let mut pad = String::with_capacity(want + 9);
        while pad.len() < want {
            if !pad.is_empty() {
                pad.push(' ');
            }
            pad.push_str(&format!("{:08x}", rng.next_u64() as u32));
        }
        pad.truncate(want);
        match shape.log_format {
            LogFormat::Text => body = format!("{body} detail={pad}"),
            LogFormat::Logfmt => body = format!("{body} detail=\"{pad}\""),
            LogFormat::Json => {
                body.pop();
                body = format!("{body},\"detail\":\"{pad}\"}}");
            }
        }
    }
    Line { severity_text, severity, body, route, user }
}

/// One encoded OTLP logs request, and where its records' times are.
pub(crate) struct PrebuiltLogs {
    pub(crate) bytes: Bytes,
    /// Where the records' `time_unix_nano` values are (fixed64, little endian); each copy moves
    /// them by the time since the build, so that copies are distinct entries of their stream
    /// (the same time and line twice is one entry).
    time_offsets: Vec<usize>,
    /// Where the records' trace and span ids are; each copy changes them (see
    /// [`PrebuiltLogs::instantiate`]).
    id_offsets: Vec<(usize, usize)>,
    /// Per service: its stream, the time range and the number of records (before the move).
    pub(crate) streams: Vec<StreamRange>,
    pub(crate) built_at: u64,
    pub(crate) items: u64,
}

impl PrebuiltLogs {
    /// Copy `seq` (under `seed`) with every record moved by the time since the build, and its
    /// trace and span ids made its own (XORed with a mask of `seq`, so that the records of two
    /// copies differ as two requests' records do: copies alike would be stored smaller than
    /// real logs); returns the shift too.
    pub(crate) fn instantiate(&self, now: u64, seed: u64, seq: u64) -> (Bytes, u64) {
        let mut buf = BytesMut::from(&self.bytes[..]);
        let shift = now.saturating_sub(self.built_at);
        for &off in &self.time_offsets {
            let mut t = [0u8; 8];
            t.copy_from_slice(&buf[off..off + 8]);
            let moved = u64::from_le_bytes(t).wrapping_add(shift);
            buf[off..off + 8].copy_from_slice(&moved.to_le_bytes());
        }
        let mask = splitmix64(seq ^ splitmix64(seed ^ 0x6c6f_6773_1d5e_ed00)).to_le_bytes();
        for &(trace, span) in &self.id_offsets {
            for off in [trace, span] {
                for (b, m) in buf[off..off + 8].iter_mut().zip(mask) {
                    *b ^= m;
                }
            }
        }
        (buf.freeze(), shift)
    }
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> usize {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
        .expect("time present in encoded request")
}

/// Pool entry `index`: `batch` records spread over the services, a few per span of a trace.
pub(crate) fn build_otlp(shape: &Shape, batch: usize, seed: u64, index: u64, now: u64) -> PrebuiltLogs {
    let mut rng = Rng::derive(seed, 0x6c6f_6773_0000_0000 ^ index);
    let nres = shape.services.min(batch.max(1));
    let first_service = rng.below(shape.services as u64) as usize;
    let mut times: Vec<u64> = Vec::with_capacity(batch);
    let mut ids: Vec<([u8; 16], [u8; 8])> = Vec::with_capacity(batch);
    let mut resource_logs = Vec::with_capacity(nres);
    let mut streams = Vec::with_capacity(nres);
    for r in 0..nres {
        let n = batch / nres + usize::from(r < batch % nres);
        let svc = shape.service_name((first_service + r) % shape.services);
        let mut records = Vec::with_capacity(n);
        let (mut trace_id, mut span_id) = ([0u8; 16], [0u8; 8]);
        let mut range = StreamRange::new(format!("{{service_name=\"{svc}\"}}"));
        for k in 0..n {
            if k % 4 == 0 {
                trace_id = rng.id::<16>();
            }
            if k % 2 == 0 {
                span_id = rng.id::<8>();
            }
            let l = line(shape, &mut rng);
            let t = now - 1_000_000_000 - rng.below(5_000_000_000);
            times.push(t);
            ids.push((trace_id, span_id));
            range.add(t);
            let mut attributes = vec![
                s("code.function.name", "handlers::orders::create"),
                s("code.file.path", "src/handlers/orders.rs"),
                i("code.line.number", 100 + rng.below(400) as i64),
                s("thread.name", format!("tokio-runtime-worker-{}", rng.below(8))),
                s("http.route", l.route),
                s("enduser.id", format!("u{}", l.user)),
                i("order.items", 1 + rng.below(12) as i64),
            ];
            attributes.extend(shape.extra_attributes(&mut rng));
            records.push(LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t + 1_000_000 + rng.below(20_000_000),
                severity_number: l.severity as i32,
                severity_text: l.severity_text.to_string(),
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(l.body)) }),
                attributes,
                flags: 1,
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                ..Default::default()
            });
        }
        if n > 0 {
            streams.push(range);
        }
        resource_logs.push(ResourceLogs {
            resource: Some(resource(&mut rng, &svc)),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope("tracing-opentelemetry")),
                log_records: records,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
        });
    }
    let bytes = ExportLogsServiceRequest { resource_logs }.encode_to_vec();
    // time_unix_nano is field 1 of LogRecord (fixed64: key 0x09), first in each record.
    let mut time_offsets = Vec::with_capacity(times.len());
    let mut pos = 0;
    for t in &times {
        let mut key_and_time = vec![0x09];
        key_and_time.extend_from_slice(&t.to_le_bytes());
        let at = find_from(&bytes, &key_and_time, pos) + 1;
        time_offsets.push(at);
        pos = at + 8;
    }
    // trace_id and span_id are fields 9 and 10 (bytes: keys 0x4a and 0x52), after the time.
    let id_offsets = time_offsets
        .iter()
        .zip(&ids)
        .map(|(&at, (trace, span))| {
            let trace_at = find_from(&bytes, &[&[0x4a, 16][..], trace].concat(), at) + 2;
            let span_at = find_from(&bytes, &[&[0x52, 8][..], span].concat(), trace_at) + 2;
            (trace_at, span_at)
        })
        .collect();
    PrebuiltLogs {
        bytes: Bytes::from(bytes),
        time_offsets,
        id_offsets,
        streams,
        built_at: now,
        items: batch as u64,
    }
}

/// Loki's `logproto.PushRequest` (the fields a push uses).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) streams: Vec<Stream>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Stream {
    /// The stream's labels as a selector: `{service_name="cart", namespace="shop"}`.
    #[prost(string, tag = "1")]
    pub(crate) labels: String,
    #[prost(message, repeated, tag = "2")]
    pub(crate) entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Entry {
    #[prost(message, optional, tag = "1")]
    pub(crate) timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub(crate) line: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) structured_metadata: Vec<LabelPair>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPair {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Timestamp {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

/// The Loki push of send `seq`: `batch` lines over the services' streams
/// (`{service_name, namespace, level}`), each stream's entries in time order within the last
/// second before `now`, a `trace_id` as structured metadata.
pub(crate) fn loki_push(
    shape: &Shape,
    batch: usize,
    seed: u64,
    seq: u64,
    now: u64,
) -> (PushRequest, Vec<StreamRange>) {
    let mut rng = Rng::derive(seed, 0x6c6f_6b69_0000_0000 ^ seq);
    let mut streams: Vec<(String, Vec<Entry>)> = Vec::new();
    let base = now - 1_000_000_000;
    for k in 0..batch {
        let svc = shape.service_name(rng.below(shape.services as u64) as usize);
        let l = line(shape, &mut rng);
        let labels = format!(
            "{{service_name=\"{svc}\", namespace=\"shop\", level=\"{}\"}}",
            l.severity_text.to_ascii_lowercase()
        );
        // Distinct, increasing times: entry k at base + k * (1 s / batch) + jitter below that step.
        let step = 1_000_000_000 / batch.max(1) as u64;
        let t = base + k as u64 * step + rng.below(step.max(1));
        let entry = Entry {
            timestamp: Some(Timestamp {
                seconds: (t / 1_000_000_000) as i64,
                nanos: (t % 1_000_000_000) as i32,
            }),
            line: l.body,
            structured_metadata: vec![LabelPair { name: "trace_id".into(), value: hex(&rng.id::<16>()) }],
        };
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, entries)) => entries.push(entry),
            None => streams.push((labels, vec![entry])),
        }
    }
    let ranges = streams
        .iter()
        .map(|(labels, entries)| {
            let mut r = StreamRange::new(labels.clone());
            for e in entries {
                let ts = e.timestamp.as_ref().expect("set");
                r.add(ts.seconds as u64 * 1_000_000_000 + ts.nanos as u64);
            }
            r
        })
        .collect();
    let req = PushRequest {
        streams: streams.into_iter().map(|(labels, entries)| Stream { labels, entries }).collect(),
    };
    (req, ranges)
}

/// Loki's JSON push body for the same request.
pub(crate) fn loki_json(req: &PushRequest) -> Vec<u8> {
    let streams: Vec<serde_json::Value> = req
        .streams
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> = s
                .labels
                .trim_matches(|c| c == '{' || c == '}')
                .split(", ")
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.trim_matches('"').to_string())))
                .collect();
            let values: Vec<serde_json::Value> = s
                .entries
                .iter()
                .map(|e| {
                    let ts = e.timestamp.as_ref().expect("set");
                    let ns = ts.seconds as u64 * 1_000_000_000 + ts.nanos as u64;
                    let sm: serde_json::Map<String, serde_json::Value> = e
                        .structured_metadata
                        .iter()
                        .map(|p| (p.name.clone(), serde_json::Value::String(p.value.clone())))
                        .collect();
                    serde_json::json!([ns.to_string(), e.line, sm])
                })
                .collect();
            serde_json::json!({ "stream": labels, "values": values })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "streams": streams })).expect("JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log records of an encoded request, in order.
    fn records(bytes: Bytes) -> Vec<LogRecord> {
        ExportLogsServiceRequest::decode(bytes)
            .unwrap()
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect()
    }

    #[test]
    fn log_copies_move_every_record_time_by_the_time_since_the_build() {
        let p = build_otlp(&Shape::default(), 40, 7, 0, 1_800_000_000_000_000_000);
        let times = |bytes: Bytes| -> Vec<u64> { records(bytes).iter().map(|l| l.time_unix_nano).collect() };
        let built = times(p.bytes.clone());
        let (copy, shift) = p.instantiate(1_800_000_000_005_000_000, 1, 0);
        let copy = times(copy);
        assert_eq!(built.len(), 40);
        assert_eq!(shift, 5_000_000);
        assert!(built.iter().zip(&copy).all(|(b, c)| c - b == shift), "every record moves by the same shift");
        assert_eq!(p.streams.iter().map(|s| s.count).sum::<u64>(), 40);
    }

    #[test]
    fn each_copy_has_its_own_trace_and_span_ids_and_a_trace_keeps_its_records() {
        let p = build_otlp(&Shape::default(), 40, 7, 0, 1_800_000_000_000_000_000);
        let ids = |bytes: Bytes| -> Vec<(Vec<u8>, Vec<u8>)> {
            records(bytes).into_iter().map(|l| (l.trace_id, l.span_id)).collect()
        };
        let now = 1_800_000_000_005_000_000;
        let (built, one, two) =
            (ids(p.bytes.clone()), ids(p.instantiate(now, 1, 1).0), ids(p.instantiate(now, 1, 2).0));
        assert_eq!(one, ids(p.instantiate(now, 1, 1).0), "the same send, the same ids");
        for (a, b) in [(&built, &one), (&one, &two)] {
            assert!(
                a.iter().zip(b).all(|(x, y)| x.0 != y.0 && x.1 != y.1),
                "every id differs between copies"
            );
        }
        // Records that shared a trace (or span) in the build share it in a copy.
        let groups = |v: &[(Vec<u8>, Vec<u8>)]| -> Vec<(bool, bool)> {
            v.windows(2).map(|w| (w[0].0 == w[1].0, w[0].1 == w[1].1)).collect()
        };
        assert_eq!(groups(&built), groups(&two));
        assert!(two.iter().all(|(t, s)| t.len() == 16 && s.len() == 8));
    }

    #[test]
    fn bodies_have_the_format_and_at_least_the_size_asked() {
        for format in [LogFormat::Text, LogFormat::Json, LogFormat::Logfmt] {
            for size in [0, 100, 150, 1000] {
                let shape = Shape { log_format: format, log_body_size: size, ..Shape::default() };
                let mut rng = Rng::derive(3, 0);
                for _ in 0..50 {
                    let l = line(&shape, &mut rng);
                    assert!(l.body.len() >= size, "{format:?} {size}: {} bytes", l.body.len());
                    // Padded bodies have the size (a few bytes more when the padding's own
                    // syntax does not fit); longer ones are left alone.
                    assert!(
                        !l.body.contains("detail") || l.body.len() <= size + 13,
                        "{format:?} {size}: {} bytes",
                        l.body.len()
                    );
                    match format {
                        LogFormat::Json => {
                            let v: serde_json::Value = serde_json::from_str(&l.body).expect("a JSON object");
                            assert!(v["msg"].is_string() && v["level"].is_string());
                        }
                        LogFormat::Logfmt => {
                            assert!(l.body.starts_with("level="), "{}", l.body);
                            assert!(l.body.contains(" msg=\""), "{}", l.body);
                        }
                        LogFormat::Text => assert!(!l.body.starts_with('{') && !l.body.starts_with("level=")),
                    }
                }
            }
        }
    }

    #[test]
    fn loki_pushes_repeat_by_seed_and_keep_streams_in_time_order() {
        let shape = Shape { services: 3, ..Shape::default() };
        let now = 1_800_000_000_000_000_000;
        let (a, ra) = loki_push(&shape, 300, 5, 9, now);
        let (b, _) = loki_push(&shape, 300, 5, 9, now);
        let (c, _) = loki_push(&shape, 300, 6, 9, now);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.streams.iter().map(|s| s.entries.len()).sum::<usize>(), 300);
        assert_eq!(ra.iter().map(|r| r.count).sum::<u64>(), 300);
        let services: std::collections::BTreeSet<_> =
            a.streams.iter().map(|s| s.labels.split(',').next().unwrap().to_string()).collect();
        assert_eq!(services.len(), 3);
        for s in &a.streams {
            let ts: Vec<_> = s
                .entries
                .iter()
                .map(|e| e.timestamp.clone().unwrap())
                .map(|t| (t.seconds, t.nanos))
                .collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "entries of a stream in time order");
        }
        let json: serde_json::Value = serde_json::from_slice(&loki_json(&a)).unwrap();
        let first = &json["streams"][0];
        assert_eq!(first["stream"]["namespace"], "shop");
        assert!(first["values"][0][0].is_string(), "timestamps are strings of nanoseconds");
    }
}

//! OTLP logs read straight off the protobuf bytes: the same streams and entries as decoding an
//! `ExportLogsServiceRequest` with prost and mapping it (`decode::otlp`, which the tests use as
//! the oracle), without allocating a string per attribute first. Field numbers are those of
//! `opentelemetry/proto/logs/v1/logs.proto` and `common/v1/common.proto`; unknown fields are
//! skipped; of a repeated singular field the last wins, as in a decode. Values other than
//! strings (rare in logs) are decoded with prost and printed as the mapping prints them.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use pharos_core::wire::{self, Value as Val};
use prost::Message;

use crate::decode::{DecodeError, DecodedStream, StreamMapping, any_value_text, sanitize_label_name};
use crate::model::Labels;
use crate::store::block::{
    StoredEntry, encode_bytes_pair, encode_hex_pair, encode_label_pair, encode_pair, is_dedicated_pair,
};

fn malformed(what: &'static str) -> DecodeError {
    DecodeError::Malformed(what)
}

/// The fields of a message, in order ([`pharos_core::wire::fields`]).
fn fields(buf: &[u8]) -> impl Iterator<Item = Result<(u32, Val<'_>), DecodeError>> {
    wire::fields(buf).map(|field| field.map_err(|e| malformed(e.what)))
}

fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| malformed("a string is not UTF-8"))
}

/// The bytes of a string, checked to be UTF-8 ([`wire::is_utf8`]).
fn utf8(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if wire::is_utf8(bytes) { Ok(bytes) } else { Err(malformed("a string is not UTF-8")) }
}

/// An `AnyValue`'s text as UTF-8 bytes: a string as it is (borrowed), anything else as the
/// mapping prints it.
fn value_bytes(value: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    use std::borrow::Cow;
    let mut last = None;
    for field in fields(value) {
        let (number, val) = field?;
        if (1..=8).contains(&number) {
            last = Some((number, val));
        }
    }
    match last {
        Some((1, Val::Bytes(s))) => Ok(Cow::Borrowed(utf8(s)?)),
        None => Ok(Cow::Borrowed(b"")),
        // Booleans and integers printed as the mapping prints them, without decoding first.
        Some((2, Val::Varint(b))) => Ok(Cow::Borrowed(if b != 0 { b"true" } else { b"false" })),
        Some((3, Val::Varint(n))) => Ok(Cow::Owned((n as i64).to_string().into_bytes())),
        Some(_) => Ok(Cow::Owned(any_value_text(&AnyValue::decode(value)?).into_bytes())),
    }
}

/// An `AnyValue`'s text: a string as it is (borrowed), anything else as the mapping prints it.
fn value_text(value: &[u8]) -> Result<std::borrow::Cow<'_, str>, DecodeError> {
    use std::borrow::Cow;
    Ok(match value_bytes(value)? {
        Cow::Borrowed(bytes) => Cow::Borrowed(text(bytes)?),
        Cow::Owned(bytes) => {
            Cow::Owned(String::from_utf8(bytes).map_err(|_| malformed("a string is not UTF-8"))?)
        }
    })
}

/// A `KeyValue`'s key (checked to be UTF-8) and value bytes.
fn key_value(kv: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (mut key, mut value) = (&[][..], &[][..]);
    for field in fields(kv) {
        match field? {
            (1, Val::Bytes(k)) => key = utf8(k)?,
            (2, Val::Bytes(v)) => value = v,
            _ => {}
        }
    }
    Ok((key, value))
}

fn push_attribute(kv: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    // Most attributes: a short string, read in one go.
    if let Some((key, value)) = wire::string_key_value(kv) {
        let (key, value) = (utf8(key)?, utf8(value)?);
        if !value.is_empty() {
            encode_label_pair(key, value, out);
        }
        return Ok(());
    }
    let (key, value) = key_value(kv)?;
    let value = value_bytes(value)?;
    if !value.is_empty() {
        encode_label_pair(key, &value, out);
    }
    Ok(())
}

/// The streams of an encoded `ExportLogsServiceRequest`.
pub(crate) fn otlp_logs(buf: &[u8], mapping: &StreamMapping) -> Result<Vec<DecodedStream>, DecodeError> {
    let mut streams: Vec<DecodedStream> = Vec::new();
    let mut index: HashMap<Arc<Labels>, usize> = HashMap::new();
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    let mut attributes: Vec<&[u8]> = Vec::with_capacity(32);
    for field in fields(buf) {
        let (1, Val::Bytes(resource_logs)) = field? else { continue };
        // The resource first (it may come after the scopes on the wire).
        let mut labels = Vec::new();
        let mut resource_metadata = Vec::new();
        for field in fields(resource_logs) {
            let (1, Val::Bytes(resource)) = field? else { continue };
            for field in fields(resource) {
                let (1, Val::Bytes(kv)) = field? else { continue };
                let (key, value) = key_value(kv)?;
                if mapping.resource_labels.iter().any(|l| l.as_bytes() == key) {
                    let value = value_text(value)?;
                    if !value.is_empty() {
                        labels.push((sanitize_label_name(text(key)?).into_owned(), value.into_owned()));
                    }
                } else {
                    let value = value_bytes(value)?;
                    if !value.is_empty() {
                        encode_label_pair(key, &value, &mut resource_metadata);
                    }
                }
            }
        }
        if labels.is_empty() {
            labels.push(("service_name".to_string(), "unknown_service".to_string()));
        }
        let labels = Arc::new(Labels::new(labels));
        let at = *index.entry(labels.clone()).or_insert_with(|| {
            streams.push(DecodedStream { labels, entries: Vec::new() });
            streams.len() - 1
        });
        for field in fields(resource_logs) {
            let (2, Val::Bytes(scope_logs)) = field? else { continue };
            let mut scope_metadata = resource_metadata.clone();
            let (mut name, mut scope_attributes) = (&[][..], Vec::new());
            for field in fields(scope_logs) {
                let (1, Val::Bytes(scope)) = field? else { continue };
                for field in fields(scope) {
                    match field? {
                        (1, Val::Bytes(n)) => name = utf8(n)?,
                        (3, Val::Bytes(kv)) => scope_attributes.push(kv),
                        _ => {}
                    }
                }
            }
            if !name.is_empty() {
                encode_bytes_pair(b"scope_name", name, &mut scope_metadata);
            }
            for kv in scope_attributes {
                push_attribute(kv, &mut scope_metadata)?;
            }
            // Shared by the scope's records, not copied into each.
            let shared: Option<Arc<[u8]>> = (!scope_metadata.is_empty()).then(|| scope_metadata.into());
            for field in fields(scope_logs) {
                let (2, Val::Bytes(record)) = field? else { continue };
                let (mut time, mut observed, mut severity_number) = (0u64, 0u64, 0i32);
                let (mut severity_text, mut body, mut trace_id, mut span_id) =
                    (&[][..], None, &[][..], &[][..]);
                attributes.clear();
                for field in fields(record) {
                    match field? {
                        (1, Val::Fixed64(t)) => time = t,
                        (11, Val::Fixed64(t)) => observed = t,
                        (2, Val::Varint(n)) => severity_number = n as i32,
                        (3, Val::Bytes(s)) => severity_text = utf8(s)?,
                        (5, Val::Bytes(b)) => body = Some(b),
                        (6, Val::Bytes(kv)) => attributes.push(kv),
                        (9, Val::Bytes(b)) => trace_id = b,
                        (10, Val::Bytes(b)) => span_id = b,
                        _ => {}
                    }
                }
                // The pairs of dedicated names first (the block writer then reads no other
                // pair of the entry; see `StoredEntry::dedicated_prefix`).
                scratch.clear();
                if !severity_text.is_empty() {
                    encode_bytes_pair(b"severity_text", severity_text, &mut scratch);
                }
                if !trace_id.is_empty() {
                    encode_hex_pair("trace_id", trace_id, &mut scratch);
                }
                let prefix = u32::try_from(scratch.len()).ok();
                let mut clean = true;
                for kv in &attributes {
                    let start = scratch.len();
                    push_attribute(kv, &mut scratch)?;
                    clean &= !is_dedicated_pair(&scratch[start..]);
                }
                if severity_number != 0 {
                    encode_pair("severity_number", &severity_number.to_string(), &mut scratch);
                }
                if !span_id.is_empty() {
                    encode_hex_pair("span_id", span_id, &mut scratch);
                }
                let time = if time != 0 { time } else { observed };
                let line = match body {
                    Some(b) => value_text(b)?.into_owned(),
                    None => String::new(),
                };
                streams[at].entries.push(StoredEntry {
                    timestamp: i64::try_from(time).unwrap_or(i64::MAX),
                    line: line.into_boxed_str(),
                    shared: shared.clone(),
                    metadata: Box::from(scratch.as_slice()),
                    dedicated_prefix: prefix.filter(|_| clean),
                });
            }
        }
    }
    streams.retain(|s| !s.entries.is_empty());
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::logs::v1::ExportLogsServiceRequest,
        common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value},
        logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
        resource::v1::Resource,
    };
    use prost::Message;

    use super::*;
    use crate::decode::otlp;

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn value(rng: &mut Rng, depth: u32) -> Option<AnyValue> {
        let v = match rng.below(if depth > 1 { 6 } else { 9 }) {
            0 => return None,
            1 => Value::StringValue(String::new()),
            2 => Value::IntValue(match rng.below(10) {
                0 => [i64::MIN, i64::MAX, -1, 0][rng.below(4) as usize],
                _ => rng.below(1000) as i64 - 500,
            }),
            3 => Value::DoubleValue(rng.below(1000) as f64 / 7.0),
            4 => Value::BoolValue(rng.below(2) == 0),
            5 => Value::BytesValue(vec![rng.below(256) as u8; 3]),
            6 => Value::ArrayValue(ArrayValue {
                values: (0..2).filter_map(|_| value(rng, depth + 1)).collect(),
            }),
            7 => Value::KvlistValue(KeyValueList { values: vec![kv(rng, "inner", depth + 1)] }),
            _ => Value::StringValue(format!("v{} é\"\\n", rng.below(50))),
        };
        Some(AnyValue { value: Some(v) })
    }

    fn kv(rng: &mut Rng, key: &str, depth: u32) -> KeyValue {
        KeyValue { key: key.into(), value: value(rng, depth), ..Default::default() }
    }

    fn request(rng: &mut Rng) -> ExportLogsServiceRequest {
        let keys = ["service.name", "k8s.pod.name", "host.name", "9lives", "a-b", "service.name", ""];
        ExportLogsServiceRequest {
            resource_logs: (0..rng.below(4))
                .map(|_| ResourceLogs {
                    resource: (rng.below(4) != 0).then(|| Resource {
                        attributes: (0..rng.below(5))
                            .map(|_| {
                                let key = keys[rng.below(7) as usize];
                                kv(rng, key, 0)
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    scope_logs: (0..rng.below(3))
                        .map(|_| ScopeLogs {
                            scope: (rng.below(2) == 0).then(|| InstrumentationScope {
                                name: if rng.below(2) == 0 { "lib".into() } else { String::new() },
                                attributes: vec![kv(rng, "scope.attr", 0)],
                                ..Default::default()
                            }),
                            log_records: (0..rng.below(5))
                                .map(|_| LogRecord {
                                    time_unix_nano: rng.below(3) * 1_000,
                                    observed_time_unix_nano: rng.below(3) * 7,
                                    severity_number: rng.below(25) as i32,
                                    severity_text: if rng.below(2) == 0 {
                                        "WARN".into()
                                    } else {
                                        String::new()
                                    },
                                    body: value(rng, 0),
                                    attributes: (0..rng.below(4))
                                        .map(|_| {
                                            // Now and then a dedicated name as an attribute.
                                            let key = match rng.below(20) {
                                                0 => "trace_id",
                                                1 => "severity.text",
                                                _ => keys[rng.below(7) as usize],
                                            };
                                            kv(rng, key, 0)
                                        })
                                        .collect(),
                                    trace_id: if rng.below(2) == 0 { vec![0xab; 16] } else { Vec::new() },
                                    span_id: if rng.below(2) == 0 { vec![0x01; 8] } else { Vec::new() },
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn the_wire_reader_gives_what_decoding_with_prost_gives() {
        let mapping = StreamMapping::default();
        let mut rng = Rng(7);
        let mut entries = 0;
        let mut hints = [0; 2];
        for _ in 0..2000 {
            let request = request(&mut rng);
            let bytes = request.encode_to_vec();
            let want = otlp(request, &mapping);
            entries += want.iter().map(|s| s.entries.len()).sum::<usize>();
            let got = otlp_logs(&bytes, &mapping).unwrap();
            assert_eq!(got, want);
            // The hint for the block writer: the same as the mapping's, found by reading every
            // pair (`dedicated_prefix`).
            for (got, want) in got.iter().flat_map(|s| &s.entries).zip(want.iter().flat_map(|s| &s.entries)) {
                assert_eq!(got.dedicated_prefix, want.dedicated_prefix, "{got:?}");
                hints[usize::from(got.dedicated_prefix.is_some())] += 1;
            }
        }
        assert!(entries > 1000, "the generator makes entries: {entries}");
        assert!(hints[0] > 50 && hints[1] > 500, "entries with and without the hint: {hints:?}");
    }

    #[test]
    fn the_official_otlp_logs_example_reads_as_prost_reads_it() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/conformance/otlp/logs.json");
        let request: ExportLogsServiceRequest =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let bytes = request.encode_to_vec();
        let mapping = StreamMapping::default();
        let want = otlp(request, &mapping);
        assert!(!want.is_empty());
        assert_eq!(otlp_logs(&bytes, &mapping).unwrap(), want);
    }

    #[test]
    fn strings_that_are_not_utf8_are_refused_as_prost_refuses_them() {
        let kv = crate::decode::string_attribute;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", "RRRR"), kv("MMMM", "NNNN")],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope { name: "SSSS".into(), ..Default::default() }),
                    log_records: vec![LogRecord {
                        severity_text: "TTTT".into(),
                        body: Some(AnyValue { value: Some(Value::StringValue("BBBB".into())) }),
                        attributes: vec![kv("KKKK", "VVVV")],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let bytes = request.encode_to_vec();
        assert!(otlp_logs(&bytes, &StreamMapping::default()).is_ok());
        for marker in ["RRRR", "MMMM", "NNNN", "SSSS", "TTTT", "BBBB", "KKKK", "VVVV"] {
            let at = bytes.windows(4).position(|w| w == marker.as_bytes()).unwrap();
            let mut bad = bytes.clone();
            bad[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
            assert!(ExportLogsServiceRequest::decode(&bad[..]).is_err(), "{marker}");
            assert!(otlp_logs(&bad, &StreamMapping::default()).is_err(), "{marker}");
        }
    }

    #[test]
    fn truncated_and_garbled_requests_are_errors_not_panics() {
        let mut rng = Rng(11);
        let bytes = loop {
            let b = request(&mut rng).encode_to_vec();
            if b.len() > 40 {
                break b;
            }
        };
        for cut in 1..bytes.len() {
            let _ = otlp_logs(&bytes[..cut], &StreamMapping::default());
        }
        assert!(otlp_logs(&[0x0a, 0x05, 0x01], &StreamMapping::default()).is_err());
        assert!(otlp_logs(&[0x0b], &StreamMapping::default()).is_err(), "wire type 3");
    }
}

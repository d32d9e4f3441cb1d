use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span},
};
use pharos_core::{Envelope, PayloadFormat, Signal, Tenant};
use pharos_storage::ObjectStorage;
use prost::Message;

use super::*;
use crate::model::{hex, spans_of_request};

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..KeyValue::default() }
}

/// A small deterministic generator (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `traces` traces of `spans_per_trace` spans each, over three services, with attributes,
/// events, links and errors.
fn request(seed: u64, traces: usize, spans_per_trace: usize) -> ExportTraceServiceRequest {
    let mut rng = Rng(seed | 1);
    let mut resource_spans = Vec::new();
    for service in ["api", "db", "cache"] {
        let mut spans = Vec::new();
        for t in 0..traces {
            let mut trace_id = [0u8; 16];
            trace_id[..8]
                .copy_from_slice(&(seed ^ t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            trace_id[8..].copy_from_slice(&(t as u64).to_be_bytes());
            for s in 0..spans_per_trace {
                let start = 1_700_000_000_000_000_000 + rng.next() % 1_000_000_000;
                let mut span_id = [0u8; 8];
                span_id[0] = service.len() as u8;
                span_id[1..5].copy_from_slice(&(t as u32).to_be_bytes());
                span_id[5..7].copy_from_slice(&(s as u16).to_be_bytes());
                span_id[7] = 1;
                spans.push(Span {
                    trace_id: trace_id.to_vec(),
                    span_id: span_id.to_vec(),
                    parent_span_id: if s == 0 { Vec::new() } else { vec![9; 8] },
                    name: format!("{service} op {}", rng.next() % 5),
                    kind: (rng.next() % 6) as i32,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + rng.next() % 5_000_000,
                    trace_state: if s % 3 == 0 { "k=v".into() } else { String::new() },
                    flags: 0x101,
                    attributes: vec![
                        kv("http.route", Value::StringValue(format!("/r/{}", rng.next() % 10))),
                        kv("user.id", Value::IntValue((rng.next() % 100_000) as i64)),
                        kv("ratio", Value::DoubleValue(0.5)),
                    ],
                    dropped_attributes_count: u32::from(s == 1),
                    events: if s % 2 == 0 {
                        vec![span::Event {
                            time_unix_nano: start + 5,
                            name: "exception".into(),
                            attributes: vec![kv("exception.type", Value::StringValue("E".into()))],
                            dropped_attributes_count: 0,
                        }]
                    } else {
                        Vec::new()
                    },
                    links: if s == 2 {
                        vec![span::Link {
                            trace_id: vec![7; 16],
                            span_id: vec![8; 8],
                            ..span::Link::default()
                        }]
                    } else {
                        Vec::new()
                    },
                    status: match rng.next() % 3 {
                        0 => None,
                        1 => Some(Status { code: 2, message: "boom".into() }),
                        _ => Some(Status { code: 1, message: String::new() }),
                    },
                    ..Span::default()
                });
            }
        }
        resource_spans.push(ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            }],
            schema_url: String::new(),
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

fn sorted(mut spans: Vec<SpanData>) -> Vec<SpanData> {
    spans.sort_by_key(|s| (s.trace_id(), s.span_id()));
    spans
}

#[test]
fn blocks_give_back_every_span_exactly() {
    let spans = spans_of_request(request(7, 50, 4));
    let arcs: Vec<Arc<SpanData>> = spans.iter().cloned().map(Arc::new).collect();
    let (bytes, meta) = block::encode("b".into(), 0, &arcs).unwrap();
    assert_eq!(meta.spans, 600);
    assert_eq!(meta.traces, 50);
    assert_eq!(meta.size_bytes, bytes.len() as u64);
    let (back, _) = block::decode(bytes, Select::All).unwrap();
    assert_eq!(sorted(back), sorted(spans));
}

#[test]
fn trace_lookups_skip_row_groups() {
    let spans = spans_of_request(request(11, 20_000, 2));
    let wanted = spans[12_345].trace_id();
    let expected: Vec<SpanData> = sorted(spans.iter().filter(|s| s.trace_id() == wanted).cloned().collect());
    let arcs: Vec<Arc<SpanData>> = spans.into_iter().map(Arc::new).collect();
    let (bytes, meta) = block::encode("b".into(), 0, &arcs).unwrap();
    assert!(meta.may_hold(&wanted));
    let (found, stats) = block::decode(bytes.clone(), Select::Trace(wanted)).unwrap();
    assert_eq!(sorted(found), expected);
    assert_eq!(stats.row_groups, 8);
    assert!(stats.pruned_by_range >= 6, "{stats:?}");

    // An id inside the block's range but absent: the bloom filter answers (1% false positives).
    let mut missing = wanted;
    missing[15] ^= 0x55;
    let (found, stats) = block::decode(bytes, Select::Trace(missing)).unwrap();
    assert!(found.is_empty());
    assert_eq!(stats.pruned_by_range + stats.pruned_by_bloom, stats.row_groups, "{stats:?}");
}

fn envelope(tenant: &Tenant, request: &ExportTraceServiceRequest) -> Envelope {
    Envelope {
        tenant: tenant.clone(),
        signal: Signal::Traces,
        format: PayloadFormat::Otlp,
        received_at_unix_nanos: 0,
        items: 1,
        metadata: Vec::new(),
        payload: Bytes::from(request.encode_to_vec()),
    }
}

async fn open(dir: &std::path::Path, options: StoreOptions) -> Arc<TraceStore> {
    TraceStore::open(ObjectStorage::local(dir).unwrap(), options).await.unwrap()
}

#[tokio::test]
async fn spans_are_found_in_the_head_then_in_blocks_then_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        deletion_delay: Duration::ZERO,
        retention: Duration::from_secs(100 * 365 * 24 * 3600), // the spans are from 2023
        ..StoreOptions::default()
    };
    let store = open(dir.path(), options.clone()).await;
    let acme = Tenant::parse("acme").unwrap();
    let other = Tenant::parse("other").unwrap();
    let req = request(3, 10, 3);
    let spans = spans_of_request(req.clone());
    let id = spans[4].trace_id();
    let expected: Vec<SpanData> = sorted(spans.iter().filter(|s| s.trace_id() == id).cloned().collect());

    let mut writer = PartitionWriter::new(store.clone(), 0);
    assert_eq!(writer.write(10, &envelope(&acme, &req)).spans, 90);
    assert_eq!(writer.durable_below(11), 10, "nothing durable before the flush");
    assert!(writer.flush_due(true) && !writer.flush_due(false));
    assert_eq!(sorted(store.trace(&acme, id, None).await.unwrap().spans), expected);
    assert!(store.trace(&other, id, None).await.unwrap().spans.is_empty(), "tenants are apart");

    let report = writer.flush().await.unwrap();
    assert_eq!((report.blocks, report.spans), (1, 90));
    assert_eq!(writer.durable_below(11), 11);
    assert!(store.head_spans().is_empty());
    let read = store.trace(&acme, id, None).await.unwrap();
    assert_eq!(read.blocks_read, 1);
    assert_eq!(sorted(read.spans), expected);

    // The same records again (a replay after a crash before the commit): no duplicates.
    writer.write(10, &envelope(&acme, &req));
    assert_eq!(sorted(store.trace(&acme, id, None).await.unwrap().spans), expected);
    writer.flush().await.unwrap();
    assert_eq!(store.blocks(&acme).len(), 2);
    assert_eq!(store.traces_in_range(&acme, 0, u64::MAX).await.unwrap().len(), 10);

    drop(writer);
    drop(store);
    let store = open(dir.path(), options).await;
    assert_eq!(sorted(store.trace(&acme, id, None).await.unwrap().spans), expected);
    let not_in_range = store.trace(&acme, id, Some((0, 1))).await.unwrap();
    assert!(not_in_range.spans.is_empty() && not_in_range.blocks_read == 0);

    // Compaction merges the two blocks and drops the duplicates.
    let report = store.compact(8).await.unwrap();
    assert_eq!((report.merged, report.written), (2, 1));
    let blocks = store.blocks(&acme);
    assert_eq!(blocks.len(), 1);
    assert_eq!((blocks[0].spans, blocks[0].level), (90, 1));
    assert_eq!(sorted(store.trace(&acme, id, None).await.unwrap().spans), expected);
    assert_eq!(hex(&id).len(), 32);
}

#[tokio::test]
async fn retention_deletes_old_blocks_and_big_traces_are_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        retention: Duration::from_secs(3600),
        max_trace_spans: 5,
        deletion_delay: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = open(dir.path(), options).await;
    let tenant = Tenant::default_tenant();
    let req = request(5, 2, 20); // spans from 2023: far past the retention
    let id = spans_of_request(req.clone())[0].trace_id();
    let mut writer = PartitionWriter::new(store.clone(), 1);
    writer.write(0, &envelope(&tenant, &req));
    let read = store.trace(&tenant, id, None).await.unwrap();
    assert_eq!(read.spans.len(), 5);
    assert!(read.truncated);
    writer.flush().await.unwrap();
    assert_eq!(store.blocks(&tenant).len(), 1);
    let report = store.compact(8).await.unwrap();
    assert_eq!(report.expired, 1);
    assert!(store.blocks(&tenant).is_empty());
    assert!(store.trace(&tenant, id, None).await.unwrap().spans.is_empty());
}

#[tokio::test]
async fn searches_refuse_to_read_too_much() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions { max_search_spans: 100, ..StoreOptions::default() }).await;
    let tenant = Tenant::default_tenant();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write(0, &envelope(&tenant, &request(9, 10, 2)));
    assert_eq!(store.traces_in_range(&tenant, 0, u64::MAX).await.unwrap().len(), 10);
    writer.flush().await.unwrap();
    writer.write(1, &envelope(&tenant, &request(10, 10, 2)));
    let error = store.traces_in_range(&tenant, 0, u64::MAX).await.unwrap_err();
    assert!(error.to_string().contains("more than 100 spans"), "{error}");
}

#[tokio::test]
async fn a_merge_holds_at_most_compaction_max_spans() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        compaction_max_spans: 200,
        retention: Duration::from_secs(100 * 365 * 24 * 3600),
        deletion_delay: Duration::ZERO,
        ..StoreOptions::default()
    };
    let store = open(dir.path(), options).await;
    let tenant = Tenant::default_tenant();
    let mut writer = PartitionWriter::new(store.clone(), 0);
    for seed in [21, 22, 23] {
        writer.write(seed, &envelope(&tenant, &request(seed, 10, 3)));
        writer.flush().await.unwrap();
    }
    assert_eq!(store.blocks(&tenant).iter().map(|b| b.spans).collect::<Vec<_>>(), [90, 90, 90]);
    let report = store.compact(8).await.unwrap();
    assert_eq!((report.merged, report.written), (2, 1));
    let mut sizes: Vec<u64> = store.blocks(&tenant).iter().map(|b| b.spans).collect();
    sizes.sort();
    assert_eq!(sizes, [90, 180]);
    // 90 + 180 is over the cap, and the 180-span block is too big to pair with anything.
    assert_eq!(store.compact(8).await.unwrap(), CompactionReport::default());
}

#[test]
fn light_reads_answer_light_queries_like_full_reads() {
    use crate::query::{Evaluator, parse};
    let spans = spans_of_request(request(31, 40, 5));
    let arcs: Vec<Arc<SpanData>> = spans.iter().cloned().map(Arc::new).collect();
    let (bytes, _) = block::encode("b".into(), 0, &arcs).unwrap();
    let (full, _) = block::decode(bytes.clone(), Select::All).unwrap();
    let (light, _) = block::decode(bytes, Select::Light).unwrap();
    assert_eq!(full.len(), light.len());
    let group = |spans: Vec<SpanData>| {
        let mut traces: std::collections::BTreeMap<TraceId, Vec<SpanData>> = Default::default();
        for s in spans {
            traces.entry(s.trace_id()).or_default().push(s);
        }
        traces
    };
    let (full, light) = (group(full), group(light));
    let queries = [
        r#"{ resource.service.name = "db" && status = error }"#,
        "{ duration > 2ms } >> { kind = client }",
        r#"{ name =~ "api.*" } | count() > 1"#,
        "{ rootServiceName = \"api\" && traceDuration > 1ms } | by(resource.service.name)",
        "{ span:parentID != nil && span:childCount = 0 }",
        "{ status = unset } ~ { status = ok }",
    ];
    let mut matched = 0;
    for text in queries {
        let query = parse(text).unwrap();
        assert!(is_light(&query), "{text}");
        let evaluator = Evaluator::new(&query).unwrap();
        for (id, spans) in &full {
            let a = evaluator.evaluate(spans);
            let b = evaluator.evaluate(&light[id]);
            let ids = |sets: &[crate::query::Spanset], spans: &[SpanData]| -> Vec<(Vec<SpanId>, usize)> {
                sets.iter()
                    .map(|s| (s.spans.iter().map(|m| spans[m.index].span_id()).collect(), s.matched))
                    .collect()
            };
            assert_eq!(ids(&a, spans), ids(&b, &light[id]), "{text}");
            matched += a.len();
        }
    }
    assert!(matched > 0);
    for text in [
        "{ span.http.route = \"/r/1\" }",
        "{ .service.name = \"db\" }",
        "{ statusMessage = \"boom\" }",
        "{ event:name = \"exception\" }",
    ] {
        assert!(!is_light(&parse(text).unwrap()), "{text}");
    }
}

/// Spans of `request(41, 30, 6)` made more varied for the prefilter: dedicated attributes
/// with their type, with another type and as arrays, a resource without `service.name`, a
/// resource attribute that an unscoped field falls back to.
fn varied_request() -> ExportTraceServiceRequest {
    let mut req = request(41, 30, 6);
    for (r, rs) in req.resource_spans.iter_mut().enumerate() {
        let resource = rs.resource.get_or_insert_with(Resource::default);
        match r {
            1 => resource.attributes.push(kv("http.method", Value::StringValue("PATCH".into()))),
            2 => resource.attributes.clear(),
            _ => {}
        }
        for (i, span) in rs.scope_spans.iter_mut().flat_map(|s| s.spans.iter_mut()).enumerate() {
            let code = if i % 5 == 0 { 500 } else { 200 };
            match i % 4 {
                0 => span.attributes.push(kv("http.response.status_code", Value::IntValue(code))),
                1 => span
                    .attributes
                    .push(kv("http.method", Value::StringValue(["GET", "POST"][(i / 4) % 2].into()))),
                _ => {}
            }
            if r == 0 && i == 7 {
                // Another type and an array: these columns are inexact in the block holding it.
                span.attributes.push(kv("http.status_code", Value::StringValue("500".into())));
                span.attributes.push(kv(
                    "http.method",
                    Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![AnyValue { value: Some(Value::StringValue("PUT".into())) }],
                    }),
                ));
            }
            if i % 3 == 0 {
                span.attributes.push(kv("tenant.tier", Value::StringValue(["gold", "free"][i % 2].into())));
            }
        }
    }
    req
}

/// Only the spans whose position in `req` is `k` modulo `parts`.
fn part(req: &ExportTraceServiceRequest, parts: usize, k: usize) -> ExportTraceServiceRequest {
    let mut out = req.clone();
    let mut position = 0;
    for rs in &mut out.resource_spans {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|_| {
                position += 1;
                (position - 1) % parts == k
            });
        }
    }
    out
}

#[tokio::test]
async fn prefiltered_searches_find_what_full_searches_find() {
    use crate::query::{Evaluator, parse};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), StoreOptions::default()).await;
    let tenant = Tenant::default_tenant();
    let req = varied_request();
    // Every trace has spans in two blocks and in the head.
    let mut writer = PartitionWriter::new(store.clone(), 0);
    for k in 0..3 {
        writer.write(k as u64, &envelope(&tenant, &part(&req, 3, k)));
        if k < 2 {
            writer.flush().await.unwrap();
        }
    }
    let blocks = store.blocks(&tenant);
    assert_eq!(blocks.len(), 2);
    assert!(
        blocks.iter().any(|b| b.inexact.contains(&"http.method".to_string())
            && b.inexact.contains(&"http.status_code".to_string())),
        "{blocks:?}"
    );
    let everything = store.traces_in_range(&tenant, 0, u64::MAX).await.unwrap();
    let total_spans: usize = everything.iter().map(Vec::len).sum();
    assert_eq!(everything.len(), 30);
    let queries = [
        "{ }",
        r#"{ name = "api op 1" }"#,
        r#"{ name = "nothing has this name" }"#,
        r#"{ name =~ "db op [12]" && duration > 2ms }"#,
        r#"{ name != "api op 1" && kind = server }"#,
        "{ status = error }",
        "{ status != error && kind != internal }",
        "{ duration < 1ms || status = ok }",
        "{ span.http.response.status_code = 500 }",
        "{ span.http.response.status_code >= 500 && status = error }",
        "{ span.http.response.status_code = nil }",
        "{ span.http.response.status_code != nil && span.http.route = \"/r/3\" }",
        r#"{ span.http.method = "GET" }"#,
        r#"{ span.http.method = "PUT" }"#,
        r#"{ span.http.method =~ "P.*" }"#,
        r#"{ .http.method = "PATCH" }"#,
        r#"{ .http.method = nil }"#,
        r#"{ span.http.status_code = "500" }"#,
        r#"{ span.tenant.tier = "gold" }"#,
        r#"{ .tenant.tier != "gold" }"#,
        r#"{ span.tenant.tier = nil && status = error }"#,
        r#"{ resource.service.name = "db" }"#,
        r#"{ resource.service.name = "cache" }"#,
        r#"{ resource.service.name != "api" }"#,
        r#"{ resource.service.name = nil }"#,
        r#"{ event.exception.type = "E" }"#,
        r#"{ event:name = "exception" && status = error }"#,
        r#"{ statusMessage = "boom" }"#,
        r#"{ instrumentation.name = "lib" }"#,
        r#"{ span.user.id > 50000 }"#,
        r#"{ !(status = error) }"#,
        r#"{ "api op 2" = name }"#,
        "{ 2ms < duration }",
        r#"{ rootServiceName = "api" }"#,
        r#"{ status = error } && { span.http.response.status_code = 500 }"#,
        r#"{ status = error } || { name = "db op 3" }"#,
        r#"{ resource.service.name = "api" } >> { status = error }"#,
        r#"{ resource.service.name = "api" } !> { span.http.method = "GET" }"#,
        r#"{ status = ok } ~ { span.tenant.tier = "free" }"#,
        r#"{ kind = client } &>> { kind = server }"#,
        r#"{ status = error } | count() > 1"#,
        r#"({ status = error } | count() > 1) && { name = "api op 0" }"#,
        r#"{ span.http.method = "POST" } | by(resource.service.name) | select(span.http.route)"#,
        "{ false }",
    ];
    let mut pruned = 0;
    for text in queries {
        let query = parse(text).unwrap();
        let evaluator = Evaluator::new(&query).unwrap();
        let matches = |traces: &[Vec<SpanData>]| -> std::collections::BTreeMap<TraceId, Vec<Vec<SpanId>>> {
            traces
                .iter()
                .filter_map(|spans| {
                    let sets = evaluator.evaluate(spans);
                    (!sets.is_empty()).then(|| {
                        let ids =
                            sets.iter().map(|s| s.spans.iter().map(|m| spans[m.index].span_id()).collect());
                        (spans[0].trace_id(), ids.collect())
                    })
                })
                .collect()
        };
        let expected = matches(&everything);
        let prefilter = crate::query::Prefilter::new(&query).unwrap().map(Arc::new);
        let read = store.search_traces(&tenant, 0, u64::MAX, prefilter, is_light(&query)).await.unwrap();
        assert_eq!(read.inspected_spans, total_spans, "{text}");
        assert_eq!(matches(&read.traces), expected, "{text}: prefiltered search differs from the full one");
        println!(
            "{text}: {} matched, {} read whole of {}",
            expected.len(),
            read.traces.len(),
            everything.len()
        );
        if read.traces.len() < everything.len() {
            pruned += 1;
        }
    }
    assert!(pruned >= 12, "the prefilter pruned only {pruned} queries");
}

#[test]
fn a_streaming_merge_gives_the_block_that_encoding_the_spans_gives() {
    // Three blocks: two parts of the same traces and a replay of the first part.
    let req = varied_request();
    let encode = |req: &ExportTraceServiceRequest, id: &str| {
        let spans: Vec<Arc<SpanData>> = spans_of_request(req.clone()).into_iter().map(Arc::new).collect();
        block::encode(id.into(), 0, &spans).unwrap()
    };
    let inputs: Vec<(Bytes, TraceBlockMeta)> =
        vec![encode(&part(&req, 2, 0), "a"), encode(&part(&req, 2, 1), "b"), encode(&part(&req, 2, 0), "c")];
    assert!(inputs.iter().any(|(_, m)| !m.inexact.is_empty()), "the data makes an inexact column");
    let (merged, meta) = block::merge(inputs, "m".into(), 1).unwrap();
    let (direct, expected) = encode(&req, "m");
    let (merged_spans, _) = block::decode(merged, Select::All).unwrap();
    let (direct_spans, _) = block::decode(direct, Select::All).unwrap();
    // The same spans in the same order: by trace id, start time, span id.
    let key = |s: &SpanData| (s.trace_id(), s.span.start_time_unix_nano, s.span_id());
    assert_eq!(
        merged_spans.iter().map(key).collect::<Vec<_>>(),
        direct_spans.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(merged_spans, direct_spans);
    let strip = |m: &TraceBlockMeta| TraceBlockMeta { size_bytes: 0, level: 0, ..m.clone() };
    assert_eq!(strip(&meta), strip(&expected));
    assert_eq!(meta.level, 1);
    // The merged block answers searches like the direct one: its dedicated columns are there.
    let query = crate::query::parse(r#"{ span.http.response.status_code = 500 }"#).unwrap();
    let prefilter = Arc::new(crate::query::Prefilter::new(&query).unwrap().unwrap());
    let (merged_again, _) =
        block::merge(vec![encode(&part(&req, 2, 0), "a"), encode(&part(&req, 2, 1), "b")], "m2".into(), 1)
            .unwrap();
    let (direct, direct_meta) = encode(&req, "d");
    assert_eq!(
        block::candidates(merged_again, None, &prefilter, meta.exact_columns()).unwrap(),
        block::candidates(direct, None, &prefilter, direct_meta.exact_columns()).unwrap()
    );
}

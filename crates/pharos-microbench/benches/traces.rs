//! Traces: Parquet block encoding and decoding, and TraceQL.
//!
//! - `traces/block`: `store::block::encode` of 10,000 spans (sort, Arrow batches, Parquet with
//!   zstd and bloom filters) and `store::block::decode` of that block.
//! - `traces/traceql_parse`: `query::parse` of a filter and of a structural query.
//! - `traces/traceql_eval`: `query::Evaluator` over the 1,250 traces (10,000 spans) in memory.
//! - `traces/traceql_search`: what the Tempo search endpoint does, without HTTP: parse, build
//!   the prefilter, `TraceStore::search_traces`, then evaluate every trace read; over the same
//!   10,000 spans in the head, then in one block on a local directory.

use std::{collections::BTreeMap, sync::Arc};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use pharos_core::Tenant;
use pharos_microbench::{MEASUREMENT_TIME, SEED, T0_NANOS, WARM_UP_TIME, trace_request};
use pharos_storage::ObjectStorage;
use pharos_traces::{
    model::{SpanData, TraceId, spans_of_request},
    query::{Evaluator, Prefilter, parse},
    store::{PartitionWriter, Select, StoreOptions, TraceStore, block, is_light},
};

const SPANS: usize = 10_000;

const QUERIES: [(&str, &str); 2] = [
    ("filter", r#"{ resource.service.name = "checkout" && span.http.response.status_code >= 500 }"#),
    (
        "structural",
        r#"{ kind = server } >> { span.db.system.name = "postgresql" && duration > 10ms } | count() > 1"#,
    ),
];

fn spans() -> Vec<SpanData> {
    spans_of_request(trace_request(SEED, SPANS))
}

/// The spans grouped by trace, as a search hands them to the evaluator.
fn traces(spans: &[SpanData]) -> Vec<Vec<SpanData>> {
    let mut by_trace: BTreeMap<TraceId, Vec<SpanData>> = BTreeMap::new();
    for span in spans {
        by_trace.entry(span.trace_id()).or_default().push(span.clone());
    }
    by_trace.into_values().collect()
}

/// Traces of `traces` that `query` matches.
fn matching(evaluator: &Evaluator, traces: &[Vec<SpanData>]) -> usize {
    traces.iter().filter(|spans| !evaluator.evaluate(spans).is_empty()).count()
}

fn block_encode_decode(c: &mut Criterion) {
    let spans: Vec<Arc<SpanData>> = spans().into_iter().map(Arc::new).collect();
    let mut group = c.benchmark_group("traces/block");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(20);
    // Iterations of several milliseconds: the same count per sample keeps a run to seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function(format!("encode_{SPANS}_spans"), |b| {
        b.iter(|| block::encode("bench".into(), 0, &spans).expect("encode"))
    });
    let (data, meta) = block::encode("bench".into(), 0, &spans).expect("encode");
    assert_eq!(meta.spans as usize, SPANS);
    eprintln!(
        "traces/block: {SPANS} spans encode to {} bytes ({:.1} B/span)",
        data.len(),
        data.len() as f64 / SPANS as f64
    );
    group.bench_function(format!("decode_{SPANS}_spans"), |b| {
        b.iter(|| {
            let (decoded, _) = block::decode(data.clone(), Select::All).expect("decode");
            assert_eq!(decoded.len(), SPANS);
            decoded
        })
    });
    group.finish();
}

fn traceql_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("traces/traceql_parse");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME);
    group.throughput(Throughput::Elements(1));
    for (name, text) in QUERIES {
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| parse(text).expect("a valid query"))
        });
    }
    group.finish();
}

fn traceql_eval(c: &mut Criterion) {
    let traces = traces(&spans());
    let mut group = c.benchmark_group("traces/traceql_eval");
    // Iterations near a millisecond: 50 samples fit in the measurement time.
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(50);
    group.throughput(Throughput::Elements(SPANS as u64));
    for (name, text) in QUERIES {
        let evaluator = Evaluator::new(&parse(text).expect("a valid query")).expect("an evaluable query");
        let found = matching(&evaluator, &traces);
        assert!(found > 0 && found < traces.len(), "{name} matched {found} of {} traces", traces.len());
        eprintln!("traces/traceql_eval/{name}: matches {found} of {} traces", traces.len());
        group.bench_function(BenchmarkId::new(format!("{SPANS}_spans"), name), |b| {
            b.iter(|| matching(&evaluator, &traces))
        });
    }
    group.finish();
}

/// The search endpoint's work for `text` over the tenant's traces, without HTTP and JSON.
async fn search(store: &TraceStore, tenant: &Tenant, text: &str) -> usize {
    let query = parse(text).expect("a valid query");
    let evaluator = Evaluator::new(&query).expect("an evaluable query");
    let prefilter = Prefilter::new(&query).expect("a prefilter").map(Arc::new);
    let read = store
        .search_traces(tenant, T0_NANOS, T0_NANOS + 3_600_000_000_000, prefilter, is_light(&query))
        .await
        .expect("search");
    matching(&evaluator, &read.traces)
}

fn traceql_search(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tenant = Tenant::default();
    let store = runtime
        .block_on(TraceStore::open(
            ObjectStorage::local(dir.path()).expect("local storage"),
            StoreOptions::default(),
        ))
        .expect("open the trace store");
    let mut writer = PartitionWriter::new(store.clone(), 0);
    writer.write_request(0, &tenant, trace_request(SEED, SPANS));
    let expected: Vec<usize> = {
        let traces = traces(&spans());
        QUERIES
            .iter()
            .map(|(_, text)| {
                matching(&Evaluator::new(&parse(text).expect("valid")).expect("evaluable"), &traces)
            })
            .collect()
    };
    let mut group = c.benchmark_group("traces/traceql_search");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(20);
    // Iterations of several milliseconds: the same count per sample keeps a run to seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(SPANS as u64));
    for place in ["head", "block"] {
        if place == "block" {
            runtime.block_on(writer.flush()).expect("flush the head into a block");
            assert_eq!(store.blocks(&tenant).len(), 1);
        }
        for ((name, text), expected) in QUERIES.iter().zip(&expected) {
            // The store must find what the evaluator finds in memory, or this measures a bug.
            assert_eq!(runtime.block_on(search(&store, &tenant, text)), *expected, "{place} {name}");
            group.bench_function(BenchmarkId::new(format!("{place}_{SPANS}_spans"), name), |b| {
                b.iter(|| runtime.block_on(search(&store, &tenant, text)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, block_encode_decode, traceql_parse, traceql_eval, traceql_search);
criterion_main!(benches);

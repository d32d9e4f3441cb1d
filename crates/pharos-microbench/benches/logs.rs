//! Logs: Parquet block encoding and LogQL.
//!
//! - `logs/block`: `store::block::encode` of 50,000 logfmt lines in 16 streams, with
//!   structured metadata (throughput in lines).
//! - `logs/process`: what a processor does with OTLP log requests between the queue and a
//!   block, without I/O: 50 requests of 1,000 records (with resource and scope attributes)
//!   decoded from their bytes (`decode::decode`), then their streams encoded as one block.
//! - `logs/logql`: `parse` plus evaluation over an in-memory `MemSource` of the same 50,000
//!   lines spread over an hour: metric queries (line filter, `logfmt`, label filter,
//!   `count_over_time`, `sum by`) as instant queries over the whole hour and as a range query
//!   (1 h, 60 s step, 5 m windows), and a log query (newest 100 matching lines).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use std::{collections::HashMap, sync::Arc};

use pharos_core::{Envelope, PayloadFormat, Signal, Tenant};
use pharos_logs::{
    decode::{StreamMapping, decode},
    model::{Labels, MemSource},
    query::{Direction, Expr, Limits, QueryValue, evaluate_instant, evaluate_range, parse, select_logs},
    store::block::{self, StoredEntry},
};
use pharos_microbench::{MEASUREMENT_TIME, SEED, T0_NANOS, WARM_UP_TIME, log_streams, logs_request};
use prost::Message;

const LINES: usize = 50_000;
const HOUR_NANOS: i64 = 3_600_000_000_000;

const INSTANT_QUERIES: [(&str, &str); 2] = [
    (
        "filter_logfmt_count",
        r#"sum by (app) (count_over_time({env="prod"} |= "status=5" | logfmt | duration > 100ms [1h]))"#,
    ),
    ("logfmt_count_by_level", r#"sum by (level) (count_over_time({env="prod"} | logfmt [1h]))"#),
];

const RANGE_QUERY: &str =
    r#"sum by (app) (count_over_time({env="prod"} |= "status=5" | logfmt | duration > 100ms [5m]))"#;

const LOG_QUERY: &str = r#"{app="api"} |= "error" | logfmt | status >= 500"#;

fn source() -> MemSource {
    let mut source = MemSource::default();
    for (labels, entries) in log_streams(SEED, LINES) {
        for entry in entries {
            source.push(&labels, entry);
        }
    }
    source.finish()
}

fn result_len(value: &QueryValue) -> usize {
    match value {
        QueryValue::Streams(s) => s.iter().map(|s| s.entries.len()).sum(),
        QueryValue::Vector(v) => v.len(),
        QueryValue::Matrix(m) => m.len(),
        QueryValue::Scalar(_) => 1,
    }
}

fn block_encode(c: &mut Criterion) {
    let streams: Vec<_> = log_streams(SEED, LINES)
        .into_iter()
        .map(|(labels, entries)| (labels, entries.iter().map(StoredEntry::from_entry).collect::<Vec<_>>()))
        .collect();
    let bytes: usize = streams.iter().flat_map(|(_, e)| e).map(|e| e.line.len()).sum();
    let encode =
        || block::encode("bench".into(), 0, streams.iter().map(|(l, e)| (l, e.as_slice()))).expect("encode");
    let (data, meta) = encode();
    assert_eq!(meta.entries as usize, LINES);
    eprintln!(
        "logs/block: {LINES} lines ({bytes} bytes of lines) encode to {} bytes ({:.1} B/line)",
        data.len(),
        data.len() as f64 / LINES as f64
    );
    let mut group = c.benchmark_group("logs/block");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(20);
    // Iterations of several milliseconds: the same count per sample keeps a run to seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function(format!("encode_{LINES}_lines"), |b| b.iter(encode));
    group.finish();
}

fn process(c: &mut Criterion) {
    const REQUESTS: usize = 50;
    const RECORDS: usize = 1_000;
    let envelopes: Vec<Envelope> = (0..REQUESTS)
        .map(|i| Envelope {
            tenant: Tenant::default(),
            signal: Signal::Logs,
            format: PayloadFormat::Otlp,
            received_at_unix_nanos: T0_NANOS,
            items: RECORDS as u32,
            metadata: Vec::new(),
            payload: logs_request(SEED + i as u64, RECORDS).encode_to_vec().into(),
        })
        .collect();
    let mapping = StreamMapping::default();
    let run = || {
        let mut streams: HashMap<Arc<Labels>, Vec<StoredEntry>> = HashMap::new();
        for envelope in &envelopes {
            for stream in decode(envelope, &mapping).expect("a valid request") {
                streams.entry(stream.labels).or_default().extend(stream.entries);
            }
        }
        for entries in streams.values_mut() {
            entries.sort_by_key(|e| e.timestamp);
        }
        block::encode("bench".into(), 0, streams.iter().map(|(l, e)| (&**l, e.as_slice()))).expect("encode")
    };
    let (_, meta) = run();
    assert_eq!(meta.entries as usize, REQUESTS * RECORDS);
    let mut group = c.benchmark_group("logs/process");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements((REQUESTS * RECORDS) as u64));
    group.bench_function(format!("decode_and_encode_{}_records", REQUESTS * RECORDS), |b| b.iter(run));
    group.finish();
}

fn logql(c: &mut Criterion) {
    let source = source();
    let limits = Limits::default();
    let (start, end) = (T0_NANOS as i64, T0_NANOS as i64 + HOUR_NANOS);
    let mut group = c.benchmark_group("logs/logql");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(20);
    // Iterations of several milliseconds: the same count per sample keeps a run to seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, text) in INSTANT_QUERIES {
        let run = || {
            let expr = parse(text).expect("a valid query");
            evaluate_instant(&expr, &source, end, &limits).expect("instant query").0
        };
        let found = result_len(&run());
        assert!(found > 1, "{name}: {found} series");
        group.bench_function(BenchmarkId::new(format!("instant_{LINES}_lines"), name), |b| b.iter(run));
    }
    let run_range = || {
        let expr = parse(RANGE_QUERY).expect("a valid query");
        evaluate_range(&expr, &source, start, end, 60_000_000_000, &limits).expect("range query").0
    };
    assert!(result_len(&run_range()) > 1, "the range query finds several apps");
    group.bench_function(
        BenchmarkId::new(format!("range_1h_step_60s_{LINES}_lines"), "filter_logfmt_count"),
        |b| b.iter(run_range),
    );
    let run_logs = || {
        let Expr::Log(query) = parse(LOG_QUERY).expect("a valid query") else {
            unreachable!("a stream selector with a pipeline is a log query")
        };
        select_logs(&query, &source, start, end, Direction::Backward, 100, &limits).expect("log query").0
    };
    let lines: usize = run_logs().iter().map(|s| s.entries.len()).sum();
    assert_eq!(lines, 100, "the log query finds at least 100 lines");
    group.bench_function(
        BenchmarkId::new(format!("log_query_{LINES}_lines"), "filter_logfmt_limit_100"),
        |b| b.iter(run_logs),
    );
    group.finish();
}

criterion_group!(benches, block_encode, process, logql);
criterion_main!(benches);

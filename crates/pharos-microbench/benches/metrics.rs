//! Metrics: chunk encoding, head appends and PromQL.
//!
//! - `metrics/chunk`: `XorChunk::append` of a full chunk (120 samples, 15 s apart with
//!   millisecond jitter) of a counter and of a noisy gauge, and iterating such a chunk.
//! - `metrics/head_append`: `Head::append` of 120 samples to each of 100 new series (index
//!   insertion, chunk cutting and encoding).
//! - `metrics/promql`: `Engine::instant` and `Engine::range` (1 h, 60 s step) over a head of
//!   1,400 series holding one hour of 15 s scrapes (337,400 samples): a `sum by (job)` of a
//!   `rate`, and a `histogram_quantile` of summed bucket rates. Throughput: series for the
//!   instant queries, samples in the head for the range queries (they read all of them).

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use pharos_metrics::{
    model::Labels,
    query::{CancelToken, Engine, QueryValue, parse},
    store::{Head, HeadOptions, SAMPLES_PER_CHUNK, XorChunk},
};
use pharos_microbench::{MEASUREMENT_TIME, Rng, SEED, T0_MILLIS, WARM_UP_TIME, fill_metrics_head};

const JOBS: usize = 10;
const INSTANCES: usize = 10;

const QUERIES: [(&str, &str); 2] = [
    ("sum_rate", "sum by (job) (rate(http_requests_total[5m]))"),
    (
        "histogram_quantile",
        "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket[5m])))",
    ),
];

/// 120 (time, value) pairs 15 s apart with jitter: a counter, or a gauge of random values.
fn samples(counter: bool) -> Vec<(i64, f64)> {
    let mut rng = Rng::new(SEED);
    let mut value = 1_000.0;
    (0..SAMPLES_PER_CHUNK as i64)
        .map(|i| {
            let t = T0_MILLIS + i * 15_000 + rng.below(20) as i64;
            value = if counter { value + rng.below(100) as f64 } else { rng.unit() * 1e6 };
            (t, value)
        })
        .collect()
}

fn encode(samples: &[(i64, f64)]) -> XorChunk {
    let mut chunk = XorChunk::new();
    for &(t, v) in samples {
        chunk.append(t, v).expect("a chunk takes 120 samples");
    }
    chunk
}

fn chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics/chunk");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME);
    group.throughput(Throughput::Elements(SAMPLES_PER_CHUNK as u64));
    for (name, counter) in [("counter", true), ("gauge", false)] {
        let samples = samples(counter);
        let chunk = encode(&samples);
        let decoded: Vec<(i64, f64)> = chunk.iter().map(|s| (s.t, s.v)).collect();
        assert_eq!(decoded, samples, "the chunk gives back what was appended");
        eprintln!(
            "metrics/chunk/{name}: {} samples in {} bytes ({:.2} B/sample)",
            samples.len(),
            chunk.bytes().len(),
            chunk.bytes().len() as f64 / samples.len() as f64
        );
        group.bench_with_input(BenchmarkId::new("append_120", name), &samples, |b, samples| {
            b.iter(|| encode(samples))
        });
        group.bench_with_input(BenchmarkId::new("iterate_120", name), &chunk, |b, chunk| {
            b.iter(|| chunk.iter().map(|s| s.v).sum::<f64>())
        });
    }
    group.finish();
}

fn head_append(c: &mut Criterion) {
    const SERIES: usize = 100;
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            let instance = format!("10.2.0.{i}:9100");
            Labels::from_pairs([
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", "0"),
                ("instance", instance.as_str()),
                ("job", "node"),
                ("mode", "user"),
            ])
        })
        .collect();
    let samples = samples(true);
    let mut group = c.benchmark_group("metrics/head_append");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME);
    group.throughput(Throughput::Elements((SERIES * samples.len()) as u64));
    group.bench_function(format!("{SERIES}_series_x_{}_samples", samples.len()), |b| {
        b.iter_batched(
            || Head::new(HeadOptions::default()),
            |head| {
                for &(t, v) in &samples {
                    for labels in &labels {
                        head.append(labels, t, v).expect("in-order samples");
                    }
                }
                head
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn result_len(value: &QueryValue) -> usize {
    match value {
        QueryValue::Vector(v) => v.len(),
        QueryValue::Matrix(m) => m.len(),
        QueryValue::Scalar { .. } | QueryValue::String { .. } => 1,
    }
}

fn promql(c: &mut Criterion) {
    let head = Head::new(HeadOptions::default());
    let series = fill_metrics_head(SEED, &head, JOBS, INSTANCES);
    let samples = series * 241;
    let engine = Engine::default();
    let cancel = CancelToken::new();
    let end = T0_MILLIS + 3_600_000;
    let mut group = c.benchmark_group("metrics/promql");
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(20);
    // Iterations of several milliseconds: the same count per sample keeps a run to seconds.
    group.sampling_mode(SamplingMode::Flat);
    for (name, text) in QUERIES {
        let expr = parse(text).expect("a valid query");
        let instant = engine.instant(&head, &expr, end, &cancel).expect("instant query");
        assert_eq!(result_len(&instant), JOBS, "{name}: one series per job");
        group.throughput(Throughput::Elements(series as u64));
        group.bench_function(BenchmarkId::new(format!("instant_{series}_series"), name), |b| {
            b.iter(|| engine.instant(&head, &expr, end, &cancel).expect("instant query"))
        });
        let range = engine.range(&head, &expr, T0_MILLIS, end, 60_000, &cancel).expect("range query");
        assert_eq!(result_len(&range), JOBS, "{name}: one series per job");
        group.throughput(Throughput::Elements(samples as u64));
        group.bench_function(BenchmarkId::new(format!("range_1h_step_60s_{series}_series"), name), |b| {
            b.iter(|| engine.range(&head, &expr, T0_MILLIS, end, 60_000, &cancel).expect("range query"))
        });
    }
    group.finish();
}

criterion_group!(benches, chunk, head_append, promql);
criterion_main!(benches);

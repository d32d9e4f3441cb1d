//! Ingest decode: what a receiver does with a request body before the write-ahead log.
//!
//! - `otlp_protobuf/{traces,logs,metrics}`: `Ingestor::prepare_encoded` on an OTLP/HTTP
//!   protobuf body of 500 items (traces and logs are validated and split on the wire
//!   format; metrics are decoded, validated, split and re-encoded).
//! - `otlp_json/traces`: what the OTLP/HTTP JSON handler does: `serde_json` into the request,
//!   then `Ingestor::prepare`.
//! - `remote_write_v1`: a remote write 1.0 POST (1,000 series, snappy) through the receiver's
//!   router: snappy, decoding, label checks, split by series hash, envelope encoding. The
//!   queue behind it discards, so no I/O is measured; the router adds an in-process request
//!   (no socket) and a `spawn_blocking` hop.

use std::{sync::Arc, time::Duration};

use axum::{body::Body, http::Request};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use pharos_core::{Signal, Tenant};
use pharos_ingest::{IngestMetrics, Ingestor, Limits, otlp::http::HttpOptions};
use pharos_microbench::{
    DiscardQueue, MEASUREMENT_TIME, SEED, WARM_UP_TIME, logs_request, metrics_request, remote_write_v1,
    trace_request,
};
use prost::Message;
use tower::ServiceExt;

const ITEMS: usize = 500;
const RW_SERIES: usize = 1_000;

fn ingestor() -> Arc<Ingestor> {
    Arc::new(Ingestor::new(DiscardQueue::new(2), Limits::default(), IngestMetrics::default()))
}

fn otlp_protobuf(c: &mut Criterion) {
    let ingestor = ingestor();
    let tenant = Tenant::default();
    let mut group = c.benchmark_group("ingest/otlp_protobuf");
    // Iterations near a millisecond: 50 samples fit in the measurement time.
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(50);
    let bodies = [
        (Signal::Traces, "traces", Bytes::from(trace_request(SEED, ITEMS).encode_to_vec())),
        (Signal::Logs, "logs", Bytes::from(logs_request(SEED, ITEMS).encode_to_vec())),
        (Signal::Metrics, "metrics", Bytes::from(metrics_request(SEED, ITEMS).encode_to_vec())),
    ];
    for (signal, name, body) in bodies {
        // A body the ingestor would refuse would measure the error path.
        let prepared = ingestor.prepare_encoded(signal, &tenant, &[], body.clone()).expect("a valid request");
        drop(prepared);
        group.throughput(Throughput::Elements(ITEMS as u64));
        group.bench_function(format!("{name}_{ITEMS}_items"), |b| {
            b.iter(|| ingestor.prepare_encoded(signal, &tenant, &[], body.clone()).expect("a valid request"))
        });
    }
    group.finish();
}

fn otlp_json(c: &mut Criterion) {
    let ingestor = ingestor();
    let tenant = Tenant::default();
    let body = serde_json::to_vec(&trace_request(SEED, ITEMS)).expect("a request serializes to OTLP/JSON");
    let mut group = c.benchmark_group("ingest/otlp_json");
    // Iterations near a millisecond: 50 samples fit in the measurement time.
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(50);
    group.throughput(Throughput::Elements(ITEMS as u64));
    group.bench_function(format!("traces_{ITEMS}_items"), |b| {
        b.iter(|| {
            let request: ExportTraceServiceRequest = serde_json::from_slice(&body).expect("valid OTLP/JSON");
            ingestor.prepare(&tenant, &[], request).expect("a valid request")
        })
    });
    group.finish();
}

fn remote_write(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let options =
        HttpOptions { request_timeout: Duration::from_secs(10), retry_after: Duration::from_secs(1) };
    let router = pharos_ingest::remote_write::router(ingestor(), options);
    let body = Bytes::from(remote_write_v1(SEED, RW_SERIES, 1));
    let post = || {
        let request = Request::post("/api/v1/write")
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .body(Body::from(body.clone()))
            .expect("a valid request");
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await.expect("the router is infallible");
            assert_eq!(response.status(), 204, "remote write refused the synthetic request");
        }
    };
    runtime.block_on(post());
    let mut group = c.benchmark_group("ingest/remote_write_v1");
    // Iterations near a millisecond: 50 samples fit in the measurement time.
    group.warm_up_time(WARM_UP_TIME).measurement_time(MEASUREMENT_TIME).sample_size(50);
    group.throughput(Throughput::Elements(RW_SERIES as u64));
    group.bench_function(format!("{RW_SERIES}_series_1_sample"), |b| b.iter(|| runtime.block_on(post())));
    group.finish();
}

criterion_group!(benches, otlp_protobuf, otlp_json, remote_write);
criterion_main!(benches);

//! A small load generator for the end-to-end tests: workers that send traces requests and count
//! what was acknowledged.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;

pub const SPANS_PER_REQUEST: u64 = 100;

/// A request of `SPANS_PER_REQUEST` spans in 10 traces, with ids unique to (`worker`, `seq`).
pub fn traces_request(worker: u64, seq: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(worker + 1).to_be_bytes());
            trace_id[8..].copy_from_slice(&(seq * 16 + i % 10).to_be_bytes());
            let mut span_id = [0u8; 8];
            span_id.copy_from_slice(&(seq * 1000 + i + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("op-{}", i % 7),
                kind: 2,
                start_time_unix_nano: 1_700_000_000_000_000_000 + seq,
                end_time_unix_nano: 1_700_000_000_001_000_000 + seq,
                attributes: vec![KeyValue {
                    key: "http.route".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue("/api/items".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(format!("svc-{worker}"))) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// What the workers saw.
#[derive(Default)]
pub struct Tally {
    /// Spans in requests answered 200.
    pub acked: AtomicU64,
    /// Spans in requests that got no answer (the server died under them): durable or not.
    pub unknown: AtomicU64,
}

/// Runs `workers` senders against `url` until `stop` is set or a request fails for lack of a server.
pub async fn run_workers(
    url: String,
    tenant: &'static str,
    workers: u64,
    first_seq: u64,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (url, stop, tally) = (url.clone(), stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seq = first_seq;
            while !stop.load(Ordering::Relaxed) {
                let body = traces_request(w, seq);
                seq += 1;
                let sent = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("x-scope-orgid", tenant)
                    .timeout(std::time::Duration::from_secs(20))
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        tally.acked.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => {
                        tally.unknown.fetch_add(SPANS_PER_REQUEST, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

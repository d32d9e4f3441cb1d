//! Traces: whole trees of spans (`--span-depth` levels, `--span-fanout` children per span) over
//! `--services` services, encoded once into a pool of requests.
//!
//! The pool is protobuf-encoded at start-up so that the load generator spends its CPU on
//! sending. To keep trace ids unique across the run although the pool is reused, the byte
//! offsets of every trace id in each encoded request are recorded, and each send XORs a number
//! derived from the seed and the send's sequence number into the first 8 bytes of every trace id
//! of its copy (all spans of one trace get the same XOR, so traces stay whole).

use crate::rng::{Rng, hex, splitmix64};
use crate::shape::{DB_OPS, METHODS, ROUTES, Shape, b, i, resource, s, scope};
use bytes::{Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

/// One encoded request and where its trace ids are.
pub(crate) struct PrebuiltTraces {
    pub(crate) bytes: Bytes,
    trace_id_offsets: Vec<usize>,
    /// The distinct trace ids, in order of first appearance (before the per-send XOR).
    trace_ids: Vec<[u8; 16]>,
    pub(crate) from_ns: u64,
    pub(crate) to_ns: u64,
    pub(crate) items: u64,
}

impl PrebuiltTraces {
    /// The XOR mask of send `seq` under `seed`.
    fn mask(seed: u64, seq: u64) -> [u8; 8] {
        splitmix64(seq ^ splitmix64(seed ^ 0x005e_ed0f_7aa0_5eed)).to_le_bytes()
    }

    /// A copy of the request with every trace id made unique by `seq`.
    pub(crate) fn instantiate(&self, seed: u64, seq: u64) -> Bytes {
        let mut buf = BytesMut::from(&self.bytes[..]);
        let mask = Self::mask(seed, seq);
        for &off in &self.trace_id_offsets {
            for (b, m) in buf[off..off + 8].iter_mut().zip(mask.iter()) {
                *b ^= *m;
            }
        }
        buf.freeze()
    }

    /// The trace ids of send `seq`, in hex.
    pub(crate) fn trace_ids(&self, seed: u64, seq: u64) -> Vec<String> {
        let mask = Self::mask(seed, seq);
        self.trace_ids
            .iter()
            .map(|id| {
                let mut id = *id;
                for (b, m) in id[..8].iter_mut().zip(mask.iter()) {
                    *b ^= *m;
                }
                hex(&id)
            })
            .collect()
    }
}

/// Find `needle` in `hay` at or after `from`; panics if absent (it was just encoded).
fn find_from(hay: &[u8], needle: &[u8], from: usize) -> usize {
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
        .expect("id present in encoded request")
}

/// A span of the tree before it is placed in its service's resource.
struct Node {
    service: usize,
    span: Span,
}

/// The spans of `batch` spans' worth of whole traces (the last one cut short when `batch` is not
/// a multiple of the trace size), in breadth-first order per trace so that parents come first.
fn trace_spans(shape: &Shape, batch: usize, rng: &mut Rng, now: u64) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::with_capacity(batch);
    let nsvc = shape.services as u64;
    while out.len() < batch {
        let trace_id = rng.id::<16>();
        let first = out.len();
        let root_service = rng.below(nsvc) as usize;
        let root_start = now - 1_000_000_000 - rng.below(5_000_000_000);
        let root_dur = 1_000_000 + rng.below(400_000_000);
        out.push(Node {
            service: root_service,
            span: root_span(shape, rng, trace_id, root_service, root_start, root_dur),
        });
        // Breadth first: level by level, each span of the level gets `fanout` children.
        let mut level = first..first + 1;
        for _ in 1..shape.span_depth {
            let next_start = out.len();
            for p in level.clone() {
                for c in 0..shape.span_fanout {
                    if out.len() >= batch {
                        break;
                    }
                    let parent = &out[p];
                    let (pservice, pstart, pdur, pid) = (
                        parent.service,
                        parent.span.start_time_unix_nano,
                        parent.span.end_time_unix_nano - parent.span.start_time_unix_nano,
                        parent.span.span_id.clone(),
                    );
                    let start = pstart + rng.below(pdur / 2 + 1);
                    let dur = 1 + rng.below(pdur / 2 + 1);
                    let node = child_span(shape, rng, trace_id, pid, pservice, c, start, dur);
                    out.push(node);
                }
            }
            level = next_start..out.len();
            if level.is_empty() {
                break;
            }
        }
    }
    out
}

fn root_span(shape: &Shape, rng: &mut Rng, trace_id: [u8; 16], service: usize, start: u64, dur: u64) -> Span {
    let svc = shape.service_name(service);
    let route = *rng.pick(ROUTES);
    let method = *rng.pick(METHODS);
    let failed = rng.below(50) == 0;
    let status_code = if failed { 500 } else { 200 };
    let mut attributes = vec![
        s("http.request.method", method),
        s("http.route", route),
        s("url.path", route.replace("{id}", &rng.below(1_000_000).to_string())),
        s("url.scheme", "https"),
        i("http.response.status_code", status_code),
        s("server.address", format!("{svc}.shop.svc.cluster.local")),
        i("server.port", 8080),
        s("client.address", format!("10.{}.{}.{}", rng.below(255), rng.below(255), rng.below(255))),
        s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0"),
        s("network.protocol.version", "1.1"),
    ];
    attributes.extend(shape.extra_attributes(rng));
    let events = if failed {
        vec![Event {
            time_unix_nano: start + dur / 2,
            name: "exception".to_string(),
            attributes: vec![
                s("exception.type", "UpstreamTimeout"),
                s("exception.message", "upstream request timed out after 2000ms"),
            ],
            dropped_attributes_count: 0,
        }]
    } else {
        vec![]
    };
    Span {
        trace_id: trace_id.to_vec(),
        span_id: rng.id::<8>().to_vec(),
        flags: 0x100 | 1,
        name: format!("{method} {route}"),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        attributes,
        events,
        status: Some(Status {
            code: if failed { StatusCode::Error as i32 } else { StatusCode::Unset as i32 },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// Child `c` of a span of service `pservice`: an internal span, a database call, or (every
/// third child) a call served by another service (a server span of that service).
#[allow(clippy::too_many_arguments)]
fn child_span(
    shape: &Shape,
    rng: &mut Rng,
    trace_id: [u8; 16],
    parent: Vec<u8>,
    pservice: usize,
    c: usize,
    start: u64,
    dur: u64,
) -> Node {
    let (service, name, kind, mut attributes) = match c % 3 {
        0 => (
            pservice,
            "render_response".to_string(),
            SpanKind::Internal,
            vec![s("code.function.name", "handlers::render_response"), b("cache.hit", rng.below(2) == 0)],
        ),
        1 => {
            let op = DB_OPS[rng.below(DB_OPS.len() as u64) as usize];
            (
                pservice,
                format!("{} shop", op.split(' ').next().unwrap_or("SELECT")),
                SpanKind::Client,
                vec![
                    s("db.system.name", "postgresql"),
                    s("db.namespace", "shop"),
                    s("db.query.text", op),
                    s("server.address", "postgres.shop.svc.cluster.local"),
                    i("server.port", 5432),
                    i("db.response.returned_rows", rng.below(200) as i64),
                ],
            )
        }
        _ => {
            let n = shape.services as u64;
            let callee =
                if n > 1 { (pservice as u64 + 1 + rng.below(n - 1)) % n } else { pservice as u64 } as usize;
            let peer = shape.service_name(callee);
            (
                callee,
                format!("POST /internal/{peer}"),
                SpanKind::Server,
                vec![
                    s("http.request.method", "POST"),
                    s("http.route", format!("/internal/{peer}")),
                    s("server.address", format!("{peer}.shop.svc.cluster.local")),
                    i("server.port", 8080),
                    i("http.response.status_code", 200),
                ],
            )
        }
    };
    attributes.extend(shape.extra_attributes(rng));
    Node {
        service,
        span: Span {
            trace_id: trace_id.to_vec(),
            span_id: rng.id::<8>().to_vec(),
            parent_span_id: parent,
            flags: 0x100 | 1,
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + dur,
            attributes,
            status: Some(Status { code: StatusCode::Unset as i32, message: String::new() }),
            ..Default::default()
        },
    }
}

/// The request of pool entry `index`: `batch` spans grouped into one resource per service.
pub(crate) fn build(shape: &Shape, batch: usize, seed: u64, index: u64, now: u64) -> PrebuiltTraces {
    let mut rng = Rng::derive(seed, 0x7472_6163_6500_0000 ^ index);
    let nodes = trace_spans(shape, batch, &mut rng, now);
    let (mut from_ns, mut to_ns) = (u64::MAX, 0);
    let mut per_service: Vec<Vec<Span>> = (0..shape.services).map(|_| Vec::new()).collect();
    let mut trace_ids: Vec<[u8; 16]> = Vec::new();
    for n in nodes {
        from_ns = from_ns.min(n.span.start_time_unix_nano);
        to_ns = to_ns.max(n.span.end_time_unix_nano);
        let id: [u8; 16] = n.span.trace_id[..].try_into().expect("16-byte trace id");
        if trace_ids.last() != Some(&id) {
            trace_ids.push(id);
        }
        per_service[n.service].push(n.span);
    }
    let mut order: Vec<[u8; 16]> = Vec::with_capacity(batch);
    let mut resource_spans = Vec::new();
    for (svc, spans) in per_service.into_iter().enumerate() {
        if spans.is_empty() {
            continue;
        }
        order.extend(spans.iter().map(|s| <[u8; 16]>::try_from(&s.trace_id[..]).expect("16 bytes")));
        resource_spans.push(ResourceSpans {
            resource: Some(resource(&mut rng, &shape.service_name(svc))),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope("opentelemetry-instrumentation-http")),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
        });
    }
    let bytes = ExportTraceServiceRequest { resource_spans }.encode_to_vec();
    // Spans are encoded in order and trace_id (field 1) comes first in each span.
    let mut offsets = Vec::with_capacity(order.len());
    let mut pos = 0;
    for id in &order {
        let at = find_from(&bytes, id, pos);
        offsets.push(at);
        pos = at + 16;
    }
    PrebuiltTraces {
        bytes: Bytes::from(bytes),
        trace_id_offsets: offsets,
        trace_ids,
        from_ns,
        to_ns,
        items: batch as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    fn spans(req: &ExportTraceServiceRequest) -> Vec<(String, &Span)> {
        let mut out = Vec::new();
        for rs in &req.resource_spans {
            let svc = rs.resource.as_ref().unwrap().attributes[0].value.as_ref().unwrap().value.clone();
            let Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(svc)) = svc else {
                panic!("service.name first")
            };
            for ss in &rs.scope_spans {
                out.extend(ss.spans.iter().map(|s| (svc.clone(), s)));
            }
        }
        out
    }

    #[test]
    fn depth_and_fanout_make_trees_of_that_shape() {
        let shape = Shape { span_depth: 3, span_fanout: 3, services: 4, ..Shape::default() };
        // 13 spans per trace: 10 whole traces.
        let p = build(&shape, 130, 9, 0, 1_800_000_000_000_000_000);
        let req = ExportTraceServiceRequest::decode(p.bytes.clone()).unwrap();
        let all = spans(&req);
        assert_eq!(all.len(), 130);
        let mut by_trace: BTreeMap<Vec<u8>, Vec<&Span>> = BTreeMap::new();
        for (_, s) in &all {
            by_trace.entry(s.trace_id.clone()).or_default().push(s);
        }
        assert_eq!(by_trace.len(), 10);
        for spans in by_trace.values() {
            let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], *s)).collect();
            let roots: Vec<_> = spans.iter().filter(|s| s.parent_span_id.is_empty()).collect();
            assert_eq!(roots.len(), 1, "one root per trace");
            let mut children: HashMap<&[u8], usize> = HashMap::new();
            let mut depth_count: BTreeMap<usize, usize> = BTreeMap::new();
            for s in spans {
                let mut depth = 0;
                let mut cur = *s;
                while !cur.parent_span_id.is_empty() {
                    let parent = by_id[&cur.parent_span_id[..]];
                    assert!(parent.start_time_unix_nano <= cur.start_time_unix_nano);
                    assert!(
                        cur.end_time_unix_nano <= parent.end_time_unix_nano,
                        "children end within the parent"
                    );
                    cur = parent;
                    depth += 1;
                }
                *depth_count.entry(depth).or_default() += 1;
                if !s.parent_span_id.is_empty() {
                    *children.entry(&s.parent_span_id[..]).or_default() += 1;
                }
            }
            assert_eq!(depth_count, BTreeMap::from([(0, 1), (1, 3), (2, 9)]));
            // Every span above the last level has exactly `fanout` children.
            assert_eq!(children.len(), 4);
            assert!(children.values().all(|&n| n == 3));
        }
        let services: BTreeSet<&String> = all.iter().map(|(s, _)| s).collect();
        assert!(services.len() > 1 && services.len() <= 4, "{services:?}");
    }

    #[test]
    fn extra_attributes_stay_within_their_cardinality() {
        let shape = Shape { attributes: 3, attribute_cardinality: 5, ..Shape::default() };
        let p = build(&shape, 400, 1, 0, 1_800_000_000_000_000_000);
        let req = ExportTraceServiceRequest::decode(p.bytes.clone()).unwrap();
        let mut values: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (_, s) in spans(&req) {
            let extra: Vec<_> = s.attributes.iter().filter(|a| a.key.starts_with("bench.attr.")).collect();
            assert_eq!(extra.len(), 3);
            for a in extra {
                values.entry(a.key.clone()).or_default().insert(format!("{:?}", a.value));
            }
        }
        assert_eq!(values.len(), 3);
        // 400 draws from 5 values: all 5 appear, never a sixth.
        assert!(values.values().all(|v| v.len() == 5), "{values:?}");
    }

    #[test]
    fn same_seed_same_content_and_sends_get_fresh_ids() {
        let shape = Shape::default();
        let now = 1_800_000_000_000_000_000;
        let a = build(&shape, 200, 42, 3, now);
        let b = build(&shape, 200, 42, 3, now);
        let c = build(&shape, 200, 43, 3, now);
        assert_eq!(a.bytes, b.bytes);
        assert_ne!(a.bytes, c.bytes);
        assert_eq!(a.instantiate(42, 7), b.instantiate(42, 7));
        assert_eq!(a.trace_ids(42, 7), b.trace_ids(42, 7));
        assert_ne!(a.trace_ids(42, 7), a.trace_ids(43, 7), "the ids of a send depend on the seed");
        let ids = |bytes: Bytes| -> Vec<String> {
            let req = ExportTraceServiceRequest::decode(bytes).unwrap();
            let mut ids: Vec<String> = Vec::new();
            for (_, s) in spans(&req) {
                let h = hex(&s.trace_id);
                if !ids.contains(&h) {
                    ids.push(h);
                }
            }
            ids.sort();
            ids
        };
        let (s1, s2) = (ids(a.instantiate(42, 1)), ids(a.instantiate(42, 2)));
        assert!(s1.iter().all(|id| !s2.contains(id)), "every send has new trace ids");
        let mut listed = a.trace_ids(42, 1);
        listed.sort();
        assert_eq!(listed, s1, "the manifest lists exactly the trace ids sent");
        assert_eq!(s1.len(), 25, "8 spans per trace by default");
    }
}

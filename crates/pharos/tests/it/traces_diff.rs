//! Differential oracle for trace search: a seeded generated dataset goes into `pharos serve`
//! over OTLP/HTTP, and every TraceQL (and legacy) search is answered both by Pharos's Tempo API
//! and by a brute-force evaluator here, written from Tempo's documented semantics and sharing
//! no code with Pharos. The answers must be identical: the traces, each trace's spansets
//! (matched span ids and `matched` counts), its root service and name, start and duration.
//!
//! The dataset: ~1,500 traces over eight services (ten resources), span trees one to six deep,
//! a dozen traces of hundreds of spans, traces without their root span, traces sent half in
//! each batch, spans sent twice, a high-cardinality `user.id`, an attribute that is an int on
//! some spans and a string on others, a name both span and resource attribute, events, links
//! and about 5% errors, with durations from nanoseconds to seconds, all within the last hour.
//!
//! The first half is sent and flushed into blocks. The second half is sent in slices, and after
//! each slice is stored a few queries run at once, so they read that slice from the head and
//! the rest from blocks being flushed and compacted (`traces.flush_interval=1s`,
//! `traces.compaction_interval=3s`); their expected answers are computed over the spans sent so
//! far, partial traces included. Once compaction has merged everything into one block, every
//! query runs again. Traces read by id (JSON and protobuf) must hold exactly the spans sent.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::LazyLock,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    resource::v1::Resource,
    trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, Link},
    },
};
use prost::Message;
use serde_json::Value;

use crate::harness::Pharos;

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const TRACES: u64 = 1500;
const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

const UNSPECIFIED: i32 = 0;
const INTERNAL: i32 = 1;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
const OK: i32 = 1;
const ERROR: i32 = 2;

const TENANT_SPANS: &str = "pharos_traces_spans_stored_total{tenant=\"default\"}";
const BLOCKS_FLUSHED: &str = "pharos_traces_blocks_flushed_total";

// ---------------------------------------------------------------------------------------------
// The generator.

/// xorshift64*: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u64)]) -> T {
        let mut x = self.below(items.iter().map(|(_, w)| w).sum());
        for (item, w) in items {
            if x < *w {
                return *item;
            }
            x -= w;
        }
        unreachable!("x is below the total weight")
    }

    fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        out[0] |= 1; // never all zeros
        out
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    S(String),
    I(i64),
    F(f64),
    B(bool),
}

impl V {
    fn any(&self) -> AnyValue {
        AnyValue {
            value: Some(match self {
                V::S(s) => any_value::Value::StringValue(s.clone()),
                V::I(i) => any_value::Value::IntValue(*i),
                V::F(f) => any_value::Value::DoubleValue(*f),
                V::B(b) => any_value::Value::BoolValue(*b),
            }),
        }
    }
}

fn s(text: &str) -> V {
    V::S(text.to_string())
}

fn kvs(attrs: &[(&'static str, V)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue { key: k.to_string(), value: Some(v.any()), ..Default::default() })
        .collect()
}

struct Res {
    service: &'static str,
    attrs: Vec<(&'static str, V)>,
}

static RESOURCES: LazyLock<Vec<Res>> = LazyLock::new(|| {
    let res = |service: &'static str, env: Option<&str>, tier: Option<&str>, pid: Option<i64>, host: &str| {
        let mut attrs = vec![("service.name", s(service)), ("host.name", s(host))];
        if let Some(env) = env {
            attrs.push(("deployment.environment", s(env)));
        }
        if let Some(tier) = tier {
            attrs.push(("tier", s(tier)));
        }
        if let Some(pid) = pid {
            attrs.push(("process.pid", V::I(pid)));
        }
        Res { service, attrs }
    };
    vec![
        res("frontend", Some("prod"), Some("web"), Some(1201), "fe-1"),
        res("frontend", Some("staging"), Some("web"), Some(1202), "fe-2"),
        res("checkout", Some("prod"), Some("backend"), Some(2301), "co-1"),
        res("cart", Some("prod"), Some("backend"), Some(3401), "cart-1"),
        res("cart", None, None, Some(3402), "cart-2"),
        res("payment", Some("prod"), Some("backend"), Some(4501), "pay-1"),
        res("inventory", None, None, Some(5601), "inv-1"),
        res("shipping", Some("staging"), None, Some(6701), "ship-1"),
        res("auth", None, None, None, "auth-1"),
        res("search", Some("prod"), Some("backend"), Some(7801), "search-1"),
    ]
});

const SERVICES: &[&str] =
    &["frontend", "checkout", "cart", "payment", "inventory", "shipping", "auth", "search"];
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/cart"),
    ("POST", "/api/cart"),
    ("GET", "/api/items/{id}"),
    ("POST", "/api/checkout"),
    ("POST", "/api/pay"),
    ("GET", "/api/search"),
    ("POST", "/login"),
    ("GET", "/health"),
];
const HTTP_CODES: &[(i64, u64)] =
    &[(200, 60), (201, 8), (204, 5), (301, 3), (400, 6), (404, 7), (429, 3), (500, 4), (502, 2), (503, 2)];
const MESSAGES: &[&str] = &["timeout", "connection refused", "internal error", "deadline exceeded"];

#[derive(Clone)]
struct Ev {
    name: &'static str,
    offset: u64,
    attrs: Vec<(&'static str, V)>,
}

/// A generated span.
#[derive(Clone)]
struct Sp {
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    kind: i32,
    status: Option<(i32, &'static str)>,
    start: u64,
    end: u64,
    res: usize,
    scope: &'static str,
    attrs: Vec<(&'static str, V)>,
    events: Vec<Ev>,
    links: Vec<([u8; 16], [u8; 8])>,
    /// Sent in the first batch (1), the second (2) or both (3).
    half: u8,
}

impl Sp {
    fn span_attr(&self, key: &str) -> Option<&V> {
        self.attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn res_attr(&self, key: &str) -> Option<&V> {
        RESOURCES[self.res].attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// An unscoped `.key`: the span's attribute, else the resource's.
    fn attr(&self, key: &str) -> Option<&V> {
        self.span_attr(key).or_else(|| self.res_attr(key))
    }

    fn service(&self) -> &'static str {
        RESOURCES[self.res].service
    }

    fn code(&self) -> i32 {
        self.status.map_or(0, |(c, _)| c)
    }

    fn message(&self) -> &'static str {
        self.status.map_or("", |(_, m)| m)
    }

    fn dur(&self) -> u64 {
        self.end - self.start
    }

    fn proto(&self, trace_id: &[u8; 16]) -> Span {
        Span {
            trace_id: trace_id.to_vec(),
            span_id: self.id.to_vec(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: self.name.clone(),
            kind: self.kind,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            attributes: kvs(&self.attrs),
            events: self
                .events
                .iter()
                .map(|e| Event {
                    time_unix_nano: self.start + e.offset,
                    name: e.name.to_string(),
                    attributes: kvs(&e.attrs),
                    ..Default::default()
                })
                .collect(),
            links: self
                .links
                .iter()
                .map(|(t, s)| Link {
                    trace_id: t.to_vec(),
                    span_id: s.to_vec(),
                    attributes: kvs(&[("link.reason", V::S("batch".into()))]),
                    ..Default::default()
                })
                .collect(),
            status: self.status.map(|(code, message)| Status { code, message: message.to_string() }),
            ..Default::default()
        }
    }
}

/// A generated trace: its distinct spans by (start, id).
struct Tr {
    id: [u8; 16],
    spans: Vec<Sp>,
    index: HashMap<[u8; 8], usize>,
    long: bool,
    rootless: bool,
    split: bool,
    duplicated: bool,
}

type Set = BTreeSet<usize>;

#[derive(Clone, Copy)]
enum Rel {
    Child,
    Desc,
    Parent,
    Anc,
    Sib,
}

impl Rel {
    fn inverse(self) -> Rel {
        match self {
            Rel::Child => Rel::Parent,
            Rel::Parent => Rel::Child,
            Rel::Desc => Rel::Anc,
            Rel::Anc => Rel::Desc,
            Rel::Sib => Rel::Sib,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Tr {
    /// The trace as far as its `shown` spans go; `None` when none is.
    fn visible(&self, shown: impl Fn(&Sp) -> bool) -> Option<Tr> {
        let spans: Vec<Sp> = self.spans.iter().filter(|s| shown(s)).cloned().collect();
        if spans.is_empty() {
            return None;
        }
        let index = spans.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        Some(Tr { spans, index, ..*self })
    }

    fn hex(&self) -> String {
        hex(&self.id)
    }

    fn all(&self) -> Set {
        (0..self.spans.len()).collect()
    }

    fn filter(&self, p: impl Fn(&Sp) -> bool) -> Set {
        (0..self.spans.len()).filter(|&i| p(&self.spans[i])).collect()
    }

    fn parent(&self, i: usize) -> Option<usize> {
        self.spans[i].parent.and_then(|p| self.index.get(&p).copied())
    }

    fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = self.parent(i);
        while let Some(p) = at {
            out.push(p);
            at = self.parent(p);
        }
        out
    }

    fn child_count(&self, i: usize) -> usize {
        self.spans.iter().filter(|s| s.parent == Some(self.spans[i].id)).count()
    }

    /// The spans of `b` that stand in `rel` to some span of `a`.
    fn rel(&self, rel: Rel, a: &Set, b: &Set) -> Set {
        b.iter()
            .copied()
            .filter(|&j| match rel {
                Rel::Child => self.parent(j).is_some_and(|p| a.contains(&p)),
                Rel::Desc => self.ancestors(j).iter().any(|p| a.contains(p)),
                Rel::Parent => a.iter().any(|&x| self.parent(x) == Some(j)),
                Rel::Anc => a.iter().any(|&x| self.ancestors(x).contains(&j)),
                Rel::Sib => a.iter().any(|&x| {
                    x != j && self.spans[x].parent.is_some() && self.spans[x].parent == self.spans[j].parent
                }),
            })
            .collect()
    }

    /// `!>` and the other negations: the spans of `b` without the relation.
    fn not(&self, rel: Rel, a: &Set, b: &Set) -> Set {
        b.difference(&self.rel(rel, a, b)).copied().collect()
    }

    /// `&>` and the other union forms: the spans of both sides that take part in the relation.
    fn both(&self, rel: Rel, a: &Set, b: &Set) -> Set {
        union(&self.rel(rel, a, b), &self.rel(rel.inverse(), b, a))
    }

    fn root(&self) -> Option<&Sp> {
        self.spans.iter().find(|s| s.parent.is_none())
    }

    fn first(&self) -> u64 {
        self.spans.iter().map(|s| s.start).min().unwrap_or(0)
    }

    fn last(&self) -> u64 {
        self.spans.iter().map(|s| s.end).max().unwrap_or(0)
    }

    fn duration(&self) -> u64 {
        self.last() - self.first()
    }
}

fn union(a: &Set, b: &Set) -> Set {
    a.union(b).copied().collect()
}

/// Spanset `&&`: both sides must match; the answer holds the spans of both.
fn and(a: &Set, b: &Set) -> Set {
    if a.is_empty() || b.is_empty() { Set::new() } else { union(a, b) }
}

fn one(set: Set) -> Vec<Set> {
    if set.is_empty() { Vec::new() } else { vec![set] }
}

/// Splits `set` by a key (`None`: missing, a group of its own), as `by()`.
fn group_by(t: &Tr, set: &Set, key: impl Fn(&Sp) -> Option<String>) -> Vec<Set> {
    let mut groups: BTreeMap<Option<String>, Set> = BTreeMap::new();
    for &i in set {
        groups.entry(key(&t.spans[i])).or_default().insert(i);
    }
    groups.into_values().collect()
}

fn make_span(rng: &mut Rng, parent: Option<[u8; 8]>, service: &str, kind: i32, start: u64, end: u64) -> Sp {
    let candidates: Vec<usize> = (0..RESOURCES.len()).filter(|&i| RESOURCES[i].service == service).collect();
    let res = *rng.pick(&candidates);
    let mut attrs: Vec<(&'static str, V)> = Vec::new();
    let mut http_code = None;
    let (name, scope) = match kind {
        SERVER => {
            let (method, route) = *rng.pick(ROUTES);
            let code = rng.weighted(HTTP_CODES);
            http_code = Some(code);
            attrs.push(("http.request.method", s(method)));
            attrs.push(("http.route", s(route)));
            attrs.push(("http.response.status_code", V::I(code)));
            if rng.chance(0.6) {
                attrs.push(("user.id", V::S(format!("user-{}", rng.below(5000)))));
            }
            (format!("{method} {route}"), "http")
        }
        CLIENT if rng.chance(0.4) => {
            let (name, system) = *rng.pick(&[
                ("SELECT items", "postgres"),
                ("INSERT order", "postgres"),
                ("redis GET", "redis"),
            ]);
            attrs.push(("db.system", s(system)));
            if rng.chance(0.8) {
                attrs.push(("db.rows", V::I(rng.below(10_000) as i64)));
            }
            (name.to_string(), "db")
        }
        CLIENT => {
            let method = *rng.pick(&["GET", "POST", "PUT", "DELETE"]);
            attrs.push(("http.request.method", s(method)));
            if rng.chance(0.9) {
                let code = rng.weighted(HTTP_CODES);
                http_code = Some(code);
                attrs.push(("http.response.status_code", V::I(code)));
            }
            (format!("HTTP {method}"), "http")
        }
        INTERNAL => {
            if rng.chance(0.5) {
                attrs.push(("payload.ratio", V::F(rng.unit())));
            }
            if rng.chance(0.3) {
                attrs.push(("retry", V::B(rng.chance(0.5))));
            }
            (rng.pick(&["render", "validate", "compute price", "serialize"]).to_string(), "app")
        }
        PRODUCER | CONSUMER => {
            attrs.push(("messaging.destination", s(rng.pick::<&str>(&["orders", "payments"]))));
            (if kind == PRODUCER { "publish order" } else { "process order" }.to_string(), "app")
        }
        _ => ("unknown op".to_string(), "app"),
    };
    if rng.chance(0.08) {
        let code =
            if rng.chance(0.5) { V::I(rng.below(100) as i64) } else { V::S(format!("E{}", rng.below(100))) };
        attrs.push(("code", code));
    }
    if rng.chance(0.05) {
        attrs.push(("tier", s(rng.pick::<&str>(&["edge", "core"]))));
    }
    let error = (http_code.is_some_and(|c| c >= 500) && rng.chance(0.6)) || rng.chance(0.03);
    let status = if error {
        Some((ERROR, *rng.pick(MESSAGES)))
    } else if rng.chance(0.1) {
        Some((OK, ""))
    } else if rng.chance(0.5) {
        Some((0, ""))
    } else {
        None
    };
    let mut events = Vec::new();
    if error && rng.chance(0.8) {
        let kind = *rng.pick(&["IOError", "Timeout", "NullPointer"]);
        events.push(Ev {
            name: "exception",
            offset: (end - start) / 2,
            attrs: vec![("exception.type", s(kind))],
        });
    }
    if rng.chance(0.06) {
        events.push(Ev { name: "cache.miss", offset: rng.below(end - start + 1), attrs: Vec::new() });
    }
    Sp {
        id: rng.id(),
        parent,
        name,
        kind,
        status,
        start,
        end,
        res,
        scope,
        attrs,
        events,
        links: Vec::new(),
        half: 0,
    }
}

/// One trace's spans, root first (the root removed when `rootless`, after giving it one child).
fn make_trace(
    rng: &mut Rng,
    start: u64,
    long: bool,
    rootless: bool,
    link: Option<([u8; 16], [u8; 8])>,
) -> Vec<Sp> {
    let max_depth = if long {
        rng.range(4, 5)
    } else if rootless {
        rng.range(2, 6)
    } else {
        rng.range(1, 6)
    };
    let cap = if long { rng.range(200, 600) as usize } else { 60 };
    let root_dur = if long {
        rng.range(2 * SEC, 8 * SEC)
    } else {
        // log-uniform from 20µs to 4s
        let (lo, hi) = ((20 * US) as f64, (4 * SEC) as f64);
        (lo * (hi / lo).powf(rng.unit())) as u64 + rng.below(1000)
    };
    let root_service = if rng.chance(0.7) { "frontend" } else { *rng.pick(SERVICES) };
    let root_kind = rng.weighted(&[(SERVER, 85), (CONSUMER, 10), (INTERNAL, 5)]);
    let mut spans = vec![make_span(rng, None, root_service, root_kind, start, start + root_dur)];
    let mut depth = vec![1];
    let mut i = 0;
    while i < spans.len() {
        if depth[i] < max_depth {
            let n = if long { rng.range(1, 6) } else { rng.range(0, 3) };
            let n = match i {
                0 if rootless => 1,
                0 => n.max(1),
                _ => n,
            };
            for _ in 0..n {
                if spans.len() >= cap {
                    break;
                }
                let p = &spans[i];
                let c_start = p.start + rng.below(p.dur() / 2 + 1);
                let c_dur = ((p.end - c_start) * rng.range(5, 95) / 100).max(1);
                let (kind, service) = if p.kind == CLIENT && p.scope == "http" {
                    let others: Vec<&str> = SERVICES.iter().copied().filter(|s| *s != p.service()).collect();
                    (SERVER, *rng.pick(&others))
                } else {
                    let kind = rng.weighted(&[
                        (CLIENT, 35),
                        (INTERNAL, 35),
                        (SERVER, 5),
                        (PRODUCER, 10),
                        (CONSUMER, 8),
                        (UNSPECIFIED, 7),
                    ]);
                    (kind, p.service())
                };
                let parent = Some(p.id);
                spans.push(make_span(rng, parent, service, kind, c_start, c_start + c_dur));
                depth.push(depth[i] + 1);
            }
        }
        i += 1;
    }
    for sp in &mut spans {
        if sp.kind == CONSUMER {
            sp.links.push(link.unwrap_or_else(|| (rng.id(), rng.id())));
        }
    }
    if rootless {
        spans.remove(0);
    }
    spans
}

fn generate(now_ns: u64) -> Vec<Tr> {
    let mut rng = Rng(SEED);
    let begin = now_ns - 55 * 60 * SEC;
    let step = 50 * 60 * SEC / TRACES;
    let mut traces: Vec<Tr> = Vec::new();
    for i in 0..TRACES {
        let long = i % 125 == 7;
        let rootless = !long && i % 67 == 3;
        let start = begin + i * step + rng.below(SEC);
        let link = traces.last().and_then(|t| t.root().map(|r| (t.id, r.id)));
        let id = rng.id();
        let mut spans = make_trace(&mut rng, start, long, rootless, link);
        let split = !long && spans.len() > 1 && rng.chance(0.04);
        let duplicated = !split && rng.chance(0.02);
        let half = if rng.chance(0.5) { 1 } else { 2 };
        for sp in &mut spans {
            sp.half = if split { 1 + rng.below(2) as u8 } else { half };
        }
        if duplicated {
            for _ in 0..rng.range(1, 3) {
                let k = rng.below(spans.len() as u64) as usize;
                spans[k].half = 3;
            }
        }
        spans.sort_by_key(|s| (s.start, s.id));
        let index = spans.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        traces.push(Tr { id, spans, index, long, rootless, split, duplicated });
    }
    traces
}

/// The OTLP requests that send `half` (1 or 2) of the spans, in `chunks` requests.
fn requests(traces: &[&Tr], half: u8, chunks: usize) -> Vec<ExportTraceServiceRequest> {
    let per_chunk = traces.len().div_ceil(chunks);
    traces
        .chunks(per_chunk)
        .map(|chunk| {
            let mut groups: BTreeMap<(usize, &str), Vec<Span>> = BTreeMap::new();
            for t in chunk {
                for sp in t.spans.iter().filter(|s| s.half == half || s.half == 3) {
                    groups.entry((sp.res, sp.scope)).or_default().push(sp.proto(&t.id));
                }
            }
            let mut by_res: BTreeMap<usize, Vec<ScopeSpans>> = BTreeMap::new();
            for ((res, scope), spans) in groups {
                by_res.entry(res).or_default().push(ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.to_string(),
                        version: "1.0".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                });
            }
            ExportTraceServiceRequest {
                resource_spans: by_res
                    .into_iter()
                    .map(|(res, scope_spans)| ResourceSpans {
                        resource: Some(Resource {
                            attributes: kvs(&RESOURCES[res].attrs),
                            ..Default::default()
                        }),
                        scope_spans,
                        schema_url: String::new(),
                    })
                    .collect(),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The queries and their brute-force answers.

type Expect = Box<dyn Fn(&Tr) -> Vec<Set>>;
type Keys = Box<dyn Fn(&Sp) -> Vec<&'static str>>;

struct Case {
    label: String,
    params: Vec<(&'static str, String)>,
    expect: Expect,
    /// The attribute names each matched span must report, when checked.
    keys: Option<Keys>,
}

impl Case {
    fn keys(mut self, keys: impl Fn(&Sp) -> Vec<&'static str> + 'static) -> Self {
        self.keys = Some(Box::new(keys));
        self
    }
}

/// A TraceQL query whose spansets `f` computes.
fn tql(q: &str, f: impl Fn(&Tr) -> Vec<Set> + 'static) -> Case {
    Case { label: q.to_string(), params: vec![("q", q.to_string())], expect: Box::new(f), keys: None }
}

/// A TraceQL query that yields one spanset: the spans for which `p` holds.
fn spans(q: &str, p: impl Fn(&Tr, &Sp) -> bool + 'static) -> Case {
    tql(q, move |t| one(t.filter(|s| p(t, s))))
}

/// A search with the older parameters.
fn legacy(params: &[(&'static str, &str)], f: impl Fn(&Tr) -> Vec<Set> + 'static) -> Case {
    let label = params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    Case {
        label,
        params: params.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        expect: Box::new(f),
        keys: None,
    }
}

fn int(v: Option<&V>) -> Option<i64> {
    match v {
        Some(V::I(i)) => Some(*i),
        _ => None,
    }
}

fn num(v: Option<&V>) -> Option<f64> {
    match v {
        Some(V::I(i)) => Some(*i as f64),
        Some(V::F(f)) => Some(*f),
        _ => None,
    }
}

fn text(v: Option<&V>) -> Option<&str> {
    match v {
        Some(V::S(s)) => Some(s),
        _ => None,
    }
}

fn boolean(v: Option<&V>) -> Option<bool> {
    match v {
        Some(V::B(b)) => Some(*b),
        _ => None,
    }
}

fn is(v: Option<&V>, want: &str) -> bool {
    text(v) == Some(want)
}

fn cases(traces: &[Tr]) -> Vec<Case> {
    let http_code = |s: &Sp| int(s.span_attr("http.response.status_code"));
    let err = |s: &Sp| s.code() == ERROR;
    let link_target = traces
        .iter()
        .flat_map(|t| &t.spans)
        .find_map(|s| s.links.first())
        .map(|(t, _)| hex(t))
        .expect("some consumer span links to a trace");
    let link_query = format!("{{ link:traceID = \"{link_target}\" }}");
    let user = traces
        .iter()
        .flat_map(|t| &t.spans)
        .find_map(|s| text(s.span_attr("user.id")))
        .expect("some span has a user.id")
        .to_string();
    let user_query = format!("{{ span.user.id = \"{user}\" }}");

    let mut c = vec![
        // Intrinsics.
        tql("{ }", |t| one(t.all())),
        spans(r#"{ name = "POST /api/pay" }"#, |_, s| s.name == "POST /api/pay"),
        spans(r#"{ name != "render" }"#, |_, s| s.name != "render"),
        spans(r#"{ name =~ "HTTP .*" }"#, |_, s| s.name.starts_with("HTTP ")),
        spans(r#"{ name !~ ".*order" }"#, |_, s| !s.name.ends_with("order")),
        spans("{ status = error }", move |_, s| err(s)),
        spans("{ status = ok }", |_, s| s.code() == OK),
        spans("{ status != unset }", |_, s| s.code() != 0),
        spans(r#"{ statusMessage = "timeout" }"#, |_, s| s.message() == "timeout"),
        spans(r#"{ statusMessage =~ "conn.*|dead.*" }"#, |_, s| {
            s.message().starts_with("conn") || s.message().starts_with("dead")
        }),
        spans("{ kind = server }", |_, s| s.kind == SERVER),
        spans("{ kind = consumer }", |_, s| s.kind == CONSUMER),
        spans("{ kind = unspecified }", |_, s| s.kind == UNSPECIFIED),
        spans("{ kind != internal }", |_, s| s.kind != INTERNAL),
        spans("{ duration > 1s }", |_, s| s.dur() > SEC),
        spans("{ duration <= 50us }", |_, s| s.dur() <= 50 * US),
        spans("{ duration >= 100ms && duration < 200ms }", |_, s| (100 * MS..200 * MS).contains(&s.dur())),
        spans("{ duration * 2 > 3s }", |_, s| s.dur() * 2 > 3 * SEC),
        spans(r#"{ rootServiceName = "checkout" }"#, |t, _| {
            t.root().is_some_and(|r| r.service() == "checkout")
        }),
        spans(r#"{ rootServiceName != "frontend" }"#, |t, _| {
            t.root().is_some_and(|r| r.service() != "frontend")
        }),
        spans(r#"{ rootName = "GET /health" }"#, |t, _| t.root().is_some_and(|r| r.name == "GET /health")),
        spans(r#"{ rootName =~ "POST .*" && kind = client }"#, |t, s| {
            t.root().is_some_and(|r| r.name.starts_with("POST ")) && s.kind == CLIENT
        }),
        spans("{ traceDuration > 3s }", |t, _| t.duration() > 3 * SEC),
        spans("{ traceDuration < 100us && kind = server }", |t, s| {
            t.duration() < 100 * US && s.kind == SERVER
        }),
        spans("{ span:parentID = nil }", |_, s| s.parent.is_none()),
        tql("{ span:childCount >= 5 }", |t| {
            one(t.all().into_iter().filter(|&i| t.child_count(i) >= 5).collect())
        }),
        spans(r#"{ instrumentation:name = "db" && duration > 10ms }"#, |_, s| {
            s.scope == "db" && s.dur() > 10 * MS
        }),
        spans(r#"{ event:name = "exception" }"#, |_, s| s.events.iter().any(|e| e.name == "exception")),
        spans(r#"{ event.exception.type = "Timeout" }"#, |_, s| {
            s.events
                .iter()
                .any(|e| e.attrs.iter().any(|(k, v)| *k == "exception.type" && is(Some(v), "Timeout")))
        }),
        // Both conditions must hold for one event: an exception half-way through a span with
        // an early cache miss does not match.
        spans(r#"{ event:name = "cache.miss" && event:timeSinceStart > 1ms }"#, |_, s| {
            s.events.iter().any(|e| e.name == "cache.miss" && e.offset > MS)
        }),
        spans(r#"{ event:name = "cache.miss" && kind = server }"#, |_, s| {
            s.kind == SERVER && s.events.iter().any(|e| e.name == "cache.miss")
        }),
        spans(&link_query, move |_, s| s.links.iter().any(|(t, _)| hex(t) == link_target)),
        spans("{ link:spanID != nil }", |_, s| !s.links.is_empty()),
        // Attributes of every type, scoped and unscoped.
        spans("{ span.http.response.status_code >= 500 }", move |_, s| {
            http_code(s).is_some_and(|c| c >= 500)
        }),
        spans("{ span.http.response.status_code = 404 }", move |_, s| http_code(s) == Some(404)),
        spans("{ span.http.response.status_code != 200 }", move |_, s| {
            http_code(s).is_some_and(|c| c != 200)
        }),
        spans("{ span.http.response.status_code < 300 && kind = client }", move |_, s| {
            http_code(s).is_some_and(|c| c < 300) && s.kind == CLIENT
        }),
        spans("{ .http.response.status_code = 200.0 }", |_, s| {
            num(s.attr("http.response.status_code")) == Some(200.0)
        }),
        spans(r#"{ span.http.route = "/api/items/{id}" }"#, |_, s| {
            is(s.span_attr("http.route"), "/api/items/{id}")
        }),
        spans(r#"{ span.http.route =~ "/api/.*" }"#, |_, s| {
            text(s.span_attr("http.route")).is_some_and(|r| r.starts_with("/api/"))
        }),
        spans(r#"{ span.http.route !~ "/api/.*" }"#, |_, s| {
            text(s.span_attr("http.route")).is_some_and(|r| !r.starts_with("/api/"))
        }),
        spans(r#"{ span.http.route > "/api/items" }"#, |_, s| {
            text(s.span_attr("http.route")).is_some_and(|r| r > "/api/items")
        }),
        spans(&user_query, move |_, s| is(s.span_attr("user.id"), &user)),
        spans(r#"{ span.user.id =~ "user-1.." }"#, |_, s| {
            text(s.span_attr("user.id")).is_some_and(|u| u.len() == 8 && u.starts_with("user-1"))
        })
        .keys(|_| vec!["user.id"]),
        spans(r#"{ span.user.id != nil && resource.service.name = "auth" }"#, |_, s| {
            s.span_attr("user.id").is_some() && is(s.res_attr("service.name"), "auth")
        }),
        spans("{ span.db.rows > 9000 }", |_, s| int(s.span_attr("db.rows")).is_some_and(|r| r > 9000)),
        spans(r#"{ span.db.system = "redis" && span.db.rows <= 100 }"#, |_, s| {
            is(s.span_attr("db.system"), "redis") && int(s.span_attr("db.rows")).is_some_and(|r| r <= 100)
        }),
        spans("{ span.payload.ratio > 0.9 }", |_, s| {
            num(s.span_attr("payload.ratio")).is_some_and(|r| r > 0.9)
        }),
        spans("{ .payload.ratio <= 0.05 || .payload.ratio >= 0.95 }", |_, s| {
            num(s.attr("payload.ratio")).is_some_and(|r| r <= 0.05 || r >= 0.95)
        }),
        spans("{ span.retry = true }", |_, s| boolean(s.span_attr("retry")) == Some(true)),
        spans("{ span.retry != true }", |_, s| boolean(s.span_attr("retry")) == Some(false)),
        spans("{ .retry }", |_, s| boolean(s.attr("retry")) == Some(true)),
        spans("{ !(span.retry = true) }", |_, s| boolean(s.span_attr("retry")) != Some(true)),
        spans("{ span.code < 10 }", |_, s| int(s.span_attr("code")).is_some_and(|c| c < 10)),
        spans(r#"{ span.code =~ "E1.*" }"#, |_, s| {
            text(s.span_attr("code")).is_some_and(|c| c.starts_with("E1"))
        }),
        spans(r#"{ .code != "E5" }"#, |_, s| text(s.attr("code")).is_some_and(|c| c != "E5")),
        spans("{ span.code = nil && kind = producer }", |_, s| {
            s.span_attr("code").is_none() && s.kind == PRODUCER
        }),
        spans(r#"{ .tier = "web" }"#, |_, s| is(s.attr("tier"), "web")),
        spans(r#"{ resource.tier = "web" }"#, |_, s| is(s.res_attr("tier"), "web")),
        spans(r#"{ span.tier = "edge" }"#, |_, s| is(s.span_attr("tier"), "edge")),
        spans(r#"{ resource.deployment.environment = "prod" }"#, |_, s| {
            is(s.res_attr("deployment.environment"), "prod")
        }),
        spans("{ resource.deployment.environment = nil }", |_, s| {
            s.res_attr("deployment.environment").is_none()
        }),
        spans(r#"{ resource.deployment.environment != "prod" }"#, |_, s| {
            text(s.res_attr("deployment.environment")).is_some_and(|e| e != "prod")
        }),
        spans("{ resource.process.pid > 4000 }", |_, s| {
            int(s.res_attr("process.pid")).is_some_and(|p| p > 4000)
        }),
        spans(r#"{ resource.service.name =~ "c.*" }"#, |_, s| s.service().starts_with('c')),
        spans(r#"{ .service.name = "payment" }"#, |_, s| s.service() == "payment"),
        spans(r#"{ span.messaging.destination = "payments" || span.db.system = "postgres" }"#, |_, s| {
            is(s.span_attr("messaging.destination"), "payments") || is(s.span_attr("db.system"), "postgres")
        }),
        spans("{ (kind = client || kind = server) && !(status = error) && duration > 500ms }", |_, s| {
            (s.kind == CLIENT || s.kind == SERVER) && s.code() != ERROR && s.dur() > 500 * MS
        }),
        // Spanset operators.
        tql("{ status = error } && { kind = producer }", move |t| {
            one(and(&t.filter(err), &t.filter(|s| s.kind == PRODUCER)))
        }),
        tql(r#"{ rootServiceName = "frontend" } && { span.http.response.status_code = 503 }"#, move |t| {
            let root = t.root().is_some_and(|r| r.service() == "frontend");
            one(and(&t.filter(|_| root), &t.filter(|s| http_code(s) == Some(503))))
        }),
        tql(r#"{ span.db.system = "redis" } || { event:name = "cache.miss" }"#, |t| {
            one(union(
                &t.filter(|s| is(s.span_attr("db.system"), "redis")),
                &t.filter(|s| s.events.iter().any(|e| e.name == "cache.miss")),
            ))
        }),
        tql("{ kind = server } > { kind = client }", |t| {
            one(t.rel(Rel::Child, &t.filter(|s| s.kind == SERVER), &t.filter(|s| s.kind == CLIENT)))
        }),
        tql(r#"{ resource.service.name = "frontend" } >> { status = error }"#, move |t| {
            one(t.rel(Rel::Desc, &t.filter(|s| s.service() == "frontend"), &t.filter(err)))
        }),
        tql("{ status = error } < { }", move |t| one(t.rel(Rel::Parent, &t.filter(err), &t.all()))),
        tql("{ status = error } << { kind = server }", move |t| {
            one(t.rel(Rel::Anc, &t.filter(err), &t.filter(|s| s.kind == SERVER)))
        }),
        tql(r#"{ name = "SELECT items" } ~ { }"#, |t| {
            one(t.rel(Rel::Sib, &t.filter(|s| s.name == "SELECT items"), &t.all()))
        }),
        tql("{ kind = client } !> { kind = server }", |t| {
            one(t.not(Rel::Child, &t.filter(|s| s.kind == CLIENT), &t.filter(|s| s.kind == SERVER)))
        }),
        tql(r#"{ resource.service.name = "payment" } !>> { status = error }"#, move |t| {
            one(t.not(Rel::Desc, &t.filter(|s| s.service() == "payment"), &t.filter(err)))
        }),
        tql("{ status = error } !< { kind = server }", move |t| {
            one(t.not(Rel::Parent, &t.filter(err), &t.filter(|s| s.kind == SERVER)))
        }),
        tql("{ status = error } !<< { kind = server }", move |t| {
            one(t.not(Rel::Anc, &t.filter(err), &t.filter(|s| s.kind == SERVER)))
        }),
        tql("{ } !~ { kind = internal }", |t| {
            one(t.not(Rel::Sib, &t.all(), &t.filter(|s| s.kind == INTERNAL)))
        }),
        tql("{ kind = server } &> { status = error }", move |t| {
            one(t.both(Rel::Child, &t.filter(|s| s.kind == SERVER), &t.filter(err)))
        }),
        tql(r#"{ status = error } &~ { name = "SELECT items" }"#, move |t| {
            one(t.both(Rel::Sib, &t.filter(err), &t.filter(|s| s.name == "SELECT items")))
        }),
        tql("{ status = error } &<< { kind = server }", move |t| {
            one(t.both(Rel::Anc, &t.filter(err), &t.filter(|s| s.kind == SERVER)))
        }),
        tql("({ kind = server } > { kind = client }) > { kind = server }", |t| {
            let clients = t.rel(Rel::Child, &t.filter(|s| s.kind == SERVER), &t.filter(|s| s.kind == CLIENT));
            one(t.rel(Rel::Child, &clients, &t.filter(|s| s.kind == SERVER)))
        }),
        tql(
            "({ status = error } || { span.http.response.status_code >= 500 }) && { kind = consumer }",
            move |t| {
                let bad = union(&t.filter(err), &t.filter(|s| http_code(s).is_some_and(|c| c >= 500)));
                one(and(&bad, &t.filter(|s| s.kind == CONSUMER)))
            },
        ),
        // Pipelines: aggregates, by(), coalesce(), select().
        tql("{ } | count() > 150", |t| one(if t.spans.len() > 150 { t.all() } else { Set::new() })),
        tql("{ status = error } | count() >= 3", move |t| {
            let set = t.filter(err);
            one(if set.len() >= 3 { set } else { Set::new() })
        }),
        tql("{ kind = server } | avg(duration) > 500ms", |t| {
            let set = t.filter(|s| s.kind == SERVER);
            let sum: u64 = set.iter().map(|&i| t.spans[i].dur()).sum();
            one(if !set.is_empty() && sum as f64 / set.len() as f64 > (500 * MS) as f64 {
                set
            } else {
                Set::new()
            })
        }),
        tql("{ kind = client } | min(duration) > 10ms", |t| {
            let set = t.filter(|s| s.kind == CLIENT);
            let min = set.iter().map(|&i| t.spans[i].dur()).min();
            one(if min.is_some_and(|m| m > 10 * MS) { set } else { Set::new() })
        }),
        tql("{ } | max(duration) >= 6s", |t| {
            one(if t.spans.iter().any(|s| s.dur() >= 6 * SEC) { t.all() } else { Set::new() })
        }),
        tql("{ span.db.rows != nil } | sum(span.db.rows) > 30000", |t| {
            let set = t.filter(|s| s.span_attr("db.rows").is_some());
            let sum: i64 = set.iter().filter_map(|&i| int(t.spans[i].span_attr("db.rows"))).sum();
            one(if sum > 30000 { set } else { Set::new() })
        }),
        tql("{ } | avg(span.http.response.status_code) > 250", move |t| {
            let codes: Vec<i64> = t.spans.iter().filter_map(http_code).collect();
            let pass = !codes.is_empty() && codes.iter().sum::<i64>() as f64 / codes.len() as f64 > 250.0;
            one(if pass { t.all() } else { Set::new() })
        }),
        tql("{ status = error } | by(resource.service.name)", move |t| {
            group_by(t, &t.filter(err), |s| Some(s.service().to_string()))
        }),
        tql("{ } | by(resource.service.name) | count() > 25", |t| {
            let groups = group_by(t, &t.all(), |s| Some(s.service().to_string()));
            groups.into_iter().filter(|g| g.len() > 25).collect()
        }),
        tql("{ } | by(resource.service.name) | { status = error }", move |t| {
            group_by(t, &t.filter(err), |s| Some(s.service().to_string()))
        }),
        tql("{ kind = client } | by(span.db.system)", |t| {
            group_by(t, &t.filter(|s| s.kind == CLIENT), |s| {
                text(s.span_attr("db.system")).map(str::to_string)
            })
        }),
        tql("{ } | by(kind) | count() > 10 | coalesce()", |t| {
            let groups = group_by(t, &t.all(), |s| Some(s.kind.to_string()));
            one(groups.into_iter().filter(|g| g.len() > 10).flatten().collect())
        }),
        tql("({ kind = server } | count() > 3) && { status = error }", move |t| {
            let servers = t.filter(|s| s.kind == SERVER);
            let servers = if servers.len() > 3 { servers } else { Set::new() };
            one(and(&servers, &t.filter(err)))
        }),
        spans("{ kind = server } | { duration > 100ms }", |_, s| s.kind == SERVER && s.dur() > 100 * MS),
        spans(
            "{ status = error } | select(span.http.route, resource.deployment.environment)",
            move |_, s| err(s),
        )
        .keys(|s| {
            let mut keys = vec!["status"];
            if s.span_attr("http.route").is_some() {
                keys.push("http.route");
            }
            if s.res_attr("deployment.environment").is_some() {
                keys.push("deployment.environment");
            }
            keys
        }),
    ];

    // The older search parameters, turned into TraceQL by the API.
    let min_max = |min: u64, max: u64| move |t: &Tr| (min..=max).contains(&t.duration());
    c.extend([
        legacy(&[("tags", "service.name=payment")], |t| one(t.filter(|s| s.service() == "payment"))),
        legacy(&[("tags", "status=error")], move |t| one(t.filter(err))),
        legacy(&[("tags", "http.response.status_code=503")], move |t| {
            one(t.filter(|s| http_code(s) == Some(503)))
        }),
        legacy(&[("tags", r#"name="POST /api/pay""#)], |t| one(t.filter(|s| s.name == "POST /api/pay"))),
        legacy(&[("minDuration", "2s")], move |t| {
            one(if min_max(2 * SEC, u64::MAX)(t) { t.all() } else { Set::new() })
        }),
        legacy(&[("tags", "service.name=frontend"), ("maxDuration", "500us")], move |t| {
            let d = if min_max(0, 500 * US)(t) { t.all() } else { Set::new() };
            one(and(&t.filter(|s| s.service() == "frontend"), &d))
        }),
        legacy(
            &[
                ("tags", "service.name=checkout http.request.method=POST"),
                ("minDuration", "1ms"),
                ("maxDuration", "3s"),
            ],
            move |t| {
                let d = if min_max(MS, 3 * SEC)(t) { t.all() } else { Set::new() };
                let f = t.filter(|s| s.service() == "checkout" && is(s.attr("http.request.method"), "POST"));
                one(and(&f, &d))
            },
        ),
    ]);
    c
}

// ---------------------------------------------------------------------------------------------
// Answers and their comparison.

/// One trace of a search answer, normalised for comparison.
#[derive(Debug, PartialEq)]
struct Answer {
    root_service: String,
    root_name: String,
    start: String,
    duration_ms: u64,
    /// Each spanset: its span ids (with their reported attribute names, when checked), sorted,
    /// and its `matched` count; the spansets sorted.
    spansets: Vec<(Vec<String>, u64)>,
}

type Answers = BTreeMap<String, Answer>;

fn span_label(id: &str, keys: Option<Vec<&str>>) -> String {
    match keys {
        None => id.to_string(),
        Some(mut keys) => {
            keys.sort_unstable();
            format!("{id}{keys:?}")
        }
    }
}

fn expected(case: &Case, traces: &[Tr]) -> Answers {
    let mut out = Answers::new();
    for t in traces {
        let sets: Vec<Set> = (case.expect)(t).into_iter().filter(|s| !s.is_empty()).collect();
        if sets.is_empty() {
            continue;
        }
        let mut spansets: Vec<(Vec<String>, u64)> = sets
            .iter()
            .map(|set| {
                let mut ids: Vec<String> = set
                    .iter()
                    .map(|&i| {
                        let sp = &t.spans[i];
                        span_label(&hex(&sp.id), case.keys.as_ref().map(|k| k(sp)))
                    })
                    .collect();
                ids.sort();
                (ids, set.len() as u64)
            })
            .collect();
        spansets.sort();
        let root = t.root();
        out.insert(
            t.hex(),
            Answer {
                root_service: root.map_or("<root span not yet received>", |r| r.service()).to_string(),
                root_name: root.map_or("", |r| r.name.as_str()).to_string(),
                start: t.first().to_string(),
                duration_ms: t.duration() / MS,
                spansets,
            },
        );
    }
    out
}

fn parse_answers(body: &Value, with_keys: bool) -> Result<Answers, String> {
    let traces = body["traces"].as_array().ok_or_else(|| format!("no traces array in {body}"))?;
    let mut out = Answers::new();
    for t in traces {
        let text = |key: &str| t[key].as_str().map(str::to_string).ok_or_else(|| format!("no {key} in {t}"));
        let mut spansets: Vec<(Vec<String>, u64)> = t["spanSets"]
            .as_array()
            .ok_or_else(|| format!("no spanSets in {t}"))?
            .iter()
            .map(|set| {
                let mut ids: Vec<String> = set["spans"]
                    .as_array()
                    .map(|spans| {
                        spans
                            .iter()
                            .map(|sp| {
                                let keys = with_keys.then(|| {
                                    sp["attributes"]
                                        .as_array()
                                        .map(|a| a.iter().filter_map(|kv| kv["key"].as_str()).collect())
                                        .unwrap_or_default()
                                });
                                span_label(sp["spanID"].as_str().unwrap_or("?"), keys)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                (ids, set["matched"].as_u64().unwrap_or(u64::MAX))
            })
            .collect();
        spansets.sort();
        let previous = out.insert(
            text("traceID")?,
            Answer {
                root_service: text("rootServiceName")?,
                root_name: text("rootTraceName")?,
                start: text("startTimeUnixNano")?,
                duration_ms: t["durationMs"].as_u64().ok_or_else(|| format!("no durationMs in {t}"))?,
                spansets,
            },
        );
        if previous.is_some() {
            return Err(format!("trace {} answered twice", t["traceID"]));
        }
    }
    Ok(out)
}

fn describe(t: Option<&Tr>) -> String {
    t.map_or("(not generated)".to_string(), |t| {
        format!(
            "{} spans, long={} rootless={} split={} duplicated={}",
            t.spans.len(),
            t.long,
            t.rootless,
            t.split,
            t.duplicated
        )
    })
}

fn diff(want: &Answers, got: &Answers, traces: &HashMap<String, &Tr>) -> Option<String> {
    if want == got {
        return None;
    }
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let mut out = format!(
        "{} traces expected, {} answered: {} missing, {} unexpected",
        want.len(),
        got.len(),
        missing.len(),
        extra.len()
    );
    let first = want.iter().find(|(k, w)| got.get(*k).is_some_and(|g| g != *w)).map(|(k, _)| k);
    for id in first.into_iter().chain(missing.first().copied()).chain(extra.first().copied()) {
        out += &format!(
            "\n  trace {id} ({}):\n    want {:?}\n    got  {:?}",
            describe(traces.get(id).copied()),
            want.get(id),
            got.get(id)
        );
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Talking to Pharos.

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn send(client: &reqwest::Client, pharos: &Pharos, requests: &[ExportTraceServiceRequest]) {
    for request in requests {
        let resp = client
            .post(pharos.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        let status = resp.status();
        assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    }
}

async fn wait_for_spans(pharos: &Pharos, want: usize) {
    let got = pharos.wait_for_metric(TENANT_SPANS, want as f64).await;
    assert_eq!(got, want as f64, "spans stored:\n{}", pharos.log());
}

/// Waits until blocks have been flushed and no flush happened for `quiet`.
async fn wait_flushes_settled(pharos: &Pharos, quiet: Duration) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = pharos.metric(BLOCKS_FLUSHED).await;
    let mut since = Instant::now();
    loop {
        assert!(Instant::now() < deadline, "trace flushes did not settle:\n{}", pharos.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = pharos.metric(BLOCKS_FLUSHED).await;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if last > 0.0 && since.elapsed() >= quiet {
            return last;
        }
    }
}

/// Compactions so far and the blocks they removed (inputs minus the one written), from the log.
fn compactions(log: &str) -> (usize, usize) {
    let mut rounds = 0;
    let mut removed = 0;
    for line in log.lines().filter(|l| l.contains("trace blocks compacted")) {
        rounds += 1;
        let inputs = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .find_map(|field| field.trim_matches('"').strip_prefix("inputs").map(str::to_string))
            .and_then(|rest| rest.trim_start_matches(['=', ':', '"']).parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no inputs in compaction line: {line}"));
        removed += inputs - 1;
    }
    (rounds, removed)
}

async fn blocks_now(pharos: &Pharos) -> (usize, usize) {
    // The log first, then the counter; saturating, as a block is counted just after it is
    // published, when the compactor may already have taken it.
    let (rounds, removed) = compactions(&pharos.log());
    let flushed = pharos.metric(BLOCKS_FLUSHED).await as usize;
    (flushed.saturating_sub(removed), rounds)
}

async fn search(client: &reqwest::Client, pharos: &Pharos, case: &Case) -> Result<Value, String> {
    let now = now_ns() / SEC;
    let mut params = case.params.clone();
    params.push(("limit", "10000".into()));
    params.push(("spss", "100000".into()));
    params.push(("start", (now - 2 * 3600).to_string()));
    params.push(("end", (now + 3600).to_string()));
    let resp = client
        .get(format!("http://{}/api/search", pharos.api))
        .query(&params)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Asks one query; a description of the difference if the answer is not `want`.
async fn check_case(
    client: &reqwest::Client,
    pharos: &Pharos,
    case: &Case,
    want: &Answers,
    traces: &HashMap<String, &Tr>,
) -> Option<String> {
    let got = search(client, pharos, case).await.and_then(|body| parse_answers(&body, case.keys.is_some()));
    match got.map(|got| diff(want, &got, traces)) {
        Ok(None) => None,
        Ok(Some(d)) => Some(format!("{}\n  {d}", case.label)),
        Err(e) => Some(format!("{}\n  {e}", case.label)),
    }
}

/// A double as 12 significant digits: JSON parsing here may be one ulp off.
fn round_doubles(attributes: &mut [KeyValue]) {
    for kv in attributes {
        if let Some(AnyValue { value: Some(any_value::Value::DoubleValue(x)) }) = &mut kv.value {
            *x = format!("{x:.11e}").parse().expect("a formatted double parses");
        }
    }
}

/// Reads a trace by id, as JSON (`batches`) or as protobuf, and compares it with the spans
/// generated (each once): resource, scope and every span field.
async fn check_by_id(client: &reqwest::Client, pharos: &Pharos, t: &Tr, json: bool) -> Result<(), String> {
    let url = format!("http://{}/api/traces/{}", pharos.api, t.hex());
    let accept = if json { "application/json" } else { "application/protobuf" };
    let resp = client.get(url).header("accept", accept).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    let what =
        format!("trace {} ({}, {})", t.hex(), describe(Some(t)), if json { "JSON" } else { "protobuf" });
    if status != 200 {
        return Err(format!("{what}: status {status}: {}", String::from_utf8_lossy(&body)));
    }
    let batches: Vec<ResourceSpans> = if json {
        let body: Value = serde_json::from_slice(&body).map_err(|e| format!("{what}: {e}"))?;
        serde_json::from_value(body["batches"].clone())
            .map_err(|e| format!("{what}: batches: {e}: {body}"))?
    } else {
        opentelemetry_proto::tonic::trace::v1::TracesData::decode(body)
            .map_err(|e| format!("{what}: {e}"))?
            .resource_spans
    };
    type Entry = (Vec<KeyValue>, String, Span);
    let normalise = |(mut resource, scope, mut span): Entry| {
        if json {
            round_doubles(&mut resource);
            round_doubles(&mut span.attributes);
            span.events.iter_mut().for_each(|e| round_doubles(&mut e.attributes));
            span.links.iter_mut().for_each(|l| round_doubles(&mut l.attributes));
        }
        (resource, scope, span)
    };
    let mut got: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    let mut count = 0;
    for rs in batches {
        let resource = rs.resource.unwrap_or_default().attributes;
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default().name;
            for span in ss.spans {
                count += 1;
                got.insert(span.span_id.clone(), normalise((resource.clone(), scope.clone(), span)));
            }
        }
    }
    let want: BTreeMap<Vec<u8>, Entry> = t
        .spans
        .iter()
        .map(|sp| {
            let entry = (kvs(&RESOURCES[sp.res].attrs), sp.scope.to_string(), sp.proto(&t.id));
            (sp.id.to_vec(), normalise(entry))
        })
        .collect();
    if count != want.len() {
        return Err(format!("{what}: {count} spans answered, {} sent", want.len()));
    }
    if let Some((id, w)) = want.iter().find(|(id, w)| got.get(*id) != Some(*w)) {
        return Err(format!("{what}, span {}:\n    want {w:?}\n    got  {:?}", hex(id), got.get(id)));
    }
    Ok(())
}

async fn check_traces_by_id(client: &reqwest::Client, pharos: &Pharos, sample: &[&Tr]) -> Vec<String> {
    let mut failures = Vec::new();
    for t in sample {
        for json in [true, false] {
            if let Err(e) = check_by_id(client, pharos, t, json).await {
                failures.push(e);
            }
        }
    }
    failures
}

/// Queries asked after each slice of the second half, while that slice is in the head.
const QUERIES_PER_SLICE: usize = 5;

#[tokio::test(flavor = "multi_thread")]
async fn trace_search_agrees_with_brute_force_across_head_blocks_and_compaction() {
    let started = Instant::now();
    let traces = generate(now_ns());
    let by_hex: HashMap<String, &Tr> = traces.iter().map(|t| (t.hex(), t)).collect();
    let sent_in = |t: &Tr, half: u8| t.spans.iter().filter(|s| s.half == half || s.half == 3).count();
    let first: usize = traces.iter().map(|t| sent_in(t, 1)).sum();
    let second: usize = traces.iter().map(|t| sent_in(t, 2)).sum();
    let cases = cases(&traces);
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let want: Vec<Answers> = cases.iter().map(|c| expected(c, &traces)).collect();
    eprintln!(
        "generated {} traces, {} spans ({} long, {} rootless, {} split, {} with spans sent twice; {} errors); \
         {first} spans in the first half, {second} in the second; {} queries",
        traces.len(),
        traces.iter().map(|t| t.spans.len()).sum::<usize>(),
        traces.iter().filter(|t| t.long).count(),
        traces.iter().filter(|t| t.rootless).count(),
        traces.iter().filter(|t| t.split).count(),
        traces.iter().filter(|t| t.duplicated).count(),
        traces.iter().flat_map(|t| &t.spans).filter(|s| s.code() == ERROR).count(),
        cases.len(),
    );
    // A query that matches nothing compares nothing.
    for (case, want) in cases.iter().zip(&want) {
        assert!(!want.is_empty(), "the generated data gives no match for {}", case.label);
    }
    let sample: Vec<&Tr> = {
        let pick =
            |f: &dyn Fn(&Tr) -> bool, n: usize| traces.iter().filter(|t| f(t)).take(n).collect::<Vec<_>>();
        let mut s = pick(&|t| t.split, 5);
        s.extend(pick(&|t| t.duplicated, 3));
        s.extend(pick(&|t| t.rootless, 2));
        s.extend(pick(&|t| t.long, 2));
        s.extend(traces.iter().step_by(277).take(5));
        s
    };

    let dir = tempfile::tempdir().unwrap();
    let pharos = Pharos::start(dir.path(), &["traces.flush_interval=1s", "traces.compaction_interval=3s"]);
    let client = reqwest::Client::new();
    let mut failures = Vec::new();

    // First half: stored, then flushed into blocks.
    let all: Vec<&Tr> = traces.iter().collect();
    send(&client, &pharos, &requests(&all, 1, 4)).await;
    wait_for_spans(&pharos, first).await;
    wait_flushes_settled(&pharos, Duration::from_millis(2500)).await;
    let (blocks, compacted) = blocks_now(&pharos).await;
    eprintln!(
        "first half in blocks: {blocks} blocks after {compacted} compactions ({:.1}s)",
        started.elapsed().as_secs_f64()
    );

    // Second half, in slices: after each slice is stored (searchable) a few queries are asked
    // at once, answered from the head (that slice, being flushed within a second) and blocks
    // (being flushed and compacted), against the brute force over the spans sent so far; so
    // some traces are partial (split ones without their second part, roots not yet sent).
    // Categories are interleaved so that every kind of query meets every state.
    let mut order: Vec<usize> = (0..cases.len()).collect();
    order.sort_by_key(|&i| (i % 9, i));
    let order: Vec<&[usize]> = order.chunks(QUERIES_PER_SLICE).collect();
    let pending: Vec<usize> = (0..traces.len()).filter(|&i| sent_in(&traces[i], 2) > 0).collect();
    let mut slice_of: Vec<Option<usize>> = vec![None; traces.len()];
    let slices: Vec<&[usize]> = pending.chunks(pending.len().div_ceil(order.len())).collect();
    for (k, slice) in slices.iter().enumerate() {
        slice.iter().for_each(|&i| slice_of[i] = Some(k));
    }
    let round1 = Instant::now();
    let (mut stored, mut from_head, mut asked) = (first, 0, 0);
    for (k, slice) in slices.iter().enumerate() {
        let batch: Vec<&Tr> = slice.iter().map(|&i| &traces[i]).collect();
        send(&client, &pharos, &requests(&batch, 2, 1)).await;
        stored += batch.iter().map(|t| sent_in(t, 2)).sum::<usize>();
        wait_for_spans(&pharos, stored).await;
        let flushed = pharos.metric(BLOCKS_FLUSHED).await;
        let state: Vec<Tr> = (0..traces.len())
            .filter_map(|i| traces[i].visible(|s| s.half != 2 || slice_of[i].is_some_and(|g| g <= k)))
            .collect();
        let state_by_hex: HashMap<String, &Tr> = state.iter().map(|t| (t.hex(), t)).collect();
        for &c in order.get(k).copied().unwrap_or_default() {
            let want = expected(&cases[c], &state);
            if let Some(f) = check_case(&client, &pharos, &cases[c], &want, &state_by_hex).await {
                failures.push(format!("[head and blocks, after slice {} of {}] {f}", k + 1, slices.len()));
            }
            asked += 1;
            if pharos.metric(BLOCKS_FLUSHED).await == flushed {
                from_head += 1;
            }
        }
    }
    assert_eq!(stored, first + second);
    assert_eq!(asked, cases.len());
    let (blocks, compacted) = blocks_now(&pharos).await;
    eprintln!(
        "round 1: {asked} queries over {} slices in {:.1}s, {from_head} answered before their slice was \
         flushed; now {blocks} blocks after {compacted} compactions",
        slices.len(),
        round1.elapsed().as_secs_f64()
    );
    failures.extend(check_traces_by_id(&client, &pharos, &sample).await);

    // Wait until compaction has merged every block into one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        wait_flushes_settled(&pharos, Duration::from_millis(1500)).await;
        let (blocks, _) = blocks_now(&pharos).await;
        if blocks == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "compaction left {blocks} blocks:\n{}", pharos.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, compacted) = blocks_now(&pharos).await;
    eprintln!(
        "compacted into one block after {compacted} compactions ({:.1}s)",
        started.elapsed().as_secs_f64()
    );
    let round2 = Instant::now();
    for (case, want) in cases.iter().zip(&want) {
        if let Some(f) = check_case(&client, &pharos, case, want, &by_hex).await {
            failures.push(format!("[compacted] {f}"));
        }
    }
    eprintln!("round 2: {} queries in {:.1}s", cases.len(), round2.elapsed().as_secs_f64());
    failures.extend(check_traces_by_id(&client, &pharos, &sample).await);

    eprintln!("done in {:.1}s, {} differences", started.elapsed().as_secs_f64(), failures.len());
    if !failures.is_empty() {
        panic!(
            "{} of {} checks differ from the brute-force answers:\n{}",
            failures.len(),
            2 * (cases.len() + 2 * sample.len()),
            failures.iter().take(8).map(String::as_str).collect::<Vec<_>>().join("\n")
        );
    }
}

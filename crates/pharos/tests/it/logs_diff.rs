//! Differential oracle for LogQL: a seeded generated dataset goes into `pharos serve` over the
//! Loki push API, and every LogQL query (log and metric) is answered both by Pharos's Loki API
//! and by a brute-force evaluator here, written from Loki's documented semantics and sharing no
//! code with Pharos. The answers must be identical: for log queries the exact list of
//! (labels after the pipeline, time, line) in either direction under a limit; for metric
//! queries every series' labels and every point (floats to 1e-9 relative).
//!
//! The dataset: twenty streams (`app`, `env`, `pod`), about 2,000 entries over twenty minutes
//! ending a few minutes ago, with unique timestamps (a few on whole seconds, so step windows
//! `(t - range, t]` meet entries on their edges). JSON apps write JSON lines (a few of them
//! malformed), logfmt apps write logfmt lines, one app writes plain text; a few lines carry a
//! `trace_id=<hex>`. The older half is pushed and flushed into blocks, the newer half stays in
//! the head; the queries run, pharos is restarted on the same data dir, and they run again.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};

use crate::harness::{Pharos, pipeline_items};

const SEED: u64 = 0x51f1_5eed_1096_0c71;
const SEC: i64 = 1_000_000_000;
const MIN: i64 = 60 * SEC;
const ENTRIES: usize = 2000;

/// Queries where Pharos is known to differ from Loki's documented semantics, with why; these
/// alone are skipped.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

type Labels = BTreeMap<String, String>;

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

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Logfmt,
    Plain,
}

struct Stream {
    labels: Labels,
    format: Format,
}

struct Entry {
    stream: usize,
    ts: i64,
    line: String,
}

struct Data {
    /// A whole minute; entries lie in `[t0, t0 + 20m)`.
    t0: i64,
    streams: Vec<Stream>,
    /// In time order.
    entries: Vec<Entry>,
}

const APPS: &[(&str, Format)] = &[
    ("api", Format::Json),
    ("checkout", Format::Json),
    ("web", Format::Logfmt),
    ("worker", Format::Logfmt),
    ("db", Format::Plain),
];

const MSGS: &[&str] = &[
    "request served",
    "request failed",
    "upstream timeout",
    "cache miss",
    "user logged in",
    "payment declined",
    "retrying after timed out call",
];

fn hex32(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}", rng.next(), rng.next())
}

fn line_for(rng: &mut Rng, format: Format, k: usize) -> String {
    let level = rng.pick(&["debug", "info", "info", "info", "warn", "error"]);
    let msg = rng.pick(MSGS);
    let status = rng.pick(&["200", "200", "201", "204", "404", "500", "503"]);
    match format {
        Format::Json => {
            if k.is_multiple_of(97) {
                // Malformed: cut off inside a string.
                return format!(r#"{{"level":"{level}","msg":"{msg} trunc"#);
            }
            let latency = 1 + rng.below(400);
            if k.is_multiple_of(5) {
                format!(
                    r#"{{"level":"{level}","msg":"{msg}","status":{status},"latency_ms":{latency},"http":{{"method":"{}","path":"/v1/{}"}}}}"#,
                    rng.pick(&["GET", "POST", "PUT"]),
                    rng.pick(&["users", "orders", "cart"]),
                )
            } else {
                format!(r#"{{"level":"{level}","msg":"{msg}","status":{status},"latency_ms":{latency}}}"#)
            }
        }
        Format::Logfmt => {
            let took = match rng.below(10) {
                0 => format!("{}.{}s", 1 + rng.below(3), rng.below(10)),
                1..=3 => format!("{}ms", 50 + rng.below(400)),
                _ => format!("{}ms", 1 + rng.below(60)),
            };
            let mut line = format!(r#"level={level} msg="{msg}" status={status} took={took}"#);
            if k.is_multiple_of(13) {
                line.push_str(&format!(" trace_id={}", hex32(rng)));
            }
            line
        }
        Format::Plain => match rng.below(5) {
            0 => format!("connection reset by peer {}", rng.below(1000)),
            1 => format!("slow query took {} seconds on table orders", 1 + rng.below(9)),
            2 => format!("processing job trace_id={} done", hex32(rng)),
            3 => format!("ERROR deadlock detected, retry {}", rng.below(5)),
            _ => format!("checkpoint complete: wrote {} buffers", rng.below(5000)),
        },
    }
}

impl Data {
    fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
        let t0 = (now - 24 * MIN) / MIN * MIN;
        let mut rng = Rng(SEED);
        let mut streams = Vec::new();
        for (i, (app, format)) in APPS.iter().enumerate() {
            for j in 0..4 {
                let env = if (i + j) % 3 == 0 { "staging" } else { "prod" };
                let labels = Labels::from([
                    ("app".to_string(), app.to_string()),
                    ("env".to_string(), env.to_string()),
                    ("pod".to_string(), format!("{app}-{j}")),
                ]);
                streams.push(Stream { labels, format: *format });
            }
        }
        let mut entries = Vec::new();
        let slot = 20 * MIN / ENTRIES as i64;
        for k in 0..ENTRIES {
            let base = t0 + k as i64 * slot;
            // Most entries at odd microseconds; every 40th on a whole 10 seconds.
            let ts = if k.is_multiple_of(40) {
                (base + 10 * SEC - 1) / (10 * SEC) * (10 * SEC)
            } else {
                base + (rng.below((slot / 1000 - 2) as u64) as i64 | 1) * 1000 + 1
            };
            let stream = rng.below(streams.len() as u64) as usize;
            let line = line_for(&mut rng, streams[stream].format, k);
            entries.push(Entry { stream, ts, line });
        }
        entries.sort_by_key(|e| e.ts);
        for w in entries.windows(2) {
            assert!(w[0].ts < w[1].ts, "unique timestamps");
        }
        Self { t0, streams, entries }
    }

    /// Push bodies for `entries[range]`, a few streams per request.
    fn push_bodies(&self, range: std::ops::Range<usize>) -> Vec<Value> {
        let mut by: BTreeMap<usize, Vec<Value>> = BTreeMap::new();
        for e in &self.entries[range] {
            by.entry(e.stream).or_default().push(json!([e.ts.to_string(), e.line]));
        }
        let streams: Vec<Value> = by
            .into_iter()
            .map(|(s, values)| json!({ "stream": self.streams[s].labels, "values": values }))
            .collect();
        streams.chunks(3).map(|c| json!({ "streams": c })).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The Loki client.

struct Loki {
    base: String,
    client: reqwest::Client,
}

impl Loki {
    fn new(pharos: &Pharos) -> Self {
        Self { base: format!("http://{}", pharos.api), client: reqwest::Client::new() }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> (u16, String) {
        let resp = self.client.get(format!("{}{path}", self.base)).query(query).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn push(&self, body: &Value) {
        let resp = self
            .client
            .post(format!("{}/loki/api/v1/push", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 204, "{}", resp.text().await.unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: a log pipeline is a list of stages over one row.

struct Row {
    labels: Labels,
    line: String,
}

type Stage = Arc<dyn Fn(&mut Row) -> bool + Send + Sync>;

/// A stream selector and the stages after it.
#[derive(Clone)]
struct Pipe {
    selector: Arc<dyn Fn(&Labels) -> bool + Send + Sync>,
    stages: Vec<Stage>,
}

fn l<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels.get(name).map(String::as_str).unwrap_or("")
}

/// `{...}`: a selector over the stream labels.
fn sel(f: impl Fn(&Labels) -> bool + Send + Sync + 'static) -> Pipe {
    Pipe { selector: Arc::new(f), stages: Vec::new() }
}

/// The numeric value of a label, if it parses as a float.
fn num(labels: &Labels, name: &str) -> Option<f64> {
    labels.get(name)?.parse().ok()
}

/// A Go duration (`12ms`, `1.5s`) in seconds.
fn duration(s: &str) -> Option<f64> {
    let (n, unit) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    Some(n.parse::<f64>().ok()? * unit)
}

fn flatten(prefix: &str, v: &Value, out: &mut Labels) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}_{k}") };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Number(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        Value::Bool(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        Value::Null | Value::Array(_) => {}
    }
}

/// `key=value key="quoted value"`: the generated logfmt lines have no escapes.
fn logfmt(line: &str) -> Labels {
    let mut out = Labels::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').unwrap();
        let key = &rest[..eq];
        rest = &rest[eq + 1..];
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let end = q.find('"').unwrap();
            value = &q[..end];
            rest = &q[end + 1..];
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            value = &rest[..end];
            rest = &rest[end..];
        }
        out.insert(key.to_string(), value.to_string());
        rest = rest.trim_start();
    }
    out
}

impl Pipe {
    fn stage(mut self, f: impl Fn(&mut Row) -> bool + Send + Sync + 'static) -> Self {
        self.stages.push(Arc::new(f));
        self
    }

    /// `|= "s"`
    fn has(self, s: &'static str) -> Self {
        self.stage(move |r| r.line.contains(s))
    }

    /// `!= "s"`
    fn lacks(self, s: &'static str) -> Self {
        self.stage(move |r| !r.line.contains(s))
    }

    /// `|~` / `!~`, written out by hand.
    fn line(self, f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.stage(move |r| f(&r.line))
    }

    /// `| json`: every field, nested objects joined with `_`; a line that is no JSON object
    /// gets `__error__`.
    fn json(self) -> Self {
        self.stage(|r| {
            match serde_json::from_str::<Value>(&r.line) {
                Ok(v @ Value::Object(_)) => {
                    let mut out = Labels::new();
                    flatten("", &v, &mut out);
                    for (k, v) in out {
                        r.labels.entry(k).or_insert(v);
                    }
                }
                _ => {
                    r.labels.insert("__error__".into(), "JSONParserErr".into());
                }
            }
            true
        })
    }

    /// `| logfmt` (only ever applied to logfmt lines).
    fn logfmt(self) -> Self {
        self.stage(|r| {
            for (k, v) in logfmt(&r.line) {
                r.labels.entry(k).or_insert(v);
            }
            true
        })
    }

    /// `| __error__=""`
    fn no_error(self) -> Self {
        self.stage(|r| !r.labels.contains_key("__error__"))
    }

    /// A label filter.
    fn filter(self, f: impl Fn(&Labels) -> bool + Send + Sync + 'static) -> Self {
        self.stage(move |r| f(&r.labels))
    }

    /// `| line_format`
    fn format(self, f: impl Fn(&Labels) -> String + Send + Sync + 'static) -> Self {
        self.stage(move |r| {
            r.line = f(&r.labels);
            true
        })
    }

    /// `| keep a, b`
    fn keep(self, names: &'static [&'static str]) -> Self {
        self.stage(move |r| {
            r.labels.retain(|k, _| names.contains(&k.as_str()));
            true
        })
    }

    /// `| drop a, b`
    fn drop_labels(self, names: &'static [&'static str]) -> Self {
        self.stage(move |r| {
            r.labels.retain(|k, _| !names.contains(&k.as_str()));
            true
        })
    }

    /// `| label_format new=old` (a rename).
    fn rename(self, new: &'static str, old: &'static str) -> Self {
        self.stage(move |r| {
            if let Some(v) = r.labels.remove(old) {
                r.labels.insert(new.to_string(), v);
            }
            true
        })
    }

    fn run(&self, data: &Data, e: &Entry) -> Option<Row> {
        let labels = &data.streams[e.stream].labels;
        if !(self.selector)(labels) {
            return None;
        }
        let mut row = Row { labels: labels.clone(), line: e.line.clone() };
        for s in &self.stages {
            if !s(&mut row) {
                return None;
            }
        }
        Some(row)
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle for metric queries: evaluated at one time `t` into a vector.

#[derive(Clone, Copy)]
enum RangeFn {
    Count,
    Rate,
    Bytes,
    BytesRate,
    Sum,
    Max,
    Min,
    Avg,
    /// `rate` over an unwrapped range: the sum per second.
    SumRate,
    First,
    Last,
    /// Population standard deviation.
    Stddev,
}

#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Count,
    Max,
    Min,
    Avg,
}

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    /// `>`: keeps the left side where true.
    Gt,
    /// `<`
    Lt,
    /// `> bool`: 1 or 0.
    GtBool,
}

#[derive(Clone)]
enum M {
    Range {
        f: RangeFn,
        pipe: Pipe,
        /// `| unwrap x` (false) or `| unwrap duration(x)` (true).
        unwrap: Option<(&'static str, bool)>,
        range: i64,
        offset: i64,
        /// `<range aggregation> by (...)` (unwrapped ranges only).
        by: Option<&'static [&'static str]>,
    },
    Agg {
        op: Agg,
        /// `by (...)`; `None` is no grouping.
        by: Option<&'static [&'static str]>,
        inner: Box<M>,
    },
    TopK(usize, Box<M>),
    Scalar {
        op: Op,
        s: f64,
        inner: Box<M>,
    },
    Bin {
        op: Op,
        l: Box<M>,
        r: Box<M>,
    },
}

type Vector = BTreeMap<Labels, f64>;

fn apply(op: Op, a: f64, b: f64) -> Option<f64> {
    match op {
        Op::Add => Some(a + b),
        Op::Sub => Some(a - b),
        Op::Mul => Some(a * b),
        Op::Div => Some(a / b),
        Op::Gt => (a > b).then_some(a),
        Op::Lt => (a < b).then_some(a),
        Op::GtBool => Some(if a > b { 1.0 } else { 0.0 }),
    }
}

fn range(f: RangeFn, pipe: Pipe, range_s: i64) -> M {
    M::Range { f, pipe, unwrap: None, range: range_s * SEC, offset: 0, by: None }
}

/// `[range] offset x`, both in nanoseconds.
fn offset_ns(f: RangeFn, pipe: Pipe, range: i64, offset: i64) -> M {
    M::Range { f, pipe, unwrap: None, range, offset, by: None }
}

fn unwrap(f: RangeFn, pipe: Pipe, label: &'static str, dur: bool, range_s: i64) -> M {
    M::Range { f, pipe, unwrap: Some((label, dur)), range: range_s * SEC, offset: 0, by: None }
}

fn unwrap_by(f: RangeFn, pipe: Pipe, label: &'static str, range_s: i64, by: &'static [&'static str]) -> M {
    M::Range { f, pipe, unwrap: Some((label, false)), range: range_s * SEC, offset: 0, by: Some(by) }
}

fn agg(op: Agg, by: Option<&'static [&'static str]>, inner: M) -> M {
    M::Agg { op, by, inner: Box::new(inner) }
}

fn scalar(op: Op, inner: M, s: f64) -> M {
    M::Scalar { op, s, inner: Box::new(inner) }
}

fn bin(op: Op, l: M, r: M) -> M {
    M::Bin { op, l: Box::new(l), r: Box::new(r) }
}

impl M {
    fn eval(&self, data: &Data, t: i64) -> Vector {
        match self {
            M::Range { f, pipe, unwrap, range, offset, by } => {
                let (lo, hi) = (t - offset - range, t - offset);
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for e in data.entries.iter().filter(|e| e.ts > lo && e.ts <= hi) {
                    let Some(mut row) = pipe.run(data, e) else { continue };
                    let v = match unwrap {
                        None => row.line.len() as f64,
                        Some((name, dur)) => {
                            let raw = row.labels.remove(*name).unwrap_or_default();
                            let v = if *dur { duration(&raw) } else { raw.parse().ok() };
                            v.unwrap_or_else(|| panic!("oracle: cannot unwrap {name}={raw:?}"))
                        }
                    };
                    if let Some(names) = by {
                        row.labels.retain(|k, _| names.contains(&k.as_str()));
                    }
                    groups.entry(row.labels).or_default().push(v);
                }
                let secs = (*range / SEC) as f64;
                groups
                    .into_iter()
                    .map(|(k, vs)| {
                        let n = vs.len() as f64;
                        let v = match f {
                            RangeFn::Count => n,
                            RangeFn::Rate => n / secs,
                            RangeFn::Bytes | RangeFn::Sum => vs.iter().sum(),
                            RangeFn::BytesRate => vs.iter().sum::<f64>() / secs,
                            RangeFn::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            RangeFn::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                            RangeFn::Avg => vs.iter().sum::<f64>() / n,
                            RangeFn::SumRate => vs.iter().sum::<f64>() / secs,
                            RangeFn::First => vs[0],
                            RangeFn::Last => vs[vs.len() - 1],
                            RangeFn::Stddev => {
                                let mean = vs.iter().sum::<f64>() / n;
                                (vs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt()
                            }
                        };
                        (k, v)
                    })
                    .collect()
            }
            M::Agg { op, by, inner } => {
                let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
                for (k, v) in inner.eval(data, t) {
                    let key: Labels = match by {
                        None => Labels::new(),
                        Some(names) => k
                            .into_iter()
                            .filter(|(n, v)| names.contains(&n.as_str()) && !v.is_empty())
                            .collect(),
                    };
                    groups.entry(key).or_default().push(v);
                }
                groups
                    .into_iter()
                    .map(|(k, vs)| {
                        let n = vs.len() as f64;
                        let v = match op {
                            Agg::Sum => vs.iter().sum(),
                            Agg::Count => n,
                            Agg::Max => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                            Agg::Min => vs.iter().copied().fold(f64::INFINITY, f64::min),
                            Agg::Avg => vs.iter().sum::<f64>() / n,
                        };
                        (k, v)
                    })
                    .collect()
            }
            M::TopK(k, inner) => {
                let mut all: Vec<(Labels, f64)> = inner.eval(data, t).into_iter().collect();
                all.sort_by(|a, b| b.1.total_cmp(&a.1));
                if all.len() > *k {
                    assert!(all[*k - 1].1 != all[*k].1, "oracle: a tie in topk at {t}; choose another query");
                }
                all.into_iter().take(*k).collect()
            }
            M::Scalar { op, s, inner } => {
                inner.eval(data, t).into_iter().filter_map(|(k, v)| Some((k, apply(*op, v, *s)?))).collect()
            }
            M::Bin { op, l, r } => {
                let r = r.eval(data, t);
                l.eval(data, t)
                    .into_iter()
                    .filter_map(|(k, a)| {
                        let b = *r.get(&k)?;
                        Some((k, apply(*op, a, b)?))
                    })
                    .collect()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The queries.

enum Kind {
    Log(Pipe),
    Metric { m: M, step: i64 },
}

struct Query {
    q: String,
    kind: Kind,
}

fn log(q: &str, pipe: Pipe) -> Query {
    Query { q: q.to_string(), kind: Kind::Log(pipe) }
}

fn metric(q: &str, m: M) -> Query {
    Query { q: q.to_string(), kind: Kind::Metric { m, step: 60 * SEC } }
}

fn metric_step(q: &str, m: M, step_s: i64) -> Query {
    Query { q: q.to_string(), kind: Kind::Metric { m, step: step_s * SEC } }
}

fn app(a: &'static str) -> impl Fn(&Labels) -> bool + Send + Sync + 'static {
    move |s: &Labels| l(s, "app") == a
}

/// `| json dst="src", ...`: only those fields.
fn json_fields(p: Pipe, fields: &'static [(&'static str, &'static str)]) -> Pipe {
    p.stage(move |r| {
        match serde_json::from_str::<Value>(&r.line) {
            Ok(v @ Value::Object(_)) => {
                let mut out = Labels::new();
                flatten("", &v, &mut out);
                for (dst, src) in fields {
                    if let Some(v) = out.get(*src) {
                        r.labels.insert(dst.to_string(), v.clone());
                    }
                }
            }
            _ => {
                r.labels.insert("__error__".into(), "JSONParserErr".into());
            }
        }
        true
    })
}

/// `prefix` followed by `n` digits somewhere in `line`.
fn digits_after(line: &str, prefix: &str, n: usize) -> bool {
    line.match_indices(prefix).any(|(i, _)| {
        let rest = &line.as_bytes()[i + prefix.len()..];
        rest.len() >= n && rest[..n].iter().all(u8::is_ascii_digit)
    })
}

fn is_hex32_after(line: &str, prefix: &str) -> bool {
    line.match_indices(prefix).any(|(i, _)| {
        let rest = &line.as_bytes()[i + prefix.len()..];
        rest.len() >= 32 && rest[..32].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    })
}

fn queries() -> Vec<Query> {
    use Agg as A;
    use RangeFn as R;
    let prod = |s: &Labels| l(s, "env") == "prod";
    let staging = |s: &Labels| l(s, "env") == "staging";
    let any = |_: &Labels| true;
    let jsonish = |s: &Labels| matches!(l(s, "app"), "api" | "checkout");
    let logfmtish = |s: &Labels| matches!(l(s, "app"), "web" | "worker");
    let json_ok = |p: Pipe| p.json().no_error();
    let status = |x: &Labels| num(x, "status").unwrap();
    let latency = |x: &Labels| num(x, "latency_ms").unwrap();
    let took = |x: &Labels| duration(l(x, "took")).unwrap();
    vec![
        // Stream selectors.
        log(r#"{app="api"}"#, sel(app("api"))),
        log(r#"{app="web", env!="staging"}"#, sel(|s| l(s, "app") == "web" && l(s, "env") != "staging")),
        log(r#"{app=~"web|worker"}"#, sel(logfmtish)),
        log(
            r#"{env="prod", pod!~"(api|db)-.*"}"#,
            sel(move |s| prod(s) && !l(s, "pod").starts_with("api-") && !l(s, "pod").starts_with("db-")),
        ),
        log(r#"{pod=~"checkout-[02]"}"#, sel(|s| matches!(l(s, "pod"), "checkout-0" | "checkout-2"))),
        log(r#"{app!="db", env="staging"}"#, sel(move |s| l(s, "app") != "db" && staging(s))),
        log(r#"{pod=~".*-3"}"#, sel(|s| l(s, "pod").ends_with("-3"))),
        log(
            r#"{app=~"c.*", pod!="checkout-1"}"#,
            sel(|s| l(s, "app") == "checkout" && l(s, "pod") != "checkout-1"),
        ),
        // Line filters.
        log(r#"{env=~".+"} |= "timeout""#, sel(any).has("timeout")),
        log(r#"{app="db"} |= "trace_id=""#, sel(app("db")).has("trace_id=")),
        log(r#"{app="api"} != "request""#, sel(app("api")).lacks("request")),
        log(
            r#"{app="worker"} |~ `status=5\d\d`"#,
            sel(app("worker")).line(|x| digits_after(x, "status=5", 2)),
        ),
        log(
            r#"{app="db"} !~ "^(ERROR|slow)""#,
            sel(app("db")).line(|x| !x.starts_with("ERROR") && !x.starts_with("slow")),
        ),
        log(
            r#"{env="prod"} |= "level" != "debug" |~ "fail|declined""#,
            sel(prod).has("level").lacks("debug").line(|x| x.contains("fail") || x.contains("declined")),
        ),
        log(r#"{app=~"api|checkout"} |= `"status":503`"#, sel(jsonish).has(r#""status":503"#)),
        log(r#"{app="db"} |~ "(?i)error""#, sel(app("db")).line(|x| x.to_lowercase().contains("error"))),
        log(
            r#"{env=~"prod|staging"} |= "trace_id" |~ `trace_id=[0-9a-f]{32}`"#,
            sel(any).has("trace_id").line(|x| is_hex32_after(x, "trace_id=")),
        ),
        log(r#"{app="web"} != "debug" != "info""#, sel(app("web")).lacks("debug").lacks("info")),
        // Parsers and label filters.
        log(r#"{app="api"} | json | __error__="""#, json_ok(sel(app("api")))),
        log(
            r#"{app="web"} | logfmt | status >= 500"#,
            sel(app("web")).logfmt().filter(move |x| status(x) >= 500.0),
        ),
        log(
            r#"{app=~"api|checkout"} | json | __error__="" | level="error""#,
            json_ok(sel(jsonish)).filter(|x| l(x, "level") == "error"),
        ),
        log(
            r#"{app="checkout"} | json | __error__="" | latency_ms > 250"#,
            json_ok(sel(app("checkout"))).filter(move |x| latency(x) > 250.0),
        ),
        log(
            r#"{app="api"} | json | __error__="" | status >= 500 and latency_ms < 100"#,
            json_ok(sel(app("api"))).filter(move |x| status(x) >= 500.0 && latency(x) < 100.0),
        ),
        log(
            r#"{app=~"api|checkout"} | json | __error__="" | level=~"warn|error" | status != 200"#,
            json_ok(sel(jsonish))
                .filter(move |x| matches!(l(x, "level"), "warn" | "error") && status(x) != 200.0),
        ),
        log(
            r#"{app="worker"} | logfmt | took > 50ms"#,
            sel(app("worker")).logfmt().filter(move |x| took(x) > 0.05),
        ),
        log(
            r#"{app=~"web|worker"} | logfmt | took >= 1s or status == 404"#,
            sel(logfmtish).logfmt().filter(move |x| took(x) >= 1.0 || status(x) == 404.0),
        ),
        log(
            r#"{app="web"} | logfmt | level!="info", msg=~".*timeout.*""#,
            sel(app("web")).logfmt().filter(|x| l(x, "level") != "info" && l(x, "msg").contains("timeout")),
        ),
        log(
            r#"{app="web"} | logfmt | msg!~"request.*""#,
            sel(app("web")).logfmt().filter(|x| !l(x, "msg").starts_with("request")),
        ),
        log(
            r#"{app="api"} | json | __error__="" | http_method="POST""#,
            json_ok(sel(app("api"))).filter(|x| l(x, "http_method") == "POST"),
        ),
        log(
            r#"{env="prod"} | json | __error__="" | level="error""#,
            json_ok(sel(prod)).filter(|x| l(x, "level") == "error"),
        ),
        log(
            r#"{env="staging"} | json | __error__="" | status >= 500 | latency_ms <= 40"#,
            json_ok(sel(staging)).filter(move |x| status(x) >= 500.0 && latency(x) <= 40.0),
        ),
        log(
            r#"{app="checkout"} | json lvl="level", code="status" | __error__="" | code >= 500"#,
            json_fields(sel(app("checkout")), &[("lvl", "level"), ("code", "status")])
                .no_error()
                .filter(|x| num(x, "code").unwrap() >= 500.0),
        ),
        // Formatting and label sets.
        log(
            r#"{app="api"} | json | __error__="" | line_format "{{.msg}}""#,
            json_ok(sel(app("api"))).format(|x| l(x, "msg").to_string()),
        ),
        log(
            r#"{app="web"} | logfmt | line_format "{{.level}} {{.status}}: {{.msg}}""#,
            sel(app("web"))
                .logfmt()
                .format(|x| format!("{} {}: {}", l(x, "level"), l(x, "status"), l(x, "msg"))),
        ),
        log(
            r#"{app="checkout"} | json | __error__="" | http_method!="" | line_format "{{.http_method}} {{.http_path}} {{.latency_ms}}""#,
            json_ok(sel(app("checkout")))
                .filter(|x| !l(x, "http_method").is_empty())
                .format(|x| format!("{} {} {}", l(x, "http_method"), l(x, "http_path"), l(x, "latency_ms"))),
        ),
        log(
            r#"{app=~"api|checkout"} | json | __error__="" | keep level, status"#,
            json_ok(sel(jsonish)).keep(&["level", "status"]),
        ),
        log(
            r#"{app="web"} | logfmt | drop took, msg, trace_id"#,
            sel(app("web")).logfmt().drop_labels(&["took", "msg", "trace_id"]),
        ),
        log(
            r#"{app="worker"} | logfmt | keep app, level | level="error""#,
            sel(app("worker")).logfmt().keep(&["app", "level"]).filter(|x| l(x, "level") == "error"),
        ),
        log(
            r#"{app="api"} | json | __error__="" | drop http_method, http_path, latency_ms, msg"#,
            json_ok(sel(app("api"))).drop_labels(&["http_method", "http_path", "latency_ms", "msg"]),
        ),
        log(
            r#"{app="web"} | logfmt | label_format severity=level | severity="warn""#,
            sel(app("web")).logfmt().rename("severity", "level").filter(|x| l(x, "severity") == "warn"),
        ),
        // Range aggregations.
        metric(r#"count_over_time({app="api"}[1m])"#, range(R::Count, sel(app("api")), 60)),
        metric_step(
            r#"count_over_time({app="web"} |= "error" [30s])"#,
            range(R::Count, sel(app("web")).has("error"), 30),
            15,
        ),
        metric(r#"rate({app="db"} |= "deadlock" [5m])"#, range(R::Rate, sel(app("db")).has("deadlock"), 300)),
        metric(
            r#"bytes_over_time({pod="web-1"}[90s])"#,
            range(R::Bytes, sel(|s| l(s, "pod") == "web-1"), 90),
        ),
        metric(r#"bytes_rate({app="db"}[1m])"#, range(R::BytesRate, sel(app("db")), 60)),
        metric(
            r#"count_over_time({app="checkout"} | json | __error__="" | status >= 500 [5m])"#,
            range(R::Count, json_ok(sel(app("checkout"))).filter(move |x| status(x) >= 500.0), 300),
        ),
        metric(
            r#"avg_over_time({app="checkout"} | json | __error__="" | unwrap latency_ms [5m])"#,
            unwrap(R::Avg, json_ok(sel(app("checkout"))), "latency_ms", false, 300),
        ),
        metric(
            r#"max_over_time({app="worker"} | logfmt | unwrap duration(took) [1m])"#,
            unwrap(R::Max, sel(app("worker")).logfmt(), "took", true, 60),
        ),
        metric(
            r#"min_over_time({app="web"} | logfmt | keep pod, took | unwrap duration(took) [3m])"#,
            unwrap(R::Min, sel(app("web")).logfmt().keep(&["pod", "took"]), "took", true, 180),
        ),
        metric(
            r#"sum_over_time({app="worker"} | logfmt | status >= 500 | keep env, took | unwrap duration(took) [10m])"#,
            unwrap(
                R::Sum,
                sel(app("worker")).logfmt().filter(move |x| status(x) >= 500.0).keep(&["env", "took"]),
                "took",
                true,
                600,
            ),
        ),
        metric(
            r#"sum_over_time({app="api"} | json | __error__="" | keep pod, latency_ms | unwrap latency_ms [2m])"#,
            unwrap(R::Sum, json_ok(sel(app("api"))).keep(&["pod", "latency_ms"]), "latency_ms", false, 120),
        ),
        metric(
            r#"count_over_time({app="api"} | json | __error__="" | line_format "{{.msg}}" [3m])"#,
            range(R::Count, json_ok(sel(app("api"))).format(|x| l(x, "msg").to_string()), 180),
        ),
        // Vector aggregations.
        metric(
            r#"sum by (app) (rate({env="prod"}[5m]))"#,
            agg(A::Sum, Some(&["app"]), range(R::Rate, sel(prod), 300)),
        ),
        metric(
            r#"sum(bytes_over_time({app="db"}[2m])) * 2"#,
            scalar(Op::Mul, agg(A::Sum, None, range(R::Bytes, sel(app("db")), 120)), 2.0),
        ),
        metric(
            r#"sum by (app) (sum_over_time({app="worker"} | logfmt | unwrap duration(took) [3m]))"#,
            agg(A::Sum, Some(&["app"]), unwrap(R::Sum, sel(app("worker")).logfmt(), "took", true, 180)),
        ),
        metric(
            r#"sum(count_over_time({env="staging"}[1m]))"#,
            agg(A::Sum, None, range(R::Count, sel(staging), 60)),
        ),
        metric(
            r#"sum by (env) (count_over_time({app=~".+"} |~ "timeout|timed out" [2m]))"#,
            agg(
                A::Sum,
                Some(&["env"]),
                range(R::Count, sel(any).line(|x| x.contains("timeout") || x.contains("timed out")), 120),
            ),
        ),
        metric(
            r#"sum by (level) (count_over_time({app=~"web|worker"} | logfmt [5m]))"#,
            agg(A::Sum, Some(&["level"]), range(R::Count, sel(logfmtish).logfmt(), 300)),
        ),
        metric(
            r#"sum by (level, status) (count_over_time({app=~"api|checkout"} | json | __error__="" [10m]))"#,
            agg(A::Sum, Some(&["level", "status"]), range(R::Count, json_ok(sel(jsonish)), 600)),
        ),
        metric(
            r#"sum by (pod) (count_over_time({app=~"api|checkout"} | json | __error__!="" | drop __error__, __error_details__ [20m]))"#,
            agg(
                A::Sum,
                Some(&["pod"]),
                range(
                    R::Count,
                    sel(jsonish)
                        .json()
                        .filter(|x| x.contains_key("__error__"))
                        .drop_labels(&["__error__", "__error_details__"]),
                    1200,
                ),
            ),
        ),
        metric(
            r#"count by (app) (count_over_time({env="prod"}[1m]))"#,
            agg(A::Count, Some(&["app"]), range(R::Count, sel(prod), 60)),
        ),
        metric(
            r#"count(sum by (pod) (count_over_time({app="worker"} | logfmt | status >= 500 [5m])))"#,
            agg(
                A::Count,
                None,
                agg(
                    A::Sum,
                    Some(&["pod"]),
                    range(R::Count, sel(app("worker")).logfmt().filter(move |x| status(x) >= 500.0), 300),
                ),
            ),
        ),
        metric(
            r#"topk(3, sum by (pod) (bytes_over_time({env="prod"}[5m])))"#,
            M::TopK(3, Box::new(agg(A::Sum, Some(&["pod"]), range(R::Bytes, sel(prod), 300)))),
        ),
        metric(
            r#"topk(1, sum by (app) (sum_over_time({app=~"api|checkout"} | json | __error__="" | unwrap latency_ms [5m])))"#,
            M::TopK(
                1,
                Box::new(agg(
                    A::Sum,
                    Some(&["app"]),
                    unwrap(R::Sum, json_ok(sel(jsonish)), "latency_ms", false, 300),
                )),
            ),
        ),
        metric(
            r#"max by (app) (max_over_time({app=~"api|checkout"} | json | __error__="" | unwrap latency_ms [2m]))"#,
            agg(A::Max, Some(&["app"]), unwrap(R::Max, json_ok(sel(jsonish)), "latency_ms", false, 120)),
        ),
        metric(
            r#"avg by (pod) (avg_over_time({app="api"} | json | __error__="" | keep pod, latency_ms | unwrap latency_ms [5m]))"#,
            agg(
                A::Avg,
                Some(&["pod"]),
                unwrap(
                    R::Avg,
                    json_ok(sel(app("api"))).keep(&["pod", "latency_ms"]),
                    "latency_ms",
                    false,
                    300,
                ),
            ),
        ),
        metric(
            r#"avg by (app) (avg_over_time({app=~"api|checkout"} | json | __error__="" | unwrap latency_ms [5m]))"#,
            agg(A::Avg, Some(&["app"]), unwrap(R::Avg, json_ok(sel(jsonish)), "latency_ms", false, 300)),
        ),
        metric(
            r#"max(sum by (pod) (count_over_time({env="prod"}[5m])))"#,
            agg(A::Max, None, agg(A::Sum, Some(&["pod"]), range(R::Count, sel(prod), 300))),
        ),
        metric(
            r#"min by (env) (count_over_time({app="checkout"}[5m]))"#,
            agg(A::Min, Some(&["env"]), range(R::Count, sel(app("checkout")), 300)),
        ),
        metric(
            r#"avg by (app) (count_over_time({env="prod"}[5m]))"#,
            agg(A::Avg, Some(&["app"]), range(R::Count, sel(prod), 300)),
        ),
        metric(
            r#"sum by (status) (count_over_time({app="web"} | logfmt | status >= 400 [3m]))"#,
            agg(
                A::Sum,
                Some(&["status"]),
                range(R::Count, sel(app("web")).logfmt().filter(move |x| status(x) >= 400.0), 180),
            ),
        ),
        metric(
            r#"sum by (trace_id) (count_over_time({app="worker"} | logfmt | trace_id!="" [20m]))"#,
            agg(
                A::Sum,
                Some(&["trace_id"]),
                range(R::Count, sel(app("worker")).logfmt().filter(|x| !l(x, "trace_id").is_empty()), 1200),
            ),
        ),
        metric(
            r#"sum by (app) (bytes_over_time({app="web"} | logfmt | line_format "{{.msg}}" [5m]))"#,
            agg(
                A::Sum,
                Some(&["app"]),
                range(R::Bytes, sel(app("web")).logfmt().format(|x| l(x, "msg").to_string()), 300),
            ),
        ),
        metric(
            r#"sum(rate({app=~"web|worker"} | logfmt | took > 100ms [5m]))"#,
            agg(A::Sum, None, range(R::Rate, sel(logfmtish).logfmt().filter(move |x| took(x) > 0.1), 300)),
        ),
        metric_step(
            r#"sum by (app) (count_over_time({app=~".+"}[20s]))"#,
            agg(A::Sum, Some(&["app"]), range(R::Count, sel(any), 20)),
            10,
        ),
        // Binary operations.
        metric(
            r#"sum(count_over_time({app="api"}[1m])) / 60"#,
            scalar(Op::Div, agg(A::Sum, None, range(R::Count, sel(app("api")), 60)), 60.0),
        ),
        metric(
            r#"sum by (app) (count_over_time({app=~"api|checkout"} |= "error" [5m])) / sum by (app) (count_over_time({app=~"api|checkout"}[5m]))"#,
            bin(
                Op::Div,
                agg(A::Sum, Some(&["app"]), range(R::Count, sel(jsonish).has("error"), 300)),
                agg(A::Sum, Some(&["app"]), range(R::Count, sel(jsonish), 300)),
            ),
        ),
        metric(
            r#"sum by (env) (count_over_time({app="web"}[2m])) + sum by (env) (count_over_time({app="worker"}[2m]))"#,
            bin(
                Op::Add,
                agg(A::Sum, Some(&["env"]), range(R::Count, sel(app("web")), 120)),
                agg(A::Sum, Some(&["env"]), range(R::Count, sel(app("worker")), 120)),
            ),
        ),
        metric(
            r#"sum by (app) (count_over_time({env="prod"}[1m])) > 10"#,
            scalar(Op::Gt, agg(A::Sum, Some(&["app"]), range(R::Count, sel(prod), 60)), 10.0),
        ),
        metric(
            r#"sum by (app) (count_over_time({env="prod"}[1m])) > bool 10"#,
            scalar(Op::GtBool, agg(A::Sum, Some(&["app"]), range(R::Count, sel(prod), 60)), 10.0),
        ),
        metric(
            r#"sum by (pod) (rate({app="db"}[2m])) < 0.05"#,
            scalar(Op::Lt, agg(A::Sum, Some(&["pod"]), range(R::Rate, sel(app("db")), 120)), 0.05),
        ),
        metric(
            r#"sum(bytes_over_time({env="prod"}[1m])) - 1000"#,
            scalar(Op::Sub, agg(A::Sum, None, range(R::Bytes, sel(prod), 60)), 1000.0),
        ),
        metric(
            r#"sum by (app) (count_over_time({app=~"web|worker"}[1m])) + 0.5"#,
            scalar(Op::Add, agg(A::Sum, Some(&["app"]), range(R::Count, sel(logfmtish), 60)), 0.5),
        ),
        metric(
            r#"max_over_time({app=~"api|checkout"} | json | __error__="" | unwrap latency_ms [5m]) by (app)"#,
            unwrap_by(R::Max, json_ok(sel(jsonish)), "latency_ms", 300, &["app"]),
        ),
        metric(
            r#"avg_over_time({env="prod"} | json | __error__="" | unwrap latency_ms [10m]) by (level)"#,
            unwrap_by(R::Avg, json_ok(sel(prod)), "latency_ms", 600, &["level"]),
        ),
        metric(
            r#"sum(rate({app="checkout"} | json | __error__="" | unwrap latency_ms [2m]))"#,
            agg(A::Sum, None, unwrap(R::SumRate, json_ok(sel(app("checkout"))), "latency_ms", false, 120)),
        ),
        metric(
            r#"last_over_time({app="api"} | json | __error__="" | keep pod, latency_ms | unwrap latency_ms [1m])"#,
            unwrap(R::Last, json_ok(sel(app("api"))).keep(&["pod", "latency_ms"]), "latency_ms", false, 60),
        ),
        metric(
            r#"first_over_time({app="worker"} | logfmt | keep pod, took | unwrap duration(took) [2m])"#,
            unwrap(R::First, sel(app("worker")).logfmt().keep(&["pod", "took"]), "took", true, 120),
        ),
        metric(
            r#"stddev_over_time({app="checkout"} | json | __error__="" | keep env, latency_ms | unwrap latency_ms [5m])"#,
            unwrap(
                R::Stddev,
                json_ok(sel(app("checkout"))).keep(&["env", "latency_ms"]),
                "latency_ms",
                false,
                300,
            ),
        ),
        log(
            r#"{app="api"} | json | __error__="" | drop http_method="GET", latency_ms"#,
            json_ok(sel(app("api"))).stage(|r| {
                if l(&r.labels, "http_method") == "GET" {
                    r.labels.remove("http_method");
                }
                r.labels.remove("latency_ms");
                true
            }),
        ),
        // Offsets.
        metric(
            r#"count_over_time({app="api"}[1m] offset 5m)"#,
            offset_ns(R::Count, sel(app("api")), MIN, 5 * MIN),
        ),
        metric(
            r#"sum by (app) (bytes_over_time({env="staging"}[3m] offset 2m))"#,
            agg(A::Sum, Some(&["app"]), offset_ns(R::Bytes, sel(staging), 3 * MIN, 2 * MIN)),
        ),
        metric(
            r#"sum(count_over_time({app="web"}[1m])) - sum(count_over_time({app="web"}[1m] offset 1m))"#,
            bin(
                Op::Sub,
                agg(A::Sum, None, range(R::Count, sel(app("web")), 60)),
                agg(A::Sum, None, offset_ns(R::Count, sel(app("web")), MIN, MIN)),
            ),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running and comparing.

type LogLine = (i64, Labels, String);

fn labels_of(v: &Value) -> Labels {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

fn show(labels: &Labels) -> String {
    let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Seconds (a float) at whole milliseconds, as nanoseconds.
fn point_time(v: &Value) -> i64 {
    (v.as_f64().unwrap() * 1e3).round() as i64 * 1_000_000
}

fn point_value(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

fn compare_logs(want: &[LogLine], got: &[LogLine]) -> Result<(), String> {
    if want == got {
        return Ok(());
    }
    let i = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(want.len().min(got.len()));
    let fmt = |x: Option<&LogLine>| match x {
        Some((t, lb, line)) => format!("{t} {} {line:?}", show(lb)),
        None => "nothing".into(),
    };
    Err(format!(
        "{} entries expected, {} got; first difference at #{i}: expected {}, got {}",
        want.len(),
        got.len(),
        fmt(want.get(i)),
        fmt(got.get(i))
    ))
}

type Matrix = BTreeMap<Labels, Vec<(i64, f64)>>;

fn compare_matrix(want: &Matrix, got: &Matrix) -> Result<(), String> {
    for (k, w) in want {
        let Some(g) = got.get(k) else {
            return Err(format!("series {} missing (expected {:?})", show(k), &w[..w.len().min(3)]));
        };
        let same = w.len() == g.len() && w.iter().zip(g).all(|(a, b)| a.0 == b.0 && close(a.1, b.1));
        if !same {
            let i = w
                .iter()
                .zip(g)
                .position(|(a, b)| a.0 != b.0 || !close(a.1, b.1))
                .unwrap_or(w.len().min(g.len()));
            return Err(format!(
                "series {}: {} points expected, {} got; first difference at #{i}: expected {:?}, got {:?}",
                show(k),
                w.len(),
                g.len(),
                w.get(i),
                g.get(i)
            ));
        }
    }
    if let Some((k, g)) = got.iter().find(|(k, _)| !want.contains_key(*k)) {
        return Err(format!(
            "unexpected series {} ({:?}); expected {} series",
            show(k),
            &g[..g.len().min(3)],
            want.len()
        ));
    }
    Ok(())
}

struct Run<'a> {
    loki: &'a Loki,
    data: &'a Data,
    phase: &'static str,
    failures: Vec<String>,
    requests: usize,
}

impl Run<'_> {
    async fn json(&mut self, path: &str, params: &[(&str, String)]) -> Result<Value, String> {
        self.requests += 1;
        let (status, body) = self.loki.get(path, params).await;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("not a success: {body}"));
        }
        Ok(v)
    }

    fn fail(&mut self, q: &str, what: &str, msg: String) {
        self.failures.push(format!("[{}] {q}\n    ({what}) {msg}", self.phase));
    }

    async fn log_query(&mut self, q: &str, pipe: &Pipe) {
        let t0 = self.data.t0;
        // Bounds at +500ns: never an entry's time, so inclusive or exclusive ends do not matter.
        let full = (t0 - MIN + 500, t0 + 22 * MIN + 500);
        // Across the end of the older half (in blocks) and the start of the newer (in the head).
        let window = (t0 + 9 * MIN + 500, t0 + 11 * MIN + 500);
        for ((start, end), direction, limit) in [
            (full, "forward", 5000),
            (full, "backward", 37),
            (window, "forward", 25),
            (window, "backward", 9),
        ] {
            let mut want: Vec<LogLine> = self
                .data
                .entries
                .iter()
                .filter(|e| e.ts >= start && e.ts < end)
                .filter_map(|e| pipe.run(self.data, e).map(|r| (e.ts, r.labels, r.line)))
                .collect();
            if direction == "backward" {
                want.reverse();
            }
            if want.is_empty() && start == full.0 {
                self.fail(q, "oracle", "the oracle selects nothing: a vacuous query".into());
            }
            want.truncate(limit);
            let what = format!("{direction} limit {limit} [{}m, {}m)", (start - t0) / MIN, (end - t0) / MIN);
            let params = [
                ("query", q.to_string()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("direction", direction.to_string()),
                ("limit", limit.to_string()),
            ];
            let body = match self.json("/loki/api/v1/query_range", &params).await {
                Ok(b) => b,
                Err(e) => return self.fail(q, &what, e),
            };
            if body["data"]["resultType"] != "streams" {
                return self.fail(q, &what, format!("resultType {}", body["data"]["resultType"]));
            }
            let mut got: Vec<LogLine> = Vec::new();
            let mut ordered = true;
            for s in body["data"]["result"].as_array().unwrap() {
                let labels = labels_of(&s["stream"]);
                let values = s["values"].as_array().unwrap();
                let times: Vec<i64> =
                    values.iter().map(|v| v[0].as_str().unwrap().parse().unwrap()).collect();
                ordered &=
                    times.windows(2).all(|w| if direction == "forward" { w[0] < w[1] } else { w[0] > w[1] });
                for (t, v) in times.into_iter().zip(values) {
                    got.push((t, labels.clone(), v[1].as_str().unwrap().to_string()));
                }
            }
            if !ordered {
                self.fail(q, &what, "a stream's values are not in the direction's order".into());
            }
            if direction == "forward" {
                got.sort_by_key(|x| x.0);
            } else {
                got.sort_by_key(|x| -x.0);
            }
            if let Err(e) = compare_logs(&want, &got) {
                self.fail(q, &what, e);
            }
        }
    }

    async fn metric_query(&mut self, q: &str, m: &M, step: i64) {
        let t0 = self.data.t0;
        let (start, end) = (t0 + MIN, t0 + 22 * MIN);
        let mut want = Matrix::new();
        let mut t = start;
        while t <= end {
            for (k, v) in m.eval(self.data, t) {
                want.entry(k).or_default().push((t, v));
            }
            t += step;
        }
        if want.is_empty() {
            self.fail(q, "oracle", "the oracle's matrix is empty: a vacuous query".into());
        }
        let what = format!("range step {}s", step / SEC);
        let params = [
            ("query", q.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", format!("{}s", step / SEC)),
        ];
        match self.json("/loki/api/v1/query_range", &params).await {
            Err(e) => self.fail(q, &what, e),
            Ok(body) if body["data"]["resultType"] != "matrix" => {
                self.fail(q, &what, format!("resultType {}", body["data"]["resultType"]))
            }
            Ok(body) => {
                let got: Matrix = body["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        let points = s["values"].as_array().unwrap();
                        (
                            labels_of(&s["metric"]),
                            points.iter().map(|p| (point_time(&p[0]), point_value(&p[1]))).collect(),
                        )
                    })
                    .collect();
                if let Err(e) = compare_matrix(&want, &got) {
                    self.fail(q, &what, e);
                }
            }
        }

        // The instant query, at a time on a whole ten seconds (entries lie there too).
        let time = t0 + 13 * MIN + 20 * SEC;
        let want: Matrix = m.eval(self.data, time).into_iter().map(|(k, v)| (k, vec![(time, v)])).collect();
        let params = [("query", q.to_string()), ("time", time.to_string())];
        match self.json("/loki/api/v1/query", &params).await {
            Err(e) => self.fail(q, "instant", e),
            Ok(body) if body["data"]["resultType"] != "vector" => {
                self.fail(q, "instant", format!("resultType {}", body["data"]["resultType"]))
            }
            Ok(body) => {
                let got: Matrix = body["data"]["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| {
                        (
                            labels_of(&s["metric"]),
                            vec![(point_time(&s["value"][0]), point_value(&s["value"][1]))],
                        )
                    })
                    .collect();
                if let Err(e) = compare_matrix(&want, &got) {
                    self.fail(q, "instant", e);
                }
            }
        }
    }

    async fn all(&mut self, queries: &[Query]) {
        for query in queries {
            if KNOWN_DIFFERENCES.iter().any(|(q, _)| *q == query.q) {
                continue;
            }
            match &query.kind {
                Kind::Log(pipe) => self.log_query(&query.q, pipe).await,
                Kind::Metric { m, step } => self.metric_query(&query.q, m, *step).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logql_answers_match_a_brute_force_oracle() {
    let began = Instant::now();
    let data = Data::new();
    let queries = queries();
    assert!(queries.len() >= 60, "{} queries", queries.len());
    for (q, _) in KNOWN_DIFFERENCES {
        assert!(queries.iter().any(|x| x.q == *q), "a known difference that is no query: {q}");
    }
    let dir = tempfile::tempdir().unwrap();
    let half = data.entries.len() / 2;
    let items = pipeline_items("logs", "default");

    // The older half into blocks.
    let pharos = Pharos::start(dir.path(), &["logs.flush_interval=1s", "processor.commit_interval=200ms"]);
    let loki = Loki::new(&pharos);
    for body in data.push_bodies(0..half) {
        loki.push(&body).await;
    }
    assert_eq!(pharos.wait_for_metric(&items, half as f64).await, half as f64);
    assert!(pharos.wait_for_metric("pharos_logs_blocks_flushed_total", 1.0).await >= 1.0);
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");

    // The newer half into the head (no flush for an hour), and the queries.
    let pharos = Pharos::start(dir.path(), &["logs.flush_interval=1h", "processor.commit_interval=200ms"]);
    let loki = Loki::new(&pharos);
    for body in data.push_bodies(half..data.entries.len()) {
        loki.push(&body).await;
    }
    let n = (data.entries.len() - half) as f64;
    // (Counts entries replayed from the queue at start too.)
    assert!(pharos.wait_for_metric(&items, n).await >= n);
    let mut run = Run { loki: &loki, data: &data, phase: "blocks + head", failures: Vec::new(), requests: 0 };
    run.all(&queries).await;
    let (mut failures, mut requests) = (run.failures, run.requests);
    assert_eq!(
        pharos.metric("pharos_logs_blocks_flushed_total").await,
        0.0,
        "the newer half stays in the head"
    );
    let (status, log) = pharos.terminate();
    assert!(status.success(), "{log}");

    // Everything from blocks after a restart.
    let pharos = Pharos::start(dir.path(), &["logs.flush_interval=1h", "processor.commit_interval=200ms"]);
    let loki = Loki::new(&pharos);
    let mut run = Run { loki: &loki, data: &data, phase: "after restart", failures: Vec::new(), requests: 0 };
    run.all(&queries).await;
    failures.append(&mut run.failures);
    requests += run.requests;
    drop(pharos);

    eprintln!(
        "logs_diff: {} queries ({} known differences), {requests} requests, {} entries, {:.1}s",
        queries.len(),
        KNOWN_DIFFERENCES.len(),
        data.entries.len(),
        began.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements with the oracle:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

//! Evaluation tests on a small realistic trace:
//!
//! ```text
//! 1 GET /checkout            frontend  server  0ms..100ms
//! ├── 2 GET /api/cart        frontend  client  10ms..50ms   http.method=GET  http.status_code=200
//! │   ├── 4 SELECT cart      backend   server  12ms..42ms   error "boom", db.system=postgres
//! │   └── 5 cache lookup     backend   internal 15ms..20ms  cache.hit=true ratio=0.5
//! └── 3 POST /api/pay        frontend  client  50ms..70ms   http.method=POST http.status_code=500
//!                                                           event "exception", link, scope lib 1.2
//! ```

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value as Any,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    Span, Status as SpanStatus,
    span::{Event, Link},
};

use super::*;
use crate::model::{ResourceInfo, ScopeInfo};
use crate::query::{Kind, MetricsFunction, Status, parse};

const MS: u64 = 1_000_000;
const TRACE: [u8; 16] = [0xab; 16];

fn kv(key: &str, value: Any) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn string(s: &str) -> Any {
    Any::StringValue(s.into())
}

fn resource(service: &str, extra: Vec<KeyValue>) -> Arc<ResourceInfo> {
    let mut attributes = vec![kv("service.name", string(service))];
    attributes.extend(extra);
    Arc::new(ResourceInfo::new(Resource { attributes, ..Default::default() }, String::new()))
}

fn scope(name: &str, version: &str, attributes: Vec<KeyValue>) -> Arc<ScopeInfo> {
    Arc::new(ScopeInfo {
        scope: InstrumentationScope {
            name: name.into(),
            version: version.into(),
            attributes,
            ..Default::default()
        },
        schema_url: String::new(),
    })
}

fn id(n: u8) -> Vec<u8> {
    vec![0, 0, 0, 0, 0, 0, 0, n]
}

fn span(n: u8, parent: u8, name: &str, kind: i32, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: id(n),
        parent_span_id: if parent == 0 { Vec::new() } else { id(parent) },
        name: name.into(),
        kind,
        start_time_unix_nano: 1_000 * MS + start_ms * MS,
        end_time_unix_nano: 1_000 * MS + end_ms * MS,
        ..Default::default()
    }
}

/// The trace drawn at the top of this file, spans 1..=5 at indexes 0..=4.
fn trace() -> Vec<SpanData> {
    let frontend = resource("frontend", vec![kv("deployment.environment", string("prod"))]);
    let backend = resource("backend", vec![kv("http.method", string("RESOURCE"))]);
    let default_scope = scope("otel-go", "1.0", vec![]);
    let lib = scope("lib", "1.2", vec![kv("lib.flavour", string("vanilla"))]);

    let root = span(1, 0, "GET /checkout", 2, 0, 100);
    let mut cart = span(2, 1, "GET /api/cart", 3, 10, 50);
    cart.attributes = vec![kv("http.method", string("GET")), kv("http.status_code", Any::IntValue(200))];
    let mut db = span(4, 2, "SELECT cart", 2, 12, 42);
    db.attributes = vec![kv("db.system", string("postgres"))];
    db.status = Some(SpanStatus { message: "boom".into(), code: 2 });
    let mut cache = span(5, 2, "cache lookup", 1, 15, 20);
    cache.attributes = vec![
        kv("cache.hit", Any::BoolValue(true)),
        kv("ratio", Any::DoubleValue(0.5)),
        kv("tags", Any::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(string("hot")) }] })),
    ];
    cache.status = Some(SpanStatus { message: String::new(), code: 1 });
    let mut pay = span(3, 1, "POST /api/pay", 3, 50, 70);
    pay.attributes = vec![kv("http.method", string("POST")), kv("http.status_code", Any::IntValue(500))];
    pay.events = vec![Event {
        time_unix_nano: pay.start_time_unix_nano + 5 * MS,
        name: "exception".into(),
        attributes: vec![kv("exception.type", string("IOError"))],
        ..Default::default()
    }];
    pay.links = vec![Link {
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        attributes: vec![kv("link.kind", string("follows"))],
        ..Default::default()
    }];

    let data = |resource: &Arc<ResourceInfo>, scope: &Arc<ScopeInfo>, span: Span| SpanData {
        resource: resource.clone(),
        scope: scope.clone(),
        span,
    };
    vec![
        data(&frontend, &default_scope, root),
        data(&frontend, &default_scope, cart),
        data(&frontend, &lib, pay),
        data(&backend, &default_scope, db),
        data(&backend, &default_scope, cache),
    ]
}

fn run(query: &str, spans: &[SpanData]) -> Vec<Spanset> {
    let q = parse(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
    evaluate(&q, spans).unwrap_or_else(|e| panic!("{query:?}: {e}"))
}

/// The names of the spans of each spanset.
fn names(query: &str, spans: &[SpanData]) -> Vec<Vec<String>> {
    run(query, spans)
        .iter()
        .map(|s| s.spans.iter().map(|m| spans[m.index].span.name.clone()).collect())
        .collect()
}

/// The names of the matched spans of a query that yields at most one spanset.
fn matching(query: &str) -> Vec<String> {
    let spans = trace();
    let mut sets = names(query, &spans);
    assert!(sets.len() <= 1, "{query:?} gave {} spansets", sets.len());
    sets.pop().unwrap_or_default()
}

fn assert_matches(cases: &[(&str, &[&str])]) {
    for (query, expected) in cases {
        assert_eq!(matching(query), *expected, "{query}");
    }
}

const ROOT: &str = "GET /checkout";
const CART: &str = "GET /api/cart";
const PAY: &str = "POST /api/pay";
const DB: &str = "SELECT cart";
const CACHE: &str = "cache lookup";

#[test]
fn filter_empty_or_true_matches_every_span_by_start_time() {
    assert_matches(&[
        ("{ }", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ true }", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ false }", &[]),
    ]);
}

#[test]
fn filter_on_span_intrinsics_matches_their_values() {
    assert_matches(&[
        (r#"{ name = "SELECT cart" }"#, &[DB]),
        ("{ status = error }", &[DB]),
        ("{ status = ok }", &[CACHE]),
        ("{ status = unset }", &[ROOT, CART, PAY]),
        ("{ status != unset }", &[DB, CACHE]),
        (r#"{ statusMessage = "boom" }"#, &[DB]),
        ("{ kind = server }", &[ROOT, DB]),
        ("{ kind = client }", &[CART, PAY]),
        ("{ kind = internal }", &[CACHE]),
        ("{ duration > 20ms }", &[ROOT, CART, DB]),
        ("{ duration >= 20ms && duration <= 30ms }", &[DB, PAY]),
        ("{ duration = 5ms }", &[CACHE]),
        (r#"{ span:id = "0000000000000004" }"#, &[DB]),
        (r#"{ span:parentID = "0000000000000002" }"#, &[DB, CACHE]),
        ("{ span:parentID = nil }", &[ROOT]),
        ("{ span:childCount = 2 }", &[ROOT, CART]),
        ("{ span:childCount = 0 }", &[DB, CACHE, PAY]),
        (r#"{ instrumentation:name = "lib" }"#, &[PAY]),
        (r#"{ instrumentation:version = "1.2" }"#, &[PAY]),
    ]);
}

#[test]
fn filter_on_trace_intrinsics_matches_every_span_of_the_trace() {
    let all: &[&str] = &[ROOT, CART, DB, CACHE, PAY];
    assert_matches(&[
        (r#"{ rootServiceName = "frontend" }"#, all),
        (r#"{ rootServiceName = "backend" }"#, &[]),
        (r#"{ rootName = "GET /checkout" }"#, all),
        ("{ traceDuration = 100ms }", all),
        ("{ traceDuration > 100ms }", &[]),
        (r#"{ trace:id = "abababababababababababababababab" }"#, all),
    ]);
}

#[test]
fn filter_on_event_and_link_fields_matches_spans_with_one_such_event_or_link() {
    assert_matches(&[
        (r#"{ event:name = "exception" }"#, &[PAY]),
        ("{ event:timeSinceStart = 5ms }", &[PAY]),
        (r#"{ event.exception.type = "IOError" }"#, &[PAY]),
        (r#"{ event:name = "exception" && event.exception.type = "IOError" }"#, &[PAY]),
        ("{ event:name = nil }", &[ROOT, CART, DB, CACHE]),
        (r#"{ link:traceID = "11111111111111111111111111111111" }"#, &[PAY]),
        (r#"{ link:spanID = "2222222222222222" }"#, &[PAY]),
        (r#"{ link.link.kind = "follows" && event:name = "exception" }"#, &[PAY]),
    ]);
}

#[test]
fn filter_on_scoped_attributes_reads_only_that_scope() {
    assert_matches(&[
        (r#"{ span.http.method = "GET" }"#, &[CART]),
        (r#"{ resource.service.name = "backend" }"#, &[DB, CACHE]),
        (r#"{ span.service.name = "backend" }"#, &[]),
        (r#"{ resource.http.method = "RESOURCE" }"#, &[DB, CACHE]),
        (r#"{ span.http.method = "RESOURCE" }"#, &[]),
        (r#"{ instrumentation.lib.flavour = "vanilla" }"#, &[PAY]),
        (r#"{ resource.deployment.environment = "prod" }"#, &[ROOT, CART, PAY]),
    ]);
}

#[test]
fn filter_on_unscoped_attribute_prefers_span_then_resource() {
    assert_matches(&[
        (r#"{ .http.method = "GET" }"#, &[CART]),
        // Backend spans have no span attribute http.method, so their resource's counts.
        (r#"{ .http.method = "RESOURCE" }"#, &[DB, CACHE]),
        (r#"{ .service.name = "frontend" }"#, &[ROOT, CART, PAY]),
    ]);
}

#[test]
fn filter_with_nil_matches_presence_and_absence_and_nothing_else() {
    assert_matches(&[
        ("{ .http.status_code != nil }", &[CART, PAY]),
        ("{ span.http.status_code = nil }", &[ROOT, DB, CACHE]),
        ("{ nil = .db.system }", &[ROOT, CART, CACHE, PAY]),
        // A missing attribute compares false, even with !=.
        (r#"{ span.http.method != "GET" }"#, &[PAY]),
        ("{ .missing < 1 || .missing >= 1 }", &[]),
        // But the negation of a false comparison holds.
        ("{ !(span.http.status_code = 200) }", &[ROOT, DB, CACHE, PAY]),
        // ! of a missing attribute is nil, not true.
        ("{ !.missing }", &[]),
    ]);
}

#[test]
fn filter_compares_int_float_and_duration_numerically() {
    assert_matches(&[
        ("{ .http.status_code = 200.0 }", &[CART]),
        ("{ .http.status_code >= 499.5 }", &[PAY]),
        ("{ .ratio = 0.5 }", &[CACHE]),
        ("{ .ratio < 1 }", &[CACHE]),
        ("{ .ratio > 0 && .ratio < 1.0 }", &[CACHE]),
        ("{ duration = 5000000 }", &[CACHE]),
    ]);
}

#[test]
fn filter_on_incompatible_types_is_false_not_an_error() {
    assert_matches(&[
        ("{ .http.method = 200 }", &[]),
        ("{ .http.method != 200 }", &[]),
        (r#"{ .http.status_code = "200" }"#, &[]),
        ("{ .cache.hit = 1 }", &[]),
        ("{ .cache.hit }", &[CACHE]),
        ("{ .cache.hit = true }", &[CACHE]),
        ("{ .http.method }", &[]),
        (r#"{ .http.status_code =~ "2.*" }"#, &[]),
    ]);
}

#[test]
fn filter_regex_is_anchored_and_negatable() {
    assert_matches(&[
        (r#"{ name =~ "GET.*" }"#, &[ROOT, CART]),
        (r#"{ name =~ "GET" }"#, &[]),
        (r#"{ name =~ ".*cart" }"#, &[CART, DB]),
        (r#"{ name !~ "GET.*" }"#, &[DB, CACHE, PAY]),
        (r#"{ span.http.method !~ "G.*" }"#, &[PAY]),
        (r#"{ .tags =~ "h.t" }"#, &[CACHE]),
        (r#"{ .tags = "hot" }"#, &[CACHE]),
    ]);
}

#[test]
fn filter_arithmetic_on_numbers_and_durations() {
    assert_matches(&[
        ("{ duration * 2 > 70ms }", &[ROOT, CART]),
        ("{ duration - 10ms >= 20ms }", &[ROOT, CART, DB]),
        ("{ duration / 2 = 10ms }", &[PAY]),
        ("{ .http.status_code / 100 = 5 }", &[PAY]),
        ("{ .http.status_code % 100 = 0 }", &[CART, PAY]),
        ("{ 2 ^ 3 = 8 && -.http.status_code = -200 }", &[CART]),
        ("{ .http.status_code / 0 = 1 || .http.status_code / 0 != 1 }", &[]),
        ("{ duration / traceDuration > 0.35 }", &[ROOT, CART]),
    ]);
}

#[test]
fn filter_logical_operators_combine_conditions() {
    assert_matches(&[
        ("{ kind = client && .http.status_code >= 500 }", &[PAY]),
        ("{ status = error || .http.status_code >= 500 }", &[DB, PAY]),
        ("{ !(kind = client) && resource.service.name = \"frontend\" }", &[ROOT]),
        ("{ (status = error || status = ok) && kind != server }", &[CACHE]),
    ]);
}

#[test]
fn spanset_and_needs_both_sides_and_or_either() {
    assert_matches(&[
        ("{ status = error } && { kind = client }", &[CART, DB, PAY]),
        ("{ status = error } && { .missing = 1 }", &[]),
        ("{ status = error } || { .missing = 1 }", &[DB]),
        ("{ status = error } || { status = ok }", &[DB, CACHE]),
        ("{ .missing = 1 } || { .missing = 2 }", &[]),
    ]);
}

#[test]
fn structural_operators_relate_right_side_spans_to_left_side_spans() {
    assert_matches(&[
        // children of the cart call
        (r#"{ name = "GET /api/cart" } > { }"#, &[DB, CACHE]),
        ("{ kind = server } > { kind = client }", &[CART, PAY]),
        // descendants of the root
        (r#"{ name = "GET /checkout" } >> { resource.service.name = "backend" }"#, &[DB, CACHE]),
        ("{ kind = client } >> { }", &[DB, CACHE]),
        // the parent of the error
        ("{ status = error } < { }", &[CART]),
        // ancestors of the error
        ("{ status = error } << { }", &[ROOT, CART]),
        ("{ status = error } << { kind = server }", &[ROOT]),
        // siblings
        ("{ status = error } ~ { }", &[CACHE]),
        ("{ kind = client } ~ { }", &[CART, PAY]),
        (r#"{ name = "GET /api/cart" } ~ { name = "GET /api/cart" }"#, &[]),
        ("{ } ~ { }", &[CART, DB, CACHE, PAY]),
        // nothing on the left: nothing relates
        ("{ .missing = 1 } > { }", &[]),
    ]);
}

#[test]
fn structural_negations_keep_right_side_spans_without_the_relation() {
    assert_matches(&[
        (r#"{ name = "GET /api/cart" } !> { }"#, &[ROOT, CART, PAY]),
        ("{ kind = client } !>> { }", &[ROOT, CART, PAY]),
        ("{ status = error } !< { }", &[ROOT, DB, CACHE, PAY]),
        ("{ status = error } !<< { }", &[DB, CACHE, PAY]),
        ("{ status = error } !~ { }", &[ROOT, CART, DB, PAY]),
        ("{ kind = client } !~ { kind = client }", &[]),
        // nothing on the left: every right-hand span lacks the relation
        ("{ .missing = 1 } !> { kind = server }", &[ROOT, DB]),
        ("{ } !> { .missing = 1 }", &[]),
    ]);
}

#[test]
fn structural_union_forms_keep_both_sides_of_the_relation() {
    assert_matches(&[
        (r#"{ name = "GET /api/cart" } &> { }"#, &[CART, DB, CACHE]),
        ("{ kind = server } &> { kind = client }", &[ROOT, CART, PAY]),
        ("{ kind = client } &>> { status = error }", &[CART, DB]),
        ("{ kind = server } &>> { kind = client }", &[ROOT, CART, PAY]),
        ("{ status = error } &< { }", &[CART, DB]),
        ("{ status = error } &<< { kind = server }", &[ROOT, DB]),
        ("{ status = error } &~ { kind = internal }", &[DB, CACHE]),
        ("{ status = error } &~ { kind = client }", &[]),
    ]);
}

#[test]
fn structural_operators_chain_and_nest() {
    assert_matches(&[
        ("{ kind = server } > { kind = client } > { }", &[DB, CACHE]),
        ("{ } > { } > { }", &[DB, CACHE]),
        ("({ kind = server } > { kind = client }) && { status = error }", &[CART, DB, PAY]),
        ("{ status = error } || { kind = server } > { status = ok }", &[DB]),
    ]);
}

#[test]
fn scalar_filters_keep_spansets_whose_aggregate_passes() {
    assert_matches(&[
        ("{ } | count() > 4", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ } | count() > 5", &[]),
        ("{ kind = client } | count() = 2", &[CART, PAY]),
        ("{ kind = client } | avg(duration) = 30ms", &[CART, PAY]),
        ("{ kind = client } | avg(duration) > 30ms", &[]),
        ("{ } | max(duration) = 100ms", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ } | min(duration) < 10ms", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ kind = client } | sum(.http.status_code) = 700", &[CART, PAY]),
        ("{ } | avg(.http.status_code) = 350", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ } | avg(.missing) > 0", &[]),
        ("{ } | count() * 2 > 9", &[ROOT, CART, DB, CACHE, PAY]),
        ("{ } | max(duration) - min(duration) = 95ms", &[ROOT, CART, DB, CACHE, PAY]),
    ]);
}

#[test]
fn scalar_filters_record_aggregates_as_spanset_attributes() {
    let spans = trace();
    let sets = run("{ kind = client } | count() > 1 | avg(duration) > 1ms", &spans);
    assert_eq!(sets.len(), 1);
    assert_eq!(
        sets[0].attributes,
        [("count()".to_string(), Value::Int(2)), ("avg(duration)".to_string(), Value::Duration(30_000_000))]
    );
    let sets = run("{ } | avg(.http.status_code) > 1", &spans);
    assert_eq!(sets[0].attributes, [("avg(.http.status_code)".to_string(), Value::Float(350.0))]);
}

#[test]
fn by_splits_spansets_by_value_and_records_the_key() {
    let spans = trace();
    let sets = run("{ } | by(resource.service.name)", &spans);
    let got: Vec<(Vec<(String, Value)>, usize)> =
        sets.iter().map(|s| (s.attributes.clone(), s.matched)).collect();
    let key = |v: &str| vec![("by(resource.service.name)".to_string(), Value::String(v.into()))];
    assert_eq!(got, [(key("frontend"), 3), (key("backend"), 2)]);

    assert_eq!(
        names("{ } | by(resource.service.name) | count() > 2", &spans),
        [vec![ROOT.to_string(), CART.into(), PAY.into()]]
    );
    assert_eq!(
        names("{ } | by(kind) | { status != unset }", &spans),
        [vec![DB.to_string()], vec![CACHE.to_string()]]
    );
}

#[test]
fn by_with_missing_values_groups_them_without_a_key() {
    let spans = trace();
    let sets = run("{ } | by(span.http.method)", &spans);
    assert_eq!(sets.len(), 3);
    assert_eq!(sets[0].attributes, []);
    assert_eq!(sets[0].matched, 3);
    assert_eq!(sets[1].attributes, [("by(span.http.method)".to_string(), Value::String("GET".into()))]);
}

#[test]
fn coalesce_merges_spansets_into_one() {
    let spans = trace();
    let sets = run("{ } | by(kind) | coalesce()", &spans);
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].matched, 5);
    assert_eq!(sets[0].attributes, []);
    assert_eq!(
        names("{ } | by(kind) | count() = 2 | coalesce()", &spans),
        [vec![ROOT.to_string(), CART.into(), DB.into(), PAY.into()]]
    );
}

#[test]
fn pipeline_stages_after_the_first_filter_within_each_spanset() {
    assert_matches(&[
        ("{ kind = client } | { .http.status_code = 500 }", &[PAY]),
        ("{ } | { kind = server } > { kind = client }", &[CART, PAY]),
        ("{ kind = client } | { kind = server }", &[]),
    ]);
}

#[test]
fn parenthesised_pipeline_is_a_spanset_operand() {
    assert_matches(&[
        ("({ kind = client } | count() > 1) && { status = error }", &[CART, DB, PAY]),
        ("({ kind = client } | count() > 2) && { status = error }", &[]),
        ("({ } | by(resource.service.name) | count() = 2) > { }", &[]),
        ("({ } | by(resource.service.name) | count() = 3) > { }", &[CART, DB, CACHE, PAY]),
    ]);
}

#[test]
fn matched_spans_carry_referenced_and_selected_attributes_by_tempo_name() {
    let spans = trace();
    let query = concat!(
        r#"{ span.http.status_code >= 200 && status = unset && resource.service.name = "frontend" }"#,
        " | select(span.db.system, kind, .ratio, span:childCount, name)",
    );
    let sets = run(query, &spans);
    assert_eq!(sets.len(), 1);
    let pay = &sets[0].spans[1];
    assert_eq!(spans[pay.index].span.name, PAY);
    assert_eq!(
        pay.attributes,
        [
            ("http.status_code".to_string(), Value::Int(500)),
            ("status".to_string(), Value::Status(Status::Unset)),
            ("service.name".to_string(), Value::String("frontend".into())),
            ("kind".to_string(), Value::Kind(Kind::Client)),
            ("span:childCount".to_string(), Value::Int(0)),
        ]
    );
}

#[test]
fn matched_spans_report_an_attribute_once_under_its_name() {
    let spans = trace();
    let sets = run(
        r#"{ span.http.method = "GET" || resource.http.method = "RESOURCE" } | select(.http.method)"#,
        &spans,
    );
    let got: Vec<Vec<(String, Value)>> = sets[0].spans.iter().map(|m| m.attributes.clone()).collect();
    let method = |v: &str| vec![("http.method".to_string(), Value::String(v.into()))];
    assert_eq!(got, [method("GET"), method("RESOURCE"), method("RESOURCE")]);
}

#[test]
fn spans_are_ordered_by_start_time_whatever_the_input_order() {
    let mut spans = trace();
    spans.reverse();
    let sets = run("{ }", &spans);
    let starts: Vec<u64> = sets[0].spans.iter().map(|m| spans[m.index].span.start_time_unix_nano).collect();
    assert!(starts.is_sorted());
    assert_eq!(
        names("{ }", &spans),
        [vec![ROOT.to_string(), CART.into(), DB.into(), CACHE.into(), PAY.into()]]
    );
    assert_eq!(names("{ status = error } << { }", &spans), [vec![ROOT.to_string(), CART.into()]]);
}

#[test]
fn evaluator_compiles_once_and_evaluates_each_trace_alone() {
    let evaluator =
        Evaluator::new(&parse("{ status = error } && { kind = client }").expect("valid")).expect("compiles");
    let full = trace();
    assert_eq!(evaluator.evaluate(&full).len(), 1);
    let without_error: Vec<SpanData> = full.iter().filter(|s| s.span.name != DB).cloned().collect();
    assert!(evaluator.evaluate(&without_error).is_empty());
    assert!(evaluator.evaluate(&[]).is_empty());
}

#[test]
fn evaluate_truncated_keeps_the_earliest_spans_and_counts_all() {
    let evaluator = Evaluator::new(&parse("{ }").expect("valid")).expect("compiles");
    let spans = trace();
    let sets = evaluator.evaluate_truncated(&spans, 2);
    assert_eq!(sets[0].matched, 5);
    let kept: Vec<&str> = sets[0].spans.iter().map(|m| spans[m.index].span.name.as_str()).collect();
    assert_eq!(kept, [ROOT, CART]);
}

#[test]
fn trace_without_root_has_nil_root_intrinsics() {
    let spans: Vec<SpanData> = trace().into_iter().filter(|s| !s.is_root()).collect();
    assert_eq!(matching_in(r#"{ rootServiceName = "frontend" }"#, &spans), 0);
    assert_eq!(matching_in("{ rootName = nil }", &spans), 4);
    assert_eq!(matching_in("{ traceDuration = 60ms }", &spans), 4);
}

fn matching_in(query: &str, spans: &[SpanData]) -> usize {
    run(query, spans).iter().map(|s| s.matched).sum()
}

#[test]
fn evaluator_rejects_a_regex_that_does_not_compile() {
    use crate::query::{Attribute, AttributeScope, BinaryOp, FieldExpr, Static};
    let mut query = parse(r#"{ .a =~ "x" }"#).expect("valid");
    let filter = FieldExpr::Binary {
        op: BinaryOp::Regex,
        lhs: Box::new(FieldExpr::Attribute(Attribute::new(AttributeScope::Unscoped, "a"))),
        rhs: Box::new(FieldExpr::Static(Static::String("(".into()))),
    };
    query.pipeline.stages[0] =
        crate::query::Stage::Spansets(crate::query::SpansetExpr::Filter(crate::query::SpansetFilter {
            expr: Some(filter),
        }));
    let error = Evaluator::new(&query).expect_err("invalid regex");
    assert!(matches!(error, EvalError::InvalidRegex { .. }), "{error}");
    assert_eq!(error.code(), pharos_core::ErrorCode::InvalidInput);
}

/// A chain of `n` spans, each the child of the one before, every tenth an error.
fn chain(n: usize) -> Vec<SpanData> {
    let resource = resource("chain", vec![]);
    let scope = scope("", "", vec![]);
    (0..n)
        .map(|i| {
            let id = |k: usize| (k as u64 + 1).to_be_bytes().to_vec();
            SpanData {
                resource: resource.clone(),
                scope: scope.clone(),
                span: Span {
                    trace_id: TRACE.to_vec(),
                    span_id: id(i),
                    parent_span_id: if i == 0 { Vec::new() } else { id(i - 1) },
                    name: format!("s{i}"),
                    start_time_unix_nano: i as u64,
                    end_time_unix_nano: 2 * n as u64 - i as u64,
                    status: (i % 10 == 9).then(|| SpanStatus { code: 2, ..Default::default() }),
                    ..Default::default()
                },
            }
        })
        .collect()
}

#[test]
fn structural_operators_on_a_deep_chain_are_linear() {
    let n = 100_000;
    let spans = chain(n);
    let started = std::time::Instant::now();
    assert_eq!(matching_in("{ } >> { }", &spans), n - 1);
    assert_eq!(matching_in("{ } << { }", &spans), n - 1);
    assert_eq!(matching_in("{ status = error } >> { }", &spans), n - 10);
    assert_eq!(matching_in("{ status = error } << { }", &spans), n - 1);
    assert_eq!(matching_in("{ status = error } !>> { status = error }", &spans), 1);
    assert_eq!(matching_in("{ } &>> { }", &spans), n);
    assert_eq!(matching_in("{ } > { }", &spans), n - 1);
    assert_eq!(matching_in("{ } ~ { }", &spans), 0);
    assert_eq!(matching_in("{ span:childCount = 1 }", &spans), n - 1);
    // Quadratic work on 100K spans would take minutes even optimised.
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
}

#[test]
fn structural_operators_end_on_parent_cycles() {
    let mut spans = chain(4);
    // s0's parent is s3: 0 -> 3 -> 2 -> 1 -> 0.
    spans[0].span.parent_span_id = 4u64.to_be_bytes().to_vec();
    assert_eq!(matching_in(r#"{ name = "s1" } >> { }"#, &spans), 4);
    assert_eq!(matching_in(r#"{ name = "s1" } << { }"#, &spans), 4);
    assert_eq!(matching_in(r#"{ name = "s9" } >> { }"#, &spans), 0);
    assert_eq!(matching_in("{ rootName = nil }", &spans), 4);
}

// -- metrics -------------------------------------------------------------------------------

const S: u64 = 1_000_000_000;

/// Traces of one span each: `(service, start second, duration ms, error)`.
fn metric_traces() -> Vec<Vec<SpanData>> {
    let rows = [
        ("api", 1, 100, false),
        ("api", 2, 300, true),
        ("api", 11, 50, false),
        ("db", 3, 10, false),
        ("db", 12, 20, true),
        ("db", 25, 40, false),
        // outside the range (0, 30s]
        ("db", 31, 10, false),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, &(service, start, duration_ms, error))| {
            let mut s = span(1, 0, "op", 2, 0, 0);
            s.trace_id = vec![i as u8 + 1; 16];
            s.start_time_unix_nano = start * S;
            s.end_time_unix_nano = start * S + duration_ms * MS;
            if error {
                s.status = Some(SpanStatus { code: 2, ..Default::default() });
            }
            vec![SpanData { resource: resource(service, vec![]), scope: scope("", "", vec![]), span: s }]
        })
        .collect()
}

fn metrics(query: &str) -> Vec<MetricSeries> {
    let q = parse(query).unwrap_or_else(|e| panic!("{query:?}: {e}"));
    let traces = metric_traces();
    evaluate_metrics(&q, traces.iter().map(Vec::as_slice), 0..30 * S, 10 * S).expect("evaluates")
}

fn label(name: &str, value: Value) -> (String, Value) {
    (name.to_string(), value)
}

fn service(name: &str) -> (String, Value) {
    label("resource.service.name", Value::String(name.into()))
}

#[test]
fn metrics_rate_by_service_counts_spans_per_second_per_step() {
    let series = metrics("{ } | rate() by (resource.service.name)");
    assert_eq!(
        series,
        [
            MetricSeries {
                labels: vec![service("api")],
                samples: vec![(10_000, 0.2), (20_000, 0.1), (30_000, 0.0)]
            },
            MetricSeries {
                labels: vec![service("db")],
                samples: vec![(10_000, 0.1), (20_000, 0.1), (30_000, 0.1)]
            },
        ]
    );
}

#[test]
fn metrics_count_over_time_without_by_is_named_after_the_function() {
    let series = metrics("{ status = error } | count_over_time()");
    assert_eq!(
        series,
        [MetricSeries {
            labels: vec![label("__name__", Value::String("count_over_time".into()))],
            samples: vec![(10_000, 1.0), (20_000, 1.0), (30_000, 0.0)],
        }]
    );
}

#[test]
fn metrics_min_max_avg_sum_report_durations_in_seconds_where_there_are_values() {
    let samples = |q: &str| metrics(q).into_iter().map(|s| s.samples).collect::<Vec<_>>();
    let api = "{ resource.service.name = \"api\" }";
    assert_eq!(samples(&format!("{api} | min_over_time(duration)")), [vec![(10_000, 0.1), (20_000, 0.05)]]);
    assert_eq!(samples(&format!("{api} | max_over_time(duration)")), [vec![(10_000, 0.3), (20_000, 0.05)]]);
    assert_eq!(samples(&format!("{api} | sum_over_time(duration)")), [vec![(10_000, 0.4), (20_000, 0.05)]]);
    assert_eq!(samples(&format!("{api} | avg_over_time(duration)")), [vec![(10_000, 0.2), (20_000, 0.05)]]);
}

#[test]
fn metrics_quantile_over_time_gives_one_series_per_quantile() {
    let series = metrics("{ } | quantile_over_time(duration, 0.5, 1) by (resource.service.name)");
    let labels: Vec<Vec<(String, Value)>> = series.iter().map(|s| s.labels.clone()).collect();
    assert_eq!(
        labels,
        [
            vec![service("api"), label("p", Value::Float(0.5))],
            vec![service("api"), label("p", Value::Float(1.0))],
            vec![service("db"), label("p", Value::Float(0.5))],
            vec![service("db"), label("p", Value::Float(1.0))],
        ]
    );
    // api, first step: 100ms and 300ms. p50 is the 100ms sample's bucket (2^27 ns), p100
    // the 300ms sample's (2^29 ns).
    assert_eq!(series[0].samples, [(10_000, (1u64 << 27) as f64 / 1e9), (20_000, (1u64 << 26) as f64 / 1e9)]);
    assert_eq!(series[1].samples[0], (10_000, (1u64 << 29) as f64 / 1e9));
    // db has one sample per step: its bucket bound whatever the quantile.
    assert_eq!(series[2].samples.len(), 3);
}

#[test]
fn metrics_histogram_over_time_counts_per_bucket() {
    let series = metrics(r#"{ resource.service.name = "db" } | histogram_over_time(duration)"#);
    let buckets: Vec<(Value, Vec<f64>)> =
        series.iter().map(|s| (s.labels[1].1.clone(), s.samples.iter().map(|x| x.1).collect())).collect();
    assert_eq!(
        buckets,
        [
            (Value::Float((1u64 << 24) as f64 / 1e9), vec![1.0, 0.0, 0.0]),
            (Value::Float((1u64 << 25) as f64 / 1e9), vec![0.0, 1.0, 0.0]),
            (Value::Float((1u64 << 26) as f64 / 1e9), vec![0.0, 0.0, 1.0]),
        ]
    );
}

#[test]
fn metrics_topk_keeps_the_highest_series_at_each_step() {
    let series = metrics("{ } | count_over_time() by (resource.service.name) | topk(1)");
    // At 20s both have 1: the tie goes to the series that sorts first.
    assert_eq!(
        series,
        [
            MetricSeries { labels: vec![service("api")], samples: vec![(10_000, 2.0), (20_000, 1.0)] },
            MetricSeries { labels: vec![service("db")], samples: vec![(30_000, 1.0)] },
        ]
    );
    let series = metrics("{ } | count_over_time() by (resource.service.name) | bottomk(1)");
    assert_eq!(series[0].samples, [(20_000, 1.0), (30_000, 0.0)]);
}

#[test]
fn metrics_by_missing_values_drops_the_label_but_keeps_one() {
    let series = metrics("{ } | count_over_time() by (span.missing)");
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels, [label("span.missing", Value::Nil)]);
}

#[test]
fn metrics_range_and_limits_are_checked() {
    let q = parse("{ } | rate() by (resource.service.name)").expect("valid");
    assert!(matches!(MetricsEvaluator::new(&q, 10..10, 1), Err(EvalError::InvalidRange { .. })));
    assert!(matches!(MetricsEvaluator::new(&q, 0..10, 0), Err(EvalError::InvalidRange { .. })));
    assert!(matches!(MetricsEvaluator::new(&q, 0..S, 1), Err(EvalError::TooManyPoints { .. })));
    let plain = parse("{ }").expect("valid");
    assert!(matches!(MetricsEvaluator::new(&plain, 0..S, S), Err(EvalError::NotMetricsQuery)));

    let mut limited = MetricsEvaluator::new(&q, 0..30 * S, 10 * S).expect("valid").with_max_series(1);
    let traces = metric_traces();
    limited.add_trace(&traces[0]).expect("first series");
    let error = limited.add_trace(&traces[3]).expect_err("second series");
    assert!(matches!(error, EvalError::TooManySeries { limit: 1 }));
    assert_eq!(error.code(), pharos_core::ErrorCode::TooLarge);
}

#[test]
fn metrics_range_aligns_to_the_step_and_excludes_the_start() {
    let q = parse("{ } | count_over_time()").expect("valid");
    let traces = metric_traces();
    // 5s..25s aligns to (0s, 30s]; a span starting exactly at 0s would not count.
    let series = evaluate_metrics(&q, traces.iter().map(Vec::as_slice), 5 * S..25 * S, 10 * S).expect("ok");
    assert_eq!(series[0].samples, [(10_000, 3.0), (20_000, 2.0), (30_000, 1.0)]);
    assert!(matches!(q.metrics.as_ref().map(|m| &m.function), Some(MetricsFunction::CountOverTime)));
}

#[test]
fn an_instant_metrics_query_counts_its_whole_range_in_one_value() {
    let q = parse("{ } | count_over_time() by (resource.service.name)").expect("valid");
    // (2s, 27s] is not a multiple of its length: aligned like a range query it would split
    // into two buckets and the last would miss most spans.
    let mut instant = MetricsEvaluator::instant(&q, 2 * S..27 * S).expect("valid");
    for trace in metric_traces() {
        instant.add_trace(&trace).expect("adds");
    }
    let series = instant.finish();
    let got: Vec<_> = series.into_iter().map(|s| (s.labels, s.samples)).collect();
    // api starts at 1s (outside), 2s (the exclusive start: outside) and 11s; db at 3s, 12s, 25s.
    assert_eq!(
        got,
        [(vec![service("api")], vec![(27_000, 1.0)]), (vec![service("db")], vec![(27_000, 3.0)])]
    );
    assert!(matches!(MetricsEvaluator::instant(&q, 5..5), Err(EvalError::InvalidRange { .. })));
}

#[test]
fn metrics_pipeline_stages_apply_before_the_function() {
    // Every trace has one span, so no spanset passes count() > 1.
    let series = metrics("{ } | by(resource.service.name) | count() > 1 | rate()");
    assert!(series.is_empty());
    let series = metrics("({ status = error } || { duration < 15ms }) | count_over_time()");
    assert_eq!(series[0].samples, [(10_000, 2.0), (20_000, 1.0), (30_000, 0.0)]);
}

#[test]
fn evaluators_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Evaluator>();
    shareable::<MetricsEvaluator>();
    shareable::<Spanset>();
}

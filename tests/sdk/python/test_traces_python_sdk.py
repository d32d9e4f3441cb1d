"""A small program instrumented with the real OpenTelemetry Python SDK exports traces to a real
pharos; every span comes back out of the Tempo API, by trace id (JSON and protobuf) and by
TraceQL, as the SDK recorded it, and none is missing after a SIGKILL and restart.

Witness: an in-memory exporter on the same TracerProvider records exactly what the SDK handed to
the OTLP exporter. What pharos answers is compared with it span by span.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from pharos_harness import PharosServer

VISIBLE_WITHIN_S = 10.0
TENANT = "shop"


class Program:
    """The instrumented program: a checkout service handling orders. Each order is one trace:
    a server root span, a nested client call to the database, a cache lookup, an event, a link
    to the previous order's trace, and every fifth order fails with an exception."""

    def __init__(self, server: PharosServer):
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "checkout", "service.version": "1.4.2", "deployment.environment": "test"})
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                GrpcSpanExporter(endpoint=f"http://{server.grpc}", insecure=True, headers={"x-scope-orgid": TENANT}),
                schedule_delay_millis=60_000,
            )
        )
        self.tracer = self.provider.get_tracer("shop.checkout", "0.9.0")
        self.previous = None

    def order(self, n: int) -> None:
        links = [Link(self.previous, {"link.reason": "previous order"})] if self.previous else []
        with self.tracer.start_as_current_span(
            "POST /checkout",
            kind=SpanKind.SERVER,
            links=links,
            attributes={"http.request.method": "POST", "order.id": f"order-{n}", "order.items": n % 7 + 1},
        ) as root:
            with self.tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
                db.set_attribute("db.system", "postgresql")
                db.set_attribute("db.rows", n * 3)
                with self.tracer.start_as_current_span("decode rows") as decode:
                    decode.set_attribute("ratio", 0.25 * (n % 4))
                    decode.set_attribute("cached", n % 2 == 0)
            with self.tracer.start_as_current_span("cache lookup", kind=SpanKind.CLIENT) as cache:
                cache.add_event("cache miss", {"cache.key": f"k{n}"})
            if n % 5 == 0:
                try:
                    raise ValueError(f"card declined for order {n}")
                except ValueError as e:
                    root.record_exception(e)
                    root.set_status(Status(StatusCode.ERROR, "payment failed"))
                root.set_attribute("http.response.status_code", 402)
            else:
                root.set_attribute("http.response.status_code", 200)
            self.previous = root.get_span_context()

    def flush(self) -> None:
        assert self.provider.force_flush(30_000), "the SDK could not export every span"

    def spans(self):
        return self.memory.get_finished_spans()


def get(server: PharosServer, path: str, accept: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://{server.api}{path}", headers={"X-Scope-OrgID": TENANT, "Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def expected_by_trace(spans) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for s in spans:
        out.setdefault(hex_id(s.context.trace_id, 32), {})[hex_id(s.context.span_id, 16)] = s
    return out


def attr_value(v: dict):
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    raise AssertionError(f"unexpected attribute value {v}")


def check_json_trace(body: dict, want: dict[str, object]) -> None:
    got = {}
    for rs in body["batches"]:
        resource = {a["key"]: attr_value(a["value"]) for a in rs["resource"]["attributes"]}
        assert resource["service.name"] == "checkout", resource
        for ss in rs["scopeSpans"]:
            assert ss["scope"]["name"] == "shop.checkout" and ss["scope"]["version"] == "0.9.0", ss["scope"]
            for span in ss["spans"]:
                got[span["spanId"].lower()] = span
    assert set(got) == set(want), f"span ids differ: missing {set(want) - set(got)}, extra {set(got) - set(want)}"
    for span_id, sdk in want.items():
        span = got[span_id]
        assert span["name"] == sdk.name
        assert int(span["startTimeUnixNano"]) == sdk.start_time
        assert int(span["endTimeUnixNano"]) == sdk.end_time
        parent = span.get("parentSpanId", "") or ""
        assert parent.lower() == (hex_id(sdk.parent.span_id, 16) if sdk.parent else ""), span_id
        attributes = {a["key"]: attr_value(a["value"]) for a in span.get("attributes", [])}
        assert attributes == dict(sdk.attributes), (attributes, dict(sdk.attributes))
        assert [e["name"] for e in span.get("events", [])] == [e.name for e in sdk.events]
        assert [l["traceId"].lower() for l in span.get("links", [])] == [
            hex_id(l.context.trace_id, 32) for l in sdk.links
        ]
        code = {"STATUS_CODE_ERROR": 2, "STATUS_CODE_OK": 1}.get(span.get("status", {}).get("code"), span.get("status", {}).get("code", 0))
        assert code == (2 if sdk.status.status_code == StatusCode.ERROR else 0), span.get("status")


def check_protobuf_trace(raw: bytes, want: dict[str, object]) -> None:
    data = trace_pb2.TracesData()
    data.ParseFromString(raw)
    got = {
        span.span_id.hex(): span
        for rs in data.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    }
    assert set(got) == set(want)
    for span_id, sdk in want.items():
        assert got[span_id].name == sdk.name
        assert got[span_id].start_time_unix_nano == sdk.start_time
        assert len(got[span_id].attributes) == len(sdk.attributes)


def wait_all_visible(server: PharosServer, expected: dict[str, dict[str, object]]) -> float:
    """Polls trace by id until every trace is whole; returns how long it took."""
    started = time.monotonic()
    pending = dict(expected)
    while pending:
        for trace_id in list(pending):
            status, body = get(server, f"/api/traces/{trace_id}")
            if status == 200:
                ids = {s["spanId"].lower() for rs in json.loads(body)["batches"] for ss in rs["scopeSpans"] for s in ss["spans"]}
                if ids == set(pending[trace_id]):
                    del pending[trace_id]
        if not pending:
            break
        assert time.monotonic() - started < VISIBLE_WITHIN_S, f"{len(pending)} traces not whole after {VISIBLE_WITHIN_S}s"
        time.sleep(0.1)
    return time.monotonic() - started


def search(server: PharosServer, q: str, **params) -> dict:
    query = urllib.parse.urlencode({"q": q, "limit": 1000, **params})
    status, body = get(server, f"/api/search?{query}")
    assert status == 200, (status, body)
    return json.loads(body)


def test_every_span_comes_back_by_id_and_by_traceql(pharos_factory):
    server = pharos_factory().start()
    program = Program(server)
    for n in range(1, 21):
        program.order(n)
    program.flush()
    spans = program.spans()
    assert len(spans) == 20 * 4
    expected = expected_by_trace(spans)
    wait_all_visible(server, expected)

    for trace_id, want in expected.items():
        status, body = get(server, f"/api/traces/{trace_id}")
        assert status == 200
        check_json_trace(json.loads(body), want)
        status, raw = get(server, f"/api/traces/{trace_id}", accept="application/protobuf")
        assert status == 200
        check_protobuf_trace(raw, want)
        status, body = get(server, f"/api/v2/traces/{trace_id}")
        assert status == 200 and json.loads(body)["status"] == "COMPLETE"

    # TraceQL: the failed orders (every fifth) and nothing else.
    failed = {
        hex_id(s.context.trace_id, 32)
        for s in spans
        if s.status.status_code == StatusCode.ERROR
    }
    assert len(failed) == 4
    result = search(server, '{ resource.service.name = "checkout" && status = error }')
    assert {t["traceID"] for t in result["traces"]} == failed
    for t in result["traces"]:
        assert t["rootServiceName"] == "checkout" and t["rootTraceName"] == "POST /checkout"
        assert t["spanSets"][0]["matched"] == 1
    # Structural: database calls under a failed checkout.
    result = search(server, '{ status = error } >> { span.db.system = "postgresql" }')
    assert {t["traceID"] for t in result["traces"]} == failed
    # Attributes of every type, and the trace of one order.
    order7 = next(hex_id(s.context.trace_id, 32) for s in spans if s.attributes.get("order.id") == "order-7")
    assert [t["traceID"] for t in search(server, '{ span.order.id = "order-7" }')["traces"]] == [order7]
    assert len(search(server, "{ span.cached = true }")["traces"]) == 10
    assert len(search(server, "{ span.db.rows > 30 }")["traces"]) == 10
    assert len(search(server, '{ event:name = "cache miss" }')["traces"]) == 20
    # TraceQL metrics: failed checkouts over the last 10 minutes, by service.
    now = int(time.time())
    query = urllib.parse.urlencode(
        {"q": "{ status = error } | count_over_time() by (resource.service.name)", "start": now - 600, "end": now + 60, "step": "60s"}
    )
    status, body = get(server, f"/api/metrics/query_range?{query}")
    assert status == 200, body
    series = json.loads(body)["series"]
    assert len(series) == 1, series
    assert series[0]["labels"] == [{"key": "resource.service.name", "value": {"stringValue": "checkout"}}]
    assert sum(s["value"] for s in series[0]["samples"]) == 4
    # Tags for Grafana's query builder.
    status, body = get(server, "/api/v2/search/tags?scope=span")
    assert status == 200
    span_tags = json.loads(body)["scopes"][0]["tags"]
    assert {"order.id", "db.system", "http.request.method"} <= set(span_tags)
    status, body = get(server, "/api/v2/search/tag/resource.service.name/values")
    assert json.loads(body)["tagValues"] == [{"type": "string", "value": "checkout"}]
    # Jaeger's query API (Grafana's Jaeger data source) over the same spans.
    status, body = get(server, "/jaeger/api/services")
    assert status == 200 and json.loads(body)["data"] == ["checkout"], body
    status, body = get(server, "/jaeger/api/services/checkout/operations")
    assert set(json.loads(body)["data"]) == {"POST /checkout", "SELECT orders", "decode rows", "cache lookup"}
    query = urllib.parse.urlencode({"service": "checkout", "tags": json.dumps({"error": "true"}), "limit": 100})
    status, body = get(server, f"/jaeger/api/traces?{query}")
    assert status == 200, body
    assert {t["traceID"] for t in json.loads(body)["data"]} == failed
    status, body = get(server, f"/jaeger/api/traces/{order7}")
    jaeger_trace = json.loads(body)["data"][0]
    assert len(jaeger_trace["spans"]) == 4
    root = next(s for s in jaeger_trace["spans"] if not s["references"] or s["references"][0]["refType"] != "CHILD_OF")
    sdk_root = next(s for s in spans if s.attributes.get("order.id") == "order-7")
    assert root["operationName"] == "POST /checkout"
    assert root["startTime"] == sdk_root.start_time // 1000
    assert jaeger_trace["processes"][root["processID"]]["serviceName"] == "checkout"
    assert {"key": "order.id", "type": "string", "value": "order-7"} in root["tags"]
    status, body = get(server, "/jaeger/api/traces?service=checkout&minDuration=soon")
    assert status == 400 and "minDuration" in json.loads(body)["errors"][0]["msg"]
    # Bad input.
    status, body = get(server, "/api/search?q=" + urllib.parse.quote("{ status = 200 }"))
    assert status == 400 and b"col" in body, body
    status, body = get(server, "/api/traces/xyz")
    assert status == 400, body
    status, _ = get(server, "/api/traces/" + "ab" * 16)
    assert status == 404


def test_no_span_is_lost_across_sigkill(pharos_factory, tmp_path):
    # Blocks are flushed every second, so the first batch lands in a block and the second is
    # still in the head (and the write-ahead log) when pharos is killed.
    settings = ["traces.flush_interval=1s"]
    server = pharos_factory(settings=settings).start()
    program = Program(server)
    for n in range(1, 11):
        program.order(n)
    program.flush()
    wait_all_visible(server, expected_by_trace(program.spans()))
    deadline = time.monotonic() + 10
    while server.metrics().sum("pharos_traces_blocks_flushed_total") < 1:
        assert time.monotonic() < deadline, "no trace block was flushed"
        time.sleep(0.1)
    for n in range(11, 21):
        program.order(n)
    program.flush()
    server.kill()

    restarted = pharos_factory(data_dir=server.data_dir, settings=settings).start()
    expected = expected_by_trace(program.spans())
    assert len(expected) == 20
    wait_all_visible(restarted, expected)
    for trace_id, want in expected.items():
        status, body = get(restarted, f"/api/traces/{trace_id}")
        assert status == 200
        check_json_trace(json.loads(body), want)


def test_zipkin_v2_json_spans_come_back_through_the_tempo_api(pharos_factory):
    server = pharos_factory().start()
    now_us = int(time.time() * 1_000_000)
    spans = [
        {"traceId": "5af7183fb1d4cf5f", "id": "352bff9a74ca9ad2", "parentId": "6b221d5bc9e6496c", "name": "get /api",
         "kind": "SERVER", "timestamp": now_us, "duration": 1431,
         "localEndpoint": {"serviceName": "backend"}, "tags": {"http.method": "GET", "error": "timeout"}},
        {"traceId": "5af7183fb1d4cf5f", "id": "6b221d5bc9e6496c", "name": "get", "kind": "CLIENT",
         "timestamp": now_us - 100, "duration": 2000, "localEndpoint": {"serviceName": "frontend"}},
    ]
    req = urllib.request.Request(
        f"http://{server.http}/api/v2/spans",
        data=json.dumps(spans).encode(),
        headers={"Content-Type": "application/json", "X-Scope-OrgID": TENANT},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
    deadline = time.monotonic() + VISIBLE_WITHIN_S
    while True:
        status, body = get(server, "/api/traces/00000000000000005af7183fb1d4cf5f")
        if status == 200:
            break
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.1)
    got = {
        s["spanId"].lower(): (rs["resource"]["attributes"][0]["value"]["stringValue"], s)
        for rs in json.loads(body)["batches"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    }
    assert set(got) == {"352bff9a74ca9ad2", "6b221d5bc9e6496c"}
    service, server_span = got["352bff9a74ca9ad2"]
    assert service == "backend"
    assert int(server_span["endTimeUnixNano"]) - int(server_span["startTimeUnixNano"]) == 1_431_000
    assert server_span["status"]["message"] == "timeout"
    # A malformed id is refused with 400 naming it.
    bad = urllib.request.Request(
        f"http://{server.http}/api/v2/spans",
        data=json.dumps([{"traceId": "nothex", "id": "352bff9a74ca9ad2"}]).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        urllib.request.urlopen(bad, timeout=10)
        raise AssertionError("a malformed trace id was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and b"traceId" in e.read()

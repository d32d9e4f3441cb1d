"""The processing pipeline end to end, with the real OpenTelemetry Python SDK as the client.

Pharos runs redaction + attributes + tail sampling (every error trace, every slow trace, 10% of
the other traces) on traces, and redaction + attributes on logs. A checkout program sends
orders whose spans and log lines carry PII (emails, card numbers, bearer tokens, client IPs).

Checked, as a user would through the Tempo and Loki APIs:
- nothing stored holds the PII; the masks are there instead;
- every error trace and every slow trace is stored whole;
- the other traces are kept at 10% within a stated tolerance, each whole or not at all;
- the attributes processor's additions are on every span and log line;
- a SIGKILL while traces wait for their sampling decision loses none that should be kept.

Witness: an in-memory exporter on the same TracerProvider records what the SDK exported.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pharos_harness import PharosServer

TENANT = "shop"
# The tenant, and a request header the attributes processor copies (`from_context: metadata.x-team`).
HEADERS = {"x-scope-orgid": TENANT, "x-team": "payments"}
CARD = "4111 1111 1111 1111"  # a test Visa number: passes the Luhn check
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLXRlc3Q"
SLOW_MS = 800
DECISION_WAIT_S = 2


def config(decision_wait_s: int = DECISION_WAIT_S) -> str:
    return f"""
processors:
  redaction: {{}}
  attributes/env:
    actions:
      - {{key: deployment.environment, value: e2e, action: upsert}}
      - {{key: pharos.tenant, from_context: tenant, action: insert}}
      - {{key: team, from_context: metadata.x-team, action: insert}}
  tail_sampling:
    decision_wait: {decision_wait_s}s
    num_traces: 50000
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: slow, type: latency, latency: {{threshold_ms: 500}}}}
      - {{name: ok-10pc, type: probabilistic, probabilistic: {{sampling_percentage: 10}}}}
pipelines:
  traces:
    processors: [redaction, attributes/env, tail_sampling]
  logs:
    processors: [redaction, attributes/env]
"""


def pii(n: int) -> list[str]:
    """The PII one order carries, none of which may be stored."""
    return [f"user{n}@example.com", CARD, CARD.replace(" ", ""), JWT, f"10.20.{n % 250}.7"]


class Shop:
    """The instrumented program: each order is one trace of four spans (server root, a database
    call, a card charge with an event, a cache lookup) and two log lines. Every fifth order fails;
    every thirteenth that does not fail is slow."""

    def __init__(self, server: PharosServer):
        resource = Resource.create({"service.name": "checkout", "service.version": "2.0.0"})
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://{server.grpc}", insecure=True, headers=HEADERS),
                schedule_delay_millis=60_000,
                max_export_batch_size=256,
                max_queue_size=20_000,
            )
        )
        self.tracer = self.provider.get_tracer("shop.checkout")
        self.logs = LoggerProvider(resource=resource)
        self.logs.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"http://{server.grpc}", insecure=True, headers=HEADERS),
                schedule_delay_millis=60_000,
                max_export_batch_size=256,
                max_queue_size=20_000,
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.handler = LoggingHandler(level=logging.INFO, logger_provider=self.logs)
        self.logger = logging.getLogger("shop.checkout.pipeline")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)
        self.lines = 0

    @staticmethod
    def fails(n: int) -> bool:
        return n % 5 == 0

    @staticmethod
    def slow(n: int) -> bool:
        return n % 13 == 0 and n % 5 != 0

    def order(self, n: int) -> None:
        email, card, _, jwt, ip = pii(n)
        now = time.time_ns()
        start = now - SLOW_MS * 1_000_000 if self.slow(n) else now
        with self.tracer.start_as_current_span(
            "POST /checkout",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={
                "order.id": f"order-{n}",
                "enduser.email": email,
                "http.request.header.authorization": f"Bearer {jwt}",
                "client.address": ip,
            },
        ) as root:
            with self.tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
                db.set_attribute("db.system", "postgresql")
            with self.tracer.start_as_current_span("charge card") as charge:
                charge.set_attribute("payment.card", card)
                charge.add_event("card charged", {"card.number": card, "receipt.email": email})
            with self.tracer.start_as_current_span("cache lookup", kind=SpanKind.CLIENT):
                pass
            self.logger.info("order %d placed by %s from %s", n, email, ip, extra={"order.id": f"order-{n}"})
            if self.fails(n):
                root.set_status(Status(StatusCode.ERROR, "payment failed"))
                self.logger.error("charge card %s for %s failed", card.replace(" ", ""), email)
            else:
                self.logger.info("order %d paid with card %s", n, card)
            self.lines += 2

    def flush(self) -> None:
        assert self.provider.force_flush(60_000), "the SDK could not export every span"
        assert self.logs.force_flush(60_000), "the SDK could not export every log record"

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.provider.shutdown()
        self.logs.shutdown()

    def traces(self) -> dict[str, dict]:
        """trace id → {"order": n, "spans": set of span ids}, from what the SDK exported."""
        out: dict[str, dict] = {}
        for s in self.memory.get_finished_spans():
            t = out.setdefault(format(s.context.trace_id, "032x"), {"spans": set()})
            t["spans"].add(format(s.context.span_id, "016x"))
            if s.parent is None:
                t["order"] = int(s.attributes["order.id"].split("-")[1])
        return out


def get(server: PharosServer, path: str, params: dict | None = None) -> tuple[int, bytes]:
    url = f"http://{server.api}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url, headers={"X-Scope-OrgID": TENANT})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stored_trace(server: PharosServer, trace_id: str) -> dict | None:
    status, body = get(server, f"/api/traces/{trace_id}")
    if status == 404:
        return None
    assert status == 200, (status, body[:500])
    return json.loads(body)


def span_ids(trace: dict | None) -> set[str]:
    if trace is None:
        return set()
    return {s["spanId"].lower() for rs in trace["batches"] for ss in rs["scopeSpans"] for s in ss["spans"]}


def wait_whole(server: PharosServer, want: dict[str, set[str]], within_s: float) -> dict[str, set[str]]:
    """Polls until every trace in `want` is stored whole; returns those that are not, at the end."""
    deadline = time.monotonic() + within_s
    pending = dict(want)
    while pending and time.monotonic() < deadline:
        for trace_id in list(pending):
            if span_ids(stored_trace(server, trace_id)) == pending[trace_id]:
                del pending[trace_id]
        time.sleep(0.2)
    return pending


def log_lines(server: PharosServer) -> list[tuple[str, dict]]:
    now = time.time_ns()
    status, body = get(
        server,
        "/loki/api/v1/query_range",
        {"query": '{service_name="checkout"}', "start": now - 3600 * 10**9, "end": now + 60 * 10**9, "limit": 5000},
    )
    assert status == 200, body[:500]
    return [(line, stream["stream"]) for stream in json.loads(body)["data"]["result"] for _, line in stream["values"]]


def attributes(items) -> dict:
    out = {}
    for a in items or []:
        v = a["value"]
        out[a["key"]] = next(iter(v.values())) if v else None
    return out


def test_pipeline_redacts_enriches_and_tail_samples_whole_traces(pharos_factory):
    # Two queue partitions: two tail samplers, each deciding the traces of its partition (traces
    # are partitioned by trace id, so each sees whole traces), as processors scaled out would.
    server = pharos_factory(config=config(), settings=["queue.partitions=2"]).start()
    assert server.partitions == 2
    shop = Shop(server)
    orders = 1500
    for n in range(1, orders + 1):
        shop.order(n)
    shop.flush()
    traces = shop.traces()
    assert len(traces) == orders
    must_keep = {t: v["spans"] for t, v in traces.items() if shop.fails(v["order"]) or shop.slow(v["order"])}
    others = {t: v["spans"] for t, v in traces.items() if t not in must_keep}
    # 300 failures; 115 multiples of 13, of which 23 are multiples of 65 (already failures): 92 slow.
    assert len(must_keep) == 392
    # Every error and slow trace is kept whole (the decision comes after decision_wait).
    missing = wait_whole(server, must_keep, within_s=DECISION_WAIT_S + 20)
    assert not missing, f"{len(missing)} error/slow traces not stored whole, e.g. {next(iter(missing))}"
    time.sleep(DECISION_WAIT_S + 1)  # every decision is due by now

    kept = 0
    for trace_id, want in others.items():
        got = span_ids(stored_trace(server, trace_id))
        assert got in (set(), want), f"trace {trace_id} is partial: {len(got)} of {len(want)} spans"
        kept += bool(got)
    # 10% of 1,108 traces: 110.8 expected, standard deviation 10.0; ±45 is 4.5 deviations.
    assert 66 <= kept <= 156, f"kept {kept} of {len(others)} ordinary traces, expected about 10%"

    # Nothing stored carries the PII; the masks and the attributes processor's additions are there.
    stored_pii = [p for n in range(1, orders + 1) for p in pii(n)]
    sample = list(must_keep)[:60]
    for trace_id in sample:
        raw = json.dumps(stored_trace(server, trace_id))
        leaked = [p for p in pii(traces[trace_id]["order"]) if p in raw]
        assert not leaked, f"trace {trace_id} still holds {leaked}"
        trace = stored_trace(server, trace_id)
        for rs in trace["batches"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    attrs = attributes(span.get("attributes"))
                    assert attrs.get("deployment.environment") == "e2e", attrs
                    assert attrs.get("pharos.tenant") == TENANT, attrs
                    assert attrs.get("team") == "payments", attrs
                    if span["name"] == "POST /checkout":
                        assert "****" in attrs["enduser.email"], attrs
                        assert "****" in attrs["http.request.header.authorization"], attrs
                    if span["name"] == "charge card":
                        assert "****" in attrs["payment.card"], attrs
                        event = attributes(span["events"][0]["attributes"])
                        assert "****" in event["card.number"] and "****" in event["receipt.email"], event

    lines = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = log_lines(server)
        if len(lines) >= shop.lines:
            break
        time.sleep(0.2)
    assert len(lines) == shop.lines, f"{len(lines)} of {shop.lines} log lines stored"
    text = "\n".join(line for line, _ in lines)
    leaked = sorted({p for p in stored_pii if p in text})
    assert not leaked, f"log lines still hold {leaked[:5]}"
    assert sum("****" in line for line, _ in lines) == shop.lines
    # The attributes processor's additions are structured metadata, queryable without being labels.
    now = time.time_ns()
    status, body = get(
        server,
        "/loki/api/v1/query",
        {"query": 'sum(count_over_time({service_name="checkout"} | deployment_environment="e2e" [1h]))', "time": now},
    )
    assert status == 200, body[:500]
    assert float(json.loads(body)["data"]["result"][0]["value"][1]) == shop.lines
    status, body = get(
        server,
        "/loki/api/v1/query",
        {"query": 'sum(count_over_time({service_name="checkout"} | team="payments" [1h]))', "time": now},
    )
    assert status == 200, body[:500]
    assert float(json.loads(body)["data"]["result"][0]["value"][1]) == shop.lines

    # Pharos's own metrics count what each processor did.
    m = server.metrics()
    assert m.sum("pharos_processor_items_in_total", pipeline="traces", processor="tail_sampling") == orders * 4
    sampled_out = m.sum("pharos_processor_items_dropped_total", pipeline="traces", processor="tail_sampling", reason="sampled_out")
    assert sampled_out == (len(others) - kept) * 4
    assert m.sum("pharos_processor_events_total", pipeline="traces", processor="redaction", what="redacted") >= orders * 5
    shop.close()


def test_sigkill_during_decision_wait_loses_no_trace_that_must_be_kept(pharos_factory, tmp_path):
    # A long decision_wait: the kill lands while every trace still waits for its decision.
    server = pharos_factory(config=config(decision_wait_s=6)).start()
    shop = Shop(server)
    for n in range(1, 201):
        shop.order(n)
    shop.flush()  # acknowledged: durable in the queue
    traces = shop.traces()
    must_keep = {t: v["spans"] for t, v in traces.items() if shop.fails(v["order"]) or shop.slow(v["order"])}
    assert len(must_keep) == 40 + 12
    held = [t for t in must_keep if stored_trace(server, t) is None]
    assert len(held) == len(must_keep), "traces were stored before their decision_wait ended"
    server.kill()
    shop.close()

    restarted = pharos_factory(data_dir=server.data_dir, config=config(decision_wait_s=6)).start()
    missing = wait_whole(restarted, must_keep, within_s=30)
    assert not missing, f"{len(missing)} of {len(must_keep)} traces that must be kept are missing after SIGKILL"
    for trace_id, v in traces.items():
        got = span_ids(stored_trace(restarted, trace_id))
        assert got in (set(), v["spans"]), f"trace {trace_id} is partial after the restart"


SPAN_METRICS_CONFIG = """
processors:
  span_metrics:
    metrics_flush_interval: 3s
    exemplars: {enabled: true}
  service_graph:
    metrics_flush_interval: 3s
pipelines:
  traces:
    processors: [span_metrics, service_graph]
"""


def promql(server: PharosServer, query: str) -> list[dict]:
    status, body = get(server, "/api/v1/query", {"query": query, "time": time.time()})
    assert status == 200, (query, body[:500])
    return json.loads(body)["data"]["result"]


def test_span_metrics_and_service_graph_reach_promql_with_exemplars(pharos_factory):
    """Two services (checkout calls payments); span metrics and service-graph edges computed by
    the traces pipeline are written to the metrics store and answered by PromQL, with exemplars
    that point to the traces they came from."""
    # Trace blocks are written within 1 s, long before the first span metrics are due (3 s): the
    # metrics must still come out with no more data arriving (the processors keep ticking while
    # they hold counts not yet emitted).
    server = pharos_factory(config=SPAN_METRICS_CONFIG, settings=["traces.flush_interval=1s"]).start()

    def provider(service: str) -> tuple[TracerProvider, InMemorySpanExporter]:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        memory = InMemorySpanExporter()
        p.add_span_processor(SimpleSpanProcessor(memory))
        p.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://{server.grpc}", insecure=True, headers={"x-scope-orgid": TENANT}),
                schedule_delay_millis=60_000,
                max_queue_size=20_000,
            )
        )
        return p, memory

    checkout, checkout_spans = provider("checkout")
    payments, _ = provider("payments")
    front = checkout.get_tracer("shop.checkout")
    back = payments.get_tracer("shop.payments")
    orders = 50
    for n in range(1, orders + 1):
        with front.start_as_current_span("POST /checkout", kind=SpanKind.SERVER):
            with front.start_as_current_span("call payments", kind=SpanKind.CLIENT):
                with back.start_as_current_span("POST /pay", kind=SpanKind.SERVER) as pay:
                    if n % 5 == 0:
                        pay.set_status(Status(StatusCode.ERROR, "declined"))
    assert checkout.force_flush(30_000) and payments.force_flush(30_000)
    trace_ids = {format(s.context.trace_id, "032x") for s in checkout_spans.get_finished_spans()}

    def value(query: str) -> float | None:
        result = promql(server, query)
        return float(result[0]["value"][1]) if result else None

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if value('sum(traces_service_graph_request_total{client="checkout",server="payments"})') == orders and value(
            'sum(traces_span_metrics_calls_total{service_name="payments"})'
        ) == orders:
            break
        time.sleep(0.5)

    by_span = {
        (r["metric"]["span_name"], r["metric"]["span_kind"], r["metric"]["status_code"]): float(r["value"][1])
        for r in promql(server, 'sum by (span_name, span_kind, status_code) (traces_span_metrics_calls_total)')
    }
    assert by_span == {
        ("POST /checkout", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): orders,
        ("call payments", "SPAN_KIND_CLIENT", "STATUS_CODE_UNSET"): orders,
        ("POST /pay", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"): orders - orders // 5,
        ("POST /pay", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"): orders // 5,
    }, by_span
    assert value('sum(traces_span_metrics_duration_seconds_count{span_name="POST /pay"})') == orders
    # Each queue partition's processors count the traces of their partition: their series are
    # told apart by pharos_partition (sum over it for totals, as above).
    partitions = {r["metric"].get("pharos_partition") for r in promql(server, "traces_span_metrics_calls_total")}
    assert partitions == {str(p) for p in range(server.partitions)}, partitions
    assert value('sum(traces_service_graph_request_total{client="checkout",server="payments"})') == orders
    assert value('sum(traces_service_graph_request_failed_total{client="checkout",server="payments"})') == orders // 5
    assert value('sum(traces_service_graph_request_server_seconds_count{server="payments"})') == orders

    now = time.time()
    status, body = get(
        server,
        "/api/v1/query_exemplars",
        {"query": 'traces_span_metrics_duration_seconds_bucket{span_name="POST /checkout"}', "start": now - 600, "end": now + 60},
    )
    assert status == 200, body[:500]
    exemplars = [e for series in json.loads(body)["data"] for e in series["exemplars"]]
    assert exemplars, "no exemplars on the span-duration histogram"
    for e in exemplars:
        assert e["labels"]["trace_id"] in trace_ids, e
    checkout.shutdown()
    payments.shutdown()

"""The real OpenTelemetry Python SDK exporting to a real pharos, over OTLP/gRPC and OTLP/HTTP
(protobuf). Every test sends a number of items fixed in advance and asserts that pharos
acknowledged, and later counted in its processing stage, exactly that many: no loss, no double
counting, and none landing on another tenant.

Witnesses compared:
  * the number the test decided to send (the constants below);
  * what the SDK really handed to its exporter, and that every export reported SUCCESS (a wrapper
    around the real exporter's `export`), so that a mistake in the SDK set-up is told apart from a
    pharos bug;
  * for the HTTP exporters, every request on the wire (a requests.Session hook): one per export
    call, protobuf, gzip when asked, with the tenant header, answered 200;
  * pharos' own counters: pharos_ingest_items_{received,accepted}_total and
    pharos_pipeline_items_total for the test's tenant, and pharos_ingest_requests_total (one
    request per SDK export call, all answered "ok", on the expected protocol).
"""

from __future__ import annotations

import math

import pytest
import requests
from grpc import Compression as GrpcCompression
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.metrics import Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableGauge,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from pharos_harness import PharosServer

TRACES = 5
SPANS_PER_TRACE = 50  # a root and 49 children
SPANS = TRACES * SPANS_PER_TRACE  # 250

LOG_STREAMS = 2  # two LoggerProviders with different service.name: two log streams
LOGS_PER_STREAM = 60
LOGS = LOG_STREAMS * LOGS_PER_STREAM  # 120

# Data points in one collection of the MeterProvider below (cumulative temporality, so every
# collection reports every series seen so far):
#   counter       sdk_test.requests     3 attribute sets -> 3 points
#   histogram     sdk_test.latency      2 attribute sets -> 2 points
#   updowncounter sdk_test.inflight     1 attribute set  -> 1 point
#   observable gauge sdk_test.temperature, callback observes 2 attribute sets -> 2 points
POINTS_PER_COLLECTION = 3 + 2 + 1 + 2
# Two explicit force_flush() calls, and nothing else: the reader's export interval is infinite, so
# it has no background thread and (in this SDK) shutdown() does not collect again.
COLLECTIONS = 2
POINTS = POINTS_PER_COLLECTION * COLLECTIONS  # 16

PROTOCOLS = ["grpc", "http-protobuf"]
# Spans are also sent gzip-compressed, the exporters' other common setting.
SPAN_PROTOCOLS = PROTOCOLS + ["grpc-gzip", "http-protobuf-gzip"]


# -- helpers -----------------------------------------------------------------------------------


class ExportRecorder:
    """Wraps a real exporter's export() to record how many items each call carried and its result.
    The exporter object itself is unchanged and still does the real export."""

    def __init__(self, exporter, count_items):
        self.exporter = exporter
        self.calls: list[tuple[int, str]] = []
        inner = exporter.export

        def export(batch, *args, **kwargs):
            result = inner(batch, *args, **kwargs)
            self.calls.append((count_items(batch), getattr(result, "name", str(result))))
            return result

        exporter.export = export

    @property
    def items(self) -> int:
        return sum(n for n, _ in self.calls)

    def assert_all_succeeded(self, expected_items: int) -> None:
        failed = [c for c in self.calls if c[1] != "SUCCESS"]
        assert not failed, f"SDK exports that did not succeed: {failed} (all calls: {self.calls})"
        assert self.items == expected_items, (
            f"the SDK handed {self.items} items to the exporter, the test meant {expected_items}: "
            f"{self.calls}"
        )


def count_metric_points(metrics_data) -> int:
    return sum(
        len(metric.data.data_points)
        for rm in metrics_data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


class Wire:
    """What really went over the wire for the HTTP exporters: every request's path, Content-Type,
    Content-Encoding and tenant header, seen through a requests.Session response hook."""

    def __init__(self):
        self.requests: list[dict] = []
        self.session = requests.Session()
        self.session.hooks["response"].append(self._seen)

    def _seen(self, response, *args, **kwargs):
        req = response.request
        self.requests.append(
            {
                "path": requests.utils.urlparse(req.url).path,
                "status": response.status_code,
                "content_type": req.headers.get("Content-Type"),
                "content_encoding": req.headers.get("Content-Encoding"),
                "tenant": req.headers.get("X-Scope-OrgID"),
            }
        )

    def assert_protobuf(self, path: str, tenant: str, gzip: bool, calls: int) -> None:
        assert len(self.requests) == calls, f"{len(self.requests)} HTTP requests for {calls} export calls"
        for r in self.requests:
            assert r == {
                "path": path,
                "status": 200,
                "content_type": "application/x-protobuf",
                "content_encoding": "gzip" if gzip else None,
                "tenant": tenant,
            }, r


def grpc_kwargs(server: PharosServer, tenant: str, gzip: bool = False) -> dict:
    # gRPC metadata keys must be lower case (grpcio refuses others); pharos reads x-scope-orgid.
    return dict(
        endpoint=server.grpc,
        insecure=True,
        headers={"x-scope-orgid": tenant},
        timeout=10,
        compression=GrpcCompression.Gzip if gzip else None,  # None: the exporter's default, none
    )


def http_kwargs(server: PharosServer, path: str, tenant: str, wire: Wire, gzip: bool = False) -> dict:
    return dict(
        endpoint=f"http://{server.http}{path}",
        headers={"X-Scope-OrgID": tenant},
        timeout=10,
        compression=HttpCompression.Gzip if gzip else None,
        session=wire.session,
    )


def span_exporter(protocol: str, server: PharosServer, tenant: str, wire: Wire):
    gzip = protocol.endswith("-gzip")
    if protocol.startswith("grpc"):
        return GrpcSpanExporter(**grpc_kwargs(server, tenant, gzip))
    return HttpSpanExporter(**http_kwargs(server, "/v1/traces", tenant, wire, gzip))


def log_exporter(protocol: str, server: PharosServer, tenant: str, wire: Wire):
    if protocol == "grpc":
        return GrpcLogExporter(**grpc_kwargs(server, tenant))
    return HttpLogExporter(**http_kwargs(server, "/v1/logs", tenant, wire))


CUMULATIVE = {
    Counter: AggregationTemporality.CUMULATIVE,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


def metric_exporter(protocol: str, server: PharosServer, tenant: str, wire: Wire):
    if protocol == "grpc":
        return GrpcMetricExporter(**grpc_kwargs(server, tenant), preferred_temporality=CUMULATIVE)
    return HttpMetricExporter(**http_kwargs(server, "/v1/metrics", tenant, wire), preferred_temporality=CUMULATIVE)


def pharos_protocol(protocol: str) -> str:
    return "grpc" if protocol.startswith("grpc") else "http/protobuf"


def assert_pharos_counted(
    server: PharosServer, signal: str, tenant: str, expected: int, protocol: str, export_calls: int
) -> None:
    m = server.wait_processed(signal, tenant, expected)
    got = {
        "received": m.get("pharos_ingest_items_received_total", signal=signal, tenant=tenant),
        "accepted": m.get("pharos_ingest_items_accepted_total", signal=signal, tenant=tenant),
        "rejected": m.sum("pharos_ingest_items_rejected_total", signal=signal, tenant=tenant),
        "pipeline": m.get("pharos_pipeline_items_total", signal=signal, tenant=tenant),
    }
    want = {"received": expected, "accepted": expected, "rejected": 0, "pipeline": expected}
    assert got == want, f"{signal} for tenant {tenant}: pharos counted {got}, sent {want}\n{server.log_tail(20)}"

    # Nothing went to another tenant (the header was honoured, nothing fell back to "default").
    for name in ("pharos_ingest_items_accepted_total", "pharos_pipeline_items_total"):
        elsewhere = {
            dict(lbl)["tenant"]: v for lbl, v in m.matching(name, signal=signal).items() if dict(lbl)["tenant"] != tenant
        }
        assert not elsewhere, f"{name}: {signal} counted under other tenants: {elsewhere}"

    # One request per SDK export call, every one on the exporter's protocol and answered "ok".
    requests = {
        (dict(lbl)["protocol"], dict(lbl)["outcome"]): v
        for lbl, v in m.matching("pharos_ingest_requests_total", signal=signal).items()
    }
    assert requests == {(pharos_protocol(protocol), "ok"): export_calls}, (
        f"pharos_ingest_requests_total for {signal}: {requests}, expected {export_calls} ok requests "
        f"over {pharos_protocol(protocol)}"
    )


# -- tests -------------------------------------------------------------------------------------


def send_spans(exporter, service_name: str, traces: int = TRACES) -> ExportRecorder:
    recorder = ExportRecorder(exporter, len)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=ALWAYS_ON)
    # Small batches: several export requests, each split over pharos' partitions by trace id.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=100))
    tracer = provider.get_tracer("pharos.sdk-tests.python")
    for t in range(traces):
        with tracer.start_as_current_span(f"root-{t}", attributes={"trace.index": t}):
            for i in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span(f"child-{t}-{i}", attributes={"child.index": i}) as span:
                    span.add_event("work", {"step": i})
    assert provider.force_flush(30_000), "TracerProvider.force_flush timed out"
    provider.shutdown()
    return recorder


@pytest.mark.parametrize("protocol", SPAN_PROTOCOLS)
def test_spans(pharos: PharosServer, protocol: str):
    tenant = f"py-{protocol}-traces"
    wire = Wire()
    recorder = send_spans(span_exporter(protocol, pharos, tenant, wire), f"sdk-test-{protocol}")
    recorder.assert_all_succeeded(SPANS)
    assert len(recorder.calls) >= SPANS // 64, recorder.calls  # really several requests
    if pharos_protocol(protocol) == "http":
        wire.assert_protobuf("/v1/traces", tenant, protocol.endswith("-gzip"), len(recorder.calls))
    assert_pharos_counted(pharos, "traces", tenant, SPANS, protocol, len(recorder.calls))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_records(pharos: PharosServer, protocol: str):
    tenant = f"py-{protocol}-logs"
    wire = Wire()
    recorders = []
    for stream in range(LOG_STREAMS):
        exporter = log_exporter(protocol, pharos, tenant, wire)
        recorders.append(ExportRecorder(exporter, len))
        provider = LoggerProvider(
            resource=Resource.create({"service.name": f"sdk-test-{protocol}-stream-{stream}"})
        )
        provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, max_export_batch_size=25, schedule_delay_millis=100)
        )
        logger = provider.get_logger("pharos.sdk-tests.python")
        for i in range(LOGS_PER_STREAM):
            logger.emit(
                body=f"record {i} of stream {stream}",
                severity_number=SeverityNumber.WARN if i % 3 == 0 else SeverityNumber.INFO,
                severity_text="WARN" if i % 3 == 0 else "INFO",
                attributes={"record.index": i, "stream": stream},
            )
        assert provider.force_flush(30_000), "LoggerProvider.force_flush timed out"
        provider.shutdown()
    for r in recorders:
        r.assert_all_succeeded(LOGS_PER_STREAM)
    calls = sum(len(r.calls) for r in recorders)
    if protocol == "http-protobuf":
        wire.assert_protobuf("/v1/logs", tenant, False, calls)
    assert_pharos_counted(pharos, "logs", tenant, LOGS, protocol, calls)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metric_data_points(pharos: PharosServer, protocol: str):
    tenant = f"py-{protocol}-metrics"
    wire = Wire()
    exporter = metric_exporter(protocol, pharos, tenant, wire)
    recorder = ExportRecorder(exporter, count_metric_points)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)
    provider = MeterProvider(
        resource=Resource.create({"service.name": f"sdk-test-{protocol}"}), metric_readers=[reader]
    )
    meter = provider.get_meter("pharos.sdk-tests.python")
    request_count = meter.create_counter("sdk_test.requests", unit="1")
    latency = meter.create_histogram("sdk_test.latency", unit="ms")
    inflight = meter.create_up_down_counter("sdk_test.inflight")
    meter.create_observable_gauge(
        "sdk_test.temperature",
        callbacks=[lambda _options: [Observation(21.5, {"room": "a"}), Observation(19.0, {"room": "b"})]],
    )

    def record(round_: int) -> None:
        for route in ("/a", "/b", "/c"):
            request_count.add(1 + round_, {"route": route})
        for method in ("GET", "POST"):
            latency.record(12.5 * (round_ + 1), {"method": method})
        inflight.add(2 - round_, {"pool": "main"})

    record(0)
    assert provider.force_flush(30_000)
    assert len(recorder.calls) == 1 and recorder.calls[0][0] == POINTS_PER_COLLECTION, recorder.calls
    record(1)
    assert provider.force_flush(30_000)
    provider.shutdown()
    # Exactly the two force_flush collections were exported, nothing at shutdown.
    assert [n for n, _ in recorder.calls] == [POINTS_PER_COLLECTION] * COLLECTIONS, recorder.calls
    recorder.assert_all_succeeded(POINTS)
    if protocol == "http-protobuf":
        wire.assert_protobuf("/v1/metrics", tenant, False, len(recorder.calls))
    assert_pharos_counted(pharos, "metrics", tenant, POINTS, protocol, len(recorder.calls))


def test_pipeline_counts_survive_restart_exactly_once(pharos_factory, tmp_path):
    """The counting stage keeps its counts durably beside the queue offset: after a graceful
    restart on the same data dir the count must be what it was (not re-counted from the log), and
    new items add to it."""
    tenant = "py-restart-traces"
    data_dir = tmp_path / "data"

    first = pharos_factory(data_dir).start()
    recorder = send_spans(span_exporter("http-protobuf", first, tenant, Wire()), "sdk-test-restart")
    recorder.assert_all_succeeded(SPANS)
    assert_pharos_counted(first, "traces", tenant, SPANS, "http-protobuf", len(recorder.calls))
    code = first.stop()
    assert code == 0, f"pharos exited with {code} after SIGTERM:\n{first.log_tail()}"

    second = pharos_factory(data_dir).start()
    m = second.wait_processed("traces", tenant, SPANS)
    assert m.get("pharos_pipeline_items_total", signal="traces", tenant=tenant) == SPANS, second.log_tail()
    assert m.get("pharos_ingest_items_accepted_total", signal="traces", tenant=tenant) == 0

    more = send_spans(span_exporter("grpc", second, tenant, Wire()), "sdk-test-restart", traces=1)
    more.assert_all_succeeded(SPANS_PER_TRACE)
    m = second.wait_processed("traces", tenant, SPANS + SPANS_PER_TRACE)
    assert m.get("pharos_ingest_items_accepted_total", signal="traces", tenant=tenant) == SPANS_PER_TRACE
    assert m.get("pharos_pipeline_items_total", signal="traces", tenant=tenant) == SPANS + SPANS_PER_TRACE, (
        second.log_tail()
    )

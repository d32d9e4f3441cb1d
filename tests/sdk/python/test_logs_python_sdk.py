"""Real log clients against a real pharos; every line comes back out of the Loki API.

- Python's standard `logging`, through the OpenTelemetry SDK's LoggingHandler and the OTLP log
  exporters (gRPC and HTTP/protobuf): every line comes back exactly once, with its level, its
  attributes and the trace and span it was logged in, and LogQL line filters, structured
  metadata filters and metric queries count what was logged.
- Third-party Loki push clients from PyPI: `python-logging-loki` (JSON, one request per
  record, tags as stream labels) and `loki-logger-handler` (gzip JSON in batches, JSON lines,
  structured metadata); and a snappy protobuf `PushRequest`, Loki's default wire format.
- A SIGKILL while a client pushes: after a restart on the same data dir every acknowledged line
  is there exactly once, a client resending what was in doubt gets no duplicates, and a second
  SIGKILL and restart changes nothing.
- Query times in every form Loki reads them (nanoseconds, float seconds, RFC3339, unix seconds).

Witness: for the SDK, an in-memory exporter on the same LoggerProvider records exactly what was
handed to the OTLP exporter; for the push clients, the lines the test logged. What pharos answers
is compared with it line by line.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

import cramjam
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from logging_loki import LokiHandler
from loki_logger_handler.loki_logger_handler import LokiLoggerHandler
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from pharos_harness import PharosServer

VISIBLE_WITHIN_S = 10.0
TENANT = "shop"
MAX_ENTRIES = 5000  # Loki's max_entries_limit_per_query, and pharos's logs.max_entries default
NS = 1_000_000_000


# -- the Loki query API ---------------------------------------------------------------------------


def get(server: PharosServer, path: str, params: dict | list | None = None, tenant: str | None = TENANT) -> tuple[int, bytes]:
    url = f"http://{server.api}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(server: PharosServer, path: str, params=None, tenant: str | None = TENANT) -> dict:
    status, body = get(server, path, params, tenant)
    assert status == 200, (path, params, status, body[:2000])
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer


def entries(server: PharosServer, query: str, start: int, end: int, tenant: str | None = TENANT) -> list[tuple[int, str, dict]]:
    """Every entry a log query returns, as (ns, line, result stream labels), oldest first."""
    answer = get_json(
        server,
        "/loki/api/v1/query_range",
        {"query": query, "start": start, "end": end, "limit": MAX_ENTRIES, "direction": "forward"},
        tenant,
    )
    data = answer["data"]
    assert data["resultType"] == "streams", data
    assert "stats" in data, data.keys()
    out = []
    for stream in data["result"]:
        stamps = [int(ts) for ts, _ in stream["values"]]
        assert stamps == sorted(stamps), f"direction=forward but a stream is not oldest first: {stream}"
        for ts, line in stream["values"]:
            assert isinstance(ts, str), f"timestamps are nanosecond strings, got {ts!r}"
            out.append((int(ts), line, stream["stream"]))
    assert len(out) < MAX_ENTRIES, "the answer hit the limit: the test must page"
    out.sort(key=lambda e: e[0])
    return out


def wait_entries(server: PharosServer, query: str, start: int, end: int, want: int, since: float,
                 within: float = VISIBLE_WITHIN_S, tenant: str | None = TENANT) -> tuple[list, float]:
    """Polls until the query returns at least `want` entries or `within` seconds have passed since
    `since` (a monotonic time); then reads once more after a pause, so that a late duplicate shows.
    Returns the entries and how long after `since` they were first all there."""
    while True:
        got = entries(server, query, start, end, tenant)
        if len(got) >= want:
            took = time.monotonic() - since
            time.sleep(0.3)
            return entries(server, query, start, end, tenant), took
        if time.monotonic() - since > within:
            return got, float("inf")
        time.sleep(0.1)


def count_lines(got) -> collections.Counter:
    return collections.Counter(line for _, line, _ in got)


def assert_each_exactly_once(got, want_lines, what: str) -> None:
    counts = count_lines(got)
    missing = sorted(set(want_lines) - set(counts))
    extra = sorted(set(counts) - set(want_lines))
    doubled = sorted(line for line, n in counts.items() if n > 1)
    assert not missing and not extra and not doubled, (
        f"{what}: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]}), "
        f"{len(doubled)} returned more than once (e.g. {doubled[:3]})"
    )


def now_ns() -> int:
    return time.time_ns()


# -- 1. Python logging through the OpenTelemetry SDK ----------------------------------------------

# OTel severity_text -> severity_number, for the levels the SDK's LoggingHandler maps Python's to
# (WARNING -> WARN, CRITICAL -> FATAL).
SEVERITY_NUMBER = {"DEBUG": "5", "INFO": "9", "WARN": "13", "ERROR": "17", "FATAL": "21"}


class RecordingExporter(LogRecordExporter):
    """Wraps the OTLP exporter and keeps each export's size and result."""

    def __init__(self, inner: LogRecordExporter):
        self.inner = inner
        self.results: list[tuple[int, LogRecordExportResult]] = []

    def export(self, batch):
        result = self.inner.export(batch)
        self.results.append((len(batch), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CheckoutProgram:
    """The instrumented program: a checkout service that logs with the standard `logging` module.
    Each of 50 orders logs 4 lines at various levels with `extra` attributes; odd orders run inside
    a span, every tenth order fails with an exception, every fifth issues a refund."""

    ORDERS = 50

    def __init__(self, server: PharosServer, protocol: str):
        self.service = f"checkout-{protocol}"
        resource = Resource.create({
            "service.name": self.service,
            "service.namespace": "shop",
            "deployment.environment": "test",
            "service.version": "2.1.0",
        })
        # The stream labels pharos makes of that resource: Loki's default list of resource
        # attributes, dots as underscores; the SDK adds a random service.instance.id, one of them.
        self.stream_labels = {"service_name": self.service, "service_namespace": "shop", "deployment_environment": "test"}
        if "service.instance.id" in resource.attributes:
            self.stream_labels["service_instance_id"] = str(resource.attributes["service.instance.id"])
        if protocol == "grpc":
            otlp = GrpcLogExporter(endpoint=f"http://{server.grpc}", insecure=True, headers={"x-scope-orgid": TENANT})
        else:
            otlp = HttpLogExporter(endpoint=f"http://{server.http}/v1/logs", headers={"X-Scope-OrgID": TENANT})
        self.exporter = RecordingExporter(otlp)
        self.memory = InMemoryLogRecordExporter()
        self.provider = LoggerProvider(resource=resource)
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.memory))
        # Several export requests (50 records each); only force_flush or a full batch sends.
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(self.exporter, schedule_delay_millis=60_000, max_export_batch_size=50)
        )
        self.tracer = TracerProvider(resource=resource).get_tracer("shop.checkout")
        with warnings.catch_warnings():
            # The SDK's LoggingHandler is deprecated in favour of opentelemetry-instrumentation-logging's;
            # it is still what most programs use.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.handler = LoggingHandler(level=logging.DEBUG, logger_provider=self.provider)
        # A logger of its own, not the root: the SDK's own log lines must not loop into the exporter.
        self.logger = logging.getLogger(f"shop.checkout.{protocol}")
        self.logger.setLevel(logging.DEBUG)
        self.logger.propagate = False
        self.logger.addHandler(self.handler)

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.provider.shutdown()

    def checkout(self, order: int) -> None:
        """The four lines of one order; an odd order's inside a span, the last two in a child span."""
        log = self.logger
        attrs = {"order.id": f"order-{order}", "order.items": order % 7 + 1, "customer": f"c-{order % 3}"}
        traced = order % 2 == 1
        with self.tracer.start_as_current_span(f"checkout {order}") if traced else contextlib.nullcontext():
            log.debug("order %d step 0: cart loaded with %d items", order, order % 7 + 1, extra=attrs)
            if order % 3 == 0:
                log.warning("order %d step 1: stock low for sku-%d", order, order, extra=attrs)
            else:
                log.info("order %d step 1: stock reserved", order, extra=attrs)
            with self.tracer.start_as_current_span("charge card") if traced else contextlib.nullcontext():
                if order % 10 == 0:
                    try:
                        raise ValueError(f"card declined for order {order}")
                    except ValueError:
                        log.exception("order %d step 2: payment failed", order, extra=attrs)
                else:
                    log.info("order %d step 2: payment accepted", order, extra=attrs)
                if order % 5 == 0:
                    log.critical("order %d step 3: refund issued", order, extra=attrs)
                else:
                    log.info("order %d step 3: shipped", order, extra=attrs)

    def run(self) -> None:
        for order in range(self.ORDERS):
            self.checkout(order)

    def flush(self) -> None:
        assert self.provider.force_flush(30_000), "the SDK could not export every log record"
        failed = [r for r in self.exporter.results if r[1] != LogRecordExportResult.SUCCESS]
        assert not failed, f"exports failed: {failed}"
        assert sum(n for n, _ in self.exporter.results) == len(self.records())

    def records(self):
        return self.memory.get_finished_logs()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_python_logging_through_the_otel_sdk_comes_back_through_the_loki_api(pharos_factory, protocol):
    server = pharos_factory().start()
    started_ns = now_ns()
    program = CheckoutProgram(server, protocol)
    try:
        program.run()
        program.flush()
        acked = time.monotonic()
    finally:
        program.close()
    records = program.records()
    assert len(records) == CheckoutProgram.ORDERS * 4
    want = {r.log_record.body: r.log_record for r in records}
    assert len(want) == len(records), "the program's lines are distinct"
    assert len(program.exporter.results) >= 4, program.exporter.results

    selector = f'{{service_name="{program.service}"}}'
    start, end = started_ns - 60 * NS, now_ns() + 60 * NS
    got, took = wait_entries(server, selector, start, end, len(want), since=acked)
    assert took <= VISIBLE_WITHIN_S, f"only {len(got)} of {len(want)} lines visible {VISIBLE_WITHIN_S}s after the SDK's export was acknowledged"
    assert_each_exactly_once(got, want, selector)

    in_span = 0
    for ts, line, labels in got:
        sdk = want[line]
        assert ts == sdk.timestamp, (line, ts, sdk.timestamp)
        # Stream labels from the resource, dots as underscores.
        assert {k: labels.get(k) for k in program.stream_labels} == program.stream_labels, labels
        # Structured metadata: the severity, the record's attributes, the scope, the other resource attributes.
        assert labels.get("severity_text") == sdk.severity_text, (line, labels)
        assert labels.get("severity_number") == SEVERITY_NUMBER[sdk.severity_text] == str(sdk.severity_number.value), (line, labels)
        assert labels.get("order_id") == sdk.attributes["order.id"], (line, labels)
        assert labels.get("order_items") == str(sdk.attributes["order.items"]), (line, labels)
        assert labels.get("customer") == sdk.attributes["customer"], (line, labels)
        assert labels.get("code_function_name") == sdk.attributes["code.function.name"], (line, labels)
        assert labels.get("service_version") == "2.1.0", (line, labels)
        if "exception.type" in sdk.attributes:
            assert labels.get("exception_type") == "ValueError", (line, labels)
        # The trace and span the line was logged in, lower-case hex; none outside a span.
        if sdk.trace_id:
            in_span += 1
            assert labels.get("trace_id") == format(sdk.trace_id, "032x"), (line, labels)
            assert labels.get("span_id") == format(sdk.span_id, "016x"), (line, labels)
        else:
            assert "trace_id" not in labels and "span_id" not in labels, (line, labels)
    assert in_span == 25 * 4

    # A line filter.
    refunds = {line for line in want if "refund" in line}
    assert len(refunds) == 10
    assert_each_exactly_once(entries(server, selector + ' |= "refund"', start, end), refunds, "|= refund")
    # Structured metadata filters, as labels.
    errors = {line for line, r in want.items() if r.severity_text == "ERROR"}
    assert len(errors) == 5
    assert_each_exactly_once(entries(server, selector + ' | severity_text="ERROR"', start, end), errors, "severity_text=ERROR")
    one = next(r for r in records if r.log_record.trace_id and r.log_record.body.startswith("order 7 ")).log_record
    trace = format(one.trace_id, "032x")
    of_trace = {line for line, r in want.items() if r.trace_id and format(r.trace_id, "032x") == trace}
    assert len(of_trace) == 4
    assert_each_exactly_once(entries(server, f'{selector} | trace_id="{trace}"', start, end), of_trace, "trace_id filter")
    assert_each_exactly_once(
        entries(server, f'{selector} | order_id="order-7" |~ "step [23]"', start, end),
        {"order 7 step 2: payment accepted", "order 7 step 3: shipped"},
        "order_id filter and a regex line filter",
    )

    # A metric query, instant: lines per level over the last 5 minutes.
    per_level = collections.Counter(r.severity_text for r in want.values())
    assert per_level == {"DEBUG": 50, "INFO": 118, "WARN": 17, "ERROR": 5, "FATAL": 10}, per_level
    answer = get_json(server, "/loki/api/v1/query", {
        "query": f"sum by (severity_text) (count_over_time({selector}[5m]))",
        "time": now_ns(),
    })
    assert answer["data"]["resultType"] == "vector", answer
    got_levels = {}
    for sample in answer["data"]["result"]:
        assert set(sample["metric"]) == {"severity_text"}, sample
        t, value = sample["value"]
        assert isinstance(t, (int, float)) and isinstance(value, str), sample
        got_levels[sample["metric"]["severity_text"]] = float(value)
    assert got_levels == {level: float(n) for level, n in per_level.items()}

    # A metric query over a range: a matrix of [float seconds, "value"] whose steps tile the time
    # the lines were logged in, so they add up to every line.
    step = 10
    first = min(r.timestamp for r in want.values()) // NS
    last = max(r.timestamp for r in want.values()) // NS
    answer = get_json(server, "/loki/api/v1/query_range", {
        "query": f"sum(count_over_time({selector}[{step}s]))",
        "start": first * NS, "end": (first + step * ((last - first) // step + 1)) * NS, "step": f"{step}s",
    })
    assert answer["data"]["resultType"] == "matrix", answer
    [series] = answer["data"]["result"]
    assert series["metric"] == {}
    for t, value in series["values"]:
        assert isinstance(t, (int, float)) and isinstance(value, str), series["values"]
    assert sum(float(v) for _, v in series["values"]) == len(want), series["values"]

    # What Grafana's label browser asks.
    labels = get_json(server, "/loki/api/v1/labels", {"start": start, "end": end})["data"]
    assert set(program.stream_labels) <= set(labels), labels
    values = get_json(server, "/loki/api/v1/label/service_name/values", {"start": start, "end": end})["data"]
    assert values == [program.service], values
    series = get_json(server, "/loki/api/v1/series", [("match[]", selector), ("start", start), ("end", end)])["data"]
    assert series == [program.stream_labels], series
    # Another tenant sees none of it.
    assert entries(server, selector, start, end, tenant="someone-else") == []


# -- 2. Loki push clients --------------------------------------------------------------------------


class RecordingLokiHandler(LokiHandler):
    """python-logging-loki's handler, keeping the errors it would only print."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.errors: list[str] = []

    def handleError(self, record):  # noqa: N802 (logging's name)
        self.errors.append(f"{record.getMessage()}: {sys.exc_info()[1]!r}")
        self.emitter.close()


def test_python_logging_loki_tags_come_back_as_stream_labels(pharos_factory):
    server = pharos_factory().start()
    started_ns = now_ns()
    # The client posts to the push URL it is given: the OTLP/HTTP port here. No tenant header
    # (this client cannot send one), so the default tenant.
    handler = RecordingLokiHandler(
        url=f"http://{server.http}/loki/api/v1/push", tags={"app": "billing", "env": "test"}, version="1"
    )
    logger = logging.getLogger("billing.worker")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    want: dict[str, dict] = {}
    try:
        for i in range(60):
            labels = {"app": "billing", "env": "test", "logger": "billing.worker"}
            if i % 4 == 0:
                line, level, tags = f"invoice {i} overdue", logging.WARNING, {"customer-tier": "gold"}
                labels |= {"severity": "warning", "customer_tier": "gold"}
            elif i % 7 == 0:
                line, level, tags = f"invoice {i} could not be sent: smtp said 550", logging.ERROR, {}
                labels |= {"severity": "error"}
            else:
                line, level, tags = f'invoice {i} sent to "c-{i % 5}" ✓', logging.INFO, {}
                labels |= {"severity": "info"}
            logger.log(level, "%s", line, extra={"tags": tags})
            want[line] = labels
        # Each record was one POST, answered before logging returned.
        acked = time.monotonic()
    finally:
        logger.removeHandler(handler)
        handler.emitter.close()
    assert not handler.errors, handler.errors

    start, end = started_ns - 60 * NS, now_ns() + 60 * NS
    got, took = wait_entries(server, '{app="billing"}', start, end, len(want), since=acked, tenant=None)
    assert took <= VISIBLE_WITHIN_S, f"only {len(got)} of {len(want)} lines visible after {VISIBLE_WITHIN_S}s"
    assert_each_exactly_once(got, want, '{app="billing"}')
    for ts, line, labels in got:
        # JSON push without structured metadata: the result labels are exactly the stream's.
        assert labels == want[line], (line, labels)
        assert started_ns <= ts <= now_ns(), (line, ts)

    # The tags are labels to select on, to list, and to list values of.
    gold = {line for line, labels in want.items() if labels.get("customer_tier") == "gold"}
    assert len(gold) == 15
    assert_each_exactly_once(entries(server, '{app="billing", customer_tier="gold"}', start, end, tenant=None), gold, "gold")
    not_info = {line for line, labels in want.items() if labels["severity"] != "info"}
    assert_each_exactly_once(entries(server, '{app="billing", severity=~"warn.*|error"}', start, end, tenant=None), not_info, "regex")
    names = get_json(server, "/loki/api/v1/labels", {"start": start, "end": end}, tenant=None)["data"]
    assert {"app", "env", "logger", "severity", "customer_tier"} <= set(names), names
    values = get_json(server, "/loki/api/v1/label/severity/values", {"start": start, "end": end}, tenant=None)["data"]
    assert sorted(values) == ["error", "info", "warning"], values
    series = get_json(server, "/loki/api/v1/series", [("match[]", '{app="billing"}'), ("start", start), ("end", end)], tenant=None)["data"]
    assert len(series) == len({frozenset(s.items()) for s in series}), f"a series listed twice: {series}"
    assert {frozenset(s.items()) for s in series} == {frozenset(l.items()) for l in want.values()}, series


def test_loki_logger_handler_gzip_batches_with_structured_metadata(pharos_factory):
    server = pharos_factory().start()
    started_ns = now_ns()
    # This client batches records, gzips the JSON body and sends every `timeout` seconds; it
    # writes each record as a JSON line and can move chosen fields into structured metadata.
    handler = LokiLoggerHandler(
        url=f"http://{server.api}/loki/api/v1/push",
        labels={"app": "inventory", "env": "test"},
        additional_headers={"X-Scope-OrgID": TENANT},
        timeout=0.5,
        compressed=True,
        enable_structured_loki_metadata=True,
        loki_metadata={"region": "eu-west-1"},
        loki_metadata_keys=["request_id"],
        enable_self_errors=True,
    )
    logger = logging.getLogger("inventory.sync")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    want: dict[str, dict] = {}
    try:
        for i in range(40):
            level = logging.WARNING if i % 4 == 0 else logging.INFO
            logger.log(level, "sku-%d restocked", i, extra={"request_id": f"req-{i}", "sku": f"sku-{i}", "quantity": i * 3})
            want[f"sku-{i} restocked"] = {"level": logging.getLevelName(level), "request_id": f"req-{i}"}
        # Wait for the handler's thread to take and send everything (it has no flush to call).
        handler.flush_event.set()
        deadline = time.monotonic() + 10
        while not handler.buffer.empty():
            assert time.monotonic() < deadline, "loki-logger-handler did not send its buffer"
            time.sleep(0.05)
        sent = time.monotonic()
    finally:
        logger.removeHandler(handler)
    start, end = started_ns - 60 * NS, now_ns() + 60 * NS
    got, took = wait_entries(server, '{app="inventory"}', start, end, len(want), since=sent)
    assert not handler.error, "loki-logger-handler failed to push (see its error on stderr)"
    assert took <= VISIBLE_WITHIN_S, f"only {len(got)} of {len(want)} lines visible after {VISIBLE_WITHIN_S}s"
    by_message = {}
    for ts, line, labels in got:
        record = json.loads(line)
        by_message.setdefault(record["message"], []).append((ts, record, labels))
    assert sorted(by_message) == sorted(want), sorted(set(by_message) ^ set(want))
    for message, found in by_message.items():
        assert len(found) == 1, f"{message!r} returned {len(found)} times"
        [(ts, record, labels)] = found
        assert ts == int(record["timestamp"] * 1e9), (ts, record)
        assert record["level"] == want[message]["level"] and record["sku"] == message.split()[0]
        assert "request_id" not in record, "moved to structured metadata"
        assert labels == {"app": "inventory", "env": "test", "region": "eu-west-1", "request_id": want[message]["request_id"]}, labels

    # Structured metadata as a label filter, and the JSON parser on the lines.
    assert [json.loads(l)["message"] for _, l, _ in entries(server, '{app="inventory"} | request_id="req-7"', start, end)] == ["sku-7 restocked"]
    warned = {m for m, w in want.items() if w["level"] == "WARNING"}
    got = entries(server, '{app="inventory"} | json | level="WARNING" | quantity > 30', start, end)
    assert {json.loads(l)["message"] for _, l, _ in got} == {m for m in warned if int(m.split()[0][4:]) * 3 > 30}
    for _, line, labels in got:
        # Parsed fields show up as labels too.
        assert labels["level"] == "WARNING" and labels["sku"] == json.loads(line)["sku"], labels
    # Stream labels only in the series API: structured metadata is not indexed.
    series = get_json(server, "/loki/api/v1/series", [("match[]", '{app="inventory"}'), ("start", start), ("end", end)])["data"]
    assert series == [{"app": "inventory", "env": "test"}], series


def push_request_class():
    """Loki's `logproto.PushRequest` (pkg/push/push.proto, Apache-2.0), built at run time."""
    fd = descriptor_pb2.FileDescriptorProto(name="pharos_test_push.proto", package="logproto", syntax="proto3")
    fd.dependency.append("google/protobuf/timestamp.proto")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, *fields):
        m = fd.message_type.add(name=name)
        for number, (field_name, kind, type_name, repeated) in enumerate(fields, start=1):
            f = m.field.add(name=field_name, number=number, type=kind,
                            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
            if type_name:
                f.type_name = type_name

    message("PushRequest", ("streams", F.TYPE_MESSAGE, ".logproto.StreamAdapter", True))
    message("StreamAdapter", ("labels", F.TYPE_STRING, None, False), ("entries", F.TYPE_MESSAGE, ".logproto.EntryAdapter", True),
            ("hash", F.TYPE_UINT64, None, False))
    message("EntryAdapter", ("timestamp", F.TYPE_MESSAGE, ".google.protobuf.Timestamp", False), ("line", F.TYPE_STRING, None, False),
            ("structuredMetadata", F.TYPE_MESSAGE, ".logproto.LabelPairAdapter", True),
            ("parsed", F.TYPE_MESSAGE, ".logproto.LabelPairAdapter", True))
    message("LabelPairAdapter", ("name", F.TYPE_STRING, None, False), ("value", F.TYPE_STRING, None, False))
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("logproto.PushRequest"))


def test_snappy_protobuf_push_comes_back_with_its_labels_and_metadata(pharos_factory):
    server = pharos_factory().start()
    PushRequest = push_request_class()
    base = now_ns() - 30 * NS
    request = PushRequest()
    want = {}
    for host in ("web-1", "web-2"):
        stream = request.streams.add(labels=f'{{job="nginx", host="{host}"}}')
        for i in range(25):
            ts = base + i * 1_000_000
            entry = stream.entries.add(line=f'{host} GET /item/{i} 200 {i * 10}ms')
            entry.timestamp.seconds, entry.timestamp.nanos = divmod(ts, NS)
            entry.structuredMetadata.add(name="request_id", value=f"{host}-r{i}")
            want[entry.line] = (ts, {"job": "nginx", "host": host, "request_id": f"{host}-r{i}"})
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
    # As Promtail and Alloy send it: Content-Type only, the body snappy block-compressed.
    req = urllib.request.Request(
        f"http://{server.api}/loki/api/v1/push", data=body, method="POST",
        headers={"Content-Type": "application/x-protobuf", "X-Scope-OrgID": TENANT},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    acked = time.monotonic()
    start, end = base - NS, now_ns() + NS
    got, took = wait_entries(server, '{job="nginx"}', start, end, len(want), since=acked)
    assert took <= VISIBLE_WITHIN_S, f"only {len(got)} of {len(want)} lines visible after {VISIBLE_WITHIN_S}s"
    assert_each_exactly_once(got, want, '{job="nginx"}')
    for ts, line, labels in got:
        assert (ts, labels) == want[line], (line, ts, labels)
    assert len(entries(server, '{job="nginx", host="web-2"} |= "200" | request_id=~"web-2-r1.*"', start, end)) == 11


# -- 3. SIGKILL while a client pushes ---------------------------------------------------------------


class Pusher:
    """A Loki push client over the JSON API: batch k holds LINES lines over two streams, with
    increasing timestamps. It remembers which batches were acknowledged (204) and which were in
    doubt (sent, no answer)."""

    LINES = 50

    def __init__(self, base_ns: int):
        self.base = base_ns
        self.acked: list[int] = []
        self.in_doubt: list[int] = []
        self.refused: list[tuple[int, int, bytes]] = []

    def lines(self, k: int) -> dict[str, tuple[int, dict]]:
        out = {}
        for j in range(self.LINES):
            n = k * self.LINES + j
            out[f"batch {k} line {j}"] = (self.base + n * 1_000_000, {"app": "crash", "shard": str(j % 2)})
        return out

    def body(self, k: int) -> bytes:
        streams = collections.defaultdict(list)
        for line, (ts, labels) in self.lines(k).items():
            streams[labels["shard"]].append([str(ts), line])
        return json.dumps(
            {"streams": [{"stream": {"app": "crash", "shard": s}, "values": v} for s, v in sorted(streams.items())]}
        ).encode()

    def push(self, server: PharosServer, k: int) -> int:
        req = urllib.request.Request(
            f"http://{server.http}/loki/api/v1/push", data=self.body(k), method="POST",
            headers={"Content-Type": "application/json", "X-Scope-OrgID": TENANT},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status


def test_no_acknowledged_line_is_lost_or_doubled_across_sigkill(pharos_factory):
    # Blocks are flushed every second, so the first batches land in a block and the later ones
    # are in the head (and the write-ahead log) when pharos is killed.
    settings = ["logs.flush_interval=1s"]
    server = pharos_factory(settings=settings).start()
    batches = 80
    pusher = Pusher(now_ns() - 120 * NS)
    for k in range(20):
        assert pusher.push(server, k) == 204
        pusher.acked.append(k)
    deadline = time.monotonic() + 10
    while server.metrics().sum("pharos_logs_blocks_flushed_total") < 1:
        assert time.monotonic() < deadline, "no log block was flushed within 10s with logs.flush_interval=1s"
        time.sleep(0.1)

    # The client goes on pushing; pharos is killed once 20 more batches were acknowledged, with
    # the next request most likely in flight.
    twenty_more = threading.Event()

    def keep_pushing():
        for k in range(20, batches):
            try:
                status = pusher.push(server, k)
            except urllib.error.HTTPError as e:
                pusher.refused.append((k, e.code, e.read()))
                return
            except (OSError, http.client.HTTPException):
                pusher.in_doubt.append(k)
                return
            if status != 204:
                pusher.refused.append((k, status, b""))
                return
            pusher.acked.append(k)
            if len(pusher.acked) == 40:
                twenty_more.set()

    thread = threading.Thread(target=keep_pushing, daemon=True)
    thread.start()
    assert twenty_more.wait(30), "the client could not push 20 more batches"
    server.kill()
    thread.join(15)
    assert not thread.is_alive(), "the client did not notice pharos was gone"
    assert not pusher.refused, f"a push was refused before the kill: {pusher.refused}"
    acked, in_doubt = list(pusher.acked), list(pusher.in_doubt)
    assert len(acked) >= 40
    acked_lines = {line for k in acked for line in pusher.lines(k)}
    doubt_lines = {line for k in in_doubt for line in pusher.lines(k)}
    print(f"killed after {len(acked)} acknowledged batches, in doubt: {in_doubt}")

    restarted = pharos_factory(data_dir=server.data_dir, settings=settings).start()
    restarted_at = time.monotonic()
    start, end = pusher.base - NS, now_ns() + 60 * NS
    got, took = wait_entries(restarted, '{app="crash"}', start, end, len(acked_lines), since=restarted_at)
    assert took <= VISIBLE_WITHIN_S, f"{len(got)} lines after the restart, {len(acked_lines)} were acknowledged"
    counts = count_lines(got)
    print(f"after the restart: {len(got)} lines, {len(set(counts) & doubt_lines)} of the {len(doubt_lines)} in doubt")
    missing = sorted(acked_lines - set(counts))
    doubled = sorted(line for line, n in counts.items() if n > 1)
    unknown = sorted(set(counts) - acked_lines - doubt_lines)
    assert not missing, f"{len(missing)} acknowledged lines lost, e.g. {missing[:5]} (acked batches {acked[0]}..{acked[-1]})"
    assert not doubled, f"{len(doubled)} lines returned more than once, e.g. {doubled[:5]}"
    assert not unknown, unknown[:5]
    for ts, line, labels in got:
        assert (ts, labels) == pusher.lines(int(line.split()[1]))[line], (ts, line, labels)

    # The client resends what was in doubt and pushes the rest: Loki drops an entry identical to
    # one it has (same stream, time and line), so every line is there exactly once.
    for k in range(batches):
        if k not in acked:
            assert pusher.push(restarted, k) == 204
    all_lines = {line for k in range(batches) for line in pusher.lines(k)}
    resent = time.monotonic()
    got, took = wait_entries(restarted, '{app="crash"}', start, end, len(all_lines), since=resent)
    assert took <= VISIBLE_WITHIN_S, f"{len(got)} of {len(all_lines)} lines"
    assert_each_exactly_once(got, all_lines, "after resending the batches in doubt")

    # A second SIGKILL, a second restart: what the first restart replayed and flushed is not
    # replayed into the store twice.
    restarted.kill()
    again = pharos_factory(data_dir=server.data_dir, settings=settings).start()
    got, took = wait_entries(again, '{app="crash"}', start, end, len(all_lines), since=time.monotonic())
    assert took <= VISIBLE_WITHIN_S, f"{len(got)} of {len(all_lines)} lines after the second restart"
    assert_each_exactly_once(got, all_lines, "after a second SIGKILL and restart")



def push_json(server: PharosServer, streams: list[dict], tenant: str = TENANT) -> None:
    req = urllib.request.Request(
        f"http://{server.api}/loki/api/v1/push", data=json.dumps({"streams": streams}).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Scope-OrgID": tenant},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def test_query_times_are_read_in_every_form_loki_takes(pharos_factory):
    """Loki reads `start`, `end` and `time` as nanoseconds, float seconds, RFC3339, or, for an
    integer of at most 10 digits, seconds (`start=$(date +%s)`, as people and scripts send)."""
    server = pharos_factory().start()
    second = int(time.time()) - 30
    lines = {f"tick {i}": (second + i) * NS + 500_000_000 for i in range(10)}
    push_json(server, [{"stream": {"app": "clock"}, "values": [[str(ts), line] for line, ts in lines.items()]}])
    got, took = wait_entries(server, '{app="clock"}', second * NS, (second + 10) * NS, len(lines), since=time.monotonic())
    assert_each_exactly_once(got, lines, "nanoseconds")
    # Ticks 2..6 lie in [second+2, second+7).
    want = {f"tick {i}" for i in range(2, 7)}
    forms = {
        "nanoseconds": ((second + 2) * NS, (second + 7) * NS),
        "float seconds": (f"{second + 2}.0", f"{second + 7}.0"),
        "RFC3339": tuple(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second + d)) for d in (2, 7)),
        "unix seconds (10 digits)": (second + 2, second + 7),
    }
    wrong = {}
    for form, (start, end) in forms.items():
        answer = get_json(server, "/loki/api/v1/query_range", {"query": '{app="clock"}', "start": start, "end": end, "limit": 100})
        found = {line for stream in answer["data"]["result"] for _, line in stream["values"]}
        if found != want:
            wrong[form] = (start, end, sorted(found))
    assert not wrong, f"start/end read differently from Loki: {wrong}"

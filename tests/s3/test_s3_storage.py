"""Blocks on a real S3-compatible server (moto's server, from PyPI): logs and traces written by
one pharos are read back by another that has only the bucket (a fresh data directory, so no
local file can answer), after the first was killed with SIGKILL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import boto3
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "sdk" / "python"))
from pharos_harness import PharosServer  # noqa: E402

SHARED = HERE.parents[2] / "shared"
BUCKET = "pharos-blocks"
KEYS = {"aws_access_key_id": "test-key", "aws_secret_access_key": "test-secret", "region_name": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(tmp_path):
    """A moto S3 server on a loopback port with an empty bucket; yields (endpoint, client)."""
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, **KEYS)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)
    yield endpoint, client
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def settings(endpoint: str) -> list[str]:
    return [
        "storage.backend=s3",
        f"storage.s3.bucket={BUCKET}",
        f"storage.s3.endpoint={endpoint}",
        "storage.s3.allow_http=true",
        f"storage.s3.access_key_id={KEYS['aws_access_key_id']}",
        f"storage.s3.secret_access_key={KEYS['aws_secret_access_key']}",
        "logs.flush_interval=1s",
        "traces.flush_interval=1s",
        "processor.commit_interval=200ms",
    ]


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.status == 200, resp.status
        return json.loads(resp.read())


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_blocks_written_to_s3_are_read_back_by_a_pharos_with_only_the_bucket(tmp_path, s3):
    endpoint, client = s3
    first = PharosServer(data_dir=tmp_path / "first", log_path=tmp_path / "first.log", settings=settings(endpoint))
    first.start()
    try:
        now = time.time_ns()
        lines = [f"order {k} shipped to zone-{k % 7}" for k in range(200)]
        streams = [
            {
                "stream": {"app": "shipping", "env": "s3-test"},
                "values": [[str(now - (200 - k) * 1_000_000), line] for k, line in enumerate(lines)],
            }
        ]
        assert post(f"http://{first.api}/loki/api/v1/push", {"streams": streams}) == 204
        traces = json.loads((SHARED / "conformance" / "otlp" / "trace.json").read_text())
        assert post(f"http://{first.http}/v1/traces", traces) == 200
        trace_ids = {
            span["traceId"]
            for rs in traces["resourceSpans"]
            for ss in rs["scopeSpans"]
            for span in ss["spans"]
        }
        span_count = sum(len(ss["spans"]) for rs in traces["resourceSpans"] for ss in rs["scopeSpans"])

        wait_for("a log block", lambda: first.metrics().sum("pharos_logs_blocks_flushed_total") >= 1)
        wait_for("a trace block", lambda: first.metrics().sum("pharos_traces_blocks_flushed_total") >= 1)
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
        assert any("logs" in k for k in keys), keys
        assert any("traces" in k for k in keys), keys
        # Nothing of the blocks on local disk.
        local = [p for p in (tmp_path / "first").rglob("*.parquet")]
        assert local == [], local
    finally:
        first.kill()  # SIGKILL: whatever is in S3 stays as it is

    second = PharosServer(data_dir=tmp_path / "second", log_path=tmp_path / "second.log", settings=settings(endpoint))
    second.start()
    try:
        params = urllib.parse.urlencode(
            {
                "query": '{app="shipping"}',
                "start": str(now - 10**12),
                "end": str(time.time_ns() + 10**9),
                "limit": "1000",
            }
        )

        def logs_back():
            body = get_json(f"http://{second.api}/loki/api/v1/query_range?{params}")
            return [v[1] for s in body["data"]["result"] for v in s["values"]]

        got = wait_for("the lines from S3", logs_back)
        assert sorted(got) == sorted(lines)
        total = 0
        for trace_id in trace_ids:
            trace = get_json(f"http://{second.api}/api/v2/traces/{trace_id}")
            spans = sum(len(ss["spans"]) for rs in trace["trace"]["resourceSpans"] for ss in rs["scopeSpans"])
            assert spans, trace
            total += spans
        assert total == span_count
        assert list((tmp_path / "second").rglob("*.parquet")) == []
    finally:
        code = second.stop()
    assert code == 0, second.log_tail()
    assert second.problems() == [], second.problems()

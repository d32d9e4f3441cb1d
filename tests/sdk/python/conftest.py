"""Fixtures: a real `pharos serve` per test, on ephemeral loopback ports, in a temp data dir."""

from __future__ import annotations

import os

import pytest

from pharos_harness import PharosServer

# The SDK reads OTEL_* variables (exporter endpoints, headers, temporality, OTEL_SDK_DISABLED...);
# the tests configure everything explicitly, so a developer's environment must not leak in.
for _name in list(os.environ):
    if _name.startswith("OTEL_"):
        del os.environ[_name]


@pytest.fixture
def pharos_factory(tmp_path):
    """Makes PharosServer objects (not started) that share this test's temp dir. At teardown every
    one still running is stopped with SIGTERM and must exit 0, and none may have logged a WARN or
    ERROR line."""
    servers: list[PharosServer] = []

    def make(data_dir=None, settings=(), config: str = "") -> PharosServer:
        server = PharosServer(
            data_dir=data_dir or (tmp_path / "data"),
            log_path=tmp_path / f"pharos-{len(servers)}.log",
            settings=list(settings),
            config=config,
        )
        servers.append(server)
        return server

    yield make

    failures = []
    for server in servers:
        if server.proc is None:
            continue
        if server.proc.returncode is None:
            try:
                code = server.stop()
            except AssertionError as e:
                failures.append(str(e))
                continue
            if code != 0:
                failures.append(f"pharos exited with {code} after SIGTERM:\n{server.log_tail()}")
        problems = server.problems()
        if problems:
            failures.append("pharos logged warnings or errors:\n" + "\n".join(problems))
    assert not failures, "\n\n".join(failures)


@pytest.fixture
def pharos(pharos_factory) -> PharosServer:
    """A started pharos; yields it (addresses in .grpc, .http, .api), SIGTERM + exit 0 at teardown."""
    server = pharos_factory()
    try:
        server.start()
    except Exception:
        server.kill()
        raise
    return server

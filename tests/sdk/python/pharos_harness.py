"""Starts and stops a real `pharos serve` process and reads its Prometheus self-metrics.

Used by conftest.py and the tests; nothing here knows about the OpenTelemetry SDK.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_BIN = os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "/root/.cache/pharos/target"), "debug", "pharos"
)

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
PIPELINE_TIMEOUT_S = 20.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_READY = re.compile(
    r"pharos is ready otlp_grpc=(?P<grpc>\S+) otlp_http=(?P<http>\S+) api=(?P<api>\S+) partitions=(?P<partitions>\d+)"
)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def pharos_bin() -> str:
    return os.environ.get("PHAROS_BIN") or DEFAULT_BIN


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus/OpenMetrics text -> {(sample name, frozenset of (label, value)): value}."""
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"unparseable metrics line: {line!r}")
        labels = frozenset(
            (k, v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\"))
            for k, v in _LABEL.findall(m.group("labels") or "")
        )
        key = (m.group("name"), labels)
        if key in out:
            raise ValueError(f"duplicate sample {key} in /metrics")
        out[key] = float(m.group("value"))
    return out


@dataclass
class Metrics:
    samples: dict[tuple[str, frozenset], float]

    def get(self, name: str, **labels: str) -> float:
        """The value of the one sample with exactly these labels; 0 when the series does not exist
        (counters are created on first increment)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def matching(self, name: str, **labels: str) -> dict[frozenset, float]:
        """Every sample of `name` whose labels include `labels`."""
        want = set(labels.items())
        return {lbl: v for (n, lbl), v in self.samples.items() if n == name and want <= set(lbl)}

    def sum(self, name: str, **labels: str) -> float:
        return sum(self.matching(name, **labels).values())


@dataclass
class PharosServer:
    data_dir: Path
    log_path: Path
    binary: str = field(default_factory=pharos_bin)
    proc: subprocess.Popen | None = None
    grpc: str = ""  # host:port
    http: str = ""  # host:port
    api: str = ""  # host:port
    partitions: int = 0
    # Extra `--set key=value` configuration.
    settings: list[str] = field(default_factory=list)
    # A YAML configuration file's text, passed with --config (empty: none).
    config: str = ""

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> "PharosServer":
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise RuntimeError(
                f"pharos binary not found at {self.binary}: build it with `cargo build -p pharos` "
                "or set PHAROS_BIN"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Each start appends to the same log, so a restart keeps the earlier run's lines; the ready
        # line is searched for only after the offset this run starts at.
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        config_args: list[str] = []
        if self.config:
            config_path = self.log_path.with_suffix(".yaml")
            config_path.write_text(self.config)
            config_args = ["--config", str(config_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PHAROS_")}
        env.setdefault("RUST_LOG", "info")
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "serve",
                    *config_args,
                    "--data-dir",
                    str(self.data_dir),
                    "--set",
                    "api.listen=127.0.0.1:0",
                    "--set",
                    "otlp.http.listen=127.0.0.1:0",
                    "--set",
                    "otlp.grpc.listen=127.0.0.1:0",
                    *[arg for setting in self.settings for arg in ("--set", setting)],
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            text = _ANSI.sub("", self._log_text(offset))
            m = _READY.search(text)
            if m:
                self.grpc, self.http, self.api = m.group("grpc"), m.group("http"), m.group("api")
                self.partitions = int(m.group("partitions"))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"pharos exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"pharos not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit code (kills and raises if it does not stop)."""
        assert self.proc is not None, "pharos was not started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"pharos did not stop within {STOP_TIMEOUT_S}s of SIGTERM:\n{self.log_tail()}"
                )
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def problems(self) -> list[str]:
        """The WARN and ERROR lines pharos logged (a healthy run with well-formed clients has none:
        e.g. the processors warn when an envelope's decoded item count differs from its header)."""
        return [
            line
            for line in _ANSI.sub("", self._log_text()).splitlines()
            if re.match(r"^\S+\s+(WARN|ERROR)\s", line)
        ]

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    # -- self-metrics --------------------------------------------------------------------------

    def metrics(self) -> Metrics:
        with urllib.request.urlopen(f"http://{self.api}/metrics", timeout=10) as resp:
            assert resp.status == 200, resp.status
            return Metrics(parse_prometheus(resp.read().decode("utf-8")))

    def wait_processed(self, signal_name: str, tenant: str, expected: int, timeout: float = PIPELINE_TIMEOUT_S) -> Metrics:
        """Polls /metrics until the processors have caught up, and returns the final snapshot.

        Caught up means: the pipeline counter for (signal, tenant) has reached `expected` (or gone
        past it) and every queue partition's depth is 0, so nothing appended is still waiting to
        be counted. The caller asserts exact equality on the returned snapshot; a counter that goes
        past `expected` is reported as it is, never waited on.
        """
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            counted = m.get("pharos_pipeline_items_total", signal=signal_name, tenant=tenant)
            depths = m.matching("pharos_queue_depth_records")
            drained = bool(depths) and all(v == 0 for v in depths.values())
            if counted >= expected and drained:
                # One more read after a pause: a late duplicate would show up here.
                time.sleep(0.3)
                return self.metrics()
            if time.monotonic() > deadline:
                return m
            time.sleep(0.05)

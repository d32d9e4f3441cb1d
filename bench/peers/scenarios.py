#!/usr/bin/env python3
"""The scenarios of bench/run that no other bench script covers.

    scenarios.py ingest-rotel --signal traces|logs   OTLP/gRPC at maximum rate into rotel
    scenarios.py memory --servers pharos prometheus victoria-metrics --series N
    scenarios.py replay --server pharos|prometheus --seconds S

Each prints JSON lines (one per figure) on stdout, in the form bench/aggregate.py reads:
{"scenario": ..., "item": ..., "server": ..., "value": ..., "unit": ..., ...}.

Every server is started here pinned to SERVER_CPU (taskset), the load generator to LOAD_CPU;
everything listens on 127.0.0.1 on free ports, every wait is bounded, and every process
started here is stopped before the command returns. Binaries come from the environment:
PHAROS, LOADGEN, PROMETHEUS, VICTORIA_METRICS, ROTEL; WORK is a scratch directory.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

SERVER_CPU = os.environ.get("SERVER_CPU", "0")
LOAD_CPU = os.environ.get("LOAD_CPU", "1")
WORK = os.environ.get("WORK", "/tmp")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg):
    print(f"{time.strftime('%H:%M:%S')}   {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric_sum(url, name, **labels):
    """Sum of the samples of `name` (with these labels) in a Prometheus text exposition."""
    total = 0.0
    for line in http_get(url).splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


class Server:
    """One server process pinned to SERVER_CPU. kind: pharos | prometheus | victoria-metrics | rotel."""

    def __init__(self, kind, data, extra=(), fresh=True):
        self.kind, self.data = kind, data
        if fresh:
            shutil.rmtree(data, ignore_errors=True)
        os.makedirs(data, exist_ok=True)
        self.logf = f"{data}.log"
        pin = ["taskset", "-c", SERVER_CPU]
        if kind == "pharos":
            cmd = [os.environ["PHAROS"], "serve", "--data-dir", data,
                   "--set", "api.listen=127.0.0.1:0", "--set", "otlp.http.listen=127.0.0.1:0",
                   "--set", "otlp.grpc.listen=127.0.0.1:0", *extra]
        elif kind == "prometheus":
            port = free_port()
            with open(f"{data}/prometheus.yml", "w") as f:
                f.write("global:\n  scrape_interval: 1h\n")
            cmd = [os.environ["PROMETHEUS"], f"--config.file={data}/prometheus.yml",
                   f"--storage.tsdb.path={data}/tsdb", f"--web.listen-address=127.0.0.1:{port}",
                   "--web.enable-remote-write-receiver", *extra]
            self.write_addr = self.api = f"127.0.0.1:{port}"
        elif kind == "victoria-metrics":
            port = free_port()
            cmd = [os.environ["VICTORIA_METRICS"], f"-storageDataPath={data}/vm",
                   f"-httpListenAddr=127.0.0.1:{port}", "-retentionPeriod=1y", *extra]
            self.write_addr = self.api = f"127.0.0.1:{port}"
        elif kind == "rotel":
            port = free_port()
            cmd = [os.environ["ROTEL"], "start", "--otlp-grpc-endpoint", f"127.0.0.1:{port}",
                   "--otlp-http-endpoint", f"127.0.0.1:{free_port()}", "--exporter", "blackhole",
                   "--pid-file", f"{data}/rotel.pid", "--log-file", f"{data}/rotel.log", *extra]
            self.grpc = f"127.0.0.1:{port}"
        else:
            raise ValueError(kind)
        self.started = time.time()
        self.proc = subprocess.Popen(pin + cmd, stdout=open(self.logf, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid  # taskset execs the server: same pid
        if kind == "pharos":
            self._wait_pharos()
        else:
            wait_port(int((self.api if kind != "rotel" else self.grpc).rsplit(":", 1)[1]), self.proc)
            if kind == "prometheus":
                self.wait_ready(60)
        self.ready_s = time.time() - self.started

    def _wait_pharos(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = ANSI.sub("", open(self.logf, errors="replace").read())
            line = next((x for x in text.splitlines() if "pharos is ready" in x), None)
            if line:
                fields = dict(re.findall(r"(\w+)=(\S+)", line))
                self.grpc, self.write_addr, self.api = fields["otlp_grpc"], fields["otlp_http"], fields["api"]
                self.partitions = int(fields.get("partitions", 1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"pharos exited ({self.proc.returncode}); see {self.logf}")
            time.sleep(0.05)
        raise RuntimeError(f"pharos not ready in {timeout}s; see {self.logf}")

    def wait_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://{self.api}/-/ready", timeout=2).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited; see {self.logf}")
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} not ready in {timeout}s")

    def metrics_url(self):
        return f"http://{self.api}/metrics"

    def stored_samples(self):
        if self.kind == "pharos":
            return metric_sum(self.metrics_url(), "pharos_metrics_samples_appended_total")
        if self.kind == "prometheus":
            return metric_sum(self.metrics_url(), "prometheus_tsdb_head_samples_appended_total", type="float")
        return metric_sum(self.metrics_url(), "vm_rows_added_to_storage_total")

    def stop(self, sig=signal.SIGTERM, grace=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def loadgen(*args, label=""):
    """Runs pharos-loadgen pinned to LOAD_CPU; returns its JSON summary."""
    cmd = ["taskset", "-c", LOAD_CPU, os.environ["LOADGEN"], "--threads", "1", "--label", label, *map(str, args)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1900)
    for line in out.stdout.splitlines():
        if line.startswith('{"kind":"pharos-loadgen"'):
            return json.loads(line)
    raise RuntimeError(f"the load generator gave no result: {out.stderr[-2000:]}")


def emit(**kw):
    print(json.dumps(kw), flush=True)


# ---- ingest into rotel --------------------------------------------------------------------------
def ingest_rotel(a):
    s = Server("rotel", f"{WORK}/rotel-{a.signal}")
    try:
        j = loadgen("--protocol", "grpc", "--signal", a.signal, "--endpoint", s.grpc, "--batch", a.batch,
                    "--workers", a.workers, "--connections", 4, "--duration", a.duration, "--warmup", a.warmup,
                    label="rotel")
    finally:
        s.stop()
    log(f"[ingest] rotel {a.signal}: {j['items_per_sec']:.0f}/s, errors {j['errors']}")
    emit(scenario="ingest", item=a.signal, server="rotel", value=j["items_per_sec"], unit="items/s",
         better="higher", note="rotel: blackhole exporter, no disk queue (not durable)",
         errors=j["errors"], p99_ms=j["latency"]["p99_ms"])


# ---- memory per active series ----------------------------------------------------------------------
def memory(a):
    for kind in a.servers:
        extra = []
        if kind == "pharos":
            extra = ["--set", f"metrics.max_series_per_tenant={a.series * 2}"]
        s = Server(kind, f"{WORK}/memory-{kind}", extra)
        try:
            time.sleep(2)
            before = rss_kib(s.pid)
            stored0 = s.stored_samples()
            j = loadgen("--protocol", "remote-write", "--signal", "metrics", "--series", a.series,
                        "--batch", 2000, "--workers", 4, "--endpoint", s.write_addr,
                        "--duration", a.duration, "--warmup", 0, label=kind)
            # Every acknowledged sample stored (Pharos stores after acknowledging), at most 60 s.
            want = j["items_accepted"]
            deadline = time.time() + 60
            while s.stored_samples() - stored0 < want and time.time() < deadline:
                time.sleep(0.2)
            time.sleep(2)
            after = rss_kib(s.pid)
        finally:
            s.stop()
        cycles = j["items_accepted"] / a.series
        per = (after - before) * 1024 / a.series
        log(f"[memory] {kind}: RSS {before / 1024:.0f} -> {after / 1024:.0f} MiB for {a.series} series "
            f"({cycles:.1f} samples each): {per:.0f} B/series")
        emit(scenario="memory per active series", item="samples", server=kind, value=round(per, 1),
             unit="B/series", better="lower", rss_before_kib=before, rss_after_kib=after,
             series=a.series, samples_per_series=round(cycles, 1))


# ---- restart and replay per GiB of write-ahead log -------------------------------------------------
def replay(a):
    if a.server == "pharos":
        # Blocks and parts are written only at flush_interval: with an hour, nothing is committed
        # during the run and a restart replays the whole write-ahead log.
        extra = ["--set", "traces.flush_interval=1h", "--set", "traces.max_block_spans=1000000000"]
        data = f"{WORK}/replay-pharos"
        s = Server("pharos", data, extra)
        try:
            j = loadgen("--protocol", "grpc", "--signal", "traces", "--endpoint", s.grpc, "--workers", 16,
                        "--duration", a.seconds, "--warmup", 0, label="replay")
            wal = metric_sum(s.metrics_url(), "pharos_queue_disk_bytes")
        finally:
            s.stop(signal.SIGKILL)
        wal = wal or du(f"{data}/queue")
        s = Server("pharos", data, extra, fresh=False)
        try:
            deadline = time.time() + 600
            parts = s.partitions
            while time.time() < deadline:
                done = ANSI.sub("", open(s.logf, errors="replace").read()).count("queue partition replay done")
                if done >= parts:
                    break
                time.sleep(0.05)
            secs = time.time() - s.started
            stored = metric_sum(s.metrics_url(), "pharos_traces_spans_stored_total")
        finally:
            s.stop(signal.SIGKILL)
        note = f"{wal / 2**20:.0f} MiB of WAL, {stored:.0f} spans replayed, ready after {s.ready_s:.1f} s"
    else:
        data = f"{WORK}/replay-prometheus"
        s = Server("prometheus", data)
        try:
            j = loadgen("--protocol", "remote-write", "--signal", "metrics", "--series", a.series,
                        "--batch", 2000, "--workers", 4, "--endpoint", s.write_addr,
                        "--duration", a.seconds, "--warmup", 0, label="replay")
        finally:
            s.stop(signal.SIGKILL)
        wal = du(f"{data}/tsdb/wal") + du(f"{data}/tsdb/chunks_head")
        s = Server("prometheus", data, fresh=False)  # returns when /-/ready answers: replay done
        secs = s.ready_s
        s.stop()
        note = f"{wal / 2**20:.0f} MiB of WAL and head chunks, {j['items_accepted']} samples"
    per_gib = secs / (wal / 2**30) if wal else None
    log(f"[replay] {a.server}: {secs:.1f} s for {wal / 2**20:.0f} MiB: {per_gib:.1f} s/GiB ({note})")
    emit(scenario="restart and replay", item="WAL", server=a.server, value=round(per_gib, 2) if per_gib else None,
         unit="s/GiB", better="lower", seconds=round(secs, 2), wal_bytes=int(wal), note=note)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("ingest-rotel")
    r.add_argument("--signal", choices=["traces", "logs"], required=True)
    r.add_argument("--duration", type=float, default=20)
    r.add_argument("--warmup", type=float, default=3)
    r.add_argument("--batch", type=int, default=500)
    r.add_argument("--workers", type=int, default=16)
    m = sub.add_parser("memory")
    m.add_argument("--servers", nargs="+", default=["pharos", "prometheus", "victoria-metrics"])
    m.add_argument("--series", type=int, default=200000)
    m.add_argument("--duration", type=float, default=10)
    w = sub.add_parser("replay")
    w.add_argument("--server", choices=["pharos", "prometheus"], required=True)
    w.add_argument("--seconds", type=float, default=10)
    w.add_argument("--series", type=int, default=100000)
    a = p.parse_args()
    {"ingest-rotel": ingest_rotel, "memory": memory, "replay": replay}[a.cmd](a)


if __name__ == "__main__":
    main()

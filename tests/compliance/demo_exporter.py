#!/usr/bin/env python3
"""A stand-in for the PromLabs demo service, for the PromQL compliance run.

The compliance tester's query list reads `demo_*` metrics from the demo service, which cannot be
fetched here. This exporter serves metrics of the same names and label sets, with values that
behave like the real ones: counters only go up (one instance simulates a restart now and then, so
`resets()` and `rate()` see a reset), gauges wander, the latency histogram's buckets are
cumulative, a batch job updates its last-success timestamp every half minute and sometimes fails,
and `demo_intermittent_metric` comes and goes so that Prometheus writes staleness markers.

Counters start at a value as if the service had been running for a day: the tester's query
ranges (up to an hour) then reach back before the first scrape without the first scrape looking
like a fresh counter, which is what the demo service at PromLabs looks like after hours of uptime.

Standard library only. Usage:

    demo_exporter.py [--listen 127.0.0.1] [--ports 10000,10001,10002] [--seed 1] [--uptime 86400]

`--uptime 0` starts the counters at zero, as a freshly started service does.

Each port is one instance; `GET /metrics` answers the text exposition format 0.0.4.
"""

import argparse
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TICK_SECONDS = 1.0
BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
MEMORY_TYPES = ["buffers", "cached", "free", "used"]
CPU_MODES = ["idle", "system", "user"]
# (method, path, status, requests per second, typical latency in seconds)
ENDPOINTS = [
    ("GET", "/api/foo", "200", 11.0, 0.004),
    ("GET", "/api/foo", "500", 0.4, 0.02),
    ("POST", "/api/foo", "200", 3.5, 0.012),
    ("GET", "/api/bar", "200", 7.0, 0.03),
    ("POST", "/api/bar", "200", 2.0, 0.06),
    ("POST", "/api/bar", "503", 0.2, 0.2),
    ("GET", "/api/nonexistent", "404", 1.3, 0.0007),
]


def fmt(v: float) -> str:
    """A sample value as the exposition format writes it."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


class Instance:
    """The state of one simulated demo service instance, advanced by `tick`."""

    def __init__(self, index: int, seed: int, restarts: bool, uptime: float):
        self.rng = random.Random(seed * 1000 + index)
        self.index = index
        self.lock = threading.Lock()
        self.restarts = restarts
        self.num_cpus = [4, 6, 8][index % 3]
        self.started = time.time()
        self.next_restart = self.started + 420.0 + 60.0 * index
        self.phase = self.rng.uniform(0.0, 2.0 * math.pi)
        self.cpu = {}
        self.items_shipped = 0.0
        self.hist = {}
        self.in_progress = {}
        self._reset_counters(uptime)
        self.memory_total = float(self.num_cpus) * 2.0 * 2**30
        self.disk_total = 100.0 * 2**30
        self.disk_usage = self.disk_total * (0.3 + 0.1 * index)
        self.batch_last_success = self.started - self.rng.uniform(0.0, 30.0)
        self.batch_last_duration = 0.0
        self.batch_last_bytes = 0.0
        self.next_batch = self.started + self.rng.uniform(5.0, 30.0)
        self.intermittent_on = True
        self.intermittent_flip = self.started + self.rng.uniform(40.0, 120.0)
        self.holiday = 0.0

    def _reset_counters(self, uptime: float):
        """Counters as they would be after `uptime` seconds (0 for a restart)."""
        share = {"idle": 0.6, "system": 0.1, "user": 0.3}
        self.cpu = {m: share[m] * self.num_cpus * uptime for m in CPU_MODES}
        self.items_shipped = 0.7 * uptime
        self.hist = {}
        for method, path, status, rps, latency in ENDPOINTS:
            count = float(round(rps * uptime))
            buckets = [float(round(count * self._share_below(le, latency))) for le in BUCKETS]
            self.hist[(method, path, status)] = {
                "buckets": buckets,
                "count": count,
                "sum": count * latency * 1.1,
            }

    @staticmethod
    def _share_below(le: float, latency: float) -> float:
        """The share of requests with a latency at most `le` (a log-logistic distribution)."""
        return 1.0 / (1.0 + (latency / le) ** 3)

    def _observe(self, key, latency: float, n: int):
        h = self.hist[key]
        h["count"] += n
        h["sum"] += latency * n
        for i, le in enumerate(BUCKETS):
            if latency <= le:
                h["buckets"][i] += n

    def tick(self, now: float, dt: float):
        with self.lock:
            if self.restarts and now >= self.next_restart:
                self._reset_counters(0.0)
                self.next_restart = now + 480.0
            wave = math.sin(now / 90.0 + self.phase)
            busy = min(1.0, max(0.05, 0.35 + 0.25 * wave + self.rng.gauss(0.0, 0.05)))
            self.cpu["user"] += dt * self.num_cpus * busy * 0.75
            self.cpu["system"] += dt * self.num_cpus * busy * 0.25
            self.cpu["idle"] += dt * self.num_cpus * (1.0 - busy)
            self.items_shipped += self.rng.choice([0, 0, 1, 1, 2, 3]) * dt
            for method, path, status, rps, latency in ENDPOINTS:
                key = (method, path, status)
                n = max(0, int(round(self.rng.gauss(rps * dt * (1.0 + 0.3 * wave), 1.0))))
                # Observe in a few groups to keep the tick cheap.
                for _ in range(min(n, 5)):
                    sample = latency * self.rng.lognormvariate(0.0, 0.6)
                    self._observe(key, sample, max(1, n // 5))
                self.in_progress[key] = float(self.rng.randint(0, 3))
            self.disk_usage += dt * (2_000.0 + 1_500.0 * self.rng.random()) * (1 + self.index)
            if self.disk_usage > 0.95 * self.disk_total:
                self.disk_usage = 0.3 * self.disk_total
            if now >= self.next_batch:
                self.batch_last_duration = self.rng.uniform(2.0, 9.0)
                self.batch_last_bytes = float(self.rng.randint(10_000, 2_000_000))
                if self.rng.random() < 0.8:
                    self.batch_last_success = now
                self.next_batch = now + 30.0
            if now >= self.intermittent_flip:
                self.intermittent_on = not self.intermittent_on
                self.intermittent_flip = now + self.rng.uniform(40.0, 120.0)
            self.holiday = 1.0 if (int(now) // 600) % 7 == 0 else 0.0

    def memory(self, now: float) -> dict:
        used_share = 0.45 + 0.15 * math.sin(now / 120.0 + self.phase)
        used = self.memory_total * used_share + self.rng.uniform(-1e6, 1e6)
        buffers = self.memory_total * 0.05 + self.rng.uniform(0.0, 1e5)
        cached = self.memory_total * 0.2 + self.rng.uniform(-5e5, 5e5)
        free = self.memory_total - used - buffers - cached
        return {"buffers": buffers, "cached": cached, "free": free, "used": used}

    def exposition(self) -> str:
        now = time.time()
        out = []

        def family(name, kind, help_text):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        with self.lock:
            family("demo_api_request_duration_seconds", "histogram", "API request latency.")
            for (method, path, status), h in sorted(self.hist.items()):
                labels = f'method="{method}",path="{path}",status="{status}"'
                for le, v in zip(BUCKETS, h["buckets"]):
                    out.append(
                        f'demo_api_request_duration_seconds_bucket{{{labels},le="{le!r}"}} {fmt(v)}'
                    )
                out.append(
                    f'demo_api_request_duration_seconds_bucket{{{labels},le="+Inf"}} {fmt(h["count"])}'
                )
                out.append(f"demo_api_request_duration_seconds_sum{{{labels}}} {fmt(h['sum'])}")
                out.append(f"demo_api_request_duration_seconds_count{{{labels}}} {fmt(h['count'])}")
            family("demo_api_http_requests_in_progress", "gauge", "Requests being served.")
            for (method, path, status), v in sorted(self.in_progress.items()):
                if status == "200":
                    out.append(
                        f'demo_api_http_requests_in_progress{{method="{method}",path="{path}"}} {fmt(v)}'
                    )
            family("demo_batch_last_success_timestamp_seconds", "gauge", "Last successful batch run.")
            out.append(f"demo_batch_last_success_timestamp_seconds {fmt(self.batch_last_success)}")
            family("demo_batch_last_run_duration_seconds", "gauge", "Duration of the last batch run.")
            out.append(f"demo_batch_last_run_duration_seconds {fmt(self.batch_last_duration)}")
            family("demo_batch_last_run_processed_bytes", "gauge", "Bytes processed by the last batch run.")
            out.append(f"demo_batch_last_run_processed_bytes {fmt(self.batch_last_bytes)}")
            family("demo_cpu_usage_seconds_total", "counter", "CPU time used, by mode.")
            for mode in CPU_MODES:
                out.append(f'demo_cpu_usage_seconds_total{{mode="{mode}"}} {fmt(self.cpu[mode])}')
            family("demo_disk_total_bytes", "gauge", "Disk size.")
            out.append(f"demo_disk_total_bytes {fmt(self.disk_total)}")
            family("demo_disk_usage_bytes", "gauge", "Disk space used.")
            out.append(f"demo_disk_usage_bytes {fmt(self.disk_usage)}")
            if self.intermittent_on:
                family("demo_intermittent_metric", "gauge", "A metric that comes and goes.")
                out.append(f"demo_intermittent_metric {fmt(float(self.index + 1))}")
            family("demo_is_holiday", "gauge", "Whether it is a holiday.")
            out.append(f"demo_is_holiday {fmt(self.holiday)}")
            family("demo_items_shipped_total", "counter", "Items shipped.")
            out.append(f"demo_items_shipped_total {fmt(self.items_shipped)}")
            family("demo_memory_usage_bytes", "gauge", "Memory used, by type.")
            for kind, v in self.memory(now).items():
                out.append(f'demo_memory_usage_bytes{{type="{kind}"}} {fmt(v)}')
            family("demo_num_cpus", "gauge", "Number of CPUs.")
            out.append(f"demo_num_cpus {fmt(float(self.num_cpus))}")
        return "\n".join(out) + "\n"


def handler_for(instance: Instance):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the name http.server calls)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics is served")
                return
            body = instance.exposition().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--ports", default="10000,10001,10002")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--uptime",
        type=float,
        default=86_400.0,
        help="seconds of pretended uptime the counters start at",
    )
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",") if p]
    # The last instance simulates restarts, so that counters reset now and then.
    instances = [
        Instance(i, args.seed, restarts=(i == len(ports) - 1), uptime=args.uptime)
        for i in range(len(ports))
    ]
    servers = []
    for port, inst in zip(ports, instances):
        server = ThreadingHTTPServer((args.listen, port), handler_for(inst))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    print(f"demo exporter: {len(servers)} instances on {args.listen}:{ports}", flush=True)
    last = time.time()
    try:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.time()
            for inst in instances:
                inst.tick(now, now - last)
            last = now
    except KeyboardInterrupt:
        pass
    finally:
        for server in servers:
            server.shutdown()


if __name__ == "__main__":
    main()

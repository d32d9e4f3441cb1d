#!/usr/bin/env python3
"""Collects the figures of one bench/run into a table of Pharos beside its peers.

    aggregate.py OUT --date YYYY-MM-DD --results FILE.json [--docs docs/benchmarks.md] [--quick]

OUT is bench/run's output directory: scenarios.jsonl (bench/peers/scenarios.py and
bench/run-crosscheck.sh), and the outputs of the bench scripts it ran (ingest/results.jsonl,
remote-write.jsonl and remote-write.out, pipeline/pipeline.json, metrics-history.out,
logs/logs.json, traces/traces.json), steps.jsonl and machine.env. Prints the table, writes
FILE.json, and (with --docs) writes or replaces the section "## bench/run — DATE" of the
docs file, leaving the rest of it as it is. A figure that a step did not produce is shown as
missing, with the step's exit status.
"""

import argparse
import json
import os
import re
import sys


def load_json(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def load_jsonl(path):
    out = []
    try:
        for line in open(path):
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def md_rows(path):
    """Rows of the Markdown tables in a file, as lists of cells, keyed by their first cell."""
    rows = []
    try:
        for line in open(path):
            if line.startswith("| ") and not line.startswith("|---"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    except OSError:
        pass
    return rows


def num(text):
    """The first number in a cell such as '1,234 B' or '12.5 MiB'."""
    m = re.search(r"-?[\d,]+(?:\.\d+)?", text or "")
    return float(m.group(0).replace(",", "")) if m else None


class Table:
    def __init__(self):
        self.rows = []

    def add(self, scenario, item, unit, better, pharos, peers=None, note=""):
        """peers: {name: value or None (did not run) or a string (why there is no peer)}."""
        self.rows.append({"scenario": scenario, "item": item, "unit": unit, "better": better,
                          "pharos": pharos, "peers": peers or {}, "note": note})


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def fmt(v, unit=""):
    if v is None:
        return "missing"
    if isinstance(v, str):
        return v
    if abs(v) >= 1e6:
        s = f"{v / 1e6:.2f}M"
    elif abs(v) >= 1e4:
        s = f"{v / 1e3:.1f}K"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def collect(out, quick):
    t = Table()
    scen = load_jsonl(f"{out}/scenarios.jsonl")

    def own(scenario, item, server):
        for r in scen:
            if r.get("scenario") == scenario and r.get("item") == item and r.get("server") == server:
                return r
        return None

    # ---- ingest, durable, at maximum rate ----
    ingest = [r for r in load_jsonl(f"{out}/ingest/results.jsonl") if r.get("mode") == "max"]
    for sig in ("traces", "logs"):
        def rate(server):
            v = [r["items_per_sec"] for r in ingest if r.get("server") == server and r.get("signal") == sig]
            return v[-1] if v else None
        rot = own("ingest", sig, "rotel")
        t.add("ingest, max rate", f"OTLP/gRPC {sig}", "items/s", "higher", rate("pharos"),
              {"otelcol file_storage": rate("otelcol-file_storage"),
               "rotel": rot["value"] if rot else None},
              "Pharos: fsync before ack; Collector: file_storage queue, fsync; rotel: no disk queue")
    rw = {r.get("label"): r for r in load_jsonl(f"{out}/remote-write.jsonl")}
    rwv = {k: v.get("items_per_sec") for k, v in rw.items()}
    t.add("ingest, max rate", "remote write samples", "samples/s", "higher", rwv.get("pharos"),
          {"Prometheus": rwv.get("prometheus"), "VictoriaMetrics": rwv.get("victoria-metrics")},
          "Pharos acks when its WAL is fsync'd; the peers when stored in memory")

    # ---- pipeline ----
    pipe = load_json(f"{out}/pipeline/pipeline.json") or {}
    runs = pipe.get("runs", {})
    def sustained(r):
        x = runs.get(r)
        return min(x["acked_spans_per_s"], x["processed_spans_per_s"]) if x else None
    col = runs.get("otelcol")
    no_col = "did not run (bench/collector/build-collector.sh pipeline)"
    t.add("ingest, full pipeline", "OTLP/gRPC traces", "spans/s", "higher", sustained("full"),
          {"Pharos, pipeline off": sustained("off"),
           "otelcol": sustained("otelcol") if col else no_col},
          "redaction, attributes, tail sampling, span metrics; Collector: the same contrib processors "
          "(bench/collector/pipeline.yaml), sampled spans through a file_storage queue")
    full = runs.get("full") or {}
    t.add("ingest, full pipeline", "spans per CPU-second", "spans/CPU-s", "higher", full.get("spans_per_cpu_s"),
          {"otelcol": col["spans_per_cpu_s"] if col else no_col}, "processed spans / the server's CPU seconds")
    t.add("ingest, full pipeline", "peak RSS", "MiB", "lower", full.get("rss_peak_mib"),
          {"otelcol": col["rss_peak_mib"] if col else no_col}, "tail sampling holds up to num_traces traces")

    # ---- query latency ----
    mh = md_rows(f"{out}/metrics-history.out")
    q = {r[0]: num(r[2]) for r in mh if len(r) == 5 and r[0] in ("pharos", "prometheus", "victoria-metrics")}
    t.add("query latency", "PromQL range query (median)", "ms", "lower", q.get("pharos"),
          {"Prometheus": q.get("prometheus"), "VictoriaMetrics": q.get("victoria-metrics")},
          "sum by (job) (rate(counter[5m])), 1 h at 15 s, same remote-written data")
    logs = load_json(f"{out}/logs/logs.json") or {}
    cq = logs.get("count_queries", {})
    no_loki = "no peer here (Loki is not installable)"
    no_tempo = "no peer here (Tempo is not installable)"
    t.add("query latency", "LogQL count_over_time, one service", "ms", "lower",
          cq["one_service"]["seconds"] * 1000 if "one_service" in cq else None, {"Loki": no_loki})
    scan = logs.get("line_filter_scan")
    t.add("query latency", "LogQL line filter over everything", "ms", "lower",
          scan["seconds"] * 1000 if scan else None, {"Loki": no_loki},
          f"{scan['mb_per_s']} MB/s of lines" if scan else "")
    traces = load_json(f"{out}/traces/traces.json") or {}
    tid = traces.get("trace_by_id_ms")
    t.add("query latency", "trace by id (p50)", "ms", "lower", tid["p50"] if tid else None, {"Tempo": no_tempo})
    ss = traces.get("search_scans", {}).get("dedicated_attribute")
    t.add("query latency", "TraceQL search, every span", "ms", "lower", ss["seconds"] * 1000 if ss else None,
          {"Tempo": no_tempo}, f"{ss['spans_per_s'] / 1e6:.1f}M spans/s" if ss else "")

    # ---- memory per active series ----
    mem = {s: own("memory per active series", "samples", s) for s in ("pharos", "prometheus", "victoria-metrics")}
    n = next((m["series"] for m in mem.values() if m), None)
    t.add("memory", "RSS per active series", "B", "lower", mem["pharos"]["value"] if mem["pharos"] else None,
          {"Prometheus": mem["prometheus"]["value"] if mem["prometheus"] else None,
           "VictoriaMetrics": mem["victoria-metrics"]["value"] if mem["victoria-metrics"] else None},
          f"RSS after - before, {n} series written by remote write" if n else "")

    # ---- bytes on disk ----
    disk = [r for r in mh if len(r) == 6 and r[0] in ("pharos", "prometheus", "victoria-metrics")]
    if disk:
        d = {r[0]: num(r[4]) for r in disk}
        how = "compacted blocks (24 h of node-like series)"
    else:
        d = {r[0]: num(r[6]) for r in md_rows(f"{out}/remote-write.out")
             if len(r) == 8 and r[0] in ("pharos", "prometheus", "victoria-metrics")}
        how = "whole data dir after the remote-write run (WAL and head, not compacted)"
    t.add("bytes on disk", "per sample", "B", "lower", d.get("pharos"),
          {"Prometheus": d.get("prometheus"), "VictoriaMetrics": d.get("victoria-metrics")}, how)
    t.add("bytes on disk", "per span", "B", "lower", traces.get("block_bytes_per_span"),
          {"otelcol": "no peer here (the Collector stores no spans)"},
          f"Parquet blocks; {traces.get('raw_otlp_bytes_per_span')} B of OTLP per span" if traces else "")
    lb = logs.get("block_bytes"), logs.get("block_entries")
    t.add("bytes on disk", "per log line", "B", "lower", lb[0] / lb[1] if lb[0] and lb[1] else None,
          {"Loki": no_loki},
          f"Parquet blocks; {logs.get('raw_otlp_bytes_per_line')} B of OTLP per line" if logs else "")

    # ---- replay ----
    rp, rq = own("restart and replay", "WAL", "pharos"), own("restart and replay", "WAL", "prometheus")
    t.add("restart and replay", "per GiB of WAL", "s", "lower", rp["value"] if rp else None,
          {"Prometheus": rq["value"] if rq else None},
          "; ".join(x for x in (f"Pharos: {rp['note']}" if rp else "", f"Prometheus: {rq['note']}" if rq else "") if x))

    # ---- load generator cross-check ----
    for sig in ("traces", "logs"):
        x = own("load generator cross-check", sig, "pharos-loadgen")
        if not x:
            t.add("load generator cross-check", sig, "items", "one", None, {"telemetrygen": None})
            continue
        t.add("load generator cross-check", f"{sig} at {x['rate']:.0f}/s for {x['duration_s']:.0f} s", "items",
              "one", x["pharos_loadgen"]["pharos_counted"], {"telemetrygen": x["telemetrygen"]["pharos_counted"]},
              "counted by Pharos; each tool's own count / Pharos's: "
              f"{x['checks'][next(k for k in x['checks'] if k.startswith('pharos-loadgen / Pharos'))]}, "
              f"{x['checks'][next(k for k in x['checks'] if k.startswith('telemetrygen / Pharos'))]}"
              + ("" if x["ok"] else " — OFF BY MORE THAN 10%"))
    return t


def peer_cell(row, name, value):
    if isinstance(value, str):
        return f"{name}: {value}"
    r = ratio(row["pharos"], value)
    return f"{name} {fmt(value, row['unit'])} → **{r:.2f}×**" if r is not None else f"{name}: {fmt(value, row['unit'])}"


def markdown(t):
    lines = ["| scenario | what | Pharos | peers (value → Pharos / peer) | notes |", "|---|---|---|---|---|"]
    for r in t.rows:
        better = {"higher": "higher is better", "lower": "lower is better", "one": "should be 1.00"}[r["better"]]
        peers = "; ".join(peer_cell(r, k, v) for k, v in r["peers"].items()) or "—"
        note = "; ".join(x for x in (better, r["note"]) if x)
        lines.append(f"| {r['scenario']} | {r['item']} | {fmt(r['pharos'], r['unit'])} | {peers} | {note} |")
    return "\n".join(lines)


def plain(t):
    out = []
    for r in t.rows:
        peers = ", ".join(
            (f"{k} {fmt(v, r['unit'])} ({ratio(r['pharos'], v):.2f}x)" if ratio(r["pharos"], v) is not None
             else f"{k}: {fmt(v, r['unit'])}") for k, v in r["peers"].items())
        out.append(f"{r['scenario'][:26]:<26} {r['item'][:38]:<38} {fmt(r['pharos'], r['unit']):>14}  {peers}")
    return "\n".join(out)


def busy(machine):
    try:
        return float(machine.get("loadavg_start", "0").split()[0]) > 1.0
    except ValueError:
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--date", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--docs")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()

    t = collect(a.out, a.quick)
    machine = {}
    try:
        for line in open(f"{a.out}/machine.env"):
            k, _, v = line.rstrip("\n").partition("=")
            machine[k] = v
    except OSError:
        pass
    steps = load_jsonl(f"{a.out}/steps.jsonl")
    failed = [s for s in steps if s.get("exit")]

    print()
    print(f"bench/run{' --quick' if a.quick else ''} — {a.date}: Pharos beside its peers (ratio = Pharos / peer)")
    print(plain(t))
    if failed:
        print("steps that failed: " + ", ".join(f"{s['step']} (exit {s['exit']})" for s in failed))

    raw = {
        "scenarios": load_jsonl(f"{a.out}/scenarios.jsonl"),
        "ingest": load_jsonl(f"{a.out}/ingest/results.jsonl"),
        "remote_write": load_jsonl(f"{a.out}/remote-write.jsonl"),
        "remote_write_table": md_rows(f"{a.out}/remote-write.out"),
        "pipeline": load_json(f"{a.out}/pipeline/pipeline.json"),
        "metrics_history_table": md_rows(f"{a.out}/metrics-history.out"),
        "logs": load_json(f"{a.out}/logs/logs.json"),
        "traces": load_json(f"{a.out}/traces/traces.json"),
    }
    rows = [dict(r, ratios={k: (round(ratio(r["pharos"], v), 3) if ratio(r["pharos"], v) is not None else None)
                            for k, v in r["peers"].items()}) for r in t.rows]
    os.makedirs(os.path.dirname(os.path.abspath(a.results)), exist_ok=True)
    json.dump({"date": a.date, "quick": a.quick, "machine": machine, "steps": steps, "rows": rows, "raw": raw},
              open(a.results, "w"), indent=1)
    print(f"\nwrote {a.results}")

    if a.docs:
        title = f"## bench/run — {a.date}"
        m = machine
        section = "\n".join([
            title,
            "",
            f"- **Command:** `bench/run{' --quick' if a.quick else ''}` (short runs: "
            f"{'a few seconds' if a.quick else '20 s'} per load; figures are noisy). Raw results: "
            f"`bench/results/{a.date}.json`.",
            f"- **Machine:** {m.get('cpu', '?')} cores, {m.get('memory', '?')}; every server (Pharos or a peer) "
            f"pinned to CPU {m.get('server_cpu', '?')}, the load generators to CPU {m.get('load_cpu', '?')} "
            f"(taskset). Load average at the end: {m.get('loadavg_end', '?')}. "
            + ("**The machine was busy with other work when the run started (load average "
               f"{m.get('loadavg_start')}): take the ratios as indicative.** " if busy(m) else "")
            + f"Scenarios took {m.get('scenarios_s', '?')} s (build {m.get('build_s', '?')} s, peers "
            f"{m.get('install_s', '?')} s).",
            f"- **Pharos build:** {m.get('git', '?')}, release profile, sha256 {m.get('pharos_sha256', '?')}.",
            f"- **Peers:** Prometheus {m.get('prometheus', '?')} and VictoriaMetrics {m.get('victoria_metrics', '?')} "
            f"(Debian), OpenTelemetry Collector {m.get('otelcol', '?')} (builder, `bench/collector/`), rotel "
            f"{m.get('rotel', '?')} (PyPI), telemetrygen {m.get('telemetrygen', '?')} (Go module); installed by "
            "`bench/peers/install.sh`.",
            "",
            markdown(t),
            "",
        ] + ([f"Steps that failed in this run: {', '.join(s['step'] + ' (exit ' + str(s['exit']) + ')' for s in failed)}.", ""]
             if failed else []))
        doc = open(a.docs).read()
        pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(doc):
            doc = pattern.sub(lambda _: section + "\n", doc, count=1)
        else:
            first = re.search(r"^## ", doc, re.M)
            at = first.start() if first else len(doc)
            doc = doc[:at] + section + "\n" + doc[at:]
        open(a.docs, "w").write(doc)
        print(f"wrote the section '{title}' of {a.docs}")


if __name__ == "__main__":
    main()

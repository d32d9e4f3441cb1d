#!/usr/bin/env python3
"""Turn a run-ingest.sh results directory into Markdown tables.

usage: report.py RESULTS_DIR   (reads results.jsonl, machine.txt, soak-rss.csv)
"""
import csv
import json
import os
import sys


def fmt_rate(v):
    return "-" if v is None else f"{v / 1000:.1f}K"


def fmt_ms(v):
    return "-" if v is None else f"{v:.1f}"


def main(d):
    rows = []
    with open(os.path.join(d, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    servers = []
    for r in rows:
        if r["server"] not in servers and r["mode"] != "soak":
            servers.append(r["server"])
    peers = [s for s in servers if s != "pharos"]
    combos = []
    for r in rows:
        k = (r["protocol"], r["signal"])
        if k not in combos and r["mode"] != "soak":
            combos.append(k)

    def get(server, mode, proto, sig):
        for r in rows:
            if (r["server"], r["mode"], r["protocol"], r["signal"]) == (server, mode, proto, sig):
                return r
        return None

    out = []
    mt = os.path.join(d, "machine.txt")
    if os.path.exists(mt):
        out.append("```")
        out.append(open(mt).read().rstrip())
        out.append("```")
        out.append("")

    if any(r["mode"] == "max" for r in rows):
        out.append("### Max rate (items/s accepted; ratio = Pharos / peer)")
        out.append("")
        hdr = ["protocol", "signal", "Pharos", "Pharos p99 ms", "Pharos CPU %", "loadgen CPU %", "other CPU %", "errors"]
        for p in peers:
            hdr += [p, f"Pharos/{p}"]
        hdr += ["load avg (before)"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for proto, sig in combos:
            ph = get("pharos", "max", proto, sig)
            if ph is None:
                continue
            cells = [
                proto,
                sig,
                fmt_rate(ph["items_per_sec"]),
                fmt_ms(ph["latency"]["p99_ms"]),
                str(ph.get("server_cpu_pct")),
                str(ph.get("loadgen_cpu_pct")),
                str(ph.get("other_cpu_pct", "-")),
                str(ph["requests_err"]),
            ]
            for p in peers:
                pr = get(p, "max", proto, sig)
                if pr is None:
                    cells += ["-", "-"]
                    continue
                extra = f" ({pr['requests_err']} err)" if pr["requests_err"] else ""
                cells += [fmt_rate(pr["items_per_sec"]) + extra,
                          f"{ph['items_per_sec'] / pr['items_per_sec']:.2f}" if pr["items_per_sec"] else "inf"]
            cells.append(ph.get("loadavg_before", ""))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    if any(r["mode"] == "max" for r in rows):
        out.append("### Max rate: server CPU and items per server CPU-second (less sensitive to other load)")
        out.append("")
        hdr = ["protocol", "signal"]
        for sv in servers:
            hdr += [f"{sv} CPU %", f"{sv} items/CPU-s"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for proto, sig in combos:
            cells = [proto, sig]
            for sv in servers:
                r = get(sv, "max", proto, sig)
                cpu = r and r.get("server_cpu_pct")
                if not cpu:
                    cells += ["-", "-"]
                    continue
                cells += [str(cpu), fmt_rate(r["items_per_sec"] / (cpu / 100.0))]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    if any(r["mode"] == "half" for r in rows):
        target = next(r["target_rate"] for r in rows if r["mode"] == "half")
        out.append(f"### Fixed rate {target}/s: request latency (ms, send to response)")
        out.append("")
        hdr = ["server", "protocol", "signal", "achieved items/s", "p50", "p90", "p99", "p99.9", "max",
               "p99 from schedule", "errors", "server CPU %", "other CPU %", "load avg (before)"]
        out.append("| " + " | ".join(hdr) + " |")
        out.append("|" + "---|" * len(hdr))
        for s in servers:
            for proto, sig in combos:
                r = get(s, "half", proto, sig)
                if r is None:
                    continue
                l = r["latency"]
                ls = r.get("latency_from_schedule") or {}
                out.append("| " + " | ".join([
                    s, proto, sig, fmt_rate(r["items_per_sec"]), fmt_ms(l["p50_ms"]), fmt_ms(l["p90_ms"]),
                    fmt_ms(l["p99_ms"]), fmt_ms(l["p999_ms"]), fmt_ms(l["max_ms"]), fmt_ms(ls.get("p99_ms")),
                    str(r["requests_err"]), str(r.get("server_cpu_pct")), str(r.get("other_cpu_pct", "-")),
                    r.get("loadavg_before", ""),
                ]) + " |")
        out.append("")

    soak = [r for r in rows if r["mode"] == "soak"]
    csv_path = os.path.join(d, "soak-rss.csv")
    if soak or os.path.exists(csv_path):
        out.append("### Soak (Pharos)")
        out.append("")
        for r in soak:
            l = r["latency"]
            out.append(f"- {r['protocol']} {r['signal']} at {r['target_rate']}/s for {r['duration_s']:.0f}s: "
                       f"{fmt_rate(r['items_per_sec'])} items/s accepted, {r['requests_err']} errors, "
                       f"p50 {l['p50_ms']:.1f} ms, p99 {l['p99_ms']:.1f} ms, max {l['max_ms']:.1f} ms")
        if os.path.exists(csv_path):
            with open(csv_path) as f:
                samples = [s for s in csv.DictReader(f) if int(s["rss_kib"] or 0) > 0]
            if samples:
                mib = lambda s: int(s["rss_kib"]) / 1024
                start, mid, end = samples[0], samples[len(samples) // 2], samples[-1]
                mx = max(samples, key=mib)
                # Skip the first sample (taken before load) for the "loaded" start.
                loaded = samples[1] if len(samples) > 1 else samples[0]
                out.append("")
                out.append(f"RSS samples: {len(samples)} (every few seconds)")
                out.append("")
                out.append("| point | t (s) | RSS MiB | WAL on disk MiB |")
                out.append("|---|---|---|---|")
                for name, s in [("start (before load)", start), ("first loaded sample", loaded), ("mid", mid),
                                ("end", end), ("max", mx)]:
                    out.append(f"| {name} | {s['t_s']} | {mib(s):.1f} | {int(s['wal_bytes'] or 0) / 2**20:.0f} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

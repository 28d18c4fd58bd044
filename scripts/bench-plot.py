#!/usr/bin/env python3
"""Plots latency percentiles against offered rate from clacks-bench JSON
reports (phases that have an `offered_rate`: latency, many-channels,
durable-send's half-rate phase).

    scripts/bench-plot.py OUT.png REPORT.json[:LABEL] [REPORT.json[:LABEL] ...]

Send-to-receive percentiles are plotted when the phase has deliveries,
ack percentiles otherwise. Needs matplotlib (scripts/bench-run.sh makes
a venv at .venv-bench).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PCTS = [("p50_ms", "p50", ":"), ("p90_ms", "p90", "-."), ("p99_ms", "p99", "-"), ("p999_ms", "p99.9", "--")]


def series(path):
    with open(path) as f:
        report = json.load(f)
    points = []
    kind = "send-to-receive"
    for phase in report["phases"]:
        rate = phase.get("offered_rate")
        if not rate:
            continue
        lat = phase["latency"] if phase["latency"]["count"] else phase["ack_latency"]
        if not phase["latency"]["count"]:
            kind = "ack"
        points.append((rate, lat))
    points.sort(key=lambda p: p[0])
    return report, points, kind


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(1)
    out = sys.argv[1]
    specs = sys.argv[2:]
    fig, axes = plt.subplots(1, len(specs), figsize=(6 * len(specs), 4.5), squeeze=False)
    for ax, spec in zip(axes[0], specs):
        path, _, label = spec.partition(":")
        report, points, kind = series(path)
        if not label:
            label = report["scenario"]
        if not points:
            ax.set_title(f"{label}: no rated phases")
            continue
        rates = [p[0] for p in points]
        for key, name, style in PCTS:
            ax.plot(rates, [p[1][key] for p in points], style, marker="o", label=name)
        ax.set_xlabel("offered rate (messages/s)")
        ax.set_ylabel(f"{kind} latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{label}\n{report['connections']} connections, db {report.get('database') or '?'}", fontsize=9)
        ax.legend(fontsize=8)
    m = report["machine"]
    fig.suptitle(f"clacks-bench, {m['cpus']} cpus {m['cpu_model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

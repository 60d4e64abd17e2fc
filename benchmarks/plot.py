#!/usr/bin/env python3
"""Bar charts from run.py's JSON results.

    python benchmarks/plot.py results.json [-o results.png] [--scenarios upload-16k ...]

One panel per scenario: a bar per peer at the median, a line for the min-max range, and
the ratio to aiopquic over each bar (above 1 = aiopquic better, whatever the metric's
direction).  Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Optional

COLORS = {"aiopquic": "#1f77b4", "aiopquic-ev": "#6baed6", "aioquic": "#ff7f0e",
          "qh3": "#2ca02c", "seed": "#d62728", "seed-drained": "#f4a6a6",
          "iperf3": "#7f7f7f"}


def plot(results: dict[str, Any], out: str, scenarios: Optional[list[str]] = None) -> str:
    """Draw the panels for ``scenarios`` (default: all in the file) into ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = results.get("scenarios", {})
    names = [n for n in (scenarios or list(scen)) if n in scen]
    names = [n for n in names if any(e.get("median") is not None
                                     for e in scen[n]["peers"].values())]
    if not names:
        raise SystemExit("no scenario with results to plot")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.0, 5.2 * cols), 3.6 * rows + 0.6),
                             squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        s = scen[name]
        peers = [(p, e) for p, e in s["peers"].items() if e.get("median") is not None]
        xs = list(range(len(peers)))
        meds = [e["median"] for _, e in peers]
        lo = [e["median"] - e["min"] for _, e in peers]
        hi = [e["max"] - e["median"] for _, e in peers]
        ax.bar(xs, meds, color=[COLORS.get(p, "#9467bd") for p, _ in peers],
               yerr=[lo, hi], capsize=3, ecolor="#333333")
        ax.set_xticks(xs)
        ax.set_xticklabels([p for p, _ in peers], rotation=25, ha="right", fontsize=8)
        better = "higher" if s.get("higher_is_better", True) else "lower"
        ax.set_title(f"{name}\n{s['metric']} [{s['unit']}], {better} is better", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        top = max(m + h for m, h in zip(meds, hi)) if meds else 1
        ax.set_ylim(0, top * 1.22 if top > 0 else 1)
        for x, (p, e) in zip(xs, peers):
            r = e.get("ratio")
            label = "ours" if p == "aiopquic" else (f"{r:.2f}x" if r else "")
            ax.text(x, e["max"] + top * 0.02, label, ha="center", va="bottom", fontsize=7)
    meta = results.get("meta", {})
    fig.suptitle(f"aiopquic vs peers, {meta.get('date', '')}, aiopquic "
                 f"{meta.get('aiopquic_commit', '?')}"
                 f"{'+' if meta.get('aiopquic_dirty') else ''}\n{meta.get('cpu', '')} "
                 f"({meta.get('cpus', '?')} cpus), repeat {meta.get('repeat', '?')}"
                 f"{' (quick)' if meta.get('quick') else ''}; bars: median, lines: min-max; "
                 f"ratio > 1 = aiopquic better", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (3.6 * rows + 0.6)))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", help="results file written by run.py --json")
    p.add_argument("-o", "--out", help="PNG to write (default: the JSON name with .png)")
    p.add_argument("--scenarios", nargs="+", help="only these scenarios")
    a = p.parse_args(argv)
    with open(a.json) as f:
        results = json.load(f)
    out = a.out or os.path.splitext(a.json)[0] + ".png"
    print(plot(results, out, a.scenarios))
    return 0


if __name__ == "__main__":
    sys.exit(main())

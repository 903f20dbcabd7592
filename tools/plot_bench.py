#!/usr/bin/env python3
"""Figures from `moe bench --json/--csv` reports, headless (matplotlib, Agg backend).

usage: plot_bench.py [-o OUT_DIR] [--prefix P] REPORT.json|REPORT.csv ...

Writes PNGs into OUT_DIR (default: the current directory):
  P throughput.png   tokens/s against tokens, one line per config (sweep point)
  P roofline.png     % of the roofline against tokens, one line per config
  P expert_load.png  expert load / mean load over steps x experts, one heatmap per config
                     (its row with the most tokens); JSON reports only ("expert_load")
  P rank_load.png    slots per rank before (and after, when present) balancing, one panel per
                     config; only when rows carry "rank_load": {"before": [...], "after": [...]}
A figure without data is skipped with a note on stdout. Exit status: 0 done, 1 matplotlib
missing or nothing to plot, 2 a bad argument or an unreadable report.
"""

import argparse
import csv
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter
except ImportError:
    sys.stderr.write(
        "plot_bench: matplotlib is not installed for %s; install the Debian package "
        "python3-matplotlib (tools/setup.sh does) or `pip install matplotlib`\n" % sys.executable)
    sys.exit(1)

MAX_PANELS = 12


def fail(message):
    sys.stderr.write("plot_bench: %s\n" % message)
    sys.exit(2)


def number(text):
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def read_report(path):
    """Returns (context, rows) of a --json or --csv report."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        fail("%s: %s" % (path, e.strerror))
    if path.endswith(".csv"):
        context, lines = {}, []
        for line in text.splitlines():
            if line.startswith("# ") and ": " in line:
                key, value = line[2:].split(": ", 1)
                try:
                    context[key] = json.loads(value)
                except ValueError:
                    context[key] = value
            elif line and not line.startswith("#"):
                lines.append(line)
        rows = [{k: number(v) for k, v in r.items()} for r in csv.DictReader(lines)]
        return context, rows
    try:
        report = json.loads(text)
    except ValueError as e:
        fail("%s: not JSON: %s" % (path, e))
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        fail("%s: expected a `moe bench --json` report (an object with \"rows\")" % path)
    return report.get("context", {}), report["rows"]


def config_name(context, row, tag):
    name = row.get("label") or context.get("config", "config")
    return "%s: %s" % (tag, name) if tag else name


def group_by_config(reports):
    """{config name: [rows]} in first-seen order, over every report."""
    groups = {}
    tag_files = len(reports) > 1
    for path, context, rows in reports:
        tag = os.path.splitext(os.path.basename(path))[0] if tag_files else ""
        for row in rows:
            groups.setdefault(config_name(context, row, tag), []).append(row)
    return groups


def line_figure(groups, key, ylabel, title, path, log_y):
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20").colors
    markers = "os^vDP*X"
    drawn = 0
    for name, rows in groups.items():
        points = sorted((r["tokens"], r[key]) for r in rows if r.get(key) is not None)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, ms=4,
                    color=colors[drawn % len(colors)], marker=markers[drawn % len(markers)],
                    linestyle="-" if drawn < len(colors) else "--")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("tokens per forward")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if drawn > 6 else 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def panel_grid(count):
    cols = min(count, 3)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows + 0.4), dpi=100,
                             squeeze=False, constrained_layout=True)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat)


def expert_load_figure(groups, path):
    panels = []
    for name, rows in groups.items():
        with_load = [r for r in rows if r.get("expert_load")]
        if with_load:
            panels.append((name, max(with_load, key=lambda r: r["tokens"])))
    if not panels:
        return False
    panels = panels[:MAX_PANELS]
    maps = []
    for name, row in panels:
        normalized = []
        for step in row["expert_load"]:  # [steps][experts]
            mean = sum(step) / float(len(step)) if step else 0.0
            normalized.append([v / mean if mean > 0 else 0.0 for v in step])
        maps.append(normalized)
    vmax = max(max(max(step) for step in m) for m in maps) or 1.0
    fig, axes = panel_grid(len(panels))
    image = None
    for ax, (name, row), normalized in zip(axes, panels, maps):
        image = ax.imshow(normalized, aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                          interpolation="nearest")
        ax.set_title("%s, %d tokens" % (name, row["tokens"]), fontsize=8)
        ax.set_xlabel("expert", fontsize=8)
        ax.set_ylabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes[:len(panels)], shrink=0.8, label="load / mean load")
    fig.suptitle("Expert load per step", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return True


def rank_load_figure(groups, path):
    panels = []
    for name, rows in groups.items():
        with_ranks = [r for r in rows
                      if isinstance(r.get("rank_load"), dict) and r["rank_load"].get("before")]
        if with_ranks:
            row = max(with_ranks, key=lambda r: r["tokens"])
            panels.append(("%s, %d tokens" % (name, row["tokens"]), row["rank_load"]))
    if not panels:
        return False
    panels = panels[:MAX_PANELS]
    fig, axes = panel_grid(len(panels))
    for ax, (name, rank_load) in zip(axes, panels):
        before = rank_load["before"]
        after = rank_load.get("after")
        ranks = list(range(len(before)))
        width = 0.4 if after else 0.8
        ax.bar([r - (width / 2 if after else 0) for r in ranks], before, width, label="before")
        if after:
            ax.bar([r + width / 2 for r in range(len(after))], after, width, label="after")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("rank", fontsize=8)
        ax.set_ylabel("slots", fontsize=8)
        ax.set_xticks(ranks)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Rank load before / after balancing", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return True


def main():
    parser = argparse.ArgumentParser(description="Figures from moe bench --json/--csv reports.")
    parser.add_argument("reports", nargs="+", help="moe bench --json or --csv files")
    parser.add_argument("-o", "--out_dir", default=".", help="folder for the PNGs")
    parser.add_argument("--prefix", default="", help="prefix of the PNG file names")
    args = parser.parse_args()
    reports = [(path,) + read_report(path) for path in args.reports]
    os.makedirs(args.out_dir, exist_ok=True)
    groups = group_by_config(reports)
    if not groups:
        sys.stderr.write("plot_bench: the reports hold no rows\n")
        return 1

    def out(name):
        return os.path.join(args.out_dir, args.prefix + name)

    figures = [
        ("throughput.png", lambda p: line_figure(groups, "tokens_per_s", "tokens / s",
                                                 "Throughput", p, True),
         "no tokens_per_s"),
        ("roofline.png", lambda p: line_figure(groups, "roofline_percent", "% of roofline",
                                               "Share of the roofline (max of GEMM and memory "
                                               "time)", p, False),
         "no roofline_percent (a report from an older moe bench?)"),
        ("expert_load.png", lambda p: expert_load_figure(groups, p),
         "no per-step expert_load (CSV reports do not carry it; use --json)"),
        ("rank_load.png", lambda p: rank_load_figure(groups, p),
         "no rank_load in the rows (run with --model_ranks N > 1 or --ep N)"),
    ]
    for name, draw, why in figures:
        if draw(out(name)):
            print("plot_bench: wrote %s" % out(name))
        else:
            print("plot_bench: skipped %s: %s" % (out(name), why))
    return 0


if __name__ == "__main__":
    sys.exit(main())

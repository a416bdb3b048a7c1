#!/usr/bin/env python3
"""Draws the field benchmark's CSV (bench_field.py --csv) as the figure of
docs/performance.md: one panel a model, frames per second of each path
(ptm's pipelines in colour, forward-only figures of the other engines in
grey, reduced precision hatched), with how many times ptm's pipeline is as
fast as each. Needs matplotlib (Debian: python3-matplotlib; the script
installs it through scripts/install-deps when it is missing).

    plot_field.py FIELD.csv OUT.png [TITLE]
"""
import csv
import os
import subprocess
import sys


def main():
    try:
        import matplotlib
    except ImportError:
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run(["bash", os.path.join(here, "../../scripts/install-deps"), "python3-matplotlib"], check=True)
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(sys.argv[1])))
    title = sys.argv[3] if len(sys.argv) > 3 else "ptm and the field, batch 1, frames per second"
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), 1, figsize=(9, 2.6 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        # The paired rounds' rows repeat the pipeline (their ratios are in the CSV).
        rs = [r for r in rows if r["model"] == model and r["fps"] and r["kind"] != "pipeline-paired"]
        labels = [r["path"] for r in rs][::-1]
        fps = [float(r["fps"]) for r in rs][::-1]
        kinds = [r["kind"] for r in rs][::-1]
        colors = ["tab:blue" if k.startswith("pipeline") else "tab:gray" if k != "end-to-end" else "tab:orange"
                  for k in kinds]
        bars = ax.barh(labels, fps, color=colors)
        for bar, k, r in zip(bars, kinds, rs[::-1]):
            if k.endswith("-reduced"):
                bar.set_hatch("//")
                bar.set_alpha(0.5)
            ratio = float(r["pipeline_ratio"]) if r["pipeline_ratio"] else None
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {bar.get_width():.0f} fps" + (f"  (ptm {ratio:.2f}x)" if ratio and not k.startswith("pipeline") else ""),
                    va="center", fontsize=7)
        ax.set_title(f"{model} (torch {rs[0]['torch']})", fontsize=9, loc="left")
        ax.tick_params(axis="y", labelsize=7)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlim(0, max(fps) * 1.35)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = sys.argv[2] + ".tmp.png"
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, sys.argv[2])
    print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

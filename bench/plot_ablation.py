"""Test accuracy per epoch of several training runs on one plot (the README's ablation figure).

    python bench/plot_ablation.py --out img/fer2013_ablation.png \
        seed=runs/ablation_seed/metrics.csv strong48=runs/ablation_strong48/metrics.csv
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from expression.apps.cli import ArgumentParser, UsageError, run_main
from expression.core.io import atomic_path


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="LABEL=METRICS_CSV", help="a run's label and its metrics.csv")
    parser.add_argument("--out", default="img/fer2013_ablation.png", help="PNG to write")
    parser.add_argument("--title", default="FER2013 PublicTest accuracy per epoch (CPU, from scratch, 48 px)")
    return parser


def read_curve(path: str) -> tuple[list[int], list[float]]:
    if not Path(path).is_file():
        raise UsageError(f"{path} does not exist: pass LABEL=runs/<name>/metrics.csv")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [int(r["epoch"]) for r in rows], [100 * float(r["test_acc"]) for r in rows]


def main(args) -> int:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in args.runs:
        label, _, path = spec.partition("=")
        if not path:
            raise UsageError(f"{spec!r} is not LABEL=METRICS_CSV")
        epochs, acc = read_curve(path)
        ax.plot(epochs, acc, "o-", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

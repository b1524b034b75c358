"""Draw the shipped model's training cycles from its manifest: validation and PublicTest accuracy per
epoch, every cycle after the one before it (epochs counted from the first cycle's start).

    python bench/plot_cycles.py                         # models/shipped/*.json -> img/fer2013_cycles.png
    python bench/plot_cycles.py --markdown              # also print the per-cycle tables for the README
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from expression.apps.cli import run_main
from expression.core import checkpoint
from expression.core.io import atomic_path

MANIFEST = checkpoint.SHIPPED_MODEL.with_suffix(".json")


def cycle_table(cycle: dict) -> str:
    """One cycle's curve as a Markdown table: a column per epoch."""
    curve = cycle["curve"]
    minutes, rows = 0.0, {"validation %": [], "PublicTest %": [], "minutes (cumulative)": []}
    for row in curve:
        minutes += row.get("seconds", 0) / 60
        rows["validation %"].append(f"{100 * row['val_acc']:.1f}" if "val_acc" in row else "")
        rows["PublicTest %"].append(f"{100 * row['test_acc']:.1f}")
        rows["minutes (cumulative)"].append(f"{minutes:.0f}")
    lines = ["| epoch | " + " | ".join(str(row["epoch"]) for row in curve) + " |",
             "|---|" + "---:|" * len(curve)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows.items()]
    return "\n".join(lines)


def plot(manifest: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    start = 0
    for cycle in manifest["cycles"]:
        epochs = [start + row["epoch"] for row in cycle["curve"]]
        line, = ax.plot(epochs, [100 * row["test_acc"] for row in cycle["curve"]], marker="o", markersize=3,
                        label=f"cycle {cycle['cycle']}: PublicTest")
        if any("val_acc" in row for row in cycle["curve"]):
            ax.plot(epochs, [100 * row.get("val_acc", float("nan")) for row in cycle["curve"]], linestyle="--",
                    color=line.get_color(), alpha=0.7, label=f"cycle {cycle['cycle']}: validation")
        saved = start + cycle["epoch_saved"]
        ax.annotate(f"shipped {100 * cycle['public_test_accuracy']:.1f} %", (saved, 100 * cycle["public_test_accuracy"]),
                    textcoords="offset points", xytext=(-40, -28), arrowprops=dict(arrowstyle="->", lw=0.8))
        start += len(cycle["curve"])
        ax.axvline(start + 0.5, color="grey", lw=0.6, ls=":")
    ax.axhline(66, color="black", lw=0.7, ls="-.", label="66 % goal")
    ax.set_xlabel("epoch, all cycles (each cycle restarts from the previous one's shipped weights)")
    ax.set_ylabel("accuracy %")
    ax.set_title("ResNet34 on FER2013, trained in cycles on a 2-core CPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(args) -> int:
    manifest = json.loads(Path(args.manifest).read_text())
    plot(manifest, Path(args.out))
    print(f"wrote {args.out}")
    if args.markdown:
        for cycle in manifest["cycles"]:
            print(f"\ncycle {cycle['cycle']}: `{cycle['command']}`\n\n{cycle_table(cycle)}")
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(MANIFEST), help="the shipped model's JSON manifest")
    parser.add_argument("--out", default="img/fer2013_cycles.png", help="figure to write")
    parser.add_argument("--markdown", action="store_true", help="print each cycle's table")
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

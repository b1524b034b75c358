"""Recipe screening at an equal, small budget: one factor of the `--recipe cpu` preset changed per run.

Every variant trains from scratch (--weights none) for the same number of epochs on the same seeded,
stratified fraction of FER2013's train split; 5 % of that fraction is the validation split that
chooses the saved epoch (never the test split). The saved model is then scored on the whole test
split (PublicTest for the Kaggle layout) with evaluate.py, plainly and with flip TTA.

    python bench/recipe_search.py --data ../shared/fer2013                     # ~12 variants, 1/4 of train, 5 epochs
    python bench/recipe_search.py --data ../shared/fer2013 --only cpu adam sgd   # some variants
    python bench/recipe_search.py --data ../shared/fer2013 --fraction 1 --epochs 20 --only cpu

Why a fraction of train: on a 2-core CPU a full-data epoch costs ~4.5 min, and a dozen variants at a
budget where they differ would take a day. Screening at 1/4 of the data ranks what buys accuracy
*early*; regularisers that pay only in long runs (mixup, CutMix, EMA) are judged at a short budget
here, which the README says beside the table.

Appends one JSON line per finished variant to OUT/results.jsonl (flags, epochs, wall seconds,
chosen epoch, validation and test accuracy plain and with flip) and rewrites OUT/results.md, so an
interrupted search keeps what it finished; variants already in results.jsonl are skipped on rerun.
Wall times are only comparable between runs that had the machine to themselves.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from expression.apps.cli import ArgumentParser, UsageError, number_in, positive_int, run_main
from expression.core.datasets import class_folders
from expression.core.io import write_text
from expression.core.preprocessing import is_image_file

ROOT = Path(__file__).resolve().parent.parent

# name -> flags on top of `--recipe cpu`; the first is the baseline the others change one thing of.
VARIANTS: dict[str, list[str]] = {  # in the order they run: the most informative first
    "cpu": [],
    "adam": ["--optimizer", "adam", "--weight-decay", "0"],
    "sgd": ["--optimizer", "sgd", "--nesterov", "--lr", "0.05", "--weight-decay", "5e-4"],
    "batch128": ["--batch-size", "128", "--lr", "2e-3"],
    "mixup": ["--mixup", "0.2"],
    "ema": ["--ema", "0.995"],
    "px64": ["--img-size", "64"],
    "no_erasing": ["--erase", "0"],
    "no_smoothing": ["--label-smoothing", "0"],
    "seed_augment": ["--rotate", "0", "--scale", "0", "--erase", "0"],
    "cutmix": ["--cutmix", "1.0"],
    "wd_0.005": ["--weight-decay", "0.005"],
}


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="ImageFolder root with train/ and test/")
    parser.add_argument("--fraction", type=number_in(0.001, 1.0), default=0.25, help="share of each train class used")
    parser.add_argument("--epochs", type=positive_int, default=5)
    parser.add_argument("--only", nargs="+", choices=tuple(VARIANTS), help="run these variants only")
    parser.add_argument("--out", default="runs/recipe_search")
    return parser


def make_subset(train_dir: Path, share: float, seed: int, dest: Path) -> int:
    """A stratified, seeded share of each class, as symlinks (no copies of the faces)."""
    count = 0
    for name in class_folders(train_dir):
        files = sorted(p for p in (train_dir / name).iterdir() if is_image_file(p))
        random.Random(f"{seed}:{name}").shuffle(files)
        keep = files[:max(2, round(len(files) * share))]
        (dest / name).mkdir(parents=True, exist_ok=True)
        for path in keep:
            link = dest / name / path.name
            if not link.exists():
                link.symlink_to(path.resolve())
        count += len(keep)
    return count


def score(model: Path, test_dir: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "evaluate.py", "--checkpoint", str(model), "--split", str(test_dir),
                          "--tta", "none", "flip", "--quiet"], cwd=ROOT, check=True, capture_output=True, text=True)
    return {json.loads(line)["tta"]: json.loads(line)["accuracy"] for line in out.stdout.splitlines()}


def best_epoch(metrics_csv: Path) -> dict[str, float]:
    lines = metrics_csv.read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    best = max(rows, key=lambda row: float(row["val_acc"]))
    return {"chosen_epoch": int(best["epoch"]), "val_acc": float(best["val_acc"]),
            "epoch_seconds": [float(row["seconds"]) for row in rows] if "seconds" in header else None}


def markdown(results: list[dict]) -> str:
    lines = ["| variant | flags (on top of --recipe cpu) | epochs | wall min | val % | PublicTest % | flip TTA % |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['variant']} | `{' '.join(r['flags']) or '(preset)'}` | {r['epochs']} | "
                     f"{r['wall_s'] / 60:.1f} | {100 * r['val_acc']:.1f} | {100 * r['test_acc']:.1f} | "
                     f"{100 * r['test_acc_flip']:.1f} |")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    data = Path(args.data)
    train_dir, test_dir = data / "train", data / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise UsageError(f"{data} needs train/ and test/ class folders; pass --data DIR")
    out = Path(args.out)
    subset = out / f"train_{args.fraction:g}"
    images = make_subset(train_dir, args.fraction, seed=0, dest=subset)
    results_path = out / "results.jsonl"
    results = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {r["variant"] for r in results}
    for name in args.only or VARIANTS:
        if name in done:
            continue
        flags = VARIANTS[name]
        run_name = f"search_{name}"
        command = [sys.executable, "train_resnet34.py", "--train-dir", str(subset.resolve()),
                   "--test-dir", str(test_dir.resolve()), "--recipe", "cpu", "--weights", "none",
                   "--epochs", str(args.epochs), "--name", run_name, "--out", str((out / "runs").resolve()),
                   "--models-dir", str((out / "models").resolve()), "--quiet", *flags]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(flags) or '(preset)'}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        wall = time.perf_counter() - started
        model = out / "models" / f"{run_name}.pt"
        accuracy = score(model, test_dir)
        row = {"variant": name, "flags": flags, "epochs": args.epochs, "train_images": images,
               "wall_s": round(wall, 1), **best_epoch(out / "runs" / run_name / "metrics.csv"),
               "test_acc": accuracy["none"], "test_acc_flip": accuracy["flip"], "cpu_count": os.cpu_count()}
        results.append(row)
        with results_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        write_text(out / "results.md", markdown(results))
        print(f"    test {100 * row['test_acc']:.1f} % (flip {100 * row['test_acc_flip']:.1f} %), "
              f"val {100 * row['val_acc']:.1f} % at epoch {row['chosen_epoch']}, {wall / 60:.1f} min", flush=True)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

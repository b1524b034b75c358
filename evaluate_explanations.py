"""How trustworthy are the maps? Faithfulness, localisation and a sanity check for every method x layer.

For each --methods x --layers map (plus two trivial maps every method must beat: uniform noise and
a centred Gaussian blob) on a class-balanced set of test faces:

* deletion / insertion AUC (RISE): target-class probability as the top-ranked pixels are replaced
  by the --baseline image (deletion, lower is better) or revealed on it (insertion, higher is better);
* average drop % (lower is better) and increase in confidence % (higher is better) on image * map;
* optionally ROAD MoRF (lower is better) / LeRF (higher is better) with noisy linear imputation;
* pointing game and energy pointing game against ground-truth evidence masks, when the images come
  from a demo folder written by expression.synthetic (root/masks_test.npz); empty for FER2013;
* the cascading model-randomisation sanity check (Adebayo et al. 2018): Spearman correlation between
  the trained model's map and the map once the explained layer and every layer above it are random.

    python evaluate_explanations.py --checkpoint models/resnet34_demo.pt --images data/demo/test
    python evaluate_explanations.py --checkpoint models/resnet34_demo_corner_happy.pt \\
        --images data/demo-corner-happy/test --target true --methods gradcam,gradcampp,layercam
    python evaluate_explanations.py --checkpoint models/resnet34_fer2013.pt --images data/fer2013/test \\
        --limit 512 --baseline mean --road

Writes <out>/explanations_report.csv and .md, deletion_insertion.png, randomisation.csv and .png
(with --sanity), pointing_per_class.csv (with masks) and args.json; out defaults to
runs/explain_eval/<checkpoint name>/.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from expression.checkpoint import add_checkpoint_argument, open_model
from expression.cli import (ArgumentParser, UsageError, non_negative_int, positive_float, positive_int,
                            resolve_device, run_main, use_progress_bars)
from expression.data import Preprocessing
from expression.io import atomic_path, ensure_writable_dir, write_json, write_text
from gradcam import METHODS, explain
from expression.explain_figures import DEFAULT_LAYERS, check_layers, name_list, select_images
from gradcam.metrics import (BASELINE_MAPS, BASELINES, DEFAULT_BLUR_SIGMA, DEFAULT_STEPS, baseline_maps,
                             confidence_change, energy_pointing_game, make_baseline, perturbation_curves,
                             POINTING_TIES, pointing_game, road, step_counts)
from gradcam.sanity import cascading_randomization, randomization_stages

# Score-CAM needs one extra forward pass per channel and image (960 per face over the four stages):
# it is available with --methods but left out of the default.
DEFAULT_METHODS = tuple(m for m in METHODS if m != "scorecam")
DEFAULT_LIMIT = 256
# Per-image metric name -> (column, better direction) for the summary table.
COLUMNS = (
    ("deletion_auc", "deletion AUC", "lower"),
    ("insertion_auc", "insertion AUC", "higher"),
    ("average_drop", "avg drop %", "lower"),
    ("increase_in_confidence", "increase %", "higher"),
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("pointing_game", "pointing", "higher"),
    ("energy_pointing_game", "energy pointing", "higher"),
    ("randomisation_rho_top", "rand. rho (top stage)", "lower"),
    ("randomisation_rho_layer", "rand. rho (own layer)", "lower"),
)


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    add_checkpoint_argument(parser)
    parser.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files, folders or globs; a folder of class sub-folders gives true labels "
                             "(default: DATA/test of a --demo checkpoint, else data/fer2013/test)"
                            )
    parser.add_argument("--methods", type=name_list, default=",".join(DEFAULT_METHODS), metavar="M1,M2",
                        help=f"comma-separated CAM methods, any of {', '.join(METHODS)}")
    parser.add_argument("--layers", type=name_list, default=",".join(DEFAULT_LAYERS), metavar="L1,L2",
                        help="comma-separated module names to explain")
    parser.add_argument("--target", choices=("predicted", "true"), default="predicted",
                        help="class to explain and score: the predicted one or the true label (needs class "
                             "sub-folders). The pointing game always uses only images whose target is the "
                             "true class")
    parser.add_argument("--limit", type=non_negative_int, default=DEFAULT_LIMIT,
                        help="evaluate at most this many images, taken round-robin over classes in sorted "
                             "file order (0 = all)")
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="images per forward pass (every perturbation step of a batch is one pass)")
    parser.add_argument("--baseline", choices=BASELINES, default="blur",
                        help="what deleted pixels become: the blurred image, black pixels, or the "
                             "checkpoint's normalisation mean")
    parser.add_argument("--blur-sigma", type=positive_float, default=DEFAULT_BLUR_SIGMA,
                        help="Gaussian sigma in pixels of the blur baseline")
    parser.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS,
                        help="deletion/insertion steps of equal pixel counts")
    parser.add_argument("--sanity", action=argparse.BooleanOptionalAction, default=True,
                        help="cascading model-randomisation check (one extra explain pass per model stage)")
    parser.add_argument("--road", action=argparse.BooleanOptionalAction, default=False,
                        help="ROAD MoRF/LeRF at 10..90%% removed with noisy linear imputation; off by default "
                             "(about as costly as deletion/insertion again; fast on a GPU)")
    parser.add_argument("--pointing-ties", choices=POINTING_TIES, default="any",
                        help="pointing game when several pixels share the map's maximum (coarse maps): a hit if "
                             "any is inside the evidence mask, or the share of them inside")
    parser.add_argument("--masks", default=None, metavar="FILE.npz",
                        help="evidence masks (keys files, evidence) with files relative to the npz's folder "
                             "(default: masks_*.npz found in a parent folder of the images, as "
                             "expression.synthetic writes them)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random baseline map, ROAD noise and "
                                                             "the re-initialised weights")
    parser.add_argument("--out", default=None,
                        help="output folder (default: runs/explain_eval/<checkpoint name>/)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--quiet", action="store_true", help="no progress bar or table; paths only")
    return parser


# ---------------------------------------------------------------------------------------------------
# Inputs


def find_mask_files(files, explicit=None) -> list[Path]:
    if explicit:
        if not Path(explicit).is_file():
            raise UsageError(f"--masks {explicit} does not exist: pass the masks_test.npz written beside the "
                             f"demo images, or leave --masks out")
        return [Path(explicit)]
    found = []
    for parent in sorted({p.parent for f in files for p in [Path(f).resolve()]}):
        for folder in [parent, *list(parent.parents)[:3]]:  # class folder, split folder, dataset root
            for npz in sorted(folder.glob("masks_*.npz")):
                if npz not in found:
                    found.append(npz)
    return found


def load_masks(files, size: int, explicit=None):
    """-> (masks bool (N,S,S) or None, has_mask (N,), corner class or None). Masks match images by
    path relative to the npz's folder; they are resized (nearest) to the model's input size. A
    masks_*.npz found by searching that is not ours is skipped; a bad --masks file is an error."""
    wanted = {str(Path(f).resolve()): i for i, f in enumerate(files)}
    found, corner = [None] * len(files), None
    for npz_path in find_mask_files(files, explicit):
        try:
            with np.load(npz_path) as data:
                rel, evidence = list(data["files"]), data["evidence"]
        except (OSError, KeyError, ValueError) as err:
            if not explicit:
                continue
            raise UsageError(f"cannot read evidence masks from {npz_path} ({str(err).splitlines()[0][:80]}): "
                             f"expected keys files and evidence, as expression.synthetic writes") from None
        root, matched = npz_path.parent, False
        for k, name in enumerate(rel):
            i = wanted.get(str((root / str(name)).resolve()))
            if i is not None:
                found[i], matched = evidence[k], True
        meta = root / "demo.json"
        if matched and meta.is_file():
            try:
                corner = json.loads(meta.read_text()).get("corner_class") or corner
            except (OSError, ValueError):
                pass
    has = np.array([m is not None for m in found], dtype=bool)
    if not has.any():
        if explicit:
            raise UsageError(f"--masks {explicit}: none of its files matches the images evaluated (paths in its "
                             f"'files' key are relative to the npz's folder)")
        return None, has, None
    masks = np.zeros((len(files), size, size), dtype=bool)
    for i, m in enumerate(found):
        if m is not None:
            t = torch.from_numpy(np.asarray(m, dtype=np.float32))[None, None]
            masks[i] = F.interpolate(t, size=(size, size), mode="nearest")[0, 0].numpy() > 0.5
    return masks, has, corner


# ---------------------------------------------------------------------------------------------------
# Evaluation


class Accumulator:
    """Per-image values per map key and metric, concatenated over batches."""

    def __init__(self):
        self.values: dict = {}

    def add(self, key: str, metric: str, values) -> None:
        values = values.detach().cpu().double().numpy() if torch.is_tensor(values) else np.asarray(values, float)
        self.values.setdefault(key, {}).setdefault(metric, []).append(values)

    def get(self, key: str, metric: str) -> np.ndarray | None:
        parts = self.values.get(key, {}).get(metric)
        return np.concatenate(parts) if parts else None


def nanmean(values) -> float:
    if values is None:
        return math.nan
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def evaluate(args, model, prep, device, pixels, labels, masks, has_mask, progress):
    """Run every metric over batches of `pixels` (uint8 faces as the model sees them); returns
    (accumulator of per-image values, map keys, cascade stages)."""
    methods, layers = list(args.methods), list(args.layers)
    keys = [f"{m}/{l}" for l in layers for m in methods] + list(BASELINE_MAPS)
    stages = randomization_stages(model) if args.sanity else []
    acc = Accumulator()
    n = len(pixels)
    starts = range(0, n, args.batch_size)
    # One tick per map key and batch (and per cascade), so a long run on the CPU shows it is moving.
    bar = tqdm(total=len(starts) * (len(keys) + int(args.sanity)), desc="evaluating", unit="map",
               disable=not progress, leave=False)
    for start in starts:
        index = list(range(start, min(start + args.batch_size, n)))
        x = prep.to_tensor([pixels[i] for i in index]).to(device)
        wanted = None if args.target == "predicted" else [labels[i] for i in index]
        try:
            res = explain(model, x, layers=layers, methods=methods, targets=wanted,
                          scorecam_batch_size=args.batch_size)
        except ValueError as err:
            raise UsageError(str(err).splitlines()[0]) from None
        targets = res.targets
        full = res.probs.gather(1, targets[:, None])[:, 0]
        maps = dict(res.maps)
        for kind in BASELINE_MAPS:
            maps[kind] = baseline_maps(kind, len(index), x.shape[-2:], seed=args.seed, start=start)
        base_img = make_baseline(x, args.baseline, prep.mean, prep.std, args.blur_sigma)
        true = torch.tensor([labels[i] for i in index])
        # Masks show the evidence of the true class: score only maps that explain that class.
        pointable = torch.from_numpy(has_mask[index]) & (true >= 0) & (targets == true)
        for key in keys:
            m = maps[key]
            curves = perturbation_curves(model, x, m, targets, base_img, steps=args.steps)
            acc.add(key, "deletion_curve", curves.deletion)
            acc.add(key, "insertion_curve", curves.insertion)
            acc.add(key, "deletion_auc", curves.deletion_auc())
            acc.add(key, "insertion_auc", curves.insertion_auc())
            change = confidence_change(model, x, m, targets, prep.mean, prep.std, full=full)
            acc.add(key, "average_drop", change.drop * 100)
            acc.add(key, "increase_in_confidence", change.increase.double() * 100)
            if args.road:
                result = road(model, x, m, targets, seed=args.seed * 1_000_003 + start)
                acc.add(key, "road_morf", result.morf.mean(1))
                acc.add(key, "road_lerf", result.lerf.mean(1))
            if masks is not None:
                mk = torch.from_numpy(masks[index])
                nan = torch.full((len(index),), math.nan, dtype=torch.float64)
                acc.add(key, "pointing_game", torch.where(pointable, pointing_game(m, mk, args.pointing_ties), nan))
                acc.add(key, "energy_pointing_game", torch.where(pointable, energy_pointing_game(m, mk), nan))
            bar.update(1)
        acc.add("_", "target", targets)
        acc.add("_", "label", true)
        if args.sanity:
            try:
                cascade = cascading_randomization(model, x, res.maps, targets, layers, methods,
                                                  stages=stages, seed=args.seed,
                                                  scorecam_batch_size=args.batch_size)
            except ValueError as err:
                raise UsageError(str(err).splitlines()[0]) from None
            for key in res.maps:
                acc.add(key, "randomisation_rho_top", cascade.correlation[key][0])
                acc.add(key, "randomisation_rho_layer", cascade.at_layer(key))
                acc.add(key, "randomisation_cascade", cascade.correlation[key].T)
            for kind in BASELINE_MAPS:  # they ignore the weights by construction: identical maps, rho = 1
                ones = torch.ones(len(index), dtype=torch.float64)
                acc.add(kind, "randomisation_rho_top", ones)
                acc.add(kind, "randomisation_rho_layer", ones)
                acc.add(kind, "randomisation_cascade", torch.ones(len(index), len(stages), dtype=torch.float64))
            bar.update(1)
    bar.close()
    return acc, keys, stages


# ---------------------------------------------------------------------------------------------------
# Reports


def split_key(key: str):
    return tuple(key.split("/", 1)) if "/" in key else (key, "")


def summary_rows(acc: Accumulator, keys, corner: str | None, corner_index: int, n: int) -> tuple[list, list]:
    labels = acc.get("_", "label")
    columns = ["method", "layer", "n_images"] + [c for c, _, _ in COLUMNS[:6]] + ["n_pointing"] + \
        [c for c, _, _ in COLUMNS[6:8]]
    corner_cols = [f"pointing_game_{corner}", f"energy_pointing_game_{corner}"] if corner else []
    columns += corner_cols + [c for c, _, _ in COLUMNS[8:]]
    rows = []
    for key in keys:
        method, layer = split_key(key)
        row = {"method": method, "layer": layer, "n_images": n}
        for metric, _, _ in COLUMNS:
            row[metric] = nanmean(acc.get(key, metric))
        pointing = acc.get(key, "pointing_game")
        row["n_pointing"] = int((~np.isnan(pointing)).sum()) if pointing is not None else 0
        if corner:
            for metric in ("pointing_game", "energy_pointing_game"):
                values = acc.get(key, metric)
                row[f"{metric}_{corner}"] = nanmean(values[labels == corner_index]) if values is not None \
                    else math.nan
        rows.append(row)
    return columns, rows


def fmt(value, digits: int = 4) -> str:
    if isinstance(value, (int, np.integer)):
        return str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def write_csv(path, columns, rows) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: fmt(row.get(c), 6) if not isinstance(row.get(c), str) else row[c] for c in columns})
    write_text(path, buffer.getvalue())


def markdown_table(columns, rows, titles=None) -> str:
    titles = titles or {}
    head = "| " + " | ".join(titles.get(c, c) for c in columns) + " |"
    rule = "|" + "|".join("---" if c in ("method", "layer", "class", "stage") else "---:" for c in columns) + "|"
    body = ["| " + " | ".join(fmt(r.get(c), 3) if not isinstance(r.get(c), str) else r[c] or "-"
                              for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def write_markdown(path, args, checkpoint, n, columns, rows, per_class_rows, cascade_rows, chance, corner,
                   accuracy) -> tuple[str, str]:
    """Write the report; returns (whole text, summary table)."""
    arrows = {c: f"{title} {'↓' if better == 'lower' else '↑'}" for c, title, better in COLUMNS}
    if corner:
        arrows[f"pointing_game_{corner}"] = f"pointing {corner} ↑"
        arrows[f"energy_pointing_game_{corner}"] = f"energy pointing {corner} ↑"
    shown = [c for c in columns if c != "n_images" and any(
        isinstance(r.get(c), str) or (r.get(c) is not None and not (isinstance(r.get(c), float) and math.isnan(r[c])))
        for r in rows)]
    summary = markdown_table(shown, rows, arrows)
    lines = [
        f"# Explanation quality: {Path(checkpoint).name}",
        "",
        f"{n} images ({', '.join(map(str, args.images_used))}), target: {args.target}"
        + (f", {accuracy}" if accuracy else "") + f"; deletion/insertion baseline: {args.baseline}"
        + (f" (sigma {args.blur_sigma:g} px)" if args.baseline == "blur" else "") + f", {args.steps} steps.",
        "",
        summary,
        "",
        "Arrows show the better direction. `random` is uniform noise and `centre` a centred Gaussian blob "
        "(sigma = 1/4 of the side): a method that does not beat `centre` is not showing more than where faces "
        "usually are. Deletion/insertion AUC integrate the target-class probability over the fraction of pixels "
        "removed/revealed (RISE). Average drop and increase in confidence use image x map in pixel space "
        "(Grad-CAM++). Pointing: does the map's maximum fall inside the evidence mask (ties: "
        + ("any maximal pixel inside counts" if args.pointing_ties == "any" else "share of the maximal pixels inside")
        + "; a constant map scores chance), counted only on images whose explained class is the true class; energy "
        "pointing: share of the map's mass inside the mask. rand. rho: Spearman correlation between the trained "
        "model's map and the map after re-initialising the top stage only / the explained layer and everything above it (Adebayo et al. "
        "2018); a map that passes the sanity check drops well below 1.",
    ]
    if chance is not None:
        lines += ["", f"Chance level for the pointing games: the evidence masks cover {chance:.3f} of the image "
                      f"on average."]
    if corner:
        lines += ["", f"`{corner}` faces carry their evidence in a corner mark, not on the face: its pointing "
                      f"columns show whether the maps follow the evidence or the face prior."]
    if per_class_rows:
        table, classes = {}, list(dict.fromkeys(r["class"] for r in per_class_rows))
        for r in per_class_rows:
            cell = "" if r["n"] == 0 else f"{r['pointing_game']:.2f} / {r['energy_pointing_game']:.2f} ({r['n']})"
            table.setdefault((r["method"], r["layer"]), {"method": r["method"], "layer": r["layer"]})[r["class"]] = cell
        lines += ["", "## Pointing / energy pointing per true class (images counted)", "",
                  markdown_table(["method", "layer", *classes], list(table.values()))]
    if cascade_rows:
        stages = [r["stage"] for r in cascade_rows if r["method"] == cascade_rows[0]["method"]
                  and r["layer"] == cascade_rows[0]["layer"]]
        table = {}
        for r in cascade_rows:
            table.setdefault((r["method"], r["layer"]), {"method": r["method"], "layer": r["layer"]})[r["stage"]] = \
                r["spearman"]
        lines += ["", "## Cascading randomisation (Spearman with the trained model's map; stages re-initialised "
                      "cumulatively from the left)", "",
                  markdown_table(["method", "layer", *[f"+{s}" for s in stages]],
                                 [{**v, **{f"+{s}": v[s] for s in stages}} for v in table.values()])]
    text = "\n".join(lines) + "\n"
    write_text(path, text)
    return text, summary


def _save_figure(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)


def plot_curves(path, acc: Accumulator, keys, layers, steps: int, baseline: str, img_size: int) -> None:
    """Mean deletion and insertion curves, one row per layer, one line per method; baselines dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fractions = np.array(step_counts(img_size * img_size, steps)) / (img_size * img_size)
    rows = list(layers)
    fig = Figure(figsize=(11, 3.2 * len(rows) + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for r, layer in enumerate(rows):
        for c, kind in enumerate(("deletion", "insertion")):
            ax = axes[r, c]
            for key in [k for k in keys if split_key(k)[1] == layer] + list(BASELINE_MAPS):
                curve = acc.get(key, f"{kind}_curve")
                if curve is None:
                    continue
                mean = np.nanmean(curve, axis=0)
                area = nanmean(acc.get(key, f"{kind}_auc"))
                style = dict(ls="--", color="gray" if key == "random" else "black", lw=1) \
                    if key in BASELINE_MAPS else dict(lw=1.6)
                ax.plot(fractions, mean, label=f"{split_key(key)[0]} ({area:.3f})", **style)
            ax.set_title(f"{layer}: {kind} ({'lower' if kind == 'deletion' else 'higher'} AUC is better)", fontsize=10)
            ax.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'revealed'}")
            ax.set_ylabel("target probability")
            ax.set_xlim(0, 1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, title="method (AUC)", title_fontsize=7)
    fig.suptitle(f"Mean deletion / insertion curves (baseline: {baseline})")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_cascade(path, cascade_rows, layers, stages) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(layers), 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers):
        methods = dict.fromkeys(r["method"] for r in cascade_rows if r["layer"] in (layer, ""))
        for method in methods:
            values = [r["spearman"] for r in cascade_rows if r["method"] == method and r["layer"] in (layer, "")]
            style = dict(ls="--", color="gray" if method == "random" else "black", lw=1) \
                if method in BASELINE_MAPS else dict(marker="o", lw=1.5)
            ax.plot(range(len(stages)), values, label=method, **style)
        ax.set_xticks(range(len(stages)), [f"+{s}" for s in stages], rotation=45, fontsize=8)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="lightgray", lw=0.8)
        ax.set_title(f"maps at {layer}", fontsize=10)
        ax.set_ylabel("Spearman with trained model's map")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Cascading randomisation (Adebayo et al. 2018): lower once the layer is random is better")
    fig.tight_layout()
    _save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------


def main(args) -> int:
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    device = resolve_device(args.device)
    model, ckpt, checkpoint = open_model(args.checkpoint, device)
    check_layers(model, args.layers)
    prep = Preprocessing.from_checkpoint(ckpt)
    if args.steps > prep.img_size ** 2:
        raise UsageError(f"--steps {args.steps} exceeds the {prep.img_size ** 2} pixels of a "
                         f"{prep.img_size}x{prep.img_size} input: use at most that many")
    class_names = list(ckpt["class_names"])
    class_index = {name: i for i, name in enumerate(class_names)}
    out_dir = ensure_writable_dir(args.out or Path("runs") / "explain_eval" / checkpoint.stem, "--out")

    args.images_used, kept = select_images(args.images, ckpt, args.limit)
    files = [e.path for e, _ in kept]
    labels = [class_index.get(e.label, -1) for e, _ in kept]
    if args.target == "true" and min(labels) < 0:
        bad = next(f for f, lb in zip(files, labels) if lb < 0)
        raise UsageError(f"--target true needs every image in a class sub-folder named after one of "
                         f"{', '.join(class_names)}; e.g. {bad} is not: use --target predicted")
    pixels = [prep.pixels(img) for _, img in kept]
    masks, has_mask, corner = load_masks(files, prep.img_size, args.masks)
    if corner is not None and corner not in class_index:
        corner = None

    progress = use_progress_bars(args.quiet)
    acc, keys, stages = evaluate(args, model, prep, device, pixels, labels, masks, has_mask, progress)
    n = len(files)

    columns, rows = summary_rows(acc, keys, corner, class_index.get(corner, -1), n)
    paths = [out_dir / "explanations_report.csv"]
    write_csv(paths[0], columns, rows)

    per_class_rows = []
    if masks is not None:
        label_arr = acc.get("_", "label")
        for key in keys:
            method, layer = split_key(key)
            for ci, name in enumerate(class_names):
                pg = acc.get(key, "pointing_game")[label_arr == ci]
                epg = acc.get(key, "energy_pointing_game")[label_arr == ci]
                per_class_rows.append({"method": method, "layer": layer, "class": name,
                                       "n": int((~np.isnan(pg)).sum()),
                                       "pointing_game": nanmean(pg), "energy_pointing_game": nanmean(epg)})
        paths.append(out_dir / "pointing_per_class.csv")
        write_csv(paths[-1], ["method", "layer", "class", "n", "pointing_game", "energy_pointing_game"],
                  per_class_rows)

    cascade_rows = []
    if args.sanity:
        for key in keys:
            method, layer = split_key(key)
            values = acc.get(key, "randomisation_cascade")
            for si, stage in enumerate(stages):
                cascade_rows.append({"method": method, "layer": layer, "step": si + 1, "stage": stage,
                                     "randomised": "+".join(stages[:si + 1]),
                                     "spearman": nanmean(values[:, si])})
        paths.append(out_dir / "randomisation.csv")
        write_csv(paths[-1], ["method", "layer", "step", "stage", "randomised", "spearman"], cascade_rows)
        paths.append(out_dir / "randomisation.png")
        plot_cascade(paths[-1], cascade_rows, args.layers, stages)

    chance = float(masks[has_mask].mean()) if masks is not None else None
    targets, label_arr = acc.get("_", "target"), acc.get("_", "label")
    known = label_arr >= 0
    accuracy = f"{int((targets[known] == label_arr[known]).sum())}/{int(known.sum())} labelled images predicted " \
               f"correctly" if known.any() and args.target == "predicted" else ""
    paths.insert(1, out_dir / "explanations_report.md")
    _, table = write_markdown(paths[1], args, checkpoint, n, columns, rows, per_class_rows, cascade_rows, chance,
                          corner, accuracy)
    paths.insert(2, out_dir / "deletion_insertion.png")
    plot_curves(paths[2], acc, keys, args.layers, args.steps, args.baseline, prep.img_size)
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    record["checkpoint"] = str(checkpoint)
    paths.append(out_dir / "args.json")
    write_json(paths[-1], record)

    if not args.quiet:
        print(table)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

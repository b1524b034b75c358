"""What evaluate_explanations.py reads and writes: the demo's evidence masks, the CSV and Markdown
report, and the deletion/insertion and randomisation plots.

    paths, table = write_report(out_dir, ReportConfig(layers=("layer4",), steps=2), checkpoint,
                                ["data/demo/test"], scores, masks, has_mask, corner, class_names, img_size)
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from expression.core.errors import UsageError, reason
from expression.core.io import write_text
from expression.core.report import save_figure
from expression.reports.explain_figures import DEFAULT_LAYERS
from gradcam.evaluation import COLUMNS, SANITY_MAX_RHO, ExplanationScores, nanmean, split_key
from gradcam.metrics import BASELINE_MAPS, DEFAULT_BLUR_SIGMA, DEFAULT_STEPS, step_counts


@dataclass(frozen=True)
class ReportConfig:
    """How the scores in a report were made, which the report states and plots. Each field is the
    evaluate_explanations.py flag of the same name, and its default is the flag's default."""

    layers: tuple[str, ...] = DEFAULT_LAYERS  # the layers scored (the plots' rows)
    target: str = "predicted"                 # predicted or true: the class each map explains
    baseline: str = "blur"                    # what deleted pixels become (gradcam.metrics.BASELINES)
    blur_sigma: float = DEFAULT_BLUR_SIGMA    # px, for the blur baseline
    steps: int = DEFAULT_STEPS                # deletion/insertion steps
    pointing_ties: str = "any"                # gradcam.metrics.POINTING_TIES
    sanity: bool = True                       # whether the randomisation check was run


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
            raise UsageError(f"cannot read evidence masks from {npz_path} ({reason(err, 80)}): "
                             f"expected keys files and evidence, as expression.demo.synthetic writes") from None
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


def write_markdown(path, config: ReportConfig, checkpoint, images, n, columns, rows, per_class_rows, cascade_rows,
                   chance, corner, accuracy) -> tuple[str, str]:
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
        f"{n} images ({', '.join(map(str, images))}), target: {config.target}"
        + (f", {accuracy}" if accuracy else "") + f"; deletion/insertion baseline: {config.baseline}"
        + (f" (sigma {config.blur_sigma:g} px)" if config.baseline == "blur" else "") + f", {config.steps} steps.",
        "",
        summary,
        "",
        "Arrows show the better direction. `random` is uniform noise and `centre` a centred Gaussian blob "
        "(sigma = 1/4 of the side): a method that does not beat `centre` is not showing more than where faces "
        "usually are. Deletion/insertion AUC integrate the target-class probability over the fraction of pixels "
        "removed/revealed (RISE). Average drop and increase in confidence use image x map in pixel space "
        "(Grad-CAM++). Pointing: does the map's maximum fall inside the evidence mask (ties: "
        + ("any maximal pixel inside counts" if config.pointing_ties == "any" else "share of the maximal pixels inside")
        + "; a constant map scores chance), counted only on images whose explained class is the true class; energy "
        "pointing: share of the map's mass inside the mask. rand. rho: Spearman correlation between the trained "
        "model's map and the map after re-initialising the top stage only / the explained layer and everything "
        "above it (Adebayo et al. 2018); a map that passes the sanity check drops well below 1. trusted: beats "
        "both baselines on deletion (and on pointing, where there are masks) and both rho columns that were "
        f"measured are below {SANITY_MAX_RHO} (without the sanity check only the baselines are compared).",
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


def plot_curves(path, scores: ExplanationScores, layers, steps: int, baseline: str, img_size: int) -> None:
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
            for key in [k for k in scores.keys if split_key(k)[1] == layer] + list(BASELINE_MAPS):
                curve = scores.values.get(key, f"{kind}_curve")
                if curve is None:
                    continue
                mean = np.nanmean(curve, axis=0)
                area = nanmean(scores.values.get(key, f"{kind}_auc"))
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
    save_figure(fig, path, dpi=110)


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
    save_figure(fig, path, dpi=110)


def write_report(out_dir: Path, config: ReportConfig, checkpoint, images, scores: ExplanationScores, masks, has_mask,
                 corner, class_names, img_size: int) -> tuple[list[Path], str]:
    """Every file of evaluate_explanations.py's report but the record of its flags, which the script
    writes -> (paths written, the Markdown summary table). `images`: what was evaluated, as given
    (folders, globs), for the report's first line."""
    class_index = {name: i for i, name in enumerate(class_names)}
    columns, rows = scores.summary_rows(corner, class_index.get(corner, -1))
    paths = [out_dir / "explanations_report.csv"]
    write_csv(paths[0], columns, rows)

    per_class_rows = scores.per_class_rows(class_names) if masks is not None else []
    if per_class_rows:
        paths.append(out_dir / "pointing_per_class.csv")
        write_csv(paths[-1], ["method", "layer", "class", "n", "pointing_game", "energy_pointing_game"],
                  per_class_rows)

    # the layers as given, then "input" (pixel methods) and "fused" when present
    plot_layers = list(dict.fromkeys([*config.layers, *(split_key(k)[1] for k in scores.keys if "/" in k)]))
    cascade_rows = scores.cascade_rows()
    if config.sanity:
        paths.append(out_dir / "randomisation.csv")
        write_csv(paths[-1], ["method", "layer", "step", "stage", "randomised", "spearman"], cascade_rows)
        paths.append(out_dir / "randomisation.png")
        plot_cascade(paths[-1], cascade_rows, plot_layers, scores.stages)

    chance = float(masks[has_mask].mean()) if masks is not None else None
    targets, label_arr = scores.targets, scores.labels
    known = label_arr >= 0
    accuracy = f"{int((targets[known] == label_arr[known]).sum())}/{int(known.sum())} labelled images predicted " \
               f"correctly" if known.any() and config.target == "predicted" else ""
    paths.insert(1, out_dir / "explanations_report.md")
    _, table = write_markdown(paths[1], config, checkpoint, images, len(scores.targets), columns, rows,
                              per_class_rows, cascade_rows, chance, corner, accuracy)
    paths.insert(2, out_dir / "deletion_insertion.png")
    plot_curves(paths[2], scores, plot_layers, config.steps, config.baseline, img_size)
    return paths, table

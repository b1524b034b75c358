"""The files of a class-map analysis (expression.reports.class_maps): figures, one CSV per table, a
Markdown summary and the class maps as arrays. Everything is written atomically.

Figures of means only (class maps over mean faces, the region layout, confusions) may be published;
the disputed faces (disputes/<class>.png, disputes.csv) are single faces of the split and stay in the
run's folder.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from expression.core.io import atomic_path, ensure_writable_dir, write_text
from expression.reports.class_maps import ClassMapReport, region_mass, shares
from expression.reports.face_regions import check_layout
from gradcam.overlay import overlay

ALPHA = 0.5
COLORMAP = "jet"
DIFF_COLORMAP = "RdBu_r"
REGION_COLOURS = {"forehead": "#e6ab02", "brows": "#d95f02", "eyes": "#1b9e77", "nose": "#7570b3",
                  "cheeks": "#e7298a", "mouth": "#e41a1c", "jaw": "#66a61e", "outside": "#bbbbbb",
                  "other": "#bbbbbb"}


# ---------------------------------------------------------------------------------------------------
# Helpers


def stretch(face: np.ndarray) -> np.ndarray:
    """A float mean face -> uint8 stretched to its own range (a mean face has little contrast)."""
    low, high = float(np.nanmin(face)), float(np.nanmax(face))
    return np.clip(np.rint((face - low) / max(high - low, 1e-6) * 255), 0, 255).astype(np.uint8)


def scaled(heat: np.ndarray, top: float) -> np.ndarray:
    return np.clip(np.nan_to_num(heat) / max(top, 1e-12), 0, 1)


def save(fig: Figure, path: Path, dpi: int = 110) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return path


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def pct(value, digits: int = 1) -> str:
    return "" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def write_csv(path: Path, columns, rows) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([f"{v:.4f}" if isinstance(v, float) else v for v in row])
    write_text(path, buffer.getvalue())
    return path


def markdown(columns, rows) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def background(report: ClassMapReport, grouping: str, c: int) -> tuple[np.ndarray, bool]:
    """The mean face a class map is drawn over, and whether it is the class's own: a class of fewer
    than config.min_faces_for_mean faces is drawn over the mean of the whole split."""
    faces = report.mean_faces_pred if grouping == "predicted" else report.mean_faces
    own = report.counts(grouping)[c] >= report.config.min_faces_for_mean
    return stretch(faces[c] if own else report.split_mean_face), bool(own)


def _colourbar(fig, rect, cmap, low, high, label):
    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(Normalize(low, high), cmap), cax=cax)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)


def _jet() -> ListedColormap:
    """The overlay's own colours, so a colour bar matches the panels."""
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[None, :]
    return ListedColormap(overlay(np.zeros((1, 256), np.uint8), ramp, colormap=COLORMAP, alpha=1.0)[0] / 255.0)


def _panel(ax, image, title=None, **kw):
    ax.imshow(image, interpolation="nearest", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


# ---------------------------------------------------------------------------------------------------
# Figures


def class_map_rows(report: ClassMapReport) -> list:
    """The README figure's rows: the trained model's true-class maps over the class mean faces, and the
    class maps minus their average for the trained and the randomised model on one colour scale."""
    k = len(report.class_names)
    true = report.class_maps("true")
    rows = [("over", "trained model:\nmap of the true class\nover its mean face", true)]
    diffs = [("trained model:\nclass map minus the\nmean of the class maps", true)]
    if report.maps_random is not None:
        diffs.append(("randomised model\n(fc..layer): the same", report.class_maps("randomised")))
    for title, maps in diffs:
        valid = ~np.isnan(maps).any((1, 2))
        centre = np.nanmean(maps[valid], axis=0) if valid.any() else np.zeros(maps.shape[1:])
        rows.append(("diff", title, maps - centre[None]))
    return rows if k else []


def draw_class_maps(path: Path, report: ClassMapReport) -> Path:
    names, k = report.class_names, len(report.class_names)
    rows = class_map_rows(report)
    counts = report.counts("true")
    fig = new_figure(1.25 * k + 2.9, 1.45 * len(rows) + 0.7)
    gs = fig.add_gridspec(len(rows), k, left=1.9 / (1.25 * k + 2.9), right=1 - 1.0 / (1.25 * k + 2.9),
                          top=1 - 0.45 / (1.45 * len(rows) + 0.7), bottom=0.04, wspace=0.05, hspace=0.12)
    over_top = max(float(np.nanmax(m)) for kind, _, m in rows if kind == "over")
    diff_top = max([float(np.nanmax(np.abs(m))) for kind, _, m in rows if kind == "diff"] + [1e-6])
    for r, (kind, title, maps) in enumerate(rows):
        for c in range(k):
            ax = fig.add_subplot(gs[r, c])
            head = f"{names[c]}\nn={counts[c]}" if r == 0 else None
            if np.isnan(maps[c]).all():
                _panel(ax, np.zeros(maps.shape[1:]), head, cmap="gray", vmin=0, vmax=1)
                continue
            if kind == "over":
                face, own = background(report, "true", c)
                _panel(ax, overlay(face, scaled(maps[c], over_top), COLORMAP, ALPHA),
                       head + ("" if own else " *"))
            else:
                _panel(ax, maps[c], head, cmap=DIFF_COLORMAP, vmin=-diff_top, vmax=diff_top)
            if c == 0:
                ax.set_ylabel(title, fontsize=7, rotation=0, ha="right", va="center", labelpad=8)
    width, height = fig.get_size_inches()
    step = 1 / len(rows)
    _colourbar(fig, [1 - 0.8 / width, 1 - 0.45 / height - step * (1 - 0.45 / height) + 0.02, 0.012, step * 0.7],
               _jet(), 0, over_top, "mean map")
    if len(rows) > 1:
        _colourbar(fig, [1 - 0.8 / width, 0.06, 0.012, step * 0.7 * (len(rows) - 1)],
                   DIFF_COLORMAP, -diff_top, diff_top, "difference")
    small = [names[c] for c in range(k) if counts[c] < report.config.min_faces_for_mean]
    note = (f"* fewer than {report.config.min_faces_for_mean} faces ({', '.join(small)}): drawn over the mean "
            f"face of the whole split" if small else "")
    fig.suptitle(f"{report.config.method} at {report.config.layer}, mean over faces per true class. {note}",
                 fontsize=8, y=0.995)
    return save(fig, path)


def draw_grouping(path: Path, report: ClassMapReport, grouping: str) -> Path:
    """Class maps of one grouping ("true", "predicted", "randomised") over mean faces and bare."""
    names, k = report.class_names, len(report.class_names)
    maps = report.class_maps(grouping)
    counts = report.counts("predicted" if grouping == "predicted" else "true")
    top = float(np.nanmax(maps)) if np.isfinite(maps).any() else 1.0
    fig = new_figure(1.25 * k + 1.0, 3.4)
    gs = fig.add_gridspec(2, k, left=0.02, right=1 - 0.9 / (1.25 * k + 1.0), top=0.84, bottom=0.03,
                          wspace=0.05, hspace=0.08)
    for c in range(k):
        face, own = background(report, "predicted" if grouping == "predicted" else "true", c)
        empty = np.isnan(maps[c]).all()
        heat = np.zeros(maps.shape[1:]) if empty else scaled(maps[c], top)
        _panel(fig.add_subplot(gs[0, c]), overlay(face, heat, COLORMAP, 0 if empty else ALPHA),
               f"{names[c]}\nn={counts[c]}" + ("" if own else " *"))
        _panel(fig.add_subplot(gs[1, c]), heat, cmap=_jet(), vmin=0, vmax=1)
    _colourbar(fig, [1 - 0.6 / (1.25 * k + 1.0), 0.1, 0.012, 0.7], _jet(), 0, top, "mean map")
    what = {"true": "faces by true class, explaining the true class",
            "predicted": "faces by predicted class, explaining the prediction",
            "randomised": "randomised model, faces by true class, explaining the true class"}[grouping]
    fig.suptitle(f"{report.config.method} at {report.config.layer}: {what}; * over the split's mean face "
                 f"(fewer than {report.config.min_faces_for_mean} faces)", fontsize=8)
    return save(fig, path)


def draw_layout(path: Path, report: ClassMapReport) -> Path:
    """The region layout over the split's mean face, with the landmarks check_layout found on it."""
    layout = report.layout
    face = stretch(report.split_mean_face)
    rgb = np.repeat(face[..., None], 3, axis=2).astype(np.float32) / 255
    colours = np.zeros_like(rgb)
    for name, mask in layout.masks.items():
        colours[mask] = to_rgb(REGION_COLOURS.get(name, "#999999"))
    tinted = 0.55 * rgb + 0.45 * colours
    fig = new_figure(7.2, 3.4)
    ax0, ax1 = fig.add_axes([0.01, 0.05, 0.3, 0.8]), fig.add_axes([0.33, 0.05, 0.3, 0.8])
    _panel(ax0, face, f"mean of {len(report.labels)} faces", cmap="gray", vmin=0, vmax=255)
    _panel(ax1, tinted, "regions and landmarks")
    size = layout.size
    checks = check_layout(report.split_mean_face, layout)
    for row in checks:
        ax1.plot(row["x"], row["y"], marker="+", color="white" if row["ok"] else "black", markersize=9, mew=2)
    marks = [(r["x"], r["y"]) for r in checks]
    for name, mask in layout.masks.items():
        ys, xs = np.nonzero(mask)
        if not len(xs) or name in ("outside", "other"):
            continue
        x, y = xs.mean(), ys.mean()
        if not mask[int(round(y)), int(round(x))]:  # a region in two parts (eyes, cheeks): label the left one
            left = xs < size / 2
            x, y = xs[left].mean(), ys[left].mean()
        if any(abs(x - mx) < 3 and abs(y - my) < 3 for mx, my in marks):
            y += 3.5 * size / 48  # clear of a landmark's cross
        ax1.text(x, y, name, fontsize=6, ha="center", va="center", color="black")
    lines = [layout.name.replace(" (", "\n("), f"{size} px", ""]
    area = layout.area_shares()
    lines += [f"{name:<9} {100 * a:4.1f} % of the frame" for name, a in zip(layout.regions, area)]
    fig.text(0.66, 0.85, "\n".join(lines), fontsize=7, family="monospace", va="top")
    fig.suptitle("+ landmarks found on the mean face (white: in their region)", fontsize=8)
    return save(fig, path)


def draw_region_shares(path: Path, report: ClassMapReport) -> Path:
    """Heat tables of region shares (% of each class map's mass): trained and randomised, expected
    (FACS) cells outlined."""
    tables = [("trained model", report.regions_true)]
    if report.regions_random is not None:
        tables.append(("randomised model", report.regions_random))
    regions, names = report.layout.regions, report.class_names
    width = 0.8 + 4.2 * len(tables)
    fig = new_figure(width, 3.2)
    top = max(float(np.nanmax(t.share)) for _, t in tables) * 100
    for i, (title, table) in enumerate(tables):
        ax = fig.add_axes([(0.8 + 4.2 * i) / width, 0.2, 3.8 / width, 0.68])
        ax.imshow(100 * table.share, cmap="viridis", vmin=0, vmax=top, aspect="auto")
        for c in range(len(names)):
            for r, region in enumerate(regions):
                value = 100 * table.share[c, r]
                ax.text(r, c, pct(value, 0), ha="center", va="center", fontsize=6,
                        color="white" if value < top * 0.6 else "black")
                if region in report.layout.expected.get(names[c], ()):
                    ax.add_patch(Rectangle((r - 0.5, c - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
        ax.set_xticks(range(len(regions)), regions, rotation=45, fontsize=6, ha="right")
        ax.set_yticks(range(len(names)), names if i == 0 else [""] * len(names), fontsize=7)
        ax.set_title(f"{title}: % of the class map's mass", fontsize=8)
    fig.suptitle("red: the regions expected for the class (" + report.layout.name + ")", fontsize=7, y=0.02,
                 va="bottom")
    return save(fig, path)


def draw_confusions(path: Path, report: ClassMapReport) -> Path | None:
    if not report.confusions:
        return None
    names = report.class_names
    n = len(report.confusions)
    fig = new_figure(6.6, 1.5 * n + 0.6)
    gs = fig.add_gridspec(n, 4, left=0.19, right=0.88, top=1 - 0.65 / (1.5 * n + 0.6), bottom=0.02,
                          wspace=0.06, hspace=0.3)
    top = max(max(float(c.mean_map.max()), float(c.contrast_map.max())) for c in report.confusions)
    for r, conf in enumerate(report.confusions):
        a, b = names[conf.true], names[conf.pred]
        own = conf.count >= report.config.min_faces_for_mean
        face = stretch(conf.mean_face if own else report.split_mean_face)
        panels = [(face, "mean face" + ("" if own else " *"), dict(cmap="gray")),
                  (overlay(face, scaled(conf.mean_map, top), COLORMAP, ALPHA), f"map of {b}", {}),
                  (overlay(face, scaled(conf.contrast_map, top), COLORMAP, ALPHA), f"{b}-vs-{a}", {}),
                  (scaled(conf.contrast_map, top), "the same, bare", dict(cmap=_jet(), vmin=0, vmax=1))]
        for col, (image, title, kw) in enumerate(panels):
            ax = fig.add_subplot(gs[r, col])
            _panel(ax, image, title, **kw)
            if col == 0:
                ax.set_ylabel(f"true {a}\npredicted {b}\nn={conf.count}", fontsize=7, rotation=0, ha="right",
                              va="center", labelpad=8)
    _colourbar(fig, [0.9, 0.1, 0.015, 0.7], _jet(), 0, top, "mean map")
    fig.suptitle(f"Most frequent confusions (true A, predicted B): the mean map of B and the mean contrastive\n"
                 f"map B-vs-A (logit B - logit A). * over the split's mean face (fewer than "
                 f"{report.config.min_faces_for_mean} faces)", fontsize=7)
    return save(fig, path)


def draw_disputes(folder: Path, report: ClassMapReport, files, faces_u8) -> list[Path]:
    """One PNG per given class: its most confidently disputed faces with the map of the class the model
    suggests and the contrast suggested-vs-label. Single faces of the split: never for publication."""
    names = report.class_names
    paths = []
    drawn = [i for i in report.disputed_order() if i in report.dispute_maps]
    for c, name in enumerate(names):
        rows = [i for i in drawn if report.labels[i] == c]
        if not rows:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        fig = new_figure(4.8, 1.5 * len(rows) + 0.4)
        gs = fig.add_gridspec(len(rows), 3, left=0.33, right=0.98, top=1 - 0.4 / (1.5 * len(rows) + 0.4),
                              bottom=0.01, wspace=0.05, hspace=0.1)
        for r, i in enumerate(rows):
            own, why = report.dispute_maps[i]
            s = int(report.suggested[i])
            face = faces_u8[i]
            for col, (image, title) in enumerate(((face, "face"), (overlay(face, own, COLORMAP, ALPHA), "model's class"),
                                                  (overlay(face, why, COLORMAP, ALPHA), "model's class\nvs the label"))):
                ax = fig.add_subplot(gs[r, col])
                _panel(ax, image, title if r == 0 else None, cmap="gray" if col == 0 else None)
            label = (f"{Path(files[i]).name}\nlabel {name} p={report.probs[i, c]:.2f}\nmodel {names[s]} "
                     f"p={report.probs[i, s]:.2f}")
            fig.text(0.01, 1 - (0.4 + (r + 0.5) * 1.5) / (1.5 * len(rows) + 0.4), label, fontsize=6.5, va="center")
        fig.suptitle(f"labelled {name}, disputed most confidently (single faces: keep out of the README)", fontsize=7)
        paths.append(save(fig, folder / f"{name}.png", dpi=100))
    return paths


# ---------------------------------------------------------------------------------------------------
# Tables


def region_rows(report: ClassMapReport):
    area = report.layout.area_shares()
    groups = [("true", report.regions_true, report.counts("true")),
              ("predicted", report.regions_pred, report.counts("predicted"))]
    if report.regions_random is not None:
        groups.append(("randomised", report.regions_random, report.counts("true")))
    for grouping, table, counts in groups:
        for c, name in enumerate(report.class_names):
            for r, region in enumerate(report.layout.regions):
                yield (grouping, name, int(counts[c]), region, 100 * table.share[c, r], 100 * table.low[c, r],
                       100 * table.high[c, r], 100 * float(area[r]),
                       "yes" if region in report.layout.expected.get(name, ()) else "")


def top_regions(share: np.ndarray, regions, area, count: int = 2) -> str:
    """The regions most over-represented against their area: 'mouth 2.1x, jaw 1.6x'."""
    if np.isnan(share).all():
        return ""
    lift = share / np.maximum(area, 1e-9)
    order = np.argsort(-lift)[:count]
    return ", ".join(f"{regions[i]} {lift[i]:.1f}x" for i in order)


def confusion_rows(report: ClassMapReport):
    names, regions, area = report.class_names, report.layout.regions, report.layout.area_shares()
    counts = report.counts("true")
    for conf in report.confusions:
        share_map = shares(region_mass(conf.mean_map[None], report.layout))[0]
        share_contrast = shares(region_mass(conf.contrast_map[None], report.layout))[0]
        yield (names[conf.true], names[conf.pred], conf.count, 100 * conf.count / counts[conf.true],
               top_regions(share_map, regions, area), top_regions(share_contrast, regions, area))


def dispute_rows(report: ClassMapReport):
    names, k = report.class_names, len(report.class_names)
    counts = report.counts("true")
    for c, name in enumerate(names):
        mine = report.disputed & (report.labels == c)
        suggested = np.bincount(report.suggested[mine], minlength=k) if mine.any() else np.zeros(k, int)
        most = names[int(suggested.argmax())] if mine.any() else ""
        yield (name, int(counts[c]), int(mine.sum()), 100 * mine.sum() / max(counts[c], 1), most,
               int(suggested.max()) if mine.any() else 0)


def structure_rows(report: ClassMapReport):
    """(explained class, faces, model, Structure): the class maps as drawn, then with the class held fixed."""
    for name, s in report.structure.items():
        yield "own (true) class", len(report.labels), name, s
    for name, s in report.fixed_structure.items():
        yield "each class in turn, held fixed", len(report.structure_sample), name, s


def write_tables(out: Path, report: ClassMapReport, files) -> list[Path]:
    names = report.class_names
    paths = []
    pred, counts_t, counts_p = report.pred, report.counts("true"), report.counts("predicted")
    correct = np.bincount(report.labels[pred == report.labels], minlength=len(names))
    paths.append(write_csv(out / "class_counts.csv", ("class", "n_true", "n_predicted", "n_correct", "recall_pct",
                                                      "n_disputed"),
                           [(n, int(counts_t[c]), int(counts_p[c]), int(correct[c]),
                             100 * correct[c] / max(counts_t[c], 1), int((report.disputed & (report.labels == c)).sum()))
                            for c, n in enumerate(names)]))
    paths.append(write_csv(out / "region_shares.csv", ("grouping", "class", "n", "region", "share_pct", "low_pct",
                                                       "high_pct", "area_pct", "facs_region"),
                           region_rows(report)))
    paths.append(write_csv(out / "facs_agreement.csv", ("class", "n", "facs", "regions", "share_pct", "others_pct",
                                                        "agreement_pp", "low_pp", "high_pp", "top_regions"),
                           [(row["cls"], int(counts_t[c]), row["basis"], row["regions"], row["share"], row["others"],
                             row["agreement"], row["low"], row["high"],
                             top_regions(report.regions_true.share[c], report.layout.regions,
                                         report.layout.area_shares()))
                            for c, row in enumerate(report.agreement)]))
    paths.append(write_csv(out / "class_structure.csv", ("model", "explained_class", "faces", "structure",
                                                         "shuffled_labels", "shuffled_95", "excess", "p_value"),
                           [(name, what, faces, s.value, s.shuffled, s.shuffled_high, s.excess, s.p_value)
                            for what, faces, name, s in structure_rows(report)]))
    paths.append(write_csv(out / "confusions.csv", ("true", "predicted", "n", "pct_of_true_class",
                                                    "map_top_regions", "contrast_top_regions"),
                           confusion_rows(report)))
    paths.append(write_csv(out / "disputes_per_class.csv", ("label", "n", "disputed", "disputed_pct",
                                                            "most_suggested", "n_most_suggested"),
                           dispute_rows(report)))
    order = report.disputed_order()
    paths.append(write_csv(out / "disputes.csv", ("file", "label", "suggested", "p_label", "p_suggested", "margin"),
                           [(files[i], names[report.labels[i]], names[report.suggested[i]],
                             float(report.probs[i, report.labels[i]]), float(report.probs[i, report.suggested[i]]),
                             float(report.margin[i])) for i in order]))
    checks = [("split", r) for r in check_layout(report.split_mean_face, report.layout)]
    for c, name in enumerate(names):
        if counts_t[c] >= report.config.min_faces_for_mean:
            checks += [(name, r) for r in check_layout(report.mean_faces[c], report.layout)]
    paths.append(write_csv(out / "layout_check.csv", ("mean_face", "landmark", "x", "y", "region", "expected", "ok"),
                           [(face, r["landmark"], r["x"], r["y"], r["region"], r["expected"], "yes" if r["ok"] else "no")
                            for face, r in checks]))
    return paths


def summary_markdown(report: ClassMapReport, meta: dict) -> str:
    names, cfg = report.class_names, report.config
    counts_t = report.counts("true")
    accuracy = float((report.pred == report.labels).mean())
    lines = [f"# What the model looks at: {meta.get('model', '')} on {meta.get('split', '')}", "",
             f"- command: `{meta.get('command', '')}`",
             f"- {len(report.labels)} faces, accuracy {100 * accuracy:.1f} %; map: {cfg.method} at {cfg.layer}"
             f"{'' if cfg.tta == 'none' else f', averaged over the {cfg.tta} views'}; {cfg.bootstrap} bootstrap "
             f"resamples, {cfg.shuffles} label shuffles, seed {cfg.seed}",
             f"- regions: {report.layout.name}", f"- analysis time: {meta.get('seconds', 0):.0f} s "
             f"({meta.get('machine', '')})", ""]
    lines += ["## Class structure", "",
              "Mean pairwise total-variation distance between the class maps (each scaled to mass 1), beside "
              "its mean and 95th percentile over label shuffles (sampling noise alone); excess = distance - "
              "shuffled. First the class maps as drawn (each face explaining its own class), then with the "
              "explained class held fixed (each class in turn on a class-balanced sample, the distance "
              "averaged over the explained classes), which leaves out what the read-out of each class adds "
              "whatever the face.", "",
              markdown(("explained class", "faces", "model", "distance", "shuffled labels", "shuffled 95th pct",
                        "excess", "p"),
                       [(what, faces, m, f"{s.value:.3f}", f"{s.shuffled:.3f}", f"{s.shuffled_high:.3f}",
                         f"{s.excess:.3f}", f"{s.p_value:.3f}") for what, faces, m, s in structure_rows(report)]),
              ""]
    area = report.layout.area_shares()
    lines += ["## Regions against FACS", "",
              "agreement = share of the class map in the regions its FACS units move - the mean share of the "
              "other classes' maps there (percentage points; 95 % bootstrap interval over faces).", "",
              markdown(("class", "n", "basis", "regions", "share %", "others %", "agreement pp", "95 % interval",
                        "most over-represented (share / area)"),
                       [(r["cls"], int(counts_t[c]), r["basis"], r["regions"] or "-", pct(r["share"]),
                         pct(r["others"]), pct(r["agreement"]),
                         f"{pct(r['low'])} to {pct(r['high'])}" if np.isfinite(r["low"]) else "-",
                         top_regions(report.regions_true.share[c], report.layout.regions, area))
                        for c, r in enumerate(report.agreement)]), ""]
    regions = report.layout.regions
    lines += ["## Region shares (% of each true class's map, 95 % interval)", "",
              markdown(("class",) + regions,
                       [(name,) + tuple(f"{pct(100 * report.regions_true.share[c, r])} "
                                        f"({pct(100 * report.regions_true.low[c, r], 0)}-"
                                        f"{pct(100 * report.regions_true.high[c, r], 0)})"
                                        for r in range(len(regions)))
                        for c, name in enumerate(names)]),
              "", "area of the frame (%): " + ", ".join(f"{r} {100 * a:.1f}" for r, a in zip(regions, area)), ""]
    if report.regions_random is not None:
        lines += ["Randomised model (%):", "",
                  markdown(("class",) + regions,
                           [(name,) + tuple(pct(100 * report.regions_random.share[c, r]) for r in range(len(regions)))
                            for c, name in enumerate(names)]), ""]
    lines += ["## Confusions", "",
              markdown(("true A", "predicted B", "n", "% of A", "map of B: top regions", "B-vs-A: top regions"),
                       [(a, b, n, pct(p), m, x) for a, b, n, p, m, x in confusion_rows(report)]), ""]
    lines += ["## Labels the model disputes", "",
              "Confident-joint off-diagonal (Northcutt et al. 2021): the model's probability of another class "
              "reaches that class's mean self-confidence and is the highest such class, and the label is not "
              "the model's top class (cleanlab's find_label_issues with filter_by='confident_learning').", "",
              markdown(("label", "n", "disputed", "%", "most often suggested", "times"),
                       [(a, n, d, pct(p), s, t) for a, n, d, p, s, t in dispute_rows(report)]), ""]
    checks = check_layout(report.split_mean_face, report.layout)
    if checks:
        lines += ["## Layout check on the split's mean face", "",
                  markdown(("landmark", "x", "y", "region", "expected", "ok"),
                           [(r["landmark"], r["x"], r["y"], r["region"], r["expected"], "yes" if r["ok"] else "NO")
                            for r in checks]), ""]
    return "\n".join(lines)


def write_report(out_dir, report: ClassMapReport, files, faces_u8, meta: dict) -> list[Path]:
    """All outputs into out_dir; returns the paths written. files: the faces' paths; faces_u8: (N, S, S)
    uint8 faces (only the disputed ones are drawn, into out_dir/disputes/)."""
    out = ensure_writable_dir(out_dir, "output")
    paths = write_tables(out, report, files)
    paths.append(draw_class_maps(out / "class_maps.png", report))
    for grouping in ("true", "predicted") + (("randomised",) if report.maps_random is not None else ()):
        paths.append(draw_grouping(out / f"class_maps_{grouping}.png", report, grouping))
    paths.append(draw_layout(out / "face_regions.png", report))
    paths.append(draw_region_shares(out / "region_shares.png", report))
    confusion = draw_confusions(out / "confusions.png", report)
    if confusion:
        paths.append(confusion)
    paths += draw_disputes(out / "disputes", report, files, faces_u8)
    arrays = dict(class_names=np.array(report.class_names), regions=np.array(report.layout.regions),
                  region_labels=report.layout.label_image(), class_maps_true=report.class_maps("true"),
                  class_maps_predicted=report.class_maps("predicted"), counts_true=report.counts("true"),
                  counts_predicted=report.counts("predicted"), labels=report.labels, probs=report.probs)
    if report.maps_random is not None:
        arrays["class_maps_randomised"] = report.class_maps("randomised")
    big = report.counts("true") >= report.config.min_faces_for_mean  # mean faces of enough faces only
    arrays["mean_faces_true"] = np.where(big[:, None, None], report.mean_faces, np.nan).astype(np.float32)
    for i, conf in enumerate(report.confusions):
        arrays[f"confusion{i}_map"], arrays[f"confusion{i}_contrast"] = conf.mean_map, conf.contrast_map
    path = out / "class_maps.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    paths.append(path)
    summary = out / "summary.md"
    write_text(summary, summary_markdown(report, meta))
    paths.append(summary)
    return paths

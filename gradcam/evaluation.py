"""Scoring explanations: faithfulness (deletion/insertion, average drop, ROAD), localisation (the
pointing games against evidence masks) and the cascading randomisation sanity check, for every method
x layer map and two baselines every method must beat (uniform noise, a centred blob).

    from gradcam.evaluation import score_explanations
    scores = score_explanations(model, images, labels, methods=("gradcam",), layers=("layer3",),
                                mean=(0.5,) * 3, std=(0.5,) * 3)
    columns, rows = scores.summary_rows()      # one row per map: the mean of every metric
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .methods import explain, map_keys
from .views import explain_views
from .metrics import (BASELINE_MAPS, DEFAULT_BLUR_SIGMA, DEFAULT_STEPS, baseline_maps, confidence_change,
                      energy_pointing_game, make_baseline, perturbation_curves, pointing_game, road)
from .sanity import cascading_randomization, randomization_stages

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

# A map "passes" the cascading randomisation check when its Spearman correlation with the trained
# model's map stays below this once fc alone, and once its own layer and all above it, are random
# (Adebayo et al. 2018 ask for a clear drop; 0.5 leaves a map that shares under a quarter of its
# rank variance with the original).
SANITY_MAX_RHO = 0.5


def trusted(row: dict, baselines: list, sanity_max_rho: float = SANITY_MAX_RHO) -> str:
    """"yes" when the row beats every baseline row on deletion (lower) and, where there are masks, on
    pointing (higher), and passes the randomisation check (both rho columns that exist below
    `sanity_max_rho`); "no" otherwise; "" for the baselines themselves or when nothing was measured."""
    if row["method"] in BASELINE_MAPS or math.isnan(row["deletion_auc"]):
        return ""
    ok = all(row["deletion_auc"] < b["deletion_auc"] for b in baselines)
    if not math.isnan(row["pointing_game"]):
        ok = ok and all(row["pointing_game"] > b["pointing_game"] for b in baselines)
    if not math.isnan(row["randomisation_rho_top"]):  # the sanity check ran
        rhos = [row[c] for c in ("randomisation_rho_top", "randomisation_rho_layer") if not math.isnan(row[c])]
        ok = ok and all(r < sanity_max_rho for r in rhos)
    return "yes" if ok else "no"


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


def split_key(key: str):
    return tuple(key.split("/", 1)) if "/" in key else (key, "")



def variant_key(key: str, variant: str) -> str:
    """"gradcam/layer1", "flip" -> "gradcam@flip/layer1": the variant joins the method, so tables and
    plots keep grouping by layer."""
    method, layer = split_key(key)
    return f"{method}@{variant}/{layer}"


def report_keys(methods, layers, fuse: bool = False, tta=None) -> list:
    """Every map key `score_explanations` scores, in report order (baselines last)."""
    keys = map_keys(methods, layers, fuse)
    for name in (tta or {}):
        keys += [variant_key(k, name) for k in map_keys(methods, layers, fuse)]
    return keys + list(BASELINE_MAPS)


def progress_total(n: int, batch_size: int, methods, layers, sanity: bool, fuse: bool = False, tta=None) -> int:
    """How many `progress.update(1)` calls `score_explanations` makes."""
    return math.ceil(n / batch_size) * (len(report_keys(methods, layers, fuse, tta)) + int(sanity))


def explain_all(model, images, layers, methods, targets=None, fuse: bool = False, tta=None,
                scorecam_batch_size: int = 64):
    """``explain`` plus, for every `tta` entry (name -> list of gradcam.views.View), the same maps averaged
    over those views (keys "method@name/layer"), all explaining the same targets. One object with .maps
    and .targets/.probs of the plain pass; also the cascade's `explain_fn`."""
    res = explain(model, images, layers=layers, methods=methods, targets=targets, fuse=fuse,
                  scorecam_batch_size=scorecam_batch_size)
    for name, views in (tta or {}).items():
        averaged = explain_views(model, images, views, targets=res.targets, layers=layers, methods=methods,
                                 fuse=fuse, scorecam_batch_size=scorecam_batch_size)
        res.maps.update({variant_key(k, name): v for k, v in averaged.maps.items()})
    return res


@dataclass
class ExplanationScores:
    """Per-image values of every metric per map key ("method/layer", or "random" / "centre"), the keys
    in report order, and the cascade's stages (empty without the sanity check)."""
    values: Accumulator
    keys: list
    stages: list

    @property
    def n(self) -> int:
        return len(self.values.get("_", "label"))

    @property
    def targets(self) -> np.ndarray:
        return self.values.get("_", "target")

    @property
    def labels(self) -> np.ndarray:
        return self.values.get("_", "label")

    def summary_rows(self, corner: str | None = None, corner_index: int = -1) -> tuple[list, list]:
        """-> (columns, one row per map key with the mean of each metric); `corner`: the class whose
        pointing games also get their own columns."""
        acc, keys, n = self.values, self.keys, self.n
        labels = acc.get("_", "label")
        columns = ["method", "layer", "n_images"] + [c for c, _, _ in COLUMNS[:6]] + ["n_pointing"] + \
            [c for c, _, _ in COLUMNS[6:8]]
        corner_cols = [f"pointing_game_{corner}", f"energy_pointing_game_{corner}"] if corner else []
        columns += corner_cols + [c for c, _, _ in COLUMNS[8:]] + ["trusted"]
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
        baselines = [r for r in rows if r["method"] in BASELINE_MAPS]
        for row in rows:
            row["trusted"] = trusted(row, baselines)
        return columns, rows

    def per_class_rows(self, class_names) -> list:
        """Pointing and energy pointing per true class (needs masks)."""
        rows = []
        for key in self.keys:
            method, layer = split_key(key)
            for ci, name in enumerate(class_names):
                pg = self.values.get(key, "pointing_game")[self.labels == ci]
                epg = self.values.get(key, "energy_pointing_game")[self.labels == ci]
                rows.append({"method": method, "layer": layer, "class": name, "n": int((~np.isnan(pg)).sum()),
                             "pointing_game": nanmean(pg), "energy_pointing_game": nanmean(epg)})
        return rows

    def cascade_rows(self) -> list:
        """Mean Spearman with the trained model's map after each cumulative re-initialisation step."""
        rows = []
        for key in self.keys:
            method, layer = split_key(key)
            values = self.values.get(key, "randomisation_cascade")
            for si, stage in enumerate(self.stages):
                rows.append({"method": method, "layer": layer, "step": si + 1, "stage": stage,
                             "randomised": "+".join(self.stages[:si + 1]), "spearman": nanmean(values[:, si])})
        return rows


def score_explanations(model, images: torch.Tensor, labels, *, methods, layers, mean, std,
                       explain_true_class: bool = False, masks=None, has_mask=None, batch_size: int = 64,
                       baseline: str = "blur", blur_sigma: float = DEFAULT_BLUR_SIGMA, steps: int = DEFAULT_STEPS,
                       road_scores: bool = False, pointing_ties: str = "any", sanity: bool = True, seed: int = 0,
                       progress=None, fuse: bool = False, tta=None) -> ExplanationScores:
    """Every metric for every method x layer map (and the random and centre baselines) over batches of
    `images` ((N,3,S,S), normalised with `mean`/`std`, on the CPU; each batch moves to the model's
    device). `labels` are class indices (-1 = unknown); `masks` (N,S,S) bool evidence with `has_mask`
    (N,) for the pointing games. `progress`, if given, gets `.update(1)` once per map key and batch
    and per cascade (`progress_total` says how many). Bad methods or layers raise ValueError. `fuse` adds
    each CAM method's multi-layer fusion ("method/fused"), `tta` (name -> views) the maps averaged over
    test-time-augmentation views ("method@name/layer"), scored on the original faces for the same
    targets."""
    methods, layers = list(methods), list(layers)
    keys = report_keys(methods, layers, fuse, tta)
    stages = randomization_stages(model) if sanity else []
    acc = Accumulator()
    n = len(images)
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        index = list(range(start, min(start + batch_size, n)))
        x = images[start:start + len(index)].to(device)
        wanted = [labels[i] for i in index] if explain_true_class else None
        res = explain_all(model, x, layers, methods, targets=wanted, fuse=fuse, tta=tta,
                          scorecam_batch_size=batch_size)
        targets = res.targets
        full = res.probs.gather(1, targets[:, None])[:, 0]
        maps = dict(res.maps)
        for kind in BASELINE_MAPS:
            maps[kind] = baseline_maps(kind, len(index), x.shape[-2:], seed=seed, start=start)
        base_img = make_baseline(x, baseline, mean, std, blur_sigma)
        true = torch.tensor([labels[i] for i in index])
        # Masks show the evidence of the true class: score only maps that explain that class.
        pointable = torch.from_numpy(has_mask[index]) & (true >= 0) & (targets == true)
        for key in keys:
            m = maps[key]
            curves = perturbation_curves(model, x, m, targets, base_img, steps=steps)
            acc.add(key, "deletion_curve", curves.deletion)
            acc.add(key, "insertion_curve", curves.insertion)
            acc.add(key, "deletion_auc", curves.deletion_auc())
            acc.add(key, "insertion_auc", curves.insertion_auc())
            change = confidence_change(model, x, m, targets, mean, std, full=full)
            acc.add(key, "average_drop", change.drop * 100)
            acc.add(key, "increase_in_confidence", change.increase.double() * 100)
            if road_scores:
                result = road(model, x, m, targets, seed=seed * 1_000_003 + start)
                acc.add(key, "road_morf", result.morf.mean(1))
                acc.add(key, "road_lerf", result.lerf.mean(1))
            if masks is not None:
                mk = torch.from_numpy(masks[index])
                nan = torch.full((len(index),), math.nan, dtype=torch.float64)
                acc.add(key, "pointing_game", torch.where(pointable, pointing_game(m, mk, pointing_ties), nan))
                acc.add(key, "energy_pointing_game", torch.where(pointable, energy_pointing_game(m, mk), nan))
            if progress is not None:
                progress.update(1)
        acc.add("_", "target", targets)
        acc.add("_", "label", true)
        if sanity:
            cascade = cascading_randomization(model, x, res.maps, targets, layers, methods,
                                              stages=stages, seed=seed, explain_fn=explain_all, fuse=fuse,
                                              tta=tta, scorecam_batch_size=batch_size)
            for key in res.maps:
                acc.add(key, "randomisation_rho_top", cascade.correlation[key][0])
                acc.add(key, "randomisation_rho_layer", cascade.at_layer(key))
                acc.add(key, "randomisation_cascade", cascade.correlation[key].T)
            for kind in BASELINE_MAPS:  # they ignore the weights by construction: identical maps, rho = 1
                ones = torch.ones(len(index), dtype=torch.float64)
                acc.add(kind, "randomisation_rho_top", ones)
                acc.add(kind, "randomisation_rho_layer", ones)
                acc.add(kind, "randomisation_cascade", torch.ones(len(index), len(stages), dtype=torch.float64))
            if progress is not None:
                progress.update(1)
    return ExplanationScores(acc, keys, stages)

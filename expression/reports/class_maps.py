"""What a model looks at, per class, over a labelled split: class maps, face regions, confusions and
the labels the model disputes (issue 26; the script is classmaps_FER.py).

Every face gets one explanation map (default: the map the explanation report trusts on the shipped
model, HiResCAM at layer1), each min-max normalised to [0, 1] as gradcam returns it. Then:

* class maps: the mean map of the faces of each true class, explaining that class, and of each
  predicted class, explaining the prediction (the two agree on every correctly classified face);
* regions: the share of a class map's mass in each region of a `face_regions.RegionLayout`, with a
  percentile bootstrap interval over faces, and the FACS agreement (`facs_agreement`);
* class structure: how different the class maps are (`class_structure`: mean pairwise total-variation
  distance), for the trained model and for a copy whose layers from the output down to the explained
  layer are re-initialised (the cascade step of gradcam.sanity at that layer), each beside the value
  label-shuffled faces give (what sampling noise alone makes). Twice: for the class maps as drawn (each
  face explaining its own class), and with the explained class held fixed (`fixed_target_structure`:
  every class in turn explained on a class-balanced sample), which leaves out the part of the
  difference that comes from the target alone: a randomised read-out gives each target a fixed
  pattern of its own whatever the face;
* confusions: for the most frequent (true A, predicted B) pairs, the mean map explaining B and the mean
  contrastive map of logit B - logit A (gradcam.Contrast: what made it B rather than A);
* disputed labels: the faces in the off-diagonal of the confident joint (`disputed_labels`).

    from expression.reports.class_maps import ClassMapConfig, analyse
    report = analyse(model, images, labels, class_names, prep, ClassMapConfig())
    report.class_maps("true").shape        # (7, 48, 48)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, SHIPPED_MAP_TTA
from expression.core.datasets import class_folders, class_has_images
from expression.core.errors import InputError
from expression.core.preprocessing import normalize
from expression.core.tta import TTA_MODES, tta_geometry
from expression.reports.face_regions import RegionLayout
from gradcam import METHODS, Contrast, explain, explain_views, map_keys
from gradcam.base import resolve_layers
from gradcam.sanity import randomization_stages, reinitialize_

# Maps with no class: a class map or a contrast of them says nothing about the class.
CLASS_AGNOSTIC = ("eigencam",)
# Fewer faces than this are not drawn as a mean face of their own (an average of a few dozen faces can
# still resemble its members; one of hundreds shows no one's face): their maps are drawn over the mean
# face of the whole split instead.
MIN_FACES_FOR_MEAN = 200


@dataclass(frozen=True)
class ClassMapConfig:
    method: str = DEFAULT_CAM_METHOD
    layer: str = DEFAULT_CAM_LAYER
    tta: str = SHIPPED_MAP_TTA          # "none", "flip" or "tencrop": maps averaged over the classifier's views
    batch_size: int = 64
    confusions: int = 4                 # most frequent (true, predicted) pairs explained contrastively
    bootstrap: int = 1000               # resamples for the region-share and agreement intervals
    shuffles: int = 50                  # label shuffles for the class-structure noise floor
    structure_faces: int = 40           # faces per class explained for every class in turn (0: skip)
    randomise: bool = True              # also the maps of the randomised model
    disputes_shown: int = 8             # disputed faces per class explained (and drawn by the script)
    min_faces_for_mean: int = MIN_FACES_FOR_MEAN
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}", option="method")
        if self.method in CLASS_AGNOSTIC:
            raise InputError(f"{self.method} maps have no class (the same map for every target): choose a "
                             f"class-discriminative method such as {DEFAULT_CAM_METHOD}", option="method")
        if self.tta not in TTA_MODES:
            raise InputError(f"unknown TTA mode {self.tta!r}: choose one of {', '.join(TTA_MODES)}",
                             option="tta_maps")
        if self.batch_size < 1 or self.bootstrap < 1 or self.shuffles < 1 or self.structure_faces < 0:
            raise InputError("batch size, bootstrap resamples and shuffles must be positive")

    @property
    def key(self) -> str:
        return map_keys((self.method,), (self.layer,))[0]


def check_split(split_dir, class_names) -> list[str]:
    """A labelled ImageFolder split whose class folders are exactly the model's classes, none of them
    empty -> its class folder names. Anything else is an InputError (option "split") saying what to fix."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(f"{split_dir} does not exist or is not a folder: give a labelled split, a folder of "
                         f"<class>/ sub-folders of images", option="split")
    folders = class_folders(split_dir)
    if not folders:
        raise InputError(f"{split_dir} has no class sub-folders: class maps need labelled faces in "
                         f"{split_dir}/<class>/*.png", option="split")
    if set(folders) != set(class_names):
        only_model = sorted(set(class_names) - set(folders))
        only_split = sorted(set(folders) - set(class_names))
        raise InputError(f"the model's classes differ from the class folders of {split_dir} (only the model has: "
                         f"{', '.join(only_model) or 'none'}; only the split has: {', '.join(only_split) or 'none'}): "
                         f"give a split of the model's classes, or the model trained on these", option="split")
    for name in folders:
        folder = split_dir / name
        if not class_has_images(folder):
            raise InputError(f"class folder {folder} has no faces: every class needs at least one image",
                             option="split")
    return folders


def check_layer(model, layer: str) -> None:
    """An unknown layer is an InputError naming the valid ones, before any face is explained."""
    try:
        resolve_layers(model, layer)
    except ValueError as err:
        raise InputError(str(err).splitlines()[0], option="layer") from None


# ---------------------------------------------------------------------------------------------------
# Maps in batches


def explain_faces(model, images: torch.Tensor, targets, config: ClassMapConfig, mean, std,
                  desc: str = "maps") -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, S, S) faces and one target per face (class index or gradcam.Contrast) ->
    (maps float32 (N, S, S) in [0, 1], probabilities float32 (N, K)), in batches of config.batch_size,
    averaged over config.tta's views when it is not "none"."""
    n = len(images)
    device = next(model.parameters()).device
    key = config.key
    views = tta_geometry(config.tta, images.shape[-1]) if config.tta != "none" else None
    maps, probs = [], []
    starts = range(0, n, config.batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not config.progress, leave=False):
        stop = min(start + config.batch_size, n)
        x = normalize(images[start:stop], mean, std).to(device)
        wanted = list(targets[start:stop])
        kwargs = dict(targets=wanted, layers=(config.layer,), methods=(config.method,))
        res = explain_views(model, x, views, **kwargs) if views else explain(model, x, **kwargs)
        maps.append(res.maps[key].float().cpu().numpy())
        probs.append(res.probs.float().cpu().numpy())
    if not maps:
        size = images.shape[-1]
        return np.zeros((0, size, size), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs).astype(np.float32)


def randomised_copy(model, layer: str, seed: int = 0):
    """A copy of `model` with its top-level stages re-initialised from the output end down to the one
    holding `layer`: the step of gradcam.sanity.cascading_randomization at which the explained layer is
    random, with the same per-stage seeds (seed * 1000 + step), so it is the model the explanation
    report's randomisation_rho_layer column was measured on."""
    random = copy.deepcopy(model)
    modules = dict(random.named_modules())
    for i, stage in enumerate(randomization_stages(random)):
        reinitialize_(modules[stage], seed=seed * 1000 + i)
        if layer == stage or layer.startswith(stage + "."):
            break
    return random.eval()


# ---------------------------------------------------------------------------------------------------
# Class maps, region shares, agreement, structure


def class_means(maps: np.ndarray, groups: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S) maps and a group index per map -> ((k, S, S) mean per group, NaN where empty; (k,) counts)."""
    counts = np.bincount(groups, minlength=k)[:k]
    sums = np.zeros((k,) + maps.shape[1:], np.float64)
    np.add.at(sums, groups, maps)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None, None]
    return means.astype(np.float32), counts


def region_mass(maps: np.ndarray, layout: RegionLayout) -> np.ndarray:
    """(N, S, S) maps -> (N, R) each map's mass in each region of the layout."""
    if maps.shape[-1] != layout.size:
        raise ValueError(f"maps are {maps.shape[-1]} px, the layout {layout.size} px")
    return maps.reshape(len(maps), -1).astype(np.float64) @ layout.onehot().astype(np.float64)


def shares(mass: np.ndarray) -> np.ndarray:
    """(..., R) masses -> shares of their total (NaN for an all-zero row)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass / mass.sum(-1, keepdims=True)


@dataclass
class RegionShares:
    """Region shares of the class maps of one grouping (faces by true or by predicted class)."""

    counts: np.ndarray     # (K,) faces per class
    share: np.ndarray      # (K, R) share of the class map's mass per region
    low: np.ndarray        # (K, R) 2.5th percentile of the bootstrap
    high: np.ndarray       # (K, R) 97.5th percentile
    replicates: np.ndarray  # (B, K, R) bootstrap shares (NaN rows for empty classes)


def bootstrap_region_shares(mass: np.ndarray, groups: np.ndarray, k: int, resamples: int,
                            rng: np.random.Generator) -> RegionShares:
    """Region shares per class and their percentile bootstrap: in every resample each class's faces are
    drawn with replacement (classes independently), and the share is recomputed from the drawn faces'
    region masses. A class map's region share is sum of the faces' masses there over their total mass,
    the same as the share of the mean map, so no map is needed."""
    r = mass.shape[1]
    counts = np.bincount(groups, minlength=k)[:k]
    point = np.full((k, r), np.nan)
    reps = np.full((resamples, k, r), np.nan)
    for c in range(k):
        rows = mass[groups == c]
        if not len(rows):
            continue
        point[c] = shares(rows.sum(0))
        pick = rng.integers(0, len(rows), size=(resamples, len(rows)))
        reps[:, c] = shares(rows[pick].sum(1))
    low, high = np.full((k, r), np.nan), np.full((k, r), np.nan)
    seen = counts > 0
    low[seen], high[seen] = np.percentile(reps[:, seen], 2.5, axis=0), np.percentile(reps[:, seen], 97.5, axis=0)
    return RegionShares(counts, point, low, high, reps)


def facs_agreement(share: np.ndarray, replicates: np.ndarray, class_names, layout: RegionLayout) -> list[dict]:
    """Per class: the share of its class map in the regions its FACS units move (E), the mean share the
    other classes' maps put in the same regions, and the agreement = the difference, in percentage
    points, with a bootstrap interval (each resample's difference). Positive: the class's map looks at
    its own FACS regions more than the model looks there for the other classes; 0: no more than for
    any other class. Classes without regions (neutral) get no score."""
    regions = list(layout.regions)
    rows = []
    k = len(class_names)
    for c, name in enumerate(class_names):
        expected = layout.expected.get(name, ())
        row = dict(cls=name, basis=layout.basis.get(name, ""), regions="+".join(expected))
        if not expected or np.isnan(share[c]).all():
            rows.append({**row, "share": np.nan, "others": np.nan, "agreement": np.nan, "low": np.nan,
                         "high": np.nan})
            continue
        cols = [regions.index(r) for r in expected]
        others = [o for o in range(k) if o != c and not np.isnan(share[o]).all()]
        own = share[c, cols].sum()
        rest = share[others][:, cols].sum(1).mean() if others else np.nan
        rep_own = replicates[:, c][:, cols].sum(1)
        rep_rest = replicates[:, others][:, :, cols].sum(2)
        rep = 100 * (rep_own - np.nanmean(rep_rest, axis=1)) if others else np.full(len(rep_own), np.nan)
        with np.errstate(invalid="ignore"):
            low, high = np.nanpercentile(rep, 2.5), np.nanpercentile(rep, 97.5)
        rows.append({**row, "share": 100 * own, "others": 100 * rest, "agreement": 100 * (own - rest),
                     "low": low, "high": high})
    return rows


def _unit_mass(means: np.ndarray) -> np.ndarray:
    """(K, S, S) class maps -> (K, S*S) each scaled to total mass 1 (where mapless: NaN)."""
    flat = means.reshape(len(means), -1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flat / flat.sum(1, keepdims=True)


def structure_of(means: np.ndarray) -> float:
    """Mean pairwise total-variation distance between class maps as distributions of mass: the share of
    one class map's mass that must move to make it another's, averaged over class pairs (0: all class
    maps alike; 1: no overlap). Empty classes are left out."""
    dist = _unit_mass(means)
    dist = dist[~np.isnan(dist).any(1)]
    pairs = list(combinations(range(len(dist)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean([0.5 * np.abs(dist[a] - dist[b]).sum() for a, b in pairs]))


@dataclass
class Structure:
    value: float          # structure_of the class maps
    shuffled: float       # its mean over label shuffles: what sampling noise alone gives
    shuffled_high: float  # the 95th percentile over the shuffles
    p_value: float        # (1 + shuffles at or above value) / (1 + shuffles)

    @property
    def excess(self) -> float:
        """The class structure beyond sampling noise: value - shuffled."""
        return self.value - self.shuffled


def _structure_against_shuffles(maps_by_target: np.ndarray, groups: np.ndarray, k: int, shuffles: int,
                                rng: np.random.Generator) -> Structure:
    """(T, N, S, S) maps -> the mean over the T sets of structure_of their class maps (faces grouped by
    `groups`), beside the same with the labels shuffled (one permutation for all T; class sizes kept)."""
    flats = maps_by_target.reshape(len(maps_by_target), maps_by_target.shape[1], -1).astype(np.float32)

    def value(g) -> float:
        onehot = np.zeros((k, len(g)), np.float32)
        onehot[g, np.arange(len(g))] = 1
        counts = onehot.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(np.mean([structure_of((onehot @ flat) / counts) for flat in flats]))

    point = value(groups)
    null = np.array([value(rng.permutation(groups)) for _ in range(shuffles)])
    return Structure(point, float(null.mean()), float(np.percentile(null, 95)),
                     float((1 + (null >= point).sum()) / (1 + shuffles)))


def class_structure(maps: np.ndarray, groups: np.ndarray, k: int, shuffles: int,
                    rng: np.random.Generator) -> Structure:
    """structure_of the class maps beside its distribution when the faces' labels are shuffled (class
    sizes kept): a group of 56 faces has a noisier mean map than one of 895, so distances between class
    maps are never 0 even for a model that ignores the class; the shuffles measure that floor, and the
    permutation p-value says whether the real grouping beats it."""
    return _structure_against_shuffles(maps[None], groups, k, shuffles, rng)


def balanced_sample(labels: np.ndarray, k: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `per_class` faces of each class, drawn without replacement, sorted."""
    picks = [rng.choice(np.flatnonzero(labels == c), min(per_class, int((labels == c).sum())), replace=False)
             for c in range(k)]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def fixed_target_structure(maps_by_target: np.ndarray, groups: np.ndarray, k: int, shuffles: int,
                           rng: np.random.Generator) -> Structure:
    """maps_by_target (T, N, S, S): every face explained for each class t in turn. For each t the faces'
    maps are grouped by their true class and structure_of those class maps taken; the value is the mean
    over t. The explained class is the same within each comparison, so what is left is how differently
    the model looks at faces of different classes, not how its read-outs of different classes differ.
    The shuffles apply one permutation of the labels to every t."""
    return _structure_against_shuffles(maps_by_target, groups, k, shuffles, rng)


def explain_every_class(model, images: torch.Tensor, k: int, config: ClassMapConfig, mean, std,
                        desc: str) -> np.ndarray:
    """(k, N, S, S): the faces' maps explaining class 0, 1, ..., k-1 in turn."""
    return np.stack([explain_faces(model, images, [t] * len(images), config, mean, std, f"{desc}, class {t}")[0]
                     for t in range(k)])


# ---------------------------------------------------------------------------------------------------
# Confusions and disputed labels


def top_confusions(labels: np.ndarray, pred: np.ndarray, k: int, count: int) -> list[tuple[int, int, int]]:
    """The `count` most frequent (true, predicted, n) pairs with true != predicted, most frequent first
    (ties: class order)."""
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (labels, pred), 1)
    pairs = [(int(matrix[a, b]), a, b) for a in range(k) for b in range(k) if a != b and matrix[a, b]]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(a, b, n) for n, a, b in pairs[:count]]


def disputed_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The faces whose label the model confidently disputes: the off-diagonal of the confident joint
    (confident learning, Northcutt, Jiang & Chuang, JAIR 2021, section 3.1). With out-of-sample
    probabilities p and given labels y:

        t_j = mean of p[i, j] over the faces labelled j        (class j's threshold: its mean self-confidence)
        face i counts for class j* = argmax_j {p[i, j] : p[i, j] >= t_j}  (no class above threshold: none)
        face i is disputed when j* exists, differs from y_i, and y_i is not the model's top class

    (the last condition: a model whose most probable class is the label does not dispute it). On the
    shipped model's PublicTest probabilities this flags exactly the faces cleanlab 2.9's
    `find_label_issues(labels, probs, filter_by="confident_learning")` flags.

    -> (disputed bool (N,), suggested class j* (N,) (-1 where none), margin p[i, j*] - p[i, y_i] (N,)):
    the larger the margin, the more confidently the model disputes the label."""
    n, k = probs.shape
    thresholds = np.full(k, np.inf)
    for j in range(k):
        if (labels == j).any():
            thresholds[j] = probs[labels == j, j].mean()
    above = probs >= thresholds[None, :]
    masked = np.where(above, probs, -np.inf)
    suggested = np.where(above.any(1), masked.argmax(1), -1)
    disputed = (suggested >= 0) & (suggested != labels) & (probs.argmax(1) != labels)
    margin = np.where(suggested >= 0, probs[np.arange(n), np.clip(suggested, 0, None)], np.nan) \
        - probs[np.arange(n), labels]
    return disputed, suggested, margin


# ---------------------------------------------------------------------------------------------------
# The whole analysis


@dataclass
class Confusion:
    true: int
    pred: int
    count: int
    index: np.ndarray        # faces of the pair
    mean_face: np.ndarray    # (S, S) their mean face (gray levels)
    mean_map: np.ndarray     # (S, S) mean map explaining the predicted class
    contrast_map: np.ndarray  # (S, S) mean map of logit[pred] - logit[true]


@dataclass
class ClassMapReport:
    config: ClassMapConfig
    class_names: list
    layout: RegionLayout
    labels: np.ndarray            # (N,) true class
    probs: np.ndarray             # (N, K) out-of-sample probabilities (with config.tta's views)
    maps_true: np.ndarray         # (N, S, S) explaining the true class
    maps_pred: np.ndarray         # (N, S, S) explaining the predicted class
    mean_faces: np.ndarray        # (K, S, S) per true class; float, gray levels 0-255
    mean_faces_pred: np.ndarray   # (K, S, S) per predicted class
    split_mean_face: np.ndarray   # (S, S)
    regions_true: RegionShares
    regions_pred: RegionShares
    agreement: list               # facs_agreement rows (true classes)
    structure: dict               # "trained", "randomised" -> Structure of the class maps as drawn
    fixed_structure: dict         # "trained", "randomised" -> Structure with the explained class held fixed
    structure_sample: np.ndarray  # the faces fixed_structure explained for every class
    confusions: list              # Confusion
    disputed: np.ndarray          # (N,) bool
    suggested: np.ndarray         # (N,) int
    margin: np.ndarray            # (N,) float
    dispute_maps: dict = field(default_factory=dict)   # face index -> (map of suggested, contrast suggested-vs-label)
    maps_random: np.ndarray | None = None               # (N, S, S) randomised model, explaining the true class
    regions_random: RegionShares | None = None

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)

    def class_maps(self, grouping: str = "true") -> np.ndarray:
        maps = {"true": self.maps_true, "predicted": self.maps_pred, "randomised": self.maps_random}[grouping]
        groups = self.pred if grouping == "predicted" else self.labels
        return class_means(maps, groups, len(self.class_names))[0]

    def counts(self, grouping: str = "true") -> np.ndarray:
        groups = self.pred if grouping == "predicted" else self.labels
        return np.bincount(groups, minlength=len(self.class_names))

    def disputed_order(self) -> np.ndarray:
        """Disputed faces, most confident dispute first."""
        index = np.flatnonzero(self.disputed)
        return index[np.argsort(-self.margin[index], kind="stable")]


def gray_faces(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, S, S) -> float64 (N, S, S) gray levels (the mean of the channels for colour faces)."""
    return images.double().mean(1).numpy()


def analyse(model, images: torch.Tensor, labels, class_names, mean, std, layout: RegionLayout,
            config: ClassMapConfig = ClassMapConfig()) -> ClassMapReport:
    """Everything of the module docstring for one model and one labelled split.

    images: uint8 (N, C, S, S) as decoded (expression.core.datasets.decode_split); labels: (N,) class
    indices into class_names; mean/std: the model's normalisation. The model is not changed."""
    labels = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    if len(images) != len(labels) or not len(labels):
        raise InputError(f"need one label per face and at least one face, got {len(images)} faces and "
                         f"{len(labels)} labels")
    if images.shape[-1] != layout.size:
        raise InputError(f"the faces are {images.shape[-1]} px but the region layout is {layout.size} px")
    check_layer(model, config.layer)
    rng = np.random.default_rng(config.seed)
    model = model.eval()

    maps_true, probs = explain_faces(model, images, labels.tolist(), config, mean, std, "class maps (true class)")
    pred = probs.argmax(1)
    wrong = np.flatnonzero(pred != labels)
    maps_pred = maps_true.copy()
    if len(wrong):
        maps_pred[wrong] = explain_faces(model, images[wrong], pred[wrong].tolist(), config, mean, std,
                                         "class maps (predicted class)")[0]

    faces = gray_faces(images)
    mean_faces = class_means(faces, labels, k)[0]
    mean_faces_pred = class_means(faces, pred, k)[0]

    mass_true, mass_pred = region_mass(maps_true, layout), region_mass(maps_pred, layout)
    regions_true = bootstrap_region_shares(mass_true, labels, k, config.bootstrap, rng)
    regions_pred = bootstrap_region_shares(mass_pred, pred, k, config.bootstrap, rng)
    agreement = facs_agreement(regions_true.share, regions_true.replicates, class_names, layout)
    structure = {"trained": class_structure(maps_true, labels, k, config.shuffles, rng)}
    sample = balanced_sample(labels, k, config.structure_faces, rng)
    fixed = {}
    if len(sample):
        fixed["trained"] = fixed_target_structure(
            explain_every_class(model, images[sample], k, config, mean, std, "every class (trained)"),
            labels[sample], k, config.shuffles, rng)

    maps_random = regions_random = None
    if config.randomise:
        random = randomised_copy(model, config.layer, config.seed)
        maps_random = explain_faces(random, images, labels.tolist(), config, mean, std,
                                    "class maps (randomised model)")[0]
        regions_random = bootstrap_region_shares(region_mass(maps_random, layout), labels, k, config.bootstrap, rng)
        structure["randomised"] = class_structure(maps_random, labels, k, config.shuffles, rng)
        if len(sample):
            fixed["randomised"] = fixed_target_structure(
                explain_every_class(random, images[sample], k, config, mean, std, "every class (randomised)"),
                labels[sample], k, config.shuffles, rng)
        del random

    confusions = []
    for a, b, count in top_confusions(labels, pred, k, config.confusions):
        index = np.flatnonzero((labels == a) & (pred == b))
        contrast = explain_faces(model, images[index], [Contrast(b, a)] * len(index), config, mean, std,
                                 f"contrast {class_names[b]}-vs-{class_names[a]}")[0]
        confusions.append(Confusion(a, b, count, index, faces[index].mean(0), maps_pred[index].mean(0),
                                    contrast.mean(0)))

    disputed, suggested, margin = disputed_labels(probs, labels)
    report = ClassMapReport(config=config, class_names=list(class_names), layout=layout, labels=labels,
                            probs=probs, maps_true=maps_true, maps_pred=maps_pred, mean_faces=mean_faces,
                            mean_faces_pred=mean_faces_pred, split_mean_face=faces.mean(0),
                            regions_true=regions_true, regions_pred=regions_pred, agreement=agreement,
                            structure=structure, fixed_structure=fixed, structure_sample=sample,
                            confusions=confusions, disputed=disputed, suggested=suggested,
                            margin=margin, maps_random=maps_random, regions_random=regions_random)
    order = report.disputed_order()
    shown = np.concatenate([order[labels[order] == c][:config.disputes_shown] for c in range(k)])
    if len(shown):
        own = explain_faces(model, images[shown], suggested[shown].tolist(), config, mean, std, "disputed faces")[0]
        why = explain_faces(model, images[shown], [Contrast(int(s), int(y)) for s, y in
                                                   zip(suggested[shown], labels[shown])],
                            config, mean, std, "disputed faces (contrast)")[0]
        report.dispute_maps = {int(i): (own[j], why[j]) for j, i in enumerate(shown)}
    return report

"""What gradcam_FER.py and attentionMap_FER.py share: image loading, batching, grids, npz files.

Both scripts explain a checkpoint on a handful of faces and differ only in the maps they compute, so
everything else lives here once (a second copy of the image loader or the grid code would drift).
Their flags are declared in expression/apps/explain_cli.py; what they set arrives as a FigureConfig:

    config = FigureConfig(checkpoint="models/resnet34_demo.pt", images=("data/demo/test",), device="cpu")
    session = prepare(config)                  # checkpoint, preprocessing, images, output folder
    result = run_batches(compute, session, config.batch_size, "grad-cam")
    paths = draw_grids(session, result, panels, config, "gradcam_grid")
    save_maps(config.save_maps, session, result)
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from tqdm import tqdm

from expression.core.checkpoint import open_model_quietly
from expression.core.datasets import find_images
from expression.core.errors import InputError, UsageError
from expression.core.io import atomic_path, ensure_writable_dir
from expression.core.preprocessing import IMAGE_EXTENSIONS, Preprocessing, UnreadableImage, load_pil
from expression.core.runtime import resolve_device, use_progress_bars
from gradcam.base import CONTRAST_SEP, parse_contrast, resolve_layers
from gradcam.overlay import overlay

# The seed explained all four ResNet34 stages. At 48 px input their feature maps are layer1 12x12,
# layer2 6x6, layer3 3x3 and layer4 2x2 (strides 4, 8, 16, 32): deep-layer maps are coarse by design,
# upsampling them to 48 px only smooths a 2x2 grid, it adds no detail.
DEFAULT_LAYERS = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_LIMIT = 16  # a grid of a whole test set (7,178 FER2013 faces) is unreadable
ROWS_PER_FILE = 8   # more rows than this go to further numbered grid files


@dataclass(frozen=True)
class FigureConfig:
    """What the figure scripts explain and how their grids look. Each field is the flag of the same name
    (gradcam_FER.py, attentionMap_FER.py), and its default is the flag's default."""

    checkpoint: str | Path | None = None  # None: the newest models/*.pt, else the shipped model (choose_model)
    images: tuple[str, ...] | None = None  # files, folders or globs; None: default_images(the checkpoint)
    layers: tuple[str, ...] = DEFAULT_LAYERS
    limit: int = DEFAULT_LIMIT            # images explained at most; 0 = all
    batch_size: int = 64
    out: str | Path | None = None         # None: runs/explain/<checkpoint name>/
    save_maps: str | Path | None = None   # the raw maps' .npz; None: not written
    rows_per_file: int = ROWS_PER_FILE
    colormap: str = "jet"
    alpha: float = 0.5                    # opacity of the heat overlay
    device: str = "auto"                  # cpu, cuda, mps or auto (core.runtime.resolve_device)
    quiet: bool = False                   # no progress bar (there is one only on a terminal) or summary line

    def __post_init__(self):
        # the flags' types guard the command line; a config built in Python meets these checks instead
        for name in ("batch_size", "rows_per_file"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}", option=name)
        if self.limit < 0:
            raise InputError(f"limit must be 0 (all) or more, got {self.limit}", option="limit")


# ---------------------------------------------------------------------------------------------------
# Checkpoint, images, targets


@dataclass
class Session:
    """Everything a script needs before computing maps."""

    model: torch.nn.Module
    ckpt: dict
    checkpoint: Path
    prep: Preprocessing
    class_names: list
    device: torch.device
    files: list            # paths of the images that could be read, in explanation order
    labels: list           # class-folder name of each image, or None
    pixels: list           # uint8 (S, S) or (S, S, 3): exactly what the model sees, before normalising
    out_dir: Path
    progress: bool
    quiet: bool

    @property
    def label_indices(self) -> np.ndarray:
        """True class index per image, -1 where unknown or not one of the checkpoint's classes."""
        return np.array([self.class_names.index(lb) if lb in self.class_names else -1 for lb in self.labels],
                        dtype=np.int64)

    def tensor(self, index) -> torch.Tensor:
        return self.prep.to_tensor([self.pixels[i] for i in index]).to(self.device)


def default_images(ckpt: dict) -> list[str]:
    """The test folder recorded in the checkpoint's training args when it exists here (this covers
    --demo-corner runs too), else data/demo/test for a demo checkpoint, else data/fer2013/test."""
    train_args = ckpt.get("args") or {}
    recorded = train_args.get("test_dir")
    if recorded and Path(recorded).is_dir():
        return [str(recorded)]
    return ["data/demo/test" if train_args.get("demo") else "data/fer2013/test"]


def balanced_order(entries, class_names) -> list:
    """Round-robin over label groups (checkpoint class order, then other folders, unlabelled last), so
    the first N of a sorted test folder are not all 'angry'. Order within a group is kept."""
    groups: dict = {}
    for entry in entries:
        groups.setdefault(entry.label, []).append(entry)
    if len(groups) <= 1:
        return list(entries)
    rank = {name: i for i, name in enumerate(class_names)}
    keys = sorted(groups, key=lambda k: (k is None, rank.get(k, len(rank)), k or ""))
    ordered, depth = [], 0
    while len(ordered) < len(entries):
        ordered.extend(groups[k][depth] for k in keys if depth < len(groups[k]))
        depth += 1
    return ordered


def load_images(entries, limit: int):
    """Decode images in order until `limit` are readable (0 = all); unreadable ones are skipped and
    listed in one warning line on stderr."""
    kept, skipped = [], []
    for entry in entries:
        if limit and len(kept) >= limit:
            break
        try:
            kept.append((entry, load_pil(entry.path)))
        except UnreadableImage as err:
            skipped.append(str(err).splitlines()[0][:160])
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        print(f"warning: skipped {len(skipped)} unreadable image(s): {shown}", file=sys.stderr)
    if not kept:
        raise UsageError(f"none of the {len(skipped)} image file(s) found could be read: pass --images with "
                         f"readable image files")
    return kept


def check_layers(model, layers) -> None:
    """Fail on a bad --layers before any image is decoded, with the library's list of valid names."""
    try:
        resolve_layers(model, layers)
    except ValueError as err:
        raise UsageError(f"--layers: {str(err).splitlines()[0]}") from None


def check_overlay(colormap: str, alpha: float) -> None:
    """Fail on a bad --colormap before the checkpoint is loaded, with overlay's own message."""
    try:
        overlay(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32), colormap=colormap, alpha=alpha)
    except (ValueError, KeyError, AttributeError) as err:
        raise UsageError(f"--colormap {colormap}: {str(err).splitlines()[0][:160] or 'unknown colormap'}") \
            from None


def select_images(specs, ckpt: dict, limit: int):
    """--images (or the checkpoint's default folder) -> (specs used, [(entry, PIL image)]): found,
    ordered round-robin over classes, limited and decoded, unreadable files skipped."""
    specs = list(specs or default_images(ckpt))
    entries = find_images(specs)
    if not entries:
        missing = [s for s in specs if not Path(s).exists() and not any(c in str(s) for c in "*?[")]
        why = f" ({', '.join(map(str, missing))} does not exist)" if missing else ""
        raise UsageError(f"no images found in {' '.join(map(str, specs))}{why}: pass --images with files, "
                         f"folders (optionally of class sub-folders) or globs of {'/'.join(IMAGE_EXTENSIONS)}")
    return specs, load_images(balanced_order(entries, list(ckpt["class_names"])), limit)


def prepare(config: FigureConfig) -> Session:
    """Load the checkpoint, check the config against it, pick and decode the images, make the output folder."""
    check_overlay(config.colormap, config.alpha)
    device = resolve_device(config.device)
    # The user's own pictures never meet a demo-face model by default (see choose_model).
    model, ckpt, path, model_line = open_model_quietly(config.checkpoint, device,
                                                       real_photos=config.images is not None)
    check_layers(model, config.layers)
    class_names = list(ckpt["class_names"])
    out_dir = ensure_writable_dir(config.out or Path("runs") / "explain" / path.stem, "--out")
    if config.save_maps:
        maps = Path(config.save_maps)
        if maps.is_dir():
            raise UsageError(f"--save-maps {maps} is a folder: give a file name such as {maps / 'maps.npz'}")
        ensure_writable_dir(maps.parent, "--save-maps")

    _, kept = select_images(config.images, ckpt, config.limit)
    print(model_line, file=sys.stderr, flush=True)  # after the checks: an error stays the only line
    prep = Preprocessing.from_checkpoint(ckpt)
    return Session(model=model, ckpt=ckpt, checkpoint=path, prep=prep, class_names=class_names, device=device,
                   files=[e.path for e, _ in kept], labels=[e.label for e, _ in kept],
                   pixels=[prep.pixels(img) for _, img in kept], out_dir=out_dir,
                   progress=use_progress_bars(config.quiet), quiet=config.quiet)


def resolve_targets(spec: str, session: Session) -> list | None:
    """--target -> one class index (or gradcam.Contrast for "B-vs-A") per image, or None for the predicted
    class."""
    names = session.class_names
    if spec == "predicted":
        return None
    if spec == "true":
        bad = [f for f, lb in zip(session.files, session.labels) if lb not in names]
        if bad:
            raise UsageError(f"--target true needs each image in a class sub-folder named after one of "
                             f"{', '.join(names)}; {len(bad)} of them are not, e.g. {bad[0]}")
        return session.label_indices.tolist()
    if spec in names:
        return [names.index(spec)] * len(session.files)
    if CONTRAST_SEP in spec:
        try:
            return [parse_contrast(spec, names)] * len(session.files)
        except ValueError as err:
            raise UsageError(f"--target {spec}: {str(err).splitlines()[0]}") from None
    raise UsageError(f"--target {spec}: choose predicted, true, a class of this checkpoint "
                     f"({', '.join(names)}) or a contrast such as {names[0]}{CONTRAST_SEP}{names[-1]}")


# ---------------------------------------------------------------------------------------------------
# Computing maps in batches


@dataclass
class Batch:
    """What a script's compute function returns for one batch."""

    maps: dict                # key ("gradcam/layer4") -> (B, H, W) tensor in [0, 1] at input resolution
    probs: torch.Tensor       # (B, C)
    feature_sizes: dict       # layer -> (h, w)
    targets: torch.Tensor | None = None  # class each map explains, None for class-agnostic maps
    foils: torch.Tensor | None = None    # class each target is contrasted with (-1: none), None for none at all


@dataclass
class Result:
    maps: dict                # key -> float32 (N, H, W)
    probs: np.ndarray         # float32 (N, C)
    feature_sizes: dict
    targets: np.ndarray | None = None
    foils: np.ndarray | None = None

    @property
    def pred(self) -> np.ndarray:
        return self.probs.argmax(1)


def run_batches(compute, session: Session, batch_size: int, desc: str) -> Result:
    """Call compute(images, index) over batches (a tqdm bar when a person watches) and stitch the maps.
    Raising a ValueError inside compute (unknown layer/method) becomes a one-line UsageError."""
    n = len(session.files)
    maps, probs, targets, foils, sizes = {}, [], [], [], {}
    starts = range(0, n, batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not session.progress, leave=False):
        index = list(range(start, min(start + batch_size, n)))
        try:
            batch = compute(session.tensor(index), index)
        except ValueError as err:
            raise UsageError(str(err).splitlines()[0]) from None
        for key, value in batch.maps.items():
            maps.setdefault(key, []).append(value.detach().float().cpu().numpy())
        probs.append(batch.probs.detach().float().cpu().numpy())
        if batch.targets is not None:
            targets.append(batch.targets.detach().cpu().numpy())
        if batch.foils is not None:
            foils.append(batch.foils.detach().cpu().numpy())
        sizes = {k: tuple(int(s) for s in v) for k, v in batch.feature_sizes.items()}
    return Result(maps={k: np.concatenate(v).astype(np.float32) for k, v in maps.items()},
                  probs=np.concatenate(probs).astype(np.float32), feature_sizes=sizes,
                  targets=np.concatenate(targets).astype(np.int64) if targets else None,
                  foils=np.concatenate(foils).astype(np.int64) if foils else None)


def summary(session: Session, result: Result, what: str) -> None:
    if session.quiet:
        return
    labels = session.label_indices
    known = labels >= 0
    line = f"{what}: {len(session.files)} image(s) with {session.checkpoint}"
    if known.any():
        line += f"; {(result.pred[known] == labels[known]).sum()}/{known.sum()} labelled ones predicted correctly"
    print(line)


# ---------------------------------------------------------------------------------------------------
# Outputs


def colormap_of_overlay(colormap: str) -> ListedColormap:
    """The overlay's own colours, read back through gradcam.overlay, so the colour bar matches the panels
    whatever colour table overlay uses."""
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :]
    colours = overlay(np.zeros((1, 256), np.uint8), ramp, colormap=colormap, alpha=1.0)
    return ListedColormap(colours[0].astype(np.float32) / 255.0)


def draw_grids(session: Session, result: Result, panels, config: FigureConfig, name: str) -> list[Path]:
    """One row per image: its file name, true and predicted label, the input face, then one overlay per
    (key, title) panel, the titles once above the columns and one colour bar on the right.

    Writes <out>/<name>.png, or <name>_001.png, _002.png, ... when there are more than
    config.rows_per_file images; grids of that name left from an earlier, differently split run are removed.
    """
    n, rows = len(session.files), config.rows_per_file
    chunks = [range(s, min(s + rows, n)) for s in range(0, n, rows)]
    paths = [session.out_dir / (f"{name}.png" if len(chunks) == 1 else f"{name}_{i + 1:03d}.png")
             for i in range(len(chunks))]
    for chunk, path in zip(chunks, paths):
        fig = _grid_figure(session, result, panels, config, chunk)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=fig.dpi)
    stale = re.compile(rf"{re.escape(name)}(_\d{{3}})?\.png")
    for old in session.out_dir.iterdir():
        if stale.fullmatch(old.name) and old not in paths:
            old.unlink()
    return paths


# Grid geometry in pixels at GRID_DPI. The panels are pasted into one RGB raster drawn with figimage,
# not one matplotlib Axes each: 8 rows x 9 panels of Axes took ~10 s to lay out, the raster ~0.2 s.
GRID_DPI = 100
PANEL_PX = 144     # a 48 px face is shown 3x, nearest neighbour: every input pixel stays visible
CAPTION_PX = 132   # text column left of each row: file name, true label, prediction
GAP_PX, MARGIN_PX, HEADER_PX, COLORBAR_PX = 6, 10, 34, 70


def _grid_figure(session: Session, result: Result, panels, config: FigureConfig, chunk) -> Figure:
    size = session.prep.img_size
    scale = max(1, -(-PANEL_PX // size))  # integer upscaling only, so no pixel is blurred or dropped
    panel = size * scale
    cols = 1 + len(panels)
    left = MARGIN_PX + CAPTION_PX
    width = left + cols * panel + (cols - 1) * GAP_PX + COLORBAR_PX + MARGIN_PX
    height = MARGIN_PX + HEADER_PX + len(chunk) * panel + (len(chunk) - 1) * GAP_PX + MARGIN_PX
    canvas = np.full((height, width, 3), 255, np.uint8)

    fig = Figure(figsize=(width / GRID_DPI, height / GRID_DPI), dpi=GRID_DPI)
    FigureCanvasAgg(fig)

    def text(x, y, s, **kw):  # pixel coordinates from the top-left corner
        fig.text(x / width, 1 - y / height, s, **kw)

    labels = session.label_indices
    for col, title in enumerate(["input"] + [t for _, t in panels]):
        x = left + col * (panel + GAP_PX) + panel / 2
        text(x, MARGIN_PX + HEADER_PX - 4, title, ha="center", va="bottom", fontsize=9, linespacing=1.1)
    for row, i in enumerate(chunk):
        y = MARGIN_PX + HEADER_PX + row * (panel + GAP_PX)
        face = session.pixels[i]
        tiles = [np.repeat(face[..., None], 3, axis=2) if face.ndim == 2 else face]
        tiles += [overlay(face, result.maps[key][i], colormap=config.colormap, alpha=config.alpha) for key, _ in panels]
        for col, tile in enumerate(tiles):
            x = left + col * (panel + GAP_PX)
            canvas[y:y + panel, x:x + panel] = tile.repeat(scale, axis=0).repeat(scale, axis=1)
        pred, label = int(result.pred[i]), int(labels[i])
        file = Path(session.files[i]).name
        file = file if len(file) <= 22 else file[:9] + "…" + file[-12:]
        colour = "black" if label < 0 else ("tab:green" if label == pred else "tab:red")
        lines = [(file, dict(fontsize=8, color="dimgray"))]
        if session.labels[i] is not None:  # images outside class folders have no true label to show
            lines.append((f"true  {session.labels[i]}", dict(fontsize=9)))
        lines += [(f"pred  {session.class_names[pred]}", dict(fontsize=9, color=colour)),
                  (f"p = {result.probs[i, pred]:.2f}", dict(fontsize=9, color=colour))]
        for line, (s, style) in enumerate(lines):
            text(MARGIN_PX, y + 2 + 18 * line, s, va="top", **style)
    fig.figimage(canvas, xo=0, yo=0, origin="upper", zorder=-1)  # under the text and the colour bar

    top = MARGIN_PX + HEADER_PX
    bar_h = min(height - top - MARGIN_PX, 3 * panel)
    cax = fig.add_axes([(width - COLORBAR_PX + 8) / width, 1 - (top + bar_h) / height, 14 / width, bar_h / height])
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormap_of_overlay(config.colormap)), cax=cax)
    bar.set_label("relevance (each map 0-1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def save_maps(path, session: Session, result: Result) -> Path:
    """Raw maps, float32 (N, H, W) at input resolution, one array per key, plus files, pred, probs,
    targets (class each map explains; -1 for class-agnostic maps), foils (the class a contrastive target
    is weighed against; -1 for none), labels (true class or -1) and
    class_names. Plain arrays only: np.load needs no allow_pickle."""
    path = Path(path)
    n = len(session.files)
    arrays = dict(result.maps)
    arrays.update(files=np.array(session.files, dtype=str), pred=result.pred.astype(np.int64),
                  probs=result.probs.astype(np.float32),
                  targets=result.targets if result.targets is not None else np.full(n, -1, np.int64),
                  foils=result.foils if result.foils is not None else np.full(n, -1, np.int64),
                  labels=session.label_indices, class_names=np.array(session.class_names, dtype=str))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a file object: np.savez adds no suffix
        np.savez(handle, **arrays)
    return path


def print_paths(paths) -> None:
    for path in paths:
        print(f"wrote {path}")

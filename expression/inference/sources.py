"""What predict_FER.py reads and what its outputs are called: image files, folders, globs and videos
found from the command line's paths, and unique output names for each.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from expression.core.datasets import find_images
from expression.core.preprocessing import is_image_file

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


# ---------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # "image" or "video"
    label: str | None = None  # class sub-folder name, when the image came from <folder>/<class>/


def is_video_file(path) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def find_sources(specs, out_dir) -> tuple[list[Source], list[str]]:
    """PATH arguments -> (sources in the order given, specs that matched nothing). Anything under
    --out found through a folder or glob is left out, so a glob over the working folder never re-reads
    its own annotated copies; a file named explicitly is always read."""
    out_dir = Path(out_dir).resolve()
    sources, missing = [], []
    for spec in specs:
        path = Path(spec)
        if path.is_file():  # named explicitly: tried whatever its extension
            found = [Source(str(path), "video" if is_video_file(path) else "image")]
        else:
            found = [Source(e.path, "image", e.label) for e in find_images([spec])]
            if path.is_dir():
                videos = sorted(p for p in path.iterdir() if p.is_file() and is_video_file(p))
            else:
                videos = sorted(Path(p) for p in glob.glob(str(spec), recursive=True)
                                if Path(p).is_file() and is_video_file(p) and not is_image_file(p))
            found += [Source(str(p), "video") for p in videos]
            found = [s for s in found if out_dir not in Path(s.path).resolve().parents]
        if not found:
            missing.append(spec)
        sources.extend(found)
    seen, unique = set(), []
    for source in sources:
        key = str(Path(source.path).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(source)
    return unique, missing


class OutputNames:
    """<stem>_annotated<suffix>, made unique: same stems from different folders get the folder name
    (happy/001.png, sad/001.png -> 001_annotated.jpg, sad_001_annotated.jpg), then a counter."""

    def __init__(self):
        self.used = set()

    def __call__(self, path, suffix: str) -> str:
        path = Path(path)
        candidates = [path.stem, f"{path.parent.name}_{path.stem}" if path.parent.name else path.stem]
        candidates += [f"{path.stem}_{i}" for i in range(2, 10_000)]
        for stem in candidates:
            name = f"{stem}_annotated{suffix}"
            if name.lower() not in self.used:  # lower(): case-insensitive file systems
                self.used.add(name.lower())
                return name
        raise ValueError(f"too many inputs named {path.name}")

"""Where and how a run executes: the device (`auto`: cuda, then mps, else cpu), the cores it may use and
whether to draw progress bars. Shared by training, prediction, the reports and the app, whatever calls them.
"""
from __future__ import annotations

import os
import sys

import torch

from expression.core.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, else cpu; an explicit device that is absent is a UsageError."""
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but CUDA is not available: use --device cpu or auto")
    if name == "mps" and not mps_ok:
        raise UsageError("--device mps was asked for but MPS is not available: use --device cpu or auto")
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_progress_bars(quiet: bool) -> bool:
    """Bars only for a person watching a terminal: logs and CI get the per-epoch lines alone."""
    return not quiet and sys.stdout.isatty()

"""The resolve steps: parsed command-line flags -> the libraries' frozen configs.

Each function is pure (reads the Namespace, returns a new config, changes nothing), so presets and
derived defaults are applied in one place and the libraries below never see argparse.
"""
from __future__ import annotations

from expression.apps.cli import use_progress_bars
from expression.reports.class_maps import ClassMapConfig


def class_map_config(args) -> ClassMapConfig:
    """classmaps_FER.py's flags -> the analysis config (ClassMapConfig checks the method and TTA mode)."""
    return ClassMapConfig(method=args.method, layer=args.layer, tta=args.tta_maps, batch_size=args.batch_size,
                          confusions=args.confusions, bootstrap=args.bootstrap, shuffles=args.shuffles,
                          structure_faces=args.structure_faces,
                          randomise=args.randomised, disputes_shown=args.disputes_shown,
                          min_faces_for_mean=args.min_faces_for_mean, seed=args.seed,
                          progress=use_progress_bars(args.quiet))

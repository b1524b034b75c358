"""Activation-based attention maps (Zagoruyko & Komodakis 2017) of a trained expression model per stage.

The map of a layer is mean_k |A_k|^p over its channels: where the layer responds strongly, whatever
the class. It needs no gradients and no target class, so this script has no --target flag; compare
with gradcam_FER.py, which explains one class. Preprocessing comes from the checkpoint.

    python attentionMap_FER.py                               # newest models/*.pt, 16 test faces
    python attentionMap_FER.py --checkpoint models/resnet34_demo.pt --images data/demo/test \\
        --p 4 --save-maps runs/explain/attention.npz
    python attentionMap_FER.py --images "photos/*.jpg" --layers layer2,layer3 --limit 0

Writes <out>/attention_grid.png (or attention_grid_001.png, ... for more than --rows-per-file faces).
"""
from __future__ import annotations

import sys

from expression.apps.cli import ArgumentParser, number_in, run_main
from expression.apps.configs import figure_config
from expression.apps.explain_cli import add_common_args
from expression.reports.explain_figures import Batch, draw_grids, prepare, print_paths, run_batches, save_maps, summary
from gradcam import attention_maps

GRID = "attention_grid"


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    # |A|^p of activations in the tens overflows float32 near p = 20; the paper uses p = 2.
    parser.add_argument("--p", type=number_in(0.5, 8.0), default=2.0,
                        help="exponent of |A|^p, from 0.5 to 8; larger p stresses the most active positions")
    return add_common_args(parser, grid_name=GRID, target=False)


def main(args) -> int:
    config = figure_config(args)
    session = prepare(config)

    def compute(images, index):
        att = attention_maps(session.model, images, layers=config.layers, p=args.p)
        # Keys carry the method like gradcam_FER.py's ("attention/layer4"), so the npz files read alike.
        return Batch({f"attention/{k}": v for k, v in att.maps.items()}, att.probs, att.feature_sizes)

    result = run_batches(compute, session, config.batch_size, "attention")
    panels = [(f"attention/{layer}",
               f"{layer} {'x'.join(map(str, result.feature_sizes[layer]))}\nattention p={args.p:g}")
              for layer in config.layers]
    paths = draw_grids(session, result, panels, config, GRID)
    if config.save_maps:
        paths.append(save_maps(config.save_maps, session, result))
    summary(session, result, f"attention maps (p={args.p:g})")
    print_paths(paths)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

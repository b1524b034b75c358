"""The flags of the explanation scripts (gradcam_FER.py, attentionMap_FER.py, evaluate_explanations.py).

Their defaults are read from the configs the flags fill (FigureConfig, via configs.figure_config), so a
default is written once, in the library.
"""
from __future__ import annotations

from expression.apps.cli import (add_checkpoint_argument, add_device_argument, name_list, non_negative_int,
                                 positive_int, unit_float)
from expression.reports.explain_figures import FigureConfig


def add_input_args(parser, *, verb: str = "explain", limit: int = FigureConfig.limit,
                   batch_help: str = "images per forward/backward pass (and per Score-CAM masking pass)"):
    """What every explanation script reads: the model, the images, the layers, how many and how fast."""
    add_checkpoint_argument(parser)
    parser.add_argument("--images", nargs="+", default=None, metavar="PATH",
                        help="image files, folders or globs; any size, grayscale/RGB/RGBA. A folder of class "
                             "sub-folders (like data/fer2013/test) gives true labels (default: the checkpoint's "
                             "test folder if it exists here, else data/demo/test for a --demo checkpoint, else "
                             "data/fer2013/test)")
    parser.add_argument("--layers", type=name_list, default=",".join(FigureConfig.layers), metavar="L1,L2",
                        help="comma-separated module names to explain; the seed's four ResNet stages by "
                             "default (at 48 px: layer1 12x12 ... layer4 2x2)")
    parser.add_argument("--limit", type=non_negative_int, default=limit,
                        help=f"{verb} at most this many images, taken round-robin over classes when labels "
                             f"are known (0 = all)")
    parser.add_argument("--batch-size", type=positive_int, default=FigureConfig.batch_size, help=batch_help)
    return parser


def add_common_args(parser, *, grid_name: str, target: bool = True):
    """The flags both figure scripts (gradcam_FER.py, attentionMap_FER.py) take."""
    add_input_args(parser)
    if target:
        parser.add_argument("--target", default="predicted", metavar="{predicted,true,CLASS,B-vs-A}",
                            help="class to explain: the predicted one, the true label (needs class "
                                 "sub-folders), a class name such as happy, or a contrast such as "
                                 "happy-vs-neutral (why happy rather than neutral: the map of logit happy "
                                 "minus logit neutral)")
    parser.add_argument("--out", default=None,
                        help=f"output folder for {grid_name}.png (default: runs/explain/<checkpoint name>/)")
    parser.add_argument("--save-maps", default=None, metavar="FILE.npz",
                        help="also write the raw maps, float32 (N, H, W) at input resolution, with files, "
                             "predictions and probabilities (default: not written)")
    parser.add_argument("--rows-per-file", type=positive_int, default=FigureConfig.rows_per_file,
                        help="images per grid PNG; more images go to numbered files")
    parser.add_argument("--colormap", default=FigureConfig.colormap, help="colormap of the heat overlay")
    parser.add_argument("--alpha", type=unit_float, default=FigureConfig.alpha, help="opacity of the heat overlay")
    add_device_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line, only the paths written")
    return parser

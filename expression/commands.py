"""The scripts as commands of an installed package: `expression-predict photo.jpg` (console scripts,
see pyproject.toml) or `python -m expression predict photo.jpg`, the same as `python predict_FER.py
photo.jpg` in a clone. Relative defaults (models/, runs/, data/) are taken from the working folder.

    python -m expression --help                     # the commands
    python -m expression train --demo               # = python train_resnet34.py --demo
"""
from __future__ import annotations

import importlib.util
import runpy
import sys

# command -> (script module, what it does). Installed, the scripts live in the `expression_scripts`
# package (pyproject.toml maps it to the clone's top folder); in a clone they are top-level modules.
COMMANDS = {
    "train": ("train_resnet34", "train the ResNet34 (--demo: on drawn faces, offline, minutes)"),
    "predict": ("predict_FER", "faces in photos, folders, videos or a camera -> labels and annotated copies"),
    "gradcam": ("gradcam_FER", "Grad-CAM family overlays per layer"),
    "attention": ("attentionMap_FER", "attention-transfer maps per stage"),
    "evaluate": ("evaluate", "accuracy and reports of a model on a labelled split, with test-time augmentation"),
    "evaluate-explanations": ("evaluate_explanations", "how faithful the CAM methods are"),
    "class-maps": ("classmaps_FER", "what the model looks at per class: class maps, face regions, confusions"),
    "export": ("export", "export a model to ONNX (needs the [export] extra)"),
    "onnx-predict": ("onnx_predict", "classify with an exported .onnx, no PyTorch (needs the [export] extra)"),
    "import-seed": ("import_seed_model", "convert the seed project's model_res34.pth safely"),
    "app": ("app", "the browser app (needs the [app] extra)"),
}


def script_module_name(script: str) -> str:
    """The importable name of a script: expression_scripts.<script> when installed, else <script>."""
    try:  # found, not imported: runpy runs it fresh as __main__
        installed = importlib.util.find_spec(f"expression_scripts.{script}") is not None
    except ModuleNotFoundError:  # no expression_scripts package: a clone
        installed = False
    return f"expression_scripts.{script}" if installed else script


def run(command: str, argv: list[str]) -> None:
    """Run `command`'s script with `argv` exactly as `python <script>.py argv` would (its own exit)."""
    script = COMMANDS[command][0]
    sys.argv = [f"expression-{command}", *argv]
    runpy.run_module(script_module_name(script), run_name="__main__", alter_sys=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
        print("usage: python -m expression COMMAND [options]   (COMMAND --help for its options)\n\ncommands:\n"
              + "\n".join(lines), file=sys.stdout if argv[:1] in ([], ["-h"], ["--help"]) else sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    run(argv[0], argv[1:])
    return 0


def _command(name: str):
    def entry() -> None:
        run(name, sys.argv[1:])
    entry.__name__ = name.replace("-", "_")
    entry.__doc__ = COMMANDS[name][1]
    return entry


# The console scripts of pyproject.toml's [project.scripts]
train, predict, gradcam, attention = (_command(n) for n in ("train", "predict", "gradcam", "attention"))
evaluate, evaluate_explanations = _command("evaluate"), _command("evaluate-explanations")
class_maps = _command("class-maps")
export, onnx_predict, import_seed, app = (_command(n) for n in ("export", "onnx-predict", "import-seed", "app"))

"""The exception library code raises for input a caller can fix.

Core modules (checkpoint, data, model, recipe, faces, prediction, io, onnx_export) raise `InputError`,
an ordinary `ValueError`: its message says what is wrong and how to fix it in the library's own terms,
never in command-line flags, so a notebook or another program can catch it like any ValueError.
`option` names the parameter at fault (`"weights"`, `"checkpoint"`); the script boundary
(`expression.cli.run_main`) turns that into the flag of the same name:

    raise InputError("could not get ImageNet weights (no network): use 'none' to train from scratch",
                     option="weights")
    # python train_resnet34.py ... prints one line and exits 2:
    # error: --weights: could not get ImageNet weights (no network): use 'none' to train from scratch
"""
from __future__ import annotations


class InputError(ValueError):
    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option  # the caller's parameter (and, by the scripts' convention, flag) at fault

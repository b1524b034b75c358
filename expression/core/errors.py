"""The exception library code raises for input a caller can fix.

Core modules (checkpoint, data, model, recipe, faces, prediction, io, onnx_export) raise `InputError`,
an ordinary `ValueError`: its message says what is wrong and how to fix it in the library's own terms,
never in command-line flags, so a notebook or another program can catch it like any ValueError.
`option` names the parameter at fault (`"weights"`, `"checkpoint"`); the script boundary
(`expression.apps.cli.run_main`) turns that into the flag of the same name:

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


class UsageError(InputError):
    """A problem with a run's settings or environment whose message already names the flag (or config
    field of the same name) that fixes it, so the scripts print it as it is (exit 2)."""


# Loaders end some messages with "if you trust the file, load it unsafely" (torch: weights_only=False or
# add_safe_globals; numpy: allow_pickle=True). That advice is exactly what must not reach a user who
# was handed a hostile file, so such lines are never quoted.
_UNSAFE_ADVICE = ("weights_only", "trust", "allow_pickle", "safe_globals", "unsafe")


def reason(err: BaseException, limit: int = 100) -> str:
    """The first line of `err` worth quoting to a user: loaders' unsafe advice left out, the type
    name when nothing is left (a 0-byte file's empty EOFError)."""
    text = str(err).strip()
    safe = []
    for line in text.split("WeightsUnpickler error:", 1)[-1].splitlines():  # torch's own reason, if it gives one
        sentences = line.split(". ")
        kept = ". ".join(s.strip() for s in sentences if s.strip() and
                         not any(word in s.lower() for word in _UNSAFE_ADVICE))
        if kept:
            safe.append(kept)
    safe = [line for line in safe if not line.startswith("Weights only load failed")] or safe  # torch's preamble
    if safe:
        return safe[0][:limit]
    return "it holds objects that are refused unread" if text else type(err).__name__

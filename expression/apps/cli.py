"""Command-line plumbing shared by every script: one-line errors, device choice, seeding.

Bad input the user can fix raises `UsageError` in script code (its message names the flag to change)
and `expression.core.errors.InputError` in library code (its `option` names the parameter, which is the
flag of the same name); `run_main` turns either into a single line on stderr and exit code 2 instead
of a traceback.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys

from expression.core.errors import InputError, UsageError
from expression.core.runtime import resolve_device, use_progress_bars

# Defined in core, where the libraries use them too; named here as well so that a script takes all its
# command-line plumbing from this one module.
REEXPORTED = (UsageError, resolve_device, use_progress_bars)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with every default in --help and a one-line error (no usage dump) on bad flags."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Show every default and keep the module docstring's example commands laid out as written.

    A flag whose default depends on other flags says so in its own help (and mentions "default");
    a flag without a value (None, False) shows nothing rather than "(default: None)".
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


def add_checkpoint_argument(parser) -> None:
    """--checkpoint as every script that reads a trained model takes it (resolved by
    expression.core.checkpoint.choose_model)."""
    parser.add_argument("--checkpoint", default=None,
                        help="model file (default: the newest models/*.pt, else the shipped FER2013 model "
                             "models/shipped/; on your own photos, models trained on the drawn demo faces "
                             "are passed over unless named here)")


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace, program: str) -> str:
    """The shell command that parses to `args`: `program` and every option whose value is not the
    parser's default, in the parser's order. Records name the command that made them this way, the
    same however the script was called (a shell, a test, another script)."""
    words = ["python", program]
    for action in parser._actions:  # argparse keeps no public list of its actions
        if action.dest == "help":
            continue
        if not action.option_strings:  # a positional argument
            value = getattr(args, action.dest, None)
            words += [str(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if v is not None]
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = next((o for o in action.option_strings if o.startswith("--")), action.option_strings[0])
        if isinstance(action, argparse.BooleanOptionalAction):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif action.nargs == 0:  # store_true / store_false
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not 0 < value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def run_main(main, args) -> int:
    """Call `main(args)`; a UsageError or a library InputError becomes one line on stderr and exit code 2."""
    try:
        return main(args) or 0
    except InputError as err:
        print(f"error: {flag_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outputs are written atomically, so nothing is left half-written
        print("\ninterrupted (Ctrl-C): files already finished are kept, none is half-written", file=sys.stderr)
        return 130


def flag_message(err: InputError) -> str:
    """The error's message, led by the flag that set the value at fault (`option` "val_dir" -> --val-dir)."""
    if err.option and not isinstance(err, UsageError):
        return f"--{err.option.replace('_', '-')}: {err}"
    return str(err)


DEVICES = ("auto", "cpu", "cuda", "mps")


def add_device_argument(parser, default: str = "auto") -> None:
    """--device, the same in every script (benches default to cpu, where their figures are comparable)."""
    parser.add_argument("--device", default=default, choices=DEVICES,
                        help="where the model runs (auto: cuda, then mps, else cpu)")


def fraction(text: str) -> float:
    """A number in [0, 1): probabilities, smoothing, split fractions, EMA decays."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if not 0 <= value < math.inf:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None


def unit_float(text: str) -> float:
    """A number in [0, 1], both ends included: overlay opacity, thresholds."""
    return number_in(0.0, 1.0)(text)


def name_list(text: str) -> tuple[str, ...]:
    """argparse type for comma-separated names: 'layer3, layer4' -> ('layer3', 'layer4')."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))  # no duplicates
    if not names:
        raise ValueError("empty list")
    return names


name_list.__name__ = "comma-separated list"  # argparse names the type in its error message


def number_in(low: float, high: float, integer: bool = False):
    """A validator for a finite number in [low, high], for flags whose sensible range is known (an
    unbounded --margin once asked OpenCV for a 113 GB image)."""
    def check(text: str):
        value = _number(text)
        if integer:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"must be a whole number from {low:g} to {high:g}, got {text}")
            value = int(value)
        if not low <= value <= high:  # also rejects nan and inf
            raise argparse.ArgumentTypeError(f"must be from {low:g} to {high:g}, got {text}")
        return value

    check.__name__ = f"number in [{low:g}, {high:g}]"
    return check


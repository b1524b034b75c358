"""Atomic file writes: a crash or Ctrl-C never leaves a half-written model, plot or report.

Everything is written to a temporary file in the destination folder and then moved over the target
with `os.replace`, which is atomic on POSIX and Windows when both paths are on one file system.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

from expression.core.errors import InputError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp creates 0600 files, but outputs should get the user's usual mode


class WriteError(InputError):
    """The operating system refused an output (disk full, no permission, read-only file system, I/O
    error). The message names the file and what survives; `path` is the file that was not written."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def write_error(path, err: OSError, existed: bool) -> WriteError:
    """One line for an OSError while writing `path` atomically: nothing half-written is left behind."""
    path = Path(path)
    reason = err.strerror or str(err) or type(err).__name__
    code = f"{errno.errorcode[err.errno]}: " if err.errno in errno.errorcode else ""
    kept = f"the previous {path.name} is unchanged" if existed else f"no {path.name} was left behind"
    return WriteError(f"cannot write {path} ({code}{reason}): nothing was half-written, {kept}; free space or "
                      f"fix the folder's permissions, or choose another output folder", path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path` (same suffix, so savefig infers the format); on success
    move it over `path`, on any exception delete it and leave the old file untouched. An OSError
    (ENOSPC, EACCES, EROFS, EIO) becomes a WriteError naming the file."""
    path = Path(path)
    existed = path.exists()
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
    except OSError as err:
        raise write_error(path, err, existed) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):  # on a failing disk even the unlink may fail
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err, existed) from None
        raise


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def ensure_writable_dir(path, what: str) -> Path:
    """Create `path` if needed and prove we can write there, before any long work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test."):
            pass
    except OSError as err:
        raise InputError(f"cannot write to {what} folder {path} ({err.strerror or err}): "
                         f"choose another folder or fix its permissions") from None
    return path

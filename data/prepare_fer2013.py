"""Turn the original FER2013 CSV (Kaggle's fer2013.csv) into ImageFolder folders, optionally relabelled
with FER+ (Microsoft's fer2013new.csv) so the same scripts can train on FER+.

    python data/prepare_fer2013.py                                   # data/fer2013.csv -> data/fer2013/
    python data/prepare_fer2013.py ~/Downloads/fer2013.csv --out data/fer2013 --overwrite
    python data/prepare_fer2013.py --ferplus data/fer2013new.csv     # FER+ labels -> data/ferplus/
    python train_resnet34.py --data data/ferplus                     # then train on it as usual

Layout: OUT/{train,val,test}/<class>/<row>.png, 48x48 grayscale PNGs. Usage Training -> train/,
PublicTest -> val/, PrivateTest -> test/. <row> is the 0-based data row of the CSV (5 digits, line
row + 2 of the file), so every image can be traced back to fer2013.csv and to its FER+ votes.

Labels: FER2013's emotion column uses Kaggle's order 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad,
5 surprise, 6 neutral; the folders get this project's lowercase names. With --ferplus each row takes
the FER+ majority vote over 8 classes (neutral, happy, surprise, sad, angry, disgust, fear, contempt).
A row is dropped, and counted by reason, when FER+ lists no image name for it (FER+ removed it), when it
has no votes, when "unknown" or "not a face" (NF) has at least as many votes as any emotion, or when two
or more emotions tie for the most votes: a tied face has no single right answer, and keeping it under
either label would teach the model noise (FER+'s own "majority" mode also leaves ties out).

Checks: a missing file or an unexpected header is an error (exit 2). A bad row (wrong pixel count, a
pixel that is not an integer 0..255, an emotion outside 0..6, an unknown Usage; for FER+ a row without
10 non-negative integer votes) is skipped, summarised, and listed in full in OUT/bad_rows.csv with its
1-based line number; more than half the rows bad is an error. OUT/summary.json records the sources and
the image count per split and class.

The dataset is built in a sibling folder OUT.tmp-<pid> and renamed to OUT only when complete, so an
interrupted run never leaves a half-written dataset at OUT; with --overwrite the old OUT is set aside
and deleted only after the new one is in place.
"""
from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from expression.apps.cli import ArgumentParser, UsageError, run_main
from expression.core.io import ensure_writable_dir, write_json
from expression.core.runtime import use_progress_bars

IMG_SIZE = 48
N_PIXELS = IMG_SIZE * IMG_SIZE
# Kaggle's emotion codes 0..6, in Kaggle's order (not alphabetical: 4 is sad, 6 is neutral)
KAGGLE_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_COLUMNS = ("emotion", "pixels", "Usage")
# The official file: 28,709 Training + 3,589 PublicTest + 3,589 PrivateTest rows
OFFICIAL_ROWS = {"train": 28709, "val": 3589, "test": 3589}

FERPLUS_COLUMNS = ("Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                   "fear", "contempt", "unknown", "NF")
FERPLUS_CLASSES = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
N_VOTES = len(FERPLUS_COLUMNS) - 2  # 8 emotions, unknown, NF
DROP_NO_NAME = "no image name in FER+ (removed by FER+)"
DROP_NO_VOTES = "no votes"
DROP_UNKNOWN = "unknown or not-a-face majority"
DROP_TIE = "tie between top emotions"

SHOW_BAD = 5  # bad rows named in the printed summary; bad_rows.csv has them all


def get_args_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("csv_path", nargs="?", metavar="CSV", help="fer2013.csv (same as --csv)")
    parser.add_argument("--csv", dest="csv_flag", metavar="PATH",
                        help="fer2013.csv: emotion,pixels,Usage (default: data/fer2013.csv)")
    parser.add_argument("--ferplus", metavar="PATH",
                        help="fer2013new.csv from Microsoft's FERPlus: relabel by majority vote (8 classes)")
    parser.add_argument("--out", help="output folder (default: data/fer2013, or data/ferplus with --ferplus)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty --out (the old folder is deleted only once the new one is complete)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (the summary stays)")
    return parser


# ---------------------------------------------------------------------------------------------------
# Reading and validating


@dataclass
class BadRow:
    file: str
    line: int  # 1-based line of the file, as an editor shows it
    reason: str


@dataclass
class Report:
    rows: int = 0
    bad: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # split -> Counter(class -> images)
    dropped: Counter = field(default_factory=Counter)
    usage_mismatch: int = 0


def _open_csv(path: Path, what: str, flag: str):
    """An open text file and a csv reader; utf-8-sig because a CSV saved by Excel starts with a BOM."""
    if not path.is_file():
        raise UsageError(f"{what} {path} not found: pass its path with {flag} (see data/prepare_fer2013.py --help)")
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as err:
        raise UsageError(f"cannot read {what} {path} ({err.strerror or err})") from None
    return handle, csv.reader(handle)


def _read_header(reader, path: Path, what: str, expected: tuple) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{what} {path} is empty: expected the header {','.join(expected)}") from None
    except (csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{what} {path} is not a readable CSV ({err}): expected the header "
                         f"{','.join(expected)}") from None
    return [h.strip() for h in header]


def fer2013_columns(reader, path: Path) -> tuple[int, int, int]:
    """Indices of emotion, pixels, Usage. Matched by name, because some Kaggle copies (icml_face_data.csv)
    order the columns differently and pad the names with spaces."""
    header = _read_header(reader, path, "FER2013 CSV", FER2013_COLUMNS)
    if sorted(header) != sorted(FER2013_COLUMNS):
        raise UsageError(f"{path} has the header {','.join(header)[:80]!r}, expected {','.join(FER2013_COLUMNS)}: "
                         f"pass the original fer2013.csv (Kaggle, challenges-in-representation-learning)")
    return tuple(header.index(name) for name in FER2013_COLUMNS)


def _data_rows(reader, path: Path, what: str):
    """(line, fields) of every non-blank row; a file that stops being CSV midway is an error."""
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                yield reader.line_num, fields
    except (csv.Error, UnicodeDecodeError) as err:
        raise UsageError(f"{what} {path} is not a readable CSV near line {reader.line_num + 1} ({err})") from None


def count_rows(path: Path) -> int:
    """Data rows of fer2013.csv: a quick first pass (about a second for the real 287 MB file) that gives
    the progress bar its total and lets a FER+ file of the wrong length fail before any image is written."""
    handle, reader = _open_csv(path, "FER2013 CSV", "--csv")
    with handle:
        fer2013_columns(reader, path)
        return sum(1 for _ in _data_rows(reader, path, "FER2013 CSV"))


def parse_row(fields: list[str], columns: tuple[int, int, int]):
    """(class name, split, 48x48 uint8 pixels) of one fer2013.csv row, or a string saying what is wrong."""
    if len(fields) != len(FER2013_COLUMNS):
        return f"{len(fields)} fields, expected {len(FER2013_COLUMNS)} (emotion,pixels,Usage)"
    emotion, pixels, usage = (fields[i].strip() for i in columns)
    try:
        code = int(emotion)
    except ValueError:
        return f"emotion {emotion[:20]!r} is not an integer 0..6"
    if not 0 <= code < len(KAGGLE_CLASSES):
        return f"emotion {code} not in 0..6"
    if usage not in SPLITS:
        return f"Usage {usage[:20]!r} is not one of {', '.join(SPLITS)}"
    values = pixels.split()
    if len(values) != N_PIXELS:
        return f"{len(values)} pixel values, expected {N_PIXELS} (48x48)"
    try:
        # int64 first so that 300 or -1 is seen as out of range instead of wrapping around in uint8
        array = np.array(values, dtype=np.int64)
    except (ValueError, OverflowError):
        return f"pixel {_first_non_integer(values)[:20]!r} is not an integer 0..255"
    if array.min() < 0 or array.max() > 255:
        wrong = array[(array < 0) | (array > 255)][0]
        return f"pixel value {wrong} not in 0..255"
    return KAGGLE_CLASSES[code], SPLITS[usage], array.astype(np.uint8).reshape(IMG_SIZE, IMG_SIZE)


def _first_non_integer(values: list[str]) -> str:
    for value in values:
        try:
            int(value)
        except ValueError:
            return value
    return max(values, key=len)  # all integers, one too large for int64


def ferplus_vote(votes: list[int]) -> str:
    """The FER+ class with the most votes, or one of the DROP_* reasons."""
    top = max(votes)
    if top == 0:
        return DROP_NO_VOTES
    if votes[-2] == top or votes[-1] == top:  # unknown, NF: a tie with them also means "no clear emotion"
        return DROP_UNKNOWN
    winners = [name for name, count in zip(FERPLUS_CLASSES, votes) if count == top]
    return winners[0] if len(winners) == 1 else DROP_TIE


def read_ferplus(path: Path, report: Report) -> list:
    """One entry per data row of fer2013new.csv: (Usage, class name or DROP_* reason), or None for a bad row
    (recorded in report.bad). The file is small (35,887 short rows), so it is read whole."""
    handle, reader = _open_csv(path, "FER+ CSV", "--ferplus")
    with handle:
        header = _read_header(reader, path, "FER+ CSV", FERPLUS_COLUMNS)
        if tuple(header) != FERPLUS_COLUMNS:
            raise UsageError(f"{path} has the header {','.join(header)[:80]!r}, expected "
                             f"{','.join(FERPLUS_COLUMNS)}: pass fer2013new.csv from github.com/microsoft/FERPlus")
        labels = []
        for line, fields in _data_rows(reader, path, "FER+ CSV"):
            if len(fields) != len(FERPLUS_COLUMNS):
                report.bad.append(BadRow(path.name, line, f"{len(fields)} fields, expected {len(FERPLUS_COLUMNS)}"))
                labels.append(None)
                continue
            try:
                votes = [int(v) for v in fields[2:]]
            except ValueError:
                votes = None
            if votes is None or min(votes) < 0:
                report.bad.append(BadRow(path.name, line, f"votes {','.join(fields[2:])[:40]!r} are not "
                                                          f"{N_VOTES} non-negative integers"))
                labels.append(None)
                continue
            label = ferplus_vote(votes) if fields[1].strip() else DROP_NO_NAME
            labels.append((fields[0].strip(), label))
    return labels


# ---------------------------------------------------------------------------------------------------
# Writing


def check_output(out: Path, sources: list[Path], overwrite: bool) -> None:
    """Refuse before any work: a file at OUT, a non-empty OUT without --overwrite, or an OUT that holds
    an input (--overwrite would delete the CSV being read, e.g. --out data)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder: choose another --out")
    for source in sources:
        if out.resolve() in source.resolve().parents:
            raise UsageError(f"--out {out} contains the input {source}: choose an output folder of its own")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"output folder {out} is not empty: pass --overwrite to replace it, or choose another --out")


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished tmp folder to OUT; an old OUT is set aside first and deleted last, so at every
    moment either the old or the new dataset is complete on disk."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(tmp, out)
        return
    old = out.with_name(f"{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the old dataset back rather than leave nothing at OUT
        raise
    shutil.rmtree(old)


def write_bad_rows(path: Path, bad: list) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "line", "reason"))
        writer.writerows((b.file, b.line, b.reason) for b in sorted(bad, key=lambda b: (b.file, b.line)))


def bad_summary(bad: list) -> str:
    shown = "; ".join(f"{b.file} line {b.line}: {b.reason}" for b in bad[:SHOW_BAD])
    return shown + (f"; and {len(bad) - SHOW_BAD} more" if len(bad) > SHOW_BAD else "")


def convert(csv_path: Path, tmp: Path, ferplus: list | None, total: int, progress: bool) -> Report:
    """Write every good row of csv_path as tmp/<split>/<class>/<row>.png."""
    report = Report()
    made = set()  # class folders are created on first use: an empty class folder breaks ImageFolder
    handle, reader = _open_csv(csv_path, "FER2013 CSV", "--csv")
    with handle, tqdm(total=total, desc="writing images", unit="row", disable=not progress, leave=False) as bar:
        columns = fer2013_columns(reader, csv_path)
        for row, (line, fields) in enumerate(_data_rows(reader, csv_path, "FER2013 CSV")):
            bar.update()
            report.rows += 1
            parsed = parse_row(fields, columns)
            if isinstance(parsed, str):
                report.bad.append(BadRow(csv_path.name, line, parsed))
                continue
            name, split, pixels = parsed
            if ferplus is not None:
                if row >= len(ferplus):  # the file grew since count_rows: checked again in main
                    continue
                entry = ferplus[row]
                if entry is None:  # a bad FER+ row, already reported
                    continue
                usage, name = entry
                if usage and SPLITS.get(usage) != split:
                    report.usage_mismatch += 1
                if name not in FERPLUS_CLASSES:
                    report.dropped[name] += 1
                    continue
            folder = tmp / split / name
            if folder not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(folder)
            Image.fromarray(pixels).save(folder / f"{row:05d}.png")
            report.counts.setdefault(split, Counter())[name] += 1
    return report


def main(args) -> int:
    if args.csv_path and args.csv_flag and Path(args.csv_path) != Path(args.csv_flag):
        raise UsageError(f"two CSVs given ({args.csv_path} and --csv {args.csv_flag}): pass one")
    csv_path = Path(args.csv_path or args.csv_flag or "data/fer2013.csv")
    ferplus_path = Path(args.ferplus) if args.ferplus else None
    out = Path(args.out or ("data/ferplus" if ferplus_path else "data/fer2013"))
    classes = FERPLUS_CLASSES if ferplus_path else KAGGLE_CLASSES

    check_output(out, [p for p in (csv_path, ferplus_path) if p], args.overwrite)
    rows = count_rows(csv_path)
    if rows == 0:
        raise UsageError(f"{csv_path} has a header but no data rows: pass the complete fer2013.csv")
    pre = Report()  # FER+ bad rows are found before the images are written
    ferplus = None
    if ferplus_path:
        ferplus = read_ferplus(ferplus_path, pre)
        if len(ferplus) != rows:
            raise UsageError(f"{ferplus_path} has {len(ferplus)} data rows but {csv_path} has {rows}: FER+ votes "
                             f"are matched to fer2013.csv by row order, so both must be the complete original files")

    ensure_writable_dir(out.parent, "output")
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an earlier run killed with the same process id
    tmp.mkdir()
    try:
        report = convert(csv_path, tmp, ferplus, rows, use_progress_bars(args.quiet))
        if ferplus is not None and report.rows != len(ferplus):
            raise UsageError(f"{csv_path} changed while it was read ({report.rows} rows, {rows} before): run again")
        # a file mostly unusable is the wrong file or a broken download, not a few bad rows to skip
        if len(report.bad) > report.rows / 2:
            raise UsageError(f"{len(report.bad)} of {report.rows} rows of {csv_path} are bad "
                             f"({bad_summary(report.bad)}): is this the original fer2013.csv?")
        if len(pre.bad) > rows / 2:
            raise UsageError(f"{len(pre.bad)} of {rows} rows of {ferplus_path} are bad "
                             f"({bad_summary(pre.bad)}): is this FERPlus's fer2013new.csv?")
        if not report.counts:
            raise UsageError(f"no images left to write from {csv_path} (dropped: {dict(report.dropped)}): "
                             f"check the FER+ file belongs to this fer2013.csv")
        report.bad = report.bad + pre.bad
        summary = {
            "source": {"csv": str(csv_path), "csv_rows": report.rows,
                       "ferplus": str(ferplus_path) if ferplus_path else None},
            "labels": "FER+ majority vote" if ferplus_path else "FER2013 emotion column",
            "classes": list(classes),
            "layout": "<split>/<class>/<row>.png, row = 0-based data row of the CSV (line row + 2)",
            "splits": {split: {"images": sum(report.counts.get(split, {}).values()),
                               "classes": {c: report.counts.get(split, {}).get(c, 0) for c in classes}}
                       for split in SPLITS.values()},
            "bad_rows": len(report.bad),
            "dropped": dict(report.dropped),
        }
        write_json(tmp / "summary.json", summary)
        if report.bad:
            write_bad_rows(tmp / "bad_rows.csv", report.bad)
        move_into_place(tmp, out)
    except BaseException:
        # a failed or interrupted run leaves nothing behind: OUT (old or absent) is untouched
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise

    print_summary(report, summary, csv_path, out, classes)
    return 0


def print_summary(report: Report, summary: dict, csv_path: Path, out: Path, classes) -> None:
    print(f"read {csv_path}: {report.rows:,} rows, {len(report.bad):,} bad")
    for split, info in summary["splits"].items():
        per_class = ", ".join(f"{c} {n:,}" for c, n in info["classes"].items())
        print(f"{split}: {info['images']:,} images ({per_class})")
    if report.rows != sum(OFFICIAL_ROWS.values()):
        official = " / ".join(f"{n:,}" for n in OFFICIAL_ROWS.values())
        print(f"note: the official fer2013.csv has {sum(OFFICIAL_ROWS.values()):,} rows ({official} "
              f"train/val/test); this one has {report.rows:,}")
    if report.dropped:
        reasons = ", ".join(f"{n:,} {why}" for why, n in report.dropped.most_common())
        print(f"FER+: dropped {sum(report.dropped.values()):,} rows ({reasons})")
    if report.usage_mismatch:
        print(f"note: {report.usage_mismatch:,} rows have a different Usage in the FER+ file than in {csv_path.name}: "
              f"are both files the originals, in their original order? (fer2013.csv's Usage was used)")
    for split in SPLITS.values():
        missing = [c for c in classes if not summary["splits"][split]["classes"][c]]
        if missing and summary["splits"][split]["images"]:
            print(f"note: {split}/ has no {', '.join(missing)} images, so it has fewer class folders than "
                  f"{len(classes)}: ImageFolder loaders expect the same classes in each split")
    if report.bad:
        print(f"skipped {len(report.bad):,} bad rows: {bad_summary(report.bad)}; all listed in {out / 'bad_rows.csv'}")
    print(f"wrote {out} ({sum(s['images'] for s in summary['splits'].values()):,} images, summary.json)")


if __name__ == "__main__":
    sys.exit(run_main(main, get_args_parser().parse_args()))

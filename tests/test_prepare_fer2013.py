"""data/prepare_fer2013.py: fer2013.csv (and FER+ votes) -> ImageFolder PNGs, on tiny generated CSVs.

Each test writes a CSV of 10-20 rows, so the whole module runs in about a second.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from expression.apps.cli import run_main
from expression.core.datasets import check_splits, decode_split
from expression.core.preprocessing import FER2013_CLASSES

ROOT = Path(__file__).resolve().parents[1]
# data/ is not a package (it holds datasets), so load the script from its path
_spec = importlib.util.spec_from_file_location("prepare_fer2013", ROOT / "data" / "prepare_fer2013.py")
prep = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = prep  # dataclasses look their module up in sys.modules while it executes
_spec.loader.exec_module(prep)

KAGGLE = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # Kaggle's 0..6, written out


def face(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 48), dtype=np.uint8)


def pixel_text(pixels: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in pixels.ravel())


def write_fer2013(path: Path, rows) -> Path:
    """rows: (emotion, pixels text, Usage) tuples, written with Kaggle's header."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("emotion", "pixels", "Usage"))
        writer.writerows(rows)
    return path


def write_ferplus(path: Path, rows) -> Path:
    """rows: (Usage, image name, 10 votes) tuples, written with FERPlus's header."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(prep.FERPLUS_COLUMNS)
        writer.writerows((usage, name, *votes) for usage, name, votes in rows)
    return path


def run(argv, capsys) -> tuple[int, str, str]:
    code = run_main(prep.main, prep.get_args_parser().parse_args([str(a) for a in argv] + ["--quiet"]))
    out, err = capsys.readouterr()
    return code, out, err


def good_rows(usages=("Training", "PublicTest", "PrivateTest")):
    """Every Kaggle emotion in every split: (emotion, pixels) per row, in row order."""
    return [(code, face(100 * i + code), usage) for i, usage in enumerate(usages) for code in range(7)]


def csv_rows(rows):
    return [(code, pixel_text(pixels), usage) for code, pixels, usage in rows]


def png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "L" and img.size == (48, 48)
        return np.asarray(img)


def assert_one_error_line(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


# ---------------------------------------------------------------------------------------------------
# FER2013 labels


def test_pixels_round_trip_into_split_and_kaggle_class_folders(tmp_path, capsys):
    rows = good_rows()
    source = write_fer2013(tmp_path / "fer2013.csv", csv_rows(rows))
    out = tmp_path / "fer"
    code, stdout, err = run([source, "--out", out], capsys)
    assert code == 0 and err == ""

    split_of = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
    for row, (emotion, pixels, usage) in enumerate(rows):
        path = out / split_of[usage] / KAGGLE[emotion] / f"{row:05d}.png"
        np.testing.assert_array_equal(png(path), pixels)  # lossless, exact bytes
    assert len(list(out.rglob("*.png"))) == len(rows)
    # Kaggle's order is not ours: 4 is sad and 6 is neutral (alphabetically 4 would be neutral)
    assert (out / "train" / "sad" / "00004.png").is_file()
    assert (out / "val" / "neutral" / "00013.png").is_file()
    assert sorted(p.name for p in (out / "test").iterdir()) == sorted(FER2013_CLASSES)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"]["csv"] == str(source) and summary["source"]["ferplus"] is None
    assert summary["splits"]["val"] == {"images": 7, "classes": dict.fromkeys(KAGGLE, 1)}
    assert summary["bad_rows"] == 0 and not (out / "bad_rows.csv").exists()
    assert "train: 7 images" in stdout
    assert "official fer2013.csv has 35,887 rows" in stdout  # 21 rows here: a note, not an error
    assert leftovers(tmp_path) == []


def test_output_loads_as_imagefolder(tmp_path, capsys):
    rows = good_rows(("Training", "Training", "PrivateTest"))
    out = tmp_path / "fer"
    code, _, _ = run(["--csv", write_fer2013(tmp_path / "fer2013.csv", csv_rows(rows)), "--out", out], capsys)
    assert code == 0
    classes = check_splits(out / "train", out / "test")
    assert classes == sorted(FER2013_CLASSES)
    test = decode_split(out / "test", classes, img_size=48)
    expected = {KAGGLE[emotion]: pixels for emotion, pixels, usage in rows if usage == "PrivateTest"}
    for image, label in zip(test.images, test.labels):
        np.testing.assert_array_equal(image[0].numpy(), expected[classes[label]])


def test_bad_rows_are_skipped_and_listed_with_line_numbers(tmp_path, capsys):
    good = csv_rows(good_rows(("Training",)) + good_rows(("PublicTest",)))  # 14 good rows
    pixels = face(0)
    short, hot, texty = pixels.ravel().tolist(), pixels.ravel().tolist(), pixel_text(pixels).split()
    hot[7] = 300
    texty[3] = "abc"
    bad = [
        (3, " ".join(map(str, short[:-1])), "Training"),  # 2303 values
        (9, pixel_text(pixels), "Training"),              # no emotion 9
        (3, " ".join(map(str, hot)), "Training"),         # pixel out of range
        (3, " ".join(texty), "PublicTest"),               # not a number
        (3, pixel_text(pixels), "Validation"),            # unknown Usage
    ]
    rows = good[:2] + bad[:2] + good[2:9] + bad[2:] + good[9:]
    out = tmp_path / "fer"
    code, stdout, err = run([write_fer2013(tmp_path / "fer2013.csv", rows), "--out", out], capsys)
    assert code == 0 and err == ""

    with open(out / "bad_rows.csv", newline="") as handle:
        listed = list(csv.DictReader(handle))
    # header is line 1, so data row r is line r + 2
    assert [int(r["line"]) for r in listed] == [4, 5, 13, 14, 15]
    assert all(r["file"] == "fer2013.csv" for r in listed)
    reasons = [r["reason"] for r in listed]
    assert "2303 pixel values" in reasons[0] and "emotion 9" in reasons[1] and "300" in reasons[2]
    assert "'abc'" in reasons[3] and "'Validation'" in reasons[4]
    assert "skipped 5 bad rows" in stdout and "line 4" in stdout and "bad_rows.csv" in stdout

    images = sorted(out.rglob("*.png"))
    assert len(images) == 14
    bad_indices = {2, 3, 11, 12, 13}
    assert {int(p.stem) for p in images} == set(range(19)) - bad_indices  # row indices stay traceable
    assert json.loads((out / "summary.json").read_text())["bad_rows"] == 5


def test_mostly_bad_rows_is_an_error_and_writes_nothing(tmp_path, capsys):
    rows = csv_rows(good_rows(("Training",)))[:4] + [(1, "1 2 3", "Training")] * 5
    out = tmp_path / "fer"
    code, stdout, err = run([write_fer2013(tmp_path / "fer2013.csv", rows), "--out", out], capsys)
    line = assert_one_error_line(code, err)
    assert "5 of 9 rows" in line and "3 pixel values" in line
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("header", [("emotion", "pixels"), ("Usage", "Image name", "neutral")])
def test_missing_file_or_wrong_header_is_one_line(tmp_path, capsys, header):
    code, _, err = run([tmp_path / "absent.csv", "--out", tmp_path / "o"], capsys)
    assert "not found" in assert_one_error_line(code, err)

    path = tmp_path / "other.csv"
    path.write_text(",".join(header) + "\n1,2\n")
    code, _, err = run([path, "--out", tmp_path / "o"], capsys)
    assert "emotion,pixels,Usage" in assert_one_error_line(code, err)
    assert not (tmp_path / "o").exists()


def test_non_empty_out_needs_overwrite(tmp_path, capsys):
    source = write_fer2013(tmp_path / "fer2013.csv", csv_rows(good_rows()))
    out = tmp_path / "fer"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run([source, "--out", out], capsys)
    assert "--overwrite" in assert_one_error_line(code, err)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"

    code, _, err = run([source, "--out", out, "--overwrite"], capsys)
    assert code == 0 and err == ""
    assert not (out / "keep.txt").exists() and len(list(out.rglob("*.png"))) == 21
    assert leftovers(tmp_path) == []


def test_overwrite_refuses_an_out_holding_the_input(tmp_path, capsys):
    source = write_fer2013(tmp_path / "fer2013.csv", csv_rows(good_rows()))
    code, _, err = run([source, "--out", tmp_path, "--overwrite"], capsys)
    assert "contains the input" in assert_one_error_line(code, err)
    assert source.is_file()


def test_interrupted_run_keeps_the_old_dataset(tmp_path, capsys, monkeypatch):
    source = write_fer2013(tmp_path / "fer2013.csv", csv_rows(good_rows()))
    out = tmp_path / "fer"
    assert run([source, "--out", out], capsys)[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    real, calls = prep.parse_row, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt  # Ctrl-C halfway through writing images
        return real(*args)

    monkeypatch.setattr(prep, "parse_row", interrupted)
    code, _, err = run([source, "--out", out, "--overwrite"], capsys)
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err  # one line, exit 130
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# FER+ labels

#            neutral happy surprise sad angry disgust fear contempt unknown NF
VOTES = {
    "happy":    (1, 7, 0, 0, 0, 0, 0, 1, 1, 0),
    "contempt": (2, 0, 0, 0, 1, 0, 0, 5, 2, 0),
    "sad":      (0, 0, 0, 6, 0, 0, 0, 0, 0, 4),
    "tie":      (0, 4, 0, 4, 0, 0, 0, 0, 2, 0),  # happy = sad: dropped
    "unknown":  (2, 1, 0, 0, 0, 0, 0, 0, 7, 0),
    "nf tie":   (0, 5, 0, 0, 0, 0, 0, 0, 0, 5),  # NF ties with happy: dropped
    "no votes": (0,) * 10,
}


def ferplus_case(tmp_path, extra_ferplus_rows=0):
    """12 fer2013 rows (whose own labels FER+ replaces) and the matching FER+ votes."""
    cases = ["happy", "contempt", "sad", "tie", "unknown", "nf tie", "no votes", "happy", "contempt", "sad",
             "no name", "happy"]
    usages = ["Training"] * 8 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    source = write_fer2013(tmp_path / "fer2013.csv",
                           [(0, pixel_text(face(i)), u) for i, u in enumerate(usages)])
    votes = [(u, "" if c == "no name" else f"fer{i:07d}.png", VOTES.get(c, VOTES["happy"]))
             for i, (c, u) in enumerate(zip(cases, usages))]
    votes += [("Training", "fer9999999.png", VOTES["happy"])] * extra_ferplus_rows
    return source, write_ferplus(tmp_path / "fer2013new.csv", votes)


def test_ferplus_majority_vote_and_drops(tmp_path, capsys):
    source, ferplus = ferplus_case(tmp_path)
    out = tmp_path / "plus"
    code, stdout, err = run([source, "--ferplus", ferplus, "--out", out], capsys)
    assert code == 0 and err == ""
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert written == ["test/happy/00011.png", "train/contempt/00001.png", "train/happy/00000.png",
                       "train/happy/00007.png", "train/sad/00002.png", "val/contempt/00008.png",
                       "val/sad/00009.png"]
    np.testing.assert_array_equal(png(out / "train" / "contempt" / "00001.png"), face(1))

    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == list(prep.FERPLUS_CLASSES)
    assert summary["dropped"] == {prep.DROP_TIE: 1, prep.DROP_UNKNOWN: 2, prep.DROP_NO_VOTES: 1,
                                  prep.DROP_NO_NAME: 1}
    assert summary["splits"]["train"]["classes"]["contempt"] == 1
    assert "FER+: dropped 5 rows" in stdout and "tie between top emotions" in stdout


def test_ferplus_vote_rules():
    assert prep.ferplus_vote([0, 0, 0, 0, 0, 0, 0, 3, 1, 1]) == "contempt"
    assert prep.ferplus_vote([3, 3, 0, 0, 0, 0, 0, 0, 0, 0]) == prep.DROP_TIE
    assert prep.ferplus_vote([3, 0, 0, 0, 0, 0, 0, 0, 3, 0]) == prep.DROP_UNKNOWN
    assert prep.ferplus_vote([0] * 10) == prep.DROP_NO_VOTES


def test_ferplus_row_count_mismatch_is_one_line(tmp_path, capsys):
    source, ferplus = ferplus_case(tmp_path, extra_ferplus_rows=1)
    out = tmp_path / "plus"
    code, _, err = run([source, "--ferplus", ferplus, "--out", out], capsys)
    line = assert_one_error_line(code, err)
    assert "13 data rows" in line and "12" in line
    assert not out.exists() and leftovers(tmp_path) == []


def test_ferplus_default_out(tmp_path, capsys, monkeypatch):
    source, ferplus = ferplus_case(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(["--csv", source, "--ferplus", ferplus], capsys)
    assert code == 0 and (tmp_path / "data" / "ferplus" / "summary.json").is_file()
    assert f"wrote {Path('data/ferplus')}" in stdout

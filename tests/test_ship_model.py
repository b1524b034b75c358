"""bench/ship_model.py: the float16 file replaces the shipped one only when measurably better, and the
manifest keeps the lineage and every cycle's curve."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from bench import ship_model
from test_init import model_file, train


def ship(source, test_dir, out, *extra):
    argv = [str(source), "--test-dir", str(test_dir), "--out", str(out), "--manifest", str(out.with_suffix(".json")),
            *extra]
    return ship_model.main(ship_model.get_args_parser().parse_args(argv))


def test_ship_only_what_beats_the_shipped_model_and_keep_its_lineage(tmp_path, image_folder, capsys):
    assert train(tmp_path, image_folder, "parent", "--weights", "none") == 0
    out = tmp_path / "shipped" / "model.pt"
    assert ship(model_file(tmp_path, "parent"), image_folder / "test", out) == 0  # nothing shipped yet
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and manifest["lineage"] == []
    raw = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    [cycle] = manifest["cycles"]
    assert cycle["command"].startswith("python train_resnet34.py") and [row["epoch"] for row in cycle["curve"]] == [1]
    assert cycle["curve"][0]["test_acc"] == pytest.approx(manifest["public_test_accuracy"], abs=1e-4)  # same faces

    # A child not --min-gain better (here: 100 points, which nothing can gain) is not shipped.
    before = out.read_bytes()
    assert train(tmp_path, image_folder, "child", "--init", str(out)) == 0
    assert ship(model_file(tmp_path, "child"), image_folder / "test", out, "--min-gain", "1") == 1
    assert "not shipped" in capsys.readouterr().out
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["model.json", "model.pt"]

    assert ship(model_file(tmp_path, "child"), image_folder / "test", out, "--force") == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert [entry["sha256"] for entry in manifest["lineage"]] == [hashlib.sha256(before).hexdigest()]
    assert manifest["lineage"][0]["command"] == cycle["command"]  # recovered from the old manifest
    assert manifest["total_epochs"] == 2 and len(manifest["cycles"]) == 2
    assert manifest["cycles"][1]["start"].startswith("model.pt (1 epochs")

    # The cycles figure and tables the README shows come from this manifest.
    from bench import plot_cycles
    figure = tmp_path / "cycles.png"
    args = plot_cycles.get_args_parser().parse_args(["--manifest", str(out.with_suffix(".json")), "--out",
                                                     str(figure), "--markdown"])
    assert plot_cycles.main(args) == 0 and figure.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert printed.count("| epoch | 1 |") == 2 and "| PublicTest % |" in printed

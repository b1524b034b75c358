"""evaluate_explanations.py end to end on tiny generated data with a random-weight checkpoint."""
from __future__ import annotations

import csv

import pytest
from PIL import Image

import evaluate_explanations as ee
from expression.apps.cli import run_main
from expression.demo.synthetic import write_image_folder

pytestmark = pytest.mark.usefixtures("single_thread")


def run(args):
    return run_main(ee.main, ee.get_args_parser().parse_args([str(a) for a in args]))


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def corner_demo(tmp_path_factory):
    """One test face per class, happy carrying its evidence in a corner mark."""
    return write_image_folder(tmp_path_factory.mktemp("demo") / "demo", n_train_per_class=0,
                              n_test_per_class=1, seed=0, corner_class="happy")


def test_report_on_demo_data_with_masks(tmp_path, corner_demo, random_checkpoint, capsys):
    out = tmp_path / "eval"
    code = run(["--checkpoint", random_checkpoint, "--images", corner_demo / "test", "--limit", 7,
                "--steps", 2, "--methods", "gradcam", "--layers", "layer4", "--batch-size", 4,
                "--target", "true", "--device", "cpu", "--out", out])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| gradcam | layer4 |" in printed and f"wrote {out / 'explanations_report.csv'}" in printed

    rows = read_csv(out / "explanations_report.csv")
    assert [(r["method"], r["layer"]) for r in rows] == [("gradcam", "layer4"), ("random", ""), ("centre", "")]
    for column in ("deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence", "pointing_game",
                   "energy_pointing_game", "pointing_game_happy", "energy_pointing_game_happy",
                   "randomisation_rho_top", "randomisation_rho_layer"):
        for row in rows:
            value = float(row[column])
            assert 0 <= value <= 100 or column.startswith("randomisation"), (column, value)
    assert all(r["road_morf"] == "" for r in rows)  # --road is off by default
    assert all(r["n_images"] == "7" and r["n_pointing"] == "7" for r in rows)  # --target true: every mask counts
    assert float(rows[1]["randomisation_rho_layer"]) == 1.0  # the random map ignores the weights
    assert 0 <= float(rows[0]["deletion_auc"]) <= 1 and 0 <= float(rows[0]["insertion_auc"]) <= 1

    per_class = read_csv(out / "pointing_per_class.csv")
    assert len(per_class) == 3 * 7 and {r["n"] for r in per_class} == {"1"}
    cascade = read_csv(out / "randomisation.csv")
    assert [r["stage"] for r in cascade[:7]] == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert len(cascade) == 3 * 7

    md = (out / "explanations_report.md").read_text()
    assert "deletion AUC ↓" in md and "pointing happy ↑" in md and "| centre | - |" in md
    for png in ("deletion_insertion.png", "randomisation.png"):
        with Image.open(out / png) as img:
            assert img.size[0] > 200
    assert (out / "args.json").is_file()


def test_report_without_masks_leaves_pointing_empty(tmp_path, image_folder, random_checkpoint):
    out = tmp_path / "eval"
    code = run(["--checkpoint", random_checkpoint, "--images", image_folder / "test", "--limit", 2,
                "--steps", 1, "--methods", "gradcam,layercam", "--layers", "layer3", "--no-sanity", "--road",
                "--baseline", "mean", "--device", "cpu", "--quiet", "--out", out])
    assert code == 0
    rows = read_csv(out / "explanations_report.csv")
    assert [r["method"] for r in rows] == ["gradcam", "layercam", "random", "centre"]
    assert all(r["pointing_game"] == "" and r["energy_pointing_game"] == "" and r["n_pointing"] == "0"
               for r in rows)
    assert all(r["randomisation_rho_layer"] == "" for r in rows)
    assert all(0 <= float(r["road_morf"]) <= 1 and 0 <= float(r["road_lerf"]) <= 1 for r in rows)
    assert "pointing_game_happy" not in rows[0]
    assert not (out / "randomisation.csv").exists() and not (out / "pointing_per_class.csv").exists()
    assert (out / "deletion_insertion.png").is_file() and (out / "explanations_report.md").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--images", "no/such/folder"], "no images found"),
    (["--methods", "gradcam,magic"], "unknown method"),
    (["--layers", "layer9"], "--layers"),
    (["--steps", "5000"], "exceeds"),
    (["--masks", "missing.npz"], "--masks"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, image_folder, random_checkpoint, capsys, extra, message):
    args = ["--checkpoint", random_checkpoint, "--images", image_folder / "test", "--limit", 1,
            "--out", tmp_path / "eval", "--device", "cpu", *extra]
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_target_true_needs_labels(tmp_path, image_folder, random_checkpoint, capsys):
    loose = sorted((image_folder / "test" / "happy").glob("*.png"))[0]
    assert run(["--checkpoint", random_checkpoint, "--images", loose, "--target", "true",
                "--out", tmp_path / "eval", "--device", "cpu"]) == 2
    assert "--target true" in capsys.readouterr().err


def test_missing_checkpoint_is_a_usage_error(tmp_path, capsys):
    assert run(["--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "eval"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_report_scores_new_methods_fusion_and_tta(tmp_path, corner_demo, random_checkpoint):
    out = tmp_path / "eval"
    code = run(["--checkpoint", random_checkpoint, "--images", corner_demo / "test", "--limit", 3,
                "--steps", 2, "--methods", "layercam,eigencam,guidedgradcam,fullgrad", "--layers", "layer1,layer4",
                "--tta-maps", "flip", "--batch-size", 4, "--device", "cpu", "--quiet", "--out", out])
    assert code == 0
    rows = read_csv(out / "explanations_report.csv")
    plain = [("layercam", "layer1"), ("eigencam", "layer1"), ("guidedgradcam", "layer1"), ("layercam", "layer4"),
             ("eigencam", "layer4"), ("guidedgradcam", "layer4"), ("fullgrad", "input"), ("layercam", "fused"),
             ("eigencam", "fused")]
    expected = plain + [(f"{m}@flip", l) for m, l in plain] + [("random", ""), ("centre", "")]
    assert [(r["method"], r["layer"]) for r in rows] == expected
    by_key = {(r["method"], r["layer"]): r for r in rows}
    for key in plain:
        flip = by_key[(f"{key[0]}@flip", key[1])]
        assert 0 <= float(flip["deletion_auc"]) <= 1 and flip["randomisation_rho_top"] != ""
    # own-layer randomisation exists for real layers only; fused and input maps have the top stage
    assert by_key[("layercam", "layer4")]["randomisation_rho_layer"] != ""
    assert by_key[("layercam", "fused")]["randomisation_rho_layer"] == ""
    assert by_key[("fullgrad", "input")]["randomisation_rho_top"] != ""
    cascade = read_csv(out / "randomisation.csv")
    assert {(r["method"], r["layer"]) for r in cascade} == set(expected)


def test_tta_list_type():
    assert ee.tta_list("none") == () and ee.tta_list("flip,tencrop") == ("flip", "tencrop")
    with pytest.raises(ValueError):
        ee.tta_list("rotate")


def test_trusted_rule():
    from gradcam.evaluation import trusted
    nan = float("nan")
    base = [{"method": "random", "deletion_auc": 0.6, "pointing_game": 0.1},
            {"method": "centre", "deletion_auc": 0.3, "pointing_game": 0.2}]
    good = {"method": "m", "deletion_auc": 0.2, "pointing_game": 0.5, "randomisation_rho_top": 0.1,
            "randomisation_rho_layer": 0.0}
    assert trusted(good, base) == "yes"
    assert trusted({**good, "deletion_auc": 0.35}, base) == "no"          # loses to the centre blob
    assert trusted({**good, "pointing_game": 0.15}, base) == "no"
    assert trusted({**good, "randomisation_rho_top": 0.8}, base) == "no"  # the map ignores fc
    assert trusted({**good, "randomisation_rho_layer": nan}, base) == "yes"  # fused/input: top stage only
    assert trusted({**good, "pointing_game": nan, "randomisation_rho_top": nan,
                    "randomisation_rho_layer": nan}, base) == "yes"       # no masks, no sanity check
    assert trusted({**base[0], "randomisation_rho_top": 1.0, "randomisation_rho_layer": 1.0}, base) == ""

"""classmaps_FER.py and its library (expression.reports.class_maps, face_regions, class_map_outputs) on
generated data: demo faces whose evidence the generator knows, tiny hand-checkable networks, and the
random-weight ResNet34 checkpoint for the script end to end."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import classmaps_FER
from expression.apps.cli import run_main
from expression.core.cam_policy import DEFAULT_CAM_LAYER, DEFAULT_CAM_METHOD, SHIPPED_MAP_TTA
from expression.core.preprocessing import FER2013_CLASSES, normalize
from expression.demo.synthetic import CLASS_NAMES, EVIDENCE_REGION, make_split, write_image_folder
from expression.reports import class_maps as cm
from expression.reports import face_regions as fr

pytestmark = pytest.mark.usefixtures("single_thread")
ROOT = Path(__file__).resolve().parents[1]
GRAY = ((0.5,) * 3, (0.5,) * 3)  # the seed's normalisation


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------------
# Regions


@pytest.mark.parametrize("size", [48, 96, 40])
def test_fer_layout_is_a_partition(size):
    layout = fr.fer_layout(size)
    assert layout.regions == fr.REGIONS
    stacked = np.stack(list(layout.masks.values()))
    assert (stacked.sum(0) == 1).all()  # every pixel in exactly one region
    assert layout.area_shares().sum() == pytest.approx(1)
    assert all(m.any() for m in layout.masks.values())
    labels = layout.label_image()
    at = lambda x, y: layout.regions[labels[int(y * size / 48), int(x * size / 48)]]  # noqa: E731
    assert at(14.5, 17.5) == at(32.5, 17.5) == "eyes" and at(23.5, 38.5) == "mouth"
    assert at(23.5, 25) == "nose" and at(10, 27) == "cheeks" and at(23.5, 45) == "jaw"
    assert at(23.5, 11) == "brows" and at(23.5, 3) == "forehead" and at(1, 1) == at(46, 30) == "outside"


def drawn_mean_face(dx=0, dy=0, size=48):
    """A smooth 'mean face': bright oval, dark eyes and mouth, a brighter nose ridge, shifted by (dx, dy)."""
    y, x = np.mgrid[0:size, 0:size].astype(float) * 48 / size
    x, y = x - dx, y - dy
    face = 110 + 40 * (((x - 23.5) / 19) ** 2 + ((y - 21) / 27) ** 2 <= 1)
    for cx, cy, depth, rx, ry in ((14.5, 17.5, -35, 3, 2), (32.5, 17.5, -35, 3, 2), (23.5, 38.5, -25, 6, 2),
                                  (23.5, 24, 15, 1.5, 6)):
        face = face + depth * np.exp(-0.5 * (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))
    return face


def test_layout_check_finds_the_features_and_notices_a_shifted_face():
    layout = fr.fer_layout(48)
    rows = fr.check_layout(drawn_mean_face(), layout)
    assert [r["expected"] for r in rows] == ["eyes", "eyes", "mouth", "nose"] and all(r["ok"] for r in rows)
    assert abs(rows[0]["x"] - 14.5) <= 1 and abs(rows[2]["y"] - 38.5) <= 1
    shifted = fr.check_layout(drawn_mean_face(dy=7), layout)  # a face registered 7 px lower
    assert not all(r["ok"] for r in shifted)
    big = fr.check_layout(drawn_mean_face(size=96), fr.fer_layout(96))
    assert all(r["ok"] for r in big)


def test_facs_regions_follow_the_action_units():
    assert fr.facs_regions("happy") == ("cheeks", "mouth")
    assert fr.facs_regions("surprise") == ("forehead", "brows", "eyes", "mouth", "jaw")
    assert fr.facs_regions("angry") == ("brows", "eyes", "mouth")
    assert fr.facs_regions("disgust") == ("nose", "mouth")
    assert fr.facs_regions("sad") == ("forehead", "brows", "mouth")
    assert fr.facs_regions("neutral") == () and fr.facs_basis("happy") == "AU6+12"
    assert set(fr.FACS_UNITS) == set(FER2013_CLASSES)


def test_demo_split_gets_the_generators_layout(tmp_path):
    root = write_image_folder(tmp_path / "demo", n_train_per_class=0, n_test_per_class=3)
    layout = fr.layout_for_split(root / "test", 48)
    assert layout.regions == ("brows", "eyes", "mouth", "other")
    assert layout.expected["angry"] == ("brows",) and layout.expected["neutral"] == ("brows", "eyes", "mouth")
    assert fr.layout_for_split(root / "test", 32).regions == fr.REGIONS  # masks of another size: FER layout
    assert fr.layout_for_split(tmp_path, 48).regions == fr.REGIONS


# ---------------------------------------------------------------------------------------------------
# The numbers, by hand


def test_region_shares_bootstrap_and_agreement_by_hand():
    top = np.repeat((np.arange(4) < 2)[:, None], 4, axis=1)
    layout = fr.RegionLayout("two halves", {"top": top, "bottom": ~top},
                             expected={"a": ("top",), "b": ("bottom",), "c": ()},
                             basis={"a": "x", "b": "y", "c": "z"})
    maps = np.zeros((5, 4, 4), np.float32)
    maps[0, :2] = 1                      # class a: all mass on top
    maps[1, :2], maps[1, 2:] = 3, 1      # class a: 3/4 on top
    maps[2, 2:] = 1                      # class b
    maps[3, 2:] = 1                      # class b
    maps[4] = 1                          # class c: half and half
    groups = np.array([0, 0, 1, 1, 2])
    mass = cm.region_mass(maps, layout)
    assert mass[1].tolist() == [24, 8]
    table = cm.bootstrap_region_shares(mass, groups, 4, 200, np.random.default_rng(0))
    assert table.share[0].tolist() == pytest.approx([(8 + 24) / 40, 8 / 40])  # the mean map's shares
    assert table.counts.tolist() == [2, 2, 1, 0] and np.isnan(table.share[3]).all()
    assert (table.low <= table.share + 1e-12)[:3].all() and (table.share <= table.high + 1e-12)[:3].all()
    assert table.low[0, 0] == pytest.approx(0.75) and table.high[0, 0] == pytest.approx(1.0)
    assert table.low[1].tolist() == table.high[1].tolist() == [0, 1]  # identical faces: no spread

    rows = cm.facs_agreement(table.share, table.replicates, ["a", "b", "c", "d"], layout)
    # a: 80 % on top against the mean of b's 0 % and c's 50 % = 25 %: +55 points
    assert rows[0]["share"] == pytest.approx(80) and rows[0]["others"] == pytest.approx(25)
    assert rows[0]["agreement"] == pytest.approx(55) and rows[0]["low"] <= 55 <= rows[0]["high"]
    assert rows[1]["agreement"] == pytest.approx(100 - (20 + 50) / 2)
    assert np.isnan(rows[2]["agreement"]) and rows[2]["regions"] == ""


def test_class_structure_zero_for_alike_maps_and_clear_for_distinct_ones():
    rng = np.random.default_rng(0)
    alike = np.repeat(rng.random((1, 6, 6), dtype=np.float32), 30, axis=0)
    groups = np.arange(30) % 3
    flat = cm.class_structure(alike, groups, 3, 10, rng)
    assert flat.value == pytest.approx(0, abs=1e-6) and flat.excess == pytest.approx(0, abs=1e-6)

    distinct = rng.random((30, 6, 6), dtype=np.float32) * 0.2
    for i, g in enumerate(groups):
        distinct[i, g, :] += 1  # each class lights one row
    s = cm.class_structure(distinct, groups, 3, 30, rng)
    assert s.value > 0.3 and s.excess > 0.25 and s.p_value == pytest.approx(1 / 31)
    # total variation between two maps that share nothing is 1
    apart = np.zeros((2, 2, 2))
    apart[0, 0, 0], apart[1, 1, 1] = 1, 1
    assert cm.structure_of(apart) == pytest.approx(1)


def test_disputed_labels_follow_the_confident_joint_by_hand():
    probs = np.array([[0.9, 0.1, 0.0],     # label 0, confidently 0
                      [0.5, 0.45, 0.05],   # label 0: only 1 reaches its threshold, but 0 is the top class
                      [0.2, 0.8, 0.0],     # label 0, confidently 1: disputed
                      [0.1, 0.2, 0.7],     # label 1, confidently 2: disputed
                      [0.3, 0.6, 0.1],     # label 1
                      [0.3, 0.3, 0.4]])    # label 2
    labels = np.array([0, 0, 0, 1, 1, 2])
    # thresholds: t0 = (0.9 + 0.5 + 0.2) / 3 = 0.533, t1 = (0.2 + 0.6) / 2 = 0.4, t2 = 0.4
    disputed, suggested, margin = cm.disputed_labels(probs, labels)
    assert disputed.tolist() == [False, False, True, True, False, False]
    assert suggested.tolist() == [0, 1, 1, 2, 1, 2]
    assert margin[2] == pytest.approx(0.6) and margin[3] == pytest.approx(0.5)
    none, _, _ = cm.disputed_labels(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0]))
    assert none.tolist() == [False, False]  # class 1 has no faces: its threshold is out of reach


def test_top_confusions_most_frequent_first():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    assert cm.top_confusions(labels, pred, 3, 2) == [(0, 1, 2), (2, 0, 2)]  # ties in class order
    assert cm.top_confusions(labels, pred, 3, 9) == [(0, 1, 2), (2, 0, 2), (1, 0, 1), (2, 1, 1)]


def test_randomised_copy_is_the_cascade_step_at_the_layer(random_checkpoint):
    from expression.core.checkpoint import load_model

    model, _ = load_model(random_checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    random = cm.randomised_copy(model, "layer2", seed=0)
    after = random.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc", "layer4", "layer3", "layer2"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the model is untouched


# ---------------------------------------------------------------------------------------------------
# Demo faces: trained vs randomised, and the contrastive map by hand


class Tiny(nn.Module):
    """Two convolutions ('layer1', 24x24 at 48 px) and a max-pooled linear head: learns the demo faces in
    seconds on one CPU thread."""

    def __init__(self, k=7):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, k)

    def forward(self, x):
        return self.fc(self.layer1(x).amax((2, 3)))


@pytest.fixture(scope="module")
def trained_demo():
    """A Tiny net trained on 280 demo faces (about 70 % on held-out faces) and 70 held-out faces."""
    train, test = make_split(40, seed=1, split="train"), make_split(10, seed=1, split="test")
    x = normalize(torch.from_numpy(train.images)[:, None], *GRAY)
    y = torch.from_numpy(train.labels)
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(25):
        order = torch.randperm(len(y))
        for start in range(0, len(y), 35):
            index = order[start:start + 35]
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), test


def test_trained_demo_model_looks_where_the_features_are_drawn(trained_demo):
    model, test = trained_demo
    layout = fr.demo_layout(test.masks, EVIDENCE_REGION)
    config = cm.ClassMapConfig(layer="layer1", bootstrap=200, shuffles=20, confusions=2, structure_faces=10)
    report = cm.analyse(model, torch.from_numpy(test.images)[:, None], test.labels, CLASS_NAMES, *GRAY, layout,
                        config)
    assert (report.pred == report.labels).mean() > 0.5
    regions = list(layout.regions)
    for c, name in enumerate(CLASS_NAMES):
        cols = [regions.index(r) for r in layout.expected[name]]
        trained = report.regions_true.share[c, cols].sum()
        random = report.regions_random.share[c, cols].sum()
        if name != "neutral":  # neutral's "evidence" is every feature at rest: nothing to look at
            assert trained > random + 0.1, (name, trained, random)
    # the maps of the classes drawn in a region of their own agree with it beyond chance
    agreement = {r["cls"]: r for r in report.agreement}
    for name in ("angry", "fear"):
        assert agreement[name]["low"] > 10, agreement[name]
    # the class structure is real for the trained model, much weaker once it is randomised, also with
    # the explained class held fixed
    trained, random = report.structure["trained"], report.structure["randomised"]
    assert trained.p_value < 0.05 and trained.excess > 2 * random.excess
    fixed_trained, fixed_random = report.fixed_structure["trained"], report.fixed_structure["randomised"]
    assert fixed_trained.p_value < 0.05 and fixed_trained.excess > 2 * fixed_random.excess
    assert len(report.structure_sample) == 7 * 10


class Linear(nn.Module):
    """layer1 = conv (stride 2) + ReLU; logits = fc(mean over positions): dlogit_c/dA_k = W[c, k] / (h w)."""

    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 7)

    def forward(self, x):
        return self.fc(self.layer1(x).mean((2, 3)))


def hirescam_by_hand(model, x, weights):
    """HiResCAM (Draelos & Carin 2020) of the score sum_k weights[k] * mean(A_k), by hand: the gradient
    is weights[k] / (h w) at every position, the map ReLU(sum_k grad_k * A_k), min-max normalised,
    bilinearly upsampled (half-pixel centres) and normalised again."""
    with torch.no_grad():
        acts = model.layer1(x).double()                                # (N, K, h, w)
        h, w = acts.shape[-2:]
        raw = torch.relu((weights.double()[:, :, None, None] / (h * w) * acts).sum(1))

    def norm(m):
        m = m - m.flatten(1).min(1).values[:, None, None]
        return m / (m.flatten(1).max(1).values[:, None, None] + 1e-7)
    up = F.interpolate(norm(raw)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return norm(up).numpy()


def test_contrastive_map_is_the_map_of_the_logit_difference():
    """Confusion (true A, predicted B): its mean contrastive map is the mean over those faces of the map
    of logit B - logit A, checked by hand on a network whose gradients are known in closed form; its
    mean map is the map of logit B."""
    torch.manual_seed(3)
    model = Linear().eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (40, 1, 16, 16), dtype=np.uint8))
    labels = np.arange(40) % 7
    layout = fr.fer_layout(16)
    config = cm.ClassMapConfig(layer="layer1", bootstrap=20, shuffles=2, randomise=False, confusions=3,
                               batch_size=16, disputes_shown=0, structure_faces=0)
    report = cm.analyse(model, images, labels, CLASS_NAMES, *GRAY, layout, config)
    assert report.confusions
    x = normalize(images, *GRAY)
    weights = model.fc.weight.detach()
    for conf in report.confusions:
        index = np.flatnonzero((labels == conf.true) & (report.pred == conf.pred))
        assert index.tolist() == conf.index.tolist() and len(index) == conf.count
        contrast = hirescam_by_hand(model, x[index], (weights[conf.pred] - weights[conf.true]).expand(len(index), -1))
        np.testing.assert_allclose(conf.contrast_map, contrast.mean(0), atol=1e-5)
        own = hirescam_by_hand(model, x[index], weights[conf.pred].expand(len(index), -1))
        np.testing.assert_allclose(conf.mean_map, own.mean(0), atol=1e-5)
        assert not np.allclose(conf.contrast_map, conf.mean_map, atol=1e-3)
    # and the true-class maps are the maps of each face's own logit
    np.testing.assert_allclose(report.maps_true, hirescam_by_hand(model, x, weights[labels]), atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# The script


def run(argv):
    return run_main(classmaps_FER.main, classmaps_FER.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("demo") / "demo", n_train_per_class=0, n_test_per_class=2)


def test_script_writes_every_table_and_figure(random_checkpoint, demo_split, tmp_path, capsys):
    out = tmp_path / "out"
    code = run(["--checkpoint", random_checkpoint, "--split", demo_split / "test", "--out", out, "--bootstrap", 20,
                "--shuffles", 5, "--batch-size", 14, "--confusions", 2, "--disputes-shown", 1, "--structure-faces", 1,
                "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "class structure, randomised model" in printed.out and f"wrote {out / 'summary.md'}" in printed.out
    for name in ("class_maps.png", "class_maps_true.png", "class_maps_predicted.png", "class_maps_randomised.png",
                 "face_regions.png", "region_shares.png", "confusions.png", "class_maps.npz", "summary.md",
                 "run.json", "class_counts.csv", "region_shares.csv", "facs_agreement.csv", "class_structure.csv",
                 "confusions.csv", "disputes.csv", "disputes_per_class.csv", "layout_check.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with Image.open(out / "class_maps.png") as img:
        assert img.width > 800
    counts = read_csv(out / "class_counts.csv")
    assert [r["class"] for r in counts] == list(CLASS_NAMES) and {r["n_true"] for r in counts} == {"2"}
    shares = read_csv(out / "region_shares.csv")
    assert {r["grouping"] for r in shares} == {"true", "predicted", "randomised"}
    for grouping in ("true", "randomised"):
        for name in CLASS_NAMES:
            rows = [r for r in shares if r["grouping"] == grouping and r["class"] == name]
            assert [r["region"] for r in rows] == ["brows", "eyes", "mouth", "other"]
            assert sum(float(r["share_pct"]) for r in rows) == pytest.approx(100, abs=0.01)
    structure = read_csv(out / "class_structure.csv")
    assert [(r["model"], r["faces"]) for r in structure] == [("trained", "14"), ("randomised", "14"),
                                                             ("trained", "7"), ("randomised", "7")]
    assert len(read_csv(out / "confusions.csv")) <= 2
    disputes = read_csv(out / "disputes.csv")
    assert sum(int(r["disputed"]) for r in read_csv(out / "disputes_per_class.csv")) == len(disputes)
    drawn = sorted(p.name for p in (out / "disputes").glob("*.png")) if disputes else []
    assert drawn == sorted({f"{r['label']}.png" for r in disputes})  # single faces only under disputes/
    summary = (out / "summary.md").read_text()
    for heading in ("## Class structure", "## Regions against FACS", "## Confusions", "## Labels the model disputes"):
        assert heading in summary
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["faces"] == 14 and run_json["command"].startswith("python classmaps_FER.py --checkpoint")
    arrays = np.load(out / "class_maps.npz")
    assert arrays["class_maps_true"].shape == (7, 48, 48) and np.isnan(arrays["mean_faces_true"]).all()  # 2 faces


@pytest.fixture(scope="module")
def bad_splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    face = np.full((48, 48), 120, np.uint8)
    (root / "flat").mkdir()
    Image.fromarray(face).save(root / "flat" / "a.png")  # images but no class folders
    for name in FER2013_CLASSES:
        for split in ("empty_class", "fewer_classes", "extra_class"):
            (root / split / name).mkdir(parents=True)
            if not (split == "empty_class" and name == "fear"):
                Image.fromarray(face).save(root / split / name / "a.png")
    for name in ("contempt",):
        (root / "extra_class" / name).mkdir()
        Image.fromarray(face).save(root / "extra_class" / name / "a.png")
    for path in (root / "fewer_classes" / "disgust").iterdir():
        path.unlink()
    (root / "fewer_classes" / "disgust").rmdir()
    return root


@pytest.mark.parametrize("argv, message", [
    (["--split", "{bad}/flat"], "no class sub-folders"),
    (["--split", "{bad}/empty_class"], "fear has no faces"),
    (["--split", "{bad}/fewer_classes"], "only the model has: disgust"),
    (["--split", "{bad}/extra_class"], "only the split has: contempt"),
    (["--split", "{bad}/missing"], "does not exist"),
    (["--method", "bogus"], "--method: unknown method 'bogus'"),
    (["--method", "eigencam"], "have no class"),
    (["--layer", "layer9"], "--layer: unknown layer"),
    (["--checkpoint", "{bad}/missing.pt"], "--checkpoint"),
])
def test_bad_input_is_one_line_exit_2(random_checkpoint, demo_split, bad_splits, tmp_path, capsys, argv, message):
    argv = [a.format(bad=bad_splits) for a in argv]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(random_checkpoint)]
    if "--split" not in argv:
        argv += ["--split", str(demo_split / "test")]
    assert run(argv + ["--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert not any("Traceback" in line for line in err) and not (tmp_path / "out" / "summary.md").exists()


# ---------------------------------------------------------------------------------------------------
# Defaults and the committed results


def test_defaults_are_the_reports_trusted_map():
    args = classmaps_FER.get_args_parser().parse_args([])
    assert (args.method, args.layer, args.tta_maps) == (DEFAULT_CAM_METHOD, DEFAULT_CAM_LAYER, SHIPPED_MAP_TTA)
    assert args.checkpoint.endswith("models/shipped/resnet34_fer2013_cpu.pt") and args.split == "data/fer2013/test"


def test_default_tta_is_what_the_shipped_report_found_best():
    """SHIPPED_MAP_TTA is a view-averaged variant only where the committed report scores it trusted and
    with a lower deletion AUC than the single view of the same map."""
    rows = read_csv(ROOT / "results" / "shipped_fer2013_publictest" / "explanations_report.csv")
    plain = next(r for r in rows if r["method"] == DEFAULT_CAM_METHOD and r["layer"] == DEFAULT_CAM_LAYER)
    better = [(float(r["deletion_auc"]), r["method"].split("@", 1)[1]) for r in rows
              if r["method"].startswith(DEFAULT_CAM_METHOD + "@") and r["layer"] == DEFAULT_CAM_LAYER
              and r["trusted"] == "yes" and float(r["deletion_auc"]) < float(plain["deletion_auc"])]
    assert SHIPPED_MAP_TTA == (min(better)[1] if better else "none")


def test_committed_results_are_the_shipped_model_on_publictest():
    folder = ROOT / "results" / "shipped_fer2013_publictest" / "class_maps"
    counts = {r["class"]: int(r["n_true"]) for r in read_csv(folder / "class_counts.csv")}
    assert counts == {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607, "sad": 653,
                      "surprise": 415}
    correct = sum(int(r["n_correct"]) for r in read_csv(folder / "class_counts.csv"))
    assert correct / 3589 == pytest.approx(0.634, abs=0.001)  # the shipped model's PublicTest accuracy
    structure = {(r["model"], r["explained_class"]): float(r["excess"])
                 for r in read_csv(folder / "class_structure.csv")}
    assert len(structure) == 4
    assert not list(folder.glob("disputes*.png")) and not (folder / "disputes.csv").exists()  # no single faces

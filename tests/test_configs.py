"""The libraries' frozen configs: built in Python, with no parser, they run prediction, the figure grids
and the explanation report; the scripts' flags resolve to the same defaults; bad values are refused."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import attentionMap_FER
import evaluate_explanations
import gradcam_FER
import predict_FER
from expression.apps.configs import figure_config, predict_config, report_config
from expression.core.checkpoint import load_model
from expression.core.errors import InputError
from expression.core.preprocessing import Preprocessing, load_pil
from expression.demo.synthetic import write_image_folder
from expression.inference.classifier import Classifier
from expression.inference.faces import FaceDetector
from expression.inference.outputs import RecordWriter
from expression.inference.pipeline import PredictConfig, Predictor, Stats, process_all
from expression.inference.sources import OutputNames, find_sources
from expression.reports.explain_figures import Batch, FigureConfig, draw_grids, prepare, run_batches
from expression.reports.explanation_report import ReportConfig, write_report
from gradcam import attention_maps
from gradcam.evaluation import score_explanations

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One drawn test face per class, in class folders (true labels)."""
    return write_image_folder(tmp_path_factory.mktemp("configs") / "demo", n_train_per_class=0,
                              n_test_per_class=1, seed=0)


class CountingClassifier:
    """The classifier, recording how many faces each call gets."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []
        self.class_names, self.tta = inner.class_names, inner.tta

    def __call__(self, crops):
        self.batches.append(len(crops))
        return self.inner(crops)


def test_predict_config_drives_the_pipeline(random_checkpoint, demo, tmp_path):
    model, ckpt = load_model(random_checkpoint, "cpu")
    classifier = CountingClassifier(Classifier(model, ckpt, torch.device("cpu"), tta="none"))
    config = PredictConfig(batch_size=3, annotate=False)
    out = tmp_path / "out"
    out.mkdir()
    sources, missing = find_sources([str(demo / "test")], out)
    stats, notes = Stats(), []
    with RecordWriter(out / "predictions.jsonl", "jsonl", classifier.class_names) as writer:
        predictor = Predictor(config, FaceDetector("none"), classifier, writer, out, stats, notes.append)
        process_all(predictor, sources, OutputNames(), progress=False)
    assert not missing and not notes
    assert classifier.batches == [3, 3, 1]  # batches of config.batch_size faces across the 7 files
    assert stats.images == stats.faces == stats.labelled == 7
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 7 and all(r["annotated"] is None for r in records)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl"]  # annotate=False: no copies
    assert config == PredictConfig(batch_size=3, annotate=False)


def test_figure_config_makes_grids(random_checkpoint, demo, tmp_path):
    config = FigureConfig(checkpoint=random_checkpoint, images=(str(demo / "test"),), layers=("layer4",), limit=3,
                          rows_per_file=2, out=tmp_path / "grids", device="cpu", quiet=True)
    session = prepare(config)
    assert len(session.files) == 3 and session.out_dir == tmp_path / "grids" and not session.progress

    def compute(images, index):
        att = attention_maps(session.model, images, layers=config.layers)
        return Batch({f"attention/{k}": v for k, v in att.maps.items()}, att.probs, att.feature_sizes)

    result = run_batches(compute, session, config.batch_size, "attention")
    assert result.maps["attention/layer4"].shape == (3, 48, 48)
    paths = draw_grids(session, result, [("attention/layer4", "layer4")], config, "grid")
    assert [p.name for p in paths] == ["grid_001.png", "grid_002.png"]  # 3 rows, 2 per file
    assert all(p.stat().st_size > 0 for p in paths)


def test_report_config_is_what_the_report_states(random_checkpoint, demo, tmp_path):
    model, ckpt = load_model(random_checkpoint, "cpu")
    prep = Preprocessing.from_checkpoint(ckpt)
    files = sorted((demo / "test").rglob("*.png"))[:2]
    config = ReportConfig(layers=("layer4",), baseline="mean", steps=2, sanity=False)
    no_masks = np.zeros(2, bool)
    scores = score_explanations(model, prep.to_tensor([load_pil(f) for f in files]), [-1, -1],
                                methods=("gradcam",), layers=config.layers, mean=prep.mean, std=prep.std,
                                has_mask=no_masks, baseline=config.baseline, steps=config.steps,
                                sanity=config.sanity)
    paths, table = write_report(tmp_path, config, random_checkpoint, ["two demo faces"], scores, None, no_masks,
                                None, list(ckpt["class_names"]), prep.img_size)
    assert [p.name for p in paths] == ["explanations_report.csv", "explanations_report.md",
                                       "deletion_insertion.png"]  # sanity off: no randomisation files
    text = (tmp_path / "explanations_report.md").read_text()
    assert "2 images (two demo faces), target: predicted; deletion/insertion baseline: mean, 2 steps." in text
    assert "| gradcam | layer4 |" in table
    assert not (tmp_path / "args.json").exists()  # the script's record of its flags, not the library's


@pytest.mark.parametrize("script, resolve, config", [
    (predict_FER, predict_config, PredictConfig()),
    (gradcam_FER, figure_config, FigureConfig()),
    (attentionMap_FER, figure_config, FigureConfig()),
    (evaluate_explanations, report_config, ReportConfig()),
])
def test_flag_defaults_are_the_config_defaults(script, resolve, config):
    assert resolve(script.get_args_parser().parse_args([])) == config


@pytest.mark.parametrize("make, option", [
    (lambda: PredictConfig(batch_size=0), "batch_size"),
    (lambda: PredictConfig(every=0), "every"),
    (lambda: PredictConfig(margin=float("nan")), "margin"),
    (lambda: PredictConfig(margin=2.5), "margin"),
    (lambda: FigureConfig(limit=-1), "limit"),
    (lambda: FigureConfig(rows_per_file=0), "rows_per_file"),
])
def test_bad_values_are_refused_with_the_field_named(make, option):
    with pytest.raises(InputError) as err:
        make()
    assert err.value.option == option


@pytest.mark.parametrize("config", [PredictConfig(), FigureConfig(), ReportConfig()])
def test_configs_are_frozen(config):
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.layers = ()  # any field: no library can change a run's settings under its caller

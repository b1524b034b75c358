"""The package installed non-editable (as `pip install .` on a user's machine would), used from a folder
that is not the clone: the shipped model is found, the console commands and `python -m expression` run,
and FacePredictor takes a path. Offline: the wheel is built with this environment's setuptools."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """-> (target folder the package is installed into, environment that puts it first on sys.path)."""
    pytest.importorskip("setuptools")
    base = tmp_path_factory.mktemp("install")
    source = base / "source"  # a copy, so the build leaves no build/ folder in the clone
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *(p.name for p in ROOT.glob("*.py"))):
        shutil.copy2(ROOT / name, source / name)
    for package in ("expression", "gradcam"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyi"))
    (source / "models" / "shipped").mkdir(parents=True)
    for file in (ROOT / "models" / "shipped").iterdir():
        os.symlink(file, source / "models" / "shipped" / file.name)  # read, not copied, by the build
    target = base / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    env.pop("EXPRESSION_SHIPPED_MODEL", None)
    return target, env


def test_the_wheel_carries_the_shipped_model_and_the_scripts(installed):
    target, _ = installed
    shipped = target / "share" / "expression-deciphered" / "models" / "shipped" / "resnet34_fer2013_cpu.pt"
    assert shipped.read_bytes() == (ROOT / "models" / "shipped" / "resnet34_fer2013_cpu.pt").read_bytes()
    assert (target / "expression_scripts" / "predict_FER.py").is_file()
    assert not (target / "export.py").exists() and not (target / "evaluate.py").exists()  # no top-level names
    assert (target / "bin" / "expression-predict").is_file()


def test_installed_command_predicts_outside_the_clone(installed, tmp_path):
    target, env = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    face = np.full((48, 48), 120, np.uint8)
    face[14:20, 12:20] = face[14:20, 28:36] = 30  # eyes
    face[32:36, 16:32] = 60  # mouth
    Image.fromarray(face).save(elsewhere / "face.png")
    done = subprocess.run([sys.executable, str(target / "bin" / "expression-predict"), "face.png",
                           "--detector", "none", "--out", "out", "--quiet"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"model: {target}" in done.stderr and "the shipped FER2013 model" in done.stderr
    record = json.loads((elsewhere / "out" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["label"] in record["probabilities"] and len(record["probabilities"]) == 7
    api = ("import expression, numpy as np; from expression.inference import FacePredictor; "
           "p = FacePredictor.from_checkpoint('models/shipped/resnet34_fer2013_cpu.pt', detector='none'); "
           "a = p.predict('face.png')[0]['probabilities']; b = p.predict(np.asarray("
           "__import__('PIL.Image').Image.open('face.png'), dtype=np.float32) / 255)[0]['probabilities']; "
           "print(expression.__file__, max(abs(a[k] - b[k]) for k in a), a == " + json.dumps(record["probabilities"])
           + ")")
    done = subprocess.run([sys.executable, "-c", api], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    where, difference, same = done.stdout.split()
    assert Path(where).is_relative_to(target) and float(difference) < 1e-6 and same == "True"


def test_python_m_expression_lists_and_runs_commands(installed, tmp_path):
    target, env = installed
    done = subprocess.run([sys.executable, "-m", "expression", "import-seed", str(tmp_path / "missing.pth")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: no file at") and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "expression", "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "predict" in done.stdout and "train" in done.stdout

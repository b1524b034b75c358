"""The map predict_FER.py --cam (and the browser app) shows by default, and every explain method and
'fused' through the prediction pipeline."""
import numpy as np
import pytest

from expression.core import cam_policy
from expression.core.checkpoint import load_model
from expression.inference import classifier as prediction
from gradcam import METHODS, explain

pytestmark = pytest.mark.usefixtures("single_thread")


def test_default_pair_is_selectable_and_trusted():
    assert cam_policy.CAMS == ("none",) + METHODS
    assert cam_policy.DEFAULT_CAM_METHOD in cam_policy.CAMS
    assert (cam_policy.DEFAULT_CAM_METHOD, cam_policy.DEFAULT_CAM_LAYER) in cam_policy.TRUSTED_MAPS[48]


@pytest.mark.parametrize("cam, layer, key", [
    (cam_policy.DEFAULT_CAM_METHOD, cam_policy.DEFAULT_CAM_LAYER,
     f"{cam_policy.DEFAULT_CAM_METHOD}/{cam_policy.DEFAULT_CAM_LAYER}"),
    ("gradcampp", "fused", "gradcampp/fused"),
    ("fullgrad", "layer3", "fullgrad/input"),
    ("eigencam", "layer2", "eigencam/layer2"),
])
def test_classifier_shows_the_explain_map(random_checkpoint, cam, layer, key):
    model, ckpt = load_model(random_checkpoint, "cpu")
    clf = prediction.Classifier(model, ckpt, "cpu", cam, layer)
    crops = [np.random.default_rng(i).integers(0, 255, (60, 50, 3), dtype=np.uint8) for i in range(2)]
    probs, heats = clf(crops)
    x = clf.prep.to_tensor(crops)
    layers = prediction.FUSED_LAYERS if layer == "fused" else (layer,)
    ref = explain(model, x, layers=layers, methods=(cam,), fuse=layer == "fused").maps[key].numpy()
    np.testing.assert_allclose(heats, ref, atol=1e-5)
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1)


def test_bad_layer_names_the_choices(random_checkpoint):
    model, ckpt = load_model(random_checkpoint, "cpu")
    with pytest.raises(ValueError, match="layer1, layer2, layer3, layer4.*fused"):
        prediction.Classifier(model, ckpt, "cpu", "gradcam", "layer9")

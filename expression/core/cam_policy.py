"""Which explanation maps to show and to trust: the measured policy every layer reads.

The default map (method and layer), the maps the explanation report found faithful at 48 px, and the
ones it trusts on the shipped model (checked against the committed report in
results/shipped_fer2013_publictest/ by tests/test_shipped_model.py).
"""
from __future__ import annotations

from gradcam.methods import METHODS

# Any gradcam.explain method ("none" = no map). Score-CAM and Ablation-CAM cost one forward pass per
# channel and face (a few seconds a face on a CPU at layer4); the others one pass or two.
CAMS = ("none",) + METHODS
# The map --cam shows by default (and the browser app imports): chosen on evaluate_explanations.py's
# demo-face table (docs/explanations.md, "Which map to trust at 48 px"). At 48 px layer3 (3x3) and layer4 (2x2) maps
# point at the evidence less often than a centred blob; the 12x12 layer1 maps localise. LayerCAM and
# Grad-CAM++ point best there but fail the randomisation check (their maps barely change when fc is
# re-initialised: they show the image, not the class); HiResCAM at layer1 beats both baselines on
# pointing and deletion and its maps decorrelate (rho about 0) once the model is randomised.
DEFAULT_CAM_METHOD = "hirescam"
DEFAULT_CAM_LAYER = "layer1"
# (method, layer) maps the report found faithful (beating the random and centre baselines on pointing
# and deletion) and passing the randomisation check, per input size: gradcam_FER.py ticks them.
TRUSTED_MAPS = {48: (("hirescam", "layer1"), ("xgradcam", "layer1"), ("xgradcam", "layer2"),
                     ("gradcam", "layer2"), ("hirescam", "layer2"))}
# The maps the report trusts on the shipped model itself (its report is committed in
# results/shipped_fer2013_publictest/, which tests/test_shipped_model.py checks this set against): the app
# ticks these, the ones a user of the shipped model can rely on.
SHIPPED_TRUSTED_MAPS = frozenset({("hirescam", "layer1")})
# Whether the default map is better averaged over the classifier's test-time-augmentation views
# ("flip", "tencrop") on the shipped model: only where its committed report scores a trusted
# hirescam@<mode> at layer1 with a lower deletion AUC than the single view. That report has no such row
# (it was run without --tta-maps), so the single view stays: "none". classmaps_FER.py defaults to it;
# tests/test_class_maps.py checks it against the report.
SHIPPED_MAP_TTA = "none"

"""Score-CAM (Wang et al. 2020): channel weights from forward passes on masked inputs, no gradients.

For each image n and channel k of the layer: upsample A^k to the input size, min-max normalise it
to a mask H^k in [0, 1], and score the masked image X (.) H^k. Algorithm 1 of the paper (and the
authors' code) takes S_k = softmax over classes of f(X (.) H^k) and w_k = S_k[target]; the map is
ReLU(sum_k w_k A^k). The paper's optional baseline term f(X_b) is not subtracted (the authors'
code does not either).

pytorch-grad-cam 1.5 differs in three ways; ``ScoreCAM(variant="pytorch-grad-cam")`` reproduces
them (the tests use it to check the rest of the pipeline against that library):

* the score is the raw target logit, and the weights are a softmax of those logits over the K
  channels instead of a softmax over classes;
* the masks are upsampled with ``UpsamplingBilinear2d``, i.e. align_corners=True;
* (same in both) mask normalisation (M - min) / (max - min + 1e-8).

A ``Contrast`` target (B rather than A) replaces the score each variant reads for the target by the
same score of B minus that of A: softmax[B] - softmax[A] of the masked image ("how much more probable B
than A from this channel's region alone") for the paper, logit[B] - logit[A] before the softmax over
channels for the pytorch-grad-cam variant.

All N*K masked images are scored in chunks of ``batch_size``; a chunk is built only when it is
run, so memory stays at batch_size images whatever N and K are.

Example::

    from gradcam import explain
    res = explain(model, images, layers=("layer4",), methods=("scorecam",), scorecam_batch_size=128)
"""
import torch

from .base import BaseCAM, normalize_per_image, resize_maps, target_scores

MASK_EPS = 1e-8
VARIANTS = ("paper", "pytorch-grad-cam")


class ScoreCAM(BaseCAM):
    name = "scorecam"
    uses_gradients = False

    def __init__(self, batch_size: int = 64, variant: str = "paper"):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown Score-CAM variant {variant!r}; valid: {', '.join(VARIANTS)}")
        self.batch_size = batch_size
        self.variant = variant

    def weights(self, activations, grads=None):
        ctx = self.context
        if ctx is None:
            raise RuntimeError("ScoreCAM.weights needs the pass context; call it through BaseCAM.run")
        images, model = ctx.images, ctx.model
        n, k = activations.shape[:2]
        size = tuple(images.shape[-2:])
        flat = activations.flatten(0, 1)                          # (n*k, h, w), image-major
        image_of = torch.arange(n, device=images.device).repeat_interleave(k)
        if self.variant == "paper":
            mode, align = ctx.upsample, None
        else:
            mode, align = "bilinear", True
        scores = torch.empty(n * k, device=activations.device, dtype=torch.float32)
        with torch.no_grad():
            for start in range(0, n * k, self.batch_size):
                stop = min(start + self.batch_size, n * k)
                idx = image_of[start:stop]
                # Score-CAM Algorithm 1, Wang et al. 2020: H^k = s(Up(A^k)), s = min-max to [0, 1]
                masks = normalize_per_image(resize_maps(flat[start:stop], size, mode, align), MASK_EPS)
                logits = model(images[idx] * masks[:, None].to(images.dtype)).float()
                target = ctx.targets[idx]
                foil = None if ctx.foils is None else ctx.foils[idx]
                if self.variant == "paper":
                    # S_k = softmax(f(X (.) H^k)), w_k = S_k[target] (minus S_k[foil] for a contrast)
                    scores[start:stop] = target_scores(torch.softmax(logits, dim=1), target, foil)
                else:
                    scores[start:stop] = target_scores(logits, target, foil)
        scores = scores.view(n, k)
        return scores if self.variant == "paper" else torch.softmax(scores, dim=1)

"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): channel weights from the drop in the target score when
the channel is zeroed, no gradients.

For image n and channel k of the layer: re-run the network with A^k set to 0 at that layer and read the
raw target logit y^k; the weight is the relative drop w_k = (y - y^k) / y and the
map ReLU(sum_k w_k A^k). The re-run replaces the layer's output with the activations recorded in the
main pass (channel k zeroed) through a forward hook, as pytorch-grad-cam's AblationLayer does; it
ablates by zeroing, which is also what that library does whenever the layer's minimum is 0 (every
ResNet stage ends in a ReLU).

Cost: one extra forward pass per channel and image (64 / 128 / 256 / 512 for ResNet34's layer1..4),
run without gradients in chunks of ``batch_size``. The layers before the ablated one are recomputed
each time (a hook cannot skip them for an arbitrary graph), so an ablation pass costs a whole forward.

A ``Contrast`` target (B rather than A) scores y = logit[B] - logit[A] and weighs each channel by the
absolute drop w_k = y - y^k, not the relative one: a contrast's y is often near 0 or negative (the
model may well prefer A), and dividing by a negative y would flip every weight's sign. Dividing by a
positive y only scales the map, which the normalisation undoes: for y > 0 the normalised maps agree.

Example::

    from gradcam import explain
    res = explain(model, images, layers=("layer3",), methods=("ablationcam",))
"""
import torch

from .base import BaseCAM, target_scores


class AblationCAM(BaseCAM):
    name = "ablationcam"
    uses_gradients = False

    def __init__(self, batch_size: int = 64):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def weights(self, activations, grads=None):
        ctx = self.context
        if ctx is None or ctx.module is None:
            raise RuntimeError("AblationCAM.weights needs the pass context; call it through BaseCAM.run")
        model, images, module = ctx.model, ctx.images, ctx.module
        n, k = activations.shape[:2]
        recorded = activations.to(images.dtype)
        image_of = torch.arange(n, device=images.device).repeat_interleave(k)   # image-major pairs
        channel_of = torch.arange(k, device=images.device).repeat(n)
        ablated = torch.empty(n * k, dtype=ctx.logits.dtype, device=ctx.logits.device)
        chunk = {}

        def replace_output(mod, inputs, output):
            return chunk["acts"]

        handle = module.register_forward_hook(replace_output)
        try:
            with torch.no_grad():
                for start in range(0, n * k, self.batch_size):
                    stop = min(start + self.batch_size, n * k)
                    idx, ch = image_of[start:stop], channel_of[start:stop]
                    acts = recorded[idx].clone()
                    acts[torch.arange(stop - start, device=acts.device), ch] = 0
                    chunk["acts"] = acts
                    logits = model(images[idx])
                    foil = None if ctx.foils is None else ctx.foils[idx]
                    ablated[start:stop] = target_scores(logits, ctx.targets[idx], foil).to(ablated.dtype)
        finally:
            handle.remove()
            chunk.clear()
        original = target_scores(ctx.logits, ctx.targets, ctx.foils).to(ablated.dtype)
        scale = original
        if ctx.foils is not None:  # a contrast's weight is its absolute drop (module docstring)
            scale = torch.where(ctx.foils >= 0, torch.ones_like(original), original)
        # Ablation-CAM weight, Desai & Ramaswamy 2020: w_k = (y_c - y_c^k) / y_c
        return ((original[:, None] - ablated.view(n, k)) / scale[:, None]).to(activations.dtype)

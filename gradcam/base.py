"""Shared machinery of the CAM methods: hooks, the single forward/backward pass, resizing, normalisation.

A method only says how to turn a layer's activations ``A`` (N,K,h,w) and the gradients ``G`` of
the target logits with respect to them into channel weights (``BaseCAM.weights``) or directly
into a map (``BaseCAM.cam``). Everything else lives here once:

* ``LayerHooks`` - a context manager that puts the model in eval mode, records the output of every
  requested layer with a forward hook and its gradient with ``Tensor.register_hook``, and on exit
  (also after an exception) removes every hook and restores each module's train/eval flag.
* ``BaseCAM.run`` - one forward pass and one backward pass for any number of layers and methods,
  then ReLU, per-image min-max normalisation and upsampling to the input size.

Post-processing, chosen to agree with pytorch-grad-cam 1.5 to float32 round-off (its
``BaseCAM.compute_cam_per_layer`` then ``aggregate_multi_layers``, both through
``utils.image.scale_cam_image``; for one target layer the aggregation is the identity):

    raw  = ReLU(cam)                                    # feature resolution, kept as ``raw_maps``
    m    = (raw - min) / (max(raw - min) + 1e-7)        # per image, at feature resolution
    m    = upsample(m, input size)                      # bilinear, align_corners=False by default
    map  = (m - min) / (max(m - min) + 1e-7)            # per image again, at input resolution

The second normalisation is needed because bilinear upsampling of an interior peak does not hit
the peak value exactly, so without it a map's maximum would be a little below 1. The epsilon
keeps an all-zero map (e.g. every weighted channel negative before the ReLU) at zero, not NaN.
``align_corners=False`` (half-pixel centres) is what ``cv2.resize(..., INTER_LINEAR)`` does, the
resize pytorch-grad-cam uses, and what ``torchvision`` uses for images.

Example::

    from gradcam.base import LayerHooks
    with LayerHooks(model, ["layer4"]) as hooks:   # model in eval mode inside
        logits = hooks(images)                     # one forward pass, activations recorded
    hooks.activations["layer4"].shape              # (N, 512, 2, 2) for 48 px input
"""
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

# Same epsilon as pytorch-grad-cam's scale_cam_image, so that normalised maps agree to round-off.
NORM_EPS = 1e-7
# Interpolation modes accepted for upsampling maps to the input size. Bilinear and bicubic use
# align_corners=False (half-pixel centres, like cv2.resize and torchvision); bicubic may overshoot,
# which the final min-max normalisation folds back into [0, 1].
UPSAMPLE_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact")

LayerSpec = Union[str, Sequence[str]]
TargetSpec = Union[None, int, str, Sequence[Union[int, str]], torch.Tensor]


def normalize_per_image(maps: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """Min-max normalise each map of a (N,h,w) batch to [0, 1]; an all-zero map stays all zero.

    The min is subtracted first and the max of the shifted map is used, in this order, because
    that is what pytorch-grad-cam does; (x - min) / (max - min + eps) is the same formula.

    >>> normalize_per_image(torch.tensor([[[0., 2.], [4., 4.]], [[0., 0.], [0., 0.]]]))[:, 0]
    tensor([[0.0000, 0.5000],
            [0.0000, 0.0000]])
    """
    shifted = maps - maps.flatten(1).min(dim=1).values[:, None, None]
    return shifted / (shifted.flatten(1).max(dim=1).values[:, None, None] + eps)


def resize_maps(maps: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear",
                align_corners: Optional[bool] = None) -> torch.Tensor:
    """Resize a (N,h,w) batch of maps to ``size`` = (H, W) with ``F.interpolate``.

    ``align_corners`` defaults to False for the modes that take it (bilinear, bicubic).
    """
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample mode {mode!r}; valid: {', '.join(UPSAMPLE_MODES)}")
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if mode in ("bilinear", "bicubic"):
        align_corners = False if align_corners is None else align_corners
    else:
        align_corners = None
    return F.interpolate(maps[:, None], size=tuple(size), mode=mode,
                         align_corners=align_corners)[:, 0]


def to_input_size(raw: torch.Tensor, size: Tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Normalise, upsample to ``size`` and normalise again (the order pytorch-grad-cam uses)."""
    return normalize_per_image(resize_maps(normalize_per_image(raw), size, mode))


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Compute maps in float32, or float64 for a float64 model (half precision would lose the
    small differences that min-max normalisation then magnifies)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _conv_children(model: nn.Module) -> List[str]:
    """Top-level children that contain a convolution: the layers a CAM makes sense for."""
    return [name for name, child in model.named_children()
            if any(isinstance(m, nn.modules.conv._ConvNd) for m in child.modules())]


def resolve_layers(model: nn.Module, layers: LayerSpec) -> Dict[str, nn.Module]:
    """Map dotted layer names ("layer4", "layer4.2.conv2") to modules; ValueError if unknown."""
    if isinstance(layers, str):
        layers = (layers,)
    layers = list(dict.fromkeys(layers))  # drop duplicates, keep order
    if not layers:
        raise ValueError("at least one layer is needed")
    modules = dict(model.named_modules())
    unknown = [name for name in layers if not name or name not in modules]
    if unknown:
        raise ValueError(
            f"unknown layer(s) {unknown}; valid top-level layers: {', '.join(_conv_children(model))} "
            "(any dotted name from model.named_modules() is accepted, e.g. 'layer4.2.conv2')")
    return {name: modules[name] for name in layers}


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def prepare_images(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) or (C,H,W) tensor -> float (N,C,H,W) on the model's device, detached."""
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4:
        raise ValueError(f"images must be (N,C,H,W) or (C,H,W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return images.detach().to(device=model_device(model, images.device), dtype=dtype)


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration (BatchNorm must not see explanation batches), every module's flag
    restored after, also on exceptions."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


class LayerHooks:
    """Record the outputs (and optionally their gradients) of named layers for one forward pass.

    On enter: the model is put in eval mode and one forward hook per layer is registered. The hook
    stores the layer output and, when ``gradients`` is true and the output is part of a graph,
    registers ``Tensor.register_hook`` on it to receive its gradient during the backward pass
    (``Module.register_backward_hook`` is deprecated and wrong for modules with several ops, and
    ``register_full_backward_hook`` breaks on in-place ops after the module). On exit, also after
    an exception: all module and tensor hooks are removed and every module's ``training`` flag is
    restored individually (a model may mix train and eval submodules on purpose).

    ``hooks(x)`` clears the previous records and runs ``model(x)``. A layer that runs twice in one
    forward pass (a shared module) is refused: its CAM would be ambiguous.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec, gradients: bool = True):
        self.model = model
        self.modules = resolve_layers(model, layers)
        self.layers = tuple(self.modules)
        self.want_gradients = gradients
        self.activations: Dict[str, torch.Tensor] = {}
        self.gradients: Dict[str, torch.Tensor] = {}
        self.outputs: Dict[str, torch.Tensor] = {}  # live outputs, the backward-pass inputs
        self._handles: list = []
        self._modes: Optional[list] = None

    def __enter__(self) -> "LayerHooks":
        self._modes = [(m, m.training) for m in self.model.modules()]
        try:
            self.model.eval()
            for name, module in self.modules.items():
                self._handles.append(module.register_forward_hook(partial(self._save, name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        if self._modes is not None:
            for module, training in self._modes:
                module.training = training
            self._modes = None
        self.outputs.clear()
        return False  # never swallow the exception

    def remove(self) -> None:
        """Remove every hook now (idempotent); the model stays in eval mode until exit."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.activations.clear()
        self.gradients.clear()
        self.outputs.clear()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.clear()
        out = self.model(x)
        missing = [name for name in self.layers if name not in self.activations]
        if missing:
            raise ValueError(f"layer(s) {missing} did not run in the forward pass")
        return out

    def _save(self, name: str, module: nn.Module, inputs, output):
        if not torch.is_tensor(output) or output.dim() != 4:
            shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
            raise ValueError(f"layer {name!r} gives {shape}; a CAM needs an (N,C,h,w) feature map")
        if name in self.activations:
            raise RuntimeError(f"layer {name!r} ran twice in one forward pass (shared module); "
                               "pick a layer that runs once")
        self.activations[name] = output.detach()
        if self.want_gradients and output.requires_grad:
            self.outputs[name] = output
            self._handles.append(output.register_hook(partial(self._save_grad, name)))
        # Hand the rest of the network a copy: torchvision's BasicBlock does `out += identity`
        # after bn2 and ReLU(inplace=True) follows bn1, which would overwrite the recorded
        # activation and move the tensor off the graph node the gradient hook is attached to.
        return output.clone()

    def _save_grad(self, name: str, grad: torch.Tensor) -> None:
        self.gradients[name] = grad.detach()


def parse_targets(targets: TargetSpec, n: int,
                  class_names: Optional[Sequence[str]] = None) -> Optional[List[int]]:
    """Targets as given -> list of n class indices (None: use the predicted class).

    Accepts one index or name (used for every image), or a sequence/tensor of n indices or names.
    Names need ``class_names``. A length other than n raises ValueError; nothing is truncated.
    """
    if targets is None:
        return None
    if torch.is_tensor(targets):
        targets = targets.reshape(-1).tolist() if targets.dim() else targets.item()
    if isinstance(targets, (int, str)) or not isinstance(targets, Iterable):
        targets = [targets] * n
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images; give one per image")
    out = []
    for t in targets:
        if isinstance(t, str):
            if class_names is None:
                raise ValueError(f"target {t!r} is a class name but class_names was not given")
            if t not in class_names:
                raise ValueError(f"unknown class name {t!r}; valid: {', '.join(class_names)}")
            out.append(list(class_names).index(t))
        else:
            try:
                out.append(int(t))
            except (TypeError, ValueError):
                raise ValueError(f"target {t!r} is neither a class index nor a class name") from None
    return out


def check_targets(targets: Optional[List[int]], logits: torch.Tensor,
                  class_names: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Range-check parsed targets against the logits, or take the predicted class."""
    num_classes = logits.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class_names for a model with {num_classes} outputs")
    if targets is None:
        return logits.argmax(dim=1)
    bad = [t for t in targets if not 0 <= t < num_classes]
    if bad:
        raise ValueError(f"target class(es) {bad} out of range for {num_classes} classes")
    return torch.tensor(targets, dtype=torch.long, device=logits.device)


@dataclass
class PassContext:
    """What one explain pass knows, for methods that need more than A and G (Score-CAM)."""
    model: nn.Module
    images: torch.Tensor          # (N,C,H,W) on the model's device
    targets: torch.Tensor         # (N,) long
    logits: torch.Tensor          # (N,classes) from the main forward pass
    upsample: str
    layer: str = ""               # the layer being explained (set per layer by BaseCAM.run)
    module: Optional[nn.Module] = None  # its module, for methods that re-run it changed (Ablation-CAM)


@dataclass
class CAMResult:
    """Maps keyed "method/layer"; all tensors on the CPU.

    maps: float32 (N,H,W) in [0,1] at input resolution. raw_maps: (N,h,w) after ReLU, before any
    normalisation, at feature resolution. logits/probs: (N,classes). targets: (N,) explained class.
    feature_sizes: layer -> (h, w).
    """
    maps: Dict[str, torch.Tensor]
    raw_maps: Dict[str, torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor
    feature_sizes: Dict[str, Tuple[int, int]] = field(default_factory=dict)

    def get(self, method: str, layer: str) -> torch.Tensor:
        return self.maps[f"{method}/{layer}"]


class BaseCAM:
    """A class-activation-map method. Subclasses override ``weights`` or, for methods that weigh
    every pixel separately, ``cam``; the ReLU, normalisation and upsampling are done by ``run``.

    ``GradCAM()(model, images, layers=("layer4",))`` explains with one method; ``BaseCAM.run``
    (used by ``gradcam.explain``) shares one forward and one backward pass among several.
    """

    name = "base"
    uses_gradients = True

    def __init__(self):
        self.context: Optional[PassContext] = None

    def weights(self, activations: torch.Tensor, grads: Optional[torch.Tensor]) -> torch.Tensor:
        """(N,K,h,w) activations and gradients -> (N,K) channel weights."""
        raise NotImplementedError(f"{type(self).__name__} must override weights() or cam()")

    def cam(self, activations: torch.Tensor, grads: Optional[torch.Tensor]) -> torch.Tensor:
        """(N,K,h,w) -> (N,h,w) map before the ReLU: sum_k w_k A^k (Grad-CAM eq. 2)."""
        return torch.einsum("nk,nkhw->nhw", self.weights(activations, grads), activations)

    def __call__(self, model: nn.Module, images: torch.Tensor, layers: LayerSpec = ("layer4",),
                 targets: TargetSpec = None, class_names: Optional[Sequence[str]] = None,
                 upsample: str = "bilinear") -> CAMResult:
        return BaseCAM.run(model, images, [self], layers, targets, class_names, upsample)

    @staticmethod
    def run(model: nn.Module, images: torch.Tensor, cams: Sequence["BaseCAM"],
            layers: LayerSpec = ("layer4",), targets: TargetSpec = None,
            class_names: Optional[Sequence[str]] = None, upsample: str = "bilinear") -> CAMResult:
        """Explain ``images`` with every method in ``cams`` at every layer, from one forward pass
        and (if any method uses gradients) one backward pass of sum_i logit_i[target_i]: raw
        logits, like pytorch-grad-cam's ClassifierOutputTarget. In eval mode the images of a
        batch do not interact, so image i's gradients come from its own target only.
        """
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample mode {upsample!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        x = prepare_images(model, images)
        wanted = parse_targets(targets, x.shape[0], class_names)
        need_grad = any(c.uses_gradients for c in cams)
        size = tuple(x.shape[-2:])
        with LayerHooks(model, layers, gradients=need_grad) as hooks:
            with torch.enable_grad() if need_grad else torch.no_grad():
                # Make sure a graph exists even when every parameter is frozen.
                logits = hooks(x.requires_grad_(need_grad))
                if logits.dim() != 2:
                    raise ValueError(f"model output has shape {tuple(logits.shape)}; need (N, classes)")
                target_idx = check_targets(wanted, logits.detach(), class_names)
                if need_grad:
                    score = logits.gather(1, target_idx[:, None]).sum()
                    live = [hooks.outputs.get(name) for name in hooks.layers]
                    if any(t is None for t in live):
                        raise ValueError("a layer output does not require grad; cannot backpropagate")
                    # autograd.grad rather than backward(): the tensor hooks fire all the same,
                    # and the parameters' .grad of the caller's model are left untouched.
                    torch.autograd.grad(score, live, allow_unused=True)
                    missing = [n for n in hooks.layers if n not in hooks.gradients]
                    if missing:
                        raise ValueError(f"layer(s) {missing} do not influence the output")
            logits = logits.detach()
            hooks.remove()  # Score-CAM's extra forward passes must not overwrite the records
            base_ctx = PassContext(model, x.detach(), target_idx, logits, upsample)
            maps, raw_maps, sizes = {}, {}, {}
            with torch.no_grad():
                for layer in hooks.layers:
                    ctx = replace(base_ctx, layer=layer, module=hooks.modules[layer])
                    acts = at_least_float32(hooks.activations[layer])
                    grads = at_least_float32(hooks.gradients[layer]) if need_grad else None
                    sizes[layer] = tuple(acts.shape[-2:])
                    for method in cams:
                        method.context = ctx
                        try:
                            raw = torch.relu(method.cam(acts, grads if method.uses_gradients else None))
                        finally:
                            method.context = None
                        key = f"{method.name}/{layer}"
                        raw_maps[key] = raw
                        maps[key] = to_input_size(raw, size, upsample)
            hooks.clear()
        return CAMResult(
            maps={k: v.float().cpu() for k, v in maps.items()},
            raw_maps={k: v.float().cpu() for k, v in raw_maps.items()},
            logits=logits.float().cpu(),
            probs=torch.softmax(logits.float(), dim=1).cpu(),
            targets=target_idx.cpu(),
            feature_sizes=sizes,
        )

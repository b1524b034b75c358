"""Shared machinery of the CAM methods: hooks, the single forward/backward pass, resizing, normalisation.

A method only says how to turn a layer's activations ``A`` (N,K,h,w) and the gradients ``G`` of
the target logits with respect to them into channel weights (``BaseCAM.weights``) or directly
into a map (``BaseCAM.cam``). Everything else lives here once:

* ``LayerHooks`` - a context manager that puts the model in eval mode, records the output of every
  requested layer with a forward hook and its gradient with ``Tensor.register_hook``, and on exit
  (also after an exception) removes every hook and restores each module's train/eval flag.
* ``BaseCAM.run`` - one forward pass and one backward pass for any number of layers and methods,
  then ReLU, per-image min-max normalisation and upsampling to the input size.
* Targets - a class index or name per image, or a ``Contrast`` ("class B rather than class A"), whose
  score is logit[B] - logit[A] instead of logit[B] (``target_scores``); ``parse_contrast`` reads the
  text form "happy-vs-neutral".

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

    from gradcam import Contrast, GradCAM, parse_contrast
    res = GradCAM()(model, images, targets=parse_contrast("happy-vs-neutral", class_names))
    res.targets, res.foils                         # happy's and neutral's indices for every image
"""
import operator
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
# Separates the two classes of a contrast's text form, "happy-vs-neutral" (no FER class has a dash).
CONTRAST_SEP = "-vs-"
NO_FOIL = -1  # foil index of an image explained with a plain target


@dataclass(frozen=True)
class Contrast:
    """Explain "class ``target`` rather than class ``foil``": the score is logit[target] - logit[foil].

    Accepted wherever one image's target is (alone for every image, or in a per-image list beside plain
    targets). The gradient of the difference is the gradient of ``target`` minus that of ``foil``, so a
    map shows what in the image speaks for ``target`` over ``foil``; evidence shared by both cancels.
    Either class is an index or a name (names need ``class_names`` where the targets are used); the
    text form is read by ``parse_contrast``. The maps of Eigen-CAM and attention maps have no class,
    so a contrast leaves them unchanged.

    >>> Contrast("happy", "neutral")
    Contrast(target='happy', foil='neutral')
    """
    target: Union[int, str]
    foil: Union[int, str]

    def __post_init__(self):
        for name in ("target", "foil"):
            value = getattr(self, name)
            if not isinstance(value, str):
                try:  # numpy and 0-d tensor indices become plain ints; floats are refused
                    object.__setattr__(self, name, operator.index(value))
                except TypeError:
                    raise TypeError(f"contrast {name} {value!r} is neither a class index nor a class name") from None
        if self.target == self.foil:
            raise ValueError(f"contrast of class {self.target!r} with itself: its score is 0 everywhere")


TargetSpec = Union[None, int, str, Contrast, Sequence[Union[int, str, Contrast]], torch.Tensor]


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


def _class_index(value: Union[int, str], class_names: Optional[Sequence[str]], what: str) -> int:
    """A class name (looked up in ``class_names``) or index -> index; ValueError otherwise."""
    if isinstance(value, str):
        if class_names is None:
            raise ValueError(f"{what} {value!r} is a class name but class_names was not given")
        if value not in class_names:
            raise ValueError(f"unknown class name {value!r}; valid: {', '.join(class_names)}")
        return list(class_names).index(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r} is neither a class index nor a class name") from None


def parse_contrast(text: str, class_names: Optional[Sequence[str]] = None) -> Contrast:
    """The text form "TARGET-vs-FOIL" -> ``Contrast`` of class indices.

    Each side is a class name (needs ``class_names``) or a non-negative index, range-checked when
    ``class_names`` is given. ValueError for anything else: no or several "-vs-", an empty side, an
    unknown name, or the same class on both sides.

    >>> parse_contrast("happy-vs-neutral", ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"])
    Contrast(target=3, foil=6)
    >>> parse_contrast("3-vs-4")
    Contrast(target=3, foil=4)
    """
    if not isinstance(text, str):
        raise TypeError(f"a contrast's text form is a str, got {type(text).__name__}")
    sides = [side.strip() for side in text.strip().split(CONTRAST_SEP)]
    if len(sides) != 2 or not all(sides):
        raise ValueError(f"contrast {text!r} is not of the form TARGET{CONTRAST_SEP}FOIL "
                         f"(e.g. 'happy{CONTRAST_SEP}neutral' or '3{CONTRAST_SEP}6')")
    indices = []
    for side in sides:
        index = _class_index(int(side) if side.isascii() and side.isdigit() else side, class_names,
                             "contrast class")
        if class_names is not None and index >= len(class_names):
            raise ValueError(f"class index {index} in {text!r} out of range for {len(class_names)} classes")
        indices.append(index)
    try:
        return Contrast(*indices)
    except ValueError:
        raise ValueError(f"contrast {text!r} names the same class twice: its score is 0 everywhere") from None


def parse_target_pairs(targets: TargetSpec, n: int, class_names: Optional[Sequence[str]] = None
                       ) -> Tuple[Optional[List[int]], Optional[List[int]]]:
    """Targets as given -> (n class indices, n foil indices), the foil ``NO_FOIL`` (-1) for a plain target.

    Accepts one index, name or ``Contrast`` (used for every image), or a sequence/tensor of n of them.
    Names need ``class_names``. A length other than n raises ValueError; nothing is truncated.
    ``targets=None`` gives (None, None): explain the predicted class. The foils are None when no
    image has a contrast.
    """
    if targets is None:
        return None, None
    if torch.is_tensor(targets):
        targets = targets.reshape(-1).tolist() if targets.dim() else targets.item()
    if isinstance(targets, (int, str, Contrast)) or not isinstance(targets, Iterable):
        targets = [targets] * n
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images; give one per image")
    out, foils = [], []
    for t in targets:
        if isinstance(t, Contrast):
            target, foil = _class_index(t.target, class_names, "target"), _class_index(t.foil, class_names, "foil")
            if target == foil:  # Contrast("happy", 3) with happy = 3 passes the dataclass's own check
                raise ValueError(f"{t} contrasts class {target} with itself: its score is 0 everywhere")
            out.append(target)
            foils.append(foil)
        else:
            out.append(_class_index(t, class_names, "target"))
            foils.append(NO_FOIL)
    return out, (foils if any(f != NO_FOIL for f in foils) else None)


def parse_targets(targets: TargetSpec, n: int,
                  class_names: Optional[Sequence[str]] = None) -> Optional[List[int]]:
    """Plain targets as given -> list of n class indices (None: use the predicted class).

    As ``parse_target_pairs`` without contrasts; a ``Contrast`` raises ValueError rather than being
    explained as its target alone.
    """
    out, foils = parse_target_pairs(targets, n, class_names)
    if foils is not None:
        raise ValueError("contrastive targets carry a foil per image; read them with parse_target_pairs")
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


def check_foils(foils: Optional[List[int]], logits: torch.Tensor) -> torch.Tensor:
    """Range-check parsed foils against the logits -> (N,) long, ``NO_FOIL`` where an image has none."""
    if foils is None:
        return torch.full((logits.shape[0],), NO_FOIL, dtype=torch.long, device=logits.device)
    num_classes = logits.shape[1]
    bad = [f for f in foils if f != NO_FOIL and not 0 <= f < num_classes]
    if bad:
        raise ValueError(f"foil class(es) {bad} out of range for {num_classes} classes")
    return torch.tensor(foils, dtype=torch.long, device=logits.device)


def target_scores(scores: torch.Tensor, targets: torch.Tensor, foils: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N,classes) logits (or probabilities) -> (N,) score of each image's target, minus its foil's
    score where it has one (foil >= 0). A plain target's score is exactly scores[target]."""
    score = scores.gather(1, targets[:, None])[:, 0]
    if foils is None:
        return score
    foil_score = scores.gather(1, foils.clamp_min(0)[:, None])[:, 0]
    return score - torch.where(foils >= 0, foil_score, torch.zeros_like(foil_score))


def target_spec(targets: torch.Tensor, foils: Optional[torch.Tensor] = None) -> TargetSpec:
    """Checked (targets, foils) -> a target spec that parses back to them: the targets tensor itself
    when no image has a foil, else a per-image list of ints and ``Contrast``s."""
    if foils is None or not bool((foils >= 0).any()):
        return targets
    return [Contrast(int(t), int(f)) if f >= 0 else int(t) for t, f in zip(targets.tolist(), foils.tolist())]


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
    foils: Optional[torch.Tensor] = None  # (N,) long, NO_FOIL where an image has a plain target


@dataclass
class CAMResult:
    """Maps keyed "method/layer"; all tensors on the CPU.

    maps: float32 (N,H,W) in [0,1] at input resolution. raw_maps: (N,h,w) after ReLU, before any
    normalisation, at feature resolution. logits/probs: (N,classes). targets: (N,) explained class.
    feature_sizes: layer -> (h, w). foils: (N,) the class each image's target was contrasted with
    (``Contrast``), ``NO_FOIL`` (-1) for a plain target; all -1 when not given.
    """
    maps: Dict[str, torch.Tensor]
    raw_maps: Dict[str, torch.Tensor]
    logits: torch.Tensor
    probs: torch.Tensor
    targets: torch.Tensor
    feature_sizes: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    foils: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.foils is None and torch.is_tensor(self.targets):
            self.foils = torch.full_like(self.targets, NO_FOIL)

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
        batch do not interact, so image i's gradients come from its own target only. An image
        whose target is a ``Contrast`` contributes logit_i[target_i] - logit_i[foil_i] instead.
        """
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample mode {upsample!r}; valid: {', '.join(UPSAMPLE_MODES)}")
        x = prepare_images(model, images)
        wanted, wanted_foils = parse_target_pairs(targets, x.shape[0], class_names)
        need_grad = any(c.uses_gradients for c in cams)
        size = tuple(x.shape[-2:])
        with LayerHooks(model, layers, gradients=need_grad) as hooks:
            with torch.enable_grad() if need_grad else torch.no_grad():
                # Make sure a graph exists even when every parameter is frozen.
                logits = hooks(x.requires_grad_(need_grad))
                if logits.dim() != 2:
                    raise ValueError(f"model output has shape {tuple(logits.shape)}; need (N, classes)")
                target_idx = check_targets(wanted, logits.detach(), class_names)
                foil_idx = check_foils(wanted_foils, logits.detach())
                if need_grad:
                    score = target_scores(logits, target_idx, foil_idx).sum()
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
            base_ctx = PassContext(model, x.detach(), target_idx, logits, upsample, foils=foil_idx)
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
            foils=foil_idx.cpu(),
        )

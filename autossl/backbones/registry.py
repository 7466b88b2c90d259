"""Backbone registry: short names for the families we support, and any timm model by name."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from ..core.io import load_state_dict_file
from ..core.registry import BACKBONES, did_you_mean
from .masked_convnext import small_image_stem
from .wide_resnet import WideResNet

# Short names for timm models, registered here where they are defined: name -> (timm name, default
# kwargs). The earlier autoSSL's names are aliases. Any other timm model name works as it is.
for _short, _timm_name, _aliases in (
        ("resnet18", "resnet18", ("resnet",)), ("resnet34", "resnet34", ()), ("resnet50", "resnet50", ()),
        ("vit_tiny", "vit_tiny_patch16_224", ()), ("vit_small", "vit_small_patch16_224", ("vit",)),
        ("vit_base", "vit_base_patch16_224", ()), ("swin_tiny", "swin_tiny_patch4_window7_224", ("swin",)),
        ("convnext_atto", "convnext_atto", ()), ("convnext_tiny", "convnext_tiny", ("convnext",)),
        ("convnextv2_atto", "convnextv2_atto", ("convnextv2",)), ("convnextv2_tiny", "convnextv2_tiny", ())):
    BACKBONES.register(_short, (_timm_name, {}), aliases=_aliases, info=f"timm {_timm_name}")
SMALL_IMAGE = 64  # at or below this size ResNets get the CIFAR stem and ViTs a smaller patch

# What a file (safetensors metadata, a checkpoint's hyper-parameters) may ask `create_backbone` for: the
# architecture, never where weights come from (`pretrained`, `checkpoint_path`, `pretrained_cfg_overlay`
# would make loading a file read or download another one) nor code to resolve (`act_layer`, `norm_layer`).
SPEC_KEYS = {"name", "image_size", "in_chans", "cifar_stem", "patch_size"}
ARCHITECTURE_KWARGS = {"depth", "depths", "dims", "embed_dim", "num_heads", "mlp_ratio", "window_size", "drop_rate",
                       "drop_path_rate", "qkv_bias", "class_token", "global_pool", "reg_tokens", "no_embed_class",
                       "zero_init_last", "use_grn", "ls_init_value", "stem_type", "output_stride", "img_size"}


def checked_spec(spec: dict, source: str) -> dict:
    """`spec` if every key is an architecture setting with a plain value; one-line refusal otherwise."""
    def plain(v: Any) -> bool:
        return v is None or isinstance(v, (bool, int, float, str)) or (
            isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float)) for x in v))

    for key, value in spec.items():
        if key not in SPEC_KEYS | ARCHITECTURE_KWARGS or not plain(value):
            raise ValueError(f"refusing {source}: its backbone spec sets '{key}', which is not an architecture "
                             f"setting autossl accepts from a file")
    return spec


class Backbone(nn.Module):
    """A feature extractor: images [B, C, H, W] -> features [B, num_features]. No classifier.

    `spec` holds the name and arguments that rebuild it (saved with exported weights).
    """

    def __init__(self, model: nn.Module, num_features: int, spec: dict[str, Any]):
        super().__init__()
        self.model = model
        self.num_features = num_features
        self.spec = spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def available_backbones() -> list[str]:
    return BACKBONES.names()


def resolve_name(name: str) -> str:
    """A registered short name (aliases resolved), or a timm model name; one-line error otherwise."""
    if name in BACKBONES:
        return BACKBONES.canonical(name)
    if timm.is_model(name):
        return name
    raise ValueError(f"unknown backbone '{name}'{did_you_mean(name, BACKBONES.names() + timm.list_models())} "
                     f"(autossl list backbones shows the choices; any timm model name works)")


FIXED_SIZE_PREFIXES = ("vit_", "deit", "swin", "eva", "beit")  # transformers: position grids built for one size


def _entry(key: str) -> Any:
    """A resolved name's registry entry: (timm name, defaults) or a WideResNet spec; any other timm name as itself."""
    return BACKBONES.get(key) if key in BACKBONES else (key, {})


def is_fixed_size(name: str) -> bool:
    """Whether the backbone takes only the image size it was built for (ViT, Swin, ...), unlike a CNN."""
    entry = _entry(resolve_name(name))
    return isinstance(entry, tuple) and str(entry[0]).startswith(FIXED_SIZE_PREFIXES)


def create_backbone(name: str = "resnet18", *, image_size: int = 224, in_chans: int = 3,
                    pretrained: bool | str | Path = False, cifar_stem: bool | None = None,
                    patch_size: int | None = None, **kwargs: Any) -> Backbone:
    """Build a backbone without classifier.

    - ResNets get the CIFAR stem (3x3 conv, stride 1, no max-pool) automatically when
      `image_size <= 64`, or when `cifar_stem=True`; ConvNeXts get a stride-1 patchify stem (total
      stride 8 instead of 32, same weight shapes) under the same rule.
    - ViTs take `patch_size` (default 16, or 4 for small images) and `image_size`.
    - `pretrained=True` loads timm's published weights; a path loads a local file through timm's
      own loader (`pretrained_cfg_overlay=dict(file=...)`).
    """
    key = resolve_name(name)
    spec = {"name": key, "image_size": image_size, "in_chans": in_chans, **kwargs}
    entry = _entry(key)
    if isinstance(entry, WideResNet.Spec):
        model = WideResNet(entry.depth, entry.widen_factor, in_chans=in_chans)
        if pretrained:
            _load_local(model, pretrained)
        return Backbone(model, model.num_features, spec)

    timm_name, defaults = entry
    args: dict[str, Any] = {**defaults, **kwargs, "num_classes": 0, "in_chans": in_chans}
    use_cifar_stem = cifar_stem if cifar_stem is not None else (image_size <= SMALL_IMAGE)
    # A local file for a small-image ResNet holds the 3x3 stem: it is loaded after the stem swap below.
    load_after = pretrained and not isinstance(pretrained, bool) and use_cifar_stem and _is_resnet(timm_name)
    if pretrained and not load_after:
        args["pretrained"] = True
        if not isinstance(pretrained, bool):
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"pretrained weights file not found: {path}; give a .pth/.safetensors path or pretrained=True")
            args["pretrained_cfg_overlay"] = {"file": str(path)}
    is_vit = timm_name.startswith(FIXED_SIZE_PREFIXES)
    if is_vit:
        args["img_size"] = image_size
        if timm_name.startswith("vit_") and (patch_size or image_size <= SMALL_IMAGE):
            args["patch_size"] = patch_size or 4
            spec["patch_size"] = args["patch_size"]
        if timm_name.startswith("swin") and image_size <= SMALL_IMAGE:
            args.setdefault("window_size", max(1, image_size // 8))
            args.setdefault("patch_size", 2)
    model = timm.create_model(timm_name, **args)
    if use_cifar_stem and hasattr(model, "conv1") and hasattr(model, "maxpool"):
        # The ImageNet stem (7x7 stride 2 + max-pool) throws away 3/4 of a 32 px image's resolution.
        if isinstance(model.conv1, nn.Conv2d):
            model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
        else:  # a deep stem of 3x3 convs (resnet18d, resnet10t): keep it, without its stride
            first = next(m for m in model.conv1.modules() if isinstance(m, nn.Conv2d))
            first.stride = (1, 1)
        model.maxpool = nn.Identity()
        spec["cifar_stem"] = True
    elif use_cifar_stem and _is_convnext(model):
        # Stride 32 leaves a 1x1 map at 32 px (nothing for FCMAE to mask): a stride-1 stem of the same
        # weight shape gives stride 8, a 4x4 grid at 32 px (masked_convnext.small_image_stem).
        small_image_stem(model)
        spec["cifar_stem"] = True
    elif cifar_stem is False:
        spec["cifar_stem"] = False  # so a small-image backbone saved without the stem is rebuilt without it
    if load_after:
        _load_with_timm(model, pretrained)
    # timm's `num_features` is the trunk width; models with a pre-logits layer (MobileNetV3) output
    # `head_hidden_size` features once the classifier is removed.
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(model, width, spec)


def _is_convnext(model: nn.Module) -> bool:
    stem = getattr(model, "stem", None)
    return (hasattr(model, "stages") and isinstance(stem, nn.Sequential) and isinstance(stem[0], nn.Conv2d)
            and stem[0].stride[0] > 1)


def _is_resnet(timm_name: str) -> bool:
    return timm_name.startswith(("resnet", "wide_resnet", "resnext", "seresnet"))


def _load_with_timm(model: nn.Module, path: str | Path) -> None:
    """timm's file reader (safetensors or torch, weights only); a classifier in the file is dropped."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}; give a .pth/.safetensors path or pretrained=True")
    state = {k: v for k, v in load_state_dict(str(path), weights_only=True).items() if not k.startswith("fc.")}
    stem = state.get("conv1.weight")
    if stem is not None and isinstance(model.conv1, nn.Conv2d) and stem.shape != model.conv1.weight.shape:
        # An ImageNet file (7x7 stem) for a small-image ResNet (3x3 stem): keep every other layer.
        warnings.warn(f"{path.name}: its {tuple(stem.shape[-2:])} stem does not fit the small-image 3x3 stem, which "
                      f"starts from random weights (pass cifar_stem=False to keep the file's stem)", stacklevel=3)
        del state["conv1.weight"]
        state["conv1.weight"] = model.conv1.weight.detach().clone()
    model.load_state_dict(state)


def _load_local(model: nn.Module, path: bool | str | Path) -> None:
    if isinstance(path, bool):
        raise ValueError("this backbone has no published weights; pass a local weights path as pretrained=")
    model.load_state_dict(load_state_dict_file(path))

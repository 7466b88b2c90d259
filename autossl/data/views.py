"""View pipelines: one image in, N augmented views out (torchvision transforms v2 on uint8 tensors).

- `num_views` identical-recipe views (2, 4, 8, ...): the study of how N changes accuracy.
- Asymmetric views (BYOL): per-view blur and solarisation probabilities, cycled over the N views.
- Multi-crop: `num_global` views at `image_size` plus `num_local` smaller crops at `local_size`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torchvision.transforms import v2 as T


@dataclass(frozen=True)
class Preset:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hflip: bool = True
    blur: bool = False  # Gaussian blur is part of the ImageNet recipe, not of small-image ones


PRESETS: dict[str, Preset] = {
    "mnist": Preset(32, (0.1307,) * 3, (0.3081,) * 3, hflip=False),
    "cifar10": Preset(32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": Preset(32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": Preset(96, (0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686), blur=True),
    "imagenet": Preset(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), blur=True),
}


def preset_for(name: str | None, image_size: int | None = None) -> Preset:
    p = PRESETS.get((name or "imagenet").lower().replace("-", ""), PRESETS["imagenet"])
    return replace(p, image_size=image_size) if image_size else p


@dataclass
class Augment:
    """The strength of one view's augmentation (SimCLR/BYOL recipe knobs)."""
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    solarize_prob: float = 0.0
    hflip: bool = True


def view_transform(preset: Preset, aug: Augment, size: int | None = None) -> T.Compose:
    size = size or preset.image_size
    steps: list = [T.RandomResizedCrop(size, scale=aug.crop_scale, antialias=True)]
    if aug.hflip and preset.hflip:
        steps.append(T.RandomHorizontalFlip())
    if aug.jitter_prob > 0:
        steps.append(T.RandomApply([T.ColorJitter(*aug.jitter)], p=aug.jitter_prob))
    if aug.grayscale_prob > 0:
        steps.append(T.RandomGrayscale(p=aug.grayscale_prob))
    if aug.blur_prob > 0:
        k = max(3, (size // 10) | 1)  # odd kernel about 10% of the image, as in SimCLR
        steps.append(T.RandomApply([T.GaussianBlur(k, sigma=(0.1, 2.0))], p=aug.blur_prob))
    if aug.solarize_prob > 0:
        steps.append(T.RandomSolarize(threshold=128, p=aug.solarize_prob))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(preset.mean, preset.std)]
    return T.Compose(steps)


def eval_transform(preset: Preset) -> T.Compose:
    """Resize (up or down) to the preset size and normalise: images smaller than the crop are fine."""
    return T.Compose([T.Resize(preset.image_size, antialias=True), T.CenterCrop(preset.image_size),
                      T.ToDtype(torch.float32, scale=True), T.Normalize(preset.mean, preset.std)])


class MultiViewTransform:
    """Apply a list of per-view transforms to one image; returns a list of views."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [t(image) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)


# BYOL's asymmetric pair: view 1 always blurred, view 2 rarely blurred and sometimes solarised.
ASYMMETRIC = [dict(blur_prob=1.0, solarize_prob=0.0), dict(blur_prob=0.1, solarize_prob=0.2)]


def make_views(dataset: str | None = None, num_views: int = 2, image_size: int | None = None, *,
               asymmetric: bool = False, num_local: int = 0, local_size: int | None = None,
               local_scale: tuple[float, float] = (0.05, 0.4), augment: Augment | None = None) -> MultiViewTransform:
    """The view pipeline for a dataset preset. With `num_local` > 0, `num_views` global crops are
    followed by `num_local` crops of `local_size` (multi-crop, as DINO/SwAV)."""
    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    preset = preset_for(dataset, image_size)
    base = augment or Augment(blur_prob=0.5 if preset.blur else 0.0)
    per_view = []
    for i in range(num_views):
        aug = replace(base, **ASYMMETRIC[i % 2]) if asymmetric else base
        per_view.append(view_transform(preset, aug))
    if num_local:
        local_aug = replace(base, crop_scale=local_scale)
        size = local_size or max(8, preset.image_size * 3 // 7)
        per_view += [view_transform(preset, local_aug, size) for _ in range(num_local)]
    return MultiViewTransform(per_view)

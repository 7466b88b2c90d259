"""The view pipeline of `views.py`, applied to a whole batch at once.

Per-image torchvision transforms cost about 1 ms per view on one CPU core for a 32 px image,
mostly dispatch overhead; on a 2-core machine that is close to a tenth of a ResNet-18 training
step. Here every random parameter is drawn per image, as before, but each operation runs once on
the stacked batch [B, 3, H, W]: crop-and-resize by `roi_align`, colour jitter, grayscale, blur
and solarise as tensor arithmetic. Same augmentation family and parameter ranges; the random
streams (and the jitter order, drawn per batch rather than per image) differ from the per-image path.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .batch import make_batch
from .seeded import seeded
from .views import ASYMMETRIC, Augment, Preset, preset_for

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's luma weights


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _uniform(n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.empty(n).uniform_(lo, hi)


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """RandomResizedCrop's boxes for n images, [n, 4] as (x0, y0, x1, y1): the first of `attempts`
    draws that fits, else the whole image (torchvision's rule, vectorised)."""
    area = height * width
    target = area * torch.empty(n, attempts).uniform_(*scale)
    log_r = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = log_r.exp()
    w = (target * aspect).sqrt().round()
    h = (target / aspect).sqrt().round()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.float().argmax(1)
    rows = torch.arange(n)
    w, h, found = w[rows, first], h[rows, first], ok[rows, first]
    w = torch.where(found, w, torch.full_like(w, width))
    h = torch.where(found, h, torch.full_like(h, height))
    x0 = (torch.rand(n) * (width - w + 1)).floor()
    y0 = (torch.rand(n) * (height - h + 1)).floor()
    return torch.stack([x0, y0, x0 + w, y0 + h], 1)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    # Element-wise maxima: a max-reduction over the 3-channel dim is several times slower on CPU.
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # torchvision's branches, in its order of precedence: r is max, else g, else b; h in [-1, 5)
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(delta > 0, torch.where(h < 0, h + 6.0, h) / 6.0, torch.zeros_like(h))
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    # Closed form: channel n in (5, 3, 1) is v - v*s*clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.
    h, s, v = x[:, :1], x[:, 1:2], x[:, 2:]
    k = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype).view(1, 3, 1, 1) + 6.0 * h
    k = torch.where(k >= 6.0, k - 6.0, k)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def color_jitter(x: torch.Tensor, jitter: Sequence[float], prob: float) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, each factor drawn per image; images not picked
    (probability 1 - prob) get identity factors. One random order of the four per batch."""
    n = x.shape[0]
    on = torch.rand(n) < prob
    bright, contrast, sat, hue = jitter

    def factors(amount: float) -> torch.Tensor:
        f = _uniform(n, max(0.0, 1 - amount), 1 + amount)
        return torch.where(on, f, torch.ones_like(f))

    ops = []
    if bright > 0:
        ops.append(lambda y, f=factors(bright): (y * f.view(-1, 1, 1, 1)).clamp_(0, 1))
    if contrast > 0:
        ops.append(lambda y, f=factors(contrast): _blend(y, _gray(y).mean((1, 2, 3), keepdim=True), f))
    if sat > 0:
        ops.append(lambda y, f=factors(sat): _blend(y, _gray(y), f))
    if hue > 0:
        shift = torch.where(on, _uniform(n, -hue, hue), torch.zeros(n))

        def hue_op(y, shift=shift):
            hsv = _rgb_to_hsv(y)
            hsv[:, 0] = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0  # shift in [-0.5, 0.5]
            return _hsv_to_rgb(hsv)
        ops.append(hue_op)
    for k in torch.randperm(len(ops)).tolist():
        x = ops[k](x)
    return x


def gaussian_blur(x: torch.Tensor, prob: float, sigma: tuple[float, float] = (0.1, 2.0)) -> torch.Tensor:
    """Per-image sigma; kernel about 10% of the image (odd, at least 3) with reflect padding, as views.py."""
    n, c, h, w = x.shape
    picked = torch.rand(n) < prob
    if not picked.any():
        return x
    k = max(3, (w // 10) | 1)
    s = _uniform(n, *sigma).view(-1, 1)
    grid = torch.arange(k, dtype=x.dtype) - (k - 1) / 2
    kern = torch.exp(-0.5 * (grid / s) ** 2)
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [n*c, k]
    y = F.pad(x.reshape(1, n * c, h, w), (k // 2,) * 4, mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c).view(n, c, h, w)
    return torch.where(picked.view(-1, 1, 1, 1), y, x)


def resized_crops(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box and resize to size x size. Bilinear sampling when no crop can be
    larger than the output (small images: no antialiasing needed), else roi_align, which averages
    2x2 samples per output pixel (antialiased downscaling)."""
    n, _, height, width = x.shape
    if max(height, width) <= size:
        x0, y0, x1, y1 = boxes.unbind(1)
        theta = torch.zeros(n, 2, 3, dtype=x.dtype)
        theta[:, 0, 0], theta[:, 0, 2] = (x1 - x0) / width, (x0 + x1) / width - 1
        theta[:, 1, 1], theta[:, 1, 2] = (y1 - y0) / height, (y0 + y1) / height - 1
        grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    from torchvision.ops import roi_align

    rois = torch.cat([torch.arange(n, dtype=x.dtype).view(-1, 1), boxes.to(x.dtype)], 1)
    return roi_align(x, rois, size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


class BatchViewTransform:
    """One view's augmentation for a uint8 batch [B, 3, H, W] -> normalised float [B, 3, S, S]."""

    def __init__(self, preset: Preset, aug: Augment, size: int | None = None):
        self.preset, self.aug, self.size = preset, aug, size or preset.image_size
        self.mean = torch.tensor(preset.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(preset.std).view(1, 3, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        a, n = self.aug, images.shape[0]
        x = resized_crops(images.float().div_(255), crop_boxes(n, images.shape[2], images.shape[3], a.crop_scale),
                          self.size)
        if a.hflip and self.preset.hflip:
            flip = (torch.rand(n) < 0.5).view(-1, 1, 1, 1)
            x = torch.where(flip, x.flip(-1), x)
        if a.jitter_prob > 0:
            x = color_jitter(x, a.jitter, a.jitter_prob)
        if a.grayscale_prob > 0:
            gray = (torch.rand(n) < a.grayscale_prob).view(-1, 1, 1, 1)
            x = torch.where(gray, _gray(x).expand_as(x), x)
        if a.blur_prob > 0:
            x = gaussian_blur(x, a.blur_prob)
        if a.solarize_prob > 0:
            sol = (torch.rand(n) < a.solarize_prob).view(-1, 1, 1, 1)
            x = torch.where(sol & (x >= 128 / 255), 1 - x, x)
        return (x - self.mean) / self.std


class BatchViews:
    """All views of a batch: a list of per-view `BatchViewTransform`s (as `MultiViewTransform`)."""

    def __init__(self, transforms: Sequence[BatchViewTransform]):
        self.transforms = list(transforms)

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [t(images) for t in self.transforms]

    def __len__(self) -> int:
        return len(self.transforms)


def make_batch_views(dataset: str | None = None, num_views: int = 2, image_size: int | None = None, *,
                     asymmetric: bool = False, num_local: int = 0, local_size: int | None = None,
                     local_scale: tuple[float, float] = (0.05, 0.4), augment: Augment | None = None) -> BatchViews:
    """`views.make_views`, batched: the same arguments and the same per-view recipes."""
    from dataclasses import replace

    if num_views < 1:
        raise ValueError(f"num_views must be at least 1, got {num_views}")
    preset = preset_for(dataset, image_size)
    base = augment or Augment(blur_prob=0.5 if preset.blur else 0.0)
    per_view = [BatchViewTransform(preset, replace(base, **ASYMMETRIC[i % 2]) if asymmetric else base)
                for i in range(num_views)]
    if num_local:
        size = local_size or max(8, preset.image_size * 3 // 7)
        per_view += [BatchViewTransform(preset, replace(base, crop_scale=local_scale), size) for _ in range(num_local)]
    return BatchViews(per_view)


class BatchViewCollate:
    """A collate_fn: stacks the decoded uint8 images of a batch and makes every view at once.
    Unreadable images (None) are dropped and counted, as `collate_views` does. Images of different
    sizes are first resized to the batch's most common size."""

    def __init__(self, views: BatchViews):
        self.views = views

    def __call__(self, samples: list) -> dict[str, Any]:
        good = [s for s in samples if s[0] is not None]
        skipped = len(samples) - len(good)
        if not good:
            return make_batch(None, [], skipped)
        labels = [s[1] for s in good]
        images = [s[0] for s in good]
        shapes = [tuple(im.shape[-2:]) for im in images]
        if len(set(shapes)) > 1:
            common = max(set(shapes), key=shapes.count)
            images = [im if tuple(im.shape[-2:]) == common else
                      F.interpolate(im[None].float(), size=common, mode="bilinear", antialias=True,
                                    align_corners=False)[0].round().clamp(0, 255).to(torch.uint8) for im in images]
        seeds = [s[2] for s in good if len(s) > 2]
        if seeds:  # from a SeededSampler: the batch's views are drawn from its first sample's seed
            with seeded(seeds[0]):
                return make_batch(self.views(torch.stack(images)), labels, skipped)
        return make_batch(self.views(torch.stack(images)), labels, skipped)

"""View pipelines: N views, BYOL's asymmetric pair, multi-crop, presets."""
from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2 as T

from autossl.data import PRESETS, Augment, make_dataloader, make_views, preset_for


def _steps(view) -> list:
    return list(view.transforms)


def _prob_of(view, kind) -> float:
    """The probability with which a view applies `kind` (0 when the step is absent)."""
    for step in _steps(view):
        if isinstance(step, kind):
            return float(step.p)
        if isinstance(step, T.RandomApply) and any(isinstance(t, kind) for t in step.transforms):
            return float(step.p)
    return 0.0


def _crop_size(view) -> int:
    crop = next(s for s in _steps(view) if isinstance(s, T.RandomResizedCrop))
    return crop.size[0]


@pytest.mark.parametrize("num_views", [2, 4, 8])
def test_n_views_share_one_recipe(num_views):
    views = make_views("cifar10", num_views=num_views)
    assert len(views) == num_views
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    out = views(image)
    assert len(out) == num_views and all(v.shape == (3, 32, 32) and v.dtype == torch.float32 for v in out)
    assert {_prob_of(v, T.ColorJitter) for v in views.transforms} == {0.8}


def test_asymmetric_views_carry_byols_blur_and_solarize_probabilities():
    views = make_views("cifar10", num_views=4, asymmetric=True)
    blur = [_prob_of(v, T.GaussianBlur) for v in views.transforms]
    solarize = [_prob_of(v, T.RandomSolarize) for v in views.transforms]
    assert blur == [1.0, 0.1, 1.0, 0.1]
    assert solarize == [0.0, 0.2, 0.0, 0.2]
    symmetric = make_views("cifar10", num_views=2)
    assert [_prob_of(v, T.RandomSolarize) for v in symmetric.transforms] == [0.0, 0.0]


def test_asymmetric_flag_reaches_the_loader(mnist_arrays):
    loader = make_dataloader(mnist_arrays, batch_size=4, image_size=16, asymmetric=True, num_workers=0)
    views = loader.dataset.transform.transforms
    assert [_prob_of(v, T.GaussianBlur) for v in views] == [1.0, 0.1]
    batch = next(iter(loader))
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 3, 16, 16)] * 2


def test_multicrop_gives_global_then_local_crops(mnist_arrays):
    loader = make_dataloader(mnist_arrays, num_views=2, num_local=4, local_size=12, image_size=28, batch_size=4,
                             preset="mnist", num_workers=0)
    views = next(iter(loader))["views"]
    assert [tuple(v.shape[-2:]) for v in views] == [(28, 28)] * 2 + [(12, 12)] * 4
    assert all(v.shape[:2] == (4, 3) for v in views)
    local = loader.dataset.transform.transforms[-1]
    crop = next(s for s in _steps(local) if isinstance(s, T.RandomResizedCrop))
    assert crop.scale == (0.05, 0.4)  # local crops see small parts of the image


def test_multicrop_default_local_size_is_smaller():
    views = make_views("cifar10", num_views=2, num_local=2)
    sizes = [_crop_size(v) for v in views.transforms]
    assert sizes[:2] == [32, 32] and sizes[2] == sizes[3] < 32


def test_presets():
    assert preset_for("mnist").image_size == 32 and not preset_for("mnist").hflip
    assert preset_for("CIFAR-10").mean == PRESETS["cifar10"].mean
    assert preset_for("stl10").image_size == 96 and preset_for("stl10").blur
    assert preset_for(None).image_size == 224  # a folder of photos gets the ImageNet recipe
    assert preset_for("cifar10", image_size=64).image_size == 64
    # blur belongs to the ImageNet/STL recipe, not to 32 px images
    assert _prob_of(make_views("stl10").transforms[0], T.GaussianBlur) == 0.5
    assert _prob_of(make_views("cifar10").transforms[0], T.GaussianBlur) == 0.0


def test_custom_augment_is_used():
    aug = Augment(crop_scale=(0.5, 1.0), jitter_prob=0.0, grayscale_prob=0.0, hflip=False)
    view = make_views("cifar10", augment=aug).transforms[0]
    kinds = [type(s) for s in _steps(view)]
    assert T.ColorJitter not in kinds and T.RandomApply not in kinds and T.RandomGrayscale not in kinds
    assert T.RandomHorizontalFlip not in kinds
    assert next(s for s in _steps(view) if isinstance(s, T.RandomResizedCrop)).scale == (0.5, 1.0)


def test_zero_views_is_refused():
    with pytest.raises(ValueError, match="num_views"):
        make_views("cifar10", num_views=0)

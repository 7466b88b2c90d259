"""The batched view pipeline (autossl.data.batch_views): same recipe as the per-image one."""
import torch
import torchvision.transforms.v2.functional as TF

from autossl.data import ArrayDataset, make_dataloader
from autossl.data.batch_views import (BatchViewCollate, BatchViewTransform, _hsv_to_rgb, _rgb_to_hsv, color_jitter,
                                      crop_boxes, make_batch_views)
from autossl.data.views import Augment, preset_for


def test_identity_recipe_returns_the_normalised_images():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    preset = preset_for("cifar10", 16)
    plain = Augment(crop_scale=(1.0, 1.0), jitter_prob=0.0, grayscale_prob=0.0, hflip=False)
    out = BatchViewTransform(preset, plain)(images)
    expected = TF.normalize(images.float() / 255, preset.mean, preset.std)
    # a full-image crop with ratio 1 samples every pixel centre exactly
    assert torch.allclose(out, expected, atol=1e-4)


def test_hue_shift_matches_torchvision():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 8, 8)
    hsv = _rgb_to_hsv(x)
    assert torch.allclose(_hsv_to_rgb(hsv), x, atol=1e-5)
    hsv[:, 0] = (hsv[:, 0] + 0.1) % 1.0
    assert torch.allclose(_hsv_to_rgb(hsv), TF.adjust_hue(x, 0.1), atol=1e-4)


def test_crop_boxes_stay_inside_and_follow_the_scale_range():
    torch.manual_seed(0)
    boxes = crop_boxes(2000, 32, 24, (0.2, 0.5))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 24).all() and (boxes[:, 3] <= 32).all()
    frac = w * h / (32 * 24)
    assert frac.min() > 0.15 and frac.max() < 0.56 and 0.3 < frac.mean() < 0.4


def test_jitter_probability_zero_changes_nothing():
    x = torch.rand(5, 3, 8, 8)
    assert torch.allclose(color_jitter(x.clone(), (0.4, 0.4, 0.2, 0.1), 0.0), x, atol=1e-5)


def test_views_shapes_multicrop_and_mixed_sizes_with_a_corrupt_sample():
    torch.manual_seed(0)
    views = make_batch_views("cifar10", 2, 32, num_local=2, local_size=12, asymmetric=True)
    collate = BatchViewCollate(views)
    samples = [(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8), 1),
               (torch.randint(0, 256, (3, 40, 28), dtype=torch.uint8), 2),
               (None, 3)]
    batch = collate(samples)
    assert [tuple(v.shape) for v in batch["views"]] == [(2, 3, 32, 32)] * 2 + [(2, 3, 12, 12)] * 2
    assert batch["skipped"] == 1 and batch["label"].tolist() == [1, 2]
    assert all(torch.isfinite(v).all() for v in batch["views"])
    assert not torch.allclose(batch["views"][0], batch["views"][1])  # two different augmentations


def test_make_dataloader_batched_views_yields_the_usual_batches():
    X = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    loader = make_dataloader(ArrayDataset(X, torch.arange(12) % 3), preset="cifar10", batch_size=4, num_workers=0,
                             seed=0, batched_views=True)
    batch = next(iter(loader))
    assert len(batch["views"]) == 2 and batch["views"][0].shape == (4, 3, 32, 32)
    assert batch["views"][0].dtype == torch.float32 and abs(float(batch["views"][0].mean())) < 2

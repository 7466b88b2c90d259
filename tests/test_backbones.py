"""Backbones: the families we name, any timm model, local pretrained weights, export round trip, safe loading."""
from __future__ import annotations

import pickle

import pytest
import timm
import torch
import torch.nn as nn

from autossl.backbones import create_backbone, load, read_spec, save


def _features(backbone, size, n=2):
    backbone.eval()
    with torch.no_grad():
        return backbone(torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_gets_cifar_stem_at_small_size(name):
    b = create_backbone(name, image_size=32)
    conv1 = b.model.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and isinstance(b.model.maxpool, nn.Identity)
    assert _features(b, 16).shape == (2, b.num_features)
    assert b.num_features == {"resnet18": 512, "resnet34": 512, "resnet50": 2048}[name]


def test_resnet_keeps_imagenet_stem_at_224_and_alias():
    b = create_backbone("resnet18", image_size=224)
    assert b.model.conv1.kernel_size == (7, 7) and b.model.conv1.stride == (2, 2)
    assert isinstance(b.model.maxpool, nn.MaxPool2d)
    alias = create_backbone("ResNet", image_size=32)
    assert alias.spec["name"] == "resnet18" and alias.num_features == 512
    forced = create_backbone("resnet18", image_size=224, cifar_stem=True)
    assert forced.model.conv1.kernel_size == (3, 3)


def test_deep_stem_resnet_gets_stride_one_at_small_size():
    b = create_backbone("resnet10t", image_size=32)  # its stem is three 3x3 convs, not one 7x7
    assert b.model.conv1[0].stride == (1, 1) and isinstance(b.model.maxpool, nn.Identity)
    assert _features(b, 16).shape == (2, 512)


@pytest.mark.parametrize("name,size,kwargs", [
    ("wide_resnet28_2", 16, {}),
    ("vit_tiny", 32, {}),
    ("vit_tiny", 32, {"patch_size": 8}),
    ("swin_tiny", 32, {}),
    ("convnext_atto", 32, {}),
    ("convnextv2_atto", 32, {}),
    ("mobilenetv3_small_050", 32, {}),  # any timm name; its pre-logits layer makes the width differ
])
def test_backbones_build_and_report_their_width(name, size, kwargs):
    b = create_backbone(name, image_size=size, **kwargs)
    out = _features(b, size)
    assert out.shape == (2, b.num_features) and torch.isfinite(out).all()
    if name == "vit_tiny":  # 16 px patches would leave 4 tokens at 32 px: small images get 4 px by default
        patch = kwargs.get("patch_size", 4)
        assert b.model.patch_embed.patch_size == (patch, patch)
        assert b.model.patch_embed.num_patches == (32 // patch) ** 2


def test_pretrained_local_file_goes_through_timm(tmp_path):
    reference = timm.create_model("resnet18")  # with its classifier, as a downloaded file would have
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    b = create_backbone("resnet18", image_size=224, pretrained=path)
    ours = b.model.state_dict()
    for k, v in reference.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(ours[k], v), k
    assert "fc.weight" not in ours  # the classifier was dropped: features only
    with pytest.raises(FileNotFoundError, match="pretrained weights file not found"):
        create_backbone("resnet18", pretrained=tmp_path / "missing.pth")


def test_pretrained_local_file_for_small_image_resnet(tmp_path):
    own = create_backbone("resnet18", image_size=32)  # 3x3 stem, as our own exports have
    with torch.no_grad():
        own.train()(torch.randn(4, 3, 16, 16))
    save(own, tmp_path / "small.safetensors")
    again = create_backbone("resnet18", image_size=32, pretrained=tmp_path / "small.safetensors")
    assert torch.equal(_features(own, 16), _features(again, 16))

    imagenet = timm.create_model("resnet18")  # a downloaded file: 7x7 stem and a classifier
    torch.save(imagenet.state_dict(), tmp_path / "imagenet.pth")
    with pytest.warns(UserWarning, match="stem does not fit"):
        b = create_backbone("resnet18", image_size=32, pretrained=tmp_path / "imagenet.pth")
    assert b.model.conv1.kernel_size == (3, 3)
    assert torch.equal(b.model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)


def test_pretrained_local_file_for_our_wide_resnet(tmp_path):
    a = create_backbone("wide_resnet28_2", image_size=16)
    with torch.no_grad():
        a.train()(torch.randn(4, 3, 16, 16))
    save(a, tmp_path / "w.safetensors")
    b = create_backbone("wide_resnet28_2", image_size=16, pretrained=tmp_path / "w.safetensors")
    assert torch.allclose(_features(a, 16), _features(b, 16))
    assert torch.allclose(_features(a, 16), _features(load(tmp_path / "w.safetensors"), 16))


@pytest.mark.parametrize("kwargs", [{}, {"cifar_stem": False}])
def test_export_round_trip_gives_same_features(tmp_path, kwargs):
    b = create_backbone("resnet18", image_size=16, **kwargs)
    with torch.no_grad():  # move BN statistics away from their init so they must be saved too
        b.train()(torch.randn(4, 3, 16, 16))
    path = save(b, tmp_path / "r18.safetensors")
    assert read_spec(path)["name"] == "resnet18"
    again = load(path)
    assert again.model.conv1.kernel_size == b.model.conv1.kernel_size
    assert torch.allclose(_features(b, 16), _features(again, 16), atol=1e-6)


def test_exported_vit_round_trips_and_loads_into_plain_timm(tmp_path):
    b = create_backbone("vit_tiny", image_size=32, patch_size=8)
    path = save(b, tmp_path / "vit.safetensors")
    assert torch.equal(_features(b, 32), _features(load(path), 32))
    from safetensors.torch import load_file

    plain = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8)
    plain.load_state_dict(load_file(str(path)))  # strict: every key matches
    assert torch.equal(_features(b, 32), _features(plain, 32))


def test_unknown_backbone_suggests_nearest_name():
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        create_backbone("resnt18")


class _WritesFile:
    """A pickle payload that would run code (create a file) when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    from autossl.core.io import UnsafeCheckpointError, load_checkpoint, load_state_dict_file

    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": _WritesFile(marker)}, f)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _WritesFile(marker)}, tmp_path / "evil2.ckpt")
    for bad in (path, tmp_path / "evil2.ckpt"):
        with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
            load_checkpoint(bad)
        with pytest.raises(UnsafeCheckpointError):
            load_state_dict_file(bad)
        with pytest.raises(UnsafeCheckpointError):
            create_backbone("wide_resnet16_4", image_size=32, pretrained=bad)
    assert not marker.exists()
    # a plain tensor checkpoint still loads
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.ckpt")
    assert torch.equal(load_checkpoint(tmp_path / "ok.ckpt")["w"], torch.ones(2))

"""Eval_knn and the CIFAR-10 benchmark's own k-NN report give the same number for the same backbone
on the same folders of real CIFAR-10 JPEGs (../shared/data)."""
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TARBALL = REPO.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


def _extract(root: Path, per_class_train: int = 24, per_class_test: int = 8) -> tuple[Path, Path]:
    """A small labelled train/test pair of image folders from the real tarball."""
    counts: dict[str, int] = {}
    with tarfile.open(TARBALL) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            cls = parts[-2]
            n = counts.get(cls, 0)
            if n >= per_class_train + per_class_test:
                continue
            counts[cls] = n + 1
            split = "train" if n < per_class_train else "test"
            dest = root / split / cls / parts[-1]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
            if len(counts) == 10 and all(v >= per_class_train + per_class_test for v in counts.values()):
                break
    return root / "train", root / "test"


@pytest.mark.skipif(not TARBALL.exists(), reason="the shared CIFAR-10 tarball is not beside the checkout")
def test_eval_knn_equals_benchmark_knn(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import knn_top1

    from autossl.backbones import create_backbone, save
    from autossl.data import ImageFolderDataset
    from autossl.evaluate import Eval_knn

    train_dir, test_dir = _extract(tmp_path)
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", image_size=32)
    with torch.no_grad():  # move BatchNorm statistics off their defaults, as training would
        backbone.train()
        backbone(torch.randn(64, 3, 32, 32))
    weights = save(backbone, tmp_path / "backbone.safetensors")

    ours = knn_top1(backbone, ImageFolderDataset(train_dir), ImageFolderDataset(test_dir), "cifar10", "cpu", bf16=False)
    result = Eval_knn(model=str(weights), dataset={"train": str(train_dir), "test": str(test_dir)},
                      metric="accuracy", preset="cifar10", image_size=32)
    assert result["accuracy"] == pytest.approx(ours, abs=1e-6)
    assert 0.0 <= ours <= 1.0

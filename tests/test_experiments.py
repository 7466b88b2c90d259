"""Every method constructs from the command line: each registered method has a shipped CIFAR-10 experiment
(`autossl/conf/experiment/cifar10_<method>.yaml`), and `autossl pretrain experiment=cifar10_<method>` composes,
validates and builds that method at the experiment's full size (heads, prototypes, queues) -- the model a user's
run would train. Training, resuming and exporting every method: test_method_resume.py, test_method_export.py."""
from __future__ import annotations

import pytest

import autossl.methods  # noqa: F401  (registers every method)
from autossl.core.registry import METHODS
from autossl.methods import get_method
from autossl.train import available_experiments, compose
from autossl.train.run import build_model


def test_every_method_has_a_cifar10_experiment():
    missing = sorted(set(METHODS.names()) - {e.removeprefix("cifar10_") for e in available_experiments()})
    assert not missing, f"methods without autossl/conf/experiment/cifar10_<method>.yaml: {missing}"


@pytest.mark.parametrize("name", METHODS.names())
def test_the_cli_experiment_builds_the_method(name):
    cfg = compose([f"experiment=cifar10_{name}", "data.dataset=mnist"])  # the data set is not read to build it
    assert cfg.method == name and cfg.data.image_size in (None, 32)
    model = build_model(cfg)
    assert isinstance(model, get_method(name)) and model.name == name
    assert sum(p.numel() for p in model.backbone.parameters()) > 0

"""Every registered method exports its backbone (`autossl export`) and the file loads back as that backbone.

For each name in `METHODS` (read at collection, so a method added later is covered), in its own settings from
test_method_resume (`_settings`): the online weights are moved away from any EMA copy first (so a method that
exported its teacher, or a stale copy, would fail), a checkpoint is written the way training writes it, then
`autossl export CKPT --out F.safetensors` runs through the CLI. The loaded backbone must hold every tensor of the
method's `backbone` bit for bit and give the same features. Methods with a decoder (masked image modelling) also
export it (`--decoder FILE`), compared the same way. Training and resuming every method: test_method_resume.py.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import autossl.methods  # noqa: F401  (registers every method)
from autossl.backbones import load
from autossl.cli.main import main
from autossl.core.registry import METHODS
from autossl.methods import get_method

from conftest import quiet_trainer
from test_method_resume import _settings


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_exports_its_trained_backbone(tmp_path, name):
    kwargs, _ = _settings(name)
    torch.manual_seed(0)
    model = get_method(name)(**kwargs)
    with torch.no_grad():  # the online network moves, the EMA copies (built equal to it) do not
        for p in model.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    trainer = quiet_trainer(tmp_path, max_steps=0)
    trainer.strategy.connect(model)
    ckpt, out = tmp_path / "m.ckpt", tmp_path / "backbone.safetensors"
    trainer.save_checkpoint(ckpt)
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    want = model.backbone.model.state_dict()
    got = load_file(str(out))
    assert sorted(got) == sorted(want), name
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor), f"{name}: {key} differs after export"
    loaded = load(out).eval()
    model.eval()
    size = kwargs.get("image_size", 16)
    x = torch.randn(2, kwargs.get("in_chans", 3), size, size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)), name
    if hasattr(model, "decoder"):
        dec = tmp_path / "decoder.safetensors"
        assert main(["export", str(ckpt), "--out", str(tmp_path / "b2.safetensors"), "--decoder", str(dec)]) == 0
        got = load_file(str(dec))
        want = model.decoder.state_dict()
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want), name

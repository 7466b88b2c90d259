"""The `autossl` command line: help, list, overrides, one-line errors, signal then resume."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from autossl.cli.main import main

TINY = ["data.image_size=16", "data.batch_size=16", "data.num_workers=0", "trainer.precision=32",
        "model.params.proj_hidden_dim=64", "model.params.proj_output_dim=32", "trainer.progress_bar=true",
        "logging.tensorboard=false"]


def test_help_lists_commands_and_main_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ("pretrain", "export", "list", "eval", "sweep", "optimizer.lr", "data.num_views", "resume=true"):
        assert word in out


def test_list_shows_methods_backbones_datasets_experiments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    from autossl.core.registry import REGISTRIES

    sections = dict(re.findall(r"^(\w+):\n((?:  .*\n)+)", out, flags=re.M))
    assert list(sections) == list(REGISTRIES)  # every registry, in order
    for kind, registry in REGISTRIES.items():
        listed = re.findall(r"^  (\S+)", sections[kind], flags=re.M)
        assert set(registry.names()) <= set(listed) and len(registry) > 0, kind
    assert {"byol", "vicreg"} <= set(re.findall(r"^  (\S+)", sections["methods"], flags=re.M))
    assert "resnet18" in sections["backbones"] and "mnist" in sections["datasets"]
    assert "cifar10_byol" in sections["experiments"] and "knn" in sections["protocols"]


def test_override_reaches_the_config(capsys):
    assert main(["pretrain", "experiment=cifar10_byol", "optimizer.lr=0.5", "data.num_views=4", "--cfg"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and "num_views: 4" in out and "method: byol" in out


def test_typo_is_one_line_with_the_right_key(capsys):
    assert main(["pretrain", "optimizer.lrr=0.5"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "unknown config key 'optimizer.lrr'" in err and "did you mean 'optimizer.lr'" in err


def test_unknown_command_suggests(capsys):
    assert main(["pretrian"]) == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "autossl", "list", "methods"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "simclr" in out.stdout


def _start(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "autossl", "pretrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    threading.Thread(target=lambda: [log.append(c) for c in iter(lambda: proc.stdout.read(1), "")], daemon=True).start()
    return proc, log


# SIGTERM by default is tests/test_preemption.py's (2 processes, the signal to one rank) and test_launch.py's (SLURM's
# requeue signal); here Ctrl-C by default, SIGTERM with -m slow
@pytest.mark.parametrize("sig", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_writes_last_ckpt_and_resume_continues(tmp_path, sig):
    args = TINY + ["name=sig", "method=simclr", "trainer.max_steps=400"]
    proc, log = _start(args, tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the progress bar to show 3 steps done
        steps = [int(s) for s in re.findall(r"\| (\d+)/\d+ ", "".join(log))]
        if steps and max(steps) >= 3:
            break
        assert proc.poll() is None, "".join(log)[-2000:]
        time.sleep(0.5)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 0, "".join(log)[-2000:]
    text = "".join(log)
    assert "Traceback" not in text
    assert f"stopped by signal {sig.name}" in text
    last = tmp_path / "checkpoints" / "sig" / "last.ckpt"
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert stopped_at >= 3

    resumed = subprocess.run([sys.executable, "-m", "autossl", "pretrain", *args[:-1], "resume=true",
                              f"trainer.max_steps={stopped_at + 2}"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after {stopped_at + 2} steps" in resumed.stdout
    assert torch.load(last, weights_only=True)["global_step"] == stopped_at + 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", *TINY, "name=none", "resume=true"]) == 1
    assert "resume=true but" in capsys.readouterr().err


def test_export_command(tmp_path, capsys):
    from autossl.backbones import load
    from autossl.methods import SimCLR
    import pytorch_lightning as pl

    model = SimCLR(image_size=16, proj_hidden_dim=32, proj_output_dim=16)
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(model)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "b.safetensors"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(load(out).eval()(x), model(x))

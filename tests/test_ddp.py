"""Real 2-process DDP (gloo, CPU): the losses that gather across processes must give, after DDP's
gradient averaging, exactly what one process computes on the concatenated batch.

Why it holds: `gather` keeps the graph and its backward sums every rank's gradient into the local
slice, so each rank's input gradient is world_size x the single-process gradient of its slice;
DDP divides by world_size. The per-rank losses average to the single-process loss.
One spawn runs every case (process start-up dominates the cost); the tests then compare results."""

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from autossl.core.distributed import world_size
from autossl.losses import barlow_twins_loss, nt_xent_loss, vicreg_loss

from conftest import run_on_processes, save_rank_result

WORLD, PER_RANK, D_IN, D = 2, 6, 5, 8

LOSSES = {
    "nt_xent": lambda a, b: nt_xent_loss(a, b, 0.3),
    "barlow": lambda a, b: barlow_twins_loss(a, b, 0.05),
    "vicreg": vicreg_loss,
}


def _inputs():
    """The global batch: embeddings for the loss-only check, images-as-vectors for the DDP model."""
    g = torch.Generator().manual_seed(0)
    n = WORLD * PER_RANK
    z_a, z_b = torch.randn(n, D, generator=g, dtype=torch.float64), torch.randn(n, D, generator=g, dtype=torch.float64)
    x_a, x_b = torch.randn(n, D_IN, generator=g, dtype=torch.float64), torch.randn(n, D_IN, generator=g,
                                                                                   dtype=torch.float64)
    return 0.5 * z_a, z_b, x_a, x_b  # z_a's std < 1 so VICReg's variance hinge contributes


class TwoViewEncoder(nn.Module):
    """Both views through one Linear inside a single forward, as a method's training step does."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(D_IN, D).double()

    def forward(self, x_a, x_b):
        return self.linear(x_a), self.linear(x_b)


def _loss_and_input_grads(fn, z_a, z_b):
    z_a, z_b = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    loss = fn(z_a, z_b)
    loss.backward()
    return loss.detach(), z_a.grad, z_b.grad


def _param_grads(model, fn, x_a, x_b):
    model.zero_grad()
    fn(*model(x_a, x_b)).backward()
    return [p.grad.clone() for p in model.parameters()]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        z_a, z_b, x_a, x_b = _inputs()
        mine = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        out = {"world_size": world_size()}
        for name, fn in LOSSES.items():
            out[name] = _loss_and_input_grads(fn, z_a[mine], z_b[mine])
        # Control: without gathering, negatives are local only, so this must NOT match single-process.
        out["nt_xent_local"] = nt_xent_loss(z_a[mine], z_b[mine], 0.3, gather_distributed=False)
        ddp = nn.parallel.DistributedDataParallel(TwoViewEncoder())
        for name, fn in LOSSES.items():
            out["ddp_" + name] = _param_grads(ddp, fn, x_a[mine], x_b[mine])
        del ddp  # its reducer holds the process group: release it before the group is destroyed
        save_rank_result(out, out_dir, rank)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_on_processes(_worker, tmp_path_factory.mktemp("ddp"), WORLD)


def _slices():
    return [slice(r * PER_RANK, (r + 1) * PER_RANK) for r in range(WORLD)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_and_input_grads_match_single_process(ranks, name):
    assert all(r["world_size"] == WORLD for r in ranks)
    z_a, z_b, _, _ = _inputs()
    loss, grad_a, grad_b = _loss_and_input_grads(LOSSES[name], z_a, z_b)  # one process, whole batch
    mean_loss = sum(r[name][0] for r in ranks) / WORLD
    torch.testing.assert_close(mean_loss, loss, rtol=1e-10, atol=1e-12)
    for r, mine in zip(ranks, _slices()):
        # What DDP's averaging does to each rank's gradient: divide by world size.
        torch.testing.assert_close(r[name][1] / WORLD, grad_a[mine], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(r[name][2] / WORLD, grad_b[mine], rtol=1e-9, atol=1e-12)


@pytest.mark.timeout(120)
def test_local_negatives_differ_from_global(ranks):
    # Guards the test above against a `gather` that silently does nothing.
    z_a, z_b, _, _ = _inputs()
    single = nt_xent_loss(z_a, z_b, 0.3)
    local_mean = sum(r["nt_xent_local"] for r in ranks) / WORLD
    assert abs(local_mean.item() - single.item()) > 1e-3


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", list(LOSSES))
def test_ddp_parameter_grads_match_single_process(ranks, name):
    _, _, x_a, x_b = _inputs()
    expected = _param_grads(TwoViewEncoder(), LOSSES[name], x_a, x_b)
    for r in ranks:  # DDP all-reduces (averages) parameter gradients: every rank holds the same ones
        for got, want in zip(r["ddp_" + name], expected):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_autossl_pretrain_runs_on_two_cpu_processes(tmp_path):
    """Lightning re-creates the seeded loader to insert its DistributedSampler and passes `generator` back:
    that used to raise MisconfigurationException at the first step of every multi-process run. With
    `trainer.sync_batchnorm=true`, which on CPU processes used to fail inside DDP's set-up (torch's SyncBatchNorm is
    CUDA-only) and now runs on GatheredBatchNorm (its statistics: tests/test_ddp_methods.py, case gathered_bn)."""
    import subprocess
    import sys

    from conftest import write_image

    for i in range(16):
        write_image(tmp_path / "imgs" / f"{i}.png", size=(16, 16), seed=i)
    args = ["method=simclr", "data.dataset=folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=16",
            "data.batch_size=4", "data.num_workers=0", "data.val_split=0", "trainer.max_steps=2",
            "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
            "trainer.sync_batchnorm=true", "model.params.proj_hidden_dim=16", "model.params.proj_output_dim=8",
            "logging.tensorboard=false", "name=ddp"]
    out = subprocess.run([sys.executable, "-m", "autossl", "pretrain", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished: ddp after 2 steps" in out.stdout
    assert torch.load(tmp_path / "checkpoints" / "ddp" / "last.ckpt", weights_only=True)["global_step"] == 2


def test_unreadable_files_on_the_ranks_neither_hang_nor_unbalance_them(tmp_path):
    """Unreadable files land on the ranks unevenly: each rank drops its own, and the batches are padded back to
    equal sizes (repeating readable images) for the gathering loss instead of mismatching or hanging."""
    import subprocess
    import sys

    from conftest import write_image

    for i in range(24):
        if i % 6 == 1:
            (tmp_path / "imgs" / f"{i:02d}_bad.png").parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "imgs" / f"{i:02d}_bad.png").write_bytes(b"not a png")
        else:
            write_image(tmp_path / "imgs" / f"{i:02d}.png", size=(16, 16), seed=i)
    args = ["method=simclr", "data.dataset=folder", f"data.path={tmp_path / 'imgs'}", "data.image_size=16",
            "data.batch_size=4", "data.num_workers=0", "data.val_split=0", "data.max_bad_fraction=0.5",
            "trainer.max_epochs=2", "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp", "model.params.proj_hidden_dim=16", "model.params.proj_output_dim=8",
            "logging.tensorboard=false", "name=bad"]
    out = subprocess.run([sys.executable, "-m", "autossl", "pretrain", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)  # a hang would end here
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished: bad after" in out.stdout and "unreadable image(s)" in out.stdout + out.stderr

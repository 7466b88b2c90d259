"""Do two checkouts train the six joint-embedding methods to the same bits? Used when the method core was
reshaped: run it under each tree, then compare.

    git worktree add /tmp/before 2943b7c
    (cd /tmp/before && PYTHONPATH=$PWD python $OLDPWD/benchmarks/same_bits.py run /tmp/before.pt)
    python benchmarks/same_bits.py run /tmp/after.pt
    python benchmarks/same_bits.py compare /tmp/before.pt /tmp/after.pt

Each method (SimCLR and MoCo also with their queue) trains 6 steps on MNIST digits at 16 px, bf16, batched
views, with the online probe on; `compare` checks every tensor of the state dict, the optimiser state and the
loss of every step with torch.equal / ==.
"""
from __future__ import annotations

import logging
import sys
import warnings

import pytorch_lightning as pl
import torch

CONFIGS = [("simclr", False), ("simclr", True), ("moco", False), ("moco", True), ("byol", False),
           ("simsiam", False), ("barlowtwins", False), ("vicreg", False)]


def run(out: str) -> None:
    from autossl.data import make_dataloader
    from autossl.methods import get_method

    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    results = {}
    for name, bank in CONFIGS:
        pl.seed_everything(0, verbose=False)
        loader = make_dataloader("mnist", num_views=2, batch_size=32, image_size=16, num_workers=0, seed=0,
                                 batched_views=True)
        model = get_method(name)(backbone="resnet18", image_size=16, proj_hidden_dim=64, proj_output_dim=32,
                                 pred_hidden_dim=32, memory_bank=bank, queue_size=64, num_classes=10,
                                 optimizer="adamw", lr=1e-3, seed=0)
        losses: list[float] = []

        class Losses(pl.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                losses.append(float(outputs["loss"]))

        trainer = pl.Trainer(max_steps=6, precision="bf16-mixed", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[Losses()])
        trainer.fit(model, loader)
        results[f"{name}{'+queue' if bank else ''}"] = {"state": model.state_dict(), "losses": losses,
                                                         "optimizer": trainer.optimizers[0].state_dict()}
    torch.save(results, out)
    print(f"wrote {out}: {', '.join(results)}")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def compare(before: str, after: str) -> int:
    a, b = torch.load(before, weights_only=False), torch.load(after, weights_only=False)
    failed = 0
    for key in a:
        parts = {part: _same(a[key][part], b[key][part]) for part in ("state", "optimizer", "losses")}
        failed += not all(parts.values())
        print(f"{key:<14} " + "  ".join(f"{p}: {'same bits' if ok else 'DIFFERENT'}" for p, ok in parts.items()))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)

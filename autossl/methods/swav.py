"""SwAV (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv:2006.09882; reference code github.com/facebookresearch/swav, `main_swav.py`).

Online clustering: L2-normalised projections are scored against K learnable prototypes, codes come
from Sinkhorn-Knopp on the global crops, and every other crop (multi-crop: global and smaller local
ones) predicts them (losses/swav.py). No momentum encoder and no negatives. Kept as in the reference:

- prototypes are an `nn.Linear` without bias whose rows are L2-normalised before every step (the
  reference normalises `prototypes.weight` at the top of each iteration), so scores are cosines;
- the prototypes receive no gradient for the first `freeze_prototypes_epochs` epochs (or the first
  `freeze_prototypes_steps` optimiser steps when that is set, the reference's `freeze_prototypes_niters`):
  early on the codes are near-random and moving the prototypes to fit them slows learning (paper §B.3);
  under a time budget the freeze and the queue start keep their share of the 1000-epoch recipe (`phase_epoch`);
- with `queue_size` > 0, the normalised projections of the global crops of past batches are kept and,
  from epoch `queue_start_epoch` once the queue is full, appended to the batch for Sinkhorn only: small
  batches then still spread over many prototypes (paper §4.4 / appendix, "working with small batches").
  The queue is a buffer, so it is checkpointed; it is filled from the first step (the reference creates it
  at `epoch_queue_starts` and fills it from then), which only means it is already full when it starts.
  Under DDP the queue holds the *global* batch's projections (gathered), the same on every process, and
  each process adds its share of the rows to Sinkhorn, whose sums are all-reduced: Sinkhorn sees every row
  once, as one process would. (The reference keeps `queue_size // world_size` rows per process; a
  per-process buffer is what DDP's `broadcast_buffers` overwrites with rank 0's before every forward, and
  what a checkpoint, written by rank 0, cannot restore on the other processes.)

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/swav.yaml: 2048 hidden, 128 output, 3000
prototypes, temperature 0.1, queue 3840 from epoch 50, prototypes frozen 2 epochs, LARS lr 0.6,
wd 1e-6; solo/methods/swav.py: Sinkhorn 3 iterations at epsilon 0.05).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.distributed import gather_rows, rank, world_size
from ..core.registry import METHODS
from ..losses.swav import swav_loss
from .base import SSLMethod


@METHODS.register("swav")
class SwAV(SSLMethod):
    name = "swav"
    recipe_epochs = 1000  # solo-learn's CIFAR run: a time budget maps its phases onto it (phase_epoch)
    defaults = dict(optimizer="lars", lr=0.6, weight_decay=1e-6, proj_hidden_dim=2048, proj_output_dim=128,
                    proj_layers=2, num_prototypes=3000, temperature=0.1, sinkhorn_iterations=3, sinkhorn_epsilon=0.05,
                    freeze_prototypes_epochs=2, freeze_prototypes_steps=None, queue_size=3840, queue_start_epoch=50)

    def build_heads(self):
        out = self.build_projector()
        self.prototypes = nn.Linear(out, self.cfg["num_prototypes"], bias=False)
        size = int(self.cfg["queue_size"] or 0)
        # one queue per global crop (the crops codes are computed for), zeros until filled
        self.register_buffer("queue", torch.zeros(self.hparams.num_views, size, out))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def prototypes_frozen(self) -> bool:
        steps = self.cfg.get("freeze_prototypes_steps")
        if steps is not None:
            return self.global_step < int(steps)
        return self.phase_epoch() < self.cfg["freeze_prototypes_epochs"]

    def _queue_scores(self, num_global: int) -> list[torch.Tensor] | None:
        n = self.queue.shape[1]
        if (n == 0 or self.phase_epoch() < self.cfg["queue_start_epoch"] or int(self.queue_filled) < n
                or num_global > self.queue.shape[0]):
            return None
        with torch.no_grad():  # this process's share of the (global) queue's rows: Sinkhorn all-reduces over them
            return [self.prototypes(self.queue[i].tensor_split(world_size())[rank()].to(self.prototypes.weight.dtype))
                    for i in range(num_global)]

    @torch.no_grad()
    def _enqueue(self, zs: list[torch.Tensor]) -> None:
        n = self.queue.shape[1]
        if n == 0 or len(zs) > self.queue.shape[0]:
            return
        for i, z in enumerate(zs):  # FIFO by shifting, newest first, as the reference; the global batch's rows
            z = gather_rows(z.detach())[:n]
            b = len(z)
            self.queue[i, b:n] = self.queue[i, : n - b].clone()
            self.queue[i, :b] = z.to(self.queue.dtype)
        self.queue_filled.copy_(torch.clamp(self.queue_filled + min(len(zs[0]) * world_size(), n), max=n))

    def step(self, batch):
        c = self.cfg
        self.normalize_prototypes()
        feats = self.encode_views(batch.views)
        zs = [F.normalize(self.projector(f), dim=1) for f in feats]
        scores = [self.prototypes(z) for z in zs]
        g = batch.num_global
        loss = swav_loss(scores[:g], scores[g:], c["temperature"], c["sinkhorn_iterations"], c["sinkhorn_epsilon"],
                         queue_outputs=self._queue_scores(g))
        self._enqueue(zs[:g])
        return {"loss": loss, "feats": feats[0]}

    def on_after_backward(self) -> None:
        if self.prototypes_frozen():
            for p in self.prototypes.parameters():
                p.grad = None

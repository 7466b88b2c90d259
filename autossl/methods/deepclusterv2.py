"""DeepCluster-v2 (Caron et al., 2020, "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", arXiv:2006.09882, §4.1 and appendix; reference code github.com/facebookresearch/swav,
`main_deepclusterv2.py`; as solo-learn runs it, `solo/methods/deepclusterv2.py`, `solo/utils/kmeans.py`).

Explicit clustering instead of SwAV's online codes: a memory bank keeps the L2-normalised projections of each
global crop; at the start of every epoch after the first (its first batch), spherical k-means (`kmeans_iters` rounds, centroids
initialised from random bank entries, empty clusters keep their centroid) runs on it once per prototype head
(head h on the bank of crop h mod #global crops), and the centroids become that head's prototypes, fixed (no
gradient) for the epoch. The loss (losses/deepclusterv2.py) is the cross-entropy at `temperature` between
every view's scores and the image's cluster, averaged over heads. As in solo-learn, the first epoch only fills
the bank: its loss is 0.

One difference, forced by the batch contract (batches carry no dataset indices): solo-learn looks up each
image's k-means assignment of the *previous* epoch's embedding by its index; here the image's cluster is the
nearest centroid to its *current* (detached) projection of crop h mod #global crops, the bank being a FIFO
of the last `memory_size` projections (by default about one CIFAR epoch, the size of solo-learn's bank: its
loader length x batch size).

Under DDP the bank holds the *global* batch's projections (gathered), the same on every process; k-means starts
from centroids drawn from the whole bank by a generator seeded with the run's seed and the epoch (the same on every
process, and after a resume), and each process assigns its share of the bank's rows, the M step's sums being
all-reduced: the centroids are those one process would compute. (A per-process bank, as solo-learn's, is what
DDP's `broadcast_buffers` overwrites with rank 0's before every forward, and what a checkpoint written by rank 0
cannot restore on the other processes; a draw from the global generator at the epoch's start ran before a resumed
run restores it.)

Defaults: solo-learn's CIFAR recipe (scripts/pretrain/cifar/deepclusterv2.yaml: 2048 hidden, 128 output,
prototypes [3000, 3000, 3000] (here `num_prototypes=3000, prototype_heads=3`), LARS lr 0.6, wd 1e-6;
solo/methods/deepclusterv2.py: temperature 0.1, 10 k-means iterations; its projector is Linear-BN-ReLU-Linear).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.distributed import gather_rows, rank, world_size
from ..core.registry import METHODS
from ..data.seeded import sample_seed
from ..losses.deepclusterv2 import deepclusterv2_loss
from .base import SSLMethod


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None,
                     init_from: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids [k, D] unit-norm, assignments [N]) of k-means on the unit sphere of `x` [N, D] (unit rows):
    solo-learn's `KMeans.cluster_memory` (E step by the largest dot product, M step the normalised mean, an
    empty cluster keeps its centroid; iters M steps, then a last E step). The initial centroids are k random rows
    of `init_from` (the same rows on every process), or of `x` (rank 0's, broadcast under DDP). Under DDP `x` is
    this process's share of the rows and each M step's sums and counts are all-reduced."""
    pool = x if init_from is None else init_from
    if len(pool) < k:
        raise ValueError(f"k-means needs at least k={k} embeddings in the memory bank, it has {len(pool)}")
    x = x.float()
    centroids = pool[torch.randperm(len(pool), generator=generator)[:k].to(pool.device)].float().clone()
    if init_from is None and world_size() > 1:
        dist.broadcast(centroids, 0)
    for it in range(iters + 1):
        assign = (x @ centroids.T).argmax(dim=1)
        if it == iters:
            break
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        if world_size() > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        filled = counts > 0
        centroids[filled] = F.normalize(sums[filled] / counts[filled, None], dim=1)
    return centroids, assign


@METHODS.register("deepclusterv2", aliases=("deepcluster",))
class DeepClusterV2(SSLMethod):
    name = "deepclusterv2"
    defaults = dict(optimizer="lars", lr=0.6, weight_decay=1e-6, proj_hidden_dim=2048, proj_output_dim=128,
                    proj_layers=2, num_prototypes=3000, prototype_heads=3, temperature=0.1, kmeans_iters=10,
                    memory_size=49920)

    def build_heads(self):
        c = self.cfg
        out = self.build_projector()
        k = c["num_prototypes"]  # `prototype_heads` heads of K each, or a list of K per head (Python API)
        heads = [int(x) for x in k] if isinstance(k, (list, tuple)) else [int(k)] * int(c["prototype_heads"])
        # one [K_h, D] centroid buffer per head (random unit vectors until the first k-means), checkpointed
        for h, k in enumerate(heads):
            self.register_buffer(f"prototypes_{h}", F.normalize(torch.randn(k, out), dim=1))
        self.num_heads = len(heads)
        crops = max(1, min(self.hparams.num_views, self.num_heads))
        self.register_buffer("memory", torch.zeros(crops, int(c["memory_size"]), out))
        self.register_buffer("memory_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("memory_filled", torch.zeros((), dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        self.register_buffer("clustered_epoch", torch.full((), -1, dtype=torch.long))  # the last epoch k-means ran

    def prototypes(self, h: int) -> torch.Tensor:
        return getattr(self, f"prototypes_{h}")

    @torch.no_grad()
    def push_memory(self, zs: list[torch.Tensor]) -> None:
        """FIFO: the newest projections of each global crop (those beyond the bank's crops are not kept)."""
        size = self.memory.shape[1]
        n = min(len(zs[0]) * world_size(), size)
        idx = (self.memory_ptr + torch.arange(n, device=self.memory.device)) % size
        for j in range(min(len(zs), self.memory.shape[0])):  # the global batch's rows, the same on every process
            self.memory[j, idx] = gather_rows(zs[j].detach())[-n:].to(self.memory.dtype)
        self.memory_ptr.copy_((self.memory_ptr + n) % size)
        self.memory_filled.copy_(torch.clamp(self.memory_filled + n, max=size))

    @torch.no_grad()
    def cluster_memory(self) -> None:
        """k-means on the bank for every head: the centroids become the head's prototypes."""
        n = int(self.memory_filled)
        # the initial centroids from a generator of (seed, epoch): the same on every process and after a resume,
        # without touching the global generator (restored only at the first batch of a resumed run)
        g = torch.Generator().manual_seed(sample_seed(int(self.hparams.seed or 0), self.current_epoch, -3))
        for h in range(self.num_heads):
            k = self.prototypes(h).shape[0]
            bank = self.memory[h % self.memory.shape[0], :n]
            centroids, _ = spherical_kmeans(bank.tensor_split(world_size())[rank()], k, self.cfg["kmeans_iters"],
                                            generator=g, init_from=bank)
            self.prototypes(h).copy_(centroids.to(self.prototypes(h).dtype))
        self.clustered.fill_(True)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # At an epoch's first batch, not in on_train_epoch_start: Lightning does not call that hook for the epoch a
        # run resumed from an epoch's last step continues into. `clustered_epoch` (checkpointed) says whether this
        # epoch's k-means ran, so a run resumed mid-epoch does not cluster again.
        super().on_train_batch_start(batch, batch_idx)
        epoch = self.current_epoch
        if (epoch > 0 and int(self.clustered_epoch) != epoch
                and int(self.memory_filled) >= max(p.shape[0] for p in self._all_prototypes())):
            self.cluster_memory()
            self.clustered_epoch.fill_(epoch)

    def _all_prototypes(self) -> list[torch.Tensor]:
        return [self.prototypes(h) for h in range(self.num_heads)]

    def ssl_loss(self, feats, views):
        zs = [F.normalize(self.projector(f), dim=1) for f in feats]
        g = sum(1 for v in views if v.shape[1:] == views[0].shape[1:])  # global crops: the first view's size
        scores = [[z @ p.T.to(z.dtype) for z in zs] for p in self._all_prototypes()]
        if bool(self.clustered):
            with torch.no_grad():  # each image's cluster: the nearest centroid to its crop (h mod g)
                assign = torch.stack([(zs[h % g].detach().float() @ p.T.float()).argmax(dim=1)
                                      for h, p in enumerate(self._all_prototypes())])
        else:  # first epoch: no clusters yet, the bank fills (solo-learn's assignments of -1)
            assign = torch.full((self.num_heads, len(zs[0])), -1, dtype=torch.long, device=zs[0].device)
        loss = deepclusterv2_loss(scores, assign, self.cfg["temperature"])
        self.push_memory(zs[:g])
        return loss

"""NT-Xent / InfoNCE (SimCLR, MoCo)."""
import torch
import torch.nn.functional as F

from ..core.distributed import gather, rank


def nt_xent_loss(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float = 0.5,
                 queue: torch.Tensor | None = None, gather_distributed: bool = True) -> torch.Tensor:
    """Normalised-temperature cross entropy between two views, averaged over both directions.

    Without `queue` this is SimCLR's loss: for each sample, the positive is its other view and the
    negatives are every other sample of both views in the (global) batch.
    With `queue` (MoCo) the positive is the other view and the negatives are the queue entries only;
    `z_b` is then the key (no gradient expected) and the loss is one-directional, as in MoCo.
    This is the same as lightly's `NTXentLoss(memory_bank_size=(K, D))` whose bank holds `queue`:
    lightly also uses only the bank as negatives, only `z_a` as queries, and the bank as it was
    before this batch. The difference is who owns the queue: here the caller passes it and enqueues
    the keys afterwards (autossl.heads.queue.FeatureQueue); lightly's loss enqueues `z_b` itself.
    `queue` rows need not be normalised. Nothing is gathered on the queue path: the queue is
    already global (FeatureQueue.push gathers the keys).
    """
    z_a = F.normalize(z_a, dim=1)
    z_b = F.normalize(z_b, dim=1)
    if queue is not None:
        queue = F.normalize(queue, dim=1)
        pos = (z_a * z_b).sum(dim=1, keepdim=True)
        neg = z_a @ queue.T
        logits = torch.cat([pos, neg], dim=1) / temperature
        labels = torch.zeros(len(z_a), dtype=torch.long, device=z_a.device)
        return F.cross_entropy(logits, labels)

    n = z_a.shape[0]
    if gather_distributed:
        all_a, all_b = gather(z_a), gather(z_b)
    else:
        all_a, all_b = z_a, z_b
    offset = rank() * n if gather_distributed else 0
    labels = torch.arange(n, device=z_a.device) + offset
    # Positives sit on the diagonal of a-vs-b; the a-vs-a block excludes self-similarity.
    logits_ab = z_a @ all_b.T / temperature
    logits_aa = z_a @ all_a.T / temperature
    logits_ba = z_b @ all_a.T / temperature
    logits_bb = z_b @ all_b.T / temperature
    self_mask = F.one_hot(labels, all_a.shape[0]).bool()
    logits_aa = logits_aa.masked_fill(self_mask, float("-inf"))
    logits_bb = logits_bb.masked_fill(self_mask, float("-inf"))
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)
    return (loss_a + loss_b) / 2


def infonce_loss(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Query-vs-keys InfoNCE where the other samples' keys (of the global batch) are the negatives:
    MoCo without a queue, MoCo v3's form. `key` is the target branch: pass it detached."""
    q, k = F.normalize(query, dim=1), F.normalize(gather(key), dim=1)
    logits = q @ k.T / temperature
    labels = torch.arange(len(q), device=q.device) + rank() * len(q)
    return F.cross_entropy(logits, labels)

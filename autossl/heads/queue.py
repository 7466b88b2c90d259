"""A FIFO queue of embeddings (MoCo's memory bank), kept as a buffer so it is checkpointed."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.distributed import gather


class FeatureQueue(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("items", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def push(self, z: torch.Tensor) -> None:
        """Enqueue the (global) batch, overwriting the oldest entries."""
        z = F.normalize(gather(z.detach()).float(), dim=1)
        size = self.items.shape[0]
        n = min(len(z), size)
        idx = (self.ptr + torch.arange(n, device=z.device)) % size
        self._undo = (idx, self.items[idx], self.ptr.clone(), self.filled.clone())  # a copy of n rows, not the queue
        self.items[idx] = z[-n:].to(self.items.dtype)
        self.ptr.copy_((self.ptr + n) % size)
        self.filled.copy_(torch.clamp(self.filled + n, max=size))

    @torch.no_grad()
    def undo_push(self) -> None:
        """Take back the last `push` (a training step that was skipped: its keys never happened)."""
        undo, self._undo = getattr(self, "_undo", None), None
        if undo is not None:
            idx, rows, ptr, filled = undo
            self.items[idx] = rows
            self.ptr.copy_(ptr)
            self.filled.copy_(filled)

    def keep_push(self) -> None:
        """The last `push` stays (its step was taken): nothing left to undo."""
        self._undo = None

    def negatives(self) -> torch.Tensor:
        """Queue entries written so far (random ones before the first push)."""
        return self.items[: int(self.filled)] if int(self.filled) else self.items

"""The non-finite guard of SSLMethod (base.py) beyond the loss: gradients before each update, weights before
each checkpoint.

- A step whose loss is finite but whose gradients are not (NaN or Inf anywhere) is skipped: the gradients are
  dropped before the optimiser runs, so no parameter, optimiser state or EMA copy moves (nor a FeatureQueue:
  its push of that step is undone). It is counted and printed; `limit` skipped steps in a row stop the run in
  one line. Under fp16's GradScaler such steps are the scaler's own calibration: it skips them itself, they
  are not counted; the EMA update and the queue push are skipped as well.
- A checkpoint whose weights (any floating-point tensor of the state dict) are non-finite is refused in one
  line before anything is written: the previous checkpoint stays the newest.

Cheap: one fused `torch._foreach_norm` over all tensors (NaN and Inf propagate into the norms), one host sync,
and under DDP one all-reduce of the flag so that every rank takes the same decision. Only when a 2-norm is not
finite is a second pass made, with max |x| (ord=inf, 10x slower on CPU), which tells a NaN or Inf from a sum of
squares that overflowed (|x| > ~1e19): finite gradients are never taken for non-finite ones.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..core.distributed import max_over_processes
from ..heads.queue import FeatureQueue

MAX_NONFINITE_STEPS = 5  # steps in a row with non-finite gradients that are skipped before the run stops


def nonfinite_flag(tensors: list[torch.Tensor], device: torch.device | str, ord: float = 2.0) -> torch.Tensor:
    """1.0 when a norm of one of `tensors` is not finite, else 0.0 (a 0-dim float tensor; no host sync)."""
    if not tensors:
        return torch.zeros((), device=device)
    norms = torch._foreach_norm(tensors, ord)
    return (~torch.stack([n.float().to(device) for n in norms]).isfinite()).any().float()


def on_every_rank(flag: torch.Tensor) -> bool:
    """`flag` true on any process makes it true on all (one all-reduce under DDP, then the host sync)."""
    return bool(max_over_processes(flag))


def any_nonfinite(tensors: Iterable[torch.Tensor | None], module) -> bool:
    """Whether any floating-point tensor, on any process, holds a NaN or an Inf (the same answer on every rank)."""
    tensors = [t for t in tensors if t is not None and t.is_floating_point() and t.numel()]
    if not on_every_rank(nonfinite_flag(tensors, module.device)):
        return False
    return on_every_rank(nonfinite_flag(tensors, module.device, float("inf")))


def stop_message(problem: str, module) -> str:
    """One line: what went wrong, where the last good checkpoint is, what to change."""
    trainer = module._trainer
    last = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer is not None else ""
    where = f"last good checkpoint: {last} (left intact)" if last else "no checkpoint was written yet"
    return f"{problem}; {where}. Lower optimizer.lr, add warmup, or train with precision=32"


class NonFiniteGuard:
    """Per-run counters of the gradient check; `step_skipped` tells optimizer_step to leave the EMA alone."""

    def __init__(self, limit: int = MAX_NONFINITE_STEPS):
        self.limit = limit
        self.skipped = 0  # steps skipped in this run (this process's fit)
        self.in_a_row = 0
        self.step_skipped = False
        self._queues: list[FeatureQueue] | None = None

    def check_gradients(self, module, optimizer) -> bool:
        """Called after backward (and AMP unscaling), before clipping and the update. True: skip this step."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.step_skipped = any_nonfinite(grads, module)
        if self._queues is None:
            self._queues = [m for m in module.modules() if isinstance(m, FeatureQueue)]
        for queue in self._queues:  # the keys this step's forward enqueued: kept, or taken back with the step
            queue.undo_push() if self.step_skipped else queue.keep_push()
        if not self.step_skipped:
            self.in_a_row = 0
            return False
        if getattr(getattr(module._trainer, "precision_plugin", None), "scaler", None) is not None:
            return True  # fp16: the GradScaler skips the update itself and lowers its scale
        optimizer.zero_grad(set_to_none=True)  # a parameter without a gradient is not updated, its state not moved
        self.skipped += 1
        self.in_a_row += 1
        step = module.global_step
        if self.in_a_row >= self.limit:
            raise FloatingPointError(stop_message(f"gradients are non-finite at {self.in_a_row} steps in a row (up to "
                                                  f"step {step}, each skipped)", module))
        module.print(f"step {step}: non-finite gradients with a finite loss, step skipped ({self.skipped} so far; "
                     f"the run stops after {self.limit} in a row)")
        return True


def check_checkpoint(module, state: dict) -> None:
    """Refuse (one line, nothing written) a checkpoint whose floating-point tensors are not all finite."""
    if not any_nonfinite([t for t in state.values() if isinstance(t, torch.Tensor)], module):
        return
    bad = next((k for k, t in state.items() if isinstance(t, torch.Tensor) and t.is_floating_point()
                and not bool(torch.isfinite(t).all())), "a tensor on another process")
    raise FloatingPointError(stop_message(f"the weights are non-finite at step {module.global_step} ({bad}): this "
                                          f"checkpoint is not written", module))

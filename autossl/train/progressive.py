"""Progressive resolution (`data.final_view_size`): small views for most of the run, full-size views for its last
`final_view_share` of the steps.

Small views cost a fraction of the FLOPs (16 px: a quarter of 32 px), so a time budget buys several times the
images; the last steps at the size the features are used at close the gap between training and test resolution
(FixRes, Touvron et al. 2019). The switch follows the planned schedule length (`SSLMethod.planned_steps`), which a
time budget re-plans while training, so it happens at the same share of a budget on any machine.

The views are made in the training process's collate function (`batched_views=True`, `num_workers=0`, checked
in the config): setting the size there changes the next batches. Lightning fetches a batch ahead, so the new size
reaches the model one or two steps after the planned step.
"""
from __future__ import annotations

import pytorch_lightning as pl


class ProgressiveViewSize(pl.Callback):
    def __init__(self, final_size: int, share: float = 0.25):
        if not 0 < share <= 1:
            raise ValueError(f"data.final_view_share must be in (0, 1], got {share}")
        self.final_size, self.share = int(final_size), float(share)
        self._first_size: int | None = None
        self._global: list[int] = []  # which transforms make the global views (multi-crop's local ones keep their size)

    def _transforms(self, trainer: pl.Trainer) -> list:
        collate = getattr(trainer.train_dataloader, "collate_fn", None)
        views = getattr(collate, "views", None)
        if views is None:
            raise ValueError("data.final_view_size needs data.batched_views=true (views made per batch, in the "
                             "training process)")
        return views.transforms

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        transforms = self._transforms(trainer)
        if self._first_size is None:
            self._first_size = transforms[0].size
            self._global = [i for i, t in enumerate(transforms) if t.size == self._first_size]
        late = trainer.global_step >= (1 - self.share) * pl_module.planned_steps()
        for i in self._global:
            transforms[i].size = self.final_size if late else self._first_size

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply(trainer, pl_module)  # a resumed run past the switch starts at the final size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._apply(trainer, pl_module)


__all__ = ["ProgressiveViewSize"]

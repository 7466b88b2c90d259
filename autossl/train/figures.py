"""The reconstruction figure of a masked-image-modelling run: for a few fixed images, the input, what
the encoder saw (masked cells blanked) and the reconstruction (visible cells kept, masked cells
predicted). Written during training by `ReconstructionFigure`, and by the benchmarks at the end."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from ..core.io import atomic_open
from ..data.batch import unpack_batch


def save_reconstruction_figure(method: pl.LightningModule, images: torch.Tensor, path: str | Path,
                               title: str = "", seed: int = 0) -> Path:
    """Rows: input, masked input, reconstruction; one column per image. Pixels are shown on each image's
    own input range (the images are normalised), so the three rows of a column share one scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    was_training = method.training
    method.eval()
    with torch.random.fork_rng(), torch.no_grad():  # the same masks every time, the training RNG untouched
        torch.manual_seed(seed)
        out = method.reconstruct(images.to(method.device))
    method.train(was_training)
    rows = [("input", images.cpu()), ("masked", out["masked"].cpu()), ("reconstruction", out["reconstruction"].cpu())]
    lo = images.amin(dim=(1, 2, 3), keepdim=True).cpu()
    hi = images.amax(dim=(1, 2, 3), keepdim=True).cpu()
    n = images.shape[0]
    fig = Figure(figsize=(1.2 * n, 3.9))
    FigureCanvasAgg(fig)
    for r, (name, x) in enumerate(rows):
        x = ((x.float() - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
        for c in range(n):
            ax = fig.add_subplot(3, n, r * n + c + 1)
            img = x[c].permute(1, 2, 0).numpy()
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return Path(path)


class ReconstructionFigure(pl.Callback):
    """Every `every_n_epochs` (and at the end of training), `<folder>/reconstruction.png` for the first
    `num_images` images of the first training batch. Does nothing for methods without `reconstruct`."""

    def __init__(self, folder: str | Path, every_n_epochs: int = 1, num_images: int = 8):
        self.folder, self.every, self.num = Path(folder), max(1, every_n_epochs), num_images
        self.images: torch.Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.images is None and hasattr(pl_module, "reconstruct"):
            views = unpack_batch(batch).views
            if views:
                self.images = views[0][: self.num].detach().clone()

    def _write(self, trainer, pl_module) -> None:
        if self.images is not None and trainer.is_global_zero:
            save_reconstruction_figure(pl_module, self.images, self.folder / "reconstruction.png",
                                       title=f"{pl_module.name}, step {trainer.global_step}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every == 0:
            self._write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(trainer, pl_module)

"""Reading image files robustly: any mode (grayscale, RGBA, palette, 16-bit) becomes 8-bit RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# DecompressionBombError (a file claiming more than 2x PIL's pixel limit) is skipped like any unreadable file
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def to_rgb_uint8(img: Image.Image) -> torch.Tensor:
    """A PIL image of any mode -> uint8 tensor [3, H, W]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale the real range to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    img = img.convert("RGB")
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def read_image(path: str | Path) -> torch.Tensor:
    """Decode a file to uint8 [3, H, W]; raises one of READ_ERRORS for a corrupt or non-image file."""
    with Image.open(path) as img:
        img.load()
        return to_rgb_uint8(img)


def list_images(root: str | Path) -> list[Path]:
    """Every image file below `root`, flat or nested, sorted for reproducibility. Hidden files and folders
    are not images: macOS's `._name.jpg` resource forks, `.DS_Store`, `__MACOSX/` of an unzipped archive."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts))

"""Pictures for people to look at: labeller grids and region paintings (numpy/OpenCV, RGB uint8)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def paint_regions(regions: np.ndarray, seed: int = 0) -> np.ndarray:
    """``(H, W)`` labels to an ``(H, W, 3)`` uint8 picture, one random colour per label."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, (int(regions.max()) + 1, 3), dtype=np.uint8)
    return colours[regions]


def gray(values: np.ndarray) -> np.ndarray:
    """``(H, W)`` map (uint8, bool, or float in [0, 1]) to ``(H, W, 3)`` uint8."""
    values = np.asarray(values)
    if values.dtype == np.bool_:
        values = values.astype(np.uint8) * 255
    elif values.dtype != np.uint8:
        values = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return np.repeat(values[..., None], 3, axis=2)


def fit_tile(image: np.ndarray, height: int) -> np.ndarray:
    """Resize an RGB tile to a common height (nearest for small images, to keep pixels visible)."""
    import cv2

    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    interpolation = cv2.INTER_NEAREST if h < height else cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=interpolation)


def image_grid(rows: Sequence[Sequence[np.ndarray]], tile_height: int = 128, gap: int = 4,
               header: Sequence[str] | None = None) -> np.ndarray:
    """Tiles (RGB uint8, any size) laid out in rows, each tile resized to ``tile_height``.

    Args:
        rows: one list of tiles per row; rows may have different lengths.
        header: optional column titles drawn above the first row.
    """
    import cv2

    rendered = []
    for row in rows:
        tiles = [fit_tile(t, tile_height) for t in row]
        pieces = []
        for tile in tiles:
            pieces += [tile, np.full((tile_height, gap, 3), 255, np.uint8)]
        rendered.append(np.concatenate(pieces[:-1], axis=1))
    width = max(r.shape[1] for r in rendered)
    out = []
    if header:
        bar = np.full((22, width, 3), 255, np.uint8)
        x = 0
        first = [fit_tile(t, tile_height) for t in rows[0]]
        for title, tile in zip(header, first):
            cv2.putText(bar, title, (x + 3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            x += tile.shape[1] + gap
        out += [bar]
    for r in rendered:
        pad = np.full((tile_height, width - r.shape[1], 3), 255, np.uint8)
        out += [np.concatenate([r, pad], axis=1), np.full((gap, width, 3), 255, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image (PNG/JPEG by suffix), creating the folder."""
    import cv2

    from saliencyssl.files import replace_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix or ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}; give a name ending in .png or .jpg")
    return replace_file(path, data.tobytes())  # a fresh file moved over the name: never written through a link


LABEL_GRID_HEADER = ("image", "HC", "RC", "SaliencyCut", "regions")


def labeller_grid_row(image: np.ndarray, hc: np.ndarray, target) -> list[np.ndarray]:
    """One row of the labeller grid: image | HC | RC | SaliencyCut mask | regions."""
    return [image, gray(hc), gray(target.saliency), gray(target.mask), paint_regions(target.regions)]

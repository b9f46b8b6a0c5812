"""Handcrafted features for the forest backend: image features x_z and context features psi."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def pooled_samples(
    maps: np.ndarray, cell: int, grid: int, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Mean of each map over ``cell`` x ``cell`` windows laid out ``grid`` x ``grid`` around z.

    Parameters
    ----------
    maps : (C, H, W) float32
        Channels to pool.
    cell : int
        Window side in pixels of ``maps``; neighbouring windows are ``cell`` apart.
    grid : int
        Odd number of windows per side, centred on each location.
    ys, xs : (h,), (w,) int
        Row and column of each location z in ``maps``.

    Returns
    -------
    (h, w, C * grid * grid) float32; windows that fall outside the maps read zero.
    """
    c, H, W = maps.shape
    pooled = (
        maps if cell == 1 else ndimage.uniform_filter(maps, size=(1, cell, cell), mode="constant")
    )
    half = grid // 2
    out = np.zeros((len(ys), len(xs), grid, grid, c), dtype=np.float32)
    for a, dy in enumerate(range(-half, half + 1)):
        iy = ys + dy * cell
        oky = (iy >= 0) & (iy < H)
        for b, dx in enumerate(range(-half, half + 1)):
            ix = xs + dx * cell
            okx = (ix >= 0) & (ix < W)
            block = pooled[:, np.clip(iy, 0, H - 1)[:, None], np.clip(ix, 0, W - 1)[None, :]]
            block = block * (oky[:, None] & okx[None, :])
            out[:, :, a, b] = block.transpose(1, 2, 0)
    return out.reshape(len(ys), len(xs), -1)

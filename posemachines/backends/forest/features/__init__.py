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
    offsets = np.arange(-half, half + 1) * cell
    iy = (np.asarray(ys)[:, None] + offsets).ravel()  # (h * grid,)
    ix = (np.asarray(xs)[:, None] + offsets).ravel()  # (w * grid,)
    # Rows, then columns: two gathers along one axis each are faster than one over both.
    block = pooled[:, np.clip(iy, 0, H - 1)]
    block[:, (iy < 0) | (iy >= H)] = 0  # windows outside the maps read zero
    block = block[:, :, np.clip(ix, 0, W - 1)]
    block[:, :, (ix < 0) | (ix >= W)] = 0
    block = block.reshape(c, len(ys), grid, len(xs), grid).transpose(1, 3, 2, 4, 0)
    return block.reshape(len(ys), len(xs), -1).astype(np.float32, copy=False)


def colour_distance(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Euclidean distance between (broadcast) Lab colours whose 3 channels lie along ``axis``.

    The channels are added one by one: numpy's reduction over a length-3 axis is several times
    slower, and these distances are computed at every location of every image.
    """
    d = np.moveaxis(a - b, axis, 0)
    return np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])

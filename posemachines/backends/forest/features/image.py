"""Dense handcrafted image features at every location of the belief-map grid."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2lab

from posemachines.backends.forest.features import colour_distance, pooled_samples


def orientation_maps(gray: np.ndarray, orientations: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned gradient-orientation channels (orientations, H, W), each weighted by magnitude,
    with linear interpolation between neighbouring bins; and the magnitude (H, W)."""
    gy, gx = np.gradient(gray)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi) / np.pi * orientations - 0.5
    low = np.floor(angle).astype(int)
    frac = (angle - low).astype(np.float32)
    maps = np.zeros((orientations,) + gray.shape, dtype=np.float32)
    rows, cols = np.indices(gray.shape)
    np.add.at(maps, (low % orientations, rows, cols), magnitude * (1 - frac))
    np.add.at(maps, ((low + 1) % orientations, rows, cols), magnitude * frac)
    return maps, magnitude.astype(np.float32)


def lab_image(crop: np.ndarray) -> np.ndarray:
    """CIE Lab channels (3, H, W) of an RGB uint8 image, scaled to roughly [0, 1] for L."""
    return np.moveaxis(rgb2lab(crop.astype(np.float32) / 255.0), -1, 0).astype(np.float32) / 100.0


def location_colour(lab: np.ndarray, stride: int) -> np.ndarray:
    """Mean Lab colour (h, w, 3) of each ``stride`` x ``stride`` output cell, read at its centre."""
    centres = np.arange(lab.shape[1] // stride) * stride + (stride - 1) // 2
    return pooled_samples(lab, max(stride, 2), 1, centres, centres)


def colour_self_similarity(
    lab: np.ndarray, cell: int, grid: int, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Local self-similarity of colour (after Shechtman and Irani, CVPR 2007).

    The Lab distance between the ``cell`` x ``cell`` window at z and each other window of a
    ``grid`` x ``grid`` layout around it. Colour *differences* say where a uniformly coloured
    limb continues and where it ends whatever its colour, which absolute colour cannot.

    Parameters
    ----------
    lab : (3, H, W) float32
        Lab image (``lab_image``).
    cell : int
        Window side in pixels; neighbouring windows are ``cell`` apart.
    grid : int
        Odd number of windows per side.
    ys, xs : (h,), (w,) int
        Row and column of each location z.

    Returns
    -------
    (h, w, grid * grid - 1) float32
    """
    windows = pooled_samples(lab, cell, grid, ys, xs).reshape(len(ys), len(xs), grid * grid, 3)
    middle = grid * grid // 2
    distance = colour_distance(windows, windows[:, :, middle : middle + 1])
    return np.delete(distance, middle, axis=-1)


def dense_image_features(
    crop: np.ndarray,
    stride: int,
    hog_cells: tuple[int, ...] = (8, 20),
    colour_cell: int = 12,
    grid: int = 3,
    orientations: int = 9,
    similarity: tuple[tuple[int, int], ...] = (),
    lab: np.ndarray | None = None,
) -> np.ndarray:
    """Handcrafted features x_z at the centre of every ``stride`` x ``stride`` output cell.

    For each location z: HOG-type blocks (``grid`` x ``grid`` cells of gradient-orientation
    histograms, L2-normalised per block) at each cell size in ``hog_cells``, so z sees both
    the local limb edges and the coarse shape around it; CIE Lab colour pooled over a
    ``grid`` x ``grid`` layout of ``colour_cell`` windows and at z itself; the pooled gradient
    magnitude; the colour self-similarity at each (cell, grid) of ``similarity``; and z's
    position in the crop (x, y in [0, 1]), since the person is centred.

    Parameters
    ----------
    crop : (S, S, 3) uint8
        Person-centred crop.
    stride : int
        Output grid stride; the result has ``S // stride`` rows and columns.
    hog_cells, colour_cell : pixel sizes of the pooling cells.
    grid : odd number of cells per side of each block.
    orientations : number of unsigned orientation bins.
    similarity : (cell, grid) pairs of ``colour_self_similarity``; none by default.
    lab : the crop's ``lab_image`` if the caller has it already.

    Returns
    -------
    (S // stride, S // stride, D) float32.
    """
    size = crop.shape[0]
    centres = np.arange(size // stride) * stride + (stride - 1) // 2
    img = crop.astype(np.float32) / 255.0
    orient, magnitude = orientation_maps(img.mean(-1), orientations)
    parts = []
    for cell in hog_cells:
        block = pooled_samples(orient, cell, grid, centres, centres)
        norm = np.sqrt((block**2).sum(-1, keepdims=True)) + 1e-3
        parts.append(block / norm)
    lab = lab_image(crop) if lab is None else lab
    parts.append(pooled_samples(lab, colour_cell, grid, centres, centres))
    parts.append(location_colour(lab, stride))
    parts.append(pooled_samples(magnitude[None], colour_cell, grid, centres, centres))
    for cell, cell_grid in similarity:
        parts.append(colour_self_similarity(lab, cell, cell_grid, centres, centres))
    pos = (centres / (size - 1)).astype(np.float32)
    xx, yy = np.meshgrid(pos, pos)
    parts.append(np.stack([xx, yy], -1))
    return np.concatenate(parts, -1)
